//! Durations as Flow's trigger configs write them (`timeout: 30s`, `interval: 30m`).
//!
//! The grammar is one or more `<digits><unit>` components, optionally separated by one
//! space, summed: `30s`, `1m30s`, `1m 30s` (how Flow's serializer writes 90 s), `500ms`,
//! `2h`. Units are `h`, `m`, `s` and `ms`. At most [`MAX_DURATION_BYTES`] bytes. A field's
//! own bounds (`timeout`, `interval`) are checked by validation, which names the field.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Longest duration text, in bytes: checked before it is read.
pub const MAX_DURATION_BYTES: usize = 32;

/// The grammar as a JSON Schema `pattern` (the schema also carries the length bound).
pub(crate) const DURATION_PATTERN: &str = "^[0-9]+(h|m|s|ms)( ?[0-9]+(h|m|s|ms))*$";

/// A duration as written in a config: the text, read into a [`Duration`] by validation
/// (so that errors name the field and the trigger).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigDuration(String);

impl std::fmt::Debug for ConfigDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ConfigDuration {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the duration and checks it against `min..=max`.
    pub(crate) fn read(&self, min: Duration, max: Duration) -> Result<Duration, DurationError> {
        let fail = |problem| DurationError {
            text: if self.0.chars().count() > MAX_DURATION_BYTES {
                let cut: String = self.0.chars().take(MAX_DURATION_BYTES).collect();
                format!("{cut}...")
            } else {
                self.0.clone()
            },
            problem,
        };
        let value = parse_duration(&self.0).map_err(fail)?;
        if !(min..=max).contains(&value) {
            return Err(fail(DurationProblem::OutOfBounds { min, max }));
        }
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"30s\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(ConfigDuration(text.to_string()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": MAX_DURATION_BYTES,
            "description": "A duration: one or more <digits><unit> components, optionally \
                            separated by a space, with units h, m, s and ms, e.g. \"30s\", \
                            \"1m 30s\", \"500ms\".",
        })
    }
}

/// A duration that cannot be read, or is outside its field's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}{problem}")]
pub struct DurationError {
    /// The text as written; past [`MAX_DURATION_BYTES`] characters, cut and ended by `...`.
    pub text: String,
    /// What is wrong with it.
    pub problem: DurationProblem,
}

/// What is wrong with a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationProblem {
    /// Longer than [`MAX_DURATION_BYTES`].
    TooLong,
    /// Empty, or not `<digits><unit>` at some place.
    Malformed(&'static str),
    /// A unit other than `h`, `m`, `s`, `ms`.
    UnknownUnit(String),
    /// More than `u64::MAX` milliseconds.
    TooLarge,
    /// Readable, but outside the field's bounds.
    OutOfBounds {
        /// Smallest allowed.
        min: Duration,
        /// Largest allowed.
        max: Duration,
    },
}

const NO_NUMBER: &str = "expected a number";
const NO_UNIT: &str = "a number without a unit";
const FRACTION: &str = "fractions are not read (write \"1500ms\", not \"1.5s\")";
const GRAMMAR_HINT: &str = "(units: h, m, s, ms; e.g. \"30s\", \"1m 30s\", \"500ms\")";

impl std::fmt::Display for DurationProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let not = ", which is not a duration:";
        match self {
            DurationProblem::TooLong => {
                write!(f, "{not} longer than {MAX_DURATION_BYTES} bytes")
            }
            DurationProblem::Malformed(what) => write!(f, "{not} {what} {GRAMMAR_HINT}"),
            DurationProblem::UnknownUnit(unit) => {
                write!(f, "{not} unknown unit {unit:?} {GRAMMAR_HINT}")
            }
            DurationProblem::TooLarge => write!(f, "{not} too large"),
            DurationProblem::OutOfBounds { min, max } => write!(
                f,
                ", but must be between {} and {}",
                display(*min),
                display(*max)
            ),
        }
    }
}

/// Writes a duration in the config grammar, largest units first: `5m`, `1m 30s`, `0s`.
pub fn display(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut parts = Vec::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            parts.push(format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    parts.join(" ")
}

/// Reads the grammar of the module doc into a duration.
fn parse_duration(text: &str) -> Result<Duration, DurationProblem> {
    if text.len() > MAX_DURATION_BYTES {
        return Err(DurationProblem::TooLong);
    }
    if text.is_empty() {
        return Err(DurationProblem::Malformed("it is empty"));
    }
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut total_ms: u64 = 0;
    while at < bytes.len() {
        if at > 0 && bytes[at] == b' ' {
            at += 1;
        }
        let digits = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(DurationProblem::Malformed(NO_NUMBER));
        }
        let number: u64 = text[at..at + digits]
            .parse()
            .map_err(|_| DurationProblem::TooLarge)?;
        at += digits;
        let letters = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if letters == 0 {
            let fraction = bytes.get(at) == Some(&b'.');
            return Err(DurationProblem::Malformed(if fraction {
                FRACTION
            } else {
                NO_UNIT
            }));
        }
        let unit_ms: u64 = match &text[at..at + letters] {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            other => return Err(DurationProblem::UnknownUnit(other.to_string())),
        };
        at += letters;
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or(DurationProblem::TooLarge)?;
        if at < bytes.len() && bytes[at] != b' ' && !bytes[at].is_ascii_digit() {
            return Err(DurationProblem::Malformed("an unexpected character"));
        }
        if at < bytes.len() && bytes[at] == b' ' && at + 1 == bytes.len() {
            return Err(DurationProblem::Malformed("a trailing space"));
        }
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, item 1: the duration grammar and its bounds. (That the schema's pattern
    /// accepts the same texts is checked with a JSON Schema validator in the schema test.)
    #[test]
    fn duration_grammar_reads_flow_durations_and_refuses_the_rest() {
        let ms = Duration::from_millis;
        let good = [
            ("30s", ms(30_000)),
            ("30m", ms(1_800_000)),
            ("45s", ms(45_000)),
            ("1m30s", ms(90_000)),
            ("1m 30s", ms(90_000)),
            ("1h 2m 3s 4ms", ms(3_723_004)),
            ("500ms", ms(500)),
            ("0s", ms(0)),
            ("2h", ms(7_200_000)),
            ("007s", ms(7_000)),
        ];
        for (text, expect) in good {
            assert_eq!(parse_duration(text), Ok(expect), "{text}");
        }
        let fraction = DurationProblem::Malformed(FRACTION);
        let bad = [
            ("", DurationProblem::Malformed("it is empty")),
            ("30", DurationProblem::Malformed(NO_UNIT)),
            ("s", DurationProblem::Malformed(NO_NUMBER)),
            (" 30s", DurationProblem::Malformed(NO_NUMBER)),
            ("30s ", DurationProblem::Malformed("a trailing space")),
            ("30 s", DurationProblem::Malformed(NO_UNIT)),
            ("1m  30s", DurationProblem::Malformed(NO_NUMBER)),
            (
                "30s,",
                DurationProblem::Malformed("an unexpected character"),
            ),
            ("1.5s", fraction),
            ("-1s", DurationProblem::Malformed(NO_NUMBER)),
            ("2d", DurationProblem::UnknownUnit("d".to_string())),
            ("30sec", DurationProblem::UnknownUnit("sec".to_string())),
            ("30S", DurationProblem::UnknownUnit("S".to_string())),
            ("1us", DurationProblem::UnknownUnit("us".to_string())),
            ("99999999999999999999h", DurationProblem::TooLarge),
            ("5124095576030432h", DurationProblem::TooLarge),
            (&"1s".repeat(17), DurationProblem::TooLong),
        ];
        for (text, expect) in bad {
            assert_eq!(parse_duration(text), Err(expect), "{text:?}");
        }
        let read = |text: &str| {
            ConfigDuration(text.to_string()).read(Duration::from_secs(1), Duration::from_secs(300))
        };
        assert_eq!(read("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(read("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(
            read("301s").expect_err("above").to_string(),
            "\"301s\", but must be between 1s and 5m"
        );
        assert_eq!(
            read("999ms").expect_err("below").to_string(),
            "\"999ms\", but must be between 1s and 5m"
        );
        assert_eq!(
            read(&"9".repeat(40)).expect_err("long").text,
            format!("{}...", "9".repeat(MAX_DURATION_BYTES))
        );
        assert_eq!(display(Duration::from_millis(3_723_004)), "1h 2m 3s 4ms");
        assert_eq!(display(Duration::ZERO), "0s");
    }
}

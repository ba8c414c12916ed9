//! `{{timestamp VALUE PRECISION [ROUNDING]}}`: an RFC 3339 time written in UTC at a chosen
//! precision, so a receiver that keeps less than our 100 ns (Airflow keeps microseconds)
//! gets a bound it can use: round an inclusive upper bound up (`"ceil"`), a lower bound
//! down (`"floor"`, the default).
//!
//! Constant work per call (a parse of a bounded string, a few integer operations and a
//! write of at most 31 bytes), so it counts as an ordinary helper in the render steps.
//! Literal arguments are checked when the template compiles ([`check_literals`]); a value
//! known only at render time is checked then, and any failure is a render error naming
//! the helper, never a panic.

use super::{TemplateError, require_present};
use handlebars::template::{HelperTemplate, Parameter};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value as Json;
use std::fmt::Write as _;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The helper's name in templates.
pub(crate) const NAME: &str = "timestamp";

/// What the precisions and roundings are, for error messages.
const USAGE: &str = "takes a value, a precision (\"s\", \"ms\", \"us\" or \"100ns\") and \
                     optionally a rounding (\"floor\", the default, or \"ceil\")";

/// Longest part of a bad value quoted in an error.
const QUOTED_CHARS: usize = 64;

/// How many fraction digits are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Seconds,
    Millis,
    Micros,
    HundredNanos,
}

impl Precision {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "s" => Some(Self::Seconds),
            "ms" => Some(Self::Millis),
            "us" => Some(Self::Micros),
            "100ns" => Some(Self::HundredNanos),
            _ => None,
        }
    }

    /// The unit in nanoseconds, and how many digits of the fraction it keeps.
    fn unit_and_digits(self) -> (u32, usize) {
        match self {
            Self::Seconds => (1_000_000_000, 0),
            Self::Millis => (1_000_000, 3),
            Self::Micros => (1_000, 6),
            Self::HundredNanos => (100, 7),
        }
    }
}

/// Which way a time between two units goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    Floor,
    Ceil,
}

impl Rounding {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "floor" => Some(Self::Floor),
            "ceil" => Some(Self::Ceil),
            _ => None,
        }
    }
}

/// Refuses, at compile time, a call the helper can never render: not two or three
/// arguments, a named (hash) argument, or a literal precision or rounding it does not
/// know. Arguments that are variables are checked when rendering.
pub(crate) fn check_literals(
    expression: &HelperTemplate,
    line: usize,
    column: usize,
) -> Result<(), TemplateError> {
    let refuse = |message: String| TemplateError::HelperArguments {
        helper: NAME,
        message,
        line,
        column,
    };
    if !expression.hash.is_empty() {
        return Err(refuse(format!("no named arguments are taken; it {USAGE}")));
    }
    let params = &expression.params;
    if !(2..=3).contains(&params.len()) {
        return Err(refuse(format!(
            "{} argument(s) given; it {USAGE}",
            params.len()
        )));
    }
    if let Parameter::Literal(value) = &params[1]
        && value.as_str().and_then(Precision::parse).is_none()
    {
        return Err(refuse(format!(
            "unknown precision {}; it {USAGE}",
            quoted(value)
        )));
    }
    if let Some(Parameter::Literal(value)) = params.get(2)
        && value.as_str().and_then(Rounding::parse).is_none()
    {
        return Err(refuse(format!(
            "unknown rounding {}; it {USAGE}",
            quoted(value)
        )));
    }
    Ok(())
}

/// A JSON value in an error message, cut to [`QUOTED_CHARS`] characters.
fn quoted(value: &Json) -> String {
    let text = value.to_string();
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Why a call did not render.
fn failure(message: String) -> RenderError {
    RenderErrorReason::Other(format!("`{NAME}`: {message}")).into()
}

/// The helper: gives the formatted time as a string, so it also works as a
/// subexpression (`{{json (timestamp flow_published_at_max "us" "ceil")}}`).
pub(crate) struct Timestamp;

impl HelperDef for Timestamp {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        if h.params().len() > 3 || !h.hash().is_empty() {
            return Err(failure(format!("too many or named arguments; it {USAGE}")));
        }
        let mut texts = [None::<&str>; 3];
        for (position, text) in texts.iter_mut().enumerate() {
            let Some(param) = h.param(position) else {
                continue;
            };
            require_present(param)?;
            *text = Some(param.value().as_str().ok_or_else(|| {
                failure(format!(
                    "argument {} is {}, not a string",
                    position + 1,
                    quoted(param.value())
                ))
            })?);
        }
        let [Some(value), Some(precision), rounding] = texts else {
            return Err(failure(format!("too few arguments; it {USAGE}")));
        };
        let precision = Precision::parse(precision)
            .ok_or_else(|| failure(format!("unknown precision {precision:?}; it {USAGE}")))?;
        let rounding = match rounding {
            None => Rounding::Floor,
            Some(text) => Rounding::parse(text)
                .ok_or_else(|| failure(format!("unknown rounding {text:?}; it {USAGE}")))?,
        };
        let formatted = format(value, precision, rounding).map_err(failure)?;
        Ok(ScopedJson::Derived(Json::String(formatted)))
    }
}

/// `value` (RFC 3339, any offset) in UTC, rounded to `precision`, with exactly its
/// digits of fraction and a `Z`.
fn format(value: &str, precision: Precision, rounding: Rounding) -> Result<String, String> {
    let bad = |why: &str| {
        let shown = quoted(&Json::String(value.to_string()));
        format!("{shown} {why}")
    };
    let parsed =
        OffsetDateTime::parse(value, &Rfc3339).map_err(|_| bad("is not an RFC 3339 timestamp"))?;
    let utc = parsed
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| bad("is out of range in UTC"))?;
    let (unit, digits) = precision.unit_and_digits();
    let nanos = utc.nanosecond();
    let floor = nanos - nanos % unit;
    let rounded = match rounding {
        Rounding::Ceil if floor != nanos => {
            let up = floor + unit;
            if up >= 1_000_000_000 {
                utc.replace_nanosecond(0)
                    .ok()
                    .and_then(|whole| whole.checked_add(time::Duration::SECOND))
            } else {
                utc.replace_nanosecond(up).ok()
            }
        }
        Rounding::Ceil | Rounding::Floor => utc.replace_nanosecond(floor).ok(),
    }
    .ok_or_else(|| bad("is out of range once rounded up"))?;
    let year = rounded.year();
    if !(0..=9999).contains(&year) {
        return Err(bad("is outside RFC 3339's years 0000 to 9999 in UTC"));
    }
    let mut out = String::with_capacity(31);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        u8::from(rounded.month()),
        rounded.day(),
        rounded.hour(),
        rounded.minute(),
        rounded.second(),
    );
    if digits > 0 {
        let _ = write!(out, ".{:0digits$}", rounded.nanosecond() / unit);
    }
    out.push('Z');
    Ok(out)
}

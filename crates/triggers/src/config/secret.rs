//! A string that must never be printed.

use serde::{Deserialize, Deserializer};

/// A credential from a trigger config (a header value, say).
///
/// `Debug` and `Display` print `<redacted>`, so a secret that ends up in a log line, an
/// error or a `{:?}` of its config shows nothing. The only way to the plaintext is
/// [`Secret::expose`], which is easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plaintext value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext, for the one place that needs it: building the outgoing request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// A string; anything else is an error that does not quote the value (serde's own
    /// says `invalid type: integer `839201938475`, expected a string`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)
            .map(Secret)
            .map_err(withhold_value)
    }
}

/// `err`, unless it is serde's `invalid type` or `invalid value` (which quote the value
/// found): then [`crate::SECRET_TYPE_ERROR`] instead. Errors about the document's syntax
/// say nothing of values and are kept; the parsers add the position to either.
pub(crate) fn withhold_value<E: serde::de::Error>(err: E) -> E {
    withhold_value_as(err, crate::config::document::SECRET_TYPE_ERROR)
}

/// [`withhold_value`], saying `instead` in place of a withheld message.
pub(crate) fn withhold_value_as<E: serde::de::Error>(err: E, instead: &str) -> E {
    let message = err.to_string();
    if message.contains("invalid type") || message.contains("invalid value") {
        E::custom(instead)
    } else {
        err
    }
}

/// A secret is a string marked `"secret": true`, which tells a form editor to mask it and
/// a control plane to encrypt it (see [`crate::encrypt_config`]).
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "secret": true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("Bearer hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), "Bearer hunter2");
    }
}

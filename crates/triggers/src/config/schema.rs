//! The JSON Schema of a trigger config, for form editors and control planes.
//!
//! Generated from the Rust types (schemars), so it cannot drift from what
//! [`TriggersConfig::parse`] accepts: field names and defaults come from the serde
//! attributes, descriptions from the doc comments, bounds from the constants in
//! `document.rs`, and `additionalProperties: false` from `deny_unknown_fields`. Secret
//! fields (URLs, header values, signing secrets) carry `"secret": true`. What the schema
//! cannot say (templates render to JSON, URLs are `http`/`https`, header names are
//! valid) is checked by [`crate::validate`].
//!
//! The schema keeps to standard JSON Schema, so that ajv in strict mode (what JSON Forms
//! and RJSF build on) compiles it with only `secret` registered: schemars's own formats
//! for Rust's number types (`uint32`, `uint64`, `double`, ...) become the bounds they
//! stand for ([`standard_formats_only`]).

use crate::TriggersConfig;
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;

/// The config's JSON Schema (draft 2020-12).
pub fn config_schema() -> serde_json::Value {
    SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(standard_formats_only))
        .into_generator()
        .into_root_schema_for::<TriggersConfig>()
        .to_value()
}

/// The formats of JSON Schema 2020-12 that ajv-formats checks too: the only ones kept.
const STANDARD_FORMATS: [&str; 15] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "uri-template",
    "uuid",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Removes every `format` outside [`STANDARD_FORMATS`] (strict validators refuse unknown
/// ones): an integer format becomes the `minimum` and `maximum` of its Rust type, which
/// serde enforces anyway, tightening any bound already there; any other (`double`,
/// `float`, `ip`) says nothing a validator could check and is dropped. What the schema
/// accepts is unchanged for every validator that ignored those formats.
fn standard_formats_only(schema: &mut schemars::Schema) {
    let Some(format) = schema.get("format").and_then(|f| f.as_str()) else {
        return;
    };
    if STANDARD_FORMATS.contains(&format) {
        return;
    }
    let bounds: Option<(serde_json::Number, serde_json::Number)> = match format {
        "int8" => Some((i8::MIN.into(), i8::MAX.into())),
        "int16" => Some((i16::MIN.into(), i16::MAX.into())),
        "int32" => Some((i32::MIN.into(), i32::MAX.into())),
        "int64" | "int" => Some((i64::MIN.into(), i64::MAX.into())),
        "uint8" => Some((0.into(), u8::MAX.into())),
        "uint16" => Some((0.into(), u16::MAX.into())),
        "uint32" => Some((0.into(), u32::MAX.into())),
        "uint64" | "uint" => Some((0.into(), u64::MAX.into())),
        // 128-bit integers: no JSON number holds their range exactly; unsigned ones
        // keep schemars's `minimum: 0`.
        _ => None,
    };
    schema.remove("format");
    if let Some((min, max)) = bounds {
        tighten(schema, "minimum", min, |new, old| new > old);
        tighten(schema, "maximum", max, |new, old| new < old);
    }
}

/// Sets `key` to `bound` unless the schema already has a bound at least as tight.
fn tighten(
    schema: &mut schemars::Schema,
    key: &str,
    bound: serde_json::Number,
    tighter: fn(f64, f64) -> bool,
) {
    let current = schema.get(key).and_then(serde_json::Value::as_f64);
    let new = bound.as_f64().unwrap_or(f64::NAN);
    if current.is_none_or(|old| tighter(new, old)) {
        schema.insert(key.to_string(), serde_json::Value::Number(bound));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(value: serde_json::Value) -> serde_json::Value {
        let mut schema = schemars::Schema::try_from(value).expect("an object");
        standard_formats_only(&mut schema);
        schema.to_value()
    }

    #[test]
    fn integer_formats_become_bounds_and_other_unknown_formats_go() {
        use serde_json::json;
        assert_eq!(
            apply(json!({"type": "integer", "format": "uint32", "minimum": 0})),
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
        );
        // A tighter bound from the config's own range stays.
        assert_eq!(
            apply(json!({"type": "integer", "format": "uint64", "minimum": 1, "maximum": 300})),
            json!({"type": "integer", "minimum": 1, "maximum": 300})
        );
        assert_eq!(
            apply(json!({"type": "integer", "format": "int32"})),
            json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX})
        );
        assert_eq!(
            apply(json!({"type": "number", "format": "double"})),
            json!({"type": "number"})
        );
        assert_eq!(
            apply(json!({"type": "string", "format": "uri"})),
            json!({"type": "string", "format": "uri"})
        );
    }
}

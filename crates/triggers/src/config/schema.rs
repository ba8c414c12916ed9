//! The JSON Schema of a trigger config, for form editors and control planes.
//!
//! Generated from the Rust types (schemars), so it cannot drift from what
//! [`TriggersConfig::parse`] accepts: field names and defaults come from the serde
//! attributes, descriptions from the doc comments, bounds from the constants in
//! `document.rs`, and `additionalProperties: false` from `deny_unknown_fields`. Secret
//! fields (URLs, header values, signing secrets) carry `"secret": true`. What the schema
//! cannot say (templates render to JSON, URLs are `http`/`https`, header names are
//! valid) is checked by [`crate::validate`].

use crate::TriggersConfig;

/// The config's JSON Schema (draft 2020-12).
pub fn config_schema() -> serde_json::Value {
    schemars::schema_for!(TriggersConfig).to_value()
}

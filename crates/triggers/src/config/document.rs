//! The trigger config as users write it (JSON or YAML), before validation.
//!
//! These types are strict (`deny_unknown_fields`) and only describe the shape;
//! [`crate::validate`] turns them once into [`crate::Triggers`], the checked form that
//! delivery uses.

use super::duration::ConfigDuration;
use super::nesting;
use crate::{AuthConfig, DrainConfig, OnFailure, ResponsesConfig, Secret};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Largest config document, in bytes: checked before any parser sees it.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// Deepest nesting of arrays and objects (JSON, or YAML flow collections) in a config
/// document, checked before parsing: a config needs 5 levels; libyaml's time grows with
/// the square of this depth.
pub const MAX_CONFIG_DEPTH: usize = 32;
/// Most triggers in one config: each renders and sends a webhook per transaction.
pub const MAX_TRIGGERS: usize = 64;
/// Most `headers` per trigger (`HeaderMap` panics past 32,768).
pub const MAX_HEADERS: usize = 64;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value, in bytes: common servers refuse requests whose headers total
/// more than 8 KiB.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// Default per-attempt timeout of a webhook request, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Smallest accepted `timeoutSecs`.
pub const MIN_TIMEOUT_SECS: u64 = 1;
/// Largest accepted `timeoutSecs`: a shard waits on its triggers, so a request may not
/// hold it for longer than five minutes per attempt.
pub const MAX_TIMEOUT_SECS: u64 = 300;
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Largest accepted `maxRetries`.
pub const MAX_MAX_RETRIES: u32 = 20;
/// Default time budget of one delivery's retries, in seconds: no retry starts (and no
/// backoff or `Retry-After` wait begins) that would end past it.
pub const DEFAULT_RETRY_BUDGET_SECS: u64 = 300;
/// Smallest accepted `retryBudgetSecs`.
pub const MIN_RETRY_BUDGET_SECS: u64 = 1;
/// Largest accepted `retryBudgetSecs`: a shard waits on its triggers, so a delivery may
/// not keep retrying for more than an hour.
pub const MAX_RETRY_BUDGET_SECS: u64 = 3600;
/// Most `signingSecrets` per trigger: a rotation needs two or three, not dozens (each one
/// adds a signature to every request).
pub const MAX_SIGNING_SECRETS: usize = 10;

/// Longest trigger name, in bytes.
pub const MAX_TRIGGER_NAME_BYTES: usize = 64;
/// Most `collections` entries per trigger.
pub const MAX_COLLECTIONS: usize = 256;
/// Longest `collections` entry, in bytes (Flow's collection names are at most 512).
pub const MAX_COLLECTION_BYTES: usize = 512;
/// Smallest accepted `maxAttempts` (the first attempt always happens).
pub const MIN_MAX_ATTEMPTS: u32 = 1;
/// Largest accepted `maxAttempts`: the first attempt and [`MAX_MAX_RETRIES`] retries.
pub const MAX_MAX_ATTEMPTS: u32 = MAX_MAX_RETRIES + 1;

/// The triggers of one materialization.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// The webhooks to fire after each committed transaction that read documents: a list
    /// (each entry may have a `name`), or a map from each trigger's name to the trigger
    /// (Flow's newest form), compiled in the byte order of the names.
    #[serde(deserialize_with = "trigger_list_or_map")]
    #[schemars(schema_with = "trigger_list_or_map_schema")]
    pub config: Vec<TriggerConfig>,
    /// Flow's `interval`: the least time between two webhooks of a trigger, for every
    /// trigger (a burst of transactions collapses into one webhook covering the span).
    /// Each trigger drains coalesced with this `minIntervalSecs` (see `drain`).
    #[serde(default)]
    pub interval: Option<ConfigDuration>,
}

// One webhook as written: what serde and the JSON Schema read (its doc comment is the
// schema's description of a trigger). Both spellings of the timeout and of the retries
// are here; `TriggerConfig` keeps which ones were given.
/// One webhook.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TriggerDocument {
    /// The trigger's name, unique in the config: 1 to 64 ASCII letters, digits, `_`, `.`
    /// or `-`. Without one, a list entry is named by its index (`0`, `1`, ...). Not
    /// allowed in the map form, where the key is the name.
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_TRIGGER_NAME_BYTES), regex(pattern = TRIGGER_NAME_PATTERN))]
    name: Option<String>,
    /// Absolute `http` or `https` URL to send the payload to. Treated as a secret (it
    /// may carry a credential: user info, a token in its path or query).
    #[schemars(url, extend("secret" = true))]
    url: String,
    /// HTTP method of the request.
    #[serde(default)]
    method: HttpMethod,
    /// Extra request headers. Values are secrets (they usually carry credentials).
    #[serde(default, deserialize_with = "secret_headers")]
    #[schemars(extend("default" = {}, "maxProperties" = MAX_HEADERS))]
    headers: BTreeMap<String, Secret>,
    /// Handlebars template of the JSON payload.
    #[schemars(length(max = crate::MAX_TEMPLATE_BYTES))]
    payload_template: String,
    /// Timeout of each attempt, in seconds (30 when neither spelling is given). Not with
    /// `timeout`. No schema `default`: a form editor filling defaults in would add it
    /// beside a user's `timeout`, which is an error.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "u64", range(min = MIN_TIMEOUT_SECS, max = MAX_TIMEOUT_SECS))]
    timeout_secs: Option<u64>,
    /// Flow's spelling of the timeout of each attempt: a duration from `1s` to `5m`, such
    /// as `30s`. Not with `timeoutSecs`.
    #[serde(default)]
    timeout: Option<ConfigDuration>,
    /// Retries after the first attempt before the delivery fails for good (3 when neither
    /// spelling is given). Not with `maxAttempts`. No schema `default`, as for `timeoutSecs`.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "u32", range(max = MAX_MAX_RETRIES))]
    max_retries: Option<u32>,
    /// Flow's spelling of the retries: attempts in all, the first one included
    /// (`maxAttempts: 3` is `maxRetries: 2`). Not with `maxRetries`.
    #[serde(default)]
    #[schemars(range(min = MIN_MAX_ATTEMPTS, max = MAX_MAX_ATTEMPTS))]
    max_attempts: Option<u32>,
    /// Time budget, in seconds, across every attempt of one delivery; retries stop when it
    /// is spent even if `maxRetries` allows more.
    #[serde(default = "default_retry_budget_secs")]
    #[schemars(range(min = MIN_RETRY_BUDGET_SECS, max = MAX_RETRY_BUDGET_SECS))]
    retry_budget_secs: u64,
    /// Standard Webhooks signing secrets (`whsec_` + base64). Each adds a `v1` signature
    /// to `webhook-signature`, so a receiver can rotate keys without missing a webhook.
    #[serde(default, deserialize_with = "secret_list")]
    #[schemars(length(max = MAX_SIGNING_SECRETS), extend("default" = []))]
    signing_secrets: Vec<Secret>,
    /// Follow `307` and `308` redirects (which keep method and body), re-checking the
    /// network policy at every hop. Other redirects are never followed.
    #[serde(default)]
    follow_redirects: bool,
    /// How the trigger's backlog drains when the runtime delivers in decoupled mode:
    /// `{"mode": "coalesced", "minIntervalSecs": 0}` (the default), `{"mode": "ordered"}`
    /// or `{"mode": "concurrent", "maxInFlight": 4}`.
    #[serde(default)]
    drain: DrainConfig,
    /// Token authentication: a bearer token fetched from a token endpoint (OAuth 2.0
    /// client credentials, or a JSON login such as Airflow 3's `/auth/token`), sent as
    /// `Authorization: Bearer <token>`, renewed before it expires and once on a 401.
    /// Its credentials are secrets.
    #[serde(default, deserialize_with = "crate::send::token_auth::secret_auth")]
    auth: Option<AuthConfig>,
    /// What the receiver's answers mean beyond the defaults:
    /// `{"alreadyDelivered": [409], "retry": []}` (the default).
    #[serde(default)]
    responses: ResponsesConfig,
    /// What a webhook that fails for good (its retries spent) does to the trigger's
    /// backlog in decoupled delivery: `stop` (the default) waits for an operator to retry
    /// or skip it; `deadLetter` leaves it FAILED in the ledger (a dead letter, which an
    /// operator may retry or replay later) and goes on with the next webhooks.
    #[serde(default)]
    on_failure: OnFailure,
    /// The collections this trigger fires for: exact collection names, or name prefixes
    /// ending in `/` (`acmeCo/orders/`). Without it, every collection. A transaction that
    /// read none of them sends this trigger no webhook, and its webhooks list only the
    /// matching collections in `collection_names`. 1 to 256 distinct entries of 1 to 512
    /// bytes.
    #[serde(default)]
    #[schemars(
        length(min = 1, max = MAX_COLLECTIONS),
        inner(length(min = 1, max = MAX_COLLECTION_BYTES)),
        extend("uniqueItems" = true)
    )]
    collections: Option<Vec<String>>,
}

/// The JSON Schema `pattern` of a trigger name (the schema also bounds its length).
pub(crate) const TRIGGER_NAME_PATTERN: &str = "^[A-Za-z0-9_.-]+$";

/// One webhook, as parsed: our fields with their defaults applied, and Flow's spellings
/// (`timeout`, `maxAttempts`) kept as written. Validation resolves the two spellings of
/// a setting (giving both is an error there) and checks every bound.
#[derive(Clone, Deserialize)]
#[serde(from = "TriggerDocument")]
pub struct TriggerConfig {
    /// The name given: a list entry's `name`, or the map key. `None` for a list entry
    /// without one, which is named by its index.
    pub name: Option<String>,
    /// Absolute `http` or `https` URL to send the payload to. Treated as a secret (it
    /// may carry a credential: user info, a token in its path or query).
    pub url: String,
    /// HTTP method of the request.
    pub method: HttpMethod,
    /// Extra request headers. Values are secrets (they usually carry credentials).
    pub headers: BTreeMap<String, Secret>,
    /// Handlebars template of the JSON payload.
    pub payload_template: String,
    /// `timeoutSecs`, or its default: the timeout of each attempt unless `timeout` is given.
    pub timeout_secs: u64,
    /// Flow's `timeout`, as written; when given it is the timeout of each attempt.
    pub timeout: Option<ConfigDuration>,
    /// `maxRetries`, or its default: the retries unless `maxAttempts` is given.
    pub max_retries: u32,
    /// Flow's `maxAttempts`; when given the retries are one fewer.
    pub max_attempts: Option<u32>,
    /// Time budget, in seconds, across every attempt of one delivery.
    pub retry_budget_secs: u64,
    /// Standard Webhooks signing secrets (`whsec_` + base64).
    pub signing_secrets: Vec<Secret>,
    /// Follow `307` and `308` redirects.
    pub follow_redirects: bool,
    /// How the trigger's backlog drains in decoupled delivery (a config's `interval`
    /// lengthens a coalesced drain's interval, see [`TriggersConfig::interval`]).
    pub drain: DrainConfig,
    /// Token authentication.
    pub auth: Option<AuthConfig>,
    /// What the receiver's answers mean beyond the defaults.
    pub responses: ResponsesConfig,
    /// What a webhook that fails for good does to the backlog (`onFailure`).
    pub on_failure: OnFailure,
    /// The collections it fires for (exact names, or prefixes ending in `/`); `None` for
    /// every collection.
    pub collections: Option<Vec<String>>,
    /// Which of our defaulted fields the document gave, so that validation can refuse
    /// both spellings of one setting.
    pub(crate) given: Given,
}

/// Which defaulted fields a trigger's document gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Given {
    pub(crate) timeout_secs: bool,
    pub(crate) max_retries: bool,
}

impl From<TriggerDocument> for TriggerConfig {
    fn from(doc: TriggerDocument) -> Self {
        TriggerConfig {
            given: Given {
                timeout_secs: doc.timeout_secs.is_some(),
                max_retries: doc.max_retries.is_some(),
            },
            name: doc.name,
            url: doc.url,
            method: doc.method,
            headers: doc.headers,
            payload_template: doc.payload_template,
            timeout_secs: doc.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
            timeout: doc.timeout,
            max_retries: doc.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            max_attempts: doc.max_attempts,
            retry_budget_secs: doc.retry_budget_secs,
            signing_secrets: doc.signing_secrets,
            follow_redirects: doc.follow_redirects,
            drain: doc.drain,
            auth: doc.auth,
            responses: doc.responses,
            on_failure: doc.on_failure,
            collections: doc.collections,
        }
    }
}

impl JsonSchema for TriggerConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TriggerConfig".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = TriggerDocument::json_schema(generator);
        // No `default` (not even null) on either spelling of a pair: a form editor that
        // fills defaults in would give both.
        if let Some(properties) = schema
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
        {
            for field in ["timeout", "timeoutSecs", "maxAttempts", "maxRetries"] {
                if let Some(property) = properties.get_mut(field).and_then(|p| p.as_object_mut()) {
                    property.remove("default");
                }
            }
        }
        // Two spellings of one setting: one at most. (Each `required` names properties the
        // same subschema defines, on an object type, as ajv's strict mode wants.)
        schema.insert(
            "allOf".to_string(),
            serde_json::json!([
                {"not": {"type": "object", "properties": {"timeout": true, "timeoutSecs": true},
                         "required": ["timeout", "timeoutSecs"]}},
                {"not": {"type": "object", "properties": {"maxAttempts": true, "maxRetries": true},
                         "required": ["maxAttempts", "maxRetries"]}},
            ]),
        );
        schema
    }
}

/// A field present in the document: `Some`, and never `null` (as when it is absent).
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// `config`: a list of triggers, or a map from name to trigger (sorted by name, so the
/// order does not depend on how a tool wrote the map). A map entry may not have a
/// `name` of its own; a key given twice is refused.
fn trigger_list_or_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<TriggerConfig>, D::Error> {
    struct ListOrMap;
    impl<'de> serde::de::Visitor<'de> for ListOrMap {
        type Value = Vec<TriggerConfig>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of triggers, or a map from trigger name to trigger")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut triggers = Vec::new();
            // Bounded by the document's size; validation refuses more than MAX_TRIGGERS.
            while let Some(trigger) = seq.next_element()? {
                triggers.push(trigger);
            }
            Ok(triggers)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            use serde::de::Error as _;
            let mut triggers: BTreeMap<String, TriggerConfig> = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                let mut trigger: TriggerConfig = map.next_value()?;
                if trigger.name.is_some() {
                    return Err(A::Error::custom(format!(
                        "trigger {}: `name` is not allowed in the map form, where the key is the trigger's name",
                        shown_name(&name)
                    )));
                }
                if triggers.contains_key(&name) {
                    return Err(A::Error::custom(format!(
                        "trigger name {:?} is given twice",
                        shown_name(&name)
                    )));
                }
                trigger.name = Some(name.clone());
                triggers.insert(name, trigger);
            }
            Ok(triggers.into_values().collect())
        }
    }
    deserializer.deserialize_any(ListOrMap)
}

/// A trigger name fit for a message: its first 64 characters.
pub(crate) fn shown_name(name: &str) -> String {
    name.chars().take(MAX_TRIGGER_NAME_BYTES).collect()
}

fn trigger_list_or_map_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let trigger = generator.subschema_for::<TriggerConfig>();
    schemars::json_schema!({
        "anyOf": [
            {
                "type": "array",
                "items": trigger,
                "maxItems": MAX_TRIGGERS,
            },
            {
                "type": "object",
                "additionalProperties": {
                    "allOf": [trigger],
                    "not": {"type": "object", "properties": {"name": true}, "required": ["name"]},
                },
                "propertyNames": {
                    "minLength": 1,
                    "maxLength": MAX_TRIGGER_NAME_BYTES,
                    "pattern": TRIGGER_NAME_PATTERN,
                },
                "maxProperties": MAX_TRIGGERS,
            },
        ],
    })
}

impl std::fmt::Debug for TriggerConfig {
    /// The URL is shown as its origin only: user info, query and path may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerConfig")
            .field("name", &self.name)
            .field("url", &url_origin(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("payload_template", &self.payload_template)
            .field("timeout_secs", &self.timeout_secs)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_attempts", &self.max_attempts)
            .field("retry_budget_secs", &self.retry_budget_secs)
            .field("signing_secrets", &self.signing_secrets)
            .field("follow_redirects", &self.follow_redirects)
            .field("drain", &self.drain)
            .field("auth", &self.auth)
            .field("responses", &self.responses)
            .field("on_failure", &self.on_failure)
            .field("collections", &self.collections)
            .finish()
    }
}

/// `scheme://host[:port]` of a URL, or `<invalid url>`: the only part of a webhook URL
/// that is safe to print.
pub(crate) fn url_origin(raw: &str) -> String {
    url::Url::parse(raw)
        .ok()
        .filter(url::Url::has_host)
        .map_or_else(
            || "<invalid url>".to_string(),
            |url| url.origin().ascii_serialization(),
        )
}

/// The HTTP methods a webhook may use: those that carry a body.
// Serialize only so the schema can show the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `POST`, the default.
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

fn default_retry_budget_secs() -> u64 {
    DEFAULT_RETRY_BUDGET_SECS
}

/// The syntax a config document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// JSON.
    Json,
    /// YAML (a superset of JSON, so JSON documents parse too).
    Yaml,
}

impl std::fmt::Display for ConfigFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigFormat::Json => "JSON",
            ConfigFormat::Yaml => "YAML",
        })
    }
}

/// A config document that is too large or too deep to parse, or does not have the shape
/// of [`TriggersConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The document is longer than [`MAX_CONFIG_BYTES`]; nothing of it was parsed.
    #[error("trigger config is {bytes} bytes, but at most {max} are allowed")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// Arrays or objects nest deeper than [`MAX_CONFIG_DEPTH`]; nothing was parsed.
    #[error(
        "trigger config nests arrays or objects more than {max} deep \
         (at line {line}, column {column})"
    )]
    TooDeep {
        /// The bound.
        max: usize,
        /// 1-based line where the first too-deep collection opens.
        line: usize,
        /// 1-based column (in bytes) where it opens.
        column: usize,
    },
    /// The parser refused the document.
    #[error("trigger config is not valid {format} at line {line}, column {column}: {message}")]
    Syntax {
        /// The syntax the document was read as.
        format: ConfigFormat,
        /// 1-based line of the problem (0 when the parser could not tell).
        line: usize,
        /// 1-based column of the problem (0 when the parser could not tell).
        column: usize,
        /// What the parser found. Never contains a value under `headers` or
        /// `signingSecrets`, whatever its type (see [`SECRET_TYPE_ERROR`]).
        message: String,
    },
}

/// What a parse error says instead of serde's, for a value under `headers` or
/// `signingSecrets` of the wrong type: serde quotes the value it found (`invalid type:
/// integer `839201938475``), and these values are secrets.
pub const SECRET_TYPE_ERROR: &str =
    "invalid type: header values and signing secrets must be strings (the value is not shown)";

impl TriggersConfig {
    /// Parses a plaintext config document. A SOPS-encrypted one goes through
    /// [`crate::decrypt_config`] instead (or [`crate::load_config`], which takes either).
    pub fn parse(text: &str, format: ConfigFormat) -> Result<Self, ParseError> {
        parse_document(text, format)
    }
}

/// Parses a JSON or YAML document into any serde type, reporting the position of the
/// first problem. Shared by the plaintext parser and the SOPS reader, so both accept the
/// same syntax and the same bounds: [`MAX_CONFIG_BYTES`], then [`MAX_CONFIG_DEPTH`], both
/// checked before the parser runs.
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(
    text: &str,
    format: ConfigFormat,
) -> Result<T, ParseError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ParseError::TooLarge {
            bytes: text.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let too_deep = match format {
        ConfigFormat::Json => nesting::json_too_deep(text, MAX_CONFIG_DEPTH),
        ConfigFormat::Yaml => nesting::yaml_too_deep(text, MAX_CONFIG_DEPTH),
    };
    if let Some((line, column)) = too_deep {
        return Err(ParseError::TooDeep {
            max: MAX_CONFIG_DEPTH,
            line,
            column,
        });
    }
    match format {
        ConfigFormat::Json => serde_json::from_str(text).map_err(|err| ParseError::Syntax {
            format,
            line: err.line(),
            column: err.column(),
            message: strip_position(&err.to_string()),
        }),
        ConfigFormat::Yaml => serde_yaml_ng::from_str(text).map_err(|err| {
            let (line, column) = err
                .location()
                .map(|at| (at.line(), at.column()))
                .unwrap_or((0, 0));
            ParseError::Syntax {
                format,
                line,
                column,
                message: strip_position(&err.to_string()),
            }
        }),
    }
}

/// `headers`, with serde's type errors (which quote the value) replaced by
/// [`SECRET_TYPE_ERROR`]. The position of the error is kept: the parsers add it.
fn secret_headers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Secret>, D::Error> {
    BTreeMap::deserialize(deserializer).map_err(crate::config::secret::withhold_value)
}

/// `signingSecrets`, likewise.
fn secret_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Secret>, D::Error> {
    Vec::deserialize(deserializer).map_err(crate::config::secret::withhold_value)
}

/// serde_json and serde_yaml append " at line L column C"; we report those as fields.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let config = TriggersConfig::parse(
            r#"{"config": [{"url": "https://example.com", "payloadTemplate": "{}"}]}"#,
            ConfigFormat::Json,
        )
        .expect("parses");
        let trigger = &config.config[0];
        assert_eq!(trigger.method, HttpMethod::Post);
        assert_eq!(trigger.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(trigger.max_retries, DEFAULT_MAX_RETRIES);
        assert_eq!(trigger.retry_budget_secs, DEFAULT_RETRY_BUDGET_SECS);
        assert!(trigger.signing_secrets.is_empty());
        assert!(!trigger.follow_redirects);
        assert!(trigger.headers.is_empty());
        assert_eq!(trigger.responses.already_delivered, [409]);
        assert!(trigger.responses.retry.is_empty());
    }

    /// Issue 13, item 1: `responses` parses with its defaults, refuses unknown fields,
    /// and takes only integers that fit a status.
    #[test]
    fn response_policy_parses_with_defaults_and_rejects_unknown_fields() {
        let parse = |responses: &str| {
            TriggersConfig::parse(
                &format!("config:\n  - url: https://x\n    payloadTemplate: '{{}}'\n    responses: {responses}\n"),
                ConfigFormat::Yaml,
            )
            .map(|c| c.config[0].responses.clone())
        };
        assert_eq!(
            parse("{retry: [425]}"),
            Ok(ResponsesConfig {
                already_delivered: vec![409],
                retry: vec![425]
            })
        );
        assert_eq!(
            parse("{alreadyDelivered: []}"),
            Ok(ResponsesConfig {
                already_delivered: vec![],
                retry: vec![]
            })
        );
        assert_eq!(parse("{}"), Ok(ResponsesConfig::default()));
        for bad in [
            "{already_delivered: [409]}",
            "{retry: 425}",
            "{retry: ['425']}",
            "{retry: [-1]}",
            "{retry: [70000]}",
            "[409]",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn yaml_parses_every_field() {
        let config = TriggersConfig::parse(
            "config:\n  - url: https://example.com/hook\n    method: PATCH\n    headers:\n      Authorization: Bearer abc\n    payloadTemplate: '{}'\n    timeoutSecs: 5\n    maxRetries: 0\n    retryBudgetSecs: 60\n    signingSecrets: [whsec_c2VjcmV0]\n    followRedirects: true\n",
            ConfigFormat::Yaml,
        )
        .expect("parses");
        let trigger = &config.config[0];
        assert_eq!(trigger.method, HttpMethod::Patch);
        assert_eq!(trigger.timeout_secs, 5);
        assert_eq!(trigger.max_retries, 0);
        assert_eq!(trigger.retry_budget_secs, 60);
        assert_eq!(trigger.signing_secrets[0].expose(), "whsec_c2VjcmV0");
        assert!(trigger.follow_redirects);
        assert_eq!(trigger.headers["Authorization"].expose(), "Bearer abc");
    }

    #[test]
    fn unknown_fields_are_rejected_with_a_position() {
        let err = TriggersConfig::parse(
            "{\"config\": [{\"url\": \"https://example.com\",\n \"payloadTemplate\": \"{}\", \"retries\": 3}]}",
            ConfigFormat::Json,
        )
        .expect_err("unknown field");
        assert!(
            matches!(&err, ParseError::Syntax { message, line: 2, .. } if message.contains("unknown field `retries`")),
            "{err}"
        );

        let err = TriggersConfig::parse(
            "config:\n  - url: https://example.com\n    payloadTemplate: '{}'\n    authentication: x\n",
            ConfigFormat::Yaml,
        )
        .expect_err("unknown field");
        assert!(
            matches!(&err, ParseError::Syntax { message, line: 4, .. } if message.contains("unknown field `authentication`")),
            "{err}"
        );
    }

    #[test]
    fn parse_errors_do_not_echo_secret_values() {
        // A header value of the wrong type: the error names the type, not the value.
        let err = TriggersConfig::parse(
            r#"{"config": [{"url": "https://x", "payloadTemplate": "{}", "headers": {"A": ["hunter2"]}}]}"#,
            ConfigFormat::Json,
        )
        .expect_err("wrong type");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_shows_neither_header_values_nor_url_credentials() {
        let config = TriggersConfig::parse(
            r#"{"config": [{"url": "https://u:pw1@hooks.example.com/T0/secretpath?key=k3y", "headers": {"Authorization": "Bearer t0ken"}, "signingSecrets": ["whsec_czNjcjN0"], "payloadTemplate": "{}"}]}"#,
            ConfigFormat::Json,
        )
        .expect("parses");
        let debug = format!("{config:?}");
        assert!(debug.contains("https://hooks.example.com"), "{debug}");
        assert!(debug.contains("signing_secrets: [<redacted>]"), "{debug}");
        for secret in ["pw1", "secretpath", "k3y", "t0ken", "czNjcjN0"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    #[test]
    fn drain_modes_parse_with_defaults_and_reject_unknown_fields() {
        let parse = |drain: &str| {
            TriggersConfig::parse(
                &format!(r#"{{"config": [{{"url": "https://x", "payloadTemplate": "{{}}", "drain": {drain}}}]}}"#),
                ConfigFormat::Json,
            )
            .map(|c| c.config[0].drain)
        };
        assert_eq!(parse(r#"{"mode": "ordered"}"#), Ok(DrainConfig::Ordered {}));
        assert_eq!(
            parse(r#"{"mode": "concurrent"}"#),
            Ok(DrainConfig::Concurrent {
                max_in_flight: crate::DEFAULT_MAX_IN_FLIGHT
            })
        );
        assert_eq!(
            parse(r#"{"mode": "coalesced", "minIntervalSecs": 60}"#),
            Ok(DrainConfig::Coalesced {
                min_interval_secs: 60
            })
        );
        for bad in [
            r#"{"mode": "ordered", "maxInFlight": 2}"#,
            r#"{"mode": "coalesced", "maxInFlight": 2}"#,
            r#"{"mode": "fifo"}"#,
            r#"{}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
        let default = TriggersConfig::parse(
            r#"{"config": [{"url": "https://x", "payloadTemplate": "{}"}]}"#,
            ConfigFormat::Json,
        )
        .expect("parses");
        assert_eq!(default.config[0].drain, DrainConfig::default());
    }

    #[test]
    fn methods_other_than_post_put_patch_are_rejected() {
        let err = TriggersConfig::parse(
            r#"{"config": [{"url": "https://x", "method": "GET", "payloadTemplate": "{}"}]}"#,
            ConfigFormat::Json,
        )
        .expect_err("GET has no body");
        assert!(err.to_string().contains("unknown variant `GET`"), "{err}");
    }

    /// Issue 12: 100k-deep YAML flow nesting took over a minute in libyaml.
    #[test]
    fn a_hundred_thousand_deep_yaml_flow_nesting_is_refused_before_parsing() {
        let deep = format!("config: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        for format in [ConfigFormat::Yaml, ConfigFormat::Json] {
            let err = TriggersConfig::parse(&deep, format).expect_err("too deep");
            assert_eq!(
                err,
                ParseError::TooDeep {
                    max: MAX_CONFIG_DEPTH,
                    line: 1,
                    column: 9 + MAX_CONFIG_DEPTH
                },
                "{format}"
            );
        }
        let deep_json = format!(
            "{{\"config\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            TriggersConfig::parse(&deep_json, ConfigFormat::Json),
            Err(ParseError::TooDeep { .. })
        ));
        // Braces inside strings and block scalars are text, not nesting.
        let template = format!("{}{}", "{\"a\": ".repeat(40), "}".repeat(40));
        let yaml = format!(
            "config:\n  - url: https://x\n    payloadTemplate: |\n      {template}\n  - url: https://y\n    payloadTemplate: '{template}'\n"
        );
        let config = TriggersConfig::parse(&yaml, ConfigFormat::Yaml).expect("parses");
        assert_eq!(config.config[1].payload_template, template);
        let json =
            serde_json::json!({"config": [{"url": "https://x", "payloadTemplate": template}]});
        TriggersConfig::parse(&json.to_string(), ConfigFormat::Json).expect("parses");
    }

    #[test]
    fn documents_past_the_size_bound_are_refused_before_parsing() {
        let text = format!("config: []\n#{}", "x".repeat(MAX_CONFIG_BYTES));
        assert_eq!(
            TriggersConfig::parse(&text, ConfigFormat::Yaml).expect_err("too large"),
            ParseError::TooLarge {
                bytes: MAX_CONFIG_BYTES + 12,
                max: MAX_CONFIG_BYTES
            }
        );
    }
}

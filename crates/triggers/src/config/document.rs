//! The trigger config as users write it (JSON or YAML), before validation.
//!
//! These types are strict (`deny_unknown_fields`) and only describe the shape;
//! [`crate::validate`] turns them once into [`crate::Triggers`], the checked form that
//! delivery uses.

use super::nesting;
use crate::{AuthConfig, DrainConfig, ResponsesConfig, Secret};
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

/// The triggers of one materialization.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// The webhooks to fire after each committed transaction that read documents.
    #[schemars(length(max = crate::MAX_TRIGGERS))]
    pub config: Vec<TriggerConfig>,
}

/// One webhook.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerConfig {
    /// Absolute `http` or `https` URL to send the payload to. Treated as a secret (it
    /// may carry a credential: user info, a token in its path or query).
    #[schemars(url, extend("secret" = true))]
    pub url: String,
    /// HTTP method of the request.
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra request headers. Values are secrets (they usually carry credentials).
    #[serde(default, deserialize_with = "secret_headers")]
    #[schemars(extend("default" = {}, "maxProperties" = MAX_HEADERS))]
    pub headers: BTreeMap<String, Secret>,
    /// Handlebars template of the JSON payload.
    #[schemars(length(max = crate::MAX_TEMPLATE_BYTES))]
    pub payload_template: String,
    /// Timeout of each attempt, in seconds.
    #[serde(default = "default_timeout_secs")]
    #[schemars(range(min = MIN_TIMEOUT_SECS, max = MAX_TIMEOUT_SECS))]
    pub timeout_secs: u64,
    /// Retries after the first attempt before the delivery fails for good.
    #[serde(default = "default_max_retries")]
    #[schemars(range(max = MAX_MAX_RETRIES))]
    pub max_retries: u32,
    /// Time budget, in seconds, across every attempt of one delivery; retries stop when it
    /// is spent even if `maxRetries` allows more.
    #[serde(default = "default_retry_budget_secs")]
    #[schemars(range(min = MIN_RETRY_BUDGET_SECS, max = MAX_RETRY_BUDGET_SECS))]
    pub retry_budget_secs: u64,
    /// Standard Webhooks signing secrets (`whsec_` + base64). Each adds a `v1` signature
    /// to `webhook-signature`, so a receiver can rotate keys without missing a webhook.
    #[serde(default, deserialize_with = "secret_list")]
    #[schemars(length(max = MAX_SIGNING_SECRETS), extend("default" = []))]
    pub signing_secrets: Vec<Secret>,
    /// Follow `307` and `308` redirects (which keep method and body), re-checking the
    /// network policy at every hop. Other redirects are never followed.
    #[serde(default)]
    pub follow_redirects: bool,
    /// How the trigger's backlog drains when the runtime delivers in decoupled mode:
    /// `{"mode": "coalesced", "minIntervalSecs": 0}` (the default), `{"mode": "ordered"}`
    /// or `{"mode": "concurrent", "maxInFlight": 4}`.
    #[serde(default)]
    pub drain: DrainConfig,
    /// Token authentication: a bearer token fetched from a token endpoint (OAuth 2.0
    /// client credentials, or a JSON login such as Airflow 3's `/auth/token`), sent as
    /// `Authorization: Bearer <token>`, renewed before it expires and once on a 401.
    /// Its credentials are secrets.
    #[serde(default, deserialize_with = "crate::send::token_auth::secret_auth")]
    pub auth: Option<AuthConfig>,
    /// What the receiver's answers mean beyond the defaults:
    /// `{"alreadyDelivered": [409], "retry": []}` (the default).
    #[serde(default)]
    pub responses: ResponsesConfig,
}

impl std::fmt::Debug for TriggerConfig {
    /// The URL is shown as its origin only: user info, query and path may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerConfig")
            .field("url", &url_origin(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("payload_template", &self.payload_template)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("retry_budget_secs", &self.retry_budget_secs)
            .field("signing_secrets", &self.signing_secrets)
            .field("follow_redirects", &self.follow_redirects)
            .field("drain", &self.drain)
            .field("auth", &self.auth)
            .field("responses", &self.responses)
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

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
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

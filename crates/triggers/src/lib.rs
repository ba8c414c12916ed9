//! Trigger webhooks of a materialization: the pure logic of a trigger.
//!
//! The modules are the stages a trigger goes through, in the order data flows:
//!
//! - `config/`: a document in, compiled [`Triggers`] out: the config types and their
//!   bounds, SOPS at rest (through `triggers-sops`), the response policy, the drain,
//!   the JSON Schema, [`Secret`], and publish-time [`validate`].
//! - `render/`: stats to [`Variables`] (with the UUID [`Clock`]), and [`Templates`]
//!   rendered against them into payloads; [`Triggers::preview`].
//! - `send/`: the [`Deliverer`]: headers, signatures, tokens, trace context, retries
//!   and backoff, the [`NetworkPolicy`], and [`Deliverer::test_fire`].
//!
//! Every public item is re-exported here; the module paths are private.
//!
//! Data flows one way: per-binding [`BindingStats`](triggers_proto::BindingStats) of a
//! transaction become [`Variables`] (persisted by the runtime as
//! [`TriggerParams`](triggers_proto::TriggerParams)); after the commit is acknowledged,
//! a [`Deliverer`] renders every trigger's template against them and sends the webhooks.
//!
//! A config document is parsed ([`TriggersConfig`]), then validated and compiled once
//! ([`validate`] → [`Triggers`]): the same check a control plane runs at publish time.
//! A config stored SOPS-encrypted (secrets as `ENC[...]` leaves, the data key wrapped for
//! age recipients) is read with [`decrypt_config`] into the same [`TriggersConfig`].
//!
//! ```
//! use triggers::{ConfigFormat, PreviewVariables};
//!
//! let config = r#"
//! config:
//!   - url: https://airflow.example.com/api/v1/dags/refresh_marts/dagRuns
//!     payloadTemplate: |
//!       {"dag_run_id": "flow-{{flow_run_id}}", "to": "{{timestamp flow_published_at_max "us" "ceil"}}"}
//! "#;
//! let triggers = triggers::validate(config, ConfigFormat::Yaml)?;
//! // What the first trigger would send, against the placeholder variables.
//! let preview = triggers.preview(0, &PreviewVariables::placeholder())?;
//! assert!(preview.payload.contains("\"dag_run_id\": \"flow-"));
//!
//! // A template error names the trigger, the line and the variable.
//! let err = triggers::validate(
//!     "config: [{url: 'https://x.example.com', payloadTemplate: '{\"a\": \"{{flow_run}}\"}'}]",
//!     ConfigFormat::Yaml,
//! )
//! .err()
//! .expect("an unknown variable");
//! assert!(err.to_string().contains("flow_run"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Delivering is `Deliverer::new(RetryBackoff::default())?.deliver(&triggers, &variables)`
//! after the commit; `crates/runtime/examples/embed_shard.rs` runs the whole path.
//!
//! Receivers can dedupe and verify: every request carries the Standard Webhooks headers
//! (`webhook-id`, stable per transaction and trigger; `webhook-timestamp`; and, with
//! `signingSecrets`, `webhook-signature`), plus `webhook-attempt` and `webhook-reason`,
//! and a W3C `traceparent` ([`TraceParent`]) so a receiver's trace joins our log.
//! A [`NetworkPolicy`] keeps webhooks (and token endpoints) off loopback, private and
//! link-local addresses. A trigger with `auth` ([`AuthConfig`]) gets a bearer token from a
//! token endpoint, cached in memory and renewed before it expires and once on a 401.
//! Receivers that dedupe on a key of their own answer a re-sent webhook with a status
//! (Airflow's 409); a trigger's [`ResponsesConfig`] counts it as delivered ("already
//! delivered") when the webhook may have arrived before, and names extra retry statuses.
//!
//! Operators check a trigger before a transaction fires it: [`Triggers::preview`] renders
//! a payload against [`PreviewVariables`] without sending it, and
//! [`Deliverer::test_fire`] sends one marked attempt and reports what came back.
//!
//! This crate knows nothing of RocksDB, shards or gRPC; `triggers-runtime` does.

mod config;
mod render;
mod send;

pub use config::collections::MAX_LISTED_BINDINGS;
pub use config::document::{
    ConfigFormat, DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BUDGET_SECS, DEFAULT_TIMEOUT_SECS, HttpMethod,
    MAX_COLLECTION_BYTES, MAX_COLLECTIONS, MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH,
    MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS, MAX_MAX_ATTEMPTS, MAX_MAX_RETRIES,
    MAX_RETRY_BUDGET_SECS, MAX_SIGNING_SECRETS, MAX_TIMEOUT_SECS, MAX_TRIGGER_NAME_BYTES,
    MAX_TRIGGERS, MIN_MAX_ATTEMPTS, MIN_RETRY_BUDGET_SECS, MIN_TIMEOUT_SECS, ParseError,
    SECRET_TYPE_ERROR, TriggerConfig, TriggersConfig,
};
pub use config::drain::{
    DEFAULT_MAX_IN_FLIGHT, Drain, DrainConfig, MAX_MAX_IN_FLIGHT, MAX_MIN_INTERVAL_SECS, OnFailure,
};
pub use config::duration::{ConfigDuration, DurationError, DurationProblem, MAX_DURATION_BYTES};
pub use config::responses::{
    DEFAULT_ALREADY_DELIVERED, MAX_RESPONSE_STATUS, MAX_RESPONSE_STATUSES, MIN_RESPONSE_STATUS,
    NOT_ALREADY_DELIVERED, NOT_RETRIED, ResponsesConfig,
};
pub use config::schema::config_schema;
pub use config::secret::Secret;
pub use config::sops::{
    SEALED_FIELDS_REGEX, SEALED_URL_PLACEHOLDER, SopsError, decrypt_config, encrypt_config,
    is_sops_encrypted, load_config, validate_without_keys,
};
pub use config::validate::{
    Trigger, TriggerLabel, Triggers, ValidationError, ValidationErrors, validate,
    validate_collections,
};
pub use render::clock::{Clock, ClockError};
pub use render::flow_params::{
    FlowParamsError, MAX_FLOW_TRIGGER_PARAMS_BYTES, flow_pending_per_trigger,
};
pub use render::preview::{Preview, PreviewError, PreviewVariables, VariablesInputError};
pub use render::template::{
    MAX_EXPRESSIONS, MAX_PAYLOAD_BYTES, MAX_RENDER_STEPS, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_NESTING,
    REDACTED_HEADER_VALUE, TemplateError, Templates,
};
pub use render::variables::{
    Materialization, ParamsError, VARIABLE_NAMES, Variables, VariablesError, run_id,
};
pub use send::backoff_policy::{Delays, RetryBackoff};
pub use send::deliver::{
    AttemptObserver, AttemptOutcome, AttemptRecord, Delivered, Deliverer, DeliveryError,
    FailureReason, TriggerFailure,
};
pub use send::network_policy::{
    AddressClass, MAX_REDIRECTS, NetworkPolicy, RedirectError, Refusal,
};
pub use send::origin_limit::{DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN, MAX_IN_FLIGHT_PER_ORIGIN};
pub use send::signing::{SECRET_PREFIX, SigningKey, SigningSecretError, verify_signature};
pub use send::test_fire::{TestFirePayload, TestFireReport};
pub use send::token_auth::{
    AUTH_TYPE_ERROR, AuthConfig, ClientAuthentication, DEFAULT_TOKEN_POINTER, MAX_AUTH_FIELD_BYTES,
    MAX_TOKEN_BYTES, MAX_TOKEN_RESPONSE_BYTES, TokenError, TokenErrorKind,
};
pub use send::trace_context::{SpanId, TRACEPARENT, TRACESTATE, TraceId, TraceParent};
pub use send::webhook_headers::{
    SendReason, WEBHOOK_ATTEMPT, WEBHOOK_ID, WEBHOOK_REASON, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
};
pub use send::webhook_id::{trigger_webhook_id, webhook_id};
pub use triggers_sops::{AgeIdentity, AgeRecipient, KeyError, SOPS_FORMAT_VERSION};

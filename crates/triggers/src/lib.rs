//! Trigger webhooks of a materialization: the pure logic of a trigger.
//!
//! Data flows one way: per-binding [`BindingStats`](triggers_proto::BindingStats) of a
//! transaction become [`Variables`] (persisted by the runtime as
//! [`TriggerParams`](triggers_proto::TriggerParams)); after the commit is acknowledged,
//! a [`Deliverer`] renders every trigger's template against them and sends the webhooks.
//!
//! A config document is parsed ([`TriggersConfig`]), then validated and compiled once
//! ([`validate`] → [`Triggers`]): the same check a control plane runs at publish time.
//!
//! This crate knows nothing of RocksDB, shards or gRPC; `triggers-runtime` does.

mod backoff_policy;
mod clock;
mod config;
mod deliver;
#[cfg(feature = "receiver")]
pub mod receiver;
mod retry;
mod secret;
mod template;
mod validate;
mod variables;

pub use backoff_policy::{Delays, RetryBackoff};
pub use clock::{Clock, ClockError};
pub use config::{
    ConfigFormat, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_SECS, HttpMethod, MAX_MAX_RETRIES,
    MAX_TIMEOUT_SECS, MIN_TIMEOUT_SECS, ParseError, TriggerConfig, TriggersConfig,
};
pub use deliver::{Delivered, Deliverer, DeliveryError, FailureReason, TriggerFailure};
pub use secret::Secret;
pub use template::{TemplateError, Templates};
pub use validate::{Trigger, TriggerLabel, Triggers, ValidationError, ValidationErrors, validate};
pub use variables::{Materialization, ParamsError, VARIABLE_NAMES, Variables, VariablesError};

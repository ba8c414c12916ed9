//! Beside a shard, out of process: the gRPC sidecar that serves one shard's lifecycle
//! (Open, StartCommit, Acknowledged, Status, the ledger, Preview, TestFire) to a consumer
//! written in any language, its Prometheus metrics, the operator's `triggers` tool, the
//! reference consumer and the demo (`examples/demo.rs`).
//!
//! The state machine itself is `triggers-runtime`, which a reactor links without any of
//! this crate's dependencies (gRPC server, clap, axum, prometheus-client).
//!
//! Binaries: `shard-sidecar` (the sidecar), `triggers` (schema, validate, encrypt,
//! preview, test-fire; locally or through a running sidecar), `consumer` (the reference
//! consumer, in-process or through a sidecar: the demo's engine and the crash tests'
//! driver).

mod access;
pub mod args;
pub mod consumer;
pub mod crash;
pub mod metrics;
mod server;
mod unix_authority;
pub mod wire;

pub use access::{BearerToken, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES, SendToken, TOKEN_ENV, TokenError};
pub use server::{
    BindError, CHECK_BUDGET, CHECKS_AT_ONCE, Client, Listener, Sidecar, SidecarConfig, connect,
    default_socket_path, run,
};

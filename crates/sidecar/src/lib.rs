//! Beside a shard, out of process: the gRPC sidecar that serves the lifecycle of a
//! consumer's shards (Open, Close, StartCommit, Acknowledged, Status, the ledger, Preview,
//! TestFire; each call naming its shard) to a consumer written in any language, its Prometheus metrics, the operator's web console ([`console`]), the operator's `triggers` tool, the
//! reference consumer and the demo (`examples/demo.rs`).
//!
//! The state machine itself is `triggers-runtime`, which a reactor links without any of
//! this crate's dependencies (gRPC server, clap, axum, prometheus-client).
//!
//! Serving one shard on a Unix socket (mode 0600, so no token) and calling it:
//!
//! ```
//! use std::sync::Arc;
//! use triggers::{ConfigFormat, Materialization};
//! use triggers_proto::sidecar::{OpenRequest, ShardPhase, StatusRequest};
//! use triggers_runtime::ShardConfig;
//! use triggers_sidecar::{Listener, Sidecar, SidecarConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let triggers = Arc::new(triggers::validate("config: []", ConfigFormat::Yaml)?);
//! let materialization = Materialization {
//!     name: "acmeCo/orders/warehouse".to_string(),
//!     connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
//!     binding_collections: vec!["acmeCo/orders".to_string()],
//! };
//! let config = SidecarConfig::new(
//!     dir.path().join("store"),
//!     ShardConfig::new(materialization, triggers),
//! );
//! let address = format!("unix:{}", dir.path().join("sidecar.sock").display());
//! let listener = Listener::bind(&address, None).await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(triggers_sidecar::run(Sidecar::new(config), listener, async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut client = triggers_sidecar::connect(&address, None).await?;
//! client.open(OpenRequest::default()).await?;
//! let status = client.status(StatusRequest::default()).await?.into_inner();
//! assert_eq!(status.phase(), ShardPhase::Recovered);
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! Binaries: `shard-sidecar` (the sidecar), `triggers` (schema, validate, encrypt,
//! preview, test-fire; locally or through a running sidecar), `consumer` (the reference
//! consumer, in-process or through a sidecar: the demo's engine and the crash tests'
//! driver).

mod access;
pub mod args;
pub mod console;
pub mod consumer;
pub mod consumer_state;
pub mod crash;
pub mod deliveries;
pub mod metrics;
mod server;
pub mod shard_id;
mod unix_authority;
pub mod wire;

pub use access::{BearerToken, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES, SendToken, TOKEN_ENV, TokenError};
pub use server::{
    BindError, CHECK_BUDGET, CHECKS_AT_ONCE, Client, Listener, MAX_SHARDS, Sidecar, SidecarConfig,
    connect, default_socket_path, run,
};

//! Command-line arguments shared by the binaries that run a shard: the sidecar and the
//! reference consumer (in-process mode).

use crate::{
    DEFAULT_BACKLOG_LIMIT, DEFAULT_LEDGER_KEEP, DEFAULT_LEDGER_MAX_AGE, DeliveryMode, Durability,
    LedgerRetention, ShardConfig,
};
use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use triggers::{ConfigFormat, Materialization, NetworkPolicy, RetryBackoff, Triggers, validate};

/// Which shard to run, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ShardArgs {
    /// Directory of the shard's RocksDB store (created if missing). One process per store.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// Trigger config file (`.json`, or YAML otherwise). Validated at start; an invalid
    /// config stops the process with every error listed.
    #[arg(long, value_name = "FILE")]
    pub triggers: PathBuf,
    /// Full name of the materialization (the `materialization_name` variable).
    #[arg(long, value_name = "NAME")]
    pub materialization: String,
    /// Connector image of the materialization (the `connector_image` variable).
    #[arg(long, value_name = "IMAGE")]
    pub connector_image: String,
    /// Source collection of each binding, in binding order; repeat once per binding.
    #[arg(long = "binding", value_name = "COLLECTION", required = true)]
    pub bindings: Vec<String>,
    /// Return from StartCommit once the write is in the OS page cache instead of synced
    /// to disk. Survives a killed process, not a power loss: only for stores made durable
    /// by other means (a replicated recovery log).
    #[arg(long)]
    pub no_sync: bool,
    /// Delay before the first retry of a failed webhook, in milliseconds (doubling,
    /// capped at 30 s, with full jitter).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub retry_initial_ms: u64,
    /// Let webhooks reach loopback addresses (127.0.0.0/8, ::1, `localhost`). Off by
    /// default: a trigger URL is user input and must not reach the shard's own host.
    #[arg(long)]
    pub allow_loopback: bool,
    /// Let webhooks reach private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    #[arg(long)]
    pub allow_private_networks: bool,
    /// `decoupled`: webhooks go to a persisted per-trigger backlog that drains while the
    /// shard keeps committing (each trigger's `drain` mode applies). `waiting`: each
    /// transaction's webhooks are delivered before the next transaction commits.
    #[arg(long, value_enum, default_value_t = DeliveryArg::Decoupled)]
    pub delivery: DeliveryArg,
    /// Decoupled delivery: entries a trigger's backlog may hold before StartCommit waits.
    #[arg(long, value_name = "ENTRIES", default_value_t = DEFAULT_BACKLOG_LIMIT)]
    pub backlog_limit: usize,
    /// Decoupled delivery: finished deliveries kept in the ledger (newest first).
    #[arg(long, value_name = "RECORDS", default_value_t = DEFAULT_LEDGER_KEEP)]
    pub ledger_keep: usize,
    /// Decoupled delivery: finished deliveries older than this leave the ledger.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_LEDGER_MAX_AGE.as_secs())]
    pub ledger_max_age_secs: u64,
}

/// The `--delivery` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryArg {
    /// Commits never wait on webhooks (backpressure only at the backlog limit).
    Decoupled,
    /// Each transaction's webhooks are delivered before the next transaction commits.
    Waiting,
}

impl ShardArgs {
    /// Reads and validates the trigger config and builds the shard's config.
    pub fn shard_config(&self) -> anyhow::Result<ShardConfig> {
        Ok(ShardConfig {
            materialization: Materialization {
                name: self.materialization.clone(),
                connector_image: self.connector_image.clone(),
                binding_collections: self.bindings.clone(),
            },
            triggers: Arc::new(load_triggers(&self.triggers)?),
            durability: if self.no_sync {
                Durability::Unsynced
            } else {
                Durability::Synced
            },
            backoff: RetryBackoff {
                initial: Duration::from_millis(self.retry_initial_ms),
                ..RetryBackoff::default()
            },
            network: NetworkPolicy {
                allow_loopback: self.allow_loopback,
                allow_private: self.allow_private_networks,
                ..NetworkPolicy::PUBLIC_ONLY
            },
            delivery: match self.delivery {
                DeliveryArg::Waiting => DeliveryMode::Waiting,
                DeliveryArg::Decoupled => DeliveryMode::Decoupled {
                    backlog_limit: self.backlog_limit.max(1),
                },
            },
            ledger: LedgerRetention {
                keep: self.ledger_keep,
                max_age: Duration::from_secs(self.ledger_max_age_secs),
            },
            attempt_observer: None,
        })
    }
}

/// Reads and validates a trigger config file; JSON if it ends in `.json`, else YAML.
pub fn load_triggers(path: &std::path::Path) -> anyhow::Result<Triggers> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading trigger config {}", path.display()))?;
    let format = if path.extension().is_some_and(|e| e == "json") {
        ConfigFormat::Json
    } else {
        ConfigFormat::Yaml
    };
    validate(&text, format).with_context(|| format!("trigger config {}", path.display()))
}

/// Installs the tracing subscriber of a binary: `RUST_LOG` or `info`, to stderr.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

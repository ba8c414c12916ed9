//! Command-line arguments and file loading shared by the binaries: the sidecar, the
//! reference consumer (in-process mode) and the `triggers` tool.

use crate::BearerToken;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use triggers::{
    AgeIdentity, ConfigFormat, Materialization, NetworkPolicy, RetryBackoff, Triggers,
    TriggersConfig, is_sops_encrypted, load_config,
};
use triggers_runtime::{
    DEFAULT_BACKLOG_LIMIT, DEFAULT_LEDGER_KEEP, DEFAULT_LEDGER_MAX_AGE, DeliveryMode, Durability,
    LedgerRetention, ShardConfig,
};

/// Which shard to run, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ShardArgs {
    /// Directory of the shard's RocksDB store (created if missing). One process per store.
    /// For shard-sidecar, the default shard's: named shards' stores are under DIR/shards/.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// Trigger config file (`.json`, or YAML otherwise), plaintext or SOPS-encrypted.
    /// Validated at start; an invalid config stops the process with every error listed.
    /// An encrypted one is decrypted in memory (never written out) with --identity,
    /// $SOPS_AGE_KEY_FILE or $SOPS_AGE_KEY.
    #[arg(long, value_name = "FILE")]
    pub triggers: PathBuf,
    /// age keys file (as age-keygen writes it) to decrypt a SOPS-encrypted --triggers;
    /// repeat for several. $SOPS_AGE_KEY_FILE (a keys file) and $SOPS_AGE_KEY (the keys
    /// themselves) are read too, as sops reads them.
    #[arg(long = "identity", value_name = "AGE_KEYS_FILE")]
    pub identities: Vec<PathBuf>,
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
    /// Where webhooks may go.
    #[command(flatten)]
    pub network: NetworkArgs,
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

/// The network policy's switches, shared by every binary that sends webhooks.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetworkArgs {
    /// Let webhooks reach loopback addresses (127.0.0.0/8, ::1, `localhost`). Off by
    /// default: a trigger URL is user input and must not reach the shard's own host.
    #[arg(long)]
    pub allow_loopback: bool,
    /// Let webhooks reach private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    #[arg(long)]
    pub allow_private_networks: bool,
}

impl NetworkArgs {
    /// Public destinations only, plus what the flags allow.
    pub fn policy(&self) -> NetworkPolicy {
        NetworkPolicy::PUBLIC_ONLY
            .with_loopback(self.allow_loopback)
            .with_private(self.allow_private_networks)
    }
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
        let materialization = Materialization {
            name: self.materialization.clone(),
            connector_image: self.connector_image.clone(),
            binding_collections: self.bindings.clone(),
        };
        let triggers = load_triggers_with(&self.triggers, &self.identities)?;
        // Checked here too (Open checks it), so a sidecar with a filter that can never
        // fire refuses to start instead of failing its first Open.
        triggers::validate_collections(&triggers, &materialization.binding_collections)
            .with_context(|| {
                format!(
                    "trigger config {} against the --binding collections",
                    self.triggers.display()
                )
            })?;
        let triggers = Arc::new(triggers);
        Ok(ShardConfig::new(materialization, triggers)
            .with_durability(if self.no_sync {
                Durability::Unsynced
            } else {
                Durability::Synced
            })
            .with_backoff(RetryBackoff::new(
                Duration::from_millis(self.retry_initial_ms),
                RetryBackoff::default().max,
            ))
            .with_network(self.network.policy())
            .with_delivery(match self.delivery {
                DeliveryArg::Waiting => DeliveryMode::Waiting,
                DeliveryArg::Decoupled => DeliveryMode::Decoupled {
                    backlog_limit: self.backlog_limit.max(1),
                },
            })
            .with_ledger(LedgerRetention::new(
                self.ledger_keep,
                Duration::from_secs(self.ledger_max_age_secs),
            )))
    }
}

/// Reads and validates a plaintext trigger config file; JSON if it ends in `.json`,
/// else YAML.
pub fn load_triggers(path: &Path) -> anyhow::Result<Triggers> {
    load_triggers_with(path, &[])
}

/// Reads and validates a trigger config file, plaintext or SOPS-encrypted (then opened
/// with the identities of [`load_identities`]`(identity_files)`).
pub fn load_triggers_with(path: &Path, identity_files: &[PathBuf]) -> anyhow::Result<Triggers> {
    let config = read_config(path, identity_files)?;
    Triggers::from_config(&config).with_context(|| format!("trigger config {}", path.display()))
}

/// Reads and parses a trigger config file (decrypting it in memory if it is
/// SOPS-encrypted), without validating it.
pub fn read_config(path: &Path, identity_files: &[PathBuf]) -> anyhow::Result<TriggersConfig> {
    let text = read_config_text(path)?;
    let format = config_format(path);
    let identities = identities_for(&text, format, identity_files)?;
    load_config(&text, format, &identities)
        .with_context(|| format!("trigger config {}", path.display()))
}

/// The identities to open `text` with: none for a plaintext config (so a key source
/// that is set but broken does not matter), else [`load_identities`].
pub fn identities_for(
    text: &str,
    format: ConfigFormat,
    identity_files: &[PathBuf],
) -> anyhow::Result<Vec<AgeIdentity>> {
    if is_sops_encrypted(text, format) {
        load_identities(identity_files)
    } else {
        Ok(Vec::new())
    }
}

/// A config file's text, refused past [`triggers::MAX_CONFIG_BYTES`] (of which at most
/// one byte more is read, so a huge file costs nothing).
pub fn read_config_text(path: &Path) -> anyhow::Result<String> {
    read_bounded(path, triggers::MAX_CONFIG_BYTES)
        .with_context(|| format!("reading trigger config {}", path.display()))
}

/// A text file of at most `max` bytes; a longer one is an error, having read one byte
/// past the bound at most. The length is checked before the UTF-8, so a bound that cuts
/// a character still reads as "too large".
pub fn read_bounded(path: &Path, max: usize) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() <= max,
        "the file is larger than {max} bytes, the most allowed"
    );
    Ok(String::from_utf8(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::read_bounded;

    /// Review of issue 12: a file cut by the bound inside a multi-byte character read as
    /// "not valid UTF-8" instead of "too large".
    #[test]
    fn a_bound_that_cuts_a_character_still_reads_as_too_large() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "é".repeat(10)).expect("writes");
        let err = read_bounded(&path, 5).expect_err("too large");
        assert!(err.to_string().contains("larger than 5 bytes"), "{err:#}");
        assert_eq!(read_bounded(&path, 20).expect("fits"), "é".repeat(10));
    }
}

/// A config file's format: JSON if its name ends in `.json`, else YAML.
pub fn config_format(path: &Path) -> ConfigFormat {
    if path.extension().is_some_and(|e| e == "json") {
        ConfigFormat::Json
    } else {
        ConfigFormat::Yaml
    }
}

/// The environment variable naming an age keys file, as sops reads it.
pub const SOPS_AGE_KEY_FILE: &str = "SOPS_AGE_KEY_FILE";
/// The environment variable holding age identities themselves, as sops reads it.
pub const SOPS_AGE_KEY: &str = "SOPS_AGE_KEY";

/// Reads age identities (`AGE-SECRET-KEY-1...`, as `age-keygen` writes them) to open
/// SOPS-encrypted configs: from each keys file given, then, as sops does, from the file
/// `$SOPS_AGE_KEY_FILE` names and from `$SOPS_AGE_KEY`. Every source adds to the others.
pub fn load_identities(paths: &[PathBuf]) -> anyhow::Result<Vec<AgeIdentity>> {
    let mut identities = Vec::new();
    let env_file = std::env::var_os(SOPS_AGE_KEY_FILE).map(PathBuf::from);
    for path in paths.iter().chain(env_file.as_ref()) {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading age keys file {}", path.display()))?;
        identities.extend(
            AgeIdentity::parse_keys_file(&text)
                .with_context(|| format!("age keys file {}", path.display()))?,
        );
    }
    if let Some(keys) = std::env::var_os(SOPS_AGE_KEY) {
        let keys = keys
            .into_string()
            .map_err(|_| anyhow::anyhow!("${SOPS_AGE_KEY} is not UTF-8"))?;
        identities.extend(
            AgeIdentity::parse_keys_file(&keys).with_context(|| format!("${SOPS_AGE_KEY}"))?,
        );
    }
    Ok(identities)
}

/// How a sidecar's client finds its bearer token: a file, or the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// File holding the sidecar's bearer token (16 to 1024 printable ASCII characters;
    /// surrounding whitespace ignored). Without it, $TRIGGERS_SIDECAR_TOKEN is used if
    /// set. A token is never taken from a flag value: other users can read those.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token from `--token-file`, else `$TRIGGERS_SIDECAR_TOKEN`, else none.
    pub fn token(&self) -> anyhow::Result<Option<BearerToken>> {
        Ok(BearerToken::from_file_or_env(self.token_file.as_deref())?)
    }
}

/// The tokio runtime of a binary that runs a shard. Store work has a thread of its own;
/// the blocking pool serves the rest (name lookups). tokio replaces blocking threads that
/// idle out, and glibc gives every new thread its own malloc arena, which over a long run
/// grows RSS (see benches' `rss`), so the pool's threads are capped and kept alive.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .build()
}

/// Installs the tracing subscriber of a binary: `RUST_LOG` or `info`, to stderr.
pub fn init_tracing() {
    init_tracing_at("info");
}

/// Installs the tracing subscriber of a binary: `RUST_LOG` or `default`, to stderr. A
/// tool whose output is its result logs less by default than a server.
pub fn init_tracing_at(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

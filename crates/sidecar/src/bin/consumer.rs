//! `consumer`: the reference consumer (see `triggers_sidecar::consumer`).

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use triggers_runtime::{Keyspace, Shard, rocksdb};
use triggers_sidecar as sidecar;
use triggers_sidecar::args::{DeliveryArg, NetworkArgs, ShardArgs, TokenArgs, init_tracing};
use triggers_sidecar::consumer::{self, Driver, HostShard, SidecarState, read_documents};

/// Reads JSON-lines documents (each with `_meta/uuid` and `collection`) and commits them
/// to a shard in transactions of K, firing its triggers after each Acknowledged. Resumes
/// from the shard's checkpoint after a restart, reproducing the same transactions.
///
/// Runs the shard in-process (give --store, --triggers, ...), or drives a shard-sidecar
/// (give --sidecar and the bindings, to map collections).
#[derive(Debug, Parser)]
#[command(name = "consumer", version, verbatim_doc_comment)]
struct Args {
    /// JSON-lines input file.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Documents per transaction.
    #[arg(long, default_value_t = 5, value_name = "K")]
    docs_per_txn: usize,
    /// Stop after this many transactions.
    #[arg(long, value_name = "N")]
    max_transactions: Option<u64>,
    /// Drive a sidecar at this address (http://127.0.0.1:PORT or unix:/path) instead of
    /// running the shard in-process.
    #[arg(long, value_name = "ADDRESS", conflicts_with_all = ["store", "triggers"])]
    sidecar: Option<String>,
    /// Sidecar mode: the bearer token to send (a sidecar on TCP requires one).
    #[command(flatten)]
    token: TokenArgs,
    /// Sidecar mode, for a sidecar started with --state-in-consumer: the consumer's own
    /// RocksDB, holding its checkpoint and the sidecar's keys (under `sidecar/`), written
    /// in one synced WriteBatch per StartCommit.
    #[arg(long, value_name = "DIR", requires = "sidecar")]
    state_db: Option<PathBuf>,
    /// Source collection of each binding, in binding order; repeat once per binding.
    #[arg(long = "binding", value_name = "COLLECTION", required = true)]
    bindings: Vec<String>,
    /// In-process mode: directory of the shard's RocksDB store.
    #[arg(long, value_name = "DIR", required_unless_present = "sidecar")]
    store: Option<PathBuf>,
    /// In-process mode: trigger config file (`.json`, or YAML otherwise), plaintext or
    /// SOPS-encrypted (decrypted in memory with --identity, $SOPS_AGE_KEY_FILE or
    /// $SOPS_AGE_KEY).
    #[arg(long, value_name = "FILE", required_unless_present = "sidecar")]
    triggers: Option<PathBuf>,
    /// In-process mode: age keys file to decrypt a SOPS-encrypted --triggers; repeat for
    /// several.
    #[arg(
        long = "identity",
        value_name = "AGE_KEYS_FILE",
        conflicts_with = "sidecar"
    )]
    identities: Vec<PathBuf>,
    /// In-process mode: full name of the materialization.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "acmeCo/example/materialize"
    )]
    materialization: String,
    /// In-process mode: connector image of the materialization.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "ghcr.io/estuary/materialize-example:v1"
    )]
    connector_image: String,
    /// In-process mode: return from StartCommit before the write is synced to disk.
    #[arg(long)]
    no_sync: bool,
    /// In-process mode: --store is the consumer's own RocksDB, as a reactor has one: the
    /// consumer keeps its checkpoint there (root key `checkpoint`), the shard keeps to the
    /// keyspace `triggers/`, and each StartCommit writes both in one WriteBatch of the
    /// consumer's.
    #[arg(long, conflicts_with = "sidecar")]
    host_db: bool,
    /// In-process mode: delay before the first webhook retry, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    retry_initial_ms: u64,
    /// In-process mode: where webhooks may go.
    #[command(flatten)]
    network: NetworkArgs,
    /// In-process mode: `decoupled` (a persisted backlog drains while commits go on) or
    /// `waiting` (each transaction's webhooks before the next commit).
    #[arg(long, value_enum, default_value_t = DeliveryArg::Decoupled)]
    delivery: DeliveryArg,
    /// In-process mode, decoupled delivery: entries a trigger's backlog may hold before
    /// StartCommit waits.
    #[arg(long, value_name = "ENTRIES", default_value_t = triggers_runtime::DEFAULT_BACKLOG_LIMIT)]
    backlog_limit: usize,
    /// Wait this long after each Acknowledged before the next transaction (a source that
    /// trickles); at most an hour.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    transaction_interval_ms: u64,
}

fn main() -> anyhow::Result<()> {
    triggers_sidecar::args::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    triggers_sidecar::crash::arm_from_env();
    init_tracing();
    let args = Args::parse();

    let mut driver = match (&args.sidecar, &args.store, &args.triggers) {
        (Some(address), _, _) => {
            let client = sidecar::connect(address, args.token.token()?.as_ref()).await?;
            match &args.state_db {
                Some(dir) => {
                    let mut options = rocksdb::Options::default();
                    options.create_if_missing(true);
                    let db = rocksdb::DB::open(&options, dir)
                        .with_context(|| format!("opening the consumer's DB {}", dir.display()))?;
                    Driver::SidecarState(Box::new(SidecarState {
                        client,
                        db: Arc::new(db),
                    }))
                }
                None => Driver::Sidecar(client),
            }
        }
        (None, Some(store), Some(triggers)) => {
            let shard = ShardArgs {
                store: store.clone(),
                triggers: triggers.clone(),
                identities: args.identities.clone(),
                materialization: args.materialization.clone(),
                connector_image: args.connector_image.clone(),
                bindings: args.bindings.clone(),
                no_sync: args.no_sync,
                retry_initial_ms: args.retry_initial_ms,
                network: args.network.clone(),
                delivery: args.delivery,
                backlog_limit: args.backlog_limit,
                ledger_keep: triggers_runtime::DEFAULT_LEDGER_KEEP,
                ledger_max_age_secs: triggers_runtime::DEFAULT_LEDGER_MAX_AGE.as_secs(),
            };
            let config = shard.shard_config()?;
            if args.host_db {
                let mut options = rocksdb::Options::default();
                options.create_if_missing(true);
                let db = rocksdb::DB::open(&options, store)
                    .with_context(|| format!("opening the consumer's DB {}", store.display()))?;
                Driver::Host(Box::new(HostShard {
                    db: Arc::new(db),
                    keyspace: Keyspace::prefixed(&b"triggers/"[..])?,
                    durability: config.durability,
                    config,
                    shard: None,
                }))
            } else {
                Driver::Local {
                    open: Box::new(move || {
                        Box::pin(Shard::open(shard.store.clone(), config.clone()))
                    }),
                    shard: None,
                }
            }
        }
        _ => anyhow::bail!("give either --sidecar, or --store and --triggers"),
    };
    let documents = read_documents(&args.input, &args.bindings)?;
    let options = consumer::RunOptions {
        docs_per_txn: args.docs_per_txn,
        max_transactions: args.max_transactions,
        stop_before_acknowledging: None,
        pause_between_transactions: std::time::Duration::from_millis(args.transaction_interval_ms),
    };
    let result = consumer::run(&mut driver, &documents, options).await;
    // Close an in-process shard before the runtime ends, so its workers and store work
    // stop in order rather than racing the process's exit.
    driver.close().await;
    let summary = result?;
    println!(
        "consumer: resumed at offset {}, committed {} transaction(s) ({} with triggers), final offset {}{}",
        summary.resumed_at,
        summary.transactions,
        summary.with_triggers,
        summary.final_offset,
        if summary.recovered_pending {
            ", delivered recovered triggers"
        } else {
            ""
        },
    );
    Ok(())
}

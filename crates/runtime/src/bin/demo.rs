//! The demo: drives real transactions over sample documents into a RocksDB store and
//! fires their triggers at a receiver on 127.0.0.1, including a simulated crash between
//! StartCommit and Acknowledged. Prints what was delivered and a summary.
//!
//! Usage: `demo [--docs-per-txn K] [--store DIR]` (run from anywhere; the sample
//! documents and trigger config are compiled in).

use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use triggers::receiver::{Receiver, Reply};
use triggers::{Clock, ConfigFormat, Materialization, RetryBackoff, validate};
use triggers_proto::{ProducerEntry, Source};
use triggers_runtime::{Durability, Shard, ShardConfig, TransactionStats};

const DOCUMENTS: &str = include_str!("../../demo/documents.jsonl");
const TRIGGERS: &str = include_str!("../../demo/triggers.yaml");
const COLLECTIONS: [&str; 3] = [
    "acmeCo/shop/orders",
    "acmeCo/shop/customers",
    "acmeCo/shop/refunds",
];
/// The demo crashes after this transaction's StartCommit and recovers.
const CRASH_AFTER_COMMIT_OF: usize = 2;

struct Args {
    docs_per_txn: usize,
    store: Option<std::path::PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        docs_per_txn: 5,
        store: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--docs-per-txn" => {
                args.docs_per_txn = it.next().context("--docs-per-txn needs a value")?.parse()?;
                if args.docs_per_txn == 0 {
                    bail!("--docs-per-txn must be at least 1");
                }
            }
            "--store" => args.store = Some(it.next().context("--store needs a directory")?.into()),
            "-h" | "--help" => {
                println!("usage: demo [--docs-per-txn K] [--store DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

struct Document {
    binding: u32,
    clock: Clock,
    producer: Vec<u8>,
    bytes: u64,
}

fn documents() -> anyhow::Result<Vec<Document>> {
    DOCUMENTS
        .lines()
        .enumerate()
        .map(|(line, text)| {
            let doc: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("documents.jsonl line {}", line + 1))?;
            let uuid = doc["_meta"]["uuid"]
                .as_str()
                .context("document without _meta/uuid")?;
            let collection = doc["collection"]
                .as_str()
                .context("document without collection")?;
            let binding = COLLECTIONS
                .iter()
                .position(|c| *c == collection)
                .with_context(|| format!("unknown collection {collection}"))?;
            let parsed = uuid::Uuid::parse_str(uuid)?;
            Ok(Document {
                binding: binding as u32,
                clock: Clock::from_uuid(&parsed)?,
                producer: parsed.as_bytes()[10..].to_vec(),
                bytes: text.len() as u64 + 1,
            })
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = parse_args()?;

    let receiver = Receiver::start().await?;
    // The chat endpoint is briefly down: its first request gets a 503 and is retried.
    receiver.script(
        "/services/T000/B000/demo-webhook-secret",
        [Reply::status(503)],
    );
    println!("receiver listening on {}", receiver.url(""));

    // The publish-time check a control plane runs. First, what a user sees for a typo:
    let typo = "config:\n  - url: https://example.com/hook\n    payloadTemplate: |\n      {\"at\": \"{{flow_published_at}}\"}\n";
    if let Err(errors) = validate(typo, ConfigFormat::Yaml) {
        println!("\na template with a typo is rejected at publish time:\n{errors}\n");
    }
    let config_text = TRIGGERS.replace("${RECEIVER}", &receiver.url(""));
    let triggers = Arc::new(validate(&config_text, ConfigFormat::Yaml)?);
    println!(
        "demo trigger config is valid: {} trigger(s)",
        triggers.len()
    );

    let store_dir = match &args.store {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("triggers-demo-{}", std::process::id())),
    };
    let config = || ShardConfig {
        materialization: Materialization {
            name: "acmeCo/shop/materialize-warehouse".to_string(),
            connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
            binding_collections: COLLECTIONS.iter().map(ToString::to_string).collect(),
        },
        triggers: triggers.clone(),
        durability: Durability::Synced,
        backoff: RetryBackoff {
            initial: Duration::from_millis(100),
            ..RetryBackoff::default()
        },
    };

    let (mut shard, recovery) = Shard::open(&store_dir, config()).await?;
    println!(
        "opened store {} (pending triggers: {})",
        store_dir.display(),
        recovery.pending.is_some()
    );
    shard.acknowledged().await?;

    let documents = documents()?;
    let mut checkpoint = recovery.checkpoint;
    let (mut committed, mut refired, mut empty) = (0, 0, 0);
    let mut offsets: BTreeMap<String, i64> = BTreeMap::new();
    // The sample documents in transactions of K, then one transaction that read nothing.
    let mut transactions: Vec<&[Document]> = documents.chunks(args.docs_per_txn).collect();
    transactions.push(&[]);

    for (number, txn) in transactions.into_iter().enumerate() {
        let number = number + 1;
        let mut stats = TransactionStats::default();
        for doc in txn {
            stats.add_document(doc.binding, doc.clock, doc.bytes);
            let journal = format!("{}/pivot=00", COLLECTIONS[doc.binding as usize]);
            let offset = offsets.entry(journal.clone()).or_default();
            *offset += doc.bytes as i64;
            let source = checkpoint
                .sources
                .entry(journal)
                .or_insert_with(Source::default);
            source.read_through = *offset;
            match source.producers.iter_mut().find(|p| p.id == doc.producer) {
                Some(entry) => entry.last_ack = entry.last_ack.max(doc.clock.0),
                None => source.producers.push(ProducerEntry {
                    id: doc.producer.clone(),
                    last_ack: doc.clock.0,
                    begin: -1,
                }),
            }
        }
        let commit = shard
            .start_commit(checkpoint.clone(), &stats.take())
            .await?;
        committed += 1;
        match &commit.variables {
            Some(v) => println!(
                "txn {number}: committed {} document(s) of {:?}, flow_run_id {}",
                txn.len(),
                v.collection_names,
                v.flow_run_id
            ),
            None => {
                empty += 1;
                println!("txn {number}: committed, no documents: nothing will fire");
            }
        }

        if number == CRASH_AFTER_COMMIT_OF {
            println!("txn {number}: simulated crash before Acknowledged; reopening the store");
            drop(shard);
            let (reopened, recovery) = Shard::open(&store_dir, config()).await?;
            shard = reopened;
            let pending = recovery
                .pending
                .context("the committed transaction's params survive")?;
            println!(
                "txn {number}: recovered checkpoint and pending trigger params of flow_run_id {}",
                pending.flow_run_id
            );
            refired += 1;
        }

        let ack = shard.acknowledged().await?;
        for delivered in &ack.delivered {
            println!(
                "txn {number}: {} answered HTTP {} after {} attempt(s) in {:?}",
                delivered.trigger, delivered.status, delivered.attempts, delivered.latency
            );
        }
    }

    println!("\nwebhooks received by {}:", receiver.url(""));
    let requests = receiver.requests();
    for request in &requests {
        let body = request
            .json()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&request.body).into_owned());
        println!("  {} {}\n    {body}", request.method, request.path);
    }
    drop(shard);
    if args.store.is_none() {
        std::fs::remove_dir_all(&store_dir).ok();
    }
    let with_docs = committed - empty;
    println!(
        "\nsummary: {committed} transactions committed ({with_docs} with documents, {empty} without), \
         {} trigger(s), {} webhook request(s) received, {refired} transaction(s) recovered after a crash",
        triggers.len(),
        requests.len(),
    );
    Ok(())
}

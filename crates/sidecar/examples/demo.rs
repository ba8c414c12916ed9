//! The demo: the reference consumer drives real transactions over sample documents into a
//! RocksDB store and fires their triggers at a receiver on 127.0.0.1, with a simulated
//! crash between StartCommit and Acknowledged. Prints what was delivered and a summary.
//!
//! Usage: `demo [--docs-per-txn K] [--store DIR]`. The sample documents and trigger
//! config (crates/sidecar/demo/) are compiled in.

use anyhow::{Context as _, bail};
use std::sync::Arc;
use std::time::Duration;
use triggers::{ConfigFormat, Materialization, RetryBackoff, validate};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::{Durability, Shard, ShardConfig};
use triggers_sidecar::consumer::{self, Driver, RunOptions, parse_documents};

const DOCUMENTS: &str = include_str!("../demo/documents.jsonl");
const TRIGGERS: &str = include_str!("../demo/triggers.yaml");
const COLLECTIONS: [&str; 3] = [
    "acmeCo/shop/orders",
    "acmeCo/shop/customers",
    "acmeCo/shop/refunds",
];
/// The first run stops (as if crashed) after this transaction's StartCommit.
const CRASH_AFTER_COMMIT_OF: u64 = 2;

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
                println!(
                    "usage: demo [--docs-per-txn K] [--store DIR]\n\n\
                     Commits the sample documents in transactions of K (default 5) into a store\n\
                     (default: a temp dir, removed afterwards) and fires the sample triggers at\n\
                     a receiver on 127.0.0.1, crashing once between StartCommit and Acknowledged."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,triggers_sidecar::consumer=info".into()),
        )
        .with_target(false)
        .without_time()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
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
        "the demo's trigger config is valid: {} trigger(s)\n",
        triggers.len()
    );

    let store = match &args.store {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("triggers-demo-{}", std::process::id())),
    };
    let materialization = Materialization {
        name: "acmeCo/shop/materialize-warehouse".to_string(),
        connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
        binding_collections: COLLECTIONS.iter().map(ToString::to_string).collect(),
    };
    let config = ShardConfig::new(materialization, triggers.clone())
        .with_backoff(RetryBackoff::new(
            Duration::from_millis(100),
            RetryBackoff::default().max,
        ))
        .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK);
    let bindings = config.materialization.binding_collections.clone();
    let documents = parse_documents(DOCUMENTS, &bindings)?;
    let driver = || {
        let (store, config) = (store.clone(), config.clone());
        Driver::Local {
            open: Box::new(move || Box::pin(Shard::open(store.clone(), config.clone()))),
            shard: None,
        }
    };

    println!(
        "run 1: commits until transaction {CRASH_AFTER_COMMIT_OF}, then \"crashes\" before its Acknowledged"
    );
    let mut crashed = driver();
    let first = consumer::run(
        &mut crashed,
        &documents,
        RunOptions {
            docs_per_txn: args.docs_per_txn,
            max_transactions: None,
            stop_before_acknowledging: Some(CRASH_AFTER_COMMIT_OF),
            pause_between_transactions: std::time::Duration::ZERO,
        },
    )
    .await?;
    // A real crash would release the store with the process; here the shard is closed.
    crashed.close().await;

    println!(
        "\nrun 2: restarts from the store, delivers the recovered transaction, commits the rest"
    );
    let mut restarted = driver();
    let second = consumer::run(
        &mut restarted,
        &documents,
        RunOptions {
            docs_per_txn: args.docs_per_txn,
            max_transactions: None,
            stop_before_acknowledging: None,
            pause_between_transactions: std::time::Duration::ZERO,
        },
    )
    .await?;

    // One more transaction that read nothing: it commits, and nothing fires.
    let Driver::Local {
        shard: Some(shard), ..
    } = &mut restarted
    else {
        bail!("the in-process driver holds its shard");
    };
    let before = receiver.requests().len();
    // The shard holds its store: a second handle is refused (one writer per shard).
    match triggers_runtime::Store::open(&store, Durability::Synced) {
        Err(err) => println!("\na second handle on the store is refused: {err}"),
        Ok(_) => bail!("a second handle must be refused while the shard is open"),
    }
    let empty = shard.start_commit(second.checkpoint.clone(), &[]).await?;
    shard.acknowledged().await?;
    println!(
        "an empty transaction committed; persisted variables: {:?}; webhooks sent: {}",
        empty.variables,
        receiver.requests().len() - before
    );
    restarted.close().await;

    println!("\nwebhooks received by {}:", receiver.url(""));
    let requests = receiver.requests();
    for request in &requests {
        let body = request
            .json()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&request.body).into_owned());
        let answer = request
            .answered
            .map_or("no answer".to_string(), |s| format!("answered {s}"));
        println!(
            "  {} {} ({answer})\n    {body}",
            request.method, request.path
        );
    }
    if args.store.is_none() {
        std::fs::remove_dir_all(&store).ok();
    }
    let committed = first.transactions + second.transactions + 1;
    println!(
        "\nsummary: {committed} transactions committed ({} with documents, 1 without), {} trigger(s), \
         {} webhook request(s) received ({} answered 2xx), {} transaction recovered after a crash",
        first.with_triggers + second.with_triggers,
        triggers.len(),
        requests.len(),
        requests
            .iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .count(),
        u64::from(second.recovered_pending),
    );
    Ok(())
}

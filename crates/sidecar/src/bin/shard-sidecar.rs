//! `shard-sidecar`: serves the trigger runtime of a consumer's shards over gRPC.

use clap::Parser;
use std::io::Write as _;
use std::time::Duration;
use triggers_sidecar::args::{ShardArgs, TokenArgs, init_tracing};
use triggers_sidecar::console::ConsoleListener;
use triggers_sidecar::{self as sidecar, Listener, Sidecar, SidecarConfig};

/// Runs the trigger runtime of a consumer's shards beside it, serving them over gRPC.
///
/// A consumer that is not written in Rust (a Go Gazette consumer, say) starts one
/// sidecar per process and drives every shard it is assigned with the ShardSidecar
/// service (crates/proto/proto/sidecar.proto), each call naming its shard by its Gazette
/// shard id: Open (recover; returns the last checkpoint and whether triggers are
/// pending), Close (the shard moved away: release its store), StartCommit (checkpoint + per-binding stats; returns once
/// durable), Acknowledged (delivers the triggers; optionally waits for the outcome),
/// AwaitDelivery, AwaitDrained, ValidateConfig, Status, and Preview and TestFire (one
/// trigger's payload unsent, or one test webhook; they need no open shard).
///
/// Access: the API commits checkpoints, skips deliveries and sends webhooks, so only the
/// shard's own consumer may reach it. By default the sidecar listens on a Unix socket of
/// mode 0600 beside the store (STORE.sock): only its user, and root, can connect. On TCP
/// (--listen HOST:PORT) every call must carry `authorization: Bearer TOKEN`, the token
/// read from --token-file or $TRIGGERS_SIDECAR_TOKEN (never from a flag value); without
/// one the sidecar refuses to start. Given on a Unix socket, a token is required there
/// too.
///
/// Operators: --console-address serves a web console (the shards' state, the ledger,
/// retry and skip) on a Unix socket or loopback TCP, with the same token on TCP.
///
/// The sidecar owns its shards' RocksDB stores (one process per store): the default
/// shard's (the empty id) is --store itself, a named shard's is
/// STORE/shards/<its id, each '/' written as %2F>, made at its Open. One trigger config,
/// materialization and delivery mode serve every shard; it may be SOPS-encrypted (decrypted in memory only, with --identity,
/// $SOPS_AGE_KEY_FILE or $SOPS_AGE_KEY). On start it prints `listening on ADDRESS` to
/// stdout. On SIGTERM or Ctrl-C it stops accepting calls and starting webhooks, gives the
/// requests in flight the grace period to finish, and exits; a delivery cut off stays
/// persisted and fires on the next start.
#[derive(Debug, Parser)]
#[command(name = "shard-sidecar", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    shard: ShardArgs,
    /// Where to listen: unix:/path/to.sock (created with mode 0600; never one another
    /// process still listens on; the default is unix:STORE.sock, beside the store
    /// directory, STORE made absolute) or HOST:PORT (use 127.0.0.1; port 0 picks a free
    /// one), which needs a bearer token.
    #[arg(long, value_name = "ADDRESS")]
    listen: Option<String>,
    /// The bearer token every call must carry (required on TCP).
    #[command(flatten)]
    token: TokenArgs,
    /// Seconds webhook requests in flight may take to finish after SIGTERM, or when
    /// Open reopens the shard; those still running then fire again at the next start
    /// (a waiting delivery still running makes Open answer UNAVAILABLE instead).
    #[arg(long, default_value_t = triggers_runtime::DEFAULT_SHUTDOWN_GRACE.as_secs(), value_name = "SECONDS")]
    shutdown_grace: u64,
    /// Serve Prometheus metrics at http://ADDRESS/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_address: Option<String>,
    /// Serve the operator's web console (off by default): unix:/path/to.sock (mode
    /// 0600) or a loopback 127.0.0.1:PORT / [::1]:PORT, which needs the bearer token
    /// (--token-file or $TRIGGERS_SIDECAR_TOKEN: curl sends `Authorization: Bearer`, a
    /// browser logs in once). Prints `console on ADDRESS` before `listening on`.
    #[arg(long, value_name = "ADDRESS")]
    console_address: Option<String>,
    /// Keep nothing durable of its own: Open takes the consumer's recovered values of
    /// the sidecar's keys, StartCommit and AwaitDrained answer with the writes the
    /// consumer makes in its own store (with its checkpoint). --store then only names the
    /// default socket; nothing is written under it.
    #[arg(long)]
    state_in_consumer: bool,
}

fn main() -> anyhow::Result<()> {
    triggers_sidecar::args::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    triggers_sidecar::crash::arm_from_env();
    init_tracing();
    let args = Args::parse();
    let mut config = SidecarConfig::new(args.shard.store.clone(), args.shard.shard_config()?);
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    config.state_in_consumer = args.state_in_consumer;
    let address = match &args.listen {
        Some(address) => address.clone(),
        None => format!(
            "unix:{}",
            sidecar::default_socket_path(&args.shard.store)?.display()
        ),
    };
    let token = args.token.token()?;
    // Bound before the gRPC socket, so a refused console address stops the start.
    let console = match &args.console_address {
        Some(address) => Some(ConsoleListener::bind(address, token.clone()).await?),
        None => None,
    };
    let listener = Listener::bind(&address, token).await?;
    if let Some(console) = &console {
        // Before `listening on`, which tells a supervisor the sidecar is up.
        println!("console on {}", console.address());
    }
    println!("listening on {}", listener.address());
    std::io::stdout().flush()?;
    tracing::info!(
        address = %listener.address(),
        token_required = listener.requires_token(),
        store = %args.shard.store.display(),
        "sidecar ready"
    );

    let sidecar = Sidecar::new(config);
    // Metrics are served while the sidecar drains too; once it has stopped, scrapes in
    // flight finish (bounded by metrics::SHUTDOWN_GRACE) before the process exits.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut metrics_server = None;
    if let Some(address) = &args.metrics_address {
        let metrics = tokio::net::TcpListener::bind(address).await?;
        println!("metrics on http://{}/metrics", metrics.local_addr()?);
        std::io::stdout().flush()?;
        let serving = sidecar.clone();
        metrics_server = Some(tokio::spawn(async move {
            serving
                .serve_metrics(metrics, async move {
                    let _ = metrics_stopped.await;
                })
                .await;
        }));
    }
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut console_server = None;
    if let Some(console) = console {
        console_server = Some(tokio::spawn(sidecar::console::serve(
            sidecar.clone(),
            console,
            async move {
                let _ = console_stopped.await;
            },
        )));
    }
    let served = sidecar::run(sidecar, listener, shutdown_signal()).await;
    let _ = stop_metrics.send(());
    let _ = stop_console.send(());
    if let Some(server) = console_server
        && let Err(err) = server.await
    {
        tracing::warn!(error = %err, "console server task failed");
    }
    if let Some(server) = metrics_server
        && let Err(err) = server.await
    {
        tracing::warn!(error = %err, "metrics server task failed");
    }
    served?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the sidecar");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! Crash recovery with real processes: the reference consumer (and the sidecar) run as
//! child processes, are killed with SIGKILL at named crash points or at random moments,
//! and are restarted; a checker then verifies the at-least-once invariants against
//! everything a real receiver on 127.0.0.1 recorded.

use crate::support;

use support::{Expected, Input};

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use triggers::Clock;
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::test_support::RawStore as _;
use triggers_runtime::{Durability, Store};
use triggers_sidecar::consumer::INPUT_JOURNAL;
use triggers_sidecar::crash::{CRASH_POINT_ENV, CRASH_POINT_REACHED};

const TRIGGER_PATHS: [&str; 2] = ["/a", "/b"];
/// Longest a child may run before the test gives up on it.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// How the shard under test delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Each transaction's webhooks before the next commit.
    Waiting,
    /// A backlog, both triggers draining in this mode.
    Decoupled(Drain),
}

impl Delivery {
    /// Waiting delivery, and decoupled delivery ordered and coalesced.
    const WAITING_ORDERED_COALESCED: [Delivery; 3] = [
        Delivery::Waiting,
        Delivery::Decoupled(Drain::Ordered),
        Delivery::Decoupled(Drain::Coalesced),
    ];

    /// The crash point just after a webhook is delivered, before its params or entry
    /// are deleted: for a coalesced trigger the first one (the rest may all merge into
    /// one, as commits race the endpoint), else the third.
    fn after_a_delivery(self) -> &'static str {
        match self {
            Delivery::Waiting => "acknowledged.before_delete@4",
            Delivery::Decoupled(Drain::Coalesced) => "backlog.before_delete@1",
            Delivery::Decoupled(_) => "backlog.before_delete@3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    Ordered,
    Concurrent,
    Coalesced,
}

impl Drain {
    const ALL: [Drain; 3] = [Drain::Ordered, Drain::Concurrent, Drain::Coalesced];

    fn config(self) -> serde_json::Value {
        match self {
            Drain::Ordered => serde_json::json!({"mode": "ordered"}),
            Drain::Concurrent => serde_json::json!({"mode": "concurrent", "maxInFlight": 3}),
            Drain::Coalesced => serde_json::json!({"mode": "coalesced"}),
        }
    }

    fn in_flight(self) -> usize {
        match self {
            Drain::Concurrent => 3,
            Drain::Ordered | Drain::Coalesced => 1,
        }
    }
}

struct Harness {
    dir: tempfile::TempDir,
    receiver: Receiver,
    input: PathBuf,
    input_len: i64,
    docs_per_txn: usize,
    expected: Vec<Expected>,
    crashes: usize,
    delivery: Delivery,
    /// The in-process consumer keeps its own RocksDB with the shard in a keyspace of it,
    /// and writes the shard's keys in its own WriteBatch (`--host-db`).
    host_db: bool,
    /// The sidecar keeps nothing durable (`--state-in-consumer`); the consumer keeps its
    /// checkpoint and the sidecar's keys in its own RocksDB (`--state-db`).
    state_in_consumer: bool,
    /// Webhooks of this materialization are not the run's own (Flow's pending
    /// `trigger-params`, imported): the checker leaves them to the test.
    foreign: Option<&'static str>,
    /// The trigger at this path is `onFailure: deadLetter` and its receiver refuses
    /// every webhook: each transaction must end as a dead letter in the ledger.
    dead_letters: Option<&'static str>,
}

/// What the checker found.
#[derive(Debug, Default)]
struct Report {
    transactions: usize,
    webhooks: usize,
    duplicates: usize,
    violations: Vec<String>,
}

impl Harness {
    async fn new(documents: usize, docs_per_txn: usize) -> Self {
        Self::with_delivery(documents, docs_per_txn, Delivery::Waiting).await
    }

    async fn with_delivery(documents: usize, docs_per_txn: usize, delivery: Delivery) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = Receiver::start().await.expect("receiver");

        let Input {
            path: input,
            len: input_len,
            expected,
        } = Input::write(dir.path(), documents, docs_per_txn);

        let template = r#"{"run": "{{flow_run_id}}", "id": "{{webhook_id}}", "min": "{{flow_published_at_min}}", "max": "{{flow_published_at_max}}", "collections": {{json collection_names}}, "name": "{{materialization_name}}", "count": {{transaction_count}}, "first": {{first_commit_seq}}, "last": {{last_commit_seq}}}"#;
        let drain = match delivery {
            Delivery::Waiting => serde_json::json!({"mode": "ordered"}),
            Delivery::Decoupled(drain) => drain.config(),
        };
        let config = serde_json::json!({"config": TRIGGER_PATHS.iter().map(|path| serde_json::json!({
            "url": receiver.url(path),
            "payloadTemplate": template,
            "timeoutSecs": 5,
            "maxRetries": 10,
            "drain": drain,
        })).collect::<Vec<_>>()});
        std::fs::write(dir.path().join("triggers.json"), config.to_string()).expect("write config");

        Self {
            input_len,
            dir,
            receiver,
            input,
            docs_per_txn,
            expected,
            crashes: 0,
            delivery,
            host_db: false,
            state_in_consumer: false,
            foreign: None,
            dead_letters: None,
        }
    }

    /// Makes the trigger at `path` a dead-lettering one (`onFailure: deadLetter`, no
    /// retries) whose receiver refuses every webhook for good (422).
    fn dead_letter_at(&mut self, path: &'static str) {
        let file = self.dir.path().join("triggers.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("reads config")).expect("JSON");
        let at = TRIGGER_PATHS
            .iter()
            .position(|p| *p == path)
            .expect("a trigger path");
        config["config"][at]["onFailure"] = "deadLetter".into();
        config["config"][at]["maxRetries"] = 0.into();
        std::fs::write(&file, config.to_string()).expect("write config");
        // More refusals than the run can ask for (each transaction, and re-fires).
        self.receiver.script(
            path,
            (0..100).map(|_| Reply::status(422).with_body("never")),
        );
        self.dead_letters = Some(path);
    }

    fn delivery_arg(&self) -> &'static str {
        match self.delivery {
            Delivery::Waiting => "waiting",
            Delivery::Decoupled(_) => "decoupled",
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn bindings(&self) -> Vec<String> {
        Input::binding_args()
    }

    /// The consumer, in-process mode, or driving the sidecar at `sidecar`.
    fn consumer(&self, sidecar: Option<&str>, crash_point: Option<&str>) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_consumer"));
        command
            .arg("--input")
            .arg(&self.input)
            .arg("--docs-per-txn")
            .arg(self.docs_per_txn.to_string())
            .args(self.bindings());
        match sidecar {
            Some(address) => {
                command.arg("--sidecar").arg(address);
                if self.state_in_consumer {
                    command.arg("--state-db").arg(self.consumer_db());
                }
            }
            None => {
                command
                    .arg("--store")
                    .arg(self.store())
                    .arg("--triggers")
                    .arg(self.dir.path().join("triggers.json"))
                    .arg("--materialization")
                    .arg("acmeCo/crash/test")
                    .arg("--retry-initial-ms")
                    .arg("10")
                    .arg("--delivery")
                    .arg(self.delivery_arg())
                    .arg("--allow-loopback");
                if self.host_db {
                    command.arg("--host-db");
                }
            }
        }
        spawn(command, crash_point)
    }

    fn sidecar(&self, crash_point: Option<&str>) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shard-sidecar"));
        command
            .arg("--store")
            .arg(self.store())
            .arg("--triggers")
            .arg(self.dir.path().join("triggers.json"))
            .arg("--materialization")
            .arg("acmeCo/crash/test")
            .arg("--connector-image")
            .arg("ghcr.io/estuary/materialize-example:v1")
            .arg("--retry-initial-ms")
            .arg("10")
            .arg("--delivery")
            .arg(self.delivery_arg())
            .arg("--allow-loopback")
            .args(self.bindings());
        if self.state_in_consumer {
            command.arg("--state-in-consumer");
        }
        spawn(command, crash_point)
    }

    /// The consumer's own RocksDB, with `--state-db`.
    fn consumer_db(&self) -> PathBuf {
        self.dir.path().join("consumer-db")
    }

    /// Runs the consumer in-process until it completes.
    async fn complete(&self) {
        let child = self.consumer(None, None);
        let output = tokio::time::timeout(CHILD_DEADLINE, child.wait_with_output())
            .await
            .expect("consumer finishes in time")
            .expect("consumer runs");
        assert!(
            output.status.success(),
            "consumer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts a sidecar armed at `point` and a consumer driving it, SIGKILLs the sidecar
    /// at the point, and waits for the consumer, which loses its sidecar and fails.
    async fn kill_sidecar_under_consumer(&mut self, point: &str) {
        let mut sidecar = self.sidecar(Some(point));
        let address = sidecar_address(&mut sidecar).await;
        let consumer = self.consumer(Some(&address), None);
        self.kill_at_crash_point(sidecar).await;
        let output = tokio::time::timeout(CHILD_DEADLINE, consumer.wait_with_output())
            .await
            .expect("consumer notices")
            .expect("consumer ran");
        assert!(!output.status.success(), "the consumer lost its sidecar");
    }

    /// Starts a new sidecar and runs the consumer through it to the end of the input;
    /// returns the sidecar, still running.
    async fn complete_through_new_sidecar(&self) -> Child {
        let mut sidecar = self.sidecar(None);
        let address = sidecar_address(&mut sidecar).await;
        let consumer = self.consumer(Some(&address), None);
        let output = tokio::time::timeout(CHILD_DEADLINE, consumer.wait_with_output())
            .await
            .expect("consumer finishes")
            .expect("consumer ran");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        sidecar
    }

    /// Runs `child` until it reports reaching its crash point, then SIGKILLs it.
    async fn kill_at_crash_point(&mut self, mut child: Child) {
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let reached = tokio::time::timeout(CHILD_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(CRASH_POINT_REACHED) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(reached, "the child never reached its crash point");
        self.kill(child).await;
    }

    async fn kill(&mut self, mut child: Child) {
        // Child::start_kill sends SIGKILL.
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
        self.crashes += 1;
    }

    /// Checks the invariants against what the receiver recorded and the store holds.
    fn check(&self) -> Report {
        let mut report = match self.delivery {
            Delivery::Waiting => self.check_waiting(),
            Delivery::Decoupled(drain) => self.check_backlog(drain),
        };
        self.check_store(&mut report);
        report
    }

    /// Decoupled delivery: per trigger, the distinct webhooks (by id) cover every
    /// committed transaction exactly once in their ranges, each announcing exactly the
    /// merge of the transactions it covers; a repeated id repeats the same variables;
    /// ordered and coalesced triggers send in commit order.
    ///
    /// With the sidecar's state in the consumer, a crash loses the records of the
    /// deliveries made since the sidecar last handed out its writes, so what they sent is
    /// pending again and a coalesced trigger may merge it with newer transactions under
    /// a new webhook id: after a crash, a webhook may re-announce transactions already
    /// announced (it never skips one), and the ranges may overlap.
    fn check_backlog(&self, drain: Drain) -> Report {
        let mut report = Report {
            transactions: self.expected.len(),
            ..Report::default()
        };
        let may_reannounce = self.state_in_consumer && self.crashes > 0;
        let requests = self.receiver.requests();
        for (index, path) in TRIGGER_PATHS.into_iter().enumerate() {
            if self.dead_letters == Some(path) {
                // Checked in the store (`check_dead_letters`).
                continue;
            }
            // The config names no trigger: each is named by its index, which its ids
            // derive from, so a webhook sent for another trigger shows.
            let name = index.to_string();
            let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            let mut covered_through = 0;
            let mut duplicates = 0;
            for request in requests.iter().filter(|r| r.path == path) {
                if !request.answered.is_some_and(|s| (200..300).contains(&s)) {
                    continue;
                }
                report.webhooks += 1;
                let body = request.json().expect("webhooks are JSON");
                if self.foreign.is_some_and(|name| body["name"] == name) {
                    report.webhooks -= 1;
                    continue;
                }
                let id = body["id"].as_str().unwrap_or_default().to_string();
                let run = body["run"].as_str().unwrap_or_default();
                if id != triggers::trigger_webhook_id(run, &name) {
                    report.violations.push(format!(
                        "{path}: webhook {id} is not trigger {name}'s webhook of {run}"
                    ));
                }
                if let Some(earlier) = by_id.get(&id) {
                    duplicates += 1;
                    if earlier != &body {
                        report.violations.push(format!(
                            "{path}: webhook {id} repeated with other variables: {earlier} then {body}"
                        ));
                    }
                    continue;
                }
                let (first, last, count) = (
                    body["first"].as_u64().unwrap_or_default(),
                    body["last"].as_u64().unwrap_or_default(),
                    body["count"].as_u64().unwrap_or_default(),
                );
                if first == 0 || last < first || last as usize > self.expected.len() {
                    report.violations.push(format!(
                        "{path}: phantom webhook for transactions {first}..={last}: {body}"
                    ));
                    continue;
                }
                if count != last - first + 1 {
                    report.violations.push(format!(
                        "{path}: webhook {id} counts {count} for {first}..={last}"
                    ));
                }
                let in_order = if may_reannounce {
                    first <= covered_through + 1
                } else {
                    first == covered_through + 1
                };
                if drain != Drain::Concurrent && !in_order {
                    report.violations.push(format!(
                        "{path}: {first}..={last} sent after {covered_through}: order broken"
                    ));
                }
                covered_through = covered_through.max(last);
                let merged = &self.expected[first as usize - 1..last as usize];
                let mut collections: Vec<&String> = Vec::new();
                for name in merged.iter().flat_map(|e| &e.collections) {
                    if !collections.contains(&name) {
                        collections.push(name);
                    }
                }
                let min = merged.iter().map(|e| &e.min).min();
                let max = merged.iter().map(|e| &e.max).max();
                if body["collections"] != serde_json::json!(collections)
                    || body["min"].as_str() != min.map(String::as_str)
                    || body["max"].as_str() != max.map(String::as_str)
                {
                    report.violations.push(format!(
                        "{path}: webhook for {first}..={last} announces other variables: {body}"
                    ));
                }
                by_id.insert(id, body);
            }
            let mut ranges: Vec<(u64, u64)> = by_id
                .values()
                .map(|b| {
                    (
                        b["first"].as_u64().unwrap_or_default(),
                        b["last"].as_u64().unwrap_or_default(),
                    )
                })
                .collect();
            ranges.sort_unstable();
            let mut next = 1;
            for (first, last) in ranges {
                if first > next {
                    report.violations.push(format!(
                        "{path}: transactions {next}..{first} (exclusive) never announced"
                    ));
                } else if first < next && !may_reannounce {
                    report.violations.push(format!(
                        "{path}: transactions from {first} to {} announced by more than one webhook",
                        next - 1
                    ));
                }
                next = next.max(last + 1);
            }
            if next as usize != self.expected.len() + 1 {
                report.violations.push(format!(
                    "{path}: transactions {next}..={} never announced",
                    self.expected.len()
                ));
            }
            report.duplicates += duplicates;
            // With its state in the consumer, a sidecar's records of deliveries made
            // since it last handed out its writes die with it, so a crash may re-send
            // each of those, not only the ones in flight: no bound per crash here (the
            // other invariants hold all the same).
            if !self.state_in_consumer && duplicates > self.crashes * drain.in_flight() {
                report.violations.push(format!(
                    "{path}: {duplicates} duplicates after only {} crash(es)",
                    self.crashes
                ));
            }
        }
        report
    }

    fn check_waiting(&self) -> Report {
        let mut report = Report {
            transactions: self.expected.len(),
            ..Report::default()
        };
        // (txn index, path) -> run ids of the accepted deliveries.
        let mut seen: BTreeMap<(usize, String), Vec<String>> = BTreeMap::new();
        for request in self.receiver.requests() {
            if !request.answered.is_some_and(|s| (200..300).contains(&s)) {
                continue;
            }
            report.webhooks += 1;
            let body = request.json().expect("webhooks are JSON");
            let position = self
                .expected
                .iter()
                .position(|e| body["min"] == e.min.as_str() && body["max"] == e.max.as_str());
            let Some(index) = position else {
                report.violations.push(format!(
                    "phantom webhook for no committed transaction: {body}"
                ));
                continue;
            };
            let collections: Vec<String> =
                serde_json::from_value(body["collections"].clone()).unwrap_or_default();
            if collections != self.expected[index].collections {
                report.violations.push(format!(
                    "transaction {index}: wrong collections {collections:?}"
                ));
            }
            seen.entry((index, request.path.clone()))
                .or_default()
                .push(body["run"].as_str().unwrap_or_default().to_string());
        }
        for index in 0..self.expected.len() {
            let mut runs: Vec<&String> = Vec::new();
            for path in TRIGGER_PATHS {
                match seen.get(&(index, path.to_string())) {
                    None => report.violations.push(format!(
                        "transaction {index}: trigger {path} never received"
                    )),
                    Some(ids) => {
                        report.duplicates += ids.len() - 1;
                        runs.extend(ids);
                    }
                }
            }
            runs.dedup();
            if runs.len() > 1 {
                report.violations.push(format!(
                    "transaction {index}: announced with different variables (runs {runs:?})"
                ));
            }
        }
        for path in TRIGGER_PATHS {
            let duplicates: usize = seen
                .iter()
                .filter(|((_, p), _)| p == path)
                .map(|(_, ids)| ids.len() - 1)
                .sum();
            if duplicates > self.crashes {
                report.violations.push(format!(
                    "trigger {path}: {duplicates} duplicates after only {} crash(es)",
                    self.crashes
                ));
            }
        }
        report
    }

    /// Both modes: the final checkpoint is the end of the input, nothing is left pending.
    fn check_store(&self, report: &mut Report) {
        let (store, checkpoint) = if self.state_in_consumer {
            if self.store().exists() {
                report
                    .violations
                    .push("the sidecar wrote a store of its own".to_string());
            }
            let db = std::sync::Arc::new(
                triggers_runtime::rocksdb::DB::open_default(self.consumer_db())
                    .expect("the consumer's DB opens"),
            );
            let checkpoint = triggers_sidecar::consumer::host_checkpoint(&db)
                .expect("the consumer's checkpoint reads");
            let keyspace = triggers_runtime::Keyspace::prefixed(
                triggers_sidecar::consumer::SIDECAR_STATE_PREFIX,
            )
            .expect("valid");
            (
                Store::in_host_db(db, keyspace, Durability::Synced).expect("the keyspace is free"),
                checkpoint,
            )
        } else if self.host_db {
            let db = std::sync::Arc::new(
                triggers_runtime::rocksdb::DB::open_default(self.store()).expect("host DB opens"),
            );
            let checkpoint = triggers_sidecar::consumer::host_checkpoint(&db)
                .expect("the consumer's checkpoint reads");
            if db.get(b"trigger-params").expect("reads").is_some() {
                report
                    .violations
                    .push("Flow's trigger-params is still in the host's DB".to_string());
            }
            let keyspace = triggers_runtime::Keyspace::prefixed(&b"triggers/"[..]).expect("valid");
            (
                Store::in_host_db(db, keyspace, Durability::Synced).expect("the keyspace is free"),
                checkpoint,
            )
        } else {
            let store = Store::open(self.store(), Durability::Synced).expect("store opens");
            let checkpoint = store.checkpoint().expect("checkpoint reads");
            (store, checkpoint)
        };
        let offset = checkpoint
            .sources
            .get(INPUT_JOURNAL)
            .map_or(0, |s| s.read_through);
        if offset != self.input_len {
            report.violations.push(format!(
                "final checkpoint {offset} is not the end of the input {}",
                self.input_len
            ));
        }
        if store.trigger_params().expect("reads").is_some() {
            report
                .violations
                .push("trigger params left pending at the end".to_string());
        }
        let backlog = store.backlog().expect("reads").len();
        if backlog > 0 {
            report
                .violations
                .push(format!("{backlog} backlog entries left pending at the end"));
        }
        if let Some(path) = self.dead_letters {
            self.check_dead_letters(&store, path, report);
        }
    }

    /// The dead-lettering trigger at `path`: every committed transaction was sent to its
    /// receiver at least once and is covered by exactly one dead letter in the ledger,
    /// which keeps its variables; no delivery of it is FAILED otherwise (stopped).
    fn check_dead_letters(&self, store: &Store, path: &str, report: &mut Report) {
        let index = TRIGGER_PATHS
            .iter()
            .position(|p| *p == path)
            .expect("a trigger path");
        let name = index.to_string();
        let mut covered = vec![0usize; self.expected.len() + 1];
        for record in store.deliveries().expect("reads the ledger") {
            if record.trigger_name != name {
                continue;
            }
            let dead = record.state() == triggers_proto::DeliveryState::Failed
                && record.dead_letter
                && record
                    .entry
                    .as_ref()
                    .and_then(|e| e.params.as_ref())
                    .is_some_and(|p| {
                        (p.first_commit_seq, p.last_commit_seq)
                            == (record.first_commit_seq, record.last_commit_seq)
                    });
            if !dead {
                report.violations.push(format!(
                    "{path}: delivery {}..={} is {:?}, not a dead letter keeping its variables",
                    record.first_commit_seq,
                    record.last_commit_seq,
                    record.state()
                ));
                continue;
            }
            for n in record.first_commit_seq..=record.last_commit_seq {
                if let Some(count) = covered.get_mut(n as usize) {
                    *count += 1;
                }
            }
        }
        for (n, count) in covered.iter().enumerate().skip(1) {
            if *count != 1 {
                report.violations.push(format!(
                    "{path}: transaction {n} is in {count} dead letters, not one"
                ));
            }
        }
        let mut sent = vec![false; self.expected.len() + 1];
        for request in self.receiver.requests().iter().filter(|r| r.path == path) {
            let body = request.json().expect("webhooks are JSON");
            let (first, last) = (
                body["first"].as_u64().unwrap_or_default(),
                body["last"].as_u64().unwrap_or_default(),
            );
            for n in first..=last {
                if let Some(seen) = sent.get_mut(n as usize) {
                    *seen = true;
                }
            }
        }
        if let Some(n) = sent.iter().skip(1).position(|seen| !seen) {
            report
                .violations
                .push(format!("{path}: transaction {} was never sent", n + 1));
        }
    }

    fn assert_clean(&self) -> Report {
        let report = self.check();
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        report
    }
}

fn spawn(mut command: Command, crash_point: Option<&str>) -> Child {
    command
        .env("RUST_LOG", "warn")
        .env_remove(CRASH_POINT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(point) = crash_point {
        command.env(CRASH_POINT_ENV, point);
    }
    command.spawn().expect("child spawns")
}

/// Reads the sidecar's `listening on ADDRESS` line.
/// Sends SIGTERM to a sidecar and waits (within [`CHILD_DEADLINE`]) for its clean exit.
async fn terminate(sidecar: &mut Child) {
    let pid = sidecar.id().expect("running");
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    let status = tokio::time::timeout(CHILD_DEADLINE, sidecar.wait())
        .await
        .expect("sidecar exits on SIGTERM")
        .expect("reaped");
    assert!(status.success(), "clean shutdown: {status:?}");
}

async fn sidecar_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(CHILD_DEADLINE, lines.next_line())
        .await
        .expect("sidecar starts in time")
        .expect("reads stdout")
        .expect("prints its address");
    line.strip_prefix("listening on ")
        .expect("address line")
        .to_string()
}

async fn crash_then_recover(point: &str) -> Report {
    let mut harness = Harness::new(30, 3).await;
    let child = harness.consumer(None, Some(point));
    harness.kill_at_crash_point(child).await;
    harness.complete().await;
    let report = harness.assert_clean();
    assert_eq!(report.transactions, 10);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_start_commit_writes_fires_nothing_extra() {
    let report = crash_then_recover("start_commit.before_write@4").await;
    assert_eq!(
        report.duplicates, 0,
        "the lost transaction never fired: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_write_before_the_reply_fires_once_on_recovery() {
    let report = crash_then_recover("start_commit.after_write@4").await;
    assert_eq!(report.duplicates, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_start_commit_before_acknowledged_fires_once_on_recovery() {
    let report = crash_then_recover("consumer.after_start_commit@4").await;
    assert_eq!(report.duplicates, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_delivery_before_the_delete_refires_that_transaction() {
    let report = crash_then_recover("acknowledged.before_delete@4").await;
    assert_eq!(
        report.duplicates, 2,
        "both triggers re-fired once: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_delivery_with_one_trigger_delivered_refires_both() {
    let mut harness = Harness::new(30, 3).await;
    // The 4th webhook to /b is held open while /a's is delivered; then the consumer dies.
    harness.receiver.script(
        "/b",
        [
            Reply::status(200),
            Reply::status(200),
            Reply::status(200),
            Reply::status(200).after(Duration::from_secs(30)),
        ],
    );
    let child = harness.consumer(None, None);
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        let requests = harness.receiver.requests();
        let a = requests
            .iter()
            .filter(|r| r.path == "/a" && r.answered.is_some())
            .count();
        let b = requests.iter().filter(|r| r.path == "/b").count();
        if a >= 4 && b >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "never reached the held delivery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    harness.kill(child).await;
    harness.complete().await;
    let report = harness.assert_clean();
    assert_eq!(
        report.duplicates, 1,
        "/a re-fired once, /b delivered once: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_after_the_write_recovers_through_the_next_sidecar() {
    let mut harness = Harness::new(30, 3).await;
    harness
        .kill_sidecar_under_consumer("start_commit.after_write@4")
        .await;
    let mut sidecar = harness.complete_through_new_sidecar().await;
    // SIGTERM: a clean shutdown releases the store.
    terminate(&mut sidecar).await;
    let report = harness.assert_clean();
    assert_eq!(report.duplicates, 0, "{report:?}");
}

/// Every drain mode, killed at each crash point of decoupled delivery: after the commit's
/// write, between StartCommit and Acknowledged, and after a delivery before its entry is
/// deleted. The receiver is slow enough that commits pile up behind webhooks (and merge,
/// for coalesced triggers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoupled_crash_points_lose_nothing_in_every_drain_mode() {
    for drain in Drain::ALL {
        // How many webhooks a coalesced trigger sends depends on how commits race the
        // 15 ms endpoint (all ten may merge into one), so only its first is sure to come.
        let delivery = if drain == Drain::Coalesced {
            "backlog.before_delete@1"
        } else {
            "backlog.before_delete@3"
        };
        for point in [
            "start_commit.after_write@4",
            "consumer.after_start_commit@5",
            delivery,
        ] {
            // Named in the output, so a failure says which case it was.
            println!("case: {drain:?} at {point}");
            let mut harness = Harness::with_delivery(30, 3, Delivery::Decoupled(drain)).await;
            harness
                .receiver
                .set_default(Reply::status(200).after(Duration::from_millis(15)));
            let child = harness.consumer(None, Some(point));
            harness.kill_at_crash_point(child).await;
            harness.complete().await;
            let report = harness.check();
            assert!(
                report.violations.is_empty(),
                "{drain:?} at {point}: {:#?}",
                report.violations
            );
            assert_eq!(report.transactions, 10);
        }
    }
}

/// Issue 17: a dead-lettering trigger whose receiver refuses everything, the consumer
/// SIGKILLed just before and just after a dead letter's write (the record and the entry's
/// deletion, one batch): every transaction ends as exactly one dead letter keeping its
/// variables, the other trigger delivers everything, and the shard commits to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_never_lost_nor_doubled_by_a_crash() {
    for point in [
        "backlog.before_dead_letter@3",
        "backlog.after_dead_letter@3",
    ] {
        println!("case: {point}");
        let mut harness = Harness::with_delivery(30, 3, Delivery::Decoupled(Drain::Ordered)).await;
        harness
            .receiver
            .set_default(Reply::status(200).after(Duration::from_millis(15)));
        harness.dead_letter_at("/b");
        let child = harness.consumer(None, Some(point));
        harness.kill_at_crash_point(child).await;
        harness.complete().await;
        let report = harness.check();
        assert!(
            report.violations.is_empty(),
            "{point}: {:#?}",
            report.violations
        );
        assert_eq!(report.transactions, 10);
    }
}

/// Issue 18: a store of an earlier build (backlog and ledger keyed by trigger index)
/// migrates to name keys at open in one synced batch. Killed just before and just after
/// that batch, the consumer loses and repeats nothing it must not: every webhook reaches
/// the trigger it was committed for, with the id that build gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_to_named_keys_killed_before_or_after_its_write_loses_nothing() {
    // Issue 15: in a host's DB too (the consumer as a host, the shard in a keyspace).
    for (drain, host_db) in [
        (Drain::Ordered, false),
        (Drain::Coalesced, false),
        (Drain::Ordered, true),
    ] {
        println!("case: {drain:?}, host DB {host_db}");
        let mut harness = Harness::with_delivery(30, 3, Delivery::Decoupled(drain)).await;
        harness.host_db = host_db;
        harness
            .receiver
            .set_default(Reply::status(200).after(Duration::from_millis(15)));
        // Stopped with webhooks pending, some of them on the ledger.
        let child = harness.consumer(None, Some("consumer.after_start_commit@5"));
        harness.kill_at_crash_point(child).await;
        {
            let store = if host_db {
                let db = triggers_runtime::rocksdb::DB::open_default(harness.store())
                    .expect("the host's DB opens");
                let keyspace =
                    triggers_runtime::Keyspace::prefixed(&b"triggers/"[..]).expect("valid");
                Store::in_host_db(std::sync::Arc::new(db), keyspace, Durability::Synced)
                    .expect("the keyspace is free")
            } else {
                Store::open(harness.store(), Durability::Synced).expect("opens")
            };
            let moved = store
                .downgrade_to_index_keys(&["0", "1"])
                .expect("rewrites");
            assert!(moved > 0, "something pends to migrate");
        }
        for point in ["migration.before_write", "migration.after_write"] {
            let child = harness.consumer(None, Some(point));
            harness.kill_at_crash_point(child).await;
        }
        harness.complete().await;
        let report = harness.check();
        assert!(
            report.violations.is_empty(),
            "{drain:?}: {:#?}",
            report.violations
        );
        assert_eq!(report.transactions, 10);
    }
}

/// Issue 15, item 2: a DB Flow's runtime left with `trigger-params` pending, opened by the
/// consumer as a host, killed just before and just after the batch that moves Flow's
/// pending webhooks into the shard's keyspace: Flow's webhook reaches each trigger with
/// the variables Flow stored (the same on each re-fire), Flow's key is gone, and the
/// run's own transactions keep every invariant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_import_killed_before_or_after_its_write_loses_nothing() {
    const FLOW: &[u8] = br#"{"collection_names":["acmeCo/collection-a"],"connector_image":"ghcr.io/estuary/materialize-postgres:dev","materialization_name":"acmeCo/my-materialization","flow_published_at_min":"1970-01-01T00:08:20Z","flow_published_at_max":"1970-01-01T01:06:40Z","run_id":"2024-06-15T12:30:00.000Z"}"#;
    let mut harness = Harness::with_delivery(30, 3, Delivery::Decoupled(Drain::Ordered)).await;
    harness.host_db = true;
    harness.foreign = Some("acmeCo/my-materialization");
    {
        let mut options = triggers_runtime::rocksdb::Options::default();
        options.create_if_missing(true);
        let db = triggers_runtime::rocksdb::DB::open(&options, harness.store()).expect("Flow's DB");
        db.put(b"trigger-params", FLOW).expect("writes");
        db.put(b"connector-state", br#"{"cursor":1}"#)
            .expect("writes");
    }
    for point in ["flow_import.before_write", "flow_import.after_write"] {
        let child = harness.consumer(None, Some(point));
        harness.kill_at_crash_point(child).await;
    }
    harness.complete().await;
    let report = harness.check();
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.transactions, 10);
    for path in TRIGGER_PATHS {
        let flow: Vec<serde_json::Value> = harness
            .receiver
            .requests()
            .iter()
            .filter(|r| r.path == path && r.answered.is_some_and(|s| (200..300).contains(&s)))
            .map(|r| r.json().expect("JSON"))
            .filter(|body| body["name"] == "acmeCo/my-materialization")
            .collect();
        assert!(!flow.is_empty(), "{path}: Flow's pending webhook arrived");
        assert!(
            flow.iter().all(|body| *body == flow[0]),
            "{path}: each re-fire repeats it: {flow:?}"
        );
        assert_eq!(
            flow[0]["collections"],
            serde_json::json!(["acmeCo/collection-a"])
        );
        assert_eq!(flow[0]["max"], "1970-01-01T01:06:40Z");
        assert_eq!(
            (flow[0]["first"].as_u64(), flow[0]["last"].as_u64()),
            (Some(0), Some(0))
        );
    }
}

/// Issue 15, item 3: a sidecar that keeps nothing durable, its state in the consumer's
/// store (written with the consumer's checkpoint). Either process is SIGKILLed at each of
/// its points (the consumer before and after its write, after StartCommit before
/// Acknowledged; the sidecar after a delivery before its delete), the sidecar with it
/// each time, so every run starts from a sidecar with nothing on disk: nothing is lost,
/// nothing fires that never committed, and the sidecar never writes a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_with_its_state_in_the_consumer_loses_nothing_when_either_dies() {
    for delivery in Delivery::WAITING_ORDERED_COALESCED {
        let sidecar_point = delivery.after_a_delivery();
        for (who, point) in [
            ("consumer", "consumer.before_state_write@4"),
            ("consumer", "consumer.after_state_write@4"),
            ("consumer", "consumer.after_start_commit@5"),
            ("sidecar", sidecar_point),
        ] {
            println!("case: {delivery:?}, {who} at {point}");
            let mut harness = Harness::with_delivery(30, 3, delivery).await;
            harness.state_in_consumer = true;
            if delivery != Delivery::Waiting {
                harness
                    .receiver
                    .set_default(Reply::status(200).after(Duration::from_millis(15)));
            }
            if who == "sidecar" {
                harness.kill_sidecar_under_consumer(point).await;
            } else {
                let mut sidecar = harness.sidecar(None);
                let address = sidecar_address(&mut sidecar).await;
                let consumer = harness.consumer(Some(&address), Some(point));
                harness.kill_at_crash_point(consumer).await;
                // The sidecar goes too: the next one starts with nothing.
                harness.kill(sidecar).await;
            }
            let mut sidecar = harness.complete_through_new_sidecar().await;
            terminate(&mut sidecar).await;
            let report = harness.check();
            assert!(
                report.violations.is_empty(),
                "{delivery:?}, {who} at {point}: {:#?}",
                report.violations
            );
            assert_eq!(report.transactions, 10);
        }
    }
}

/// Issue 15: the consumer as a host, its own RocksDB holding its checkpoint and the shard
/// in a keyspace, writing the shard's keys in its own WriteBatch; killed at every crash
/// point of that path (before and after its write, before Acknowledged, after a delivery
/// before the delete), in waiting and decoupled delivery: nothing is lost, nothing fires
/// that never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_owned_crash_points_lose_nothing() {
    for delivery in Delivery::WAITING_ORDERED_COALESCED {
        let delivered = delivery.after_a_delivery();
        for point in [
            "consumer.before_host_write@4",
            "consumer.after_host_write@4",
            "consumer.after_start_commit@5",
            delivered,
        ] {
            println!("case: {delivery:?} at {point}");
            let mut harness = Harness::with_delivery(30, 3, delivery).await;
            harness.host_db = true;
            if delivery != Delivery::Waiting {
                harness
                    .receiver
                    .set_default(Reply::status(200).after(Duration::from_millis(15)));
            }
            let child = harness.consumer(None, Some(point));
            harness.kill_at_crash_point(child).await;
            harness.complete().await;
            let report = harness.check();
            assert!(
                report.violations.is_empty(),
                "{delivery:?} at {point}: {:#?}",
                report.violations
            );
            assert_eq!(report.transactions, 10);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoupled_sidecar_killed_mid_backlog_recovers_through_the_next_sidecar() {
    let mut harness = Harness::with_delivery(30, 3, Delivery::Decoupled(Drain::Coalesced)).await;
    harness
        .receiver
        .set_default(Reply::status(200).after(Duration::from_millis(15)));
    harness
        // The first webhook is the only one sure to come: the rest may all merge into one.
        .kill_sidecar_under_consumer("backlog.before_delete@1")
        .await;
    let mut sidecar = harness.complete_through_new_sidecar().await;
    sidecar.start_kill().expect("SIGKILL");
    sidecar.wait().await.expect("reaped");
    harness.assert_clean();
}

/// What one soak cycle does, drawn from the run's seeded generator, so a failing seed
/// replays exactly.
#[derive(Debug, PartialEq, Eq)]
struct Cycle {
    /// How long the endpoint takes to answer 200.
    reply_after: Duration,
    /// A trigger path that answers one 503 first, sometimes.
    fail_once: Option<&'static str>,
    /// When the consumer is killed, unless it finishes first.
    kill_after: Duration,
}

impl Cycle {
    fn draw(rng: &mut fastrand::Rng) -> Self {
        Self {
            reply_after: Duration::from_millis(rng.u64(..5)),
            fail_once: (rng.u64(..4) == 0).then(|| TRIGGER_PATHS[rng.usize(..2)]),
            kill_after: Duration::from_millis(5 + rng.u64(..120)),
        }
    }
}

/// Issue 14: the soak draws from `fastrand` (no hand-rolled generator); a printed
/// `SOAK_SEED` still replays a run: the same seed draws the same cycles.
#[test]
fn soak_seed_replays_the_same_cycles() {
    let draw = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..50).map(|_| Cycle::draw(&mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
    let cycles = draw(7);
    assert!(cycles.iter().any(|c| c.fail_once.is_some()), "{cycles:?}");
    assert!(cycles.iter().any(|c| c.fail_once.is_none()), "{cycles:?}");
    assert!(
        cycles
            .iter()
            .all(|c| c.reply_after < Duration::from_millis(5)
                && (Duration::from_millis(5)..Duration::from_millis(125)).contains(&c.kill_after))
    );
}

/// Kills the consumer at random moments, many times, lets it finish, checks; again with
/// fresh stores until `SOAK_SECS` (default 15) pass. `SOAK_SEED` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_random_kills() {
    let seconds: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let _ = writeln!(
        std::io::stderr(),
        "soak: seed={seed} (replay with SOAK_SEED={seed})"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut rounds, mut cycles, mut crashes) = (0, 0, 0);
    let mut totals = Report::default();

    while rounds == 0 || Instant::now() < deadline {
        rounds += 1;
        // Rounds rotate through waiting delivery and each drain mode of decoupled delivery.
        let delivery = match rounds % 4 {
            0 => Delivery::Waiting,
            n => Delivery::Decoupled(Drain::ALL[n as usize - 1]),
        };
        let mut harness = Harness::with_delivery(200, 2, delivery).await;
        loop {
            cycles += 1;
            // A slow or briefly failing endpoint makes kills land during delivery too.
            let cycle = Cycle::draw(&mut rng);
            harness
                .receiver
                .set_default(Reply::status(200).after(cycle.reply_after));
            if let Some(path) = cycle.fail_once {
                harness.receiver.script(path, [Reply::status(503)]);
            }
            let mut child = harness.consumer(None, None);
            match tokio::time::timeout(cycle.kill_after, child.wait()).await {
                Ok(status) => {
                    assert!(
                        status.expect("reaped").success(),
                        "consumer failed on its own"
                    );
                    break; // This round's input is done.
                }
                Err(_) => harness.kill(child).await,
            }
        }
        harness.receiver.set_default(Reply::status(200));
        harness.complete().await;
        let report = harness.check();
        assert!(
            report.violations.is_empty(),
            "seed {seed}, round {rounds}: {:#?}",
            report.violations
        );
        crashes += harness.crashes;
        totals.transactions += report.transactions;
        totals.webhooks += report.webhooks;
        totals.duplicates += report.duplicates;
    }
    // Straight to stderr, past the test harness's capture, so CI logs show it.
    let _ = writeln!(
        std::io::stderr(),
        "soak: seed={seed} rounds={rounds} cycles={cycles} crashes={crashes} transactions={} \
         webhooks={} duplicates={} violations=0",
        totals.transactions,
        totals.webhooks,
        totals.duplicates
    );
}

/// Issue 12: SIGTERM's grace was not applied in decoupled delivery (the default): the
/// sidecar exited at once while webhooks were in flight, so every planned restart re-sent
/// them as recovery re-fires. It now stops picking new entries and lets the in-flight sends
/// finish within `--shutdown-grace` (10 s by default) before it closes the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_webhooks_finish_within_the_grace() {
    use triggers_proto::sidecar::{
        AcknowledgedRequest, AwaitDrainedRequest, OpenRequest, StartCommitRequest,
    };
    let harness = Harness::with_delivery(3, 3, Delivery::Decoupled(Drain::Ordered)).await;
    harness
        .receiver
        .set_default(Reply::status(200).after(Duration::from_millis(1500)));
    let mut sidecar = harness.sidecar(None);
    let address = sidecar_address(&mut sidecar).await;
    let mut client = support::open_and_acknowledge(&address, None).await;
    let clock = Clock::from_unix(1_750_000_000, 0).0;
    client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(Default::default()),
            stats: vec![triggers_proto::BindingStats {
                binding: 0,
                docs: 1,
                bytes: 10,
                first_clock: clock,
                last_clock: clock,
            }],
            ..Default::default()
        })
        .await
        .expect("commits");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("queues");
    let arrived = harness
        .receiver
        .wait_for(TRIGGER_PATHS.len(), CHILD_DEADLINE)
        .await;
    assert_eq!(arrived.len(), TRIGGER_PATHS.len());

    terminate(&mut sidecar).await;

    // The next sidecar finds nothing left to re-fire.
    let mut sidecar = harness.sidecar(None);
    let address = sidecar_address(&mut sidecar).await;
    let mut client = triggers_sidecar::connect(&address, None)
        .await
        .expect("connects");
    let opened = client
        .open(OpenRequest::default())
        .await
        .expect("opens")
        .into_inner();
    assert!(
        !opened.triggers_pending,
        "the in-flight webhooks finished before the exit: {opened:?}"
    );
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    let requests = harness.receiver.requests();
    assert_eq!(requests.len(), TRIGGER_PATHS.len(), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.header("webhook-reason") == Some("first-send") && r.answered == Some(200)),
        "{requests:?}"
    );
    sidecar.start_kill().expect("SIGKILL");
    sidecar.wait().await.expect("reaped");
}

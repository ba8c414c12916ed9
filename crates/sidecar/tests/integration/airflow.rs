//! The README's Airflow configs against a real Apache Airflow 2 and 3 on 127.0.0.1 (see
//! `support::airflow`): the reference consumer commits real transactions, an ordered
//! trigger triggers one DAG run per transaction, and Airflow's own API is read back.
//!
//! Airflow's idempotency key is the `dag_run_id`; a second POST of one answers 409. The
//! scenarios make the runtime send a webhook Airflow already has, the two ways it happens:
//! the consumer is SIGKILLed after Airflow received the request but before it answered
//! (the recovery re-fire repeats it), and the first attempt times out on our side while
//! Airflow still creates the run (the retry repeats it). Each time the shard must go on,
//! and Airflow must hold exactly one run per committed transaction. Airflow 3 adds token
//! authentication with JWTs that expire every few seconds.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::airflow::{Airflow, Version};
use support::{Expected, Input};
use tokio::process::{Child, Command};

/// Longest one consumer run may take.
const CONSUMER_DEADLINE: Duration = Duration::from_secs(120);
/// Longest Airflow may take to show a run it was sent.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// Airflow 3's JWT lifetime in these tests: tokens expire several times in each test.
const JWT_LIFETIME: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_2_gets_one_dag_run_per_transaction_across_a_crash_and_a_client_timeout() {
    let Some(airflow) = Airflow::start(Version::Two, JWT_LIFETIME).await else {
        return;
    };
    crash_before_the_answer(&airflow).await;
    client_timeout(&airflow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_3_gets_one_dag_run_per_transaction_across_a_crash_a_timeout_and_token_expiries() {
    let Some(airflow) = Airflow::start(Version::Three, JWT_LIFETIME).await else {
        return;
    };
    crash_before_the_answer(&airflow).await;
    client_timeout(&airflow).await;
    token_expiries(&airflow).await;
}

/// The consumer is SIGKILLed while Airflow holds its webhook unanswered; Airflow then
/// creates the run. The restarted consumer re-fires the webhook, Airflow answers 409, and
/// the shard counts it as already delivered and goes on.
async fn crash_before_the_answer(airflow: &Airflow) {
    let scenario = Scenario::new(airflow, "crash", 24, 4, 30);
    let before = scenario.consumer(&["--max-transactions", "2"]);
    scenario.finish(before).await;
    airflow.await_runs(&scenario.dag, 2, RUN_DEADLINE).await;

    // Transactions trickle, a second apart, so that this process's first webhook (and, on
    // Airflow 3, its token) is through before the server freezes under a later one. (If
    // it freezes mid-request, that request's retry is the one held: the same outcome.)
    let mut doomed = scenario.consumer(&["--transaction-interval-ms", "1000"]);
    let before = airflow
        .await_runs(&scenario.dag, 3, RUN_DEADLINE)
        .await
        .len();
    assert!(before >= 3, "{}", scenario.stderr());
    airflow.freeze();
    let reached = airflow.await_unread_request(Duration::from_secs(60)).await;
    doomed.start_kill().expect("SIGKILL");
    doomed.wait().await.expect("reaped");
    airflow.thaw();
    assert!(reached, "no webhook reached the frozen Airflow");
    let runs = airflow
        .await_runs(&scenario.dag, before + 1, RUN_DEADLINE)
        .await;
    assert!(
        runs.len() > before,
        "Airflow created the run of the request it held; the consumer logged: {}\nAirflow logged: {}",
        scenario.stderr(),
        airflow.log()
    );

    let after = scenario.consumer(&[]);
    let log = scenario.finish(after).await;
    assert!(
        log.contains("already delivered"),
        "the re-fire was answered 409 and counted as already delivered: {log}"
    );
    scenario.check().await;
}

/// The first attempt times out on our side while Airflow, frozen, holds it; thawed, it
/// creates the run, and the retry is answered 409: already delivered.
async fn client_timeout(airflow: &Airflow) {
    let scenario = Scenario::new(airflow, "timeout", 12, 4, 1);
    let consumer = scenario.consumer(&["--transaction-interval-ms", "1500"]);
    let runs = airflow.await_runs(&scenario.dag, 1, RUN_DEADLINE).await;
    assert!(!runs.is_empty(), "{}", scenario.stderr());
    airflow.freeze();
    let reached = airflow.await_unread_request(Duration::from_secs(60)).await;
    let timed_out = scenario
        .await_stderr("webhook attempt failed", Duration::from_secs(60))
        .await;
    airflow.thaw();
    assert!(reached, "no webhook reached the frozen Airflow");
    assert!(
        timed_out,
        "the attempt did not time out: {}",
        scenario.stderr()
    );
    let log = scenario.finish(consumer).await;
    // Airflow 2's one sync worker answers the held request before the retry, so the retry
    // is a duplicate; Airflow 3 serves both connections at once and either may create it.
    if airflow.version == Version::Two {
        assert!(
            log.contains("already delivered"),
            "the retry was answered 409 and counted as already delivered: {log}"
        );
    }
    scenario.check().await;
}

/// Deliveries spread over more than two JWT lifetimes: the token is renewed and no
/// webhook fails.
async fn token_expiries(airflow: &Airflow) {
    let scenario = Scenario::new(airflow, "expiry", 12, 1, 30);
    let issued_before = airflow.tokens_issued();
    let consumer = scenario.consumer(&["--transaction-interval-ms", "1000"]);
    scenario.finish(consumer).await;
    scenario.check().await;
    let issued = airflow.tokens_issued() - issued_before;
    eprintln!("Airflow 3: 12 webhooks over 12 s took {issued} token(s) of {JWT_LIFETIME:?}");
    assert!(
        issued >= 3,
        "12 s of deliveries with {JWT_LIFETIME:?} tokens took {issued} token(s)"
    );
}

/// One scenario: its own DAG, store, input and config.
struct Scenario<'a> {
    airflow: &'a Airflow,
    dag: String,
    dir: tempfile::TempDir,
    input: Input,
    docs_per_txn: usize,
}

impl<'a> Scenario<'a> {
    fn new(
        airflow: &'a Airflow,
        name: &str,
        documents: usize,
        docs_per_txn: usize,
        timeout_secs: u64,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = Input::write(dir.path(), documents, docs_per_txn);
        let dag = format!("refresh_marts_{name}");
        let config = readme_config(airflow, &dag, timeout_secs);
        std::fs::write(dir.path().join("triggers.yaml"), config).expect("config");
        Self {
            airflow,
            dag,
            dir,
            input,
            docs_per_txn,
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("consumer.log")
    }

    /// What the consumer runs so far logged.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// The reference consumer on this scenario's store, decoupled delivery, appending its
    /// log to `consumer.log`.
    fn consumer(&self, extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_consumer"));
        command
            .arg("--input")
            .arg(&self.input.path)
            .arg("--docs-per-txn")
            .arg(self.docs_per_txn.to_string())
            .args(Input::binding_args())
            .arg("--store")
            .arg(self.dir.path().join("store"))
            .arg("--triggers")
            .arg(self.dir.path().join("triggers.yaml"))
            .args(["--materialization", "acmeCo/test/materialize"])
            .args(["--retry-initial-ms", "200", "--allow-loopback"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        command.spawn().expect("consumer starts")
    }

    /// Waits for the consumer to finish its input; it must succeed. Returns the log.
    async fn finish(&self, child: Child) -> String {
        let status = tokio::time::timeout(CONSUMER_DEADLINE, child.wait_with_output())
            .await
            .expect("the consumer finishes in time")
            .expect("the consumer runs")
            .status;
        let log = self.stderr();
        assert!(status.success(), "the consumer failed ({status}): {log}");
        log
    }

    /// Waits (at most `within`) until the consumer's log contains `needle`.
    async fn await_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Airflow holds exactly one run per committed transaction, each with that
    /// transaction's variables, created in commit order.
    async fn check(&self) {
        let mut runs = self.airflow.dag_runs(&self.dag).await;
        let created = match self.airflow.version {
            Version::Two => "execution_date",
            Version::Three => "run_after",
        };
        runs.sort_by(|a, b| a[created].as_str().cmp(&b[created].as_str()));
        let announced: Vec<Expected> = runs
            .iter()
            .map(|run| {
                let conf = &run["conf"];
                let collections = conf["collections"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .filter_map(|c| c.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                Expected {
                    collections,
                    min: conf["from"].as_str().unwrap_or_default().to_string(),
                    max: conf["to"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect();
        let expected: Vec<Expected> = self
            .input
            .expected
            .iter()
            .map(|txn| Expected {
                collections: txn.collections.clone(),
                min: at_micros(&txn.min, false),
                max: at_micros(&txn.max, true),
            })
            .collect();
        eprintln!(
            "Airflow {:?}, {}: {} run(s) for {} committed transaction(s)",
            self.airflow.version,
            self.dag,
            runs.len(),
            self.input.expected.len()
        );
        assert_eq!(
            announced,
            expected,
            "one run per transaction, in commit order; the consumer logged: {}",
            self.stderr()
        );
        for run in &runs {
            let id = run["dag_run_id"].as_str().unwrap_or_default();
            assert!(id.starts_with("flow-"), "{id}");
            assert_eq!(run["conf"]["materialization"], "acmeCo/test/materialize");
        }
    }
}

/// An RFC 3339 time at 100 ns cut to microseconds, rounded up when `ceil` (as an
/// inclusive upper bound must be).
fn at_micros(at: &str, ceil: bool) -> String {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(at, &Rfc3339).expect("RFC 3339");
    let sub_micro = t.nanosecond() % 1000;
    let mut t = t - time::Duration::nanoseconds(sub_micro.into());
    if ceil && sub_micro > 0 {
        t += time::Duration::microseconds(1);
    }
    let date = t.date();
    let clock = t.time();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second(),
        clock.microsecond()
    )
}

/// The README's config for this Airflow (its "Real receivers" section), pointed at this
/// instance and `dag`, with `timeoutSecs` added: the tests run what users copy.
fn readme_config(airflow: &Airflow, dag: &str, timeout_secs: u64) -> String {
    let readme = include_str!("../../../../README.md");
    let heading = match airflow.version {
        Version::Two => "### Apache Airflow 2",
        Version::Three => "### Apache Airflow 3",
    };
    let section = &readme[readme.find(heading).expect("the README has the section")..];
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has a YAML config");
    let config = block
        .replace("https://airflow.example.com", &airflow.origin())
        .replace("/dags/refresh_marts/", &format!("/dags/{dag}/"))
        .replace("Basic YWRtaW46c2VjcmV0", &airflow.basic_authorization())
        .replace("${AIRFLOW_PASSWORD}", &airflow.password)
        .replace(
            "    drain:\n",
            &format!("    timeoutSecs: {timeout_secs}\n    drain:\n"),
        );
    assert!(
        config.contains(&airflow.origin()) && config.contains("timeoutSecs"),
        "{config}"
    );
    config
}

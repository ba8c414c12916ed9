//! A real Apache Airflow on 127.0.0.1 for the receiver tests: Airflow 2's webserver with
//! the basic-auth API backend, or Airflow 3's api-server with its simple auth manager and
//! JWTs, each on a fresh SQLite database with the DAGs of `tests/airflow/dags`.
//!
//! `scripts/airflow` installs both into cached virtualenvs and `scripts/test` passes their
//! `airflow` programs in `TRIGGERS_AIRFLOW2` / `TRIGGERS_AIRFLOW3`. Without them a test
//! skips, unless `TRIGGERS_REQUIRE_AIRFLOW` is set (as in CI): then it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Longest an Airflow may take to set up its database and start answering.
const START_DEADLINE: Duration = Duration::from_secs(240);
/// Longest one `airflow` command (a migration, a DAG sync) may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);
/// The API user's name (the README's).
pub const USER: &str = "flow-triggers";

/// Which Airflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 2.10: `/api/v1`, HTTP Basic auth, gunicorn with one sync worker.
    Two,
    /// 3.1: `/api/v2`, a JWT from `POST /auth/token`, uvicorn.
    Three,
}

impl Version {
    fn env(self) -> &'static str {
        match self {
            Version::Two => "TRIGGERS_AIRFLOW2",
            Version::Three => "TRIGGERS_AIRFLOW3",
        }
    }
}

/// One Airflow at a time in a test binary: two starting and serving at once on 2 cores
/// starve each other's frozen-then-thawed workers, and each takes its port from
/// [`free_port`], which two at once could both be given.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running Airflow, killed (its whole process group) when dropped.
pub struct Airflow {
    /// Which one.
    pub version: Version,
    /// Where it listens.
    pub port: u16,
    /// The API user's password.
    pub password: String,
    home: tempfile::TempDir,
    server: std::process::Child,
    program: PathBuf,
    jwt_lifetime: Duration,
    client: reqwest::Client,
    /// Tokens this fixture fetched for itself (to list runs).
    own_tokens: std::sync::atomic::AtomicUsize,
    /// Held while this Airflow lives (dropped after the server is killed).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Airflow {
    /// Sets up and starts an Airflow of `version`, with JWTs that expire after
    /// `jwt_lifetime` (Airflow 3; no leeway). `None` if it is not installed and not
    /// required.
    pub async fn start(version: Version, jwt_lifetime: Duration) -> Option<Self> {
        let program = match std::env::var_os(version.env()) {
            Some(program) => PathBuf::from(program),
            None if std::env::var_os("TRIGGERS_REQUIRE_AIRFLOW").is_some() => panic!(
                "{} is not set but TRIGGERS_REQUIRE_AIRFLOW is: run the tests with scripts/test",
                version.env()
            ),
            None => {
                eprintln!(
                    "skipped: {} is not set (scripts/test installs Apache Airflow)",
                    version.env()
                );
                return None;
            }
        };
        // A test that panicked while holding the turn has already killed its Airflow.
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let home = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut airflow = Self {
            version,
            port,
            password,
            server: std::process::Command::new("true").spawn().expect("true"),
            home,
            program,
            jwt_lifetime,
            client: reqwest::Client::new(),
            own_tokens: Default::default(),
            _turn: turn,
        };
        let started = Instant::now();
        airflow.setup().await;
        airflow.server = airflow.serve();
        airflow.await_healthy().await;
        eprintln!(
            "Airflow {version:?} answers on 127.0.0.1:{port} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Some(airflow)
    }

    /// The environment every `airflow` command of this instance runs with.
    fn env(&self) -> Vec<(String, String)> {
        let home = self.home.path();
        let dags = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/airflow/dags");
        let mut env = vec![
            ("AIRFLOW_HOME", home.display().to_string()),
            ("AIRFLOW__CORE__DAGS_FOLDER", dags.display().to_string()),
            ("AIRFLOW__CORE__LOAD_EXAMPLES", "False".into()),
            (
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
                home.join("logs").display().to_string(),
            ),
        ];
        match self.version {
            Version::Two => env.extend([
                (
                    "AIRFLOW__API__AUTH_BACKENDS",
                    "airflow.api.auth.backend.basic_auth".to_string(),
                ),
                ("AIRFLOW__WEBSERVER__WORKERS", "1".into()),
                ("AIRFLOW__WEBSERVER__SECRET_KEY", self.password.clone()),
                // A frozen worker is not replaced while a test holds it.
                (
                    "AIRFLOW__WEBSERVER__WEB_SERVER_WORKER_TIMEOUT",
                    "600".into(),
                ),
            ]),
            Version::Three => env.extend([
                (
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                    format!("{USER}:admin"),
                ),
                (
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
                    home.join("passwords.json").display().to_string(),
                ),
                ("AIRFLOW__API_AUTH__JWT_SECRET", self.password.repeat(2)),
                (
                    "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME",
                    self.jwt_lifetime.as_secs().to_string(),
                ),
                ("AIRFLOW__API_AUTH__JWT_LEEWAY", "0".into()),
            ]),
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// A fresh database, the API user, and the DAGs synced into it (no scheduler runs, so
    /// triggered runs stay queued: all the tests read back).
    async fn setup(&mut self) {
        let env = self.env();
        self.run(&env, &["db", "migrate"]).await;
        match self.version {
            Version::Two => {
                let password = self.password.clone();
                self.run(
                    &env,
                    &[
                        "users",
                        "create",
                        "-u",
                        USER,
                        "-p",
                        &password,
                        "-r",
                        "Admin",
                        "-f",
                        "Test",
                        "-l",
                        "User",
                        "-e",
                        "admin@example.com",
                    ],
                )
                .await;
            }
            Version::Three => std::fs::write(
                self.home.path().join("passwords.json"),
                serde_json::json!({ USER: self.password }).to_string(),
            )
            .expect("passwords"),
        }
        self.run(&env, &["dags", "reserialize"]).await;
    }

    async fn run(&self, env: &[(String, String)], args: &[&str]) {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(COMMAND_DEADLINE, command.output())
            .await
            .unwrap_or_else(|_| panic!("airflow {args:?} took over {COMMAND_DEADLINE:?}"))
            .expect("airflow runs");
        assert!(
            output.status.success(),
            "airflow {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The server, in a process group of its own (so freezing and killing reach its
    /// workers), logging to `server.log`.
    fn serve(&self) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        let env = self.env();
        let port = self.port.to_string();
        let args: Vec<&str> = match self.version {
            Version::Two => vec!["webserver", "-H", "127.0.0.1", "-p", &port],
            Version::Three => vec!["api-server", "-H", "127.0.0.1", "-p", &port, "-w", "1"],
        };
        let log = std::fs::File::create(self.log_path()).expect("log");
        std::process::Command::new(&self.program)
            .args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("the Airflow server starts")
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn await_healthy(&mut self) {
        let health = match self.version {
            Version::Two => format!("{}/health", self.origin()),
            Version::Three => format!("{}/api/v2/monitor/health", self.origin()),
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                panic!("the Airflow server exited ({status}): {}", self.log());
            }
            let answer = self
                .client
                .get(&health)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Airflow did not answer within {START_DEADLINE:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The REST API's endpoint that triggers a run of `dag`.
    pub fn dag_runs_url(&self, dag: &str) -> String {
        match self.version {
            Version::Two => format!("{}/api/v1/dags/{dag}/dagRuns", self.origin()),
            Version::Three => format!("{}/api/v2/dags/{dag}/dagRuns", self.origin()),
        }
    }

    /// Airflow 3's token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/auth/token", self.origin())
    }

    /// `Basic …` for the API user (Airflow 2).
    pub fn basic_authorization(&self) -> String {
        use base64::Engine as _;
        let pair = format!("{USER}:{}", self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// Every run of `dag`, as Airflow's own API lists them.
    pub async fn dag_runs(&self, dag: &str) -> Vec<serde_json::Value> {
        let mut request = self
            .client
            .get(format!("{}?limit=100", self.dag_runs_url(dag)))
            .timeout(Duration::from_secs(30));
        request = match self.version {
            Version::Two => request.header("Authorization", self.basic_authorization()),
            Version::Three => request.bearer_auth(self.fetch_token().await),
        };
        let answer = request.send().await.expect("lists runs");
        assert!(
            answer.status().is_success(),
            "listing runs: {}",
            answer.status()
        );
        let body: serde_json::Value =
            serde_json::from_slice(&answer.bytes().await.expect("a body")).expect("JSON");
        let runs = body["dag_runs"].as_array().cloned().unwrap_or_default();
        assert!(runs.len() < 100, "more runs than one page");
        runs
    }

    /// Waits (at most `within`) until `dag` has at least `count` runs; returns them.
    pub async fn await_runs(
        &self,
        dag: &str,
        count: usize,
        within: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let runs = self.dag_runs(dag).await;
            if runs.len() >= count || Instant::now() >= deadline {
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A JWT for the API user (Airflow 3), as a test client gets one.
    async fn fetch_token(&self) -> String {
        let answer = self
            .client
            .post(self.token_url())
            .header("Content-Type", "application/json")
            .body(serde_json::json!({"username": USER, "password": self.password}).to_string())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("token");
        self.own_tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body: serde_json::Value =
            serde_json::from_slice(&answer.bytes().await.expect("a body")).expect("token JSON");
        body["access_token"].as_str().expect("a token").to_string()
    }

    /// How many tokens the server has issued so far to others than this fixture (from its
    /// access log).
    pub fn tokens_issued(&self) -> usize {
        let issued = self
            .log()
            .lines()
            .filter(|line| line.contains("POST /auth/token") && line.contains(" 201"))
            .count();
        issued.saturating_sub(self.own_tokens.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Freezes every process of the server (SIGSTOP): connections still complete in the
    /// kernel and requests wait unread, as with a server stuck mid-request.
    pub fn freeze(&self) {
        signal_group(self.server.id(), "-STOP");
    }

    /// Lets a frozen server go on (SIGCONT): it then reads and answers what waited.
    pub fn thaw(&self) {
        signal_group(self.server.id(), "-CONT");
    }

    /// Waits (at most `within`) until a request has reached the server's host and waits
    /// unread on one of its connections: bytes queued on a socket whose local port is the
    /// server's (`/proc/net/tcp`), their count unchanged for 300 ms (a client writes its
    /// headers and body within microseconds, so the request is whole). True if one did.
    pub async fn await_unread_request(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut seen = (0, Instant::now());
        while Instant::now() < deadline {
            let unread = unread_bytes(self.port);
            if unread != seen.0 {
                seen = (unread, Instant::now());
            } else if unread > 0 && seen.1.elapsed() >= Duration::from_millis(300) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Airflow {
    fn drop(&mut self) {
        signal_group(self.server.id(), "-CONT");
        signal_group(self.server.id(), "-KILL");
        let _ = self.server.wait();
    }
}

/// Sends `signal` to the process group `pgid` leads.
fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .status();
}

/// A port nothing listens on now (the kernel's next ephemeral one).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("address").port()
}

/// Bytes received and not yet read on connections (not listeners) whose local port is
/// `port`, per `/proc/net/tcp`.
fn unread_bytes(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
            // 0A is LISTEN: its rx_queue counts connections waiting to be accepted.
            if !local.ends_with(&suffix) || *state == "0A" {
                return None;
            }
            u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
        })
        .sum()
}

//! `triggers`: the operator's tool for trigger configs (schema, validate, encrypt,
//! preview, test-fire), locally or through a running sidecar.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use triggers::{
    AgeRecipient, Deliverer, PreviewVariables, RetryBackoff, SopsError, Triggers, ValidationErrors,
    config_schema, encrypt_config, is_sops_encrypted, load_config, validate_without_keys,
};
use triggers_proto::sidecar::{AttemptOutcome, PreviewRequest, TestFireRequest};
use triggers_sidecar as sidecar;
use triggers_sidecar::args::{
    NetworkArgs, TokenArgs, config_format, identities_for, init_tracing_at, load_triggers_with,
    read_config_text,
};

use triggers_sidecar::Client;

/// Checks and tries out trigger configs.
///
///   triggers schema                                  the config's JSON Schema
///   triggers validate --config triggers.yaml         every error, exit 1 if invalid
///   triggers encrypt --config triggers.yaml --recipient age1...
///   triggers preview --config triggers.yaml          each trigger's payload, unsent
///   triggers test-fire --config triggers.yaml --trigger 0
///   triggers deliveries list --sidecar unix:/run/shard.sock --state failed
///   triggers deliveries skip --store /var/lib/shard onCommit 42 --reason "ticket 7"
///
/// A config file is JSON if its name ends in `.json`, YAML otherwise; a SOPS-encrypted
/// one needs `--identity` (an age keys file), $SOPS_AGE_KEY_FILE or $SOPS_AGE_KEY.
/// Preview and test-fire can also ask a running shard-sidecar (`--sidecar ADDRESS`,
/// with `--token-file` or $TRIGGERS_SIDECAR_TOKEN for one on TCP), which uses its own
/// config and network policy. Nothing prints header values or signing secrets.
#[derive(Debug, Parser)]
#[command(name = "triggers", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the config's JSON Schema (for form editors and linters).
    Schema,
    /// Validate a config as a control plane does at publish time: print every error
    /// (naming the trigger, and the line, column and variable of template errors) and
    /// exit with status 1 if there is any. A SOPS-encrypted config given no identity is
    /// validated without keys: everything in clear (templates, bounds) is checked, the
    /// encrypted url, header values and signing secrets are not.
    Validate {
        #[command(flatten)]
        config: ConfigArgs,
        /// The source collection of each binding of the materialization, in binding
        /// order; repeat once per binding. Given, every trigger's `collections` entry must
        /// match one of them (checked only when the config is decrypted or plaintext).
        #[arg(long = "binding", value_name = "COLLECTION")]
        bindings: Vec<String>,
    },
    /// Print the config SOPS-encrypted for age recipients: each trigger's url (which may
    /// carry a password, a token or a secret path), header values and signing secrets
    /// become ENC[...] values; templates and every other setting stay readable. The output has the
    /// input's format and decrypts with `sops` or `--identity`.
    Encrypt {
        /// Plaintext trigger config file (`.json`, or YAML otherwise).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// An age public key (age1...) that may decrypt the config; repeat for several.
        #[arg(long = "recipient", value_name = "AGE_PUBLIC_KEY", required = true)]
        recipients: Vec<String>,
    },
    /// Print each trigger's payload (or one trigger's) as it would be sent, without
    /// sending it: pretty-printed JSON on stdout, one document per trigger, each
    /// trigger's name and webhook-id on stderr.
    Preview {
        #[command(flatten)]
        source: SourceArgs,
        /// Only this trigger: its name, or its 0-based position in the config when a
        /// number. Required with --sidecar.
        #[arg(long, value_name = "NAME|N")]
        trigger: Option<TriggerArg>,
        #[command(flatten)]
        variables: VariablesArgs,
    },
    /// Send one test webhook of one trigger now (one attempt, no retries, header
    /// `webhook-reason: test-fire`) and print its status, what delivery would make of it
    /// (the trigger's `responses` policy), latency and the start of the response body.
    /// Exits with status 1 unless delivery would count the answer as delivered: 2xx, or
    /// "already delivered" (a repeated test with the same given `flow_run_id`, say).
    TestFire {
        #[command(flatten)]
        source: SourceArgs,
        /// The trigger: its name, or its 0-based position in the config when a number.
        #[arg(long, value_name = "NAME|N")]
        trigger: TriggerArg,
        #[command(flatten)]
        variables: VariablesArgs,
        /// Where the webhook may go (local mode; a sidecar applies its own policy).
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// A shard's delivery ledger: list, show, retry, skip, replay. Against a running
    /// sidecar (--sidecar), or a stopped shard's store (--store: refused while a process
    /// holds it; what becomes PENDING is sent when the shard next opens). Prints a table
    /// (--json for scripts). Exit status: 0 done, 1 refused (no such delivery, a state
    /// that does not allow it, an invalid request), 2 usage, 3 the sidecar or the store
    /// cannot be reached (or another process holds the store).
    Deliveries {
        #[command(subcommand)]
        action: DeliveriesAction,
        #[command(flatten)]
        target: DeliveriesTarget,
        /// JSON on stdout instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
}

/// What `deliveries` does.
#[derive(Debug, Subcommand)]
enum DeliveriesAction {
    /// Deliveries, newest first (by first commit sequence number).
    List {
        /// Only deliveries in this state.
        #[arg(long, value_enum)]
        state: Option<sidecar::deliveries::StateFilter>,
        /// Only deliveries of the trigger with this name.
        #[arg(long, value_name = "NAME")]
        trigger: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
        limit: u16,
        /// Go on after a previous list (its `next page:` token).
        #[arg(long, value_name = "TOKEN", default_value = "")]
        page_token: String,
    },
    /// One delivery, with its attempts.
    Show {
        /// The trigger's name.
        trigger: String,
        /// The first commit sequence number the delivery covers.
        first_commit_seq: u64,
    },
    /// Send a FAILED delivery (or a dead letter) again, as `operator-replay`.
    Retry {
        /// The trigger's name.
        trigger: String,
        /// The first commit sequence number the delivery covers.
        first_commit_seq: u64,
    },
    /// Give up on a PENDING or FAILED delivery for good, with a reason for the record.
    Skip {
        /// The trigger's name.
        trigger: String,
        /// The first commit sequence number the delivery covers.
        first_commit_seq: u64,
        /// Why (required; at most 1000 characters are kept).
        #[arg(long)]
        reason: String,
    },
    /// Send delivered webhooks of a trigger again (as `operator-replay`, with their
    /// webhook-id): those whose commits lie in --commits FIRST..LAST, or that committed
    /// between --since and --until (RFC 3339). At most 1000 at once.
    Replay {
        /// The trigger's name.
        trigger: String,
        /// Commit sequence numbers, `FIRST..LAST` (inclusive) or one number.
        #[arg(long, value_name = "FIRST..LAST", conflicts_with_all = ["since", "until"], required_unless_present = "since")]
        commits: Option<String>,
        /// The earliest commit time (RFC 3339, e.g. 2026-12-01T08:00:00Z).
        #[arg(long, value_name = "TIME", requires = "until")]
        since: Option<String>,
        /// The latest commit time (RFC 3339).
        #[arg(long, value_name = "TIME", requires = "since")]
        until: Option<String>,
    },
}

/// Where `deliveries` acts.
#[derive(Debug, Args)]
struct DeliveriesTarget {
    /// The running shard-sidecar (http://127.0.0.1:PORT or unix:/path).
    #[arg(long, value_name = "ADDRESS", global = true, conflicts_with = "store")]
    sidecar: Option<String>,
    /// With --sidecar: the shard (a Gazette shard id); the default shard if not given.
    #[arg(
        long,
        value_name = "ID",
        global = true,
        default_value = "",
        requires = "sidecar"
    )]
    shard: String,
    /// A stopped shard's store directory.
    #[arg(long, value_name = "DIR", global = true)]
    store: Option<PathBuf>,
    /// With --sidecar on TCP: a file holding the bearer token (else
    /// $TRIGGERS_SIDECAR_TOKEN, if set).
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
}

/// A config file, maybe SOPS-encrypted.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// Trigger config file (`.json`, or YAML otherwise), plaintext or SOPS-encrypted.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// age keys file (as age-keygen writes it) to decrypt a SOPS-encrypted config;
    /// repeat for several.
    #[arg(long = "identity", value_name = "AGE_KEYS_FILE")]
    identities: Vec<PathBuf>,
}

/// Where the triggers come from: a config file, or a running sidecar's config.
#[derive(Debug, Args)]
struct SourceArgs {
    /// Trigger config file (`.json`, or YAML otherwise), plaintext or SOPS-encrypted.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "sidecar",
        conflicts_with = "sidecar"
    )]
    config: Option<PathBuf>,
    /// Ask the shard-sidecar at this address (http://127.0.0.1:PORT or unix:/path)
    /// instead, with its config and network policy.
    #[arg(long, value_name = "ADDRESS", requires = "trigger")]
    sidecar: Option<String>,
    /// With --sidecar: the bearer token to send.
    #[command(flatten)]
    token: TokenArgs,
    /// age keys file to decrypt a SOPS-encrypted config; repeat for several.
    #[arg(long = "identity", value_name = "AGE_KEYS_FILE", requires = "config")]
    identities: Vec<PathBuf>,
}

/// The variables to render with.
#[derive(Debug, Args)]
struct VariablesArgs {
    /// Variable values as a JSON object (or @FILE holding one), overriding the
    /// placeholders field by field, e.g. '{"collection_names": ["acmeCo/orders"]}'.
    /// Unknown names are an error listing the variables.
    #[arg(long, value_name = "JSON_OR_@FILE")]
    variables: Option<String>,
}

impl VariablesArgs {
    /// The JSON text given, read from the file for `@FILE`.
    fn text(&self) -> anyhow::Result<Option<String>> {
        match self.variables.as_deref() {
            None => Ok(None),
            Some(arg) => match arg.strip_prefix('@') {
                // Variables are no bigger than a config could make them.
                Some(path) => triggers_sidecar::args::read_bounded(
                    std::path::Path::new(path),
                    triggers::MAX_CONFIG_BYTES,
                )
                .with_context(|| format!("reading variables file {path}"))
                .map(Some),
                None => Ok(Some(arg.to_string())),
            },
        }
    }

    fn parse(&self) -> anyhow::Result<PreviewVariables> {
        match self.text()? {
            None => Ok(PreviewVariables::placeholder()),
            Some(text) => Ok(PreviewVariables::from_json(&text)?),
        }
    }
}

impl SourceArgs {
    fn triggers(&self) -> anyhow::Result<Triggers> {
        let path = self
            .config
            .as_deref()
            .context("give --config or --sidecar")?;
        load_triggers_with(path, &self.identities)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing_at("warn");
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            // One line, causes included; no backtrace: this is for operators.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&config_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config, bindings } => validate(&config, &bindings),
        Command::Encrypt { config, recipients } => {
            let recipients = recipients
                .iter()
                .map(|r| AgeRecipient::parse(r).with_context(|| format!("--recipient {r}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let text = read_config_text(&config)?;
            let encrypted = encrypt_config(&text, config_format(&config), &recipients)
                .with_context(|| format!("encrypting {}", config.display()))?;
            print!("{encrypted}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Preview {
            source,
            trigger,
            variables,
        } => preview(&source, trigger, &variables).await,
        Command::TestFire {
            source,
            trigger,
            variables,
            network,
        } => test_fire(&source, trigger, &variables, &network).await,
        Command::Deliveries {
            action,
            target,
            json,
        } => deliveries(action, target, json).await,
    }
}

/// `deliveries`: the exit status says how it went (see its help).
async fn deliveries(
    action: DeliveriesAction,
    target: DeliveriesTarget,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sidecar::deliveries::{self as ledger, DeliveriesError, Filter, Target};
    let mut target = match (&target.sidecar, &target.store) {
        (Some(address), _) => {
            let token = TokenArgs {
                token_file: target.token_file.clone(),
            }
            .token()?;
            match sidecar::connect(address, token.as_ref()).await {
                Ok(client) => Target::Sidecar {
                    client: Box::new(client),
                    shard: target.shard.clone(),
                },
                Err(err) => {
                    eprintln!("error: cannot reach the sidecar at {address}: {err}");
                    return Ok(ExitCode::from(3));
                }
            }
        }
        (None, Some(dir)) => Target::Store(dir.clone()),
        (None, None) => {
            eprintln!(
                "error: give --sidecar ADDRESS (a running shard) or --store DIR (a stopped one)"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let print_one = |record: &triggers_proto::DeliveryRecord| {
        if json {
            println!("{}", ledger::record_json(record));
        } else {
            print!("{}", ledger::detail(record));
        }
    };
    let done: Result<(), DeliveriesError> = async {
        match action {
            DeliveriesAction::List {
                state,
                trigger,
                limit,
                page_token,
            } => {
                let filter = Filter { state, trigger };
                let listed =
                    ledger::list(&mut target, &filter, usize::from(limit), &page_token).await?;
                if json {
                    let records: Vec<_> =
                        listed.deliveries.iter().map(ledger::record_json).collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "deliveries": records,
                            "next_page_token": listed.next_page_token,
                        })
                    );
                } else {
                    print!("{}", ledger::table(&listed.deliveries));
                    if !listed.next_page_token.is_empty() {
                        println!("next page: --page-token '{}'", listed.next_page_token);
                    }
                }
            }
            DeliveriesAction::Show {
                trigger,
                first_commit_seq,
            } => print_one(&ledger::show(&mut target, &trigger, first_commit_seq).await?),
            DeliveriesAction::Retry {
                trigger,
                first_commit_seq,
            } => print_one(&ledger::retry(&mut target, &trigger, first_commit_seq).await?),
            DeliveriesAction::Skip {
                trigger,
                first_commit_seq,
                reason,
            } => print_one(&ledger::skip(&mut target, &trigger, first_commit_seq, &reason).await?),
            DeliveriesAction::Replay {
                trigger,
                commits,
                since,
                until,
            } => {
                let range = replay_range(commits.as_deref(), since.as_deref(), until.as_deref())
                    .map_err(|err| DeliveriesError::Refused(format!("{err:#}")))?;
                let replayed = ledger::replay(&mut target, &trigger, range).await?;
                if json {
                    let records: Vec<_> = replayed.iter().map(ledger::record_json).collect();
                    println!("{}", serde_json::json!({ "replayed": records }));
                } else {
                    println!("{} delivery(ies) to be sent again:", replayed.len());
                    print!("{}", ledger::table(&replayed));
                }
            }
        }
        Ok(())
    }
    .await;
    match done {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(err.exit_code()))
        }
    }
}

/// A replay's range from `--commits FIRST..LAST` (or one number), or `--since`/`--until`.
fn replay_range(
    commits: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> anyhow::Result<triggers_runtime::ReplayRange> {
    use triggers_runtime::ReplayRange;
    if let Some(commits) = commits {
        let number = |text: &str| {
            text.trim().parse::<u64>().with_context(|| {
                format!("--commits {commits:?}: {text:?} is not a commit sequence number")
            })
        };
        let (first, last) = match commits.split_once("..") {
            Some((first, last)) => (number(first)?, number(last.trim_start_matches('='))?),
            None => {
                let one = number(commits)?;
                (one, one)
            }
        };
        return Ok(ReplayRange::Commits { first, last });
    }
    let time = |flag: &str, text: Option<&str>| -> anyhow::Result<std::time::SystemTime> {
        let text = text.with_context(|| format!("--{flag} is required"))?;
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--{flag} {text:?} is not an RFC 3339 time"))?;
        Ok(std::time::SystemTime::from(at))
    };
    Ok(ReplayRange::CommittedBetween {
        from: time("since", since)?,
        to: time("until", until)?,
    })
}

fn validate(args: &ConfigArgs, bindings: &[String]) -> anyhow::Result<ExitCode> {
    let path = args.config.display();
    let text = read_config_text(&args.config)?;
    let format = config_format(&args.config);
    let identities = identities_for(&text, format, &args.identities)?;
    if identities.is_empty() && is_sops_encrypted(&text, format) {
        // As a control plane does: everything in clear is checked, the encrypted values
        // are not (the runtime that decrypts checks them at start).
        return Ok(report(
            &path.to_string(),
            validate_without_keys(&text, format),
            " without keys (encrypted url, method, headers, signingSecrets, followRedirects and auth not checked)",
        ));
    }
    let checked = match load_config(&text, format, &identities) {
        Ok(config) => Triggers::from_config(&config).and_then(|triggers| {
            if !bindings.is_empty() {
                triggers::validate_collections(&triggers, bindings)?;
            }
            Ok(triggers.len())
        }),
        // A document that does not parse is invalid, not a failure of the tool.
        Err(SopsError::Parse(err)) => Err(ValidationErrors(vec![err.into()])),
        Err(err) => return Err(err).with_context(|| format!("trigger config {path}")),
    };
    Ok(report(&path.to_string(), checked, ""))
}

/// Prints a validation's outcome; exit status 1 if invalid.
fn report(path: &str, checked: Result<usize, ValidationErrors>, how: &str) -> ExitCode {
    match checked {
        Ok(triggers) => {
            println!("{path}: valid{how}, {triggers} trigger(s)");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            println!("{path}: invalid{how}, {} error(s):", errors.0.len());
            for err in &errors.0 {
                println!("  - {err}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What `--trigger` says: a trigger's name, or (a number) its position in the config.
#[derive(Debug, Clone)]
enum TriggerArg {
    Position(usize),
    Name(String),
}

impl std::str::FromStr for TriggerArg {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.parse() {
            Ok(position) => TriggerArg::Position(position),
            Err(_) => TriggerArg::Name(text.to_string()),
        })
    }
}

impl std::fmt::Display for TriggerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TriggerArg::Position(position) => write!(f, "{position}"),
            TriggerArg::Name(name) => f.write_str(name),
        }
    }
}

impl TriggerArg {
    /// The position in `triggers` it names; an unknown name is an error listing the
    /// names there are (a position past the end is the library's own error).
    fn resolve(&self, triggers: &Triggers) -> anyhow::Result<usize> {
        match self {
            TriggerArg::Position(position) => Ok(*position),
            TriggerArg::Name(name) => triggers.position(name).with_context(|| {
                let names: Vec<&str> = triggers.iter().map(|t| t.name()).collect();
                format!(
                    "--trigger {name:?}: the config has no trigger of that name; it has {names:?}"
                )
            }),
        }
    }

    /// The (position, name) fields of a request to a sidecar, which resolves them.
    fn wire(&self) -> anyhow::Result<(u32, String)> {
        match self {
            TriggerArg::Position(position) => Ok((wire_index(*position)?, String::new())),
            TriggerArg::Name(name) => Ok((0, name.clone())),
        }
    }
}

async fn preview(
    source: &SourceArgs,
    trigger: Option<TriggerArg>,
    variables: &VariablesArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(address) = &source.sidecar {
        let trigger = trigger.context("--sidecar needs --trigger")?;
        let (position, trigger_name) = trigger.wire()?;
        let mut client = connect(address, &source.token).await?;
        let response = client
            .preview(PreviewRequest {
                trigger: position,
                variables: variables.text()?,
                trigger_name,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        eprintln!(
            "trigger {trigger} ({}), webhook-id {}",
            response.origin, response.webhook_id
        );
        if !response.authorization.is_empty() {
            eprintln!("Authorization: {}", response.authorization);
        }
        println!("{}", response.payload);
        return Ok(ExitCode::SUCCESS);
    }
    let triggers = source.triggers()?;
    let given = variables.parse()?;
    let indices = match trigger {
        Some(trigger) => {
            let index = trigger.resolve(&triggers)?;
            index..index.saturating_add(1)
        }
        None => 0..triggers.len(),
    };
    for index in indices {
        let preview = triggers.preview(index, &given)?;
        eprintln!("{}, webhook-id {}", preview.trigger, preview.webhook_id);
        if let Some(authorization) = &preview.authorization {
            eprintln!("Authorization: {authorization}");
        }
        println!("{}", preview.payload);
    }
    Ok(ExitCode::SUCCESS)
}

async fn test_fire(
    source: &SourceArgs,
    trigger: TriggerArg,
    variables: &VariablesArgs,
    network: &NetworkArgs,
) -> anyhow::Result<ExitCode> {
    let fired = match &source.sidecar {
        Some(_) if network.allow_loopback || network.allow_private_networks => {
            anyhow::bail!(
                "--allow-loopback and --allow-private-networks are for --config: \
                 a sidecar applies its own network policy"
            )
        }
        Some(address) => {
            let (position, trigger_name) = trigger.wire()?;
            let mut client = connect(address, &source.token).await?;
            let r = client
                .test_fire(TestFireRequest {
                    trigger: position,
                    variables: variables.text()?,
                    trigger_name,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let outcome = r.outcome();
            Fired {
                trigger: format!("trigger {trigger} ({})", r.origin),
                webhook_id: r.webhook_id,
                status: (r.status != 0).then_some(r.status),
                latency_ms: r.latency_ms,
                body: r.body_excerpt,
                error: r.error,
                accepted: r.accepted,
                outcome,
            }
        }
        None => {
            let triggers = source.triggers()?;
            let deliverer = Deliverer::with_policy(RetryBackoff::default(), network.policy())?;
            let index = trigger.resolve(&triggers)?;
            let r = deliverer
                .test_fire(&triggers, index, &variables.parse()?)
                .await?;
            let accepted = r.accepted();
            Fired {
                trigger: r.trigger.to_string(),
                webhook_id: r.webhook_id,
                status: r.status.map(u32::from),
                latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
                body: r.body_excerpt,
                accepted,
                outcome: triggers_sidecar::wire::attempt_outcome(r.outcome),
                error: r.error.map(|e| e.to_string()).unwrap_or_default(),
            }
        }
    };
    fired.print();
    Ok(if fired.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A test-fire's report, from the library or from a sidecar.
struct Fired {
    trigger: String,
    webhook_id: String,
    status: Option<u32>,
    latency_ms: u64,
    body: String,
    error: String,
    /// Delivery would count the answer as delivered (2xx or already delivered).
    accepted: bool,
    /// What delivery would make of it.
    outcome: AttemptOutcome,
}

impl Fired {
    fn accepted(&self) -> bool {
        self.accepted
    }

    fn print(&self) {
        println!("{}", self.trigger);
        println!("webhook-id: {}", self.webhook_id);
        match self.status {
            Some(status) if self.outcome == AttemptOutcome::AlreadyDelivered => {
                println!("status: {status}: already delivered (the receiver has this webhook)")
            }
            Some(status) => println!("status: {status}"),
            None => println!("status: no answer: {}", self.error),
        }
        let outcome = match self.outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::AlreadyDelivered => "already delivered",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::Permanent => "permanent",
            AttemptOutcome::Unspecified => "unknown (the sidecar did not say)",
        };
        println!("outcome: {outcome}");
        if self.status.is_some() && !self.error.is_empty() {
            println!("error: {}", self.error);
        }
        println!("latency: {} ms", self.latency_ms);
        if self.status.is_some() {
            println!("body: {}", self.body);
        }
    }
}

async fn connect(address: &str, token: &TokenArgs) -> anyhow::Result<Client> {
    sidecar::connect(address, token.token()?.as_ref())
        .await
        .with_context(|| format!("connecting to the sidecar at {address}"))
}

/// The sidecar's message (it names the trigger and what is wrong), not tonic's framing.
fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("sidecar: {}", status.message())
}

fn wire_index(trigger: usize) -> anyhow::Result<u32> {
    u32::try_from(trigger).with_context(|| format!("--trigger {trigger} is out of range"))
}

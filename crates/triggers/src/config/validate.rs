//! Publish-time validation: a config document in, the compiled [`Triggers`] out, or every
//! problem of the document at once.

use crate::config::collections::{Bindings, CollectionFilter};
use crate::config::document::{
    ConfigFormat, HttpMethod, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS,
    MAX_MAX_ATTEMPTS, MAX_MAX_RETRIES, MAX_RETRY_BUDGET_SECS, MAX_SIGNING_SECRETS,
    MAX_TIMEOUT_SECS, MAX_TRIGGER_NAME_BYTES, MAX_TRIGGERS, MIN_MAX_ATTEMPTS,
    MIN_RETRY_BUDGET_SECS, MIN_TIMEOUT_SECS, ParseError, TriggerConfig, TriggersConfig, shown_name,
};
use crate::config::duration::{DurationError, display as display_duration};
use crate::config::responses::{ResponsePolicy, check_responses};
use crate::render::template::{TemplateError, Templates};
use crate::render::variables::Variables;
use crate::send::signing::{SigningKey, SigningSecretError};
use crate::send::webhook_headers::DELIVERER_HEADERS;
use crate::{Drain, DrainConfig, MAX_MAX_IN_FLIGHT, MAX_MIN_INTERVAL_SECS, OnFailure};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;
use std::time::Duration;
use url::Url;

/// The validated, compiled triggers of one materialization: what delivery runs.
///
/// Built only by [`validate`] or [`Triggers::from_config`], so every URL, header, bound
/// and template in it has been checked, and every template trial-rendered to JSON.
pub struct Triggers {
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) templates: Templates,
}

/// One validated webhook.
pub struct Trigger {
    pub(crate) label: TriggerLabel,
    pub(crate) url: Url,
    pub(crate) method: reqwest::Method,
    /// Values are marked sensitive, so even `HeaderMap`'s own Debug hides them.
    pub(crate) headers: HeaderMap,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_budget: Duration,
    /// Decoded `signingSecrets`, in config order.
    pub(crate) signing_keys: Vec<SigningKey>,
    pub(crate) follow_redirects: bool,
    pub(crate) drain: Drain,
    /// Where its bearer token comes from, with the token's cache (memory only).
    pub(crate) auth: Option<std::sync::Arc<crate::send::token_auth::TokenAuth>>,
    /// What its `responses` make of a receiver's answers.
    pub(crate) responses: ResponsePolicy,
    /// The collections it fires for; `None` for every one.
    pub(crate) collections: Option<CollectionFilter>,
    /// What a webhook that fails for good does to its backlog.
    pub(crate) on_failure: OnFailure,
}

/// How errors and logs name a trigger: its name and its URL's origin
/// (`trigger onCommit (https://hooks.example.com)`), and its index.
///
/// Only the scheme, host and port are shown. User info and query strings often carry
/// credentials, and some services (Slack, Discord) put the secret in the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerLabel {
    /// Position of the trigger in the compiled config (a map's triggers are in name order).
    pub index: usize,
    /// Its name: the map key, a list entry's `name`, else its index (`0`, `1`, ...).
    /// Also the index while the name given is invalid.
    pub name: String,
    /// `scheme://host[:port]` of its URL, or `<invalid url>`.
    pub origin: String,
}

impl std::fmt::Display for TriggerLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trigger {} ({})", self.name, self.origin)
    }
}

impl TriggerLabel {
    /// The label of a trigger named by its index.
    pub fn new(index: usize, raw_url: &str) -> Self {
        Self::named(index, index.to_string(), raw_url)
    }

    /// The label of a trigger with a name.
    pub fn named(index: usize, name: String, raw_url: &str) -> Self {
        Self {
            index,
            name,
            origin: crate::config::document::url_origin(raw_url),
        }
    }
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("label", &self.label)
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_budget", &self.retry_budget)
            .field("signing_keys", &self.signing_keys.len())
            .field("follow_redirects", &self.follow_redirects)
            .field("drain", &self.drain)
            .field("auth", &self.auth)
            .field("responses", &self.responses)
            .field("on_failure", &self.on_failure)
            .field(
                "collections",
                &self.collections.as_ref().map(CollectionFilter::entries),
            )
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.triggers).finish()
    }
}

/// One problem of a config. Each names the trigger it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The document does not have the shape of a trigger config.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// More triggers than [`MAX_TRIGGERS`]; none of them was checked.
    #[error("trigger config has {count} triggers, but at most {max} are allowed")]
    TooManyTriggers {
        /// How many there are.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// More headers than [`MAX_HEADERS`]; none of them was checked.
    #[error("{trigger}: `headers` has {count} headers, but at most {max} are allowed")]
    TooManyHeaders {
        /// The trigger.
        trigger: TriggerLabel,
        /// How many there are.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A header name longer than [`MAX_HEADER_NAME_BYTES`], or a value longer than
    /// [`MAX_HEADER_VALUE_BYTES`]. The value is a secret and is not shown.
    #[error(
        "{trigger}: the {part} of header {name:?} is {bytes} bytes, but at most {max} are allowed"
    )]
    HeaderTooLong {
        /// The trigger.
        trigger: TriggerLabel,
        /// The header name, cut to its first 64 characters.
        name: String,
        /// `name` or `value`.
        part: &'static str,
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The URL is not an absolute http(s) URL.
    #[error("{trigger}: `url` is invalid: {reason}")]
    InvalidUrl {
        /// The trigger.
        trigger: TriggerLabel,
        /// What is wrong with it (never the URL itself).
        reason: String,
    },
    /// A header name is not a valid HTTP header name, or is one the client sets itself.
    #[error("{trigger}: header name {name:?} is not allowed: {reason}")]
    InvalidHeaderName {
        /// The trigger.
        trigger: TriggerLabel,
        /// The header name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A header value contains characters HTTP forbids (control characters, newlines).
    /// The value is a secret and is not shown.
    #[error(
        "{trigger}: the value of header {name:?} contains characters not allowed in HTTP headers"
    )]
    InvalidHeaderValue {
        /// The trigger.
        trigger: TriggerLabel,
        /// The header name.
        name: String,
    },
    /// A setting given in both spellings: ours and Flow's.
    #[error("{trigger}: `{field}` and `{other}` are both given; give one ({hint})")]
    BothGiven {
        /// The trigger.
        trigger: TriggerLabel,
        /// Flow's spelling (`timeout`, `maxAttempts`).
        field: &'static str,
        /// Ours (`timeoutSecs`, `maxRetries`).
        other: &'static str,
        /// How the two differ.
        hint: &'static str,
    },
    /// A trigger's duration (`timeout`) that cannot be read or is out of bounds.
    #[error("{trigger}: `{field}` is {source}")]
    InvalidDuration {
        /// The trigger.
        trigger: TriggerLabel,
        /// The field, as written in the config.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: DurationError,
    },
    /// The config's `interval` cannot be read or is out of bounds.
    #[error("`interval` is {source}")]
    InvalidInterval {
        /// What is wrong with it.
        #[source]
        source: DurationError,
    },
    /// An `interval` beside a trigger's `drain` that sends every transaction.
    #[error(
        "{trigger}: `drain.mode` is {mode}, which sends a webhook per transaction, but \
         `interval` asks for at most one per {interval}; use `mode: coalesced` or remove `interval`"
    )]
    IntervalWithDrain {
        /// The trigger.
        trigger: TriggerLabel,
        /// Its drain mode: `ordered` or `concurrent`.
        mode: &'static str,
        /// The interval, as the grammar writes it.
        interval: String,
    },
    /// A trigger name (a list entry's `name`, or a map key) outside the name rules.
    #[error("{trigger}: the name {name:?} is not allowed: {reason}")]
    InvalidName {
        /// The trigger, labelled by its index.
        trigger: TriggerLabel,
        /// The name, cut to its first 64 characters.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// Two triggers with one name (a default name, the index, counts).
    #[error("{trigger}: the name {name:?} is also trigger {first}'s; trigger names must be unique")]
    DuplicateName {
        /// The later trigger.
        trigger: TriggerLabel,
        /// The name.
        name: String,
        /// Index of the first trigger with it.
        first: usize,
    },
    /// A numeric field is outside its documented bounds.
    #[error("{trigger}: `{field}` is {value}, but must be between {min} and {max}")]
    OutOfBounds {
        /// The trigger.
        trigger: TriggerLabel,
        /// The field, as written in the config.
        field: &'static str,
        /// The value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A signing secret is not a Standard Webhooks secret. The secret is not shown.
    #[error("{trigger}: `signingSecrets[{position}]` is invalid: {reason}")]
    InvalidSigningSecret {
        /// The trigger.
        trigger: TriggerLabel,
        /// 0-based position of the secret in `signingSecrets`.
        position: usize,
        /// What is wrong with it.
        reason: SigningSecretError,
    },
    /// More signing secrets than [`MAX_SIGNING_SECRETS`].
    #[error("{trigger}: `signingSecrets` has {count} secrets, but at most {max} are allowed")]
    TooManySigningSecrets {
        /// The trigger.
        trigger: TriggerLabel,
        /// How many there are.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// The payload template does not compile or does not render.
    #[error("{trigger}: `payloadTemplate`: {source}")]
    Template {
        /// The trigger.
        trigger: TriggerLabel,
        /// What is wrong, with line and column in the template.
        #[source]
        source: TemplateError,
    },
    /// The template renders, but not to JSON.
    #[error(
        "{trigger}: `payloadTemplate` does not render to valid JSON \
         (with placeholder variables, at line {line}, column {column} of the output: {message}); \
         use {{{{json variable}}}} to insert a value as a JSON string or array"
    )]
    NotJson {
        /// The trigger.
        trigger: TriggerLabel,
        /// 1-based line in the rendered output.
        line: usize,
        /// 1-based column in the rendered output.
        column: usize,
        /// What the JSON parser found.
        message: String,
    },
    /// An `auth` field is invalid, or something else of the trigger would also set
    /// `Authorization`. Never shows a value.
    #[error("{trigger}: `{field}` is invalid: {reason}")]
    InvalidAuth {
        /// The trigger.
        trigger: TriggerLabel,
        /// The field, as written in the config (`auth.tokenUrl`, `headers`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A list under `responses` has more than [`crate::MAX_RESPONSE_STATUSES`]
    /// statuses; none of them was checked.
    #[error("{trigger}: `responses.{field}` has {count} statuses, but at most {max} are allowed")]
    TooManyStatuses {
        /// The trigger.
        trigger: TriggerLabel,
        /// The list, as written in the config: `alreadyDelivered` or `retry`.
        field: &'static str,
        /// How many there are.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// `collections: []`: the trigger could never fire.
    #[error(
        "{trigger}: `collections` is empty, so the trigger could never fire; leave it out \
         to fire for every collection"
    )]
    EmptyCollections {
        /// The trigger.
        trigger: TriggerLabel,
    },
    /// More `collections` entries than [`crate::MAX_COLLECTIONS`]; none was checked.
    #[error("{trigger}: `collections` has {count} entries, but at most {max} are allowed")]
    TooManyCollections {
        /// The trigger.
        trigger: TriggerLabel,
        /// How many there are.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A `collections` entry that is empty, longer than [`crate::MAX_COLLECTION_BYTES`],
    /// or listed twice.
    #[error("{trigger}: `collections[{position}]` ({entry:?}) is not allowed: {reason}")]
    InvalidCollection {
        /// The trigger.
        trigger: TriggerLabel,
        /// 0-based position of the entry in `collections`.
        position: usize,
        /// The entry, cut to its first 64 characters.
        entry: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A `collections` entry that matches none of the materialization's bindings (see
    /// [`validate_collections`]): the trigger would never fire for it.
    #[error(
        "{trigger}: `collections[{position}]` is {entry:?}, which {} none of the \
         materialization's binding collections: {}",
        if entry.ends_with('/') { "is a prefix of" } else { "is" },
        listed_bindings(bindings, *binding_count)
    )]
    UnmatchedCollection {
        /// The trigger.
        trigger: TriggerLabel,
        /// 0-based position of the entry in `collections`.
        position: usize,
        /// The entry.
        entry: String,
        /// The binding collections, each once, in binding order: the first
        /// [`crate::MAX_LISTED_BINDINGS`] of them.
        bindings: Vec<String>,
        /// How many distinct binding collections there are.
        binding_count: usize,
    },
    /// A status under `responses` that cannot be listed there.
    #[error("{trigger}: `responses.{field}[{position}]` is {status}: {reason}")]
    InvalidStatus {
        /// The trigger.
        trigger: TriggerLabel,
        /// The list, as written in the config: `alreadyDelivered` or `retry`.
        field: &'static str,
        /// 0-based position of the status in the list.
        position: usize,
        /// The status found.
        status: u16,
        /// Why it cannot be listed.
        reason: &'static str,
    },
}

impl ValidationError {
    /// Index of the trigger the problem belongs to; `None` for the document as a whole.
    pub fn trigger_index(&self) -> Option<usize> {
        match self {
            ValidationError::Parse(_)
            | ValidationError::TooManyTriggers { .. }
            | ValidationError::InvalidInterval { .. } => None,
            ValidationError::BothGiven { trigger, .. }
            | ValidationError::InvalidDuration { trigger, .. }
            | ValidationError::IntervalWithDrain { trigger, .. }
            | ValidationError::InvalidName { trigger, .. }
            | ValidationError::DuplicateName { trigger, .. } => Some(trigger.index),
            ValidationError::TooManyHeaders { trigger, .. }
            | ValidationError::HeaderTooLong { trigger, .. }
            | ValidationError::InvalidUrl { trigger, .. }
            | ValidationError::InvalidHeaderName { trigger, .. }
            | ValidationError::InvalidHeaderValue { trigger, .. }
            | ValidationError::OutOfBounds { trigger, .. }
            | ValidationError::InvalidSigningSecret { trigger, .. }
            | ValidationError::TooManySigningSecrets { trigger, .. }
            | ValidationError::Template { trigger, .. }
            | ValidationError::NotJson { trigger, .. }
            | ValidationError::InvalidAuth { trigger, .. }
            | ValidationError::TooManyStatuses { trigger, .. }
            | ValidationError::InvalidStatus { trigger, .. } => Some(trigger.index),
            ValidationError::EmptyCollections { trigger }
            | ValidationError::TooManyCollections { trigger, .. }
            | ValidationError::InvalidCollection { trigger, .. }
            | ValidationError::UnmatchedCollection { trigger, .. } => Some(trigger.index),
        }
    }
}

/// Every problem of a config, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trigger config has {} error(s):", self.0.len())?;
        for err in &self.0 {
            write!(f, "\n  - {err}")?;
        }
        Ok(())
    }
}

/// What the JSON parser found, without its "at line L column C" (errors give those as
/// fields, relative to the rendered output).
pub(crate) fn json_error_message(err: &serde_json::Error) -> String {
    err.to_string()
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The binding collections an [`ValidationError::UnmatchedCollection`] lists.
fn listed_bindings(bindings: &[String], count: usize) -> String {
    if count == 0 {
        return "it has none".to_string();
    }
    let mut text = bindings.join(", ");
    if count > bindings.len() {
        text.push_str(&format!(" (and {} more)", count - bindings.len()));
    }
    text
}

/// Headers the HTTP client derives from the request itself; setting them by hand
/// produces malformed or smuggled requests.
const RESERVED_HEADERS: [&str; 5] = [
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Validates a config document: what a control plane calls at publish time.
pub fn validate(text: &str, format: ConfigFormat) -> Result<Triggers, ValidationErrors> {
    let config =
        TriggersConfig::parse(text, format).map_err(|err| ValidationErrors(vec![err.into()]))?;
    Triggers::from_config(&config)
}

/// Checks every trigger's `collections` against the materialization's binding
/// collections (`bindings`, by binding index; a collection may repeat): an entry that
/// matches none of them, as a name or a prefix, could never fire and is an error naming
/// the trigger, the entry and the bindings. Every error at once. A host calls it when it
/// knows the bindings (a shard's Open, the CLI's `--binding`); [`validate`] cannot.
/// Linear in the bindings and the entries (each entry is found in log time).
pub fn validate_collections(
    triggers: &Triggers,
    bindings: &[String],
) -> Result<(), ValidationErrors> {
    let known = Bindings::new(bindings);
    let mut errors = Vec::new();
    for trigger in &triggers.triggers {
        let Some(filter) = &trigger.collections else {
            continue;
        };
        for (position, entry) in filter.entries().iter().enumerate() {
            if !known.any_matches(entry) {
                let (shown, binding_count) = known.shown();
                errors.push(ValidationError::UnmatchedCollection {
                    trigger: trigger.label.clone(),
                    position,
                    entry: entry.clone(),
                    bindings: shown,
                    binding_count,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

impl Triggers {
    /// Checks and compiles a parsed config, collecting every error.
    pub fn from_config(config: &TriggersConfig) -> Result<Self, ValidationErrors> {
        if config.config.len() > MAX_TRIGGERS {
            return Err(ValidationErrors(vec![ValidationError::TooManyTriggers {
                count: config.config.len(),
                max: MAX_TRIGGERS,
            }]));
        }
        let mut errors = Vec::new();
        let mut templates = Templates::new();
        let mut triggers = Vec::with_capacity(config.config.len());
        let placeholder = Variables::placeholder();
        let interval = match config.interval.as_ref().map(|interval| {
            interval.read(Duration::ZERO, Duration::from_secs(MAX_MIN_INTERVAL_SECS))
        }) {
            None | Some(Ok(Duration::ZERO)) => None,
            Some(Ok(interval)) => Some(interval),
            Some(Err(source)) => {
                errors.push(ValidationError::InvalidInterval { source });
                None
            }
        };
        // Each valid name, with the index of the first trigger that has it.
        let mut names: std::collections::HashMap<String, usize> =
            std::collections::HashMap::with_capacity(config.config.len());

        for (index, raw) in config.config.iter().enumerate() {
            let before = errors.len();
            let label = check_name(index, raw, &mut names, &mut errors);
            let trigger = check_trigger(label.clone(), raw, interval, &mut errors);

            match templates.compile_with_headers(index, &raw.payload_template, &raw.headers) {
                Err(source) => errors.push(ValidationError::Template {
                    trigger: label,
                    source,
                }),
                Ok(()) => match templates.render_variables(
                    index,
                    &placeholder,
                    &crate::trigger_webhook_id(&placeholder.flow_run_id, &label.name),
                ) {
                    Err(source) => errors.push(ValidationError::Template {
                        trigger: label,
                        source,
                    }),
                    Ok(output) => {
                        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
                            errors.push(ValidationError::NotJson {
                                trigger: label,
                                line: err.line(),
                                column: err.column(),
                                message: json_error_message(&err),
                            });
                        }
                    }
                },
            }
            if errors.len() == before {
                triggers.extend(trigger);
            }
        }

        if errors.is_empty() {
            Ok(Triggers {
                triggers,
                templates,
            })
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// The triggers, in config order (a map's in the byte order of their names).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Trigger> {
        self.triggers.iter()
    }

    /// The trigger at `index` (in config order), if there is one.
    pub fn get(&self, index: usize) -> Option<&Trigger> {
        self.triggers.get(index)
    }

    /// The index of the trigger named `name`, if there is one.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.triggers.iter().position(|t| t.label.name == name)
    }

    /// How many triggers there are.
    pub fn len(&self) -> usize {
        self.triggers.len()
    }

    /// Whether the config has no triggers (then nothing is persisted or delivered).
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// Renders the payload of trigger `index` for a transaction, with the trigger's
    /// `webhook_id` (see [`crate::webhook_id`]): what delivery sends, header values
    /// (`{{headers.Name}}`) included.
    pub fn render(
        &self,
        index: usize,
        variables: &Variables,
        webhook_id: &str,
    ) -> Result<String, TemplateError> {
        self.templates
            .render_variables(index, variables, webhook_id)
    }
}

impl Trigger {
    /// How errors and logs name this trigger.
    pub fn label(&self) -> &TriggerLabel {
        &self.label
    }

    /// Its stable name: the map key, a list entry's `name`, else its index.
    pub fn name(&self) -> &str {
        &self.label.name
    }

    /// Whether this trigger is the one Estuary Flow's runtime keys its pending variables
    /// by as `key`: Flow's `"{METHOD} {url}"` (its `config_key`), the method in any case,
    /// the URL equal once parsed (so `https://a` is `https://a/`). Compares without
    /// exposing the URL, which may hold a secret.
    pub fn is_flow_config_key(&self, key: &str) -> bool {
        let Some((method, url)) = key.split_once(' ') else {
            return false;
        };
        method.eq_ignore_ascii_case(self.method.as_str())
            && Url::parse(url).is_ok_and(|url| url == self.url)
    }

    /// Timeout of each attempt (`timeout` or `timeoutSecs`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Retries after the first attempt (`maxRetries`, or `maxAttempts` less one).
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// How its backlog drains in decoupled delivery.
    pub fn drain(&self) -> Drain {
        self.drain
    }

    /// What a webhook of it that fails for good does to its backlog (`onFailure`).
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// Its `collections` as written; `None` when it fires for every collection.
    pub fn collections(&self) -> Option<&[String]> {
        self.collections.as_ref().map(CollectionFilter::entries)
    }

    /// Whether it fires for `collection`: always without `collections`, else when the
    /// name is one of them or starts with one ending in `/`.
    pub fn fires_for(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|filter| filter.matches(collection))
    }

    /// The variables this trigger sees for a transaction: `variables` with
    /// `collection_names` kept to the collections it fires for (in their order), all
    /// else as is (the time range, counts and ids stay the transaction's); `None` when it
    /// fires for none of them, so it sends no webhook for the transaction. Borrows, and
    /// copies nothing, without `collections` or when every collection matches.
    pub fn variables_for<'v>(&self, variables: &'v Variables) -> Option<Cow<'v, Variables>> {
        match &self.collections {
            None => Some(Cow::Borrowed(variables)),
            Some(filter) => filter.variables_for(variables),
        }
    }
}

/// Names that a key-based SOPS rule ([`crate::SECRET_FIELDS_REGEX`]) matches: a map entry
/// so named would be encrypted whole, its template included.
const SOPS_SEALED_NAMES: [&str; 4] = ["url", "headers", "signingSecrets", "auth"];

/// Checks a trigger's name (the rules of [`TRIGGER_NAME_PATTERN`]) and that no earlier
/// trigger has it; returns its label, named by its index while the name is invalid.
///
/// [`TRIGGER_NAME_PATTERN`]: crate::config::document::TRIGGER_NAME_PATTERN
fn check_name(
    index: usize,
    raw: &TriggerConfig,
    names: &mut std::collections::HashMap<String, usize>,
    errors: &mut Vec<ValidationError>,
) -> TriggerLabel {
    let name = match &raw.name {
        None => index.to_string(),
        Some(name) => {
            let reason = if name.is_empty() {
                Some("it is empty".to_string())
            } else if name.len() > MAX_TRIGGER_NAME_BYTES {
                Some(format!(
                    "it is {} bytes, but at most {MAX_TRIGGER_NAME_BYTES} are allowed",
                    name.len()
                ))
            } else if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                Some("only ASCII letters, digits, `_`, `.` and `-` are allowed".to_string())
            } else if SOPS_SEALED_NAMES.contains(&name.as_str()) {
                Some("SOPS encrypts every value under a key of that name".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                errors.push(ValidationError::InvalidName {
                    trigger: TriggerLabel::new(index, &raw.url),
                    name: shown_name(name),
                    reason,
                });
                return TriggerLabel::new(index, &raw.url);
            }
            name.clone()
        }
    };
    let label = TriggerLabel::named(index, name.clone(), &raw.url);
    match names.get(&name) {
        Some(&first) => errors.push(ValidationError::DuplicateName {
            trigger: label.clone(),
            name,
            first,
        }),
        None => {
            names.insert(name, index);
        }
    }
    label
}

/// Checks everything of a trigger but its name and template; returns it when all is well.
/// `interval` is the config's, when it is set and not zero.
fn check_trigger(
    label: TriggerLabel,
    raw: &TriggerConfig,
    interval: Option<Duration>,
    errors: &mut Vec<ValidationError>,
) -> Option<Trigger> {
    let before = errors.len();

    let url = match Url::parse(&raw.url) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            errors.push(ValidationError::InvalidUrl {
                trigger: label.clone(),
                reason: format!("scheme must be http or https, not {:?}", url.scheme()),
            });
            None
        }
        Ok(url) if !url.has_host() => {
            errors.push(ValidationError::InvalidUrl {
                trigger: label.clone(),
                reason: "it has no host".to_string(),
            });
            None
        }
        Ok(url) => Some(url),
        Err(err) => {
            errors.push(ValidationError::InvalidUrl {
                trigger: label.clone(),
                reason: format!("not an absolute URL ({err})"),
            });
            None
        }
    };

    let mut headers = HeaderMap::new();
    // Past the bound, no header is checked (each costs a HeaderMap insert).
    let mut checked = raw.headers.len();
    if checked > MAX_HEADERS {
        errors.push(ValidationError::TooManyHeaders {
            trigger: label.clone(),
            count: checked,
            max: MAX_HEADERS,
        });
        checked = 0;
    }
    for (name, value) in raw.headers.iter().take(checked) {
        let too_long = |part, bytes, max| ValidationError::HeaderTooLong {
            trigger: label.clone(),
            name: name.chars().take(64).collect(),
            part,
            bytes,
            max,
        };
        if name.len() > MAX_HEADER_NAME_BYTES {
            errors.push(too_long("name", name.len(), MAX_HEADER_NAME_BYTES));
            continue;
        }
        if value.expose().len() > MAX_HEADER_VALUE_BYTES {
            errors.push(too_long(
                "value",
                value.expose().len(),
                MAX_HEADER_VALUE_BYTES,
            ));
            continue;
        }
        let header = match HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => {
                errors.push(ValidationError::InvalidHeaderName {
                    trigger: label.clone(),
                    name: name.clone(),
                    reason: "not a valid HTTP header name",
                });
                continue;
            }
            Ok(header) if DELIVERER_HEADERS.contains(&header.as_str()) => {
                errors.push(ValidationError::InvalidHeaderName {
                    trigger: label.clone(),
                    name: name.clone(),
                    reason: "the deliverer sets this webhook header itself",
                });
                continue;
            }
            Ok(header) if RESERVED_HEADERS.contains(&header.as_str()) => {
                errors.push(ValidationError::InvalidHeaderName {
                    trigger: label.clone(),
                    name: name.clone(),
                    reason: "the HTTP client sets this header itself",
                });
                continue;
            }
            Ok(header) if headers.contains_key(&header) => {
                errors.push(ValidationError::InvalidHeaderName {
                    trigger: label.clone(),
                    name: name.clone(),
                    reason: "given twice (header names are case-insensitive)",
                });
                continue;
            }
            Ok(header) => header,
        };
        match HeaderValue::from_str(value.expose()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.insert(header, value);
            }
            Err(_) => errors.push(ValidationError::InvalidHeaderValue {
                trigger: label.clone(),
                name: name.clone(),
            }),
        }
    }

    let timeout = match &raw.timeout {
        Some(_) if raw.given.timeout_secs => {
            errors.push(ValidationError::BothGiven {
                trigger: label.clone(),
                field: "timeout",
                other: "timeoutSecs",
                hint: "`timeout` is a duration such as \"30s\", `timeoutSecs` a number of seconds",
            });
            Duration::ZERO
        }
        Some(timeout) => timeout
            .read(
                Duration::from_secs(MIN_TIMEOUT_SECS),
                Duration::from_secs(MAX_TIMEOUT_SECS),
            )
            .unwrap_or_else(|source| {
                errors.push(ValidationError::InvalidDuration {
                    trigger: label.clone(),
                    field: "timeout",
                    source,
                });
                Duration::ZERO
            }),
        None => {
            if !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&raw.timeout_secs) {
                errors.push(ValidationError::OutOfBounds {
                    trigger: label.clone(),
                    field: "timeoutSecs",
                    value: raw.timeout_secs,
                    min: MIN_TIMEOUT_SECS,
                    max: MAX_TIMEOUT_SECS,
                });
            }
            Duration::from_secs(raw.timeout_secs)
        }
    };
    let max_retries = match raw.max_attempts {
        Some(_) if raw.given.max_retries => {
            errors.push(ValidationError::BothGiven {
                trigger: label.clone(),
                field: "maxAttempts",
                other: "maxRetries",
                hint: "`maxAttempts` counts the first attempt, `maxRetries` only the retries after it",
            });
            0
        }
        Some(attempts) => {
            if !(MIN_MAX_ATTEMPTS..=MAX_MAX_ATTEMPTS).contains(&attempts) {
                errors.push(ValidationError::OutOfBounds {
                    trigger: label.clone(),
                    field: "maxAttempts",
                    value: u64::from(attempts),
                    min: u64::from(MIN_MAX_ATTEMPTS),
                    max: u64::from(MAX_MAX_ATTEMPTS),
                });
            }
            attempts.saturating_sub(1)
        }
        None => {
            if raw.max_retries > MAX_MAX_RETRIES {
                errors.push(ValidationError::OutOfBounds {
                    trigger: label.clone(),
                    field: "maxRetries",
                    value: u64::from(raw.max_retries),
                    min: 0,
                    max: u64::from(MAX_MAX_RETRIES),
                });
            }
            raw.max_retries
        }
    };

    if !(MIN_RETRY_BUDGET_SECS..=MAX_RETRY_BUDGET_SECS).contains(&raw.retry_budget_secs) {
        errors.push(ValidationError::OutOfBounds {
            trigger: label.clone(),
            field: "retryBudgetSecs",
            value: raw.retry_budget_secs,
            min: MIN_RETRY_BUDGET_SECS,
            max: MAX_RETRY_BUDGET_SECS,
        });
    }

    if raw.signing_secrets.len() > MAX_SIGNING_SECRETS {
        errors.push(ValidationError::TooManySigningSecrets {
            trigger: label.clone(),
            count: raw.signing_secrets.len(),
            max: MAX_SIGNING_SECRETS,
        });
    }
    let mut signing_keys = Vec::with_capacity(raw.signing_secrets.len());
    for (position, secret) in raw.signing_secrets.iter().enumerate() {
        match SigningKey::parse(secret) {
            Ok(key) => signing_keys.push(key),
            Err(reason) => errors.push(ValidationError::InvalidSigningSecret {
                trigger: label.clone(),
                position,
                reason,
            }),
        }
    }

    let drain = match raw.drain {
        DrainConfig::Ordered {} => Drain::Ordered,
        DrainConfig::Concurrent { max_in_flight } => {
            if !(1..=MAX_MAX_IN_FLIGHT).contains(&max_in_flight) {
                errors.push(ValidationError::OutOfBounds {
                    trigger: label.clone(),
                    field: "drain.maxInFlight",
                    value: u64::from(max_in_flight),
                    min: 1,
                    max: u64::from(MAX_MAX_IN_FLIGHT),
                });
            }
            Drain::Concurrent(max_in_flight)
        }
        DrainConfig::Coalesced { min_interval_secs } => {
            if min_interval_secs > MAX_MIN_INTERVAL_SECS {
                errors.push(ValidationError::OutOfBounds {
                    trigger: label.clone(),
                    field: "drain.minIntervalSecs",
                    value: min_interval_secs,
                    min: 0,
                    max: MAX_MIN_INTERVAL_SECS,
                });
            }
            Drain::Coalesced {
                min_interval: Duration::from_secs(min_interval_secs),
            }
        }
    };
    // `interval` makes every trigger coalesce at least that long; a trigger that sends
    // every transaction (an explicit ordered or concurrent drain) cannot honour it.
    let drain = match (interval, drain) {
        (None, drain) => drain,
        (Some(interval), Drain::Coalesced { min_interval }) => Drain::Coalesced {
            min_interval: min_interval.max(interval),
        },
        (Some(interval), drain @ (Drain::Ordered | Drain::Concurrent(_))) => {
            errors.push(ValidationError::IntervalWithDrain {
                trigger: label.clone(),
                mode: drain.as_str(),
                interval: display_duration(interval),
            });
            drain
        }
    };

    let auth = crate::send::token_auth::check(&label, raw, errors).map(std::sync::Arc::new);
    let responses = check_responses(&label, &raw.responses, errors);
    let collections = CollectionFilter::check(&label, raw.collections.as_deref(), errors);

    let url = url?;
    (errors.len() == before).then(|| Trigger {
        label,
        url,
        method: match raw.method {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
        },
        headers,
        timeout,
        max_retries,
        retry_budget: Duration::from_secs(raw.retry_budget_secs),
        signing_keys,
        follow_redirects: raw.follow_redirects,
        drain,
        auth,
        responses,
        collections,
        on_failure: raw.on_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"config": [
        {"url": "https://user:pw@hooks.example.com/services/T0/B0/XYZ?token=abc",
         "headers": {"Authorization": "Bearer hunter2"},
         "payloadTemplate": "{\"text\": {{json materialization_name}}}"}
    ]}"#;

    #[test]
    fn a_good_config_compiles() {
        let triggers = validate(GOOD, ConfigFormat::Json).expect("valid");
        assert_eq!(triggers.len(), 1);
        let debug = format!("{triggers:?}");
        assert!(debug.contains("https://hooks.example.com"), "{debug}");
        for secret in ["hunter2", "pw", "XYZ", "token=abc"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    #[test]
    fn every_error_of_every_trigger_is_reported_at_once() {
        let config = r#"{"config": [
            {"url": "ftp://example.com", "payloadTemplate": "{}", "timeoutSecs": 0},
            {"url": "https://ok.example.com", "payloadTemplate": "{\"a\": \"{{materialisation_name}}\"}",
             "headers": {"Bad Name": "x", "X-Token": "line\nbreak", "Host": "evil"}, "maxRetries": 99},
            {"url": "not a url", "payloadTemplate": "{\"a\": {{materialization_name}}}"},
            {"url": "https://fine.example.com", "payloadTemplate": "{\"a\": {{json flow_run_id}}, \"id\": \"{{webhook_id}}\"}"},
            {"url": "https://signed.example.com", "payloadTemplate": "{}", "retryBudgetSecs": 0,
             "headers": {"Webhook-Signature": "v1,forged"},
             "signingSecrets": ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_%%%hunter3", "whsec_", "whsec_c2VjcmV0"]},
            {"url": "https://many.example.com", "payloadTemplate": "{}",
             "signingSecrets": ["whsec_a2V5", "whsec_a2V5", "whsec_a2V5", "whsec_a2V5", "whsec_a2V5", "whsec_a2V5",
                                "whsec_a2V5", "whsec_a2V5", "whsec_a2V5", "whsec_a2V5", "whsec_a2V5"]}
        ]}"#;
        let ValidationErrors(errors) = validate(config, ConfigFormat::Json).expect_err("invalid");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
        for secret in ["line\nbreak", "MfKQ9r8", "hunter3", "a2V5", "c2VjcmV0"] {
            assert!(!text.join("\n").contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn unknown_variable_error_names_trigger_line_column_and_known_variables() {
        let config = "config:\n  - url: https://x.example.com/hook\n    payloadTemplate: |\n      {\n        \"n\": \"{{connector_image}}\",\n        \"m\": \"{{flow_published_at}}\"\n      }\n";
        let ValidationErrors(errors) = validate(config, ConfigFormat::Yaml).expect_err("invalid");
        assert_eq!(errors.len(), 1);
        let ValidationError::Template { trigger, source } = &errors[0] else {
            panic!("expected a template error: {errors:?}");
        };
        assert_eq!(trigger.index, 0);
        assert_eq!(trigger.origin, "https://x.example.com");
        assert_eq!(
            source,
            &TemplateError::UnknownVariable {
                variable: "flow_published_at".to_string(),
                line: 3,
                column: 9
            }
        );
        assert!(errors[0].to_string().contains("flow_published_at_min"));
    }

    #[test]
    fn signing_secrets_compile_into_keys_that_debug_hides() {
        let config = r#"{"config": [{"url": "https://x.example.com", "payloadTemplate": "{}",
            "signingSecrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2VjcmV0"],
            "retryBudgetSecs": 60, "followRedirects": true}]}"#;
        let triggers = validate(config, ConfigFormat::Json).expect("valid");
        let trigger = triggers.iter().next().expect("one trigger");
        assert_eq!(trigger.signing_keys.len(), 2);
        assert_eq!(trigger.retry_budget, Duration::from_secs(60));
        assert!(trigger.follow_redirects);
        let debug = format!("{triggers:?}");
        assert!(debug.contains("signing_keys: 2"), "{debug}");
        assert!(
            !debug.contains("MfKQ9r8") && !debug.contains("c2VjcmV0"),
            "{debug}"
        );
    }

    #[test]
    fn a_template_that_does_not_render_json_is_rejected() {
        // The value is spliced without quotes: `{"name": acmeCo/...}`.
        let config = r#"{"config": [{"url": "https://x.example.com",
            "payloadTemplate": "{\"name\": {{materialization_name}}}"}]}"#;
        let ValidationErrors(errors) = validate(config, ConfigFormat::Json).expect_err("invalid");
        assert!(
            matches!(errors[..], [ValidationError::NotJson { .. }]),
            "{errors:?}"
        );
    }

    #[test]
    fn parse_errors_are_reported_alone() {
        let ValidationErrors(errors) =
            validate("{\"config\": [", ConfigFormat::Json).expect_err("truncated");
        assert!(
            matches!(errors[..], [ValidationError::Parse(_)]),
            "{errors:?}"
        );
    }

    #[test]
    fn drain_settings_are_checked_against_their_bounds() {
        let config = r#"{"config": [
            {"url": "https://a.example.com", "payloadTemplate": "{}", "drain": {"mode": "concurrent", "maxInFlight": 0}},
            {"url": "https://b.example.com", "payloadTemplate": "{}", "drain": {"mode": "coalesced", "minIntervalSecs": 90000}},
            {"url": "https://c.example.com", "payloadTemplate": "{}", "drain": {"mode": "concurrent", "maxInFlight": 8}}
        ]}"#;
        let ValidationErrors(errors) = validate(config, ConfigFormat::Json).expect_err("invalid");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "trigger 0 (https://a.example.com): `drain.maxInFlight` is 0, but must be between 1 and 64",
                "trigger 1 (https://b.example.com): `drain.minIntervalSecs` is 90000, but must be between 0 and 86400",
            ]
        );
        let ok = r#"{"config": [{"url": "https://c.example.com", "payloadTemplate": "{}", "drain": {"mode": "concurrent", "maxInFlight": 8}},
                                {"url": "https://d.example.com", "payloadTemplate": "{}"}]}"#;
        let triggers = validate(ok, ConfigFormat::Json).expect("valid");
        let drains: Vec<Drain> = triggers.iter().map(Trigger::drain).collect();
        assert_eq!(
            drains,
            [
                Drain::Concurrent(8),
                Drain::Coalesced {
                    min_interval: Duration::ZERO
                }
            ]
        );
    }

    /// Issue 13, item 1: every bound of `responses`, each error naming the trigger and
    /// the status's place as the config spells it.
    #[test]
    fn response_policy_bounds_are_checked() {
        let seventeen: Vec<String> = (400..417).map(|s| s.to_string()).collect();
        let config = format!(
            r#"{{"config": [
            {{"url": "https://a.example.com", "payloadTemplate": "{{}}",
              "responses": {{"alreadyDelivered": [409, 410, 401, 399, 500, 200, 407, 408, 429, 410]}}}},
            {{"url": "https://b.example.com", "payloadTemplate": "{{}}",
              "responses": {{"alreadyDelivered": [{seventeen}], "retry": [{seventeen}]}}}},
            {{"url": "https://c.example.com", "payloadTemplate": "{{}}",
              "responses": {{"retry": [425, 409, 425, 600]}}}},
            {{"url": "https://d.example.com", "payloadTemplate": "{{}}",
              "responses": {{"alreadyDelivered": [422], "retry": [422, 409, 408, 429]}}}},
            {{"url": "https://e.example.com", "payloadTemplate": "{{}}",
              "responses": {{"retry": [407, 425, 401]}}}}
        ]}}"#,
            seventeen = seventeen.join(",")
        );
        let ValidationErrors(errors) = validate(&config, ConfigFormat::Json).expect_err("invalid");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let auth = "401 and 407 ask for credentials and 408 and 429 to come back later; \
                    none of them means the receiver has the webhook";
        let a = "trigger 0 (https://a.example.com): `responses.alreadyDelivered";
        let c = "trigger 2 (https://c.example.com): `responses.retry";
        let d = "trigger 3 (https://d.example.com): `responses.retry";
        let e = "trigger 4 (https://e.example.com): `responses.retry";
        let credentials = "401 and 407 refuse the credentials, and sending them again cannot \
                           help (a trigger with `auth` renews its token once on a 401)";
        assert_eq!(
            text,
            [
                format!("{a}[2]` is 401: {auth}"),
                format!("{a}[3]` is 399: only 4xx statuses (400-499) can be listed"),
                format!("{a}[4]` is 500: only 4xx statuses (400-499) can be listed"),
                format!("{a}[5]` is 200: only 4xx statuses (400-499) can be listed"),
                format!("{a}[6]` is 407: {auth}"),
                format!("{a}[7]` is 408: {auth}"),
                format!("{a}[8]` is 429: {auth}"),
                format!("{a}[9]` is 410: listed twice"),
                "trigger 1 (https://b.example.com): `responses.alreadyDelivered` has 17 statuses, but at most 16 are allowed".to_string(),
                "trigger 1 (https://b.example.com): `responses.retry` has 17 statuses, but at most 16 are allowed".to_string(),
                format!("{c}[1]` is 409: also in `responses.alreadyDelivered`; a status has one meaning"),
                format!("{c}[2]` is 425: listed twice"),
                format!("{c}[3]` is 600: only 4xx statuses (400-499) can be listed"),
                format!("{d}[0]` is 422: also in `responses.alreadyDelivered`; a status has one meaning"),
                format!("{e}[0]` is 407: {credentials}"),
                format!("{e}[2]` is 401: {credentials}"),
            ]
        );
        assert!(errors.iter().all(|e| e.trigger_index().is_some()));

        // At the bounds, opted out, and the default.
        let sixteen: Vec<String> = (430..446).map(|s| s.to_string()).collect();
        let ok = format!(
            r#"{{"config": [
            {{"url": "https://a.example.com", "payloadTemplate": "{{}}",
              "responses": {{"alreadyDelivered": [{sixteen}], "retry": [400, 499, 408, 429]}}}},
            {{"url": "https://b.example.com", "payloadTemplate": "{{}}", "responses": {{"alreadyDelivered": []}}}},
            {{"url": "https://c.example.com", "payloadTemplate": "{{}}", "responses": {{"retry": [425]}}}},
            {{"url": "https://d.example.com", "payloadTemplate": "{{}}"}}
        ]}}"#,
            sixteen = sixteen.join(",")
        );
        let triggers = validate(&ok, ConfigFormat::Json).expect("valid");
        let policies: Vec<ResponsePolicy> = triggers.iter().map(|t| t.responses).collect();
        let sixteen: Vec<u16> = (430..446).collect();
        assert_eq!(
            policies,
            [
                ResponsePolicy::from_lists(&sixteen, &[400, 499, 408, 429]),
                ResponsePolicy::from_lists(&[], &[]),
                ResponsePolicy::from_lists(&[409], &[425]),
                ResponsePolicy::default(),
            ]
        );
        assert_eq!(
            ResponsePolicy::default(),
            ResponsePolicy::from_lists(&[409], &[])
        );
    }

    #[test]
    fn an_empty_config_has_no_triggers() {
        assert!(
            validate("config: []", ConfigFormat::Yaml)
                .expect("valid")
                .is_empty()
        );
    }

    fn trigger_with(fields: &str) -> String {
        format!(
            r#"{{"config": [{{"url": "https://x.example.com", "payloadTemplate": "{{}}"{fields}}}]}}"#
        )
    }

    /// Issue 12: more than 32,768 headers panicked in `HeaderMap::insert` (the sidecar
    /// exited 101), and checking them was quadratic before that.
    #[test]
    fn more_than_32768_headers_are_refused_without_panicking() {
        let headers: Vec<String> = (0..40_000).map(|i| format!("\"h{i}\": \"v\"")).collect();
        let config = trigger_with(&format!(", \"headers\": {{{}}}", headers.join(",")));
        assert!(config.len() < crate::MAX_CONFIG_BYTES);
        let ValidationErrors(errors) = validate(&config, ConfigFormat::Json).expect_err("too many");
        assert_eq!(
            errors,
            [ValidationError::TooManyHeaders {
                trigger: TriggerLabel::new(0, "https://x.example.com"),
                count: 40_000,
                max: MAX_HEADERS,
            }]
        );
        assert!(
            errors[0]
                .to_string()
                .starts_with("trigger 0 (https://x.example.com): `headers` has 40000")
        );
        let at_bound: Vec<String> = (0..MAX_HEADERS)
            .map(|i| format!("\"h{i}\": \"v\""))
            .collect();
        validate(
            &trigger_with(&format!(", \"headers\": {{{}}}", at_bound.join(","))),
            ConfigFormat::Json,
        )
        .expect("at the bound");
    }

    /// Issue 12: a 10 MB header value was accepted.
    #[test]
    fn a_ten_megabyte_header_value_is_refused() {
        let huge = trigger_with(&format!(
            ", \"headers\": {{\"X-Big\": \"{}\"}}",
            "a".repeat(10_000_000)
        ));
        let ValidationErrors(errors) = validate(&huge, ConfigFormat::Json).expect_err("too large");
        assert!(
            matches!(
                errors[..],
                [ValidationError::Parse(ParseError::TooLarge { .. })]
            ),
            "{errors:?}"
        );
        let long = trigger_with(&format!(
            ", \"headers\": {{\"X-Big\": \"{}\", \"{}\": \"v\"}}",
            "a".repeat(MAX_HEADER_VALUE_BYTES + 1),
            "n".repeat(MAX_HEADER_NAME_BYTES + 1)
        ));
        let ValidationErrors(errors) = validate(&long, ConfigFormat::Json).expect_err("too long");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains(&format!(
                "the value of header \"X-Big\" is {} bytes, but at most {MAX_HEADER_VALUE_BYTES}",
                MAX_HEADER_VALUE_BYTES + 1
            )),
            "{text:?}"
        );
        assert!(
            text[1].contains(&format!("the name of header \"{}\" is", "n".repeat(64))),
            "{text:?}"
        );
        assert!(!text[0].contains("aaaa"), "{text:?}");
    }

    /// Issue 12: 10^5 triggers validated, then two transactions peaked at 972 MB.
    #[test]
    fn a_hundred_thousand_triggers_are_refused() {
        let one = r#"{"url": "https://x.example.com", "payloadTemplate": "{}"}"#;
        let config = |count: usize| format!(r#"{{"config": [{}]}}"#, vec![one; count].join(","));
        let ValidationErrors(errors) =
            validate(&config(100_000), ConfigFormat::Json).expect_err("too large");
        assert!(matches!(
            errors[..],
            [ValidationError::Parse(ParseError::TooLarge { .. })]
        ));
        let ValidationErrors(errors) =
            validate(&config(MAX_TRIGGERS + 1), ConfigFormat::Json).expect_err("too many");
        assert_eq!(
            errors,
            [ValidationError::TooManyTriggers {
                count: MAX_TRIGGERS + 1,
                max: MAX_TRIGGERS
            }]
        );
        assert_eq!(
            validate(&config(MAX_TRIGGERS), ConfigFormat::Json)
                .expect("at the bound")
                .len(),
            MAX_TRIGGERS
        );
    }

    /// Issue 12 (security): a numeric header value or signing secret was echoed by the
    /// parser (`invalid type: integer `839201938475`, expected a string`).
    #[test]
    fn header_values_and_signing_secrets_are_never_echoed_whatever_their_type() {
        let secret = "839201938475";
        let json = [
            format!(r#""headers": {{"Authorization": {secret}}}"#),
            format!(r#""headers": {{"Authorization": {secret}.5}}"#),
            format!(r#""headers": {{"Authorization": [{secret}]}}"#),
            format!(r#""headers": "{secret}""#),
            format!(r#""headers": {secret}"#),
            format!(r#""signingSecrets": [{secret}]"#),
            format!(r#""signingSecrets": {secret}"#),
            format!(r#""signingSecrets": "whsec_{secret}""#),
            format!(r#""signingSecrets": {{"a": "{secret}"}}"#),
            format!(r#""headers": {{"A": true}}, "signingSecrets": [false, "x{secret}"]"#),
        ];
        for fields in &json {
            let config = format!(
                r#"{{"config": [{{"url": "https://x", "payloadTemplate": "{{}}", {fields}}}]}}"#
            );
            let err = validate(&config, ConfigFormat::Json)
                .expect_err(fields)
                .to_string();
            assert!(!err.contains(secret), "{fields}: {err}");
            assert!(err.contains("line 1"), "{fields}: position kept: {err}");
        }
        let yaml = [
            format!("headers:\n      Authorization: [{secret}]"),
            format!("headers: {secret}"),
            format!("headers: whsec_{secret}"),
            format!("signingSecrets: {secret}"),
            format!("signingSecrets: whsec_{secret}"),
            format!("signingSecrets:\n      - [{secret}]"),
        ];
        for fields in &yaml {
            let config =
                format!("config:\n  - url: https://x\n    payloadTemplate: '{{}}'\n    {fields}\n");
            let err = validate(&config, ConfigFormat::Yaml)
                .expect_err(fields)
                .to_string();
            assert!(!err.contains(secret), "{fields}: {err}");
        }
    }

    /// Issue 13, item 3: the deliverer writes `traceparent` on every request (and owns
    /// the trace, so any `tracestate` would describe a trace it does not know): a config
    /// setting either, in any case, is refused like the `webhook-*` headers.
    #[test]
    fn traceparent_and_tracestate_set_by_a_config_are_refused() {
        for name in ["traceparent", "Traceparent", "TRACESTATE"] {
            let config = format!(
                r#"{{"config": [{{"url": "https://x.example.com", "payloadTemplate": "{{}}",
                    "headers": {{"{name}": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}}]}}"#
            );
            let ValidationErrors(errors) = validate(&config, ConfigFormat::Json).expect_err(name);
            assert!(
                matches!(
                    errors.as_slice(),
                    [ValidationError::InvalidHeaderName { name: refused, reason, .. }]
                        if refused == name && reason.contains("deliverer sets")
                ),
                "{name}: {errors:?}"
            );
        }
    }

    /// Issue 13, item 4: a `timestamp` call with a literal precision or rounding it does
    /// not know, or the wrong arguments, is refused at validation, naming the trigger
    /// and where in its template; a good one validates.
    #[test]
    fn timestamp_bad_literals_are_refused_at_validation_naming_trigger_line_and_column() {
        let config = r#"{"config": [
            {"url": "https://ok.example.com", "payloadTemplate": "{\"to\": \"{{timestamp flow_published_at_max \"us\" \"ceil\"}}\"}"},
            {"url": "https://a.example.com", "payloadTemplate": "{\n \"to\": \"{{timestamp flow_published_at_max \"ns\"}}\"}"},
            {"url": "https://b.example.com", "payloadTemplate": "{\"to\": \"{{timestamp flow_published_at_max \"us\" \"up\"}}\"}"},
            {"url": "https://c.example.com", "payloadTemplate": "{\"to\": \"{{timestamp flow_published_at_max}}\"}"},
            {"url": "https://d.example.com", "payloadTemplate": "{\"to\": \"{{timestamp connector_image \"us\"}}\"}"}
        ]}"#;
        let ValidationErrors(errors) = validate(config, ConfigFormat::Json).expect_err("invalid");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        for (text, expect) in text.iter().zip([
            "trigger 1 (https://a.example.com): `payloadTemplate`: `timestamp` at line 2, column 9: unknown precision \"ns\"",
            "trigger 2 (https://b.example.com): `payloadTemplate`: `timestamp` at line 1, column 9: unknown rounding \"up\"",
            "trigger 3 (https://c.example.com): `payloadTemplate`: `timestamp` at line 1, column 9: 1 argument(s) given",
            "trigger 4 (https://d.example.com): `payloadTemplate`: template failed to render at line 1, column 9: `timestamp`: \"ghcr.io/estuary/materialize-example:v1\" is not an RFC 3339 timestamp",
        ]) {
            assert!(text.starts_with(expect), "{text}\nis not\n{expect}");
        }
    }
}

//! The variables a payload template is rendered against, built from a transaction's
//! per-binding stats and persisted as [`triggers_proto::TriggerParams`].

use crate::render::clock::{Clock, ClockError};
use serde::Serialize;
use time::OffsetDateTime;
use triggers_proto::{BindingStats, TRIGGER_PARAMS_VERSION, Timestamp, TriggerParams};

/// Names of every variable a template may use, in documentation order. All but the last
/// are fields of [`Variables`]; `webhook_id` is per trigger (see [`crate::webhook_id`]).
pub const VARIABLE_NAMES: [&str; 11] = [
    "materialization_name",
    "collection_names",
    "connector_image",
    "flow_published_at_min",
    "flow_published_at_max",
    "flow_run_id",
    "run_id",
    "transaction_count",
    "first_commit_seq",
    "last_commit_seq",
    "webhook_id",
];

/// What the runtime knows of the materialization a shard belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialization {
    /// Full name of the materialization, e.g. `acmeCo/orders/postgres`.
    pub name: String,
    /// The connector image it runs, e.g. `ghcr.io/estuary/materialize-postgres:v1`.
    pub connector_image: String,
    /// Source collection of each binding, indexed by binding.
    pub binding_collections: Vec<String>,
}

/// The variables of one committed transaction, or of several merged into one webhook by a
/// coalesced trigger (see [`Variables::merge`]).
///
/// Serialised (with RFC 3339 times) this is exactly the context a template sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variables {
    /// Full name of the materialization.
    pub materialization_name: String,
    /// Collections that received documents in the transaction, in binding order, each once.
    pub collection_names: Vec<String>,
    /// The connector image of the materialization.
    pub connector_image: String,
    /// Publish time of the earliest document of the transaction.
    #[serde(with = "time::serde::rfc3339")]
    pub flow_published_at_min: OffsetDateTime,
    /// Publish time of the latest document of the transaction.
    #[serde(with = "time::serde::rfc3339")]
    pub flow_published_at_max: OffsetDateTime,
    /// Identifies the transaction (the newest one, when merged); the same on every
    /// re-fire because it is persisted.
    pub flow_run_id: String,
    /// Flow's `run_id`: the wall-clock start of the transaction (the newest one, when
    /// merged), RFC 3339 in UTC with milliseconds (`2024-01-15T08:30:00.000Z`; see
    /// [`run_id`]). Persisted, so a re-fire repeats it exactly.
    pub run_id: String,
    /// How many transactions these variables cover: 1 unless merged.
    pub transaction_count: u64,
    /// Commit sequence number (per shard, from 1) of the first transaction covered; 0 when
    /// the runtime did not number it (params written by a version-1 store).
    pub first_commit_seq: u64,
    /// Commit sequence number of the last transaction covered.
    pub last_commit_seq: u64,
}

/// Stats that cannot be turned into variables. Each names the offending binding, so the
/// caller (the sidecar's client, say) can tell which of its inputs is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariablesError {
    /// The stats name a binding the materialization does not have.
    #[error("stats name binding {binding}, but the materialization has {bindings} binding(s)")]
    UnknownBinding {
        /// The binding index in the stats.
        binding: u32,
        /// How many bindings the materialization has.
        bindings: usize,
    },
    /// A binding read documents but reported no clocks, or a first clock after its last.
    #[error(
        "binding {binding} read {docs} document(s) but its clocks are invalid \
         (first {first:#x}, last {last:#x})"
    )]
    InvalidClocks {
        /// The binding index.
        binding: u32,
        /// Documents the binding read.
        docs: u64,
        /// Its first clock.
        first: u64,
        /// Its last clock.
        last: u64,
    },
    /// A clock does not decode to a time.
    #[error("binding {binding}: {source}")]
    Clock {
        /// The binding index.
        binding: u32,
        /// Why the clock does not decode.
        #[source]
        source: ClockError,
    },
}

/// Persisted variables that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Written by a newer build whose fields this one would silently drop.
    #[error(
        "trigger params have version {found}, newer than the {known} this build understands; \
         upgrade the runtime to deliver them"
    )]
    NewerVersion {
        /// The version found on disk.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// A required field is absent.
    #[error("trigger params lack `{0}`")]
    Missing(&'static str),
    /// A timestamp field is out of range.
    #[error("trigger params field `{0}` is not a valid timestamp")]
    InvalidTimestamp(&'static str),
}

impl Variables {
    /// Builds the variables of a transaction, or `None` when it read no documents
    /// (nothing landed, so nothing fires).
    pub fn from_stats(
        materialization: &Materialization,
        stats: &[BindingStats],
        flow_run_id: String,
    ) -> Result<Option<Self>, VariablesError> {
        let bindings = materialization.binding_collections.len();
        // Bindings in index order, so collection names come out in binding order
        // whatever order the stats arrive in. Linear in bindings, no sorting of names.
        let mut seen_binding = vec![false; bindings];
        let (mut min, mut max): (Option<Clock>, Option<Clock>) = (None, None);

        for s in stats {
            let index = usize::try_from(s.binding)
                .ok()
                .filter(|i| *i < bindings)
                .ok_or(VariablesError::UnknownBinding {
                    binding: s.binding,
                    bindings,
                })?;
            if s.docs == 0 {
                continue;
            }
            if s.first_clock == 0 || s.last_clock < s.first_clock {
                return Err(VariablesError::InvalidClocks {
                    binding: s.binding,
                    docs: s.docs,
                    first: s.first_clock,
                    last: s.last_clock,
                });
            }
            for clock in [s.first_clock, s.last_clock] {
                Clock(clock)
                    .to_time()
                    .map_err(|source| VariablesError::Clock {
                        binding: s.binding,
                        source,
                    })?;
            }
            seen_binding[index] = true;
            min = Some(min.map_or(Clock(s.first_clock), |m| m.min(Clock(s.first_clock))));
            max = Some(max.map_or(Clock(s.last_clock), |m| m.max(Clock(s.last_clock))));
        }

        let (Some(min), Some(max)) = (min, max) else {
            return Ok(None);
        };

        // Two bindings may read one collection; it is listed once, at its first binding.
        // Fx hashing: the names come from the materialization's own spec, and SipHash
        // was a tenth of a coalesced StartCommit's instructions.
        let mut listed = rustc_hash::FxHashSet::default();
        let collection_names: Vec<String> = materialization
            .binding_collections
            .iter()
            .zip(&seen_binding)
            .filter(|(name, seen)| **seen && listed.insert(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();

        Ok(Some(Variables {
            materialization_name: materialization.name.clone(),
            collection_names,
            connector_image: materialization.connector_image.clone(),
            // Checked above: both clocks decode.
            flow_published_at_min: min.to_time().expect("checked"),
            flow_published_at_max: max.to_time().expect("checked"),
            flow_run_id,
            // Until the runtime says when the transaction started (`with_run_id`).
            run_id: format_run_id(max.to_time().expect("checked")),
            transaction_count: 1,
            first_commit_seq: 0,
            last_commit_seq: 0,
        }))
    }

    /// Sets Flow's `run_id`: the runtime calls it with the transaction's start (see
    /// [`run_id`]). Without it, `run_id` is the transaction's `flow_published_at_max` in
    /// the same format.
    pub fn with_run_id(mut self, run_id: String) -> Self {
        self.run_id = run_id;
        self
    }

    /// Numbers the transaction: the runtime assigns commit sequence numbers when it
    /// persists variables, so merged webhooks can say which transactions they cover.
    pub fn with_commit_seq(mut self, seq: u64) -> Self {
        self.first_commit_seq = seq;
        self.last_commit_seq = seq;
        self
    }

    /// Folds the variables of a later transaction into these, as a coalesced trigger
    /// sends them: collections are the union in commit order (each once), the time range
    /// spans both, `flow_run_id` is the newer transaction's, and the covered count and
    /// sequence range grow. The result is what one webhook announces for all of them.
    pub fn merge(&mut self, newer: &Variables) {
        for name in &newer.collection_names {
            if !self.collection_names.contains(name) {
                self.collection_names.push(name.clone());
            }
        }
        self.flow_published_at_min = self.flow_published_at_min.min(newer.flow_published_at_min);
        self.flow_published_at_max = self.flow_published_at_max.max(newer.flow_published_at_max);
        self.flow_run_id.clone_from(&newer.flow_run_id);
        self.run_id.clone_from(&newer.run_id);
        self.materialization_name
            .clone_from(&newer.materialization_name);
        self.connector_image.clone_from(&newer.connector_image);
        self.transaction_count = self
            .transaction_count
            .saturating_add(newer.transaction_count);
        self.last_commit_seq = newer.last_commit_seq;
    }

    /// The persisted form, written in the same WriteBatch as the checkpoint.
    pub fn to_params(&self) -> TriggerParams {
        self.clone().into_params()
    }

    /// The persisted form, taking the variables (no string is copied).
    pub fn into_params(self) -> TriggerParams {
        TriggerParams {
            version: TRIGGER_PARAMS_VERSION,
            materialization_name: self.materialization_name,
            collection_names: self.collection_names,
            connector_image: self.connector_image,
            flow_published_at_min: Some(to_timestamp(self.flow_published_at_min)),
            flow_published_at_max: Some(to_timestamp(self.flow_published_at_max)),
            flow_run_id: self.flow_run_id,
            run_id: self.run_id,
            first_commit_seq: self.first_commit_seq,
            last_commit_seq: self.last_commit_seq,
            transaction_count: self.transaction_count,
        }
    }

    /// Reads back persisted variables. Older versions are accepted (missing fields take
    /// their defaults); newer ones are refused rather than half-understood.
    pub fn from_params(params: TriggerParams) -> Result<Self, ParamsError> {
        if params.version > TRIGGER_PARAMS_VERSION {
            return Err(ParamsError::NewerVersion {
                found: params.version,
                known: TRIGGER_PARAMS_VERSION,
            });
        }
        let min = params
            .flow_published_at_min
            .ok_or(ParamsError::Missing("flow_published_at_min"))?;
        let max = params
            .flow_published_at_max
            .ok_or(ParamsError::Missing("flow_published_at_max"))?;
        let flow_published_at_max =
            from_timestamp(max).ok_or(ParamsError::InvalidTimestamp("flow_published_at_max"))?;
        // Params written before `run_id` existed (version 2 and older) hold no start
        // time: they render the nearest time they do hold, the transaction's newest
        // document's publish time, the same on every re-fire.
        let run_id = if params.run_id.is_empty() {
            format_run_id(flow_published_at_max)
        } else {
            params.run_id
        };
        Ok(Variables {
            materialization_name: params.materialization_name,
            collection_names: params.collection_names,
            connector_image: params.connector_image,
            flow_published_at_min: from_timestamp(min)
                .ok_or(ParamsError::InvalidTimestamp("flow_published_at_min"))?,
            flow_published_at_max,
            flow_run_id: params.flow_run_id,
            run_id,
            // Version 1 knew only single transactions.
            transaction_count: params.transaction_count.max(1),
            first_commit_seq: params.first_commit_seq,
            last_commit_seq: params.last_commit_seq,
        })
    }

    /// Stand-in values for trial-rendering templates at publish time, shaped like real ones
    /// (Flow names never contain quotes, so `"{{materialization_name}}"` is valid JSON).
    pub fn placeholder() -> Self {
        Variables {
            materialization_name: "acmeCo/example/materialize-placeholder".to_string(),
            collection_names: vec![
                "acmeCo/example/collection-a".to_string(),
                "acmeCo/example/collection-b".to_string(),
            ],
            connector_image: "ghcr.io/estuary/materialize-example:v1".to_string(),
            flow_published_at_min: time::macros::datetime!(2024-01-01 00:00:00.1234567 UTC),
            flow_published_at_max: time::macros::datetime!(2024-01-01 00:05:00.7654321 UTC),
            flow_run_id: "00000000-0000-4000-8000-000000000000".to_string(),
            run_id: "2024-01-01T00:00:00.000Z".to_string(),
            transaction_count: 3,
            first_commit_seq: 40,
            last_commit_seq: 42,
        }
    }
}

/// Flow's `run_id` of a transaction that started `at`: RFC 3339 in UTC with exactly three
/// fractional digits (`2024-01-15T08:30:00.000Z`), as Flow renders it. A time RFC 3339
/// cannot write (before year 0 or after 9999) gives the Unix epoch's.
pub fn run_id(at: std::time::SystemTime) -> String {
    // `OffsetDateTime::from` panics past its range (beyond year ±9999).
    let since = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    OffsetDateTime::from_unix_timestamp_nanos(since)
        .map(format_run_id)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

fn format_run_id(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let at = at.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&at.year()) {
        return "1970-01-01T00:00:00.000Z".to_string();
    }
    at.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

fn to_timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

fn from_timestamp(ts: Timestamp) -> Option<OffsetDateTime> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    OffsetDateTime::from_unix_timestamp(ts.seconds)
        .ok()?
        .replace_nanosecond(nanos)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn materialization() -> Materialization {
        Materialization {
            name: "acmeCo/orders/postgres".to_string(),
            connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
            binding_collections: vec![
                "acmeCo/orders".to_string(),
                "acmeCo/customers".to_string(),
                "acmeCo/orders".to_string(),
                "acmeCo/refunds".to_string(),
            ],
        }
    }

    fn stats(binding: u32, docs: u64, first: Clock, last: Clock) -> BindingStats {
        BindingStats {
            binding,
            docs,
            bytes: docs * 100,
            first_clock: first.0,
            last_clock: last.0,
        }
    }

    #[test]
    fn collections_in_binding_order_without_duplicates_or_idle_bindings() {
        let t = |s: u64| Clock::from_unix(1_700_000_000 + s, 0);
        // Out of order, a repeated collection (bindings 0 and 2), an idle binding (1).
        let stats = [
            stats(3, 1, t(5), t(6)),
            stats(2, 4, t(1), t(9)),
            stats(1, 0, Clock(0), Clock(0)),
            stats(0, 2, t(3), t(4)),
        ];
        let vars = Variables::from_stats(&materialization(), &stats, "run".into())
            .expect("valid")
            .expect("has documents");
        assert_eq!(vars.collection_names, ["acmeCo/orders", "acmeCo/refunds"]);
        assert_eq!(vars.flow_published_at_min, t(1).to_time().expect("valid"));
        assert_eq!(vars.flow_published_at_max, t(9).to_time().expect("valid"));
    }

    #[test]
    fn no_documents_means_no_variables() {
        let stats = [stats(0, 0, Clock(0), Clock(0))];
        assert_eq!(
            Variables::from_stats(&materialization(), &stats, "run".into()),
            Ok(None)
        );
        assert_eq!(
            Variables::from_stats(&materialization(), &[], "run".into()),
            Ok(None)
        );
    }

    #[test]
    fn bad_stats_are_typed_errors() {
        let t = Clock::from_unix(1_700_000_000, 0);
        assert_eq!(
            Variables::from_stats(&materialization(), &[stats(9, 1, t, t)], "r".into()),
            Err(VariablesError::UnknownBinding {
                binding: 9,
                bindings: 4
            })
        );
        assert!(matches!(
            Variables::from_stats(&materialization(), &[stats(0, 1, Clock(0), t)], "r".into()),
            Err(VariablesError::InvalidClocks { binding: 0, .. })
        ));
        assert!(matches!(
            Variables::from_stats(
                &materialization(),
                &[stats(0, 1, Clock(7), Clock(9))],
                "r".into()
            ),
            Err(VariablesError::Clock { binding: 0, .. })
        ));
    }

    #[test]
    fn params_round_trip_and_newer_versions_are_refused() {
        let vars = Variables::placeholder();
        let params = vars.to_params();
        assert_eq!(Variables::from_params(params.clone()), Ok(vars));

        let newer = TriggerParams {
            version: TRIGGER_PARAMS_VERSION + 1,
            ..params.clone()
        };
        assert!(matches!(
            Variables::from_params(newer),
            Err(ParamsError::NewerVersion { .. })
        ));
        let broken = TriggerParams {
            flow_published_at_max: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..params
        };
        assert_eq!(
            Variables::from_params(broken),
            Err(ParamsError::InvalidTimestamp("flow_published_at_max"))
        );
    }

    #[test]
    fn merge_unions_collections_in_commit_order_and_widens_every_range() {
        let t = |s: u64| Clock::from_unix(1_700_000_000 + s, 0);
        let build = |stats: &[BindingStats], run: &str, seq: u64| {
            Variables::from_stats(&materialization(), stats, run.into())
                .expect("valid")
                .expect("has documents")
                .with_commit_seq(seq)
        };
        let mut merged = build(&[stats(3, 1, t(5), t(6))], "first", 7);
        merged.merge(&build(
            &[stats(0, 1, t(2), t(4)), stats(3, 1, t(4), t(4))],
            "second",
            8,
        ));
        merged.merge(&build(&[stats(1, 1, t(7), t(9))], "third", 9));
        assert_eq!(
            merged.collection_names,
            ["acmeCo/refunds", "acmeCo/orders", "acmeCo/customers"]
        );
        assert_eq!(merged.flow_published_at_min, t(2).to_time().expect("valid"));
        assert_eq!(merged.flow_published_at_max, t(9).to_time().expect("valid"));
        assert_eq!(merged.flow_run_id, "third");
        assert_eq!(
            (
                merged.transaction_count,
                merged.first_commit_seq,
                merged.last_commit_seq
            ),
            (3, 7, 9)
        );
        assert_eq!(Variables::from_params(merged.to_params()), Ok(merged));
    }

    #[test]
    fn version_1_params_read_as_one_unnumbered_transaction() {
        let params = TriggerParams {
            version: 1,
            transaction_count: 0,
            first_commit_seq: 0,
            last_commit_seq: 0,
            ..Variables::placeholder().to_params()
        };
        let vars = Variables::from_params(params).expect("reads");
        assert_eq!(
            (
                vars.transaction_count,
                vars.first_commit_seq,
                vars.last_commit_seq
            ),
            (1, 0, 0)
        );
    }

    #[test]
    fn times_serialise_as_rfc3339_with_sub_second_precision() {
        let json = serde_json::to_value(Variables::placeholder()).expect("serialises");
        assert_eq!(
            json["flow_published_at_min"],
            "2024-01-01T00:00:00.1234567Z"
        );
        assert_eq!(
            json["flow_published_at_max"],
            "2024-01-01T00:05:00.7654321Z"
        );
    }

    /// Issue 18, item 3: `run_id` is Flow's: the transaction's start, RFC 3339 in UTC
    /// with exactly three fractional digits, whatever the clock's precision.
    #[test]
    fn run_id_is_the_transaction_start_in_rfc3339_with_milliseconds() {
        let at =
            |secs: u64, nanos: u32| std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        assert_eq!(run_id(at(1_705_307_400, 0)), "2024-01-15T08:30:00.000Z");
        assert_eq!(
            run_id(at(1_705_307_400, 123_999_999)),
            "2024-01-15T08:30:00.123Z"
        );
        assert_eq!(run_id(at(0, 7_000_000)), "1970-01-01T00:00:00.007Z");
        // Past year 9999 RFC 3339 has no spelling: the epoch's, never a panic.
        assert_eq!(run_id(at(300_000_000_000, 0)), "1970-01-01T00:00:00.000Z");
        let json = serde_json::to_value(
            Variables::placeholder().with_run_id(run_id(at(1_705_307_400, 5_000_000))),
        )
        .expect("serialises");
        assert_eq!(json["run_id"], "2024-01-15T08:30:00.005Z");
    }

    /// Issue 18, item 3: `run_id` is persisted with the variables (params version 3), so
    /// a re-fire repeats it exactly; params written before hold none and render the
    /// transaction's `flow_published_at_max` in the same format, the same every time.
    /// A merge takes the newest transaction's, as `flow_run_id`.
    #[test]
    fn run_id_survives_persistence_and_older_params_derive_it() {
        let t = |s: u64| Clock::from_unix(1_700_000_000 + s, 0);
        let vars =
            Variables::from_stats(&materialization(), &[stats(0, 1, t(1), t(2))], "r".into())
                .expect("valid")
                .expect("has documents")
                .with_run_id("2024-01-15T08:30:00.000Z".to_string());
        let params = vars.to_params();
        assert_eq!(
            (params.version, params.run_id.as_str()),
            (3, "2024-01-15T08:30:00.000Z")
        );
        assert_eq!(Variables::from_params(params.clone()), Ok(vars.clone()));

        let old = TriggerParams {
            version: 2,
            run_id: String::new(),
            ..params
        };
        let derived = Variables::from_params(old.clone()).expect("reads").run_id;
        assert_eq!(derived, "2023-11-14T22:13:22.000Z");
        assert_eq!(Variables::from_params(old).expect("reads").run_id, derived);

        let mut merged = vars;
        merged.merge(&Variables::placeholder().with_run_id("2024-01-15T08:31:00.000Z".into()));
        assert_eq!(merged.run_id, "2024-01-15T08:31:00.000Z");
    }
}

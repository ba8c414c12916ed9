//! Stores written by Estuary Flow's runtime: the pending trigger variables Flow keeps
//! under its own `trigger-params` key, read so they fire here.
//!
//! Flow's runtimes (V1 `crates/runtime`, V2 `crates/runtime-next`) keep a materialization
//! shard's state at the root of its RocksDB: `checkpoint` (Gazette's `consumer.Checkpoint`),
//! `connector-state` (JSON, merged by merge-patch), `last-applied`, `MK-v2:` max keys, and in
//! V2 `FH:`/`FC:` frontiers, `AI:` ack intents, `committed-close`, `hinted-close`. A runtime
//! linked into such a DB keeps to its own keyspace ([`crate::Keyspace`]), so none of those
//! collide with its keys; it reads one of Flow's: `trigger-params`, JSON, in either of the
//! forms Flow has written (estuary/flow `crates/models/src/triggers.rs`,
//! `PersistedTriggerParams`):
//!
//! - **single**: one `TriggerVariables` object, fired by every trigger (V1, and V2 before
//!   per-trigger debounce): `{"collection_names": [...], "connector_image": "...",
//!   "materialization_name": "...", "flow_published_at_min": "...",
//!   "flow_published_at_max": "...", "run_id": "..."}` (older builds: `flow_run_id`
//!   instead of `run_id`).
//! - **per config**: a map from Flow's key of a trigger, `"{METHOD} {url}"`, to its
//!   variables (V2 with debounce); `{}` means nothing is pending.
//!
//! Flow fires a pending value after the first Acknowledged and then deletes the key; a
//! map entry that no configured trigger has is dropped (Flow logs "pending trigger has no
//! matching config; dropping"). Here, at open, the value moves into this runtime's own
//! layout (one backlog entry per trigger, or waiting delivery's single key) in one synced
//! WriteBatch that also deletes Flow's key, so it fires after the first Acknowledged, as
//! a `recovery-refire` (Flow may have sent it before it stopped), and a crash keeps
//! either Flow's key or ours, never both nor neither. Its entries are numbered 0 (its
//! `first_commit_seq` and `last_commit_seq` render 0): the transaction was Flow's, and
//! this runtime's numbers start at 1, so it sorts before every one of them.
//!
//! Times: V1 wrote RFC 3339 with `Z` and trimmed fractions, or `""` when the transaction
//! had no clocks; V2 writes chrono's form (`+00:00`, 0/3/6/9 fraction digits). Both parse;
//! an empty or unparsable time becomes the Unix epoch (the variable has no other value to
//! take), and `run_id` is kept as Flow wrote it.

use serde::Deserialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use triggers::{Triggers, Variables};

/// Flow's key of its pending trigger variables, at the root of the DB.
pub const FLOW_TRIGGER_PARAMS_KEY: &[u8] = b"trigger-params";

/// Largest value of Flow's `trigger-params` read (16 MiB): a transaction's collection
/// names, many times over; a larger one is refused as corrupt rather than decoded.
pub const MAX_FLOW_TRIGGER_PARAMS_BYTES: usize = 16 << 20;

/// One of Flow's `TriggerVariables`, every field optional (older and newer builds wrote
/// different ones; unknown fields are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FlowVariables {
    collection_names: Vec<String>,
    connector_image: String,
    materialization_name: String,
    flow_published_at_min: String,
    flow_published_at_max: String,
    run_id: Option<String>,
    flow_run_id: Option<String>,
}

/// Flow's `PersistedTriggerParams`: a map is tried first, as Flow's untagged enum does,
/// so `{}` is an empty map (nothing pending) and an object of strings is one window.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FlowPending {
    PerConfig(BTreeMap<String, FlowVariables>),
    Single(FlowVariables),
}

/// Why Flow's `trigger-params` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowParamsError {
    /// Larger than [`MAX_FLOW_TRIGGER_PARAMS_BYTES`].
    #[error(
        "Flow's trigger-params is {0} bytes, more than the {MAX_FLOW_TRIGGER_PARAMS_BYTES} read"
    )]
    TooLarge(usize),
    /// Not JSON of either form Flow writes.
    #[error("Flow's trigger-params is not TriggerVariables JSON of either form Flow writes: {0}")]
    NotJson(String),
}

/// What Flow's pending value gives each trigger of the config: `Some(variables)` for
/// each trigger it fires (in config order), `None` for the others. Entries of a map that
/// name no configured trigger are dropped, as Flow drops them (each logged).
pub(crate) fn pending_per_trigger(
    bytes: &[u8],
    triggers: &Triggers,
    new_run_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Option<Variables>>, FlowParamsError> {
    if bytes.len() > MAX_FLOW_TRIGGER_PARAMS_BYTES {
        return Err(FlowParamsError::TooLarge(bytes.len()));
    }
    let pending: FlowPending =
        serde_json::from_slice(bytes).map_err(|err| FlowParamsError::NotJson(err.to_string()))?;
    Ok(match pending {
        FlowPending::Single(flow) => {
            let variables = to_variables(flow, new_run_id());
            triggers.iter().map(|_| Some(variables.clone())).collect()
        }
        FlowPending::PerConfig(map) => {
            let mut per_trigger: Vec<Option<Variables>> = triggers.iter().map(|_| None).collect();
            for (key, flow) in map {
                match triggers.iter().position(|t| t.is_flow_config_key(&key)) {
                    Some(index) => per_trigger[index] = Some(to_variables(flow, new_run_id())),
                    None => tracing::warn!(
                        // The key holds the trigger's URL, which may hold a secret.
                        method = key.split(' ').next().unwrap_or_default(),
                        "a trigger Flow left pending has no matching trigger in the config; \
                         dropped, as Flow drops it"
                    ),
                }
            }
            per_trigger
        }
    })
}

/// Flow's variables as ours. `flow_run_id` is Flow's older field when it wrote one, else
/// `fresh` (persisted by the caller, so every re-fire repeats it).
fn to_variables(flow: FlowVariables, fresh: String) -> Variables {
    let time =
        |text: &str| OffsetDateTime::parse(text, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let max = time(&flow.flow_published_at_max);
    Variables {
        materialization_name: flow.materialization_name,
        collection_names: flow.collection_names,
        connector_image: flow.connector_image,
        flow_published_at_min: time(&flow.flow_published_at_min),
        flow_published_at_max: max,
        run_id: flow
            .run_id
            .unwrap_or_else(|| triggers::run_id(std::time::SystemTime::from(max))),
        flow_run_id: flow
            .flow_run_id
            .filter(|id| !id.is_empty())
            .unwrap_or(fresh),
        transaction_count: 1,
        first_commit_seq: 0,
        last_commit_seq: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triggers::{ConfigFormat, validate};

    fn triggers() -> Triggers {
        validate(
            r#"{"config": {
                "a": {"url": "https://a.example.com", "payloadTemplate": "{}"},
                "b": {"url": "https://b.example.com/hook", "method": "PUT", "payloadTemplate": "{}"}
            }}"#,
            ConfigFormat::Json,
        )
        .expect("valid")
    }

    fn fresh() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("fresh-{n}")
        }
    }

    /// Flow's V1 snapshot `runtime__materialize__triggers__test__trigger-variables.snap`
    /// (estuary/flow @ 89a775b0b8, the same in runtime-next @ 081a874958), byte for byte.
    const V1_SINGLE: &[u8] = br#"{"collection_names":["acmeCo/collection-a","acmeCo/collection-b"],"connector_image":"ghcr.io/estuary/materialize-postgres:dev","materialization_name":"acmeCo/my-materialization","flow_published_at_min":"1970-01-01T00:08:20Z","flow_published_at_max":"1970-01-01T01:06:40Z","run_id":"2024-06-15T12:30:00.000Z"}"#;

    #[test]
    fn flows_single_form_fires_every_trigger_with_its_variables() {
        let pending = pending_per_trigger(V1_SINGLE, &triggers(), &mut fresh()).expect("reads");
        assert_eq!(pending.len(), 2);
        let v = pending[0].clone().expect("fires a");
        assert_eq!(pending[1].as_ref(), Some(&v), "and b, the same window");
        assert_eq!(v.materialization_name, "acmeCo/my-materialization");
        assert_eq!(
            v.collection_names,
            ["acmeCo/collection-a", "acmeCo/collection-b"]
        );
        assert_eq!(
            v.connector_image,
            "ghcr.io/estuary/materialize-postgres:dev"
        );
        assert_eq!(v.flow_published_at_min.unix_timestamp(), 500);
        assert_eq!(v.flow_published_at_max.unix_timestamp(), 4000);
        assert_eq!(
            v.run_id, "2024-06-15T12:30:00.000Z",
            "kept as Flow wrote it"
        );
        assert_eq!(v.flow_run_id, "fresh-1");
    }

    #[test]
    fn flows_per_config_form_goes_to_the_matching_triggers_and_drops_the_rest() {
        // V2 with debounce: keyed by `{METHOD} {url}`; chrono's `+00:00` times.
        let map = br#"{
            "POST https://a.example.com": {"collection_names": ["x"], "flow_published_at_min": "2024-01-01T00:00:00.123+00:00", "flow_published_at_max": "2024-01-01T00:00:01+00:00", "run_id": "2024-01-01T00:00:00+00:00"},
            "POST https://gone.example.com": {"collection_names": ["y"]}
        }"#;
        let pending = pending_per_trigger(map, &triggers(), &mut fresh()).expect("reads");
        let a = pending[0].as_ref().expect("a is pending");
        assert_eq!(a.collection_names, ["x"]);
        assert_eq!(
            a.flow_published_at_min.unix_timestamp_nanos(),
            1_704_067_200_123_000_000
        );
        assert_eq!(a.run_id, "2024-01-01T00:00:00+00:00");
        assert!(pending[1].is_none(), "nothing for b");
        // The method matches in any case, the URL once parsed.
        let map = br#"{"Put https://b.example.com/hook": {}}"#;
        let pending = pending_per_trigger(map, &triggers(), &mut fresh()).expect("reads");
        assert!(pending[0].is_none() && pending[1].is_some());
    }

    #[test]
    fn flows_other_shapes_read_as_flow_reads_them() {
        // runtime-next's persist snapshot writes `{"run_id":"r1"}`: one window.
        let pending =
            pending_per_trigger(br#"{"run_id":"r1"}"#, &triggers(), &mut fresh()).expect("reads");
        let v = pending[0].clone().expect("pending");
        assert_eq!(v.run_id, "r1");
        assert_eq!(v.flow_published_at_max, OffsetDateTime::UNIX_EPOCH);
        // An empty map: nothing pending.
        let pending = pending_per_trigger(b"{}", &triggers(), &mut fresh()).expect("reads");
        assert!(pending.iter().all(Option::is_none));
        // Older builds: `flow_run_id`, and V1's `""` for a transaction without clocks.
        let older = br#"{"materialization_name": "m", "flow_published_at_min": "", "flow_run_id": "6f1c2d7e-0000-4000-8000-000000000001"}"#;
        let v = pending_per_trigger(older, &triggers(), &mut fresh()).expect("reads")[0]
            .clone()
            .expect("pending");
        assert_eq!(v.flow_run_id, "6f1c2d7e-0000-4000-8000-000000000001");
        assert_eq!(v.flow_published_at_min, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(v.run_id, "1970-01-01T00:00:00.000Z");
        // Not JSON, or too large: typed errors.
        assert!(matches!(
            pending_per_trigger(b"\x0a\x03abc", &triggers(), &mut fresh()),
            Err(FlowParamsError::NotJson(_))
        ));
        let huge = vec![b' '; MAX_FLOW_TRIGGER_PARAMS_BYTES + 1];
        assert_eq!(
            pending_per_trigger(&huge, &triggers(), &mut fresh()).expect_err("bounded"),
            FlowParamsError::TooLarge(MAX_FLOW_TRIGGER_PARAMS_BYTES + 1)
        );
    }
}

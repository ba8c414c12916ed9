//! Estuary Flow's persisted trigger variables, as its runtimes store them under their
//! `trigger-params` key (estuary/flow `crates/models/src/triggers.rs`,
//! `PersistedTriggerParams`), read into [`Variables`]: one `TriggerVariables` fired by
//! every trigger (V1, and V2 before per-trigger debounce), or V2's map from
//! `"{METHOD} {url}"` to a window per trigger (`{}`: nothing pending). Every field is
//! optional (older builds wrote `flow_run_id` where newer ones write `run_id`), unknown
//! ones are ignored. Times: V1 wrote RFC 3339 with `Z` and trimmed fractions, or `""` for a
//! transaction without clocks; V2 writes chrono's form (`+00:00`). Both parse; an empty or
//! unparsable time becomes the Unix epoch, and `run_id` is kept as Flow wrote it. The
//! runtime (`triggers_runtime::flow_store`) finds the value in a Flow store and moves it.

use crate::{Triggers, Variables};
use serde::Deserialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// What Flow's pending value `bytes` gives each trigger of the config: `Some(variables)` for
/// each trigger it fires (in config order), `None` for the others. Entries of a map that
/// name no configured trigger are dropped, as Flow drops them (each logged). `new_run_id`
/// makes the `flow_run_id` of a window that has none (called once per window).
pub fn flow_pending_per_trigger(
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
        // An empty one is as good as none: stored empty, it would read back as the
        // fallback below anyway (params of builds before `run_id` hold it empty), so a
        // re-fire would not repeat it.
        run_id: flow
            .run_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| crate::run_id(std::time::SystemTime::from(max))),
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
    use crate::{ConfigFormat, validate};

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
        let pending =
            flow_pending_per_trigger(V1_SINGLE, &triggers(), &mut fresh()).expect("reads");
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

    /// Found by the `flow_params` fuzz target: `{"run_id":""}` read into variables whose
    /// `run_id` did not survive being stored (an empty one reads back as the fallback).
    #[test]
    fn an_empty_run_id_is_the_fallback_and_survives_being_stored() {
        let pending = flow_pending_per_trigger(br#"{"run_id":""}"#, &triggers(), &mut fresh())
            .expect("reads");
        let v = pending[0].clone().expect("fires");
        assert_eq!(v.run_id, "1970-01-01T00:00:00.000Z");
        assert_eq!(Variables::from_params(v.to_params()), Ok(v));
    }

    #[test]
    fn flows_per_config_form_goes_to_the_matching_triggers_and_drops_the_rest() {
        // V2 with debounce: keyed by `{METHOD} {url}`; chrono's `+00:00` times.
        let map = br#"{
            "POST https://a.example.com": {"collection_names": ["x"], "flow_published_at_min": "2024-01-01T00:00:00.123+00:00", "flow_published_at_max": "2024-01-01T00:00:01+00:00", "run_id": "2024-01-01T00:00:00+00:00"},
            "POST https://gone.example.com": {"collection_names": ["y"]}
        }"#;
        let pending = flow_pending_per_trigger(map, &triggers(), &mut fresh()).expect("reads");
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
        let pending = flow_pending_per_trigger(map, &triggers(), &mut fresh()).expect("reads");
        assert!(pending[0].is_none() && pending[1].is_some());
    }

    #[test]
    fn flows_other_shapes_read_as_flow_reads_them() {
        // runtime-next's persist snapshot writes `{"run_id":"r1"}`: one window.
        let pending = flow_pending_per_trigger(br#"{"run_id":"r1"}"#, &triggers(), &mut fresh())
            .expect("reads");
        let v = pending[0].clone().expect("pending");
        assert_eq!(v.run_id, "r1");
        assert_eq!(v.flow_published_at_max, OffsetDateTime::UNIX_EPOCH);
        // An empty map: nothing pending.
        let pending = flow_pending_per_trigger(b"{}", &triggers(), &mut fresh()).expect("reads");
        assert!(pending.iter().all(Option::is_none));
        // Older builds: `flow_run_id`, and V1's `""` for a transaction without clocks.
        let older = br#"{"materialization_name": "m", "flow_published_at_min": "", "flow_run_id": "6f1c2d7e-0000-4000-8000-000000000001"}"#;
        let v = flow_pending_per_trigger(older, &triggers(), &mut fresh()).expect("reads")[0]
            .clone()
            .expect("pending");
        assert_eq!(v.flow_run_id, "6f1c2d7e-0000-4000-8000-000000000001");
        assert_eq!(v.flow_published_at_min, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(v.run_id, "1970-01-01T00:00:00.000Z");
        // Not JSON, or too large: typed errors.
        assert!(matches!(
            flow_pending_per_trigger(b"\x0a\x03abc", &triggers(), &mut fresh()),
            Err(FlowParamsError::NotJson(_))
        ));
        let huge = vec![b' '; MAX_FLOW_TRIGGER_PARAMS_BYTES + 1];
        assert_eq!(
            flow_pending_per_trigger(&huge, &triggers(), &mut fresh()).expect_err("bounded"),
            FlowParamsError::TooLarge(MAX_FLOW_TRIGGER_PARAMS_BYTES + 1)
        );
    }
}

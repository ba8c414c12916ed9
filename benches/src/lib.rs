//! Fixtures shared by the criterion benches: realistic materializations, stats and
//! templates, built outside the timed closures.

use triggers::{Clock, Materialization};
use triggers_proto::BindingStats;

/// A materialization with `bindings` bindings over distinct collections.
pub fn materialization(bindings: usize) -> Materialization {
    Materialization {
        name: "acmeCo/analytics/materialize-snowflake".to_string(),
        connector_image: "ghcr.io/estuary/materialize-snowflake:v3".to_string(),
        binding_collections: (0..bindings)
            .map(|i| format!("acmeCo/analytics/collection-{i:03}"))
            .collect(),
    }
}

/// Stats of a transaction in which every binding read documents.
pub fn stats(bindings: usize) -> Vec<BindingStats> {
    (0..bindings as u32)
        .map(|binding| BindingStats {
            binding,
            docs: 100,
            bytes: 25_600,
            first_clock: Clock::from_unix(1_700_000_000 + u64::from(binding), 0).0,
            last_clock: Clock::from_unix(1_700_000_100 + u64::from(binding), 500).0,
        })
        .collect()
}

/// A payload template of typical size, using every variable.
pub const TEMPLATE: &str = r#"{
  "dag_run_id": "flow-{{flow_run_id}}",
  "conf": {
    "materialization": "{{materialization_name}}",
    "image": "{{connector_image}}",
    "collections": {{json collection_names}},
    "from": "{{flow_published_at_min}}",
    "to": "{{flow_published_at_max}}"
  }
}"#;

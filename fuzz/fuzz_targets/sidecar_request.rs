//! Any bytes as a sidecar request: each of the service's request messages decodes or is
//! refused, never panics, and what decodes goes through the checks the sidecar applies
//! before touching the store (stats into variables; configs through validation), which
//! return a value or a typed error. The store itself is not in this target.

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggers::{ConfigFormat, Materialization, Variables, validate};
use triggers_proto::Message;
use triggers_proto::sidecar::{
    AcknowledgedRequest, AwaitDeliveryRequest, StartCommitRequest, ValidateConfigRequest,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = StartCommitRequest::decode(data) {
        let materialization = Materialization {
            name: "acmeCo/fuzz/materialize".to_string(),
            connector_image: "ghcr.io/estuary/materialize-example:v1".to_string(),
            binding_collections: vec!["a".to_string(), "b".to_string(), "a".to_string()],
        };
        if let Ok(Some(variables)) =
            Variables::from_stats(&materialization, &request.stats, "run".into())
        {
            assert!(!variables.collection_names.is_empty());
            assert!(variables.flow_published_at_min <= variables.flow_published_at_max);
        }
    }
    if let Ok(request) = ValidateConfigRequest::decode(data) {
        let format = match request.format() {
            triggers_proto::sidecar::ConfigFormat::Json => ConfigFormat::Json,
            triggers_proto::sidecar::ConfigFormat::Yaml => ConfigFormat::Yaml,
        };
        if let Err(errors) = validate(&request.config, format) {
            assert!(!errors.0.is_empty());
        }
    }
    let _ = AcknowledgedRequest::decode(data);
    let _ = AwaitDeliveryRequest::decode(data);
});

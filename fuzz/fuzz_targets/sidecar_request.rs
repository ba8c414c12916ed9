//! Any bytes as a sidecar request: each of the service's request messages decodes or is
//! refused, never panics, and what decodes goes through the checks the sidecar applies
//! before touching the store (stats into variables; configs through validation), which
//! return a value or a typed error; Preview and TestFire requests go through variable
//! parsing and a render against a fixed config (nothing is sent). The store itself is
//! not in this target.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use triggers::{ConfigFormat, Materialization, PreviewVariables, Triggers, Variables, validate};
use triggers_proto::Message;
use triggers_proto::sidecar::{
    AcknowledgedRequest, AwaitDeliveryRequest, PreviewRequest, StartCommitRequest,
    TestFireRequest, ValidateConfigRequest,
};

/// Two triggers whose templates use every variable, raw and through `json`.
static TRIGGERS: LazyLock<Option<Triggers>> = LazyLock::new(|| {
    let template = r#"{"m": {{json materialization_name}}, "c": {{json collection_names}},
        "i": {{json connector_image}}, "from": "{{flow_published_at_min}}",
        "to": "{{flow_published_at_max}}", "run": {{json flow_run_id}},
        "n": {{transaction_count}}, "seq": [{{first_commit_seq}}, {{last_commit_seq}}],
        "id": {{json webhook_id}}}"#;
    let config = serde_json::json!({"config": [
        {"url": "https://example.com/a", "payloadTemplate": template},
        {"url": "https://example.com/b", "payloadTemplate": "{\"name\": \"{{materialization_name}}\"}"},
    ]});
    validate(&config.to_string(), ConfigFormat::Json).ok()
});

/// Preview's checks: variables parse or are a typed error; a preview is JSON or a typed
/// error naming the trigger; an index past the config is an error, never a panic.
fn preview(trigger: u32, variables: Option<&str>) {
    let triggers = TRIGGERS.as_ref().expect("the fixed config is valid");
    let variables = match variables {
        None => PreviewVariables::placeholder(),
        Some(text) => match PreviewVariables::from_json(text) {
            Ok(variables) => variables,
            Err(_) => return,
        },
    };
    let index = usize::try_from(trigger).unwrap_or(usize::MAX);
    match triggers.preview(index, &variables) {
        Ok(preview) => {
            assert!(index < triggers.len());
            assert!(serde_json::from_str::<serde_json::Value>(&preview.payload).is_ok());
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}

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
    if let Ok(request) = PreviewRequest::decode(data) {
        preview(request.trigger, request.variables.as_deref());
    }
    if let Ok(request) = TestFireRequest::decode(data) {
        preview(request.trigger, request.variables.as_deref());
    }
    let _ = AcknowledgedRequest::decode(data);
    let _ = AwaitDeliveryRequest::decode(data);
});

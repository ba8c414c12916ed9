//! Any bytes as Estuary Flow's stored `trigger-params` (read from a store Flow's runtime
//! wrote): reading them returns the variables each trigger fires with, or a typed error,
//! never panics, within the documented size bound; what is read persists and reads back
//! as the same variables, as the runtime stores it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use triggers::{ConfigFormat, MAX_FLOW_TRIGGER_PARAMS_BYTES, Triggers, Variables, validate};

/// Two triggers, as Flow keys them: `POST https://a.example.com` and
/// `PUT https://b.example.com/hook`.
fn triggers() -> &'static Triggers {
    static TRIGGERS: OnceLock<Triggers> = OnceLock::new();
    TRIGGERS.get_or_init(|| {
        validate(
            r#"{"config": {
                "a": {"url": "https://a.example.com", "payloadTemplate": "{}"},
                "b": {"url": "https://b.example.com/hook", "method": "PUT", "payloadTemplate": "{}"}
            }}"#,
            ConfigFormat::Json,
        )
        .expect("valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut n = 0;
    let read = triggers::flow_pending_per_trigger(data, triggers(), &mut || {
        n += 1;
        format!("fresh-{n}")
    });
    let Ok(pending) = read else {
        return;
    };
    assert!(data.len() <= MAX_FLOW_TRIGGER_PARAMS_BYTES);
    assert_eq!(pending.len(), triggers().len());
    for variables in pending.into_iter().flatten() {
        // Stored as the runtime stores it, it reads back the same.
        assert_eq!(Variables::from_params(variables.to_params()), Ok(variables));
    }
});

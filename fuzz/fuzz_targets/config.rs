//! Any bytes as a trigger config, in JSON and in YAML: validation returns the compiled
//! triggers or typed errors, never panics, overflows a stack or runs unbounded (the
//! document bounds are checked before parsing; libFuzzer's `-timeout` catches a slow
//! one). A config that validates renders every template to JSON with the placeholder
//! variables, as validation promised, and renders within the bounds (a payload or a
//! typed error) for adversarial transactions: many collections, long names.

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggers::{ConfigFormat, MAX_PAYLOAD_BYTES, Variables, validate, webhook_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        match validate(text, format) {
            Ok(triggers) => {
                let placeholder = Variables::placeholder();
                let mut many = Variables::placeholder();
                many.collection_names = (0..20_000).map(|i| format!("acmeCo/{i}")).collect();
                let mut long = Variables::placeholder();
                long.materialization_name = "\"n\\".repeat(100_000);
                long.collection_names = vec!["c".repeat(100_000); 3];
                for index in 0..triggers.len() {
                    let id = webhook_id(&placeholder.flow_run_id, index);
                    let body = triggers
                        .render(index, &placeholder, &id)
                        .expect("validated templates render");
                    serde_json::from_str::<serde::de::IgnoredAny>(&body)
                        .expect("validated templates render JSON");
                    for variables in [&many, &long] {
                        if let Ok(body) = triggers.render(index, variables, &id) {
                            assert!(body.len() <= MAX_PAYLOAD_BYTES, "output past the budget");
                        }
                    }
                }
            }
            Err(errors) => {
                assert!(!errors.0.is_empty(), "an error list is never empty");
            }
        }
    }
});

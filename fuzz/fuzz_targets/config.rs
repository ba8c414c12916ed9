//! Any bytes as a trigger config, in JSON and in YAML: validation returns the compiled
//! triggers or typed errors, never panics; and a config that validates renders every
//! template to JSON with the placeholder variables, as validation promised.

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggers::{ConfigFormat, Variables, validate, webhook_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        match validate(text, format) {
            Ok(triggers) => {
                let variables = Variables::placeholder();
                for index in 0..triggers.len() {
                    let id = webhook_id(&variables.flow_run_id, index);
                    let body = triggers
                        .render(index, &variables, &id)
                        .expect("validated templates render");
                    serde_json::from_str::<serde::de::IgnoredAny>(&body)
                        .expect("validated templates render JSON");
                }
            }
            Err(errors) => assert!(!errors.0.is_empty(), "an error list is never empty"),
        }
    }
});

//! Any bytes as a trigger config, in JSON and in YAML: validation returns the compiled
//! triggers or typed errors, never panics; and a config that validates renders every
//! template to JSON with the placeholder variables, as validation promised.

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggers::{ConfigFormat, Templates, Variables, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        match validate(text, format) {
            Ok(triggers) => {
                let context = Templates::context(&Variables::placeholder());
                for index in 0..triggers.len() {
                    let body = triggers
                        .render(index, &context)
                        .expect("validated templates render");
                    serde_json::from_str::<serde::de::IgnoredAny>(&body)
                        .expect("validated templates render JSON");
                }
            }
            Err(errors) => assert!(!errors.0.is_empty(), "an error list is never empty"),
        }
    }
});

//! Arbitrary templates against arbitrary variables: compiling and rendering return a
//! value or a typed error, never panic; rendering is deterministic; direct rendering is
//! byte for byte Handlebars'; and the `json` helper round-trips any string and list
//! exactly.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use triggers::{Templates, Variables};

#[derive(Debug, Arbitrary)]
struct Input {
    template: String,
    name: String,
    collections: Vec<String>,
    image: String,
    run_id: String,
    min_secs: u32,
    max_secs: u32,
    nanos: u32,
}

fuzz_target!(|input: Input| {
    let at = |secs: u32| {
        time::OffsetDateTime::from_unix_timestamp(i64::from(secs))
            .expect("u32 seconds are in range")
            .replace_nanosecond(input.nanos % 1_000_000_000)
            .expect("nanos below one second")
    };
    let variables = Variables {
        materialization_name: input.name.clone(),
        collection_names: input.collections.clone(),
        connector_image: input.image.clone(),
        flow_published_at_min: at(input.min_secs),
        flow_published_at_max: at(input.max_secs),
        flow_run_id: input.run_id.clone(),
        transaction_count: u64::from(input.nanos % 7) + 1,
        first_commit_seq: u64::from(input.min_secs),
        last_commit_seq: u64::from(input.max_secs),
    };
    let context = Templates::context(&variables);

    let mut templates = Templates::new();
    if templates.compile(0, &input.template).is_ok() {
        let first = templates.render(0, &context);
        let second = templates.render(0, &context);
        assert_eq!(first, second, "rendering is deterministic");

        // A template with a direct plan renders exactly what Handlebars renders from
        // the serialised variables; one without renders by Handlebars itself.
        let id = triggers::webhook_id(&variables.flow_run_id, 0);
        let mut with_id = context.clone();
        with_id["webhook_id"] = serde_json::Value::String(id.clone());
        assert_eq!(
            templates.render_variables(0, &variables, &id),
            templates.render(0, &with_id),
            "direct: {}",
            templates.renders_directly(0)
        );
    }

    let mut json = Templates::new();
    json.compile(
        1,
        r#"{"n": {{json materialization_name}}, "c": {{json collection_names}}}"#,
    )
    .expect("the fixed template compiles");
    let out = json.render(1, &context).expect("known variables render");
    let value: serde_json::Value = serde_json::from_str(&out).expect("the json helper emits JSON");
    assert_eq!(value["n"], serde_json::Value::String(input.name));
    assert_eq!(value["c"], serde_json::json!(input.collections));
});

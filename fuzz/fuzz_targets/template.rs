//! Arbitrary templates against adversarial variables (many collections, long names):
//! compiling and rendering return a value or a typed error, never panic or overflow a
//! stack, and stay within the documented bounds (no output past `MAX_PAYLOAD_BYTES`;
//! libFuzzer's `-timeout` catches a slow render); rendering is deterministic; direct
//! rendering is byte for byte Handlebars'; the `json` helper round-trips any string
//! and list exactly; and `timestamp` brackets each publish time between its floor and
//! its ceil, less than one unit apart.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use triggers::{MAX_PAYLOAD_BYTES, TemplateError, Templates, Variables};

#[derive(Debug, Arbitrary)]
struct Input {
    template: String,
    name: String,
    collections: Vec<String>,
    /// Repeats the collections up to this many times (in thousands), so a render meets
    /// a transaction of a very large materialization.
    repeat: u8,
    /// Lengthens the materialization's name by this many KiB.
    long_name: u8,
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
    let mut collections = input.collections.clone();
    if !collections.is_empty() && input.repeat > 0 {
        let target = usize::from(input.repeat % 32) * 1000;
        while collections.len() < target {
            let next = collections[collections.len() % input.collections.len()].clone();
            collections.push(next);
        }
    }
    let mut name = input.name.clone();
    name.push_str(&"n".repeat(usize::from(input.long_name % 128) * 1024));
    let variables = Variables {
        materialization_name: name,
        collection_names: collections,
        connector_image: input.image.clone(),
        flow_published_at_min: at(input.min_secs),
        flow_published_at_max: at(input.max_secs),
        flow_run_id: input.run_id.clone(),
        run_id: input.run_id.clone(),
        transaction_count: u64::from(input.nanos % 7) + 1,
        first_commit_seq: u64::from(input.min_secs),
        last_commit_seq: u64::from(input.max_secs),
    };
    let context = Templates::context(&variables);
    let bounded = |rendered: &Result<String, TemplateError>| {
        if let Ok(out) = rendered {
            assert!(out.len() <= MAX_PAYLOAD_BYTES, "output past the budget");
        }
    };

    let mut templates = Templates::new();
    if templates.compile(0, &input.template).is_ok() {
        let first = templates.render(0, &context);
        bounded(&first);
        let second = templates.render(0, &context);
        assert_eq!(first, second, "rendering is deterministic");

        // A template with a direct plan renders exactly what Handlebars renders from
        // the serialised variables; one without renders by Handlebars itself.
        let id = triggers::webhook_id(&variables.flow_run_id, 0);
        let mut with_id = context.clone();
        with_id["webhook_id"] = serde_json::Value::String(id.clone());
        let delivered = templates.render_variables(0, &variables, &id);
        bounded(&delivered);
        assert_eq!(
            delivered,
            templates.render(0, &with_id),
            "direct: {}",
            templates.renders_directly(0)
        );
    }

    // `timestamp` at every precision: floor <= the time <= ceil, less than a unit apart,
    // equal exactly when the time is whole in that unit.
    let mut stamps = Templates::new();
    stamps
        .compile(
            2,
            r#"{{timestamp flow_published_at_max "s"}} {{timestamp flow_published_at_max "s" "ceil"}} {{timestamp flow_published_at_max "ms"}} {{timestamp flow_published_at_max "ms" "ceil"}} {{timestamp flow_published_at_max "us"}} {{timestamp flow_published_at_max "us" "ceil"}} {{timestamp flow_published_at_max "100ns"}} {{timestamp flow_published_at_max "100ns" "ceil"}}"#,
        )
        .expect("the timestamp template compiles");
    let out = stamps
        .render(2, &context)
        .expect("u32 seconds are in timestamp's range");
    let parsed: Vec<time::OffsetDateTime> = out
        .split(' ')
        .map(|text| {
            assert!(text.ends_with('Z'), "{text}");
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .expect("timestamp writes RFC 3339")
        })
        .collect();
    let at = variables.flow_published_at_max;
    for (pair, unit_ns) in parsed
        .chunks_exact(2)
        .zip([1_000_000_000i64, 1_000_000, 1_000, 100])
    {
        let (floor, ceil) = (pair[0], pair[1]);
        let unit = time::Duration::nanoseconds(unit_ns);
        assert!(floor <= at && at <= ceil && at - floor < unit, "{out}");
        let whole = i64::from(at.nanosecond()) % unit_ns == 0;
        let apart = if whole { time::Duration::ZERO } else { unit };
        assert_eq!(ceil - floor, apart, "{out}");
    }

    let mut json = Templates::new();
    json.compile(
        1,
        r#"{"n": {{json materialization_name}}, "c": {{json collection_names}}}"#,
    )
    .expect("the fixed template compiles");
    match json.render(1, &context) {
        Ok(out) => {
            let value: serde_json::Value =
                serde_json::from_str(&out).expect("the json helper emits JSON");
            assert_eq!(
                value["n"],
                serde_json::Value::String(variables.materialization_name.clone())
            );
            assert_eq!(value["c"], serde_json::json!(variables.collection_names));
        }
        Err(err) => assert_eq!(
            err,
            TemplateError::PayloadTooLarge {
                max: MAX_PAYLOAD_BYTES
            }
        ),
    }
});

//! The checked-in JSON Schema is current, and it agrees with the Rust parser and
//! validator on good and bad configs.
//!
//! Regenerate `config.schema.json` after changing the config types with
//! `UPDATE_SCHEMA=1 cargo test -p triggers schema`.

use std::path::Path;
use triggers::{ConfigFormat, config_schema, validate};

fn schema_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.schema.json")
}

fn rendered() -> String {
    let mut text = serde_json::to_string_pretty(&config_schema()).expect("serializes");
    text.push('\n');
    text
}

#[test]
fn checked_in_schema_is_current() {
    let path = schema_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, rendered()).expect("writes config.schema.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == rendered(),
        "crates/triggers/config.schema.json is stale; regenerate it with \
         `UPDATE_SCHEMA=1 cargo test -p triggers schema` and commit the result"
    );
}

#[test]
fn schema_marks_secrets_and_carries_bounds_and_defaults() {
    let schema = config_schema();
    let trigger = &schema["$defs"]["TriggerConfig"];
    let props = &trigger["properties"];
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(trigger["additionalProperties"], false);
    assert_eq!(props["headers"]["additionalProperties"]["secret"], true);
    assert_eq!(props["signingSecrets"]["items"]["secret"], true);
    assert_eq!(
        props["signingSecrets"]["maxItems"],
        triggers::MAX_SIGNING_SECRETS
    );
    assert_eq!(props["timeoutSecs"]["minimum"], triggers::MIN_TIMEOUT_SECS);
    assert_eq!(props["timeoutSecs"]["maximum"], triggers::MAX_TIMEOUT_SECS);
    // No default on either spelling of a pair (see no_exclusive_spelling_has_a_schema_default).
    assert!(props["timeoutSecs"].get("default").is_none());
    assert_eq!(props["maxRetries"]["minimum"], 0);
    assert_eq!(props["maxRetries"]["maximum"], triggers::MAX_MAX_RETRIES);
    assert!(props["maxRetries"].get("default").is_none());
    assert_eq!(
        props["retryBudgetSecs"]["minimum"],
        triggers::MIN_RETRY_BUDGET_SECS
    );
    assert_eq!(
        props["retryBudgetSecs"]["maximum"],
        triggers::MAX_RETRY_BUDGET_SECS
    );
    assert_eq!(
        props["retryBudgetSecs"]["default"],
        triggers::DEFAULT_RETRY_BUDGET_SECS
    );
    assert_eq!(props["followRedirects"]["default"], false);
    let responses = &schema["$defs"]["ResponsesConfig"];
    assert_eq!(responses["additionalProperties"], false);
    assert_eq!(
        props["responses"]["default"],
        serde_json::json!({"alreadyDelivered": triggers::DEFAULT_ALREADY_DELIVERED, "retry": []})
    );
    for list in ["alreadyDelivered", "retry"] {
        let list = &responses["properties"][list];
        assert_eq!(list["maxItems"], triggers::MAX_RESPONSE_STATUSES);
        assert_eq!(list["uniqueItems"], true);
        assert_eq!(list["items"]["minimum"], triggers::MIN_RESPONSE_STATUS);
        assert_eq!(list["items"]["maximum"], triggers::MAX_RESPONSE_STATUS);
    }
    assert_eq!(
        responses["properties"]["alreadyDelivered"]["items"]["not"]["enum"],
        serde_json::json!(triggers::NOT_ALREADY_DELIVERED)
    );
    assert!(
        props["url"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("http")),
        "{props}"
    );
    assert_eq!(
        trigger["required"],
        serde_json::json!(["url", "payloadTemplate"])
    );
}

#[test]
fn schema_marks_auth_credentials_secret_and_bounds_every_auth_string() {
    let schema = config_schema();
    let kinds = schema["$defs"]["AuthConfig"]["oneOf"]
        .as_array()
        .expect("one schema per kind");
    assert_eq!(kinds.len(), 2);
    for kind in kinds {
        assert_eq!(kind["additionalProperties"], false);
        let props = kind["properties"].as_object().expect("properties");
        for (name, prop) in props {
            let secret = matches!(name.as_str(), "clientSecret" | "password");
            assert_eq!(prop["secret"].as_bool().unwrap_or(false), secret, "{name}");
            if (prop["type"] == "string" || prop["type"][0] == "string") && name != "type" {
                assert_eq!(prop["maxLength"], triggers::MAX_AUTH_FIELD_BYTES, "{name}");
            }
        }
    }
    assert_eq!(
        kinds[0]["properties"]["type"]["const"],
        "oauth2ClientCredentials"
    );
    assert_eq!(
        kinds[0]["properties"]["clientAuthentication"]["default"],
        "basic"
    );
    assert_eq!(kinds[1]["properties"]["type"]["const"], "tokenEndpoint");
    assert_eq!(
        kinds[1]["properties"]["tokenPointer"]["default"],
        triggers::DEFAULT_TOKEN_POINTER
    );
}

fn trigger(extra: &str) -> String {
    format!(
        r#"{{"config": [{{"url": "https://hooks.example.com/x", "payloadTemplate": "{{}}"{extra}}}]}}"#
    )
}

/// Configs both the schema and the Rust validator accept.
fn good_examples() -> Vec<String> {
    let ten = ["\"whsec_c2VjcmV0\""; 10].join(",");
    let good = [
        trigger(""),
        trigger(
            r#", "method": "PATCH", "timeoutSecs": 1, "maxRetries": 0, "retryBudgetSecs": 3600"#,
        ),
        trigger(r#", "timeoutSecs": 300, "maxRetries": 20, "followRedirects": true"#),
        trigger(
            r#", "headers": {"Authorization": "Bearer x"}, "signingSecrets": ["whsec_c2VjcmV0"]"#,
        ),
        r#"{"config": []}"#.to_string(),
        trigger(
            r#", "auth": {"type": "tokenEndpoint", "url": "https://airflow.example.com/auth/token", "username": "u", "password": "p"}"#,
        ),
        trigger(
            r#", "auth": {"type": "oauth2ClientCredentials", "tokenUrl": "https://login.example.com/token", "clientId": "i", "clientSecret": "s", "scope": "a b", "audience": "x", "clientAuthentication": "body"}"#,
        ),
        trigger(r#", "responses": {}"#),
        trigger(r#", "responses": {"alreadyDelivered": [], "retry": [425, 423, 408]}"#),
        trigger(r#", "responses": {"alreadyDelivered": [400, 409, 499]}"#),
        // Issue 18, item 5.
        trigger(r#", "collections": ["acmeCo/orders/", "acmeCo/users"]"#),
        trigger(r#", "collections": null"#),
    ];
    let most: Vec<String> = (0..triggers::MAX_COLLECTIONS)
        .map(|i| format!("\"c{i}\""))
        .collect();
    let longest = "c".repeat(triggers::MAX_COLLECTION_BYTES);
    good.into_iter()
        .chain([
            trigger(&format!(r#", "signingSecrets": [{ten}]"#)),
            trigger(&format!(r#", "collections": [{}]"#, most.join(","))),
            trigger(&format!(r#", "collections": ["{longest}"]"#)),
        ])
        .collect()
}

/// Configs both the schema and the Rust validator refuse.
fn bad_examples() -> Vec<String> {
    let eleven = ["\"whsec_c2VjcmV0\""; 11].join(",");
    let too_many: Vec<String> = (0..=triggers::MAX_COLLECTIONS)
        .map(|i| format!("\"c{i}\""))
        .collect();
    let too_long = "c".repeat(triggers::MAX_COLLECTION_BYTES + 1);
    let collections = [
        trigger(r#", "collections": []"#),
        trigger(r#", "collections": ["a", "a"]"#),
        trigger(r#", "collections": [""]"#),
        trigger(r#", "collections": "acmeCo/orders""#),
        trigger(r#", "collections": [1]"#),
        trigger(&format!(r#", "collections": [{}]"#, too_many.join(","))),
        trigger(&format!(r#", "collections": ["{too_long}"]"#)),
    ];
    let bad = [
        trigger(r#", "timeoutSecs": 0"#),
        trigger(r#", "timeoutSecs": 301"#),
        trigger(r#", "maxRetries": 21"#),
        trigger(r#", "maxRetries": -1"#),
        trigger(r#", "retryBudgetSecs": 0"#),
        trigger(r#", "retryBudgetSecs": 3601"#),
        trigger(&format!(r#", "signingSecrets": [{eleven}]"#)),
        trigger(r#", "method": "GET""#),
        trigger(r#", "retries": 3"#),
        trigger(r#", "headers": {"A": 1}"#),
        trigger(r#", "followRedirects": "yes""#),
        trigger(r#", "auth": {"type": "basic", "username": "u", "password": "p"}"#),
        trigger(
            r#", "auth": {"type": "tokenEndpoint", "url": "https://a.example.com", "username": "u"}"#,
        ),
        trigger(
            r#", "auth": {"type": "tokenEndpoint", "url": "https://a.example.com", "username": "", "password": "p"}"#,
        ),
        trigger(
            r#", "auth": {"type": "oauth2ClientCredentials", "tokenUrl": "https://a.example.com", "clientId": "i", "clientSecret": "s", "clientAuthentication": "header"}"#,
        ),
        trigger(
            r#", "auth": {"type": "oauth2ClientCredentials", "url": "https://a.example.com", "clientId": "i", "clientSecret": "s"}"#,
        ),
        trigger(r#", "responses": {"alreadyDelivered": [399]}"#),
        trigger(r#", "responses": {"alreadyDelivered": [500]}"#),
        trigger(r#", "responses": {"retry": [200]}"#),
        trigger(r#", "responses": {"alreadyDelivered": [401]}"#),
        trigger(r#", "responses": {"retry": [401]}"#),
        trigger(r#", "responses": {"alreadyDelivered": [429]}"#),
        trigger(r#", "responses": {"retry": [425, 425]}"#),
        trigger(&format!(
            r#", "responses": {{"retry": [{}]}}"#,
            (400..417)
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )),
        trigger(r#", "responses": {"retries": [425]}"#),
        trigger(r#", "responses": [409]"#),
        r#"{"config": [{"url": "https://x"}]}"#.to_string(),
        r#"{"config": [{"payloadTemplate": "{}"}]}"#.to_string(),
        r#"{"config": [], "extra": 1}"#.to_string(),
        r#"{}"#.to_string(),
    ];
    bad.into_iter().chain(collections).collect()
}

#[test]
fn schema_and_rust_agree_on_examples() {
    let validator = jsonschema::validator_for(&config_schema()).expect("schema compiles");
    for text in good_examples() {
        let instance: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert!(validator.is_valid(&instance), "schema refused {text}");
        validate(&text, ConfigFormat::Json).unwrap_or_else(|err| panic!("{text}: {err}"));
    }
    for text in bad_examples() {
        let instance: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert!(!validator.is_valid(&instance), "schema accepted {text}");
        assert!(
            validate(&text, ConfigFormat::Json).is_err(),
            "Rust accepted {text}"
        );
    }
}

/// Issue 18, item 6: the JSON Schema works in the validators form editors use. ajv 8
/// (npm; JSON Forms and RJSF build on it) compiles the checked-in schema in strict mode
/// with only `secret` registered (schemars's `uint32`/`uint64` formats were "unknown
/// format" there), and ajv agrees with our parser on every example here and every config
/// in the README. `scripts/test` installs the pinned ajv (`scripts/ajv`) and sets
/// `TRIGGERS_AJV_DIR`; under CI a missing install is a failure.
#[test]
fn the_json_schema_works_in_the_validators_form_editors_use() {
    let Some(ajv_dir) = std::env::var_os("TRIGGERS_AJV_DIR") else {
        assert!(
            std::env::var_os("TRIGGERS_REQUIRE_AJV").is_none(),
            "TRIGGERS_REQUIRE_AJV is set but TRIGGERS_AJV_DIR names no ajv install (scripts/ajv)"
        );
        eprintln!("TRIGGERS_AJV_DIR is not set: skipping the check with ajv (run scripts/ajv)");
        return;
    };
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).expect("reads the schema"))
            .expect("the schema is JSON");

    // (name, instance, whether our parser and validator accept it)
    let mut cases = Vec::new();
    let mut json_case = |name: String, text: &str| {
        let instance: serde_json::Value = serde_json::from_str(text).expect("JSON");
        let rust = validate(text, ConfigFormat::Json).is_ok();
        cases.push((name, instance, rust));
    };
    for (i, text) in good_examples().iter().enumerate() {
        json_case(format!("good example {i}: {text}"), text);
    }
    for (i, text) in bad_examples().iter().enumerate() {
        json_case(format!("bad example {i}: {text}"), text);
    }
    let readme = super::readme::readme_configs();
    assert!(readme.len() > 5, "only {} README configs", readme.len());
    for (heading, config) in readme {
        let config = super::readme::fill_placeholders(&config);
        let instance: serde_json::Value = serde_yaml_ng::from_str(&config).expect("YAML");
        let rust = validate(&config, ConfigFormat::Yaml).is_ok();
        cases.push((format!("README config under {heading:?}"), instance, rust));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("cases.json");
    let payload = serde_json::json!({
        "schema": schema,
        "cases": cases
            .iter()
            .map(|(name, instance, _)| serde_json::json!({"name": name, "instance": instance}))
            .collect::<Vec<_>>(),
    });
    std::fs::write(&input, payload.to_string()).expect("writes the cases");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ajv/check.cjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(&ajv_dir)
        .arg(&input)
        .output()
        .expect("runs node");
    assert!(
        out.status.success(),
        "ajv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ajv's answer");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());
    for ((name, _, rust), result) in cases.iter().zip(results) {
        assert_eq!(result["name"], name.as_str());
        assert_eq!(
            result["valid"].as_bool(),
            Some(*rust),
            "ajv {} and our parser disagree on {name}: Rust {}, ajv errors {}",
            answer["version"],
            if *rust { "accepts" } else { "refuses" },
            result["errors"]
        );
    }
    // Every good example and README config is accepted, every bad one refused: the
    // comparison above is not between two validators that refuse everything.
    let accepted = cases.iter().filter(|(_, _, rust)| *rust).count();
    assert_eq!(accepted, cases.len() - bad_examples().len());
}

/// Issue 18, items 1 and 2: the schema and the parser agree on Flow's format (the map
/// form, `interval`, `timeout`, `maxAttempts`) and on trigger names.
#[test]
fn schema_and_rust_agree_on_flow_format_and_trigger_names() {
    let validator = jsonschema::validator_for(&config_schema()).expect("schema compiles");
    let entry = r#""url": "https://hooks.example.com/x", "payloadTemplate": "{}""#;
    let map = |fields: &str| format!(r#"{{"config": {{"onCommit": {{{entry}{fields}}}}}}}"#);
    let good = [
        map(""),
        map(r#", "timeout": "30s", "maxAttempts": 3"#),
        map(r#", "timeout": "1m 30s", "maxAttempts": 21"#),
        map(r#", "timeout": "5m", "maxAttempts": 1"#),
        map(r#", "timeout": "1500ms""#),
        map(r#", "timeoutSecs": 30, "maxRetries": 2"#),
        format!(r#"{{"interval": "30m", "config": {{"a": {{{entry}}}, "b.c-d_e": {{{entry}}}}}}}"#),
        format!(r#"{{"interval": "0s", "config": [{{{entry}}}]}}"#),
        r#"{"interval": "24h", "config": []}"#.to_string(),
        r#"{"config": {}}"#.to_string(),
        trigger(r#", "name": "onCommit""#),
        trigger(r#", "name": "0", "timeout": "45s""#),
        trigger(&format!(r#", "name": "{}""#, "n".repeat(64))),
    ];
    for text in &good {
        let instance: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert!(validator.is_valid(&instance), "schema refused {text}");
        validate(text, ConfigFormat::Json).unwrap_or_else(|err| panic!("{text}: {err}"));
    }
    let bad = [
        map(r#", "timeout": "30s", "timeoutSecs": 30"#),
        map(r#", "maxAttempts": 3, "maxRetries": 2"#),
        map(r#", "maxAttempts": 0"#),
        map(r#", "maxAttempts": 22"#),
        map(r#", "timeout": 30"#),
        map(r#", "timeout": "30""#),
        map(r#", "timeout": "30 s""#),
        map(r#", "timeout": "1.5s""#),
        map(r#", "timeout": "2d""#),
        map(r#", "timeout": "30s ""#),
        map(&format!(r#", "timeout": "{}""#, "1s".repeat(17))),
        map(r#", "name": "other""#),
        map(r#", "retries": 3"#),
        format!(r#"{{"config": {{"on commit": {{{entry}}}}}}}"#),
        format!(r#"{{"config": {{"": {{{entry}}}}}}}"#),
        format!(r#"{{"config": {{"{}": {{{entry}}}}}}}"#, "n".repeat(65)),
        r#"{"config": {"a": 1}}"#.to_string(),
        r#"{"interval": 30, "config": []}"#.to_string(),
        r#"{"interval": "30", "config": []}"#.to_string(),
        r#"{"interval": "half an hour", "config": []}"#.to_string(),
        r#"{"config": "onCommit"}"#.to_string(),
        trigger(r#", "name": "on/commit""#),
        trigger(r#", "name": """#),
        trigger(&format!(r#", "name": "{}""#, "n".repeat(65))),
    ];
    for text in &bad {
        let instance: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert!(!validator.is_valid(&instance), "schema accepted {text}");
        assert!(
            validate(text, ConfigFormat::Json).is_err(),
            "Rust accepted {text}"
        );
    }
}

/// Issue 18, item 6 (the schema works in form editors): no field of a pair that may not
/// be given together (`timeout`/`timeoutSecs`, `maxAttempts`/`maxRetries`) carries a
/// schema `default`. JSON Forms and RJSF fill defaults in, so a default on one spelling
/// would be added beside a user's other spelling: the both-given error.
#[test]
fn no_exclusive_spelling_has_a_schema_default() {
    let schema = config_schema();
    let properties = &schema["$defs"]["TriggerConfig"]["properties"];
    for field in ["timeout", "timeoutSecs", "maxAttempts", "maxRetries"] {
        let property = &properties[field];
        assert!(property.is_object(), "{field} missing from the schema");
        assert!(
            property.get("default").is_none(),
            "{field} has a schema default: {property}"
        );
    }
}

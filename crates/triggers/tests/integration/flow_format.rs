//! Issue 18, items 1 and 2 (config side): Estuary Flow's trigger config format is accepted
//! beside ours, in its list and its map form, into one compiled `Triggers`; every trigger
//! has a stable name.
//!
//! The Flow examples are those of Flow's docs page `materialization-triggers.md` (estuary/flow
//! commit 4b68712ae9d0: `interval`, `timeout`, `maxAttempts`, `{{run_id}}`).

use crate::support;
use std::time::Duration;
use triggers::{ConfigFormat, Drain, PreviewVariables, Triggers, ValidationError, validate};

/// Flow's full specification example: the `triggers` block of a materialization.
const SPECIFICATION: &str = r#"interval: 30m
config:
  - url: "https://example.com/webhook"
    method: POST
    headers:
      Authorization: "Bearer my-secret-token"
    payloadTemplate: |
      {
        "materialization": "{{materialization_name}}",
        "collections": [{{#each collection_names}}"{{this}}"{{#unless @last}}, {{/unless}}{{/each}}],
        "publishedAtMin": "{{flow_published_at_min}}",
        "publishedAtMax": "{{flow_published_at_max}}",
        "runId": "{{run_id}}"
      }
    timeout: 30s
    maxAttempts: 3
"#;

const SLACK: &str = r#"config:
  - url: "https://hooks.slack.com/services/YOUR/WEBHOOK/URL"
    payloadTemplate: |
      {
        "text": "Materialization {{materialization_name}} committed new data from {{#each collection_names}}{{this}}{{#unless @last}}, {{/unless}}{{/each}}"
      }
"#;

const DBT_CLOUD: &str = r#"config:
  - url: "https://cloud.getdbt.com/api/v2/accounts/12345/jobs/67890/run/"
    headers:
      Authorization: "Token my-dbt-api-token"
    payloadTemplate: |
      {
        "cause": "Triggered by Estuary materialization {{materialization_name}}",
        "git_sha": "HEAD"
      }
"#;

const GITHUB: &str = r#"config:
  - url: "https://api.github.com/repos/YOUR_ORG/YOUR_DBT_REPO/actions/workflows/dbt-run.yml/dispatches"
    headers:
      Authorization: "Bearer ghp_your_personal_access_token"
    payloadTemplate: |
      {
        "ref": "main"
      }
"#;

const MULTIPLE: &str = r#"config:
  - url: "https://hooks.slack.com/services/YOUR/WEBHOOK/URL"
    payloadTemplate: |
      {"text": "New data from {{materialization_name}}"}
  - url: "https://cloud.getdbt.com/api/v2/accounts/123/jobs/456/run/"
    headers:
      Authorization: "Token dbt-token"
    payloadTemplate: |
      {"cause": "Estuary trigger {{flow_run_id}}"}
"#;

/// Flow's "Include secret headers in the payload body" example, as written.
const SECRET_HEADER: &str = r#"config:
  - url: "https://api.example.com/notify"
    headers:
      X-Api-Key: "sk-secret-key-value"
    payloadTemplate: |
      {
        "apiKey": "{{headers.X-Api-Key}}",
        "materialization": "{{materialization_name}}",
        "runId": "{{run_id}}"
      }
"#;

/// The same config in Flow's newest form: `config` a map keyed by the trigger's name. Each
/// list entry `  - url: ...` becomes `  NAME:\n    url: ...` (its other fields are already
/// at that indentation), the names taken in order from `names`.
fn as_map(list: &str, names: &[&str]) -> String {
    let mut names = names.iter();
    let mut out = String::new();
    let mut in_config = false;
    for line in list.lines() {
        if line == "config:" {
            in_config = true;
            out.push_str("config:\n");
        } else if in_config && let Some(rest) = line.strip_prefix("  - ") {
            let name = names.next().expect("a name per trigger");
            out.push_str(&format!("  {name}:\n    {rest}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(names.next().is_none(), "more names than triggers");
    out
}

fn compiled(text: &str) -> Triggers {
    validate(text, ConfigFormat::Yaml).unwrap_or_else(|err| panic!("{err}\n{text}"))
}

fn names(triggers: &Triggers) -> Vec<String> {
    triggers.iter().map(|t| t.name().to_string()).collect()
}

fn errors(text: &str, format: ConfigFormat) -> Vec<String> {
    match validate(text, format) {
        Ok(_) => panic!("validated:\n{text}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn flow_documented_examples_validate_in_list_and_map_form() {
    let examples: [(&str, &str, &[&str]); 6] = [
        ("specification", SPECIFICATION, &["onCommit"]),
        ("slack", SLACK, &["slack"]),
        ("dbt cloud", DBT_CLOUD, &["dbtCloud"]),
        ("github", GITHUB, &["github-workflow_dispatch"]),
        ("multiple", MULTIPLE, &["slack", "dbt.cloud"]),
        ("secret header", SECRET_HEADER, &["notify"]),
    ];
    for (what, list, map_names) in examples {
        let from_list = compiled(list);
        let map = as_map(list, map_names);
        let from_map = compiled(&map);
        assert_eq!(from_list.len(), map_names.len(), "{what}");
        assert_eq!(from_map.len(), map_names.len(), "{what}");
        // List entries without `name` are named by their index; map entries by their key
        // (in key order).
        let defaults: Vec<String> = (0..map_names.len()).map(|i| i.to_string()).collect();
        assert_eq!(names(&from_list), defaults, "{what}");
        let mut sorted: Vec<String> = map_names.iter().map(ToString::to_string).collect();
        sorted.sort();
        assert_eq!(names(&from_map), sorted, "{what}:\n{map}");
        // Both forms compile to the same triggers, but for their names.
        let shape = |t: &Triggers| -> Vec<String> {
            let mut all: Vec<String> = t
                .iter()
                .map(|t| {
                    format!(
                        "{} {:?} {} {:?}",
                        t.label().origin,
                        t.timeout(),
                        t.max_retries(),
                        t.drain()
                    )
                })
                .collect();
            all.sort();
            all
        };
        assert_eq!(shape(&from_list), shape(&from_map), "{what}");
    }

    // The specification example: `timeout: 30s`, `maxAttempts: 3` (two retries) and an
    // `interval` of 30 minutes, which every trigger drains by.
    let spec = compiled(SPECIFICATION);
    let trigger = spec.iter().next().expect("one trigger");
    assert_eq!(trigger.timeout(), Duration::from_secs(30));
    assert_eq!(trigger.max_retries(), 2);
    assert_eq!(
        trigger.drain(),
        Drain::Coalesced {
            min_interval: Duration::from_secs(30 * 60)
        }
    );
    // Flow's examples without `interval` keep our defaults (the drain fires as soon as
    // the previous webhook is accepted).
    let slack = compiled(SLACK);
    let trigger = slack.iter().next().expect("one trigger");
    assert_eq!(
        trigger.drain(),
        Drain::Coalesced {
            min_interval: Duration::ZERO
        }
    );
    assert_eq!(trigger.timeout(), Duration::from_secs(30));
    assert_eq!(trigger.max_retries(), triggers::DEFAULT_MAX_RETRIES);

    // JSON, as Flow's own serializer writes the map form.
    let json = r#"{"config": {"onCommit": {"headers": {"Authorization": "Bearer secret"},
        "maxAttempts": 5, "method": "POST", "payloadTemplate": "{}", "timeout": "45s",
        "url": "https://example.com/webhook"}}, "interval": "30m"}"#;
    let triggers = validate(json, ConfigFormat::Json).expect("valid");
    let trigger = triggers.iter().next().expect("one trigger");
    assert_eq!(trigger.name(), "onCommit");
    assert_eq!(trigger.timeout(), Duration::from_secs(45));
    assert_eq!(trigger.max_retries(), 4);
    assert_eq!(
        trigger.label().to_string(),
        "trigger onCommit (https://example.com)"
    );
    assert_eq!(triggers.position("onCommit"), Some(0));
    assert_eq!(triggers.position("0"), None);
}

#[test]
fn both_spellings_of_one_setting_given_is_an_error_naming_both_fields() {
    let config = r#"config:
  onCommit:
    url: https://a.example.com
    payloadTemplate: "{}"
    timeout: 30s
    timeoutSecs: 30
    maxAttempts: 3
    maxRetries: 2
"#;
    assert_eq!(
        errors(config, ConfigFormat::Yaml),
        [
            "trigger onCommit (https://a.example.com): `timeout` and `timeoutSecs` are both given; \
             give one (`timeout` is a duration such as \"30s\", `timeoutSecs` a number of seconds)",
            "trigger onCommit (https://a.example.com): `maxAttempts` and `maxRetries` are both given; \
             give one (`maxAttempts` counts the first attempt, `maxRetries` only the retries after it)",
        ]
    );
    // Either one alone is fine, and they mean the same.
    let one = |fields: &str| {
        let text = format!(
            r#"{{"config": [{{"url": "https://a.example.com", "payloadTemplate": "{{}}", {fields}}}]}}"#
        );
        let triggers = validate(&text, ConfigFormat::Json).expect("valid");
        let trigger = triggers.iter().next().expect("one");
        (trigger.timeout(), trigger.max_retries())
    };
    assert_eq!(
        one(r#""timeout": "1m", "maxAttempts": 1"#),
        (Duration::from_secs(60), 0)
    );
    assert_eq!(
        one(r#""timeoutSecs": 60, "maxRetries": 0"#),
        (Duration::from_secs(60), 0)
    );
    assert_eq!(
        one(r#""timeout": "1m 30s", "maxAttempts": 21"#),
        (Duration::from_secs(90), triggers::MAX_MAX_RETRIES)
    );
}

#[test]
fn duration_grammar_and_bounds_are_checked_naming_the_field_as_written() {
    let trigger = |fields: &str| {
        format!(
            r#"{{"config": [{{"url": "https://a.example.com", "payloadTemplate": "{{}}", {fields}}}]}}"#
        )
    };
    let cases = [
        (
            trigger(r#""timeout": "301s""#),
            "trigger 0 (https://a.example.com): `timeout` is \"301s\", but must be between 1s and 5m",
        ),
        (
            trigger(r#""timeout": "500ms""#),
            "trigger 0 (https://a.example.com): `timeout` is \"500ms\", but must be between 1s and 5m",
        ),
        (
            trigger(r#""timeout": "30""#),
            "trigger 0 (https://a.example.com): `timeout` is \"30\", which is not a duration: a number without a unit (units: h, m, s, ms; e.g. \"30s\", \"1m 30s\", \"500ms\")",
        ),
        (
            trigger(r#""timeout": "2d""#),
            "trigger 0 (https://a.example.com): `timeout` is \"2d\", which is not a duration: unknown unit \"d\" (units: h, m, s, ms; e.g. \"30s\", \"1m 30s\", \"500ms\")",
        ),
        (
            trigger(r#""timeout": "0s", "maxAttempts": 0"#),
            "trigger 0 (https://a.example.com): `timeout` is \"0s\", but must be between 1s and 5m",
        ),
        (
            trigger(r#""maxAttempts": 22"#),
            "trigger 0 (https://a.example.com): `maxAttempts` is 22, but must be between 1 and 21",
        ),
        (
            r#"{"interval": "25h", "config": []}"#.to_string(),
            "`interval` is \"25h\", but must be between 0s and 24h",
        ),
        (
            format!(r#"{{"interval": "{}s", "config": []}}"#, "9".repeat(40)),
            "`interval` is \"99999999999999999999999999999999...\", which is not a duration: longer than 32 bytes",
        ),
        (
            r#"{"interval": "99999999999999999999h", "config": []}"#.to_string(),
            "`interval` is \"99999999999999999999h\", which is not a duration: too large",
        ),
    ];
    for (text, expect) in cases {
        let got = errors(&text, ConfigFormat::Json);
        let got: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|e| !e.contains("`maxAttempts` is 0"))
            .collect();
        assert_eq!(got, [expect], "{text}");
    }
    // `maxAttempts: 0` is refused too (there is always a first attempt).
    assert_eq!(
        errors(&trigger(r#""maxAttempts": 0"#), ConfigFormat::Json),
        ["trigger 0 (https://a.example.com): `maxAttempts` is 0, but must be between 1 and 21"]
    );
    // A number where a duration is expected is a shape error.
    let err = errors(&trigger(r#""timeout": 30"#), ConfigFormat::Json);
    assert!(err[0].contains("expected a duration string"), "{err:?}");
}

#[test]
fn interval_applies_to_every_trigger_and_combines_with_drain_as_documented() {
    let config = |interval: &str, drains: &[&str]| {
        let triggers: Vec<String> = drains
            .iter()
            .enumerate()
            .map(|(i, drain)| {
                format!(
                    r#"{{"url": "https://t{i}.example.com", "payloadTemplate": "{{}}"{drain}}}"#
                )
            })
            .collect();
        format!(r#"{{{interval}"config": [{}]}}"#, triggers.join(","))
    };
    let drains = |text: &str| -> Vec<Drain> {
        validate(text, ConfigFormat::Json)
            .unwrap_or_else(|err| panic!("{err}\n{text}"))
            .iter()
            .map(|t| t.drain())
            .collect()
    };
    let coalesced = |secs| Drain::Coalesced {
        min_interval: Duration::from_secs(secs),
    };
    // Every trigger without a drain of its own drains coalesced at the interval; an
    // explicit coalesced drain keeps the longer of its `minIntervalSecs` and the interval.
    assert_eq!(
        drains(&config(
            r#""interval": "30m", "#,
            &[
                "",
                r#", "drain": {"mode": "coalesced"}"#,
                r#", "drain": {"mode": "coalesced", "minIntervalSecs": 600}"#,
                r#", "drain": {"mode": "coalesced", "minIntervalSecs": 3600}"#,
            ]
        )),
        [
            coalesced(1800),
            coalesced(1800),
            coalesced(1800),
            coalesced(3600)
        ]
    );
    assert_eq!(
        drains(&config(r#""interval": "1m 30s", "#, &[""])),
        [coalesced(90)]
    );
    // An ordered or concurrent drain sends every transaction: with a non-zero interval it
    // is an error naming both.
    assert_eq!(
        errors(
            &config(
                r#""interval": "30m", "#,
                &[
                    r#", "drain": {"mode": "ordered"}"#,
                    r#", "drain": {"mode": "concurrent", "maxInFlight": 2}"#,
                ]
            ),
            ConfigFormat::Json
        ),
        [
            "trigger 0 (https://t0.example.com): `drain.mode` is ordered, which sends a webhook per \
             transaction, but `interval` asks for at most one per 30m; use `mode: coalesced` or remove `interval`",
            "trigger 1 (https://t1.example.com): `drain.mode` is concurrent, which sends a webhook per \
             transaction, but `interval` asks for at most one per 30m; use `mode: coalesced` or remove `interval`",
        ]
    );
    // `interval: 0s` is the same as no interval: every drain keeps its own mode.
    assert_eq!(
        drains(&config(
            r#""interval": "0s", "#,
            &["", r#", "drain": {"mode": "ordered"}"#]
        )),
        [coalesced(0), Drain::Ordered]
    );
}

#[test]
fn trigger_names_default_to_the_index_are_unique_and_bounded() {
    // Defaults: a list entry without `name` is named by its index, so an existing config
    // compiles as before (labels included).
    let list = r#"config:
  - url: https://a.example.com
    payloadTemplate: "{}"
  - name: dbt
    url: https://b.example.com
    payloadTemplate: "{}"
  - url: https://c.example.com
    payloadTemplate: "{}"
"#;
    let triggers = compiled(list);
    assert_eq!(names(&triggers), ["0", "dbt", "2"]);
    let labels: Vec<String> = triggers.iter().map(|t| t.label().to_string()).collect();
    assert_eq!(
        labels,
        [
            "trigger 0 (https://a.example.com)",
            "trigger dbt (https://b.example.com)",
            "trigger 2 (https://c.example.com)",
        ]
    );
    assert_eq!(triggers.iter().nth(1).map(|t| t.label().index), Some(1));

    // The map form is compiled in key order (byte order), whatever the document's order.
    let map = "config:\n  zeta: {url: https://z.example.com, payloadTemplate: '{}'}\n  Alpha: {url: https://a.example.com, payloadTemplate: '{}'}\n  alpha: {url: https://b.example.com, payloadTemplate: '{}'}\n";
    assert_eq!(names(&compiled(map)), ["Alpha", "alpha", "zeta"]);

    // Duplicates.
    let duplicate = r#"config:
  - name: "2"
    url: https://a.example.com
    payloadTemplate: "{}"
  - name: dbt
    url: https://b.example.com
    payloadTemplate: "{}"
  - url: https://c.example.com
    payloadTemplate: "{}"
  - name: dbt
    url: https://d.example.com
    payloadTemplate: "{}"
"#;
    assert_eq!(
        errors(duplicate, ConfigFormat::Yaml),
        [
            "trigger 2 (https://c.example.com): the name \"2\" is also trigger 0's; trigger names must be unique",
            "trigger dbt (https://d.example.com): the name \"dbt\" is also trigger 1's; trigger names must be unique",
        ]
    );
    let duplicate_keys = r#"{"config": {"a": {"url": "https://a.example.com", "payloadTemplate": "{}"},
        "a": {"url": "https://b.example.com", "payloadTemplate": "{}"}}}"#;
    assert!(
        errors(duplicate_keys, ConfigFormat::Json)[0].contains("trigger name \"a\" is given twice"),
        "{:?}",
        errors(duplicate_keys, ConfigFormat::Json)
    );

    // Charset, length, reserved names.
    let named = |name: &str| {
        serde_json::json!({"config": [{"name": name, "url": "https://a.example.com", "payloadTemplate": "{}"}]})
            .to_string()
    };
    let long = "n".repeat(65);
    for (name, reason) in [
        ("", "it is empty"),
        (
            "on commit",
            "only ASCII letters, digits, `_`, `.` and `-` are allowed",
        ),
        (
            "dbt/cloud",
            "only ASCII letters, digits, `_`, `.` and `-` are allowed",
        ),
        (
            "ünïcode",
            "only ASCII letters, digits, `_`, `.` and `-` are allowed",
        ),
        (long.as_str(), "it is 65 bytes, but at most 64 are allowed"),
        ("url", "SOPS encrypts every value under a key of that name"),
        (
            "headers",
            "SOPS encrypts every value under a key of that name",
        ),
    ] {
        let shown: String = name.chars().take(64).collect();
        assert_eq!(
            errors(&named(name), ConfigFormat::Json),
            [format!(
                "trigger 0 (https://a.example.com): the name {shown:?} is not allowed: {reason}"
            )],
            "{name}"
        );
    }
    for good in ["a", "onCommit", "dbt-cloud_2.prod", &"n".repeat(64), "0"] {
        assert_eq!(names(&compiled(&named(good))), [good]);
    }
    // A bad map key is refused the same way.
    let bad_key =
        r#"{"config": {"on commit": {"url": "https://a.example.com", "payloadTemplate": "{}"}}}"#;
    assert_eq!(
        errors(bad_key, ConfigFormat::Json),
        [
            "trigger 0 (https://a.example.com): the name \"on commit\" is not allowed: only ASCII letters, digits, `_`, `.` and `-` are allowed"
        ]
    );
    // In the map form the key is the name: a `name` field beside it is refused.
    let both = "config:\n  onCommit:\n    name: other\n    url: https://a.example.com\n    payloadTemplate: '{}'\n";
    let err = errors(both, ConfigFormat::Yaml);
    assert!(
        err[0].contains("trigger onCommit: `name` is not allowed in the map form"),
        "{err:?}"
    );
    // Errors name the trigger by its name.
    let bad = "config:\n  onCommit:\n    url: ftp://a.example.com\n    payloadTemplate: '{}'\n";
    assert_eq!(
        errors(bad, ConfigFormat::Yaml),
        [
            "trigger onCommit (ftp://a.example.com): `url` is invalid: scheme must be http or https, not \"ftp\""
        ]
    );
    assert!(
        validate(bad, ConfigFormat::Yaml)
            .err()
            .is_some_and(|e| matches!(&e.0[0], ValidationError::InvalidUrl { trigger, .. } if trigger.name == "onCommit"))
    );
    // At most MAX_TRIGGERS in the map form too.
    let many: Vec<String> = (0..=triggers::MAX_TRIGGERS)
        .map(|i| {
            format!(r#""t{i}": {{"url": "https://a.example.com", "payloadTemplate": "{{}}"}}"#)
        })
        .collect();
    assert_eq!(
        errors(
            &format!(r#"{{"config": {{{}}}}}"#, many.join(",")),
            ConfigFormat::Json
        ),
        [format!(
            "trigger config has {} triggers, but at most {} are allowed",
            triggers::MAX_TRIGGERS + 1,
            triggers::MAX_TRIGGERS
        )]
    );
}

/// Issue 18, item 3b: Flow's secret-header-in-body example (`{{headers.X-Api-Key}}`, spelled
/// as Flow documents it) validates, previews with the value redacted, and delivers the
/// value itself to a real receiver; no error, preview, Debug output or log line shows it.
#[tokio::test]
async fn flow_secret_header_in_body_example_validates_previews_redacted_and_delivers() {
    let secret = "sk-secret-key-value";
    let triggers = compiled(SECRET_HEADER);
    let preview = triggers
        .preview(0, &PreviewVariables::placeholder())
        .expect("previews");
    let payload: serde_json::Value = serde_json::from_str(&preview.payload).expect("JSON");
    assert_eq!(payload["apiKey"], triggers::REDACTED_HEADER_VALUE);
    assert_eq!(payload["runId"], "2024-01-01T00:00:00.000Z");
    assert!(!format!("{preview:?}").contains(secret), "{preview:?}");
    assert!(!format!("{triggers:?}").contains(secret));

    // A wrong name is refused at publish time, naming the trigger, the line and the
    // variable, and listing the trigger's header names (never a value).
    let typo = SECRET_HEADER.replace("headers.X-Api-Key", "headers.X-Api-Kee");
    let text = errors(&typo, ConfigFormat::Yaml);
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].starts_with(
            "trigger 0 (https://api.example.com): `payloadTemplate`: `headers.X-Api-Kee` at line 2, column 14 names no header of this trigger; its headers are: X-Api-Key"
        ),
        "{text:?}"
    );
    assert!(!text[0].contains(secret), "{text:?}");

    // The real send carries the value in the body, and in its header.
    let receiver = triggers_receiver::Receiver::start()
        .await
        .expect("receiver");
    let config = SECRET_HEADER.replace("https://api.example.com/notify", &receiver.url("/notify"));
    let triggers = compiled(&config);
    let (logs, _guard) = support::CapturedLogs::install();
    let delivered = support::fast_deliverer()
        .deliver(&triggers, &triggers::Variables::placeholder())
        .await
        .expect("delivered");
    assert_eq!(delivered.len(), 1);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].json().expect("JSON body");
    assert_eq!(body["apiKey"], secret);
    assert_eq!(
        body["materialization"],
        "acmeCo/example/materialize-placeholder"
    );
    assert_eq!(requests[0].header("x-api-key"), Some(secret));
    assert!(!logs.text().contains(secret), "{}", logs.text());
    assert!(!format!("{delivered:?}").contains(secret));
}

/// Issue 18, item 5 (estuary/flow#2028): a trigger may list the collections it fires for,
/// in both of Flow's forms; entries ending in `/` are name prefixes. A trigger without the
/// field fires for every collection, as before.
#[test]
fn per_trigger_collections_filter_in_list_and_map_form() {
    let list = r#"config:
  - url: https://orders.example.com/hook
    collections: [acmeCo/orders/, acmeCo/users]
    payloadTemplate: '{"collections": {{json collection_names}}}'
  - url: https://all.example.com/hook
    payloadTemplate: '{}'
"#;
    for text in [list.to_string(), as_map(list, &["orders", "all"])] {
        let triggers = compiled(&text);
        let by_origin = |origin: &str| {
            triggers
                .iter()
                .find(|t| t.label().origin == origin)
                .expect(origin)
        };
        let orders = by_origin("https://orders.example.com");
        assert_eq!(
            orders.collections(),
            Some(&["acmeCo/orders/".to_string(), "acmeCo/users".to_string()][..])
        );
        assert!(orders.fires_for("acmeCo/orders/v2"));
        assert!(orders.fires_for("acmeCo/users"));
        assert!(!orders.fires_for("acmeCo/users/v2"));
        assert!(!orders.fires_for("acmeCo/ordersv2"));
        let all = by_origin("https://all.example.com");
        assert_eq!(all.collections(), None);
        assert!(all.fires_for("anything/at/all"));

        // Checked against the materialization's bindings, every error at once.
        triggers::validate_collections(
            &triggers,
            &["acmeCo/orders/v1".to_string(), "acmeCo/users".to_string()],
        )
        .expect("both entries match a binding");
        let err = triggers::validate_collections(&triggers, &["acmeCo/users/v2".to_string()])
            .expect_err("no binding matches either entry");
        let text: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        let label = orders.label().to_string();
        assert_eq!(
            text,
            [
                format!(
                    "{label}: `collections[0]` is \"acmeCo/orders/\", which is a prefix of none of the materialization's binding collections: acmeCo/users/v2"
                ),
                format!(
                    "{label}: `collections[1]` is \"acmeCo/users\", which is none of the materialization's binding collections: acmeCo/users/v2"
                ),
            ]
        );
    }
}

/// Every Flow example, in its list and its map form, previews as Flow's docs describe it
/// (the placeholder variables in the documented shape) and delivers to a real receiver,
/// with the documented method, headers and body.
#[tokio::test]
async fn flow_documented_examples_preview_and_deliver_in_both_forms() {
    let receiver = triggers_receiver::Receiver::start()
        .await
        .expect("receiver");
    let placeholder = triggers::Variables::placeholder();
    let collections = placeholder.collection_names.join(", ");
    let examples: [(&str, &str, &[&str]); 5] = [
        ("specification", SPECIFICATION, &["onCommit"]),
        ("slack", SLACK, &["slack"]),
        ("dbt cloud", DBT_CLOUD, &["dbtCloud"]),
        ("github", GITHUB, &["github"]),
        ("multiple", MULTIPLE, &["slack", "dbt"]),
    ];
    for (what, list, map_names) in examples {
        // Each example's endpoints, moved to the receiver (path kept).
        let mut local = list.to_string();
        for url in list.lines().filter_map(|l| {
            l.trim()
                .strip_prefix("- url: ")
                .or(l.trim().strip_prefix("url: "))
        }) {
            let url = url.trim_matches('"');
            let path = url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]));
            local = local.replace(url, &receiver.url(path.expect("a path")));
        }
        for (form, text) in [("list", local.clone()), ("map", as_map(&local, map_names))] {
            let triggers = compiled(&text);
            let before = receiver.requests().len();
            let delivered = support::fast_deliverer()
                .deliver(&triggers, &placeholder)
                .await
                .unwrap_or_else(|err| panic!("{what} ({form}) delivers: {err}"));
            assert_eq!(delivered.len(), map_names.len(), "{what} ({form})");
            let requests = receiver.requests();
            let sent = &requests[before..];
            assert_eq!(sent.len(), map_names.len(), "{what} ({form})");
            for (index, trigger) in triggers.iter().enumerate() {
                let preview = triggers
                    .preview(index, &PreviewVariables::placeholder())
                    .expect("previews");
                let previewed: serde_json::Value =
                    serde_json::from_str(&preview.payload).expect("JSON");
                let request = sent
                    .iter()
                    .find(|r| r.header("webhook-id") == Some(preview.webhook_id.as_str()))
                    .unwrap_or_else(|| panic!("{what} ({form}): {} was sent", trigger.name()));
                // What preview shows is what is sent (no secret in these bodies).
                assert_eq!(request.json().expect("JSON"), previewed, "{what} ({form})");
                assert_eq!(request.method, "POST", "{what} ({form})");
            }
        }
    }

    // The documented shapes, from the list form's previews.
    let rfc3339 = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    };
    let preview = |text: &str, index| -> serde_json::Value {
        let triggers = compiled(text);
        let preview = triggers
            .preview(index, &PreviewVariables::placeholder())
            .expect("previews");
        serde_json::from_str(&preview.payload).expect("JSON")
    };
    assert_eq!(
        preview(SPECIFICATION, 0),
        serde_json::json!({
            "materialization": placeholder.materialization_name,
            "collections": placeholder.collection_names,
            "publishedAtMin": rfc3339(placeholder.flow_published_at_min),
            "publishedAtMax": rfc3339(placeholder.flow_published_at_max),
            "runId": placeholder.run_id,
        })
    );
    assert_eq!(
        preview(SLACK, 0)["text"],
        format!(
            "Materialization {} committed new data from {collections}",
            placeholder.materialization_name
        )
    );
    assert_eq!(
        preview(DBT_CLOUD, 0),
        serde_json::json!({
            "cause": format!("Triggered by Estuary materialization {}", placeholder.materialization_name),
            "git_sha": "HEAD",
        })
    );
    assert_eq!(preview(GITHUB, 0), serde_json::json!({"ref": "main"}));
    assert_eq!(
        preview(MULTIPLE, 1),
        serde_json::json!({"cause": format!("Estuary trigger {}", placeholder.flow_run_id)})
    );
    // The documented headers are sent as configured.
    let dbt = receiver
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/jobs/67890/run/"))
        .expect("dbt's request");
    assert_eq!(dbt.header("authorization"), Some("Token my-dbt-api-token"));
}

use super::*;
use triggers_sops::{Error as Sops, SOPS_FORMAT_VERSION};

/// The SOPS layer's error inside a [`SopsError`].
fn sops(err: SopsError) -> Sops {
    match err {
        SopsError::Sops(err) => err,
        other => panic!("not an error of the SOPS layer: {other}"),
    }
}

const TOKEN: &str = "Bearer hunter2-t0ken";
const TEAM: &str = "team-secret-value";
const WHSEC_1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_2: &str = "whsec_c2Vjb25kLXNlY3JldA==";

fn plain_json() -> String {
    format!(
        r#"{{"config": [{{"url": "https://hooks.example.com/a", "headers": {{"Authorization": "{TOKEN}", "X-Team": "{TEAM}"}}, "payloadTemplate": "{{\"n\": \"{{{{materialization_name}}}}\"}}", "timeoutSecs": 10, "signingSecrets": ["{WHSEC_1}", "{WHSEC_2}"], "followRedirects": true}}, {{"url": "https://hooks.example.com/b", "payloadTemplate": "{{}}", "headers": {{"Empty": ""}}}}]}}"#
    )
}

fn plain_yaml() -> String {
    format!(
        "config:\n  - url: https://hooks.example.com/a\n    headers:\n      Authorization: {TOKEN}\n      X-Team: {TEAM}\n    payloadTemplate: '{{\"n\": \"{{{{materialization_name}}}}\"}}'\n    timeoutSecs: 10\n    signingSecrets:\n      - {WHSEC_1}\n      - '{WHSEC_2}'\n    followRedirects: true\n  - url: https://hooks.example.com/b\n    payloadTemplate: '{{}}'\n    headers:\n      Empty: ''\n"
    )
}

const SECRETS: [&str; 4] = [TOKEN, TEAM, WHSEC_1, WHSEC_2];

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

fn check_error(err: &SopsError) {
    assert_no_secret(&err.to_string());
    assert_no_secret(&format!("{err:?}"));
}

fn encrypted(format: ConfigFormat) -> (String, AgeIdentity) {
    let identity = AgeIdentity::generate();
    let text = match format {
        ConfigFormat::Json => plain_json(),
        ConfigFormat::Yaml => plain_yaml(),
    };
    let sealed = encrypt_config(&text, format, &[identity.recipient()]).expect("encrypts");
    (sealed, identity)
}

fn decrypt_err(text: &str, format: ConfigFormat, identity: &AgeIdentity) -> Sops {
    let err = decrypt_config(text, format, std::slice::from_ref(identity)).expect_err("refused");
    check_error(&err);
    sops(err)
}

#[test]
fn round_trips_json_and_yaml_keeping_non_secrets_readable() {
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let (sealed, identity) = encrypted(format);
        assert_no_secret(&sealed);
        for readable in [
            "materialization_name",
            "Authorization",
            "signingSecrets",
            "encrypted_regex",
            SEALED_FIELDS_REGEX,
            "lastmodified",
            "BEGIN AGE ENCRYPTED FILE",
            SOPS_FORMAT_VERSION,
        ] {
            assert!(
                sealed.contains(readable),
                "{format}: no {readable} in {sealed}"
            );
        }
        assert!(is_sops_encrypted(&sealed, format));

        let config = decrypt_config(&sealed, format, &[identity]).expect("decrypts");
        let trigger = &config.config[0];
        assert_eq!(trigger.headers["Authorization"].expose(), TOKEN);
        assert_eq!(trigger.headers["X-Team"].expose(), TEAM);
        assert_eq!(trigger.signing_secrets[0].expose(), WHSEC_1);
        assert_eq!(trigger.signing_secrets[1].expose(), WHSEC_2);
        assert_eq!(trigger.timeout_secs, 10);
        assert!(trigger.follow_redirects);
        // sops leaves empty strings unencrypted, and so do we.
        assert_eq!(config.config[1].headers["Empty"].expose(), "");
        assert_no_secret(&format!("{config:?}"));
    }
}

#[test]
fn any_one_of_several_recipients_decrypts() {
    let (a, b) = (AgeIdentity::generate(), AgeIdentity::generate());
    let sealed = encrypt_config(
        &plain_json(),
        ConfigFormat::Json,
        &[a.recipient(), b.recipient()],
    )
    .expect("succeeds");
    for identity in [a, b] {
        decrypt_config(
            &sealed,
            ConfigFormat::Json,
            &[AgeIdentity::generate(), identity],
        )
        .expect("decrypts");
    }
}

#[test]
fn the_wrong_key_is_named_by_recipient() {
    let (sealed, identity) = encrypted(ConfigFormat::Json);
    let err = decrypt_err(&sealed, ConfigFormat::Json, &AgeIdentity::generate());
    assert_eq!(
        err,
        Sops::NoMatchingIdentity {
            recipients: vec![identity.recipient().to_string()]
        }
    );
    let err = sops(decrypt_config(&sealed, ConfigFormat::Json, &[]).expect_err("fails"));
    assert!(matches!(err, Sops::NoMatchingIdentity { .. }), "{err}");
}

/// Replaces the `n`th ENC value's data with other base64 of the same length.
fn flip_data(sealed: &str, n: usize) -> String {
    let at = sealed
        .match_indices("ENC[AES256_GCM,data:")
        .nth(n)
        .expect("succeeds")
        .0
        + 20;
    let mut bytes = sealed.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("succeeds")
}

#[test]
fn a_tampered_value_fails_with_its_path() {
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let (sealed, identity) = encrypted(format);
        // Value 0 is the URL.
        let err = decrypt_err(&flip_data(&sealed, 1), format, &identity);
        assert_eq!(
            err,
            Sops::Tampered {
                path: "config[0].headers.Authorization".into()
            },
            "{format}"
        );
        let err = decrypt_err(&flip_data(&sealed, 4), format, &identity);
        assert_eq!(
            err,
            Sops::Tampered {
                path: "config[0].signingSecrets[1]".into()
            }
        );
    }
}

/// The `n`th ENC string of a document.
fn enc_value(sealed: &str, n: usize) -> String {
    let (at, _) = sealed
        .match_indices("ENC[AES256_GCM,data:")
        .nth(n)
        .expect("succeeds");
    let end = sealed[at..].find(']').expect("succeeds");
    sealed[at..=at + end].to_string()
}

#[test]
fn values_moved_between_keys_fail_and_reordered_list_items_fail_the_mac() {
    let (sealed, identity) = encrypted(ConfigFormat::Json);
    // Header values carry their key in the additional data: swapping them breaks GCM.
    let (auth, team) = (enc_value(&sealed, 1), enc_value(&sealed, 2));
    let swapped = sealed
        .replace(&auth, "@AUTH@")
        .replace(&team, &auth)
        .replace("@AUTH@", &team);
    let err = decrypt_err(&swapped, ConfigFormat::Json, &identity);
    assert_eq!(
        err,
        Sops::Tampered {
            path: "config[0].headers.Authorization".into()
        }
    );
    // List items share their list's path (sops does not add indices), so only the MAC,
    // which covers order, notices a swap.
    let (first, second) = (enc_value(&sealed, 3), enc_value(&sealed, 4));
    let swapped = sealed
        .replace(&first, "@FIRST@")
        .replace(&second, &first)
        .replace("@FIRST@", &second);
    assert_eq!(
        decrypt_err(&swapped, ConfigFormat::Json, &identity),
        Sops::MacMismatch {
            scope: triggers_sops::MacScope::EncryptedValues
        }
    );
}

/// Issue 18: what `encrypt_config` writes has a MAC over the sealed values only, so a
/// clear value edited without the key still decrypts; a file whose MAC covers every value
/// (sops's default, and `encrypt_config` before) refuses the same edit.
#[test]
fn an_edited_clear_value_fails_the_mac_only_where_it_covers_every_value() {
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let (sealed, identity) = encrypted(format);
        let edit = |text: &str| {
            let edited = text
                .replace("materialization_name", "connector_image")
                .replace("\"timeoutSecs\": 10", "\"timeoutSecs\": 11")
                .replace("timeoutSecs: 10", "timeoutSecs: 11");
            assert_ne!(edited, text);
            edited
        };
        let config = decrypt_config(&edit(&sealed), format, std::slice::from_ref(&identity))
            .expect("decrypts");
        assert_eq!(config.config[0].timeout_secs, 11);
        assert!(
            config.config[0]
                .payload_template
                .contains("connector_image")
        );

        let text = match format {
            ConfigFormat::Json => plain_json(),
            ConfigFormat::Yaml => plain_yaml(),
        };
        let whole = triggers_sops::encrypt(
            parse_document(&text, format).expect("parses"),
            sops_format(format),
            &[identity.recipient()],
            SEALED_FIELDS_REGEX,
            triggers_sops::MacScope::AllValues,
        )
        .expect("encrypts");
        decrypt_config(&whole, format, std::slice::from_ref(&identity)).expect("decrypts");
        assert_eq!(
            decrypt_err(&edit(&whole), format, &identity),
            Sops::MacMismatch {
                scope: triggers_sops::MacScope::AllValues
            }
        );
    }
}

#[test]
fn a_tampered_or_missing_mac_is_refused() {
    let (sealed, identity) = encrypted(ConfigFormat::Json);
    // The first URL, the two header values, the two secrets, `followRedirects`, the
    // second URL, then the MAC.
    let mac = enc_value(&sealed, 7);
    assert!(sealed.contains(&format!("\"mac\": \"{mac}\"")), "{sealed}");
    let err = decrypt_err(&flip_data(&sealed, 7), ConfigFormat::Json, &identity);
    assert_eq!(err, Sops::MacTampered);

    // lastmodified is the MAC's additional data.
    let doc: serde_json::Value = serde_json::from_str(&sealed).expect("succeeds");
    let lastmodified = doc["sops"]["lastmodified"].as_str().expect("succeeds");
    let edited = sealed.replace(lastmodified, "2001-01-01T00:00:00Z");
    assert_eq!(
        decrypt_err(&edited, ConfigFormat::Json, &identity),
        Sops::MacTampered
    );

    let without = sealed.replace(&format!("\"mac\": \"{mac}\","), "");
    assert_eq!(
        decrypt_err(&without, ConfigFormat::Json, &identity),
        Sops::MacMissing
    );
    let empty = sealed.replace(&mac, "");
    assert_eq!(
        decrypt_err(&empty, ConfigFormat::Json, &identity),
        Sops::MacMissing
    );
}

#[test]
fn a_malformed_or_clear_secret_is_named_by_path() {
    let (sealed, identity) = encrypted(ConfigFormat::Json);
    let auth = enc_value(&sealed, 1);
    let broken = sealed.replace(&auth, "ENC[AES256_GCM,data:%%%,iv:x,tag:y,type:str]");
    assert_eq!(
        decrypt_err(&broken, ConfigFormat::Json, &identity),
        Sops::MalformedValue {
            path: "config[0].headers.Authorization".into(),
            reason: "data is not base64"
        }
    );
    let clear = sealed.replace(&auth, "Bearer planted");
    assert_eq!(
        decrypt_err(&clear, ConfigFormat::Json, &identity),
        Sops::NotEncryptedValue {
            path: "config[0].headers.Authorization".into()
        }
    );
}

/// Edits the `sops` block of a JSON document, leaving the body's key order (which the
/// MAC covers) as it was.
fn edit_block(sealed: &str, edit: &dyn Fn(&mut serde_json::Value)) -> String {
    let mut doc: Node = serde_json::from_str(sealed).expect("succeeds");
    let Node::Map(entries) = &mut doc else {
        panic!("not a map")
    };
    let (_, block) = entries
        .iter_mut()
        .find(|(k, _)| k == "sops")
        .expect("succeeds");
    let mut json = block.clone().into_json().expect("succeeds");
    edit(&mut json);
    *block = serde_json::from_value(json).expect("succeeds");
    serde_json::to_string(&doc).expect("succeeds")
}

#[test]
fn metadata_problems_are_typed() {
    let (sealed, identity) = encrypted(ConfigFormat::Json);
    let with_block = |edit: &dyn Fn(&mut serde_json::Value)| edit_block(&sealed, edit);

    let kms_only = with_block(&|block| {
        block.as_object_mut().expect("succeeds").remove("age");
        block["kms"] = serde_json::json!([{"arn": "arn:aws:kms:x", "enc": "AAAA"}]);
    });
    assert_eq!(
        decrypt_err(&kms_only, ConfigFormat::Json, &identity),
        Sops::NoAgeRecipients {
            others: vec!["kms"]
        }
    );

    let shamir = with_block(&|block| {
        let age = block
            .as_object_mut()
            .expect("succeeds")
            .remove("age")
            .expect("succeeds");
        block["key_groups"] = serde_json::json!([{"age": age}, {"age": age}]);
    });
    assert!(matches!(
        decrypt_err(&shamir, ConfigFormat::Json, &identity),
        Sops::Unsupported { .. }
    ));
    // One key group is what sops writes as top-level keys; both read the same.
    let one_group = with_block(&|block| {
        let age = block
            .as_object_mut()
            .expect("succeeds")
            .remove("age")
            .expect("succeeds");
        block["key_groups"] = serde_json::json!([{"age": age}]);
    });
    decrypt_config(
        &one_group,
        ConfigFormat::Json,
        std::slice::from_ref(&identity),
    )
    .expect("succeeds");

    let two_rules = with_block(&|block| block["unencrypted_suffix"] = "_clear".into());
    assert!(matches!(
        decrypt_err(&two_rules, ConfigFormat::Json, &identity),
        Sops::Metadata { field: "sops", .. }
    ));
    let bad_time = with_block(&|block| block["lastmodified"] = "yesterday".into());
    assert!(matches!(
        decrypt_err(&bad_time, ConfigFormat::Json, &identity),
        Sops::Metadata {
            field: "lastmodified",
            ..
        }
    ));
    let comments = with_block(&|block| block["encrypted_comment_regex"] = "^enc".into());
    assert!(matches!(
        decrypt_err(&comments, ConfigFormat::Json, &identity),
        Sops::Unsupported { .. }
    ));
    let not_a_map = with_block(&|block| *block = "sops".into());
    assert!(matches!(
        decrypt_err(&not_a_map, ConfigFormat::Json, &identity),
        Sops::Metadata { field: "sops", .. }
    ));
}

#[test]
fn truncated_age_armor_fails_cleanly() {
    let (sealed, identity) = encrypted(ConfigFormat::Json);
    let doc: serde_json::Value = serde_json::from_str(&sealed).expect("succeeds");
    let enc = doc["sops"]["age"][0]["enc"]
        .as_str()
        .expect("succeeds")
        .to_string();
    for cut in [0, 10, 40, enc.len() / 2, enc.len() - 40] {
        let truncated = edit_block(&sealed, &|block| block["age"][0]["enc"] = enc[..cut].into());
        let err = decrypt_err(&truncated, ConfigFormat::Json, &identity);
        assert!(matches!(err, Sops::DataKey { .. }), "cut {cut}: {err}");
    }
}

#[test]
fn plaintext_configs_need_no_keys_and_encrypted_ones_are_not_reencrypted() {
    let config = load_config(&plain_yaml(), ConfigFormat::Yaml, &[]).expect("succeeds");
    assert_eq!(config.config[0].headers["Authorization"].expose(), TOKEN);
    assert_eq!(
        decrypt_config(
            &plain_yaml(),
            ConfigFormat::Yaml,
            &[AgeIdentity::generate()]
        )
        .expect_err("fails"),
        SopsError::Sops(Sops::NotEncrypted)
    );
    let (sealed, identity) = encrypted(ConfigFormat::Yaml);
    assert_eq!(
        encrypt_config(&sealed, ConfigFormat::Yaml, &[identity.recipient()]).expect_err("fails"),
        SopsError::Sops(Sops::AlreadyEncrypted)
    );
    assert!(matches!(
        encrypt_config(&plain_json(), ConfigFormat::Json, &[]).expect_err("fails"),
        SopsError::Sops(Sops::Encrypt { .. })
    ));
    let err = encrypt_config(
        r#"{"config": [{"url": "https://x", "payloadTemplate": "{}", "auth": "x"}]}"#,
        ConfigFormat::Json,
        &[identity.recipient()],
    )
    .expect_err("fails");
    assert!(matches!(err, SopsError::Parse(_)), "{err}");
}

#[test]
fn a_decrypted_value_of_the_wrong_type_is_not_echoed() {
    let identity = AgeIdentity::generate();
    let doc: Node = serde_json::from_str(
        r#"{"config": [{"url": "https://x", "payloadTemplate": "{}", "headers": {"A": 987654321}}]}"#,
    )
    .expect("succeeds");
    let sealed = triggers_sops::encrypt(
        doc,
        triggers_sops::Format::Json,
        &[identity.recipient()],
        SEALED_FIELDS_REGEX,
        triggers_sops::MacScope::EncryptedValues,
    )
    .expect("succeeds");
    assert!(!sealed.contains("987654321"), "{sealed}");
    let err = decrypt_config(&sealed, ConfigFormat::Json, &[identity]).expect_err("fails");
    assert!(matches!(err, SopsError::Config { .. }), "{err}");
    assert!(!err.to_string().contains("987654321"), "{err}");
}

#[test]
fn random_damage_to_an_encrypted_document_never_panics_nor_yields_another_config() {
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let (sealed, identity) = encrypted(format);
        let mut rng = fastrand::Rng::with_seed(6);
        for _ in 0..300 {
            let mut bytes = sealed.clone().into_bytes();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(32..127);
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match decrypt_config(&text, format, std::slice::from_ref(&identity)) {
                Err(err) => check_error(&err),
                // A change to formatting only (say, a space) may still decrypt; then it
                // must be the same config.
                Ok(config) => {
                    let trigger = &config.config[0];
                    assert_eq!(trigger.headers["Authorization"].expose(), TOKEN);
                    assert_eq!(trigger.url, "https://hooks.example.com/a");
                    assert_eq!(trigger.signing_secrets[1].expose(), WHSEC_2);
                }
            }
        }
    }
}

#[test]
fn garbage_documents_are_errors() {
    let identity = AgeIdentity::generate();
    for (text, format) in [
        ("", ConfigFormat::Json),
        ("[1, 2]", ConfigFormat::Json),
        ("\"sops\"", ConfigFormat::Yaml),
        ("sops: [", ConfigFormat::Yaml),
        ("{\"sops\": {}}", ConfigFormat::Json),
        ("{\"sops\": null}", ConfigFormat::Json),
        ("sops: {age: [{recipient: 1}]}", ConfigFormat::Yaml),
        (
            "sops: {age: [{recipient: x, enc: y}], lastmodified: '2026-01-01T00:00:00Z', mac: z}",
            ConfigFormat::Yaml,
        ),
    ] {
        let err = decrypt_config(text, format, std::slice::from_ref(&identity));
        assert!(err.is_err(), "{text}");
    }
}

/// Many webhook URLs are the credential (user info, a query token, Slack's path): the
/// URL is encrypted, and a control plane without keys still validates the templates.
#[test]
fn encrypt_leaves_no_url_in_plaintext_and_keyless_validation_checks_the_rest() {
    let url = "https://user:pa55word@hooks.slack.com/services/T0/B0/XyZsecretPath?token=qu3ry";
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let plain = serde_json::json!({"config": [
            {"url": url, "headers": {"X-Key": "k3y-value"}, "signingSecrets": [WHSEC_1],
             "payloadTemplate": "{\"n\": {{json materialization_name}}}"},
        ]});
        let text = match format {
            ConfigFormat::Json => plain.to_string(),
            ConfigFormat::Yaml => serde_yaml_ng::to_string(&plain).expect("YAML"),
        };
        let identity = AgeIdentity::generate();
        let sealed = encrypt_config(&text, format, &[identity.recipient()]).expect("encrypts");
        for secret in [
            "pa55word",
            "hooks.slack.com",
            "XyZsecretPath",
            "qu3ry",
            "k3y-value",
        ] {
            assert!(!sealed.contains(secret), "{format}: {secret} in {sealed}");
        }
        assert!(sealed.contains("materialization_name"), "{sealed}");
        let config = decrypt_config(&sealed, format, &[identity]).expect("decrypts");
        assert_eq!(config.config[0].url, url);

        assert_eq!(validate_without_keys(&sealed, format), Ok(1));
        // A template error is still found without keys, the trigger named by the
        // placeholder origin.
        let broken = sealed.replace("materialization_name", "materialisation_name");
        let errors = validate_without_keys(&broken, format).expect_err("invalid");
        let text = errors.to_string();
        assert!(text.contains("materialisation_name"), "{text}");
        assert!(text.contains("encrypted-url.invalid"), "{text}");
    }
}

/// Issue 13: `auth` credentials are secrets, encrypted at rest like headers; a config
/// with an encrypted `auth` still validates without keys, and the mutual exclusion of
/// `auth` and an `Authorization` header is still found.
#[test]
fn token_authentication_per_trigger_is_encrypted_and_validates_without_keys() {
    const PASSWORD: &str = "airflow-pa55word";
    const CLIENT_SECRET: &str = "oauth-cl1ent-secret";
    let plain = serde_json::json!({"config": [
        {"url": "https://airflow.example.com/api/v2/dags/d/dagRuns", "payloadTemplate": "{}",
         "auth": {"type": "tokenEndpoint", "url": "https://airflow.example.com/auth/token",
                  "username": "flow-bot", "password": PASSWORD}},
        {"url": "https://api.example.com/hook", "payloadTemplate": "{}", "timeoutSecs": 7,
         "auth": {"type": "oauth2ClientCredentials", "tokenUrl": "https://login.example.com/oauth/token",
                  "clientId": "client-7", "clientSecret": CLIENT_SECRET, "scope": "hooks:write"}},
    ]})
    .to_string();
    let yaml = "config:\n  - url: https://airflow.example.com/x\n    payloadTemplate: '{}'\n    auth:\n      type: tokenEndpoint\n      url: https://airflow.example.com/auth/token\n      username: flow-bot\n      password: airflow-pa55word\n";
    for (text, format, count) in [
        (plain.as_str(), ConfigFormat::Json, 2),
        (yaml, ConfigFormat::Yaml, 1),
    ] {
        let identity = AgeIdentity::generate();
        let sealed = encrypt_config(text, format, &[identity.recipient()]).expect("encrypts");
        for hidden in [
            PASSWORD,
            CLIENT_SECRET,
            "client-7",
            "flow-bot",
            "login.example.com",
            "tokenEndpoint",
        ] {
            assert!(!sealed.contains(hidden), "{format}: {hidden} in {sealed}");
        }
        assert!(
            sealed.contains("auth") && sealed.contains(SEALED_FIELDS_REGEX),
            "{sealed}"
        );
        assert_eq!(
            validate_without_keys(&sealed, format),
            Ok(count),
            "{format}"
        );

        let config = decrypt_config(&sealed, format, &[identity]).expect("decrypts");
        let Some(crate::AuthConfig::TokenEndpoint {
            username, password, ..
        }) = &config.config[0].auth
        else {
            panic!("{format}: {config:?}");
        };
        assert_eq!(
            (username.as_str(), password.expose()),
            ("flow-bot", PASSWORD)
        );
        crate::Triggers::from_config(&config).expect("valid");

        // An `Authorization` header beside an encrypted `auth` is still refused.
        let both = match format {
            ConfigFormat::Json => plain.replacen(
                "\"payloadTemplate\":\"{}\",",
                "\"payloadTemplate\":\"{}\",\"headers\":{\"Authorization\":\"Bearer t\"},",
                1,
            ),
            ConfigFormat::Yaml => yaml.replace(
                "    auth:\n",
                "    headers:\n      Authorization: Bearer t\n    auth:\n",
            ),
        };
        assert_ne!(both, text);
        let identity = AgeIdentity::generate();
        let sealed = encrypt_config(&both, format, &[identity.recipient()]).expect("encrypts");
        let errors = validate_without_keys(&sealed, format).expect_err("both set");
        assert!(
            errors
                .to_string()
                .contains("sets `Authorization`, which `auth` sets itself"),
            "{format}: {errors}"
        );
    }
}

/// Issue 18, item 1: Flow's map form (with `interval`, `timeout` and `maxAttempts`)
/// encrypts, validates without keys (an encrypted `auth` in a map entry included; it was
/// only placeheld in the list form) and decrypts to the same named triggers.
#[test]
fn flow_map_form_encrypts_validates_without_keys_and_decrypts() {
    let yaml = "interval: 30m\nconfig:\n  onCommit:\n    url: https://example.com/webhook\n    headers:\n      Authorization: Bearer my-secret-token\n    payloadTemplate: '{}'\n    timeout: 30s\n    maxAttempts: 3\n  airflow:\n    url: https://airflow.example.com/x\n    payloadTemplate: '{}'\n    auth:\n      type: tokenEndpoint\n      url: https://airflow.example.com/auth/token\n      username: flow-bot\n      password: airflow-pa55word\n";
    let json =
        serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(yaml).expect("YAML"))
            .expect("JSON");
    for (text, format) in [
        (yaml, ConfigFormat::Yaml),
        (json.as_str(), ConfigFormat::Json),
    ] {
        let identity = AgeIdentity::generate();
        let sealed = encrypt_config(text, format, &[identity.recipient()]).expect("encrypts");
        for hidden in ["my-secret-token", "airflow-pa55word", "example.com"] {
            assert!(!sealed.contains(hidden), "{format}: {hidden} in {sealed}");
        }
        assert!(
            sealed.contains("onCommit") && sealed.contains("30m"),
            "{sealed}"
        );
        assert_eq!(validate_without_keys(&sealed, format), Ok(2), "{format}");
        let config = decrypt_config(&sealed, format, &[identity]).expect("decrypts");
        let triggers = crate::Triggers::from_config(&config).expect("valid");
        let names: Vec<&str> = triggers.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["airflow", "onCommit"], "{format}");
    }
}

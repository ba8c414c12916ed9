//! Compatibility with the real `sops` tool.
//!
//! The fixtures were written by sops 3.11.0 itself (see `fixtures/sops/README.md`); every
//! one must decrypt to the same config as its plaintext. When `$SOPS` names a sops
//! binary, the other direction is checked too: what `encrypt_config` writes, sops
//! decrypts (and verifies the MAC of). Without it that test says so and passes.

use std::path::{Path, PathBuf};
use triggers::{
    AgeIdentity, AgeRecipient, ConfigFormat, SopsError, TriggerConfig, TriggersConfig,
    decrypt_config, encrypt_config, is_sops_encrypted, load_config,
};
use triggers_sops::{Error as Sops, Node};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sops")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect(name)
}

fn identity(name: &str) -> Vec<AgeIdentity> {
    AgeIdentity::parse_keys_file(&read(name)).expect(name)
}

fn format_of(name: &str) -> ConfigFormat {
    if name.ends_with(".json") {
        ConfigFormat::Json
    } else {
        ConfigFormat::Yaml
    }
}

/// Everything a trigger holds, secrets exposed, so two configs can be compared.
fn project(config: &TriggersConfig) -> Vec<String> {
    config
        .config
        .iter()
        .map(|t: &TriggerConfig| {
            format!(
                "{} {:?} {:?} {:?} {} {} {} {:?} {}",
                t.url,
                t.method,
                t.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string()))
                    .collect::<Vec<_>>(),
                t.payload_template,
                t.timeout_secs,
                t.max_retries,
                t.retry_budget_secs,
                t.signing_secrets
                    .iter()
                    .map(|s| s.expose().to_string())
                    .collect::<Vec<_>>(),
                t.follow_redirects,
            )
        })
        .collect()
}

/// The files sops made that decrypt to their plaintext.
const SOPS_MADE: [&str; 7] = [
    "regex-one.sops.json",
    "regex-one.sops.yaml",
    "all-two.sops.json",
    "all-two.sops.yaml",
    "sealed-maconly.sops.json",
    "sealed-maconly.sops.yaml",
    "comments-all-one.sops.yaml",
];

/// Files sops made whose MAC covers the encrypted values only while `url` and `method`
/// are in clear: authenticated by nothing, so refused.
const SOPS_MADE_UNAUTHENTICATED: [&str; 2] = ["regex-maconly.sops.json", "regex-maconly.sops.yaml"];

#[test]
fn files_made_by_sops_decrypt_to_their_plaintext() {
    let expected =
        project(&TriggersConfig::parse(&read("plain.yaml"), ConfigFormat::Yaml).expect("succeeds"));
    assert_eq!(
        expected,
        project(&TriggersConfig::parse(&read("plain.json"), ConfigFormat::Json).expect("succeeds"))
    );
    assert!(expected[0].contains("Bearer s3cr3t-t0ken"));
    for name in SOPS_MADE {
        let text = read(name);
        assert!(is_sops_encrypted(&text, format_of(name)), "{name}");
        assert!(
            !text.contains("s3cr3t-t0ken"),
            "{name} holds a secret in clear"
        );
        let config = decrypt_config(&text, format_of(name), &identity("key1.agekey"))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(project(&config), expected, "{name}");
        let loaded =
            load_config(&text, format_of(name), &identity("key1.agekey")).expect("succeeds");
        assert_eq!(project(&loaded), expected, "{name}");
    }
}

/// Issue 18, item 4: under `mac_only_encrypted` a field in clear is authenticated by
/// nothing, and neither is the file's rule: a sops file that leaves `url` or `method` in
/// clear is refused by path, and so is an edit without keys that narrows the rule to add
/// an authenticated field in clear (real sops would accept that one: its metadata is
/// not authenticated).
#[test]
fn editing_without_keys_a_narrowed_rule_does_not_unseal_a_field() {
    let key = identity("key1.agekey");
    for name in SOPS_MADE_UNAUTHENTICATED {
        let err = decrypt_config(&read(name), format_of(name), &key).expect_err("refused");
        assert_eq!(
            err,
            SopsError::Unauthenticated {
                path: "config[0].url".into()
            },
            "{name}"
        );
        assert!(err.to_string().contains("not authenticated"), "{err}");
    }
    const BLOCK: &[At] = &[At::K("sops")];
    // The attack needs a field no trigger of the file has (else its sealed values no
    // longer decrypt under the narrowed rule, and the MAC notices).
    let bare = r#"{"config": [{"url": "https://hooks.example.com/a", "payloadTemplate": "{}"},
        {"url": "https://hooks.example.com/b", "payloadTemplate": "{}"}]}"#;
    let recipient = [key[0].recipient()];
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let plain = match format {
            ConfigFormat::Json => bare.to_string(),
            ConfigFormat::Yaml => {
                let doc: serde_json::Value = serde_json::from_str(bare).expect("JSON");
                serde_yaml_ng::to_string(&doc).expect("YAML")
            }
        };
        let sealed = encrypt_config(&plain, format, &recipient).expect("encrypts");
        for (field, value, path) in [
            ("method", text("PATCH"), "config[1].method"),
            (
                "headers",
                Node::Map(vec![("X-Planted".to_string(), text("v"))]),
                "config[1].headers.X-Planted",
            ),
            (
                "followRedirects",
                Node::Bool(true),
                "config[1].followRedirects",
            ),
        ] {
            let narrowed = "^(url|method|headers|signingSecrets|followRedirects|auth)$"
                .replace(&format!("|{field}"), "");
            let text = edited(
                &sealed,
                format,
                &Edit::Set(BLOCK, "encrypted_regex", Node::Str(narrowed)),
            );
            let text = edited(&text, format, &Edit::Set(T1, field, value));
            // The MAC matches (sops's would too): only our check refuses it.
            triggers_sops::decrypt(parse_node(&text, format), sops_format(format), &key)
                .expect("the MAC does not cover it");
            let err = decrypt_config(&text, format, &key).expect_err(field);
            assert_eq!(
                err,
                SopsError::Unauthenticated { path: path.into() },
                "{format}"
            );
            // A control plane validating without keys refuses it too.
            let errors = triggers::validate_without_keys(&text, format).expect_err(field);
            assert!(errors.to_string().contains(path), "{errors}");
            assert_eq!(triggers::validate_without_keys(&sealed, format), Ok(2));
        }
    }
}

#[test]
fn the_second_recipient_opens_two_recipient_files_and_only_those() {
    for name in ["all-two.sops.json", "all-two.sops.yaml"] {
        let config = decrypt_config(&read(name), format_of(name), &identity("key2.agekey"))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(config.config.len(), 2);
    }
    let err = decrypt_config(
        &read("regex-one.sops.json"),
        ConfigFormat::Json,
        &identity("key2.agekey"),
    )
    .expect_err("fails");
    assert!(
        matches!(err, SopsError::Sops(Sops::NoMatchingIdentity { .. })),
        "{err}"
    );
}

#[test]
fn a_key_that_is_no_recipient_is_refused_by_name() {
    for name in SOPS_MADE.into_iter().chain(SOPS_MADE_UNAUTHENTICATED) {
        let err = decrypt_config(&read(name), format_of(name), &identity("unrelated.agekey"))
            .expect_err("fails");
        let SopsError::Sops(Sops::NoMatchingIdentity { recipients }) = &err else {
            panic!("{name}: {err}");
        };
        assert!(recipients[0].starts_with("age1"), "{err}");
    }
}

#[test]
fn plaintext_files_are_not_sops_files() {
    for name in ["plain.json", "plain.yaml"] {
        assert!(!is_sops_encrypted(&read(name), format_of(name)));
        assert_eq!(
            decrypt_config(&read(name), format_of(name), &identity("key1.agekey"))
                .expect_err("fails"),
            SopsError::Sops(Sops::NotEncrypted)
        );
        // load_config takes either.
        assert_eq!(
            load_config(&read(name), format_of(name), &[])
                .expect("succeeds")
                .config
                .len(),
            2
        );
    }
}

/// Runs the real sops on what we wrote, when `$SOPS` names it.
#[test]
fn sops_decrypts_what_encrypt_config_writes() {
    let Ok(sops) = std::env::var("SOPS") else {
        // scripts/test installs sops and sets SOPS; under CI a missing binary is a failure.
        assert!(
            std::env::var_os("TRIGGERS_REQUIRE_SOPS").is_none(),
            "TRIGGERS_REQUIRE_SOPS is set but SOPS does not name a sops binary"
        );
        eprintln!("SOPS is not set: skipping the check against the real sops binary");
        return;
    };
    let recipients: Vec<AgeRecipient> = ["key1.agekey", "key2.agekey"]
        .iter()
        .map(|name| identity(name)[0].recipient())
        .collect();
    let dir = tempfile::tempdir().expect("succeeds");
    for (plain, format, ext) in [
        ("plain.json", ConfigFormat::Json, "json"),
        ("plain.yaml", ConfigFormat::Yaml, "yaml"),
    ] {
        let encrypted = encrypt_config(&read(plain), format, &recipients).expect("succeeds");
        let path = dir.path().join(format!("ours.{ext}"));
        std::fs::write(&path, &encrypted).expect("succeeds");
        for key in ["key1.agekey", "key2.agekey"] {
            let out = std::process::Command::new(&sops)
                .args([
                    "--disable-version-check",
                    "decrypt",
                    "--output-type",
                    "json",
                ])
                .arg(&path)
                .env("SOPS_AGE_KEY_FILE", fixtures().join(key))
                .output()
                .expect("runs sops");
            assert!(
                out.status.success(),
                "sops refused our {ext} file: {}\n{encrypted}",
                String::from_utf8_lossy(&out.stderr)
            );
            let decrypted = String::from_utf8(out.stdout).expect("succeeds");
            assert_eq!(
                project(&TriggersConfig::parse(&decrypted, ConfigFormat::Json).expect("succeeds")),
                project(&TriggersConfig::parse(&read(plain), format).expect("succeeds")),
                "{ext} with {key}"
            );
        }

        // Issue 18, item 4: sops's MAC covers what ours covers. A tuning field edited
        // without keys: sops decrypts it too, the edit in place; an authenticated field
        // edited: sops refuses it too.
        let decrypt = |text: &str| {
            std::fs::write(&path, text).expect("writes");
            std::process::Command::new(&sops)
                .args([
                    "--disable-version-check",
                    "decrypt",
                    "--output-type",
                    "json",
                ])
                .arg(&path)
                .env("SOPS_AGE_KEY_FILE", fixtures().join("key1.agekey"))
                .output()
                .expect("runs sops")
        };
        for (edit, holds) in tuning_edits() {
            let text = edited(&encrypted, format, &edit);
            let out = decrypt(&text);
            assert!(
                out.status.success(),
                "sops refused an edit of a tuning field: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
            let config = TriggersConfig::parse(
                std::str::from_utf8(&out.stdout).expect("UTF-8"),
                ConfigFormat::Json,
            )
            .expect("parses");
            assert!(holds(&config), "{ext}: the edit is not in {config:?}");
        }
        for (what, edit, _) in authenticated_edits() {
            let text = edited(&encrypted, format, &edit);
            let out = decrypt(&text);
            assert!(
                !out.status.success(),
                "sops accepted an edit of an authenticated field ({what}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// One step into a document: a map key or a list index.
#[derive(Clone, Copy)]
enum At {
    K(&'static str),
    I(usize),
}

/// The container at `path` of a document.
fn node_at<'a>(doc: &'a mut Node, path: &[At]) -> &'a mut Node {
    path.iter().fold(doc, |node, step| match (node, step) {
        (Node::Map(entries), At::K(key)) => {
            &mut entries
                .iter_mut()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no key {key}"))
                .1
        }
        (Node::Seq(items), At::I(i)) => &mut items[*i],
        _ => panic!("the path does not fit the document"),
    })
}

/// What an editor without keys does to a field of an encrypted file.
#[derive(Clone)]
enum Edit {
    /// Sets (or adds, at the end of its map) `key` of the map at the path.
    Set(&'static [At], &'static str, Node),
    /// Removes `key` of the map at the path.
    Remove(&'static [At], &'static str),
    /// Renames `key` of the map at the path, keeping its value.
    Rename(&'static [At], &'static str, &'static str),
    /// Swaps two items of the list at the path.
    Swap(&'static [At], usize, usize),
    /// Appends a copy of item `from` to the list at the path.
    CopyItem(&'static [At], usize),
    /// Removes item `i` of the list at the path.
    RemoveItem(&'static [At], usize),
    /// Adds an item to the list at the path.
    Push(&'static [At], Node),
}

fn apply(doc: &mut Node, edit: &Edit) {
    match edit {
        Edit::Set(path, key, value) => {
            let Node::Map(entries) = node_at(doc, path) else {
                panic!("not a map")
            };
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, old)) => *old = value.clone(),
                None => entries.push((key.to_string(), value.clone())),
            }
        }
        Edit::Remove(path, key) => {
            let Node::Map(entries) = node_at(doc, path) else {
                panic!("not a map")
            };
            let before = entries.len();
            entries.retain(|(k, _)| k != key);
            assert_eq!(entries.len(), before - 1, "no key {key}");
        }
        Edit::Rename(path, from, to) => {
            let Node::Map(entries) = node_at(doc, path) else {
                panic!("not a map")
            };
            entries
                .iter_mut()
                .find(|(k, _)| k == from)
                .unwrap_or_else(|| panic!("no key {from}"))
                .0 = to.to_string();
        }
        Edit::Swap(path, a, b) => {
            let Node::Seq(items) = node_at(doc, path) else {
                panic!("not a list")
            };
            items.swap(*a, *b);
        }
        Edit::CopyItem(path, from) => {
            let Node::Seq(items) = node_at(doc, path) else {
                panic!("not a list")
            };
            items.push(items[*from].clone());
        }
        Edit::RemoveItem(path, i) => {
            let Node::Seq(items) = node_at(doc, path) else {
                panic!("not a list")
            };
            items.remove(*i);
        }
        Edit::Push(path, item) => {
            let Node::Seq(items) = node_at(doc, path) else {
                panic!("not a list")
            };
            items.push(item.clone());
        }
    }
}

fn parse_node(text: &str, format: ConfigFormat) -> Node {
    match format {
        ConfigFormat::Json => serde_json::from_str(text).expect("JSON"),
        ConfigFormat::Yaml => serde_yaml_ng::from_str(text).expect("YAML"),
    }
}

/// An encrypted file edited as a text editor would, without keys: the edited document
/// written back in its format.
fn edited(sealed: &str, format: ConfigFormat, edit: &Edit) -> String {
    let mut doc = parse_node(sealed, format);
    apply(&mut doc, edit);
    match format {
        ConfigFormat::Json => serde_json::to_string_pretty(&doc).expect("JSON"),
        ConfigFormat::Yaml => serde_yaml_ng::to_string(&doc).expect("YAML"),
    }
}

fn text(s: &str) -> Node {
    Node::Str(s.to_string())
}

const T0: &[At] = &[At::K("config"), At::I(0)];
const T1: &[At] = &[At::K("config"), At::I(1)];
const CONFIG: &[At] = &[At::K("config")];
const ROOT: &[At] = &[];
const T0_HEADERS: &[At] = &[At::K("config"), At::I(0), At::K("headers")];
const T0_SECRETS: &[At] = &[At::K("config"), At::I(0), At::K("signingSecrets")];

/// Whether a decrypted config holds an edit.
type Holds = fn(&TriggersConfig) -> bool;

/// Whether an error is the one an edit must fail with.
type Refused = fn(&Sops) -> bool;

/// The edits of tuning fields an operator makes without the key, and what the decrypted
/// config then holds.
fn tuning_edits() -> Vec<(Edit, Holds)> {
    let ordered = Node::Map(vec![("mode".to_string(), text("ordered"))]);
    let retry = Node::Map(vec![("retry".to_string(), Node::Seq(vec![Node::Int(425)]))]);
    vec![
        (
            Edit::Set(
                T0,
                "payloadTemplate",
                text("{\"edited\": {{json collection_names}}}"),
            ),
            |c| c.config[0].payload_template.starts_with("{\"edited\""),
        ),
        (Edit::Set(T0, "timeoutSecs", Node::Int(45)), |c| {
            c.config[0].timeout_secs == 45
        }),
        (Edit::Set(T1, "timeoutSecs", Node::Int(7)), |c| {
            c.config[1].timeout_secs == 7
        }),
        (Edit::Set(T0, "maxRetries", Node::Int(5)), |c| {
            c.config[0].max_retries == 5
        }),
        (Edit::Set(T0, "retryBudgetSecs", Node::Int(600)), |c| {
            c.config[0].retry_budget_secs == 600
        }),
        (Edit::Remove(T0, "retryBudgetSecs"), |c| {
            c.config[0].retry_budget_secs == triggers::DEFAULT_RETRY_BUDGET_SECS
        }),
        (Edit::Set(T1, "drain", ordered), |c| {
            matches!(c.config[1].drain, triggers::DrainConfig::Ordered { .. })
        }),
        (Edit::Set(T0, "responses", retry), |c| {
            format!("{:?}", c.config[0].responses).contains("425")
        }),
        // Issue 18, item 5: which collections a trigger fires for is tuning, not sealed.
        (
            Edit::Set(
                T1,
                "collections",
                Node::Seq(vec![text("acmeCo/orders/"), text("acmeCo/users")]),
            ),
            |c| {
                c.config[1].collections.as_deref()
                    == Some(&["acmeCo/orders/".to_string(), "acmeCo/users".to_string()][..])
            },
        ),
    ]
}

/// Fields Flow's format adds (issue 18, item 1): outside the MAC's scope as any field
/// the secret rule does not name, so the MAC still matches when an editor adds them.
fn flow_field_edits() -> Vec<Edit> {
    vec![
        Edit::Set(ROOT, "interval", text("30m")),
        Edit::Set(T0, "timeout", text("45s")),
        Edit::Set(T0, "maxAttempts", Node::Int(5)),
        Edit::Set(T1, "name", text("onCommit")),
    ]
}

/// The edits of authenticated fields, and the error each must fail with.
fn authenticated_edits() -> Vec<(&'static str, Edit, Refused)> {
    use Sops::{MacMismatch, NotEncryptedValue, Tampered};
    let clear_auth = Node::Map(vec![
        ("type".to_string(), text("tokenEndpoint")),
        ("url".to_string(), text("https://evil.example.com/token")),
        ("username".to_string(), text("u")),
        ("password".to_string(), text("p")),
    ]);
    vec![
        (
            "url in clear",
            Edit::Set(T0, "url", text("https://evil.example.com/")),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[0].url"),
        ),
        ("urls swapped", Edit::Swap(CONFIG, 0, 1), |e| {
            matches!(e, MacMismatch { .. })
        }),
        (
            "method in clear",
            Edit::Set(T0, "method", text("PUT")),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[0].method"),
        ),
        (
            "method added",
            Edit::Set(T1, "method", text("PATCH")),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[1].method"),
        ),
        ("method removed", Edit::Remove(T0, "method"), |e| {
            matches!(e, MacMismatch { .. })
        }),
        (
            "header in clear",
            Edit::Set(T0_HEADERS, "Authorization", text("Bearer planted")),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[0].headers.Authorization"),
        ),
        (
            "header added",
            Edit::Set(T0_HEADERS, "X-Planted", text("v")),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[0].headers.X-Planted"),
        ),
        ("header removed", Edit::Remove(T0_HEADERS, "X-Team"), |e| {
            matches!(e, MacMismatch { .. })
        }),
        (
            "header renamed",
            Edit::Rename(T0_HEADERS, "X-Team", "X-Other"),
            |e| matches!(e, Tampered { path } if path == "config[0].headers.X-Other"),
        ),
        (
            "signing secret removed",
            Edit::RemoveItem(T0_SECRETS, 1),
            |e| matches!(e, MacMismatch { .. }),
        ),
        (
            "signing secrets reordered",
            Edit::Swap(T0_SECRETS, 0, 1),
            |e| matches!(e, MacMismatch { .. }),
        ),
        (
            "signing secret added",
            Edit::Push(T0_SECRETS, text("whsec_cGxhbnRlZA==")),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[0].signingSecrets[2]"),
        ),
        (
            "followRedirects flipped",
            Edit::Set(T0, "followRedirects", Node::Bool(true)),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[0].followRedirects"),
        ),
        (
            "auth added",
            Edit::Set(T1, "auth", clear_auth),
            |e| matches!(e, NotEncryptedValue { path } if path == "config[1].auth.type"),
        ),
        ("trigger removed", Edit::RemoveItem(CONFIG, 1), |e| {
            matches!(e, MacMismatch { .. })
        }),
        ("trigger copied", Edit::CopyItem(CONFIG, 0), |e| {
            matches!(e, MacMismatch { .. })
        }),
    ]
}

/// Encrypts a plaintext fixture as `triggers encrypt` does, for key1.
fn ours(plain: &str, format: ConfigFormat) -> String {
    encrypt_config(
        &read(plain),
        format,
        &[identity("key1.agekey")[0].recipient()],
    )
    .expect("encrypts")
}

const PLAINS: [(&str, ConfigFormat); 2] = [
    ("plain.json", ConfigFormat::Json),
    ("plain.yaml", ConfigFormat::Yaml),
];

/// Issue 18, item 4: editing without keys. What `triggers encrypt` writes has a MAC over
/// the encrypted values only (sops's `mac_only_encrypted`), so the tuning fields and any
/// field the secret rule does not name can be edited without the age key and the config
/// still decrypts and validates; the fields the rule seals (`url`, `method`, `headers`,
/// `signingSecrets`, `followRedirects`, `auth`) stay authenticated, and any edit of them
/// fails with a typed error naming the field, or the MAC.
#[test]
fn editing_without_keys_changes_tuning_fields_but_never_authenticated_ones() {
    let key = identity("key1.agekey");
    for (plain, format) in PLAINS {
        let sealed = ours(plain, format);
        assert!(sealed.contains("mac_only_encrypted"), "{sealed}");
        for (edit, holds) in tuning_edits() {
            let text = edited(&sealed, format, &edit);
            assert_ne!(parse_node(&text, format), parse_node(&sealed, format));
            let config = decrypt_config(&text, format, &key)
                .unwrap_or_else(|err| panic!("{plain}: {err}\n{text}"));
            assert!(holds(&config), "{plain}: the edit is not in {config:?}");
            triggers::Triggers::from_config(&config).expect("validates");
            assert_eq!(triggers::validate_without_keys(&text, format), Ok(2));
        }
        for edit in flow_field_edits() {
            let text = edited(&sealed, format, &edit);
            triggers_sops::decrypt(parse_node(&text, format), sops_format(format), &key)
                .unwrap_or_else(|err| panic!("{plain}: {err}\n{text}"));
        }
        for (what, edit, expected) in authenticated_edits() {
            let text = edited(&sealed, format, &edit);
            let err = decrypt_config(&text, format, &key).expect_err(what);
            let SopsError::Sops(err) = err else {
                panic!("{plain}, {what}: {err}");
            };
            assert!(expected(&err), "{plain}, {what}: {err:?}");
        }
    }
}

fn sops_format(format: ConfigFormat) -> triggers_sops::Format {
    match format {
        ConfigFormat::Json => triggers_sops::Format::Json,
        ConfigFormat::Yaml => triggers_sops::Format::Yaml,
    }
}

/// Issue 18, item 4: files `triggers encrypt` wrote before it (checked in,
/// `ours-before-18.sops.*`, a MAC over every value) still decrypt to their plaintext; an
/// edit of any value in them, a tuning field too, is still refused, and the error says
/// that this file's MAC covers every value.
#[test]
fn editing_without_keys_files_written_before_still_decrypt_and_keep_their_mac() {
    let key = identity("key1.agekey");
    let expected =
        project(&TriggersConfig::parse(&read("plain.yaml"), ConfigFormat::Yaml).expect("parses"));
    for (name, format) in [
        ("ours-before-18.sops.json", ConfigFormat::Json),
        ("ours-before-18.sops.yaml", ConfigFormat::Yaml),
    ] {
        let sealed = read(name);
        assert!(!sealed.contains("mac_only_encrypted"), "{name}");
        let config = decrypt_config(&sealed, format, &key).expect("decrypts");
        assert_eq!(project(&config), expected, "{name}");
        let text = edited(
            &sealed,
            format,
            &Edit::Set(T0, "timeoutSecs", Node::Int(45)),
        );
        let err = decrypt_config(&text, format, &key).expect_err("refused");
        assert_eq!(
            err,
            SopsError::Sops(Sops::MacMismatch {
                scope: triggers_sops::MacScope::AllValues
            }),
            "{name}"
        );
        assert!(err.to_string().contains("every value"), "{err}");
    }
}

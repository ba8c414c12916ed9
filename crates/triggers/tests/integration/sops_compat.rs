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
use triggers_sops::Error as Sops;

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

const SOPS_MADE: [&str; 7] = [
    "regex-one.sops.json",
    "regex-one.sops.yaml",
    "all-two.sops.json",
    "all-two.sops.yaml",
    "regex-maconly.sops.json",
    "regex-maconly.sops.yaml",
    "comments-all-one.sops.yaml",
];

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
    for name in SOPS_MADE {
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
    }
}

//! Any bytes as a SOPS-encrypted config, in JSON and in YAML, opened with a real age
//! key (the test fixtures'): detection, decryption and loading return a config or a
//! typed error, never panic (the document bounds hold before the SOPS reader parses).
//! Seeded with files `sops` wrote.

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggers::{AgeIdentity, ConfigFormat, Triggers, decrypt_config, is_sops_encrypted, load_config};

const KEY: &str = include_str!("../../crates/triggers/tests/fixtures/sops/key1.agekey");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let identities = AgeIdentity::parse_keys_file(KEY).expect("the fixture key parses");
    for format in [ConfigFormat::Json, ConfigFormat::Yaml] {
        let _ = is_sops_encrypted(text, format);
        if let Ok(config) = decrypt_config(text, format, &identities) {
            // A decrypted config validates or reports errors; it never panics.
            let _ = Triggers::from_config(&config);
        }
        let _ = load_config(text, format, &identities);
    }
});

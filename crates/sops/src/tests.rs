//! The reader and writer on documents that are not trigger configs: the format alone.
//! (The adapter's tests in `triggers`, `config/sops/tests.rs`, cover tampering, metadata
//! and sops's own files through trigger configs.)

use super::*;

const SECRET: &str = "s3cret-value-123";

fn doc(text: &str) -> Node {
    serde_json::from_str(text).expect("a JSON document")
}

/// Issue 14: SOPS was readable only as a trigger config; any document round-trips now,
/// under any `encrypted_regex`, and what the rule leaves alone stays readable.
#[test]
fn any_document_round_trips_not_only_trigger_configs() {
    let identity = AgeIdentity::generate();
    let plain = doc(&format!(
        r#"{{"db": {{"password": "{SECRET}", "port": 5432, "tags": ["a", null, true]}}, "name": "n"}}"#
    ));
    for format in [Format::Json, Format::Yaml] {
        let sealed = encrypt(
            plain.clone(),
            format,
            &[identity.recipient()],
            "^password$",
            MacScope::AllValues,
        )
        .expect("encrypts");
        assert!(!sealed.contains(SECRET), "{sealed}");
        assert!(
            sealed.contains("5432") && sealed.contains("^password$"),
            "{sealed}"
        );
        let read: Node = match format {
            Format::Json => serde_json::from_str(&sealed).expect("JSON"),
            Format::Yaml => serde_yaml_ng::from_str(&sealed).expect("YAML"),
        };
        assert!(is_encrypted(&read));
        let opened = decrypt(read, format, std::slice::from_ref(&identity)).expect("decrypts");
        assert_eq!(opened.into_node(), plain, "{format:?}");
    }
}

#[test]
fn keyless_readers_see_placeholders_and_no_sops_block() {
    let identity = AgeIdentity::generate();
    let sealed = encrypt(
        doc(&format!(r#"{{"a": {{"key": "{SECRET}"}}, "b": "clear"}}"#)),
        Format::Json,
        &[identity.recipient()],
        "^key$",
        MacScope::AllValues,
    )
    .expect("encrypts");
    let read = doc(&sealed);
    let mut paths = Vec::new();
    let shown = replace_sealed(&read, &mut |keys| {
        paths.push(keys.join("."));
        Some(Node::Str("placeholder".to_string()))
    });
    assert_eq!(paths, ["a.key"]);
    assert_eq!(shown, doc(r#"{"a": {"key": "placeholder"}, "b": "clear"}"#));
    assert!(!is_encrypted(&shown));
}

#[test]
fn a_value_of_the_wrong_shape_is_not_echoed() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wants {
        n: u32,
    }
    let identity = AgeIdentity::generate();
    let sealed = encrypt(
        doc(r#"{"n": "987654321x"}"#),
        Format::Json,
        &[identity.recipient()],
        "^n$",
        MacScope::AllValues,
    )
    .expect("encrypts");
    let opened = decrypt(doc(&sealed), Format::Json, &[identity]).expect("decrypts");
    let err = opened
        .deserialize::<Wants>()
        .expect_err("a string is no u32");
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(!err.to_string().contains("987654321x"), "{err}");
}

#[test]
fn a_fixed_lastmodified_is_the_macs_additional_data() {
    let identity = AgeIdentity::generate();
    let sealed = encrypt_at(
        doc(r#"{"k": "v"}"#),
        Format::Json,
        &[identity.recipient()],
        "^k$",
        MacScope::AllValues,
        "2026-01-01T00:00:00Z",
    )
    .expect("encrypts");
    assert!(sealed.contains("2026-01-01T00:00:00Z"), "{sealed}");
    decrypt(doc(&sealed), Format::Json, std::slice::from_ref(&identity)).expect("decrypts");
    let edited = sealed.replace("2026-01-01T00:00:00Z", "2001-01-01T00:00:00Z");
    assert_eq!(
        decrypt(doc(&edited), Format::Json, &[identity]).expect_err("refused"),
        Error::MacTampered
    );
    assert_eq!(
        encrypt(doc("[1]"), Format::Json, &[], "^k$", MacScope::AllValues).expect_err("not a map"),
        Error::Shape {
            message: "the document is not a map".to_string()
        }
    );
}

/// Issue 18: with the MAC over the encrypted values only (`mac_only_encrypted`), a value
/// in clear can change without the key; an encrypted one still cannot be added, removed
/// or reordered. The first step of the MAC is sops's fixed prefix, so the two kinds of
/// MAC never coincide: flipping the flag alone is refused.
#[test]
fn a_mac_over_encrypted_values_only_lets_clear_values_change() {
    let identity = AgeIdentity::generate();
    let plain = r#"{"a": ["x1", "x2"], "n": 5, "t": "clear"}"#;
    let sealed = encrypt(
        doc(plain),
        Format::Json,
        &[identity.recipient()],
        "^a$",
        MacScope::EncryptedValues,
    )
    .expect("encrypts");
    assert!(sealed.contains("\"mac_only_encrypted\": true"), "{sealed}");
    let open = |text: &str| decrypt(doc(text), Format::Json, std::slice::from_ref(&identity));
    assert_eq!(open(&sealed).expect("decrypts").into_node(), doc(plain));
    let edited = sealed
        .replace("\"n\": 5", "\"n\": 6")
        .replace("\"clear\"", "\"edited\"");
    assert_eq!(
        open(&edited).expect("decrypts").into_node(),
        doc(r#"{"a": ["x1", "x2"], "n": 6, "t": "edited"}"#)
    );
    let mut read = doc(&sealed);
    let Node::Map(entries) = &mut read else {
        panic!("a map")
    };
    let Node::Seq(items) = &mut entries[0].1 else {
        panic!("a list")
    };
    items.swap(0, 1);
    assert_eq!(
        decrypt(read, Format::Json, std::slice::from_ref(&identity)).expect_err("refused"),
        Error::MacMismatch {
            scope: MacScope::EncryptedValues
        }
    );
    let flag_dropped = sealed.replace(
        "\"mac_only_encrypted\": true",
        "\"mac_only_encrypted\": false",
    );
    assert_ne!(flag_dropped, sealed);
    assert_eq!(
        open(&flag_dropped).expect_err("refused"),
        Error::MacMismatch {
            scope: MacScope::AllValues
        }
    );
}

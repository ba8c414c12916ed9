//! One encrypted leaf: `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<type>]`.
//!
//! sops seals each value with AES-256-GCM under the document's data key, a random
//! 32-byte IV (not GCM's usual 12, so the nonce goes through GHASH), and the value's
//! key path as additional data, so a value moved to another key fails to open. The
//! plaintext is the value's text in Go's formatting, and `type` says how to read it back.

use crate::tree::Node;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::generic_array::typenum::U32;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// AES-256-GCM with the 32-byte nonce sops uses.
type SopsGcm = aes_gcm::AesGcm<Aes256, U32>;

/// Bytes in a GCM tag; sops stores the tag apart from the data.
const TAG_LEN: usize = 16;
/// Bytes in a sops IV.
const IV_LEN: usize = 32;

/// Why a leaf could not be read or opened. Never holds any part of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeafError {
    /// Not of the `ENC[AES256_GCM,...]` shape, or a part is not valid base64.
    Malformed(&'static str),
    /// The GCM tag does not verify: wrong key, edited ciphertext, or the value was moved.
    Tampered,
}

/// A parsed `ENC[...]` string.
struct Sealed {
    /// Ciphertext followed by the tag, as GCM opens it.
    data_and_tag: Vec<u8>,
    iv: Vec<u8>,
    kind: String,
}

fn parse(value: &str) -> Result<Sealed, LeafError> {
    let body = value
        .strip_prefix("ENC[AES256_GCM,data:")
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or(LeafError::Malformed("not of the form ENC[AES256_GCM,...]"))?;
    let (data, rest) = body
        .split_once(",iv:")
        .ok_or(LeafError::Malformed("no iv"))?;
    let (iv, rest) = rest
        .split_once(",tag:")
        .ok_or(LeafError::Malformed("no tag"))?;
    let (tag, kind) = rest
        .split_once(",type:")
        .ok_or(LeafError::Malformed("no type"))?;
    let decode = |part: &str, what: &'static str| {
        STANDARD
            .decode(part)
            .map_err(|_| LeafError::Malformed(what))
    };
    let mut data_and_tag = decode(data, "data is not base64")?;
    let iv = decode(iv, "iv is not base64")?;
    let tag = decode(tag, "tag is not base64")?;
    if iv.len() != IV_LEN {
        return Err(LeafError::Malformed("iv is not 32 bytes"));
    }
    if tag.len() != TAG_LEN {
        return Err(LeafError::Malformed("tag is not 16 bytes"));
    }
    data_and_tag.extend_from_slice(&tag);
    Ok(Sealed {
        data_and_tag,
        iv,
        kind: kind.to_string(),
    })
}

/// Whether a string has the shape of an encrypted leaf (without checking its parts).
pub(crate) fn looks_encrypted(value: &str) -> bool {
    value.starts_with("ENC[AES256_GCM,")
}

/// Opens a leaf into the typed value sops would produce. An empty string is left as is:
/// sops never encrypts empty strings.
pub(crate) fn decrypt(value: &str, key: &[u8; 32], aad: &str) -> Result<Node, LeafError> {
    if value.is_empty() {
        return Ok(Node::Str(String::new()));
    }
    let sealed = parse(value)?;
    let cipher = SopsGcm::new(GenericArray::from_slice(key));
    let plain = cipher
        .decrypt(
            GenericArray::from_slice(&sealed.iv),
            Payload {
                msg: &sealed.data_and_tag,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| LeafError::Tampered)?;
    let text = String::from_utf8(plain).map_err(|_| LeafError::Malformed("not UTF-8"))?;
    match sealed.kind.as_str() {
        "str" | "bytes" => Ok(Node::Str(text)),
        "int" | "int64" => text
            .parse()
            .map(Node::Int)
            .map_err(|_| LeafError::Malformed("type int but not an integer")),
        "float" => text
            .parse()
            .map(Node::Float)
            .map_err(|_| LeafError::Malformed("type float but not a number")),
        "bool" => parse_go_bool(&text)
            .map(Node::Bool)
            .ok_or(LeafError::Malformed("type bool but not a boolean")),
        _ => Err(LeafError::Malformed("unknown type")),
    }
}

/// Go's `strconv.ParseBool`, which sops uses.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Seals one scalar the way sops does: the plaintext is [`mac_bytes`]'s text and the
/// type names the kind. Returns `None` for values sops leaves alone (null, the empty
/// string) and for containers.
pub(crate) fn encrypt(
    value: &Node,
    json_numbers: bool,
    key: &[u8; 32],
    aad: &str,
) -> Option<String> {
    let kind = match value {
        Node::Str(s) if s.is_empty() => return None,
        Node::Str(_) => "str",
        Node::Bool(_) => "bool",
        Node::Int(_) if json_numbers => "float",
        Node::Int(_) => "int",
        Node::Float(_) => "float",
        Node::Null | Node::Seq(_) | Node::Map(_) => return None,
    };
    let plain = mac_bytes(value, json_numbers)?;
    let cipher = SopsGcm::new(GenericArray::from_slice(key));
    let iv = SopsGcm::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(
            &iv,
            Payload {
                msg: &plain,
                aad: aad.as_bytes(),
            },
        )
        .ok()?;
    let (data, tag) = sealed.split_at(sealed.len().saturating_sub(TAG_LEN));
    Some(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        STANDARD.encode(data),
        STANDARD.encode(iv),
        STANDARD.encode(tag),
    ))
}

/// Seals the document MAC (an uppercase hex string) with `lastmodified` as additional data.
pub(crate) fn encrypt_str(text: &str, key: &[u8; 32], aad: &str) -> Option<String> {
    encrypt(&Node::Str(text.to_string()), false, key, aad)
}

/// The bytes sops feeds its MAC for a scalar (`sops.ToBytes`): strings as they are,
/// booleans as `True`/`False`, integers in decimal, floats in Go's shortest `'f'`
/// formatting. A JSON number is a float to sops (Go's decoder reads it as `float64`),
/// so `json_numbers` formats integers that way too.
pub(crate) fn mac_bytes(value: &Node, json_numbers: bool) -> Option<Vec<u8>> {
    Some(match value {
        Node::Str(s) => s.as_bytes().to_vec(),
        Node::Bool(true) => b"True".to_vec(),
        Node::Bool(false) => b"False".to_vec(),
        Node::Int(i) if json_numbers => go_format_float(*i as f64).into_bytes(),
        Node::Int(i) => i.to_string().into_bytes(),
        Node::Float(f) => go_format_float(*f).into_bytes(),
        Node::Null | Node::Seq(_) | Node::Map(_) => return None,
    })
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that reads back to
/// the same float, never in exponent form. Rust's `Display` for `f64` is the same
/// except for the names of the non-finite values.
fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trips_each_scalar_type() {
        for (value, json) in [
            (Node::Str("Bearer t0ken".into()), false),
            (Node::Int(-42), false),
            (Node::Int(30), true),
            (Node::Float(1.5), false),
            (Node::Bool(true), false),
            (Node::Bool(false), true),
        ] {
            let sealed = encrypt(&value, json, &KEY, "config:headers:").expect("succeeds");
            let opened = decrypt(&sealed, &KEY, "config:headers:").expect("succeeds");
            let expected = match value {
                Node::Int(i) if json => Node::Float(i as f64),
                other => other,
            };
            assert!(opened == expected, "{sealed}");
        }
        assert_eq!(encrypt(&Node::Str(String::new()), false, &KEY, "a:"), None);
        assert!(decrypt("", &KEY, "a:").expect("succeeds") == Node::Str(String::new()));
    }

    #[test]
    fn a_value_moved_to_another_path_or_key_fails() {
        let sealed = encrypt(&Node::Str("x".into()), false, &KEY, "a:b:").expect("succeeds");
        assert_eq!(decrypt(&sealed, &KEY, "a:c:"), Err(LeafError::Tampered));
        assert_eq!(decrypt(&sealed, &[8; 32], "a:b:"), Err(LeafError::Tampered));
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_format_float(30.0), "30");
        assert_eq!(go_format_float(1.5), "1.5");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(1e-7), "0.0000001");
        assert_eq!(go_format_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn malformed_leaves_are_named_not_panicked_on() {
        for bad in [
            "ENC[AES256_GCM,data:!!,iv:AAAA,tag:AAAA,type:str]",
            "ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]",
            "ENC[AES256_GCM,data:AAAA]",
            "ENC[AES256_GCM,data:,iv:,tag:,type:]",
            "plain text",
            "ENC[AES256_GCM,data:AAAA,iv:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str",
        ] {
            assert!(
                matches!(decrypt(bad, &KEY, "a:"), Err(LeafError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn random_bytes_in_an_enc_string_never_panic() {
        let mut rng = fastrand::Rng::with_seed(6);
        let good = encrypt(&Node::Str("value".into()), false, &KEY, "a:").expect("succeeds");
        for _ in 0..2000 {
            let mut bytes = good.clone().into_bytes();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            if rng.bool() {
                bytes.truncate(rng.usize(..bytes.len()));
            }
            let text = String::from_utf8_lossy(&bytes);
            // Only the intact value, or nothing at all (sops's empty string), opens.
            assert!(
                decrypt(&text, &KEY, "a:").is_err() || text == good || text.is_empty(),
                "{text}"
            );
        }
    }
}

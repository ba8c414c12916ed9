//! Trigger configs encrypted at rest with SOPS and age, read and written natively.
//!
//! A control plane stores a config the way `sops` writes it: keys and non-secret values
//! in clear (so templates can be validated without keys), each secret value an
//! `ENC[AES256_GCM,...]` leaf sealed with a per-document data key, and a top-level
//! `sops` block holding that data key wrapped for age recipients, the rule that says
//! which values are encrypted, and a MAC over every value. [`decrypt_config`] unwraps the
//! data key with an age identity, opens every leaf, checks the MAC, and only then builds
//! a [`TriggersConfig`]: a document that fails any check yields an error, never part of
//! a config. Plaintext lives only in memory, in [`Secret`](crate::Secret)s.
//!
//! The format follows sops's own source (`sops.go`, `aes/cipher.go`, `stores/`): a
//! value's additional data is its map keys joined with `:` plus a trailing `:` (list
//! indices are not part of it), and the MAC is SHA-512 over the plaintext values in
//! document order, as uppercase hex, sealed with `lastmodified` as additional data.

mod age_keys;
mod metadata;
mod tree;
mod value_cipher;

pub use age_keys::{AgeIdentity, AgeRecipient, KeyError};

use crate::config::parse_document;
use crate::{ConfigFormat, ParseError, TriggersConfig};
use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore as _;
use metadata::{Metadata, Rule, SOPS_KEY};
use serde::Deserialize as _;
use sha2::{Digest as _, Sha512};
use tree::{Node, Step, display_path, key_path};
use value_cipher::LeafError;

/// The `encrypted_regex` that [`encrypt_config`] writes: the keys whose values are
/// secrets in a [`TriggersConfig`]: the URL (user info, a query token, or a path that is
/// itself the credential, as Slack's incoming webhooks are), header values, signing
/// secrets and the whole `auth` block (its secret, and with it which identity provider
/// and client it is). Real sops re-encrypting the file after an edit applies the same
/// rule, since it is stored; a key rule cannot look inside a value, so every `url` is
/// encrypted.
pub const SECRET_FIELDS_REGEX: &str = "^(url|headers|signingSecrets|auth)$";

/// What [`validate_without_keys`] puts in place of an encrypted `url`: its check is
/// skipped, and errors name the trigger by this origin.
pub const SEALED_URL_PLACEHOLDER: &str = "https://encrypted-url.invalid/";

/// The sops release whose file format [`encrypt_config`] writes and the tests check
/// against.
pub const SOPS_FORMAT_VERSION: &str = "3.11.0";

/// sops's fixed prefix of the MAC when only encrypted values are covered, so the two
/// kinds of MAC never coincide: SHA-256 of `sops`.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Why an encrypted config could not be read or written. Names the field that failed
/// (by its key path, which sops never encrypts), never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    /// The document is not valid JSON or YAML, or (for plaintext) not a valid config.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The document has no top-level `sops` block, but decryption was asked for.
    #[error("the config is not SOPS-encrypted: it has no top-level `sops` block")]
    NotEncrypted,
    /// The document already has a `sops` block, but encryption was asked for.
    #[error("the config is already SOPS-encrypted")]
    AlreadyEncrypted,
    /// A field of the `sops` block is missing or malformed.
    #[error("sops metadata field `{field}` {reason}")]
    Metadata {
        /// The field of the `sops` block.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file uses a sops feature this reader does not implement.
    #[error("sops feature not supported: {what}")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// The data key is not wrapped for any age recipient (only for other key services).
    #[error("the data key is not wrapped for any age recipient (key services present: {others:?})")]
    NoAgeRecipients {
        /// The other key services the file names, e.g. `kms`.
        others: Vec<&'static str>,
    },
    /// None of the given identities is one of the file's age recipients.
    #[error("no identity given matches an age recipient of the config ({recipients:?})")]
    NoMatchingIdentity {
        /// The public keys the data key is wrapped for.
        recipients: Vec<String>,
    },
    /// The data key wrapped for a matching recipient could not be unwrapped (a damaged
    /// or truncated age stanza).
    #[error("unwrapping the data key for {recipient} failed: {reason}")]
    DataKey {
        /// The recipient whose stanza failed.
        recipient: String,
        /// age's reason.
        reason: String,
    },
    /// A value is not a well-formed `ENC[AES256_GCM,...]` string.
    #[error("encrypted value at `{path}` is malformed: {reason}")]
    MalformedValue {
        /// Where the value is.
        path: String,
        /// What is wrong with its shape.
        reason: &'static str,
    },
    /// A value that the file's rule says is encrypted is in clear.
    #[error("value at `{path}` should be encrypted but is not")]
    NotEncryptedValue {
        /// Where the value is.
        path: String,
    },
    /// A value failed authentication: its ciphertext was edited, or it was moved from
    /// another key.
    #[error(
        "encrypted value at `{path}` failed authentication (tampered, or moved from another key)"
    )]
    Tampered {
        /// Where the value is.
        path: String,
    },
    /// The `sops` block has no MAC.
    #[error("the sops block has no `mac`")]
    MacMissing,
    /// The sealed MAC itself failed authentication (or `lastmodified` was edited).
    #[error("the sops MAC failed authentication (tampered `mac` or `lastmodified`)")]
    MacTampered,
    /// The MAC does not match the values: a value was added, removed, reordered or
    /// edited in clear.
    #[error("the sops MAC does not match the config's values: the file was modified")]
    MacMismatch,
    /// The decrypted document does not have the shape of a trigger config. There is no
    /// line or column: the text parsed was the encrypted one.
    #[error("the decrypted config is not a valid trigger config: {message}")]
    Config {
        /// What serde found, withheld if it would show a decrypted value.
        message: String,
    },
    /// A config could not be encrypted.
    #[error("encrypting the config failed: {reason}")]
    Encrypt {
        /// Why.
        reason: String,
    },
}

/// Whether a document is SOPS-encrypted: it parses and has a top-level `sops` key.
pub fn is_sops_encrypted(text: &str, format: ConfigFormat) -> bool {
    parse_document::<Node>(text, format).is_ok_and(|doc| doc.get(SOPS_KEY).is_some())
}

/// Validates an encrypted config without its keys, as a control plane does at publish
/// time: the templates, bounds and every value in clear are checked as
/// [`crate::validate`] does; encrypted values cannot be, so an encrypted `url` is taken
/// as [`SEALED_URL_PLACEHOLDER`] (errors name the trigger by it), encrypted header
/// values and signing secrets as valid placeholders, and an `auth` block holding an
/// encrypted value (its `type` included) as a valid token endpoint: that it does not
/// sit beside an `Authorization` header is still checked. The decrypting runtime checks them
/// at start. A plaintext document is validated as it is. Returns the number of triggers.
/// Meant for files whose rule is [`SECRET_FIELDS_REGEX`]; another encrypted field (sops's
/// default rule encrypts everything) fails to validate here.
pub fn validate_without_keys(
    text: &str,
    format: ConfigFormat,
) -> Result<usize, crate::ValidationErrors> {
    let parse_error = |err: ParseError| crate::ValidationErrors(vec![err.into()]);
    let mut doc: Node = parse_document(text, format).map_err(parse_error)?;
    if let Node::Map(entries) = &mut doc {
        entries.retain(|(key, _)| key != SOPS_KEY);
    }
    placehold_sealed_auth(&mut doc);
    let placeheld = doc
        .map_leaves(&mut Vec::new(), &mut |leaf, steps| {
            Ok::<_, std::convert::Infallible>(match leaf {
                Node::Str(sealed) if value_cipher::looks_encrypted(sealed) => {
                    let keys = key_path(steps);
                    Node::Str(
                        match keys.as_slice() {
                            [.., "url"] => SEALED_URL_PLACEHOLDER,
                            [.., "signingSecrets"] => SEALED_SIGNING_SECRET,
                            [.., "headers", _] => "encrypted",
                            _ => sealed,
                        }
                        .to_string(),
                    )
                }
                other => other.clone(),
            })
        })
        .unwrap_or_else(|never| match never {});
    let shape = |message: String| {
        parse_error(ParseError::Syntax {
            format,
            line: 0,
            column: 0,
            message,
        })
    };
    let json = placeheld
        .into_json()
        .map_err(|_| shape("a number is not finite".to_string()))?;
    let config = TriggersConfig::deserialize(json).map_err(|err| shape(err.to_string()))?;
    crate::Triggers::from_config(&config).map(|triggers| triggers.len())
}

/// Replaces every trigger's `auth` that holds an encrypted value with a valid token
/// endpoint at [`SEALED_URL_PLACEHOLDER`]: the rule encrypts the whole block, its `type`
/// too, so none of it can be checked without keys.
fn placehold_sealed_auth(doc: &mut Node) {
    let Node::Map(entries) = doc else { return };
    let Some((_, Node::Seq(triggers))) = entries.iter_mut().find(|(key, _)| key == "config") else {
        return;
    };
    for trigger in triggers {
        let Node::Map(fields) = trigger else { continue };
        for (key, value) in fields {
            if key == "auth" && has_sealed_leaf(value) {
                let text = |s: &str| Node::Str(s.to_string());
                *value = Node::Map(vec![
                    ("type".to_string(), text("tokenEndpoint")),
                    ("url".to_string(), text(SEALED_URL_PLACEHOLDER)),
                    ("username".to_string(), text("encrypted")),
                    ("password".to_string(), text("encrypted")),
                ]);
            }
        }
    }
}

fn has_sealed_leaf(node: &Node) -> bool {
    match node {
        Node::Str(s) => value_cipher::looks_encrypted(s),
        Node::Seq(items) => items.iter().any(has_sealed_leaf),
        Node::Map(entries) => entries.iter().any(|(_, value)| has_sealed_leaf(value)),
        Node::Null | Node::Bool(_) | Node::Int(_) | Node::Float(_) => false,
    }
}

/// A valid signing secret standing for an encrypted one in [`validate_without_keys`].
const SEALED_SIGNING_SECRET: &str = "whsec_ZW5jcnlwdGVkIHNpZ25pbmcgc2VjcmV0";

/// Reads a config that may or may not be encrypted: a document with a `sops` block is
/// decrypted with `identities`, any other is parsed as plaintext.
pub fn load_config(
    text: &str,
    format: ConfigFormat,
    identities: &[AgeIdentity],
) -> Result<TriggersConfig, SopsError> {
    if is_sops_encrypted(text, format) {
        decrypt_config(text, format, identities)
    } else {
        Ok(TriggersConfig::parse(text, format)?)
    }
}

/// Decrypts a SOPS-encrypted config (as the `sops` tool writes it, with age
/// recipients), checks its MAC, and parses the result.
pub fn decrypt_config(
    text: &str,
    format: ConfigFormat,
    identities: &[AgeIdentity],
) -> Result<TriggersConfig, SopsError> {
    let mut doc: Node = parse_document(text, format)?;
    let Node::Map(entries) = &mut doc else {
        return Err(SopsError::NotEncrypted);
    };
    let at = entries
        .iter()
        .position(|(key, _)| key == SOPS_KEY)
        .ok_or(SopsError::NotEncrypted)?;
    let (_, block) = entries.remove(at);
    let metadata = Metadata::parse(&block)?;
    let key = age_keys::unwrap_data_key(&metadata.age, identities)?;

    let json_numbers = format == ConfigFormat::Json;
    let mut walk = DecryptWalk {
        key: &key,
        rule: &metadata.rule,
        mac_only_encrypted: metadata.mac_only_encrypted,
        json_numbers,
        hash: Sha512::new(),
        plaintexts: Vec::new(),
    };
    if metadata.mac_only_encrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let plain = doc.map_leaves(&mut Vec::new(), &mut |leaf, steps| walk.leaf(leaf, steps))?;
    let computed = walk.hash.finalize();

    let stored = match value_cipher::decrypt(&metadata.mac, &key, &metadata.mac_aad) {
        Ok(Node::Str(hex)) => hex,
        Ok(_) => {
            return Err(SopsError::Metadata {
                field: "mac",
                reason: "is not sealed as a string",
            });
        }
        Err(LeafError::Tampered) => return Err(SopsError::MacTampered),
        Err(LeafError::Malformed(reason)) => {
            return Err(SopsError::MalformedValue {
                path: "sops.mac".to_string(),
                reason,
            });
        }
    };
    if !mac_matches(&computed, &stored) {
        return Err(SopsError::MacMismatch);
    }

    let json = plain.into_json().map_err(|_| SopsError::Config {
        message: "a number is not finite".to_string(),
    })?;
    TriggersConfig::deserialize(json).map_err(|err| {
        let message = err.to_string();
        // serde may quote the value it choked on; withhold the message if that value
        // was a decrypted one.
        let leaks = walk
            .plaintexts
            .iter()
            .any(|plain| !plain.is_empty() && message.contains(plain.as_str()));
        let message = if leaks {
            "a decrypted value has the wrong type (details withheld: they would show it)"
                .to_string()
        } else {
            message
        };
        SopsError::Config { message }
    })
}

/// Compares the MAC we computed with the stored hex, in time independent of where they
/// differ (sops does the same). Hex case is ignored, as sops decodes it first.
fn mac_matches(computed: &[u8], stored_hex: &str) -> bool {
    let computed = hex_upper(computed);
    let stored = stored_hex.to_ascii_uppercase();
    computed.len() == stored.len()
        && computed
            .bytes()
            .zip(stored.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex_upper(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02X}");
        out
    })
}

/// Decrypts a document's values in order while hashing them for the MAC.
struct DecryptWalk<'k> {
    key: &'k [u8; 32],
    rule: &'k Rule,
    mac_only_encrypted: bool,
    json_numbers: bool,
    hash: Sha512,
    /// Every decrypted value as text, to keep them out of error messages.
    plaintexts: Vec<String>,
}

impl DecryptWalk<'_> {
    fn leaf(&mut self, leaf: &Node, steps: &[Step<'_>]) -> Result<Node, SopsError> {
        let keys = key_path(steps);
        let encrypted = self.rule.encrypts(&keys);
        let value = if encrypted {
            let Node::Str(sealed) = leaf else {
                return Err(SopsError::NotEncryptedValue {
                    path: display_path(steps),
                });
            };
            if !sealed.is_empty() && !value_cipher::looks_encrypted(sealed) {
                return Err(SopsError::NotEncryptedValue {
                    path: display_path(steps),
                });
            }
            let aad = format!("{}:", keys.join(":"));
            let value = value_cipher::decrypt(sealed, self.key, &aad).map_err(|err| match err {
                LeafError::Tampered => SopsError::Tampered {
                    path: display_path(steps),
                },
                LeafError::Malformed(reason) => SopsError::MalformedValue {
                    path: display_path(steps),
                    reason,
                },
            })?;
            if let Some(bytes) = value_cipher::mac_bytes(&value, self.json_numbers) {
                self.plaintexts
                    .push(String::from_utf8_lossy(&bytes).into_owned());
            }
            value
        } else {
            leaf.clone()
        };
        if (encrypted || !self.mac_only_encrypted)
            && let Some(bytes) = value_cipher::mac_bytes(&value, self.json_numbers)
        {
            self.hash.update(bytes);
        }
        Ok(value)
    }
}

/// Encrypts a plaintext config for age recipients as `sops` would with
/// `--encrypted-regex '^(url|headers|signingSecrets|auth)$'`: URLs, header values,
/// signing secrets and `auth` blocks become `ENC[...]` leaves, everything else
/// (templates, bounds, methods) stays readable, for [`validate_without_keys`]. The output has the
/// format of the input and decrypts with `sops` itself or [`decrypt_config`].
pub fn encrypt_config(
    text: &str,
    format: ConfigFormat,
    recipients: &[AgeRecipient],
) -> Result<String, SopsError> {
    encrypt_config_at(text, format, recipients, &metadata::now_rfc3339())
}

fn encrypt_config_at(
    text: &str,
    format: ConfigFormat,
    recipients: &[AgeRecipient],
    lastmodified: &str,
) -> Result<String, SopsError> {
    if is_sops_encrypted(text, format) {
        return Err(SopsError::AlreadyEncrypted);
    }
    // Only a valid config is worth encrypting; checking first also means a shape error
    // is reported with its line and column.
    TriggersConfig::parse(text, format)?;
    let doc: Node = parse_document(text, format)?;
    seal_document(doc, format, recipients, lastmodified)
}

/// Encrypts any document (not only a valid config) with [`SECRET_FIELDS_REGEX`].
fn seal_document(
    doc: Node,
    format: ConfigFormat,
    recipients: &[AgeRecipient],
    lastmodified: &str,
) -> Result<String, SopsError> {
    let Node::Map(entries) = doc else {
        return Err(SopsError::Config {
            message: "the config is not a map".to_string(),
        });
    };
    if entries.iter().any(|(key, _)| key == SOPS_KEY) {
        return Err(SopsError::AlreadyEncrypted);
    }
    if recipients.is_empty() {
        return Err(SopsError::Encrypt {
            reason: "no age recipients given".to_string(),
        });
    }

    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let rule = Rule::EncryptedRegex(regex::Regex::new(SECRET_FIELDS_REGEX).map_err(|_| {
        SopsError::Encrypt {
            reason: "the secret-fields regex does not compile".to_string(),
        }
    })?);
    let mut walk = EncryptWalk {
        key: &key,
        rule: &rule,
        json_numbers: format == ConfigFormat::Json,
        hash: Sha512::new(),
    };
    let body = Node::Map(entries);
    let mut sealed = body.map_leaves(&mut Vec::new(), &mut |leaf, steps| walk.leaf(leaf, steps))?;
    let mac = hex_upper(&walk.hash.finalize());
    let mac = value_cipher::encrypt_str(&mac, &key, lastmodified).ok_or(SopsError::Encrypt {
        reason: "sealing the MAC failed".to_string(),
    })?;

    let mut age = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        age.push(Node::Map(vec![
            ("recipient".to_string(), Node::Str(recipient.to_string())),
            (
                "enc".to_string(),
                Node::Str(age_keys::wrap_data_key(&key, recipient)?),
            ),
        ]));
    }
    let block = Node::Map(vec![
        ("age".to_string(), Node::Seq(age)),
        (
            "lastmodified".to_string(),
            Node::Str(lastmodified.to_string()),
        ),
        ("mac".to_string(), Node::Str(mac)),
        (
            "encrypted_regex".to_string(),
            Node::Str(SECRET_FIELDS_REGEX.to_string()),
        ),
        (
            "version".to_string(),
            Node::Str(SOPS_FORMAT_VERSION.to_string()),
        ),
    ]);
    if let Node::Map(entries) = &mut sealed {
        entries.push((SOPS_KEY.to_string(), block));
    }
    let emitted = match format {
        ConfigFormat::Json => serde_json::to_string_pretty(&sealed)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|err| err.to_string()),
        ConfigFormat::Yaml => serde_yaml_ng::to_string(&sealed).map_err(|err| err.to_string()),
    };
    emitted.map_err(|reason| SopsError::Encrypt { reason })
}

/// Encrypts a document's values in order while hashing their plaintext for the MAC.
struct EncryptWalk<'k> {
    key: &'k [u8; 32],
    rule: &'k Rule,
    json_numbers: bool,
    hash: Sha512,
}

impl EncryptWalk<'_> {
    fn leaf(&mut self, leaf: &Node, steps: &[Step<'_>]) -> Result<Node, SopsError> {
        if let Some(bytes) = value_cipher::mac_bytes(leaf, self.json_numbers) {
            self.hash.update(bytes);
        }
        let keys = key_path(steps);
        if !self.rule.encrypts(&keys) {
            return Ok(leaf.clone());
        }
        let aad = format!("{}:", keys.join(":"));
        match value_cipher::encrypt(leaf, self.json_numbers, self.key, &aad) {
            Some(sealed) => Ok(Node::Str(sealed)),
            None if matches!(leaf, Node::Str(s) if s.is_empty()) => Ok(leaf.clone()),
            None => Err(SopsError::Encrypt {
                reason: format!("sealing the value at `{}` failed", display_path(steps)),
            }),
        }
    }
}

#[cfg(test)]
mod tests;

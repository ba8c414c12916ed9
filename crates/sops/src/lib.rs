//! SOPS documents encrypted with age, read and written natively: the format, not a config.
//!
//! A document is stored the way `sops` writes it: keys and the values its rule leaves
//! alone in clear, each other value an `ENC[AES256_GCM,...]` leaf sealed with a
//! per-document data key, and a top-level `sops` block holding that data key wrapped for
//! age recipients, the rule that says which values are encrypted, and a MAC over every
//! value. [`decrypt`] unwraps the data key with an [`AgeIdentity`], opens every leaf,
//! checks the MAC, and only then hands back the plaintext ([`Decrypted`]): a document
//! that fails any check yields an [`Error`], never part of a document. [`encrypt`] seals
//! a document for [`AgeRecipient`]s under an `encrypted_regex`, its MAC over every value
//! or, as sops's `mac_only_encrypted` does, over the encrypted ones only ([`MacScope`]).
//!
//! The caller parses the text into a [`Node`] (it is `Deserialize`, from JSON or YAML)
//! under its own size and depth bounds, and says which [`Format`] it was, since sops
//! hashes JSON and YAML numbers differently. This crate knows nothing of trigger
//! configs (`triggers` has the adapter that does: its secret fields, its parser's
//! bounds, its config type) and must not depend on `triggers`.
//!
//! The format follows sops's own source (`sops.go`, `aes/cipher.go`, `stores/`): a
//! value's additional data is its map keys joined with `:` plus a trailing `:` (list
//! indices are not part of it), and the MAC is SHA-512 over the plaintext values in
//! document order (every value, or with `mac_only_encrypted` a fixed prefix and the
//! encrypted values only), as uppercase hex, sealed with `lastmodified` as additional data.

mod age_keys;
mod metadata;
mod tree;
mod value_cipher;

pub use age_keys::{AgeIdentity, AgeRecipient, KeyError};
pub use metadata::SOPS_KEY;
pub use tree::{Node, NonFiniteNumber};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore as _;
use metadata::{Metadata, Rule};
use sha2::{Digest as _, Sha512};
use tree::{Step, display_path, key_path};
use value_cipher::LeafError;

/// The sops release whose file format [`encrypt`] writes and the tests check against.
pub const SOPS_FORMAT_VERSION: &str = "3.11.0";

/// sops's fixed prefix of the MAC when only encrypted values are covered, so the two
/// kinds of MAC never coincide: SHA-256 of `sops`.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Which values a document's MAC covers (sops's `mac_only_encrypted` metadata flag).
///
/// An encrypted value is authenticated twice: by its own AES-GCM tag, whose additional
/// data is its key path, and by the MAC, which covers the sequence of values (so adding,
/// removing or reordering one is noticed). A value in clear is authenticated by the MAC
/// only, and only under [`MacScope::AllValues`]: under [`MacScope::EncryptedValues`] it
/// can be edited without the key, and the document still decrypts, with `sops` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacScope {
    /// Every value (sops's default).
    AllValues,
    /// The encrypted values only (`mac_only_encrypted: true`, sops 3.9 and later).
    EncryptedValues,
}

impl std::fmt::Display for MacScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MacScope::AllValues => {
                "a value was edited, added, removed or reordered \
                 (this file's MAC covers every value: edits need the key)"
            }
            MacScope::EncryptedValues => {
                "an encrypted value was added, removed or reordered \
                 (this file's MAC covers the encrypted values only)"
            }
        })
    }
}

/// The syntax a document was read from: sops hashes a JSON number as a float and a YAML
/// integer as an integer, and [`encrypt`] writes its output in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Why an encrypted document could not be read or written. Names the field that failed
/// (by its key path, which sops never encrypts), never a value. The messages call the
/// document "the config": they are what `triggers` has always shown operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// The MAC does not match the values it covers: one was added, removed, reordered, or
    /// (under [`MacScope::AllValues`]) edited in clear.
    #[error("the sops MAC does not match the config: {scope}")]
    MacMismatch {
        /// Which values the file's MAC covers.
        scope: MacScope,
    },
    /// The decrypted document does not have the shape asked for ([`Decrypted::deserialize`]),
    /// or the document to encrypt is not a map. There is no line or column: the text
    /// parsed was the encrypted one.
    #[error("the decrypted document does not have the expected shape: {message}")]
    Shape {
        /// What serde found, withheld if it would show a decrypted value.
        message: String,
    },
    /// A document could not be encrypted.
    #[error("encrypting the config failed: {reason}")]
    Encrypt {
        /// Why.
        reason: String,
    },
}

/// Whether a parsed document is SOPS-encrypted: it has a top-level `sops` key.
pub fn is_encrypted(doc: &Node) -> bool {
    doc.get(SOPS_KEY).is_some()
}

/// Whether a string is an encrypted leaf (`ENC[AES256_GCM,...]`): what a reader without
/// keys replaces with a placeholder.
pub fn is_sealed(value: &str) -> bool {
    value_cipher::looks_encrypted(value)
}

/// A copy of `doc` without its `sops` block, every encrypted leaf replaced by what
/// `placeholder` returns for its map-key path (kept as it is on `None`): how a reader
/// without keys checks the rest of a document.
pub fn replace_sealed(doc: &Node, placeholder: &mut impl FnMut(&[&str]) -> Option<Node>) -> Node {
    let mut doc = doc.clone();
    if let Node::Map(entries) = &mut doc {
        entries.retain(|(key, _)| key != SOPS_KEY);
    }
    doc.map_leaves(&mut Vec::new(), &mut |leaf, steps| {
        Ok::<_, std::convert::Infallible>(match leaf {
            Node::Str(sealed) if value_cipher::looks_encrypted(sealed) => {
                placeholder(&key_path(steps)).unwrap_or_else(|| leaf.clone())
            }
            other => other.clone(),
        })
    })
    .unwrap_or_else(|never| match never {})
}

/// A decrypted document, its MAC checked. `Debug` shows its shape only.
#[derive(Debug)]
pub struct Decrypted {
    body: Node,
    /// Every decrypted value as text, to keep them out of error messages.
    plaintexts: Vec<String>,
}

impl Decrypted {
    /// The document without its `sops` block.
    pub fn into_node(self) -> Node {
        self.body
    }

    /// Deserializes the document into `T`. A shape error ([`Error::Shape`]) withholds
    /// serde's message if it would quote a decrypted value.
    pub fn deserialize<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        let json = self.body.into_json().map_err(|_| Error::Shape {
            message: "a number is not finite".to_string(),
        })?;
        T::deserialize(json).map_err(|err| {
            let message = err.to_string();
            // serde may quote the value it choked on; withhold the message if that value
            // was a decrypted one.
            let leaks = self
                .plaintexts
                .iter()
                .any(|plain| !plain.is_empty() && message.contains(plain.as_str()));
            let message = if leaks {
                "a decrypted value has the wrong type (details withheld: they would show it)"
                    .to_string()
            } else {
                message
            };
            Error::Shape { message }
        })
    }
}

/// Decrypts a SOPS-encrypted document (as the `sops` tool writes it, with age
/// recipients) and checks its MAC.
pub fn decrypt(
    mut doc: Node,
    format: Format,
    identities: &[AgeIdentity],
) -> Result<Decrypted, Error> {
    let Node::Map(entries) = &mut doc else {
        return Err(Error::NotEncrypted);
    };
    let at = entries
        .iter()
        .position(|(key, _)| key == SOPS_KEY)
        .ok_or(Error::NotEncrypted)?;
    let (_, block) = entries.remove(at);
    let metadata = Metadata::parse(&block)?;
    let key = age_keys::unwrap_data_key(&metadata.age, identities)?;

    let json_numbers = format == Format::Json;
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
            return Err(Error::Metadata {
                field: "mac",
                reason: "is not sealed as a string",
            });
        }
        Err(LeafError::Tampered) => return Err(Error::MacTampered),
        Err(LeafError::Malformed(reason)) => {
            return Err(Error::MalformedValue {
                path: "sops.mac".to_string(),
                reason,
            });
        }
    };
    if !mac_matches(&computed, &stored) {
        return Err(Error::MacMismatch {
            scope: if metadata.mac_only_encrypted {
                MacScope::EncryptedValues
            } else {
                MacScope::AllValues
            },
        });
    }
    Ok(Decrypted {
        body: plain,
        plaintexts: walk.plaintexts,
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
    fn leaf(&mut self, leaf: &Node, steps: &[Step<'_>]) -> Result<Node, Error> {
        let keys = key_path(steps);
        let encrypted = self.rule.encrypts(&keys);
        let value = if encrypted {
            let Node::Str(sealed) = leaf else {
                return Err(Error::NotEncryptedValue {
                    path: display_path(steps),
                });
            };
            if !sealed.is_empty() && !value_cipher::looks_encrypted(sealed) {
                return Err(Error::NotEncryptedValue {
                    path: display_path(steps),
                });
            }
            let aad = format!("{}:", keys.join(":"));
            let value = value_cipher::decrypt(sealed, self.key, &aad).map_err(|err| match err {
                LeafError::Tampered => Error::Tampered {
                    path: display_path(steps),
                },
                LeafError::Malformed(reason) => Error::MalformedValue {
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

/// Encrypts a document for age recipients as `sops --encrypted-regex` would: every value
/// under a key `encrypted_regex` matches becomes an `ENC[...]` leaf, everything else
/// stays readable, and the MAC covers `scope` (with [`MacScope::EncryptedValues`] the
/// `sops` block says `mac_only_encrypted: true`, as `sops --mac-only-encrypted` writes).
/// The output is written in `format` and decrypts with `sops` itself or [`decrypt`].
pub fn encrypt(
    doc: Node,
    format: Format,
    recipients: &[AgeRecipient],
    encrypted_regex: &str,
    scope: MacScope,
) -> Result<String, Error> {
    encrypt_at(
        doc,
        format,
        recipients,
        encrypted_regex,
        scope,
        &metadata::now_rfc3339(),
    )
}

/// [`encrypt`] with a given `lastmodified`.
fn encrypt_at(
    doc: Node,
    format: Format,
    recipients: &[AgeRecipient],
    encrypted_regex: &str,
    scope: MacScope,
    lastmodified: &str,
) -> Result<String, Error> {
    let Node::Map(entries) = doc else {
        return Err(Error::Shape {
            message: "the document is not a map".to_string(),
        });
    };
    if entries.iter().any(|(key, _)| key == SOPS_KEY) {
        return Err(Error::AlreadyEncrypted);
    }
    if recipients.is_empty() {
        return Err(Error::Encrypt {
            reason: "no age recipients given".to_string(),
        });
    }

    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let rule =
        Rule::EncryptedRegex(
            regex::Regex::new(encrypted_regex).map_err(|_| Error::Encrypt {
                reason: "the encrypted_regex does not compile".to_string(),
            })?,
        );
    let mut walk = EncryptWalk {
        key: &key,
        rule: &rule,
        mac_only_encrypted: scope == MacScope::EncryptedValues,
        json_numbers: format == Format::Json,
        hash: Sha512::new(),
    };
    if walk.mac_only_encrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let body = Node::Map(entries);
    let mut sealed = body.map_leaves(&mut Vec::new(), &mut |leaf, steps| walk.leaf(leaf, steps))?;
    let mac = hex_upper(&walk.hash.finalize());
    let mac = value_cipher::encrypt_str(&mac, &key, lastmodified).ok_or(Error::Encrypt {
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
    let mut block = vec![
        ("age".to_string(), Node::Seq(age)),
        (
            "lastmodified".to_string(),
            Node::Str(lastmodified.to_string()),
        ),
        ("mac".to_string(), Node::Str(mac)),
        (
            "encrypted_regex".to_string(),
            Node::Str(encrypted_regex.to_string()),
        ),
    ];
    if scope == MacScope::EncryptedValues {
        // Where sops writes it: after the rule, before the version.
        block.push(("mac_only_encrypted".to_string(), Node::Bool(true)));
    }
    block.push((
        "version".to_string(),
        Node::Str(SOPS_FORMAT_VERSION.to_string()),
    ));
    let block = Node::Map(block);
    if let Node::Map(entries) = &mut sealed {
        entries.push((SOPS_KEY.to_string(), block));
    }
    let emitted = match format {
        Format::Json => serde_json::to_string_pretty(&sealed)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|err| err.to_string()),
        Format::Yaml => serde_yaml_ng::to_string(&sealed).map_err(|err| err.to_string()),
    };
    emitted.map_err(|reason| Error::Encrypt { reason })
}

/// Encrypts a document's values in order while hashing their plaintext for the MAC.
struct EncryptWalk<'k> {
    key: &'k [u8; 32],
    rule: &'k Rule,
    mac_only_encrypted: bool,
    json_numbers: bool,
    hash: Sha512,
}

impl EncryptWalk<'_> {
    fn leaf(&mut self, leaf: &Node, steps: &[Step<'_>]) -> Result<Node, Error> {
        let keys = key_path(steps);
        let encrypted = self.rule.encrypts(&keys);
        // The same values, in the same order, as `DecryptWalk` hashes.
        if (encrypted || !self.mac_only_encrypted)
            && let Some(bytes) = value_cipher::mac_bytes(leaf, self.json_numbers)
        {
            self.hash.update(bytes);
        }
        if !encrypted {
            return Ok(leaf.clone());
        }
        let aad = format!("{}:", keys.join(":"));
        match value_cipher::encrypt(leaf, self.json_numbers, self.key, &aad) {
            Some(sealed) => Ok(Node::Str(sealed)),
            None if matches!(leaf, Node::Str(s) if s.is_empty()) => Ok(leaf.clone()),
            None => Err(Error::Encrypt {
                reason: format!("sealing the value at `{}` failed", display_path(steps)),
            }),
        }
    }
}

#[cfg(test)]
mod tests;

//! Trigger configs encrypted at rest with SOPS and age: the adapter between the generic
//! reader and writer (`triggers-sops`) and a [`TriggersConfig`].
//!
//! What is trigger-specific lives here: which fields are sealed
//! ([`SEALED_FIELDS_REGEX`]), the document bounds of [`parse_document`] (checked before
//! any parser runs, the same as for plaintext), the placeholders a keyless check puts in
//! place of sealed values, and the config type the plaintext becomes. Plaintext lives
//! only in memory, in [`Secret`](crate::Secret)s.

use super::document::parse_document;
use crate::{ConfigFormat, ParseError, TriggersConfig};
use serde::Deserialize as _;
use triggers_sops::{AgeIdentity, AgeRecipient, Format, Node};

/// The `encrypted_regex` that [`encrypt_config`] writes: the keys of a [`TriggersConfig`]
/// whose values are sealed, so that they are secret and authenticated. The secrets: the
/// URL (user info, a query token, or a path that is itself the credential, as Slack's
/// incoming webhooks are; a key rule cannot look inside a value, so every `url` is
/// encrypted), header values, signing secrets and the whole `auth` block (its secret,
/// and with it which identity provider and client it is). Not secret but sealed to be
/// authenticated, since they decide where a request goes and how: `method` and
/// `followRedirects`.
///
/// The file's MAC covers the sealed values only (sops's `mac_only_encrypted`, see
/// [`encrypt_config`]): every other field, present or added later (`payloadTemplate`,
/// the timeouts, retries, `drain`, `interval`, ...), can be edited without the key.
/// Real sops re-encrypting the file after an edit applies the same rule and MAC scope,
/// since both are stored in it.
pub const SEALED_FIELDS_REGEX: &str = "^(url|method|headers|signingSecrets|followRedirects|auth)$";

/// What [`validate_without_keys`] puts in place of an encrypted `url`: its check is
/// skipped, and errors name the trigger by this origin.
pub const SEALED_URL_PLACEHOLDER: &str = "https://encrypted-url.invalid/";

/// A valid signing secret standing for an encrypted one in [`validate_without_keys`].
const SEALED_SIGNING_SECRET: &str = "whsec_ZW5jcnlwdGVkIHNpZ25pbmcgc2VjcmV0";

/// Why an encrypted config could not be read or written. Names the field that failed
/// (by its key path, which sops never encrypts), never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    /// The document is not valid JSON or YAML, or (for plaintext) not a valid config.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The decrypted document does not have the shape of a trigger config. There is no
    /// line or column: the text parsed was the encrypted one.
    #[error("the decrypted config is not a valid trigger config: {message}")]
    Config {
        /// What serde found, withheld if it would show a decrypted value.
        message: String,
    },
    /// The SOPS layer refused the document: metadata, keys, a tampered value or MAC.
    #[error(transparent)]
    Sops(triggers_sops::Error),
    /// A field that must stay authenticated is in clear in a file whose MAC covers the
    /// encrypted values only (`mac_only_encrypted`), so anyone could have written it
    /// without the key: the file's rule (which the MAC does not cover either) leaves it
    /// out of [`SEALED_FIELDS_REGEX`], or was edited to.
    #[error(
        "`{path}` is in clear, but this file's MAC covers the encrypted values only, so it \
         is not authenticated: encrypt the config with `triggers encrypt` (rule \
         {SEALED_FIELDS_REGEX})"
    )]
    Unauthenticated {
        /// Where the value is.
        path: String,
    },
}

/// The fields of a trigger that must stay authenticated: the keys of
/// [`SEALED_FIELDS_REGEX`].
const AUTHENTICATED_FIELDS: [&str; 6] = [
    "url",
    "method",
    "headers",
    "signingSecrets",
    "followRedirects",
    "auth",
];

/// In a file whose MAC covers the encrypted values only, every value under an
/// [`AUTHENTICATED_FIELDS`] key of a trigger must be sealed: a value in clear is
/// authenticated by nothing (the `sops` block, rule included, is not covered by the MAC,
/// so an editor without keys could narrow the rule and add `method: PATCH` in clear).
/// Empty strings and nulls pass: sops never encrypts them, nor hashes them.
fn check_sealed(doc: &Node) -> Result<(), SopsError> {
    let mac_only = doc
        .get(triggers_sops::SOPS_KEY)
        .and_then(|block| block.get("mac_only_encrypted"));
    if !matches!(mac_only, Some(Node::Bool(true))) {
        // A MAC over every value authenticates the values in clear too.
        return Ok(());
    }
    let triggers: Vec<(String, &Node)> = match doc.get("config") {
        Some(Node::Seq(triggers)) => triggers
            .iter()
            .enumerate()
            .map(|(i, trigger)| (format!("config[{i}]"), trigger))
            .collect(),
        Some(Node::Map(named)) => named
            .iter()
            .map(|(name, trigger)| (format!("config.{name}"), trigger))
            .collect(),
        _ => return Ok(()),
    };
    for (at, trigger) in triggers {
        let Node::Map(fields) = trigger else { continue };
        for (key, value) in fields {
            if AUTHENTICATED_FIELDS.contains(&key.as_str()) {
                clear_leaf(value, &mut format!("{at}.{key}"))?;
            }
        }
    }
    Ok(())
}

/// Fails on the first leaf of `node` in clear, naming its path.
fn clear_leaf(node: &Node, path: &mut String) -> Result<(), SopsError> {
    match node {
        Node::Null => Ok(()),
        Node::Str(s) if s.is_empty() || triggers_sops::is_sealed(s) => Ok(()),
        Node::Seq(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            clear_leaf(item, path)?;
            path.truncate(len);
            Ok(())
        }),
        Node::Map(entries) => entries.iter().try_for_each(|(key, value)| {
            let len = path.len();
            path.push('.');
            path.push_str(key);
            clear_leaf(value, path)?;
            path.truncate(len);
            Ok(())
        }),
        Node::Bool(_) | Node::Int(_) | Node::Float(_) | Node::Str(_) => {
            Err(SopsError::Unauthenticated { path: path.clone() })
        }
    }
}

impl From<triggers_sops::Error> for SopsError {
    fn from(err: triggers_sops::Error) -> Self {
        match err {
            triggers_sops::Error::Shape { message } => SopsError::Config { message },
            other => SopsError::Sops(other),
        }
    }
}

fn sops_format(format: ConfigFormat) -> Format {
    match format {
        ConfigFormat::Json => Format::Json,
        ConfigFormat::Yaml => Format::Yaml,
    }
}

/// Whether a document is SOPS-encrypted: it parses and has a top-level `sops` key.
pub fn is_sops_encrypted(text: &str, format: ConfigFormat) -> bool {
    parse_document::<Node>(text, format).is_ok_and(|doc| triggers_sops::is_encrypted(&doc))
}

/// Validates an encrypted config without its keys, as a control plane does at publish
/// time: the templates, bounds and every value in clear are checked as
/// [`crate::validate`] does; encrypted values cannot be, so an encrypted `url` is taken
/// as [`SEALED_URL_PLACEHOLDER`] (errors name the trigger by it), encrypted header
/// values and signing secrets as valid placeholders, and an `auth` block holding an
/// encrypted value (its `type` included) as a valid token endpoint: that it does not
/// sit beside an `Authorization` header is still checked; an encrypted `method` as `POST`
/// and `followRedirects` as `false`. The decrypting runtime checks them at start. A
/// field in clear that [`decrypt_config`] would refuse as [`SopsError::Unauthenticated`]
/// is an error here too. A plaintext document is validated as it is. Returns the number
/// of triggers.
/// Meant for files whose rule is [`SEALED_FIELDS_REGEX`] (or the one before it, which
/// left `method` and `followRedirects` in clear); another encrypted field (sops's
/// default rule encrypts everything) fails to validate here.
pub fn validate_without_keys(
    text: &str,
    format: ConfigFormat,
) -> Result<usize, crate::ValidationErrors> {
    let parse_error = |err: ParseError| crate::ValidationErrors(vec![err.into()]);
    let mut doc: Node = parse_document(text, format).map_err(parse_error)?;
    let shape = |message: String| {
        parse_error(ParseError::Syntax {
            format,
            line: 0,
            column: 0,
            message,
        })
    };
    // What the decrypting runtime would refuse at start, refused here already.
    check_sealed(&doc).map_err(|err| shape(err.to_string()))?;
    placehold_sealed_auth(&mut doc);
    let placeheld = triggers_sops::replace_sealed(&doc, &mut |keys| {
        let text = match keys {
            // Nothing of a trigger's checks depends on which body-carrying method it
            // uses, nor on whether it follows redirects.
            [.., "method"] => "POST",
            [.., "followRedirects"] => return Some(Node::Bool(false)),
            [.., "url"] => SEALED_URL_PLACEHOLDER,
            [.., "signingSecrets"] => SEALED_SIGNING_SECRET,
            [.., "headers", _] => "encrypted",
            _ => return None,
        };
        Some(Node::Str(text.to_string()))
    });
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
    let Some((_, config)) = entries.iter_mut().find(|(key, _)| key == "config") else {
        return;
    };
    // The list form, or the map form (name to trigger).
    let triggers: Vec<&mut Node> = match config {
        Node::Seq(triggers) => triggers.iter_mut().collect(),
        Node::Map(named) => named.iter_mut().map(|(_, trigger)| trigger).collect(),
        _ => return,
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
        Node::Str(s) => triggers_sops::is_sealed(s),
        Node::Seq(items) => items.iter().any(has_sealed_leaf),
        Node::Map(entries) => entries.iter().any(|(_, value)| has_sealed_leaf(value)),
        Node::Null | Node::Bool(_) | Node::Int(_) | Node::Float(_) => false,
    }
}

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
/// recipients), checks its MAC, and parses the result. A file whose MAC covers the
/// encrypted values only must have every authenticated field sealed
/// ([`SopsError::Unauthenticated`]).
pub fn decrypt_config(
    text: &str,
    format: ConfigFormat,
    identities: &[AgeIdentity],
) -> Result<TriggersConfig, SopsError> {
    let doc: Node = parse_document(text, format)?;
    let plain = triggers_sops::decrypt(doc.clone(), sops_format(format), identities)?;
    check_sealed(&doc)?;
    Ok(plain.deserialize()?)
}

/// Encrypts a plaintext config for age recipients as `sops` would with
/// `--encrypted-regex` [`SEALED_FIELDS_REGEX`] and `--mac-only-encrypted`: URLs,
/// methods, header values, signing secrets, `followRedirects` and `auth` blocks become
/// `ENC[...]` leaves, everything else (templates, bounds, `drain`) stays readable, for
/// [`validate_without_keys`], and editable without the key: the MAC covers the sealed
/// values only. An edit of a sealed field without the key fails [`decrypt_config`] (a
/// value in clear where the rule seals one, a value moved to another key, or one added,
/// removed or reordered: the MAC). The output has the format of the input and decrypts
/// with `sops` itself (3.9 or later) or [`decrypt_config`].
pub fn encrypt_config(
    text: &str,
    format: ConfigFormat,
    recipients: &[AgeRecipient],
) -> Result<String, SopsError> {
    if is_sops_encrypted(text, format) {
        return Err(triggers_sops::Error::AlreadyEncrypted.into());
    }
    // Only a valid config is worth encrypting; checking first also means a shape error
    // is reported with its line and column.
    TriggersConfig::parse(text, format)?;
    let doc: Node = parse_document(text, format)?;
    Ok(triggers_sops::encrypt(
        doc,
        sops_format(format),
        recipients,
        SEALED_FIELDS_REGEX,
        triggers_sops::MacScope::EncryptedValues,
    )?)
}

#[cfg(test)]
mod tests;

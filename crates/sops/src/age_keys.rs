//! age keys, which wrap a SOPS document's data key. The age crate (str4d/rage) does the
//! X25519 and ChaCha20-Poly1305 work; this file only reads keys and the armoured stanzas.

use crate::Error;
use crate::metadata::AgeStanza;
use age::armor::{ArmoredReader, ArmoredWriter, Format};
use std::io::{Read as _, Write as _};
use std::str::FromStr as _;

/// An age X25519 private key (`AGE-SECRET-KEY-1...`): what a data plane holds to read
/// encrypted configs. `Debug` shows only the matching public key.
#[derive(Clone)]
pub struct AgeIdentity(age::x25519::Identity);

impl AgeIdentity {
    /// Parses one `AGE-SECRET-KEY-1...` key.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        age::x25519::Identity::from_str(key.trim())
            .map(Self)
            .map_err(|_| KeyError::Identity)
    }

    /// Parses an age key file (as `age-keygen` writes it): one key a line, `#` comments
    /// and blank lines ignored.
    pub fn parse_keys_file(text: &str) -> Result<Vec<Self>, KeyError> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(Self::parse)
            .collect()
    }

    /// A new random key, for tests and tooling.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The public key that encrypts to this identity.
    pub fn recipient(&self) -> AgeRecipient {
        AgeRecipient(self.0.to_public())
    }
}

impl std::fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeIdentity(<redacted> for {})", self.0.to_public())
    }
}

/// An age X25519 public key (`age1...`), to encrypt a config for its holder.
#[derive(Clone)]
pub struct AgeRecipient(age::x25519::Recipient);

impl AgeRecipient {
    /// Parses one `age1...` key.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        age::x25519::Recipient::from_str(key.trim())
            .map(Self)
            .map_err(|_| KeyError::Recipient)
    }
}

impl std::fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeRecipient({})", self.0)
    }
}

/// A key that does not parse. Names the kind of key, never its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not an `AGE-SECRET-KEY-1...` X25519 identity.
    #[error("not an age X25519 identity (AGE-SECRET-KEY-1...)")]
    Identity,
    /// Not an `age1...` X25519 recipient.
    #[error("not an age X25519 recipient (age1...)")]
    Recipient,
}

/// Largest data key we read back: sops's keys are 32 bytes; reading stops past this so
/// a hostile stanza cannot make us buffer a large payload.
const DATA_KEY_LEN: usize = 32;

/// Unwraps the data key with the first stanza one of `identities` opens.
pub(crate) fn unwrap_data_key(
    stanzas: &[AgeStanza],
    identities: &[AgeIdentity],
) -> Result<[u8; DATA_KEY_LEN], Error> {
    if identities.is_empty() {
        return Err(Error::NoMatchingIdentity {
            recipients: stanzas.iter().map(|s| s.recipient.clone()).collect(),
        });
    }
    let mut first_failure = None;
    for stanza in stanzas {
        match unwrap_one(&stanza.enc, identities) {
            Ok(key) => return Ok(key),
            Err(UnwrapError::NoMatch) => {}
            Err(UnwrapError::Failed(reason)) => {
                first_failure.get_or_insert(Error::DataKey {
                    recipient: stanza.recipient.clone(),
                    reason,
                });
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| Error::NoMatchingIdentity {
        recipients: stanzas.iter().map(|s| s.recipient.clone()).collect(),
    }))
}

enum UnwrapError {
    NoMatch,
    Failed(String),
}

fn unwrap_one(
    armored: &str,
    identities: &[AgeIdentity],
) -> Result<[u8; DATA_KEY_LEN], UnwrapError> {
    let reader = ArmoredReader::new(armored.as_bytes());
    let decryptor =
        age::Decryptor::new(reader).map_err(|err| UnwrapError::Failed(err.to_string()))?;
    let stream = decryptor
        .decrypt(identities.iter().map(|id| &id.0 as &dyn age::Identity))
        .map_err(|err| match err {
            age::DecryptError::NoMatchingKeys => UnwrapError::NoMatch,
            other => UnwrapError::Failed(other.to_string()),
        })?;
    let mut key = Vec::with_capacity(DATA_KEY_LEN);
    stream
        .take(DATA_KEY_LEN as u64 + 1)
        .read_to_end(&mut key)
        .map_err(|err| UnwrapError::Failed(err.to_string()))?;
    key.try_into()
        .map_err(|_| UnwrapError::Failed("the data key is not 32 bytes".to_string()))
}

/// Wraps the data key for one recipient, armoured, as sops stores it.
pub(crate) fn wrap_data_key(
    key: &[u8; DATA_KEY_LEN],
    recipient: &AgeRecipient,
) -> Result<String, Error> {
    let fail = |err: &dyn std::fmt::Display| Error::Encrypt {
        reason: format!("wrapping the data key for {recipient}: {err}"),
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient.0 as &dyn age::Recipient))
            .map_err(|err| fail(&err))?;
    let armor =
        ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor).map_err(|err| fail(&err))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|err| fail(&err))?;
    writer.write_all(key).map_err(|err| fail(&err))?;
    let armor = writer.finish().map_err(|err| fail(&err))?;
    let bytes = armor.finish().map_err(|err| fail(&err))?;
    let mut text = String::from_utf8(bytes).map_err(|err| fail(&err))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_private_key() {
        let identity = AgeIdentity::generate();
        let debug = format!("{identity:?}");
        assert!(!debug.contains("AGE-SECRET-KEY"), "{debug}");
        assert!(debug.contains(&identity.recipient().to_string()), "{debug}");
    }

    #[test]
    fn keys_files_skip_comments() {
        let identity = AgeIdentity::generate();
        let file = format!(
            "# created: now\n# public key: {}\n{}\n\n",
            identity.recipient(),
            age::secrecy::ExposeSecret::expose_secret(&identity.0.to_string())
        );
        let parsed = AgeIdentity::parse_keys_file(&file).expect("succeeds");
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed[0].recipient().to_string(),
            identity.recipient().to_string()
        );
        assert_eq!(
            AgeIdentity::parse("AGE-SECRET-KEY-1NOPE").expect_err("fails"),
            KeyError::Identity
        );
        assert_eq!(
            AgeRecipient::parse("age1nope").expect_err("fails"),
            KeyError::Recipient
        );
    }

    #[test]
    fn wraps_and_unwraps_and_truncated_armor_fails_cleanly() {
        let identity = AgeIdentity::generate();
        let other = AgeIdentity::generate();
        let key = [9u8; 32];
        let enc = wrap_data_key(&key, &identity.recipient()).expect("succeeds");
        assert!(
            enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
            "{enc}"
        );
        let stanza = |enc: &str| AgeStanza {
            recipient: identity.recipient().to_string(),
            enc: enc.to_string(),
        };
        assert_eq!(
            unwrap_data_key(&[stanza(&enc)], std::slice::from_ref(&identity)).expect("succeeds"),
            key
        );
        assert!(matches!(
            unwrap_data_key(&[stanza(&enc)], &[other]),
            Err(Error::NoMatchingIdentity { .. })
        ));
        for cut in 0..enc.trim_end().len() {
            let truncated = &enc[..cut];
            assert!(
                unwrap_data_key(&[stanza(truncated)], std::slice::from_ref(&identity)).is_err(),
                "cut at {cut}"
            );
        }
    }
}

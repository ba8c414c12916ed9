//! The top-level `sops` block: who can unwrap the data key, which values are encrypted,
//! and the sealed MAC.

use crate::Error;
use crate::tree::Node;
use regex::Regex;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The key of the metadata block at the top of an encrypted document.
pub const SOPS_KEY: &str = "sops";
/// The suffix sops assumes when a file names no encryption rule.
const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The data key, wrapped for one age recipient.
pub(crate) struct AgeStanza {
    pub(crate) recipient: String,
    /// An armoured age file holding the 32-byte data key.
    pub(crate) enc: String,
}

/// Which values of a document sops encrypted: exactly one rule applies.
pub(crate) enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl Rule {
    /// sops's `shouldBeEncrypted` for a value whose map-key path is `path`: a suffix or
    /// regex rule matches if any key on the path matches it.
    pub(crate) fn encrypts(&self, path: &[&str]) -> bool {
        match self {
            Rule::UnencryptedSuffix(suffix) => !path.iter().any(|k| k.ends_with(suffix.as_str())),
            Rule::EncryptedSuffix(suffix) => path.iter().any(|k| k.ends_with(suffix.as_str())),
            Rule::UnencryptedRegex(re) => !path.iter().any(|k| re.is_match(k)),
            Rule::EncryptedRegex(re) => path.iter().any(|k| re.is_match(k)),
        }
    }
}

/// The parts of the `sops` block that decryption needs.
pub(crate) struct Metadata {
    pub(crate) age: Vec<AgeStanza>,
    /// `lastmodified`, reformatted as Go's RFC 3339 (whole seconds), which is the
    /// additional data of the sealed MAC.
    pub(crate) mac_aad: String,
    pub(crate) mac: String,
    pub(crate) rule: Rule,
    pub(crate) mac_only_encrypted: bool,
}

fn bad(field: &'static str, reason: &'static str) -> Error {
    Error::Metadata { field, reason }
}

fn optional_str<'a>(block: &'a Node, field: &'static str) -> Result<Option<&'a str>, Error> {
    match block.get(field) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Str(s)) if s.is_empty() => Ok(None),
        Some(Node::Str(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "is not a string")),
    }
}

fn compile(field: &'static str, pattern: &str) -> Result<Regex, Error> {
    Regex::new(pattern).map_err(|_| bad(field, "is not a valid regular expression"))
}

impl Metadata {
    /// Reads a `sops` block.
    pub(crate) fn parse(block: &Node) -> Result<Self, Error> {
        if !matches!(block, Node::Map(_)) {
            return Err(bad("sops", "is not a map"));
        }
        for field in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if optional_str(block, field)?.is_some() {
                // Comments decide which values are encrypted, and our readers drop comments.
                return Err(Error::Unsupported { what: field });
            }
        }

        let mut rules = Vec::new();
        if let Some(s) = optional_str(block, "unencrypted_suffix")? {
            rules.push(Rule::UnencryptedSuffix(s.to_string()));
        }
        if let Some(s) = optional_str(block, "encrypted_suffix")? {
            rules.push(Rule::EncryptedSuffix(s.to_string()));
        }
        if let Some(s) = optional_str(block, "unencrypted_regex")? {
            rules.push(Rule::UnencryptedRegex(compile("unencrypted_regex", s)?));
        }
        if let Some(s) = optional_str(block, "encrypted_regex")? {
            rules.push(Rule::EncryptedRegex(compile("encrypted_regex", s)?));
        }
        if rules.len() > 1 {
            return Err(bad(
                "sops",
                "names more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex and unencrypted_regex",
            ));
        }
        let rule = rules
            .pop()
            .unwrap_or_else(|| Rule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.to_string()));

        let mac_only_encrypted = match block.get("mac_only_encrypted") {
            None | Some(Node::Null) => false,
            Some(Node::Bool(b)) => *b,
            Some(_) => return Err(bad("mac_only_encrypted", "is not a boolean")),
        };

        let lastmodified = optional_str(block, "lastmodified")?
            .ok_or_else(|| bad("lastmodified", "is missing"))?;
        let mac_aad = go_rfc3339(lastmodified)
            .ok_or_else(|| bad("lastmodified", "is not an RFC 3339 time"))?;
        let mac = optional_str(block, "mac")?
            .ok_or(Error::MacMissing)?
            .to_string();

        Ok(Metadata {
            age: age_stanzas(block)?,
            mac_aad,
            mac,
            rule,
            mac_only_encrypted,
        })
    }
}

/// Other key services a `sops` block can name; we unwrap with age only.
const OTHER_KEY_TYPES: [&str; 6] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"];

/// The age stanzas of the block: its top-level `age` list, or the one key group's (a
/// file with several groups splits its key with Shamir's scheme, which we do not do).
fn age_stanzas(block: &Node) -> Result<Vec<AgeStanza>, Error> {
    let group = match block.get("key_groups") {
        None | Some(Node::Null) => block,
        Some(Node::Seq(groups)) if groups.is_empty() => block,
        Some(Node::Seq(groups)) if groups.len() == 1 => &groups[0],
        Some(Node::Seq(_)) => {
            return Err(Error::Unsupported {
                what: "key_groups (Shamir secret sharing)",
            });
        }
        Some(_) => return Err(bad("key_groups", "is not a list")),
    };
    let entries = match group.get("age") {
        None | Some(Node::Null) => &[][..],
        Some(Node::Seq(entries)) => entries,
        Some(_) => return Err(bad("age", "is not a list")),
    };
    let mut stanzas = Vec::new();
    for entry in entries {
        let recipient = entry
            .get_str("recipient")
            .ok_or_else(|| bad("age", "has an entry without a recipient"))?;
        let enc = entry
            .get_str("enc")
            .ok_or_else(|| bad("age", "has an entry without enc"))?;
        stanzas.push(AgeStanza {
            recipient: recipient.to_string(),
            enc: enc.to_string(),
        });
    }
    if stanzas.is_empty() {
        let others = OTHER_KEY_TYPES
            .iter()
            .filter(|kind| matches!(group.get(kind), Some(Node::Seq(list)) if !list.is_empty()))
            .copied()
            .collect();
        return Err(Error::NoAgeRecipients { others });
    }
    Ok(stanzas)
}

/// Go's `time.Parse(time.RFC3339, s).Format(time.RFC3339)`: sops reads `lastmodified`
/// and formats it again as the MAC's additional data, dropping fractional seconds and
/// writing UTC as `Z`.
fn go_rfc3339(text: &str) -> Option<String> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    at.replace_nanosecond(0).ok()?.format(&Rfc3339).ok()
}

/// `lastmodified` for a file written now.
pub(crate) fn now_rfc3339() -> String {
    go_rfc3339_of(OffsetDateTime::now_utc())
}

pub(crate) fn go_rfc3339_of(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lastmodified_is_reformatted_as_go_does() {
        assert_eq!(
            go_rfc3339("2026-11-24T16:19:12Z").as_deref(),
            Some("2026-11-24T16:19:12Z")
        );
        assert_eq!(
            go_rfc3339("2026-11-24T16:19:12.123456Z").as_deref(),
            Some("2026-11-24T16:19:12Z")
        );
        assert_eq!(
            go_rfc3339("2026-11-24T18:19:12+02:00").as_deref(),
            Some("2026-11-24T18:19:12+02:00")
        );
        assert_eq!(go_rfc3339("yesterday"), None);
    }

    #[test]
    fn rules_match_any_key_on_the_path() {
        let regex =
            Rule::EncryptedRegex(Regex::new("^(headers|signingSecrets)$").expect("succeeds"));
        assert!(regex.encrypts(&["config", "headers", "Authorization"]));
        assert!(regex.encrypts(&["config", "signingSecrets"]));
        assert!(!regex.encrypts(&["config", "url"]));
        let suffix = Rule::UnencryptedSuffix("_unencrypted".into());
        assert!(suffix.encrypts(&["config", "url"]));
        assert!(!suffix.encrypts(&["a_unencrypted", "b"]));
        let suffix = Rule::EncryptedSuffix("_enc".into());
        assert!(suffix.encrypts(&["a_enc", "b"]));
        assert!(!suffix.encrypts(&["a", "b"]));
        let regex = Rule::UnencryptedRegex(Regex::new("^url$").expect("succeeds"));
        assert!(!regex.encrypts(&["config", "url"]));
        assert!(regex.encrypts(&["config", "method"]));
    }
}

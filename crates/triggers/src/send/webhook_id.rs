//! The stable id of one webhook: what a receiver dedupes on.
//!
//! A webhook is one trigger of one committed transaction. The transaction is named by its
//! `flow_run_id`, a random (v4) UUID made at StartCommit and persisted with the variables,
//! so it is the same on every re-fire and after any restart, and (being random) it also
//! tells shards apart: two shards never share one. The id is therefore derived from
//! `flow_run_id` and the trigger's name alone, deterministically, with nothing stored:
//! reordering, adding or removing triggers never changes another trigger's ids.
//!
//! Before triggers had names they were told apart by their index, and receivers dedupe
//! on the ids that gave. A trigger without a name is named by its index (`"0"`, `"1"`,
//! ...), so [`trigger_webhook_id`] derives the ids of such names exactly as the index did
//! ([`webhook_id`]): a config that keeps its order keeps its ids across the upgrade.

use sha2::{Digest as _, Sha256};

/// Domain separation: ids of this derivation cannot collide with hashes made for any
/// other purpose from the same inputs, and a future derivation can use `v2`.
const DOMAIN: &[u8] = b"flow-triggers/webhook-id/v1\0";
/// Domain of ids derived from a trigger's name (one that is not an index).
const DOMAIN_NAMED: &[u8] = b"flow-triggers/webhook-id/v2-named\0";

/// The `webhook-id` of the trigger named `trigger_name` for the transaction
/// `flow_run_id`: what every send uses.
///
/// A name that is an index in canonical decimal (`"0"`, `"17"`; no sign, no leading zero)
/// gets that index's id ([`webhook_id`]), so configs whose triggers have no names keep
/// the ids they had. Any other name gets an id of its own derivation (another domain,
/// length-prefixed inputs), so no name's id equals another name's or an index's.
///
/// ```
/// use triggers::{trigger_webhook_id, webhook_id};
/// let run = "6f1c1c8e-1d2b-4f7a-9a55-0c8f3e0b9d11";
/// assert_eq!(trigger_webhook_id(run, "1"), webhook_id(run, 1));
/// assert_ne!(trigger_webhook_id(run, "onCommit"), trigger_webhook_id(run, "slack"));
/// ```
pub fn trigger_webhook_id(flow_run_id: &str, trigger_name: &str) -> String {
    if let Some(index) = canonical_index(trigger_name) {
        return webhook_id(flow_run_id, index);
    }
    let mut hash = Sha256::new();
    hash.update(DOMAIN_NAMED);
    hash.update((flow_run_id.len() as u64).to_be_bytes());
    hash.update(flow_run_id.as_bytes());
    hash.update((trigger_name.len() as u64).to_be_bytes());
    hash.update(trigger_name.as_bytes());
    to_id(&hash.finalize())
}

/// `name` as an index, if it is one written the way default names are (so `"01"` and
/// `"+1"` are names, not indexes: each has one spelling).
fn canonical_index(name: &str) -> Option<usize> {
    let canonical = !name.is_empty()
        && name.len() <= 19
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    canonical.then(|| name.parse().ok()).flatten()
}

/// The `webhook-id` (and template variable `webhook_id`) of trigger `trigger_index` of the
/// transaction `flow_run_id`: `msg_` and 32 lowercase hex digits (128 bits of SHA-256).
///
/// Identical for identical inputs, on any machine and any build; different for another
/// trigger or transaction. The input is length-prefixed, so no two (run id, index) pairs
/// hash the same bytes.
pub fn webhook_id(flow_run_id: &str, trigger_index: usize) -> String {
    let mut hash = Sha256::new();
    hash.update(DOMAIN);
    hash.update((flow_run_id.len() as u64).to_be_bytes());
    hash.update(flow_run_id.as_bytes());
    hash.update((trigger_index as u64).to_be_bytes());
    to_id(&hash.finalize())
}

/// `msg_` and the first 128 bits of `digest` in lowercase hex.
fn to_id(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(4 + 32);
    id.push_str("msg_");
    for byte in &digest[..16] {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct_per_transaction_and_trigger() {
        let run = "6f1c1c8e-1d2b-4f7a-9a55-0c8f3e0b9d11";
        let id = webhook_id(run, 0);
        assert_eq!(id, webhook_id(run, 0));
        assert_ne!(id, webhook_id(run, 1));
        assert_ne!(id, webhook_id("6f1c1c8e-1d2b-4f7a-9a55-0c8f3e0b9d12", 0));
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert!(
            id[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn names_that_are_indexes_keep_the_index_ids_and_others_get_their_own() {
        let run = "00000000-0000-4000-8000-000000000000";
        for index in [0, 1, 9, 10, 255] {
            assert_eq!(
                trigger_webhook_id(run, &index.to_string()),
                webhook_id(run, index)
            );
        }
        // One spelling per index: these are names.
        for name in ["01", "00", "+1", "1.0", "onCommit"] {
            let id = trigger_webhook_id(run, name);
            assert!((0..300).all(|i| id != webhook_id(run, i)), "{name}");
        }
        assert_ne!(trigger_webhook_id(run, "01"), trigger_webhook_id(run, "00"));
        assert_ne!(trigger_webhook_id(run, "a"), trigger_webhook_id("r", "a"));
    }

    #[test]
    fn the_derivation_never_changes() {
        // A changed derivation would give re-fired webhooks new ids, defeating dedupe
        // across an upgrade: this value is a contract.
        insta::assert_snapshot!(
            webhook_id("00000000-0000-4000-8000-000000000000", 3),
            @"msg_4465958e60b82b7ba9613e326b019954"
        );
        // The same for a trigger named by its index, as every unnamed one is.
        insta::assert_snapshot!(
            trigger_webhook_id("00000000-0000-4000-8000-000000000000", "3"),
            @"msg_4465958e60b82b7ba9613e326b019954"
        );
        // A named trigger's ids are a contract too.
        insta::assert_snapshot!(
            trigger_webhook_id("00000000-0000-4000-8000-000000000000", "onCommit"),
            @"msg_820b307cd5415055c283786cdf2ce841"
        );
    }
}

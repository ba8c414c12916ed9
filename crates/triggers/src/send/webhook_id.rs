//! The stable id of one webhook: what a receiver dedupes on.
//!
//! A webhook is one trigger of one committed transaction. The transaction is named by its
//! `flow_run_id`, a random (v4) UUID made at StartCommit and persisted with the variables,
//! so it is the same on every re-fire and after any restart, and (being random) it also
//! tells shards apart: two shards never share one. The id is therefore derived from
//! `flow_run_id` and the trigger's index alone, deterministically, with nothing stored.

use sha2::{Digest as _, Sha256};

/// Domain separation: ids of this derivation cannot collide with hashes made for any
/// other purpose from the same inputs, and a future derivation can use `v2`.
const DOMAIN: &[u8] = b"flow-triggers/webhook-id/v1\0";

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
    let digest = hash.finalize();
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
    fn the_derivation_never_changes() {
        // A changed derivation would give re-fired webhooks new ids, defeating dedupe
        // across an upgrade: this value is a contract.
        insta::assert_snapshot!(
            webhook_id("00000000-0000-4000-8000-000000000000", 3),
            @"msg_4465958e60b82b7ba9613e326b019954"
        );
    }
}

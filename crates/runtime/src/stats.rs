//! Per-binding statistics of the transaction in progress.

use std::collections::BTreeMap;
use triggers::Clock;
use triggers_proto::BindingStats;

/// Accumulates what a transaction reads, document by document, into the per-binding
/// stats that StartCommit turns into trigger variables.
#[derive(Debug, Clone, Default)]
pub struct TransactionStats {
    bindings: BTreeMap<u32, BindingStats>,
}

impl TransactionStats {
    /// Records one document of `binding`, with the clock of its `_meta/uuid`.
    pub fn add_document(&mut self, binding: u32, clock: Clock, bytes: u64) {
        let stats = self.bindings.entry(binding).or_insert(BindingStats {
            binding,
            docs: 0,
            bytes: 0,
            first_clock: clock.0,
            last_clock: clock.0,
        });
        stats.docs += 1;
        stats.bytes += bytes;
        stats.first_clock = stats.first_clock.min(clock.0);
        stats.last_clock = stats.last_clock.max(clock.0);
    }

    /// Documents recorded so far.
    pub fn docs(&self) -> u64 {
        self.bindings.values().map(|s| s.docs).sum()
    }

    /// The stats so far, in binding order, leaving this accumulator empty for the next
    /// transaction.
    pub fn take(&mut self) -> Vec<BindingStats> {
        std::mem::take(&mut self.bindings).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_min_and_max_clocks_per_binding() {
        let mut stats = TransactionStats::default();
        stats.add_document(2, Clock(500), 10);
        stats.add_document(0, Clock(300), 1);
        stats.add_document(2, Clock(100), 5);
        stats.add_document(2, Clock(900), 5);
        assert_eq!(stats.docs(), 4);
        assert_eq!(
            stats.take(),
            vec![
                BindingStats {
                    binding: 0,
                    docs: 1,
                    bytes: 1,
                    first_clock: 300,
                    last_clock: 300
                },
                BindingStats {
                    binding: 2,
                    docs: 3,
                    bytes: 20,
                    first_clock: 100,
                    last_clock: 900
                },
            ]
        );
        assert!(stats.take().is_empty());
    }
}

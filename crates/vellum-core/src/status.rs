//! Transaction status, as CCF computes it per node (`ccf-notes.md` §8) and ACL reports it
//! (`Pending` / `Committed`; `Unknown` and `Invalid` are CCF's).

use serde::{Deserialize, Serialize};

use crate::txid::TxId;

/// The status of a transaction id on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    /// The node knows nothing of this id (yet).
    Unknown,
    /// Recorded locally, not yet committed.
    Pending,
    /// Committed: it will never be rolled back.
    Committed,
    /// Never will be committed: another transaction holds that seqno, or a later view committed
    /// past it.
    Invalid,
}

/// What a node knows when it answers a status query.
pub trait StatusView {
    /// The highest committed seqno.
    fn committed_seqno(&self) -> u64;
    /// The view of the transaction this node holds at `seqno`, if any.
    fn view_at(&self, seqno: u64) -> Option<u64>;
}

/// CCF's rule:
/// 1. if `committed_seqno >= S`: `Committed` if the local view at `S` is `V`, else `Invalid`;
/// 2. else if the local view at `S` is `V`: `Pending`;
/// 3. else if the view of the committed seqno is above `V`: `Invalid`;
/// 4. else `Unknown`.
pub fn tx_status(node: &impl StatusView, txid: TxId) -> TxStatus {
    let committed = node.committed_seqno();
    let local = node.view_at(txid.seqno);
    if committed >= txid.seqno {
        return if local == Some(txid.view) {
            TxStatus::Committed
        } else {
            TxStatus::Invalid
        };
    }
    if local == Some(txid.view) {
        return TxStatus::Pending;
    }
    match node.view_at(committed) {
        Some(v) if committed > 0 && v > txid.view => TxStatus::Invalid,
        _ => TxStatus::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's log: views by seqno (index 0 = seqno 1) and its commit point.
    struct Node {
        views: Vec<u64>,
        committed: u64,
    }

    impl StatusView for Node {
        fn committed_seqno(&self) -> u64 {
            self.committed
        }
        fn view_at(&self, seqno: u64) -> Option<u64> {
            seqno
                .checked_sub(1)
                .and_then(|i| self.views.get(i as usize))
                .copied()
        }
    }

    #[test]
    fn pending_then_committed() {
        let mut n = Node {
            views: vec![2, 2, 2],
            committed: 1,
        };
        assert_eq!(tx_status(&n, TxId::new(2, 1)), TxStatus::Committed);
        assert_eq!(tx_status(&n, TxId::new(2, 3)), TxStatus::Pending);
        n.committed = 3;
        assert_eq!(tx_status(&n, TxId::new(2, 3)), TxStatus::Committed);
    }

    #[test]
    fn unknown_for_the_future_and_other_views() {
        let n = Node {
            views: vec![2, 2, 2],
            committed: 2,
        };
        assert_eq!(tx_status(&n, TxId::new(2, 4)), TxStatus::Unknown);
        assert_eq!(
            tx_status(&n, TxId::new(3, 3)),
            TxStatus::Unknown,
            "a later view may still write seqno 3"
        );
    }

    #[test]
    fn invalid_after_a_rolled_back_suffix() {
        // View 2 wrote seqnos 1..=5 with 1..=3 committed; the primary failed, view 3 rolled
        // back 4..=5 and wrote its own 4..=6, and committed up to 5.
        let before = Node {
            views: vec![2, 2, 2, 2, 2],
            committed: 3,
        };
        assert_eq!(tx_status(&before, TxId::new(2, 4)), TxStatus::Pending);
        let after = Node {
            views: vec![2, 2, 2, 3, 3, 3],
            committed: 5,
        };
        // The old 2.4 and 2.5 were replaced and the seqnos are committed: Invalid.
        assert_eq!(tx_status(&after, TxId::new(2, 4)), TxStatus::Invalid);
        assert_eq!(tx_status(&after, TxId::new(2, 5)), TxStatus::Invalid);
        // 2.7 was never written, but view 3 has committed past view 2: Invalid too.
        assert_eq!(tx_status(&after, TxId::new(2, 7)), TxStatus::Invalid);
        // The new ones.
        assert_eq!(tx_status(&after, TxId::new(3, 4)), TxStatus::Committed);
        assert_eq!(tx_status(&after, TxId::new(3, 6)), TxStatus::Pending);
        assert_eq!(tx_status(&after, TxId::new(3, 7)), TxStatus::Unknown);
        // A transaction from view 2 that the node still holds but is not committed yet,
        // briefly after an election (Pending -> Unknown when the suffix is truncated).
        let truncated = Node {
            views: vec![2, 2, 2],
            committed: 3,
        };
        assert_eq!(tx_status(&truncated, TxId::new(2, 4)), TxStatus::Unknown);
    }

    #[test]
    fn empty_node_knows_nothing() {
        let n = Node {
            views: vec![],
            committed: 0,
        };
        assert_eq!(tx_status(&n, TxId::new(2, 1)), TxStatus::Unknown);
    }
}

//! How a node is doing: its Raft role and term, how far it lags the primary, how long since
//! the last signature, its disk. Read by `/node/health` (and `vellum node status`) and by the
//! scrape of `/metrics`.

use std::sync::atomic::Ordering;

use openraft::async_runtime::WatchReceiver;
use serde::Serialize;

use super::LedgerNode;
use crate::metrics::{NodeMetrics, Snapshot, dir_size};

/// A node's health at a glance (`GET /node/health`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    /// This node's id.
    pub node_id: String,
    /// `primary`, `backup`, `candidate`, `learner` or `stopped`.
    pub role: &'static str,
    /// The primary's node id, as this node knows it.
    pub primary: Option<String>,
    /// Raft's term (the view of new transactions).
    pub term: u64,
    /// The last seqno this node's ledger holds.
    pub last_seqno: u64,
    /// The commit point: every transaction up to it is Committed.
    pub commit_seqno: u64,
    /// Transactions this node holds beyond the commit point.
    pub commit_lag: u64,
    /// The last signature's seqno.
    pub last_signed_seqno: u64,
    /// Seconds since this node appended the last signature (none since it started: `None`).
    pub last_signature_age_seconds: Option<f64>,
    /// On the primary: how many transactions each other node has yet to acknowledge.
    pub replication_lag: std::collections::BTreeMap<String, u64>,
    /// Whether the node serves (it has caught up with the service after its start).
    pub ready: bool,
    /// Why the node refuses writes, if it does (its ledger failed).
    pub write_error: Option<String>,
    /// The ledger directory's size in bytes, and its file count.
    pub ledger_bytes: u64,
    /// Files in the ledger directory.
    pub ledger_files: u64,
    /// Free bytes on the data directory's file system (`None`: unknown).
    pub disk_free_bytes: Option<u64>,
    /// The newest committed snapshot's seqno (`None`: none).
    pub snapshot_seqno: Option<u64>,
    /// What the archive holds, as this node knows (`None`: no archive configured).
    pub archive: Option<ArchiveHealth>,
    /// A node that started from a snapshot: the transactions before it that it has yet to
    /// index, `[first, last]` (range queries over them answer `IndexLoading` until then);
    /// `None` once done, and on every other node.
    pub indexing: Option<[u64; 2]>,
}

/// The archive's progress in [`NodeHealth`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHealth {
    /// Committed chunks archived.
    pub chunks: u64,
    /// The last seqno of the newest chunk archived.
    pub through_seqno: u64,
    /// Committed snapshots archived.
    pub snapshots: u64,
}

fn role(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "primary",
        openraft::ServerState::Follower => "backup",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "stopped",
    }
}

/// The node id of Raft id `id` among `names` (the Raft id itself if the ledger names none).
fn name_of(names: &[(u64, String)], id: u64) -> String {
    names
        .iter()
        .find(|(r, _)| *r == id)
        .map_or_else(|| id.to_string(), |(_, n)| n.clone())
}

impl LedgerNode {
    /// The node's metrics.
    pub fn metrics(&self) -> &NodeMetrics {
        self.ledger.metrics()
    }

    /// This node's health now.
    pub fn health(&self) -> NodeHealth {
        let s = self.snapshot();
        let (state, leader) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (m.state, m.current_leader)
        };
        NodeHealth {
            node_id: self.node_id().to_owned(),
            role: role(state),
            primary: leader.map(|id| name_of(&self.raft_names(), id)),
            term: s.term,
            last_seqno: s.last_seqno,
            commit_seqno: s.commit_seqno,
            commit_lag: s.last_seqno.saturating_sub(s.commit_seqno),
            last_signed_seqno: s.last_signed_seqno,
            last_signature_age_seconds: s.last_signature_age,
            replication_lag: s.replication_lag.into_iter().collect(),
            ready: self.is_ready(),
            write_error: self.write_error(),
            ledger_bytes: s.ledger_bytes,
            ledger_files: s.ledger_files,
            disk_free_bytes: rustix::fs::statvfs(&self.data.root)
                .ok()
                .map(|v| v.f_bavail.saturating_mul(v.f_frsize)),
            snapshot_seqno: super::snapshots::committed(&super::snapshots::dir(&self.data.root))
                .first()
                .map(|(s, _, _)| *s),
            archive: self.archive.get().map(|p| ArchiveHealth {
                chunks: p.chunks.load(Ordering::Relaxed),
                through_seqno: p.through.load(Ordering::Relaxed),
                snapshots: p.snapshots.load(Ordering::Relaxed),
            }),
            indexing: self.index.gap().ok().flatten().map(|(a, b)| [a, b]),
        }
    }

    /// `/metrics`: every metric, the scrape-time ones read now.
    pub fn metrics_text(&self) -> String {
        self.metrics().encode(&self.snapshot())
    }

    /// Raft ids and node ids of the nodes the ledger records.
    fn raft_names(&self) -> Vec<(u64, String)> {
        self.state.with_cluster(|c| {
            c.nodes
                .iter()
                .filter_map(|(id, rec)| {
                    let raft = rec.raft_id.or_else(|| crate::cluster::raft_id_of(id))?;
                    Some((raft, id.clone()))
                })
                .collect()
        })
    }

    fn snapshot(&self) -> Snapshot {
        let (state, term, last_log, committed, replication) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            let last_log = m.last_log_index.map_or(0, |i| i + 1);
            let replication: Vec<(u64, u64)> = m
                .replication
                .iter()
                .flatten()
                .filter(|(id, _)| **id != self.raft_id)
                .map(|(id, matched)| {
                    let acked = matched.as_ref().map_or(0, |l| l.index + 1);
                    (*id, last_log.saturating_sub(acked))
                })
                .collect();
            (
                m.state,
                m.current_term,
                last_log,
                m.local_committed.as_ref().map_or(0, |l| l.index + 1),
                replication,
            )
        };
        let names = if replication.is_empty() {
            Vec::new()
        } else {
            self.raft_names()
        };
        let replication_lag = replication
            .into_iter()
            .map(|(id, lag)| (name_of(&names, id), lag))
            .collect();
        let (ledger_bytes, ledger_files) = dir_size(&self.data.ledger_dir());
        Snapshot {
            raft_state: match state {
                openraft::ServerState::Leader => "Leader",
                openraft::ServerState::Follower => "Follower",
                openraft::ServerState::Candidate => "Candidate",
                openraft::ServerState::Learner => "Learner",
                openraft::ServerState::Shutdown => "Shutdown",
            },
            term,
            last_log_index: last_log,
            committed_index: committed,
            replication_lag,
            commit_seqno: self.committed_seqno(),
            last_seqno: self.ledger.last_seqno(),
            last_signed_seqno: self.ledger.last_signature(),
            last_signature_age: self.metrics().last_signature_age(),
            ledger_bytes,
            ledger_files,
            archived_seqno: self
                .archive
                .get()
                .map(|p| p.through.load(Ordering::Relaxed)),
        }
    }
}

//! A node's metrics, served at `/metrics` in the Prometheus text format (OpenMetrics).
//!
//! Two kinds, kept apart by what they cost:
//! - **Counted as things happen**, with an atomic add each: transactions and signatures
//!   appended, requests answered by kind and outcome, requests refused by reason, fsyncs and
//!   their latency, commit latency, JavaScript runs, open connections. Nothing on the write
//!   path takes a lock but the commit-latency sampler, which takes one at most once a
//!   millisecond.
//! - **Read at scrape time** from state the node keeps anyway: Raft's role, term, indexes and
//!   each backup's replication lag (openraft's metrics), the commit point, the last signature
//!   and its age, the ledger's size on disk.
//!
//! Each node has its own registry (tests run several nodes in one process), made with the node
//! and never changed after: a scrape encodes it under no lock of the node's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::lock;

/// One label whose values the code names (never a caller).
type Static = [(&'static str, &'static str); 1];
/// A request's kind and outcome.
type RequestLabels = [(&'static str, &'static str); 2];
/// A peer's node id.
type PeerLabel = [(&'static str, String); 1];

/// The most commit-latency samples waiting for the commit point (a stalled commit point
/// does not grow the queue without bound: the oldest are dropped).
const MAX_PENDING: usize = 4096;
/// At most one commit-latency sample per this interval.
const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// A node's metrics: see the module documentation.
pub struct NodeMetrics {
    registry: Registry,
    /// Transactions appended to this node's ledger (signatures included).
    pub(crate) transactions: Counter,
    /// Signature transactions appended.
    pub(crate) signatures: Counter,
    /// From a transaction's append on this node to the commit point reaching it.
    pub(crate) commit_latency: Histogram,
    /// One `fdatasync` of the ledger.
    pub(crate) sync_latency: Histogram,
    /// Requests answered, by kind ([`KINDS`]) and outcome ([`OUTCOMES`]): the family's
    /// counters, taken once, so that counting a request is one atomic add (no label hashing or
    /// lock on the request path).
    requests: [[Counter; OUTCOMES.len()]; KINDS.len()],
    /// Requests and connections refused, by reason (the CCF error code, or the limit).
    pub(crate) refused: Family<Static, Counter>,
    /// Connections open on the API port.
    pub(crate) connections: Gauge,
    /// JavaScript runs (functions, hooks, endpoints).
    pub(crate) js_runs: Counter,
    /// Chunks fetched back from the archive, and dropped from disk past the retention.
    chunks_fetched: Counter,
    chunks_dropped: Counter,
    // Read at scrape time.
    raft_state: Family<Static, Gauge>,
    raft_term: Gauge,
    raft_last_log_index: Gauge,
    raft_committed_index: Gauge,
    replication_lag: Family<PeerLabel, Gauge>,
    commit_seqno: Gauge,
    last_seqno: Gauge,
    last_signed_seqno: Gauge,
    last_signature_age: Gauge<f64, AtomicU64>,
    ledger_bytes: Gauge,
    ledger_files: Gauge,
    archived_seqno: Gauge,
    /// Appended seqnos waiting for the commit point, with when they were appended.
    pending: Mutex<VecDeque<(u64, Instant)>>,
    /// When the last sample was taken, in nanoseconds since `since`: read before `pending` is
    /// locked, so that the append path takes the lock at most once a [`SAMPLE_EVERY`].
    last_sample: AtomicU64,
    since: Instant,
    /// When the last signature was appended on this node.
    last_signature_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

/// What a scrape reads off the node (the values `NodeMetrics::encode` sets at each scrape).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Raft's state (`Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`).
    pub raft_state: &'static str,
    /// Raft's term.
    pub term: u64,
    /// Raft's last log index (the last seqno appended).
    pub last_log_index: u64,
    /// Raft's committed index.
    pub committed_index: u64,
    /// On the primary: each other node's id and how many transactions it lags.
    pub replication_lag: Vec<(String, u64)>,
    /// The commit point (the last committed signature's seqno).
    pub commit_seqno: u64,
    /// The last seqno appended to the ledger.
    pub last_seqno: u64,
    /// The last signature's seqno.
    pub last_signed_seqno: u64,
    /// Seconds since this node appended the last signature (`None`: none since it started).
    pub last_signature_age: Option<f64>,
    /// The ledger directory's size and file count.
    pub ledger_bytes: u64,
    /// Files in the ledger directory.
    pub ledger_files: u64,
    /// The last seqno the archive holds (`None`: no archive).
    pub archived_seqno: Option<u64>,
}

const RAFT_STATES: [&str; 5] = ["Leader", "Follower", "Candidate", "Learner", "Shutdown"];
/// The kinds of request counted, by [`RequestKind`].
const KINDS: [&str; 5] = ["read", "write", "gov", "node", "other"];
/// How a request ended, by [`Outcome`].
const OUTCOMES: [&str; 3] = ["ok", "refused", "failed"];

/// A request's kind (the `kind` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestKind {
    /// Reads of the application (`GET /app/...`).
    Read,
    /// Writes of the application.
    Write,
    /// Governance (`/gov/...`).
    Gov,
    /// The node's own routes (`/node/...`, `/metrics`).
    Node,
    /// Anything else.
    Other,
}

/// How a request ended (the `outcome` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// 1xx to 3xx.
    Ok,
    /// 4xx.
    Refused,
    /// 5xx.
    Failed,
}

impl NodeMetrics {
    /// A node's registry, every metric at zero.
    pub(crate) fn new() -> NodeMetrics {
        let js_runs = Counter::default();
        let mut r = Registry::with_prefix("vellum");
        let transactions = Counter::default();
        r.register(
            "ledger_transactions",
            "Transactions appended to this node's ledger, signatures included",
            transactions.clone(),
        );
        let signatures = Counter::default();
        r.register(
            "signature_transactions",
            "Signature transactions appended to this node's ledger",
            signatures.clone(),
        );
        // 100 µs to ~52 s.
        let commit_latency = Histogram::new(exponential_buckets(1e-4, 2.0, 20));
        r.register_with_unit(
            "commit_latency",
            "From a transaction's append on this node to the commit point reaching it (sampled at most once a millisecond)",
            Unit::Seconds,
            commit_latency.clone(),
        );
        // 10 µs to ~5 s.
        let sync_latency = Histogram::new(exponential_buckets(1e-5, 2.0, 20));
        r.register_with_unit(
            "ledger_sync_latency",
            "One fdatasync of the open ledger chunk",
            Unit::Seconds,
            sync_latency.clone(),
        );
        let family = Family::<RequestLabels, Counter>::default();
        r.register(
            "requests",
            "HTTP requests answered, by kind (read, write, gov, node, other) and outcome (ok, refused, failed)",
            family.clone(),
        );
        let requests = KINDS.map(|kind| {
            OUTCOMES.map(|outcome| {
                family
                    .get_or_create(&[("kind", kind), ("outcome", outcome)])
                    .clone()
            })
        });
        let refused = Family::<Static, Counter>::default();
        r.register(
            "refused",
            "Requests refused (4xx, by CCF error code) and connections refused (by limit)",
            refused.clone(),
        );
        let connections = Gauge::default();
        r.register(
            "open_connections",
            "Connections open on the API port",
            connections.clone(),
        );
        r.register(
            "js_runs",
            "JavaScript runs (functions, hooks, endpoints)",
            js_runs.clone(),
        );
        let chunks_fetched = Counter::default();
        r.register(
            "ledger_chunks_fetched",
            "Ledger chunks this node had dropped, fetched back from the archive for a read",
            chunks_fetched.clone(),
        );
        let chunks_dropped = Counter::default();
        r.register(
            "ledger_chunks_dropped",
            "Archived ledger chunks dropped from this node's disk past its retention",
            chunks_dropped.clone(),
        );
        let raft_state = Family::<Static, Gauge>::default();
        r.register(
            "raft_state",
            "1 for this node's Raft state, 0 for the others",
            raft_state.clone(),
        );
        let raft_term = Gauge::default();
        r.register("raft_term", "Raft term", raft_term.clone());
        let raft_last_log_index = Gauge::default();
        r.register(
            "raft_last_log_index",
            "Raft's last log index on this node",
            raft_last_log_index.clone(),
        );
        let raft_committed_index = Gauge::default();
        r.register(
            "raft_committed_index",
            "Raft's committed index on this node",
            raft_committed_index.clone(),
        );
        let replication_lag = Family::<PeerLabel, Gauge>::default();
        r.register(
            "replication_lag",
            "On the primary: transactions each other node has yet to acknowledge",
            replication_lag.clone(),
        );
        let commit_seqno = Gauge::default();
        r.register(
            "commit_seqno",
            "The commit point: seqno of the last committed signature",
            commit_seqno.clone(),
        );
        let last_seqno = Gauge::default();
        r.register(
            "last_seqno",
            "The last seqno appended to this node's ledger",
            last_seqno.clone(),
        );
        let last_signed_seqno = Gauge::default();
        r.register(
            "last_signed_seqno",
            "Seqno of the last signature transaction",
            last_signed_seqno.clone(),
        );
        let last_signature_age = Gauge::<f64, AtomicU64>::default();
        r.register_with_unit(
            "last_signature_age",
            "Time since this node appended the last signature (-1: none since it started)",
            Unit::Seconds,
            last_signature_age.clone(),
        );
        let ledger_bytes = Gauge::default();
        r.register_with_unit(
            "ledger_size",
            "Size of the ledger directory",
            Unit::Bytes,
            ledger_bytes.clone(),
        );
        let ledger_files = Gauge::default();
        r.register(
            "ledger_files",
            "Files in the ledger directory",
            ledger_files.clone(),
        );
        let archived_seqno = Gauge::default();
        r.register(
            "archived_seqno",
            "The last seqno of the newest chunk in the archive (-1: no archive)",
            archived_seqno.clone(),
        );
        NodeMetrics {
            registry: r,
            transactions,
            signatures,
            commit_latency,
            sync_latency,
            requests,
            refused,
            connections,
            js_runs,
            chunks_fetched,
            chunks_dropped,
            raft_state,
            raft_term,
            raft_last_log_index,
            raft_committed_index,
            replication_lag,
            commit_seqno,
            last_seqno,
            last_signed_seqno,
            last_signature_age,
            ledger_bytes,
            ledger_files,
            archived_seqno,
            pending: Mutex::new(VecDeque::new()),
            last_sample: AtomicU64::new(0),
            since: Instant::now(),
            last_signature_at: Mutex::new(None),
        }
    }

    /// The ledger appended `seqno` (a signature if `signature`).
    pub(crate) fn appended(&self, seqno: u64, signature: bool) {
        self.transactions.inc();
        let now = Instant::now();
        if signature {
            self.signatures.inc();
            *lock(&self.last_signature_at) = Some(now);
        }
        // Nanoseconds since `since`, plus one: 0 stands for "no sample yet".
        let at = u64::try_from(now.duration_since(self.since).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_sample.load(Ordering::Relaxed);
        if last != 0 && at.saturating_sub(last) < SAMPLE_EVERY.as_nanos() as u64 {
            return;
        }
        self.last_sample.store(at, Ordering::Relaxed);
        let mut p = lock(&self.pending);
        if p.len() >= MAX_PENDING {
            p.pop_front();
        }
        p.push_back((seqno, now));
    }

    /// The commit point reached `seqno`: the samples up to it are observed.
    pub(crate) fn committed(&self, seqno: u64) {
        let now = Instant::now();
        let mut p = lock(&self.pending);
        while let Some(&(s, t)) = p.front() {
            if s > seqno {
                break;
            }
            p.pop_front();
            self.commit_latency
                .observe(now.duration_since(t).as_secs_f64());
        }
    }

    /// A dropped chunk was fetched back from the archive.
    pub(crate) fn chunk_fetched(&self) {
        self.chunks_fetched.inc();
    }

    /// An archived chunk was dropped from disk.
    pub(crate) fn chunk_dropped(&self) {
        self.chunks_dropped.inc();
    }

    /// The ledger lost everything after `keep` (an uncommitted suffix): its samples go too.
    pub(crate) fn truncated(&self, keep: u64) {
        lock(&self.pending).retain(|(s, _)| *s <= keep);
    }

    /// A request of `kind` ended with `outcome`.
    pub(crate) fn request(&self, kind: RequestKind, outcome: Outcome) {
        self.requests[kind as usize][outcome as usize].inc();
    }

    /// A request or connection was refused for `reason`.
    pub(crate) fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// Seconds since the last signature this node appended, if any since it started.
    pub(crate) fn last_signature_age(&self) -> Option<f64> {
        lock(&self.last_signature_at).map(|t| t.elapsed().as_secs_f64())
    }

    /// Sets the scrape-time values from `s` and encodes everything.
    pub(crate) fn encode(&self, s: &Snapshot) -> String {
        for state in RAFT_STATES {
            self.raft_state
                .get_or_create(&[("state", state)])
                .set(i64::from(state == s.raft_state));
        }
        self.raft_term.set(gauge(s.term));
        self.raft_last_log_index.set(gauge(s.last_log_index));
        self.raft_committed_index.set(gauge(s.committed_index));
        // Peers come and go (a follower has none): only the primary's current view is shown.
        self.replication_lag.clear();
        for (peer, lag) in &s.replication_lag {
            self.replication_lag
                .get_or_create(&[("peer", peer.clone())])
                .set(gauge(*lag));
        }
        self.commit_seqno.set(gauge(s.commit_seqno));
        self.last_seqno.set(gauge(s.last_seqno));
        self.last_signed_seqno.set(gauge(s.last_signed_seqno));
        self.last_signature_age
            .set(s.last_signature_age.unwrap_or(-1.0));
        self.ledger_bytes.set(gauge(s.ledger_bytes));
        self.ledger_files.set(gauge(s.ledger_files));
        self.archived_seqno.set(s.archived_seqno.map_or(-1, gauge));
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The size and number of files directly in `dir` (0 for what cannot be read).
pub(crate) fn dir_size(dir: &std::path::Path) -> (u64, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .fold((0, 0), |(b, n), m| (b + m.len(), n + 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commit_latency_is_observed_once_per_sample_and_truncation_drops_samples() {
        let m = NodeMetrics::new();
        m.appended(1, false);
        std::thread::sleep(SAMPLE_EVERY);
        m.appended(2, true);
        std::thread::sleep(SAMPLE_EVERY);
        m.appended(3, false);
        m.truncated(2);
        m.committed(2);
        m.committed(5);
        let text = m.encode(&Snapshot::default());
        assert!(
            text.contains("vellum_commit_latency_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vellum_ledger_transactions_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("vellum_signature_transactions_total 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn scrape_time_values_replace_the_previous_scrape() {
        let m = NodeMetrics::new();
        let mut s = Snapshot {
            raft_state: "Leader",
            term: 3,
            replication_lag: vec![("n1".into(), 5), ("n2".into(), 0)],
            ..Snapshot::default()
        };
        let text = m.encode(&s);
        assert!(
            text.contains("vellum_raft_state{state=\"Leader\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vellum_raft_state{state=\"Follower\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("vellum_replication_lag{peer=\"n1\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("vellum_last_signature_age_seconds -1"),
            "{text}"
        );
        s.raft_state = "Follower";
        s.replication_lag.clear();
        let text = m.encode(&s);
        assert!(
            text.contains("vellum_raft_state{state=\"Leader\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("vellum_replication_lag{"), "{text}");
    }
}

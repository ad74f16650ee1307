//! The ledger as Raft sees it: the engine behind its lock, the flusher that makes appends
//! durable, a cache of entries appended and not yet applied (exactly what the ledger holds),
//! and the last appended and last signature seqnos, readable without the engine's lock.
//!
//! The log store appends through it, the state machine applies from it, and the node reads
//! entries, statuses and receipts from it.

use std::collections::BTreeMap;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::IOFlushed;
use vellum_ledger::engine::Engine;

use super::flusher::{FlushStats, Flusher};
use super::types::{Entry, Payload, Stored, TypeConfig, log_id_of};
use crate::lock;
use crate::metrics::NodeMetrics;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The node's ledger: see the module documentation.
pub(crate) struct Ledger {
    engine: Arc<Mutex<Engine>>,
    /// Entries appended and not yet applied, by log index.
    cache: Mutex<BTreeMap<u64, Entry>>,
    flusher: Flusher,
    /// Last seqno appended.
    last_seqno: AtomicU64,
    /// Seqno of the last signature appended (mirror of the engine's).
    last_signature: AtomicU64,
    metrics: Arc<NodeMetrics>,
    /// Where the chunks this node dropped from its disk come back from ([`crate::node::retention`]).
    archive: std::sync::OnceLock<crate::archive::Archive>,
    /// One fetch at a time: readers of the same chunk wait for it instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
    /// When each chunk was last fetched back: the retention keeps it a while (a reader of
    /// old entries usually reads on).
    fetched: Mutex<BTreeMap<String, std::time::Instant>>,
    /// The other nodes, asked for a dropped chunk when the archive cannot give it.
    peers: std::sync::OnceLock<PeerChunks>,
}

/// The other nodes of the service as a source of committed chunks
/// (`GET /node/ledger/chunk/{name}` on the node channel).
pub(crate) struct PeerChunks {
    /// The node channel's client.
    pub(crate) client: crate::raft::network::PeerClient,
    /// The other nodes' node-to-node addresses now.
    pub(crate) addresses: Box<dyn Fn() -> Vec<String> + Send + Sync>,
}

/// How long a peer has to send a chunk.
const PEER_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The committed chunk a failed read needed, when this node dropped it from its disk.
pub(crate) fn absent_chunk(e: &vellum_ledger::engine::EngineError) -> Option<&str> {
    match e {
        vellum_ledger::engine::EngineError::Store(vellum_ledger::store::StoreError::Absent {
            chunk,
            ..
        }) => Some(chunk),
        _ => None,
    }
}

impl Ledger {
    /// Takes over an opened engine and starts its flusher; appends, syncs and commits are
    /// counted in `metrics`.
    pub(crate) fn new(engine: Engine, metrics: Arc<NodeMetrics>) -> io::Result<Ledger> {
        let last_signature = engine.last_signature().unwrap_or(0);
        let last_seqno = engine.last_seqno();
        let engine = Arc::new(Mutex::new(engine));
        Ok(Ledger {
            flusher: Flusher::start(engine.clone(), metrics.sync_latency.clone())?,
            engine,
            cache: Mutex::new(BTreeMap::new()),
            last_seqno: AtomicU64::new(last_seqno),
            last_signature: AtomicU64::new(last_signature),
            metrics,
            archive: std::sync::OnceLock::new(),
            fetching: tokio::sync::Mutex::new(()),
            fetched: Mutex::new(BTreeMap::new()),
            peers: std::sync::OnceLock::new(),
        })
    }

    /// Fetches dropped chunks from `archive` from now on.
    pub(crate) fn set_archive(&self, archive: crate::archive::Archive) {
        let _ = self.archive.set(archive);
    }

    /// Asks the other nodes for dropped chunks the archive cannot give.
    pub(crate) fn set_peers(&self, peers: PeerChunks) {
        let _ = self.peers.set(peers);
    }

    /// Brings the committed chunk `name` back after this node dropped it, from the archive or
    /// else from another node: a copy is checked against what this node recorded of the chunk
    /// (a copy that does not match is refused, and the next source asked) and written to disk
    /// without the engine's lock, which is held only to take its entries' locations back.
    pub(crate) async fn fetch_chunk(&self, name: &str) -> io::Result<()> {
        let _one = self.fetching.lock().await;
        let Some(absent) = self.engine().absent_chunk(name).map_err(other)? else {
            return Ok(()); // attached while this waited
        };
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        let mut sources: Vec<Option<String>> = Vec::new();
        if self.archive.get().is_some() {
            sources.push(None);
        }
        if let Some(p) = self.peers.get() {
            sources.extend((p.addresses)().into_iter().map(Some));
        }
        for source in sources {
            let fetched = match (&source, self.archive.get(), self.peers.get()) {
                (None, Some(archive), _) => archive.get("ledger", name).await.map_err(other),
                (Some(addr), _, Some(p)) => p
                    .client
                    .get_bytes(
                        addr,
                        &format!("/node/ledger/chunk/{name}"),
                        PEER_CHUNK_TIMEOUT,
                    )
                    .await
                    .map_err(other),
                _ => continue,
            };
            let from = source.as_deref().unwrap_or("the archive").to_owned();
            let bytes = match fetched {
                Ok(b) => b,
                Err(e) => {
                    failures.push(format!("{from}: {e}"));
                    continue;
                }
            };
            let size = bytes.len();
            let check = absent.clone();
            let verified = tokio::task::spawn_blocking(move || check.verify(&bytes))
                .await
                .map_err(other)?;
            match verified {
                Ok(v) => {
                    self.engine().attach_verified(v).map_err(other)?;
                    lock(&self.fetched).insert(name.to_owned(), std::time::Instant::now());
                    self.metrics.chunk_fetched();
                    tracing::info!(
                        chunk = name,
                        from = %from,
                        bytes = size,
                        ms = started.elapsed().as_millis() as u64,
                        "fetched a dropped chunk back"
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(chunk = name, from = %from, error = %e, "a fetched copy of a chunk was refused");
                    failures.push(format!("{from}: {e}"));
                }
            }
        }
        if failures.is_empty() {
            failures.push("no archive is configured and no other node is known".into());
        }
        Err(other(format!(
            "{name} is not on this node's disk; {}",
            failures.join("; ")
        )))
    }

    /// The engine, locked.
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    /// Whether the chunk `name` was fetched back within `within` (forgetting older fetches).
    pub(crate) fn fetched_within(&self, name: &str, within: std::time::Duration) -> bool {
        let mut f = lock(&self.fetched);
        f.retain(|_, at| at.elapsed() < within);
        f.contains_key(name)
    }

    /// The last seqno appended.
    pub(crate) fn last_seqno(&self) -> u64 {
        self.last_seqno.load(Ordering::Acquire)
    }

    /// The seqno of the last signature appended (0: none).
    pub(crate) fn last_signature(&self) -> u64 {
        self.last_signature.load(Ordering::Acquire)
    }

    /// How many transactions were appended after the last signature.
    pub(crate) fn unsigned(&self) -> u64 {
        self.last_seqno().saturating_sub(self.last_signature())
    }

    /// Records that the engine appended `seqno` (a signature if `signature`).
    pub(crate) fn appended(&self, seqno: u64, signature: bool) {
        self.last_seqno.store(seqno, Ordering::Release);
        if signature {
            self.last_signature.store(seqno, Ordering::Release);
        }
        self.metrics.appended(seqno, signature);
    }

    /// The node's metrics.
    pub(crate) fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    /// Keeps appended entries, by log index, until they are applied.
    pub(crate) fn cache(&self, entries: impl IntoIterator<Item = (u64, Entry)>) {
        lock(&self.cache).extend(entries);
    }

    /// Drops cached entries up to log index `index` (they are applied).
    pub(crate) fn applied(&self, index: u64) {
        let mut c = lock(&self.cache);
        *c = c.split_off(&(index + 1));
    }

    /// The stored form of the entry at log index `index`.
    pub(crate) fn stored(&self, index: u64) -> io::Result<Entry> {
        if let Some(e) = lock(&self.cache).get(&index) {
            return Ok(e.clone());
        }
        let (txid, ws) = self.engine().write_set(index + 1).map_err(other)?;
        let stored = Stored::from_write_set(ws).map_err(other)?;
        let log_id =
            log_id_of(txid).ok_or_else(|| other(format!("transaction {txid} has no log id")))?;
        Ok(Entry {
            log_id,
            payload: Payload::Ledger(Arc::new(stored)),
        })
    }

    /// The stored entries at the log indexes in `range` that the ledger holds.
    pub(crate) fn read_range(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        let last = self.last_seqno();
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        // Log indexes present: 0..last.
        let end = match range.end_bound() {
            Bound::Included(e) => (e + 1).min(last),
            Bound::Excluded(e) => (*e).min(last),
            Bound::Unbounded => last,
        };
        (start..end).map(|i| self.stored(i)).collect()
    }

    /// The first chunk this node dropped from its disk that holds a log index in `range`.
    pub(crate) fn absent_in(&self, range: impl RangeBounds<u64>) -> Option<String> {
        let first = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let last = match range.end_bound() {
            Bound::Included(e) => *e,
            Bound::Excluded(e) => e.checked_sub(1)?,
            Bound::Unbounded => u64::MAX,
        };
        // Chunk `start..=end` holds log indexes `start - 1..=end - 1`.
        let chunks = self.engine().committed_chunk_files();
        chunks
            .into_iter()
            .find(|c| !c.on_disk && c.start - 1 <= last && c.end > first)
            .map(|c| c.name)
    }

    /// Drops everything after the first `keep` transactions (a conflicting uncommitted
    /// suffix) from files, tree and cache.
    pub(crate) fn truncate(&self, keep: u64) -> io::Result<()> {
        let mut engine = self.engine();
        engine.truncate(keep).map_err(other)?;
        self.metrics.truncated(keep);
        self.last_seqno.store(keep, Ordering::Release);
        self.last_signature
            .store(engine.last_signature().unwrap_or(0), Ordering::Release);
        // Cache keys are log indexes (seqno - 1): keep indexes below `keep`.
        lock(&self.cache).split_off(&keep);
        Ok(())
    }

    /// Makes what was appended durable, then tells openraft (`defer`: a plain write on the
    /// primary, which may wait for the next sync; see the flusher).
    pub(crate) fn flush(&self, callback: IOFlushed<TypeConfig>, defer: bool) {
        self.flusher.flush(callback, defer);
    }

    /// The flusher's counters.
    pub(crate) fn flush_stats(&self) -> &FlushStats {
        &self.flusher.stats
    }
}

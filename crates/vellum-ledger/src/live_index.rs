//! The index as a running node uses it: transactions applied to it are readable at once, from
//! memory, and a thread of its own writes them to redb, many apply batches per write
//! transaction.
//!
//! Why not write each batch to redb as it is applied: a redb write transaction costs tens of
//! microseconds however little it holds, and the state machine applies a batch per commit (a few
//! dozen transactions under load): written inline, every commit waited on redb
//! (`docs/benchmarks.md`, "The index writes behind", has the figures). Here the writer takes whatever was staged every [`WRITE_EVERY`] (or at once past
//! [`WRITE_AT`] transactions), so a redb transaction carries a hundred or more.
//!
//! Readers see one index: a staged transaction is answered from memory, an older one from redb.
//! A staged transaction leaves memory only once the redb transaction holding it has committed,
//! so there is no moment at which it is in neither. As before, the index is derived data:
//! writes are synced at most once a second (and at [`LiveIndex::flush`] or drop), and after a
//! crash its owner re-applies from [`LiveIndex::last_seqno`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::index::{Index, IndexError, IndexedTx};

/// How long staged transactions wait for the writer, at most (unless [`WRITE_AT`] are staged).
pub const WRITE_EVERY: Duration = Duration::from_millis(5);

/// Staged transactions at which the writer starts without waiting for [`WRITE_EVERY`].
pub const WRITE_AT: usize = 4096;

/// Staged transactions at which [`LiveIndex::apply`] waits for the writer (back-pressure, so
/// that memory stays bounded if the disk falls behind).
pub const STAGED_MAX: usize = 1 << 16;

/// How often the writer makes its writes durable (`fsync`) while transactions keep coming.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// Transactions and blobs applied and not yet written to redb.
struct Staged {
    /// Contiguous seqnos from `first`.
    txs: VecDeque<IndexedTx>,
    /// Seqno of `txs[0]`: one past the last seqno redb holds.
    first: u64,
    /// The latest staged seqno of each collection with staged entries.
    latest: HashMap<String, u64>,
    /// Blobs set since the writer last took them.
    blobs: BTreeMap<String, Vec<u8>>,
    /// Flushes asked for, and the last one done (a durable write of everything staged when it
    /// was asked).
    flush_asked: u64,
    flush_done: u64,
    /// A write failed: the index accepts nothing more.
    failed: Option<String>,
    /// False once the owner dropped the index: the writer writes what is left and stops.
    open: bool,
}

struct Inner {
    index: Index,
    staged: Mutex<Staged>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes those waiting for a write to complete (back-pressure, flushes).
    written: Condvar,
}

fn lock(m: &Mutex<Staged>) -> MutexGuard<'_, Staged> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The index with a write-behind stage in front of it (see the module documentation).
pub struct LiveIndex {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LiveIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.inner.staged);
        f.debug_struct("LiveIndex")
            .field("first_staged", &s.first)
            .field("staged", &s.txs.len())
            .field("failed", &s.failed)
            .finish()
    }
}

impl LiveIndex {
    /// Puts a stage in front of `index` and starts its writer thread.
    pub fn start(index: Index) -> Result<LiveIndex, IndexError> {
        let first = index.last_seqno()? + 1;
        let inner = Arc::new(Inner {
            index,
            staged: Mutex::new(Staged {
                txs: VecDeque::new(),
                first,
                latest: HashMap::new(),
                blobs: BTreeMap::new(),
                flush_asked: 0,
                flush_done: 0,
                failed: None,
                open: true,
            }),
            work: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn({
                let inner = inner.clone();
                move || write_loop(&inner)
            })
            .map_err(|e| IndexError::Store(format!("starting the index writer: {e}")))?;
        Ok(LiveIndex {
            inner,
            writer: Some(writer),
        })
    }

    /// Adds transactions, contiguous from `last_seqno() + 1`, and sets named blobs. They are
    /// readable when this returns, and written to redb shortly after. Fails once a write has
    /// failed (nothing more is accepted).
    pub fn apply(
        &self,
        txs: Vec<IndexedTx>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), IndexError> {
        let mut s = lock(&self.inner.staged);
        while s.txs.len() >= STAGED_MAX && s.failed.is_none() {
            self.inner.work.notify_one();
            s = self
                .inner
                .written
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(e) = &s.failed {
            return Err(IndexError::Store(e.clone()));
        }
        let next = s.first + s.txs.len() as u64;
        for (expected, tx) in (next..).zip(&txs) {
            if tx.seqno != expected {
                return Err(IndexError::Order {
                    expected,
                    got: tx.seqno,
                });
            }
        }
        let was_empty = s.txs.is_empty() && s.blobs.is_empty();
        for tx in txs {
            if let Some(c) = &tx.collection {
                match s.latest.get_mut(c) {
                    Some(l) => *l = tx.seqno,
                    None => {
                        s.latest.insert(c.clone(), tx.seqno);
                    }
                }
            }
            s.txs.push_back(tx);
        }
        s.blobs.extend(blobs);
        let wake = was_empty || s.txs.len() >= WRITE_AT;
        drop(s);
        if wake {
            self.inner.work.notify_one();
        }
        Ok(())
    }

    /// Writes everything staged so far to redb and syncs it.
    pub fn flush(&self) -> Result<(), IndexError> {
        let mut s = lock(&self.inner.staged);
        s.flush_asked += 1;
        let ticket = s.flush_asked;
        self.inner.work.notify_one();
        loop {
            if let Some(e) = &s.failed {
                return Err(IndexError::Store(e.clone()));
            }
            if s.flush_done >= ticket {
                return Ok(());
            }
            s = self
                .inner
                .written
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Transactions applied and not yet written to redb.
    pub fn staged(&self) -> usize {
        lock(&self.inner.staged).txs.len()
    }

    /// The last seqno indexed (0 when empty).
    pub fn last_seqno(&self) -> u64 {
        let s = lock(&self.inner.staged);
        s.first + s.txs.len() as u64 - 1
    }

    /// View and collection of the transaction at `seqno` (its tags are kept for queries, not
    /// per transaction: `tags` is empty; read the entry for them).
    pub fn get(&self, seqno: u64) -> Result<Option<IndexedTx>, IndexError> {
        {
            let s = lock(&self.inner.staged);
            if seqno >= s.first {
                return Ok(s.txs.get((seqno - s.first) as usize).map(|t| IndexedTx {
                    tags: Vec::new(),
                    kv: Vec::new(),
                    ..t.clone()
                }));
            }
        }
        // Older than anything staged: redb has committed it.
        self.inner.index.get(seqno)
    }

    /// Seqno of the latest entry in `collection`.
    pub fn latest(&self, collection: &str) -> Result<Option<u64>, IndexError> {
        if let Some(l) = lock(&self.inner.staged).latest.get(collection) {
            return Ok(Some(*l));
        }
        self.inner.index.latest(collection)
    }

    /// Seqnos of `collection`'s entries in `from..=to`, at most `limit`, ascending.
    pub fn range(
        &self,
        collection: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, IndexError> {
        self.range_where(collection, None, from, to, limit)
    }

    /// Seqnos of `collection`'s entries tagged `tag` in `from..=to`, at most `limit`,
    /// ascending.
    pub fn range_tagged(
        &self,
        collection: &str,
        tag: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, IndexError> {
        self.range_where(collection, Some(tag), from, to, limit)
    }

    fn range_where(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, IndexError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let wanted = |t: &IndexedTx| {
            t.collection.as_deref() == Some(collection)
                && tag.is_none_or(|tag| t.tags.iter().any(|have| have == tag))
        };
        // The stage first: what it drops meanwhile is in redb by then.
        let (first, staged) = {
            let s = lock(&self.inner.staged);
            let staged: Vec<u64> = if to >= s.first && s.latest.contains_key(collection) {
                let skip = from.saturating_sub(s.first) as usize;
                s.txs
                    .iter()
                    .skip(skip)
                    .take_while(|t| t.seqno <= to)
                    .filter(|t| wanted(t))
                    .take(limit)
                    .map(|t| t.seqno)
                    .collect()
            } else {
                Vec::new()
            };
            (s.first, staged)
        };
        let mut out = if from < first {
            let to = to.min(first - 1);
            match tag {
                None => self.inner.index.range(collection, from, to, limit)?,
                Some(tag) => self
                    .inner
                    .index
                    .range_tagged(collection, tag, from, to, limit)?,
            }
        } else {
            Vec::new()
        };
        out.extend(staged);
        out.truncate(limit);
        Ok(out)
    }

    /// The distinct tags of `collection`'s entries, sorted.
    pub fn tags(&self, collection: &str) -> Result<Vec<String>, IndexError> {
        let staged: Vec<String> = {
            let s = lock(&self.inner.staged);
            s.txs
                .iter()
                .filter(|t| t.collection.as_deref() == Some(collection))
                .flat_map(|t| t.tags.iter().cloned())
                .collect()
        };
        let mut all: BTreeSet<String> = self.inner.index.tags(collection)?.into_iter().collect();
        all.extend(staged);
        Ok(all.into_iter().collect())
    }

    /// The current value of `key` in the application map `map`: the latest staged write of it,
    /// else redb's. (Staged writes are looked at first: one leaves memory only after redb has
    /// it, so it is never in neither place.)
    pub fn kv_get(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        {
            let s = lock(&self.inner.staged);
            for t in s.txs.iter().rev() {
                if let Some(w) = t.kv.iter().rev().find(|w| w.map == map && w.key == key) {
                    return Ok(w.value.clone());
                }
            }
        }
        self.inner.index.kv_get(map, key)
    }

    /// Every (key, value) of the application map `map`, by key: redb's, with the staged writes
    /// over them (taken first, for the reason [`LiveIndex::kv_get`] gives).
    pub fn kv_entries(&self, map: &str) -> Result<crate::index::KvEntries, IndexError> {
        let staged: Vec<crate::index::KvWrite> = {
            let s = lock(&self.inner.staged);
            s.txs
                .iter()
                .flat_map(|t| t.kv.iter().filter(|w| w.map == map).cloned())
                .collect()
        };
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> =
            self.inner.index.kv_entries(map)?.into_iter().collect();
        for w in staged {
            match w.value {
                Some(v) => all.insert(w.key, v),
                None => all.remove(&w.key),
            };
        }
        Ok(all.into_iter().collect())
    }

    /// Every collection with at least one entry, sorted.
    pub fn collections(&self) -> Result<Vec<String>, IndexError> {
        let staged: Vec<String> = lock(&self.inner.staged).latest.keys().cloned().collect();
        let mut all: BTreeSet<String> = self.inner.index.collections()?.into_iter().collect();
        all.extend(staged);
        Ok(all.into_iter().collect())
    }

    /// The transactions whose rows a seeded index still lacks ([`Index::gap`]).
    pub fn gap(&self) -> Result<Option<(u64, u64)>, IndexError> {
        self.inner.index.gap()
    }

    /// Adds rows of transactions in the gap ([`Index::backfill`]); newer transactions keep
    /// being applied meanwhile.
    pub fn backfill(&self, txs: &[IndexedTx]) -> Result<(), IndexError> {
        self.inner.index.backfill(txs)
    }

    /// A blob set by [`LiveIndex::apply`] (or before, in the index).
    pub fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        if let Some(b) = lock(&self.inner.staged).blobs.get(key) {
            return Ok(Some(b.clone()));
        }
        self.inner.index.blob(key)
    }
}

impl Drop for LiveIndex {
    fn drop(&mut self) {
        lock(&self.inner.staged).open = false;
        self.inner.work.notify_one();
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: waits for staged transactions (and [`WRITE_EVERY`] after its last
/// write), writes them in one redb transaction, then drops them from the stage.
fn write_loop(inner: &Inner) {
    let mut last_write = Instant::now();
    let mut last_durable = Instant::now();
    let mut s = lock(&inner.staged);
    loop {
        if s.failed.is_some() {
            return;
        }
        let pending = !s.txs.is_empty() || !s.blobs.is_empty();
        let flush = s.flush_asked > s.flush_done;
        let closing = !s.open;
        let due = last_write + WRITE_EVERY;
        let now = Instant::now();
        if !(flush || closing || pending && (now >= due || s.txs.len() >= WRITE_AT)) {
            s = if pending {
                inner
                    .work
                    .wait_timeout(s, due - now)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0)
            } else {
                inner.work.wait(s).unwrap_or_else(PoisonError::into_inner)
            };
            continue;
        }
        let txs: Vec<IndexedTx> = s.txs.iter().cloned().collect();
        // Cloned, not taken: a blob stays readable from the stage until redb has it.
        let blobs = s.blobs.clone();
        let ticket = s.flush_asked;
        drop(s);
        let durable = flush || closing || last_durable.elapsed() >= DURABLE_EVERY;
        last_write = Instant::now();
        let blob_refs: Vec<(&str, &[u8])> = blobs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let result = inner.index.apply_with(&txs, &blob_refs, durable);
        s = lock(&inner.staged);
        match result {
            Ok(()) => {
                if durable {
                    last_durable = Instant::now();
                }
                let n = txs.len();
                s.txs.drain(..n);
                s.first += n as u64;
                let first = s.first;
                s.latest.retain(|_, l| *l >= first);
                // A blob set again meanwhile stays staged: it is newer than the one written.
                for (k, v) in &blobs {
                    if s.blobs.get(k) == Some(v) {
                        s.blobs.remove(k);
                    }
                }
                if flush {
                    s.flush_done = ticket;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "index write failed: the index accepts no more transactions");
                s.failed = Some(e.to_string());
            }
        }
        inner.written.notify_all();
        if closing && s.txs.is_empty() && s.blobs.is_empty() {
            return;
        }
    }
}

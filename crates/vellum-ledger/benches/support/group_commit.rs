//! Group commit: one writer thread in front of [`LedgerFiles`] that takes appends from any
//! number of callers, writes everything queued, makes it durable with **one** `fdatasync`, and
//! only then completes each caller's callback.
//!
//! Not part of the library: the node's own group commit is its flusher (openraft's log store
//! completes appends once synced, `vellum-node/src/raft/flusher.rs`). This is the baseline the
//! store benchmark measures the files against, and its test keeps the baseline honest; both
//! include this file.
//!
//! Callbacks receive `Ok(durable_seqno)` (every entry up to it is synced) or the store error;
//! after an error every later request fails too (the store is poisoned), so a write is never
//! acknowledged after a failed sync.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use vellum_ledger::store::{LedgerFiles, StoreError};

/// Called once the request is durable (or failed).
pub type Done = Box<dyn FnOnce(Result<u64, StoreError>) + Send>;

/// One entry to append: seqno, bytes, whether it is a signature transaction.
pub type Append = (u64, Vec<u8>, bool);

enum Msg {
    Append(Vec<Append>, Done),
    Truncate(u64, Done),
    Commit(u64, Done),
    Stop,
}

/// Counters of the writer (for tests and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Entries appended.
    pub entries: u64,
    /// `fdatasync` rounds.
    pub syncs: u64,
}

/// The writer thread and a handle to submit work to it.
#[derive(Debug)]
pub struct GroupCommit {
    tx: Sender<Msg>,
    store: Arc<Mutex<LedgerFiles>>,
    stats: Arc<Mutex<GroupCommitStats>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the store half-updated in a way later code
    // relies on (every mutation poisons the store on error), so recover the guard.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupCommit {
    /// Starts the writer over `store`.
    pub fn start(store: LedgerFiles) -> std::io::Result<GroupCommit> {
        let (tx, rx) = channel();
        let store = Arc::new(Mutex::new(store));
        let stats = Arc::new(Mutex::new(GroupCommitStats::default()));
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn({
                let store = store.clone();
                let stats = stats.clone();
                move || writer(rx, store, stats)
            })?;
        Ok(GroupCommit {
            tx,
            store,
            stats,
            thread: Some(thread),
        })
    }

    fn send(&self, m: Msg) {
        if let Err(e) = self.tx.send(m) {
            // The writer is gone (stopped): fail the request instead of dropping it silently.
            let fail = |d: Done| d(Err(StoreError::Poisoned("ledger writer stopped".into())));
            match e.0 {
                Msg::Append(_, d) | Msg::Truncate(_, d) | Msg::Commit(_, d) => fail(d),
                Msg::Stop => {}
            }
        }
    }

    /// Queues entries (in seqno order, continuing the ledger); `done` runs once they are durable.
    pub fn append(&self, entries: Vec<Append>, done: Done) {
        self.send(Msg::Append(entries, done));
    }

    /// Queues a truncation after `last_kept` (ordered with appends).
    pub fn truncate(&self, last_kept: u64, done: Done) {
        self.send(Msg::Truncate(last_kept, done));
    }

    /// Queues marking chunks up to `seqno` committed.
    pub fn commit(&self, seqno: u64, done: Done) {
        self.send(Msg::Commit(seqno, done));
    }

    /// Reads an entry (concurrently with writes).
    pub fn read(&self, seqno: u64) -> Result<Vec<u8>, StoreError> {
        lock(&self.store).read(seqno)
    }

    /// Last seqno appended (not necessarily durable yet).
    pub fn last_seqno(&self) -> u64 {
        lock(&self.store).last_seqno()
    }

    /// Counters.
    pub fn stats(&self) -> GroupCommitStats {
        *lock(&self.stats)
    }

    /// Stops the writer after the queued work.
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer(rx: Receiver<Msg>, store: Arc<Mutex<LedgerFiles>>, stats: Arc<Mutex<GroupCommitStats>>) {
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        // Take everything already queued: these share one sync.
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let mut waiting: Vec<(Done, Result<(), StoreError>)> = Vec::with_capacity(batch.len());
        let mut appended = 0u64;
        let mut s = lock(&store);
        for m in batch {
            match m {
                Msg::Append(entries, done) => {
                    let mut r = Ok(());
                    for (seqno, bytes, sig) in &entries {
                        r = s.append(*seqno, bytes, *sig);
                        if r.is_err() {
                            break;
                        }
                        appended += 1;
                    }
                    waiting.push((done, r));
                }
                Msg::Truncate(last_kept, done) => {
                    // Appends queued before the truncation become durable first.
                    let r = s.sync().and_then(|_| s.truncate(last_kept));
                    waiting.push((done, r));
                }
                Msg::Commit(seqno, done) => {
                    let r = s.sync().and_then(|_| s.commit(seqno));
                    waiting.push((done, r));
                }
                Msg::Stop => stop = true,
            }
        }
        let synced = s.sync();
        let durable = s.last_seqno();
        drop(s);
        {
            let mut st = lock(&stats);
            st.entries += appended;
            st.syncs += 1;
        }
        for (done, r) in waiting {
            let r = match (&synced, r) {
                (_, Err(e)) => Err(e),
                (Err(e), Ok(())) => Err(e.clone()),
                (Ok(()), Ok(())) => Ok(durable),
            };
            done(r);
        }
    }
}

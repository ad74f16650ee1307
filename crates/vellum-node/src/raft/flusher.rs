//! Group commit for the Raft log: appends write entries to the open chunk (under the engine
//! lock, without syncing) and hand their completion callback here; this thread makes
//! everything written so far durable with **one** `fdatasync`, run without the engine lock
//! (reads and further appends go on meanwhile), and only then completes every callback it
//! collected. A failed sync poisons the store and fails every callback, so openraft never
//! counts an entry as flushed that may not be on disk.
//!
//! **Deferred flushes.** A client sees a write Committed only once a signature transaction
//! after it is committed, so the primary's plain writes need not be synced on their own: an
//! append of writes only is *deferred* and made durable by the next sync, which the next
//! signature's append asks for within the signature interval (or [`MAX_DEFER`] passes). One
//! `fdatasync` per signature instead of one per batch of writes is fewer syncs and larger
//! apply batches, for the same client-visible durability. Entries a backup receives are never
//! deferred: the primary waits on their acknowledgement to send more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use vellum_ledger::engine::Engine;
use vellum_ledger::store::StoreError;

use super::types::TypeConfig;
use crate::lock;

/// Counters of the flusher.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Flush requests completed (one per log append call).
    pub requests: AtomicU64,
    /// `fdatasync` calls.
    pub syncs: AtomicU64,
}

/// The longest a deferred flush waits for a sync someone else asks for.
pub(crate) const MAX_DEFER: Duration = Duration::from_millis(20);

/// A flush request: its callback, and whether it may wait for the next sync.
type Request = (IOFlushed<TypeConfig>, bool);

pub(crate) struct Flusher {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) stats: Arc<FlushStats>,
}

impl Flusher {
    pub(crate) fn start(engine: Arc<Mutex<Engine>>) -> std::io::Result<Flusher> {
        let (tx, rx) = channel();
        let stats = Arc::new(FlushStats::default());
        let thread = std::thread::Builder::new()
            .name("ledger-flush".into())
            .spawn({
                let stats = stats.clone();
                move || run(rx, engine, stats)
            })?;
        Ok(Flusher {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Completes `callback` once everything appended before this call is durable: with the
    /// next sync if `defer` (at most [`MAX_DEFER`] later), else with a sync started now.
    pub(crate) fn flush(&self, callback: IOFlushed<TypeConfig>, defer: bool) {
        let Some(tx) = &self.tx else {
            callback.io_completed(Err(std::io::Error::other("ledger flusher stopped")));
            return;
        };
        if let Err(e) = tx.send((callback, defer)) {
            e.0.0
                .io_completed(Err(std::io::Error::other("ledger flusher stopped")));
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Request>, engine: Arc<Mutex<Engine>>, stats: Arc<FlushStats>) {
    let mut batch: Vec<IOFlushed<TypeConfig>> = Vec::new();
    // Set while `batch` holds only deferred requests: when to sync anyway.
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    while open {
        let next = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        let mut now = false;
        match next {
            Ok((cb, defer)) => {
                batch.push(cb);
                now |= !defer;
                while let Ok((cb, defer)) = rx.try_recv() {
                    batch.push(cb);
                    now |= !defer;
                }
            }
            Err(RecvTimeoutError::Timeout) => now = true,
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                now = true;
            }
        }
        if !now {
            deadline.get_or_insert_with(|| Instant::now() + MAX_DEFER);
            continue;
        }
        deadline = None;
        if batch.is_empty() {
            continue;
        }
        let result = sync_once(&engine, &stats);
        let n = batch.len() as u64;
        for cb in batch.drain(..) {
            cb.io_completed(result.clone().map_err(std::io::Error::other));
        }
        stats.requests.fetch_add(n, Ordering::Relaxed);
    }
}

fn sync_once(engine: &Mutex<Engine>, stats: &FlushStats) -> Result<(), String> {
    let handle = lock(engine).begin_sync().map_err(|e| e.to_string())?;
    if let Some(file) = handle {
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = file.sync_data() {
            let err = StoreError::Io {
                path: "open ledger chunk".into(),
                message: format!("fdatasync: {e}"),
            };
            let msg = err.to_string();
            lock(engine).sync_failed(err);
            tracing::error!(error = %msg, "ledger sync failed: no further writes will be acknowledged");
            return Err(msg);
        }
    }
    Ok(())
}

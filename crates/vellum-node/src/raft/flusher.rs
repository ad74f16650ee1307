//! Group commit for the Raft log: appends write entries to the open chunk (under the engine
//! lock, without syncing) and hand their completion callback here; this thread makes
//! everything written so far durable with **one** `fdatasync`, run without the engine lock
//! (reads and further appends go on meanwhile), and only then completes every callback it
//! collected. A failed sync poisons the store and fails every callback, so openraft never
//! counts an entry as flushed that may not be on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
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

pub(crate) struct Flusher {
    tx: Option<Sender<IOFlushed<TypeConfig>>>,
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

    /// Completes `callback` once everything appended before this call is durable.
    pub(crate) fn flush(&self, callback: IOFlushed<TypeConfig>) {
        let Some(tx) = &self.tx else {
            callback.io_completed(Err(std::io::Error::other("ledger flusher stopped")));
            return;
        };
        if let Err(e) = tx.send(callback) {
            e.0.io_completed(Err(std::io::Error::other("ledger flusher stopped")));
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

fn run(rx: Receiver<IOFlushed<TypeConfig>>, engine: Arc<Mutex<Engine>>, stats: Arc<FlushStats>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = sync_once(&engine, &stats);
        let n = batch.len() as u64;
        for cb in batch {
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

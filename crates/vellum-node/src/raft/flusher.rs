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
//! signature's append asks for within the signature interval (or 20 ms pass). One
//! `fdatasync` per signature instead of one per batch of writes is fewer syncs and larger
//! apply batches, for the same client-visible durability. Entries a backup receives are never
//! deferred: the primary waits on their acknowledgement to send more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::storage::IOFlushed;
use prometheus_client::metrics::histogram::Histogram;
use vellum_ledger::engine::{Engine, EngineError};
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

/// Flush requests waiting for the flusher thread. A queue under a mutex rather than a
/// channel, so that a deferred request does not wake the thread (a futex wake and a context
/// switch per append were ~5% of the node's CPU): only an urgent request, or the first one
/// of a batch (which starts the deadline), does.
struct Queue {
    waiting: Vec<IOFlushed<TypeConfig>>,
    /// Some waiting request may not be deferred.
    urgent: bool,
    /// When the oldest waiting request arrived (meaningful while `waiting` is not empty).
    since: Instant,
    /// False once the flusher is stopping.
    open: bool,
}

type WorkQueue = (Mutex<Queue>, Condvar);

pub(crate) struct Flusher {
    queue: Arc<WorkQueue>,
    thread: Option<JoinHandle<()>>,
    pub(crate) stats: Arc<FlushStats>,
}

impl Flusher {
    /// Starts the flusher thread; each sync's latency is observed in `sync_latency`.
    pub(crate) fn start(
        engine: Arc<Mutex<Engine>>,
        sync_latency: Histogram,
    ) -> std::io::Result<Flusher> {
        let queue = Arc::new((
            Mutex::new(Queue {
                waiting: Vec::new(),
                urgent: false,
                since: Instant::now(),
                open: true,
            }),
            Condvar::new(),
        ));
        let stats = Arc::new(FlushStats::default());
        let thread = std::thread::Builder::new()
            .name("ledger-flush".into())
            .spawn({
                let (queue, stats) = (queue.clone(), stats.clone());
                move || run(&queue, &engine, &stats, &sync_latency)
            })?;
        Ok(Flusher {
            queue,
            thread: Some(thread),
            stats,
        })
    }

    /// Completes `callback` once everything appended before this call is durable: with the
    /// next sync if `defer` (at most [`MAX_DEFER`] later), else with a sync started now.
    pub(crate) fn flush(&self, callback: IOFlushed<TypeConfig>, defer: bool) {
        let (queue, wake) = &*self.queue;
        let mut q = lock(queue);
        if !q.open {
            drop(q);
            callback.io_completed(Err(std::io::Error::other("ledger flusher stopped")));
            return;
        }
        let first = q.waiting.is_empty();
        q.waiting.push(callback);
        if first {
            q.since = Instant::now();
        }
        let notify = !defer && !q.urgent || first;
        q.urgent |= !defer;
        drop(q);
        if notify {
            wake.notify_one();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.queue.0).open = false;
        self.queue.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes the next batch: once a request is urgent, the oldest has waited [`MAX_DEFER`], or
/// the flusher is stopping (then every request left). `None` when stopped and drained.
fn next_batch((queue, wake): &WorkQueue) -> Option<Vec<IOFlushed<TypeConfig>>> {
    let mut q = lock(queue);
    loop {
        if q.waiting.is_empty() {
            if !q.open {
                return None;
            }
            q = wake
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        }
        let due = q.since + MAX_DEFER;
        let now = Instant::now();
        if q.urgent || !q.open || now >= due {
            q.urgent = false;
            return Some(std::mem::take(&mut q.waiting));
        }
        q = wake
            .wait_timeout(q, due - now)
            .map(|(q, _)| q)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn run(queue: &WorkQueue, engine: &Mutex<Engine>, stats: &FlushStats, latency: &Histogram) {
    while let Some(batch) = next_batch(queue) {
        let result = sync_once(engine, stats, latency);
        let n = batch.len() as u64;
        for cb in batch {
            cb.io_completed(result.clone().map_err(std::io::Error::other));
        }
        stats.requests.fetch_add(n, Ordering::Relaxed);
    }
}

fn sync_once(
    engine: &Mutex<Engine>,
    stats: &FlushStats,
    latency: &Histogram,
) -> Result<(), EngineError> {
    let handle = lock(engine).begin_sync()?;
    if let Some(file) = handle {
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let synced = file.sync_data();
        latency.observe(started.elapsed().as_secs_f64());
        if let Err(e) = synced {
            let err = StoreError::Io {
                path: "open ledger chunk".into(),
                message: format!("fdatasync: {e}"),
            };
            tracing::error!(error = %err, "ledger sync failed: no further writes will be acknowledged");
            lock(engine).sync_failed(err.clone());
            return Err(err.into());
        }
    }
    Ok(())
}

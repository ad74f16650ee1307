//! Retention: a node that archives its ledger ([`crate::archive`]) keeps only the chunks of
//! about the last N committed transactions on its disk (`--retain-transactions N`).
//!
//! A committed chunk is dropped once all of these hold: it ends N or more transactions below
//! the commit point; the archive holds it at the same size (asked of the archive itself, not
//! of the primary's archiver, so every node decides alone); the last checkpoint on disk covers
//! it and ends after it (a start then finds it from the checkpoint without reading it,
//! [`vellum_ledger::engine::Engine::open_dir_archived`]); it is not the first chunk (genesis:
//! the members and constitution the service started with); and it was not fetched back within
//! the last [`KEEP_FETCHED`]. Background checkpoints come every N/2 committed transactions
//! (at most every [`vellum_ledger::checkpoint::CHECKPOINT_EVERY`]), so the disk holds between
//! N and about 1.5 N transactions' chunks.
//!
//! A read that needs a dropped chunk (an entry, a receipt, a range, a follower catching up)
//! fails in the engine with `Absent`; the reader fetches the chunk from the archive, checks it
//! against what the node recorded (length, positions table, every entry's GCM tag and seqno)
//! and writes it back without the engine's lock ([`LedgerNode::fetching`]), then reads again.

use std::sync::Arc;
use std::time::Duration;

use super::LedgerNode;
use crate::NodeError;
use crate::archive::Archive;
use crate::raft::ledger::absent_chunk;

/// How often the node looks for chunks past its retention.
const TICK: Duration = Duration::from_secs(2);
/// A chunk fetched back stays on disk at least this long.
pub const KEEP_FETCHED: Duration = Duration::from_secs(300);
/// How many dropped chunks one read may fetch back (a page of a range spans a few at most).
const MAX_FETCHES: usize = 16;

/// Downloads the archived committed chunks that `ledger_dir` lacks after genesis's chunk and
/// before the newest chunk it holds (what a retention dropped), for a start that cannot find
/// them from a checkpoint; returns how many. The start then reads and checks every entry, as
/// without a checkpoint.
pub(crate) async fn restore_missing(
    archive: &Archive,
    ledger_dir: &std::path::Path,
) -> Result<usize, String> {
    let local = vellum_ledger::chunk::list_chunks(ledger_dir, false)
        .map_err(|e| format!("{}: {e}", ledger_dir.display()))?;
    let Some(genesis_end) = local
        .iter()
        .find(|(n, _)| n.start == 1)
        .and_then(|(n, _)| n.end)
    else {
        return Ok(0);
    };
    let newest = local.iter().map(|(n, _)| n.start).max().unwrap_or(0);
    let overlaps_local = |start: u64, end: u64| {
        local
            .iter()
            .any(|(n, _)| n.start <= end && n.end.is_none_or(|e| e >= start))
    };
    let mut restored = 0;
    for a in archive.list("ledger").await.map_err(|e| e.to_string())? {
        let Some(name) = vellum_ledger::chunk::ChunkName::parse(&a.name) else {
            continue;
        };
        let Some(end) = name.end else { continue };
        if !name.committed
            || name.start <= genesis_end
            || end >= newest
            || overlaps_local(name.start, end)
        {
            continue;
        }
        let bytes = archive
            .get("ledger", &a.name)
            .await
            .map_err(|e| format!("{}: {e}", a.name))?;
        let path = ledger_dir.join(name.file_name());
        tokio::task::spawn_blocking(move || vellum_ledger::files::write_durably(&path, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", a.name))?;
        restored += 1;
    }
    Ok(restored)
}

/// The background checkpoint interval for a retention of `retain` transactions.
pub(crate) fn checkpoint_every(retain: u64) -> u64 {
    (retain / 2).clamp(1, vellum_ledger::checkpoint::CHECKPOINT_EVERY)
}

impl LedgerNode {
    /// Runs `read`; when it needs a chunk this node dropped past its retention, fetches the
    /// chunk back from the archive and runs it again.
    pub async fn fetching<T>(
        &self,
        mut read: impl FnMut() -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        for _ in 0..MAX_FETCHES {
            let r = read();
            let chunk = match &r {
                Err(NodeError::Engine(e)) => absent_chunk(e).map(str::to_owned),
                _ => None,
            };
            match chunk {
                Some(chunk) => {
                    if let Err(f) = self.ledger.fetch_chunk(&chunk).await {
                        return Err(NodeError::Archive {
                            chunk,
                            message: f.to_string(),
                        });
                    }
                }
                None => return r,
            }
        }
        read()
    }

    /// Drops archived chunks past `retain` committed transactions from disk, every
    /// two seconds, until the node stops.
    pub async fn run_retention(self: Arc<Self>, archive: Archive, retain: u64) {
        static FAILED: crate::server::limits::Throttle =
            crate::server::limits::Throttle::new(Duration::from_secs(60));
        let mut stop = self.stop.subscribe();
        loop {
            if let Err(e) = self.drop_past_retention(&archive, retain).await
                && let Some(more) = FAILED.allow()
            {
                tracing::warn!(error = %e, suppressed = more, "retention: could not drop a chunk");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One round of [`LedgerNode::run_retention`]; returns how many chunks it dropped.
    pub(crate) async fn drop_past_retention(
        &self,
        archive: &Archive,
        retain: u64,
    ) -> Result<usize, String> {
        let committed = self.committed_seqno();
        let (chunks, covered) = {
            let e = self.ledger.engine();
            (e.committed_chunk_files(), e.checkpoint_seqno())
        };
        let dir = self.ledger_dir();
        let mut dropped = 0;
        for c in chunks.iter().skip(1) {
            if c.end.saturating_add(retain) > committed || c.end >= covered {
                break;
            }
            if !c.on_disk || self.ledger.fetched_within(&c.name, KEEP_FETCHED) {
                continue;
            }
            let local = std::fs::metadata(dir.join(&c.name))
                .map_err(|e| format!("{}: {e}", c.name))?
                .len();
            match archive.size("ledger", &c.name).await {
                Ok(Some(size)) if size == local => {}
                // Not archived yet (the primary copies every second): next round.
                Ok(_) => break,
                Err(e) => return Err(format!("asking the archive for {}: {e}", c.name)),
            }
            let freed = self
                .ledger
                .engine()
                .drop_chunk(&c.name)
                .map_err(|e| e.to_string())?;
            self.ledger.metrics().chunk_dropped();
            tracing::info!(
                chunk = %c.name,
                bytes = freed,
                "retention: dropped an archived chunk from disk"
            );
            dropped += 1;
        }
        Ok(dropped)
    }
}

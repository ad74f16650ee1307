//! Snapshots of the ledger's state in CCF's format ([`vellum_core::snapshot`]), written to
//! `DATA/snapshots/`.
//!
//! Every [`NodeConfig::snapshot_interval`](super::NodeConfig::snapshot_interval) committed
//! transactions the primary serialises the state of every map at the commit point S (a
//! signature), and records the snapshot's SHA-256 in an evidence transaction E
//! (`public:ccf.internal.snapshot_evidence`, the digest also its claims digest). Every node
//! that applies E builds the snapshot at S itself (the bytes are deterministic) and checks its
//! digest against E's; once E is committed, it appends E's COSE receipt and writes
//! `snapshot_S_E.committed` durably. CCF's `ccf.ledger.Snapshot` opens and verifies such a
//! file; so does [`vellum_core::snapshot::Snapshot::decode`].
//!
//! The state is built by replaying committed write sets from the last snapshot (kept in
//! memory, or read back from the newest file at start), off the async threads and a few
//! hundred transactions per engine lock. An evidence transaction applied just before a crash
//! whose snapshot was not yet written is not taken again; the next interval writes one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, MapWrites, SINGLETON_KEY};
use vellum_core::hash::Hash;
use vellum_core::snapshot::{self, EVIDENCE_TABLE, State};

use super::LedgerNode;
use crate::lock;
use crate::raft::ledger::Ledger;

/// How many committed snapshots a node keeps.
pub const KEEP: usize = 2;
/// Transactions replayed per hold of the engine's lock.
const BATCH: u64 = 256;
/// How often the snapshotter looks at the commit point.
const TICK: Duration = Duration::from_millis(100);
/// How long it waits after a failure.
const RETRY: Duration = Duration::from_secs(10);

/// The snapshotter's memory: the state at the last snapshot, and the snapshots in flight.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The state as of `state.seqno` (`None` until first needed: read from the newest file).
    state: Option<State>,
    /// Snapshots built and waiting for their evidence to commit: (S, bytes).
    built: Vec<(u64, Vec<u8>)>,
    /// Evidence applied and not yet written: (E, S, digest).
    evidence: Vec<(u64, u64, Hash)>,
    /// The S of the last snapshot proposed by this node as primary.
    proposed: u64,
}

impl Snapshots {
    /// The state machine applied an evidence transaction at `seqno` writing `m`.
    pub(crate) fn evidence_applied(&self, seqno: u64, m: &MapWrites) {
        let Some(v) = m.get(&SINGLETON_KEY) else {
            return;
        };
        let parsed: Option<(u64, Hash)> = serde_json::from_slice::<serde_json::Value>(v)
            .ok()
            .and_then(|j| {
                let s = j["version"].as_u64()?;
                let h = Hash::from_hex(j["hash"].as_str()?).ok()?;
                Some((s, h))
            });
        match parsed {
            Some((s, h)) => lock(&self.inner).evidence.push((seqno, s, h)),
            None => tracing::warn!(seqno, "snapshot evidence that is not {{hash, version}}"),
        }
    }
}

/// The snapshot directory of a data directory.
pub fn dir(data_root: &Path) -> PathBuf {
    data_root.join("snapshots")
}

/// Committed snapshot files in `dir`, newest first: (S, E, path).
pub fn committed(dir: &Path) -> Vec<(u64, u64, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (s, ev) = snapshot::parse_committed_name(&name)?;
            Some((s, ev, e.path()))
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out
}

impl LedgerNode {
    /// Runs the snapshotter until the node stops (see the module documentation); nothing if
    /// snapshots are off.
    pub(crate) async fn run_snapshots(self: Arc<Self>) {
        if self.snapshot_interval == 0 {
            return;
        }
        static FAILED: crate::server::limits::Throttle =
            crate::server::limits::Throttle::new(Duration::from_secs(60));
        let mut stop = self.stop.subscribe();
        loop {
            let mut wait = TICK;
            if let Err(e) = self.snapshot_round().await {
                if let Some(more) = FAILED.allow() {
                    tracing::warn!(error = %e, suppressed = more, "snapshot not taken");
                }
                // An I/O error or a state that cannot be rebuilt: start afresh, a while later
                // (a rebuild replays the ledger: never in a tight loop).
                lock(&self.snapshots.inner).state = None;
                wait = RETRY;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn snapshot_round(self: &Arc<Self>) -> Result<(), String> {
        let committed = self.committed_seqno();
        // As primary: time for a snapshot at the commit point?
        let last = {
            let i = lock(&self.snapshots.inner);
            i.proposed.max(self.newest_snapshot())
        };
        if self.is_primary()
            && committed >= last + self.snapshot_interval
            && self
                .ledger
                .engine()
                .signatures()
                .binary_search(&committed)
                .is_ok()
        {
            let started = std::time::Instant::now();
            let bytes = self.build_snapshot(committed).await?;
            let built_ms = started.elapsed().as_millis();
            let size = bytes.len();
            let digest = Hash::digest(&bytes);
            {
                let mut i = lock(&self.snapshots.inner);
                i.proposed = committed;
                i.built.retain(|(s, _)| *s > last);
                i.built.push((committed, bytes));
            }
            let ws = EntryBuilder {
                flags: 0,
                claims_digest: digest,
                maps: vec![MapWrites::with_writes(
                    EVIDENCE_TABLE,
                    vec![(
                        SINGLETON_KEY.to_vec(),
                        snapshot::evidence_json(&digest, committed),
                    )],
                )],
            };
            let e = self.write_local(ws).await.map_err(|e| e.to_string())?;
            tracing::info!(seqno = committed, evidence = %e, bytes = size, built_ms, digest = %digest.to_hex(), "snapshot taken; its evidence is written");
        }
        // Evidence applied: build what is not built, write what is committed.
        let pending: Vec<(u64, u64, Hash)> = lock(&self.snapshots.inner).evidence.clone();
        for (e, s, digest) in pending {
            if s <= self.newest_snapshot() {
                lock(&self.snapshots.inner).evidence.retain(|x| x.0 != e);
                continue;
            }
            let have = lock(&self.snapshots.inner)
                .built
                .iter()
                .find(|(b, _)| *b == s)
                .map(|(_, bytes)| bytes.clone());
            let bytes = match have {
                Some(b) => b,
                None => match self.build_snapshot(s).await {
                    Ok(b) => {
                        lock(&self.snapshots.inner).built.push((s, b.clone()));
                        b
                    }
                    Err(err) => {
                        // This evidence is given up (the next interval takes another).
                        lock(&self.snapshots.inner).evidence.retain(|x| x.0 != e);
                        return Err(format!("the snapshot at {s}: {err}"));
                    }
                },
            };
            if Hash::digest(&bytes) != digest {
                lock(&self.snapshots.inner).evidence.retain(|x| x.0 != e);
                return Err(format!(
                    "the snapshot at {s} this node built does not have the digest its evidence at {e} records"
                ));
            }
            if self.committed_seqno() < e {
                continue;
            }
            let receipt = match self.receipt(self.txid_at(e)?) {
                Ok(r) => r,
                Err(crate::NodeError::ReceiptNotReady(_)) => continue,
                Err(err) => return Err(err.to_string()),
            };
            let cose = receipt
                .cose
                .ok_or("the evidence's signature has no COSE signature")?;
            let mut file = bytes;
            file.extend_from_slice(&cose);
            let dir = dir(&self.data.root);
            let name = snapshot::committed_name(s, e);
            tokio::task::spawn_blocking({
                let dir = dir.clone();
                let name = name.clone();
                move || write_snapshot(&dir, &name, &file)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("writing {name}: {e}"))?;
            tracing::info!(seqno = s, evidence = e, file = %name, "snapshot committed");
            let mut i = lock(&self.snapshots.inner);
            i.evidence.retain(|x| x.0 != e);
            i.built.retain(|(b, _)| *b > s);
        }
        Ok(())
    }

    /// The S of the newest committed snapshot file (0: none).
    fn newest_snapshot(&self) -> u64 {
        committed(&dir(&self.data.root))
            .first()
            .map_or(0, |(s, _, _)| *s)
    }

    fn txid_at(&self, seqno: u64) -> Result<TxId, String> {
        self.ledger
            .engine()
            .view_at(seqno)
            .map(|v| TxId::new(v, seqno))
            .ok_or_else(|| format!("no transaction {seqno}"))
    }

    /// The snapshot entry at `seqno` (committed): the state replayed up to it from the last
    /// one kept, serialised.
    async fn build_snapshot(self: &Arc<Self>, seqno: u64) -> Result<Vec<u8>, String> {
        let start = lock(&self.snapshots.inner).state.take();
        let start = match start {
            Some(s) if s.seqno <= seqno => s,
            _ => self.state_from_files(seqno)?,
        };
        // Chunks dropped past the retention that the replay reads come back first.
        let absent: Vec<String> = self
            .ledger
            .engine()
            .committed_chunk_files()
            .into_iter()
            .filter(|c| !c.on_disk && c.end > start.seqno && c.start <= seqno)
            .map(|c| c.name)
            .collect();
        for name in absent {
            self.ledger
                .fetch_chunk(&name)
                .await
                .map_err(|e| format!("fetching {name} back: {e}"))?;
        }
        let ledger = self.ledger.clone();
        let (state, bytes) = tokio::task::spawn_blocking(move || replay(&ledger, start, seqno))
            .await
            .map_err(|e| e.to_string())??;
        lock(&self.snapshots.inner).state = Some(state);
        Ok(bytes)
    }

    /// The state of the newest committed snapshot file at or below `seqno`, or the empty state.
    fn state_from_files(&self, seqno: u64) -> Result<State, String> {
        let secrets = self.ledger_secrets();
        for (s, _, path) in committed(&dir(&self.data.root)) {
            if s > seqno {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            return snapshot::Snapshot::decode(&bytes, secrets.at(s))
                .map(|snap| snap.state)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        Ok(State::default())
    }
}

/// Replays committed transactions `start.seqno + 1..=seqno` onto `start` and serialises it.
fn replay(ledger: &Ledger, mut state: State, seqno: u64) -> Result<(State, Vec<u8>), String> {
    let mut next = state.seqno + 1;
    while next <= seqno {
        let end = (next + BATCH - 1).min(seqno);
        let engine = ledger.engine();
        for s in next..=end {
            let (_, ws) = engine.write_set(s).map_err(|e| e.to_string())?;
            state.apply(s, &ws.maps);
        }
        drop(engine);
        next = end + 1;
    }
    let engine = ledger.engine();
    let view = engine
        .view_at(seqno)
        .ok_or_else(|| format!("no transaction {seqno}"))?;
    let root = engine.root_at(seqno).map_err(|e| e.to_string())?;
    let history = engine.view_history(seqno);
    let secret = engine.keys().secrets.at(seqno).clone();
    drop(engine);
    let bytes = state.encode(TxId::new(view, seqno), &root, &history, &secret);
    Ok((state, bytes))
}

/// Writes `name` in `dir` durably (a temporary file, synced, renamed, the directory synced)
/// and keeps the newest [`KEEP`] committed snapshots.
fn write_snapshot(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    vellum_ledger::files::write_durably(&dir.join(name), bytes)?;
    for (_, _, old) in committed(dir).into_iter().skip(KEEP) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

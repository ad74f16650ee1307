//! A node joining a service starts from a snapshot, not from the first transaction.
//!
//! Once admitted, the joining node asks the node that admitted it for:
//! 1. a **checkpoint** of its committed chunks as they stand (`GET /node/ledger/checkpoint`:
//!    the Merkle tree, view runs and signature seqnos up to C, the end of the last committed
//!    chunk; its MAC is keyed by the ledger secret the node just received);
//! 2. the newest committed **snapshot** at or below C (`GET /node/snapshot?upto=C`), S: the
//!    state of every map at S, in CCF's format;
//! 3. the **chunks** that hold S+1..=C, and genesis's chunk (openraft reads the first entry at
//!    every start).
//!
//! It opens its ledger from the checkpoint, with every other chunk absent (fetched from the
//! archive or another node when a read needs it, as after a retention drop), and seeds its
//! index at S from the snapshot: every collection's latest entry, the application maps, users,
//! governance, cluster and membership ([`crate::raft::state_machine::seed_index`]). Raft then
//! applies S+1..=C from the chunks it received and replicates what follows C, as to any
//! follower. The rows of transactions 1..S come last, in the background
//! ([`LedgerNode::run_backfill`]): until then a range query over them answers 503
//! `IndexLoading`; reads by transaction id and receipts need only the ledger and are served
//! from the start.
//!
//! Trust: the joining node already trusts the node it joins through with the service's
//! secrets. What it receives is checked anyway: the checkpoint's MAC, the snapshot's GCM tag
//! (private maps sealed under the ledger secret) and its seqno, each chunk's length and
//! positions table against the checkpoint, each entry's GCM tag as it is read, and the tree
//! against the last covered entry and the root its signature signs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vellum_core::entry::LedgerSecrets;
use vellum_ledger::checkpoint::Checkpoint;
use vellum_ledger::chunk::ChunkName;

use super::LedgerNode;
use crate::NodeError;
use crate::raft::ledger::absent_chunk;

/// In the data directory of a node that started from a snapshot: the snapshot's seqno. Its
/// ledger then lacks chunks by design (it opens as an archiving node's does).
pub(crate) const MARKER: &str = "started_from_snapshot";

/// Where a joining node puts what it fetches until it has it all.
pub(crate) const FETCHING: &str = "ledger.fetching";

/// How long the joining node waits for the node it joined through to recognise its
/// certificate (the admission must be applied there).
const RECOGNISED_WITHIN: Duration = Duration::from_secs(30);

/// Transactions indexed per batch of the backfill (one durable index write each).
const BACKFILL_BATCH: u64 = 4096;
/// The least pause between two batches; the pause is as long as the batch took, so the
/// backfill takes at most half of a core from the node's own work.
const BACKFILL_PAUSE: Duration = Duration::from_millis(5);

/// Whether the node in `data_root` started from a snapshot.
pub(crate) fn started_from_snapshot(data_root: &Path) -> bool {
    data_root.join(MARKER).exists()
}

impl LedgerNode {
    /// A checkpoint of the committed chunks as they stand: (its seqno, its bytes).
    pub(crate) async fn checkpoint_now(&self) -> Result<Option<(u64, Vec<u8>)>, NodeError> {
        let (cp, secret) = {
            let engine = self.ledger.engine();
            (
                engine.checkpoint_now()?,
                engine.keys().secrets.first().clone(),
            )
        };
        let Some(cp) = cp else {
            return Ok(None);
        };
        let seqno = cp.seqno;
        // Outside the engine's lock: the MAC covers the whole file (under a megabyte at ten
        // million transactions).
        let bytes = cp.encode(&secret);
        Ok(Some((seqno, bytes)))
    }

    /// Indexes the transactions before the snapshot the node started from, oldest first, a
    /// batch at a time, fetching the chunks it lacks; returns when done or when the node stops.
    pub(crate) async fn run_backfill(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let started = std::time::Instant::now();
        let mut first = None;
        loop {
            let gap = match self.index.gap() {
                Ok(Some(g)) => g,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the index backfill stopped");
                    return;
                }
            };
            first.get_or_insert(gap);
            let (from, to) = (gap.0, gap.1.min(gap.0 + BACKFILL_BATCH - 1));
            let batch = std::time::Instant::now();
            let pause = match self.backfill_batch(from, to).await {
                // At most half of a core: the node's own work comes first.
                Ok(()) => batch.elapsed().max(BACKFILL_PAUSE),
                Err(e) => {
                    tracing::warn!(from, to, error = %e, "indexing older transactions failed; retrying");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if let Some((from, to)) = first {
            tracing::info!(
                transactions = to - from + 1,
                secs = started.elapsed().as_secs_f64(),
                "indexed the transactions before the snapshot this node started from"
            );
        }
    }

    /// Indexes transactions `from..=to` (in the gap): those up to the first one in a chunk
    /// this node lacks, then fetches that chunk (the next batch goes on from there).
    async fn backfill_batch(&self, from: u64, to: u64) -> Result<(), NodeError> {
        let failed = |e: tokio::task::JoinError| {
            NodeError::Index(vellum_ledger::index::IndexError::Store(e.to_string()))
        };
        let ledger = self.ledger.clone();
        // Off the async threads, the engine's lock taken per entry: appends go on between.
        let (txs, stopped) = tokio::task::spawn_blocking(move || {
            let mut txs = Vec::new();
            for s in from..=to {
                let read = ledger.engine().write_set(s);
                match read {
                    Ok((txid, ws)) => txs.push(vellum_ledger::index::IndexedTx::from_maps(
                        s, txid.view, &ws.maps,
                    )),
                    Err(e) => return (txs, Some(e)),
                }
            }
            (txs, None)
        })
        .await
        .map_err(failed)?;
        if !txs.is_empty() {
            let index = self.index.clone();
            tokio::task::spawn_blocking(move || index.backfill(&txs))
                .await
                .map_err(failed)??;
        }
        match stopped {
            None => Ok(()),
            Some(e) => match absent_chunk(&e) {
                Some(chunk) => {
                    self.ledger
                        .fetch_chunk(chunk)
                        .await
                        .map_err(|f| NodeError::Archive {
                            chunk: chunk.to_owned(),
                            message: f.to_string(),
                        })
                }
                None => Err(e.into()),
            },
        }
    }
}

/// What a joining node fetched to start from a snapshot.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The snapshot's seqno.
    pub snapshot: u64,
    /// The checkpoint's.
    pub checkpoint: u64,
    /// Chunks downloaded.
    pub chunks: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// Fetches what a node admitted through `endpoint` needs to start from a snapshot (see the
/// module documentation) into the data directory `root`, already provisioned. `Ok(None)`: the
/// service has no snapshot to start from (the node receives the whole ledger through Raft).
pub(crate) async fn fetch_start(
    endpoint: &str,
    identity_pem: &str,
    service_cert_pem: &str,
    root: &Path,
    secrets: &LedgerSecrets,
) -> Result<Option<Fetched>, String> {
    crate::server::tls::provider();
    let endpoint = endpoint.trim_end_matches('/');
    let identity = reqwest::Identity::from_pem(identity_pem.as_bytes())
        .map_err(|e| format!("the node's identity: {e}"))?;
    let ca = reqwest::Certificate::from_pem(service_cert_pem.as_bytes())
        .map_err(|e| format!("the service certificate: {e}"))?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let get = |path: String| {
        let client = client.clone();
        async move {
            let url = format!("{endpoint}{path}");
            let deadline = std::time::Instant::now() + RECOGNISED_WITHIN;
            loop {
                let resp = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let status = resp.status();
                let name = resp
                    .headers()
                    .get("x-vellum-snapshot")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                if status.is_success() {
                    return Ok(Some((body.to_vec(), name)));
                }
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                // Until the admission is applied there, the node is not recognised yet.
                let retry = matches!(status.as_u16(), 401 | 403 | 503);
                if !retry || std::time::Instant::now() > deadline {
                    return Err(format!(
                        "{url}: {status}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let Some((cp_bytes, _)) = get("/node/ledger/checkpoint".into()).await? else {
        return Ok(None);
    };
    let cp = Checkpoint::decode(&cp_bytes, secrets.first())
        .map_err(|e| format!("the checkpoint received: {e}"))?;
    let Some((snap_bytes, snap_name)) = get(format!("/node/snapshot?upto={}", cp.seqno)).await?
    else {
        return Ok(None);
    };
    let snap_name = snap_name.ok_or("the snapshot came without its name")?;
    let (s, e) = vellum_core::snapshot::parse_committed_name(&snap_name)
        .ok_or_else(|| format!("{snap_name:?} is not a committed snapshot name"))?;
    let snap = vellum_core::snapshot::Snapshot::decode(&snap_bytes, secrets.at(s))
        .map_err(|err| format!("{snap_name}: {err}"))?;
    if snap.txid.seqno != s || s > cp.seqno || e <= s {
        return Err(format!(
            "{snap_name} holds seqno {} (the checkpoint ends at {})",
            snap.txid.seqno, cp.seqno
        ));
    }
    // Genesis's chunk, and those holding S+1..=C (the one ending at C binds the tree).
    let wanted: Vec<_> = cp
        .chunks
        .iter()
        .filter(|c| {
            ChunkName::parse(&c.name).is_some_and(|n| {
                n.start == 1 || n.end.is_some_and(|end| end > s || end == cp.seqno)
            })
        })
        .cloned()
        .collect();
    // Everything goes to a directory of its own, renamed into place once complete: a crash
    // half-way leaves no ledger with holes, only a directory the next start removes.
    let ledger = root.join(FETCHING);
    let _ = std::fs::remove_dir_all(&ledger);
    vellum_ledger::files::create_private_dir(&ledger).map_err(|e| e.to_string())?;
    let mut bytes = (cp_bytes.len() + snap_bytes.len()) as u64;
    for c in &wanted {
        let Some((chunk, _)) = get(format!("/node/ledger/chunk/{}", c.name)).await? else {
            return Err(format!("{endpoint} no longer holds {}", c.name));
        };
        if chunk.len() as u64 != c.len {
            return Err(format!(
                "{} is {} bytes; the checkpoint says {}",
                c.name,
                chunk.len(),
                c.len
            ));
        }
        bytes += chunk.len() as u64;
        let path = ledger.join(&c.name);
        tokio::task::spawn_blocking(move || vellum_ledger::files::write_durably(&path, &chunk))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", c.name))?;
    }
    let snapshots = super::snapshots::dir(root);
    vellum_ledger::files::create_private_dir(&snapshots).map_err(|e| e.to_string())?;
    vellum_ledger::files::write_durably(&snapshots.join(&snap_name), &snap_bytes)
        .map_err(|e| format!("{snap_name}: {e}"))?;
    Checkpoint::write(&ledger, &cp_bytes).map_err(|e| e.to_string())?;
    // The marker before the ledger: a ledger with a checkpoint and absent chunks is only
    // opened as one that lacks them by design.
    vellum_ledger::files::write_durably(&root.join(MARKER), s.to_string().as_bytes())
        .map_err(|e| format!("{MARKER}: {e}"))?;
    let _ = std::fs::remove_dir(root.join("ledger")); // empty, if there at all
    std::fs::rename(&ledger, root.join("ledger")).map_err(|e| format!("{FETCHING}: {e}"))?;
    // The last step that can fail is the rename: past it the ledger is in place.
    if let Err(e) = std::fs::File::open(root).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %root.display(), error = %e, "syncing the data directory");
    }
    Ok(Some(Fetched {
        snapshot: s,
        checkpoint: cp.seqno,
        chunks: wanted.len(),
        bytes,
    }))
}

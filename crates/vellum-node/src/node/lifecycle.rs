//! A node's life: opening the data directory, the ledger and the index, starting Raft, the
//! signer and the reconciler, completing the start, and stopping gracefully.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use vellum_core::entry::EntryBuilder;
use vellum_ledger::engine::Engine;
use vellum_ledger::genesis::service_info;
use vellum_ledger::index::Index;
use vellum_ledger::live_index::LiveIndex;

use super::admission::reconciler;
use super::{LedgerNode, NodeConfig, Startup};
use crate::datadir::DataDir;
use crate::raft::Raft;
use crate::raft::flusher::FlushStats;
use crate::raft::ledger::Ledger;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerClient, PeerNetworkFactory};
use crate::raft::state_machine::{CommitState, CommitWaiters, StateMachine};
use crate::raft::types::{Node, Tx};
use crate::signing::{Proposer, SignaturePolicy};
use crate::{DataDirError, NodeError, RaftFailure, RaftStep, Stopped};

impl LedgerNode {
    /// Starts a node: provisions the data directory on first start, recovers the ledger, starts
    /// Raft (initialising a single-node service on first start) and waits until its state
    /// machine has recovered.
    pub async fn start(cfg: NodeConfig) -> Result<LedgerNode, NodeError> {
        let node = LedgerNode::open(cfg).await?;
        node.ready().await?;
        Ok(node)
    }

    /// Starts a node without waiting for its state machine to recover: the node channel can
    /// then be served (a node catching up with a cluster receives the ledger through it) before
    /// [`LedgerNode::ready`] completes.
    pub async fn open(cfg: NodeConfig) -> Result<LedgerNode, NodeError> {
        cfg.validate_with_archive()?;
        let data = DataDir::open_or_create(
            &cfg.data_dir,
            &cfg.bootstrap,
            cfg.seal.as_ref(),
            cfg.service_key_token.as_ref(),
        )?;
        let chunk_size = data.chunk_size.unwrap_or(cfg.chunk_size);
        // A node that started from a snapshot lacks older chunks by design, as one whose
        // retention dropped them does: both open with them absent.
        // What a join fetched before a crash stopped it: the ledger starts empty instead.
        let _ = std::fs::remove_dir_all(data.root.join(super::from_snapshot::FETCHING));
        let from_snapshot = super::from_snapshot::started_from_snapshot(&data.root);
        let archived = cfg.archive.is_some() || from_snapshot;
        let mut engine = match (open_ledger(&data, chunk_size, archived), &cfg.archive) {
            (Ok(engine), _) => engine,
            // Chunks dropped past a retention, and no checkpoint to find them from: bring them
            // back from the archive and read the ledger whole (every entry checked again).
            (Err(e), Some(archive)) => {
                tracing::warn!(error = %e, "the ledger does not open as it is; fetching the chunks it lacks from the archive");
                let restored = super::retention::restore_missing(archive, &data.ledger_dir())
                    .await
                    .map_err(|m| NodeError::Archive {
                        chunk: "the ledger's missing chunks".into(),
                        message: m,
                    })?;
                if restored == 0 {
                    return Err(e);
                }
                tracing::info!(
                    chunks = restored,
                    "fetched the ledger's missing chunks from the archive"
                );
                open_ledger(&data, chunk_size, true)?
            }
            (Err(e), None) => return Err(e),
        };
        if let Some(retain) = cfg.retain_transactions {
            engine.set_checkpoint_every(super::retention::checkpoint_every(retain));
        }
        // A rotation this node took whose transaction did not survive a crash is undone.
        let identity = Arc::new(crate::identity::LiveIdentity::new(
            crate::rekey::startup_identity(&data, &mut engine)?,
        ));
        let fresh = engine.last_seqno() == 0;
        // A new service starts with its genesis; a node that joined one waits for the ledger.
        let founding = fresh && data.genesis.is_some();
        if !fresh {
            data.genesis_written()?;
        }
        let (index, commit, seeded) = open_index(&data, &engine, from_snapshot)?;
        let mut scripts = crate::scripts::Scripts::start()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .map_err(DataDirError::open("the JavaScript worker"))?;
        let metrics = Arc::new(crate::metrics::NodeMetrics::new());
        scripts.runs = metrics.js_runs.clone();
        let ledger = Arc::new(
            Ledger::new(engine, metrics).map_err(DataDirError::open("the ledger flusher"))?,
        );
        if let Some(a) = &cfg.archive {
            ledger.set_archive(a.clone());
        }
        let signing = Arc::new(SignaturePolicy::new(
            cfg.signature_interval,
            cfg.signature_delay,
        ));
        let collections = index.collections()?;
        let index = Arc::new(LiveIndex::start(index)?);
        let (commit_tx, commit_rx) = tokio::sync::watch::channel(commit);
        let waiters = Arc::new(CommitWaiters::new(commit.committed));
        let snapshots = Arc::new(super::snapshots::Snapshots::default());
        let sm = StateMachine::new(
            ledger.clone(),
            index.clone(),
            collections,
            commit_tx,
            waiters.clone(),
            snapshots.clone(),
        )
        .map_err(DataDirError::open("the state machine"))?;
        let state = sm.state();
        let store = LogStore::new(
            ledger.clone(),
            signing.clone(),
            data.vote_path(),
            data.genesis.clone(),
            crate::rekey::Rekeying {
                node_id: data.node_id.clone(),
                node_key: data.keys.node_key.clone(),
                file: data.secrets_file(),
                identity: identity.clone(),
            },
        )
        .map_err(DataDirError::open("the Raft log"))?;
        let peers = PeerClient::new(identity.clone(), &data.node_key_pem)?;
        let raft = Raft::new(
            data.raft_id,
            Arc::new(raft_config()?),
            PeerNetworkFactory::new(peers.clone()),
            store,
            sm,
        )
        .await
        .map_err(|e| RaftFailure::new(RaftStep::Start, e))?;
        ledger.set_peers(crate::raft::ledger::PeerChunks {
            client: peers.clone(),
            addresses: Box::new({
                let (raft, me) = (raft.clone(), data.raft_id);
                move || {
                    let m = raft.metrics();
                    let m = m.borrow_watched();
                    m.membership_config
                        .membership()
                        .nodes()
                        .filter(|(id, _)| **id != me)
                        .map(|(_, n)| n.addr.clone())
                        .collect()
                }
            }),
        });
        let voters = join_or_found(&raft, founding, data.raft_id, &cfg.advertise).await?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let signer = tokio::task::spawn_blocking({
            let proposer = RaftProposer {
                rt: tokio::runtime::Handle::current(),
                raft: raft.clone(),
                me: data.raft_id,
                stop: stop_rx,
            };
            let (signing, ledger) = (signing.clone(), ledger.clone());
            move || signing.run(&ledger, &proposer)
        });
        let reconciler = tokio::spawn(reconciler(
            raft.clone(),
            state.clone(),
            data.raft_id,
            stop.subscribe(),
        ));
        Ok(LedgerNode {
            raft,
            ledger,
            signing,
            state,
            index,
            commit: commit_rx,
            waiters,
            raft_id: data.raft_id,
            data,
            identity,
            stop,
            signer,
            reconciler,
            peers,
            chunk_size,
            max_collections: cfg.max_collections,
            snapshot_interval: cfg.snapshot_interval,
            snapshots,
            archive: std::sync::OnceLock::new(),
            join_lock: tokio::sync::Mutex::new(()),
            scripts,
            startup: Startup {
                founding,
                // A node seeded from a snapshot has yet to hear from the service, as a new one.
                fresh: fresh || seeded,
                voters,
            },
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Completes the start: waits until the state machine holds at least what it held before
    /// a restart (the index is not synced on every apply; Raft re-applies what it lost), and
    /// opens a new service. Waiting for recovery needs a primary: a cluster node that cannot
    /// reach one serves what it has (the status of each transaction says how final it is).
    pub async fn ready(&self) -> Result<(), NodeError> {
        let Startup {
            founding,
            fresh,
            voters,
        } = self.startup;
        if let Err(e) = self
            .raft
            .wait_for_recovery(Some(Duration::from_secs(30)))
            .await
        {
            if voters <= 1 && !fresh {
                return Err(RaftFailure::new(RaftStep::Recover, e).into());
            }
            tracing::warn!(error = %e, "serving before the state machine caught up with the cluster");
        }
        if founding {
            // Genesis went in with the initial membership (status Opening); open the service.
            let ws = EntryBuilder::default().map(service_info(
                &self.identity.get().service_cert_pem,
                vellum_core::tables::ServiceStatus::Open,
            ));
            let t = self.write_local(ws).await?;
            self.wait_committed(t, Duration::from_secs(30)).await?;
            self.data.genesis_written()?;
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether [`LedgerNode::ready`] has completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The Raft handle (for the node channel's handlers).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The service certificate (PEM) now.
    pub fn service_cert_pem(&self) -> String {
        self.identity.get().service_cert_pem.clone()
    }

    /// The service identity now (a rotation replaces it while the node runs).
    pub fn identity(&self) -> &Arc<crate::identity::LiveIdentity> {
        &self.identity
    }

    /// This node's key (PKCS#8 PEM), as the data directory holds it (unsealed if sealed): its
    /// TLS key.
    pub fn node_key_pem(&self) -> &str {
        &self.data.node_key_pem
    }

    /// This node's CCF node id.
    pub fn node_id(&self) -> &str {
        &self.data.node_id
    }

    pub(super) fn stop_reason(&self) -> Stopped {
        self.ledger
            .engine()
            .poisoned()
            .map_or(Stopped::ShutDown, |why| {
                Stopped::LedgerFailed(why.to_owned())
            })
    }

    /// Why the node refuses writes, if it does (an I/O error poisoned its ledger).
    pub fn write_error(&self) -> Option<String> {
        self.ledger.engine().poisoned().map(str::to_owned)
    }

    /// Group-commit counters.
    pub fn flush_stats(&self) -> (u64, u64) {
        let s: &FlushStats = self.ledger.flush_stats();
        (
            s.requests.load(Ordering::Relaxed),
            s.syncs.load(Ordering::Relaxed),
        )
    }

    /// The data directory.
    pub fn data_root(&self) -> &std::path::Path {
        &self.data.root
    }

    /// Records where the archiver reports its progress (shown by the health and metrics).
    pub fn set_archive_progress(&self, p: Arc<crate::archive::ArchiveProgress>) {
        let _ = self.archive.set(p);
    }

    /// The ledger directory.
    pub fn ledger_dir(&self) -> PathBuf {
        self.data.ledger_dir()
    }

    /// The latest ledger secret (the one the ledger is sealed under from now on).
    pub fn ledger_secret(&self) -> vellum_core::entry::LedgerSecret {
        self.ledger.engine().keys().secrets.latest().clone()
    }

    /// Every ledger secret, with the seqno each applies from.
    pub fn ledger_secrets(&self) -> vellum_core::entry::LedgerSecrets {
        self.ledger.engine().keys().secrets.clone()
    }

    /// Whether this node is the primary.
    pub fn is_primary(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.raft_id)
    }

    /// Stops the node gracefully. A primary first signs what is unsigned and waits (up to five
    /// seconds) until that signature commits; then the signer and Raft stop, a ledger that ends
    /// on a committed signature gets its open chunk closed and marked committed (so offline
    /// auditors see every transaction), a checkpoint of the committed chunks is written (the
    /// next start reads only what it does not cover), and the index is made durable.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        if self.is_primary() && self.write_error().is_none() {
            let target = self.ledger.last_seqno();
            if self.ledger.unsigned() > 0 {
                self.signing.proposing();
                let _ = self
                    .raft
                    .client_write_ff(Tx::Sign, None::<crate::raft::types::QuietResponder<_>>)
                    .await;
            }
            let mut rx = self.commit.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                rx.wait_for(|c| c.committed > target || (c.committed == target && target > 0)),
            )
            .await;
        }
        let alone = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .count()
            <= 1;
        let _ = self.stop.send(true);
        self.signing.stop();
        let _ = self.signer.await;
        let _ = self.reconciler.await;
        self.raft
            .shutdown()
            .await
            .map_err(|e| RaftFailure::new(RaftStep::Shutdown, e))?;
        let committed = self.commit.borrow().committed;
        {
            let mut engine = self.ledger.engine();
            // Only a node alone may close its chunk early: in a cluster every node closes chunks
            // at the same seqnos, so that committed chunks are identical on all of them.
            if alone
                && engine.poisoned().is_none()
                && engine.last_signature() == Some(engine.last_seqno())
                && committed == engine.last_seqno()
            {
                engine.close_chunk()?;
                engine.commit(committed)?;
            }
            // The next start reads only what this checkpoint does not cover.
            if engine.poisoned().is_none() {
                let started = std::time::Instant::now();
                match engine.write_checkpoint() {
                    Ok(seqno) => tracing::info!(
                        ?seqno,
                        ms = started.elapsed().as_millis() as u64,
                        "wrote the ledger checkpoint"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not write the ledger checkpoint"),
                }
            }
        }
        self.index.flush()?;
        Ok(())
    }
}

/// Opens (recovering, after an unclean stop) the ledger in `data`.
fn open_ledger(data: &DataDir, chunk_size: u64, archived: bool) -> Result<Engine, NodeError> {
    let started = std::time::Instant::now();
    let (engine, recovery) =
        Engine::open_dir_archived(&data.ledger_dir(), chunk_size, data.keys.clone(), archived)?;
    tracing::info!(
        last_seqno = engine.last_seqno(),
        checkpoint = ?engine.opened_from(),
        ms = started.elapsed().as_millis() as u64,
        "opened the ledger"
    );
    if recovery.dropped_from.is_some() {
        tracing::warn!(?recovery, "recovered the ledger after an unclean stop");
    }
    Ok(engine)
}

/// Opens the index (rebuilt from Raft if it does not match the ledger; seeded from the newest
/// snapshot if the node started from one) and the commit state it records: what was applied,
/// and the last signature among it; and whether it was seeded now.
fn open_index(
    data: &DataDir,
    engine: &Engine,
    from_snapshot: bool,
) -> Result<(Index, CommitState, bool), NodeError> {
    let index = Index::open(&data.index_path())?;
    let indexed = index.last_seqno()?;
    if indexed > engine.last_seqno()
        || (indexed > 0 && index.get(indexed)?.map(|t| t.view) != engine.view_at(indexed))
    {
        tracing::warn!(
            indexed,
            "index does not match the ledger; rebuilding it from Raft"
        );
        index.rebuild_empty()?;
    }
    let mut seeded = false;
    if from_snapshot && index.last_seqno()? == 0 && engine.last_seqno() > 0 {
        seeded = seed_from_snapshot(data, engine, &index)?;
    }
    let applied = index.last_seqno()?;
    let committed = engine
        .signatures()
        .iter()
        .rev()
        .find(|s| **s <= applied)
        .copied()
        .unwrap_or(0);
    Ok((index, CommitState { committed, applied }, seeded))
}

/// Seeds the empty index of a node that started from a snapshot from the newest snapshot file
/// its ledger reaches (Raft applies what follows); false if there is none.
fn seed_from_snapshot(data: &DataDir, engine: &Engine, index: &Index) -> Result<bool, NodeError> {
    let dir = super::snapshots::dir(&data.root);
    let Some((s, _, path)) = super::snapshots::committed(&dir)
        .into_iter()
        .find(|(s, _, _)| *s <= engine.last_seqno())
    else {
        return Ok(false);
    };
    let seed_err = DataDirError::open("the index, seeded from a snapshot");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return Err(seed_err(e).into()),
    };
    let snap = match vellum_core::snapshot::Snapshot::decode(&bytes, engine.keys().secrets.at(s)) {
        Ok(snap) => snap,
        Err(e) => {
            return Err(seed_err(std::io::Error::other(format!("{}: {e}", path.display()))).into());
        }
    };
    if let Err(e) =
        crate::raft::state_machine::seed_index(index, &snap, |seqno| engine.view_at(seqno))
    {
        return Err(seed_err(e).into());
    }
    tracing::info!(
        seqno = s,
        ledger_to = engine.last_seqno(),
        "seeded the index from the snapshot this node started from; older transactions are indexed in the background"
    );
    Ok(true)
}

/// Raft's settings.
fn raft_config() -> Result<openraft::Config, NodeError> {
    openraft::Config {
        cluster_name: "vellum".into(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // A node that was cut off does not depose a working primary when it returns.
        enable_pre_vote: Some(true),
        // A restarted primary never resumes its old term: it may have handed out transaction
        // ids (answered Pending) for entries its crash lost, and a term it resumed would give
        // those seqnos, under the same view, to other writes. An election first moves every
        // node that was primary to a new view, as CCF's view changes do, so the lost ids
        // become Invalid.
        enable_leader_restore: Some(false),
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_payload_entries: 1000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| RaftFailure::new(RaftStep::Config, e).into())
}

/// Founds the service's Raft group on a founding node's first start; a sole voter elects
/// itself at once instead of sitting out an election timeout. Returns how many voters there are.
async fn join_or_found(
    raft: &Raft,
    founding: bool,
    me: u64,
    advertise: &str,
) -> Result<usize, NodeError> {
    let initialize = |e| RaftFailure::new(RaftStep::Initialize, e);
    if founding && !raft.is_initialized().await.map_err(initialize)? {
        let members = BTreeMap::from([(me, Node::new(advertise.to_owned()))]);
        raft.initialize(members)
            .await
            .map_err(|e| RaftFailure::new(RaftStep::Initialize, e))?;
    }
    let voters: Vec<u64> = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    if voters == [me] {
        let _ = raft.trigger().elect(false).await;
    }
    Ok(voters.len())
}

/// Raft, as the signer needs it.
struct RaftProposer {
    rt: tokio::runtime::Handle,
    raft: Raft,
    me: u64,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Proposer for RaftProposer {
    fn is_primary(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.me)
    }

    fn voters(&self) -> usize {
        let m = self.raft.metrics();
        m.borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .count()
    }

    fn propose_signature(&self) -> bool {
        let proposal = self
            .raft
            .client_write_ff(Tx::Sign, None::<crate::raft::types::QuietResponder<_>>);
        self.rt.block_on(proposal).is_ok()
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }
}

//! A ledger node: its data directory, the Raft log over the ledger, the signer, and the read
//! API (entries by id, latest in a collection, ranges, status, receipts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use serde_json::json;
use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::status::{StatusView, TxStatus, tx_status};
use vellum_ledger::engine::{Engine, ReceiptBundle};
use vellum_ledger::genesis::service_info;
use vellum_ledger::index::{ENTRIES_TABLE, Index};

use crate::datadir::{Bootstrap, DataDir};
use crate::raft::flusher::FlushStats;
use crate::raft::log_store::{LogStore, Shared};
use crate::raft::network::NoPeersFactory;
use crate::raft::state_machine::{CommitState, StateMachine};
use crate::raft::types::{Node, Raft, Ticket, Tx};
use crate::{NodeError, lock};

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The address peers reach this node at (recorded in the Raft membership).
    pub advertise: String,
    /// A signature transaction after at most this many transactions...
    pub signature_interval: u64,
    /// ...or this long after the first unsigned one, whichever comes first.
    pub signature_delay: Duration,
    /// Ledger chunks are closed after the first signature past this size (bytes).
    pub chunk_size: u64,
    /// What a new service starts with (ignored once provisioned).
    pub bootstrap: Bootstrap,
}

impl NodeConfig {
    /// Defaults for a node in `data_dir`: a signature after 1,000 transactions or 2 ms,
    /// 4 MiB chunks.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            advertise: "127.0.0.1:0".into(),
            signature_interval: 1000,
            signature_delay: Duration::from_millis(2),
            chunk_size: 4 << 20,
            bootstrap: Bootstrap::default(),
        }
    }
}

/// An application entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Its transaction id.
    pub txid: TxId,
    /// Its collection.
    pub collection: String,
    /// Its contents.
    pub contents: String,
}

/// The governance the service started with.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    /// Members: (member id, certificate PEM).
    pub members: Vec<(String, String)>,
    /// Nodes: (node id, endorsed certificate PEM).
    pub nodes: Vec<(String, String)>,
    /// The constitution (JavaScript).
    pub constitution: String,
}

/// A running node.
pub struct LedgerNode {
    raft: Raft,
    shared: Arc<Shared>,
    index: Arc<Index>,
    commit: tokio::sync::watch::Receiver<CommitState>,
    raft_id: u64,
    data: DataDir,
    stop: tokio::sync::watch::Sender<bool>,
    signer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LedgerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerNode")
            .field("raft_id", &self.raft_id)
            .field("data_dir", &self.data.root)
            .finish()
    }
}

struct View<'a> {
    engine: &'a Engine,
    committed: u64,
}

impl StatusView for View<'_> {
    fn committed_seqno(&self) -> u64 {
        self.committed
    }

    fn view_at(&self, seqno: u64) -> Option<u64> {
        self.engine.view_at(seqno)
    }
}

fn entry_of(txid: TxId, ws: &EntryBuilder) -> Option<LedgerEntry> {
    let (k, v) = ws
        .maps
        .iter()
        .find(|m| m.name == ENTRIES_TABLE)?
        .writes
        .first()?;
    let value: serde_json::Value = serde_json::from_slice(v).ok()?;
    Some(LedgerEntry {
        txid,
        collection: String::from_utf8_lossy(k).into_owned(),
        contents: value.get("contents")?.as_str()?.to_owned(),
    })
}

impl LedgerNode {
    /// Starts a node: provisions the data directory on first start, recovers the ledger, starts
    /// Raft (initialising a single-node service on first start) and waits until its state
    /// machine has recovered.
    pub async fn start(cfg: NodeConfig) -> Result<LedgerNode, NodeError> {
        let mut data = DataDir::open_or_create(&cfg.data_dir, &cfg.bootstrap)?;
        let (engine, recovery) =
            Engine::open_dir(&data.ledger_dir(), cfg.chunk_size, data.keys.clone())?;
        if recovery.dropped_from.is_some() {
            tracing::warn!(?recovery, "recovered the ledger after an unclean stop");
        }
        let fresh = engine.last_seqno() == 0;
        if !fresh {
            data.genesis_written()?;
        }
        let index = Arc::new(Index::open(&data.index_path())?);
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
        let indexed = index.last_seqno()?;
        let committed = engine
            .signatures()
            .iter()
            .rev()
            .find(|s| **s <= indexed)
            .copied()
            .unwrap_or(0);
        let shared = Arc::new(
            Shared::new(
                engine,
                data.vote_path(),
                data.genesis.clone(),
                cfg.signature_interval,
            )
            .map_err(|e| NodeError::DataDir(e.to_string()))?,
        );
        let (commit_tx, commit_rx) = tokio::sync::watch::channel(CommitState {
            committed,
            applied: indexed,
        });
        let sm = StateMachine::new(shared.clone(), index.clone(), commit_tx)
            .map_err(|e| NodeError::DataDir(e.to_string()))?;
        let config = openraft::Config {
            cluster_name: "vellum".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let store = LogStore {
            shared: shared.clone(),
        };
        let raft = Raft::new(data.raft_id, Arc::new(config), NoPeersFactory, store, sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        if fresh
            && !raft
                .is_initialized()
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?
        {
            let members = BTreeMap::from([(data.raft_id, Node::new(cfg.advertise.clone()))]);
            raft.initialize(members)
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
        }
        // Serve only once the state machine holds at least what it held before a restart (the
        // index is not synced on every apply; Raft re-applies what it lost).
        raft.wait_for_recovery(Some(Duration::from_secs(30)))
            .await
            .map_err(|e| NodeError::Raft(format!("recovering the state machine: {e}")))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let signer = tokio::spawn(signer(
            raft.clone(),
            shared.clone(),
            cfg.signature_delay,
            data.raft_id,
            stop_rx,
        ));
        let raft_id = data.raft_id;
        let mut node = LedgerNode {
            raft,
            shared,
            index,
            commit: commit_rx,
            raft_id,
            data,
            stop,
            signer,
        };
        if fresh {
            // Genesis went in with the initial membership (status Opening); open the service.
            let ws =
                EntryBuilder::default().map(service_info(&node.data.keys.service_cert_pem, "Open"));
            let t = node.write(ws).await?;
            node.wait_committed(t, Duration::from_secs(30)).await?;
            node.data.genesis_written()?;
        }
        Ok(node)
    }

    /// The service certificate (PEM).
    pub fn service_cert_pem(&self) -> &str {
        &self.data.keys.service_cert_pem
    }

    /// This node's CCF node id.
    pub fn node_id(&self) -> &str {
        &self.data.node_id
    }

    /// Records a write set; returns its transaction id as soon as the primary has assigned it
    /// (the transaction is then Pending; see [`LedgerNode::wait_committed`]).
    pub async fn write(&self, ws: EntryBuilder) -> Result<TxId, NodeError> {
        if let Some(why) = lock(&self.shared.engine).poisoned() {
            return Err(NodeError::Stopped(why.to_owned()));
        }
        let (ticket, mut assigned) = Ticket::new();
        let (responder, mut done) = crate::raft::types::QuietResponder::new_pair();
        self.raft
            .client_write_ff(
                Tx::Write {
                    ws: Arc::new(ws),
                    ticket: Some(ticket),
                },
                Some(responder),
            )
            .await
            .map_err(|e| NodeError::Stopped(e.to_string()))?;
        tokio::select! {
            biased;
            t = &mut assigned => t.map_err(|_| NodeError::Stopped(self.stop_reason())),
            r = &mut done => match r {
                Ok(Ok(applied)) => Ok(applied.data.txid),
                Ok(Err(e)) => Err(NodeError::from_write(e)),
                Err(_) => match assigned.try_recv() {
                    Ok(t) => Ok(t),
                    Err(_) => Err(NodeError::Stopped(self.stop_reason())),
                },
            },
        }
    }

    /// Records a write set and waits until it is applied (Raft-committed and visible to reads
    /// on this node); used for user changes, which must take effect before the call returns.
    pub async fn write_applied(&self, ws: EntryBuilder) -> Result<TxId, NodeError> {
        if let Some(why) = lock(&self.shared.engine).poisoned() {
            return Err(NodeError::Stopped(why.to_owned()));
        }
        let (responder, done) = crate::raft::types::QuietResponder::new_pair();
        self.raft
            .client_write_ff(
                Tx::Write {
                    ws: Arc::new(ws),
                    ticket: None,
                },
                Some(responder),
            )
            .await
            .map_err(|e| NodeError::Stopped(e.to_string()))?;
        match done.await {
            Ok(Ok(applied)) => Ok(applied.data.txid),
            Ok(Err(e)) => Err(NodeError::from_write(e)),
            Err(_) => Err(NodeError::Stopped(self.stop_reason())),
        }
    }

    /// Users and roles, as of the last applied transaction.
    pub fn users(&self) -> crate::users::Users {
        crate::read_lock(&self.shared.users).clone()
    }

    /// The role of `user_id`, if it is a user.
    pub fn role_of(&self, user_id: &str) -> Option<crate::users::Role> {
        crate::read_lock(&self.shared.users).get(user_id).copied()
    }

    /// The governance the service started with (genesis, seqno 1): members, constitution,
    /// nodes.
    pub fn governance(&self) -> Result<Governance, NodeError> {
        let (_, ws) = lock(&self.shared.engine).write_set(1)?;
        let map = |name: &str| ws.maps.iter().find(|m| m.name == name);
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let members = map(vellum_core::tables::MEMBERS_CERTS)
            .map(|m| m.writes.iter().map(|(k, v)| (text(k), text(v))).collect())
            .unwrap_or_default();
        let nodes = map(vellum_core::tables::NODES_ENDORSED_CERTIFICATES)
            .map(|m| m.writes.iter().map(|(k, v)| (text(k), text(v))).collect())
            .unwrap_or_default();
        let constitution = map(vellum_core::tables::CONSTITUTION)
            .and_then(|m| m.writes.first())
            .and_then(|(_, v)| serde_json::from_slice::<String>(v).ok())
            .unwrap_or_default();
        Ok(Governance {
            members,
            nodes,
            constitution,
        })
    }

    fn stop_reason(&self) -> String {
        lock(&self.shared.engine)
            .poisoned()
            .map_or_else(|| "the node stopped".to_owned(), str::to_owned)
    }

    /// Appends an application entry to `collection`.
    pub async fn append(&self, collection: &str, contents: &str) -> Result<TxId, NodeError> {
        let value = json!({"contents": contents, "collectionId": collection})
            .to_string()
            .into_bytes();
        self.write(EntryBuilder::default().map(MapWrites::with_writes(
            ENTRIES_TABLE,
            vec![(collection.as_bytes().to_vec(), value)],
        )))
        .await
    }

    /// The status of a transaction (CCF §8).
    pub fn status(&self, txid: TxId) -> TxStatus {
        let committed = self.commit.borrow().committed;
        let engine = lock(&self.shared.engine);
        tx_status(
            &View {
                engine: &engine,
                committed,
            },
            txid,
        )
    }

    /// Seqno up to which every transaction is Committed.
    pub fn committed_seqno(&self) -> u64 {
        self.commit.borrow().committed
    }

    /// The last transaction id in the ledger.
    pub fn last_txid(&self) -> Option<TxId> {
        lock(&self.shared.engine).last_txid()
    }

    /// Waits until `txid` is Committed or Invalid (or the timeout passes); returns the status.
    pub async fn wait_committed(
        &self,
        txid: TxId,
        timeout: Duration,
    ) -> Result<TxStatus, NodeError> {
        let mut rx = self.commit.clone();
        let wait = async {
            loop {
                let s = self.status(txid);
                if matches!(s, TxStatus::Committed | TxStatus::Invalid) {
                    return Ok(s);
                }
                if rx.changed().await.is_err() {
                    return Err(NodeError::Stopped(self.stop_reason()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Ok(self.status(txid)),
        }
    }

    /// The application entry at `txid`, once Raft-committed (`None`: no application entry
    /// there, or not applied yet).
    pub fn entry(&self, txid: TxId) -> Result<Option<LedgerEntry>, NodeError> {
        match self.index.get(txid.seqno)? {
            Some(t) if t.view == txid.view && t.collection.is_some() => {}
            _ => return Ok(None),
        }
        let (_, ws) = lock(&self.shared.engine).write_set(txid.seqno)?;
        Ok(entry_of(txid, &ws))
    }

    /// The latest applied entry of `collection`.
    pub fn latest(&self, collection: &str) -> Result<Option<LedgerEntry>, NodeError> {
        let Some(seqno) = self.index.latest(collection)? else {
            return Ok(None);
        };
        let (txid, ws) = lock(&self.shared.engine).write_set(seqno)?;
        Ok(entry_of(txid, &ws))
    }

    /// Entries of `collection` with seqnos in `from..=to`, at most `limit`.
    pub fn range(
        &self,
        collection: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, NodeError> {
        let seqnos = self.index.range(collection, from, to, limit)?;
        let engine = lock(&self.shared.engine);
        let mut out = Vec::with_capacity(seqnos.len());
        for s in seqnos {
            let (txid, ws) = engine.write_set(s)?;
            out.extend(entry_of(txid, &ws));
        }
        Ok(out)
    }

    /// Every collection with at least one applied entry.
    pub fn collections(&self) -> Result<Vec<String>, NodeError> {
        Ok(self.index.collections()?)
    }

    /// The receipt of a Committed transaction.
    pub fn receipt(&self, txid: TxId) -> Result<ReceiptBundle, NodeError> {
        let committed = self.committed_seqno();
        Ok(lock(&self.shared.engine).receipt(txid, committed)?)
    }

    /// Why the node refuses writes, if it does (an I/O error poisoned its ledger).
    pub fn write_error(&self) -> Option<String> {
        lock(&self.shared.engine).poisoned().map(str::to_owned)
    }

    /// Group-commit counters.
    pub fn flush_stats(&self) -> (u64, u64) {
        let s: &FlushStats = &self.shared.flusher.stats;
        (
            s.requests.load(Ordering::Relaxed),
            s.syncs.load(Ordering::Relaxed),
        )
    }

    /// The ledger directory.
    pub fn ledger_dir(&self) -> PathBuf {
        self.data.ledger_dir()
    }

    /// The ledger secret.
    pub fn ledger_secret(&self) -> &vellum_core::entry::LedgerSecret {
        &self.data.keys.secret
    }

    /// Whether this node is the primary.
    pub fn is_primary(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.raft_id)
    }

    /// Stops the node gracefully. A primary first signs what is unsigned and waits (up to five
    /// seconds) until that signature commits; then the signer and Raft stop, a ledger that ends
    /// on a committed signature gets its open chunk closed and marked committed (so offline
    /// auditors see every transaction), and the index is made durable.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        if self.is_primary() && self.write_error().is_none() {
            let target = self.shared.last_seqno.load(Ordering::Acquire);
            if target > self.shared.last_signature.load(Ordering::Acquire) {
                self.shared.sign_pending.store(true, Ordering::Release);
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
        let _ = self.stop.send(true);
        let _ = self.signer.await;
        self.raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let committed = self.commit.borrow().committed;
        {
            let mut engine = lock(&self.shared.engine);
            if engine.poisoned().is_none()
                && engine.last_signature() == Some(engine.last_seqno())
                && committed == engine.last_seqno()
            {
                engine.close_chunk()?;
                engine.commit(committed)?;
            }
        }
        self.index.apply_with(&[], &[], true)?;
        Ok(())
    }
}

async fn signer(
    raft: Raft,
    shared: Arc<Shared>,
    delay: Duration,
    me: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(delay.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.sign_now.notified() => {}
            _ = stop.changed() => return,
        }
        let last = shared.last_seqno.load(Ordering::Acquire);
        if last <= shared.last_signature.load(Ordering::Acquire) {
            continue;
        }
        if shared.sign_pending.load(Ordering::Acquire)
            && pending_since.elapsed() < Duration::from_secs(1)
        {
            continue;
        }
        if raft.metrics().borrow_watched().current_leader != Some(me) {
            continue;
        }
        shared.sign_pending.store(true, Ordering::Release);
        pending_since = tokio::time::Instant::now();
        if raft
            .client_write_ff(Tx::Sign, None::<crate::raft::types::QuietResponder<_>>)
            .await
            .is_err()
        {
            return;
        }
    }
}

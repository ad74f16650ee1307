//! A ledger node: its data directory, the Raft log over the ledger, the signer, and the read
//! API (entries by id, latest in a collection, ranges, status, receipts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use serde_json::json;
use sha2::{Digest, Sha256};
use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::status::{StatusView, TxStatus, tx_status};
use vellum_ledger::engine::{Engine, ReceiptBundle};
use vellum_ledger::genesis::service_info;
use vellum_ledger::index::{ENTRIES_TABLE, Index, entry_write};
use vellum_ledger::live_index::LiveIndex;

use crate::NodeError;
use crate::cluster::{
    ClusterState, Forward, ForwardReply, JoinRequest, JoinResponse, JoinToken, node_info_value,
    raft_id_of,
};
use crate::datadir::{Bootstrap, DataDir};
use crate::ops::{Caller, Needs, Op};
use crate::raft::Raft;
use crate::raft::flusher::FlushStats;
use crate::raft::ledger::Ledger;
use crate::raft::log_store::LogStore;
use crate::raft::network::{FORWARD_PATH, PeerClient, PeerError, PeerNetworkFactory};
use crate::raft::state_machine::{CommitState, CommitWait, CommitWaiters, StateMachine};
use crate::raft::types::{Node, Ticket, Tx};
use crate::service_state::ServiceState;
pub use crate::signing::{ALONE_SIGNATURE_DELAY, CLUSTER_SIGNATURE_DELAY};
use crate::signing::{Proposer, SignaturePolicy};
use crate::users::Role;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The address peers reach this node at (recorded in the Raft membership).
    pub advertise: String,
    /// A signature transaction after at most this many transactions...
    pub signature_interval: u64,
    /// ...or, once a transaction is unsigned, this long after the previous signature was
    /// proposed (at once after an idle spell), whichever comes first. `None`: 1 ms for a
    /// node alone, 4 ms with backups (see [`CLUSTER_SIGNATURE_DELAY`]).
    pub signature_delay: Option<Duration>,
    /// Ledger chunks are closed after the first signature past this size (bytes).
    pub chunk_size: u64,
    /// The most collections the ledger may hold: the primary refuses a write that would
    /// start one more (writes forwarded by backups included).
    pub max_collections: usize,
    /// What a new service starts with (ignored once provisioned).
    pub bootstrap: Bootstrap,
}

impl NodeConfig {
    /// Defaults for a node in `data_dir`: a signature after 1,000 transactions or 1 ms,
    /// 4 MiB chunks.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            advertise: "127.0.0.1:0".into(),
            signature_interval: 1000,
            signature_delay: None,
            max_collections: DEFAULT_MAX_COLLECTIONS,
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
    /// The code measurement nodes attest to (CCF's virtual one: there is no TEE here).
    pub measurement: &'static str,
}

/// How long a backup waits for a primary to forward a write to.
const FORWARD_WAIT: Duration = Duration::from_secs(10);
/// How long a forwarded call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A node of the cluster, as listed by [`LedgerNode::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// CCF node id.
    pub node_id: String,
    /// CCF status from `nodes.info` (`Trusted`, `Retired`).
    pub status: String,
    /// Raft id.
    pub raft_id: u64,
    /// Node-to-node address, if known.
    pub address: Option<String>,
    /// `primary`, `backup` (a voter), `learner` (catching up) or `none` (not in the Raft
    /// membership).
    pub role: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Startup {
    founding: bool,
    fresh: bool,
    voters: usize,
}

/// A running node.
pub struct LedgerNode {
    startup: Startup,
    ready: std::sync::atomic::AtomicBool,
    raft: Raft,
    ledger: Arc<Ledger>,
    signing: Arc<SignaturePolicy>,
    state: Arc<ServiceState>,
    index: Arc<LiveIndex>,
    commit: tokio::sync::watch::Receiver<CommitState>,
    /// Waiters for the commit point, each woken once it reaches theirs.
    waiters: Arc<CommitWaiters>,
    raft_id: u64,
    data: DataDir,
    stop: tokio::sync::watch::Sender<bool>,
    signer: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    peers: PeerClient,
    chunk_size: u64,
    max_collections: usize,
    join_lock: tokio::sync::Mutex<()>,
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

/// The write set of an application entry.
fn entry_write_set(collection: &str, contents: &str) -> EntryBuilder {
    let value = json!({"contents": contents, "collectionId": collection})
        .to_string()
        .into_bytes();
    EntryBuilder::default().map(MapWrites::with_writes(
        ENTRIES_TABLE,
        vec![(collection.as_bytes().to_vec(), value)],
    ))
}

fn entry_of(txid: TxId, ws: &EntryBuilder) -> Option<LedgerEntry> {
    let (k, v) = entry_write(&ws.maps)?;
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
        let node = LedgerNode::open(cfg).await?;
        node.ready().await?;
        Ok(node)
    }

    /// Starts a node without waiting for its state machine to recover: the node channel can
    /// then be served (a node catching up with a cluster receives the ledger through it) before
    /// [`LedgerNode::ready`] completes.
    pub async fn open(cfg: NodeConfig) -> Result<LedgerNode, NodeError> {
        let data = DataDir::open_or_create(&cfg.data_dir, &cfg.bootstrap)?;
        let chunk_size = data.chunk_size.unwrap_or(cfg.chunk_size);
        let started = std::time::Instant::now();
        let (engine, recovery) =
            Engine::open_dir(&data.ledger_dir(), chunk_size, data.keys.clone())?;
        tracing::info!(
            last_seqno = engine.last_seqno(),
            checkpoint = ?engine.opened_from(),
            ms = started.elapsed().as_millis() as u64,
            "opened the ledger"
        );
        if recovery.dropped_from.is_some() {
            tracing::warn!(?recovery, "recovered the ledger after an unclean stop");
        }
        let fresh = engine.last_seqno() == 0;
        // A new service starts with its genesis; a node that joined one waits for the ledger.
        let founding = fresh && data.genesis.is_some();
        if !fresh {
            data.genesis_written()?;
        }
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
        let indexed = index.last_seqno()?;
        let committed = engine
            .signatures()
            .iter()
            .rev()
            .find(|s| **s <= indexed)
            .copied()
            .unwrap_or(0);
        let ledger = Arc::new(Ledger::new(engine).map_err(|e| NodeError::DataDir(e.to_string()))?);
        let signing = Arc::new(SignaturePolicy::new(
            cfg.signature_interval,
            cfg.signature_delay,
        ));
        let collections = index.collections()?;
        let index = Arc::new(LiveIndex::start(index)?);
        let (commit_tx, commit_rx) = tokio::sync::watch::channel(CommitState {
            committed,
            applied: indexed,
        });
        let waiters = Arc::new(CommitWaiters::new(committed));
        let sm = StateMachine::new(
            ledger.clone(),
            index.clone(),
            collections,
            commit_tx,
            waiters.clone(),
        )
        .map_err(|e| NodeError::DataDir(e.to_string()))?;
        let state = sm.state();
        let config = openraft::Config {
            cluster_name: "vellum".into(),
            heartbeat_interval: 150,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            // A node that was cut off does not depose a working primary when it returns.
            enable_pre_vote: Some(true),
            // A restarted primary never resumes its old term: it may have handed out
            // transaction ids (answered Pending) for entries its crash lost, and a term it
            // resumed would give those seqnos, under the same view, to other writes. An
            // election first moves every node that was primary to a new view, as CCF's view
            // changes do, so the lost ids become Invalid.
            enable_leader_restore: Some(false),
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let store = LogStore::new(
            ledger.clone(),
            signing.clone(),
            data.vote_path(),
            data.genesis.clone(),
        )
        .map_err(|e| NodeError::DataDir(e.to_string()))?;
        let peers = PeerClient::new(
            &format!("{}{}", data.keys.node_cert_pem, data.keys.service_cert_pem),
            &data.node_key_pem,
            &data.keys.service_cert_pem,
        )
        .map_err(NodeError::DataDir)?;
        let raft = Raft::new(
            data.raft_id,
            Arc::new(config),
            PeerNetworkFactory::new(peers.clone()),
            store,
            sm,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        if founding
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
        let voters: Vec<u64> = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters == [data.raft_id] {
            // The only voter: no need to sit out an election timeout.
            let _ = raft.trigger().elect(false).await;
        }
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
        let raft_id = data.raft_id;
        let node = LedgerNode {
            raft,
            ledger,
            signing,
            state,
            index,
            commit: commit_rx,
            waiters,
            raft_id,
            data,
            stop,
            signer,
            reconciler,
            peers,
            chunk_size,
            max_collections: cfg.max_collections,
            join_lock: tokio::sync::Mutex::new(()),
            startup: Startup {
                founding,
                fresh,
                voters: voters.len(),
            },
            ready: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(node)
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
                return Err(NodeError::Raft(format!(
                    "recovering the state machine: {e}"
                )));
            }
            tracing::warn!(error = %e, "serving before the state machine caught up with the cluster");
        }
        if founding {
            // Genesis went in with the initial membership (status Opening); open the service.
            let ws =
                EntryBuilder::default().map(service_info(&self.data.keys.service_cert_pem, "Open"));
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

    /// The service certificate (PEM).
    pub fn service_cert_pem(&self) -> &str {
        &self.data.keys.service_cert_pem
    }

    /// This node's CCF node id.
    pub fn node_id(&self) -> &str {
        &self.data.node_id
    }

    /// Records a write set of the node's own (not a caller's) on this node, which must be or
    /// become the primary within [`FORWARD_WAIT`]: such writes are never forwarded.
    async fn write_local(&self, ws: EntryBuilder) -> Result<TxId, NodeError> {
        let ws = Arc::new(ws);
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            if self.primary().map(|p| p.0) == Some(self.raft_id) {
                match self.write_here(ws.clone(), false).await {
                    Err(NodeError::NotPrimary(_)) if tokio::time::Instant::now() < deadline => {}
                    r => return r,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotPrimary(self.primary().map(|p| p.0)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The primary's Raft id and node-to-node address, as this node knows them.
    fn primary(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Performs `op` for `caller`, whose rights the caller of this method has checked against
    /// this node's tables (the API does, answering in ACL's words): on the primary at once; on
    /// a backup by forwarding the operation and its caller to the primary, which checks them
    /// again against its own tables. Returns the transaction id as soon as the primary assigned
    /// it (Pending), or, for operations that change who may do what, once this node has applied
    /// it. `caller` `None` is the process embedding the node, trusted: it can only write on the
    /// primary.
    pub async fn perform(&self, caller: Option<&Caller>, op: Op) -> Result<TxId, NodeError> {
        let applied = op.answered_when_applied();
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            match self.primary() {
                Some((id, _)) if id == self.raft_id => match self.perform_here(&op).await {
                    Err(NodeError::NotPrimary(_)) if tokio::time::Instant::now() < deadline => {}
                    r => return r,
                },
                Some((_, addr)) => {
                    let Some(caller) = caller else {
                        return Err(NodeError::Refused(
                            "this node is a backup: a write it forwards must name its caller"
                                .into(),
                        ));
                    };
                    let msg = Forward::Op {
                        caller: caller.clone(),
                        op: op.clone(),
                    };
                    match self.forward(&addr, &msg).await {
                        Ok(ForwardReply::Done(view, seqno)) => {
                            let txid = TxId::new(view, seqno);
                            if applied {
                                self.wait_applied(seqno, FORWARD_TIMEOUT).await?;
                            }
                            return Ok(txid);
                        }
                        Ok(ForwardReply::NotPrimary) | Err(PeerError::Connect(..))
                            if tokio::time::Instant::now() < deadline => {}
                        Ok(ForwardReply::Refused(m)) => return Err(NodeError::Refused(m)),
                        Ok(ForwardReply::NotAllowed(m)) => return Err(NodeError::NotAllowed(m)),
                        Ok(ForwardReply::TooManyCollections(n)) => {
                            return Err(NodeError::TooManyCollections(n));
                        }
                        Ok(other) => return Err(NodeError::Forward(format!("{other:?}"))),
                        Err(e) => return Err(NodeError::Forward(e.to_string())),
                    }
                }
                None if tokio::time::Instant::now() < deadline => {}
                None => return Err(NodeError::NotPrimary(None)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotPrimary(self.primary().map(|p| p.0)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On the primary: builds `op`'s write set from this node's tables, and records it.
    async fn perform_here(&self, op: &Op) -> Result<TxId, NodeError> {
        let ws = match op {
            Op::Append {
                collection,
                contents,
            } => entry_write_set(collection, contents),
            Op::SetRole { user_id, role } => crate::users::set_role(user_id, *role),
            Op::RemoveUser { user_id } => crate::users::remove(user_id),
            Op::JoinToken { key, expires_at } => {
                let latest = crate::cluster::unix(std::time::SystemTime::now())
                    + crate::cluster::TOKEN_LIFETIME.as_secs()
                    + 60;
                let digest = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
                if !digest || *expires_at > latest {
                    return Err(NodeError::Refused("not a join token record".into()));
                }
                crate::cluster::token_write_set(key, *expires_at)
            }
            Op::Retire { node_id } => self.retire_write_set(node_id)?,
        };
        self.write_here(Arc::new(ws), op.answered_when_applied())
            .await
    }

    /// Whether `caller` may do what `needs` asks, by this node's tables.
    fn authorise(&self, caller: &Caller, needs: Needs) -> Result<(), NodeError> {
        let role = self.role_of(caller.user_id());
        let ok = match needs {
            Needs::Role(r) => role.is_some_and(|have| have >= r),
            Needs::Operator => {
                self.is_member(caller) || role.is_some_and(|have| have >= Role::Administrator)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(NodeError::NotAllowed(format!(
                "{} may not do this",
                caller.user_id()
            )))
        }
    }

    /// Whether `caller` is a consortium member: by its certificate only.
    pub fn is_member(&self, caller: &Caller) -> bool {
        let Caller::Cert(fingerprint) = caller else {
            return false;
        };
        self.governance().is_ok_and(|g| {
            g.members.iter().any(|(_, pem)| {
                vellum_core::crypto::Certificate::from_pem(pem)
                    .is_ok_and(|c| c.acl_fingerprint() == *fingerprint)
            })
        })
    }

    /// Forwards `msg` to the primary at `addr`. Gives up (with an ambiguous error: the primary
    /// may have done it) if this node learns of another primary meanwhile: a primary that was
    /// cut off may never answer.
    async fn forward(&self, addr: &str, msg: &Forward) -> Result<ForwardReply, PeerError> {
        let leader = self.primary().map(|p| p.0);
        let mut metrics = self.raft.metrics();
        let deposed = async {
            loop {
                if metrics.changed().await.is_err() {
                    return;
                }
                if metrics.borrow_watched().current_leader != leader {
                    return;
                }
            }
        };
        tokio::select! {
            r = self.peers.call(addr, FORWARD_PATH, msg, FORWARD_TIMEOUT) => r,
            () = deposed => Err(PeerError::Call(
                addr.to_owned(),
                "the primary changed while the request was in flight".into(),
            )),
        }
    }

    /// Waits until this node has applied `seqno`.
    async fn wait_applied(&self, seqno: u64, timeout: Duration) -> Result<(), NodeError> {
        let mut rx = self.commit.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|c| c.applied >= seqno)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Stopped(self.stop_reason())),
            Err(_) => Err(NodeError::Forward(format!(
                "the primary applied seqno {seqno}, this node has not yet"
            ))),
        }
    }

    /// Records a write set on this node, which must be the primary (no forwarding).
    async fn write_here(&self, ws: Arc<EntryBuilder>, applied: bool) -> Result<TxId, NodeError> {
        if let Some(why) = self.ledger.engine().poisoned() {
            return Err(NodeError::Stopped(why.to_owned()));
        }
        self.admit_collection(&ws)?;
        // Counted here, on the primary, so that writes forwarded by backups count too.
        let arriving = self.signing.arriving();
        let (ticket, mut assigned) = Ticket::new();
        let (responder, mut done) = crate::raft::types::QuietResponder::new_pair();
        self.raft
            .client_write_ff(
                Tx::Write {
                    ws,
                    ticket: (!applied).then_some(ticket),
                },
                Some(responder),
            )
            .await
            .map_err(|e| NodeError::Stopped(e.to_string()))?;
        if applied {
            // It waits for a signature: the signer must not wait for it.
            drop(arriving);
            return match done.await {
                Ok(Ok(applied)) => Ok(applied.data.txid),
                Ok(Err(e)) => Err(NodeError::from_write(e)),
                Err(_) => Err(NodeError::Stopped(self.stop_reason())),
            };
        }
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

    /// On the primary: refuses a write that would start a collection past the limit, and
    /// counts the collection it starts. A collection counts from its first admitted write
    /// (a write that then fails still holds its place); concurrent writes cannot both take
    /// the last place.
    fn admit_collection(&self, ws: &EntryBuilder) -> Result<(), NodeError> {
        let Some(name) = entry_write(&ws.maps).map(|(k, _)| String::from_utf8_lossy(k)) else {
            return Ok(());
        };
        self.state
            .admit_collection(&name, self.max_collections)
            .map_err(NodeError::TooManyCollections)
    }

    /// Serves a request a backup forwarded to this node.
    pub async fn serve_forwarded(&self, msg: Forward) -> ForwardReply {
        if self.primary().map(|p| p.0) != Some(self.raft_id) {
            return ForwardReply::NotPrimary;
        }
        match msg {
            Forward::Op { caller, op } => {
                // The caller's rights are checked here again, by this node's tables.
                let done = match self.authorise(&caller, op.needs()) {
                    Ok(()) => self.perform_here(&op).await,
                    Err(e) => Err(e),
                };
                match done {
                    Ok(t) => ForwardReply::Done(t.view, t.seqno),
                    Err(NodeError::NotPrimary(_)) => ForwardReply::NotPrimary,
                    Err(NodeError::TooManyCollections(n)) => ForwardReply::TooManyCollections(n),
                    Err(NodeError::NotAllowed(m)) => ForwardReply::NotAllowed(m),
                    Err(NodeError::Refused(m)) => ForwardReply::Refused(m),
                    Err(e) => ForwardReply::Failed(e.to_string()),
                }
            }
            Forward::Join { request, cert_der } => {
                match self.admit_here(request, &cert_der).await {
                    Ok(j) => ForwardReply::Joined(Box::new(j)),
                    Err(NodeError::NotPrimary(_)) => ForwardReply::NotPrimary,
                    Err(NodeError::Refused(m)) => ForwardReply::Refused(m),
                    Err(e) => ForwardReply::Failed(e.to_string()),
                }
            }
        }
    }

    /// The IP addresses of the nodes in the Raft membership (those given as IP literals).
    pub fn node_ips(&self) -> Vec<std::net::IpAddr> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .filter_map(|(_, n)| {
                let (host, _) = n.addr.rsplit_once(':')?;
                host.trim_matches(['[', ']']).parse().ok()
            })
            .collect()
    }

    /// The certificates (PEM) of the nodes recorded `Trusted`.
    fn trusted_node_certs(&self) -> Vec<String> {
        self.state.with_cluster(|cluster| {
            cluster
                .certs
                .iter()
                .filter(|(id, _)| {
                    cluster
                        .nodes
                        .get(*id)
                        .is_some_and(|n| n.status == "Trusted")
                })
                .map(|(_, pem)| pem.clone())
                .collect()
        })
    }

    /// Whether `der` is the certificate recorded for node `node_id` (or, on a node that has not
    /// caught up yet, one of those it was told of when it was admitted).
    pub fn is_node_certificate(&self, node_id: &str, der: &[u8]) -> bool {
        let recorded = self.state.with_cluster(|c| {
            c.certs
                .get(node_id)
                .and_then(|pem| vellum_core::crypto::Certificate::from_pem(pem).ok())
                .is_some_and(|c| c.der() == der)
        });
        recorded || self.data.join_peers.iter().any(|p| p[..] == *der)
    }

    /// Whether node `node_id`, presenting `der`, is a trusted node: recorded `Trusted`, or,
    /// while this node has not caught up, unknown here but among the nodes it was told of.
    pub fn is_trusted_node(&self, node_id: &str, der: &[u8]) -> bool {
        match self.node_status(node_id).as_deref() {
            Some("Trusted") => true,
            None => self.data.join_peers.iter().any(|p| p[..] == *der),
            Some(_) => false,
        }
    }

    /// The status (`Trusted`, `Retired`) of node `node_id`, if this node knows it.
    pub fn node_status(&self, node_id: &str) -> Option<String> {
        self.state
            .with_cluster(|c| c.nodes.get(node_id).map(|n| n.status.clone()))
    }

    /// Nodes and join tokens, as of the last applied transaction.
    pub fn cluster(&self) -> ClusterState {
        self.state.cluster()
    }

    /// The nodes of the service: every node recorded in the ledger, with its Raft role.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let cluster = self.cluster();
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut out = Vec::new();
        for (node_id, rec) in &cluster.nodes {
            let Some(raft_id) = rec.raft_id.or_else(|| raft_id_of(node_id)) else {
                continue;
            };
            let address = rec
                .address
                .clone()
                .or_else(|| membership.get_node(&raft_id).map(|n| n.addr.clone()));
            let role = if m.current_leader == Some(raft_id) {
                "primary"
            } else if voters.contains(&raft_id) {
                "backup"
            } else if membership.get_node(&raft_id).is_some() {
                "learner"
            } else {
                "none"
            };
            out.push(ClusterNode {
                node_id: node_id.clone(),
                status: rec.status.clone(),
                raft_id,
                address,
                role,
            });
        }
        out
    }

    /// Creates a one-time join token (valid for [`crate::cluster::TOKEN_LIFETIME`]) for an
    /// operator (see [`LedgerNode::perform`]); returns the token and its expiry (unix seconds).
    /// The secret never leaves this node: the ledger records its digest.
    pub async fn create_join_token(
        &self,
        caller: Option<&Caller>,
    ) -> Result<(String, u64), NodeError> {
        let cert = vellum_core::crypto::Certificate::from_pem(&self.data.keys.service_cert_pem)
            .map_err(|e| NodeError::DataDir(e.to_string()))?;
        let (token, key, expires_at) =
            crate::cluster::new_token(&cert, std::time::SystemTime::now());
        self.perform(caller, Op::JoinToken { key, expires_at })
            .await?;
        Ok((token, expires_at))
    }

    /// Admits a joining node (see [`crate::cluster`]): `cert_der` is the certificate it
    /// presented in its TLS handshake. On a backup the request is forwarded to the primary.
    pub async fn admit(
        &self,
        request: JoinRequest,
        cert_der: &[u8],
    ) -> Result<JoinResponse, NodeError> {
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            match self.primary() {
                Some((id, _)) if id == self.raft_id => {
                    return self.admit_here(request, cert_der).await;
                }
                Some((_, addr)) => {
                    let msg = Forward::Join {
                        request: request.clone(),
                        cert_der: cert_der.to_vec(),
                    };
                    match self.forward(&addr, &msg).await {
                        Ok(ForwardReply::Joined(j)) => return Ok(*j),
                        Ok(ForwardReply::Refused(m)) => return Err(NodeError::Refused(m)),
                        Ok(ForwardReply::NotPrimary) | Err(PeerError::Connect(..)) => {}
                        Ok(other) => return Err(NodeError::Forward(format!("{other:?}"))),
                        Err(e) => return Err(NodeError::Forward(e.to_string())),
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotPrimary(None));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn admit_here(
        &self,
        request: JoinRequest,
        cert_der: &[u8],
    ) -> Result<JoinResponse, NodeError> {
        use vellum_core::crypto::{Certificate, node_id_of};
        let refused = |m: String| NodeError::Refused(m);
        let _one_at_a_time = self.join_lock.lock().await;
        let token: JoinToken = request.token.parse().map_err(refused)?;
        let service_cert = Certificate::from_pem(&self.data.keys.service_cert_pem)
            .map_err(|e| NodeError::DataDir(e.to_string()))?;
        if token.service_cert_digest[..] != Sha256::digest(service_cert.der())[..] {
            return Err(refused(
                "the join token was made for another service".into(),
            ));
        }
        let now = std::time::SystemTime::now();
        match self.cluster().tokens.get(&token.key) {
            Some(t) if t.expires_at > crate::cluster::unix(now) => {}
            Some(_) => return Err(refused("the join token has expired".into())),
            None => {
                return Err(refused("the join token is unknown or already spent".into()));
            }
        }
        let cert = Certificate::from_der(cert_der)
            .map_err(|e| refused(format!("the joining node's certificate: {e}")))?;
        let node_id = node_id_of(&cert);
        let raft_id = raft_id_of(&node_id).ok_or_else(|| refused("bad node id".into()))?;
        if self.cluster().nodes.contains_key(&node_id) {
            return Err(refused(format!(
                "node {node_id} is already part of this service"
            )));
        }
        let host = request
            .address
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .ok_or_else(|| {
                refused(format!(
                    "address {:?} is not HOST:PORT with a port",
                    request.address
                ))
            })?;
        let mut dns: Vec<String> = vec!["localhost".into()];
        dns.extend(request.dns_names.iter().cloned());
        let mut ips: Vec<std::net::IpAddr> = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        ips.extend(request.ips.iter().copied());
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns.contains(&host) => dns.push(host),
            Err(_) => {}
        }
        dns.sort();
        dns.dedup();
        ips.sort();
        ips.dedup();
        let dns_refs: Vec<&str> = dns.iter().map(String::as_str).collect();
        let node_cert_pem = vellum_ledger::identity::endorse_node(
            &self.data.keys.service_cert_pem,
            &self.data.service_key_pem,
            cert.spki_der(),
            "Vellum Node",
            &dns_refs,
            &ips,
            now,
            3650,
        )
        .map_err(|e| refused(format!("cannot endorse the joining node: {e}")))?;
        let ws = EntryBuilder::default()
            .map(MapWrites::with_writes(
                vellum_core::tables::NODES_ENDORSED_CERTIFICATES,
                vec![(
                    node_id.clone().into_bytes(),
                    node_cert_pem.clone().into_bytes(),
                )],
            ))
            .map(MapWrites::with_writes(
                vellum_core::tables::NODES_INFO,
                vec![(
                    node_id.clone().into_bytes(),
                    node_info_value("Trusted", raft_id, &request.address),
                )],
            ))
            .map(MapWrites {
                name: crate::cluster::JOIN_TOKENS_TABLE.into(),
                writes: Vec::new(),
                removes: vec![token.key.into_bytes()],
            });
        let txid = self.write_here(Arc::new(ws), true).await?;
        tracing::info!(%node_id, raft_id, address = %request.address, %txid, "admitted a node");
        Ok(JoinResponse {
            node_id,
            raft_id,
            node_cert_pem,
            service_cert_pem: self.data.keys.service_cert_pem.clone(),
            service_key_pem: self.data.service_key_pem.clone(),
            ledger_secret_hex: hex::encode(self.data.keys.secret.as_bytes()),
            chunk_size: self.chunk_size,
            admitted_at: txid.to_string(),
            trusted_node_certs: self.trusted_node_certs(),
        })
    }

    /// Retires a node for an operator (see [`LedgerNode::perform`]): records it `Retired`; the
    /// primary then removes it from Raft. Returns the transaction that retired it.
    pub async fn retire(&self, caller: Option<&Caller>, node_id: &str) -> Result<TxId, NodeError> {
        self.perform(
            caller,
            Op::Retire {
                node_id: node_id.to_owned(),
            },
        )
        .await
    }

    /// On the primary: the write set that retires `node_id`, if it may be retired.
    fn retire_write_set(&self, node_id: &str) -> Result<EntryBuilder, NodeError> {
        let cluster = self.cluster();
        let Some(rec) = cluster.nodes.get(node_id) else {
            return Err(NodeError::Refused(format!(
                "no node {node_id} in this service"
            )));
        };
        if rec.status == "Retired" {
            return Err(NodeError::Refused(format!(
                "node {node_id} is already retired"
            )));
        }
        let active = cluster
            .nodes
            .values()
            .filter(|r| r.status != "Retired")
            .count();
        if active <= 1 {
            return Err(NodeError::Refused(
                "the last node of a service cannot be removed".into(),
            ));
        }
        let raft_id = rec.raft_id.or_else(|| raft_id_of(node_id)).unwrap_or(0);
        let address = rec
            .address
            .clone()
            .or_else(|| {
                self.raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .get_node(&raft_id)
                    .map(|n| n.addr.clone())
            })
            .unwrap_or_default();
        Ok(EntryBuilder::default().map(MapWrites::with_writes(
            vellum_core::tables::NODES_INFO,
            vec![(
                node_id.as_bytes().to_vec(),
                node_info_value("Retired", raft_id, &address),
            )],
        )))
    }

    /// Gives `user_id` `role`, for an Administrator (see [`LedgerNode::perform`]); answers once
    /// applied here.
    pub async fn set_user_role(
        &self,
        caller: Option<&Caller>,
        user_id: &str,
        role: Role,
    ) -> Result<TxId, NodeError> {
        let user_id = user_id.to_owned();
        self.perform(caller, Op::SetRole { user_id, role }).await
    }

    /// Removes `user_id`, for an Administrator (see [`LedgerNode::perform`]); answers once
    /// applied here.
    pub async fn remove_user(
        &self,
        caller: Option<&Caller>,
        user_id: &str,
    ) -> Result<TxId, NodeError> {
        let user_id = user_id.to_owned();
        self.perform(caller, Op::RemoveUser { user_id }).await
    }

    /// Users and roles, as of the last applied transaction.
    pub fn users(&self) -> crate::users::Users {
        self.state.users()
    }

    /// The role of `user_id`, if it is a user.
    pub fn role_of(&self, user_id: &str) -> Option<crate::users::Role> {
        self.state.role_of(user_id)
    }

    /// Governance: the members and constitution the service started with (genesis, seqno 1)
    /// and its current nodes.
    pub fn governance(&self) -> Result<Governance, NodeError> {
        let (_, ws) = self.ledger.engine().write_set(1)?;
        let map = |name: &str| ws.maps.iter().find(|m| m.name == name);
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let members = map(vellum_core::tables::MEMBERS_CERTS)
            .map(|m| m.writes.iter().map(|(k, v)| (text(k), text(v))).collect())
            .unwrap_or_default();
        let cluster = self.cluster();
        let nodes = if cluster.certs.is_empty() {
            map(vellum_core::tables::NODES_ENDORSED_CERTIFICATES)
                .map(|m| m.writes.iter().map(|(k, v)| (text(k), text(v))).collect())
                .unwrap_or_default()
        } else {
            cluster
                .certs
                .iter()
                .filter(|(id, _)| cluster.nodes.get(*id).is_none_or(|n| n.status != "Retired"))
                .map(|(id, pem)| (id.clone(), pem.clone()))
                .collect()
        };
        let constitution = map(vellum_core::tables::CONSTITUTION)
            .and_then(|m| m.writes.first())
            .and_then(|(_, v)| serde_json::from_slice::<String>(v).ok())
            .unwrap_or_default();
        Ok(Governance {
            members,
            nodes,
            constitution,
            measurement: vellum_ledger::genesis::VIRTUAL_MEASUREMENT,
        })
    }

    fn stop_reason(&self) -> String {
        self.ledger
            .engine()
            .poisoned()
            .map_or_else(|| "the node stopped".to_owned(), str::to_owned)
    }

    /// Appends an application entry to `collection` for the process embedding the node (on
    /// the primary only; see [`LedgerNode::perform`]).
    pub async fn append(&self, collection: &str, contents: &str) -> Result<TxId, NodeError> {
        self.append_as(None, collection, contents).await
    }

    /// Appends an application entry to `collection` for a Contributor (see
    /// [`LedgerNode::perform`]).
    pub async fn append_as(
        &self,
        caller: Option<&Caller>,
        collection: &str,
        contents: &str,
    ) -> Result<TxId, NodeError> {
        let op = Op::Append {
            collection: collection.to_owned(),
            contents: contents.to_owned(),
        };
        self.perform(caller, op).await
    }

    /// The status of a transaction (CCF §8).
    pub fn status(&self, txid: TxId) -> TxStatus {
        let committed = self.commit.borrow().committed;
        let engine = self.ledger.engine();
        tx_status(
            &View {
                engine: &engine,
                committed,
            },
            txid,
        )
    }

    /// The status to report to clients: as [`LedgerNode::status`], except that a backup reports
    /// a transaction of the current view or an earlier one that it has not received yet as
    /// Pending (it is behind the primary, which may well have it) rather than Unknown. Ids
    /// from views that do not exist yet stay Unknown.
    pub fn client_status(&self, txid: TxId) -> TxStatus {
        match self.status(txid) {
            TxStatus::Unknown => {
                let m = self.raft.metrics();
                let m = m.borrow_watched();
                if m.current_leader != Some(self.raft_id) && txid.view <= m.current_term + 1 {
                    TxStatus::Pending
                } else {
                    TxStatus::Unknown
                }
            }
            s => s,
        }
    }

    /// Seqno up to which every transaction is Committed.
    pub fn committed_seqno(&self) -> u64 {
        self.commit.borrow().committed
    }

    /// The last transaction id in the ledger.
    pub fn last_txid(&self) -> Option<TxId> {
        self.ledger.engine().last_txid()
    }

    /// Waits until `txid` is Committed or Invalid (or the timeout passes); returns the status.
    pub async fn wait_committed(
        &self,
        txid: TxId,
        timeout: Duration,
    ) -> Result<TxStatus, NodeError> {
        let wait = async {
            let mut seqno = txid.seqno;
            loop {
                match self.waiters.wait(seqno) {
                    CommitWait::Reached => {}
                    CommitWait::Waiting(rx) => {
                        if rx.await.is_err() {
                            return Err(NodeError::Stopped(self.stop_reason()));
                        }
                    }
                    CommitWait::Closed => return Err(NodeError::Stopped(self.stop_reason())),
                }
                let s = self.status(txid);
                if matches!(s, TxStatus::Committed | TxStatus::Invalid) {
                    return Ok(s);
                }
                // Not an answer yet (this node lacks what decides it): look at the next commit.
                seqno = self.commit.borrow().committed + 1;
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
        let (_, ws) = self.ledger.engine().write_set(txid.seqno)?;
        Ok(entry_of(txid, &ws))
    }

    /// The latest applied entry of `collection`.
    pub fn latest(&self, collection: &str) -> Result<Option<LedgerEntry>, NodeError> {
        let Some(seqno) = self.index.latest(collection)? else {
            return Ok(None);
        };
        let (txid, ws) = self.ledger.engine().write_set(seqno)?;
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
        let engine = self.ledger.engine();
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
        Ok(self.ledger.engine().receipt(txid, committed)?)
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
            .map_err(|e| NodeError::Raft(e.to_string()))?;
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

/// The default of [`NodeConfig::max_collections`].
pub const DEFAULT_MAX_COLLECTIONS: usize = 5000;

/// How close to the primary's log a learner must be to become a voter.
const PROMOTE_LAG: u64 = 100;

/// On the primary, drives the Raft membership towards what the ledger says (CCF's
/// `nodes.info` is the desired state): admitted (`Trusted`) nodes are added as learners, made
/// voters once caught up, and `Retired` nodes are removed. One change at a time; a new primary
/// picks up where an old one stopped.
async fn reconciler(
    raft: Raft,
    state: Arc<ServiceState>,
    me: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use openraft::ChangeMembers;
    use std::collections::BTreeSet;
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (membership, last_index, replication) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.current_leader != Some(me) {
                continue;
            }
            (
                m.membership_config.membership().clone(),
                m.last_log_index.unwrap_or(0),
                m.replication.clone().unwrap_or_default(),
            )
        };
        let cluster = state.cluster();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut change = None;
        for (node_id, rec) in &cluster.nodes {
            let Some(id) = rec.raft_id.or_else(|| raft_id_of(node_id)) else {
                continue;
            };
            let present = membership.get_node(&id).is_some();
            match rec.status.as_str() {
                "Retired" if voters.contains(&id) && voters.len() > 1 => {
                    change = Some((
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        format!("removing retired node {node_id}"),
                    ));
                }
                "Retired" if present && !voters.contains(&id) => {
                    change = Some((
                        ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                        format!("removing retired learner {node_id}"),
                    ));
                }
                "Trusted" if !present => {
                    if let Some(addr) = &rec.address {
                        change = Some((
                            ChangeMembers::AddNodes(BTreeMap::from([(id, Node::new(addr))])),
                            format!("adding node {node_id} at {addr} as a learner"),
                        ));
                    }
                }
                "Trusted" if !voters.contains(&id) => {
                    // Promote only a learner that has acknowledged entries and is close behind.
                    let matched = replication.get(&id).copied().flatten().map(|l| l.index);
                    if matched.is_some_and(|m| m + PROMOTE_LAG >= last_index) {
                        change = Some((
                            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                            format!("node {node_id} caught up: making it a voter"),
                        ));
                    }
                }
                _ => {}
            }
            if change.is_some() {
                break;
            }
        }
        let Some((c, what)) = change else { continue };
        tracing::info!("{what}");
        if let Err(e) = raft.change_membership(c, false).await {
            tracing::warn!(error = %e, "membership change failed: {what}");
        }
    }
}

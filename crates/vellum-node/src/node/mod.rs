//! A ledger node: its data directory, the Raft log over the ledger, the signer, and the read
//! API (entries by id, latest in a collection, ranges, status, receipts).
//!
//! `LedgerNode` is one type; its methods live with their role: `lifecycle` (start and stop),
//! `writes` (operations on the primary, forwarding), `admission` (the cluster: trusted
//! nodes, joining, retiring, the membership reconciler) and `reads`.

mod admission;
pub(crate) mod from_snapshot;
mod governance;
mod health;
mod lifecycle;
mod reads;
pub mod retention;
mod runs;
pub mod snapshots;
mod writes;

pub use health::NodeHealth;
pub use writes::Performed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vellum_core::TxId;
use vellum_ledger::live_index::LiveIndex;

use crate::config::{ConfigError, rule};
use crate::datadir::{Bootstrap, DataDir};
use crate::raft::Raft;
use crate::raft::ledger::Ledger;
use crate::raft::network::PeerClient;
use crate::raft::state_machine::{CommitState, CommitWaiters};
use crate::service_state::ServiceState;
use crate::signing::SignaturePolicy;
pub use crate::signing::{ALONE_SIGNATURE_DELAY, CLUSTER_SIGNATURE_DELAY};

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
    /// A snapshot of the state (CCF's format, in `DATA/snapshots`) every this many committed
    /// transactions; 0: none.
    pub snapshot_interval: u64,
    /// The most collections the ledger may hold: the primary refuses a write that would
    /// start one more (writes forwarded by backups included).
    pub max_collections: usize,
    /// What a new service starts with (ignored once provisioned).
    pub bootstrap: Bootstrap,
    /// The key the data directory's secrets are sealed with ([`crate::seal`]): needed to open
    /// a sealed directory; a new one is sealed with it. `None`: secrets in the clear.
    pub seal: Option<crate::seal::SealKey>,
    /// The PKCS#11 key the service key is kept in, where it signs ([`crate::hsm::TokenSigner`]):
    /// a new service makes it there; a service made so needs it at every start. `None`: the
    /// service key is a file (sealed or not).
    pub service_key_token: Option<crate::hsm::Pkcs11Uri>,
    /// The archive the ledger is copied to ([`crate::archive`]): chunks this node dropped
    /// from its disk are fetched back from it, and a ledger with dropped chunks opens only
    /// with it.
    pub archive: Option<crate::archive::Archive>,
    /// Keep only the chunks of about the last this many committed transactions on disk; older
    /// ones are dropped once archived ([`retention`]). Needs `archive`. `None`: keep all.
    pub retain_transactions: Option<u64>,
}

/// The smallest ledger chunk size a node accepts.
pub const MIN_CHUNK_SIZE: u64 = 4096;
/// The signature delays a node accepts.
pub const SIGNATURE_DELAYS: std::ops::RangeInclusive<Duration> =
    Duration::from_micros(100)..=Duration::from_secs(60);

impl NodeConfig {
    /// Checks every setting against its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rule(
            self.signature_interval >= 1,
            "signature-interval",
            "at least 1",
            self.signature_interval,
        )?;
        rule(
            self.chunk_size >= MIN_CHUNK_SIZE,
            "chunk-size",
            "at least 4096 bytes",
            self.chunk_size,
        )?;
        if let Some(n) = self.retain_transactions {
            rule(n >= 1, "retain-transactions", "at least 1", n)?;
        }
        Ok(())
    }

    /// [`NodeConfig::validate`], and that what needs an archive has one.
    pub fn validate_with_archive(&self) -> Result<(), ConfigError> {
        self.validate()?;
        if let Some(n) = self.retain_transactions {
            rule(
                self.archive.is_some(),
                "retain-transactions",
                "an archive to keep older chunks in (--archive)",
                n,
            )?;
        }
        if let Some(d) = self.signature_delay {
            rule(
                SIGNATURE_DELAYS.contains(&d),
                "signature-delay-ms",
                "between 0.1 and 60000",
                d.as_secs_f64() * 1000.0,
            )?;
        }
        Ok(())
    }

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
            snapshot_interval: 0,
            bootstrap: Bootstrap::default(),
            seal: None,
            service_key_token: None,
            archive: None,
            retain_transactions: None,
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

/// A node of the cluster, as listed by [`LedgerNode::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// CCF node id.
    pub node_id: String,
    /// CCF status from `nodes.info` (`Trusted`, `Retired`).
    pub status: vellum_core::tables::NodeStatus,
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
    /// The service identity now (a rotation replaces it).
    identity: Arc<crate::identity::LiveIdentity>,
    stop: tokio::sync::watch::Sender<bool>,
    signer: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    peers: PeerClient,
    chunk_size: u64,
    max_collections: usize,
    /// See [`NodeConfig::snapshot_interval`].
    snapshot_interval: u64,
    /// The snapshotter's memory (the state machine reports evidence to it).
    snapshots: Arc<snapshots::Snapshots>,
    /// What the archiver copied, once one runs.
    archive: std::sync::OnceLock<Arc<crate::archive::ArchiveProgress>>,
    join_lock: tokio::sync::Mutex<()>,
    /// User-defined functions' runs (on the primary).
    scripts: crate::scripts::Scripts,
}

impl std::fmt::Debug for LedgerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerNode")
            .field("raft_id", &self.raft_id)
            .field("data_dir", &self.data.root)
            .finish()
    }
}

/// The default of [`NodeConfig::max_collections`].
pub const DEFAULT_MAX_COLLECTIONS: usize = 5000;

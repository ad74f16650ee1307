//! A Vellum ledger node: the ledger files are the Raft log.
//!
//! - [`service::Service`] starts a whole service node from a validated
//!   [`service::ServiceConfig`]: the data directory (provisioned, or joined to a running
//!   service), the node, its HTTPS API ([`server`]) and its token issuers. `vellum serve` and
//!   the tests start nodes through it.
//! - [`node::LedgerNode`] is the node itself, its methods by role (`node/`: lifecycle, writes,
//!   admission, reads): writes, status, entries, ranges, receipts, the cluster.
//! - [`raft`] holds everything that names openraft: the type configuration, the ledger as Raft
//!   sees it, the log store (signature transactions filled in by the primary at append and
//!   checked by replicas), group commit, the state machine over the entry index, the peer
//!   transport. When to sign is the signature policy's alone; what the governance tables say is
//!   the state machine's.
//!
//! `docs/architecture.md` has the module map and where a new feature goes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vellum_node::NodeError> {
//! use std::time::Duration;
//! use vellum_node::node::{LedgerNode, NodeConfig};
//!
//! let node = LedgerNode::start(NodeConfig::new("./vellum-data")).await?;
//! let txid = node.append("my-collection", "hello").await?;
//! let status = node.wait_committed(txid, Duration::from_secs(5)).await?;
//! let receipt = node.receipt(txid)?;
//! println!("{txid} {status:?} signed at {}", receipt.signature);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod config;
pub mod datadir;
pub mod files;
pub mod node;
pub mod ops;
pub mod raft;
pub mod server;
pub mod service;
mod service_state;
mod signing;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod users;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use vellum_ledger::engine::EngineError;
use vellum_ledger::index::IndexError;

pub use node::{LedgerEntry, LedgerNode, NodeConfig};

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration breaks a rule (nothing was started).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The node's TLS identity (for the node channel) cannot be used.
    #[error(transparent)]
    Tls(#[from] server::tls::TlsError),
    /// The data directory could not be provisioned or read.
    #[error("data directory: {0}")]
    DataDir(String),
    /// The ledger.
    #[error(transparent)]
    Engine(EngineError),
    /// An entry this node's ledger files hold is damaged (its GCM tag or framing fails): it is
    /// refused, never served.
    #[error(
        "the transaction at seqno {seqno} cannot be read from this node's ledger files: {message}"
    )]
    Damaged {
        /// Its seqno.
        seqno: u64,
        /// What is wrong.
        message: String,
    },
    /// The transaction is committed but the signature covering it is not yet applied here:
    /// its receipt is not ready.
    #[error("no committed signature covers transaction {0} yet")]
    ReceiptNotReady(vellum_core::TxId),
    /// The index.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Raft could not start or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// This node is not the primary.
    #[error("this node is not the primary (primary: {0:?})")]
    NotPrimary(Option<u64>),
    /// The node no longer accepts writes (an I/O error stopped it, or it shut down).
    #[error("the node does not accept writes: {0}")]
    Stopped(String),
    /// The request was refused as invalid (nothing was written).
    #[error("{0}")]
    Refused(String),
    /// The caller may not do this (nothing was written).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// A write would start a collection past the limit (nothing was written); holds how many
    /// the ledger has.
    #[error("the ledger already has {0} collections, the limit")]
    TooManyCollections(u64),
    /// A request forwarded to the primary failed; it may or may not have been done.
    #[error("forwarding to the primary: {0}")]
    Forward(String),
}

impl From<EngineError> for NodeError {
    fn from(e: EngineError) -> NodeError {
        match e {
            EngineError::Entry { seqno, message } => NodeError::Damaged { seqno, message },
            EngineError::NotCovered(txid) => NodeError::ReceiptNotReady(txid),
            other => NodeError::Engine(other),
        }
    }
}

impl NodeError {
    fn from_write(e: openraft::error::ClientWriteError<raft::types::TypeConfig>) -> NodeError {
        match e {
            openraft::error::ClientWriteError::ForwardToLeader(f) => {
                NodeError::NotPrimary(f.leader_id)
            }
            other => NodeError::Raft(other.to_string()),
        }
    }
}

/// Locks a mutex, recovering from poisoning: no code holding these locks leaves shared state
/// half-updated on panic in a way later code relies on (the ledger store poisons itself on
/// I/O errors instead).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

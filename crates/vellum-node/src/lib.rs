//! A Vellum ledger node: the ledger files are the Raft log.
//!
//! - [`service::Service`] starts a whole service node from a validated
//!   [`service::ServiceConfig`]: the data directory (provisioned, or joined to a running
//!   service), the node, its HTTPS API ([`server`]) and its token issuers. `vellum serve` and
//!   the tests start nodes through it.
//! - [`node::LedgerNode`] is the node itself, its methods by role (`node/`: lifecycle, writes,
//!   admission, reads): writes, status, entries, ranges, receipts, the cluster.
//! - `raft` holds everything that names openraft: the type configuration, the ledger as Raft
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

pub mod archive;
pub mod cluster;
pub mod config;
mod datadir;
pub mod disaster;
pub mod endpoints;
mod error;
pub mod functions;
pub mod gov;
pub mod hsm;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod ops;
mod raft;
pub mod recovery;
pub mod rekey;
pub mod scripts;
pub mod seal;
pub mod server;
pub mod service;
mod service_state;
mod signing;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod users;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use datadir::{Bootstrap, BootstrapUser};
pub use error::{
    DataDirError, ForwardError, Malformed, NodeError, RaftFailure, RaftStep, Refusal, Stopped,
};
pub use node::{LedgerEntry, LedgerNode, NodeConfig};

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

/// Applies the writes and removals of a committed map to `records` (keys as UTF-8), as the
/// node follows its governance tables (users, roles, functions, nodes, tokens); values `parse`
/// refuses (none the API writes) are skipped and logged.
pub(crate) fn apply_records<T>(
    records: &mut std::collections::BTreeMap<String, T>,
    m: &vellum_core::entry::MapWrites,
    parse: impl Fn(&[u8]) -> Result<T, vellum_core::tables::SchemaError>,
) {
    let text = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    for (k, v) in &m.writes {
        match parse(v) {
            Ok(r) => {
                records.insert(text(k), r);
            }
            Err(e) => tracing::warn!(table = %m.name, error = %e, "skipping a malformed record"),
        }
    }
    for k in &m.removes {
        records.remove(&text(k));
    }
}

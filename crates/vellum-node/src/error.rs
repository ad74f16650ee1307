//! The node's errors: [`NodeError`] and the typed reasons its variants carry.
//!
//! A handler decides an HTTP status from the variant alone; the reasons a refusal or a
//! forwarded failure carry cross the node channel as they are (they are serde types), so a
//! backup answers a forwarded write with the primary's reason, not a paraphrase.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vellum_ledger::engine::EngineError;
use vellum_ledger::index::IndexError;

use crate::raft::network::PeerError;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration breaks a rule (nothing was started).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node's TLS identity (for the node channel) cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::server::tls::TlsError),
    /// The data directory could not be provisioned or read. (Not a `source`: its text already
    /// says all its causes say, and a chain of causes would print them twice.)
    #[error("data directory: {0}")]
    DataDir(DataDirError),
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
        /// What is wrong, as the ledger reader says it.
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
    #[error(transparent)]
    Raft(#[from] RaftFailure),
    /// This node is not the primary.
    #[error("this node is not the primary (primary: {0:?})")]
    NotPrimary(Option<u64>),
    /// The node no longer accepts writes (an I/O error stopped it, or it shut down).
    #[error("the node does not accept writes: {0}")]
    Stopped(#[from] Stopped),
    /// The request was refused as invalid (nothing was written).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The caller may not do this (nothing was written).
    #[error("not allowed: {user_id} may not do this")]
    NotAllowed {
        /// The caller's user id.
        user_id: String,
    },
    /// A write would start a collection past the limit (nothing was written); holds how many
    /// the ledger has.
    #[error("the ledger already has {0} collections, the limit")]
    TooManyCollections(u64),
    /// A chunk this node dropped past its retention could not be fetched back from the
    /// archive (or the copy fetched did not match what the node recorded).
    #[error("{chunk} is kept in the archive only and could not be fetched back: {message}")]
    Archive {
        /// The chunk's file name.
        chunk: String,
        /// What went wrong.
        message: String,
    },
    /// A request forwarded to the primary failed; it may or may not have been done.
    #[error("forwarding to the primary: {0}")]
    Forward(#[from] ForwardError),
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
    pub(crate) fn from_write(
        e: openraft::error::ClientWriteError<crate::raft::types::TypeConfig>,
    ) -> NodeError {
        match e {
            openraft::error::ClientWriteError::ForwardToLeader(f) => {
                NodeError::NotPrimary(f.leader_id)
            }
            other => RaftFailure::new(RaftStep::Write, other).into(),
        }
    }
}

/// Why the data directory could not be provisioned or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// A file or directory could not be read, written or created, or is not private.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are not what the node wrote there.
    #[error("{}: {problem}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Malformed,
    },
    /// A key, certificate or identity could not be made or read.
    #[error("{what}: {source}")]
    Crypto {
        /// Which one.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The secrets could not be sealed or unsealed.
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    /// The service key's PKCS#11 token.
    #[error("the service key: {0}")]
    ServiceKey(String),
    /// The identity a service sent a joining node does not fit it.
    #[error("the certificate received is not for this node's key")]
    NotOurCertificate,
    /// The ledger, index or vote could not be opened over the directory.
    #[error("{what}: {source}")]
    Open {
        /// Which part.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a data directory file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Not UTF-8 text.
    #[error("not UTF-8")]
    NotUtf8,
    /// Not the JSON the node writes.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Not ledger secrets: 64 hexadecimal characters, then a line `FROM HEX` per rekey.
    #[error("not ledger secrets (64 hex characters, then a line `SEQNO HEX` per rekey)")]
    NotHexSecret,
    /// Not PEM certificates.
    #[error("not PEM certificates: {0}")]
    Pem(String),
}

impl DataDirError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
        move |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `path`'s contents are wrong.
    pub(crate) fn malformed(path: &Path, problem: impl Into<Malformed>) -> DataDirError {
        DataDirError::Malformed {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// A key, certificate or identity `what` failed.
    pub(crate) fn crypto<E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
    ) -> impl FnOnce(E) -> DataDirError {
        move |e| DataDirError::Crypto {
            what,
            source: Box::new(e),
        }
    }

    /// Opening part `what` of the node failed.
    pub(crate) fn open(what: &'static str) -> impl FnOnce(std::io::Error) -> DataDirError {
        move |source| DataDirError::Open { what, source }
    }
}

/// A step of Raft that failed, with openraft's error.
#[derive(Debug, thiserror::Error)]
#[error("raft: {step}: {source}")]
pub struct RaftFailure {
    /// What the node was doing.
    pub step: RaftStep,
    /// What openraft said.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl RaftFailure {
    pub(crate) fn new(step: RaftStep, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        RaftFailure {
            step,
            source: Box::new(e),
        }
    }
}

/// What the node was doing when Raft failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaftStep {
    /// Checking the Raft configuration.
    #[error("configuration")]
    Config,
    /// Starting Raft over the ledger.
    #[error("starting")]
    Start,
    /// Founding the service's Raft group.
    #[error("founding the group")]
    Initialize,
    /// Recovering the state machine from the log.
    #[error("recovering the state machine")]
    Recover,
    /// Proposing a write.
    #[error("proposing a write")]
    Write,
    /// Shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// Why a node no longer accepts writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Stopped {
    /// It shut down (or is shutting down).
    #[error("the node stopped")]
    ShutDown,
    /// An I/O error on its ledger stopped it: nothing after the error is acknowledged.
    #[error("{0}")]
    LedgerFailed(String),
}

/// Why a request was refused as invalid. These cross the node channel: a backup answers a
/// forwarded request with the primary's refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A backup may forward only writes that name their caller.
    #[error("this node is a backup: a write it forwards must name its caller")]
    AnonymousForward,
    /// A join token record that is not a digest with a near expiry.
    #[error("not a join token record")]
    NotATokenRecord,
    /// Text that is not a join token.
    #[error("{}", crate::cluster::NotAJoinToken)]
    NotAJoinToken,
    /// The join token is for another service.
    #[error("the join token was made for another service")]
    TokenForAnotherService,
    /// The join token has expired.
    #[error("the join token has expired")]
    TokenExpired,
    /// The join token is unknown, or was spent.
    #[error("the join token is unknown or already spent")]
    TokenUnknown,
    /// The joining node's certificate cannot be read.
    #[error("the joining node's certificate: {0}")]
    JoiningCertificate(String),
    /// The joining node is part of the service already.
    #[error("node {0} is already part of this service")]
    AlreadyJoined(String),
    /// The joining node's address is not `HOST:PORT`.
    #[error("address {0:?} is not HOST:PORT with a port")]
    NotHostPort(String),
    /// The service key could not endorse the joining node.
    #[error("cannot endorse the joining node: {0}")]
    CannotEndorse(String),
    /// No such node.
    #[error("no node {0} in this service")]
    NoSuchNode(String),
    /// The node is retired already.
    #[error("node {0} is already retired")]
    AlreadyRetired(String),
    /// A service keeps at least one node.
    #[error("the last node of a service cannot be removed")]
    LastNode,
    /// An entry's tags break ACL's rules.
    #[error(transparent)]
    Tags(vellum_core::tables::TagError),
    /// A user given no roles.
    #[error("a user holds at least one role; to remove a user, delete it")]
    NoRoles,
    /// A user given a custom role that is not defined.
    #[error("no role {0:?}: define it with PUT /app/roles first")]
    UndefinedRole(String),
    /// A custom role named like a built-in one.
    #[error("{0:?} is a built-in role; custom roles take other names")]
    BuiltInRoleName(String),
    /// A role definition beyond the limits.
    #[error("role {0:?}: {1}")]
    BadRoleDefinition(String, String),
    /// No such custom role.
    #[error("no role {0:?}")]
    NoSuchRole(String),
    /// A function whose code does not compile.
    #[error("function {0:?} does not compile: {1}")]
    FunctionDoesNotCompile(String, String),
    /// No such user-defined function.
    #[error("no function {0:?}")]
    NoSuchFunction(String),
    /// A hook threw or hit a limit: nothing was written.
    #[error("{0}")]
    HookFailed(String),
    /// More hooks than a write may run.
    #[error("a write may run at most {} hooks", crate::scripts::MAX_HOOKS)]
    TooManyHooks,
    /// A function stored while endpoints are deployed (ACL's words).
    #[error(
        "User defined functions cannot be created when user defined endpoints are defined. \
         Please apply an empty application bundle for user defined endpoints and retry"
    )]
    EndpointsDeployed,
    /// A bundle with endpoints deployed while functions exist.
    #[error(
        "User defined endpoints cannot be deployed while user defined functions exist. \
         Please delete every user defined function and retry"
    )]
    FunctionsExist,
    /// A bundle that cannot be served.
    #[error("the bundle: {0}")]
    BadBundle(String),
    /// The JavaScript engine could not run (not the function's fault).
    #[error("{0}")]
    Sandbox(String),
    /// A join without a token on a service that admits nodes by token.
    #[error("this service admits nodes by join token (its join policy): ask an operator for one")]
    TokenRequired,
    /// Too many nodes wait for a vote already.
    #[error("{0} nodes already wait to be trusted: the members must trust or remove one first")]
    TooManyPending(usize),
    /// The service key is kept in this node's PKCS#11 token: it cannot be handed to a joiner.
    #[error(
        "the service key is kept in a PKCS#11 token: it cannot be given to a joining node (join nodes to services whose key is sealed instead)"
    )]
    ServiceKeyInToken,
    /// A joining node's certificate signing request is missing, unreadable, or not for the
    /// key it presented.
    #[error("the joining node's certificate signing request: {0}")]
    JoiningRequest(String),
}

impl From<DataDirError> for NodeError {
    fn from(e: DataDirError) -> NodeError {
        NodeError::DataDir(e)
    }
}

impl From<crate::cluster::NotAJoinToken> for Refusal {
    fn from(_: crate::cluster::NotAJoinToken) -> Refusal {
        Refusal::NotAJoinToken
    }
}

/// Why a request forwarded to the primary failed: it may or may not have been done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The node channel call failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The primary failed to do it; its message.
    #[error("the primary failed: {0}")]
    Failed(String),
    /// The primary answered something that does not answer this request.
    #[error("the primary answered {0}")]
    Unexpected(&'static str),
    /// The primary applied the write; this node has not applied it yet.
    #[error("the primary applied seqno {0}, this node has not yet")]
    NotAppliedHere(u64),
}

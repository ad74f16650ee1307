//! The Raft type configuration and the log payload.
//!
//! Every Raft log entry is a ledger transaction: log index `i` is seqno `i + 1` and term `t` is
//! view `t + 1` (openraft's first entry, the initial membership, has index 0 and term 0; CCF has
//! neither a seqno 0 nor a view 0). Blank and membership entries are recorded in the public
//! table [`RAFT_TABLE`], so they are Merkle leaves like any other transaction.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::tables;

/// Raft node ids.
pub type NodeId = u64;
/// What Raft knows of a node: its node-to-node address.
pub type Node = openraft::BasicNode;
/// A cluster membership.
pub type Membership = openraft::Membership<NodeId, Node>;

/// Vellum's Raft types: standard Raft leader ids (one leader per term, so a log id is exactly
/// (term, index), i.e. a CCF transaction id). Written out rather than with openraft's
/// `declare_raft_types!`, which cannot replace the responder type.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Tx;
    type R = Applied;
    type NodeId = NodeId;
    type Node = Node;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = Payload;
    type Entry =
        openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = QuietResponder<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Delivers a write's result to a oneshot channel; a writer that stopped waiting is not an
/// event worth a log line (openraft's stock responders warn about it).
pub struct QuietResponder<T>(tokio::sync::oneshot::Sender<T>);

impl<T> QuietResponder<T> {
    /// A responder and its receiver.
    pub fn new_pair() -> (QuietResponder<T>, tokio::sync::oneshot::Receiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (QuietResponder(tx), rx)
    }
}

impl<T: openraft::OptionalSend + 'static> openraft::raft::responder::Responder<TypeConfig, T>
    for QuietResponder<T>
{
    fn on_complete(self, result: T) {
        let _ = self.0.send(result);
    }
}

/// A Raft log id.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A Raft vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership with the log id that set it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;

/// The public table that records Raft's own entries (blank and membership).
pub const RAFT_TABLE: &str = tables::RAFT.name();
const RAFT_KEY: &[u8] = b"entry";
/// A membership entry also writes its record under this key, which blank entries leave alone:
/// a snapshot's state (the last write of each key) then holds the last membership, which a
/// node starting from the snapshot needs, not only the last Raft record.
pub(crate) const MEMBERSHIP_RECORD_KEY: &[u8] = b"membership";

/// The transaction id of a log id.
pub fn txid_of(log_id: &LogId) -> TxId {
    TxId::new(log_id.leader_id.term + 1, log_id.index + 1)
}

/// The log id of a transaction id (`None` for view 0 or seqno 0, which no transaction has).
pub fn log_id_of(txid: TxId) -> Option<LogId> {
    Some(LogId::new_term_index(
        txid.view.checked_sub(1)?,
        txid.seqno.checked_sub(1)?,
    ))
}

/// Sends the transaction id back to the writer once the primary has assigned it.
#[derive(Clone, Default)]
pub struct Ticket(Arc<Mutex<Option<tokio::sync::oneshot::Sender<TxId>>>>);

impl Ticket {
    /// A ticket and the receiver of its transaction id.
    pub fn new() -> (Ticket, tokio::sync::oneshot::Receiver<TxId>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Ticket(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Delivers the transaction id (once; later calls do nothing).
    pub fn assigned(&self, txid: TxId) {
        let sender = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = sender {
            let _ = s.send(txid);
        }
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket")
    }
}

/// Application data of a Raft entry, as proposed on the primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Tx {
    /// A write set to record (an application entry or a governance change).
    Write {
        /// The write set.
        ws: Arc<EntryBuilder>,
        /// Receives the transaction id when the primary appends it (local only).
        #[serde(skip)]
        ticket: Option<Ticket>,
    },
    /// A signature transaction: the primary's log store fills it in when it appends the entry,
    /// because only then are its seqno and the tree it signs known.
    Sign,
}

impl fmt::Display for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tx::Write { ws, .. } => write!(f, "write ({} maps)", ws.maps.len()),
            Tx::Sign => f.write_str("sign"),
        }
    }
}

/// What a ledger transaction is, read off its write set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    /// Raft's blank entry (a new primary's first entry).
    Blank,
    /// A Raft membership change (the first one also carries genesis).
    Membership,
    /// A signature transaction.
    Signature,
    /// Anything else: application entries and governance.
    Write,
}

/// A ledger transaction as stored: what replication sends and the state machine applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The complete write set.
    pub ws: EntryBuilder,
    /// What it is.
    pub kind: TxKind,
    /// The membership it records, if any.
    pub membership: Option<Membership>,
}

/// The value recorded in [`RAFT_TABLE`]: `{"type":"blank"}` or
/// `{"type":"membership","membership":{...}}`. (A plain struct rather than an internally
/// tagged enum: serde cannot read the membership's integer map keys through one.)
#[derive(Serialize, Deserialize)]
struct RaftRecord {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    membership: Option<Membership>,
}

impl RaftRecord {
    fn blank() -> RaftRecord {
        RaftRecord {
            kind: "blank".into(),
            membership: None,
        }
    }
}

/// Why a stored transaction could not be read as a Raft entry.
#[derive(Debug, thiserror::Error)]
#[error("malformed {RAFT_TABLE} record: {0}")]
pub struct RecordError(String);

impl Stored {
    /// Reads a stored write set.
    pub fn from_write_set(ws: EntryBuilder) -> Result<Stored, RecordError> {
        let (kind, membership) = match ws
            .maps
            .iter()
            .find(|m| m.name == RAFT_TABLE)
            .and_then(|m| m.get(RAFT_KEY))
        {
            Some(v) => {
                let r: RaftRecord =
                    serde_json::from_slice(v).map_err(|e| RecordError(e.to_string()))?;
                match (r.kind.as_str(), r.membership) {
                    ("blank", None) => (TxKind::Blank, None),
                    ("membership", Some(m)) => (TxKind::Membership, Some(m)),
                    (k, _) => return Err(RecordError(format!("unexpected record type {k:?}"))),
                }
            }
            None if tables::is_signature(ws.maps.iter().map(|m| m.name.as_str())) => {
                (TxKind::Signature, None)
            }
            None => (TxKind::Write, None),
        };
        Ok(Stored {
            ws,
            kind,
            membership,
        })
    }
}

fn raft_map(record: &RaftRecord) -> MapWrites {
    // Serializing these two plain records cannot fail.
    let v = serde_json::to_vec(record).unwrap_or_default();
    MapWrites::with_writes(RAFT_TABLE, vec![(RAFT_KEY.to_vec(), v)])
}

/// The write set that records a blank entry.
pub fn blank_write_set() -> EntryBuilder {
    EntryBuilder::default().map(raft_map(&RaftRecord::blank()))
}

/// The write set that records a membership, after `prefix` (genesis, for the first one).
pub fn membership_write_set(
    prefix: Option<&EntryBuilder>,
    membership: &Membership,
) -> EntryBuilder {
    let mut ws = prefix.cloned().unwrap_or_default();
    let mut map = raft_map(&RaftRecord {
        kind: "membership".into(),
        membership: Some(membership.clone()),
    });
    let record = map.writes[0].1.clone();
    map.writes.push((MEMBERSHIP_RECORD_KEY.to_vec(), record));
    ws.maps.push(map);
    ws
}

/// The membership a snapshot's `public:vellum.raft` records (written under
/// [`MEMBERSHIP_RECORD_KEY`]), if it holds one.
pub(crate) fn snapshot_membership(value: &[u8]) -> Result<Membership, RecordError> {
    let r: RaftRecord = serde_json::from_slice(value).map_err(|e| RecordError(e.to_string()))?;
    match (r.kind.as_str(), r.membership) {
        ("membership", Some(m)) => Ok(m),
        (k, _) => Err(RecordError(format!("unexpected record type {k:?}"))),
    }
}

/// The payload of a Raft entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Payload {
    /// Blank (proposed by openraft).
    Blank,
    /// Membership (proposed by openraft).
    Membership(Membership),
    /// Application data (proposed by Vellum on the primary).
    Normal(Tx),
    /// A transaction read back from the ledger.
    Ledger(Arc<Stored>),
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Blank => f.write_str("blank"),
            Payload::Membership(m) => write!(f, "membership {m}"),
            Payload::Normal(Tx::Write { .. }) => f.write_str("write"),
            Payload::Normal(Tx::Sign) => f.write_str("sign"),
            Payload::Ledger(s) => write!(f, "ledger {:?}", s.kind),
        }
    }
}

impl openraft::entry::RaftPayload for Payload {
    type D = Tx;
    type NodeId = NodeId;
    type Node = Node;

    fn blank() -> Self {
        Payload::Blank
    }

    fn with_normal(self, data: Tx) -> Self {
        Payload::Normal(data)
    }

    fn with_membership(self, membership: Membership) -> Self {
        Payload::Membership(membership)
    }

    fn get_membership(&self) -> Option<Membership> {
        match self {
            Payload::Membership(m) => Some(m.clone()),
            Payload::Ledger(s) => s.membership.clone(),
            _ => None,
        }
    }
}

/// What the state machine answers for an applied entry: its transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The transaction id.
    pub txid: TxId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn log_ids_map_to_transaction_ids() {
        let l = LogId::new_term_index(1, 14);
        assert_eq!(txid_of(&l), TxId::new(2, 15));
        assert_eq!(log_id_of(TxId::new(2, 15)), Some(l));
        assert_eq!(log_id_of(TxId::new(0, 15)), None);
        assert_eq!(log_id_of(TxId::new(2, 0)), None);
    }

    #[test]
    fn raft_records_round_trip() {
        let m = Membership::new(
            vec![BTreeSet::from([16791242884927713777u64])],
            BTreeMap::from([(16791242884927713777u64, Node::new("127.0.0.1:1"))]),
        )
        .unwrap();
        let s = Stored::from_write_set(membership_write_set(None, &m)).unwrap();
        assert_eq!(s.kind, TxKind::Membership);
        assert_eq!(s.membership, Some(m));
        let b = Stored::from_write_set(blank_write_set()).unwrap();
        assert_eq!(b.kind, TxKind::Blank);
        let w = Stored::from_write_set(EntryBuilder::default()).unwrap();
        assert_eq!(w.kind, TxKind::Write);
        let mut bad = blank_write_set();
        bad.maps[0].writes[0].1 = b"{".to_vec();
        assert!(Stored::from_write_set(bad).is_err());
    }
}

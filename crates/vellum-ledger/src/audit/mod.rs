//! The offline auditor: replays a ledger directory's Merkle tree and checks every signature
//! transaction, naming the first bad transaction and what is wrong with it.
//!
//! It is exactly as strict as CCF's own verifier (`ccf.ledger.LedgerValidator` at
//! `VerificationLevel.FULL`), no more and no less: a ledger passes here if and only if it
//! passes there. `docs/formats.md` ("What the auditor checks") holds every check against
//! CCF's, and `tests/audit_differential.rs` holds the two verifiers against each other on
//! mutated ledgers.
//!
//! What CCF checks, and so what fails an audit: the chunk files' framing and positions tables;
//! every entry's header (format version 1, known flags, size) and public domain (its layout
//! and map structure, no recorded reads); the governance tables (`nodes.info`,
//! `nodes.endorsed_certificates`, `service.info` with CCF's allowed status transitions); and,
//! per signature transaction at seqno `S`, that the signed root is the root recomputed over
//! leaves `0..S`, that the node signature verifies with the certificate recorded for a known,
//! non-`Pending` node, that the COSE signature (when present) verifies with the service
//! certificate, and that both name the transaction they are in.
//!
//! What CCF does not check, but a careful reader wants to know: a transaction's seqno in its IV
//! differing from its position, the public domain's seqno differing from the IV's, the IV's
//! snapshot bit, the serialized tree of a signature differing from the recomputed tree, a
//! signature transaction holding more than the signature tables, a closed chunk not ending on
//! a signature. A later signature's root covers every byte of a transaction, so if such a
//! transaction is altered the root at the next signature does not match, and the audit fails
//! naming the transaction and what is odd about it. If the root does match, the service wrote
//! it so; the report lists it as a note, and the audit passes, as CCF's does.
//!
//! Without the ledger secret, the GCM tags and the commit-evidence digests of transactions that
//! no later signature covers (the ledger's tail) cannot be checked by anyone; with
//! [`AuditOptions::ledger_secret`] every tag and commit-evidence digest is checked too (a
//! check CCF's verifier cannot make, so only when asked for).

// Failures are returned once per audit (a cold path) and carry the whole diagnosis; boxing
// them would buy nothing measurable.
#![allow(clippy::result_large_err)]

mod ccf;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use vellum_core::crypto::{Certificate, CryptoError};
use vellum_core::entry::{
    self, EntryError, EntryType, LedgerSecret, LedgerSecrets, RawEntry, SINGLETON_KEY,
};
use vellum_core::merkle::MerkleTree;
use vellum_core::signature::{
    CoseRules, NodeSignature, RootSignatureError, verify_node_signature, verify_service_signature,
};
use vellum_core::tables::NodeStatus;
use vellum_core::{Hash, TxId, tables};

use crate::chunk::{Chunk, ChunkError, ChunkName, list_chunks};
use ccf::{Tables, b64decode, fromhex, py_eq};

/// What to audit and how.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Also check GCM tags and commit evidence (Vellum ledgers, or CCF ones with the secret).
    pub ledger_secret: Option<LedgerSecret>,
    /// Include chunks not yet named `.committed`.
    pub include_uncommitted: bool,
}

/// Why the audit failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The ledger secret given does not open the secrets the ledger's rekeys recorded.
    #[error(
        "the ledger secret given does not open the ledger's rekey history (not its latest secret?)"
    )]
    SecretChain,
    /// The directory or a file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        message: String,
    },
    /// No chunk files.
    #[error("no ledger chunk files found")]
    Empty,
    /// The chunk file is malformed.
    #[error("{0}")]
    Chunk(ChunkError),
    /// The entry is malformed.
    #[error("{0}")]
    Entry(EntryError),
    /// Seqnos are not contiguous.
    #[error("expected seqno {expected}, found {found}")]
    Gap {
        /// Seqno expected.
        expected: u64,
        /// Seqno found.
        found: u64,
    },
    /// A snapshot entry inside a ledger chunk.
    #[error("snapshot entry inside a ledger chunk")]
    Snapshot,
    /// A governance or signature table value is malformed.
    #[error("table {table}: {message}")]
    Table {
        /// Table name.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// Not allowed service status change.
    #[error("service status cannot go from {from} to {to}")]
    ServiceTransition {
        /// Previous status.
        from: String,
        /// New status.
        to: String,
    },
    /// The transaction's leaf differs from the one a later signature's tree records.
    #[error(
        "contents altered: leaf {computed} differs from {recorded} recorded in the tree signed at {signature}"
    )]
    LeafMismatch {
        /// Leaf recomputed from the entry.
        computed: Hash,
        /// Leaf recorded in the signature's tree.
        recorded: Hash,
        /// The signature transaction.
        signature: TxId,
    },
    /// The signed root differs from the recomputed one.
    #[error("signed root {signed} differs from the recomputed root {computed}")]
    RootMismatch {
        /// Root in the signature record.
        signed: Hash,
        /// Root recomputed.
        computed: Hash,
    },
    /// The serialized tree differs from the recomputed one.
    #[error("serialized Merkle tree differs from the recomputed tree")]
    TreeMismatch,
    /// The signature transaction has no tree.
    #[error("signature transaction has no serialized tree")]
    MissingTree,
    /// The signature record contradicts its transaction (field named).
    #[error("signature record field {0} contradicts the transaction")]
    RecordMismatch(&'static str),
    /// The signing node is not known.
    #[error("signing node {0} is not part of the network")]
    UnknownNode(String),
    /// The signing node is still `Pending`.
    #[error("signing node {0} is Pending")]
    PendingNode(String),
    /// No certificate is recorded for the signing node.
    #[error("no certificate recorded for signing node {0}")]
    NoNodeCertificate(String),
    /// The record's certificate has another key than the recorded node certificate.
    #[error("signature record's certificate does not match node {0}'s recorded certificate")]
    NodeCertificateMismatch(String),
    /// A certificate cannot be used.
    #[error("certificate: {0}")]
    Certificate(CryptoError),
    /// The node's ECDSA signature over the root does not verify.
    #[error("node signature over the root does not verify: {0}")]
    NodeSignature(CryptoError),
    /// The COSE signature does not verify.
    #[error("COSE signature: {0}")]
    CoseSignature(String),
    /// The COSE signature names another transaction.
    #[error("COSE signature names {cose}, the transaction is {entry}")]
    CoseTxid {
        /// Txid in the COSE header.
        cose: TxId,
        /// Txid of the entry.
        entry: TxId,
    },
    /// A COSE signature but no service certificate known.
    #[error("COSE signature but no service certificate recorded")]
    NoServiceCertificate,
    /// The signature transaction holds more than signature tables, or private data.
    #[error("signature transaction holds {0}")]
    SignatureContents(String),
    /// A closed chunk does not end on a signature transaction.
    #[error("chunk does not end on a signature transaction")]
    ChunkEnd,
    /// Commit-evidence digest does not match the ledger secret's commit evidence.
    #[error("commit evidence digest does not match the ledger secret")]
    CommitEvidence,
    /// An application entry's claim (its record's secret key, collection and contents) does
    /// not digest to the transaction's claims digest: its receipt would not verify with it.
    #[error("claims digest does not match the entry's application claim")]
    ClaimsDigest,
    /// A signature transaction without a signature to verify (CCF: "no verifiable signature").
    #[error("signature transaction holds no node or COSE signature to verify")]
    NoSignature,
    /// The signatures name another transaction than the one they are in (by its IV).
    #[error("signature names transaction {signed}, but it is in transaction {entry}")]
    SignedTxid {
        /// What the signature record or COSE header names.
        signed: String,
        /// The transaction's id by its IV.
        entry: TxId,
    },
    /// A format this auditor (and CCF's) cannot verify; not evidence of tampering.
    #[error("cannot be verified: {0}")]
    Unsupported(String),
}

impl AuditError {
    /// Whether this is a format that cannot be verified rather than a failed check.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            AuditError::Unsupported(_) | AuditError::Entry(EntryError::Version(_))
        ) || matches!(
            self,
            AuditError::Chunk(ChunkError::Entry {
                source: EntryError::Version(_),
                ..
            })
        )
    }
}

/// Where the audit failed: file, transaction and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{}", self.describe())]
pub struct AuditFailure {
    /// The chunk file.
    pub file: Option<PathBuf>,
    /// The bad transaction id, when known.
    pub txid: Option<TxId>,
    /// The seqno of the bad transaction, when known (even if its view is not).
    pub seqno: Option<u64>,
    /// Byte offset of the entry in the file.
    pub offset: Option<u64>,
    /// What is wrong.
    #[serde(serialize_with = "ser_display")]
    pub error: AuditError,
}

fn ser_display<S: serde::Serializer>(e: &AuditError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

impl AuditFailure {
    fn describe(&self) -> String {
        let mut s = String::new();
        match (self.txid, self.seqno) {
            (Some(t), _) => s.push_str(&format!("transaction {t}")),
            (None, Some(n)) => s.push_str(&format!("transaction at seqno {n}")),
            _ => {}
        }
        if let Some(f) = &self.file {
            if !s.is_empty() {
                s.push_str(" in ");
            }
            s.push_str(&f.display().to_string());
            if let Some(o) = self.offset {
                s.push_str(&format!(" at offset {o}"));
            }
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&self.error.to_string());
        s
    }
}

/// What a successful audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Chunk files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Transactions read.
    pub transactions: u64,
    /// Signature transactions verified.
    pub signatures: u64,
    /// Of those, with a COSE signature verified too.
    pub cose_signatures: u64,
    /// Last transaction read.
    pub last_txid: Option<TxId>,
    /// Last signature verified.
    pub last_signature: Option<TxId>,
    /// Root signed by the last signature.
    pub last_signed_root: Option<Hash>,
    /// Transactions after the last signature (not covered by any signature).
    pub unsigned_tail: u64,
    /// Whether GCM tags and commit evidence were checked with the ledger secret.
    pub secret_checked: bool,
    /// Application entries whose claims digest was checked against their claim (with the
    /// ledger secret: the claim's key is in the entry's private record).
    pub claims_checked: u64,
    /// Current service certificate (PEM), if recorded.
    pub service_cert: Option<String>,
    /// Every change of the code the service runs (user-defined functions, the app bundle and
    /// its runtime options), in ledger order, with who asked for it.
    pub code_changes: Vec<CodeChange>,
    /// Governance, in ledger order: members' states, proposals and their outcomes, the
    /// constitution, users set by governance (CCF's `public:ccf.gov.*` tables).
    pub governance: Vec<GovEvent>,
    /// What is odd but not a failure: checks CCF's verifier does not make, on transactions a
    /// verified signature covers (so the service wrote them so) or that no signature covers.
    pub notes: Vec<AuditNote>,
}

/// A change of the code the service runs, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeChange {
    /// The transaction.
    pub txid: TxId,
    /// What changed: `function ID stored`, `function ID deleted`, `app deployed`, `runtime
    /// options set`.
    pub what: String,
    /// The caller's user id, if the transaction names one.
    pub by: Option<String>,
    /// SHA-256 of the new code (a function's, or the bundle's JSON), hex.
    pub digest: Option<String>,
}

impl std::fmt::Display for CodeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.txid, self.what)?;
        if let Some(d) = &self.digest {
            write!(f, " (sha256 {})", &d[..16.min(d.len())])?;
        }
        match &self.by {
            Some(by) => write!(f, " by {by}"),
            None => write!(f, " by the node itself"),
        }
    }
}

/// A governance event, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GovEvent {
    /// The transaction.
    pub txid: TxId,
    /// What happened: `member ID Accepted`, `proposal ID by MEMBER: Open, 0 ballot(s)`,
    /// `constitution set (sha256 ...)`, `user ID set`, ...
    pub what: String,
}

impl std::fmt::Display for GovEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.txid, self.what)
    }
}

/// The governance events in a transaction's public maps.
fn governance(txid: TxId, maps: &[entry::MapWrites]) -> Vec<GovEvent> {
    use sha2::Digest as _;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    for m in maps {
        let name = m.name.as_str();
        if name == tables::MEMBERS_INFO.name() {
            for (k, v) in &m.writes {
                let status = serde_json::from_slice::<serde_json::Value>(v)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                out.push(format!("member {} {status}", text(k)));
            }
            for k in &m.removes {
                out.push(format!("member {} removed", text(k)));
            }
        } else if name == tables::PROPOSALS_INFO.name() {
            for (k, v) in &m.writes {
                if let Ok(info) = tables::PROPOSALS_INFO.decode_value(v) {
                    let state = serde_json::to_value(info.state)
                        .ok()
                        .and_then(|s| s.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    out.push(format!(
                        "proposal {} by {}: {state}, {} ballot(s)",
                        text(k),
                        info.proposer_id,
                        info.ballots.len()
                    ));
                }
            }
        } else if name == tables::CONSTITUTION.name() {
            for (_, v) in &m.writes {
                let code = tables::CONSTITUTION.decode_value(v).unwrap_or_default();
                out.push(format!(
                    "constitution set (sha256 {})",
                    &hex::encode(sha2::Sha256::digest(code.as_bytes()))[..16]
                ));
            }
        } else if name == tables::USERS_CERTS.name() {
            for (k, _) in &m.writes {
                out.push(format!("user {} set", text(k)));
            }
            for k in &m.removes {
                out.push(format!("user {} removed", text(k)));
            }
        }
    }
    out.into_iter()
        .map(|what| GovEvent { txid, what })
        .collect()
}

/// The code changes in a transaction's public maps.
fn code_changes(txid: TxId, maps: &[entry::MapWrites]) -> Vec<CodeChange> {
    use sha2::Digest as _;
    let by = maps
        .iter()
        .find(|m| m.name == tables::CHANGED_BY.name())
        .and_then(|m| m.writes.first())
        .and_then(|(_, v)| tables::CHANGED_BY.decode_value(v).ok())
        .map(|c| c.user_id);
    let digest = |b: &[u8]| Some(hex::encode(sha2::Sha256::digest(b)));
    let mut out = Vec::new();
    for m in maps {
        if m.name == tables::FUNCTIONS.name() {
            for (k, v) in &m.writes {
                let code = tables::FUNCTIONS
                    .decode_value(v)
                    .map(|r| r.code)
                    .unwrap_or_default();
                out.push((
                    format!("function {} stored", String::from_utf8_lossy(k)),
                    digest(code.as_bytes()),
                ));
            }
            for k in &m.removes {
                out.push((
                    format!("function {} deleted", String::from_utf8_lossy(k)),
                    None,
                ));
            }
        } else if m.name == tables::APP.name() {
            for (k, v) in &m.writes {
                let what = match k.as_slice() {
                    b"bundle" => "app deployed".to_owned(),
                    b"runtime_options" => "runtime options set".to_owned(),
                    other => format!("app record {} set", String::from_utf8_lossy(other)),
                };
                out.push((what, digest(v)));
            }
        }
    }
    out.into_iter()
        .map(|(what, digest)| CodeChange {
            txid,
            what,
            by: by.clone(),
            digest,
        })
        .collect()
}

/// Something odd about a transaction that does not fail the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditNote {
    /// The transaction, when the note is about one.
    pub txid: Option<TxId>,
    /// The chunk file.
    pub file: Option<PathBuf>,
    /// Byte offset of the entry in the file.
    pub offset: Option<u64>,
    /// Whether a verified signature covers the transaction (the service wrote it so); if not,
    /// nobody can tell whether it was altered.
    pub covered: bool,
    /// What is odd.
    pub message: String,
}

impl std::fmt::Display for AuditNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(t) = self.txid {
            write!(f, "transaction {t}: ")?;
        } else if let Some(p) = &self.file {
            write!(f, "{}: ", p.display())?;
        }
        write!(f, "{}", self.message)?;
        if self.txid.is_some() {
            f.write_str(if self.covered {
                " (covered by a verified signature: written so by the service)"
            } else {
                " (not covered by any signature)"
            })?;
        }
        Ok(())
    }
}

/// Progress of a running audit.
#[derive(Debug, Clone, Copy)]
pub struct AuditProgress {
    /// Bytes of chunk files processed.
    pub bytes_done: u64,
    /// Bytes of chunk files in total.
    pub bytes_total: u64,
    /// Transactions processed.
    pub transactions: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    txid: TxId,
    offset: u64,
    file: usize,
}

/// A note before it is known whether a signature covers it.
#[derive(Debug, Clone)]
struct Suspicion {
    seen: Seen,
    error: AuditError,
}

/// The replaying state machine, fed entries in order by [`audit_chunks`]. Its state is CCF's
/// verifier's: node statuses and node certificates in two maps (a node can have a certificate
/// and no status), the service status and certificate as JSON values.
#[derive(Debug)]
pub(crate) struct Auditor {
    /// The ledger's secrets, from the secret given (and the ledger's rekey history).
    secrets: Option<LedgerSecrets>,
    tree: MerkleTree,
    next_seqno: u64,
    node_status: HashMap<String, Value>,
    node_certs: HashMap<String, Vec<u8>>,
    service_status: Option<Value>,
    service_cert: Option<Value>,
    since_signature: VecDeque<Seen>,
    suspicions: Vec<Suspicion>,
    notes: Vec<(Option<Seen>, bool, String)>,
    report: AuditReport,
}

type Fail = (Option<Seen>, AuditError);

fn table_err(table: &str, message: impl Into<String>) -> AuditError {
    AuditError::Table {
        table: table.to_owned(),
        message: message.into(),
    }
}

fn json(table: &str, bytes: &[u8]) -> Result<Value, AuditError> {
    serde_json::from_slice(bytes).map_err(|e| table_err(table, format!("not JSON: {e}")))
}

fn utf8<'a>(table: &str, bytes: &'a [u8], what: &str) -> Result<&'a str, AuditError> {
    std::str::from_utf8(bytes).map_err(|_| table_err(table, format!("{what} is not UTF-8")))
}

/// The tables the auditor reads.
const READ_TABLES: [&str; 6] = [
    tables::NODES_INFO.name(),
    tables::NODES_ENDORSED_CERTIFICATES.name(),
    tables::SERVICE_INFO.name(),
    tables::SIGNATURES.name(),
    tables::COSE_SIGNATURES.name(),
    tables::TREE.name(),
];

impl Auditor {
    /// A new auditor for a ledger starting at seqno 1.
    pub fn new(opts: AuditOptions) -> Auditor {
        let mut tree = MerkleTree::new();
        tree.append(Hash::ZERO);
        Auditor {
            report: AuditReport {
                secret_checked: opts.ledger_secret.is_some(),
                ..Default::default()
            },
            secrets: opts.ledger_secret.clone().map(LedgerSecrets::new),
            tree,
            next_seqno: 1,
            node_status: HashMap::new(),
            node_certs: HashMap::new(),
            service_status: None,
            service_cert: None,
            since_signature: VecDeque::new(),
            suspicions: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn suspect(&mut self, seen: Seen, error: AuditError) {
        self.suspicions.push(Suspicion { seen, error });
    }

    /// Checks one entry and adds it to the tree. `file` and `offset` only label failures.
    fn add(&mut self, raw: &RawEntry<'_>, file: usize, offset: u64) -> Result<bool, Fail> {
        // Entries are named by their position (the seqno they must have), so a corrupted IV
        // still names the right transaction.
        let txid = TxId::new(u64::from(raw.iv.view), self.next_seqno);
        let here = Seen { txid, offset, file };
        let fail = |e: AuditError| (Some(here), e);
        if raw.iv.snapshot {
            self.suspect(here, AuditError::Snapshot);
        }
        if raw.iv.seqno != self.next_seqno {
            self.suspect(
                here,
                AuditError::Gap {
                    expected: self.next_seqno,
                    found: raw.iv.seqno,
                },
            );
        }
        let pd = entry::decode_public_domain(raw.public).map_err(|e| fail(AuditError::Entry(e)))?;
        if pd.seqno < 0 || pd.seqno as u64 != raw.iv.seqno {
            self.suspect(
                here,
                AuditError::Entry(EntryError::SeqnoMismatch {
                    public: pd.seqno,
                    iv: raw.iv.seqno,
                }),
            );
        }
        if pd.entry_type == EntryType::WriteSetWithClaims {
            // CCF's verifier cannot compute its leaf either (it asserts a commit-evidence
            // digest alongside claims); no CCF release writes it in a ledger.
            return Err(fail(AuditError::Unsupported(
                "entry type 2 (claims without commit evidence) has no defined Merkle leaf".into(),
            )));
        }
        if let Some(secret) = &self.secrets {
            let private = secret.open(raw).map_err(|e| fail(AuditError::Entry(e)))?;
            let ce = entry::commit_evidence_digest(&secret.commit_evidence(txid));
            if pd.commit_evidence_digest.is_some_and(|d| d != ce) {
                return Err(fail(AuditError::CommitEvidence));
            }
            // A Vellum application entry record: its claim must be the one the leaf commits
            // to. (Records that are not entry records carry no claim to check.)
            if let Some(m) = tables::ENTRIES.find(&private)
                && let Some((_, v)) = m.writes.first()
                && let Ok(record) = tables::ENTRIES.decode_value(v)
            {
                if record.claims_digest() != Some(pd.claims_digest.unwrap_or(Hash::ZERO)) {
                    return Err(fail(AuditError::ClaimsDigest));
                }
                self.report.claims_checked += 1;
            }
        }
        let tables = Tables::of(&pd.maps, &READ_TABLES);
        self.apply_governance(&tables).map_err(fail)?;
        self.report
            .code_changes
            .extend(code_changes(txid, &pd.maps));
        self.report.governance.extend(governance(txid, &pd.maps));
        let is_sig = tables.get(tables::SIGNATURES.name()).is_some()
            || tables.get(tables::COSE_SIGNATURES.name()).is_some();
        let leaf = entry::leaf_for(&raw.write_set_digest(), &pd);
        self.since_signature.push_back(here);
        if is_sig {
            self.check_signature(raw, &pd, &tables, here)?;
            self.since_signature.clear();
            self.since_signature.push_back(here);
        }
        self.tree.append(leaf);
        self.next_seqno += 1;
        self.report.transactions += 1;
        self.report.last_txid = Some(txid);
        self.report.unsigned_tail = if is_sig {
            0
        } else {
            self.report.unsigned_tail + 1
        };
        Ok(is_sig)
    }

    /// CCF's governance bookkeeping (`LedgerValidator.add_transaction`), check for check.
    fn apply_governance(&mut self, t: &Tables<'_>) -> Result<(), AuditError> {
        let mut self_signed = Vec::new();
        if let Some(records) = t.get(tables::NODES_INFO.name()) {
            let name = tables::NODES_INFO.name();
            for (k, v) in records {
                let id = utf8(name, k, "node id")?.to_owned();
                let Some(v) = v else {
                    if self.node_status.remove(&id).is_none() {
                        return Err(table_err(name, format!("removes unknown node {id}")));
                    }
                    continue;
                };
                let info = json(name, v)?;
                let info = info
                    .as_object()
                    .ok_or_else(|| table_err(name, "node info is not a JSON object"))?;
                if let Some(cert) = info.get("cert") {
                    let cert = cert
                        .as_str()
                        .ok_or_else(|| table_err(name, "node cert is not a string"))?;
                    self.node_certs.insert(id.clone(), cert.as_bytes().to_vec());
                    self_signed.push(id.clone());
                }
                let status = info
                    .get("status")
                    .ok_or_else(|| table_err(name, "node info without status"))?;
                self.node_status.insert(id, status.clone());
            }
        }
        if let Some(records) = t.get(tables::NODES_ENDORSED_CERTIFICATES.name()) {
            let name = tables::NODES_ENDORSED_CERTIFICATES.name();
            for (k, v) in records {
                let id = utf8(name, k, "node id")?.to_owned();
                if self_signed.contains(&id) {
                    return Err(table_err(
                        name,
                        format!("node {id} has a self-signed and an endorsed certificate"),
                    ));
                }
                match v {
                    Some(pem) => self.node_certs.insert(id, pem.to_vec()),
                    None => self.node_certs.remove(&id),
                };
            }
        }
        if t.get(tables::SERVICE_INFO.name()).is_some() {
            let name = tables::SERVICE_INFO.name();
            let v = t
                .value(name, &SINGLETON_KEY)
                .flatten()
                .ok_or_else(|| table_err(name, "no value at the singleton key"))?;
            let info = json(name, v)?;
            let info = info
                .as_object()
                .ok_or_else(|| table_err(name, "service info is not a JSON object"))?;
            let status = info
                .get("status")
                .ok_or_else(|| table_err(name, "service info without status"))?
                .clone();
            let cert = info
                .get("cert")
                .ok_or_else(|| table_err(name, "service info without cert"))?
                .clone();
            let is = |v: &Value, s: &str| v.as_str() == Some(s);
            let allowed = match &self.service_status {
                _ if is(&status, "Opening") => true,
                Some(old) if *old == status => true,
                Some(old) if is(old, "Opening") => {
                    is(&status, "Open") || is(&status, "WaitingForRecoveryShares")
                }
                Some(old) if is(old, "Recovering") => is(&status, "WaitingForRecoveryShares"),
                Some(old) if is(old, "WaitingForRecoveryShares") => is(&status, "Open"),
                Some(old) if is(old, "Open") => is(&status, "Recovering"),
                Some(_) => false,
                None => true,
            };
            if !allowed {
                let show = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                return Err(AuditError::ServiceTransition {
                    from: self.service_status.as_ref().map(show).unwrap_or_default(),
                    to: show(&status),
                });
            }
            self.service_status = Some(status);
            self.service_cert = Some(cert);
        }
        Ok(())
    }

    /// CCF's root signature checks (`ccf.signatures._verify_all_root_signatures`), then this
    /// auditor's own notes on the signature transaction.
    fn check_signature(
        &mut self,
        raw: &RawEntry<'_>,
        pd: &entry::PublicDomain,
        t: &Tables<'_>,
        here: Seen,
    ) -> Result<(), Fail> {
        let fail = |e: AuditError| (Some(here), e);
        let computed = self
            .tree
            .root()
            .map_err(|_| fail(AuditError::TreeMismatch))?;
        let recorded_tree = t
            .value(tables::TREE.name(), &SINGLETON_KEY)
            .flatten()
            .and_then(|b| MerkleTree::deserialize(b).ok());
        // What each signature names: (scheme, view, seqno) as JSON values or numbers.
        let mut named: Vec<(String, bool)> = Vec::new();
        let header = TxId::new(u64::from(raw.iv.view), raw.iv.seqno);

        if let Some(v) = t.value(tables::SIGNATURES.name(), &SINGLETON_KEY).flatten() {
            let name = tables::SIGNATURES.name();
            let record = json(name, v).map_err(fail)?;
            let field = |k: &str| {
                record
                    .get(k)
                    .ok_or_else(|| fail(table_err(name, format!("no field {k}"))))
            };
            let (seqno, view) = (field("seqno")?, field("view")?);
            let node = field("node")?;
            let root = field("root")?
                .as_str()
                .and_then(fromhex)
                .ok_or_else(|| fail(table_err(name, "root is not hex")))?;
            let sig = field("sig")?
                .as_str()
                .and_then(b64decode)
                .ok_or_else(|| fail(table_err(name, "sig is not base64")))?;
            let embedded = match record.get("cert") {
                Some(c) => Some(
                    c.as_str()
                        .ok_or_else(|| fail(table_err(name, "cert is not a string")))?,
                ),
                None => None,
            };
            let node = node
                .as_str()
                .filter(|n| self.node_status.contains_key(*n))
                .ok_or_else(|| fail(AuditError::UnknownNode(node.to_string())))?;
            match self
                .node_status
                .get(node)
                .and_then(Value::as_str)
                .and_then(NodeStatus::parse)
            {
                Some(NodeStatus::Trusted | NodeStatus::Retired) => {}
                Some(NodeStatus::Pending) => {
                    return Err(fail(AuditError::PendingNode(node.to_owned())));
                }
                _ => {
                    return Err(fail(table_err(
                        tables::NODES_INFO.name(),
                        format!("node {node} has no known status"),
                    )));
                }
            }
            let pem = self
                .node_certs
                .get(node)
                .ok_or_else(|| fail(AuditError::NoNodeCertificate(node.to_owned())))?;
            let cert = std::str::from_utf8(pem)
                .map_err(|_| CryptoError::Certificate("not UTF-8".into()))
                .and_then(Certificate::from_pem_as_cryptography)
                .map_err(|e| fail(AuditError::Certificate(e)))?;
            if let Some(rc) = embedded {
                let embedded = Certificate::from_pem_as_cryptography(rc)
                    .map_err(|e| fail(AuditError::Certificate(e)))?;
                if embedded.spki_der() != cert.spki_der() {
                    return Err(fail(AuditError::NodeCertificateMismatch(node.to_owned())));
                }
            }
            let signed = Hash::from_slice(&root)
                .map_err(|_| fail(table_err(name, "root is not 32 bytes")))?;
            if signed != computed {
                return Err(self.attribute_root_mismatch(
                    recorded_tree.as_ref(),
                    signed,
                    computed,
                    here,
                ));
            }
            // CCF looks the certificate up by the node id: it does not hold the id against
            // the certificate's key.
            let node_sig = NodeSignature {
                cert: &cert,
                node_id: None,
                sig_der: &sig,
            };
            verify_node_signature(&computed, &node_sig).map_err(|e| {
                fail(match e {
                    RootSignatureError::Certificate(e) => AuditError::Certificate(e),
                    RootSignatureError::NodeSignature(e) => AuditError::NodeSignature(e),
                    _ => AuditError::NodeSignature(CryptoError::BadSignature),
                })
            })?;
            named.push((
                format!("{view}.{seqno}"),
                py_eq(view, header.view) && py_eq(seqno, header.seqno),
            ));
        }
        if let Some(v) = t
            .value(tables::COSE_SIGNATURES.name(), &SINGLETON_KEY)
            .flatten()
        {
            let name = tables::COSE_SIGNATURES.name();
            let bytes = json(name, v)
                .map_err(fail)?
                .as_str()
                .and_then(b64decode)
                .ok_or_else(|| fail(table_err(name, "not a JSON string of base64")))?;
            let svc = self
                .service_cert
                .as_ref()
                .ok_or_else(|| fail(AuditError::NoServiceCertificate))?;
            let key = svc
                .as_str()
                .filter(|s| s.is_ascii())
                .ok_or_else(|| {
                    fail(table_err(
                        tables::SERVICE_INFO.name(),
                        "cert is not ASCII text",
                    ))
                })
                .and_then(|pem| {
                    Certificate::from_pem_as_cryptography(pem)
                        .and_then(|c| c.public_key())
                        .map_err(|e| fail(AuditError::Certificate(e)))
                })?;
            let txid = match verify_service_signature(&computed, &bytes, &key, CoseRules::AsCcf) {
                Ok(txid) => txid,
                // A signature over another root: say which transaction changed, if the tree
                // tells.
                Err(e) if named.is_empty() => {
                    // The root signed may be another: if the signature's own tree says so, name
                    // the transaction that changed.
                    if let Some(signed) = recorded_tree.as_ref().and_then(|rt| rt.root().ok())
                        && signed != computed
                    {
                        return Err(self.attribute_root_mismatch(
                            recorded_tree.as_ref(),
                            signed,
                            computed,
                            here,
                        ));
                    }
                    return Err(fail(AuditError::CoseSignature(e.to_string())));
                }
                Err(e) => return Err(fail(AuditError::CoseSignature(e.to_string()))),
            };
            named.push((txid.to_string(), txid == header));
        }
        if named.is_empty() {
            return Err(fail(AuditError::NoSignature));
        }
        if let Some((signed, _)) = named.iter().find(|(_, matches)| !matches) {
            return Err(fail(AuditError::SignedTxid {
                signed: signed.clone(),
                entry: header,
            }));
        }
        if named.len() == 2 && named[0].0 != named[1].0 {
            return Err(fail(AuditError::CoseTxid {
                cose: named[1].0.parse().unwrap_or(header),
                entry: header,
            }));
        }

        // Verified. Everything odd before this signature was written so by the service.
        let covered: Vec<Suspicion> = {
            let (before, after): (Vec<_>, Vec<_>) = std::mem::take(&mut self.suspicions)
                .into_iter()
                .partition(|s| s.seen.txid.seqno < here.txid.seqno);
            self.suspicions = after;
            before
        };
        for s in covered {
            self.notes.push((Some(s.seen), true, s.error.to_string()));
        }
        // This auditor's own notes on the signature transaction (CCF checks none of these).
        let size = self.tree.size();
        match (
            &recorded_tree,
            t.value(tables::TREE.name(), &SINGLETON_KEY).flatten(),
        ) {
            (Some(rt), Some(bytes)) => match self.tree.serialize(rt.offset(), size) {
                Ok(ours) if ours == bytes => {}
                Ok(_) => self.suspect(here, AuditError::TreeMismatch),
                Err(_) if rt.root().ok() == Some(computed) => {}
                Err(_) => self.suspect(here, AuditError::TreeMismatch),
            },
            (None, Some(_)) => self.suspect(here, AuditError::TreeMismatch),
            (_, None) => self.suspect(here, AuditError::MissingTree),
        }
        let others: Vec<&str> = pd
            .maps
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| {
                ![
                    tables::SIGNATURES.name(),
                    tables::COSE_SIGNATURES.name(),
                    tables::TREE.name(),
                ]
                .contains(n)
            })
            .collect();
        if !others.is_empty() {
            self.suspect(
                here,
                AuditError::SignatureContents(format!("other tables: {}", others.join(", "))),
            );
        }
        if !raw.ciphertext.is_empty() {
            self.suspect(here, AuditError::SignatureContents("private data".into()));
        }
        if pd.claims_digest.is_some_and(|c| c != Hash::ZERO) {
            self.suspect(
                here,
                AuditError::SignatureContents("a claims digest".into()),
            );
        }
        if t.value(tables::COSE_SIGNATURES.name(), &SINGLETON_KEY)
            .flatten()
            .is_some()
        {
            self.report.cose_signatures += 1;
        }
        // Keep memory bounded: later signatures serialize from at least this point.
        if let Some(rt) = &recorded_tree {
            let _ = self.tree.flush_to(rt.offset());
        }
        self.report.signatures += 1;
        self.report.last_signature = Some(here.txid);
        self.report.last_signed_root = Some(computed);
        Ok(())
    }

    /// The first note-worthy oddity on a transaction before `sig` since the last signature:
    /// when a signed root does not match, the likeliest altered transaction.
    fn first_suspicion_before(&self, sig: Seen) -> Option<Fail> {
        self.suspicions
            .iter()
            .find(|s| s.seen.txid.seqno < sig.txid.seqno)
            .map(|s| (Some(s.seen), s.error.clone()))
    }

    fn attribute_root_mismatch(
        &self,
        recorded: Option<&MerkleTree>,
        signed: Hash,
        computed: Hash,
        sig: Seen,
    ) -> Fail {
        if let Some(t) = recorded.filter(|t| t.size() == self.tree.size()) {
            for seen in &self.since_signature {
                let i = seen.txid.seqno;
                if let (Ok(ours), Ok(theirs)) = (self.tree.leaf(i), t.leaf(i))
                    && ours != theirs
                    && t.root().ok() == Some(signed)
                {
                    return (
                        Some(*seen),
                        AuditError::LeafMismatch {
                            computed: ours,
                            recorded: theirs,
                            signature: sig.txid,
                        },
                    );
                }
            }
        }
        if let Some(s) = self.first_suspicion_before(sig) {
            return s;
        }
        (Some(sig), AuditError::RootMismatch { signed, computed })
    }
}

/// Audits every chunk of the ledger directory `dir` (committed ones only unless
/// `include_uncommitted`), calling `progress` as it goes.
pub fn audit_dir(
    dir: &Path,
    opts: &AuditOptions,
    progress: impl FnMut(AuditProgress),
) -> Result<AuditReport, AuditFailure> {
    let io = |p: &Path, e: std::io::Error| AuditFailure {
        file: Some(p.to_path_buf()),
        txid: None,
        seqno: None,
        offset: None,
        error: AuditError::Io {
            path: p.display().to_string(),
            message: e.to_string(),
        },
    };
    let chunks = list_chunks(dir, !opts.include_uncommitted).map_err(|e| io(dir, e))?;
    if chunks.is_empty() {
        return Err(AuditFailure {
            file: Some(dir.to_path_buf()),
            txid: None,
            seqno: None,
            offset: None,
            error: AuditError::Empty,
        });
    }
    let sizes: Vec<u64> = chunks
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    // A rekeyed ledger: the secret given is its latest; the earlier ones come from the rekey
    // records, read first.
    let secrets = match &opts.ledger_secret {
        Some(latest) => {
            let records = scan_secret_records(&chunks).rekeys;
            Some(
                tables::ledger_secrets_from_chain(latest.clone(), &records).map_err(|_| {
                    AuditFailure {
                        file: None,
                        txid: None,
                        seqno: records.last().map(|(s, _)| *s),
                        offset: None,
                        error: AuditError::SecretChain,
                    }
                })?,
            )
        }
        None => None,
    };
    let files = chunks.into_iter().map(|(name, path)| {
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e));
        (name, path, bytes)
    });
    audit_chunks_with(files, sizes.iter().sum(), opts, secrets, progress)
}

/// What a ledger records about its secrets, in its public domain.
#[derive(Debug, Clone, Default)]
pub struct SecretRecords {
    /// The rekeys, `(seqno, record)` in ledger order: with the latest secret, every earlier one.
    pub rekeys: Vec<(u64, tables::EncryptedLedgerSecretInfo)>,
    /// The last recovery shares: with a quorum of its members' decrypted shares, the latest
    /// secret.
    pub recovery_shares: Option<tables::RecoverySharesInfo>,
}

/// Reads what the ledger in `dir` records about its secrets (committed chunks only unless
/// `include_uncommitted`), without checking anything else: entries that cannot be read are
/// skipped, for the audit to report.
pub fn secret_records(dir: &Path, include_uncommitted: bool) -> std::io::Result<SecretRecords> {
    Ok(scan_secret_records(&list_chunks(
        dir,
        !include_uncommitted,
    )?))
}

fn scan_secret_records(chunks: &[(ChunkName, PathBuf)]) -> SecretRecords {
    let mut out = SecretRecords::default();
    for_each_public_in(chunks, |txid, pd| {
        if let Some(rec) = tables::HISTORICAL_LEDGER_SECRET.written(&pd.maps) {
            out.rekeys.push((txid.seqno, rec));
        }
        if let Some(info) = tables::RECOVERY_SHARES.written(&pd.maps) {
            out.recovery_shares = Some(info);
        }
    });
    out
}

/// Calls `f` with the transaction id and public domain of every entry of the ledger in `dir`
/// that can be read (committed chunks only unless `include_uncommitted`), in ledger order,
/// checking nothing: what disaster recovery reads before it has any secret.
pub fn for_each_public(
    dir: &Path,
    include_uncommitted: bool,
    f: impl FnMut(vellum_core::TxId, &entry::PublicDomain),
) -> std::io::Result<()> {
    for_each_public_in(&list_chunks(dir, !include_uncommitted)?, f);
    Ok(())
}

fn for_each_public_in(
    chunks: &[(ChunkName, PathBuf)],
    mut f: impl FnMut(vellum_core::TxId, &entry::PublicDomain),
) {
    for (name, path) in chunks {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let Ok(chunk) = Chunk::parse_for_audit(&bytes, name) else {
            continue;
        };
        for ce in &chunk.entries {
            let Ok(pd) = ce.entry.public_domain() else {
                continue;
            };
            let iv = &ce.entry.iv;
            f(vellum_core::TxId::new(u64::from(iv.view), iv.seqno), &pd);
        }
    }
}

/// Audits chunk files given as `(name, path, bytes)` in seqno order (`path` only labels
/// failures); `bytes_total` scales progress.
pub fn audit_chunks(
    files: impl IntoIterator<Item = (ChunkName, PathBuf, Result<Vec<u8>, AuditFailure>)>,
    bytes_total: u64,
    opts: &AuditOptions,
    progress: impl FnMut(AuditProgress),
) -> Result<AuditReport, AuditFailure> {
    let secrets = opts.ledger_secret.clone().map(LedgerSecrets::new);
    audit_chunks_with(files, bytes_total, opts, secrets, progress)
}

fn audit_chunks_with(
    files: impl IntoIterator<Item = (ChunkName, PathBuf, Result<Vec<u8>, AuditFailure>)>,
    bytes_total: u64,
    opts: &AuditOptions,
    secrets: Option<LedgerSecrets>,
    mut progress: impl FnMut(AuditProgress),
) -> Result<AuditReport, AuditFailure> {
    let mut auditor = Auditor::new(opts.clone());
    auditor.secrets = secrets;
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut bytes_done = 0u64;
    for (fi, (name, path, bytes)) in files.into_iter().enumerate() {
        let bytes = bytes?;
        paths.push(path.clone());
        let at_file = |seqno: Option<u64>, offset: Option<u64>, error: AuditError| AuditFailure {
            file: Some(path.clone()),
            txid: None,
            seqno,
            offset,
            error,
        };
        if name.start != auditor.next_seqno {
            return Err(at_file(
                Some(auditor.next_seqno),
                None,
                AuditError::Gap {
                    expected: auditor.next_seqno,
                    found: name.start,
                },
            ));
        }
        let chunk = Chunk::parse_for_audit(&bytes, &name).map_err(|e| {
            let (seqno, offset) = match &e {
                ChunkError::Entry { index, offset, .. }
                | ChunkError::Boundary { index, offset, .. } => {
                    (Some(name.start + *index as u64), Some(*offset))
                }
                _ => (None, None),
            };
            at_file(seqno, offset, AuditError::Chunk(e))
        })?;
        let mut last_was_sig = false;
        for ce in &chunk.entries {
            last_was_sig = auditor
                .add(&ce.entry, fi, ce.offset)
                .map_err(|(seen, error)| AuditFailure {
                    file: seen.and_then(|s| paths.get(s.file).cloned()),
                    txid: seen.map(|s| s.txid),
                    seqno: seen.map(|s| s.txid.seqno),
                    offset: seen.map(|s| s.offset),
                    error,
                })?;
            if auditor.report.transactions.is_multiple_of(256) {
                progress(AuditProgress {
                    bytes_done: bytes_done + ce.offset,
                    bytes_total,
                    transactions: auditor.report.transactions,
                });
            }
        }
        if name.end.is_some() && !last_was_sig {
            // CCF's nodes close chunks on signatures, but its verifier does not require it.
            auditor.notes.push((
                None,
                false,
                format!(
                    "{}: closed chunk does not end on a signature transaction",
                    name.file_name()
                ),
            ));
        }
        bytes_done += bytes.len() as u64;
        auditor.report.files += 1;
        auditor.report.bytes += bytes.len() as u64;
        progress(AuditProgress {
            bytes_done,
            bytes_total,
            transactions: auditor.report.transactions,
        });
    }
    if auditor.report.files == 0 {
        return Err(AuditFailure {
            file: None,
            txid: None,
            seqno: None,
            offset: None,
            error: AuditError::Empty,
        });
    }
    // What no signature covers stays a note: nobody can tell whether it was altered.
    for sus in std::mem::take(&mut auditor.suspicions) {
        auditor
            .notes
            .push((Some(sus.seen), false, sus.error.to_string()));
    }
    let mut report = auditor.report.clone();
    report.service_cert = auditor
        .service_cert
        .as_ref()
        .and_then(|c| c.as_str().map(str::to_owned));
    report.notes = auditor
        .notes
        .iter()
        .map(|(seen, covered, message)| AuditNote {
            txid: seen.map(|s| s.txid),
            file: seen.and_then(|s| paths.get(s.file).cloned()),
            offset: seen.map(|s| s.offset),
            covered: *covered,
            message: message.clone(),
        })
        .collect();
    Ok(report)
}

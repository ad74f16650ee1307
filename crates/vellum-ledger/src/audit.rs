//! The offline auditor: replays a ledger directory's Merkle tree and checks every signature
//! transaction, naming the first bad transaction and what is wrong with it.
//!
//! Checks, per entry: framing and the positions table; seqnos contiguous from 1; the public
//! domain parses and agrees with the IV; governance tables (`nodes.info`,
//! `nodes.endorsed_certificates`, `service.info` with CCF's allowed status transitions). Per
//! signature transaction at seqno `S`: it holds only the three signature tables and no private
//! data; the signed root equals the root recomputed over leaves `0..S`; the serialized tree
//! equals the recomputed one byte for byte; the signing node is known and not `Pending`, its
//! certificate matches the recorded one and verifies the ECDSA signature; the COSE signature
//! (when present) verifies with the service certificate and names `S`; the record's seqno and
//! view are `S`'s. Every closed chunk must end on a signature.
//!
//! When a signed root does not match, the signature's own serialized tree tells which leaf
//! differs, so the altered transaction is named, not just the signature that exposed it.
//!
//! Without the ledger secret, the GCM tags and the commit-evidence digests of transactions that
//! no later signature covers (the ledger's tail) cannot be checked by anyone; with
//! [`AuditOptions::ledger_secret`] every tag and commit-evidence digest is checked too.

// Failures are returned once per audit (a cold path) and carry the whole diagnosis; boxing
// them would buy nothing measurable.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::Serialize;
use vellum_core::cose::{self, CoseError};
use vellum_core::crypto::{Certificate, CryptoError};
use vellum_core::entry::{self, EntryError, LedgerSecret, RawEntry, SINGLETON_KEY};
use vellum_core::merkle::MerkleTree;
use vellum_core::signature::{SignatureTables, SignatureTablesError};
use vellum_core::{Hash, TxId, tables};

use crate::chunk::{Chunk, ChunkError, ChunkName, list_chunks};

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
    CoseSignature(CoseError),
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
    /// Current service certificate (PEM), if recorded.
    pub service_cert: Option<String>,
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

#[derive(Debug, Clone)]
struct NodeState {
    status: String,
    cert: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    txid: TxId,
    offset: u64,
    file: usize,
}

/// The replaying state machine, fed entries in order by [`audit_chunks`].
#[derive(Debug)]
pub(crate) struct Auditor {
    opts: AuditOptions,
    tree: MerkleTree,
    next_seqno: u64,
    nodes: HashMap<String, NodeState>,
    service_status: Option<String>,
    service_cert: Option<String>,
    since_signature: VecDeque<Seen>,
    report: AuditReport,
}

type Fail = (Option<Seen>, AuditError);

fn table_err(table: &str, message: impl Into<String>) -> AuditError {
    AuditError::Table {
        table: table.to_owned(),
        message: message.into(),
    }
}

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
            opts,
            tree,
            next_seqno: 1,
            nodes: HashMap::new(),
            service_status: None,
            service_cert: None,
            since_signature: VecDeque::new(),
        }
    }

    /// Checks one entry and adds it to the tree. `file` and `offset` only label failures.
    fn add(&mut self, raw: &RawEntry<'_>, file: usize, offset: u64) -> Result<bool, Fail> {
        // Entries are named by their position (the seqno they must have), so a corrupted IV
        // still names the right transaction.
        let txid = TxId::new(u64::from(raw.iv.view), self.next_seqno);
        let here = Seen { txid, offset, file };
        let fail = |e: AuditError| (Some(here), e);
        if raw.iv.snapshot {
            return Err(fail(AuditError::Snapshot));
        }
        if raw.iv.seqno != self.next_seqno {
            return Err(fail(AuditError::Gap {
                expected: self.next_seqno,
                found: raw.iv.seqno,
            }));
        }
        let pd = raw
            .public_domain()
            .map_err(|e| fail(AuditError::Entry(e)))?;
        if let Some(secret) = &self.opts.ledger_secret {
            secret.open(raw).map_err(|e| fail(AuditError::Entry(e)))?;
            let ce = entry::commit_evidence_digest(&secret.commit_evidence(txid));
            if pd.commit_evidence_digest.is_some_and(|d| d != ce) {
                return Err(fail(AuditError::CommitEvidence));
            }
        }
        self.apply_governance(&pd).map_err(fail)?;
        let is_sig = tables::is_signature(pd.maps.iter().map(|m| m.name.as_str()));
        let ws = raw.write_set_digest();
        let leaf = entry::leaf_for(&ws, &pd);
        self.since_signature.push_back(here);
        if is_sig {
            self.check_signature(raw, &pd, here)?;
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

    fn apply_governance(&mut self, pd: &entry::PublicDomain) -> Result<(), AuditError> {
        if let Some(m) = pd.map(tables::NODES_INFO) {
            for (k, v) in &m.writes {
                let id = String::from_utf8(k.clone())
                    .map_err(|_| table_err(&m.name, "node id not UTF-8"))?;
                let info: serde_json::Value =
                    serde_json::from_slice(v).map_err(|e| table_err(&m.name, e.to_string()))?;
                let status = info
                    .get("status")
                    .and_then(|s| s.as_str())
                    .ok_or_else(|| table_err(&m.name, "node info without status"))?
                    .to_owned();
                let self_signed = info.get("cert").and_then(|c| c.as_str()).map(str::to_owned);
                let node = self.nodes.entry(id).or_insert(NodeState {
                    status: status.clone(),
                    cert: None,
                });
                node.status = status;
                if self_signed.is_some() {
                    node.cert = self_signed;
                }
            }
            for k in &m.removes {
                self.nodes.remove(&String::from_utf8_lossy(k).into_owned());
            }
        }
        if let Some(m) = pd.map(tables::NODES_ENDORSED_CERTIFICATES) {
            for (k, v) in &m.writes {
                let id = String::from_utf8(k.clone())
                    .map_err(|_| table_err(&m.name, "node id not UTF-8"))?;
                let pem = String::from_utf8(v.clone())
                    .map_err(|_| table_err(&m.name, "certificate not UTF-8"))?;
                self.nodes
                    .entry(id)
                    .or_insert(NodeState {
                        status: "Unknown".into(),
                        cert: None,
                    })
                    .cert = Some(pem);
            }
            for k in &m.removes {
                if let Some(n) = self.nodes.get_mut(&String::from_utf8_lossy(k).into_owned()) {
                    n.cert = None;
                }
            }
        }
        if let Some(m) = pd.map(tables::SERVICE_INFO)
            && let Some(v) = m.get(&SINGLETON_KEY)
        {
            let info: serde_json::Value =
                serde_json::from_slice(v).map_err(|e| table_err(&m.name, e.to_string()))?;
            let status = info
                .get("status")
                .and_then(|s| s.as_str())
                .ok_or_else(|| table_err(&m.name, "service info without status"))?
                .to_owned();
            let cert = info
                .get("cert")
                .and_then(|s| s.as_str())
                .ok_or_else(|| table_err(&m.name, "service info without cert"))?
                .to_owned();
            let allowed = match (self.service_status.as_deref(), status.as_str()) {
                (_, "Opening") => true,
                (Some(a), b) if a == b => true,
                (Some("Opening"), "Open" | "WaitingForRecoveryShares") => true,
                (Some("Recovering"), "WaitingForRecoveryShares") => true,
                (Some("WaitingForRecoveryShares"), "Open") => true,
                (Some("Open"), "Recovering") => true,
                (None, _) => true,
                _ => false,
            };
            if !allowed {
                return Err(AuditError::ServiceTransition {
                    from: self.service_status.clone().unwrap_or_default(),
                    to: status,
                });
            }
            self.service_status = Some(status);
            self.service_cert = Some(cert);
        }
        Ok(())
    }

    fn check_signature(
        &mut self,
        raw: &RawEntry<'_>,
        pd: &entry::PublicDomain,
        here: Seen,
    ) -> Result<(), Fail> {
        let fail = |e: AuditError| (Some(here), e);
        let txid = here.txid;
        let sig = SignatureTables::from_maps(&pd.maps).map_err(|e| {
            fail(match e {
                SignatureTablesError::MissingTree => AuditError::MissingTree,
                SignatureTablesError::Record(m) => table_err(tables::SIGNATURES, m),
                SignatureTablesError::CoseValue => {
                    table_err(tables::COSE_SIGNATURES, "not a JSON string of base64")
                }
                other => AuditError::SignatureContents(other.to_string()),
            })
        })?;
        if !raw.ciphertext.is_empty() {
            return Err(fail(AuditError::SignatureContents("private data".into())));
        }
        if pd.claims_digest.is_some_and(|c| c != Hash::ZERO) {
            return Err(fail(AuditError::SignatureContents(
                "a claims digest".into(),
            )));
        }
        let computed = self
            .tree
            .root()
            .map_err(|_| fail(AuditError::TreeMismatch))?;
        let size = self.tree.size();
        let tree_bytes = sig.tree;
        let recorded_tree = MerkleTree::deserialize(tree_bytes).ok();
        let (record, cose_bytes) = (sig.record, sig.cose);

        // The signed root must be ours; if not, find which transaction's leaf differs.
        let signed_root = record
            .as_ref()
            .map(|r| r.root)
            .or_else(|| recorded_tree.as_ref().and_then(|t| t.root().ok()));
        if let Some(signed) = signed_root
            && signed != computed
        {
            return Err(self.attribute_root_mismatch(
                recorded_tree.as_ref(),
                signed,
                computed,
                here,
            ));
        }
        // The serialized tree must be ours, byte for byte.
        let from = recorded_tree
            .as_ref()
            .map(|t| t.offset())
            .ok_or_else(|| fail(AuditError::TreeMismatch))?;
        match self.tree.serialize(from, size) {
            Ok(ours) if ours == tree_bytes => {}
            Ok(_) => return Err(fail(AuditError::TreeMismatch)),
            // Our tree no longer holds `from` (it was flushed further): compare roots instead.
            Err(_) => {
                if recorded_tree.as_ref().and_then(|t| t.root().ok()) != Some(computed) {
                    return Err(fail(AuditError::TreeMismatch));
                }
            }
        }

        if let Some(r) = &record {
            if r.seqno != txid.seqno {
                return Err(fail(AuditError::RecordMismatch("seqno")));
            }
            if r.view != txid.view {
                return Err(fail(AuditError::RecordMismatch("view")));
            }
            let node = self
                .nodes
                .get(&r.node)
                .ok_or_else(|| fail(AuditError::UnknownNode(r.node.clone())))?;
            if node.status == "Pending" {
                return Err(fail(AuditError::PendingNode(r.node.clone())));
            }
            let pem = node
                .cert
                .as_deref()
                .ok_or_else(|| fail(AuditError::NoNodeCertificate(r.node.clone())))?;
            let cert = Certificate::from_pem(pem).map_err(|e| fail(AuditError::Certificate(e)))?;
            if let Some(rc) = &r.cert {
                let embedded =
                    Certificate::from_pem(rc).map_err(|e| fail(AuditError::Certificate(e)))?;
                if embedded.spki_der() != cert.spki_der() {
                    return Err(fail(AuditError::NodeCertificateMismatch(r.node.clone())));
                }
            }
            let key = cert
                .public_key()
                .map_err(|e| fail(AuditError::Certificate(e)))?;
            let sig = r
                .sig_der()
                .map_err(|e| fail(AuditError::NodeSignature(e)))?;
            key.verify_prehash_der(&computed.0, &sig)
                .map_err(|e| fail(AuditError::NodeSignature(e)))?;
        }
        if let Some(c) = &cose_bytes {
            let svc = self
                .service_cert
                .as_deref()
                .ok_or_else(|| fail(AuditError::NoServiceCertificate))?;
            let key = Certificate::from_pem(svc)
                .and_then(|c| c.public_key())
                .map_err(|e| fail(AuditError::Certificate(e)))?;
            let s = cose::decode_sign1(c).map_err(|e| fail(AuditError::CoseSignature(e)))?;
            let named = s
                .verify_ledger_signature(&key, &computed)
                .map_err(|e| fail(AuditError::CoseSignature(e)))?;
            if named != txid {
                return Err(fail(AuditError::CoseTxid {
                    cose: named,
                    entry: txid,
                }));
            }
            self.report.cose_signatures += 1;
        }
        // Keep memory bounded: later signatures serialize from at least this point.
        let _ = self.tree.flush_to(from);
        self.report.signatures += 1;
        self.report.last_signature = Some(txid);
        self.report.last_signed_root = Some(computed);
        Ok(())
    }

    fn attribute_root_mismatch(
        &self,
        recorded: Option<&MerkleTree>,
        signed: Hash,
        computed: Hash,
        sig: Seen,
    ) -> Fail {
        if let Some(t) =
            recorded.filter(|t| t.root().ok() == Some(signed) && t.size() == self.tree.size())
        {
            for seen in &self.since_signature {
                let i = seen.txid.seqno;
                if let (Ok(ours), Ok(theirs)) = (self.tree.leaf(i), t.leaf(i))
                    && ours != theirs
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
    let files = chunks.into_iter().map(|(name, path)| {
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e));
        (name, path, bytes)
    });
    audit_chunks(files, sizes.iter().sum(), opts, progress)
}

/// Audits chunk files given as `(name, path, bytes)` in seqno order (`path` only labels
/// failures); `bytes_total` scales progress.
pub fn audit_chunks(
    files: impl IntoIterator<Item = (ChunkName, PathBuf, Result<Vec<u8>, AuditFailure>)>,
    bytes_total: u64,
    opts: &AuditOptions,
    mut progress: impl FnMut(AuditProgress),
) -> Result<AuditReport, AuditFailure> {
    let mut auditor = Auditor::new(opts.clone());
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
        let chunk = Chunk::parse(&bytes, Some(&name)).map_err(|e| {
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
            let last = chunk.entries.last();
            return Err(AuditFailure {
                file: Some(path.clone()),
                txid: last.map(|c| c.entry.iv.txid()),
                seqno: last.map(|_| auditor.next_seqno - 1),
                offset: last.map(|c| c.offset),
                error: AuditError::ChunkEnd,
            });
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
    let mut report = auditor.report.clone();
    report.service_cert = auditor.service_cert.clone();
    Ok(report)
}

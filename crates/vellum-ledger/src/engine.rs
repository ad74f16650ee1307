//! The ledger engine of one node: the ledger files, the Merkle tree over them, signature
//! transactions, the replica-side check of received signatures, truncation, and receipts.
//!
//! Policy-free: the caller (the node's Raft log store) chooses transaction ids and when to sign.
//! The invariant it keeps is CCF's: a signature transaction at seqno `S` signs the root over
//! leaves `0..S` (leaf 0 is zero; leaf `s` is transaction `s`), and every entry's bytes are a
//! deterministic function of (transaction id, write set, ledger secret), so every node writes
//! byte-identical ledgers.
//!
//! The tree stays in memory, whole for the last [`UNTRIMMED`] committed transactions and
//! trimmed below (receipts there re-read at most two blocks of 16 entries). Opening rebuilds
//! the tree from the ledger files, or takes it from the restart checkpoint
//! ([`crate::checkpoint`]) for the committed chunks it covers.

use base64::Engine as _;
use vellum_core::cose::CwtClaims;
use vellum_core::crypto::{Certificate, CryptoError, SigningKey};
use vellum_core::entry::{
    self, EncodedEntry, EntryBuilder, LedgerSecret, LedgerSecrets, LegacyVersions, RawEntry,
};
use vellum_core::merkle::{MerkleTree, PathStep, TRIM_BLOCK, TreeError};
use vellum_core::receipt::{CoseLeaf, LeafComponents, ProofElement, Receipt, cose_receipt};
use vellum_core::signature::{
    CoseRules, NodeSignature, RootSignatureError, SignatureTables, Signer, signature_maps,
    verify_node_signature, verify_service_signature,
};
use vellum_core::{Hash, TxId, tables};

use crate::checkpoint::{CHECKPOINT_EVERY, Checkpoint, CheckpointError, ViewRuns};
use crate::store::{AbsentChunk, LedgerFiles, Recovery, StoreError, VerifiedChunk};

/// The keys a node signs with.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    /// The node's key.
    pub node_key: SigningKey,
    /// The node's certificate, endorsed by the service key (PEM).
    pub node_cert_pem: String,
    /// The service key (COSE signatures); `None` to write node signatures only.
    pub service_key: Option<SigningKey>,
    /// The service key when it is kept in a hardware token: it signs the COSE signatures
    /// instead of `service_key` (which is then `None`).
    pub service_signer: Option<std::sync::Arc<dyn vellum_core::crypto::CoseSigner>>,
    /// The service certificate (PEM).
    pub service_cert_pem: String,
    /// The ledger secrets (the one a transaction is sealed under is the one of its seqno).
    pub secrets: LedgerSecrets,
    /// CWT issuer and subject of COSE signatures.
    pub cose_issuer: String,
    /// CWT subject.
    pub cose_subject: String,
    /// The service identities before a disaster recovery, oldest first: the signatures of the
    /// ledger up to each one's `until_seqno` are its nodes'.
    pub previous_services: Vec<PreviousService>,
}

/// A service identity a disaster recovery replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreviousService {
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// The last seqno its nodes signed.
    pub until_seqno: u64,
    /// Its key endorsed by the current service key (PEM): what receipts of its era carry as
    /// `serviceEndorsements`, so that they verify against the current service certificate.
    pub endorsement_pem: String,
}

impl NodeKeys {
    /// The keys of `node`, endorsed by `service`, signing COSE with the service key and the
    /// default CWT claims (`vellum.local` / `ledger.signature`).
    pub fn new(
        service: &crate::identity::Identity,
        node: &crate::identity::Identity,
        secret: LedgerSecret,
    ) -> NodeKeys {
        NodeKeys {
            node_key: node.signing_key.clone(),
            node_cert_pem: node.cert_pem.clone(),
            service_key: Some(service.signing_key.clone()),
            service_cert_pem: service.cert_pem.clone(),
            secrets: LedgerSecrets::new(secret),
            cose_issuer: "vellum.local".into(),
            cose_subject: "ledger.signature".into(),
            previous_services: Vec::new(),
            service_signer: None,
        }
    }
}

/// The public keys of a service certificate and of the identities before it.
fn service_keys(
    service_cert_pem: &str,
    previous: &[PreviousService],
) -> (
    Option<vellum_core::crypto::PublicKey>,
    Vec<Option<vellum_core::crypto::PublicKey>>,
) {
    let key = |pem: &str| Certificate::from_pem(pem).and_then(|c| c.public_key()).ok();
    (
        key(service_cert_pem),
        previous.iter().map(|p| key(&p.cert_pem)).collect(),
    )
}

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The ledger files.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Merkle tree (an index or size outside it).
    #[error("merkle tree: {0}")]
    Tree(#[from] TreeError),
    /// A ledger secret that cannot be added where it was asked for.
    #[error("ledger secret: {0}")]
    Secret(String),
    /// Signing or a certificate.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// An entry in the ledger is malformed.
    #[error("entry {seqno}: {message}")]
    Entry {
        /// Seqno.
        seqno: u64,
        /// What is wrong.
        message: String,
    },
    /// Appended out of order.
    #[error("transaction {got} does not follow seqno {last}")]
    Order {
        /// Last seqno present.
        last: u64,
        /// Txid offered.
        got: TxId,
    },
    /// A received signature transaction does not match this node's own ledger.
    #[error("signature transaction {txid} rejected: {reason}")]
    SignatureRejected {
        /// The signature transaction.
        txid: TxId,
        /// What does not match.
        reason: String,
    },
    /// No signature covers the transaction yet (or it is not committed).
    #[error("no committed signature covers transaction {0} yet")]
    NotCovered(TxId),
    /// No such transaction.
    #[error("no transaction at {0}")]
    NotFound(TxId),
    /// Writing the restart checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// A receipt for one transaction, in both forms.
#[derive(Debug, Clone)]
pub struct ReceiptBundle {
    /// The transaction.
    pub txid: TxId,
    /// The signature transaction that covers it.
    pub signature: TxId,
    /// The JSON receipt (ACL's inner `receipt` object).
    pub receipt: Receipt,
    /// The COSE receipt, when the signature has a COSE signature.
    pub cose: Option<Vec<u8>>,
}

/// The engine. See the [module docs](self).
#[derive(Debug)]
pub struct Engine {
    files: LedgerFiles,
    keys: NodeKeys,
    tree: MerkleTree,
    views: ViewRuns,
    signatures: Vec<u64>,
    service_key_public: Option<vellum_core::crypto::PublicKey>,
    /// The keys of [`NodeKeys::previous_services`], in the same order.
    previous_keys: Vec<Option<vellum_core::crypto::PublicKey>>,
    /// The last node certificate (PEM) found endorsed by the service key in
    /// [`Engine::check_signature`]: every signature of a primary names the same one, so its
    /// endorsement is checked once rather than at every signature.
    endorsed: Option<String>,
    untrimmed: u64,
    checkpoint_every: u64,
    /// Seqno of the last checkpoint taken (or the one opened from).
    checkpointed: u64,
    /// The checkpoint being written in the background.
    checkpointing: Option<std::thread::JoinHandle<()>>,
    /// Seqno of the last checkpoint on disk (written durably, or opened from).
    checkpoint_durable: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The seqno of the checkpoint the engine was opened from.
    opened_from: Option<u64>,
    /// Write the version fields as older CCF releases did (sample ledgers only).
    legacy_versions: bool,
}

/// The last this many committed transactions stay whole in the tree; older ones have its low
/// heights trimmed ([`MerkleTree::trim_to`]): receipts for them read up to 32 entries back,
/// and the tree takes 4 bytes a transaction instead of 64 (see [`Engine::set_untrimmed`]).
pub const UNTRIMMED: u64 = 1 << 16;

/// Where to trim the tree once `committed` is committed, keeping `untrimmed` whole: never
/// within a block of what a signature still serializes or a rollback may retract (both lie
/// after `committed`).
fn trim_point(committed: u64, untrimmed: u64) -> u64 {
    committed.saturating_sub(untrimmed.max(TRIM_BLOCK))
}

fn entry_err(seqno: u64, e: impl std::fmt::Display) -> EngineError {
    EngineError::Entry {
        seqno,
        message: e.to_string(),
    }
}

fn is_signature(pd: &entry::PublicDomain) -> bool {
    tables::is_signature(pd.maps.iter().map(|m| m.name.as_str()))
}

impl Engine {
    /// Opens the ledger files and rebuilds the tree from every entry in them.
    pub fn open(files: LedgerFiles, keys: NodeKeys) -> Result<Engine, EngineError> {
        let mut tree = MerkleTree::new();
        tree.append(Hash::ZERO);
        let mut engine = Engine::with_state(files, keys, tree, ViewRuns::default(), Vec::new());
        engine.replay()?;
        Ok(engine)
    }

    fn with_state(
        files: LedgerFiles,
        keys: NodeKeys,
        tree: MerkleTree,
        views: ViewRuns,
        signatures: Vec<u64>,
    ) -> Engine {
        let (service_key_public, previous_keys) =
            service_keys(&keys.service_cert_pem, &keys.previous_services);
        let checkpointed = views.len();
        Engine {
            files,
            keys,
            tree,
            views,
            signatures,
            service_key_public,
            previous_keys,
            endorsed: None,
            untrimmed: UNTRIMMED,
            checkpoint_every: CHECKPOINT_EVERY,
            checkpointed,
            checkpointing: None,
            checkpoint_durable: Default::default(),
            opened_from: None,
            legacy_versions: false,
        }
    }

    /// Writes every later entry's max conflict version and map read versions non-zero, as older
    /// CCF releases did ([`LegacyVersions::older_ccf`]), instead of 0: for sample ledgers of that
    /// shape (`vellum sample-ledger --legacy-versions`). A node never sets it: replicas
    /// re-encode write sets with zeros.
    pub fn set_legacy_versions(&mut self, on: bool) {
        self.legacy_versions = on;
    }

    /// Adds the entries of the files after the last one the engine holds to the tree, the
    /// views and the signatures.
    fn replay(&mut self) -> Result<(), EngineError> {
        // Chunks marked committed can be trimmed as the tree is rebuilt, keeping memory flat.
        let committed = self.files.committed_files_upto();
        let (tree, views, signatures) = (&mut self.tree, &mut self.views, &mut self.signatures);
        self.files
            .scan(views.len() + 1, |seqno, bytes| -> Result<(), EngineError> {
                let (raw, _) = RawEntry::parse(bytes).map_err(|e| entry_err(seqno, e))?;
                let pd = raw.public_domain().map_err(|e| entry_err(seqno, e))?;
                tree.append(entry::leaf_for(&raw.write_set_digest(), &pd));
                if seqno % (1 << 20) == 0 {
                    tree.trim_to(trim_point(committed.min(seqno), UNTRIMMED));
                }
                views.push(u64::from(raw.iv.view));
                if is_signature(&pd) {
                    signatures.push(seqno);
                }
                Ok(())
            })?;
        self.tree.trim_to(trim_point(committed, self.untrimmed));
        Ok(())
    }

    /// Opens a ledger directory (recovering it) and the engine over it. A checkpoint in the
    /// directory ([`crate::checkpoint`]) spares reading the committed chunks it covers; one
    /// that does not match the ledger is ignored (with a warning) and every entry is read.
    pub fn open_dir(
        dir: &std::path::Path,
        chunk_size: u64,
        keys: NodeKeys,
    ) -> Result<(Engine, Recovery), EngineError> {
        Engine::open_dir_archived(dir, chunk_size, keys, false)
    }

    /// [`Engine::open_dir`] for a node that keeps its older chunks in an archive: chunks the
    /// checkpoint covers may be missing from the directory (dropped with
    /// [`Engine::drop_chunk`]); reads of their entries fail with
    /// [`StoreError::Absent`] until a fetched copy is attached ([`Engine::attach_chunk`]).
    /// Without a usable checkpoint such a ledger cannot be opened (the chunks must be
    /// fetched back first).
    pub fn open_dir_archived(
        dir: &std::path::Path,
        chunk_size: u64,
        keys: NodeKeys,
        archived: bool,
    ) -> Result<(Engine, Recovery), EngineError> {
        match Checkpoint::read(dir, keys.secrets.first()) {
            Ok(Some(cp)) => {
                let seqno = cp.seqno;
                match Engine::open_checkpoint(dir, chunk_size, keys.clone(), cp, archived) {
                    Ok(opened) => {
                        tracing::info!(seqno, "opened the ledger from its checkpoint");
                        return Ok(opened);
                    }
                    Err(e) => tracing::warn!(
                        seqno,
                        error = %e,
                        "the ledger checkpoint does not match the ledger; reading every entry"
                    ),
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the ledger checkpoint is unusable; reading every entry")
            }
        }
        let (files, rec) = LedgerFiles::open(dir, chunk_size, Some(&keys.secrets))?;
        Ok((Engine::open(files, keys)?, rec))
    }

    fn open_checkpoint(
        dir: &std::path::Path,
        chunk_size: u64,
        keys: NodeKeys,
        cp: Checkpoint,
        archived: bool,
    ) -> Result<(Engine, Recovery), EngineError> {
        let mismatch = |m: &str| EngineError::Store(StoreError::Stale(m.to_owned()));
        let tree = MerkleTree::from_snapshot(&cp.tree).map_err(|e| mismatch(&e.to_string()))?;
        if tree.size() != cp.seqno + 1 || cp.signatures.last() != Some(&cp.seqno) {
            return Err(mismatch("tree size or last signature"));
        }
        let (files, rec) = LedgerFiles::open_trusting_archived(
            dir,
            chunk_size,
            Some(&keys.secrets),
            &cp.chunks,
            archived,
        )?;
        if files.committed_files_upto() < cp.seqno {
            return Err(mismatch("the covered chunks end early"));
        }
        let mut engine = Engine::with_state(files, keys, tree, cp.views, cp.signatures);
        // Bind the tree to the ledger: the last covered entry's leaf, and the root its
        // signature signs.
        let s = cp.seqno;
        if engine.tree.trimmed() <= s && engine.tree.leaf(s)? != engine.leaf_at(s)? {
            return Err(mismatch("leaf of the last covered entry"));
        }
        let bytes = engine.files.read(s)?;
        let (raw, _) = RawEntry::parse(&bytes).map_err(|e| entry_err(s, e))?;
        let pd = raw.public_domain().map_err(|e| entry_err(s, e))?;
        let record = SignatureTables::from_maps(&pd.maps)
            .ok()
            .and_then(|t| t.record)
            .ok_or_else(|| mismatch("the last covered entry is not a signature"))?;
        if record.root != engine.tree.root_at(s)? {
            return Err(mismatch("signed root"));
        }
        engine.opened_from = Some(s);
        engine
            .checkpoint_durable
            .store(s, std::sync::atomic::Ordering::Release);
        engine.replay()?;
        Ok((engine, rec))
    }

    /// Writes a checkpoint of the committed chunks now (after waiting for one being written
    /// in the background); `Ok(None)` when there is nothing to cover yet.
    pub fn write_checkpoint(&mut self) -> Result<Option<u64>, EngineError> {
        self.finish_checkpoint();
        let Some(cp) = self.checkpoint()? else {
            return Ok(None);
        };
        let bytes = cp.encode(self.keys.secrets.first());
        Checkpoint::write(self.files.dir(), &bytes)?;
        self.checkpointed = cp.seqno;
        self.checkpoint_durable
            .store(cp.seqno, std::sync::atomic::Ordering::Release);
        Ok(Some(cp.seqno))
    }

    /// A checkpoint of the committed chunks, if any, and if the tree still holds the tree at
    /// their end whole.
    fn checkpoint(&self) -> Result<Option<Checkpoint>, EngineError> {
        let seqno = self.files.committed_files_upto();
        if seqno == 0 || seqno < self.tree.trimmed() {
            return Ok(None);
        }
        let chunks = self.files.committed_chunks();
        Ok(Some(Checkpoint::at(
            seqno,
            chunks,
            &self.views,
            &self.signatures,
            &self.tree,
        )?))
    }

    /// After a commit: once [`Engine::set_checkpoint_every`] transactions were committed since
    /// the last checkpoint, takes one and writes it on a thread of its own (one at a time).
    fn checkpoint_in_background(&mut self) {
        let committed = self.files.committed_files_upto();
        let busy = self
            .checkpointing
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if committed < self.checkpointed.saturating_add(self.checkpoint_every) || busy {
            return;
        }
        let cp = match self.checkpoint() {
            Ok(Some(cp)) => cp,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not take a ledger checkpoint");
                return;
            }
        };
        let dir = self.files.dir().to_path_buf();
        let secret = self.keys.secrets.first().clone();
        let seqno = cp.seqno;
        self.checkpointed = seqno;
        let durable = self.checkpoint_durable.clone();
        let spawned = std::thread::Builder::new()
            .name("vellum-checkpoint".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let bytes = cp.encode(&secret);
                match Checkpoint::write(&dir, &bytes) {
                    Ok(()) => {
                        durable.store(seqno, std::sync::atomic::Ordering::Release);
                        tracing::info!(
                            seqno,
                            bytes = bytes.len(),
                            ms = started.elapsed().as_millis() as u64,
                            "wrote a ledger checkpoint"
                        )
                    }
                    Err(e) => tracing::warn!(error = %e, "could not write a ledger checkpoint"),
                }
            });
        match spawned {
            Ok(h) => self.checkpointing = Some(h),
            Err(e) => tracing::warn!(error = %e, "could not start the checkpoint thread"),
        }
    }

    /// Waits for the checkpoint being written in the background, if any.
    pub fn finish_checkpoint(&mut self) {
        if let Some(handle) = self.checkpointing.take() {
            let _ = handle.join();
        }
    }

    /// The seqno of the last checkpoint on disk, written by this engine or opened from (0:
    /// none). The chunks it covers can be found again at a start without being read.
    pub fn checkpoint_seqno(&self) -> u64 {
        self.checkpoint_durable
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The committed chunks, oldest first, and whether each is on this node's disk.
    pub fn committed_chunk_files(&self) -> Vec<crate::store::ChunkInfo> {
        self.files.committed_chunk_files()
    }

    /// Removes the committed chunk `name` from this node's disk (a node that keeps it in an
    /// archive, past its retention): only a chunk the last checkpoint on disk covers and that
    /// ends before that checkpoint's seqno (a start checks the tree against the checkpoint's
    /// last entry, which must stay). Reads of its entries then fail with
    /// [`StoreError::Absent`] until [`Engine::attach_chunk`]. Returns the bytes freed.
    pub fn drop_chunk(&mut self, name: &str) -> Result<u64, EngineError> {
        let covered = self.checkpoint_seqno();
        let end = self
            .files
            .committed_chunk_files()
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.end)
            .ok_or_else(|| StoreError::Usage(format!("{name} is not a committed chunk")))?;
        if end >= covered {
            return Err(StoreError::Usage(format!(
                "{name} is not covered by a checkpoint before its last entry ({covered})"
            ))
            .into());
        }
        Ok(self.files.drop_chunk(name)?)
    }

    /// Puts a fetched copy of the dropped chunk `name` back, once it matches what this node
    /// recorded of it and its entries open under the ledger secrets
    /// ([`LedgerFiles::attach_chunk`]).
    pub fn attach_chunk(&mut self, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
        Ok(self.files.attach_chunk(name, bytes, &self.keys.secrets)?)
    }

    /// What a fetched copy of the committed chunk `name` must match, to check it without the
    /// engine (`None`: the chunk is on disk). See [`crate::store::AbsentChunk::verify`] and
    /// [`Engine::attach_verified`].
    pub fn absent_chunk(&self, name: &str) -> Result<Option<AbsentChunk>, EngineError> {
        Ok(self.files.absent_chunk(name, &self.keys.secrets)?)
    }

    /// Takes a checked copy of a dropped chunk back.
    pub fn attach_verified(&mut self, chunk: VerifiedChunk) -> Result<(), EngineError> {
        Ok(self.files.attach_verified(chunk)?)
    }

    /// The seqno of the checkpoint this engine was opened from (`None`: every entry was read).
    pub fn opened_from(&self) -> Option<u64> {
        self.opened_from
    }

    /// Takes a background checkpoint every `n` committed transactions (default
    /// [`CHECKPOINT_EVERY`]).
    pub fn set_checkpoint_every(&mut self, n: u64) {
        self.checkpoint_every = n.max(1);
    }

    /// Last seqno present.
    pub fn last_seqno(&self) -> u64 {
        self.views.len()
    }

    /// Last transaction id present.
    pub fn last_txid(&self) -> Option<TxId> {
        self.views.last().map(|v| TxId::new(v, self.last_seqno()))
    }

    /// View of the transaction at `seqno`.
    pub fn view_at(&self, seqno: u64) -> Option<u64> {
        self.views.get(seqno)
    }

    /// Seqno of the last signature transaction.
    pub fn last_signature(&self) -> Option<u64> {
        self.signatures.last().copied()
    }

    /// Seqnos of every signature transaction, ascending.
    pub fn signatures(&self) -> &[u64] {
        &self.signatures
    }

    /// The Merkle root over leaves `0..=last_seqno()`.
    pub fn root(&self) -> Result<Hash, EngineError> {
        Ok(self.tree.root()?)
    }

    /// The Merkle root over leaves `0..=seqno` (leaf 0 is the zero leaf).
    pub fn root_at(&self, seqno: u64) -> Result<Hash, EngineError> {
        Ok(self.tree.root_at(seqno + 1)?)
    }

    /// CCF's view history up to `seqno`: entry `v - 1` is the first seqno of view `v` (a view
    /// without transactions gets the next view's first seqno).
    pub fn view_history(&self, seqno: u64) -> Vec<u64> {
        self.views.history(seqno)
    }

    /// The last transaction of each view within `from..=to`, ascending: `(seqno, view)`
    /// ([`crate::checkpoint::ViewRuns::last_of_each_run`]).
    pub fn last_of_each_view(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        self.views.last_of_each_run(from, to)
    }

    /// A checkpoint of the committed chunks as they stand (what [`Engine::write_checkpoint`]
    /// would write, encoded with [`Checkpoint::encode`] under the first ledger secret), for a
    /// node that joins from a snapshot; `None` while no chunk is committed.
    pub fn checkpoint_now(&self) -> Result<Option<Checkpoint>, EngineError> {
        self.checkpoint()
    }

    /// The keys.
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    fn check_next(&self, txid: TxId) -> Result<(), EngineError> {
        let last = self.last_seqno();
        let view_ok = self.views.last().is_none_or(|v| txid.view >= v);
        if txid.seqno != last + 1 || !view_ok {
            return Err(EngineError::Order { last, got: txid });
        }
        Ok(())
    }

    /// Encodes and appends a transaction at `txid` (not durable until [`Engine::sync`]).
    pub fn append(
        &mut self,
        txid: TxId,
        write_set: &EntryBuilder,
    ) -> Result<EncodedEntry, EngineError> {
        self.check_next(txid)?;
        let e = if self.legacy_versions {
            write_set.encode_with(
                txid,
                self.keys.secrets.at(txid.seqno),
                LegacyVersions::older_ccf(txid.seqno),
            )
        } else {
            write_set.encode(txid, self.keys.secrets.at(txid.seqno))
        };
        let sig = tables::is_signature(write_set.maps.iter().map(|m| m.name.as_str()));
        self.files.append(txid.seqno, &e.bytes, sig)?;
        self.tree.append(e.leaf);
        self.views.push(txid.view);
        if sig {
            self.signatures.push(txid.seqno);
        }
        Ok(e)
    }

    /// The write set of a signature transaction at `txid` over the current tree (the primary
    /// calls this when it appends the signature, so `S` and the tree are known).
    pub fn signature_write_set(&self, txid: TxId, iat: i64) -> Result<EntryBuilder, EngineError> {
        self.check_next(txid)?;
        let root = self.tree.root_at(txid.seqno)?;
        let from = self.signatures.last().copied().unwrap_or(0);
        let tree = self.tree.serialize(from, txid.seqno)?;
        let signer = Signer {
            node_key: &self.keys.node_key,
            node_cert_pem: &self.keys.node_cert_pem,
            service_key: match &self.keys.service_signer {
                Some(s) => Some(s.as_ref()),
                None => self
                    .keys
                    .service_key
                    .as_ref()
                    .map(|k| k as &dyn vellum_core::crypto::CoseSigner),
            },
            cwt: CwtClaims {
                iat,
                issuer: self.keys.cose_issuer.clone(),
                subject: self.keys.cose_subject.clone(),
            },
        };
        Ok(EntryBuilder {
            maps: signature_maps(&signer, txid, &root, tree)?,
            ..Default::default()
        })
    }

    /// Appends a signature transaction at `txid`.
    pub fn append_signature(&mut self, txid: TxId, iat: i64) -> Result<EncodedEntry, EngineError> {
        let ws = self.signature_write_set(txid, iat)?;
        self.append(txid, &ws)
    }

    /// On a replica: checks that a received signature transaction at `txid` matches this
    /// node's own tree before it is appended: the signed root and the serialized tree are this
    /// node's, the record names `txid`, the signing certificate is endorsed by the service and
    /// verifies the signature, and the COSE signature (if any) verifies with the service key.
    pub fn check_signature(
        &mut self,
        txid: TxId,
        write_set: &EntryBuilder,
    ) -> Result<(), EngineError> {
        let reject = |reason: &str| EngineError::SignatureRejected {
            txid,
            reason: reason.to_owned(),
        };
        self.check_next(txid)?;
        let root = self.tree.root_at(txid.seqno)?;
        let sig =
            SignatureTables::from_maps(&write_set.maps).map_err(|e| reject(&e.to_string()))?;
        let theirs =
            MerkleTree::deserialize(sig.tree).map_err(|e| reject(&format!("tree: {e}")))?;
        if self
            .tree
            .serialize(theirs.offset(), txid.seqno)
            .ok()
            .as_deref()
            != Some(sig.tree)
        {
            return Err(reject("serialized tree differs from this node's tree"));
        }
        let record = sig.record.ok_or_else(|| reject("no node signature"))?;
        if record.root != root {
            return Err(reject(&format!(
                "signed root {} differs from this node's root {root}",
                record.root
            )));
        }
        if record.txid() != txid {
            return Err(reject(&format!("record names {}", record.txid())));
        }
        let pem = record
            .cert
            .as_deref()
            .ok_or_else(|| reject("no node certificate"))?;
        let cert = Certificate::from_pem(pem)?;
        let service_key = self.service_key_at(txid.seqno).0.cloned();
        if let Some(service) = &service_key
            && self.endorsed.as_deref() != Some(pem)
        {
            cert.verify_issued_by(service)
                .map_err(|_| reject("node certificate not endorsed by the service"))?;
            self.endorsed = Some(pem.to_owned());
        }
        let node = NodeSignature {
            cert: &cert,
            node_id: Some(&record.node),
            sig_der: &record.sig_der()?,
        };
        verify_node_signature(&root, &node).map_err(|e| match e {
            RootSignatureError::Certificate(e) => EngineError::from(e),
            RootSignatureError::NodeId => reject("node id does not match the certificate"),
            _ => reject("node signature does not verify"),
        })?;
        if let (Some(bytes), Some(service)) = (&sig.cose, &service_key) {
            let named = verify_service_signature(&root, bytes, service, CoseRules::AsWritten)
                .map_err(|e| reject(&format!("COSE: {e}")))?;
            if named != txid {
                return Err(reject("COSE signature names another transaction"));
            }
        }
        Ok(())
    }

    /// Makes everything appended durable (one `fdatasync`).
    pub fn sync(&mut self) -> Result<(), EngineError> {
        Ok(self.files.sync()?)
    }

    /// Starts a sync that runs outside the engine's lock; see [`LedgerFiles::begin_sync`].
    pub fn begin_sync(&mut self) -> Result<Option<std::fs::File>, EngineError> {
        Ok(self.files.begin_sync()?)
    }

    /// Reports a failed sync begun with [`Engine::begin_sync`] (poisons the store).
    pub fn sync_failed(&mut self, error: StoreError) {
        self.files.sync_failed(error);
    }

    /// Why the store refuses writes, if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.files.poisoned()
    }

    /// Seqno up to which the ledger files are committed.
    pub fn committed(&self) -> u64 {
        self.files.committed_files_upto()
    }

    /// The write set of the transaction at `seqno`, decrypted.
    pub fn write_set(&self, seqno: u64) -> Result<(TxId, EntryBuilder), EngineError> {
        let bytes = self.files.read(seqno)?;
        let (raw, _) = RawEntry::parse(&bytes).map_err(|e| entry_err(seqno, e))?;
        let ws = EntryBuilder::decode(&raw, self.keys.secrets.at(seqno))
            .map_err(|e| entry_err(seqno, e))?;
        Ok((raw.iv.txid(), ws))
    }

    /// Closes the open chunk (the ledger must end on a signature).
    pub fn close_chunk(&mut self) -> Result<(), EngineError> {
        Ok(self.files.close_open_chunk()?)
    }

    /// Records the commit point (renames closed chunks `.committed`).
    pub fn commit(&mut self, seqno: u64) -> Result<(), EngineError> {
        self.files.commit(seqno)?;
        // Trimming moves every held low-height node (a `Vec` drains from the front), so it
        // waits until a quarter of the untrimmed window can go: amortized O(1) a transaction.
        // Trimming at every commit cost ~40 us of node CPU per durable append at 64k held.
        let point = trim_point(seqno, self.untrimmed);
        if point >= self.tree.trimmed() + (self.untrimmed / 4).max(TRIM_BLOCK) {
            self.tree.trim_to(point);
        }
        self.checkpoint_in_background();
        Ok(())
    }

    /// Transactions below this seqno have their Merkle subtree trimmed.
    pub fn tree_trimmed(&self) -> u64 {
        self.tree.trimmed()
    }

    /// How many of the last committed transactions keep their whole Merkle subtree (default
    /// [`UNTRIMMED`]); older ones are trimmed at a commit once a quarter of `n` (at least one
    /// 16-leaf block) more can go. Fewer saves memory and makes receipts of more transactions
    /// read their neighbours' entries.
    pub fn set_untrimmed(&mut self, n: u64) {
        self.untrimmed = n;
    }

    /// The Merkle leaf of the transaction at `seqno` (leaf 0 is the zero hash), from its
    /// entry in the files.
    fn leaf_at(&self, seqno: u64) -> Result<Hash, EngineError> {
        if seqno == 0 {
            return Ok(Hash::ZERO);
        }
        let bytes = self.files.read(seqno)?;
        let (raw, _) = RawEntry::parse(&bytes).map_err(|e| entry_err(seqno, e))?;
        let pd = raw.public_domain().map_err(|e| entry_err(seqno, e))?;
        Ok(entry::leaf_for(&raw.write_set_digest(), &pd))
    }

    /// The inclusion path of `seqno` at `size`; where the tree was trimmed, the leaves of the
    /// blocks it needs (at most two blocks of 16) are recomputed from the ledger files.
    fn path(&self, seqno: u64, size: u64) -> Result<vellum_core::merkle::Path, EngineError> {
        let blocks = self.tree.trimmed_blocks(seqno, size);
        if blocks.is_empty() {
            return Ok(self.tree.path(seqno, size)?);
        }
        let mut given = Vec::with_capacity(blocks.len());
        for start in blocks {
            let leaves = (start..start + TRIM_BLOCK)
                .map(|i| self.leaf_at(i))
                .collect::<Result<Vec<_>, _>>()?;
            given.push((start, leaves));
        }
        Ok(self.tree.path_from_blocks(seqno, size, &given)?)
    }

    /// Drops every transaction after `last_kept`.
    pub fn truncate(&mut self, last_kept: u64) -> Result<(), EngineError> {
        if last_kept >= self.last_seqno() {
            return Ok(());
        }
        self.files.truncate(last_kept)?;
        self.tree.retract_to(last_kept)?;
        self.views.truncate(last_kept);
        self.signatures.retain(|s| *s <= last_kept);
        // A secret a truncated rekey brought in applies to nothing kept.
        self.keys.secrets.truncate(last_kept);
        Ok(())
    }

    /// Seals transactions from seqno `from` on under `secret` (a rekey at `from - 1`). It must
    /// come after the last transaction and the last secret's start. The caller makes `secret`
    /// durable first: a ledger opened without a secret its entries need takes them for a torn
    /// tail.
    pub fn add_secret(&mut self, from: u64, secret: LedgerSecret) -> Result<(), EngineError> {
        if from <= self.last_seqno() {
            return Err(EngineError::Order {
                last: self.last_seqno(),
                got: TxId::new(self.views.last().unwrap_or(0), from),
            });
        }
        self.keys
            .secrets
            .push(from, secret)
            .map_err(|e| EngineError::Secret(e.to_string()))
    }

    /// The service key whose nodes signed at `seqno` and, for a previous service identity,
    /// its endorsement by the current one.
    fn service_key_at(
        &self,
        seqno: u64,
    ) -> (Option<&vellum_core::crypto::PublicKey>, Option<String>) {
        match self
            .keys
            .previous_services
            .iter()
            .position(|p| seqno <= p.until_seqno)
        {
            Some(i) => (
                self.previous_keys.get(i).and_then(Option::as_ref),
                Some(self.keys.previous_services[i].endorsement_pem.clone()),
            ),
            None => (self.service_key_public.as_ref(), None),
        }
    }

    /// Takes a new service identity (a rotation): the service key, its certificate, this node's
    /// certificate endorsed by it, and the identities before it (the one replaced last, with
    /// the last seqno it signed). Signatures after that seqno are checked against the new key.
    pub fn replace_identity(
        &mut self,
        service_key: Option<SigningKey>,
        service_cert_pem: String,
        node_cert_pem: String,
        previous_services: Vec<PreviousService>,
    ) {
        (self.service_key_public, self.previous_keys) =
            service_keys(&service_cert_pem, &previous_services);
        if service_key.is_some() {
            self.keys.service_key = service_key;
        }
        self.keys.service_cert_pem = service_cert_pem;
        self.keys.node_cert_pem = node_cert_pem;
        self.keys.previous_services = previous_services;
        self.endorsed = None;
    }

    /// Replaces the ledger secrets with `secrets` (a rekey brought one in, or one a lost
    /// rekey had brought in is forgotten). Refused if it would change the secret of any
    /// transaction already written.
    pub fn replace_secrets(&mut self, secrets: LedgerSecrets) -> Result<(), EngineError> {
        let last = self.last_seqno();
        let written = |s: &LedgerSecrets| {
            s.iter()
                .filter(|(from, _)| *from <= last)
                .map(|(from, k)| (from, *k.as_bytes()))
                .collect::<Vec<_>>()
        };
        if written(&secrets) != written(&self.keys.secrets) {
            return Err(EngineError::Secret(
                "the new ledger secrets would change those of transactions already written".into(),
            ));
        }
        self.keys.secrets = secrets;
        Ok(())
    }

    /// The entry bytes at `seqno`.
    pub fn read(&self, seqno: u64) -> Result<Vec<u8>, EngineError> {
        Ok(self.files.read(seqno)?)
    }

    /// The receipt of `txid`, from the first signature after it, which must be at or below
    /// `committed` (receipts are only for committed transactions).
    pub fn receipt(&self, txid: TxId, committed: u64) -> Result<ReceiptBundle, EngineError> {
        self.receipt_from(txid, committed, false).map(|(r, _)| r)
    }

    /// [`Engine::receipt`] and the transaction's write set (private maps decrypted), from one
    /// read of its entry: a receipt that reveals the transaction's application claim needs
    /// both.
    pub fn receipt_and_write_set(
        &self,
        txid: TxId,
        committed: u64,
    ) -> Result<(ReceiptBundle, EntryBuilder), EngineError> {
        let (r, ws) = self.receipt_from(txid, committed, true)?;
        Ok((r, ws.unwrap_or_default()))
    }

    fn receipt_from(
        &self,
        txid: TxId,
        committed: u64,
        with_write_set: bool,
    ) -> Result<(ReceiptBundle, Option<EntryBuilder>), EngineError> {
        if self.view_at(txid.seqno) != Some(txid.view) {
            return Err(EngineError::NotFound(txid));
        }
        let s = match self.signatures.binary_search(&(txid.seqno + 1)) {
            Ok(i) | Err(i) => self.signatures.get(i).copied(),
        }
        .filter(|s| *s <= committed)
        .ok_or(EngineError::NotCovered(txid))?;
        let sig_bytes = self.files.read(s)?;
        let (sig_raw, _) = RawEntry::parse(&sig_bytes).map_err(|e| entry_err(s, e))?;
        let sig_pd = sig_raw.public_domain().map_err(|e| entry_err(s, e))?;
        let sig = SignatureTables::from_maps(&sig_pd.maps).map_err(|e| entry_err(s, e))?;
        let record = sig
            .record
            .ok_or_else(|| entry_err(s, "signature record missing"))?;
        let cose_sig = sig.cose;
        let bytes = self.files.read(txid.seqno)?;
        let (raw, _) = RawEntry::parse(&bytes).map_err(|e| entry_err(txid.seqno, e))?;
        let pd = raw.public_domain().map_err(|e| entry_err(txid.seqno, e))?;
        let write_set = if with_write_set {
            Some(
                EntryBuilder::decode(&raw, self.keys.secrets.at(txid.seqno))
                    .map_err(|e| entry_err(txid.seqno, e))?,
            )
        } else {
            None
        };
        let ws = raw.write_set_digest();
        let claims = pd.claims_digest.unwrap_or(Hash::ZERO);
        let ce = self.keys.secrets.commit_evidence(txid);
        let path = self.path(txid.seqno, s)?;
        let receipt = Receipt {
            cert: record.cert.clone(),
            leaf_components: Some(LeafComponents {
                claims_digest: claims.to_hex(),
                commit_evidence: ce.clone(),
                write_set_digest: ws.to_hex(),
            }),
            node_id: Some(record.node.clone()),
            proof: path
                .steps
                .iter()
                .map(|st| match st {
                    PathStep::Left(h) => ProofElement {
                        left: Some(h.to_hex()),
                        right: None,
                    },
                    PathStep::Right(h) => ProofElement {
                        left: None,
                        right: Some(h.to_hex()),
                    },
                })
                .collect(),
            service_endorsements: Some(self.service_key_at(s).1.into_iter().collect()),
            signature: Some(base64::engine::general_purpose::STANDARD.encode(record.sig_der()?)),
            leaf: None,
        };
        let cose = match cose_sig {
            Some(c) => Some(
                cose_receipt(
                    &c,
                    &CoseLeaf {
                        write_set_digest: ws,
                        commit_evidence: ce,
                        claims_digest: claims,
                    },
                    &path,
                )
                .map_err(|e| entry_err(s, e))?,
            ),
            None => None,
        };
        Ok((
            ReceiptBundle {
                txid,
                signature: TxId::new(record.view, s),
                receipt,
                cose,
            },
            write_set,
        ))
    }
}

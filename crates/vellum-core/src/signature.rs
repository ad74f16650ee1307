//! Signature transactions: the node's ECDSA signature over the Merkle root, the service's
//! COSE_Sign1 over the same root, and the serialized tree, in CCF's three tables.
//!
//! A signature transaction at seqno `S` signs the root over leaves `0..S` (every earlier
//! transaction, earlier signatures included); its own leaf is appended afterwards.

use base64::Engine as _;

use crate::cose::{self, CwtClaims};
use crate::crypto::{CryptoError, SigningKey};
use crate::entry::{MapWrites, SINGLETON_KEY};
use crate::hash::Hash;
use crate::tables;
use crate::txid::TxId;

pub use crate::tables::SignatureRecord;

/// Who signs, and how the COSE header is filled.
#[derive(Debug, Clone)]
pub struct Signer<'a> {
    /// The node's key.
    pub node_key: &'a SigningKey,
    /// The node's service-endorsed certificate (PEM).
    pub node_cert_pem: &'a str,
    /// The service key, for the COSE signature (CCF 6+ dual signing). `None`: node signature only.
    pub service_key: Option<&'a dyn crate::crypto::CoseSigner>,
    /// CWT claims for the COSE header.
    pub cwt: CwtClaims,
}

/// Builds the three maps of a signature transaction at `txid` over `root`, with `tree` the
/// serialized tree (see [`crate::merkle::MerkleTree::serialize`]).
pub fn signature_maps(
    signer: &Signer<'_>,
    txid: TxId,
    root: &Hash,
    tree: Vec<u8>,
) -> Result<Vec<MapWrites>, CryptoError> {
    let sig = signer.node_key.sign_prehash_der(root)?;
    let record = SignatureRecord {
        cert: Some(signer.node_cert_pem.to_owned()),
        commit_seqno: 0,
        commit_view: 0,
        hashed_nonce: Some("0".repeat(64)),
        node: signer.node_key.public_key().id(),
        root: *root,
        seqno: txid.seqno,
        sig: base64::engine::general_purpose::STANDARD.encode(sig),
        view: txid.view,
    };
    let mut maps = vec![tables::SIGNATURES.write(&(), &record)];
    if let Some(sk) = signer.service_key {
        let c = cose::sign_root(sk, txid, root, &signer.cwt)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        maps.push(tables::COSE_SIGNATURES.write(&(), &b64));
    }
    maps.push(tables::TREE.write(&(), &tree));
    // CCF orders maps by name within a write set.
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(maps)
}

/// Decodes the COSE signature value (a JSON string of base64) into COSE_Sign1 bytes.
pub fn decode_cose_value(value: &[u8]) -> Option<Vec<u8>> {
    let s: String = serde_json::from_slice(value).ok()?;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Why the tables of a signature transaction are malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureTablesError {
    /// A table other than the three signature tables.
    #[error("table {0}")]
    UnexpectedTable(String),
    /// A signature table without exactly one write at the singleton key.
    #[error("table {0} with other than one singleton write")]
    NotSingleton(String),
    /// No serialized tree.
    #[error("no serialized tree")]
    MissingTree,
    /// The node signature record is not valid JSON of the expected shape.
    #[error("public:ccf.internal.signatures: {0}")]
    Record(String),
    /// The COSE value is not a JSON string of base64.
    #[error("public:ccf.internal.cose_signatures: not a JSON string of base64")]
    CoseValue,
    /// Neither a node nor a COSE signature.
    #[error("no signature")]
    NoSignature,
}

/// The three tables of a signature transaction, read and checked for shape: only these tables,
/// each a singleton write, a tree, and at least one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureTables<'a> {
    /// The node signature record, if present.
    pub record: Option<SignatureRecord>,
    /// The COSE_Sign1 bytes, if present.
    pub cose: Option<Vec<u8>>,
    /// The serialized tree.
    pub tree: &'a [u8],
}

impl<'a> SignatureTables<'a> {
    /// Reads the signature tables from a signature transaction's maps.
    pub fn from_maps(maps: &'a [MapWrites]) -> Result<SignatureTables<'a>, SignatureTablesError> {
        let (mut record, mut cose, mut tree) = (None, None, None);
        for m in maps {
            let value = match m.writes.as_slice() {
                [(k, v)] if k.as_slice() == SINGLETON_KEY && m.removes.is_empty() => v.as_slice(),
                _ if is_signature_table(&m.name) => {
                    return Err(SignatureTablesError::NotSingleton(m.name.clone()));
                }
                _ => return Err(SignatureTablesError::UnexpectedTable(m.name.clone())),
            };
            if m.name == tables::SIGNATURES {
                record = Some(
                    tables::SIGNATURES
                        .decode_value(value)
                        .map_err(|e| SignatureTablesError::Record(e.problem))?,
                );
            } else if m.name == tables::COSE_SIGNATURES {
                cose = Some(decode_cose_value(value).ok_or(SignatureTablesError::CoseValue)?);
            } else if m.name == tables::TREE {
                tree = Some(value);
            } else {
                return Err(SignatureTablesError::UnexpectedTable(m.name.clone()));
            }
        }
        let tree = tree.ok_or(SignatureTablesError::MissingTree)?;
        if record.is_none() && cose.is_none() {
            return Err(SignatureTablesError::NoSignature);
        }
        Ok(SignatureTables { record, cose, tree })
    }
}

fn is_signature_table(name: &str) -> bool {
    name == tables::SIGNATURES || name == tables::COSE_SIGNATURES || name == tables::TREE
}

/// How strictly the service's COSE signature is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoseRules {
    /// Every header Vellum writes must be there (`alg`, `kid`, the VDS header, `ccf.v1.txid`):
    /// a replica checking its primary, which runs the same code.
    AsWritten,
    /// Exactly what CCF's own verifier requires, no more ([`cose::verify_root_as_ccf`]): the
    /// offline auditor, which must accept every ledger CCF accepts.
    AsCcf,
}

/// Why a signature over a root does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootSignatureError {
    /// The node certificate's key cannot be read.
    #[error("node certificate: {0}")]
    Certificate(CryptoError),
    /// The signature record names another node than the certificate's key.
    #[error("node id does not match the certificate")]
    NodeId,
    /// The node's signature does not verify over the root.
    #[error("node signature does not verify: {0}")]
    NodeSignature(CryptoError),
    /// The service's COSE signature is malformed or does not verify over the root.
    #[error(transparent)]
    Cose(#[from] cose::CoseError),
}

/// A node's signature over a root, as a verifier has it.
#[derive(Debug, Clone, Copy)]
pub struct NodeSignature<'a> {
    /// The certificate of the node that signed (from the ledger's endorsed certificates, or
    /// embedded in the record).
    pub cert: &'a crate::crypto::Certificate,
    /// The node id the record names, if the verifier checks it against the certificate's key.
    pub node_id: Option<&'a str>,
    /// The DER ECDSA signature over the root (prehashed).
    pub sig_der: &'a [u8],
}

/// The one check of a node's signature over `root`, used by replicas checking their primary
/// and by the offline auditor: the key of `sig.cert` (whose id is `sig.node_id`, when given)
/// signed `root`.
pub fn verify_node_signature(
    root: &Hash,
    sig: &NodeSignature<'_>,
) -> Result<(), RootSignatureError> {
    let key = sig
        .cert
        .public_key()
        .map_err(RootSignatureError::Certificate)?;
    if sig.node_id.is_some_and(|id| key.id() != id) {
        return Err(RootSignatureError::NodeId);
    }
    key.verify_prehash_der(&root.0, sig.sig_der)
        .map_err(RootSignatureError::NodeSignature)
}

/// The one check of the service's COSE_Sign1 over `root`, used by replicas and the offline
/// auditor (each with its [`CoseRules`]): returns the transaction id the signature names, for
/// the caller to hold against the transaction that carries it.
pub fn verify_service_signature(
    root: &Hash,
    cose_sign1: &[u8],
    service_key: &crate::crypto::PublicKey,
    rules: CoseRules,
) -> Result<TxId, RootSignatureError> {
    Ok(match rules {
        CoseRules::AsWritten => {
            cose::decode_sign1(cose_sign1)?.verify_ledger_signature(service_key, root)?
        }
        CoseRules::AsCcf => cose::verify_root_as_ccf(cose_sign1, service_key, root)?,
    })
}

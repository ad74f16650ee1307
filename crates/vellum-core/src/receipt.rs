//! Receipts: the JSON receipt ACL returns (camelCase; CCF's snake_case is read too), COSE
//! receipts (CCF 6+), ACL application claims, and verifiers.
//!
//! [`Receipt::verify`] does what the Azure SDK's `verify_receipt` (azure-confidentialledger
//! 1.1.1) does, step for step, and names the step that failed:
//!
//! 1. structure (`cert`, `leafComponents.{claimsDigest,commitEvidence,writeSetDigest}`,
//!    `proof`, `signature`; optional `nodeId`, `serviceEndorsements`);
//! 2. if application claims are given, their digest must equal `claimsDigest`;
//! 3. the node certificate is endorsed by each of `serviceEndorsements`, ending at the service
//!    certificate;
//! 4. `leaf = SHA-256(writeSetDigest || SHA-256(commitEvidence) || claimsDigest)`, folded with
//!    the proof into the root;
//! 5. `nodeId`, if present, is SHA-256 of the node's public key;
//! 6. `signature` verifies over the root (as a SHA-256 prehash) with the node key.

use base64::Engine as _;
use ciborium::value::{Integer, Value as Cbor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cose::{self, CoseError};
use crate::crypto::{Certificate, CryptoError, PublicKey};
use crate::entry::hmac_sha256;
use crate::hash::Hash;
use crate::merkle::{Path, PathStep};
use crate::txid::TxId;

/// The leaf components of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeafComponents {
    /// Hex claims digest (64 zeros when none).
    pub claims_digest: String,
    /// `ce:VIEW.SEQNO:<hex>`.
    pub commit_evidence: String,
    /// Hex write-set digest.
    pub write_set_digest: String,
}

/// One proof element: exactly one of `left` / `right` in a valid receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProofElement {
    /// Sibling on the left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
    /// Sibling on the right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right: Option<String>,
}

/// A JSON receipt (the inner `receipt` object of ACL's `GET .../receipt`). Serializes in
/// camelCase; [`Receipt::from_json`] also reads CCF's snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// PEM of the signing node's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Leaf components (absent for signature transactions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_components: Option<LeafComponents>,
    /// Hex SHA-256 of the node's public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Proof from the leaf upwards.
    pub proof: Vec<ProofElement>,
    /// Certificates endorsing the node's issuer, towards the current service certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_endorsements: Option<Vec<String>>,
    /// Base64 DER ECDSA signature over the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signed root, as the leaf of a signature transaction's receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
}

/// Why a receipt was refused. Each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt's structure is invalid (the field is named).
    #[error("the receipt content is invalid: {0}")]
    Invalid(&'static str),
    /// A hex field is not 32 bytes of hex.
    #[error("receipt field {0} is not a 64-character hex digest")]
    Hex(&'static str),
    /// Proof element `index` has both or neither of `left` / `right`.
    #[error("proof element {0} must have exactly one of left/right")]
    ProofElement(usize),
    /// The application claims' digest differs from the receipt's claims digest.
    #[error(
        "application claims digest {computed} does not match the receipt's claims digest {receipt}"
    )]
    ClaimsDigestMismatch {
        /// Digest of the claims given.
        computed: String,
        /// Digest in the receipt.
        receipt: String,
    },
    /// The application claims are malformed.
    #[error("application claims: {0}")]
    Claims(#[from] ClaimsError),
    /// The node certificate cannot be read or has a non-EC key.
    #[error("node certificate: {0}")]
    NodeCertificate(CryptoError),
    /// The service certificate cannot be read or has a non-EC key.
    #[error("service certificate: {0}")]
    ServiceCertificate(CryptoError),
    /// Link `index` of the endorsement chain fails (0 = the node certificate's issuer).
    #[error("endorsement chain link {index} does not verify: {source}")]
    Endorsement {
        /// Position in `serviceEndorsements + [service cert]`.
        index: usize,
        /// What failed.
        source: CryptoError,
    },
    /// `nodeId` is not the SHA-256 of the node certificate's public key.
    #[error("nodeId {receipt} does not match the node certificate's key {computed}")]
    NodeIdMismatch {
        /// Id in the receipt.
        receipt: String,
        /// Id computed from the certificate.
        computed: String,
    },
    /// The signature does not verify over the root computed from the proof.
    #[error("signature over the computed root does not verify: {0}")]
    Signature(CryptoError),
    /// A COSE receipt fails.
    #[error("COSE receipt: {0}")]
    Cose(#[from] CoseError),
}

fn snake_to_camel(s: &str) -> String {
    let mut parts = s.split('_');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for p in parts {
        let mut c = p.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(&c.as_str().to_lowercase());
        }
    }
    out
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `v` with every object key, at every depth, renamed by `rename`.
fn map_keys(v: &Value, rename: fn(&str) -> String) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (rename(k), map_keys(v, rename)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| map_keys(v, rename)).collect()),
        other => other.clone(),
    }
}

/// Recursively converts snake_case object keys to camelCase (as the Azure SDK does).
pub fn normalize_keys(v: &Value) -> Value {
    map_keys(v, snake_to_camel)
}

/// Recursively converts ACL's camelCase object keys to CCF's snake_case (`leafComponents` →
/// `leaf_components`): a receipt as CCF's `/app/receipt` answers it.
pub fn ccf_keys(v: &Value) -> Value {
    map_keys(v, camel_to_snake)
}

fn opt_str(m: &Map<String, Value>, key: &'static str) -> Result<Option<String>, ReceiptError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ReceiptError::Invalid(key)),
    }
}

impl Receipt {
    /// Reads a receipt from JSON (camelCase or snake_case keys). Structure is checked loosely
    /// here (types of present fields); [`Receipt::verify`] requires the fields it needs.
    pub fn from_json(v: &Value) -> Result<Receipt, ReceiptError> {
        let v = normalize_keys(v);
        let m = v.as_object().ok_or(ReceiptError::Invalid("receipt"))?;
        let leaf_components = match m.get("leafComponents") {
            None => None,
            Some(Value::Object(lc)) => Some(LeafComponents {
                claims_digest: opt_str(lc, "claimsDigest")?
                    .ok_or(ReceiptError::Invalid("leafComponents.claimsDigest"))?,
                commit_evidence: opt_str(lc, "commitEvidence")?
                    .ok_or(ReceiptError::Invalid("leafComponents.commitEvidence"))?,
                write_set_digest: opt_str(lc, "writeSetDigest")?
                    .ok_or(ReceiptError::Invalid("leafComponents.writeSetDigest"))?,
            }),
            Some(_) => return Err(ReceiptError::Invalid("leafComponents")),
        };
        let proof = match m.get("proof") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| {
                    let o = e.as_object().ok_or(ReceiptError::Invalid("proof"))?;
                    let left = opt_str(o, "left")?;
                    let right = opt_str(o, "right")?;
                    if left.is_none() && right.is_none() {
                        return Err(ReceiptError::Invalid("proof"));
                    }
                    Ok(ProofElement { left, right })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ReceiptError::Invalid("proof")),
        };
        let service_endorsements = match m.get("serviceEndorsements") {
            None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|e| {
                        e.as_str()
                            .map(str::to_owned)
                            .ok_or(ReceiptError::Invalid("serviceEndorsements"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(ReceiptError::Invalid("serviceEndorsements")),
        };
        Ok(Receipt {
            cert: opt_str(m, "cert")?,
            leaf_components,
            node_id: opt_str(m, "nodeId")?,
            proof,
            service_endorsements,
            signature: opt_str(m, "signature")?,
            leaf: opt_str(m, "leaf")?,
        })
    }

    /// The proof as a typed path.
    pub fn path(&self) -> Result<Path, ReceiptError> {
        let steps = self
            .proof
            .iter()
            .enumerate()
            .map(|(i, e)| match (&e.left, &e.right) {
                (Some(l), None) => Ok(PathStep::Left(hex32(l, "proof")?)),
                (None, Some(r)) => Ok(PathStep::Right(hex32(r, "proof")?)),
                _ => Err(ReceiptError::ProofElement(i)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Path { steps })
    }

    /// The leaf this receipt proves: from the leaf components, or the `leaf` of a signature
    /// transaction's receipt.
    pub fn leaf_hash(&self) -> Result<Hash, ReceiptError> {
        match &self.leaf_components {
            Some(lc) => Ok(crate::entry::leaf_hash(
                &hex32(&lc.write_set_digest, "leafComponents.writeSetDigest")?,
                &Hash::digest(lc.commit_evidence.as_bytes()),
                &hex32(&lc.claims_digest, "leafComponents.claimsDigest")?,
            )),
            None => hex32(
                self.leaf
                    .as_deref()
                    .ok_or(ReceiptError::Invalid("leafComponents"))?,
                "leaf",
            ),
        }
    }

    /// The root the proof leads to.
    pub fn root(&self) -> Result<Hash, ReceiptError> {
        Ok(self.path()?.root(&self.leaf_hash()?))
    }

    /// The transaction id named by the commit evidence (`ce:VIEW.SEQNO:...`), if well-formed.
    pub fn txid(&self) -> Option<TxId> {
        let ce = &self.leaf_components.as_ref()?.commit_evidence;
        let rest = ce.strip_prefix("ce:")?;
        rest.split_once(':')?.0.parse().ok()
    }

    /// Verifies the receipt against the service certificate (PEM), as the Azure SDK's
    /// `verify_receipt` does; see the [module docs](self). With `application_claims`
    /// (non-empty), their digest must equal the receipt's claims digest.
    pub fn verify(
        &self,
        service_cert_pem: &str,
        application_claims: Option<&[ApplicationClaim]>,
    ) -> Result<(), ReceiptError> {
        let cert_pem = self.cert.as_deref().ok_or(ReceiptError::Invalid("cert"))?;
        let lc = self
            .leaf_components
            .as_ref()
            .ok_or(ReceiptError::Invalid("leafComponents"))?;
        let sig_b64 = self
            .signature
            .as_deref()
            .ok_or(ReceiptError::Invalid("signature"))?;
        if let Some(claims) = application_claims.filter(|c| !c.is_empty()) {
            let computed = claims_digest(claims)?.to_hex();
            if computed != lc.claims_digest.to_lowercase() {
                return Err(ReceiptError::ClaimsDigestMismatch {
                    computed,
                    receipt: lc.claims_digest.clone(),
                });
            }
        }
        let node_cert = Certificate::from_pem(cert_pem).map_err(ReceiptError::NodeCertificate)?;
        let node_key = node_cert
            .public_key()
            .map_err(ReceiptError::NodeCertificate)?;
        verify_endorsements(
            &node_cert,
            self.service_endorsements.as_deref().unwrap_or_default(),
            service_cert_pem,
        )?;
        let root = self.root()?;
        if let Some(id) = &self.node_id {
            let computed = node_key.id();
            if !id.eq_ignore_ascii_case(&computed) {
                return Err(ReceiptError::NodeIdMismatch {
                    receipt: id.clone(),
                    computed,
                });
            }
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64)
            .map_err(|_| ReceiptError::Signature(CryptoError::SignatureEncoding))?;
        node_key
            .verify_prehash_der(&root.0, &sig)
            .map_err(ReceiptError::Signature)
    }
}

/// Walks `node → endorsements… → service certificate`, each link signed by the next.
pub fn verify_endorsements(
    node_cert: &Certificate,
    endorsements: &[String],
    service_cert_pem: &str,
) -> Result<(), ReceiptError> {
    let service =
        Certificate::from_pem(service_cert_pem).map_err(ReceiptError::ServiceCertificate)?;
    let service_key = service
        .public_key()
        .map_err(ReceiptError::ServiceCertificate)?;
    // Stricter than the Azure SDK: the trust anchor must be intact, i.e. self-signed (CCF and
    // ACL service identities always are), so a corrupted anchor is reported, not half-used.
    service
        .verify_issued_by(&service_key)
        .map_err(ReceiptError::ServiceCertificate)?;
    let mut chain = Vec::with_capacity(endorsements.len() + 1);
    for (index, pem) in endorsements.iter().enumerate() {
        chain.push(
            Certificate::from_pem(pem)
                .map_err(|source| ReceiptError::Endorsement { index, source })?,
        );
    }
    chain.push(service);
    let mut current = node_cert.clone();
    for (index, issuer) in chain.into_iter().enumerate() {
        let key = issuer
            .public_key()
            .map_err(|source| ReceiptError::Endorsement { index, source })?;
        current
            .verify_issued_by(&key)
            .map_err(|source| ReceiptError::Endorsement { index, source })?;
        current = issuer;
    }
    Ok(())
}

fn hex32(s: &str, field: &'static str) -> Result<Hash, ReceiptError> {
    Hash::from_hex(s).map_err(|_| ReceiptError::Hex(field))
}

/// An ACL application claim (`applicationClaims[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum ApplicationClaim {
    /// A claim over a ledger entry, with the secret key that blinds it.
    LedgerEntry {
        /// The claim.
        #[serde(rename = "ledgerEntry", alias = "ledger_entry")]
        ledger_entry: LedgerEntryClaim,
    },
    /// A claim given as a digest.
    ClaimDigest {
        /// The digest.
        digest: ClaimDigestValue,
    },
}

/// The `ledgerEntry` of a `LedgerEntry` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryClaim {
    /// Collection id.
    #[serde(alias = "collection_id")]
    pub collection_id: String,
    /// Entry contents.
    pub contents: String,
    /// Protocol, `LedgerEntryV1`.
    pub protocol: String,
    /// Base64 secret key.
    #[serde(alias = "secret_key")]
    pub secret_key: String,
}

/// The `digest` of a `ClaimDigest` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimDigestValue {
    /// Protocol, `LedgerEntryV1`.
    pub protocol: String,
    /// Hex digest.
    pub value: String,
}

/// Why application claims could not be digested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// No claims.
    #[error("the list of application claims is empty")]
    Empty,
    /// A protocol other than `LedgerEntryV1`.
    #[error("unsupported claim protocol {0:?}")]
    Protocol(String),
    /// The secret key is not base64.
    #[error("secretKey is not base64")]
    SecretKey,
    /// The digest value is not hex.
    #[error("digest value is not hex")]
    DigestValue,
}

/// The protocol of ACL's application claims.
pub const LEDGER_ENTRY_V1: &str = "LedgerEntryV1";

/// The blinded digest of a `LedgerEntryV1` claim:
/// `SHA-256(HMAC(k, collectionId) || HMAC(k, contents))`.
pub fn ledger_entry_digest(secret_key: &[u8], collection_id: &str, contents: &str) -> Hash {
    Hash::digest_parts(&[
        &hmac_sha256(secret_key, collection_id.as_bytes()),
        &hmac_sha256(secret_key, contents.as_bytes()),
    ])
}

/// The digest `d` of one `LedgerEntryV1` claim: `SHA-256("LedgerEntryV1" ||
/// ledger_entry_digest(k, collectionId, contents))`.
pub fn ledger_entry_claim_digest(secret_key: &[u8], collection_id: &str, contents: &str) -> Hash {
    let inner = ledger_entry_digest(secret_key, collection_id, contents);
    Hash::digest_parts(&[LEDGER_ENTRY_V1.as_bytes(), &inner.0])
}

/// ACL's claims digest of claims whose own digests are `digests`:
/// `SHA-256(u32_le(n) || d_1 || … || d_n)`.
pub fn claims_digest_of(digests: &[Hash]) -> Hash {
    let mut buf = Vec::with_capacity(4 + 32 * digests.len());
    buf.extend_from_slice(&(digests.len() as u32).to_le_bytes());
    for d in digests {
        buf.extend_from_slice(&d.0);
    }
    Hash::digest(&buf)
}

/// ACL's claims digest: [`claims_digest_of`] the claims' own digests, with
/// `d_i = SHA-256(protocol || claim digest)`.
pub fn claims_digest(claims: &[ApplicationClaim]) -> Result<Hash, ClaimsError> {
    if claims.is_empty() {
        return Err(ClaimsError::Empty);
    }
    let mut digests = Vec::with_capacity(claims.len());
    for c in claims {
        digests.push(match c {
            ApplicationClaim::LedgerEntry { ledger_entry: e } => {
                if e.protocol != LEDGER_ENTRY_V1 {
                    return Err(ClaimsError::Protocol(e.protocol.clone()));
                }
                let k = base64::engine::general_purpose::STANDARD
                    .decode(&e.secret_key)
                    .map_err(|_| ClaimsError::SecretKey)?;
                ledger_entry_claim_digest(&k, &e.collection_id, &e.contents)
            }
            ApplicationClaim::ClaimDigest { digest } => {
                if digest.protocol != LEDGER_ENTRY_V1 {
                    return Err(ClaimsError::Protocol(digest.protocol.clone()));
                }
                let v = hex::decode(&digest.value).map_err(|_| ClaimsError::DigestValue)?;
                Hash::digest_parts(&[digest.protocol.as_bytes(), &v])
            }
        });
    }
    Ok(claims_digest_of(&digests))
}

/// The leaf components of a COSE receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseLeaf {
    /// Write-set digest.
    pub write_set_digest: Hash,
    /// Commit evidence.
    pub commit_evidence: String,
    /// Claims digest.
    pub claims_digest: Hash,
}

fn cint(i: i64) -> Cbor {
    Cbor::Integer(Integer::from(i))
}

/// Builds a COSE receipt: the signature transaction's COSE_Sign1 with the unprotected header
/// `{396: {-1: [bstr(CBOR({1: [ws, ce, claims], 2: [[is_left, hash]…]}))]}}`.
pub fn cose_receipt(
    signature_cose: &[u8],
    leaf: &CoseLeaf,
    path: &Path,
) -> Result<Vec<u8>, CoseError> {
    let s = cose::decode_sign1(signature_cose)?;
    let steps = path
        .steps
        .iter()
        .map(|st| match st {
            PathStep::Left(h) => Cbor::Array(vec![Cbor::Bool(true), Cbor::Bytes(h.0.to_vec())]),
            PathStep::Right(h) => Cbor::Array(vec![Cbor::Bool(false), Cbor::Bytes(h.0.to_vec())]),
        })
        .collect();
    let proof = Cbor::Map(vec![
        (
            cint(1),
            Cbor::Array(vec![
                Cbor::Bytes(leaf.write_set_digest.0.to_vec()),
                Cbor::Text(leaf.commit_evidence.clone()),
                Cbor::Bytes(leaf.claims_digest.0.to_vec()),
            ]),
        ),
        (cint(2), Cbor::Array(steps)),
    ]);
    let mut proof_bytes = Vec::new();
    let _ = ciborium::into_writer(&proof, &mut proof_bytes);
    let unprotected = vec![(
        cint(cose::LABEL_VDP),
        Cbor::Map(vec![(
            cint(-1),
            Cbor::Array(vec![Cbor::Bytes(proof_bytes)]),
        )]),
    )];
    Ok(cose::encode_sign1(
        &s.protected,
        unprotected,
        None,
        &s.signature,
    ))
}

fn cbor_hash(v: &Cbor) -> Result<Hash, CoseError> {
    match v {
        Cbor::Bytes(b) => {
            Hash::from_slice(b).map_err(|_| CoseError::Malformed("digest not 32 bytes"))
        }
        _ => Err(CoseError::Malformed("digest not a byte string")),
    }
}

/// Verifies a COSE receipt with the service public key, as `ccf.receipt.verify_cose` does:
/// every inclusion proof must lead to a root that the COSE signature covers, and, if
/// `expected_claims` is given, carry that claims digest. Returns the signature transaction id
/// and the (first) leaf.
pub fn verify_cose_receipt(
    bytes: &[u8],
    service_key: &PublicKey,
    expected_claims: Option<&Hash>,
) -> Result<(TxId, CoseLeaf), ReceiptError> {
    let s = cose::decode_sign1(bytes)?;
    let vdp = cose::header_int(&s.unprotected, cose::LABEL_VDP)
        .ok_or(CoseError::Header("verifiable data proof (396)"))?;
    let Cbor::Map(vdp) = vdp else {
        return Err(CoseError::Malformed("396 not a map").into());
    };
    let Some(Cbor::Array(proofs)) = cose::header_int(vdp, -1) else {
        return Err(CoseError::Header("inclusion proofs (-1)").into());
    };
    if proofs.is_empty() {
        return Err(CoseError::Header("inclusion proofs (-1)").into());
    }
    let mut result = None;
    for p in proofs {
        let Cbor::Bytes(pb) = p else {
            return Err(CoseError::Malformed("inclusion proof not a byte string").into());
        };
        let proof: Cbor = ciborium::from_reader(pb.as_slice())
            .map_err(|_| CoseError::Malformed("inclusion proof not CBOR"))?;
        let Cbor::Map(pm) = proof else {
            return Err(CoseError::Malformed("inclusion proof not a map").into());
        };
        let Some(Cbor::Array(leaf)) = cose::header_int(&pm, 1) else {
            return Err(CoseError::Malformed("inclusion proof leaf").into());
        };
        let [ws, ce, cl] = leaf.as_slice() else {
            return Err(CoseError::Malformed("inclusion proof leaf is not three items").into());
        };
        let Cbor::Text(ce) = ce else {
            return Err(CoseError::Malformed("commit evidence not text").into());
        };
        let leaf = CoseLeaf {
            write_set_digest: cbor_hash(ws)?,
            commit_evidence: ce.clone(),
            claims_digest: cbor_hash(cl)?,
        };
        if let Some(exp) = expected_claims.filter(|e| **e != leaf.claims_digest) {
            return Err(ReceiptError::ClaimsDigestMismatch {
                computed: exp.to_hex(),
                receipt: leaf.claims_digest.to_hex(),
            });
        }
        let Some(Cbor::Array(path)) = cose::header_int(&pm, 2) else {
            return Err(CoseError::Malformed("inclusion proof path").into());
        };
        let mut acc = crate::entry::leaf_hash(
            &leaf.write_set_digest,
            &Hash::digest(leaf.commit_evidence.as_bytes()),
            &leaf.claims_digest,
        );
        for step in path {
            let Cbor::Array(pair) = step else {
                return Err(CoseError::Malformed("path step not a pair").into());
            };
            let [Cbor::Bool(left), h] = pair.as_slice() else {
                return Err(CoseError::Malformed("path step not [bool, bstr]").into());
            };
            let h = cbor_hash(h)?;
            acc = if *left {
                Hash::node(&h, &acc)
            } else {
                Hash::node(&acc, &h)
            };
        }
        let txid = s.verify_ledger_signature(service_key, &acc)?;
        if result.is_none() {
            result = Some((txid, leaf));
        }
    }
    result.ok_or_else(|| CoseError::Header("inclusion proofs (-1)").into())
}

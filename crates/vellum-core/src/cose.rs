//! COSE_Sign1 (RFC 9052) as CCF uses it for ledger signatures and receipts.
//!
//! Written on `ciborium`'s value model because CCF's protected header must be emitted in its
//! exact key order (`1, 4, 395, 15, "ccf.v1"`) and verified over its *raw* bytes, which the
//! general-purpose COSE crates re-encode.

use ciborium::value::{Integer, Value};

use crate::crypto::{CryptoError, PublicKey};
use crate::hash::Hash;
use crate::txid::TxId;

/// CBOR tag of COSE_Sign1.
pub const TAG_COSE_SIGN1: u64 = 18;
/// Protected header label: verifiable data structure (RFC 9942).
pub const LABEL_VDS: i64 = 395;
/// Unprotected header label: verifiable data proofs.
pub const LABEL_VDP: i64 = 396;
/// VDS value of CCF ledgers: CCF_LEDGER_SHA256.
pub const VDS_CCF_LEDGER_SHA256: i64 = 2;

/// Why COSE bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoseError {
    /// Not CBOR, or not a tagged COSE_Sign1 array of four items.
    #[error("malformed COSE_Sign1: {0}")]
    Malformed(&'static str),
    /// A required protected header is missing or has the wrong value.
    #[error("COSE protected header {0} missing or wrong")]
    Header(&'static str),
    /// The `kid` is not the signing key's id.
    #[error("COSE kid does not match the service key")]
    Kid,
    /// The signature does not verify.
    #[error("COSE signature: {0}")]
    Signature(CryptoError),
}

/// The parts of a COSE_Sign1 that CCF's checks use.
#[derive(Debug, Clone, PartialEq)]
pub struct Sign1 {
    /// The protected header exactly as encoded.
    pub protected: Vec<u8>,
    /// The decoded protected header.
    pub protected_map: Vec<(Value, Value)>,
    /// The unprotected header.
    pub unprotected: Vec<(Value, Value)>,
    /// The embedded payload (`None` when detached).
    pub payload: Option<Vec<u8>>,
    /// The raw `r || s` signature.
    pub signature: Vec<u8>,
}

fn int(i: i64) -> Value {
    Value::Integer(Integer::from(i))
}

fn to_cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

/// Looks up an integer label in a header map.
pub fn header_int(map: &[(Value, Value)], label: i64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Integer(i) if i128::from(*i) == i128::from(label)))
        .map(|(_, v)| v)
}

/// Looks up a text label in a header map.
pub fn header_text<'a>(map: &'a [(Value, Value)], label: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == label))
        .map(|(_, v)| v)
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// The `Sig_structure` CCF signs: `["Signature1", protected, h'', payload]`.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    to_cbor(&Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// CWT claims in CCF's signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CwtClaims {
    /// `iat`, seconds since the epoch.
    pub iat: i64,
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
}

/// Builds CCF's ledger-signature protected header, in CCF's key order:
/// `{1: alg, 4: kid, 395: 2, 15: {6: iat, 1: iss, 2: sub}, "ccf.v1": {"txid": "V.S"}}`.
pub fn ledger_protected_header(alg: i64, kid: &str, txid: TxId, cwt: &CwtClaims) -> Vec<u8> {
    to_cbor(&Value::Map(vec![
        (int(1), int(alg)),
        (int(4), Value::Bytes(kid.as_bytes().to_vec())),
        (int(LABEL_VDS), int(VDS_CCF_LEDGER_SHA256)),
        (
            int(15),
            Value::Map(vec![
                (int(6), int(cwt.iat)),
                (int(1), Value::Text(cwt.issuer.clone())),
                (int(2), Value::Text(cwt.subject.clone())),
            ]),
        ),
        (
            Value::Text("ccf.v1".into()),
            Value::Map(vec![(
                Value::Text("txid".into()),
                Value::Text(txid.to_string()),
            )]),
        ),
    ]))
}

/// Signs the Merkle `root` (detached payload) with the service key: the COSE_Sign1 CCF stores in
/// `public:ccf.internal.cose_signatures`.
pub fn sign_root(
    service_key: &dyn crate::crypto::CoseSigner,
    txid: TxId,
    root: &Hash,
    cwt: &CwtClaims,
) -> Result<Vec<u8>, CryptoError> {
    let pk = service_key.public_key();
    let protected = ledger_protected_header(pk.cose_alg(), &pk.id(), txid, cwt);
    let sig = service_key.sign_cose(&sig_structure(&protected, &root.0))?;
    Ok(encode_sign1(&protected, Vec::new(), None, &sig))
}

/// Encodes a tagged COSE_Sign1.
pub fn encode_sign1(
    protected: &[u8],
    unprotected: Vec<(Value, Value)>,
    payload: Option<&[u8]>,
    signature: &[u8],
) -> Vec<u8> {
    to_cbor(&Value::Tag(
        TAG_COSE_SIGN1,
        Box::new(Value::Array(vec![
            Value::Bytes(protected.to_vec()),
            Value::Map(unprotected),
            payload.map_or(Value::Null, |p| Value::Bytes(p.to_vec())),
            Value::Bytes(signature.to_vec()),
        ])),
    ))
}

/// Decodes a COSE_Sign1 (tagged or untagged).
pub fn decode_sign1(bytes: &[u8]) -> Result<Sign1, CoseError> {
    let v: Value = ciborium::from_reader(bytes).map_err(|_| CoseError::Malformed("not CBOR"))?;
    let v = match v {
        Value::Tag(TAG_COSE_SIGN1, inner) => *inner,
        Value::Tag(_, _) => return Err(CoseError::Malformed("wrong CBOR tag")),
        other => other,
    };
    let Value::Array(items) = v else {
        return Err(CoseError::Malformed("not an array"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = items
        .try_into()
        .map_err(|_| CoseError::Malformed("not four items"))?;
    let Value::Bytes(protected) = protected else {
        return Err(CoseError::Malformed("protected header not a byte string"));
    };
    let protected_map = if protected.is_empty() {
        Vec::new()
    } else {
        match ciborium::from_reader::<Value, _>(protected.as_slice()) {
            Ok(Value::Map(m)) => m,
            _ => return Err(CoseError::Malformed("protected header not a map")),
        }
    };
    let Value::Map(unprotected) = unprotected else {
        return Err(CoseError::Malformed("unprotected header not a map"));
    };
    let payload = match payload {
        Value::Null => None,
        Value::Bytes(b) => Some(b),
        _ => return Err(CoseError::Malformed("payload neither bytes nor nil")),
    };
    let Value::Bytes(signature) = signature else {
        return Err(CoseError::Malformed("signature not a byte string"));
    };
    Ok(Sign1 {
        protected,
        protected_map,
        unprotected,
        payload,
        signature,
    })
}

/// Verifies a ledger signature's COSE_Sign1 over `root` the way CCF's verifier does (`ccf`
/// 7.0.22 on the `cwt` library), no more strictly: tagged 18, a nil (detached) payload, a map
/// for the unprotected header, `kid` from the protected header or else the unprotected one (if
/// any, the service key's id), a signature over the protected header as encoded, and the
/// protected `ccf.v1.txid`, which it returns. The algorithm is the key's, and the VDS header is
/// not required (both are inside the signed protected header anyway).
pub fn verify_root_as_ccf(
    bytes: &[u8],
    service_key: &PublicKey,
    root: &Hash,
) -> Result<TxId, CoseError> {
    match ciborium::from_reader::<Value, _>(bytes) {
        Ok(Value::Tag(TAG_COSE_SIGN1, _)) => {}
        Ok(_) => return Err(CoseError::Malformed("not a tagged COSE_Sign1")),
        Err(_) => return Err(CoseError::Malformed("not CBOR")),
    }
    let s = decode_sign1(bytes)?;
    if s.payload.is_some() {
        return Err(CoseError::Malformed("payload not detached"));
    }
    match header_int(&s.protected_map, 4).or_else(|| header_int(&s.unprotected, 4)) {
        None => {}
        Some(Value::Bytes(k)) if k.as_slice() == service_key.id().as_bytes() => {}
        Some(_) => return Err(CoseError::Kid),
    }
    let txid = header_text(&s.protected_map, "ccf.v1")
        .and_then(|v| match v {
            Value::Map(m) => header_text(m, "txid"),
            _ => None,
        })
        .and_then(|t| match t {
            Value::Text(t) => t.parse::<TxId>().ok(),
            _ => None,
        })
        .ok_or(CoseError::Header("ccf.v1.txid"))?;
    let protected: &[u8] = if s.protected_map.is_empty() {
        &[]
    } else {
        &s.protected
    };
    service_key
        .verify_cose(&sig_structure(protected, &root.0), &s.signature)
        .map_err(CoseError::Signature)?;
    Ok(txid)
}

impl Sign1 {
    /// Checks a CCF ledger signature over `root` (detached) with the service key: alg matches
    /// the key, `kid` is the key's id, VDS is CCF_LEDGER_SHA256, and the signature verifies.
    /// Returns the `ccf.v1.txid` the signature claims.
    pub fn verify_ledger_signature(
        &self,
        service_key: &PublicKey,
        root: &Hash,
    ) -> Result<TxId, CoseError> {
        let alg = header_int(&self.protected_map, 1)
            .and_then(as_i64)
            .ok_or(CoseError::Header("alg"))?;
        if alg != service_key.cose_alg() {
            return Err(CoseError::Header("alg"));
        }
        match header_int(&self.protected_map, 4) {
            Some(Value::Bytes(kid)) if kid.as_slice() == service_key.id().as_bytes() => {}
            Some(Value::Bytes(_)) => return Err(CoseError::Kid),
            _ => return Err(CoseError::Header("kid")),
        }
        if header_int(&self.protected_map, LABEL_VDS).and_then(as_i64)
            != Some(VDS_CCF_LEDGER_SHA256)
        {
            return Err(CoseError::Header("vds (395)"));
        }
        let txid = match header_text(&self.protected_map, "ccf.v1") {
            Some(Value::Map(m)) => match header_text(m, "txid") {
                Some(Value::Text(t)) => t
                    .parse::<TxId>()
                    .map_err(|_| CoseError::Header("ccf.v1.txid"))?,
                _ => return Err(CoseError::Header("ccf.v1.txid")),
            },
            _ => return Err(CoseError::Header("ccf.v1")),
        };
        if self
            .payload
            .as_ref()
            .is_some_and(|p| p.as_slice() != root.0.as_slice())
        {
            return Err(CoseError::Signature(CryptoError::BadSignature));
        }
        service_key
            .verify_cose(&sig_structure(&self.protected, &root.0), &self.signature)
            .map_err(CoseError::Signature)?;
        Ok(txid)
    }
}

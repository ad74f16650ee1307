//! Keys, certificates and the ECDSA forms CCF uses.
//!
//! * Root signatures by nodes: ECDSA over the 32-byte Merkle root used **directly as the digest**
//!   (a SHA-256 prehash, whatever the curve), DER-encoded.
//! * COSE signatures by the service: ES384 (SHA-384 of the `Sig_structure`), raw `r || s`.
//! * Certificate endorsements: the issuer's signature over the TBS certificate, hashed with the
//!   endorsee's own signature algorithm.
//!
//! P-256 and P-384 keys are supported for verification (ACL's older services used P-256);
//! Vellum signs with P-384.

use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_parser::oid_registry::{
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
};
use x509_parser::prelude::FromDer;

use crate::hash::Hash;

/// Why a key, certificate or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The PEM text holds no certificate, or the DER is not a certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Certificate(String),
    /// The key is not an EC key on P-256 or P-384.
    #[error("unsupported public key (only EC P-256 and P-384 keys are accepted)")]
    UnsupportedKey,
    /// The private key could not be read.
    #[error("not a valid P-384 private key")]
    PrivateKey,
    /// The signature is not well-formed (DER or raw r||s).
    #[error("malformed signature encoding")]
    SignatureEncoding,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The certificate is signed with an algorithm other than ECDSA with SHA-256/384/512.
    #[error("unsupported certificate signature algorithm {0}")]
    SignatureAlgorithm(String),
}

/// An EC public key that can check CCF's signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// NIST P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// NIST P-384.
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P384(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k));
        }
        Err(CryptoError::UnsupportedKey)
    }

    /// From an uncompressed or compressed SEC1 point on P-384.
    pub fn p384_from_sec1(bytes: &[u8]) -> Result<PublicKey, CryptoError> {
        p384::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
            .map(PublicKey::P384)
            .map_err(|_| CryptoError::UnsupportedKey)
    }

    /// The uncompressed SEC1 point (`04 || x || y`).
    pub fn sec1(&self) -> Vec<u8> {
        match self {
            PublicKey::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            PublicKey::P384(k) => k.to_encoded_point(false).as_bytes().to_vec(),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let doc = match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// Verifies a DER ECDSA signature over a digest given as is (no further hashing).
    ///
    /// With the `aws-lc` feature, P-384 signatures over 32, 48 or 64-byte digests are checked
    /// by aws-lc-rs (about 10x faster than `p384`: a backup checks two signatures for every
    /// signature transaction it receives); other cases use the pure-Rust curves.
    pub fn verify_prehash_der(&self, digest: &[u8], sig_der: &[u8]) -> Result<(), CryptoError> {
        #[cfg(feature = "aws-lc")]
        if let PublicKey::P384(k) = self {
            use aws_lc_rs::digest::{Digest, SHA256, SHA384, SHA512};
            use aws_lc_rs::signature::{
                ECDSA_P384_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA512_ASN1,
                UnparsedPublicKey,
            };
            let algs = match digest.len() {
                32 => Some((&SHA256, &ECDSA_P384_SHA256_ASN1)),
                48 => Some((&SHA384, &ECDSA_P384_SHA384_ASN1)),
                64 => Some((&SHA512, &ECDSA_P384_SHA512_ASN1)),
                _ => None,
            };
            if let Some((hash, alg)) = algs {
                let d = Digest::import_less_safe(digest, hash)
                    .map_err(|_| CryptoError::BadSignature)?;
                let point = k.to_encoded_point(false);
                return UnparsedPublicKey::new(alg, point.as_bytes())
                    .verify_digest(&d, sig_der)
                    .map_err(|_| CryptoError::BadSignature);
            }
        }
        match self {
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_der(sig_der)
                    .map_err(|_| CryptoError::SignatureEncoding)?;
                k.verify_prehash(digest, &s)
            }
            PublicKey::P384(k) => {
                let s = p384::ecdsa::Signature::from_der(sig_der)
                    .map_err(|_| CryptoError::SignatureEncoding)?;
                k.verify_prehash(digest, &s)
            }
        }
        .map_err(|_| CryptoError::BadSignature)
    }

    /// Verifies a COSE-style raw `r || s` signature over `message`, hashing it with the curve's
    /// COSE hash (ES256: SHA-256, ES384: SHA-384).
    pub fn verify_cose(&self, message: &[u8], sig_raw: &[u8]) -> Result<(), CryptoError> {
        #[cfg(feature = "aws-lc")]
        if let PublicKey::P384(k) = self {
            use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
            let point = k.to_encoded_point(false);
            return UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point.as_bytes())
                .verify(message, sig_raw)
                .map_err(|_| CryptoError::BadSignature);
        }
        match self {
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_slice(sig_raw)
                    .map_err(|_| CryptoError::SignatureEncoding)?;
                k.verify_prehash(&Sha256::digest(message), &s)
            }
            PublicKey::P384(k) => {
                let s = p384::ecdsa::Signature::from_slice(sig_raw)
                    .map_err(|_| CryptoError::SignatureEncoding)?;
                k.verify_prehash(&Sha384::digest(message), &s)
            }
        }
        .map_err(|_| CryptoError::BadSignature)
    }

    /// The COSE algorithm id for this key (ES256 = -7, ES384 = -35).
    pub fn cose_alg(&self) -> i64 {
        match self {
            PublicKey::P256(_) => -7,
            PublicKey::P384(_) => -35,
        }
    }

    /// Hex SHA-256 of the DER SubjectPublicKeyInfo: a CCF node id, and the COSE `kid` text.
    pub fn id(&self) -> String {
        Hash::digest(&self.spki_der()).to_hex()
    }
}

/// What signs a service's COSE signatures: a [`SigningKey`] in memory, or a key that never
/// leaves a hardware token (`vellum_node::hsm`).
pub trait CoseSigner: Send + Sync + std::fmt::Debug {
    /// The public key.
    fn public_key(&self) -> PublicKey;
    /// ES384 over `message` (SHA-384), raw `r || s` (96 bytes).
    fn sign_cose(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

impl CoseSigner for SigningKey {
    fn public_key(&self) -> PublicKey {
        SigningKey::public_key(self)
    }

    fn sign_cose(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        SigningKey::sign_cose(self, message)
    }
}

/// A P-384 signing key (node or service identity).
#[derive(Clone)]
pub struct SigningKey(p384::ecdsa::SigningKey, Fast);

/// The same key in aws-lc-rs, for ES384 signing (feature `aws-lc`).
#[cfg(feature = "aws-lc")]
#[derive(Clone)]
struct Fast(Option<std::sync::Arc<aws_lc_rs::signature::EcdsaKeyPair>>);

#[cfg(feature = "aws-lc")]
impl Fast {
    fn of(key: &p384::ecdsa::SigningKey) -> Fast {
        use p384::pkcs8::EncodePrivateKey;
        let kp = key.to_pkcs8_der().ok().and_then(|der| {
            aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                der.as_bytes(),
            )
            .ok()
        });
        Fast(kp.map(std::sync::Arc::new))
    }

    #[cfg(test)]
    fn none() -> Fast {
        Fast(None)
    }
}

#[cfg(not(feature = "aws-lc"))]
#[derive(Clone)]
struct Fast;

#[cfg(not(feature = "aws-lc"))]
impl Fast {
    fn of(_: &p384::ecdsa::SigningKey) -> Fast {
        Fast
    }

    #[cfg(test)]
    fn none() -> Fast {
        Fast
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().id())
    }
}

impl SigningKey {
    /// A fresh key from the given randomness source.
    pub fn generate(rng: &mut impl p384::elliptic_curve::rand_core::CryptoRngCore) -> SigningKey {
        let k = p384::ecdsa::SigningKey::random(rng);
        SigningKey(k.clone(), Fast::of(&k))
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, CryptoError> {
        p384::ecdsa::SigningKey::from_pkcs8_der(der)
            .map(|k| SigningKey(k.clone(), Fast::of(&k)))
            .map_err(|_| CryptoError::PrivateKey)
    }

    /// From PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, CryptoError> {
        p384::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(|k| SigningKey(k.clone(), Fast::of(&k)))
            .map_err(|_| CryptoError::PrivateKey)
    }

    /// PKCS#8 DER (secret: store with 0600 permissions).
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.0
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| CryptoError::PrivateKey)
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::P384(*self.0.verifying_key())
    }

    /// DER ECDSA signature with the 32-byte `digest` used directly (CCF's root signature).
    ///
    /// With the `aws-lc` feature this is signed by aws-lc-rs. Its digest-signing API only takes
    /// a digest of the key's own hash (SHA-384, 48 bytes), so the root goes in as 16 zero bytes
    /// followed by its 32: ECDSA reads the digest as a big-endian integer (SEC 1 §4.1.3 step 5,
    /// "bits2int"), and leading zeros leave that integer, and so the signature equation, exactly
    /// as for the 32 bytes alone. Verifiers (ours, CCF's, the SDKs') check it as a 32-byte
    /// prehash; the unit tests below hold both paths to that.
    pub fn sign_prehash_der(&self, digest: &Hash) -> Result<Vec<u8>, CryptoError> {
        #[cfg(feature = "aws-lc")]
        if let Some(kp) = &self.1.0 {
            use aws_lc_rs::digest::{Digest, SHA384};
            let mut padded = [0u8; 48];
            padded[16..].copy_from_slice(&digest.0);
            let d = Digest::import_less_safe(&padded, &SHA384)
                .map_err(|_| CryptoError::BadSignature)?;
            let raw = kp.sign_digest(&d).map_err(|_| CryptoError::BadSignature)?;
            let s = p384::ecdsa::Signature::from_slice(raw.as_ref())
                .map_err(|_| CryptoError::SignatureEncoding)?;
            return Ok(s.to_der().as_bytes().to_vec());
        }
        let s: p384::ecdsa::Signature = self
            .0
            .sign_prehash(&digest.0)
            .map_err(|_| CryptoError::BadSignature)?;
        Ok(s.to_der().as_bytes().to_vec())
    }

    /// The ECDH shared secret of this key and `peer` (a P-384 key): the x coordinate, 48 bytes.
    /// What seals a ledger secret to a node at a rekey (the node's key is its only
    /// long-lived secret that the other nodes know the public half of).
    pub fn diffie_hellman(
        &self,
        peer: &PublicKey,
    ) -> Result<zeroize::Zeroizing<[u8; 48]>, CryptoError> {
        let PublicKey::P384(vk) = peer else {
            return Err(CryptoError::UnsupportedKey);
        };
        let shared = p384::ecdh::diffie_hellman(self.0.as_nonzero_scalar(), vk.as_affine());
        let mut out = zeroize::Zeroizing::new([0u8; 48]);
        out.copy_from_slice(shared.raw_secret_bytes());
        Ok(out)
    }

    /// ES384 signature over `message` (SHA-384), raw `r || s` (96 bytes), as COSE needs.
    /// With the `aws-lc` feature, signed by aws-lc-rs (randomised nonces); otherwise by
    /// `p384` (RFC 6979 nonces).
    pub fn sign_cose(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        #[cfg(feature = "aws-lc")]
        if let Some(kp) = &self.1.0 {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            return kp
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::BadSignature);
        }
        let s: p384::ecdsa::Signature = self
            .0
            .sign_prehash(&Sha384::digest(message))
            .map_err(|_| CryptoError::BadSignature)?;
        Ok(s.to_bytes().to_vec())
    }
}

/// A parsed X.509 certificate with the parts CCF's checks need.
#[derive(Clone, Debug)]
pub struct Certificate {
    der: Vec<u8>,
    spki: Vec<u8>,
    tbs: Vec<u8>,
    sig_alg: SigHash,
    signature: Vec<u8>,
}

const ALG_ECDSA_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ALG_ECDSA_SHA384: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ALG_ECDSA_SHA512: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SigHash {
    Sha256,
    Sha384,
    Sha512,
    Other,
}

impl Certificate {
    /// Parses the first certificate in PEM text.
    pub fn from_pem(pem: &str) -> Result<Certificate, CryptoError> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| CryptoError::Certificate(format!("PEM: {e}")))?;
        if p.label != "CERTIFICATE" {
            return Err(CryptoError::Certificate(format!(
                "PEM block is {:?}, not CERTIFICATE",
                p.label
            )));
        }
        Certificate::from_der(&p.contents)
    }

    /// Parses every certificate in PEM text (a bundle).
    pub fn all_from_pem(pem: &str) -> Result<Vec<Certificate>, CryptoError> {
        let mut out = Vec::new();
        for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let p = p.map_err(|e| CryptoError::Certificate(format!("PEM: {e}")))?;
            if p.label == "CERTIFICATE" {
                out.push(Certificate::from_der(&p.contents)?);
            }
        }
        if out.is_empty() {
            return Err(CryptoError::Certificate("no certificate in PEM".into()));
        }
        Ok(out)
    }

    /// Parses a PEM certificate exactly as Python's `cryptography` does
    /// (`load_pem_x509_certificate`), which is how CCF's verifier reads certificates: every
    /// PEM block must be well formed (the `pem` crate, as `cryptography` uses), the first
    /// `CERTIFICATE` or `X509 CERTIFICATE` block is taken, the whole certificate must be strict
    /// DER, and its version must be 1 or 3. Unlike [`Certificate::from_pem`], the outer
    /// signature algorithm is not compared with the TBS's (`cryptography` only does that when
    /// verifying the certificate's own signature, which CCF's ledger checks never do).
    pub fn from_pem_as_cryptography(pem: &str) -> Result<Certificate, CryptoError> {
        use x509_cert::der::Decode as _;
        let err = |m: String| CryptoError::Certificate(m);
        let blocks = pem::parse_many(pem.as_bytes()).map_err(|e| err(format!("PEM: {e}")))?;
        if blocks.is_empty() {
            return Err(err("PEM: no well-framed block".into()));
        }
        let block = blocks
            .iter()
            .find(|p| p.tag() == "CERTIFICATE" || p.tag() == "X509 CERTIFICATE")
            .ok_or_else(|| err("PEM: no CERTIFICATE block".into()))?;
        let strict = x509_cert::Certificate::from_der(block.contents())
            .map_err(|e| err(format!("DER: {e}")))?;
        if !matches!(
            strict.tbs_certificate.version,
            x509_cert::Version::V1 | x509_cert::Version::V3
        ) {
            return Err(err("version is neither 1 nor 3".into()));
        }
        Certificate::parse_der(block.contents(), false)
    }

    /// Parses DER.
    pub fn from_der(der: &[u8]) -> Result<Certificate, CryptoError> {
        Certificate::parse_der(der, true)
    }

    fn parse_der(
        der: &[u8],
        canonical_signature_algorithm: bool,
    ) -> Result<Certificate, CryptoError> {
        let (rest, c) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| CryptoError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CryptoError::Certificate(
                "trailing bytes after certificate".into(),
            ));
        }
        let alg = &c.signature_algorithm.algorithm;
        let sig_alg = if *alg == OID_SIG_ECDSA_WITH_SHA256 {
            SigHash::Sha256
        } else if *alg == OID_SIG_ECDSA_WITH_SHA384 {
            SigHash::Sha384
        } else if *alg == OID_SIG_ECDSA_WITH_SHA512 {
            SigHash::Sha512
        } else {
            SigHash::Other
        };
        // Strict DER for the algorithm: the outer signatureAlgorithm must be exactly the
        // canonical encoding and equal the TBS's own signature field (RFC 5280 4.1.1.2), so
        // that no byte outside the signed TBS can be altered unnoticed.
        let canonical: &[u8] = match sig_alg {
            SigHash::Sha256 => &ALG_ECDSA_SHA256,
            SigHash::Sha384 => &ALG_ECDSA_SHA384,
            SigHash::Sha512 => &ALG_ECDSA_SHA512,
            SigHash::Other => &[],
        };
        let tbs = c.tbs_certificate.as_ref();
        let tbs_end = (tbs.as_ptr() as usize).saturating_sub(der.as_ptr() as usize) + tbs.len();
        let signature = c.signature_value.data.to_vec();
        let mut tail = canonical.to_vec();
        tail.push(0x03);
        der_len(&mut tail, signature.len() + 1);
        tail.push(0x00);
        tail.extend_from_slice(&signature);
        if canonical_signature_algorithm
            && sig_alg != SigHash::Other
            && (der.get(tbs_end..) != Some(tail.as_slice())
                || c.tbs_certificate.signature.algorithm != c.signature_algorithm.algorithm)
        {
            return Err(CryptoError::Certificate(
                "signature algorithm not canonically encoded or differs from the TBS".into(),
            ));
        }
        Ok(Certificate {
            der: der.to_vec(),
            spki: c.tbs_certificate.subject_pki.raw.to_vec(),
            tbs: c.tbs_certificate.as_ref().to_vec(),
            sig_alg,
            signature,
        })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key, if EC P-256 or P-384.
    pub fn public_key(&self) -> Result<PublicKey, CryptoError> {
        PublicKey::from_spki_der(&self.spki)
    }

    /// Hex SHA-256 of the certificate DER: CCF's member and user id.
    pub fn id(&self) -> String {
        Hash::digest(&self.der).to_hex()
    }

    /// ACL's certificate-user id: SHA-256 of the DER, upper-case hex bytes joined by `:`.
    pub fn acl_fingerprint(&self) -> String {
        acl_fingerprint(&self.der)
    }

    /// Checks that `issuer` signed this certificate: the issuer's key verifies this
    /// certificate's signature over its TBS bytes, hashed with this certificate's own signature
    /// algorithm (what the Azure SDK and `ccf.receipt.check_endorsement` do; names, validity
    /// dates and CA flags are not checked).
    pub fn verify_issued_by(&self, issuer: &PublicKey) -> Result<(), CryptoError> {
        let digest: Vec<u8> = match self.sig_alg {
            SigHash::Sha256 => Sha256::digest(&self.tbs).to_vec(),
            SigHash::Sha384 => Sha384::digest(&self.tbs).to_vec(),
            SigHash::Sha512 => Sha512::digest(&self.tbs).to_vec(),
            SigHash::Other => {
                return Err(CryptoError::SignatureAlgorithm(
                    "not ECDSA with SHA-256/384/512".into(),
                ));
            }
        };
        issuer.verify_prehash_der(&digest, &self.signature)
    }

    /// PEM text of this certificate.
    pub fn to_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.der)
    }
}

fn der_len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
}

/// ACL's certificate-user id form: SHA-256 of `der`, upper-case hex bytes joined by `:`.
pub fn acl_fingerprint(der: &[u8]) -> String {
    let h = Hash::digest(der);
    let mut s = String::with_capacity(95);
    for (i, b) in h.0.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// PEM-encodes DER with 64-character lines and a trailing newline.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Node id (hex SHA-256 of the SPKI DER) of a certificate.
pub fn node_id_of(cert: &Certificate) -> String {
    Hash::digest(cert.spki_der()).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand_core::OsRng)
    }

    #[test]
    fn root_signature_verifies_as_a_32_byte_prehash() {
        let k = key();
        let pk = k.public_key();
        for i in 0..32u8 {
            // Roots with leading zero bytes too: the padding must not change the integer.
            let mut root = [i.wrapping_mul(37); 32];
            root[..(i as usize % 4)].fill(0);
            let root = Hash(root);
            let sig = k.sign_prehash_der(&root).expect("sign");
            pk.verify_prehash_der(&root.0, &sig)
                .expect("verifies over the 32 bytes");
            let mut other = root;
            other.0[31] ^= 1;
            assert!(pk.verify_prehash_der(&other.0, &sig).is_err());
        }
    }

    #[test]
    fn pure_rust_root_signature_matches_the_same_check() {
        let k = key();
        let slow = SigningKey(k.0.clone(), Fast::none());
        let root = Hash::digest(b"root");
        let sig = slow.sign_prehash_der(&root).expect("sign");
        k.public_key()
            .verify_prehash_der(&root.0, &sig)
            .expect("verifies");
    }

    /// Whichever verifier is built in, it agrees with `p384`'s own on good and bad input.
    #[test]
    fn verifiers_agree_with_pure_rust_p384() {
        use p384::ecdsa::signature::hazmat::PrehashVerifier;
        let k = key();
        let PublicKey::P384(vk) = k.public_key() else {
            panic!("P-384 key")
        };
        for len in [32usize, 48, 64] {
            let digest: Vec<u8> = (0..len as u8).collect();
            let s: p384::ecdsa::Signature = k.0.sign_prehash(&digest).expect("sign");
            let der = s.to_der().as_bytes().to_vec();
            assert!(vk.verify_prehash(&digest, &s).is_ok());
            k.public_key()
                .verify_prehash_der(&digest, &der)
                .expect("verifies");
            let mut other = digest.clone();
            other[0] ^= 1; // (a 64-byte digest is cut to its first 48 bytes)
            assert!(k.public_key().verify_prehash_der(&other, &der).is_err());
            let mut bad = der.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert!(k.public_key().verify_prehash_der(&digest, &bad).is_err());
            assert!(
                k.public_key()
                    .verify_prehash_der(&digest, &der[..n - 1])
                    .is_err()
            );
        }
        let other = key();
        let sig = other.sign_cose(b"m").expect("sign");
        assert!(k.public_key().verify_cose(b"m", &sig).is_err());
        assert!(k.public_key().verify_cose(b"m", &sig[..95]).is_err());
    }

    #[test]
    fn cose_signature_verifies() {
        let k = key();
        let sig = k.sign_cose(b"to be signed").expect("sign");
        assert_eq!(sig.len(), 96);
        k.public_key()
            .verify_cose(b"to be signed", &sig)
            .expect("verifies");
        assert!(k.public_key().verify_cose(b"to be signeD", &sig).is_err());
    }
}

//! `ccf.crypto`'s checks: `verifySignature(algorithm, key, signature, data)` and
//! `isValidX509CertBundle(pem)`, as CCF's JavaScript API defines them (`@microsoft/ccf-app`'s
//! `CCFCrypto`). Keys and certificates are read with `x509-parser`, signatures checked with
//! `aws-lc-rs` (the node's TLS provider already): nothing here is hand-written cryptography.
//! There is no signing and no key generation: a run has no entropy and no key of its own.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// CCF's `SigningAlgorithm`: `{"name": "ECDSA" | "RSASSA-PKCS1-v1_5" | "EdDSA", "hash"?:
/// "SHA-256" | "SHA-384" | "SHA-512"}` (CCF documents SHA-256; the others are accepted where the
/// key's algorithm has them).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Algorithm {
    name: String,
    #[serde(default)]
    hash: Option<String>,
}

/// Why a check could not be made (a script's mistake: thrown as a `TypeError`, as CCF does).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unusable(pub(crate) String);

/// The public key of the first PEM block of `pem`: a `PUBLIC KEY` (SubjectPublicKeyInfo) or a
/// `CERTIFICATE`'s.
fn public_key_der(pem: &str) -> Result<Vec<u8>, Unusable> {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .ok_or_else(|| Unusable("the key is not PEM".into()))?
        .map_err(|e| Unusable(format!("the key is not PEM: {e}")))?;
    match block.label.as_str() {
        "PUBLIC KEY" => Ok(block.contents),
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|e| Unusable(format!("the certificate cannot be read: {e}")))?;
            Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
        }
        other => Err(Unusable(format!(
            "the key must be a PEM public key or certificate, not {other:?}"
        ))),
    }
}

/// The verification algorithm for `alg` over a key of `key_type` (an OID, dotted) with curve
/// `curve` (for EC keys), and the form it takes signatures in.
fn algorithm_for(
    alg: &Algorithm,
    key_type: &str,
    curve: Option<&str>,
) -> Result<(&'static dyn VerificationAlgorithm, Form), Unusable> {
    let hash = alg.hash.as_deref();
    let needs_hash = || Unusable(format!("{} needs a hash (\"SHA-256\")", alg.name));
    let unsupported = |what: &str| {
        Unusable(format!(
            "{} with {what} is not supported (key type {key_type}{})",
            alg.name,
            curve.map(|c| format!(", curve {c}")).unwrap_or_default()
        ))
    };
    const EC: &str = "1.2.840.10045.2.1";
    const RSA: &str = "1.2.840.113549.1.1.1";
    const ED25519: &str = "1.3.101.112";
    Ok(match (alg.name.as_str(), key_type) {
        ("ECDSA", EC) => {
            let hash = hash.ok_or_else(needs_hash)?;
            // The P1363 (`r || s`) form CCF uses, as aws-lc-rs takes it where it has the
            // pair; the other pairs take DER, which the curve's own crate makes.
            const P256: Option<&str> = Some("1.2.840.10045.3.1.7");
            const P384: Option<&str> = Some("1.3.132.0.34");
            const P521: Option<&str> = Some("1.3.132.0.35");
            const K256: Option<&str> = Some("1.3.132.0.10");
            match (curve, hash) {
                (P256, "SHA-256") => (&signature::ECDSA_P256_SHA256_FIXED, Form::Raw),
                (P256, "SHA-384") => (&signature::ECDSA_P256_SHA384_ASN1, Form::DerP256),
                (P256, "SHA-512") => (&signature::ECDSA_P256_SHA512_ASN1, Form::DerP256),
                (P384, "SHA-256") => (&signature::ECDSA_P384_SHA256_ASN1, Form::DerP384),
                (P384, "SHA-384") => (&signature::ECDSA_P384_SHA384_FIXED, Form::Raw),
                (P384, "SHA-512") => (&signature::ECDSA_P384_SHA512_ASN1, Form::DerP384),
                (P521, "SHA-256") => (&signature::ECDSA_P521_SHA256_FIXED, Form::Raw),
                (P521, "SHA-384") => (&signature::ECDSA_P521_SHA384_FIXED, Form::Raw),
                (P521, "SHA-512") => (&signature::ECDSA_P521_SHA512_FIXED, Form::Raw),
                (K256, "SHA-256") => (&signature::ECDSA_P256K1_SHA256_FIXED, Form::Raw),
                _ => return Err(unsupported(hash)),
            }
        }
        ("RSASSA-PKCS1-v1_5", RSA) => {
            let a: &'static dyn VerificationAlgorithm = match hash.ok_or_else(needs_hash)? {
                "SHA-256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "SHA-384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "SHA-512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                other => return Err(unsupported(other)),
            };
            (a, Form::Raw)
        }
        ("EdDSA", ED25519) => (&signature::ED25519, Form::Raw),
        ("ECDSA" | "RSASSA-PKCS1-v1_5" | "EdDSA", _) => {
            return Err(Unusable(format!(
                "the key (type {key_type}) is not a key for {}",
                alg.name
            )));
        }
        (other, _) => {
            return Err(Unusable(format!(
                "unknown signing algorithm {other:?} (ECDSA, RSASSA-PKCS1-v1_5 or EdDSA)"
            )));
        }
    })
}

/// How a signature reaches aws-lc-rs: as given, or an IEEE P1363 ECDSA signature (`r || s`)
/// turned into DER for a curve and hash aws-lc-rs takes only in DER.
enum Form {
    Raw,
    DerP256,
    DerP384,
}

/// `ccf.crypto.verifySignature`: whether `sig` is `key`'s signature of `data` under `alg`.
/// A malformed signature is `false`; an unusable key or algorithm is an error.
pub(crate) fn verify_signature(
    alg: &Algorithm,
    key_pem: &str,
    sig: &[u8],
    data: &[u8],
) -> Result<bool, Unusable> {
    let der = public_key_der(key_pem)?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(&der)
        .map_err(|e| Unusable(format!("the public key cannot be read: {e}")))?;
    let key_type = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let (algorithm, form) = algorithm_for(alg, &key_type, curve.as_deref())?;
    // A signature that is not `r || s` of the curve's size does not verify.
    let sig = match form {
        Form::Raw => sig.to_vec(),
        Form::DerP256 => match p256::ecdsa::Signature::from_slice(sig) {
            Ok(s) => s.to_der().as_bytes().to_vec(),
            Err(_) => return Ok(false),
        },
        Form::DerP384 => match p384::ecdsa::Signature::from_slice(sig) {
            Ok(s) => s.to_der().as_bytes().to_vec(),
            Err(_) => return Ok(false),
        },
    };
    let key = UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data[..]);
    Ok(key.verify(data, &sig).is_ok())
}

/// `ccf.crypto.isValidX509CertBundle`: `pem` holds one or more PEM certificates, each a
/// well-formed X.509 certificate, and nothing else (syntax only: no dates, no chain).
pub(crate) fn is_valid_cert_bundle(pem: &str) -> bool {
    let mut any = false;
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let Ok(block) = block else {
            return false;
        };
        if block.label != "CERTIFICATE"
            || x509_parser::parse_x509_certificate(&block.contents)
                .map_or(true, |(rest, _)| !rest.is_empty())
        {
            return false;
        }
        any = true;
    }
    any
}

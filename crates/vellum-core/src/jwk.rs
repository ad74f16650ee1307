//! Token issuers' signing keys as CCF records them (`public:ccf.gov.jwt.
//! public_signing_keys_metadata_v2`: each key's SubjectPublicKeyInfo, DER, under its `kid`),
//! from the JSON Web Keys a `set_jwt_issuer` proposal carries, and back to what verifies a
//! token.
//!
//! The encoding is DER through the `der`/`spki` crates (x509-cert's), the EC points through
//! `p256`/`p384`: nothing here parses or writes ASN.1 by hand.

use base64::Engine as _;
use x509_cert::der::asn1::{BitString, UintRef};
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};

/// `rsaEncryption`.
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey`.
const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1`.
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1`.
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A JSON Web Key that cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwkError(pub String);

fn bad(m: impl Into<String>) -> JwkError {
    JwkError(m.into())
}

fn b64url(jwk: &serde_json::Value, field: &str) -> Result<Vec<u8>, JwkError> {
    let s = jwk[field]
        .as_str()
        .ok_or_else(|| bad(format!("the key has no {field:?}")))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad(format!("{field:?} is not base64url")))
}

/// The SubjectPublicKeyInfo (DER) of a JSON Web Key: its first `x5c` certificate's key if it
/// has one, else its RSA (`n`, `e`) or P-256/P-384 (`crv`, `x`, `y`) parameters. Symmetric and
/// other keys are refused (an issuer's keys are public).
pub fn spki_of_jwk(jwk: &serde_json::Value) -> Result<Vec<u8>, JwkError> {
    if let Some(first) = jwk["x5c"].as_array().and_then(|a| a.first()) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(first.as_str().unwrap_or_default())
            .map_err(|_| bad("x5c[0] is not base64"))?;
        let cert =
            crate::crypto::Certificate::from_der(&der).map_err(|e| bad(format!("x5c[0]: {e}")))?;
        return Ok(cert.spki_der().to_vec());
    }
    match jwk["kty"].as_str() {
        Some("RSA") => {
            let (n, e) = (b64url(jwk, "n")?, b64url(jwk, "e")?);
            let ints = [
                UintRef::new(&n).map_err(|e| bad(format!("n: {e}")))?,
                UintRef::new(&e).map_err(|e| bad(format!("e: {e}")))?,
            ];
            let pkcs1 = ints
                .to_der()
                .map_err(|e| bad(format!("the RSA key: {e}")))?;
            let info = SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: RSA,
                    parameters: Some(x509_cert::der::asn1::Null.into()),
                },
                subject_public_key: BitString::from_bytes(&pkcs1)
                    .map_err(|e| bad(format!("the RSA key: {e}")))?,
            };
            info.to_der().map_err(|e| bad(format!("the RSA key: {e}")))
        }
        Some("EC") => {
            let mut point = vec![0x04];
            point.extend(b64url(jwk, "x")?);
            point.extend(b64url(jwk, "y")?);
            use p256::pkcs8::EncodePublicKey as _;
            let doc = match jwk["crv"].as_str() {
                Some("P-256") => p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| bad("not a P-256 point"))?
                    .to_public_key_der(),
                Some("P-384") => p384::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| bad("not a P-384 point"))?
                    .to_public_key_der(),
                other => return Err(bad(format!("unsupported curve {other:?}"))),
            };
            Ok(doc.map_err(|e| bad(e.to_string()))?.into_vec())
        }
        other => Err(bad(format!("unsupported key type {other:?}"))),
    }
}

/// What verifies a token, from a recorded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// An RSA key (PKCS#1 `RSAPublicKey`, DER): RS256.
    Rsa(Vec<u8>),
    /// A P-256 point (SEC1, uncompressed): ES256.
    P256(Vec<u8>),
    /// A P-384 point (SEC1, uncompressed): ES384.
    P384(Vec<u8>),
}

/// The key in a SubjectPublicKeyInfo (DER), for token verification.
pub fn token_key_of_spki(der: &[u8]) -> Result<TokenKey, JwkError> {
    let info = SubjectPublicKeyInfoOwned::from_der(der).map_err(|e| bad(e.to_string()))?;
    let bits = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("the key's bit string is not whole bytes"))?
        .to_vec();
    if info.algorithm.oid == RSA {
        return Ok(TokenKey::Rsa(bits));
    }
    if info.algorithm.oid != EC {
        return Err(bad(format!(
            "unsupported key algorithm {}",
            info.algorithm.oid
        )));
    }
    let curve: ObjectIdentifier = info
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .ok_or_else(|| bad("an EC key without its curve"))?;
    match curve {
        c if c == P256 => Ok(TokenKey::P256(bits)),
        c if c == P384 => Ok(TokenKey::P384(bits)),
        c => Err(bad(format!("unsupported curve {c}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn b64u(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn ec_and_rsa_keys_round_trip_through_their_spki() {
        // EC: the SPKI is the one p256 itself writes, and the point comes back.
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let point = sk.public_key().to_sec1_bytes().to_vec();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64u(&point[1..33]), "y": b64u(&point[33..])});
        let spki = spki_of_jwk(&jwk).unwrap();
        use p256::pkcs8::EncodePublicKey as _;
        assert_eq!(
            spki,
            sk.public_key().to_public_key_der().unwrap().into_vec()
        );
        assert_eq!(token_key_of_spki(&spki).unwrap(), TokenKey::P256(point));
        // RSA: n with its high bit set gets the leading zero DER needs; n and e come back.
        let n: Vec<u8> = std::iter::once(0xc3)
            .chain((0..255).map(|i| i as u8))
            .collect();
        let jwk = serde_json::json!({"kty": "RSA", "n": b64u(&n), "e": "AQAB"});
        let spki = spki_of_jwk(&jwk).unwrap();
        let TokenKey::Rsa(pkcs1) = token_key_of_spki(&spki).unwrap() else {
            panic!("not RSA")
        };
        let [n2, e2]: [UintRef; 2] = <[UintRef; 2]>::from_der(&pkcs1).unwrap();
        assert_eq!((n2.as_bytes(), e2.as_bytes()), (&n[..], &[1u8, 0, 1][..]));
    }

    #[test]
    fn unusable_keys_are_refused() {
        for jwk in [
            serde_json::json!({"kty": "oct", "k": "AAAA"}),
            serde_json::json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "RSA", "n": "!!", "e": "AQAB"}),
            serde_json::json!({"kty": "RSA", "e": "AQAB"}),
            serde_json::json!({"x5c": ["bm90IGEgY2VydA=="]}),
        ] {
            assert!(spki_of_jwk(&jwk).is_err(), "{jwk}");
        }
        assert!(token_key_of_spki(b"junk").is_err());
    }
}

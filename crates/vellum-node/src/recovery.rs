//! Recovery shares, CCF's way: the ledger secret is wrapped by a fresh wrapping key, which is
//! split (Shamir, `threshold` of `n`) into one share per recovery member (an `Active` member
//! with a public encryption key), each share encrypted to that member's RSA key
//! (RSA-OAEP-SHA256). The record goes in CCF's `public:ccf.internal.recovery_shares`:
//! `{"wrapped_latest_ledger_secret", "encrypted_shares": {member id: share}}` (base64). Any
//! `threshold` members, decrypting their shares, give back the wrapping key, hence the ledger
//! secret, from the ledger files alone.
//!
//! Wrapping: AES-256-GCM under HKDF-SHA256(wrapping key, info `CCF Wrapping Key v1`), stored as
//! `nonce (12) || ciphertext || tag`. Sharing: `blahaj` (Shamir over GF(256), byte by byte; a
//! maintained fork of `sharks`); CCF shares over GF(2^31 - 1) instead, but a share never leaves
//! its member and Vellum: the format is Vellum's. RSA-OAEP: aws-lc-rs, the TLS provider already.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::Digest as _;
use vellum_core::entry::LedgerSecret;
use vellum_core::tables::RecoverySharesInfo;
use zeroize::Zeroizing;

/// Why shares could not be made or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecoveryError(pub String);

fn fail(m: impl Into<String>) -> RecoveryError {
    RecoveryError(m.into())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The key the wrapping key derives for AES-GCM.
fn wrapping_cipher(wrapping_key: &[u8]) -> Result<Aes256Gcm, RecoveryError> {
    let mut k = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, wrapping_key)
        .expand(b"CCF Wrapping Key v1", k.as_mut())
        .map_err(|e| fail(e.to_string()))?;
    Aes256Gcm::new_from_slice(k.as_ref()).map_err(|e| fail(e.to_string()))
}

/// The DER of a PEM public key (`PUBLIC KEY`).
fn pem_der(pem_text: &str) -> Result<Vec<u8>, RecoveryError> {
    let p = pem::parse(pem_text).map_err(|e| fail(format!("not a PEM public key: {e}")))?;
    Ok(p.into_contents())
}

/// The recovery members among `members` (member id, its `members.info` record): the `Active`
/// ones `key_of` gives an encryption key (PEM) for, as (member id, key).
pub fn recovery_members<B: AsRef<[u8]>>(
    members: impl IntoIterator<Item = (B, B)>,
    key_of: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Vec<(String, String)> {
    members
        .into_iter()
        .filter_map(|(id, info)| {
            let info: serde_json::Value = serde_json::from_slice(info.as_ref()).ok()?;
            (info["status"] == "Active").then_some(())?;
            let key = key_of(id.as_ref())?;
            Some((
                String::from_utf8(id.as_ref().to_vec()).ok()?,
                String::from_utf8(key).ok()?,
            ))
        })
        .collect()
}

/// SHA-256 (hex) of a decrypted share: what [`tables::RECOVERY_SHARE_DIGESTS`] records.
///
/// [`tables::RECOVERY_SHARE_DIGESTS`]: vellum_core::tables::RECOVERY_SHARE_DIGESTS
pub fn share_digest(share: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(share))
}

/// Shares of `secret` for `members` (member id, public encryption key PEM), any `threshold`
/// of which recover it; and each share's digest, by member id.
pub fn issue(
    secret: &LedgerSecret,
    members: &[(String, String)],
    threshold: usize,
) -> Result<(RecoverySharesInfo, BTreeMap<String, String>), RecoveryError> {
    if members.is_empty() {
        return Err(fail("no recovery member: no share to issue"));
    }
    if threshold == 0 || threshold > members.len() || threshold > 255 {
        return Err(fail(format!(
            "a recovery threshold of {threshold} cannot be met by {} recovery members",
            members.len()
        )));
    }
    let mut wrapping_key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(wrapping_key.as_mut());
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let ct = wrapping_cipher(wrapping_key.as_ref())?
        .encrypt(&Nonce::from(nonce), secret.as_bytes().as_slice())
        .map_err(|_| fail("wrapping the ledger secret failed"))?;
    let mut wrapped = nonce.to_vec();
    wrapped.extend(ct);
    // `threshold` fits a u8: checked above.
    let dealer = blahaj::Sharks(threshold as u8);
    let shares = dealer.dealer_rng(wrapping_key.as_ref(), &mut OsRng);
    let mut encrypted_shares = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for ((id, key_pem), share) in members.iter().zip(shares) {
        let share = Zeroizing::new(Vec::from(&share));
        digests.insert(id.clone(), share_digest(&share));
        let public = PublicEncryptingKey::from_der(&pem_der(key_pem)?)
            .map_err(|e| fail(format!("member {id}'s encryption key: {e}")))?;
        let oaep = OaepPublicEncryptingKey::new(public).map_err(|e| fail(e.to_string()))?;
        let mut out = vec![0u8; oaep.ciphertext_size()];
        let ct = oaep
            .encrypt(&OAEP_SHA256_MGF1SHA256, &share, &mut out, None)
            .map_err(|_| fail(format!("encrypting member {id}'s share")))?;
        encrypted_shares.insert(id.clone(), b64().encode(ct));
    }
    Ok((
        RecoverySharesInfo {
            wrapped_latest_ledger_secret: b64().encode(wrapped),
            encrypted_shares,
            previous_secret_stored_version: None,
        },
        digests,
    ))
}

/// A member's share, decrypted with its private encryption key (PKCS#8 PEM).
pub fn decrypt_share(
    encryption_key_pem: &str,
    encrypted_share_b64: &str,
) -> Result<Zeroizing<Vec<u8>>, RecoveryError> {
    let der = Zeroizing::new(
        pem::parse(encryption_key_pem)
            .map_err(|e| fail(format!("not a PEM private key: {e}")))?
            .into_contents(),
    );
    let key = PrivateDecryptingKey::from_pkcs8(&der)
        .map_err(|e| fail(format!("the encryption key: {e}")))?;
    let oaep = OaepPrivateDecryptingKey::new(key).map_err(|e| fail(e.to_string()))?;
    let ct = b64()
        .decode(encrypted_share_b64.trim())
        .map_err(|_| fail("the encrypted share is not base64"))?;
    let mut out = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let n = oaep
        .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, None)
        .map_err(|_| fail("the share does not decrypt with this key"))?
        .len();
    out.truncate(n);
    Ok(out)
}

/// The ledger secret, from `threshold` decrypted shares and the record they were issued with.
/// Too few shares, or a wrong one, fail (the wrapped secret does not open).
pub fn recover(
    shares: &[Zeroizing<Vec<u8>>],
    info: &RecoverySharesInfo,
) -> Result<LedgerSecret, RecoveryError> {
    let parsed: Vec<blahaj::Share> = shares
        .iter()
        .map(|s| blahaj::Share::try_from(s.as_slice()).map_err(|e| fail(format!("a share: {e}"))))
        .collect::<Result<_, _>>()?;
    // The threshold is not recorded: combine them all (extra shares of the same polynomial
    // agree; too few give another key, which the wrapped secret refuses).
    let dealer = blahaj::Sharks(parsed.len().clamp(1, 255) as u8);
    let wrapping_key = Zeroizing::new(
        dealer
            .recover(parsed.iter())
            .map_err(|e| fail(format!("combining the shares: {e}")))?,
    );
    let wrapped = b64()
        .decode(&info.wrapped_latest_ledger_secret)
        .map_err(|_| fail("the wrapped secret is not base64"))?;
    if wrapped.len() < 12 + 16 {
        return Err(fail("the wrapped secret is too short"));
    }
    let (nonce, ct) = wrapped.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| fail("bad nonce"))?;
    let plain = Zeroizing::new(
        wrapping_cipher(&wrapping_key)?
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| {
                fail("the shares do not open the ledger secret: too few, or one is wrong")
            })?,
    );
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| fail("the wrapped secret is not 32 bytes"))?;
    Ok(LedgerSecret::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An RSA-2048 key: (private PKCS#8 PEM, public SPKI PEM).
    pub(crate) fn rsa_key() -> (String, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        (
            kp.serialize_pem(),
            pem::encode(&pem::Pem::new(
                "PUBLIC KEY",
                rcgen::PublicKeyData::subject_public_key_info(&kp),
            )),
        )
    }

    fn share_of(keys: &[(String, String)], info: &RecoverySharesInfo, i: usize) -> Vec<u8> {
        decrypt_share(&keys[i].0, &info.encrypted_shares[&format!("m{i}")])
            .unwrap()
            .to_vec()
    }

    #[test]
    fn two_of_three_shares_recover_the_secret_and_one_does_not() {
        let secret = LedgerSecret::from_bytes([9u8; 32]);
        let keys: Vec<(String, String)> = (0..3).map(|_| rsa_key()).collect();
        let members: Vec<(String, String)> = keys
            .iter()
            .enumerate()
            .map(|(i, (_, public))| (format!("m{i}"), public.clone()))
            .collect();
        let (info, digests) = issue(&secret, &members, 2).unwrap();
        assert_eq!(info.encrypted_shares.len(), 3);
        assert_eq!(digests["m1"], share_digest(&share_of(&keys, &info, 1)));
        let share =
            |i: usize| decrypt_share(&keys[i].0, &info.encrypted_shares[&format!("m{i}")]).unwrap();
        let got = recover(&[share(0), share(2)], &info).unwrap();
        assert_eq!(got.as_bytes(), secret.as_bytes());
        assert_eq!(
            recover(&[share(1), share(0), share(2)], &info)
                .unwrap()
                .as_bytes(),
            secret.as_bytes()
        );
        assert!(recover(&[share(1)], &info).is_err(), "one share of two");
        // A share for another member's key does not decrypt; a damaged share does not recover.
        assert!(decrypt_share(&keys[0].0, &info.encrypted_shares["m1"]).is_err());
        let mut bad = share(1);
        bad[3] ^= 1;
        assert!(recover(&[share(0), bad], &info).is_err());
        // Thresholds that cannot be met.
        assert!(issue(&secret, &members, 4).is_err());
        assert!(issue(&secret, &members, 0).is_err());
        assert!(issue(&secret, &[], 1).is_err());
    }
}

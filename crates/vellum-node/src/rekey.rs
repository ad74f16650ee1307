//! Rekeying a running service: the `trigger_ledger_rekey` proposal switches the ledger to a new
//! secret from the transaction after the one that applies it.
//!
//! The rekey transaction (a governance transaction, built on the primary) carries:
//! - CCF's `historical_encrypted_ledger_secret` record: the secret it replaces, sealed under the
//!   new one, so that whoever holds the latest secret (or a quorum of recovery shares, which
//!   wrap the latest) can walk back to the first;
//! - [`tables::LEDGER_SECRET_FOR_NODES`]: the new secret sealed to each trusted node's key
//!   ([`seal_for_node`]). A retired node is not among them: its copy of the old secrets opens
//!   nothing written after the rekey.
//!
//! Every node (the primary too) takes its copy when its log store *appends* that transaction
//! ([`Rekeying::appended`]): the entries after it are sealed by each node itself, and all
//! nodes must seal them alike (the Merkle tree covers the ciphertext). The secrets list is made
//! durable in the data directory (`datadir::SecretsFile`) before anything is sealed under the
//! new secret: a ledger opened without a secret its entries need would take them for a torn
//! tail.
//!
//! The ECIES construction (P-384 ECDH with an ephemeral key, HKDF-SHA256, AES-256-GCM) is
//! written here from RustCrypto primitives: no maintained crate offers ECIES over P-384 with
//! the keys we already have, and the construction is short.

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand_core::OsRng;
use vellum_core::crypto::{Certificate, PublicKey, SigningKey};
use vellum_core::entry::{EntryBuilder, LedgerSecret, LedgerSecrets};
use vellum_core::tables::{self, EncryptedLedgerSecretInfo, PreviousLedgerSecretInfo};
use vellum_ledger::engine::Engine;
use zeroize::Zeroizing;

use crate::datadir::SecretsFile;
use crate::seal::Sealer;

/// The HKDF info of the key that seals a secret to a node.
const HKDF_INFO: &[u8] = b"vellum ledger secret for a node";
/// Length of an uncompressed P-384 point.
const POINT_LEN: usize = 97;

/// Why a rekey could not be made or taken.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    /// A node's certificate does not hold a P-384 key.
    #[error("node {0}: its certificate does not hold a P-384 key")]
    NodeKey(String),
    /// This node's copy does not open with its key (not for it, or damaged).
    #[error("the rekey's ledger secret for this node does not open with its key")]
    Open,
    /// The rekey transaction holds no copy for this node, and it had no other.
    #[error(
        "the rekey at seqno {0} holds no copy of the new ledger secret for this node (it was not trusted when the rekey was made)"
    )]
    NotForUs(u64),
    /// The historical record does not open under the new secret to the one it replaces.
    #[error("the rekey at seqno {0} records a previous secret that is not this ledger's")]
    History(u64),
    /// The secrets list could not be made durable.
    #[error("saving the ledger secrets: {0}")]
    Save(String),
    /// A service identity rotation could not be taken or undone.
    #[error("the service identity rotation: {0}")]
    Rotation(String),
}

fn node_key_for(
    node_id: &str,
    shared: &[u8; 48],
) -> Result<Zeroizing<[u8; 32]>, hkdf::InvalidLength> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(node_id.as_bytes()), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(HKDF_INFO, key.as_mut())?;
    Ok(key)
}

/// `secret` sealed to node `node_id`'s public key (base64): the ephemeral public point, then
/// AES-256-GCM (nonce zero: each key seals one message) with the node id as associated data.
pub fn seal_for_node(
    node_id: &str,
    node_key: &PublicKey,
    secret: &LedgerSecret,
) -> Result<String, RekeyError> {
    seal_bytes_for_node(node_id, node_key, secret.as_bytes())
}

/// `plain` sealed to node `node_id`'s public key, as [`seal_for_node`] seals a secret.
pub fn seal_bytes_for_node(
    node_id: &str,
    node_key: &PublicKey,
    plain: &[u8],
) -> Result<String, RekeyError> {
    let eph = SigningKey::generate(&mut OsRng);
    let shared = eph
        .diffie_hellman(node_key)
        .map_err(|_| RekeyError::NodeKey(node_id.to_owned()))?;
    let key = node_key_for(node_id, &shared).map_err(|_| RekeyError::Open)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| RekeyError::Open)?;
    let ct = cipher
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: plain,
                aad: node_id.as_bytes(),
            },
        )
        .map_err(|_| RekeyError::Open)?;
    let mut out = eph.public_key().sec1();
    out.extend(ct);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Opens what [`seal_bytes_for_node`] sealed to this node (`node_id`, `key`).
pub fn open_bytes_for_node(
    node_id: &str,
    key: &SigningKey,
    sealed_b64: &str,
) -> Result<Zeroizing<Vec<u8>>, RekeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed_b64)
        .map_err(|_| RekeyError::Open)?;
    if bytes.len() < POINT_LEN + 16 {
        return Err(RekeyError::Open);
    }
    let (point, ct) = bytes.split_at(POINT_LEN);
    let eph = PublicKey::p384_from_sec1(point).map_err(|_| RekeyError::Open)?;
    let shared = key.diffie_hellman(&eph).map_err(|_| RekeyError::Open)?;
    let aes = node_key_for(node_id, &shared).map_err(|_| RekeyError::Open)?;
    let cipher = Aes256Gcm::new_from_slice(aes.as_ref()).map_err(|_| RekeyError::Open)?;
    cipher
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: ct,
                aad: node_id.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| RekeyError::Open)
}

/// Opens a secret [`seal_for_node`] sealed to this node (`node_id`, `key`).
pub fn open_for_node(
    node_id: &str,
    key: &SigningKey,
    sealed_b64: &str,
) -> Result<LedgerSecret, RekeyError> {
    let plain = open_bytes_for_node(node_id, key, sealed_b64)?;
    let k: [u8; 32] = plain.as_slice().try_into().map_err(|_| RekeyError::Open)?;
    Ok(LedgerSecret::from_bytes(k))
}

/// A new random ledger secret.
pub fn fresh_secret() -> LedgerSecret {
    let mut k = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut OsRng, k.as_mut());
    LedgerSecret::from_bytes(*k)
}

/// CCF's record of a rekey from `current` (the ledger's secrets now) to `next`: the latest
/// secret sealed under `next`, the seqno it applied from and where the one before it was
/// recorded; `next_version` where `next` applies from when not the next transaction (a
/// disaster recovery's).
pub fn history_record(
    current: &LedgerSecrets,
    next: &LedgerSecret,
    next_version: Option<u64>,
) -> EncryptedLedgerSecretInfo {
    let mut nonce = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
    let from = current.latest_from();
    EncryptedLedgerSecretInfo {
        previous_ledger_secret: Some(PreviousLedgerSecretInfo {
            encrypted_data: base64::engine::general_purpose::STANDARD
                .encode(current.latest().seal_under(next, nonce)),
            // The first secret applies from the service's first transaction.
            version: from.max(1),
            previous_secret_stored_version: from.checked_sub(1).filter(|s| *s > 0),
        }),
        next_version,
    }
}

/// The writes of a rekey from `current` (the ledger's secrets now) to `next`, for `nodes`
/// (node id, certificate PEM): the historical record and each node's copy.
pub fn rekey_writes(
    current: &LedgerSecrets,
    next: &LedgerSecret,
    nodes: &[(String, String)],
) -> Result<EntryBuilder, RekeyError> {
    let record = history_record(current, next, None);
    let mut copies = Vec::with_capacity(nodes.len());
    for (id, pem) in nodes {
        let key = Certificate::from_pem(pem)
            .and_then(|c| c.public_key())
            .map_err(|_| RekeyError::NodeKey(id.clone()))?;
        let rec = tables::SecretForNode {
            encrypted_secret: seal_for_node(id, &key, next)?,
        };
        copies.push((id.clone(), rec));
    }
    Ok(EntryBuilder::default()
        .map(tables::HISTORICAL_LEDGER_SECRET.write(&(), &record))
        .map(tables::LEDGER_SECRET_FOR_NODES.writes(copies.iter().map(|(id, r)| (id.as_str(), r)))))
}

/// What a node's log store needs to follow rekeys and rotations: its own id and key, where
/// its secrets are kept, and the service identity it serves under.
#[derive(Clone, Debug)]
pub struct Rekeying {
    /// This node's CCF node id.
    pub node_id: String,
    /// This node's key.
    pub node_key: SigningKey,
    /// Its secrets file.
    pub file: SecretsFile,
    /// The service identity now.
    pub identity: Arc<crate::identity::LiveIdentity>,
}

impl Rekeying {
    /// Called for each transaction the log store appends at `seqno` (already written under the
    /// secret of `seqno`), with the node's `current` secrets: a rekey brings in its secret for
    /// `seqno + 1` on; any other transaction drops a secret held for `seqno + 1` on, which a
    /// rekey lost with an uncommitted suffix had brought in (a crash between saving the list
    /// and keeping the rekey, or a list received when joining). Returns the new list, already
    /// durable, if it changed.
    pub fn appended(
        &self,
        seqno: u64,
        ws: &EntryBuilder,
        current: &LedgerSecrets,
    ) -> Result<Option<LedgerSecrets>, RekeyError> {
        // A node that joined holds the secrets of rekeys it has not appended yet.
        let held = current
            .iter()
            .find(|(from, _)| *from == seqno + 1)
            .map(|(_, s)| s.clone());
        let copies = tables::LEDGER_SECRET_FOR_NODES.find(&ws.maps);
        // The secret this rekey replaced, sealed under the new one (a disaster recovery's
        // rekey has this record and no copies: the recovered node wrote it alone).
        let previous = tables::HISTORICAL_LEDGER_SECRET
            .written(&ws.maps)
            .and_then(|r| r.previous_ledger_secret)
            .and_then(|p| {
                base64::engine::general_purpose::STANDARD
                    .decode(p.encrypted_data)
                    .ok()
            });
        if copies.is_none() && previous.is_none() {
            if held.is_none() {
                return Ok(None);
            }
            let mut updated = current.clone();
            updated.truncate(seqno.saturating_sub(1));
            self.file
                .save(&updated)
                .map_err(|e| RekeyError::Save(e.to_string()))?;
            tracing::warn!(
                seqno,
                "forgot a ledger secret whose rekey is not in the ledger"
            );
            return Ok(Some(updated));
        }
        let mine = copies.and_then(|_| {
            tables::LEDGER_SECRET_FOR_NODES.written_at(&ws.maps, self.node_id.as_bytes())
        });
        let next = match (mine, &held) {
            (Some(rec), _) => open_for_node(&self.node_id, &self.node_key, &rec.encrypted_secret)?,
            // A node that joined after the rekey was made received its secret then.
            (None, Some(h)) => h.clone(),
            (None, None) => return Err(RekeyError::NotForUs(seqno)),
        };
        // The previous secret, sealed under the new one, must be the one this ledger used.
        let history = previous.and_then(|sealed| next.open_sealed(&sealed).ok());
        if history.is_none_or(|h| h.as_bytes() != current.at(seqno).as_bytes()) {
            return Err(RekeyError::History(seqno));
        }
        if held.is_some_and(|h| h.as_bytes() == next.as_bytes()) {
            return Ok(None);
        }
        // A secret held for what follows, other than this rekey's, came with a rekey lost
        // with an uncommitted suffix: nothing was written under it yet.
        let mut updated = current.clone();
        updated.truncate(seqno.saturating_sub(1));
        updated
            .push(seqno + 1, next)
            .map_err(|e| RekeyError::Save(e.to_string()))?;
        self.file
            .save(&updated)
            .map_err(|e| RekeyError::Save(e.to_string()))?;
        tracing::info!(
            seqno,
            secrets = updated.len(),
            "rekeyed: a new ledger secret from the next transaction"
        );
        Ok(Some(updated))
    }
}

/// The identity a rotation replaced, kept (sealed if the directory is) until a later rotation:
/// restored if the rotation transaction is truncated, or lost in a crash.
const ROTATION_BACKUP: &str = "identity_before_rotation.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct RotationBackup {
    rotated_at: u64,
    identity: crate::identity::ServiceIdentity,
}

fn rotate_err(e: impl std::fmt::Display) -> RekeyError {
    RekeyError::Rotation(e.to_string())
}

/// Writes a service identity into the data directory `root`, each file durably.
fn write_identity(
    root: &std::path::Path,
    sealer: Option<&Sealer>,
    id: &crate::identity::ServiceIdentity,
) -> Result<(), RekeyError> {
    use vellum_ledger::files::write_durably;
    if !id.service_key_pem.is_empty() {
        crate::seal::write_secret_file(
            root,
            "service_key.pem",
            id.service_key_pem.as_bytes(),
            sealer,
        )
        .map_err(rotate_err)?;
    }
    write_durably(
        &root.join("service_cert.pem"),
        id.service_cert_pem.as_bytes(),
    )
    .map_err(rotate_err)?;
    write_durably(&root.join("node_cert.pem"), id.node_cert_pem.as_bytes()).map_err(rotate_err)?;
    let previous = serde_json::to_vec_pretty(&id.previous).map_err(rotate_err)?;
    write_durably(&root.join(crate::datadir::PREVIOUS_SERVICES), &previous).map_err(rotate_err)
}

fn read_backup(
    root: &std::path::Path,
    sealer: Option<&Sealer>,
) -> Result<Option<RotationBackup>, RekeyError> {
    if !crate::seal::secret_file_exists(root, ROTATION_BACKUP, sealer) {
        return Ok(None);
    }
    let bytes = crate::seal::read_secret_file(root, ROTATION_BACKUP, sealer).map_err(rotate_err)?;
    serde_json::from_slice(&bytes).map(Some).map_err(rotate_err)
}

fn take_identity(
    engine: &mut Engine,
    id: &crate::identity::ServiceIdentity,
) -> Result<(), RekeyError> {
    let key = if id.service_key_pem.is_empty() {
        None
    } else {
        Some(SigningKey::from_pkcs8_pem(&id.service_key_pem).map_err(rotate_err)?)
    };
    engine.replace_identity(
        key,
        id.service_cert_pem.clone(),
        id.node_cert_pem.clone(),
        id.previous.clone(),
    );
    Ok(())
}

/// The identity a node starts under: its data directory's, unless a rotation it took was lost
/// with the end of its ledger (a crash before the rotation transaction was durable), in which
/// case the one before is restored, in the files and in `engine`.
pub fn startup_identity(
    data: &crate::datadir::DataDir,
    engine: &mut Engine,
) -> Result<crate::identity::ServiceIdentity, crate::NodeError> {
    let current = crate::identity::ServiceIdentity {
        service_cert_pem: data.keys.service_cert_pem.clone(),
        service_key_pem: data.service_key_pem.clone(),
        node_cert_pem: data.keys.node_cert_pem.clone(),
        previous: data.keys.previous_services.clone(),
    };
    let sealer = data.sealer.as_deref();
    let restore = |e: RekeyError| crate::DataDirError::ServiceKey(e.to_string());
    match read_backup(&data.root, sealer).map_err(restore)? {
        Some(b) if b.rotated_at > engine.last_seqno() => {
            write_identity(&data.root, sealer, &b.identity).map_err(restore)?;
            take_identity(engine, &b.identity).map_err(restore)?;
            let _ = std::fs::remove_file(crate::seal::sealed_path(&data.root, ROTATION_BACKUP));
            let _ = std::fs::remove_file(data.root.join(ROTATION_BACKUP));
            tracing::warn!(
                rotated_at = b.rotated_at,
                "restored the service identity a lost rotation had replaced"
            );
            Ok(b.identity)
        }
        _ => Ok(current),
    }
}

impl Rekeying {
    /// Called for each transaction the log store appends at `seqno`: a service identity
    /// rotation (see `rotate_service_identity`) makes this node take the new identity (its
    /// service key sealed to this node, its certificate endorsed by it), the one replaced kept
    /// endorsed by the new key and valid for signatures up to `seqno`.
    pub fn rotated(
        &self,
        seqno: u64,
        ws: &EntryBuilder,
        engine: &mut Engine,
    ) -> Result<(), RekeyError> {
        // Not a rotation, or one made before this node joined (it received the identity since).
        let Some(rec) = tables::SERVICE_KEY_FOR_NODES.written_at(&ws.maps, self.node_id.as_bytes())
        else {
            return Ok(());
        };
        let current = self.identity.get();
        let service_cert_pem = tables::SERVICE_INFO
            .written(&ws.maps)
            .map(|i| i.cert)
            .ok_or_else(|| rotate_err("the rotation records no service certificate"))?;
        if service_cert_pem == current.service_cert_pem {
            return Ok(());
        }
        let node_cert_pem = tables::NODES_ENDORSED_CERTIFICATES
            .written_at(&ws.maps, self.node_id.as_bytes())
            .ok_or_else(|| rotate_err("the rotation endorses no certificate for this node"))?;
        let key_pem = Zeroizing::new(
            String::from_utf8(
                open_bytes_for_node(&self.node_id, &self.node_key, &rec.encrypted_secret)?.to_vec(),
            )
            .map_err(rotate_err)?,
        );
        // Every previous identity, and the one replaced now, endorsed by the new key.
        let now = std::time::SystemTime::now();
        let replaced = vellum_ledger::engine::PreviousService {
            cert_pem: current.service_cert_pem.clone(),
            until_seqno: seqno,
            endorsement_pem: String::new(),
        };
        let mut previous = Vec::with_capacity(current.previous.len() + 1);
        for p in current.previous.iter().chain(std::iter::once(&replaced)) {
            let endorsement_pem = vellum_ledger::identity::endorse_previous_identity(
                &service_cert_pem,
                &key_pem,
                &p.cert_pem,
                now,
            )
            .map_err(rotate_err)?;
            previous.push(vellum_ledger::engine::PreviousService {
                cert_pem: p.cert_pem.clone(),
                until_seqno: p.until_seqno,
                endorsement_pem,
            });
        }
        let next = crate::identity::ServiceIdentity {
            service_cert_pem,
            service_key_pem: key_pem.to_string(),
            node_cert_pem,
            previous,
        };
        // The identity replaced is kept first: a truncation or a crash may need it back.
        let backup = Zeroizing::new(
            serde_json::to_vec(&RotationBackup {
                rotated_at: seqno,
                identity: (*current).clone(),
            })
            .map_err(rotate_err)?,
        );
        let sealer = self.file.sealer.as_deref();
        crate::seal::write_secret_file(&self.file.root, ROTATION_BACKUP, &backup, sealer)
            .map_err(rotate_err)?;
        write_identity(&self.file.root, sealer, &next)?;
        take_identity(engine, &next)?;
        self.identity.set(next);
        tracing::info!(seqno, "took the rotated service identity");
        Ok(())
    }

    /// After the log was truncated to its first `keep` transactions: a rotation among those
    /// dropped is undone.
    pub fn truncated(&self, keep: u64, engine: &mut Engine) -> Result<(), RekeyError> {
        let sealer = self.file.sealer.as_deref();
        match read_backup(&self.file.root, sealer)? {
            Some(b) if b.rotated_at > keep => {
                write_identity(&self.file.root, sealer, &b.identity)?;
                take_identity(engine, &b.identity)?;
                self.identity.set(b.identity);
                let _ = std::fs::remove_file(crate::seal::sealed_path(
                    &self.file.root,
                    ROTATION_BACKUP,
                ));
                let _ = std::fs::remove_file(self.file.root.join(ROTATION_BACKUP));
                tracing::warn!(
                    rotated_at = b.rotated_at,
                    "undid a rotation lost with a truncated suffix"
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The writes of a rotation to `next` (a new service identity) for `nodes` (node id, endorsed
/// certificate PEM): the service info (with `status`), each node's certificate endorsed anew by
/// the new key, the new key sealed to each node, and the identity replaced (`until_seqno` 0:
/// "up to this transaction", which each node reads as the seqno it appends it at).
pub fn rotation_writes(
    next: &vellum_ledger::identity::Identity,
    previous_cert_pem: &str,
    status: tables::ServiceStatus,
    nodes: &[(String, String)],
) -> Result<EntryBuilder, RekeyError> {
    let now = std::time::SystemTime::now();
    let mut certs = Vec::with_capacity(nodes.len());
    let mut copies = Vec::with_capacity(nodes.len());
    for (id, pem) in nodes {
        let cert = Certificate::from_pem(pem).map_err(|_| RekeyError::NodeKey(id.clone()))?;
        let key = cert
            .public_key()
            .map_err(|_| RekeyError::NodeKey(id.clone()))?;
        let renewed =
            vellum_ledger::identity::reendorse(pem, &next.cert_pem, &next.key_pem(), now, 3650)
                .map_err(rotate_err)?;
        certs.push((id.clone(), renewed));
        copies.push((
            id.clone(),
            tables::SecretForNode {
                encrypted_secret: seal_bytes_for_node(id, &key, next.key_pem().as_bytes())?,
            },
        ));
    }
    let previous = Certificate::from_pem(previous_cert_pem).map_err(rotate_err)?;
    let record = tables::PreviousIdentity {
        cert: previous_cert_pem.to_owned(),
        until_seqno: 0,
    };
    Ok(EntryBuilder::default()
        .map(vellum_ledger::genesis::service_info(&next.cert_pem, status))
        .map(
            tables::NODES_ENDORSED_CERTIFICATES
                .writes(certs.iter().map(|(id, pem)| (id.as_str(), pem.as_str()))),
        )
        .map(tables::SERVICE_KEY_FOR_NODES.writes(copies.iter().map(|(id, r)| (id.as_str(), r))))
        .map(tables::PREVIOUS_SERVICE_IDENTITIES.write(
            &vellum_core::hash::Hash::digest(previous.spki_der()).to_hex(),
            &record,
        )))
}

/// A live identity from test keys.
#[cfg(test)]
pub(crate) fn tests_identity(
    keys: &vellum_ledger::engine::NodeKeys,
) -> Arc<crate::identity::LiveIdentity> {
    Arc::new(crate::identity::LiveIdentity::new(
        crate::identity::ServiceIdentity {
            service_cert_pem: keys.service_cert_pem.clone(),
            service_key_pem: String::new(),
            node_cert_pem: keys.node_cert_pem.clone(),
            previous: Vec::new(),
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_secret_sealed_to_a_node_opens_with_its_key_only() {
        let node = SigningKey::generate(&mut OsRng);
        let other = SigningKey::generate(&mut OsRng);
        let s = LedgerSecret::from_bytes([5; 32]);
        let sealed = seal_for_node("n1", &node.public_key(), &s).unwrap();
        assert_eq!(
            open_for_node("n1", &node, &sealed).unwrap().as_bytes(),
            s.as_bytes()
        );
        assert!(open_for_node("n1", &other, &sealed).is_err());
        // Bound to the node id.
        assert!(open_for_node("n2", &node, &sealed).is_err());
        // Any flipped byte fails.
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        for i in [0, 50, POINT_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let b = base64::engine::general_purpose::STANDARD.encode(&raw);
            assert!(open_for_node("n1", &node, &b).is_err(), "byte {i}");
            raw[i] ^= 1;
        }
        // Two seals of one secret differ (fresh ephemeral keys).
        assert_ne!(sealed, seal_for_node("n1", &node.public_key(), &s).unwrap());
    }

    fn node_cert(key: &SigningKey) -> String {
        let now = std::time::SystemTime::now();
        let service = vellum_ledger::identity::Identity::service("s", now, 1).unwrap();
        vellum_ledger::identity::endorse_node(
            &service.cert_pem,
            &service.key_pem(),
            &key.public_key().spki_der(),
            "n",
            &["localhost"],
            &[],
            now,
            1,
        )
        .unwrap()
    }

    #[test]
    fn a_node_follows_rekeys_and_forgets_one_the_ledger_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (me, other) = (
            SigningKey::generate(&mut OsRng),
            SigningKey::generate(&mut OsRng),
        );
        let r = Rekeying {
            node_id: "me".into(),
            node_key: me.clone(),
            file: SecretsFile::new(dir.path().to_path_buf(), None),
            identity: Arc::new(crate::identity::LiveIdentity::new(
                crate::identity::ServiceIdentity {
                    service_cert_pem: String::new(),
                    service_key_pem: String::new(),
                    node_cert_pem: String::new(),
                    previous: Vec::new(),
                },
            )),
        };
        let saved = || {
            LedgerSecrets::from_text(
                &std::fs::read_to_string(dir.path().join(crate::datadir::SECRETS_FILE)).unwrap(),
            )
            .unwrap()
        };
        let current = LedgerSecrets::new(LedgerSecret::from_bytes([1; 32]));
        let next = LedgerSecret::from_bytes([2; 32]);
        let both = [
            ("me".to_owned(), node_cert(&me)),
            ("other".to_owned(), node_cert(&other)),
        ];
        let ws = rekey_writes(&current, &next, &both).unwrap();
        // Any other transaction changes nothing.
        assert!(
            r.appended(4, &EntryBuilder::default(), &current)
                .unwrap()
                .is_none()
        );
        // The rekey at 5: the new secret from 6, saved.
        let after = r.appended(5, &ws, &current).unwrap().unwrap();
        assert_eq!(after.latest_from(), 6);
        assert_eq!(after.latest().as_bytes(), next.as_bytes());
        assert_eq!(saved().to_text(), after.to_text());
        // Appending it again (a node that received the list when it joined) changes nothing,
        // nor does it for a node that received later secrets too.
        assert!(r.appended(5, &ws, &after).unwrap().is_none());
        let mut later = after.clone();
        later.push(30, LedgerSecret::from_bytes([4; 32])).unwrap();
        assert!(r.appended(5, &ws, &later).unwrap().is_none());
        // A rekey without copies for nodes (a disaster recovery's) keeps what the node holds.
        let mut dr = ws.clone();
        dr.maps
            .retain(|m| m.name != tables::LEDGER_SECRET_FOR_NODES.name());
        assert!(r.appended(5, &dr, &later).unwrap().is_none());
        // A different transaction at 5 (the rekey was lost with an uncommitted suffix): the
        // secret it brought is forgotten, on disk too.
        let forgot = r
            .appended(5, &EntryBuilder::default(), &after)
            .unwrap()
            .unwrap();
        assert_eq!(forgot.len(), 1);
        assert_eq!(saved().len(), 1);
        // Another rekey at 5 than the one this node held a secret from (it was lost with an
        // uncommitted suffix, and a new primary rekeyed too): its secret replaces the other.
        let other_next = LedgerSecret::from_bytes([3; 32]);
        let ws2 = rekey_writes(&current, &other_next, &both).unwrap();
        let replaced = r.appended(5, &ws2, &after).unwrap().unwrap();
        assert_eq!(replaced.len(), 2);
        assert_eq!(replaced.latest().as_bytes(), other_next.as_bytes());
        // A rekey made without this node: refused (it could not seal what follows).
        let without = rekey_writes(&current, &next, &both[1..]).unwrap();
        assert!(matches!(
            r.appended(5, &without, &current),
            Err(RekeyError::NotForUs(5))
        ));
        // A rekey whose history is not this ledger's secret: refused.
        let foreign = LedgerSecrets::new(LedgerSecret::from_bytes([9; 32]));
        let ws = rekey_writes(&foreign, &next, &both).unwrap();
        assert!(matches!(
            r.appended(5, &ws, &current),
            Err(RekeyError::History(5))
        ));
    }
}

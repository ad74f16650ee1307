//! Writes a complete sample ledger the way a Vellum service will: genesis governance tables,
//! application entries sealed in a private table (some with ACL application claims), signature
//! transactions with node and COSE signatures and the serialized tree, chunks ending on
//! signatures, and a JSON and a COSE receipt for every application entry.
//!
//! `vellum sample-ledger` and the interop tests use it, so that CCF's own Python tools and the
//! Azure SDK check bytes produced by this code.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde_json::json;
use vellum_core::entry::{EntryBuilder, LedgerSecret};
use vellum_core::receipt::ApplicationClaim;
use vellum_core::{Hash, TxId};

use crate::engine::{Engine, EngineError, NodeKeys};
pub use crate::genesis::DEFAULT_CONSTITUTION;
use crate::genesis::{Genesis, service_info};
use crate::identity::{Identity, IdentityError};

pub use crate::index::ENTRIES_TABLE;

/// What to write.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Application entries to write.
    pub entries: u64,
    /// A signature after at most this many transactions.
    pub signature_interval: u64,
    /// Start a new chunk after a signature once a chunk has this many bytes.
    pub chunk_size: u64,
    /// Wall-clock time for certificates and COSE `iat`.
    pub now: SystemTime,
    /// Write every entry's max conflict version and map read versions non-zero, as older CCF
    /// releases did, rather than 0 as Vellum and current CCF do. Signatures cover them as usual.
    pub legacy_versions: bool,
    /// Rekey the ledger this many times, spread among the entries: each rekey records the
    /// previous secret sealed under the new one (CCF's historical secrets table), and what
    /// follows is sealed under the new one. `ledger_secret` holds the last.
    pub rekeys: u64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            entries: 20,
            signature_interval: 4,
            chunk_size: 8 * 1024,
            now: SystemTime::now(),
            legacy_versions: false,
            rekeys: 0,
        }
    }
}

/// One application entry's receipt material.
#[derive(Debug, Clone)]
pub struct SampleReceipt {
    /// The entry's transaction.
    pub txid: TxId,
    /// ACL-style response: `{"receipt", "state", "transactionId", "applicationClaims"?}`.
    pub response: serde_json::Value,
    /// The COSE receipt bytes.
    pub cose: Vec<u8>,
    /// The claims digest (zero when the entry has no claims).
    pub claims_digest: Hash,
}

/// A written sample ledger.
#[derive(Debug)]
pub struct SampleLedger {
    /// The ledger directory (chunk files).
    pub ledger_dir: PathBuf,
    /// Service certificate PEM (also written to `service_cert.pem`).
    pub service_cert_pem: String,
    /// The ledger secret (also written, hex, to `ledger_secret`).
    pub ledger_secret: LedgerSecret,
    /// Receipts for every application entry.
    pub receipts: Vec<SampleReceipt>,
    /// Every transaction written.
    pub transactions: u64,
    /// Signature transactions written.
    pub signatures: u64,
}

/// Why a sample ledger could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// Identities.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The ledger engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Files.
    #[error("writing {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

fn write(path: &Path, data: &[u8]) -> Result<(), SampleError> {
    std::fs::write(path, data).map_err(|source| SampleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a sample ledger into `out` (`out/ledger/`, `out/service_cert.pem`, `out/receipts/`,
/// `out/ledger_secret`), through the same [`Engine`] a node uses.
pub fn write_sample(out: &Path, opts: &SampleOptions) -> Result<SampleLedger, SampleError> {
    let now = opts.now;
    let service = Identity::service("Vellum Service", now, 365)?;
    let node = service.issue_node(
        "Vellum Node",
        &["localhost"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        now,
        365,
    )?;
    let member = Identity::client("member0", now, 365)?;
    let user = Identity::client("user0", now, 365)?;
    let node_id = node.signing_key.public_key().id();
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let secret = LedgerSecret::from_bytes(key);
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let keys = NodeKeys::new(&service, &node, secret.clone());
    let ledger_dir = out.join("ledger");
    let (mut engine, _) = Engine::open_dir(&ledger_dir, opts.chunk_size, keys)?;
    engine.set_legacy_versions(opts.legacy_versions);
    let view = 2;
    let mut next = 1u64;
    let mut txid = || {
        let t = TxId::new(view, next);
        next += 1;
        t
    };

    // Genesis, its signature, then the service opens.
    let genesis = Genesis {
        service_cert_pem: &service.cert_pem,
        node: (&node_id, &node.cert_pem),
        members: vec![(member.cert.id(), member.cert_pem.clone())],
        users: vec![(
            user.cert.id(),
            Some(user.cert.to_pem()),
            vellum_core::tables::Role::Administrator,
        )],
        constitution: DEFAULT_CONSTITUTION,
    };
    engine.append(txid(), &genesis.entry())?;
    engine.append_signature(txid(), iat)?;
    engine.append(
        txid(),
        &EntryBuilder::default().map(service_info(
            &service.cert_pem,
            vellum_core::tables::ServiceStatus::Open,
        )),
    )?;
    let mut since_sig = 1u64;
    // Rekeys after every `rekey_every` entries.
    let rekey_every = (opts.rekeys > 0).then(|| (opts.entries / (opts.rekeys + 1)).max(1));
    let mut rekeys_done = 0u64;
    let mut secret = secret;
    let mut secret_from = 1u64;

    // Application entries, half with ACL application claims.
    let mut app: Vec<(TxId, Option<Vec<ApplicationClaim>>, Hash)> = Vec::new();
    for i in 0..opts.entries {
        let collection = if i % 3 == 0 {
            "subledger:0".to_owned()
        } else {
            format!("collection-{}", i % 2)
        };
        let contents = format!("entry {i}: hello from Vellum");
        // Odd entries carry a claim, as a node writes them; even ones none, as entries written
        // before claims.
        let (record, digest) = if i % 2 == 1 {
            let mut k = [0u8; 32];
            OsRng.fill_bytes(&mut k);
            vellum_core::tables::EntryRecord::with_claim(
                collection.clone(),
                contents,
                Vec::new(),
                &k,
            )
        } else {
            let record = vellum_core::tables::EntryRecord {
                collection_id: collection.clone(),
                contents,
                secret_key: None,
                tags: Vec::new(),
            };
            (record, Hash::ZERO)
        };
        let claims = record.claim().map(|c| vec![c]);
        let t = txid();
        engine.append(
            t,
            &EntryBuilder {
                flags: 0,
                claims_digest: digest,
                maps: vec![vellum_core::tables::ENTRIES.write(&collection, &record)],
            },
        )?;
        app.push((t, claims, digest));
        since_sig += 1;
        if let Some(every) = rekey_every
            && rekeys_done < opts.rekeys
            && (i + 1) % every == 0
        {
            let mut k = [0u8; 32];
            OsRng.fill_bytes(&mut k);
            let next_secret = LedgerSecret::from_bytes(k);
            let mut nonce = [0u8; 12];
            OsRng.fill_bytes(&mut nonce);
            let record = vellum_core::tables::EncryptedLedgerSecretInfo {
                previous_ledger_secret: Some(vellum_core::tables::PreviousLedgerSecretInfo {
                    encrypted_data: base64::engine::general_purpose::STANDARD
                        .encode(secret.seal_under(&next_secret, nonce)),
                    version: secret_from,
                    previous_secret_stored_version: None,
                }),
                next_version: None,
            };
            let t = txid();
            engine.append(
                t,
                &EntryBuilder::default()
                    .map(vellum_core::tables::HISTORICAL_LEDGER_SECRET.write(&(), &record)),
            )?;
            engine.add_secret(t.seqno + 1, next_secret.clone())?;
            secret = next_secret;
            secret_from = t.seqno + 1;
            rekeys_done += 1;
            since_sig += 1;
        }
        if since_sig >= opts.signature_interval {
            engine.append_signature(txid(), iat)?;
            since_sig = 0;
        }
    }
    if since_sig > 0 {
        engine.append_signature(txid(), iat)?;
    }
    let last = engine.last_seqno();
    engine.sync()?;
    engine.close_chunk()?;
    engine.commit(last)?;

    let receipts_dir = out.join("receipts");
    std::fs::create_dir_all(&receipts_dir).map_err(|source| SampleError::Io {
        path: receipts_dir.clone(),
        source,
    })?;
    write(&out.join("service_cert.pem"), service.cert_pem.as_bytes())?;
    write(
        &out.join("ledger_secret"),
        hex::encode(secret.as_bytes()).as_bytes(),
    )?;

    let mut receipts = Vec::new();
    for (t, claims, digest) in &app {
        let bundle = engine.receipt(*t, last)?;
        let mut response = json!({
            "receipt": bundle.receipt,
            "state": "Ready",
            "transactionId": t.to_string(),
        });
        if let Some(c) = claims {
            response["applicationClaims"] = serde_json::to_value(c).unwrap_or_default();
        }
        let cose = bundle.cose.unwrap_or_default();
        write(
            &receipts_dir.join(format!("{t}.json")),
            serde_json::to_string_pretty(&response)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        write(&receipts_dir.join(format!("{t}.cose")), &cose)?;
        receipts.push(SampleReceipt {
            txid: *t,
            response,
            cose,
            claims_digest: *digest,
        });
    }
    Ok(SampleLedger {
        ledger_dir,
        service_cert_pem: service.cert_pem.clone(),
        ledger_secret: secret,
        receipts,
        transactions: last,
        signatures: engine.signatures().len() as u64,
    })
}

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
use vellum_core::cose::CwtClaims;
use vellum_core::entry::{EncodedEntry, EntryBuilder, LedgerSecret, MapWrites, SINGLETON_KEY};
use vellum_core::merkle::{MerkleTree, PathStep};
use vellum_core::receipt::{
    ApplicationClaim, CoseLeaf, LeafComponents, LedgerEntryClaim, ProofElement, Receipt,
    claims_digest, cose_receipt,
};
use vellum_core::signature::{Signer, decode_cose_value, signature_maps};
use vellum_core::{Hash, TxId, tables};

use crate::chunk::{ChunkName, closed_chunk_bytes};
use crate::identity::{Identity, IdentityError};

pub use crate::index::ENTRIES_TABLE;

/// Vellum's default constitution (JavaScript), as recorded in `public:ccf.gov.constitution`.
pub const DEFAULT_CONSTITUTION: &str = "export function validate(input) { return { valid: true }; }\n\
export function resolve(proposal, proposerId, votes) {\n  \
const yes = votes.filter((v) => v.vote).length;\n  \
return yes > 0 ? \"Accepted\" : \"Open\";\n}\n\
export function apply(proposal, proposalId) {}\n";

/// What to write.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Application entries to write.
    pub entries: u64,
    /// A signature after at most this many transactions.
    pub signature_interval: u64,
    /// Start a new chunk after this many signatures.
    pub signatures_per_chunk: u64,
    /// Wall-clock time for certificates and COSE `iat`.
    pub now: SystemTime,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            entries: 20,
            signature_interval: 4,
            signatures_per_chunk: 3,
            now: SystemTime::now(),
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
    /// Signing.
    #[error("signing: {0}")]
    Crypto(#[from] vellum_core::crypto::CryptoError),
    /// Tree.
    #[error("tree: {0}")]
    Tree(#[from] vellum_core::merkle::TreeError),
    /// COSE.
    #[error("cose: {0}")]
    Cose(#[from] vellum_core::cose::CoseError),
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

fn jbytes(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

struct Writer {
    view: u64,
    secret: LedgerSecret,
    tree: MerkleTree,
    entries: Vec<EncodedEntry>,
    chunk_start: usize,
    chunks: Vec<(u64, u64, Vec<Vec<u8>>)>,
    signatures: Vec<(u64, Vec<u8>, String)>, // (seqno, cose bytes, base64 sig)
}

impl Writer {
    fn next_txid(&self) -> TxId {
        TxId::new(self.view, self.entries.len() as u64 + 1)
    }

    fn push(&mut self, b: EntryBuilder) -> TxId {
        let txid = self.next_txid();
        let e = b.encode(txid, &self.secret);
        self.tree.append(e.leaf);
        self.entries.push(e);
        txid
    }
}

/// Writes a sample ledger into `out` (`out/ledger/`, `out/service_cert.pem`, `out/receipts/`,
/// `out/ledger_secret`).
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
    let signer = Signer {
        node_key: &node.signing_key,
        node_cert_pem: &node.cert_pem,
        service_key: Some(&service.signing_key),
        cwt: CwtClaims {
            iat,
            issuer: "vellum.local".into(),
            subject: "ledger.signature".into(),
        },
    };

    let mut w = Writer {
        view: 2,
        secret: secret.clone(),
        tree: MerkleTree::new(),
        entries: Vec::new(),
        chunk_start: 0,
        chunks: Vec::new(),
        signatures: Vec::new(),
    };
    w.tree.append(Hash::ZERO);

    // Genesis: the service, its first node, the consortium, the constitution and a user.
    let member_id = member.cert.id();
    let user_id = user.cert.id();
    w.push(
        EntryBuilder::default()
            .map(MapWrites::with_writes(
                tables::CONSTITUTION,
                vec![(SINGLETON_KEY.to_vec(), jbytes(json!(DEFAULT_CONSTITUTION)))],
            ))
            .map(MapWrites::with_writes(
                tables::MEMBERS_CERTS,
                vec![(member_id.clone().into_bytes(), member.cert_pem.clone().into_bytes())],
            ))
            .map(MapWrites::with_writes(
                tables::MEMBERS_INFO,
                vec![(member_id.into_bytes(), jbytes(json!({"status": "Accepted"})))],
            ))
            .map(MapWrites::with_writes(
                tables::NODES_ENDORSED_CERTIFICATES,
                vec![(node_id.clone().into_bytes(), node.cert_pem.clone().into_bytes())],
            ))
            .map(MapWrites::with_writes(
                tables::NODES_INFO,
                vec![(
                    node_id.clone().into_bytes(),
                    jbytes(json!({"status": "Trusted", "code_digest": hex::encode("Insecure hard-coded virtual measurement v1")})),
                )],
            ))
            .map(MapWrites::with_writes(
                tables::SERVICE_INFO,
                vec![(SINGLETON_KEY.to_vec(), jbytes(json!({"cert": service.cert_pem, "status": "Opening"})))],
            ))
            .map(MapWrites::with_writes(
                tables::USERS_CERTS,
                vec![(user_id.clone().into_bytes(), user.cert.to_pem().into_bytes())],
            ))
            .map(MapWrites::with_writes(
                tables::USERS_INFO,
                vec![(user_id.into_bytes(), jbytes(json!({"user_data": {"role": "Administrator"}})))],
            )),
    );
    let mut since_sig = 1u64;
    let mut sigs_in_chunk = 0u64;
    let mut flushed_to = 0u64;
    let mut sign = |w: &mut Writer, since_sig: &mut u64| -> Result<(), SampleError> {
        let txid = w.next_txid();
        let root = w.tree.root_at(txid.seqno)?;
        let tree_bytes = w.tree.serialize(flushed_to, txid.seqno)?;
        let maps = signature_maps(&signer, txid, &root, tree_bytes)?;
        let cose = maps
            .iter()
            .find(|m| m.name == tables::COSE_SIGNATURES)
            .and_then(|m| m.get(&SINGLETON_KEY))
            .and_then(decode_cose_value)
            .unwrap_or_default();
        let record: serde_json::Value = maps
            .iter()
            .find(|m| m.name == tables::SIGNATURES)
            .and_then(|m| m.get(&SINGLETON_KEY))
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        let sig_b64 = record["sig"].as_str().unwrap_or_default().to_owned();
        w.push(EntryBuilder {
            maps,
            ..Default::default()
        });
        w.signatures.push((txid.seqno, cose, sig_b64));
        // CCF compacts the tree at commit; the next signature serializes from here.
        flushed_to = txid.seqno;
        *since_sig = 0;
        Ok(())
    };
    sign(&mut w, &mut since_sig)?;
    sigs_in_chunk += 1;
    // The service opens.
    w.push(EntryBuilder::default().map(MapWrites::with_writes(
        tables::SERVICE_INFO,
        vec![(
            SINGLETON_KEY.to_vec(),
            jbytes(json!({"cert": service.cert_pem, "status": "Open"})),
        )],
    )));
    since_sig += 1;

    // Application entries.
    let mut app: Vec<(TxId, Option<Vec<ApplicationClaim>>, Hash)> = Vec::new();
    for i in 0..opts.entries {
        let collection = if i % 3 == 0 {
            "subledger:0".to_owned()
        } else {
            format!("collection-{}", i % 2)
        };
        let contents = format!("entry {i}: hello from Vellum");
        let (claims, digest) = if i % 2 == 1 {
            let mut k = [0u8; 32];
            OsRng.fill_bytes(&mut k);
            let claims = vec![ApplicationClaim::LedgerEntry {
                ledger_entry: LedgerEntryClaim {
                    collection_id: collection.clone(),
                    contents: contents.clone(),
                    protocol: "LedgerEntryV1".into(),
                    secret_key: base64::engine::general_purpose::STANDARD.encode(k),
                },
            }];
            let d = claims_digest(&claims).unwrap_or_default();
            (Some(claims), d)
        } else {
            (None, Hash::ZERO)
        };
        let value = jbytes(json!({"contents": contents, "collectionId": collection}));
        let txid = w.push(EntryBuilder {
            flags: 0,
            claims_digest: digest,
            maps: vec![MapWrites::with_writes(
                ENTRIES_TABLE,
                vec![(collection.into_bytes(), value)],
            )],
        });
        app.push((txid, claims, digest));
        since_sig += 1;
        if since_sig >= opts.signature_interval {
            sign(&mut w, &mut since_sig)?;
            sigs_in_chunk += 1;
            if sigs_in_chunk >= opts.signatures_per_chunk {
                let end = w.entries.len();
                w.chunks.push((
                    w.chunk_start as u64 + 1,
                    end as u64,
                    w.entries[w.chunk_start..end]
                        .iter()
                        .map(|e| e.bytes.clone())
                        .collect(),
                ));
                w.chunk_start = end;
                sigs_in_chunk = 0;
            }
        }
    }
    if since_sig > 0 {
        sign(&mut w, &mut since_sig)?;
    }
    let end = w.entries.len();
    if w.chunk_start < end {
        w.chunks.push((
            w.chunk_start as u64 + 1,
            end as u64,
            w.entries[w.chunk_start..end]
                .iter()
                .map(|e| e.bytes.clone())
                .collect(),
        ));
    }

    // Files.
    let ledger_dir = out.join("ledger");
    let receipts_dir = out.join("receipts");
    for d in [&ledger_dir, &receipts_dir] {
        std::fs::create_dir_all(d).map_err(|source| SampleError::Io {
            path: d.clone(),
            source,
        })?;
    }
    for (start, end, entries) in &w.chunks {
        let name = ChunkName {
            start: *start,
            end: Some(*end),
            committed: true,
        };
        write(
            &ledger_dir.join(name.file_name()),
            &closed_chunk_bytes(entries),
        )?;
    }
    write(&out.join("service_cert.pem"), service.cert_pem.as_bytes())?;
    write(
        &out.join("ledger_secret"),
        hex::encode(secret.as_bytes()).as_bytes(),
    )?;

    // Receipts: the first signature after each entry covers it.
    let mut receipts = Vec::new();
    for (txid, claims, digest) in &app {
        let Some((sig_seqno, cose, sig_b64)) =
            w.signatures.iter().find(|(s, _, _)| *s > txid.seqno)
        else {
            continue;
        };
        let e = &w.entries[(txid.seqno - 1) as usize];
        let path = w.tree.path(txid.seqno, *sig_seqno)?;
        let receipt = Receipt {
            cert: Some(node.cert_pem.clone()),
            leaf_components: Some(LeafComponents {
                claims_digest: digest.to_hex(),
                commit_evidence: e.commit_evidence.clone(),
                write_set_digest: e.write_set_digest.to_hex(),
            }),
            node_id: Some(node_id.clone()),
            proof: path
                .steps
                .iter()
                .map(|s| match s {
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
            service_endorsements: Some(Vec::new()),
            signature: Some(sig_b64.clone()),
            leaf: None,
        };
        let mut response = json!({
            "receipt": receipt,
            "state": "Ready",
            "transactionId": txid.to_string(),
        });
        if let Some(c) = claims {
            response["applicationClaims"] = serde_json::to_value(c).unwrap_or_default();
        }
        let cose = cose_receipt(
            cose,
            &CoseLeaf {
                write_set_digest: e.write_set_digest,
                commit_evidence: e.commit_evidence.clone(),
                claims_digest: *digest,
            },
            &path,
        )?;
        write(
            &receipts_dir.join(format!("{txid}.json")),
            serde_json::to_string_pretty(&response)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        write(&receipts_dir.join(format!("{txid}.cose")), &cose)?;
        receipts.push(SampleReceipt {
            txid: *txid,
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
        transactions: w.entries.len() as u64,
        signatures: w.signatures.len() as u64,
    })
}

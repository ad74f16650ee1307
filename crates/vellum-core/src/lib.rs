//! # vellum-core
//!
//! The bytes Vellum's promises rest on, in CCF's exact formats so that CCF's own tools and the
//! official Azure SDK verifier accept them:
//!
//! * [`TxId`] — `VIEW.SEQNO` transaction ids with strict parsing;
//! * [`merkle`] — the CCF Merkle tree (append, roots and inclusion paths at any size, flush,
//!   retract, serialization);
//! * [`entry`] — ledger entries (framing, public and private write sets, AES-256-GCM sealing,
//!   write-set digest, commit evidence, leaf hash);
//! * [`tables`] — the ledger schema: every table CCF and Vellum write, with its name, key and
//!   typed value;
//! * [`signature`] and [`cose`] — signature transactions (node ECDSA over the root, COSE_Sign1
//!   by the service key, serialized tree), and the one verifier of their signatures that
//!   replicas and the offline auditor share;
//! * [`receipt`] — JSON and COSE receipts, ACL application claims, and verifiers;
//! * [`crypto`] — keys, certificates, node/member/user ids, ACL's fingerprint form;
//! * [`gov`] — governance requests as CCF's members sign them (COSE_Sign1 envelopes).
//!
//! What it does **not** do: I/O, async, clocks or randomness of its own (callers pass keys,
//! times and randomness in). Ledger files live in `vellum-ledger`.
//!
//! ## Example: verify an ACL receipt
//!
//! ```
//! use vellum_core::receipt::Receipt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vector: serde_json::Value =
//!     serde_json::from_str(include_str!("../tests/data/receipt_vector_c.json"))?;
//! let receipt = Receipt::from_json(&vector["response"]["receipt"])?;
//! receipt.verify(vector["service_cert"].as_str().unwrap_or_default(), None)?;
//! assert_eq!(receipt.txid().map(|t| t.to_string()).as_deref(), Some("16.7415"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Example: a tree and an inclusion path
//!
//! ```
//! use vellum_core::{Hash, merkle::MerkleTree};
//!
//! let mut tree = MerkleTree::new();
//! tree.append(Hash::ZERO); // leaf 0 of every ledger
//! for i in 1..=5u64 {
//!     tree.append(Hash::digest(&i.to_le_bytes()));
//! }
//! let root = tree.root_at(6).unwrap();
//! let path = tree.path(3, 6).unwrap();
//! assert!(path.verify(&tree.leaf(3).unwrap(), 3, 6, &root).is_ok());
//! ```

pub mod cose;
pub mod crypto;
pub mod entry;
pub mod gov;
pub mod hash;
pub mod jwk;
pub mod merkle;
pub mod receipt;
pub mod signature;
pub mod snapshot;
pub mod status;
pub mod tables;
pub mod txid;

pub use hash::Hash;
pub use txid::{TxId, TxIdParseError};

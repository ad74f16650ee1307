//! # vellum-ledger
//!
//! Vellum's ledger files, in CCF's chunk format: reading and writing chunk files, the offline
//! auditor behind `vellum audit`, identities (service, node and client certificates), and a
//! sample-ledger writer used by `vellum sample-ledger` and the interop tests.
//!
//! It knows nothing of HTTP or Raft.
//!
//! ```no_run
//! use vellum_ledger::{AuditOptions, audit_dir};
//!
//! let report = audit_dir("ledger".as_ref(), &AuditOptions::default(), |_| {})?;
//! println!("{} transactions, {} signatures verified", report.transactions, report.signatures);
//! # Ok::<(), vellum_ledger::AuditFailure>(())
//! ```

pub mod audit;
pub mod checkpoint;
pub mod chunk;
pub mod engine;
pub mod files;
pub mod genesis;
pub mod identity;
pub mod index;
pub mod live_index;
pub mod sample;
pub mod store;

pub use audit::{AuditFailure, AuditOptions, AuditReport, audit_chunks, audit_dir};

//! # vellum-ledger
//!
//! Vellum's ledger files, in CCF's chunk format: reading and writing chunk files, the offline
//! auditor behind `vellum audit`, and a sample-ledger writer used for interop tests.
//!
//! It knows nothing of HTTP or Raft.

pub mod audit;
pub mod chunk;

pub use audit::{AuditFailure, AuditOptions, AuditReport, audit_chunks, audit_dir};

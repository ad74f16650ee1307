//! Helpers shared by the node's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vellum_ledger::audit::{AuditOptions, audit_dir};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python with `ccf` (see vellum-ledger's tests): `VELLUM_PYTHON` or `.venv/bin/python`.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VELLUM_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// Whether interop checks must run (`VELLUM_REQUIRE_INTEROP=1`, set by scripts/test.sh).
pub fn interop_required() -> bool {
    std::env::var("VELLUM_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// `vellum audit` (the library) over a node's committed ledger; returns the transaction count.
pub fn audit(ledger: &Path, secret: &vellum_core::entry::LedgerSecret) -> u64 {
    let opts = AuditOptions {
        ledger_secret: Some(secret.clone()),
        ..Default::default()
    };
    match audit_dir(ledger, &opts, |_| {}) {
        Ok(r) => {
            // Every application entry a node writes carries a claim the audit checks.
            assert!(r.claims_checked > 0, "{r:?}");
            r.transactions
        }
        Err(e) => panic!("audit of {} failed: {e}", ledger.display()),
    }
}

/// `ccf.ledger` FULL verification of a ledger directory (committed chunks), when Python with
/// `ccf` is available (required under scripts/test.sh). Returns the transaction count.
pub fn ccf_full(ledger: &Path) -> Option<u64> {
    let Some(py) = python() else {
        assert!(
            !interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python found"
        );
        eprintln!("skipping ccf.ledger FULL verification: no Python with ccf");
        return None;
    };
    let out = Command::new(py)
        .arg(repo().join("tests/interop/verify_ledger_full.py"))
        .arg(ledger)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ccf.ledger FULL failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.split_whitespace().find_map(|w| w.parse().ok())
}

#[allow(unused_imports)]
pub use vellum_node::testing::{ISSUER, TestServer};

//! Helpers shared by the integration tests (each test binary uses some of them).

#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ledger directory of one of the bundled real CCF services.
pub fn ccf_ledger(service: &str) -> PathBuf {
    repo()
        .join("testdata/ccf-ledgers")
        .join(service)
        .join("ledger")
}

/// A Python with `ccf` and `azure-confidentialledger`: `VELLUM_PYTHON`, or `.venv/bin/python`
/// at the repository root (created by `scripts/test.sh`).
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

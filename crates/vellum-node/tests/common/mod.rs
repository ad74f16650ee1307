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

/// A Python with `azure-confidentialledger` 2.0.0b2: `VELLUM_PYTHON_SDK2` or
/// `.venv-sdk2/bin/python` (scripts/test.sh sets it up beside the 1.1.1 venv).
pub fn python_sdk2() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VELLUM_PYTHON_SDK2") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv-sdk2/bin/python");
    venv.exists().then_some(venv)
}

/// Runs one of the official SDK suites (`tests/interop/<script>`) with `py` against `srv`,
/// with a Reader identity and a token user; returns how many checks passed.
pub async fn run_sdk_suite(srv: &TestServer, py: PathBuf, script: &str) -> usize {
    let id = vellum_ledger::identity::Identity::client("Reader", std::time::SystemTime::now(), 30)
        .unwrap_or_else(|e| panic!("identity: {e}"));
    let reader_path = srv.path("reader.pem");
    std::fs::write(&reader_path, id.combined_pem()).unwrap_or_else(|e| panic!("{e}"));
    let oid = "aad-user-3f1c9a";
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("tests/interop").join(script))
        .env("VELLUM_ENDPOINT", &srv.endpoint)
        .env("VELLUM_SERVICE_CERT", srv.path("service_cert.pem"))
        .env("VELLUM_ADMIN_PEM", srv.path("admin.pem"))
        .env("VELLUM_READER_PEM", &reader_path)
        .env("VELLUM_READER_ID", id.cert.acl_fingerprint())
        .env("VELLUM_TOKEN", srv.token(oid))
        .env("VELLUM_TOKEN_OID", oid)
        .env("VELLUM_LEDGER_ID", &srv.ledger_id)
        .env("VELLUM_PAGE_SIZE", srv.page_size.to_string());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("ALL PASSED"),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().filter(|l| l.starts_with("PASS")).count()
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

/// CCF's `verify_ledger_secrets_chain` over a ledger directory, when Python with `ccf` is
/// available; returns how many rekey records (previous secrets) it walked.
pub fn ccf_secrets_chain(ledger: &Path) -> Option<usize> {
    let Some(py) = python() else {
        assert!(
            !interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python found"
        );
        eprintln!("skipping verify_ledger_secrets_chain: no Python with ccf");
        return None;
    };
    let code = "import sys, ccf.verify_ledger_secrets_chain as v\n\
                sys.exit(0 if v.run([sys.argv[1]]) else 1)";
    let out = Command::new(py)
        .args(["-c", code])
        .arg(ledger)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify_ledger_secrets_chain failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout.matches("previous_ledger_secret").count())
}

#[allow(unused_imports)]
pub use vellum_node::testing::{ISSUER, TestServer};

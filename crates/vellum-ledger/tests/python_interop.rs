//! Interop: a ledger directory and receipts written by Vellum pass Microsoft's own Python tools
//! (`ccf` 7.0.22: `ccf.ledger` FULL verification and `ccf.receipt`; `azure-confidentialledger`
//! 1.1.1: `verify_receipt`).
//!
//! Needs a Python with those packages: `VELLUM_PYTHON`, or `.venv/bin/python` at the repository
//! root (`scripts/test.sh` creates it). Without one the test says so and passes, unless
//! `VELLUM_REQUIRE_INTEROP=1` (set by `scripts/test.sh` and CI), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::process::Command;

use vellum_ledger::sample::{SampleOptions, write_sample};

use common::{interop_required, python};

#[test]
fn official_python_tools_accept_vellum_ledgers_and_receipts() {
    let required = interop_required();
    let Some(py) = python() else {
        assert!(
            !required,
            "VELLUM_REQUIRE_INTEROP=1 but no Python: set VELLUM_PYTHON or run scripts/test.sh"
        );
        eprintln!("SKIPPED: no Python with ccf and azure-confidentialledger (run scripts/test.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = write_sample(
        dir.path(),
        &SampleOptions {
            entries: 12,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.receipts.len() >= 12);
    let script = common::repo().join("tests/interop/verify_with_official_tools.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "official tools rejected Vellum's output:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("interop: ") && stdout.contains(" 0 failed"),
        "{stdout}"
    );
}

/// A ledger rekeyed twice passes CCF's `verify_ledger_secrets_chain` (each rekey record's
/// previous secret applies from the seqno after the rekey before it) and `ccf.ledger` FULL.
#[test]
fn ccfs_tools_accept_a_rekeyed_ledger() {
    let Some(py) = python() else {
        assert!(
            !interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python"
        );
        eprintln!("SKIPPED: no Python with ccf (run scripts/test.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = write_sample(
        dir.path(),
        &SampleOptions {
            entries: 30,
            rekeys: 2,
            chunk_size: 2048,
            ..Default::default()
        },
    )
    .unwrap();
    let code = "import sys, ccf.verify_ledger_secrets_chain as v\n\
                sys.exit(0 if v.run([sys.argv[1]]) else 1)";
    let out = Command::new(&py)
        .args(["-c", code])
        .arg(&s.ledger_dir)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.matches("previous_ledger_secret").count() == 2,
        "verify_ledger_secrets_chain:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&py)
        .arg(common::repo().join("tests/interop/verify_ledger_full.py"))
        .arg(&s.ledger_dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "ccf.ledger FULL:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

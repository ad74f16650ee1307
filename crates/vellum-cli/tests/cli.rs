//! The `vellum` binary, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::path::PathBuf;
use std::process::Command;

fn vellum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vellum"))
}

fn ccf(service: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/ccf-ledgers")
        .join(service)
        .join("ledger")
}

#[test]
fn audit_passes_real_ccf_ledgers_with_text_and_json() {
    for svc in [
        "acme_containing_service",
        "cose_flipflop_service",
        "double_sealed_service",
        "expired_service",
    ] {
        let out = vellum().arg("audit").arg(ccf(svc)).output().unwrap();
        assert!(
            out.status.success(),
            "{svc}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
        let out = vellum()
            .args(["audit", "--json"])
            .arg(ccf(svc))
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true);
        assert!(v["signatures"].as_u64().unwrap() > 0);
    }
}

#[test]
fn audit_names_the_bad_transaction_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let src = ccf("acme_containing_service");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let f = dir.path().join("ledger_3-13.committed");
    let mut b = std::fs::read(&f).unwrap();
    // A byte inside the third entry of the chunk (seqno 5).
    let pos: Vec<u32> = {
        let t = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        b[t..]
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let at = pos[2] as usize + 200;
    b[at] ^= 0xff;
    std::fs::write(&f, b).unwrap();
    let out = vellum().arg("audit").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("transaction 2.5"), "{err}");
    let out = vellum()
        .args(["audit", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["txid"], "2.5");
    assert_eq!(v["seqno"], 5);
}

#[test]
fn sample_ledger_then_audit_with_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sample");
    let out = vellum()
        .arg("sample-ledger")
        .arg(&out_dir)
        .args(["--entries", "9"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vellum()
        .arg("audit")
        .arg(out_dir.join("ledger"))
        .arg("--ledger-secret")
        .arg(out_dir.join("ledger_secret"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("GCM tags and commit evidence checked"));
    // Writing into a non-empty directory is refused with a one-line message.
    let out = vellum()
        .arg("sample-ledger")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

/// The byte offsets of a closed chunk's entries, from its positions table.
fn entry_offsets(b: &[u8]) -> Vec<usize> {
    let t = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[t..]
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect()
}

#[test]
fn legacy_version_fields_pass_and_odd_uncovered_fields_are_notes() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("legacy");
    let out = vellum()
        .arg("sample-ledger")
        .arg(&out_dir)
        .args(["--entries", "6", "--legacy-versions"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ledger = out_dir.join("ledger");
    let secret = out_dir.join("ledger_secret");
    let audit = |extra: &[&str]| {
        vellum()
            .arg("audit")
            .arg(&ledger)
            .args(extra)
            .output()
            .unwrap()
    };
    for extra in [&[][..], &["--ledger-secret", secret.to_str().unwrap()]] {
        let out = audit(extra);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));
    }

    // The final signature's public-domain seqno, which no signature covers and CCF does not
    // compare with the IV: a note, not a failure (the GCM tag still catches it with the secret).
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ledger)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let start = |p: &PathBuf| -> u64 {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        let n = n.trim_start_matches("ledger_").split('-').next().unwrap();
        n.parse().unwrap()
    };
    files.sort_by_key(start);
    let last = files.last().unwrap();
    let mut b = std::fs::read(last).unwrap();
    let at = *entry_offsets(&b).last().unwrap() + 45;
    b[at] ^= 0x40;
    std::fs::write(last, &b).unwrap();
    let out = audit(&[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("note: transaction 2.")
            && text.contains("differs from the IV's seqno")
            && text.contains("(not covered by any signature)"),
        "{text}"
    );
    let out = audit(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["notes"].as_array().unwrap().len(), 1);
    assert_eq!(v["notes"][0]["covered"], false);
    let out = audit(&["--ledger-secret", secret.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    // A format version other than 1 cannot be verified: said so, not called tampering.
    let first = &files[0];
    let mut b = std::fs::read(first).unwrap();
    let at = entry_offsets(&b)[0];
    b[at] = 2;
    std::fs::write(first, &b).unwrap();
    let out = audit(&["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unsupported"], true, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("format version 2"),
        "{v}"
    );
}

#[test]
fn bad_input_gives_one_line_errors() {
    let out = vellum()
        .args(["audit", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let out = vellum().arg("audit").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ledger chunk files"));
    let bad_secret = dir.path().join("s");
    std::fs::write(&bad_secret, "zz").unwrap();
    let out = vellum()
        .arg("audit")
        .arg(ccf("acme_containing_service"))
        .arg("--ledger-secret")
        .arg(&bad_secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex"));
    let out = vellum().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit"));
}

/// Output into a pipe whose reader is gone (`vellum ... | head -1`) ends the command quietly,
/// not with a panic.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("sample-ledger")
        .arg(dir.path().join("s"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?} {stderr}", out.status);
}

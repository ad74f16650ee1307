//! What ships beside the binary: the systemd unit passes `systemd-analyze verify` and scores
//! well in `systemd-analyze security`; the man pages and shell completions are generated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The unit as shipped, with ExecStart's binary pointing at the one just built (verify checks
/// that the binary exists; nothing else differs).
fn unit_copy(dir: &std::path::Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo().join("packaging/vellum.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/vellum serve "),
        "{unit}"
    );
    let copy = unit.replace("/usr/local/bin/vellum", env!("CARGO_BIN_EXE_vellum"));
    let path = dir.join("vellum.service");
    std::fs::write(&path, copy).unwrap();
    path
}

fn systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        eprintln!("skipped: systemd-analyze is not installed");
    }
    found
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // "OK" is an exposure below 2.0 on the 0-10 scale systemd shows (the threshold is on its
    // 0-100 scale; "UNSAFE" is above 9).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{text}");
    // The flags in ExecStart are the binary's own.
    let exec = std::fs::read_to_string(&unit)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_owned))
        .unwrap();
    let mut args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    args.push("--help");
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{exec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["man", "--json", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pages: Vec<&str> = v["pages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for want in [
        "vellum.1",
        "vellum-serve.1",
        "vellum-node-status.1",
        "vellum-audit.1",
    ] {
        assert!(pages.contains(&want), "{want} missing from {pages:?}");
    }
    let page = std::fs::read_to_string(dir.path().join("vellum-serve.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH vellum-serve 1"),
        "{page}"
    );
    assert!(page.contains("\\-\\-data\\-dir"), "{page}");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args(["completions", shell])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("node"),
            "{shell}: {text}"
        );
    }
}

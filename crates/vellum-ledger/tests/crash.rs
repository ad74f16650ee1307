//! Crash test: a writer process is killed with SIGKILL in the middle of sustained writes,
//! three times over the same ledger. After each kill, every entry the writer reported durable
//! (after its `fdatasync`) is still there with the same transaction id and bytes, the ledger
//! audits clean (with the ledger secret), and writing resumes.
//!
//! The test re-runs its own binary as the writer (`child_writer`, ignored unless
//! `VELLUM_CRASH_DIR` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites};
use vellum_core::{Hash, TxId};
use vellum_ledger::engine::{Engine, NodeKeys};
use vellum_ledger::genesis::{DEFAULT_CONSTITUTION, Genesis, service_info};
use vellum_ledger::identity::Identity;
use vellum_ledger::index::ENTRIES_TABLE;
use vellum_ledger::{AuditOptions, audit_dir};

const SECRET: [u8; 32] = [7; 32];

/// Keys persisted in the test directory, so that restarts sign with the same identities.
fn keys(dir: &Path) -> NodeKeys {
    let kf = dir.join("keys.json");
    if !kf.exists() {
        let now = SystemTime::now();
        let service = Identity::service("Vellum Service", now, 30).unwrap();
        let node = service
            .issue_node("Vellum Node", &["localhost"], &[], now, 30)
            .unwrap();
        let v = serde_json::json!({
            "service_key": service.key_pem(), "service_cert": service.cert_pem,
            "node_key": node.key_pem(), "node_cert": node.cert_pem,
        });
        std::fs::write(&kf, v.to_string()).unwrap();
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&kf).unwrap()).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    NodeKeys {
        node_key: vellum_core::crypto::SigningKey::from_pkcs8_pem(&s("node_key")).unwrap(),
        node_cert_pem: s("node_cert"),
        service_key: Some(
            vellum_core::crypto::SigningKey::from_pkcs8_pem(&s("service_key")).unwrap(),
        ),
        service_cert_pem: s("service_cert"),
        secrets: LedgerSecret::from_bytes(SECRET).into(),
        cose_issuer: "vellum.local".into(),
        cose_subject: "ledger.signature".into(),
        previous_services: Vec::new(),
        service_signer: None,
    }
}

/// The writer: genesis on first start, then entries forever, a signature every 8, a sync
/// every few entries; after each sync it prints `durable SEQNO VIEW HASH` for the new entries.
#[test]
#[ignore = "run by crash_kill_restart_keeps_every_durable_write as a child process"]
fn child_writer() {
    let Ok(dir) = std::env::var("VELLUM_CRASH_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let keys = keys(dir);
    let (mut e, _) = Engine::open_dir(&dir.join("ledger"), 16 * 1024, keys.clone()).unwrap();
    // Each restart is a new view, as after an election.
    let view = e.last_txid().map_or(2, |t| t.view + 1);
    // Drop an unsigned tail, as a new primary rolls back what no signature covers.
    if let Some(s) = e.last_signature() {
        e.truncate(s).unwrap();
    }
    let mut out = std::io::stdout().lock();
    let mut reported = e.last_seqno();
    if e.last_seqno() == 0 {
        let node_id = keys.node_key.public_key().id();
        let g = Genesis {
            service_cert_pem: &keys.service_cert_pem,
            node: (&node_id, &keys.node_cert_pem),
            members: vec![],
            users: vec![],
            constitution: DEFAULT_CONSTITUTION,
        };
        e.append(TxId::new(view, 1), &g.entry()).unwrap();
        e.append_signature(TxId::new(view, 2), 1).unwrap();
        e.append(
            TxId::new(view, 3),
            &EntryBuilder::default().map(service_info(
                &keys.service_cert_pem,
                vellum_core::tables::ServiceStatus::Open,
            )),
        )
        .unwrap();
    }
    let mut i = 0u64;
    loop {
        i += 1;
        let t = TxId::new(view, e.last_seqno() + 1);
        if t.seqno.is_multiple_of(8) {
            e.append_signature(t, 1).unwrap();
        } else {
            let ws = EntryBuilder::default().map(MapWrites::with_writes(
                ENTRIES_TABLE,
                vec![(
                    format!("c{}", t.seqno % 3).into_bytes(),
                    format!("entry {t}").into_bytes(),
                )],
            ));
            e.append(t, &ws).unwrap();
        }
        if i.is_multiple_of(5) {
            e.sync().unwrap();
            for s in reported + 1..=e.last_seqno() {
                let h = Hash::digest(&e.read(s).unwrap());
                writeln!(out, "durable {s} {} {h}", e.view_at(s).unwrap()).unwrap();
            }
            out.flush().unwrap();
            reported = e.last_seqno();
        }
    }
}

#[test]
fn crash_kill_restart_keeps_every_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut durable: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VELLUM_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let start = Instant::now();
        let mut seen = 0;
        // Let it write a while, then kill it mid-stream (lines keep arriving).
        let target = 300 + round * 137;
        while seen < target {
            let line = lines.next().expect("writer ended early").unwrap();
            if let Some(rest) = line.strip_prefix("durable ") {
                let p: Vec<&str> = rest.split(' ').collect();
                let (s, v, h) = (
                    p[0].parse::<u64>().unwrap(),
                    p[1].parse::<u64>().unwrap(),
                    p[2].to_owned(),
                );
                durable.insert(s, (v, h));
                seen += 1;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "writer too slow"
            );
        }
        // SIGKILL: no destructor, no flush, no goodbye.
        child.kill().unwrap();
        // Drain what it printed before dying: those were durable too.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("durable ") {
                let p: Vec<&str> = rest.split(' ').collect();
                if p.len() == 3 {
                    durable.insert(
                        p[0].parse().unwrap(),
                        (p[1].parse().unwrap(), p[2].to_owned()),
                    );
                }
            }
        }
        let _ = child.wait();

        // Everything reported durable is there, byte for byte (by hash), with its txid —
        // except what a restart deliberately rolled back (entries after the last signature,
        // which no signature had covered). Those may be replaced in a later view.
        let (e, rec) =
            Engine::open_dir(&dir.path().join("ledger"), 16 * 1024, keys(dir.path())).unwrap();
        let last_sig = e.last_signature().unwrap();
        println!(
            "round {round}: {} reported durable (max {}), recovered {rec:?}, last signature {last_sig}",
            durable.len(),
            durable.keys().next_back().unwrap()
        );
        for (&s, (v, h)) in durable.range(..=last_sig) {
            assert_eq!(
                e.view_at(s),
                Some(*v),
                "round {round}: seqno {s} lost its view"
            );
            assert_eq!(
                &Hash::digest(&e.read(s).unwrap()).to_hex(),
                h,
                "round {round}: seqno {s} changed"
            );
        }
        assert!(
            rec.last_seqno >= *durable.keys().next_back().unwrap(),
            "round {round}: durable entries lost: {rec:?}"
        );
        drop(e);
        let report = audit_dir(
            &dir.path().join("ledger"),
            &AuditOptions {
                ledger_secret: Some(LedgerSecret::from_bytes(SECRET)),
                include_uncommitted: true,
            },
            |_| {},
        )
        .unwrap_or_else(|f| panic!("round {round}: ledger does not verify: {f}"));
        assert!(report.signatures > 0);
        // The next round's writer rolls back the unsigned tail: forget it here.
        let keep: BTreeMap<_, _> = durable
            .range(..=last_sig)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        durable = keep;
    }
}

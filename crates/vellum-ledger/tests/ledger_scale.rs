//! At scale: 100,000 entries over several collections written through the engine (with
//! signatures and chunk rotation), then `vellum audit` and `ccf.ledger` FULL verification both
//! pass, and reads by id, latest-in-collection and range (paged) return exactly what was
//! written. `VELLUM_HEAVY=1` runs the full 100,000 (scripts/test.sh does, in release mode);
//! otherwise 5,000.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::process::Command;
use std::time::{Instant, SystemTime};

use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites, RawEntry};
use vellum_ledger::engine::{Engine, NodeKeys};
use vellum_ledger::genesis::{DEFAULT_CONSTITUTION, Genesis, service_info};
use vellum_ledger::identity::Identity;
use vellum_ledger::index::{ENTRIES_TABLE, Index, IndexedTx};
use vellum_ledger::store::DEFAULT_CHUNK_SIZE;
use vellum_ledger::{AuditOptions, audit_dir};

const COLLECTIONS: u64 = 10;

fn contents(i: u64) -> String {
    format!("entry number {i} of the scale test")
}

use common::{interop_required, python};

#[test]
fn many_entries_verify_and_read_back() {
    let n: u64 = if std::env::var("VELLUM_HEAVY").is_ok_and(|v| v == "1") {
        100_000
    } else {
        5_000
    };
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let service = Identity::service("Vellum Service", now, 30).unwrap();
    let node = service
        .issue_node("Vellum Node", &["localhost"], &[], now, 30)
        .unwrap();
    let secret = LedgerSecret::from_bytes([9; 32]);
    let keys = NodeKeys::new(&service, &node, secret.clone());
    let ledger_dir = dir.path().join("ledger");
    let started = Instant::now();
    let (mut e, _) = Engine::open_dir(&ledger_dir, DEFAULT_CHUNK_SIZE, keys).unwrap();
    let index = Index::open(&dir.path().join("index.redb")).unwrap();
    let node_id = node.signing_key.public_key().id();
    let genesis = Genesis {
        service_cert_pem: &service.cert_pem,
        node: (&node_id, &node.cert_pem),
        members: vec![],
        users: vec![],
        constitution: DEFAULT_CONSTITUTION,
    };
    let mut next = 1u64;
    let mut txid = || {
        let t = TxId::new(2, next);
        next += 1;
        t
    };
    let mut batch: Vec<IndexedTx> = Vec::new();
    let push = |e: &mut Engine, t: TxId, ws: &EntryBuilder, batch: &mut Vec<IndexedTx>| {
        let enc = e.append(t, ws).unwrap();
        let (raw, _) = RawEntry::parse(&enc.bytes).unwrap();
        batch.push(IndexedTx::from_entry(&raw, &secret).unwrap());
    };
    push(&mut e, txid(), &genesis.entry(), &mut batch);
    let t = txid();
    let ws = e.signature_write_set(t, 1).unwrap();
    push(&mut e, t, &ws, &mut batch);
    push(
        &mut e,
        txid(),
        &EntryBuilder::default().map(service_info(
            &service.cert_pem,
            vellum_core::tables::ServiceStatus::Open,
        )),
        &mut batch,
    );
    let mut written: Vec<(u64, u64)> = Vec::new(); // (seqno, entry number)
    for i in 0..n {
        let t = txid();
        let c = format!("collection-{}", i % COLLECTIONS);
        let ws = EntryBuilder::default().map(MapWrites::with_writes(
            ENTRIES_TABLE,
            vec![(c.into_bytes(), contents(i).into_bytes())],
        ));
        push(&mut e, t, &ws, &mut batch);
        written.push((t.seqno, i));
        if t.seqno.is_multiple_of(100) {
            let s = txid();
            let ws = e.signature_write_set(s, 1).unwrap();
            push(&mut e, s, &ws, &mut batch);
        }
        if batch.len() >= 2000 {
            e.sync().unwrap();
            index.apply(&batch).unwrap();
            batch.clear();
        }
    }
    let s = txid();
    let ws = e.signature_write_set(s, 1).unwrap();
    push(&mut e, s, &ws, &mut batch);
    e.sync().unwrap();
    index.apply(&batch).unwrap();
    let last = e.last_seqno();
    e.close_chunk().unwrap();
    e.commit(last).unwrap();
    let write_time = started.elapsed();

    // Offline verification: ours, with the secret, and CCF's own.
    let t0 = Instant::now();
    let report = audit_dir(
        &ledger_dir,
        &AuditOptions {
            ledger_secret: Some(secret.clone()),
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(report.transactions, last);
    assert_eq!(report.unsigned_tail, 0);
    let audit_time = t0.elapsed();
    let required = interop_required();
    match python() {
        Some(py) => {
            let script = common::repo().join("tests/interop/verify_ledger_full.py");
            let out = Command::new(py)
                .arg(script)
                .arg(&ledger_dir)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ccf.ledger FULL failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains(&format!("{last} transactions verified")),
                "{stdout}"
            );
        }
        None => {
            assert!(!required, "VELLUM_REQUIRE_INTEROP=1 but no Python");
            eprintln!("SKIPPED ccf.ledger FULL: no Python with ccf (run scripts/test.sh)");
        }
    }

    // Reads by id: every 97th entry decrypts to exactly what was written.
    for &(seqno, i) in written.iter().step_by(97) {
        let bytes = e.read(seqno).unwrap();
        let (raw, _) = RawEntry::parse(&bytes).unwrap();
        let maps = secret.open(&raw).unwrap();
        let m = maps.iter().find(|m| m.name == ENTRIES_TABLE).unwrap();
        assert_eq!(
            m.writes[0].0,
            format!("collection-{}", i % COLLECTIONS).into_bytes()
        );
        assert_eq!(m.writes[0].1, contents(i).into_bytes());
        let it = index.get(seqno).unwrap().unwrap();
        assert_eq!(
            (it.view, it.collection.as_deref()),
            (2, Some(format!("collection-{}", i % COLLECTIONS).as_str()))
        );
    }
    // Latest in each collection, and every collection's full history through paged ranges.
    for c in 0..COLLECTIONS {
        let name = format!("collection-{c}");
        let expected: Vec<u64> = written
            .iter()
            .filter(|(_, i)| i % COLLECTIONS == c)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(index.latest(&name).unwrap(), expected.last().copied());
        let mut got = Vec::new();
        let mut from = 1;
        loop {
            let page = index.range(&name, from, last, 1000).unwrap();
            let Some(&end) = page.last() else { break };
            got.extend(page);
            from = end + 1;
        }
        assert_eq!(got, expected, "{name}");
    }
    println!(
        "{n} entries ({last} transactions): written and indexed in {write_time:?}, audited in {audit_time:?}"
    );
}

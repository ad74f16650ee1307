//! The ledger engine as a primary and a replica: byte-identical ledgers from the same write
//! sets, replicas rejecting signatures that do not match their own tree, truncation, restart,
//! and receipts only once a covering signature is committed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::time::SystemTime;

use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites};
use vellum_ledger::checkpoint::Checkpoint;
use vellum_ledger::engine::{Engine, EngineError, NodeKeys};
use vellum_ledger::identity::Identity;
use vellum_ledger::index::ENTRIES_TABLE;

struct Service {
    service: Identity,
    secret: LedgerSecret,
}

impl Service {
    fn new() -> Service {
        Service {
            service: Identity::service("Vellum Service", SystemTime::now(), 30).unwrap(),
            secret: LedgerSecret::from_bytes([4; 32]),
        }
    }

    fn node_keys(&self) -> NodeKeys {
        let node = self
            .service
            .issue_node("Vellum Node", &["localhost"], &[], SystemTime::now(), 30)
            .unwrap();
        NodeKeys::new(&self.service, &node, self.secret.clone())
    }
}

fn app(i: u64) -> EntryBuilder {
    EntryBuilder::default().map(MapWrites::with_writes(
        ENTRIES_TABLE,
        vec![(
            format!("c{}", i % 3).into_bytes(),
            format!("entry {i}").into_bytes(),
        )],
    ))
}

#[test]
fn replica_writes_identical_bytes_and_checks_signatures() {
    let svc = Service::new();
    let (pdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut primary, _) = Engine::open_dir(pdir.path(), 4096, svc.node_keys()).unwrap();
    let (mut replica, _) = Engine::open_dir(rdir.path(), 4096, svc.node_keys()).unwrap();
    for s in 1..=60u64 {
        let txid = TxId::new(2, s);
        let ws = if s % 7 == 0 {
            primary.signature_write_set(txid, 1_700_000_000).unwrap()
        } else {
            app(s)
        };
        if s % 7 == 0 {
            replica.check_signature(txid, &ws).unwrap();
        }
        let a = primary.append(txid, &ws).unwrap();
        let b = replica.append(txid, &ws).unwrap();
        assert_eq!(
            a.bytes, b.bytes,
            "seqno {s}: replicas must write identical bytes"
        );
    }
    assert_eq!(primary.root().unwrap(), replica.root().unwrap());

    // A primary whose tree differs (it holds one more transaction) produces a signature the
    // replica must reject.
    primary.append(TxId::new(2, 61), &app(61)).unwrap();
    let bad = primary.signature_write_set(TxId::new(2, 62), 1).unwrap();
    replica.append(TxId::new(2, 61), &app(999)).unwrap();
    let err = replica.check_signature(TxId::new(2, 62), &bad).unwrap_err();
    assert!(
        matches!(err, EngineError::SignatureRejected { .. }),
        "{err}"
    );
    // A signature by a node of another service, over the right tree, is rejected.
    let other = Service::new();
    let odir = tempfile::tempdir().unwrap();
    let (mut stranger, _) = Engine::open_dir(odir.path(), 4096, other.node_keys()).unwrap();
    let mut ok = replica_clone_ws(&replica);
    for (s, ws) in ok.drain(..) {
        stranger.append(TxId::new(2, s), &ws).unwrap();
    }
    let forged = stranger.signature_write_set(TxId::new(2, 62), 1).unwrap();
    let err = replica
        .check_signature(TxId::new(2, 62), &forged)
        .unwrap_err();
    assert!(
        err.to_string().contains("not endorsed by the service"),
        "{err}"
    );
    // Out-of-order appends are refused.
    assert!(matches!(
        replica.append(TxId::new(2, 70), &app(70)),
        Err(EngineError::Order { .. })
    ));
    assert!(
        matches!(
            replica.append(TxId::new(1, 62), &app(70)),
            Err(EngineError::Order { .. })
        ),
        "views never go back"
    );
}

/// The write sets the replica holds, to replay them elsewhere (signature transactions are
/// re-read as they were written).
fn replica_clone_ws(e: &Engine) -> Vec<(u64, EntryBuilder)> {
    use vellum_core::entry::RawEntry;
    (1..=e.last_seqno())
        .map(|s| {
            let bytes = e.read(s).unwrap();
            let (raw, _) = RawEntry::parse(&bytes).unwrap();
            let mut maps = raw.public_domain().unwrap().maps;
            maps.extend(e.keys().secrets.open(&raw).unwrap());
            (
                s,
                EntryBuilder {
                    maps,
                    ..Default::default()
                },
            )
        })
        .collect()
}

#[test]
fn truncate_restart_and_receipts() {
    let svc = Service::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = svc.node_keys();
    let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    for s in 1..=40u64 {
        let txid = TxId::new(2, s);
        if s % 5 == 0 {
            e.append_signature(txid, 1).unwrap();
        } else {
            e.append(txid, &app(s)).unwrap();
        }
    }
    e.sync().unwrap();
    e.commit(20).unwrap();
    // Receipts: covered and committed.
    let r = e.receipt(TxId::new(2, 12), 20).unwrap();
    assert_eq!(r.signature, TxId::new(2, 15));
    r.receipt.verify(&svc.service.cert_pem, None).unwrap();
    let key = svc.service.signing_key.public_key();
    vellum_core::receipt::verify_cose_receipt(r.cose.as_ref().unwrap(), &key, None).unwrap();
    // Covered only by an uncommitted signature, or by none, or wrong view: no receipt.
    assert!(matches!(
        e.receipt(TxId::new(2, 22), 20),
        Err(EngineError::NotCovered(_))
    ));
    assert!(matches!(
        e.receipt(TxId::new(3, 12), 40),
        Err(EngineError::NotFound(_))
    ));
    // Roll back an uncommitted suffix (a view change) and continue in view 3.
    let root_at_27 = {
        let (mut copy, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
        copy.truncate(27).unwrap();
        copy.root().unwrap()
    };
    let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    assert_eq!(e.last_seqno(), 27, "the truncation was durable");
    assert_eq!(e.root().unwrap(), root_at_27);
    for s in 28..=33u64 {
        let txid = TxId::new(3, s);
        if s == 33 {
            e.append_signature(txid, 2).unwrap();
        } else {
            e.append(txid, &app(s + 100)).unwrap();
        }
    }
    e.sync().unwrap();
    e.commit(33).unwrap();
    assert_eq!(e.view_at(28), Some(3));
    let r = e.receipt(TxId::new(3, 30), 33).unwrap();
    r.receipt.verify(&svc.service.cert_pem, None).unwrap();
    // Restart: the tree is rebuilt from the files and gives the same receipts.
    drop(e);
    let (e2, rec) = Engine::open_dir(dir.path(), 2048, keys).unwrap();
    assert_eq!(rec.last_seqno, 33);
    assert_eq!(e2.receipt(TxId::new(3, 30), 33).unwrap().receipt, r.receipt);
    // The whole ledger audits clean, with the secret.
    let mut e2 = e2;
    e2.close_chunk().unwrap();
    e2.commit(33).unwrap();
    let opts = vellum_ledger::AuditOptions {
        ledger_secret: Some(svc.secret.clone()),
        ..Default::default()
    };
    let report = vellum_ledger::audit_dir(dir.path(), &opts, |_| {});
    // No genesis here, so the auditor cannot know the signing node: it must say exactly that.
    let err = report.unwrap_err();
    assert!(
        matches!(err.error, vellum_ledger::audit::AuditError::UnknownNode(_)),
        "{err}"
    );
    assert_eq!(err.seqno, Some(5));
}

/// With the tree trimmed below the commit point, every committed transaction still gets the
/// same receipt as from a whole tree (the trimmed blocks' leaves are read back from the
/// files), and appends, signatures and a restart carry on.
#[test]
fn receipts_from_a_trimmed_tree() {
    let svc = Service::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = svc.node_keys();
    let (mut e, _) = Engine::open_dir(dir.path(), 4096, keys.clone()).unwrap();
    e.set_untrimmed(16);
    write(&mut e, 1..=300, 2, 0);
    e.commit(300).unwrap();
    assert_eq!(
        e.tree_trimmed(),
        272,
        "trimmed to a block boundary 16 below the commit"
    );
    let (whole, _) = Engine::open_dir(dir.path(), 4096, keys.clone()).unwrap();
    for s in 1..300u64 {
        let r = e.receipt(TxId::new(2, s), 300).unwrap();
        r.receipt.verify(&svc.service.cert_pem, None).unwrap();
        assert_eq!(
            r.receipt,
            whole.receipt(TxId::new(2, s), 300).unwrap().receipt,
            "{s}"
        );
    }
    drop(whole);
    // More writes and signatures after the trim: the replica check of the next signature
    // (serialized tree, root) still agrees.
    write(&mut e, 301..=420, 2, 0);
    e.commit(420).unwrap();
    let r = e.receipt(TxId::new(2, 5), 420).unwrap();
    r.receipt.verify(&svc.service.cert_pem, None).unwrap();
    let r = e.receipt(TxId::new(2, 415), 420).unwrap();
    r.receipt.verify(&svc.service.cert_pem, None).unwrap();
    // A rollback below the trim is refused rather than corrupting the tree.
    assert!(e.truncate(100).is_err());
}

/// Commits trim the tree in steps of a quarter of the untrimmed window, not at every commit:
/// a trim moves every node the tree holds at its low heights, so trimming at each commit cost
/// the node tens of microseconds per durable append.
#[test]
fn commits_trim_in_quarter_window_steps() {
    let svc = Service::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut e, _) = Engine::open_dir(dir.path(), 1 << 20, svc.node_keys()).unwrap();
    e.set_untrimmed(256);
    write(&mut e, 1..=700, 2, 0);
    let mut trims = Vec::new();
    for c in (300..=700).step_by(10) {
        e.commit(c).unwrap();
        if trims.last() != Some(&e.tree_trimmed()) {
            trims.push(e.tree_trimmed());
        }
    }
    // 256 behind the commit point, a quarter window (64) at a time, on 16-leaf blocks.
    assert_eq!(trims, vec![0, 64, 128, 192, 256, 320, 384]);
    let r = e.receipt(TxId::new(2, 3), 700).unwrap();
    r.receipt.verify(&svc.service.cert_pem, None).unwrap();
}

/// Appends `seqnos` in `view`, a signature at every tenth and `app(seqno + shift)` otherwise,
/// then syncs.
fn write(e: &mut Engine, seqnos: std::ops::RangeInclusive<u64>, view: u64, shift: u64) {
    for s in seqnos {
        let txid = TxId::new(view, s);
        if s % 10 == 0 {
            e.append_signature(txid, 1).unwrap();
        } else {
            e.append(txid, &app(s + shift)).unwrap();
        }
    }
    e.sync().unwrap();
}

/// Every committed transaction's receipt, the root, the views and the signatures.
fn state(e: &Engine, committed: u64) -> Vec<String> {
    let mut out = vec![
        format!("{:?} {:?}", e.root().unwrap(), e.last_txid()),
        format!("{:?}", e.signatures()),
    ];
    for s in 1..=e.last_seqno() {
        out.push(format!("{s} {:?}", e.view_at(s)));
        if s < committed {
            let r = e.receipt(TxId::new(e.view_at(s).unwrap(), s), committed);
            out.push(format!("{:?}", r.map(|r| r.receipt)));
        }
    }
    out
}

/// A restart from a checkpoint gives the engine a full rescan gives: same root, views,
/// signatures and receipts, with committed chunks after the checkpoint and an uncommitted tail
/// read normally; appends and signatures carry on. A checkpoint written in the background
/// appears once enough is committed.
#[test]
fn restart_from_a_checkpoint() {
    let svc = Service::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = svc.node_keys();
    let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    e.set_untrimmed(16);
    e.set_checkpoint_every(150);
    write(&mut e, 1..=120, 2, 0);
    e.commit(120).unwrap();
    e.finish_checkpoint();
    assert!(Checkpoint::read(dir.path(), &svc.secret).unwrap().is_none());
    write(&mut e, 121..=300, 3, 0);
    e.commit(300).unwrap();
    e.finish_checkpoint();
    let cp = Checkpoint::read(dir.path(), &svc.secret).unwrap().unwrap();
    assert_eq!(cp.seqno, e.committed(), "the background checkpoint");
    write(&mut e, 301..=420, 3, 0);
    e.commit(400).unwrap();
    e.finish_checkpoint();
    assert_eq!(
        Checkpoint::read(dir.path(), &svc.secret)
            .unwrap()
            .unwrap()
            .seqno,
        cp.seqno,
        "fewer than 150 committed since"
    );
    write(&mut e, 421..=425, 4, 0);
    let expected = state(&e, 400);
    drop(e);

    let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    assert_eq!(e.opened_from(), Some(cp.seqno));
    assert_eq!(state(&e, 400), expected);
    write(&mut e, 426..=440, 4, 0);
    e.commit(440).unwrap();
    let at = e.write_checkpoint().unwrap().unwrap();
    assert_eq!(at, e.committed());
    let expected = state(&e, 440);
    drop(e);
    let (e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    assert_eq!(e.opened_from(), Some(at));
    assert_eq!(state(&e, 440), expected);
    drop(e);
    Checkpoint::remove(dir.path()).unwrap();
    let (e, _) = Engine::open_dir(dir.path(), 2048, keys).unwrap();
    assert_eq!(e.opened_from(), None);
    assert_eq!(state(&e, 440), expected);
}

/// A checkpoint that does not describe the ledger beside it is ignored: one from another
/// ledger with the same secret (given that ledger's chunk names and sizes, so only the tree
/// differs), one sealed with another secret, and one whose chunks are gone.
#[test]
fn a_foreign_or_stale_checkpoint_is_ignored() {
    let svc = Service::new();
    let keys = svc.node_keys();
    let ledger = |tweak: u64| {
        let dir = tempfile::tempdir().unwrap();
        let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
        write(&mut e, 1..=200, 2, 1000 * tweak);
        e.commit(200).unwrap();
        e.write_checkpoint().unwrap().unwrap();
        let expected = state(&e, 200);
        (dir, expected)
    };
    let (a, _) = ledger(1);
    let (b, b_state) = ledger(2);
    let a_cp = Checkpoint::read(a.path(), &svc.secret).unwrap().unwrap();
    let b_cp = Checkpoint::read(b.path(), &svc.secret).unwrap().unwrap();
    assert_eq!(
        a_cp.chunks.iter().map(|c| &c.name).collect::<Vec<_>>(),
        b_cp.chunks.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let refused = |cp: Vec<u8>| {
        Checkpoint::write(b.path(), &cp).unwrap();
        let (e, _) = Engine::open_dir(b.path(), 2048, keys.clone()).unwrap();
        assert_eq!(e.opened_from(), None);
        assert_eq!(state(&e, 200), b_state);
    };
    let foreign = Checkpoint {
        chunks: b_cp.chunks.clone(),
        ..a_cp.clone()
    };
    refused(foreign.encode(&svc.secret));
    refused(b_cp.encode(&LedgerSecret::from_bytes([9; 32])));
    // b's own checkpoint works; without its last chunk, it is ignored.
    Checkpoint::write(b.path(), &b_cp.encode(&svc.secret)).unwrap();
    let (e, _) = Engine::open_dir(b.path(), 2048, keys.clone()).unwrap();
    assert_eq!(e.opened_from(), Some(200));
    assert_eq!(state(&e, 200), b_state);
    drop(e);
    std::fs::remove_file(b.path().join("ledger_191-200.committed")).unwrap();
    let (e, _) = Engine::open_dir(b.path(), 2048, keys).unwrap();
    assert_eq!(e.opened_from(), None);
    assert_eq!(e.last_seqno(), 190);
}

/// A checkpoint does not hide damage: a covered chunk whose positions table changed (same
/// length) is not trusted, and reading every entry reports the damage; a covered entry whose
/// bytes changed is refused when read (its GCM tag), never served.
#[test]
fn a_checkpoint_does_not_hide_damage() {
    let svc = Service::new();
    let keys = svc.node_keys();
    let dir = tempfile::tempdir().unwrap();
    let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    write(&mut e, 1..=200, 2, 0);
    e.commit(200).unwrap();
    let cp = e.write_checkpoint().unwrap().unwrap();
    drop(e);
    let covered = Checkpoint::read(dir.path(), &svc.secret).unwrap().unwrap();
    let chunk = dir.path().join(&covered.chunks[1].name);
    let original = std::fs::read(&chunk).unwrap();
    let table_at = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let second_entry = u32::from_le_bytes(original[table_at + 4..table_at + 8].try_into().unwrap());

    // An entry's last byte (inside its GCM tag): the start trusts the chunk, the read refuses.
    let mut bytes = original.clone();
    let third_entry = u32::from_le_bytes(bytes[table_at + 8..table_at + 12].try_into().unwrap());
    bytes[third_entry as usize - 1] ^= 0x01;
    std::fs::write(&chunk, &bytes).unwrap();
    let (e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    assert_eq!(e.opened_from(), Some(cp));
    let first_seqno = vellum_ledger::chunk::ChunkName::parse(&covered.chunks[1].name)
        .unwrap()
        .start;
    let damaged = first_seqno + 1;
    match e.write_set(damaged) {
        Err(vellum_ledger::engine::EngineError::Entry { seqno, .. }) => assert_eq!(seqno, damaged),
        other => panic!("a damaged entry was read as {other:?}"),
    }
    assert!(e.write_set(first_seqno).is_ok());
    drop(e);

    // The positions table (an entry's position moved by one, the length unchanged): the
    // checkpoint is not trusted, and the full read names the damage.
    let mut bytes = original.clone();
    bytes[table_at + 4..table_at + 8].copy_from_slice(&(second_entry + 1).to_le_bytes());
    std::fs::write(&chunk, &bytes).unwrap();
    let err = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap_err();
    assert!(
        err.to_string().contains(&covered.chunks[1].name),
        "the error does not name the chunk: {err}"
    );
    // Restored, the checkpoint is trusted again.
    std::fs::write(&chunk, &original).unwrap();
    let (e, _) = Engine::open_dir(dir.path(), 2048, keys).unwrap();
    assert_eq!(e.opened_from(), Some(cp));
}

/// A rekey at seqno 20: transactions from 21 on are sealed under the new secret (their bytes
/// open under it and not the old one), write sets and receipts read back across the switch, a
/// restart with both secrets recovers every transaction, and a truncation of the rekey forgets
/// the new secret.
#[test]
fn a_rekey_switches_the_secret_from_the_next_transaction() {
    use vellum_core::entry::RawEntry;
    let svc = Service::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = svc.node_keys();
    let (mut e, _) = Engine::open_dir(dir.path(), 1 << 20, keys.clone()).unwrap();
    let new_secret = LedgerSecret::from_bytes([8; 32]);
    let run = |e: &mut Engine, range: std::ops::RangeInclusive<u64>| {
        for s in range {
            let txid = TxId::new(2, s);
            if s % 5 == 0 {
                e.append_signature(txid, 1).unwrap();
            } else {
                e.append(txid, &app(s)).unwrap();
            }
        }
    };
    run(&mut e, 1..=20);
    // Not before a transaction already written.
    assert!(e.add_secret(20, new_secret.clone()).is_err());
    e.add_secret(21, new_secret.clone()).unwrap();
    run(&mut e, 21..=40);
    e.sync().unwrap();
    e.commit(40).unwrap();
    let opens = |s: u64, secret: &LedgerSecret| {
        let bytes = e.read(s).unwrap();
        let (raw, _) = RawEntry::parse(&bytes).unwrap();
        secret.open(&raw).is_ok()
    };
    assert!(opens(19, &svc.secret) && !opens(19, &new_secret));
    assert!(opens(21, &new_secret) && !opens(21, &svc.secret));
    for s in [12, 21, 33] {
        let (txid, ws) = e.write_set(s).unwrap();
        assert_eq!(txid.seqno, s);
        assert_eq!(ws.maps, app(s).maps, "seqno {s}");
        let r = e.receipt(TxId::new(2, s), 40).unwrap();
        r.receipt.verify(&svc.service.cert_pem, None).unwrap();
    }
    // A restart with both secrets recovers all 40.
    let mut both = keys.clone();
    both.secrets.push(21, new_secret.clone()).unwrap();
    drop(e);
    let (mut e, rec) = Engine::open_dir(dir.path(), 1 << 20, both).unwrap();
    assert_eq!(rec.last_seqno, 40);
    assert_eq!(e.write_set(33).unwrap().1.maps, app(33).maps);
    // Truncated back to 20 (the rekey transaction kept), the new secret still applies from
    // 21; truncated to 19 (the rekey transaction gone), it is forgotten, and what is written
    // next is sealed under the old secret again.
    e.truncate(20).unwrap();
    e.append(TxId::new(3, 21), &app(21)).unwrap();
    let bytes = e.read(21).unwrap();
    let (raw, _) = RawEntry::parse(&bytes).unwrap();
    assert!(new_secret.open(&raw).is_ok());
    e.truncate(19).unwrap();
    e.append(TxId::new(3, 20), &app(20)).unwrap();
    e.append(TxId::new(3, 21), &app(21)).unwrap();
    let bytes = e.read(21).unwrap();
    let (raw, _) = RawEntry::parse(&bytes).unwrap();
    assert!(svc.secret.open(&raw).is_ok());
}

/// A node that keeps its older chunks in an archive drops them from disk: reads of their
/// entries and receipts that need them then fail with `Absent` until a fetched copy is
/// attached; only a copy that matches what the node recorded is taken (a tampered one, or
/// another chunk's bytes, changes nothing); a restart finds the dropped chunks from the
/// checkpoint, and a start without one (or not expecting an archive) refuses the gap.
#[test]
fn dropped_chunks_are_fetched_back_and_checked() {
    use vellum_ledger::store::StoreError;
    let svc = Service::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = svc.node_keys();
    let (mut e, _) = Engine::open_dir(dir.path(), 2048, keys.clone()).unwrap();
    e.set_untrimmed(16);
    write(&mut e, 1..=300, 2, 0);
    e.commit(300).unwrap();
    let chunks = e.committed_chunk_files();
    assert!(chunks.len() >= 4, "{chunks:?}");
    assert!(chunks.iter().all(|c| c.on_disk));
    let victim = chunks[1].clone();
    let seqno = victim.start + 1;
    let txid = TxId::new(2, seqno);
    let entry = e.read(seqno).unwrap();
    let expected = state(&e, 300);
    // Not covered by a checkpoint yet: refused.
    assert!(e.drop_chunk(&victim.name).is_err());
    let at = e.write_checkpoint().unwrap().unwrap();
    assert_eq!(e.checkpoint_seqno(), at);
    // Neither the first chunk nor the checkpoint's last one.
    assert!(e.drop_chunk(&chunks[0].name).is_err());
    let last = chunks.iter().find(|c| c.end == at).unwrap();
    assert!(e.drop_chunk(&last.name).is_err());
    let bytes = std::fs::read(dir.path().join(&victim.name)).unwrap();
    let other = std::fs::read(dir.path().join(&chunks[2].name)).unwrap();
    assert_eq!(e.drop_chunk(&victim.name).unwrap(), bytes.len() as u64);
    assert!(!dir.path().join(&victim.name).exists());
    let absent = |r: Result<Vec<u8>, EngineError>| {
        matches!(r, Err(EngineError::Store(StoreError::Absent { ref chunk, seqno: s }))
            if *chunk == victim.name && s == seqno)
    };
    assert!(absent(e.read(seqno)));
    assert!(matches!(
        e.receipt(txid, 300),
        Err(EngineError::Store(StoreError::Absent { .. }))
    ));
    // Wrong copies are refused and change nothing.
    let mut tampered = bytes.clone();
    tampered[40] ^= 1;
    for wrong in [&tampered, &other, &bytes[..bytes.len() - 1].to_vec()] {
        assert!(matches!(
            e.attach_chunk(&victim.name, wrong),
            Err(EngineError::Store(StoreError::Corrupt { .. }))
        ));
        assert!(absent(e.read(seqno)));
    }
    e.attach_chunk(&victim.name, &bytes).unwrap();
    assert_eq!(e.read(seqno).unwrap(), entry);
    assert_eq!(state(&e, 300), expected);

    // Dropped again, then a restart: found from the checkpoint, absent until attached.
    e.drop_chunk(&victim.name).unwrap();
    drop(e);
    assert!(
        Engine::open_dir(dir.path(), 2048, keys.clone()).is_err(),
        "a node without an archive refuses the gap"
    );
    let (mut e, _) = Engine::open_dir_archived(dir.path(), 2048, keys.clone(), true).unwrap();
    assert_eq!(e.opened_from(), Some(at));
    assert!(absent(e.read(seqno)));
    let listed = e.committed_chunk_files();
    assert!(listed.iter().any(|c| c.name == victim.name && !c.on_disk));
    // A checkpoint taken now still covers the absent chunk as recorded.
    write(&mut e, 301..=330, 2, 0);
    e.commit(330).unwrap();
    let at2 = e.write_checkpoint().unwrap().unwrap();
    assert!(at2 > at);
    assert!(matches!(
        e.attach_chunk(&victim.name, &tampered),
        Err(EngineError::Store(StoreError::Corrupt { .. }))
    ));
    e.attach_chunk(&victim.name, &bytes).unwrap();
    assert_eq!(e.read(seqno).unwrap(), entry);
    let r = e.receipt(txid, 330).unwrap();
    r.receipt.verify(&svc.service.cert_pem, None).unwrap();
    e.drop_chunk(&victim.name).unwrap();
    drop(e);
    let (mut e, _) = Engine::open_dir_archived(dir.path(), 2048, keys.clone(), true).unwrap();
    assert_eq!(e.opened_from(), Some(at2));
    assert!(absent(e.read(seqno)));
    e.attach_chunk(&victim.name, &bytes).unwrap();
    assert_eq!(e.receipt(txid, 330).unwrap().receipt, r.receipt);
    drop(e);
    // Without its checkpoint, a ledger with a gap is refused, not opened short.
    e_drop_and_remove_checkpoint(dir.path(), keys, &victim.name);
}

fn e_drop_and_remove_checkpoint(dir: &std::path::Path, keys: NodeKeys, name: &str) {
    let (mut e, _) = Engine::open_dir_archived(dir, 2048, keys.clone(), true).unwrap();
    e.drop_chunk(name).unwrap();
    drop(e);
    Checkpoint::remove(dir).unwrap();
    assert!(Engine::open_dir_archived(dir, 2048, keys, true).is_err());
}

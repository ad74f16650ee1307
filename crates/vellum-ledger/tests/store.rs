//! The node's ledger files: round trips through chunk rotation and restarts, torn tails,
//! truncation, corruption reporting and I/O faults, on the real filesystem.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

#[path = "../benches/support/group_commit.rs"]
#[allow(dead_code)]
mod group_commit;

use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites, SINGLETON_KEY};
use vellum_core::{TxId, tables};
use vellum_ledger::chunk::{Chunk, ChunkName, list_chunks};
use vellum_ledger::store::{LedgerFiles, StoreError};

fn entry(seqno: u64, sig: bool, size: usize) -> Vec<u8> {
    let mut b = EntryBuilder::default().map(MapWrites::with_writes(
        "vellum.entries",
        vec![(b"c".to_vec(), vec![b'x'; size])],
    ));
    if sig {
        b = b.map(MapWrites::with_writes(
            tables::SIGNATURES,
            vec![(SINGLETON_KEY.to_vec(), b"{}".to_vec())],
        ));
    }
    b.encode(TxId::new(2, seqno), &LedgerSecret::from_bytes([1; 32]))
        .bytes
}

fn write_n(store: &mut LedgerFiles, from: u64, to: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in from..=to {
        let sig = s % 5 == 0;
        let e = entry(s, sig, (s as usize * 37) % 300);
        store.append(s, &e, sig).unwrap();
        out.push(e);
    }
    out
}

#[test]
fn round_trip_with_chunks_commit_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, rec) = LedgerFiles::open(dir.path(), 2000, None).unwrap();
    assert_eq!(rec.last_seqno, 0);
    let written = write_n(&mut store, 1, 103);
    store.sync().unwrap();
    store.commit(60).unwrap();
    drop(store);

    let chunks = list_chunks(dir.path(), false).unwrap();
    assert!(chunks.len() >= 4, "{chunks:?}");
    for (i, (name, path)) in chunks.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let c = Chunk::parse(&bytes, Some(name)).unwrap();
        if let Some(end) = name.end {
            assert_eq!(end % 5, 0, "closed chunks end on a signature: {name:?}");
            assert!(c.closed);
            assert_eq!(name.committed, end <= 60, "{name:?}");
        } else {
            assert_eq!(i + 1, chunks.len(), "only the last chunk is open");
        }
    }

    let (store, rec) = LedgerFiles::open(dir.path(), 2000, None).unwrap();
    assert_eq!(rec.last_seqno, 103);
    assert_eq!(rec.dropped_from, None);
    assert_eq!(store.last_signature(), 100);
    for (i, e) in written.iter().enumerate() {
        assert_eq!(&store.read(i as u64 + 1).unwrap(), e);
    }
    assert!(matches!(store.read(104), Err(StoreError::NotFound(104))));
    assert!(matches!(store.read(0), Err(StoreError::NotFound(0))));
}

#[test]
fn append_out_of_order_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LedgerFiles::open(dir.path(), 2000, None).unwrap();
    assert!(matches!(
        store.append(2, &entry(2, false, 1), false),
        Err(StoreError::Usage(_))
    ));
    store.append(1, &entry(1, false, 1), false).unwrap();
    assert!(store.poisoned().is_none(), "misuse does not poison");
}

#[test]
fn torn_tail_is_cut_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    let written = write_n(&mut store, 1, 12);
    store.sync().unwrap();
    drop(store);
    // A crash mid-write: half of entry 13 reached the open chunk.
    let (_, open) = list_chunks(dir.path(), false).unwrap().pop().unwrap();
    let half = entry(13, false, 200);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&open)
        .unwrap();
    std::io::Write::write_all(&mut f, &half[..half.len() / 2]).unwrap();
    drop(f);

    let (mut store, rec) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    assert_eq!(rec.last_seqno, 12);
    assert_eq!(rec.dropped_from, Some(13));
    assert_eq!(rec.dropped_bytes, (half.len() / 2) as u64);
    assert_eq!(store.read(12).unwrap(), written[11]);
    let e13 = entry(13, false, 5);
    store.append(13, &e13, false).unwrap();
    store.sync().unwrap();
    drop(store);
    let (store, rec) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    assert_eq!((rec.last_seqno, rec.dropped_from), (13, None));
    assert_eq!(store.read(13).unwrap(), e13);
}

#[test]
fn truncate_across_chunks_then_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LedgerFiles::open(dir.path(), 1500, None).unwrap();
    let written = write_n(&mut store, 1, 60);
    store.sync().unwrap();
    store.commit(10).unwrap();
    assert!(
        matches!(store.truncate(5), Err(StoreError::Usage(_))),
        "committed entries stay"
    );
    store.truncate(23).unwrap();
    assert_eq!(store.last_seqno(), 23);
    let more = write_n(&mut store, 24, 41);
    store.sync().unwrap();
    drop(store);
    let (store, rec) = LedgerFiles::open(dir.path(), 1500, None).unwrap();
    assert_eq!(rec.last_seqno, 41);
    for s in 1..=23u64 {
        assert_eq!(store.read(s).unwrap(), written[s as usize - 1]);
    }
    for s in 24..=41u64 {
        assert_eq!(store.read(s).unwrap(), more[s as usize - 24]);
    }
    // Truncating everything uncommitted down to the commit point also works.
    let (mut store, _) = LedgerFiles::open(dir.path(), 1500, None).unwrap();
    store.truncate(10).unwrap();
    drop(store);
    let (_, rec) = LedgerFiles::open(dir.path(), 1500, None).unwrap();
    assert_eq!(rec.last_seqno, 10);
}

#[test]
fn corruption_in_a_closed_chunk_is_reported_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let secret = LedgerSecret::from_bytes([1; 32]);
    let (mut store, _) = LedgerFiles::open(dir.path(), 1000, Some(&secret.clone().into())).unwrap();
    write_n(&mut store, 1, 30);
    store.sync().unwrap();
    store.commit(30).unwrap();
    drop(store);
    let (name, path) = list_chunks(dir.path(), true).unwrap().remove(0);
    let mut b = std::fs::read(&path).unwrap();
    let before = b.clone();
    // A byte of the GCM tag: framing is intact, only authentication can tell.
    b[20] ^= 0xff;
    std::fs::write(&path, &b).unwrap();
    let err = LedgerFiles::open(dir.path(), 1000, Some(&secret.clone().into())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    // Framing damage is reported even without the secret.
    let mut framing = b.clone();
    framing[9] ^= 0xff; // inside entry 1's size field
    std::fs::write(&path, &framing).unwrap();
    assert!(matches!(
        LedgerFiles::open(dir.path(), 1000, None),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::write(&path, &b).unwrap();
    // Nothing was changed on disk.
    assert_eq!(std::fs::read(&path).unwrap(), b);
    assert_ne!(before, b);
    assert!(
        ChunkName::parse(path.file_name().unwrap().to_str().unwrap()).is_some_and(|n| n == name)
    );
}

/// A real I/O fault: a 64 KiB tmpfs runs out of space. Needs root (mount); skipped otherwise
/// unless VELLUM_REQUIRE_FAULT_TESTS=1.
#[test]
fn io_error_poisons_writes_but_reads_continue() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("VELLUM_REQUIRE_FAULT_TESTS").map_or(true, |v| v != "1"),
            "cannot mount a tmpfs for the fault test"
        );
        eprintln!("SKIPPED: cannot mount tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let (mut store, _) = LedgerFiles::open(&mnt, 1 << 20, None).unwrap();
    let mut seqno = 0u64;
    let mut durable = Vec::new();
    let err = loop {
        seqno += 1;
        let e = entry(seqno, false, 4000);
        if let Err(e) = store.append(seqno, &e, false).and_then(|_| store.sync()) {
            break e;
        }
        durable.push(e);
        assert!(seqno < 1000, "tmpfs never filled up");
    };
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(store.poisoned().is_some());
    // No further write is accepted, even a small one.
    let next = store.last_seqno() + 1;
    assert!(matches!(
        store.append(next, &entry(next, false, 1), false),
        Err(StoreError::Poisoned(_))
    ));
    assert!(matches!(store.sync(), Err(StoreError::Poisoned(_))));
    // Every entry acknowledged before the fault is still readable.
    for (i, e) in durable.iter().enumerate() {
        assert_eq!(&store.read(i as u64 + 1).unwrap(), e);
    }
}

#[test]
fn group_commit_batches_syncs_and_acknowledges_only_durable_entries() {
    use group_commit::GroupCommit;
    use std::sync::mpsc::channel;

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = LedgerFiles::open(dir.path(), 1 << 16, None).unwrap();
    let gc = GroupCommit::start(store).unwrap();
    let (tx, rx) = channel();
    let n = 5_000u64;
    let mut written = Vec::new();
    for s in 1..=n {
        let sig = s % 50 == 0;
        let e = entry(s, sig, 64);
        written.push(e.clone());
        let tx = tx.clone();
        gc.append(
            vec![(s, e, sig)],
            Box::new(move |r| tx.send((s, r)).unwrap()),
        );
    }
    let mut acked = 0;
    for _ in 0..n {
        let (s, r) = rx.recv().unwrap();
        let durable = r.unwrap();
        assert!(
            durable >= s,
            "entry {s} acknowledged as durable only up to {durable}"
        );
        acked += 1;
    }
    assert_eq!(acked, n);
    let stats = gc.stats();
    assert_eq!(stats.entries, n);
    assert!(
        stats.syncs < n / 4,
        "group commit should share syncs: {stats:?}"
    );
    // Commit and truncation go through the same queue, in order.
    let (ctx, crx) = channel();
    gc.commit(1000, Box::new(move |r| ctx.send(r).unwrap()));
    crx.recv().unwrap().unwrap();
    let (ttx, trx) = channel();
    gc.truncate(4990, Box::new(move |r| ttx.send(r).unwrap()));
    trx.recv().unwrap().unwrap();
    assert_eq!(gc.last_seqno(), 4990);
    assert_eq!(gc.read(4990).unwrap(), written[4989]);
    gc.stop();
    let (_, rec) = LedgerFiles::open(dir.path(), 1 << 16, None).unwrap();
    assert_eq!(rec.last_seqno, 4990);
    assert!(
        list_chunks(dir.path(), true)
            .unwrap()
            .iter()
            .all(|(n, _)| n.end.unwrap() <= 1000)
    );
}

/// Appends are buffered until a sync (or the buffer fills): reads and scans see buffered
/// entries, a sync puts them in the file, and entries larger than the buffer go through too.
#[test]
fn buffered_appends_are_read_back_before_and_after_sync() {
    use vellum_ledger::store::WRITE_BUFFER;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LedgerFiles::open(dir.path(), 1 << 30, None).unwrap();
    let mut written = write_n(&mut store, 1, 40);
    let file_len = |d: &std::path::Path| -> u64 {
        list_chunks(d, false)
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = file_len(dir.path());
    for (i, e) in written.iter().enumerate() {
        assert_eq!(
            &store.read(i as u64 + 1).unwrap(),
            e,
            "buffered entry {}",
            i + 1
        );
    }
    // An entry larger than the buffer forces a write; the ones after it are buffered again.
    let big = entry(41, false, WRITE_BUFFER + 10);
    store.append(41, &big, false).unwrap();
    written.push(big);
    written.extend(write_n(&mut store, 42, 45));
    assert!(file_len(dir.path()) > before + WRITE_BUFFER as u64);
    let mut scanned = Vec::new();
    store
        .scan::<StoreError>(1, |s, b| {
            scanned.push((s, b.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(scanned.len(), 45);
    for (s, b) in &scanned {
        assert_eq!(b, &written[*s as usize - 1], "scan of {s}");
    }
    store.sync().unwrap();
    for (i, e) in written.iter().enumerate() {
        assert_eq!(&store.read(i as u64 + 1).unwrap(), e);
    }
    // Truncation with buffered entries, then reopen: exactly the kept prefix.
    written.extend(write_n(&mut store, 46, 50));
    store.truncate(47).unwrap();
    drop(store);
    let (store, rec) = LedgerFiles::open(dir.path(), 1 << 30, None).unwrap();
    assert_eq!(rec.last_seqno, 47);
    assert_eq!(rec.dropped_from, None);
    for s in 1..=47u64 {
        assert_eq!(store.read(s).unwrap(), written[s as usize - 1]);
    }
}

/// The open chunk is kept written with zeros ahead of its entries (syncs then overwrite
/// blocks instead of growing the file). After a crash those zeros are not a torn tail:
/// recovery drops nothing, readers stop at them, appends overwrite them, and a closed chunk
/// or a cleanly stopped store ends exactly at its data.
#[test]
fn zeros_written_ahead_are_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let chunk_size = 64 * 1024;
    let (mut store, _) = LedgerFiles::open(dir.path(), chunk_size, None).unwrap();
    let mut written = write_n(&mut store, 1, 12);
    store.sync().unwrap();
    let data_len = 8 + written.iter().map(Vec::len).sum::<usize>() as u64;
    let (name, open) = list_chunks(dir.path(), false).unwrap().pop().unwrap();
    let on_disk = std::fs::read(&open).unwrap();
    assert!(
        on_disk.len() as u64 > data_len,
        "zeros are written ahead at a sync"
    );
    assert!(on_disk[data_len as usize..].iter().all(|b| *b == 0));
    let c = Chunk::parse(&on_disk, Some(&name)).unwrap();
    assert_eq!(c.entries.len(), 12, "a reader stops at the zeros");
    // A crash: the store is never dropped, so the zeros stay.
    std::mem::forget(store);

    let (mut store, rec) = LedgerFiles::open(dir.path(), chunk_size, None).unwrap();
    assert_eq!(
        (rec.last_seqno, rec.dropped_from, rec.dropped_bytes),
        (12, None, 0)
    );
    assert_eq!(
        std::fs::read(&open).unwrap().len(),
        on_disk.len(),
        "the zeros stay"
    );
    written.extend(write_n(&mut store, 13, 20));
    store.sync().unwrap();
    std::mem::forget(store);
    let (mut store, rec) = LedgerFiles::open(dir.path(), chunk_size, None).unwrap();
    assert_eq!((rec.last_seqno, rec.dropped_from), (20, None));
    for (i, e) in written.iter().enumerate() {
        assert_eq!(&store.read(i as u64 + 1).unwrap(), e);
    }
    let mut seen = 0;
    store
        .scan::<StoreError>(1, |s, b| {
            assert_eq!(b, written[s as usize - 1].as_slice());
            seen += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 20);

    // Enough to close the chunk: it ends with its positions table, no zeros.
    written.extend(write_n(&mut store, 21, 600));
    store.sync().unwrap();
    drop(store);
    let chunks = list_chunks(dir.path(), false).unwrap();
    assert!(chunks.len() >= 2, "{chunks:?}");
    for (name, path) in &chunks {
        let bytes = std::fs::read(path).unwrap();
        let c = Chunk::parse(&bytes, Some(name)).unwrap();
        let entries: u64 = c.entries.iter().map(|e| e.entry.bytes.len() as u64).sum();
        let table = if c.closed {
            4 * c.entries.len() as u64
        } else {
            0
        };
        assert_eq!(
            bytes.len() as u64,
            8 + entries + table,
            "{name:?}: exact length"
        );
    }
    let (store, rec) = LedgerFiles::open(dir.path(), chunk_size, None).unwrap();
    assert_eq!((rec.last_seqno, rec.dropped_from), (600, None));
    for (i, e) in written.iter().enumerate() {
        assert_eq!(&store.read(i as u64 + 1).unwrap(), e);
    }
}

/// A torn entry in front of the zeros written ahead is still a torn tail: cut and reported.
/// Its missing bytes read as zeros, so only its GCM tag tells it from a whole entry: the node
/// always recovers with the ledger secret.
#[test]
fn a_torn_entry_before_the_zeros_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    let written = write_n(&mut store, 1, 7);
    store.sync().unwrap();
    let data_len = 8 + written.iter().map(Vec::len).sum::<usize>() as u64;
    std::mem::forget(store);
    let (_, open) = list_chunks(dir.path(), false).unwrap().pop().unwrap();
    let len = std::fs::metadata(&open).unwrap().len();
    assert!(len > data_len + 100);
    let half = entry(8, false, 200);
    let f = std::fs::OpenOptions::new().write(true).open(&open).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &half[..half.len() / 2], data_len).unwrap();
    drop(f);

    let secret = LedgerSecret::from_bytes([1; 32]);
    let (store, rec) =
        LedgerFiles::open(dir.path(), 1 << 20, Some(&secret.clone().into())).unwrap();
    assert_eq!((rec.last_seqno, rec.dropped_from), (7, Some(8)));
    assert_eq!(rec.dropped_bytes, len - data_len);
    assert_eq!(store.read(7).unwrap(), written[6]);
}

/// A Raft conflict after a crash: the open chunk still holds its zeros when its uncommitted
/// suffix is cut, and what is written after the cut reads back after the next crash.
#[test]
fn truncation_after_a_crash_with_zeros_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    let mut written = write_n(&mut store, 1, 12);
    store.sync().unwrap();
    std::mem::forget(store);
    let (mut store, rec) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    assert_eq!((rec.last_seqno, rec.dropped_from), (12, None));
    store.truncate(6).unwrap();
    written.truncate(6);
    for s in 7..=15u64 {
        let e = entry(s, s == 15, 50 + s as usize);
        store.append(s, &e, s == 15).unwrap();
        written.push(e);
    }
    store.sync().unwrap();
    std::mem::forget(store);
    let (store, rec) = LedgerFiles::open(dir.path(), 1 << 20, None).unwrap();
    assert_eq!((rec.last_seqno, rec.dropped_from), (15, None));
    for (i, e) in written.iter().enumerate() {
        assert_eq!(&store.read(i as u64 + 1).unwrap(), e);
    }
}

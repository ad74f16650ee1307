//! The redb index: reads by id, latest-in-collection and ranges return exactly what was
//! written; it survives a reopen and is rebuilt identically from the ledger files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites, RawEntry};
use vellum_ledger::index::{ENTRIES_TABLE, Index, IndexError, IndexedTx};
use vellum_ledger::store::LedgerFiles;

const N: u64 = 20_000;

fn collection(s: u64) -> Option<String> {
    // Every 10th transaction is not an application entry (like governance or signatures).
    (!s.is_multiple_of(10)).then(|| format!("c{}", s % 7))
}

#[test]
fn index_reads_reopen_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let secret = LedgerSecret::from_bytes([5; 32]);
    let (mut files, _) = LedgerFiles::open(&dir.path().join("ledger"), 1 << 20, None).unwrap();
    let index = Index::open(&dir.path().join("index/index.redb")).unwrap();
    let mut batch = Vec::new();
    for s in 1..=N {
        let view = 2 + s / 5000;
        let mut b = EntryBuilder::default();
        if let Some(c) = collection(s) {
            b = b.map(MapWrites::with_writes(
                ENTRIES_TABLE,
                vec![(c.into_bytes(), format!("entry {s}").into_bytes())],
            ));
        } else {
            b = b.map(MapWrites::with_writes(
                "public:ccf.gov.x",
                vec![(b"k".to_vec(), b"v".to_vec())],
            ));
        }
        let e = b.encode(TxId::new(view, s), &secret);
        files.append(s, &e.bytes, false).unwrap();
        let (raw, _) = RawEntry::parse(&e.bytes).unwrap();
        batch.push(IndexedTx::from_entry(&raw, &secret).unwrap());
        if batch.len() == 1000 {
            index.apply(&batch).unwrap();
            batch.clear();
        }
    }
    files.sync().unwrap();
    index.apply(&batch).unwrap();

    let check = |index: &Index| {
        assert_eq!(index.last_seqno().unwrap(), N);
        assert_eq!(
            index.collections().unwrap(),
            (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>()
        );
        for s in [1, 9, 10, 4999, 5000, 5001, N] {
            let t = index.get(s).unwrap().unwrap();
            assert_eq!(
                t,
                IndexedTx {
                    seqno: s,
                    view: 2 + s / 5000,
                    collection: collection(s),
                    tags: Vec::new(),
                    kv: Vec::new(),
                }
            );
        }
        assert_eq!(index.get(N + 1).unwrap(), None);
        for c in 0..7u64 {
            let name = format!("c{c}");
            let expected: Vec<u64> = (1..=N)
                .filter(|s| collection(*s).as_deref() == Some(name.as_str()))
                .collect();
            assert_eq!(index.latest(&name).unwrap(), expected.last().copied());
            assert_eq!(index.range(&name, 1, N, usize::MAX).unwrap(), expected);
            let page: Vec<u64> = expected
                .iter()
                .copied()
                .filter(|s| (1000..=3000).contains(s))
                .take(50)
                .collect();
            assert_eq!(index.range(&name, 1000, 3000, 50).unwrap(), page);
        }
        assert_eq!(index.latest("nope").unwrap(), None);
        assert!(index.range("c1", 10, 5, 10).unwrap().is_empty());
    };
    check(&index);
    // Out-of-order application is refused.
    assert!(matches!(
        index.apply(&[IndexedTx { seqno: N + 5, view: 9, collection: None, tags: Vec::new(), kv: Vec::new() }]),
        Err(IndexError::Order { expected, got }) if expected == N + 1 && got == N + 5
    ));
    drop(index);
    let index = Index::open(&dir.path().join("index/index.redb")).unwrap();
    check(&index);
    // Rebuilt from the ledger files alone: the same answers.
    drop(index);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let index = Index::open(&dir.path().join("index/index.redb")).unwrap();
    assert_eq!(index.last_seqno().unwrap(), 0);
    assert_eq!(index.rebuild(&files, &secret, u64::MAX).unwrap(), N);
    check(&index);
    // Rebuilding over an existing index replaces it.
    assert_eq!(index.rebuild(&files, &secret, N).unwrap(), N);
    check(&index);
}

/// An index seeded at a snapshot answers what the snapshot gives (latest entries, blobs) at
/// once, refuses queries over the transactions before it with `Loading` rather than answer
/// them wrongly, applies newer transactions as usual, and once backfilled answers exactly as an
/// index built from the first transaction.
#[test]
fn a_seeded_index_loads_the_past_then_answers_like_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let full = Index::open(&dir.path().join("full.redb")).unwrap();
    let seeded = Index::open(&dir.path().join("seeded.redb")).unwrap();
    let tx = |s: u64| IndexedTx {
        seqno: s,
        view: 2,
        collection: collection(s),
        tags: if s.is_multiple_of(3) {
            vec!["t".into()]
        } else {
            Vec::new()
        },
        kv: Vec::new(),
    };
    let (at, last) = (1_000u64, 1_500u64);
    let all: Vec<IndexedTx> = (1..=last).map(tx).collect();
    full.apply(&all).unwrap();
    // The snapshot at `at` (a signature: every 10th transaction is not an entry).
    let latest: Vec<(String, u64)> = (0..7u64)
        .map(|c| {
            let name = format!("c{c}");
            let s = (1..=at)
                .rev()
                .find(|s| collection(*s).as_deref() == Some(name.as_str()))
                .unwrap();
            (name, s)
        })
        .collect();
    seeded
        .seed(at, 2, &latest, &[], &[("blob", b"state at 1000")])
        .unwrap();
    assert!(matches!(
        seeded.seed(at, 2, &latest, &[], &[]),
        Err(IndexError::Order { .. })
    ));
    assert_eq!(seeded.last_seqno().unwrap(), at);
    assert_eq!(seeded.gap().unwrap(), Some((1, at - 1)));
    assert_eq!(seeded.blob("blob").unwrap().unwrap(), b"state at 1000");
    assert_eq!(
        seeded.latest("c3").unwrap(),
        full_latest_at(&full, "c3", at)
    );
    assert_eq!(seeded.collections().unwrap(), full.collections().unwrap());
    let loading = |r: Result<Vec<u64>, IndexError>| matches!(r, Err(IndexError::Loading { from: 1, to }) if to == at - 1);
    assert!(loading(seeded.range("c1", 1, last, 100)));
    assert!(loading(seeded.range("c1", at - 1, at - 1, 100)));
    assert!(loading(seeded.range_tagged("c1", "t", 5, 10, 100)));
    assert!(matches!(seeded.tags("c1"), Err(IndexError::Loading { .. })));
    assert!(matches!(seeded.get(7), Err(IndexError::Loading { .. })));
    assert_eq!(seeded.get(at).unwrap().unwrap().view, 2);
    // Newer transactions apply as usual and are queryable at once.
    seeded.apply(&all[at as usize..]).unwrap();
    assert_eq!(seeded.last_seqno().unwrap(), last);
    assert_eq!(
        seeded.range("c1", at, last, usize::MAX).unwrap(),
        full.range("c1", at, last, usize::MAX).unwrap()
    );
    // A backfill must start where the gap does, and stays within it.
    assert!(matches!(
        seeded.backfill(&all[1..10]),
        Err(IndexError::Order { expected: 1, .. })
    ));
    for batch in all[..(at - 1) as usize].chunks(97) {
        seeded.backfill(batch).unwrap();
    }
    assert_eq!(seeded.gap().unwrap(), None);
    assert!(seeded.backfill(&all[..1]).is_err());
    for c in 0..7u64 {
        let name = format!("c{c}");
        assert_eq!(
            seeded.range(&name, 1, last, usize::MAX).unwrap(),
            full.range(&name, 1, last, usize::MAX).unwrap()
        );
        assert_eq!(seeded.latest(&name).unwrap(), full.latest(&name).unwrap());
        assert_eq!(seeded.tags(&name).unwrap(), full.tags(&name).unwrap());
    }
    for s in [1, 10, 999, 1000, 1001, last] {
        assert_eq!(seeded.get(s).unwrap(), full.get(s).unwrap());
    }
}

fn full_latest_at(full: &Index, c: &str, at: u64) -> Option<u64> {
    full.range(c, 1, at, usize::MAX).unwrap().last().copied()
}

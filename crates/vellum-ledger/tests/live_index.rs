//! The index with its write-behind stage answers every read exactly as a model that holds
//! everything applied, whether a transaction is still staged, being written, or in redb; what
//! it held is in redb after a flush or a drop; it refuses transactions out of order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::collections::BTreeMap;

use proptest::prelude::*;
use vellum_ledger::index::{Index, IndexError, IndexedTx};
use vellum_ledger::live_index::LiveIndex;

/// What the index must answer: every transaction applied, and the blobs.
#[derive(Default)]
struct Model {
    txs: Vec<IndexedTx>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn latest(&self, c: &str) -> Option<u64> {
        self.txs
            .iter()
            .rev()
            .find(|t| t.collection.as_deref() == Some(c))
            .map(|t| t.seqno)
    }
    fn range(&self, c: &str, from: u64, to: u64, limit: usize) -> Vec<u64> {
        let skip = (from.max(1) - 1).min(self.txs.len() as u64) as usize;
        self.txs[skip..]
            .iter()
            .filter(|t| t.seqno >= from && t.seqno <= to && t.collection.as_deref() == Some(c))
            .map(|t| t.seqno)
            .take(limit)
            .collect()
    }
    fn range_tagged(&self, c: &str, tag: &str, from: u64, to: u64, limit: usize) -> Vec<u64> {
        self.txs
            .iter()
            .filter(|t| t.seqno >= from && t.seqno <= to && t.collection.as_deref() == Some(c))
            .filter(|t| t.tags.iter().any(|have| have == tag))
            .map(|t| t.seqno)
            .take(limit)
            .collect()
    }
    fn tags(&self, c: &str) -> Vec<String> {
        let mut tags: Vec<String> = self
            .txs
            .iter()
            .filter(|t| t.collection.as_deref() == Some(c))
            .flat_map(|t| t.tags.clone())
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
    fn collections(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .txs
            .iter()
            .filter_map(|t| t.collection.clone())
            .collect();
        c.sort();
        c.dedup();
        c
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch: the collection of each transaction (`None`: not an application entry).
    Apply(Vec<Option<u8>>, Option<(u8, u8)>),
    Flush,
    /// Let the writer run (its period is a few milliseconds).
    Pause,
    Read(u64, u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            proptest::collection::vec(proptest::option::weighted(0.8, 0u8..4), 0..40),
            proptest::option::weighted(0.2, (0u8..3, any::<u8>())),
        )
            .prop_map(|(c, b)| Op::Apply(c, b)),
        1 => Just(Op::Flush),
        1 => Just(Op::Pause),
        4 => (0u64..200, 0u64..200, 0usize..30).prop_map(|(a, b, l)| Op::Read(a, b, l)),
    ]
}

/// The tags of transaction `seqno` in these tests: some have none, some one, some two.
fn tags_for(seqno: u64) -> Vec<String> {
    let mut tags = Vec::new();
    if seqno.is_multiple_of(3) {
        tags.push("t0".to_owned());
    }
    if seqno.is_multiple_of(5) {
        tags.push("t1".to_owned());
    }
    tags
}

/// A transaction as `get` answers it: tags are kept for queries, not per transaction.
fn untagged(t: IndexedTx) -> IndexedTx {
    IndexedTx {
        tags: Vec::new(),
        kv: Vec::new(),
        ..t
    }
}

fn check(index: &LiveIndex, m: &Model, from: u64, to: u64, limit: usize) {
    let last = m.txs.last().map_or(0, |t| t.seqno);
    assert_eq!(index.last_seqno(), last);
    for s in [from, to, 1, last, last + 1] {
        assert_eq!(
            index.get(s).unwrap(),
            m.txs
                .get((s as usize).wrapping_sub(1))
                .cloned()
                .map(untagged),
            "get({s})"
        );
    }
    for c in 0..5u8 {
        let c = format!("c{c}");
        assert_eq!(index.latest(&c).unwrap(), m.latest(&c), "latest({c})");
        assert_eq!(
            index.range(&c, from, to, limit).unwrap(),
            m.range(&c, from, to, limit),
            "range({c}, {from}, {to}, {limit})"
        );
        for tag in ["t0", "t1", "t2"] {
            assert_eq!(
                index.range_tagged(&c, tag, from, to, limit).unwrap(),
                m.range_tagged(&c, tag, from, to, limit),
                "range_tagged({c}, {tag}, {from}, {to}, {limit})"
            );
        }
        assert_eq!(index.tags(&c).unwrap(), m.tags(&c), "tags({c})");
    }
    assert_eq!(index.collections().unwrap(), m.collections());
    for k in 0..3u8 {
        let k = format!("b{k}");
        assert_eq!(
            index.blob(&k).unwrap(),
            m.blobs.get(&k).cloned(),
            "blob {k}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reads_match_a_model_staged_or_written(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let index = LiveIndex::start(Index::open(&path).unwrap()).unwrap();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Apply(cs, blob) => {
                    let next = m.txs.len() as u64 + 1;
                    let txs: Vec<IndexedTx> = cs
                        .iter()
                        .zip(next..)
                        .map(|(c, seqno)| IndexedTx {
                            seqno,
                            view: 2 + seqno / 50,
                            collection: c.map(|c| format!("c{c}")),
                            tags: if c.is_some() { tags_for(seqno) } else { Vec::new() },
                            kv: Vec::new(),
                        })
                        .collect();
                    let blobs: Vec<(String, Vec<u8>)> = blob
                        .map(|(k, v)| (format!("b{k}"), vec![v; 3]))
                        .into_iter()
                        .collect();
                    index.apply(txs.clone(), blobs.clone()).unwrap();
                    m.txs.extend(txs);
                    m.blobs.extend(blobs);
                }
                Op::Flush => index.flush().unwrap(),
                Op::Pause => std::thread::sleep(std::time::Duration::from_millis(7)),
                Op::Read(from, to, limit) => check(&index, &m, from, to, limit),
            }
        }
        check(&index, &m, 1, u64::MAX, usize::MAX);
        drop(index);
        // Everything is in redb once the live index is dropped.
        let plain = Index::open(&path).unwrap();
        let last = m.txs.last().map_or(0, |t| t.seqno);
        prop_assert_eq!(plain.last_seqno().unwrap(), last);
        for t in &m.txs {
            prop_assert_eq!(plain.get(t.seqno).unwrap(), Some(untagged(t.clone())));
        }
        for (k, v) in &m.blobs {
            prop_assert_eq!(plain.blob(k).unwrap(), Some(v.clone()));
        }
        let reopened = LiveIndex::start(plain).unwrap();
        check(&reopened, &m, 1, u64::MAX, usize::MAX);
    }
}

#[test]
fn flush_writes_everything_and_order_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let index = LiveIndex::start(Index::open(&path).unwrap()).unwrap();
    let tx = |seqno| IndexedTx {
        seqno,
        view: 2,
        collection: Some("c".into()),
        tags: Vec::new(),
        kv: Vec::new(),
    };
    index.apply(vec![tx(1), tx(2)], vec![]).unwrap();
    // A gap, and a transaction applied twice, are refused and change nothing.
    assert!(matches!(
        index.apply(vec![tx(4)], vec![]),
        Err(IndexError::Order {
            expected: 3,
            got: 4
        })
    ));
    assert!(matches!(
        index.apply(vec![tx(2)], vec![]),
        Err(IndexError::Order {
            expected: 3,
            got: 2
        })
    ));
    assert_eq!(index.last_seqno(), 2);
    assert_eq!(index.staged(), 2);
    index.flush().unwrap();
    assert_eq!(index.staged(), 0);
    assert_eq!(index.range("c", 1, 2, 10).unwrap(), vec![1, 2]);
    drop(index);
    let plain = Index::open(&path).unwrap();
    assert_eq!(plain.last_seqno().unwrap(), 2);
    assert_eq!(plain.latest("c").unwrap(), Some(2));
}

/// Reads right after each apply, while the writer writes earlier batches in the background:
/// a transaction is never missing between the stage and redb.
#[test]
fn reads_hold_while_the_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let index = LiveIndex::start(Index::open(&dir.path().join("index.redb")).unwrap()).unwrap();
    let mut m = Model::default();
    // A small deterministic generator: the same batches every run.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let started = std::time::Instant::now();
    let mut writes_seen = 0;
    let mut staged_before = 0;
    // Until the writer has written many times under our feet (or 20 s, then fail below).
    while writes_seen < 100 && started.elapsed() < std::time::Duration::from_secs(20) {
        let n = 1 + next() % 4;
        let first = m.txs.len() as u64 + 1;
        let txs: Vec<IndexedTx> = (first..first + n)
            .map(|seqno| IndexedTx {
                seqno,
                view: 2,
                collection: (next() % 5 != 0).then(|| format!("c{}", next() % 4)),
                tags: Vec::new(),
                kv: Vec::new(),
            })
            .collect();
        index.apply(txs.clone(), vec![]).unwrap();
        m.txs.extend(txs);
        let staged = index.staged();
        if staged < staged_before + n as usize {
            writes_seen += 1;
        }
        staged_before = staged;
        let last = m.txs.len() as u64;
        for c in 0..4 {
            let c = format!("c{c}");
            assert_eq!(
                index.latest(&c).unwrap(),
                m.latest(&c),
                "latest({c}) at {last}"
            );
        }
        let from = last.saturating_sub(next() % 200);
        assert_eq!(
            index.range("c1", from, last, 1000).unwrap(),
            m.range("c1", from, last, 1000)
        );
        let s = 1 + next() % last;
        assert_eq!(index.get(s).unwrap().as_ref(), m.txs.get(s as usize - 1));
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    // The writer did run meanwhile (else this test checked the stage alone).
    assert!(
        writes_seen >= 100,
        "only {writes_seen} writes in {:?}",
        started.elapsed()
    );
}

/// Application maps (the state user-defined functions read and write): written through
/// `IndexedTx::from_maps`, read back staged, after a flush and after reopening, removals
/// included; CCF's and Vellum's own maps are not kept.
#[test]
fn application_maps_are_kept_staged_and_written() {
    use vellum_core::entry::MapWrites;
    use vellum_ledger::index::is_app_map;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let index = LiveIndex::start(Index::open(&path).unwrap()).unwrap();
    let w = |name: &str, writes: &[(&str, &str)], removes: &[&str]| {
        let mut m = MapWrites::with_writes(
            name,
            writes
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        );
        m.removes = removes.iter().map(|k| k.as_bytes().to_vec()).collect();
        m
    };
    let txs = vec![
        IndexedTx::from_maps(1, 2, &[w("public:app", &[("a", "1"), ("b", "2")], &[])]),
        IndexedTx::from_maps(
            2,
            2,
            &[
                w("public:app", &[("a", "one")], &["b"]),
                w("private:secrets", &[("k", "v")], &[]),
                w("public:ccf.gov.users.info", &[("u", "x")], &[]),
                w("public:vellum.users", &[("u", "x")], &[]),
            ],
        ),
    ];
    assert_eq!(txs[1].kv.len(), 3, "{:?}", txs[1].kv);
    index.apply(txs, Vec::new()).unwrap();
    let check = |index: &LiveIndex| {
        assert_eq!(
            index.kv_get("public:app", b"a").unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(index.kv_get("public:app", b"b").unwrap(), None);
        assert_eq!(
            index.kv_entries("public:app").unwrap(),
            vec![(b"a".to_vec(), b"one".to_vec())]
        );
        assert_eq!(
            index.kv_entries("private:secrets").unwrap(),
            vec![(b"k".to_vec(), b"v".to_vec())]
        );
        assert_eq!(index.kv_get("public:vellum.users", b"u").unwrap(), None);
        assert!(
            index
                .kv_entries("public:ccf.gov.users.info")
                .unwrap()
                .is_empty()
        );
    };
    check(&index);
    index.flush().unwrap();
    check(&index);
    drop(index);
    let reopened = LiveIndex::start(Index::open(&path).unwrap()).unwrap();
    check(&reopened);
    assert!(is_app_map("public:app") && is_app_map("secrets") && !is_app_map("vellum.entries"));
    assert!(!is_app_map("public:ccf.internal.tree") && !is_app_map("public:"));
}

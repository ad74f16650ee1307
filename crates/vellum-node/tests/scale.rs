//! 100,000 entries through the full node path (Raft, signatures, group commit, index), across
//! several collections; then `vellum audit` and `ccf.ledger` FULL over the node's ledger, and
//! every entry read back by id, as latest of its collection and by range.
//!
//! 5,000 entries by default; `VELLUM_HEAVY=1` (scripts/test.sh, release build) writes 100,000.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vellum_core::TxId;
use vellum_core::status::TxStatus;
use vellum_node::{LedgerNode, NodeConfig};

const COLLECTIONS: u64 = 7;
const WRITERS: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_entries_verify_and_read_back() {
    let total: u64 = if std::env::var("VELLUM_HEAVY").is_ok_and(|v| v == "1") {
        100_000
    } else {
        5_000
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.chunk_size = 1 << 20;
    let node = Arc::new(LedgerNode::start(cfg).await.unwrap());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = w;
            while i < total {
                let c = format!("collection-{}", i % COLLECTIONS);
                let contents = format!("entry {i} of {total}");
                let t = node.append(&c, &contents).await.unwrap();
                mine.push((t, c, contents));
                i += WRITERS;
            }
            mine
        }));
    }
    let mut written: BTreeMap<TxId, (String, String)> = BTreeMap::new();
    for t in tasks {
        for (t, c, contents) in t.await.unwrap() {
            assert!(
                written.insert(t, (c, contents)).is_none(),
                "{t} assigned twice"
            );
        }
    }
    let last = *written.keys().next_back().unwrap();
    assert_eq!(
        node.wait_committed(last, Duration::from_secs(60))
            .await
            .unwrap(),
        TxStatus::Committed
    );
    let elapsed = start.elapsed();
    let (requests, syncs) = node.flush_stats();
    println!(
        "{total} entries in {elapsed:?} ({:.0}/s); {requests} log appends, {syncs} fdatasyncs",
        total as f64 / elapsed.as_secs_f64()
    );

    // By id.
    for (t, (c, contents)) in &written {
        assert_eq!(node.status(*t), TxStatus::Committed);
        let e = node.entry(*t).unwrap().unwrap();
        assert_eq!((&e.collection, &e.contents), (c, contents), "{t}");
    }
    // Latest and range per collection.
    for k in 0..COLLECTIONS {
        let c = format!("collection-{k}");
        let mine: Vec<(&TxId, &String)> = written
            .iter()
            .filter(|(_, (cc, _))| *cc == c)
            .map(|(t, (_, contents))| (t, contents))
            .collect();
        let latest = node.latest(&c).unwrap().unwrap();
        assert_eq!(latest.txid, *mine.last().unwrap().0);
        let mut got = Vec::new();
        let mut from = 0;
        loop {
            let page = node.range(&c, from, u64::MAX, 1000).unwrap();
            let Some(l) = page.last() else { break };
            from = l.txid.seqno + 1;
            got.extend(page);
        }
        assert_eq!(got.len(), mine.len(), "{c}");
        for (e, (t, contents)) in got.iter().zip(&mine) {
            assert_eq!((&e.txid, &e.contents), (*t, *contents));
        }
    }
    let ledger = node.ledger_dir();
    let secret = node.ledger_secret();
    Arc::try_unwrap(node).unwrap().shutdown().await.unwrap();
    let audited = common::audit(&ledger, &secret);
    assert!(audited >= total, "audited {audited}");
    if let Some(n) = common::ccf_full(&ledger) {
        assert!(n >= total, "ccf.ledger verified {n}");
    }
}

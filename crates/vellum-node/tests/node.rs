//! A single real node: writes through Raft, status, reads, receipts, restart, audit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use vellum_core::status::TxStatus;
use vellum_node::{LedgerNode, NodeConfig};

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::new(dir);
    c.chunk_size = 4096;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_commit_read_receipt_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = LedgerNode::start(config(dir.path())).await.unwrap();
    let service_cert = node.service_cert_pem().to_owned();
    let mut written = Vec::new();
    for i in 0..50 {
        let c = format!("c{}", i % 3);
        let t = node.append(&c, &format!("entry {i}")).await.unwrap();
        written.push((t, c, format!("entry {i}")));
    }
    let last = written.last().unwrap().0;
    assert_eq!(
        node.wait_committed(last, Duration::from_secs(10))
            .await
            .unwrap(),
        TxStatus::Committed
    );
    // Transaction ids are consecutive in one view.
    for w in written.windows(2) {
        assert_eq!(w[1].0.view, w[0].0.view);
        assert!(w[1].0.seqno > w[0].0.seqno);
    }
    for (t, c, contents) in &written {
        assert_eq!(node.status(*t), TxStatus::Committed);
        let e = node.entry(*t).unwrap().expect("entry");
        assert_eq!((&e.collection, &e.contents), (c, contents));
        let r = node.receipt(*t).unwrap();
        r.receipt.verify(&service_cert, None).unwrap();
    }
    assert_eq!(node.latest("c1").unwrap().unwrap().contents, "entry 49");
    let r = node.range("c0", 0, u64::MAX, 100).unwrap();
    assert_eq!(r.len(), 17);
    // A transaction id that never existed in this view.
    let bogus = vellum_core::TxId::new(last.view + 5, last.seqno);
    assert_ne!(node.status(bogus), TxStatus::Committed);
    let ledger = node.ledger_dir();
    let secret = node.ledger_secret();
    node.shutdown().await.unwrap();

    // Restart: everything is still there; writes resume in a later view.
    let node = LedgerNode::start(config(dir.path())).await.unwrap();
    assert_eq!(node.service_cert_pem(), service_cert);
    for (t, c, contents) in &written {
        assert_eq!(node.status(*t), TxStatus::Committed);
        let e = node.entry(*t).unwrap().expect("entry after restart");
        assert_eq!((&e.collection, &e.contents), (c, contents));
    }
    let t = node.append("c0", "after restart").await.unwrap();
    assert!(
        t.view >= last.view && t.seqno > last.seqno,
        "{t} after {last}"
    );
    assert_eq!(
        node.wait_committed(t, Duration::from_secs(10))
            .await
            .unwrap(),
        TxStatus::Committed
    );
    node.shutdown().await.unwrap();
    at_rest_checks(dir.path(), &ledger, &written);
    let n = common::audit(&ledger, &secret);
    assert!(n > 50, "audited {n}");
    if let Some(n) = common::ccf_full(&ledger) {
        assert!(n > 50);
    }
}

/// Entries are confidential at rest, secrets are private files, and seqno 1 is genesis.
fn at_rest_checks(
    data: &std::path::Path,
    ledger: &std::path::Path,
    written: &[(vellum_core::TxId, String, String)],
) {
    use std::os::unix::fs::PermissionsExt;
    let mut all = Vec::new();
    for (_, path) in vellum_ledger::chunk::list_chunks(ledger, false).unwrap() {
        all.extend(std::fs::read(path).unwrap());
    }
    for (_, _, contents) in written {
        assert!(
            !all.windows(contents.len())
                .any(|w| w == contents.as_bytes()),
            "{contents:?} is in the ledger files in plaintext"
        );
    }
    for f in ["ledger_secret", "service_key.pem", "node_key.pem"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (name, path) = vellum_ledger::chunk::list_chunks(ledger, false)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let bytes = std::fs::read(path).unwrap();
    let chunk = vellum_ledger::chunk::Chunk::parse(&bytes, Some(&name)).unwrap();
    let first = &chunk.entries[0].entry;
    assert_eq!(first.iv.seqno, 1);
    let pd = first.public_domain().unwrap();
    let names: Vec<&str> = pd.maps.iter().map(|m| m.name.as_str()).collect();
    use vellum_core::tables::*;
    for t in [
        SERVICE_INFO.name(),
        NODES_INFO.name(),
        NODES_ENDORSED_CERTIFICATES.name(),
        CONSTITUTION.name(),
        "public:vellum.raft",
    ] {
        assert!(names.contains(&t), "genesis lacks {t}: {names:?}");
    }
}

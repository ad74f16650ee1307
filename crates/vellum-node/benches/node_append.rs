//! Appends through the full node path, without HTTP: `LedgerNode::append` → openraft → the
//! ledger log store (encode, seal, Merkle leaf, chunk write) → group commit (`fdatasync`) →
//! Raft commit → state machine (index) → signature transactions → Committed.
//!
//! ```text
//! cargo bench -p vellum-node --bench node_append -- [ENTRIES] [CONCURRENCY] [SIZE]
//! ```
//!
//! Defaults: 100,000 entries of 100 bytes from 64 concurrent writers, each waiting for its
//! transaction id (as an HTTP append does). A second phase has every writer also wait until
//! its write is Committed (append-and-wait). Prints throughput, latency percentiles and group
//! commit counters. The data directory is a temporary directory on the current file system
//! (`TMPDIR` to choose another).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vellum_core::status::TxStatus;
use vellum_node::{LedgerNode, NodeConfig};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn phase(node: &Arc<LedgerNode>, entries: u64, conc: u64, size: usize, wait: bool) {
    let contents = "v".repeat(size);
    let start = Instant::now();
    let (s0, y0) = node.flush_stats();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let node = node.clone();
        let contents = contents.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).unwrap();
            let mut i = w;
            while i < entries {
                let t0 = Instant::now();
                let t = node
                    .append(&format!("c{}", i % 8), &contents)
                    .await
                    .unwrap();
                if wait {
                    let s = node
                        .wait_committed(t, Duration::from_secs(30))
                        .await
                        .unwrap();
                    assert_eq!(s, TxStatus::Committed);
                }
                h.record(t0.elapsed().as_micros() as u64).unwrap();
                i += conc;
            }
            h
        }));
    }
    let mut h = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        h.add(t.await.unwrap()).unwrap();
    }
    let el = start.elapsed();
    let (s1, y1) = node.flush_stats();
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{:<18} {entries} x {size} B, {conc} writers: {:>8.0} tx/s  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} log appends, {} fdatasyncs)",
        if wait { "append+commit" } else { "append" },
        entries as f64 / el.as_secs_f64(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        s1 - s0,
        y1 - y0,
    );
}

fn main() {
    let entries = arg(1, 100_000);
    let conc = arg(2, 64);
    let size = arg(3, 100) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(
            LedgerNode::start(NodeConfig::new(dir.path()))
                .await
                .unwrap(),
        );
        phase(&node, entries, conc, size, false).await;
        phase(&node, entries, conc, size, true).await;
        phase(&node, entries / 10, 1, size, true).await;
        Arc::try_unwrap(node).unwrap().shutdown().await.unwrap();
    });
}

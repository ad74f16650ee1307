//! Ledger file throughput: 10,000 one-KiB entries made durable one `fdatasync` each, versus
//! through the group-commit writer (callers submit without waiting; each sync covers everything
//! queued). Results and the command are in `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc::channel;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vellum_core::TxId;
use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites};
use vellum_ledger::store::{DEFAULT_CHUNK_SIZE, LedgerFiles};

#[path = "support/group_commit.rs"]
#[allow(dead_code)]
mod group_commit;
use group_commit::GroupCommit;

const N: u64 = 10_000;

fn entries() -> Vec<Vec<u8>> {
    let secret = LedgerSecret::from_bytes([3; 32]);
    (1..=N)
        .map(|s| {
            EntryBuilder::default()
                .map(MapWrites::with_writes(
                    "vellum.entries",
                    vec![(b"c".to_vec(), vec![b'x'; 1024])],
                ))
                .encode(TxId::new(2, s), &secret)
                .bytes
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let es = entries();
    let mut g = c.benchmark_group("ledger files");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N));
    g.bench_function("10k x 1 KiB entries, one fdatasync each", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, _) = LedgerFiles::open(dir.path(), DEFAULT_CHUNK_SIZE, None).unwrap();
            for (i, e) in es.iter().enumerate() {
                store.append(i as u64 + 1, e, false).unwrap();
                store.sync().unwrap();
            }
        })
    });
    g.bench_function("10k x 1 KiB entries, group commit", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = LedgerFiles::open(dir.path(), DEFAULT_CHUNK_SIZE, None).unwrap();
            let gc = GroupCommit::start(store).unwrap();
            let (tx, rx) = channel();
            for (i, e) in es.iter().enumerate() {
                let tx = tx.clone();
                gc.append(
                    vec![(i as u64 + 1, e.clone(), false)],
                    Box::new(move |r| tx.send(r.is_ok()).unwrap()),
                );
            }
            for _ in 0..N {
                assert!(rx.recv().unwrap());
            }
            let stats = gc.stats();
            gc.stop();
            stats
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

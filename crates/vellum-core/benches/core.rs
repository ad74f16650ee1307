//! Criterion benchmarks for the hot paths of the verifiable core: Merkle append, root and
//! inclusion-path generation, entry encoding (with AES-256-GCM sealing), and receipt
//! verification. Results and the command are in `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vellum_core::entry::{EntryBuilder, LedgerSecret, MapWrites};
use vellum_core::merkle::MerkleTree;
use vellum_core::receipt::Receipt;
use vellum_core::{Hash, TxId};

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| Hash::digest(&i.to_le_bytes())).collect()
}

fn tree(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    let ls = leaves(100_000);
    g.throughput(Throughput::Elements(ls.len() as u64));
    g.bench_function("append 100k leaves", |b| {
        b.iter(|| {
            let mut t = MerkleTree::new();
            for l in &ls {
                t.append(*l);
            }
            black_box(t.size())
        })
    });
    let mut t = MerkleTree::new();
    for l in leaves(1_000_000) {
        t.append(l);
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("root of 1M-leaf tree", |b| {
        b.iter(|| black_box(t.root_at(black_box(999_999)).unwrap()))
    });
    let mut i = 0u64;
    g.bench_function("inclusion path in 1M-leaf tree", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000_000;
            black_box(t.path(i, 1_000_000).unwrap())
        })
    });
    g.bench_function("serialize 1000 leaves for a signature", |b| {
        b.iter(|| black_box(t.serialize(998_000, 999_000).unwrap()))
    });
    g.finish();
}

fn entries(c: &mut Criterion) {
    let mut g = c.benchmark_group("entry");
    let secret = LedgerSecret::from_bytes([9u8; 32]);
    for size in [100usize, 1024, 8192] {
        let contents = vec![b'x'; size];
        let b = EntryBuilder::default().map(MapWrites::with_writes(
            "vellum.entries",
            vec![(b"subledger:0".to_vec(), contents.clone())],
        ));
        g.throughput(Throughput::Bytes(size as u64));
        let mut seqno = 0u64;
        g.bench_function(format!("encode+seal {size} B private entry"), |bch| {
            bch.iter_batched(
                || {
                    seqno += 1;
                    TxId::new(2, seqno)
                },
                |txid| black_box(b.encode(txid, &secret)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn receipts(c: &mut Criterion) {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/data/receipt_vector_e.json")).unwrap();
    let cert = v["service_cert"].as_str().unwrap().to_owned();
    let r = Receipt::from_json(&v["response"]["receipt"]).unwrap();
    c.bench_function(
        "receipt/verify P-384 receipt (2 ECDSA verifications)",
        |b| b.iter(|| r.verify(black_box(&cert), None).unwrap()),
    );
}

/// The signature transaction's two signatures. Run with `--features aws-lc` to measure the
/// node's build (aws-lc-rs); without it, the pure-Rust `p384` fallback.
fn signing(c: &mut Criterion) {
    let key = vellum_core::crypto::SigningKey::generate(&mut rand_core::OsRng);
    let root = Hash::digest(b"root");
    let mut g = c.benchmark_group("sign");
    g.bench_function("root signature (P-384, 32-byte prehash, DER)", |b| {
        b.iter(|| key.sign_prehash_der(black_box(&root)).unwrap())
    });
    g.bench_function("COSE ES384 signature over 100 B", |b| {
        b.iter(|| key.sign_cose(black_box(&[7u8; 100])).unwrap())
    });
    g.finish();
}

criterion_group!(benches, tree, entries, receipts, signing);
criterion_main!(benches);

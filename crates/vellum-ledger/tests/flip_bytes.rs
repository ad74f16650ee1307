//! Any single flipped byte in a committed ledger is caught, and the failure names the
//! transaction holding that byte (or the file, for its header and positions table).
//!
//! Positions are sampled (all header and table bytes, the fixed fields of every entry, and a
//! deterministic spread of the rest); set `VELLUM_FLIP_EVERY_BYTE=1` to flip every byte of every
//! file (run that in release mode: `cargo test --release -p vellum-ledger --test flip_bytes`).
//!
//! The one region no later signature covers is the ledger's final signature transaction: there
//! a flip fails the audit exactly when it fails CCF's own verifier (its signature record, COSE
//! signature and framing are checked; its GCM tag, commit-evidence digest, version fields and
//! serialized tree are not). `audit_differential.rs` holds that region against CCF's verdicts;
//! here flips in it only must not panic. Ledgers written by Vellum are also checked with the
//! secret, where every byte counts (see `sample_ledger.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::path::{Path, PathBuf};

use vellum_ledger::chunk::{Chunk, ChunkName, list_chunks};
use vellum_ledger::{AuditOptions, audit_chunks};

use common::ccf_ledger as testdata;

/// What one byte of a file is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Region {
    /// File header or positions table.
    File,
    /// Inside the entry with this seqno.
    Entry(u64),
    /// Inside the final signature transaction, which no later signature covers.
    FinalSignature,
}

fn regions(bytes: &[u8], name: &ChunkName, is_last_file: bool) -> Vec<Region> {
    let chunk = Chunk::parse(bytes, Some(name)).unwrap();
    let mut r = vec![Region::File; bytes.len()];
    let n = chunk.entries.len();
    for (i, e) in chunk.entries.iter().enumerate() {
        let start = e.offset as usize;
        let seqno = name.start + i as u64;
        for b in &mut r[start..start + e.entry.bytes.len()] {
            *b = Region::Entry(seqno);
        }
        if is_last_file && i + 1 == n {
            for b in &mut r[start..start + e.entry.bytes.len()] {
                *b = Region::FinalSignature;
            }
        }
    }
    r
}

fn positions(regions: &[Region], every: bool) -> Vec<usize> {
    if every {
        return (0..regions.len()).collect();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < regions.len() {
        if regions[i] == Region::File {
            // Every byte of the file header and the positions table.
            out.push(i);
            i += 1;
            continue;
        }
        // One entry: [i, end). The fixed fields (header, tag, IV, lengths, type, seqno,
        // digests, first map header: 130 bytes), one byte in 9, and 8 more spread over the rest.
        let mut end = i + 1;
        while end < regions.len()
            && regions[end] != Region::File
            && (regions[end] == regions[i]
                || regions[end] == Region::FinalSignature
                || regions[i] == Region::FinalSignature)
        {
            end += 1;
        }
        out.extend((i..(i + 130).min(end)).step_by(9));
        let rest = end.saturating_sub(i + 130);
        if rest > 0 {
            out.extend((0..8).map(|k| i + 130 + (k * 7919) % rest));
        }
        out.push(end - 1);
        i = end;
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn flip_all(dir: &Path, opts: &AuditOptions) -> usize {
    let every = std::env::var("VELLUM_FLIP_EVERY_BYTE").is_ok_and(|v| v == "1");
    let chunks = list_chunks(dir, true).unwrap();
    let files: Vec<(ChunkName, PathBuf, Vec<u8>)> = chunks
        .into_iter()
        .map(|(n, p)| {
            let b = std::fs::read(&p).unwrap();
            (n, p, b)
        })
        .collect();
    let total: u64 = files.iter().map(|f| f.2.len() as u64).sum();
    let mut flips = 0;
    for (fi, (name, path, bytes)) in files.iter().enumerate() {
        let is_last = fi + 1 == files.len();
        let regions = regions(bytes, name, is_last);
        for p in positions(&regions, every) {
            let mut copy: Vec<(ChunkName, PathBuf, Result<Vec<u8>, _>)> = files
                .iter()
                .map(|(n, p, b)| (n.clone(), p.clone(), Ok(b.clone())))
                .collect();
            if let Ok(b) = &mut copy[fi].2 {
                b[p] ^= 0xff;
            }
            let result = audit_chunks(copy, total, opts, |_| {});
            flips += 1;
            let where_ = format!("{} byte {p} ({:?})", path.display(), regions[p]);
            match (regions[p], result) {
                // Decided by CCF's verdicts (audit_differential.rs); with the secret, the GCM
                // tag covers every byte but the header, which is always checked.
                (Region::FinalSignature, _) if opts.ledger_secret.is_none() => {}
                (Region::FinalSignature, r) => {
                    let e = r.expect_err(&where_);
                    let last = files.last().map(|f| f.0.end.unwrap()).unwrap();
                    assert_eq!(e.seqno, Some(last), "{where_}: {e}");
                }
                (Region::File, r) => {
                    let e = r.expect_err(&where_);
                    assert_eq!(e.file.as_deref(), Some(path.as_path()), "{where_}: {e}");
                }
                (Region::Entry(s), r) => {
                    let e = r.expect_err(&where_);
                    assert_eq!(e.seqno, Some(s), "{where_}: {e}");
                }
            }
        }
    }
    flips
}

#[test]
fn flipped_bytes_in_acme_ledger_are_caught_and_named() {
    let n = flip_all(
        &testdata("acme_containing_service"),
        &AuditOptions::default(),
    );
    println!("acme_containing_service: {n} flips, all caught and named");
    assert!(n > 100);
}

#[test]
fn flipped_bytes_in_cose_flipflop_ledger_are_caught_and_named() {
    let n = flip_all(&testdata("cose_flipflop_service"), &AuditOptions::default());
    println!("cose_flipflop_service: {n} flips, all caught and named");
    assert!(n > 100);
}

#[test]
fn clean_copy_passes() {
    for svc in ["acme_containing_service", "cose_flipflop_service"] {
        vellum_ledger::audit_dir(&testdata(svc), &AuditOptions::default(), |_| {}).unwrap();
    }
}

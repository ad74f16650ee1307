//! Differential test: `vellum audit` and CCF's own verifier (`ccf` 7.0.22, `LedgerValidator` at
//! `VerificationLevel.FULL`, as `python -m ccf.read_ledger` runs it) must agree on every
//! mutant ledger: intact or not.
//!
//! The ledgers are a sample written by Vellum and the four real CCF ledgers in
//! `testdata/ccf-ledgers`. Each mutant changes one thing: a header field (format version,
//! flags, size, public-domain length), an IV field, the entry type, the max conflict version, a
//! map's read version or read count, a byte of a signature table's value, the chunk header or
//! positions table, the file's length, or a single bit anywhere. Mutations favour the ledger's
//! final signature transaction, the one place where fields no signature covers can be changed
//! without breaking a signed root, so where a verifier stricter or laxer than CCF shows.
//!
//! `VELLUM_DIFF_MUTANTS` (default 300) sets how many mutants, `VELLUM_DIFF_SEED` the seed.
//! Needs Python with `ccf` (see `python_interop.rs`); without one it says so and passes, unless
//! `VELLUM_REQUIRE_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vellum_ledger::chunk::{Chunk, list_chunks};
use vellum_ledger::sample::{SampleOptions, write_sample};
use vellum_ledger::{AuditOptions, audit_dir};

use common::{interop_required, python};

/// splitmix64: a small deterministic generator, so a failing mutant can be made again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Where one map's fields are, within a file.
#[derive(Debug, Clone)]
struct MapLayout {
    name: String,
    read_version_at: usize,
    read_count_at: usize,
    /// (offset, length) of every key and value.
    blobs: Vec<(usize, usize)>,
}

/// Where one entry's fields are, within a file.
#[derive(Debug, Clone)]
struct EntryLayout {
    at: usize,
    len: usize,
    public_len: usize,
    seqno_at: usize,
    max_conflict_at: Option<usize>,
    maps: Vec<MapLayout>,
    is_signature: bool,
}

#[derive(Debug, Clone)]
struct FileLayout {
    name: String,
    bytes: Vec<u8>,
    entries: Vec<EntryLayout>,
    table_at: Option<usize>,
}

#[derive(Debug)]
struct Base {
    label: String,
    dir: PathBuf,
    files: Vec<FileLayout>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Reads the layout of an intact entry (public maps only: the private domain is ciphertext).
fn entry_layout(bytes: &[u8], at: usize, len: usize) -> EntryLayout {
    let public_len = u64_at(bytes, at + 36) as usize;
    let p = at + 44;
    let ty = bytes[p];
    let mut pos = p + 9;
    if matches!(ty, 2 | 4) {
        pos += 32;
    }
    if matches!(ty, 3 | 4) {
        pos += 32;
    }
    let max_conflict_at = Some(pos);
    pos += 8;
    let end = p + public_len;
    let mut maps = Vec::new();
    while pos < end {
        let n = u64_at(bytes, pos) as usize;
        let name = String::from_utf8_lossy(&bytes[pos + 8..pos + 8 + n]).into_owned();
        pos += 8 + n;
        let read_version_at = pos;
        let read_count_at = pos + 8;
        pos += 16;
        let mut blobs = Vec::new();
        let writes = u64_at(bytes, pos);
        pos += 8;
        for _ in 0..writes * 2 {
            let l = u64_at(bytes, pos) as usize;
            blobs.push((pos + 8, l));
            pos += 8 + l;
        }
        let removes = u64_at(bytes, pos);
        pos += 8;
        for _ in 0..removes {
            let l = u64_at(bytes, pos) as usize;
            blobs.push((pos + 8, l));
            pos += 8 + l;
        }
        maps.push(MapLayout {
            name,
            read_version_at,
            read_count_at,
            blobs,
        });
    }
    let is_signature = maps.iter().any(|m| {
        m.name == "public:ccf.internal.signatures"
            || m.name == "public:ccf.internal.cose_signatures"
    });
    EntryLayout {
        at,
        len,
        public_len,
        seqno_at: p + 1,
        max_conflict_at,
        maps,
        is_signature,
    }
}

fn load_base(label: &str, dir: &Path) -> Base {
    let mut files = Vec::new();
    for (name, path) in list_chunks(dir, true).unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        let chunk = Chunk::parse(&bytes, Some(&name)).unwrap();
        let entries = chunk
            .entries
            .iter()
            .map(|e| entry_layout(&bytes, e.offset as usize, e.entry.bytes.len()))
            .collect();
        let table_at = chunk.closed.then(|| u64_at(&bytes, 0) as usize);
        files.push(FileLayout {
            name: name.file_name(),
            bytes,
            entries,
            table_at,
        });
    }
    Base {
        label: label.to_owned(),
        dir: dir.to_path_buf(),
        files,
    }
}

/// One mutant: which file of which base, its new bytes, and what was done.
struct Mutant {
    base: usize,
    file: usize,
    bytes: Vec<u8>,
    what: String,
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn flip_bit(rng: &mut Rng, b: &mut [u8], from: usize, len: usize) -> String {
    let at = from + rng.below(len);
    let bit = rng.below(8);
    b[at] ^= 1 << bit;
    format!("bit {bit} of byte {at}")
}

/// Mutates one entry of `f`; returns what was done.
fn mutate_entry(rng: &mut Rng, f: &FileLayout, e: &EntryLayout, b: &mut [u8]) -> String {
    let at = e.at;
    let nonzero = |rng: &mut Rng| match rng.below(4) {
        0 => 1,
        1 => u64::from(u32::MAX),
        2 => (-1i64) as u64,
        _ => rng.next() | 1,
    };
    match rng.below(16) {
        0 | 1 => flip_bit(rng, b, at, e.len),
        2..=4 => {
            // A byte of a key or value of a public map (JSON, COSE, tree, governance).
            let blobs: Vec<(usize, usize)> = e
                .maps
                .iter()
                .flat_map(|m| m.blobs.iter().copied())
                .filter(|(_, l)| *l > 0)
                .collect();
            if blobs.is_empty() {
                return flip_bit(rng, b, at, e.len);
            }
            let (from, len) = *rng.pick(&blobs);
            format!("map value: {}", flip_bit(rng, b, from, len))
        }
        5 => {
            let v = nonzero(rng);
            let Some(m) = e.max_conflict_at else {
                return flip_bit(rng, b, at, e.len);
            };
            put_u64(b, m, v);
            format!("max conflict version := {}", v as i64)
        }
        6 => {
            if e.maps.is_empty() {
                return flip_bit(rng, b, at, e.len);
            }
            let m = rng.pick(&e.maps);
            let v = nonzero(rng);
            put_u64(b, m.read_version_at, v);
            format!("read version of {} := {}", m.name, v as i64)
        }
        7 => {
            if e.maps.is_empty() {
                return flip_bit(rng, b, at, e.len);
            }
            let m = rng.pick(&e.maps);
            put_u64(b, m.read_count_at, 1);
            format!("read count of {} := 1", m.name)
        }
        8 => {
            let v = *rng.pick(&[0u8, 2, 3, 255]);
            b[at] = v;
            format!("format version := {v}")
        }
        9 => {
            let v = *rng.pick(&[1u8, 2, 3, 4, 0x80, 0xff]);
            b[at + 1] = v;
            format!("flags := {v:#04x}")
        }
        10 => {
            let mut s = [0u8; 8];
            s[..6].copy_from_slice(&b[at + 2..at + 8]);
            let size = u64::from_le_bytes(s);
            let d = *rng.pick(&[-3i64, -1, 1, 4, 1 << 20]);
            let new = (size as i64 + d).max(0) as u64;
            b[at + 2..at + 8].copy_from_slice(&new.to_le_bytes()[..6]);
            format!("size {size} := {new}")
        }
        11 => {
            let d = *rng.pick(&[-8i64, -1, 1, 8]);
            let new = (e.public_len as i64 + d).max(0) as u64;
            put_u64(b, at + 36, new);
            format!("public length {} := {new}", e.public_len)
        }
        12 => {
            let v = rng.below(6) as u8;
            b[at + 44] = v;
            format!("entry type := {v}")
        }
        13 => match rng.below(4) {
            0 => {
                b[at + 35] ^= 0x80;
                "IV snapshot bit flipped".into()
            }
            1 => {
                b[at + 32] ^= 1;
                "IV view ^= 1".into()
            }
            2 => {
                b[at + 24] ^= 1;
                "IV seqno ^= 1".into()
            }
            _ => format!("GCM tag: {}", flip_bit(rng, b, at + 8, 16)),
        },
        14 => {
            b[e.seqno_at] ^= 1;
            "public-domain seqno ^= 1".into()
        }
        _ => {
            let _ = f;
            flip_bit(rng, b, at, e.len)
        }
    }
}

/// Mutates the file as a whole (header, positions table, length).
fn mutate_file(rng: &mut Rng, f: &FileLayout) -> (Vec<u8>, String) {
    let mut b = f.bytes.clone();
    let what = match rng.below(6) {
        0 => {
            let d = *rng.pick(&[-4i64, -1, 1, 4]);
            let t = u64_at(&b, 0);
            let new = (t as i64 + d).max(0) as u64;
            put_u64(&mut b, 0, new);
            format!("positions table offset {t} := {new}")
        }
        1 => {
            put_u64(&mut b, 0, 0);
            "positions table offset := 0".into()
        }
        2 => match f.table_at {
            Some(t) if t + 4 <= b.len() => {
                let n = b.len() - t;
                format!("positions table: {}", flip_bit(rng, &mut b, t, n))
            }
            _ => flip_bit(rng, &mut b, 0, 8),
        },
        3 => {
            let len = 1 + rng.below(b.len() - 1);
            b.truncate(len);
            format!("truncated to {len} bytes")
        }
        4 => {
            let n = 1 + rng.below(8);
            b.extend((0..n).map(|_| rng.next() as u8));
            format!("{n} bytes appended")
        }
        _ => flip_bit(rng, &mut b, 0, f.bytes.len()),
    };
    (b, what)
}

fn make_mutant(rng: &mut Rng, bases: &[Base]) -> Mutant {
    let bi = rng.below(bases.len());
    let base = &bases[bi];
    let last = base.files.len() - 1;
    let roll = rng.below(100);
    let (fi, target) = if roll < 40 {
        // The final signature transaction.
        let f = &base.files[last];
        let e = f.entries.iter().rposition(|e| e.is_signature).unwrap();
        (last, Some(e))
    } else if roll < 70 {
        let fi = rng.below(base.files.len());
        let e = rng.below(base.files[fi].entries.len());
        (fi, Some(e))
    } else {
        (rng.below(base.files.len()), None)
    };
    let f = &base.files[fi];
    let (bytes, what) = match target {
        Some(ei) => {
            let mut b = f.bytes.clone();
            let w = mutate_entry(rng, f, &f.entries[ei], &mut b);
            (
                b,
                format!("entry {ei} (at {}) of {}: {w}", f.entries[ei].at, f.name),
            )
        }
        None => {
            let (b, w) = mutate_file(rng, f);
            (b, format!("{}: {w}", f.name))
        }
    };
    Mutant {
        base: bi,
        file: fi,
        bytes,
        what,
    }
}

/// Writes a mutant as a ledger directory: its changed file, links to the base's others.
fn write_mutant(dir: &Path, bases: &[Base], m: &Mutant) {
    std::fs::create_dir_all(dir).unwrap();
    let base = &bases[m.base];
    for (i, f) in base.files.iter().enumerate() {
        let to = dir.join(&f.name);
        if i == m.file {
            std::fs::write(&to, &m.bytes).unwrap();
        } else {
            std::fs::hard_link(base.dir.join(&f.name), &to)
                .or_else(|_| std::fs::copy(base.dir.join(&f.name), &to).map(|_| ()))
                .unwrap();
        }
    }
}

/// CCF's verdict on each directory: (ok, error).
fn ccf_verdicts(py: &Path, dirs: &[PathBuf]) -> HashMap<PathBuf, (bool, String)> {
    let script = common::repo().join("tests/interop/ccf_verdicts.py");
    let mut child = Command::new(py)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python");
    let mut input = String::new();
    for d in dirs {
        input.push_str(&format!("{}\n", d.display()));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "ccf_verdicts.py failed");
    let mut verdicts = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        verdicts.insert(
            PathBuf::from(v["dir"].as_str().unwrap()),
            (
                v["ok"].as_bool().unwrap(),
                v["error"].as_str().unwrap_or("").to_owned(),
            ),
        );
    }
    assert_eq!(verdicts.len(), dirs.len(), "a verdict for every directory");
    verdicts
}

/// The ledgers mutated: Vellum samples (current and legacy version fields), then CCF's.
fn bases(work: &Path) -> Vec<Base> {
    let sample = |name: &str, legacy_versions: bool| {
        let s = write_sample(
            &work.join(name),
            &SampleOptions {
                entries: 14,
                signature_interval: 4,
                chunk_size: 4 * 1024,
                legacy_versions,
                ..Default::default()
            },
        )
        .unwrap();
        s.ledger_dir
    };
    let mut bases = vec![
        load_base("vellum sample", &sample("sample", false)),
        load_base(
            "vellum sample with legacy versions",
            &sample("legacy", true),
        ),
    ];
    for s in [
        "acme_containing_service",
        "cose_flipflop_service",
        "double_sealed_service",
        "expired_service",
    ] {
        bases.push(load_base(s, &common::ccf_ledger(s)));
    }
    bases
}

fn python_or_skip() -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        assert!(
            !interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python: set VELLUM_PYTHON or run scripts/test.sh"
        );
        eprintln!("SKIPPED: no Python with ccf (run scripts/test.sh)");
    }
    py
}

/// Audits every directory and compares with CCF; panics listing every disagreement.
fn compare(py: &Path, cases: &[(PathBuf, String)]) -> (usize, usize) {
    let dirs: Vec<PathBuf> = cases.iter().map(|(d, _)| d.clone()).collect();
    let ccf = ccf_verdicts(py, &dirs);
    let mut disagreements = Vec::new();
    let mut intact = 0;
    for (dir, what) in cases {
        let ours = audit_dir(dir, &AuditOptions::default(), |_| {});
        let (theirs, why) = &ccf[dir];
        if ours.is_ok() != *theirs {
            disagreements.push(format!(
                "{what}\n    vellum: {}\n    ccf:    {}",
                match &ours {
                    Ok(r) => format!("intact ({} transactions)", r.transactions),
                    Err(e) => e.to_string(),
                },
                if *theirs {
                    "intact".to_owned()
                } else {
                    why.clone()
                }
            ));
        }
        if *theirs {
            intact += 1;
        }
    }
    assert!(
        disagreements.is_empty(),
        "vellum audit and ccf FULL disagree on {} of {} ledgers:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    (cases.len(), intact)
}

#[test]
fn vellum_audit_agrees_with_ccf_on_mutants() {
    let Some(py) = python_or_skip() else { return };
    let n: usize = std::env::var("VELLUM_DIFF_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("VELLUM_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_204);
    let work = tempfile::tempdir().unwrap();
    let bases = bases(work.path());
    let mut rng = Rng(seed);
    let mut cases = Vec::new();
    // The unmutated ledgers first: both must call them intact.
    for b in &bases {
        cases.push((b.dir.clone(), format!("{}: unmutated", b.label)));
    }
    for i in 0..n {
        let m = make_mutant(&mut rng, &bases);
        let dir = work.path().join(format!("mutant-{i}"));
        write_mutant(&dir, &bases, &m);
        cases.push((
            dir,
            format!("mutant {i} of {}: {}", bases[m.base].label, m.what),
        ));
    }
    let (total, intact) = compare(&py, &cases);
    println!("{total} ledgers (seed {seed}): {intact} intact by both, the rest refused by both");
    // The mutants must exercise both verdicts, or the test proves little.
    assert!(
        intact > bases.len() && intact < total,
        "{intact} of {total}"
    );
}

/// Ledgers whose entries carry a non-zero max conflict version (as older CCF releases wrote):
/// written so and signed (`--legacy-versions`), both verifiers accept them; rewriting the field
/// in signed entries breaks the signed roots for both; in the final signature transaction
/// (which no signature covers) both accept it.
#[test]
fn max_conflict_version_rewrites_agree_with_ccf() {
    let Some(py) = python_or_skip() else { return };
    let work = tempfile::tempdir().unwrap();
    let bases = bases(work.path());
    // The legacy sample: every entry has a non-zero max conflict version, and with the ledger
    // secret every GCM tag (whose associated data holds it) checks too.
    let legacy = &bases[1];
    for f in &legacy.files {
        for e in &f.entries {
            let at = e.max_conflict_at.unwrap();
            assert_ne!(u64_at(&f.bytes, at), 0, "{} entry at {}", f.name, e.at);
        }
    }
    let secret_hex = std::fs::read_to_string(legacy.dir.join("../ledger_secret")).unwrap();
    let secret: [u8; 32] = hex::decode(secret_hex.trim()).unwrap().try_into().unwrap();
    let with_secret = AuditOptions {
        ledger_secret: Some(vellum_core::entry::LedgerSecret::from_bytes(secret)),
        ..Default::default()
    };
    let r = audit_dir(&legacy.dir, &with_secret, |_| {}).unwrap();
    assert!(r.secret_checked && r.signatures > 3, "{r:?}");
    let mut cases = vec![(legacy.dir.clone(), "legacy sample, unmutated".to_owned())];
    for (bi, b) in bases.iter().enumerate() {
        let last = b.files.len() - 1;
        let final_sig = b.files[last]
            .entries
            .iter()
            .rposition(|e| e.is_signature)
            .unwrap();
        // The final signature only; then the first, a middle and the last entry of every file.
        let mut targets = vec![(last, final_sig, "final signature")];
        for (fi, f) in b.files.iter().enumerate() {
            for (ei, label) in [(0, "first entry"), (f.entries.len() / 2, "middle entry")] {
                if (fi, ei) != (last, final_sig) && !targets.iter().any(|t| (t.0, t.1) == (fi, ei))
                {
                    targets.push((fi, ei, label));
                }
            }
        }
        for (k, (fi, ei, label)) in targets.into_iter().enumerate() {
            let f = &b.files[fi];
            let e = &f.entries[ei];
            let mut bytes = f.bytes.clone();
            put_u64(&mut bytes, e.max_conflict_at.unwrap(), e.at as u64 + 7);
            let m = Mutant {
                base: bi,
                file: fi,
                bytes,
                what: format!(
                    "{}: max conflict version of {label} {ei} of {} := {}",
                    b.label,
                    f.name,
                    e.at + 7
                ),
            };
            let dir = work.path().join(format!("mcv-{bi}-{k}"));
            write_mutant(&dir, &bases, &m);
            cases.push((dir, m.what));
        }
    }
    let (total, intact) = compare(&py, &cases);
    assert_eq!(
        intact,
        bases.len() + 1,
        "only the legacy sample and final-signature rewrites pass ({total} cases)"
    );
}

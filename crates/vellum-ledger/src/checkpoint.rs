//! Restart checkpoints: what the engine would otherwise rebuild by reading and hashing every
//! entry of the ledger (ten million entries take tens of seconds).
//!
//! A checkpoint covers the committed chunks of the ledger, which never change again: their
//! names and lengths, the Merkle tree at their last seqno (a signature transaction, since every
//! closed chunk ends on one), the view runs and the seqnos of the signature transactions. A
//! node writes one when it stops and, in the background, every [`CHECKPOINT_EVERY`] committed
//! transactions, so a crash rebuilds at most that many entries plus the uncommitted tail.
//!
//! Trust: the file sits beside the chunks it describes and carries an HMAC-SHA256 keyed by a
//! key derived from the ledger secret. On opening, the engine also checks the tree against the
//! ledger itself: the last covered entry's leaf and the root its signature signs. Whatever does
//! not match (a damaged, foreign or stale checkpoint, or chunks that changed) makes the engine
//! fall back to reading every entry, which is always correct. `vellum ledger audit` still
//! checks every entry of every chunk.
//!
//! Damage: the checkpoint records each covered chunk's length and the SHA-256 of its header and
//! positions table, which every start reads anyway to locate the entries; a chunk whose length
//! or table changed makes the engine read every entry, which reports the damage. An entry's
//! own bytes are covered by its GCM tag, checked at each read (a damaged entry is refused, never
//! served), and by `vellum audit`.
//!
//! Format (little-endian; `docs/formats.md`): magic `VLMCKPT2`, `u64 seqno`, `u32` chunk count
//! then per chunk `u16` name length, name, `u64` length, 32-byte table digest; `u64` run count
//! then per view run
//! `u64 first seqno`, `u64 view`; `u64` signature count then the seqnos (`u64` each); `u64`
//! length of the tree then [`MerkleTree::snapshot`]'s bytes; and the 32-byte MAC of all that.

use std::path::{Path, PathBuf};

use vellum_core::entry::{LedgerSecret, hmac_sha256};
use vellum_core::merkle::MerkleTree;

use crate::chunk::ChunkName;
use crate::files::write_durably;

/// The checkpoint's file name, in the ledger directory (chunk listing ignores it).
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// A node writes a checkpoint in the background once this many transactions were committed
/// since the last one.
pub const CHECKPOINT_EVERY: u64 = 1 << 20;

const MAGIC: &[u8; 8] = b"VLMCKPT2";
/// The first format, without table digests: read as stale (every entry is read once).
const MAGIC_V1: &[u8; 8] = b"VLMCKPT1";
const MAC_LABEL: &str = "Vellum restart checkpoint";
const MAC_SIZE: usize = 32;

/// Why a checkpoint could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The MAC does not verify with this ledger's secret (damaged, or another ledger's).
    #[error("checkpoint MAC does not verify with this ledger's secret")]
    Mac,
    /// The bytes are not a checkpoint.
    #[error("checkpoint is malformed: {0}")]
    Malformed(&'static str),
}

/// Runs of transactions written in the same view: `(first seqno, view)`, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewRuns {
    runs: Vec<(u64, u64)>,
    len: u64,
}

impl ViewRuns {
    /// Transactions held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no transaction is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends transaction `len() + 1`, written in `view`.
    pub fn push(&mut self, view: u64) {
        self.len += 1;
        if self.runs.last().is_none_or(|(_, v)| *v != view) {
            self.runs.push((self.len, view));
        }
    }

    /// The view of the transaction at `seqno`.
    pub fn get(&self, seqno: u64) -> Option<u64> {
        if seqno == 0 || seqno > self.len {
            return None;
        }
        let i = self.runs.partition_point(|(first, _)| *first <= seqno);
        i.checked_sub(1).map(|i| self.runs[i].1)
    }

    /// CCF's view history of transactions `1..=seqno`: entry `v - 1` is the first seqno of view
    /// `v`, for every view up to `seqno`'s (a view without transactions gets the first seqno
    /// of the next view that has some).
    pub fn history(&self, seqno: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for &(first, view) in self.runs.iter().filter(|(first, _)| *first <= seqno) {
            let view = usize::try_from(view).unwrap_or(usize::MAX);
            while out.len() < view {
                out.push(first);
            }
        }
        out
    }

    /// The last transaction of each view run that ends or continues within `from..=to`,
    /// clipped to it, ascending: `(seqno, view)`. (What openraft reads at start as the last log
    /// id of each leader, answered without reading the ledger.)
    pub fn last_of_each_run(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let to = to.min(self.len);
        let mut out = Vec::new();
        for (i, &(first, view)) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map_or(self.len, |(next, _)| next - 1);
            if end < from || first > to {
                continue;
            }
            out.push((end.min(to), view));
        }
        out
    }

    /// The view of the last transaction.
    pub fn last(&self) -> Option<u64> {
        self.runs.last().map(|(_, v)| *v)
    }

    /// Keeps transactions `1..=len`.
    pub fn truncate(&mut self, len: u64) {
        if len < self.len {
            self.runs.retain(|(first, _)| *first <= len);
            self.len = len;
        }
    }
}

/// A committed chunk a checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoveredChunk {
    /// Its file name.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// SHA-256 of its header and positions table ([`table_digest`]).
    pub table_digest: [u8; 32],
}

/// SHA-256 of a closed chunk's 8-byte header and its positions table.
pub fn table_digest(header: &[u8], table: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(header);
    h.update(table);
    h.finalize().into()
}

/// A checkpoint: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last transaction covered: the last seqno of the last chunk in `chunks`.
    pub seqno: u64,
    /// The committed chunks covered, in order.
    pub chunks: Vec<CoveredChunk>,
    /// Views of transactions `1..=seqno`.
    pub views: ViewRuns,
    /// Seqnos of the signature transactions up to `seqno`.
    pub signatures: Vec<u64>,
    /// [`MerkleTree::snapshot`] of the tree over leaves `0..=seqno`.
    pub tree: Vec<u8>,
}

impl Checkpoint {
    /// A checkpoint at `seqno` from live state that may run past it: views and signatures
    /// after `seqno` are left out, and the tree is taken as it was at `seqno + 1` leaves.
    pub fn at(
        seqno: u64,
        chunks: Vec<CoveredChunk>,
        views: &ViewRuns,
        signatures: &[u64],
        tree: &MerkleTree,
    ) -> Result<Checkpoint, vellum_core::merkle::TreeError> {
        let mut runs = views.clone();
        runs.truncate(seqno);
        Ok(Checkpoint {
            seqno,
            chunks,
            views: runs,
            signatures: signatures[..signatures.partition_point(|s| *s <= seqno)].to_vec(),
            tree: tree.snapshot(seqno + 1)?,
        })
    }

    /// The file of the checkpoint in ledger directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CHECKPOINT_FILE)
    }

    /// The bytes of the file, MAC included.
    pub fn encode(&self, secret: &LedgerSecret) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.tree.len() + 8 * self.signatures.len() + 16 * self.views.runs.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.seqno.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
            out.extend_from_slice(c.name.as_bytes());
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.table_digest);
        }
        out.extend_from_slice(&(self.views.runs.len() as u64).to_le_bytes());
        for (first, view) in &self.views.runs {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&view.to_le_bytes());
        }
        out.extend_from_slice(&(self.signatures.len() as u64).to_le_bytes());
        for s in &self.signatures {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&(self.tree.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.tree);
        let mac = hmac_sha256(&secret.derive(MAC_LABEL), &out);
        out.extend_from_slice(&mac);
        out
    }

    /// Reads the bytes of a checkpoint file, checking its MAC first.
    pub fn decode(bytes: &[u8], secret: &LedgerSecret) -> Result<Checkpoint, CheckpointError> {
        let body_len = bytes
            .len()
            .checked_sub(MAC_SIZE)
            .ok_or(CheckpointError::Malformed("shorter than its MAC"))?;
        let (body, mac) = bytes.split_at(body_len);
        // Not secret-dependent timing that matters: the MAC guards against damage and mix-ups,
        // and whoever can write the file can read the secret beside it.
        if hmac_sha256(&secret.derive(MAC_LABEL), body) != mac {
            return Err(CheckpointError::Mac);
        }
        let mut r = Reader { buf: body, pos: 0 };
        match r.take(8)? {
            m if m == MAGIC => {}
            m if m == MAGIC_V1 => {
                return Err(CheckpointError::Malformed(
                    "an older format, without table digests",
                ));
            }
            _ => return Err(CheckpointError::Malformed("magic")),
        }
        let seqno = r.u64()?;
        let n = r.u32()?;
        let mut chunks = Vec::new();
        for _ in 0..n {
            let len = r.u16()? as usize;
            let name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| CheckpointError::Malformed("chunk name"))?
                .to_owned();
            let len = r.u64()?;
            let table_digest = r
                .take(32)?
                .try_into()
                .map_err(|_| CheckpointError::Malformed("table digest"))?;
            chunks.push(CoveredChunk {
                name,
                len,
                table_digest,
            });
        }
        // The chunks are committed, follow each other from seqno 1 and end at `seqno`.
        let mut next = 1;
        for c in &chunks {
            match ChunkName::parse(&c.name) {
                Some(ChunkName {
                    start,
                    end: Some(end),
                    committed: true,
                }) if start == next => next = end + 1,
                _ => return Err(CheckpointError::Malformed("chunk names")),
            }
        }
        if next != seqno + 1 {
            return Err(CheckpointError::Malformed("chunk names"));
        }
        let mut views = ViewRuns::default();
        let n = r.u64()?;
        for _ in 0..n {
            let (first, view) = (r.u64()?, r.u64()?);
            let ascending = views
                .runs
                .last()
                .is_none_or(|(f, v)| first > *f && view > *v);
            if !ascending || first == 0 || first > seqno || (views.runs.is_empty() && first != 1) {
                return Err(CheckpointError::Malformed("view runs"));
            }
            views.runs.push((first, view));
        }
        views.len = seqno;
        if seqno > 0 && views.runs.is_empty() {
            return Err(CheckpointError::Malformed("view runs"));
        }
        let n = r.u64()?;
        let mut signatures = Vec::new();
        for _ in 0..n {
            let s = r.u64()?;
            if signatures.last().is_some_and(|l| s <= *l) || s > seqno || s == 0 {
                return Err(CheckpointError::Malformed("signature seqnos"));
            }
            signatures.push(s);
        }
        let n = usize::try_from(r.u64()?).map_err(|_| CheckpointError::Malformed("tree"))?;
        let tree = r.take(n)?.to_vec();
        if r.pos != body.len() {
            return Err(CheckpointError::Malformed("bytes after the tree"));
        }
        Ok(Checkpoint {
            seqno,
            chunks,
            views,
            signatures,
            tree,
        })
    }

    /// Reads the checkpoint of ledger directory `dir`, if there is one.
    pub fn read(dir: &Path, secret: &LedgerSecret) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = Checkpoint::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => Checkpoint::decode(&bytes, secret).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Writes `bytes` (from [`Checkpoint::encode`]) as the checkpoint of ledger directory
    /// `dir`, atomically ([`write_durably`]).
    pub fn write(dir: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
        let path = Checkpoint::path(dir);
        write_durably(&path, bytes).map_err(|e| io(&path, e))
    }

    /// Removes the checkpoint of ledger directory `dir`, if any.
    pub fn remove(dir: &Path) -> Result<(), CheckpointError> {
        let path = Checkpoint::path(dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let b = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(CheckpointError::Malformed("truncated"))?;
        self.pos += n;
        Ok(b)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, CheckpointError> {
        self.fixed().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        self.fixed().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        self.fixed().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_of_each_run_is_what_openraft_finds_by_bisection() {
        let mut v = ViewRuns::default();
        for view in [2, 2, 2, 3, 5, 5, 5, 5, 7] {
            v.push(view);
        }
        // Runs: 1..=3 view 2, 4 view 3, 5..=8 view 5, 9 view 7.
        assert_eq!(
            v.last_of_each_run(1, 9),
            vec![(3, 2), (4, 3), (8, 5), (9, 7)]
        );
        assert_eq!(v.last_of_each_run(2, 6), vec![(3, 2), (4, 3), (6, 5)]);
        assert_eq!(v.last_of_each_run(5, 7), vec![(7, 5)]);
        assert_eq!(v.last_of_each_run(9, 20), vec![(9, 7)]);
        assert!(v.last_of_each_run(10, 20).is_empty());
    }
    use proptest::prelude::*;
    use vellum_core::Hash;

    fn secret(b: u8) -> LedgerSecret {
        LedgerSecret::from_bytes([b; 32])
    }

    fn sample() -> Checkpoint {
        let mut tree = MerkleTree::new();
        for i in 0..40u64 {
            tree.append(Hash::digest(&i.to_le_bytes()));
        }
        let mut views = ViewRuns::default();
        for s in 1..=39u64 {
            views.push(if s < 10 { 1 } else { 2 });
        }
        Checkpoint::at(
            30,
            vec![
                CoveredChunk {
                    name: "ledger_1-12.committed".into(),
                    len: 900,
                    table_digest: [1; 32],
                },
                CoveredChunk {
                    name: "ledger_13-30.committed".into(),
                    len: 1200,
                    table_digest: [2; 32],
                },
            ],
            &views,
            &[1, 12, 30, 35],
            &tree,
        )
        .unwrap()
    }

    #[test]
    fn view_runs() {
        let mut v = ViewRuns::default();
        assert_eq!(v.get(1), None);
        for view in [2, 2, 2, 3, 3, 5] {
            v.push(view);
        }
        assert_eq!(v.len(), 6);
        // CCF's view history: entry v-1 is view v's first seqno; views 1 and 4 have none
        // (the next view's first seqno).
        assert_eq!(v.history(6), vec![1, 1, 4, 6, 6]);
        assert_eq!(v.history(5), vec![1, 1, 4]);
        assert_eq!(v.history(0), Vec::<u64>::new());
        let got: Vec<_> = (0..=7).map(|s| v.get(s)).collect();
        assert_eq!(
            got,
            [
                None,
                Some(2),
                Some(2),
                Some(2),
                Some(3),
                Some(3),
                Some(5),
                None
            ]
        );
        v.truncate(4);
        assert_eq!(
            (v.len(), v.last(), v.get(4), v.get(5)),
            (4, Some(3), Some(3), None)
        );
        v.truncate(3);
        assert_eq!((v.last(), v.runs.len()), (Some(2), 1));
        v.push(4);
        assert_eq!(v.get(4), Some(4));
    }

    #[test]
    fn round_trip_and_cut_at_the_seqno() {
        let cp = sample();
        assert_eq!(cp.signatures, [1, 12, 30]);
        assert_eq!(cp.views.len(), 30);
        assert_eq!(cp.views.get(30), Some(2));
        let back = Checkpoint::decode(&cp.encode(&secret(1)), &secret(1)).unwrap();
        assert_eq!(back, cp);
        let tree = MerkleTree::from_snapshot(&back.tree).unwrap();
        assert_eq!(tree.size(), 31);
    }

    #[test]
    fn another_secret_or_a_flipped_bit_is_refused() {
        let bytes = sample().encode(&secret(1));
        assert_eq!(
            Checkpoint::decode(&bytes, &secret(2)),
            Err(CheckpointError::Mac)
        );
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert_eq!(
                Checkpoint::decode(&bad, &secret(1)),
                Err(CheckpointError::Mac)
            );
        }
    }

    #[test]
    fn the_first_format_is_read_as_stale() {
        let bytes = sample().encode(&secret(1));
        let mut body = bytes[..bytes.len() - MAC_SIZE].to_vec();
        body[..8].copy_from_slice(MAGIC_V1);
        let mac = hmac_sha256(&secret(1).derive(MAC_LABEL), &body);
        body.extend_from_slice(&mac);
        assert_eq!(
            Checkpoint::decode(&body, &secret(1)),
            Err(CheckpointError::Malformed(
                "an older format, without table digests"
            ))
        );
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path(), &secret(1)), Ok(None));
        let cp = sample();
        Checkpoint::write(dir.path(), &cp.encode(&secret(1))).unwrap();
        assert_eq!(Checkpoint::read(dir.path(), &secret(1)), Ok(Some(cp)));
        assert!(!dir.path().join(".checkpoint.tmp").exists());
        Checkpoint::remove(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path(), &secret(1)), Ok(None));
    }

    proptest! {
        /// Any bytes, with a valid MAC or not, decode or fail without a panic.
        #[test]
        fn decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = secret(7);
            let _ = Checkpoint::decode(&body, &s);
            let mut signed = body.clone();
            signed.extend_from_slice(&hmac_sha256(&s.derive(MAC_LABEL), &body));
            let _ = Checkpoint::decode(&signed, &s);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&body);
            let mac = hmac_sha256(&s.derive(MAC_LABEL), &framed);
            framed.extend_from_slice(&mac);
            let _ = Checkpoint::decode(&framed, &s);
        }
    }
}

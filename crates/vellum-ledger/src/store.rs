//! The node's ledger files: one writer appending CCF chunk files, with explicit syncs so that
//! callers can batch many entries per `fdatasync` (group commit), chunk rotation after
//! signatures, `.committed` renames, truncation of an uncommitted suffix, and recovery.
//!
//! Durability contract: an entry is durable once [`LedgerFiles::sync`] has returned `Ok` after
//! its [`LedgerFiles::append`]. Appends are gathered in memory ([`WRITE_BUFFER`] at most) and
//! written to the open chunk in one `write` before each sync: the buffered bytes are never
//! acknowledged, so this changes nothing a crash could show, and reads see them. After any I/O error the store is *poisoned*: every later append,
//! sync, commit or truncation fails with [`StoreError::Poisoned`] (naming the first error), so
//! nothing is ever acknowledged after a failed write; reads keep working.
//!
//! Recovery ([`LedgerFiles::open`]): closed chunks are parsed in full and any damage is
//! reported as [`StoreError::Corrupt`], never repaired. The open chunk (the last file) is read
//! entry by entry; a torn tail (an incomplete or unparseable suffix, i.e. bytes that were never
//! synced) is cut off and reported in [`Recovery`], so the caller can refuse to start if that
//! suffix reaches into what it knows was committed. Zeros after the last whole entry are the
//! space written ahead of it ([`PREFILL_AHEAD`]), not a torn tail: they stay.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vellum_core::entry::{LedgerSecrets, RawEntry};

use crate::chunk::{self, CHUNK_HEADER_SIZE, Chunk, ChunkName, list_chunks};

/// Default chunk size before a new chunk starts (after the next signature), as CCF.
pub const DEFAULT_CHUNK_SIZE: u64 = 5 * 1024 * 1024;

/// Appended bytes held in memory before they are written to the open chunk (they are written
/// at every sync anyway): one `write` per group of entries instead of one per entry.
pub const WRITE_BUFFER: usize = 256 * 1024;

/// How far ahead of its last entry the open chunk is kept written with zeros. Appending to a
/// file changes its size and allocates blocks, so each `fdatasync` of a growing file also
/// commits the file system's journal; overwriting blocks that were already written (and
/// synced) only writes the data, markedly faster (`docs/benchmarks.md` has the measurements,
/// from `scripts/fsync_probe.py`): what PostgreSQL gets by writing its WAL segments out in full
/// before use. The zeros are written at a sync, half of this or more at a time, so that one
/// sync in many carries them.
pub const PREFILL_AHEAD: u64 = 1024 * 1024;

/// Zeros written ahead go out one `write` of this many bytes at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error; the store is now poisoned.
    #[error("ledger I/O error on {path}: {message}")]
    Io {
        /// File or directory.
        path: String,
        /// OS error.
        message: String,
    },
    /// An earlier I/O error poisoned the store: no more writes are accepted.
    #[error("ledger store stopped accepting writes after an earlier error: {0}")]
    Poisoned(String),
    /// Ledger files are damaged (never repaired automatically).
    #[error("ledger file {path} is corrupt: {message}")]
    Corrupt {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The caller broke the contract (e.g. appended a seqno out of order).
    #[error("ledger store misuse: {0}")]
    Usage(String),
    /// No entry at that seqno.
    #[error("no ledger entry at seqno {0}")]
    NotFound(u64),
    /// The entry is in a committed chunk this node no longer keeps on disk (it is archived):
    /// fetch the chunk and [`LedgerFiles::attach_chunk`] it.
    #[error("ledger entry {seqno} is in {chunk}, which this node keeps in its archive only")]
    Absent {
        /// The chunk's file name.
        chunk: String,
        /// The entry asked for.
        seqno: u64,
    },
    /// The files do not match what [`LedgerFiles::open_trusting`] was told to trust.
    #[error("ledger files differ from the checkpoint: {0}")]
    Stale(String),
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Last seqno present after recovery (0: empty ledger).
    pub last_seqno: u64,
    /// Seqno of the first entry dropped from a torn tail, if any.
    pub dropped_from: Option<u64>,
    /// Bytes cut off the open chunk.
    pub dropped_bytes: u64,
}

/// A committed chunk this node dropped from its disk, and what a fetched copy must match
/// ([`LedgerFiles::absent_chunk`]).
#[derive(Debug, Clone)]
pub struct AbsentChunk {
    fi: usize,
    name: ChunkName,
    path: PathBuf,
    expected: crate::checkpoint::CoveredChunk,
    secrets: LedgerSecrets,
}

/// A copy of an absent chunk that [`AbsentChunk::verify`] checked and wrote back to disk.
#[derive(Debug)]
pub struct VerifiedChunk {
    fi: usize,
    name: ChunkName,
    locs: Vec<Loc>,
}

impl AbsentChunk {
    /// The chunk's file name.
    pub fn name(&self) -> String {
        self.name.file_name()
    }

    /// Checks a fetched copy against what the node recorded of the chunk (length, header and
    /// positions table), and that every entry in it has the seqno its position gives and
    /// opens under the ledger secrets (its GCM tag covers both domains); then writes it back
    /// to disk durably. A copy that does not match is refused with [`StoreError::Corrupt`]
    /// and nothing is written. Needs no lock on the store.
    pub fn verify(self, bytes: &[u8]) -> Result<VerifiedChunk, StoreError> {
        let label = self.name.file_name();
        let corrupt = |m: String| StoreError::Corrupt {
            path: format!("the fetched copy of {label}"),
            message: m,
        };
        let len = bytes.len() as u64;
        if len != self.expected.len {
            return Err(corrupt(format!(
                "{len} bytes, expected {}",
                self.expected.len
            )));
        }
        let header: [u8; CHUNK_HEADER_SIZE] = bytes
            .get(..CHUNK_HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| corrupt("no header".into()))?;
        let table_at = u64::from_le_bytes(header);
        chunk::check_table(table_at, len, Some(&self.name)).map_err(|e| corrupt(e.to_string()))?;
        let table = &bytes[table_at as usize..];
        if crate::checkpoint::table_digest(&header, table) != self.expected.table_digest {
            return Err(corrupt("its header or positions table differs".into()));
        }
        let positions = chunk::positions(table);
        let start = self.name.start;
        let mut locs = Vec::with_capacity(positions.len());
        for (k, at) in positions.iter().enumerate() {
            let next = positions.get(k + 1).copied().unwrap_or(table_at);
            let seqno = start + k as u64;
            let entry = usize::try_from(*at)
                .ok()
                .zip(usize::try_from(next).ok())
                .and_then(|(a, b)| bytes.get(a..b))
                .filter(|b| !b.is_empty())
                .ok_or_else(|| corrupt(format!("entry {seqno} lies outside the chunk")))?;
            let (raw, _) =
                RawEntry::parse(entry).map_err(|e| corrupt(format!("entry {seqno}: {e}")))?;
            if raw.iv.seqno != seqno || raw.bytes.len() != entry.len() {
                return Err(corrupt(format!(
                    "entry {seqno} is not where its position says"
                )));
            }
            self.secrets
                .open(&raw)
                .map_err(|e| corrupt(format!("entry {seqno}: {e}")))?;
            locs.push(Loc::new(self.fi, *at, entry.len() as u32)?);
        }
        let end = self.name.end.unwrap_or(0);
        if end + 1 != start + locs.len() as u64 {
            return Err(corrupt(format!(
                "{} entries, expected {}",
                locs.len(),
                (end + 1).saturating_sub(start)
            )));
        }
        crate::files::write_durably(&self.path, bytes).map_err(|e| io(&self.path, e))?;
        Ok(VerifiedChunk {
            fi: self.fi,
            name: self.name,
            locs,
        })
    }
}

/// A committed chunk, as [`LedgerFiles::committed_chunk_files`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Its file name (`ledger_A-B.committed`).
    pub name: String,
    /// Its first seqno.
    pub start: u64,
    /// Its last seqno.
    pub end: u64,
    /// Whether the file is on this node's disk (not dropped after archiving).
    pub on_disk: bool,
}

/// Where an entry is: 12 bytes per transaction (a ledger of ten million keeps 120 MB of
/// these), as chunk files stay under 4 GiB and number fewer than 2^32.
#[derive(Debug, Clone)]
struct Loc {
    file: u32,
    offset: u32,
    len: u32,
}

impl Loc {
    fn new(file: usize, offset: u64, len: u32) -> Result<Loc, StoreError> {
        match (u32::try_from(file), u32::try_from(offset)) {
            (Ok(file), Ok(offset)) => Ok(Loc { file, offset, len }),
            _ => Err(StoreError::Usage("chunk beyond 4 GiB".into())),
        }
    }

    fn file(&self) -> usize {
        self.file as usize
    }

    fn offset(&self) -> u64 {
        u64::from(self.offset)
    }
}

#[derive(Debug)]
struct ChunkFile {
    name: ChunkName,
    path: PathBuf,
    /// The file is not on this node's disk: a committed chunk kept in the archive only
    /// ([`LedgerFiles::drop_chunk`]); reads of its entries fail with [`StoreError::Absent`]
    /// until [`LedgerFiles::attach_chunk`] brings it back.
    absent: bool,
    /// What a checkpoint recorded of a chunk that was absent when the store opened: its
    /// entries' locations are unknown (placeholders, length 0) until it is attached.
    unlocated: Option<crate::checkpoint::CoveredChunk>,
}

impl ChunkFile {
    fn local(name: ChunkName, path: PathBuf) -> ChunkFile {
        ChunkFile {
            name,
            path,
            absent: false,
            unlocated: None,
        }
    }
}

/// The ledger directory of one node. Single writer; not thread-safe by itself (wrap it in the
/// group-commit writer or a mutex).
#[derive(Debug)]
pub struct LedgerFiles {
    dir: PathBuf,
    chunk_size: u64,
    files: Vec<ChunkFile>,
    /// Location of every entry, index = seqno - 1.
    locs: Vec<Loc>,
    /// The open chunk: handle, its positions so far, its size (including `pending`).
    open: Option<(File, Vec<u32>, u64)>,
    /// Appended bytes of the open chunk not yet written to it; they follow the written ones.
    pending: Vec<u8>,
    /// End of the zeros written ahead of the open chunk's entries (see [`PREFILL_AHEAD`]); the
    /// file is as long as this or as its written entries, whichever is longer.
    zeros_end: u64,
    /// Writing zeros ahead failed in the open chunk (say, the disk is full): no more tries in it.
    prefill_failed: bool,
    /// Seqno of the last signature.
    last_signature: u64,
    committed: u64,
    dir_dirty: bool,
    unsynced: bool,
    poisoned: Option<String>,
}

impl LedgerFiles {
    /// Opens (creating if needed) the ledger directory `dir` and recovers it. With the ledger
    /// secret, every entry's GCM tag is checked too (any altered byte of its public or private
    /// domain is then reported, not just framing damage).
    pub fn open(
        dir: &Path,
        chunk_size: u64,
        secret: Option<&LedgerSecrets>,
    ) -> Result<(LedgerFiles, Recovery), StoreError> {
        LedgerFiles::open_trusting(dir, chunk_size, secret, &[])
    }

    /// [`LedgerFiles::open`], taking the first chunks on trust: `trusted` names them in order
    /// with their lengths (as a checkpoint recorded them, see [`LedgerFiles::committed_chunks`]).
    /// Their entries are located from each chunk's positions table alone, without reading or
    /// checking the entries, which is what makes a restart from a checkpoint fast. When the
    /// files do not start with exactly those chunks, nothing is changed on disk and
    /// [`StoreError::Stale`] is returned (the caller then opens without trust).
    pub fn open_trusting(
        dir: &Path,
        chunk_size: u64,
        secret: Option<&LedgerSecrets>,
        trusted: &[crate::checkpoint::CoveredChunk],
    ) -> Result<(LedgerFiles, Recovery), StoreError> {
        LedgerFiles::open_trusting_archived(dir, chunk_size, secret, trusted, false)
    }

    /// [`LedgerFiles::open_trusting`], where trusted chunks missing from the directory may be
    /// `archived` (dropped from this disk past the node's retention, [`LedgerFiles::drop_chunk`]):
    /// they are then recorded as absent, their entries located once a fetched copy is
    /// attached ([`LedgerFiles::attach_chunk`]).
    pub fn open_trusting_archived(
        dir: &Path,
        chunk_size: u64,
        secret: Option<&LedgerSecrets>,
        trusted: &[crate::checkpoint::CoveredChunk],
        archived: bool,
    ) -> Result<(LedgerFiles, Recovery), StoreError> {
        crate::files::create_private_dir(dir).map_err(|e| io(dir, e))?;
        let mut store = LedgerFiles {
            dir: dir.to_path_buf(),
            chunk_size: chunk_size.max(1),
            files: Vec::new(),
            locs: Vec::new(),
            open: None,
            pending: Vec::new(),
            zeros_end: 0,
            prefill_failed: false,
            last_signature: 0,
            committed: 0,
            dir_dirty: false,
            unsynced: false,
            poisoned: None,
        };
        let mut recovery = Recovery::default();
        let mut present = list_chunks(dir, false)
            .map_err(|e| io(dir, e))?
            .into_iter()
            .peekable();
        for covered in trusted {
            if let Some((name, path)) = present.next_if(|(n, _)| n.file_name() == covered.name) {
                store.push_trusted(name, path, covered)?;
            } else if archived && !store.files.is_empty() {
                // The first chunk (genesis) is never dropped.
                store.push_absent(covered)?;
            } else {
                return Err(StoreError::Stale(match present.peek() {
                    Some((n, _)) => format!("found {}, expected {}", n.file_name(), covered.name),
                    None => format!("{} is missing", covered.name),
                }));
            }
        }
        let rest: Vec<_> = present.collect();
        let n = rest.len();
        for (i, (name, path)) in rest.into_iter().enumerate() {
            let corrupt = |m: String| StoreError::Corrupt {
                path: path.display().to_string(),
                message: m,
            };
            let expected = store.locs.len() as u64 + 1;
            if name.start != expected {
                return Err(corrupt(format!(
                    "starts at seqno {}, expected {expected}",
                    name.start
                )));
            }
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let header = bytes.get(..8).map(|h| h.iter().any(|b| *b != 0));
            let closed_on_disk = header == Some(true);
            if name.end.is_some() || closed_on_disk {
                // A closed chunk: everything in it was synced before it was closed.
                let chunk = Chunk::parse(&bytes, name.end.is_some().then_some(&name))
                    .map_err(|e| corrupt(e.to_string()))?;
                let fi = store.files.len();
                for ce in &chunk.entries {
                    if let Some(secret) = secret {
                        secret
                            .open(&ce.entry)
                            .map_err(|e| corrupt(format!("entry at offset {}: {e}", ce.offset)))?;
                    }
                    store.push_loc(fi, ce.offset, ce.entry, &path)?;
                }
                let mut name = name;
                if name.end.is_none() {
                    // Closed but crashed before the rename: finish it.
                    name.end = Some(store.locs.len() as u64);
                    let to = dir.join(name.file_name());
                    std::fs::rename(&path, &to).map_err(|e| io(&path, e))?;
                    store.files.push(ChunkFile::local(name, to));
                    store.dir_dirty = true;
                } else {
                    store.files.push(ChunkFile::local(name, path));
                }
                if store.files.last().is_some_and(|f| f.name.committed) {
                    store.committed = store.locs.len() as u64;
                }
                continue;
            }
            if i + 1 != n {
                return Err(corrupt("an open chunk that is not the last file".into()));
            }
            // The open chunk: keep the longest prefix of whole entries; cut off a torn tail.
            let fi = store.files.len();
            let mut at = CHUNK_HEADER_SIZE;
            let mut positions = Vec::new();
            if bytes.len() < CHUNK_HEADER_SIZE {
                at = 0;
            }
            while at >= CHUNK_HEADER_SIZE && at < bytes.len() {
                match RawEntry::parse(&bytes[at..]) {
                    Ok((e, _))
                        if e.iv.seqno == store.locs.len() as u64 + 1
                            && secret.is_none_or(|s| s.open(&e).is_ok()) =>
                    {
                        store.push_loc(fi, at as u64, e, &path)?;
                        positions.push(at as u32);
                        at += e.bytes.len();
                    }
                    _ => break,
                }
            }
            let keep = at.max(CHUNK_HEADER_SIZE) as u64;
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            // Zeros written ahead of the entries are not a torn tail: they stay, to be
            // overwritten by the next appends.
            let zero_tail = bytes.len() >= CHUNK_HEADER_SIZE && chunk::is_zero(&bytes[at..]);
            if keep != bytes.len() as u64 && !zero_tail {
                recovery.dropped_from = Some(store.locs.len() as u64 + 1);
                recovery.dropped_bytes = bytes.len() as u64 - keep.min(bytes.len() as u64);
                if bytes.len() < CHUNK_HEADER_SIZE {
                    f.write_all(&[0u8; CHUNK_HEADER_SIZE])
                        .map_err(|e| io(&path, e))?;
                }
                f.set_len(keep).map_err(|e| io(&path, e))?;
                f.sync_data().map_err(|e| io(&path, e))?;
                tracing::warn!(
                    file = %path.display(),
                    dropped_bytes = recovery.dropped_bytes,
                    from_seqno = ?recovery.dropped_from,
                    "recovery cut a torn tail off the open ledger chunk"
                );
            }
            f.seek(SeekFrom::Start(keep)).map_err(|e| io(&path, e))?;
            store.zeros_end = if zero_tail { bytes.len() as u64 } else { keep };
            store.open = Some((f, positions, keep));
            store.files.push(ChunkFile::local(name, path));
        }
        recovery.last_seqno = store.locs.len() as u64;
        store.sync_dir_if_dirty()?;
        Ok((store, recovery))
    }

    /// Records a trusted committed chunk that is not on disk: its entries get placeholder
    /// locations until it is attached.
    fn push_absent(&mut self, covered: &crate::checkpoint::CoveredChunk) -> Result<(), StoreError> {
        let stale = |m: String| StoreError::Stale(m);
        let name = ChunkName::parse(&covered.name)
            .ok_or_else(|| stale(format!("{} is not a chunk name", covered.name)))?;
        let (Some(end), true) = (name.end, name.committed) else {
            return Err(stale(format!("{} is not a committed chunk", covered.name)));
        };
        if name.start != self.locs.len() as u64 + 1 || end < name.start {
            return Err(stale(format!(
                "{} does not follow seqno {}",
                covered.name,
                self.locs.len()
            )));
        }
        let fi = self.files.len();
        let placeholder = Loc::new(fi, 0, 0)?;
        self.locs.resize((end) as usize, placeholder);
        self.files.push(ChunkFile {
            path: self.dir.join(&covered.name),
            name,
            absent: true,
            unlocated: Some(covered.clone()),
        });
        self.committed = end;
        self.last_signature = end;
        Ok(())
    }

    /// Locates the entries of a trusted committed chunk from its positions table.
    fn push_trusted(
        &mut self,
        name: ChunkName,
        path: PathBuf,
        covered: &crate::checkpoint::CoveredChunk,
    ) -> Result<(), StoreError> {
        let (trusted_name, trusted_len) = (covered.name.as_str(), covered.len);
        let (Some(end), true) = (name.end, name.committed) else {
            return Err(StoreError::Stale(format!(
                "{} is not a committed chunk",
                name.file_name()
            )));
        };
        if name.file_name() != trusted_name || name.start != self.locs.len() as u64 + 1 {
            return Err(StoreError::Stale(format!(
                "found {}, expected {trusted_name}",
                name.file_name()
            )));
        }
        let f = File::open(&path).map_err(|e| io(&path, e))?;
        let len = f.metadata().map_err(|e| io(&path, e))?.len();
        if len != trusted_len {
            return Err(StoreError::Stale(format!(
                "{trusted_name} is {len} bytes, expected {trusted_len}"
            )));
        }
        let corrupt = |m: String| StoreError::Corrupt {
            path: path.display().to_string(),
            message: m,
        };
        let mut header = [0u8; CHUNK_HEADER_SIZE];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut header, 0).map_err(|e| io(&path, e))?;
        let table_at = u64::from_le_bytes(header);
        chunk::check_table(table_at, len, Some(&name)).map_err(|e| corrupt(e.to_string()))?;
        let mut table = vec![0u8; (len - table_at) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut table, table_at)
            .map_err(|e| io(&path, e))?;
        if crate::checkpoint::table_digest(&header, &table) != covered.table_digest {
            return Err(StoreError::Stale(format!(
                "the header or positions table of {trusted_name} changed since the checkpoint"
            )));
        }
        let positions = chunk::positions(&table);
        let fi = self.files.len();
        for (k, at) in positions.iter().enumerate() {
            let next = positions.get(k + 1).copied().unwrap_or(table_at);
            let first_ok = k > 0 || *at == CHUNK_HEADER_SIZE as u64;
            let len = next
                .checked_sub(*at)
                .filter(|l| *l > 0 && first_ok)
                .and_then(|l| u32::try_from(l).ok())
                .ok_or_else(|| corrupt(format!("positions table entry {k} is out of order")))?;
            self.locs.push(Loc::new(fi, *at, len)?);
        }
        self.files.push(ChunkFile::local(name, path));
        self.committed = end;
        // Every closed chunk ends on a signature.
        self.last_signature = end;
        Ok(())
    }

    /// Name, length and table digest of every committed chunk file, in order: what a
    /// checkpoint records for [`LedgerFiles::open_trusting`]. The digest is computed from the
    /// entries' locations (the header and positions table a closed chunk holds are exactly
    /// those), without reading the files.
    pub fn committed_chunks(&self) -> Vec<crate::checkpoint::CoveredChunk> {
        self.files
            .iter()
            .filter(|cf| cf.name.committed)
            .filter_map(|cf| self.covered(cf))
            .collect()
    }

    /// What a checkpoint records of the closed chunk `cf`.
    fn covered(&self, cf: &ChunkFile) -> Option<crate::checkpoint::CoveredChunk> {
        if let Some(covered) = &cf.unlocated {
            return Some(covered.clone());
        }
        let end = cf.name.end?;
        let locs = self.locs.get(cf.name.start as usize - 1..end as usize)?;
        let last = locs.last()?;
        let table_at = last.offset() + u64::from(last.len);
        let mut table = Vec::with_capacity(4 * locs.len());
        for l in locs {
            table.extend_from_slice(&u32::try_from(l.offset()).ok()?.to_le_bytes());
        }
        Some(crate::checkpoint::CoveredChunk {
            name: cf.name.file_name(),
            len: table_at + 4 * locs.len() as u64,
            table_digest: crate::checkpoint::table_digest(&table_at.to_le_bytes(), &table),
        })
    }

    /// The committed chunks, oldest first, and whether each is on this node's disk.
    pub fn committed_chunk_files(&self) -> Vec<ChunkInfo> {
        self.files
            .iter()
            .filter(|cf| cf.name.committed)
            .filter_map(|cf| {
                Some(ChunkInfo {
                    name: cf.name.file_name(),
                    start: cf.name.start,
                    end: cf.name.end?,
                    on_disk: !cf.absent,
                })
            })
            .collect()
    }

    fn chunk_index(&self, name: &str) -> Result<usize, StoreError> {
        self.files
            .iter()
            .position(|cf| cf.name.committed && cf.name.file_name() == name)
            .ok_or_else(|| StoreError::Usage(format!("{name} is not a committed chunk")))
    }

    /// Removes the committed chunk `name` from disk, keeping what locates its entries: reads
    /// of them then fail with [`StoreError::Absent`] until a copy is attached again. For a
    /// chunk kept in an archive, past a node's retention; the caller makes sure a checkpoint
    /// covers it first (a start finds it from the checkpoint, [`Self::open_trusting_archived`]).
    /// The first chunk (genesis) stays. Returns the bytes freed.
    pub fn drop_chunk(&mut self, name: &str) -> Result<u64, StoreError> {
        let fi = self.chunk_index(name)?;
        if fi == 0 {
            return Err(StoreError::Usage("the first chunk stays on disk".into()));
        }
        let cf = &mut self.files[fi];
        if cf.absent {
            return Ok(0);
        }
        let len = std::fs::metadata(&cf.path)
            .map_err(|e| io(&cf.path, e))?
            .len();
        std::fs::remove_file(&cf.path).map_err(|e| io(&cf.path, e))?;
        cf.absent = true;
        crate::files::sync_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        Ok(len)
    }

    /// Puts a copy of the absent committed chunk `name` (fetched from an archive or a peer)
    /// back on disk: [`LedgerFiles::absent_chunk`], [`AbsentChunk::verify`] (which may run
    /// without the store's lock) and [`LedgerFiles::attach_verified`] in one.
    pub fn attach_chunk(
        &mut self,
        name: &str,
        bytes: &[u8],
        secrets: &LedgerSecrets,
    ) -> Result<(), StoreError> {
        match self.absent_chunk(name, secrets)? {
            Some(absent) => self.attach_verified(absent.verify(bytes)?),
            None => Ok(()),
        }
    }

    /// What a fetched copy of the committed chunk `name` must match (`None`: it is on disk).
    pub fn absent_chunk(
        &self,
        name: &str,
        secrets: &LedgerSecrets,
    ) -> Result<Option<AbsentChunk>, StoreError> {
        let fi = self.chunk_index(name)?;
        let cf = &self.files[fi];
        if !cf.absent {
            return Ok(None);
        }
        let expected = self.covered(cf).ok_or_else(|| StoreError::Corrupt {
            path: cf.path.display().to_string(),
            message: "no record of the chunk".into(),
        })?;
        Ok(Some(AbsentChunk {
            fi,
            name: cf.name.clone(),
            path: cf.path.clone(),
            expected,
            secrets: secrets.clone(),
        }))
    }

    /// Takes a verified copy's entries back: reads find them on disk again.
    pub fn attach_verified(&mut self, chunk: VerifiedChunk) -> Result<(), StoreError> {
        let VerifiedChunk { fi, name, locs } = chunk;
        match self.files.get(fi) {
            Some(cf) if cf.name == name && cf.absent => {}
            Some(cf) if cf.name == name => return Ok(()),
            _ => return Err(StoreError::Usage(format!("{} changed", name.file_name()))),
        }
        let start = name.start as usize - 1;
        for (k, l) in locs.into_iter().enumerate() {
            self.locs[start + k] = l;
        }
        let cf = &mut self.files[fi];
        cf.absent = false;
        cf.unlocated = None;
        Ok(())
    }

    fn push_loc(
        &mut self,
        file: usize,
        offset: u64,
        e: RawEntry<'_>,
        path: &Path,
    ) -> Result<(), StoreError> {
        let expected = self.locs.len() as u64 + 1;
        if e.iv.seqno != expected {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "entry at offset {offset} has seqno {}, expected {expected}",
                    e.iv.seqno
                ),
            });
        }
        if let Ok(pd) = e.public_domain()
            && vellum_core::tables::is_signature(pd.maps.iter().map(|m| m.name.as_str()))
        {
            self.last_signature = expected;
        }
        self.locs
            .push(Loc::new(file, offset, e.bytes.len() as u32)?);
        Ok(())
    }

    /// Last seqno appended (0 when empty).
    pub fn last_seqno(&self) -> u64 {
        self.locs.len() as u64
    }

    /// Seqno of the last signature transaction appended.
    pub fn last_signature(&self) -> u64 {
        self.last_signature
    }

    /// Highest seqno whose chunk is marked `.committed`.
    pub fn committed_files_upto(&self) -> u64 {
        self.committed
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(e) => Err(StoreError::Poisoned(e.clone())),
            None => Ok(()),
        }
    }

    fn poison<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && self.poisoned.is_none()
        {
            tracing::error!(error = %e, "ledger store poisoned: no further writes will be acknowledged");
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// Writes the buffered appends to the open chunk.
    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let (Some((f, _, _)), Some(cf)) = (self.open.as_mut(), self.files.last()) {
            f.write_all(&self.pending).map_err(|e| io(&cf.path, e))?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Writes zeros ahead of the open chunk's entries when fewer than half of
    /// [`PREFILL_AHEAD`] are left, up to [`PREFILL_AHEAD`] past its last entry but not much
    /// past where the chunk will be closed. Call with nothing pending. They become durable
    /// with the next sync. They are an optimisation: when they cannot be written (a full
    /// disk), the chunk goes on without them and nothing fails here.
    fn prefill(&mut self) {
        let (Some((f, _, size)), Some(cf)) = (self.open.as_ref(), self.files.last()) else {
            return;
        };
        let cap = self.chunk_size + self.chunk_size / 4;
        let len = self.zeros_end.max(*size);
        if self.prefill_failed || len >= size + PREFILL_AHEAD / 2 || len >= cap {
            return;
        }
        let mut at = len;
        let to = (size + PREFILL_AHEAD).min(cap);
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = std::os::unix::fs::FileExt::write_all_at(f, &ZEROS[..n], at) {
                tracing::warn!(file = %cf.path.display(), error = %e,
                    "could not write zeros ahead of the ledger's entries; going on without");
                self.prefill_failed = true;
                // What was written is zeros from the file's end on: a reader stops at them.
                break;
            }
            at += n as u64;
        }
        self.zeros_end = at;
    }

    /// Appends one encoded entry at `seqno` (must be `last_seqno() + 1`). Not durable until
    /// [`LedgerFiles::sync`]. `is_signature` marks chunk boundaries: a chunk is closed after a
    /// signature once it is at least `chunk_size` bytes.
    pub fn append(
        &mut self,
        seqno: u64,
        bytes: &[u8],
        is_signature: bool,
    ) -> Result<(), StoreError> {
        self.check()?;
        if seqno != self.last_seqno() + 1 {
            return Err(StoreError::Usage(format!(
                "append of seqno {seqno} after {}",
                self.last_seqno()
            )));
        }
        let r = self.append_inner(seqno, bytes, is_signature);
        self.poison(r)
    }

    fn append_inner(
        &mut self,
        seqno: u64,
        bytes: &[u8],
        is_signature: bool,
    ) -> Result<(), StoreError> {
        if self.open.is_none() {
            let name = ChunkName {
                start: seqno,
                end: None,
                committed: false,
            };
            let path = self.dir.join(name.file_name());
            let mut f = OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            f.write_all(&[0u8; CHUNK_HEADER_SIZE])
                .map_err(|e| io(&path, e))?;
            self.files.push(ChunkFile::local(name, path));
            self.open = Some((f, Vec::new(), CHUNK_HEADER_SIZE as u64));
            self.zeros_end = 0;
            self.prefill_failed = false;
            self.dir_dirty = true;
        }
        let fi = self.files.len() - 1;
        let path = &self.files[fi].path;
        let Some((f, positions, size)) = self.open.as_mut() else {
            return Err(StoreError::Usage("no open chunk".into()));
        };
        let offset = *size;
        let Ok(pos32) = u32::try_from(offset) else {
            return Err(StoreError::Usage("chunk beyond 4 GiB".into()));
        };
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= WRITE_BUFFER {
            f.write_all(&self.pending).map_err(|e| io(path, e))?;
            self.pending.clear();
        }
        positions.push(pos32);
        *size += bytes.len() as u64;
        let full = *size >= self.chunk_size;
        self.locs.push(Loc::new(fi, offset, bytes.len() as u32)?);
        self.unsynced = true;
        if is_signature {
            self.last_signature = seqno;
            if full {
                self.close_chunk()?;
            }
        }
        Ok(())
    }

    /// Closes the open chunk now (it must end on a signature), e.g. before a shutdown or to
    /// hand a complete ledger to an auditor. No-op without an open chunk.
    pub fn close_open_chunk(&mut self) -> Result<(), StoreError> {
        self.check()?;
        if self.open.as_ref().is_none_or(|(_, p, _)| p.is_empty()) {
            return Ok(());
        }
        if self.last_signature != self.last_seqno() {
            return Err(StoreError::Usage(
                "a chunk can only be closed after a signature".into(),
            ));
        }
        let r = self.close_chunk().and_then(|_| self.sync_dir_if_dirty());
        self.poison(r)
    }

    /// Closes the open chunk: positions table, header, sync, rename to `ledger_A-B`.
    fn close_chunk(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        let Some((mut f, positions, size)) = self.open.take() else {
            return Ok(());
        };
        let fi = self.files.len() - 1;
        let path = self.files[fi].path.clone();
        let mut table = Vec::with_capacity(positions.len() * 4);
        for p in &positions {
            table.extend_from_slice(&p.to_le_bytes());
        }
        f.write_all(&table).map_err(|e| io(&path, e))?;
        // The zeros written ahead go: a closed chunk ends with its positions table.
        f.set_len(size + table.len() as u64)
            .map_err(|e| io(&path, e))?;
        f.sync_data().map_err(|e| io(&path, e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| io(&path, e))?;
        f.write_all(&size.to_le_bytes()).map_err(|e| io(&path, e))?;
        f.sync_data().map_err(|e| io(&path, e))?;
        let mut name = self.files[fi].name.clone();
        name.end = Some(self.last_seqno());
        let to = self.dir.join(name.file_name());
        std::fs::rename(&path, &to).map_err(|e| io(&path, e))?;
        self.files[fi] = ChunkFile::local(name, to);
        self.dir_dirty = true;
        self.unsynced = false;
        Ok(())
    }

    fn sync_dir_if_dirty(&mut self) -> Result<(), StoreError> {
        if self.dir_dirty {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&self.dir, e))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Makes every appended entry durable: one `fdatasync` of the open chunk (and of the
    /// directory if files were created or renamed).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.check()?;
        let r = self.sync_inner();
        self.poison(r)
    }

    fn sync_inner(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        self.prefill();
        if self.unsynced {
            if let (Some((f, _, _)), Some(cf)) = (self.open.as_mut(), self.files.last()) {
                f.sync_data().map_err(|e| io(&cf.path, e))?;
            }
            self.unsynced = false;
        }
        self.sync_dir_if_dirty()
    }

    /// Starts a sync that runs without holding the store: syncs the directory if files were
    /// created or renamed, and returns a handle to the open chunk when entries were appended
    /// since the last sync. `fdatasync` on that handle makes every entry appended before this
    /// call durable (a chunk closed in the meantime was synced when it was closed). If that
    /// sync fails, the caller must report it with [`LedgerFiles::sync_failed`].
    pub fn begin_sync(&mut self) -> Result<Option<File>, StoreError> {
        self.check()?;
        let r = self.begin_sync_inner();
        self.poison(r)
    }

    fn begin_sync_inner(&mut self) -> Result<Option<File>, StoreError> {
        self.write_pending()?;
        self.prefill();
        self.sync_dir_if_dirty()?;
        if !self.unsynced {
            return Ok(None);
        }
        let handle = match (self.open.as_ref(), self.files.last()) {
            (Some((f, _, _)), Some(cf)) => Some(f.try_clone().map_err(|e| io(&cf.path, e))?),
            _ => None,
        };
        self.unsynced = false;
        Ok(handle)
    }

    /// Records that a sync started with [`LedgerFiles::begin_sync`] failed: the store is
    /// poisoned (no write after it can become durable, so none may be acknowledged).
    pub fn sync_failed(&mut self, error: StoreError) {
        let _ = self.poison::<()>(Err(error));
    }

    /// Records that everything up to `seqno` is committed: closed chunks wholly at or below it
    /// are renamed `.committed`.
    pub fn commit(&mut self, seqno: u64) -> Result<(), StoreError> {
        self.check()?;
        let r = self.commit_inner(seqno);
        self.poison(r)
    }

    fn commit_inner(&mut self, seqno: u64) -> Result<(), StoreError> {
        // Chunks are committed in order, so only those after the last committed one can change
        // (this keeps commit O(new chunks) rather than O(all chunks)).
        let first = self
            .files
            .iter()
            .rposition(|cf| cf.name.committed)
            .map_or(0, |i| i + 1);
        for cf in &mut self.files[first..] {
            if let (Some(end), false) = (cf.name.end, cf.name.committed)
                && end <= seqno
            {
                let mut name = cf.name.clone();
                name.committed = true;
                let to = self.dir.join(name.file_name());
                std::fs::rename(&cf.path, &to).map_err(|e| io(&cf.path, e))?;
                cf.name = name;
                cf.path = to;
                self.committed = end;
                self.dir_dirty = true;
            }
        }
        self.sync_dir_if_dirty()
    }

    /// Drops every entry after `last_kept` (an uncommitted suffix, after a Raft conflict).
    /// Refuses to drop committed entries.
    pub fn truncate(&mut self, last_kept: u64) -> Result<(), StoreError> {
        self.check()?;
        if last_kept < self.committed {
            return Err(StoreError::Usage(format!(
                "truncation to {last_kept} would drop committed entries (committed up to {})",
                self.committed
            )));
        }
        let r = self.truncate_inner(last_kept);
        self.poison(r)
    }

    fn truncate_inner(&mut self, last_kept: u64) -> Result<(), StoreError> {
        if last_kept >= self.last_seqno() {
            return Ok(());
        }
        self.write_pending()?;
        let first_dropped = (last_kept + 1) as usize;
        let keep_file = if last_kept == 0 {
            None
        } else {
            Some(self.locs[last_kept as usize - 1].file())
        };
        // The chunk holding the first dropped entry (and every later one) changes.
        let first_file = self.locs[first_dropped - 1].file();
        self.open = None;
        // Remove files entirely after the cut.
        while self.files.len() > first_file + 1 {
            if let Some(cf) = self.files.pop() {
                std::fs::remove_file(&cf.path).map_err(|e| io(&cf.path, e))?;
            }
        }
        let Some(cf) = self.files.pop() else {
            return Ok(());
        };
        if keep_file == Some(first_file) {
            // Reopen the chunk as open, cut at the end of the last kept entry.
            let end = {
                let l = &self.locs[last_kept as usize - 1];
                l.offset() + u64::from(l.len)
            };
            let mut name = cf.name.clone();
            name.end = None;
            name.committed = false;
            let to = self.dir.join(name.file_name());
            if cf.path != to {
                std::fs::rename(&cf.path, &to).map_err(|e| io(&cf.path, e))?;
            }
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&to)
                .map_err(|e| io(&to, e))?;
            f.set_len(end).map_err(|e| io(&to, e))?;
            self.zeros_end = end;
            f.seek(SeekFrom::Start(0)).map_err(|e| io(&to, e))?;
            f.write_all(&[0u8; CHUNK_HEADER_SIZE])
                .map_err(|e| io(&to, e))?;
            f.sync_data().map_err(|e| io(&to, e))?;
            f.seek(SeekFrom::End(0)).map_err(|e| io(&to, e))?;
            let positions: Vec<u32> = self.locs[..last_kept as usize]
                .iter()
                .filter(|l| l.file() == first_file)
                .map(|l| l.offset() as u32)
                .collect();
            self.files.push(ChunkFile::local(name, to));
            self.open = Some((f, positions, end));
        } else {
            std::fs::remove_file(&cf.path).map_err(|e| io(&cf.path, e))?;
        }
        self.locs.truncate(last_kept as usize);
        self.last_signature = self.last_signature.min(last_kept);
        self.dir_dirty = true;
        self.sync_dir_if_dirty()
    }

    /// The bytes of the entry at `seqno` (works after poisoning).
    pub fn read(&self, seqno: u64) -> Result<Vec<u8>, StoreError> {
        let l = seqno
            .checked_sub(1)
            .and_then(|i| self.locs.get(i as usize))
            .ok_or(StoreError::NotFound(seqno))?;
        if let Some(b) = self.pending_bytes(l.file(), l.offset(), l.len) {
            return Ok(b.to_vec());
        }
        let cf = &self.files[l.file()];
        if cf.absent {
            return Err(StoreError::Absent {
                chunk: cf.name.file_name(),
                seqno,
            });
        }
        let f = File::open(&cf.path).map_err(|e| io(&cf.path, e))?;
        let mut buf = vec![0u8; l.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, l.offset())
            .map_err(|e| io(&cf.path, e))?;
        Ok(buf)
    }

    /// The bytes at `offset..offset + len` of file `file`, if they are still buffered.
    fn pending_bytes(&self, file: usize, offset: u64, len: u32) -> Option<&[u8]> {
        let (_, _, size) = self.open.as_ref()?;
        let start = size - self.pending.len() as u64;
        if file + 1 != self.files.len() || offset < start {
            return None;
        }
        let at = (offset - start) as usize;
        self.pending.get(at..at + len as usize)
    }

    /// Calls `f(seqno, bytes)` for every entry from `from` on, reading each chunk file once.
    pub fn scan<E: From<StoreError>>(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut loaded: Option<(usize, Vec<u8>)> = None;
        for seqno in from.max(1)..=self.last_seqno() {
            let l = &self.locs[seqno as usize - 1];
            if loaded.as_ref().is_none_or(|(fi, _)| *fi != l.file()) {
                let cf = &self.files[l.file()];
                if cf.absent {
                    return Err(StoreError::Absent {
                        chunk: cf.name.file_name(),
                        seqno,
                    }
                    .into());
                }
                let mut bytes = std::fs::read(&cf.path).map_err(|e| io(&cf.path, e))?;
                if let (true, Some((_, _, size))) =
                    (l.file() + 1 == self.files.len(), self.open.as_ref())
                {
                    // The entries written so far, without the zeros ahead, then the buffered.
                    bytes.truncate((size - self.pending.len() as u64) as usize);
                    bytes.extend_from_slice(&self.pending);
                }
                loaded = Some((l.file(), bytes));
            }
            let Some((_, bytes)) = &loaded else { continue };
            let (start, end) = (l.offset() as usize, l.offset() as usize + l.len as usize);
            let entry = bytes.get(start..end).ok_or_else(|| StoreError::Corrupt {
                path: self.files[l.file()].path.display().to_string(),
                message: format!("entry {seqno} lies beyond the end of the file"),
            })?;
            f(seqno, entry)?;
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an earlier error stopped writes, and why.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }
}

impl Drop for LedgerFiles {
    /// Hands buffered appends to the OS, as if each had been written when appended: they are
    /// not durable (never synced), but a process that stops without a sync leaves them in the
    /// page cache as it did before buffering (recovery treats them as any unsynced tail).
    fn drop(&mut self) {
        if self.poisoned.is_none() {
            let _ = self.write_pending();
            // A node that stops leaves its open chunk without the zeros written ahead (a crash
            // leaves them, and recovery knows them from a torn tail).
            if let Some((f, _, size)) = &self.open {
                let _ = f.set_len(*size);
            }
        }
    }
}

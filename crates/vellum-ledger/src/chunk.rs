//! CCF ledger chunk files.
//!
//! A chunk is `u64 LE offset of the positions table` (0 while the file is open), the entries
//! back to back, then (once closed) the positions table: one `u32 LE` byte offset per entry.
//! Names: `ledger_<first>-<last>.committed` (closed and committed), `ledger_<first>-<last>`
//! (closed, not known committed), `ledger_<first>` (open). Every closed chunk ends on a
//! signature transaction.

use std::path::{Path, PathBuf};

use vellum_core::entry::{EntryError, RawEntry};

/// Bytes of the chunk header (the positions-table offset).
pub const CHUNK_HEADER_SIZE: usize = 8;

/// What a chunk file name says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkName {
    /// First seqno in the file.
    pub start: u64,
    /// Last seqno, once the file is closed.
    pub end: Option<u64>,
    /// Whether the name ends in `.committed`.
    pub committed: bool,
}

impl ChunkName {
    /// Parses `ledger_<start>[-<end>][.committed]`. Other files (`.ignored`, `.recovery`,
    /// snapshots, anything else) give `None`.
    pub fn parse(file_name: &str) -> Option<ChunkName> {
        let rest = file_name.strip_prefix("ledger_")?;
        let (range, committed) = match rest.strip_suffix(".committed") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, Some(num(b)?)),
            None => (num(range)?, None),
        };
        if end.is_some_and(|e| e < start) || (committed && end.is_none()) {
            return None;
        }
        Some(ChunkName {
            start,
            end,
            committed,
        })
    }

    /// The file name this describes.
    pub fn file_name(&self) -> String {
        match (self.end, self.committed) {
            (Some(e), true) => format!("ledger_{}-{e}.committed", self.start),
            (Some(e), false) => format!("ledger_{}-{e}", self.start),
            (None, _) => format!("ledger_{}", self.start),
        }
    }
}

/// Why a chunk file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Shorter than the 8-byte header.
    #[error("file is {0} bytes, shorter than the 8-byte chunk header")]
    TooShort(usize),
    /// The positions-table offset points outside the file or below the first entry.
    #[error("positions table offset {offset} is outside the file ({len} bytes)")]
    TableOffset {
        /// Offset in the header.
        offset: u64,
        /// File length.
        len: usize,
    },
    /// The positions table is not a whole number of u32s.
    #[error("positions table is {0} bytes, not a multiple of 4")]
    TableLength(usize),
    /// The number of entries disagrees with the file name's range.
    #[error("file name says {expected} entries, the positions table has {actual}")]
    Count {
        /// From the name.
        expected: u64,
        /// In the table.
        actual: u64,
    },
    /// Positions table entry `index` is wrong (entry `index` is not where the table says).
    #[error("positions table entry {index} says offset {table}, but the entry is at {actual}")]
    Position {
        /// Entry index within the file.
        index: usize,
        /// Offset in the table.
        table: u64,
        /// Offset where the entry actually is.
        actual: u64,
    },
    /// Entry `index` (at `offset`) is malformed.
    #[error("entry {index} at offset {offset}: {source}")]
    Entry {
        /// Entry index within the file.
        index: usize,
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        source: EntryError,
    },
    /// Entry `index` does not end where the next begins.
    #[error(
        "entry {index} at offset {offset} is {len} bytes long but the next entry starts at {next}"
    )]
    Boundary {
        /// Entry index within the file.
        index: usize,
        /// Byte offset.
        offset: u64,
        /// Length from its header.
        len: u64,
        /// Where the next entry (or the positions table) starts.
        next: u64,
    },
}

impl ChunkError {
    /// Index of the entry this error is about, if it is about one.
    pub fn entry_index(&self) -> Option<usize> {
        match self {
            ChunkError::Entry { index, .. } | ChunkError::Boundary { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// One entry of a chunk: where it is and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkEntry<'a> {
    /// Byte offset in the file.
    pub offset: u64,
    /// The parsed entry.
    pub entry: RawEntry<'a>,
}

/// A parsed chunk: its entries, in order.
#[derive(Debug, Clone)]
pub struct Chunk<'a> {
    /// Entries in file order.
    pub entries: Vec<ChunkEntry<'a>>,
    /// Whether the file had a positions table (is closed).
    pub closed: bool,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// Checks where a closed chunk of `len` bytes says its positions table starts (`table_at`, from
/// its header): inside the file, after the header, a whole number of `u32`s long, and holding
/// as many entries as the file name says.
pub fn check_table(table_at: u64, len: u64, name: Option<&ChunkName>) -> Result<(), ChunkError> {
    if table_at < CHUNK_HEADER_SIZE as u64 || table_at > len {
        return Err(ChunkError::TableOffset {
            offset: table_at,
            len: len as usize,
        });
    }
    let table_len = len - table_at;
    if !table_len.is_multiple_of(4) {
        return Err(ChunkError::TableLength(table_len as usize));
    }
    if let Some(ChunkName {
        start,
        end: Some(end),
        ..
    }) = name
    {
        let expected = end - start + 1;
        if expected != table_len / 4 {
            return Err(ChunkError::Count {
                expected,
                actual: table_len / 4,
            });
        }
    }
    Ok(())
}

/// The entry offsets of a positions table.
pub fn positions(table: &[u8]) -> Vec<u64> {
    table
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

impl<'a> Chunk<'a> {
    /// Parses a chunk file's bytes. A closed file's positions table is the authority on where
    /// entries start; every entry must parse and end exactly where the next begins, and the
    /// count must match the file name. An open file (offset 0) is read entry by entry.
    pub fn parse(bytes: &'a [u8], name: Option<&ChunkName>) -> Result<Chunk<'a>, ChunkError> {
        let table_at = u64_at(bytes, 0).ok_or(ChunkError::TooShort(bytes.len()))?;
        if table_at == 0 {
            let mut entries = Vec::new();
            let mut at = CHUNK_HEADER_SIZE;
            // A writer keeps zeros written ahead of its open chunk's entries (see
            // `store::PREFILL_AHEAD`): they end the chunk. No entry starts with a zero byte.
            while at < bytes.len() && !is_zero(&bytes[at..]) {
                let (entry, _) =
                    RawEntry::parse(&bytes[at..]).map_err(|source| ChunkError::Entry {
                        index: entries.len(),
                        offset: at as u64,
                        source,
                    })?;
                entries.push(ChunkEntry {
                    offset: at as u64,
                    entry,
                });
                at += entry.bytes.len();
            }
            return Ok(Chunk {
                entries,
                closed: false,
            });
        }
        check_table(table_at, bytes.len() as u64, name)?;
        let data_end = table_at as usize;
        let positions = positions(&bytes[data_end..]);
        let mut entries = Vec::with_capacity(positions.len());
        // Entries are self-delimiting, so walk them in order and compare each start with the
        // table. When they disagree, decide which is wrong: if the walked offset holds an
        // entry that continues the chain, the table is corrupt; otherwise the previous entry's
        // length (or the entry itself) is.
        let mut at = CHUNK_HEADER_SIZE as u64;
        for (index, &pos) in positions.iter().enumerate() {
            if pos != at {
                let prev = index.checked_sub(1);
                let chain_ok =
                    RawEntry::parse(&bytes[at as usize..data_end]).is_ok_and(|(e, _)| {
                        let end = at + e.bytes.len() as u64;
                        positions
                            .get(index + 1)
                            .map_or(end == data_end as u64, |&n| n == end)
                    });
                return Err(match (chain_ok, prev) {
                    (false, Some(p)) => ChunkError::Boundary {
                        index: p,
                        offset: entries.last().map_or(0, |e: &ChunkEntry<'_>| e.offset),
                        len: at - entries.last().map_or(0, |e: &ChunkEntry<'_>| e.offset),
                        next: pos,
                    },
                    _ => ChunkError::Position {
                        index,
                        table: pos,
                        actual: at,
                    },
                });
            }
            let slice = bytes.get(at as usize..data_end).unwrap_or_default();
            let (entry, _) = RawEntry::parse(slice).map_err(|source| ChunkError::Entry {
                index,
                offset: at,
                source,
            })?;
            let next = positions.get(index + 1).copied().unwrap_or(data_end as u64);
            let end = at + entry.bytes.len() as u64;
            if end != next && index + 1 == positions.len() {
                return Err(ChunkError::Boundary {
                    index,
                    offset: at,
                    len: entry.bytes.len() as u64,
                    next,
                });
            }
            entries.push(ChunkEntry { offset: at, entry });
            at = end;
        }
        if at != data_end as u64 {
            return Err(ChunkError::Boundary {
                index: positions.len().saturating_sub(1),
                offset: entries.last().map_or(0, |e| e.offset),
                len: entries.last().map_or(0, |e| e.entry.bytes.len() as u64),
                next: data_end as u64,
            });
        }
        Ok(Chunk {
            entries,
            closed: true,
        })
    }
}

impl<'a> Chunk<'a> {
    /// Reads a chunk file as CCF's verifier does (`ccf.ledger.LedgerChunk` at the offsets
    /// level), for the auditor. A closed file's positions table says where each entry starts:
    /// each position must lie after the file header and before the table, and each entry must
    /// end where the next position starts, within the entries area. Bytes before the first
    /// entry and after the last are not read: CCF does not read them, no signature covers them,
    /// and CCF's own node writes none. A file whose name gives its range must hold that many
    /// entries. A file without a table is read entry by entry to its end; when its name has no
    /// end (an open chunk), zeros that a Vellum writer keeps ahead of its entries end it.
    ///
    /// [`Chunk::parse`] is the node's stricter reader of its own files: there a gap between
    /// entries is damage to repair, not something to tolerate.
    pub fn parse_for_audit(bytes: &'a [u8], name: &ChunkName) -> Result<Chunk<'a>, ChunkError> {
        let table_at = u64_at(bytes, 0).ok_or(ChunkError::TooShort(bytes.len()))?;
        let expected = name.end.map(|end| end - name.start + 1);
        let count = |actual: usize| match expected {
            Some(e) if e != actual as u64 => Err(ChunkError::Count {
                expected: e,
                actual: actual as u64,
            }),
            _ => Ok(()),
        };
        let entry_at = |index: usize, at: u64, end: u64| {
            let slice = bytes.get(at as usize..end as usize).unwrap_or_default();
            RawEntry::parse(slice)
                .map(|(entry, _)| ChunkEntry { offset: at, entry })
                .map_err(|source| ChunkError::Entry {
                    index,
                    offset: at,
                    source,
                })
        };
        if table_at == 0 {
            let mut entries = Vec::new();
            let mut at = CHUNK_HEADER_SIZE;
            while at < bytes.len() && !(name.end.is_none() && is_zero(&bytes[at..])) {
                let e = entry_at(entries.len(), at as u64, bytes.len() as u64)?;
                at += e.entry.bytes.len();
                entries.push(e);
            }
            count(entries.len())?;
            return Ok(Chunk {
                entries,
                closed: false,
            });
        }
        if table_at > bytes.len() as u64 {
            return Err(ChunkError::TableOffset {
                offset: table_at,
                len: bytes.len(),
            });
        }
        let table = &bytes[table_at as usize..];
        if !table.len().is_multiple_of(4) {
            return Err(ChunkError::TableLength(table.len()));
        }
        let positions = positions(table);
        let mut entries: Vec<ChunkEntry<'a>> = Vec::with_capacity(positions.len());
        for (index, &pos) in positions.iter().enumerate() {
            let after_previous = entries
                .last()
                .map_or(CHUNK_HEADER_SIZE as u64, |e| e.offset + 1);
            if pos < after_previous || pos >= table_at {
                return Err(ChunkError::Position {
                    index,
                    table: pos,
                    actual: after_previous,
                });
            }
            if let Some(prev) = entries.last() {
                let end = prev.offset + prev.entry.bytes.len() as u64;
                if end != pos {
                    return Err(ChunkError::Boundary {
                        index: index - 1,
                        offset: prev.offset,
                        len: prev.entry.bytes.len() as u64,
                        next: pos,
                    });
                }
            }
            entries.push(entry_at(index, pos, table_at)?);
        }
        count(entries.len())?;
        Ok(Chunk {
            entries,
            closed: true,
        })
    }
}

/// Whether every byte is zero (the space a writer keeps ahead of an open chunk's entries).
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// Builds the bytes of a closed chunk from entry bytes: header, entries, positions table.
pub fn closed_chunk_bytes<B: AsRef<[u8]>>(entries: &[B]) -> Vec<u8> {
    let total: usize = entries.iter().map(|e| e.as_ref().len()).sum();
    let mut out = Vec::with_capacity(CHUNK_HEADER_SIZE + total + 4 * entries.len());
    out.extend_from_slice(&((CHUNK_HEADER_SIZE + total) as u64).to_le_bytes());
    let mut positions = Vec::with_capacity(entries.len());
    for e in entries {
        positions.push(out.len() as u32);
        out.extend_from_slice(e.as_ref());
    }
    for p in positions {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

/// The chunk files of a ledger directory, sorted by first seqno. With `committed_only`, only
/// `.committed` files.
pub fn list_chunks(dir: &Path, committed_only: bool) -> std::io::Result<Vec<(ChunkName, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(c) = ChunkName::parse(name)
            && (!committed_only || c.committed)
        {
            out.push((c, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            ChunkName::parse("ledger_1-14.committed"),
            Some(ChunkName {
                start: 1,
                end: Some(14),
                committed: true
            })
        );
        assert_eq!(
            ChunkName::parse("ledger_21"),
            Some(ChunkName {
                start: 21,
                end: None,
                committed: false
            })
        );
        for bad in [
            "ledger_",
            "ledger_a-2",
            "ledger_5-3",
            "ledger_1-2.ignored",
            "snapshot_1_2",
            "ledger_3.committed",
        ] {
            assert_eq!(ChunkName::parse(bad), None, "{bad}");
        }
        let n = ChunkName::parse("ledger_15-46.committed").unwrap();
        assert_eq!(n.file_name(), "ledger_15-46.committed");
    }
}

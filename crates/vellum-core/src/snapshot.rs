//! Snapshots in CCF's format (`ccf-notes.md` §7.3): the state of every map at one committed
//! seqno, as one ledger entry of type Snapshot, followed, once committed, by the receipt of
//! the transaction that records its digest.
//!
//! Written here rather than taken from a library: it *is* the product's format, byte for byte
//! what CCF's `ccf.ledger.Snapshot` reads.
//!
//! The entry: CCF's framing (version 1, flags, size, GCM tag, IV with the snapshot bit set),
//! then the public domain:
//!
//! ```text
//! u8 1 (Snapshot), i64 seqno, i64 0 (max conflict version)
//! u64 32, [32] the Merkle root over 0..=seqno (CCF's "hash at snapshot")
//! u64 8*V, V × u64: view history (entry v-1: the first seqno of view v)
//! per public map, by name:   u64 len, name; u64 map version; u64 size of its records;
//!   per key, in byte order:  u64 klen, key, pad to 8; u64 8+vlen, i64 version, value, pad to 8
//! ```
//!
//! The private domain holds the private maps the same way (no header), sealed under the ledger
//! secret of the seqno with the public domain as associated data, as a ledger entry's is. Keys
//! and maps are sorted, so every node that serialises the same state writes the same bytes.
//!
//! The evidence transaction writes `public:ccf.internal.snapshot_evidence` =
//! `{"hash": hex SHA-256 of the entry, "version": seqno}` with the same digest as its claims
//! digest, so that its receipt proves the snapshot: a committed snapshot file
//! (`snapshot_SEQNO_EVIDENCE.committed`) is the entry followed by that receipt (COSE).

use std::collections::BTreeMap;

use crate::TxId;
use crate::entry::{
    EntryError, EntryType, HEADER_SIZE, IV_SIZE, Iv, LedgerSecret, MapWrites, RawEntry, Reader,
    TAG_SIZE, put_blob,
};
use crate::hash::Hash;

/// The table the evidence transaction writes.
pub const EVIDENCE_TABLE: &str = "public:ccf.internal.snapshot_evidence";

/// A map's records: key → (version it was last written at, value).
pub type Records = BTreeMap<Vec<u8>, (u64, Vec<u8>)>;

/// The state of every map, as transactions leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Maps by name.
    pub maps: BTreeMap<String, Records>,
    /// The seqno of the last transaction applied.
    pub seqno: u64,
}

/// A snapshot read back: its seqno and view, header and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The transaction id it was taken at.
    pub txid: TxId,
    /// The Merkle root over `0..=seqno`.
    pub root: Hash,
    /// The first seqno of each view (entry `v - 1` for view `v`).
    pub view_history: Vec<u64>,
    /// Every map's records.
    pub state: State,
    /// SHA-256 of the snapshot entry (what the evidence records).
    pub digest: Hash,
    /// What follows the entry in the file: the evidence's receipt, once committed.
    pub receipt: Vec<u8>,
}

/// The file name of a snapshot at `seqno` whose evidence is at `evidence`, once committed.
pub fn committed_name(seqno: u64, evidence: u64) -> String {
    format!("snapshot_{seqno}_{evidence}.committed")
}

/// `(seqno, evidence seqno)` of a committed snapshot file name.
pub fn parse_committed_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snapshot_")?.strip_suffix(".committed")?;
    let (s, e) = rest.split_once('_')?;
    Some((s.parse().ok()?, e.parse().ok()?))
}

/// The evidence record for a snapshot with `digest` at `seqno` (the table's JSON value).
pub fn evidence_json(digest: &Hash, seqno: u64) -> Vec<u8> {
    serde_json::json!({"hash": digest.to_hex(), "version": seqno})
        .to_string()
        .into_bytes()
}

impl State {
    /// Applies transaction `seqno`'s writes and removes.
    pub fn apply(&mut self, seqno: u64, maps: &[MapWrites]) {
        for m in maps {
            if m.writes.is_empty() && m.removes.is_empty() {
                continue;
            }
            let records = self.maps.entry(m.name.clone()).or_default();
            for (k, v) in &m.writes {
                records.insert(k.clone(), (seqno, v.clone()));
            }
            for k in &m.removes {
                records.remove(k);
            }
            if records.is_empty() {
                self.maps.remove(&m.name);
            }
        }
        self.seqno = seqno;
    }

    /// Serialises the state as a snapshot entry taken at `txid` (which must be the last
    /// transaction applied), sealing private maps under `secret`.
    pub fn encode(
        &self,
        txid: TxId,
        root: &Hash,
        view_history: &[u64],
        secret: &LedgerSecret,
    ) -> Vec<u8> {
        let mut public = Vec::with_capacity(4096);
        public.push(EntryType::Snapshot.to_byte());
        public.extend_from_slice(&(txid.seqno as i64).to_le_bytes());
        public.extend_from_slice(&0i64.to_le_bytes());
        put_blob(&mut public, &root.0);
        public.extend_from_slice(&((view_history.len() * 8) as u64).to_le_bytes());
        for s in view_history {
            public.extend_from_slice(&s.to_le_bytes());
        }
        let mut private = Vec::new();
        for (name, records) in &self.maps {
            let out = if MapWrites::is_public_name(name) {
                &mut public
            } else {
                &mut private
            };
            encode_map(out, name, records);
        }
        let iv = Iv {
            seqno: txid.seqno,
            view: (txid.view & 0x7fff_ffff) as u32,
            snapshot: true,
        }
        .to_bytes();
        let tag = secret.seal_detached(iv, &public, &mut private);
        let size = (TAG_SIZE + IV_SIZE + 8 + public.len() + private.len()) as u64;
        let mut bytes = Vec::with_capacity(HEADER_SIZE + size as usize);
        bytes.push(1);
        bytes.push(0);
        bytes.extend_from_slice(&size.to_le_bytes()[..6]);
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(&iv);
        bytes.extend_from_slice(&(public.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&public);
        bytes.extend_from_slice(&private);
        bytes
    }
}

fn pad8(out: &mut Vec<u8>, len: usize) {
    out.resize(out.len() + (8 - len % 8) % 8, 0);
}

fn encode_map(out: &mut Vec<u8>, name: &str, records: &Records) {
    put_blob(out, name.as_bytes());
    let version = records.values().map(|(v, _)| *v).max().unwrap_or(0);
    out.extend_from_slice(&version.to_le_bytes());
    let mut body = Vec::new();
    for (k, (v, value)) in records {
        body.extend_from_slice(&(k.len() as u64).to_le_bytes());
        body.extend_from_slice(k);
        pad8(&mut body, k.len());
        let size = 8 + value.len();
        body.extend_from_slice(&(size as u64).to_le_bytes());
        body.extend_from_slice(&(*v as i64).to_le_bytes());
        body.extend_from_slice(value);
        pad8(&mut body, size);
    }
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
}

fn decode_maps(r: &mut Reader<'_>, into: &mut BTreeMap<String, Records>) -> Result<(), EntryError> {
    while !r.done() {
        let name = std::str::from_utf8(r.blob("snapshot map name")?)
            .map_err(|_| EntryError::MapName)?
            .to_owned();
        r.u64("snapshot map version")?;
        let size = r.u64("snapshot map size")?;
        let body = r.take(size, "snapshot map records")?;
        let mut m = Reader { buf: body, pos: 0 };
        let mut records = Records::new();
        while !m.done() {
            let klen = m.u64("snapshot key")?;
            let key = m.take(klen, "snapshot key")?.to_vec();
            m.take((8 - klen % 8) % 8, "snapshot key padding")?;
            let size = m.u64("snapshot value")?;
            if size < 8 {
                return Err(EntryError::WriteSet(
                    "snapshot value shorter than its version",
                ));
            }
            let version = m.i64("snapshot value version")?;
            let value = m.take(size - 8, "snapshot value")?.to_vec();
            m.take((8 - size % 8) % 8, "snapshot value padding")?;
            // Negative versions (CCF before 3.0) mark deletions.
            if let Ok(v) = u64::try_from(version) {
                records.insert(key, (v, value));
            }
        }
        if into.insert(name, records).is_some() {
            return Err(EntryError::WriteSet("a map twice in a snapshot"));
        }
    }
    Ok(())
}

impl Snapshot {
    /// Reads a snapshot file's bytes (the entry, then whatever follows it), opening the private
    /// maps with `secret` (which checks the GCM tag over both domains).
    pub fn decode(bytes: &[u8], secret: &LedgerSecret) -> Result<Snapshot, EntryError> {
        let (raw, rest) = RawEntry::parse(bytes)?;
        if !raw.iv.snapshot {
            return Err(EntryError::WriteSet(
                "not a snapshot: the IV's snapshot bit is clear",
            ));
        }
        let digest = Hash::digest(raw.bytes);
        let mut r = Reader {
            buf: raw.public,
            pos: 0,
        };
        let kind = r.take(1, "entry type")?[0];
        if EntryType::from_byte(kind) != Some(EntryType::Snapshot) {
            return Err(EntryError::WriteSet("not a snapshot entry"));
        }
        let seqno = r.i64("snapshot seqno")?;
        if u64::try_from(seqno).ok() != Some(raw.iv.seqno) {
            return Err(EntryError::WriteSet("snapshot seqno differs from its IV's"));
        }
        r.i64("max conflict version")?;
        let root = Hash::from_slice(r.blob("hash at snapshot")?)
            .map_err(|_| EntryError::WriteSet("hash at snapshot is not 32 bytes"))?;
        let vh = r.blob("view history")?;
        if vh.len() % 8 != 0 {
            return Err(EntryError::WriteSet("view history is not u64s"));
        }
        let view_history = vh
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        let mut maps = BTreeMap::new();
        decode_maps(&mut r, &mut maps)?;
        let private =
            secret.open_detached(raw.iv.to_bytes(), raw.public, raw.ciphertext, &raw.tag)?;
        decode_maps(
            &mut Reader {
                buf: &private,
                pos: 0,
            },
            &mut maps,
        )?;
        Ok(Snapshot {
            txid: raw.iv.txid(),
            root,
            view_history,
            state: State {
                maps,
                seqno: raw.iv.seqno,
            },
            digest,
            receipt: rest.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> LedgerSecret {
        LedgerSecret::from_bytes([5u8; 32])
    }

    #[test]
    fn state_round_trips_and_encodes_deterministically() {
        let mut s = State::default();
        s.apply(
            1,
            &[
                MapWrites::with_writes(
                    "public:ccf.gov.service.info",
                    vec![(b"\0".to_vec(), b"{}".to_vec())],
                ),
                MapWrites::with_writes("vellum.entries", vec![(b"c1".to_vec(), b"first".to_vec())]),
            ],
        );
        s.apply(
            2,
            &[MapWrites {
                name: "vellum.entries".into(),
                writes: vec![(b"c2".to_vec(), b"second, longer than eight".to_vec())],
                removes: vec![b"c1".to_vec()],
            }],
        );
        let txid = TxId::new(3, 2);
        let root = Hash::digest(b"root");
        let a = s.encode(txid, &root, &[1, 2], &secret());
        assert_eq!(a, s.clone().encode(txid, &root, &[1, 2], &secret()));
        // Private contents are sealed.
        assert!(!a.windows(6).any(|w| w == b"second"));
        let mut file = a.clone();
        file.extend_from_slice(b"receipt");
        let back = Snapshot::decode(&file, &secret()).unwrap();
        assert_eq!(back.state, s);
        assert_eq!(back.txid, txid);
        assert_eq!(back.root, root);
        assert_eq!(back.view_history, vec![1, 2]);
        assert_eq!(back.digest, Hash::digest(&a));
        assert_eq!(back.receipt, b"receipt");
        assert_eq!(
            back.state.maps["vellum.entries"][&b"c2".to_vec()].0,
            2,
            "a key keeps the version it was written at"
        );
        // Another secret, or one flipped byte anywhere in the entry, is refused.
        assert!(Snapshot::decode(&a, &LedgerSecret::from_bytes([6u8; 32])).is_err());
        for i in [20, 40, a.len() / 2, a.len() - 1] {
            let mut bad = a.clone();
            bad[i] ^= 1;
            assert!(Snapshot::decode(&bad, &secret()).is_err(), "byte {i}");
        }
    }

    #[test]
    fn committed_names_round_trip() {
        assert_eq!(committed_name(10, 12), "snapshot_10_12.committed");
        assert_eq!(
            parse_committed_name("snapshot_10_12.committed"),
            Some((10, 12))
        );
        assert_eq!(parse_committed_name("snapshot_10_12"), None);
        assert_eq!(parse_committed_name("snapshot_10.committed"), None);
    }
}

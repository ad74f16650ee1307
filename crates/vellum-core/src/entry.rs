//! The CCF ledger entry: framing, public and private write sets, sealing, digests and leaf.
//!
//! Byte layout (integers little-endian; see `docs/formats.md` and `ccf-notes.md` §3):
//!
//! ```text
//! u8  version = 1        u8 flags        u48 size S of the rest
//! [16] AES-GCM tag       [12] IV = u64 seqno || u32 view (top bit: snapshot)
//! u64 P = public domain length
//! [P]  public domain (plaintext, and the GCM associated data)
//! [..] private domain ciphertext (AES-256-GCM under the ledger secret)
//! ```
//!
//! The public domain is `u8 entry type, i64 seqno, [32] claims digest, [32] commit-evidence
//! digest, i64 max conflict version`, then the public maps; the private domain is the private
//! maps in the same map format. A map is `name, i64 read version, u64 read count (0), u64 W,
//! W x (key, value), u64 R, R x key`, where every name, key and value is `u64 length || bytes`.
//!
//! Vellum writes 0 as the max conflict version and every read version, as current CCF does;
//! older CCF releases wrote other values there. They are not integrity fields (CCF's verifier
//! reads and ignores them), so reading accepts any value.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hash::Hash;
use crate::txid::TxId;

/// Bytes of the entry header (version, flags, 48-bit size).
pub const HEADER_SIZE: usize = 8;
/// Bytes of the AES-GCM tag.
pub const TAG_SIZE: usize = 16;
/// Bytes of the AES-GCM IV.
pub const IV_SIZE: usize = 12;
/// Smallest valid value of the header's size field: tag, IV and public-domain length.
pub const MIN_BODY_SIZE: u64 = (TAG_SIZE + IV_SIZE + 8) as u64;
/// Largest entry body accepted (CCF's tools use 1 GiB).
pub const MAX_BODY_SIZE: u64 = 1 << 30;
/// Entry flag: the ledger chunk ends after this entry.
pub const FLAG_FORCE_CHUNK_AFTER: u8 = 0x01;
/// Entry flag: a ledger chunk starts with this entry.
pub const FLAG_FORCE_CHUNK_BEFORE: u8 = 0x02;
/// The key of single-value tables (signatures, tree, service info, constitution...).
pub const SINGLETON_KEY: [u8; 8] = [0u8; 8];

/// The entry type byte at the start of the public domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// 0: write set only (deprecated).
    WriteSet,
    /// 1: a snapshot (never inside ledger chunks).
    Snapshot,
    /// 2: write set with claims digest (deprecated).
    WriteSetWithClaims,
    /// 3: write set with commit-evidence digest (deprecated).
    WriteSetWithCommitEvidence,
    /// 4: write set with commit-evidence and claims digests: what CCF and Vellum write.
    WriteSetWithCommitEvidenceAndClaims,
}

impl EntryType {
    /// From the type byte.
    pub fn from_byte(b: u8) -> Option<EntryType> {
        Some(match b {
            0 => EntryType::WriteSet,
            1 => EntryType::Snapshot,
            2 => EntryType::WriteSetWithClaims,
            3 => EntryType::WriteSetWithCommitEvidence,
            4 => EntryType::WriteSetWithCommitEvidenceAndClaims,
            _ => return None,
        })
    }

    /// The type byte.
    pub fn to_byte(self) -> u8 {
        match self {
            EntryType::WriteSet => 0,
            EntryType::Snapshot => 1,
            EntryType::WriteSetWithClaims => 2,
            EntryType::WriteSetWithCommitEvidence => 3,
            EntryType::WriteSetWithCommitEvidenceAndClaims => 4,
        }
    }

    fn has_claims(self) -> bool {
        matches!(
            self,
            EntryType::WriteSetWithClaims | EntryType::WriteSetWithCommitEvidenceAndClaims
        )
    }

    fn has_commit_evidence(self) -> bool {
        matches!(
            self,
            EntryType::WriteSetWithCommitEvidence | EntryType::WriteSetWithCommitEvidenceAndClaims
        )
    }
}

/// Why entry bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The buffer ends before the entry does.
    #[error("entry truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the entry needs.
        needed: u64,
        /// Bytes present.
        available: usize,
    },
    /// The format version byte is not 1.
    #[error("unsupported entry format version {0} (only 1 exists)")]
    Version(u8),
    /// Unknown flag bits are set.
    #[error("unknown entry flags {0:#04x}")]
    Flags(u8),
    /// The size field is below the minimum or above 1 GiB.
    #[error("entry size {0} out of bounds")]
    Size(u64),
    /// The public-domain length runs past the entry.
    #[error("public domain length {0} runs past the entry")]
    PublicLength(u64),
    /// The entry type byte is unknown or not allowed here.
    #[error("unknown or unexpected entry type {0}")]
    EntryType(u8),
    /// The public domain's seqno disagrees with the IV.
    #[error("public domain seqno {public} differs from the IV's seqno {iv}")]
    SeqnoMismatch {
        /// Seqno in the public domain.
        public: i64,
        /// Seqno in the IV.
        iv: u64,
    },
    /// A write set is malformed (field named).
    #[error("malformed write set: {0}")]
    WriteSet(&'static str),
    /// The read count of a map is non-zero (reads are never recorded).
    #[error("map {0:?} records reads, which ledgers never do")]
    Reads(String),
    /// A field that ledger entries always write as zero is not zero.
    #[error("{0} must be 0 in a ledger entry")]
    Placeholder(&'static str),
    /// A map name is not UTF-8.
    #[error("map name is not UTF-8")]
    MapName,
    /// The GCM tag does not authenticate the entry under this ledger secret.
    #[error("entry does not authenticate under the ledger secret (GCM tag mismatch)")]
    Authentication,
}

/// The IV of an entry: seqno, view and the snapshot bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iv {
    /// Sequence number.
    pub seqno: u64,
    /// View (31 bits).
    pub view: u32,
    /// Set for snapshots.
    pub snapshot: bool,
}

impl Iv {
    /// The IV of a ledger transaction.
    pub fn for_tx(txid: TxId) -> Iv {
        Iv {
            seqno: txid.seqno,
            view: (txid.view & 0x7fff_ffff) as u32,
            snapshot: false,
        }
    }

    /// The 12 IV bytes.
    pub fn to_bytes(self) -> [u8; IV_SIZE] {
        let mut b = [0u8; IV_SIZE];
        b[..8].copy_from_slice(&self.seqno.to_le_bytes());
        let v = self.view | if self.snapshot { 0x8000_0000 } else { 0 };
        b[8..].copy_from_slice(&v.to_le_bytes());
        b
    }

    /// From 12 IV bytes.
    pub fn from_bytes(b: &[u8; IV_SIZE]) -> Iv {
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        let mut v = [0u8; 4];
        v.copy_from_slice(&b[8..]);
        let v = u32::from_le_bytes(v);
        Iv {
            seqno: u64::from_le_bytes(s),
            view: v & 0x7fff_ffff,
            snapshot: v & 0x8000_0000 != 0,
        }
    }

    /// The transaction id the IV names.
    pub fn txid(self) -> TxId {
        TxId::new(u64::from(self.view), self.seqno)
    }
}

/// The writes and removes one transaction made to one map (table).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MapWrites {
    /// Map name; names starting `public:` are stored in plaintext.
    pub name: String,
    /// Keys written, with their values, in ledger order.
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys removed, in ledger order.
    pub removes: Vec<Vec<u8>>,
}

impl MapWrites {
    /// A map with only writes.
    pub fn with_writes(name: impl Into<String>, writes: Vec<(Vec<u8>, Vec<u8>)>) -> MapWrites {
        MapWrites {
            name: name.into(),
            writes,
            removes: Vec::new(),
        }
    }

    /// The value written at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.writes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether a map name is in the public domain.
    pub fn is_public_name(name: &str) -> bool {
        name.starts_with("public:")
    }
}

/// A decoded public domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicDomain {
    /// The entry type.
    pub entry_type: EntryType,
    /// The seqno recorded in the public domain (CCF's "version").
    pub seqno: i64,
    /// The claims digest (types 2 and 4).
    pub claims_digest: Option<Hash>,
    /// SHA-256 of the commit evidence (types 3 and 4).
    pub commit_evidence_digest: Option<Hash>,
    /// The max conflict version: 0 as Vellum and current CCF write it, other values in ledgers
    /// of older CCF releases. Not an integrity field.
    pub max_conflict_version: i64,
    /// The public maps (for a snapshot-type entry, each map's records with a non-negative
    /// version, as CCF's verifier reads them).
    pub maps: Vec<MapWrites>,
}

impl PublicDomain {
    /// The public map named `name`.
    pub fn map(&self, name: &str) -> Option<&MapWrites> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// One entry parsed from ledger bytes; borrows the buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    /// The whole entry, header included (the write-set digest is its SHA-256).
    pub bytes: &'a [u8],
    /// Flag bits.
    pub flags: u8,
    /// The GCM tag.
    pub tag: [u8; TAG_SIZE],
    /// The IV.
    pub iv: Iv,
    /// The public domain bytes.
    pub public: &'a [u8],
    /// The private domain ciphertext.
    pub ciphertext: &'a [u8],
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], EntryError> {
        let n = usize::try_from(n).map_err(|_| EntryError::WriteSet(what))?;
        let end = self.pos.checked_add(n).ok_or(EntryError::WriteSet(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(EntryError::WriteSet(what))?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, EntryError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, EntryError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_le_bytes(b))
    }
    pub(crate) fn blob(&mut self, what: &'static str) -> Result<&'a [u8], EntryError> {
        let n = self.u64(what)?;
        self.take(n, what)
    }
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Reads the size of the entry at the start of `buf` from its header: `HEADER_SIZE + S`.
pub fn entry_len(buf: &[u8]) -> Result<u64, EntryError> {
    let h = buf.get(..HEADER_SIZE).ok_or(EntryError::Truncated {
        needed: HEADER_SIZE as u64,
        available: buf.len(),
    })?;
    if h[0] != 1 {
        return Err(EntryError::Version(h[0]));
    }
    if h[1] & !(FLAG_FORCE_CHUNK_AFTER | FLAG_FORCE_CHUNK_BEFORE) != 0 {
        return Err(EntryError::Flags(h[1]));
    }
    let mut s = [0u8; 8];
    s[..6].copy_from_slice(&h[2..8]);
    let size = u64::from_le_bytes(s);
    if !(MIN_BODY_SIZE..=MAX_BODY_SIZE).contains(&size) {
        return Err(EntryError::Size(size));
    }
    Ok(HEADER_SIZE as u64 + size)
}

impl<'a> RawEntry<'a> {
    /// Parses the entry at the start of `buf`; returns it and the bytes after it.
    pub fn parse(buf: &'a [u8]) -> Result<(RawEntry<'a>, &'a [u8]), EntryError> {
        let total = entry_len(buf)?;
        let total_usize = usize::try_from(total).map_err(|_| EntryError::Size(total))?;
        if buf.len() < total_usize {
            return Err(EntryError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        let (bytes, rest) = buf.split_at(total_usize);
        let mut tag = [0u8; TAG_SIZE];
        tag.copy_from_slice(&bytes[HEADER_SIZE..HEADER_SIZE + TAG_SIZE]);
        let mut iv = [0u8; IV_SIZE];
        iv.copy_from_slice(&bytes[HEADER_SIZE + TAG_SIZE..HEADER_SIZE + TAG_SIZE + IV_SIZE]);
        let p_at = HEADER_SIZE + TAG_SIZE + IV_SIZE;
        let mut p = [0u8; 8];
        p.copy_from_slice(&bytes[p_at..p_at + 8]);
        let p = u64::from_le_bytes(p);
        let pub_start = p_at + 8;
        let avail = (bytes.len() - pub_start) as u64;
        if p > avail {
            return Err(EntryError::PublicLength(p));
        }
        let pub_end = pub_start + p as usize;
        Ok((
            RawEntry {
                bytes,
                flags: bytes[1],
                tag,
                iv: Iv::from_bytes(&iv),
                public: &bytes[pub_start..pub_end],
                ciphertext: &bytes[pub_end..],
            },
            rest,
        ))
    }

    /// SHA-256 of the whole entry: the write-set digest.
    pub fn write_set_digest(&self) -> Hash {
        Hash::digest(self.bytes)
    }

    /// Decodes the public domain of a ledger transaction, checking that it is not a snapshot
    /// and that its seqno matches the IV.
    pub fn public_domain(&self) -> Result<PublicDomain, EntryError> {
        let pd = decode_public_domain(self.public)?;
        if pd.entry_type == EntryType::Snapshot {
            return Err(EntryError::EntryType(EntryType::Snapshot.to_byte()));
        }
        if pd.seqno < 0 || pd.seqno as u64 != self.iv.seqno {
            return Err(EntryError::SeqnoMismatch {
                public: pd.seqno,
                iv: self.iv.seqno,
            });
        }
        Ok(pd)
    }
}

/// Decodes a public domain of any entry type, the way CCF's verifier (`ccf.ledger.PublicDomain`)
/// reads it: the max conflict version and map read versions may hold any value; a
/// snapshot-type domain (which only snapshot files hold) is read in the snapshot map format.
pub fn decode_public_domain(buf: &[u8]) -> Result<PublicDomain, EntryError> {
    let ty = *buf.first().ok_or(EntryError::WriteSet("entry type"))?;
    let entry_type = EntryType::from_byte(ty).ok_or(EntryError::EntryType(ty))?;
    let mut r = Reader { buf, pos: 1 };
    let seqno = r.i64("seqno")?;
    let claims_digest = if entry_type.has_claims() {
        Some(
            Hash::from_slice(r.take(32, "claims digest")?)
                .map_err(|_| EntryError::WriteSet("claims digest"))?,
        )
    } else {
        None
    };
    let commit_evidence_digest = if entry_type.has_commit_evidence() {
        Some(
            Hash::from_slice(r.take(32, "commit evidence digest")?)
                .map_err(|_| EntryError::WriteSet("commit evidence digest"))?,
        )
    } else {
        None
    };
    let max_conflict_version = r.i64("max conflict version")?;
    let maps = if entry_type == EntryType::Snapshot {
        decode_snapshot_maps(&mut r)?
    } else {
        decode_maps(&mut r)?
    };
    Ok(PublicDomain {
        entry_type,
        seqno,
        claims_digest,
        commit_evidence_digest,
        max_conflict_version,
        maps,
    })
}

fn decode_maps(r: &mut Reader<'_>) -> Result<Vec<MapWrites>, EntryError> {
    let mut maps = Vec::new();
    while !r.done() {
        let name = std::str::from_utf8(r.blob("map name")?)
            .map_err(|_| EntryError::MapName)?
            .to_owned();
        // The read version: any value (older CCF releases wrote non-zero ones).
        r.i64("read version")?;
        if r.u64("read count")? != 0 {
            return Err(EntryError::Reads(name));
        }
        let w = r.u64("write count")?;
        let mut writes = Vec::new();
        for _ in 0..w {
            let k = r.blob("key")?.to_vec();
            let v = r.blob("value")?.to_vec();
            writes.push((k, v));
        }
        let n = r.u64("remove count")?;
        let mut removes = Vec::new();
        for _ in 0..n {
            removes.push(r.blob("removed key")?.to_vec());
        }
        maps.push(MapWrites {
            name,
            writes,
            removes,
        });
    }
    Ok(maps)
}

/// A snapshot's maps: after the hash of the entry at the snapshot and the view history,
/// per map `name, u64 version, u64 size`, then records `u64 key length, key, padding to 8,
/// u64 value size (>= 8), i64 version, value, padding to 8` until `size` bytes are read.
/// Records with a negative version (deletions before CCF 3.0) are skipped, as CCF does.
fn decode_snapshot_maps(r: &mut Reader<'_>) -> Result<Vec<MapWrites>, EntryError> {
    let padding = |n: u64| (8 - n % 8) % 8;
    r.blob("snapshot hash")?;
    let history = r.blob("view history")?;
    if history.len() % 8 != 0 {
        return Err(EntryError::WriteSet("view history"));
    }
    let mut maps = Vec::new();
    while !r.done() {
        let name = std::str::from_utf8(r.blob("map name")?)
            .map_err(|_| EntryError::MapName)?
            .to_owned();
        r.take(8, "map version")?;
        let size = r.u64("map size")?;
        let start = r.pos;
        let mut writes = Vec::new();
        while ((r.pos - start) as u64) < size {
            let k = r.blob("key")?.to_vec();
            r.take(padding(k.len() as u64), "key padding")?;
            let n = r.u64("value size")?;
            if n < 8 {
                return Err(EntryError::WriteSet("versioned value"));
            }
            let version = r.i64("value version")?;
            let v = r.take(n - 8, "value")?.to_vec();
            r.take(padding(n), "value padding")?;
            if version >= 0 {
                writes.push((k, v));
            }
        }
        maps.push(MapWrites {
            name,
            writes,
            removes: Vec::new(),
        });
    }
    Ok(maps)
}

pub(crate) fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_maps<'a>(
    out: &mut Vec<u8>,
    maps: impl IntoIterator<Item = &'a MapWrites>,
    read_version: i64,
) {
    for m in maps {
        put_blob(out, m.name.as_bytes());
        out.extend_from_slice(&read_version.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&(m.writes.len() as u64).to_le_bytes());
        for (k, v) in &m.writes {
            put_blob(out, k);
            put_blob(out, v);
        }
        out.extend_from_slice(&(m.removes.len() as u64).to_le_bytes());
        for k in &m.removes {
            put_blob(out, k);
        }
    }
}

/// The ledger secret: 32 bytes that seal private domains and derive commit evidence.
///
/// The AES-GCM key schedule and the keyed commit-evidence HMAC are computed once here: every
/// transaction seals with the one and derives its commit evidence with the other.
#[derive(Clone)]
pub struct LedgerSecret {
    key: [u8; 32],
    cipher: Aes256Gcm,
    /// `HMAC-SHA256` keyed with `HMAC-SHA256(key, "Commit S")`, before any input.
    commit_mac: HmacSha256,
}

impl std::fmt::Debug for LedgerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerSecret(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with `key`, before any input.
fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

/// The MAC of `msg` under a keyed HMAC.
fn mac(mut m: HmacSha256, msg: &[u8]) -> [u8; 32] {
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    mac(keyed(key), msg)
}

/// HMAC-SHA256 (used by commit evidence and ACL's application claims).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    hmac(key, msg)
}

impl LedgerSecret {
    /// From the raw 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> LedgerSecret {
        LedgerSecret {
            key,
            cipher: Aes256Gcm::new(&key.into()),
            commit_mac: keyed(&hmac(&key, b"Commit S")),
        }
    }

    /// The raw bytes (for storing in the data directory).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// A key for another purpose, derived from this secret: `HMAC-SHA256(secret, label)`
    /// (labels must differ from `"Commit S"`, the commit-evidence key's).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        hmac(&self.key, label.as_bytes())
    }

    /// The commit evidence of a transaction: `ce:VIEW.SEQNO:<64 hex>`, where the hex is
    /// `HMAC-SHA256(HMAC-SHA256(secret, "Commit S"), "VIEW.SEQNO")`.
    pub fn commit_evidence(&self, txid: TxId) -> String {
        let t = txid.to_string();
        let digest = mac(self.commit_mac.clone(), t.as_bytes());
        format!("ce:{t}:{}", hex::encode(digest))
    }

    /// This (past) secret sealed under `next`, the secret that replaces it at a rekey:
    /// `nonce || ciphertext || tag` (AES-256-GCM; `nonce` must not repeat under `next`).
    pub fn seal_under(&self, next: &LedgerSecret, nonce: [u8; 12]) -> Vec<u8> {
        use aes_gcm::aead::Aead as _;
        let ct = next
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                aes_gcm::aead::Payload {
                    msg: &self.key,
                    aad: PREVIOUS_SECRET_AAD,
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ct);
        out
    }

    /// A past secret [`LedgerSecret::seal_under`] sealed under `self` (its successor).
    pub fn open_sealed(&self, sealed: &[u8]) -> Result<LedgerSecret, EntryError> {
        use aes_gcm::aead::Aead as _;
        if sealed.len() != 12 + 32 + 16 {
            return Err(EntryError::Authentication);
        }
        let (nonce, ct) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| EntryError::Authentication)?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                aes_gcm::aead::Payload {
                    msg: ct,
                    aad: PREVIOUS_SECRET_AAD,
                },
            )
            .map_err(|_| EntryError::Authentication)?;
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| EntryError::Authentication)?;
        Ok(LedgerSecret::from_bytes(key))
    }

    /// Seals `plaintext` in place under this secret with `iv` and `aad`; returns the tag.
    pub(crate) fn seal_detached(
        &self,
        iv: [u8; IV_SIZE],
        aad: &[u8],
        plaintext: &mut [u8],
    ) -> [u8; TAG_SIZE] {
        match self
            .cipher
            .encrypt_in_place_detached(&Nonce::from(iv), aad, plaintext)
        {
            Ok(t) => t.into(),
            // Only fails for plaintexts beyond 64 GiB.
            Err(_) => unreachable!("AES-GCM plaintext within limits"),
        }
    }

    /// Opens what [`LedgerSecret::seal_detached`] sealed.
    pub(crate) fn open_detached(
        &self,
        iv: [u8; IV_SIZE],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_SIZE],
    ) -> Result<Vec<u8>, EntryError> {
        let mut buf = ciphertext.to_vec();
        self.cipher
            .decrypt_in_place_detached(&Nonce::from(iv), aad, &mut buf, &Tag::from(*tag))
            .map_err(|_| EntryError::Authentication)?;
        Ok(buf)
    }

    /// Checks the GCM tag and decrypts the private maps of `entry`.
    pub fn open(&self, entry: &RawEntry<'_>) -> Result<Vec<MapWrites>, EntryError> {
        let mut buf = entry.ciphertext.to_vec();
        let iv = entry.iv.to_bytes();
        self.cipher
            .decrypt_in_place_detached(
                &Nonce::from(iv),
                entry.public,
                &mut buf,
                &Tag::from(entry.tag),
            )
            .map_err(|_| EntryError::Authentication)?;
        let mut r = Reader { buf: &buf, pos: 0 };
        decode_maps(&mut r)
    }
}

/// The associated data of a past secret sealed under its successor.
const PREVIOUS_SECRET_AAD: &[u8] = b"vellum previous ledger secret";

/// The ledger secrets of a ledger: the first, and each one a rekey brought in with the seqno it
/// applies from (the rekey transaction's seqno + 1, as CCF's). A transaction is sealed, and
/// its commit evidence derived, under the secret that applies at its seqno.
#[derive(Debug, Clone)]
pub struct LedgerSecrets {
    /// (applies from seqno, secret), by seqno; the first applies from 0.
    list: Vec<(u64, LedgerSecret)>,
}

/// A rekey that does not come after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a ledger secret from seqno {from} does not follow the last one's (from {last})")]
pub struct SecretOrder {
    /// The seqno the new secret would apply from.
    pub from: u64,
    /// The seqno the last secret applies from.
    pub last: u64,
}

impl LedgerSecrets {
    /// A ledger with one secret.
    pub fn new(first: LedgerSecret) -> LedgerSecrets {
        LedgerSecrets {
            list: vec![(0, first)],
        }
    }

    /// The secret that applies at `seqno`.
    pub fn at(&self, seqno: u64) -> &LedgerSecret {
        let i = self.list.partition_point(|(from, _)| *from <= seqno);
        // The first applies from 0: `i` is at least 1.
        &self.list[i.saturating_sub(1)].1
    }

    /// The secret that applies from now on.
    pub fn latest(&self) -> &LedgerSecret {
        &self.list[self.list.len() - 1].1
    }

    /// The first secret (the one a service opened with).
    pub fn first(&self) -> &LedgerSecret {
        &self.list[0].1
    }

    /// Adds a secret applying from `from` (after the last one's start).
    pub fn push(&mut self, from: u64, secret: LedgerSecret) -> Result<(), SecretOrder> {
        let last = self.list[self.list.len() - 1].0;
        if from <= last {
            return Err(SecretOrder { from, last });
        }
        self.list.push((from, secret));
        Ok(())
    }

    /// Forgets the secrets that would apply only after `last_kept + 1` (the transactions
    /// that brought them in were truncated).
    pub fn truncate(&mut self, last_kept: u64) {
        while self.list.len() > 1 && self.list[self.list.len() - 1].0 > last_kept + 1 {
            self.list.pop();
        }
    }

    /// (applies from seqno, secret), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &LedgerSecret)> {
        self.list.iter().map(|(f, s)| (*f, s))
    }

    /// Checks the GCM tag and decrypts the private maps of `entry`, under the secret of its
    /// seqno.
    pub fn open(&self, entry: &RawEntry<'_>) -> Result<Vec<MapWrites>, EntryError> {
        self.at(entry.iv.seqno).open(entry)
    }

    /// The commit evidence of a transaction, under the secret of its seqno.
    pub fn commit_evidence(&self, txid: TxId) -> String {
        self.at(txid.seqno).commit_evidence(txid)
    }
}

impl LedgerSecrets {
    /// Secrets from `(applies from seqno, secret)` pairs, oldest first; the first applies
    /// from 0 whatever it says (see `tables::ledger_secrets_from_chain`).
    pub fn from_list(list: Vec<(u64, LedgerSecret)>) -> Result<LedgerSecrets, SecretOrder> {
        let mut it = list.into_iter();
        let Some((_, first)) = it.next() else {
            return Err(SecretOrder { from: 0, last: 0 });
        };
        let mut out = LedgerSecrets::new(first);
        for (from, s) in it {
            out.push(from, s)?;
        }
        Ok(out)
    }
}

/// Why a ledger secrets text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsTextError {
    /// A line is not `HEX` (the first) or `FROM HEX`.
    #[error(
        "line {0}: expected 64 hex characters, after the seqno it applies from but on the first line"
    )]
    Line(usize),
    /// No secret at all.
    #[error("no ledger secret")]
    Empty,
    /// The seqnos do not increase.
    #[error(transparent)]
    Order(#[from] SecretOrder),
}

impl LedgerSecrets {
    /// The secrets as text, one per line, oldest first: the first as 64 hex characters, each
    /// later one as `FROM HEX` (the seqno it applies from, a space, its hex). A ledger never
    /// rekeyed is one line of hex: the `ledger_secret` file as it always was.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, (from, s)) in self.iter().enumerate() {
            if i > 0 {
                out.push_str(&from.to_string());
                out.push(' ');
            }
            out.push_str(&hex::encode(s.as_bytes()));
            out.push('\n');
        }
        out
    }

    /// Reads [`LedgerSecrets::to_text`]; blank lines are ignored.
    pub fn from_text(text: &str) -> Result<LedgerSecrets, SecretsTextError> {
        let mut list = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (from, hex_part) = match line.split_once(' ') {
                Some((f, h)) if !list.is_empty() => (
                    f.parse::<u64>()
                        .map_err(|_| SecretsTextError::Line(i + 1))?,
                    h.trim(),
                ),
                None if list.is_empty() => (0, line),
                _ => return Err(SecretsTextError::Line(i + 1)),
            };
            let mut key = [0u8; 32];
            hex::decode_to_slice(hex_part, &mut key).map_err(|_| SecretsTextError::Line(i + 1))?;
            list.push((from, LedgerSecret::from_bytes(key)));
        }
        if list.is_empty() {
            return Err(SecretsTextError::Empty);
        }
        Ok(LedgerSecrets::from_list(list)?)
    }

    /// The seqno the latest secret applies from (0 for the first).
    pub fn latest_from(&self) -> u64 {
        self.list[self.list.len() - 1].0
    }

    /// How many secrets (1 + the rekeys).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never: a ledger has at least its first secret.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl From<LedgerSecret> for LedgerSecrets {
    fn from(first: LedgerSecret) -> LedgerSecrets {
        LedgerSecrets::new(first)
    }
}

/// SHA-256 of a commit-evidence string: what the public domain stores.
pub fn commit_evidence_digest(commit_evidence: &str) -> Hash {
    Hash::digest(commit_evidence.as_bytes())
}

/// The Merkle leaf of a type-4 entry: `SHA-256(write_set_digest || SHA-256(ce) || claims)`.
pub fn leaf_hash(
    write_set_digest: &Hash,
    commit_evidence_digest: &Hash,
    claims_digest: &Hash,
) -> Hash {
    Hash::digest_parts(&[
        &write_set_digest.0,
        &commit_evidence_digest.0,
        &claims_digest.0,
    ])
}

/// The Merkle leaf of any entry type, from its write-set digest and public domain.
pub fn leaf_for(write_set_digest: &Hash, pd: &PublicDomain) -> Hash {
    match (pd.commit_evidence_digest, pd.claims_digest) {
        (Some(ce), Some(cl)) => leaf_hash(write_set_digest, &ce, &cl),
        (Some(ce), None) => Hash::digest_parts(&[&write_set_digest.0, &ce.0]),
        (None, Some(cl)) => Hash::digest_parts(&[&write_set_digest.0, &cl.0]),
        (None, None) => *write_set_digest,
    }
}

/// The values older CCF releases wrote in the version fields that Vellum (like current CCF)
/// writes as 0: the public domain's max conflict version and each map's read version. Only for
/// writing ledgers of that shape (`vellum sample-ledger --legacy-versions`); neither is an
/// integrity field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacyVersions {
    /// The max conflict version.
    pub max_conflict_version: i64,
    /// Every map's read version.
    pub read_version: i64,
}

impl LegacyVersions {
    /// Non-zero values of the kind older CCF releases wrote (versions of the store the
    /// transaction saw): here the transaction's own seqno in both fields.
    pub fn older_ccf(seqno: u64) -> LegacyVersions {
        let v = seqno as i64;
        LegacyVersions {
            max_conflict_version: v,
            read_version: v,
        }
    }
}

/// What to write in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryBuilder {
    /// Entry flags.
    pub flags: u8,
    /// Claims digest (zero when the transaction has no claims).
    pub claims_digest: Hash,
    /// Maps, public and private; each goes to its domain by its name.
    pub maps: Vec<MapWrites>,
}

/// An encoded entry and the digests a receipt needs.
#[derive(Debug, Clone)]
pub struct EncodedEntry {
    /// The transaction id.
    pub txid: TxId,
    /// The entry bytes, header included.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`.
    pub write_set_digest: Hash,
    /// `ce:VIEW.SEQNO:<hex>`.
    pub commit_evidence: String,
    /// The claims digest.
    pub claims_digest: Hash,
    /// The Merkle leaf.
    pub leaf: Hash,
}

impl EntryBuilder {
    /// The write set of an encoded entry, read back: flags, claims digest, the public maps
    /// and the private maps (decrypted with `secret`, which also checks the GCM tag).
    /// Encoding the result at the entry's transaction id gives the entry's bytes again.
    pub fn decode(raw: &RawEntry<'_>, secret: &LedgerSecret) -> Result<EntryBuilder, EntryError> {
        let pd = raw.public_domain()?;
        let mut maps = pd.maps;
        maps.extend(secret.open(raw)?);
        Ok(EntryBuilder {
            flags: raw.flags,
            claims_digest: pd.claims_digest.unwrap_or(Hash::ZERO),
            maps,
        })
    }

    /// Adds a map.
    pub fn map(mut self, m: MapWrites) -> Self {
        self.maps.push(m);
        self
    }

    /// Encodes a type-4 entry for `txid`, sealing private maps under `secret`.
    ///
    /// Deterministic: the same (txid, maps, claims, secret) always give the same bytes, so every
    /// node of a service writes byte-identical ledgers.
    pub fn encode(&self, txid: TxId, secret: &LedgerSecret) -> EncodedEntry {
        self.encode_with(txid, secret, LegacyVersions::default())
    }

    /// Encodes like [`EntryBuilder::encode`], with `legacy` in the version fields.
    pub fn encode_with(
        &self,
        txid: TxId,
        secret: &LedgerSecret,
        legacy: LegacyVersions,
    ) -> EncodedEntry {
        let ce = secret.commit_evidence(txid);
        let ce_digest = commit_evidence_digest(&ce);
        let mut public = Vec::with_capacity(256);
        public.push(EntryType::WriteSetWithCommitEvidenceAndClaims.to_byte());
        public.extend_from_slice(&(txid.seqno as i64).to_le_bytes());
        public.extend_from_slice(&self.claims_digest.0);
        public.extend_from_slice(&ce_digest.0);
        public.extend_from_slice(&legacy.max_conflict_version.to_le_bytes());
        let public_map = |m: &&MapWrites| MapWrites::is_public_name(&m.name);
        let rv = legacy.read_version;
        encode_maps(&mut public, self.maps.iter().filter(public_map), rv);
        let mut private = Vec::new();
        encode_maps(
            &mut private,
            self.maps.iter().filter(|m| !public_map(m)),
            rv,
        );
        let iv = Iv::for_tx(txid).to_bytes();
        let tag =
            match secret
                .cipher
                .encrypt_in_place_detached(&Nonce::from(iv), &public, &mut private)
            {
                Ok(t) => t,
                // Only fails for plaintexts beyond 64 GiB, which no entry reaches (1 GiB cap).
                Err(_) => unreachable!("AES-GCM plaintext within limits"),
            };
        let size = (TAG_SIZE + IV_SIZE + 8 + public.len() + private.len()) as u64;
        let mut bytes = Vec::with_capacity(HEADER_SIZE + size as usize);
        bytes.push(1);
        bytes.push(self.flags);
        bytes.extend_from_slice(&size.to_le_bytes()[..6]);
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(&iv);
        bytes.extend_from_slice(&(public.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&public);
        bytes.extend_from_slice(&private);
        let write_set_digest = Hash::digest(&bytes);
        let leaf = leaf_hash(&write_set_digest, &ce_digest, &self.claims_digest);
        EncodedEntry {
            txid,
            bytes,
            write_set_digest,
            commit_evidence: ce,
            claims_digest: self.claims_digest,
            leaf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> LedgerSecret {
        LedgerSecret::from_bytes([7u8; 32])
    }

    #[test]
    fn decode_reencodes_to_the_same_bytes() {
        let b = EntryBuilder {
            flags: 0,
            claims_digest: Hash::digest(b"claims"),
            maps: vec![
                MapWrites::with_writes("vellum.entries", vec![(b"c".to_vec(), b"x".to_vec())]),
                MapWrites::with_writes("public:a", vec![(b"k".to_vec(), b"v".to_vec())]),
                MapWrites::with_writes("public:b", vec![]),
            ],
        };
        let t = TxId::new(3, 9);
        let e = b.encode(t, &secret());
        let (raw, _) = RawEntry::parse(&e.bytes).unwrap();
        let d = EntryBuilder::decode(&raw, &secret()).unwrap();
        assert_eq!(d.encode(t, &secret()).bytes, e.bytes);
        assert_eq!(d.claims_digest, b.claims_digest);
        assert!(EntryBuilder::decode(&raw, &LedgerSecret::from_bytes([8u8; 32])).is_err());
    }

    #[test]
    fn encode_parse_open_round_trip() {
        let b = EntryBuilder::default()
            .map(MapWrites::with_writes(
                "public:my.app",
                vec![(b"k".to_vec(), b"hello".to_vec())],
            ))
            .map(MapWrites {
                name: "vellum.entries".into(),
                writes: vec![(b"c".to_vec(), b"secret".to_vec())],
                removes: vec![b"gone".to_vec()],
            });
        let e = b.encode(TxId::new(2, 17), &secret());
        let (raw, rest) = RawEntry::parse(&e.bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(raw.iv.txid(), TxId::new(2, 17));
        assert_eq!(raw.write_set_digest(), e.write_set_digest);
        let pd = raw.public_domain().unwrap();
        assert_eq!(
            pd.entry_type,
            EntryType::WriteSetWithCommitEvidenceAndClaims
        );
        assert_eq!(pd.maps.len(), 1);
        assert_eq!(
            pd.map("public:my.app").unwrap().get(b"k"),
            Some(&b"hello"[..])
        );
        assert_eq!(leaf_for(&raw.write_set_digest(), &pd), e.leaf);
        let private = secret().open(&raw).unwrap();
        assert_eq!(private[0].removes, vec![b"gone".to_vec()]);
        assert_eq!(private[0].get(b"c"), Some(&b"secret"[..]));
        // Contents are not visible in plaintext.
        assert!(!e.bytes.windows(6).any(|w| w == b"secret"));
        // Wrong secret or a flipped public byte fails authentication.
        assert_eq!(
            LedgerSecret::from_bytes([8u8; 32]).open(&raw),
            Err(EntryError::Authentication)
        );
        let mut flipped = e.bytes.clone();
        let at = flipped.len() - raw.ciphertext.len() - 3;
        flipped[at] ^= 1;
        let (raw2, _) = RawEntry::parse(&flipped).unwrap();
        assert_eq!(secret().open(&raw2), Err(EntryError::Authentication));
    }

    #[test]
    fn header_checks() {
        let e = EntryBuilder::default().encode(TxId::new(2, 1), &secret());
        let mut v = e.bytes.clone();
        v[0] = 2;
        assert_eq!(RawEntry::parse(&v).unwrap_err(), EntryError::Version(2));
        let mut v = e.bytes.clone();
        v[1] = 0x04;
        assert_eq!(RawEntry::parse(&v).unwrap_err(), EntryError::Flags(0x04));
        assert!(matches!(
            RawEntry::parse(&e.bytes[..e.bytes.len() - 1]),
            Err(EntryError::Truncated { .. })
        ));
        // Empty private domain: size is tag + iv + len + 81-byte public domain.
        assert_eq!(e.bytes.len(), 8 + 16 + 12 + 8 + 81);
    }

    #[test]
    fn legacy_version_fields_are_read_and_ignored() {
        let b = EntryBuilder::default()
            .map(MapWrites::with_writes(
                "public:t",
                vec![(b"k".to_vec(), b"v".to_vec())],
            ))
            .map(MapWrites::with_writes(
                "private",
                vec![(b"k".to_vec(), b"s".to_vec())],
            ));
        let t = TxId::new(2, 40);
        let e = b.encode_with(t, &secret(), LegacyVersions::older_ccf(40));
        assert_ne!(e.bytes, b.encode(t, &secret()).bytes);
        let (raw, _) = RawEntry::parse(&e.bytes).unwrap();
        let pd = raw.public_domain().unwrap();
        assert_eq!(pd.max_conflict_version, 40);
        // The read version sits after the map name's length and bytes.
        let at = 44 + 81 + 8 + "public:t".len();
        assert_eq!(&e.bytes[at..at + 8], &40i64.to_le_bytes());
        let d = EntryBuilder::decode(&raw, &secret()).unwrap();
        assert_eq!(d.maps, b.maps);
    }

    #[test]
    fn snapshot_domains_read_as_ccf_reads_them() {
        // type 1, seqno 5, max conflict 0, hash (2 bytes), view history (one u64), then a map
        // with two records: version 3 (kept) and version -1 (a pre-3.0 deletion, skipped).
        let mut b = vec![1u8];
        b.extend_from_slice(&5i64.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        put_blob(&mut b, b"hh");
        put_blob(&mut b, &7u64.to_le_bytes());
        put_blob(&mut b, b"public:m");
        b.extend_from_slice(&9u64.to_le_bytes());
        let mut records = Vec::new();
        for (k, ver, v) in [(&b"key"[..], 3i64, &b"value"[..]), (b"old", -1, b"")] {
            put_blob(&mut records, k);
            records.resize(records.len() + (8 - k.len() % 8) % 8, 0);
            records.extend_from_slice(&((v.len() + 8) as u64).to_le_bytes());
            records.extend_from_slice(&ver.to_le_bytes());
            records.extend_from_slice(v);
            records.resize(records.len() + (8 - (v.len() + 8) % 8) % 8, 0);
        }
        b.extend_from_slice(&(records.len() as u64).to_le_bytes());
        b.extend_from_slice(&records);
        let pd = decode_public_domain(&b).unwrap();
        assert_eq!(pd.entry_type, EntryType::Snapshot);
        assert_eq!(pd.maps.len(), 1);
        assert_eq!(
            pd.maps[0].writes,
            vec![(b"key".to_vec(), b"value".to_vec())]
        );
        // A versioned value shorter than its version is malformed.
        let mut short = b.clone();
        let at = short.len() - records.len() + 8 + 8; // first record's value size
        short[at..at + 8].copy_from_slice(&7u64.to_le_bytes());
        assert!(decode_public_domain(&short).is_err());
    }

    #[test]
    fn secrets_text_round_trips_and_reads_the_old_one_line_file() {
        let one = LedgerSecrets::new(LedgerSecret::from_bytes([7; 32]));
        assert_eq!(one.to_text(), format!("{}\n", "07".repeat(32)));
        let mut three = one.clone();
        three.push(11, LedgerSecret::from_bytes([8; 32])).unwrap();
        three.push(40, LedgerSecret::from_bytes([9; 32])).unwrap();
        let back = LedgerSecrets::from_text(&three.to_text()).unwrap();
        let pairs = |s: &LedgerSecrets| {
            s.iter()
                .map(|(f, k)| (f, *k.as_bytes()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&back), pairs(&three));
        assert_eq!(back.latest_from(), 40);
        // The one-line file of a ledger never rekeyed, with or without a newline.
        let old = LedgerSecrets::from_text(&"07".repeat(32)).unwrap();
        assert_eq!(pairs(&old), pairs(&one));
        // Malformed: nothing, a seqno on the first line, a bare later line, short hex,
        // seqnos out of order.
        let h = "07".repeat(32);
        for bad in [
            String::new(),
            format!("5 {h}"),
            format!("{h}\n{h}"),
            format!("{h}\n9 0707"),
            format!("{h}\n9 {h}\n9 {h}"),
        ] {
            assert!(LedgerSecrets::from_text(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commit_evidence_format() {
        let ce = secret().commit_evidence(TxId::new(2, 17));
        assert!(ce.starts_with("ce:2.17:"));
        assert_eq!(ce.len(), "ce:2.17:".len() + 64);
    }

    proptest! {
        #[test]
        fn codec_round_trip(
            seqno in 1u64..1_000_000, view in 1u64..1000,
            maps in proptest::collection::vec(
                ("(public:)?[a-z.]{1,12}",
                 proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..16), proptest::collection::vec(any::<u8>(), 0..64)), 0..4),
                 proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..3)),
                0..4),
            claims in any::<[u8; 32]>(),
        ) {
            let mut b = EntryBuilder { claims_digest: Hash(claims), ..Default::default() };
            for (name, writes, removes) in maps {
                b.maps.push(MapWrites { name, writes, removes });
            }
            let e = b.encode(TxId::new(view, seqno), &secret());
            let (raw, _) = RawEntry::parse(&e.bytes).unwrap();
            let pd = raw.public_domain().unwrap();
            let mut got: Vec<MapWrites> = pd.maps.clone();
            got.extend(secret().open(&raw).unwrap());
            let (mut p, q): (Vec<_>, Vec<_>) = b.maps.iter().cloned().partition(|m| MapWrites::is_public_name(&m.name));
            p.extend(q);
            prop_assert_eq!(got, p);
            prop_assert_eq!(pd.claims_digest, Some(Hash(claims)));
            prop_assert_eq!(leaf_for(&raw.write_set_digest(), &pd), e.leaf);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((raw, _)) = RawEntry::parse(&bytes) {
                let _ = raw.public_domain();
                let _ = secret().open(&raw);
            }
        }
    }
}

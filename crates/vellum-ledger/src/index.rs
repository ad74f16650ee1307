//! The ledger index (redb): transaction seqno → view and collection, collection → its
//! transactions, and the latest transaction per collection, so that reads by id, by collection
//! and over ranges stay cheap at millions of entries.
//!
//! The index is derived data: [`Index::rebuild`] recreates it from the ledger files (decrypting
//! each entry with the ledger secret), so it may lag or be deleted without losing anything.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use vellum_core::entry::{LedgerSecret, MapWrites, RawEntry};

use crate::store::{LedgerFiles, StoreError};

/// The name of the private table holding application entries ([`vellum_core::tables::ENTRIES`]:
/// key = collection id, value = the entry record). Its contents are sealed under the ledger
/// secret.
pub const ENTRIES_TABLE: &str = vellum_core::tables::ENTRIES.name();

/// The application entry a write set holds: its collection id and entry record (the first
/// write to [`ENTRIES_TABLE`]), if it holds one.
pub fn entry_write(maps: &[MapWrites]) -> Option<(&[u8], &[u8])> {
    let (k, v) = maps
        .iter()
        .find(|m| m.name == ENTRIES_TABLE)?
        .writes
        .first()?;
    Some((k, v))
}

/// The collection of the application entry a write set holds, if it holds one.
pub fn collection_of(maps: &[MapWrites]) -> Option<String> {
    entry_write(maps).map(|(k, _)| String::from_utf8_lossy(k).into_owned())
}

/// The tags of an entry record: only that field is read (the contents are skipped, not
/// copied); a record that is not an entry record has none. Entry records are written with their
/// fields in alphabetical order and `tags` only when there are some, so a record that does not
/// end with an array has none: an untagged write, the common case on the write path, is not
/// parsed at all.
fn tags_of(record: &[u8]) -> Vec<String> {
    if !record.ends_with(b"]}") {
        return Vec::new();
    }
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Vec<String>,
    }
    serde_json::from_slice::<Tags>(record).map_or_else(|_| Vec::new(), |t| t.tags)
}

const TXS: TableDefinition<u64, (u64, &str)> = TableDefinition::new("txs");
const BY_COLLECTION: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_collection");
const LATEST: TableDefinition<&str, u64> = TableDefinition::new("latest");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Tagged entries: (collection, tag, seqno).
const BY_TAG: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("by_tag");
/// Each collection's tags: (collection, tag).
const TAGS: TableDefinition<(&str, &str), ()> = TableDefinition::new("tags");
/// The current state of application maps: (map, key) → value.
const APP_KV: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("app_kv");
const LAST: &str = "last_seqno";
/// An index seeded from a snapshot ([`Index::seed`]) lacks the rows of the transactions before
/// it until [`Index::backfill`] adds them: `GAP_FROM..=GAP_TO` (both absent: no gap).
const GAP_FROM: &str = "gap_from";
const GAP_TO: &str = "gap_to";
const TABLE_NAMES: [&str; 8] = [
    "txs",
    "by_collection",
    "latest",
    "meta",
    "blobs",
    "by_tag",
    "tags",
    "app_kv",
];

/// Creates every table the index uses (a no-op for those that exist).
fn create_tables(w: &redb::WriteTransaction) -> Result<(), IndexError> {
    w.open_table(TXS).map_err(st)?;
    w.open_table(BY_COLLECTION).map_err(st)?;
    w.open_table(LATEST).map_err(st)?;
    w.open_table(META).map_err(st)?;
    w.open_table(BLOBS).map_err(st)?;
    w.open_table(BY_TAG).map_err(st)?;
    w.open_table(TAGS).map_err(st)?;
    w.open_table(APP_KV).map_err(st)?;
    Ok(())
}

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The embedded store failed.
    #[error("index store: {0}")]
    Store(String),
    /// Transactions were not applied in order.
    #[error("index expects seqno {expected}, got {got}")]
    Order {
        /// Next seqno the index expects.
        expected: u64,
        /// Seqno given.
        got: u64,
    },
    /// Reading the ledger for a rebuild failed.
    #[error("rebuilding the index: {0}")]
    Ledger(#[from] StoreError),
    /// The rows a query needs are not indexed yet: the node started from a snapshot and is
    /// still indexing the transactions before it ([`Index::backfill`]).
    #[error(
        "this node started from a snapshot and is still indexing transactions {from} to {to}; try again shortly"
    )]
    Loading {
        /// The first seqno not indexed yet.
        from: u64,
        /// The last.
        to: u64,
    },
    /// An entry could not be decoded during a rebuild.
    #[error("rebuilding the index: entry {seqno}: {message}")]
    Entry {
        /// Seqno.
        seqno: u64,
        /// What is wrong.
        message: String,
    },
}

fn st(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

/// Writes the rows a transaction adds to the tables of ids, collections and tags (not a
/// collection's latest entry, nor application maps: what a backfill of older transactions must
/// leave as the newer ones set them).
fn insert_rows(
    tx: &IndexedTx,
    t: &mut redb::Table<'_, u64, (u64, &'static str)>,
    bc: &mut redb::Table<'_, (&'static str, u64), ()>,
    by_tag: &mut redb::Table<'_, (&'static str, &'static str, u64), ()>,
    tags: &mut redb::Table<'_, (&'static str, &'static str), ()>,
) -> Result<(), IndexError> {
    let c = tx.collection.as_deref().unwrap_or("");
    t.insert(tx.seqno, (tx.view, c)).map_err(st)?;
    if let Some(c) = &tx.collection {
        bc.insert((c.as_str(), tx.seqno), ()).map_err(st)?;
        for tag in &tx.tags {
            by_tag
                .insert((c.as_str(), tag.as_str(), tx.seqno), ())
                .map_err(st)?;
            tags.insert((c.as_str(), tag.as_str()), ()).map_err(st)?;
        }
    }
    Ok(())
}

/// The gap a read transaction sees ([`Index::gap`]).
fn read_gap(r: &redb::ReadTransaction) -> Result<Option<(u64, u64)>, IndexError> {
    let meta = r.open_table(META).map_err(st)?;
    let from = meta.get(GAP_FROM).map_err(st)?.map(|v| v.value());
    let to = meta.get(GAP_TO).map_err(st)?.map(|v| v.value());
    Ok(from.zip(to).filter(|(f, t)| f <= t))
}

/// `Err(Loading)` if `from..=to` overlaps the gap.
fn outside_gap(r: &redb::ReadTransaction, from: u64, to: u64) -> Result<(), IndexError> {
    match read_gap(r)? {
        Some((gf, gt)) if from <= gt && to >= gf => Err(IndexError::Loading { from: gf, to: gt }),
        _ => Ok(()),
    }
}

/// One transaction as the index sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedTx {
    /// Seqno.
    pub seqno: u64,
    /// View.
    pub view: u64,
    /// The collection an application entry was written to (`None` for governance and
    /// signature transactions).
    pub collection: Option<String>,
    /// The entry's tags (none for an untagged entry or a transaction that is not an entry).
    pub tags: Vec<String>,
    /// Its writes to application maps (those user-defined functions keep: see [`is_app_map`]),
    /// in write-set order.
    pub kv: Vec<KvWrite>,
}

/// The (key, value) pairs of an application map, by key.
pub type KvEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A write to an application map: the value, or `None` for a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// The map.
    pub map: String,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` removes the key.
    pub value: Option<Vec<u8>>,
}

/// Whether `name` is an application map, the kind user-defined functions read and write and
/// the index keeps the current state of: not CCF's (`ccf.`), not Vellum's (`vellum.`), public or
/// private.
pub fn is_app_map(name: &str) -> bool {
    let bare = name.strip_prefix("public:").unwrap_or(name);
    !(bare.starts_with("ccf.") || bare.starts_with("vellum.") || bare.is_empty())
}

impl IndexedTx {
    /// What the index records for a ledger entry, reading its collection from the sealed
    /// entries table and its application-map writes from both domains.
    pub fn from_entry(raw: &RawEntry<'_>, secret: &LedgerSecret) -> Result<IndexedTx, IndexError> {
        let seqno = raw.iv.seqno;
        let bad = |e: vellum_core::entry::EntryError| IndexError::Entry {
            seqno,
            message: e.to_string(),
        };
        let mut maps = secret.open(raw).map_err(bad)?;
        // Public application maps are kept too (the entry itself is private).
        let public = raw.public_domain().map_err(bad)?.maps;
        maps.extend(public.into_iter().filter(|m| is_app_map(&m.name)));
        Ok(IndexedTx::from_maps(seqno, u64::from(raw.iv.view), &maps))
    }

    /// What the index records for transaction `view.seqno` with write set `maps`.
    pub fn from_maps(seqno: u64, view: u64, maps: &[MapWrites]) -> IndexedTx {
        let (collection, tags) = match entry_write(maps) {
            Some((k, v)) => (Some(String::from_utf8_lossy(k).into_owned()), tags_of(v)),
            None => (None, Vec::new()),
        };
        let mut kv = Vec::new();
        for m in maps.iter().filter(|m| is_app_map(&m.name)) {
            for (k, v) in &m.writes {
                kv.push(KvWrite {
                    map: m.name.clone(),
                    key: k.clone(),
                    value: Some(v.clone()),
                });
            }
            for k in &m.removes {
                kv.push(KvWrite {
                    map: m.name.clone(),
                    key: k.clone(),
                    value: None,
                });
            }
        }
        IndexedTx {
            seqno,
            view,
            collection,
            tags,
            kv,
        }
    }
}

/// The index's page cache (redb's default is 1 GiB).
pub const INDEX_CACHE: usize = 64 << 20;

/// The index.
#[derive(Debug)]
pub struct Index {
    db: Database,
}

impl Index {
    /// Opens or creates the index file.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        if let Some(dir) = path.parent() {
            crate::files::create_private_dir(dir).map_err(st)?;
        }
        // redb creates its file with the umask's permissions; it takes an empty one as new.
        crate::files::create_private_file(path).map_err(st)?;
        // redb caches up to 1 GiB by default, which a large ledger's index fills; appends
        // touch only the right edge of each table, and reads go by key.
        let db = Database::builder()
            .set_cache_size(INDEX_CACHE)
            .create(path)
            .map_err(st)?;
        let w = db.begin_write().map_err(st)?;
        create_tables(&w)?;
        w.commit().map_err(st)?;
        Ok(Index { db })
    }

    /// The last seqno indexed (0 when empty).
    pub fn last_seqno(&self) -> Result<u64, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(META).map_err(st)?;
        Ok(t.get(LAST).map_err(st)?.map_or(0, |v| v.value()))
    }

    /// Adds transactions, contiguous from `last_seqno() + 1`, in one durable write transaction.
    pub fn apply(&self, txs: &[IndexedTx]) -> Result<(), IndexError> {
        if txs.is_empty() {
            return Ok(());
        }
        self.apply_with(txs, &[], true)
    }

    /// Adds transactions (contiguous from `last_seqno() + 1`) and sets named blobs, in one write
    /// transaction. With `durable == false` the commit is not synced: a crash may roll the
    /// index back to its last durable commit (never to a torn state), which is fine for derived
    /// data whose owner re-applies from [`Index::last_seqno`].
    pub fn apply_with(
        &self,
        txs: &[IndexedTx],
        blobs: &[(&str, &[u8])],
        durable: bool,
    ) -> Result<(), IndexError> {
        let mut w = self.db.begin_write().map_err(st)?;
        if !durable {
            w.set_durability(Durability::None).map_err(st)?;
        }
        {
            let mut b = w.open_table(BLOBS).map_err(st)?;
            for (k, v) in blobs {
                b.insert(*k, *v).map_err(st)?;
            }
        }
        {
            let mut meta = w.open_table(META).map_err(st)?;
            let mut next = meta.get(LAST).map_err(st)?.map_or(0, |v| v.value()) + 1;
            let mut t = w.open_table(TXS).map_err(st)?;
            let mut bc = w.open_table(BY_COLLECTION).map_err(st)?;
            let mut latest = w.open_table(LATEST).map_err(st)?;
            let mut by_tag = w.open_table(BY_TAG).map_err(st)?;
            let mut tags = w.open_table(TAGS).map_err(st)?;
            let mut app_kv = w.open_table(APP_KV).map_err(st)?;
            // A batch usually holds many entries of few collections: each collection's latest
            // is written once, not once per entry.
            let mut last_of = std::collections::BTreeMap::<&str, u64>::new();
            for tx in txs {
                if tx.seqno != next {
                    return Err(IndexError::Order {
                        expected: next,
                        got: tx.seqno,
                    });
                }
                insert_rows(tx, &mut t, &mut bc, &mut by_tag, &mut tags)?;
                if let Some(c) = &tx.collection {
                    last_of.insert(c.as_str(), tx.seqno);
                }
                for kw in &tx.kv {
                    let key = (kw.map.as_str(), kw.key.as_slice());
                    match &kw.value {
                        Some(v) => {
                            app_kv.insert(key, v.as_slice()).map_err(st)?;
                        }
                        None => {
                            app_kv.remove(key).map_err(st)?;
                        }
                    }
                }
                next += 1;
            }
            for (c, seqno) in last_of {
                latest.insert(c, seqno).map_err(st)?;
            }
            meta.insert(LAST, next - 1).map_err(st)?;
        }
        w.commit().map_err(st)?;
        Ok(())
    }

    /// A blob set by [`Index::apply_with`].
    pub fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(BLOBS).map_err(st)?;
        Ok(t.get(key).map_err(st)?.map(|v| v.value().to_vec()))
    }

    /// View and collection of the transaction at `seqno` (its tags are kept for queries, not
    /// per transaction: `tags` is empty; read the entry for them).
    pub fn get(&self, seqno: u64) -> Result<Option<IndexedTx>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        outside_gap(&r, seqno, seqno)?;
        let t = r.open_table(TXS).map_err(st)?;
        Ok(t.get(seqno).map_err(st)?.map(|v| {
            let (view, c) = v.value();
            IndexedTx {
                seqno,
                view,
                collection: (!c.is_empty()).then(|| c.to_owned()),
                // Tags are for queries: a single transaction is read from the ledger.
                tags: Vec::new(),
                kv: Vec::new(),
            }
        }))
    }

    /// The current value of `key` in the application map `map`.
    pub fn kv_get(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(APP_KV).map_err(st)?;
        Ok(t.get((map, key)).map_err(st)?.map(|v| v.value().to_vec()))
    }

    /// Every (key, value) of the application map `map`, by key.
    pub fn kv_entries(&self, map: &str) -> Result<KvEntries, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(APP_KV).map_err(st)?;
        let mut out = Vec::new();
        for item in t.range((map, [].as_slice())..).map_err(st)? {
            let (k, v) = item.map_err(st)?;
            let (m, key) = k.value();
            if m != map {
                break;
            }
            out.push((key.to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Seqno of the latest entry in `collection`.
    pub fn latest(&self, collection: &str) -> Result<Option<u64>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(LATEST).map_err(st)?;
        Ok(t.get(collection).map_err(st)?.map(|v| v.value()))
    }

    /// Seqnos of `collection`'s entries in `from..=to`, at most `limit`, ascending.
    pub fn range(
        &self,
        collection: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(BY_COLLECTION).map_err(st)?;
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        outside_gap(&r, from, to)?;
        for item in t.range((collection, from)..=(collection, to)).map_err(st)? {
            let (k, _) = item.map_err(st)?;
            out.push(k.value().1);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Seqnos of `collection`'s entries tagged `tag` in `from..=to`, at most `limit`, ascending:
    /// read from the tag's own table, whatever else the collection holds.
    pub fn range_tagged(
        &self,
        collection: &str,
        tag: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(BY_TAG).map_err(st)?;
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        outside_gap(&r, from, to)?;
        for item in t
            .range((collection, tag, from)..=(collection, tag, to))
            .map_err(st)?
        {
            let (k, _) = item.map_err(st)?;
            out.push(k.value().2);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The distinct tags of `collection`'s entries, sorted.
    pub fn tags(&self, collection: &str) -> Result<Vec<String>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        outside_gap(&r, 1, u64::MAX)?;
        let t = r.open_table(TAGS).map_err(st)?;
        let mut out = Vec::new();
        for item in t.range((collection, "")..).map_err(st)? {
            let (k, _) = item.map_err(st)?;
            let (c, tag) = k.value();
            if c != collection {
                break;
            }
            out.push(tag.to_owned());
        }
        Ok(out)
    }

    /// Every collection with at least one entry, sorted.
    pub fn collections(&self) -> Result<Vec<String>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        let t = r.open_table(LATEST).map_err(st)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(st)? {
            let (k, _) = item.map_err(st)?;
            out.push(k.value().to_owned());
        }
        Ok(out)
    }

    /// Seeds an empty index at transaction `at` (in view `view`, not an entry: a snapshot is
    /// taken at a signature), from a snapshot of the state there: each collection's latest
    /// entry, the application maps, the named blobs. The rows of transactions `1..at` are
    /// missing (queries over them answer [`IndexError::Loading`]) until [`Index::backfill`]
    /// adds them; transactions after `at` are applied as usual.
    pub fn seed(
        &self,
        at: u64,
        view: u64,
        latest: &[(String, u64)],
        kv: &[KvWrite],
        blobs: &[(&str, &[u8])],
    ) -> Result<(), IndexError> {
        let last = self.last_seqno()?;
        if last != 0 || at == 0 {
            return Err(IndexError::Order {
                expected: last + 1,
                got: at,
            });
        }
        let w = self.db.begin_write().map_err(st)?;
        {
            let mut b = w.open_table(BLOBS).map_err(st)?;
            for (k, v) in blobs {
                b.insert(*k, *v).map_err(st)?;
            }
            let mut t = w.open_table(TXS).map_err(st)?;
            t.insert(at, (view, "")).map_err(st)?;
            let mut l = w.open_table(LATEST).map_err(st)?;
            for (c, seqno) in latest {
                l.insert(c.as_str(), *seqno).map_err(st)?;
            }
            let mut app_kv = w.open_table(APP_KV).map_err(st)?;
            for kw in kv {
                if let Some(v) = &kw.value {
                    app_kv
                        .insert((kw.map.as_str(), kw.key.as_slice()), v.as_slice())
                        .map_err(st)?;
                }
            }
            let mut meta = w.open_table(META).map_err(st)?;
            meta.insert(LAST, at).map_err(st)?;
            if at > 1 {
                meta.insert(GAP_FROM, 1).map_err(st)?;
                meta.insert(GAP_TO, at - 1).map_err(st)?;
            }
        }
        w.commit().map_err(st)?;
        Ok(())
    }

    /// The transactions whose rows a seeded index still lacks (`None`: none).
    pub fn gap(&self) -> Result<Option<(u64, u64)>, IndexError> {
        let r = self.db.begin_read().map_err(st)?;
        read_gap(&r)
    }

    /// Adds the rows of transactions in the gap, contiguous from its start (durably: the gap
    /// shrinks only with them).
    pub fn backfill(&self, txs: &[IndexedTx]) -> Result<(), IndexError> {
        let Some(first) = txs.first() else {
            return Ok(());
        };
        let w = self.db.begin_write().map_err(st)?;
        {
            let mut meta = w.open_table(META).map_err(st)?;
            let from = meta.get(GAP_FROM).map_err(st)?.map(|v| v.value());
            let to = meta.get(GAP_TO).map_err(st)?.map(|v| v.value());
            let (Some(from), Some(to)) = (from, to) else {
                return Err(IndexError::Order {
                    expected: 0,
                    got: first.seqno,
                });
            };
            let mut t = w.open_table(TXS).map_err(st)?;
            let mut bc = w.open_table(BY_COLLECTION).map_err(st)?;
            let mut by_tag = w.open_table(BY_TAG).map_err(st)?;
            let mut tags = w.open_table(TAGS).map_err(st)?;
            let mut next = from;
            for tx in txs {
                if tx.seqno != next || tx.seqno > to {
                    return Err(IndexError::Order {
                        expected: next,
                        got: tx.seqno,
                    });
                }
                insert_rows(tx, &mut t, &mut bc, &mut by_tag, &mut tags)?;
                next += 1;
            }
            if next > to {
                meta.remove(GAP_FROM).map_err(st)?;
                meta.remove(GAP_TO).map_err(st)?;
            } else {
                meta.insert(GAP_FROM, next).map_err(st)?;
            }
        }
        w.commit().map_err(st)?;
        Ok(())
    }

    /// Empties the index (its owner re-applies from seqno 1).
    pub fn rebuild_empty(&self) -> Result<(), IndexError> {
        let w = self.db.begin_write().map_err(st)?;
        for name in TABLE_NAMES {
            let _ = w.delete_table(redb::TableDefinition::<(), ()>::new(name));
        }
        create_tables(&w)?;
        w.commit().map_err(st)?;
        Ok(())
    }

    /// Empties the index and re-indexes `files` up to `upto` (inclusive), `batch` entries per
    /// write transaction. Returns the number of transactions indexed.
    pub fn rebuild(
        &self,
        files: &LedgerFiles,
        secret: &LedgerSecret,
        upto: u64,
    ) -> Result<u64, IndexError> {
        self.rebuild_empty()?;
        let upto = upto.min(files.last_seqno());
        let mut batch = Vec::with_capacity(4096);
        for seqno in 1..=upto {
            let bytes = files.read(seqno)?;
            let (raw, _) = RawEntry::parse(&bytes).map_err(|e| IndexError::Entry {
                seqno,
                message: e.to_string(),
            })?;
            batch.push(IndexedTx::from_entry(&raw, secret)?);
            if batch.len() == 4096 {
                self.apply(&batch)?;
                batch.clear();
            }
        }
        self.apply(&batch)?;
        Ok(upto)
    }
}

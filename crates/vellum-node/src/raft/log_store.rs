//! The Raft log is the ledger: openraft's log storage over the [`Engine`].
//!
//! - **Append.** Each entry becomes a ledger transaction at `txid_of(log_id)`. Blank and
//!   membership entries are recorded in [`RAFT_TABLE`]; the first membership entry (index 0)
//!   of a new service also carries the genesis write set. A [`Tx::Sign`] placeholder becomes a
//!   signature over the tree as it stands (this is where the seqno and the tree are known).
//!   An entry received from a primary ([`Payload::Ledger`]) is appended as is; a signature is
//!   first checked against this node's own tree ([`Engine::check_signature`]) and refused if
//!   it differs, which stops this node's Raft rather than accept a ledger it cannot verify.
//! - **Durability.** Entries are written under the engine lock and made durable by the
//!   [flusher](super::flusher) (group commit); openraft is told an append is flushed only after
//!   its `fdatasync`. The primary's plain writes wait for the next signature's sync.
//! - **Read back.** Replication and the state machine read entries through the log reader,
//!   which returns what the ledger holds ([`Payload::Ledger`]): never the primary's
//!   placeholder. Entries not yet applied are served from a small cache of exactly what was
//!   written; older ones are decoded from the files.
//! - **Truncate** drops a conflicting uncommitted suffix from files, tree and cache. **Purge**
//!   never deletes: the ledger keeps its whole history.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use vellum_core::entry::EntryBuilder;
use vellum_ledger::engine::Engine;

use super::flusher::Flusher;
use super::types::{
    Entry, LogId, Payload, RAFT_TABLE, Stored, Tx, TxKind, TypeConfig, Vote, blank_write_set,
    membership_write_set, txid_of,
};
use crate::lock;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// How the log store and the node wake the signer thread. The signer waits on a condition
/// variable rather than a tokio timer: tokio's timer has a resolution of one millisecond, and a
/// signature that comes up to a millisecond late is up to a millisecond added to every
/// commit (a single writer waited 1.7 ms for a commit that took 0.6 ms).
#[derive(Default)]
pub(crate) struct SignerBell {
    state: Mutex<Bell>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct Bell {
    /// Rung since the signer last looked.
    rung: bool,
    /// `signature_interval` transactions are unsigned: sign without waiting for the delay.
    now: bool,
    stop: bool,
}

/// What woke the signer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The deadline passed, or an append rang.
    Look,
    /// Enough transactions are unsigned to sign at once.
    SignNow,
    Stop,
}

impl SignerBell {
    /// Wakes the signer; `now`: without waiting for the signature delay.
    pub(crate) fn ring(&self, now: bool) {
        let mut b = lock(&self.state);
        b.rung = true;
        b.now |= now;
        drop(b);
        self.wake.notify_one();
    }

    /// Stops the signer.
    pub(crate) fn stop(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_one();
    }

    /// Waits until `deadline` or a ring, whichever comes first (a ring before this call
    /// counts).
    pub(crate) fn wait_until(&self, deadline: std::time::Instant) -> Woken {
        let mut b = lock(&self.state);
        loop {
            if b.stop {
                return Woken::Stop;
            }
            if std::mem::take(&mut b.now) {
                b.rung = false;
                return Woken::SignNow;
            }
            let now = std::time::Instant::now();
            if std::mem::take(&mut b.rung) || now >= deadline {
                return Woken::Look;
            }
            b = self
                .wake
                .wait_timeout(b, deadline - now)
                .map(|(b, _)| b)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// State shared by the log store, the state machine, the signer and the node's read API.
pub(crate) struct Shared {
    pub(crate) engine: Arc<Mutex<Engine>>,
    /// Entries appended and not yet applied, by log index (exactly what the ledger holds).
    cache: Mutex<BTreeMap<u64, Entry>>,
    vote: Mutex<Option<Vote>>,
    vote_path: PathBuf,
    pub(crate) flusher: Flusher,
    /// The genesis write set, written with the initial membership of a new service.
    genesis: Mutex<Option<EntryBuilder>>,
    /// A signature has been proposed and not yet appended.
    pub(crate) sign_pending: AtomicBool,
    /// Wakes the signer: the first transaction after a signature was appended, and
    /// `signature_interval` transactions unsigned.
    pub(crate) bell: SignerBell,
    /// Application writes received and not yet given a transaction id.
    pub(crate) arriving: AtomicU64,
    /// The signer waits for `arriving` to reach zero (the write that takes it there rings).
    pub(crate) quiet_wanted: AtomicBool,
    pub(crate) signature_interval: u64,
    /// Seqno of the last signature appended (mirror of the engine's, readable without its lock).
    pub(crate) last_signature: AtomicU64,
    /// Last seqno appended.
    pub(crate) last_seqno: AtomicU64,
    /// Users and their roles, as of the last applied transaction.
    pub(crate) users: std::sync::RwLock<crate::users::Users>,
    /// Nodes and join tokens, as of the last applied transaction.
    pub(crate) cluster: std::sync::RwLock<crate::cluster::ClusterState>,
    /// Every collection applied, and on the primary those of writes admitted since (see
    /// `LedgerNode::admit_collection`).
    pub(crate) collections: Mutex<std::collections::BTreeSet<String>>,
}

impl Shared {
    pub(crate) fn new(
        engine: Engine,
        vote_path: PathBuf,
        genesis: Option<EntryBuilder>,
        signature_interval: u64,
    ) -> io::Result<Shared> {
        let vote = match std::fs::read(&vote_path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| other(format!("{}: {e}", vote_path.display())))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let last_signature = engine.last_signature().unwrap_or(0);
        let last_seqno = engine.last_seqno();
        let engine = Arc::new(Mutex::new(engine));
        Ok(Shared {
            flusher: Flusher::start(engine.clone())?,
            engine,
            cache: Mutex::new(BTreeMap::new()),
            vote: Mutex::new(vote),
            vote_path,
            genesis: Mutex::new(genesis),
            sign_pending: AtomicBool::new(false),
            bell: SignerBell::default(),
            arriving: AtomicU64::new(0),
            quiet_wanted: AtomicBool::new(false),
            signature_interval: signature_interval.max(1),
            last_signature: AtomicU64::new(last_signature),
            last_seqno: AtomicU64::new(last_seqno),
            users: Default::default(),
            cluster: Default::default(),
            collections: Default::default(),
        })
    }

    /// Drops cached entries up to log index `index` (they are applied).
    pub(crate) fn applied(&self, index: u64) {
        let mut c = lock(&self.cache);
        *c = c.split_off(&(index + 1));
    }

    /// The stored form of the entry at log index `index`.
    pub(crate) fn stored(&self, index: u64) -> io::Result<Entry> {
        if let Some(e) = lock(&self.cache).get(&index) {
            return Ok(e.clone());
        }
        let (txid, ws) = lock(&self.engine).write_set(index + 1).map_err(other)?;
        let stored = Stored::from_write_set(ws).map_err(other)?;
        let log_id = super::types::log_id_of(txid)
            .ok_or_else(|| other(format!("transaction {txid} has no log id")))?;
        Ok(Entry {
            log_id,
            payload: Payload::Ledger(Arc::new(stored)),
        })
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        let last = self.last_seqno.load(Ordering::Acquire);
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        // Log indexes present: 0..last.
        let end = match range.end_bound() {
            Bound::Included(e) => (e + 1).min(last),
            Bound::Excluded(e) => (*e).min(last),
            Bound::Unbounded => last,
        };
        (start..end).map(|i| self.stored(i)).collect()
    }
}

/// openraft's log storage and log reader over the ledger.
#[derive(Clone)]
pub struct LogStore {
    pub(crate) shared: Arc<Shared>,
}

impl LogStore {
    fn append_one(&self, engine: &mut Engine, entry: Entry) -> io::Result<Entry> {
        let txid = txid_of(&entry.log_id);
        let index = entry.log_id.index;
        let (ws, kind, membership, ticket) = match entry.payload {
            Payload::Blank => (blank_write_set(), TxKind::Blank, None, None),
            Payload::Membership(m) => {
                let genesis = if index == 0 {
                    lock(&self.shared.genesis).take()
                } else {
                    None
                };
                let ws = membership_write_set(genesis.as_ref(), &m);
                (ws, TxKind::Membership, Some(m), None)
            }
            Payload::Normal(Tx::Write { ws, ticket }) => {
                let ws = Arc::try_unwrap(ws).unwrap_or_else(|a| (*a).clone());
                let stored = Stored::from_write_set(ws).map_err(other)?;
                // Raft's records and signatures are written by this store only.
                if stored.kind != TxKind::Write {
                    return Err(other(format!(
                        "a write may not hold {RAFT_TABLE} or signature tables"
                    )));
                }
                (stored.ws, stored.kind, None, ticket)
            }
            Payload::Normal(Tx::Sign) => {
                let iat = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let ws = engine.signature_write_set(txid, iat).map_err(other)?;
                (ws, TxKind::Signature, None, None)
            }
            Payload::Ledger(s) => {
                if s.kind == TxKind::Signature {
                    engine.check_signature(txid, &s.ws).map_err(|e| {
                        tracing::error!(%txid, error = %e, "refusing a signature transaction from the primary");
                        other(e)
                    })?;
                }
                let s = Arc::try_unwrap(s).unwrap_or_else(|a| (*a).clone());
                (s.ws, s.kind, s.membership, None)
            }
        };
        engine.append(txid, &ws).map_err(other)?;
        let seqno = txid.seqno;
        self.shared.last_seqno.store(seqno, Ordering::Release);
        if kind == TxKind::Signature {
            self.shared.last_signature.store(seqno, Ordering::Release);
            self.shared.sign_pending.store(false, Ordering::Release);
        } else {
            let unsigned = seqno - self.shared.last_signature.load(Ordering::Acquire);
            let now = unsigned >= self.shared.signature_interval;
            if unsigned == 1 || now {
                self.shared.bell.ring(now);
            }
        }
        if let Some(t) = ticket {
            t.assigned(txid);
        }
        Ok(Entry {
            log_id: entry.log_id,
            payload: Payload::Ledger(Arc::new(Stored {
                ws,
                kind,
                membership,
            })),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.shared.read_range(range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.shared.vote))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last = lock(&self.shared.engine).last_txid();
        let last_log_id = last.and_then(super::types::log_id_of);
        Ok(LogState {
            last_purged_log_id: None,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = serde_json::to_vec(vote).map_err(other)?;
        crate::files::write_durably(&self.shared.vote_path, &bytes)?;
        *lock(&self.shared.vote) = Some(*vote);
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut appended = Vec::new();
        // The primary's own plain writes may wait for the next sync (see the flusher): a
        // signature, a Raft record or anything received from a primary is synced at once.
        let mut defer = true;
        let result = {
            let mut engine = lock(&self.shared.engine);
            entries.into_iter().try_for_each(|entry| {
                let index = entry.log_id.index;
                defer &= matches!(entry.payload, Payload::Normal(Tx::Write { .. }));
                appended.push((index, self.append_one(&mut engine, entry)?));
                Ok::<_, io::Error>(())
            })
        };
        // What was appended before an error is in the files, so it is cached too.
        lock(&self.shared.cache).extend(appended);
        result?;
        self.shared.flusher.flush(callback, defer);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep = last_log_id.map_or(0, |l| l.index + 1);
        let mut engine = lock(&self.shared.engine);
        tracing::warn!(
            last_kept_seqno = keep,
            "dropping a conflicting uncommitted suffix"
        );
        engine.truncate(keep).map_err(other)?;
        self.shared.last_seqno.store(keep, Ordering::Release);
        self.shared
            .last_signature
            .store(engine.last_signature().unwrap_or(0), Ordering::Release);
        // Cache keys are log indexes (seqno - 1): keep indexes below `keep`.
        lock(&self.shared.cache).split_off(&keep);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The ledger is the record: nothing is ever deleted from it.
        tracing::debug!(%log_id, "purge ignored: the ledger keeps its whole history");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::raft::types::log_id_of;
    use std::time::SystemTime;
    use vellum_core::TxId;
    use vellum_core::entry::{LedgerSecret, MapWrites};
    use vellum_core::status::{StatusView, TxStatus, tx_status};
    use vellum_ledger::engine::NodeKeys;
    use vellum_ledger::identity::Identity;

    fn keys() -> NodeKeys {
        let now = SystemTime::now();
        let service = Identity::service("s", now, 1).unwrap();
        let node = service
            .issue_node("n", &["localhost"], &[], now, 1)
            .unwrap();
        NodeKeys::new(&service, &node, LedgerSecret::from_bytes([1; 32]))
    }

    fn store(dir: &std::path::Path, keys: NodeKeys) -> LogStore {
        let (engine, _) = Engine::open_dir(&dir.join("ledger"), 1 << 20, keys).unwrap();
        LogStore {
            shared: Arc::new(Shared::new(engine, dir.join("vote.json"), None, 1000).unwrap()),
        }
    }

    fn write(txid: TxId, v: &str) -> Entry {
        let ws = EntryBuilder::default().map(MapWrites::with_writes(
            "vellum.entries",
            vec![(b"c".to_vec(), v.as_bytes().to_vec())],
        ));
        Entry {
            log_id: log_id_of(txid).unwrap(),
            payload: Payload::Normal(Tx::Write {
                ws: Arc::new(ws),
                ticket: None,
            }),
        }
    }

    fn sign(txid: TxId) -> Entry {
        Entry {
            log_id: log_id_of(txid).unwrap(),
            payload: Payload::Normal(Tx::Sign),
        }
    }

    async fn append(s: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
        s.append(entries, IOFlushed::noop()).await
    }

    /// What a primary's log reader returns for `range` (what replication sends).
    async fn replicate(s: &mut LogStore, range: std::ops::Range<u64>) -> Vec<Entry> {
        s.try_get_log_entries(range).await.unwrap()
    }

    #[tokio::test]
    async fn appends_ring_the_signer_bell() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = Engine::open_dir(&dir.path().join("ledger"), 1 << 20, keys()).unwrap();
        let shared = Shared::new(engine, dir.path().join("vote.json"), None, 3).unwrap();
        let mut s = LogStore {
            shared: Arc::new(shared),
        };
        let shared = s.shared.clone();
        let bell = &shared.bell;
        // What woke a wait of up to a minute (a ring before the wait counts).
        let woken = || bell.wait_until(Instant::now() + Duration::from_secs(60));
        // Nothing rang: a short wait runs to its deadline.
        let times_out = || {
            let start = Instant::now();
            let w = bell.wait_until(start + Duration::from_millis(5));
            w == Woken::Look && start.elapsed() >= Duration::from_millis(5)
        };
        assert!(times_out());
        // The first unsigned write rings once, the next do not, and the third (the signature
        // interval) asks for a signature at once.
        append(&mut s, vec![write(TxId::new(2, 1), "a")])
            .await
            .unwrap();
        assert_eq!(woken(), Woken::Look);
        append(&mut s, vec![write(TxId::new(2, 2), "b")])
            .await
            .unwrap();
        assert!(times_out());
        append(&mut s, vec![write(TxId::new(2, 3), "c")])
            .await
            .unwrap();
        assert_eq!(woken(), Woken::SignNow);
        // A signature resets the count: the next write rings as the first again.
        append(&mut s, vec![sign(TxId::new(2, 4))]).await.unwrap();
        append(&mut s, vec![write(TxId::new(2, 5), "d")])
            .await
            .unwrap();
        assert_eq!(woken(), Woken::Look);
        bell.stop();
        assert_eq!(woken(), Woken::Stop);
    }

    #[tokio::test]
    async fn replica_accepts_the_primarys_ledger_byte_for_byte() {
        let k = keys();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut primary = store(a.path(), k.clone());
        let mut replica = store(b.path(), k);
        let entries = vec![
            write(TxId::new(2, 1), "one"),
            write(TxId::new(2, 2), "two"),
            sign(TxId::new(2, 3)),
        ];
        append(&mut primary, entries).await.unwrap();
        let sent = replicate(&mut primary, 0..3).await;
        assert!(sent.iter().all(|e| matches!(e.payload, Payload::Ledger(_))));
        append(&mut replica, sent).await.unwrap();
        for seqno in 1..=3 {
            assert_eq!(
                lock(&primary.shared.engine).read(seqno).unwrap(),
                lock(&replica.shared.engine).read(seqno).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn replica_refuses_a_signature_over_another_tree() {
        let k = keys();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut primary = store(a.path(), k.clone());
        let mut replica = store(b.path(), k);
        append(
            &mut primary,
            vec![write(TxId::new(2, 1), "one"), sign(TxId::new(2, 2))],
        )
        .await
        .unwrap();
        // The replica holds a different transaction 2.1, then receives the primary's signature.
        append(&mut replica, vec![write(TxId::new(2, 1), "forged")])
            .await
            .unwrap();
        let sig = replicate(&mut primary, 1..2).await;
        let err = append(&mut replica, sig).await.unwrap_err();
        assert!(err.to_string().contains("rejected"), "{err}");
        assert_eq!(lock(&replica.shared.engine).last_seqno(), 1);
    }

    struct View<'a>(&'a Engine, u64);
    impl StatusView for View<'_> {
        fn committed_seqno(&self) -> u64 {
            self.1
        }
        fn view_at(&self, seqno: u64) -> Option<u64> {
            self.0.view_at(seqno)
        }
    }

    #[tokio::test]
    async fn a_rolled_back_suffix_becomes_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), keys());
        append(
            &mut s,
            vec![
                write(TxId::new(2, 1), "a"),
                sign(TxId::new(2, 2)),
                write(TxId::new(2, 3), "lost"),
                write(TxId::new(2, 4), "lost too"),
            ],
        )
        .await
        .unwrap();
        {
            let e = lock(&s.shared.engine);
            assert_eq!(tx_status(&View(&e, 2), TxId::new(2, 3)), TxStatus::Pending);
        }
        // A new primary in view 3 did not have 2.3 and 2.4: Raft truncates them.
        s.truncate_after(log_id_of(TxId::new(2, 2))).await.unwrap();
        append(
            &mut s,
            vec![write(TxId::new(3, 3), "new"), sign(TxId::new(3, 4))],
        )
        .await
        .unwrap();
        let e = lock(&s.shared.engine);
        // Before the new suffix commits, the old ids are unknown to this node...
        assert_eq!(tx_status(&View(&e, 2), TxId::new(2, 3)), TxStatus::Unknown);
        // ...once it commits, they are Invalid and the new ones Committed.
        assert_eq!(tx_status(&View(&e, 4), TxId::new(2, 3)), TxStatus::Invalid);
        assert_eq!(tx_status(&View(&e, 4), TxId::new(2, 4)), TxStatus::Invalid);
        assert_eq!(
            tx_status(&View(&e, 4), TxId::new(3, 3)),
            TxStatus::Committed
        );
        assert_eq!(
            tx_status(&View(&e, 4), TxId::new(2, 1)),
            TxStatus::Committed
        );
    }
}

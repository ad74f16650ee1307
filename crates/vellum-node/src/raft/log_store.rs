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

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use vellum_core::entry::EntryBuilder;
use vellum_ledger::engine::Engine;

use super::ledger::Ledger;
use super::types::{
    Entry, LogId, Payload, RAFT_TABLE, Stored, Tx, TxKind, TypeConfig, Vote, blank_write_set,
    membership_write_set, txid_of,
};
use crate::lock;
use crate::rekey::Rekeying;
use crate::signing::SignaturePolicy;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// What the log store alone keeps: the vote, and the genesis write set of a new service.
struct Own {
    vote: Mutex<Option<Vote>>,
    vote_path: PathBuf,
    /// Written with the initial membership of a new service.
    genesis: Mutex<Option<EntryBuilder>>,
}

/// openraft's log storage and log reader over the ledger.
#[derive(Clone)]
pub struct LogStore {
    ledger: Arc<Ledger>,
    signing: Arc<SignaturePolicy>,
    own: Arc<Own>,
    rekeying: Arc<Rekeying>,
}

impl LogStore {
    /// A log store over `ledger`, reporting appends to `signing`, with its vote in
    /// `vote_path`, for a new service the `genesis` write set, and following rekeys with
    /// `rekeying`.
    pub(crate) fn new(
        ledger: Arc<Ledger>,
        signing: Arc<SignaturePolicy>,
        vote_path: PathBuf,
        genesis: Option<EntryBuilder>,
        rekeying: Rekeying,
    ) -> io::Result<LogStore> {
        let vote = match std::fs::read(&vote_path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| other(format!("{}: {e}", vote_path.display())))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogStore {
            ledger,
            signing,
            own: Arc::new(Own {
                vote: Mutex::new(vote),
                vote_path,
                genesis: Mutex::new(genesis),
            }),
            rekeying: Arc::new(rekeying),
        })
    }
}

impl LogStore {
    fn append_one(&self, engine: &mut Engine, entry: Entry) -> io::Result<Entry> {
        let txid = txid_of(&entry.log_id);
        let index = entry.log_id.index;
        let (ws, kind, membership, ticket) = match entry.payload {
            Payload::Blank => (blank_write_set(), TxKind::Blank, None, None),
            Payload::Membership(m) => {
                let genesis = if index == 0 {
                    lock(&self.own.genesis).take()
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
        // A rekey: what follows is sealed under its secret (made durable first).
        if kind == TxKind::Write
            && let Some(secrets) = self
                .rekeying
                .appended(txid.seqno, &ws, &engine.keys().secrets)
                .map_err(|e| {
                    tracing::error!(%txid, error = %e, "cannot follow a rekey");
                    other(e)
                })?
        {
            engine.replace_secrets(secrets).map_err(other)?;
        }
        // A rotation: this node serves under the new identity from here on.
        if kind == TxKind::Write {
            self.rekeying
                .rotated(txid.seqno, &ws, engine)
                .map_err(|e| {
                    tracing::error!(%txid, error = %e, "cannot take a service identity rotation");
                    other(e)
                })?;
        }
        self.ledger.appended(txid.seqno, kind == TxKind::Signature);
        self.signing.appended(self.ledger.unsigned());
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
        // A follower far behind may need chunks this node dropped past its retention: fetch
        // them back from the archive and read again.
        let mut fetched = 0;
        loop {
            match self.ledger.read_range(range.clone()) {
                Ok(entries) => return Ok(entries),
                Err(e) if fetched < 16 => match self.ledger.absent_in(range.clone()) {
                    Some(chunk) => {
                        self.ledger.fetch_chunk(&chunk).await?;
                        fetched += 1;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// The last log id of each leader (view) in `range`, from the engine's view runs: what
    /// openraft would otherwise find by reading entries across the whole log at start, which
    /// for a node holding only part of its ledger (retention, a start from a snapshot) means
    /// fetching chunks before it can serve.
    async fn get_key_log_ids(
        &mut self,
        range: std::ops::RangeInclusive<LogId>,
    ) -> Result<Vec<LogId>, io::Error> {
        let (first, last) = (range.start().index + 1, range.end().index + 1);
        let runs = self.ledger.engine().last_of_each_view(first, last);
        runs.into_iter()
            .map(|(seqno, view)| {
                super::types::log_id_of(vellum_core::TxId::new(view, seqno))
                    .ok_or_else(|| other(format!("transaction {view}.{seqno} has no log id")))
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.own.vote))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last = self.ledger.engine().last_txid();
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
        vellum_ledger::files::write_durably(&self.own.vote_path, &bytes)?;
        *lock(&self.own.vote) = Some(*vote);
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
            let mut engine = self.ledger.engine();
            entries.into_iter().try_for_each(|entry| {
                let index = entry.log_id.index;
                defer &= matches!(entry.payload, Payload::Normal(Tx::Write { .. }));
                appended.push((index, self.append_one(&mut engine, entry)?));
                Ok::<_, io::Error>(())
            })
        };
        // What was appended before an error is in the files, so it is cached too.
        self.ledger.cache(appended);
        result?;
        self.ledger.flush(callback, defer);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep = last_log_id.map_or(0, |l| l.index + 1);
        tracing::warn!(
            last_kept_seqno = keep,
            "dropping a conflicting uncommitted suffix"
        );
        self.ledger.truncate(keep)?;
        let mut engine = self.ledger.engine();
        // A truncated rotation is undone.
        self.rekeying.truncated(keep, &mut engine).map_err(other)?;
        // A truncated rekey's secret is forgotten by the engine: on disk too.
        let secrets = engine.keys().secrets.clone();
        self.rekeying.file.save(&secrets).map_err(other)
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

    fn store_with(dir: &std::path::Path, keys: NodeKeys, interval: u64) -> LogStore {
        let rekeying = Rekeying {
            node_id: "node".into(),
            node_key: keys.node_key.clone(),
            file: crate::datadir::SecretsFile::new(dir.to_path_buf(), None),
            identity: crate::rekey::tests_identity(&keys),
        };
        let (engine, _) = Engine::open_dir(&dir.join("ledger"), 1 << 20, keys).unwrap();
        LogStore::new(
            Arc::new(Ledger::new(engine, Arc::new(crate::metrics::NodeMetrics::new())).unwrap()),
            Arc::new(SignaturePolicy::new(interval, None)),
            dir.join("vote.json"),
            None,
            rekeying,
        )
        .unwrap()
    }

    fn store(dir: &std::path::Path, keys: NodeKeys) -> LogStore {
        store_with(dir, keys, 1000)
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

    /// The key log ids openraft loads at start come from the view runs, and are exactly the last
    /// entry of each view found by reading every entry.
    #[tokio::test]
    async fn key_log_ids_are_the_last_entry_of_each_view() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), keys());
        let mut seqno = 0;
        for (view, n) in [(2u64, 5u64), (3, 1), (5, 7), (8, 3)] {
            let entries = (0..n)
                .map(|_| {
                    seqno += 1;
                    write(TxId::new(view, seqno), "x")
                })
                .collect();
            append(&mut s, entries).await.unwrap();
        }
        let all = replicate(&mut s, 0..seqno).await;
        let brute = |from: u64, to: u64| -> Vec<LogId> {
            let mut out: Vec<LogId> = Vec::new();
            for e in &all[from as usize..=to as usize] {
                match out.last_mut() {
                    Some(l) if l.leader_id == e.log_id.leader_id => *l = e.log_id,
                    _ => out.push(e.log_id),
                }
            }
            out
        };
        for (from, to) in [(0, seqno - 1), (3, 9), (5, 5), (6, 12), (12, 15)] {
            let got = s
                .get_key_log_ids(all[from as usize].log_id..=all[to as usize].log_id)
                .await
                .unwrap();
            assert_eq!(got, brute(from, to), "{from}..={to}");
        }
    }

    #[tokio::test]
    async fn appends_ring_the_signer_bell() {
        use crate::signing::Woken;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_with(dir.path(), keys(), 3);
        let signing = s.signing.clone();
        // What woke a wait of up to a minute (a ring before the wait counts).
        let woken = || signing.wait_for(Duration::from_secs(60));
        // Nothing rang: a short wait runs to its deadline.
        let times_out = || {
            let start = std::time::Instant::now();
            let w = signing.wait_for(Duration::from_millis(5));
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
        signing.stop();
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
                primary.ledger.engine().read(seqno).unwrap(),
                replica.ledger.engine().read(seqno).unwrap()
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
        assert_eq!(replica.ledger.engine().last_seqno(), 1);
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
            let e = s.ledger.engine();
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
        let e = s.ledger.engine();
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

//! The state machine: applies Raft-committed transactions to the entry index and advances the
//! ledger's commit point.
//!
//! A transaction is **Committed** (CCF §8) once a signature transaction covering it is
//! Raft-committed; so the commit point is the last applied signature. Applying a signature
//! also renames the closed chunks below it `.committed`.
//!
//! The index is the state machine's persistent state: it records the last applied seqno and the
//! membership. Its commits are not synced (it is derived data); a durable commit is made at
//! most once a second and at shutdown, and after a crash openraft re-applies from the index's
//! last durable seqno. A change of the nodes (a join, a trust, a retirement) is made durable
//! at once: after a crash, a node whose index had rolled back to before a join would refuse the
//! newcomer's certificate on the node channel, and, were the newcomer primary, could not learn
//! what was committed until another node led (seen as a restarted primary that stayed a
//! candidate for 30 s).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::SnapshotOf;
use openraft::{OptionalSend, SnapshotMeta};
use tokio::sync::oneshot;
use vellum_ledger::index::IndexedTx;
use vellum_ledger::live_index::LiveIndex;

use super::ledger::Ledger;
use super::types::{
    Applied, LogId, Payload, StoredMembership, TxKind, TypeConfig, log_id_of, txid_of,
};
use crate::lock;
use crate::service_state::ServiceState;

const MEMBERSHIP_KEY: &str = "raft.membership";
/// Users and roles as `users::Access`.
const ACCESS_KEY: &str = "vellum.access";
/// User-defined functions (id → code).
const FUNCTIONS_KEY: &str = "vellum.functions";
/// The index blob holding CCF's governance tables.
const GOV_KEY: &str = "vellum.gov";
/// User-defined endpoints: the app's records (`endpoints::AppRecords`).
const APP_KEY: &str = "vellum.app";
/// Users as indexes written before users could hold several roles recorded them (id → role).
const USERS_KEY: &str = "vellum.users";
const CLUSTER_KEY: &str = "vellum.cluster";

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Commit state published to readers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitState {
    /// Seqno of the last committed signature: every transaction up to it is Committed.
    pub committed: u64,
    /// Last seqno applied (Raft-committed).
    pub applied: u64,
}

/// Tasks waiting for the commit point to reach a seqno, each woken only once it does. (A
/// watch wakes every receiver at every change: with 64 clients waiting for their writes,
/// about 40 woke at every commit only to wait again.)
#[derive(Debug)]
pub(crate) struct CommitWaiters {
    inner: std::sync::Mutex<Waiters>,
}

#[derive(Debug)]
struct Waiters {
    committed: u64,
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    /// How many senders `waiting` holds (some may belong to waiters that gave up).
    held: usize,
    /// `held` at which senders whose waiter gave up are dropped: twice what was left after the
    /// last sweep, so sweeps cost O(1) per registration and memory stays proportional to the
    /// waiters still waiting (a client that waits for far-future ids and times out, again and
    /// again, would otherwise grow it forever).
    sweep_at: usize,
    /// The state machine is gone: nothing will commit.
    closed: bool,
}

/// The smallest [`Waiters::sweep_at`].
const MIN_SWEEP: usize = 1024;

/// What [`CommitWaiters::wait`] found.
#[derive(Debug)]
pub(crate) enum CommitWait {
    /// The commit point is at or past the seqno already.
    Reached,
    /// Resolves once it is (an error: the state machine stopped first).
    Waiting(oneshot::Receiver<()>),
    /// The state machine has stopped.
    Closed,
}

impl CommitWaiters {
    pub(crate) fn new(committed: u64) -> CommitWaiters {
        CommitWaiters {
            inner: std::sync::Mutex::new(Waiters {
                committed,
                waiting: BTreeMap::new(),
                held: 0,
                sweep_at: MIN_SWEEP,
                closed: false,
            }),
        }
    }

    /// Registers interest in the commit point reaching `seqno`.
    pub(crate) fn wait(&self, seqno: u64) -> CommitWait {
        let mut w = lock(&self.inner);
        if w.committed >= seqno {
            return CommitWait::Reached;
        }
        if w.closed {
            return CommitWait::Closed;
        }
        if w.held >= w.sweep_at {
            w.waiting.retain(|_, txs| {
                txs.retain(|tx| !tx.is_closed());
                !txs.is_empty()
            });
            w.held = w.waiting.values().map(Vec::len).sum();
            w.sweep_at = (2 * w.held).max(MIN_SWEEP);
        }
        let (tx, rx) = oneshot::channel();
        w.waiting.entry(seqno).or_default().push(tx);
        w.held += 1;
        CommitWait::Waiting(rx)
    }

    /// How many waiters are registered (including some that gave up and were not swept yet).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        lock(&self.inner).held
    }

    /// The commit point moved to `committed`: wakes whoever waited for it (a waiter that gave
    /// up is skipped: its send fails).
    fn advance(&self, committed: u64) {
        let reached = {
            let mut w = lock(&self.inner);
            w.committed = w.committed.max(committed);
            let later = w.waiting.split_off(&(committed + 1));
            let reached = std::mem::replace(&mut w.waiting, later);
            w.held -= reached.values().map(Vec::len).sum::<usize>();
            reached
        };
        for tx in reached.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Wakes every waiter with an error, and refuses new ones.
    fn close(&self) {
        let waiting = {
            let mut w = lock(&self.inner);
            w.closed = true;
            w.held = 0;
            std::mem::take(&mut w.waiting)
        };
        drop(waiting);
    }
}

/// Seeds an empty index at the snapshot `snap` a node starts from
/// ([`crate::node::from_snapshot`]): the state the state machine would have recorded had it
/// applied every transaction up to the snapshot's seqno. `view_at` gives the view of a seqno
/// (the ledger's, opened from a checkpoint at or after the snapshot).
pub(crate) fn seed_index(
    index: &vellum_ledger::index::Index,
    snap: &vellum_core::snapshot::Snapshot,
    view_at: impl Fn(u64) -> Option<u64>,
) -> io::Result<()> {
    use vellum_core::entry::MapWrites;
    use vellum_ledger::index::{ENTRIES_TABLE, KvWrite, is_app_map};
    let at = snap.txid.seqno;
    let maps: Vec<MapWrites> = snap
        .state
        .maps
        .iter()
        .map(|(name, records)| {
            let writes = records
                .iter()
                .map(|(k, (_, v))| (k.clone(), v.clone()))
                .collect();
            MapWrites::with_writes(name.clone(), writes)
        })
        .collect();
    let state = ServiceState::default();
    for m in &maps {
        state.apply_access(m);
        state.apply_cluster(m);
        state.apply_functions(m);
        state.apply_gov(m);
        state.apply_app(m);
    }
    let (version, record) = snap
        .state
        .maps
        .get(super::types::RAFT_TABLE)
        .and_then(|r| r.get(super::types::MEMBERSHIP_RECORD_KEY))
        .ok_or_else(|| {
            other(format!(
                "the snapshot at {at} records no membership (it was taken by an older Vellum)"
            ))
        })?;
    let membership_view =
        view_at(*version).ok_or_else(|| other(format!("no view known for seqno {version}")))?;
    let membership = StoredMembership::new(
        log_id_of(vellum_core::TxId::new(membership_view, *version)),
        super::types::snapshot_membership(record).map_err(other)?,
    );
    let latest: Vec<(String, u64)> = snap
        .state
        .maps
        .get(ENTRIES_TABLE)
        .map(|r| {
            r.iter()
                .map(|(k, (v, _))| (String::from_utf8_lossy(k).into_owned(), *v))
                .collect()
        })
        .unwrap_or_default();
    let kv: Vec<KvWrite> = maps
        .iter()
        .filter(|m| is_app_map(&m.name))
        .flat_map(|m| {
            m.writes.iter().map(|(k, v)| KvWrite {
                map: m.name.clone(),
                key: k.clone(),
                value: Some(v.clone()),
            })
        })
        .collect();
    let blobs: Vec<(&str, Vec<u8>)> = vec![
        (
            MEMBERSHIP_KEY,
            serde_json::to_vec(&membership).map_err(other)?,
        ),
        (ACCESS_KEY, state.access_json()?),
        (FUNCTIONS_KEY, state.functions_json()?),
        (GOV_KEY, state.gov_json()?),
        (APP_KEY, state.app_json()?),
        (CLUSTER_KEY, state.cluster_json()?),
    ];
    let blobs: Vec<(&str, &[u8])> = blobs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let view = view_at(at).ok_or_else(|| other(format!("no view known for seqno {at}")))?;
    index.seed(at, view, &latest, &kv, &blobs).map_err(other)
}

/// openraft's state machine over the index; it owns the service state (users, cluster,
/// collections) that committed writes change.
pub struct StateMachine {
    ledger: Arc<Ledger>,
    state: Arc<ServiceState>,
    pub(crate) index: Arc<LiveIndex>,
    pub(crate) commit: tokio::sync::watch::Sender<CommitState>,
    waiters: Arc<CommitWaiters>,
    membership: StoredMembership,
    /// Told of snapshot evidence as it is applied.
    snapshots: Arc<crate::node::snapshots::Snapshots>,
}

impl StateMachine {
    /// The state machine over `index`, restoring the service state the index recorded.
    pub(crate) fn new(
        ledger: Arc<Ledger>,
        index: Arc<LiveIndex>,
        collections: Vec<String>,
        commit: tokio::sync::watch::Sender<CommitState>,
        waiters: Arc<CommitWaiters>,
        snapshots: Arc<crate::node::snapshots::Snapshots>,
    ) -> io::Result<StateMachine> {
        let membership = match index.blob(MEMBERSHIP_KEY).map_err(other)? {
            Some(b) => serde_json::from_slice(&b).map_err(other)?,
            None => StoredMembership::default(),
        };
        let state = ServiceState::restore(
            index.blob(ACCESS_KEY).map_err(other)?.as_deref(),
            index.blob(USERS_KEY).map_err(other)?.as_deref(),
            index.blob(FUNCTIONS_KEY).map_err(other)?.as_deref(),
            index.blob(GOV_KEY).map_err(other)?.as_deref(),
            index.blob(APP_KEY).map_err(other)?.as_deref(),
            index.blob(CLUSTER_KEY).map_err(other)?.as_deref(),
            collections,
        )?;
        // An index written before the governance tables were kept: they are read back from
        // the applied transactions once (their public write sets), and kept from then on.
        let last = index.last_seqno();
        if last > 0 && index.blob(GOV_KEY).map_err(other)?.is_none() {
            let engine = ledger.engine();
            for seqno in 1..=last {
                let (_, ws) = engine.write_set(seqno).map_err(other)?;
                for m in &ws.maps {
                    state.apply_gov(m);
                }
            }
            index
                .apply(Vec::new(), vec![(GOV_KEY.to_owned(), state.gov_json()?)])
                .map_err(other)?;
            tracing::info!(
                seqnos = last,
                "read the governance tables back from the ledger"
            );
        }
        Ok(StateMachine {
            ledger,
            state: Arc::new(state),
            index,
            commit,
            waiters,
            membership,
            snapshots,
        })
    }

    /// The service state, for the node to read.
    pub(crate) fn state(&self) -> Arc<ServiceState> {
        self.state.clone()
    }

    fn last_applied(&self) -> io::Result<Option<LogId>> {
        let last = self.index.last_seqno();
        if last == 0 {
            return Ok(None);
        }
        let view = self
            .ledger
            .engine()
            .view_at(last)
            .ok_or_else(|| other(format!("index is ahead of the ledger at seqno {last}")))?;
        Ok(log_id_of(vellum_core::TxId::new(view, last)))
    }
}

impl Drop for StateMachine {
    fn drop(&mut self) {
        self.waiters.close();
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = io::Cursor<Vec<u8>>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied()?, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut txs = Vec::new();
        let mut responders = Vec::new();
        let mut membership_changed = false;
        let mut users_changed = false;
        let mut cluster_changed = false;
        let mut functions_changed = false;
        let mut gov_changed = false;
        let mut app_changed = false;
        let mut last_sig = None;
        let mut last_index = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let txid = txid_of(&entry.log_id);
            let stored = match &entry.payload {
                Payload::Ledger(s) => s.clone(),
                // The log reader only returns stored transactions; read it back if not.
                _ => match self.ledger.stored(entry.log_id.index)?.payload {
                    Payload::Ledger(s) => s,
                    _ => return Err(other("log reader returned an unstored entry")),
                },
            };
            if let Some(m) = &stored.membership {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                membership_changed = true;
            }
            if stored.kind == TxKind::Signature {
                last_sig = Some(txid.seqno);
            }
            for m in &stored.ws.maps {
                if m.name == vellum_core::snapshot::EVIDENCE_TABLE {
                    self.snapshots.evidence_applied(txid.seqno, m);
                }
                users_changed |= self.state.apply_access(m);
                cluster_changed |= self.state.apply_cluster(m);
                functions_changed |= self.state.apply_functions(m);
                gov_changed |= self.state.apply_gov(m);
                app_changed |= self.state.apply_app(m);
            }
            txs.push(IndexedTx::from_maps(txid.seqno, txid.view, &stored.ws.maps));
            last_index = Some(entry.log_id.index);
            if let Some(r) = responder {
                responders.push((r, txid));
            }
        }
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        if membership_changed {
            let json = serde_json::to_vec(&self.membership).map_err(other)?;
            blobs.push((MEMBERSHIP_KEY.to_owned(), json));
        }
        if users_changed {
            blobs.push((ACCESS_KEY.to_owned(), self.state.access_json()?));
        }
        if functions_changed {
            blobs.push((FUNCTIONS_KEY.to_owned(), self.state.functions_json()?));
        }
        if gov_changed {
            blobs.push((GOV_KEY.to_owned(), self.state.gov_json()?));
        }
        if app_changed {
            blobs.push((APP_KEY.to_owned(), self.state.app_json()?));
        }
        if cluster_changed {
            blobs.push((CLUSTER_KEY.to_owned(), self.state.cluster_json()?));
        }
        self.state
            .add_collections(txs.iter().filter_map(|t| t.collection.as_ref()));
        // Readable at once; written to redb in the background (see `LiveIndex`).
        self.index.apply(txs, blobs).map_err(other)?;
        if cluster_changed {
            // Rare, and what the node channel's trust rests on after a crash: durable now.
            self.index.flush().map_err(other)?;
        }
        if let Some(sig) = last_sig {
            self.ledger.engine().commit(sig).map_err(other)?;
        }
        if let Some(i) = last_index {
            self.ledger.applied(i);
            self.commit.send_modify(|c| {
                c.applied = i + 1;
                if let Some(s) = last_sig {
                    c.committed = s;
                }
            });
        }
        if let Some(s) = last_sig {
            self.waiters.advance(s);
            self.ledger.metrics().committed(s);
        }
        for (r, txid) in responders {
            r.send(Applied { txid });
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied().ok().flatten(),
            membership: self.membership.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<
            openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>,
            super::types::NodeId,
            super::types::Node,
        >,
        _snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        // Vellum never purges its log, so a follower catches up from the ledger itself.
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "snapshot installation is not supported: followers catch up from the ledger",
        ))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, io::Cursor<Vec<u8>>>>, io::Error> {
        Ok(None)
    }
}

/// Builds a metadata-only snapshot (the ledger itself is never compacted).
pub struct SnapshotBuilder {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = io::Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, io::Cursor<Vec<u8>>>, io::Error> {
        Ok(openraft::Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            snapshot: io::Cursor::new(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn waiting(w: CommitWait) -> oneshot::Receiver<()> {
        match w {
            CommitWait::Waiting(rx) => rx,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    #[test]
    fn commit_waiters_wake_only_at_their_seqno() {
        let w = CommitWaiters::new(3);
        assert!(matches!(w.wait(3), CommitWait::Reached));
        let (mut at5, mut at6, mut also5) =
            (waiting(w.wait(5)), waiting(w.wait(6)), waiting(w.wait(5)));
        w.advance(4);
        assert!(at5.try_recv().is_err() && at6.try_recv().is_err());
        w.advance(5);
        assert!(at5.try_recv().is_ok() && also5.try_recv().is_ok());
        assert_eq!(at6.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        // A waiter that gave up does not stop the others.
        let gave_up = waiting(w.wait(7));
        drop(gave_up);
        let mut at7 = waiting(w.wait(7));
        w.advance(9);
        assert!(at6.try_recv().is_ok() && at7.try_recv().is_ok());
        assert!(matches!(w.wait(9), CommitWait::Reached));
        // The commit point never moves back.
        w.advance(2);
        assert!(matches!(w.wait(9), CommitWait::Reached));
    }

    #[test]
    fn closed_commit_waiters_answer_at_once() {
        let w = CommitWaiters::new(0);
        let mut pending = waiting(w.wait(1));
        w.close();
        assert_eq!(
            pending.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert!(matches!(w.wait(1), CommitWait::Closed));
        assert!(matches!(w.wait(0), CommitWait::Reached));
    }

    /// A million waits for ids that never commit, each given up (a client polling a backup
    /// for future ids and timing out): what is held stays bounded by the live waiters, and
    /// live waiters are never swept.
    #[test]
    fn waiters_that_gave_up_do_not_accumulate() {
        let w = CommitWaiters::new(10);
        let mut live: Vec<_> = (0..100).map(|i| waiting(w.wait(20 + i))).collect();
        let mut most = 0;
        for i in 0..1_000_000u64 {
            drop(waiting(w.wait(1_000 + i % 50_000)));
            most = most.max(w.held());
        }
        assert!(most <= 2 * MIN_SWEEP + 200, "held {most} waiters at most");
        w.advance(200);
        for rx in &mut live {
            assert!(rx.try_recv().is_ok(), "a live waiter was swept");
        }
        assert!(w.held() <= 2 * MIN_SWEEP);
    }
}

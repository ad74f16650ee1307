//! Reads: transaction status, entries by id, latest in a collection and by range, receipts,
//! users, and the governance the service started with.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use vellum_core::TxId;
use vellum_core::entry::EntryBuilder;
use vellum_core::status::{StatusView, TxStatus, tx_status};
use vellum_core::tables::{self, Id, NodeStatus, Table, Text};
use vellum_ledger::engine::{Engine, ReceiptBundle};
use vellum_ledger::index::entry_write;

use super::{Governance, LedgerEntry, LedgerNode};
use crate::NodeError;
use crate::raft::state_machine::CommitWait;

impl LedgerNode {
    /// Reads users and custom roles without copying them.
    pub fn with_access<T>(&self, f: impl FnOnce(&crate::users::Access) -> T) -> T {
        self.state.with_access(f)
    }

    /// The deployed app: user-defined endpoints, their modules and runtime options.
    pub fn app(&self) -> std::sync::Arc<crate::endpoints::App> {
        self.state.app()
    }

    /// Reads CCF's governance tables, as of the last applied transaction, without copying
    /// them.
    pub fn with_gov<T>(&self, f: impl FnOnce(&crate::gov::GovTables) -> T) -> T {
        self.state.with_gov(f)
    }

    /// The service's status, as the applied governance tables hold it.
    pub fn service_status(&self) -> Option<vellum_core::tables::ServiceStatus> {
        self.state.with_gov(crate::gov::GovTables::service_status)
    }

    /// Whether the service is being recovered: its application API is not open yet.
    pub fn is_recovering(&self) -> bool {
        self.state.recovering()
    }

    /// Reads the user-defined functions (id → code) without copying them.
    pub fn with_functions<T>(&self, f: impl FnOnce(&crate::functions::Functions) -> T) -> T {
        self.state.with_functions(f)
    }

    /// The strongest built-in role of `user_id`, if it holds one.
    pub fn role_of(&self, user_id: &str) -> Option<crate::users::Role> {
        self.state.role_of(user_id)
    }

    /// Whether `user_id` may perform `action`, by its built-in and custom roles.
    pub fn allows(&self, user_id: &str, action: crate::users::Action) -> bool {
        self.state.allows(user_id, action)
    }

    /// Governance: the members and constitution the service started with (genesis, seqno 1)
    /// and its current nodes.
    pub fn governance(&self) -> Result<Governance, NodeError> {
        let (_, ws) = self.ledger.engine().write_set(1)?;
        // Genesis is written by this service: its records are well formed; one that is not is
        // left out rather than served garbled.
        let certs = |table: Table<Id, Text>| -> Vec<(String, String)> {
            table
                .find(&ws.maps)
                .map(|m| {
                    m.writes
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((table.decode_key(k).ok()?, table.decode_value(v).ok()?))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let members = certs(tables::MEMBERS_CERTS);
        let cluster = self.cluster();
        let nodes = if cluster.certs.is_empty() {
            certs(tables::NODES_ENDORSED_CERTIFICATES)
        } else {
            cluster
                .certs_where(|s| s != Some(NodeStatus::Retired))
                .map(|(id, pem)| (id.clone(), pem.clone()))
                .collect()
        };
        let constitution = tables::CONSTITUTION
            .find(&ws.maps)
            .and_then(|m| m.writes.first())
            .and_then(|(_, v)| tables::CONSTITUTION.decode_value(v).ok())
            .unwrap_or_default();
        Ok(Governance {
            members,
            nodes,
            constitution,
            measurement: tables::VIRTUAL_MEASUREMENT,
        })
    }

    /// The status of a transaction (CCF §8).
    pub fn status(&self, txid: TxId) -> TxStatus {
        let committed = self.commit.borrow().committed;
        let engine = self.ledger.engine();
        tx_status(
            &View {
                engine: &engine,
                committed,
            },
            txid,
        )
    }

    /// The status to report to clients: as [`LedgerNode::status`], except that a backup reports
    /// a transaction of the current view or an earlier one that it has not received yet as
    /// Pending (it is behind the primary, which may well have it) rather than Unknown. Ids
    /// from views that do not exist yet stay Unknown.
    pub fn client_status(&self, txid: TxId) -> TxStatus {
        match self.status(txid) {
            TxStatus::Unknown => {
                let m = self.raft.metrics();
                let m = m.borrow_watched();
                if m.current_leader != Some(self.raft_id) && txid.view <= m.current_term + 1 {
                    TxStatus::Pending
                } else {
                    TxStatus::Unknown
                }
            }
            s => s,
        }
    }

    /// Seqno up to which every transaction is Committed.
    pub fn committed_seqno(&self) -> u64 {
        self.commit.borrow().committed
    }

    /// The seqno of the last signature transaction this node holds.
    pub fn last_signed_seqno(&self) -> u64 {
        self.ledger.last_signature()
    }

    /// The last committed transaction id (`None` before anything is).
    pub fn committed_txid(&self) -> Option<TxId> {
        let seqno = self.committed_seqno();
        let view = self.ledger.engine().view_at(seqno)?;
        Some(TxId::new(view, seqno))
    }

    /// The last transaction id in the ledger.
    pub fn last_txid(&self) -> Option<TxId> {
        self.ledger.engine().last_txid()
    }

    /// Waits until `txid` is Committed or Invalid (or the timeout passes); returns the status.
    pub async fn wait_committed(
        &self,
        txid: TxId,
        timeout: Duration,
    ) -> Result<TxStatus, NodeError> {
        let wait = async {
            let mut seqno = txid.seqno;
            loop {
                match self.waiters.wait(seqno) {
                    CommitWait::Reached => {}
                    CommitWait::Waiting(rx) => {
                        if rx.await.is_err() {
                            return Err(self.stop_reason().into());
                        }
                    }
                    CommitWait::Closed => return Err(self.stop_reason().into()),
                }
                let s = self.status(txid);
                if matches!(s, TxStatus::Committed | TxStatus::Invalid) {
                    return Ok(s);
                }
                // Not an answer yet (this node lacks what decides it): look at the next commit.
                seqno = self.commit.borrow().committed + 1;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Ok(self.status(txid)),
        }
    }

    /// The application entry at `txid`, once Raft-committed (`None`: no application entry
    /// there, or not applied yet).
    pub fn entry(&self, txid: TxId) -> Result<Option<LedgerEntry>, NodeError> {
        match self.index.get(txid.seqno) {
            Ok(Some(t)) if t.view == txid.view && t.collection.is_some() => {}
            // Before the snapshot this node started from, and not indexed yet: applied (the
            // snapshot is), so the ledger alone answers.
            Err(vellum_ledger::index::IndexError::Loading { .. })
                if self.ledger.engine().view_at(txid.seqno) == Some(txid.view) => {}
            Ok(_) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let (_, ws) = self.ledger.engine().write_set(txid.seqno)?;
        Ok(entry_of(txid, &ws))
    }

    /// The latest applied entry of `collection`.
    pub fn latest(&self, collection: &str) -> Result<Option<LedgerEntry>, NodeError> {
        let Some(seqno) = self.index.latest(collection)? else {
            return Ok(None);
        };
        let (txid, ws) = self.ledger.engine().write_set(seqno)?;
        Ok(entry_of(txid, &ws))
    }

    /// Entries of `collection` with seqnos in `from..=to`, at most `limit`.
    pub fn range(
        &self,
        collection: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, NodeError> {
        self.entries_at(self.index.range(collection, from, to, limit)?)
    }

    /// `collection`'s entries tagged `tag` with seqnos in `from..=to`, at most `limit`.
    pub fn range_tagged(
        &self,
        collection: &str,
        tag: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, NodeError> {
        self.entries_at(self.index.range_tagged(collection, tag, from, to, limit)?)
    }

    /// The application entries at `seqnos`.
    fn entries_at(&self, seqnos: Vec<u64>) -> Result<Vec<LedgerEntry>, NodeError> {
        let engine = self.ledger.engine();
        let mut out = Vec::with_capacity(seqnos.len());
        for s in seqnos {
            let (txid, ws) = engine.write_set(s)?;
            out.extend(entry_of(txid, &ws));
        }
        Ok(out)
    }

    /// The distinct tags of `collection`'s applied entries, sorted.
    pub fn tags(&self, collection: &str) -> Result<Vec<String>, NodeError> {
        Ok(self.index.tags(collection)?)
    }

    /// Every collection with at least one applied entry.
    pub fn collections(&self) -> Result<Vec<String>, NodeError> {
        Ok(self.index.collections()?)
    }

    /// The receipt of a Committed transaction.
    pub fn receipt(&self, txid: TxId) -> Result<ReceiptBundle, NodeError> {
        let committed = self.committed_seqno();
        Ok(self.ledger.engine().receipt(txid, committed)?)
    }

    /// [`LedgerNode::receipt`] and, for an application entry written with a claim, that
    /// `LedgerEntryV1` claim (whose digest is the receipt's claims digest), from one read.
    pub fn receipt_with_claim(
        &self,
        txid: TxId,
    ) -> Result<
        (
            ReceiptBundle,
            Option<vellum_core::receipt::ApplicationClaim>,
        ),
        NodeError,
    > {
        let committed = self.committed_seqno();
        let (bundle, ws) = self
            .ledger
            .engine()
            .receipt_and_write_set(txid, committed)?;
        let claim = entry_write(&ws.maps)
            .and_then(|(_, v)| tables::ENTRIES.decode_value(v).ok())
            .and_then(|r| r.claim());
        Ok((bundle, claim))
    }
}

struct View<'a> {
    engine: &'a Engine,
    committed: u64,
}

impl StatusView for View<'_> {
    fn committed_seqno(&self) -> u64 {
        self.committed
    }

    fn view_at(&self, seqno: u64) -> Option<u64> {
        self.engine.view_at(seqno)
    }
}

fn entry_of(txid: TxId, ws: &EntryBuilder) -> Option<LedgerEntry> {
    let (k, v) = entry_write(&ws.maps)?;
    let record = tables::ENTRIES.decode_value(v).ok()?;
    Some(LedgerEntry {
        txid,
        collection: String::from_utf8_lossy(k).into_owned(),
        contents: record.contents,
    })
}

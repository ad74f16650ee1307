//! Writes: operations performed on the primary (or forwarded to it by a backup, with the
//! caller, and authorised there again), the collection limit, and waiting for a write to be
//! applied.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use vellum_core::TxId;
use vellum_core::entry::EntryBuilder;
use vellum_core::tables::{self, EntryRecord};
use vellum_ledger::index::entry_write;

use super::LedgerNode;
use crate::cluster::{Forward, ForwardReply};
use crate::ops::{Caller, Needs, Op};
use crate::ops::{Hooks, RunResult};
use crate::raft::network::{FORWARD_PATH, PeerError};
use crate::raft::types::{Ticket, Tx};
use crate::users::{Role, RoleName};
use crate::{ForwardError, NodeError, RaftFailure, RaftStep, Refusal, Stopped};

impl LedgerNode {
    /// Records a write set of the node's own (not a caller's) on this node, which must be or
    /// become the primary within [`FORWARD_WAIT`]: such writes are never forwarded.
    pub(super) async fn write_local(&self, ws: EntryBuilder) -> Result<TxId, NodeError> {
        let ws = Arc::new(ws);
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            if self.primary().map(|p| p.0) == Some(self.raft_id) {
                match self.write_here(ws.clone(), false).await {
                    Err(NodeError::NotPrimary(_)) if tokio::time::Instant::now() < deadline => {}
                    r => return r,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotPrimary(self.primary().map(|p| p.0)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The primary's Raft id and node-to-node address, as this node knows them.
    pub(super) fn primary(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// [`LedgerNode::perform_full`] for an operation that always writes: its transaction id.
    pub async fn perform(&self, caller: Option<&Caller>, op: Op) -> Result<TxId, NodeError> {
        self.perform_full(caller, op)
            .await?
            .txid
            .ok_or_else(|| ForwardError::Unexpected("Ran").into())
    }

    /// Performs `op` for `caller`, whose rights the caller of this method has checked against
    /// this node's tables (the API does, answering in ACL's words): on the primary at once; on
    /// a backup by forwarding the operation and its caller to the primary, which checks them
    /// again against its own tables. Returns the transaction id as soon as the primary assigned
    /// it (Pending), or, for operations that change who may do what, once this node has applied
    /// it. `caller` `None` is the process embedding the node, trusted: it can only write on the
    /// primary. Also returns how a function it ran ended (see [`LedgerNode::perform`] for
    /// operations that always write).
    pub async fn perform_full(
        &self,
        caller: Option<&Caller>,
        op: Op,
    ) -> Result<Performed, NodeError> {
        let applied = op.answered_when_applied();
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            match self.primary() {
                Some((id, _)) if id == self.raft_id => match self.perform_here(caller, &op).await {
                    Err(NodeError::NotPrimary(_)) if tokio::time::Instant::now() < deadline => {}
                    r => return r,
                },
                Some((_, addr)) => {
                    let Some(caller) = caller else {
                        return Err(Refusal::AnonymousForward.into());
                    };
                    let msg = Forward::Op {
                        caller: caller.clone(),
                        op: op.clone(),
                    };
                    match self.forward(&addr, &msg).await {
                        Ok(ForwardReply::Done(view, seqno)) => {
                            let txid = TxId::new(view, seqno);
                            if applied {
                                self.wait_applied(seqno, FORWARD_TIMEOUT).await?;
                            }
                            return Ok(Performed::written(txid));
                        }
                        Ok(ForwardReply::Ran(txid, result)) => {
                            return Ok(Performed {
                                txid: txid.map(|(v, s)| TxId::new(v, s)),
                                result: Some(result),
                            });
                        }
                        Ok(ForwardReply::NotPrimary) | Err(PeerError::Connect(..))
                            if tokio::time::Instant::now() < deadline => {}
                        Ok(ForwardReply::Refused(r)) => return Err(r.into()),
                        Ok(ForwardReply::NotAllowed(user_id)) => {
                            return Err(NodeError::NotAllowed { user_id });
                        }
                        Ok(ForwardReply::TooManyCollections(n)) => {
                            return Err(NodeError::TooManyCollections(n));
                        }
                        Ok(ForwardReply::Failed(m)) => return Err(ForwardError::Failed(m).into()),
                        Ok(other) => return Err(ForwardError::Unexpected(other.kind()).into()),
                        Err(e) => return Err(ForwardError::Peer(e).into()),
                    }
                }
                None if tokio::time::Instant::now() < deadline => {}
                None => return Err(NodeError::NotPrimary(None)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotPrimary(self.primary().map(|p| p.0)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On the primary: builds `op`'s write set from this node's tables (running the functions
    /// it names), and records it.
    pub(super) async fn perform_here(
        &self,
        caller: Option<&Caller>,
        op: &Op,
    ) -> Result<Performed, NodeError> {
        let ws = match op {
            Op::Append {
                collection,
                contents,
                tags,
                hooks,
            } if !hooks.is_empty() => {
                return self
                    .append_with_hooks(caller, collection, contents, tags, hooks)
                    .await;
            }
            Op::Execute(e) => return self.execute_here(caller, e).await,
            Op::Gov(req) => return self.gov_here(req).await,
            Op::Endpoint(call) => return self.endpoint_here(caller, call, false).await,
            Op::DeployBundle { bundle } => {
                let v: serde_json::Value =
                    serde_json::from_str(bundle).map_err(|e| Refusal::BadBundle(e.to_string()))?;
                let (normalised, endpoints, _) =
                    crate::endpoints::parse_bundle(&v).map_err(Refusal::BadBundle)?;
                if !endpoints.is_empty() && self.state.with_functions(|f| !f.is_empty()) {
                    return Err(Refusal::FunctionsExist.into());
                }
                crate::endpoints::put(crate::endpoints::BUNDLE, &normalised.to_string())
            }
            Op::SetRuntimeOptions { options } => {
                let json = serde_json::to_string(options)
                    .map_err(|e| Refusal::BadBundle(e.to_string()))?;
                crate::endpoints::put(crate::endpoints::RUNTIME_OPTIONS, &json)
            }
            Op::Append {
                collection,
                contents,
                tags,
                ..
            } => {
                let tags = tables::check_tags(tags).map_err(Refusal::Tags)?;
                entry_write_set(collection, contents, tags)
            }
            Op::SetRoles { user_id, roles } => {
                if roles.is_empty() {
                    return Err(Refusal::NoRoles.into());
                }
                self.with_access(|a| {
                    roles.iter().try_for_each(|r| match r {
                        RoleName::Custom(name) if !a.roles.contains_key(name) => {
                            Err(Refusal::UndefinedRole(name.clone()))
                        }
                        _ => Ok(()),
                    })
                })?;
                crate::users::set_roles(user_id, roles.clone())
            }
            Op::RemoveUser { user_id } => crate::users::remove(user_id),
            Op::DefineRoles { roles, add } => {
                let mut defined = roles.clone();
                for (name, actions) in &mut defined {
                    check_role_definition(name, actions)?;
                    if *add {
                        self.with_access(|a| {
                            if let Some(have) = a.roles.get(name) {
                                actions.extend(have.iter().cloned());
                            }
                        });
                        check_role_definition(name, actions)?;
                    }
                }
                crate::users::define_roles(&defined)
            }
            Op::PutFunction { id, code } => {
                if self.state.app().is_deployed() {
                    return Err(Refusal::EndpointsDeployed.into());
                }
                vellum_js::check(code)
                    .map_err(|e| Refusal::FunctionDoesNotCompile(id.clone(), e))?;
                crate::functions::put(id, code)
            }
            Op::DeleteFunction { id } => {
                if !self.state.with_functions(|f| f.contains_key(id)) {
                    return Err(Refusal::NoSuchFunction(id.clone()).into());
                }
                crate::functions::delete(id)
            }
            Op::DeleteRole { name } => {
                if !self.with_access(|a| a.roles.contains_key(name)) {
                    return Err(Refusal::NoSuchRole(name.clone()).into());
                }
                crate::users::delete_role(name)
            }
            Op::JoinToken { key, expires_at } => {
                let latest = crate::cluster::unix(std::time::SystemTime::now())
                    + crate::cluster::TOKEN_LIFETIME.as_secs()
                    + 60;
                let digest = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
                if !digest || *expires_at > latest {
                    return Err(Refusal::NotATokenRecord.into());
                }
                crate::cluster::token_write_set(key, *expires_at)
            }
            Op::Retire { node_id } => self.retire_write_set(node_id)?,
        };
        let mut ws = ws;
        if let (true, Some(c)) = (op.changes_code(), caller) {
            ws = ws.map(tables::CHANGED_BY.write(
                tables::CHANGED_BY_KEY,
                &tables::ChangedBy {
                    user_id: c.user_id().to_owned(),
                },
            ));
        }
        let txid = self
            .write_here(Arc::new(ws), op.answered_when_applied())
            .await?;
        if op.changes_access() {
            self.spread(txid.seqno).await;
        }
        Ok(Performed::written(txid))
    }

    /// Waits (at most [`SPREAD_TIMEOUT`]) until every other node of the membership has applied
    /// `seqno`, so that a change of users or roles holds on whichever node the caller asks
    /// next. A node that does not answer in time (stopped, partitioned) is logged and left:
    /// it applies the change when it catches up, before it serves anything newer.
    async fn spread(&self, seqno: u64) {
        let others: Vec<(u64, String)> = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.raft_id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let asks = others.iter().map(|(id, addr)| async move {
            let msg = Forward::Applied { seqno };
            let r: Result<ForwardReply, PeerError> = self
                .peers
                .call(addr, FORWARD_PATH, &msg, SPREAD_TIMEOUT)
                .await;
            if !matches!(r, Ok(ForwardReply::Applied)) {
                tracing::warn!(node = id, %addr, seqno, "a node did not confirm a change of users or roles in time");
            }
        });
        futures_util::future::join_all(asks).await;
    }

    /// Whether `caller` may do what `needs` asks, by this node's tables.
    pub(super) fn authorise(&self, caller: &Caller, needs: Needs) -> Result<(), NodeError> {
        let ok = match needs {
            Needs::Endpoint | Needs::Signed => true,
            Needs::Action(a) => self.allows(caller.user_id(), a),
            Needs::Operator => {
                self.is_member(caller)
                    || self
                        .role_of(caller.user_id())
                        .is_some_and(|have| have >= Role::Administrator)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(NodeError::NotAllowed {
                user_id: caller.user_id().to_owned(),
            })
        }
    }

    /// Whether `caller` is a consortium member: by its certificate only.
    pub fn is_member(&self, caller: &Caller) -> bool {
        let Caller::Cert(fingerprint) = caller else {
            return false;
        };
        self.governance().is_ok_and(|g| {
            g.members.iter().any(|(_, pem)| {
                vellum_core::crypto::Certificate::from_pem(pem)
                    .is_ok_and(|c| c.acl_fingerprint() == *fingerprint)
            })
        })
    }

    /// Forwards `msg` to the primary at `addr`. Gives up (with an ambiguous error: the primary
    /// may have done it) if this node learns of another primary meanwhile: a primary that was
    /// cut off may never answer.
    pub(super) async fn forward(
        &self,
        addr: &str,
        msg: &Forward,
    ) -> Result<ForwardReply, PeerError> {
        let leader = self.primary().map(|p| p.0);
        let mut metrics = self.raft.metrics();
        let deposed = async {
            loop {
                if metrics.changed().await.is_err() {
                    return;
                }
                if metrics.borrow_watched().current_leader != leader {
                    return;
                }
            }
        };
        tokio::select! {
            r = self.peers.call(addr, FORWARD_PATH, msg, FORWARD_TIMEOUT) => r,
            () = deposed => Err(PeerError::Call(
                addr.to_owned(),
                "the primary changed while the request was in flight".into(),
            )),
        }
    }

    /// Waits until this node has applied `seqno`.
    pub(super) async fn wait_applied(
        &self,
        seqno: u64,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let mut rx = self.commit.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|c| c.applied >= seqno)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.stop_reason().into()),
            Err(_) => Err(ForwardError::NotAppliedHere(seqno).into()),
        }
    }

    /// Records a write set on this node, which must be the primary (no forwarding).
    pub(super) async fn write_here(
        &self,
        ws: Arc<EntryBuilder>,
        applied: bool,
    ) -> Result<TxId, NodeError> {
        let proposal = self.propose(ws, applied).await?;
        self.settle(proposal).await
    }

    /// Hands a write set to Raft on this node, which must be the primary: once this returns,
    /// any write set proposed later lands after it in the log.
    pub(super) async fn propose(
        &self,
        ws: Arc<EntryBuilder>,
        applied: bool,
    ) -> Result<Proposal<'_>, NodeError> {
        if let Some(why) = self.ledger.engine().poisoned() {
            return Err(Stopped::LedgerFailed(why.to_owned()).into());
        }
        self.admit_collection(&ws)?;
        // Counted here, on the primary, so that writes forwarded by backups count too.
        let arriving = self.signing.arriving();
        let (ticket, assigned) = Ticket::new();
        let (responder, done) = crate::raft::types::QuietResponder::new_pair();
        self.raft
            .client_write_ff(
                Tx::Write {
                    ws,
                    ticket: (!applied).then_some(ticket),
                },
                Some(responder),
            )
            .await
            .map_err(|e| RaftFailure::new(RaftStep::Write, e))?;
        Ok(Proposal {
            arriving,
            assigned,
            done,
            applied,
        })
    }

    /// Waits for a proposed write's transaction id: as soon as it is assigned, or, for a write
    /// proposed to be answered once applied, once it is.
    pub(super) async fn settle(&self, p: Proposal<'_>) -> Result<TxId, NodeError> {
        let Proposal {
            arriving,
            mut assigned,
            mut done,
            applied,
        } = p;
        if applied {
            // It waits for a signature: the signer must not wait for it.
            drop(arriving);
            return match done.await {
                Ok(Ok(applied)) => Ok(applied.data.txid),
                Ok(Err(e)) => Err(NodeError::from_write(e)),
                Err(_) => Err(self.stop_reason().into()),
            };
        }
        let txid = tokio::select! {
            biased;
            t = &mut assigned => t.map_err(|_| self.stop_reason().into()),
            r = &mut done => match r {
                Ok(Ok(applied)) => Ok(applied.data.txid),
                Ok(Err(e)) => Err(NodeError::from_write(e)),
                Err(_) => match assigned.try_recv() {
                    Ok(t) => Ok(t),
                    Err(_) => Err(self.stop_reason().into()),
                },
            },
        };
        drop(arriving);
        txid
    }

    /// On the primary: refuses a write that would start a collection past the limit, and
    /// counts the collection it starts. A collection counts from its first admitted write
    /// (a write that then fails still holds its place); concurrent writes cannot both take
    /// the last place.
    pub(super) fn admit_collection(&self, ws: &EntryBuilder) -> Result<(), NodeError> {
        let Some(name) = entry_write(&ws.maps).map(|(k, _)| String::from_utf8_lossy(k)) else {
            return Ok(());
        };
        self.state
            .admit_collection(&name, self.max_collections)
            .map_err(NodeError::TooManyCollections)
    }

    /// Serves a request a backup forwarded to this node.
    pub async fn serve_forwarded(&self, msg: Forward) -> ForwardReply {
        match msg {
            // Any node answers this one; everything else is the primary's.
            Forward::Applied { seqno } => match self.wait_applied(seqno, SPREAD_TIMEOUT).await {
                Ok(()) => ForwardReply::Applied,
                Err(e) => ForwardReply::Failed(e.to_string()),
            },
            _ if self.primary().map(|p| p.0) != Some(self.raft_id) => ForwardReply::NotPrimary,
            Forward::Op { caller, op } => {
                // The caller's rights are checked here again, by this node's tables.
                let allowed = op
                    .needs_all()
                    .into_iter()
                    .try_for_each(|n| self.authorise(&caller, n));
                let done = match allowed {
                    Ok(()) => self.perform_here(Some(&caller), &op).await,
                    Err(e) => Err(e),
                };
                match done {
                    Ok(Performed {
                        txid,
                        result: Some(result),
                    }) => ForwardReply::Ran(txid.map(|t| (t.view, t.seqno)), result),
                    Ok(Performed { txid: Some(t), .. }) => ForwardReply::Done(t.view, t.seqno),
                    Ok(Performed { txid: None, .. }) => {
                        ForwardReply::Failed("no transaction and no result".into())
                    }
                    Err(NodeError::NotPrimary(_)) => ForwardReply::NotPrimary,
                    Err(NodeError::TooManyCollections(n)) => ForwardReply::TooManyCollections(n),
                    Err(NodeError::NotAllowed { user_id }) => ForwardReply::NotAllowed(user_id),
                    Err(NodeError::Refused(r)) => ForwardReply::Refused(r),
                    Err(e) => ForwardReply::Failed(e.to_string()),
                }
            }
            Forward::Join { request, cert_der } => {
                match self.admit_here(request, &cert_der).await {
                    Ok(crate::cluster::JoinOutcome::Admitted(j)) => ForwardReply::Joined(j),
                    Ok(crate::cluster::JoinOutcome::Pending(id)) => ForwardReply::JoinPending(id),
                    Err(NodeError::NotPrimary(_)) => ForwardReply::NotPrimary,
                    Err(NodeError::Refused(r)) => ForwardReply::Refused(r),
                    Err(e) => ForwardReply::Failed(e.to_string()),
                }
            }
        }
    }

    /// Gives `user_id` exactly `roles`, for a caller allowed `users/write` (see
    /// [`LedgerNode::perform`]); answers once applied here.
    pub async fn set_user_roles(
        &self,
        caller: Option<&Caller>,
        user_id: &str,
        roles: Vec<RoleName>,
    ) -> Result<TxId, NodeError> {
        let user_id = user_id.to_owned();
        self.perform(caller, Op::SetRoles { user_id, roles }).await
    }

    /// Defines custom roles (PUT replaces each one's actions; with `add`, PATCH adds to them),
    /// for a caller allowed `roleDefinitions/write`; answers once applied here.
    pub async fn define_roles(
        &self,
        caller: Option<&Caller>,
        roles: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        add: bool,
    ) -> Result<TxId, NodeError> {
        self.perform(caller, Op::DefineRoles { roles, add }).await
    }

    /// Stores `code` as the user-defined function `id` (it must compile), for a caller
    /// allowed `userDefinedFunctions/write`; answers once applied here.
    pub async fn put_function(
        &self,
        caller: Option<&Caller>,
        id: &str,
        code: &str,
    ) -> Result<TxId, NodeError> {
        let (id, code) = (id.to_owned(), code.to_owned());
        self.perform(caller, Op::PutFunction { id, code }).await
    }

    /// Deletes the user-defined function `id`, for a caller allowed
    /// `userDefinedFunctions/delete`; answers once applied here.
    pub async fn delete_function(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<TxId, NodeError> {
        let id = id.to_owned();
        self.perform(caller, Op::DeleteFunction { id }).await
    }

    /// Serves a request to a user-defined endpoint whose policies the caller passed: a
    /// `readonly` one on this node, a `readwrite` one on the primary (forwarded, with the caller
    /// object the request carries). The answer is [`RunResult::Http`].
    pub async fn serve_endpoint(
        &self,
        caller: Option<&Caller>,
        call: crate::ops::EndpointCall,
        readonly: bool,
    ) -> Result<Performed, NodeError> {
        if readonly {
            return self.endpoint_here(caller, &call, true).await;
        }
        // An anonymous caller (a `no_auth` endpoint) is forwarded under an empty token id: the
        // endpoint needs nothing of it (see `Needs::Endpoint`).
        let anonymous = Caller::Token(String::new());
        self.perform_full(Some(caller.unwrap_or(&anonymous)), Op::Endpoint(call))
            .await
    }

    /// Deploys an app bundle (JSON), for a caller allowed `userDefinedEndpoints/write`;
    /// answers once applied on every node it can reach.
    pub async fn deploy_bundle(
        &self,
        caller: Option<&Caller>,
        bundle: String,
    ) -> Result<TxId, NodeError> {
        self.perform(caller, Op::DeployBundle { bundle }).await
    }

    /// Sets the endpoints' runtime options, for a caller allowed
    /// `userDefinedEndpoints/write`.
    pub async fn set_runtime_options(
        &self,
        caller: Option<&Caller>,
        options: vellum_js::RuntimeOptions,
    ) -> Result<TxId, NodeError> {
        self.perform(caller, Op::SetRuntimeOptions { options })
            .await
    }

    /// Deletes the custom role `name`, for a caller allowed `roleDefinitions/delete`; answers
    /// once applied here.
    pub async fn delete_role(
        &self,
        caller: Option<&Caller>,
        name: &str,
    ) -> Result<TxId, NodeError> {
        let name = name.to_owned();
        self.perform(caller, Op::DeleteRole { name }).await
    }

    /// Removes `user_id`, for an Administrator (see [`LedgerNode::perform`]); answers once
    /// applied here.
    pub async fn remove_user(
        &self,
        caller: Option<&Caller>,
        user_id: &str,
    ) -> Result<TxId, NodeError> {
        let user_id = user_id.to_owned();
        self.perform(caller, Op::RemoveUser { user_id }).await
    }

    /// Appends an application entry to `collection` for the process embedding the node (on
    /// the primary only; see [`LedgerNode::perform`]).
    pub async fn append(&self, collection: &str, contents: &str) -> Result<TxId, NodeError> {
        self.append_as(None, collection, contents).await
    }

    /// Appends an application entry with tags to `collection` for a Contributor (see
    /// [`LedgerNode::perform`]); the tags must pass `vellum_core::tables::check_tags`.
    pub async fn append_tagged(
        &self,
        caller: Option<&Caller>,
        collection: &str,
        contents: &str,
        tags: Vec<String>,
    ) -> Result<TxId, NodeError> {
        self.append_hooked(caller, collection, contents, tags, Hooks::default())
            .await
    }

    /// Appends an application entry with tags to `collection`, running `hooks` in its
    /// transaction, for a Contributor (see [`LedgerNode::perform`]); a hook that fails refuses
    /// the write ([`Refusal::HookFailed`]) and nothing is written.
    pub async fn append_hooked(
        &self,
        caller: Option<&Caller>,
        collection: &str,
        contents: &str,
        tags: Vec<String>,
        hooks: Hooks,
    ) -> Result<TxId, NodeError> {
        let op = Op::Append {
            collection: collection.to_owned(),
            contents: contents.to_owned(),
            tags,
            hooks,
        };
        self.perform(caller, op).await
    }

    /// Runs a user-defined function for a caller allowed `userDefinedFunctions/execute`, on
    /// the primary: how it ended, and the transaction of what it wrote.
    pub async fn execute(
        &self,
        caller: Option<&Caller>,
        run: crate::ops::Execute,
    ) -> Result<Performed, NodeError> {
        self.perform_full(caller, Op::Execute(run)).await
    }

    /// Appends an application entry to `collection` for a Contributor (see
    /// [`LedgerNode::perform`]).
    pub async fn append_as(
        &self,
        caller: Option<&Caller>,
        collection: &str,
        contents: &str,
    ) -> Result<TxId, NodeError> {
        self.append_tagged(caller, collection, contents, Vec::new())
            .await
    }
}

/// What performing an operation gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Performed {
    /// Its transaction: every operation but a function run that wrote nothing (or failed) has
    /// one.
    pub txid: Option<TxId>,
    /// How the function it ran ended (a standalone run only).
    pub result: Option<RunResult>,
}

impl Performed {
    fn written(txid: TxId) -> Performed {
        Performed {
            txid: Some(txid),
            result: None,
        }
    }
}

/// A write set handed to Raft, whose transaction id is still to come.
pub(super) struct Proposal<'a> {
    arriving: crate::signing::Arriving<'a>,
    assigned: tokio::sync::oneshot::Receiver<TxId>,
    done: tokio::sync::oneshot::Receiver<
        openraft::raft::ClientWriteResult<crate::raft::types::TypeConfig>,
    >,
    applied: bool,
}

/// How long a backup waits for a primary to forward a write to.
pub(super) const FORWARD_WAIT: Duration = Duration::from_secs(10);
/// How long a forwarded call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a change of users or roles waits for the other nodes to apply it.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The write set of an application entry.
/// An application entry's write set, with a fresh `LedgerEntryV1` application claim: its key
/// is recorded (privately) in the entry's record and its digest is the transaction's claims
/// digest, so the entry's receipt can reveal the claim (`acl-2024-api.md` §7).
pub(super) fn entry_write_set(collection: &str, contents: &str, tags: Vec<String>) -> EntryBuilder {
    let mut key = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    let (record, claims_digest) =
        EntryRecord::with_claim(collection.to_owned(), contents.to_owned(), tags, &key);
    EntryBuilder {
        claims_digest,
        ..EntryBuilder::default()
    }
    .map(tables::ENTRIES.write(collection, &record))
}

/// Checks a custom role's definition against the limits.
fn check_role_definition(
    name: &str,
    actions: &std::collections::BTreeSet<String>,
) -> Result<(), Refusal> {
    let bad = |why: String| Refusal::BadRoleDefinition(name.to_owned(), why);
    match RoleName::parse(name) {
        Ok(RoleName::Custom(_)) => {}
        Ok(RoleName::BuiltIn(_)) => return Err(Refusal::BuiltInRoleName(name.to_owned())),
        Err(e) => return Err(bad(e.to_string())),
    }
    if actions.len() > tables::MAX_ROLE_ACTIONS {
        return Err(bad(format!(
            "at most {} actions per role",
            tables::MAX_ROLE_ACTIONS
        )));
    }
    if let Some(a) = actions.iter().find(|a| {
        a.is_empty()
            || a.chars().count() > tables::MAX_ACTION_CHARS
            || a.chars().any(char::is_control)
    }) {
        return Err(bad(format!(
            "action {a:?} must be 1 to {} characters without control characters",
            tables::MAX_ACTION_CHARS
        )));
    }
    Ok(())
}

//! The cluster: which nodes the ledger records and trusts, join tokens, admitting a joining
//! node, retiring one, and the reconciler that drives the Raft membership towards what the
//! ledger says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use sha2::{Digest, Sha256};
use vellum_core::TxId;
use vellum_core::entry::EntryBuilder;
use vellum_core::tables::{self, NodeInfo, NodeStatus};

use super::writes::FORWARD_WAIT;
use super::{ClusterNode, LedgerNode};
use crate::cluster::{
    ClusterState, Forward, ForwardReply, JoinOutcome, JoinRequest, JoinResponse, JoinToken,
    raft_id_of,
};
use crate::ops::{Caller, Op};
use crate::raft::Raft;
use crate::raft::network::PeerError;
use crate::raft::types::Node;
use crate::service_state::ServiceState;
use crate::{DataDirError, ForwardError, NodeError, Refusal};

impl LedgerNode {
    /// The IP addresses of the nodes in the Raft membership (those given as IP literals).
    pub fn node_ips(&self) -> Vec<std::net::IpAddr> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .filter_map(|(_, n)| {
                let (host, _) = n.addr.rsplit_once(':')?;
                host.trim_matches(['[', ']']).parse().ok()
            })
            .collect()
    }

    /// The certificates (PEM) of the nodes recorded `Trusted`.
    pub(super) fn trusted_node_certs(&self) -> Vec<String> {
        self.state.with_cluster(|cluster| {
            cluster
                .certs_where(|s| s == Some(NodeStatus::Trusted))
                .map(|(_, pem)| pem.clone())
                .collect()
        })
    }

    /// Whether `der` is a certificate for the key of a node this service recorded as
    /// `node_id` (or, on a node that has not caught up yet, of one of those it was told of when
    /// it was admitted). The TLS handshake proved the peer holds the key the id names (the hex
    /// SHA-256 of its public key); the certificate around the key may be older or newer than
    /// the one recorded here: a service identity rotation endorses every node's key anew, and
    /// the nodes take it one after another.
    pub fn is_node_certificate(&self, node_id: &str, der: &[u8]) -> bool {
        let recorded = self.state.with_cluster(|c| c.certs.contains_key(node_id));
        recorded || self.told_of(der)
    }

    /// Whether `der` holds the key of one of the nodes this node was told of when admitted.
    fn told_of(&self, der: &[u8]) -> bool {
        let Ok(cert) = vellum_core::crypto::Certificate::from_der(der) else {
            return false;
        };
        self.data.join_peers.iter().any(|p| {
            vellum_core::crypto::Certificate::from_der(p)
                .is_ok_and(|c| c.spki_der() == cert.spki_der())
        })
    }

    /// Whether node `node_id`, presenting `der`, is a trusted node: recorded `Trusted`, or,
    /// while this node has not caught up, unknown here but among the nodes it was told of.
    pub fn is_trusted_node(&self, node_id: &str, der: &[u8]) -> bool {
        match self.node_status(node_id) {
            Some(NodeStatus::Trusted) => true,
            None => self.told_of(der),
            Some(_) => false,
        }
    }

    /// The status (`Trusted`, `Retired`) of node `node_id`, if this node knows it.
    pub fn node_status(&self, node_id: &str) -> Option<NodeStatus> {
        self.state
            .with_cluster(|c| c.nodes.get(node_id).map(|n| n.status))
    }

    /// Nodes and join tokens, as of the last applied transaction.
    pub fn cluster(&self) -> ClusterState {
        self.state.cluster()
    }

    /// The nodes of the service: every node recorded in the ledger, with its Raft role.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let cluster = self.cluster();
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut out = Vec::new();
        for (node_id, rec) in &cluster.nodes {
            let Some(raft_id) = rec.raft_id.or_else(|| raft_id_of(node_id)) else {
                continue;
            };
            let address = rec
                .address
                .clone()
                .or_else(|| membership.get_node(&raft_id).map(|n| n.addr.clone()));
            let role = if m.current_leader == Some(raft_id) {
                "primary"
            } else if voters.contains(&raft_id) {
                "backup"
            } else if membership.get_node(&raft_id).is_some() {
                "learner"
            } else {
                "none"
            };
            out.push(ClusterNode {
                node_id: node_id.clone(),
                status: rec.status,
                raft_id,
                address,
                role,
            });
        }
        out
    }

    /// Creates a one-time join token (valid for [`crate::cluster::TOKEN_LIFETIME`]) for an
    /// operator (see [`LedgerNode::perform`]); returns the token and its expiry (unix seconds).
    /// The secret never leaves this node: the ledger records its digest.
    pub async fn create_join_token(
        &self,
        caller: Option<&Caller>,
    ) -> Result<(String, u64), NodeError> {
        let (token, key, expires_at) =
            crate::cluster::new_token(&self.service_cert()?, std::time::SystemTime::now());
        self.perform(caller, Op::JoinToken { key, expires_at })
            .await?;
        Ok((token, expires_at))
    }

    /// Admits a joining node (see [`crate::cluster`]): `cert_der` is the certificate it
    /// presented in its TLS handshake. On a backup the request is forwarded to the primary.
    pub async fn admit(
        &self,
        request: JoinRequest,
        cert_der: &[u8],
    ) -> Result<JoinOutcome, NodeError> {
        if self.data.service_token.is_some() {
            return Err(Refusal::ServiceKeyInToken.into());
        }
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            match self.primary() {
                Some((id, _)) if id == self.raft_id => {
                    return self.admit_here(request, cert_der).await;
                }
                Some((_, addr)) => {
                    let msg = Forward::Join {
                        request: request.clone(),
                        cert_der: cert_der.to_vec(),
                    };
                    match self.forward(&addr, &msg).await {
                        Ok(ForwardReply::Joined(j)) => return Ok(JoinOutcome::Admitted(j)),
                        Ok(ForwardReply::JoinPending(id)) => return Ok(JoinOutcome::Pending(id)),
                        Ok(ForwardReply::Refused(r)) => return Err(r.into()),
                        Ok(ForwardReply::NotPrimary) | Err(PeerError::Connect(..)) => {}
                        Ok(ForwardReply::Failed(m)) => return Err(ForwardError::Failed(m).into()),
                        Ok(other) => return Err(ForwardError::Unexpected(other.kind()).into()),
                        Err(e) => return Err(ForwardError::Peer(e).into()),
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotPrimary(None));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On the primary: answers a join request. A node the ledger knows gets the answer its
    /// status gives (asking again is how a node waits for a vote, or recovers an answer it
    /// lost); a new node is admitted as the join policy says: at once with a join token, or
    /// recorded `Pending` until the members trust it by proposal.
    pub(super) async fn admit_here(
        &self,
        request: JoinRequest,
        cert_der: &[u8],
    ) -> Result<JoinOutcome, NodeError> {
        use vellum_core::crypto::{Certificate, node_id_of};
        let _one_at_a_time = self.join_lock.lock().await;
        let cert = Certificate::from_der(cert_der)
            .map_err(|e| Refusal::JoiningCertificate(e.to_string()))?;
        let node_id = node_id_of(&cert);
        // A node id is hex SHA-256 of the key, made just above.
        let raft_id = raft_id_of(&node_id).unwrap_or_default();
        let cluster = self.cluster();
        match cluster.nodes.get(&node_id).map(|r| r.status) {
            Some(NodeStatus::Retired) => return Err(Refusal::AlreadyRetired(node_id).into()),
            Some(NodeStatus::Pending) => return Ok(JoinOutcome::Pending(node_id)),
            Some(NodeStatus::Trusted) => {
                // Trusted (by a vote, or its first answer was lost): the same answer again, to
                // the holder of the key, once its endorsed certificate is recorded.
                return Ok(match cluster.certs.get(&node_id) {
                    Some(pem) => {
                        let at = self.committed_seqno();
                        let view = self.ledger.engine().view_at(at).unwrap_or_default();
                        JoinOutcome::Admitted(Box::new(self.join_response(
                            node_id,
                            raft_id,
                            pem.clone(),
                            TxId::new(view, at),
                        )))
                    }
                    None => JoinOutcome::Pending(node_id),
                });
            }
            None => {}
        }
        let policy = self.state.with_gov(crate::gov::GovTables::join_policy);
        if policy.admission == tables::Admission::Vote {
            return self
                .record_pending(&request, &cert, &cluster, node_id, raft_id)
                .await;
        }
        if request.token.trim().is_empty() {
            return Err(Refusal::TokenRequired.into());
        }
        let token = self.spendable_token(&request.token)?;
        let (dns, ips) = crate::cluster::joining_names(&request)?;
        let dns_refs: Vec<&str> = dns.iter().map(String::as_str).collect();
        let id = self.identity.get();
        let node_cert_pem = vellum_ledger::identity::endorse_node(
            &id.service_cert_pem,
            &id.service_key_pem,
            cert.spki_der(),
            "Vellum Node",
            &dns_refs,
            &ips,
            std::time::SystemTime::now(),
            3650,
        )
        .map_err(|e| Refusal::CannotEndorse(e.to_string()))?;
        let ws = crate::cluster::admission_write_set(
            &node_id,
            &node_cert_pem,
            raft_id,
            &request.address,
            &token.key,
        );
        let txid = self.write_here(Arc::new(ws), true).await?;
        tracing::info!(%node_id, raft_id, address = %request.address, %txid, "admitted a node");
        Ok(JoinOutcome::Admitted(Box::new(self.join_response(
            node_id,
            raft_id,
            node_cert_pem,
            txid,
        ))))
    }

    /// Records a node that joins by vote as `Pending`, with its certificate signing request.
    async fn record_pending(
        &self,
        request: &JoinRequest,
        cert: &vellum_core::crypto::Certificate,
        cluster: &ClusterState,
        node_id: String,
        raft_id: u64,
    ) -> Result<JoinOutcome, NodeError> {
        let csr = request.csr.as_deref().ok_or_else(|| {
            Refusal::JoiningRequest(
                "missing: a node that joins by vote sends one (a newer `vellum serve` does)".into(),
            )
        })?;
        if csr.len() > MAX_CSR_BYTES {
            return Err(
                Refusal::JoiningRequest(format!("larger than {MAX_CSR_BYTES} bytes")).into(),
            );
        }
        let spki = vellum_ledger::identity::csr_spki(csr)
            .map_err(|e| Refusal::JoiningRequest(e.to_string()))?;
        if spki != cert.spki_der() {
            return Err(
                Refusal::JoiningRequest("it is not for the key the node presented".into()).into(),
            );
        }
        crate::cluster::joining_names(request)?;
        let pending = cluster
            .nodes
            .values()
            .filter(|r| r.status == NodeStatus::Pending)
            .count();
        if pending >= MAX_PENDING_NODES {
            return Err(Refusal::TooManyPending(pending).into());
        }
        let mut info = NodeInfo::cluster(NodeStatus::Pending, raft_id, &request.address);
        info.certificate_signing_request = Some(csr.to_owned());
        let ws = EntryBuilder::default().map(tables::NODES_INFO.write(&node_id, &info));
        let txid = self.write_here(Arc::new(ws), true).await?;
        tracing::info!(%node_id, address = %request.address, %txid, "a node waits to be trusted by a vote");
        Ok(JoinOutcome::Pending(node_id))
    }

    /// What an admitted node receives.
    fn join_response(
        &self,
        node_id: String,
        raft_id: u64,
        node_cert_pem: String,
        admitted_at: TxId,
    ) -> JoinResponse {
        // One identity: a rotation between reads could pair a certificate with another key.
        let id = self.identity.get();
        JoinResponse {
            node_id,
            raft_id,
            node_cert_pem,
            service_cert_pem: id.service_cert_pem.clone(),
            service_key_pem: id.service_key_pem.clone(),
            ledger_secrets: self.ledger.engine().keys().secrets.to_text(),
            chunk_size: self.chunk_size,
            admitted_at: admitted_at.to_string(),
            trusted_node_certs: self.trusted_node_certs(),
            previous_services: id.previous.clone(),
        }
    }

    /// The service certificate, parsed.
    fn service_cert(&self) -> Result<vellum_core::crypto::Certificate, NodeError> {
        vellum_core::crypto::Certificate::from_pem(&self.identity.get().service_cert_pem)
            .map_err(|e| DataDirError::crypto("service_cert.pem")(e).into())
    }

    /// The join token `text`, if it was made for this service, is recorded and has not
    /// expired.
    fn spendable_token(&self, text: &str) -> Result<JoinToken, NodeError> {
        let token: JoinToken = text.parse().map_err(Refusal::from)?;
        if token.service_cert_digest[..] != Sha256::digest(self.service_cert()?.der())[..] {
            return Err(Refusal::TokenForAnotherService.into());
        }
        let now = crate::cluster::unix(std::time::SystemTime::now());
        match self.cluster().tokens.get(&token.key) {
            Some(t) if t.expires_at > now => Ok(token),
            Some(_) => Err(Refusal::TokenExpired.into()),
            None => Err(Refusal::TokenUnknown.into()),
        }
    }

    /// Retires a node for an operator (see [`LedgerNode::perform`]): records it `Retired`; the
    /// primary then removes it from Raft. Returns the transaction that retired it.
    pub async fn retire(&self, caller: Option<&Caller>, node_id: &str) -> Result<TxId, NodeError> {
        self.perform(
            caller,
            Op::Retire {
                node_id: node_id.to_owned(),
            },
        )
        .await
    }

    /// On the primary: the write set that retires `node_id`, if it may be retired.
    pub(super) fn retire_write_set(&self, node_id: &str) -> Result<EntryBuilder, NodeError> {
        let cluster = self.cluster();
        let Some(rec) = cluster.nodes.get(node_id) else {
            return Err(Refusal::NoSuchNode(node_id.to_owned()).into());
        };
        if rec.status == NodeStatus::Retired {
            return Err(Refusal::AlreadyRetired(node_id.to_owned()).into());
        }
        let active = cluster
            .nodes
            .values()
            .filter(|r| r.status != NodeStatus::Retired)
            .count();
        if active <= 1 {
            return Err(Refusal::LastNode.into());
        }
        let raft_id = rec.raft_id.or_else(|| raft_id_of(node_id)).unwrap_or(0);
        let address = rec
            .address
            .clone()
            .or_else(|| {
                self.raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .get_node(&raft_id)
                    .map(|n| n.addr.clone())
            })
            .unwrap_or_default();
        Ok(EntryBuilder::default().map(tables::NODES_INFO.write(
            node_id,
            &NodeInfo::cluster(NodeStatus::Retired, raft_id, &address),
        )))
    }
}

/// How many nodes may wait for a vote at once (each is a transaction anyone who reaches the
/// service can cause, on a service that admits nodes by vote).
const MAX_PENDING_NODES: usize = 8;
/// The largest certificate signing request a joining node may send.
const MAX_CSR_BYTES: usize = 16 << 10;

/// How close to the primary's log a learner must be to become a voter.
const PROMOTE_LAG: u64 = 100;

/// On the primary, drives the Raft membership towards what the ledger says (CCF's
/// `nodes.info` is the desired state): admitted (`Trusted`) nodes are added as learners, made
/// voters once caught up, and `Retired` nodes are removed. One change at a time; a new primary
/// picks up where an old one stopped.
pub(super) async fn reconciler(
    raft: Raft,
    state: Arc<ServiceState>,
    me: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use openraft::ChangeMembers;
    use std::collections::BTreeSet;
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (membership, last_index, replication) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.current_leader != Some(me) {
                continue;
            }
            (
                m.membership_config.membership().clone(),
                m.last_log_index.unwrap_or(0),
                m.replication.clone().unwrap_or_default(),
            )
        };
        let cluster = state.cluster();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut change = None;
        for (node_id, rec) in &cluster.nodes {
            let Some(id) = rec.raft_id.or_else(|| raft_id_of(node_id)) else {
                continue;
            };
            let present = membership.get_node(&id).is_some();
            match rec.status {
                NodeStatus::Retired if voters.contains(&id) && voters.len() > 1 => {
                    change = Some((
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        format!("removing retired node {node_id}"),
                    ));
                }
                NodeStatus::Retired if present && !voters.contains(&id) => {
                    change = Some((
                        ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                        format!("removing retired learner {node_id}"),
                    ));
                }
                NodeStatus::Trusted if !present => {
                    if let Some(addr) = &rec.address {
                        change = Some((
                            ChangeMembers::AddNodes(BTreeMap::from([(id, Node::new(addr))])),
                            format!("adding node {node_id} at {addr} as a learner"),
                        ));
                    }
                }
                NodeStatus::Trusted if !voters.contains(&id) => {
                    // Promote only a learner that has acknowledged entries and is close behind.
                    let matched = replication.get(&id).copied().flatten().map(|l| l.index);
                    if matched.is_some_and(|m| m + PROMOTE_LAG >= last_index) {
                        change = Some((
                            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                            format!("node {node_id} caught up: making it a voter"),
                        ));
                    }
                }
                _ => {}
            }
            if change.is_some() {
                break;
            }
        }
        let Some((c, what)) = change else { continue };
        tracing::info!("{what}");
        if let Err(e) = raft.change_membership(c, false).await {
            tracing::warn!(error = %e, "membership change failed: {what}");
        }
    }
}

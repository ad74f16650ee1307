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
    ClusterState, Forward, ForwardReply, JoinRequest, JoinResponse, JoinToken, raft_id_of,
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

    /// Whether `der` is the certificate recorded for node `node_id` (or, on a node that has not
    /// caught up yet, one of those it was told of when it was admitted).
    pub fn is_node_certificate(&self, node_id: &str, der: &[u8]) -> bool {
        let recorded = self.state.with_cluster(|c| {
            c.certs
                .get(node_id)
                .and_then(|pem| vellum_core::crypto::Certificate::from_pem(pem).ok())
                .is_some_and(|c| c.der() == der)
        });
        recorded || self.data.join_peers.iter().any(|p| p[..] == *der)
    }

    /// Whether node `node_id`, presenting `der`, is a trusted node: recorded `Trusted`, or,
    /// while this node has not caught up, unknown here but among the nodes it was told of.
    pub fn is_trusted_node(&self, node_id: &str, der: &[u8]) -> bool {
        match self.node_status(node_id) {
            Some(NodeStatus::Trusted) => true,
            None => self.data.join_peers.iter().any(|p| p[..] == *der),
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
    ) -> Result<JoinResponse, NodeError> {
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
                        Ok(ForwardReply::Joined(j)) => return Ok(*j),
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

    pub(super) async fn admit_here(
        &self,
        request: JoinRequest,
        cert_der: &[u8],
    ) -> Result<JoinResponse, NodeError> {
        use vellum_core::crypto::{Certificate, node_id_of};
        let _one_at_a_time = self.join_lock.lock().await;
        let token = self.spendable_token(&request.token)?;
        let cert = Certificate::from_der(cert_der)
            .map_err(|e| Refusal::JoiningCertificate(e.to_string()))?;
        let node_id = node_id_of(&cert);
        // A node id is hex SHA-256 of the key, made just above.
        let raft_id = raft_id_of(&node_id).unwrap_or_default();
        if self.cluster().nodes.contains_key(&node_id) {
            return Err(Refusal::AlreadyJoined(node_id).into());
        }
        let (dns, ips) = joining_names(&request)?;
        let dns_refs: Vec<&str> = dns.iter().map(String::as_str).collect();
        let node_cert_pem = vellum_ledger::identity::endorse_node(
            &self.data.keys.service_cert_pem,
            &self.data.service_key_pem,
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
        Ok(JoinResponse {
            node_id,
            raft_id,
            node_cert_pem,
            service_cert_pem: self.data.keys.service_cert_pem.clone(),
            service_key_pem: self.data.service_key_pem.clone(),
            ledger_secret_hex: hex::encode(self.data.keys.secret.as_bytes()),
            chunk_size: self.chunk_size,
            admitted_at: txid.to_string(),
            trusted_node_certs: self.trusted_node_certs(),
        })
    }

    /// The service certificate, parsed.
    fn service_cert(&self) -> Result<vellum_core::crypto::Certificate, NodeError> {
        vellum_core::crypto::Certificate::from_pem(&self.data.keys.service_cert_pem)
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

/// The names a joining node's certificate gets: `localhost`, 127.0.0.1, the names and addresses
/// it asked for, and the host of its `HOST:PORT` address (a name or an address), each once.
fn joining_names(request: &JoinRequest) -> Result<(Vec<String>, Vec<std::net::IpAddr>), NodeError> {
    let host = request
        .address
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
        .ok_or_else(|| Refusal::NotHostPort(request.address.clone()))?;
    let mut dns: Vec<String> = vec!["localhost".into()];
    dns.extend(request.dns_names.iter().cloned());
    let mut ips: Vec<std::net::IpAddr> = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    ips.extend(request.ips.iter().copied());
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) => dns.push(host),
    }
    dns.sort();
    dns.dedup();
    ips.sort();
    ips.dedup();
    Ok((dns, ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(address: &str, dns: &[&str], ips: &[&str]) -> JoinRequest {
        JoinRequest {
            token: String::new(),
            address: address.into(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_joining_node_is_named_by_its_address_and_what_it_asked_for() {
        let (dns, ips) = joining_names(&request(
            "node2.example:8443",
            &["b.example"],
            &["10.0.0.2"],
        ))
        .unwrap();
        assert_eq!(dns, ["b.example", "localhost", "node2.example"]);
        assert_eq!(
            ips,
            [
                "10.0.0.2".parse::<std::net::IpAddr>().unwrap(),
                [127, 0, 0, 1].into()
            ]
        );
        let (dns, ips) = joining_names(&request("[::1]:9000", &[], &["127.0.0.1"])).unwrap();
        assert_eq!(dns, ["localhost"]);
        assert_eq!(ips.len(), 2, "{ips:?}");
        for bad in ["node2", ":8443", "node2:0", "node2:x"] {
            assert!(joining_names(&request(bad, &[], &[])).is_err(), "{bad}");
        }
    }
}

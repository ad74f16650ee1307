//! Clusters: who the nodes are, how a node joins, and the node-to-node channel.
//!
//! - **Cluster state** is derived from the ledger like users are: join tokens from
//!   [`tables::JOIN_TOKENS`] (only a token's SHA-256 is recorded) and nodes from CCF's
//!   `public:ccf.gov.nodes.info`, whose records carry Vellum's Raft id and node-to-node address
//!   next to CCF's `status` (`Trusted`, `Retired`).
//! - **Joining.** An Administrator or a member creates a one-time token
//!   (`vellum-join.<secret>.<service certificate SHA-256>`). The new node fetches the service
//!   certificate, checks it against the token, then calls `POST /node/join` over mutual TLS
//!   with a self-signed certificate for its new key. The primary checks the token, endorses that
//!   key with the service key, records the node and spends the token in one transaction, and
//!   answers with the service key and the ledger secret. The new node then starts with an empty
//!   ledger; the primary adds it as a learner, replicates the whole ledger to it and makes it a
//!   voter.
//! - **The channel.** Raft messages and forwarded writes travel as postcard-encoded bodies over
//!   HTTPS on the API listener (`/node/...`), with mutual TLS: both ends present node
//!   certificates. A node accepts only the exact certificate the ledger records for a
//!   `Trusted` node (a node that has not caught up, those it was told of at admission); the
//!   calling side accepts a certificate the service key endorsed. A backup forwards typed
//!   operations with their caller ([`crate::ops`]), never write sets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vellum_core::crypto::Certificate;
use vellum_core::entry::{EntryBuilder, MapWrites};
pub use vellum_core::tables::TokenRecord;
use vellum_core::tables::{self, NodeInfo, NodeStatus};

/// How a join token starts.
pub const TOKEN_PREFIX: &str = "vellum-join";
/// How long a join token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A node as recorded in `public:ccf.gov.nodes.info` (the schema's [`NodeInfo`]).
pub type NodeRecord = NodeInfo;

/// Nodes and unspent join tokens, as of the last applied transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Nodes by CCF node id.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Unspent tokens by hex SHA-256 of their secret.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Service-endorsed node certificates (PEM) by node id.
    #[serde(default)]
    pub certs: BTreeMap<String, String>,
}

impl ClusterState {
    /// Applies a committed write to the node or token tables (other maps are ignored).
    /// Malformed records are skipped and logged.
    pub fn apply(&mut self, m: &MapWrites) {
        if m.name == tables::NODES_INFO {
            crate::apply_records(&mut self.nodes, m, |v| tables::NODES_INFO.decode_value(v));
        } else if m.name == tables::NODES_ENDORSED_CERTIFICATES {
            crate::apply_records(&mut self.certs, m, |v| {
                tables::NODES_ENDORSED_CERTIFICATES.decode_value(v)
            });
        } else if m.name == tables::JOIN_TOKENS {
            crate::apply_records(&mut self.tokens, m, |v| tables::JOIN_TOKENS.decode_value(v));
        }
    }

    /// Whether a map is one this state follows.
    pub fn follows(name: &str) -> bool {
        name == tables::NODES_INFO
            || name == tables::NODES_ENDORSED_CERTIFICATES
            || name == tables::JOIN_TOKENS
    }

    /// The endorsed certificates (PEM), by node id, of the nodes whose status (`None`: no
    /// record) `keep` accepts.
    pub fn certs_where(
        &self,
        keep: impl Fn(Option<NodeStatus>) -> bool,
    ) -> impl Iterator<Item = (&String, &String)> {
        self.certs
            .iter()
            .filter(move |(id, _)| keep(self.nodes.get(*id).map(|n| n.status)))
    }

    /// The node id of Raft node `raft_id`.
    pub fn node_id_of(&self, raft_id: u64) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, r)| r.raft_id == Some(raft_id))
            .map(|(id, _)| id.as_str())
    }
}

/// The Raft id of a CCF node id: its first eight bytes.
pub fn raft_id_of(node_id: &str) -> Option<u64> {
    u64::from_str_radix(node_id.get(..16)?, 16).ok()
}

/// A new join token: the token, the hex SHA-256 of its secret (what the ledger records) and
/// its expiry (unix seconds).
pub fn new_token(service_cert: &Certificate, now: SystemTime) -> (String, String, u64) {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let token = format!(
        "{TOKEN_PREFIX}.{}.{}",
        hex::encode(secret),
        hex::encode(Sha256::digest(service_cert.der()))
    );
    let expires_at = unix(now) + TOKEN_LIFETIME.as_secs();
    (token, hex::encode(Sha256::digest(secret)), expires_at)
}

/// The transaction that admits a node: its endorsed certificate, its `Trusted` record, and the
/// join token spent.
pub fn admission_write_set(
    node_id: &str,
    node_cert_pem: &str,
    raft_id: u64,
    address: &str,
    token_key: &str,
) -> EntryBuilder {
    EntryBuilder::default()
        .map(tables::NODES_ENDORSED_CERTIFICATES.write(node_id, node_cert_pem))
        .map(tables::NODES_INFO.write(
            node_id,
            &NodeInfo::cluster(NodeStatus::Trusted, raft_id, address),
        ))
        .map(tables::JOIN_TOKENS.remove(token_key))
}

/// The write set that records a join token by the digest of its secret.
pub fn token_write_set(key: &str, expires_at: u64) -> EntryBuilder {
    EntryBuilder::default().map(tables::JOIN_TOKENS.write(key, &TokenRecord { expires_at }))
}

/// A join token, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the secret: the key it is recorded under.
    pub key: String,
    /// SHA-256 of the service certificate (DER) the token belongs to.
    pub service_cert_digest: [u8; 32],
}

/// Text that is not a join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a join token (expected {TOKEN_PREFIX}.<64 hex>.<64 hex>)")]
pub struct NotAJoinToken;

/// Why joining a service failed (nothing was provisioned).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The token is malformed.
    #[error(transparent)]
    Token(#[from] NotAJoinToken),
    /// The service could not be reached, or answered something else than a node would.
    #[error("{0}")]
    Unreachable(String),
    /// The service is not the one the token was made for.
    #[error("the service at {0} is not the one this join token was made for")]
    WrongService(String),
    /// The service refused to admit this node.
    #[error("the service refused to admit this node ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// The new node's identity could not be used.
    #[error("node identity: {0}")]
    Identity(String),
}

impl std::str::FromStr for JoinToken {
    type Err = NotAJoinToken;

    fn from_str(s: &str) -> Result<JoinToken, NotAJoinToken> {
        let bad = || NotAJoinToken;
        let mut parts = s.trim().split('.');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(bad());
        }
        let mut secret = [0u8; 32];
        let mut digest = [0u8; 32];
        hex::decode_to_slice(parts.next().ok_or_else(bad)?, &mut secret).map_err(|_| bad())?;
        hex::decode_to_slice(parts.next().ok_or_else(bad)?, &mut digest).map_err(|_| bad())?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(JoinToken {
            key: hex::encode(Sha256::digest(secret)),
            service_cert_digest: digest,
        })
    }
}

/// Unix seconds.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a joining node asks for (`POST /node/join`, JSON). A node asks again with the same
/// request (and key) until it is trusted: the answer is then the same as the first time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The join token (empty on a service that admits nodes by vote).
    #[serde(default)]
    pub token: String,
    /// Where other nodes will reach it (`host:port`, an address in its certificate).
    pub address: String,
    /// DNS names for its certificate (`localhost` is always added).
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP addresses for its certificate (127.0.0.1 is always added).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// A certificate signing request (PEM) for its key, naming its addresses: what the vote
    /// that trusts it endorses (CCF's `certificate_signing_request`). Needed to join by vote.
    #[serde(default)]
    pub csr: Option<String>,
}

/// The service's answer to a join request.
#[derive(Debug, Clone)]
pub enum JoinOutcome {
    /// Admitted: the node's endorsed certificate and the service's secrets.
    Admitted(Box<JoinResponse>),
    /// Recorded `Pending` (this node id): the members must trust it by proposal; ask again.
    Pending(String),
}

/// The answer to a join request that waits for a vote (`202 Accepted`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinPending {
    /// The node's id.
    pub node_id: String,
    /// `Pending`.
    pub node_status: NodeStatus,
}

/// The names a joining node's certificate gets: `localhost`, 127.0.0.1, the names and addresses
/// it asked for, and the host of its `HOST:PORT` address (a name or an address), each once.
pub fn joining_names(request: &JoinRequest) -> Result<(Vec<String>, Vec<IpAddr>), crate::Refusal> {
    let host = request
        .address
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
        .ok_or_else(|| crate::Refusal::NotHostPort(request.address.clone()))?;
    let mut dns: Vec<String> = vec!["localhost".into()];
    dns.extend(request.dns_names.iter().cloned());
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    ips.extend(request.ips.iter().copied());
    match host.parse::<IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) => dns.push(host),
    }
    dns.sort();
    dns.dedup();
    ips.sort();
    ips.dedup();
    Ok((dns, ips))
}

/// What an admitted node receives. Holds the service's secrets: sent only over mutual TLS to
/// the holder of the admitted key.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// Its CCF node id.
    pub node_id: String,
    /// Its Raft id.
    pub raft_id: u64,
    /// Its certificate, endorsed by the service key (PEM).
    pub node_cert_pem: String,
    /// The service certificate (PEM).
    pub service_cert_pem: String,
    /// The service key (PKCS#8 PEM).
    pub service_key_pem: String,
    /// The ledger secrets, as the `ledger_secret` file holds them
    /// ([`vellum_core::entry::LedgerSecrets::to_text`]).
    #[serde(alias = "ledger_secret_hex")]
    pub ledger_secrets: String,
    /// The ledger's chunk size (every node must close chunks at the same seqnos).
    pub chunk_size: u64,
    /// The transaction that admitted it.
    pub admitted_at: String,
    /// The certificates (PEM) of the service's trusted nodes when it was admitted: the node
    /// channel of a node that has not caught up yet admits these (and, once it has, exactly
    /// those the ledger records as trusted).
    #[serde(default)]
    pub trusted_node_certs: Vec<String>,
    /// The service identities a disaster recovery replaced (a node checks the signatures of
    /// their eras against them).
    #[serde(default)]
    pub previous_services: Vec<vellum_ledger::engine::PreviousService>,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("node_id", &self.node_id)
            .field("raft_id", &self.raft_id)
            .finish_non_exhaustive()
    }
}

/// A request forwarded from a backup to the primary (postcard over the node channel).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forward {
    /// Perform an operation for a caller (the primary checks the caller's rights again, and
    /// builds the write set itself: the channel never carries one).
    Op {
        /// Who asked the backup.
        caller: crate::ops::Caller,
        /// What.
        op: crate::ops::Op,
    },
    /// Answer once this node has applied `seqno` (any node serves it): the primary asks every
    /// other node after a change of users or roles, so that every node honours it on the next
    /// request.
    Applied {
        /// The transaction.
        seqno: u64,
    },
    /// Admit a node (the joining node's certificate, DER, as the backup saw it).
    Join {
        /// The request.
        request: JoinRequest,
        /// The joining node's certificate.
        cert_der: Vec<u8>,
    },
}

/// The primary's answer to a [`Forward`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Done at this transaction id (view, seqno).
    Done(u64, u64),
    /// A node was admitted.
    Joined(Box<JoinResponse>),
    /// The receiver is not the primary: nothing was done.
    NotPrimary,
    /// The request was refused (bad input): nothing was done.
    Refused(crate::Refusal),
    /// The caller (this user id) may not do this: nothing was done.
    NotAllowed(String),
    /// It failed.
    Failed(String),
    /// The write would start a collection past the limit (holds how many there are):
    /// nothing was done.
    TooManyCollections(u64),
    /// The receiver has applied the transaction asked about.
    Applied,
    /// A function ran: how it ended, and the transaction of what it wrote (none if it wrote
    /// nothing or failed).
    Ran(Option<(u64, u64)>, crate::ops::RunResult),
    /// A joining node is recorded `Pending` (its node id).
    JoinPending(String),
}

impl ForwardReply {
    /// The answer's name, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardReply::Done(..) => "Done",
            ForwardReply::Joined(_) => "Joined",
            ForwardReply::NotPrimary => "NotPrimary",
            ForwardReply::Refused(_) => "Refused",
            ForwardReply::NotAllowed(_) => "NotAllowed",
            ForwardReply::Failed(_) => "Failed",
            ForwardReply::TooManyCollections(_) => "TooManyCollections",
            ForwardReply::Applied => "Applied",
            ForwardReply::Ran(..) => "Ran",
            ForwardReply::JoinPending(_) => "JoinPending",
        }
    }
}

/// How often a node that waits for a vote asks again.
pub const JOIN_POLL: Duration = Duration::from_secs(1);

/// Asks the service at `endpoint` (`https://host:port` of any of its nodes) to admit this node,
/// and, if the service admits nodes by vote, asks again every [`JOIN_POLL`] until the members
/// trust it (or refuse it).
///
/// `identity_pem` is the new node's self-signed certificate and key: the key becomes the node
/// key. The service certificate is first fetched without verification and checked against
/// `service_cert_pem` if given, else against the digest in the token; everything after that,
/// the request and the secrets in the answer, travels over mutual TLS pinned to that
/// certificate.
pub async fn request_join(
    endpoint: &str,
    request: &JoinRequest,
    identity_pem: &str,
    service_cert_pem: Option<&str>,
) -> Result<JoinResponse, JoinError> {
    crate::server::tls::provider();
    let pinned: [u8; 32] = match service_cert_pem {
        Some(pem) => {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| JoinError::Identity(format!("the service certificate given: {e}")))?;
            Sha256::digest(cert.der()).into()
        }
        None => request.token.parse::<JoinToken>()?.service_cert_digest,
    };
    let endpoint = endpoint.trim_end_matches('/');
    let unreachable =
        |e: &dyn std::fmt::Display| JoinError::Unreachable(format!("{endpoint}: {e}"));
    let probe = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| unreachable(&e))?;
    let network: serde_json::Value = probe
        .get(format!("{endpoint}/node/network"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| JoinError::Unreachable(format!("cannot reach {endpoint}: {e}")))?
        .json()
        .await
        .map_err(|e| JoinError::Unreachable(format!("{endpoint}/node/network: {e}")))?;
    let service_pem = network
        .get("service_certificate")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            JoinError::Unreachable(format!("{endpoint} did not return a service certificate"))
        })?
        .to_owned();
    let service = Certificate::from_pem(&service_pem).map_err(|e| unreachable(&e))?;
    if Sha256::digest(service.der())[..] != pinned[..] {
        return Err(JoinError::WrongService(endpoint.to_owned()));
    }
    let identity = reqwest::Identity::from_pem(identity_pem.as_bytes())
        .map_err(|e| JoinError::Identity(e.to_string()))?;
    let root =
        reqwest::Certificate::from_pem(service_pem.as_bytes()).map_err(|e| unreachable(&e))?;
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .identity(identity)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| JoinError::Identity(e.to_string()))?;
    let mut waiting = false;
    loop {
        let sent = client
            .post(format!("{endpoint}/node/join"))
            .json(request)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            // Once recorded, a node keeps asking through a change of primary.
            Err(e) if waiting => {
                tracing::warn!(error = %e, "asking again to be admitted");
                tokio::time::sleep(JOIN_POLL).await;
                continue;
            }
            Err(e) => {
                return Err(JoinError::Unreachable(format!(
                    "joining through {endpoint}: {e}"
                )));
            }
        };
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| unreachable(&e))?;
        if status == reqwest::StatusCode::ACCEPTED {
            let pending: JoinPending =
                serde_json::from_slice(&body).map_err(|e| unreachable(&e))?;
            if !waiting {
                tracing::info!(
                    node_id = %pending.node_id,
                    "waiting for the members to trust this node (a transition_node_to_trusted proposal)"
                );
                waiting = true;
            }
            tokio::time::sleep(JOIN_POLL).await;
            continue;
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            if waiting && status.is_server_error() {
                tracing::warn!(%status, %message, "asking again to be admitted");
                tokio::time::sleep(JOIN_POLL).await;
                continue;
            }
            return Err(JoinError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        let joined: JoinResponse = serde_json::from_slice(&body).map_err(|e| unreachable(&e))?;
        if joined.service_cert_pem.trim() != service_pem.trim() {
            return Err(JoinError::WrongService(endpoint.to_owned()));
        }
        return Ok(joined);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use vellum_ledger::identity::Identity;

    #[test]
    fn tokens_round_trip_and_pin_the_service() {
        let now = SystemTime::now();
        let service = Identity::service("s", now, 1).unwrap();
        let (token, key, expires_at) = new_token(&service.cert, now);
        let ws = token_write_set(&key, expires_at);
        let parsed: JoinToken = token.parse().unwrap();
        assert_eq!(
            parsed.service_cert_digest[..],
            Sha256::digest(service.cert.der())[..]
        );
        let mut state = ClusterState::default();
        state.apply(&ws.maps[0]);
        let rec = state.tokens.get(&parsed.key).unwrap();
        assert!(rec.expires_at > unix(now));
        // The ledger holds the hash of the secret, never the secret.
        let secret = token.split('.').nth(1).unwrap();
        assert!(!String::from_utf8_lossy(&ws.maps[0].writes[0].0).contains(secret));
        for bad in [
            "",
            "vellum-join",
            "vellum-join.00.11",
            &token.replace("vellum-join", "other"),
            &format!("{token}.x"),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn node_records_follow_nodes_info() {
        let mut state = ClusterState::default();
        let id = "ab".repeat(32);
        state.apply(&MapWrites::with_writes(
            tables::NODES_INFO,
            vec![tables::NODES_INFO.entry(
                &id,
                &NodeInfo::cluster(NodeStatus::Trusted, 7, "127.0.0.1:9"),
            )],
        ));
        assert_eq!(state.node_id_of(7), Some(id.as_str()));
        assert_eq!(raft_id_of(&id), Some(0xabababababababab));
        // CCF's own genesis record (no Raft id) is read too.
        state.apply(&MapWrites::with_writes(
            tables::NODES_INFO,
            vec![(
                b"cd".to_vec(),
                br#"{"status":"Trusted","code_digest":"00"}"#.to_vec(),
            )],
        ));
        assert_eq!(state.nodes.len(), 2);
        state.apply(&MapWrites {
            name: tables::NODES_INFO.into(),
            writes: vec![],
            removes: vec![id.into_bytes()],
        });
        assert_eq!(state.nodes.len(), 1);
    }

    fn request(address: &str, dns: &[&str], ips: &[&str]) -> JoinRequest {
        JoinRequest {
            token: String::new(),
            address: address.into(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            csr: None,
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

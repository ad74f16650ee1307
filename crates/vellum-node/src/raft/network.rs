//! The node-to-node transport: Raft's AppendEntries and Vote as postcard bodies over HTTPS with
//! mutual TLS (see [`crate::cluster`]). Each node presents its service-endorsed certificate and
//! trusts only the service certificate, so a peer is any holder of an endorsed node key.
//!
//! Snapshots are never sent: the ledger is never compacted (log purges are ignored), so a node
//! that is behind always catches up from the ledger itself.

use std::future::Future;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Node, NodeId, TypeConfig, Vote};

/// Path of Raft's AppendEntries on the node channel.
pub const APPEND_PATH: &str = "/node/raft/append";
/// Path of Raft's Vote.
pub const VOTE_PATH: &str = "/node/raft/vote";
/// Path of forwarded requests.
pub const FORWARD_PATH: &str = "/node/forward";
/// The content type of node-channel bodies.
pub const CONTENT_TYPE: &str = "application/x-vellum-postcard";

/// A peer's Raft answer to AppendEntries or Vote: Raft's response, or why its Raft refused the
/// call (openraft's error, as text: its error types are not meant for the wire).
pub type RaftAnswer<T> = Result<T, RaftRefused>;

/// Why a peer's Raft refused a call.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct RaftRefused(pub String);

/// Why a node-channel call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made (nothing was sent).
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    /// The call failed after the request may have been sent.
    #[error("call to {0} failed: {1}")]
    Call(String, String),
    /// The peer answered with an error.
    #[error("{0} answered {1}: {2}")]
    Status(String, u16, String),
    /// The body could not be encoded or decoded.
    #[error("node channel encoding: {0}")]
    Codec(String),
}

/// An HTTPS client for the node channel: it presents this node's certificate and trusts the
/// service's certificates (the current one and those it had before, so that a peer that has not
/// yet taken a rotation still answers); rebuilt when the service identity changes.
#[derive(Clone, Debug)]
pub struct PeerClient {
    identity: std::sync::Arc<crate::identity::LiveIdentity>,
    node_key_pem: std::sync::Arc<zeroize::Zeroizing<String>>,
    http: std::sync::Arc<std::sync::Mutex<(u64, reqwest::Client)>>,
}

impl PeerClient {
    /// A client presenting this node's certificate (from `identity`) with `node_key_pem`.
    pub fn new(
        identity: std::sync::Arc<crate::identity::LiveIdentity>,
        node_key_pem: &str,
    ) -> Result<PeerClient, crate::server::tls::TlsError> {
        let http = Self::build(&identity, node_key_pem)?;
        Ok(PeerClient {
            http: std::sync::Arc::new(std::sync::Mutex::new((identity.generation(), http))),
            identity,
            node_key_pem: std::sync::Arc::new(zeroize::Zeroizing::new(node_key_pem.to_owned())),
        })
    }

    fn build(
        identity: &crate::identity::LiveIdentity,
        node_key_pem: &str,
    ) -> Result<reqwest::Client, crate::server::tls::TlsError> {
        use crate::server::tls::TlsError;
        crate::server::tls::provider();
        let id = identity.get();
        let identity_pem = zeroize::Zeroizing::new(format!(
            "{}{}{node_key_pem}",
            id.node_cert_pem, id.service_cert_pem
        ));
        let client_identity =
            reqwest::Identity::from_pem(identity_pem.as_bytes()).map_err(TlsError::Client)?;
        let roots = identity
            .all_service_certs()
            .iter()
            .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::Client)?;
        reqwest::Client::builder()
            .tls_certs_only(roots)
            .identity(client_identity)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(TlsError::Client)
    }

    /// The HTTPS client for the identity now.
    fn http(&self) -> reqwest::Client {
        let generation = self.identity.generation();
        let mut cached = crate::lock(&self.http);
        if cached.0 != generation {
            match Self::build(&self.identity, &self.node_key_pem) {
                Ok(c) => *cached = (generation, c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot take the new service identity on the node channel")
                }
            }
        }
        cached.1.clone()
    }

    /// POSTs `body` (postcard) to `https://{addr}{path}` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let bytes = postcard::to_stdvec(body).map_err(|e| PeerError::Codec(e.to_string()))?;
        let request = self
            .http()
            .post(format!("https://{addr}{path}"))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .timeout(timeout)
            .body(bytes);
        let body = send(addr, request).await?;
        postcard::from_bytes(&body).map_err(|e| PeerError::Codec(e.to_string()))
    }

    /// GETs `https://{addr}{path}` and returns the body of a success.
    pub async fn get_bytes(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let request = self
            .http()
            .get(format!("https://{addr}{path}"))
            .timeout(timeout);
        Ok(send(addr, request).await?.to_vec())
    }
}

/// Sends `request` to `addr`; the body of a success, or why not.
async fn send(
    addr: &str,
    request: reqwest::RequestBuilder,
) -> Result<axum::body::Bytes, PeerError> {
    let resp = request.send().await.map_err(|e| {
        if e.is_connect() {
            PeerError::Connect(addr.to_owned(), error_chain(&e))
        } else {
            PeerError::Call(addr.to_owned(), error_chain(&e))
        }
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| PeerError::Call(addr.to_owned(), error_chain(&e)))?;
    if !status.is_success() {
        return Err(PeerError::Status(
            addr.to_owned(),
            status.as_u16(),
            String::from_utf8_lossy(&body).chars().take(300).collect(),
        ));
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Builds [`Peer`] clients.
#[derive(Debug, Clone)]
pub struct PeerNetworkFactory {
    client: PeerClient,
}

impl PeerNetworkFactory {
    /// A factory over `client`.
    pub fn new(client: PeerClient) -> PeerNetworkFactory {
        PeerNetworkFactory { client }
    }
}

/// The Raft client for one peer.
#[derive(Debug)]
pub struct Peer {
    client: PeerClient,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Peer {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        // The peer answers `Ok(response)` or `Err(message)` when its Raft refused the call.
        let r: RaftAnswer<Resp> =
            self.client
                .call(&self.addr, path, req, option.hard_ttl())
                .await
                .map_err(|e| match e {
                    PeerError::Connect(..) => RPCError::Unreachable(Unreachable::from_string(
                        format!("node {}: {e}", self.target),
                    )),
                    other => RPCError::Network(NetworkError::from_string(format!(
                        "node {}: {other}",
                        self.target
                    ))),
                })?;
        r.map_err(|RaftRefused(m)| {
            RPCError::Network(NetworkError::from_string(format!(
                "node {} refused: {m}",
                self.target
            )))
        })
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(APPEND_PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(VOTE_PATH, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(Unreachable::from_string(
            "snapshots are never sent: followers catch up from the ledger",
        )))
    }
}

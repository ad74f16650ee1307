//! Governance as a consortium member, in CCF's protocol (`/gov`, api-version `2024-07-01`): a
//! Vellum service or any CCF service. Requests that change anything are COSE_Sign1 envelopes
//! signed with the member's key ([`Member`]); reads need no credential.
//!
//! ```no_run
//! # async fn demo() -> vellum_client::Result<()> {
//! use vellum_client::governance::{GovernanceClient, Member};
//!
//! let gov = GovernanceClient::new("https://127.0.0.1:8443", &std::fs::read_to_string("service_cert.pem")?)?;
//! let me = Member::from_pem(
//!     &std::fs::read_to_string("member0_cert.pem")?,
//!     &std::fs::read_to_string("member0_key.pem")?,
//! )?;
//! gov.ack(&me).await?; // Accepted -> Active
//! let proposal = serde_json::json!({"actions": [{"name": "set_constitution",
//!     "args": {"constitution": std::fs::read_to_string("constitution.js")?}}]});
//! let p = gov.propose(&me, &proposal).await?;
//! let id = p["proposalId"].as_str().unwrap_or_default();
//! gov.vote(&me, id, true).await?;
//! # Ok(()) }
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vellum_core::crypto::{Certificate, SigningKey};
use vellum_core::gov::{Envelope, MsgType};

use crate::error::{Error, ErrorKind, Result};

/// The api-version of CCF's governance API.
pub const GOV_API_VERSION: &str = "2024-07-01";

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::with_source(ErrorKind::InvalidArgument, "reading a file", e)
    }
}

/// A consortium member: its certificate and private key (P-384 or P-256, PEM), which signs its
/// requests.
#[derive(Clone)]
pub struct Member {
    key: SigningKey,
    cert: Certificate,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id()).finish()
    }
}

impl Member {
    /// A member from its certificate and PKCS#8 private key, both PEM (each may be a file
    /// holding both, as `vellum keygen` writes them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Member> {
        let cert = Certificate::from_pem(cert_pem)
            .map_err(|e| Error::with_source(ErrorKind::Credential, "the member certificate", e))?;
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let key_pem = match (key_pem.find(BEGIN), key_pem.find(END)) {
            (Some(b), Some(e)) if e > b => &key_pem[b..e + END.len()],
            _ => key_pem,
        };
        let key = SigningKey::from_pkcs8_pem(key_pem)
            .map_err(|e| Error::with_source(ErrorKind::Credential, "the member key", e))?;
        if key.public_key().spki_der() != cert.spki_der() {
            return Err(Error::new(
                ErrorKind::Credential,
                "the member key is not the certificate's",
            ));
        }
        Ok(Member { key, cert })
    }

    /// The member id: hex SHA-256 of the certificate.
    pub fn id(&self) -> String {
        self.cert.id()
    }

    /// The member certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert.to_pem()
    }

    /// A signed request of type `msg` carrying `body`.
    pub fn sign(&self, msg: MsgType, proposal_id: Option<&str>, body: &[u8]) -> Result<Vec<u8>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Envelope::sign(
            msg,
            i64::try_from(now).unwrap_or(i64::MAX),
            proposal_id,
            body,
            &self.key,
            &self.cert,
        )
        .map_err(|e| Error::with_source(ErrorKind::Credential, "signing the request", e))
    }
}

/// A client of a service's governance API.
#[derive(Clone, Debug)]
pub struct GovernanceClient {
    endpoint: String,
    http: reqwest::Client,
}

/// A ballot that votes `yes` for (or against) whatever it is given.
fn ballot(yes: bool) -> String {
    format!("export function vote (proposal, proposerId) {{ return {yes} }}")
}

impl GovernanceClient {
    /// A client of the service at `endpoint`, trusting only `service_cert_pem`.
    pub fn new(endpoint: &str, service_cert_pem: &str) -> Result<GovernanceClient> {
        let certs =
            reqwest::Certificate::from_pem_bundle(service_cert_pem.as_bytes()).map_err(|e| {
                Error::with_source(ErrorKind::InvalidArgument, "service certificate", e)
            })?;
        let http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .build()
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "HTTPS client", e))?;
        Ok(GovernanceClient {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={GOV_API_VERSION}", self.endpoint)
    }

    async fn answer(r: reqwest::Response) -> Result<Value> {
        let status = r.status().as_u16();
        let body = r
            .bytes()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Connection, "reading the answer", e))?;
        if !(200..300).contains(&status) {
            return Err(Error::from_response(status, &body));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Connection, path.to_owned(), e))?;
        Self::answer(r).await
    }

    async fn post(&self, path: &str, envelope: Vec<u8>) -> Result<Value> {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/cose")
            .body(envelope)
            .send()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Connection, path.to_owned(), e))?;
        Self::answer(r).await
    }

    /// The consortium's members (`{"value": [...]}`'s items).
    pub async fn members(&self) -> Result<Vec<Value>> {
        Ok(self.get("/gov/service/members").await?["value"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// A member's recovery share, encrypted to its encryption key (base64), as CCF's
    /// `/gov/recovery/encrypted-shares/{memberId}` returns it.
    pub async fn encrypted_share(&self, member_id: &str) -> Result<String> {
        let v = self
            .get(&format!("/gov/recovery/encrypted-shares/{member_id}"))
            .await?;
        Ok(v["encryptedShare"].as_str().unwrap_or_default().to_owned())
    }

    /// The service's nodes (`{"value": [...]}`'s items: `nodeId`, `status`, ...), those
    /// waiting `Pending` for a vote included.
    pub async fn nodes(&self) -> Result<Vec<Value>> {
        Ok(self.get("/gov/service/nodes").await?["value"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The constitution's source.
    pub async fn constitution(&self) -> Result<String> {
        let v = self.get("/gov/service/constitution").await?;
        Ok(v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string()))
    }

    /// Every proposal the service keeps.
    pub async fn proposals(&self) -> Result<Vec<Value>> {
        Ok(self.get("/gov/members/proposals").await?["value"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// One proposal's state.
    pub async fn proposal(&self, id: &str) -> Result<Value> {
        self.get(&format!("/gov/members/proposals/{id}")).await
    }

    /// One proposal's actions, as proposed.
    pub async fn proposal_actions(&self, id: &str) -> Result<Value> {
        self.get(&format!("/gov/members/proposals/{id}/actions"))
            .await
    }

    /// Acknowledges the service's current state as `member` (asks for the state digest, then
    /// signs it back): an `Accepted` member becomes `Active`.
    pub async fn ack(&self, member: &Member) -> Result<()> {
        let id = member.id();
        let update = format!("/gov/members/state-digests/{id}:update");
        // A service that has just started may not have signed anything yet: it says so, and
        // signs within moments.
        let mut tries = 0;
        let digest = loop {
            match self
                .post(&update, member.sign(MsgType::StateDigest, None, b"{}")?)
                .await
            {
                Err(e) if e.message().contains("no signatures") && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let digest = digest["stateDigest"].as_str().unwrap_or_default();
        let body = serde_json::json!({ "stateDigest": digest }).to_string();
        self.post(
            &format!("/gov/members/state-digests/{id}:ack"),
            member.sign(MsgType::Ack, None, body.as_bytes())?,
        )
        .await?;
        Ok(())
    }

    /// Submits `proposal` (`{"actions": [...]}`) as `member`; the proposal's state.
    pub async fn propose(&self, member: &Member, proposal: &Value) -> Result<Value> {
        let body = proposal.to_string();
        self.post(
            "/gov/members/proposals:create",
            member.sign(MsgType::Proposal, None, body.as_bytes())?,
        )
        .await
    }

    /// Votes for (or against) proposal `id` as `member`; the proposal's state after it.
    pub async fn vote(&self, member: &Member, id: &str, yes: bool) -> Result<Value> {
        let body = serde_json::json!({ "ballot": ballot(yes) }).to_string();
        self.post(
            &format!("/gov/members/proposals/{id}/ballots/{}:submit", member.id()),
            member.sign(MsgType::Ballot, Some(id), body.as_bytes())?,
        )
        .await
    }

    /// Submits `member`'s decrypted recovery share to a service being recovered (CCF's
    /// `/gov/recovery/members/{memberId}:recover`); the service's answer (`{"message": "1/2
    /// recovery shares successfully submitted."}`).
    pub async fn submit_recovery_share(&self, member: &Member, share: &[u8]) -> Result<Value> {
        use base64::Engine as _;
        let body = serde_json::json!({
            "share": base64::engine::general_purpose::STANDARD.encode(share)
        })
        .to_string();
        self.post(
            &format!("/gov/recovery/members/{}:recover", member.id()),
            member.sign(MsgType::RecoveryShare, None, body.as_bytes())?,
        )
        .await
    }

    /// Withdraws proposal `id`, which `member` made.
    pub async fn withdraw(&self, member: &Member, id: &str) -> Result<Value> {
        self.post(
            &format!("/gov/members/proposals/{id}:withdraw"),
            member.sign(MsgType::Withdrawal, Some(id), b"")?,
        )
        .await
    }
}

//! Governance requests as CCF's members send them (api-version `2024-07-01`): a COSE_Sign1
//! whose embedded payload is the request body (a proposal, a ballot, ...), signed with the
//! member's key, with CCF's protected headers (`ccf-notes.md` §9):
//!
//! | label | value |
//! |---|---|
//! | `1` (alg) | the member key's algorithm (ES256 or ES384) |
//! | `4` (kid) | the member id: hex SHA-256 of the member certificate's DER, as a byte string |
//! | `"ccf.gov.msg.type"` | `proposal`, `ballot`, `withdrawal`, `ack`, `state_digest`, `recovery_share`, `encrypted_recovery_share` |
//! | `"ccf.gov.msg.created_at"` | seconds since the epoch, an integer |
//! | `"ccf.gov.msg.proposal_id"` | the proposal a ballot or withdrawal is about |
//!
//! [`Envelope::parse`] reads and checks the shape; [`Envelope::verify`] checks the signature
//! against the member's certificate. Who may send what, replays and freshness are the
//! node's (they depend on the ledger's state).
//!
//! ```
//! use vellum_core::gov::{Envelope, GovError};
//!
//! // Not CBOR at all: refused before any key is looked up.
//! assert!(matches!(Envelope::parse(b"{}"), Err(GovError::Malformed(_))));
//! ```

use ciborium::value::Value;

use ciborium::value::Integer;

use crate::cose::{self, CoseError, header_int, header_text};
use crate::crypto::{Certificate, CryptoError, SigningKey};

/// What a governance request asks (`ccf.gov.msg.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// Submit a proposal (`POST /gov/members/proposals:create`).
    Proposal,
    /// Vote on a proposal (`POST /gov/members/proposals/{id}/ballots/{member}:submit`).
    Ballot,
    /// Withdraw one's own proposal (`POST /gov/members/proposals/{id}:withdraw`).
    Withdrawal,
    /// Acknowledge the state digest (`POST /gov/members/state-digests/{member}:ack`).
    Ack,
    /// Ask for the state digest to acknowledge (`POST .../state-digests/{member}:update`).
    StateDigest,
    /// Submit a recovery share (plain).
    RecoveryShare,
    /// Submit a recovery share (encrypted).
    EncryptedRecoveryShare,
}

impl MsgType {
    /// CCF's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Proposal => "proposal",
            MsgType::Ballot => "ballot",
            MsgType::Withdrawal => "withdrawal",
            MsgType::Ack => "ack",
            MsgType::StateDigest => "state_digest",
            MsgType::RecoveryShare => "recovery_share",
            MsgType::EncryptedRecoveryShare => "encrypted_recovery_share",
        }
    }

    /// From CCF's name.
    pub fn from_name(name: &str) -> Option<MsgType> {
        Some(match name {
            "proposal" => MsgType::Proposal,
            "ballot" => MsgType::Ballot,
            "withdrawal" => MsgType::Withdrawal,
            "ack" => MsgType::Ack,
            "state_digest" => MsgType::StateDigest,
            "recovery_share" => MsgType::RecoveryShare,
            "encrypted_recovery_share" => MsgType::EncryptedRecoveryShare,
            _ => return None,
        })
    }

    /// Whether the message is about one proposal (and must name it).
    pub fn names_a_proposal(self) -> bool {
        matches!(self, MsgType::Ballot | MsgType::Withdrawal)
    }
}

/// Why a governance request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovError {
    /// Not a COSE_Sign1, or one without an embedded payload.
    #[error("not a governance COSE_Sign1: {0}")]
    Malformed(String),
    /// A protected header CCF requires is missing or of the wrong type.
    #[error("the COSE protected header {0}")]
    Header(String),
    /// The signer's certificate cannot check signatures (not a P-256 or P-384 key).
    #[error("the signer's key cannot be used: {0}")]
    Key(CryptoError),
    /// The `kid` is not the id of the certificate it was checked against.
    #[error("the COSE kid {kid} is not the signer's id {id}")]
    Kid {
        /// The `kid` the envelope names.
        kid: String,
        /// The certificate's id.
        id: String,
    },
    /// The algorithm is not the signer key's.
    #[error("the COSE alg {alg} is not the signer key's ({expected})")]
    Alg {
        /// The envelope's `alg`.
        alg: i64,
        /// The key's.
        expected: i64,
    },
    /// The signature does not verify.
    #[error("the COSE signature does not verify")]
    Signature,
}

impl From<CoseError> for GovError {
    fn from(e: CoseError) -> GovError {
        GovError::Malformed(e.to_string())
    }
}

/// A governance request, its shape checked, its signature not yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `ccf.gov.msg.type`.
    pub msg_type: MsgType,
    /// The signer's member id (`kid`, lower-case hex).
    pub kid: String,
    /// `alg`.
    pub alg: i64,
    /// `ccf.gov.msg.created_at`, seconds since the epoch.
    pub created_at: i64,
    /// `ccf.gov.msg.proposal_id`, for a ballot or a withdrawal.
    pub proposal_id: Option<String>,
    /// The request body (a proposal, a ballot, ...), as signed.
    pub payload: Vec<u8>,
    /// The signature, raw `r || s`.
    pub signature: Vec<u8>,
    /// The protected header as encoded (what was signed, with the payload).
    protected: Vec<u8>,
}

fn header(name: &str, what: &str) -> GovError {
    GovError::Header(format!("{name} {what}"))
}

impl Envelope {
    /// Reads a governance request: a COSE_Sign1, tagged as CCF requires, with an embedded
    /// payload and CCF's protected headers, each of the right type; a ballot or withdrawal
    /// names its proposal.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, GovError> {
        match ciborium::from_reader::<Value, _>(bytes) {
            Ok(Value::Tag(cose::TAG_COSE_SIGN1, _)) => {}
            Ok(_) => return Err(GovError::Malformed("the COSE_Sign1 is not tagged".into())),
            Err(_) => return Err(GovError::Malformed("not CBOR".into())),
        }
        let s = cose::decode_sign1(bytes)?;
        let payload = s
            .payload
            .ok_or_else(|| GovError::Malformed("the payload is detached".into()))?;
        let p = &s.protected_map;
        let alg = match header_int(p, 1) {
            Some(Value::Integer(i)) => {
                i64::try_from(*i).map_err(|_| header("alg (1)", "is out of range"))?
            }
            Some(_) => return Err(header("alg (1)", "is not an integer")),
            None => return Err(header("alg (1)", "is missing")),
        };
        // CCF's tool writes the kid as a byte string holding the hex id; a text kid is read
        // the same.
        let kid = match header_int(p, 4) {
            Some(Value::Bytes(b)) => String::from_utf8(b.clone())
                .map_err(|_| header("kid (4)", "is not a hex member id"))?,
            Some(Value::Text(t)) => t.clone(),
            Some(_) => return Err(header("kid (4)", "is not a byte string")),
            None => return Err(header("kid (4)", "is missing")),
        };
        if kid.len() != 64 || !kid.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(header("kid (4)", "is not a hex member id"));
        }
        let msg_type = match header_text(p, "ccf.gov.msg.type") {
            Some(Value::Text(t)) => MsgType::from_name(t).ok_or_else(|| {
                header(
                    "ccf.gov.msg.type",
                    &format!("names no message type ({t:?})"),
                )
            })?,
            Some(_) => return Err(header("ccf.gov.msg.type", "is not text")),
            None => return Err(header("ccf.gov.msg.type", "is missing")),
        };
        let created_at = match header_text(p, "ccf.gov.msg.created_at") {
            Some(Value::Integer(i)) => i64::try_from(*i)
                .ok()
                .filter(|t| *t >= 0)
                .ok_or_else(|| header("ccf.gov.msg.created_at", "is out of range"))?,
            Some(_) => return Err(header("ccf.gov.msg.created_at", "is not an integer")),
            None => return Err(header("ccf.gov.msg.created_at", "is missing")),
        };
        let proposal_id = match header_text(p, "ccf.gov.msg.proposal_id") {
            Some(Value::Text(t)) => Some(t.clone()),
            Some(_) => return Err(header("ccf.gov.msg.proposal_id", "is not text")),
            None if msg_type.names_a_proposal() => {
                return Err(header(
                    "ccf.gov.msg.proposal_id",
                    &format!("is missing (a {} names its proposal)", msg_type.as_str()),
                ));
            }
            None => None,
        };
        Ok(Envelope {
            msg_type,
            kid: kid.to_ascii_lowercase(),
            alg,
            created_at,
            proposal_id,
            payload,
            signature: s.signature,
            protected: s.protected,
        })
    }

    /// Signs a request as a member with `key` and its certificate `cert` (what CCF's
    /// `ccf_cose_sign1` does): a tagged COSE_Sign1 embedding `payload`, with CCF's protected
    /// headers in its tool's order (`alg`, `kid`, then the `ccf.gov.msg.*` headers).
    pub fn sign(
        msg_type: MsgType,
        created_at: i64,
        proposal_id: Option<&str>,
        payload: &[u8],
        key: &SigningKey,
        cert: &Certificate,
    ) -> Result<Vec<u8>, CryptoError> {
        let int = |i: i64| Value::Integer(Integer::from(i));
        let text = |t: &str| Value::Text(t.to_owned());
        let mut map = vec![
            (int(1), int(key.public_key().cose_alg())),
            (int(4), Value::Bytes(cert.id().into_bytes())),
            (text("ccf.gov.msg.type"), text(msg_type.as_str())),
            (text("ccf.gov.msg.created_at"), int(created_at)),
        ];
        if let Some(id) = proposal_id {
            map.push((text("ccf.gov.msg.proposal_id"), text(id)));
        }
        let mut protected = Vec::new();
        ciborium::into_writer(&Value::Map(map), &mut protected)
            .map_err(|e| CryptoError::Certificate(format!("CBOR: {e}")))?;
        let sig = key.sign_cose(&cose::sig_structure(&protected, payload))?;
        Ok(cose::encode_sign1(
            &protected,
            Vec::new(),
            Some(payload),
            &sig,
        ))
    }

    /// Checks the envelope was signed by `signer`: the `kid` is the certificate's id, the
    /// `alg` its key's, and the signature verifies over the protected header and payload.
    pub fn verify(&self, signer: &Certificate) -> Result<(), GovError> {
        let id = signer.id();
        if self.kid != id {
            return Err(GovError::Kid {
                kid: self.kid.clone(),
                id,
            });
        }
        let key = signer.public_key().map_err(GovError::Key)?;
        if self.alg != key.cose_alg() {
            return Err(GovError::Alg {
                alg: self.alg,
                expected: key.cose_alg(),
            });
        }
        key.verify_cose(
            &cose::sig_structure(&self.protected, &self.payload),
            &self.signature,
        )
        .map_err(|_| GovError::Signature)
    }
}

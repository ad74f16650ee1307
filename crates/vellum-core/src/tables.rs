//! The ledger schema: every table Vellum reads or writes, with its name and how its keys and
//! values are written. CCF's tables have CCF's names and value shapes, so CCF's own tools read
//! Vellum ledgers; Vellum's own tables are named `vellum.*`.
//!
//! A [`Table`] is a name with a key codec and a value codec:
//!
//! ```
//! use vellum_core::tables::{self, NodeInfo, NodeStatus};
//!
//! let info = NodeInfo::new(NodeStatus::Trusted);
//! let write = tables::NODES_INFO.write("ab12", &info);
//! assert_eq!(write.name, tables::NODES_INFO.name());
//! let (k, v) = &write.writes[0];
//! assert_eq!(tables::NODES_INFO.decode_key(k).unwrap(), "ab12");
//! assert_eq!(tables::NODES_INFO.decode_value(v).unwrap().status, NodeStatus::Trusted);
//! ```
//!
//! Values are written with their fields in the order CCF's JSON writer sorts them
//! (alphabetical), so a value Vellum writes is byte-for-byte what it wrote before this schema
//! existed, and a ledger's bytes never depend on a struct's field order by accident.
//!
//! The offline auditor reads these tables by name but decodes values as CCF's Python verifier
//! does (a dict, only the fields it uses): it must accept whatever CCF accepts, so it does not
//! use the typed decoders here.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::entry::{MapWrites, SINGLETON_KEY};
use base64::Engine as _;

use crate::crypto::CryptoError;
use crate::hash::Hash;
use crate::txid::TxId;

/// A table: its name, its key codec `K` and its value codec `V`.
pub struct Table<K, V> {
    name: &'static str,
    codecs: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Table<K, V> {}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl<K, V> std::fmt::Display for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A key or value that is not what its table holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}: {problem}")]
pub struct SchemaError {
    /// The table.
    pub table: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// How a table's keys (or values) are written.
pub trait Codec {
    /// What is written (borrowed).
    type Item: ?Sized;
    /// What is read.
    type Owned;
    /// The bytes of `item`.
    fn encode(item: &Self::Item) -> Vec<u8>;
    /// `bytes` read back; `Err` says what is wrong.
    fn decode(bytes: &[u8]) -> Result<Self::Owned, String>;
}

/// UTF-8 text as it is: ids as keys (node, member and user ids, collection ids, digests), PEM
/// certificates as values.
#[derive(Debug)]
pub enum Utf8 {}

/// Keys that are text ids.
pub type Id = Utf8;
/// Values that are text as it is (PEM certificates).
pub type Text = Utf8;

impl Codec for Utf8 {
    type Item = str;
    type Owned = String;
    fn encode(item: &str) -> Vec<u8> {
        item.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".into())
    }
}

/// The one key of a singleton table: CCF's eight zero bytes.
#[derive(Debug)]
pub enum Singleton {}

impl Codec for Singleton {
    type Item = ();
    type Owned = ();
    fn encode(_: &()) -> Vec<u8> {
        SINGLETON_KEY.to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<(), String> {
        if bytes == SINGLETON_KEY {
            Ok(())
        } else {
            Err("not the singleton key".into())
        }
    }
}

/// Text written as a JSON string (the constitution, a COSE signature's base64).
#[derive(Debug)]
pub enum JsonText {}

impl Codec for JsonText {
    type Item = str;
    type Owned = String;
    fn encode(item: &str) -> Vec<u8> {
        serde_json::Value::from(item).to_string().into_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<String, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON string: {e}"))
    }
}

/// A serde type, as JSON.
#[derive(Debug)]
pub struct Json<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> Codec for Json<T> {
    type Item = T;
    type Owned = T;
    fn encode(item: &T) -> Vec<u8> {
        // Serializing these plain structs of strings, numbers and enums cannot fail.
        serde_json::to_vec(item).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Bytes whose format the module that writes them owns (the serialized Merkle tree, Raft's
/// records).
#[derive(Debug)]
pub enum Raw {}

impl Codec for Raw {
    type Item = [u8];
    type Owned = Vec<u8>;
    fn encode(item: &[u8]) -> Vec<u8> {
        item.to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}

impl<K: Codec, V: Codec> Table<K, V> {
    /// The table named `name`.
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            codecs: PhantomData,
        }
    }

    /// Its name in the ledger.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it is a public table (written in the clear).
    pub fn is_public(&self) -> bool {
        self.name.starts_with("public:")
    }

    /// One key and value, as bytes.
    pub fn entry(&self, key: &K::Item, value: &V::Item) -> (Vec<u8>, Vec<u8>) {
        (K::encode(key), V::encode(value))
    }

    /// A write of one key and value to this table.
    pub fn write(&self, key: &K::Item, value: &V::Item) -> MapWrites {
        MapWrites::with_writes(self.name, vec![self.entry(key, value)])
    }

    /// A write of several keys and values (possibly none) to this table.
    pub fn writes<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a K::Item, &'a V::Item)>,
    ) -> MapWrites
    where
        K::Item: 'a,
        V::Item: 'a,
    {
        MapWrites::with_writes(
            self.name,
            entries.into_iter().map(|(k, v)| self.entry(k, v)).collect(),
        )
    }

    /// A removal of `key` from this table.
    pub fn remove(&self, key: &K::Item) -> MapWrites {
        MapWrites {
            name: self.name.into(),
            writes: Vec::new(),
            removes: vec![K::encode(key)],
        }
    }

    /// A key read back.
    pub fn decode_key(&self, bytes: &[u8]) -> Result<K::Owned, SchemaError> {
        K::decode(bytes).map_err(|problem| SchemaError {
            table: self.name,
            problem,
        })
    }

    /// A value read back.
    pub fn decode_value(&self, bytes: &[u8]) -> Result<V::Owned, SchemaError> {
        V::decode(bytes).map_err(|problem| SchemaError {
            table: self.name,
            problem,
        })
    }

    /// This table's writes among `maps`, if a write set has any.
    pub fn find<'m>(&self, maps: &'m [MapWrites]) -> Option<&'m MapWrites> {
        maps.iter().find(|m| m.name == self.name)
    }

    /// The (first) value a write set writes to this table, read back: a singleton's value.
    /// `None` if it writes none, or one that does not decode.
    pub fn written(&self, maps: &[MapWrites]) -> Option<V::Owned> {
        let (_, v) = self.find(maps)?.writes.first()?;
        self.decode_value(v).ok()
    }

    /// The value a write set writes to this table at `key` (encoded), read back.
    pub fn written_at(&self, maps: &[MapWrites], key: &[u8]) -> Option<V::Owned> {
        let (_, v) = self.find(maps)?.writes.iter().find(|(k, _)| k == key)?;
        self.decode_value(v).ok()
    }
}

impl<K, V> From<Table<K, V>> for String {
    fn from(t: Table<K, V>) -> String {
        t.name.to_owned()
    }
}

impl<K, V> PartialEq<Table<K, V>> for str {
    fn eq(&self, t: &Table<K, V>) -> bool {
        self == t.name
    }
}

impl<K, V> PartialEq<Table<K, V>> for &str {
    fn eq(&self, t: &Table<K, V>) -> bool {
        *self == t.name
    }
}

impl<K, V> PartialEq<Table<K, V>> for String {
    fn eq(&self, t: &Table<K, V>) -> bool {
        self == t.name
    }
}

// CCF's tables.

/// The primary node's signature over the Merkle root.
pub const SIGNATURES: Table<Singleton, Json<SignatureRecord>> =
    Table::new("public:ccf.internal.signatures");
/// COSE_Sign1 over the root by the service key (a JSON string of base64).
pub const COSE_SIGNATURES: Table<Singleton, JsonText> =
    Table::new("public:ccf.internal.cose_signatures");
/// The serialized Merkle tree up to the signature (its format: [`crate::merkle`]).
pub const TREE: Table<Singleton, Raw> = Table::new("public:ccf.internal.tree");
/// At each rekey (CCF's): the previous ledger secret, sealed under the new one, and the seqno it
/// applied from. Whoever holds the latest secret walks the chain back to the first.
pub const HISTORICAL_LEDGER_SECRET: Table<Singleton, Json<EncryptedLedgerSecretInfo>> =
    Table::new("public:ccf.internal.historical_encrypted_ledger_secret");
/// At each rekey (Vellum's, where CCF has `encrypted_ledger_secrets`): the new ledger secret
/// sealed to each trusted node's key, by node id. A node takes its copy when it appends the
/// rekey transaction and seals what follows under it.
pub const LEDGER_SECRET_FOR_NODES: Table<Id, Json<SecretForNode>> =
    Table::new("public:vellum.internal.ledger_secret_for_nodes");
/// Beside each issue of [`RECOVERY_SHARES`] (Vellum's): SHA-256 (hex) of each member's share,
/// by member id, so that a recovering service names a wrong share when it is submitted.
pub const RECOVERY_SHARE_DIGESTS: Table<
    Singleton,
    Json<std::collections::BTreeMap<String, String>>,
> = Table::new("public:vellum.internal.recovery_share_digests");
/// Previous service identities (Vellum's; written by a disaster recovery): each previous
/// service certificate (PEM) by the last seqno it signed for.
pub const PREVIOUS_SERVICE_IDENTITIES: Table<Id, Json<PreviousIdentity>> =
    Table::new("public:vellum.internal.previous_service_identities");
/// At a service identity rotation (Vellum's): the new service key (PKCS#8 PEM) sealed to each
/// trusted node's key, by node id, as [`LEDGER_SECRET_FOR_NODES`] carries a rekey's secret.
pub const SERVICE_KEY_FOR_NODES: Table<Id, Json<SecretForNode>> =
    Table::new("public:vellum.internal.service_key_for_nodes");
/// Recovery shares (CCF's): the latest ledger secret wrapped by a key that is split among the
/// recovery members, each share encrypted to its member.
pub const RECOVERY_SHARES: Table<Singleton, Json<RecoverySharesInfo>> =
    Table::new("public:ccf.internal.recovery_shares");
/// The service's certificate and status.
pub const SERVICE_INFO: Table<Singleton, Json<ServiceInfo>> =
    Table::new("public:ccf.gov.service.info");
/// The service's configuration (CCF's: consensus, recovery threshold, certificate limits).
pub const SERVICE_CONFIG: Table<Singleton, Json<ServiceConfiguration>> =
    Table::new("public:ccf.gov.service.config");
/// Nodes by node id (hex SHA-256 of the node key).
pub const NODES_INFO: Table<Id, Json<NodeInfo>> = Table::new("public:ccf.gov.nodes.info");
/// Service-endorsed node certificates (PEM) by node id.
pub const NODES_ENDORSED_CERTIFICATES: Table<Id, Text> =
    Table::new("public:ccf.gov.nodes.endorsed_certificates");
/// Member certificates (PEM) by member id.
pub const MEMBERS_CERTS: Table<Id, Text> = Table::new("public:ccf.gov.members.certs");
/// Members by member id.
pub const MEMBERS_INFO: Table<Id, Json<MemberInfo>> = Table::new("public:ccf.gov.members.info");
/// The constitution's JavaScript source.
pub const CONSTITUTION: Table<Singleton, JsonText> = Table::new("public:ccf.gov.constitution");
/// Members' RSA public encryption keys (PEM) by member id (recovery shares are encrypted to
/// them).
pub const MEMBERS_ENCRYPTION_PUBLIC_KEYS: Table<Id, Text> =
    Table::new("public:ccf.gov.members.encryption_public_keys");
/// Members' acknowledgements of the service state by member id.
pub const MEMBERS_ACKS: Table<Id, Json<MemberAck>> = Table::new("public:ccf.gov.members.acks");
/// Proposals by proposal id: the request body as the member signed it.
pub const PROPOSALS: Table<Id, Raw> = Table::new("public:ccf.gov.proposals");
/// Proposals' state, proposer and ballots by proposal id.
pub const PROPOSALS_INFO: Table<Id, Json<ProposalInfo>> =
    Table::new("public:ccf.gov.proposals_info");
/// The latest signed governance request of each member (base64 of the COSE_Sign1), by member
/// id.
pub const COSE_HISTORY: Table<Id, JsonText> = Table::new("public:ccf.gov.cose_history");
/// Recent proposals, for replay protection: key `CREATED_AT:SHA256(signature)` (created_at
/// as 10 decimal digits), value the proposal id.
pub const COSE_RECENT_PROPOSALS: Table<Id, JsonText> =
    Table::new("public:ccf.gov.cose_recent_proposals");
/// Token issuers the members trust, by issuer (`iss`): the metadata of `set_jwt_issuer` (CCF's
/// `auto_refresh`, `ca_cert_bundle_name`; Vellum also reads `audiences`).
pub const JWT_ISSUERS: Table<Id, Json<serde_json::Value>> =
    Table::new("public:ccf.gov.jwt.issuers");
/// Token issuers' signing keys by `kid`: a JSON list of `{"public_key": base64 of the
/// SubjectPublicKeyInfo (DER), "issuer", "constraint"?}` (CCF's `OpenIDJWKMetadata`).
pub const JWT_PUBLIC_SIGNING_KEYS: Table<Id, Json<serde_json::Value>> =
    Table::new("public:ccf.gov.jwt.public_signing_keys_metadata_v2");
/// User certificates (PEM) by CCF user id (hex SHA-256 of the certificate).
pub const USERS_CERTS: Table<Id, Text> = Table::new("public:ccf.gov.users.certs");
/// Users by CCF user id.
pub const USERS_INFO: Table<Id, Json<UserInfo>> = Table::new("public:ccf.gov.users.info");

// Vellum's tables.

/// Users and their roles by ACL user id (a certificate's fingerprint `5F:23:…`, or a token
/// user's object id): every change is a transaction, so who could do what is auditable.
pub const USERS: Table<Id, Json<UserRecord>> = Table::new("public:vellum.users");
/// Custom roles by name, with the actions each allows; every change is a transaction.
pub const ROLES: Table<Id, Json<RoleRecord>> = Table::new("public:vellum.roles");
/// User-defined functions (JavaScript modules) by id; every change is a transaction.
pub const FUNCTIONS: Table<Id, Json<FunctionRecord>> = Table::new("public:vellum.functions");
/// User-defined endpoints: the deployed app bundle (`bundle`) and its runtime options
/// (`runtime_options`), as JSON text.
pub const APP: Table<Id, Text> = Table::new("public:vellum.app");
/// Who made a change of code (a function stored or deleted, an app deployed, runtime options
/// set), written in the same transaction: key [`CHANGED_BY_KEY`], value the caller's user id
/// (`{"user_id": ...}`; none for the process embedding the node).
pub const CHANGED_BY: Table<Id, Json<ChangedBy>> = Table::new("public:vellum.changed_by");
/// The one key of [`CHANGED_BY`].
pub const CHANGED_BY_KEY: &str = "caller";

/// A record of [`CHANGED_BY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedBy {
    /// The caller's user id (a certificate fingerprint or a token's object id).
    pub user_id: String,
}
/// How the service admits a joining node (a governance setting: members change it by
/// proposal, `set_join_policy`); absent: [`Admission::Token`].
pub const JOIN_POLICY: Table<Singleton, Json<JoinPolicy>> =
    Table::new("public:vellum.gov.join_policy");

/// The record of [`JOIN_POLICY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinPolicy {
    /// What admits a node.
    pub admission: Admission,
}

/// What admits a joining node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// A one-time join token from an operator: the node is `Trusted` at once.
    #[default]
    Token,
    /// A vote: the node is recorded `Pending` until a `transition_node_to_trusted` proposal
    /// passes (CCF's flow); tokens admit no one.
    Vote,
}

/// Unspent join tokens by hex SHA-256 of their secret.
pub const JOIN_TOKENS: Table<Id, Json<TokenRecord>> = Table::new("public:vellum.join_tokens");
/// Raft's own record of a transaction (log id, membership): its format is `vellum-node`'s.
pub const RAFT: Table<Id, Raw> = Table::new("public:vellum.raft");
/// Application entries by collection id; private: sealed under the ledger secret.
pub const ENTRIES: Table<Id, Json<EntryRecord>> = Table::new("vellum.entries");

/// Whether a transaction with these public maps is a signature transaction.
pub fn is_signature<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|n| n == SIGNATURES || n == COSE_SIGNATURES)
}

/// A node's status in [`NODES_INFO`], as CCF writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NodeStatus {
    /// Joining, not yet trusted (CCF's nodes may not sign in this state).
    Pending,
    /// Part of the service.
    Trusted,
    /// Removed from the service (it may still sign until its retirement commits).
    Retired,
}

impl NodeStatus {
    /// The name CCF writes.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "Pending",
            NodeStatus::Trusted => "Trusted",
            NodeStatus::Retired => "Retired",
        }
    }

    /// From the name CCF writes.
    pub fn parse(s: &str) -> Option<NodeStatus> {
        Some(match s {
            "Pending" => NodeStatus::Pending,
            "Trusted" => NodeStatus::Trusted,
            "Retired" => NodeStatus::Retired,
            _ => return None,
        })
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for NodeStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for NodeStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The JSON value in `public:ccf.internal.signatures`. Fields are declared in alphabetical
/// order so that serde emits CCF's sorted-key compact JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// PEM of the signing node's service-endorsed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Deprecated, always 0.
    #[serde(default)]
    pub commit_seqno: u64,
    /// Deprecated, always 0.
    #[serde(default)]
    pub commit_view: u64,
    /// Deprecated, 64 zeros.
    #[serde(default)]
    pub hashed_nonce: Option<String>,
    /// Signing node id.
    pub node: String,
    /// Hex Merkle root signed.
    pub root: Hash,
    /// Seqno of the signature transaction.
    pub seqno: u64,
    /// Base64 DER ECDSA signature over the root (used as the digest).
    pub sig: String,
    /// View of the signature transaction.
    pub view: u64,
}

impl SignatureRecord {
    /// The DER signature bytes.
    pub fn sig_der(&self) -> Result<Vec<u8>, CryptoError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.sig)
            .map_err(|_| CryptoError::SignatureEncoding)
    }

    /// The transaction id the record claims.
    pub fn txid(&self) -> TxId {
        TxId::new(self.view, self.seqno)
    }
}

/// A node's record in [`NODES_INFO`]. CCF's records carry more fields (quotes, encryption
/// keys); a reader keeps those it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where other nodes reach it (`host:port`; Vellum's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Hex of the code measurement it runs ([`VIRTUAL_MEASUREMENT`] outside a TEE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    /// Its Raft id (Vellum's field; absent from CCF's records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_id: Option<u64>,
    /// Its status.
    pub status: NodeStatus,
    /// The certificate signing request (PEM) it joined with, from which a vote that trusts it
    /// makes its endorsed certificate (CCF's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_signing_request: Option<String>,
    /// The seqno of the ledger secret it was trusted under (CCF's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_secret_seqno: Option<u64>,
}

/// The measurement string of CCF's virtual (no TEE) attestation.
pub const VIRTUAL_MEASUREMENT: &str = "Insecure hard-coded virtual measurement v1";

impl NodeInfo {
    /// A node with `status` that runs Vellum's (virtual) measurement.
    pub fn new(status: NodeStatus) -> NodeInfo {
        NodeInfo {
            address: None,
            code_digest: Some(hex::encode(VIRTUAL_MEASUREMENT)),
            raft_id: None,
            status,
            certificate_signing_request: None,
            ledger_secret_seqno: None,
        }
    }

    /// A cluster node: `status`, its Raft id and address.
    pub fn cluster(status: NodeStatus, raft_id: u64, address: &str) -> NodeInfo {
        NodeInfo {
            address: Some(address.to_owned()),
            raft_id: Some(raft_id),
            ..NodeInfo::new(status)
        }
    }
}

/// The record of [`HISTORICAL_LEDGER_SECRET`], field for field and in CCF's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedLedgerSecretInfo {
    /// The secret this rekey replaced (unset when a service opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_ledger_secret: Option<PreviousLedgerSecretInfo>,
    /// Where the next secret applies from, when not this transaction's seqno + 1 (CCF sets it
    /// during recovery only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_version: Option<u64>,
}

/// The secrets of a rekeyed ledger, from the latest and the ledger's rekey records in ledger
/// order (`(seqno of the rekey transaction, record)`): each record holds the secret before it,
/// sealed under the one after, which applies from the rekey's seqno + 1.
pub fn ledger_secrets_from_chain(
    latest: crate::entry::LedgerSecret,
    records: &[(u64, EncryptedLedgerSecretInfo)],
) -> Result<crate::entry::LedgerSecrets, crate::entry::EntryError> {
    use base64::Engine as _;
    let bad = || crate::entry::EntryError::Authentication;
    let mut current = latest;
    let mut list = Vec::with_capacity(records.len() + 1);
    for (seqno, rec) in records.iter().rev() {
        let Some(prev) = &rec.previous_ledger_secret else {
            continue;
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&prev.encrypted_data)
            .map_err(|_| bad())?;
        let past = current.open_sealed(&sealed)?;
        list.push((rec.next_version.unwrap_or(seqno + 1), current));
        current = past;
    }
    list.push((0, current));
    list.reverse();
    crate::entry::LedgerSecrets::from_list(list).map_err(|_| bad())
}

/// The record of [`PREVIOUS_SERVICE_IDENTITIES`], keyed by the previous identity's certificate
/// fingerprint (hex SHA-256 of its SubjectPublicKeyInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousIdentity {
    /// The previous service certificate (PEM).
    pub cert: String,
    /// The last seqno of the ledger that identity's nodes signed; 0 in a rotation's record:
    /// that transaction's own seqno.
    pub until_seqno: u64,
}

/// The record of [`LEDGER_SECRET_FOR_NODES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretForNode {
    /// The new secret sealed to the node's P-384 key (base64; ECIES: the ephemeral public
    /// point (97 bytes, uncompressed) || AES-256-GCM ciphertext || tag, the AES key from
    /// HKDF-SHA256 over the ECDH secret).
    pub encrypted_secret: String,
}

/// A past ledger secret in [`EncryptedLedgerSecretInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousLedgerSecretInfo {
    /// The past secret sealed under the one that replaced it (base64; Vellum's layout:
    /// nonce (12) || ciphertext || tag, AES-256-GCM under the new secret).
    pub encrypted_data: String,
    /// The seqno the past secret applied from.
    pub version: u64,
    /// Where the secret before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_stored_version: Option<u64>,
}

/// The record of [`RECOVERY_SHARES`], field for field and in CCF's order (bytes as base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverySharesInfo {
    /// The latest ledger secret, wrapped by the wrapping key the shares make.
    pub wrapped_latest_ledger_secret: String,
    /// Each recovery member's share, encrypted to its key, by member id.
    pub encrypted_shares: std::collections::BTreeMap<String, String>,
    /// Where the previous ledger secret was recorded (after a rekey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_stored_version: Option<u64>,
}

/// The record of [`SERVICE_CONFIG`], field for field and in CCF's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfiguration {
    /// How many recovery shares recover the service.
    pub recovery_threshold: u64,
    /// `CFT` (Raft).
    pub consensus: String,
    /// The longest a node certificate may be valid.
    pub maximum_node_certificate_validity_days: u64,
    /// The longest the service certificate may be valid.
    pub maximum_service_certificate_validity_days: u64,
    /// How many recent proposals are kept for replay protection.
    pub recent_cose_proposals_window_size: u64,
}

impl Default for ServiceConfiguration {
    /// CCF's defaults.
    fn default() -> ServiceConfiguration {
        ServiceConfiguration {
            recovery_threshold: 1,
            consensus: "CFT".into(),
            maximum_node_certificate_validity_days: 365,
            maximum_service_certificate_validity_days: 365,
            recent_cose_proposals_window_size: 100,
        }
    }
}

/// The service's record in [`SERVICE_INFO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The service certificate (PEM).
    pub cert: String,
    /// Its status.
    pub status: ServiceStatus,
}

/// A service's status, as CCF names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceStatus {
    /// Started, not yet open to users.
    Opening,
    /// Open.
    Open,
    /// Recovering: waiting for members' recovery shares.
    WaitingForRecoveryShares,
    /// Recovering from a previous service's ledger.
    Recovering,
}

/// A member's record in [`MEMBERS_INFO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its status.
    pub status: MemberStatus,
}

/// A consortium member's status, as CCF names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Added, has not yet acknowledged the service state.
    Accepted,
    /// Acknowledged: may vote.
    Active,
}

/// A member's acknowledgement in [`MEMBERS_ACKS`]: the state digest it was last given, and
/// the signed ack (base64 of the COSE_Sign1) once it acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberAck {
    /// The ack, as signed (written first: CCF's JSON keys are in alphabetical order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cose_sign1_req: Option<String>,
    /// The state digest (hex), empty before the member asked for one.
    #[serde(default)]
    pub state_digest: String,
}

/// A proposal's state, as CCF names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProposalState {
    /// Collecting ballots.
    Open,
    /// Accepted and applied.
    Accepted,
    /// Withdrawn by its proposer.
    Withdrawn,
    /// Rejected by the constitution.
    Rejected,
    /// `resolve` or `apply` threw.
    Failed,
    /// Dropped (another proposal changed what it was about).
    Dropped,
}

/// Why a constitution call failed, in [`ProposalInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The error's message.
    pub reason: String,
    /// Its stack, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A proposal's record in [`PROPOSALS_INFO`], in CCF's layout: CCF's field names, in the
/// alphabetical order its JSON library writes them, absent fields left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalInfo {
    /// Ballots by member id: each a JavaScript module exporting `vote`.
    #[serde(default)]
    pub ballots: std::collections::BTreeMap<String, String>,
    /// Why `resolve` or `apply` failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// How each ballot voted, once the proposal closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_votes: Option<std::collections::BTreeMap<String, bool>>,
    /// Who proposed it.
    pub proposer_id: String,
    /// Its state.
    pub state: ProposalState,
    /// Ballots that threw, once the proposal closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_failures: Option<std::collections::BTreeMap<String, Failure>>,
}

/// A user's record in CCF's [`USERS_INFO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Application data; Vellum writes `{"role": ...}`.
    pub user_data: serde_json::Value,
}

impl UserInfo {
    /// A user with `role`.
    pub fn with_role(role: Role) -> UserInfo {
        UserInfo {
            user_data: serde_json::json!({ "role": role }),
        }
    }
}

/// A user's record in Vellum's [`USERS`]: the roles it holds, built-in or custom.
///
/// Written as `{"assignedRole": R}` when the user holds one built-in role (the only form
/// ledgers held before users could have several roles, so those bytes are unchanged) and as
/// `{"assignedRoles": [...]}` otherwise; both are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "UserRecordWire", into = "UserRecordWire")]
pub struct UserRecord {
    /// Its roles, in the order given, without repeats.
    pub roles: Vec<RoleName>,
}

impl UserRecord {
    /// A user holding one built-in role.
    pub fn with_role(role: Role) -> UserRecord {
        UserRecord {
            roles: vec![RoleName::BuiltIn(role)],
        }
    }
}

#[derive(Serialize, Deserialize)]
struct UserRecordWire {
    #[serde(
        rename = "assignedRole",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    assigned_role: Option<RoleName>,
    #[serde(
        rename = "assignedRoles",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    assigned_roles: Vec<RoleName>,
}

impl From<UserRecordWire> for UserRecord {
    fn from(w: UserRecordWire) -> UserRecord {
        let mut roles = w.assigned_roles;
        if let Some(r) = w.assigned_role
            && !roles.contains(&r)
        {
            roles.insert(0, r);
        }
        UserRecord { roles }
    }
}

impl From<UserRecord> for UserRecordWire {
    fn from(r: UserRecord) -> UserRecordWire {
        match r.roles.as_slice() {
            [one @ RoleName::BuiltIn(_)] => UserRecordWire {
                assigned_role: Some(one.clone()),
                assigned_roles: Vec::new(),
            },
            _ => UserRecordWire {
                assigned_role: None,
                assigned_roles: r.roles,
            },
        }
    }
}

/// A role a user holds: one of the three built-in roles, or a custom role by its name.
///
/// Built-in names match whatever their case (`administrator` is [`Role::Administrator`]) and
/// are written in ACL's capitalisation; custom names are case-sensitive and kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleName {
    /// Reader, Contributor or Administrator.
    BuiltIn(Role),
    /// A role defined in [`ROLES`].
    Custom(String),
}

/// The longest custom role name, in characters.
pub const MAX_ROLE_NAME_CHARS: usize = 64;

impl RoleName {
    /// Parses a role name: a built-in one in any case, or a custom one (1 to
    /// [`MAX_ROLE_NAME_CHARS`] characters, no control characters, no surrounding spaces).
    pub fn parse(s: &str) -> Result<RoleName, BadRoleName> {
        if let Some(r) = Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
        {
            return Ok(RoleName::BuiltIn(r));
        }
        if s.is_empty()
            || s.chars().count() > MAX_ROLE_NAME_CHARS
            || s.chars().any(char::is_control)
            || s.trim() != s
        {
            return Err(BadRoleName(s.to_owned()));
        }
        Ok(RoleName::Custom(s.to_owned()))
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        match self {
            RoleName::BuiltIn(r) => r.as_str(),
            RoleName::Custom(s) => s,
        }
    }

    /// The strongest built-in role among `roles`.
    pub fn strongest(roles: &[RoleName]) -> Option<Role> {
        roles
            .iter()
            .filter_map(|r| match r {
                RoleName::BuiltIn(b) => Some(*b),
                RoleName::Custom(_) => None,
            })
            .max()
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is empty, too long, or holds control characters or surrounding spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid role name {0:?}: 1 to {MAX_ROLE_NAME_CHARS} characters, no control characters, no surrounding spaces"
)]
pub struct BadRoleName(pub String);

impl Serialize for RoleName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RoleName, D::Error> {
        let s = String::deserialize(d)?;
        RoleName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A custom role's record in [`ROLES`]: the actions it allows (ACL's action strings such as
/// `Microsoft.ConfidentialLedger/ledger/read`, or an application's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// Its actions, sorted, without repeats.
    #[serde(rename = "roleActions")]
    pub actions: std::collections::BTreeSet<String>,
}

/// A user-defined function's record in [`FUNCTIONS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Its code: one ES module.
    pub code: String,
}

/// At most this many actions per custom role.
pub const MAX_ROLE_ACTIONS: usize = 256;
/// The longest action string, in characters.
pub const MAX_ACTION_CHARS: usize = 256;

/// A ledger role; each includes the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Reads entries, receipts, status and service information.
    Reader,
    /// Also writes entries.
    Contributor,
    /// Also manages users.
    Administrator,
}

impl Role {
    /// The three, weakest first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Contributor, Role::Administrator];

    /// Its name, as ACL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::Contributor => "Contributor",
            Role::Administrator => "Administrator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected Administrator, Contributor or Reader)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "Reader" => Ok(Role::Reader),
            "Contributor" => Ok(Role::Contributor),
            "Administrator" => Ok(Role::Administrator),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A join token's record in [`JOIN_TOKENS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// An application entry's record in [`ENTRIES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Its collection.
    #[serde(rename = "collectionId")]
    pub collection_id: String,
    /// Its contents.
    pub contents: String,
    /// The base64 secret key of its `LedgerEntryV1` application claim, whose digest is the
    /// transaction's claims digest (see [`EntryRecord::claim`]); absent in entries written
    /// before claims, whose claims digest is zero. Private like the rest of the record: it is
    /// revealed only in the entry's receipt.
    #[serde(rename = "secretKey", default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Its tags (secondary keys within its collection; see [`parse_tags`]); absent when none,
    /// so an untagged entry is written as before tags existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl EntryRecord {
    /// A record with a `LedgerEntryV1` claim under `key` (32 random bytes, fresh for each
    /// entry). Returns it with the claims digest to write in the transaction, computed from
    /// the key as it is (this is on every write's path: no copy of the contents).
    pub fn with_claim(
        collection_id: String,
        contents: String,
        tags: Vec<String>,
        key: &[u8; 32],
    ) -> (EntryRecord, Hash) {
        let digest =
            crate::receipt::claims_digest_of(&[crate::receipt::ledger_entry_claim_digest(
                key,
                &collection_id,
                &contents,
            )]);
        let record = EntryRecord {
            collection_id,
            contents,
            secret_key: Some(base64::engine::general_purpose::STANDARD.encode(key)),
            tags,
        };
        (record, digest)
    }

    /// Its application claim, as receipts reveal it (`None` for entries without a key).
    pub fn claim(&self) -> Option<crate::receipt::ApplicationClaim> {
        Some(crate::receipt::ApplicationClaim::LedgerEntry {
            ledger_entry: crate::receipt::LedgerEntryClaim {
                collection_id: self.collection_id.clone(),
                contents: self.contents.clone(),
                protocol: crate::receipt::LEDGER_ENTRY_V1.to_owned(),
                secret_key: self.secret_key.clone()?,
            },
        })
    }

    /// The claims digest its transaction must carry: ACL's digest of its one claim, or zero
    /// for an entry without a key. `None` if the key is not base64.
    pub fn claims_digest(&self) -> Option<Hash> {
        let Some(key) = &self.secret_key else {
            return Some(Hash::ZERO);
        };
        let key = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
        Some(crate::receipt::claims_digest_of(&[
            crate::receipt::ledger_entry_claim_digest(&key, &self.collection_id, &self.contents),
        ]))
    }
}

/// At most this many tags per entry (ACL's limit).
pub const MAX_TAGS: usize = 5;
/// At most this many characters per tag (ACL's limit).
pub const MAX_TAG_CHARS: usize = 64;

/// Why a write's tags are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// More than [`MAX_TAGS`] distinct tags.
    #[error("at most {MAX_TAGS} tags per entry; {0} given")]
    TooMany(usize),
    /// A tag longer than [`MAX_TAG_CHARS`] characters.
    #[error("tag {0:?} is longer than {MAX_TAG_CHARS} characters")]
    TooLong(String),
    /// An empty tag (`a,,b`, a trailing comma), or one holding a comma.
    #[error("empty tag, or a tag holding a comma, in {0:?}")]
    Empty(String),
    /// A tag with a control character.
    #[error("tag {0:?} holds a control character")]
    Control(String),
}

/// The tags of ACL's comma-separated `tags` parameter, as recorded: split at commas, kept
/// exactly as written (case and spaces count), a repeated tag once, in first-seen order.
/// Refused: an empty tag, a control character, a tag over [`MAX_TAG_CHARS`] characters, more
/// than [`MAX_TAGS`] distinct tags. `""` is no tags.
pub fn parse_tags(csv: &str) -> Result<Vec<String>, TagError> {
    let tags: Vec<&str> = if csv.is_empty() {
        Vec::new()
    } else {
        csv.split(',').collect()
    };
    check_tags(&tags).map_err(|e| match e {
        TagError::Empty(_) => TagError::Empty(csv.to_owned()),
        other => other,
    })
}

/// The tags of an entry as recorded, from a list: the rules of [`parse_tags`] (a tag may not
/// hold a comma, since ACL's parameter could not carry it).
pub fn check_tags<S: AsRef<str>>(given: &[S]) -> Result<Vec<String>, TagError> {
    let mut tags: Vec<String> = Vec::new();
    for t in given {
        let t = t.as_ref();
        if t.is_empty() || t.contains(',') {
            return Err(TagError::Empty(t.to_owned()));
        }
        if t.chars().count() > MAX_TAG_CHARS {
            return Err(TagError::TooLong(t.to_owned()));
        }
        if t.chars().any(char::is_control) {
            return Err(TagError::Control(t.to_owned()));
        }
        if !tags.iter().any(|have| have == t) {
            tags.push(t.to_owned());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany(tags.len()));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_statuses_are_named_as_ccf_names_them() {
        for s in [
            NodeStatus::Pending,
            NodeStatus::Trusted,
            NodeStatus::Retired,
        ] {
            assert_eq!(NodeStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert!(s == s.as_str());
        }
        assert_eq!(NodeStatus::parse("trusted"), None);
    }

    #[test]
    fn tags_are_parsed_as_acl_limits_them() {
        assert_eq!(parse_tags(""), Ok(vec![]));
        assert_eq!(
            parse_tags("b,a,b"),
            Ok(vec!["b".to_owned(), "a".to_owned()])
        );
        assert_eq!(parse_tags(" a"), Ok(vec![" a".to_owned()]));
        assert!(parse_tags("a,b,c,d,e").is_ok());
        assert_eq!(parse_tags("a,b,c,d,e,f"), Err(TagError::TooMany(6)));
        assert_eq!(
            parse_tags("a,b,c,d,e,e"),
            Ok(["a", "b", "c", "d", "e"].map(String::from).to_vec())
        );
        let long = "é".repeat(MAX_TAG_CHARS);
        assert!(parse_tags(&long).is_ok());
        assert!(matches!(
            parse_tags(&format!("{long}x")),
            Err(TagError::TooLong(_))
        ));
        assert!(matches!(parse_tags("a,,b"), Err(TagError::Empty(_))));
        assert!(matches!(parse_tags("a,"), Err(TagError::Empty(_))));
        assert!(matches!(parse_tags("a\nb"), Err(TagError::Control(_))));
    }

    #[test]
    fn an_entry_claim_digests_as_acl_documents() {
        // Microsoft's receipt documentation example (acl-2024-api.md §7).
        let key = base64::engine::general_purpose::STANDARD
            .decode("Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M=")
            .unwrap();
        let (record, digest) = EntryRecord::with_claim(
            "subledger:0".into(),
            "Hello world".into(),
            vec!["t".into()],
            &key.try_into().unwrap(),
        );
        assert_eq!(
            digest.to_hex(),
            "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6"
        );
        let bytes = ENTRIES.entry("subledger:0", &record).1;
        assert_eq!(
            bytes,
            br#"{"collectionId":"subledger:0","contents":"Hello world","secretKey":"Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M=","tags":["t"]}"#.to_vec()
        );
        assert_eq!(ENTRIES.decode_value(&bytes).unwrap(), record);
        let old = EntryRecord {
            secret_key: None,
            ..record
        };
        assert_eq!(old.claim(), None);
        assert_eq!(old.claims_digest(), Some(Hash::ZERO));
    }

    #[test]
    fn untagged_entries_are_written_as_before_tags() {
        let untagged = EntryRecord {
            collection_id: "c".into(),
            contents: "x".into(),
            secret_key: None,
            tags: vec![],
        };
        assert_eq!(
            ENTRIES
                .decode_value(&ENTRIES.entry("c", &untagged).1)
                .unwrap(),
            untagged
        );
        assert_eq!(
            ENTRIES.entry("c", &untagged).1,
            br#"{"collectionId":"c","contents":"x"}"#.to_vec()
        );
        let tagged = EntryRecord {
            tags: vec!["t".into()],
            ..untagged
        };
        assert_eq!(
            ENTRIES.entry("c", &tagged).1,
            br#"{"collectionId":"c","contents":"x","tags":["t"]}"#.to_vec()
        );
    }
}

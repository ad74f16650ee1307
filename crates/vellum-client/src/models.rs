//! What the client sends and receives, named after the seed's Python models.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vellum_core::receipt::{ApplicationClaim, Receipt};

use crate::error::{Error, ErrorKind, Result};

/// A user's role in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LedgerUserRole {
    /// Read only.
    Reader,
    /// Read and write entries.
    Contributor,
    /// Read, write, and manage users.
    Administrator,
    /// A role this client does not know (sent by a newer service).
    UnknownValue(String),
}

impl LedgerUserRole {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            LedgerUserRole::Reader => "Reader",
            LedgerUserRole::Contributor => "Contributor",
            LedgerUserRole::Administrator => "Administrator",
            LedgerUserRole::UnknownValue(s) => s,
        }
    }
}

impl fmt::Display for LedgerUserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LedgerUserRole {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<LedgerUserRole, Self::Err> {
        Ok(match s {
            "Reader" => LedgerUserRole::Reader,
            "Contributor" => LedgerUserRole::Contributor,
            "Administrator" => LedgerUserRole::Administrator,
            other => LedgerUserRole::UnknownValue(other.to_owned()),
        })
    }
}

/// Whether a transaction is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionState {
    /// Replicated to a majority and covered by a committed signature.
    Committed,
    /// Accepted, not yet committed.
    Pending,
    /// A state this client does not know.
    UnknownValue(String),
}

impl From<&str> for TransactionState {
    fn from(s: &str) -> TransactionState {
        match s {
            "Committed" => TransactionState::Committed,
            "Pending" => TransactionState::Pending,
            other => TransactionState::UnknownValue(other.to_owned()),
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// The new transaction's id (`VIEW.SEQNO`).
    pub transaction_id: String,
    /// The sub-ledger (collection) the entry went to.
    pub sub_ledger_id: String,
}

/// A ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerEntry {
    /// The transaction id: the write's for a read at an id or over a range; the version the
    /// value was read at for a read of the latest entry.
    pub transaction_id: String,
    /// The sub-ledger (collection).
    pub sub_ledger_id: String,
    /// The contents.
    pub contents: String,
}

/// A transaction's status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionStatus {
    /// The transaction id.
    pub transaction_id: String,
    /// Its state.
    pub state: TransactionState,
}

/// A transaction receipt: the Merkle proof and signature that a transaction is in the ledger.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransactionReceipt {
    /// The transaction id.
    pub transaction_id: String,
    /// The receipt as the service sent it (the inner `receipt` object).
    pub contents: serde_json::Value,
    /// Application claims, when the write recorded some.
    pub application_claims: Option<Vec<ApplicationClaim>>,
}

impl TransactionReceipt {
    /// Verifies the receipt offline against the service certificate (PEM), exactly as the
    /// Azure SDK's `verify_receipt` does: node certificate endorsed by the service, leaf from
    /// its components (and claims digest from the application claims, when present), Merkle
    /// path to the signed root, node signature.
    pub fn verify(&self, service_certificate_pem: &str) -> Result<()> {
        let r = Receipt::from_json(&self.contents)
            .map_err(|e| Error::with_source(ErrorKind::Verification, "receipt is malformed", e))?;
        r.verify(service_certificate_pem, self.application_claims.as_deref())
            .map_err(|e| Error::with_source(ErrorKind::Verification, "receipt does not verify", e))
    }
}

/// A ledger user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerUser {
    /// The user id: an Entra object id or a certificate fingerprint.
    pub id: String,
    /// The role.
    pub role: LedgerUserRole,
}

/// A ledger user with several roles (`/app/ledgerUsers`, api-version 2024-08-22-preview on):
/// built-in roles by their names (`Administrator`, `Contributor`, `Reader`) and custom roles
/// (see [`UserDefinedRole`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct LedgerUserMultipleRoles {
    /// The user id: an Entra object id or a certificate fingerprint.
    #[serde(rename = "userId")]
    pub id: String,
    /// Its roles.
    #[serde(rename = "assignedRoles")]
    pub roles: Vec<String>,
}

/// A custom role: its name and the actions it allows (ACL's action strings such as
/// `Microsoft.ConfidentialLedger/ledger/read`, or an application's own).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(try_from = "WireRoleDef")]
#[non_exhaustive]
pub struct UserDefinedRole {
    /// Its name (case-sensitive; not a built-in role's).
    #[serde(rename = "roleName")]
    pub name: String,
    /// The actions it allows.
    #[serde(rename = "roleActions")]
    pub actions: Vec<String>,
}

/// A role as services send it: camelCase (the REST specification, Python 2.0.0b2), snake_case
/// (ACL's documentation, the .NET tests), or both.
#[derive(Deserialize)]
struct WireRoleDef {
    #[serde(rename = "roleName")]
    role_name: Option<String>,
    #[serde(rename = "role_name")]
    role_name_snake: Option<String>,
    #[serde(rename = "roleActions")]
    role_actions: Option<Vec<String>>,
    #[serde(rename = "role_actions")]
    role_actions_snake: Option<Vec<String>>,
}

impl TryFrom<WireRoleDef> for UserDefinedRole {
    type Error = String;

    fn try_from(w: WireRoleDef) -> std::result::Result<UserDefinedRole, String> {
        Ok(UserDefinedRole {
            name: w
                .role_name
                .or(w.role_name_snake)
                .ok_or("a role without a name")?,
            actions: w.role_actions.or(w.role_actions_snake).unwrap_or_default(),
        })
    }
}

impl UserDefinedRole {
    /// A role named `name` allowing `actions`.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        actions: impl IntoIterator<Item = S>,
    ) -> Self {
        UserDefinedRole {
            name: name.into(),
            actions: actions.into_iter().map(Into::into).collect(),
        }
    }
}

/// A user-defined function: JavaScript (one ES module) stored in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct UserDefinedFunction {
    /// Its id.
    pub id: String,
    /// Its code.
    pub code: String,
}

/// ACL's JavaScript runtime options (`JsRuntimeOptions`): each one left `None` takes the
/// service's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JsRuntimeOptions {
    /// Heap limit, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_heap_bytes: Option<u64>,
    /// Stack limit, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_stack_bytes: Option<u64>,
    /// Time limit, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_execution_time_ms: Option<u64>,
    /// Interpreters kept for reuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cached_interpreters: Option<u64>,
    /// Log a failed run's exception on the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_exception_details: Option<bool>,
    /// Return a failed run's stack with its message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_exception_details: Option<bool>,
}

impl JsRuntimeOptions {
    /// Only a time limit.
    pub fn with_time_limit_ms(ms: u64) -> Self {
        JsRuntimeOptions {
            max_execution_time_ms: Some(ms),
            ..Default::default()
        }
    }
}

/// How to run a user-defined function (ACL's `UserDefinedFunctionExecutionProperties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FunctionRun {
    /// Its arguments, passed positionally.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// The export to call (`main` when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported_function_name: Option<String>,
    /// Limits for this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_options: Option<JsRuntimeOptions>,
}

impl FunctionRun {
    /// A run of `main` with these arguments.
    pub fn with_arguments<S: Into<String>>(arguments: impl IntoIterator<Item = S>) -> Self {
        FunctionRun {
            arguments: arguments.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// The same run, of another export.
    pub fn export(mut self, name: impl Into<String>) -> Self {
        self.exported_function_name = Some(name.into());
        self
    }

    /// The same run, with these limits.
    pub fn options(mut self, options: JsRuntimeOptions) -> Self {
        self.runtime_options = Some(options);
        self
    }
}

/// A function run in a write's transaction, before or after the entry is written (ACL's
/// `UserDefinedFunctionHook`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Hook {
    /// The function.
    pub function_id: String,
    /// How to run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<FunctionRun>,
}

impl Hook {
    /// A hook running `main` of `function_id`.
    pub fn new(function_id: impl Into<String>) -> Self {
        Hook {
            function_id: function_id.into(),
            properties: None,
        }
    }

    /// A hook running `function_id` as `run` says.
    pub fn with(function_id: impl Into<String>, run: FunctionRun) -> Self {
        Hook {
            function_id: function_id.into(),
            properties: Some(run),
        }
    }
}

/// How a run of a user-defined function ended. Either way the request succeeded: a function
/// that throws is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FunctionOutcome {
    /// It returned this value (a string as it is, `undefined` as `""`, anything else as
    /// JSON).
    Succeeded(String),
    /// It threw or hit a limit, with this message; nothing it wrote was recorded.
    Failed(String),
}

/// A run of a user-defined function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionExecution {
    /// How it ended.
    pub outcome: FunctionOutcome,
    /// The transaction id the service gave the run: the transaction that recorded what it
    /// wrote, or, for a run that wrote nothing, the last one the service had (as CCF names
    /// the state a read saw).
    pub transaction_id: Option<String>,
}

/// One module of an app bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModuleDef {
    /// Its name, as endpoints and imports name it (`endpoints/app.js`).
    pub name: String,
    /// Its source (an ES module).
    pub module: String,
}

impl ModuleDef {
    /// A module.
    pub fn new(name: impl Into<String>, module: impl Into<String>) -> Self {
        ModuleDef {
            name: name.into(),
            module: module.into(),
        }
    }
}

/// A CCF JavaScript app bundle: user-defined endpoints (`metadata.endpoints`, CCF's
/// `app.json`) and the modules that serve them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Bundle {
    /// `{"endpoints": {PATH: {VERB: {js_module, js_function, authn_policies, mode, ...}}}}`.
    pub metadata: serde_json::Value,
    /// The modules.
    pub modules: Vec<ModuleDef>,
}

impl Default for Bundle {
    /// The empty bundle: deploying it removes every endpoint.
    fn default() -> Self {
        Bundle {
            metadata: serde_json::json!({"endpoints": {}}),
            modules: Vec::new(),
        }
    }
}

impl Bundle {
    /// A bundle of `metadata` and `modules`.
    pub fn new(metadata: serde_json::Value, modules: Vec<ModuleDef>) -> Self {
        Bundle { metadata, modules }
    }

    /// A bundle from a CCF app directory: `app.json` is the metadata, every `.js` file under
    /// the directory a module. Modules are named by their path under `src/` when the
    /// directory has one and no endpoint names a module `src/...` (CCF's layout), else by
    /// their path under the directory.
    pub fn from_dir(dir: &std::path::Path) -> std::io::Result<Bundle> {
        let metadata: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("app.json"))?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let named_from_root = metadata["endpoints"]
            .as_object()
            .into_iter()
            .flat_map(|eps| eps.values())
            .filter_map(|verbs| verbs.as_object())
            .flat_map(|verbs| verbs.values())
            .filter_map(|p| p["js_module"].as_str())
            .any(|m| m.trim_start_matches('/').starts_with("src/"));
        let base = if dir.join("src").is_dir() && !named_from_root {
            dir.join("src")
        } else {
            dir.to_path_buf()
        };
        let mut modules = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "js") {
                    let name = path
                        .strip_prefix(&base)
                        .unwrap_or(&path)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    modules.push(ModuleDef::new(name, std::fs::read_to_string(&path)?));
                }
            }
        }
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Bundle { metadata, modules })
    }
}

/// A user-defined endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointResponse {
    /// Its status (2xx: anything else is an error).
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
    /// The transaction that recorded what the handler wrote (or, for a handler that wrote
    /// nothing, the last one the service had).
    pub transaction_id: Option<String>,
}

/// A consortium member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsortiumMember {
    /// The member's certificate (PEM).
    pub certificate: String,
    /// The member id (hex SHA-256 of the certificate).
    pub id: String,
}

/// The consortium.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Consortium {
    /// Its members.
    pub members: Vec<ConsortiumMember>,
}

/// The constitution.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Constitution {
    /// The JavaScript source.
    pub contents: String,
    /// The digest the service reports (hex SHA-256 of the source).
    pub digest: String,
}

impl Constitution {
    /// Checks that the digest is the SHA-256 of the contents.
    pub fn verify_digest(&self) -> Result<()> {
        let actual = hex::encode(Sha256::digest(self.contents.as_bytes()));
        if actual != self.digest.to_ascii_lowercase() {
            return Err(Error::new(
                ErrorKind::Verification,
                format!(
                    "constitution digest {} is not the SHA-256 of its contents ({actual})",
                    self.digest
                ),
            ));
        }
        Ok(())
    }
}

/// One node's enclave quote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnclaveQuote {
    /// The node id.
    pub node_id: String,
    /// The enclave measurement (for Vellum: CCF's virtual measurement, hex).
    pub mrenclave: String,
    /// The raw quote (hex).
    pub raw_quote: String,
    /// The quote format (`OE_SGX_v1`, or `Insecure_Virtual` on Vellum: there is no TEE).
    pub version: String,
}

/// The enclave quotes of every node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerEnclaves {
    /// The node that answered.
    pub source_node: String,
    /// Quotes by node id.
    pub quotes: BTreeMap<String, EnclaveQuote>,
}

/// A ledger's identity, from the identity service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerIdentity {
    /// The ledger id.
    pub ledger_id: String,
    /// The service certificate (PEM): the ledger's TLS trust anchor and receipt root of trust.
    pub ledger_tls_certificate: String,
}

// Wire forms.

#[derive(Deserialize)]
pub(crate) struct WireEntry {
    pub(crate) contents: String,
    #[serde(rename = "collectionId", alias = "subLedgerId", default)]
    pub(crate) collection_id: String,
    #[serde(rename = "transactionId", default)]
    pub(crate) transaction_id: String,
}

impl From<WireEntry> for LedgerEntry {
    fn from(w: WireEntry) -> LedgerEntry {
        LedgerEntry {
            transaction_id: w.transaction_id,
            sub_ledger_id: w.collection_id,
            contents: w.contents,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct WireRole<'a> {
    #[serde(rename = "assignedRole")]
    pub(crate) assigned_role: &'a str,
}

#[derive(Deserialize)]
pub(crate) struct WireUser {
    #[serde(rename = "assignedRole")]
    pub(crate) assigned_role: String,
    #[serde(rename = "userId")]
    pub(crate) user_id: String,
}

impl TryFrom<WireUser> for LedgerUser {
    type Error = Error;

    /// A user whose one role (in the single-role view) is a custom role cannot be shown as a
    /// [`LedgerUserRole`]: an error naming it, never a guessed built-in role.
    fn try_from(w: WireUser) -> Result<LedgerUser> {
        let role = w.assigned_role.parse().map_err(|_| {
            Error::new(
                ErrorKind::DataConversion,
                format!(
                    "user {} holds the custom role {:?}: read it with get_ledger_user",
                    w.user_id, w.assigned_role
                ),
            )
        })?;
        Ok(LedgerUser {
            id: w.user_id,
            role,
        })
    }
}

/// A node of a Vellum cluster (a Vellum extension: ACL does not list its nodes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ClusterNode {
    /// CCF node id (hex SHA-256 of its public key).
    pub node_id: String,
    /// CCF status: `Trusted` or `Retired`.
    pub status: String,
    /// `primary`, `backup`, `learner` (catching up) or `none` (out of the Raft membership).
    pub role: String,
    /// Its node-to-node address.
    #[serde(default)]
    pub address: Option<String>,
}

/// A node's health at a glance (`GET /node/health`, a Vellum extension).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    /// The node's id.
    pub node_id: String,
    /// `primary`, `backup`, `candidate`, `learner` or `stopped`.
    pub role: String,
    /// The primary's node id, as the node knows it.
    #[serde(default)]
    pub primary: Option<String>,
    /// Raft's term (the view of new transactions).
    pub term: u64,
    /// The last seqno the node's ledger holds.
    pub last_seqno: u64,
    /// The commit point: every transaction up to it is Committed.
    pub commit_seqno: u64,
    /// Transactions the node holds beyond the commit point.
    pub commit_lag: u64,
    /// The last signature's seqno.
    pub last_signed_seqno: u64,
    /// Seconds since the node appended the last signature (`None`: none since it started).
    #[serde(default)]
    pub last_signature_age_seconds: Option<f64>,
    /// On the primary: how many transactions each other node has yet to acknowledge.
    #[serde(default)]
    pub replication_lag: std::collections::BTreeMap<String, u64>,
    /// Whether the node serves (it caught up with the service after its start).
    pub ready: bool,
    /// Why the node refuses writes, if it does.
    #[serde(default)]
    pub write_error: Option<String>,
    /// The ledger directory's size in bytes.
    pub ledger_bytes: u64,
    /// Files in the ledger directory.
    pub ledger_files: u64,
    /// Free bytes on the data directory's file system.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// The newest committed snapshot's seqno.
    #[serde(default)]
    pub snapshot_seqno: Option<u64>,
    /// What the archive holds, as the node knows (`None`: no archive configured).
    #[serde(default)]
    pub archive: Option<ArchiveHealth>,
    /// On a node that started from a snapshot: the transactions before it it has yet to
    /// index, `[first, last]` (range queries over them answer `IndexLoading` until then).
    #[serde(default)]
    pub indexing: Option<[u64; 2]>,
}

/// The archive's progress in [`NodeHealth`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHealth {
    /// Committed chunks archived.
    pub chunks: u64,
    /// The last seqno of the newest chunk archived.
    pub through_seqno: u64,
    /// Committed snapshots archived.
    pub snapshots: u64,
}

/// A one-time token that admits one node to a Vellum cluster (a Vellum extension).
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct JoinToken {
    /// The token: pass it to `vellum serve --join URL --join-token TOKEN`.
    pub token: String,
    /// When it expires (unix seconds).
    pub expires_at: u64,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

//! Names of the CCF tables Vellum reads and writes (same names and value shapes as CCF, so
//! CCF's own tools read Vellum ledgers).

/// Raw node signature over the root (JSON).
pub const SIGNATURES: &str = "public:ccf.internal.signatures";
/// COSE_Sign1 over the root by the service key (JSON string of base64).
pub const COSE_SIGNATURES: &str = "public:ccf.internal.cose_signatures";
/// Serialized Merkle tree up to the signature.
pub const TREE: &str = "public:ccf.internal.tree";
/// Service info (JSON with `cert` and `status`), singleton.
pub const SERVICE_INFO: &str = "public:ccf.gov.service.info";
/// Node info (JSON with `status`), keyed by node id.
pub const NODES_INFO: &str = "public:ccf.gov.nodes.info";
/// Service-endorsed node certificates (raw PEM), keyed by node id.
pub const NODES_ENDORSED_CERTIFICATES: &str = "public:ccf.gov.nodes.endorsed_certificates";
/// Member certificates (raw PEM), keyed by member id.
pub const MEMBERS_CERTS: &str = "public:ccf.gov.members.certs";
/// Member info (JSON with `status`), keyed by member id.
pub const MEMBERS_INFO: &str = "public:ccf.gov.members.info";
/// The constitution (JSON string of the JavaScript source), singleton.
pub const CONSTITUTION: &str = "public:ccf.gov.constitution";
/// User certificates (raw PEM), keyed by user id.
pub const USERS_CERTS: &str = "public:ccf.gov.users.certs";
/// User info, keyed by user id.
pub const USERS_INFO: &str = "public:ccf.gov.users.info";

/// Whether a transaction with these public maps is a signature transaction.
pub fn is_signature<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|n| n == SIGNATURES || n == COSE_SIGNATURES)
}

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
}

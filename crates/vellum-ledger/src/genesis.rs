//! The genesis transaction: what a new service records at seqno 1, in CCF's governance tables,
//! so that `ccf.ledger` FULL verification of a Vellum ledger passes from the first transaction.

use serde_json::json;
use vellum_core::entry::{EntryBuilder, MapWrites, SINGLETON_KEY};
use vellum_core::tables::{self, NodeStatus};

/// Vellum's default constitution (JavaScript), as recorded in `public:ccf.gov.constitution`.
pub const DEFAULT_CONSTITUTION: &str = "export function validate(input) { return { valid: true }; }\n\
export function resolve(proposal, proposerId, votes) {\n  \
const yes = votes.filter((v) => v.vote).length;\n  \
return yes > 0 ? \"Accepted\" : \"Open\";\n}\n\
export function apply(proposal, proposalId) {}\n";

/// The measurement string of CCF's virtual (no TEE) attestation.
pub const VIRTUAL_MEASUREMENT: &str = "Insecure hard-coded virtual measurement v1";

/// Who and what the service starts with.
#[derive(Debug, Clone)]
pub struct Genesis<'a> {
    /// Service certificate (PEM): the trust anchor.
    pub service_cert_pem: &'a str,
    /// The first node's id (hex SHA-256 of its SPKI) and service-endorsed certificate (PEM).
    pub node: (&'a str, &'a str),
    /// Members: (member id, certificate PEM).
    pub members: Vec<(String, String)>,
    /// Users: (user id, certificate PEM or `None` for token users, role).
    pub users: Vec<(String, Option<String>, String)>,
    /// The constitution's JavaScript source.
    pub constitution: &'a str,
}

fn json_bytes(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

impl Genesis<'_> {
    /// The genesis write set (service status `Opening`).
    pub fn entry(&self) -> EntryBuilder {
        let (node_id, node_cert) = self.node;
        let mut users_certs = Vec::new();
        let mut users_info = Vec::new();
        for (id, cert, role) in &self.users {
            if let Some(c) = cert {
                users_certs.push((id.clone().into_bytes(), c.clone().into_bytes()));
            }
            users_info.push((
                id.clone().into_bytes(),
                json_bytes(json!({"user_data": {"role": role}})),
            ));
        }
        let mut b = EntryBuilder::default()
            .map(MapWrites::with_writes(
                tables::CONSTITUTION,
                vec![(SINGLETON_KEY.to_vec(), json_bytes(json!(self.constitution)))],
            ))
            .map(MapWrites::with_writes(
                tables::MEMBERS_CERTS,
                self.members.iter().map(|(id, c)| (id.clone().into_bytes(), c.clone().into_bytes())).collect(),
            ))
            .map(MapWrites::with_writes(
                tables::MEMBERS_INFO,
                self.members
                    .iter()
                    .map(|(id, _)| (id.clone().into_bytes(), json_bytes(json!({"status": "Accepted"}))))
                    .collect(),
            ))
            .map(MapWrites::with_writes(
                tables::NODES_ENDORSED_CERTIFICATES,
                vec![(node_id.as_bytes().to_vec(), node_cert.as_bytes().to_vec())],
            ))
            .map(MapWrites::with_writes(
                tables::NODES_INFO,
                vec![(
                    node_id.as_bytes().to_vec(),
                    json_bytes(json!({"status": NodeStatus::Trusted, "code_digest": hex::encode(VIRTUAL_MEASUREMENT)})),
                )],
            ))
            .map(service_info(self.service_cert_pem, "Opening"));
        if !users_certs.is_empty() {
            b = b.map(MapWrites::with_writes(tables::USERS_CERTS, users_certs));
        }
        if !users_info.is_empty() {
            b = b.map(MapWrites::with_writes(tables::USERS_INFO, users_info));
        }
        b
    }
}

/// The `public:ccf.gov.service.info` write for a status change (`Opening`, `Open`, ...).
pub fn service_info(service_cert_pem: &str, status: &str) -> MapWrites {
    MapWrites::with_writes(
        tables::SERVICE_INFO,
        vec![(
            SINGLETON_KEY.to_vec(),
            json_bytes(json!({"cert": service_cert_pem, "status": status})),
        )],
    )
}

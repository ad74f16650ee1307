//! The genesis transaction: what a new service records at seqno 1, in CCF's governance tables,
//! so that `ccf.ledger` FULL verification of a Vellum ledger passes from the first transaction.

use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::tables::{
    self, MemberInfo, MemberStatus, NodeInfo, NodeStatus, Role, ServiceInfo, ServiceStatus,
    UserInfo,
};

/// Vellum's default constitution (JavaScript), as recorded in `public:ccf.gov.constitution`:
/// CCF's `validate`, `resolve` and `apply` with CCF's action names for what Vellum supports, a
/// proposal passing once more than half of the active members vote for it.
pub const DEFAULT_CONSTITUTION: &str = include_str!("constitution.js");

/// The measurement string of CCF's virtual (no TEE) attestation.
pub use vellum_core::tables::VIRTUAL_MEASUREMENT;

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
    pub users: Vec<(String, Option<String>, Role)>,
    /// The constitution's JavaScript source.
    pub constitution: &'a str,
}

impl Genesis<'_> {
    /// The genesis write set (service status `Opening`).
    pub fn entry(&self) -> EntryBuilder {
        let (node_id, node_cert) = self.node;
        let with_cert: Vec<(&str, &str)> = self
            .users
            .iter()
            .filter_map(|(id, cert, _)| Some((id.as_str(), cert.as_deref()?)))
            .collect();
        let infos: Vec<(&str, UserInfo)> = self
            .users
            .iter()
            .map(|(id, _, role)| (id.as_str(), UserInfo::with_role(*role)))
            .collect();
        let accepted = MemberInfo {
            status: MemberStatus::Accepted,
        };
        let mut b = EntryBuilder::default()
            .map(tables::CONSTITUTION.write(&(), self.constitution))
            .map(
                tables::MEMBERS_CERTS
                    .writes(self.members.iter().map(|(id, c)| (id.as_str(), c.as_str()))),
            )
            .map(
                tables::MEMBERS_INFO
                    .writes(self.members.iter().map(|(id, _)| (id.as_str(), &accepted))),
            )
            .map(tables::NODES_ENDORSED_CERTIFICATES.write(node_id, node_cert))
            .map(tables::NODES_INFO.write(node_id, &NodeInfo::new(NodeStatus::Trusted)))
            .map(service_info(self.service_cert_pem, ServiceStatus::Opening))
            .map(tables::SERVICE_CONFIG.write(&(), &tables::ServiceConfiguration::default()));
        if !with_cert.is_empty() {
            b = b.map(tables::USERS_CERTS.writes(with_cert));
        }
        if !infos.is_empty() {
            b = b.map(tables::USERS_INFO.writes(infos.iter().map(|(id, i)| (*id, i))));
        }
        b
    }
}

/// The `public:ccf.gov.service.info` write for a status change.
pub fn service_info(service_cert_pem: &str, status: ServiceStatus) -> MapWrites {
    tables::SERVICE_INFO.write(
        &(),
        &ServiceInfo {
            cert: service_cert_pem.to_owned(),
            status,
        },
    )
}

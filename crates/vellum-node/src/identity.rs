//! The service identity a node serves under: the service certificate and key, this node's
//! certificate (endorsed by that key) and the identities the service had before. A rotation
//! (`rotate_service_identity`, see [`crate::rekey`]) replaces it while the node runs; the TLS
//! server ([`crate::server::tls::LiveCert`]) and the node channel's client
//! (`raft::network::PeerClient`) follow it by its generation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use vellum_ledger::engine::PreviousService;

/// One service identity, as a node holds it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ServiceIdentity {
    /// The service certificate (PEM): what clients pin.
    pub service_cert_pem: String,
    /// The service key (PKCS#8 PEM); empty when a PKCS#11 token keeps it.
    pub service_key_pem: String,
    /// This node's certificate, endorsed by the service key (PEM).
    pub node_cert_pem: String,
    /// The identities the service had before, oldest first, each endorsed by the current key.
    pub previous: Vec<PreviousService>,
}

impl std::fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceIdentity")
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

/// The identity a node serves under now, and how many times it changed.
#[derive(Debug)]
pub struct LiveIdentity {
    current: RwLock<Arc<ServiceIdentity>>,
    generation: AtomicU64,
}

impl LiveIdentity {
    /// Starts with `identity`.
    pub fn new(identity: ServiceIdentity) -> LiveIdentity {
        LiveIdentity {
            current: RwLock::new(Arc::new(identity)),
            generation: AtomicU64::new(0),
        }
    }

    /// The identity now.
    pub fn get(&self) -> Arc<ServiceIdentity> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times it changed (to notice a change cheaply).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces it.
    pub fn set(&self, identity: ServiceIdentity) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(identity);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Every service certificate a peer's may chain to: the current one, then the previous.
    pub fn all_service_certs(&self) -> Vec<String> {
        let id = self.get();
        let mut all = vec![id.service_cert_pem.clone()];
        all.extend(id.previous.iter().rev().map(|p| p.cert_pem.clone()));
        all
    }
}

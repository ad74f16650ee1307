//! The node's data directory: keys, certificates, the ledger secret, the ledger, the index and
//! Raft's vote.
//!
//! ```text
//! DATA/
//!   service_cert.pem        the service certificate (trust anchor clients pin)
//!   service_key.pem   0600  the service key (endorses nodes, signs COSE roots)
//!   node_cert.pem           this node's certificate, endorsed by the service key
//!   node_key.pem      0600  this node's key (signs Merkle roots)
//!   ledger_secret     0600  the ledger secrets: seal entries, derive commit evidence; one
//!                           line of hex, and after each rekey a line `FROM HEX` (the seqno
//!                           the new secret applies from: see `crate::rekey`)
//!   seal.json               (a sealed directory) how its secrets are sealed; the three files
//!                           above are then `NAME.sealed` instead (see `crate::seal`)
//!   genesis.json            the genesis write set, until the ledger holds it
//!   node.json               this node's Raft id; written last: its presence marks a
//!                           complete provisioning
//!   peers.pem               (a node that joined a service) the trusted nodes' certificates
//!                           when it was admitted
//!   previous_services.json  (a recovered service) the service identities it replaced, each
//!                           endorsed by the current one (see `crate::disaster`)
//!   ledger/                 CCF ledger chunks
//!   index.redb              the entry index (derived; rebuilt from the ledger if lost)
//!   raft/vote.json          Raft's vote
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use vellum_core::crypto::{Certificate, SigningKey, node_id_of};
use vellum_core::entry::{EntryBuilder, LedgerSecrets};
use vellum_ledger::engine::NodeKeys;
use vellum_ledger::genesis::{DEFAULT_CONSTITUTION, Genesis};
use vellum_ledger::identity::Identity;

use crate::seal::{SealKey, Sealer};
use crate::users::Role;
use crate::{DataDirError, Malformed};
use vellum_core::tables::{self, UserRecord};
use vellum_ledger::files::write_durably;

/// Who and what a new service starts with.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Service certificate common name.
    pub service_name: String,
    /// DNS names of this node (its certificate's SANs; `localhost` is always added).
    pub dns_names: Vec<String>,
    /// IP addresses of this node (SANs; 127.0.0.1 is always added).
    pub ips: Vec<IpAddr>,
    /// Consortium members: (member id, certificate PEM).
    pub members: Vec<(String, String)>,
    /// The first users.
    pub users: Vec<BootstrapUser>,
    /// The constitution (JavaScript).
    pub constitution: String,
    /// Certificate validity, days.
    pub validity_days: u64,
    /// Create an operator member (`member0_cert.pem`, `member0_key.pem`) and a bootstrap
    /// Administrator certificate user (`admin.pem`: certificate and key in one PEM, as the
    /// Python SDK's certificate credential takes it).
    pub operator_and_admin: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            service_name: "Vellum Service".into(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            members: Vec::new(),
            users: Vec::new(),
            constitution: DEFAULT_CONSTITUTION.into(),
            validity_days: 3650,
            operator_and_admin: false,
        }
    }
}

/// A user the service starts with.
#[derive(Debug, Clone)]
pub struct BootstrapUser {
    /// ACL user id: a certificate's fingerprint (`5F:23:…`) or a token user's object id.
    pub user_id: String,
    /// The certificate (PEM) of a certificate user.
    pub cert_pem: Option<String>,
    /// Its role.
    pub role: Role,
}

#[derive(Serialize, Deserialize)]
struct NodeFile {
    raft_id: u64,
    node_id: String,
    /// The service's chunk size, for a node that joined one (all nodes close chunks at the
    /// same seqnos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_size: Option<u64>,
}

impl NodeFile {
    /// Writes `node.json`, last: its presence marks a complete provisioning.
    fn write(&self, root: &Path) -> Result<(), DataDirError> {
        let path = root.join("node.json");
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| DataDirError::malformed(&path, e))?;
        write_file(&path, &bytes)
    }
}

/// A provisioned data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub root: PathBuf,
    /// The keys the node signs with.
    pub keys: NodeKeys,
    /// This node's Raft id (the first 8 bytes of its CCF node id).
    pub raft_id: u64,
    /// This node's CCF node id (hex SHA-256 of its public key).
    pub node_id: String,
    /// The genesis write set, while the ledger does not hold it yet (never, for a node that
    /// joined a service).
    pub genesis: Option<EntryBuilder>,
    /// The node key (PKCS#8 PEM).
    pub node_key_pem: String,
    /// The service key (PKCS#8 PEM).
    pub service_key_pem: String,
    /// The chunk size of the service this node joined, if it joined one.
    pub chunk_size: Option<u64>,
    /// The certificates (DER) of the trusted nodes when this node was admitted, if it joined a
    /// service (`peers.pem`).
    pub join_peers: Vec<Vec<u8>>,
    /// The directory's key-encryption key, if it is sealed.
    pub sealer: Option<std::sync::Arc<Sealer>>,
    /// The service key, when it is kept in a PKCS#11 token (`service_key_pem` is then empty).
    pub service_token: Option<std::sync::Arc<crate::hsm::TokenSigner>>,
}

/// Where a node keeps its ledger secrets: `ledger_secret` in its data directory (sealed if the
/// directory is), as [`LedgerSecrets::to_text`].
#[derive(Clone)]
pub struct SecretsFile {
    pub(crate) root: PathBuf,
    pub(crate) sealer: Option<std::sync::Arc<Sealer>>,
}

/// The name of the secrets file.
pub const SECRETS_FILE: &str = "ledger_secret";

impl SecretsFile {
    /// The secrets file of data directory `root`.
    pub fn new(root: PathBuf, sealer: Option<std::sync::Arc<Sealer>>) -> SecretsFile {
        SecretsFile { root, sealer }
    }

    /// Replaces the file durably with `secrets`.
    pub fn save(&self, secrets: &LedgerSecrets) -> Result<(), crate::seal::SealError> {
        let text = zeroize::Zeroizing::new(secrets.to_text());
        crate::seal::write_secret_file(
            &self.root,
            SECRETS_FILE,
            text.as_bytes(),
            self.sealer.as_deref(),
        )
    }
}

impl std::fmt::Debug for SecretsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsFile({})", self.root.display())
    }
}

/// Present when the service key is kept in a PKCS#11 token: the key's id (hex SHA-256 of its
/// public key), checked against the token's at each start.
pub(crate) const SERVICE_KEY_IN_TOKEN: &str = "service_key.pkcs11";

/// The service identities a disaster recovery replaced (JSON), if any.
pub(crate) const PREVIOUS_SERVICES: &str = "previous_services.json";

/// Where a joining node keeps its certificate and key until it is admitted.
const JOINING_CERT: &str = "joining_cert.pem";
const JOINING_KEY: &str = "joining_key.pem";

/// Creates the data directory and its `raft/` (mode 0700 whatever the umask) and refuses to go
/// on if others can write to it or to the ledger directory.
fn private_dirs(root: &Path) -> Result<(), DataDirError> {
    use vellum_ledger::files::{check_private_dir, create_private_dir};
    let raft = root.join("raft");
    create_private_dir(&raft).map_err(DataDirError::io(&raft))?;
    check_private_dir(root).map_err(DataDirError::io(root))?;
    let ledger = root.join("ledger");
    if ledger.exists() {
        check_private_dir(&ledger).map_err(DataDirError::io(&ledger))?;
    }
    Ok(())
}

fn read_bytes(p: &Path) -> Result<Vec<u8>, DataDirError> {
    std::fs::read(p).map_err(DataDirError::io(p))
}

fn read_string(p: &Path) -> Result<String, DataDirError> {
    String::from_utf8(read_bytes(p)?).map_err(|_| DataDirError::malformed(p, Malformed::NotUtf8))
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, DataDirError> {
    serde_json::from_slice(&read_bytes(p)?).map_err(|e| DataDirError::malformed(p, e))
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    write_durably(p, bytes).map_err(DataDirError::io(p))
}

/// A secret file's text: unsealed if the directory is sealed.
fn secret_text(root: &Path, name: &str, sealer: Option<&Sealer>) -> Result<String, DataDirError> {
    let bytes = crate::seal::read_secret_file(root, name, sealer)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DataDirError::malformed(&root.join(name), Malformed::NotUtf8))
}

/// Writes a secret file: sealed if the directory is sealed.
fn write_secret_file(
    root: &Path,
    name: &str,
    bytes: &[u8],
    sealer: Option<&Sealer>,
) -> Result<(), DataDirError> {
    Ok(crate::seal::write_secret_file(root, name, bytes, sealer)?)
}

fn read_secrets(p: &Path, text: &str) -> Result<LedgerSecrets, DataDirError> {
    LedgerSecrets::from_text(text).map_err(|_| DataDirError::malformed(p, Malformed::NotHexSecret))
}

impl DataDir {
    /// Paths of the pieces.
    pub fn ledger_dir(&self) -> PathBuf {
        self.root.join("ledger")
    }

    /// The index file.
    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.redb")
    }

    /// Raft's vote file.
    pub fn vote_path(&self) -> PathBuf {
        self.root.join("raft").join("vote.json")
    }

    /// Opens `root`, provisioning a new service there first if it holds none. A sealed
    /// directory needs `seal`, its key; a new one is sealed with it if given. A service whose
    /// key is in a PKCS#11 token needs `service_key_token`; a new service keeps its key there
    /// if given.
    pub fn open_or_create(
        root: &Path,
        bootstrap: &Bootstrap,
        seal: Option<&SealKey>,
        service_key_token: Option<&crate::hsm::Pkcs11Uri>,
    ) -> Result<DataDir, DataDirError> {
        private_dirs(root)?;
        let fresh = !root.join("node.json").exists();
        let in_token = root.join(SERVICE_KEY_IN_TOKEN);
        let token = match service_key_token {
            Some(_) if !fresh && !in_token.exists() => {
                return Err(DataDirError::ServiceKey(
                    "this service's key is not in a token: drop --service-key-pkcs11".into(),
                ));
            }
            Some(uri) => Some(std::sync::Arc::new(
                crate::hsm::TokenSigner::open_or_create(uri)
                    .map_err(|e| DataDirError::ServiceKey(e.to_string()))?,
            )),
            None if in_token.exists() => {
                return Err(DataDirError::ServiceKey(
                    "this service's key is in a PKCS#11 token: give --service-key-pkcs11".into(),
                ));
            }
            None => None,
        };
        let sealer = if !fresh {
            Sealer::open(root, seal)?
        } else {
            let sealer = seal.map(|k| Sealer::create(root, k)).transpose()?;
            provision(root, bootstrap, sealer.as_ref(), token.as_deref())?;
            sealer
        };
        if let Some(t) = &token {
            let recorded = read_string(&in_token)?;
            if recorded.trim() != t.public_key().id() {
                return Err(DataDirError::ServiceKey(format!(
                    "the token's key {} is not this service's ({})",
                    t.public_key().id(),
                    recorded.trim()
                )));
            }
        }
        let node: NodeFile = read_json(&root.join("node.json"))?;
        let secret_path = root.join(SECRETS_FILE);
        let secrets = read_secrets(
            &secret_path,
            &secret_text(root, SECRETS_FILE, sealer.as_ref())?,
        )?;
        let (service_key_pem, service_key) = match &token {
            Some(_) => (String::new(), None),
            None => {
                let pem = secret_text(root, "service_key.pem", sealer.as_ref())?;
                let key = SigningKey::from_pkcs8_pem(&pem)
                    .map_err(DataDirError::crypto("service_key.pem"))?;
                (pem, Some(key))
            }
        };
        let node_key_pem = secret_text(root, "node_key.pem", sealer.as_ref())?;
        let node_key = SigningKey::from_pkcs8_pem(&node_key_pem)
            .map_err(DataDirError::crypto("node_key.pem"))?;
        let keys = NodeKeys {
            node_key,
            node_cert_pem: read_string(&root.join("node_cert.pem"))?,
            service_key,
            service_cert_pem: read_string(&root.join("service_cert.pem"))?,
            secrets,
            cose_issuer: "vellum.local".into(),
            cose_subject: "ledger.signature".into(),
            previous_services: match root.join(PREVIOUS_SERVICES) {
                p if p.exists() => read_json(&p)?,
                _ => Vec::new(),
            },
            service_signer: token
                .clone()
                .map(|t| t as std::sync::Arc<dyn vellum_core::crypto::CoseSigner>),
        };
        let genesis_path = root.join("genesis.json");
        let genesis = if genesis_path.exists() {
            Some(read_json(&genesis_path)?)
        } else {
            None
        };
        let peers = root.join("peers.pem");
        let join_peers = if peers.exists() {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            CertificateDer::pem_slice_iter(read_string(&peers)?.as_bytes())
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DataDirError::malformed(&peers, Malformed::Pem(e.to_string())))?
        } else {
            Vec::new()
        };
        Ok(DataDir {
            root: root.to_path_buf(),
            join_peers,
            keys,
            raft_id: node.raft_id,
            node_id: node.node_id,
            genesis,
            node_key_pem,
            service_key_pem,
            chunk_size: node.chunk_size,
            sealer: sealer.map(std::sync::Arc::new),
            service_token: token,
        })
    }

    /// Where this node keeps its ledger secrets.
    pub fn secrets_file(&self) -> SecretsFile {
        SecretsFile::new(self.root.clone(), self.sealer.clone())
    }

    /// Whether `root` holds a provisioned node.
    pub fn is_provisioned(root: &Path) -> bool {
        root.join("node.json").exists()
    }

    /// The certificate and key (PEM) a node joins with, kept in `root` until it is admitted, so
    /// that a node restarted while it waits for a vote asks again as the same node: made on the
    /// first call, read back on the next.
    /// With `seal`, the directory is sealed from here on and the key kept sealed.
    pub fn joining_identity(
        root: &Path,
        seal: Option<&SealKey>,
    ) -> Result<(String, String), DataDirError> {
        private_dirs(root)?;
        let sealer = Sealer::open_or_create(root, seal)?;
        let cert = root.join(JOINING_CERT);
        if cert.exists() && crate::seal::secret_file_exists(root, JOINING_KEY, sealer.as_ref()) {
            return Ok((
                read_string(&cert)?,
                secret_text(root, JOINING_KEY, sealer.as_ref())?,
            ));
        }
        let id = Identity::client("Vellum Node", SystemTime::now(), 3650)
            .map_err(DataDirError::crypto("the joining node's identity"))?;
        write_secret_file(root, JOINING_KEY, id.key_pem().as_bytes(), sealer.as_ref())?;
        write_file(&cert, id.cert_pem.as_bytes())?;
        Ok((id.cert_pem.clone(), id.key_pem()))
    }

    /// Provisions `root` for a node admitted to a running service: the secrets it received,
    /// its endorsed certificate and its key. No genesis: its ledger arrives by replication.
    pub fn provision_joined(
        root: &Path,
        joined: &crate::cluster::JoinResponse,
        node_key_pem: &str,
        seal: Option<&SealKey>,
    ) -> Result<(), DataDirError> {
        private_dirs(root)?;
        let sealer = Sealer::open_or_create(root, seal)?;
        read_secrets(
            Path::new("the ledger secrets received"),
            &joined.ledger_secrets,
        )?;
        let cert = Certificate::from_pem(&joined.node_cert_pem)
            .map_err(DataDirError::crypto("the node certificate received"))?;
        if node_id_of(&cert) != joined.node_id {
            return Err(DataDirError::NotOurCertificate);
        }
        let secrets: [(&str, &str); 3] = [
            ("service_key.pem", &joined.service_key_pem),
            ("node_key.pem", node_key_pem),
            (SECRETS_FILE, &joined.ledger_secrets),
        ];
        for (name, text) in secrets {
            write_secret_file(root, name, text.as_bytes(), sealer.as_ref())?;
        }
        write_file(
            &root.join("service_cert.pem"),
            joined.service_cert_pem.as_bytes(),
        )?;
        write_file(&root.join("node_cert.pem"), joined.node_cert_pem.as_bytes())?;
        write_file(
            &root.join("peers.pem"),
            joined.trusted_node_certs.concat().as_bytes(),
        )?;
        if !joined.previous_services.is_empty() {
            let p = root.join(PREVIOUS_SERVICES);
            let bytes = serde_json::to_vec_pretty(&joined.previous_services)
                .map_err(|e| DataDirError::malformed(&p, e))?;
            write_file(&p, &bytes)?;
        }
        let nf = NodeFile {
            raft_id: joined.raft_id,
            node_id: joined.node_id.clone(),
            chunk_size: Some(joined.chunk_size),
        };
        nf.write(root)?;
        // The key is node_key.pem now; a leftover copy would only be another secret on disk.
        for f in [
            root.join(JOINING_CERT),
            root.join(JOINING_KEY),
            crate::seal::sealed_path(root, JOINING_KEY),
        ] {
            let _ = std::fs::remove_file(f);
        }
        tracing::info!(dir = %root.display(), node_id = %nf.node_id, "provisioned a node that joined a service");
        Ok(())
    }

    /// Forgets the genesis file once the ledger holds genesis.
    pub fn genesis_written(&self) -> Result<(), DataDirError> {
        let p = self.root.join("genesis.json");
        if p.exists() {
            std::fs::remove_file(&p).map_err(DataDirError::io(&p))?;
        }
        Ok(())
    }
}

/// A new service identity and a node identity it endorses.
struct NewIdentities {
    service_cert_pem: String,
    /// `None` when the service key is in a token.
    service_key_pem: Option<String>,
    node_cert_pem: String,
    node_key_pem: String,
    node_id: String,
    raft_id: u64,
}

/// A new service identity (its key made here, or kept in `token`) and a node identity it
/// endorses, with the node's id and Raft id.
fn new_identities(
    b: &Bootstrap,
    now: SystemTime,
    token: Option<&crate::hsm::TokenSigner>,
) -> Result<NewIdentities, DataDirError> {
    let mut dns: Vec<&str> = vec!["localhost"];
    dns.extend(b.dns_names.iter().map(String::as_str));
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    ips.extend(b.ips.iter().filter(|ip| !ip.is_loopback() || ip.is_ipv6()));
    let (service_cert_pem, service_key_pem, node_cert_pem, node_key_pem) = match token {
        None => {
            let service = Identity::service(&b.service_name, now, b.validity_days)
                .map_err(DataDirError::crypto("the service identity"))?;
            let node = service
                .issue_node("Vellum Node", &dns, &ips, now, b.validity_days)
                .map_err(DataDirError::crypto("the node identity"))?;
            (
                service.cert_pem.clone(),
                Some(service.key_pem()),
                node.cert_pem.clone(),
                node.key_pem(),
            )
        }
        Some(t) => {
            let service_cert_pem = vellum_ledger::identity::service_cert_with(
                t,
                &b.service_name,
                now,
                b.validity_days,
            )
            .map_err(DataDirError::crypto("the service identity (in the token)"))?;
            let key = Identity::client("Vellum Node", now, b.validity_days)
                .map_err(DataDirError::crypto("the node identity"))?;
            let node_cert_pem = vellum_ledger::identity::endorse_node_with(
                &service_cert_pem,
                t,
                key.cert.spki_der(),
                "Vellum Node",
                &dns,
                &ips,
                now,
                b.validity_days,
            )
            .map_err(DataDirError::crypto(
                "the node certificate (signed in the token)",
            ))?;
            (service_cert_pem, None, node_cert_pem, key.key_pem())
        }
    };
    let node_cert = Certificate::from_pem(&node_cert_pem)
        .map_err(DataDirError::crypto("the node certificate"))?;
    let node_id = node_id_of(&node_cert);
    // A node id is hex SHA-256, made just above.
    let raft_id = crate::cluster::raft_id_of(&node_id).unwrap_or_default();
    Ok(NewIdentities {
        service_cert_pem,
        service_key_pem,
        node_cert_pem,
        node_key_pem,
        node_id,
        raft_id,
    })
}

/// The new identities of a service being recovered into a data directory (see
/// [`crate::disaster`]): made and kept there on the first start, so that a restart while the
/// members submit their shares presents the same service certificate.
#[derive(Debug, Clone)]
pub(crate) struct RecoveryIdentity {
    pub service_cert_pem: String,
    pub service_key_pem: String,
    pub node_cert_pem: String,
    pub node_key_pem: String,
    pub node_id: String,
    pub raft_id: u64,
}

impl DataDir {
    /// The identities a recovery into `root` uses (see [`RecoveryIdentity`]).
    pub(crate) fn recovery_identity(
        root: &Path,
        b: &Bootstrap,
        seal: Option<&SealKey>,
    ) -> Result<(RecoveryIdentity, Option<std::sync::Arc<Sealer>>), DataDirError> {
        private_dirs(root)?;
        let sealer = Sealer::open_or_create(root, seal)?;
        let have = ["service_key.pem", "node_key.pem"]
            .iter()
            .all(|n| crate::seal::secret_file_exists(root, n, sealer.as_ref()));
        if !have {
            let ids = new_identities(b, SystemTime::now(), None)?;
            let service_key_pem = ids.service_key_pem.unwrap_or_default();
            write_secret_file(
                root,
                "service_key.pem",
                service_key_pem.as_bytes(),
                sealer.as_ref(),
            )?;
            write_secret_file(
                root,
                "node_key.pem",
                ids.node_key_pem.as_bytes(),
                sealer.as_ref(),
            )?;
            write_file(&root.join("node_cert.pem"), ids.node_cert_pem.as_bytes())?;
            write_file(
                &root.join("service_cert.pem"),
                ids.service_cert_pem.as_bytes(),
            )?;
        }
        let node_cert_pem = read_string(&root.join("node_cert.pem"))?;
        let cert =
            Certificate::from_pem(&node_cert_pem).map_err(DataDirError::crypto("node_cert.pem"))?;
        let node_id = node_id_of(&cert);
        let id = RecoveryIdentity {
            service_cert_pem: read_string(&root.join("service_cert.pem"))?,
            service_key_pem: secret_text(root, "service_key.pem", sealer.as_ref())?,
            node_key_pem: secret_text(root, "node_key.pem", sealer.as_ref())?,
            raft_id: crate::cluster::raft_id_of(&node_id).unwrap_or_default(),
            node_cert_pem,
            node_id,
        };
        Ok((id, sealer.map(std::sync::Arc::new)))
    }

    /// Writes the ledger secrets of a recovered data directory.
    pub(crate) fn finish_secrets(
        root: &Path,
        secrets: &LedgerSecrets,
        sealer: Option<&Sealer>,
    ) -> Result<(), DataDirError> {
        let text = zeroize::Zeroizing::new(secrets.to_text());
        write_secret_file(root, SECRETS_FILE, text.as_bytes(), sealer)
    }

    /// Completes a recovered data directory (its ledger in place): the ledger secrets, the
    /// previous service identities, then `node.json`, last.
    pub(crate) fn finish_recovered(
        root: &Path,
        id: &RecoveryIdentity,
        secrets: &LedgerSecrets,
        previous: &[vellum_ledger::engine::PreviousService],
        sealer: Option<&Sealer>,
    ) -> Result<(), DataDirError> {
        DataDir::finish_secrets(root, secrets, sealer)?;
        let p = root.join(PREVIOUS_SERVICES);
        let bytes =
            serde_json::to_vec_pretty(previous).map_err(|e| DataDirError::malformed(&p, e))?;
        write_file(&p, &bytes)?;
        NodeFile {
            raft_id: id.raft_id,
            node_id: id.node_id.clone(),
            chunk_size: None,
        }
        .write(root)
    }
}

fn provision(
    root: &Path,
    b: &Bootstrap,
    sealer: Option<&Sealer>,
    token: Option<&crate::hsm::TokenSigner>,
) -> Result<(), DataDirError> {
    let now = SystemTime::now();
    let mut b = b.clone();
    if b.operator_and_admin {
        let member = Identity::client("Vellum Operator", now, b.validity_days)
            .map_err(DataDirError::crypto("the operator member's identity"))?;
        write_file(&root.join("member0_key.pem"), member.key_pem().as_bytes())?;
        write_file(&root.join("member0_cert.pem"), member.cert_pem.as_bytes())?;
        b.members.push((member.cert.id(), member.cert_pem.clone()));
        let admin = Identity::client("Vellum Administrator", now, b.validity_days)
            .map_err(DataDirError::crypto("the administrator's identity"))?;
        write_file(&root.join("admin.pem"), admin.combined_pem().as_bytes())?;
        b.users.push(BootstrapUser {
            user_id: admin.cert.acl_fingerprint(),
            cert_pem: Some(admin.cert_pem.clone()),
            role: Role::Administrator,
        });
    }
    let b = &b;
    let NewIdentities {
        service_cert_pem,
        service_key_pem,
        node_cert_pem,
        node_key_pem,
        node_id,
        raft_id,
    } = new_identities(b, now, token)?;
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    // CCF's users tables are keyed by CCF user id (hex SHA-256 of the certificate); Vellum's
    // own table by ACL user id.
    let mut ccf_users = Vec::new();
    for u in &b.users {
        let id = match &u.cert_pem {
            Some(pem) => Certificate::from_pem(pem)
                .map_err(DataDirError::crypto("a bootstrap user's certificate"))?
                .id(),
            None => u.user_id.clone(),
        };
        ccf_users.push((id, u.cert_pem.clone(), u.role));
    }
    let mut genesis = Genesis {
        service_cert_pem: &service_cert_pem,
        node: (&node_id, &node_cert_pem),
        members: b.members.clone(),
        users: ccf_users,
        constitution: &b.constitution,
    }
    .entry();
    if !b.users.is_empty() {
        let records: Vec<(&str, UserRecord)> = b
            .users
            .iter()
            .map(|u| (u.user_id.as_str(), UserRecord::with_role(u.role)))
            .collect();
        genesis
            .maps
            .push(tables::USERS.writes(records.iter().map(|(id, r)| (*id, r))));
    }
    match (&service_key_pem, token) {
        (Some(pem), _) => write_secret_file(root, "service_key.pem", pem.as_bytes(), sealer)?,
        (None, Some(t)) => write_file(
            &root.join(SERVICE_KEY_IN_TOKEN),
            t.public_key().id().as_bytes(),
        )?,
        (None, None) => {}
    }
    write_file(&root.join("service_cert.pem"), service_cert_pem.as_bytes())?;
    write_secret_file(root, "node_key.pem", node_key_pem.as_bytes(), sealer)?;
    write_file(&root.join("node_cert.pem"), node_cert_pem.as_bytes())?;
    write_secret_file(root, SECRETS_FILE, hex::encode(secret).as_bytes(), sealer)?;
    let genesis_path = root.join("genesis.json");
    let genesis_json =
        serde_json::to_vec(&genesis).map_err(|e| DataDirError::malformed(&genesis_path, e))?;
    write_file(&genesis_path, &genesis_json)?;
    let nf = NodeFile {
        raft_id,
        node_id,
        chunk_size: None,
    };
    nf.write(root)?;
    tracing::info!(dir = %root.display(), node_id = %nf.node_id, "provisioned a new service");
    Ok(())
}

//! TLS for the API: the node certificate (endorsed by the service key) with the service
//! certificate as its chain, and optional client certificates of any kind.
//!
//! ACL authenticates certificate users by the fingerprint of whatever certificate they present:
//! self-signed, unknown issuer, expired, RSA or EC. So the verifier below offers client
//! authentication without requiring it, accepts any end-entity certificate, and still checks
//! the handshake signature, which proves the client holds the certificate's private key.
//! Authorization happens afterwards, by fingerprint.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// Accepts any client certificate whose key signed the handshake.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The process-wide crypto provider (aws-lc-rs), installed once so that no other provider
/// pulled in by a dependency can be picked implicitly.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a node's TLS identity cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate chain is not PEM.
    #[error("node certificate chain: {0}")]
    Chain(rustls::pki_types::pem::Error),
    /// The private key is not PEM.
    #[error("node key: {0}")]
    Key(rustls::pki_types::pem::Error),
    /// rustls refused the configuration (the key does not match the certificate...).
    #[error("node certificate: {0}")]
    Config(rustls::Error),
    /// The node-to-node client refused the identity or the service certificate.
    #[error("node channel client: {0}")]
    Client(reqwest::Error),
}

/// The API's certificate, following the node's service identity: a rotation changes the chain
/// (this node's certificate endorsed by the new key, then the new service certificate) while
/// the node runs; the key stays the node's.
pub struct LiveCert {
    identity: Arc<crate::identity::LiveIdentity>,
    key: Arc<dyn rustls::sign::SigningKey>,
    cached: std::sync::Mutex<(u64, Option<Arc<rustls::sign::CertifiedKey>>)>,
}

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCert")
    }
}

impl LiveCert {
    fn chain(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let id = self.identity.get();
        let pem = format!("{}{}", id.node_cert_pem, id.service_cert_pem);
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(Arc::new(rustls::sign::CertifiedKey::new(
            chain,
            self.key.clone(),
        )))
    }
}

impl rustls::server::ResolvesServerCert for LiveCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let generation = self.identity.generation();
        let mut cached = crate::lock(&self.cached);
        if cached.0 != generation || cached.1.is_none() {
            *cached = (generation, self.chain());
        }
        cached.1.clone()
    }
}

/// The server TLS configuration for a node serving under `identity` with its key `key_pem`:
/// the chain follows the identity ([`LiveCert`]).
pub fn server_config_live(
    identity: Arc<crate::identity::LiveIdentity>,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(TlsError::Key)?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Config)?;
    let live = LiveCert {
        identity,
        key,
        cached: std::sync::Mutex::new((u64::MAX, None)),
    };
    if live.chain().is_none() {
        return Err(TlsError::Config(rustls::Error::General(
            "the node certificate chain is not PEM".into(),
        )));
    }
    configured(provider, |b| Ok(b.with_cert_resolver(Arc::new(live))))
}

/// A server configuration of `provider`: any client certificate offered, HTTP/1.1, and the
/// server's certificate as `cert` sets it.
fn configured(
    provider: Arc<CryptoProvider>,
    cert: impl FnOnce(
        rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>,
    ) -> Result<ServerConfig, rustls::Error>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = Arc::new(AnyClientCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier);
    let mut cfg = cert(builder).map_err(TlsError::Config)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The server TLS configuration: `chain_pem` (node certificate first, then the service
/// certificate), `key_pem` the node's private key.
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Chain)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(TlsError::Key)?;
    configured(provider, |b| b.with_single_cert(chain, key))
}

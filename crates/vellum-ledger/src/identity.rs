//! Service, node and client identities: P-384 keys and X.509 certificates (rcgen).
//!
//! Profiles follow `acl-rest-api.md` §6.2 so that Python 3.11 and 3.13+ clients accept them:
//! the service certificate is a self-signed CA (`basicConstraints` critical CA:TRUE pathlen 0,
//! `keyUsage` critical keyCertSign/cRLSign/digitalSignature, SKI); node certificates are issued
//! by the service key (CA:FALSE, SKI, AKI, SANs for every address).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use vellum_core::crypto::{Certificate, SigningKey};

/// Why an identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The generated key or certificate could not be read back.
    #[error("key or certificate: {0}")]
    Crypto(#[from] vellum_core::crypto::CryptoError),
    /// A subject alternative name is not a valid DNS name.
    #[error("invalid DNS name {0:?}")]
    DnsName(String),
}

/// A key pair with its certificate.
pub struct Identity {
    key: KeyPair,
    /// The signing key (P-384).
    pub signing_key: SigningKey,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Parsed certificate.
    pub cert: Certificate,
    params: CertificateParams,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.cert.id())
            .finish()
    }
}

fn new_key() -> Result<(KeyPair, SigningKey), IdentityError> {
    let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let sk = SigningKey::from_pkcs8_der(&kp.serialize_der())?;
    Ok((kp, sk))
}

fn params(cn: &str, now: SystemTime, days: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = (now - Duration::from_secs(3600)).into();
    p.not_after = (now + Duration::from_secs(days * 86_400)).into();
    p
}

/// The node certificate profile: CA:FALSE, AKI, digital signature, SANs for every address.
fn node_params(
    cn: &str,
    dns: &[&str],
    ips: &[IpAddr],
    now: SystemTime,
    days: u64,
) -> Result<CertificateParams, IdentityError> {
    let mut p = params(cn, now, days);
    p.is_ca = IsCa::ExplicitNoCa;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    for d in dns {
        p.subject_alt_names.push(SanType::DnsName(
            (*d).try_into()
                .map_err(|_| IdentityError::DnsName((*d).to_owned()))?,
        ));
    }
    for ip in ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    Ok(p)
}

impl Identity {
    fn assemble(
        key: KeyPair,
        signing_key: SigningKey,
        params: CertificateParams,
        cert: &rcgen::Certificate,
    ) -> Result<Identity, IdentityError> {
        Ok(Identity {
            cert: Certificate::from_der(cert.der())?,
            key,
            signing_key,
            cert_pem: cert.pem(),
            params,
        })
    }

    /// The private key, PKCS#8 PEM (a secret: store with 0600 permissions).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The certificate and key in one PEM (what the Python SDK's certificate credential takes).
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem())
    }

    /// A self-signed service identity (the trust anchor clients pin).
    pub fn service(cn: &str, now: SystemTime, days: u64) -> Result<Identity, IdentityError> {
        let (key, signing_key) = new_key()?;
        let p = service_params(cn, now, days);
        let cert = p.self_signed(&key)?;
        Identity::assemble(key, signing_key, p, &cert)
    }

    /// A node identity endorsed by this (service) identity, valid for `dns` names and `ips`.
    pub fn issue_node(
        &self,
        cn: &str,
        dns: &[&str],
        ips: &[IpAddr],
        now: SystemTime,
        days: u64,
    ) -> Result<Identity, IdentityError> {
        let (key, signing_key) = new_key()?;
        let p = node_params(cn, dns, ips, now, days)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Identity::assemble(key, signing_key, p, &cert)
    }

    /// A certificate signing request for this identity's key: see [`node_csr`].
    pub fn node_csr(
        &self,
        cn: &str,
        dns: &[&str],
        ips: &[IpAddr],
    ) -> Result<String, IdentityError> {
        csr_for(&self.key, cn, dns, ips)
    }

    /// A self-signed client identity (a member or a certificate user).
    pub fn client(cn: &str, now: SystemTime, days: u64) -> Result<Identity, IdentityError> {
        let (key, signing_key) = new_key()?;
        let p = params(cn, now, days);
        let cert = p.self_signed(&key)?;
        Identity::assemble(key, signing_key, p, &cert)
    }
}

fn service_params(cn: &str, now: SystemTime, days: u64) -> CertificateParams {
    let mut p = params(cn, now, days);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A self-signed service certificate (PEM) for a key held elsewhere (a hardware token): the
/// profile of [`Identity::service`].
pub fn service_cert_with(
    key: &impl rcgen::SigningKey,
    cn: &str,
    now: SystemTime,
    days: u64,
) -> Result<String, IdentityError> {
    Ok(service_params(cn, now, days).self_signed(key)?.pem())
}

/// [`endorse_node`] with a service key held elsewhere (a hardware token).
#[allow(clippy::too_many_arguments)]
pub fn endorse_node_with<S: rcgen::SigningKey>(
    service_cert_pem: &str,
    key: S,
    node_spki_der: &[u8],
    cn: &str,
    dns: &[&str],
    ips: &[IpAddr],
    now: SystemTime,
    days: u64,
) -> Result<String, IdentityError> {
    let issuer = Issuer::from_ca_cert_pem(service_cert_pem, key)?;
    let public = rcgen::SubjectPublicKeyInfo::from_der(node_spki_der)?;
    let p = node_params(cn, dns, ips, now, days)?;
    Ok(p.signed_by(&public, &issuer)?.pem())
}

/// A node certificate endorsed anew by another service key (a rotation): the same subject,
/// names and key, valid for `days` from `now`.
pub fn reendorse(
    node_cert_pem: &str,
    service_cert_pem: &str,
    service_key_pem: &str,
    now: SystemTime,
    days: u64,
) -> Result<String, IdentityError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let cert = Certificate::from_pem(node_cert_pem)?;
    let (_, x) = X509Certificate::from_der(cert.der()).map_err(|e| {
        IdentityError::Crypto(vellum_core::crypto::CryptoError::Certificate(e.to_string()))
    })?;
    let cn = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("Vellum Node")
        .to_owned();
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
    endorse_node(
        service_cert_pem,
        service_key_pem,
        cert.spki_der(),
        &cn,
        &dns,
        &ips,
        now,
        days,
    )
}

/// A previous service identity's key endorsed by the current service key (a disaster recovery
/// or a rotation replaced it): what receipts of its era carry as `serviceEndorsements`.
pub fn endorse_previous_identity(
    service_cert_pem: &str,
    service_key_pem: &str,
    previous_cert_pem: &str,
    now: SystemTime,
) -> Result<String, IdentityError> {
    let previous = Certificate::from_pem(previous_cert_pem)?;
    endorse_node(
        service_cert_pem,
        service_key_pem,
        previous.spki_der(),
        "Vellum Service (previous identity)",
        &[],
        &[],
        now,
        3650,
    )
}

/// Endorses a node's public key with the service key: the certificate a joining node receives.
/// `service_cert_pem` and `service_key_pem` are the stored service identity; `node_spki_der` is
/// the node's public key (taken from the certificate it proved possession of in its TLS
/// handshake). The profile is that of [`Identity::issue_node`].
#[allow(clippy::too_many_arguments)]
pub fn endorse_node(
    service_cert_pem: &str,
    service_key_pem: &str,
    node_spki_der: &[u8],
    cn: &str,
    dns: &[&str],
    ips: &[IpAddr],
    now: SystemTime,
    days: u64,
) -> Result<String, IdentityError> {
    let key = KeyPair::from_pem(service_key_pem)?;
    endorse_node_with(
        service_cert_pem,
        key,
        node_spki_der,
        cn,
        dns,
        ips,
        now,
        days,
    )
}

fn csr_for(key: &KeyPair, cn: &str, dns: &[&str], ips: &[IpAddr]) -> Result<String, IdentityError> {
    let mut p = params(cn, SystemTime::now(), 1);
    p.subject_alt_names = node_params(cn, dns, ips, SystemTime::now(), 1)?.subject_alt_names;
    Ok(p.serialize_request(key)?.pem()?)
}

/// A certificate signing request (PEM) for the key `key_pem` (PKCS#8), asking for `dns` names
/// and `ips`: what a node that joins by vote sends; the certificate a vote makes from it
/// ([`endorse_csr`]) carries these names.
pub fn node_csr(
    key_pem: &str,
    cn: &str,
    dns: &[&str],
    ips: &[IpAddr],
) -> Result<String, IdentityError> {
    csr_for(&KeyPair::from_pem(key_pem)?, cn, dns, ips)
}

/// The public key (SubjectPublicKeyInfo, DER) of a certificate signing request, once its
/// signature is checked: the request proves that whoever made it holds that key.
pub fn csr_spki(csr_pem: &str) -> Result<Vec<u8>, IdentityError> {
    use rcgen::PublicKeyData;
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    Ok(csr.public_key.subject_public_key_info())
}

/// Endorses the key of a node's certificate signing request with the service key, valid for
/// `days` from `valid_from`, with the subject and names the request asks for: what a vote that
/// trusts a node makes (CCF's `ccf.network.generateEndorsedCertificate`). The request's
/// signature is checked first. The profile is otherwise that of [`endorse_node`].
pub fn endorse_csr(
    service_cert_pem: &str,
    service_key_pem: &str,
    csr_pem: &str,
    valid_from: SystemTime,
    days: u64,
) -> Result<String, IdentityError> {
    let key = KeyPair::from_pem(service_key_pem)?;
    endorse_csr_with(service_cert_pem, key, csr_pem, valid_from, days)
}

/// [`endorse_csr`] with a service key held elsewhere (a hardware token).
pub fn endorse_csr_with<S: rcgen::SigningKey>(
    service_cert_pem: &str,
    key: S,
    csr_pem: &str,
    valid_from: SystemTime,
    days: u64,
) -> Result<String, IdentityError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut p = node_params("Vellum Node", &[], &[], valid_from, days)?;
    if csr.params.distinguished_name.iter().next().is_some() {
        p.distinguished_name = csr.params.distinguished_name.clone();
    }
    p.subject_alt_names = csr.params.subject_alt_names.clone();
    p.not_before = valid_from.into();
    p.not_after = (valid_from + Duration::from_secs(days.saturating_mul(86_400))).into();
    let issuer = Issuer::from_ca_cert_pem(service_cert_pem, key)?;
    Ok(p.signed_by(&csr.public_key, &issuer)?.pem())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_node_certificate_endorsed_anew_keeps_its_key_and_names_and_chains_to_the_new_service() {
        let now = SystemTime::now();
        let (old, new) = (
            Identity::service("s", now, 1).unwrap(),
            Identity::service("s", now, 1).unwrap(),
        );
        let node = old
            .issue_node(
                "Vellum Node",
                &["localhost", "node.example"],
                &[IpAddr::from([10, 0, 0, 7])],
                now,
                1,
            )
            .unwrap();
        let pem = reendorse(&node.cert_pem, &new.cert_pem, &new.key_pem(), now, 30).unwrap();
        let renewed = Certificate::from_pem(&pem).unwrap();
        assert_eq!(renewed.spki_der(), node.cert.spki_der());
        renewed
            .verify_issued_by(&new.cert.public_key().unwrap())
            .unwrap();
        assert!(
            renewed
                .verify_issued_by(&old.cert.public_key().unwrap())
                .is_err()
        );
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, x) = X509Certificate::from_der(renewed.der()).unwrap();
        let names = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value);
        for want in ["localhost", "node.example", "[10, 0, 0, 7]"] {
            assert!(names.contains(want), "{names}");
        }
    }

    #[test]
    fn an_endorsed_node_certificate_carries_the_nodes_key_and_chains_to_the_service() {
        let now = SystemTime::now();
        let service = Identity::service("s", now, 1).unwrap();
        let node = Identity::client("joining", now, 1).unwrap();
        let pem = endorse_node(
            &service.cert_pem,
            &service.key_pem(),
            node.cert.spki_der(),
            "Vellum Node",
            &["localhost"],
            &[IpAddr::from([10, 0, 0, 7])],
            now,
            1,
        )
        .unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        assert_eq!(cert.spki_der(), node.cert.spki_der());
        cert.verify_issued_by(&service.cert.public_key().unwrap())
            .unwrap();
        // Not by another service.
        let other = Identity::service("s", now, 1).unwrap();
        assert!(
            cert.verify_issued_by(&other.cert.public_key().unwrap())
                .is_err()
        );
    }

    #[test]
    fn a_vote_endorses_the_key_and_names_of_a_signing_request() {
        let now = SystemTime::now();
        let service = Identity::service("s", now, 1).unwrap();
        let node = Identity::client("joining", now, 1).unwrap();
        let ip = IpAddr::from([10, 0, 0, 9]);
        let csr = node
            .node_csr("Vellum Node", &["node9.example"], &[ip])
            .unwrap();
        assert_eq!(csr_spki(&csr).unwrap(), node.cert.spki_der());
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let pem = endorse_csr(&service.cert_pem, &service.key_pem(), &csr, from, 30).unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        assert_eq!(cert.spki_der(), node.cert.spki_der());
        cert.verify_issued_by(&service.cert.public_key().unwrap())
            .unwrap();
        let der = cert.der();
        let has = |b: &[u8]| der.windows(b.len()).any(|w| w == b);
        assert!(has(b"node9.example") && has(&[10, 0, 0, 9]));
        // A request whose signature does not hold is refused.
        let mut der = pem::parse(&csr).unwrap().into_contents();
        let last = der.len() - 1;
        der[last] ^= 1;
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(csr_spki(&forged).is_err());
        assert!(endorse_csr(&service.cert_pem, &service.key_pem(), &forged, from, 30).is_err());
    }
}

//! Test support (feature `test-util`): a real node with the HTTPS API on a random loopback
//! port, in a temporary directory, with a trusted token issuer. Used by this crate's tests and
//! by the client library's.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// A node with the HTTPS API on a random loopback port, in a temporary directory.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub node: std::sync::Arc<crate::LedgerNode>,
    pub addr: std::net::SocketAddr,
    pub endpoint: String,
    pub ledger_id: String,
    pub page_size: usize,
    pub service: Option<crate::service::Service>,
    pub token_key_der: Vec<u8>,
}

/// The trusted token issuer.
pub const ISSUER: &str = "https://login.vellum.test/tenant/v2.0";

impl TestServer {
    /// Starts a node (with an operator and admin.pem) and its API; bearer tokens from
    /// [`ISSUER`] signed by a fresh P-256 key are trusted.
    pub async fn start(page_size: usize) -> TestServer {
        TestServer::start_with(
            crate::server::Limits {
                page_size,
                ..Default::default()
            },
            |_| {},
        )
        .await
    }

    /// As [`TestServer::start`], with these limits and the node's configuration as
    /// `configure` leaves it.
    pub async fn start_with(
        limits: crate::server::Limits,
        configure: impl FnOnce(&mut crate::NodeConfig),
    ) -> TestServer {
        TestServer::start_in(tempfile::tempdir().unwrap(), limits, |c| {
            configure(&mut c.node)
        })
        .await
    }

    /// As [`TestServer::start`], with these limits and the service's configuration as
    /// `configure` leaves it.
    pub async fn start_service(
        limits: crate::server::Limits,
        configure: impl FnOnce(&mut crate::service::ServiceConfig),
    ) -> TestServer {
        TestServer::start_in(tempfile::tempdir().unwrap(), limits, configure).await
    }

    /// Starts the node again in `dir` (from [`TestServer::stop`]), with the default limits
    /// and page size `page_size`.
    pub async fn restart(dir: tempfile::TempDir, page_size: usize) -> TestServer {
        let limits = crate::server::Limits {
            page_size,
            ..Default::default()
        };
        TestServer::start_in(dir, limits, |_| {}).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        limits: crate::server::Limits,
        configure: impl FnOnce(&mut crate::service::ServiceConfig),
    ) -> TestServer {
        use crate::service::{Service, ServiceConfig, TokenIssuer, TokenKeys};
        let page_size = limits.page_size;
        // A token issuer: P-256 key, JWKS file.
        let (key_pem, jwks) = es256_key();
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks).unwrap();
        let mut cfg = ServiceConfig::new(dir.path());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.ledger_id = "vellum-test".into();
        cfg.limits = limits;
        cfg.token_issuers.push(TokenIssuer {
            issuer: ISSUER.into(),
            audiences: vec![],
            keys: TokenKeys::File(jwks_path),
        });
        configure(&mut cfg);
        let service = Service::start(cfg).await.unwrap();
        let addr = service.local_addr();
        TestServer {
            endpoint: service.endpoint(),
            addr,
            node: service.node().clone(),
            dir,
            ledger_id: "vellum-test".into(),
            page_size,
            service: Some(service),
            token_key_der: key_pem,
        }
    }

    pub fn path(&self, f: &str) -> std::path::PathBuf {
        self.dir.path().join(f)
    }

    pub fn service_cert(&self) -> String {
        std::fs::read_to_string(self.path("service_cert.pem")).unwrap()
    }

    /// An HTTPS client trusting only the service certificate, optionally with a client
    /// certificate (cert + key PEM).
    pub fn client(&self, identity_pem: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.service_cert().as_bytes()).unwrap();
        let mut b = reqwest::Client::builder().tls_certs_only([ca]);
        if let Some(pem) = identity_pem {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    pub fn admin_pem(&self) -> String {
        std::fs::read_to_string(self.path("admin.pem")).unwrap()
    }

    /// A bearer token for `oid` from the trusted issuer (ACL's audience).
    pub fn token(&self, oid: &str) -> String {
        token_for(&self.token_key_der, oid)
    }

    /// Stops the API and the node; returns the data directory (deleted when dropped).
    pub async fn stop(self) -> tempfile::TempDir {
        let TestServer {
            dir, node, service, ..
        } = self;
        drop(node);
        if let Some(s) = service {
            s.stop().await.unwrap();
        }
        dir
    }
}

/// A bearer token for `oid` from [`ISSUER`] (ACL's audience), signed with `key_der` (from
/// [`es256_key`]).
pub fn token_for(key_der: &[u8], oid: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "https://confidential-ledger.azure.com", "oid": oid,
        "iat": now, "nbf": now - 60, "exp": now + 3600,
    });
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(key_der),
    )
    .unwrap()
}

/// A fresh ES256 key: (PKCS#8 DER, JWKS JSON with kid `k1`).
pub fn es256_key() -> (Vec<u8>, String) {
    use base64::Engine as _;
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = sk.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let pt = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(pt.x().unwrap()), "y": b64(pt.y().unwrap()),
    }]});
    (pem, jwks.to_string())
}

/// One DER element: (tag, contents, what follows).
fn der_element(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let (len, head) = match b[1] {
        l if l < 0x80 => (l as usize, 2),
        l => {
            let n = (l & 0x7f) as usize;
            let len = b[2..2 + n]
                .iter()
                .fold(0usize, |a, x| (a << 8) | *x as usize);
            (len, 2 + n)
        }
    };
    (b[0], &b[head..head + len], &b[head + len..])
}

/// A fresh 2048-bit RSA key: (PKCS#1 DER, for `EncodingKey::from_rsa_der`; its public JWK with
/// kid `kid`, and `alg` when given).
pub fn rsa_key(kid: &str, alg: Option<&str>) -> (Vec<u8>, serde_json::Value) {
    use base64::Engine as _;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pkcs8 = kp.serialize_der();
    // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING (PKCS#1) }
    let (_, info, _) = der_element(&pkcs8);
    let (_, _, rest) = der_element(info);
    let (_, _, rest) = der_element(rest);
    let (_, pkcs1, _) = der_element(rest);
    // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }
    let (_, key, _) = der_element(pkcs1);
    let (_, _, rest) = der_element(key);
    let (_, n, rest) = der_element(rest);
    let (_, e, _) = der_element(rest);
    let strip = |x: &[u8]| {
        x.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut jwk = serde_json::json!({
        "kty": "RSA", "kid": kid, "use": "sig", "n": b64(&strip(n)), "e": b64(&strip(e)),
    });
    if let Some(a) = alg {
        jwk["alg"] = a.into();
    }
    (pkcs1.to_vec(), jwk)
}

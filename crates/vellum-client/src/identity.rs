//! The identity service: fetches a ledger's TLS certificate so clients can pin it.

use crate::client::{DEFAULT_API_VERSION, MethodOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::models::LedgerIdentity;

/// Options of [`ConfidentialLedgerIdentityServiceClient`].
#[derive(Clone, Debug, Default)]
pub struct IdentityServiceClientOptions {
    /// The api-version (default `2022-05-13`).
    pub api_version: Option<String>,
    /// Trust only this certificate (PEM) for the identity endpoint, e.g. a Vellum node's
    /// `/ledgerIdentity` route. The system's roots are used when `None` (Azure's public
    /// identity service).
    pub trust_anchor_pem: Option<String>,
}

/// A client of the identity service (`https://identity.confidential-ledger.core.azure.com`
/// for Azure; a Vellum node serves the same route).
#[derive(Clone, Debug)]
pub struct ConfidentialLedgerIdentityServiceClient {
    endpoint: reqwest::Url,
    http: reqwest::Client,
    api_version: String,
}

impl ConfidentialLedgerIdentityServiceClient {
    /// A client for the identity service at `identity_service_endpoint`.
    pub fn new(
        identity_service_endpoint: &str,
        options: Option<IdentityServiceClientOptions>,
    ) -> Result<Self> {
        let o = options.unwrap_or_default();
        let endpoint = reqwest::Url::parse(identity_service_endpoint).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, "identity service endpoint", e)
        })?;
        let mut b = reqwest::Client::builder();
        if let Some(pem) = &o.trust_anchor_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                Error::with_source(ErrorKind::InvalidArgument, "trust anchor PEM", e)
            })?;
            b = b.tls_certs_only(certs);
        }
        let http = b
            .build()
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "HTTPS client", e))?;
        Ok(ConfidentialLedgerIdentityServiceClient {
            endpoint,
            http,
            api_version: o.api_version.unwrap_or_else(|| DEFAULT_API_VERSION.into()),
        })
    }

    /// The identity of ledger `ledger_id`: its id and TLS (service) certificate.
    pub async fn get_ledger_identity(
        &self,
        ledger_id: &str,
        _options: Option<MethodOptions>,
    ) -> Result<LedgerIdentity> {
        if ledger_id.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty ledger id"));
        }
        let seg = crate::client::path_segment(ledger_id);
        let mut url = self
            .endpoint
            .join(&format!("/ledgerIdentity/{seg}"))
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "identity URL", e))?;
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        let resp = self.http.get(url).send().await.map_err(|e| {
            Error::with_source(ErrorKind::Connection, "fetching the ledger identity", e)
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Connection, "reading the identity", e))?;
        if !status.is_success() {
            return Err(Error::from_response(status.as_u16(), &body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::with_source(ErrorKind::DataConversion, "reading the identity", e)
        })?;
        let cert = v["ledgerTlsCertificate"].as_str().ok_or_else(|| {
            Error::new(
                ErrorKind::DataConversion,
                "no ledgerTlsCertificate in the answer",
            )
        })?;
        Ok(LedgerIdentity {
            ledger_id: v["ledgerId"].as_str().unwrap_or(ledger_id).to_owned(),
            // Some service examples end the PEM with a NUL; it is not part of the certificate.
            ledger_tls_certificate: cert.trim_end_matches('\0').to_owned(),
        })
    }
}

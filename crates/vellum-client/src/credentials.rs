//! Credentials: a client certificate for mutual TLS, or any Azure SDK token credential.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use crate::error::{Error, ErrorKind, Result};

/// A client certificate and its private key in one PEM file (the form the Python SDK's
/// `ConfidentialLedgerCertificateCredential` takes), presented in the TLS handshake. The user
/// id is the certificate's fingerprint.
#[derive(Clone)]
pub struct ConfidentialLedgerCertificateCredential {
    certificate_path: Option<PathBuf>,
    pem: Arc<Vec<u8>>,
}

impl std::fmt::Debug for ConfidentialLedgerCertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ConfidentialLedgerCertificateCredential")
            .field("certificate_path", &self.certificate_path)
            .finish_non_exhaustive()
    }
}

impl ConfidentialLedgerCertificateCredential {
    /// Reads the certificate and key from `certificate_path`.
    pub fn new(certificate_path: impl AsRef<Path>) -> Result<Self> {
        let p = certificate_path.as_ref();
        let pem = std::fs::read(p).map_err(|e| {
            Error::with_source(
                ErrorKind::Credential,
                format!("reading the client certificate {}", p.display()),
                e,
            )
        })?;
        Ok(ConfidentialLedgerCertificateCredential {
            certificate_path: Some(p.to_path_buf()),
            pem: Arc::new(pem),
        })
    }

    /// From PEM bytes (certificate and private key).
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Self {
        ConfidentialLedgerCertificateCredential {
            certificate_path: None,
            pem: Arc::new(pem.into()),
        }
    }

    /// The file it was read from, if any.
    pub fn certificate_path(&self) -> Option<&Path> {
        self.certificate_path.as_deref()
    }

    pub(crate) fn identity(&self) -> Result<reqwest::Identity> {
        reqwest::Identity::from_pem(&self.pem).map_err(|e| {
            Error::with_source(
                ErrorKind::Credential,
                "the client certificate PEM must hold a certificate and its private key",
                e,
            )
        })
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum LedgerCredential {
    /// Mutual TLS with a client certificate.
    Certificate(ConfidentialLedgerCertificateCredential),
    /// Bearer tokens from an Azure SDK credential (`azure_identity`'s, or your own).
    Token(Arc<dyn TokenCredential>),
    /// No credential: only what the service serves to anyone answers (its identity, CCF's
    /// built-ins such as `/node/commit`, a node's health); everything else is refused with
    /// an authentication error.
    Anonymous,
}

impl From<ConfidentialLedgerCertificateCredential> for LedgerCredential {
    fn from(c: ConfidentialLedgerCertificateCredential) -> Self {
        LedgerCredential::Certificate(c)
    }
}

impl From<Arc<dyn TokenCredential>> for LedgerCredential {
    fn from(c: Arc<dyn TokenCredential>) -> Self {
        LedgerCredential::Token(c)
    }
}

/// The ledger's TLS certificate (the service certificate): the client's only trust anchor.
#[derive(Clone, Debug)]
pub enum LedgerCertificate {
    /// A PEM file.
    Path(PathBuf),
    /// PEM text.
    Pem(String),
}

impl LedgerCertificate {
    pub(crate) fn pem(&self) -> Result<String> {
        match self {
            LedgerCertificate::Pem(p) => Ok(p.clone()),
            LedgerCertificate::Path(p) => std::fs::read_to_string(p).map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidArgument,
                    format!("reading the ledger certificate {}", p.display()),
                    e,
                )
            }),
        }
    }
}

impl From<&Path> for LedgerCertificate {
    fn from(p: &Path) -> Self {
        LedgerCertificate::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for LedgerCertificate {
    fn from(p: PathBuf) -> Self {
        LedgerCertificate::Path(p)
    }
}

impl From<&str> for LedgerCertificate {
    /// A path, or PEM text if it starts with `-----BEGIN`.
    fn from(s: &str) -> Self {
        if s.trim_start().starts_with("-----BEGIN") {
            LedgerCertificate::Pem(s.to_owned())
        } else {
            LedgerCertificate::Path(PathBuf::from(s))
        }
    }
}

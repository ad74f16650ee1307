//! Shared by the examples: where the ledger is. Each example reads `VELLUM_ENDPOINT`
//! (default `https://127.0.0.1:8443`) and `VELLUM_DATA` (default `./vellum-data`, the data
//! directory of `vellum serve`, holding `service_cert.pem` and `admin.pem`).

#![allow(dead_code)]

use std::path::PathBuf;

use vellum_client::{ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient, Result};

pub fn endpoint() -> String {
    std::env::var("VELLUM_ENDPOINT").unwrap_or_else(|_| "https://127.0.0.1:8443".into())
}

pub fn data() -> PathBuf {
    PathBuf::from(std::env::var("VELLUM_DATA").unwrap_or_else(|_| "vellum-data".into()))
}

/// The ledger certificate (trust anchor) file.
pub fn ledger_certificate() -> PathBuf {
    data().join("service_cert.pem")
}

/// A client authenticated as the bootstrap Administrator.
pub fn admin_client() -> Result<ConfidentialLedgerClient> {
    ConfidentialLedgerClient::new(
        &endpoint(),
        ConfidentialLedgerCertificateCredential::new(data().join("admin.pem"))?,
        ledger_certificate(),
        None,
    )
}

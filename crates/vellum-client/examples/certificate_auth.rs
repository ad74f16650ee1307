//! Certificate authentication: mutual TLS with a client certificate and key in one PEM.

mod common;

use vellum_client::{ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient};

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let credential =
        ConfidentialLedgerCertificateCredential::new(common::data().join("admin.pem"))?;
    let client = ConfidentialLedgerClient::new(
        &common::endpoint(),
        credential,
        common::ledger_certificate(),
        None,
    )?;
    let result = client
        .append_to_ledger("written with a client certificate", None)
        .await?;
    println!("{} in {}", result.transaction_id, result.sub_ledger_id);
    Ok(())
}

//! Getting started: fetch the ledger's certificate from the identity service, build a client,
//! write an entry and read it back (blocking API).
//!
//! `cargo run -p vellum-client --example getting_started` against `vellum serve`.

mod common;

use vellum_client::blocking::{ConfidentialLedgerClient, ConfidentialLedgerIdentityServiceClient};
use vellum_client::{
    AppendToLedgerOptions, ConfidentialLedgerCertificateCredential, GetLedgerEntryOptions,
    IdentityServiceClientOptions, LedgerCertificate,
};

fn main() -> vellum_client::Result<()> {
    // A Vellum node serves the identity route itself; Azure's identity service is public.
    let identity = ConfidentialLedgerIdentityServiceClient::new(
        &common::endpoint(),
        Some(IdentityServiceClientOptions {
            trust_anchor_pem: std::fs::read_to_string(common::ledger_certificate()).ok(),
            ..Default::default()
        }),
    )?
    .get_ledger_identity(
        &std::env::var("VELLUM_LEDGER_ID").unwrap_or_else(|_| "vellum".into()),
        None,
    )?;
    println!("ledger {} certificate fetched", identity.ledger_id);

    let client = ConfidentialLedgerClient::new(
        &common::endpoint(),
        ConfidentialLedgerCertificateCredential::new(common::data().join("admin.pem"))?,
        LedgerCertificate::Pem(identity.ledger_tls_certificate),
        None,
    )?;
    let result = client.append_to_ledger(
        "Hello world!",
        Some(AppendToLedgerOptions {
            wait_for_commit: true,
            ..Default::default()
        }),
    )?;
    let entry = client.get_ledger_entry(Some(GetLedgerEntryOptions {
        transaction_id: Some(result.transaction_id.clone()),
        ..Default::default()
    }))?;
    println!("{} -> {:?}", result.transaction_id, entry.contents);
    Ok(())
}

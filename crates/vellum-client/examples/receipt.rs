//! Get a transaction receipt and verify it offline against the ledger certificate.

mod common;

use vellum_client::AppendToLedgerOptions;

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let result = client
        .append_to_ledger(
            "Hello world, again!",
            Some(AppendToLedgerOptions {
                wait_for_commit: true,
                ..Default::default()
            }),
        )
        .await?;
    let receipt = client
        .get_transaction_receipt(&result.transaction_id, None)
        .await?;
    println!("{}", receipt.contents);
    let service_cert = std::fs::read_to_string(common::ledger_certificate()).unwrap_or_default();
    receipt.verify(&service_cert)?;
    println!("receipt for {} verified", receipt.transaction_id);
    Ok(())
}

//! Append an entry and make sure it is durable, two ways.

mod common;

use vellum_client::{AppendToLedgerOptions, TransactionState};

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let first = client.append_to_ledger("Hello world!", None).await?;
    println!("appended at {}", first.transaction_id);
    client
        .wait_until_durable(&first.transaction_id, None)
        .await?;
    let status = client
        .get_transaction_status(&first.transaction_id, None)
        .await?;
    assert_eq!(status.state, TransactionState::Committed);

    // Alternatively, wait when appending.
    let again = client
        .append_to_ledger(
            "Hello world, again!",
            Some(AppendToLedgerOptions {
                wait_for_commit: true,
                ..Default::default()
            }),
        )
        .await?;
    let status = client
        .get_transaction_status(&again.transaction_id, None)
        .await?;
    assert_eq!(status.state, TransactionState::Committed);
    println!("{} is committed", again.transaction_id);
    Ok(())
}

//! A ranged query: every entry of a sub-ledger from a transaction id on, streamed page by page.

mod common;

use futures_util::StreamExt;
use vellum_client::{AppendToLedgerOptions, GetLedgerEntriesOptions};

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let opts = AppendToLedgerOptions {
        sub_ledger_id: Some("ranged".into()),
        ..Default::default()
    };
    let first = client
        .append_to_ledger("entry 0", Some(opts.clone()))
        .await?;
    for i in 1..10 {
        let wait = i == 9;
        client
            .append_to_ledger(
                &format!("entry {i}"),
                Some(AppendToLedgerOptions {
                    wait_for_commit: wait,
                    ..opts.clone()
                }),
            )
            .await?;
    }
    let mut entries = client.get_ledger_entries(Some(GetLedgerEntriesOptions {
        from_transaction_id: Some(first.transaction_id),
        sub_ledger_id: Some("ranged".into()),
        ..Default::default()
    }));
    let mut n = 0;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        println!(
            "Transaction id {} contents: {}",
            entry.transaction_id, entry.contents
        );
        n += 1;
    }
    assert!(n >= 10);
    Ok(())
}

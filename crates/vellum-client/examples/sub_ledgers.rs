//! Write to different sub-ledgers; read entries by id and the latest, with and without a
//! sub-ledger.

mod common;

use vellum_client::{AppendToLedgerOptions, GetLedgerEntryOptions};

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let to = |s: &str| {
        Some(AppendToLedgerOptions {
            sub_ledger_id: Some(s.into()),
            ..Default::default()
        })
    };
    client
        .append_to_ledger("Hello from Alice", to("Alice"))
        .await?;
    client.append_to_ledger("Hello from Bob", to("Bob")).await?;

    // Without a sub-ledger, the service default is used; the result says which.
    let result = client
        .append_to_ledger(
            "Hello world?",
            Some(AppendToLedgerOptions {
                wait_for_commit: true,
                ..Default::default()
            }),
        )
        .await?;
    let by_subledger = client
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            transaction_id: Some(result.transaction_id.clone()),
            sub_ledger_id: Some(result.sub_ledger_id.clone()),
            ..Default::default()
        }))
        .await?;
    assert_eq!(by_subledger.contents, "Hello world?");
    let entry = client
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            transaction_id: Some(result.transaction_id.clone()),
            ..Default::default()
        }))
        .await?;
    assert_eq!(entry.contents, by_subledger.contents);
    assert_eq!(entry.sub_ledger_id, by_subledger.sub_ledger_id);

    // The latest entry of a sub-ledger.
    let mut last = to("sub-ledger");
    client
        .append_to_ledger("Hello world sub-ledger 0", last.clone())
        .await?;
    if let Some(o) = last.as_mut() {
        o.wait_for_commit = true;
    }
    client
        .append_to_ledger("Hello world sub-ledger 1", last)
        .await?;
    let latest = client
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            sub_ledger_id: Some("sub-ledger".into()),
            ..Default::default()
        }))
        .await?;
    assert_eq!(latest.contents, "Hello world sub-ledger 1");
    println!("sub-ledgers: {:?}", client.list_sub_ledgers(None).await?);
    Ok(())
}

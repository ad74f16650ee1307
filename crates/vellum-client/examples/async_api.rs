//! The async API: concurrent appends from one client, then the latest entry and a range.

mod common;

use futures_util::StreamExt;
use vellum_client::{GetLedgerEntriesOptions, WaitUntilDurableOptions};

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let writes = (0..8).map(|i| {
        let c = client.clone();
        async move { c.append_to_ledger(&format!("concurrent {i}"), None).await }
    });
    let results: Vec<_> = futures_util::future::join_all(writes).await;
    let mut ids = Vec::new();
    for r in results {
        ids.push(r?.transaction_id);
    }
    ids.sort_by_key(|t| t.split('.').nth(1).and_then(|s| s.parse::<u64>().ok()));
    let last = ids.last().cloned().unwrap_or_default();
    client
        .wait_until_durable(&last, Some(WaitUntilDurableOptions::default()))
        .await?;
    let entry = client.get_ledger_entry(None).await?;
    println!("latest: {} ({})", entry.contents, entry.sub_ledger_id);
    let query = client.get_ledger_entries(Some(GetLedgerEntriesOptions {
        from_transaction_id: ids.first().cloned(),
        ..Default::default()
    }));
    let n = query
        .filter(|e| futures_util::future::ready(e.is_ok()))
        .count()
        .await;
    println!(
        "{n} entries since {}",
        ids.first().cloned().unwrap_or_default()
    );
    Ok(())
}

//! Troubleshooting: typed errors for a missing transaction, and detailed logging of one call.

mod common;

use vellum_client::{ErrorKind, GetLedgerEntryOptions, MethodOptions};

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    // Detailed logs (request and response bodies, never credentials) at DEBUG.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("vellum_client=debug"))
        .init();
    let client = common::admin_client()?;
    match client
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            transaction_id: Some("10000.100000".into()),
            method_options: MethodOptions {
                logging_enable: Some(true),
            },
            ..Default::default()
        }))
        .await
    {
        Err(e) if e.kind() == &ErrorKind::NotFound => {
            println!("not found ({}): {}", e.code().unwrap_or("?"), e.message());
            Ok(())
        }
        Err(e) => Err(e),
        Ok(entry) => {
            println!("unexpectedly found {entry:?}");
            Ok(())
        }
    }
}

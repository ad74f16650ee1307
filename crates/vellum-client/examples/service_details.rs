//! Verify service details: consortium, constitution (digest checked), enclave quotes.

mod common;

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let consortium = client.get_consortium(None).await?;
    for member in &consortium.members {
        println!("member {}", member.id);
    }
    // The constitution's digest is checked against its contents by the client.
    let constitution = client.get_constitution(None).await?;
    println!("constitution digest {}", constitution.digest);
    let enclaves = client.get_enclave_quotes(None).await?;
    assert!(enclaves.quotes.contains_key(&enclaves.source_node));
    for (node_id, quote) in &enclaves.quotes {
        assert_eq!(node_id, &quote.node_id);
        println!(
            "node {node_id}: {} quote, mrenclave {}",
            quote.version, quote.mrenclave
        );
    }
    Ok(())
}

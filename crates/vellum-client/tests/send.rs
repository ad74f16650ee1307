//! Every future the async client returns is `Send`, so it can be spawned on a multi-threaded
//! runtime (checked at compile time).

use vellum_client::ConfidentialLedgerClient;

fn send<T: Send>(_: &T) {}

#[allow(dead_code)]
fn check(c: &ConfidentialLedgerClient) {
    send(&c.append_to_ledger("x", None));
    send(&c.get_ledger_entry(None));
    send(&c.get_ledger_entries(None));
    send(&c.get_transaction_status("2.1", None));
    send(&c.wait_until_durable("2.1", None));
    send(&c.get_transaction_receipt("2.1", None));
    send(&c.list_sub_ledgers(None));
    send(&c.list_users(None));
    send(&c.get_user("u", None));
    send(&c.delete_user("u", None));
    send(&c.get_consortium(None));
    send(&c.get_constitution(None));
    send(&c.get_enclave_quotes(None));
    send(&c.list_nodes(None));
    send(&c.create_join_token(None));
    send(&c.remove_node("ab", None));
    send(&c.vellum_null(b"{}"));
}

#[test]
fn client_futures_are_send() {
    let _ = check;
}

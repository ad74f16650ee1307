//! The Rust client library against a real node over TLS: every operation, async and blocking,
//! with certificate and token credentials; a range over several pages; receipts verified and
//! a tampered receipt rejected; errors of each kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use vellum_client::models::UserDefinedRole;
use vellum_client::*;
use vellum_node::testing::TestServer;

/// A token credential handing out tokens the test server's issuer signed (what
/// `azure_identity` would fetch from Entra ID).
#[derive(Debug)]
struct IssuerToken(String);

#[async_trait::async_trait]
impl TokenCredential for IssuerToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, [DEFAULT_SCOPE]);
        Ok(azure_core::credentials::AccessToken::new(
            self.0.clone(),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

fn fast() -> PollOptions {
    PollOptions {
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    }
}

fn cert_client(srv: &TestServer) -> ConfidentialLedgerClient {
    ConfidentialLedgerClient::new(
        &srv.endpoint,
        ConfidentialLedgerCertificateCredential::new(srv.path("admin.pem")).unwrap(),
        srv.path("service_cert.pem"),
        None,
    )
    .unwrap()
}

fn token_client(srv: &TestServer, oid: &str) -> ConfidentialLedgerClient {
    let cred: Arc<dyn TokenCredential> = Arc::new(IssuerToken(srv.token(oid)));
    ConfidentialLedgerClient::new(
        &srv.endpoint,
        cred,
        LedgerCertificate::Pem(srv.service_cert()),
        None,
    )
    .unwrap()
}

async fn every_operation(c: &ConfidentialLedgerClient, srv: &TestServer, tag: &str) {
    let service_cert = srv.service_cert();
    // Append, wait, status.
    let r = c
        .append_to_ledger(&format!("hello {tag}"), None)
        .await
        .unwrap();
    assert_eq!(r.sub_ledger_id, "subledger:0");
    let s = c
        .wait_until_durable(
            &r.transaction_id,
            Some(WaitUntilDurableOptions {
                poll: fast(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(s.state, TransactionState::Committed);
    let s = c
        .get_transaction_status(&r.transaction_id, None)
        .await
        .unwrap();
    assert_eq!(
        (s.transaction_id.as_str(), s.state),
        (r.transaction_id.as_str(), TransactionState::Committed)
    );
    let w = c
        .append_to_ledger(
            &format!("again {tag}"),
            Some(AppendToLedgerOptions {
                wait_for_commit: true,
                poll: fast(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        c.get_transaction_status(&w.transaction_id, None)
            .await
            .unwrap()
            .state,
        TransactionState::Committed
    );
    // Receipt: verifies; tampered, it does not.
    let receipt = c
        .get_transaction_receipt(&r.transaction_id, None)
        .await
        .unwrap();
    receipt.verify(&service_cert).unwrap();
    let mut bad = receipt.contents.clone();
    bad["leafComponents"]["writeSetDigest"] = serde_json::Value::String("00".repeat(32));
    let mut tampered = receipt.clone();
    tampered.contents = bad;
    assert_eq!(
        tampered.verify(&service_cert).unwrap_err().kind(),
        &ErrorKind::Verification
    );
    // The entry's application claim comes with it and is checked: changed, it fails.
    let claims = receipt
        .application_claims
        .clone()
        .expect("the write's claim");
    assert_eq!(claims.len(), 1);
    let mut forged = receipt.clone();
    if let Some(vellum_core::receipt::ApplicationClaim::LedgerEntry { ledger_entry }) = forged
        .application_claims
        .as_mut()
        .and_then(|c| c.first_mut())
    {
        ledger_entry.contents.push('!');
    }
    assert_eq!(
        forged.verify(&service_cert).unwrap_err().kind(),
        &ErrorKind::Verification
    );
    // Against another service's certificate, it does not verify either.
    let other = vellum_ledger::identity::Identity::service("other", SystemTime::now(), 1).unwrap();
    assert!(receipt.verify(&other.cert_pem).is_err());
    // Entries: at an id, latest, in a sub-ledger.
    let e = c
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            transaction_id: Some(r.transaction_id.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(e.contents, format!("hello {tag}"));
    let latest = c.get_ledger_entry(None).await.unwrap();
    assert_eq!(latest.contents, format!("again {tag}"));
    let coll = format!("sub-{tag}");
    let sub = AppendToLedgerOptions {
        sub_ledger_id: Some(coll.clone()),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            c.append_to_ledger(&format!("{tag} {i}"), Some(sub.clone()))
                .await
                .unwrap()
                .transaction_id,
        );
    }
    c.wait_until_durable(
        ids.last().unwrap(),
        Some(WaitUntilDurableOptions {
            poll: fast(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let e = c
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            sub_ledger_id: Some(coll.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        (e.contents.as_str(), e.sub_ledger_id.as_str()),
        (format!("{tag} 9").as_str(), coll.as_str())
    );
    // Range over several pages (the server pages by 3).
    let got: Vec<LedgerEntryResult> = c
        .get_ledger_entries(Some(GetLedgerEntriesOptions {
            from_transaction_id: Some(ids[0].clone()),
            sub_ledger_id: Some(coll.clone()),
            ..Default::default()
        }))
        .collect()
        .await;
    let got: Vec<_> = got.into_iter().map(|e| e.unwrap()).collect();
    assert_eq!(
        got.iter()
            .map(|e| e.transaction_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(c.list_sub_ledgers(None).await.unwrap().contains(&coll));
    // Users.
    let uid = format!("user-{tag}");
    let u = c
        .create_or_update_user(&uid, LedgerUserRole::Contributor, None)
        .await
        .unwrap();
    assert_eq!(
        (u.id.as_str(), u.role),
        (uid.as_str(), LedgerUserRole::Contributor)
    );
    c.create_or_update_user(&uid, LedgerUserRole::Reader, None)
        .await
        .unwrap();
    assert_eq!(
        c.get_user(&uid, None).await.unwrap().role,
        LedgerUserRole::Reader
    );
    assert!(
        c.list_users(None)
            .await
            .unwrap()
            .iter()
            .any(|u| u.id == uid)
    );
    c.delete_user(&uid, None).await.unwrap();
    assert_eq!(
        c.get_user(&uid, None).await.unwrap_err().kind(),
        &ErrorKind::NotFound
    );
    // Custom roles and users with several roles.
    let role = format!("auditor-{tag}");
    c.create_user_defined_role(
        &[UserDefinedRole::new(
            &role,
            ["Microsoft.ConfidentialLedger/ledger/receipts/read"],
        )],
        None,
    )
    .await
    .unwrap();
    c.update_user_defined_role(&[UserDefinedRole::new(&role, ["/app/own"])], None)
        .await
        .unwrap();
    let got = c.get_user_defined_role(&role, None).await.unwrap();
    assert_eq!(
        got.actions,
        [
            "/app/own",
            "Microsoft.ConfidentialLedger/ledger/receipts/read"
        ]
    );
    let u = c
        .create_or_update_ledger_user(&uid, &["reader", role.as_str()], None)
        .await
        .unwrap();
    assert_eq!(u.roles, ["Reader", role.as_str()]);
    assert_eq!(c.get_ledger_user(&uid, None).await.unwrap(), u);
    assert!(c.list_ledger_users(None).await.unwrap().contains(&u));
    assert_eq!(
        c.get_user(&uid, None).await.unwrap().role,
        LedgerUserRole::Reader
    );
    c.delete_ledger_user(&uid, None).await.unwrap();
    c.delete_user_defined_role(&role, None).await.unwrap();
    assert_eq!(
        c.get_user_defined_role(&role, None)
            .await
            .unwrap_err()
            .kind(),
        &ErrorKind::NotFound
    );
    // Service details.
    let consortium = c.get_consortium(None).await.unwrap();
    assert_eq!(consortium.members.len(), 1);
    c.get_constitution(None)
        .await
        .unwrap()
        .verify_digest()
        .unwrap();
    let enclaves = c.get_enclave_quotes(None).await.unwrap();
    assert!(enclaves.quotes.contains_key(&enclaves.source_node));
    assert_eq!(
        enclaves.quotes[&enclaves.source_node].version,
        "Insecure_Virtual"
    );
    // Not found.
    let err = c
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            transaction_id: Some("10000.100000".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.status(), err.code()),
        (
            &ErrorKind::NotFound,
            Some(404),
            Some("InvalidTransactionId")
        )
    );
    let err = c
        .wait_until_durable("10000.100000", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound);
    let err = c.get_transaction_status("abc", None).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument);
}

type LedgerEntryResult = Result<vellum_client::models::LedgerEntry>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_with_certificate_and_token() {
    let srv = TestServer::start(3).await;
    let admin = cert_client(&srv);
    every_operation(&admin, &srv, "cert").await;
    let oid = "aad-oid-1";
    admin
        .create_or_update_user(oid, LedgerUserRole::Administrator, None)
        .await
        .unwrap();
    every_operation(&token_client(&srv, oid), &srv, "token").await;
    // Identity service client, pinned to the node's certificate.
    let id = ConfidentialLedgerIdentityServiceClient::new(
        &srv.endpoint,
        Some(IdentityServiceClientOptions {
            trust_anchor_pem: Some(srv.service_cert()),
            ..Default::default()
        }),
    )
    .unwrap()
    .get_ledger_identity(&srv.ledger_id, None)
    .await
    .unwrap();
    assert_eq!(id.ledger_tls_certificate, srv.service_cert());
    // Authorization and authentication errors.
    admin
        .create_or_update_user("reader-oid", LedgerUserRole::Reader, None)
        .await
        .unwrap();
    let reader = token_client(&srv, "reader-oid");
    reader.list_sub_ledgers(None).await.unwrap();
    let err = reader.append_to_ledger("nope", None).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (&ErrorKind::Authorization, Some("NotAllowed"))
    );
    let forged: Arc<dyn TokenCredential> = Arc::new(IssuerToken("not-a-token".into()));
    let anon =
        ConfidentialLedgerClient::new(&srv.endpoint, forged, srv.path("service_cert.pem"), None)
            .unwrap();
    assert_eq!(
        anon.list_sub_ledgers(None).await.unwrap_err().kind(),
        &ErrorKind::Authentication
    );
    // A client that trusts another certificate refuses the connection.
    let other = vellum_ledger::identity::Identity::service("other", SystemTime::now(), 1).unwrap();
    let wrong = ConfidentialLedgerClient::new(
        &srv.endpoint,
        ConfidentialLedgerCertificateCredential::new(srv.path("admin.pem")).unwrap(),
        LedgerCertificate::Pem(other.cert_pem.clone()),
        Some(ConfidentialLedgerClientOptions {
            retry: RetryOptions {
                max_retries: 0,
                ..Default::default()
            },
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(
        wrong.list_sub_ledgers(None).await.unwrap_err().kind(),
        &ErrorKind::Connection
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_client_with_certificate_and_token() {
    let srv = TestServer::start(4).await;
    let endpoint = srv.endpoint.clone();
    let admin_pem = srv.path("admin.pem");
    let cert = srv.service_cert();
    let token = srv.token("blocking-oid");
    let ledger_id = srv.ledger_id.clone();
    tokio::task::spawn_blocking(move || {
        let admin = blocking::ConfidentialLedgerClient::new(
            &endpoint,
            ConfidentialLedgerCertificateCredential::new(&admin_pem).unwrap(),
            LedgerCertificate::Pem(cert.clone()),
            None,
        )
        .unwrap();
        admin
            .create_or_update_user("blocking-oid", LedgerUserRole::Contributor, None)
            .unwrap();
        let cred: Arc<dyn TokenCredential> = Arc::new(IssuerToken(token));
        let user = blocking::ConfidentialLedgerClient::new(
            &endpoint,
            cred,
            LedgerCertificate::Pem(cert.clone()),
            None,
        )
        .unwrap();
        for c in [&admin, &user] {
            let mut ids = Vec::new();
            for i in 0..9 {
                ids.push(
                    c.append_to_ledger(
                        &format!("b{i}"),
                        Some(AppendToLedgerOptions {
                            sub_ledger_id: Some("blk".into()),
                            ..Default::default()
                        }),
                    )
                    .unwrap()
                    .transaction_id,
                );
            }
            let last = ids.last().unwrap();
            c.wait_until_durable(
                last,
                Some(WaitUntilDurableOptions {
                    poll: fast(),
                    ..Default::default()
                }),
            )
            .unwrap();
            assert_eq!(
                c.get_transaction_status(last, None).unwrap().state,
                TransactionState::Committed
            );
            c.get_transaction_receipt(last, None)
                .unwrap()
                .verify(&cert)
                .unwrap();
            let e = c
                .get_ledger_entry(Some(GetLedgerEntryOptions {
                    transaction_id: Some(last.clone()),
                    sub_ledger_id: Some("blk".into()),
                    ..Default::default()
                }))
                .unwrap();
            assert_eq!(e.contents, "b8");
            let got: Vec<String> = c
                .get_ledger_entries(Some(GetLedgerEntriesOptions {
                    from_transaction_id: Some(ids[0].clone()),
                    sub_ledger_id: Some("blk".into()),
                    ..Default::default()
                }))
                .map(|e| e.unwrap().transaction_id)
                .collect();
            assert_eq!(got, ids);
            assert!(
                c.list_sub_ledgers(None)
                    .unwrap()
                    .contains(&"blk".to_owned())
            );
            c.get_consortium(None).unwrap();
            c.get_constitution(None).unwrap();
            c.get_enclave_quotes(None).unwrap();
        }
        admin
            .create_or_update_user("x", LedgerUserRole::Reader, None)
            .unwrap();
        assert_eq!(
            admin.get_user("x", None).unwrap().role,
            LedgerUserRole::Reader
        );
        assert!(admin.list_users(None).unwrap().len() >= 3);
        admin.delete_user("x", None).unwrap();
        assert_eq!(
            user.get_user("x", None).unwrap_err().kind(),
            &ErrorKind::Authorization
        );
        let id = blocking::ConfidentialLedgerIdentityServiceClient::new(
            &endpoint,
            Some(IdentityServiceClientOptions {
                trust_anchor_pem: Some(cert.clone()),
                ..Default::default()
            }),
        )
        .unwrap()
        .get_ledger_identity(&ledger_id, None)
        .unwrap();
        assert_eq!(id.ledger_id, ledger_id);
    })
    .await
    .unwrap();
    srv.stop().await;
}

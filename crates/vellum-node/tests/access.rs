//! Users with several roles, custom roles and role-based access by action, over HTTPS on a
//! real node (`acl-2024-api.md` §4): `/app/ledgerUsers`, `/app/roles`, the single-role view
//! `/app/users`, and paged lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use common::TestServer;
use serde_json::{Value, json};
use vellum_ledger::identity::Identity;

const V24: &str = "api-version=2024-12-09-preview";
const V26: &str = "api-version=2026-07-31-preview";

async fn body_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Follows `nextLink` from `first`, collecting `key` of every page; returns them and the
/// number of pages.
async fn all_pages(c: &reqwest::Client, e: &str, first: String, key: &str) -> (Vec<Value>, usize) {
    let mut url = first;
    let (mut items, mut pages) = (Vec::new(), 0);
    loop {
        let (status, v) = body_of(c.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{url}: {v}");
        pages += 1;
        items.extend(v[key].as_array().unwrap().iter().cloned());
        match v["nextLink"].as_str() {
            Some(n) => url = format!("{e}{n}"),
            None => return (items, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_roles_custom_roles_and_access_by_action() {
    let srv = TestServer::start(2).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    let id = Identity::client("Auditor", SystemTime::now(), 30).unwrap();
    let (auditor_pem, auditor_id) = (id.combined_pem(), id.cert.acl_fingerprint());
    let auditor = srv.client(Some(&auditor_pem));
    let enc = auditor_id.replace(':', "%3A");

    // A custom role must be defined before it is given.
    let (status, v) = body_of(
        admin
            .patch(format!("{e}/app/ledgerUsers/{enc}?{V24}"))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"assignedRoles":["receiptsOnly"]}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("InvalidInput")),
        "{v}"
    );
    // Define it (the 2.0.0b2 body), read it back in every spelling.
    let r = admin
        .put(format!("{e}/app/roles?{V24}"))
        .json(&json!({"roles": [{"roleName": "receiptsOnly",
            "roleActions": ["Microsoft.ConfidentialLedger/ledger/receipts/read"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, v) = body_of(
        admin
            .get(format!("{e}/app/roles?{V24}&roleName=receiptsOnly"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for key in ["roles", "role"] {
        assert_eq!(v[key][0]["roleName"], "receiptsOnly");
        assert_eq!(v[key][0]["role_name"], "receiptsOnly");
        assert_eq!(
            v[key][0]["roleActions"],
            json!(["Microsoft.ConfidentialLedger/ledger/receipts/read"])
        );
    }
    // Built-in names are refused as custom roles; unknown roles are 404.
    let (status, _) = body_of(
        admin
            .put(format!("{e}/app/roles?{V24}"))
            .json(&json!([{"roleName": "reader", "roleActions": []}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = body_of(
        admin
            .get(format!("{e}/app/roles?{V24}&roleName=nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);

    // The user holds only the custom role: it reads receipts and nothing else.
    let (status, v) = body_of(
        admin
            .patch(format!("{e}/app/ledgerUsers/{enc}?{V24}"))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"assignedRoles":["receiptsOnly"],"user_id":"ignored"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"assignedRoles": ["receiptsOnly"], "userId": auditor_id})
    );
    let w = admin
        .post(format!("{e}/app/transactions?{V24}"))
        .header("x-vellum-wait", "committed")
        .json(&json!({"contents": "audited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 200);
    let txid = w.headers()["x-ms-ccf-transaction-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, v) = body_of(
        auditor
            .get(format!("{e}/app/transactions/{txid}/receipt?{V24}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["receipt"]["signature"].is_string(), "{v}");
    let refused = [
        ("GET", format!("/app/transactions/{txid}")),
        ("GET", "/app/transactions".to_owned()),
        ("GET", "/app/transactions/current".to_owned()),
        ("GET", format!("/app/transactions/{txid}/status")),
        ("POST", "/app/transactions".to_owned()),
        ("GET", "/app/collections".to_owned()),
        ("GET", "/app/collections/tags".to_owned()),
        ("GET", "/app/subLedgerIds".to_owned()),
        ("GET", "/app/users".to_owned()),
        ("GET", "/app/ledgerUsers".to_owned()),
        ("GET", format!("/app/ledgerUsers/{enc}")),
        ("PATCH", format!("/app/ledgerUsers/{enc}")),
        ("DELETE", format!("/app/users/{enc}")),
        ("GET", "/app/roles".to_owned()),
        ("PUT", "/app/roles".to_owned()),
        ("DELETE", "/app/roles".to_owned()),
        ("GET", "/app/governance/members".to_owned()),
        ("GET", "/app/governance/constitution".to_owned()),
        ("GET", "/app/enclaveQuotes".to_owned()),
        ("GET", "/app/userDefinedFunctions".to_owned()),
        ("PUT", "/app/userDefinedFunctions/f".to_owned()),
        ("POST", "/node/join-tokens".to_owned()),
    ];
    for (method, path) in &refused {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, v) = body_of(
            auditor
                .request(m, format!("{e}{path}?{V24}&roleName=receiptsOnly"))
                .header("content-type", "application/json")
                .body(r#"{"contents":"x","assignedRoles":["Administrator"]}"#)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        // The same body as for any other refusal (the path as sent).
        assert_eq!(
            v,
            json!({"error": {"code": "NotAllowed",
                "message": format!("Not allowed to call {method} {path}")}}),
            "{method} {path}"
        );
    }

    // PATCH adds actions; the change applies on the next request.
    let r = admin
        .patch(format!("{e}/app/roles?{V26}"))
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"roles": [{"role_name": "receiptsOnly",
            "role_actions": ["Microsoft.ConfidentialLedger/ledger/read"]}]}))
        .send()
        .await
        .unwrap();
    let (status, v) = body_of(r).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["roles"][0]["roleActions"],
        json!([
            "Microsoft.ConfidentialLedger/ledger/read",
            "Microsoft.ConfidentialLedger/ledger/receipts/read"
        ])
    );
    let (status, v) = body_of(
        auditor
            .get(format!("{e}/app/transactions/{txid}?{V24}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["entry"]["contents"], "audited");

    // Several roles: a built-in one and the custom one; the single-role view shows the
    // built-in one.
    let r = admin
        .patch(format!("{e}/app/ledgerUsers/{enc}?{V24}"))
        .json(&json!({"assignedRoles": ["contributor", "receiptsOnly", "Contributor"]}))
        .send()
        .await
        .unwrap();
    let (status, v) = body_of(r).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["assignedRoles"], json!(["Contributor", "receiptsOnly"]));
    let (_, v) = body_of(
        admin
            .get(format!("{e}/app/users/{enc}?{V24}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        v,
        json!({"assignedRole": "Contributor", "userId": auditor_id})
    );
    let w = auditor
        .post(format!("{e}/app/transactions?{V24}"))
        .json(&json!({"contents": "by the auditor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 200);

    // Deleting the role: 204 on 2026-07-31-preview, 200 before; the user keeps its name.
    let r = admin
        .delete(format!("{e}/app/roles?{V26}&roleName=receiptsOnly"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = body_of(
        admin
            .delete(format!("{e}/app/roles?{V24}&roleName=receiptsOnly"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    admin
        .put(format!("{e}/app/roles?{V24}"))
        .json(&json!([{"roleName": "temp", "roleActions": ["/x"]}]))
        .send()
        .await
        .unwrap();
    let r = admin
        .delete(format!("{e}/app/roles?{V24}&roleName=temp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Paged lists: users (3 per the single-role and the several-role view), members,
    // collections, with a page size of 2.
    for oid in ["oid-1", "oid-2"] {
        let r = admin
            .patch(format!("{e}/app/ledgerUsers/{oid}?{V24}"))
            .json(&json!({"assignedRoles": ["Reader"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (users, pages) = all_pages(
        &admin,
        &e,
        format!("{e}/app/ledgerUsers?{V24}"),
        "ledgerUsers",
    )
    .await;
    assert_eq!(users.len(), 4, "{users:?}");
    assert!(pages >= 2);
    assert!(users.iter().all(|u| u["assignedRoles"].is_array()));
    let (single, _) = all_pages(&admin, &e, format!("{e}/app/users?{V24}"), "ledgerUsers").await;
    let ids = |l: &[Value]| -> Vec<String> {
        l.iter()
            .map(|u| u["userId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&single), ids(&users));
    for c in ["a", "b", "c"] {
        admin
            .post(format!("{e}/app/transactions?{V24}&collectionId={c}"))
            .header("x-vellum-wait", "committed")
            .json(&json!({"contents": c}))
            .send()
            .await
            .unwrap();
    }
    let (collections, pages) = all_pages(
        &admin,
        &e,
        format!("{e}/app/collections?{V24}"),
        "collections",
    )
    .await;
    assert_eq!(
        collections,
        json!([{"collectionId": "a"}, {"collectionId": "b"}, {"collectionId": "c"},
            {"collectionId": "subledger:0"}])
        .as_array()
        .unwrap()
        .clone()
    );
    assert_eq!(pages, 2);
    let (members, _) = all_pages(
        &admin,
        &e,
        format!("{e}/app/governance/members?{V24}"),
        "members",
    )
    .await;
    assert!(!members.is_empty());

    // DELETE /app/ledgerUsers/{id}: 204, then 404.
    for want in [204, 404] {
        let r = admin
            .delete(format!("{e}/app/ledgerUsers/oid-1?{V24}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    // The role and user changes are transactions: the ledger verifies with them.
    common::audit(&ledger, &secret);
    if common::python().is_some() {
        common::ccf_full(&ledger);
    }
}

/// Microsoft's azure-confidentialledger 2.0.0b2, unchanged, at its default api-version
/// (2024-12-09-preview): its README's examples for tags, users and receipt verification with
/// application claims, ledger users with several roles, custom roles (one user refused
/// everything its role does not allow), paged lists, sync and async, certificate and token.
/// The ledger it leaves verifies with `vellum audit` and CCF's own verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_2_suite_then_the_ledger_verifies() {
    let Some(py) = common::python_sdk2() else {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python with azure-confidentialledger 2.0.0b2"
        );
        eprintln!("skipping: no .venv-sdk2 (scripts/test.sh sets it up)");
        return;
    };
    let srv = TestServer::start(3).await;
    let passes = common::run_sdk_suite(&srv, py, "sdk2_suite.py").await;
    assert!(passes > 60, "only {passes} checks ran");
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    let n = common::audit(&ledger, &secret);
    assert!(n > 50, "audited {n}");
    common::ccf_full(&ledger);
}

/// User-defined functions are stored as transactions (`acl-2024-api.md` §5.1): PUT 201 then
/// 200, GET, a paged list, DELETE 204 then 404; code that does not compile, or an id with `:`,
/// is refused with nothing written; Readers read them, only Administrators store them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_defined_functions_are_stored_as_transactions() {
    let srv = TestServer::start(2).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    let code = "export function main(name) { return 'hello ' + name; }";
    let r = admin
        .post(format!("{e}/app/transactions?{V24}"))
        .json(&json!({"contents": "an entry, for the audit's claims check"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (want, body) in [(201, code), (200, code)] {
        let r = admin
            .put(format!("{e}/app/userDefinedFunctions/greet?{V24}"))
            .json(&json!({"code": body, "id": "ignored"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        assert!(r.headers().contains_key("x-ms-ccf-transaction-id"));
        let (_, v) = body_of(r).await;
        assert_eq!(v, json!({"code": code, "id": "greet"}));
    }
    for id in ["b", "c"] {
        admin
            .put(format!("{e}/app/userDefinedFunctions/{id}?{V24}"))
            .json(&json!({"code": "export const main = () => 1;"}))
            .send()
            .await
            .unwrap();
    }
    let (all, pages) = all_pages(
        &admin,
        &e,
        format!("{e}/app/userDefinedFunctions?{V24}"),
        "functions",
    )
    .await;
    let ids: Vec<&str> = all.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!((ids, pages), (vec!["b", "c", "greet"], 2));
    // Refused, nothing written.
    let before = srv.node.last_txid();
    for (path, body, code) in [
        (
            "bad",
            json!({"code": "export function main( {"}),
            "InvalidInput",
        ),
        (
            "a%3Ab",
            json!({"code": "export const main = () => 1;"}),
            "InvalidResourceName",
        ),
        ("nocode", json!({"id": "nocode"}), "InvalidInput"),
    ] {
        let (status, v) = body_of(
            admin
                .put(format!("{e}/app/userDefinedFunctions/{path}?{V24}"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}: {v}"
        );
    }
    assert_eq!(srv.node.last_txid(), before);
    // A Reader reads functions and cannot store or delete them.
    let id = Identity::client("Reader", SystemTime::now(), 30).unwrap();
    let (reader_pem, reader_id) = (id.combined_pem(), id.cert.acl_fingerprint());
    admin
        .patch(format!(
            "{e}/app/ledgerUsers/{}?{V24}",
            reader_id.replace(':', "%3A")
        ))
        .json(&json!({"assignedRoles": ["Reader"]}))
        .send()
        .await
        .unwrap();
    let reader = srv.client(Some(&reader_pem));
    let (status, v) = body_of(
        reader
            .get(format!("{e}/app/userDefinedFunctions/greet?{V24}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (200, Some(code)));
    for r in [
        reader
            .put(format!("{e}/app/userDefinedFunctions/greet?{V24}"))
            .json(&json!({"code": "x"})),
        reader.delete(format!("{e}/app/userDefinedFunctions/greet?{V24}")),
    ] {
        assert_eq!(r.send().await.unwrap().status(), 403);
    }
    for want in [204, 404] {
        let r = admin
            .delete(format!("{e}/app/userDefinedFunctions/greet?{V24}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
}

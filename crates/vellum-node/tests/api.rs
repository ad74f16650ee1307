//! The ACL-compatible HTTPS API of a real node on a loopback port: the official Python SDK's
//! suite, bad input, authentication and authorization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::TestServer;
use serde_json::{Value, json};
use vellum_ledger::identity::Identity;

const V: &str = "api-version=2022-05-13";

fn new_client_identity(cn: &str) -> (String, String) {
    let id = Identity::client(cn, SystemTime::now(), 30).unwrap();
    (id.combined_pem(), id.cert.acl_fingerprint())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_suite_then_the_ledger_verifies() {
    let Some(py) = common::python() else {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python found"
        );
        eprintln!("skipping: no Python with azure-confidentialledger");
        return;
    };
    let srv = TestServer::start(4).await;
    let passes = common::run_sdk_suite(&srv, py, "sdk_suite.py").await;
    assert!(passes > 80, "only {passes} checks ran");
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    let n = common::audit(&ledger, &secret);
    assert!(n > 50, "audited {n}");
    common::ccf_full(&ledger);
}

async fn body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert!(
        r.headers().contains_key("x-ms-ccf-transaction-id"),
        "no transaction id header on a {status}"
    );
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_ccf_error(status: u16, v: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {v}");
    let code = v["error"]["code"].as_str().unwrap_or("");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        !code.is_empty() && !msg.is_empty(),
        "{what}: not a CCF error body: {v}"
    );
}

/// The transaction id a response names.
fn txid_of(r: &reqwest::Response) -> vellum_core::TxId {
    r.headers()["x-ms-ccf-transaction-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// What the default collection and the ledger hold (to show nothing was written).
async fn snapshot(srv: &TestServer, c: &reqwest::Client) -> (usize, usize, u64) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = c
        .get(format!("{}/app/transactions?{V}", srv.endpoint))
        .send()
        .await
        .unwrap();
    let (_, v) = body(e).await;
    let cols = c
        .get(format!("{}/app/collections?{V}", srv.endpoint))
        .send()
        .await
        .unwrap();
    let (_, cv) = body(cols).await;
    (
        v["entries"].as_array().unwrap().len(),
        cv["collections"].as_array().unwrap().len(),
        srv.node.last_txid().unwrap().seqno,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_ccf_4xx_and_writes_nothing() {
    let srv = TestServer::start(100).await;
    let c = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let r = c
        .post(format!("{e}/app/transactions?{V}"))
        .json(&json!({"contents": "seed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = snapshot(&srv, &c).await;

    let post = |q: &str, ct: Option<&str>, b: Vec<u8>| {
        let mut r = c.post(format!("{e}/app/transactions?{V}{q}")).body(b);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "malformed JSON",
            post("", json_ct, b"{\"contents\": ".to_vec()),
            400,
        ),
        ("not an object", post("", json_ct, b"[1,2]".to_vec()), 400),
        ("missing contents", post("", json_ct, b"{}".to_vec()), 400),
        (
            "numeric contents",
            post("", json_ct, b"{\"contents\": 5}".to_vec()),
            400,
        ),
        (
            "null contents",
            post("", json_ct, b"{\"contents\": null}".to_vec()),
            400,
        ),
        ("empty body", post("", json_ct, Vec::new()), 400),
        ("not UTF-8", post("", json_ct, vec![0xff, 0xfe, 0x22]), 400),
        (
            "wrong content type",
            post("", Some("text/plain"), b"{\"contents\":\"x\"}".to_vec()),
            415,
        ),
        (
            "contents over 8 KiB",
            post(
                "",
                json_ct,
                json!({"contents": "x".repeat(8193)})
                    .to_string()
                    .into_bytes(),
            ),
            413,
        ),
        (
            "body over the limit",
            post("", json_ct, vec![b' '; 200_000]),
            413,
        ),
        (
            "collection id over 256 bytes",
            post(
                &format!("&collectionId={}", "c".repeat(257)),
                json_ct,
                b"{\"contents\":\"x\"}".to_vec(),
            ),
            400,
        ),
        (
            "empty collection id",
            post("&collectionId=", json_ct, b"{\"contents\":\"x\"}".to_vec()),
            400,
        ),
        (
            "broken percent-encoding",
            post(
                "&collectionId=%zz",
                json_ct,
                b"{\"contents\":\"x\"}".to_vec(),
            ),
            400,
        ),
        (
            "truncated percent-encoding",
            post(
                "&collectionId=ab%2",
                json_ct,
                b"{\"contents\":\"x\"}".to_vec(),
            ),
            400,
        ),
        (
            "percent-encoded invalid UTF-8",
            post(
                "&collectionId=%ff%fe",
                json_ct,
                b"{\"contents\":\"x\"}".to_vec(),
            ),
            400,
        ),
        (
            "wrong method on the write route",
            c.put(format!("{e}/app/transactions?{V}")).body("{}"),
            405,
        ),
        (
            "DELETE an entry",
            c.delete(format!("{e}/app/transactions/2.1?{V}")),
            405,
        ),
        ("unknown route", c.get(format!("{e}/app/nothing?{V}")), 404),
    ];
    for (what, req, want) in cases {
        let (status, v) = body(req.send().await.unwrap()).await;
        assert_ccf_error(status, &v, want, what);
    }
    // Transaction ids that are not ids, on every route that takes one.
    let forty = "1".repeat(40);
    for bad in [
        "abc",
        "1.",
        ".1",
        "-1.2",
        "1.2.3",
        "1.-2",
        "%zz",
        "2.%31x",
        forty.as_str(),
        &format!("1.{forty}"),
        "0.5",
        "1.0",
        " 2.1",
    ] {
        for suffix in ["", "/status", "/receipt"] {
            let (status, v) = body(
                c.get(format!("{e}/app/transactions/{bad}{suffix}?{V}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert!(
                status == 400 || status == 404,
                "{bad}{suffix}: status {status}: {v}"
            );
            assert_ccf_error(status, &v, status, &format!("txid {bad:?}{suffix}"));
        }
        let (status, v) = body(
            c.get(format!("{e}/app/transactions?{V}&fromTransactionId={bad}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_ccf_error(status, &v, 400, &format!("range from {bad:?}"));
    }
    // Well-formed but unknown ids: 404 InvalidTransactionId, without Retry-After.
    for unknown in ["10000.100000", "1.99999999"] {
        let r = c
            .get(format!("{e}/app/transactions/{unknown}/status?{V}"))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("retry-after").is_none());
        let (status, v) = body(r).await;
        assert_ccf_error(status, &v, 404, unknown);
        assert_eq!(v["error"]["code"], "InvalidTransactionId");
    }
    // Unknown collections read as empty / not found.
    let (status, v) = body(
        c.get(format!(
            "{e}/app/transactions?{V}&collectionId=never-written"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, v["entries"].as_array().unwrap().len()), (200, 0));
    assert!(v.get("nextLink").is_none());
    let (status, v) = body(
        c.get(format!(
            "{e}/app/transactions/current?{V}&collectionId=never-written"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 404, "current of an unknown collection");
    // Bad user management input.
    let (status, v) = body(
        c.patch(format!("{e}/app/users/someone?{V}"))
            .header("content-type", "application/merge-patch+json")
            .body("{\"assignedRole\": \"Owner\"}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 400, "unknown role");
    let (status, v) = body(
        c.delete(format!("{e}/app/users/nobody?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 404, "delete an unknown user");

    assert_eq!(
        snapshot(&srv, &c).await,
        before,
        "a refused request wrote something"
    );
    // Any api-version, repeated too, is accepted.
    for q in [
        "api-version=2024-12-09-preview",
        "api-version=2022-05-13&api-version=2022-05-13",
        "",
    ] {
        let r = c
            .get(format!("{e}/app/collections?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{q}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_roles() {
    let srv = TestServer::start(100).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    // No credential: 401.
    let (status, v) = body(
        srv.client(None)
            .get(format!("{e}/app/collections?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 401, "anonymous");
    // An unknown certificate: 403.
    let (stranger, _) = new_client_identity("Stranger");
    let (status, v) = body(
        srv.client(Some(&stranger))
            .get(format!("{e}/app/collections?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 403, "unknown certificate");
    assert_eq!(v["error"]["code"], "NotAllowed");
    assert_eq!(
        v["error"]["message"],
        "Not allowed to call GET /app/collections"
    );
    // A Reader reads but cannot write.
    let (reader, reader_id) = new_client_identity("Reader");
    let r = admin
        .patch(format!("{e}/app/users/{reader_id}?{V}"))
        .header("content-type", "application/merge-patch+json")
        .body("{\"assignedRole\":\"Reader\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rc = srv.client(Some(&reader));
    assert_eq!(
        rc.get(format!("{e}/app/collections?{V}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, v) = body(
        rc.post(format!("{e}/app/transactions?{V}"))
            .json(&json!({"contents": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 403, "reader write");
    assert_eq!(
        v["error"]["message"],
        "Not allowed to call POST /app/transactions"
    );
    // Percent-encoded user ids (the JS client's form) name the same user.
    let enc = reader_id.replace(':', "%3A");
    let (status, v) = body(
        admin
            .get(format!("{e}/app/users/{enc}?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["assignedRole"].as_str()), (200, Some("Reader")));
    // Tokens: valid for a user, refused when forged, expired or for another audience.
    let oid = "0".repeat(36);
    admin
        .patch(format!("{e}/app/users/{oid}?{V}"))
        .header("content-type", "application/merge-patch+json")
        .body("{\"assignedRole\":\"Contributor\"}")
        .send()
        .await
        .unwrap();
    let anon = srv.client(None);
    let r = anon
        .post(format!("{e}/app/transactions?{V}"))
        .bearer_auth(srv.token(&oid))
        .json(&json!({"contents": "from a token user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-ms-ccf-transaction-id"));
    // Change one signature character well inside the signature (the last character carries
    // padding bits, so changing it may leave the signature bytes as they were).
    let mut forged: Vec<char> = srv.token(&oid).chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'x' { 'y' } else { 'x' };
    let forged: String = forged.into_iter().collect();
    let (status, v) = body(
        anon.get(format!("{e}/app/collections?{V}"))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 401, "forged token");
    let (status, v) = body(
        anon.get(format!("{e}/app/collections?{V}"))
            .bearer_auth("not.a.token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 401, "garbage token");
    // A token for a user who is not in the ledger: 403.
    let (status, v) = body(
        anon.get(format!("{e}/app/collections?{V}"))
            .bearer_auth(srv.token("someone-else"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 403, "token of a non-user");
    // A token whose oid is a consortium member's certificate fingerprint (any Reader can read
    // it) is not that member: it cannot mint join tokens.
    let members = srv.node.governance().unwrap().members;
    assert!(!members.is_empty());
    for (_, pem) in &members {
        let fp = vellum_core::crypto::Certificate::from_pem(pem)
            .unwrap()
            .acl_fingerprint();
        let (status, v) = body(
            anon.post(format!("{e}/node/join-tokens"))
                .bearer_auth(srv.token(&fp))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_ccf_error(status, &v, 403, "a token posing as a member");
    }
    // Users are listed, and the list is an audit trail in the ledger.
    let (_, v) = body(
        admin
            .get(format!("{e}/app/users?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = v["ledgerUsers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["userId"].as_str())
        .collect();
    assert!(
        ids.contains(&reader_id.as_str()) && ids.contains(&oid.as_str()),
        "{v}"
    );
    // The identity endpoint needs no credential.
    let (status, v) = body(
        anon.get(format!("{e}/ledgerIdentity/{}", srv.ledger_id))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["ledgerTlsCertificate"].as_str(),
        Some(srv.service_cert().as_str())
    );
    let (status, v) = body(
        anon.get(format!("{e}/ledgerIdentity/other"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ccf_error(status, &v, 404, "other ledger id");
    srv.stop().await;
}

/// Microsoft's JS client (`@azure-rest/confidential-ledger` 1.0.0, installed in
/// `tests/interop/js` by scripts/test.sh) runs the core flow; the receipt it fetched verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_core_flow() {
    let js = common::repo().join("tests/interop/js");
    if !js
        .join("node_modules/@azure-rest/confidential-ledger")
        .exists()
    {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but tests/interop/js has no node_modules (npm ci)"
        );
        eprintln!("skipping: run `npm ci` in tests/interop/js");
        return;
    }
    let srv = TestServer::start(3).await;
    let mut cmd = std::process::Command::new("node");
    cmd.arg(js.join("core_flow.mjs"))
        .current_dir(&js)
        .env("VELLUM_ENDPOINT", &srv.endpoint)
        .env("VELLUM_SERVICE_CERT", srv.path("service_cert.pem"))
        .env("NODE_EXTRA_CA_CERTS", srv.path("service_cert.pem"))
        .env("VELLUM_ADMIN_PEM", srv.path("admin.pem"))
        .env("VELLUM_LEDGER_ID", &srv.ledger_id)
        .env("VELLUM_PAGE_SIZE", srv.page_size.to_string());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL PASSED"),
        "the JS flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RECEIPT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .expect("the flow printed its receipt");
    let r = vellum_core::receipt::Receipt::from_json(&receipt["receipt"]).unwrap();
    r.verify(&srv.service_cert(), None).unwrap();
    srv.stop().await;
}

/// A small random-input fuzzer over the request parsers (paths, query strings, percent
/// escapes, transaction ids, JSON bodies, methods): every answer is a 2xx or a 4xx with a
/// CCF error body, never a 5xx, a panic or a hang; the node keeps serving and its ledger
/// verifies afterwards. `VELLUM_FUZZ_REQUESTS` sets the count (default 1,500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_get_2xx_or_ccf_4xx() {
    let n: usize = std::env::var("VELLUM_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let srv = TestServer::start(5).await;
    let c = srv.client(Some(&srv.admin_pem()));
    let e = srv.endpoint.clone();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: usize| -> usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let atoms = [
        "2.1",
        "2.5",
        "1.",
        ".1",
        "-1.2",
        "1.2.3",
        "abc",
        "%",
        "%2",
        "%zz",
        "%ff",
        "%00",
        "%2F",
        "%3A",
        "+",
        " ",
        "\u{e9}",
        "0",
        "18446744073709551615.1",
        "1.18446744073709551616",
        "current",
        "status",
        "receipt",
        "..",
        "subledger:0",
        "",
        "&",
        "=",
        "\u{1f600}",
    ];
    let paths = [
        "/app/transactions",
        "/app/transactions/{}",
        "/app/transactions/{}/status",
        "/app/transactions/{}/receipt",
        "/app/transactions/current",
        "/app/collections",
        "/app/users",
        "/app/users/{}",
        "/app/governance/members",
        "/app/governance/constitution",
        "/app/enclaveQuotes",
        "/ledgerIdentity/{}",
        "/{}",
        "/app/{}/{}",
    ];
    let keys = [
        "api-version",
        "collectionId",
        "subLedgerId",
        "fromTransactionId",
        "toTransactionId",
        "x",
        "",
    ];
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
        reqwest::Method::OPTIONS,
    ];
    let mut stats = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..n {
        let mut path = paths[rnd(paths.len())].to_owned();
        while path.contains("{}") {
            let mut seg = String::new();
            for _ in 0..rnd(3) + 1 {
                seg.push_str(atoms[rnd(atoms.len())]);
            }
            path = path.replacen("{}", &seg, 1);
        }
        let mut query = String::new();
        for i in 0..rnd(4) {
            if i > 0 {
                query.push('&');
            }
            query.push_str(keys[rnd(keys.len())]);
            query.push('=');
            query.push_str(atoms[rnd(atoms.len())]);
        }
        let payload: Vec<u8> = match rnd(6) {
            0 => Vec::new(),
            1 => json!({"contents": atoms[rnd(atoms.len())]})
                .to_string()
                .into_bytes(),
            2 => json!({"contents": rnd(100)}).to_string().into_bytes(),
            3 => {
                let role = ["Reader", "Owner", "Contributor"][rnd(3)];
                json!({ "assignedRole": role }).to_string().into_bytes()
            }
            4 => (0..rnd(64)).map(|_| rnd(256) as u8).collect(),
            _ => format!("{{\"contents\": \"{}\"", "y".repeat(rnd(10_000))).into_bytes(),
        };
        let url = format!("{e}{path}?{query}");
        let Ok(url) = reqwest::Url::parse(&url) else {
            continue;
        };
        let method = methods[rnd(methods.len())].clone();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.request(method.clone(), url.clone())
                .header("content-type", "application/json")
                .body(payload)
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {url} hung"))
        .unwrap();
        let status = r.status().as_u16();
        *stats.entry(status).or_default() += 1;
        let (status, v) = body(r).await;
        assert!(status < 500, "{method} {url}: {status} {v}");
        if status >= 400 {
            assert_ccf_error(status, &v, status, &format!("{method} {url}"));
        }
    }
    println!("fuzzed {n} requests: {stats:?}");
    assert!(stats.keys().any(|s| *s >= 400) && stats.contains_key(&200));
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
}

/// The collection limit refuses a new collection (and writes nothing) while existing ones
/// still take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_limit() {
    let srv = TestServer::start_with(Default::default(), |cfg| cfg.max_collections = 3).await;
    let c = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let post = |coll: &str| {
        c.post(format!("{e}/app/transactions?{V}&collectionId={coll}"))
            .json(&json!({"contents": "x"}))
            .send()
    };
    // A request refused for another reason takes no collection slot.
    let refused = c
        .post(format!("{e}/app/transactions?{V}&collectionId=z"))
        .header(vellum_node::server::WAIT_HEADER, "soon")
        .json(&json!({"contents": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    for coll in ["a", "b", "c", "a"] {
        assert_eq!(post(coll).await.unwrap().status(), 200, "{coll}");
    }
    let before = srv.node.last_txid();
    let (status, v) = body(post("d").await.unwrap()).await;
    assert_ccf_error(status, &v, 400, "a fourth collection");
    assert_eq!(v["error"]["code"], "TooManyCollections");
    let r = post("b").await.unwrap();
    assert_eq!(r.status(), 200);
    // Collections are listed once their entries are applied: wait for the last write.
    let txid = txid_of(&r);
    srv.node
        .wait_committed(txid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(srv.node.collections().unwrap().len(), 3);
    assert!(srv.node.last_txid() > before);
    srv.stop().await;
}

/// Token keys fetched from a JWKS URL (a real HTTP server on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_a_url() {
    use vellum_node::server::{Issuer, TokenValidator};
    let srv = TestServer::start(10).await;
    let jwks = std::fs::read_to_string(srv.path("jwks.json")).unwrap();
    let app = axum::Router::new().route("/keys", axum::routing::get(move || async move { jwks }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let issuer = Issuer::from_jwks_url(common::ISSUER, vec![], &url)
        .await
        .unwrap();
    let v = TokenValidator::new(vec![issuer]);
    assert_eq!(v.validate(&srv.token("oid-1")).unwrap(), "oid-1");
    assert!(
        Issuer::from_jwks_url(common::ISSUER, vec![], "http://127.0.0.1:1/none")
            .await
            .is_err()
    );
    srv.stop().await;
}

/// api-version `0.1-preview` names: `subLedgerId`, `/app/subLedgerIds`, `@nextLink`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_names() {
    let srv = TestServer::start(2).await;
    let c = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let p = "api-version=0.1-preview";
    let mut last = None;
    for i in 0..3 {
        let r = c
            .post(format!("{e}/app/transactions?{p}&subLedgerId=old%20style"))
            .json(&json!({"contents": format!("v{i}")}))
            .send()
            .await
            .unwrap();
        last = Some(txid_of(&r));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"subLedgerId": "old style"}));
    }
    let last = last.unwrap();
    srv.node
        .wait_committed(last, Duration::from_secs(5))
        .await
        .unwrap();
    let v: Value = c
        .get(format!("{e}/app/subLedgerIds?{p}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"subLedgerIds": ["old style"]}));
    let v: Value = c
        .get(format!("{e}/app/transactions?{p}&subLedgerId=old+style"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["entries"][0]["subLedgerId"], "old style");
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let next = v["@nextLink"].as_str().expect("@nextLink");
    assert!(v.get("nextLink").is_none());
    let v: Value = c
        .get(format!("{e}{next}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["entries"][0]["contents"], "v2");
    assert!(v.get("@nextLink").is_none());
    let v: Value = c
        .get(format!(
            "{e}/app/transactions/{last}?{p}&subLedgerId=old%20style"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["entry"]["subLedgerId"], "old style");
    srv.stop().await;
}

/// `x-vellum-wait: committed` holds a write until it is committed: the answer says so, and the
/// status agrees at once. Without it a write is answered with no state; a bad value is a 400
/// that writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_waiting_for_commit() {
    use vellum_node::server::{STATE_HEADER, WAIT_HEADER};
    let srv = TestServer::start(2).await;
    let c = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let post = |wait: Option<&str>| {
        let mut r = c
            .post(format!("{e}/app/transactions?{V}"))
            .json(&json!({"contents": "durable"}));
        if let Some(w) = wait {
            r = r.header(WAIT_HEADER, w);
        }
        r.send()
    };
    for value in ["committed", "Committed"] {
        let r = post(Some(value)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[STATE_HEADER], "Committed");
        let txid = txid_of(&r);
        assert_eq!(
            srv.node.status(txid),
            vellum_core::status::TxStatus::Committed
        );
        let (status, v) = body(
            c.get(format!("{e}/app/transactions/{txid}/status?{V}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, v["state"].as_str()), (200, Some("Committed")));
    }
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get(STATE_HEADER).is_none());
    // Once that write is signed and committed nothing is left for the signer to append, so
    // the ledger's end moves only if the refused request below wrote something.
    let txid = txid_of(&r);
    srv.node
        .wait_committed(txid, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let before = srv.node.last_txid();
    let (status, v) = body(post(Some("pending")).await.unwrap()).await;
    assert_ccf_error(status, &v, 400, "an unknown wait value");
    assert_eq!(v["error"]["code"], "InvalidHeaderValue");
    assert_eq!(srv.node.last_txid(), before);

    // ACL's waitForCommit (2026-07-31-preview): the committed state, the receipt and the
    // entry's application claim in the answer; the receipt verifies with the claim, and not
    // with another.
    use vellum_core::receipt::{ApplicationClaim, Receipt};
    const V26: &str = "api-version=2026-07-31-preview";
    let (status, v) = body(
        c.post(format!(
            "{e}/app/transactions?{V26}&collectionId=claims&waitForCommit=true"
        ))
        .json(&json!({"contents": "claimed"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["collectionId"], "claims");
    assert_eq!(v["state"], "Committed");
    let claims: Vec<ApplicationClaim> =
        serde_json::from_value(v["applicationClaims"].clone()).unwrap();
    let ApplicationClaim::LedgerEntry { ledger_entry } = &claims[0] else {
        panic!("{v}");
    };
    assert_eq!(
        (
            ledger_entry.collection_id.as_str(),
            ledger_entry.contents.as_str()
        ),
        ("claims", "claimed")
    );
    let receipt = Receipt::from_json(&v["receipt"]).unwrap();
    receipt.verify(&srv.service_cert(), Some(&claims)).unwrap();
    let mut forged = claims.clone();
    if let ApplicationClaim::LedgerEntry { ledger_entry } = &mut forged[0] {
        ledger_entry.contents = "changed".into();
    }
    assert!(receipt.verify(&srv.service_cert(), Some(&forged)).is_err());
    // The receipt route reveals the same claim.
    let txid = receipt.txid().unwrap();
    let (_, r) = body(
        c.get(format!("{e}/app/transactions/{txid}/receipt?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["applicationClaims"], v["applicationClaims"]);
    assert_eq!(r["receipt"], v["receipt"]);
    // Without waitForCommit: the state on 2026-07-31-preview, the one-field body before.
    let (_, v) = body(
        c.post(format!("{e}/app/transactions?{V26}"))
            .json(&json!({"contents": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(v["state"] == "Pending" || v["state"] == "Committed", "{v}");
    assert!(v.get("receipt").is_none());
    let (_, v) = body(post(None).await.unwrap()).await;
    assert_eq!(v, json!({"collectionId": "subledger:0"}));
    srv.stop().await;
}

/// The token rules, one bad token at a time: every claim the documentation requires, the
/// algorithm taken from the issuer's key (never from the token), `kid` required when the
/// issuer has several keys.
#[test]
fn bearer_tokens_are_checked_exactly() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use vellum_node::server::{Issuer, TokenValidator};
    use vellum_node::testing::{es256_key, rsa_key};
    let dir = tempfile::tempdir().unwrap();
    let (rsa_der, rsa_jwk) = rsa_key("r1", Some("RS256"));
    let (ec_der, ec_jwks) = es256_key();
    let mut ec_jwk: Value = serde_json::from_str::<Value>(&ec_jwks).unwrap()["keys"][0].clone();
    // Published without `alg` (as Entra ID publishes its keys): ES256 by its curve.
    ec_jwk.as_object_mut().unwrap().remove("alg");
    let validator = |keys: Vec<Value>| {
        let path = dir.path().join(format!("jwks{}.json", keys.len()));
        std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        TokenValidator::new(vec![
            Issuer::from_jwks_file(common::ISSUER, vec![], &path).unwrap(),
        ])
    };
    let two = validator(vec![rsa_jwk.clone(), ec_jwk.clone()]);
    let one = validator(vec![rsa_jwk.clone()]);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({
        "iss": common::ISSUER, "aud": "https://confidential-ledger.azure.com", "oid": "u1",
        "nbf": now - 10, "exp": now + 600,
    });
    let rsa = EncodingKey::from_rsa_der(&rsa_der);
    let ec = EncodingKey::from_ec_der(&ec_der);
    let sign = |alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey| {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, key).unwrap()
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    // Accepted.
    let ok = sign(Algorithm::RS256, Some("r1"), &good, &rsa);
    assert_eq!(two.validate(&ok).unwrap(), "u1");
    let ok_ec = sign(Algorithm::ES256, Some("k1"), &good, &ec);
    assert_eq!(two.validate(&ok_ec).unwrap(), "u1");
    let no_kid_one_key = sign(Algorithm::RS256, None, &good, &rsa);
    assert_eq!(one.validate(&no_kid_one_key).unwrap(), "u1");
    // Refused, each with its reason.
    let hs = EncodingKey::from_secret(rsa_jwk["n"].as_str().unwrap().as_bytes());
    let bad: Vec<(&str, String, &str)> = vec![
        (
            "no aud",
            sign(Algorithm::RS256, Some("r1"), &without("aud"), &rsa),
            "aud",
        ),
        (
            "other aud",
            sign(
                Algorithm::RS256,
                Some("r1"),
                &with("aud", "https://other".into()),
                &rsa,
            ),
            "Audience",
        ),
        (
            "no exp",
            sign(Algorithm::RS256, Some("r1"), &without("exp"), &rsa),
            "exp",
        ),
        (
            "expired",
            sign(
                Algorithm::RS256,
                Some("r1"),
                &with("exp", (now - 3600).into()),
                &rsa,
            ),
            "xpired",
        ),
        (
            "no nbf",
            sign(Algorithm::RS256, Some("r1"), &without("nbf"), &rsa),
            "nbf",
        ),
        (
            "nbf in an hour",
            sign(
                Algorithm::RS256,
                Some("r1"),
                &with("nbf", (now + 3600).into()),
                &rsa,
            ),
            "mature",
        ),
        (
            "no iss",
            sign(Algorithm::RS256, Some("r1"), &without("iss"), &rsa),
            "malformed",
        ),
        (
            "other iss",
            sign(
                Algorithm::RS256,
                Some("r1"),
                &with("iss", "https://evil".into()),
                &rsa,
            ),
            "not trusted",
        ),
        (
            "no oid",
            sign(Algorithm::RS256, Some("r1"), &without("oid"), &rsa),
            "oid",
        ),
        (
            "RS512 for an RS256 key",
            sign(Algorithm::RS512, Some("r1"), &good, &rsa),
            "not its key's",
        ),
        (
            "PS256 for an RS256 key",
            sign(Algorithm::PS256, Some("r1"), &good, &rsa),
            "not its key's",
        ),
        (
            "HS256 keyed with the public key",
            sign(Algorithm::HS256, Some("r1"), &good, &hs),
            "not its key's",
        ),
        (
            "no kid, two keys",
            sign(Algorithm::RS256, None, &good, &rsa),
            "no kid",
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("r9"), &good, &rsa),
            "unknown key",
        ),
    ];
    for (what, token, why) in bad {
        match two.validate(&token) {
            Ok(oid) => panic!("{what}: accepted as {oid}"),
            Err(e) => assert!(
                e.to_string().contains(why),
                "{what}: refused for another reason: {e}"
            ),
        }
    }
    // A header naming another algorithm than the key's, with the signature left as it was.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, rest) = ok_ec.split_once('.').unwrap();
    let header = b64.encode(json!({"alg": "ES384", "typ": "JWT", "kid": "k1"}).to_string());
    let e = two.validate(&format!("{header}.{rest}")).unwrap_err();
    assert!(e.to_string().contains("not its key's"), "{e}");
}

/// Tags (2024-12-09-preview): written with an entry, queried one at a time over several pages
/// with `nextLink` keeping the tag, listed per collection; bad tags, and parameters Vellum does
/// not serve yet, are refused with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_written_queried_over_pages_and_refused_when_bad() {
    const V24: &str = "api-version=2024-12-09-preview";
    let srv = TestServer::start(3).await;
    let c = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let mut flavoured = Vec::new();
    for i in 0..20u32 {
        let tags = match i % 4 {
            0 => "chocolate%2Cvanilla",
            1 => "vanilla",
            2 => "",
            _ => "strawberry,chocolate,chocolate",
        };
        let r = c
            .post(format!(
                "{e}/app/transactions?{V24}&collectionId=icecream&tags={tags}"
            ))
            .json(&json!({"contents": format!("scoop {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "write {i}");
        if i % 4 == 0 || i % 4 == 3 {
            flavoured.push(format!("scoop {i}"));
        }
    }
    // The same tag in another collection is not found in this one.
    let r = c
        .post(format!(
            "{e}/app/transactions?{V24}&collectionId=other&tags=chocolate"
        ))
        .json(&json!({"contents": "elsewhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    srv.node
        .wait_committed(txid_of(&r), Duration::from_secs(10))
        .await
        .unwrap();

    // Every page of a tag query, following nextLink.
    let mut found = Vec::new();
    let mut url = format!("{e}/app/transactions?{V24}&collectionId=icecream&tag=chocolate");
    let mut pages = 0;
    loop {
        let (status, v) = body(c.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");
        pages += 1;
        for entry in v["entries"].as_array().unwrap() {
            assert_eq!(entry["collectionId"], "icecream");
            found.push(entry["contents"].as_str().unwrap().to_owned());
        }
        match v["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("tag=chocolate"), "{next}");
                url = format!("{e}{next}");
            }
            None => break,
        }
    }
    assert_eq!(found, flavoured);
    assert!(pages >= 4, "{pages} pages of 3");
    let (_, v) = body(
        c.get(format!(
            "{e}/app/collections/tags?{V24}&collectionId=icecream"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["tags"], json!(["chocolate", "strawberry", "vanilla"]));
    let (_, v) = body(
        c.get(format!(
            "{e}/app/collections/tags?{V24}&collectionId=nothing"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["tags"], json!([]));

    // Refused, nothing written.
    let before = srv.node.last_txid();
    let long = "x".repeat(65);
    for (query, body_json, code) in [
        (
            "tags=a,b,c,d,e,f",
            json!({"contents": "six"}),
            "InvalidInput",
        ),
        (
            &*format!("tags={long}"),
            json!({"contents": "long"}),
            "InvalidInput",
        ),
        ("tags=a,,b", json!({"contents": "empty"}), "InvalidInput"),
        (
            "waitForCommit=maybe",
            json!({"contents": "w"}),
            "InvalidQueryParameterValue",
        ),
        ("", json!({"contents": "h", "preHooks": {}}), "InvalidInput"),
    ] {
        let (status, v) = body(
            c.post(format!(
                "{e}/app/transactions?{V24}&collectionId=icecream&{query}"
            ))
            .json(&body_json)
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_ccf_error(status, &v, 400, query);
        assert_eq!(v["error"]["code"], code, "{query}: {v}");
    }
    for query in ["tag=a,b", "tag="] {
        let (status, v) = body(
            c.get(format!(
                "{e}/app/transactions?{V24}&collectionId=icecream&{query}"
            ))
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_ccf_error(status, &v, 400, query);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(srv.node.last_txid(), before);
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
    if common::python().is_some() {
        common::ccf_full(&ledger);
    }
}

/// CCF's built-in endpoints, with no credential, as CCF serves them: the commit point, a
/// transaction's status, the node's state and version, and readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccfs_built_in_endpoints_answer_without_a_credential() {
    let srv = TestServer::start(100).await;
    let admin = srv.client(Some(&srv.admin_pem()));
    let anyone = srv.client(None);
    let e = &srv.endpoint;
    let r = admin
        .post(format!("{e}/app/transactions?{V}"))
        .json(&json!({"contents": "built-ins"}))
        .send()
        .await
        .unwrap();
    let txid = txid_of(&r);
    srv.node
        .wait_committed(txid, Duration::from_secs(10))
        .await
        .unwrap();
    for prefix in ["/node", "/app"] {
        let (s, v) = body(
            anyone
                .get(format!("{e}{prefix}/commit"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let committed: vellum_core::TxId = v["transaction_id"].as_str().unwrap().parse().unwrap();
        assert!(committed.seqno >= txid.seqno, "{v}");
        let (s, v) = body(
            anyone
                .get(format!("{e}{prefix}/tx?transaction_id={txid}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["status"].as_str(), v["transaction_id"].as_str()),
            (200, Some("Committed"), Some(txid.to_string().as_str())),
            "{v}"
        );
        // CCF's rule: another view at a committed seqno is Invalid; a later seqno in a view
        // to come is Unknown. A bad or missing id is a 400.
        for (id, want) in [
            (vellum_core::TxId::new(txid.view + 5, txid.seqno), "Invalid"),
            (
                vellum_core::TxId::new(txid.view + 5, txid.seqno + 1000),
                "Unknown",
            ),
        ] {
            let (_, v) = body(
                anyone
                    .get(format!("{e}{prefix}/tx?transaction_id={id}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(v["status"], want, "{id}: {v}");
        }
        for (q, code) in [
            ("?transaction_id=2", "InvalidQueryParameterValue"),
            ("?transaction_id=abc", "InvalidQueryParameterValue"),
            ("", "MissingQueryParameter"),
        ] {
            let (s, v) = body(
                anyone
                    .get(format!("{e}{prefix}/tx{q}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (400, Some(code)),
                "{q}: {v}"
            );
        }
    }
    let (s, v) = body(anyone.get(format!("{e}/node/state")).send().await.unwrap()).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (200, Some("PartOfNetwork")),
        "{v}"
    );
    assert_eq!(v["node_id"], srv.node.node_id());
    assert!(
        v["last_signed_seqno"].as_u64().unwrap() >= txid.seqno,
        "{v}"
    );
    let (s, v) = body(
        anyone
            .get(format!("{e}/node/version"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        v["ccf_version"].as_str().unwrap().starts_with("vellum-"),
        "{v}"
    );
    for path in ["/node/ready/app", "/node/ready/gov"] {
        let r = anyone.get(format!("{e}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204, "{path}");
    }
}

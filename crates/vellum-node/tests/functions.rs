//! User-defined functions run over HTTPS on a real node (`acl-2024-api.md` §5.2 to §5.4):
//! `:execute` with its outcomes and limits, what runs write and who may run them, concurrent
//! runs on one key, hooks around a write (a throwing pre-hook refuses it and nothing is
//! written), and a restart keeping both the code and the state it wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use common::TestServer;
use serde_json::{Value, json};
use vellum_ledger::identity::Identity;

const V24: &str = "api-version=2024-12-09-preview";

async fn body_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const COUNTER: &str = r#"
const m = () => ccf.kv["public:counters"];
export function main(name) {
    const k = ccf.strToBuf(name);
    const v = m().get(k);
    const n = v === undefined ? 1 : Number(ccf.bufToStr(v)) + 1;
    m().set(k, ccf.strToBuf(String(n)));
    return n;
}
export function read(name) {
    const v = m().get(ccf.strToBuf(name));
    return v === undefined ? "none" : ccf.bufToStr(v);
}
export function latest(collection) {
    const v = ccf.kv["public:confidentialledger.logs"].get(ccf.strToBuf(collection));
    return v === undefined ? "none" : ccf.bufToStr(v);
}
export function forge() {
    ccf.kv["public:confidentialledger.logs"].set(ccf.strToBuf("c"), ccf.strToBuf("forged"));
}
export function halfway() {
    m().set(ccf.strToBuf("halfway"), ccf.strToBuf("1"));
    throw new Error("changed my mind");
}
"#;

const HOOKS: &str = r#"
export function isNumber() {
    if (isNaN(Number(context.contents))) throw new Error("Contents is not a number");
    ccf.kv["public:checked"].set(ccf.strToBuf(context.contents), ccf.strToBuf(context.collectionId));
}
export function count(by) {
    const m = ccf.kv["public:counters"];
    const k = ccf.strToBuf("writes:" + context.collectionId);
    const v = m.get(k);
    m.set(k, ccf.strToBuf(String((v === undefined ? 0 : Number(ccf.bufToStr(v))) + Number(by || 1))));
}
export function seesEntry() {
    const v = ccf.kv["public:confidentialledger.logs"].get(ccf.strToBuf(context.collectionId));
    if (ccf.bufToStr(v) !== context.contents) throw new Error("the post-hook does not see the entry");
    if (context.userId === "") throw new Error("no caller");
}
"#;

/// The last transaction id once every transaction is signed: a baseline that a signature
/// for an earlier write cannot move while a test checks that nothing was written.
async fn settled(srv: &TestServer) -> Option<vellum_core::TxId> {
    let last = srv.node.last_txid()?;
    srv.node
        .wait_committed(last, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    srv.node.last_txid()
}

async fn put(c: &reqwest::Client, e: &str, id: &str, code: &str) {
    let r = c
        .put(format!("{e}/app/userDefinedFunctions/{id}?{V24}"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn execute(c: &reqwest::Client, e: &str, id: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{e}/app/userDefinedFunctions/{id}:execute?{V24}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    body_of(r).await
}

/// The return value of a run that must succeed.
async fn returned(c: &reqwest::Client, e: &str, id: &str, body: Value) -> String {
    let (s, v) = execute(c, e, id, body).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("Succeeded")), "{v}");
    v["result"]["returnValue"].as_str().unwrap().to_owned()
}

/// The message of a run that must fail (still HTTP 200).
async fn threw(c: &reqwest::Client, e: &str, id: &str, body: Value) -> String {
    let (s, v) = execute(c, e, id, body).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("Failed")), "{v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_run_write_and_are_bounded() {
    let srv = TestServer::start(10).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    put(&admin, &e, "counter", COUNTER).await;

    // A run that writes is a transaction; one that only reads is not.
    let before = srv.node.last_txid();
    let (s, v) = execute(&admin, &e, "counter", json!({"arguments": ["a"]})).await;
    assert_eq!(
        (s, &v),
        (
            200,
            &json!({"status": "Succeeded", "result": {"returnValue": "1"}})
        )
    );
    assert!(srv.node.last_txid() > before);
    let before = settled(&srv).await;
    let body = json!({"arguments": ["a"], "exportedFunctionName": "read"});
    assert_eq!(returned(&admin, &e, "counter", body.clone()).await, "1");
    assert_eq!(srv.node.last_txid(), before);
    // No body at all runs `main` with no arguments.
    let r = admin
        .post(format!(
            "{e}/app/userDefinedFunctions/counter:execute?{V24}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(r).await.1["result"]["returnValue"], "1");

    // Two functions (and many callers) on one key: every increment counts.
    put(&admin, &e, "counter2", COUNTER).await;
    let runs = (0..24).map(|i| {
        let (c, e) = (admin.clone(), e.clone());
        let id = if i % 2 == 0 { "counter" } else { "counter2" };
        async move { returned(&c, &e, id, json!({"arguments": ["shared"]})).await }
    });
    let mut seen: Vec<u32> = futures_util::future::join_all(runs)
        .await
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=24).collect::<Vec<u32>>());
    let body = json!({"arguments": ["shared"], "exportedFunctionName": "read"});
    assert_eq!(returned(&admin, &e, "counter", body).await, "24");

    // A throw after a write: Failed, with ACL's message and stack; nothing written.
    let before = srv.node.last_txid();
    let m = threw(
        &admin,
        &e,
        "counter",
        json!({"exportedFunctionName": "halfway"}),
    )
    .await;
    assert!(
        m.starts_with("Error while executing function counter: Error: changed my mind\n"),
        "{m}"
    );
    assert!(m.contains("at halfway"), "{m}");
    let body = json!({"arguments": ["halfway"], "exportedFunctionName": "read"});
    assert_eq!(returned(&admin, &e, "counter", body).await, "none");
    // The entry table: readable (latest entry per collection), never writable.
    admin
        .post(format!("{e}/app/transactions?{V24}&collectionId=c"))
        .json(&json!({"contents": "the latest"}))
        .send()
        .await
        .unwrap();
    let mut latest = String::new();
    for _ in 0..50 {
        let body = json!({"arguments": ["c"], "exportedFunctionName": "latest"});
        latest = returned(&admin, &e, "counter", body).await;
        if latest != "none" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(latest, "the latest");
    let m = threw(
        &admin,
        &e,
        "counter",
        json!({"exportedFunctionName": "forge"}),
    )
    .await;
    assert!(m.contains("read-only"), "{m}");
    assert!(srv.node.last_txid() > before);

    // The limits, over the wire: each run fails cleanly and the node goes on.
    let bombs = [
        (
            "loop",
            "export function main() { for (;;) {} }",
            "execution time limit of 300 ms exceeded",
        ),
        (
            "memory",
            "export function main() { const a = []; for (;;) a.push(new Array(100000).fill(7)); }",
            "out of memory",
        ),
        (
            "recursion",
            "function f(n) { return f(n + 1) + 1; }\nexport function main() { return f(0); }",
            "Maximum call stack size exceeded",
        ),
        (
            "huge",
            "export function main() { return 'x'.repeat(3 * 1024 * 1024); }",
            "limit is 1048576",
        ),
    ];
    for (id, code, _) in bombs {
        put(&admin, &e, id, code).await;
    }
    let before = settled(&srv).await;
    for (id, _, want) in bombs {
        let opts =
            json!({"runtimeOptions": {"max_execution_time_ms": 300, "max_heap_bytes": 33554432}});
        let m = threw(&admin, &e, id, opts).await;
        assert!(m.contains(want), "{id}: {m}");
        assert_eq!(
            returned(
                &admin,
                &e,
                "counter",
                json!({"exportedFunctionName": "read", "arguments": ["a"]})
            )
            .await,
            "1"
        );
    }
    assert_eq!(srv.node.last_txid(), before);

    // A fresh interpreter per run, as ACL documents; runs that ask (max_cached_interpreters)
    // share interpreters, module state and all: one per thread of the node, as in CCF, so
    // within a few runs one sees another's state; storing new code starts afresh.
    let stateful = "let n = 0;\nexport function main() { n += 1; return n; }";
    put(&admin, &e, "stateful", stateful).await;
    for _ in 0..2 {
        assert_eq!(returned(&admin, &e, "stateful", json!({})).await, "1");
    }
    let reuse = json!({"runtimeOptions": {"max_cached_interpreters": 1}});
    let mut seen = Vec::new();
    for _ in 0..16 {
        let n: u32 = returned(&admin, &e, "stateful", reuse.clone())
            .await
            .parse()
            .unwrap();
        seen.push(n);
    }
    assert!(seen.iter().any(|&n| n >= 2), "{seen:?}");
    assert!(
        seen.iter().enumerate().all(|(i, &n)| n as usize <= i + 1),
        "{seen:?}"
    );
    put(&admin, &e, "stateful", &format!("{stateful}\n")).await;
    assert_eq!(returned(&admin, &e, "stateful", reuse).await, "1");

    // Bad requests: unknown function 404, a wrong suffix 405, bad bodies 400.
    let (s, v) = execute(&admin, &e, "nobody", json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("FunctionNotFound"))
    );
    let r = admin
        .post(format!("{e}/app/userDefinedFunctions/counter:run?{V24}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    for body in [
        json!({"arguments": [1]}),
        json!({"arguments": "a"}),
        json!({"exportedFunctionName": 3}),
        json!({"runtimeOptions": {"max_heap_bytes": "lots"}}),
        json!([1]),
    ] {
        let (s, v) = execute(&admin, &e, "counter", body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidInput")),
            "{body}"
        );
    }
    let (s, v) = execute(
        &admin,
        &e,
        "counter",
        json!({"exportedFunctionName": "nothere"}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no function \"nothere\""),
        "{v}"
    );

    // A Reader may not run functions (they may write).
    let id = Identity::client("Reader", SystemTime::now(), 30).unwrap();
    admin
        .patch(format!(
            "{e}/app/ledgerUsers/{}?{V24}",
            id.cert.acl_fingerprint().replace(':', "%3A")
        ))
        .json(&json!({"assignedRoles": ["Reader"]}))
        .send()
        .await
        .unwrap();
    let reader = srv.client(Some(&id.combined_pem()));
    let (s, _) = execute(&reader, &e, "counter", json!({})).await;
    assert_eq!(s, 403);

    // A restart keeps the code and the state it wrote.
    let ledger = srv.node.ledger_dir();
    let dir = srv.stop().await;
    let srv = TestServer::restart(dir, 10).await;
    let admin = srv.client(Some(&srv.admin_pem()));
    let e = srv.endpoint.clone();
    let body = json!({"arguments": ["shared"], "exportedFunctionName": "read"});
    assert_eq!(returned(&admin, &e, "counter", body).await, "24");
    assert_eq!(
        returned(&admin, &e, "counter", json!({"arguments": ["shared"]})).await,
        "25"
    );
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_the_write_and_a_failing_one_refuses_it() {
    let srv = TestServer::start(10).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    put(&admin, &e, "validate", HOOKS).await;
    put(&admin, &e, "counter", COUNTER).await;
    let write = |body: Value| {
        let (admin, e) = (admin.clone(), e.clone());
        async move {
            body_of(
                admin
                    .post(format!("{e}/app/transactions?{V24}&collectionId=nums"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let read = |k: &'static str| {
        let (admin, e) = (admin.clone(), e.clone());
        async move {
            returned(
                &admin,
                &e,
                "counter",
                json!({"exportedFunctionName": "read", "arguments": [k]}),
            )
            .await
        }
    };
    // A pre-hook that passes, a post-hook that counts and one that checks it sees the entry:
    // one transaction holds the entry and every hook's writes.
    let before = srv.node.last_txid().unwrap();
    let (s, v) = write(json!({
        "contents": "42",
        "preHooks": [{"functionId": "validate", "properties": {"exportedFunctionName": "isNumber"}}],
        "postHooks": [
            {"functionId": "validate", "properties": {"exportedFunctionName": "count", "arguments": ["2"]}},
            {"id": "validate", "properties": {"exportedFunctionName": "seesEntry"}},
        ],
    }))
    .await;
    assert_eq!((s, v["collectionId"].as_str()), (200, Some("nums")), "{v}");
    assert_eq!(read("writes:nums").await, "2");
    let after = srv.node.last_txid().unwrap();
    // Entries are read from what is applied: wait for it (a loaded machine may lag).
    srv.node
        .wait_committed(after, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let written: Vec<_> = (before.seqno + 1..=after.seqno)
        .filter(|s| {
            srv.node
                .entry(vellum_core::TxId::new(after.view, *s))
                .ok()
                .flatten()
                .is_some()
        })
        .collect();
    assert_eq!(written.len(), 1);

    // A pre-hook that throws: 500 InternalError in ACL's words, and nothing written, not the
    // entry, not what earlier hooks wrote.
    let before = settled(&srv).await;
    for body in [
        json!({"contents": "forty-two", "preHooks": [
            {"functionId": "validate", "properties": {"exportedFunctionName": "count"}},
            {"functionId": "validate", "properties": {"exportedFunctionName": "isNumber"}},
        ]}),
        json!({"contents": "7", "postHooks": [
            {"functionId": "counter", "properties": {"exportedFunctionName": "halfway"}},
        ]}),
    ] {
        let (s, v) = write(body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (500, Some("InternalError")),
            "{v}"
        );
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with("Error while executing function "), "{m}");
    }
    assert_eq!(srv.node.last_txid(), before);
    assert_eq!(read("writes:nums").await, "2");
    // Unknown functions and too many hooks are refused before anything runs.
    let (s, v) = write(json!({"contents": "1", "preHooks": [{"functionId": "nobody"}]})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("FunctionNotFound")),
        "{v}"
    );
    let six: Vec<Value> = (0..6)
        .map(|_| json!({"functionId": "validate", "properties": {"exportedFunctionName": "count"}}))
        .collect();
    let (s, _) = write(json!({"contents": "1", "preHooks": six})).await;
    assert_eq!(s, 400);
    for bad in [
        json!({"contents": "1", "preHooks": {}}),
        json!({"contents": "1", "postHooks": [{"properties": {}}]}),
    ] {
        let (s, v) = write(bad).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidInput")),
            "{v}"
        );
    }
    assert_eq!(srv.node.last_txid(), before);
    // A Contributor without leave to run functions (a custom role) cannot run hooks.
    admin
        .put(format!("{e}/app/roles?{V24}"))
        .json(&json!({"roles": [{"role_name": "appender", "role_actions": ["Microsoft.ConfidentialLedger/ledger/append"]}]}))
        .send()
        .await
        .unwrap();
    let id = Identity::client("Appender", SystemTime::now(), 30).unwrap();
    admin
        .patch(format!(
            "{e}/app/ledgerUsers/{}?{V24}",
            id.cert.acl_fingerprint().replace(':', "%3A")
        ))
        .json(&json!({"assignedRoles": ["appender"]}))
        .send()
        .await
        .unwrap();
    let appender = srv.client(Some(&id.combined_pem()));
    let post = |body: Value| {
        appender
            .post(format!("{e}/app/transactions?{V24}"))
            .json(&body)
            .send()
    };
    assert_eq!(post(json!({"contents": "1"})).await.unwrap().status(), 200);
    let hooked = json!({"contents": "1", "preHooks": [{"functionId": "validate", "properties": {"exportedFunctionName": "count"}}]});
    assert_eq!(post(hooked).await.unwrap().status(), 403);

    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
}

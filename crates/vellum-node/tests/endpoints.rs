//! User-defined endpoints over HTTPS on a real node (`acl-2024-api.md` §6): Microsoft's own
//! sample bundles (under `testdata/acl-app-samples`, unchanged) deployed and served with their
//! client flows, the admin routes, authentication policies, readwrite and readonly handlers,
//! built-in routes that a bundle cannot shadow, functions and endpoints excluding each other,
//! and a restart keeping the app.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use common::TestServer;
use serde_json::{Value, json};
use vellum_ledger::identity::Identity;

const V: &str = "api-version=2024-12-09-preview";

/// The status and the body: JSON if the response says so, else a JSON string of the text.
async fn body_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let json = r
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("application/json"));
    let text = r.text().await.unwrap();
    if json {
        (status, serde_json::from_str(&text).unwrap())
    } else {
        (status, Value::String(text))
    }
}

fn sample(path: &str) -> String {
    std::fs::read_to_string(common::repo().join("testdata/acl-app-samples").join(path)).unwrap()
}

/// The basic JS app as ACL's users deploy it: its `app.json` as the metadata, its module by
/// its path.
fn basic_app() -> Value {
    let metadata: Value = serde_json::from_str(&sample("basic-app-js/app.json")).unwrap();
    json!({"metadata": metadata, "modules": [{"name": "src/app.js", "module": sample("basic-app-js/src/app.js")}]})
}

async fn deploy(c: &reqwest::Client, e: &str, bundle: &Value) -> (u16, Value) {
    body_of(
        c.put(format!("{e}/app/userDefinedEndpoints?{V}"))
            .json(bundle)
            .send()
            .await
            .unwrap(),
    )
    .await
}

const COUNTER_APP: &str = r#"
const m = () => ccf.kv["public:ude-counters"];
export function bump(request) {
    const k = ccf.strToBuf(request.params.name);
    const v = m().get(k);
    const n = v === undefined ? 1 : Number(ccf.bufToStr(v)) + 1;
    m().set(k, ccf.strToBuf(String(n)));
    if (request.query === "fail=1") return { statusCode: 409, body: "refused" };
    return { statusCode: 201, body: { name: request.params.name, n, who: request.caller.policy } };
}
export function read(request) {
    const v = m().get(ccf.strToBuf(request.params.name));
    return { body: v === undefined ? "none" : ccf.bufToStr(v) };
}
export function sneak(request) { m().set(ccf.strToBuf("x"), ccf.strToBuf("y")); return {}; }
export function boom() { throw new Error("secret detail"); }
export function shadow() { return { body: "shadowed" }; }
"#;

fn counter_app() -> Value {
    let ep = |f: &str, mode: &str, policies: Value| {
        json!({"js_module": "counter.js", "js_function": f, "authn_policies": policies,
               "forwarding_required": "always", "mode": mode})
    };
    json!({
        "metadata": {"endpoints": {
            "/counters/{name}": {
                "post": ep("bump", "readwrite", json!(["user_cert", "jwt"])),
                "get": ep("read", "readonly", json!(["no_auth"])),
            },
            "/sneak": {"post": ep("sneak", "readonly", json!(["any_cert"]))},
            "/boom": {"get": ep("boom", "readonly", json!([{"all_of": ["any_cert", "user_cert"]}]))},
            "/transactions": {"get": ep("shadow", "readonly", json!(["no_auth"]))},
        }},
        "modules": [{"name": "counter.js", "module": COUNTER_APP}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_sample_bundles_deploy_and_serve() {
    let srv = TestServer::start(10).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    let anonymous = srv.client(None);
    let r = admin
        .post(format!("{e}/app/transactions?{V}"))
        .json(&json!({"contents": "an entry, for the audit's claims check"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Nothing deployed: the empty bundle.
    let (s, v) = body_of(
        admin
            .get(format!("{e}/app/userDefinedEndpoints?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"metadata": {"endpoints": {}}, "modules": []}))
    );

    // The UDE sample bundle: modules importing each other, a no_auth endpoint.
    let ude: Value = serde_json::from_str(&sample("ude-sample-bundle/sample-bundle.js")).unwrap();
    let (s, v) = deploy(&admin, &e, &ude).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = body_of(
        anonymous
            .get(format!("{e}/app/content"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"payload": "Test content"})));
    let (s, v) = body_of(
        admin
            .get(format!("{e}/app/userDefinedEndpoints?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["modules"]), (200, &ude["modules"]));
    let (s, v) = body_of(
        admin
            .get(format!(
                "{e}/app/userDefinedEndpoints/modules?{V}&module_name=baz/baz.js"
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["name"].as_str()), (200, Some("baz/baz.js")));
    assert!(v["module"].as_str().unwrap().contains("Test content"));
    let r = admin
        .get(format!(
            "{e}/app/userDefinedEndpoints/modules?{V}&module_name=nope.js"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The basic JS app, with its own client flow: a user's certificate echoes a string, a
    // number is a 400 in the app's words; anyone else is turned away. The old app is gone.
    let (s, v) = deploy(&admin, &e, &basic_app()).await;
    assert_eq!(s, 201, "{v}");
    let echo =
        |c: &reqwest::Client, body: Value| c.post(format!("{e}/app/echo")).json(&body).send();
    let (s, v) = body_of(
        echo(&admin, json!({"value": "hello ledger"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"echoed_value": "hello ledger"})));
    let (s, v) = body_of(echo(&admin, json!({"value": 42})).await.unwrap()).await;
    assert_eq!((s, v), (400, json!({"error": "Invalid body type"})));
    let stranger = Identity::client("Stranger", SystemTime::now(), 30).unwrap();
    let stranger = srv.client(Some(&stranger.combined_pem()));
    let (s, v) = body_of(echo(&stranger, json!({"value": "x"})).await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationInfo"))
    );
    assert_eq!(
        anonymous
            .get(format!("{e}/app/content"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        admin
            .get(format!("{e}/app/echo"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    // Runtime options: ACL's defaults, PATCH merges and answers the whole.
    let opts = format!("{e}/app/userDefinedEndpoints/runtimeOptions?{V}");
    let (s, v) = body_of(admin.get(&opts).send().await.unwrap()).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"log_exception_details": false, "max_cached_interpreters": 10, "max_execution_time_ms": 1000,
                     "max_heap_bytes": 104857600, "max_stack_bytes": 1048576, "return_exception_details": false})
        )
    );
    let (s, v) = body_of(
        admin
            .patch(&opts)
            .json(&json!({"max_execution_time_ms": 2000}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (
            s,
            v["max_execution_time_ms"].as_u64(),
            v["max_heap_bytes"].as_u64()
        ),
        (200, Some(2000), Some(104_857_600))
    );
    let (s, _) = body_of(
        admin
            .patch(&opts)
            .json(&json!({"max_speed": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) = body_of(
        admin
            .get(format!("{e}/app/userDefinedEndpoints/runTimeOptions?{V}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["max_execution_time_ms"].as_u64()), (200, Some(2000)));

    // Functions and endpoints exclude each other, in both directions.
    let (s, v) = body_of(
        admin
            .put(format!("{e}/app/userDefinedFunctions/f?{V}"))
            .json(&json!({"code": "export const main = () => 1;"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Please apply an empty application bundle"),
        "{v}"
    );
    let (s, _) = deploy(
        &admin,
        &e,
        &json!({"metadata": {"endpoints": {}}, "modules": []}),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        admin
            .post(format!("{e}/app/echo"))
            .json(&json!({"value": "x"}))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = admin
        .put(format!("{e}/app/userDefinedFunctions/f?{V}"))
        .json(&json!({"code": "export const main = () => 1;"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, v) = deploy(&admin, &e, &basic_app()).await;
    assert_eq!(s, 400, "{v}");
    admin
        .delete(format!("{e}/app/userDefinedFunctions/f?{V}"))
        .send()
        .await
        .unwrap();

    // Bad bundles are refused with nothing written; only Administrators deploy.
    let before = srv.node.last_txid();
    for bad in [
        json!({"metadata": {"endpoints": {"/x": {"get": {"js_module": "missing.js", "js_function": "f", "authn_policies": []}}}}, "modules": []}),
        json!({"metadata": {"endpoints": {}}, "modules": [{"name": "a.js", "module": "export function ( {"}]}),
        json!([1, 2]),
    ] {
        let (s, v) = deploy(&admin, &e, &bad).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidInput")),
            "{v}"
        );
    }
    let reader = Identity::client("Reader", SystemTime::now(), 30).unwrap();
    admin
        .patch(format!(
            "{e}/app/ledgerUsers/{}?{V}",
            reader.cert.acl_fingerprint().replace(':', "%3A")
        ))
        .json(&json!({"assignedRoles": ["Reader"]}))
        .send()
        .await
        .unwrap();
    let reader_client = srv.client(Some(&reader.combined_pem()));
    let (s, _) = deploy(&reader_client, &e, &basic_app()).await;
    assert_eq!(s, 403);
    assert!(srv.node.last_txid() > before); // (the Reader's user record)

    // A readwrite endpoint writes in a transaction of its own (kept for a 2xx answer only), a
    // readonly one reads and cannot write; a handler's exception is a 500 without its details.
    let (s, v) = deploy(&admin, &e, &counter_app()).await;
    assert_eq!(s, 201, "{v}");
    let bump = |q: &str| admin.post(format!("{e}/app/counters/al%20ice{q}")).send();
    let r = bump("").await.unwrap();
    assert!(r.headers().contains_key("x-ms-ccf-transaction-id"));
    let (s, v) = body_of(r).await;
    assert_eq!(
        (s, v),
        (201, json!({"name": "al ice", "n": 1, "who": "user_cert"}))
    );
    let (s, v) = body_of(bump("?fail=1").await.unwrap()).await;
    assert_eq!((s, v), (409, json!("refused")));
    let (s, v) = body_of(
        anonymous
            .get(format!("{e}/app/counters/al%20ice"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!("1")));
    // A token caller passes the jwt policy.
    let token = srv.token("token-user");
    let (s, v) = body_of(
        srv.client(None)
            .post(format!("{e}/app/counters/al%20ice"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["n"].as_u64(), v["who"].as_str()),
        (201, Some(2), Some("jwt"))
    );
    let (s, v) = body_of(admin.post(format!("{e}/app/sneak")).send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (500, Some("InternalError")),
        "{v}"
    );
    let (s, v) = body_of(admin.get(format!("{e}/app/boom")).send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["message"].as_str()),
        (500, Some("Exception thrown while executing."))
    );
    // A bundle cannot shadow a built-in route.
    let r = admin
        .get(format!("{e}/app/transactions?{V}"))
        .send()
        .await
        .unwrap();
    assert_ne!(body_of(r).await.1, json!("shadowed"));

    // A restart keeps the app and what it wrote.
    let ledger = srv.node.ledger_dir();
    let dir = srv.stop().await;
    let srv = TestServer::restart(dir, 10).await;
    let e = srv.endpoint.clone();
    let (s, v) = body_of(
        srv.client(None)
            .get(format!("{e}/app/counters/al%20ice"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!("2")));
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
}

/// Microsoft's banking sample, built from its sources (`testdata/acl-app-samples/README.md`),
/// set up as the samples' `test_acl.sh` sets it up on ACL (the bundle, two custom roles, a
/// manager and a teller), then its own `test.sh` (curl) runs unchanged against the node: it
/// reads ACL's role tables, derives callers from `ccf.pemToId`, keeps balances in a private
/// map and sets a claims digest on transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banking_sample_passes_its_own_test_script() {
    let have_curl = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_curl {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no curl"
        );
        eprintln!("skipping: no curl");
        return;
    }
    let srv = TestServer::start(10).await;
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    let r = admin
        .post(format!("{e}/app/transactions?{V}"))
        .json(&json!({"contents": "an entry, for the audit's claims check"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = serde_json::from_str(&sample("banking-app/bundle.json")).unwrap();
    let (s, v) = deploy(&admin, &e, &bundle).await;
    assert_eq!(s, 201, "{v}");
    for role in [
        r#"{"roles":[{"role_name":"manager","role_actions":["/banking/accounts/post","/banking/accounts/put","/banking/accounts/get","/banking/accounts/patch"]}]}"#,
        r#"{"roles":[{"role_name":"teller","role_actions":["/banking/accounts/put","/banking/accounts/get","/banking/accounts/patch"]}]}"#,
    ] {
        let r = admin
            .put(format!("{e}/app/roles?{V}"))
            .header("content-type", "application/json")
            .body(role)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let certs = tempfile::tempdir().unwrap();
    for (name, roles) in [
        ("manager", json!(["manager", "administrator"])),
        ("teller", json!(["teller"])),
    ] {
        let id = Identity::client(name, SystemTime::now(), 30).unwrap();
        std::fs::write(certs.path().join(format!("{name}_cert.pem")), &id.cert_pem).unwrap();
        std::fs::write(certs.path().join(format!("{name}_privk.pem")), id.key_pem()).unwrap();
        let fp = id.cert.acl_fingerprint();
        let r = admin
            .patch(format!(
                "{e}/app/ledgerUsers/{}?{V}",
                fp.replace(':', "%3A")
            ))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"user_id": fp, "assignedRoles": roles}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let script = common::repo().join("testdata/acl-app-samples/banking-app/test.sh");
    let (ledger, dir) = (e.clone(), certs.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .args(["--ledger", &ledger, "--cert-dir"])
            .arg(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Test Completed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("[Pass]").count(), 17, "{stdout}");
    println!("{stdout}");
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
}

//! The explorer in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven through WebDriver by `tests/interop/explorer_browser.py`
//! (Selenium), against a real node over HTTPS with data: an Administrator and a Reader signed in
//! with bearer tokens, entries in a collection with a tag, a committed receipt. Screenshots go
//! to `target/explorer-screenshots/` (test artifacts; `docs/explorer.md` shows four).
//!
//! Skipped, with a message, where Chromium or Selenium is missing, unless
//! `VELLUM_REQUIRE_BROWSER=1` (scripts/test.sh sets it where it installed them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestServer, python, repo};
use serde_json::{Value, json};

const V26: &str = "api-version=2026-07-31-preview";

fn required() -> bool {
    std::env::var("VELLUM_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_in_headless_chromium() {
    let chromium =
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    let py = python().filter(|py| {
        Command::new(py)
            .args(["-c", "import selenium"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(py) = py.filter(|_| chromium) else {
        assert!(
            !required(),
            "VELLUM_REQUIRE_BROWSER=1 but Chromium, chromium-driver or Selenium is missing"
        );
        eprintln!(
            "SKIPPED: the explorer's browser test needs chromium, chromium-driver and selenium"
        );
        return;
    };
    // A stand-in OpenID Connect provider: its authorization endpoint sends the browser back
    // to the explorer with an Administrator's access token (implicit flow).
    let idp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authorize_url = format!("http://{}/authorize", idp.local_addr().unwrap());
    let issued = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let srv = TestServer::start_service(
        vellum_node::server::Limits {
            page_size: 3,
            ..Default::default()
        },
        |c| {
            c.explorer_login = Some(vellum_node::server::ExplorerLogin {
                authorize_url: authorize_url.clone(),
                client_id: "vellum-explorer".into(),
                scope: vellum_node::server::DEFAULT_LOGIN_SCOPE.into(),
            });
        },
    )
    .await;
    *issued.lock().unwrap() = Some(srv.token("explorer-admin"));
    let app = axum::Router::new().route(
        "/authorize",
        axum::routing::get({
            let issued = issued.clone();
            move |axum::extract::RawQuery(raw): axum::extract::RawQuery| async move {
                let q: std::collections::HashMap<String, String> =
                    reqwest::Url::parse(&format!("http://idp/?{}", raw.unwrap_or_default()))
                        .unwrap()
                        .query_pairs()
                        .into_owned()
                        .collect();
                let ok = q.get("response_type").map(String::as_str) == Some("token")
                    && q.get("client_id").map(String::as_str) == Some("vellum-explorer");
                let to = q.get("redirect_uri").cloned().unwrap_or_default();
                let state = q.get("state").cloned().unwrap_or_default();
                let token = issued.lock().unwrap().clone().unwrap_or_default();
                let location = if ok {
                    format!("{to}#access_token={token}&token_type=Bearer&state={state}")
                } else {
                    format!("{to}#error=invalid_request&state={state}")
                };
                axum::response::Redirect::to(&location)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(idp, app).await });
    let e = srv.endpoint.clone();
    let admin = srv.client(Some(&srv.admin_pem()));
    for (oid, role) in [
        ("explorer-admin", "Administrator"),
        ("explorer-reader", "Reader"),
    ] {
        let r = admin
            .patch(format!(
                "{e}/app/ledgerUsers/{oid}?api-version=2024-12-09-preview"
            ))
            .header("content-type", "application/merge-patch+json")
            .body(json!({ "assignedRoles": [role] }).to_string())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{oid}: {}",
            r.text().await.unwrap()
        );
    }
    let r = admin
        .put(format!(
            "{e}/app/userDefinedFunctions/greet?api-version=2024-12-09-preview"
        ))
        .json(&json!({ "code": "export function main() { return \"hello\"; }" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (mut ids, mut tagged) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let tag = if i % 3 == 0 { "&tags=login" } else { "" };
        let r = admin
            .post(format!(
                "{e}/app/transactions?{V26}&collectionId=audit{tag}"
            ))
            .json(&json!({ "contents": format!("audit event {i}") }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let id = r.headers()["x-ms-ccf-transaction-id"]
            .to_str()
            .unwrap()
            .to_owned();
        if !tag.is_empty() {
            tagged.push(id.clone());
        }
        ids.push(id);
    }
    let txid = ids[3].clone();
    let last: vellum_core::TxId = ids.last().unwrap().parse().unwrap();
    let status = srv
        .node
        .wait_committed(last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, vellum_core::status::TxStatus::Committed, "{last}");
    let receipt: Value = loop {
        let v: Value = admin
            .get(format!("{e}/app/transactions/{txid}/receipt?{V26}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "Ready" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let receipt_file = srv.path("receipt.json");
    std::fs::write(&receipt_file, receipt.to_string()).unwrap();
    let fingerprint = vellum_core::crypto::Certificate::from_pem(&srv.service_cert())
        .unwrap()
        .acl_fingerprint();
    let shots = repo().join("target/explorer-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("tests/interop/explorer_browser.py"))
        .env("VELLUM_ENDPOINT", &e)
        .env("VELLUM_ADMIN_TOKEN", srv.token("explorer-admin"))
        .env("VELLUM_READER_TOKEN", srv.token("explorer-reader"))
        .env("VELLUM_READER_ID", "explorer-reader")
        .env("VELLUM_FINGERPRINT", &fingerprint)
        .env("VELLUM_TXID", &txid)
        .env("VELLUM_COLLECTION", "audit")
        .env("VELLUM_TAG", "login")
        .env("VELLUM_TAGGED", tagged.join(","))
        .env("VELLUM_RECEIPT", &receipt_file)
        .env("VELLUM_SERVICE_CERT", srv.path("service_cert.pem"))
        .env("VELLUM_SCREENSHOTS", &shots)
        .env("VELLUM_OIDC", "1");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL PASSED"),
        "the explorer's browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    srv.stop().await;
}

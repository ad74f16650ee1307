//! CCF's governance API over HTTPS, as CCF's member tooling reads it: the service's members
//! (the operator member recorded at genesis, `Accepted` until it acks), its constitution and
//! information, and proposals, with CCF's api-version rules, shapes and error codes. No
//! credential is needed for reads, as in CCF.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::Value;
use vellum_core::crypto::Certificate;

const V: &str = "api-version=2024-07-01";

async fn get(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

async fn error_of(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let (s, _, body) = get(c, url).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    (
        s,
        v["error"]["code"].as_str().unwrap().to_owned(),
        v["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_reads_speak_ccfs_api() {
    let mut srv = TestServer::start(10).await;
    let e = srv.endpoint.clone();
    let anyone = srv.client(None);
    let member_pem = std::fs::read_to_string(srv.path("member0_cert.pem")).unwrap();
    let member_id = Certificate::from_pem(&member_pem).unwrap().id();

    // Members: the operator member, Accepted (it has not acked the state digest).
    let (s, ct, body) = get(&anyone, &format!("{e}/gov/service/members?{V}")).await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    let members = v["value"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{v}");
    assert_eq!(members[0]["memberId"], member_id.as_str());
    assert_eq!(members[0]["status"], "Accepted");
    assert_eq!(members[0]["certificate"], member_pem.as_str());
    assert_eq!(members[0]["recoveryRole"], "NonParticipant");
    let (s, _, body) = get(&anyone, &format!("{e}/gov/service/members/{member_id}?{V}")).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), members[0]);
    let nobody = "ab".repeat(32);
    assert_eq!(
        error_of(&anyone, &format!("{e}/gov/service/members/{nobody}?{V}")).await,
        (
            404,
            "ResourceNotFound".into(),
            format!("Member {nobody} does not exist.")
        )
    );

    // The constitution, as JavaScript; the service's information.
    let (s, ct, body) = get(&anyone, &format!("{e}/gov/service/constitution?{V}")).await;
    assert_eq!((s, ct.as_str()), (200, "text/javascript"));
    assert!(body.contains("export function resolve"), "{body}");
    let (s, _, body) = get(&anyone, &format!("{e}/gov/service/info?{V}")).await;
    assert_eq!(s, 200);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["certificate"], srv.service_cert().as_str());
    assert!(
        info["status"] == "Opening" || info["status"] == "Open",
        "{info}"
    );

    // Proposals: none yet; unknown and malformed ids as CCF answers them.
    let (s, _, body) = get(&anyone, &format!("{e}/gov/members/proposals?{V}")).await;
    assert_eq!((s, body.as_str()), (200, r#"{"value":[]}"#));
    let pid = "0a".repeat(32);
    for path in [
        format!("proposals/{pid}"),
        format!("proposals/{pid}/actions"),
    ] {
        assert_eq!(
            error_of(&anyone, &format!("{e}/gov/members/{path}?{V}")).await,
            (
                404,
                "ProposalNotFound".into(),
                format!("Could not find proposal {pid}.")
            )
        );
    }
    assert_eq!(
        error_of(
            &anyone,
            &format!("{e}/gov/members/proposals/{pid}/ballots/{member_id}?{V}")
        )
        .await
        .1,
        "ProposalNotFound"
    );
    assert_eq!(
        error_of(&anyone, &format!("{e}/gov/members/proposals/xyz?{V}")).await,
        (
            400,
            "InvalidResourceName".into(),
            "'xyz' is not a valid hex-encoded proposal ID".into()
        )
    );

    // Every governance request names its api-version.
    let (s, code, m) = error_of(&anyone, &format!("{e}/gov/service/members")).await;
    assert_eq!((s, code.as_str()), (400, "MissingApiVersionParameter"));
    assert!(m.contains("2024-07-01"), "{m}");
    let (s, code, m) = error_of(
        &anyone,
        &format!("{e}/gov/service/members?api-version=2022-05-13"),
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "UnsupportedApiVersionValue"));
    assert!(
        m.starts_with("Unsupported api-version '2022-05-13'."),
        "{m}"
    );
    let (s, _, _) = get(
        &anyone,
        &format!("{e}/gov/service/members?api-version=2023-06-01-preview"),
    )
    .await;
    assert_eq!(s, 200);

    // The tables survive a restart (kept in the index), an index written before they were
    // kept (read back from the ledger), and a lost index (rebuilt).
    for damage in ["none", "old index", "lost index"] {
        let dir = srv.stop().await;
        let index = dir.path().join("index.redb");
        match damage {
            "old index" => {
                let db = redb::Database::open(&index).unwrap();
                let w = db.begin_write().unwrap();
                {
                    let blobs: redb::TableDefinition<&str, &[u8]> =
                        redb::TableDefinition::new("blobs");
                    let mut t = w.open_table(blobs).unwrap();
                    assert!(t.remove("vellum.gov").unwrap().is_some());
                }
                w.commit().unwrap();
            }
            "lost index" => std::fs::remove_file(&index).unwrap(),
            _ => {}
        }
        srv = TestServer::restart(dir, 10).await;
        let (s, _, body) = get(
            &srv.client(None),
            &format!("{}/gov/service/members/{member_id}?{V}", srv.endpoint),
        )
        .await;
        assert_eq!(s, 200, "{damage}: {body}");
        let (_, _, body) = get(
            &srv.client(None),
            &format!("{}/gov/service/constitution?{V}", srv.endpoint),
        )
        .await;
        assert!(body.contains("export function resolve"), "{damage}: {body}");
    }
}

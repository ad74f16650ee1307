//! CCF's governance API over HTTPS, as CCF's member tooling reads it: the service's members
//! (the operator member recorded at genesis, `Accepted` until it acks), its constitution and
//! information, and proposals, with CCF's api-version rules, shapes and error codes. No
//! credential is needed for reads, as in CCF.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use common::TestServer;
use serde_json::Value;
use vellum_core::crypto::Certificate;
use vellum_core::gov::{Envelope, MsgType};

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

/// A member's signing key and certificate.
#[derive(Clone)]
struct Member {
    key: vellum_core::crypto::SigningKey,
    cert: Certificate,
    cert_pem: String,
}

impl Member {
    fn id(&self) -> String {
        self.cert.id()
    }

    fn sign(
        &self,
        msg: MsgType,
        created_at: i64,
        proposal_id: Option<&str>,
        body: &Value,
    ) -> Vec<u8> {
        Envelope::sign(
            msg,
            created_at,
            proposal_id,
            body.to_string().as_bytes(),
            &self.key,
            &self.cert,
        )
        .unwrap()
    }
}

fn new_member(cn: &str) -> Member {
    let id = vellum_ledger::identity::Identity::client(cn, SystemTime::now(), 30).unwrap();
    Member {
        key: id.signing_key.clone(),
        cert: id.cert.clone(),
        cert_pem: id.cert_pem.clone(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs a signed request; the status and JSON body (null if none).
async fn post_cose(c: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/cose")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Acks the state digest as `m` (update, then ack): `m` becomes Active.
async fn activate(c: &reqwest::Client, e: &str, m: &Member) {
    let id = m.id();
    let mut digest = None;
    for _ in 0..100 {
        let (s, v) = post_cose(
            c,
            &format!("{e}/gov/members/state-digests/{id}:update?{V}"),
            m.sign(MsgType::StateDigest, now(), None, &serde_json::json!({})),
        )
        .await;
        if s == 200 {
            digest = Some(v["stateDigest"].as_str().unwrap().to_owned());
            break;
        }
        // No signature yet: the service signs within moments of starting.
        assert_eq!(s, 500, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let digest = digest.unwrap();
    assert_eq!(digest.len(), 64);
    let (s, v) = post_cose(
        c,
        &format!("{e}/gov/members/state-digests/{id}:ack?{V}"),
        m.sign(
            MsgType::Ack,
            now(),
            None,
            &serde_json::json!({"stateDigest": digest}),
        ),
    )
    .await;
    assert_eq!(s, 204, "{v}");
}

async fn propose(c: &reqwest::Client, e: &str, m: &Member, actions: Value) -> (u16, Value) {
    post_cose(
        c,
        &format!("{e}/gov/members/proposals:create?{V}"),
        m.sign(
            MsgType::Proposal,
            now(),
            None,
            &serde_json::json!({"actions": actions}),
        ),
    )
    .await
}

async fn vote(c: &reqwest::Client, e: &str, m: &Member, pid: &str, yes: bool) -> (u16, Value) {
    let ballot = format!("export function vote (proposal, proposerId) {{ return {yes} }}");
    post_cose(
        c,
        &format!(
            "{e}/gov/members/proposals/{pid}/ballots/{}:submit?{V}",
            m.id()
        ),
        m.sign(
            MsgType::Ballot,
            now(),
            Some(pid),
            &serde_json::json!({"ballot": ballot}),
        ),
    )
    .await
}

async fn member_status(c: &reqwest::Client, e: &str, id: &str) -> String {
    let (_, _, body) = get(c, &format!("{e}/gov/service/members/{id}?{V}")).await;
    serde_json::from_str::<Value>(&body).unwrap()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_ack_propose_and_vote_under_the_constitution() {
    let srv = TestServer::start(10).await;
    let e = srv.endpoint.clone();
    let c = srv.client(None);
    let m0 = Member {
        key: vellum_core::crypto::SigningKey::from_pkcs8_pem(
            &std::fs::read_to_string(srv.path("member0_key.pem")).unwrap(),
        )
        .unwrap(),
        cert_pem: std::fs::read_to_string(srv.path("member0_cert.pem")).unwrap(),
        cert: Certificate::from_pem(
            &std::fs::read_to_string(srv.path("member0_cert.pem")).unwrap(),
        )
        .unwrap(),
    };
    let m1 = new_member("member1");
    let stranger = new_member("stranger");

    // An Accepted member may not propose; it acks the state digest and becomes Active.
    let (s, v) = propose(&c, &e, &m0, serde_json::json!([])).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationInfo")),
        "{v}"
    );
    activate(&c, &e, &m0).await;
    assert_eq!(member_status(&c, &e, &m0.id()).await, "Active");

    // Add a member: the proposal is open until a majority of active members (1 of 1) votes.
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_member", "args": {"cert": m1.cert_pem, "member_data": {"role": "auditor"}}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["proposalState"], "Open");
    assert_eq!(v["proposerId"], m0.id().as_str());
    assert_eq!(v["ballotCount"], 0);
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let (s, _, actions) = get(&c, &format!("{e}/gov/members/proposals/{pid}/actions?{V}")).await;
    assert_eq!(s, 200);
    assert!(actions.contains("set_member"));
    let (s, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["proposalState"], "Accepted");
    assert_eq!(v["finalVotes"][m0.id()], true);
    assert_eq!(member_status(&c, &e, &m1.id()).await, "Accepted");
    let (_, _, ballot) = get(
        &c,
        &format!("{e}/gov/members/proposals/{pid}/ballots/{}?{V}", m0.id()),
    )
    .await;
    assert!(ballot.contains("return true"), "{ballot}");
    // Until it acks, the new member may not vote (CCF: only active members).
    let (s, v) = vote(&c, &e, &m1, &"ab".repeat(32), true).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationInfo")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an active member"),
        "{v}"
    );
    activate(&c, &e, &m1).await;

    // Two active members: one vote is not a majority; the proposal stays open.
    let new_constitution = format!(
        "{}\n// replaced by proposal\n",
        vellum_ledger::genesis::DEFAULT_CONSTITUTION
    );
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_constitution", "args": {"constitution": new_constitution}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let (_, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!(v["proposalState"], "Open", "{v}");
    assert_eq!(v["ballotCount"], 1);
    // The same ballot again changes nothing; a different one is refused.
    let (s, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!((s, v["proposalState"].as_str()), (200, Some("Open")));
    let (s, v) = vote(&c, &e, &m0, &pid, false).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("VoteAlreadyExists"))
    );
    let (s, v) = vote(&c, &e, &m1, &pid, true).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let (_, _, body) = get(&c, &format!("{e}/gov/service/constitution?{V}")).await;
    assert!(body.ends_with("// replaced by proposal\n"), "{body}");

    // Withdrawal: only by the proposer, and a withdrawn proposal takes no votes.
    let (_, v) = propose(
        &c,
        &e,
        &m1,
        serde_json::json!([{"name": "remove_member", "args": {"member_id": m0.id()}}]),
    )
    .await;
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let withdraw_url = format!("{e}/gov/members/proposals/{pid}:withdraw?{V}");
    let withdraw = |m: &Member| {
        post_cose(
            &c,
            &withdraw_url,
            m.sign(MsgType::Withdrawal, now(), Some(&pid), &Value::Null),
        )
    };
    // A vote first (against: the proposal stays open), then the withdrawal.
    let (s, v) = vote(&c, &e, &m0, &pid, false).await;
    assert_eq!((s, v["proposalState"].as_str()), (200, Some("Open")), "{v}");
    let (s, v) = withdraw(&m0).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    let (s, v) = withdraw(&m1).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Withdrawn")),
        "{v}"
    );
    let (s, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalNotOpen"))
    );

    // Forged, misattributed, replayed, stale and mistyped envelopes are refused.
    let good = m0.sign(
        MsgType::Proposal,
        now(),
        None,
        &serde_json::json!({"actions": []}),
    );
    let (s, _) = post_cose(
        &c,
        &format!("{e}/gov/members/proposals:create?{V}"),
        good.clone(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = post_cose(
        &c,
        &format!("{e}/gov/members/proposals:create?{V}"),
        good.clone(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalReplay")),
        "{v}"
    );
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 5] ^= 1;
    let (s, v) = post_cose(&c, &format!("{e}/gov/members/proposals:create?{V}"), forged).await;
    assert_eq!(
        (s, v["error"]["message"].as_str()),
        (401, Some("Failed to validate COSE Sign1"))
    );
    let (s, v) = propose(&c, &e, &stranger, serde_json::json!([])).await;
    assert_eq!(
        (s, v["error"]["message"].as_str()),
        (401, Some("Signer is not a known member"))
    );
    let old = m0.sign(
        MsgType::Proposal,
        now() - 3600,
        None,
        &serde_json::json!({"actions": []}),
    );
    let (s, v) = post_cose(&c, &format!("{e}/gov/members/proposals:create?{V}"), old).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalCreatedTooLongAgo")),
        "{v}"
    );
    let ballot_as_proposal = m0.sign(MsgType::Ballot, now(), Some(&pid), &serde_json::json!({}));
    let (s, _) = post_cose(
        &c,
        &format!("{e}/gov/members/proposals:create?{V}"),
        ballot_as_proposal,
    )
    .await;
    assert_eq!(s, 401);
    let (s, v) = post_cose(
        &c,
        &format!("{e}/gov/members/proposals:create?{V}"),
        b"not cose".to_vec(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationInfo"))
    );
    // An invalid proposal, by the constitution's validate.
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "no_such_action", "args": {}}]),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalFailedToValidate")),
        "{v}"
    );

    // Every proposal, ballot and ack is a transaction in CCF's tables: the ledger (with an
    // entry, whose claim the audit checks) verifies, with Vellum's auditor and with CCF's own
    // (FULL).
    let r = srv
        .client(Some(&srv.admin_pem()))
        .post(format!(
            "{e}/app/transactions?api-version=2024-12-09-preview"
        ))
        .json(&serde_json::json!({"contents": "after governance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ledger = srv.node.ledger_dir();
    let secret = srv.node.ledger_secret();
    let _dir = srv.stop().await;
    common::audit(&ledger, &secret);
    common::ccf_full(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccfs_member_tools_drive_governance_unchanged() {
    let Some(py) = common::python() else {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python with ccf"
        );
        eprintln!("SKIPPED: no Python with ccf (run scripts/test.sh)");
        return;
    };
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    // The service admits nodes by vote (one member: its vote passes), and a node joins without
    // a token: it waits Pending for CCF's tools to trust it.
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_join_policy", "args": {"admission": "vote"}}]),
    )
    .await;
    let (s, _, body) = get(&c, &format!("{e}/gov/service/join-policy?{V}")).await;
    let policy: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s, &policy["admission"]),
        (200, &Value::from("vote")),
        "{policy}"
    );
    assert_eq!(
        policy["virtual"]["measurements"],
        serde_json::json!([vellum_core::tables::VIRTUAL_MEASUREMENT])
    );
    let joiner_dir = tempfile::tempdir().unwrap();
    let mut cfg = vellum_node::service::ServiceConfig::new(joiner_dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.join = Some(vellum_node::service::JoinConfig {
        url: e.clone(),
        token: None,
        service_cert_pem: Some(srv.service_cert()),
    });
    let joining = tokio::spawn(vellum_node::service::Service::start(cfg));
    let node_id = pending_node(&c, &e).await;

    let m1 = vellum_ledger::identity::Identity::client("member1", SystemTime::now(), 30).unwrap();
    let user = vellum_ledger::identity::Identity::client("user1", SystemTime::now(), 30).unwrap();
    std::fs::write(srv.path("member1_cert.pem"), &m1.cert_pem).unwrap();
    std::fs::write(srv.path("member1_key.pem"), m1.key_pem()).unwrap();
    std::fs::write(srv.path("user1_cert.pem"), &user.cert_pem).unwrap();
    std::fs::write(srv.path("ca.pem"), srv.service_cert()).unwrap();
    let script = common::repo().join("tests/interop/gov_with_ccf_tools.sh");
    let mut args: Vec<std::ffi::OsString> = [
        "ca.pem",
        "member0_cert.pem",
        "member0_key.pem",
        "member1_cert.pem",
        "member1_key.pem",
        "user1_cert.pem",
    ]
    .iter()
    .map(|f| srv.path(f).into_os_string())
    .collect();
    args.insert(0, e.clone().into());
    args.push(node_id.clone().into());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .args(args)
            .env("VELLUM_PYTHON", py)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("gov flow with ccf_cose_sign1 and curl: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The user is in CCF's users table.
    let user_id = user.cert.id();
    assert!(srv.node.with_gov(|g| {
        g.get(vellum_core::tables::USERS_CERTS.name(), user_id.as_bytes())
            .is_some()
    }));

    // The trusted node, which kept asking, received its certificate (endorsed by the service
    // key from the signing request it joined with) and the service's secrets, and serves.
    let joined = tokio::time::timeout(std::time::Duration::from_secs(60), joining)
        .await
        .expect("the trusted node starts")
        .unwrap()
        .unwrap();
    assert_eq!(joined.joined().map(|(id, _)| id), Some(node_id.as_str()));
    let cert = Certificate::from_pem(
        &std::fs::read_to_string(joiner_dir.path().join("node_cert.pem")).unwrap(),
    )
    .unwrap();
    let service = Certificate::from_pem(&srv.service_cert()).unwrap();
    cert.verify_issued_by(&service.public_key().unwrap())
        .unwrap();
    assert!(!joiner_dir.path().join("joining_key.pem").exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while srv
        .node
        .nodes()
        .iter()
        .filter(|n| n.role == "backup")
        .count()
        < 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            srv.node.nodes()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    joined.stop().await.unwrap();
}

/// Waits until a node is recorded `Pending`; its id.
async fn pending_node(c: &reqwest::Client, e: &str) -> String {
    for _ in 0..200 {
        let (_, _, body) = get(c, &format!("{e}/gov/service/nodes?{V}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(n) = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["status"] == "Pending")
        {
            return n["nodeId"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no node joined Pending");
}

/// The operator member of `srv`.
fn operator(srv: &TestServer) -> Member {
    let pem = std::fs::read_to_string(srv.path("member0_cert.pem")).unwrap();
    Member {
        key: vellum_core::crypto::SigningKey::from_pkcs8_pem(
            &std::fs::read_to_string(srv.path("member0_key.pem")).unwrap(),
        )
        .unwrap(),
        cert: Certificate::from_pem(&pem).unwrap(),
        cert_pem: pem,
    }
}

/// Proposes `actions` as the only active member, and votes: the proposal passes.
async fn pass(c: &reqwest::Client, e: &str, m: &Member, actions: Value) {
    let (s, v) = propose(c, e, m, actions).await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let (s, v) = vote(c, e, m, &pid, true).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccfs_default_constitution_runs_unchanged_with_the_same_outcomes() {
    let ccf_constitution =
        std::fs::read_to_string(common::repo().join("testdata/ccf-constitution/default.js"))
            .unwrap();
    let (m1, u1, u2) = (new_member("m1"), new_member("u1"), new_member("u2"));
    let m1_encryption = encryption_key();
    let joiner =
        vellum_ledger::identity::Identity::client("joiner", SystemTime::now(), 30).unwrap();
    let joiner_id = vellum_core::crypto::node_id_of(&joiner.cert);
    let joiner_request = serde_json::json!({
        "address": "127.0.0.1:9",
        "csr": joiner.node_csr("Vellum Node", &["localhost"], &["127.0.0.1".parse().unwrap()]).unwrap(),
    });
    let jwk = serde_json::from_str::<Value>(&vellum_node::testing::es256_key().1).unwrap()["keys"]
        [0]
    .clone();
    let mut outcomes = Vec::new();
    for ccf in [false, true] {
        let srv = TestServer::start(10).await;
        let (e, c) = (srv.endpoint.clone(), srv.client(None));
        let m0 = operator(&srv);
        activate(&c, &e, &m0).await;
        // A node waits to be trusted (the join policy is Vellum's setting: set under Vellum's
        // constitution in both runs).
        pass(
            &c,
            &e,
            &m0,
            serde_json::json!([{"name": "set_join_policy", "args": {"admission": "vote"}}]),
        )
        .await;
        let (s, v) = join_as(&srv, &joiner.combined_pem(), joiner_request.clone()).await;
        assert_eq!(s, 202, "{v}");
        if ccf {
            pass(
                &c,
                &e,
                &m0,
                serde_json::json!([{"name": "set_constitution", "args": {"constitution": ccf_constitution}}]),
            )
            .await;
            let (_, _, body) = get(&c, &format!("{e}/gov/service/constitution?{V}")).await;
            assert_eq!(body, ccf_constitution);
        }
        for actions in [
            serde_json::json!([{"name": "set_member", "args": {"cert": m1.cert_pem, "member_data": {"team": "audit"}, "encryption_pub_key": m1_encryption.1}}]),
            serde_json::json!([{"name": "set_user", "args": {"cert": u1.cert_pem, "user_data": {"desk": 7}}}]),
            serde_json::json!([{"name": "set_user", "args": {"cert": u2.cert_pem}}]),
            serde_json::json!([{"name": "set_member_data", "args": {"member_id": m1.id(), "member_data": {"team": "ops"}}}]),
            serde_json::json!([{"name": "remove_user", "args": {"user_id": u2.id()}}]),
            serde_json::json!([{"name": "set_jwt_issuer", "args": {"issuer": "https://issuer.test", "jwks": {"keys": [jwk]}}}]),
            serde_json::json!([{"name": "transition_node_to_trusted", "args": {"node_id": joiner_id, "valid_from": "20261205000000Z"}}]),
            serde_json::json!([{"name": "set_node_data", "args": {"node_id": joiner_id, "node_data": {"rack": 3}}}]),
        ] {
            pass(&c, &e, &m0, actions).await;
        }
        // The new member can ack what the constitution gave it, and becomes Active.
        activate(&c, &e, &m1).await;
        // Both refuse what is malformed, each in its own words.
        let (s, v) = propose(
            &c,
            &e,
            &m0,
            serde_json::json!([{"name": "set_member", "args": {"cert": "not a certificate"}}]),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("ProposalFailedToValidate")),
            "{v}"
        );
        let rows = srv.node.with_gov(|g| {
            let row = |t: &str, k: &str| {
                g.get(t, k.as_bytes())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            vec![
                row("public:ccf.gov.members.certs", &m1.id()),
                row("public:ccf.gov.members.info", &m1.id()),
                row("public:ccf.gov.members.encryption_public_keys", &m1.id()),
                row("public:ccf.gov.users.certs", &u1.id()),
                row("public:ccf.gov.users.info", &u1.id()),
                row("public:ccf.gov.users.certs", &u2.id()),
                row("public:ccf.gov.users.info", &u2.id()),
                row("public:ccf.gov.jwt.issuers", "https://issuer.test"),
                row("public:ccf.gov.jwt.public_signing_keys_metadata_v2", "k1"),
                row("public:ccf.gov.nodes.info", &joiner_id),
                row("public:ccf.gov.nodes.endorsed_certificates", &joiner_id)
                    .map(|c| c.starts_with("-----BEGIN CERTIFICATE-----").to_string()),
                // The recovery member once it acked (shares are random: who holds one).
                g.recovery_shares().map(|r| {
                    r.encrypted_shares
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                }),
            ]
        });
        outcomes.push(rows);
        srv.stop().await;
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let ours = &outcomes[0];
    assert_eq!(ours[0].as_deref(), Some(m1.cert_pem.as_str()));
    assert_eq!(
        ours[1].as_deref(),
        Some(r#"{"member_data":{"team":"ops"},"status":"Active"}"#)
    );
    assert_eq!(ours[4].as_deref(), Some(r#"{"user_data":{"desk":7}}"#));
    assert_eq!((ours[5].as_deref(), ours[6].as_deref()), (None, None));
    assert_eq!(
        ours[7].as_deref(),
        Some(r#"{"issuer":"https://issuer.test"}"#)
    );
    let keys: Value = serde_json::from_str(ours[8].as_deref().unwrap()).unwrap();
    assert_eq!(keys[0]["issuer"], "https://issuer.test", "{keys}");
    let node: Value = serde_json::from_str(ours[9].as_deref().unwrap()).unwrap();
    assert_eq!(
        (
            &node["status"],
            &node["ledger_secret_seqno"],
            &node["node_data"]
        ),
        (
            &Value::from("Trusted"),
            &Value::from(1),
            &serde_json::json!({"rack": 3})
        ),
        "{node}"
    );
    assert_eq!(ours[10].as_deref(), Some("true"));
    assert_eq!(ours[11].as_deref(), Some(m1.id().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwing_constitution_records_nothing_and_concurrent_proposals_all_land() {
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;

    // Concurrent proposals (each its own signature): all recorded, each with its own id.
    let proposals = (0..6).map(|i| {
        let (c, e) = (c.clone(), e.clone());
        let body = m0.sign(
            MsgType::Proposal,
            now(),
            None,
            &serde_json::json!({"actions": [{"name": "set_member_data", "args": {"member_id": m0.id(), "member_data": {"n": i}}}]}),
        );
        async move { post_cose(&c, &format!("{e}/gov/members/proposals:create?{V}"), body).await }
    });
    let mut ids: Vec<String> = futures_util::future::join_all(proposals)
        .await
        .into_iter()
        .map(|(s, v)| {
            assert_eq!(s, 200, "{v}");
            v["proposalId"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    let (_, _, body) = get(&c, &format!("{e}/gov/members/proposals?{V}")).await;
    let listed = serde_json::from_str::<Value>(&body).unwrap()["value"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 6);

    // A constitution whose apply or resolve throws: CCF's 500, nothing recorded.
    let base = vellum_ledger::genesis::DEFAULT_CONSTITUTION;
    for (which, patched, code) in [
        (
            "apply",
            base.replace(
                "export function apply(proposal, proposalId) {",
                "export function apply(proposal, proposalId) {\n  if (proposal.includes(\"boom\")) throw new Error(\"apply broke\");",
            ),
            "Failed to apply(): Error: apply broke",
        ),
        (
            "resolve",
            base.replace(
                "export function resolve(proposal, proposerId, votes) {",
                "export function resolve(proposal, proposerId, votes) {\n  if (votes.length > 0) throw new Error(\"resolve broke\");",
            ),
            "Failed to resolve(): Error: resolve broke",
        ),
    ] {
        // Install it (the proposal passes under the current one).
        pass(
            &c,
            &e,
            &m0,
            serde_json::json!([{"name": "set_constitution", "args": {"constitution": patched}}]),
        )
        .await;
        let (s, v) = propose(
            &c,
            &e,
            &m0,
            serde_json::json!([{"name": "set_member_data", "args": {"member_id": m0.id(), "member_data": {"boom": true}}}]),
        )
        .await;
        assert_eq!(s, 200, "{which}: {v}");
        let pid = v["proposalId"].as_str().unwrap().to_owned();
        let before = srv.node.with_gov(|g| g.clone());
        let (s, v) = vote(&c, &e, &m0, &pid, true).await;
        assert_eq!(s, 500, "{which}: {v}");
        assert_eq!(v["error"]["code"], "InternalError");
        assert!(v["error"]["message"].as_str().unwrap().contains(code), "{which}: {v}");
        // Nothing of the ballot or the apply was recorded: the proposal is still open.
        assert_eq!(srv.node.with_gov(|g| g.clone()), before, "{which}");
        let (_, _, body) = get(&c, &format!("{e}/gov/members/proposals/{pid}?{V}")).await;
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["proposalState"], "Open");
        // Back to the default constitution for the next case; proposals made under the
        // broken one are dropped.
        let fix = serde_json::json!([{"name": "set_constitution", "args": {"constitution": base}}]);
        let (s, v) = propose(&c, &e, &m0, fix).await;
        assert_eq!(s, 200, "{v}");
        let fix_id = v["proposalId"].as_str().unwrap().to_owned();
        let (s, v) = vote(&c, &e, &m0, &fix_id, true).await;
        if which == "resolve" {
            // Its resolve throws on any vote: the fix cannot pass under it. A constitution
            // that cannot resolve leaves governance stuck; the test stops here for it.
            assert_eq!(s, 500, "{v}");
            return;
        }
        assert_eq!((s, v["proposalState"].as_str()), (200, Some("Accepted")), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_manage_ledger_users_by_proposal() {
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let user = vellum_ledger::identity::Identity::client("by vote", SystemTime::now(), 30).unwrap();
    let as_user = srv.client(Some(&user.combined_pem()));
    let append = || async {
        as_user
            .post(format!(
                "{e}/app/transactions?api-version=2024-12-09-preview"
            ))
            .json(&serde_json::json!({"contents": "by a user the consortium admitted"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(append().await, 403);
    // Unknown roles are refused by the constitution's validate.
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_ledger_user", "args": {"cert": user.cert_pem, "roles": ["Janitor"]}}]),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalFailedToValidate")),
        "{v}"
    );
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_ledger_user", "args": {"cert": user.cert_pem, "roles": ["contributor"]}}]),
    )
    .await;
    assert_eq!(append().await, 200);
    // The ACL API sees the same user, under its ACL id.
    let admin = srv.client(Some(&srv.admin_pem()));
    let id = user.cert.acl_fingerprint();
    let v: Value = admin
        .get(format!(
            "{e}/app/ledgerUsers/{id}?api-version=2024-12-09-preview"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["assignedRoles"],
        serde_json::json!(["Contributor"]),
        "{v}"
    );
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "remove_ledger_user", "args": {"user_id": id}}]),
    )
    .await;
    assert_eq!(append().await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_node_cannot_be_retired_by_proposal() {
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let (_, _, body) = get(&c, &format!("{e}/gov/service/nodes?{V}")).await;
    let nodes: Value = serde_json::from_str(&body).unwrap();
    let nodes = nodes["value"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["status"], "Trusted");
    let id = nodes[0]["nodeId"].as_str().unwrap().to_owned();
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "remove_node", "args": {"node_id": id}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let (s, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the last node of the service cannot be retired"),
        "{v}"
    );
    let (_, _, body) = get(&c, &format!("{e}/gov/service/nodes/{id}?{V}")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "Trusted"
    );
}

/// POSTs a join request to `e` as the holder of `identity` (certificate and key, one PEM).
async fn join_as(srv: &TestServer, identity: &str, request: serde_json::Value) -> (u16, Value) {
    let r = srv
        .client(Some(identity))
        .post(format!("{}/node/join", srv.endpoint))
        .json(&request)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_by_vote_are_bounded_and_bound_to_the_joining_key() {
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let node =
        |cn: &str| vellum_ledger::identity::Identity::client(cn, SystemTime::now(), 30).unwrap();
    let csr = |id: &vellum_ledger::identity::Identity| {
        id.node_csr(
            "Vellum Node",
            &["localhost"],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap()
    };
    let request = |csr: Option<String>| serde_json::json!({"address": "127.0.0.1:9", "csr": csr});

    // Under the default policy a join needs a token.
    let a = node("a");
    let (s, v) = join_as(&srv, &a.combined_pem(), request(Some(csr(&a)))).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("join token"),
        "{v}"
    );

    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_join_policy", "args": {"admission": "vote"}}]),
    )
    .await;
    // A signing request for another key than the one presented, or none, is refused.
    let b = node("b");
    let (s, v) = join_as(&srv, &a.combined_pem(), request(Some(csr(&b)))).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not for the key"),
        "{v}"
    );
    let (s, v) = join_as(&srv, &a.combined_pem(), request(None)).await;
    assert_eq!(s, 403, "{v}");
    let mut tampered = csr(&a).into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let (s, v) = join_as(
        &srv,
        &a.combined_pem(),
        request(Some(String::from_utf8(tampered).unwrap())),
    )
    .await;
    assert_eq!(s, 403, "{v}");

    // A proper one is recorded Pending; asking again changes nothing.
    let (s, v) = join_as(&srv, &a.combined_pem(), request(Some(csr(&a)))).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["node_status"], "Pending");
    let a_id = v["node_id"].as_str().unwrap().to_owned();
    let before = srv.node.cluster();
    let (s, v) = join_as(&srv, &a.combined_pem(), request(Some(csr(&a)))).await;
    assert_eq!((s, v["node_id"].as_str()), (202, Some(a_id.as_str())));
    assert_eq!(srv.node.cluster(), before, "asking again records nothing");

    // At most eight wait at once.
    for i in 1..8 {
        let n = node(&format!("n{i}"));
        let (s, v) = join_as(&srv, &n.combined_pem(), request(Some(csr(&n)))).await;
        assert_eq!(s, 202, "{i}: {v}");
    }
    let n = node("ninth");
    let (s, v) = join_as(&srv, &n.combined_pem(), request(Some(csr(&n)))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("TooManyPendingNodes")),
        "{v}"
    );

    // A waiting node the members remove is refused from then on, and no longer counts.
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "remove_node", "args": {"node_id": a_id}}]),
    )
    .await;
    let (s, v) = join_as(&srv, &a.combined_pem(), request(Some(csr(&a)))).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("retired"),
        "{v}"
    );
    let (s, v) = join_as(&srv, &n.combined_pem(), request(Some(csr(&n)))).await;
    assert_eq!(s, 202, "{v}");

    // A trust proposal for a node that is not waiting, or with a bad date, fails.
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "transition_node_to_trusted", "args": {"node_id": "ab".repeat(32), "valid_from": "20261205000000Z"}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let (s, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No such node"),
        "{v}"
    );
    let n_id = srv
        .node
        .nodes()
        .into_iter()
        .find(|x| x.status == vellum_core::tables::NodeStatus::Pending)
        .unwrap()
        .node_id;
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "transition_node_to_trusted", "args": {"node_id": n_id, "valid_from": "yesterday"}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let (s, v) = vote(&c, &e, &m0, &pid, true).await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("valid_from"),
        "{v}"
    );
}

/// A token from `iss` for `oid`, signed with `key` under `kid` with `alg`, for audience `aud`.
fn token_from(
    iss: &str,
    aud: &str,
    oid: &str,
    alg: jsonwebtoken::Algorithm,
    kid: &str,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let now = now();
    let claims = serde_json::json!({
        "iss": iss, "aud": aud, "oid": oid, "iat": now, "nbf": now - 60, "exp": now + 3600,
    });
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_trust_a_token_issuer_by_proposal() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let iss = "https://login.by-vote.test/v2.0";
    let aud = "https://confidential-ledger.azure.com";
    let (ec_der, ec_jwks) = vellum_node::testing::es256_key();
    let mut ec_jwk: Value = serde_json::from_str::<Value>(&ec_jwks).unwrap()["keys"][0].clone();
    ec_jwk["kid"] = "ec1".into();
    let (rsa_der, rsa_jwk) = vellum_node::testing::rsa_key("rsa1", None);
    let ec = EncodingKey::from_ec_der(&ec_der);
    let rsa = EncodingKey::from_rsa_der(&rsa_der);
    let read = |token: String| {
        let c = c.clone();
        let e = e.clone();
        async move {
            c.get(format!(
                "{e}/app/collections?api-version=2024-12-09-preview"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_ledger_user", "args": {"user_id": "oid-by-vote", "roles": ["Reader"]}}]),
    )
    .await;
    let ec_token = token_from(iss, aud, "oid-by-vote", Algorithm::ES256, "ec1", &ec);
    assert_eq!(read(ec_token.clone()).await, 401, "not trusted yet");

    // Auto-refresh is refused by validate; keys without a kid by the constitution too.
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_jwt_issuer", "args": {"issuer": iss, "auto_refresh": true, "ca_cert_bundle_name": "x"}}]),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalFailedToValidate")),
        "{v}"
    );
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_jwt_issuer", "args": {"issuer": iss, "jwks": {"keys": [ec_jwk, rsa_jwk]}}}]),
    )
    .await;
    // CCF's read of the issuers and keys.
    let (s, _, body) = get(&c, &format!("{e}/gov/service/jwk?{V}")).await;
    let jwk: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200);
    assert_eq!(jwk["issuers"][iss]["autoRefresh"], false, "{jwk}");
    for kid in ["ec1", "rsa1"] {
        assert_eq!(jwk["keys"][kid][0]["issuer"], iss, "{jwk}");
        assert!(
            jwk["keys"][kid][0]["publicKey"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    // Tokens from it now authenticate, with either key, each with its own algorithm only.
    assert_eq!(read(ec_token.clone()).await, 200);
    assert_eq!(
        read(token_from(
            iss,
            aud,
            "oid-by-vote",
            Algorithm::RS256,
            "rsa1",
            &rsa
        ))
        .await,
        200
    );
    assert_eq!(
        read(token_from(
            iss,
            aud,
            "oid-by-vote",
            Algorithm::RS512,
            "rsa1",
            &rsa
        ))
        .await,
        401
    );
    assert_eq!(
        read(token_from(
            iss,
            aud,
            "oid-by-vote",
            Algorithm::ES256,
            "rsa1",
            &ec
        ))
        .await,
        401
    );
    assert_eq!(
        read(token_from(
            iss,
            aud,
            "oid-by-vote",
            Algorithm::ES256,
            "nokey",
            &ec
        ))
        .await,
        401
    );
    assert_eq!(
        read(token_from(
            iss,
            "https://elsewhere",
            "oid-by-vote",
            Algorithm::ES256,
            "ec1",
            &ec
        ))
        .await,
        401
    );
    // Signed by another key under a recorded kid.
    let (other, _) = vellum_node::testing::es256_key();
    assert_eq!(
        read(token_from(
            iss,
            aud,
            "oid-by-vote",
            Algorithm::ES256,
            "ec1",
            &EncodingKey::from_ec_der(&other)
        ))
        .await,
        401
    );
    // A user the token names but the ledger does not know is authenticated, not allowed.
    assert_eq!(
        read(token_from(
            iss,
            aud,
            "stranger",
            Algorithm::ES256,
            "ec1",
            &ec
        ))
        .await,
        403
    );
    // The issuer configured on the command line still works alongside.
    assert_eq!(read(srv.token("oid-by-vote")).await, 200);

    // Removed by proposal: its tokens no longer authenticate, and its keys are gone.
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "remove_jwt_issuer", "args": {"issuer": iss}}]),
    )
    .await;
    assert_eq!(read(ec_token).await, 401);
    let (_, _, body) = get(&c, &format!("{e}/gov/service/jwk?{V}")).await;
    let jwk: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        jwk,
        serde_json::json!({"issuers": {}, "keys": {}, "caCertBundles": {}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_deploy_and_remove_the_app_by_proposal() {
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let bundle = serde_json::json!({
        "metadata": {"endpoints": {"/hello": {"get": {
            "js_module": "m.js", "js_function": "hello", "authn_policies": ["no_auth"],
            "forwarding_required": "never", "mode": "readonly"}}}},
        "modules": [{"name": "m.js", "module": "export function hello() { return { body: 'hi by vote' }; }"}],
    });
    let hello = || async {
        let r = c
            .get(format!("{e}/app/hello?api-version=2024-12-09-preview"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(hello().await.0, 404);
    // A bundle the API would refuse is refused by validate, in the API's words.
    let mut broken = bundle.clone();
    broken["metadata"]["endpoints"]["/hello"]["get"]
        .as_object_mut()
        .unwrap()
        .remove("js_module");
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_js_app", "args": {"bundle": broken}}]),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ProposalFailedToValidate")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("js_module"),
        "{v}"
    );

    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_js_app", "args": {"bundle": bundle}}]),
    )
    .await;
    assert_eq!(hello().await, (200, "hi by vote".to_owned()));
    // The ACL API shows what the members deployed; CCF's read describes its endpoints.
    let admin = srv.client(Some(&srv.admin_pem()));
    let deployed: Value = admin
        .get(format!(
            "{e}/app/userDefinedEndpoints?api-version=2024-12-09-preview"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deployed["modules"][0]["name"], "m.js", "{deployed}");
    let (s, _, body) = get(&c, &format!("{e}/gov/service/javascript-app?{V}")).await;
    let app: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        app["endpoints"]["/hello"]["GET"]["jsFunction"], "hello",
        "{app}"
    );
    assert_eq!(
        app["endpoints"]["/hello"]["GET"]["mode"], "readonly",
        "{app}"
    );

    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "remove_js_app", "args": {}}]),
    )
    .await;
    assert_eq!(hello().await.0, 404);
    let (_, _, body) = get(&c, &format!("{e}/gov/service/javascript-app?{V}")).await;
    assert_eq!(body, r#"{"endpoints":{}}"#);
}

/// An RSA-2048 encryption key for a member: (private PKCS#8 PEM, public SPKI PEM).
fn encryption_key() -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let public = rcgen::PublicKeyData::subject_public_key_info(&kp);
    (
        kp.serialize_pem(),
        pem::encode(&pem::Pem::new("PUBLIC KEY", public)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_shares_go_to_active_members_with_keys_and_a_quorum_recovers_the_secret() {
    use vellum_node::recovery::{decrypt_share, recover};
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let share_of = |m: &Member| {
        let (c, e, id) = (c.clone(), e.clone(), m.id());
        async move { get(&c, &format!("{e}/gov/recovery/encrypted-shares/{id}?{V}")).await }
    };
    // The operator holds no encryption key: no share.
    let (s, _, body) = share_of(&m0).await;
    assert_eq!(s, 404, "{body}");

    // Two members with encryption keys; each gets a share once it acks (Active).
    let (m1, m2) = (new_member("r1"), new_member("r2"));
    let (k1, k2) = (encryption_key(), encryption_key());
    for (m, k) in [(&m1, &k1), (&m2, &k2)] {
        pass(
            &c,
            &e,
            &m0,
            serde_json::json!([{"name": "set_member", "args": {"cert": m.cert_pem, "encryption_pub_key": k.1}}]),
        )
        .await;
        assert_eq!(share_of(m).await.0, 404, "no share before the ack");
    }
    activate(&c, &e, &m1).await;
    let (s, _, body) = share_of(&m1).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["memberId"], m1.id().as_str());
    let secret = srv.node.ledger_secret().as_bytes().to_vec();
    let info = srv.node.with_gov(|g| g.recovery_shares()).unwrap();
    let s1 = decrypt_share(&k1.0, v["encryptedShare"].as_str().unwrap()).unwrap();
    assert_eq!(
        recover(&[s1], &info).unwrap().as_bytes().to_vec(),
        secret,
        "1 of 1"
    );

    // The second recovery member acks; the members raise the threshold to 2 (three active
    // members now: two votes pass it).
    activate(&c, &e, &m2).await;
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 3}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    vote(&c, &e, &m0, &pid, true).await;
    let (s, v) = vote(&c, &e, &m1, &pid, true).await;
    assert_eq!(s, 500, "three is more than the two recovery members: {v}");
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    vote(&c, &e, &m0, &pid, true).await;
    let (s, v) = vote(&c, &e, &m1, &pid, true).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let info = srv.node.with_gov(|g| g.recovery_shares()).unwrap();
    assert_eq!(info.encrypted_shares.len(), 2);
    let s1 = decrypt_share(&k1.0, &info.encrypted_shares[&m1.id()]).unwrap();
    let s2 = decrypt_share(&k2.0, &info.encrypted_shares[&m2.id()]).unwrap();
    assert!(
        recover(std::slice::from_ref(&s1), &info).is_err(),
        "one share of two is not enough"
    );
    assert_eq!(
        recover(&[s1, s2.clone()], &info)
            .unwrap()
            .as_bytes()
            .to_vec(),
        secret
    );
    // Removing a recovery member would leave fewer than the threshold: refused.
    let (s, v) = propose(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "remove_member", "args": {"member_id": m2.id()}}]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    vote(&c, &e, &m0, &pid, true).await;
    let (s, v) = vote(&c, &e, &m1, &pid, true).await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fewer recovery members"),
        "{v}"
    );
    // A share decrypted with the wrong key does not exist; a wrong share is refused.
    assert!(decrypt_share(&k2.0, &info.encrypted_shares[&m1.id()]).is_err());
    let mut wrong = s2.clone();
    wrong[5] ^= 0x40;
    let s1 = decrypt_share(&k1.0, &info.encrypted_shares[&m1.id()]).unwrap();
    assert!(recover(&[s1, wrong], &info).is_err());
}

/// `trigger_ledger_rekey` under write load: every entry written before, during and after two
/// rekeys reads back as written, before and after a restart (the node kept its secrets); the
/// recovery shares wrap the latest secret; `vellum audit` with the latest secret alone checks
/// every entry, and CCF's `verify_ledger_secrets_chain` and `ccf.ledger` FULL accept the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_under_write_load_loses_nothing() {
    use vellum_node::recovery::{decrypt_share, recover};
    let srv = TestServer::start(10).await;
    let (e, c) = (srv.endpoint.clone(), srv.client(None));
    let m0 = operator(&srv);
    activate(&c, &e, &m0).await;
    let m1 = new_member("r1");
    let k1 = encryption_key();
    pass(
        &c,
        &e,
        &m0,
        serde_json::json!([{"name": "set_member", "args": {"cert": m1.cert_pem, "encryption_pub_key": k1.1}}]),
    )
    .await;
    activate(&c, &e, &m1).await;
    let first = srv.node.ledger_secret();

    // Two writers write until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = srv.client(Some(&srv.admin_pem()));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (c, e, stop) = (admin.clone(), e.clone(), stop.clone());
            tokio::spawn(async move {
                let mut written = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 5 {
                    let contents = format!("writer {w} entry {i}");
                    let r = c
                        .post(format!("{e}/app/transactions?{V}"))
                        .json(&serde_json::json!({ "contents": contents }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let txid = r.headers()["x-ms-ccf-transaction-id"].to_str().unwrap();
                    written.push((txid.to_owned(), contents));
                    i += 1;
                }
                written
            })
        })
        .collect();
    let both = |m0: &Member, m1: &Member| {
        let (c, e) = (c.clone(), e.clone());
        let (m0, m1) = (m0.clone(), m1.clone());
        async move {
            let (s, v) = propose(
                &c,
                &e,
                &m0,
                serde_json::json!([{"name": "trigger_ledger_rekey", "args": {}}]),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            let pid = v["proposalId"].as_str().unwrap().to_owned();
            vote(&c, &e, &m0, &pid, true).await;
            let (s, v) = vote(&c, &e, &m1, &pid, true).await;
            assert_eq!(
                (s, v["proposalState"].as_str()),
                (200, Some("Accepted")),
                "{v}"
            );
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    both(&m0, &m1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    both(&m0, &m1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let secrets = srv.node.ledger_secrets();
    assert_eq!(secrets.len(), 3, "two rekeys");
    let latest = srv.node.ledger_secret();
    assert_ne!(latest.as_bytes(), first.as_bytes());
    // Entries were written under each of the three secrets.
    let froms: Vec<u64> = secrets.iter().map(|(f, _)| f).collect();
    let seqnos: Vec<u64> = written
        .iter()
        .map(|(t, _)| t.split('.').nth(1).unwrap().parse().unwrap())
        .collect();
    for w in froms.windows(2) {
        assert!(
            seqnos.iter().any(|s| *s >= w[0] && *s < w[1]),
            "no entry under the secret from {}",
            w[0]
        );
    }
    assert!(seqnos.iter().any(|s| *s >= froms[2]));

    // The recovery shares wrap the latest secret.
    let info = srv.node.with_gov(|g| g.recovery_shares()).unwrap();
    let s1 = decrypt_share(&k1.0, &info.encrypted_shares[&m1.id()]).unwrap();
    assert_eq!(recover(&[s1], &info).unwrap().as_bytes(), latest.as_bytes());

    let last = written
        .iter()
        .map(|(t, _)| t.clone())
        .max_by_key(|t| t.split('.').nth(1).unwrap().parse::<u64>().unwrap());
    srv.node
        .wait_committed(
            last.unwrap().parse().unwrap(),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let read_all = |srv: &TestServer, written: Vec<(String, String)>| {
        let c = srv.client(Some(&srv.admin_pem()));
        let e = srv.endpoint.clone();
        async move {
            for (txid, contents) in written {
                let v: Value = c
                    .get(format!("{e}/app/transactions/{txid}?{V}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(v["entry"]["contents"], contents.as_str(), "{txid}: {v}");
            }
        }
    };
    read_all(&srv, written.clone()).await;
    println!(
        "{} entries written across two rekeys (secrets from {froms:?})",
        written.len()
    );

    // The node restarts with its three secrets, and reads everything back.
    let dir = srv.stop().await;
    let text = std::fs::read_to_string(dir.path().join("ledger_secret")).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    let srv = TestServer::restart(dir, 10).await;
    assert_eq!(srv.node.ledger_secrets().len(), 3);
    read_all(&srv, written.clone()).await;
    let admin = srv.client(Some(&srv.admin_pem()));
    let r = admin
        .post(format!("{e}/app/transactions?{V}", e = srv.endpoint))
        .json(&serde_json::json!({ "contents": "after the restart" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The latest secret alone opens the whole history.
    let dir = srv.stop().await;
    let ledger = dir.path().join("ledger");
    let n = common::audit(&ledger, &latest);
    assert!(n as usize > written.len());
    assert_eq!(
        common::ccf_secrets_chain(&ledger),
        Some(2).filter(|_| common::python().is_some())
    );
    common::ccf_full(&ledger);
}

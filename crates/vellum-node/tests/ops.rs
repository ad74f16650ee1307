//! Operating a node: its metrics scraped by a real Prometheus, its health endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vellum_node::testing::TestServer;

const V: &str = "api-version=2022-05-13";

/// Debian's `prometheus`, if installed; required (not skipped) when
/// `VELLUM_REQUIRE_PROMETHEUS=1`.
fn prometheus() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("VELLUM_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "VELLUM_REQUIRE_PROMETHEUS=1 but prometheus is not installed"
        );
        eprintln!("skipped: prometheus is not installed (Debian package prometheus)");
    }
    found
}

/// Appends `contents` as the administrator; returns its transaction id once committed.
async fn write_committed(srv: &TestServer, contents: &str) -> vellum_core::TxId {
    let r = srv
        .client(Some(&srv.admin_pem()))
        .post(format!("{}/app/transactions?{V}", srv.endpoint))
        .json(&json!({"contents": contents}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let txid: vellum_core::TxId = r.headers()["x-ms-ccf-transaction-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    srv.node
        .wait_committed(txid, Duration::from_secs(10))
        .await
        .unwrap();
    txid
}

/// A Prometheus server scraping `target` over HTTPS every 200 ms, trusting `ca`.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(bin: &Path, target: &str, ca: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let config = [
        "global:".to_owned(),
        "  scrape_interval: 200ms".into(),
        "  scrape_timeout: 200ms".into(),
        "scrape_configs:".into(),
        "  - job_name: vellum".into(),
        "    scheme: https".into(),
        "    metrics_path: /metrics".into(),
        "    tls_config:".into(),
        format!("      ca_file: {}", dir.path().join("ca.pem").display()),
        "    static_configs:".into(),
        format!("      - targets: ['{target}']"),
    ]
    .join("\n");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl Prometheus {
    /// The value of the instant query `q` (its first series), if Prometheus has one.
    async fn query(&self, http: &reqwest::Client, q: &str) -> Option<f64> {
        let v: Value = http
            .get(format!(
                "{}/api/v1/query?query={}",
                self.url,
                percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `q` has a value that `ok` accepts; returns it.
    async fn wait_for(&self, http: &reqwest::Client, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.query(http, q).await
                && ok(v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never had an accepted value for {q} (last: {:?}); log: {}",
                self.query(http, q).await,
                std::fs::read_to_string(self._dir.path().join("prometheus.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A real Prometheus scrapes `/metrics` over HTTPS (pinning the service certificate), and the
/// metrics move as writes, reads and refusals happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_node_and_metrics_move_with_writes() {
    let Some(bin) = prometheus() else { return };
    let srv = TestServer::start(100).await;
    let admin = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let prom = start_prometheus(&bin, &srv.addr.to_string(), &srv.service_cert());
    let http = reqwest::Client::new();
    prom.wait_for(&http, "up{job=\"vellum\"}", |v| v == 1.0)
        .await;
    let before = prom
        .wait_for(&http, "vellum_ledger_transactions_total", |_| true)
        .await;
    let mut last = None;
    for i in 0..50 {
        let r = admin
            .post(format!("{e}/app/transactions?{V}"))
            .json(&json!({"contents": format!("metric {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        last = r
            .headers()
            .get("x-ms-ccf-transaction-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<vellum_core::TxId>().ok());
    }
    let last = last.unwrap();
    srv.node
        .wait_committed(last, Duration::from_secs(10))
        .await
        .unwrap();
    // A refusal by an unknown caller, counted by its code.
    let r = srv
        .client(None)
        .get(format!("{e}/app/transactions/{last}?{V}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    prom.wait_for(&http, "vellum_ledger_transactions_total", |v| {
        v >= before + 50.0
    })
    .await;
    prom.wait_for(&http, "vellum_commit_seqno", |v| v >= last.seqno as f64)
        .await;
    prom.wait_for(
        &http,
        "sum(vellum_requests_total{kind=\"write\",outcome=\"ok\"})",
        |v| v >= 50.0,
    )
    .await;
    prom.wait_for(&http, "vellum_signature_transactions_total", |v| v >= 1.0)
        .await;
    prom.wait_for(&http, "vellum_commit_latency_seconds_count", |v| v >= 1.0)
        .await;
    prom.wait_for(&http, "vellum_ledger_sync_latency_seconds_count", |v| {
        v >= 1.0
    })
    .await;
    prom.wait_for(&http, "vellum_raft_state{state=\"Leader\"}", |v| v == 1.0)
        .await;
    prom.wait_for(&http, "vellum_ledger_size_bytes", |v| v > 0.0)
        .await;
    prom.wait_for(&http, "vellum_open_connections", |v| v >= 1.0)
        .await;
    prom.wait_for(
        &http,
        "vellum_refused_total{reason=\"InvalidAuthenticationInfo\"}",
        |v| v >= 1.0,
    )
    .await;
    srv.stop().await;
}

/// `/node/health` tells a node's role, commit point and disk without a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tells_role_commit_and_disk() {
    let srv = TestServer::start(100).await;
    let e = &srv.endpoint;
    let txid = write_committed(&srv, "health").await;
    let v: Value = srv
        .client(None)
        .get(format!("{e}/node/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["role"], "primary", "{v}");
    assert_eq!(v["nodeId"], srv.node.node_id(), "{v}");
    assert_eq!(v["primary"], srv.node.node_id(), "{v}");
    assert_eq!(v["ready"], true, "{v}");
    assert!(v["commitSeqno"].as_u64().unwrap() >= txid.seqno, "{v}");
    assert!(v["lastSignatureAgeSeconds"].as_f64().unwrap() >= 0.0, "{v}");
    assert!(v["ledgerBytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["diskFreeBytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["writeError"].is_null(), "{v}");
    srv.stop().await;
}

/// CCF's built-in `/app/receipt?transaction_id=`: CCF's JSON receipt by default, a COSE receipt
/// with `Accept: application/cose`; both verified by CCF's `ccf.receipt`, and a COSE receipt
/// with one byte of its proof changed refused by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccfs_receipt_endpoint_serves_json_and_cose_receipts_ccf_verifies() {
    let srv = TestServer::start(100).await;
    let admin = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let txid = write_committed(&srv, "receipt me").await;
    let url = format!("{e}/app/receipt?transaction_id={txid}");
    let r = admin.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert!(
        json["leaf_components"]["write_set_digest"].is_string(),
        "{json}"
    );
    assert!(json["node_id"].is_string(), "{json}");
    let r = admin
        .get(&url)
        .header("accept", "application/cose")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/cose");
    let cose = r.bytes().await.unwrap().to_vec();
    // Ours verifies it too, against the service key.
    let cert = vellum_core::crypto::Certificate::from_pem(&srv.service_cert()).unwrap();
    let (_, leaf) =
        vellum_core::receipt::verify_cose_receipt(&cose, &cert.public_key().unwrap(), None)
            .unwrap();
    assert_eq!(
        leaf.write_set_digest.to_hex(),
        json["leaf_components"]["write_set_digest"]
            .as_str()
            .unwrap()
    );
    // Refusals: no id, a bad id, no credential, an unknown transaction.
    for (q, status) in [
        ("", 400),
        ("?transaction_id=x.y", 400),
        (
            &format!("?transaction_id={}.{}", txid.view + 7, txid.seqno) as &str,
            404,
        ),
    ] {
        let r = admin
            .get(format!("{e}/app/receipt{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{q}");
    }
    let r = srv.client(None).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let Some(py) = common::python() else {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python"
        );
        eprintln!("skipping ccf.receipt verification: no Python with ccf");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.json"), json.to_string()).unwrap();
    std::fs::write(dir.path().join("r.cose"), &cose).unwrap();
    // One byte of the inclusion proof's write-set digest changed.
    let mut tampered = cose.clone();
    let ws = leaf.write_set_digest.0;
    let at = tampered
        .windows(32)
        .position(|w| w == ws)
        .expect("the write-set digest is in the receipt");
    tampered[at] ^= 1;
    std::fs::write(dir.path().join("t.cose"), &tampered).unwrap();
    let out = Command::new(py)
        .arg(common::repo().join("tests/interop/verify_ccf_receipts.py"))
        .arg(srv.path("service_cert.pem"))
        .arg(dir.path().join("r.json"))
        .arg(dir.path().join("r.cose"))
        .arg("--tampered")
        .arg(dir.path().join("t.cose"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL PASSED"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop().await;
}

/// Snapshots every 40 committed transactions: written in CCF's format with their evidence
/// committed, opened and verified by CCF's `ccf.ledger.Snapshot` (and a tampered copy refused),
/// decoded by Vellum to the state at their seqno, only the newest two kept; the ledger with
/// evidence transactions still audits (Vellum and CCF FULL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_written_in_ccfs_format_and_ccf_opens_them() {
    let srv = TestServer::start_with(vellum_node::server::Limits::default(), |c| {
        c.snapshot_interval = 40;
    })
    .await;
    let admin = srv.client(Some(&srv.admin_pem()));
    let e = &srv.endpoint;
    let mut last = None;
    for i in 0..200 {
        let r = admin
            .post(format!("{e}/app/transactions?{V}&collectionId=c{}", i % 3))
            .json(&json!({"contents": format!("entry {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        last = Some(
            r.headers()["x-ms-ccf-transaction-id"]
                .to_str()
                .unwrap()
                .parse::<vellum_core::TxId>()
                .unwrap(),
        );
        if i % 50 == 49 {
            // Let the commit point (and the snapshotter) move between bursts.
            srv.node
                .wait_committed(last.unwrap(), Duration::from_secs(10))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    srv.node
        .wait_committed(last.unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let dir = srv.dir.path().join("snapshots");
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let files = vellum_node::node::snapshots::committed(&dir);
        if files.len() >= 2 {
            break files;
        }
        assert!(Instant::now() < deadline, "snapshots: {files:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        files.len() <= vellum_node::node::snapshots::KEEP,
        "{files:?}"
    );
    let (seqno, evidence, path) = files[0].clone();
    assert!(evidence > seqno, "{files:?}");
    let bytes = std::fs::read(&path).unwrap();
    // Operators (and the service's nodes) fetch it over the API; nobody else does, and a name
    // is only ever a committed snapshot's.
    let r = admin
        .get(format!("{e}/node/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(r.headers()["x-vellum-snapshot"], name.as_str());
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    let r = admin
        .get(format!("{e}/node/snapshot/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    for (who, path, status) in [
        (srv.client(None), "/node/snapshot".to_owned(), 401),
        (
            admin.clone(),
            "/node/snapshot/snapshot_1_2.committed".to_owned(),
            404,
        ),
        (
            admin.clone(),
            "/node/snapshot/..%2Fledger_secret".to_owned(),
            400,
        ),
        (admin.clone(), "/node/snapshot/snapshot_1_2".to_owned(), 400),
    ] {
        let r = who.get(format!("{e}{path}")).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let secrets = srv.node.ledger_secrets();
    let snap = vellum_core::snapshot::Snapshot::decode(&bytes, secrets.at(seqno)).unwrap();
    assert_eq!(snap.txid.seqno, seqno);
    // The state is the ledger's at the snapshot: each collection's entry is the one the node
    // serves at the version the snapshot records.
    let entries = &snap.state.maps["vellum.entries"];
    assert_eq!(entries.len(), 3, "three collections");
    for (key, (version, value)) in entries {
        let rec: vellum_core::tables::EntryRecord = serde_json::from_slice(value).unwrap();
        let at = srv
            .node
            .entry(vellum_core::TxId::new(snap.txid.view, *version))
            .ok()
            .flatten()
            .or_else(|| {
                (1..=snap.txid.view + 1).find_map(|v| {
                    srv.node
                        .entry(vellum_core::TxId::new(v, *version))
                        .ok()
                        .flatten()
                })
            })
            .expect("the entry the snapshot names");
        assert_eq!(at.contents, rec.contents);
        assert_eq!(at.collection.as_bytes(), key.as_slice());
        assert!(*version <= seqno);
    }
    assert!(snap.state.maps.contains_key("public:ccf.gov.service.info"));
    // The evidence records the digest, and its receipt is what follows the entry.
    let cert = vellum_core::crypto::Certificate::from_pem(&srv.service_cert()).unwrap();
    let (_, leaf) = vellum_core::receipt::verify_cose_receipt(
        &snap.receipt,
        &cert.public_key().unwrap(),
        Some(&snap.digest),
    )
    .unwrap();
    assert!(
        leaf.commit_evidence.contains(&format!(".{evidence}:")),
        "{leaf:?}"
    );

    let Some(py) = common::python() else {
        assert!(
            !common::interop_required(),
            "VELLUM_REQUIRE_INTEROP=1 but no Python"
        );
        eprintln!("skipping ccf.ledger.Snapshot: no Python with ccf");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tampered = tmp.path().join(path.file_name().unwrap());
    let mut bad = bytes.clone();
    let at = bad.len() / 3;
    bad[at] ^= 1;
    std::fs::write(&tampered, bad).unwrap();
    let out = Command::new(py)
        .arg(common::repo().join("tests/interop/open_snapshot.py"))
        .arg(&path)
        .arg("--tampered")
        .arg(&tampered)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("ALL PASSED"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = srv.stop().await;
    let ledger = dir.path().join("ledger");
    let secret = vellum_core::entry::LedgerSecrets::from_text(
        &std::fs::read_to_string(dir.path().join("ledger_secret")).unwrap(),
    )
    .unwrap()
    .latest()
    .clone();
    common::audit(&ledger, &secret);
    common::ccf_full(&ledger);
}

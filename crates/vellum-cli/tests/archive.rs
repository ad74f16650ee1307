//! The archive as an operator runs it: `vellum serve --archive` copies committed chunks and
//! snapshots to Azure Blob Storage (Azurite, Microsoft's emulator, from npm) and to an S3
//! store (moto in server mode, from PyPI); `vellum node status` shows the progress; `vellum
//! audit --archive` audits the archived ledger, which matches the node's own. With
//! `--retain-transactions`, archived chunks leave the node's disk and every entry, receipt and
//! range is still served, before and after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `VELLUM_PYTHON` (or the repository's .venv) with moto and azure-storage-blob, and Azurite
/// from tests/interop/js; required (not skipped) when `VELLUM_REQUIRE_INTEROP=1`.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let py = std::env::var("VELLUM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv/bin/python"));
    let azurite = repo().join("tests/interop/js/node_modules/.bin/azurite-blob");
    let ok = py.exists()
        && azurite.exists()
        && Command::new(&py)
            .args(["-c", "import moto, azure.storage.blob, boto3"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("VELLUM_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "VELLUM_REQUIRE_INTEROP=1 but moto, azure-storage-blob or Azurite is missing"
        );
        eprintln!("skipped: moto, azure-storage-blob (Python) or Azurite (npm) is missing");
        return None;
    }
    Some((py, azurite))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn python(py: &Path, code: &str) {
    let out = Command::new(py).args(["-c", code]).output().unwrap();
    assert!(
        out.status.success(),
        "{code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vellum(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vellum"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs a node archiving to `url`, writes enough to close many chunks and take snapshots,
/// waits until the archive holds every committed chunk, and audits the archive.
async fn archive_round_trip(url: &str, options: &[&str], env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut extra = vec![
        "--chunk-size",
        "4096",
        "--snapshot-interval",
        "100",
        "--archive",
        url,
    ];
    for o in options {
        extra.extend(["--archive-option", o]);
    }
    let (_serve, endpoint) = serve(&data, &extra, env);
    let c = admin_client(&data);
    let body = "x".repeat(400);
    for i in 0..300 {
        let r = c
            .post(format!(
                "{endpoint}/app/transactions?api-version=2022-05-13"
            ))
            .json(&serde_json::json!({"contents": format!("{i} {body}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let ledger = data.join("ledger");
    let ca_path = data.join("service_cert.pem");
    let ca_path = ca_path.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let local: Vec<String> = std::fs::read_dir(&ledger)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".committed"))
            .collect();
        let out = vellum(
            &[
                "node",
                "status",
                "--endpoint",
                &endpoint,
                "--ca",
                ca_path,
                "--json",
            ],
            &[],
        );
        let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let archived = h["archive"]["chunks"].as_u64().unwrap_or(0) as usize;
        if local.len() >= 10
            && archived == local.len()
            && h["archive"]["snapshots"].as_u64() >= Some(1)
        {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "archive behind: {archived} of {} chunks; {h}",
            local.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        health["archive"]["throughSeqno"].as_u64().unwrap() > 100,
        "{health}"
    );
    let text = String::from_utf8_lossy(
        &vellum(
            &["node", "status", "--endpoint", &endpoint, "--ca", ca_path],
            &[],
        )
        .stdout,
    )
    .into_owned();
    assert!(text.contains("archive   "), "{text}");
    // The archive's ledger audits, with the ledger secret, as the node's own does.
    let secret = data.join("ledger_secret");
    let mut audit = vec!["audit", "--archive", url, "--json", "--ledger-secret"];
    audit.push(secret.to_str().unwrap());
    for o in options {
        audit.extend(["--archive-option", o]);
    }
    let out = vellum(&audit, env);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let archived: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = vellum(
        &[
            "audit",
            ledger.to_str().unwrap(),
            "--json",
            "--ledger-secret",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(archived["ok"], true);
    assert!(
        archived["secretChecked"] == true || archived["secret_checked"] == true,
        "{archived}"
    );
    // The node may have committed more since; the archive holds at least what it had then.
    assert!(
        archived["transactions"].as_u64().unwrap()
            >= health["archive"]["throughSeqno"].as_u64().unwrap(),
        "{archived}"
    );
    assert!(archived["transactions"].as_u64() <= local["transactions"].as_u64());
    // A wrong option is refused at start, with a one-line reason.
    let out = vellum(
        &[
            "serve",
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
            "--archive",
            url,
            "--archive-option",
            "no_such_option=1",
        ],
        env,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_option"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_archives_to_azurite_and_the_archive_audits() {
    let Some((py, azurite)) = tools() else { return };
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _azurite = Server(
        Command::new(azurite)
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--blobHost",
                "127.0.0.1",
            ])
            .arg("--blobPort")
            .arg(port.to_string())
            .arg("--location")
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    // Azurite's well-known development account.
    python(
        &py,
        &format!(
            "from azure.storage.blob import BlobServiceClient\n\
             c = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;')\n\
             c.create_container('vellum')"
        ),
    );
    let url = format!("http://127.0.0.1:{port}");
    archive_round_trip(
        "az://vellum/archive",
        &["use_emulator=true"],
        &[("AZURITE_BLOB_STORAGE_URL", &url)],
    )
    .await;
    retention_round_trip(
        "az://vellum/retained",
        &["use_emulator=true"],
        &[("AZURITE_BLOB_STORAGE_URL", &url)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_archives_to_an_s3_store_and_the_archive_audits() {
    let Some((py, _)) = tools() else { return };
    let port = free_port();
    let moto = py.parent().unwrap().join("moto_server");
    let _moto = Server(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    python(
        &py,
        &format!(
            "import boto3\n\
             boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='vellum-archive')"
        ),
    );
    let endpoint = format!("endpoint=http://127.0.0.1:{port}");
    archive_round_trip(
        "s3://vellum-archive/node-1",
        &[
            &endpoint,
            "allow_http=true",
            "region=us-east-1",
            "access_key_id=test",
            "secret_access_key=test",
        ],
        &[],
    )
    .await;
}

/// Starts `vellum serve` with `args` on `data`; returns the child and its endpoint.
fn serve(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_vellum"));
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        serve.env(k, v);
    }
    let mut child = serve.spawn().unwrap();
    let (endpoint, _) = common::announcement(&mut child);
    (Server(child), endpoint)
}

fn admin_client(data: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("service_cert.pem")).unwrap())
        .unwrap();
    let id = reqwest::Identity::from_pem(&std::fs::read(data.join("admin.pem")).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(id)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GETs `path` until its `state` is not `Loading`.
async fn ready(c: &reqwest::Client, url: String) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.get(&url).send().await.unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{url}: {v}");
        if v["state"] != "Loading" {
            return v;
        }
        assert!(Instant::now() < deadline, "{url} still loading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The metric `name` in the node's /metrics.
async fn metric(c: &reqwest::Client, endpoint: &str, name: &str) -> f64 {
    harness::metric(c, endpoint, name)
        .await
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Retention: a node keeping the last 100 transactions on disk drops archived chunks, yet
/// serves every entry and every receipt of its ledger (fetching chunks back from the archive
/// and checking them), also after a crash and restart; the archive audits.
async fn retention_round_trip(url: &str, options: &[&str], env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = vec![
        "--chunk-size",
        "4096",
        "--retain-transactions",
        "100",
        "--archive",
        url,
    ];
    for o in options {
        args.extend(["--archive-option", o]);
    }
    let (server, endpoint) = serve(&data, &args, env);
    let c = admin_client(&data);
    let body = "r".repeat(300);
    let mut written = Vec::new();
    for i in 0..500 {
        let contents = format!("{i} {body}");
        let r = c
            .post(format!(
                "{endpoint}/app/transactions?api-version=2022-05-13"
            ))
            .json(&serde_json::json!({ "contents": contents }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let txid = r.headers()["x-ms-ccf-transaction-id"].to_str().unwrap();
        written.push((txid.to_owned(), contents));
    }
    // Chunks past the retention leave the disk once archived.
    let ledger = data.join("ledger");
    let first_chunk = |ledger: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(ledger)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("ledger_") && n.ends_with(".committed"))
            .collect();
        names.sort_by_key(|n| vellum_node::archive::chunk_last_seqno(n));
        names
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&c, &endpoint, "vellum_ledger_chunks_dropped_total").await < 5.0 {
        assert!(
            Instant::now() < deadline,
            "no chunks dropped: {:?}",
            first_chunk(&ledger)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let local = first_chunk(&ledger);
    assert!(
        local[0].starts_with("ledger_1-"),
        "genesis stays: {local:?}"
    );
    let committed_end = vellum_node::archive::chunk_last_seqno(local.last().unwrap()).unwrap();
    assert!(
        !local[1].starts_with("ledger_4-"),
        "the oldest chunks after genesis were dropped: {local:?}"
    );
    assert!(committed_end > 400, "{local:?}");
    // Operators (and the other nodes) fetch the committed chunks a node holds on disk.
    let on_disk = local.last().unwrap(); // within the retention: it stays
    let r = c
        .get(format!("{endpoint}/node/ledger/chunk/{on_disk}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        std::fs::read(ledger.join(on_disk)).unwrap()
    );
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(data.join("service_cert.pem")).unwrap(),
        )
        .unwrap()])
        .build()
        .unwrap();
    for (who, name, status) in [
        (&c, "ledger_4-7.committed", 404),
        (&c, "ledger_4-7", 400),
        (&c, "..%2Fledger_secret", 400),
        (&anonymous, on_disk.as_str(), 401),
    ] {
        let r = who
            .get(format!("{endpoint}/node/ledger/chunk/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{name}");
    }
    let service_cert = std::fs::read_to_string(data.join("service_cert.pem")).unwrap();
    let check_all = |c: reqwest::Client, endpoint: String, written: Vec<(String, String)>| {
        let service_cert = service_cert.clone();
        async move {
            for (txid, contents) in &written {
                let e = ready(
                    &c,
                    format!("{endpoint}/app/transactions/{txid}?api-version=2022-05-13"),
                )
                .await;
                assert_eq!(e["entry"]["contents"], contents.as_str(), "{txid}");
                let r = ready(
                    &c,
                    format!("{endpoint}/app/transactions/{txid}/receipt?api-version=2022-05-13"),
                )
                .await;
                let receipt = vellum_core::receipt::Receipt::from_json(&r["receipt"]).unwrap();
                receipt.verify(&service_cert, None).unwrap();
                assert_eq!(
                    receipt.txid().map(|t| t.to_string()).as_deref(),
                    Some(txid.as_str())
                );
            }
        }
    };
    // One old entry and its receipt before the restart.
    check_all(c.clone(), endpoint.clone(), written[20..22].to_vec()).await;
    assert!(metric(&c, &endpoint, "vellum_ledger_chunks_fetched_total").await >= 1.0);

    // Killed and restarted: without the archive the node refuses to start rather than open
    // short; with it, it finds its dropped chunks from its checkpoint and serves everything.
    drop(server);
    let mut alone = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = alone.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = alone.kill();
            panic!("a node missing chunks started without its archive");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(alone.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("ledger"), "{stderr}");
    let (server, endpoint) = serve(&data, &args, env);
    let c = admin_client(&data);
    check_all(c.clone(), endpoint.clone(), written.clone()).await;
    assert!(metric(&c, &endpoint, "vellum_ledger_chunks_fetched_total").await >= 5.0);
    // A page of a range over chunks that were dropped.
    let page = ready(
        &c,
        format!(
            "{endpoint}/app/transactions?api-version=2022-05-13&fromTransactionId={}&toTransactionId={}",
            written[50].0, written[60].0
        ),
    )
    .await;
    let contents: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["contents"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = written[50..=60].iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(contents, expected);
    // The archive holds the whole ledger, and audits.
    let secret = data.join("ledger_secret");
    let mut audit = vec!["audit", "--archive", url, "--json", "--ledger-secret"];
    audit.push(secret.to_str().unwrap());
    for o in options {
        audit.extend(["--archive-option", o]);
    }
    let out = vellum(&audit, env);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["transactions"].as_u64().unwrap() >= committed_end);
    // Chunks missing and no checkpoint to find them from: the start fetches what the ledger
    // lacks from the archive and reads it whole again.
    drop(server);
    std::fs::remove_file(ledger.join("checkpoint")).unwrap();
    let missing: Vec<String> = first_chunk(&ledger)[1..5].to_vec();
    for name in &missing {
        std::fs::remove_file(ledger.join(name)).unwrap();
    }
    let (_server, endpoint) = serve(&data, &args, env);
    for name in &missing {
        assert!(ledger.join(name).exists(), "{name} restored at start");
    }
    let c = admin_client(&data);
    check_all(c.clone(), endpoint.clone(), written[..60].to_vec()).await;
    // Retention without an archive is refused at start.
    let out = vellum(
        &[
            "serve",
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
            "--retain-transactions",
            "10",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retain-transactions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

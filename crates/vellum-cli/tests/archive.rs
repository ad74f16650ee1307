//! The archive as an operator runs it: `vellum serve --archive` copies committed chunks and
//! snapshots to Azure Blob Storage (Azurite, Microsoft's emulator, from npm) and to an S3
//! store (moto in server mode, from PyPI); `vellum node status` shows the progress; `vellum
//! audit --archive` audits the archived ledger, which matches the node's own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
    let mut serve = Command::new(env!("CARGO_BIN_EXE_vellum"));
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(&extra)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        serve.env(k, v);
    }
    let mut child = serve.spawn().unwrap();
    let (endpoint, _) = common::announcement(&mut child);
    let _serve = Server(child);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("service_cert.pem")).unwrap())
        .unwrap();
    let id = reqwest::Identity::from_pem(&std::fs::read(data.join("admin.pem")).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(id)
        .build()
        .unwrap();
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

//! `vellum serve` under connections it did not ask for, as an attacker would send them from
//! another address (127.0.0.2 and up: all of 127/8 is loopback): slow and idle connections
//! are closed after the header, body and handshake timeouts; a flood from one address is capped
//! per address, a flood from several at the node's cap, and neither takes file descriptors the
//! node needs nor keeps an Administrator out; anonymous bodies are refused unread, so 100 of
//! 2 MiB cost the node no memory; the warnings are rate-limited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

struct Node {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vellum serve` with a file-descriptor limit of `nofile` and `extra` options; stderr (the
/// log) goes to a file.
fn start(dir: &Path, nofile: u32, extra: &[&str]) -> Node {
    let data = dir.join("data");
    let log = dir.join("node.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"ulimit -n {nofile} && exec "$0" serve --listen 127.0.0.1:0 --data-dir "$@""#
        ))
        .arg(env!("CARGO_BIN_EXE_vellum"))
        .arg(&data)
        .args(extra)
        .env("VELLUM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (endpoint, _) = common::announcement(&mut child);
    let addr = endpoint.trim_start_matches("https://").parse().unwrap();
    Node {
        child,
        addr,
        data,
        log,
    }
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    fn admin(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(
            &std::fs::read(self.data.join("service_cert.pem")).unwrap(),
        )
        .unwrap();
        let id = reqwest::Identity::from_pem(&std::fs::read(self.data.join("admin.pem")).unwrap())
            .unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .identity(id)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// An Administrator's request from 127.0.0.1 (a new connection), answered 200.
    async fn admin_gets_in(&self) {
        let r = self
            .admin()
            .get(format!(
                "https://{}/app/collections?api-version=2022-05-13",
                self.addr
            ))
            .send()
            .await
            .expect("an Administrator could not get in");
        assert_eq!(r.status(), 200);
    }

    /// A TLS connection from `from`, as `identity` (the admin's) or anonymous.
    async fn tls_from(&self, from: &str, admin: bool) -> TlsStream<TcpStream> {
        let tcp = tcp_from(from, self.addr).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.data.join("service_cert.pem")).unwrap();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cfg = if admin {
            let pem = std::fs::read(self.data.join("admin.pem")).unwrap();
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        } else {
            b.with_no_client_auth()
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap()
    }
}

use rustls::pki_types::pem::PemObject;

async fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{from}:0").parse().unwrap())?;
    s.connect(to).await
}

/// Reads until the peer closes (or `within` passes: then `false`); returns what was read.
async fn closed_within<S: AsyncReadExt + Unpin>(s: &mut S, within: Duration) -> (bool, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(0) | Err(_)) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_flooding_connections_cannot_take_the_node_down() {
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors: a default cap of 128 connections, 64 from one address.
    let node = start(
        dir.path(),
        256,
        &[
            "--handshake-timeout",
            "2",
            "--header-timeout",
            "2",
            "--body-timeout",
            "2",
        ],
    );
    node.admin_gets_in().await;

    // What hyper answers by itself, to requests it cannot parse, has the JSON error body too.
    let long_uri = format!(
        "GET /app/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /app/collections HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    for (request, status, code) in [
        ("GARBAGE\r\n\r\n".to_owned(), 400, "InvalidInput"),
        (long_uri, 414, "UriTooLong"),
        (many_headers, 431, "RequestHeaderFieldsTooLarge"),
    ] {
        let mut s = node.tls_from("127.0.0.1", false).await;
        s.write_all(request.as_bytes()).await.unwrap();
        let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "{status}: the connection stayed open");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status}: body {body:?} is not JSON: {e}"));
        assert_eq!(v["error"]["code"], code, "{answer}");
    }

    // Slow and idle: each is closed within a few seconds of its timeout.
    let started = Instant::now();
    let mut idle = node.tls_from("127.0.0.2", false).await;
    let mut half_head = node.tls_from("127.0.0.2", false).await;
    half_head
        .write_all(b"GET /app/collections?api-version=2022-05-13 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slowloris = node.tls_from("127.0.0.2", false).await;
    let drip = tokio::spawn(async move {
        for b in b"GET /app/collections HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slowloris.write_all(&[*b]).await.is_err() {
                return (true, Instant::now());
            }
            let _ = slowloris.flush().await;
            let mut one = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(500), slowloris.read(&mut one));
            if let Ok(Ok(0) | Err(_)) = read.await {
                return (true, Instant::now());
            }
        }
        (false, Instant::now())
    });
    let mut half_body = node.tls_from("127.0.0.2", true).await;
    half_body
        .write_all(
            b"POST /app/transactions?api-version=2022-05-13 HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"conte",
        )
        .await
        .unwrap();
    let mut handshake_never = tcp_from("127.0.0.2", node.addr).await.unwrap();
    let limit = Duration::from_secs(8);
    let (c, _) = closed_within(&mut idle, limit).await;
    assert!(c, "an idle connection stayed open");
    let (c, _) = closed_within(&mut half_head, limit).await;
    assert!(c, "a half-sent head stayed open");
    let (c, answer) = closed_within(&mut half_body, limit).await;
    assert!(c, "a half-sent body stayed open");
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("\"RequestTimeout\""),
        "{answer}"
    );
    let (c, _) = closed_within(&mut handshake_never, limit).await;
    assert!(c, "a connection that never shook hands stayed open");
    let (closed, at) = drip.await.unwrap();
    assert!(closed, "a header sent a byte every 500 ms was never cut");
    assert!(
        at - started < Duration::from_secs(8),
        "the slow header was cut only after {:?}",
        at - started
    );

    // A flood from one address: 300 connections, 64 held.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tcp_from("127.0.0.2", node.addr).await {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.admin_gets_in().await;
    let fds = node.open_fds();
    assert!(fds < 200, "the node holds {fds} descriptors");
    // From several addresses: the node's cap (128) holds, the node stays up and within its
    // descriptors, and once the flood is gone an Administrator gets in.
    for a in 3..6 {
        for _ in 0..64 {
            if let Ok(s) = tcp_from(&format!("127.0.0.{a}"), node.addr).await {
                flood.push(s);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds = node.open_fds();
    assert!(fds < 256, "the node holds {fds} descriptors");
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.admin_gets_in().await;
    let log = node.log();
    let per_address = log
        .matches("connection limit of one address reached")
        .count();
    assert!(
        (1..=10).contains(&per_address),
        "{per_address} warnings for ~236 refused connections:\n{log}"
    );
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
    assert!(
        !log.contains("\u{1b}["),
        "colour codes in a log file:\n{log}"
    );

    // 100 anonymous 2 MiB bodies: refused unread, the node's memory does not move.
    let before = node.rss_kib();
    let mut sends = Vec::new();
    for i in 0..100 {
        let mut s = node
            .tls_from(&format!("127.0.1.{}", i % 50 + 1), false)
            .await;
        sends.push(tokio::spawn(async move {
            let head = "POST /app/transactions?api-version=2022-05-13 HTTP/1.1\r\nHost: x\r\n\
                        Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..32 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            closed_within(&mut s, Duration::from_secs(10)).await
        }));
    }
    for s in sends {
        let (closed, answer) = s.await.unwrap();
        assert!(closed);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 401"),
            "{answer}"
        );
    }
    let after = node.rss_kib();
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // An Administrator's body past the limit is refused by its announced length, unread.
    let r = node
        .admin()
        .post(format!(
            "https://{}/app/transactions?api-version=2022-05-13",
            node.addr
        ))
        .header("content-type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PayloadTooLarge");
    node.admin_gets_in().await;
}

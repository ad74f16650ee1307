//! A cluster of real `vellum serve` processes for the cluster tests. Each node logs to
//! `node<i>.log` in the cluster's directory (printed when a test fails).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vellum_client::AppendToLedgerOptions;
use vellum_client::{
    ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient, LedgerCertificate,
};

/// The page size a cluster for the SDK suite must be started with (`--page-size`): the
/// suite's range test writes a little more than a page.
pub const SDK_PAGE_SIZE: &str = "7";

/// Whether heavy scenarios run at full size (`VELLUM_HEAVY=1`).
pub fn heavy() -> bool {
    std::env::var("VELLUM_HEAVY").is_ok_and(|v| v == "1")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python with `ccf` and `azure-confidentialledger`, if there is one (required when
/// `VELLUM_REQUIRE_INTEROP=1`).
pub fn python() -> Option<PathBuf> {
    let p = std::env::var("VELLUM_PYTHON")
        .map(PathBuf::from)
        .ok()
        .or_else(|| Some(repo().join(".venv/bin/python")).filter(|p| p.exists()));
    assert!(
        p.is_some() || std::env::var("VELLUM_REQUIRE_INTEROP").is_ok_and(|v| v != "1"),
        "VELLUM_REQUIRE_INTEROP=1 but no Python found"
    );
    p
}

/// One node process.
pub struct NodeProc {
    pub child: Option<Child>,
    pub data: PathBuf,
    pub port: u16,
    pub endpoint: String,
    /// Arguments it was started with (minus --listen, --data-dir and --join).
    pub args: Vec<String>,
    pub log: PathBuf,
    /// A command prefix (e.g. `ip netns exec NS`).
    pub prefix: Vec<String>,
    /// The listen address.
    pub listen: String,
}

/// Clusters in one test binary run one at a time (each is three processes; the machines have
/// two cores).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running cluster.
pub struct Cluster {
    _serial: std::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub token_key: Vec<u8>,
}

/// Starts `vellum serve`; waits for its announcement and returns the process and endpoint.
fn spawn(
    prefix: &[String],
    data: &Path,
    listen: &str,
    args: &[String],
    join: &[String],
    log: &Path,
) -> Result<(Child, String), String> {
    serving(start(prefix, data, listen, args, join, log), log)
}

/// Starts `vellum serve` (stdout piped, stderr appended to `log`).
fn start(
    prefix: &[String],
    data: &Path,
    listen: &str,
    args: &[String],
    join: &[String],
    log: &Path,
) -> Child {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(env!("CARGO_BIN_EXE_vellum"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_vellum")),
    };
    cmd.args(["serve", "--listen", listen])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .args(join)
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
    cmd.spawn().unwrap()
}

/// Waits until a started node serves; its endpoint.
fn serving(mut child: Child, log: &Path) -> Result<(Child, String), String> {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            return Err(format!(
                "vellum serve exited before serving; its log:\n{}",
                tail(log)
            ));
        };
        if line.contains("serving at") {
            let endpoint = line
                .split_whitespace()
                .find(|w| w.starts_with("https://"))
                .unwrap()
                .to_owned();
            std::thread::spawn(move || for _ in lines {});
            return Ok((child, endpoint));
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// A node started by [`Cluster::join_by_vote`], not yet serving. Dropped before it is
/// adopted (a test failed), it is killed: it would otherwise wait for a vote forever.
pub struct PendingNode {
    started: Option<tokio::task::JoinHandle<Result<(Child, String), String>>>,
    pid: u32,
    data: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

impl Drop for PendingNode {
    fn drop(&mut self) {
        if self.started.is_some() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

impl Cluster {
    /// Starts node 0 (a new service), then joins `n - 1` nodes, each with a fresh token and
    /// through the previous node (so joins through backups are forwarded to the primary).
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_placed(n, extra, |_| (Vec::new(), "127.0.0.1:0".into())).await
    }

    /// As [`Cluster::start`], with node `i` started under the command prefix and on the listen
    /// address `place(i)` returns.
    pub async fn start_placed(
        n: usize,
        extra: &[&str],
        place: impl Fn(usize) -> (Vec<String>, String),
    ) -> Cluster {
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var("VELLUM_KEEP_TEST_DIRS").is_ok_and(|v| v == "1") {
            dir.disable_cleanup(true);
            eprintln!("cluster directory kept: {}", dir.path().display());
        }
        let (token_key, jwks) = vellum_node::testing::es256_key();
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks).unwrap();
        let mut args: Vec<String> = vec![
            "--jwt-issuer".into(),
            vellum_node::testing::ISSUER.into(),
            "--jwks-file".into(),
            jwks_path.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut c = Cluster {
            _serial: serial,
            dir,
            nodes: Vec::new(),
            token_key,
        };
        for i in 0..n {
            let join = if i == 0 {
                None
            } else {
                let token = c.admin(0).create_join_token(None).await.unwrap().token;
                Some((c.nodes[i - 1].endpoint.clone(), token))
            };
            let (prefix, listen) = place(i);
            let mut node_args = args.clone();
            if let Ok(a) = listen.parse::<std::net::SocketAddr>()
                && !a.ip().is_loopback()
            {
                node_args.extend(["--ip".to_owned(), a.ip().to_string()]);
            }
            c.add_node(&node_args, join, prefix, listen).await;
        }
        c.wait_voters(n).await;
        c
    }

    async fn add_node(
        &mut self,
        args: &[String],
        join: Option<(String, String)>,
        prefix: Vec<String>,
        listen: String,
    ) {
        let i = self.nodes.len();
        let data = self.dir.path().join(format!("node{i}"));
        let log = self.dir.path().join(format!("node{i}.log"));
        let (args2, data2, log2) = (args.to_vec(), data.clone(), log.clone());
        let (prefix2, listen2) = (prefix.clone(), listen.clone());
        let (child, endpoint) = tokio::task::spawn_blocking(move || {
            spawn(
                &prefix2,
                &data2,
                &listen2,
                &args2,
                &join
                    .map(|(u, t)| vec!["--join".to_owned(), u, "--join-token".to_owned(), t])
                    .unwrap_or_default(),
                &log2,
            )
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("node {i}: {e}"));
        let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        self.nodes.push(NodeProc {
            child: Some(child),
            data,
            port,
            endpoint,
            args: args.to_vec(),
            log,
            prefix,
            listen,
        });
    }

    /// Starts a node that joins through node `via` without a token, pinning the service by its
    /// certificate: on a service that admits nodes by vote it waits `Pending` until trusted.
    /// [`Cluster::adopt`] waits until it serves and adds it to the cluster.
    pub fn join_by_vote(&self, via: usize) -> PendingNode {
        let i = self.nodes.len();
        let data = self.dir.path().join(format!("node{i}"));
        let log = self.dir.path().join(format!("node{i}.log"));
        let args = self.nodes[0].args.clone();
        let join = vec![
            "--join".to_owned(),
            self.nodes[via].endpoint.clone(),
            "--join-service-cert".to_owned(),
            self.nodes[0]
                .data
                .join("service_cert.pem")
                .display()
                .to_string(),
        ];
        let child = start(&[], &data, "127.0.0.1:0", &args, &join, &log);
        let pid = child.id();
        let log2 = log.clone();
        let started = tokio::task::spawn_blocking(move || serving(child, &log2));
        PendingNode {
            started: Some(started),
            pid,
            data,
            log,
            args,
        }
    }

    /// Joins a new node through node `via` with a token it makes, and waits until it serves.
    pub async fn join_with_token(&mut self, via: usize) {
        let token = self.admin(via).create_join_token(None).await.unwrap().token;
        let args = self.nodes[0].args.clone();
        let join = Some((self.nodes[via].endpoint.clone(), token));
        self.add_node(&args, join, Vec::new(), "127.0.0.1:0".into())
            .await;
    }

    /// Starts a node that recovers the service from node `from`'s ledger directory
    /// (`vellum serve --recover`), on a free port it returns with the node: it serves once the
    /// members have submitted enough recovery shares there ([`Cluster::adopt`] then adds it).
    pub fn recover_from(&self, from: usize) -> (PendingNode, String) {
        let i = self.nodes.len();
        let data = self.dir.path().join(format!("node{i}"));
        let log = self.dir.path().join(format!("node{i}.log"));
        let args = self.nodes[0].args.clone();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let recover = vec![
            "--recover".to_owned(),
            self.nodes[from].data.join("ledger").display().to_string(),
        ];
        let child = start(&[], &data, &listen, &args, &recover, &log);
        let pid = child.id();
        let log2 = log.clone();
        let started = tokio::task::spawn_blocking(move || serving(child, &log2));
        (
            PendingNode {
                started: Some(started),
                pid,
                data,
                log,
                args,
            },
            format!("https://{listen}"),
        )
    }

    /// Waits until a node from [`Cluster::join_by_vote`] serves, and adds it.
    pub async fn adopt(&mut self, mut p: PendingNode) {
        let started = p.started.take().unwrap();
        let Ok(joined) = tokio::time::timeout(Duration::from_secs(60), started).await else {
            let _ = Command::new("kill")
                .args(["-KILL", &p.pid.to_string()])
                .status();
            panic!(
                "the node did not join within 60 s; its log:\n{}",
                tail(&p.log)
            );
        };
        let (child, endpoint) = joined
            .unwrap()
            .unwrap_or_else(|e| panic!("joining by vote: {e}"));
        let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        self.nodes.push(NodeProc {
            child: Some(child),
            data: p.data.clone(),
            port,
            endpoint,
            args: p.args.clone(),
            log: p.log.clone(),
            prefix: Vec::new(),
            listen: "127.0.0.1:0".into(),
        });
    }

    /// Waits until `n` nodes are voters (one primary, the rest backups).
    pub async fn wait_voters(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(nodes) = self.admin(0).list_nodes(None).await {
                let voters = nodes
                    .iter()
                    .filter(|x| x.role == "primary" || x.role == "backup")
                    .count();
                if voters == n && nodes.iter().any(|x| x.role == "primary") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not form; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// All node logs (tails).
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i}\n{}", tail(&n.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.nodes[i].data.join("node.json")).unwrap())
                .unwrap();
        v["node_id"].as_str().unwrap().to_owned()
    }

    /// The index of the current primary (as a running node reports it).
    pub async fn primary(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for i in 0..self.nodes.len() {
                if self.nodes[i].child.is_none() {
                    continue;
                }
                if let Ok(nodes) = self.admin(i).list_nodes(None).await
                    && let Some(p) = nodes.iter().find(|n| n.role == "primary")
                    && let Some(idx) = (0..self.nodes.len()).find(|j| self.node_id(*j) == p.node_id)
                {
                    return idx;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no primary; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The service certificate.
    pub fn service_cert(&self) -> String {
        std::fs::read_to_string(self.nodes[0].data.join("service_cert.pem")).unwrap()
    }

    /// An Administrator client (node 0's admin.pem) for node `i`, pinning its service.
    pub fn admin(&self, i: usize) -> ConfidentialLedgerClient {
        ConfidentialLedgerClient::new(
            &self.nodes[i].endpoint,
            ConfidentialLedgerCertificateCredential::new(self.nodes[0].data.join("admin.pem"))
                .unwrap(),
            // The node's own service certificate (a recovered service has a new one).
            LedgerCertificate::Pem(
                std::fs::read_to_string(self.nodes[i].data.join("service_cert.pem")).unwrap(),
            ),
            None,
        )
        .unwrap()
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM node `i` and wait for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            signal(&c, "-TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    c.kill().unwrap();
                    panic!("node {i} did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Restarts node `i` on its data directory and port.
    pub async fn restart(&mut self, i: usize) {
        let n = &self.nodes[i];
        let host = n.listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
        let (data, listen, args, log, prefix) = (
            n.data.clone(),
            format!("{host}:{}", n.port),
            n.args.clone(),
            n.log.clone(),
            n.prefix.clone(),
        );
        let (child, _) =
            tokio::task::spawn_blocking(move || spawn(&prefix, &data, &listen, &args, &[], &log))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("restarting node {i}: {e}"));
        self.nodes[i].child = Some(child);
    }

    /// Stops every node (SIGTERM, in order: the first node, usually the primary, signs and
    /// commits what is unsigned while the others still run) and returns their data
    /// directories.
    pub fn stop_all(&mut self) -> Vec<PathBuf> {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        self.nodes.iter().map(|n| n.data.clone()).collect()
    }

    /// Tries to join a new node to node 0 with `token`; the process must exit (a refusal).
    pub fn try_join(&self, token: &str) -> Output {
        let data = self.dir.path().join(format!("refused-{}", token.len()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args(["serve", "--listen", "127.0.0.1:0", "--join"])
            .arg(&self.nodes[0].endpoint)
            .arg("--join-token")
            .arg(token)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("a join with a bad token did not fail");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            !data.join("node.json").exists(),
            "a refused node must not be provisioned"
        );
        out
    }

    /// An HTTPS client trusting only the service certificate, presenting `identity_pem`
    /// (certificate and key) if given.
    pub fn https_client(&self, identity_pem: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.service_cert().as_bytes()).unwrap();
        let mut b = reqwest::Client::builder().tls_certs_only([ca]);
        if let Some(pem) = identity_pem {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    /// Node `i`'s own certificate and key (one PEM), as the node channel sees it.
    pub fn node_identity(&self, i: usize) -> String {
        let d = &self.nodes[i].data;
        std::fs::read_to_string(d.join("node_cert.pem")).unwrap()
            + &std::fs::read_to_string(d.join("node_key.pem")).unwrap()
    }

    /// POST `path` on node `i` without credentials: (status, body).
    pub async fn post_as_anonymous(&self, i: usize, path: &str) -> (u16, serde_json::Value) {
        let client = self.https_client(None);
        let r = client
            .post(format!("{}{path}", self.nodes[i].endpoint))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// Runs the official Python SDK suite (tests/interop/sdk_suite.py) against node `i`.
    pub async fn python_sdk_suite(&self, i: usize) {
        let Some(py) = python() else {
            eprintln!("skipping the Python SDK suite: no Python with azure-confidentialledger");
            return;
        };
        let id =
            vellum_ledger::identity::Identity::client("Reader", std::time::SystemTime::now(), 30)
                .unwrap();
        let reader_path = self.dir.path().join(format!("reader{i}.pem"));
        std::fs::write(&reader_path, id.combined_pem()).unwrap();
        let oid = format!("aad-user-node{i}");
        let mut cmd = Command::new(py);
        cmd.arg(repo().join("tests/interop/sdk_suite.py"))
            .env("VELLUM_ENDPOINT", &self.nodes[i].endpoint)
            .env(
                "VELLUM_SERVICE_CERT",
                self.nodes[0].data.join("service_cert.pem"),
            )
            .env("VELLUM_ADMIN_PEM", self.nodes[0].data.join("admin.pem"))
            .env("VELLUM_READER_PEM", &reader_path)
            .env("VELLUM_READER_ID", id.cert.acl_fingerprint())
            .env(
                "VELLUM_TOKEN",
                vellum_node::testing::token_for(&self.token_key, &oid),
            )
            .env("VELLUM_TOKEN_OID", &oid)
            .env("VELLUM_LEDGER_ID", "vellum")
            .env("VELLUM_PAGE_SIZE", SDK_PAGE_SIZE);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ALL PASSED"),
            "the SDK suite failed against node {i}:\n{stdout}\n{}\nlogs:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let passes = stdout.lines().filter(|l| l.starts_with("PASS")).count();
        assert!(passes > 80, "only {passes} checks ran");
        println!("Python SDK suite against node {i}: {passes} checks passed");
    }
}

/// Appends `contents` through `client` and waits until it is committed; its transaction id.
pub async fn append_durably(client: &ConfidentialLedgerClient, contents: &str) -> String {
    let opts = vellum_client::AppendToLedgerOptions {
        wait_for_commit: true,
        ..Default::default()
    };
    client
        .append_to_ledger(contents, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("appending {contents:?}: {e}"))
        .transaction_id
}

/// Appends `n` entries through `clients` with `concurrency` writers; returns their transaction
/// ids in seqno order.
pub async fn append_many(
    clients: &[ConfidentialLedgerClient],
    n: usize,
    concurrency: usize,
) -> Vec<String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = clients[w % clients.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return ids;
                }
                let r = client
                    .append_to_ledger(&format!("bulk {i}"), None::<AppendToLedgerOptions>)
                    .await
                    .unwrap();
                ids.push(r.transaction_id);
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids.sort_by_key(|t| t.split_once('.').and_then(|(_, s)| s.parse::<u64>().ok()));
    ids
}

/// Asserts that every closed chunk any node holds is byte-identical on every node that holds
/// a chunk of that range (committed or not yet marked so), that every committed chunk is on
/// every node (or, on a node that stopped a little behind, still open with a prefix of its
/// bytes), and returns how many committed chunks node 0 has.
pub fn assert_identical_chunks(dirs: &[PathBuf]) -> usize {
    let chunks = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d.join("ledger"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ledger_"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let range = |name: &str| name.trim_end_matches(".committed").to_owned();
    let all: Vec<Vec<(String, Vec<u8>)>> = dirs.iter().map(|d| chunks(d)).collect();
    let mut committed = 0;
    for (i, node) in all.iter().enumerate() {
        for (name, bytes) in node {
            if !name.contains('-') {
                continue; // the open chunk
            }
            for (j, other) in all.iter().enumerate() {
                let twin = other.iter().find(|(n, _)| range(n) == range(name));
                match twin {
                    Some((n, b)) => assert!(
                        b == bytes,
                        "chunk {name} of node {i} differs from {n} of node {j}"
                    ),
                    None if name.ends_with(".committed") => {
                        // Only a node that stopped before receiving the signature that closed
                        // the chunk may lack it: it then still has the chunk open, and what it
                        // has is a prefix of it (the header's first 8 bytes are 0 while open).
                        let start = range(name).split('-').next().unwrap().to_owned();
                        let open = other.iter().find(|(n, _)| *n == start);
                        let (_, b) = open.unwrap_or_else(|| {
                            panic!("committed chunk {name} of node {i} is missing on node {j}")
                        });
                        assert!(
                            b.len() <= bytes.len() && b[8..] == bytes[8..b.len()],
                            "open chunk {start} of node {j} is not a prefix of {name} of node {i}"
                        );
                    }
                    None => {}
                }
            }
            if i == 0 && name.ends_with(".committed") {
                committed += 1;
            }
        }
    }
    committed
}

/// `vellum audit` (with the ledger secret) and `ccf.ledger` FULL over a node's committed
/// chunks.
pub fn verify_offline(data: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("audit")
        .arg(data.join("ledger"))
        .arg("--ledger-secret")
        .arg(data.join("ledger_secret"))
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vellum audit of {}: {}{}",
        data.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(py) = python() {
        let out = Command::new(py)
            .arg(repo().join("tests/interop/verify_ledger_full.py"))
            .arg(data.join("ledger"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ccf.ledger FULL over {}:\n{}{}",
            data.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A copy of a node's ledger chunks alone: CCF's reader of uncommitted chunks takes every file
/// of the directory for one, and a node that stopped cleanly keeps its `checkpoint` there too.
pub fn chunks_only(data: &Path) -> tempfile::TempDir {
    let chunks = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(data.join("ledger")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("ledger_") {
            std::fs::copy(e.path(), chunks.path().join(e.file_name())).unwrap();
        }
    }
    chunks
}

/// `ccf.ledger` FULL over a node's whole ledger, the chunk not yet closed included (skipped
/// without a Python with `ccf`, unless interop is required).
pub fn verify_full_including_uncommitted(data: &Path) {
    let Some(py) = python() else {
        eprintln!("skipping ccf.ledger FULL: no Python with ccf");
        return;
    };
    let chunks = chunks_only(data);
    let out = Command::new(py)
        .arg(repo().join("tests/interop/verify_ledger_full.py"))
        .arg(chunks.path())
        .arg("--include-uncommitted")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "ccf.ledger FULL over {}:\n{stdout}{}",
        data.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test that fails (or forgets `stop_all`) must not leave its nodes running: they would
/// outlive the test run, holding ports and CPU (the machines have two cores).
impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The value of the metric `name` in `/metrics` of the node at `endpoint` (`None`: not there).
pub async fn metric(http: &reqwest::Client, endpoint: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{endpoint}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

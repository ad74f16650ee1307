//! Every ledger subcommand of `vellum`, run as a user would against a real `vellum serve`:
//! output and exit codes, including a tampered receipt, authentication and authorization
//! failures, not found, and an unreachable ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

struct Node {
    child: Child,
    endpoint: String,
    data: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Node {
    let (child, endpoint, _) = common::start_serve(data, &["--page-size", "2"]);
    Node {
        child,
        endpoint,
        data: data.to_path_buf(),
    }
}

impl Node {
    /// `vellum ARGS` with the admin's connection settings in the environment.
    fn run(&self, args: &[&str]) -> Output {
        self.run_as(Some(&self.data.join("admin.pem")), args, None)
    }

    fn run_as(&self, cert: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vellum"));
        c.args(args)
            .env("VELLUM_ENDPOINT", &self.endpoint)
            .env("VELLUM_CA", self.data.join("service_cert.pem"))
            .env_remove("VELLUM_CERT")
            .env_remove("VELLUM_TOKEN")
            .env_remove("VELLUM_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cert) = cert {
            c.env("VELLUM_CERT", cert);
        }
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn fails(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.starts_with("vellum: ") && err.trim().lines().count() == 1,
        "not a one-line error: {err:?}"
    );
    err
}

#[test]
fn every_ledger_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(&dir.path().join("data"));
    // append: argument, --wait with a sub-ledger, stdin, file.
    let t1 = ok(&node.run(&["append", "hello, ledger"]));
    assert!(t1.parse::<vellum_core::TxId>().is_ok(), "{t1}");
    let t2 = ok(&node.run(&["append", "in audit", "--sub-ledger", "audit", "--wait"]));
    let t3 = ok(&node.run_as(
        Some(&node.data.join("admin.pem")),
        &["append", "--sub-ledger", "audit"],
        Some("from stdin\n"),
    ));
    let bulk = dir.path().join("bulk.txt");
    std::fs::write(&bulk, "line 1\nline 2\nline 3\nline 4\nline 5\n").unwrap();
    let out = ok(&node.run(&[
        "append",
        "--file",
        bulk.to_str().unwrap(),
        "--sub-ledger",
        "bulk",
        "--wait",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["appended"], 5);
    // status / wait.
    ok(&node.run(&["wait", &t3, "--timeout", "10"]));
    assert_eq!(ok(&node.run(&["status", &t1])), "Committed");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&node.run(&["status", &t2, "--json"]))).unwrap();
    assert_eq!(v["state"], "Committed");
    // get: by id, latest in a sub-ledger, JSON.
    assert_eq!(ok(&node.run(&["get", &t1])), "hello, ledger");
    assert_eq!(
        ok(&node.run(&["get", "--sub-ledger", "audit"])),
        "from stdin"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&node.run(&[
        "get",
        &t2,
        "--sub-ledger",
        "audit",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (v["contents"].as_str(), v["transactionId"].as_str()),
        (Some("in audit"), Some(t2.as_str()))
    );
    // list: in file order, across pages of two; JSON lines.
    let text = ok(&node.run(&["list", "--sub-ledger", "bulk"]));
    let contents: Vec<&str> = text
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(contents, ["line 1", "line 2", "line 3", "line 4", "line 5"]);
    let lines = ok(&node.run(&["list", "--sub-ledger", "bulk", "--json"]));
    let parsed: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 5);
    assert_eq!(parsed[4]["contents"], "line 5");
    // receipt: fetch, verify, save; verify offline; tampered fails with exit 1.
    let saved = dir.path().join("receipt.json");
    let out = ok(&node.run(&[
        "receipt",
        &t1,
        "--verify",
        "--save",
        saved.to_str().unwrap(),
    ]));
    assert!(
        out.ends_with("verified against the ledger certificate"),
        "{out}"
    );
    let offline = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["receipt", "--file", saved.to_str().unwrap(), "--ca"])
        .arg(node.data.join("service_cert.pem"))
        .output()
        .unwrap();
    assert!(ok(&offline).contains("verified"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    v["receipt"]["leafComponents"]["claimsDigest"] = serde_json::json!("11".repeat(32));
    std::fs::write(&saved, v.to_string()).unwrap();
    let tampered = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["receipt", "--file", saved.to_str().unwrap(), "--ca"])
        .arg(node.data.join("service_cert.pem"))
        .output()
        .unwrap();
    let err = fails(&tampered, 1);
    assert!(err.contains("does not verify"), "{err}");
    // keygen + users: a Reader reads and cannot write (exit 4).
    let alice = dir.path().join("alice.pem");
    let alice_id = ok(&node.run(&[
        "keygen",
        "--out",
        alice.to_str().unwrap(),
        "--name",
        "Alice",
    ]));
    assert_eq!(alice_id.split(':').count(), 32);
    assert!(ok(&node.run(&["users", "set", &alice_id, "Reader"])).contains("Reader"));
    assert_eq!(
        ok(&node.run(&["users", "get", &alice_id])),
        format!("{alice_id}\tReader")
    );
    assert!(ok(&node.run(&["users", "list"])).contains(&alice_id));
    assert_eq!(
        ok(&node.run_as(Some(&alice), &["get", &t1], None)),
        "hello, ledger"
    );
    let err = fails(&node.run_as(Some(&alice), &["append", "nope"], None), 4);
    assert!(err.contains("NotAllowed"), "{err}");
    fails(&node.run_as(Some(&alice), &["users", "list"], None), 4);
    // A custom role: Alice, holding only it, reads receipts and nothing else; roles add up.
    let receipts = "Microsoft.ConfidentialLedger/ledger/receipts/read";
    assert!(ok(&node.run(&["roles", "set", "auditor", receipts])).contains(receipts));
    let err = fails(&node.run(&["users", "set", &alice_id, "nosuchrole"]), 6);
    assert!(err.contains("no role \"nosuchrole\""), "{err}");
    assert_eq!(
        ok(&node.run(&["users", "set", &alice_id, "auditor"])),
        format!("{alice_id} is now auditor")
    );
    ok(&node.run_as(Some(&alice), &["receipt", &t1], None));
    fails(&node.run_as(Some(&alice), &["get", &t1], None), 4);
    let v: serde_json::Value = serde_json::from_str(&ok(&node.run(&[
        "roles",
        "add",
        "auditor",
        "Microsoft.ConfidentialLedger/ledger/read",
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["roleActions"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        ok(&node.run_as(Some(&alice), &["get", &t1], None)),
        "hello, ledger"
    );
    ok(&node.run(&["users", "set", &alice_id, "reader", "auditor"]));
    assert_eq!(
        ok(&node.run(&["users", "get", &alice_id])),
        format!("{alice_id}\tReader,auditor")
    );
    ok(&node.run(&["roles", "remove", "auditor"]));
    // User-defined functions: stored from a file, read back, listed, refused when they do not
    // compile, deleted; a Reader reads them and cannot store one.
    let greet = dir.path().join("greet.js");
    let code = "export function main(name) { return 'hello ' + name; }\n";
    std::fs::write(&greet, code).unwrap();
    assert_eq!(
        ok(&node.run(&["functions", "put", "greet", greet.to_str().unwrap()])),
        format!("stored greet ({} bytes)", code.len())
    );
    assert_eq!(
        ok(&node.run(&["functions", "get", "greet"])),
        code.trim_end()
    );
    assert_eq!(ok(&node.run(&["functions", "list"])), "greet");
    // Run: what it returned; a throw is a one-line message and exit 1.
    assert_eq!(
        ok(&node.run(&["functions", "run", "greet", "ada"])),
        "hello ada"
    );
    let err = fails(
        &node.run(&["functions", "run", "greet", "--export", "nothere"]),
        1,
    );
    assert!(err.contains("no function \"nothere\""), "{err}");
    // Hooks on a write: one that throws refuses it.
    let check = dir.path().join("check.js");
    std::fs::write(
        &check,
        "export function isNumber() { if (isNaN(Number(context.contents))) throw new Error('not a number'); }",
    )
    .unwrap();
    ok(&node.run(&["functions", "put", "check", check.to_str().unwrap()]));
    ok(&node.run(&["append", "12", "--pre-hook", "check:isNumber"]));
    let err = fails(
        &node.run(&["append", "twelve", "--pre-hook", "check:isNumber"]),
        6,
    );
    assert!(err.contains("Error: not a number"), "{err}");
    ok(&node.run(&["functions", "delete", "check"]));
    let bad = dir.path().join("bad.js");
    std::fs::write(&bad, "export function main( {").unwrap();
    let err = fails(
        &node.run(&["functions", "put", "bad", bad.to_str().unwrap()]),
        6,
    );
    assert!(err.contains("does not compile"), "{err}");
    assert_eq!(
        ok(&node.run_as(Some(&alice), &["functions", "get", "greet"], None)),
        code.trim_end()
    );
    fails(
        &node.run_as(Some(&alice), &["functions", "delete", "greet"], None),
        4,
    );
    ok(&node.run(&["functions", "delete", "greet"]));
    fails(&node.run(&["functions", "get", "greet"]), 5);
    fails(&node.run(&["roles", "get", "auditor"]), 5);
    ok(&node.run(&["users", "remove", &alice_id]));
    fails(&node.run_as(Some(&alice), &["get", &t1], None), 4);
    fails(&node.run(&["users", "get", &alice_id]), 5);
    // A stranger's certificate (not a user): 4. No credential at all: usage error 2.
    let bob = dir.path().join("bob.pem");
    ok(&node.run(&["keygen", "--out", bob.to_str().unwrap()]));
    fails(&node.run_as(Some(&bob), &["status", &t1], None), 4);
    let err = fails(&node.run_as(None, &["status", &t1], None), 2);
    assert!(err.contains("--cert"), "{err}");
    // Not found: 5. Not a transaction id: 2. Unreachable: 3.
    fails(&node.run(&["get", "10000.100000"]), 5);
    fails(&node.run(&["status", "abc"]), 2);
    let unreachable = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["status", &t1, "--endpoint", "https://127.0.0.1:1", "--cert"])
        .arg(node.data.join("admin.pem"))
        .arg("--ca")
        .arg(node.data.join("service_cert.pem"))
        .output()
        .unwrap();
    fails(&unreachable, 3);
    // Service details.
    assert!(ok(&node.run(&["consortium"])).starts_with("member "));
    assert!(ok(&node.run(&["constitution"])).contains("digest (SHA-256, checked)"));
    let v: serde_json::Value = serde_json::from_str(&ok(&node.run(&["quotes", "--json"]))).unwrap();
    assert_eq!(
        v["enclaveQuotes"][v["currentNodeId"].as_str().unwrap()]["quoteVersion"],
        "Insecure_Virtual"
    );
    // identity: saves the certificate and prints its fingerprint.
    let saved_cert = dir.path().join("ledger.pem");
    let out = ok(&node.run(&[
        "identity",
        "--ledger-id",
        "vellum",
        "--out",
        saved_cert.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(&saved_cert).unwrap(),
        std::fs::read(node.data.join("service_cert.pem")).unwrap()
    );
    assert!(out.contains("fingerprint (SHA-256): "), "{out}");
    // A profile supplies what flags and variables do not.
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(
        &profiles,
        format!(
            "[local]\nendpoint = {:?}\ncert = {:?}\nca = {:?}\n",
            node.endpoint,
            node.data.join("admin.pem"),
            node.data.join("service_cert.pem")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["--profile", "local", "status", &t1])
        .env("VELLUM_PROFILES", &profiles)
        .env_remove("VELLUM_ENDPOINT")
        .env_remove("VELLUM_CERT")
        .env_remove("VELLUM_CA")
        .output()
        .unwrap();
    assert_eq!(ok(&out), "Committed");
}

#[test]
fn endpoints_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(&dir.path().join("data"));
    let samples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/acl-app-samples");
    // Microsoft's basic app, from its directory: app.json and src/app.js.
    let basic = samples.join("basic-app-js");
    assert_eq!(
        ok(&node.run(&["endpoints", "deploy", basic.to_str().unwrap()])),
        "deployed 1 endpoint path(s), 1 module(s)"
    );
    assert_eq!(
        ok(&node.run(&["endpoints", "get", "--module", "src/app.js"])),
        std::fs::read_to_string(basic.join("src/app.js"))
            .unwrap()
            .trim_end()
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&node.run(&["endpoints", "get"]))).unwrap();
    assert_eq!(
        v["metadata"]["endpoints"]["/echo"]["post"]["js_function"],
        "echo_handler"
    );
    // The UDE sample, a bundle file.
    let ude = samples.join("ude-sample-bundle/sample-bundle.js");
    assert_eq!(
        ok(&node.run(&["endpoints", "deploy", ude.to_str().unwrap()])),
        "deployed 1 endpoint path(s), 2 module(s)"
    );
    // Options: read, changed, an unknown one refused before anything is sent.
    let out = ok(&node.run(&[
        "endpoints",
        "options",
        "--set",
        "max_execution_time_ms=2000",
    ]));
    assert!(out.contains("max_execution_time_ms\t2000"), "{out}");
    let out = ok(&node.run(&["endpoints", "options"]));
    assert!(out.contains("max_heap_bytes\t104857600"), "{out}");
    let err = fails(
        &node.run(&["endpoints", "options", "--set", "max_speed=1"]),
        2,
    );
    assert!(err.contains("unknown option"), "{err}");
    // A bundle the service refuses: one line, exit 6 (the service said no).
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"metadata": {"endpoints": {"/x": {"get": {"js_module": "gone.js", "js_function": "f", "authn_policies": []}}}}, "modules": []}"#).unwrap();
    let err = fails(
        &node.run(&["endpoints", "deploy", bad.to_str().unwrap()]),
        6,
    );
    assert!(err.contains("not in the bundle"), "{err}");
    ok(&node.run(&["endpoints", "remove"]));
    let v: serde_json::Value = serde_json::from_str(&ok(&node.run(&["endpoints", "get"]))).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"metadata": {"endpoints": {}}, "modules": []})
    );
    // The audit shows who deployed what, and when.
    let admin_id = vellum_core::crypto::Certificate::from_pem(
        &std::fs::read_to_string(node.data.join("admin.pem")).unwrap(),
    )
    .unwrap()
    .acl_fingerprint();
    let data = node.data.clone();
    drop(node);
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["audit", "--json", "--include-uncommitted"])
        .arg(data.join("ledger"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<(String, String)> = v["code_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["what"].as_str().unwrap().to_owned(),
                c["by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let what: Vec<&str> = changes.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        what,
        [
            "app deployed",
            "app deployed",
            "runtime options set",
            "app deployed"
        ],
        "{v}"
    );
    assert!(changes.iter().all(|(_, by)| *by == admin_id), "{changes:?}");
}

#[test]
fn tags_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(&dir.path().join("data"));
    let mut logins = Vec::new();
    for i in 0..5 {
        let tags = if i % 2 == 0 { "login,admin" } else { "logout" };
        let t = ok(&node.run(&[
            "append",
            &format!("event {i}"),
            "--sub-ledger",
            "audit",
            "--tags",
            tags,
            "--wait",
        ]));
        if i % 2 == 0 {
            logins.push(t);
        }
    }
    // Three tagged entries over pages of two.
    let out = ok(&node.run(&["list", "--sub-ledger", "audit", "--tag", "login", "--json"]));
    let listed: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["transactionId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed, logins);
    assert_eq!(
        ok(&node.run(&["tags", "--sub-ledger", "audit"])),
        "admin\nlogin\nlogout"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&node.run(&["tags", "--sub-ledger", "audit", "--json"]))).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["admin", "login", "logout"]));
    // A sixth tag is refused before anything is sent.
    let err = fails(&node.run(&["append", "x", "--tags", "a,b,c,d,e,f"]), 2);
    assert!(err.contains("at most 5 tags"), "{err}");
}

#[test]
fn help_examples_and_completions() {
    for sub in [
        "append",
        "get",
        "list",
        "status",
        "wait",
        "receipt",
        "identity",
        "keygen",
        "serve",
        "completions",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        let text = ok(&out);
        assert!(
            text.contains("Example"),
            "{sub} --help has no example:\n{text}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(ok(&out).contains("Exit codes"));
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(ok(&out).contains("vellum"));
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn governance_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(&dir.path().join("data"));
    let d = node.data.clone();
    let (cert, key) = (d.join("member0_cert.pem"), d.join("member0_key.pem"));
    let member = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--member-cert",
            cert.to_str().unwrap(),
            "--member-key",
            key.to_str().unwrap(),
        ]);
        node.run_as(None, &all, None)
    };
    // Members, with no credential at all.
    let out = ok(&node.run_as(None, &["gov", "members"], None));
    assert!(out.ends_with("\tAccepted"), "{out}");
    // Nodes too: the one node, Trusted.
    let out = ok(&node.run_as(None, &["gov", "nodes"], None));
    assert!(
        out.ends_with("\tTrusted") && out.lines().count() == 1,
        "{out}"
    );
    // An Accepted member cannot propose yet: a one-line error, exit 4 (authentication).
    let err = fails(
        &member(&[
            "gov",
            "propose",
            "--action",
            "set_member_data",
            "--args",
            "{}",
        ]),
        4,
    );
    assert!(err.contains("not an active member"), "{err}");
    let out = ok(&member(&["gov", "ack"]));
    assert!(out.ends_with("Active"), "{out}");
    // Propose from a file, vote, list, show.
    let new_member =
        vellum_ledger::identity::Identity::client("m1", std::time::SystemTime::now(), 30).unwrap();
    let file = dir.path().join("add.json");
    std::fs::write(
        &file,
        serde_json::json!({"actions": [{"name": "set_member", "args": {"cert": new_member.cert_pem}}]})
            .to_string(),
    )
    .unwrap();
    let out = ok(&member(&["gov", "propose", file.to_str().unwrap()]));
    let id = out.split('\t').next().unwrap().to_owned();
    assert!(out.contains("\tOpen\t"), "{out}");
    let out = ok(&member(&["gov", "vote", &id]));
    assert!(out.contains("\tAccepted\t"), "{out}");
    let listed = ok(&node.run_as(None, &["gov", "list", "--json"], None));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v[0]["proposalState"], "Accepted");
    let shown = ok(&node.run_as(None, &["gov", "show", &id], None));
    assert!(
        shown.contains("set_member") && shown.contains("\"proposalState\": \"Accepted\""),
        "{shown}"
    );
    assert_eq!(
        ok(&node.run_as(None, &["gov", "members"], None))
            .lines()
            .count(),
        2
    );
    // A proposal withdrawn, then voted on: not open any more (exit 6, the service refused).
    let out = ok(&member(&[
        "gov",
        "propose",
        "--action",
        "remove_member",
        "--args",
        &serde_json::json!({"member_id": new_member.cert.id()}).to_string(),
    ]));
    let id = out.split('\t').next().unwrap().to_owned();
    assert!(ok(&member(&["gov", "withdraw", &id])).contains("\tWithdrawn\t"));
    let err = fails(&member(&["gov", "vote", &id, "--against"]), 6);
    assert!(err.contains("Withdrawn"), "{err}");
    // Unknown proposal: exit 5; no member key: a one-line usage error, exit 2.
    fails(
        &node.run_as(None, &["gov", "show", &"0".repeat(64)], None),
        5,
    );
    fails(&node.run_as(None, &["gov", "ack"], None), 2);

    // The audit tells the governance history from the ledger alone.
    let mut node = node;
    Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    node.child.wait().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args([
            "audit",
            "--include-uncommitted",
            "--governance",
            "--no-progress",
        ])
        .arg(d.join("ledger"))
        .output()
        .unwrap();
    let report = ok(&out);
    let gov: Vec<&str> = report.lines().filter(|l| l.starts_with("gov: ")).collect();
    let operator =
        vellum_core::crypto::Certificate::from_pem(&std::fs::read_to_string(&cert).unwrap())
            .unwrap()
            .id();
    for want in [
        format!("member {operator} Accepted"),
        format!("member {operator} Active"),
        format!("member {} Accepted", new_member.cert.id()),
        "constitution set".to_owned(),
        ": Accepted, 1 ballot(s)".to_owned(),
        format!("{id} by {operator}: Withdrawn"),
    ] {
        assert!(gov.iter().any(|l| l.contains(&want)), "{want}: {report}");
    }
}

#[test]
fn a_recovery_share_from_the_command_line_recovers_the_secret_offline() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(&dir.path().join("data"));
    let d = node.data.clone();
    let as_member = |cert: &Path, key: &Path, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--member-cert",
            cert.to_str().unwrap(),
            "--member-key",
            key.to_str().unwrap(),
        ]);
        node.run_as(None, &all, None)
    };
    let (c0, k0) = (d.join("member0_cert.pem"), d.join("member0_key.pem"));
    ok(&as_member(&c0, &k0, &["gov", "ack"]));
    // A second member with an RSA encryption key.
    let m1 =
        vellum_ledger::identity::Identity::client("m1", std::time::SystemTime::now(), 30).unwrap();
    let (c1, k1, e1) = (
        dir.path().join("m1_cert.pem"),
        dir.path().join("m1_key.pem"),
        dir.path().join("m1_enc.pem"),
    );
    std::fs::write(&c1, &m1.cert_pem).unwrap();
    std::fs::write(&k1, m1.key_pem()).unwrap();
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    std::fs::write(&e1, rsa.serialize_pem()).unwrap();
    let public = pem::encode(&pem::Pem::new(
        "PUBLIC KEY",
        rcgen::PublicKeyData::subject_public_key_info(&rsa),
    ));
    let args = serde_json::json!({"cert": m1.cert_pem, "encryption_pub_key": public}).to_string();
    let out = ok(&as_member(
        &c0,
        &k0,
        &["gov", "propose", "--action", "set_member", "--args", &args],
    ));
    let id = out.split('\t').next().unwrap().to_owned();
    assert!(ok(&as_member(&c0, &k0, &["gov", "vote", &id])).contains("\tAccepted\t"));
    // No share before the ack (404: exit 5); after it, the member's share, decrypted.
    let share = dir.path().join("m1.share");
    let e1s = e1.to_str().unwrap();
    let share_args = [
        "gov",
        "share",
        "--encryption-key",
        e1s,
        "--out",
        share.to_str().unwrap(),
    ];
    fails(&as_member(&c1, &k1, &share_args), 5);
    ok(&as_member(&c1, &k1, &["gov", "ack"]));
    ok(&as_member(&c1, &k1, &share_args));
    // Another member's key does not decrypt it.
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(
        &wrong,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    let err = fails(
        &as_member(
            &c1,
            &k1,
            &["gov", "share", "--encryption-key", wrong.to_str().unwrap()],
        ),
        2,
    );
    assert!(err.contains("does not decrypt"), "{err}");

    // The node stopped, the share (a threshold of 1) recovers the ledger secret from the
    // ledger files alone: the audit checks every GCM tag with it.
    let mut node = node;
    Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    node.child.wait().unwrap();
    let audit = |share: &Path| {
        Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args([
                "audit",
                "--include-uncommitted",
                "--no-progress",
                "--recovery-share",
            ])
            .arg(share)
            .arg(d.join("ledger"))
            .output()
            .unwrap()
    };
    let report = ok(&audit(&share));
    assert!(
        report.contains("GCM tags and commit evidence checked"),
        "{report}"
    );
    // A damaged share recovers nothing: a one-line error.
    let text = std::fs::read_to_string(&share).unwrap();
    let bad = dir.path().join("bad.share");
    let mut chars: Vec<char> = text.trim().chars().collect();
    chars[4] = if chars[4] == 'A' { 'B' } else { 'A' };
    std::fs::write(&bad, chars.into_iter().collect::<String>()).unwrap();
    let err = fails(&audit(&bad), 2);
    assert!(err.contains("do not open the ledger secret"), "{err}");
}

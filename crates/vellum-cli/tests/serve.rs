//! `vellum serve` as a user runs it: first start provisions the data directory and prints where
//! things are; writes work with the printed credential; SIGTERM stops it cleanly (in-flight
//! writes finish, the ledger is sealed and audits clean); a restart reuses the identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn start(data: &std::path::Path) -> (Child, String) {
    let (child, endpoint, rest) = common::start_serve(data, &[]);
    assert!(
        rest.iter().any(|l| l.contains("service_cert.pem")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("admin.pem")), "{rest:?}");
    (child, endpoint)
}

fn client(data: &std::path::Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("service_cert.pem")).unwrap())
        .unwrap();
    let id = reqwest::Identity::from_pem(&std::fs::read(data.join("admin.pem")).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(id)
        .build()
        .unwrap()
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("vellum serve did not stop within 15 s of SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_write_sigterm_audit_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, endpoint) = start(&data);
    let c = client(&data);
    // A first write shows the printed credential works.
    let r = c
        .post(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .json(&serde_json::json!({"contents": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Writes in flight when SIGTERM arrives must still finish.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        let url = format!("{endpoint}/app/transactions?api-version=2022-05-13");
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .json(&serde_json::json!({"contents": format!("entry {i}")}))
                .send()
                .await
        }));
        if i == 30 {
            tokio::task::spawn_blocking({
                let pid = child.id();
                move || {
                    std::thread::sleep(Duration::from_millis(20));
                    let _ = Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
            });
        }
    }
    let mut ok = 1;
    let mut refused = 0;
    for t in tasks {
        // Requests that arrive after the listener closed are refused; none fail half-way.
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                ok += 1;
            }
            Err(e) => {
                assert!(e.is_connect() || e.is_request(), "{e:?}");
                refused += 1;
            }
        }
    }
    println!("{ok} writes answered, {refused} refused at shutdown");
    let status = sigterm(&mut child);
    assert!(status.success(), "vellum serve exited with {status}");
    // Sealed: everything is in committed chunks and audits clean with the secret.
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("audit")
        .arg(data.join("ledger"))
        .arg("--ledger-secret")
        .arg(data.join("ledger_secret"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("warning"), "unsealed tail: {text}");
    let cert = std::fs::read(data.join("service_cert.pem")).unwrap();

    // Restart: same identity, the admin credential still works, entries are still there.
    let (mut child, endpoint) = start(&data);
    assert_eq!(std::fs::read(data.join("service_cert.pem")).unwrap(), cert);
    let c = client(&data);
    let r = c
        .get(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), ok);
    assert!(sigterm(&mut child).success());
}

#[test]
fn config_file_sets_options_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vellum.toml");
    std::fs::write(
        &cfg,
        format!(
            "data-dir = {:?}\nlisten = \"127.0.0.1:0\"\nledger-id = \"from-file\"\npage-size = 10\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"from-file\""), "{first}");
    assert!(sigterm(&mut child).success());
    assert!(dir.path().join("data/service_cert.pem").exists());

    std::fs::write(&cfg, "ledger-idd = \"typo\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ledger-idd"), "{err}");
}

/// Under `umask 000` the data directory is still 0700 and every file in it 0600 (keys, the
/// ledger, the index, the vote, the checkpoint); a data directory that others can write is
/// refused at start with a one-line reason.
#[test]
fn the_data_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |data: &std::path::Path| {
        Command::new("sh")
            .arg("-c")
            .arg(r#"umask 000; exec "$0" serve --listen 127.0.0.1:0 --data-dir "$1""#)
            .arg(env!("CARGO_BIN_EXE_vellum"))
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = serve(&data);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("https://"), "{first}");
    assert!(sigterm(&mut child).success());
    let mut seen = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", e.path().display());
                seen += 1;
            }
        }
    }
    assert!(data.join("index.redb").exists() && data.join("raft/vote.json").exists());
    assert!(seen >= 10, "only {seen} files");

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = serve(&data).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by users other than its owner") && err.lines().count() == 1,
        "{err}"
    );
}

/// A restart from the checkpoint does not hide damage: an entry whose bytes changed on disk is
/// answered with its own error code (never served, never a bare 500), its neighbours still
/// read; a changed positions table keeps the node from starting, naming the chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_ledger_files_are_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, endpoint, _) = common::start_serve(&data, &["--chunk-size", "4096"]);
    let c = client(&data);
    let mut ids = Vec::new();
    for i in 0..40 {
        let r = c
            .post(format!(
                "{endpoint}/app/transactions?api-version=2022-05-13"
            ))
            .header("x-vellum-wait", "committed")
            .json(&serde_json::json!({"contents": format!("entry {i} {}", "x".repeat(200))}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let t = r.headers()["x-ms-ccf-transaction-id"]
            .to_str()
            .unwrap()
            .to_owned();
        ids.push(t);
    }
    assert!(sigterm(&mut child).success());
    assert!(data.join("ledger/checkpoint").exists());
    // The chunk holding the 20th write, and that write's place in it.
    let seqno: u64 = ids[20].split_once('.').unwrap().1.parse().unwrap();
    let chunk = std::fs::read_dir(data.join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            vellum_ledger::chunk::ChunkName::parse(&name).is_some_and(|n| {
                n.committed && n.start <= seqno && n.end.is_some_and(|e| e >= seqno)
            })
        })
        .expect("no committed chunk holds the write");
    let start =
        vellum_ledger::chunk::ChunkName::parse(&chunk.file_name().unwrap().to_string_lossy())
            .unwrap()
            .start;
    let original = std::fs::read(&chunk).unwrap();
    let table_at = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let k = (seqno - start) as usize;
    let pos = |k: usize| {
        u32::from_le_bytes(
            original[table_at + 4 * k..table_at + 4 * k + 4]
                .try_into()
                .unwrap(),
        ) as usize
    };
    let end = if table_at + 4 * (k + 1) < original.len() {
        pos(k + 1)
    } else {
        table_at
    };
    let mut bytes = original.clone();
    bytes[end - 1] ^= 0x01;
    std::fs::write(&chunk, &bytes).unwrap();

    let (mut child, endpoint, _) = common::start_serve(&data, &["--chunk-size", "4096"]);
    let get = |t: &str| {
        c.get(format!(
            "{endpoint}/app/transactions/{t}?api-version=2022-05-13"
        ))
        .send()
    };
    let r = get(&ids[20]).await.unwrap();
    assert_eq!(r.status(), 500);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "LedgerEntryDamaged", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vellum audit"),
        "{v}"
    );
    let r = get(&ids[19]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(sigterm(&mut child).success());

    // The positions table: the node does not start, and says which chunk is damaged.
    let mut bytes = original.clone();
    let moved = (pos(k) + 1) as u32;
    bytes[table_at + 4 * k..table_at + 4 * k + 4].copy_from_slice(&moved.to_le_bytes());
    std::fs::write(&chunk, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let name = chunk.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "{err}");
}

/// `--constitution FILE` starts a service under another constitution (here CCF's own default,
/// from `testdata/`), served at `/gov/service/constitution`; a file that is not a constitution
/// is refused at start with a one-line reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_can_start_with_another_constitution() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/ccf-constitution/default.js");
    let arg = file.to_string_lossy().into_owned();
    let (mut child, endpoint, _) = common::start_serve(&data, &["--constitution", &arg]);
    let got = client(&data)
        .get(format!(
            "{endpoint}/gov/service/constitution?api-version=2024-07-01"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(got, std::fs::read_to_string(&file).unwrap());
    assert!(sigterm(&mut child).success());

    let bad = dir.path().join("bad.js");
    std::fs::write(
        &bad,
        "export function validate() { return {valid: true}; }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .arg("--constitution")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not export resolve, apply") && err.lines().count() == 1,
        "{err}"
    );
}

/// Runs `vellum` with `args` (and `env`) to its end: (success, stdout + stderr).
fn vellum(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(args)
        .env_remove("VELLUM_SEAL_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether any file under `dir` holds `needle`.
fn any_file_holds(dir: &std::path::Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if let Some(f) = any_file_holds(&p, needle) {
                return Some(f);
            }
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return Some(p);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_data_directory_opens_only_with_its_key() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("seal.key");
    std::fs::write(&key, [0x5a; 32]).unwrap();
    let key_arg = key.to_str().unwrap();
    let (mut child, endpoint, _) = common::start_serve(&data, &["--seal-key-file", key_arg]);
    let r = client(&data)
        .post(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .json(&serde_json::json!({"contents": "kept under seal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(sigterm(&mut child).success());
    for name in ["ledger_secret", "service_key.pem", "node_key.pem"] {
        assert!(!data.join(name).exists(), "{name} in the clear");
        assert!(
            data.join(format!("{name}.sealed")).exists(),
            "{name}.sealed"
        );
    }
    // The secrets are nowhere in the directory in the clear.
    let sealer = vellum_node::seal::Sealer::open(
        &data,
        Some(&vellum_node::seal::SealKey::KeyFile(key.clone())),
    )
    .unwrap()
    .unwrap();
    for name in ["ledger_secret", "service_key.pem", "node_key.pem"] {
        let plain = sealer.read(&data, name).unwrap();
        let body: Vec<u8> = plain
            .split(|b| *b == b'\n')
            .filter(|l| !l.starts_with(b"-----"))
            .flatten()
            .copied()
            .take(48)
            .collect();
        assert_eq!(
            any_file_holds(&data, &body),
            None,
            "{name} found in the clear"
        );
    }

    // A copy of the directory, elsewhere: no key, the wrong key, a passphrase, all refused
    // with a one-line reason; nothing is started.
    let copy = dir.path().join("copy");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&data)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let serve = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--data-dir"),
            copy.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        vellum(&args, env)
    };
    let (ok, text) = serve(&[], &[]);
    assert!(!ok && text.contains("is sealed"), "{text}");
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, [0x5b; 32]).unwrap();
    let (ok, text) = serve(&["--seal-key-file", wrong.to_str().unwrap()], &[]);
    assert!(!ok && text.contains("does not open"), "{text}");
    let (ok, text) = serve(&[], &[("VELLUM_SEAL_PASSPHRASE", "guess")]);
    assert!(!ok && text.contains("sealed with a key-file"), "{text}");

    // The auditor opens the sealed ledger secret with the key, and not without.
    let audit = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("audit"),
            OsStr::new("--no-progress"),
            OsStr::new("--ledger-secret"),
        ];
        let secret = copy.join("ledger_secret.sealed");
        let ledger = copy.join("ledger");
        let owned = [secret.into_os_string(), ledger.into_os_string()];
        args.push(&owned[0]);
        args.push(&owned[1]);
        args.extend(extra.iter().map(OsStr::new));
        vellum(&args, &[])
    };
    let (ok, text) = audit(&[]);
    assert!(!ok && text.contains("is sealed"), "{text}");
    let (ok, text) = audit(&["--seal-key-file", key_arg]);
    assert!(ok, "{text}");

    // With the key, the copy serves what was written.
    let (mut child, endpoint, _) = common::start_serve(&copy, &["--seal-key-file", key_arg]);
    let v: serde_json::Value = client(&copy)
        .get(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["entries"][0]["contents"], "kept under seal", "{v}");
    assert!(sigterm(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vellum_seal_migrates_a_plain_directory() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, _) = start(&data);
    assert!(sigterm(&mut child).success());
    let secret = std::fs::read(data.join("ledger_secret")).unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "a long passphrase\n").unwrap();
    // A key for a plain directory is refused: seal it first.
    let (ok, text) = vellum(
        &[
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--seal-passphrase-file"),
            pass.as_os_str(),
        ],
        &[],
    );
    assert!(!ok && text.contains("vellum seal"), "{text}");
    let (ok, text) = vellum(
        &[
            OsStr::new("seal"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--passphrase-file"),
            pass.as_os_str(),
        ],
        &[],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("sealed ledger_secret, service_key.pem, node_key.pem"),
        "{text}"
    );
    assert!(!data.join("ledger_secret").exists());
    assert_eq!(any_file_holds(&data, &secret[..32]), None);
    // The passphrase from the environment opens it.
    let (mut child, endpoint, _) = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("VELLUM_SEAL_PASSPHRASE", "a long passphrase")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (e, rest) = common::announcement(&mut c);
        (c, e, rest)
    };
    let r = client(&data)
        .get(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(sigterm(&mut child).success());
}

/// A SoftHSM2 token labelled `vellum` (PIN 1234) in its own configuration under `dir`: the
/// configuration file and the module, or `None` if SoftHSM2 is not installed (required in CI).
fn softhsm_token(dir: &std::path::Path) -> Option<(std::path::PathBuf, &'static str)> {
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    if !std::path::Path::new(MODULE).exists() {
        assert!(
            std::env::var("VELLUM_REQUIRE_SOFTHSM").as_deref() != Ok("1"),
            "VELLUM_REQUIRE_SOFTHSM=1 but SoftHSM2 is not installed"
        );
        eprintln!("SKIPPED: SoftHSM2 is not installed (apt-get install softhsm2)");
        return None;
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "vellum",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((conf, MODULE))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs11_token_seals_the_data_directory() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let Some((conf, module)) = softhsm_token(&dir.path().join("hsm")) else {
        return;
    };
    let data = dir.path().join("data");
    let uri = |pin: &str| {
        format!("pkcs11:token=vellum;object=vellum-seal?module-path={module}&pin-value={pin}")
    };
    let serve = |conf: &std::path::Path, uri: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--seal-pkcs11", uri])
            .env("SOFTHSM2_CONF", conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (e, _) = common::announcement(&mut c);
        (c, e)
    };
    // Start (the key is made in the token), write and sign, stop; start again.
    let (mut child, endpoint) = serve(&conf, &uri("1234"));
    let r = client(&data)
        .post(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .json(&serde_json::json!({"contents": "under a token's key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(sigterm(&mut child).success());
    let record = std::fs::read_to_string(data.join("seal.json")).unwrap();
    assert!(record.contains("\"pkcs11\""), "{record}");
    assert!(!data.join("ledger_secret").exists());
    let (mut child, endpoint) = serve(&conf, &uri("1234"));
    let v: serde_json::Value = client(&data)
        .get(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["entries"][0]["contents"], "under a token's key", "{v}");
    assert!(sigterm(&mut child).success());

    // A wrong PIN, or another token that has no such key, opens nothing.
    let start = |conf: &std::path::Path, uri: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args([
                OsStr::new("serve"),
                OsStr::new("--listen"),
                OsStr::new("127.0.0.1:0"),
                OsStr::new("--data-dir"),
                data.as_os_str(),
                OsStr::new("--seal-pkcs11"),
                OsStr::new(uri),
            ])
            .env("SOFTHSM2_CONF", conf)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text) = start(&conf, &uri("0000"));
    assert!(!ok && text.contains("logging in"), "{text}");
    let (other, _) = softhsm_token(&dir.path().join("other-hsm")).unwrap();
    let (ok, text) = start(&other, &uri("1234"));
    assert!(!ok && text.contains("no key labelled"), "{text}");
}

/// The service key made and kept in a PKCS#11 token (beside the seal key, in the same token):
/// the service certificate and the node's are signed there, and so is every COSE signature;
/// receipts verify against the service certificate, and `vellum audit` checks the COSE
/// signatures. No service key file exists; a start without the token's URI is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_key_can_stay_in_a_pkcs11_token_and_sign_there() {
    let dir = tempfile::tempdir().unwrap();
    let Some((conf, module)) = softhsm_token(&dir.path().join("hsm")) else {
        return;
    };
    let data = dir.path().join("data");
    let uri = |object: &str| {
        format!("pkcs11:token=vellum;object={object}?module-path={module}&pin-value=1234")
    };
    let (seal_uri, key_uri) = (uri("vellum-seal"), uri("vellum-service"));
    let serve = |with_key: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vellum"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--seal-pkcs11", &seal_uri])
            .env("SOFTHSM2_CONF", &conf);
        if with_key {
            cmd.args(["--service-key-pkcs11", &key_uri]);
        }
        cmd
    };
    let mut child = serve(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (endpoint, _) = common::announcement(&mut child);
    let c = client(&data);
    let r = c
        .post(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .json(&serde_json::json!({"contents": "signed by a token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let txid = r.headers()["x-ms-ccf-transaction-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut receipt = serde_json::Value::Null;
    for _ in 0..100 {
        let v: serde_json::Value = c
            .get(format!(
                "{endpoint}/app/transactions/{txid}/receipt?api-version=2022-05-13"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "Ready" {
            receipt = v["receipt"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let service_cert = std::fs::read_to_string(data.join("service_cert.pem")).unwrap();
    vellum_core::receipt::Receipt::from_json(&receipt)
        .unwrap()
        .verify(&service_cert, None)
        .unwrap();
    assert!(sigterm(&mut child).success());
    for f in ["service_key.pem", "service_key.pem.sealed"] {
        assert!(!data.join(f).exists(), "{f}");
    }
    assert!(data.join("service_key.pkcs11").exists());

    // Every signature's COSE signature verifies against the service certificate.
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("audit")
        .arg(data.join("ledger"))
        .arg("--ledger-secret")
        .arg(data.join("ledger_secret.sealed"))
        .args([
            "--seal-pkcs11",
            &seal_uri,
            "--include-uncommitted",
            "--no-progress",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the token's URI the node does not start; with it, it serves again.
    let out = serve(false).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("--service-key-pkcs11"),
        "{text}"
    );
    let mut child = serve(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (endpoint, _) = common::announcement(&mut child);
    let r = client(&data)
        .post(format!(
            "{endpoint}/app/transactions?api-version=2022-05-13"
        ))
        .json(&serde_json::json!({"contents": "after a restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(sigterm(&mut child).success());
}

/// `--log-format json` writes one JSON object a line, and `vellum node status` shows the node's
/// health without a credential (text and `--json`).
#[test]
fn json_logs_and_node_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (endpoint, _) = common::announcement(&mut child);
    let ca = data.join("service_cert.pem");
    let status = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vellum"));
        cmd.args(["node", "status", "--endpoint", &endpoint])
            .arg("--ca")
            .arg(&ca)
            .env_remove("VELLUM_CERT")
            .env_remove("VELLUM_TOKEN")
            .env_remove("VELLUM_PROFILE")
            .env("VELLUM_PROFILES", dir.path().join("no-profiles.toml"));
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = status(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("role      primary"), "{text}");
    assert!(text.contains("state     ready"), "{text}");
    let out = status(true);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"], "primary", "{v}");
    assert!(v["commitSeqno"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["ledgerBytes"].as_u64().unwrap() > 0, "{v}");
    assert!(sigterm(&mut child).success());
    let logs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["message"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("provisioned a new service")),
        "{logs}"
    );
}

//! Three-node clusters of real `vellum serve` processes on loopback: joining with tokens,
//! identical committed chunks verified by `vellum audit` and `ccf.ledger` FULL, the Python SDK
//! suite against a backup, SIGKILL of the primary under load, a node that catches up after
//! missing 50,000 writes (5,000 without VELLUM_HEAVY=1), the collection limit across
//! nodes, and governance (members' signed requests through backups, across a change of
//! primary, a node retired, two rekeys under writes, a node joined by vote between them), and a node that dropped chunks past its retention taking them back from another node. The partition test lives in `partition.rs` (network namespaces).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, heavy};
use vellum_client::ConfidentialLedgerClient;
use vellum_client::governance::Member;
use vellum_client::models::{Bundle, FunctionOutcome, FunctionRun, Hook, ModuleDef};
use vellum_client::{AppendToLedgerOptions, GetLedgerEntryOptions};

/// A counter per name, a reader of it, and a check that an entry is a number.
const TALLY: &str = r#"
export function main(name) {
    const m = ccf.kv["public:tally"], k = ccf.strToBuf(name), v = m.get(k);
    const n = v === undefined ? 1 : Number(ccf.bufToStr(v)) + 1;
    m.set(k, ccf.strToBuf(String(n)));
    return n;
}
export function read(name) {
    const v = ccf.kv["public:tally"].get(ccf.strToBuf(name));
    return v === undefined ? "none" : ccf.bufToStr(v);
}
export function isNumber() {
    if (isNaN(Number(context.contents))) throw new Error("not a number");
}
"#;

/// An endpoint counter: POST bumps (readwrite), GET reads (readonly), text answers.
const TALLY_APP: &str = r#"
const m = () => ccf.kv["public:tally-ep"];
export function bump(request) {
    const k = ccf.strToBuf(request.params.name), v = m().get(k);
    const n = v === undefined ? 1 : Number(ccf.bufToStr(v)) + 1;
    m().set(k, ccf.strToBuf(String(n)));
    return { statusCode: 201, body: String(n) };
}
export function read(request) {
    const v = m().get(ccf.strToBuf(request.params.name));
    return { body: v === undefined ? "none" : ccf.bufToStr(v) };
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_hold_identical_verified_ledgers_and_serve_the_sdk_from_a_backup() {
    let t0 = Instant::now();
    let mut c = Cluster::start(
        3,
        &[
            "--chunk-size",
            "16384",
            "--page-size",
            harness::SDK_PAGE_SIZE,
            "--snapshot-interval",
            "100",
        ],
    )
    .await;
    println!("cluster formed in {:?}", t0.elapsed());
    let primary = c.primary().await;
    let backup = (0..3).find(|i| *i != primary).unwrap();
    // Writes through every node (backups forward them) interleave in one ledger.
    let mut written = Vec::new();
    for i in 0..300 {
        let client = c.admin(i % 3);
        let r = client
            .append_to_ledger(&format!("entry {i}"), None)
            .await
            .unwrap();
        written.push((r.transaction_id, format!("entry {i}")));
    }
    let last = &written.last().unwrap().0;
    for n in 0..3 {
        c.admin(n)
            .wait_until_durable(last, None)
            .await
            .unwrap_or_else(|e| panic!("node {n}: {e}"));
    }
    // Every node serves every entry, and receipts from a backup verify.
    for (txid, contents) in written.iter().step_by(37) {
        for n in 0..3 {
            let e = c
                .admin(n)
                .get_ledger_entry(Some(GetLedgerEntryOptions {
                    transaction_id: Some(txid.clone()),
                    ..Default::default()
                }))
                .await
                .unwrap();
            assert_eq!(&e.contents, contents, "node {n} at {txid}");
        }
        let r = c
            .admin(backup)
            .get_transaction_receipt(txid, None)
            .await
            .unwrap();
        r.verify(&c.service_cert()).unwrap();
    }
    println!("writes and reads done at {:?}", t0.elapsed());
    // The official Python SDK, unchanged, against a backup and then the primary.
    c.python_sdk_suite(backup).await;
    println!("SDK suite on a backup done at {:?}", t0.elapsed());
    c.python_sdk_suite(primary).await;
    println!("SDK suite on the primary done at {:?}", t0.elapsed());
    // A change of users or roles, made through any node, holds on every node at the next
    // request: granted, then revoked, then granted again.
    let who = vellum_ledger::identity::Identity::client("Auditor", std::time::SystemTime::now(), 1)
        .unwrap();
    let who_id = who.cert.acl_fingerprint();
    c.admin(backup)
        .create_user_defined_role(
            &[vellum_client::models::UserDefinedRole::new(
                "entryReader",
                ["Microsoft.ConfidentialLedger/ledger/read"],
            )],
            None,
        )
        .await
        .unwrap();
    let (txid, _) = &written[0];
    for k in 0..6usize {
        let via = c.admin(k % 3);
        let granted = k % 2 == 0;
        if granted {
            via.create_or_update_ledger_user(&who_id, &["entryReader"], None)
                .await
                .unwrap();
        } else {
            via.delete_ledger_user(&who_id, None).await.unwrap();
        }
        for n in 0..3 {
            let status = c
                .https_client(Some(&who.combined_pem()))
                .get(format!(
                    "{}/app/transactions/{txid}?api-version=2024-12-09-preview",
                    c.nodes[n].endpoint
                ))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(
                status,
                if granted { 200 } else { 403 },
                "change {k} made via node {}, read on node {n}",
                k % 3
            );
        }
    }
    println!("access changes held on every node at {:?}", t0.elapsed());
    // User-defined functions: stored through a backup, run through every node (backups
    // forward runs to the primary, which serialises them), hooks on writes a backup forwards.
    c.admin(backup)
        .create_user_defined_function("tally", TALLY, None)
        .await
        .unwrap();
    for k in 0..9usize {
        let r = c
            .admin(k % 3)
            .execute_user_defined_function(
                "tally",
                Some(FunctionRun::with_arguments(["runs"])),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            FunctionOutcome::Succeeded((k + 1).to_string()),
            "via node {}",
            k % 3
        );
    }
    let hooked = |contents: &str| {
        let check = Hook::with("tally", FunctionRun::default().export("isNumber"));
        let count = Hook::with("tally", FunctionRun::with_arguments(["hooked"]));
        (
            contents.to_owned(),
            AppendToLedgerOptions {
                sub_ledger_id: Some("hooked".into()),
                pre_hooks: vec![check],
                post_hooks: vec![count],
                wait_for_commit: true,
                ..Default::default()
            },
        )
    };
    let (contents, opts) = hooked("12");
    c.admin(backup)
        .append_to_ledger(&contents, Some(opts))
        .await
        .unwrap();
    let (contents, opts) = hooked("twelve");
    let err = c
        .admin(backup)
        .append_to_ledger(&contents, Some(opts))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Error: not a number"), "{err}");
    // Every node applies the hooked write (backups a moment after the primary commits it).
    for n in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let latest = c
                .admin(n)
                .get_ledger_entry(Some(GetLedgerEntryOptions {
                    sub_ledger_id: Some("hooked".into()),
                    ..Default::default()
                }))
                .await;
            match latest {
                Ok(e) if e.contents == "12" => break,
                other if Instant::now() > deadline => panic!("node {n}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    let read = FunctionRun::with_arguments(["hooked"]).export("read");
    let r = c
        .admin(backup)
        .execute_user_defined_function("tally", Some(read), None)
        .await
        .unwrap();
    assert_eq!(r.outcome, FunctionOutcome::Succeeded("1".into()));
    println!("functions and hooks across nodes at {:?}", t0.elapsed());
    // User-defined endpoints: deployed through a backup, served identically by every node;
    // readwrite requests to backups are forwarded and run on the primary, in order.
    c.admin(backup)
        .delete_user_defined_function("tally", None)
        .await
        .unwrap();
    let bundle = Bundle::new(
        serde_json::json!({"endpoints": {"/tally/{name}": {
            "post": {"js_module": "tally.js", "js_function": "bump", "authn_policies": ["user_cert"],
                     "forwarding_required": "always", "mode": "readwrite"},
            "get": {"js_module": "tally.js", "js_function": "read", "authn_policies": ["no_auth"],
                    "forwarding_required": "never", "mode": "readonly"},
        }}}),
        vec![ModuleDef::new("tally.js", TALLY_APP)],
    );
    c.admin(backup)
        .create_user_defined_endpoint(&bundle, None)
        .await
        .unwrap();
    let admin_pem = std::fs::read_to_string(c.nodes[0].data.join("admin.pem")).unwrap();
    for k in 0..6usize {
        let r = c
            .https_client(Some(&admin_pem))
            .post(format!("{}/app/tally/ep", c.nodes[k % 3].endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "via node {}", k % 3);
        assert_eq!(
            r.text().await.unwrap(),
            (k + 1).to_string(),
            "via node {}",
            k % 3
        );
    }
    for n in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = c
                .https_client(None)
                .get(format!("{}/app/tally/ep", c.nodes[n].endpoint))
                .send()
                .await
                .unwrap();
            let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
            if (status, text.as_str()) == (200, "6") {
                break;
            }
            assert!(Instant::now() < deadline, "node {n}: {status} {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = c.admin(n).get_user_defined_endpoint(None).await.unwrap();
        assert_eq!(got.modules, bundle.modules, "node {n}");
    }
    println!("endpoints across nodes at {:?}", t0.elapsed());
    // Every node wrote the same snapshots, byte for byte (each builds its own from the
    // evidence the primary wrote).
    let deadline = Instant::now() + Duration::from_secs(30);
    let newest = loop {
        let newest: Vec<Option<(u64, u64, std::path::PathBuf)>> = c
            .nodes
            .iter()
            .map(|n| {
                vellum_node::node::snapshots::committed(&n.data.join("snapshots"))
                    .into_iter()
                    .next()
            })
            .collect();
        let names: Vec<_> = newest
            .iter()
            .map(|n| n.as_ref().map(|(s, e, _)| (*s, *e)))
            .collect();
        if names[0].is_some() && names.iter().all(|n| *n == names[0]) {
            break newest;
        }
        assert!(Instant::now() < deadline, "snapshots differ: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bytes: Vec<Vec<u8>> = newest
        .iter()
        .map(|n| std::fs::read(&n.as_ref().unwrap().2).unwrap())
        .collect();
    assert!(
        bytes.iter().all(|b| *b == bytes[0]),
        "snapshot bytes differ"
    );
    println!("identical snapshots at {:?}", t0.elapsed());
    let dirs = c.stop_all();
    println!("stopped at {:?}", t0.elapsed());
    let committed = harness::assert_identical_chunks(&dirs);
    assert!(
        committed >= 2,
        "only {committed} committed chunks to compare"
    );
    // Each node's copy on its own (in parallel: they are independent checks).
    std::thread::scope(|s| {
        for d in &dirs {
            s.spawn(move || harness::verify_offline(d));
        }
    });
    println!("verified offline at {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_under_load_loses_no_committed_write() {
    let mut c = Cluster::start(3, &[]).await;
    let primary = c.primary().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant, Instant)>();
    let mut writers = Vec::new();
    for w in 0..8usize {
        let clients: Vec<ConfidentialLedgerClient> = (0..3).map(|n| c.admin(n)).collect();
        let stop = stop.clone();
        let tx = tx.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let contents = format!("writer {w} write {i}");
                let client = &clients[(w + i) % 3];
                let opts = AppendToLedgerOptions {
                    wait_for_commit: true,
                    ..Default::default()
                };
                // Only writes reported Committed count; failures during the failover are
                // expected and retried with new contents.
                let started = Instant::now();
                if let Ok(r) = client.append_to_ledger(&contents, Some(opts)).await {
                    let _ = tx.send((r.transaction_id, contents, started, Instant::now()));
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    drop(tx);
    // Fire-and-forget writers on the primary: their ids are answered before the write is
    // durable or replicated, so the kill loses some. Each must end up that write's or Invalid,
    // never Committed for another write.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    for w in 0..8usize {
        let client = c.admin(primary);
        let (stop, answered) = (stop.clone(), answered.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let contents = format!("unwaited {w} write {i}");
                match client.append_to_ledger(&contents, None).await {
                    Ok(r) => answered.lock().unwrap().push((r.transaction_id, contents)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    c.kill(primary);
    // Writes resume on the survivors within a few seconds: a write sent after the kill
    // commits.
    let mut committed = Vec::new();
    let resumed = loop {
        let (txid, contents, started, at) =
            tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("no write committed within 30 s of the kill")
                .unwrap();
        committed.push((txid, contents, at));
        if started > killed_at {
            break at - killed_at;
        }
    };
    println!("writes resumed {resumed:?} after SIGKILL of the primary");
    assert!(
        resumed < Duration::from_secs(10),
        "writes resumed only after {resumed:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    while let Some((txid, contents, _, at)) = rx.recv().await {
        committed.push((txid, contents, at));
    }
    let before: Vec<_> = committed
        .iter()
        .filter(|(_, _, at)| *at <= killed_at)
        .collect();
    assert!(
        before.len() > 20,
        "only {} writes committed before the kill",
        before.len()
    );
    println!(
        "{} writes reported Committed before the kill, {} in all",
        before.len(),
        committed.len()
    );
    // Every write reported Committed, before the kill or after, is on both survivors with the
    // same transaction id and contents.
    let mut seen = BTreeMap::new();
    for (txid, contents, _) in &committed {
        assert!(
            seen.insert(txid.clone(), contents.clone()).is_none(),
            "transaction id {txid} reported twice"
        );
        for &n in &survivors {
            let e = c
                .admin(n)
                .get_ledger_entry(Some(GetLedgerEntryOptions {
                    transaction_id: Some(txid.clone()),
                    ..Default::default()
                }))
                .await
                .unwrap_or_else(|e| panic!("node {n} lost {txid}: {e}"));
            assert_eq!(&e.contents, contents, "node {n} at {txid}");
        }
    }
    // The killed node restarts, rejoins as a backup and catches up.
    c.restart(primary).await;
    let last = &committed.last().unwrap().0;
    c.admin(primary)
        .wait_until_durable(last, None)
        .await
        .unwrap();
    // Every id the old primary answered without waiting: that write's, or Invalid (checked
    // by 16 tasks, half on each survivor).
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    let total = answered.len();
    let mut checks = Vec::new();
    for (k, part) in answered.chunks(total.div_ceil(16).max(1)).enumerate() {
        let client = c.admin(survivors[k % 2]);
        let part = part.to_vec();
        checks.push(tokio::spawn(async move {
            let (mut kept, mut lost) = (0, 0);
            for (txid, contents) in part {
                match client.wait_until_durable(&txid, None).await {
                    Ok(_) => {
                        let e = client
                            .get_ledger_entry(Some(GetLedgerEntryOptions {
                                transaction_id: Some(txid.clone()),
                                ..Default::default()
                            }))
                            .await
                            .unwrap_or_else(|e| panic!("{txid} Committed, unreadable: {e}"));
                        assert_eq!(e.contents, contents, "{txid} holds another write");
                        kept += 1;
                    }
                    Err(e) if e.code() == Some("InvalidTransactionId") => lost += 1,
                    Err(e) => panic!("{txid}: neither committed nor invalid: {e}"),
                }
            }
            (kept, lost)
        }));
    }
    let (mut kept, mut lost) = (0, 0);
    for t in checks {
        let (k, l) = t.await.unwrap();
        kept += k;
        lost += l;
    }
    println!("{total} ids answered Pending by the old primary: {kept} kept, {lost} Invalid");
    assert!(kept > 0, "no unwaited write was answered before the kill");
    let dirs = c.stop_all();
    harness::assert_identical_chunks(&dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_many_writes_catches_up_and_serves_verifiable_receipts() {
    let n_writes: usize = if heavy() { 50_000 } else { 5_000 };
    let mut c = Cluster::start(3, &[]).await;
    let primary = c.primary().await;
    let lagging = (0..3).find(|i| *i != primary).unwrap();
    c.stop(lagging);
    let started = Instant::now();
    let clients: Vec<ConfidentialLedgerClient> = (0..3)
        .filter(|n| *n != lagging)
        .map(|n| c.admin(n))
        .collect();
    let ids = harness::append_many(&clients, n_writes, 32).await;
    println!(
        "{n_writes} writes while node {lagging} was down: {:?}",
        started.elapsed()
    );
    let caught_up = Instant::now();
    c.restart(lagging).await;
    let last = ids.last().unwrap();
    c.admin(lagging)
        .wait_until_durable(last, None)
        .await
        .unwrap();
    println!("node {lagging} caught up in {:?}", caught_up.elapsed());
    let cert = c.service_cert();
    for txid in [&ids[0], &ids[ids.len() / 2], last] {
        let r = c
            .admin(lagging)
            .get_transaction_receipt(txid, None)
            .await
            .unwrap();
        r.verify(&cert).unwrap();
    }
    let dirs = c.stop_all();
    harness::assert_identical_chunks(&dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_needs_a_valid_unspent_token_and_nodes_can_be_removed() {
    let mut c = Cluster::start(2, &[]).await;
    // A made-up token, a token of another service and a spent token are all refused.
    let forged = format!("vellum-join.{}.{}", "00".repeat(32), "11".repeat(32));
    let out = c.try_join(&forged);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the one this join token"), "{err}");
    let token = c.admin(0).create_join_token(None).await.unwrap();
    let wrong_secret = format!(
        "vellum-join.{}.{}",
        "00".repeat(32),
        token.token.rsplit('.').next().unwrap()
    );
    let out = c.try_join(&wrong_secret);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown or already spent"),
        "{err}"
    );
    // A Reader cannot create tokens.
    let (status, _) = c.post_as_anonymous(0, "/node/join-tokens").await;
    assert_eq!(status, 401);
    // Remove the backup: it leaves the Raft membership and is listed Retired.
    let primary = c.primary().await;
    let backup = 1 - primary;
    let nodes = c.admin(primary).list_nodes(None).await.unwrap();
    let id = nodes
        .iter()
        .find(|n| n.role == "backup")
        .unwrap()
        .node_id
        .clone();
    c.admin(primary).remove_node(&id, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = c.admin(primary).list_nodes(None).await.unwrap();
        let n = nodes.iter().find(|n| n.node_id == id).unwrap();
        if n.status == "Retired" && n.role == "none" {
            break;
        }
        assert!(Instant::now() < deadline, "node not removed: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The removed node's endorsed certificate no longer opens the node channel (a garbage
    // body: a node still in the service gets 400 for it, a retired one 403 before that).
    let as_node = |i: usize| c.https_client(Some(&c.node_identity(i)));
    let forward = format!("{}/node/forward", c.nodes[primary].endpoint);
    let r = as_node(primary)
        .post(&forward)
        .body(vec![0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = as_node(backup)
        .post(&forward)
        .body(vec![0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap().contains("retired"));
    // The remaining single node commits on its own.
    let t = harness::append_durably(&c.admin(primary), "after removal").await;
    assert!(!t.is_empty());
    // The last node cannot be removed.
    let own = c
        .admin(primary)
        .list_nodes(None)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.role == "primary")
        .unwrap();
    let err = c
        .admin(primary)
        .remove_node(&own.node_id, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("last node"), "{err}");
    c.kill(backup);
    c.stop_all();
}

/// The collection limit is the primary's: writes forwarded by a backup count, and a backup
/// refuses a new collection with the same error as the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collection_limit_holds_across_nodes() {
    // Every node's secrets sealed under one key file (the joining node's too, as it provisions).
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("seal.key");
    std::fs::write(&key, [0x42u8; 32]).unwrap();
    let mut c = Cluster::start(
        2,
        &[
            "--max-collections",
            "2",
            "--seal-key-file",
            key.to_str().unwrap(),
        ],
    )
    .await;
    for n in &c.nodes {
        for name in ["ledger_secret", "service_key.pem", "node_key.pem"] {
            assert!(!n.data.join(name).exists(), "{name} in the clear");
            assert!(n.data.join(format!("{name}.sealed")).exists());
        }
        assert!(!n.data.join("joining_key.pem.sealed").exists());
    }
    let primary = c.primary().await;
    let backup = 1 - primary;
    let write = |node: usize, collection: &str| {
        let client = c.admin(node);
        let opts = AppendToLedgerOptions {
            sub_ledger_id: Some(collection.to_owned()),
            ..Default::default()
        };
        async move { client.append_to_ledger("x", Some(opts)).await }
    };
    // The default collection does not exist until written: these two take both places.
    write(backup, "a").await.unwrap();
    write(primary, "b").await.unwrap();
    for node in [backup, primary] {
        let e = write(node, "c").await.unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (Some(400), Some("TooManyCollections")),
            "node {node}: {e}"
        );
    }
    // Existing collections still take writes through either node.
    write(backup, "b").await.unwrap();
    write(primary, "a").await.unwrap();
    c.stop_all();
}

/// What a retired node's data directory still holds (the service key) does not get it, or a
/// node it mints, back into the node channel; and a trusted node forwarding a write is held to
/// the rights of the caller it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_node_is_locked_out_and_forwarded_writes_are_authorised_again() {
    use vellum_ledger::identity::{Identity, endorse_node};
    use vellum_node::cluster::{Forward, ForwardReply};
    use vellum_node::ops::{Caller, Op};
    use vellum_node::users::{Role, RoleName};
    let mut c = Cluster::start(3, &[]).await;
    let primary = c.primary().await;
    let (retired, backup) = {
        let others: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
        (others[0], others[1])
    };
    let retired_id = c.node_id(retired);
    c.admin(primary)
        .remove_node(&retired_id, None)
        .await
        .unwrap();
    c.stop(retired);
    let read = |i: usize, f: &str| std::fs::read_to_string(c.nodes[i].data.join(f)).unwrap();
    // A certificate minted with the retired node's copy of the service key, for a new key.
    let now = std::time::SystemTime::now();
    let fresh = Identity::client("Vellum Node", now, 30).unwrap();
    let forged_cert = endorse_node(
        &read(retired, "service_cert.pem"),
        &read(retired, "service_key.pem"),
        fresh.cert.spki_der(),
        "Vellum Node",
        &["localhost"],
        &["127.0.0.1".parse().unwrap()],
        now,
        30,
    )
    .unwrap();
    let outsider = Identity::client("Outsider", now, 30).unwrap();
    let outsider_id = outsider.cert.acl_fingerprint();
    let admin_id = vellum_core::crypto::Certificate::from_pem(&read(0, "admin.pem"))
        .unwrap()
        .acl_fingerprint();
    let make_admin = |caller: Caller| Forward::Op {
        caller,
        op: Op::SetRoles {
            user_id: outsider_id.clone(),
            roles: vec![RoleName::BuiltIn(Role::Administrator)],
        },
    };
    let forward = |identity: String, msg: Forward| {
        let client = c.https_client(Some(&identity));
        let url = format!("{}/node/forward", c.nodes[primary].endpoint);
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/x-vellum-postcard")
                .body(postcard::to_stdvec(&msg).unwrap())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    // The retired node's own certificate, and one it minted: the channel refuses both, even
    // naming an Administrator as the caller.
    let retired_identity = c.node_identity(retired);
    let forged_identity = format!("{forged_cert}{}", fresh.key_pem());
    for (who, identity) in [("retired", retired_identity), ("minted", forged_identity)] {
        let (status, body) = forward(identity, make_admin(Caller::Cert(admin_id.clone()))).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 403, "{who}: {v}");
        assert_eq!(v["error"]["code"], "NotAllowed", "{who}: {v}");
    }
    // A trusted node's certificate, naming a caller who is no Administrator: the primary
    // checks the caller and refuses.
    let backup_identity = c.node_identity(backup);
    let (status, body) = forward(
        backup_identity,
        make_admin(Caller::Cert(outsider_id.clone())),
    )
    .await;
    assert_eq!(status, 200);
    let reply: ForwardReply = postcard::from_bytes(&body).unwrap();
    assert!(matches!(reply, ForwardReply::NotAllowed(_)), "{reply:?}");
    // Nothing was written: the outsider is no user.
    let err = c
        .admin(primary)
        .get_user(&outsider_id, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    // The service goes on with its two nodes.
    let t = harness::append_durably(&c.admin(backup), "after the lock-out").await;
    assert!(!t.is_empty());
    c.stop_all();
}

/// The node channel shares the API port: a flood of connections from other addresses (1,100
/// raw connections that never complete a handshake, from ten addresses, against every node,
/// each node held to 1,024 file descriptors, so past its cap for clients) does not stop Raft:
/// the nodes' share of the cap is kept for their addresses, and writes keep committing through
/// the primary and a backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_stop_the_cluster() {
    let prefix: Vec<String> = ["prlimit", "--nofile=1024:1024", "--"]
        .map(String::from)
        .to_vec();
    let mut c = Cluster::start_placed(3, &[], |_| (prefix.clone(), "127.0.0.1:0".into())).await;
    let primary = c.primary().await;
    let backup = (0..3).find(|i| *i != primary).unwrap();
    let mut flood = Vec::new();
    for n in 0..3 {
        let to: std::net::SocketAddr = format!("127.0.0.1:{}", c.nodes[n].port).parse().unwrap();
        for k in 0..1100 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(format!("127.0.0.{}:0", 2 + k % 10).parse().unwrap())
                .unwrap();
            if let Ok(conn) = s.connect(to).await {
                flood.push(conn);
            }
        }
    }
    println!("{} flood connections opened", flood.len());
    let started = Instant::now();
    for i in 0..40 {
        let node = if i % 2 == 0 { primary } else { backup };
        harness::append_durably(
            &c.admin(node),
            &format!("during the flood {i}, through node {node}"),
        )
        .await;
    }
    println!(
        "40 committed writes during the flood in {:?}",
        started.elapsed()
    );
    assert_eq!(c.primary().await, primary, "the flood deposed the primary");
    let capped = c.nodes.iter().all(|n| {
        std::fs::read_to_string(&n.log)
            .unwrap_or_default()
            .contains("connection limit reached")
    });
    assert!(capped, "a node did not reach its cap for clients");
    drop(flood);
    c.stop_all();
}

/// `m`'s signed request of type `msg` carrying `body` (JSON).
fn sign(
    m: &Member,
    msg: vellum_core::gov::MsgType,
    pid: Option<&str>,
    body: &serde_json::Value,
) -> Vec<u8> {
    m.sign(msg, pid, body.to_string().as_bytes()).unwrap()
}

const GOV: &str = "api-version=2024-07-01";

/// POSTs a signed governance request to `endpoint`, retrying while the cluster has no primary.
async fn gov_post(
    http: &reqwest::Client,
    endpoint: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    for _ in 0..100 {
        let r = http
            .post(format!("{endpoint}{path}?{GOV}"))
            .header("content-type", "application/cose")
            .body(body.clone())
            .send()
            .await;
        if let Ok(r) = r {
            let s = r.status().as_u16();
            let v = r.json().await.unwrap_or(serde_json::Value::Null);
            if s != 503 {
                return (s, v);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path}: no answer from {endpoint}");
}

/// `m` updates and acks its state digest through `endpoint`.
async fn ack(http: &reqwest::Client, endpoint: &str, m: &Member) {
    use vellum_core::gov::MsgType;
    let id = m.id();
    let mut digest = String::new();
    for _ in 0..100 {
        let (s, v) = gov_post(
            http,
            endpoint,
            &format!("/gov/members/state-digests/{id}:update"),
            sign(m, MsgType::StateDigest, None, &serde_json::json!({})),
        )
        .await;
        if s == 200 {
            digest = v["stateDigest"].as_str().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = gov_post(
        http,
        endpoint,
        &format!("/gov/members/state-digests/{id}:ack"),
        sign(
            m,
            MsgType::Ack,
            None,
            &serde_json::json!({ "stateDigest": digest }),
        ),
    )
    .await;
    assert_eq!(s, 204, "{v}");
}

/// What node `endpoint` says of member `id`, once it says anything of it.
async fn member_status(http: &reqwest::Client, endpoint: &str, id: &str) -> String {
    let r = http
        .get(format!("{endpoint}/gov/service/members/{id}?{GOV}"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    v["status"].as_str().unwrap_or("unknown").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_across_three_nodes_survives_a_change_of_primary() {
    use vellum_core::gov::MsgType;
    let mut c = Cluster::start(3, &[]).await;
    c.wait_voters(3).await;
    let http = c.https_client(None);
    let read = |f: &str| std::fs::read_to_string(c.nodes[0].data.join(f)).unwrap();
    let m0 = Member::from_pem(&read("member0_cert.pem"), &read("member0_key.pem")).unwrap();
    let m1_id =
        vellum_ledger::identity::Identity::client("member1", std::time::SystemTime::now(), 30)
            .unwrap();
    let m1 = Member::from_pem(&m1_id.cert_pem, &m1_id.key_pem()).unwrap();
    let primary = c.primary().await;
    let backups: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    let (b0, b1) = (
        c.nodes[backups[0]].endpoint.clone(),
        c.nodes[backups[1]].endpoint.clone(),
    );

    // Through a backup (forwarded to the primary): the operator member acks, proposes a new
    // member and votes for it.
    ack(&http, &b0, &m0).await;
    let (s, v) = gov_post(
        &http,
        &b0,
        "/gov/members/proposals:create",
        sign(&m0,
            MsgType::Proposal,
            None,
            &serde_json::json!({"actions": [{"name": "set_member", "args": {"cert": m1_id.cert_pem}}]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let ballot = serde_json::json!({"ballot": "export function vote (p, id) { return true }"});
    let (s, v) = gov_post(
        &http,
        &b1,
        &format!("/gov/members/proposals/{pid}/ballots/{}:submit", m0.id()),
        sign(&m0, MsgType::Ballot, Some(&pid), &ballot),
    )
    .await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    // Every node knows the new member (the answering node at once, the others soon).
    assert_eq!(member_status(&http, &b1, &m1.id()).await, "Accepted");
    for n in 0..3 {
        let e = c.nodes[n].endpoint.clone();
        let mut seen = String::new();
        for _ in 0..100 {
            seen = member_status(&http, &e, &m1.id()).await;
            if seen == "Accepted" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, "Accepted", "node {n}");
    }

    // The primary dies; governance goes on with the survivors.
    c.kill(primary);
    ack(&http, &b0, &m1).await;
    assert_eq!(member_status(&http, &b0, &m1.id()).await, "Active");
    let replaced = format!(
        "{}\n// after a change of primary\n",
        vellum_ledger::genesis::DEFAULT_CONSTITUTION
    );
    let (s, v) = gov_post(
        &http,
        &b1,
        "/gov/members/proposals:create",
        sign(&m1,
            MsgType::Proposal,
            None,
            &serde_json::json!({"actions": [{"name": "set_constitution", "args": {"constitution": replaced}}]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    // One of two active members is not a majority: still open.
    let (s, v) = gov_post(
        &http,
        &b0,
        &format!("/gov/members/proposals/{pid}/ballots/{}:submit", m1.id()),
        sign(&m1, MsgType::Ballot, Some(&pid), &ballot),
    )
    .await;
    assert_eq!((s, v["proposalState"].as_str()), (200, Some("Open")), "{v}");
    let (s, v) = gov_post(
        &http,
        &b1,
        &format!("/gov/members/proposals/{pid}/ballots/{}:submit", m0.id()),
        sign(&m0, MsgType::Ballot, Some(&pid), &ballot),
    )
    .await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let got = http
        .get(format!("{b1}/gov/service/constitution?{GOV}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(got, replaced);

    // With the new primary, through the backups, every refusal holds as on one node.
    refusals_hold_after_a_change_of_primary(&http, &b0, &b1, &m0, &m1_id).await;

    // The dead node comes back and catches up; the ledgers are identical.
    c.restart(primary).await;
    let e = c.nodes[primary].endpoint.clone();
    let mut seen = String::new();
    for _ in 0..200 {
        seen = member_status(&http, &e, &m1.id()).await;
        if seen == "Active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "Active", "the restarted node");

    // The consortium retires that node by proposal (two votes of two): consensus goes on
    // with the other two.
    let retired = c.node_id(primary);
    let (s, v) = gov_post(
        &http,
        &b0,
        "/gov/members/proposals:create",
        sign(&m0,
            MsgType::Proposal,
            None,
            &serde_json::json!({"actions": [{"name": "remove_node", "args": {"node_id": retired}}]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    for m in [&m0, &m1] {
        let (s, v) = gov_post(
            &http,
            &b1,
            &format!("/gov/members/proposals/{pid}/ballots/{}:submit", m.id()),
            sign(m, MsgType::Ballot, Some(&pid), &ballot),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let node: serde_json::Value = http
        .get(format!("{b1}/gov/service/nodes/{retired}?{GOV}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(node["status"], "Retired", "{node}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = c.admin(backups[0]).list_nodes(None).await.unwrap();
        let voters: Vec<_> = nodes
            .iter()
            .filter(|n| n.role == "primary" || n.role == "backup")
            .map(|n| n.node_id.clone())
            .collect();
        if voters.len() == 2 && !voters.contains(&retired) {
            break;
        }
        assert!(Instant::now() < deadline, "still voting: {voters:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The members rekey the ledger (through a backup) while writes go on through the other:
    // every write lands. The retired node is left out of the rekey.
    let writer = {
        let clients = vec![c.admin(backups[1])];
        tokio::spawn(async move { harness::append_many(&clients, 300, 4).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rekey = serde_json::json!({"actions": [{"name": "trigger_ledger_rekey", "args": {}}]});
    let (_, (s, v)) = pass_by_both(&http, &b0, &b1, &m0, &m1, rekey.clone()).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let during = writer.await.unwrap();
    assert_eq!(during.len(), 300);

    // The members switch to joins by vote. A node joins through a backup with no token (the
    // CLI's --join-service-cert), waits Pending, and is trusted by two votes of two: it
    // receives its certificate and becomes a voter.
    let (_, (s, v)) = pass_by_both(
        &http,
        &b0,
        &b1,
        &m0,
        &m1,
        serde_json::json!({"actions": [{"name": "set_join_policy", "args": {"admission": "vote"}}]}),
    )
    .await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let pending = c.join_by_vote(backups[1]);
    let mut waiting = None;
    for _ in 0..200 {
        let nodes: serde_json::Value = http
            .get(format!("{b0}/gov/service/nodes?{GOV}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        waiting = nodes["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["status"] == "Pending")
            .map(|n| n["nodeId"].as_str().unwrap().to_owned());
        if waiting.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = waiting.expect("a node waits Pending");
    let (_, (s, v)) = pass_by_both(
        &http,
        &b0,
        &b1,
        &m0,
        &m1,
        serde_json::json!({"actions": [{"name": "transition_node_to_trusted", "args": {"node_id": waiting, "valid_from": "20261205000000Z"}}]}),
    )
    .await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    c.adopt(pending).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = c.admin(backups[0]).list_nodes(None).await.unwrap();
        let voters: Vec<_> = nodes
            .iter()
            .filter(|n| n.role == "primary" || n.role == "backup")
            .map(|n| n.node_id.clone())
            .collect();
        if voters.len() == 3 && voters.contains(&waiting) {
            break;
        }
        assert!(Instant::now() < deadline, "not yet a voter: {voters:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second rekey: the node that joined after the first (it received the secrets when
    // admitted) takes its copy of the new one like the others. Every write made during the
    // first rekey reads back as written from that node.
    let (_, (s, v)) = pass_by_both(&http, &b0, &b1, &m0, &m1, rekey).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let joined = c.nodes.len() - 1;
    let last = harness::append_durably(&c.admin(joined), "after the second rekey").await;
    let reader = c.admin(joined);
    for (i, txid) in during.iter().enumerate().step_by(10) {
        let e = reader
            .get_ledger_entry(Some(GetLedgerEntryOptions {
                transaction_id: Some(txid.clone()),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert!(e.contents.starts_with("bulk "), "{i} at {txid}: {e:?}");
    }
    let _ = last;

    let dirs = c.stop_all();
    harness::assert_identical_chunks(&dirs[..]);
    // Every proposal, ballot and outcome verifies with CCF's own verifier (the last chunk is
    // not closed yet: it is checked too).
    harness::verify_full_including_uncommitted(&dirs[backups[0]]);
    // The three serving nodes hold the same three secrets; the retired one only the first,
    // which does not open the rekey history (nothing written after the rekey).
    let secrets = |i: usize| std::fs::read_to_string(dirs[i].join("ledger_secret")).unwrap();
    assert_eq!(secrets(backups[0]).lines().count(), 3);
    assert_eq!(secrets(backups[0]), secrets(backups[1]));
    assert_eq!(secrets(backups[0]), secrets(joined));
    assert_eq!(secrets(primary).lines().count(), 1);
    let audit = |secret_of: usize| {
        Command::new(env!("CARGO_BIN_EXE_vellum"))
            .arg("audit")
            .arg(dirs[backups[0]].join("ledger"))
            .arg("--ledger-secret")
            .arg(dirs[secret_of].join("ledger_secret"))
            .args(["--include-uncommitted", "--no-progress"])
            .output()
            .unwrap()
    };
    let out = audit(backups[0]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = audit(primary);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rekey history"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CCF's own check of the rekey records.
    if let Some(py) = harness::python() {
        let code = "import sys, ccf.verify_ledger_secrets_chain as v\n\
                    sys.exit(0 if v.run([sys.argv[1]], uncommitted=True) else 1)";
        let chunks = harness::chunks_only(&dirs[backups[0]]);
        let out = Command::new(py)
            .args(["-c", code])
            .arg(chunks.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.matches("previous_ledger_secret").count() == 2,
            "verify_ledger_secrets_chain:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `m0` proposes `actions` through `b0`; `m0` votes through `b1`, then `m1` through `b0`: the
/// proposal id and the answer to the last ballot.
async fn pass_by_both(
    http: &reqwest::Client,
    b0: &str,
    b1: &str,
    m0: &Member,
    m1: &Member,
    actions: serde_json::Value,
) -> (String, (u16, serde_json::Value)) {
    use vellum_core::gov::MsgType;
    let ballot = serde_json::json!({"ballot": "export function vote (p, id) { return true }"});
    let (s, v) = gov_post(
        http,
        b0,
        "/gov/members/proposals:create",
        sign(m0, MsgType::Proposal, None, &actions),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let mut last = (0, serde_json::Value::Null);
    for (m, via) in [(m0, b1), (m1, b0)] {
        let path = format!("/gov/members/proposals/{pid}/ballots/{}:submit", m.id());
        last = gov_post(
            http,
            via,
            &path,
            sign(m, MsgType::Ballot, Some(&pid), &ballot),
        )
        .await;
    }
    (pid, last)
}

/// `proposer` proposes `actions` through `endpoint` (the proposal must be taken), then each
/// of `voters` votes for it there: the answer to the last ballot.
async fn propose_and_vote(
    http: &reqwest::Client,
    endpoint: &str,
    proposer: &Member,
    voters: &[Member],
    actions: serde_json::Value,
) -> (u16, serde_json::Value) {
    use vellum_core::gov::MsgType;
    let ballot = serde_json::json!({"ballot": "export function vote (p, id) { return true }"});
    let (s, v) = gov_post(
        http,
        endpoint,
        "/gov/members/proposals:create",
        sign(
            proposer,
            MsgType::Proposal,
            None,
            &serde_json::json!({ "actions": actions }),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let mut last = (0, serde_json::Value::Null);
    for m in voters {
        last = gov_post(
            http,
            endpoint,
            &format!("/gov/members/proposals/{pid}/ballots/{}:submit", m.id()),
            sign(m, MsgType::Ballot, Some(&pid), &ballot),
        )
        .await;
    }
    last
}

/// Forged, foreign, replayed and stale envelopes, a ballot by a member that has not acked, a
/// proposal withdrawn after a vote, a constitution that throws, and concurrent proposals, on
/// a cluster whose primary changed, sent to its backups `b0` and `b1`. `m0` and `m1` are its
/// two active members.
async fn refusals_hold_after_a_change_of_primary(
    http: &reqwest::Client,
    b0: &str,
    b1: &str,
    m0: &Member,
    m1_id: &vellum_ledger::identity::Identity,
) {
    use vellum_core::gov::{Envelope, MsgType};
    let m1 = Member::from_pem(&m1_id.cert_pem, &m1_id.key_pem()).unwrap();
    let create = "/gov/members/proposals:create";
    let ballot = |yes: bool| serde_json::json!({"ballot": format!("export function vote (p, id) {{ return {yes} }}")});
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    let msg = |v: &serde_json::Value| v["error"]["message"].as_str().unwrap_or("").to_owned();
    let empty = serde_json::json!({"actions": []});

    // A replayed envelope.
    let good = sign(&m1, MsgType::Proposal, None, &empty);
    let (s, v) = gov_post(http, b0, create, good.clone()).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = gov_post(http, b1, create, good.clone()).await;
    assert_eq!((s, code(&v).as_str()), (400, "ProposalReplay"), "{v}");
    // A forged signature.
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 5] ^= 1;
    let (s, v) = gov_post(http, b0, create, forged).await;
    assert_eq!(
        (s, msg(&v).as_str()),
        (401, "Failed to validate COSE Sign1"),
        "{v}"
    );
    // A signer that is no member.
    let stranger =
        vellum_ledger::identity::Identity::client("stranger", std::time::SystemTime::now(), 30)
            .unwrap();
    let stranger = Member::from_pem(&stranger.cert_pem, &stranger.key_pem()).unwrap();
    let (s, v) = gov_post(
        http,
        b1,
        create,
        sign(&stranger, MsgType::Proposal, None, &empty),
    )
    .await;
    assert_eq!(
        (s, msg(&v).as_str()),
        (401, "Signer is not a known member"),
        "{v}"
    );
    // A stale envelope (an hour old).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = Envelope::sign(
        MsgType::Proposal,
        now - 3600,
        None,
        empty.to_string().as_bytes(),
        &m1_id.signing_key,
        &m1_id.cert,
    )
    .unwrap();
    let (s, v) = gov_post(http, b0, create, old).await;
    assert_eq!(
        (s, code(&v).as_str()),
        (400, "ProposalCreatedTooLongAgo"),
        "{v}"
    );

    // A member added by vote who has not acked may not vote.
    let m2_id =
        vellum_ledger::identity::Identity::client("member2", std::time::SystemTime::now(), 30)
            .unwrap();
    let m2 = Member::from_pem(&m2_id.cert_pem, &m2_id.key_pem()).unwrap();
    let add =
        serde_json::json!({"actions": [{"name": "set_member", "args": {"cert": m2_id.cert_pem}}]});
    let (s, v) = gov_post(http, b1, create, sign(m0, MsgType::Proposal, None, &add)).await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    for (m, via) in [(m0, b0), (&m1, b1)] {
        let path = format!("/gov/members/proposals/{pid}/ballots/{}:submit", m.id());
        let (s, v) = gov_post(
            http,
            via,
            &path,
            sign(m, MsgType::Ballot, Some(&pid), &ballot(true)),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    // Read where the passing ballot was answered: that node has applied it.
    assert_eq!(member_status(http, b1, &m2.id()).await, "Accepted");
    let (s, v) = gov_post(http, b0, create, sign(m0, MsgType::Proposal, None, &empty)).await;
    assert_eq!(s, 200, "{v}");
    let open = v["proposalId"].as_str().unwrap().to_owned();
    let path = format!("/gov/members/proposals/{open}/ballots/{}:submit", m2.id());
    let (s, v) = gov_post(
        http,
        b1,
        &path,
        sign(&m2, MsgType::Ballot, Some(&open), &ballot(true)),
    )
    .await;
    assert_eq!(
        (s, code(&v).as_str()),
        (401, "InvalidAuthenticationInfo"),
        "{v}"
    );

    // Withdrawn after a vote: by its proposer only, and it takes no more votes.
    let remove =
        serde_json::json!({"actions": [{"name": "remove_member", "args": {"member_id": m2.id()}}]});
    let (s, v) = gov_post(
        http,
        b0,
        create,
        sign(&m1, MsgType::Proposal, None, &remove),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pid = v["proposalId"].as_str().unwrap().to_owned();
    let vote_path = format!("/gov/members/proposals/{pid}/ballots/{}:submit", m0.id());
    let (s, v) = gov_post(
        http,
        b1,
        &vote_path,
        sign(m0, MsgType::Ballot, Some(&pid), &ballot(false)),
    )
    .await;
    assert_eq!((s, v["proposalState"].as_str()), (200, Some("Open")), "{v}");
    let withdraw = format!("/gov/members/proposals/{pid}:withdraw");
    let (s, v) = gov_post(
        http,
        b0,
        &withdraw,
        sign(
            m0,
            MsgType::Withdrawal,
            Some(&pid),
            &serde_json::Value::Null,
        ),
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (403, "AuthorizationFailed"), "{v}");
    let (s, v) = gov_post(
        http,
        b1,
        &withdraw,
        sign(
            &m1,
            MsgType::Withdrawal,
            Some(&pid),
            &serde_json::Value::Null,
        ),
    )
    .await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Withdrawn")),
        "{v}"
    );
    let (s, v) = gov_post(
        http,
        b0,
        &vote_path,
        sign(m0, MsgType::Ballot, Some(&pid), &ballot(true)),
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (400, "ProposalNotOpen"), "{v}");

    // Concurrent proposals, half through each backup: all land, each under its own id.
    let sends = (0..6).map(|i| {
        let body = serde_json::json!({"actions": [{"name": "set_member_data", "args": {"member_id": m0.id(), "member_data": {"n": i}}}]});
        let signed = sign(if i % 2 == 0 { m0 } else { &m1 }, MsgType::Proposal, None, &body);
        let via = if i % 2 == 0 { b0 } else { b1 };
        async move { gov_post(http, via, create, signed).await }
    });
    let mut ids: Vec<String> = futures_util::future::join_all(sends)
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

    // A constitution whose apply throws: the ballot that would pass the proposal is refused
    // with CCF's 500, and nothing is recorded; the members then restore the default.
    let get_constitution = || async {
        http.get(format!("{b0}/gov/service/constitution?{GOV}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let current = get_constitution().await;
    let throwing = current.replace(
        "export function apply(proposal, proposalId) {",
        "export function apply(proposal, proposalId) {\n  if (proposal.includes(\"boom\")) throw new Error(\"apply broke\");",
    );
    assert_ne!(throwing, current);
    let m1 = &m1;
    let pass_by_both = |actions: serde_json::Value| pass_by_both(http, b0, b1, m0, m1, actions);
    let (_, (s, v)) = pass_by_both(serde_json::json!({"actions": [{"name": "set_constitution", "args": {"constitution": throwing}}]})).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let (pid, (s, v)) = pass_by_both(serde_json::json!({"actions": [{"name": "set_member_data", "args": {"member_id": m0.id(), "member_data": {"boom": true}}}]})).await;
    assert_eq!((s, code(&v).as_str()), (500, "InternalError"), "{v}");
    assert!(
        msg(&v).contains("Failed to apply(): Error: apply broke"),
        "{v}"
    );
    let state: serde_json::Value = http
        .get(format!("{b1}/gov/members/proposals/{pid}?{GOV}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["proposalState"], "Open", "{state}");
    let (_, (s, v)) = pass_by_both(serde_json::json!({"actions": [{"name": "set_constitution", "args": {"constitution": current}}]})).await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    assert_eq!(get_constitution().await, current);
}

/// An RSA key for a recovery member: (private PKCS#8 PEM, public SPKI PEM).
fn encryption_key() -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let public = rcgen::PublicKeyData::subject_public_key_info(&kp);
    (
        kp.serialize_pem(),
        pem::encode(&pem::Pem::new("PUBLIC KEY", public)),
    )
}

/// Disaster recovery of a 3-node service rekeyed twice: every node is killed; a new node
/// recovers the service from the primary's ledger with 2 of its 3 recovery members' shares
/// (one is not enough; a wrong share is refused and its member named); the members open the
/// recovered service; every entry reads back, receipts from before the disaster verify against
/// the old certificate and, fetched again, against the new one; and `vellum audit` with the
/// latest secret, CCF's `verify_ledger_secrets_chain` and `ccf.ledger` FULL accept the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_service_is_recovered_by_two_of_three_members_shares() {
    use vellum_core::gov::MsgType;
    let mut c = Cluster::start(3, &[]).await;
    let http = c.https_client(None);
    let read = |f: &str| std::fs::read_to_string(c.nodes[0].data.join(f)).unwrap();
    let m0 = Member::from_pem(&read("member0_cert.pem"), &read("member0_key.pem")).unwrap();
    let e0 = c.nodes[0].endpoint.clone();
    ack(&http, &e0, &m0).await;
    // Three recovery members, each with an encryption key, added in one proposal.
    let keys = tempfile::tempdir().unwrap();
    let recovery: Vec<(Member, (String, String))> = (1..=3)
        .map(|i| {
            let id = vellum_ledger::identity::Identity::client(
                &format!("recovery{i}"),
                std::time::SystemTime::now(),
                30,
            )
            .unwrap();
            let enc = encryption_key();
            // Each member's files, for the CLI.
            let f = |n: &str| keys.path().join(format!("recovery{i}_{n}.pem"));
            std::fs::write(f("cert"), &id.cert_pem).unwrap();
            std::fs::write(f("key"), id.key_pem()).unwrap();
            std::fs::write(f("enc"), &enc.0).unwrap();
            (Member::from_pem(&id.cert_pem, &id.key_pem()).unwrap(), enc)
        })
        .collect();
    let actions: Vec<serde_json::Value> = recovery
        .iter()
        .map(|(m, k)| {
            serde_json::json!({"name": "set_member", "args": {
                "cert": m.cert_pem(), "encryption_pub_key": k.1}})
        })
        .collect();
    let propose_and_pass = |voters: Vec<Member>, actions: serde_json::Value| {
        let (http, e0, m0) = (http.clone(), e0.clone(), m0.clone());
        async move {
            let last = propose_and_vote(&http, &e0, &m0, &voters, actions).await;
            assert_eq!(last.1["proposalState"], "Accepted", "{}", last.1);
        }
    };
    propose_and_pass(vec![m0.clone()], serde_json::json!(actions)).await;
    for (m, _) in &recovery {
        ack(&http, &e0, m).await;
    }
    let voters = vec![m0.clone(), recovery[0].0.clone(), recovery[1].0.clone()];
    propose_and_pass(
        voters.clone(),
        serde_json::json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}}]),
    )
    .await;

    // Entries, with two rekeys among them; a receipt taken before the disaster.
    let primary = c.primary().await;
    let client = c.admin(primary);
    let mut written = Vec::new();
    let rekey = serde_json::json!([{"name": "trigger_ledger_rekey", "args": {}}]);
    for round in 0..3 {
        for i in 0..20 {
            let contents = format!("round {round} entry {i}");
            let r = client
                .append_to_ledger(&contents, None::<AppendToLedgerOptions>)
                .await
                .unwrap();
            written.push((r.transaction_id, contents));
        }
        if round < 2 {
            propose_and_pass(voters.clone(), rekey.clone()).await;
        }
    }
    let last = harness::append_durably(&client, "the last before the disaster").await;
    written.push((last, "the last before the disaster".into()));
    let early = written[0].0.clone();
    let old_receipt = client.get_transaction_receipt(&early, None).await.unwrap();
    let old_cert = c.service_cert();
    old_receipt.verify(&old_cert).unwrap();

    // Every node is lost.
    for i in 0..3 {
        c.kill(i);
    }

    // A new node recovers from the primary's ledger; it waits for the shares.
    let (pending, endpoint) = c.recover_from(primary);
    let new_http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut network = serde_json::Value::Null;
    for _ in 0..300 {
        if let Ok(r) = new_http
            .get(format!("{endpoint}/node/network"))
            .send()
            .await
        {
            network = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        network["service_status"], "WaitingForRecoveryShares",
        "{network}"
    );
    assert_eq!(network["recovery_threshold"], 2, "{network}");
    let new_cert = network["service_certificate"].as_str().unwrap().to_owned();
    assert_ne!(new_cert, old_cert);
    let share_of = |i: usize| {
        let (http, endpoint) = (new_http.clone(), endpoint.clone());
        let (m, k) = recovery[i].clone();
        async move {
            let v: serde_json::Value = http
                .get(format!(
                    "{endpoint}/gov/recovery/encrypted-shares/{}?{GOV}",
                    m.id()
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            vellum_node::recovery::decrypt_share(&k.0, v["encryptedShare"].as_str().unwrap())
                .unwrap()
                .to_vec()
        }
    };
    let submit = |i: usize, share: Vec<u8>| {
        let (http, endpoint) = (new_http.clone(), endpoint.clone());
        let m = recovery[i].0.clone();
        async move {
            use base64::Engine as _;
            let body = serde_json::json!({
                "share": base64::engine::general_purpose::STANDARD.encode(share)
            });
            let r = http
                .post(format!(
                    "{endpoint}/gov/recovery/members/{}:recover?{GOV}",
                    m.id()
                ))
                .header("content-type", "application/cose")
                .body(sign(&m, MsgType::RecoveryShare, None, &body))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    // The application API is closed meanwhile.
    let (s, v) = {
        let r = new_http
            .get(format!(
                "{endpoint}/app/transactions?api-version=2022-05-13"
            ))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("ServiceNotOpen")),
        "{v}"
    );
    // One share is not enough.
    let (s, v) = submit(0, share_of(0).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["message"], "1/2 recovery shares successfully submitted.",
        "{v}"
    );
    // Refused: a body that is no signed request, a member submitting for another, a member
    // with no share, a missing api-version.
    let post_raw = |path: String, body: Vec<u8>| {
        let (http, endpoint) = (new_http.clone(), endpoint.clone());
        async move {
            let r = http
                .post(format!("{endpoint}{path}"))
                .header("content-type", "application/cose")
                .body(body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let share_body = |m: &Member| {
        use base64::Engine as _;
        let body = serde_json::json!({"share": base64::engine::general_purpose::STANDARD.encode([1u8; 33])});
        sign(m, MsgType::RecoveryShare, None, &body)
    };
    let path = |m: &Member| format!("/gov/recovery/members/{}:recover?{GOV}", m.id());
    let refusals = [
        (
            path(&recovery[1].0),
            b"not cose".to_vec(),
            401,
            "InvalidAuthenticationInfo",
        ),
        (
            path(&recovery[1].0),
            share_body(&recovery[0].0),
            401,
            "InvalidAuthenticationInfo",
        ),
        (path(&m0), share_body(&m0), 403, "NotRecoveryMember"),
        (
            format!("/gov/recovery/members/{}:recover", recovery[1].0.id()),
            share_body(&recovery[1].0),
            400,
            "UnsupportedApiVersionValue",
        ),
    ];
    for (path, body, status, code) in refusals {
        let (s, v) = post_raw(path.clone(), body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {v}"
        );
    }
    // A wrong share is refused and its member named; another member may not submit it.
    let mut wrong = share_of(1).await;
    wrong[4] ^= 0x20;
    let (s, v) = submit(1, wrong).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidRecoveryShare", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&recovery[1].0.id()),
        "{v}"
    );
    // The second right share completes the recovery: the third member submits it with the
    // CLI, pinning the new service certificate.
    let new_cert_path = keys.path().join("new_service_cert.pem");
    std::fs::write(&new_cert_path, &new_cert).unwrap();
    let f = |n: &str| keys.path().join(format!("recovery3_{n}.pem"));
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["--endpoint", &endpoint, "--ca"])
        .arg(&new_cert_path)
        .args(["gov", "recover-share", "--encryption-key"])
        .arg(f("enc"))
        .arg("--member-cert")
        .arg(f("cert"))
        .arg("--member-key")
        .arg(f("key"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("End of recovery"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.adopt(pending).await;
    let recovered = c.nodes.len() - 1;
    assert_eq!(c.nodes[recovered].endpoint, endpoint);
    let saved_cert =
        std::fs::read_to_string(c.nodes[recovered].data.join("service_cert.pem")).unwrap();
    assert_eq!(saved_cert, new_cert);

    // Closed until the members open it, naming the identity it replaced.
    let (s, _) = {
        let r = new_http
            .get(format!(
                "{endpoint}/app/transactions/{early}?api-version=2022-05-13"
            ))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 503);
    let open = |prev: &str| {
        serde_json::json!([{"name": "transition_service_to_open", "args": {
            "previous_service_identity": prev, "next_service_identity": new_cert}}])
    };
    {
        // A wrong previous identity: apply fails, nothing is recorded.
        let last = propose_and_vote(&new_http, &endpoint, &m0, &voters, open(&new_cert)).await;
        assert_eq!(last.0, 500, "{}", last.1);
        assert!(
            last.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("previous_service_identity"),
            "{}",
            last.1
        );
    }
    let last = propose_and_vote(&new_http, &endpoint, &m0, &voters, open(&old_cert)).await;
    assert_eq!(last.1["proposalState"], "Accepted", "{}", last.1);

    // Open: every entry reads back; the old receipt still verifies against the old
    // certificate, and fetched again, against the new one; new writes land.
    let admin = c.admin(recovered);
    for (txid, contents) in &written {
        let e = admin
            .get_ledger_entry(Some(GetLedgerEntryOptions {
                transaction_id: Some(txid.clone()),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(&e.contents, contents, "{txid}");
    }
    old_receipt.verify(&old_cert).unwrap();
    let again = admin.get_transaction_receipt(&early, None).await.unwrap();
    again.verify(&new_cert).unwrap();
    assert!(again.verify(&old_cert).is_err());
    assert_eq!(
        again.contents["serviceEndorsements"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{}",
        again.contents
    );
    // The Azure SDK's verifier agrees: the new certificate accepts it, the old one does not.
    if let Some(py) = harness::python() {
        let receipt = keys.path().join("receipt.json");
        std::fs::write(&receipt, again.contents.to_string()).unwrap();
        let old_cert_path = keys.path().join("old_service_cert.pem");
        std::fs::write(&old_cert_path, &old_cert).unwrap();
        let code = "import json, sys\n\
                    from azure.confidentialledger.receipt import verify_receipt\n\
                    r = json.load(open(sys.argv[1]))\n\
                    verify_receipt(r, open(sys.argv[2]).read())\n\
                    try:\n    verify_receipt(r, open(sys.argv[3]).read())\n\
                    except Exception:\n    print('old refused')\n";
        let out = Command::new(py)
            .args(["-c", code])
            .arg(&receipt)
            .arg(&new_cert_path)
            .arg(&old_cert_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("old refused"),
            "azure verify_receipt: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = harness::append_durably(&admin, "after the recovery").await;
    admin
        .get_transaction_receipt(&after, None)
        .await
        .unwrap()
        .verify(&new_cert)
        .unwrap();

    // A node joins the recovered service: it checks the signatures of the old era against the
    // identity the recovery replaced, and serves the whole history.
    c.join_with_token(recovered).await;
    let joined = c.nodes.len() - 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = c.admin(recovered).list_nodes(None).await.unwrap();
        let voters = nodes
            .iter()
            .filter(|n| n.role == "primary" || n.role == "backup")
            .count();
        if voters == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new node is no voter: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (txid, contents) = &written[5];
    let mut seen = None;
    for _ in 0..100 {
        if let Ok(e) = c
            .admin(joined)
            .get_ledger_entry(Some(GetLedgerEntryOptions {
                transaction_id: Some(txid.clone()),
                ..Default::default()
            }))
            .await
        {
            seen = Some(e.contents);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.as_ref(), Some(contents));
    c.admin(joined)
        .get_transaction_receipt(&early, None)
        .await
        .unwrap()
        .verify(&new_cert)
        .unwrap();

    // Two recovery members take their shares of the recovered service's secret (issued anew
    // by the recovery) with the CLI.
    for i in 0..2 {
        let f = |n: &str| keys.path().join(format!("recovery{}_{n}.pem", i + 1));
        let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
            .args(["--endpoint", &endpoint, "--ca"])
            .arg(&new_cert_path)
            .args(["gov", "share", "--encryption-key"])
            .arg(f("enc"))
            .arg("--member-cert")
            .arg(f("cert"))
            .arg("--member-key")
            .arg(f("key"))
            .arg("--out")
            .arg(keys.path().join(format!("share{i}")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let dirs = c.stop_all();
    harness::assert_identical_chunks(&[dirs[recovered].clone(), dirs[joined].clone()]);
    let data = &dirs[recovered];
    // Those two shares alone, with the ledger, open every private entry (rekeyed twice and
    // recovered once).
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("audit")
        .arg(data.join("ledger"))
        .arg("--recovery-share")
        .arg(keys.path().join("share0"))
        .arg("--recovery-share")
        .arg(keys.path().join("share1"))
        .args(["--include-uncommitted", "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("audit")
        .arg(data.join("ledger"))
        .arg("--ledger-secret")
        .arg(data.join("ledger_secret"))
        .args(["--include-uncommitted", "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    harness::verify_full_including_uncommitted(data);
    if let Some(py) = harness::python() {
        let code = "import sys, ccf.verify_ledger_secrets_chain as v\n\
                    sys.exit(0 if v.run([sys.argv[1]], uncommitted=True) else 1)";
        let chunks = harness::chunks_only(data);
        let out = Command::new(py)
            .args(["-c", code])
            .arg(chunks.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.matches("previous_ledger_secret").count() == 3,
            "verify_ledger_secrets_chain:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The members rotate the service identity of a running 3-node service: every node takes the
/// new identity (its certificate endorsed anew, the node channel carrying on), clients pin the
/// new certificate, a receipt kept from before still verifies against the old one and, fetched
/// again, against the new; a node restarted and a node joined afterwards serve under it; the
/// ledger passes `vellum audit` and `ccf.ledger` FULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_rotate_the_service_identity_of_a_running_cluster() {
    let mut c = Cluster::start(3, &[]).await;
    let http = c.https_client(None);
    let read = |f: &str| std::fs::read_to_string(c.nodes[0].data.join(f)).unwrap();
    let m0 = Member::from_pem(&read("member0_cert.pem"), &read("member0_key.pem")).unwrap();
    let e0 = c.nodes[0].endpoint.clone();
    ack(&http, &e0, &m0).await;
    let old_cert = c.service_cert();
    let primary = c.primary().await;
    let first = harness::append_durably(&c.admin(primary), "before the rotation").await;
    let old_receipt = c
        .admin(primary)
        .get_transaction_receipt(&first, None)
        .await
        .unwrap();
    old_receipt.verify(&old_cert).unwrap();

    // Writes go on while the members rotate.
    let writer = {
        let clients = vec![c.admin(primary)];
        tokio::spawn(async move { harness::append_many(&clients, 100, 2).await })
    };
    let (s, v) = propose_and_vote(
        &http,
        &e0,
        &m0,
        std::slice::from_ref(&m0),
        serde_json::json!([{"name": "rotate_service_identity", "args": {}}]),
    )
    .await;
    assert_eq!(
        (s, v["proposalState"].as_str()),
        (200, Some("Accepted")),
        "{v}"
    );
    let during = writer.await;

    // Every node serves under the new identity (a client that pins nothing sees it).
    let open = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut new_cert = String::new();
    for n in &c.nodes {
        let mut seen = String::new();
        for _ in 0..200 {
            if let Ok(r) = open
                .get(format!("{}/node/network", n.endpoint))
                .send()
                .await
            {
                let v: serde_json::Value = r.json().await.unwrap();
                seen = v["service_certificate"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if seen != old_cert {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(seen, old_cert, "{} kept the old identity", n.endpoint);
        if new_cert.is_empty() {
            new_cert = seen.clone();
        }
        assert_eq!(seen, new_cert);
        assert_eq!(
            std::fs::read_to_string(n.data.join("service_cert.pem")).unwrap(),
            new_cert
        );
    }
    let during = during.unwrap();
    assert_eq!(during.len(), 100);
    // Clients pinning the new certificate reach every node; receipts verify against it, old
    // ones through the endorsement of the identity replaced.
    for i in 0..3 {
        let t = harness::append_durably(&c.admin(i), &format!("after the rotation via {i}")).await;
        c.admin(i)
            .get_transaction_receipt(&t, None)
            .await
            .unwrap()
            .verify(&new_cert)
            .unwrap();
    }
    old_receipt.verify(&old_cert).unwrap();
    let again = c
        .admin(primary)
        .get_transaction_receipt(&first, None)
        .await
        .unwrap();
    again.verify(&new_cert).unwrap();
    assert!(again.verify(&old_cert).is_err());

    // A node restarted, and a node joined, serve under the new identity.
    let backup = (0..3).find(|&i| i != primary).unwrap();
    c.stop(backup);
    c.restart(backup).await;
    let t = harness::append_durably(&c.admin(backup), "after a restart").await;
    assert!(!t.is_empty());
    c.join_with_token(primary).await;
    let joined = c.nodes.len() - 1;
    c.wait_voters(4).await;
    let r = c
        .admin(joined)
        .get_transaction_receipt(&first, None)
        .await
        .unwrap();
    r.verify(&new_cert).unwrap();

    let dirs = c.stop_all();
    harness::assert_identical_chunks(&dirs[..]);
    let out = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .arg("audit")
        .arg(dirs[primary].join("ledger"))
        .arg("--ledger-secret")
        .arg(dirs[primary].join("ledger_secret"))
        .args(["--include-uncommitted", "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    harness::verify_full_including_uncommitted(&dirs[primary]);
}

/// Retention across nodes: a backup that keeps only the last 50 transactions drops archived
/// chunks; when the archive cannot give a chunk back (here: emptied), the backup takes it from
/// the node that still holds it (`GET /node/ledger/chunk/{name}` on the node channel), checks
/// it, and serves every entry and receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_chunk_comes_back_from_another_node_when_the_archive_cannot_give_it() {
    let archive = tempfile::tempdir().unwrap();
    let url = format!("file://{}", archive.path().display());
    let c = Cluster::start_placed(2, &["--chunk-size", "4096", "--archive", &url], |i| {
        // Only node 1 keeps a retention: `sh -c` adds the flag after the harness's arguments.
        let prefix = if i == 1 {
            ["sh", "-c", r#"exec "$0" "$@" --retain-transactions 50"#]
                .map(String::from)
                .to_vec()
        } else {
            Vec::new()
        };
        (prefix, "127.0.0.1:0".into())
    })
    .await;
    c.wait_voters(2).await;
    let ids = harness::append_many(&[c.admin(0)], 300, 8).await;
    c.admin(1)
        .wait_until_durable(ids.last().unwrap(), None)
        .await
        .unwrap();
    let http = c.https_client(None); // /metrics needs no credential
    let metric = |name: &'static str| {
        let (http, endpoint) = (http.clone(), c.nodes[1].endpoint.clone());
        async move { harness::metric(&http, &endpoint, name).await.unwrap_or(0.0) }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric("vellum_ledger_chunks_dropped_total").await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "node 1 dropped nothing:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The archive loses everything; node 0 (no retention) still holds every chunk.
    for e in std::fs::read_dir(archive.path()).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let cert = c.service_cert();
    for txid in &ids {
        let e = c
            .admin(1)
            .get_ledger_entry(Some(GetLedgerEntryOptions {
                transaction_id: Some(txid.clone()),
                ..Default::default()
            }))
            .await
            .unwrap_or_else(|e| panic!("{txid}: {e}\n{}", c.logs()));
        assert!(!e.contents.is_empty());
        let r = c
            .admin(1)
            .get_transaction_receipt(txid, None)
            .await
            .unwrap();
        r.verify(&cert).unwrap();
    }
    assert!(metric("vellum_ledger_chunks_fetched_total").await >= 3.0);
    let logs = std::fs::read_to_string(&c.nodes[1].log).unwrap();
    let from_node0 = format!("127.0.0.1:{}", c.nodes[0].port);
    assert!(
        logs.lines()
            .any(|l| l.contains("fetched a dropped chunk back") && l.contains(&from_node0)),
        "{logs}"
    );
}

/// A node joining a service starts from its snapshot (issue 26): it fetches the primary's
/// checkpoint, the newest snapshot at or below it and only the chunks after the snapshot (and
/// genesis's), serves the oldest entry and its receipt at once by fetching chunks from the
/// other node, answers ranges over the past `IndexLoading` until it has indexed them in the
/// background and then exactly as the primary does, takes writes, and starts again after a
/// stop with what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_from_a_snapshot_and_serves_the_whole_history() {
    use futures_util::TryStreamExt;
    let mut c = Cluster::start(1, &["--chunk-size", "8192", "--snapshot-interval", "300"]).await;
    let mut ids = harness::append_many(&[c.admin(0)], 900, 8).await;
    let audit = |i: usize| AppendToLedgerOptions {
        sub_ledger_id: Some("audit".into()),
        wait_for_commit: i == 39,
        ..Default::default()
    };
    let mut audit_ids = Vec::new();
    for i in 0..40 {
        let r = c
            .admin(0)
            .append_to_ledger(&format!("audit {i}"), Some(audit(i)))
            .await
            .unwrap();
        audit_ids.push(r.transaction_id);
    }
    // Wait for a committed snapshot past the first writes.
    let snapshots = c.nodes[0].data.join("snapshots");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&snapshots)
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no snapshot:\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids.extend(harness::append_many(&[c.admin(0)], 200, 8).await);

    c.join_with_token(0).await;
    c.wait_voters(2).await;
    let log = std::fs::read_to_string(&c.nodes[1].log).unwrap();
    assert!(
        log.contains("starting from the service's snapshot")
            && log.contains("seeded the index from the snapshot"),
        "{log}"
    );
    // What it fetched to start: a few chunks of the many node 0 holds.
    let fetched: usize = log
        .lines()
        .find(|l| l.contains("starting from the service's snapshot"))
        .and_then(|l| l.split("chunks=").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    let all = std::fs::read_dir(c.nodes[0].data.join("ledger"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().ends_with(".committed")
        })
        .count();
    println!("the joining node started with {fetched} of {all} committed chunks");
    assert!(fetched < all / 2, "{fetched} of {all}");

    // The oldest entry and its receipt, at once; and a write through the new node.
    let cert = c.service_cert();
    let joined = c.admin(1);
    for txid in [&ids[0], &ids[1], &audit_ids[0]] {
        joined
            .get_transaction_receipt(txid, None)
            .await
            .unwrap_or_else(|e| panic!("{txid}: {e}\n{}", c.logs()))
            .verify(&cert)
            .unwrap();
    }
    let first = joined
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            transaction_id: Some(ids[0].clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(first.contents.starts_with("bulk "), "{}", first.contents);
    let latest = joined
        .get_ledger_entry(Some(GetLedgerEntryOptions {
            sub_ledger_id: Some("audit".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(latest.contents, "audit 39");
    let mut subs = joined.list_sub_ledgers(None).await.unwrap();
    subs.sort();
    assert!(subs.contains(&"audit".to_owned()), "{subs:?}");
    let written = harness::append_durably(&joined, "through the new node").await;

    // Ranges over the past: the same as the primary's once indexed (IndexLoading until then).
    let last_audit = audit_ids[39].clone();
    let range = |client: ConfidentialLedgerClient| {
        let to = last_audit.clone();
        async move {
            client
                .get_ledger_entries(Some(vellum_client::GetLedgerEntriesOptions {
                    sub_ledger_id: Some("audit".into()),
                    to_transaction_id: Some(to),
                    ..Default::default()
                }))
                .map_ok(|e| (e.transaction_id, e.contents))
                .try_collect::<Vec<_>>()
                .await
        }
    };
    let expected = range(c.admin(0)).await.unwrap();
    assert_eq!(expected.len(), 40);
    if let Some([from, to]) = c.admin(1).node_health(None).await.unwrap().indexing {
        assert!(
            from >= 1 && to < ids.len() as u64 + 100,
            "indexing {from}..{to}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match range(c.admin(1)).await {
            Ok(got) => {
                assert_eq!(got, expected);
                break;
            }
            Err(e) => {
                assert!(
                    e.to_string().contains("IndexLoading") && Instant::now() < deadline,
                    "{e}\n{}",
                    c.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    assert_eq!(c.admin(1).node_health(None).await.unwrap().indexing, None);

    // It starts again from what it has.
    c.stop(1);
    c.restart(1).await;
    let again = c.admin(1);
    again
        .get_transaction_receipt(&ids[ids.len() / 2], None)
        .await
        .unwrap()
        .verify(&cert)
        .unwrap();
    again.wait_until_durable(&written, None).await.unwrap();
    assert_eq!(range(again.clone()).await.unwrap(), expected);
    let dirs = c.stop_all();
    harness::assert_identical_chunks(&dirs);
}

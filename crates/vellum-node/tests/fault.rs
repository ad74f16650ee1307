//! Fault test through the full node path: the ledger directory sits on a small tmpfs that runs
//! out of space under sustained writes. The node stops acknowledging writes (every later write
//! fails promptly, none hangs), logs why, and keeps serving reads: every write reported
//! Committed before the fault is still readable, with its receipt. Then space is freed and the
//! node restarted: it takes writes again, in a new view, and every id it answered before the
//! fault is that write's or Invalid, never Committed for another write.
//!
//! Needs root (mount); skipped otherwise unless VELLUM_REQUIRE_FAULT_TESTS=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vellum_core::status::TxStatus;
use vellum_node::{LedgerNode, NodeConfig};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_stops_writes_not_reads() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k,mode=700", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("VELLUM_REQUIRE_FAULT_TESTS").map_or(true, |v| v != "1"),
            "cannot mount a tmpfs for the fault test"
        );
        eprintln!("SKIPPED: cannot mount tmpfs (needs root)");
        return;
    }
    let _guard = Unmount(mnt.clone());
    // Room the test frees after the fault.
    std::fs::write(mnt.join("filler"), vec![1u8; 96 * 1024]).unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&mnt, data.join("ledger")).unwrap();

    let node = Arc::new(LedgerNode::start(NodeConfig::new(&data)).await.unwrap());
    let big = "x".repeat(6000);
    let mut committed = Vec::new();
    let mut answered = Vec::new();
    let mut failed = None;
    for i in 0..10_000 {
        let contents = format!("{i} {big}");
        let t = match node.append("c", &contents).await {
            Ok(t) => t,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        answered.push((t, contents.clone()));
        // A write may get its id and then meet the full disk before it is durable: the node
        // then stops, and waiting for it says so.
        match node.wait_committed(t, Duration::from_secs(5)).await {
            Ok(TxStatus::Committed) => committed.push((t, contents)),
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("the tmpfs never filled up");
    println!("after {} committed writes: {failed}", committed.len());
    assert!(committed.len() > 10);
    // Every later write fails, promptly.
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(5), node.append("c", "small")).await;
        assert!(
            matches!(r, Ok(Err(_))),
            "a write after the fault did not fail: {r:?}"
        );
    }
    let why = node.write_error().expect("the node says why it stopped");
    assert!(why.contains("No space left"), "{why}");
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("ERROR") && logged.contains("No space left"),
        "the log does not say why: {logged}"
    );
    // Reads go on: every committed write, its status and its receipt.
    for (t, contents) in &committed {
        assert_eq!(node.status(*t), TxStatus::Committed);
        assert_eq!(&node.entry(*t).unwrap().unwrap().contents, contents);
        node.receipt(*t)
            .unwrap()
            .receipt
            .verify(&node.service_cert_pem(), None)
            .unwrap();
    }
    // Space freed, node restarted: writes go on in a new view.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let old_view = committed.last().map_or(2, |(t, _)| t.view);
    let node = Arc::try_unwrap(node).expect("node still shared");
    let _ = node.shutdown().await;
    let node = LedgerNode::start(NodeConfig::new(&data)).await.unwrap();
    let t = node.append("c", "after the restart").await.unwrap();
    assert_eq!(
        node.wait_committed(t, Duration::from_secs(10))
            .await
            .unwrap(),
        TxStatus::Committed
    );
    assert!(t.view > old_view, "{t} is in the view of before the fault");
    let (mut kept, mut lost) = (0, 0);
    for (t, contents) in &answered {
        match node.status(*t) {
            TxStatus::Committed => {
                let e = node.entry(*t).unwrap();
                assert_eq!(
                    e.map(|e| e.contents).as_ref(),
                    Some(contents),
                    "{t} holds another write"
                );
                kept += 1;
            }
            TxStatus::Invalid => lost += 1,
            s => panic!("{t} is {s:?} after a later write committed"),
        }
    }
    println!("after the restart: {kept} answered ids kept, {lost} Invalid");
    for (t, _) in &committed {
        assert_eq!(node.status(*t), TxStatus::Committed);
    }
    node.shutdown().await.unwrap();
}

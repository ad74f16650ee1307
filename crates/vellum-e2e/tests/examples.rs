//! Every program in `crates/vellum-client/examples/` runs against a real local node (one node,
//! the examples one after another, as a user would run them) and exits successfully.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use vellum_node::testing::TestServer;

const EXAMPLES: &[&str] = &[
    "getting_started",
    "append",
    "receipt",
    "sub_ledgers",
    "ranged_query",
    "users",
    "certificate_auth",
    "service_details",
    "async_api",
    "troubleshooting",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_against_a_local_node() {
    // Build the examples (nothing to do when `cargo test --workspace` already built them).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let build = tokio::task::spawn_blocking({
        let root = root.clone();
        move || {
            Command::new(cargo)
                .args([
                    "build",
                    "-q",
                    "--locked",
                    "-p",
                    "vellum-client",
                    "--examples",
                ])
                .current_dir(root)
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(build.success(), "building the examples failed");
    // Examples sit next to the test binary's directory: target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let srv = TestServer::start(3).await;
    for name in EXAMPLES {
        let bin = profile_dir.join("examples").join(name);
        assert!(bin.exists(), "{} not built", bin.display());
        let mut cmd = Command::new(&bin);
        cmd.env("VELLUM_ENDPOINT", &srv.endpoint)
            .env("VELLUM_DATA", srv.dir.path())
            .env("VELLUM_LEDGER_ID", &srv.ledger_id);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "example {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("example {name}: ok");
    }
    srv.stop().await;
}

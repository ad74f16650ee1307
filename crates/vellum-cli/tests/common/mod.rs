//! Helpers shared by the CLI's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `vellum serve --listen 127.0.0.1:0 --data-dir DATA EXTRA...` and reads its
/// announcement: returns the process, the endpoint, and the announcement lines after the first
/// (where the service certificate, admin credential and data directory are).
pub fn start_serve(data: &Path, extra: &[&str]) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (endpoint, rest) = announcement(&mut child);
    (child, endpoint, rest)
}

/// Reads the announcement of a `vellum serve` started with its stdout piped: the endpoint and
/// the lines after the first. Stdout keeps being drained so the server never blocks on a full
/// pipe.
pub fn announcement(child: &mut Child) -> (String, Vec<String>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let endpoint = first
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no endpoint in {first:?}"))
        .to_owned();
    let rest = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    std::thread::spawn(move || for _ in lines {});
    (endpoint, rest)
}

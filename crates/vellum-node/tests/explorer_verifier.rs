//! The explorer's receipt verifier (`src/server/explorer/verify.js`, run here by Node.js with
//! its WebCrypto) agrees with Vellum's own (`vellum_core::receipt`, what `vellum receipt
//! --verify` runs): the same verdict on the five receipt vectors of `acl-rest-api.md`, on fresh
//! receipts written by Vellum's engine (P-384), and on every single-field tampering of each
//! (leaf components, each proof step, the signature, the node certificate, the node id, each
//! service endorsement, the service certificate). Application claims are compared apart: the
//! page shows them, the receipt check here is the receipt's own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Case {
    name: String,
    receipt: Value,
    service_cert: String,
}

fn flip_hex(s: &str, at: usize) -> String {
    let mut c: Vec<char> = s.chars().collect();
    let i = at % c.len();
    c[i] = if c[i] == '0' { '1' } else { '0' };
    c.into_iter().collect()
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(body).unwrap()
}

fn der_pem(der: &[u8]) -> String {
    vellum_core::crypto::der_to_pem("CERTIFICATE", der)
}

fn flip_pem(pem: &str, at: usize) -> String {
    let mut der = pem_der(pem);
    let i = at % der.len();
    der[i] ^= 0x01;
    der_pem(&der)
}

/// The key in either spelling.
fn key(obj: &Value, camel: &str) -> String {
    let snake: String = camel
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['_', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect();
    if obj.get(camel).is_some() {
        camel.to_owned()
    } else {
        snake
    }
}

/// Every single-field tampering of `c`.
fn tampers(c: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    let mut push = |what: String, receipt: Value, service_cert: String| {
        out.push(Case {
            name: format!("{} / {what}", c.name),
            receipt,
            service_cert,
        });
    };
    let r = &c.receipt;
    let lc_key = key(r, "leafComponents");
    if let Some(lc) = r.get(&lc_key) {
        for f in ["writeSetDigest", "claimsDigest", "commitEvidence"] {
            let k = key(lc, f);
            let v = lc[&k].as_str().unwrap();
            for at in [0, 17, v.len() - 1] {
                let mut t = r.clone();
                t[&lc_key][&k] = json!(flip_hex(v, at));
                push(format!("{f}[{at}]"), t, c.service_cert.clone());
            }
        }
    }
    for (i, step) in r["proof"].as_array().unwrap().iter().enumerate() {
        let side = if step.get("left").is_some() {
            "left"
        } else {
            "right"
        };
        let mut t = r.clone();
        t["proof"][i][side] = json!(flip_hex(step[side].as_str().unwrap(), 5));
        push(format!("proof[{i}]"), t.clone(), c.service_cert.clone());
        // The same hash on the other side.
        let mut t = r.clone();
        let other = if side == "left" { "right" } else { "left" };
        t["proof"][i] = json!({ other: step[side] });
        push(format!("proof[{i}] side"), t, c.service_cert.clone());
    }
    let sig = B64.decode(r["signature"].as_str().unwrap()).unwrap();
    for at in [0, 5, sig.len() / 2, sig.len() - 1] {
        let mut s = sig.clone();
        s[at] ^= 0x01;
        let mut t = r.clone();
        t["signature"] = json!(B64.encode(&s));
        push(format!("signature[{at}]"), t, c.service_cert.clone());
    }
    let cert = r["cert"].as_str().unwrap();
    let len = pem_der(cert).len();
    for at in [30, len / 2, len - 40, len - 2] {
        let mut t = r.clone();
        t["cert"] = json!(flip_pem(cert, at));
        push(format!("cert[{at}]"), t, c.service_cert.clone());
    }
    let id_key = key(r, "nodeId");
    if let Some(id) = r.get(&id_key).and_then(Value::as_str) {
        let mut t = r.clone();
        t[&id_key] = json!(flip_hex(id, 9));
        push("nodeId".into(), t, c.service_cert.clone());
    }
    let se_key = key(r, "serviceEndorsements");
    if let Some(list) = r.get(&se_key).and_then(Value::as_array) {
        for (i, pem) in list.iter().enumerate() {
            let pem = pem.as_str().unwrap();
            let len = pem_der(pem).len();
            let mut t = r.clone();
            t[&se_key][i] = json!(flip_pem(pem, len / 2));
            push(
                format!("serviceEndorsements[{i}]"),
                t,
                c.service_cert.clone(),
            );
        }
    }
    let len = pem_der(&c.service_cert).len();
    for at in [len / 2, len - 2] {
        push(
            format!("service_cert[{at}]"),
            r.clone(),
            flip_pem(&c.service_cert, at),
        );
    }
    out
}

fn rust_verdict(c: &Case) -> bool {
    vellum_core::receipt::Receipt::from_json(&c.receipt)
        .and_then(|r| r.verify(&c.service_cert, None))
        .is_ok()
}

#[test]
fn the_explorers_verifier_agrees_with_vellums_on_vectors_fresh_receipts_and_every_tamper() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: Node.js is not installed (the CI installs it)");
        return;
    }
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vellum-core/tests/data");
    let mut cases = Vec::new();
    for v in ["a", "b", "c", "d", "e"] {
        let text = std::fs::read_to_string(data.join(format!("receipt_vector_{v}.json"))).unwrap();
        let v2: Value = serde_json::from_str(&text).unwrap();
        cases.push(Case {
            name: format!("vector {v}"),
            receipt: v2["response"]["receipt"].clone(),
            service_cert: v2["service_cert"].as_str().unwrap().to_owned(),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let sample = vellum_ledger::sample::write_sample(
        &dir.path().join("sample"),
        &vellum_ledger::sample::SampleOptions {
            entries: 6,
            ..Default::default()
        },
    )
    .unwrap();
    for r in &sample.receipts {
        cases.push(Case {
            name: format!("fresh {}", r.txid),
            receipt: r.response["receipt"].clone(),
            service_cert: sample.service_cert_pem.clone(),
        });
    }
    let originals = cases.len();
    let tampered: Vec<Case> = cases.iter().flat_map(tampers).collect();
    cases.extend(tampered);
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"receipt": c.receipt, "serviceCert": c.service_cert}))
        .collect();
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&input).unwrap()).unwrap();
    let verify_js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/server/explorer/verify.js");
    let runner = dir.path().join("run.mjs");
    std::fs::write(
        &runner,
        format!(
            r#"import {{ verifyReceipt }} from {url:?};
import fs from "node:fs";
const cases = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = [];
for (const c of cases) out.push(await verifyReceipt(c.receipt, c.serviceCert));
process.stdout.write(JSON.stringify(out));
"#,
            url = format!("file://{}", verify_js.display())
        ),
    )
    .unwrap();
    let run = Command::new("node")
        .arg(&runner)
        .arg(&cases_file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let verdicts: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(verdicts.len(), cases.len());
    let mut disagreements = Vec::new();
    for (i, (c, v)) in cases.iter().zip(&verdicts).enumerate() {
        let js = v["ok"].as_bool().unwrap();
        let rust = rust_verdict(c);
        if i < originals {
            assert!(rust && js, "{} does not verify: {v}", c.name);
        }
        if js != rust {
            disagreements.push(format!(
                "{}: Vellum {rust}, explorer {js} ({})",
                c.name, v["error"]
            ));
        }
        if !js {
            // A failure names the step that failed.
            let step = v["steps"].as_array().unwrap().last().unwrap();
            assert_eq!(step["ok"], json!(false), "{}: {v}", c.name);
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    let rejected = verdicts.iter().filter(|v| v["ok"] == json!(false)).count();
    println!(
        "{} receipts ({originals} genuine), {rejected} rejected by both verifiers",
        cases.len()
    );
    assert!(rejected > 200, "only {rejected} tampers");
}

//! Interop: governance requests signed by CCF's own member tool (`ccf_cose_sign1` from the
//! `ccf` 7.0.22 Python package) are read and verified by `vellum_core::gov`, and requests
//! signed by Vellum are accepted by the `ccf` package's COSE verifier. Tampered, misattributed
//! and incomplete envelopes are refused.
//!
//! Needs a Python with `ccf` (see `python_interop.rs`): without one the test says so and
//! passes, unless `VELLUM_REQUIRE_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use vellum_core::crypto::Certificate;
use vellum_core::gov::{Envelope, GovError, MsgType};
use vellum_ledger::identity::Identity;

use common::{interop_required, python};

/// `ccf_cose_sign1` next to the Python that has the `ccf` package.
fn ccf_sign(
    py: &Path,
    dir: &Path,
    member: &Identity,
    msg_type: &str,
    proposal_id: Option<&str>,
    content: &[u8],
) -> Vec<u8> {
    let tool = py.parent().unwrap().join("ccf_cose_sign1");
    std::fs::write(dir.join("cert.pem"), &member.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), member.key_pem()).unwrap();
    std::fs::write(dir.join("content"), content).unwrap();
    let mut cmd = Command::new(tool);
    cmd.arg("--content")
        .arg(dir.join("content"))
        .arg("--signing-cert")
        .arg(dir.join("cert.pem"))
        .arg("--signing-key")
        .arg(dir.join("key.pem"))
        .args(["--ccf-gov-msg-type", msg_type])
        .args(["--ccf-gov-msg-created_at", "2026-12-05T10:00:00+00:00"]);
    if let Some(id) = proposal_id {
        cmd.args(["--ccf-gov-msg-proposal_id", id]);
    }
    let out = cmd.output().expect("run ccf_cose_sign1");
    assert!(
        out.status.success(),
        "ccf_cose_sign1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn member_envelopes_cross_between_ccf_tools_and_vellum() {
    let required = interop_required();
    let Some(py) = python() else {
        assert!(!required, "VELLUM_REQUIRE_INTEROP=1 but no Python with ccf");
        eprintln!("SKIPPED: no Python with ccf (run scripts/test.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let member = Identity::client("member0", now, 30).unwrap();
    let other = Identity::client("member1", now, 30).unwrap();
    let cert = Certificate::from_pem(&member.cert_pem).unwrap();
    let created_at = 1_796_464_800; // 2026-12-05T10:00:00Z

    // CCF's tool signs; Vellum reads and verifies.
    let proposal = br#"{"actions": [{"name": "set_constitution", "args": {"constitution": "x"}}]}"#;
    let bytes = ccf_sign(&py, dir.path(), &member, "proposal", None, proposal);
    let e = Envelope::parse(&bytes).unwrap();
    assert_eq!(e.msg_type, MsgType::Proposal);
    assert_eq!(e.kid, cert.id());
    assert_eq!(e.alg, -35);
    assert_eq!(e.created_at, created_at);
    assert_eq!(e.proposal_id, None);
    assert_eq!(e.payload, proposal);
    e.verify(&cert).unwrap();
    // Checked against another member's certificate: not theirs.
    let other_cert = Certificate::from_pem(&other.cert_pem).unwrap();
    assert!(matches!(e.verify(&other_cert), Err(GovError::Kid { .. })));
    // A changed payload or signature does not verify.
    let mut forged = e.clone();
    forged.payload[3] ^= 1;
    assert_eq!(forged.verify(&cert), Err(GovError::Signature));
    let mut forged = e.clone();
    forged.signature[10] ^= 1;
    assert_eq!(forged.verify(&cert), Err(GovError::Signature));
    // The other member's tool-signed envelope claiming the first member's id.
    let theirs = ccf_sign(&py, dir.path(), &other, "proposal", None, proposal);
    let mut claimed = Envelope::parse(&theirs).unwrap();
    claimed.kid = cert.id();
    assert_eq!(claimed.verify(&cert), Err(GovError::Signature));

    // Every message type the tool signs, with the proposal id where one is named.
    let pid = "a".repeat(64);
    for (kind, msg, id) in [
        ("ballot", MsgType::Ballot, Some(pid.as_str())),
        ("withdrawal", MsgType::Withdrawal, Some(pid.as_str())),
        ("ack", MsgType::Ack, None),
        ("state_digest", MsgType::StateDigest, None),
    ] {
        let body = br#"{"ballot": "export function vote (proposal, proposerId) { return true }"}"#;
        let bytes = ccf_sign(&py, dir.path(), &member, kind, id, body);
        let e = Envelope::parse(&bytes).unwrap();
        assert_eq!((e.msg_type, e.proposal_id.as_deref()), (msg, id), "{kind}");
        e.verify(&cert).unwrap();
    }

    // Vellum signs; CCF's verifier (the `cwt` library under `ccf.cose`) accepts it.
    let signed = Envelope::sign(
        MsgType::Ballot,
        created_at,
        Some(&pid),
        b"{\"ballot\": \"export function vote() { return true }\"}",
        &member.signing_key,
        &cert,
    )
    .unwrap();
    Envelope::parse(&signed).unwrap().verify(&cert).unwrap();
    std::fs::write(dir.path().join("signed.cose"), &signed).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &member.cert_pem).unwrap();
    let check = format!(
        "import ccf.cose, cbor2, sys\n\
         cert = open(sys.argv[2], 'rb').read()\n\
         data = open(sys.argv[1], 'rb').read()\n\
         ccf.cose.verify_cose_sign1_with_cert(cert, data, use_key=False)\n\
         phdr = cbor2.loads(cbor2.loads(data).value[0])\n\
         assert phdr['ccf.gov.msg.type'] == 'ballot', phdr\n\
         assert phdr['ccf.gov.msg.proposal_id'] == '{pid}', phdr\n\
         assert phdr['ccf.gov.msg.created_at'] == {created_at}, phdr\n\
         assert phdr[4] == b'{}', phdr\n\
         print('ok')\n",
        cert.id()
    );
    let out = Command::new(&py)
        .args(["-c", &check])
        .arg(dir.path().join("signed.cose"))
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "ccf rejected Vellum's envelope: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Shapes CCF refuses are refused before any key is looked up.
    let bad = |msg: MsgType, id: Option<&str>, payload: Option<&[u8]>| {
        let mut b = Envelope::sign(
            msg,
            created_at,
            id,
            payload.unwrap_or(b"{}"),
            &member.signing_key,
            &cert,
        )
        .unwrap();
        if payload.is_none() {
            // Detach the payload: nil in its place.
            let v: ciborium::Value = ciborium::from_reader(b.as_slice()).unwrap();
            let ciborium::Value::Tag(t, inner) = v else {
                panic!()
            };
            let ciborium::Value::Array(mut items) = *inner else {
                panic!()
            };
            items[2] = ciborium::Value::Null;
            b.clear();
            ciborium::into_writer(
                &ciborium::Value::Tag(t, Box::new(ciborium::Value::Array(items))),
                &mut b,
            )
            .unwrap();
        }
        Envelope::parse(&b)
    };
    assert!(matches!(
        bad(MsgType::Ballot, None, Some(b"{}")),
        Err(GovError::Header(h)) if h.contains("proposal_id")
    ));
    assert!(matches!(
        bad(MsgType::Proposal, None, None),
        Err(GovError::Malformed(m)) if m.contains("detached")
    ));
    assert!(matches!(
        Envelope::parse(b"\xd2\x84\x40\xa0\x40\x40"),
        Err(GovError::Header(h)) if h.contains("alg")
    ));
    assert!(matches!(
        Envelope::parse(b"not cbor"),
        Err(GovError::Malformed(_))
    ));
    // Untagged: CCF refuses it ("COSE_Sign1 is not tagged").
    assert!(matches!(
        Envelope::parse(&signed[1..]),
        Err(GovError::Malformed(m)) if m.contains("not tagged")
    ));
}

//! Ledgers and receipts written by Vellum: the auditor accepts them, receipts verify with
//! both verifiers, and every single flipped byte is caught and named when the ledger secret is
//! given (without it, only the final signature's GCM tag and commit-evidence digest escape).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::time::SystemTime;

use vellum_core::crypto::Certificate;
use vellum_core::receipt::{ApplicationClaim, Receipt, ReceiptError, verify_cose_receipt};
use vellum_ledger::chunk::{Chunk, list_chunks};
use vellum_ledger::sample::{SampleOptions, write_sample};
use vellum_ledger::{AuditOptions, audit_chunks, audit_dir};

fn small() -> SampleOptions {
    SampleOptions {
        entries: 7,
        signature_interval: 3,
        chunk_size: 4096,
        now: SystemTime::now(),
        legacy_versions: false,
        rekeys: 0,
    }
}

#[test]
fn sample_ledger_audits_clean() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_sample(dir.path(), &SampleOptions::default()).unwrap();
    let r = audit_dir(&s.ledger_dir, &AuditOptions::default(), |_| {}).unwrap();
    assert_eq!(r.transactions, s.transactions);
    assert_eq!(r.signatures, s.signatures);
    assert_eq!(r.cose_signatures, s.signatures);
    assert_eq!(r.unsigned_tail, 0);
    let with_secret = AuditOptions {
        ledger_secret: Some(s.ledger_secret.clone()),
        ..Default::default()
    };
    let r = audit_dir(&s.ledger_dir, &with_secret, |_| {}).unwrap();
    assert!(r.secret_checked);
    // Every application entry's claim (half with a key, half without, as old ledgers) is the
    // one its transaction's claims digest commits to.
    assert_eq!(r.claims_checked, 20);
    // Several chunks, each ending on a signature.
    assert!(list_chunks(&s.ledger_dir, true).unwrap().len() >= 3);
}

#[test]
fn sample_receipts_verify_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_sample(dir.path(), &SampleOptions::default()).unwrap();
    assert_eq!(s.receipts.len(), 20);
    let service_key = Certificate::from_pem(&s.service_cert_pem)
        .unwrap()
        .public_key()
        .unwrap();
    for r in &s.receipts {
        let receipt = Receipt::from_json(&r.response["receipt"]).unwrap();
        let claims: Option<Vec<ApplicationClaim>> = r
            .response
            .get("applicationClaims")
            .map(|c| serde_json::from_value(c.clone()).unwrap());
        receipt
            .verify(&s.service_cert_pem, claims.as_deref())
            .unwrap();
        assert_eq!(receipt.txid(), Some(r.txid));
        let (_, leaf) = verify_cose_receipt(&r.cose, &service_key, Some(&r.claims_digest)).unwrap();
        assert_eq!(leaf.claims_digest, r.claims_digest);
        // Tampered COSE receipt: flip a byte in the proof or the signature.
        for at in [r.cose.len() - 1, r.cose.len() - 120, r.cose.len() / 2] {
            let mut c = r.cose.clone();
            c[at] ^= 0x01;
            assert!(
                verify_cose_receipt(&c, &service_key, Some(&r.claims_digest)).is_err(),
                "cose byte {at}"
            );
        }
        // Another service's certificate.
        let other =
            vellum_ledger::identity::Identity::service("Other", SystemTime::now(), 1).unwrap();
        assert!(matches!(
            receipt.verify(&other.cert_pem, None),
            Err(ReceiptError::Endorsement { index: 0, .. })
        ));
        assert!(verify_cose_receipt(&r.cose, &other.signing_key.public_key(), None).is_err());
    }
}

#[test]
fn every_flipped_byte_is_caught_and_named_with_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_sample(dir.path(), &small()).unwrap();
    let files: Vec<_> = list_chunks(&s.ledger_dir, true)
        .unwrap()
        .into_iter()
        .map(|(n, p)| {
            let b = std::fs::read(&p).unwrap();
            (n, p, b)
        })
        .collect();
    let opts = AuditOptions {
        ledger_secret: Some(s.ledger_secret.clone()),
        ..Default::default()
    };
    let no_secret = AuditOptions::default();
    let last_seqno = files.last().unwrap().0.end.unwrap();
    // Every byte with VELLUM_HEAVY=1 or VELLUM_FLIP_EVERY_BYTE=1 (scripts/test.sh sets the
    // first); otherwise every 11th byte and every byte of the final signature's fixed fields
    // and table headers.
    let every = ["VELLUM_HEAVY", "VELLUM_FLIP_EVERY_BYTE"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| v == "1"));
    let mut flips = 0;
    for (fi, (name, path, bytes)) in files.iter().enumerate() {
        let chunk = Chunk::parse(bytes, Some(name)).unwrap();
        let owner = |p: usize| {
            chunk
                .entries
                .iter()
                .enumerate()
                .find(|(_, e)| {
                    (e.offset as usize..e.offset as usize + e.entry.bytes.len()).contains(&p)
                })
                .map(|(i, e)| (name.start + i as u64, p - e.offset as usize))
        };
        let last_entry = chunk.entries.last().map_or(0, |e| e.offset as usize);
        let is_last_file = fi + 1 == files.len();
        for p in (0..bytes.len()).filter(|p| {
            every || p % 11 == 0 || (is_last_file && (last_entry..last_entry + 260).contains(p))
        }) {
            let mut copy: Vec<_> = files
                .iter()
                .map(|(n, p, b)| (n.clone(), p.clone(), Ok(b.clone())))
                .collect();
            if let Ok(b) = &mut copy[fi].2 {
                b[p] ^= 0xff;
            }
            let total = 0;
            let e = audit_chunks(copy.clone(), total, &opts, |_| {})
                .expect_err(&format!("{} byte {p}", path.display()));
            flips += 1;
            match owner(p) {
                Some((seqno, _)) => {
                    assert_eq!(e.seqno, Some(seqno), "{} byte {p}: {e}", path.display())
                }
                None => assert_eq!(e.file.as_deref(), Some(path.as_path()), "byte {p}: {e}"),
            }
            // Without the secret, only flips in the final signature (which no signature covers)
            // can escape, and exactly those CCF's verifier lets pass (audit_differential.rs).
            if audit_chunks(copy, total, &no_secret, |_| {}).is_ok() {
                let (seqno, within) = owner(p).unwrap();
                assert_eq!(seqno, last_seqno, "byte {within} of {seqno}");
            }
        }
    }
    println!("{flips} flips, all caught");
}

/// A ledger rekeyed twice: with only its latest secret, the auditor walks the rekey records
/// back and checks every GCM tag and commit evidence; the first secret alone does not open
/// the history.
#[test]
fn a_rekeyed_ledger_audits_with_its_latest_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_sample(
        dir.path(),
        &SampleOptions {
            entries: 30,
            rekeys: 2,
            ..small()
        },
    )
    .unwrap();
    let opts = AuditOptions {
        ledger_secret: Some(s.ledger_secret.clone()),
        ..Default::default()
    };
    let r = audit_dir(&s.ledger_dir, &opts, |_| {}).unwrap();
    assert!(r.secret_checked);
    assert_eq!(r.transactions, s.transactions);
    assert!(r.claims_checked > 0);
    let other = vellum_core::entry::LedgerSecret::from_bytes([1; 32]);
    let err = audit_dir(
        &s.ledger_dir,
        &AuditOptions {
            ledger_secret: Some(other),
            ..Default::default()
        },
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("rekey history"), "{err}");
}

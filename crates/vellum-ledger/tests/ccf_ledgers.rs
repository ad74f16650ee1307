//! The auditor against real ledgers written by CCF.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use vellum_ledger::{AuditOptions, audit_dir};

use common::ccf_ledger as testdata;

const SERVICES: [(&str, u64, u64); 4] = [
    // (service, committed transactions, committed signatures)
    ("acme_containing_service", 20, 7),
    ("cose_flipflop_service", 46, 23),
    ("double_sealed_service", 505, 154),
    ("expired_service", 61, 21),
];

#[test]
fn real_ccf_ledgers_pass() {
    for (svc, txs, sigs) in SERVICES {
        let r = audit_dir(&testdata(svc), &AuditOptions::default(), |_| {})
            .unwrap_or_else(|e| panic!("{svc}: {e}"));
        println!("{svc}: {r:?}");
        if txs > 0 {
            assert_eq!(r.transactions, txs, "{svc}");
            assert_eq!(r.signatures, sigs, "{svc}");
        }
        assert_eq!(
            r.unsigned_tail, 0,
            "{svc}: committed chunks end on signatures"
        );
    }
}

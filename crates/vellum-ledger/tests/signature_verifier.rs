//! The one signature verifier (`vellum_core::signature`), as replicas and the auditor use it:
//! a node's signature and the service's COSE signature verify over the root they sign, under
//! both rule sets, and over nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::time::SystemTime;

use vellum_core::cose::{self, CwtClaims};
use vellum_core::signature::{
    CoseRules, NodeSignature, RootSignatureError, verify_node_signature, verify_service_signature,
};
use vellum_core::{Hash, TxId};
use vellum_ledger::identity::Identity;

#[test]
fn node_and_service_signatures_verify_over_their_root_only() {
    let now = SystemTime::now();
    let service = Identity::service("verifier test", now, 1).unwrap();
    let node = service
        .issue_node("node", &["localhost"], &[], now, 1)
        .unwrap();
    let root = Hash([7u8; 32]);
    let other = Hash([8u8; 32]);
    let txid = TxId::new(2, 15);

    let sig_der = node.signing_key.sign_prehash_der(&root).unwrap();
    let node_id = node.signing_key.public_key().id();
    let sig = NodeSignature {
        cert: &node.cert,
        node_id: Some(&node_id),
        sig_der: &sig_der,
    };
    verify_node_signature(&root, &sig).unwrap();
    assert!(matches!(
        verify_node_signature(&other, &sig),
        Err(RootSignatureError::NodeSignature(_))
    ));
    let wrong_id = "00".repeat(32);
    let claims_other = NodeSignature {
        node_id: Some(&wrong_id),
        ..sig
    };
    assert_eq!(
        verify_node_signature(&root, &claims_other),
        Err(RootSignatureError::NodeId)
    );
    // Without a claimed id (the auditor: CCF looks certificates up by id), the key decides.
    verify_node_signature(
        &root,
        &NodeSignature {
            node_id: None,
            ..sig
        },
    )
    .unwrap();
    let by_service = NodeSignature {
        cert: &service.cert,
        ..sig
    };
    assert!(verify_node_signature(&root, &by_service).is_err());

    let claims = CwtClaims {
        iat: 1_700_000_000,
        issuer: "vellum.local".into(),
        subject: "ledger.signature".into(),
    };
    let sign1 = cose::sign_root(&service.signing_key, txid, &root, &claims).unwrap();
    let service_key = service.signing_key.public_key();
    for rules in [CoseRules::AsWritten, CoseRules::AsCcf] {
        assert_eq!(
            verify_service_signature(&root, &sign1, &service_key, rules).unwrap(),
            txid,
            "{rules:?}"
        );
        assert!(
            verify_service_signature(&other, &sign1, &service_key, rules).is_err(),
            "{rules:?}"
        );
        let node_key = node.signing_key.public_key();
        assert!(
            verify_service_signature(&root, &sign1, &node_key, rules).is_err(),
            "{rules:?}"
        );
        let mut flipped = sign1.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            verify_service_signature(&root, &flipped, &service_key, rules).is_err(),
            "{rules:?}"
        );
    }
}

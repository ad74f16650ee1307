//! The five receipt vectors of `acl-rest-api.md` Appendix A (all accepted by the Azure SDK's
//! `verify_receipt`), and every single-field tampering of them rejected with a typed error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use base64::Engine as _;
use serde_json::Value;
use vellum_core::Hash;
use vellum_core::crypto::{CryptoError, der_to_pem};
use vellum_core::receipt::{ApplicationClaim, Receipt, ReceiptError, claims_digest};

struct Vector {
    name: &'static str,
    service_cert: String,
    receipt: Value,
    claims: Option<Vec<ApplicationClaim>>,
    expected_leaf: Hash,
    expected_root: Hash,
}

fn load(name: &'static str, text: &str) -> Vector {
    let v: Value = serde_json::from_str(text).unwrap();
    Vector {
        name,
        service_cert: v["service_cert"].as_str().unwrap().to_owned(),
        receipt: v["response"]["receipt"].clone(),
        claims: v["response"]
            .get("applicationClaims")
            .map(|c| serde_json::from_value(c.clone()).unwrap()),
        expected_leaf: v["expected"]["leaf"].as_str().unwrap().parse().unwrap(),
        expected_root: v["expected"]["root"].as_str().unwrap().parse().unwrap(),
    }
}

fn vectors() -> Vec<Vector> {
    vec![
        load("A", include_str!("data/receipt_vector_a.json")),
        load("B", include_str!("data/receipt_vector_b.json")),
        load("C", include_str!("data/receipt_vector_c.json")),
        load("D", include_str!("data/receipt_vector_d.json")),
        load("E", include_str!("data/receipt_vector_e.json")),
    ]
}

fn verify(v: &Vector, receipt: &Value, service_cert: &str) -> Result<(), ReceiptError> {
    Receipt::from_json(receipt)?.verify(service_cert, v.claims.as_deref())
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Key in either case convention.
fn key<'a>(obj: &'a Value, camel: &str, snake: &str) -> &'a str {
    if obj.get(camel).is_some() {
        camel
    } else {
        snake
    }
    .to_owned()
    .leak()
}

fn flip_hex(s: &str, at: usize) -> String {
    let mut b: Vec<u8> = s.bytes().collect();
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

#[test]
fn all_vectors_verify_with_expected_intermediates() {
    for v in vectors() {
        let r = Receipt::from_json(&v.receipt).unwrap();
        assert_eq!(r.leaf_hash().unwrap(), v.expected_leaf, "vector {}", v.name);
        assert_eq!(r.root().unwrap(), v.expected_root, "vector {}", v.name);
        r.verify(&v.service_cert, v.claims.as_deref())
            .unwrap_or_else(|e| panic!("vector {} must verify: {e}", v.name));
    }
}

#[test]
fn vector_d_claims_digest_and_claim_digest_form() {
    let v = &vectors()[3];
    let claims = v.claims.clone().unwrap();
    assert_eq!(
        claims_digest(&claims).unwrap().to_hex(),
        "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6"
    );
    let as_digest: Vec<ApplicationClaim> = serde_json::from_value(serde_json::json!([
        {"kind": "ClaimDigest", "digest": {"protocol": "LedgerEntryV1",
         "value": "feb516ef1f903c64f1e388d9ee9fde11f64d1e2bc170248828c9eab9894f9ab9"}}
    ]))
    .unwrap();
    let r = Receipt::from_json(&v.receipt).unwrap();
    r.verify(&v.service_cert, Some(&as_digest)).unwrap();
    // Other contents: the claims digest no longer matches.
    let mut wrong = claims.clone();
    if let ApplicationClaim::LedgerEntry { ledger_entry } = &mut wrong[0] {
        ledger_entry.contents = "Hello world!".into();
    }
    assert!(matches!(
        r.verify(&v.service_cert, Some(&wrong)),
        Err(ReceiptError::ClaimsDigestMismatch { .. })
    ));
}

#[test]
fn flipped_leaf_components_are_rejected() {
    for v in vectors() {
        let lc_key = key(&v.receipt, "leafComponents", "leaf_components");
        let lc = &v.receipt[lc_key];
        for (camel, snake) in [
            ("writeSetDigest", "write_set_digest"),
            ("claimsDigest", "claims_digest"),
            ("commitEvidence", "commit_evidence"),
        ] {
            let k = key(lc, camel, snake);
            let s = lc[k].as_str().unwrap();
            for at in [0, s.len() / 2, s.len() - 1] {
                let mut r = v.receipt.clone();
                r[lc_key][k] = Value::String(flip_hex(s, at));
                let err = verify(&v, &r, &v.service_cert).unwrap_err();
                let ok = if camel == "claimsDigest" && v.claims.is_some() {
                    matches!(err, ReceiptError::ClaimsDigestMismatch { .. })
                } else {
                    matches!(err, ReceiptError::Signature(CryptoError::BadSignature))
                };
                assert!(ok, "vector {} {camel}@{at}: {err:?}", v.name);
            }
        }
    }
}

#[test]
fn flipped_proof_steps_are_rejected() {
    for v in vectors() {
        let n = v.receipt["proof"].as_array().unwrap().len();
        for i in 0..n {
            let mut r = v.receipt.clone();
            let step = r["proof"][i].as_object_mut().unwrap();
            let (side, h) = step
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .unwrap();
            step.insert(side.clone(), Value::String(flip_hex(&h, 10)));
            assert!(matches!(
                verify(&v, &r, &v.service_cert),
                Err(ReceiptError::Signature(CryptoError::BadSignature))
            ));
            // The sibling on the other side, same hash: also rejected.
            let mut r = v.receipt.clone();
            let other = if side == "left" { "right" } else { "left" };
            r["proof"][i] = serde_json::json!({ other: h });
            assert!(verify(&v, &r, &v.service_cert).is_err());
            // Both or neither side: malformed.
            let mut r = v.receipt.clone();
            r["proof"][i] = serde_json::json!({ "left": h, "right": h });
            assert!(matches!(
                verify(&v, &r, &v.service_cert),
                Err(ReceiptError::ProofElement(_))
            ));
            let mut r = v.receipt.clone();
            r["proof"][i] = serde_json::json!({});
            assert!(matches!(
                verify(&v, &r, &v.service_cert),
                Err(ReceiptError::Invalid("proof"))
            ));
        }
        // Dropping a step or adding one changes the root.
        let mut r = v.receipt.clone();
        r["proof"].as_array_mut().unwrap().pop();
        assert!(verify(&v, &r, &v.service_cert).is_err());
    }
}

#[test]
fn flipped_signature_bytes_are_rejected() {
    for v in vectors() {
        let sig = base64::engine::general_purpose::STANDARD
            .decode(v.receipt["signature"].as_str().unwrap())
            .unwrap();
        for at in 0..sig.len() {
            let mut s = sig.clone();
            s[at] ^= 0x01;
            let mut r = v.receipt.clone();
            r["signature"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&s));
            let err = verify(&v, &r, &v.service_cert).unwrap_err();
            assert!(
                matches!(err, ReceiptError::Signature(_)),
                "vector {} sig byte {at}: {err:?}",
                v.name
            );
        }
    }
}

#[test]
fn flipped_certificate_bytes_are_rejected() {
    for v in vectors() {
        let node_der = pem_der(v.receipt["cert"].as_str().unwrap());
        for at in 0..node_der.len() {
            let mut d = node_der.clone();
            d[at] ^= 0x01;
            let mut r = v.receipt.clone();
            r["cert"] = Value::String(der_to_pem("CERTIFICATE", &d));
            let err = verify(&v, &r, &v.service_cert).err().unwrap_or_else(|| {
                panic!(
                    "vector {} node cert byte {at} of {} accepted",
                    v.name,
                    node_der.len()
                )
            });
            assert!(
                matches!(
                    err,
                    ReceiptError::NodeCertificate(_)
                        | ReceiptError::Endorsement { .. }
                        | ReceiptError::Signature(_)
                ),
                "vector {} node cert byte {at}: {err:?}",
                v.name
            );
        }
        let svc_der = pem_der(&v.service_cert);
        for at in 0..svc_der.len() {
            let mut d = svc_der.clone();
            d[at] ^= 0x01;
            let err = verify(&v, &v.receipt, &der_to_pem("CERTIFICATE", &d)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ReceiptError::ServiceCertificate(_) | ReceiptError::Endorsement { .. }
                ),
                "vector {} service cert byte {at}: {err:?}",
                v.name
            );
        }
    }
}

#[test]
fn sdk_negative_checks() {
    let vs = vectors();
    let (b, c) = (&vs[1], &vs[2]);
    // B with C's service certificate.
    assert!(matches!(
        verify(b, &b.receipt, &c.service_cert),
        Err(ReceiptError::Endorsement { index: 0, .. })
    ));
    // B with C's cert, nodeId, proof, signature or leaf components.
    let c_lc = c.receipt["leafComponents"].clone();
    for (field, value) in [
        ("cert", c.receipt["cert"].clone()),
        ("node_id", c.receipt["nodeId"].clone()),
        ("proof", c.receipt["proof"].clone()),
        ("signature", c.receipt["signature"].clone()),
        ("leaf_components", c_lc),
    ] {
        let mut r = b.receipt.clone();
        r[field] = value;
        assert!(
            verify(b, &r, &b.service_cert).is_err(),
            "B with C's {field}"
        );
    }
    let mut r = b.receipt.clone();
    r["node_id"] = c.receipt["nodeId"].clone();
    assert!(matches!(
        verify(b, &r, &b.service_cert),
        Err(ReceiptError::NodeIdMismatch { .. })
    ));
    // Removing node_id or service_endorsements still verifies.
    for field in ["node_id", "service_endorsements"] {
        let mut r = b.receipt.clone();
        r.as_object_mut().unwrap().remove(field);
        verify(b, &r, &b.service_cert).unwrap();
    }
    // Missing required fields and null endorsements are invalid content.
    for field in ["cert", "signature", "leaf_components"] {
        let mut r = b.receipt.clone();
        r.as_object_mut().unwrap().remove(field);
        assert!(
            matches!(
                verify(b, &r, &b.service_cert),
                Err(ReceiptError::Invalid(_))
            ),
            "{field}"
        );
    }
    let mut r = b.receipt.clone();
    r["service_endorsements"] = Value::Null;
    assert!(matches!(
        verify(b, &r, &b.service_cert),
        Err(ReceiptError::Invalid("serviceEndorsements"))
    ));
    let mut r = b.receipt.clone();
    r["leaf_components"]
        .as_object_mut()
        .unwrap()
        .remove("claims_digest");
    assert!(matches!(
        verify(b, &r, &b.service_cert),
        Err(ReceiptError::Invalid(_))
    ));
}

#[test]
fn camel_case_round_trip() {
    for v in vectors() {
        let r = Receipt::from_json(&v.receipt).unwrap();
        let back = serde_json::to_value(&r).unwrap();
        assert!(back.get("leafComponents").is_some());
        let r2 = Receipt::from_json(&back).unwrap();
        assert_eq!(r, r2);
        r2.verify(&v.service_cert, v.claims.as_deref()).unwrap();
    }
}

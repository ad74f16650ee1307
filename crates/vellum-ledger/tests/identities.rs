//! Ids computed by Vellum match the ids CCF recorded in its own ledger, and ACL's
//! fingerprint form matches OpenSSL's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use std::path::PathBuf;

use vellum_core::crypto::{Certificate, node_id_of};
use vellum_core::tables;
use vellum_ledger::chunk::{Chunk, ChunkName};

fn acme() -> PathBuf {
    common::repo().join("testdata/ccf-ledgers/acme_containing_service")
}

#[test]
fn member_user_and_node_ids_match_ccf_genesis() {
    let bytes = std::fs::read(acme().join("ledger/ledger_1-2.committed")).unwrap();
    let name = ChunkName::parse("ledger_1-2.committed").unwrap();
    let chunk = Chunk::parse(&bytes, Some(&name)).unwrap();
    let genesis = chunk.entries[0].entry.public_domain().unwrap();

    let member =
        Certificate::from_pem(&std::fs::read_to_string(acme().join("member0_cert.pem")).unwrap())
            .unwrap();
    let members = genesis.map(tables::MEMBERS_CERTS.name()).unwrap();
    let recorded = members
        .get(member.id().as_bytes())
        .expect("member id is a key of members.certs");
    assert_eq!(
        Certificate::from_pem(std::str::from_utf8(recorded).unwrap())
            .unwrap()
            .der(),
        member.der()
    );

    let user =
        Certificate::from_pem(&std::fs::read_to_string(acme().join("user0_cert.pem")).unwrap())
            .unwrap();
    assert_eq!(user.id().len(), 64);

    // Node ids: every endorsed certificate is recorded under the SHA-256 of its SPKI.
    let nodes = genesis
        .map(tables::NODES_ENDORSED_CERTIFICATES.name())
        .unwrap();
    assert!(!nodes.writes.is_empty());
    for (id, pem) in &nodes.writes {
        let cert = Certificate::from_pem(std::str::from_utf8(pem).unwrap()).unwrap();
        assert_eq!(node_id_of(&cert).as_bytes(), id.as_slice());
        assert_eq!(cert.public_key().unwrap().id().as_bytes(), id.as_slice());
    }
}

#[test]
fn acl_fingerprint_matches_openssl() {
    // `openssl x509 -noout -fingerprint -sha256` of the same certificates.
    for (file, expected) in [
        (
            "member0_cert.pem",
            "44:71:B7:67:FF:7B:20:5E:47:00:99:DB:F7:16:4D:C5:6D:37:ED:9D:F4:9B:0D:CD:4F:86:89:3D:5E:71:32:D9",
        ),
        (
            "user0_cert.pem",
            "BD:BF:DB:E6:D4:56:71:C4:AC:8A:C6:CC:9D:22:86:58:EE:61:3A:34:16:E5:DC:24:85:5B:86:20:B3:BC:9F:54",
        ),
    ] {
        let c =
            Certificate::from_pem(&std::fs::read_to_string(acme().join(file)).unwrap()).unwrap();
        assert_eq!(c.acl_fingerprint(), expected);
        assert_eq!(c.id(), expected.replace(':', "").to_lowercase());
    }
}

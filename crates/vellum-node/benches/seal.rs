//! What sealing costs at start: opening a sealed data directory's seal and unsealing its three
//! secrets, with a key file (HKDF), a passphrase (Argon2id, 64 MiB, 3 passes) and, when
//! SoftHSM2 is installed, a PKCS#11 token (loading the module, logging in, one AES-GCM
//! decryption in the token). And what the service key costs at each signature transaction:
//! its ES384 signature in memory, and in a PKCS#11 token (`--service-key-pkcs11`).
//!
//! ```text
//! cargo bench -p vellum-node --bench seal
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group};
use vellum_node::seal::{SEALED_FILES, SealKey, Sealer};
use zeroize::Zeroizing;

fn sealed_dir(root: &Path, key: &SealKey) {
    std::fs::create_dir_all(root).unwrap();
    let s = Sealer::create(root, key).unwrap();
    for name in SEALED_FILES {
        s.write(root, name, &[7u8; 300]).unwrap();
    }
}

fn open_all(root: &Path, key: &SealKey) {
    let s = Sealer::open(root, Some(key)).unwrap().unwrap();
    for name in SEALED_FILES {
        std::hint::black_box(s.read(root, name).unwrap());
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("unseal at start");
    g.sample_size(10);

    let key_file = dir.path().join("seal.key");
    std::fs::write(&key_file, [0x11; 32]).unwrap();
    let key = SealKey::KeyFile(key_file);
    sealed_dir(&dir.path().join("kf"), &key);
    g.bench_function("key file", |b| {
        b.iter(|| open_all(&dir.path().join("kf"), &key))
    });

    let pass = SealKey::Passphrase(Zeroizing::new("a passphrase of some length".into()));
    sealed_dir(&dir.path().join("pp"), &pass);
    g.bench_function("passphrase (Argon2id)", |b| {
        b.iter(|| open_all(&dir.path().join("pp"), &pass))
    });

    if let Ok(uri) = std::env::var("VELLUM_BENCH_PKCS11_URI") {
        let key = SealKey::Pkcs11(uri.parse().unwrap());
        sealed_dir(&dir.path().join("hsm"), &key);
        g.bench_function("PKCS#11 (SoftHSM2)", |b| {
            b.iter(|| open_all(&dir.path().join("hsm"), &key))
        });
    } else {
        eprintln!("SoftHSM2 is not installed: no PKCS#11 figure");
    }
    g.finish();

    // What the service key costs at each signature transaction: its COSE signature (ES384
    // over a ~200-byte Sig_structure), in memory (aws-lc-rs) and in a token.
    let mut g = c.benchmark_group("service signature (ES384)");
    let message = [0x5a; 200];
    let key = vellum_core::crypto::SigningKey::generate(&mut rand_core::OsRng);
    g.bench_function("in memory", |b| {
        b.iter(|| std::hint::black_box(key.sign_cose(&message).unwrap()))
    });
    if let Ok(uri) = std::env::var("VELLUM_BENCH_PKCS11_URI") {
        let mut uri: vellum_node::hsm::Pkcs11Uri = uri.parse().unwrap();
        uri.object = "service".into();
        let signer = vellum_node::hsm::TokenSigner::open_or_create(&uri).unwrap();
        g.bench_function("PKCS#11 (SoftHSM2)", |b| {
            b.iter(|| std::hint::black_box(signer.sign_es384(&message).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// With SoftHSM2 installed, runs itself again with a fresh token (SoftHSM2 finds its tokens
/// through `SOFTHSM2_CONF`, which only a new process can be given here).
fn main() {
    if std::env::var_os("VELLUM_BENCH_PKCS11_URI").is_none() && Path::new(MODULE).exists() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\n",
                tokens.display()
            ),
        )
        .unwrap();
        let ok = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "bench",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .status()
            .unwrap()
            .success();
        assert!(ok, "softhsm2-util --init-token failed");
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("SOFTHSM2_CONF", &conf)
            .env(
                "VELLUM_BENCH_PKCS11_URI",
                format!("pkcs11:token=bench;object=k?module-path={MODULE}&pin-value=1234"),
            )
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

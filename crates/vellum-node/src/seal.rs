//! Secrets sealed at rest: the ledger secret, the service key and the node key are stored
//! wrapped by a key-encryption key (KEK) that is not in the data directory, so that a copy of
//! the directory (a stolen disk, a backup) reveals none of them.
//!
//! The KEK comes from the operator at each start ([`SealKey`]): a passphrase (stretched with
//! Argon2id, 64 MiB, 3 passes: about 0.15 s here, against guessing), a key file of at
//! least 32 random bytes (derived with HKDF-SHA256), or a PKCS#11 token (a random KEK, wrapped
//! by an AES key that never leaves the token: [`crate::hsm`]). `seal.json` records which, with the salt
//! and a check value that tells a wrong key from a damaged file. Each secret file `NAME`
//! becomes `NAME.sealed`:
//!
//! ```text
//! "vellum-sealed-v1\n" || nonce (12 bytes) || AES-256-GCM(KEK, nonce, secret, aad = NAME)
//! ```
//!
//! The name as associated data binds each sealed file to its role: swapping two sealed files
//! fails to unseal rather than turning a node key into a service key.
//!
//! The primitives are RustCrypto's (`aes-gcm`, `hkdf`, `argon2`); only the file layout is ours.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The files a sealed data directory keeps sealed.
pub const SEALED_FILES: [&str; 3] = ["ledger_secret", "service_key.pem", "node_key.pem"];
/// The record of how the directory is sealed.
pub const SEAL_FILE: &str = "seal.json";
/// What a sealed file starts with.
const MAGIC: &[u8] = b"vellum-sealed-v1\n";
/// What the check value seals.
const CHECK: &[u8] = b"vellum seal check";
/// Argon2id's cost: 64 MiB, 3 passes, one lane (RFC 9106's second recommended option).
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;
/// The shortest key file.
pub const MIN_KEY_FILE_BYTES: usize = 32;

/// Where the key-encryption key comes from.
#[derive(Clone)]
pub enum SealKey {
    /// A passphrase (stretched with Argon2id).
    Passphrase(Zeroizing<String>),
    /// A file of at least 32 random bytes.
    KeyFile(PathBuf),
    /// A key in a PKCS#11 token ([`crate::hsm`]): the KEK is random, kept in `seal.json`
    /// wrapped by that key, which never leaves the token.
    Pkcs11(crate::hsm::Pkcs11Uri),
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealKey::Passphrase(_) => f.write_str("SealKey::Passphrase(..)"),
            SealKey::KeyFile(p) => write!(f, "SealKey::KeyFile({})", p.display()),
            SealKey::Pkcs11(u) => write!(f, "SealKey::Pkcs11({u:?})"),
        }
    }
}

/// Why secrets could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The directory is sealed and no key was given.
    #[error(
        "the data directory {0} is sealed: give its key (--seal-key-file, --seal-passphrase-file, \
         VELLUM_SEAL_PASSPHRASE or --seal-pkcs11)"
    )]
    KeyNeeded(PathBuf),
    /// The key given does not open this directory.
    #[error("the seal key does not open the data directory {0} (a wrong passphrase or key file)")]
    WrongKey(PathBuf),
    /// A key was given for a directory whose secrets are in the clear.
    #[error(
        "the data directory {0} is not sealed: seal it first with `vellum seal --data-dir {0}`"
    )]
    NotSealed(PathBuf),
    /// The passphrase or key file cannot be used.
    #[error("the seal key: {0}")]
    BadKey(String),
    /// A sealed file is damaged, or was made for another file.
    #[error("{0}: damaged, or not the sealed file of that name")]
    Damaged(PathBuf),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `seal.json` cannot be read.
    #[error("{}: {why}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `seal.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealRecord {
    version: u32,
    /// `passphrase` or `key-file`.
    kek: String,
    /// The salt (base64).
    salt: String,
    /// Argon2id's memory (KiB), passes and lanes, for a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    argon2: Option<(u32, u32, u32)>,
    /// The KEK wrapped by the token's key (base64), for a PKCS#11 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_kek: Option<String>,
    /// [`CHECK`] sealed under the KEK (base64): tells a wrong key from a damaged file.
    check: String,
}

/// A key-encryption key, ready to seal and unseal.
pub struct Sealer {
    kek: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn derive(key: &SealKey, record: &SealRecord) -> Result<Zeroizing<[u8; 32]>, SealError> {
    let salt = base64::engine::general_purpose::STANDARD
        .decode(&record.salt)
        .map_err(|_| SealError::Record {
            path: SEAL_FILE.into(),
            why: "the salt is not base64".into(),
        })?;
    let mut kek = Zeroizing::new([0u8; 32]);
    match (key, record.kek.as_str()) {
        (SealKey::Passphrase(p), "passphrase") => {
            let (m, t, lanes) = record.argon2.unwrap_or((ARGON2_M_KIB, ARGON2_T, ARGON2_P));
            let params =
                argon2::Params::new(m, t, lanes, Some(32)).map_err(|e| SealError::Record {
                    path: SEAL_FILE.into(),
                    why: e.to_string(),
                })?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p.as_bytes(), &salt, kek.as_mut())
                .map_err(|e| SealError::BadKey(e.to_string()))?;
        }
        (SealKey::KeyFile(path), "key-file") => {
            let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
            if bytes.len() < MIN_KEY_FILE_BYTES {
                return Err(SealError::BadKey(format!(
                    "{} holds {} bytes: a key file holds at least {MIN_KEY_FILE_BYTES} random bytes",
                    path.display(),
                    bytes.len()
                )));
            }
            hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &bytes)
                .expand(b"vellum seal kek v1", kek.as_mut())
                .map_err(|e| SealError::BadKey(e.to_string()))?;
        }
        (SealKey::Pkcs11(uri), "pkcs11") => {
            let wrapped = record
                .wrapped_kek
                .as_deref()
                .and_then(|w| base64::engine::general_purpose::STANDARD.decode(w).ok())
                .ok_or_else(|| SealError::Record {
                    path: SEAL_FILE.into(),
                    why: "no wrapped key".into(),
                })?;
            let plain =
                crate::hsm::unwrap(uri, &wrapped).map_err(|e| SealError::BadKey(e.to_string()))?;
            if plain.len() != 32 {
                return Err(SealError::BadKey(
                    "the token returned a key of another size".into(),
                ));
            }
            kek.copy_from_slice(&plain);
        }
        (_, other) => {
            return Err(SealError::BadKey(format!(
                "this data directory is sealed with a {other}, not the kind of key given"
            )));
        }
    }
    Ok(kek)
}

impl Sealer {
    /// Seals `root` anew under `key`: writes `seal.json` (the salt, the check value). The
    /// secret files are then sealed with [`Sealer::write`].
    pub fn create(root: &Path, key: &SealKey) -> Result<Sealer, SealError> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let wrapped_kek = match key {
            SealKey::Pkcs11(uri) => {
                let mut kek = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(kek.as_mut());
                let w = crate::hsm::wrap(uri, kek.as_ref())
                    .map_err(|e| SealError::BadKey(e.to_string()))?;
                Some(base64::engine::general_purpose::STANDARD.encode(w))
            }
            _ => None,
        };
        let mut record = SealRecord {
            version: 1,
            kek: match key {
                SealKey::Passphrase(_) => "passphrase".into(),
                SealKey::KeyFile(_) => "key-file".into(),
                SealKey::Pkcs11(_) => "pkcs11".into(),
            },
            salt: base64::engine::general_purpose::STANDARD.encode(salt),
            argon2: matches!(key, SealKey::Passphrase(_)).then_some((
                ARGON2_M_KIB,
                ARGON2_T,
                ARGON2_P,
            )),
            wrapped_kek,
            check: String::new(),
        };
        let sealer = Sealer {
            kek: derive(key, &record)?,
        };
        record.check =
            base64::engine::general_purpose::STANDARD.encode(sealer.seal_bytes(SEAL_FILE, CHECK)?);
        let path = root.join(SEAL_FILE);
        let json = serde_json::to_vec_pretty(&record).map_err(|e| SealError::Record {
            path: path.clone(),
            why: e.to_string(),
        })?;
        vellum_ledger::files::write_durably(&path, &json).map_err(io(&path))?;
        Ok(sealer)
    }

    /// Opens the seal of `root` with `key`, or says why not: not sealed, no key, wrong key.
    /// `Ok(None)`: the directory is not sealed and no key was given.
    pub fn open(root: &Path, key: Option<&SealKey>) -> Result<Option<Sealer>, SealError> {
        let path = root.join(SEAL_FILE);
        if !path.exists() {
            return match key {
                None => Ok(None),
                Some(_) => Err(SealError::NotSealed(root.to_path_buf())),
            };
        }
        let key = key.ok_or_else(|| SealError::KeyNeeded(root.to_path_buf()))?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let record: SealRecord = serde_json::from_slice(&bytes).map_err(|e| SealError::Record {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if record.version != 1 {
            return Err(SealError::Record {
                path,
                why: format!("seal version {} is not known", record.version),
            });
        }
        let sealer = Sealer {
            kek: derive(key, &record)?,
        };
        let check = base64::engine::general_purpose::STANDARD
            .decode(&record.check)
            .map_err(|_| SealError::Record {
                path: path.clone(),
                why: "the check is not base64".into(),
            })?;
        match sealer.unseal_bytes(SEAL_FILE, &check) {
            Some(c) if c.as_slice() == CHECK => Ok(Some(sealer)),
            _ => Err(SealError::WrongKey(root.to_path_buf())),
        }
    }

    /// The sealer for `root` given `key`: its seal opened if it has one, else a new seal made
    /// with `key`; `None` for a plain directory and no key.
    pub fn open_or_create(root: &Path, key: Option<&SealKey>) -> Result<Option<Sealer>, SealError> {
        match key {
            Some(k) if !Sealer::is_sealed(root) => Sealer::create(root, k).map(Some),
            _ => Sealer::open(root, key),
        }
    }

    /// Whether `root` is sealed.
    pub fn is_sealed(root: &Path) -> bool {
        root.join(SEAL_FILE).exists()
    }

    fn seal_bytes(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = Aes256Gcm::new_from_slice(self.kek.as_ref())
            .map_err(|e| SealError::BadKey(e.to_string()))?;
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::BadKey("sealing failed".into()))?;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        out.extend(ct);
        Ok(out)
    }

    fn unseal_bytes(&self, name: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let rest = sealed.strip_prefix(MAGIC)?;
        if rest.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = rest.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let cipher = Aes256Gcm::new_from_slice(self.kek.as_ref()).ok()?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// Writes `NAME.sealed` in `root`: `plain` sealed under the KEK, bound to `name`.
    pub fn write(&self, root: &Path, name: &str, plain: &[u8]) -> Result<(), SealError> {
        let path = sealed_path(root, name);
        let sealed = self.seal_bytes(name, plain)?;
        vellum_ledger::files::write_durably(&path, &sealed).map_err(io(&path))
    }

    /// Reads `NAME.sealed` in `root`.
    pub fn read(&self, root: &Path, name: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let path = sealed_path(root, name);
        let sealed = std::fs::read(&path).map_err(io(&path))?;
        self.unseal_bytes(name, &sealed)
            .ok_or(SealError::Damaged(path))
    }
}

/// Seals the secrets of a data directory that holds them in the clear (`vellum seal`): writes
/// `seal.json` and every `NAME.sealed`, checks each unseals to what the plain file holds, then
/// removes the plain files. A run that was interrupted is finished by running it again with
/// the same key. Returns the files sealed.
pub fn seal_dir(root: &Path, key: &SealKey) -> Result<Vec<String>, SealError> {
    let sealer = Sealer::open_or_create(root, Some(key))?
        .ok_or_else(|| SealError::KeyNeeded(root.to_path_buf()))?;
    let mut sealed = Vec::new();
    for name in SEALED_FILES {
        let plain_path = root.join(name);
        if !plain_path.exists() {
            continue;
        }
        let plain = Zeroizing::new(std::fs::read(&plain_path).map_err(io(&plain_path))?);
        sealer.write(root, name, &plain)?;
        if sealer.read(root, name)?.as_slice() != plain.as_slice() {
            return Err(SealError::Damaged(sealed_path(root, name)));
        }
        sealed.push(name.to_owned());
    }
    for name in &sealed {
        let p = root.join(name);
        std::fs::remove_file(&p).map_err(io(&p))?;
    }
    vellum_ledger::files::sync_dir(root).map_err(io(root))?;
    Ok(sealed)
}

/// Where secret file `name` of `root` is kept sealed: `NAME.sealed`.
pub fn sealed_path(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}.sealed"))
}

/// Whether secret file `name` of `root` is there (sealed, if `sealer` is given).
pub fn secret_file_exists(root: &Path, name: &str, sealer: Option<&Sealer>) -> bool {
    match sealer {
        Some(_) => sealed_path(root, name).exists(),
        None => root.join(name).exists(),
    }
}

/// Reads secret file `name` of `root`: unsealed with `sealer` if the directory is sealed,
/// else the plain file.
pub fn read_secret_file(
    root: &Path,
    name: &str,
    sealer: Option<&Sealer>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    match sealer {
        Some(s) => s.read(root, name),
        None => {
            let p = root.join(name);
            std::fs::read(&p).map(Zeroizing::new).map_err(io(&p))
        }
    }
}

/// Writes secret file `name` of `root`: sealed with `sealer` if given, else in the clear
/// (mode 0600).
pub fn write_secret_file(
    root: &Path,
    name: &str,
    plain: &[u8],
    sealer: Option<&Sealer>,
) -> Result<(), SealError> {
    match sealer {
        Some(s) => s.write(root, name, plain),
        None => {
            let p = root.join(name);
            vellum_ledger::files::write_durably(&p, plain).map_err(io(&p))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key_file(dir: &Path, byte: u8) -> SealKey {
        let p = dir.join(format!("key{byte}"));
        std::fs::write(&p, [byte; 32]).unwrap();
        SealKey::KeyFile(p)
    }

    #[test]
    fn sealed_files_open_only_with_their_key_and_under_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let key = key_file(root, 1);
        let sealer = Sealer::create(root, &key).unwrap();
        sealer.write(root, "ledger_secret", b"the secret").unwrap();
        sealer.write(root, "node_key.pem", b"the node key").unwrap();
        let raw = std::fs::read(root.join("ledger_secret.sealed")).unwrap();
        assert!(!raw.windows(10).any(|w| w == b"the secret"));

        let again = Sealer::open(root, Some(&key)).unwrap().unwrap();
        assert_eq!(
            again.read(root, "ledger_secret").unwrap().as_slice(),
            b"the secret"
        );
        // Another key, no key, another kind of key.
        assert!(matches!(
            Sealer::open(root, Some(&key_file(root, 2))),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            Sealer::open(root, None),
            Err(SealError::KeyNeeded(_))
        ));
        let pass = SealKey::Passphrase(Zeroizing::new("x".into()));
        assert!(matches!(
            Sealer::open(root, Some(&pass)),
            Err(SealError::BadKey(_))
        ));
        // A sealed file renamed to another role does not open; nor a flipped byte.
        std::fs::copy(
            root.join("node_key.pem.sealed"),
            root.join("service_key.pem.sealed"),
        )
        .unwrap();
        assert!(matches!(
            again.read(root, "service_key.pem"),
            Err(SealError::Damaged(_))
        ));
        let mut bad = raw.clone();
        let n = bad.len() - 1;
        bad[n] ^= 1;
        std::fs::write(root.join("ledger_secret.sealed"), bad).unwrap();
        assert!(matches!(
            again.read(root, "ledger_secret"),
            Err(SealError::Damaged(_))
        ));
        // A short key file is refused.
        let short = root.join("short");
        std::fs::write(&short, [7u8; 16]).unwrap();
        assert!(matches!(
            Sealer::create(&root.join("x"), &SealKey::KeyFile(short)),
            Err(SealError::BadKey(_))
        ));
    }

    #[test]
    fn a_plain_directory_is_sealed_in_place_and_a_passphrase_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in SEALED_FILES {
            std::fs::write(root.join(name), format!("{name} contents")).unwrap();
        }
        let pass = SealKey::Passphrase(Zeroizing::new("correct horse".into()));
        assert!(matches!(
            Sealer::open(root, Some(&pass)),
            Err(SealError::NotSealed(_))
        ));
        assert_eq!(seal_dir(root, &pass).unwrap().len(), 3);
        for name in SEALED_FILES {
            assert!(!root.join(name).exists(), "{name} is still in the clear");
        }
        let sealer = Sealer::open(root, Some(&pass)).unwrap().unwrap();
        assert_eq!(
            read_secret_file(root, "node_key.pem", Some(&sealer))
                .unwrap()
                .as_slice(),
            b"node_key.pem contents"
        );
        let wrong = SealKey::Passphrase(Zeroizing::new("wrong horse".into()));
        assert!(matches!(
            Sealer::open(root, Some(&wrong)),
            Err(SealError::WrongKey(_))
        ));
        // Sealing again is a no-op that still needs the key.
        assert!(seal_dir(root, &pass).unwrap().is_empty());
        assert!(seal_dir(root, &wrong).is_err());
    }
}

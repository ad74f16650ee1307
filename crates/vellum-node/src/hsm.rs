//! A key held in a PKCS#11 token (an HSM, a cloud HSM; SoftHSM2 in tests), through the
//! `cryptoki` crate: a sealed data directory's key-encryption key is kept wrapped by an AES-256
//! key that never leaves the token (created there, sensitive, not extractable), so the
//! directory opens only where the token is reachable and its PIN known.
//!
//! The token and key are named by a PKCS#11 URI (RFC 7512), as p11-kit and OpenSSL take them:
//!
//! ```text
//! pkcs11:token=vellum;object=vellum-seal?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/vellum/pin
//! ```
//!
//! `pin-value=` gives the PIN inline; without either, the caller supplies it.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// The associated data of a KEK wrapped in the token.
const KEK_AAD: &[u8] = b"vellum seal kek";

/// A PKCS#11 URI's parts Vellum uses.
#[derive(Clone)]
pub struct Pkcs11Uri {
    /// The PKCS#11 module (`module-path`).
    pub module: PathBuf,
    /// The token's label (`token`).
    pub token: String,
    /// The key's label (`object`).
    pub object: String,
    /// The user PIN (`pin-value`, or read from `pin-source=file:...`), if the URI gives it.
    pub pin: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Uri")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

/// Why the token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PKCS#11: {0}")]
pub struct HsmError(pub String);

fn err(what: &str) -> impl FnOnce(cryptoki::error::Error) -> HsmError + '_ {
    move |e| HsmError(format!("{what}: {e}"))
}

fn decode(s: &str) -> Result<String, HsmError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| HsmError(format!("{s:?} is not UTF-8 once percent-decoded")))
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = HsmError;

    fn from_str(uri: &str) -> Result<Pkcs11Uri, HsmError> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| HsmError("a PKCS#11 URI starts with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut module, mut pin) = (None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| HsmError(format!("{attr:?} is not NAME=VALUE")))?;
            match k {
                "token" => token = Some(decode(v)?),
                "object" => object = Some(decode(v)?),
                // Other path attributes (manufacturer, serial, type, ...) narrow nothing here.
                _ => {}
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| HsmError(format!("{attr:?} is not NAME=VALUE")))?;
            match k {
                "module-path" => module = Some(PathBuf::from(decode(v)?)),
                "pin-value" => pin = Some(Zeroizing::new(decode(v)?)),
                "pin-source" => {
                    let v = decode(v)?;
                    let file = v.strip_prefix("file:").unwrap_or(&v);
                    let text = Zeroizing::new(
                        std::fs::read_to_string(file)
                            .map_err(|e| HsmError(format!("pin-source {file}: {e}")))?,
                    );
                    pin = Some(Zeroizing::new(
                        text.lines().next().unwrap_or_default().to_owned(),
                    ));
                }
                _ => {}
            }
        }
        Ok(Pkcs11Uri {
            module: module.ok_or_else(|| HsmError("the URI needs ?module-path=".into()))?,
            token: token.ok_or_else(|| HsmError("the URI needs token=".into()))?,
            object: object.ok_or_else(|| HsmError("the URI needs object=".into()))?,
            pin,
        })
    }
}

/// A logged-in session on the URI's token (the module stays loaded while it lives).
struct Token {
    _ctx: Pkcs11,
    session: Session,
}

/// The module's context, loaded and initialized once per process: the seal and the service
/// key may use the same module (and token), and a module is initialized once and finalized
/// when its last context is dropped, which here is never.
fn context(module: &std::path::Path) -> Result<Pkcs11, HsmError> {
    use cryptoki::error::{Error, RvError};
    static LOADED: std::sync::Mutex<Vec<(PathBuf, Pkcs11)>> = std::sync::Mutex::new(Vec::new());
    let mut loaded = crate::lock(&LOADED);
    if let Some((_, ctx)) = loaded.iter().find(|(p, _)| p == module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(err("loading the module"))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(())
        | Err(Error::AlreadyInitialized)
        | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(HsmError(format!("initializing the module: {e}"))),
    }
    loaded.push((module.to_path_buf(), ctx.clone()));
    Ok(ctx)
}

fn open(uri: &Pkcs11Uri) -> Result<Token, HsmError> {
    let ctx = context(&uri.module)?;
    let mut found = None;
    for slot in ctx.get_slots_with_token().map_err(err("listing slots"))? {
        let info = ctx.get_token_info(slot).map_err(err("reading a token"))?;
        if info.label().trim_end() == uri.token {
            found = Some(slot);
            break;
        }
    }
    let slot = found.ok_or_else(|| HsmError(format!("no token labelled {:?}", uri.token)))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(err("opening a session"))?;
    let pin = uri
        .pin
        .as_ref()
        .ok_or_else(|| HsmError("no PIN: give pin-source or pin-value in the URI".into()))?;
    // Logging in is per application and token: another session may have done it.
    match session.login(
        UserType::User,
        Some(&AuthPin::from(pin.as_str().to_owned())),
    ) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => return Err(HsmError(format!("logging in to the token: {e}"))),
    }
    Ok(Token { _ctx: ctx, session })
}

fn find_key(t: &Token, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    let found = t
        .session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(err("finding the key"))?;
    Ok(found.first().copied())
}

/// Encrypts `plain` (AES-256-GCM) under the URI's key, creating the key in the token if it
/// has none by that label: `iv (12 bytes) || ciphertext || tag`.
pub fn wrap(uri: &Pkcs11Uri, plain: &[u8]) -> Result<Vec<u8>, HsmError> {
    let t = open(uri)?;
    let key = match find_key(&t, &uri.object)? {
        Some(k) => k,
        None => t
            .session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(uri.object.as_bytes().to_vec()),
                ],
            )
            .map_err(err("creating the key"))?,
    };
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let mut iv_param = iv;
    let params =
        GcmParams::new(&mut iv_param, KEK_AAD, 128.into()).map_err(err("the GCM parameters"))?;
    let ct = t
        .session
        .encrypt(&Mechanism::AesGcm(params), key, plain)
        .map_err(err("encrypting"))?;
    let mut out = iv.to_vec();
    out.extend(ct);
    Ok(out)
}

/// Decrypts what [`wrap`] made, with the URI's key.
pub fn unwrap(uri: &Pkcs11Uri, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    if wrapped.len() < 12 + 16 {
        return Err(HsmError("the wrapped key is too short".into()));
    }
    let t = open(uri)?;
    let key = find_key(&t, &uri.object)?
        .ok_or_else(|| HsmError(format!("no key labelled {:?} in the token", uri.object)))?;
    let mut iv: [u8; 12] = [0; 12];
    iv.copy_from_slice(&wrapped[..12]);
    let params = GcmParams::new(&mut iv, KEK_AAD, 128.into()).map_err(err("the GCM parameters"))?;
    t.session
        .decrypt(&Mechanism::AesGcm(params), key, &wrapped[12..])
        .map(Zeroizing::new)
        .map_err(err("decrypting (another token or key?)"))
}

/// The DER of the secp384r1 curve's OID (CKA_EC_PARAMS).
const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

/// A P-384 key pair kept in a token: the private key is created there (sensitive, not
/// extractable) and signs there. The service key, when `vellum serve --service-key-pkcs11` puts
/// it in a token: it signs the service's COSE signatures and endorses node certificates.
pub struct TokenSigner {
    token: std::sync::Mutex<Token>,
    key: ObjectHandle,
    public: vellum_core::crypto::PublicKey,
    sec1: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSigner({})", self.public.id())
    }
}

impl TokenSigner {
    /// The URI's key pair, created in the token if it has none by that label.
    pub fn open_or_create(uri: &Pkcs11Uri) -> Result<TokenSigner, HsmError> {
        use cryptoki::object::AttributeType;
        let t = open(uri)?;
        let label = uri.object.as_bytes().to_vec();
        let find = |class| {
            t.session
                .find_objects(&[Attribute::Class(class), Attribute::Label(label.clone())])
                .map(|v| v.first().copied())
                .map_err(err("finding the key pair"))
        };
        let (public, private) = match (
            find(ObjectClass::PUBLIC_KEY)?,
            find(ObjectClass::PRIVATE_KEY)?,
        ) {
            (Some(p), Some(k)) => (p, k),
            (None, None) => t
                .session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Verify(true),
                        Attribute::EcParams(P384_PARAMS.to_vec()),
                        Attribute::Label(label.clone()),
                    ],
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Label(label.clone()),
                    ],
                )
                .map_err(err("creating the key pair"))?,
            _ => {
                return Err(HsmError(format!(
                    "the token holds half a key pair labelled {:?}",
                    uri.object
                )));
            }
        };
        let point = t
            .session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(err("reading the public key"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| HsmError("the public key has no EC point".into()))?;
        // CKA_EC_POINT is the point as a DER OCTET STRING (some tokens give it bare).
        let sec1 = match point.as_slice() {
            [0x04, 0x61, rest @ ..] if rest.len() == 0x61 => rest.to_vec(),
            bare => bare.to_vec(),
        };
        let public = vellum_core::crypto::PublicKey::p384_from_sec1(&sec1)
            .map_err(|_| HsmError("the key pair is not on P-384".into()))?;
        Ok(TokenSigner {
            token: std::sync::Mutex::new(t),
            key: private,
            public,
            sec1,
        })
    }

    /// ES384 over `message`: SHA-384 here, ECDSA in the token; raw `r || s` (96 bytes).
    pub fn sign_es384(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        use sha2::Digest as _;
        let digest = sha2::Sha384::digest(message);
        let t = crate::lock(&self.token);
        let sig = t
            .session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(err("signing"))?;
        if sig.len() != 96 {
            return Err(HsmError(format!("a {}-byte P-384 signature", sig.len())));
        }
        Ok(sig)
    }

    /// The public key.
    pub fn public_key(&self) -> &vellum_core::crypto::PublicKey {
        &self.public
    }
}

impl vellum_core::crypto::CoseSigner for TokenSigner {
    fn public_key(&self) -> vellum_core::crypto::PublicKey {
        self.public.clone()
    }

    fn sign_cose(&self, message: &[u8]) -> Result<Vec<u8>, vellum_core::crypto::CryptoError> {
        self.sign_es384(message).map_err(|e| {
            tracing::error!(error = %e, "the token did not sign");
            vellum_core::crypto::CryptoError::BadSignature
        })
    }
}

/// rcgen signs certificates with it (the service certificate, node certificates).
impl rcgen::PublicKeyData for TokenSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.sec1
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P384_SHA384
    }
}

impl rcgen::SigningKey for TokenSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let raw = self
            .sign_es384(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
            .and_then(|raw| {
                p384::ecdsa::Signature::from_slice(&raw).map_err(|_| rcgen::Error::RemoteKeyError)
            })?;
        Ok(raw.to_der().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pkcs11_uris_name_the_module_token_key_and_pin() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        let uri: Pkcs11Uri = format!(
            "pkcs11:token=my%20token;object=seal;manufacturer=SoftHSM?module-path=/usr/lib/x.so&pin-source=file:{}",
            pin.display()
        )
        .parse()
        .unwrap();
        assert_eq!(
            (
                uri.module.to_str().unwrap(),
                uri.token.as_str(),
                uri.object.as_str()
            ),
            ("/usr/lib/x.so", "my token", "seal")
        );
        assert_eq!(uri.pin.unwrap().as_str(), "1234");
        let uri: Pkcs11Uri = "pkcs11:token=t;object=o?module-path=/m.so&pin-value=9"
            .parse()
            .unwrap();
        assert_eq!(uri.pin.unwrap().as_str(), "9");
        for bad in [
            "token=t;object=o?module-path=/m",
            "pkcs11:object=o?module-path=/m",
            "pkcs11:token=t?module-path=/m",
            "pkcs11:token=t;object=o",
            "pkcs11:token;object=o?module-path=/m",
        ] {
            assert!(bad.parse::<Pkcs11Uri>().is_err(), "{bad}");
        }
    }
}

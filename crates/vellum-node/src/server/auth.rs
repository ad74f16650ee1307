//! Who is calling: a certificate user (the ACL fingerprint of the client certificate presented
//! in the TLS handshake) or a token user (the `oid` claim of a bearer JWT from a configured
//! OpenID issuer). Roles come from the ledger's users table.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// ACL's default token audience.
pub const DEFAULT_AUDIENCE: &str = "https://confidential-ledger.azure.com";

/// One trusted token issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The `iss` value tokens must carry.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The issuer's signing keys (refreshed in place when they come from a URL).
    pub keys: Arc<RwLock<JwkSet>>,
    /// Where the keys come from, when it is a URL.
    pub jwks_url: Option<String>,
}

fn audiences_or_default(audiences: Vec<String>) -> Vec<String> {
    if audiences.is_empty() {
        vec![DEFAULT_AUDIENCE.to_owned()]
    } else {
        audiences
    }
}

/// Why an issuer's signing keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The JWKS file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JWKS URL could not be fetched.
    #[error("fetching {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// What was read is not a JWKS.
    #[error("{from} is not a JWKS: {message}")]
    Parse {
        /// The file or URL.
        from: String,
        /// Why.
        message: String,
    },
}

/// Why a bearer token was refused (its text is the 401 answer's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Its `iss` is not a trusted issuer.
    #[error("token issuer {0:?} is not trusted")]
    UntrustedIssuer(String),
    /// No `kid`, and the issuer has several keys.
    #[error("token has no kid and its issuer has several keys")]
    AmbiguousKey,
    /// Its `kid` is not one of the issuer's keys.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The issuer's key is of a kind tokens may not be signed with.
    #[error("token signed with an issuer key of an unsupported kind")]
    UnsupportedKey,
    /// The token names another algorithm than its key's.
    #[error("token algorithm {token:?} is not its key's ({key:?})")]
    Algorithm {
        /// The token's.
        token: Algorithm,
        /// The key's.
        key: Algorithm,
    },
    /// The issuer's key cannot be used.
    #[error("issuer key: {0}")]
    IssuerKey(String),
    /// The signature or a claim (`aud`, `iss`, `exp`, `nbf`) is not valid.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// No `oid` claim: no user to be.
    #[error("token has no oid claim")]
    NoOid,
}

async fn fetch_jwks(url: &str) -> Result<JwkSet, JwksError> {
    let fetch = |message: String| JwksError::Fetch {
        url: url.to_owned(),
        message,
    };
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fetch(e.to_string()))?
        .get(url)
        .send()
        .await
        .map_err(|e| fetch(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fetch(format!("HTTP {}", resp.status())));
    }
    resp.json::<JwkSet>().await.map_err(|e| JwksError::Parse {
        from: url.to_owned(),
        message: e.to_string(),
    })
}

impl Issuer {
    /// An issuer whose keys are read from a JWKS file.
    pub fn from_jwks_file(
        issuer: &str,
        audiences: Vec<String>,
        jwks: &Path,
    ) -> Result<Issuer, JwksError> {
        let bytes = std::fs::read(jwks).map_err(|source| JwksError::Read {
            path: jwks.to_path_buf(),
            source,
        })?;
        let keys: JwkSet = serde_json::from_slice(&bytes).map_err(|e| JwksError::Parse {
            from: jwks.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Issuer {
            issuer: issuer.to_owned(),
            audiences: audiences_or_default(audiences),
            keys: Arc::new(RwLock::new(keys)),
            jwks_url: None,
        })
    }

    /// An issuer whose keys are fetched from a JWKS URL now and refreshed hourly by
    /// [`TokenValidator::refresh_periodically`] (the last good set is kept on errors).
    pub async fn from_jwks_url(
        issuer: &str,
        audiences: Vec<String>,
        url: &str,
    ) -> Result<Issuer, JwksError> {
        let keys = fetch_jwks(url).await?;
        Ok(Issuer {
            issuer: issuer.to_owned(),
            audiences: audiences_or_default(audiences),
            keys: Arc::new(RwLock::new(keys)),
            jwks_url: Some(url.to_owned()),
        })
    }
}

/// How far `exp` and `nbf` may be off, for clocks that disagree.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(60);

/// The one algorithm tokens signed with `jwk` may use: the key's own `alg`, or, for keys that
/// publish none (Microsoft Entra ID's do not), the usual one for the key's type: RS256 for RSA,
/// ES256 or ES384 by curve, EdDSA for Ed25519. Symmetric keys are refused: an issuer's key set
/// is public.
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, TokenError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (_, AlgorithmParameters::OctetKey(_)) => None,
        (Some(a), _) => match a {
            KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512 => None,
            a => Algorithm::try_from(a).ok(),
        },
        (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
        (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        (None, AlgorithmParameters::OctetKeyPair(p)) => {
            (p.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        (None, _) => None,
    };
    alg.ok_or(TokenError::UnsupportedKey)
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
}

/// A token that passed [`TokenValidator::validate_claims`].
#[derive(Debug, Clone)]
pub struct ValidToken {
    /// Its `oid`: the user id.
    pub oid: String,
    /// The issuer that signed it.
    pub issuer: String,
    /// Its header.
    pub header: serde_json::Value,
    /// Its claims.
    pub payload: serde_json::Value,
}

/// An issuer the members trust by proposal (`set_jwt_issuer`), as the governance tables hold
/// it: its accepted audiences and its keys (`kid`, SubjectPublicKeyInfo DER).
#[derive(Debug, Clone, Default)]
pub struct LedgerIssuer {
    /// Accepted `aud` values (the issuer's `audiences` metadata, else ACL's default).
    pub audiences: Vec<String>,
    /// Its signing keys.
    pub keys: Vec<(String, Vec<u8>)>,
}

impl LedgerIssuer {
    /// An issuer with these audiences (none: ACL's default) and keys.
    pub fn new(audiences: Vec<String>, keys: Vec<(String, Vec<u8>)>) -> LedgerIssuer {
        LedgerIssuer {
            audiences: audiences_or_default(audiences),
            keys,
        }
    }
}

/// Validates bearer tokens against the configured issuers.
#[derive(Debug, Clone, Default)]
pub struct TokenValidator {
    issuers: Vec<Issuer>,
}

impl TokenValidator {
    /// A validator for `issuers`.
    pub fn new(issuers: Vec<Issuer>) -> TokenValidator {
        TokenValidator { issuers }
    }

    /// Refreshes URL-sourced keys every `every`, forever (spawn it).
    pub async fn refresh_periodically(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            for i in &self.issuers {
                if let Some(url) = &i.jwks_url {
                    match fetch_jwks(url).await {
                        Ok(k) => *crate::write_lock(&i.keys) = k,
                        Err(e) => {
                            tracing::warn!(issuer = %i.issuer, error = %e, "keeping the last good JWKS")
                        }
                    }
                }
            }
        }
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The user id (`oid`) of a valid token, or why it is not valid. A valid token is signed by
    /// a key of the issuer its `iss` names (the one its `kid` names; a token without `kid` only
    /// when the issuer has a single key), with that key's algorithm, and carries `iss`, `aud`
    /// (one of the issuer's audiences), `exp` and `nbf`, both within [`CLOCK_LEEWAY`].
    pub fn validate(&self, token: &str) -> Result<String, TokenError> {
        self.validate_claims(token).map(|v| v.oid)
    }

    /// [`TokenValidator::validate`], with the token's issuer, header and (verified) payload,
    /// as an endpoint's `jwt` caller object shows them.
    pub fn validate_claims(&self, token: &str) -> Result<ValidToken, TokenError> {
        self.validate_with(token, |_| None)
    }

    /// [`TokenValidator::validate_claims`], also trusting the issuers the members recorded:
    /// `ledger(iss)` gives the one named `iss`, if any. An issuer configured on the command
    /// line takes precedence over one of the same name in the ledger.
    pub fn validate_with(
        &self,
        token: &str,
        ledger: impl FnOnce(&str) -> Option<LedgerIssuer>,
    ) -> Result<ValidToken, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        // Only to pick the issuer; every claim is checked again with the signature below.
        let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let Some(issuer) = self.issuers.iter().find(|i| i.issuer == unverified.iss) else {
            let recorded = ledger(&unverified.iss)
                .ok_or_else(|| TokenError::UntrustedIssuer(unverified.iss.clone()))?;
            return validate_recorded(token, &header, &unverified.iss, &recorded);
        };
        let jwk = {
            let keys = crate::read_lock(&issuer.keys);
            key_for(header.kid.as_deref(), &keys.keys, |k| {
                k.common.key_id.as_deref()
            })?
            .clone()
        };
        // The algorithm comes from the issuer's key, never from the token.
        let alg = algorithm_of(&jwk)?;
        if header.alg != alg {
            return Err(TokenError::Algorithm {
                token: header.alg,
                key: alg,
            });
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::IssuerKey(e.to_string()))?;
        verify(token, &header, alg, &key, &issuer.issuer, &issuer.audiences)
    }
}

/// The key a token's `kid` names among an issuer's `keys`; without a `kid`, the issuer's only
/// key (with several, which one is ambiguous).
fn key_for<'a, K>(
    kid: Option<&str>,
    keys: &'a [K],
    kid_of: impl Fn(&'a K) -> Option<&'a str>,
) -> Result<&'a K, TokenError> {
    match (kid, keys) {
        (Some(kid), _) => keys
            .iter()
            .find(|k| kid_of(k) == Some(kid))
            .ok_or(TokenError::UnknownKey),
        (None, [only]) => Ok(only),
        (None, []) => Err(TokenError::UnknownKey),
        (None, _) => Err(TokenError::AmbiguousKey),
    }
}

/// Checks a token against an issuer the members recorded: the key its `kid` names (without a
/// `kid`, the issuer's only key), with the one algorithm that key allows (RS256 for RSA, ES256
/// or ES384 by curve).
fn validate_recorded(
    token: &str,
    header: &jsonwebtoken::Header,
    issuer: &str,
    recorded: &LedgerIssuer,
) -> Result<ValidToken, TokenError> {
    use vellum_core::jwk::TokenKey;
    let (_, spki) = key_for(header.kid.as_deref(), &recorded.keys, |(k, _)| Some(k))?;
    let (alg, key) = match vellum_core::jwk::token_key_of_spki(spki)
        .map_err(|e| TokenError::IssuerKey(e.to_string()))?
    {
        TokenKey::Rsa(pkcs1) => (Algorithm::RS256, DecodingKey::from_rsa_der(&pkcs1)),
        TokenKey::P256(point) => (Algorithm::ES256, DecodingKey::from_ec_der(&point)),
        TokenKey::P384(point) => (Algorithm::ES384, DecodingKey::from_ec_der(&point)),
    };
    if header.alg != alg {
        return Err(TokenError::Algorithm {
            token: header.alg,
            key: alg,
        });
    }
    verify(token, header, alg, &key, issuer, &recorded.audiences)
}

/// The signature and the claims (`aud`, `iss`, `exp`, `nbf`, all required) of a token whose key
/// and algorithm are chosen; its `oid`.
fn verify(
    token: &str,
    header: &jsonwebtoken::Header,
    alg: Algorithm,
    key: &DecodingKey,
    issuer: &str,
    audiences: &[String],
) -> Result<ValidToken, TokenError> {
    let mut v = Validation::new(alg);
    v.set_audience(audiences);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    v.validate_nbf = true;
    v.leeway = CLOCK_LEEWAY.as_secs();
    let payload = jsonwebtoken::decode::<serde_json::Value>(token, key, &v)
        .map_err(|e| TokenError::Invalid(e.to_string()))?
        .claims;
    let oid = payload
        .get("oid")
        .and_then(serde_json::Value::as_str)
        .ok_or(TokenError::NoOid)?
        .to_owned();
    Ok(ValidToken {
        oid,
        issuer: issuer.to_owned(),
        header: serde_json::to_value(header).unwrap_or_default(),
        payload,
    })
}

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

async fn fetch_jwks(url: &str) -> Result<JwkSet, String> {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("fetching {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("fetching {url}: HTTP {}", resp.status()));
    }
    resp.json::<JwkSet>()
        .await
        .map_err(|e| format!("{url} is not a JWKS: {e}"))
}

impl Issuer {
    /// An issuer whose keys are read from a JWKS file.
    pub fn from_jwks_file(
        issuer: &str,
        audiences: Vec<String>,
        jwks: &Path,
    ) -> Result<Issuer, String> {
        let bytes = std::fs::read(jwks).map_err(|e| format!("{}: {e}", jwks.display()))?;
        let keys: JwkSet =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", jwks.display()))?;
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
    ) -> Result<Issuer, String> {
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
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, String> {
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
    alg.ok_or_else(|| "token signed with an issuer key of an unsupported kind".to_owned())
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    oid: Option<String>,
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
    pub fn validate(&self, token: &str) -> Result<String, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        // Only to pick the issuer; every claim is checked again with the signature below.
        let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| format!("malformed token: {e}"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == unverified.iss)
            .ok_or_else(|| format!("token issuer {:?} is not trusted", unverified.iss))?;
        let jwk = {
            let keys = crate::read_lock(&issuer.keys);
            match &header.kid {
                Some(kid) => keys.find(kid).cloned(),
                // Without a kid the key is ambiguous unless the issuer has only one.
                None if keys.keys.len() == 1 => keys.keys.first().cloned(),
                None if keys.keys.is_empty() => None,
                None => return Err("token has no kid and its issuer has several keys".into()),
            }
        }
        .ok_or("token signed with an unknown key")?;
        // The algorithm comes from the issuer's key, never from the token.
        let alg = algorithm_of(&jwk)?;
        if header.alg != alg {
            return Err(format!(
                "token algorithm {:?} is not its key's ({alg:?})",
                header.alg
            ));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("issuer key: {e}"))?;
        let mut v = Validation::new(alg);
        v.set_audience(&issuer.audiences);
        v.set_issuer(&[&issuer.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        v.validate_nbf = true;
        v.leeway = CLOCK_LEEWAY.as_secs();
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        claims
            .oid
            .ok_or_else(|| "token has no oid claim".to_owned())
    }
}

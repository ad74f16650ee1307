//! Who is calling: a certificate user (the ACL fingerprint of the client certificate presented
//! in the TLS handshake) or a token user (the `oid` claim of a bearer JWT from a configured
//! OpenID issuer). Roles come from the ledger's users table.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
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
    /// The issuer's signing keys.
    pub keys: JwkSet,
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
            audiences: if audiences.is_empty() {
                vec![DEFAULT_AUDIENCE.to_owned()]
            } else {
                audiences
            },
            keys,
        })
    }
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

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The user id (`oid`) of a valid token, or why it is not valid.
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
        let jwk = match &header.kid {
            Some(kid) => issuer.keys.find(kid),
            None => issuer.keys.keys.first(),
        }
        .ok_or("token signed with an unknown key")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("issuer key: {e}"))?;
        let mut v = Validation::new(header.alg);
        v.set_audience(&issuer.audiences);
        v.set_issuer(&[&issuer.issuer]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        claims
            .oid
            .ok_or_else(|| "token has no oid claim".to_owned())
    }
}

//! The ledger explorer at `/explorer`: a page per view (the service, collections and their
//! tags, a collection's entries by tag and range, one transaction with its receipt verified in
//! the browser, an offline receipt check, users), served from assets compiled into the binary.
//!
//! Plain JavaScript modules and CSS rather than a framework or server-rendered HTML: nothing to
//! build (no Node toolchain to build Vellum), and every view is drawn from the same API the
//! SDKs use with the caller's own credential, so the explorer can show no more than the
//! caller's role allows: the routes here serve only the static assets, to anyone, and nothing
//! of the ledger. The receipt verifier (`verify.js`) is the one the tests compare with
//! `vellum_core::receipt` (`tests/explorer_verifier.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::context::{ApiError, AppState};

const INDEX: &str = include_str!("explorer/index.html");
const APP: &str = include_str!("explorer/app.js");
const VERIFY: &str = include_str!("explorer/verify.js");
const STYLE: &str = include_str!("explorer/style.css");

/// Only this origin's scripts, styles and connections; no frames, plugins or forms elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Sign-in to the explorer through an OpenID Connect provider (the OAuth 2.0 implicit flow):
/// the page sends the browser to `authorize_url` with `response_type=token`, this `client_id`
/// and `scope`, a random `state`, and `redirect_uri` = the explorer; the provider sends it back
/// with an access token, which the page then uses as a bearer token. The token must come from
/// an issuer the ledger trusts (`--jwt-issuer`), for an audience it accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplorerLogin {
    /// The provider's authorization endpoint (`https://`, or `http://` on a loopback host).
    pub authorize_url: String,
    /// The explorer's client id at the provider.
    pub client_id: String,
    /// The scope asked for.
    pub scope: String,
}

/// The scope asked for by default: ACL's audience, as Azure's tools ask for it.
pub const DEFAULT_LOGIN_SCOPE: &str = "openid https://confidential-ledger.azure.com/.default";

impl ExplorerLogin {
    /// Checks the URL and client id.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let loopback_http = self
            .authorize_url
            .strip_prefix("http://")
            .is_some_and(|rest| {
                let host = rest.split(['/', '?']).next().unwrap_or("");
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                host == "localhost" || host == "127.0.0.1" || host == "[::1]"
            });
        crate::config::rule(
            self.authorize_url.starts_with("https://") || loopback_http,
            "explorer-login-url",
            "an https:// URL (http:// only on a loopback host)",
            &self.authorize_url,
        )?;
        crate::config::rule(
            !self.client_id.trim().is_empty(),
            "explorer-client-id",
            "non-empty",
            "empty",
        )
    }
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/explorer", get(index))
        .route("/explorer/", get(index))
        .route("/explorer/config.json", get(config))
        .route("/explorer/{file}", get(asset))
}

/// What the page needs to know of the server: whether it offers an OpenID Connect sign-in.
async fn config(axum::extract::State(st): axum::extract::State<Arc<AppState>>) -> Response {
    let mut r = axum::Json(serde_json::json!({ "login": st.cfg.explorer_login })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    Ok(match file.as_str() {
        "app.js" => respond("text/javascript; charset=utf-8", APP),
        "verify.js" => respond("text/javascript; charset=utf-8", VERIFY),
        "style.css" => respond("text/css; charset=utf-8", STYLE),
        "index.html" => respond("text/html; charset=utf-8", INDEX),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("the explorer has no file {file:?}"),
            ));
        }
    })
}

//! The async client.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use azure_core::credentials::TokenCredential;
use futures_util::Stream;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::credentials::{LedgerCertificate, LedgerCredential};
use crate::error::{Error, ErrorKind, Result};
use crate::models::*;

/// The api-version this client speaks (the one of Python SDK 1.1.x).
pub const DEFAULT_API_VERSION: &str = "2022-05-13";
/// The token scope of Azure Confidential Ledger.
pub const DEFAULT_SCOPE: &str = "https://confidential-ledger.azure.com/.default";

/// Retries of reads and idempotent writes (never of appends, which could be written twice).
#[derive(Clone, Debug)]
pub struct RetryOptions {
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub initial_delay: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 3,
            initial_delay: Duration::from_millis(200),
        }
    }
}

/// Options of [`ConfidentialLedgerClient`].
#[derive(Clone, Debug)]
pub struct ConfidentialLedgerClientOptions {
    /// The api-version sent with every request.
    pub api_version: String,
    /// Token scopes (token credentials only).
    pub credential_scopes: Vec<String>,
    /// Retries.
    pub retry: RetryOptions,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Log request and response bodies at DEBUG (the seed's `logging_enable`); credentials are
    /// never logged.
    pub logging_enable: bool,
}

impl Default for ConfidentialLedgerClientOptions {
    fn default() -> Self {
        ConfidentialLedgerClientOptions {
            api_version: DEFAULT_API_VERSION.into(),
            credential_scopes: vec![DEFAULT_SCOPE.into()],
            retry: RetryOptions::default(),
            request_timeout: Duration::from_secs(30),
            logging_enable: false,
        }
    }
}

/// Vellum's request header asking a write to be answered once committed (ignored elsewhere).
const WAIT_HEADER: &str = "x-vellum-wait";
/// Vellum's response header with the state of a write that asked to wait.
const STATE_HEADER: &str = "x-vellum-transaction-state";

/// What [`ConfidentialLedgerClient::send_with`] reads of a response.
struct Reply {
    status: StatusCode,
    txid: Option<String>,
    state: Option<String>,
    body: Vec<u8>,
}

/// Options every method takes.
#[derive(Clone, Debug, Default)]
pub struct MethodOptions {
    /// Log this call's bodies at DEBUG even if the client does not.
    pub logging_enable: Option<bool>,
}

/// How long and how often to poll.
#[derive(Clone, Debug)]
pub struct PollOptions {
    /// Time between polls.
    pub interval: Duration,
    /// Give up after this long ([`ErrorKind::Timeout`]).
    pub timeout: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Options of [`ConfidentialLedgerClient::append_to_ledger`].
#[derive(Clone, Debug, Default)]
pub struct AppendToLedgerOptions {
    /// The sub-ledger (collection); the service default when `None`.
    pub sub_ledger_id: Option<String>,
    /// Tags (api-version 2024-12-09-preview and later): at most 5, each at most 64
    /// characters, no commas; checked before anything is sent.
    pub tags: Vec<String>,
    /// Wait until the write is committed before returning. Vellum is asked to answer once
    /// committed (`x-vellum-wait`), a durable append in one round trip; a service that
    /// ignores the request (ACL) is polled with `poll` instead.
    pub wait_for_commit: bool,
    /// Polling, when waiting.
    pub poll: PollOptions,
    /// User-defined functions run in the write's transaction before the entry (a hook that
    /// throws refuses the write; nothing is written).
    pub pre_hooks: Vec<crate::models::Hook>,
    /// User-defined functions run in the write's transaction after the entry.
    pub post_hooks: Vec<crate::models::Hook>,
    /// Per-call options.
    pub method_options: MethodOptions,
}

/// Options of [`ConfidentialLedgerClient::wait_until_durable`].
#[derive(Clone, Debug, Default)]
pub struct WaitUntilDurableOptions {
    /// Polling.
    pub poll: PollOptions,
    /// Per-call options.
    pub method_options: MethodOptions,
}

/// Options of [`ConfidentialLedgerClient::get_transaction_receipt`].
#[derive(Clone, Debug, Default)]
pub struct GetTransactionReceiptOptions {
    /// Polling while the receipt is loading.
    pub poll: PollOptions,
    /// Per-call options.
    pub method_options: MethodOptions,
}

/// Options of [`ConfidentialLedgerClient::get_ledger_entry`].
#[derive(Clone, Debug, Default)]
pub struct GetLedgerEntryOptions {
    /// The entry written at this transaction; the latest entry when `None`.
    pub transaction_id: Option<String>,
    /// The sub-ledger; the service default when `None`.
    pub sub_ledger_id: Option<String>,
    /// Polling while the entry is loading.
    pub poll: PollOptions,
    /// Per-call options.
    pub method_options: MethodOptions,
}

/// Options of [`ConfidentialLedgerClient::get_ledger_entries`].
#[derive(Clone, Debug, Default)]
pub struct GetLedgerEntriesOptions {
    /// First transaction id (inclusive); the ledger's first when `None`.
    pub from_transaction_id: Option<String>,
    /// Last transaction id (inclusive); the latest committed when `None`.
    pub to_transaction_id: Option<String>,
    /// The sub-ledger; the service default when `None`.
    pub sub_ledger_id: Option<String>,
    /// Only entries carrying this tag (api-version 2024-12-09-preview and later).
    pub tag: Option<String>,
    /// Per-call options.
    pub method_options: MethodOptions,
}

/// A stream of ledger entries that follows the service's pages.
pub type LedgerEntryPager = Pin<Box<dyn Stream<Item = Result<LedgerEntry>> + Send>>;

struct CachedToken {
    token: String,
    refresh_at: SystemTime,
}

type TokenSource = (Arc<dyn TokenCredential>, Mutex<Option<CachedToken>>);

pub(crate) struct Inner {
    endpoint: reqwest::Url,
    http: reqwest::Client,
    token: Option<TokenSource>,
    options: ConfidentialLedgerClientOptions,
}

/// A client of one Confidential Ledger (Vellum or Azure). Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct ConfidentialLedgerClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ConfidentialLedgerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfidentialLedgerClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

fn tx_path(txid: &str) -> Result<String> {
    txid.parse::<vellum_core::TxId>().map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidArgument,
            format!("{txid:?} is not a transaction id"),
            e,
        )
    })?;
    Ok(format!("/app/transactions/{txid}"))
}

/// Percent-encodes a path segment: unreserved characters and `:` (fingerprints, sent raw as
/// the Python SDK does) stay; everything else, space included, becomes `%XX`.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn data_err(what: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::DataConversion, format!("reading {what}"), e)
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

impl ConfidentialLedgerClient {
    /// A client for the ledger at `endpoint` (e.g. `https://my-ledger.confidential-ledger.azure.com`
    /// or `https://127.0.0.1:8443`), authenticating with `credential` and trusting only
    /// `ledger_certificate` (the service certificate; host names are still checked).
    pub fn new(
        endpoint: &str,
        credential: impl Into<LedgerCredential>,
        ledger_certificate: impl Into<LedgerCertificate>,
        options: Option<ConfidentialLedgerClientOptions>,
    ) -> Result<ConfidentialLedgerClient> {
        let options = options.unwrap_or_default();
        let endpoint = reqwest::Url::parse(endpoint).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidArgument,
                format!("endpoint {endpoint:?}"),
                e,
            )
        })?;
        if endpoint.scheme() != "https" {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the endpoint must be https://",
            ));
        }
        let pem = ledger_certificate.into().pem()?;
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, "the ledger certificate PEM", e)
        })?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the ledger certificate PEM holds no certificate",
            ));
        }
        let mut b = reqwest::Client::builder()
            .tls_certs_only(certs)
            .timeout(options.request_timeout)
            .user_agent(concat!("vellum-client/", env!("CARGO_PKG_VERSION")));
        let mut token = None;
        match credential.into() {
            LedgerCredential::Certificate(c) => b = b.identity(c.identity()?),
            LedgerCredential::Token(t) => token = Some((t, Mutex::new(None))),
            LedgerCredential::Anonymous => {}
        }
        let http = b.build().map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, "building the HTTPS client", e)
        })?;
        Ok(ConfidentialLedgerClient {
            inner: Arc::new(Inner {
                endpoint,
                http,
                token,
                options,
            }),
        })
    }

    /// The ledger endpoint.
    pub fn endpoint(&self) -> &str {
        self.inner.endpoint.as_str()
    }

    async fn bearer(&self) -> Result<Option<String>> {
        let Some((cred, cache)) = &self.inner.token else {
            return Ok(None);
        };
        let mut c = cache.lock().await;
        if let Some(t) = c.as_ref()
            && SystemTime::now() < t.refresh_at
        {
            return Ok(Some(t.token.clone()));
        }
        let scopes: Vec<&str> = self
            .inner
            .options
            .credential_scopes
            .iter()
            .map(String::as_str)
            .collect();
        let t = cred.get_token(&scopes, None).await.map_err(|e| {
            Error::with_source(ErrorKind::Credential, "the token credential failed", e)
        })?;
        let expires: SystemTime = t.expires_on.into();
        let token = t.token.secret().to_owned();
        *c = Some(CachedToken {
            token: token.clone(),
            refresh_at: expires - Duration::from_secs(300),
        });
        Ok(Some(token))
    }

    /// Sends one request; retries it (reads and idempotent writes only) on connection errors
    /// and retryable statuses. Returns the status, the transaction-id header and the body.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Vec<u8>)>,
        opts: &MethodOptions,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>)> {
        let r = self
            .send_with(method, path_and_query, body, &[], opts)
            .await?;
        Ok((r.status, r.txid, r.body))
    }

    /// [`Self::send`] with extra request headers, answering the response headers we read too.
    async fn send_with(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&'static str, &'static str)],
        opts: &MethodOptions,
    ) -> Result<Reply> {
        let mut url = self.inner.endpoint.join(path_and_query).map_err(|e| {
            Error::with_source(ErrorKind::InvalidArgument, "building the request URL", e)
        })?;
        // The service's own api-version wins over one in a nextLink.
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "api-version")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", &self.inner.options.api_version)
            .extend_pairs(pairs);
        let log_bodies = opts
            .logging_enable
            .unwrap_or(self.inner.options.logging_enable);
        let retry = &self.inner.options.retry;
        let idempotent = method != Method::POST;
        let mut attempt = 0;
        loop {
            let mut req = self.inner.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(token) = self.bearer().await? {
                req = req.bearer_auth(token);
            }
            if let Some((ct, b)) = &body {
                req = req.header("content-type", *ct).body(b.clone());
                if log_bodies {
                    tracing::debug!(target: "vellum_client", %method, %url, body = %String::from_utf8_lossy(b), "request (Authorization redacted)");
                }
            }
            let started = Instant::now();
            let result = req.send().await;
            let retry_allowed = idempotent && attempt < retry.max_retries;
            match result {
                Ok(resp) => {
                    let status = resp.status();
                    let txid = resp
                        .headers()
                        .get("x-ms-ccf-transaction-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let state = resp
                        .headers()
                        .get(STATE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let bytes = resp
                        .bytes()
                        .await
                        .map_err(|e| {
                            Error::with_source(ErrorKind::Connection, "reading the response", e)
                        })?
                        .to_vec();
                    tracing::debug!(target: "vellum_client", %method, %url, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "response");
                    if log_bodies {
                        tracing::debug!(target: "vellum_client", body = %String::from_utf8_lossy(&bytes), "response body");
                    }
                    if is_retryable(status) && retry_allowed {
                        attempt += 1;
                        tokio::time::sleep(retry.initial_delay * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    if !status.is_success() {
                        return Err(Error::from_response(status.as_u16(), &bytes));
                    }
                    return Ok(Reply {
                        status,
                        txid,
                        state,
                        body: bytes,
                    });
                }
                Err(e) => {
                    tracing::debug!(target: "vellum_client", %method, %url, error = %e, "request failed");
                    if retry_allowed && (e.is_connect() || e.is_timeout()) {
                        attempt += 1;
                        tokio::time::sleep(retry.initial_delay * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    return Err(Error::with_source(
                        ErrorKind::Connection,
                        format!("{method} {}", url.path()),
                        e,
                    ));
                }
            }
        }
    }

    async fn get_json(&self, path_and_query: &str, opts: &MethodOptions) -> Result<Value> {
        let (_, _, body) = self.send(Method::GET, path_and_query, None, opts).await?;
        serde_json::from_slice(&body).map_err(data_err("the response"))
    }

    /// Every item of a paged list: the `key` array of each page, following `nextLink` until
    /// a page has none. A service sending the same link twice is an error, not a loop.
    async fn get_all(&self, path: &str, key: &str, opts: &MethodOptions) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut next = path.to_owned();
        let mut seen = std::collections::HashSet::new();
        loop {
            let v = self.get_json(&next, opts).await?;
            let page = v.get(key).and_then(Value::as_array).ok_or_else(|| {
                Error::new(
                    ErrorKind::DataConversion,
                    format!("no {key:?} list in the answer"),
                )
            })?;
            items.extend(page.iter().cloned());
            match v
                .get("nextLink")
                .or_else(|| v.get("@nextLink"))
                .and_then(Value::as_str)
            {
                Some(link) if seen.insert(link.to_owned()) => next = link.to_owned(),
                Some(link) => {
                    return Err(Error::new(
                        ErrorKind::DataConversion,
                        format!("the service repeated the link {link:?}"),
                    ));
                }
                None => return Ok(items),
            }
        }
    }

    /// Appends an entry; returns its transaction id at once (or once committed, with
    /// `wait_for_commit`).
    pub async fn append_to_ledger(
        &self,
        entry_contents: &str,
        options: Option<AppendToLedgerOptions>,
    ) -> Result<AppendResult> {
        let o = options.unwrap_or_default();
        let mut path = "/app/transactions".to_owned();
        let tags = vellum_core::tables::check_tags(&o.tags)
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "the entry's tags", e))?;
        // Built before any await: the serializer is not `Send`.
        let q = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = &o.sub_ledger_id {
                q.append_pair("collectionId", s);
            }
            if !tags.is_empty() {
                q.append_pair("tags", &tags.join(","));
            }
            q.finish()
        };
        if !q.is_empty() {
            path.push('?');
            path.push_str(&q);
        }
        let mut body = serde_json::json!({ "contents": entry_contents });
        if !o.pre_hooks.is_empty() {
            body["preHooks"] = serde_json::to_value(&o.pre_hooks).map_err(data_err("the hooks"))?;
        }
        if !o.post_hooks.is_empty() {
            body["postHooks"] =
                serde_json::to_value(&o.post_hooks).map_err(data_err("the hooks"))?;
        }
        let body = serde_json::to_vec(&body).map_err(data_err("the entry"))?;
        // Asking Vellum to answer once committed saves the status poll; other services
        // ignore the header and are polled as before.
        let wait: &[(&str, &str)] = if o.wait_for_commit {
            &[(WAIT_HEADER, "committed")]
        } else {
            &[]
        };
        let Reply {
            txid,
            state,
            body: resp,
            ..
        } = self
            .send_with(
                Method::POST,
                &path,
                Some(("application/json", body)),
                wait,
                &o.method_options,
            )
            .await?;
        let transaction_id = txid.ok_or_else(|| {
            Error::new(
                ErrorKind::DataConversion,
                "the service did not return x-ms-ccf-transaction-id",
            )
        })?;
        let v: Value = serde_json::from_slice(&resp).map_err(data_err("the append result"))?;
        let sub_ledger_id = v["collectionId"]
            .as_str()
            .or_else(|| v["subLedgerId"].as_str())
            .unwrap_or_default()
            .to_owned();
        if o.wait_for_commit && state.as_deref() != Some("Committed") {
            self.wait_until_durable(
                &transaction_id,
                Some(WaitUntilDurableOptions {
                    poll: o.poll.clone(),
                    method_options: o.method_options.clone(),
                }),
            )
            .await?;
        }
        Ok(AppendResult {
            transaction_id,
            sub_ledger_id,
        })
    }

    /// The status of a transaction.
    pub async fn get_transaction_status(
        &self,
        transaction_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<TransactionStatus> {
        let o = options.unwrap_or_default();
        let v = self
            .get_json(&format!("{}/status", tx_path(transaction_id)?), &o)
            .await?;
        Ok(TransactionStatus {
            transaction_id: v["transactionId"]
                .as_str()
                .unwrap_or(transaction_id)
                .to_owned(),
            state: v["state"].as_str().unwrap_or("").into(),
        })
    }

    /// Waits until a transaction is committed (durable). An id the service says can never
    /// commit fails at once with [`ErrorKind::NotFound`].
    pub async fn wait_until_durable(
        &self,
        transaction_id: &str,
        options: Option<WaitUntilDurableOptions>,
    ) -> Result<TransactionStatus> {
        let o = options.unwrap_or_default();
        let deadline = Instant::now() + o.poll.timeout;
        let mut not_found = 0;
        loop {
            match self
                .get_transaction_status(transaction_id, Some(o.method_options.clone()))
                .await
            {
                Ok(s) if s.state == TransactionState::Committed => return Ok(s),
                Ok(_) => {}
                // A node that has not seen the write yet may answer 404 briefly (as the Python
                // SDK, tolerate two); an id that can never commit is final.
                Err(e)
                    if e.kind() == &ErrorKind::NotFound
                        && e.code() != Some("InvalidTransactionId")
                        && not_found < 2 =>
                {
                    not_found += 1;
                }
                Err(e) => return Err(e),
            }
            if Instant::now() + o.poll.interval > deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "transaction {transaction_id} was not committed within {:?}",
                        o.poll.timeout
                    ),
                ));
            }
            tokio::time::sleep(o.poll.interval).await;
        }
    }

    /// The receipt of a committed transaction (waits while the service loads it). Verify it
    /// with [`TransactionReceipt::verify`].
    pub async fn get_transaction_receipt(
        &self,
        transaction_id: &str,
        options: Option<GetTransactionReceiptOptions>,
    ) -> Result<TransactionReceipt> {
        let o = options.unwrap_or_default();
        let path = format!("{}/receipt", tx_path(transaction_id)?);
        let v = self.poll_ready(&path, &o.poll, &o.method_options).await?;
        let application_claims = match v.get("applicationClaims") {
            Some(c) if !c.is_null() => {
                Some(serde_json::from_value(c.clone()).map_err(data_err("application claims"))?)
            }
            _ => None,
        };
        Ok(TransactionReceipt {
            transaction_id: v["transactionId"]
                .as_str()
                .unwrap_or(transaction_id)
                .to_owned(),
            contents: v["receipt"].clone(),
            application_claims,
        })
    }

    async fn poll_ready(&self, path: &str, poll: &PollOptions, m: &MethodOptions) -> Result<Value> {
        let deadline = Instant::now() + poll.timeout;
        loop {
            let v = self.get_json(path, m).await?;
            if v["state"] != "Loading" {
                return Ok(v);
            }
            if Instant::now() + poll.interval > deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{path} was still loading after {:?}", poll.timeout),
                ));
            }
            tokio::time::sleep(poll.interval).await;
        }
    }

    /// A ledger entry: the one written at `transaction_id`, or the latest one, in the given
    /// sub-ledger or the service default.
    pub async fn get_ledger_entry(
        &self,
        options: Option<GetLedgerEntryOptions>,
    ) -> Result<LedgerEntry> {
        let o = options.unwrap_or_default();
        // Built in a block: the serializer is not Send and must not live across an await.
        let q = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = &o.sub_ledger_id {
                q.append_pair("collectionId", s);
            }
            q.finish()
        };
        let sep = if q.is_empty() { "" } else { "?" };
        match &o.transaction_id {
            Some(t) => {
                let v = self
                    .poll_ready(
                        &format!("{}{sep}{q}", tx_path(t)?),
                        &o.poll,
                        &o.method_options,
                    )
                    .await?;
                let w: WireEntry =
                    serde_json::from_value(v["entry"].clone()).map_err(data_err("the entry"))?;
                Ok(w.into())
            }
            None => {
                let v = self
                    .get_json(
                        &format!("/app/transactions/current{sep}{q}"),
                        &o.method_options,
                    )
                    .await?;
                let w: WireEntry = serde_json::from_value(v).map_err(data_err("the entry"))?;
                Ok(w.into())
            }
        }
    }

    /// Entries of a sub-ledger over a range of transaction ids, as a stream that fetches the
    /// service's pages as it goes.
    pub fn get_ledger_entries(&self, options: Option<GetLedgerEntriesOptions>) -> LedgerEntryPager {
        let o = options.unwrap_or_default();
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &o.sub_ledger_id {
            q.append_pair("collectionId", s);
        }
        if let Some(f) = &o.from_transaction_id {
            q.append_pair("fromTransactionId", f);
        }
        if let Some(t) = &o.to_transaction_id {
            q.append_pair("toTransactionId", t);
        }
        if let Some(t) = &o.tag {
            q.append_pair("tag", t);
        }
        let first = format!("/app/transactions?{}", q.finish());
        struct State {
            client: ConfidentialLedgerClient,
            next: Option<String>,
            buffer: VecDeque<LedgerEntry>,
            opts: MethodOptions,
        }
        let state = State {
            client: self.clone(),
            next: Some(first),
            buffer: VecDeque::new(),
            opts: o.method_options,
        };
        Box::pin(futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(e) = st.buffer.pop_front() {
                    return Some((Ok(e), st));
                }
                let link = st.next.take()?;
                let v = match st.client.get_json(&link, &st.opts).await {
                    Ok(v) => v,
                    Err(e) => return Some((Err(e), st)),
                };
                let next = v
                    .get("nextLink")
                    .or_else(|| v.get("@nextLink"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if v["state"] == "Loading" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    st.next = Some(next.unwrap_or(link));
                    continue;
                }
                let entries: Vec<WireEntry> = match serde_json::from_value(v["entries"].clone()) {
                    Ok(e) => e,
                    Err(e) => return Some((Err(data_err("entries")(e)), st)),
                };
                st.buffer.extend(entries.into_iter().map(LedgerEntry::from));
                st.next = next;
            }
        }))
    }

    /// The sub-ledgers (collections) that hold entries.
    pub async fn list_sub_ledgers(&self, options: Option<MethodOptions>) -> Result<Vec<String>> {
        let all = self
            .get_all(
                "/app/collections",
                "collections",
                &options.unwrap_or_default(),
            )
            .await?;
        Ok(all
            .iter()
            .filter_map(|c| c["collectionId"].as_str().map(str::to_owned))
            .collect())
    }

    /// The distinct tags of a sub-ledger's entries (`None`: the service default), as
    /// `GET /app/collections/tags` (api-version 2026-07-31-preview) lists them.
    pub async fn list_tags(
        &self,
        sub_ledger_id: Option<&str>,
        options: Option<MethodOptions>,
    ) -> Result<Vec<String>> {
        let mut path = "/app/collections/tags".to_owned();
        if let Some(s) = sub_ledger_id {
            path.push('?');
            path.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .append_pair("collectionId", s)
                    .finish(),
            );
        }
        let v = self.get_json(&path, &options.unwrap_or_default()).await?;
        let tags = v
            .get("tags")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::new(ErrorKind::DataConversion, "no \"tags\" in the answer"))?;
        Ok(tags
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect())
    }

    fn user_path(user_id: &str) -> Result<String> {
        if user_id.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty user id"));
        }
        Ok(format!("/app/users/{}", path_segment(user_id)))
    }

    /// Creates a user or changes its role (Administrator only).
    pub async fn create_or_update_user(
        &self,
        user_id: &str,
        role: LedgerUserRole,
        options: Option<MethodOptions>,
    ) -> Result<LedgerUser> {
        let body = serde_json::to_vec(&WireRole {
            assigned_role: role.as_str(),
        })
        .map_err(data_err("the user"))?;
        let (_, _, resp) = self
            .send(
                Method::PATCH,
                &Self::user_path(user_id)?,
                Some(("application/merge-patch+json", body)),
                &options.unwrap_or_default(),
            )
            .await?;
        let w: WireUser = serde_json::from_slice(&resp).map_err(data_err("the user"))?;
        w.try_into()
    }

    /// A user (Administrator only).
    pub async fn get_user(
        &self,
        user_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<LedgerUser> {
        let v = self
            .get_json(&Self::user_path(user_id)?, &options.unwrap_or_default())
            .await?;
        let w: WireUser = serde_json::from_value(v).map_err(data_err("the user"))?;
        w.try_into()
    }

    /// Deletes a user (Administrator only).
    pub async fn delete_user(&self, user_id: &str, options: Option<MethodOptions>) -> Result<()> {
        self.send(
            Method::DELETE,
            &Self::user_path(user_id)?,
            None,
            &options.unwrap_or_default(),
        )
        .await?;
        Ok(())
    }

    /// Every user, one role each (Administrator only; every page).
    pub async fn list_users(&self, options: Option<MethodOptions>) -> Result<Vec<LedgerUser>> {
        let all = self
            .get_all("/app/users", "ledgerUsers", &options.unwrap_or_default())
            .await?;
        let users: Vec<WireUser> =
            serde_json::from_value(Value::Array(all)).map_err(data_err("users"))?;
        users.into_iter().map(LedgerUser::try_from).collect()
    }

    fn ledger_user_path(user_id: &str) -> Result<String> {
        if user_id.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty user id"));
        }
        Ok(format!("/app/ledgerUsers/{}", path_segment(user_id)))
    }

    /// Creates a user or replaces its roles: built-in ones by name (`Administrator`,
    /// `Contributor`, `Reader`) and custom ones (see
    /// [`ConfidentialLedgerClient::create_user_defined_role`]). Administrator only.
    pub async fn create_or_update_ledger_user<S: AsRef<str>>(
        &self,
        user_id: &str,
        roles: &[S],
        options: Option<MethodOptions>,
    ) -> Result<LedgerUserMultipleRoles> {
        if roles.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a user holds at least one role",
            ));
        }
        let roles: Vec<&str> = roles.iter().map(AsRef::as_ref).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "assignedRoles": roles }))
            .map_err(data_err("the user"))?;
        let (_, _, resp) = self
            .send(
                Method::PATCH,
                &Self::ledger_user_path(user_id)?,
                Some(("application/merge-patch+json", body)),
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_slice(&resp).map_err(data_err("the user"))
    }

    /// A user with all its roles (Administrator only).
    pub async fn get_ledger_user(
        &self,
        user_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<LedgerUserMultipleRoles> {
        let v = self
            .get_json(
                &Self::ledger_user_path(user_id)?,
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_value(v).map_err(data_err("the user"))
    }

    /// Deletes a user (Administrator only).
    pub async fn delete_ledger_user(
        &self,
        user_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.send(
            Method::DELETE,
            &Self::ledger_user_path(user_id)?,
            None,
            &options.unwrap_or_default(),
        )
        .await?;
        Ok(())
    }

    /// Every user with all its roles (Administrator only; every page).
    pub async fn list_ledger_users(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<Vec<LedgerUserMultipleRoles>> {
        let all = self
            .get_all(
                "/app/ledgerUsers",
                "ledgerUsers",
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_value(Value::Array(all)).map_err(data_err("users"))
    }

    fn role_query(role_name: &str) -> Result<String> {
        if role_name.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty role name"));
        }
        Ok(format!(
            "/app/roles?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("roleName", role_name)
                .finish()
        ))
    }

    async fn put_roles(
        &self,
        method: Method,
        roles: &[UserDefinedRole],
        options: Option<MethodOptions>,
    ) -> Result<()> {
        if roles.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "no roles given"));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "roles": roles }))
            .map_err(data_err("the roles"))?;
        self.send(
            method,
            "/app/roles",
            Some(("application/json", body)),
            &options.unwrap_or_default(),
        )
        .await?;
        Ok(())
    }

    /// Creates custom roles, or replaces their actions (Administrator only).
    pub async fn create_user_defined_role(
        &self,
        roles: &[UserDefinedRole],
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.put_roles(Method::PUT, roles, options).await
    }

    /// Adds actions to custom roles (Administrator only). To take an action away, delete the
    /// role and create it again.
    pub async fn update_user_defined_role(
        &self,
        roles: &[UserDefinedRole],
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.put_roles(Method::PATCH, roles, options).await
    }

    /// A custom role ([`ErrorKind::NotFound`] if there is none).
    pub async fn get_user_defined_role(
        &self,
        role_name: &str,
        options: Option<MethodOptions>,
    ) -> Result<UserDefinedRole> {
        let v = self
            .get_json(&Self::role_query(role_name)?, &options.unwrap_or_default())
            .await?;
        // The sources disagree on the key and the shape: a list under `roles` or `role`, or a
        // bare list.
        let list = v
            .get("roles")
            .or_else(|| v.get("role"))
            .unwrap_or(&v)
            .clone();
        let roles: Vec<UserDefinedRole> =
            serde_json::from_value(list).map_err(data_err("the role"))?;
        roles
            .into_iter()
            .find(|r| r.name == role_name)
            .ok_or_else(|| Error::new(ErrorKind::DataConversion, "the answer names another role"))
    }

    /// Deletes a custom role (Administrator only). Users holding it keep its name, which
    /// allows nothing until a role of that name is created again.
    pub async fn delete_user_defined_role(
        &self,
        role_name: &str,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.send(
            Method::DELETE,
            &Self::role_query(role_name)?,
            None,
            &options.unwrap_or_default(),
        )
        .await?;
        Ok(())
    }

    fn function_path(function_id: &str) -> Result<String> {
        if function_id.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty function id"));
        }
        Ok(format!(
            "/app/userDefinedFunctions/{}",
            path_segment(function_id).replace(':', "%3A")
        ))
    }

    /// Stores `code` (one ES module) as the user-defined function `function_id`, creating or
    /// replacing it (Administrator only). Code that does not compile is refused.
    pub async fn create_user_defined_function(
        &self,
        function_id: &str,
        code: &str,
        options: Option<MethodOptions>,
    ) -> Result<UserDefinedFunction> {
        let body = serde_json::to_vec(&serde_json::json!({ "code": code }))
            .map_err(data_err("the function"))?;
        let (_, _, resp) = self
            .send(
                Method::PUT,
                &Self::function_path(function_id)?,
                Some(("application/json", body)),
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_slice(&resp).map_err(data_err("the function"))
    }

    /// A user-defined function.
    pub async fn get_user_defined_function(
        &self,
        function_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<UserDefinedFunction> {
        let v = self
            .get_json(
                &Self::function_path(function_id)?,
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_value(v).map_err(data_err("the function"))
    }

    /// Every user-defined function (every page).
    pub async fn list_user_defined_functions(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<Vec<UserDefinedFunction>> {
        let all = self
            .get_all(
                "/app/userDefinedFunctions",
                "functions",
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_value(Value::Array(all)).map_err(data_err("the functions"))
    }

    /// Runs a user-defined function (on the primary): how it ended, and the transaction of
    /// what it wrote. A function that throws is [`FunctionOutcome::Failed`], not an error.
    ///
    /// [`FunctionOutcome::Failed`]: crate::models::FunctionOutcome::Failed
    pub async fn execute_user_defined_function(
        &self,
        function_id: &str,
        run: Option<crate::models::FunctionRun>,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::FunctionExecution> {
        use crate::models::{FunctionExecution, FunctionOutcome};
        let body = serde_json::to_vec(&run.unwrap_or_default()).map_err(data_err("the run"))?;
        let path = format!("{}:execute", Self::function_path(function_id)?);
        let (_, txid, resp) = self
            .send(
                Method::POST,
                &path,
                Some(("application/json", body)),
                &options.unwrap_or_default(),
            )
            .await?;
        let v: Value = serde_json::from_slice(&resp).map_err(data_err("the run's outcome"))?;
        let outcome = match v["status"].as_str() {
            Some("Succeeded") => FunctionOutcome::Succeeded(
                v["result"]["returnValue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some("Failed") => FunctionOutcome::Failed(
                v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => {
                return Err(Error::new(
                    ErrorKind::DataConversion,
                    format!("the run's outcome has no known status: {v}"),
                ));
            }
        };
        Ok(FunctionExecution {
            outcome,
            transaction_id: txid,
        })
    }

    /// Deploys an app bundle as user-defined endpoints, replacing the app before
    /// (Administrator only); the empty bundle (`Bundle::default()`) removes every endpoint.
    pub async fn create_user_defined_endpoint(
        &self,
        bundle: &crate::models::Bundle,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        let body = serde_json::to_vec(bundle).map_err(data_err("the bundle"))?;
        self.send(
            Method::PUT,
            "/app/userDefinedEndpoints",
            Some(("application/json", body)),
            &options.unwrap_or_default(),
        )
        .await?;
        Ok(())
    }

    /// The deployed app bundle (the empty bundle before any).
    pub async fn get_user_defined_endpoint(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::Bundle> {
        let v = self
            .get_json("/app/userDefinedEndpoints", &options.unwrap_or_default())
            .await?;
        serde_json::from_value(v).map_err(data_err("the bundle"))
    }

    /// One module of the deployed bundle, by name.
    pub async fn get_user_defined_endpoints_module(
        &self,
        module_name: &str,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::ModuleDef> {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("module_name", module_name)
            .finish();
        let v = self
            .get_json(
                &format!("/app/userDefinedEndpoints/modules?{q}"),
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_value(v).map_err(data_err("the module"))
    }

    /// The runtime options of user-defined endpoints.
    pub async fn get_runtime_options(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::JsRuntimeOptions> {
        let v = self
            .get_json(
                "/app/userDefinedEndpoints/runtimeOptions",
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_value(v).map_err(data_err("the runtime options"))
    }

    /// Changes the runtime options given (the others keep their values); returns all of them
    /// (Administrator only).
    pub async fn update_runtime_options(
        &self,
        runtime_options: &crate::models::JsRuntimeOptions,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::JsRuntimeOptions> {
        let body = serde_json::to_vec(runtime_options).map_err(data_err("the options"))?;
        let (_, _, resp) = self
            .send(
                Method::PATCH,
                "/app/userDefinedEndpoints/runtimeOptions",
                Some(("application/json", body)),
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_slice(&resp).map_err(data_err("the runtime options"))
    }

    /// Calls a deployed user-defined endpoint: `method` (`GET`, `POST`, ...) on
    /// `/app/{path}` with an optional JSON body. A 4xx or 5xx answer is an error carrying the
    /// service's message.
    pub async fn call_endpoint(
        &self,
        method: &str,
        path: &str,
        json_body: Option<&Value>,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::EndpointResponse> {
        let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "the HTTP method", e))?;
        let body = match json_body {
            Some(v) => Some((
                "application/json",
                serde_json::to_vec(v).map_err(data_err("the body"))?,
            )),
            None => None,
        };
        let path = format!("/app/{}", path.trim_start_matches('/'));
        let (status, txid, body) = self
            .send(m, &path, body, &options.unwrap_or_default())
            .await?;
        Ok(crate::models::EndpointResponse {
            status: status.as_u16(),
            body,
            transaction_id: txid,
        })
    }

    /// Deletes a user-defined function (Administrator only).
    pub async fn delete_user_defined_function(
        &self,
        function_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.send(
            Method::DELETE,
            &Self::function_path(function_id)?,
            None,
            &options.unwrap_or_default(),
        )
        .await?;
        Ok(())
    }

    /// A request the service answers without touching the ledger (`POST /node/null`, a
    /// Vellum extension): the ceiling the transport allows, for benchmarks.
    pub async fn vellum_null(&self, body: &[u8]) -> Result<()> {
        self.send(
            Method::POST,
            "/node/null",
            Some(("application/json", body.to_vec())),
            &MethodOptions::default(),
        )
        .await?;
        Ok(())
    }

    /// The nodes of a Vellum cluster (a Vellum extension).
    pub async fn list_nodes(&self, options: Option<MethodOptions>) -> Result<Vec<ClusterNode>> {
        let v = self
            .get_json("/node/network/nodes", &options.unwrap_or_default())
            .await?;
        serde_json::from_value(v["nodes"].clone()).map_err(data_err("nodes"))
    }

    /// The health of the node this client reaches (`GET /node/health`, a Vellum extension; no
    /// credential needed): role, term, commit point and lag, last signature's age, disk.
    pub async fn node_health(&self, options: Option<MethodOptions>) -> Result<NodeHealth> {
        let v = self
            .get_json("/node/health", &options.unwrap_or_default())
            .await?;
        serde_json::from_value(v).map_err(data_err("the node's health"))
    }

    /// Creates a one-time join token for a new node (a Vellum extension; Administrators and
    /// consortium members).
    pub async fn create_join_token(&self, options: Option<MethodOptions>) -> Result<JoinToken> {
        let (_, _, body) = self
            .send(
                Method::POST,
                "/node/join-tokens",
                None,
                &options.unwrap_or_default(),
            )
            .await?;
        serde_json::from_slice(&body).map_err(data_err("the join token"))
    }

    /// Removes a node from a Vellum cluster (a Vellum extension; Administrators and consortium
    /// members). Returns the transaction id that retired it.
    pub async fn remove_node(
        &self,
        node_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<String> {
        if node_id.is_empty() || !node_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("{node_id:?} is not a node id (hex)"),
            ));
        }
        let (_, _, body) = self
            .send(
                Method::DELETE,
                &format!("/node/network/nodes/{node_id}"),
                None,
                &options.unwrap_or_default(),
            )
            .await?;
        let v: Value = serde_json::from_slice(&body).map_err(data_err("the response"))?;
        Ok(v["transaction_id"].as_str().unwrap_or_default().to_owned())
    }

    /// The consortium members.
    pub async fn get_consortium(&self, options: Option<MethodOptions>) -> Result<Consortium> {
        let all = self
            .get_all(
                "/app/governance/members",
                "members",
                &options.unwrap_or_default(),
            )
            .await?;
        let members = all
            .iter()
            .map(|m| ConsortiumMember {
                certificate: m["certificate"].as_str().unwrap_or_default().to_owned(),
                id: m["id"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        Ok(Consortium { members })
    }

    /// The constitution; its digest is checked against its contents.
    pub async fn get_constitution(&self, options: Option<MethodOptions>) -> Result<Constitution> {
        let v = self
            .get_json("/app/governance/constitution", &options.unwrap_or_default())
            .await?;
        let c = Constitution {
            contents: v["script"].as_str().unwrap_or_default().to_owned(),
            digest: v["digest"].as_str().unwrap_or_default().to_owned(),
        };
        c.verify_digest()?;
        Ok(c)
    }

    /// The enclave quotes of every node.
    pub async fn get_enclave_quotes(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<LedgerEnclaves> {
        let v = self
            .get_json("/app/enclaveQuotes", &options.unwrap_or_default())
            .await?;
        let mut quotes = std::collections::BTreeMap::new();
        if let Some(m) = v["enclaveQuotes"].as_object() {
            for (id, q) in m {
                let s = |k: &str| q[k].as_str().unwrap_or_default().to_owned();
                quotes.insert(
                    id.clone(),
                    EnclaveQuote {
                        node_id: s("nodeId"),
                        mrenclave: s("mrenclave"),
                        raw_quote: s("raw"),
                        version: s("quoteVersion"),
                    },
                );
            }
        }
        Ok(LedgerEnclaves {
            source_node: v["currentNodeId"].as_str().unwrap_or_default().to_owned(),
            quotes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped_for_paths_not_forms() {
        assert_eq!(path_segment("some AAD id"), "some%20AAD%20id");
        assert_eq!(path_segment("5F:23:AB"), "5F:23:AB");
        assert_eq!(path_segment("a/b?c#d+e%"), "a%2Fb%3Fc%23d%2Be%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn transaction_ids_are_checked_before_sending() {
        assert!(tx_path("2.15").is_ok());
        for bad in ["", "abc", "1.", ".1", "1.2.3", "2.15/../x"] {
            assert_eq!(
                tx_path(bad).unwrap_err().kind(),
                &ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }
}

//! Governance on the primary: CCF's member requests (`/gov`, api-version `2024-07-01`), each
//! a COSE_Sign1 signed by a member, checked here against the governance tables, and the
//! constitution run over those tables (`validate` on a proposal, each ballot's `vote`, then
//! `resolve`, and `apply` once accepted), all in one transaction, as CCF does
//! (`src/node/gov/handlers/proposals.h` and `acks.h` in CCF). Requests are served in turn with
//! the other runs that use tables ([`crate::scripts`]), over the applied tables and the writes
//! proposed since.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use vellum_core::crypto::Certificate;
use vellum_core::entry::{EntryBuilder, LedgerSecret};
use vellum_core::gov::Envelope;
use vellum_core::tables::{self, Failure, MemberAck, ProposalInfo, ProposalState};
use vellum_js::{Call, Entries, MapAccess, Modules, Outcome, Store, StoreError, Writes};

use super::LedgerNode;
use super::writes::Performed;
use crate::gov::{GovTables, proposal_json};
use crate::ops::{GovKind, GovRequest, HttpAnswer, RunResult};
use crate::scripts::map_writes;
use crate::{NodeError, Refusal};

/// How many recent proposals are kept for replay protection (CCF's default window).
const RECENT_PROPOSALS_WINDOW: usize = 100;
/// How long a governance request's answer waits for its transaction to be applied here.
const GOV_APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The largest `created_at` CCF takes (ten decimal digits).
const MAX_CREATED_AT: i64 = 9_999_999_999;

/// The governance tables as a request sees them: the applied tables, the writes proposed and
/// not yet applied, then the request's own.
#[derive(Clone)]
struct GovView {
    base: Arc<GovTables>,
    layers: Vec<Arc<Writes>>,
    own: Writes,
    /// The latest signature record as the ledger holds it (CCF's constitution reads
    /// `public:ccf.internal.signatures`), read once for the request.
    signature: Option<Vec<u8>>,
    /// The new ledger secret of a rekey an accepted proposal applied.
    rekey: Option<LedgerSecret>,
    /// An accepted proposal opened the service.
    open: bool,
    /// An accepted proposal rotated the service identity.
    rotate: bool,
}

impl GovView {
    fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.own.get(map).and_then(|m| m.get(key)) {
            return v.clone();
        }
        for l in self.layers.iter().rev() {
            if let Some(v) = l.get(map).and_then(|m| m.get(key)) {
                return v.clone();
            }
        }
        self.base.get(map, key).map(<[u8]>::to_vec)
    }

    fn rows(&self, map: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .rows(map)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let own = std::iter::once(&self.own);
        for l in self.layers.iter().map(Arc::as_ref).chain(own) {
            for (k, v) in l.get(map).into_iter().flatten() {
                match v {
                    Some(v) => all.insert(k.clone(), v.clone()),
                    None => all.remove(k),
                };
            }
        }
        all
    }

    fn put(&mut self, map: &str, key: &[u8], value: Vec<u8>) {
        self.own
            .entry(map.to_owned())
            .or_default()
            .insert(key.to_vec(), Some(value));
    }

    fn remove(&mut self, map: &str, key: &[u8]) {
        self.own
            .entry(map.to_owned())
            .or_default()
            .insert(key.to_vec(), None);
    }

    fn info(&self, proposal_id: &str) -> Option<ProposalInfo> {
        let v = self.get(tables::PROPOSALS_INFO.name(), proposal_id.as_bytes())?;
        tables::PROPOSALS_INFO.decode_value(&v).ok()
    }

    fn put_info(&mut self, proposal_id: &str, info: &ProposalInfo) {
        let (k, v) = tables::PROPOSALS_INFO.entry(proposal_id, info);
        self.put(tables::PROPOSALS_INFO.name(), &k, v);
    }

    fn service_status(&self) -> Option<tables::ServiceStatus> {
        let v = self.get(
            tables::SERVICE_INFO.name(),
            &vellum_core::entry::SINGLETON_KEY,
        )?;
        tables::SERVICE_INFO.decode_value(&v).ok().map(|i| i.status)
    }

    fn member_status(&self, member_id: &str) -> Option<String> {
        let v = self.get(tables::MEMBERS_INFO.name(), member_id.as_bytes())?;
        let info: serde_json::Value = serde_json::from_slice(&v).ok()?;
        info.get("status")?.as_str().map(str::to_owned)
    }
}

/// The governance tables as the constitution sees them: readable, and writable in `apply`;
/// and, read-only, CCF's `public:ccf.internal.signatures` (the latest signature, whose root
/// CCF's constitution gives a new member to acknowledge).
struct GovStore {
    view: GovView,
    writable: bool,
    /// What `apply` may call beyond the tables (`ccf.network`): none for the other exports.
    host: Option<Arc<GovHost>>,
    /// Whether user-defined functions exist (an app with endpoints may not be deployed then).
    functions_exist: bool,
}

/// The service's powers a constitution's `apply` uses: endorsing a node it trusts, rekeying.
struct GovHost {
    service_cert_pem: String,
    service_key_pem: String,
    /// The service key, when a PKCS#11 token keeps it (then `service_key_pem` is empty).
    service_token: Option<Arc<crate::hsm::TokenSigner>>,
    /// The seqno the ledger secret in use applies from (1: the genesis secret).
    latest_secret_seqno: u64,
    /// The new secret, once `ccf.node.triggerLedgerRekey()` was called.
    rekey: std::sync::Mutex<Option<LedgerSecret>>,
    /// The service's status and the identity a recovery replaced, if any.
    status: Option<tables::ServiceStatus>,
    previous_service_cert: Option<String>,
    /// Set once `ccf.node.transitionServiceToOpen()` succeeded.
    open: std::sync::atomic::AtomicBool,
    /// Set once `ccf.vellum.rotateServiceIdentity()` was called.
    rotate: std::sync::atomic::AtomicBool,
}

impl GovHost {
    /// CCF's `ccf.network` calls, as [`Store::host`] takes them.
    fn call(&self, name: &str, args: &str) -> Result<String, String> {
        let args: Vec<serde_json::Value> =
            serde_json::from_str(args).map_err(|e| format!("{name}: arguments: {e}"))?;
        match name {
            "network.getLatestLedgerSecretSeqno" => Ok(self.latest_secret_seqno.to_string()),
            "network.generateEndorsedCertificate" => {
                let csr = args.first().and_then(|v| v.as_str()).unwrap_or_default();
                let from = args.get(1).and_then(|v| v.as_str()).unwrap_or_default();
                let days = args
                    .get(2)
                    .and_then(serde_json::Value::as_f64)
                    .filter(|d| d.fract() == 0.0 && *d >= 1.0 && *d <= 36_500.0)
                    .ok_or("the validity period must be a whole number of days, 1 to 36500")?;
                let valid_from = parse_valid_from(from)
                    .ok_or_else(|| format!("valid_from {from:?} is not a date and time"))?;
                let pem = match &self.service_token {
                    Some(t) => vellum_ledger::identity::endorse_csr_with(
                        &self.service_cert_pem,
                        t.as_ref(),
                        csr,
                        valid_from,
                        days as u64,
                    ),
                    None => vellum_ledger::identity::endorse_csr(
                        &self.service_cert_pem,
                        &self.service_key_pem,
                        csr,
                        valid_from,
                        days as u64,
                    ),
                }
                .map_err(|e| {
                    format!("cannot endorse the node's certificate signing request: {e}")
                })?;
                Ok(serde_json::Value::from(pem).to_string())
            }
            "jwt.keyRecords" => jwt_key_records(&args).map(|v| v.to_string()),
            // Shares are issued anew whenever recovery members or the threshold change (see
            // `refresh_recovery_shares`): nothing more to do.
            "node.triggerRecoverySharesRefresh" => Ok("null".into()),
            // The new identity is made with the proposal's transaction (`rotation_writes`).
            "vellum.rotateServiceIdentity" => {
                if self.service_token.is_some() {
                    return Err(
                        "the service key is kept in a PKCS#11 token: it is not rotated by proposal"
                            .into(),
                    );
                }
                self.rotate
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok("null".into())
            }
            "node.transitionServiceToOpen" => {
                let same = |a: &str, b: &str| a.trim() == b.trim();
                let previous = args.first().and_then(|v| v.as_str());
                let next = args.get(1).and_then(|v| v.as_str()).unwrap_or_default();
                if !same(next, &self.service_cert_pem) {
                    return Err("next_service_identity is not this service's certificate".into());
                }
                match (self.status, &self.previous_service_cert) {
                    (Some(tables::ServiceStatus::Open), _) => {
                        Err("the service is already open".into())
                    }
                    (Some(tables::ServiceStatus::WaitingForRecoveryShares), Some(prev)) => {
                        match previous {
                            Some(p) if same(p, prev) => {
                                self.open.store(true, std::sync::atomic::Ordering::Relaxed);
                                Ok("null".into())
                            }
                            _ => Err("previous_service_identity is not the identity this recovered service replaced".into()),
                        }
                    }
                    (Some(tables::ServiceStatus::Recovering), _) => {
                        Err("the service is still recovering its private ledger".into())
                    }
                    _ => {
                        self.open.store(true, std::sync::atomic::Ordering::Relaxed);
                        Ok("null".into())
                    }
                }
            }
            // The new secret; its records are written with the proposal's transaction (see
            // `crate::rekey`). Called twice, the proposal still rekeys once.
            "node.triggerLedgerRekey" => {
                crate::lock(&self.rekey).get_or_insert_with(crate::rekey::fresh_secret);
                Ok("null".into())
            }
            _ => Err(format!("ccf.{name} is not available here")),
        }
    }
}

/// The trusted nodes, with their endorsed certificates (PEM), as `view` holds them.
fn trusted_nodes(view: &GovView) -> Vec<(String, String)> {
    view.rows(tables::NODES_INFO.name())
        .into_iter()
        .filter_map(|(id, info)| {
            let info = tables::NODES_INFO.decode_value(&info).ok()?;
            (info.status == tables::NodeStatus::Trusted).then_some(())?;
            let cert = view.get(tables::NODES_ENDORSED_CERTIFICATES.name(), &id)?;
            Some((String::from_utf8(id).ok()?, String::from_utf8(cert).ok()?))
        })
        .collect()
}

/// A bundle (`[bundle]`, JSON) as `/app/userDefinedEndpoints` would store it, under the same
/// rules (endpoints exclude user-defined functions).
fn normalise_bundle(args: &str, functions_exist: bool) -> Result<String, String> {
    let args: Vec<serde_json::Value> = serde_json::from_str(args).map_err(|e| e.to_string())?;
    let bundle = args.first().ok_or("a bundle is needed")?;
    if bundle.to_string().len() > crate::endpoints::MAX_BUNDLE_BYTES {
        return Err(format!(
            "a bundle is at most {} bytes",
            crate::endpoints::MAX_BUNDLE_BYTES
        ));
    }
    let (normalised, endpoints, _) = crate::endpoints::parse_bundle(bundle)?;
    if !endpoints.is_empty() && functions_exist {
        return Err(Refusal::FunctionsExist.to_string());
    }
    // As text (a JSON string): the constitution stores it as it is.
    Ok(serde_json::Value::from(normalised.to_string()).to_string())
}

/// The most keys one issuer's key set may hold.
const MAX_JWKS_KEYS: usize = 64;

/// CCF's records of an issuer's signing keys (`ccf.setJwtPublicSigningKeys(issuer, metadata,
/// jwks)`): `[kid, {"public_key": base64 of the key's SubjectPublicKeyInfo, "issuer"}]` for each
/// key; the prelude writes them under their `kid`.
fn jwt_key_records(args: &[serde_json::Value]) -> Result<serde_json::Value, String> {
    let issuer = args
        .first()
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or("the issuer must be a non-empty string")?;
    let keys = args
        .get(2)
        .and_then(|j| j["keys"].as_array())
        .ok_or("jwks must be {\"keys\": [...]}")?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(format!("a key set may hold at most {MAX_JWKS_KEYS} keys"));
    }
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let kid = k["kid"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("jwks.keys[{i}] has no kid"))?;
        let spki = vellum_core::jwk::spki_of_jwk(k).map_err(|e| format!("jwks.keys[{i}]: {e}"))?;
        out.push(json!([kid, {
            "public_key": base64::engine::general_purpose::STANDARD.encode(spki),
            "issuer": issuer,
        }]));
    }
    Ok(serde_json::Value::Array(out))
}

/// A certificate's start as CCF's proposals give it: `YYYYMMDDHHMMSSZ`, `YYMMDDHHMMSSZ`
/// (ASN.1's forms) or `YYYY-MM-DD HH:MM:SS` / RFC 3339 (fractions of a second ignored).
fn parse_valid_from(s: &str) -> Option<std::time::SystemTime> {
    let s = s.trim();
    let digits: String = s
        .split(['.', '+'])
        .next()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let (y, rest) = match digits.len() {
        14 => (digits[..4].parse::<i32>().ok()?, &digits[4..]),
        12 => {
            let yy = digits[..2].parse::<i32>().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        _ => return None,
    };
    let n = |i: usize| rest.get(i..i + 2)?.parse::<u8>().ok();
    let month = time::Month::try_from(n(0)?).ok()?;
    let date = time::Date::from_calendar_date(y, month, n(2)?).ok()?;
    let t = time::Time::from_hms(n(4)?, n(6)?, n(8)?).ok()?;
    let unix = time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp();
    let secs = u64::try_from(unix).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

impl Store for GovStore {
    fn access(&self, map: &str) -> MapAccess {
        if map == tables::SIGNATURES.name() {
            return MapAccess::Read;
        }
        // Vellum's ledger users and custom roles (what /app/users manages) and the app (what
        // /app/userDefinedEndpoints deploys): members may manage them by proposal too.
        let ledger_access =
            map == tables::USERS.name() || map == tables::ROLES.name() || map == tables::APP.name();
        match (crate::gov::follows(map) || ledger_access, self.writable) {
            (true, true) => MapAccess::ReadWrite,
            (true, false) => MapAccess::Read,
            _ => MapAccess::None,
        }
    }

    fn get(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if map == tables::SIGNATURES.name() {
            return Ok(self
                .view
                .signature
                .clone()
                .filter(|_| key == vellum_core::entry::SINGLETON_KEY));
        }
        Ok(self.view.get(map, key))
    }

    fn entries(&self, map: &str) -> Result<Entries, StoreError> {
        if map == tables::SIGNATURES.name() {
            return Ok(self
                .view
                .signature
                .clone()
                .map(|s| (vellum_core::entry::SINGLETON_KEY.to_vec(), s))
                .into_iter()
                .collect());
        }
        Ok(self.view.rows(map).into_iter().collect())
    }

    fn host(&self, name: &str, args: &str) -> Result<String, String> {
        if name == "app.normalise" {
            return normalise_bundle(args, self.functions_exist);
        }
        match &self.host {
            Some(h) => h.call(name, args),
            None => Err(format!("ccf.{name} may be called only in apply()")),
        }
    }
}

/// A CCF-style error answer.
fn error(status: u16, code: &str, message: impl Into<String>) -> HttpAnswer {
    HttpAnswer {
        status,
        headers: Vec::new(),
        content_type: Some("application/json".into()),
        body: json!({"error": {"code": code, "message": message.into()}})
            .to_string()
            .into_bytes(),
    }
}

/// CCF's answer to a request its authentication policy refused.
fn unauthenticated(message: impl Into<String>) -> HttpAnswer {
    let mut a = error(401, "InvalidAuthenticationInfo", message);
    a.headers.push((
        "www-authenticate".into(),
        "COSE-SIGN1 realm=\"Signed request access\"".into(),
    ));
    a
}

fn json_answer(status: u16, v: &serde_json::Value) -> HttpAnswer {
    HttpAnswer {
        status,
        headers: Vec::new(),
        content_type: Some("application/json".into()),
        body: v.to_string().into_bytes(),
    }
}

fn no_content() -> HttpAnswer {
    HttpAnswer {
        status: 204,
        headers: Vec::new(),
        content_type: None,
        body: Vec::new(),
    }
}

/// The message of a failed run without the sandbox's `Error while executing function ID: `.
fn reason(message: &str) -> (String, Option<String>) {
    let m = message
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("Error while executing function"))
        .map_or(message, |(_, rest)| rest);
    match m.split_once('\n') {
        Some((first, trace)) => (first.to_owned(), Some(trace.to_owned())),
        None => (m.to_owned(), None),
    }
}

/// The module that calls the constitution's exports with CCF's arguments and reports what
/// they returned in a form the node reads back.
const CALLER: &str = r#"import * as c from "constitution.js";
export function validate(p) {
  const r = c.validate(p);
  const obj = typeof r === "object" && r !== null;
  return JSON.stringify({ obj, valid: obj && r.valid === true,
    description: obj && typeof r.description === "string" ? r.description : "" });
}
export function resolve(p, proposerId, votes, proposalId) {
  return JSON.stringify({ state: String(c.resolve(p, proposerId, JSON.parse(votes), proposalId)) });
}
export function apply(p, proposalId) {
  c.apply(p, proposalId);
  return "";
}
"#;

/// The module that runs one ballot.
const BALLOT_CALLER: &str = r#"import { vote } from "ballot.js";
export function run(p, proposerId) {
  return JSON.stringify(vote(p, proposerId) === true);
}
"#;

impl LedgerNode {
    /// Serves a signed governance request: on the primary, or forwarded to it. The answer is
    /// CCF's, status and body, with the transaction that recorded it, if any.
    pub async fn govern(
        &self,
        req: GovRequest,
    ) -> Result<(HttpAnswer, Option<vellum_core::TxId>), NodeError> {
        // The request carries its own credential: it is forwarded under an empty token id.
        let anonymous = crate::ops::Caller::Token(String::new());
        let done = self
            .perform_full(Some(&anonymous), crate::ops::Op::Gov(req))
            .await?;
        let Some(RunResult::Http(a)) = done.result else {
            return Err(crate::ForwardError::Unexpected("a governance answer").into());
        };
        // Answered once this node has applied it: the member's next request, and every read
        // here, sees what it changed (CCF's governance reads its own writes too).
        if let Some(txid) = done.txid {
            self.wait_applied(txid.seqno, GOV_APPLY_TIMEOUT).await?;
        }
        Ok((a, done.txid))
    }

    /// The latest signature record, as the ledger holds it (`public:ccf.internal.signatures`).
    fn last_signature_record(&self) -> Option<Vec<u8>> {
        let engine = self.ledger.engine();
        let seqno = engine.last_signature()?;
        let (_, ws) = engine.write_set(seqno).ok()?;
        let m = tables::SIGNATURES.find(&ws.maps)?;
        m.writes.first().map(|(_, v)| v.clone())
    }

    /// The digest a member acknowledges: the root its last signature signed (hex).
    fn state_digest(&self) -> Option<String> {
        let record = tables::SIGNATURES
            .decode_value(&self.last_signature_record()?)
            .ok()?;
        Some(record.root.to_hex())
    }

    /// Runs a constitution export over `view` (writable for `apply`).
    async fn constitution_call(
        &self,
        constitution: &str,
        export: &str,
        args: &[String],
        view: &GovView,
        writable: bool,
    ) -> Result<(Outcome, Option<LedgerSecret>, bool, bool), NodeError> {
        let mut modules = Modules::new();
        modules.insert("constitution.js".into(), constitution.to_owned());
        modules.insert("vellum_gov.js".into(), CALLER.to_owned());
        let mut call = Call::new("vellum_gov.js", CALLER, args);
        call.export = export;
        call.modules = Some(Arc::new(modules));
        call.options = gov_options();
        call.seed = self.ledger.last_seqno();
        let host = writable.then(|| {
            let id = self.identity.get();
            Arc::new(GovHost {
                service_cert_pem: id.service_cert_pem.clone(),
                service_key_pem: id.service_key_pem.clone(),
                service_token: self.data.service_token.clone(),
                latest_secret_seqno: self.ledger.engine().keys().secrets.latest_from().max(1),
                rekey: std::sync::Mutex::new(None),
                status: view.service_status(),
                previous_service_cert: id.previous.last().map(|p| p.cert_pem.clone()),
                open: std::sync::atomic::AtomicBool::new(false),
                rotate: std::sync::atomic::AtomicBool::new(false),
            })
        });
        let store = Arc::new(GovStore {
            view: view.clone(),
            writable,
            host: host.clone(),
            functions_exist: self.state.with_functions(|f| !f.is_empty()),
        });
        let outcome = self
            .scripts
            .run(&call, store)
            .await
            .map_err(|e| NodeError::from(Refusal::Sandbox(e.to_string())))?;
        let rekey = host.as_ref().and_then(|h| crate::lock(&h.rekey).take());
        let open = host
            .as_ref()
            .is_some_and(|h| h.open.load(std::sync::atomic::Ordering::Relaxed));
        let rotate = host.is_some_and(|h| h.rotate.load(std::sync::atomic::Ordering::Relaxed));
        Ok((outcome, rekey, open, rotate))
    }

    /// CCF's resolution of a proposal: its ballots, then `resolve`, and `apply` if accepted.
    /// Leaves the new state (and, if it closed, the final votes) in `info` and `view`.
    async fn resolve_proposal(
        &self,
        view: &mut GovView,
        constitution: &str,
        proposal_id: &str,
        proposal: &str,
        info: &mut ProposalInfo,
    ) -> Result<(), NodeError> {
        let mut votes = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for (member, ballot) in &info.ballots {
            let mut modules = Modules::new();
            modules.insert("ballot.js".into(), ballot.clone());
            modules.insert("vellum_ballot.js".into(), BALLOT_CALLER.to_owned());
            let args = [proposal.to_owned(), info.proposer_id.clone()];
            let mut call = Call::new("vellum_ballot.js", BALLOT_CALLER, &args);
            call.export = "run";
            call.modules = Some(Arc::new(modules));
            call.options = gov_options();
            let store = Arc::new(GovStore {
                view: view.clone(),
                writable: false,
                host: None,
                functions_exist: false,
            });
            match self.scripts.run(&call, store).await {
                Ok(Outcome::Succeeded { return_value, .. }) => {
                    votes.insert(member.clone(), return_value == "true");
                }
                Ok(Outcome::Failed { message }) => {
                    let (reason, trace) = reason(&message);
                    failures.insert(member.clone(), Failure { reason, trace });
                }
                Err(e) => return Err(Refusal::Sandbox(e.to_string()).into()),
            }
        }
        let votes_json: Vec<_> = votes
            .iter()
            .map(|(m, v)| json!({"member_id": m, "vote": v}))
            .collect();
        let args = [
            proposal.to_owned(),
            info.proposer_id.clone(),
            serde_json::Value::from(votes_json).to_string(),
            proposal_id.to_owned(),
        ];
        let (outcome, _, _, _) = self
            .constitution_call(constitution, "resolve", &args, view, false)
            .await?;
        info.state = match outcome {
            Outcome::Failed { message } => {
                let (reason, trace) = reason(&message);
                info.failure = Some(Failure {
                    reason: format!("Failed to resolve(): {reason}"),
                    trace,
                });
                ProposalState::Failed
            }
            Outcome::Succeeded { return_value, .. } => {
                let state = serde_json::from_str::<serde_json::Value>(&return_value)
                    .ok()
                    .and_then(|v| v["state"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                match state.as_str() {
                    "Open" => ProposalState::Open,
                    "Accepted" => ProposalState::Accepted,
                    "Rejected" => ProposalState::Rejected,
                    other => {
                        info.failure = Some(Failure {
                            reason: format!("resolve() returned invalid status value: \"{other}\""),
                            trace: None,
                        });
                        ProposalState::Failed
                    }
                }
            }
        };
        view.put_info(proposal_id, info);
        if info.state == ProposalState::Open {
            return Ok(());
        }
        remove_other_closed_proposals(view, proposal_id);
        info.final_votes = Some(votes);
        info.vote_failures = Some(failures);
        view.put_info(proposal_id, info);
        if info.state == ProposalState::Accepted {
            let args = [proposal.to_owned(), proposal_id.to_owned()];
            let (outcome, rekey, open, rotate) = self
                .constitution_call(constitution, "apply", &args, view, true)
                .await?;
            match outcome {
                Outcome::Succeeded { writes, .. } => {
                    view.rekey = view.rekey.take().or(rekey);
                    view.open |= open;
                    view.rotate |= rotate;
                    for (map, keys) in writes {
                        for (k, v) in keys {
                            match v {
                                Some(v) => view.put(&map, &k, v),
                                None => view.remove(&map, &k),
                            }
                        }
                    }
                }
                Outcome::Failed { message } => {
                    let (reason, trace) = reason(&message);
                    info.state = ProposalState::Failed;
                    info.failure = Some(Failure {
                        reason: format!("Failed to apply(): {reason}"),
                        trace,
                    });
                    view.put_info(proposal_id, info);
                }
            }
        }
        Ok(())
    }

    /// Serves a governance request on the primary (see the module documentation).
    pub(super) async fn gov_here(&self, req: &GovRequest) -> Result<Performed, NodeError> {
        // A request that does not authenticate against the tables as they stand is answered
        // without waiting for the turn: anyone may send these bodies, and a flood of forged
        // ones must not delay the runs that take turns. (It is checked again in turn.)
        {
            let applied = self.commit.borrow().applied;
            let before = GovView {
                base: Arc::new(self.state.with_gov(Clone::clone)),
                layers: self.scripts.layers(applied),
                own: Writes::new(),
                signature: None,
                rekey: None,
                open: false,
                rotate: false,
            };
            if let Err(refused) = self.authenticate(req, &before) {
                return Ok(Performed {
                    txid: None,
                    result: Some(RunResult::Http(refused)),
                });
            }
        }
        let turn = self.scripts.turn.lock().await;
        let applied = self.commit.borrow().applied;
        // The governance tables, and Vellum's users, custom roles and app as applied (members
        // may manage them by proposal: the constitution reads and writes them as tables).
        let mut base = self.state.with_gov(Clone::clone);
        let (users, roles) = self.state.with_access(|a| {
            (
                a.users
                    .iter()
                    .map(|(id, roles)| {
                        tables::USERS.entry(
                            id,
                            &tables::UserRecord {
                                roles: roles.clone(),
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
                a.roles
                    .iter()
                    .map(|(name, actions)| {
                        tables::ROLES.entry(
                            name,
                            &tables::RoleRecord {
                                actions: actions.clone(),
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let app: Vec<_> = self
            .state
            .app_records()
            .iter()
            .map(|(k, v)| tables::APP.entry(k, v))
            .collect();
        for (name, rows) in [
            (tables::USERS.name(), users),
            (tables::ROLES.name(), roles),
            (tables::APP.name(), app),
        ] {
            if !rows.is_empty() {
                base.0.insert(name.to_owned(), rows.into_iter().collect());
            }
        }
        let mut view = GovView {
            base: Arc::new(base),
            layers: self.scripts.layers(applied),
            own: Writes::new(),
            signature: self.last_signature_record(),
            rekey: None,
            open: false,
            rotate: false,
        };
        let answer = match self.authenticate(req, &view) {
            Err(refused) => refused,
            Ok((envelope, member_id)) => {
                self.gov_request(req, &envelope, &member_id, &mut view)
                    .await?
            }
        };
        let answer = Performed {
            txid: None,
            result: Some(RunResult::Http(answer)),
        };
        // A request that failed, or changed nothing, records nothing.
        let ok = matches!(&answer.result, Some(RunResult::Http(a)) if a.status < 300);
        if !ok || view.own.is_empty() {
            return Ok(answer);
        }
        if view.open {
            let m = vellum_ledger::genesis::service_info(
                &self.identity.get().service_cert_pem,
                tables::ServiceStatus::Open,
            );
            for (k, v) in &m.writes {
                view.put(&m.name, k, v.clone());
            }
            tracing::info!("the members opened the service");
        }
        let rotate = std::mem::take(&mut view.rotate);
        if rotate {
            self.rotation_writes(&mut view)?;
        }
        let rekey = view.rekey.take();
        if let Some(next) = &rekey {
            self.rekey_writes(&mut view, next)?;
        }
        self.refresh_recovery_shares(&mut view, rekey.as_ref());
        let ws = EntryBuilder {
            maps: map_writes(&view.own),
            ..EntryBuilder::default()
        };
        // After a rekey, the next request must see the new secret (recovery shares wrap the
        // latest): the turn is held until this node has appended the rekey.
        let txid = self
            .record_holding(ws, view.own, turn, rekey.is_some() || rotate)
            .await?;
        Ok(Performed {
            txid: Some(txid),
            ..answer
        })
    }

    /// Writes a service identity rotation into the request's transaction (see
    /// [`crate::rekey::rotation_writes`]).
    fn rotation_writes(&self, view: &mut GovView) -> Result<(), NodeError> {
        let nodes = trusted_nodes(view);
        let now = std::time::SystemTime::now();
        let next = vellum_ledger::identity::Identity::service("Vellum Service", now, 3650)
            .map_err(|e| Refusal::Sandbox(format!("rotation: {e}")))?;
        let status = view.service_status().unwrap_or(tables::ServiceStatus::Open);
        let ws = crate::rekey::rotation_writes(
            &next,
            &self.identity.get().service_cert_pem,
            status,
            &nodes,
        )
        .map_err(|e| Refusal::Sandbox(format!("rotation: {e}")))?;
        for m in &ws.maps {
            for (k, v) in &m.writes {
                view.put(&m.name, k, v.clone());
            }
        }
        tracing::info!(nodes = nodes.len(), "rotating the service identity");
        Ok(())
    }

    /// Writes a rekey to `next` into the request's transaction: the secret it replaces, sealed
    /// under `next`, and `next` sealed to each trusted node (see [`crate::rekey`]).
    fn rekey_writes(&self, view: &mut GovView, next: &LedgerSecret) -> Result<(), NodeError> {
        let nodes = trusted_nodes(view);
        let current = self.ledger.engine().keys().secrets.clone();
        let ws = crate::rekey::rekey_writes(&current, next, &nodes)
            .map_err(|e| Refusal::Sandbox(format!("rekey: {e}")))?;
        for m in &ws.maps {
            for (k, v) in &m.writes {
                view.put(&m.name, k, v.clone());
            }
        }
        tracing::info!(nodes = nodes.len(), "rekeying the ledger");
        Ok(())
    }

    /// Issues recovery shares anew, in the request's transaction, when it changed the recovery
    /// members (the `Active` members with an encryption key) or the service configuration
    /// (its recovery threshold), or rekeyed the ledger to `rekey` (shares wrap the latest
    /// secret). Shares that cannot be issued (a threshold above the number of recovery
    /// members) leave the last ones in place, with a warning.
    fn refresh_recovery_shares(&self, view: &mut GovView, rekey: Option<&LedgerSecret>) {
        let touched = rekey.is_some()
            || [
                tables::MEMBERS_INFO.name(),
                tables::MEMBERS_ENCRYPTION_PUBLIC_KEYS.name(),
                tables::SERVICE_CONFIG.name(),
            ]
            .iter()
            .any(|t| view.own.contains_key(*t));
        if !touched {
            return;
        }
        let members =
            crate::recovery::recovery_members(view.rows(tables::MEMBERS_INFO.name()), |id| {
                view.get(tables::MEMBERS_ENCRYPTION_PUBLIC_KEYS.name(), id)
            });
        let config = view
            .get(
                tables::SERVICE_CONFIG.name(),
                &vellum_core::entry::SINGLETON_KEY,
            )
            .and_then(|v| tables::SERVICE_CONFIG.decode_value(&v).ok())
            .unwrap_or_default();
        let current = view
            .get(
                tables::RECOVERY_SHARES.name(),
                &vellum_core::entry::SINGLETON_KEY,
            )
            .and_then(|v| tables::RECOVERY_SHARES.decode_value(&v).ok());
        let same_members = current.as_ref().is_some_and(|c| {
            c.encrypted_shares
                .keys()
                .eq(members.iter().map(|(id, _)| id))
        });
        if members.is_empty()
            || (same_members
                && rekey.is_none()
                && !view.own.contains_key(tables::SERVICE_CONFIG.name()))
        {
            return;
        }
        let threshold = usize::try_from(config.recovery_threshold).unwrap_or(usize::MAX);
        let secrets = self.ledger.engine().keys().secrets.clone();
        let latest = rekey.unwrap_or(secrets.latest());
        match crate::recovery::issue(latest, &members, threshold) {
            Ok((mut info, digests)) => {
                // Where the secret before the latest was recorded: the latest rekey.
                info.previous_secret_stored_version = match rekey {
                    Some(_) => None,
                    None => secrets.latest_from().checked_sub(1).filter(|s| *s > 0),
                };
                let (k, v) = tables::RECOVERY_SHARES.entry(&(), &info);
                view.put(tables::RECOVERY_SHARES.name(), &k, v);
                let (k, v) = tables::RECOVERY_SHARE_DIGESTS.entry(&(), &digests);
                view.put(tables::RECOVERY_SHARE_DIGESTS.name(), &k, v);
                tracing::info!(members = members.len(), threshold, "issued recovery shares");
            }
            Err(e) => tracing::warn!(error = %e, "recovery shares not issued"),
        }
    }

    /// CCF's member COSE_Sign1 authentication: the envelope's shape, its signer a known member
    /// whose certificate verifies it, signed as the route's message type, and for proposals,
    /// ballots and withdrawals an active member.
    fn authenticate(
        &self,
        req: &GovRequest,
        view: &GovView,
    ) -> Result<(Envelope, String), HttpAnswer> {
        let e = Envelope::parse(&req.envelope).map_err(|e| unauthenticated(e.to_string()))?;
        let cert = view
            .get(tables::MEMBERS_CERTS.name(), e.kid.as_bytes())
            .ok_or_else(|| unauthenticated("Signer is not a known member"))?;
        let cert = Certificate::from_pem(&String::from_utf8_lossy(&cert))
            .map_err(|e| unauthenticated(format!("the member's certificate: {e}")))?;
        e.verify(&cert)
            .map_err(|_| unauthenticated("Failed to validate COSE Sign1"))?;
        let want = req.kind.msg_type();
        if e.msg_type != want {
            return Err(unauthenticated(format!(
                "Found ccf.gov.msg.type '{}', expected '{}'",
                e.msg_type.as_str(),
                want.as_str()
            )));
        }
        if req.kind.needs_active_member() && view.member_status(&e.kid).as_deref() != Some("Active")
        {
            return Err(unauthenticated(format!(
                "Signer {} is not an active member",
                e.kid
            )));
        }
        let id = e.kid.clone();
        Ok((e, id))
    }

    async fn gov_request(
        &self,
        req: &GovRequest,
        e: &Envelope,
        signer: &str,
        view: &mut GovView,
    ) -> Result<HttpAnswer, NodeError> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&req.envelope);
        let history = |view: &mut GovView| {
            let (k, v) = tables::COSE_HISTORY.entry(signer, &b64);
            view.put(tables::COSE_HISTORY.name(), &k, v);
        };
        let signed_proposal = |url: &str| -> Result<(), HttpAnswer> {
            if e.proposal_id.as_deref() == Some(url) {
                Ok(())
            } else {
                Err(error(
                    400,
                    "InvalidResourceName",
                    "Authenticated proposal id does not match URL",
                ))
            }
        };
        Ok(match &req.kind {
            GovKind::UpdateDigest { member_id } | GovKind::Ack { member_id }
                if member_id != signer =>
            {
                error(
                    400,
                    "InvalidAuthenticationInfo",
                    format!(
                        "Member ID from path parameter ({member_id}) does not match member ID \
                         from body signature ({signer})."
                    ),
                )
            }
            GovKind::UpdateDigest { member_id } => {
                let Some(digest) = self.state_digest() else {
                    return Ok(error(
                        500,
                        "InternalError",
                        "Service has no signatures to ack yet - try again soon.",
                    ));
                };
                let mut ack = view
                    .get(tables::MEMBERS_ACKS.name(), member_id.as_bytes())
                    .and_then(|v| tables::MEMBERS_ACKS.decode_value(&v).ok())
                    .unwrap_or_default();
                ack.state_digest = digest.clone();
                let (k, v) = tables::MEMBERS_ACKS.entry(member_id, &ack);
                view.put(tables::MEMBERS_ACKS.name(), &k, v);
                json_answer(200, &json!({"memberId": member_id, "stateDigest": digest}))
            }
            GovKind::Ack { member_id } => {
                let Some(mut ack) = view
                    .get(tables::MEMBERS_ACKS.name(), member_id.as_bytes())
                    .and_then(|v| tables::MEMBERS_ACKS.decode_value(&v).ok())
                else {
                    return Ok(error(
                        403,
                        "AuthorizationFailed",
                        format!("No ACK record exists for member {member_id}."),
                    ));
                };
                let signed: Option<String> =
                    serde_json::from_slice::<serde_json::Value>(&e.payload)
                        .ok()
                        .and_then(|v| v["stateDigest"].as_str().map(str::to_owned));
                let signed = signed.unwrap_or_default();
                if signed != ack.state_digest {
                    return Ok(error(
                        400,
                        "StateDigestMismatch",
                        format!(
                            "Submitted state digest is not valid.\nExpected\n {}\nReceived\n {}",
                            ack.state_digest, signed
                        ),
                    ));
                }
                ack = MemberAck {
                    cose_sign1_req: Some(b64.clone()),
                    state_digest: signed,
                };
                let (k, v) = tables::MEMBERS_ACKS.entry(member_id, &ack);
                view.put(tables::MEMBERS_ACKS.name(), &k, v);
                // Active, keeping whatever else the member's record holds.
                let mut info: serde_json::Value = view
                    .get(tables::MEMBERS_INFO.name(), member_id.as_bytes())
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_else(|| json!({}));
                info["status"] = "Active".into();
                view.put(
                    tables::MEMBERS_INFO.name(),
                    member_id.as_bytes(),
                    info.to_string().into_bytes(),
                );
                no_content()
            }
            GovKind::Propose => self.create_proposal(e, signer, view, &b64).await?,
            GovKind::Ballot {
                proposal_id,
                member_id,
            } => {
                if let Err(a) = signed_proposal(proposal_id) {
                    return Ok(a);
                }
                if member_id != signer {
                    return Ok(error(
                        400,
                        "InvalidResourceName",
                        "Authenticated member id does not match URL",
                    ));
                }
                let not_found = || {
                    error(
                        404,
                        "ProposalNotFound",
                        format!("Could not find proposal {proposal_id}."),
                    )
                };
                let Some(mut info) = view.info(proposal_id) else {
                    return Ok(not_found());
                };
                if info.state != ProposalState::Open {
                    return Ok(error(
                        400,
                        "ProposalNotOpen",
                        format!(
                            "Proposal {proposal_id} is currently in state {} - only Open \
                             proposals can receive votes",
                            state_name(info.state)
                        ),
                    ));
                }
                let Some(proposal) = view.get(tables::PROPOSALS.name(), proposal_id.as_bytes())
                else {
                    return Ok(not_found());
                };
                let ballot = serde_json::from_slice::<serde_json::Value>(&e.payload)
                    .ok()
                    .and_then(|v| v["ballot"].as_str().map(str::to_owned));
                let Some(ballot) = ballot else {
                    return Ok(error(
                        400,
                        "InvalidInput",
                        "Signed request body is not a JSON object containing required string \
                         field \"ballot\"",
                    ));
                };
                let Some(constitution) = self.current_constitution(view) else {
                    return Ok(error(
                        500,
                        "InternalError",
                        "No constitution is set - ballots cannot be evaluated",
                    ));
                };
                match info.ballots.get(member_id) {
                    Some(b) if *b == ballot => {
                        return Ok(json_answer(200, &proposal_json(proposal_id, &info)));
                    }
                    Some(_) => {
                        return Ok(error(
                            400,
                            "VoteAlreadyExists",
                            format!(
                                "Different ballot already submitted by {member_id} for \
                                 {proposal_id}."
                            ),
                        ));
                    }
                    None => {}
                }
                info.ballots.insert(member_id.clone(), ballot);
                history(view);
                let proposal = String::from_utf8_lossy(&proposal).into_owned();
                self.resolve_proposal(view, &constitution, proposal_id, &proposal, &mut info)
                    .await?;
                if info.state == ProposalState::Failed {
                    return Ok(failed_answer(&info));
                }
                json_answer(200, &proposal_json(proposal_id, &info))
            }
            GovKind::Withdraw { proposal_id } => {
                if let Err(a) = signed_proposal(proposal_id) {
                    return Ok(a);
                }
                let Some(mut info) = view.info(proposal_id) else {
                    return Ok(no_content());
                };
                if info.proposer_id != signer {
                    return Ok(error(
                        403,
                        "AuthorizationFailed",
                        format!(
                            "Proposal {proposal_id} can only be withdrawn by proposer {}, not \
                             caller {signer}.",
                            info.proposer_id
                        ),
                    ));
                }
                match info.state {
                    ProposalState::Open => {
                        info.state = ProposalState::Withdrawn;
                        view.put_info(proposal_id, &info);
                        remove_other_closed_proposals(view, proposal_id);
                        history(view);
                    }
                    ProposalState::Withdrawn => {}
                    other => {
                        return Ok(error(
                            400,
                            "ProposalNotOpen",
                            format!(
                                "Proposal {proposal_id} is currently in state {} and cannot be \
                                 withdrawn.",
                                state_name(other)
                            ),
                        ));
                    }
                }
                json_answer(200, &proposal_json(proposal_id, &info))
            }
        })
    }

    /// The constitution in force for this request.
    fn current_constitution(&self, view: &GovView) -> Option<String> {
        let v = view.get(
            tables::CONSTITUTION.name(),
            &vellum_core::entry::SINGLETON_KEY,
        )?;
        tables::CONSTITUTION.decode_value(&v).ok()
    }

    /// `proposals:create`: validated by the constitution, its time checked against recent
    /// proposals, recorded, and resolved (it may pass at once).
    async fn create_proposal(
        &self,
        e: &Envelope,
        signer: &str,
        view: &mut GovView,
        b64: &str,
    ) -> Result<HttpAnswer, NodeError> {
        // The id binds the proposal to the state it was made against: SHA-256 of the Merkle
        // root, then of SHA-256 of the signature.
        let request_digest = Sha256::digest(&e.signature);
        let root = self.ledger.engine().root()?;
        let mut h = Sha256::new();
        h.update(root.0);
        h.update(request_digest);
        let proposal_id = hex::encode(h.finalize());
        let Some(constitution) = self.current_constitution(view) else {
            return Ok(error(
                500,
                "InternalError",
                "No constitution is set - proposals cannot be evaluated",
            ));
        };
        let proposal = String::from_utf8_lossy(&e.payload).into_owned();
        match self
            .constitution_call(
                &constitution,
                "validate",
                std::slice::from_ref(&proposal),
                view,
                false,
            )
            .await?
            .0
        {
            Outcome::Failed { message } => {
                let (reason, trace) = reason(&message);
                return Ok(error(
                    500,
                    "InternalError",
                    format!(
                        "Failed to execute validation: {reason} {}",
                        trace.unwrap_or_default()
                    ),
                ));
            }
            Outcome::Succeeded { return_value, .. } => {
                let v: serde_json::Value = serde_json::from_str(&return_value).unwrap_or_default();
                if v["obj"] != true {
                    return Ok(error(
                        500,
                        "InternalError",
                        "Validation failed to return an object",
                    ));
                }
                if v["valid"] != true {
                    return Ok(error(
                        400,
                        "ProposalFailedToValidate",
                        format!(
                            "Proposal failed to validate: {}",
                            v["description"].as_str().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        if view
            .get(tables::PROPOSALS.name(), proposal_id.as_bytes())
            .is_some()
        {
            return Ok(error(500, "InternalError", "Proposal ID collision."));
        }
        view.put(
            tables::PROPOSALS.name(),
            proposal_id.as_bytes(),
            e.payload.clone(),
        );
        let mut info = ProposalInfo {
            ballots: BTreeMap::new(),
            failure: None,
            final_votes: None,
            proposer_id: signer.to_owned(),
            state: ProposalState::Open,
            vote_failures: None,
        };
        view.put_info(&proposal_id, &info);
        let (k, v) = tables::COSE_HISTORY.entry(signer, b64);
        view.put(tables::COSE_HISTORY.name(), &k, v);
        if e.created_at > MAX_CREATED_AT {
            return Ok(error(
                400,
                "InvalidCreatedAt",
                "Header parameter created_at value is too large",
            ));
        }
        if let Err(a) = check_submission_time(view, e.created_at, &request_digest, &proposal_id) {
            return Ok(a);
        }
        self.resolve_proposal(view, &constitution, &proposal_id, &proposal, &mut info)
            .await?;
        if info.state == ProposalState::Failed {
            return Ok(failed_answer(&info));
        }
        Ok(json_answer(200, &proposal_json(&proposal_id, &info)))
    }
}

/// CCF's runtime options for the constitution (its defaults, which CCF never lowers).
fn gov_options() -> vellum_js::RuntimeOptions {
    vellum_js::RuntimeOptions {
        max_heap_bytes: 100 << 20,
        max_stack_bytes: 1 << 20,
        max_execution_time_ms: 1_000,
        ..vellum_js::RuntimeOptions::default()
    }
}

/// The answer to a proposal whose `resolve` or `apply` failed: nothing is recorded.
fn failed_answer(info: &ProposalInfo) -> HttpAnswer {
    let f = info.failure.clone().unwrap_or(Failure {
        reason: String::new(),
        trace: None,
    });
    error(
        500,
        "InternalError",
        serde_json::to_string(&f).unwrap_or_default(),
    )
}

fn state_name(s: ProposalState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Drops every closed proposal but `keep` (CCF keeps closed proposals only until the next one
/// closes).
fn remove_other_closed_proposals(view: &mut GovView, keep: &str) {
    let closed: Vec<Vec<u8>> = view
        .rows(tables::PROPOSALS_INFO.name())
        .into_iter()
        .filter(|(k, v)| {
            k.as_slice() != keep.as_bytes()
                && tables::PROPOSALS_INFO
                    .decode_value(v)
                    .is_ok_and(|i| i.state != ProposalState::Open)
        })
        .map(|(k, _)| k)
        .collect();
    for k in closed {
        view.remove(tables::PROPOSALS.name(), &k);
        view.remove(tables::PROPOSALS_INFO.name(), &k);
    }
}

/// CCF's replay protection: a proposal's `created_at` and signature must not repeat one in
/// the window of recent proposals, and must not be older than the window's median; the window
/// keeps the latest [`RECENT_PROPOSALS_WINDOW`].
fn check_submission_time(
    view: &mut GovView,
    created_at: i64,
    request_digest: &[u8],
    proposal_id: &str,
) -> Result<(), HttpAnswer> {
    let table = tables::COSE_RECENT_PROPOSALS.name();
    let key = format!("{created_at:0>10}:{}", hex::encode(request_digest));
    if let Some(v) = view.get(table, key.as_bytes()) {
        let colliding = tables::COSE_RECENT_PROPOSALS
            .decode_value(&v)
            .unwrap_or_default();
        return Err(error(
            400,
            "ProposalReplay",
            format!("Proposal submission replay, already exists as proposal {colliding}"),
        ));
    }
    let keys: Vec<Vec<u8>> = view.rows(table).into_keys().collect();
    if let Some(median) = keys.get(keys.len() / 2) {
        let min = String::from_utf8_lossy(median)
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        if key.split(':').next().unwrap_or_default() < min.as_str() {
            return Err(error(
                400,
                "ProposalCreatedTooLongAgo",
                format!("Proposal created too long ago, created_at must be greater than {min}"),
            ));
        }
    }
    let (k, v) = tables::COSE_RECENT_PROPOSALS.entry(&key, proposal_id);
    view.put(table, &k, v);
    if keys.len() + 1 > RECENT_PROPOSALS_WINDOW {
        for k in keys.iter().take(keys.len() + 1 - RECENT_PROPOSALS_WINDOW) {
            view.remove(table, k);
        }
    }
    Ok(())
}

//! User-defined endpoints: a CCF JavaScript app bundle deployed as new routes under `/app/`
//! (`acl-2024-api.md` §6), and the runtime options their runs share. Both are kept in
//! [`tables::APP`] (`bundle` and `runtime_options`, JSON), so deploying is a transaction: every
//! node serves the same app, a restart keeps it, and the ledger shows who deployed what.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::tables;
use vellum_js::{Modules, RuntimeOptions};

/// The app's records by key ([`BUNDLE`], [`RUNTIME_OPTIONS`]), JSON text.
pub type AppRecords = BTreeMap<String, String>;

/// The key of the deployed bundle.
pub const BUNDLE: &str = "bundle";
/// The key of the endpoints' runtime options.
pub const RUNTIME_OPTIONS: &str = "runtime_options";

/// The largest bundle, in bytes of JSON.
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;

/// The write set that records `json` under `key`.
pub fn put(key: &str, json: &str) -> EntryBuilder {
    EntryBuilder::default().map(tables::APP.write(key, json))
}

/// Whether `name` is [`tables::APP`].
pub fn follows(name: &str) -> bool {
    name == tables::APP
}

/// Applies a committed write to [`tables::APP`]; true if `m` was that table.
pub fn apply(records: &mut AppRecords, m: &MapWrites) -> bool {
    if !follows(&m.name) {
        return false;
    }
    crate::apply_records(records, m, |v| tables::APP.decode_value(v));
    true
}

/// The empty bundle: what `GET /app/userDefinedEndpoints` answers before any deployment, and
/// what a deployment of no endpoints stores.
pub fn empty_bundle() -> Value {
    json!({"metadata": {"endpoints": {}}, "modules": []})
}

/// The runtime options of endpoints before any are set: what ACL's ledgers report (100 MiB
/// heap, 1 MiB stack, 1 s, 10 cached interpreters, no exception details).
pub fn default_options() -> RuntimeOptions {
    RuntimeOptions {
        max_heap_bytes: 100 << 20,
        max_stack_bytes: 1 << 20,
        max_execution_time_ms: 1_000,
        max_cached_interpreters: 10,
        log_exception_details: false,
        return_exception_details: false,
    }
}

/// How an endpoint authenticates its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// A certificate of a ledger user.
    UserCert,
    /// A certificate of a consortium member.
    MemberCert,
    /// Any client certificate.
    AnyCert,
    /// A bearer token from a trusted issuer.
    Jwt,
    /// Anyone.
    NoAuth,
    /// Every one of these.
    AllOf(Vec<Policy>),
}

impl Policy {
    fn parse(v: &Value) -> Result<Policy, String> {
        match v {
            Value::String(s) => match s.as_str() {
                "user_cert" => Ok(Policy::UserCert),
                "member_cert" => Ok(Policy::MemberCert),
                "any_cert" => Ok(Policy::AnyCert),
                "jwt" => Ok(Policy::Jwt),
                "no_auth" => Ok(Policy::NoAuth),
                other => Err(format!(
                    "authentication policy {other:?} is not supported (user_cert, member_cert, \
                     any_cert, jwt, no_auth, {{\"all_of\": [...]}})"
                )),
            },
            Value::Object(o) if o.len() == 1 => match o.get("all_of") {
                Some(Value::Array(all)) if !all.is_empty() => Ok(Policy::AllOf(
                    all.iter().map(Policy::parse).collect::<Result<_, _>>()?,
                )),
                _ => Err("\"all_of\" takes a non-empty array of policies".into()),
            },
            _ => Err(format!("not an authentication policy: {v}")),
        }
    }

    /// The policy's name in a caller object.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::UserCert => "user_cert",
            Policy::MemberCert => "member_cert",
            Policy::AnyCert => "any_cert",
            Policy::Jwt => "jwt",
            Policy::NoAuth => "no_auth",
            Policy::AllOf(_) => "all_of",
        }
    }
}

/// An endpoint's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// May write: runs on the primary (a backup forwards it).
    ReadWrite,
    /// Reads only: runs on the node that took the request.
    ReadOnly,
}

/// One method of one endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL template as deployed (`/account/{account_name}`).
    pub template: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The module and the export that handle it.
    pub module: String,
    /// See above.
    pub function: String,
    /// Tried in order; the first that passes authenticates the caller (none: anyone).
    pub policies: Vec<Policy>,
    /// See [`Mode`].
    pub mode: Mode,
    /// CCF's `interpreter_reuse.key`: requests with the same key share an interpreter.
    pub reuse_key: Option<String>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

impl Endpoint {
    /// The path parameters if `path` (after `/app`) matches this endpoint's template.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    let decoded = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    params.insert(name.clone(), decoded);
                }
            }
        }
        Some(params)
    }
}

/// Path parameters by name.
pub type Params = BTreeMap<String, String>;

/// A deployed app, parsed.
#[derive(Debug, Clone)]
pub struct App {
    /// The bundle as deployed (modules as an array).
    pub bundle: Option<Value>,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Its modules by name.
    pub modules: Arc<Modules>,
    /// The runtime options of its runs.
    pub options: RuntimeOptions,
    /// Hex SHA-256 of the bundle as recorded (empty without one): interpreters reused by
    /// key are reused only by the same bundle.
    pub digest: String,
}

impl Default for App {
    /// No app, the default runtime options.
    fn default() -> App {
        App::from_records(&AppRecords::new())
    }
}

impl App {
    /// The app recorded in `records` (a record that does not parse counts as absent: it cannot
    /// be written through the API).
    pub fn from_records(records: &AppRecords) -> App {
        let options = records
            .get(RUNTIME_OPTIONS)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_else(default_options);
        let digest = records.get(BUNDLE).map_or_else(String::new, |j| {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(j))
        });
        let parsed = records
            .get(BUNDLE)
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .and_then(|v| parse_bundle(&v).ok());
        match parsed {
            Some((bundle, endpoints, modules)) => App {
                bundle: Some(bundle),
                endpoints,
                modules: Arc::new(modules),
                options,
                digest,
            },
            None => App {
                bundle: None,
                endpoints: Vec::new(),
                modules: Arc::new(Modules::new()),
                options,
                digest,
            },
        }
    }

    /// Whether it has endpoints (user-defined functions and endpoints exclude each other).
    pub fn is_deployed(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The endpoint for `method` at `path` (after `/app`), with its path parameters; `Err` if
    /// the path matches an endpoint but not the method (405).
    pub fn route(&self, method: &str, path: &str) -> Option<Result<(&Endpoint, Params), ()>> {
        let mut path_matched = false;
        for e in &self.endpoints {
            if let Some(params) = e.matches(path) {
                if e.method == method {
                    return Some(Ok((e, params)));
                }
                path_matched = true;
            }
        }
        path_matched.then_some(Err(()))
    }
}

/// Parses and checks a bundle: `{"metadata": {"endpoints": {PATH: {VERB: PROPS}}}, "modules":
/// [{"name", "module"}]}` (a single module object is accepted as a one-element array). Returns
/// it normalised (paths with a leading `/`, modules as an array), its endpoints and modules.
/// Every module must compile (imports are checked when a handler first runs).
pub fn parse_bundle(v: &Value) -> Result<(Value, Vec<Endpoint>, Modules), String> {
    if !v.is_object() {
        return Err("a bundle is an object: {\"metadata\", \"modules\"}".into());
    }
    let modules_v = match v.get("modules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(o @ Value::Object(_)) => vec![o.clone()],
        Some(_) => return Err("\"modules\" must be an array of {\"name\", \"module\"}".into()),
    };
    let mut modules = Modules::new();
    for m in &modules_v {
        let (Some(name), Some(code)) = (
            m.get("name").and_then(Value::as_str),
            m.get("module").and_then(Value::as_str),
        ) else {
            return Err("each module is {\"name\": string, \"module\": string}".into());
        };
        let name = name.trim_start_matches('/').to_owned();
        if name.is_empty() || modules.insert(name.clone(), code.to_owned()).is_some() {
            return Err(format!(
                "module names must be unique and not empty: {name:?}"
            ));
        }
    }
    let eps = match v.pointer("/metadata/endpoints") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err("\"metadata.endpoints\" must be an object".into()),
    };
    let mut endpoints = Vec::new();
    let mut normalised = serde_json::Map::new();
    for (path, verbs) in &eps {
        let template = format!("/{}", path.trim_start_matches('/'));
        let Value::Object(verbs) = verbs else {
            return Err(format!("endpoint {template:?}: methods must be an object"));
        };
        let segments: Vec<Segment> = template
            .trim_start_matches('/')
            .split('/')
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(p) => Segment::Param(p.to_owned()),
                    None => Segment::Literal(s.to_owned()),
                },
            )
            .collect();
        for (verb, props) in verbs {
            let method = verb.to_ascii_uppercase();
            if !matches!(
                method.as_str(),
                "GET" | "PUT" | "POST" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS"
            ) {
                return Err(format!("endpoint {template:?}: unknown method {verb:?}"));
            }
            let field = |k: &str| props.get(k).and_then(Value::as_str);
            let module = field("js_module")
                .map(|m| m.trim_start_matches('/').to_owned())
                .ok_or_else(|| format!("{verb} {template}: \"js_module\" is required"))?;
            if !modules.contains_key(&module) {
                return Err(format!(
                    "{verb} {template}: module {module:?} is not in the bundle"
                ));
            }
            let function = field("js_function")
                .ok_or_else(|| format!("{verb} {template}: \"js_function\" is required"))?
                .to_owned();
            let policies = match props.get("authn_policies") {
                Some(Value::Array(a)) => a.iter().map(Policy::parse).collect::<Result<_, _>>(),
                _ => Err("\"authn_policies\" (an array) is required".into()),
            }
            .map_err(|e| format!("{verb} {template}: {e}"))?;
            let mode = match field("mode").unwrap_or("readwrite") {
                "readwrite" => Mode::ReadWrite,
                "readonly" | "historical" => Mode::ReadOnly,
                other => return Err(format!("{verb} {template}: unknown mode {other:?}")),
            };
            let reuse_key = props
                .pointer("/interpreter_reuse/key")
                .and_then(Value::as_str)
                .map(str::to_owned);
            endpoints.push(Endpoint {
                template: template.clone(),
                method,
                module,
                function,
                policies,
                mode,
                reuse_key,
                segments: segments.clone(),
            });
        }
        normalised.insert(template, Value::Object(verbs.clone()));
    }
    let shared = Arc::new(modules.clone());
    for (name, code) in &modules {
        vellum_js::check_in(name, code, Some(shared.clone()))
            .map_err(|e| format!("module {name:?} does not compile: {e}"))?;
    }
    let bundle = json!({"metadata": {"endpoints": normalised}, "modules": modules_v});
    Ok((bundle, endpoints, modules))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bundles_parse_route_and_refuse_what_they_cannot_serve() {
        let b = json!({
            "metadata": {"endpoints": {
                "account/{name}": {"put": {"js_module": "a.js", "js_function": "put",
                    "authn_policies": ["user_cert", {"all_of": ["any_cert", "jwt"]}],
                    "forwarding_required": "always", "mode": "readwrite"}},
                "/account/{name}/balance": {"get": {"js_module": "/a.js", "js_function": "get",
                    "authn_policies": [], "mode": "readonly", "interpreter_reuse": {"key": "k"}}},
            }},
            "modules": {"name": "a.js", "module": "export const put = () => 1, get = () => 2;"},
        });
        let (norm, eps, modules) = parse_bundle(&b).unwrap();
        assert_eq!(eps.len(), 2);
        assert!(norm["metadata"]["endpoints"]["/account/{name}"].is_object());
        assert!(norm["modules"].is_array());
        assert_eq!(modules.len(), 1);
        let app = App {
            bundle: Some(norm),
            endpoints: eps,
            modules: Arc::new(modules),
            options: default_options(),
            digest: String::new(),
        };
        let (e, params) = app.route("PUT", "/account/al%20ice").unwrap().unwrap();
        assert_eq!(
            (e.function.as_str(), params["name"].as_str()),
            ("put", "al ice")
        );
        assert_eq!(
            e.policies[1],
            Policy::AllOf(vec![Policy::AnyCert, Policy::Jwt])
        );
        let (e, _) = app.route("GET", "/account/x/balance").unwrap().unwrap();
        assert_eq!(
            (e.mode, e.reuse_key.as_deref()),
            (Mode::ReadOnly, Some("k"))
        );
        assert!(app.route("DELETE", "/account/x").unwrap().is_err());
        assert!(app.route("GET", "/account").is_none());
        assert!(app.route("GET", "/account/x/balance/more").is_none());
        for (bad, why) in [
            (
                json!({"metadata": {"endpoints": {"/x": {"get": {"js_module": "nope.js", "js_function": "f", "authn_policies": []}}}}, "modules": []}),
                "not in the bundle",
            ),
            (
                json!({"metadata": {"endpoints": {"/x": {"get": {"js_module": "a.js", "js_function": "f"}}}}, "modules": [{"name": "a.js", "module": "export const f = 1;"}]}),
                "authn_policies",
            ),
            (
                json!({"metadata": {"endpoints": {"/x": {"get": {"js_module": "a.js", "js_function": "f", "authn_policies": ["user_cose_sign1"]}}}}, "modules": [{"name": "a.js", "module": "export const f = 1;"}]}),
                "not supported",
            ),
            (
                json!({"metadata": {"endpoints": {"/x": {"brew": {"js_module": "a.js", "js_function": "f", "authn_policies": []}}}}, "modules": [{"name": "a.js", "module": "export const f = 1;"}]}),
                "unknown method",
            ),
            (
                json!({"modules": [{"name": "a.js", "module": "export function ( {"}]}),
                "does not compile",
            ),
            (
                json!({"modules": [{"name": "a.js", "module": "1"}, {"name": "a.js", "module": "2"}]}),
                "unique",
            ),
        ] {
            let e = parse_bundle(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let (norm, eps, _) = parse_bundle(&empty_bundle()).unwrap();
        assert_eq!((norm, eps.len()), (empty_bundle(), 0));
    }
}

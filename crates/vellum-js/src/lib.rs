//! Vellum's JavaScript sandbox: runs an ACL user-defined function (one self-contained ES
//! module) in QuickJS, the engine CCF embeds, with CCF's `ccf` global over the ledger's
//! key-value maps (`acl-2024-api.md` §5.3, §6.4).
//!
//! A run is pure and bounded:
//!
//! * it sees no file, network, clock or randomness: only its arguments, the `context` object
//!   the caller gives, and the maps a [`Store`] lets it read;
//! * its heap, stack and time are capped by [`RuntimeOptions`] (ACL's names and defaults), each
//!   held under a hard ceiling whatever a caller asks; past a cap the run ends with
//!   [`Outcome::Failed`], and the caller's thread carries on;
//! * what it writes is collected as [`Writes`] and returned only if it succeeds: the caller
//!   records them in one ledger transaction, or nothing at all.
//!
//! ```
//! use std::sync::Arc;
//! use vellum_js::{Call, EmptyStore, Outcome, RuntimeOptions, run};
//!
//! let code = r#"export function main(name) {
//!     ccf.kv["public:greetings"].set(ccf.strToBuf(name), ccf.strToBuf("hello"));
//!     return "hello, " + name;
//! }"#;
//! let outcome = run(
//!     &Call::new("greet", code, &["ada".to_owned()]),
//!     Arc::new(EmptyStore::writable("public:greetings")),
//! );
//! let Outcome::Succeeded { return_value, writes, .. } = outcome else { panic!() };
//! assert_eq!(return_value, "hello, ada");
//! assert_eq!(writes["public:greetings"][b"ada".as_slice()], Some(b"hello".to_vec()));
//! ```

mod crypto;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{
    Array, ArrayBuffer, CaughtError, Context, Ctx, Function, Module, Object, Runtime, Value,
};
use sha2::{Digest, Sha256};

/// The most heap a run may have, whatever its options ask (bytes).
pub const MAX_HEAP_BYTES: u64 = 256 << 20;
/// The most stack a run may have, whatever its options ask (bytes). Runs execute on a thread
/// of their own whose stack is larger than this, so QuickJS's own check always fires first.
pub const MAX_STACK_BYTES: u64 = 8 << 20;
/// The longest a run may take, whatever its options ask (ACL: "a UDF or hook may run at most
/// 5 s").
pub const MAX_EXECUTION_TIME_MS: u64 = 5_000;
/// The most interpreters a [`Worker`] keeps for reuse, whatever the options ask.
pub const MAX_CACHED_INTERPRETERS: u64 = 64;
/// The longest return value, in bytes of its string form.
pub const MAX_RETURN_BYTES: usize = 1 << 20;
/// The most a run may write, in bytes of keys and values (writes live outside the script's
/// heap, so they have a cap of their own).
pub const MAX_WRITE_BYTES: usize = 4 << 20;

/// ACL's JavaScript runtime options (`JsRuntimeOptions`, snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RuntimeOptions {
    /// Heap limit, bytes.
    pub max_heap_bytes: u64,
    /// Stack limit, bytes.
    pub max_stack_bytes: u64,
    /// Time limit, milliseconds.
    pub max_execution_time_ms: u64,
    /// Interpreters kept for reuse by runs that ask for it ([`Call::reuse`]); 0, the default
    /// for user-defined functions, gives every run a fresh interpreter, as ACL documents.
    pub max_cached_interpreters: u64,
    /// Log a failed run's exception (the caller logs: the sandbox has no logger).
    pub log_exception_details: bool,
    /// Return a failed run's stack with its message.
    pub return_exception_details: bool,
}

impl Default for RuntimeOptions {
    /// The defaults ACL documents for user-defined functions: 10 MiB heap, 1 MiB stack,
    /// 1,000 ms, exception details logged and returned, and no interpreter reuse.
    fn default() -> Self {
        RuntimeOptions {
            max_heap_bytes: 10 << 20,
            max_stack_bytes: 1 << 20,
            max_execution_time_ms: 1_000,
            max_cached_interpreters: 0,
            log_exception_details: true,
            return_exception_details: true,
        }
    }
}

impl RuntimeOptions {
    /// The options held under the ceilings ([`MAX_HEAP_BYTES`], [`MAX_STACK_BYTES`],
    /// [`MAX_EXECUTION_TIME_MS`]), with at least 1 MiB of heap, 64 KiB of stack and 1 ms.
    pub fn clamped(self) -> RuntimeOptions {
        RuntimeOptions {
            max_heap_bytes: self.max_heap_bytes.clamp(1 << 20, MAX_HEAP_BYTES),
            max_stack_bytes: self.max_stack_bytes.clamp(64 << 10, MAX_STACK_BYTES),
            max_execution_time_ms: self.max_execution_time_ms.clamp(1, MAX_EXECUTION_TIME_MS),
            ..self
        }
    }
}

/// What a run may do with a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAccess {
    /// Neither read nor write (governance and internal tables).
    None,
    /// Read only (ACL: the entry tables).
    Read,
    /// Read and write (application tables).
    ReadWrite,
}

/// A store that could not be read (the run fails with an `InternalError`: a script never sees
/// a value that might be wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A map's (key, value) pairs.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The state a run reads: the caller's view of the ledger's maps.
pub trait Store: Send + Sync {
    /// What a run may do with `map`.
    fn access(&self, map: &str) -> MapAccess;
    /// The value of `key` in `map`.
    fn get(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every (key, value) of `map`.
    fn entries(&self, map: &str) -> Result<Entries, StoreError>;
    /// A service of the host beyond the maps, for the runs that are offered one (a
    /// constitution's `ccf.network` and `ccf.node` calls): `name`, and its arguments as a JSON
    /// array; the answer is JSON, an error is thrown to the script as an `Error` with the
    /// message. None is offered by default.
    fn host(&self, name: &str, args: &str) -> Result<String, String> {
        let _ = args;
        Err(format!("{name} is not available here"))
    }
}

/// A store with no data, where one map (or none) may be written: for tests and examples.
#[derive(Debug, Clone, Default)]
pub struct EmptyStore {
    writable: Option<String>,
}

impl EmptyStore {
    /// An empty store where `map` may be read and written.
    pub fn writable(map: &str) -> EmptyStore {
        EmptyStore {
            writable: Some(map.to_owned()),
        }
    }
}

impl Store for EmptyStore {
    fn access(&self, map: &str) -> MapAccess {
        if self.writable.as_deref() == Some(map) {
            MapAccess::ReadWrite
        } else {
            MapAccess::None
        }
    }

    fn get(&self, _: &str, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    fn entries(&self, _: &str) -> Result<Entries, StoreError> {
        Ok(Vec::new())
    }
}

/// What a successful run wrote: map → key → the new value, or `None` for a removal.
pub type Writes = BTreeMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// One run of a function.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The function's id (names it in error messages).
    pub function_id: &'a str,
    /// Its code: one ES module.
    pub code: &'a str,
    /// The export to call (ACL's `exportedFunctionName`, default `main`).
    pub export: &'a str,
    /// Its arguments, passed positionally as strings.
    pub arguments: &'a [String],
    /// The global `context` object (ACL: `userId`, `request`, and for hooks `collectionId`
    /// and `contents`).
    pub context: Arc<serde_json::Value>,
    /// Its limits (clamped by [`run`]).
    pub options: RuntimeOptions,
    /// The seed of its `Math.random` (a run has no other entropy).
    pub seed: u64,
    /// Runs with the same key may share an interpreter on a [`Worker`], when
    /// `options.max_cached_interpreters` allows: the module is loaded once and its top-level
    /// state persists from run to run (CCF's interpreter reuse). `None`: a fresh interpreter.
    /// The key must change when the code does.
    pub reuse: Option<String>,
    /// The other modules `code` may import, by name (an app bundle's modules); `function_id`
    /// is then the entry module's name, against which relative imports resolve.
    pub modules: Option<Arc<Modules>>,
    /// An HTTP request for an endpoint handler: the export is called with CCF's request
    /// object instead of `arguments`, and its return value read as CCF's response object
    /// ([`Effects::response`]).
    pub http: Option<HttpRequest>,
}

/// Modules by name: an app bundle's sources.
pub type Modules = BTreeMap<String, String>;

/// A request for an endpoint handler.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// CCF's request fields but the body (`headers`, `params`, `url`, `path`, `route`,
    /// `query`, `method`, `hostname`, `caller`), as a JSON object.
    pub meta: serde_json::Value,
    /// The body, whose `text()`, `json()` and `arrayBuffer()` the handler may call.
    pub body: Vec<u8>,
}

/// What an endpoint handler answered (CCF's response object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// `statusCode` (200 when absent).
    pub status: u16,
    /// `headers`.
    pub headers: Vec<(String, String)>,
    /// The body's content type by its JavaScript type: a string `text/plain`, an ArrayBuffer
    /// or typed array `application/octet-stream`, anything else `application/json`; `None`
    /// without a body.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: Vec<u8>,
}

/// What a successful run asked of its caller besides its writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// An endpoint handler's response.
    pub response: Option<HttpResponse>,
    /// `ccf.rpc.setApplyWrites`: keep (or drop) the writes whatever the status.
    pub apply_writes: Option<bool>,
    /// `ccf.rpc.setClaimsDigest`: the transaction's claims digest.
    pub claims_digest: Option<[u8; 32]>,
    /// The run used a key-value map (read or write): a run that used none depends on nothing
    /// but its inputs, whatever else runs.
    pub touched_state: bool,
}

impl<'a> Call<'a> {
    /// A call of `main` with the default options and an empty context.
    pub fn new(function_id: &'a str, code: &'a str, arguments: &'a [String]) -> Call<'a> {
        Call {
            function_id,
            code,
            export: "main",
            arguments,
            context: Arc::new(serde_json::json!({})),
            options: RuntimeOptions::default(),
            seed: 0,
            reuse: None,
            modules: None,
            http: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned.
    Succeeded {
        /// The return value as ACL shows it: a string as it is, `undefined` and `null` as
        /// `""`, anything else as JSON (`true` → `"true"`, `{"a":1}` → `"{\"a\":1}"`).
        /// Empty for an endpoint handler (its answer is [`Effects::response`]).
        return_value: String,
        /// What it wrote.
        writes: Writes,
        /// What else it asked for.
        effects: Effects,
    },
    /// It threw, ran out of time, heap or stack, or could not be loaded; nothing it wrote
    /// counts.
    Failed {
        /// ACL's message: `Error while executing function ID: NAME: MESSAGE`, then the stack
        /// when the options ask for it.
        message: String,
    },
}

/// Why the sandbox itself could not run (not the function's fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The engine could not be set up (out of memory before the function ran).
    #[error("cannot start the JavaScript engine: {0}")]
    Engine(String),
    /// The run's thread could not be started or panicked.
    #[error("the JavaScript thread failed: {0}")]
    Thread(String),
}

/// Runs `call` on a thread of its own (its stack larger than any run may use), with a fresh
/// interpreter, over `store`.
pub fn run(call: &Call<'_>, store: Arc<dyn Store>) -> Outcome {
    match try_run(call, store) {
        Ok(o) => o,
        Err(e) => Outcome::Failed {
            message: format!(
                "Error while executing function {}: InternalError: {e}",
                call.function_id
            ),
        },
    }
}

/// [`run`], telling a failure of the sandbox apart from the function's own.
pub fn try_run(call: &Call<'_>, store: Arc<dyn Store>) -> Result<Outcome, SandboxError> {
    let owned = Clamped::of(call).into_owned();
    on_js_thread(move || run_here(&owned, store))?
}

/// Runs `f` on a thread of its own whose stack is larger than any run may ask for, so that
/// QuickJS's own stack check always fires first.
fn on_js_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SandboxError> {
    std::thread::Builder::new()
        .name("vellum-js".into())
        .stack_size((MAX_STACK_BYTES as usize) * 2 + (1 << 20))
        .spawn(f)
        .map_err(|e| SandboxError::Thread(e.to_string()))?
        .join()
        .map_err(|_| SandboxError::Thread("it panicked".into()))
}

/// An exception's `name` (default `Error`) and message.
fn name_and_message(ex: &rquickjs::Exception<'_>) -> (String, String) {
    let name = ex
        .get::<_, Option<String>>("name")
        .ok()
        .flatten()
        .unwrap_or_else(|| "Error".into());
    (name, ex.message().unwrap_or_default())
}

/// Compiles `code` as a module without running it: `Err` holds the syntax error as
/// `NAME: MESSAGE` (a function is checked when it is stored, not first when it runs).
pub fn check(code: &str) -> Result<(), String> {
    check_in("check", code, None)
}

/// [`check`] for module `name` of a bundle: its imports of `modules` resolve.
pub fn check_in(name: &str, code: &str, modules: Option<Arc<Modules>>) -> Result<(), String> {
    let (name, code) = (name.to_owned(), code.to_owned());
    let compile = move || -> Result<(), String> {
        let rt = Runtime::new().map_err(|e| e.to_string())?;
        // Compiling is bounded by the ceilings, as the longest run would be.
        let ceilings = RuntimeOptions {
            max_heap_bytes: MAX_HEAP_BYTES,
            max_stack_bytes: MAX_STACK_BYTES,
            max_execution_time_ms: MAX_EXECUTION_TIME_MS,
            ..RuntimeOptions::default()
        };
        arm(&rt, &ceilings, Instant::now());
        let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
        if let Some(m) = modules {
            rt.set_loader(BundleResolver(m.clone()), BundleLoader(m));
        }
        ctx.with(|ctx| match Module::declare(ctx.clone(), name, code) {
            Ok(_) => Ok(()),
            Err(e) => Err(match CaughtError::from_error(&ctx, e) {
                CaughtError::Exception(ex) => {
                    let (name, message) = name_and_message(&ex);
                    format!("{name}: {message}")
                }
                other => other.to_string(),
            }),
        })
    };
    on_js_thread(compile).map_err(|e| e.to_string())?
}

/// A call as the sandbox makes it, its options clamped: borrowed from the [`Call`] for a run
/// made at once, owned for one queued on a [`Worker`].
struct Clamped<'a> {
    function_id: Cow<'a, str>,
    code: Cow<'a, str>,
    export: Cow<'a, str>,
    arguments: Cow<'a, [String]>,
    context: Arc<serde_json::Value>,
    options: RuntimeOptions,
    seed: u64,
    reuse: Option<Cow<'a, str>>,
    modules: Option<Arc<Modules>>,
    http: Option<Cow<'a, HttpRequest>>,
}

impl<'a> Clamped<'a> {
    /// `call` with its options clamped, borrowed.
    fn of(call: &'a Call<'_>) -> Clamped<'a> {
        Clamped {
            function_id: Cow::Borrowed(call.function_id),
            code: Cow::Borrowed(call.code),
            export: Cow::Borrowed(call.export),
            arguments: Cow::Borrowed(call.arguments),
            context: call.context.clone(),
            options: call.options.clamped(),
            seed: call.seed,
            reuse: call.reuse.as_deref().map(Cow::Borrowed),
            modules: call.modules.clone(),
            http: call.http.as_ref().map(Cow::Borrowed),
        }
    }

    /// The same call, owning its parts.
    fn into_owned(self) -> Clamped<'static> {
        Clamped {
            function_id: Cow::Owned(self.function_id.into_owned()),
            code: Cow::Owned(self.code.into_owned()),
            export: Cow::Owned(self.export.into_owned()),
            arguments: Cow::Owned(self.arguments.into_owned()),
            context: self.context,
            options: self.options,
            seed: self.seed,
            reuse: self.reuse.map(|r| Cow::Owned(r.into_owned())),
            modules: self.modules,
            http: self.http.map(|h| Cow::Owned(h.into_owned())),
        }
    }
}

/// The run's writes, and its view: its own writes over the store.
struct Overlay {
    /// Tells runs apart (the prelude makes `context` once a run).
    run: u64,
    /// The run's `context` global, made when the script first reads it.
    context: Arc<serde_json::Value>,
    store: Arc<dyn Store>,
    writes: Writes,
    /// Bytes of keys and values set so far.
    written: usize,
    /// The store failed: the run fails, whatever the script did with the exception.
    broken: Option<StoreError>,
    /// The run used a key-value map (read or write): its outcome may depend on the order of
    /// runs.
    touched: std::cell::Cell<bool>,
    /// `ccf.rpc` calls.
    apply_writes: Option<bool>,
    claims_digest: Option<[u8; 32]>,
}

impl Overlay {
    fn get(&mut self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(map).and_then(|m| m.get(key)) {
            Some(v) => Ok(v.clone()),
            None => self
                .store
                .get(map, key)
                .inspect_err(|e| self.broken = Some(e.clone())),
        }
    }

    fn entries(&mut self, map: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let read = self.store.entries(map);
        let read = read.inspect_err(|e| self.broken = Some(e.clone()))?;
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> = read.into_iter().collect();
        if let Some(w) = self.writes.get(map) {
            for (k, v) in w {
                match v {
                    Some(v) => all.insert(k.clone(), v.clone()),
                    None => all.remove(k),
                };
            }
        }
        Ok(all)
    }
}

impl Overlay {
    /// The state of a new run over `store`, whose `context` global is `context`.
    fn over(store: Arc<dyn Store>, context: Arc<serde_json::Value>) -> Overlay {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Overlay {
            run: RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            context,
            store,
            writes: Writes::new(),
            written: 0,
            broken: None,
            touched: std::cell::Cell::new(false),
            apply_writes: None,
            claims_digest: None,
        }
    }
}

/// A store failure as the exception a script sees.
fn store_failed(ctx: &Ctx<'_>, e: StoreError) -> rquickjs::Error {
    rquickjs::Exception::throw_internal(ctx, &format!("the ledger could not be read: {e}"))
}

/// The DER of the first PEM block in `pem`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN ")?;
    let body_start = start + pem[start..].find('\n')? + 1;
    let end = body_start + pem[body_start..].find("-----END ")?;
    let b64: String = pem[body_start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes from a binary string (one character per byte).
fn bytes(s: &str) -> Vec<u8> {
    s.chars().map(|c| (u32::from(c) & 0xff) as u8).collect()
}

fn failed(id: &str, name: &str, message: &str, stack: Option<&str>) -> Outcome {
    let mut m = format!("Error while executing function {id}: {name}: {message}");
    if let Some(s) = stack.filter(|s| !s.is_empty()) {
        m.push('\n');
        m.push_str(s);
    }
    Outcome::Failed { message: m }
}

fn run_here(call: &Clamped<'_>, store: Arc<dyn Store>) -> Result<Outcome, SandboxError> {
    let started = Instant::now();
    match load(call, store.clone(), started)? {
        Ok(interp) => Ok(run_on(&interp, call, store, started).0),
        Err(failed) => Ok(failed),
    }
}

/// An interpreter: an engine of its own (so its heap limit is its own), a context with the
/// `ccf` global and one function's module loaded, and the run state its natives share. Fields
/// drop in order: the module before the context, the context before the engine.
struct Interp {
    ns: rquickjs::Persistent<Object<'static>>,
    overlay: Rc<RefCell<Overlay>>,
    ctx: Context,
    rt: Runtime,
}

/// Sets `rt`'s limits for a run with options `o` that started at `started`.
fn arm(rt: &Runtime, o: &RuntimeOptions, started: Instant) {
    let limit = Duration::from_millis(o.max_execution_time_ms);
    rt.set_memory_limit(o.max_heap_bytes as usize);
    rt.set_max_stack_size(o.max_stack_bytes as usize);
    rt.set_interrupt_handler(Some(Box::new(move || started.elapsed() > limit)));
}

fn engine(e: rquickjs::Error) -> SandboxError {
    SandboxError::Engine(e.to_string())
}

/// A fresh interpreter with `call`'s module loaded (its top level run, within the call's
/// limits, counted from `started`), over `store`. `Ok(Err(outcome))`: loading failed, by the
/// code's fault.
fn load(
    call: &Clamped<'_>,
    store: Arc<dyn Store>,
    started: Instant,
) -> Result<Result<Interp, Outcome>, SandboxError> {
    let rt = Runtime::new().map_err(engine)?;
    arm(&rt, &call.options, started);
    if let Some(modules) = &call.modules {
        rt.set_loader(
            BundleResolver(modules.clone()),
            BundleLoader(modules.clone()),
        );
    }
    let ctx = Context::full(&rt).map_err(engine)?;
    let overlay = Rc::new(RefCell::new(Overlay::over(store, call.context.clone())));
    let limit = Duration::from_millis(call.options.max_execution_time_ms);
    let loaded = ctx.with(|ctx| {
        let r = setup(&ctx, &overlay, call).and_then(|()| {
            let module = Module::declare(ctx.clone(), &*call.function_id, &*call.code)?;
            let (module, done) = module.eval()?;
            done.finish::<()>()?;
            module.namespace()
        });
        match r {
            Ok(ns) => Ok(rquickjs::Persistent::save(&ctx, ns)),
            Err(e) => Err(Box::new(describe(
                &ctx,
                e,
                call,
                started.elapsed() > limit,
                limit,
            ))),
        }
    });
    rt.set_interrupt_handler(None);
    Ok(match loaded {
        Ok(ns) => Ok(Interp {
            ns,
            overlay,
            ctx,
            rt,
        }),
        Err(failed) => Err(*failed),
    })
}

/// Runs `call` on a loaded interpreter over `store`. The second value is true if the
/// interpreter may serve another run: the run succeeded (a run that threw or hit a limit may
/// have left its state half changed).
fn run_on(
    interp: &Interp,
    call: &Clamped<'_>,
    store: Arc<dyn Store>,
    started: Instant,
) -> (Outcome, bool) {
    arm(&interp.rt, &call.options, started);
    *interp.overlay.borrow_mut() = Overlay::over(store, call.context.clone());
    let limit = Duration::from_millis(call.options.max_execution_time_ms);
    let outcome = interp.ctx.with(|ctx| {
        let r = interp
            .ns
            .clone()
            .restore(&ctx)
            .and_then(|ns| invoke(&ctx, &ns, call));
        match r {
            Ok(v) => v,
            Err(e) => describe(&ctx, e, call, started.elapsed() > limit, limit),
        }
    });
    interp.rt.set_interrupt_handler(None);
    // The store is the caller's: the interpreter keeps none of it between runs.
    let mut o = std::mem::replace(
        &mut *interp.overlay.borrow_mut(),
        Overlay::over(Arc::new(EmptyStore::default()), Arc::default()),
    );
    let outcome = match (outcome, o.broken.take()) {
        (_, Some(e)) => failed(
            &call.function_id,
            "InternalError",
            &format!("the ledger could not be read: {e}"),
            None,
        ),
        (
            Outcome::Succeeded {
                return_value,
                effects,
                ..
            },
            None,
        ) => Outcome::Succeeded {
            return_value,
            writes: o.writes,
            effects: Effects {
                apply_writes: o.apply_writes,
                claims_digest: o.claims_digest,
                touched_state: o.touched.get(),
                ..effects
            },
        },
        (failed, None) => failed,
    };
    let reusable = matches!(outcome, Outcome::Succeeded { .. });
    (outcome, reusable)
}

/// Interpreters kept for reuse, by key, least recently used first.
#[derive(Default)]
struct Cache {
    kept: Vec<(String, Interp)>,
}

impl Cache {
    fn take(&mut self, key: &str) -> Option<Interp> {
        let i = self.kept.iter().position(|(k, _)| k == key)?;
        Some(self.kept.remove(i).1)
    }

    /// Keeps `interp` under `key`, the least recently used going beyond `at_most`: how many
    /// went.
    fn keep(&mut self, key: String, interp: Interp, at_most: usize) -> usize {
        self.kept.push((key, interp));
        let mut gone = 0;
        while self.kept.len() > at_most {
            self.kept.remove(0);
            gone += 1;
        }
        gone
    }
}

/// A run on the worker: on a kept interpreter if the call may reuse one, else a fresh one.
/// Also returns the interpreter if it is not kept, for the caller to drop once it has passed
/// the outcome on (freeing an engine takes a while).
fn run_cached(
    cache: &mut Cache,
    call: &Clamped<'_>,
    store: Arc<dyn Store>,
) -> (Result<Outcome, SandboxError>, Option<Interp>) {
    let started = Instant::now();
    let at_most = call
        .options
        .max_cached_interpreters
        .min(MAX_CACHED_INTERPRETERS) as usize;
    let key = call.reuse.as_ref().filter(|_| at_most > 0);
    let interp = match key.and_then(|k| cache.take(k)) {
        Some(i) => i,
        None => match load(call, store.clone(), started) {
            Ok(Ok(i)) => i,
            Ok(Err(failed)) => return (Ok(failed), None),
            Err(e) => return (Err(e), None),
        },
    };
    let (outcome, reusable) = run_on(&interp, call, store, started);
    match key {
        Some(k) if reusable => {
            cache.keep(k.to_string(), interp, at_most);
            (Ok(outcome), None)
        }
        _ => (Ok(outcome), Some(interp)),
    }
}

/// The most stack a run made on the caller's own thread ([`run_inline`]) may use. A run that
/// needs more fails there and is made again on a [`Worker`], whose stack fits any run.
pub const INLINE_STACK_BYTES: u64 = 256 << 10;
/// The longest a run made on the caller's thread may take: the caller's thread is usually an
/// async executor's, which must not be held long. A run that takes longer is made again on a
/// [`Worker`], and its code is not run inline on that thread for [`INLINE_RETRY_AFTER`].
pub const INLINE_RUN_MS: u64 = 2;
/// The longest loading a function's module on the caller's thread may take (once per thread
/// and code).
pub const INLINE_LOAD_MS: u64 = 50;
/// Stack the caller's thread must have left, beyond [`INLINE_STACK_BYTES`], for a run to be
/// made on it: QuickJS checks its stack at calls, and native code between two checks needs
/// room too.
const INLINE_STACK_MARGIN: usize = 256 << 10;
/// How long a thread leaves a code that ran out of time here to the worker before it tries
/// again (the time is wall-clock: a short run can run out of it when its thread is preempted
/// on a busy machine, which must not keep that code off the thread for good).
pub const INLINE_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The most codes a thread remembers as too slow to run inline.
const MAX_SLOW_KEYS: usize = 1024;

/// The most interpreters all threads together keep for runs made inline (each thread keeps
/// up to a call's `max_cached_interpreters` of its own, until all of them keep this many).
pub const MAX_INLINE_INTERPRETERS: usize = 64;

/// Interpreters kept by threads for runs made inline, all threads together.
static INLINE_KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Interpreters kept by a thread that runs calls inline, and the codes it will not run so.
#[derive(Default)]
struct Inline {
    cache: Cache,
    /// Codes left to the worker, until when.
    slow: std::collections::HashMap<String, Instant>,
}

impl Drop for Inline {
    /// The thread ends: its interpreters go.
    fn drop(&mut self) {
        INLINE_KEPT.fetch_sub(self.cache.kept.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

thread_local! {
    static INLINE: RefCell<Inline> = RefCell::new(Inline::default());
}

/// Makes a run that may reuse an interpreter ([`Call::reuse`] with `max_cached_interpreters`
/// above 0) on the calling thread, on an interpreter that thread keeps, so that a short run
/// costs no hand-over to a [`Worker`] and back (most of a warm run's cost: see
/// `docs/benchmarks.md`). Returns `None` when the run was not made here, or did not succeed
/// here: the caller then submits it to a [`Worker`], which makes it afresh with the call's own
/// limits and reports its failure the way a run always does. A run made here succeeds only if
/// it would on a worker: it has the call's heap limit and at most [`INLINE_STACK_BYTES`] of
/// stack and [`INLINE_RUN_MS`] of time, within the call's own.
///
/// Each thread keeps interpreters of its own (up to `max_cached_interpreters` of them, and
/// [`MAX_INLINE_INTERPRETERS`] for all threads together), so a module's top-level state is
/// not shared between threads: as in CCF, a run must not care whether its interpreter is
/// fresh or reused. Runs are made here only while the thread has stack enough to spare.
///
/// ```
/// use std::sync::Arc;
/// use vellum_js::{Call, EmptyStore, Outcome, run_inline};
///
/// let args = ["hi".to_owned()];
/// let mut call = Call::new("f", "export const main = (a) => a + '!';", &args);
/// call.options.max_cached_interpreters = 1;
/// call.reuse = Some("f:v1".to_owned());
/// let Some(Outcome::Succeeded { return_value, .. }) =
///     run_inline(&call, Arc::new(EmptyStore::default()))
/// else {
///     panic!()
/// };
/// assert_eq!(return_value, "hi!");
/// ```
pub fn run_inline(call: &Call<'_>, store: Arc<dyn Store>) -> Option<Outcome> {
    let key = call.reuse.as_deref()?;
    let at_most = call
        .options
        .max_cached_interpreters
        .min(MAX_CACHED_INTERPRETERS) as usize;
    if at_most == 0 {
        return None;
    }
    // A thread whose runs are not made here (the slow set) or that is already running one
    // (the cache is borrowed) leaves the run to the worker.
    let taken = INLINE.with(|i| {
        let mut i = i.try_borrow_mut().ok()?;
        if let Some(until) = i.slow.get(key) {
            if Instant::now() < *until {
                return None;
            }
            i.slow.remove(key);
        }
        let taken = i.cache.take(key);
        if taken.is_some() {
            INLINE_KEPT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(taken)
    })?;
    let mut owned = Clamped::of(call);
    let own_limit = owned.options.max_execution_time_ms;
    owned.options.max_stack_bytes = owned.options.max_stack_bytes.min(INLINE_STACK_BYTES);
    let interp = match taken {
        Some(interp) => interp,
        None => {
            // Threads keep as many interpreters as they may: a new one would not be kept, and
            // loading one for every run belongs on the worker.
            if INLINE_KEPT.load(std::sync::atomic::Ordering::Relaxed) >= MAX_INLINE_INTERPRETERS {
                return None;
            }
            // QuickJS measures its stack from where the engine was made: this thread must
            // have the room below here.
            let room = stacker::remaining_stack()?;
            if room < INLINE_STACK_BYTES as usize + INLINE_STACK_MARGIN {
                return None;
            }
            owned.options.max_execution_time_ms = own_limit.min(INLINE_LOAD_MS);
            let started = Instant::now();
            match load(&owned, store.clone(), started) {
                Ok(Ok(interp)) => interp,
                Ok(Err(_)) | Err(_) => {
                    if started.elapsed() >= Duration::from_millis(INLINE_LOAD_MS) {
                        slow(key);
                    }
                    return None;
                }
            }
        }
    };
    owned.options.max_execution_time_ms = own_limit.min(INLINE_RUN_MS);
    let started = Instant::now();
    let (outcome, reusable) = run_on(&interp, &owned, store, started);
    if !reusable {
        if started.elapsed() >= Duration::from_millis(INLINE_RUN_MS) {
            slow(key);
        }
        return None;
    }
    INLINE.with(|i| {
        if let Ok(mut i) = i.try_borrow_mut() {
            // Counted before it is kept, so that threads together never keep more.
            let kept = INLINE_KEPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if kept >= MAX_INLINE_INTERPRETERS {
                INLINE_KEPT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            let gone = i.cache.keep(key.to_owned(), interp, at_most);
            INLINE_KEPT.fetch_sub(gone, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Some(outcome)
}

/// Code `key` is not to be run inline on this thread for [`INLINE_RETRY_AFTER`].
fn slow(key: &str) {
    INLINE.with(|i| {
        if let Ok(mut i) = i.try_borrow_mut() {
            if i.slow.len() >= MAX_SLOW_KEYS {
                i.slow.clear();
            }
            i.slow
                .insert(key.to_owned(), Instant::now() + INLINE_RETRY_AFTER);
        }
    });
}

/// What a [`Worker`] is told when a run ends.
pub type Done = Box<dyn FnOnce(Result<Outcome, SandboxError>) + Send>;

struct Job {
    call: Clamped<'static>,
    store: Arc<dyn Store>,
    done: Done,
}

/// A thread that runs calls one after another. A call gets a fresh interpreter unless it asks
/// to reuse one ([`Call::reuse`], within `max_cached_interpreters`): then the worker keeps
/// the interpreter after a successful run, its module loaded, and the next run with the same
/// key skips the engine, the `ccf` global and the module's load, most of a fresh run's cost
/// (`docs/benchmarks.md`). A run that fails retires its interpreter.
///
/// ```
/// use std::sync::{Arc, mpsc};
/// use vellum_js::{Call, EmptyStore, Outcome, Worker};
///
/// let worker = Worker::start().unwrap();
/// let (tx, rx) = mpsc::channel();
/// worker.submit(
///     &Call::new("f", "export const main = (a) => a + '!';", &["hi".to_owned()]),
///     Arc::new(EmptyStore::default()),
///     Box::new(move |o| tx.send(o).unwrap()),
/// );
/// let Ok(Outcome::Succeeded { return_value, .. }) = rx.recv().unwrap() else { panic!() };
/// assert_eq!(return_value, "hi!");
/// ```
pub struct Worker {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts the worker's thread.
    pub fn start() -> Result<Worker, SandboxError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("vellum-js".into())
            .stack_size((MAX_STACK_BYTES as usize) * 2 + (1 << 20))
            .spawn(move || {
                let mut cache = Cache::default();
                while let Ok(job) = rx.recv() {
                    let (r, spent) = run_cached(&mut cache, &job.call, job.store);
                    (job.done)(r);
                    drop(spent);
                }
            })
            .map_err(|e| SandboxError::Thread(e.to_string()))?;
        Ok(Worker {
            jobs: std::sync::Mutex::new(Some(tx)),
            thread: Some(thread),
        })
    }

    /// Queues `call` over `store`; `done` is called on the worker's thread when it ends (with
    /// [`SandboxError::Thread`] at once if the worker has stopped).
    pub fn submit(&self, call: &Call<'_>, store: Arc<dyn Store>, done: Done) {
        let job = Job {
            call: Clamped::of(call).into_owned(),
            store,
            done,
        };
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refused = match jobs.as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        drop(jobs);
        if let Some(job) = refused {
            (job.done)(Err(SandboxError::Thread("the worker has stopped".into())));
        }
    }
}

impl Drop for Worker {
    /// Lets queued runs finish, then stops the thread.
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `ccf` and `context` globals.
fn setup<'js>(
    ctx: &Ctx<'js>,
    overlay: &Rc<RefCell<Overlay>>,
    call: &Clamped<'_>,
) -> rquickjs::Result<()> {
    let n = Object::new(ctx.clone())?;
    // Two non-zero 32-bit seeds for the prelude's xorshift generator.
    let seed = call.seed ^ 0x9e37_79b9_7f4a_7c15;
    let halves = [(seed >> 32) as u32 | 1, seed as u32 | 1];
    n.set("seed", Function::new(ctx.clone(), move || halves.to_vec())?)?;
    let ov = overlay.clone();
    // A number (not a BigInt): runs are counted well below 2^53.
    n.set(
        "run",
        Function::new(ctx.clone(), move || ov.borrow().run as f64)?,
    )?;
    let ov = overlay.clone();
    n.set(
        "context",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>| -> rquickjs::Result<Value<'js>> {
                let context = ov.borrow().context.clone();
                to_js(&ctx, &context)
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "get",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String, key: String| -> rquickjs::Result<Value<'js>> {
                readable(&ctx, &ov.borrow(), &map)?;
                match ov
                    .borrow_mut()
                    .get(&map, &bytes(&key))
                    .map_err(|e| store_failed(&ctx, e))?
                {
                    Some(v) => Ok(ArrayBuffer::new(ctx, v)?.into_value()),
                    None => Ok(Value::new_undefined(ctx)),
                }
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "has",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String, key: String| -> rquickjs::Result<bool> {
                readable(&ctx, &ov.borrow(), &map)?;
                let v = ov.borrow_mut().get(&map, &bytes(&key));
                Ok(v.map_err(|e| store_failed(&ctx, e))?.is_some())
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "set",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String, key: String, value: String| -> rquickjs::Result<()> {
                writable(&ctx, &ov.borrow(), &map)?;
                let mut o = ov.borrow_mut();
                o.written = o.written.saturating_add(key.len() + value.len());
                if o.written > MAX_WRITE_BYTES {
                    return Err(rquickjs::Exception::throw_range(
                        &ctx,
                        &format!("a run may write at most {MAX_WRITE_BYTES} bytes"),
                    ));
                }
                o.writes
                    .entry(map)
                    .or_default()
                    .insert(bytes(&key), Some(bytes(&value)));
                Ok(())
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "del",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String, key: String| -> rquickjs::Result<bool> {
                writable(&ctx, &ov.borrow(), &map)?;
                let key = bytes(&key);
                let had = ov.borrow_mut().get(&map, &key);
                let had = had.map_err(|e| store_failed(&ctx, e))?.is_some();
                let mut o = ov.borrow_mut();
                o.written = o.written.saturating_add(key.len());
                if o.written > MAX_WRITE_BYTES {
                    return Err(rquickjs::Exception::throw_range(
                        &ctx,
                        &format!("a run may write at most {MAX_WRITE_BYTES} bytes"),
                    ));
                }
                o.writes.entry(map).or_default().insert(key, None);
                Ok(had)
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "clear",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String| -> rquickjs::Result<()> {
                writable(&ctx, &ov.borrow(), &map)?;
                let all = ov.borrow_mut().entries(&map);
                let keys: Vec<Vec<u8>> = all
                    .map_err(|e| store_failed(&ctx, e))?
                    .into_keys()
                    .collect();
                let mut o = ov.borrow_mut();
                let w = o.writes.entry(map).or_default();
                for k in keys {
                    w.insert(k, None);
                }
                Ok(())
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "size",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String| -> rquickjs::Result<usize> {
                readable(&ctx, &ov.borrow(), &map)?;
                let all = ov.borrow_mut().entries(&map);
                Ok(all.map_err(|e| store_failed(&ctx, e))?.len())
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "entries",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String| -> rquickjs::Result<Array<'js>> {
                readable(&ctx, &ov.borrow(), &map)?;
                let all = Array::new(ctx.clone())?;
                let entries = ov.borrow_mut().entries(&map);
                let entries = entries.map_err(|e| store_failed(&ctx, e))?;
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    let pair = Array::new(ctx.clone())?;
                    pair.set(0, ArrayBuffer::new(ctx.clone(), k)?)?;
                    pair.set(1, ArrayBuffer::new(ctx.clone(), v)?)?;
                    all.set(i, pair)?;
                }
                Ok(all)
            },
        )?,
    )?;
    n.set(
        "strToBuf",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, s: String| -> rquickjs::Result<ArrayBuffer<'js>> {
                ArrayBuffer::new(ctx, s.into_bytes())
            },
        )?,
    )?;
    n.set(
        "bufToStr",
        Function::new(ctx.clone(), |b: String| -> String {
            String::from_utf8_lossy(&bytes(&b)).into_owned()
        })?,
    )?;
    n.set(
        "binToBuf",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, b: String| -> rquickjs::Result<ArrayBuffer<'js>> {
                ArrayBuffer::new(ctx, bytes(&b))
            },
        )?,
    )?;
    let ov = overlay.clone();
    n.set(
        "setApplyWrites",
        Function::new(ctx.clone(), move |apply: bool| {
            ov.borrow_mut().apply_writes = Some(apply);
        })?,
    )?;
    let ov = overlay.clone();
    n.set(
        "setClaimsDigest",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, b: String| -> rquickjs::Result<()> {
                let d: [u8; 32] = bytes(&b).try_into().map_err(|_| {
                    rquickjs::Exception::throw_type(&ctx, "a claims digest is 32 bytes (SHA-256)")
                })?;
                ov.borrow_mut().claims_digest = Some(d);
                Ok(())
            },
        )?,
    )?;
    n.set(
        "pemToId",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, pem: String| -> rquickjs::Result<String> {
                let der = pem_der(&pem).ok_or_else(|| {
                    rquickjs::Exception::throw_type(&ctx, "not a PEM certificate")
                })?;
                Ok(hex_lower(&Sha256::digest(der)))
            },
        )?,
    )?;
    n.set(
        "verifySignature",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             alg: String,
             key: String,
             sig: String,
             data: String|
             -> rquickjs::Result<bool> {
                let alg: crypto::Algorithm = serde_json::from_str(&alg).map_err(|e| {
                    rquickjs::Exception::throw_type(&ctx, &format!("bad signing algorithm: {e}"))
                })?;
                crypto::verify_signature(&alg, &key, &bytes(&sig), &bytes(&data))
                    .map_err(|e| rquickjs::Exception::throw_type(&ctx, &e.0))
            },
        )?,
    )?;
    n.set(
        "isValidX509CertBundle",
        Function::new(ctx.clone(), |pem: String| {
            crypto::is_valid_cert_bundle(&pem)
        })?,
    )?;
    let ov = overlay.clone();
    n.set(
        "host",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: String, args: String| -> rquickjs::Result<String> {
                let o = ov.borrow();
                o.touched.set(true);
                let store = o.store.clone();
                drop(o);
                store
                    .host(&name, &args)
                    .map_err(|e| rquickjs::Exception::throw_message(&ctx, &e))
            },
        )?,
    )?;
    n.set(
        "sha256",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, b: String| -> rquickjs::Result<ArrayBuffer<'js>> {
                ArrayBuffer::new(ctx, Sha256::digest(bytes(&b)).to_vec())
            },
        )?,
    )?;
    let globals = ctx.globals();
    globals.set("__vellum", n)?;
    ctx.eval::<(), _>(include_str!("prelude.js"))?;
    Ok(())
}

fn readable(ctx: &Ctx<'_>, o: &Overlay, map: &str) -> rquickjs::Result<()> {
    o.touched.set(true);
    match o.store.access(map) {
        MapAccess::Read | MapAccess::ReadWrite => Ok(()),
        MapAccess::None => Err(rquickjs::Exception::throw_type(
            ctx,
            &format!("map {map:?} is not accessible to user-defined functions"),
        )),
    }
}

fn writable(ctx: &Ctx<'_>, o: &Overlay, map: &str) -> rquickjs::Result<()> {
    o.touched.set(true);
    match o.store.access(map) {
        MapAccess::ReadWrite => Ok(()),
        MapAccess::Read => Err(rquickjs::Exception::throw_type(
            ctx,
            &format!("map {map:?} is read-only"),
        )),
        MapAccess::None => Err(rquickjs::Exception::throw_type(
            ctx,
            &format!("map {map:?} is not accessible to user-defined functions"),
        )),
    }
}

/// Calls the export.
fn invoke<'js>(ctx: &Ctx<'js>, ns: &Object<'js>, call: &Clamped<'_>) -> rquickjs::Result<Outcome> {
    let f: Value<'js> = ns.get(&*call.export)?;
    let Some(f) = f.as_function() else {
        return Ok(failed(
            &call.function_id,
            "TypeError",
            &format!("the module exports no function {:?}", call.export),
            None,
        ));
    };
    if let Some(http) = &call.http {
        let call_http: Function<'js> = ctx.globals().get("__vellum_http")?;
        let meta = to_js(ctx, &http.meta)?;
        let body = latin1(&http.body);
        let encoded: String = call_http.call((f.clone(), meta, body))?;
        let response = decode_response(&encoded).ok_or_else(|| {
            rquickjs::Exception::throw_type(ctx, "the handler's response cannot be encoded")
        })?;
        return Ok(Outcome::Succeeded {
            return_value: String::new(),
            writes: Writes::new(),
            effects: Effects {
                response: Some(response),
                ..Effects::default()
            },
        });
    }
    let args = rquickjs::function::Rest(call.arguments.to_vec());
    let mut v: Value<'js> = f.call((args,))?;
    if let Some(p) = v.as_promise() {
        v = p.clone().finish::<Value<'js>>()?;
    }
    let return_value = if v.is_undefined() || v.is_null() {
        String::new()
    } else if let Some(s) = v.as_string() {
        s.to_string()?
    } else {
        match ctx.json_stringify(v)? {
            Some(s) => s.to_string()?,
            None => String::new(),
        }
    };
    if return_value.len() > MAX_RETURN_BYTES {
        return Ok(failed(
            &call.function_id,
            "RangeError",
            &format!(
                "the return value is {} bytes; the limit is {MAX_RETURN_BYTES}",
                return_value.len()
            ),
            None,
        ));
    }
    Ok(Outcome::Succeeded {
        return_value,
        writes: Writes::new(),
        effects: Effects::default(),
    })
}

/// A JSON value as the JavaScript value `JSON.parse` would make of its text, built directly
/// (a run's `context` and a request's fields cross on every run: printing and parsing them
/// cost more than the run of a short function). Keys become own properties, `__proto__`
/// included, as with `JSON.parse`. The values are the node's own (a context, a request's
/// fields), a few levels deep.
fn to_js<'js>(ctx: &Ctx<'js>, v: &serde_json::Value) -> rquickjs::Result<Value<'js>> {
    use rquickjs::object::Property;
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Value::new_null(ctx.clone()),
        J::Bool(b) => Value::new_bool(ctx.clone(), *b),
        J::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Value::new_int(ctx.clone(), i),
            None => Value::new_float(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        J::Array(items) => {
            let a = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                a.set(i, to_js(ctx, item)?)?;
            }
            a.into_value()
        }
        J::Object(fields) => {
            let o = Object::new(ctx.clone())?;
            for (k, item) in fields {
                let p = Property::from(to_js(ctx, item)?)
                    .writable()
                    .enumerable()
                    .configurable();
                o.prop(k.as_str(), p)?;
            }
            o.into_value()
        }
    })
}

/// Bytes as a binary string (one character per byte), the way they cross into scripts.
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// The prelude's encoding of a handler's response: `{"s": status, "h": [[name, value]],
/// "t": "text"|"bin"|"json"|null, "b": body}` (a binary body as a binary string).
fn decode_response(encoded: &str) -> Option<HttpResponse> {
    let v: serde_json::Value = serde_json::from_str(encoded).ok()?;
    let status = u16::try_from(v["s"].as_u64()?).ok()?;
    let headers = v["h"]
        .as_array()?
        .iter()
        .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].as_str()?.to_owned())))
        .collect();
    let body = v["b"].as_str().unwrap_or_default();
    let (content_type, body) = match v["t"].as_str() {
        Some("text") => (Some("text/plain"), body.as_bytes().to_vec()),
        Some("bin") => (Some("application/octet-stream"), bytes(body)),
        Some("json") => (Some("application/json"), body.as_bytes().to_vec()),
        _ => (None, Vec::new()),
    };
    Some(HttpResponse {
        status,
        headers,
        content_type,
        body,
    })
}

/// Resolves an import against the importing module's name, as CCF does for an app bundle:
/// `./x.js` and `../x.js` relative to the importer's directory, anything else from the
/// bundle's root (a leading `/` ignored).
struct BundleResolver(Arc<Modules>);

impl rquickjs::loader::Resolver for BundleResolver {
    fn resolve<'js>(
        &mut self,
        _: &Ctx<'js>,
        base: &str,
        name: &str,
        _: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let mut parts: Vec<&str> = if name.starts_with("./") || name.starts_with("../") {
            let mut dir: Vec<&str> = base.split('/').collect();
            dir.pop();
            dir
        } else {
            Vec::new()
        };
        for seg in name.trim_start_matches('/').split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        let resolved = parts.join("/");
        if self.0.contains_key(&resolved) {
            Ok(resolved)
        } else {
            Err(rquickjs::Error::new_resolving(base, name))
        }
    }
}

/// Loads a bundle's module by its resolved name.
struct BundleLoader(Arc<Modules>);

impl rquickjs::loader::Loader for BundleLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
        match self.0.get(name) {
            Some(source) => Module::declare(ctx.clone(), name, source.as_str()),
            None => Err(rquickjs::Error::new_loading(name)),
        }
    }
}

/// A failed run in ACL's words.
fn describe(
    ctx: &Ctx<'_>,
    e: rquickjs::Error,
    call: &Clamped<'_>,
    timed_out: bool,
    limit: Duration,
) -> Outcome {
    let id = &call.function_id;
    let details = call.options.return_exception_details;
    if timed_out {
        return failed(
            id,
            "InternalError",
            &format!("execution time limit of {} ms exceeded", limit.as_millis()),
            None,
        );
    }
    match CaughtError::from_error(ctx, e) {
        CaughtError::Exception(ex) => {
            let (name, message) = name_and_message(&ex);
            let stack = ex.stack();
            failed(id, &name, &message, stack.as_deref().filter(|_| details))
        }
        // QuickJS throws `null` when it cannot even allocate the error it meant to throw: the
        // heap is exhausted. (A script's own `throw null` reads the same; the message says so.)
        CaughtError::Value(v) if v.is_null() => failed(
            id,
            "InternalError",
            "out of memory (the engine threw null: it could not allocate the error; a script's \
             own `throw null` reads the same)",
            None,
        ),
        CaughtError::Value(v) => {
            let shown = ctx
                .json_stringify(v)
                .ok()
                .flatten()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_default();
            failed(id, "Error", &format!("uncaught {shown}"), None)
        }
        CaughtError::Error(e) => failed(id, "InternalError", &e.to_string(), None),
    }
}

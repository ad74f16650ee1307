//! The sandbox as an attacker and a careless author would use it: endless loops, memory
//! bombs, deep recursion, huge return values, throws after writes, maps it may not touch, and
//! the `ccf` API as ACL's functions call it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vellum_js::{Call, MapAccess, Outcome, RuntimeOptions, Store, StoreError, run};

/// A store with some data: `public:app` (read-write), `public:confidentialledger.logs` (read
/// only), `public:ccf.gov.users.info` (hidden).
struct Data(BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>);

impl Data {
    fn new() -> Arc<Data> {
        let mut m = BTreeMap::new();
        let mut app = BTreeMap::new();
        app.insert(b"a".to_vec(), b"1".to_vec());
        app.insert(b"b".to_vec(), b"2".to_vec());
        m.insert("public:app".to_owned(), app);
        let mut logs = BTreeMap::new();
        logs.insert(b"subledger:0".to_vec(), b"latest".to_vec());
        m.insert("public:confidentialledger.logs".to_owned(), logs);
        Arc::new(Data(m))
    }
}

impl Store for Data {
    fn access(&self, map: &str) -> MapAccess {
        match map {
            "public:app" | "public:other" | "public:broken" => MapAccess::ReadWrite,
            "public:confidentialledger.logs" => MapAccess::Read,
            _ => MapAccess::None,
        }
    }

    fn get(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if map == "public:broken" {
            return Err(StoreError("disk on fire".into()));
        }
        Ok(self.0.get(map).and_then(|m| m.get(key)).cloned())
    }

    fn entries(&self, map: &str) -> Result<vellum_js::Entries, StoreError> {
        Ok(self
            .0
            .get(map)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
}

fn go(code: &str, args: &[&str]) -> Outcome {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    run(&Call::new("f", code, &args), Data::new())
}

fn ok(o: Outcome) -> (String, vellum_js::Writes) {
    match o {
        Outcome::Succeeded {
            return_value,
            writes,
            ..
        } => (return_value, writes),
        Outcome::Failed { message } => panic!("failed: {message}"),
    }
}

fn failed(o: Outcome) -> String {
    match o {
        Outcome::Failed { message } => message,
        Outcome::Succeeded { return_value, .. } => panic!("succeeded with {return_value:?}"),
    }
}

#[test]
fn return_values_as_acl_shows_them() {
    for (code, want) in [
        ("export function main() { return 'Alert'; }", "Alert"),
        ("export const main = () => true;", "true"),
        ("export function main() {}", ""),
        ("export function main() { return null; }", ""),
        ("export function main() { return 42; }", "42"),
        (
            "export function main() { return {a: [1, 'x']}; }",
            r#"{"a":[1,"x"]}"#,
        ),
        ("export async function main() { return 'later'; }", "later"),
    ] {
        assert_eq!(ok(go(code, &[])).0, want, "{code}");
    }
    // Arguments are positional strings; another export by name.
    let args = ["2".to_owned(), "3".to_owned()];
    let mut call = Call::new("f", "export function add(a, b) { return a + b; }", &args);
    call.export = "add";
    assert_eq!(ok(run(&call, Data::new())).0, "23");
    call.export = "missing";
    assert!(failed(run(&call, Data::new())).contains("exports no function \"missing\""));
}

#[test]
fn thrown_errors_read_as_acl_writes_them() {
    let m = failed(go(
        "function myMainFunction() { throw new Error('MyCustomError'); }\nexport const main = myMainFunction;",
        &[],
    ));
    assert!(
        m.starts_with(
            "Error while executing function f: Error: MyCustomError\n    at myMainFunction"
        ),
        "{m}"
    );
    let m = failed(go("export function main() { null.x; }", &[]));
    assert!(
        m.starts_with("Error while executing function f: TypeError:"),
        "{m}"
    );
    let m = failed(go("export function main() { throw 'plain'; }", &[]));
    assert!(m.contains("uncaught \"plain\""), "{m}");
    let m = failed(go("export function main( {", &[]));
    assert!(m.contains("SyntaxError"), "{m}");
    // Without exception details: the message alone.
    let mut call = Call::new("f", "export function main() { throw new Error('x'); }", &[]);
    call.options.return_exception_details = false;
    assert_eq!(
        failed(run(&call, Data::new())),
        "Error while executing function f: Error: x"
    );
}

#[test]
fn code_is_checked_without_running_it() {
    assert_eq!(
        vellum_js::check("export function main() { for (;;) {} }"),
        Ok(())
    );
    let e = vellum_js::check("export function main( {").unwrap_err();
    assert!(e.starts_with("SyntaxError: "), "{e}");
    assert!(vellum_js::check("import x from 'elsewhere';").is_err());
}

#[test]
fn the_key_value_maps() {
    let (v, writes) = ok(go(
        r#"export function main() {
            const app = ccf.kv["public:app"];
            const s = (b) => b === undefined ? "-" : ccf.bufToStr(b);
            let seen = [];
            app.forEach((v, k) => seen.push(ccf.bufToStr(k) + "=" + ccf.bufToStr(v)));
            app.set(ccf.strToBuf("c"), ccf.strToBuf("3")).set(ccf.strToBuf("a"), ccf.strToBuf("one"));
            const deleted = app.delete(ccf.strToBuf("b"));
            const logs = ccf.kv["public:confidentialledger.logs"];
            return [seen.join(","), s(app.get(ccf.strToBuf("a"))), app.has(ccf.strToBuf("b")), deleted,
                    app.size, s(logs.get(ccf.strToBuf("subledger:0"))), s(app.get(ccf.strToBuf("zz")))];
        }"#,
        &[],
    ));
    assert_eq!(v, r#"["a=1,b=2","one",false,true,2,"latest","-"]"#);
    let app = &writes["public:app"];
    assert_eq!(app[b"a".as_slice()], Some(b"one".to_vec()));
    assert_eq!(app[b"c".as_slice()], Some(b"3".to_vec()));
    assert_eq!(app[b"b".as_slice()], None);
    assert_eq!(writes.len(), 1, "reads write nothing");
    // Read-only and hidden maps.
    let m = failed(go(
        r#"export function main() { ccf.kv["public:confidentialledger.logs"].set(ccf.strToBuf("k"), ccf.strToBuf("v")); }"#,
        &[],
    ));
    assert!(m.contains("is read-only"), "{m}");
    let m = failed(go(
        r#"export function main() { return ccf.kv["public:ccf.gov.users.info"].size; }"#,
        &[],
    ));
    assert!(m.contains("not accessible"), "{m}");
    // A throw after writes: nothing it wrote is returned.
    let m = failed(go(
        r#"export function main() { ccf.kv["public:app"].set(ccf.strToBuf("x"), ccf.strToBuf("y")); throw new Error("after"); }"#,
        &[],
    ));
    assert!(m.contains("Error: after"), "{m}");
    // A store that cannot be read fails the run (even one that catches everything); the
    // script never sees a guess.
    let m = failed(go(
        r#"export function main() { try { ccf.kv["public:broken"].get(ccf.strToBuf("k")); } catch (e) { return "swallowed"; } }"#,
        &[],
    ));
    assert!(
        m.contains("the ledger could not be read: disk on fire"),
        "{m}"
    );
    // Writes have a cap of their own (they live outside the script's heap).
    let m = failed(go(
        r#"export function main() { const m = ccf.kv["public:app"]; const v = ccf.strToBuf("v".repeat(65536));
            for (let i = 0; ; i++) m.set(ccf.strToBuf("k" + i), v); }"#,
        &[],
    ));
    assert!(m.contains("a run may write at most 4194304 bytes"), "{m}");
}

#[test]
fn helpers_crypto_context_and_no_clock_or_entropy() {
    let mut call = Call::new(
        "f",
        r#"export function main() {
            const d = new Uint8Array(ccf.crypto.digest("SHA-256", ccf.strToBuf("abc")));
            const hex = Array.from(d).map((b) => b.toString(16).padStart(2, "0")).join("");
            const round = ccf.bufToStr(ccf.strToBuf("héllo ✓"));
            const json = ccf.bufToJsonCompatible(ccf.jsonCompatibleToBuf({k: [1, 2]}));
            return [hex, round, json.k[1], context.userId, Date.now(), new Date().getTime(), Math.random()];
        }"#,
        &[],
    );
    call.context = Arc::new(serde_json::json!({"userId": "alice"}));
    call.seed = 7;
    let (a, _) = ok(run(&call, Data::new()));
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(
        v[0],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(v[1], "héllo ✓");
    assert_eq!(v[2], 2);
    assert_eq!(v[3], "alice");
    assert_eq!((v[4].as_f64(), v[5].as_f64()), (Some(0.0), Some(0.0)));
    // The same seed, the same "random" number; another seed, another.
    assert_eq!(ok(run(&call, Data::new())).0, a);
    call.seed = 8;
    assert_ne!(ok(run(&call, Data::new())).0, a);
}

#[test]
fn limits_end_a_run_and_the_next_one_runs() {
    let mut opts = RuntimeOptions {
        max_execution_time_ms: 200,
        ..RuntimeOptions::default()
    };
    let timed = |code: &str, opts: RuntimeOptions| {
        let mut call = Call::new("f", code, &[]);
        call.options = opts;
        let t = Instant::now();
        let m = failed(run(&call, Data::new()));
        (m, t.elapsed())
    };
    // An endless loop, even one that catches everything.
    let (m, t) = timed(
        "export function main() { for (;;) { try { while (true) {} } catch (e) {} } }",
        opts,
    );
    assert!(m.contains("execution time limit of 200 ms exceeded"), "{m}");
    assert!(t < Duration::from_secs(3), "{t:?}");
    // A memory bomb.
    let (m, _) = timed(
        "export function main() { let a = []; for (;;) a.push(new Array(100000).fill(1)); }",
        opts,
    );
    assert!(m.contains("out of memory"), "{m}");
    // Deep recursion.
    let (m, _) = timed(
        "function f(n) { return f(n + 1) + 1; }\nexport function main() { return f(0); }",
        opts,
    );
    assert!(
        m.contains("RangeError: Maximum call stack size exceeded"),
        "{m}"
    );
    // A huge return value (within the heap).
    opts.max_heap_bytes = 64 << 20;
    let (m, _) = timed(
        "export function main() { return 'x'.repeat(2 * 1024 * 1024); }",
        opts,
    );
    assert!(
        m.contains("RangeError") && m.contains("limit is 1048576"),
        "{m}"
    );
    // Asking for more than the ceilings gets the ceilings.
    let big = RuntimeOptions {
        max_execution_time_ms: 3_600_000,
        max_heap_bytes: u64::MAX,
        max_stack_bytes: u64::MAX,
        ..RuntimeOptions::default()
    }
    .clamped();
    assert_eq!(big.max_execution_time_ms, vellum_js::MAX_EXECUTION_TIME_MS);
    assert_eq!(big.max_heap_bytes, vellum_js::MAX_HEAP_BYTES);
    assert_eq!(big.max_stack_bytes, vellum_js::MAX_STACK_BYTES);
    // And the engine goes on.
    assert_eq!(
        ok(go("export const main = () => 'still here';", &[])).0,
        "still here"
    );
}

/// A run on a [`vellum_js::Worker`], waited for.
fn on(worker: &vellum_js::Worker, code: &str, opts: RuntimeOptions) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut call = Call::new("f", code, &[]);
    call.options = opts;
    worker.submit(&call, Data::new(), Box::new(move |o| tx.send(o).unwrap()));
    rx.recv().unwrap().unwrap()
}

#[test]
fn a_worker_reuses_its_engine_but_no_run_sees_another() {
    let w = vellum_js::Worker::start().unwrap();
    let opts = RuntimeOptions {
        max_execution_time_ms: 200,
        ..RuntimeOptions::default()
    };
    // Globals do not outlive a run, nor do changes to built-ins.
    let leak = "export function main() { globalThis.left = 'over'; Array.prototype.evil = 1; \
                ccf.kv['public:app'].set(ccf.strToBuf('w'), ccf.strToBuf('x')); return 'set'; }";
    assert_eq!(ok(on(&w, leak, opts)).0, "set");
    let look = "export function main() { return String(globalThis.left) + ' ' + String([].evil) \
                + ' ' + String(ccf.kv['public:app'].get(ccf.strToBuf('w'))); }";
    // (The store is the caller's: a run's writes are returned, never kept by the worker.)
    assert_eq!(ok(on(&w, look, opts)).0, "undefined undefined undefined");
    // Each limit ends its run, and the worker goes on.
    for (bomb, want) in [
        (
            "export function main() { for (;;) {} }",
            "execution time limit",
        ),
        (
            "export function main() { let a = []; for (;;) a.push(new Array(100000).fill(1)); }",
            "out of memory",
        ),
        (
            "function f(n) { return f(n + 1) + 1; }\nexport function main() { return f(0); }",
            "Maximum call stack size exceeded",
        ),
        (
            "export function main() { throw new Error('boom'); }",
            "Error: boom",
        ),
    ] {
        let m = failed(on(&w, bomb, opts));
        assert!(m.contains(want), "{m}");
        assert_eq!(
            ok(on(&w, "export const main = () => 'still here';", opts)).0,
            "still here"
        );
    }
    // Runs queued from many threads all run.
    let w = Arc::new(w);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || {
                let code = format!("export const main = () => 'run {i}';");
                ok(on(&w, &code, RuntimeOptions::default())).0
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("run {i}"));
    }
}

/// A run asking to reuse an interpreter under `key` (up to `cached` kept).
fn reusing(
    worker: &vellum_js::Worker,
    code: &str,
    export: &str,
    key: Option<&str>,
    cached: u64,
) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut call = Call::new("f", code, &[]);
    call.export = export;
    call.options.max_cached_interpreters = cached;
    call.reuse = key.map(str::to_owned);
    call.context = Arc::new(serde_json::json!({"n": export}));
    worker.submit(&call, Data::new(), Box::new(move |o| tx.send(o).unwrap()));
    rx.recv().unwrap().unwrap()
}

#[test]
fn interpreters_are_reused_only_when_asked_and_never_after_a_failure() {
    let w = vellum_js::Worker::start().unwrap();
    let code = "let runs = 0;\n\
                export function main() { runs += 1; return runs + ' ' + context.n; }\n\
                export function fail() { runs += 100; throw new Error('no'); }\n\
                export function peek() { return String(ccf.kv['public:app'].get(ccf.strToBuf('a')) !== undefined); }";
    // A fresh interpreter every run: by default, and when the options keep none.
    for (key, cached) in [(None, 10), (Some("k"), 0)] {
        for _ in 0..2 {
            assert_eq!(ok(reusing(&w, code, "main", key, cached)).0, "1 main");
        }
    }
    // Asked for: the module's state carries over, `context` is each run's own.
    assert_eq!(ok(reusing(&w, code, "main", Some("k"), 2)).0, "1 main");
    assert_eq!(ok(reusing(&w, code, "main", Some("k"), 2)).0, "2 main");
    assert_eq!(ok(reusing(&w, code, "peek", Some("k"), 2)).0, "true");
    assert_eq!(ok(reusing(&w, code, "main", Some("k"), 2)).0, "3 main");
    // Another key, another interpreter.
    assert_eq!(ok(reusing(&w, code, "main", Some("other"), 2)).0, "1 main");
    assert_eq!(ok(reusing(&w, code, "main", Some("k"), 2)).0, "4 main");
    // A failure retires the interpreter: what the failed run changed is gone.
    failed(reusing(&w, code, "fail", Some("k"), 2));
    assert_eq!(ok(reusing(&w, code, "main", Some("k"), 2)).0, "1 main");
    // At most `max_cached_interpreters` are kept: a third key pushes out the oldest.
    assert_eq!(ok(reusing(&w, code, "main", Some("third"), 2)).0, "1 main");
    assert_eq!(ok(reusing(&w, code, "main", Some("other"), 2)).0, "1 main");
    // An endless loop in a reused interpreter still ends at the limit.
    let spin = "export function main() { return 'ok'; }\nexport function spin() { for (;;) {} }";
    assert_eq!(ok(reusing(&w, spin, "main", Some("s"), 1)).0, "ok");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut call = Call::new("f", spin, &[]);
    call.export = "spin";
    call.options.max_cached_interpreters = 1;
    call.options.max_execution_time_ms = 100;
    call.reuse = Some("s".into());
    w.submit(&call, Data::new(), Box::new(move |o| tx.send(o).unwrap()));
    let m = failed(rx.recv().unwrap().unwrap());
    assert!(m.contains("execution time limit of 100 ms"), "{m}");
}

/// Runs `export` of `entry` in `modules` as an endpoint handler for `meta` and `body`.
fn handle(
    modules: &[(&str, &str)],
    entry: &str,
    export: &str,
    meta: serde_json::Value,
    body: &[u8],
) -> Outcome {
    let modules: vellum_js::Modules = modules
        .iter()
        .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
        .collect();
    let code = modules[entry].clone();
    let mut call = Call::new(entry, &code, &[]);
    call.export = export;
    call.modules = Some(Arc::new(modules));
    call.http = Some(vellum_js::HttpRequest {
        meta,
        body: body.to_vec(),
    });
    run(&call, Data::new())
}

fn response(o: Outcome) -> (vellum_js::HttpResponse, vellum_js::Effects) {
    match o {
        Outcome::Succeeded { effects, .. } => (effects.response.clone().unwrap(), effects),
        Outcome::Failed { message } => panic!("failed: {message}"),
    }
}

#[test]
fn endpoint_handlers_import_modules_and_answer_http() {
    // Imports resolve between the bundle's modules, relative to the importer.
    let bundle = [
        (
            "test.js",
            "import { foo } from \"./baz/baz.js\";\nexport function content(request) { return { statusCode: 200, body: { payload: foo() } }; }",
        ),
        (
            "baz/baz.js",
            "import { bar } from \"../util.js\";\nexport function foo() { return bar(); }",
        ),
        ("util.js", "export const bar = () => 'Test content';"),
    ];
    let (r, _) = response(handle(
        &bundle,
        "test.js",
        "content",
        serde_json::json!({}),
        b"",
    ));
    assert_eq!((r.status, r.content_type), (200, Some("application/json")));
    assert_eq!(r.body, br#"{"payload":"Test content"}"#);
    // An import of a module the bundle does not have fails the run (no file is ever read).
    let m = failed(handle(
        &[(
            "a.js",
            "import { x } from \"/etc/passwd\";\nexport const main = () => x;",
        )],
        "a.js",
        "main",
        serde_json::json!({}),
        b"",
    ));
    assert!(m.contains("/etc/passwd"), "{m}");
    // The request: fields as given, the body three ways; the response: status, headers and
    // a body whose type picks the content type.
    let echo = [(
        "app.js",
        r#"export function echo(request) {
            const body = request.body.json();
            if (typeof body.value != "string") return { statusCode: 400, body: { error: "Invalid body type" } };
            return { body: { echoed_value: body.value, method: request.method, id: request.params.id,
                             text: request.body.text().length, bytes: request.body.arrayBuffer().byteLength } };
        }
        export const text = () => ({ headers: { "x-a": "1" }, body: "plain" });
        export const bin = () => ({ statusCode: 201, body: new Uint8Array([0, 255, 7]) });
        export const empty = () => undefined;
        export function claims() {
            ccf.rpc.setClaimsDigest(ccf.crypto.digest("SHA-256", ccf.strToBuf("claim")));
            ccf.rpc.setApplyWrites(true);
            return { statusCode: 409 };
        }
        export const id = (request) => ({ body: ccf.pemToId(request.caller.cert) });"#,
    )];
    let meta = serde_json::json!({"method": "POST", "params": {"id": "7"}});
    let (r, _) = response(handle(
        &echo,
        "app.js",
        "echo",
        meta.clone(),
        r#"{"value":"hé"}"#.as_bytes(),
    ));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"echoed_value": "hé", "method": "POST", "id": "7", "text": 14, "bytes": 15})
    );
    let (r, _) = response(handle(&echo, "app.js", "echo", meta, br#"{"value":3}"#));
    assert_eq!(r.status, 400);
    let (r, _) = response(handle(&echo, "app.js", "text", serde_json::json!({}), b""));
    assert_eq!(
        (r.content_type, r.body.as_slice(), r.headers.clone()),
        (
            Some("text/plain"),
            b"plain".as_slice(),
            vec![("x-a".to_owned(), "1".to_owned())]
        )
    );
    let (r, _) = response(handle(&echo, "app.js", "bin", serde_json::json!({}), b""));
    assert_eq!(
        (r.status, r.content_type, r.body),
        (201, Some("application/octet-stream"), vec![0, 255, 7])
    );
    let (r, _) = response(handle(&echo, "app.js", "empty", serde_json::json!({}), b""));
    assert_eq!((r.status, r.content_type), (200, None));
    let (r, e) = response(handle(
        &echo,
        "app.js",
        "claims",
        serde_json::json!({}),
        b"",
    ));
    assert_eq!((r.status, e.apply_writes), (409, Some(true)));
    assert_eq!(e.claims_digest.unwrap()[..4], [0xdd, 0x1b, 0x3c, 0x31]); // SHA-256("claim")
    let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
    let (r, _) = response(handle(
        &echo,
        "app.js",
        "id",
        serde_json::json!({"caller": {"cert": pem}}),
        b"",
    ));
    // SHA-256 of the bytes 00 01 02.
    assert_eq!(
        r.body,
        b"ae4b3280e56e2faf83f414a6e3dabe9d5fbe18976544c05fed121accb85b53fc"
    );
}

#[test]
fn a_run_says_whether_it_used_the_maps() {
    let touched = |code: &str| match go(code, &[]) {
        Outcome::Succeeded { effects, .. } => effects.touched_state,
        Outcome::Failed { message } => panic!("{message}"),
    };
    assert!(!touched(
        "export const main = () => JSON.stringify({a: ccf.strToBuf('x').byteLength});"
    ));
    assert!(touched(
        "export const main = () => ccf.kv['public:app'].has(ccf.strToBuf('a'));"
    ));
    assert!(touched(
        "export const main = () => ccf.kv['public:confidentialledger.logs'].size;"
    ));
    assert!(touched(
        "export function main() { ccf.kv['public:app'].set(ccf.strToBuf('k'), ccf.strToBuf('v')); }"
    ));
}

/// A call of `export` in `code` that may reuse an interpreter under `key`.
fn inline_call<'a>(code: &'a str, export: &'a str, key: &str) -> Call<'a> {
    let mut call = Call::new("f", code, &[]);
    call.export = export;
    call.options.max_cached_interpreters = 1;
    call.reuse = Some(key.to_owned());
    call
}

#[test]
fn short_runs_are_made_inline_and_the_rest_left_to_the_worker() {
    let code = "let runs = 0;\n\
                export function main() { runs += 1; return runs + ' ' + context.n; }\n\
                export function deep(n) { return n == 0 ? 0 : deep(n - 1) + 1; }\n\
                export function recurse() { return String(deep(8000)); }\n\
                export function fail() { throw new Error('no'); }\n\
                export function spin() { for (;;) {} }";
    let inline = |export: &str, key: &str| {
        let mut call = inline_call(code, export, key);
        call.context = Arc::new(serde_json::json!({"n": export}));
        vellum_js::run_inline(&call, Data::new())
    };
    // A short run is made here, on an interpreter this thread keeps.
    assert_eq!(ok(inline("main", "k").unwrap()).0, "1 main");
    assert_eq!(ok(inline("main", "k").unwrap()).0, "2 main");
    // Another thread keeps interpreters of its own (as CCF's worker threads do).
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(ok(inline("main", "k").unwrap()).0, "1 main"));
    });
    assert_eq!(ok(inline("main", "k").unwrap()).0, "3 main");
    // Not made here: a call that may not reuse an interpreter...
    let mut fresh = inline_call(code, "main", "k");
    fresh.options.max_cached_interpreters = 0;
    assert!(vellum_js::run_inline(&fresh, Data::new()).is_none());
    fresh.options.max_cached_interpreters = 1;
    fresh.reuse = None;
    assert!(vellum_js::run_inline(&fresh, Data::new()).is_none());
    // ... a run that fails (the worker makes it again and reports it) and retires the
    // interpreter ...
    assert!(inline("fail", "k").is_none());
    assert_eq!(ok(inline("main", "k").unwrap()).0, "1 main");
    // ... a run that needs more stack than a run made here may use, which the worker's
    // stack holds ...
    assert!(inline("recurse", "k").is_none());
    let w = vellum_js::Worker::start().unwrap();
    let mut deep = inline_call(code, "recurse", "k");
    deep.options.max_stack_bytes = vellum_js::MAX_STACK_BYTES;
    let (tx, rx) = std::sync::mpsc::channel();
    w.submit(&deep, Data::new(), Box::new(move |o| tx.send(o).unwrap()));
    assert_eq!(ok(rx.recv().unwrap().unwrap()).0, "8000");
    // ... and a run longer than a run made here may take: made on the worker, with the
    // call's own limit, and from then on this code is never tried here.
    let t = Instant::now();
    assert!(inline("spin", "slow").is_none());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(inline("main", "slow").is_none());
    let mut spin = inline_call(code, "spin", "slow");
    spin.options.max_execution_time_ms = 100;
    let (tx, rx) = std::sync::mpsc::channel();
    w.submit(&spin, Data::new(), Box::new(move |o| tx.send(o).unwrap()));
    let m = failed(rx.recv().unwrap().unwrap());
    assert!(m.contains("execution time limit of 100 ms"), "{m}");
    // The thread's other codes still run here (on a new interpreter: the deep run, which
    // failed here, retired the one before).
    assert_eq!(ok(inline("main", "k").unwrap()).0, "1 main");
    assert_eq!(ok(inline("main", "k").unwrap()).0, "2 main");
}

#[test]
fn context_is_made_as_json_parse_would() {
    let mut call = Call::new(
        "f",
        "export function main() {\n\
             const own = Object.prototype.hasOwnProperty.call(context, '__proto__');\n\
             return JSON.stringify([own, Object.getPrototypeOf(context) === Object.prototype,\n\
                 context.a, context.n, context.big, context.f, context.t, context.z, context.s]);\n\
         }",
        &[],
    );
    call.context = Arc::new(serde_json::json!({
        "__proto__": {"x": 1},
        "a": [1, "two", null, {"b": false}],
        "n": -7,
        "big": 1u64 << 40,
        "f": 0.5,
        "t": true,
        "z": null,
        "s": "é\u{0}\u{1F600}",
    }));
    let (v, _) = ok(run(&call, Data::new()));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            true,
            true,
            [1, "two", null, {"b": false}],
            -7,
            1u64 << 40,
            0.5,
            true,
            null,
            "é\u{0}\u{1F600}"
        ])
    );
}

/// PEM of DER with `label`.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn signatures_are_checked_as_ccf_crypto_does() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{self, KeyPair};
    let code = r#"
        const unhex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16))).buffer;
        export function main(alg, key, sig, data) {
            try {
                return String(ccf.crypto.verifySignature(JSON.parse(alg), key, unhex(sig),
                    ccf.strToBuf(data)));
            } catch (e) {
                return e.name + ": " + e.message;
            }
        }
        export function bundle(pem) { return String(ccf.crypto.isValidX509CertBundle(pem)); }"#;
    let verify = |alg: &str, key: &str, sig: &[u8], data: &str| {
        let args = [alg.to_owned(), key.to_owned(), hex(sig), data.to_owned()];
        ok(run(&Call::new("f", code, &args), Data::new())).0
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let data = "what was signed";

    // ECDSA P-256 and P-384, signatures in IEEE P1363 form (r || s), as CCF expects.
    for (signing, alg) in [
        (
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            r#"{"name":"ECDSA","hash":"SHA-256"}"#,
        ),
        (
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            r#"{"name":"ECDSA","hash":"SHA-384"}"#,
        ),
    ] {
        let kp = signature::EcdsaKeyPair::generate(signing).unwrap();
        let key = pem("PUBLIC KEY", kp.public_key().as_der().unwrap().as_ref());
        let sig = kp.sign(&rng, data.as_bytes()).unwrap();
        assert_eq!(verify(alg, &key, sig.as_ref(), data), "true");
        assert_eq!(verify(alg, &key, sig.as_ref(), "something else"), "false");
        let mut bad = sig.as_ref().to_vec();
        bad[5] ^= 1;
        assert_eq!(verify(alg, &key, &bad, data), "false");
        assert_eq!(verify(alg, &key, &bad[..7], data), "false");
        // The wrong algorithm for the key is the script's error.
        let m = verify(r#"{"name":"EdDSA"}"#, &key, sig.as_ref(), data);
        assert!(
            m.starts_with("TypeError: ") && m.contains("not a key for EdDSA"),
            "{m}"
        );
        let m = verify(r#"{"name":"ECDSA"}"#, &key, sig.as_ref(), data);
        assert!(m.contains("needs a hash"), "{m}");
    }

    // A certificate's key, as CCF takes it too.
    let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["signer".to_owned()])
        .unwrap()
        .self_signed(&cert_key)
        .unwrap();
    let signer = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &cert_key.serialize_der(),
    )
    .unwrap();
    let sig = signer.sign(&rng, data.as_bytes()).unwrap();
    let alg = r#"{"name":"ECDSA","hash":"SHA-256"}"#;
    assert_eq!(verify(alg, &cert.pem(), sig.as_ref(), data), "true");

    // EdDSA (Ed25519).
    let ed = signature::Ed25519KeyPair::generate().unwrap();
    let key = pem("PUBLIC KEY", ed.public_key().as_der().unwrap().as_ref());
    let sig = ed.sign(data.as_bytes());
    assert_eq!(
        verify(r#"{"name":"EdDSA"}"#, &key, sig.as_ref(), data),
        "true"
    );
    assert_eq!(
        verify(r#"{"name":"EdDSA"}"#, &key, sig.as_ref(), "x"),
        "false"
    );

    // RSASSA-PKCS1-v1_5 with SHA-256.
    let rsa = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let key = pem("PUBLIC KEY", rsa.public_key().as_der().unwrap().as_ref());
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        data.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let alg = r#"{"name":"RSASSA-PKCS1-v1_5","hash":"SHA-256"}"#;
    assert_eq!(verify(alg, &key, &sig, data), "true");
    sig[0] ^= 1;
    assert_eq!(verify(alg, &key, &sig, data), "false");

    // Unusable input is thrown, never a crash.
    for (alg, key, want) in [
        (
            r#"{"name":"RSA-OAEP"}"#,
            key.as_str(),
            "unknown signing algorithm",
        ),
        (alg, "not a key", "not PEM"),
        (
            alg,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "cannot be read",
        ),
        (
            r#"{"hash":"SHA-256"}"#,
            key.as_str(),
            "bad signing algorithm",
        ),
    ] {
        let m = verify(alg, key, &sig, data);
        assert!(m.starts_with("TypeError: ") && m.contains(want), "{m}");
    }

    // Certificate bundles: syntax only.
    let bundle = |p: &str| {
        let args = [p.to_owned()];
        let mut call = Call::new("f", code, &args);
        call.export = "bundle";
        ok(run(&call, Data::new())).0
    };
    let other = rcgen::CertificateParams::new(vec!["other".to_owned()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    assert_eq!(bundle(&cert.pem()), "true");
    assert_eq!(bundle(&format!("{}{}", cert.pem(), other.pem())), "true");
    assert_eq!(bundle(""), "false");
    assert_eq!(bundle(&key), "false");
    assert_eq!(
        bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        "false"
    );
}

//! Criterion benchmarks of the JavaScript sandbox, for a trivial function and for one that
//! reads and writes a key: a cold run (a fresh interpreter on a thread of its own, as
//! [`vellum_js::run`] does), a fresh run on a [`vellum_js::Worker`] (a fresh interpreter,
//! ACL's default for user-defined functions), a warm one (the worker reuses the
//! interpreter, the module loaded: `max_cached_interpreters` > 0) and an inline one (the same,
//! made on the calling thread by [`vellum_js::run_inline`], as the node makes short runs).
//! Results and the command are in `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::{Arc, mpsc};

use criterion::{Criterion, criterion_group, criterion_main};
use vellum_js::{Call, EmptyStore, Outcome, Worker, run, run_inline};

const TRIVIAL: &str = "export function main() { return 'ok'; }";
const KV: &str = r#"export function main(k) {
    const m = ccf.kv["public:app"];
    const v = m.get(ccf.strToBuf(k));
    m.set(ccf.strToBuf(k), ccf.strToBuf(v === undefined ? "1" : ccf.bufToStr(v) + "1"));
    return "done";
}"#;

/// The return value of a run that succeeded, which must be `want` (each code returns its own,
/// so a run of the wrong code shows).
fn ok(o: Outcome, want: &str) -> String {
    match o {
        Outcome::Succeeded { return_value, .. } => {
            assert_eq!(return_value, want);
            return_value
        }
        Outcome::Failed { message } => panic!("{message}"),
    }
}

fn runs(c: &mut Criterion) {
    let mut g = c.benchmark_group("udf run");
    let args = ["key".to_owned()];
    let store = Arc::new(EmptyStore::writable("public:app"));
    for (name, code, want) in [("trivial", TRIVIAL, "ok"), ("kv read+write", KV, "done")] {
        g.bench_function(format!("cold {name}"), |b| {
            b.iter(|| black_box(ok(run(&Call::new("f", code, &args), store.clone()), want)))
        });
        let worker = Worker::start().unwrap();
        // The reuse key names the code: each code its own.
        let key = format!("k-{name}");
        for (kind, reuse) in [("fresh", None), ("warm", Some(key.clone()))] {
            let mut call = Call::new("f", code, &args);
            call.reuse = reuse;
            call.options.max_cached_interpreters = 1;
            g.bench_function(format!("{kind} {name}"), |b| {
                b.iter(|| {
                    let (tx, rx) = mpsc::sync_channel(1);
                    worker.submit(&call, store.clone(), Box::new(move |o| tx.send(o).unwrap()));
                    black_box(ok(rx.recv().unwrap().unwrap(), want))
                })
            });
        }
        let mut call = Call::new("f", code, &args);
        call.reuse = Some(key);
        call.options.max_cached_interpreters = 1;
        g.bench_function(format!("inline {name}"), |b| {
            b.iter(|| black_box(ok(run_inline(&call, store.clone()).unwrap(), want)))
        });
    }
    g.finish();
}

criterion_group!(benches, runs);
criterion_main!(benches);

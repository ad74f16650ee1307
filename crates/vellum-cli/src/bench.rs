//! `vellum bench`: a load generator on the client stack (mutual TLS, HTTP/1.1 keep-alive, one
//! connection per worker), at fixed concurrency, bounded by a request count and a time.
//!
//! Workloads: `write` (append, answered once the transaction id is assigned), `write-commit`
//! (append and wait until Committed, in one round trip: the client's `wait_for_commit`, which
//! asks Vellum to answer once committed), `write-poll` (append, then poll the status until
//! Committed, as the Azure SDKs do), `read` (an entry by transaction id), `range` (a range
//! query over `--range` entries), `receipt` (a receipt by transaction id) and `null` (a request
//! the server answers without touching the ledger: the ceiling HTTP and TLS allow). Reads and
//! receipts first write `--seed` entries to a collection of their own.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits); the report has
//! throughput, p50/p90/p99/p99.9 and max, per-second series, and optionally an SVG plot.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vellum_client::models::{
    Bundle, FunctionOutcome, FunctionRun, Hook, JsRuntimeOptions, ModuleDef,
};
use vellum_client::{
    AppendToLedgerOptions, ConfidentialLedgerClient, GetLedgerEntriesOptions, GetLedgerEntryOptions,
};

use crate::ledger::Connection;

/// What `vellum bench` sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Append an entry; done when its transaction id is returned (Pending).
    Write,
    /// Append an entry and wait until it is Committed (one request: the server answers once
    /// the write is committed).
    WriteCommit,
    /// Append an entry, then poll its status until Committed (two requests or more, as the
    /// Azure SDKs' pollers do).
    WritePoll,
    /// Read an entry by transaction id.
    Read,
    /// Read `--range` consecutive entries of a collection.
    Range,
    /// Fetch a receipt.
    Receipt,
    /// Read every entry of the collection carrying the tag `rare` (one entry in
    /// `--tag-every` of the seeded ones), all pages: a tag query's cost in a big collection.
    Tag,
    /// A request the server answers without touching the ledger (`POST /node/null`).
    Null,
    /// Run a user-defined function that reads and writes one key (of 1,000): each run is a
    /// transaction. The function is stored first (Administrator).
    Udf,
    /// Append an entry with one trivial pre-hook (a function that does nothing): compare
    /// with `write` for a hook's cost.
    Hook,
    /// Call a deployed endpoint (`readonly`, no_auth) that reads one of 1,000 keys. The app
    /// is deployed first, replacing any (Administrator; no user-defined function may exist).
    Endpoint,
}

/// The app the `endpoint` workload deploys.
const BENCH_APP: &str = r#"export function read(request) {
    const v = ccf.kv["public:vellum-bench"].get(ccf.strToBuf(request.params.k));
    return { body: v === undefined ? "none" : ccf.bufToStr(v) };
}
"#;

/// The function the `udf` and `hook` workloads store and run.
const BENCH_FUNCTION: &str = "vellum-bench";
const BENCH_CODE: &str = r#"export function main(k) {
    const m = ccf.kv["public:vellum-bench"], key = ccf.strToBuf(k), v = m.get(key);
    m.set(key, ccf.strToBuf(v === undefined ? "1" : String(Number(ccf.bufToStr(v)) + 1)));
    return "ok";
}
export function noop() {}
"#;

/// Options of `vellum bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to send.
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// Concurrent requests (one connection each).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Stop after this many requests (default 20,000 unless --duration is given).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, short = 'd')]
    pub duration: Option<f64>,
    /// Entry contents size in bytes (writes).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Entries written first for read, range and receipt workloads.
    #[arg(long, default_value_t = 2000)]
    pub seed: usize,
    /// Read, range and receipt workloads use the oldest `--seed` entries already in this
    /// collection instead of writing their own (e.g. `subledger:0` after a large `write` run:
    /// how reads of old history hold up in a big ledger).
    #[arg(long, value_name = "COLLECTION")]
    pub existing: Option<String>,
    /// Entries per range read.
    #[arg(long, default_value_t = 100)]
    pub range: usize,
    /// For the tag workload: one seeded entry in this many carries the tag `rare`.
    #[arg(long, default_value_t = 10_000)]
    pub tag_every: usize,
    /// For the udf and hook workloads: let runs reuse an interpreter (runtime option
    /// `max_cached_interpreters` 1) instead of ACL's default, a fresh one per run; for the
    /// endpoint workload: deploy the endpoint with `interpreter_reuse`.
    #[arg(long)]
    pub reuse_interpreters: bool,
    /// Write an SVG plot of throughput and latency per second.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Allow an endpoint that is not on loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Samples of one worker: (completion offset in ms, latency in µs).
type Samples = Vec<(u32, u32)>;

struct Shared {
    client: ConfidentialLedgerClient,
    workload: Workload,
    /// Runtime options of the udf and hook workloads' runs.
    js_options: Option<JsRuntimeOptions>,
    contents: String,
    seed: Vec<String>,
    collection: String,
    range: usize,
    /// Entries a tag query must return (the tag workload, on entries it seeded).
    tagged: Option<usize>,
    issued: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
}

/// Polling for the commit workloads: the status call itself waits on the server a little.
fn fast_poll() -> vellum_client::PollOptions {
    vellum_client::PollOptions {
        interval: Duration::from_millis(1),
        timeout: Duration::from_secs(30),
    }
}

async fn one(s: &Shared, i: u64) -> anyhow::Result<()> {
    let pick =
        |i: u64| s.seed[(i.wrapping_mul(2_654_435_761) % s.seed.len() as u64) as usize].clone();
    match s.workload {
        Workload::Write => {
            s.client.append_to_ledger(&s.contents, None).await?;
        }
        Workload::WriteCommit => {
            let opts = AppendToLedgerOptions {
                wait_for_commit: true,
                poll: fast_poll(),
                ..Default::default()
            };
            s.client.append_to_ledger(&s.contents, Some(opts)).await?;
        }
        Workload::WritePoll => {
            let r = s.client.append_to_ledger(&s.contents, None).await?;
            let opts = vellum_client::WaitUntilDurableOptions {
                poll: fast_poll(),
                ..Default::default()
            };
            s.client
                .wait_until_durable(&r.transaction_id, Some(opts))
                .await?;
        }
        Workload::Read => {
            s.client
                .get_ledger_entry(Some(GetLedgerEntryOptions {
                    transaction_id: Some(pick(i)),
                    sub_ledger_id: Some(s.collection.clone()),
                    ..Default::default()
                }))
                .await?;
        }
        Workload::Receipt => {
            s.client.get_transaction_receipt(&pick(i), None).await?;
        }
        Workload::Range => {
            let start = (i.wrapping_mul(2_654_435_761) as usize)
                % s.seed.len().saturating_sub(s.range).max(1);
            let end = (start + s.range - 1).min(s.seed.len() - 1);
            let mut pager = s.client.get_ledger_entries(Some(GetLedgerEntriesOptions {
                from_transaction_id: Some(s.seed[start].clone()),
                to_transaction_id: Some(s.seed[end].clone()),
                sub_ledger_id: Some(s.collection.clone()),
                ..Default::default()
            }));
            while let Some(e) = pager.next().await {
                e?;
            }
        }
        Workload::Tag => {
            let mut pager = s.client.get_ledger_entries(Some(GetLedgerEntriesOptions {
                sub_ledger_id: Some(s.collection.clone()),
                tag: Some(RARE.to_owned()),
                ..Default::default()
            }));
            let mut n = 0;
            while let Some(e) = pager.next().await {
                e?;
                n += 1;
            }
            if let Some(want) = s.tagged {
                anyhow::ensure!(n == want, "the tag query returned {n} entries, not {want}");
            }
        }
        Workload::Null => {
            s.client.vellum_null(s.contents.as_bytes()).await?;
        }
        Workload::Udf => {
            let mut run = FunctionRun::with_arguments([format!("k{}", i % 1000)]);
            if let Some(o) = &s.js_options {
                run = run.options(o.clone());
            }
            let r = s
                .client
                .execute_user_defined_function(BENCH_FUNCTION, Some(run), None)
                .await?;
            if let FunctionOutcome::Failed(m) = r.outcome {
                anyhow::bail!("the function failed: {m}");
            }
        }
        Workload::Endpoint => {
            s.client
                .call_endpoint("GET", &format!("vellum-bench/k{}", i % 1000), None, None)
                .await?;
        }
        Workload::Hook => {
            let opts = AppendToLedgerOptions {
                pre_hooks: vec![Hook::with(BENCH_FUNCTION, {
                    let run = FunctionRun::default().export("noop");
                    match &s.js_options {
                        Some(o) => run.options(o.clone()),
                        None => run,
                    }
                })],
                ..Default::default()
            };
            s.client.append_to_ledger(&s.contents, Some(opts)).await?;
        }
    }
    Ok(())
}

/// The tag the tag workload seeds and queries.
const RARE: &str = "rare";

async fn worker(s: Arc<Shared>, start: Instant) -> (Samples, Option<String>) {
    let mut samples = Vec::new();
    let mut first_error = None;
    loop {
        let i = s.issued.fetch_add(1, Ordering::Relaxed);
        if i >= s.limit || s.deadline.is_some_and(|d| Instant::now() >= d) {
            return (samples, first_error);
        }
        let t = Instant::now();
        match one(&s, i).await {
            Ok(()) => {
                let done = start.elapsed();
                samples.push((
                    done.as_millis().min(u128::from(u32::MAX)) as u32,
                    t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
                ));
            }
            Err(e) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        s.done.fetch_add(1, Ordering::Relaxed);
    }
}

fn loopback(endpoint: &str) -> bool {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split('/')
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let host = host.trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Runs the benchmark.
pub fn run(conn: &Connection, args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.seed > 0 && args.range > 0,
        "--seed and --range must be at least 1"
    );
    let endpoint = conn.endpoint()?;
    anyhow::ensure!(
        args.allow_remote || loopback(&endpoint),
        "{endpoint} is not on loopback: vellum bench loads one machine (pass --allow-remote to insist)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(conn, args, endpoint))
}

/// Writes `n` entries to `collection`, entry `i` tagged `rare` when `tag_every` divides it;
/// returns their transaction ids in order.
async fn seed(
    client: &ConfidentialLedgerClient,
    n: usize,
    collection: &str,
    concurrency: usize,
    tag_every: Option<usize>,
    progress: bool,
) -> anyhow::Result<Vec<String>> {
    let bar = if progress {
        let b = ProgressBar::new(n as u64);
        b.set_style(
            ProgressStyle::with_template("seeding {bar:40} {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(n) {
        let (client, next, collection, bar) = (
            client.clone(),
            next.clone(),
            collection.to_owned(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return Ok::<_, vellum_client::Error>(ids);
                }
                let tags = match tag_every {
                    Some(k) if i % k as u64 == 0 => vec![RARE.to_owned()],
                    _ => Vec::new(),
                };
                let r = client
                    .append_to_ledger(
                        &format!("seed {i}"),
                        Some(AppendToLedgerOptions {
                            sub_ledger_id: Some(collection.clone()),
                            tags,
                            ..Default::default()
                        }),
                    )
                    .await?;
                ids.push(r.transaction_id);
                bar.inc(1);
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.context("a seeding task failed")??);
    }
    bar.finish_and_clear();
    let seqno = |t: &String| t.split_once('.').and_then(|(_, s)| s.parse::<u64>().ok());
    ids.sort_by_key(seqno);
    if let Some(last) = ids.last() {
        client.wait_until_durable(last, None).await?;
    }
    Ok(ids)
}

/// The transaction ids of the first `n` committed entries of `collection`.
async fn oldest(
    client: &ConfidentialLedgerClient,
    collection: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut pager = client.get_ledger_entries(Some(GetLedgerEntriesOptions {
        sub_ledger_id: Some(collection.to_owned()),
        ..Default::default()
    }));
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match pager.next().await {
            Some(e) => ids.push(e?.transaction_id),
            None => break,
        }
    }
    Ok(ids)
}

async fn run_async(
    conn: &Connection,
    args: BenchArgs,
    endpoint: String,
) -> anyhow::Result<ExitCode> {
    let client = conn.client(false)?;
    let collection = args
        .existing
        .clone()
        .unwrap_or_else(|| format!("bench-{}", std::process::id()));
    let tag_every = (args.workload == Workload::Tag).then_some(args.tag_every.max(1));
    let progress = !conn.json && !args.no_progress && std::io::stderr().is_terminal();
    let seeded = match args.workload {
        Workload::Read | Workload::Range | Workload::Receipt | Workload::Tag
            if args.existing.is_some() =>
        {
            let ids = oldest(&client, &collection, args.seed).await?;
            if ids.len() < args.range.max(1) {
                anyhow::bail!("collection {collection} holds only {} entries", ids.len());
            }
            ids
        }
        Workload::Read | Workload::Range | Workload::Receipt | Workload::Tag => {
            if !conn.json {
                eprintln!("seeding {} entries in {collection}...", args.seed);
            }
            seed(
                &client,
                args.seed,
                &collection,
                args.concurrency.max(64),
                tag_every,
                progress,
            )
            .await?
        }
        Workload::Endpoint => {
            let mut endpoint = serde_json::json!({"js_module": "bench.js", "js_function": "read",
                "authn_policies": ["no_auth"], "forwarding_required": "never", "mode": "readonly"});
            if args.reuse_interpreters {
                endpoint["interpreter_reuse"] = json!({"key": "bench"});
            }
            let bundle = Bundle::new(
                json!({"endpoints": {"/vellum-bench/{k}": {"get": endpoint}}}),
                vec![ModuleDef::new("bench.js", BENCH_APP)],
            );
            // Functions and endpoints exclude each other: the udf workload's function goes.
            if let Err(e) = client
                .delete_user_defined_function(BENCH_FUNCTION, None)
                .await
                && e.status() != Some(404)
            {
                return Err(e).context("deleting the udf workload's function");
            }
            client
                .create_user_defined_endpoint(&bundle, None)
                .await
                .context(
                    "deploying the benchmark's app (needs an Administrator, and no function)",
                )?;
            Vec::new()
        }
        Workload::Udf | Workload::Hook => {
            // Functions and endpoints exclude each other: the endpoint workload's app goes.
            client
                .create_user_defined_endpoint(&Bundle::default(), None)
                .await
                .context("removing the endpoint workload's app (needs an Administrator)")?;
            client
                .create_user_defined_function(BENCH_FUNCTION, BENCH_CODE, None)
                .await
                .context("storing the benchmark's function (needs an Administrator)")?;
            Vec::new()
        }
        _ => Vec::new(),
    };
    let tagged = tag_every
        .filter(|_| args.existing.is_none())
        .map(|k| seeded.len().div_ceil(k));
    let limit = args.requests.unwrap_or(if args.duration.is_some() {
        u64::MAX
    } else {
        20_000
    });
    let shared = Arc::new(Shared {
        client,
        workload: args.workload,
        js_options: args.reuse_interpreters.then(|| {
            let mut o = JsRuntimeOptions::default();
            o.max_cached_interpreters = Some(1);
            o
        }),
        contents: "x".repeat(args.size),
        seed: seeded,
        collection,
        range: args.range,
        tagged,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        limit,
        deadline: args
            .duration
            .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0))),
    });
    let bar = if args.no_progress || conn.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else if limit != u64::MAX {
        ProgressBar::new(limit).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} requests {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::new_spinner()
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        tasks.push(tokio::spawn(worker(shared.clone(), start)));
    }
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(shared.done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut samples = Vec::new();
    let mut first_error = None;
    for t in tasks {
        let (s, e) = t.await.context("a worker failed")?;
        samples.extend(s);
        if first_error.is_none() {
            first_error = e;
        }
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    report(
        &args,
        conn.json,
        &endpoint,
        &samples,
        &shared,
        elapsed,
        first_error,
    )
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99.9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": h.mean() / 1000.0,
    })
}

fn report(
    args: &BenchArgs,
    json_out: bool,
    endpoint: &str,
    samples: &[(u32, u32)],
    shared: &Shared,
    elapsed: Duration,
    first_error: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .context("creating the latency histogram")?;
    // Per second: completions and a histogram of latencies.
    let seconds = (elapsed.as_secs() + 1) as usize;
    let mut per_sec: Vec<Histogram<u64>> = Vec::with_capacity(seconds);
    for _ in 0..seconds {
        per_sec.push(h.clone());
    }
    for (at_ms, lat_us) in samples {
        let v = u64::from(*lat_us).max(1);
        h.saturating_record(v);
        if let Some(b) = per_sec.get_mut((*at_ms / 1000) as usize) {
            b.saturating_record(v);
        }
    }
    let ok = samples.len() as u64;
    let errors = shared.errors.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    let series: Vec<_> = per_sec
        .iter()
        .enumerate()
        .map(|(s, b)| {
            json!({"second": s, "requests": b.len(), "p50_ms": b.value_at_quantile(0.5) as f64 / 1000.0,
                   "p99_ms": b.value_at_quantile(0.99) as f64 / 1000.0})
        })
        .collect();
    let workload = clap::ValueEnum::to_possible_value(&args.workload).map_or_else(
        || format!("{:?}", args.workload),
        |v| v.get_name().to_owned(),
    );
    let result = json!({
        "workload": workload,
        "endpoint": endpoint,
        "concurrency": args.concurrency,
        "size": args.size,
        "requests": ok,
        "errors": errors,
        "first_error": first_error,
        "seconds": elapsed.as_secs_f64(),
        "throughput": rate,
        "latency_ms": percentiles(&h),
        "per_second": series,
    });
    if let Some(p) = &args.plot {
        std::fs::write(p, svg(&workload, args.concurrency, &per_sec))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let l = &result["latency_ms"];
        outln!(
            "{workload}: {ok} requests in {:.2} s at concurrency {} ({errors} errors)",
            elapsed.as_secs_f64(),
            args.concurrency
        );
        outln!("throughput  {rate:.0} requests/s");
        outln!(
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l["p50"].as_f64().unwrap_or(0.0),
            l["p90"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["p99.9"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0)
        );
        if let Some(e) = &first_error {
            outln!("first error: {e}");
        }
        if let Some(p) = &args.plot {
            outln!("plot: {}", p.display());
        }
    }
    Ok(if ok == 0 {
        ExitCode::from(6)
    } else {
        ExitCode::SUCCESS
    })
}

/// A two-panel SVG: requests per second, and p50/p99 latency per second.
fn svg(workload: &str, concurrency: usize, per_sec: &[Histogram<u64>]) -> String {
    let (w, ph, pad) = (800.0_f64, 220.0_f64, 50.0_f64);
    let n = per_sec.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let rates: Vec<f64> = per_sec.iter().map(|b| b.len() as f64).collect();
    let p50: Vec<f64> = per_sec
        .iter()
        .map(|b| b.value_at_quantile(0.5) as f64 / 1000.0)
        .collect();
    let p99: Vec<f64> = per_sec
        .iter()
        .map(|b| b.value_at_quantile(0.99) as f64 / 1000.0)
        .collect();
    let max_rate = rates.iter().copied().fold(1.0, f64::max);
    let max_lat = p99.iter().copied().fold(0.1, f64::max);
    let line = |vals: &[f64], max: f64, top: f64, colour: &str| {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), top + ph - ph * v / max))
            .collect();
        format!(
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        )
    };
    let axis = |top: f64, label: &str, max: f64| {
        format!(
            r##"<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{pad}" y1="{top}" x2="{pad}" y2="{b}" stroke="#888"/><text x="{pad}" y="{t}" font-size="12">{label} (max {max:.1})</text>"##,
            b = top + ph,
            r = w - pad,
            t = top - 6.0,
        )
    };
    let (top1, top2) = (40.0, 40.0 + ph + 60.0);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">vellum bench: {workload}, concurrency {concurrency}, per second over {secs} s</text>
{a1}{l1}
{a2}{l2}{l3}
<text x="{lx}" y="{ly}" font-size="12" fill="#1f77b4">p50</text><text x="{lx2}" y="{ly}" font-size="12" fill="#d62728">p99</text>
</svg>
"##,
        h = top2 + ph + 40.0,
        secs = per_sec.len(),
        a1 = axis(top1, "requests/s", max_rate),
        l1 = line(&rates, max_rate, top1, "#2ca02c"),
        a2 = axis(top2, "latency ms", max_lat),
        l2 = line(&p50, max_lat, top2, "#1f77b4"),
        l3 = line(&p99, max_lat, top2, "#d62728"),
        lx = w - pad - 80.0,
        lx2 = w - pad - 40.0,
        ly = top2 - 6.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_by_default() {
        for ok in [
            "https://127.0.0.1:8443",
            "https://localhost:1",
            "https://[::1]:8443/",
            "https://127.0.0.2",
        ] {
            assert!(loopback(ok), "{ok}");
        }
        for no in [
            "https://10.0.0.1:8443",
            "https://example.org",
            "https://[2001:db8::1]:1",
        ] {
            assert!(!loopback(no), "{no}");
        }
    }
}

//! `vellum`: the Vellum command line.
//!
//! `serve` runs a node (alone or in a cluster); the ledger commands (`append`, `get`, `list`,
//! `status`, `wait`, `receipt`, `users`, `node`, `consortium`, `constitution`, `quotes`,
//! `identity`) talk to a service through the client library; `bench` loads one; `audit` and
//! `sample-ledger` work offline on ledger files.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

/// mimalloc instead of glibc malloc: see `docs/benchmarks.md` (profiles of the write path).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vellum_core::entry::LedgerSecret;
use vellum_ledger::sample::{SampleOptions, write_sample};
use vellum_ledger::{AuditOptions, audit_dir};

/// `println!` that ends the process quietly (exit 0) when stdout is a closed pipe, as in
/// `vellum list | head -1`, instead of panicking as `println!` does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("vellum: writing to stdout: {e}");
            std::process::exit(2);
        }
    }};
}

mod bench;
mod ledger;
mod seal;
mod serve;

/// Vellum: a confidential, verifiable ledger compatible with Azure Confidential Ledger.
#[derive(Parser, Debug)]
#[command(
    name = "vellum",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Connection: --endpoint, --cert (or --token) and --ca, else VELLUM_ENDPOINT, \
VELLUM_CERT (VELLUM_TOKEN) and VELLUM_CA, else --profile NAME from $VELLUM_PROFILES \
(default ~/.config/vellum/profiles.toml).\n\
Exit codes: 0 ok, 1 verification failed, 2 usage or local error, 3 connection, \
4 authentication or authorization, 5 not found, 6 other service error, 7 timeout."
)]
struct Cli {
    #[command(flatten)]
    conn: ledger::Connection,
    /// How logs are written to standard error: `text` for people, `json` (one object a line:
    /// timestamp, level, target, message and fields) for a log pipeline. The level is set by
    /// VELLUM_LOG (e.g. `info`, `debug,openraft=warn`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "VELLUM_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a ledger node with the Azure Confidential Ledger HTTPS API.
    ///
    /// With no flags: a single node on https://127.0.0.1:8443 with data in ./vellum-data. The
    /// first start creates the service identity, the node certificate, the ledger secret, an
    /// operator member and a bootstrap Administrator (admin.pem); later starts reuse them.
    /// Stops cleanly on Ctrl-C or SIGTERM.
    ///
    /// Example: vellum serve --data-dir /var/lib/vellum --listen 127.0.0.1:8443
    Serve(Box<serve::ServeArgs>),
    #[command(flatten)]
    Ledger(ledger::LedgerCommand),
    /// Create a client certificate and key for a new certificate user; prints its user id
    /// (the fingerprint an Administrator registers with `vellum users set ID ROLE`).
    ///
    /// Example: vellum keygen --out alice.pem --name Alice
    Keygen {
        /// Where to write the certificate and key (one PEM, mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Common name of the certificate.
        #[arg(long, default_value = "Vellum User")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Load a ledger on this machine and report throughput and latency percentiles.
    ///
    /// Runs a fixed number of concurrent requests (one connection each) until --requests are
    /// done or --duration has passed; prints requests/s and p50/p90/p99/p99.9 latency, with
    /// --json a machine-readable result and per-second series, with --plot an SVG. See
    /// docs/benchmarks.md for the baselines measured beside it.
    ///
    /// Example: vellum bench --workload write -c 64 -n 50000 --plot write.svg
    Bench(bench::BenchArgs),
    /// Seal a stopped node's secrets (the ledger secret, the service and node keys) under a
    /// key file or passphrase, in place: the data directory alone then reveals none of them.
    /// Start the node with the same key (`vellum serve --seal-key-file` or
    /// `--seal-passphrase-file`). Running it again finishes an interrupted run.
    ///
    /// Example: vellum seal --data-dir /var/lib/vellum --key-file /etc/vellum/seal.key
    Seal(seal::SealArgs),
    /// Print shell completions.
    ///
    /// Example: vellum completions bash > /etc/bash_completion.d/vellum
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages: vellum.1 and one page a subcommand (vellum-serve.1, ...).
    ///
    /// Example: vellum man --out /usr/local/share/man/man1 && man vellum-serve
    Man {
        /// The directory to write them to (created if absent).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Verify a ledger directory offline: replay the Merkle tree and check every signature.
    ///
    /// Works on ledgers written by Vellum and by Microsoft CCF. Exits 0 when the ledger is
    /// intact, 1 when it is not (naming the first bad transaction and what is wrong), 2 on
    /// usage or I/O errors.
    ///
    /// Example: vellum audit vellum-data/ledger --ledger-secret vellum-data/ledger_secret
    Audit {
        /// The ledger directory (holding ledger_*.committed chunk files); not with --archive.
        #[arg(required_unless_present = "archive", conflicts_with = "archive")]
        dir: Option<PathBuf>,
        /// Audit the committed chunks of an archive instead (`vellum serve --archive`):
        /// az://CONTAINER/PREFIX, s3://BUCKET/PREFIX or file:///DIR. They are downloaded to a
        /// temporary directory first.
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        /// An option of the archive store, KEY=VALUE (as `vellum serve --archive-option`).
        #[arg(
            long = "archive-option",
            value_name = "KEY=VALUE",
            requires = "archive"
        )]
        archive_options: Vec<String>,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
        /// File with the ledger secret (64 hex characters): also check every GCM tag and
        /// commit evidence. A sealed one (`DATA/ledger_secret.sealed`) is unsealed with
        /// --seal-key-file, --seal-passphrase-file or VELLUM_SEAL_PASSPHRASE.
        #[arg(long, value_name = "FILE")]
        ledger_secret: Option<PathBuf>,
        /// The key file that seals the --ledger-secret file's data directory.
        #[arg(long, value_name = "FILE", conflicts_with = "seal_passphrase_file")]
        seal_key_file: Option<PathBuf>,
        /// The file whose first line is the passphrase that seals it.
        #[arg(long, value_name = "FILE")]
        seal_passphrase_file: Option<PathBuf>,
        /// The PKCS#11 URI of the token key that seals it.
        #[arg(long, value_name = "URI")]
        seal_pkcs11: Option<String>,
        /// A recovery member's decrypted share (`vellum gov share`), instead of the ledger
        /// secret: with a quorum of them, the secret is recovered from the last recovery shares
        /// the ledger records. Repeatable.
        #[arg(long, value_name = "FILE", conflicts_with = "ledger_secret")]
        recovery_share: Vec<PathBuf>,
        /// Also read chunks not yet marked .committed.
        #[arg(long)]
        include_uncommitted: bool,
        /// Never show a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Also print the governance history: members' states, proposals and their outcomes,
        /// constitutions, users set by governance.
        #[arg(long)]
        governance: bool,
    },
    /// Write a sample ledger with receipts (ledger/, receipts/, service_cert.pem, ledger_secret).
    ///
    /// Example: vellum sample-ledger /tmp/demo --entries 100
    SampleLedger {
        /// Output directory (created; must be empty or absent).
        out: PathBuf,
        /// Number of application entries.
        #[arg(long, default_value_t = 20)]
        entries: u64,
        /// A signature after at most this many transactions.
        #[arg(long, default_value_t = 4)]
        signature_interval: u64,
        /// Start a new ledger chunk (after a signature) once a chunk has this many bytes.
        #[arg(long, default_value_t = 8192)]
        chunk_size: u64,
        /// Write each entry's max conflict version and map read versions non-zero, as older CCF
        /// releases did (Vellum and current CCF write 0). Both `vellum audit` and CCF's
        /// verifier accept such ledgers.
        #[arg(long)]
        legacy_versions: bool,
        /// Rekey the ledger this many times among the entries (CCF's historical secrets
        /// records; `ledger_secret` holds the last secret).
        #[arg(long, default_value_t = 0)]
        rekeys: u64,
    },
}

/// How logs are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object a line.
    Json,
}

/// Exit codes.
const EXIT_INVALID: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs what it does; offline commands only warnings.
    let default = match cli.command {
        Command::Serve(_) => "info,openraft=error",
        _ => "warn",
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VELLUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colour codes only for a terminal: a log file or journal gets plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields at the top level, with the span a request ran in (its id, method, path).
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the service sent (a function's stack comes on lines of its own).
            let text = format!("{e:#}");
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("vellum: {}", line.join(" "));
            match e.downcast_ref::<vellum_client::Error>() {
                Some(ce) => ExitCode::from(ledger::exit_code(ce)),
                None => ExitCode::from(EXIT_ERROR),
            }
        }
    }
}

/// Writes `cmd`'s man page and one per subcommand, all levels (`vellum-node-status.1`), into
/// `dir`; returns the file names.
fn write_man_pages(cmd: &clap::Command, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    fn walk(
        cmd: clap::Command,
        name: String,
        dir: &std::path::Path,
        out: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let cmd = cmd.name(name.clone()).bin_name(name.replace('-', " "));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        let file = format!("{name}.1");
        std::fs::write(dir.join(&file), page)
            .with_context(|| format!("writing {}", dir.join(&file).display()))?;
        out.push(file);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            walk(sub.clone(), format!("{name}-{}", sub.get_name()), dir, out)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    let mut cmd = cmd.clone();
    cmd.build();
    walk(cmd, "vellum".into(), dir, &mut out)?;
    Ok(out)
}

/// Downloads the committed chunks of the archive at `url` into `dir`, with a progress bar on a
/// terminal unless `quiet`.
fn download_archive(
    url: &str,
    options: &[String],
    dir: &std::path::Path,
    quiet: bool,
) -> anyhow::Result<()> {
    let cfg = vellum_node::archive::ArchiveConfig::new(url, options)?;
    let archive = vellum_node::archive::Archive::open(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let chunks = archive.list("ledger").await?;
        if chunks.is_empty() {
            anyhow::bail!("the archive at {url} holds no committed chunk");
        }
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} downloading [{bar:30}] {bytes}/{total_bytes} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        };
        archive
            .download_ledger(&chunks, dir, |c| bar.inc(c.size))
            .await
            .with_context(|| format!("downloading the archive at {url}"))?;
        bar.finish_and_clear();
        Ok(())
    })
}

/// The ledger secret, recovered from recovery members' decrypted shares (base64 files) and the
/// last recovery shares record of the ledger in `dir` (the audit that follows checks the rest).
fn secret_from_shares(
    dir: &std::path::Path,
    shares: &[PathBuf],
    include_uncommitted: bool,
) -> anyhow::Result<LedgerSecret> {
    use base64::Engine as _;
    let info = vellum_ledger::audit::secret_records(dir, include_uncommitted)
        .with_context(|| format!("reading the ledger in {}", dir.display()))?
        .recovery_shares
        .context("the ledger records no recovery shares")?;
    let shares = shares
        .iter()
        .map(|p| {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            );
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map(zeroize::Zeroizing::new)
                .with_context(|| format!("{}: not a share (base64)", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(vellum_node::recovery::recover(&shares, &info)?)
}

/// The latest secret of a ledger secret file: plain hex (or a node's `ledger_secret`, which adds
/// a line per rekey), or `ledger_secret.sealed` of a sealed data directory, unsealed with the
/// key the options name.
fn read_secret(
    path: &PathBuf,
    (key_file, passphrase_file, pkcs11): (
        Option<&std::path::Path>,
        Option<&std::path::Path>,
        Option<&str>,
    ),
) -> anyhow::Result<LedgerSecret> {
    let text = if path.extension().is_some_and(|e| e == "sealed") {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let key = seal::seal_key(key_file, passphrase_file, pkcs11, dir)?;
        let sealer = vellum_node::seal::Sealer::open(dir, key.as_ref())?.ok_or_else(|| {
            anyhow::anyhow!("{} is not in a sealed data directory", path.display())
        })?;
        let bytes = sealer.read(dir, "ledger_secret")?;
        zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        )
    };
    // A rekeyed node's file lists every secret: the latest opens the ledger's rekey history.
    let secrets = vellum_core::entry::LedgerSecrets::from_text(&text).with_context(|| {
        format!(
            "{}: the ledger secret must be 64 hex characters (a node's file: a line `SEQNO HEX` per rekey after them)",
            path.display()
        )
    })?;
    Ok(secrets.latest().clone())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ledger(cmd) => ledger::run(&cli.conn, cmd),
        Command::Bench(args) => bench::run(&cli.conn, args),
        Command::Seal(args) => seal::seal(&args).map(|()| ExitCode::SUCCESS),
        Command::Keygen { out, name, days } => {
            if out.exists() {
                anyhow::bail!("{} exists; not overwriting a key", out.display());
            }
            let id = vellum_ledger::identity::Identity::client(&name, SystemTime::now(), days)?;
            vellum_ledger::files::write_durably(&out, id.combined_pem().as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            let user_id = id.cert.acl_fingerprint();
            if cli.conn.json {
                outln!("{}", serde_json::json!({"userId": user_id, "file": out}));
            } else {
                outln!("{user_id}");
                eprintln!(
                    "wrote the certificate and key to {}; register it with: vellum users set {user_id} Reader",
                    out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "vellum", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            let written = write_man_pages(&Cli::command(), &out)?;
            if cli.conn.json {
                outln!("{}", serde_json::json!({"pages": written}));
            } else {
                eprintln!("wrote {} man pages to {}", written.len(), out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            serve::serve(*args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            dir,
            archive,
            archive_options,
            json,
            ledger_secret,
            seal_key_file,
            seal_passphrase_file,
            seal_pkcs11,
            recovery_share,
            include_uncommitted,
            no_progress,
            governance,
        } => {
            let seal = (
                seal_key_file.as_deref(),
                seal_passphrase_file.as_deref(),
                seal_pkcs11.as_deref(),
            );
            // An archive is downloaded first (kept until the audit ends).
            let (_downloaded, dir) = match (dir, archive) {
                (Some(d), _) => (None, d),
                (None, Some(url)) => {
                    let tmp = tempfile::tempdir().context("making a temporary directory")?;
                    let dir = tmp.path().join("ledger");
                    download_archive(&url, &archive_options, &dir, json || no_progress)?;
                    (Some(tmp), dir)
                }
                (None, None) => anyhow::bail!("a ledger directory or --archive is needed"),
            };
            if !dir.is_dir() {
                anyhow::bail!("{} is not a directory", dir.display());
            }
            let secret = match (&ledger_secret, recovery_share.is_empty()) {
                (Some(p), _) => Some(read_secret(p, seal)?),
                (None, false) => Some(secret_from_shares(
                    &dir,
                    &recovery_share,
                    include_uncommitted,
                )?),
                (None, true) => None,
            };
            let opts = AuditOptions {
                ledger_secret: secret,
                include_uncommitted,
            };
            let bar = if json || no_progress || !std::io::stderr().is_terminal() {
                ProgressBar::hidden()
            } else {
                let b = ProgressBar::new(0);
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} auditing [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.enable_steady_tick(Duration::from_millis(120));
                b
            };
            let result = audit_dir(&dir, &opts, |p| {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                bar.set_message(format!("{} transactions", p.transactions));
            });
            bar.finish_and_clear();
            match result {
                Ok(report) => {
                    if json {
                        let mut v = serde_json::to_value(&report)?;
                        v["ok"] = serde_json::Value::Bool(true);
                        outln!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        outln!(
                            "ok: {} transactions in {} files ({} bytes), {} signatures verified ({} with COSE){}",
                            report.transactions,
                            report.files,
                            report.bytes,
                            report.signatures,
                            report.cose_signatures,
                            if report.secret_checked {
                                format!(
                                    ", GCM tags and commit evidence checked, {} application claims checked",
                                    report.claims_checked
                                )
                            } else {
                                String::new()
                            },
                        );
                        if let (Some(s), Some(root)) =
                            (report.last_signature, report.last_signed_root)
                        {
                            outln!("last signature: {s}, root {root}");
                        }
                        if report.unsigned_tail > 0 {
                            outln!(
                                "warning: {} transactions after the last signature are not covered by any signature",
                                report.unsigned_tail
                            );
                        }
                        for change in &report.code_changes {
                            outln!("code: {change}");
                        }
                        if governance {
                            for event in &report.governance {
                                outln!("gov: {event}");
                            }
                        }
                        for note in &report.notes {
                            outln!("note: {note}");
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => {
                    if json {
                        let mut v = serde_json::to_value(&failure)?;
                        v["ok"] = serde_json::Value::Bool(false);
                        v["message"] = serde_json::Value::String(failure.to_string());
                        v["unsupported"] = serde_json::Value::Bool(failure.error.is_unsupported());
                        outln!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        eprintln!("vellum: audit failed: {failure}");
                    }
                    let io = matches!(
                        failure.error,
                        vellum_ledger::audit::AuditError::Io { .. }
                            | vellum_ledger::audit::AuditError::Empty
                    );
                    Ok(ExitCode::from(if io { EXIT_ERROR } else { EXIT_INVALID }))
                }
            }
        }
        Command::SampleLedger {
            out,
            entries,
            signature_interval,
            chunk_size,
            legacy_versions,
            rekeys,
        } => {
            if out.exists()
                && std::fs::read_dir(&out)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                anyhow::bail!("{} exists and is not empty", out.display());
            }
            if signature_interval == 0 || chunk_size == 0 {
                anyhow::bail!("--signature-interval and --chunk-size must be at least 1");
            }
            let s = write_sample(
                &out,
                &SampleOptions {
                    entries,
                    signature_interval,
                    chunk_size,
                    now: SystemTime::now(),
                    legacy_versions,
                    rekeys,
                },
            )?;
            outln!(
                "wrote {} transactions ({} signatures) to {}, {} receipts to {}",
                s.transactions,
                s.signatures,
                s.ledger_dir.display(),
                s.receipts.len(),
                out.join("receipts").display()
            );
            outln!(
                "service certificate: {}",
                out.join("service_cert.pem").display()
            );
            outln!("verify with: vellum audit {}", s.ledger_dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

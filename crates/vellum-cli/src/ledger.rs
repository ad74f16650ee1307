//! The commands that talk to a ledger, all through `vellum-client` (no HTTP code here).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::json;
use vellum_client::models::{
    Bundle, FunctionOutcome, FunctionRun, Hook, JsRuntimeOptions, TransactionReceipt,
    UserDefinedRole,
};
use vellum_client::{
    AppendToLedgerOptions, ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient,
    ErrorKind, GetLedgerEntriesOptions, GetLedgerEntryOptions, LedgerCertificate, LedgerCredential,
    PollOptions, TokenCredential, WaitUntilDurableOptions,
};

/// Exit codes of the ledger commands (documented in `vellum --help`).
pub mod exit {
    /// A receipt or ledger failed verification.
    pub const VERIFY: u8 = 1;
    /// Usage, configuration or local file errors.
    pub const USAGE: u8 = 2;
    /// The ledger could not be reached (connection, TLS).
    pub const CONNECTION: u8 = 3;
    /// Authentication (401) or authorization (403) failed.
    pub const AUTH: u8 = 4;
    /// The transaction, entry or user does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// Any other error answered by the service.
    pub const SERVICE: u8 = 6;
    /// A wait ran out of time.
    pub const TIMEOUT: u8 = 7;
}

/// Maps a client error to the CLI's exit code.
pub fn exit_code(e: &vellum_client::Error) -> u8 {
    match e.kind() {
        ErrorKind::NotFound => exit::NOT_FOUND,
        ErrorKind::Authentication | ErrorKind::Authorization => exit::AUTH,
        ErrorKind::Connection => exit::CONNECTION,
        ErrorKind::Verification => exit::VERIFY,
        ErrorKind::Timeout => exit::TIMEOUT,
        ErrorKind::Credential | ErrorKind::InvalidArgument => exit::USAGE,
        _ => exit::SERVICE,
    }
}

/// Where the ledger is and who we are: flags, then environment variables, then a profile.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Connection {
    /// Ledger endpoint, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "VELLUM_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// Client certificate and key (one PEM), e.g. vellum-data/admin.pem.
    #[arg(long, env = "VELLUM_CERT", global = true, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Bearer token (instead of a client certificate).
    #[arg(long, env = "VELLUM_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The ledger's certificate (trust anchor), e.g. vellum-data/service_cert.pem.
    #[arg(long, env = "VELLUM_CA", global = true, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// A profile from the profile file ($VELLUM_PROFILES, default
    /// ~/.config/vellum/profiles.toml) supplying whatever flags and variables do not.
    #[arg(long, env = "VELLUM_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Profile {
    endpoint: Option<String>,
    cert: Option<PathBuf>,
    token: Option<String>,
    ca: Option<PathBuf>,
}

#[derive(Debug)]
struct StaticToken(String);

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            self.0.clone(),
            time::OffsetDateTime::now_utc() + time::Duration::minutes(30),
        ))
    }
}

impl Connection {
    fn resolved(&self) -> anyhow::Result<Connection> {
        let Some(name) = &self.profile else {
            return Ok(self.clone());
        };
        let path = std::env::var_os("VELLUM_PROFILES")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".config/vellum/profiles.toml"))
            })
            .context("no profile file: set VELLUM_PROFILES or HOME")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the profile file {}", path.display()))?;
        let mut all: std::collections::BTreeMap<String, Profile> =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let p = all
            .remove(name)
            .with_context(|| format!("no profile [{name}] in {}", path.display()))?;
        Ok(Connection {
            endpoint: self.endpoint.clone().or(p.endpoint),
            cert: self.cert.clone().or(p.cert),
            token: self.token.clone().or(p.token),
            ca: self.ca.clone().or(p.ca),
            ..self.clone()
        })
    }

    /// The resolved endpoint.
    pub fn endpoint(&self) -> anyhow::Result<String> {
        self.resolved()?
            .endpoint
            .context("no ledger endpoint: pass --endpoint or set VELLUM_ENDPOINT")
    }

    /// The resolved endpoint and ledger certificate (its path), both required.
    fn endpoint_and_ca(&self) -> anyhow::Result<(String, PathBuf)> {
        let c = self.resolved()?;
        let endpoint = c
            .endpoint
            .context("no ledger endpoint: pass --endpoint or set VELLUM_ENDPOINT")?;
        let ca = c.ca.context(
            "no ledger certificate: pass --ca or set VELLUM_CA (e.g. vellum-data/service_cert.pem)",
        )?;
        Ok((endpoint, ca))
    }

    /// A client from the resolved settings (`anonymous`: without a credential if none is
    /// given, for what the service serves to anyone).
    pub fn client(&self, anonymous: bool) -> anyhow::Result<ConfidentialLedgerClient> {
        let (endpoint, ca) = self.endpoint_and_ca()?;
        let c = self.resolved()?;
        let credential: LedgerCredential = match (c.cert, c.token) {
            (Some(cert), _) => ConfidentialLedgerCertificateCredential::new(cert)?.into(),
            (None, Some(token)) => {
                let t: Arc<dyn TokenCredential> = Arc::new(StaticToken(token));
                t.into()
            }
            (None, None) if anonymous => LedgerCredential::Anonymous,
            (None, None) => anyhow::bail!(
                "no credential: pass --cert (client certificate and key PEM) or --token"
            ),
        };
        Ok(ConfidentialLedgerClient::new(
            &endpoint,
            credential,
            LedgerCertificate::Path(ca),
            None,
        )?)
    }
}

/// The ledger subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LedgerCommand {
    /// Append an entry (from an argument, a file, or standard input).
    ///
    /// With --file, every line of the file is appended as its own entry (a progress bar
    /// shows on a terminal).
    ///
    /// Example: vellum append "hello" --sub-ledger audit-log --tags login,admin --wait
    Append {
        /// The entry contents; read from standard input when absent (and no --file).
        contents: Option<String>,
        /// Append each line of this file as an entry ("-" for standard input).
        #[arg(long, value_name = "FILE", conflicts_with = "contents")]
        file: Option<PathBuf>,
        /// The sub-ledger (collection); the service default when absent.
        #[arg(long)]
        sub_ledger: Option<String>,
        /// Tags of the entry, comma-separated (at most 5, each at most 64 characters).
        #[arg(long, value_delimiter = ',', value_name = "TAG,...")]
        tags: Vec<String>,
        /// Run this user-defined function in the write's transaction, before the entry
        /// (FUNCTION or FUNCTION:EXPORT; repeat for several). One that throws refuses the write.
        #[arg(long, value_name = "FUNCTION[:EXPORT]")]
        pre_hook: Vec<String>,
        /// Run this user-defined function in the write's transaction, after the entry.
        #[arg(long, value_name = "FUNCTION[:EXPORT]")]
        post_hook: Vec<String>,
        /// Wait until committed.
        #[arg(long)]
        wait: bool,
    },
    /// Get an entry: at a transaction id, or the latest of a sub-ledger.
    ///
    /// Example: vellum get 2.15 ; vellum get --sub-ledger audit-log
    Get {
        /// Transaction id; the latest entry when absent.
        transaction_id: Option<String>,
        /// The sub-ledger.
        #[arg(long)]
        sub_ledger: Option<String>,
    },
    /// List the entries of a sub-ledger over a range of transaction ids, page by page.
    ///
    /// Example: vellum list --from 2.1 --to 2.500 --sub-ledger audit-log --tag login
    List {
        /// First transaction id (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Last transaction id (inclusive).
        #[arg(long)]
        to: Option<String>,
        /// The sub-ledger.
        #[arg(long)]
        sub_ledger: Option<String>,
        /// Only entries carrying this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// The distinct tags of a sub-ledger's entries.
    ///
    /// Example: vellum tags --sub-ledger audit-log
    Tags {
        /// The sub-ledger; the service default when absent.
        #[arg(long)]
        sub_ledger: Option<String>,
    },
    /// The status of a transaction (Pending or Committed).
    ///
    /// Example: vellum status 2.15
    Status {
        /// Transaction id.
        transaction_id: String,
    },
    /// Wait until a transaction is committed (exit 7 on timeout).
    ///
    /// Example: vellum wait 2.15 --timeout 30
    Wait {
        /// Transaction id.
        transaction_id: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Fetch a receipt, optionally save and verify it; or verify a saved receipt offline.
    ///
    /// Examples: vellum receipt 2.15 --verify --save r.json ;
    /// vellum receipt --file r.json --ca service_cert.pem (offline, exit 1 if it fails)
    Receipt {
        /// Transaction id (not with --file).
        transaction_id: Option<String>,
        /// Verify against the ledger certificate (--ca).
        #[arg(long)]
        verify: bool,
        /// Write the receipt response (JSON) to this file.
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
        /// Verify a saved receipt offline (no connection; needs --ca).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["transaction_id", "save"])]
        file: Option<PathBuf>,
    },
    /// Manage users and their roles (Administrator).
    ///
    /// Example: vellum users set 5F:23:...:B5 Reader auditor
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage user-defined functions: JavaScript modules stored in the ledger (storing and
    /// deleting: Administrator).
    ///
    /// Example: vellum functions put greet greet.js ; vellum functions list
    #[command(subcommand)]
    Functions(FunctionsCommand),
    /// Manage user-defined endpoints: a CCF JavaScript app bundle served under /app/
    /// (deploying and changing options: Administrator).
    ///
    /// Example: vellum endpoints deploy ./my-app ; vellum endpoints get --module src/app.js
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Govern the service as a consortium member, in CCF's protocol: requests are signed
    /// with the member's key (--member-cert and --member-key, or VELLUM_MEMBER_CERT and
    /// VELLUM_MEMBER_KEY); reads need no credential.
    ///
    /// Example: vellum gov ack ; vellum gov propose add-member.json ; vellum gov vote ID
    #[command(subcommand)]
    Gov(GovCommand),
    /// Manage custom roles (Administrator): a name and the actions it allows.
    ///
    /// Example: vellum roles set auditor Microsoft.ConfidentialLedger/ledger/receipts/read
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Manage the nodes of a cluster (Administrators and consortium members).
    ///
    /// Example: vellum node token ; vellum node list ; vellum node remove NODE_ID
    #[command(subcommand)]
    Node(NodeCommand),
    /// The consortium members.
    ///
    /// Example: vellum consortium --json
    Consortium,
    /// The constitution (its digest is checked).
    ///
    /// Example: vellum constitution
    Constitution,
    /// The enclave quotes of every node (Vellum reports CCF's virtual attestation: no TEE).
    ///
    /// Example: vellum quotes --json
    Quotes,
    /// Fetch the ledger's certificate from an identity endpoint, save it and print its
    /// fingerprint. Trust it only after checking the fingerprint out of band.
    ///
    /// Example: vellum identity --endpoint https://127.0.0.1:8443 --ledger-id vellum --out ledger.pem
    Identity {
        /// The ledger id.
        #[arg(long, default_value = "vellum")]
        ledger_id: String,
        /// Where to save the certificate.
        #[arg(long, value_name = "FILE", default_value = "ledger_certificate.pem")]
        out: PathBuf,
    },
}

/// Cluster management.
#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// Create a one-time join token (valid 24 hours) for a new node.
    ///
    /// Example: vellum node token ; then on the new machine:
    /// vellum serve --join https://10.0.0.1:8443 --join-token TOKEN --listen 10.0.0.2:8443
    Token,
    /// List the nodes with their status and Raft role.
    ///
    /// Example: vellum node list --json
    List,
    /// The health of the node --endpoint reaches, at a glance: role and primary, term,
    /// commit point and lag, last signature's age, replication lag of each backup (on the
    /// primary), ledger size and free disk. Exits 0 if the node is ready and writable, 6 if
    /// not.
    ///
    /// Example: vellum node status --endpoint https://10.0.0.2:8443 --json
    Status,
    /// Remove a node: it is recorded Retired and leaves the Raft membership.
    ///
    /// Example: vellum node remove 3f1c...e9
    Remove {
        /// The node id (from `vellum node list`).
        node_id: String,
    },
}

/// User management.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a user or set its roles (they replace the ones it had).
    ///
    /// Example: vellum users set 5F:23:...:B5 Reader auditor
    Set {
        /// User id: certificate fingerprint or token object id.
        user_id: String,
        /// Its roles: Administrator, Contributor, Reader (any case) or custom roles.
        #[arg(required = true, num_args = 1..)]
        roles: Vec<String>,
    },
    /// Show a user.
    ///
    /// Example: vellum users get 5F:23:...:B5
    Get {
        /// User id.
        user_id: String,
    },
    /// List users.
    ///
    /// Example: vellum users list --json
    List,
    /// Remove a user.
    ///
    /// Example: vellum users remove 5F:23:...:B5
    Remove {
        /// User id.
        user_id: String,
    },
}

/// User-defined functions.
#[derive(clap::Subcommand, Debug)]
pub enum FunctionsCommand {
    /// Store a function (one ES module), creating or replacing it; code that does not compile
    /// is refused.
    ///
    /// Example: vellum functions put greet greet.js
    Put {
        /// Function id (no ':').
        id: String,
        /// The module's file; standard input when absent.
        file: Option<PathBuf>,
    },
    /// Print a function's code.
    ///
    /// Example: vellum functions get greet
    Get {
        /// Function id.
        id: String,
    },
    /// List the functions' ids.
    ///
    /// Example: vellum functions list --json
    List,
    /// Delete a function.
    ///
    /// Example: vellum functions delete greet
    Delete {
        /// Function id.
        id: String,
    },
    /// Run a function on the service and print what it returned. A function that throws
    /// prints its message and exits 1; whatever it wrote is discarded.
    ///
    /// Example: vellum functions run greet ada --export hello --timeout-ms 500
    Run {
        /// Function id.
        id: String,
        /// Its arguments, passed as strings.
        args: Vec<String>,
        /// The export to call.
        #[arg(long, default_value = "main")]
        export: String,
        /// Time limit in milliseconds (the service's default, 1,000, when absent; at most
        /// 5,000).
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
    },
}

/// Governance (CCF's `/gov` API).
#[derive(clap::Subcommand, Debug)]
pub enum GovCommand {
    /// Acknowledge the service's state: an Accepted member becomes Active (and may propose
    /// and vote).
    ///
    /// Example: vellum gov ack --member-cert member0_cert.pem --member-key member0_key.pem
    Ack {
        #[command(flatten)]
        member: MemberArgs,
    },
    /// Submit a proposal: a JSON file `{"actions": [{"name": ..., "args": {...}}]}`, or one
    /// action with --action NAME and --args JSON. Prints the proposal's id and state.
    ///
    /// Example: vellum gov propose --action set_member --args '{"cert": "-----BEGIN..."}'
    Propose {
        /// The proposal file ("-" for standard input).
        #[arg(value_name = "FILE", required_unless_present = "action")]
        file: Option<PathBuf>,
        /// One action's name, instead of a file.
        #[arg(long, conflicts_with = "file")]
        action: Option<String>,
        /// That action's arguments (JSON).
        #[arg(long, requires = "action", default_value = "{}")]
        args: String,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// Vote on a proposal (for it, or --against). Prints its state after the ballot.
    ///
    /// Example: vellum gov vote 3f2a... --against
    Vote {
        /// The proposal's id.
        id: String,
        /// Vote against.
        #[arg(long)]
        against: bool,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// Withdraw a proposal you made.
    ///
    /// Example: vellum gov withdraw 3f2a...
    Withdraw {
        /// The proposal's id.
        id: String,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// List the proposals the service keeps, with their states.
    ///
    /// Example: vellum gov list --json
    List,
    /// Show a proposal: its state, ballots and actions.
    ///
    /// Example: vellum gov show 3f2a...
    Show {
        /// The proposal's id.
        id: String,
    },
    /// Fetch this member's recovery share and decrypt it with the member's encryption key
    /// (RSA, PKCS#8 PEM); prints it (base64), or writes it to --out (mode 0600). A quorum of
    /// shares recovers the ledger secret from the ledger files alone
    /// (`vellum audit DIR --recovery-share FILE ...`).
    ///
    /// Example: vellum gov share --encryption-key member1_enc_key.pem --out member1.share
    Share {
        /// The member's private encryption key (PKCS#8 PEM).
        #[arg(long, value_name = "PEM")]
        encryption_key: PathBuf,
        /// Write the share here instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// Disaster recovery: fetch this member's recovery share from a service being recovered
    /// (`vellum serve --recover`), decrypt it with the member's encryption key and submit it,
    /// signed. Prints how many shares the service has (it recovers at the threshold).
    ///
    /// Example: vellum --endpoint https://new-node:8443 --ca new-data/service_cert.pem gov recover-share --encryption-key member1_enc_key.pem
    RecoverShare {
        /// The member's private encryption key (PKCS#8 PEM).
        #[arg(long, value_name = "PEM")]
        encryption_key: PathBuf,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// List the service's nodes and their states (`Pending`: waiting for a
    /// `transition_node_to_trusted` vote).
    ///
    /// Example: vellum gov nodes
    Nodes,
    /// List the consortium's members and their states.
    ///
    /// Example: vellum gov members
    Members,
}

/// A member's signing identity.
#[derive(clap::Args, Debug)]
pub struct MemberArgs {
    /// The member's certificate (PEM).
    #[arg(long, env = "VELLUM_MEMBER_CERT", value_name = "PEM")]
    member_cert: Option<PathBuf>,
    /// The member's private key (PKCS#8 PEM).
    #[arg(long, env = "VELLUM_MEMBER_KEY", value_name = "PEM")]
    member_key: Option<PathBuf>,
}

impl MemberArgs {
    fn load(&self) -> anyhow::Result<vellum_client::governance::Member> {
        let cert = self
            .member_cert
            .as_ref()
            .context("no member certificate: pass --member-cert or set VELLUM_MEMBER_CERT")?;
        let key = self
            .member_key
            .as_ref()
            .context("no member key: pass --member-key or set VELLUM_MEMBER_KEY")?;
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(vellum_client::governance::Member::from_pem(
            &read(cert)?,
            &read(key)?,
        )?)
    }
}

/// The member and its recovery share, fetched from the service and decrypted with the
/// member's encryption key (PKCS#8 PEM file).
async fn own_share(
    gov: &vellum_client::governance::GovernanceClient,
    member: &MemberArgs,
    encryption_key: &std::path::Path,
) -> anyhow::Result<(
    vellum_client::governance::Member,
    zeroize::Zeroizing<Vec<u8>>,
)> {
    let m = member.load()?;
    let key = zeroize::Zeroizing::new(
        std::fs::read_to_string(encryption_key)
            .with_context(|| format!("reading {}", encryption_key.display()))?,
    );
    let encrypted = gov.encrypted_share(&m.id()).await?;
    let share = vellum_node::recovery::decrypt_share(&key, &encrypted)?;
    Ok((m, share))
}

/// Runs a governance command: it needs the endpoint and the service certificate only.
async fn run_gov(conn: &Connection, cmd: &GovCommand) -> anyhow::Result<ExitCode> {
    let json = conn.json;
    let (endpoint, ca) = conn.endpoint_and_ca()?;
    let ca = std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
    let gov = vellum_client::governance::GovernanceClient::new(&endpoint, &ca)?;
    let state_line = |v: &serde_json::Value| {
        format!(
            "{}\t{}\t{} ballot(s)",
            v["proposalId"].as_str().unwrap_or_default(),
            v["proposalState"].as_str().unwrap_or_default(),
            v["ballotCount"]
        )
    };
    match cmd {
        GovCommand::Ack { member } => {
            let m = member.load()?;
            gov.ack(&m).await?;
            print(
                json,
                json!({"memberId": m.id(), "status": "Active"}),
                || format!("member {} acknowledged the state: Active", m.id()),
            );
        }
        GovCommand::Propose {
            file,
            action,
            args,
            member,
        } => {
            let m = member.load()?;
            let proposal: serde_json::Value = match (file, action) {
                (_, Some(name)) => {
                    let args: serde_json::Value = serde_json::from_str(args)
                        .with_context(|| format!("--args is not JSON: {args}"))?;
                    json!({"actions": [{"name": name, "args": args}]})
                }
                (Some(path), None) => {
                    let text = if path.as_os_str() == "-" {
                        let mut s = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                        s
                    } else {
                        std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?
                    };
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?
                }
                (None, None) => anyhow::bail!("give a proposal file or --action"),
            };
            let v = gov.propose(&m, &proposal).await?;
            print(json, v.clone(), || state_line(&v));
        }
        GovCommand::Vote {
            id,
            against,
            member,
        } => {
            let m = member.load()?;
            let v = gov.vote(&m, id, !against).await?;
            print(json, v.clone(), || state_line(&v));
        }
        GovCommand::Withdraw { id, member } => {
            let m = member.load()?;
            let v = gov.withdraw(&m, id).await?;
            print(json, v.clone(), || state_line(&v));
        }
        GovCommand::List => {
            let all = gov.proposals().await?;
            print(json, json!(all), || {
                all.iter().map(state_line).collect::<Vec<_>>().join("\n")
            });
        }
        GovCommand::Show { id } => {
            let mut v = gov.proposal(id).await?;
            v["actions"] = gov.proposal_actions(id).await?["actions"].clone();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        GovCommand::Share {
            encryption_key,
            out,
            member,
        } => {
            let (m, share) = own_share(&gov, member, encryption_key).await?;
            use base64::Engine as _;
            let text = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(share.as_slice()),
            );
            match out {
                Some(path) => {
                    vellum_ledger::files::write_durably(path, text.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    print(json, json!({"memberId": m.id(), "out": path}), || {
                        format!(
                            "member {}'s recovery share written to {}",
                            m.id(),
                            path.display()
                        )
                    });
                }
                None => println!("{}", text.as_str()),
            }
        }
        GovCommand::RecoverShare {
            encryption_key,
            member,
        } => {
            let (m, share) = own_share(&gov, member, encryption_key).await?;
            let v = gov.submit_recovery_share(&m, &share).await?;
            print(json, v.clone(), || {
                v["message"].as_str().unwrap_or_default().to_owned()
            });
        }
        GovCommand::Nodes => {
            let all = gov.nodes().await?;
            print(json, json!(all), || {
                all.iter()
                    .map(|n| {
                        format!(
                            "{}\t{}",
                            n["nodeId"].as_str().unwrap_or_default(),
                            n["status"].as_str().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        GovCommand::Members => {
            let all = gov.members().await?;
            print(json, json!(all), || {
                all.iter()
                    .map(|m| {
                        format!(
                            "{}\t{}",
                            m["memberId"].as_str().unwrap_or_default(),
                            m["status"].as_str().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// User-defined endpoints.
#[derive(clap::Subcommand, Debug)]
pub enum EndpointsCommand {
    /// Deploy an app, replacing the one deployed: a CCF app directory (`app.json` and its
    /// `.js` modules) or a bundle file (JSON: `{"metadata", "modules"}`).
    ///
    /// Example: vellum endpoints deploy ./basic-app-js
    Deploy {
        /// The app directory or bundle file.
        path: PathBuf,
    },
    /// Print the deployed bundle (JSON), or one of its modules.
    ///
    /// Example: vellum endpoints get --module src/app.js
    Get {
        /// Print only this module's source.
        #[arg(long, value_name = "NAME")]
        module: Option<String>,
    },
    /// Remove every endpoint (deploys the empty bundle).
    ///
    /// Example: vellum endpoints remove
    Remove,
    /// Print the endpoints' runtime options, or change some of them.
    ///
    /// Example: vellum endpoints options --set max_execution_time_ms=2000
    Options {
        /// An option to change, NAME=VALUE (repeat for several).
        #[arg(long, value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
}

/// A hook from `FUNCTION` or `FUNCTION:EXPORT` (function ids cannot hold ':').
fn hook(spec: &str) -> Hook {
    match spec.split_once(':') {
        Some((id, export)) => Hook::with(id, FunctionRun::default().export(export)),
        None => Hook::new(spec),
    }
}

/// Custom roles.
#[derive(clap::Subcommand, Debug)]
pub enum RolesCommand {
    /// Create a role, or replace its actions.
    ///
    /// Example: vellum roles set auditor Microsoft.ConfidentialLedger/ledger/receipts/read
    Set {
        /// Role name (case-sensitive; not a built-in role's).
        name: String,
        /// The actions it allows (ACL's `Microsoft.ConfidentialLedger/ledger/...` strings, or
        /// an application's own).
        actions: Vec<String>,
    },
    /// Add actions to a role.
    ///
    /// Example: vellum roles add auditor Microsoft.ConfidentialLedger/ledger/read
    Add {
        /// Role name.
        name: String,
        /// Actions to add.
        #[arg(required = true, num_args = 1..)]
        actions: Vec<String>,
    },
    /// Show a role's actions.
    ///
    /// Example: vellum roles get auditor --json
    Get {
        /// Role name.
        name: String,
    },
    /// Delete a role (users holding it keep its name, which then allows nothing).
    ///
    /// Example: vellum roles remove auditor
    Remove {
        /// Role name.
        name: String,
    },
}

fn print(json: bool, v: serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        outln!("{}", text());
    }
}

fn entry_json(e: &vellum_client::models::LedgerEntry) -> serde_json::Value {
    json!({"transactionId": e.transaction_id, "subLedgerId": e.sub_ledger_id, "contents": e.contents})
}

fn fingerprint(pem: &str) -> anyhow::Result<String> {
    Ok(vellum_core::crypto::Certificate::from_pem(pem)
        .context("not a certificate")?
        .acl_fingerprint())
}

fn verify_saved(path: &Path, ca: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let ca = ca.context("offline verification needs the ledger certificate: --ca or VELLUM_CA")?;
    let cert = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    // A saved response (with "receipt") or the bare receipt object.
    let (inner, claims) = match v.get("receipt") {
        Some(r) => (r.clone(), v.get("applicationClaims").cloned()),
        None => (v.clone(), None),
    };
    let claims: Option<Vec<vellum_core::receipt::ApplicationClaim>> = match claims {
        Some(c) if !c.is_null() => Some(serde_json::from_value(c).context("applicationClaims")?),
        _ => None,
    };
    let receipt = vellum_core::receipt::Receipt::from_json(&inner);
    let result = receipt
        .map_err(anyhow::Error::from)
        .and_then(|r| Ok(r.verify(&cert, claims.as_deref())?));
    match result {
        Ok(()) => {
            print(json, json!({"verified": true, "file": path}), || {
                format!(
                    "receipt {} verified against {}",
                    path.display(),
                    ca.display()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                print(
                    true,
                    json!({"verified": false, "error": e.to_string()}),
                    String::new,
                );
            } else {
                eprintln!("vellum: receipt {} does not verify: {e}", path.display());
            }
            Ok(ExitCode::from(exit::VERIFY))
        }
    }
}

fn read_contents(contents: Option<String>) -> anyhow::Result<String> {
    match contents {
        Some(c) => Ok(c),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the entry from standard input")?;
            Ok(s.strip_suffix('\n').unwrap_or(&s).to_owned())
        }
    }
}

/// Runs a ledger command.
pub fn run(conn: &Connection, cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(conn, cmd))
}

async fn run_async(conn: &Connection, cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    let json = conn.json;
    // Commands that need no authenticated client.
    match &cmd {
        LedgerCommand::Gov(g) => return run_gov(conn, g).await,
        LedgerCommand::Receipt {
            file: Some(file), ..
        } => {
            let c = conn.resolved()?;
            return verify_saved(file, c.ca.as_deref(), json);
        }
        LedgerCommand::Identity { ledger_id, out } => {
            let c = conn.resolved()?;
            let endpoint = c
                .endpoint
                .context("no endpoint: pass --endpoint or set VELLUM_ENDPOINT")?;
            let trust = match &c.ca {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ),
                None => None,
            };
            let id = vellum_client::ConfidentialLedgerIdentityServiceClient::new(
                &endpoint,
                Some(vellum_client::IdentityServiceClientOptions {
                    trust_anchor_pem: trust,
                    ..Default::default()
                }),
            )?
            .get_ledger_identity(ledger_id, None)
            .await?;
            std::fs::write(out, &id.ledger_tls_certificate)
                .with_context(|| format!("writing {}", out.display()))?;
            let fp = fingerprint(&id.ledger_tls_certificate)?;
            print(
                json,
                json!({"ledgerId": id.ledger_id, "file": out, "fingerprint": fp}),
                || {
                    format!(
                        "saved the certificate of ledger {} to {}\nfingerprint (SHA-256): {fp}",
                        id.ledger_id,
                        out.display()
                    )
                },
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // A node's health is served to anyone.
    let client = conn.client(matches!(cmd, LedgerCommand::Node(NodeCommand::Status)))?;
    match cmd {
        LedgerCommand::Append {
            contents,
            file,
            sub_ledger,
            tags,
            pre_hook,
            post_hook,
            wait,
        } => {
            let opts = AppendToLedgerOptions {
                sub_ledger_id: sub_ledger,
                tags,
                pre_hooks: pre_hook.iter().map(|h| hook(h)).collect(),
                post_hooks: post_hook.iter().map(|h| hook(h)).collect(),
                ..Default::default()
            };
            let Some(file) = file else {
                let contents = read_contents(contents)?;
                let r = client
                    .append_to_ledger(
                        &contents,
                        Some(AppendToLedgerOptions {
                            wait_for_commit: wait,
                            ..opts
                        }),
                    )
                    .await?;
                print(
                    json,
                    json!({"transactionId": r.transaction_id, "subLedgerId": r.sub_ledger_id, "committed": wait}),
                    || r.transaction_id.clone(),
                );
                return Ok(ExitCode::SUCCESS);
            };
            let text = if file.as_os_str() == "-" {
                read_contents(None)?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
            let bar = if json || !std::io::stderr().is_terminal() {
                ProgressBar::hidden()
            } else {
                let b = ProgressBar::new(lines.len() as u64);
                b.set_style(
                    ProgressStyle::with_template(
                        "appending [{bar:30}] {pos}/{len} ({per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            };
            let mut last = None;
            let mut ids = Vec::with_capacity(lines.len());
            // One at a time, so that the ledger keeps the file's line order.
            for l in &lines {
                let r = client.append_to_ledger(l, Some(opts.clone())).await?;
                bar.inc(1);
                ids.push(r.transaction_id.clone());
                last = Some(r);
            }
            bar.finish_and_clear();
            if wait && let Some(l) = &last {
                client.wait_until_durable(&l.transaction_id, None).await?;
            }
            print(
                json,
                json!({"appended": ids.len(), "transactionIds": ids, "committed": wait}),
                || match (ids.first(), ids.last()) {
                    (Some(a), Some(b)) => format!("appended {} entries: {a} .. {b}", ids.len()),
                    _ => "nothing to append".to_owned(),
                },
            );
        }
        LedgerCommand::Get {
            transaction_id,
            sub_ledger,
        } => {
            let e = client
                .get_ledger_entry(Some(GetLedgerEntryOptions {
                    transaction_id,
                    sub_ledger_id: sub_ledger,
                    ..Default::default()
                }))
                .await?;
            print(json, entry_json(&e), || e.contents.clone());
        }
        LedgerCommand::Tags { sub_ledger } => {
            let tags = client.list_tags(sub_ledger.as_deref(), None).await?;
            print(json, json!({ "tags": tags }), || tags.join("\n"));
        }
        LedgerCommand::List {
            from,
            to,
            sub_ledger,
            tag,
        } => {
            let mut entries = client.get_ledger_entries(Some(GetLedgerEntriesOptions {
                from_transaction_id: from,
                to_transaction_id: to,
                sub_ledger_id: sub_ledger,
                tag,
                ..Default::default()
            }));
            let bar = if json || !std::io::stderr().is_terminal() {
                ProgressBar::hidden()
            } else {
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template("{spinner} {pos} entries ({per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b
            };
            if json {
                // JSON lines: one entry per line, streamed as pages arrive.
                while let Some(e) = entries.next().await {
                    outln!("{}", entry_json(&e?));
                }
            } else {
                while let Some(e) = entries.next().await {
                    let e = e?;
                    bar.suspend(|| outln!("{}\t{}", e.transaction_id, e.contents));
                    bar.inc(1);
                }
            }
            bar.finish_and_clear();
        }
        LedgerCommand::Status { transaction_id } => {
            let s = client.get_transaction_status(&transaction_id, None).await?;
            let state = format!("{:?}", s.state);
            print(
                json,
                json!({"transactionId": s.transaction_id, "state": state}),
                || state.clone(),
            );
        }
        LedgerCommand::Wait {
            transaction_id,
            timeout,
        } => {
            let s = client
                .wait_until_durable(
                    &transaction_id,
                    Some(WaitUntilDurableOptions {
                        poll: PollOptions {
                            interval: Duration::from_millis(100),
                            timeout: Duration::from_secs(timeout),
                        },
                        ..Default::default()
                    }),
                )
                .await?;
            print(
                json,
                json!({"transactionId": s.transaction_id, "state": "Committed"}),
                || format!("{} committed", s.transaction_id),
            );
        }
        LedgerCommand::Receipt {
            transaction_id,
            verify,
            save,
            file: _,
        } => {
            let txid = transaction_id
                .context("give a transaction id, or --file to verify a saved receipt")?;
            let r: TransactionReceipt = client.get_transaction_receipt(&txid, None).await?;
            let response = json!({
                "receipt": r.contents,
                "state": "Ready",
                "transactionId": r.transaction_id,
                "applicationClaims": r.application_claims,
            });
            if let Some(p) = &save {
                std::fs::write(p, serde_json::to_string_pretty(&response)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            let mut verified = None;
            if verify {
                let c = conn.resolved()?;
                let ca =
                    c.ca.context("--verify needs the ledger certificate: --ca")?;
                let cert = std::fs::read_to_string(&ca)?;
                match r.verify(&cert) {
                    Ok(()) => verified = Some(true),
                    Err(e) => {
                        eprintln!("vellum: receipt for {txid} does not verify: {e}");
                        return Ok(ExitCode::from(exit::VERIFY));
                    }
                }
            }
            let mut out = response.clone();
            out["verified"] = json!(verified);
            print(json, out, || {
                let mut s = serde_json::to_string_pretty(&response).unwrap_or_default();
                if verified == Some(true) {
                    s.push_str("\nverified against the ledger certificate");
                }
                s
            });
        }
        LedgerCommand::Users(u) => match u {
            UsersCommand::Set { user_id, roles } => {
                let u = client
                    .create_or_update_ledger_user(&user_id, &roles, None)
                    .await?;
                print(
                    json,
                    json!({"userId": u.id, "assignedRoles": u.roles}),
                    || format!("{} is now {}", u.id, u.roles.join(", ")),
                );
            }
            UsersCommand::Get { user_id } => {
                let u = client.get_ledger_user(&user_id, None).await?;
                print(
                    json,
                    json!({"userId": u.id, "assignedRoles": u.roles}),
                    || format!("{}\t{}", u.id, u.roles.join(",")),
                );
            }
            UsersCommand::List => {
                let users = client.list_ledger_users(None).await?;
                let v: Vec<_> = users
                    .iter()
                    .map(|u| json!({"userId": u.id, "assignedRoles": u.roles}))
                    .collect();
                print(json, json!(v), || {
                    users
                        .iter()
                        .map(|u| format!("{}\t{}", u.id, u.roles.join(",")))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
            UsersCommand::Remove { user_id } => {
                client.delete_user(&user_id, None).await?;
                print(json, json!({"removed": user_id}), || {
                    format!("removed {user_id}")
                });
            }
        },
        LedgerCommand::Endpoints(c) => match c {
            EndpointsCommand::Deploy { path } => {
                let bundle = if path.is_dir() {
                    Bundle::from_dir(&path)
                        .with_context(|| format!("reading the app in {}", path.display()))?
                } else {
                    let text = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_slice(&text).with_context(|| {
                        format!(
                            "{} is not a bundle (JSON: metadata, modules)",
                            path.display()
                        )
                    })?
                };
                client.create_user_defined_endpoint(&bundle, None).await?;
                let n = bundle.metadata["endpoints"]
                    .as_object()
                    .map_or(0, serde_json::Map::len);
                print(
                    json,
                    json!({"deployed": path, "endpoints": n, "modules": bundle.modules.len()}),
                    || {
                        format!(
                            "deployed {} endpoint path(s), {} module(s)",
                            n,
                            bundle.modules.len()
                        )
                    },
                );
            }
            EndpointsCommand::Get { module } => match module {
                Some(name) => {
                    let m = client
                        .get_user_defined_endpoints_module(&name, None)
                        .await?;
                    print(json, json!({"name": m.name, "module": m.module}), || {
                        m.module.clone()
                    });
                }
                None => {
                    let b = client.get_user_defined_endpoint(None).await?;
                    let v = serde_json::to_value(&b)?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            },
            EndpointsCommand::Remove => {
                client
                    .create_user_defined_endpoint(&Bundle::default(), None)
                    .await?;
                print(json, json!({"removed": true}), || {
                    "removed every endpoint".into()
                });
            }
            EndpointsCommand::Options { set } => {
                let o = if set.is_empty() {
                    client.get_runtime_options(None).await?
                } else {
                    let mut patch = serde_json::Map::new();
                    for kv in &set {
                        let (k, v) = kv
                            .split_once('=')
                            .with_context(|| format!("--set {kv:?}: NAME=VALUE"))?;
                        const KNOWN: [&str; 6] = [
                            "max_heap_bytes",
                            "max_stack_bytes",
                            "max_execution_time_ms",
                            "max_cached_interpreters",
                            "log_exception_details",
                            "return_exception_details",
                        ];
                        anyhow::ensure!(
                            KNOWN.contains(&k),
                            "--set {kv:?}: unknown option; options are {}",
                            KNOWN.join(", ")
                        );
                        let v: serde_json::Value = serde_json::from_str(v)
                            .with_context(|| format!("--set {kv:?}: a number or true/false"))?;
                        patch.insert(k.to_owned(), v);
                    }
                    let o: JsRuntimeOptions =
                        serde_json::from_value(serde_json::Value::Object(patch))
                            .context("--set: unknown option or wrong type")?;
                    client.update_runtime_options(&o, None).await?
                };
                let v = serde_json::to_value(&o)?;
                print(json, v.clone(), || {
                    v.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}\t{v}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
        },
        LedgerCommand::Functions(f) => match f {
            FunctionsCommand::Put { id, file } => {
                let code = match file {
                    Some(p) => std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                    None => std::io::read_to_string(std::io::stdin())
                        .context("reading the function from standard input")?,
                };
                let f = client
                    .create_user_defined_function(&id, &code, None)
                    .await?;
                print(json, json!({"id": f.id, "code": f.code}), || {
                    format!("stored {} ({} bytes)", f.id, f.code.len())
                });
            }
            FunctionsCommand::Get { id } => {
                let f = client.get_user_defined_function(&id, None).await?;
                print(json, json!({"id": f.id, "code": f.code}), || f.code.clone());
            }
            FunctionsCommand::List => {
                let all = client.list_user_defined_functions(None).await?;
                let v: Vec<_> = all
                    .iter()
                    .map(|f| json!({"id": f.id, "code": f.code}))
                    .collect();
                print(json, json!(v), || {
                    all.iter()
                        .map(|f| f.id.clone())
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
            FunctionsCommand::Delete { id } => {
                client.delete_user_defined_function(&id, None).await?;
                print(json, json!({"deleted": id}), || format!("deleted {id}"));
            }
            FunctionsCommand::Run {
                id,
                args,
                export,
                timeout_ms,
            } => {
                let mut run = FunctionRun::with_arguments(args).export(export);
                if let Some(ms) = timeout_ms {
                    run = run.options(JsRuntimeOptions::with_time_limit_ms(ms));
                }
                let r = client
                    .execute_user_defined_function(&id, Some(run), None)
                    .await?;
                match r.outcome {
                    FunctionOutcome::Succeeded(v) => {
                        print(
                            json,
                            json!({"status": "Succeeded", "returnValue": v, "transactionId": r.transaction_id}),
                            || v.clone(),
                        );
                    }
                    FunctionOutcome::Failed(m) => {
                        if json {
                            println!("{}", json!({"status": "Failed", "message": m}));
                        } else {
                            eprintln!("vellum: {}", m.lines().next().unwrap_or_default());
                        }
                        return Ok(ExitCode::FAILURE);
                    }
                    _ => anyhow::bail!("the service reported an outcome this client does not know"),
                }
            }
        },
        LedgerCommand::Roles(r) => {
            let role_json =
                |r: &UserDefinedRole| json!({"roleName": r.name, "roleActions": r.actions});
            match r {
                RolesCommand::Set { name, actions } => {
                    let role = UserDefinedRole::new(&name, actions);
                    client.create_user_defined_role(&[role], None).await?;
                    let r = client.get_user_defined_role(&name, None).await?;
                    print(json, role_json(&r), || {
                        format!("{} allows {}", r.name, r.actions.join(", "))
                    });
                }
                RolesCommand::Add { name, actions } => {
                    let role = UserDefinedRole::new(&name, actions);
                    client.update_user_defined_role(&[role], None).await?;
                    let r = client.get_user_defined_role(&name, None).await?;
                    print(json, role_json(&r), || {
                        format!("{} allows {}", r.name, r.actions.join(", "))
                    });
                }
                RolesCommand::Get { name } => {
                    let r = client.get_user_defined_role(&name, None).await?;
                    print(json, role_json(&r), || r.actions.join("\n"));
                }
                RolesCommand::Remove { name } => {
                    client.delete_user_defined_role(&name, None).await?;
                    print(json, json!({"removed": name}), || format!("removed {name}"));
                }
            }
        }
        LedgerCommand::Node(n) => match n {
            NodeCommand::Token => {
                let t = client.create_join_token(None).await?;
                print(
                    json,
                    json!({"token": t.token, "expires_at": t.expires_at}),
                    || t.token.clone(),
                );
            }
            NodeCommand::List => {
                let nodes = client.list_nodes(None).await?;
                print(json, json!({"nodes": nodes}), || {
                    nodes
                        .iter()
                        .map(|n| {
                            format!(
                                "{}\t{}\t{}\t{}",
                                n.node_id,
                                n.status,
                                n.role,
                                n.address.as_deref().unwrap_or("-")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
            NodeCommand::Status => {
                let h = client.node_health(None).await?;
                print(json, serde_json::to_value(&h)?, || health_text(&h));
                if !h.ready || h.write_error.is_some() {
                    return Ok(ExitCode::from(exit::SERVICE));
                }
            }
            NodeCommand::Remove { node_id } => {
                let txid = client.remove_node(&node_id, None).await?;
                print(
                    json,
                    json!({"removed": node_id, "transactionId": txid}),
                    || format!("node {node_id} retired at {txid}; it leaves the cluster shortly"),
                );
            }
        },
        LedgerCommand::Consortium => {
            let c = client.get_consortium(None).await?;
            let v: Vec<_> = c
                .members
                .iter()
                .map(|m| json!({"id": m.id, "certificate": m.certificate}))
                .collect();
            print(json, json!({"members": v}), || {
                c.members
                    .iter()
                    .map(|m| format!("member {}", m.id))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        LedgerCommand::Constitution => {
            let c = client.get_constitution(None).await?;
            print(
                json,
                json!({"digest": c.digest, "script": c.contents}),
                || {
                    format!(
                        "{}\n// digest (SHA-256, checked): {}",
                        c.contents.trim_end(),
                        c.digest
                    )
                },
            );
        }
        LedgerCommand::Quotes => {
            let q = client.get_enclave_quotes(None).await?;
            let v: serde_json::Map<String, serde_json::Value> = q
                .quotes
                .iter()
                .map(|(k, q)| {
                    (
                        k.clone(),
                        json!({"nodeId": q.node_id, "mrenclave": q.mrenclave, "quoteVersion": q.version, "raw": q.raw_quote}),
                    )
                })
                .collect();
            print(
                json,
                json!({"currentNodeId": q.source_node, "enclaveQuotes": v}),
                || {
                    q.quotes
                        .values()
                        .map(|x| {
                            format!(
                                "node {} ({}) measurement {}",
                                x.node_id, x.version, x.mrenclave
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        // Served above, before a client is made.
        LedgerCommand::Identity { .. } | LedgerCommand::Gov(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `vellum node status` as text: one line a fact.
fn health_text(h: &vellum_client::models::NodeHealth) -> String {
    let mut lines = vec![
        format!("node      {}", h.node_id),
        format!(
            "role      {}{}",
            h.role,
            match &h.primary {
                Some(p) if *p != h.node_id => format!(" (primary {p})"),
                _ => String::new(),
            }
        ),
        format!("term      {}", h.term),
        format!(
            "commit    {} (last {}, {} behind)",
            h.commit_seqno, h.last_seqno, h.commit_lag
        ),
        format!(
            "signature {} ({})",
            h.last_signed_seqno,
            h.last_signature_age_seconds
                .map_or("none since start".into(), |s| format!("{s:.1} s ago"))
        ),
    ];
    for (peer, lag) in &h.replication_lag {
        lines.push(format!("backup    {peer}: {lag} behind"));
    }
    lines.push(format!(
        "ledger    {} in {} files{}",
        bytes(h.ledger_bytes),
        h.ledger_files,
        h.disk_free_bytes
            .map_or(String::new(), |f| format!(", {} free on disk", bytes(f)))
    ));
    if let Some(s) = h.snapshot_seqno {
        lines.push(format!("snapshot  {s}"));
    }
    if let Some([from, to]) = h.indexing {
        lines.push(format!(
            "index     started from a snapshot: indexing transactions {from} to {to} (ranges over them answer IndexLoading)"
        ));
    }
    if let Some(a) = &h.archive {
        lines.push(format!(
            "archive   {} chunks through {} ({} behind the commit point), {} snapshots",
            a.chunks,
            a.through_seqno,
            h.commit_seqno.saturating_sub(a.through_seqno),
            a.snapshots
        ));
    }
    lines.push(format!(
        "state     {}",
        match (&h.write_error, h.ready) {
            (Some(e), _) => format!("refusing writes: {e}"),
            (None, false) => "catching up (not ready)".into(),
            (None, true) => "ready".into(),
        }
    ));
    lines.join("\n")
}

/// A byte count for people.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

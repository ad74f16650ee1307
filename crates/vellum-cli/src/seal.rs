//! The seal key, from the command line: a PKCS#11 URI, a key file, a passphrase file,
//! `VELLUM_SEAL_PASSPHRASE`, or (a sealed directory, on a terminal) a passphrase typed at a
//! prompt; and `vellum seal`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use vellum_node::seal::{SealKey, Sealer};
use zeroize::Zeroizing;

/// The environment variable a passphrase may come from.
pub const PASSPHRASE_ENV: &str = "VELLUM_SEAL_PASSPHRASE";
/// The environment variable a PKCS#11 PIN may come from (when the URI gives none).
pub const PIN_ENV: &str = "VELLUM_SEAL_PKCS11_PIN";

/// A PKCS#11 URI with its PIN: from the URI (`pin-value`, `pin-source`), else the environment
/// variable `pin_env`, else a prompt on a terminal.
pub fn pkcs11_uri(text: &str, pin_env: &str) -> anyhow::Result<vellum_node::hsm::Pkcs11Uri> {
    let mut uri: vellum_node::hsm::Pkcs11Uri = text.parse()?;
    if uri.pin.is_none() {
        if let Ok(pin) = std::env::var(pin_env) {
            uri.pin = Some(Zeroizing::new(pin));
        } else if std::io::stdin().is_terminal() {
            let pin = rpassword::prompt_password(format!("PIN of token {}: ", uri.token))?;
            uri.pin = Some(Zeroizing::new(pin));
        }
    }
    Ok(uri)
}

/// The seal key the options name for `data_dir`, if any. On a terminal, a sealed directory with
/// no key given asks for its passphrase.
pub fn seal_key(
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    pkcs11: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<Option<SealKey>> {
    if let Some(uri) = pkcs11 {
        return Ok(Some(SealKey::Pkcs11(pkcs11_uri(uri, PIN_ENV)?)));
    }
    if let Some(f) = key_file {
        return Ok(Some(SealKey::KeyFile(f.to_path_buf())));
    }
    if let Some(f) = passphrase_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the seal passphrase {}", f.display()))?,
        );
        let line = text.lines().next().unwrap_or_default();
        anyhow::ensure!(!line.is_empty(), "{}: the passphrase is empty", f.display());
        return Ok(Some(SealKey::Passphrase(Zeroizing::new(line.to_owned()))));
    }
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        anyhow::ensure!(!p.is_empty(), "{PASSPHRASE_ENV} is empty");
        return Ok(Some(SealKey::Passphrase(Zeroizing::new(p))));
    }
    if Sealer::is_sealed(data_dir) && std::io::stdin().is_terminal() {
        let p =
            rpassword::prompt_password(format!("passphrase that seals {}: ", data_dir.display()))
                .context("reading the passphrase")?;
        return Ok(Some(SealKey::Passphrase(Zeroizing::new(p))));
    }
    Ok(None)
}

/// `vellum seal`: seals a stopped node's data directory in place.
#[derive(clap::Args, Debug)]
pub struct SealArgs {
    /// The data directory (its node stopped).
    #[arg(long, env = "VELLUM_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Seal with this key file (at least 32 random bytes, e.g. `head -c 32 /dev/urandom`),
    /// kept away from the data directory.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_file")]
    pub key_file: Option<PathBuf>,
    /// Seal with the passphrase on this file's first line (else VELLUM_SEAL_PASSPHRASE, else
    /// a prompt).
    #[arg(long, value_name = "FILE", conflicts_with = "pkcs11")]
    pub passphrase_file: Option<PathBuf>,
    /// Seal with a key kept in a PKCS#11 token, named by a PKCS#11 URI
    /// (`pkcs11:token=T;object=K?module-path=LIB&pin-source=file:PIN`; the PIN else from
    /// VELLUM_SEAL_PKCS11_PIN); the key is created in the token if it has none by that label.
    #[arg(long, value_name = "URI", conflicts_with = "key_file")]
    pub pkcs11: Option<String>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vellum seal`.
pub fn seal(args: &SealArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.data_dir.join("node.json").exists(),
        "{} holds no node",
        args.data_dir.display()
    );
    let key = match seal_key(
        args.key_file.as_deref(),
        args.passphrase_file.as_deref(),
        args.pkcs11.as_deref(),
        &args.data_dir,
    )? {
        Some(k) => k,
        None if std::io::stdin().is_terminal() => {
            let a = rpassword::prompt_password("new seal passphrase: ")?;
            let b = rpassword::prompt_password("again: ")?;
            anyhow::ensure!(a == b, "the passphrases differ");
            anyhow::ensure!(!a.is_empty(), "the passphrase is empty");
            SealKey::Passphrase(Zeroizing::new(a))
        }
        None => {
            anyhow::bail!("give the seal key: --key-file, --passphrase-file or {PASSPHRASE_ENV}")
        }
    };
    let sealed = vellum_node::seal::seal_dir(&args.data_dir, &key)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"sealed": sealed, "dir": args.data_dir})
        );
    } else if sealed.is_empty() {
        println!("{} was sealed already", args.data_dir.display());
    } else {
        println!(
            "sealed {} in {}; start the node with the same key",
            sealed.join(", "),
            args.data_dir.display()
        );
    }
    Ok(())
}

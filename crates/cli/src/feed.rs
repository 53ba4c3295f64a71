//! `cccgate feed`: operator tools for feed drops: signing keys, signing, checking a signature.
//!
//! A drop is signed by signing the exact bytes of its `manifest.json` (which lists every data
//! file's SHA-256) with Ed25519; the loader refuses unsigned drops once a public key is
//! configured (`cccgate load build --public-key FILE`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cccgate_loader::{
    MANIFEST_FILE, SIGNATURE_FILE, encode_signing_key, encode_verifying_key, generate_signing_key,
    read_signing_key, read_verifying_key, sign_drop, verify_signature,
};

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sign a drop: write DROP/manifest.json.sig with a secret key.
    Sign {
        /// The drop directory.
        #[arg(long)]
        drop: PathBuf,
        /// The Ed25519 secret key file (base64 of the 32-byte seed).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Create a new Ed25519 key pair: a secret key file and a public key file.
    Keygen {
        /// Where to write the secret key (must not exist).
        #[arg(long, value_name = "FILE")]
        secret: PathBuf,
        /// Where to write the public key (give it to `load build --public-key`).
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
    },
    /// Check a drop's signature against a public key, without loading the drop.
    Verify {
        /// The drop directory.
        #[arg(long)]
        drop: PathBuf,
        /// The Ed25519 public key file.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Sign { drop, key } => {
            let key = read_signing_key(&key)?;
            let path = sign_drop(&drop, &key)
                .with_context(|| format!("{}: cannot sign", drop.join(MANIFEST_FILE).display()))?;
            out!("signed: {}", path.display());
            Ok(())
        }
        Command::Keygen { secret, public } => keygen(&secret, &public),
        Command::Verify { drop, public_key } => {
            let key = read_verifying_key(&public_key)?;
            let manifest_path = drop.join(MANIFEST_FILE);
            let manifest = fs::read(&manifest_path)
                .with_context(|| format!("{}: cannot read", manifest_path.display()))?;
            let sig_path = drop.join(SIGNATURE_FILE);
            let sig = fs::read(&sig_path)
                .with_context(|| format!("{}: cannot read", sig_path.display()))?;
            if let Err(e) = verify_signature(&manifest, &sig, &key) {
                bail!("{}: {e}", sig_path.display());
            }
            out!(
                "ok: {} is signed by {}",
                drop.display(),
                public_key.display()
            );
            Ok(())
        }
    }
}

fn keygen(secret: &Path, public: &Path) -> anyhow::Result<()> {
    let key = generate_signing_key();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(secret)
        .with_context(|| format!("{}: cannot create (it must not exist)", secret.display()))?;
    f.write_all(encode_signing_key(&key).as_bytes())?;
    fs::write(public, encode_verifying_key(&key.verifying_key()))
        .with_context(|| format!("{}: cannot write", public.display()))?;
    out!("secret key: {} (keep it private)", secret.display());
    out!("public key: {}", public.display());
    Ok(())
}

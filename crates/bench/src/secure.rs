//! TLS and caller tokens for the gateways the benchmarks start, as a production gateway runs
//! (`docs/planes.md`): a CA, a server certificate for `127.0.0.1` and `localhost`, and a
//! `--auth-tokens` file with one token per caller, all made at run time (rcgen) in a
//! directory of their own that is removed when the files are dropped.
//!
//! [`compare`] measures what they cost: the same load against a plaintext gateway and against
//! one with TLS and tokens on, in one run, in alternating rounds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cccgate_client::connect::Credentials;
use cccgate_client::summary::{Latency, thousands};
use cccgate_server::{Config, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use crate::drive::{Drive, drive};
use crate::embedded::{EmbeddedGateway, embedded_config};
use crate::setup::{BenchError, Setup};

/// A CA, a server certificate signed by it, and a tokens file.
#[derive(Debug)]
pub struct SecureFiles {
    dir: PathBuf,
    /// The server's certificate and key (no client CA: callers are named by token).
    pub tls: TlsFiles,
    /// The `--auth-tokens` file.
    pub tokens_file: PathBuf,
    /// PEM of the CA, for the clients.
    pub ca_pem: Vec<u8>,
    tokens: Vec<(String, String)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Invalid(format!("{}: {e}", path.display()))
}

fn tls_err(e: rcgen::Error) -> BenchError {
    BenchError::Invalid(format!("cannot make the benchmark's certificates: {e}"))
}

impl SecureFiles {
    /// Makes the files in a new directory `dir` (which must not exist yet), one token per
    /// name of `callers`.
    pub fn create(dir: &Path, callers: &[&str]) -> Result<SecureFiles, BenchError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cccgate bench CA");
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(tls_err)?;
        let issuer = Issuer::new(ca, ca_key);
        // rcgen takes a name that parses as an address as an IP subject-alternative name.
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(tls_err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "cccgate bench gateway");
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = leaf.signed_by(&key, &issuer).map_err(tls_err)?;
        let write = |name: &str, text: &[u8]| -> Result<PathBuf, BenchError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io_err(&path))?;
            Ok(path)
        };
        let tls = TlsFiles {
            cert: write("gateway.pem", cert.pem().as_bytes())?,
            key: write("gateway.key", key.serialize_pem().as_bytes())?,
            client_ca: None,
        };
        // Tokens differ from run to run: the directory's name and the time seed them.
        let seed = format!("{}{:?}", dir.display(), std::time::SystemTime::now());
        let tokens: Vec<(String, String)> = callers
            .iter()
            .map(|c| {
                let t = format!("{c}-{:016x}", xxh3_64(format!("{seed}{c}").as_bytes()));
                ((*c).to_owned(), t)
            })
            .collect();
        let mut text = String::from("# callers of the benchmark's gateway: NAME SHA256HEX\n");
        for (name, token) in &tokens {
            let hash = Sha256::digest(token.as_bytes());
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!("{name} {hex}\n"));
        }
        Ok(SecureFiles {
            tokens_file: write("tokens", text.as_bytes())?,
            ca_pem: ca_cert.pem().into_bytes(),
            tls,
            tokens,
            dir: dir.to_path_buf(),
        })
    }

    /// TLS on the public listener and tokens required.
    pub fn configure(&self, config: &mut Config) {
        config.tls = Some(self.tls.clone());
        config.auth_tokens = Some(self.tokens_file.clone());
    }

    /// The token made for `caller`.
    pub fn token(&self, caller: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(n, _)| n == caller)
            .map(|(_, t)| t.as_str())
    }

    /// A file holding the CA's PEM (written beside the other files), for another process.
    pub fn ca_file(&self) -> Result<PathBuf, BenchError> {
        let path = self.dir.join("ca.pem");
        if !path.exists() {
            std::fs::write(&path, &self.ca_pem).map_err(io_err(&path))?;
        }
        Ok(path)
    }

    /// What `caller` presents: trust in the CA and its token.
    pub fn credentials(&self, caller: &str) -> Result<Credentials, BenchError> {
        let token = self
            .tokens
            .iter()
            .find(|(n, _)| n == caller)
            .map(|(_, t)| t.as_str())
            .ok_or_else(|| BenchError::Invalid(format!("no token made for caller {caller}")))?;
        let mut c = Credentials::default();
        c.ca_pem = Some(self.ca_pem.clone());
        Ok(c.with_token(Some(token))?)
    }
}

impl Drop for SecureFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory for [`SecureFiles`] under `cache_dir`, unique to this process.
pub fn secure_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("secure-{}", std::process::id()))
}

/// Starts a second embedded gateway beside `su`'s, over the same snapshot directory, with TLS
/// and tokens on; returns it and its `https://` target.
pub async fn start_secure_twin(
    su: &Setup,
    files: &SecureFiles,
    gateway_rt: &tokio::runtime::Handle,
) -> Result<(EmbeddedGateway, String), BenchError> {
    let plain = su
        .embedded
        .as_ref()
        .ok_or_else(|| BenchError::Invalid("comparing needs the embedded gateway".into()))?;
    let mut config = embedded_config(plain.snapshot_dir());
    files.configure(&mut config);
    let gw = EmbeddedGateway::start(config, gateway_rt, Duration::from_secs(300)).await?;
    let target = format!("https://{}", gw.addr());
    Ok((gw, target))
}

/// One round of [`compare`]: the load against one gateway.
#[derive(Clone, Debug)]
pub struct Round {
    /// With TLS and tokens on.
    pub secure: bool,
    /// Verdicts per second.
    pub checks_per_sec: f64,
    /// Latency of a call.
    pub latency: Latency,
    /// Failed calls and error entries.
    pub errors: u64,
    /// Verdicts whose reason was not the expected one.
    pub mismatches: u64,
}

/// Plaintext against TLS and tokens, round by round.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// What was driven.
    pub label: String,
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Comparison {
    fn of(&self, secure: bool) -> impl Iterator<Item = &Round> {
        self.rounds.iter().filter(move |r| r.secure == secure)
    }

    /// Median throughput (plaintext, secure).
    pub fn throughput(&self) -> (f64, f64) {
        let m = |s| median(self.of(s).map(|r| r.checks_per_sec).collect());
        (m(false), m(true))
    }

    /// Median p99 latency, microseconds (plaintext, secure).
    pub fn p99(&self) -> (f64, f64) {
        let m = |s| median(self.of(s).map(|r| r.latency.p99 as f64).collect());
        (m(false), m(true))
    }

    /// Errors and mismatches over every round.
    pub fn errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.errors + r.mismatches).sum()
    }

    /// The last line: `grpc-secure mode=M plain_checks_per_sec=A secure_checks_per_sec=B
    /// ratio=R plain_p99_us=C secure_p99_us=D`.
    pub fn last_line(&self, mode: &str) -> String {
        let (a, b) = self.throughput();
        let (pa, pb) = self.p99();
        format!(
            "grpc-secure mode={mode} plain_checks_per_sec={a:.0} secure_checks_per_sec={b:.0} ratio={:.3} plain_p99_us={pa:.0} secure_p99_us={pb:.0}",
            b / a.max(1e-9)
        )
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: plaintext against TLS + tokens, alternating",
            self.label
        )?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "  round {:>2} {:<13} {:>11} checks/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
                i + 1,
                if r.secure {
                    "TLS + tokens"
                } else {
                    "plaintext"
                },
                thousands(r.checks_per_sec.round() as u64),
                r.latency.p50,
                r.latency.p99,
                r.errors + r.mismatches
            )?;
        }
        let (a, b) = self.throughput();
        let (pa, pb) = self.p99();
        write!(
            f,
            "  median        plaintext {} checks/s, TLS + tokens {} checks/s: ratio {:.3} (goal ≥ 0.8); p99 {pa:.0} µs against {pb:.0} µs",
            thousands(a.round() as u64),
            thousands(b.round() as u64),
            b / a.max(1e-9)
        )
    }
}

/// Drives `d` `rounds` times against each of the plaintext gateway of `su` and the secure
/// one at `secure_target`, alternating which goes first (ABBA) so a drift of the machine's
/// load falls on both alike.
pub async fn compare(
    su: &mut Setup,
    d: &Drive,
    secure_target: &str,
    secure: &Credentials,
    rounds: usize,
) -> Result<Comparison, BenchError> {
    let plain_target = su.target.clone();
    let plain = su.credentials.clone();
    let mut out = Comparison {
        label: d.label.clone(),
        rounds: Vec::new(),
    };
    for k in 0..rounds.max(1) * 2 {
        // 0 1 1 0 0 1 1 0 ...: plaintext, secure, secure, plaintext, ...
        let is_secure = (k % 4 == 1) || (k % 4 == 2);
        if is_secure {
            su.target = secure_target.to_owned();
            su.credentials = secure.clone();
        } else {
            su.target = plain_target.clone();
            su.credentials = plain.clone();
        }
        let (run, ()) = drive(su, d, async |_| Ok(())).await?;
        out.rounds.push(Round {
            secure: is_secure,
            checks_per_sec: run.stats.checks() as f64 / run.seconds.max(1e-9),
            latency: Latency::of(&run.stats.latency_us),
            errors: run.stats.errors(),
            mismatches: run.stats.mismatches,
        });
    }
    su.target = plain_target;
    su.credentials = plain;
    Ok(out)
}

//! How a client command reaches a gateway that runs as in production (`docs/planes.md`): TLS
//! with a CA, a client certificate for mTLS, a caller token. Shared by `replay`, `watch` and
//! `bench grpc`.

use std::path::PathBuf;

use cccgate_client::connect::Credentials;

/// The caller's credentials, as flags.
#[derive(Debug, Default, clap::Args)]
pub struct CallerArgs {
    /// For an https:// target: the CA (PEM) that signs the gateway's certificate.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// For a gateway that requires mTLS: the client's certificate chain (PEM; with
    /// --client-key).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// For a gateway with --auth-tokens: the caller's token, sent as `authorization: Bearer
    /// TOKEN` (better from the environment than the command line, where `ps` shows it).
    #[arg(long, env = "CCCGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl CallerArgs {
    /// Reads the files named; a bad file or token is an error naming the flag.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        Ok(Credentials::from_files(
            self.ca_file.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
            self.token.as_deref(),
        )?)
    }
}

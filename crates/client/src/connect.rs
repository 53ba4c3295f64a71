//! Connections to a gateway and the raw-bytes gRPC calls the client makes over them.
//!
//! The client speaks `cccgate.v1.ListingCheck` through tonic's generic [`Grpc`] client with a
//! codec that moves bytes: requests are encoded by [`crate::wire::ChunkEncoder`] and responses
//! are handed back undecoded (a [`Bytes`] that shares the received buffer), to be read in place
//! by [`crate::wire::ResponseView`]. Several HTTP/2 connections spread the work of a fast
//! client over the runtime's threads; streams and calls are assigned to them round robin.
//!
//! A gateway in production runs with TLS and caller tokens (`docs/planes.md`): an `https://`
//! target is reached over rustls, trusting the CA of [`Credentials::ca_pem`] (and presenting
//! a client certificate for mTLS when one is given), and every call carries the caller's
//! token as `authorization: Bearer TOKEN`.

use std::path::Path;
use std::time::Duration;

use prost::bytes::{Buf, BufMut, Bytes};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::wire::Rpc;

/// Largest response the client accepts (a chunk of 10,000 verdicts with certificates is a
/// few MB).
const MAX_MESSAGE: usize = 256 << 20;

/// A connection failure, naming the target.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a valid endpoint.
    #[error("target {target:?} is not a valid URL: {source}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Nothing answered.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The target.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A credentials file cannot be read.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What the file was for (`--ca-file`, ...).
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials do not fit the target or each other.
    #[error("{0}")]
    Credentials(String),
}

/// What a client presents beyond the target URL: the CA it trusts for an `https://` target,
/// its own certificate for mTLS, and its token.
#[derive(Clone, Default)]
pub struct Credentials {
    /// PEM of the CA (or CAs) that sign the gateway's certificate; needed for `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client's certificate chain and key, for a gateway that requires mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// `authorization: Bearer TOKEN`, sent on every call.
    token: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the key.
        f.debug_struct("Credentials")
            .field("ca", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Credentials {
    /// Reads the CA file and the client's certificate and key (both or neither) and takes the
    /// token, checking that it can be sent as metadata.
    pub fn from_files(
        ca_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
        token: Option<&str>,
    ) -> Result<Credentials, ConnectError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| ConnectError::File {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let ca_pem = ca_file.map(|p| read("--ca-file", p)).transpose()?;
        let identity = match (client_cert, client_key) {
            (Some(c), Some(k)) => Some((read("--client-cert", c)?, read("--client-key", k)?)),
            (None, None) => None,
            _ => {
                return Err(ConnectError::Credentials(
                    "--client-cert and --client-key go together".into(),
                ));
            }
        };
        Credentials {
            ca_pem,
            identity,
            token: None,
        }
        .with_token(token)
    }

    /// The same, sending `token` (none: no `authorization` header).
    pub fn with_token(mut self, token: Option<&str>) -> Result<Credentials, ConnectError> {
        self.token = match token.map(str::trim) {
            None | Some("") => None,
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConnectError::Credentials(
                    "the token is not printable ASCII (it goes into an HTTP header)".into(),
                ));
            }
            Some(t) => {
                let mut v = AsciiMetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    ConnectError::Credentials(
                        "the token is not printable ASCII (it goes into an HTTP header)".into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(self)
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// An interceptor that sends the token with every call of a generated client.
    pub fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor(self.token.clone())
    }

    fn attach<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
    }
}

/// Adds `authorization: Bearer TOKEN` to each call (nothing without a token).
#[derive(Clone)]
pub struct TokenInterceptor(Option<AsciiMetadataValue>);

impl std::fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_tuple("TokenInterceptor")
            .field(&self.0.is_some())
            .finish()
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert("authorization", t.clone());
        }
        Ok(request)
    }
}

/// A codec that sends pre-encoded messages and returns the received ones as bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// The encoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawEncoder;

/// The decoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Shares the receive buffer: no copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Connections to one gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    target: String,
    channels: Vec<Channel>,
    credentials: Credentials,
}

impl Gateway {
    /// Opens `connections` HTTP/2 connections (at least one) to `target`
    /// (`http://host:port`), failing if the first cannot be made.
    pub async fn connect(target: &str, connections: usize) -> Result<Gateway, ConnectError> {
        Self::connect_with(target, connections, &Credentials::default()).await
    }

    /// [`Gateway::connect`] with TLS settings and a token.
    pub async fn connect_with(
        target: &str,
        connections: usize,
        credentials: &Credentials,
    ) -> Result<Gateway, ConnectError> {
        let endpoint = endpoint(target, credentials)?;
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            let ch = endpoint
                .connect()
                .await
                .map_err(|source| ConnectError::Connect {
                    target: target.to_owned(),
                    source,
                })?;
            channels.push(ch);
        }
        Ok(Gateway {
            target: target.to_owned(),
            channels,
            credentials: credentials.clone(),
        })
    }

    /// Like [`Gateway::connect`], but connects on first use (and again after each loss),
    /// so a gateway that is down now can serve later calls.
    pub fn connect_lazy(target: &str, connections: usize) -> Result<Gateway, ConnectError> {
        Self::connect_lazy_with(target, connections, &Credentials::default())
    }

    /// [`Gateway::connect_lazy`] with TLS settings and a token.
    pub fn connect_lazy_with(
        target: &str,
        connections: usize,
        credentials: &Credentials,
    ) -> Result<Gateway, ConnectError> {
        let endpoint = endpoint(target, credentials)?;
        Ok(Gateway {
            target: target.to_owned(),
            channels: (0..connections.max(1))
                .map(|_| endpoint.connect_lazy())
                .collect(),
            credentials: credentials.clone(),
        })
    }

    /// The target URL.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A client on connection `i` (modulo the number of connections).
    pub fn client(&self, i: usize) -> RawClient {
        let ch = self.channels[i % self.channels.len()].clone();
        RawClient {
            grpc: Grpc::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            credentials: self.credentials.clone(),
        }
    }
}

pub(crate) fn endpoint(target: &str, credentials: &Credentials) -> Result<Endpoint, ConnectError> {
    let bad = |source| ConnectError::BadTarget {
        target: target.to_owned(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(target.to_owned()).map_err(bad)?;
    let https = target.starts_with("https://");
    match (&credentials.ca_pem, https) {
        (Some(ca), true) => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &credentials.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls).map_err(bad)?;
        }
        (None, true) => {
            return Err(ConnectError::Credentials(format!(
                "target {target} is https: give the CA that signs its certificate (--ca-file)"
            )));
        }
        (Some(_), false) => {
            return Err(ConnectError::Credentials(format!(
                "--ca-file is for an https:// target, not {target}"
            )));
        }
        (None, false) if credentials.identity.is_some() => {
            return Err(ConnectError::Credentials(format!(
                "a client certificate is for an https:// target, not {target}"
            )));
        }
        (None, false) => {}
    }
    Ok(endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // Large windows: a chunk of verdicts is hundreds of KB and several are in flight.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        // Answers come in fewer, larger frames: less framing work on both sides.
        .max_frame_size(Some(1 << 20))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// A gRPC client that sends and receives raw message bytes.
#[derive(Clone, Debug)]
pub struct RawClient {
    grpc: Grpc<Channel>,
    credentials: Credentials,
}

impl RawClient {
    /// One unary call (`Check` or `CheckBatch`): request bytes in, response bytes out.
    pub async fn unary(&mut self, rpc: Rpc, request: Bytes) -> Result<Bytes, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(rpc.path());
        let mut request = tonic::Request::new(request);
        self.credentials.attach(&mut request);
        let resp = self.grpc.unary(request, path, RawCodec).await?;
        Ok(resp.into_inner())
    }

    /// Opens a `CheckStream`: a sender of request messages and the stream of responses (one
    /// per request, in order).
    pub async fn open_stream(&mut self) -> Result<CheckStream, Status> {
        self.ready().await?;
        let (tx, rx) = mpsc::channel(4);
        let path = PathAndQuery::from_static(Rpc::Stream.path());
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        self.credentials.attach(&mut request);
        let resp = self.grpc.streaming(request, path, RawCodec).await?;
        Ok(CheckStream {
            tx,
            rx: resp.into_inner(),
        })
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))
    }
}

/// An open `CheckStream`.
#[derive(Debug)]
pub struct CheckStream {
    tx: mpsc::Sender<Bytes>,
    rx: Streaming<Bytes>,
}

impl CheckStream {
    /// Sends one request message and waits for its response.
    pub async fn call(&mut self, request: Bytes) -> Result<Bytes, Status> {
        if self.tx.send(request).await.is_err() {
            // The request side is gone: the call failed; the response stream says why.
            return Err(match self.rx.message().await {
                Err(s) => s,
                Ok(_) => Status::unavailable("the gateway closed the stream"),
            });
        }
        match self.rx.message().await? {
            Some(b) => Ok(b),
            None => Err(Status::unavailable(
                "the gateway ended the stream before answering",
            )),
        }
    }
}

/// Whether a failed call is worth retrying after a pause: the gateway is down, restarting,
/// overloaded or timed out, as opposed to refusing the request itself.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
    )
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    #[test]
    fn credentials_that_cannot_fit_the_target_are_refused_by_name() {
        let none = Credentials::default();
        let err = endpoint("https://127.0.0.1:1", &none).unwrap_err();
        assert!(err.to_string().contains("--ca-file"), "{err}");
        let ca = Credentials {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
            ..Credentials::default()
        };
        let err = endpoint("http://127.0.0.1:1", &ca).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let err = Credentials::default()
            .with_token(Some("caf\u{e9}"))
            .unwrap_err();
        assert!(err.to_string().contains("printable ASCII"), "{err}");
        let err = Credentials::from_files(None, Some(Path::new("c.pem")), None, None).unwrap_err();
        assert!(err.to_string().contains("--client-key"), "{err}");
        let err = Credentials::from_files(Some(Path::new("/nonexistent/ca.pem")), None, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn the_token_goes_on_every_call_as_a_bearer_header_and_never_into_debug_output() {
        let c = Credentials::default().with_token(Some(" s3cret ")).unwrap();
        assert!(c.has_token());
        let mut req = tonic::Request::new(());
        c.attach(&mut req);
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let blank = Credentials::default().with_token(Some("  ")).unwrap();
        assert!(!blank.has_token());
    }
}

//! TLS and mTLS for a listener (rustls, no OpenSSL), with rotation: the certificate, key and
//! client CA files are looked at when a connection arrives and re-read when any changed, so a
//! renewed certificate is served to the next connection without a restart. A rotation that
//! does not load (a key that does not match, a half-written file) keeps the files in force and
//! is logged.
//!
//! Handshakes run in their own tasks, at most [`HANDSHAKE_TIMEOUT`] each, so a client that
//! connects and says nothing holds no one else's accept. Every accepted connection (plain or
//! TLS) carries a [`ConnInfo`] into each request's extensions: the peer's address (for
//! per-connection stream caps) and, with mTLS, the caller's name from its certificate (first
//! DNS subject-alternative name, else common name).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tonic::transport::server::Connected;

use crate::rate::ByteMeter;
use crate::tarpit::{ReadGate, Strikes};

/// Longest a TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Files of one listener's TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA (PEM) that client certificates must chain to; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS: {0}")]
    Rustls(String),
}

type Stamp = Vec<Option<(u64, Option<SystemTime>)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    std::iter::once(&files.cert)
        .chain(std::iter::once(&files.key))
        .chain(files.client_ca.iter())
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let bad = |path: &Path, message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| bad(&files.key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read(ca)?) {
                let c = c.map_err(|e| bad(ca, format!("not a PEM certificate: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| bad(ca, format!("not a usable CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(ca, "no CA certificate in the file".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
    // h2 for gRPC; http/1.1 for the HTTP/JSON endpoints of the public plane.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener's TLS settings in force, re-read when the files change.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
    stamp: Mutex<Stamp>,
}

impl Tls {
    /// Reads the files; an unusable one is an error at start.
    pub(crate) fn open(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let before = stamp(&files);
        let config = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            config: ArcSwap::from_pointee(config),
            stamp: Mutex::new(before),
        }))
    }

    /// The settings for the next handshake: re-read first if a file changed.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        let now = stamp(&self.files);
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != now {
            *last = now;
            match build(&self.files) {
                Ok(c) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS files re-read");
                    self.config.store(Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS files not re-read; the ones in force stay")
                }
            }
        }
        self.config.load_full()
    }
}

/// What a request knows of its connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The caller's name from its client certificate (mTLS).
    pub peer_name: Option<Arc<str>>,
    /// Refused calls on this connection, which pause its reads ([`crate::tarpit`]).
    pub strikes: Arc<Strikes>,
    /// Whose bytes its reads are, for the bytes quota ([`crate::rate`]).
    pub meter: Arc<ByteMeter>,
}

/// An accepted connection, plain or TLS, with what is known of it.
pub(crate) struct Conn {
    io: Io,
    info: ConnInfo,
    gate: ReadGate,
    slice: ReadSlice,
}

/// Bytes read from one connection since its task last found nothing to read: past `slice`
/// (`--connection-read-slice-bytes`; 0: no limit), its next read says "not now" and wakes the
/// task again, which goes to the back of its worker's queue.
///
/// A connection with a flood of small calls buffered (hundreds of them after a pause of its
/// reads) would otherwise be read, and each call's task spawned, in one poll of its task:
/// another connection that became readable meanwhile, a normal caller's, waits behind all of
/// them. With a slice of 16 KiB it waits behind about one slice of each busy connection.
#[derive(Debug, Default)]
pub(crate) struct ReadSlice {
    slice: usize,
    read: usize,
}

impl ReadSlice {
    pub(crate) fn new(slice: usize) -> Self {
        ReadSlice { slice, read: 0 }
    }

    /// Before a read: `Pending` (the task woken again) when the slice is used up.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.slice > 0 && self.read >= self.slice {
            self.read = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    /// After a read of `n` bytes (`None`: nothing to read now).
    fn count(&mut self, n: Option<usize>) {
        match n {
            Some(n) => self.read = self.read.saturating_add(n),
            None => self.read = 0,
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $e:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($io) => {
                let $io = Pin::new($io);
                $e
            }
            Io::Tls($io) => {
                let $io = Pin::new(&mut **$io);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A connection struck out by refused calls is not read until its pause is over, then
        // read in a trickle for a while.
        let Poll::Ready(limit) = this.gate.poll_open(&this.info.strikes, cx) else {
            return Poll::Pending;
        };
        // A caller past its bytes quota: not read until it has bytes again.
        let now = Instant::now();
        if let Some(wait) = this.info.meter.wait(now)
            && this.gate.wait_until(now + wait, cx).is_pending()
        {
            return Poll::Pending;
        }
        if this.slice.poll_turn(cx).is_pending() {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = match limit {
            None => this.io.poll_read(cx, buf),
            Some(max) => {
                // At most `max` bytes: read into a small buffer, then copied.
                let mut small = [0u8; crate::tarpit::TRICKLE_BYTES];
                let max = max.min(small.len()).min(buf.remaining());
                let mut part = ReadBuf::new(&mut small[..max]);
                let r = this.io.poll_read(cx, &mut part);
                if let Poll::Ready(Ok(())) = r {
                    buf.put_slice(part.filled());
                }
                r
            }
        };
        match &r {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.info.meter.read(n, now);
                this.slice.count(Some(n));
            }
            Poll::Pending => this.slice.count(None),
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The caller's name in a client certificate: its first DNS subject-alternative name, else
/// its common name.
pub(crate) fn peer_name(cert: &[u8]) -> Option<Arc<str>> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                return Some(Arc::from(*dns));
            }
        }
    }
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(Arc::from)
}

/// Accepts connections on `listener`: TCP_NODELAY set, TLS handshakes (when `tls` is set) in
/// tasks of their own, each read in slices of `read_slice` bytes ([`ReadSlice`]).
/// Connections arrive on the returned stream.
pub(crate) fn accept(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    read_slice: usize,
) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                // The server stopped taking connections: stop accepting them.
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: say so, wait a little, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
            }
            let info = ConnInfo {
                remote: Some(remote),
                peer_name: None,
                strikes: Arc::default(),
                meter: Arc::default(),
            };
            let Some(tls) = &tls else {
                if tx
                    .send(Ok(Conn {
                        io: Io::Plain(tcp),
                        info,
                        gate: ReadGate::default(),
                        slice: ReadSlice::new(read_slice),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer_name = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| peer_name(c));
                        let _ = tx
                            .send(Ok(Conn {
                                io: Io::Tls(Box::new(stream)),
                                info: ConnInfo {
                                    remote: Some(remote),
                                    peer_name,
                                    strikes: Arc::default(),
                                    meter: Arc::default(),
                                },
                                gate: ReadGate::default(),
                                slice: ReadSlice::new(read_slice),
                            }))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_used_up_slice_says_not_now_once_wakes_the_task_and_starts_again() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut s = ReadSlice::new(100);
        assert!(s.poll_turn(&mut cx).is_ready());
        s.count(Some(60));
        assert!(s.poll_turn(&mut cx).is_ready(), "60 of 100 bytes read");
        s.count(Some(60));
        assert!(s.poll_turn(&mut cx).is_pending(), "120 of 100 bytes read");
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "the task is woken again"
        );
        assert!(s.poll_turn(&mut cx).is_ready(), "a new slice");
        // Nothing to read ends a slice too.
        s.count(Some(99));
        s.count(None);
        s.count(Some(99));
        assert!(s.poll_turn(&mut cx).is_ready());
        // Off: never says not now.
        let mut off = ReadSlice::new(0);
        off.count(Some(usize::MAX));
        assert!(off.poll_turn(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    }

    /// `n` bytes sent by a client on loopback and read back through a [`Conn`] read in
    /// slices of `slice` bytes, with `strikes`; whether they came back whole and in order.
    async fn round_trip(n: usize, slice: usize, strikes: Arc<Strikes>) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, remote) = listener.accept().await.unwrap();
        let mut conn = Conn {
            io: Io::Plain(tcp),
            info: ConnInfo {
                remote: Some(remote),
                peer_name: None,
                strikes,
                meter: Arc::default(),
            },
            gate: ReadGate::default(),
            slice: ReadSlice::new(slice),
        };
        let sent: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                client.write_all(&sent).await.unwrap();
                client
            })
        };
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut got))
            .await
            .expect("read within the bound")
            .unwrap();
        drop(writer.await.unwrap());
        got == sent
    }

    #[tokio::test]
    async fn a_connection_read_in_slices_loses_and_reorders_nothing() {
        assert!(round_trip(256 * 1024, 1024, Arc::default()).await);
    }

    #[tokio::test]
    async fn a_struck_out_connection_read_in_a_trickle_loses_and_reorders_nothing() {
        let strikes: Arc<Strikes> = Arc::default();
        for _ in 0..crate::tarpit::STRIKES {
            strikes.strike();
        }
        // Paused, then eight trickles of 4 KiB, 10 ms apart.
        assert!(round_trip(32 * 1024, 16 * 1024, strikes).await);
    }
}

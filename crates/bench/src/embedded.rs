//! A gateway started in-process over a synthetic register, for benchmarks and tests.
//!
//! [`register_snapshot`] builds the snapshot of a [`SyntheticRegister`] once and caches it on
//! disk, keyed by the register's size, seed and a fingerprint of its records, so a second run
//! of a benchmark opens the file instead of rebuilding it (and a change to the generator
//! cannot serve a stale one). [`EmbeddedGateway::start`] runs the real server
//! (`cccgate_server::run`) on `127.0.0.1:0` over a directory of snapshots and returns once a
//! snapshot is in force; [`EmbeddedGateway::publish`] drops a newer snapshot in and asks for a
//! reload, the path a snapshot swap takes in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cccgate_core::CertificateRecord;
use cccgate_proto::v1::admin_client::AdminClient;
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{GetStatusRequest, ReloadOutcome, ReloadRequest, WatchChangesRequest};
use cccgate_server::{Config, ServeError};
use cccgate_snapshot::{
    BuildInfo, Snapshot, SnapshotBuilder, SnapshotDir, SnapshotError, file_name,
};
use cccgate_synth::{RegisterSpec, SyntheticRegister};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use xxhash_rust::xxh3::Xxh3;

/// Why the embedded gateway cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A directory or file cannot be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The snapshot cannot be built, written or opened.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The gateway failed.
    #[error("embedded gateway: {0}")]
    Serve(#[from] ServeError),
    /// The gateway did not put a snapshot in force in time, or refused one.
    #[error("embedded gateway: {0}")]
    NotReady(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The default cache of built snapshots: `cccgate-bench` in the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    std::env::temp_dir().join("cccgate-bench")
}

/// A fingerprint of a register's records: what a verdict depends on and more.
pub fn fingerprint(records: &[CertificateRecord]) -> u64 {
    let mut h = Xxh3::new();
    for r in records {
        h.update(&r.number.get().to_le_bytes());
        h.update(&[r.status.code()]);
        h.update(&r.product_code.get().to_le_bytes());
        h.update(&r.expires.days().to_le_bytes());
        h.update(&r.issued.days().to_le_bytes());
        h.update(r.suffix.as_ref().map_or(&[0u8, 0][..], |s| &s[..]));
        h.update(r.producer.as_bytes());
        for m in &r.models {
            h.update(m.as_bytes());
            h.update(&[0]);
        }
        h.update(&[0xff]);
    }
    h.update(&(records.len() as u64).to_le_bytes());
    h.digest()
}

/// The build information of benchmark snapshots: fixed, so the same register always gives
/// the same bytes.
pub fn bench_build_info(sequence: u64) -> BuildInfo {
    BuildInfo {
        sequence,
        source: "synth".to_owned(),
        generated_at: "2026-11-27T00:00:00+08:00".to_owned(),
        built_at_unix_ms: 0,
    }
}

/// A snapshot directory for `register`: `<cache>/register-<certs>-<seed>-<fingerprint>/`
/// holding `snap-1.ccc`, built on first use. Returns the directory. Consumes the register's
/// records (the listing generator must be built before).
pub fn register_snapshot(
    spec: &RegisterSpec,
    register: SyntheticRegister,
    cache_dir: &Path,
) -> Result<PathBuf, EmbeddedError> {
    let fp = fingerprint(&register.records);
    let dir = cache_dir.join(format!("register-{}-{}-{fp:016x}", spec.certs, spec.seed));
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(file_name(1));
    let SyntheticRegister {
        catalogue, records, ..
    } = register;
    Snapshot::open_or_build(&path, move || {
        SnapshotBuilder::from_records(bench_build_info(1), catalogue, records).build()
    })?;
    // A directory served by a benchmark that swapped snapshots in holds newer ones: a new
    // run starts again from sequence 1, and the gateway's high-water mark of the last run
    // (this directory is the benchmark's own) must not refuse it as a rollback.
    SnapshotDir::new(&dir).remove_newer(1)?;
    let mark = dir.join(cccgate_snapshot::HIGH_WATER_FILE);
    match std::fs::remove_file(&mark) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&mark)(e)),
        _ => {}
    }
    Ok(dir)
}

/// Binds `127.0.0.1:0` on the runtime `on`, where the listener will be polled; returns it
/// and the port it got.
async fn bind_local(
    on: &tokio::runtime::Handle,
) -> Result<(TcpListener, SocketAddr), EmbeddedError> {
    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let bind_err = |source| {
        EmbeddedError::Serve(ServeError::Bind {
            addr: listen,
            source,
        })
    };
    let listener = on
        .spawn(TcpListener::bind(listen))
        .await
        .map_err(|e| EmbeddedError::NotReady(format!("bind task failed: {e}")))?
        .map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok((listener, addr))
}

/// The gateway, running in-process.
#[derive(Debug)]
pub struct EmbeddedGateway {
    addr: SocketAddr,
    target: String,
    admin_target: String,
    snapshot_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// Settings of an embedded gateway over `snapshot_dir`: no watching (snapshots change on
/// [`EmbeddedGateway::publish`] only), no metrics endpoint, the default limits.
pub fn embedded_config(snapshot_dir: &Path) -> Config {
    Config {
        snapshot_dir: Some(snapshot_dir.to_path_buf()),
        drop_dir: None,
        watch: false,
        poll_interval: Duration::from_secs(3_600),
        metrics_listen: None,
        decision_log: None,
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

impl EmbeddedGateway {
    /// Starts the gateway with `config` on `127.0.0.1:0`, on the runtime `on`, and waits (at
    /// most `ready_within`) until a snapshot is in force.
    pub async fn start(
        config: Config,
        on: &tokio::runtime::Handle,
        ready_within: Duration,
    ) -> Result<EmbeddedGateway, EmbeddedError> {
        let snapshot_dir = config.snapshot_dir.clone().unwrap_or_default();
        let (listener, addr) = bind_local(on).await?;
        let (admin, admin_addr) = bind_local(on).await?;
        let admin_target = format!("http://{admin_addr}");
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = cccgate_server::Listeners {
            grpc: listener,
            admin: Some(admin),
            metrics: None,
        };
        let task = on.spawn(cccgate_server::run_with(listeners, config, async move {
            let _ = rx.await;
        }));
        let gw = EmbeddedGateway {
            addr,
            admin_target,
            target: format!("http://{addr}"),
            snapshot_dir,
            shutdown: Some(tx),
            task: Some(task),
        };
        gw.wait_ready(ready_within).await?;
        Ok(gw)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `http://127.0.0.1:<port>` of the admin plane.
    pub fn admin_target(&self) -> &str {
        &self.admin_target
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory it serves.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    async fn admin(&self) -> Result<AdminClient<tonic::transport::Channel>, EmbeddedError> {
        AdminClient::connect(self.admin_target.clone())
            .await
            .map_err(|e| {
                EmbeddedError::NotReady(format!("cannot connect to {}: {e}", self.admin_target))
            })
    }

    /// The sequence in force, if any.
    pub async fn sequence(&self) -> Result<Option<u64>, EmbeddedError> {
        let mut admin = self.admin().await?;
        let status = admin
            .get_status(GetStatusRequest {})
            .await
            .map_err(|e| EmbeddedError::NotReady(format!("GetStatus: {}", e.message())))?
            .into_inner();
        Ok(status.snapshot.map(|s| s.sequence))
    }

    async fn wait_ready(&self, within: Duration) -> Result<(), EmbeddedError> {
        let start = Instant::now();
        loop {
            // Polling the status RPC is the readiness check a deployment makes, too.
            if let Ok(Some(_)) = self.sequence().await {
                return Ok(());
            }
            if let Some(task) = &self.task
                && task.is_finished()
            {
                return Err(EmbeddedError::NotReady(
                    "the gateway stopped before a snapshot was in force".into(),
                ));
            }
            if start.elapsed() > within {
                return Err(EmbeddedError::NotReady(format!(
                    "no snapshot in force after {:.0} s (directory {})",
                    within.as_secs_f64(),
                    self.snapshot_dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts `snap-<sequence>.ccc` (already built at `built`) into the served directory (a
    /// hard link, else a copy) and asks the gateway to reload; returns once it is in force.
    pub async fn publish(&self, built: &Path, sequence: u64) -> Result<(), EmbeddedError> {
        let dest = self.snapshot_dir.join(file_name(sequence));
        let tmp = self
            .snapshot_dir
            .join(format!(".{}.tmp", file_name(sequence)));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(built, &tmp).is_err() {
            std::fs::copy(built, &tmp).map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        self.reload_to(sequence).await
    }

    /// Asks the gateway to reload (as `Admin.Reload` does) and checks that `snap-<sequence>.ccc`,
    /// already in the served directory, is then in force.
    pub async fn reload_to(&self, sequence: u64) -> Result<(), EmbeddedError> {
        let mut admin = self.admin().await?;
        let r = admin
            .reload(ReloadRequest {})
            .await
            .map_err(|e| EmbeddedError::NotReady(format!("Reload: {}", e.message())))?
            .into_inner();
        match r.outcome() {
            ReloadOutcome::Loaded if r.snapshot_sequence == sequence => Ok(()),
            _ => Err(EmbeddedError::NotReady(format!(
                "reload of {} gave {:?} (sequence {}): {}",
                self.snapshot_dir.join(file_name(sequence)).display(),
                r.outcome(),
                r.snapshot_sequence,
                r.message
            ))),
        }
    }

    /// Waits (at most `within`) until the gateway's change feed has digested the swap to
    /// `sequence` (its diff against the snapshot before is done and the older snapshot
    /// released). For measuring memory in a steady state, so it asks without being sent the
    /// swap's changes: `WatchChanges` from `sequence` itself, refused as newer than the feed
    /// until the feed has it, then opened with nothing after it to send (a bookmark). Waiting
    /// on a stream from 0 instead received the whole batch when the diff was slower than the
    /// swap interval (71,809 changes at full scale), and a memory sample taken just after
    /// then counted the ~30 MiB of it the gateway's side of the dropped stream still held.
    pub async fn change_feed_reached(
        &self,
        sequence: u64,
        within: Duration,
    ) -> Result<(), EmbeddedError> {
        let wait = async {
            let mut client = ListingCheckClient::connect(self.target.clone())
                .await
                .map_err(|e| {
                    EmbeddedError::NotReady(format!("cannot connect to {}: {e}", self.target))
                })?;
            loop {
                match client
                    .watch_changes(WatchChangesRequest {
                        from_sequence: sequence,
                    })
                    .await
                {
                    Ok(response) => {
                        // The bookmark (where the feed stands), then nothing until the next swap.
                        let mut stream = response.into_inner();
                        return match stream.message().await {
                            Ok(Some(b)) if b.sequence >= sequence => Ok(()),
                            Ok(b) => Err(EmbeddedError::NotReady(format!(
                                "WatchChanges from {sequence} began with {:?}",
                                b.map(|b| b.sequence)
                            ))),
                            Err(e) => Err(EmbeddedError::NotReady(format!(
                                "WatchChanges: {}",
                                e.message()
                            ))),
                        };
                    }
                    // Not in the feed yet ("newer than the snapshot in force here").
                    Err(e)
                        if e.code() == tonic::Code::FailedPrecondition
                            && e.message().contains("newer") =>
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        return Err(EmbeddedError::NotReady(format!(
                            "WatchChanges: {}",
                            e.message()
                        )));
                    }
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| {
                Err(EmbeddedError::NotReady(format!(
                    "the change feed did not reach snapshot {sequence} within {:.0} s",
                    within.as_secs_f64()
                )))
            })
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| EmbeddedError::NotReady(format!("gateway task failed: {e}")))?
                .map_err(EmbeddedError::from),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

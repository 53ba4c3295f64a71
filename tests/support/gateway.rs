//! The real gateway on an ephemeral port, for end-to-end tests, and small registers to serve.
//!
//! [`TestGateway::start`] binds `127.0.0.1:0` before the server runs, so a client can connect
//! at once (the kernel queues the connection): no test sleeps waiting for a port. Settings
//! default to what makes tests deterministic: no file-system watching and a polling interval
//! of an hour, so a snapshot changes only when the test calls `Admin.Reload`.
//!
//! [`Serving::start`] is the one-line version: a gateway serving a register from its own
//! temporary snapshot directory, the snapshot in force when it returns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cccgate_core::{
    Catalogue, CatalogueEntry, CertNumber, CertificateRecord, ConformityMode, Day, ProductCode,
    Status,
};
use cccgate_proto::v1::admin_client::AdminClient;
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{ReloadRequest, ReloadResponse};
use cccgate_server::{Config, ConfigLayer, Listeners, ServeError};
use cccgate_snapshot::{BuildInfo, Snapshot, SnapshotBuilder, file_name, write_atomic};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// A running gateway.
#[derive(Debug)]
pub struct TestGateway {
    /// Its gRPC address (the public plane).
    pub addr: SocketAddr,
    /// Its admin plane's gRPC address.
    pub admin_addr: SocketAddr,
    /// Its `/metrics` address, when started with one.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// A gateway serving a register from its own temporary snapshot directory (removed when
/// dropped). It derefs to its [`TestGateway`].
#[derive(Debug)]
pub struct Serving {
    gateway: TestGateway,
    dir: tempfile::TempDir,
}

impl Serving {
    /// Writes `records` as snapshot `sequence` into a new temporary directory, starts a
    /// gateway over it and returns once that snapshot is in force.
    pub async fn start(sequence: u64, records: &[CertificateRecord]) -> Serving {
        Serving::start_with(sequence, records, ConfigLayer::default()).await
    }

    /// Like [`Serving::start`], with `layer`'s settings on top of [`test_config`]'s.
    pub async fn start_with(
        sequence: u64,
        records: &[CertificateRecord],
        layer: ConfigLayer,
    ) -> Serving {
        let dir = tempfile::tempdir().expect("a temporary directory");
        write_snapshot(dir.path(), sequence, records);
        let gateway = TestGateway::start_in_force(dir.path(), layer, sequence).await;
        Serving { gateway, dir }
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the gateway (see [`TestGateway::stop`]).
    pub async fn stop(self) -> Result<(), ServeError> {
        self.gateway.stop().await
    }
}

impl std::ops::Deref for Serving {
    type Target = TestGateway;
    fn deref(&self) -> &TestGateway {
        &self.gateway
    }
}

impl std::ops::DerefMut for Serving {
    fn deref_mut(&mut self) -> &mut TestGateway {
        &mut self.gateway
    }
}

/// Settings for a test gateway serving `snapshot_dir` (or the embedded sample when `None`):
/// no watching, polling hourly, no metrics endpoint, short shutdown grace.
pub fn test_config(snapshot_dir: Option<&Path>) -> Config {
    test_config_with(snapshot_dir, ConfigLayer::default())
}

/// Like [`test_config`], with `layer` on top.
pub fn test_config_with(snapshot_dir: Option<&Path>, mut layer: ConfigLayer) -> Config {
    layer.snapshot_dir = layer
        .snapshot_dir
        .or_else(|| snapshot_dir.map(Path::to_path_buf));
    layer.watch = layer.watch.or(Some(false));
    layer.poll_interval_ms = layer.poll_interval_ms.or(Some(3_600_000));
    layer.metrics_listen = layer.metrics_listen.or(Some("off".into()));
    layer.shutdown_grace_ms = layer.shutdown_grace_ms.or(Some(5_000));
    Config::resolve(&[layer]).expect("test settings are valid")
}

impl TestGateway {
    /// Starts a gateway over the snapshots in `dir`, with `layer`'s settings on top of
    /// [`test_config`]'s, and returns once snapshot `sequence` is in force.
    pub async fn start_in_force(dir: &Path, layer: ConfigLayer, sequence: u64) -> TestGateway {
        let gateway = TestGateway::start(test_config_with(Some(dir), layer), false).await;
        // The start-up load runs in the background; a reload runs the same serialised pass,
        // so once it returns the snapshot is in force.
        let r = gateway.reload().await;
        assert_eq!(r.snapshot_sequence, sequence, "{}", r.message);
        gateway
    }

    /// One `Admin.Reload` on the admin listener; its answer (the call itself must succeed).
    pub async fn reload(&self) -> ReloadResponse {
        self.admin_client()
            .await
            .reload(ReloadRequest {})
            .await
            .expect("Reload")
            .into_inner()
    }

    /// Starts the gateway on `127.0.0.1:0` (and a metrics endpoint on another ephemeral port
    /// when `with_metrics`).
    pub async fn start(config: Config, with_metrics: bool) -> TestGateway {
        let grpc = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = grpc.local_addr().expect("bound address");
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let admin_addr = admin.local_addr().expect("bound address");
        let metrics = if with_metrics {
            Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0"),
            )
        } else {
            None
        };
        let metrics_addr = metrics.as_ref().map(|m| m.local_addr().expect("bound"));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(cccgate_server::run_with(
            Listeners {
                grpc,
                admin: Some(admin),
                metrics,
            },
            config,
            async move {
                let _ = rx.await;
            },
        ));
        TestGateway {
            addr,
            admin_addr,
            metrics_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A channel to the gateway's public plane.
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    /// A channel to the gateway's admin plane.
    pub async fn admin_channel(&self) -> Channel {
        connect(self.admin_addr).await
    }

    /// A ListingCheck client on a new channel.
    pub async fn check_client(&self) -> ListingCheckClient<Channel> {
        ListingCheckClient::new(self.channel().await)
    }

    /// An Admin client on a new channel to the admin plane.
    pub async fn admin_client(&self) -> AdminClient<Channel> {
        AdminClient::new(self.admin_channel().await)
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for the server to stop.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.begin_shutdown();
        match self.task.take() {
            Some(task) => task.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// The product code most test certificates cover (`0901`, 微型计算机).
pub fn pc_code() -> ProductCode {
    ProductCode::new(901).expect("4 digits")
}

/// A day.
pub fn day(y: i32, m: u32, d: u32) -> Day {
    Day::from_ymd(y, m, d).expect("a real date")
}

/// A catalogue of `0901` and `1606` (certificate) and `1101` (self-declaration).
pub fn test_catalogue() -> Catalogue {
    let entry = |c: u16, mode| {
        let code = ProductCode::new(c).expect("4 digits");
        CatalogueEntry {
            code,
            name: format!("产品{c:04}"),
            category_code: code.category(),
            category_name: "类别".into(),
            mode,
            from: day(2002, 5, 1),
            until: None,
        }
    };
    Catalogue::new(vec![
        entry(901, ConformityMode::Certificate),
        entry(1606, ConformityMode::Certificate),
        entry(1101, ConformityMode::SelfDeclaration),
    ])
    .expect("a consistent catalogue")
}

/// The number of test certificate `serial` under `0901`. A number holds a 6-digit serial, so
/// each million serials moves to the next year of issue (2021, 2022, ...): numbers still
/// ascend with `serial`, for any `u32`.
pub fn cert_number(serial: u32) -> CertNumber {
    let year = 2021 + u16::try_from(serial / 1_000_000).expect("at most 4,294 millions");
    CertNumber::from_parts(year, 1, pc_code(), serial % 1_000_000).expect("in range")
}

/// A certificate record: `serial` under `0901`, with this status, product code and models.
pub fn record(serial: u32, status: Status, product: u16, models: &[&str]) -> CertificateRecord {
    CertificateRecord {
        number: cert_number(serial),
        suffix: None,
        status,
        product_code: ProductCode::new(product).expect("4 digits"),
        product_name: "微型计算机".into(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        applicant: "某某科技有限公司".into(),
        producer: format!("生产者{serial}"),
        factory: "工厂".into(),
        issued: day(2021, 3, 1),
        expires: day(2035, 12, 31),
        status_changed: None,
        status_reason: String::new(),
        body_name: "中国质量认证中心".into(),
    }
}

/// Builds a snapshot of `records` with `sequence`, in memory.
pub fn build_snapshot(sequence: u64, records: &[CertificateRecord]) -> Snapshot {
    let mut b = SnapshotBuilder::new(build_info(sequence), test_catalogue());
    for r in records {
        b.upsert(r.clone());
    }
    Snapshot::from_bytes(b.build().expect("builds")).expect("verifies")
}

fn build_info(sequence: u64) -> BuildInfo {
    BuildInfo {
        sequence,
        source: "test".into(),
        generated_at: "2026-11-27T02:00:00+08:00".into(),
        built_at_unix_ms: 1_795_000_000_000,
    }
}

/// Writes `snap-<sequence>.ccc` of `records` into `dir` atomically and returns its path.
pub fn write_snapshot(dir: &Path, sequence: u64, records: &[CertificateRecord]) -> PathBuf {
    let mut b = SnapshotBuilder::new(build_info(sequence), test_catalogue());
    for r in records {
        b.upsert(r.clone());
    }
    let path = dir.join(file_name(sequence));
    write_atomic(&b.build().expect("builds"), &path).expect("writes");
    path
}

async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gateway")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_numbers_ascend_and_read_back_past_a_million_serials() {
        let serials = [
            1,
            999_999,
            1_000_000,
            1_000_001,
            9_999_999,
            10_000_000,
            u32::MAX,
        ];
        let numbers: Vec<CertNumber> = serials.iter().map(|&s| cert_number(s)).collect();
        assert!(numbers.windows(2).all(|w| w[0].get() < w[1].get()));
        for n in numbers {
            let parsed = CertNumber::normalize(&n.to_string()).expect("a valid number");
            assert_eq!(parsed.number, n);
            assert_eq!(n.product_code(), pc_code());
        }
        assert_eq!(cert_number(1_000_000).get(), 2_022_010_901_000_000);
    }
}

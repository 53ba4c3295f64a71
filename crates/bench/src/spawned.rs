//! The gateway as a `cccgate serve` child process, for benchmarks that must judge the gateway
//! alone: its CPU, its runtime and its memory are its own, and the benchmark's callers reach it
//! over loopback as another machine's would (see [`crate::attack`]).
//!
//! The child listens on two loopback ports picked for it (bound to port 0 and released just
//! before it starts), serves the snapshot directory given without watching it, with no metrics
//! listener, and is killed and reaped when the [`SpawnedGateway`] is dropped. Its standard
//! error goes to a log file, quoted when it fails to become ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cccgate_proto::v1::GetStatusRequest;
use cccgate_proto::v1::admin_client::AdminClient;

use crate::setup::BenchError;

/// A `cccgate serve` child process.
#[derive(Debug)]
pub struct SpawnedGateway {
    child: Child,
    addr: SocketAddr,
    admin_target: String,
    snapshot_dir: PathBuf,
}

/// A loopback port free now (the listener bound to it is closed before this returns).
fn free_port() -> Result<SocketAddr, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::Invalid(format!("cannot bind 127.0.0.1:0: {e}")))?;
    l.local_addr()
        .map_err(|e| BenchError::Invalid(format!("the address of 127.0.0.1:0: {e}")))
}

/// The arguments of `cccgate serve` over `snapshot_dir` on `addr` and `admin`, before `extra`.
fn serve_args(snapshot_dir: &Path, addr: SocketAddr, admin: SocketAddr) -> Vec<String> {
    [
        "serve",
        "--snapshot-dir",
        &snapshot_dir.to_string_lossy(),
        "--listen",
        &addr.to_string(),
        "--admin-listen",
        &admin.to_string(),
        "--metrics-listen",
        "off",
        "--watch",
        "false",
        "--poll-interval-ms",
        "3600000",
        "--shutdown-grace-ms",
        "5000",
    ]
    .map(str::to_owned)
    .to_vec()
}

impl SpawnedGateway {
    /// Starts `program serve` (the `cccgate` binary) over `snapshot_dir` with the flags of
    /// `extra` (`["--max-message-bytes", "16777216", ...]`) and waits, at most `ready_within`,
    /// until a snapshot is in force (`Admin.GetStatus`, as a deployment's readiness check).
    /// Its standard error goes to `log`.
    pub async fn start(
        program: &Path,
        snapshot_dir: &Path,
        extra: &[String],
        log: &Path,
        ready_within: Duration,
    ) -> Result<SpawnedGateway, BenchError> {
        let (addr, admin) = (free_port()?, free_port()?);
        let stderr = std::fs::File::create(log)
            .map_err(|e| BenchError::Invalid(format!("{}: {e}", log.display())))?;
        let child = Command::new(program)
            .args(serve_args(snapshot_dir, addr, admin))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                BenchError::Invalid(format!(
                    "cannot start the gateway process {}: {e}",
                    program.display()
                ))
            })?;
        let mut gw = SpawnedGateway {
            child,
            addr,
            admin_target: format!("http://{admin}"),
            snapshot_dir: snapshot_dir.to_path_buf(),
        };
        gw.wait_ready(ready_within, log).await?;
        Ok(gw)
    }

    async fn wait_ready(&mut self, within: Duration, log: &Path) -> Result<(), BenchError> {
        let start = Instant::now();
        let failed = |why: String| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            BenchError::Invalid(format!(
                "the gateway process {why}; the end of {}: {}",
                log.display(),
                tail.join(" | ")
            ))
        };
        loop {
            if let Ok(mut admin) = AdminClient::connect(self.admin_target.clone()).await
                && let Ok(s) = admin.get_status(GetStatusRequest {}).await
                && s.into_inner().snapshot.is_some()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(failed(format!("ended ({status}) before it was ready")));
            }
            if start.elapsed() > within {
                return Err(failed(format!(
                    "had no snapshot in force after {:.0} s",
                    within.as_secs_f64()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its public plane's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` of its admin plane.
    pub fn admin_target(&self) -> &str {
        &self.admin_target
    }

    /// The directory it serves.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }
}

impl Drop for SpawnedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_serves_the_directory_on_the_ports_given_without_watching_or_metrics() {
        let addr: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let admin: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let args = serve_args(Path::new("/tmp/snaps"), addr, admin);
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(args[0], "serve");
        assert_eq!(after("--snapshot-dir"), "/tmp/snaps");
        assert_eq!(after("--listen"), "127.0.0.1:5001");
        assert_eq!(after("--admin-listen"), "127.0.0.1:5002");
        assert_eq!(after("--metrics-listen"), "off");
        assert_eq!(after("--watch"), "false");
    }

    #[test]
    fn a_free_port_is_on_loopback_and_not_zero() {
        let a = free_port().unwrap();
        assert!(a.ip().is_loopback());
        assert_ne!(a.port(), 0);
    }

    #[tokio::test]
    async fn a_program_that_is_not_a_gateway_fails_with_its_own_words() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gw.log");
        // `sh serve ...` is not a gateway: it ends at once, and the error says so.
        let err = SpawnedGateway::start(
            Path::new("/bin/sh"),
            dir.path(),
            &[],
            &log,
            Duration::from_secs(30),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("ended"), "{err}");
        assert!(err.contains("gw.log"), "{err}");
    }
}

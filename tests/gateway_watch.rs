//! The reload watcher, end to end: a snapshot that lands in the directory is put in force by
//! file-system events alone, or by polling alone, with no `Admin.Reload` call.
//!
//! These tests wait for something the operating system delivers (an inotify event, a polling
//! tick), so they look at `Admin.GetStatus` until the new sequence is in force, with a bound on
//! how long they look; they assert what is loaded, never how fast.

use std::time::Duration;

use cccgate_core::Status;
use cccgate_e2e::gateway::{TestGateway, record, test_config_with, write_snapshot};
use cccgate_proto::v1::GetStatusRequest;
use cccgate_server::ConfigLayer;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A generous bound: a stuck watcher fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(60);

async fn wait_for_sequence(gw: &TestGateway, sequence: u64) {
    let mut admin = gw.admin_client().await;
    let found = tokio::time::timeout(BOUND, async {
        loop {
            let st = admin
                .get_status(GetStatusRequest {})
                .await
                .expect("GetStatus")
                .into_inner();
            if st.snapshot.is_some_and(|s| s.sequence >= sequence) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "snapshot {sequence} was never put in force");
}

async fn wait_serving(gw: &TestGateway) {
    let mut health = HealthClient::new(gw.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let serving = tokio::time::timeout(BOUND, async {
        while let Some(s) = watch.message().await.expect("health stream") {
            if s.status() == ServingStatus::Serving {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true));
}

#[tokio::test]
async fn a_snapshot_that_lands_is_put_in_force_by_file_system_events() {
    let dir = tempfile::tempdir().unwrap();
    let certs = [record(1, Status::Valid, 901, &["X1"])];
    write_snapshot(dir.path(), 5, &certs);
    // Polling hourly: only an event can load the next snapshot within the test.
    let config = test_config_with(
        Some(dir.path()),
        ConfigLayer {
            watch: Some(true),
            poll_interval_ms: Some(3_600_000),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    // The watcher is registered before the start-up pass that makes the gateway serve.
    wait_serving(&gw).await;
    write_snapshot(dir.path(), 6, &certs);
    wait_for_sequence(&gw, 6).await;
}

#[tokio::test]
async fn polling_puts_a_snapshot_in_force_without_file_system_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config_with(
        Some(dir.path()),
        ConfigLayer {
            watch: Some(false),
            poll_interval_ms: Some(50),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    write_snapshot(dir.path(), 3, &[record(1, Status::Valid, 901, &["X1"])]);
    wait_serving(&gw).await;
    wait_for_sequence(&gw, 3).await;
}

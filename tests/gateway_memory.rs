//! Resident memory under attack: the real gateway in this process, attacked over loopback
//! with messages built to blow up a decoder (millions of empty listings, largest valid
//! batches), while `/proc/self/status` is read. One test per file runs at a time here, so the
//! peak (`VmHWM`, reset before each attack) is this attack's.

use std::time::Duration;

use bytes::Bytes;
use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{TestGateway, record, test_config_with, write_snapshot};
use cccgate_e2e::raw;
use cccgate_proto::v1::{CheckBatchRequest, Listing, ReloadRequest};
use cccgate_server::ConfigLayer;
use prost::Message;
use tonic::Code;

const MIB: u64 = 1024 * 1024;

async fn gateway(layer: ConfigLayer) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(
        dir.path(),
        10,
        &[record(1, CertStatus::Valid, 901, &["X1"])],
    );
    let gw = TestGateway::start(test_config_with(Some(dir.path()), layer), false).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    (gw, dir)
}

/// Sends `body` to CheckBatch `n` times at once; returns each call's code and message.
async fn attack(gw: &TestGateway, body: Bytes, n: usize) -> Vec<(Code, String)> {
    let mut calls = Vec::new();
    for _ in 0..n {
        let channel = gw.channel().await;
        let body = body.clone();
        calls.push(tokio::spawn(async move {
            raw::unary(channel, "/cccgate.v1.ListingCheck/CheckBatch", body, &[]).await
        }));
    }
    let mut out = Vec::new();
    for c in calls {
        let r = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("answered within 60 s")
            .expect("no panic");
        out.push(match r {
            Ok(_) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_owned()),
        });
    }
    out
}

fn largest_listing(i: usize) -> Listing {
    Listing {
        listing_id: format!("{i:0>128}"),
        merchant_id: "m".repeat(128),
        product_code: "0901".into(),
        certificate_number: "3".repeat(128),
        model: "x".repeat(256),
        event_time: "2026-11-27T10:00:00+08:00".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_grow_resident_memory_by_at_most_256_mib() {
    // 16 MiB messages are let through the size limit, so the decoder itself meets them.
    let (gw, _dir) = gateway(ConfigLayer {
        max_message_bytes: Some(16 << 20),
        ..Default::default()
    })
    .await;

    // 1. Four concurrent 16 MiB messages of 8,388,608 empty listings each.
    let empty = raw::empty_listings(8 << 20);
    let (before, _) = raw::rss();
    raw::reset_peak();
    let got = attack(&gw, empty.clone(), 4).await;
    let (_, peak) = raw::rss();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "4 x 16 MiB of empty listings: {got:?}; peak growth {} MiB",
        growth / MIB
    );
    assert!(
        got.iter()
            .all(|(c, _)| matches!(c, Code::InvalidArgument | Code::ResourceExhausted)),
        "{got:?}"
    );
    assert!(
        got.iter().any(|(c, m)| *c == Code::InvalidArgument
            && m.contains("listings in one message, over the limit of 10000")
            && m.contains("refused as it arrived")),
        "{got:?}"
    );
    assert!(growth <= 256 * MIB, "grew {} MiB", growth / MIB);
    drop(empty);

    // 2. Four concurrent largest valid batches: 10,000 listings at the largest field sizes.
    let batch = CheckBatchRequest {
        listings: (0..10_000).map(largest_listing).collect(),
        min_snapshot_sequence: 0,
    };
    let body = Bytes::from(batch.encode_to_vec());
    drop(batch);
    let (before, _) = raw::rss();
    raw::reset_peak();
    let got = attack(&gw, body, 4).await;
    let (_, peak) = raw::rss();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "4 x largest batch: {got:?}; peak growth {} MiB",
        growth / MIB
    );
    let ok = got.iter().filter(|(c, _)| *c == Code::Ok).count();
    assert!(
        ok >= 2,
        "the caller's share fits two largest batches: {got:?}"
    );
    assert!(
        got.iter()
            .all(|(c, _)| matches!(c, Code::Ok | Code::ResourceExhausted)),
        "{got:?}"
    );
    assert!(growth <= 256 * MIB, "grew {} MiB", growth / MIB);
}

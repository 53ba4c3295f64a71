//! `cccgate bench grpc` at a small size in the test suite: every mode against the embedded
//! gateway, every verdict the one expected and no errors; the swap mode swaps snapshots in
//! under load without a failed or changed answer and reports memory; against a real gateway
//! that closes its connections at a short maximum age, a cut stream's call is sent again and
//! none fails. Speed is not checked.

use std::time::Duration;

use cccgate_bench::GatewayChoice;
use cccgate_bench::embedded::register_snapshot;
use cccgate_bench::grpc::{GrpcConfig, GrpcMode, run_grpc_blocking};
use cccgate_client::progress::Mode;
use cccgate_e2e::gateway::TestGateway;
use cccgate_server::ConfigLayer;
use cccgate_synth::RegisterSpec;

fn small(mode: GrpcMode, cache: &std::path::Path) -> GrpcConfig {
    GrpcConfig {
        gateway: GatewayChoice::Embedded {
            cache_dir: cache.to_path_buf(),
        },
        register: RegisterSpec {
            certs: 5_000,
            seed: 9,
            ..RegisterSpec::default()
        },
        checks: 6_000,
        chunk: 250,
        concurrency: 4,
        progress: Mode::Off,
        ..GrpcConfig::new(mode)
    }
}

#[test]
fn every_mode_answers_every_listing_with_its_expected_reason() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [GrpcMode::Stream, GrpcMode::Batch, GrpcMode::Unary] {
        let mut cfg = small(mode, tmp.path());
        if mode == GrpcMode::Unary {
            cfg.checks = 600;
            cfg.rate = Some(5_000.0);
        }
        let r = run_grpc_blocking(&cfg, 2, None).unwrap();
        assert_eq!(r.checks, cfg.checks, "{r}");
        assert_eq!(r.stats.errors(), 0, "{r}");
        assert_eq!(r.stats.mismatches, 0, "{r}");
        let calls = if mode == GrpcMode::Unary {
            cfg.checks
        } else {
            cfg.checks.div_ceil(cfg.chunk as u64)
        };
        assert!(r.stats.calls >= calls, "{} < {calls}", r.stats.calls);
        let line = r.last_line();
        assert!(line.starts_with(&format!("grpc mode={mode} checks={} seconds=", cfg.checks)));
        assert!(
            line.contains(" p50_us=") && line.contains(" p99_us=") && line.contains(" p999_us=")
        );
    }
}

#[test]
fn snapshots_swapped_in_under_load_change_no_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = GrpcConfig {
        swaps: 3,
        swap_every: Duration::from_millis(300),
        rate: Some(20_000.0),
        ..small(GrpcMode::Swap, tmp.path())
    };
    let r = run_grpc_blocking(&cfg, 2, None).unwrap();
    let m = r.memory.expect("swap mode reports memory");
    assert_eq!(m.swaps, 3);
    assert!(m.snapshot_bytes > 0);
    assert!(r.checks > 0);
    assert_eq!(r.stats.errors(), 0, "{r}");
    assert_eq!(r.stats.mismatches, 0, "{r}");
    // No response mixed two snapshots, and the load saw the first snapshot and the last swap.
    assert_eq!(r.stats.torn, 0, "{r}");
    assert_eq!(r.stats.sequences, (1, 4), "{r}");
    // Calls overlapped the swaps and were measured apart (the latency is always reported in
    // swap mode; its sample count is what says calls landed there).
    let during = r
        .latency_swap
        .expect("swap mode reports latency during swaps");
    assert!(during.samples > 0, "no call overlapped a swap: {r}");
    assert_eq!(
        during.samples + r.latency.samples,
        r.stats.calls,
        "every call is measured once"
    );
}

#[test]
fn swap_mode_needs_the_embedded_gateway() {
    let cfg = GrpcConfig {
        gateway: GatewayChoice::Target("http://127.0.0.1:1".into()),
        ..GrpcConfig::new(GrpcMode::Swap)
    };
    let err = run_grpc_blocking(&cfg, 1, None).unwrap_err();
    assert!(err.to_string().contains("--embedded"), "{err}");
}

/// `bench grpc --target URL --mode stream` against a real gateway whose connections are closed
/// at a short maximum age: each stream is cut at the end of the grace with its connection,
/// and the bench sends the cut call again on a new stream (a new connection) as a gRPC client
/// retries UNAVAILABLE, so no call fails and every verdict is still the expected one.
#[test]
fn a_stream_cut_at_its_connections_maximum_age_is_sent_again_and_no_call_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let register = RegisterSpec {
        certs: 5_000,
        seed: 9,
        ..RegisterSpec::default()
    };
    let dir = register_snapshot(&register, register.generate(), tmp.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(async {
        let layer = ConfigLayer {
            max_connection_age_ms: Some(1_000),
            max_connection_age_grace_ms: Some(300),
            ..ConfigLayer::default()
        };
        TestGateway::start_in_force(&dir, layer, 1).await
    });
    // Four seconds of paced streams on two connections: each connection is closed about every
    // 1.3 s (age and grace), with streams open on it.
    let cfg = GrpcConfig {
        gateway: GatewayChoice::Target(format!("http://{}", gw.addr)),
        register,
        seconds: Some(4.0),
        rate: Some(20_000.0),
        chunk: 100,
        concurrency: 4,
        connections: 2,
        progress: Mode::Off,
        ..GrpcConfig::new(GrpcMode::Stream)
    };
    let r = run_grpc_blocking(&cfg, 2, None).unwrap();
    assert!(r.checks > 0, "{r}");
    assert_eq!(r.stats.failed_calls, 0, "{r}");
    assert_eq!(r.stats.errors(), 0, "{r}");
    assert_eq!(r.stats.mismatches, 0, "{r}");
    // The streams were cut and their calls sent again (the connections were renewed), and
    // the report says so.
    assert!(r.stats.resent_calls > 0, "no stream was cut: {r}");
    assert!(
        r.to_string().contains(&format!(
            "{} calls sent again on a new stream",
            r.stats.resent_calls
        )),
        "{r}"
    );
    // Every call is answered once: a resent call is not counted twice.
    assert_eq!(r.checks, r.stats.calls * cfg.chunk as u64, "{r}");
    rt.block_on(gw.stop()).unwrap();
}

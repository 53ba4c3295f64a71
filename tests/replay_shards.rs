//! A replay split into shards (`replay --shard I/N`, as the Kubernetes Indexed Job in
//! `deploy/k8s/replay` runs it) handles every record exactly once, and the shards' summaries
//! merged (`replay --merge-summaries`) equal the summary of one whole run, timing apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cccgate_client::merge::merge_summary_files;
use cccgate_client::progress::Mode;
use cccgate_client::replay::{ReplayConfig, ReplayError, replay};
use cccgate_e2e::gateway::{TestGateway, test_config};
use cccgate_proto::v1::ReloadRequest;
use cccgate_snapshot::{BuildInfo, SnapshotBuilder, file_name, write_atomic};
use cccgate_synth::{ListingGenerator, Profile, RegisterSpec};
use serde_json::Value;

/// A gateway serving a small synthetic register, and an input file of `n` of its listings with
/// a malformed line every 97 records and a bad request (no merchant) every 211.
async fn setup(dir: &Path, n: usize) -> (TestGateway, PathBuf) {
    let spec = RegisterSpec {
        certs: 2_000,
        seed: 5,
        ..RegisterSpec::default()
    };
    let register = spec.generate();
    let mut text = String::new();
    for (i, g) in ListingGenerator::new(&register, Profile::Y2025, 9)
        .take(n)
        .enumerate()
    {
        if i % 97 == 3 {
            text.push_str("{not json\n");
        }
        let mut event = g.event;
        if i % 211 == 7 {
            event.merchant_id.clear();
        }
        text.push_str(&serde_json::to_string(&event).unwrap());
        text.push('\n');
    }
    let input = dir.join("listings.jsonl");
    std::fs::write(&input, text).unwrap();

    let snaps = dir.join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let info = BuildInfo {
        sequence: 3,
        source: "synth".into(),
        generated_at: "2026-11-27T02:00:00+08:00".into(),
        built_at_unix_ms: 1_795_000_000_000,
    };
    let bytes = SnapshotBuilder::from_records(info, register.catalogue, register.records)
        .build()
        .unwrap();
    write_atomic(&bytes, &snaps.join(file_name(3))).unwrap();
    let gw = TestGateway::start(test_config(Some(&snaps)), false).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .unwrap();
    (gw, input)
}

fn config(gw: &TestGateway, input: &Path, out: &Path, shard: Option<(u64, u64)>) -> ReplayConfig {
    ReplayConfig {
        chunk: 50,
        concurrency: 3,
        progress: Mode::Off,
        shard,
        ..ReplayConfig::new(&format!("http://{}", gw.addr), input, out)
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The fields of a summary that do not depend on timing or on how the run was split.
fn comparable(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    for k in [
        "seconds",
        "records_per_sec",
        "latency_us",
        "latency_histogram_us",
        "concurrency",
        "shard",
        "merged_shards",
    ] {
        assert!(o.remove(k).is_some(), "a summary has {k}");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_answer_every_record_once_and_their_summaries_merge_into_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, input) = setup(dir.path(), 3_000).await;

    let whole_out = dir.path().join("whole.jsonl");
    let whole = replay(&config(&gw, &input, &whole_out, None))
        .await
        .unwrap();
    assert!(whole.stopped.is_none());
    let whole_lines = lines(&whole_out);
    assert_eq!(whole.summary.records, whole_lines.len() as u64);
    assert!(whole.summary.bad_lines >= 30 && whole.summary.bad_requests >= 14);

    const N: u64 = 3;
    let mut summaries = Vec::new();
    let mut by_line: BTreeMap<String, usize> = BTreeMap::new();
    let mut shard_records = 0;
    for i in 0..N {
        let out = dir.path().join(format!("shard-{i}.jsonl"));
        let r = replay(&config(&gw, &input, &out, Some((i, N))))
            .await
            .unwrap();
        assert!(r.stopped.is_none());
        assert_eq!(
            r.summary.shard.as_deref(),
            Some(format!("{i}/{N}").as_str())
        );
        let got = lines(&out);
        assert!(
            !got.is_empty() && got.len() < whole_lines.len(),
            "shard {i}"
        );
        shard_records += got.len();
        for l in got {
            *by_line.entry(l.to_string()).or_default() += 1;
        }
        let path = dir.path().join(format!("summary-{i}.json"));
        std::fs::write(&path, serde_json::to_vec(&r.summary).unwrap()).unwrap();
        summaries.push(path);
    }
    // Every verdict line of the whole run comes from exactly one shard.
    assert_eq!(shard_records, whole_lines.len());
    let mut whole_by_line: BTreeMap<String, usize> = BTreeMap::new();
    for l in &whole_lines {
        *whole_by_line.entry(l.to_string()).or_default() += 1;
    }
    assert_eq!(by_line, whole_by_line);

    // Merged in any order: equal to the whole run's summary.
    summaries.reverse();
    let merged = merge_summary_files(&summaries).unwrap();
    assert_eq!(merged.merged_shards, N);
    assert_eq!(merged.latency_us.samples, {
        // Every call of every shard is in the merged histogram.
        let mut calls = 0;
        for p in &summaries {
            let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            calls += v["latency_us"]["samples"].as_u64().unwrap();
        }
        calls
    });
    assert_eq!(
        comparable(serde_json::to_value(&merged).unwrap()),
        comparable(serde_json::to_value(&whole.summary).unwrap())
    );

    // An incomplete or doubled set of shards, or a whole run, is refused with the reason.
    let err = merge_summary_files(&summaries[..2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    let doubled = [
        summaries[0].clone(),
        summaries[0].clone(),
        summaries[1].clone(),
    ];
    let err = merge_summary_files(&doubled).unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    let whole_summary = dir.path().join("whole.json");
    std::fs::write(&whole_summary, serde_json::to_vec(&whole.summary).unwrap()).unwrap();
    let err = merge_summary_files(&[whole_summary])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not of a shard"), "{err}");

    // A shard cannot be resumed with --skip (its records are not a prefix of the input).
    let mut cfg = config(&gw, &input, &dir.path().join("x.jsonl"), Some((0, N)));
    cfg.skip = 5;
    assert!(matches!(replay(&cfg).await, Err(ReplayError::Shard(_))));
    gw.stop().await.unwrap();
}

//! A season of drops in bounded disk: 100 feed drops published one after the other, through
//! the loader (`cccgate load build --keep-snapshots N` into a served directory) and through a
//! gateway that builds them itself (`--drop-dir` with `--keep-snapshots N`). After every
//! drop the snapshot directory holds at most N snapshots; at the end it holds exactly the N
//! newest, and the gateway serves the newest: its verdicts name it and follow its register.
//!
//! Small registers (four certificates a drop), so the 100 drops take seconds. Each drop `k`
//! holds certificates 1 to 3 and one of its own (`1000 + k`): a listing citing drop 100's own
//! certificate is valid on snapshot 100 only. The gateway is asked to reload after each drop
//! (`Admin.Reload`, as an operator or the loader job would), so nothing waits on a timer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cccgate_bench::embedded::{EmbeddedGateway, embedded_config};
use cccgate_loader::{DropHeader, DropWriter, FileKind};
use cccgate_snapshot::parse_file_name;

const DROPS: u64 = 100;
const KEEP: usize = 3;

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
";

const HEADER: &str = "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构";

fn number(i: u64) -> String {
    format!("20210109010{i:05}")
}

/// Drop `k`: certificates 1 to 3 and `1000 + k`, all valid.
fn write_drop(root: &Path, k: u64) -> PathBuf {
    let rows: Vec<String> = [1, 2, 3, 1000 + k]
        .iter()
        .map(|&i| {
            format!(
                "{},有效,0901,微型计算机,X{i},联想,联想,联想合肥,2021-03-01,2031-02-28,,,CQC",
                number(i)
            )
        })
        .collect();
    let mut w = DropWriter::create(&root.join(format!("drop-{k}")), DropHeader::full(k)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &format!("{HEADER}\n{}\n", rows.join("\n")),
    )
    .unwrap();
    w.finish().unwrap()
}

fn cccgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cccgate"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sequences of the snapshot files in `dir`, sorted, and every other name in it.
fn contents(dir: &Path) -> (Vec<u64>, Vec<String>) {
    let (mut snaps, mut other) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        match parse_file_name(&name) {
            Some(seq) => snaps.push(seq),
            None => other.push(name),
        }
    }
    snaps.sort_unstable();
    other.sort();
    (snaps, other)
}

/// One listing citing certificate `1000 + DROPS`, replayed against `target`: the verdict
/// line.
fn check_newest(target: &str, tmp: &Path) -> serde_json::Value {
    let input = tmp.join("newest.jsonl");
    let out = tmp.join("newest-out.jsonl");
    let listing = serde_json::json!({
        "listing_id": "L-newest",
        "merchant_id": "M1",
        "product_code": "0901",
        "certificate_number": number(1000 + DROPS),
        "model": format!("X{}", 1000 + DROPS),
        "event_time": "2026-06-01T10:00:00+08:00",
    });
    std::fs::write(&input, format!("{listing}\n")).unwrap();
    let o = cccgate(&[
        "replay",
        "--target",
        target,
        "--input",
        s(&input),
        "--out",
        s(&out),
        "--progress",
        "off",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    serde_json::from_str(text.lines().next().expect("one verdict line")).unwrap()
}

fn assert_newest_serving(v: &serde_json::Value) {
    assert_eq!(v["snapshot_sequence"], DROPS, "{v}");
    assert_eq!(v["decision"], "ALLOW", "{v}");
    assert_eq!(v["reason"], "CERTIFICATE_VALID", "{v}");
}

#[test]
fn a_hundred_drops_through_the_loader_leave_n_snapshots_and_the_newest_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let drops = tmp.path().join("drops");
    let snaps = tmp.path().join("snaps");
    let keep = KEEP.to_string();
    let build = |k: u64| {
        let drop = write_drop(&drops, k);
        let o = cccgate(&[
            "load",
            "build",
            "--drop",
            s(&drop),
            "--out",
            s(&snaps),
            "--keep-snapshots",
            &keep,
        ]);
        assert!(
            o.status.success(),
            "drop {k}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    build(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gw = rt
        .block_on(EmbeddedGateway::start(
            embedded_config(&snaps),
            rt.handle(),
            Duration::from_secs(60),
        ))
        .unwrap();
    for k in 2..=DROPS {
        build(k);
        let (seqs, _) = contents(&snaps);
        assert!(seqs.len() <= KEEP, "after drop {k}: {seqs:?}");
        assert_eq!(seqs.last(), Some(&k), "after drop {k}");
        // The gateway takes each one up while the loader prunes behind it.
        rt.block_on(gw.reload_to(k)).unwrap();
    }
    let (seqs, other) = contents(&snaps);
    assert_eq!(seqs, [DROPS - 2, DROPS - 1, DROPS]);
    // No reject files or temporaries left behind (the high-water mark is the gateway's).
    assert!(
        other.iter().all(|n| n == cccgate_snapshot::HIGH_WATER_FILE),
        "{other:?}"
    );
    assert_newest_serving(&check_newest(gw.target(), tmp.path()));
    rt.block_on(gw.stop()).unwrap();
}

#[test]
fn a_hundred_drops_into_a_drop_dir_gateway_leave_n_snapshots_and_the_newest_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let drops = tmp.path().join("drops");
    let snaps = tmp.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    write_drop(&drops, 1);
    let mut config = embedded_config(&snaps);
    config.drop_dir = Some(drops.clone());
    config.keep_snapshots = Some(KEEP);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gw = rt
        .block_on(EmbeddedGateway::start(
            config,
            rt.handle(),
            Duration::from_secs(60),
        ))
        .unwrap();
    for k in 2..=DROPS {
        write_drop(&drops, k);
        rt.block_on(gw.reload_to(k)).unwrap();
        let (seqs, _) = contents(&snaps);
        assert!(seqs.len() <= KEEP, "after drop {k}: {seqs:?}");
        assert_eq!(seqs.last(), Some(&k), "after drop {k}");
    }
    let (seqs, _) = contents(&snaps);
    assert_eq!(seqs, [DROPS - 2, DROPS - 1, DROPS]);
    assert_newest_serving(&check_newest(gw.target(), tmp.path()));
    rt.block_on(gw.stop()).unwrap();
}

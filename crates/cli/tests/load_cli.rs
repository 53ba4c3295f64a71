//! `cccgate load` and `cccgate feed` as a user runs them: exit statuses, what is printed,
//! what is (and is not) written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cccgate_loader::{DropHeader, DropWriter, FileKind};

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
0907,移动电源,09,信息技术设备,证书,2024-08-01,
";

const HEADER: &str = "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构";

fn row(i: u64, status: &str) -> String {
    format!(
        "20210109010{i:05},{status},0901,微型计算机,X{i}；Y{i},联想,联想,联想合肥,2021-03-01,2031-02-28,,,CQC"
    )
}

fn write_drop(dir: &Path, header: DropHeader, rows: &[String]) -> PathBuf {
    let mut w = DropWriter::create(dir, header).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    let text = format!("{HEADER}\n{}\n", rows.join("\n"));
    w.csv_file("certificates.csv", FileKind::Certificates, &text)
        .unwrap();
    w.finish().unwrap()
}

fn rows(n: u64) -> Vec<String> {
    (1..=n).map(|i| row(i, "有效")).collect()
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn build_writes_the_snapshot_and_prints_what_it_built() {
    let t = tempfile::tempdir().unwrap();
    let drop = write_drop(&t.path().join("drop-1"), DropHeader::full(1), &rows(10));
    let out = t.path().join("snaps");
    let o = cccgate(&["load", "build", "--drop", s(&drop), "--out", s(&out)]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.join("snap-1.ccc").is_file());
    assert!(stdout.contains("content id:"), "{stdout}");
    assert!(stdout.contains("certificates: 10 (有效 10,"), "{stdout}");
    assert!(stdout.contains("09 信息技术设备"), "{stdout}");
    assert!(stdout.contains("set aside:   0 bad rows"), "{stdout}");

    let v = cccgate(&["load", "verify", s(&out.join("snap-1.ccc"))]);
    assert!(v.status.success());
    assert!(text(&v.stdout).starts_with("ok: "));
}

#[test]
fn refused_drop_exits_non_zero_names_the_row_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    let good = write_drop(&t.path().join("d1"), DropHeader::full(1), &rows(10));
    assert!(
        cccgate(&["load", "build", "--drop", s(&good), "--out", s(&out)])
            .status
            .success()
    );
    let before = std::fs::read(out.join("snap-1.ccc")).unwrap();

    let mut bad = rows(11);
    bad[6] = row(7, "有 效");
    let drop = write_drop(&t.path().join("d2"), DropHeader::full(2), &bad);
    let o = cccgate(&["load", "build", "--drop", s(&drop), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("certificates.csv line 8, 证书状态: unknown status \"有 效\""),
        "{stderr}"
    );
    assert!(stderr.contains("nothing written"), "{stderr}");
    assert!(!out.join("snap-2.ccc").exists());
    assert_eq!(std::fs::read(out.join("snap-1.ccc")).unwrap(), before);

    // With an allowance, the row goes to the reject file and the snapshot is built.
    let o = cccgate(&[
        "load",
        "build",
        "--drop",
        s(&drop),
        "--out",
        s(&out),
        "--max-bad-rows",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let reject = std::fs::read_to_string(out.join("reject-2.csv")).unwrap();
    assert!(
        reject.contains("certificates.csv,8,证书状态,\"unknown status"),
        "{reject}"
    );
}

#[test]
fn stale_drop_is_skipped_with_exit_zero() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    let drop = write_drop(&t.path().join("d"), DropHeader::full(3), &rows(3));
    assert!(
        cccgate(&["load", "build", "--drop", s(&drop), "--out", s(&out)])
            .status
            .success()
    );
    let o = cccgate(&["load", "build", "--drop", s(&drop), "--out", s(&out)]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("skipped: drop"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn delta_uses_the_newest_snapshot_in_the_output_directory() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    let full = write_drop(&t.path().join("f"), DropHeader::full(1), &rows(40));
    assert!(
        cccgate(&["load", "build", "--drop", s(&full), "--out", s(&out)])
            .status
            .success()
    );
    let delta = write_drop(
        &t.path().join("d"),
        DropHeader::delta(2, 1),
        &[row(2, "撤销"), row(41, "有效")],
    );
    let o = cccgate(&["load", "build", "--drop", s(&delta), "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("certificates: 41 (有效 40, 暂停 0, 撤销 1,"));
    assert!(
        text(&o.stdout).contains("delta guard: 1 certificates change validity"),
        "{}",
        text(&o.stdout)
    );

    let jsonl = t.path().join("diff.jsonl");
    let o = cccgate(&[
        "load",
        "diff",
        s(&out.join("snap-1.ccc")),
        s(&out.join("snap-2.ccc")),
        "--out",
        s(&jsonl),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success());
    assert!(stdout.contains("added:          1"), "{stdout}");
    assert!(stdout.contains("removed:        0"), "{stdout}");
    assert!(stdout.contains("changed status: 1"), "{stdout}");
    assert!(stdout.contains("有效 -> 撤销: 1"), "{stdout}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["change"], "status");
    assert_eq!(lines[0]["number"], "2021010901000002");
    assert_eq!(lines[0]["old_status"], "VALID");
    assert_eq!(lines[1]["change"], "added");

    // A delta whose base is not in force.
    let stray = write_drop(&t.path().join("s"), DropHeader::delta(4, 3), &rows(1));
    let o = cccgate(&["load", "build", "--drop", s(&stray), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("applies on sequence 3 but sequence 2 is in force"));
}

#[test]
fn inspect_shows_header_counts_and_one_certificate() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    let drop = write_drop(&t.path().join("d"), DropHeader::full(1), &rows(3));
    assert!(
        cccgate(&["load", "build", "--drop", s(&drop), "--out", s(&out)])
            .status
            .success()
    );
    let snap = out.join("snap-1.ccc");
    let o = cccgate(&[
        "load",
        "inspect",
        s(&snap),
        "--cert",
        "CCC:2021-0109-0100-0002",
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(stdout.contains("sequence:     1"));
    assert!(
        stdout.contains("证书编号       2021010901000002"),
        "{stdout}"
    );
    assert!(stdout.contains("型号规格       X2；Y2"), "{stdout}");
    let o = cccgate(&["load", "inspect", s(&snap), "--cert", "2021010901000099"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("is not in"));
}

#[test]
fn verify_refuses_a_damaged_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    let drop = write_drop(&t.path().join("d"), DropHeader::full(1), &rows(3));
    assert!(
        cccgate(&["load", "build", "--drop", s(&drop), "--out", s(&out)])
            .status
            .success()
    );
    let snap = out.join("snap-1.ccc");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = t.path().join("damaged.ccc");
    std::fs::write(&damaged, bytes).unwrap();
    let o = cccgate(&["load", "verify", s(&damaged)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("checksum mismatch"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn signed_drops_load_and_unsigned_ones_are_refused_when_a_key_is_configured() {
    let t = tempfile::tempdir().unwrap();
    let (secret, public) = (t.path().join("feed.key"), t.path().join("feed.pub"));
    let o = cccgate(&[
        "feed",
        "keygen",
        "--secret",
        s(&secret),
        "--public",
        s(&public),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Never overwrite a secret key.
    assert!(
        !cccgate(&[
            "feed",
            "keygen",
            "--secret",
            s(&secret),
            "--public",
            s(&public)
        ])
        .status
        .success()
    );

    let out = t.path().join("snaps");
    let drop = write_drop(&t.path().join("d"), DropHeader::full(1), &rows(3));
    let build = || {
        cccgate(&[
            "load",
            "build",
            "--drop",
            s(&drop),
            "--out",
            s(&out),
            "--public-key",
            s(&public),
        ])
    };
    let o = build();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("manifest.json.sig: missing"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        cccgate(&["feed", "sign", "--drop", s(&drop), "--key", s(&secret)])
            .status
            .success()
    );
    assert!(
        cccgate(&[
            "feed",
            "verify",
            "--drop",
            s(&drop),
            "--public-key",
            s(&public)
        ])
        .status
        .success()
    );
    let o = build();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("signature:   verified"));
}

/// Every file of `dir`: its name, length and a hash of its bytes, to compare before and after.
fn snapshot_dir_listing(dir: &Path) -> std::collections::BTreeMap<String, (usize, u64)> {
    use std::hash::{Hash, Hasher};
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            (
                e.file_name().to_string_lossy().into_owned(),
                (bytes.len(), h.finish()),
            )
        })
        .collect()
}

/// The bad-drop corpus (`tests/corpus`, pinned error by error in `tests/loader_corpus.rs`)
/// through the path that writes snapshots: `load build` must refuse each drop with the
/// loader's own error, exit non-zero, and leave the snapshot directory byte-identical with no
/// new file; a good drop then writes one (so the comparison can see a write).
#[test]
fn every_bad_corpus_drop_is_refused_by_load_build_and_writes_nothing() {
    use cccgate_loader::{Loader, read_signing_key, read_verifying_key, sign_drop};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let public = corpus.join("keys/feed.pub");
    let key = read_signing_key(&corpus.join("keys/feed.key")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    let build = |drop: &Path, key: &[&str]| {
        let mut args = vec!["load", "build", "--drop", s(drop), "--out", s(&out)];
        args.extend_from_slice(key);
        cccgate(&args)
    };
    // The base drop is unsigned: built without a key, as the snapshot in force.
    let base = build(&corpus.join("base"), &[]);
    assert!(base.status.success(), "{}", text(&base.stderr));
    let before = snapshot_dir_listing(&out);
    assert_eq!(before.len(), 1, "{:?}", before.keys());
    let in_force = cccgate_snapshot::Snapshot::open(&out.join("snap-1.ccc")).unwrap();
    let loader = Loader {
        public_key: Some(read_verifying_key(&public).unwrap()),
        ..Loader::default()
    };
    let good = ["base", "good-delta", "good-gbk-gzip", "good-signed", "keys"];
    let mut refused = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() || good.contains(&name.as_str()) {
            continue;
        }
        // Signed on the fly (but the signature cases), so the defect under test refuses it.
        let copy = t.path().join("copies").join(&name);
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(entry.path()).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
        if !name.starts_with("unsigned") && !name.starts_with("signature") {
            sign_drop(&copy, &key).unwrap();
        }
        let want = loader
            .load(&copy, Some(&in_force))
            .expect_err("a bad corpus drop")
            .to_string();
        let o = build(&copy, &["--public-key", s(&public)]);
        let stderr = text(&o.stderr);
        assert!(!o.status.success(), "{name}: exit 0\n{}", text(&o.stdout));
        assert!(
            stderr.contains("refused; nothing written"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(&want), "{name}: no {want:?} in {stderr}");
        assert_eq!(
            snapshot_dir_listing(&out),
            before,
            "{name}: the snapshot directory changed"
        );
        refused += 1;
    }
    assert!(refused >= 20, "only {refused} bad drops in the corpus");
    let delta = build(&corpus.join("good-delta"), &[]);
    assert!(delta.status.success(), "{}", text(&delta.stderr));
    assert_eq!(
        snapshot_dir_listing(&out).len(),
        2,
        "good-delta wrote its snapshot"
    );
}

#[test]
fn build_with_a_sign_key_writes_a_signature_that_verify_checks() {
    let t = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let secret = t.path().join(format!("{name}.key"));
        let public = t.path().join(format!("{name}.pub"));
        let o = cccgate(&[
            "feed",
            "keygen",
            "--secret",
            s(&secret),
            "--public",
            s(&public),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        (secret, public)
    };
    let (secret, public) = keygen("snap");
    let (_, other) = keygen("other");
    let out = t.path().join("snaps");
    let drop = write_drop(&t.path().join("d"), DropHeader::full(4), &rows(3));
    let o = cccgate(&[
        "load",
        "build",
        "--drop",
        s(&drop),
        "--out",
        s(&out),
        "--sign-key",
        s(&secret),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("signed:"), "{}", text(&o.stdout));
    let snap = out.join("snap-4.ccc");
    let sig = std::fs::read_to_string(out.join("snap-4.ccc.sig")).unwrap();
    assert!(
        sig.starts_with("cccgate-snapshot-signature/1\nsequence 4\n"),
        "{sig}"
    );
    let v = cccgate(&["load", "verify", s(&snap), "--public-key", s(&public)]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    assert!(text(&v.stdout).contains("signature verified"));
    let v = cccgate(&["load", "verify", s(&snap), "--public-key", s(&other)]);
    assert!(!v.status.success());
    assert!(
        text(&v.stderr).contains("signature does not match"),
        "{}",
        text(&v.stderr)
    );
}

#[test]
fn keep_snapshots_prunes_to_n_after_each_publish_keeping_the_newest() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("snaps");
    for sequence in 1..=5 {
        let drop = write_drop(
            &t.path().join(format!("d{sequence}")),
            DropHeader::full(sequence),
            &rows(3),
        );
        let o = cccgate(&[
            "load",
            "build",
            "--drop",
            s(&drop),
            "--out",
            s(&out),
            "--keep-snapshots",
            "2",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["snap-4.ccc", "snap-5.ccc"]);
    let o = cccgate(&[
        "load",
        "build",
        "--drop",
        s(&t.path().join("d1")),
        "--out",
        s(&out),
        "--keep-snapshots",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--keep-snapshots must be at least 1"));
}

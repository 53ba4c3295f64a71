//! Hostile drops (a publisher's system compromised or broken): each is refused by name, writes
//! nothing, and the loader's peak resident memory stays under 512 MiB.
//!
//! One test in this binary on purpose: the peak (`VmHWM`) is the whole process's, so no other
//! test may run beside it. The drops are small on disk (gzip members repeated, a sparse
//! manifest) and large only to a loader that would read them whole; the test is bounded by
//! construction, not by a timer: every refusal happens after at most a few MiB of reading.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use cccgate_loader::{DropHeader, DropWriter, FileKind, LoadError, Loader, WrittenFile};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
";

const HEADER: &str = "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构\n";

const ROW: &str =
    "2021010901000001,有效,0901,微型计算机,A1,甲,乙,丙,2021-03-01,2031-02-28,,,中国质量认证中心\n";

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes a drop whose certificate file is `head` then `body` repeated `times`, each as a
/// gzip member of its own (a multi-member gzip file, which the loader reads whole): the file
/// is a few KiB on disk and `body.len() * times` bytes decompressed.
fn gzip_drop(dir: &Path, head: &str, body: &[u8], times: usize, rows: u64) {
    let mut w = DropWriter::create(dir, DropHeader::full(2)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    let path = dir.join("certificates.csv.gz");
    let mut f = File::create(&path).unwrap();
    let mut sha = Sha256::new();
    let first = gz(head.as_bytes());
    let member = gz(body);
    f.write_all(&first).unwrap();
    sha.update(&first);
    for _ in 0..times {
        f.write_all(&member).unwrap();
        sha.update(&member);
    }
    w.files_mut().push(WrittenFile {
        name: "certificates.csv.gz".into(),
        kind: FileKind::Certificates,
        sha256: hex::encode(sha.finalize()),
        rows,
        bytes: (first.len() + member.len() * times) as u64,
    });
    w.finish().unwrap();
}

/// A plain drop whose certificate file is replaced by `make`.
fn plain_drop(dir: &Path, make: impl FnOnce(&Path)) {
    let mut w = DropWriter::create(dir, DropHeader::full(2)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &format!("{HEADER}{ROW}"),
    )
    .unwrap();
    w.finish().unwrap();
    let cert = dir.join("certificates.csv");
    fs::remove_file(&cert).unwrap();
    make(&cert);
}

fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().map_or(0, |m| m.len()))
        })
        .collect();
    v.sort();
    v
}

fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn hostile_drops_are_refused_by_name_in_bounded_memory_writing_nothing() {
    let t = tempfile::tempdir().unwrap();
    let loader = Loader::default();
    let mut seen = Vec::new();
    let mut check = |label: &str, dir: &Path, ok: &dyn Fn(&LoadError) -> bool| {
        let before = listing(dir);
        let e = match loader.load(dir, None) {
            Err(e) => e,
            Ok(other) => panic!("{label}: expected a refusal, got {other:?}"),
        };
        assert!(ok(&e), "{label}: {e}");
        assert_eq!(listing(dir), before, "{label}: the drop directory changed");
        seen.push(format!("{label}: {e}"));
    };

    // 1. A gzip bomb: one field of 1 GiB of `A`s (1,024 members of 1 MiB).
    let bomb = t.path().join("bomb");
    gzip_drop(
        &bomb,
        &format!("{HEADER}2021010901000001,有效,0901,微型计算机,"),
        &vec![b'A'; 1 << 20],
        1024,
        1,
    );
    check("gzip bomb", &bomb, &|e| {
        matches!(e, LoadError::Limit { file, line: Some(2), .. } if file == "certificates.csv.gz")
            && e.to_string().contains("max-record-bytes")
    });

    // 2. 20 million rows where the manifest says 1 (2,000 members of 10,000 rows).
    let many = t.path().join("many");
    gzip_drop(&many, HEADER, ROW.repeat(10_000).as_bytes(), 2_000, 1);
    check(
        "20M rows",
        &many,
        &|e| matches!(e, LoadError::TooManyRows { file, expected: 1, line: 3 } if file == "certificates.csv.gz"),
    );

    // 3. certificates.csv -> /dev/zero.
    let zero = t.path().join("zero");
    plain_drop(&zero, |p| {
        std::os::unix::fs::symlink("/dev/zero", p).unwrap()
    });
    check(
        "link to /dev/zero",
        &zero,
        &|e| matches!(e, LoadError::FileRefused { path, message } if path.ends_with("certificates.csv") && message.contains("symbolic link")),
    );

    // 4. certificates.csv is a named pipe nobody writes to.
    let fifo = t.path().join("fifo");
    plain_drop(&fifo, |p| {
        assert!(
            std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap()
                .success()
        );
    });
    check(
        "FIFO",
        &fifo,
        &|e| matches!(e, LoadError::FileRefused { path, message } if path.ends_with("certificates.csv") && message.contains("FIFO")),
    );

    // 5. A 300 MB manifest (sparse: no disk space used).
    let big = t.path().join("big-manifest");
    plain_drop(&big, |p| fs::write(p, format!("{HEADER}{ROW}")).unwrap());
    File::options()
        .write(true)
        .open(big.join("manifest.json"))
        .unwrap()
        .set_len(300_000_000)
        .unwrap();
    check(
        "300 MB manifest",
        &big,
        &|e| matches!(e, LoadError::FileRefused { path, message } if path.ends_with("manifest.json") && message.contains("max-manifest-bytes")),
    );

    let peak = peak_rss_kib();
    eprintln!(
        "peak resident memory {peak} KiB; refusals:\n{}",
        seen.join("\n")
    );
    assert!(
        peak < 512 * 1024,
        "peak resident memory {peak} KiB after:\n{}",
        seen.join("\n")
    );
}

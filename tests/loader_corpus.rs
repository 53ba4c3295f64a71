//! The bad-drop corpus: `tests/corpus/`, one small drop per defect next to a good base drop.
//!
//! Each bad drop must be refused by the loader with exactly the error the table below states
//! (variant, file, line, field and message). That a refused drop leaves the snapshot directory
//! byte-identical with no new file is checked where a file could be written: `cccgate load
//! build` over this same corpus (`crates/cli/tests/load_cli.rs`,
//! `every_bad_corpus_drop_is_refused_by_load_build_and_writes_nothing`); the loader itself
//! only returns bytes. The drops are written by [`write_corpus`]; regenerate them with
//!
//! ```text
//! cargo test -p cccgate-e2e --test loader_corpus -- --ignored regenerate_corpus
//! ```
//!
//! and `corpus_on_disk_is_what_the_generator_writes` fails if the two ever drift apart.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cccgate_loader::{
    DropHeader, DropWriter, Encoding, FileKind, LoadError, LoadOutcome, Loader, SigningKey,
    encode_signing_key, encode_verifying_key, sign_drop,
};
use cccgate_snapshot::{Snapshot, file_name, write_atomic};

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
0907,移动电源,09,信息技术设备,证书,2024-08-01,
0201,电源线,02,电路开关及保护或连接用电器装置,证书,2002-05-01,2023-06-01
0813,电热毯,08,家用和类似用途设备,自我声明,2002-05-01,
1101,汽车,11,机动车辆及安全附件,证书,2002-08-01,
";

const HEADER: &str = "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构";

/// The key that signs the corpus's signed drops (a fixed seed: test material only).
const TEST_SEED: [u8; 32] = [7; 32];

/// The base register: 40 certificates, 30 valid. Row 3 spans three physical lines (a quoted
/// multi-line model list), so from row 4 on, row k starts on line k + 3.
fn base_rows() -> Vec<String> {
    let mut rows = Vec::new();
    for i in 1..=40u32 {
        let number = format!("20210109010000{i:02}");
        let status = match i {
            1..=30 if i % 2 == 0 => "01",
            1..=30 => "有效",
            31..=33 => "暂停",
            34..=35 => "撤销",
            36..=37 => "注销",
            _ => "过期失效",
        };
        let changed = if i > 30 { "2025/6/1" } else { "" };
        let reason = if i > 30 { "监督抽查不合格" } else { "" };
        let models = match i {
            3 => "\"ThinkPad X1；ThinkPad X2\nThinkPad X3、ThinkPad X4\nThinkPad X5\"".to_owned(),
            5 => "ＡＢＣ－１２３，ＡＢＣ－１２４".to_owned(),
            _ => format!("M{i}-A;M{i}-B"),
        };
        let issued = match i % 3 {
            0 => "2021-03-01",
            1 => "2021/3/1",
            _ => "2021年3月1日",
        };
        rows.push(format!(
            "{number},{status},0901,微型计算机,{models},联想（北京）有限公司,联想（北京）有限公司,联想（合肥）电子科技有限公司,{issued},2031-02-28,{changed},{reason},中国质量认证中心"
        ));
    }
    // A vehicle certificate with a version suffix, and a power bank.
    rows.push(
        "2022221101000119(B0),有效,1101,乘用车,BJ7000,北京汽车股份有限公司,北京汽车股份有限公司,北京汽车股份有限公司株洲分公司,2022-01-10,2027-01-09,,,中国质量认证中心"
            .to_owned(),
    );
    rows.push(
        "2024010907000001,有效,0907,移动电源,PB-10000,深圳市安克创新科技股份有限公司,深圳市安克创新科技股份有限公司,东莞市安克电子有限公司,2024-08-01,2029-07-31,,,中国质量认证中心"
            .to_owned(),
    );
    rows
}

fn csv_text(rows: &[String]) -> String {
    let mut s = format!("{HEADER}\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

fn full(seq: u64) -> DropHeader {
    let mut h = DropHeader::full(seq);
    h.generated_at = format!("2026-11-{:02}T02:00:00+08:00", 20 + seq);
    h
}

fn delta(seq: u64, base: u64) -> DropHeader {
    let mut h = DropHeader::delta(seq, base);
    h.generated_at = format!("2026-11-{:02}T02:00:00+08:00", 20 + seq);
    h
}

/// A full drop with the base catalogue and `rows` in one certificate file.
fn write_full(dir: &Path, header: DropHeader, rows: &[String]) -> DropWriter {
    let mut w = DropWriter::create(dir, header).expect("create drop");
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .expect("catalogue");
    w.csv_file("certificates.csv", FileKind::Certificates, &csv_text(rows))
        .expect("certificates");
    w
}

fn with_row(k: usize, row: String) -> Vec<String> {
    let mut rows = base_rows();
    rows[k - 1] = row;
    rows
}

/// Writes every drop of the corpus under `root`.
fn write_corpus(root: &Path) {
    let key = SigningKey::from_bytes(&TEST_SEED);
    let keys = root.join("keys");
    fs::create_dir_all(&keys).expect("keys dir");
    fs::write(keys.join("feed.key"), encode_signing_key(&key)).expect("key");
    fs::write(
        keys.join("feed.pub"),
        encode_verifying_key(&key.verifying_key()),
    )
    .expect("pub");

    // Good drops.
    write_full(&root.join("base"), full(1), &base_rows())
        .finish()
        .expect("base");
    let mut w = DropWriter::create(&root.join("good-delta"), delta(2, 1)).expect("delta");
    w.csv_file(
        "changes.csv",
        FileKind::Certificates,
        &csv_text(&[
            base_rows()[1].replacen(",01,", ",撤销,", 1),
            "2026010901000001,有效,0901,微型计算机,NEW-1,新公司,新公司,新工厂,2026-11-01,2031-10-31,,,中国质量认证中心"
                .to_owned(),
        ]),
    )
    .expect("changes");
    w.finish().expect("good-delta");
    let mut h = full(2);
    h.encoding = Encoding::Gbk;
    let mut w = DropWriter::create(&root.join("good-gbk-gzip"), h).expect("gbk");
    w.csv_file("catalogue.csv.gz", FileKind::Catalogue, CATALOGUE)
        .expect("catalogue");
    let rows = base_rows();
    w.csv_file(
        "part-1.csv.gz",
        FileKind::Certificates,
        &csv_text(&rows[..20]),
    )
    .expect("part 1");
    w.csv_file("part-2.csv", FileKind::Certificates, &csv_text(&rows[20..]))
        .expect("part 2");
    w.finish().expect("good-gbk-gzip");
    let w = write_full(&root.join("good-signed"), full(2), &base_rows());
    let dir = w.finish().expect("good-signed");
    sign_drop(&dir, &key).expect("sign");

    // Manifest defects.
    let dir = write_full(&root.join("unknown-format"), full(2), &base_rows())
        .finish()
        .expect("drop");
    edit(&dir.join("manifest.json"), "ccc-feed/1", "ccc-feed/2");
    let dir = write_full(&root.join("manifest-not-json"), full(2), &base_rows())
        .finish()
        .expect("drop");
    edit(
        &dir.join("manifest.json"),
        "\"kind\": \"full\",",
        "\"kind\": \"full\",,",
    );
    let dir = write_full(&root.join("manifest-bad-sequence"), full(2), &base_rows())
        .finish()
        .expect("drop");
    edit(
        &dir.join("manifest.json"),
        "\"sequence\": 2",
        "\"sequence\": \"2\"",
    );

    // File defects.
    let dir = write_full(&root.join("checksum-mismatch"), full(2), &base_rows())
        .finish()
        .expect("drop");
    edit(&dir.join("certificates.csv"), "M12-A", "M12-Z");
    let mut w = write_full(&root.join("row-count-mismatch"), full(2), &base_rows());
    w.files_mut()[1].rows = 43;
    w.finish().expect("drop");
    let dir = write_full(&root.join("file-missing"), full(2), &base_rows())
        .finish()
        .expect("drop");
    fs::remove_file(dir.join("certificates.csv")).expect("remove");
    let dir = write_full(&root.join("file-unlisted"), full(2), &base_rows())
        .finish()
        .expect("drop");
    fs::write(dir.join("certificates-2.csv"), csv_text(&base_rows()[..1])).expect("extra");
    let mut w = DropWriter::create(&root.join("gzip-truncated"), full(2)).expect("drop");
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .expect("catalogue");
    w.csv_file(
        "whole.csv.gz",
        FileKind::Certificates,
        &csv_text(&base_rows()),
    )
    .expect("gz");
    let gz = fs::read(w.dir().join("whole.csv.gz")).expect("read gz");
    fs::remove_file(w.dir().join("whole.csv.gz")).expect("remove");
    w.files_mut().pop();
    // Listed with the checksum of the truncated bytes: the damage is in the gzip stream.
    w.raw_file(
        "certificates.part",
        FileKind::Certificates,
        &gz[..gz.len() / 2],
        42,
    )
    .expect("part");
    fs::rename(
        w.dir().join("certificates.part"),
        w.dir().join("certificates.csv.gz"),
    )
    .expect("rename");
    w.files_mut()[1].name = "certificates.csv.gz".into();
    w.finish().expect("drop");

    // Header and catalogue defects.
    let mut text = csv_text(&base_rows());
    text = text.replacen("证书到期日期", "有效期至", 1);
    let mut w = DropWriter::create(&root.join("missing-column"), full(2)).expect("drop");
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .expect("catalogue");
    w.csv_file("certificates.csv", FileKind::Certificates, &text)
        .expect("certs");
    w.finish().expect("drop");
    let mut w = DropWriter::create(&root.join("bad-catalogue"), full(2)).expect("drop");
    w.csv_file(
        "catalogue.csv",
        FileKind::Catalogue,
        &CATALOGUE.replace(
            "0907,移动电源,09,信息技术设备,证书,2024-08-01",
            "0907,移动电源,09,信息技术设备,证书,2024-08-32",
        ),
    )
    .expect("catalogue");
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &csv_text(&base_rows()),
    )
    .expect("certs");
    w.finish().expect("drop");

    // Row defects: row 12 of the base register starts on line 15.
    let row12 = base_rows()[11].clone();
    let bad_row = |name: &str, row: String| {
        write_full(&root.join(name), full(2), &with_row(12, row))
            .finish()
            .expect("drop");
    };
    bad_row(
        "malformed-number",
        row12.replacen("2021010901000012", "202101090100012", 1),
    );
    bad_row("unknown-status", row12.replacen(",01,", ",有 效,", 1));
    bad_row(
        "unreadable-date",
        row12.replacen("2021-03-01", "2021.03.01", 1),
    );
    bad_row(
        "product-code-not-in-catalogue",
        row12.replacen(",0901,", ",0902,", 1),
    );
    bad_row(
        "short-row",
        row12.split(',').take(9).collect::<Vec<_>>().join(","),
    );
    let mut w = write_full(&root.join("invalid-utf8"), full(2), &[]);
    w.files_mut().pop();
    let mut bytes = csv_text(&base_rows()).into_bytes();
    splice_before(
        &mut bytes,
        "联想（合肥）电子科技有限公司,2021-03-01,2031-02-28,,,中国质量认证中心\n2021010901000013",
        b"\xC3\x28",
    );
    fs::remove_file(w.dir().join("certificates.csv")).expect("remove");
    w.raw_file("certificates.csv", FileKind::Certificates, &bytes, 42)
        .expect("raw");
    w.finish().expect("drop");
    let mut h = full(2);
    h.encoding = Encoding::Gbk;
    let mut w = DropWriter::create(&root.join("undecodable-gbk"), h).expect("drop");
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .expect("catalogue");
    let mut bytes = gbk(&csv_text(&base_rows()));
    // 0x81 0x20: a lead byte followed by a space is no GBK character.
    let marker = gbk(
        "联想（合肥）电子科技有限公司,2021-03-01,2031-02-28,,,中国质量认证中心\n2021010901000013",
    );
    let at = find(&bytes, &marker).expect("marker");
    bytes.splice(at..at, [0x81, 0x20]);
    w.raw_file("certificates.csv", FileKind::Certificates, &bytes, 42)
        .expect("raw");
    w.finish().expect("drop");

    // Duplicates: row 12 again in a second file, with another status.
    let mut w = write_full(&root.join("conflicting-duplicate"), full(2), &base_rows());
    w.csv_file(
        "certificates-2.csv",
        FileKind::Certificates,
        &csv_text(&[row12.replacen(",01,", ",暂停,", 1)]),
    )
    .expect("second file");
    w.finish().expect("drop");

    // Rules against the snapshot in force.
    let mut w = DropWriter::create(&root.join("delta-wrong-base"), delta(3, 2)).expect("drop");
    w.csv_file(
        "changes.csv",
        FileKind::Certificates,
        &csv_text(&base_rows()[..1]),
    )
    .expect("changes");
    w.finish().expect("drop");
    let mut h = delta(2, 1);
    h.source = "samr".into();
    let mut w = DropWriter::create(&root.join("delta-other-source"), h).expect("drop");
    w.csv_file(
        "changes.csv",
        FileKind::Certificates,
        &csv_text(&base_rows()[..1]),
    )
    .expect("changes");
    w.finish().expect("drop");
    // A truncated export: the first 25 rows only (23 valid of the 32 in force).
    write_full(&root.join("shrunk"), full(2), &base_rows()[..25])
        .finish()
        .expect("drop");

    // Signatures (loaded with the corpus public key configured).
    write_full(&root.join("unsigned"), full(2), &base_rows())
        .finish()
        .expect("drop");
    let dir = write_full(&root.join("signature-mismatch"), full(2), &base_rows())
        .finish()
        .expect("drop");
    sign_drop(&dir, &key).expect("sign");
    edit(
        &dir.join("manifest.json"),
        "\"source\": \"cnca\"",
        "\"source\": \"cnca-mirror\"",
    );
}

/// `text` in GBK, through the drop writer's encoder (a scratch drop, so this test needs no
/// encoder of its own).
fn gbk(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = DropHeader::full(1);
    h.encoding = Encoding::Gbk;
    let mut w = DropWriter::create(dir.path(), h).expect("scratch");
    w.csv_file("x.csv", FileKind::Certificates, text)
        .expect("encode");
    fs::read(dir.path().join("x.csv")).expect("read")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn splice_before(bytes: &mut Vec<u8>, marker: &str, insert: &[u8]) {
    let at = find(bytes, marker.as_bytes()).expect("marker");
    bytes.splice(at..at, insert.iter().copied());
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{}: no {from:?}", path.display());
    fs::write(path, text.replacen(from, to, 1)).expect("write");
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Each bad drop, the variant it must be refused with and the exact message (`<drop>` is the
/// drop directory).
const BAD: &[(&str, &str, &str)] = &[
    (
        "unknown-format",
        "UnknownFormat",
        "<drop>/manifest.json, format: unknown manifest format \"ccc-feed/2\"; this loader reads \"ccc-feed/1\"",
    ),
    (
        "manifest-not-json",
        "ManifestSyntax",
        "<drop>/manifest.json line 19 column 18: not valid JSON: key must be a string",
    ),
    (
        "manifest-bad-sequence",
        "ManifestField",
        "<drop>/manifest.json, sequence: expected a non-negative integer, found \"2\"",
    ),
    (
        "checksum-mismatch",
        "Checksum",
        "certificates.csv: SHA-256 is <sha> but manifest.json says <sha>",
    ),
    (
        "row-count-mismatch",
        "RowCount",
        "certificates.csv: 42 data rows but manifest.json says 43",
    ),
    (
        "file-missing",
        "FileMissing",
        "certificates.csv: listed in manifest.json but not in the drop directory <drop>",
    ),
    (
        "file-unlisted",
        "UnlistedFile",
        "certificates-2.csv: data file in the drop directory but not listed in manifest.json",
    ),
    (
        "gzip-truncated",
        "Io",
        "<drop>/certificates.csv.gz: the gzip stream is damaged: incomplete deflate stream",
    ),
    (
        "missing-column",
        "Header",
        "certificates.csv line 1, 证书到期日期: required column is missing",
    ),
    (
        "bad-catalogue",
        "BadCatalogue",
        "1 catalogue rows are bad:\n  catalogue.csv line 3, 实施日期: no such day \"2024-08-32\"",
    ),
    (
        "malformed-number",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, 证书编号: malformed certificate number \"202101090100012\": certificate number is not 16 digits with an optional (XX) version suffix",
    ),
    (
        "unknown-status",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, 证书状态: unknown status \"有 效\": expected 有效, 暂停, 撤销, 注销, 过期失效 or 01..05",
    ),
    (
        "unreadable-date",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, 发证日期: unreadable date \"2021.03.01\": expected YYYY-MM-DD, YYYY/MM/DD or YYYY年MM月DD日",
    ),
    (
        "product-code-not-in-catalogue",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, 产品类别代码: product code 0902 is not in the catalogue",
    ),
    (
        "short-row",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, row: 9 fields but the header has 13 columns",
    ),
    (
        "invalid-utf8",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, 生产企业名称: undecodable bytes for the manifest's encoding",
    ),
    (
        "undecodable-gbk",
        "BadRows",
        "1 certificate rows are bad (at most 0 may be set aside; see --max-bad-rows):\n  certificates.csv line 15, 生产企业名称: undecodable bytes for the manifest's encoding",
    ),
    (
        "conflicting-duplicate",
        "Duplicates",
        "1 certificate numbers appear twice with different contents:\n  certificates.csv line 15 and certificates-2.csv line 2, 证书编号: certificate 2021010901000012 appears twice with different contents",
    ),
    (
        "delta-wrong-base",
        "BaseMismatch",
        "manifest.json, base_sequence: the delta applies on sequence 2 but sequence 1 is in force; a full drop is needed",
    ),
    (
        "delta-other-source",
        "SourceMismatch",
        "manifest.json, source: delta from \"samr\" cannot apply on a snapshot from \"cnca\"; a full drop is needed",
    ),
    (
        "shrunk",
        "Shrink",
        "shrink guard: the drop has 25 valid (有效) certificates, 21.9% fewer than the 32 in force (more than 5.0% looks like a truncated export); use --force if this is real",
    ),
    (
        "unsigned",
        "SignatureMissing",
        "<drop>/manifest.json.sig: missing; a public key is configured, so every drop must be signed",
    ),
    (
        "signature-mismatch",
        "SignatureInvalid",
        "<drop>/manifest.json.sig: signature does not match manifest.json under the configured public key",
    ),
];

fn corpus_loader() -> Loader {
    Loader {
        public_key: Some(SigningKey::from_bytes(&TEST_SEED).verifying_key()),
        ..Loader::default()
    }
}

/// Builds the base drop into `out` as the snapshot in force, the way `load build` does.
fn snapshot_in_force(corpus: &Path, out: &Path) -> PathBuf {
    // The base drop is unsigned; it is loaded without a key.
    let LoadOutcome::Built { bytes, .. } = Loader::default()
        .load(&corpus.join("base"), None)
        .expect("base drop loads")
    else {
        panic!("base drop is stale?")
    };
    fs::create_dir_all(out).expect("out dir");
    let path = out.join(file_name(1));
    write_atomic(&bytes, &path).expect("write base");
    path
}

fn variant(e: &LoadError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn mask_hex(text: &str) -> String {
    let mut out = String::new();
    for word in text.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str("<sha>");
        } else {
            out.push_str(word);
        }
    }
    out
}

#[test]
fn every_bad_drop_is_refused_exactly() {
    let corpus = corpus_dir();
    let t = tempfile::tempdir().expect("tempdir");
    let out = t.path().join("snapshots");
    let in_force_path = snapshot_in_force(&corpus, &out);
    let in_force = Snapshot::open(&in_force_path).expect("open in force");
    let loader = corpus_loader();
    let mut seen = Vec::new();
    for (name, want_variant, want_message) in BAD {
        let drop = corpus.join(name);
        assert!(drop.is_dir(), "{name}: not in the corpus; regenerate it");
        // Drops other than the signature cases are signed on the fly in a copy, so the
        // signature check passes and the defect under test is what refuses them.
        let copy = t.path().join("copies").join(name);
        copy_dir(&drop, &copy);
        if !name.starts_with("unsigned") && !name.starts_with("signature") {
            sign_drop(&copy, &SigningKey::from_bytes(&TEST_SEED)).expect("sign copy");
        }
        let err = match loader.load(&copy, Some(&in_force)) {
            Err(e) => e,
            Ok(other) => panic!("{name}: expected a refusal, got {other:?}"),
        };
        let message = mask_hex(
            &err.to_string()
                .replace(copy.to_str().expect("utf-8 path"), "<drop>"),
        );
        assert_eq!(variant(&err), *want_variant, "{name}: {message}");
        assert_eq!(&message, want_message, "{name}");
        seen.push(*name);
    }
    // Every directory of the corpus is either a good drop or a case above.
    let good = ["base", "good-delta", "good-gbk-gzip", "good-signed", "keys"];
    for entry in fs::read_dir(&corpus).expect("corpus") {
        let entry = entry.expect("entry");
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            good.contains(&name.as_str()) || seen.contains(&name.as_str()),
            "{name}: a corpus drop without an expected refusal"
        );
    }
}

#[test]
fn good_drops_of_the_corpus_load() {
    let corpus = corpus_dir();
    let t = tempfile::tempdir().expect("tempdir");
    let in_force =
        Snapshot::open(&snapshot_in_force(&corpus, &t.path().join("s"))).expect("open in force");
    assert_eq!(in_force.counts().total, 42);
    assert_eq!(in_force.counts().valid(), 32);

    let built = |r: Result<LoadOutcome, LoadError>| match r {
        Ok(LoadOutcome::Built { bytes, .. }) => Snapshot::from_bytes(bytes).expect("valid"),
        other => panic!("expected a snapshot, got {other:?}"),
    };
    let delta = built(Loader::default().load(&corpus.join("good-delta"), Some(&in_force)));
    assert_eq!(delta.counts().total, 43);
    assert_eq!(delta.counts().valid(), 32);
    let gbk = built(Loader::default().load(&corpus.join("good-gbk-gzip"), Some(&in_force)));
    let mut a: Vec<_> = gbk.records().collect();
    let mut b: Vec<_> = in_force.records().collect();
    a.sort_by_key(|r| r.number);
    b.sort_by_key(|r| r.number);
    assert_eq!(
        a, b,
        "the GBK/gzip drop holds the same register as the UTF-8 base"
    );
    let signed = built(corpus_loader().load(&corpus.join("good-signed"), Some(&in_force)));
    assert_eq!(signed.counts().total, 42);
    let three = delta_models(&in_force);
    assert_eq!(
        three,
        [
            "ThinkPad X1",
            "ThinkPad X2",
            "ThinkPad X3",
            "ThinkPad X4",
            "ThinkPad X5"
        ]
    );
}

fn delta_models(s: &Snapshot) -> Vec<String> {
    let n = cccgate_core::CertNumber::from_u64(2021010901000003).expect("number");
    s.record(n).expect("certificate 3").models
}

#[test]
fn corpus_on_disk_is_what_the_generator_writes() {
    let t = tempfile::tempdir().expect("tempdir");
    write_corpus(t.path());
    let on_disk = corpus_dir();
    let generated = tree(t.path());
    let committed = tree(&on_disk);
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&generated),
        names(&committed)
            .into_iter()
            .filter(|p| p != Path::new("README.md"))
            .collect::<Vec<_>>(),
        "regenerate: cargo test -p cccgate-e2e --test loader_corpus -- --ignored regenerate_corpus"
    );
    for (path, bytes) in generated {
        assert!(
            committed[&path] == bytes,
            "{}: differs from the generator",
            path.display()
        );
    }
}

#[test]
#[ignore = "rewrites tests/corpus; run it after changing the generator"]
fn regenerate_corpus() {
    let dir = corpus_dir();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            fs::remove_dir_all(entry.path()).expect("clean");
        }
    }
    write_corpus(&dir);
}

fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).expect("prefix").to_path_buf();
                out.insert(rel, fs::read(&path).expect("read"));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

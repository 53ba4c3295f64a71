//! Loader behaviour, one rule of `spec/feed.md` per test, on small drops written with
//! [`DropWriter`].

use std::path::Path;

use cccgate_core::{CertNumber, Day, Status};
use cccgate_snapshot::Snapshot;

use super::*;

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
0907,移动电源,09,信息技术设备,证书,2024-08-01,
0201,电源线,02,电路开关及保护或连接用电器装置,证书,2002-05-01,2023-06-01
0813,电热毯,08,家用和类似用途设备,自我声明,2002-05-01,
";

const HEADER: &str = "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构";

/// A certificate row in contract column order.
fn row(number: &str, status: &str, code: &str, models: &str) -> String {
    format!(
        "{number},{status},{code},微型计算机,{models},联想（北京）有限公司,联想（北京）有限公司,联想（合肥）工厂,2021-03-01,2031-02-28,,,中国质量认证中心"
    )
}

fn n(i: u64) -> String {
    format!("20210109010{i:05}")
}

fn certs(rows: &[String]) -> String {
    let mut s = String::from(HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

fn valid_rows(count: u64) -> Vec<String> {
    (1..=count)
        .map(|i| row(&n(i), "有效", "0901", "A1"))
        .collect()
}

fn write_drop(dir: &Path, header: DropHeader, catalogue: Option<&str>, files: &[(&str, &str)]) {
    let mut w = DropWriter::create(dir, header).unwrap();
    if let Some(c) = catalogue {
        w.csv_file("catalogue.csv", FileKind::Catalogue, c).unwrap();
    }
    for (name, text) in files {
        w.csv_file(name, FileKind::Certificates, text).unwrap();
    }
    w.finish().unwrap();
}

fn full(dir: &Path, sequence: u64, text: &str) {
    write_drop(
        dir,
        DropHeader::full(sequence),
        Some(CATALOGUE),
        &[("certificates.csv", text)],
    );
}

fn built(r: Result<LoadOutcome, LoadError>) -> (Snapshot, BuildReport) {
    match r {
        Ok(LoadOutcome::Built { bytes, report }) => (Snapshot::from_bytes(bytes).unwrap(), *report),
        Ok(other) => panic!("expected a snapshot, got {other:?}"),
        Err(e) => panic!("expected a snapshot, got: {e}"),
    }
}

fn refused(r: Result<LoadOutcome, LoadError>) -> LoadError {
    match r {
        Err(e) => e,
        Ok(other) => panic!("expected a refusal, got {other:?}"),
    }
}

fn load(dir: &Path) -> Result<LoadOutcome, LoadError> {
    Loader::default().load(dir, None)
}

fn number(i: u64) -> CertNumber {
    CertNumber::parse_feed(&n(i)).unwrap().number
}

fn only_row(e: &LoadError) -> &RowError {
    match e.rows() {
        [r] => r,
        other => panic!("expected one bad row, got {other:?} in {e}"),
    }
}

#[test]
fn full_drop_builds_a_snapshot_with_every_field() {
    let t = tempfile::tempdir().unwrap();
    let text = certs(&[
        row(&n(1), "有效", "0901", "ThinkPad X1；ThinkPad X2"),
        row("2022221101000119(B0)", "暂停", "0201", "H05VV-F"),
    ]);
    full(t.path(), 5, &text);
    let (snap, report) = built(load(t.path()));
    assert_eq!(snap.sequence(), 5);
    assert_eq!(snap.source(), "cnca");
    assert_eq!(snap.counts().total, 2);
    assert_eq!(report.certificates, 2);
    assert_eq!(report.valid, 1);
    assert_eq!(report.rows, 2);
    assert_eq!(snap.catalogue().entries().len(), 4);
    let r = snap.record(number(1)).unwrap();
    assert_eq!(r.status, Status::Valid);
    assert_eq!(r.models, ["ThinkPad X1", "ThinkPad X2"]);
    assert_eq!(r.producer, "联想（北京）有限公司");
    assert_eq!(r.issued, Day::from_ymd(2021, 3, 1).unwrap());
    assert_eq!(r.status_changed, None);
    let v = snap
        .record(CertNumber::from_u64(2022221101000119).unwrap())
        .unwrap();
    assert_eq!(v.suffix, Some(*b"B0"));
    assert_eq!(v.status, Status::Suspended);
    // The number's product digits (1101) differ from its column (0201): accepted, counted.
    assert_eq!(report.number_code_mismatches, 1);
}

#[test]
fn columns_may_come_in_any_order_with_extra_columns() {
    let t = tempfile::tempdir().unwrap();
    let text = format!(
        "备注,认证机构,状态变更原因,状态变更日期,证书到期日期,发证日期,生产企业名称,生产者名称,认证委托人名称,型号规格,产品名称,产品类别代码,证书状态,证书编号\n\
         x,CQC,,,2031-02-28,2021-03-01,F,P,A,M1,微型计算机,0901,有效,{}\n",
        n(1)
    );
    full(t.path(), 1, &text);
    let (snap, _) = built(load(t.path()));
    let r = snap.record(number(1)).unwrap();
    assert_eq!((r.producer.as_str(), r.factory.as_str()), ("P", "F"));
    assert_eq!(r.body_name, "CQC");
}

#[test]
fn gbk_drop_reads_the_same_certificates_as_utf8() {
    let t = tempfile::tempdir().unwrap();
    let text = certs(&[
        row(&n(1), "有效", "0901", "型号甲、型号乙"),
        row(&n(2), "撤销", "0907", "移动电源Ａ１"),
    ]);
    full(&t.path().join("utf8"), 1, &text);
    let mut h = DropHeader::full(1);
    h.encoding = Encoding::Gbk;
    write_drop(
        &t.path().join("gbk"),
        h,
        Some(CATALOGUE),
        &[("certificates.csv", &text)],
    );
    let (a, _) = built(load(&t.path().join("utf8")));
    let (b, _) = built(load(&t.path().join("gbk")));
    let ra: Vec<_> = a.records().collect();
    let mut rb: Vec<_> = b.records().collect();
    rb.sort_by_key(|r| r.number);
    let mut ra = ra;
    ra.sort_by_key(|r| r.number);
    assert_eq!(ra, rb);
    assert_eq!(a.catalogue(), b.catalogue());
    assert_eq!(ra[0].models, ["型号甲", "型号乙"]);
}

#[test]
fn utf8_bom_is_ignored() {
    let t = tempfile::tempdir().unwrap();
    let text = format!("\u{feff}{}", certs(&valid_rows(2)));
    write_drop(
        t.path(),
        DropHeader::full(1),
        Some(&format!("\u{feff}{CATALOGUE}")),
        &[("certificates.csv", &text)],
    );
    let (snap, _) = built(load(t.path()));
    assert_eq!(snap.counts().total, 2);
}

#[test]
fn gzip_files_are_read_and_checksummed_as_stored() {
    let t = tempfile::tempdir().unwrap();
    let mut w = DropWriter::create(t.path(), DropHeader::full(1)).unwrap();
    w.csv_file("catalogue.csv.gz", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.csv_file("a.csv.gz", FileKind::Certificates, &certs(&valid_rows(3)))
        .unwrap();
    w.csv_file(
        "b.csv",
        FileKind::Certificates,
        &certs(&[row(&n(9), "有效", "0901", "Z")]),
    )
    .unwrap();
    let stored = std::fs::read(t.path().join("a.csv.gz")).unwrap();
    assert_eq!(&stored[..2], b"\x1f\x8b", "stored gzipped");
    w.finish().unwrap();
    let (snap, report) = built(load(t.path()));
    assert_eq!(snap.counts().total, 4);
    assert_eq!(report.files[1].bytes, stored.len() as u64);
}

#[test]
fn dates_in_three_shapes_and_full_width_text_are_read() {
    let t = tempfile::tempdir().unwrap();
    let text = certs(&[
        format!(
            "{},有效,0901,P,M,A,P,F,2021/3/1,2031年2月28日,2024-8-1,变更,B",
            n(1)
        ),
        "２０２１０１０９０１０００００２（ｂ０）,０１,０９０１,P,ＡＢＣ１２３,A,P,F,２０２１年３月１日,2031-02-28,,,B".to_owned(),
    ]);
    full(t.path(), 1, &text);
    let (snap, _) = built(load(t.path()));
    let r = snap.record(number(1)).unwrap();
    assert_eq!(r.issued, Day::from_ymd(2021, 3, 1).unwrap());
    assert_eq!(r.expires, Day::from_ymd(2031, 2, 28).unwrap());
    assert_eq!(r.status_changed, Day::from_ymd(2024, 8, 1));
    assert_eq!(r.status_reason, "变更");
    let w = snap.record(number(2)).unwrap();
    assert_eq!(w.suffix, Some(*b"B0"));
    assert_eq!(w.status, Status::Valid);
    assert_eq!(w.issued, Day::from_ymd(2021, 3, 1).unwrap());
    // Models are kept as written; the snapshot's model keys normalise them.
    assert_eq!(w.models, ["ＡＢＣ１２３"]);
}

#[test]
fn models_split_on_every_separator_and_quoted_line_breaks() {
    let t = tempfile::tempdir().unwrap();
    let text = certs(&[
        row(&n(1), "有效", "0901", "\"A1；A2;A3、A4，A5,A6\nA7\r\nA8\""),
        row(&n(2), "无效", "0901", "X"),
    ]);
    full(t.path(), 1, &text);
    let r = refused(load(t.path()));
    // The quoted field spans lines 2-4, so the next record starts on line 5.
    assert_eq!(only_row(&r).line, 5);
    full(
        t.path(),
        1,
        &certs(&[row(
            &n(1),
            "有效",
            "0901",
            "\"A1；A2;A3、A4，A5,A6\nA7\r\nA8\"",
        )]),
    );
    let (snap, _) = built(load(t.path()));
    assert_eq!(
        snap.record(number(1)).unwrap().models,
        ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"]
    );
}

#[test]
fn statuses_are_read_as_words_or_codes() {
    let t = tempfile::tempdir().unwrap();
    let words = ["有效", "暂停", "撤销", "注销", "过期失效"];
    let codes = ["01", "02", "03", "04", "05"];
    let rows: Vec<String> = (0..10)
        .map(|i| {
            let s = if i < 5 { words[i] } else { codes[i - 5] };
            row(&n(i as u64 + 1), s, "0901", "M")
        })
        .collect();
    full(t.path(), 1, &certs(&rows));
    let (snap, _) = built(load(t.path()));
    assert_eq!(snap.counts().by_status, [2, 2, 2, 2, 2]);
}

#[test]
fn each_kind_of_bad_row_names_file_line_and_field() {
    let cases = [
        (
            row("20210109010000X1", "有效", "0901", "M"),
            "证书编号",
            "malformed certificate number",
        ),
        (
            row(&n(1), "有 效", "0901", "M"),
            "证书状态",
            "unknown status \"有 效\"",
        ),
        (
            format!("{},有效,0901,P,M,A,P,F,2021.03.01,2031-02-28,,,B", n(1)),
            "发证日期",
            "unreadable date",
        ),
        (
            format!("{},有效,0901,P,M,A,P,F,2021-03-01,2031-02-30,,,B", n(1)),
            "证书到期日期",
            "no such day",
        ),
        (
            row(&n(1), "有效", "0902", "M"),
            "产品类别代码",
            "product code 0902 is not in the catalogue",
        ),
        (
            row(&n(1), "有效", "901", "M"),
            "产品类别代码",
            "is not a 4-digit product code",
        ),
        (row(&n(1), "有效", "0901", ""), "型号规格", "no model"),
        (
            format!("{},有效,0901", n(1)),
            "row",
            "3 fields but the header has 13 columns",
        ),
    ];
    for (bad, field, message) in cases {
        let t = tempfile::tempdir().unwrap();
        let mut rows = valid_rows(2);
        rows[1] = bad.replace(&n(1), &n(2));
        full(t.path(), 1, &certs(&rows));
        let e = refused(load(t.path()));
        let r = only_row(&e);
        assert_eq!(
            (r.file.as_str(), r.line, r.field.as_str()),
            ("certificates.csv", 3, field),
            "{e}"
        );
        assert!(r.message.contains(message), "{field}: {}", r.message);
    }
}

#[test]
fn undecodable_bytes_are_bad_rows_in_either_encoding() {
    for encoding in [Encoding::Utf8, Encoding::Gbk] {
        let t = tempfile::tempdir().unwrap();
        let mut content = certs(&valid_rows(2)).into_bytes();
        // A lone lead byte at the end of the producer field of line 3.
        let pos = content
            .windows("联想（合肥）工厂".len())
            .rposition(|w| w == "联想（合肥）工厂".as_bytes())
            .unwrap();
        content.insert(pos, 0xFF);
        let mut h = DropHeader::full(1);
        h.encoding = encoding;
        let mut w = DropWriter::create(t.path(), h).unwrap();
        w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
            .unwrap();
        let content = match encoding {
            Encoding::Utf8 => content,
            Encoding::Gbk => {
                let text = String::from_utf8_lossy(&content).replace('\u{FFFD}', "");
                let (g, _, _) = encoding_rs::GBK.encode(&text);
                let mut g = g.into_owned();
                let (mark, _, _) = encoding_rs::GBK.encode("联想（合肥）工厂");
                let p = g.windows(mark.len()).rposition(|w| w == &*mark).unwrap();
                g.insert(p, 0xFF);
                g
            }
        };
        w.raw_file("certificates.csv", FileKind::Certificates, &content, 2)
            .unwrap();
        w.finish().unwrap();
        let e = refused(load(t.path()));
        let r = only_row(&e);
        assert_eq!(
            (r.line, r.field.as_str()),
            (3, "生产企业名称"),
            "{encoding:?}: {e}"
        );
        assert!(r.message.contains("undecodable"));
    }
}

#[test]
fn checksum_and_row_count_must_match_the_manifest() {
    let t = tempfile::tempdir().unwrap();
    let mut w = DropWriter::create(t.path(), DropHeader::full(1)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &certs(&valid_rows(3)),
    )
    .unwrap();
    w.files_mut()[1].rows = 4;
    w.finish().unwrap();
    let e = refused(load(t.path()));
    assert!(
        matches!(&e, LoadError::RowCount { file, expected: 4, actual: 3 } if file == "certificates.csv"),
        "{e}"
    );
    // One byte changed after the manifest was written.
    let path = t.path().join("certificates.csv");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] = b'X';
    std::fs::write(&path, bytes).unwrap();
    let e = refused(load(t.path()));
    assert!(
        matches!(&e, LoadError::Checksum { file, .. } if file == "certificates.csv"),
        "{e}"
    );
}

#[test]
fn identical_duplicates_collapse_and_conflicting_ones_name_both_lines() {
    let t = tempfile::tempdir().unwrap();
    let mut rows = valid_rows(3);
    // Same content, dates written differently: identical once parsed.
    rows.push(rows[0].replace("2021-03-01", "2021/3/1"));
    full(t.path(), 1, &certs(&rows));
    let (snap, report) = built(load(t.path()));
    assert_eq!(snap.counts().total, 3);
    assert_eq!(report.duplicates_collapsed, 1);

    let t = tempfile::tempdir().unwrap();
    write_drop(
        t.path(),
        DropHeader::full(1),
        Some(CATALOGUE),
        &[
            ("a.csv", &certs(&valid_rows(3))),
            ("b.csv", &certs(&[row(&n(2), "撤销", "0901", "A1")])),
        ],
    );
    let e = refused(load(t.path()));
    match &e {
        LoadError::Duplicates {
            conflicts,
            total: 1,
        } => {
            assert_eq!(conflicts[0].first, ("a.csv".to_owned(), 3));
            assert_eq!(conflicts[0].second, ("b.csv".to_owned(), 2));
            assert_eq!(conflicts[0].number, n(2));
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .contains("a.csv line 3 and b.csv line 2, 证书编号")
    );
}

#[test]
fn unknown_manifest_format_is_refused() {
    let t = tempfile::tempdir().unwrap();
    full(t.path(), 1, &certs(&valid_rows(1)));
    let path = t.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("ccc-feed/1", "ccc-feed/2");
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        refused(load(t.path())),
        LoadError::UnknownFormat { found, .. } if found == "ccc-feed/2"
    ));
}

fn base_snapshot(t: &Path, sequence: u64, valid: u64) -> Snapshot {
    let dir = t.join(format!("base-{sequence}"));
    full(&dir, sequence, &certs(&valid_rows(valid)));
    built(load(&dir)).0
}

#[test]
fn delta_applies_on_the_snapshot_it_names() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 40);
    let dir = t.path().join("delta");
    write_drop(
        &dir,
        DropHeader::delta(11, 10),
        None,
        &[(
            "changes.csv",
            &certs(&[
                row(&n(2), "撤销", "0901", "A1"),
                row(&n(41), "有效", "0907", "PB-1"),
            ]),
        )],
    );
    let (snap, report) = built(Loader::default().load(&dir, Some(&base)));
    assert_eq!(snap.sequence(), 11);
    assert_eq!(snap.counts().total, 41);
    assert_eq!(report.validity_changes, Some(1));
    assert_eq!(snap.counts().of(Status::Revoked), 1);
    assert_eq!(snap.record(number(1)).unwrap().status, Status::Valid);
    assert_eq!(
        snap.catalogue(),
        base.catalogue(),
        "a delta without catalogue keeps it"
    );
    assert_eq!(report.applied_on, Some(10));
    assert!(!report.catalogue_replaced);
    // The numbers its rows wrote, for the change feed: and they are all that changed.
    let rows = [number(2).get(), number(41).get()];
    assert_eq!(report.delta_numbers.as_deref(), Some(&rows[..]));
    assert_eq!(
        cccgate_snapshot::verdict_changes(&base, &snap),
        cccgate_snapshot::verdict_changes_among(&base, &snap, &rows)
    );
    assert_eq!(cccgate_snapshot::verdict_changes(&base, &snap).len(), 2);
    // A full drop has none.
    assert!(
        built(load(&t.path().join("base-10")))
            .1
            .delta_numbers
            .is_none()
    );
}

#[test]
fn delta_with_a_catalogue_replaces_it() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 2);
    let dir = t.path().join("delta");
    let catalogue = format!("{CATALOGUE}0914,电动自行车,09,信息技术设备,证书,2026-01-01,\n");
    write_drop(
        &dir,
        DropHeader::delta(11, 10),
        Some(&catalogue),
        &[("changes.csv", &certs(&[row(&n(3), "有效", "0914", "E1")]))],
    );
    let (snap, report) = built(Loader::default().load(&dir, Some(&base)));
    assert_eq!(snap.catalogue().entries().len(), 5);
    assert!(report.catalogue_replaced);
    assert_eq!(snap.counts().total, 3);
}

#[test]
fn delta_on_another_base_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 2);
    let dir = t.path().join("delta");
    write_drop(
        &dir,
        DropHeader::delta(12, 11),
        None,
        &[("c.csv", &certs(&valid_rows(1)))],
    );
    assert!(matches!(
        refused(Loader::default().load(&dir, Some(&base))),
        LoadError::BaseMismatch {
            base_sequence: 11,
            in_force: Some(10)
        }
    ));
    assert!(matches!(
        refused(Loader::default().load(&dir, None)),
        LoadError::BaseMismatch {
            base_sequence: 11,
            in_force: None
        }
    ));
}

#[test]
fn stale_drop_is_skipped_not_refused() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 2);
    for seq in [9, 10] {
        let dir = t.path().join(format!("old-{seq}"));
        full(&dir, seq, &certs(&valid_rows(2)));
        assert!(matches!(
            Loader::default().load(&dir, Some(&base)),
            Ok(LoadOutcome::Stale { sequence, in_force: 10 }) if sequence == seq
        ));
    }
}

#[test]
fn shrink_guard_refuses_more_than_five_percent_fewer_valid_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 100);
    // 95 valid: exactly 5% fewer, allowed.
    let ok = t.path().join("ok");
    full(&ok, 11, &certs(&valid_rows(95)));
    let (_, report) = built(Loader::default().load(&ok, Some(&base)));
    assert_eq!(report.valid_before, Some(100));
    // 94 valid (and 6 revoked, so the total is unchanged): refused.
    let mut rows = valid_rows(100);
    for r in rows.iter_mut().skip(94) {
        *r = r.replace("有效", "撤销");
    }
    let bad = t.path().join("bad");
    full(&bad, 11, &certs(&rows));
    let e = refused(Loader::default().load(&bad, Some(&base)));
    assert!(
        matches!(
            e,
            LoadError::Shrink {
                valid_before: 100,
                valid_after: 94,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("6.0% fewer"));
    let forced = Loader {
        force: true,
        ..Loader::default()
    };
    let (_, report) = built(forced.load(&bad, Some(&base)));
    assert!(report.shrink_forced);
    let lenient = Loader {
        shrink_threshold: 0.10,
        ..Loader::default()
    };
    assert!(lenient.load(&bad, Some(&base)).is_ok());
}

#[test]
fn signatures_are_required_when_a_key_is_configured() {
    let t = tempfile::tempdir().unwrap();
    full(t.path(), 1, &certs(&valid_rows(1)));
    let key = SigningKey::from_bytes(&[3; 32]);
    let loader = Loader {
        public_key: Some(key.verifying_key()),
        ..Loader::default()
    };
    assert!(matches!(
        refused(loader.load(t.path(), None)),
        LoadError::SignatureMissing { .. }
    ));
    sign_drop(t.path(), &SigningKey::from_bytes(&[4; 32])).unwrap();
    assert!(matches!(
        refused(loader.load(t.path(), None)),
        LoadError::SignatureInvalid { .. }
    ));
    sign_drop(t.path(), &key).unwrap();
    let (_, report) = built(loader.load(t.path(), None));
    assert_eq!(report.signature, SignatureCheck::Verified);
    // Any change to the manifest after signing breaks the signature.
    let path = t.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("cnca", "cncb");
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        refused(loader.load(t.path(), None)),
        LoadError::SignatureInvalid { .. }
    ));
    // Without a key the signature is not read at all.
    let (_, report) = built(load(t.path()));
    assert_eq!(report.signature, SignatureCheck::NotChecked);
}

#[test]
fn bad_rows_up_to_the_allowance_are_set_aside() {
    let t = tempfile::tempdir().unwrap();
    let mut rows = valid_rows(5);
    rows[1] = row(&n(2), "有 效", "0901", "A1");
    rows[3] = row(&n(4), "有效", "0999", "A1");
    full(t.path(), 1, &certs(&rows));
    let one = Loader {
        max_bad_rows: 1,
        ..Loader::default()
    };
    let e = refused(one.load(t.path(), None));
    assert!(
        matches!(
            &e,
            LoadError::BadRows {
                total: 2,
                allowed: 1,
                ..
            }
        ),
        "{e}"
    );
    let two = Loader {
        max_bad_rows: 2,
        ..Loader::default()
    };
    let (snap, report) = built(two.load(t.path(), None));
    assert_eq!(snap.counts().total, 3);
    assert_eq!(report.rejected.len(), 2);
    assert_eq!(report.rejected[0].error.line, 3);
    assert_eq!(report.rejected[1].error.field, "产品类别代码");
    assert_eq!(report.rejected[0].fields[0], n(2));

    let out = t.path().join("reject.csv");
    write_reject_file(&out, &report.rejected).unwrap();
    let mut r = csv::Reader::from_path(&out).unwrap();
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(&recs[0][0], "certificates.csv");
    assert_eq!(&recs[0][1], "3");
    assert_eq!(&recs[0][2], "证书状态");
    assert!(recs[0][3].contains("unknown status"));
    assert!(recs[0][4].starts_with(&n(2)));
}

#[test]
fn refusal_lists_at_most_a_hundred_bad_rows() {
    let t = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (1..=150).map(|i| row(&n(i), "??", "0901", "A")).collect();
    full(t.path(), 1, &certs(&rows));
    match refused(load(t.path())) {
        LoadError::BadRows { rows, total, .. } => {
            assert_eq!(rows.len(), MAX_LISTED);
            assert_eq!(total, 150);
            assert_eq!(rows[99].line, 101);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn listed_files_must_exist_and_data_files_must_be_listed() {
    let t = tempfile::tempdir().unwrap();
    full(t.path(), 1, &certs(&valid_rows(1)));
    std::fs::write(t.path().join("extra.csv"), "x\n").unwrap();
    assert!(
        matches!(refused(load(t.path())), LoadError::UnlistedFile { name } if name == "extra.csv")
    );
    std::fs::remove_file(t.path().join("extra.csv")).unwrap();
    std::fs::write(t.path().join("README.txt"), "notes").unwrap();
    assert!(load(t.path()).is_ok(), "non-data files are ignored");
    std::fs::remove_file(t.path().join("certificates.csv")).unwrap();
    assert!(matches!(
        refused(load(t.path())),
        LoadError::FileMissing { name, .. } if name == "certificates.csv"
    ));
}

#[test]
fn missing_required_column_is_a_header_error() {
    let t = tempfile::tempdir().unwrap();
    let text = certs(&valid_rows(1)).replacen("认证机构", "发证机构", 1);
    full(t.path(), 1, &text);
    let e = refused(load(t.path()));
    assert!(
        matches!(&e, LoadError::Header { field, .. } if field == "认证机构"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "certificates.csv line 1, 认证机构: required column is missing"
    );
}

#[test]
fn bad_catalogue_rows_refuse_the_drop_whatever_the_allowance() {
    let t = tempfile::tempdir().unwrap();
    let catalogue = CATALOGUE.replace(
        "0907,移动电源,09,信息技术设备,证书",
        "0907,移动电源,09,信息技术设备,认可",
    );
    write_drop(
        t.path(),
        DropHeader::full(1),
        Some(&catalogue),
        &[("c.csv", &certs(&valid_rows(1)))],
    );
    let lenient = Loader {
        max_bad_rows: 10,
        ..Loader::default()
    };
    let e = refused(lenient.load(t.path(), None));
    let r = only_row(&e);
    assert_eq!(
        (r.file.as_str(), r.line, r.field.as_str()),
        ("catalogue.csv", 3, "认证方式")
    );
    let overlap = format!("{CATALOGUE}0901,微型计算机,09,信息技术设备,证书,2020-01-01,\n");
    write_drop(
        t.path(),
        DropHeader::full(1),
        Some(&overlap),
        &[("c.csv", &certs(&valid_rows(1)))],
    );
    let e = refused(load(t.path()));
    assert!(e.to_string().contains("lines 2, 6"), "{e}");
}

#[test]
fn corrupt_gzip_is_reported_against_its_file() {
    let t = tempfile::tempdir().unwrap();
    let mut w = DropWriter::create(t.path(), DropHeader::full(1)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    // Not gzip at all, but the manifest's checksum is of these very bytes.
    w.raw_file("c.csv", FileKind::Certificates, b"", 0).unwrap();
    let f = w.files_mut().last_mut().unwrap();
    f.name = "c.csv.gz".into();
    std::fs::rename(t.path().join("c.csv"), t.path().join("c.csv.gz")).unwrap();
    std::fs::write(t.path().join("c.csv.gz"), b"definitely not gzip").unwrap();
    f.sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"definitely not gzip",
    ));
    w.finish().unwrap();
    let e = refused(load(t.path()));
    assert!(
        matches!(&e, LoadError::Io { path, .. } if path.ends_with("c.csv.gz")),
        "{e}"
    );
}

#[test]
fn full_drop_replaces_everything_in_force() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 5);
    let dir = t.path().join("next");
    // Certificates 3..=7: 1 and 2 are gone, 6 and 7 are new.
    let rows: Vec<String> = (3..=7).map(|i| row(&n(i), "有效", "0901", "A1")).collect();
    full(&dir, 11, &certs(&rows));
    let (snap, report) = built(Loader::default().load(&dir, Some(&base)));
    assert_eq!(snap.counts().total, 5);
    assert!(snap.record(number(1)).is_none());
    assert!(snap.record(number(7)).is_some());
    assert_eq!(report.applied_on, None);
}

#[test]
fn catalogue_category_must_match_the_product_code() {
    let t = tempfile::tempdir().unwrap();
    let catalogue = CATALOGUE.replace("0907,移动电源,09,", "0907,移动电源,08,");
    write_drop(
        t.path(),
        DropHeader::full(1),
        Some(&catalogue),
        &[("c.csv", &certs(&valid_rows(1)))],
    );
    let e = refused(load(t.path()));
    let r = only_row(&e);
    assert_eq!((r.line, r.field.as_str()), (3, "大类代码"));
    assert_eq!(r.message, "category 08 does not match product code 0907");
}

/// A certificate file whose bad row (status `无效`) is on physical line 7: a blank line
/// (line 3) and a quoted field over three lines (4-6) come before it.
fn text_with_bad_row_on_line_7(eol: &str, trailing_eol: bool) -> String {
    let lines = [
        HEADER.to_owned(),
        row(&n(1), "有效", "0901", "A1"),
        String::new(),
        row(
            &n(2),
            "有效",
            "0901",
            &format!("\"型号甲{eol}型号乙{eol}型号丙\""),
        ),
        row(&n(3), "无效", "0901", "A3"),
    ];
    let mut s = lines.join(eol);
    if trailing_eol {
        s.push_str(eol);
    }
    s
}

#[test]
fn refusals_name_the_physical_line_in_every_line_ending_encoding_and_compression() {
    let t = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, bool, Encoding, &str); 8] = [
        ("lf", "\n", true, Encoding::Utf8, "certificates.csv"),
        (
            "lf-no-final-eol",
            "\n",
            false,
            Encoding::Utf8,
            "certificates.csv",
        ),
        ("crlf", "\r\n", true, Encoding::Utf8, "certificates.csv"),
        (
            "crlf-no-final-eol",
            "\r\n",
            false,
            Encoding::Utf8,
            "certificates.csv",
        ),
        ("crlf-bom", "\r\n", true, Encoding::Utf8, "bom.csv"),
        ("crlf-gbk", "\r\n", true, Encoding::Gbk, "certificates.csv"),
        (
            "crlf-gzip",
            "\r\n",
            true,
            Encoding::Utf8,
            "certificates.csv.gz",
        ),
        (
            "lf-gbk-gzip",
            "\n",
            true,
            Encoding::Gbk,
            "certificates.csv.gz",
        ),
    ];
    for (label, eol, trailing, encoding, name) in cases {
        let dir = t.path().join(label);
        let mut text = text_with_bad_row_on_line_7(eol, trailing);
        if name == "bom.csv" {
            text.insert(0, '\u{feff}');
        }
        let mut h = DropHeader::full(1);
        h.encoding = encoding;
        let catalogue = CATALOGUE.replace('\n', eol);
        write_drop(&dir, h, Some(&catalogue), &[(name, &text)]);
        let e = refused(load(&dir));
        let r = only_row(&e);
        assert_eq!((label, r.line), (label, 7), "{e}");
        assert_eq!(r.field, "证书状态", "{label}: {e}");
        assert_eq!(r.file, name, "{label}");
    }
}

#[test]
fn crlf_rows_read_the_same_as_lf_rows() {
    let t = tempfile::tempdir().unwrap();
    let lf = certs(&[
        row(&n(1), "有效", "0901", "\"X1\nX2\""),
        row(&n(2), "撤销", "0907", "Y"),
    ]);
    full(&t.path().join("lf"), 1, &lf);
    full(&t.path().join("crlf"), 1, &lf.replace('\n', "\r\n"));
    let (a, _) = built(load(&t.path().join("lf")));
    let (b, _) = built(load(&t.path().join("crlf")));
    let mut ra: Vec<_> = a.records().collect();
    let mut rb: Vec<_> = b.records().collect();
    ra.sort_by_key(|r| r.number);
    rb.sort_by_key(|r| r.number);
    assert_eq!(ra, rb);
    // The last column carries no stray carriage return.
    assert_eq!(rb[0].body_name, "中国质量认证中心");
}

#[test]
fn conflicting_duplicates_name_physical_lines_in_crlf_files() {
    let t = tempfile::tempdir().unwrap();
    let text = certs(&[
        row(&n(1), "有效", "0901", "\"A\nB\""),
        row(&n(1), "暂停", "0901", "A"),
    ])
    .replace('\n', "\r\n");
    full(t.path(), 1, &text);
    let e = refused(load(t.path()));
    let LoadError::Duplicates { conflicts, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(conflicts[0].first.1, 2, "{e}");
    assert_eq!(conflicts[0].second.1, 4, "{e}");
}

fn tight() -> Loader {
    Loader {
        limits: Limits {
            max_field_bytes: 300,
            max_record_bytes: 1000,
            max_gzip_ratio: 10,
            gzip_ratio_floor: 50_000,
            ..Limits::default()
        },
        ..Loader::default()
    }
}

#[test]
fn a_field_over_the_cap_is_refused_naming_file_line_and_column() {
    let t = tempfile::tempdir().unwrap();
    let mut rows = valid_rows(2);
    rows.push(row(&n(3), "有效", "0901", &"M".repeat(301)));
    full(t.path(), 1, &certs(&rows));
    let e = refused(tight().load(t.path(), None));
    let LoadError::Limit {
        file, line, field, ..
    } = &e
    else {
        panic!("{e}");
    };
    assert_eq!((file.as_str(), *line), ("certificates.csv", Some(4)));
    assert_eq!(field.as_deref(), Some("column 5"));
    assert!(e.to_string().contains("max-field-bytes"), "{e}");
    // At the cap it is accepted.
    full(
        t.path(),
        1,
        &certs(&[row(&n(3), "有效", "0901", &"M".repeat(300))]),
    );
    built(tight().load(t.path(), None));
}

#[test]
fn a_record_over_the_cap_is_refused_before_it_is_read_whole() {
    let t = tempfile::tempdir().unwrap();
    // One quoted field that never closes: the parser would buffer the whole file as one
    // record. 5 MB of it is refused after about the cap plus one read buffer.
    let mut text = certs(&valid_rows(1));
    text.push_str(&format!("{},有效,0901,P,\"", n(2)));
    text.push_str(&"A,\n".repeat(5 << 20 >> 2));
    let mut w = DropWriter::create(t.path(), DropHeader::full(1)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.raw_file(
        "certificates.csv",
        FileKind::Certificates,
        text.as_bytes(),
        2,
    )
    .unwrap();
    w.finish().unwrap();
    let e = refused(tight().load(t.path(), None));
    let LoadError::Limit { file, line, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!((file.as_str(), *line), ("certificates.csv", Some(3)), "{e}");
    assert!(e.to_string().contains("max-record-bytes"), "{e}");
}

#[test]
fn a_gzip_file_over_its_ratio_is_refused() {
    let t = tempfile::tempdir().unwrap();
    // Blank lines make no records, so only the decompressed budget can stop them.
    let mut text = certs(&valid_rows(1)).into_bytes();
    text.extend(std::iter::repeat_n(b'\n', 1 << 20));
    let mut w = DropWriter::create(t.path(), DropHeader::full(1)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.raw_file("certificates.csv.gz", FileKind::Certificates, &text, 1)
        .unwrap();
    w.finish().unwrap();
    let e = refused(tight().load(t.path(), None));
    assert!(
        matches!(&e, LoadError::Limit { file, line: None, .. } if file == "certificates.csv.gz"),
        "{e}"
    );
    assert!(e.to_string().contains("max-gzip-ratio"), "{e}");
    // The default ratio lets it through.
    built(load(t.path()));
}

#[test]
fn rows_beyond_the_manifest_count_are_refused_at_the_first_extra_row() {
    let t = tempfile::tempdir().unwrap();
    let mut w = DropWriter::create(t.path(), DropHeader::full(1)).unwrap();
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .unwrap();
    w.raw_file(
        "certificates.csv",
        FileKind::Certificates,
        certs(&valid_rows(5)).replace('\n', "\r\n").as_bytes(),
        2,
    )
    .unwrap();
    w.finish().unwrap();
    let e = refused(load(t.path()));
    assert!(
        matches!(&e, LoadError::TooManyRows { file, expected: 2, line: 4 } if file == "certificates.csv"),
        "{e}"
    );
}

#[test]
fn links_pipes_and_oversized_manifests_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    full(t.path(), 1, &certs(&valid_rows(1)));
    let cert = t.path().join("certificates.csv");
    let kept = t.path().join("kept");
    std::fs::rename(&cert, &kept).unwrap();
    // A link to the very same bytes is still refused: no link is followed.
    std::os::unix::fs::symlink(&kept, &cert).unwrap();
    let e = refused(load(t.path()));
    assert!(
        matches!(&e, LoadError::FileRefused { path, message } if path == &cert && message.contains("symbolic link")),
        "{e}"
    );
    std::fs::remove_file(&cert).unwrap();
    std::fs::rename(&kept, &cert).unwrap();
    built(load(t.path()));

    let loader = Loader {
        limits: Limits {
            max_manifest_bytes: 100,
            ..Limits::default()
        },
        ..Loader::default()
    };
    let e = refused(loader.load(t.path(), None));
    assert!(
        matches!(&e, LoadError::FileRefused { path, message } if path.ends_with("manifest.json") && message.contains("max-manifest-bytes")),
        "{e}"
    );
}

#[test]
fn delta_guard_refuses_changing_the_validity_of_more_than_the_share_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 40);
    // Two revoked of 40 valid is exactly 5%: allowed. Three is more.
    let delta = |name: &str, revoked: u64| {
        let dir = t.path().join(name);
        let rows: Vec<String> = (1..=revoked)
            .map(|i| row(&n(i), "撤销", "0901", "A1"))
            .chain((100..150).map(|i| row(&n(i), "有效", "0901", "NEW")))
            .collect();
        write_drop(
            &dir,
            DropHeader::delta(11, 10),
            None,
            &[("d.csv", &certs(&rows))],
        );
        dir
    };
    let (snap, report) = built(Loader::default().load(&delta("two", 2), Some(&base)));
    assert_eq!(report.validity_changes, Some(2));
    assert!(!report.delta_forced);
    // New certificates are not changes of the register in force.
    assert_eq!(snap.counts().total, 90);
    let three = delta("three", 3);
    let e = refused(Loader::default().load(&three, Some(&base)));
    assert!(
        matches!(
            e,
            LoadError::DeltaGuard {
                changed: 3,
                valid_before: 40,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--force"), "{e}");
    let forced = Loader {
        force: true,
        ..Loader::default()
    };
    let (_, report) = built(forced.load(&three, Some(&base)));
    assert!(report.delta_forced);
    // Making certificates valid again counts too (a revoked one passing again).
    let back = t.path().join("back");
    let rows: Vec<String> = (1..=3).map(|i| row(&n(i), "撤销", "0901", "A1")).collect();
    write_drop(
        &back,
        DropHeader::full(11),
        Some(CATALOGUE),
        &[(
            "c.csv",
            &certs(&[rows.clone(), valid_rows(60)[3..].to_vec()].concat()),
        )],
    );
    let revoked = built(Loader::default().load(&back, None)).0;
    let revive = t.path().join("revive");
    let rows: Vec<String> = (1..=3).map(|i| row(&n(i), "有效", "0901", "A1")).collect();
    write_drop(
        &revive,
        DropHeader::delta(12, 11),
        None,
        &[("d.csv", &certs(&rows))],
    );
    let e = refused(Loader::default().load(&revive, Some(&revoked)));
    assert!(
        matches!(
            e,
            LoadError::DeltaGuard {
                changed: 3,
                valid_before: 57,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_delta_catalogue_must_cover_the_certificates_it_keeps() {
    let t = tempfile::tempdir().unwrap();
    let base = base_snapshot(t.path(), 10, 40);
    // 0901 (every base certificate's code) is left out of the new catalogue.
    let without_0901: String = CATALOGUE
        .lines()
        .filter(|l| !l.starts_with("0901"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = t.path().join("delta");
    write_drop(
        &dir,
        DropHeader::delta(11, 10),
        Some(&without_0901),
        &[("d.csv", &certs(&[row(&n(41), "有效", "0907", "PB-1")]))],
    );
    let e = refused(Loader::default().load(&dir, Some(&base)));
    assert!(
        matches!(&e, LoadError::CatalogueDropsCodes { codes, total: 40, .. } if codes == &["0901"]),
        "{e}"
    );
    // Retiring 0901 with an end date keeps it covered: accepted, and every certificate kept.
    let retired = CATALOGUE.replace(
        "0901,微型计算机,09,信息技术设备,证书,2002-05-01,",
        "0901,微型计算机,09,信息技术设备,证书,2002-05-01,2026-01-01",
    );
    let dir = t.path().join("delta-retired");
    write_drop(
        &dir,
        DropHeader::delta(11, 10),
        Some(&retired),
        &[("d.csv", &certs(&[row(&n(41), "有效", "0907", "PB-1")]))],
    );
    let (snap, report) = built(Loader::default().load(&dir, Some(&base)));
    assert!(report.catalogue_replaced);
    assert_eq!(snap.counts().total, 41);
    assert!(snap.catalogue().entries().iter().any(|e| e.until.is_some()));
}

//! Feed drops read back with the `csv` crate (not the loader) give back the register: every
//! field of every certificate, the catalogue, and a manifest whose checksums and row counts
//! match the files.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use cccgate_core::{
    Catalogue, CertNumber, CertificateRecord, ConformityMode, Day, ProductCode, Status,
    normalize_model, split_models,
};
use cccgate_synth::{
    CATALOGUE_COLUMNS, CERTIFICATE_COLUMNS, DropOptions, DropSummary, EXTRA_COLUMN, Encoding,
    RegisterSpec, SyntheticRegister, delta_changes, write_drop,
};
use sha2::{Digest, Sha256};

fn register() -> SyntheticRegister {
    RegisterSpec {
        certs: 2_000,
        seed: 17,
        ..RegisterSpec::default()
    }
    .generate()
}

/// A data file decoded to text: gunzipped if its name says so, then GBK or UTF-8 (BOM
/// stripped).
fn decode(path: &Path, encoding: &str) -> String {
    let raw = std::fs::read(path).unwrap();
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    };
    match encoding {
        "gbk" => {
            let (text, had_errors) = encoding_rs::GBK
                .decode_without_bom_handling_and_without_replacement(&bytes)
                .map(|t| (t, false))
                .unwrap_or_else(|| panic!("{}: not GBK", path.display()));
            assert!(!had_errors);
            text.into_owned()
        }
        "utf-8" => {
            let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            String::from_utf8(b.to_vec()).unwrap()
        }
        other => panic!("encoding {other}"),
    }
}

/// Rows of a CSV text as maps from column name to value; also returns the header.
fn rows(text: &str) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (header, rows)
}

fn date(s: &str) -> Day {
    Day::parse_feed_date(s).unwrap_or_else(|e| panic!("{e}"))
}

fn opt_date(s: &str) -> Option<Day> {
    (!s.trim().is_empty()).then(|| date(s))
}

fn parse_record(row: &HashMap<String, String>) -> CertificateRecord {
    let f = |k: &str| {
        row.get(k)
            .unwrap_or_else(|| panic!("no column {k}"))
            .as_str()
    };
    let number = CertNumber::parse_feed(f("证书编号")).unwrap();
    CertificateRecord {
        number: number.number,
        suffix: number.suffix,
        status: Status::parse(f("证书状态")).unwrap(),
        product_code: ProductCode::parse(f("产品类别代码")).unwrap(),
        product_name: f("产品名称").to_owned(),
        models: split_models(f("型号规格")).map(normalize_model).collect(),
        applicant: f("认证委托人名称").to_owned(),
        producer: f("生产者名称").to_owned(),
        factory: f("生产企业名称").to_owned(),
        issued: date(f("发证日期")),
        expires: date(f("证书到期日期")),
        status_changed: opt_date(f("状态变更日期")),
        status_reason: f("状态变更原因").to_owned(),
        body_name: f("认证机构").to_owned(),
    }
}

/// Reads a drop back: checks the manifest against the files and returns the catalogue (if
/// any), the certificate rows, the headers seen and the raw text of the certificate files.
struct ReadDrop {
    manifest: serde_json::Value,
    catalogue: Option<Catalogue>,
    records: Vec<CertificateRecord>,
    headers: Vec<Vec<String>>,
    text: String,
}

fn read_drop(dir: &Path) -> ReadDrop {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "ccc-feed/1");
    let encoding = manifest["encoding"].as_str().unwrap().to_owned();
    let mut catalogue = None;
    let mut records = Vec::new();
    let mut headers = Vec::new();
    let mut all_text = String::new();
    for file in manifest["files"].as_array().unwrap() {
        let name = file["name"].as_str().unwrap();
        let path = dir.join(name);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            file["sha256"].as_str().unwrap(),
            hex::encode(Sha256::digest(&bytes)),
            "{name}"
        );
        let text = decode(&path, &encoding);
        let (header, rows) = rows(&text);
        assert_eq!(file["rows"].as_u64().unwrap(), rows.len() as u64, "{name}");
        match file["kind"].as_str().unwrap() {
            "catalogue" => {
                let entries = rows
                    .iter()
                    .map(|r| {
                        let code = ProductCode::parse(&r["产品类别代码"]).unwrap();
                        cccgate_core::CatalogueEntry {
                            code,
                            name: r["产品名称"].clone(),
                            category_code: r["大类代码"].parse().unwrap(),
                            category_name: r["大类名称"].clone(),
                            mode: ConformityMode::parse(&r["认证方式"]).unwrap(),
                            from: date(&r["实施日期"]),
                            until: opt_date(&r["截止日期"]),
                        }
                    })
                    .collect();
                let mut sorted = header.clone();
                sorted.retain(|h| h != EXTRA_COLUMN);
                sorted.sort();
                let mut want: Vec<String> =
                    CATALOGUE_COLUMNS.iter().map(|s| s.to_string()).collect();
                want.sort();
                assert_eq!(sorted, want);
                catalogue = Some(Catalogue::new(entries).unwrap());
            }
            "certificates" => {
                records.extend(rows.iter().map(parse_record));
                headers.push(header);
                all_text.push_str(&text);
            }
            other => panic!("kind {other}"),
        }
    }
    ReadDrop {
        manifest,
        catalogue,
        records,
        headers,
        text: all_text,
    }
}

/// The record as the drop should give it back: models normalised (the writer may write them
/// full-width).
fn normalised(r: &CertificateRecord) -> CertificateRecord {
    CertificateRecord {
        models: r.models.iter().map(|m| normalize_model(m)).collect(),
        ..r.clone()
    }
}

fn assert_same_register(got: &ReadDrop, reg: &SyntheticRegister) {
    let mut records = got.records.clone();
    records.sort_by_key(|r| r.number);
    assert_eq!(records.len(), reg.records.len());
    for (a, b) in records.iter().zip(&reg.records) {
        assert_eq!(*a, normalised(b), "{}", b.number);
    }
    assert_eq!(got.catalogue.as_ref(), Some(&reg.catalogue));
}

fn write(dir: &Path, opts: &DropOptions, reg: &SyntheticRegister) -> DropSummary {
    write_drop(dir, opts, Some(&reg.catalogue), reg.records.iter()).unwrap()
}

#[test]
fn plain_utf8_drop_reads_back_as_the_register() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    let opts = DropOptions::full(7);
    let summary = write(dir.path(), &opts, &reg);
    let got = read_drop(dir.path());
    assert_same_register(&got, &reg);
    assert_eq!(got.manifest["kind"], "full");
    assert_eq!(got.manifest["sequence"], 7);
    assert_eq!(got.manifest["source"], "cnca");
    assert_eq!(got.manifest["encoding"], "utf-8");
    assert!(got.manifest.get("base_sequence").is_none());
    assert!(
        got.manifest["generated_at"]
            .as_str()
            .unwrap()
            .ends_with("+08:00")
    );
    assert_eq!(summary.certificates, reg.records.len() as u64);
    assert_eq!(summary.by_status, reg.counts());
    assert_eq!(
        got.headers[0],
        CERTIFICATE_COLUMNS.map(String::from).to_vec()
    );
}

#[test]
fn varied_drop_uses_every_shape_the_contract_allows() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &DropOptions::full(1), &reg);
    let t = read_drop(dir.path()).text;
    for shape in [
        "年",
        "月",
        "日",
        "/",
        "-",
        "；",
        "、",
        "，",
        "\n",
        "\r\n",
        "有效",
        "过期失效",
    ] {
        assert!(t.contains(shape), "no {shape:?}");
    }
    // Statuses as codes, full-width numbers, one-digit months.
    let mut r = csv::Reader::from_reader(t.as_bytes());
    let statuses: Vec<String> = r.records().map(|x| x.unwrap()[1].to_owned()).collect();
    assert!(statuses.iter().any(|s| s == "01"));
    assert!(t.contains('２'));
    assert!(t.lines().any(|l| l.contains("-1-") || l.contains("/1/")));
}

#[test]
fn bom_gzip_shuffled_multi_file_drop_with_an_extra_column_reads_back() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    let opts = DropOptions {
        bom: true,
        gzip: true,
        files: 3,
        shuffle_columns: true,
        extra_column: true,
        seed: 99,
        ..DropOptions::full(2)
    };
    let summary = write(dir.path(), &opts, &reg);
    assert_eq!(summary.files.len(), 4);
    assert!(
        summary.files[1..]
            .iter()
            .all(|f| f.name.ends_with(".csv.gz"))
    );
    let raw = std::fs::read(dir.path().join("catalogue.csv")).unwrap();
    assert!(raw.starts_with(b"\xEF\xBB\xBF"));
    let got = read_drop(dir.path());
    assert_same_register(&got, &reg);
    assert_eq!(got.headers.len(), 3);
    for h in &got.headers {
        assert!(h.iter().any(|c| c == EXTRA_COLUMN));
        assert_eq!(h.len(), CERTIFICATE_COLUMNS.len() + 1);
    }
    assert!(
        got.headers
            .iter()
            .any(|h| h[..] != CERTIFICATE_COLUMNS.map(String::from)[..]),
        "columns were not shuffled"
    );
}

#[test]
fn gbk_drop_reads_back_and_is_not_utf8() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DropOptions {
        gzip: true,
        files: 2,
        ..DropOptions::full(3)
    };
    opts.header.encoding = Encoding::Gbk;
    write(dir.path(), &opts, &reg);
    let got = read_drop(dir.path());
    assert_eq!(got.manifest["encoding"], "gbk");
    assert_same_register(&got, &reg);
    let raw = std::fs::read(dir.path().join("catalogue.csv")).unwrap();
    assert!(
        std::str::from_utf8(&raw).is_err(),
        "GBK bytes are not UTF-8"
    );
}

#[test]
fn canonical_drop_writes_one_shape() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    let opts = DropOptions {
        varied: false,
        ..DropOptions::full(4)
    };
    write(dir.path(), &opts, &reg);
    let got = read_drop(dir.path());
    assert_same_register(&got, &reg);
    assert!(!got.text.contains('年') && !got.text.contains('\r'));
}

#[test]
fn same_options_give_byte_identical_drops() {
    let reg = register();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let opts = DropOptions {
        gzip: true,
        shuffle_columns: true,
        ..DropOptions::full(5)
    };
    let sa = write(a.path(), &opts, &reg);
    let sb = write(b.path(), &opts, &reg);
    assert_eq!(sa.files, sb.files);
    assert_eq!(
        std::fs::read(a.path().join("manifest.json")).unwrap(),
        std::fs::read(b.path().join("manifest.json")).unwrap()
    );
}

#[test]
fn delta_drop_carries_base_sequence_and_the_changes_only() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    let as_of = Day::from_days(reg.as_of.days() + 1);
    let changes = delta_changes(reg.records.iter().cloned(), 50, 1, as_of);
    let opts = DropOptions::delta(8, 7);
    let s = write_drop(dir.path(), &opts, None, changes.iter()).unwrap();
    assert_eq!(s.certificates, 50);
    let got = read_drop(dir.path());
    assert_eq!(got.manifest["kind"], "delta");
    assert_eq!(got.manifest["base_sequence"], 7);
    assert!(got.catalogue.is_none());
    let mut records = got.records;
    records.sort_by_key(|r| r.number);
    let want: Vec<_> = changes.iter().map(normalised).collect();
    assert_eq!(records, want);
}

#[test]
fn a_full_drop_without_a_catalogue_is_refused() {
    let reg = register();
    let dir = tempfile::tempdir().unwrap();
    let err = write_drop(dir.path(), &DropOptions::full(1), None, reg.records.iter());
    assert!(err.is_err());
}

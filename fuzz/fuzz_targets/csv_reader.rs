//! The loader's CSV reading, through a whole drop: the first byte picks the encoding (UTF-8
//! or GBK) and gzip; the rest is `certificates.csv`. A snapshot or a typed refusal, never a
//! panic; a snapshot holds at most the rows read.
#![no_main]

use cccgate_loader::{DropHeader, DropWriter, Encoding, FileKind, LoadOutcome, Loader};
use libfuzzer_sys::fuzz_target;

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
0907,移动电源,09,信息技术设备,证书,2024-08-01,
";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("cccgate-fuzz-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut header = DropHeader::full(1);
    header.encoding = if mode & 1 == 0 { Encoding::Utf8 } else { Encoding::Gbk };
    let name = if mode & 2 == 0 { "certificates.csv" } else { "certificates.csv.gz" };
    let mut w = DropWriter::create(&dir, header).expect("drop dir");
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)
        .expect("catalogue");
    // Rows as the manifest says: a count from the data's line breaks, or a wrong one.
    let rows = if mode & 4 == 0 {
        body.iter().filter(|&&b| b == b'\n').count().saturating_sub(1) as u64
    } else {
        u64::from(mode >> 3)
    };
    w.raw_file(name, FileKind::Certificates, body, rows)
        .expect("certificates");
    w.finish().expect("manifest");
    let loader = Loader::default();
    if let Ok(LoadOutcome::Built { report, .. }) = loader.load(&dir, None) {
        assert!(report.certificates <= report.rows);
        assert_eq!(report.rows, rows);
    }
});

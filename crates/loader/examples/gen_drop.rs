//! Writes a large synthetic full drop (and optionally a delta on it) to measure the loader.
//!
//! `cargo run --release -p cccgate-loader --example gen_drop -- DIR [CERTS] [utf-8|gbk] [gz]
//! [DELTA_ROWS]`
//!
//! Rows look like the register's: Chinese company and product names from pools, one to a
//! few models per certificate (some with a hundred), about 38% valid. Deterministic. The
//! project's `cccgate synth feed` is the general generator; this one exists so the loader's
//! numbers can be reproduced from this crate alone.

use std::fmt::Write as _;
use std::path::Path;

use cccgate_loader::{DropHeader, DropWriter, Encoding, FileKind};

const CATALOGUE: &str = "\
产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期
0901,微型计算机,09,信息技术设备,证书,2002-05-01,
0902,便携式计算机,09,信息技术设备,证书,2002-05-01,
0907,移动电源,09,信息技术设备,证书,2024-08-01,
0201,电源线,02,电路开关及保护或连接用电器装置,证书,2002-05-01,
0701,电视机,07,音视频设备,证书,2002-05-01,
0801,电冰箱,08,家用和类似用途设备,证书,2002-05-01,
0813,电热毯,08,家用和类似用途设备,自我声明,2002-05-01,
1101,汽车,11,机动车辆及安全附件,证书,2002-05-01,
1601,电信终端设备,16,电信终端设备,证书,2002-05-01,
2101,电动自行车,21,电动自行车,证书,2019-11-01,
";

const HEADER: &str = "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构";

const CODES: [(&str, &str); 9] = [
    ("0901", "微型计算机"),
    ("0902", "便携式计算机"),
    ("0907", "移动电源"),
    ("0201", "电源线"),
    ("0701", "液晶电视机"),
    ("0801", "家用电冰箱"),
    ("1101", "乘用车"),
    ("1601", "移动用户终端"),
    ("2101", "电动自行车"),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn company(i: u64) -> String {
    const CITY: [&str; 8] = [
        "深圳", "东莞", "宁波", "苏州", "佛山", "杭州", "青岛", "合肥",
    ];
    const WORD: [&str; 8] = [
        "华科", "创新", "恒通", "伟业", "鼎盛", "宏达", "远航", "中天",
    ];
    const KIND: [&str; 4] = ["电子", "电器", "科技", "实业"];
    format!(
        "{}市{}{}{}有限公司{}",
        CITY[(i % 8) as usize],
        WORD[(i / 8 % 8) as usize],
        KIND[(i / 64 % 4) as usize],
        if i.is_multiple_of(3) { "股份" } else { "" },
        i / 256
    )
}

fn rows(out: &mut String, rng: &mut Rng, numbers: impl Iterator<Item = u64>) -> u64 {
    let mut n = 0;
    for serial in numbers {
        let (code, product) = CODES[rng.below(CODES.len() as u64) as usize];
        let year = 2010 + rng.below(16);
        // The body digits carry the millions, so numbers are unique per serial.
        let number = format!(
            "{year}{:02}{code}{:06}",
            1 + serial / 1_000_000,
            serial % 1_000_000
        );
        let status = match rng.below(100) {
            0..=37 => "有效",
            38..=41 => "暂停",
            42..=45 => "撤销",
            46..=60 => "注销",
            _ => "过期失效",
        };
        let models = if rng.below(1000) == 0 {
            120
        } else {
            1 + rng.below(4)
        };
        let mut m = String::new();
        for k in 0..models {
            if k > 0 {
                m.push('；');
            }
            let _ = write!(
                m,
                "{}-{}{:04}",
                &code[..2],
                (b'A' + rng.below(26) as u8) as char,
                rng.below(10_000)
            );
        }
        let producer = company(rng.below(60_000));
        let factory = company(rng.below(80_000));
        let issued_m = 1 + rng.below(12);
        let changed = if status == "有效" {
            String::new()
        } else {
            format!(
                "{}年{}月{}日",
                2016 + rng.below(10),
                1 + rng.below(12),
                1 + rng.below(28)
            )
        };
        let reason = if changed.is_empty() {
            ""
        } else {
            "证书持有人申请"
        };
        let _ = writeln!(
            out,
            "{number},{status},{code},{product},\"{m}\",{producer},{producer},{factory},{year}-{issued_m:02}-15,{}/{issued_m}/14,{changed},{reason},中国质量认证中心",
            year + 5,
        );
        n += 1;
    }
    n
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map_or("bench-drop", String::as_str));
    let certs: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_200_000);
    let encoding = match args.get(3).map(String::as_str) {
        Some("gbk") => Encoding::Gbk,
        _ => Encoding::Utf8,
    };
    let gz = args.get(4).is_some_and(|s| s == "gz");
    let delta_rows: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut text = String::with_capacity(certs as usize * 330);
    text.push_str(HEADER);
    text.push('\n');
    // Serials are unique per number, so numbers never collide.
    let n = rows(&mut text, &mut rng, 0..certs);
    let mut header = DropHeader::full(1);
    header.encoding = encoding;
    let full = dir.join("full");
    let mut w = DropWriter::create(&full, header.clone())?;
    w.csv_file("catalogue.csv", FileKind::Catalogue, CATALOGUE)?;
    let name = if gz {
        "certificates.csv.gz"
    } else {
        "certificates.csv"
    };
    let bytes = encode(&text, encoding);
    w.raw_file(name, FileKind::Certificates, &bytes, n)?;
    w.finish()?;
    eprintln!(
        "{}: {n} certificates, {} bytes of CSV",
        full.display(),
        bytes.len()
    );

    if delta_rows > 0 {
        // Replays the generator, so the first half of the delta are existing certificates
        // (valid ones turned cancelled); the second half are new serials.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut text = String::from(HEADER);
        text.push('\n');
        let mut n = rows(&mut text, &mut rng, 0..delta_rows / 2);
        // The same certificates with a new status: updates.
        text = text.replace(",有效,", ",注销,");
        n += rows(
            &mut text,
            &mut Rng(42),
            certs..certs + delta_rows - delta_rows / 2,
        );
        header.kind = cccgate_loader::DropKind::Delta;
        header.sequence = 2;
        header.base_sequence = Some(1);
        let delta = dir.join("delta");
        let mut w = DropWriter::create(&delta, header)?;
        w.raw_file(
            "changes.csv",
            FileKind::Certificates,
            &encode(&text, encoding),
            n,
        )?;
        w.finish()?;
        eprintln!("{}: {n} rows", delta.display());
    }
    Ok(())
}

fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        Encoding::Gbk => encoding_rs::GBK.encode(text).0.into_owned(),
    }
}

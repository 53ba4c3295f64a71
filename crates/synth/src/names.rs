//! Company names and model strings, built from parts.
//!
//! Producers form one shared population with a home category each (a lighting factory makes
//! lamps), drawn per certificate with a power-law skew so a few producers hold thousands of
//! certificates; applicants and factories are mostly the producer itself or its own factories.
//! Names are `城市 + 字号 + 行业 + 组织形式`, e.g. `深圳市鑫达电子有限公司`, with some
//! `（深圳）` / `（集团）` forms (full-width parentheses, as Chinese company names write them)
//! and a few foreign producers with ASCII names that need CSV quoting (`Co., Ltd.`).
//!
//! Models are ASCII in the register (`ABC-1234X`, `KFR-35GW/ABC123`, some with spaces or in
//! lower case). No register model ever ends in `MAX` or `ULTRA` after normalisation: listings
//! that must not be covered append one of those, which makes "not covered" true by
//! construction instead of by a search.

use std::fmt::Write as _;

use crate::rng::{Rng, Weighted, Zipf, mix64};

const CITIES: &[(&str, &str, u32)] = &[
    ("深圳市", "深圳", 20),
    ("东莞市", "东莞", 10),
    ("广州市", "广州", 6),
    ("佛山市", "佛山", 6),
    ("中山市", "中山", 6),
    ("惠州市", "惠州", 3),
    ("江门市", "江门", 2),
    ("汕头市澄海区", "汕头", 3),
    ("宁波市", "宁波", 6),
    ("慈溪市", "慈溪", 3),
    ("温州市", "温州", 3),
    ("乐清市", "乐清", 3),
    ("杭州市", "杭州", 3),
    ("苏州市", "苏州", 4),
    ("昆山市", "昆山", 2),
    ("无锡市", "无锡", 2),
    ("常州市", "常州", 2),
    ("上海", "上海", 5),
    ("北京", "北京", 3),
    ("天津", "天津", 2),
    ("厦门市", "厦门", 2),
    ("泉州市", "泉州", 2),
    ("青岛市", "青岛", 2),
    ("重庆", "重庆", 2),
    ("成都市", "成都", 2),
    ("武汉市", "武汉", 2),
    ("合肥市", "合肥", 2),
    ("长沙市", "长沙", 1),
    ("义乌市", "义乌", 2),
    ("台州市", "台州", 2),
];

const SYLLABLES: [&str; 64] = [
    "华", "盛", "达", "鑫", "泰", "隆", "宏", "信", "源", "创", "科", "恒", "远", "德", "丰", "瑞",
    "辉", "美", "佳", "联", "通", "捷", "诚", "海", "天", "金", "明", "光", "新", "安", "康", "福",
    "星", "力", "兴", "宇", "凯", "思", "博", "锐", "晨", "正", "和", "嘉", "永", "昌", "汇", "立",
    "亿", "特", "万", "俊", "腾", "耀", "高", "益", "飞", "格", "顺", "全", "众", "奥", "威", "豪",
];

const LATIN: [&str; 16] = [
    "Sun", "Star", "Ever", "Bright", "Grand", "Pacific", "Nova", "Alpha", "Ocean", "Royal",
    "Orient", "Summit", "Vertex", "Lumen", "Delta", "Harbor",
];

/// Industry words by category, so a producer's name says what it makes.
fn industries(category: u8) -> &'static [&'static str] {
    match category {
        1 => &["电线电缆", "线缆", "电缆"],
        2 | 3 => &["电器", "电气", "电工", "开关"],
        4..=6 => &["电机", "电动工具", "机电", "焊接设备"],
        7 => &["电器", "家电", "电器制造", "厨卫电器"],
        8 => &["电子", "音响", "数码", "视听科技"],
        9 => &["电子", "科技", "计算机", "电源", "新能源"],
        10 => &["照明", "光电", "灯饰", "照明电器"],
        11 => &["汽车", "车业", "汽车部件", "车辆"],
        12 => &["轮胎", "橡胶"],
        13 => &["玻璃", "安全玻璃"],
        14 => &["农业机械", "农机"],
        16 => &["通讯", "通信", "移动通信"],
        21 => &["涂料", "陶瓷", "建材"],
        22 => &["玩具", "童车", "儿童用品"],
        _ => &["实业"],
    }
}

/// How a producer's models look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModelStyle {
    Generic,
    AirConditioner,
    Phone,
    Vehicle,
    Lamp,
    Cable,
}

impl ModelStyle {
    pub(crate) fn for_code(code: u16) -> Self {
        match code {
            703 => ModelStyle::AirConditioner,
            1606 | 1608 | 1609 => ModelStyle::Phone,
            1101..=1103 => ModelStyle::Vehicle,
            1001 | 1106 => ModelStyle::Lamp,
            101 | 102 => ModelStyle::Cable,
            _ => ModelStyle::Generic,
        }
    }
}

/// A producer: its name, the letters its models start with, its own factories.
#[derive(Clone, Debug)]
pub(crate) struct Producer {
    pub name: String,
    pub brand: String,
    pub factories: [String; 2],
}

/// The shared populations of producers (by category) and of applicants.
#[derive(Debug)]
pub(crate) struct Populations {
    pub producers: Vec<Producer>,
    /// Per category code (index), the producers at home there, most prolific first.
    by_category: Vec<Option<(Vec<u32>, Zipf)>>,
    applicants: Vec<String>,
    applicant_rank: Zipf,
}

/// Producers per certificate on average: about 20, so 1.2M certificates come from ~60,000
/// producers, the most prolific with thousands.
const CERTS_PER_PRODUCER: usize = 20;

impl Populations {
    /// Populations for a register of `certs` certificates whose categories have these
    /// relative weights (index = category code).
    pub(crate) fn new(seed: u64, certs: usize, category_weights: &[u32; 100]) -> Self {
        let mut rng = Rng::new(seed);
        let cities = Weighted::new(CITIES.iter().map(|c| f64::from(c.2)));
        let total_w: u64 = category_weights.iter().map(|&w| u64::from(w)).sum();
        let total = (certs / CERTS_PER_PRODUCER).max(50);
        let mut producers = Vec::with_capacity(total + 100);
        let mut by_category = Vec::with_capacity(100);
        for (cat, &w) in category_weights.iter().enumerate() {
            if w == 0 {
                by_category.push(None);
                continue;
            }
            let n = ((total as u64 * u64::from(w)) / total_w.max(1)).max(3) as usize;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(producers.len() as u32);
                let idx = producers.len() as u64;
                producers.push(make_producer(&mut rng, &cities, cat as u8, idx));
            }
            let zipf = Zipf::new(n as u64, 0.9);
            by_category.push(Some((ids, zipf)));
        }
        let n_app = (total / 3).max(20);
        let applicants = (0..n_app)
            .map(|_| {
                let city = CITIES[cities.sample(&mut rng)].0;
                let core = core_name(&mut rng);
                let kind = rng.pick(&["贸易", "科技", "实业", "进出口", "电子商务", "品牌管理"]);
                format!("{city}{core}{kind}有限公司")
            })
            .collect();
        Populations {
            producers,
            by_category,
            applicants,
            applicant_rank: Zipf::new(n_app as u64, 0.9),
        }
    }

    /// A producer for a certificate of this category.
    pub(crate) fn producer(&self, rng: &mut Rng, category: u8) -> u32 {
        match self.by_category.get(usize::from(category)) {
            Some(Some((ids, zipf))) => ids[zipf.sample(rng) as usize],
            _ => rng.below(self.producers.len() as u64) as u32,
        }
    }

    /// The applicant (`认证委托人`) of a certificate: usually the producer itself.
    pub(crate) fn applicant<'a>(&'a self, rng: &mut Rng, producer: &'a Producer) -> &'a str {
        if rng.chance(0.75) {
            &producer.name
        } else {
            &self.applicants[self.applicant_rank.sample(rng) as usize]
        }
    }

    /// The factory (`生产企业`): the producer itself or one of its own factories.
    pub(crate) fn factory<'a>(&self, rng: &mut Rng, producer: &'a Producer) -> &'a str {
        match rng.below(10) {
            0..=4 => &producer.name,
            5..=7 => &producer.factories[0],
            _ => &producer.factories[1],
        }
    }
}

fn core_name(rng: &mut Rng) -> String {
    let a = rng.pick(&SYLLABLES);
    let mut b = rng.pick(&SYLLABLES);
    if a == b {
        b = SYLLABLES[(SYLLABLES.iter().position(|s| *s == a).unwrap_or(0) + 7) % 64];
    }
    format!("{a}{b}")
}

fn make_producer(rng: &mut Rng, cities: &Weighted, category: u8, index: u64) -> Producer {
    let (city, short, _) = CITIES[cities.sample(rng)];
    let core = core_name(rng);
    let industry = rng.pick(industries(category));
    let name = match rng.below(100) {
        0..=3 => {
            let a = rng.pick(&LATIN);
            let b = rng.pick(&["tech", "tron", "wave", "line", "light", "power"]);
            let kind = rng.pick(&[
                "Electronics Co., Ltd.",
                "Industrial Co., Ltd.",
                "Technology Co., Ltd.",
                "Corporation",
                "GmbH",
            ]);
            format!("{a}{b} {kind}")
        }
        4..=11 => format!("{core}{industry}（{short}）有限公司"),
        12..=16 => format!("{city}{core}{industry}（集团）有限公司"),
        17..=31 => format!("{city}{core}{industry}股份有限公司"),
        32..=39 => format!("{city}{core}{industry}有限责任公司"),
        _ => format!("{city}{core}{industry}有限公司"),
    };
    let (city2, short2, _) = CITIES[cities.sample(rng)];
    let factories = [
        format!("{city2}{core}{industry}厂"),
        format!("{city}{core}{industry}有限公司{short2}分公司"),
    ];
    Producer {
        name,
        brand: brand(index),
        factories,
    }
}

/// Two or three capital letters (no I or O, which read as digits), fixed per producer.
fn brand(index: u64) -> String {
    const L: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    let h = mix64(index ^ 0xb7a4_d5e1);
    let len = 2 + (h % 2) as usize;
    (0..len)
        .map(|i| L[((h >> (8 + 8 * i)) % L.len() as u64) as usize] as char)
        .collect()
}

/// Suffixes of generic models. None of them is or ends with `MAX` or `ULTRA`.
const SUFFIXES: [&str; 13] = [
    "", "A", "B", "C", "S", "X", "T", "L", "E", "PRO", "PLUS", "MINI", "LITE",
];

/// Endings that make a covered model into one no certificate covers (see the module doc).
pub(crate) const NOT_COVERED: [&str; 4] = [" Max", "-ULTRA", " Pro Max", "MAX"];

/// How a certificate writes its models.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Spelling {
    Canonical,
    SpaceForDash,
    Lower,
}

/// The per-certificate parameters of its model list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModelFamily {
    pub style: ModelStyle,
    pub base: u32,
    pub step: u32,
    pub variant: u64,
    pub spelling: Spelling,
}

impl ModelFamily {
    pub(crate) fn new(rng: &mut Rng, code: u16) -> Self {
        let spelling = match rng.below(100) {
            0..=7 => Spelling::SpaceForDash,
            8..=11 => Spelling::Lower,
            _ => Spelling::Canonical,
        };
        ModelFamily {
            style: ModelStyle::for_code(code),
            base: rng.below(9000) as u32 + 100,
            step: 1 + rng.below(5) as u32,
            variant: rng.next_u64(),
            spelling,
        }
    }

    /// Writes model `j` of the family. Distinct `j` give distinct normalised models.
    pub(crate) fn write(&self, out: &mut String, brand: &str, j: u32) {
        let start = out.len();
        let v = self.variant;
        let n = self.base + j * self.step;
        // `write!` to a String cannot fail.
        let _ = match self.style {
            ModelStyle::Generic => {
                let suffix = SUFFIXES[((v >> 3) as usize + j as usize / 50) % SUFFIXES.len()];
                write!(out, "{brand}-{n}{suffix}")
            }
            ModelStyle::AirConditioner => {
                const CAP: [u32; 7] = [23, 26, 32, 35, 50, 51, 72];
                let cap = CAP[(v as usize + j as usize) % CAP.len()];
                let kind = if (v >> 8) & 1 == 0 { "GW" } else { "LW" };
                write!(out, "KFR-{cap}{kind}/{brand}{n}")
            }
            ModelStyle::Phone => {
                const NET: [&str; 6] = ["AL", "AN", "TL", "TN", "LX", "NX"];
                let net = NET[(v as usize + j as usize) % NET.len()];
                write!(
                    out,
                    "{brand}-{net}{:02}",
                    (n + j * 10) % 100 + 100 * (j / 60)
                )
            }
            ModelStyle::Vehicle => {
                const KIND: [&str; 6] = ["BEV", "PHEV", "HEV", "M", "S", "D"];
                let kind = KIND[(v >> 4) as usize % KIND.len()];
                write!(out, "{brand}{}{n:04}{kind}", 6 + (v & 1))
            }
            ModelStyle::Lamp => {
                const KIND: [&str; 5] = ["LED", "XD", "DD", "TD", "BD"];
                const W: [u32; 8] = [5, 9, 12, 18, 24, 36, 48, 72];
                let kind = KIND[(v >> 2) as usize % KIND.len()];
                let w = W[j as usize % W.len()];
                write!(out, "{brand}-{kind}{}-{w}W", n + (j / 8) * self.step)
            }
            ModelStyle::Cable => {
                const KIND: [&str; 5] = ["BV", "BVR", "RVV", "RV", "YJV"];
                const SIZE: [&str; 8] = ["0.75", "1", "1.5", "2.5", "4", "6", "10", "16"];
                let kind = KIND[(v >> 2) as usize % KIND.len()];
                let cores = 1 + (j / 8) % 5;
                let size = SIZE[j as usize % SIZE.len()];
                if j < 40 {
                    write!(out, "{kind} {cores}x{size}")
                } else {
                    write!(out, "{kind} {cores}x{size}/{j}")
                }
            }
        };
        match self.spelling {
            Spelling::Canonical => {}
            Spelling::SpaceForDash => {
                // Only the first dash, as people write `ABC 1234`.
                if let Some(p) = out[start..].find('-') {
                    out.replace_range(start + p..start + p + 1, " ");
                }
            }
            Spelling::Lower => out[start..].make_ascii_lowercase(),
        }
    }
}

/// Writes `text` in full-width forms (`ABC-1` -> `ＡＢＣ－１`, space -> ideographic space).
pub(crate) fn push_full_width(out: &mut String, text: &str) {
    for c in text.chars() {
        out.push(full_width(c));
    }
}

pub(crate) fn full_width(c: char) -> char {
    match c {
        ' ' => '\u{3000}',
        '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c),
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use cccgate_core::normalize_model;

    use super::*;

    #[test]
    fn models_of_one_certificate_are_distinct_after_normalisation() {
        let mut rng = Rng::new(9);
        for code in [101, 703, 1606, 1101, 1001, 901] {
            for _ in 0..20 {
                let f = ModelFamily::new(&mut rng, code);
                let mut seen = HashSet::new();
                for j in 0..400 {
                    let mut s = String::new();
                    f.write(&mut s, "ABC", j);
                    assert!(seen.insert(normalize_model(&s)), "{code}: duplicate {s}");
                }
            }
        }
    }

    #[test]
    fn no_register_model_ends_like_a_not_covered_model() {
        let mut rng = Rng::new(10);
        for code in [101, 703, 1606, 1101, 1001, 901, 2202] {
            for _ in 0..50 {
                let f = ModelFamily::new(&mut rng, code);
                for j in 0..300 {
                    let mut s = String::new();
                    f.write(&mut s, &brand(rng.next_u64()), j);
                    let n = normalize_model(&s);
                    assert!(!n.ends_with("MAX") && !n.ends_with("ULTRA"), "{s}");
                    assert!(s.is_ascii());
                }
            }
        }
    }

    #[test]
    fn full_width_text_normalises_back() {
        let mut s = String::new();
        push_full_width(&mut s, "abc-12 X");
        assert_eq!(s, "ａｂｃ－１２\u{3000}Ｘ");
        assert_eq!(normalize_model(&s), "ABC-12X");
    }

    #[test]
    fn company_names_look_chinese_and_producers_are_skewed() {
        let mut weights = [0u32; 100];
        weights[9] = 10;
        weights[10] = 5;
        let pops = Populations::new(1, 20_000, &weights);
        let mut rng = Rng::new(2);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            *counts.entry(pops.producer(&mut rng, 9)).or_insert(0u32) += 1;
        }
        let top = counts.values().max().copied().unwrap_or(0);
        assert!(
            top > 10_000 / counts.len() as u32 * 10,
            "top producer {top} of {}",
            counts.len()
        );
        let chinese = pops
            .producers
            .iter()
            .filter(|p| p.name.ends_with("公司"))
            .count();
        assert!(chinese * 10 > pops.producers.len() * 9);
    }
}

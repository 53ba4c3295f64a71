//! The synthetic CCC product catalogue: 16 categories and 96 product types in force, plus the
//! types the 2023 revision removed, and the lithium cells and power banks added on 2024-08-01.
//!
//! Codes and names follow the real CCC catalogue where this author knows them (the category
//! codes, `0101` 电线电缆, `0201` 插头插座, the `07` household appliances, `0901` 微型计算机,
//! `0902` 便携式计算机, `1001` 灯具, `1101` 汽车, `1606` 移动用户终端, `2201` 童车 ...). Rows
//! marked `illustrative` in [`TYPES`] have a code, name, mode or date chosen to be plausible
//! rather than copied from the regulator; so are every 实施日期 other than 2002-05-01 and the
//! revision date. Which types are shown by self-declaration is illustrative too (the real
//! catalogue moved several low-voltage, motor, tool and welder types to 自我声明 around 2019).
//! None of this matters to the gateway, which reads the catalogue from the feed.

use cccgate_core::{Catalogue, CatalogueEntry, ConformityMode, Day, ProductCode};

/// A product type of the synthetic catalogue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeSpec {
    pub code: u16,
    pub name: &'static str,
    pub mode: ConformityMode,
    /// `实施日期` as (year, month, day).
    pub from: (i32, u32, u32),
    /// `截止日期`, if the type left the catalogue.
    pub until: Option<(i32, u32, u32)>,
    /// Relative share of certificates (and of certificate-bearing listings) of this type.
    pub weight: u32,
}

use ConformityMode::{Certificate as C, SelfDeclaration as S};

const CCC: (i32, u32, u32) = (2002, 5, 1);
/// The 2023 catalogue revision (illustrative date).
pub(crate) const REVISION_2023: (i32, u32, u32) = (2023, 7, 1);
/// Lithium cells and power banks enter the catalogue.
pub(crate) const BATTERIES_FROM: (i32, u32, u32) = (2024, 8, 1);
const R: Option<(i32, u32, u32)> = Some(REVISION_2023);

const fn t(code: u16, name: &'static str, mode: ConformityMode, weight: u32) -> TypeSpec {
    TypeSpec {
        code,
        name,
        mode,
        from: CCC,
        until: None,
        weight,
    }
}

const fn since(code: u16, name: &'static str, from: (i32, u32, u32), weight: u32) -> TypeSpec {
    TypeSpec {
        code,
        name,
        mode: C,
        from,
        until: None,
        weight,
    }
}

const fn removed(code: u16, name: &'static str, weight: u32) -> TypeSpec {
    TypeSpec {
        code,
        name,
        mode: C,
        from: CCC,
        until: R,
        weight,
    }
}

/// Category codes and names: 16 in force, and `14` 农机产品, removed whole at the 2023
/// revision (so the catalogue reads 17 categories before it and 16 after, as in the spec).
pub(crate) const CATEGORIES: [(u8, &str); 17] = [
    (1, "电线电缆"),
    (2, "电路开关及保护或连接用电器装置"),
    (3, "低压电器"),
    (4, "小功率电动机"),
    (5, "电动工具"),
    (6, "电焊机"),
    (7, "家用和类似用途设备"),
    (8, "音视频设备"),
    (9, "信息技术设备"),
    (10, "照明电器"),
    (11, "机动车辆及安全附件"),
    (12, "机动车辆轮胎"),
    (13, "安全玻璃"),
    (14, "农机产品"),
    (16, "电信终端设备"),
    (21, "装饰装修产品"),
    (22, "儿童用品"),
];

/// Every product type. Weights are relative shares of certificates: lighting, adapters,
/// phones, plugs, cables and toys dominate the real register.
pub(crate) const TYPES: &[TypeSpec] = &[
    t(101, "电线电缆", C, 40),
    t(102, "电线组件", C, 15),
    t(201, "插头插座", C, 40),
    t(202, "家用和类似用途固定式电气装置的开关", C, 20),
    t(203, "器具耦合器", C, 10),
    t(204, "家用和类似用途固定式电气装置电器附件外壳", C, 4),
    t(205, "转换器", C, 12),     // illustrative
    t(206, "延长线插座", C, 18), // illustrative
    t(301, "断路器", C, 12),
    t(302, "漏电保护器", C, 8),
    t(303, "熔断器", S, 3),
    t(304, "低压开关", S, 3),
    t(306, "继电器", S, 3),
    t(309, "低压成套开关设备", C, 10),
    t(401, "小功率电动机", S, 4),
    t(501, "电钻", S, 4),
    t(502, "电动螺丝刀和冲击扳手", S, 3),
    t(503, "电动砂轮机", S, 2),
    t(505, "圆锯", S, 2),
    t(506, "电锤", S, 3),
    t(512, "电链锯", S, 1),
    t(601, "小型交流弧焊机", C, 2),
    t(602, "交流弧焊机", S, 1),
    t(603, "直流弧焊机", S, 1),
    t(607, "等离子弧切割机", S, 1),
    t(701, "家用电冰箱和食品冷冻箱", C, 20),
    t(702, "电风扇", C, 18),
    t(703, "空调器", C, 25),
    t(704, "电动机-压缩机", C, 6),
    t(705, "家用电动洗衣机", C, 14),
    t(706, "电热水器", C, 12),
    t(707, "室内加热器", C, 12),
    t(708, "真空吸尘器", C, 10),
    t(709, "皮肤和毛发护理器具", C, 14),
    t(710, "电熨斗", C, 6),
    t(711, "电磁灶", C, 8),
    t(712, "电烤箱", C, 6),
    t(713, "电动食品加工器具", C, 12),
    t(714, "微波炉", C, 6),
    t(715, "电灶、灶台、烤炉和类似器具", C, 5),
    t(716, "吸油烟机", C, 8),
    t(717, "液体加热器和冷热饮水机", C, 12),
    t(718, "电饭锅", C, 10),
    t(
        801,
        "总输出功率在500W以下的单扬声器和多扬声器有源音箱",
        C,
        14,
    ),
    t(802, "音频功率放大器", C, 5),
    t(803, "各种广播波段的收音机", C, 3),
    t(804, "各类载体形式的音视频录制、播放及处理设备", C, 6),
    t(806, "音视频设备配套的电源适配器", C, 10),
    t(807, "电视机", C, 12),
    t(808, "电子琴", C, 3), // illustrative code
    t(901, "微型计算机", C, 28),
    t(902, "便携式计算机", C, 22),
    t(903, "与计算机连用的显示设备", C, 18),
    t(904, "与计算机相连的打印设备", C, 8),
    t(905, "多用途打印复印机", C, 6),
    t(906, "扫描仪", C, 3),
    t(907, "计算机内置电源及电源适配器充电器", C, 60),
    t(908, "电脑游戏机", C, 4),
    t(909, "学习机", C, 4),
    t(910, "复印机", C, 2),
    since(911, "服务器", (2005, 1, 1), 8), // illustrative date
    t(912, "金融及贸易结算电子设备", C, 4),
    since(913, "锂离子电池和电池组", BATTERIES_FROM, 12), // illustrative code
    since(914, "移动电源", BATTERIES_FROM, 14),           // illustrative code
    t(1001, "灯具", C, 90),
    t(1002, "镇流器", C, 20),
    t(1101, "汽车", C, 30),
    t(1102, "摩托车", C, 10),
    since(1103, "电动自行车", (2019, 11, 1), 14), // illustrative code
    t(1104, "汽车安全带", C, 4),
    t(1105, "摩托车乘员头盔", C, 6),
    t(1106, "机动车外部照明及光信号装置", C, 10),
    t(1107, "机动车辆间接视野装置", C, 5),
    since(1108, "汽车行驶记录仪", (2015, 1, 1), 3), // illustrative code and date
    since(1110, "汽车座椅及座椅头枕", (2015, 1, 1), 4), // illustrative code and date
    t(1201, "轿车轮胎", C, 8),
    t(1202, "载重汽车轮胎", C, 5),
    t(1203, "摩托车轮胎", C, 3),
    t(1301, "汽车安全玻璃", C, 6),
    t(1302, "建筑安全玻璃", C, 6),
    removed(1303, "铁道车辆用安全玻璃", 1), // removed: illustrative
    removed(1401, "植物保护机械", 2),
    removed(1402, "轮式拖拉机", 2),
    t(1601, "调制解调器（含卡）", C, 3),
    removed(1602, "传真机", 2),
    t(1603, "固定电话终端", C, 4),
    t(1604, "无绳电话终端", C, 3),
    removed(1605, "集团电话", 1),
    t(1606, "移动用户终端", C, 45),
    removed(1607, "ISDN终端", 1),
    t(1608, "数据终端（含卡）", C, 8),
    t(1609, "多媒体终端", C, 8),
    removed(805, "以上设备的组合", 2), // illustrative removal
    since(2101, "溶剂型木器涂料", (2005, 1, 1), 5), // illustrative date
    since(2102, "瓷质砖", (2005, 1, 1), 6),
    since(2103, "混凝土防冻剂", (2005, 1, 1), 2),
    since(2201, "童车", (2007, 6, 1), 12),
    since(2202, "电玩具", (2007, 6, 1), 20),
    since(2203, "塑胶玩具", (2007, 6, 1), 22),
    since(2204, "金属玩具", (2007, 6, 1), 6),
    since(2205, "弹射玩具", (2007, 6, 1), 4),
    since(2206, "娃娃玩具", (2007, 6, 1), 8),
    since(2207, "机动车儿童乘员用约束系统", (2015, 9, 1), 6),
];

pub(crate) fn ymd((y, m, d): (i32, u32, u32)) -> Day {
    // The table holds only real dates; a typo here is a bug caught by the unit tests.
    Day::from_ymd(y, m, d).unwrap_or(Day::from_days(0))
}

pub(crate) fn category_name(category: u8) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(c, _)| *c == category)
        .map_or("", |(_, n)| n)
}

/// The synthetic catalogue as the feed carries it.
pub fn catalogue() -> Catalogue {
    let entries = TYPES
        .iter()
        .map(|t| {
            let code = ProductCode::new(t.code).unwrap_or(ProductCode::ZERO);
            CatalogueEntry {
                code,
                name: t.name.to_owned(),
                category_code: code.category(),
                category_name: category_name(code.category()).to_owned(),
                mode: t.mode,
                from: ymd(t.from),
                until: t.until.map(ymd),
            }
        })
        .collect();
    // The table is a constant checked by the tests below: it cannot fail at run time.
    Catalogue::new(entries).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Day {
        Day::from_ymd(y, m, d).unwrap()
    }

    #[test]
    fn catalogue_is_consistent_and_complete() {
        let c = catalogue();
        assert_eq!(c.entries().len(), TYPES.len());
        for t in TYPES {
            assert!(Day::from_ymd(t.from.0, t.from.1, t.from.2).is_some());
            assert!(
                CATEGORIES
                    .iter()
                    .any(|(k, _)| u16::from(*k) == t.code / 100),
                "{}",
                t.code
            );
        }
    }

    #[test]
    fn sixteen_categories_and_about_96_types_are_in_force_today() {
        let c = catalogue();
        let today = day(2026, 11, 27);
        let in_force: Vec<_> = c
            .entries()
            .iter()
            .filter(|e| e.in_force_on(today))
            .collect();
        let categories: BTreeSet<u8> = in_force.iter().map(|e| e.category_code).collect();
        assert_eq!(categories.len(), 16);
        assert_eq!(in_force.len(), 96);
        // Before the 2023 revision: 17 categories, and no batteries yet.
        let before = day(2022, 1, 1);
        let old: Vec<_> = c
            .entries()
            .iter()
            .filter(|e| e.in_force_on(before))
            .collect();
        let old_categories: BTreeSet<u8> = old.iter().map(|e| e.category_code).collect();
        assert_eq!(old_categories.len(), 17);
        assert_eq!(old.len(), 96 - 2 + 7);
    }

    #[test]
    fn power_banks_enter_on_2024_08_01_and_removed_types_leave_in_2023() {
        let c = catalogue();
        let bank = ProductCode::new(914).unwrap();
        assert!(c.in_force(bank, day(2024, 7, 31)).is_none());
        assert!(c.in_force(bank, day(2024, 8, 1)).is_some());
        let fax = ProductCode::new(1602).unwrap();
        assert!(c.in_force(fax, day(2023, 6, 30)).is_some());
        assert!(c.in_force(fax, day(2023, 7, 1)).is_none());
        assert!(c.contains(fax));
    }

    #[test]
    fn some_types_are_self_declared() {
        let c = catalogue();
        let sd = c
            .entries()
            .iter()
            .filter(|e| e.mode == ConformityMode::SelfDeclaration)
            .count();
        assert!(sd >= 5, "{sd}");
        assert_eq!(
            c.in_force(ProductCode::new(1606).unwrap(), day(2026, 1, 1))
                .map(|e| e.name.as_str()),
            Some("移动用户终端")
        );
    }
}

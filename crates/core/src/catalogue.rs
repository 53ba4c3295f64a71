//! The CCC product catalogue: which product types need CCC, since and until when, and whether
//! conformity is shown by a certificate or by self-declaration.
//!
//! The catalogue changes over time (17 categories in 2021, 16 after the 2023 revision, power
//! banks added from 2024-08-01), so it is data that arrives with the feed, never code.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::date::Day;

/// A 4-digit CCC product code: 2-digit category and 2-digit product, e.g. `0901`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductCode(u16);

impl ProductCode {
    /// `0000`, used only where no code is known.
    pub const ZERO: ProductCode = ProductCode(0);

    /// The code for this integer, if it has at most 4 digits.
    pub const fn new(code: u16) -> Option<Self> {
        if code <= 9999 {
            Some(ProductCode(code))
        } else {
            None
        }
    }

    /// Reads exactly 4 ASCII digits.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(ProductCode(
            b.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')),
        ))
    }

    /// The code as an integer.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The 2-digit category code.
    pub const fn category(self) -> u8 {
        (self.0 / 100) as u8
    }
}

impl fmt::Display for ProductCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// How conformity of a product type is shown (`认证方式`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConformityMode {
    /// `证书`: a CCC certificate is required.
    Certificate,
    /// `自我声明`: the producer declares conformity; listings need no certificate.
    SelfDeclaration,
}

impl ConformityMode {
    /// Reads the catalogue's `认证方式` column.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "证书" => Some(ConformityMode::Certificate),
            "自我声明" => Some(ConformityMode::SelfDeclaration),
            _ => None,
        }
    }

    /// The catalogue's word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConformityMode::Certificate => "证书",
            ConformityMode::SelfDeclaration => "自我声明",
        }
    }
}

/// One row of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueEntry {
    /// `产品类别代码`.
    pub code: ProductCode,
    /// `产品名称`.
    pub name: String,
    /// `大类代码`.
    pub category_code: u8,
    /// `大类名称`.
    pub category_name: String,
    /// `认证方式`.
    pub mode: ConformityMode,
    /// `实施日期`: in the catalogue from this day.
    pub from: Day,
    /// `截止日期`: out of the catalogue from this day (exclusive end), if set.
    pub until: Option<Day>,
}

impl CatalogueEntry {
    /// Whether the entry is in force on `day`: from `实施日期` up to, not including,
    /// `截止日期`.
    pub fn in_force_on(&self, day: Day) -> bool {
        self.from <= day && self.until.is_none_or(|u| day < u)
    }
}

/// A catalogue that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// The category code does not match the first two digits of the product code.
    #[error("product code {code} is not in category {category:02}")]
    CategoryMismatch {
        /// The product code.
        code: ProductCode,
        /// The category given for it.
        category: u8,
    },
    /// Two entries for one code overlap in time.
    #[error("product code {0} has two entries in force on the same day")]
    Overlap(ProductCode),
    /// `截止日期` is not after `实施日期`.
    #[error("product code {0}: 截止日期 is not after 实施日期")]
    EmptyPeriod(ProductCode),
}

/// The whole catalogue, sorted by code then start date.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    entries: Vec<CatalogueEntry>,
}

impl Catalogue {
    /// Builds a catalogue, checking that each entry is consistent and that no code has two
    /// entries in force on one day.
    pub fn new(mut entries: Vec<CatalogueEntry>) -> Result<Self, CatalogueError> {
        entries.sort_by_key(|e| (e.code, e.from));
        for e in &entries {
            if e.code.category() != e.category_code {
                return Err(CatalogueError::CategoryMismatch {
                    code: e.code,
                    category: e.category_code,
                });
            }
            if e.until.is_some_and(|u| u <= e.from) {
                return Err(CatalogueError::EmptyPeriod(e.code));
            }
        }
        for w in entries.windows(2) {
            if w[0].code == w[1].code && w[0].until.is_none_or(|u| u > w[1].from) {
                return Err(CatalogueError::Overlap(w[0].code));
            }
        }
        Ok(Catalogue { entries })
    }

    /// All entries, sorted by code then start date.
    pub fn entries(&self) -> &[CatalogueEntry] {
        &self.entries
    }

    /// Whether any entry (in force or not) has this code.
    pub fn contains(&self, code: ProductCode) -> bool {
        self.entries.binary_search_by_key(&code, |e| e.code).is_ok()
    }

    /// The entry for `code` in force on `day`.
    pub fn in_force(&self, code: ProductCode, day: Day) -> Option<&CatalogueEntry> {
        let start = self.entries.partition_point(|e| e.code < code);
        self.entries[start..]
            .iter()
            .take_while(|e| e.code == code)
            .find(|e| e.in_force_on(day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: u16, from: (i32, u32, u32), until: Option<(i32, u32, u32)>) -> CatalogueEntry {
        let p = ProductCode::new(code).unwrap();
        CatalogueEntry {
            code: p,
            name: "x".into(),
            category_code: p.category(),
            category_name: "y".into(),
            mode: ConformityMode::Certificate,
            from: Day::from_ymd(from.0, from.1, from.2).unwrap(),
            until: until.map(|u| Day::from_ymd(u.0, u.1, u.2).unwrap()),
        }
    }

    #[test]
    fn product_codes_are_exactly_four_digits() {
        assert_eq!(ProductCode::parse("0901").unwrap().get(), 901);
        assert_eq!(ProductCode::parse("0901").unwrap().to_string(), "0901");
        assert_eq!(ProductCode::parse("0901").unwrap().category(), 9);
        for bad in ["901", "09010", "09a1", "", "０９０１", " 0901"] {
            assert!(ProductCode::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn entry_is_in_force_from_its_start_until_the_day_before_its_end() {
        let c = Catalogue::new(vec![entry(901, (2024, 8, 1), Some((2025, 1, 1)))]).unwrap();
        let code = ProductCode::new(901).unwrap();
        let d = |y, m, dd| Day::from_ymd(y, m, dd).unwrap();
        assert!(c.in_force(code, d(2024, 7, 31)).is_none());
        assert!(c.in_force(code, d(2024, 8, 1)).is_some());
        assert!(c.in_force(code, d(2024, 12, 31)).is_some());
        assert!(c.in_force(code, d(2025, 1, 1)).is_none());
        assert!(c.contains(code));
        assert!(!c.contains(ProductCode::new(902).unwrap()));
    }

    #[test]
    fn overlapping_entries_are_refused_and_successive_ones_accepted() {
        assert_eq!(
            Catalogue::new(vec![
                entry(901, (2020, 1, 1), None),
                entry(901, (2024, 1, 1), None)
            ]),
            Err(CatalogueError::Overlap(ProductCode::new(901).unwrap()))
        );
        let ok = Catalogue::new(vec![
            entry(901, (2020, 1, 1), Some((2024, 1, 1))),
            entry(901, (2024, 1, 1), None),
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn category_must_match_the_code() {
        let mut e = entry(901, (2020, 1, 1), None);
        e.category_code = 8;
        assert!(matches!(
            Catalogue::new(vec![e]),
            Err(CatalogueError::CategoryMismatch { .. })
        ));
    }
}

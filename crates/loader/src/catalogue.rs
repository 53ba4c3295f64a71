//! `catalogue.csv`: the CCC product catalogue of a drop.
//!
//! A catalogue row is never set aside: a catalogue with a bad row is refused whole, because
//! every certificate is validated against it and every verdict's first two rules read it.

use std::borrow::Cow;

use cccgate_core::{Catalogue, CatalogueEntry, CatalogueError, ConformityMode, Day, ProductCode};

use crate::error::{MAX_LISTED, RowError};
use crate::fields::{parse_date, parse_with_nfkc};
use crate::manifest::FileEntry;
use crate::read::CsvFile;
use crate::{FileDigest, LoadError};

const CODE: &str = "产品类别代码";
const NAME: &str = "产品名称";
const CATEGORY: &str = "大类代码";
const CATEGORY_NAME: &str = "大类名称";
const MODE: &str = "认证方式";
const FROM: &str = "实施日期";
const UNTIL: &str = "截止日期";

/// The columns of `catalogue.csv`, all required in the header (`截止日期` may be empty).
pub const CATALOGUE_COLUMNS: [&str; 7] = [CODE, NAME, CATEGORY, CATEGORY_NAME, MODE, FROM, UNTIL];

/// Reads a whole catalogue file.
pub(crate) fn read_catalogue(
    file: CsvFile,
    listed: &FileEntry,
) -> Result<(Catalogue, FileDigest), LoadError> {
    let (mut file, cols, _) = file.header(&CATALOGUE_COLUMNS)?;
    let name = file.name.clone();
    let file_path = file.path.clone();
    let mut entries = Vec::new();
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    let mut total_bad = 0u64;
    while let Some(rec) = file.next_record() {
        match entry(&rec, &cols) {
            Ok(e) => {
                lines.push((e.code, rec.line));
                entries.push(e);
            }
            Err((field, message)) => {
                total_bad += 1;
                if bad.len() < MAX_LISTED {
                    bad.push(RowError {
                        file: name.clone(),
                        line: rec.line,
                        field: field.to_owned(),
                        message,
                    });
                }
            }
        }
    }
    let digest = file.finish()?;
    crate::check_digest(listed, &file_path, &digest)?;
    if total_bad > 0 {
        return Err(LoadError::BadCatalogue {
            rows: bad,
            total: total_bad,
        });
    }
    let catalogue = Catalogue::new(entries).map_err(|e| {
        let code = match &e {
            CatalogueError::CategoryMismatch { code, .. }
            | CatalogueError::Overlap(code)
            | CatalogueError::EmptyPeriod(code) => *code,
        };
        let at: Vec<String> = lines
            .iter()
            .filter(|(c, _)| *c == code)
            .map(|(_, l)| l.to_string())
            .collect();
        LoadError::BadCatalogue {
            rows: vec![RowError {
                file: name.clone(),
                line: lines
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map_or(0, |(_, l)| *l),
                field: CODE.into(),
                message: format!("{e} (lines {})", at.join(", ")),
            }],
            total: 1,
        }
    })?;
    Ok((catalogue, digest))
}

type FieldError = (&'static str, String);

fn entry(rec: &crate::read::Record<'_>, cols: &[usize]) -> Result<CatalogueEntry, FieldError> {
    let get = |i: usize, name: &'static str| -> Result<Cow<'_, str>, FieldError> {
        rec.field(cols[i])
            .map_err(|_| (name, crate::fields::UNDECODABLE.to_owned()))
    };
    let code_text = get(0, CODE)?;
    let code = parse_with_nfkc(&code_text, |t| ProductCode::parse(t.trim())).ok_or_else(|| {
        (
            CODE,
            format!("{:?} is not a 4-digit product code", &*code_text),
        )
    })?;
    let name = get(1, NAME)?.trim().to_owned();
    if name.is_empty() {
        return Err((NAME, "empty".into()));
    }
    let cat_text = get(2, CATEGORY)?;
    let category_code = parse_with_nfkc(&cat_text, |t| {
        let t = t.trim();
        (t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u8>().ok())
            .flatten()
    })
    .ok_or_else(|| {
        (
            CATEGORY,
            format!("{:?} is not a 2-digit category code", &*cat_text),
        )
    })?;
    if category_code != code.category() {
        return Err((
            CATEGORY,
            format!("category {category_code:02} does not match product code {code}"),
        ));
    }
    let category_name = get(3, CATEGORY_NAME)?.trim().to_owned();
    if category_name.is_empty() {
        return Err((CATEGORY_NAME, "empty".into()));
    }
    let mode_text = get(4, MODE)?;
    let mode = parse_with_nfkc(&mode_text, ConformityMode::parse).ok_or_else(|| {
        (
            MODE,
            format!(
                "unknown conformity mode {:?}: expected 证书 or 自我声明",
                &*mode_text
            ),
        )
    })?;
    let from = parse_date(&get(5, FROM)?).map_err(|m| (FROM, m))?;
    let until_text = get(6, UNTIL)?;
    let until = if until_text.trim().is_empty() {
        None
    } else {
        Some(parse_date(&until_text).map_err(|m| (UNTIL, m))?)
    };
    if let Some(u) = until
        && u <= from
    {
        return Err((UNTIL, format!("{u} is not after 实施日期 {from}")));
    }
    Ok(CatalogueEntry {
        code,
        name,
        category_code,
        category_name,
        mode,
        from,
        until,
    })
}

/// Writes a catalogue as `catalogue.csv` text (UTF-8, the columns in contract order).
pub fn catalogue_csv(catalogue: &Catalogue) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(CATALOGUE_COLUMNS);
    for e in catalogue.entries() {
        let _ = w.write_record([
            e.code.to_string(),
            e.name.clone(),
            format!("{:02}", e.category_code),
            e.category_name.clone(),
            e.mode.as_str().to_owned(),
            e.from.to_string(),
            e.until.map(|d: Day| d.to_string()).unwrap_or_default(),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

//! `cccgate report`: the regulator's figures from decision logs.
//!
//! Reads decision logs (plain or gzipped, rotated files in any order: the figures are sums and
//! distinct counts, so order does not matter), and writes per month, per product category, per
//! reason and per caller: checks, distinct merchants checked, distinct listings blocked, as
//! JSON (`docs/ops.md`'s shape, exactly) or as one self-contained HTML page with inline SVG
//! charts.
//!
//! # Design
//!
//! Streaming: a reader thread decompresses and cuts the input into blocks of whole lines
//! ([`read`]); this thread parses each line (a scanner of its own for the common flat line,
//! [`fast`], serde_json for anything else; borrowing its strings, no allocation for a line
//! without escapes) and adds it to the tallies (the last month and caller are tried before
//! their indexes). Sums are counters; every distinct count goes
//! through one [`distinct::Distinct`], exact (128-bit hashes of the ids) in bounded memory
//! (sorted runs spilled to temporary files past `--max-distinct-in-memory` keys, merged at the
//! end). Months are China-time (UTC+8) months of `at_unix_ms`.

mod distinct;
mod fast;
mod html;
mod read;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cccgate_core::{Day, Decision, ProductCode, Reason};
use serde::Serialize;

use distinct::{Distinct, hash_id};

/// Options of `cccgate report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A decision log file, plain or gzipped (repeatable; rotated files in any order).
    #[arg(long = "decision-log", value_name = "FILE", required = true)]
    decision_logs: Vec<PathBuf>,
    /// json (the shape of docs/ops.md) or html (one self-contained page with SVG charts).
    #[arg(long, value_name = "FORMAT", default_value = "json")]
    format: Format,
    /// Write here (atomically) instead of to standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Bad lines (not JSON, a field missing or unknown, longer than 64 KiB) skipped and
    /// reported on stderr before the report is refused; each names its file, line and field.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_bad_lines: u64,
    /// Distinct (merchant or listing, group) keys kept in memory before sorted runs are
    /// spilled to --tmp-dir (about 50 bytes each); the counts stay exact either way.
    #[arg(long, value_name = "N", default_value_t = 500_000)]
    max_distinct_in_memory: usize,
    /// Directory of the spilled runs (unlinked temporary files) [default: the system's].
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Html,
}

/// One decision log line, borrowing from the input where it can.
#[derive(serde::Deserialize, Default, Debug, PartialEq)]
struct Line<'a> {
    #[serde(borrow)]
    listing_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    merchant_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client: Option<Cow<'a, str>>,
    #[serde(borrow)]
    product_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    at_unix_ms: Option<i64>,
}

/// Caller names and months beyond these are refused: a decision log has a handful of
/// callers and a few years of months; more means the input is not a decision log.
const MAX_CLIENTS: usize = 100_000;
const MAX_MONTHS: usize = 12 * 100;
/// Product codes are four digits; the last slot is a missing or unreadable code.
const UNKNOWN_CATEGORY: usize = 10_000;
/// Bad lines printed in full on stderr (the rest are counted).
const BAD_SHOWN: u64 = 20;

const MERCHANTS: u32 = 0;
const BLOCKED: u32 = 1;

#[derive(Debug, Default, Clone)]
struct Row {
    checks: u64,
    /// Distinct groups: merchants (months only) and blocked listings.
    merchants_group: u32,
    blocked_group: u32,
}

/// Everything counted so far.
#[derive(Debug)]
struct Tally {
    checks: u64,
    bad_requests: u64,
    by_reason: [u64; Reason::COUNT],
    by_decision: [u64; 3],
    /// Rows of months and callers, found through an index; the last one found is tried first
    /// (a log's lines come in runs of one month and, mostly, one caller).
    months: Vec<((i32, u32), Row)>,
    month_index: HashMap<(i32, u32), usize>,
    last_month: usize,
    /// The China-time day of the last line (days since 1970) and its month.
    last_day: Option<(i64, (i32, u32))>,
    categories: Vec<Option<Row>>,
    clients: Vec<(String, Row)>,
    client_index: HashMap<String, usize>,
    last_client: usize,
    distinct: Distinct,
    next_group: u32,
    bad_lines: u64,
    max_bad_lines: u64,
}

impl Tally {
    fn new(distinct: Distinct, max_bad_lines: u64) -> Self {
        Tally {
            checks: 0,
            bad_requests: 0,
            by_reason: [0; Reason::COUNT],
            by_decision: [0; 3],
            months: Vec::new(),
            month_index: HashMap::new(),
            last_month: 0,
            last_day: None,
            categories: vec![None; UNKNOWN_CATEGORY + 1],
            clients: Vec::new(),
            client_index: HashMap::new(),
            last_client: 0,
            distinct,
            next_group: 2,
            bad_lines: 0,
            max_bad_lines,
        }
    }

    fn group(next: &mut u32) -> u32 {
        *next += 1;
        *next - 1
    }

    /// Counts one bad line; past the allowance, refuses the report.
    fn bad(&mut self, path: &std::path::Path, line: u64, what: &str) -> anyhow::Result<()> {
        self.bad_lines += 1;
        let at = format!("{} line {line}: {what}", path.display());
        if self.bad_lines > self.max_bad_lines {
            bail!(
                "{at}\n  ({} bad lines so far, at most {} may be skipped; see --max-bad-lines)",
                self.bad_lines,
                self.max_bad_lines
            );
        }
        if self.bad_lines <= BAD_SHOWN {
            eprintln!("warning: skipped {at}");
        }
        Ok(())
    }

    /// Adds one line, or says which field is wrong.
    fn add(&mut self, text: &[u8]) -> Result<(), String> {
        let line: Line<'_> = match fast::line(text) {
            Some(line) => line,
            None => {
                serde_json::from_slice(text).map_err(|e| format!("not a decision log line: {e}"))?
            }
        };
        if line.error.is_some() {
            self.bad_requests += 1;
            return Ok(());
        }
        let listing_id = line.listing_id.ok_or("listing_id is missing")?;
        let merchant_id = line.merchant_id.ok_or("merchant_id is missing")?;
        let decision = line.decision.ok_or("decision is missing")?;
        let decision = Decision::ALL
            .into_iter()
            .position(|d| d.as_str() == decision)
            .ok_or_else(|| format!("decision {decision:?}: expected ALLOW, BLOCK or REVIEW"))?;
        let reason = line.reason.ok_or("reason is missing")?;
        let reason = Reason::ALL
            .into_iter()
            .position(|r| r.as_str() == reason)
            .ok_or_else(|| format!("reason {reason:?} is not a reason of the decision table"))?;
        let at = line.at_unix_ms.ok_or("at_unix_ms is missing")?;
        let secs = at.div_euclid(1000);
        let day = (secs + 8 * 3600).div_euclid(86_400);
        let (y, m) = match self.last_day {
            Some((d, ym)) if d == day => ym,
            _ => {
                let (y, m, _) = Day::from_unix_seconds_cn(secs).ymd();
                self.last_day = Some((day, (y, m)));
                (y, m)
            }
        };
        let category = line
            .product_code
            .as_deref()
            .and_then(ProductCode::parse)
            .map_or(UNKNOWN_CATEGORY, |p| usize::from(p.get()));
        let client = line.client.as_deref().unwrap_or("unknown");
        let client_at = match self.clients.get(self.last_client) {
            Some((name, _)) if name == client => Some(self.last_client),
            _ => self.client_index.get(client).copied(),
        };
        if client_at.is_none() && self.clients.len() >= MAX_CLIENTS {
            return Err(format!(
                "client {client:?}: more than {MAX_CLIENTS} callers; is this a decision log?"
            ));
        }
        let month_at = match self.months.get(self.last_month) {
            Some((key, _)) if *key == (y, m) => Some(self.last_month),
            _ => self.month_index.get(&(y, m)).copied(),
        };
        if month_at.is_none() && self.months.len() >= MAX_MONTHS {
            return Err(format!(
                "at_unix_ms {at}: more than {MAX_MONTHS} months; is this a decision log?"
            ));
        }

        self.checks += 1;
        self.by_reason[reason] += 1;
        self.by_decision[decision] += 1;
        let next = &mut self.next_group;
        self.last_month = month_at.unwrap_or_else(|| {
            let row = Row {
                checks: 0,
                merchants_group: Tally::group(next),
                blocked_group: Tally::group(next),
            };
            self.months.push(((y, m), row));
            self.month_index.insert((y, m), self.months.len() - 1);
            self.months.len() - 1
        });
        let month = &mut self.months[self.last_month].1;
        month.checks += 1;
        let month = (month.merchants_group, month.blocked_group);
        let cat = self.categories[category].get_or_insert_with(|| Row {
            checks: 0,
            merchants_group: 0,
            blocked_group: Tally::group(next),
        });
        cat.checks += 1;
        let cat = cat.blocked_group;
        self.last_client = client_at.unwrap_or_else(|| {
            let row = Row {
                checks: 0,
                merchants_group: 0,
                blocked_group: Tally::group(next),
            };
            self.clients.push((client.to_owned(), row));
            self.client_index
                .insert(client.to_owned(), self.clients.len() - 1);
            self.clients.len() - 1
        });
        let row = &mut self.clients[self.last_client].1;
        row.checks += 1;
        let cl = row.blocked_group;

        let merchant = hash_id(&merchant_id);
        let spill = |e: anyhow::Error| format!("{e:#}");
        self.distinct.insert(MERCHANTS, merchant).map_err(spill)?;
        self.distinct.insert(month.0, merchant).map_err(spill)?;
        if Decision::ALL[decision] == Decision::Block {
            let listing = hash_id(&listing_id);
            for group in [BLOCKED, month.1, cat, cl] {
                self.distinct.insert(group, listing).map_err(spill)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Report> {
        let counts = self.distinct.finish(self.next_group as usize)?;
        let n = |g: u32| counts[g as usize];
        let mut by_month: Vec<MonthOut> = self
            .months
            .iter()
            .map(|&((y, m), ref r)| MonthOut {
                month: format!("{y:04}-{m:02}"),
                checks: r.checks,
                merchants: n(r.merchants_group),
                listings_blocked: n(r.blocked_group),
            })
            .collect();
        by_month.sort_by(|a, b| a.month.cmp(&b.month));
        let by_category = self
            .categories
            .iter()
            .enumerate()
            .filter_map(|(code, r)| {
                r.as_ref().map(|r| CategoryOut {
                    product_code: if code == UNKNOWN_CATEGORY {
                        "unknown".to_owned()
                    } else {
                        format!("{code:04}")
                    },
                    checks: r.checks,
                    listings_blocked: n(r.blocked_group),
                })
            })
            .collect();
        let mut by_client: Vec<ClientOut> = self
            .clients
            .iter()
            .map(|(name, r)| ClientOut {
                client: name.clone(),
                checks: r.checks,
                listings_blocked: n(r.blocked_group),
            })
            .collect();
        by_client.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(Report {
            totals: Totals {
                checks: self.checks,
                merchants: n(MERCHANTS),
                listings_blocked: n(BLOCKED),
                bad_requests: self.bad_requests,
            },
            by_reason: Named(
                Reason::ALL
                    .iter()
                    .zip(self.by_reason)
                    .map(|(r, c)| (r.as_str(), c))
                    .collect(),
            ),
            by_decision: Named(
                Decision::ALL
                    .iter()
                    .zip(self.by_decision)
                    .map(|(d, c)| (d.as_str(), c))
                    .collect(),
            ),
            by_month,
            by_category,
            by_client,
        })
    }
}

/// The report, in the order and shape of `docs/ops.md`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    totals: Totals,
    by_reason: Named,
    by_decision: Named,
    by_month: Vec<MonthOut>,
    by_category: Vec<CategoryOut>,
    by_client: Vec<ClientOut>,
}

#[derive(Debug, Serialize)]
struct Totals {
    checks: u64,
    merchants: u64,
    listings_blocked: u64,
    bad_requests: u64,
}

#[derive(Debug, Serialize)]
struct MonthOut {
    month: String,
    checks: u64,
    merchants: u64,
    listings_blocked: u64,
}

#[derive(Debug, Serialize)]
struct CategoryOut {
    product_code: String,
    checks: u64,
    listings_blocked: u64,
}

#[derive(Debug, Serialize)]
struct ClientOut {
    client: String,
    checks: u64,
    listings_blocked: u64,
}

/// A JSON object whose keys keep this order (the decision table's).
#[derive(Debug)]
struct Named(Vec<(&'static str, u64)>);

impl Serialize for Named {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Reads the logs and tallies them.
pub(crate) fn build(
    paths: &[PathBuf],
    max_bad_lines: u64,
    max_distinct: usize,
    tmp: PathBuf,
) -> anyhow::Result<Report> {
    refuse_same_file_twice(paths)?;
    let mut tally = Tally::new(Distinct::new(max_distinct, tmp), max_bad_lines);
    let (blocks, reader) = read::spawn(paths.to_vec());
    for block in blocks {
        match block? {
            read::Block::TooLong { file, line } => tally.bad(
                &paths[file],
                line,
                &format!("longer than {} bytes", read::MAX_LINE),
            )?,
            read::Block::Lines {
                file,
                first_line,
                bytes,
            } => {
                for (i, text) in bytes.split(|&b| b == b'\n').enumerate() {
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    if text.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let line = first_line + i as u64;
                    let outcome = if text.len() > read::MAX_LINE {
                        Err(format!("longer than {} bytes", read::MAX_LINE))
                    } else {
                        tally.add(text)
                    };
                    if let Err(what) = outcome {
                        tally.bad(&paths[file], line, &what)?;
                    }
                }
            }
        }
    }
    let _ = reader.join();
    if tally.bad_lines > 0 {
        eprintln!("warning: {} bad lines skipped", tally.bad_lines);
    }
    tally.finish()
}

/// The same file given twice (by two names) would be counted twice.
fn refuse_same_file_twice(paths: &[PathBuf]) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashMap::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if let Some(first) = seen.insert((meta.dev(), meta.ino()), p) {
            bail!(
                "{} and {} are the same file: it would be counted twice",
                first.display(),
                p.display()
            );
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let report = build(
        &args.decision_logs,
        args.max_bad_lines,
        args.max_distinct_in_memory,
        tmp,
    )?;
    let mut text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)?,
        Format::Html => html::page(&report, &args.decision_logs),
    };
    text.push('\n');
    match &args.out {
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Some(path) => cccgate_snapshot::write_file_atomic(path, &[text.as_bytes()])
            .with_context(|| format!("cannot write {}", path.display()))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests;

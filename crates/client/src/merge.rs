//! Merging the summaries of a sharded replay (`replay --shard I/N` in N places, then
//! `replay --merge-summaries FILE...`) into the summary one whole run would have written.
//!
//! Shards split the input by merchant (a bad line, which has no merchant, by its line
//! number), so every count adds up, distinct merchants included; the first bad lines and bad
//! requests are the first by line over all shards; latency percentiles come from the merged
//! histograms. Only timing differs from one whole run: seconds are the slowest shard's
//! (shards run side by side) and throughput is records over those seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cccgate_core::{Decision, Reason};
use serde::Deserialize;

use crate::summary::{BadLine, BadRequest, SAMPLES_KEPT, Summary, Tally};

/// Why summaries cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a replay summary (`--summary-json`).
    #[error("{} is not a replay summary: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The set of shards is not one whole run.
    #[error("{0}")]
    Shards(String),
    /// A summary names a reason or decision this client does not know.
    #[error("{}: unknown {what} {name:?}", path.display())]
    Unknown {
        /// The file.
        path: PathBuf,
        /// `reason` or `decision`.
        what: &'static str,
        /// The name.
        name: String,
    },
}

#[derive(Debug, Deserialize)]
struct Count {
    count: u64,
}

#[derive(Debug, Deserialize)]
struct SnapshotUseIn {
    sequence: u64,
    content_id: String,
    verdicts: u64,
}

/// The fields of a summary that merging reads.
#[derive(Debug, Deserialize)]
struct ShardSummary {
    input: String,
    target: String,
    rpc: String,
    chunk: usize,
    concurrency: usize,
    skipped: u64,
    merchants: u64,
    allow_by_reason: BTreeMap<String, Count>,
    block_by_reason: BTreeMap<String, Count>,
    review_by_reason: BTreeMap<String, Count>,
    unknown_verdicts: u64,
    bad_requests: u64,
    bad_request_samples: Vec<BadRequest>,
    bad_lines: u64,
    bad_line_samples: Vec<BadLine>,
    snapshots: Vec<SnapshotUseIn>,
    seconds: f64,
    latency_histogram_us: Vec<(u64, u64)>,
    complete: bool,
    shard: Option<String>,
}

/// `I/N` as `(I, N)`, with `I < N` and `N ≥ 1`.
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let err = || format!("{s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(err)?;
    let (i, n): (u64, u64) = (
        i.trim().parse().map_err(|_| err())?,
        n.trim().parse().map_err(|_| err())?,
    );
    if n == 0 || i >= n {
        return Err(err());
    }
    Ok((i, n))
}

/// Reads the summaries in `paths` (written by `replay --shard I/N --summary-json`) and merges
/// them; they must be shards 0..N-1 of one input, each exactly once.
pub fn merge_summary_files(paths: &[PathBuf]) -> Result<Summary, MergeError> {
    let mut shards = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read(path).map_err(|source| MergeError::Read {
            path: path.clone(),
            source,
        })?;
        let s: ShardSummary =
            serde_json::from_slice(&text).map_err(|source| MergeError::Parse {
                path: path.clone(),
                source,
            })?;
        shards.push((path.clone(), s));
    }
    merge(shards)
}

fn merge(shards: Vec<(PathBuf, ShardSummary)>) -> Result<Summary, MergeError> {
    let Some((first_path, first)) = shards.first() else {
        return Err(MergeError::Shards("no summaries to merge".into()));
    };
    // Which shard each file is; together exactly 0..N-1 of one input.
    let mut seen: BTreeMap<u64, &Path> = BTreeMap::new();
    let mut count = None;
    for (path, s) in &shards {
        let Some(shard) = &s.shard else {
            return Err(MergeError::Shards(format!(
                "{} is the summary of a whole run, not of a shard (--shard I/N)",
                path.display()
            )));
        };
        let (i, n) = parse_shard(shard).map_err(MergeError::Shards)?;
        if *count.get_or_insert(n) != n {
            return Err(MergeError::Shards(format!(
                "{} is shard {shard}, but {} is of {} shards",
                path.display(),
                first_path.display(),
                count.unwrap_or(n)
            )));
        }
        if s.input != first.input {
            return Err(MergeError::Shards(format!(
                "{} replayed {}, but {} replayed {}",
                path.display(),
                s.input,
                first_path.display(),
                first.input
            )));
        }
        if let Some(other) = seen.insert(i, path) {
            return Err(MergeError::Shards(format!(
                "shard {shard} twice: {} and {}",
                other.display(),
                path.display()
            )));
        }
    }
    let n = count.unwrap_or(0);
    let missing: Vec<String> = (0..n)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Shards(format!(
            "shard(s) {} missing: a merged summary must cover the whole input",
            missing.join(", ")
        )));
    }

    let mut t = Tally::default();
    let mut merchants = 0u64;
    let mut targets: Vec<&str> = Vec::new();
    let (mut skipped, mut seconds, mut complete, mut concurrency) = (0u64, 0f64, true, 0usize);
    for (path, s) in &shards {
        for (decision, by_reason) in [
            (Decision::Allow, &s.allow_by_reason),
            (Decision::Block, &s.block_by_reason),
            (Decision::Review, &s.review_by_reason),
        ] {
            for (name, c) in by_reason {
                let reason = Reason::ALL
                    .into_iter()
                    .find(|r| r.as_str() == name)
                    .ok_or_else(|| MergeError::Unknown {
                        path: path.clone(),
                        what: "reason",
                        name: name.clone(),
                    })?;
                t.verdicts[reason.index()][decision as usize] += c.count;
            }
        }
        t.unknown_verdicts += s.unknown_verdicts;
        t.bad_requests += s.bad_requests;
        t.bad_request_samples
            .extend(s.bad_request_samples.iter().cloned());
        t.bad_lines += s.bad_lines;
        t.bad_line_samples
            .extend(s.bad_line_samples.iter().cloned());
        for u in &s.snapshots {
            *t.snapshots
                .entry((u.sequence, u.content_id.clone()))
                .or_default() += u.verdicts;
        }
        for &(us, calls) in &s.latency_histogram_us {
            // Values beyond the histogram's range were never recorded by a replay.
            let _ = t.latency_us.record_n(us, calls);
        }
        merchants += s.merchants;
        skipped += s.skipped;
        seconds = seconds.max(s.seconds);
        complete &= s.complete;
        concurrency += s.concurrency;
        if !targets.contains(&s.target.as_str()) {
            targets.push(&s.target);
        }
    }
    // Each shard kept its first samples by line; the first over all shards are among them.
    t.bad_request_samples.sort_by_key(|b| b.line);
    t.bad_request_samples.truncate(SAMPLES_KEPT);
    t.bad_line_samples.sort_by_key(|b| b.line);
    t.bad_line_samples.truncate(SAMPLES_KEPT);

    let rpc = match first.rpc.as_str() {
        "stream" => "stream",
        "batch" => "batch",
        "unary" => "unary",
        _ => "mixed",
    };
    let mut summary = Summary::from_tally(
        &t,
        first.input.clone(),
        targets.join(","),
        rpc,
        first.chunk,
        concurrency,
        skipped,
        seconds,
        complete,
    );
    summary.merchants = merchants;
    summary.merged_shards = n;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs() {
        assert_eq!(parse_shard("0/1"), Ok((0, 1)));
        assert_eq!(parse_shard("3/4"), Ok((3, 4)));
        for bad in ["4/4", "1/0", "x/2", "1", "-1/2", ""] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}

//! The end-of-run summary of a replay: counts a person reads at a glance, and the same as JSON
//! for machines (`--summary-json`).
//!
//! Every record of the run is in exactly one of three buckets, so the counts add up:
//! `records = decided + bad_requests + bad_lines`. Decisions are counted per (reason,
//! decision) pair, since an operator's policy may map a reason to any decision.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};

use cccgate_core::{Decision, Reason};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// How many bad lines and bad requests the summary lists individually (all are counted).
pub const SAMPLES_KEPT: usize = 1_000;
/// How many of them the text summary shows.
const SAMPLES_SHOWN: usize = 10;

/// A hasher for keys that are already hashes.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of 64-bit hashes (distinct merchants are counted by the xxh3 hash of their id: with
/// a few million ids the chance of one collision is below one in a million).
pub type HashSet64 = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// A record that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadLine {
    /// Its input line.
    pub line: u64,
    /// Its listing id, if readable.
    pub listing_id: Option<String>,
    /// Why.
    pub error: String,
}

/// A listing the gateway refused as a bad request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRequest {
    /// Its input line.
    pub line: u64,
    /// The listing id as the gateway echoed it.
    pub listing_id: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub error: String,
}

/// The running counts of a replay.
#[derive(Debug)]
pub struct Tally {
    /// Verdicts per reason (table order) and decision (ALLOW, BLOCK, REVIEW).
    pub verdicts: [[u64; 3]; Reason::COUNT],
    /// Verdicts whose decision or reason number the client does not know.
    pub unknown_verdicts: u64,
    /// Bad requests.
    pub bad_requests: u64,
    /// Bad lines.
    pub bad_lines: u64,
    /// The first [`SAMPLES_KEPT`] bad lines.
    pub bad_line_samples: Vec<BadLine>,
    /// The first [`SAMPLES_KEPT`] bad requests.
    pub bad_request_samples: Vec<BadRequest>,
    /// Verdicts per (snapshot sequence, content id).
    pub snapshots: BTreeMap<(u64, String), u64>,
    /// Distinct merchants (hashes).
    pub merchants: HashSet64,
    /// Round-trip latency of each call, microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            verdicts: [[0; 3]; Reason::COUNT],
            unknown_verdicts: 0,
            bad_requests: 0,
            bad_lines: 0,
            bad_line_samples: Vec::new(),
            bad_request_samples: Vec::new(),
            snapshots: BTreeMap::new(),
            merchants: HashSet64::default(),
            latency_us: new_histogram(),
        }
    }
}

/// A latency histogram from 1 µs to 100 s with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Fails only for bounds below 1, a high bound under twice the low one or more than 5
    // significant digits; these constants are none of those.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant histogram bounds are valid")
}

impl Tally {
    /// Counts one verdict.
    pub fn verdict(&mut self, decision: Option<Decision>, reason: Option<Reason>) {
        match (decision, reason) {
            (Some(d), Some(r)) => self.verdicts[r.index()][d as usize] += 1,
            _ => self.unknown_verdicts += 1,
        }
    }

    /// Counts one bad line.
    pub fn bad_line(&mut self, b: BadLine) {
        self.bad_lines += 1;
        if self.bad_line_samples.len() < SAMPLES_KEPT {
            self.bad_line_samples.push(b);
        }
    }

    /// Counts one bad request.
    pub fn bad_request(&mut self, b: BadRequest) {
        self.bad_requests += 1;
        if self.bad_request_samples.len() < SAMPLES_KEPT {
            self.bad_request_samples.push(b);
        }
    }

    /// Verdicts counted (known and unknown).
    pub fn decided(&self) -> u64 {
        self.verdicts.iter().flatten().sum::<u64>() + self.unknown_verdicts
    }

    /// Records counted.
    pub fn records(&self) -> u64 {
        self.decided() + self.bad_requests + self.bad_lines
    }
}

/// A count and its share of the verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Share {
    /// How many.
    pub count: u64,
    /// Fraction of all verdicts, 0..1.
    pub share: f64,
}

/// Verdicts decided by one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotUse {
    /// Its sequence.
    pub sequence: u64,
    /// Its content id.
    pub content_id: String,
    /// How many verdicts it decided.
    pub verdicts: u64,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Number of calls measured.
    pub samples: u64,
}

impl Latency {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            samples: h.len(),
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The input file (`stdin` for `-`).
    pub input: String,
    /// The gateway.
    pub target: String,
    /// The RPC used: `stream` or `batch`.
    pub rpc: &'static str,
    /// Listings per request.
    pub chunk: usize,
    /// Calls in flight.
    pub concurrency: usize,
    /// Records skipped at the start (`--skip`).
    pub skipped: u64,
    /// Records handled in this run (after the skipped ones): decided + bad requests + bad
    /// lines.
    pub records: u64,
    /// Records with a verdict.
    pub decided: u64,
    /// Distinct merchant ids among the records sent to the gateway.
    pub merchants: u64,
    /// Verdicts by decision.
    pub decisions: BTreeMap<&'static str, Share>,
    /// BLOCK verdicts by reason (reasons with none left out).
    pub block_by_reason: BTreeMap<&'static str, Share>,
    /// REVIEW verdicts by reason.
    pub review_by_reason: BTreeMap<&'static str, Share>,
    /// ALLOW verdicts by reason.
    pub allow_by_reason: BTreeMap<&'static str, Share>,
    /// Verdicts whose decision or reason the client does not know (a newer gateway).
    pub unknown_verdicts: u64,
    /// Listings the gateway refused as bad requests.
    pub bad_requests: u64,
    /// The first bad requests, with their lines.
    pub bad_request_samples: Vec<BadRequest>,
    /// Records that could not be read.
    pub bad_lines: u64,
    /// The first bad lines.
    pub bad_line_samples: Vec<BadLine>,
    /// The snapshots that decided the verdicts.
    pub snapshots: Vec<SnapshotUse>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Records per second.
    pub records_per_sec: f64,
    /// What the latency measures.
    pub latency_basis: &'static str,
    /// Latency percentiles, microseconds.
    pub latency_us: Latency,
    /// The latency histogram as `[microseconds, calls]` pairs, so summaries of shards merge
    /// into exact percentiles (`replay --merge-summaries`).
    pub latency_histogram_us: Vec<(u64, u64)>,
    /// Whether every record of the input was handled.
    pub complete: bool,
    /// `I/N` when this run replayed shard I of N (`--shard`); merged summaries have none.
    pub shard: Option<String>,
    /// How many shard summaries this one merges (0 for a single run).
    pub merged_shards: u64,
}

impl Summary {
    /// Builds the summary from the counts.
    #[allow(clippy::too_many_arguments)]
    pub fn from_tally(
        t: &Tally,
        input: String,
        target: String,
        rpc: &'static str,
        chunk: usize,
        concurrency: usize,
        skipped: u64,
        seconds: f64,
        complete: bool,
    ) -> Summary {
        let decided = t.decided();
        let share = |count: u64| Share {
            count,
            share: if decided == 0 {
                0.0
            } else {
                count as f64 / decided as f64
            },
        };
        let mut decisions = BTreeMap::new();
        let mut by = [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
        for d in Decision::ALL {
            let n: u64 = t.verdicts.iter().map(|row| row[d as usize]).sum();
            decisions.insert(d.as_str(), share(n));
            for r in Reason::ALL {
                let n = t.verdicts[r.index()][d as usize];
                if n > 0 {
                    by[d as usize].insert(r.as_str(), share(n));
                }
            }
        }
        let [allow_by_reason, block_by_reason, review_by_reason] = by;
        let records = t.records();
        Summary {
            input,
            target,
            rpc,
            chunk,
            concurrency,
            skipped,
            records,
            decided,
            merchants: t.merchants.len() as u64,
            decisions,
            block_by_reason,
            review_by_reason,
            allow_by_reason,
            unknown_verdicts: t.unknown_verdicts,
            bad_requests: t.bad_requests,
            bad_request_samples: t.bad_request_samples.clone(),
            bad_lines: t.bad_lines,
            bad_line_samples: t.bad_line_samples.clone(),
            snapshots: t
                .snapshots
                .iter()
                .map(|((sequence, content_id), &verdicts)| SnapshotUse {
                    sequence: *sequence,
                    content_id: content_id.clone(),
                    verdicts,
                })
                .collect(),
            seconds,
            records_per_sec: if seconds > 0.0 {
                records as f64 / seconds
            } else {
                0.0
            },
            latency_basis: "round trip of one request message (a chunk of listings)",
            latency_us: Latency::of(&t.latency_us),
            latency_histogram_us: t
                .latency_us
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            complete,
            shard: None,
            merged_shards: 0,
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, readably: `850 µs`, `1.25 ms`, `2.1 s`.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay of {} against {}{}{}",
            self.input,
            self.target,
            match (&self.shard, self.merged_shards) {
                (Some(shard), _) => format!(", shard {shard}"),
                (None, 0) => String::new(),
                (None, n) => format!(", {n} shards merged"),
            },
            if self.complete {
                ""
            } else {
                " (STOPPED EARLY)"
            }
        );
        if self.skipped > 0 {
            let _ = writeln!(
                s,
                "  skipped      {:>12}  records at the start (--skip)",
                thousands(self.skipped)
            );
        }
        let _ = writeln!(
            s,
            "  records      {:>12}  = {} decided + {} bad requests + {} bad input lines",
            thousands(self.records),
            thousands(self.decided),
            thousands(self.bad_requests),
            thousands(self.bad_lines)
        );
        let _ = writeln!(
            s,
            "  merchants    {:>12}  distinct",
            thousands(self.merchants)
        );
        for (d, by) in [
            ("ALLOW", &self.allow_by_reason),
            ("BLOCK", &self.block_by_reason),
            ("REVIEW", &self.review_by_reason),
        ] {
            let total = self.decisions.get(d).copied().unwrap_or(Share {
                count: 0,
                share: 0.0,
            });
            let _ = writeln!(
                s,
                "  {d:<6}       {:>12}  {:>6.2}%",
                thousands(total.count),
                total.share * 100.0
            );
            if d != "ALLOW" {
                for (reason, sh) in by {
                    let _ = writeln!(
                        s,
                        "    {reason:<26} {:>12}  {:>6.2}%",
                        thousands(sh.count),
                        sh.share * 100.0
                    );
                }
            }
        }
        if self.unknown_verdicts > 0 {
            let _ = writeln!(
                s,
                "  unknown      {:>12}  verdicts with a decision or reason this client does not know",
                thousands(self.unknown_verdicts)
            );
        }
        if self.bad_requests > 0 {
            let _ = writeln!(
                s,
                "  bad requests {:>12}  refused by the gateway (an error line each):",
                thousands(self.bad_requests)
            );
            for b in self.bad_request_samples.iter().take(SAMPLES_SHOWN) {
                let _ = writeln!(
                    s,
                    "    line {}: listing {:?}: {}: {}",
                    b.line, b.listing_id, b.field, b.error
                );
            }
            more(&mut s, self.bad_requests, SAMPLES_SHOWN);
        }
        if self.bad_lines > 0 {
            let _ = writeln!(
                s,
                "  bad lines    {:>12}  unreadable input records, skipped (an error line each):",
                thousands(self.bad_lines)
            );
            for b in self.bad_line_samples.iter().take(SAMPLES_SHOWN) {
                let _ = writeln!(s, "    line {}: {}", b.line, b.error);
            }
            more(&mut s, self.bad_lines, SAMPLES_SHOWN);
        }
        for u in &self.snapshots {
            let _ = writeln!(
                s,
                "  snapshot     {:>12}  verdicts by sequence {} (content {})",
                thousands(u.verdicts),
                u.sequence,
                u.content_id
            );
        }
        let _ = writeln!(
            s,
            "  throughput   {:>12}  records/s over {:.2} s",
            thousands(self.records_per_sec.round() as u64),
            self.seconds
        );
        let l = &self.latency_us;
        let _ = write!(
            s,
            "  latency      p50 {}, p99 {}, p99.9 {}, max {} ({} calls; {} listings a call)",
            micros(l.p50),
            micros(l.p99),
            micros(l.p999),
            micros(l.max),
            thousands(l.samples),
            self.chunk
        );
        f.write_str(&s)
    }
}

fn more(s: &mut String, total: u64, shown: usize) {
    if total > shown as u64 {
        let _ = writeln!(
            s,
            "    ... and {} more (the first {SAMPLES_KEPT} are in --summary-json)",
            thousands(total - shown as u64)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_shares_are_of_verdicts() {
        let mut t = Tally::default();
        for _ in 0..90 {
            t.verdict(Some(Decision::Allow), Some(Reason::CertificateValid));
        }
        for _ in 0..6 {
            t.verdict(Some(Decision::Block), Some(Reason::CertificateRevoked));
        }
        for _ in 0..4 {
            t.verdict(Some(Decision::Review), Some(Reason::ModelNotCovered));
        }
        t.verdict(None, Some(Reason::CertificateValid));
        t.bad_line(BadLine {
            line: 3,
            listing_id: None,
            error: "not valid JSON".into(),
        });
        t.bad_request(BadRequest {
            line: 4,
            listing_id: "L4".into(),
            field: "merchant_id".into(),
            error: "merchant_id is required".into(),
        });
        let s = Summary::from_tally(&t, "in".into(), "gw".into(), "stream", 10, 2, 0, 1.0, true);
        assert_eq!(s.records, 103);
        assert_eq!(s.decided + s.bad_lines + s.bad_requests, s.records);
        assert_eq!(s.decisions["BLOCK"].count, 6);
        assert!((s.decisions["BLOCK"].share - 6.0 / 101.0).abs() < 1e-12);
        assert_eq!(s.block_by_reason["CERTIFICATE_REVOKED"].count, 6);
        assert_eq!(s.review_by_reason.len(), 1);
        assert_eq!(s.unknown_verdicts, 1);
        let text = s.to_string();
        assert!(text.contains("line 3: not valid JSON"), "{text}");
        assert!(
            text.contains("line 4: listing \"L4\": merchant_id"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["bad_line_samples"][0]["line"], 3);
    }

    #[test]
    fn samples_are_capped_but_everything_is_counted() {
        let mut t = Tally::default();
        for line in 0..(SAMPLES_KEPT as u64 + 5) {
            t.bad_line(BadLine {
                line,
                listing_id: None,
                error: "x".into(),
            });
        }
        assert_eq!(t.bad_lines, SAMPLES_KEPT as u64 + 5);
        assert_eq!(t.bad_line_samples.len(), SAMPLES_KEPT);
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(81_769_000), "81,769,000");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(1_250), "1.25 ms");
        assert_eq!(micros(2_100_000), "2.10 s");
    }
}

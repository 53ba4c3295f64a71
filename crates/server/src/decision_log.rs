//! The optional decision log: one JSON line per listing decided (or refused), as
//! `spec/verdicts.md` describes, appended to a file.
//!
//! # Design
//!
//! Off the hot path: a request or stream chunk hands its entries to a bounded channel with
//! `try_send` (one message per request or chunk, never one per listing) and a writer task
//! formats and writes them. If the writer falls behind and the channel is full, the entries
//! are counted as dropped (`cccgate_decision_log_dropped_total`) and the check goes on: checks
//! never wait for the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cccgate_core::{CertNumber, Decision, Reason};
use metrics::Counter;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One listing's line.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub listing_id: String,
    pub merchant_id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Verdict {
        decision: Decision,
        reason: Reason,
        certificate: Option<CertNumber>,
    },
    Error {
        field: &'static str,
        message: String,
    },
}

/// The entries of one request or chunk, all decided at the same time by the same snapshot.
#[derive(Debug)]
pub(crate) struct Batch {
    pub at_unix_ms: i64,
    pub snapshot_sequence: u64,
    pub entries: Vec<Entry>,
}

/// Why the decision log cannot start.
#[derive(Debug, thiserror::Error)]
#[error("decision log {}: {source}", path.display())]
pub struct DecisionLogError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The sending side, cloned into the services.
#[derive(Clone, Debug)]
pub(crate) struct DecisionLog {
    tx: mpsc::Sender<Batch>,
    dropped: Arc<AtomicU64>,
    dropped_counter: Counter,
}

impl DecisionLog {
    /// Opens (appends to) `path` and starts the writer task. The task ends, flushing, when
    /// every sender is dropped.
    pub(crate) async fn start(
        path: &Path,
        queue: usize,
    ) -> Result<(DecisionLog, JoinHandle<()>), DecisionLogError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|source| DecisionLogError {
                path: path.to_path_buf(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(write_task(rx, file, path.to_path_buf()));
        Ok((
            DecisionLog {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                dropped_counter: metrics::counter!("cccgate_decision_log_dropped_total"),
            },
            task,
        ))
    }

    /// Hands a batch to the writer without waiting; counts it as dropped if the queue is full.
    pub(crate) fn offer(&self, batch: Batch) {
        if let Err(e) = self.tx.try_send(batch) {
            let n = match &e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => {
                    b.entries.len() as u64
                }
            };
            self.dropped.fetch_add(n, Ordering::Relaxed);
            self.dropped_counter.increment(n);
        }
    }

    /// Entries dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Serialize)]
struct Line<'a> {
    listing_id: &'a str,
    merchant_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    snapshot_sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    at_unix_ms: i64,
}

/// Formats one batch as JSON lines.
pub(crate) fn format_batch(batch: &Batch, out: &mut Vec<u8>) {
    for e in &batch.entries {
        let line = match &e.outcome {
            Outcome::Verdict {
                decision,
                reason,
                certificate,
            } => Line {
                listing_id: &e.listing_id,
                merchant_id: &e.merchant_id,
                decision: Some(decision.as_str()),
                reason: Some(reason.as_str()),
                snapshot_sequence: batch.snapshot_sequence,
                certificate_number: certificate.map(|c| c.to_string()),
                error: None,
                field: None,
                at_unix_ms: batch.at_unix_ms,
            },
            Outcome::Error { field, message } => Line {
                listing_id: &e.listing_id,
                merchant_id: &e.merchant_id,
                decision: None,
                reason: None,
                snapshot_sequence: batch.snapshot_sequence,
                certificate_number: None,
                error: Some(message),
                field: Some(field),
                at_unix_ms: batch.at_unix_ms,
            },
        };
        // Serialising plain strings and integers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
}

async fn write_task(mut rx: mpsc::Receiver<Batch>, mut file: tokio::fs::File, path: PathBuf) {
    let written = metrics::counter!("cccgate_decision_log_written_total");
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut failed = false;
    while let Some(batch) = rx.recv().await {
        let mut lines = batch.entries.len() as u64;
        format_batch(&batch, &mut buf);
        // Take whatever else is already queued, then write once.
        while buf.len() < 1 << 20
            && let Ok(more) = rx.try_recv()
        {
            lines += more.entries.len() as u64;
            format_batch(&more, &mut buf);
        }
        if let Err(e) = file.write_all(&buf).await {
            if !failed {
                tracing::error!(path = %path.display(), error = %e, "decision log write failed");
                failed = true;
            }
        } else {
            written.increment(lines);
            failed = false;
        }
        buf.clear();
    }
    if let Err(e) = file.flush().await {
        tracing::error!(path = %path.display(), error = %e, "decision log flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_fields_the_spec_requires() {
        let batch = Batch {
            at_unix_ms: 1_700_000_000_000,
            snapshot_sequence: 42,
            entries: vec![
                Entry {
                    listing_id: "L1".into(),
                    merchant_id: "M1".into(),
                    outcome: Outcome::Verdict {
                        decision: Decision::Block,
                        reason: Reason::CertificateRevoked,
                        certificate: CertNumber::from_u64(2021010901000123),
                    },
                },
                Entry {
                    listing_id: "L2".into(),
                    merchant_id: String::new(),
                    outcome: Outcome::Error {
                        field: "merchant_id",
                        message: "merchant_id is required".into(),
                    },
                },
            ],
        };
        let mut out = Vec::new();
        format_batch(&batch, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["listing_id"], "L1");
        assert_eq!(lines[0]["decision"], "BLOCK");
        assert_eq!(lines[0]["reason"], "CERTIFICATE_REVOKED");
        assert_eq!(lines[0]["snapshot_sequence"], 42);
        assert_eq!(lines[0]["certificate_number"], "2021010901000123");
        assert_eq!(lines[1]["listing_id"], "L2");
        assert_eq!(lines[1]["error"], "merchant_id is required");
        assert!(lines[1].get("decision").is_none());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let log = DecisionLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            dropped_counter: metrics::counter!("test_dropped"),
        };
        let batch = |n: usize| Batch {
            at_unix_ms: 0,
            snapshot_sequence: 1,
            entries: vec![
                Entry {
                    listing_id: "L".into(),
                    merchant_id: "M".into(),
                    outcome: Outcome::Error {
                        field: "x",
                        message: String::new(),
                    },
                };
                n
            ],
        };
        log.offer(batch(2)); // fills the queue (nobody reads)
        log.offer(batch(3)); // dropped
        log.offer(batch(4)); // dropped
        assert_eq!(log.dropped(), 7);
    }

    #[tokio::test]
    async fn writer_appends_every_line_and_flushes_when_senders_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let (log, task) = DecisionLog::start(&path, 8).await.unwrap();
        for i in 0..5 {
            log.offer(Batch {
                at_unix_ms: 0,
                snapshot_sequence: 3,
                entries: vec![Entry {
                    listing_id: format!("L{i}"),
                    merchant_id: "M".into(),
                    outcome: Outcome::Verdict {
                        decision: Decision::Allow,
                        reason: Reason::NotInCatalogue,
                        certificate: None,
                    },
                }],
            });
        }
        drop(log);
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().all(|l| l.contains("\"NOT_IN_CATALOGUE\"")));
    }
}

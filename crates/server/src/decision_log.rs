//! The optional decision log: one JSON line per listing decided (or refused), as
//! `spec/verdicts.md` describes, appended to a file.
//!
//! # Design
//!
//! Off the hot path: a request or stream chunk hands its entries to a bounded channel with
//! `try_send` (one message per request or chunk, never one per listing) and a writer task
//! formats and writes them. If the writer falls behind and the channel is full, the entries
//! are counted as dropped (`cccgate_decision_log_dropped_total`) and the check goes on: checks
//! never wait for the log. The queue is bounded twice: in messages and in (estimated) bytes,
//! so a flood of large ids cannot grow it past `decision_log_queue_bytes`.
//!
//! The writer (a blocking task) appends whole batches of whole lines to a file opened with
//! mode 0640, rotates it by size into `FILE.1` .. `FILE.<keep>`, and on a failed write
//! (a full disk) cuts the file back to where the batch started, so a partial line never
//! stays; failures and the entries they lost are counted. Merchant ids may be replaced by
//! their HMAC-SHA256 under a key file (`decision_log_merchant_key`): equal ids stay equal
//! (joinable), the clear id is not in the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cccgate_core::{CertNumber, Decision, Reason};
use metrics::Counter;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One listing's line.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub listing_id: String,
    pub merchant_id: String,
    /// The listing's product code as sent (cut to its limit), for the report's categories.
    pub product_code: String,
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
    /// The caller: a token's name, an mTLS name, or `anonymous`.
    pub client: Arc<str>,
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

/// How the decision log is written.
#[derive(Clone, Debug)]
pub struct DecisionLogSettings {
    /// The file appended to; rotated files are `FILE.1` (newest) .. `FILE.<keep_files>`.
    pub path: PathBuf,
    /// Most requests or stream messages queued for the writer.
    pub queue: usize,
    /// Most bytes (estimated as formatted) queued for the writer; beyond it entries are
    /// dropped and counted.
    pub queue_bytes: usize,
    /// Rotate when the file would grow past this many bytes; 0: never.
    pub max_file_bytes: u64,
    /// Rotated files kept.
    pub keep_files: usize,
    /// When set, merchant ids are written as `hmac-sha256:<hex>` of this key, never in clear.
    pub merchant_key: Option<Vec<u8>>,
}

impl DecisionLogSettings {
    /// Defaults for a file: 4096 messages, 64 MiB queued, 256 MiB files, 8 kept, ids in clear.
    pub fn new(path: PathBuf) -> Self {
        DecisionLogSettings {
            path,
            queue: 4096,
            queue_bytes: 64 << 20,
            max_file_bytes: 256 << 20,
            keep_files: 8,
            merchant_key: None,
        }
    }
}

/// The sending side, cloned into the services.
#[derive(Clone, Debug)]
pub(crate) struct DecisionLog {
    tx: mpsc::Sender<Batch>,
    dropped: Arc<AtomicU64>,
    dropped_counter: Counter,
    /// Estimated bytes queued and not yet written, against `queue_bytes`.
    queued: Arc<AtomicU64>,
    queue_bytes: u64,
}

/// A rough upper bound of a batch's formatted size: what the byte budget counts.
fn estimate(batch: &Batch) -> u64 {
    batch
        .entries
        .iter()
        .map(|e| {
            let extra = match &e.outcome {
                Outcome::Error { message, .. } => message.len(),
                Outcome::Verdict { .. } => 0,
            };
            // Field names, decision, reason, numbers: under 200 bytes; strings may be escaped.
            200 + 2
                * (e.listing_id.len() + e.merchant_id.len() + e.product_code.len() + extra) as u64
        })
        .sum()
}

impl DecisionLog {
    /// Opens (appends to) the file, mode 0640, and starts the writer. The writer ends,
    /// flushing, when every sender is dropped.
    pub(crate) async fn start(
        settings: DecisionLogSettings,
    ) -> Result<(DecisionLog, JoinHandle<()>), DecisionLogError> {
        let file = RotatingFile::open(&settings.path, settings.max_file_bytes, settings.keep_files)
            .map_err(|source| DecisionLogError {
                path: settings.path.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let queued = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            out: Box::new(file),
            merchant_key: settings.merchant_key.clone(),
            queued: queued.clone(),
            path: settings.path.clone(),
            failing: false,
            coalesce: match settings.max_file_bytes {
                0 => 1 << 20,
                max => (max as usize).min(1 << 20),
            },
            written: 0,
            failures: 0,
            lost: 0,
        };
        // Registered at zero now: alerts and panels see the series before the first write.
        for name in [
            "cccgate_decision_log_written_total",
            "cccgate_decision_log_write_failures_total",
            "cccgate_decision_log_lost_total",
            "cccgate_decision_log_rotations_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        let task = tokio::task::spawn_blocking(move || writer.run(rx));
        Ok((
            DecisionLog {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                dropped_counter: metrics::counter!("cccgate_decision_log_dropped_total"),
                queued,
                queue_bytes: settings.queue_bytes as u64,
            },
            task,
        ))
    }

    /// Hands a batch to the writer without waiting; counts it as dropped if the queue is full
    /// (in messages or in bytes).
    pub(crate) fn offer(&self, batch: Batch) {
        let size = estimate(&batch);
        let n = batch.entries.len() as u64;
        let over = self.queued.fetch_add(size, Ordering::Relaxed) + size > self.queue_bytes;
        if over || self.tx.try_send(batch).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(n, Ordering::Relaxed);
            self.dropped_counter.increment(n);
        }
    }

    /// Entries dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where the writer's bytes go: a file that rotates, or (tests) one that fails on demand.
pub(crate) trait Output: Send {
    /// Appends all of `bytes` or fails; on failure part of them may have been written.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts the output back to `len` bytes (removes a partly written batch).
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()>;
    /// Current length.
    fn len(&self) -> u64;
    /// Starts a new file if appending `next` bytes would pass the size limit.
    fn rotate_for(&mut self, next: u64) -> std::io::Result<bool>;
}

/// The log file: appended to, mode 0640, rotated by size into `FILE.1` .. `FILE.<keep>`.
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let file = open_log(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            len,
            max_bytes,
            keep,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

/// Opens for appending with mode 0640 (set on the descriptor, whatever the umask or the mode
/// of an existing file).
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    Ok(file)
}

impl Output for RotatingFile {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let r = self.file.write_all(bytes);
        if r.is_ok() {
            self.len += bytes.len() as u64;
        }
        r
    }

    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn rotate_for(&mut self, next: u64) -> std::io::Result<bool> {
        if self.max_bytes == 0 || self.len == 0 || self.len + next <= self.max_bytes {
            return Ok(false);
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        self.file = open_log(&self.path)?;
        self.len = 0;
        Ok(true)
    }
}

/// The writing side: formats batches and appends them, whole lines only.
struct Writer {
    out: Box<dyn Output>,
    merchant_key: Option<Vec<u8>>,
    queued: Arc<AtomicU64>,
    path: PathBuf,
    failing: bool,
    /// Bytes of queued batches formatted into one write.
    coalesce: usize,
    /// Lines written, failed writes and lines they lost (also metrics).
    written: u64,
    failures: u64,
    lost: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(batch) = rx.blocking_recv() {
            let mut lines = batch.entries.len() as u64;
            let mut size = estimate(&batch);
            format_batch(&batch, self.merchant_key.as_deref(), &mut buf);
            // Take whatever else is already queued, then write once (never much more than a
            // file may hold, so rotation stays close to its size).
            while buf.len() < self.coalesce
                && let Ok(more) = rx.try_recv()
            {
                lines += more.entries.len() as u64;
                size += estimate(&more);
                format_batch(&more, self.merchant_key.as_deref(), &mut buf);
            }
            self.write(&buf, lines);
            self.queued.fetch_sub(size, Ordering::Relaxed);
            buf.clear();
        }
    }

    /// Appends `buf` (whole lines). A failed write is counted, its lines are counted as lost,
    /// and the file is cut back to where it was, so no partial line stays behind.
    fn write(&mut self, buf: &[u8], lines: u64) {
        match self.out.rotate_for(buf.len() as u64) {
            Ok(true) => metrics::counter!("cccgate_decision_log_rotations_total").increment(1),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "decision log rotation failed; appending to the current file");
            }
        }
        let before = self.out.len();
        match self.out.append(buf) {
            Ok(()) => {
                metrics::counter!("cccgate_decision_log_written_total").increment(lines);
                self.written += lines;
                if self.failing {
                    tracing::info!(path = %self.path.display(), "decision log writes again");
                }
                self.failing = false;
            }
            Err(e) => {
                metrics::counter!("cccgate_decision_log_write_failures_total").increment(1);
                metrics::counter!("cccgate_decision_log_lost_total").increment(lines);
                self.failures += 1;
                self.lost += lines;
                if let Err(t) = self.out.truncate_to(before) {
                    tracing::error!(path = %self.path.display(), error = %t, "decision log: cannot remove a partly written batch");
                }
                if !self.failing {
                    tracing::error!(path = %self.path.display(), error = %e, "decision log write failed; entries lost are counted");
                }
                self.failing = true;
            }
        }
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// A merchant id as written: in clear, or `hmac-sha256:<64 hex>` under the key.
fn merchant<'a>(id: &'a str, key: Option<&[u8]>) -> std::borrow::Cow<'a, str> {
    match key {
        None => std::borrow::Cow::Borrowed(id),
        Some(k) => std::borrow::Cow::Owned(format!(
            "hmac-sha256:{}",
            hex::encode(hmac_sha256(k, id.as_bytes()))
        )),
    }
}

/// Reads a merchant-id key file: its bytes, at least 16 of them (32 random bytes advised).
pub fn read_merchant_key(path: &Path) -> Result<Vec<u8>, DecisionLogError> {
    let err = |source| DecisionLogError {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if meta.len() > 4096 {
        return Err(err(std::io::Error::other(
            "the merchant key file is larger than 4 KiB",
        )));
    }
    let key = std::fs::read(path).map_err(err)?;
    if key.len() < 16 {
        return Err(err(std::io::Error::other(
            "the merchant key file holds fewer than 16 bytes",
        )));
    }
    Ok(key)
}

#[derive(Serialize)]
struct Line<'a> {
    listing_id: &'a str,
    merchant_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    product_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    snapshot_sequence: u64,
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    at_unix_ms: i64,
}

/// Formats one batch as JSON lines.
pub(crate) fn format_batch(batch: &Batch, merchant_key: Option<&[u8]>, out: &mut Vec<u8>) {
    for e in &batch.entries {
        let merchant_id = merchant(&e.merchant_id, merchant_key);
        let line = match &e.outcome {
            Outcome::Verdict {
                decision,
                reason,
                certificate,
            } => Line {
                listing_id: &e.listing_id,
                merchant_id: &merchant_id,
                product_code: &e.product_code,
                decision: Some(decision.as_str()),
                reason: Some(reason.as_str()),
                snapshot_sequence: batch.snapshot_sequence,
                client: &batch.client,
                certificate_number: certificate.map(|c| c.to_string()),
                error: None,
                field: None,
                at_unix_ms: batch.at_unix_ms,
            },
            Outcome::Error { field, message } => Line {
                listing_id: &e.listing_id,
                merchant_id: &merchant_id,
                product_code: &e.product_code,
                decision: None,
                reason: None,
                snapshot_sequence: batch.snapshot_sequence,
                client: &batch.client,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_fields_the_spec_requires() {
        let batch = Batch {
            at_unix_ms: 1_700_000_000_000,
            snapshot_sequence: 42,
            client: "shop-a".into(),
            entries: vec![
                Entry {
                    listing_id: "L1".into(),
                    merchant_id: "M1".into(),
                    product_code: "0901".into(),
                    outcome: Outcome::Verdict {
                        decision: Decision::Block,
                        reason: Reason::CertificateRevoked,
                        certificate: CertNumber::from_u64(2021010901000123),
                    },
                },
                Entry {
                    listing_id: "L2".into(),
                    merchant_id: String::new(),
                    product_code: "0901".into(),
                    outcome: Outcome::Error {
                        field: "merchant_id",
                        message: "merchant_id is required".into(),
                    },
                },
            ],
        };
        let mut out = Vec::new();
        format_batch(&batch, None, &mut out);
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
        assert_eq!(lines[0]["client"], "shop-a");
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
            queued: Arc::new(AtomicU64::new(0)),
            queue_bytes: u64::MAX,
        };
        let batch = |n: usize| Batch {
            at_unix_ms: 0,
            snapshot_sequence: 1,
            client: "anonymous".into(),
            entries: vec![
                Entry {
                    listing_id: "L".into(),
                    merchant_id: "M".into(),
                    product_code: "0901".into(),
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
        let mut settings = DecisionLogSettings::new(path.clone());
        settings.queue = 8;
        let (log, task) = DecisionLog::start(settings).await.unwrap();
        for i in 0..5 {
            log.offer(Batch {
                at_unix_ms: 0,
                snapshot_sequence: 3,
                client: "anonymous".into(),
                entries: vec![Entry {
                    listing_id: format!("L{i}"),
                    merchant_id: "M".into(),
                    product_code: "0901".into(),
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

    fn entry(i: usize, merchant: &str) -> Entry {
        Entry {
            listing_id: format!("L{i:06}"),
            merchant_id: merchant.into(),
            product_code: "0901".into(),
            outcome: Outcome::Verdict {
                decision: Decision::Allow,
                reason: Reason::NotInCatalogue,
                certificate: None,
            },
        }
    }

    fn one(i: usize) -> Batch {
        Batch {
            at_unix_ms: 0,
            snapshot_sequence: 1,
            client: "anonymous".into(),
            entries: vec![entry(i, "M")],
        }
    }

    #[tokio::test]
    async fn the_log_rotates_by_size_keeps_n_files_of_whole_lines_mode_0640() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let mut settings = DecisionLogSettings::new(path.clone());
        settings.max_file_bytes = 1000;
        settings.keep_files = 2;
        settings.queue = 1000;
        let (log, task) = DecisionLog::start(settings).await.unwrap();
        for i in 0..100 {
            log.offer(one(i));
        }
        drop(log);
        task.await.unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]);
        let mut last_seen = Vec::new();
        for name in &names {
            let p = dir.path().join(name);
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{name}");
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.ends_with('\n'), "{name}");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                last_seen.push(v["listing_id"].as_str().unwrap().to_owned());
            }
            // One batch may pass the size (never split), but not by more than itself.
            assert!(meta.len() <= 1000 + 200, "{name}: {}", meta.len());
        }
        // The newest lines are in the current file; the last entry is there.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("L000099"));
        assert!(
            !last_seen.iter().any(|l| l == "L000000"),
            "the oldest rotated out"
        );
    }

    /// An output that accepts `room` bytes, then writes part of the next batch and fails,
    /// like a disk that fills up.
    struct FullDisk {
        data: Arc<std::sync::Mutex<Vec<u8>>>,
        room: usize,
    }

    impl Output for FullDisk {
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let mut d = self.data.lock().unwrap();
            let free = self.room.saturating_sub(d.len());
            if bytes.len() > free {
                d.extend_from_slice(&bytes[..free.min(bytes.len() / 2)]);
                return Err(std::io::Error::other("No space left on device"));
            }
            d.extend_from_slice(bytes);
            Ok(())
        }
        fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
            self.data.lock().unwrap().truncate(len as usize);
            Ok(())
        }
        fn len(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn rotate_for(&mut self, _: u64) -> std::io::Result<bool> {
            Ok(false)
        }
    }

    #[test]
    fn a_failed_write_is_counted_and_leaves_no_partial_line() {
        let data = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut w = Writer {
            out: Box::new(FullDisk {
                data: data.clone(),
                room: 500,
            }),
            merchant_key: None,
            queued: Arc::new(AtomicU64::new(0)),
            path: "test".into(),
            failing: false,
            coalesce: 1 << 20,
            written: 0,
            failures: 0,
            lost: 0,
        };
        for i in 0..10 {
            let mut buf = Vec::new();
            format_batch(&one(i), None, &mut buf);
            w.write(&buf, 1);
        }
        let text = String::from_utf8(data.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'));
        let kept = text.lines().count();
        assert!(kept > 0 && kept < 10, "{kept}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        let lost = 10 - kept as u64;
        assert_eq!((w.written, w.failures, w.lost), (kept as u64, lost, lost));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (tx, _rx) = mpsc::channel(1000);
        let log = DecisionLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            dropped_counter: metrics::counter!("test_dropped"),
            queued: Arc::new(AtomicU64::new(0)),
            queue_bytes: 10_000,
        };
        let big = |n: usize| Batch {
            at_unix_ms: 0,
            snapshot_sequence: 1,
            client: "anonymous".into(),
            entries: vec![entry(0, &"m".repeat(1000)); n],
        };
        log.offer(big(4)); // about 8.8 KB: queued
        log.offer(big(1)); // would pass 10 KB: dropped although the channel has room
        assert_eq!(log.dropped(), 1);
        assert!(log.queued.load(Ordering::Relaxed) <= 10_000);
    }

    #[test]
    fn merchant_ids_can_be_replaced_by_a_keyed_hash() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key = b"0123456789abcdef0123456789abcdef";
        let mut out = Vec::new();
        format_batch(
            &Batch {
                at_unix_ms: 0,
                snapshot_sequence: 1,
                client: "anonymous".into(),
                entries: vec![entry(1, "merchant-42"), entry(2, "merchant-42")],
            },
            Some(key),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("merchant-42"));
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["merchant_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids[0], ids[1], "equal ids stay joinable");
        assert!(ids[0].starts_with("hmac-sha256:") && ids[0].len() == 12 + 64);
    }
}

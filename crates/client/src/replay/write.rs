//! The third stage: verdict lines, the output file and the summary's counts.
//!
//! A chunk's answer is rendered into its verdict lines by the call task that received it
//! ([`Done::new`]); the writer thread puts the rendered chunks back in input order, writes
//! each whole chunk, and only then counts it and drops it, which gives its pipeline permit
//! back to the reader. So the output is always a contiguous prefix of the input.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;

use prost::bytes::Bytes;
use tokio::sync::Semaphore;

use super::read::{Chunk, Slot};
use super::{ReplayError, StopFlag};
use crate::output::{decision_of, put_error, put_result, reason_of};
use crate::progress::Counters;
use crate::summary::{BadRequest, Tally};
use crate::wire::{Outcome, ResponseView, ResultView, Rpc};

/// A chunk and the gateway's answer to it.
#[derive(Debug)]
pub(super) struct Done {
    chunk: Chunk,
    rpc: Rpc,
    response: Option<Bytes>,
    latency_us: u64,
    /// The chunk's verdict lines and counts, rendered by the call task (so the writer
    /// thread only orders and writes), or why the answer cannot be read.
    rendered: Result<(Vec<u8>, ChunkCounts), String>,
}

impl Done {
    /// Reads the answer to `chunk` and renders its lines.
    pub(super) fn new(chunk: Chunk, rpc: Rpc, response: Option<Bytes>, latency_us: u64) -> Done {
        let mut d = Done {
            chunk,
            rpc,
            response,
            latency_us,
            rendered: Err(String::new()),
        };
        let mut buf = Vec::with_capacity(d.chunk.slots.len() * 320);
        d.rendered = render(&d, &mut ResponseView::default(), &mut buf).map(|c| (buf, c));
        d
    }
}

/// Before appending to an existing output, checks that it holds exactly `skip` whole lines,
/// so the verdicts appended line up with the input. A missing or empty file is fine (the
/// tail of an input replayed into a new file).
pub(super) fn check_resume(path: &Path, skip: u64) -> Result<(), ReplayError> {
    use std::io::Read;
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ReplayError::Output {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last, mut len) = (0u64, b'\n', 0u64);
    loop {
        let n = file.read(&mut buf).map_err(|source| ReplayError::Output {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
        len += n as u64;
    }
    if len == 0 {
        return Ok(());
    }
    if last != b'\n' || lines != skip {
        return Err(ReplayError::Resume {
            path: path.to_path_buf(),
            lines,
            partial: last != b'\n',
            skip,
        });
    }
    Ok(())
}

pub(super) fn open_output(path: &Path, append: bool) -> Result<Box<dyn Write + Send>, ReplayError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdout()));
    }
    let file = if append {
        OpenOptions::new().create(true).append(true).open(path)
    } else {
        File::create(path)
    };
    let file = file.map_err(|source| ReplayError::Output {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(file))
}

/// What the writer did.
pub(super) struct Written {
    pub(super) tally: Tally,
    pub(super) last_line: u64,
    pub(super) error: Option<String>,
}

impl Written {
    pub(super) fn panicked() -> Self {
        Written {
            tally: Tally::default(),
            last_line: 0,
            error: Some("the writer thread failed".to_owned()),
        }
    }
}

/// Starts the writer on a thread of its own; it ends when every call task has ended. Whatever
/// happened, it then closes the permits: the reader must not wait for one any more.
pub(super) fn spawn(
    out: Box<dyn Write + Send>,
    done: std_mpsc::Receiver<Done>,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    stop: Arc<StopFlag>,
) -> io::Result<JoinHandle<Written>> {
    std::thread::Builder::new()
        .name("replay-writer".into())
        .spawn(move || {
            let _close = ClosePermits(permits);
            write_verdicts(out, done, &counters, &stop)
        })
}

/// Closes the permits when dropped: when the writer ends, even by a panic.
struct ClosePermits(Arc<Semaphore>);

impl Drop for ClosePermits {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn write_verdicts(
    mut out: Box<dyn Write + Send>,
    done: std_mpsc::Receiver<Done>,
    counters: &Counters,
    stop: &StopFlag,
) -> Written {
    let mut w = Written {
        tally: Tally::default(),
        last_line: 0,
        error: None,
    };
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    while let Ok(d) = done.recv() {
        waiting.insert(d.chunk.index, d);
        while let Some(mut d) = waiting.remove(&next) {
            if w.error.is_some() {
                break;
            }
            let records = d.chunk.slots.len() as u64;
            let (buf, counts) = match std::mem::replace(&mut d.rendered, Err(String::new())) {
                Ok(r) => r,
                Err(e) => {
                    stop.set(e.clone());
                    w.error = Some(e);
                    break;
                }
            };
            if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                let e = format!("cannot write the verdicts: {e}");
                stop.set(e.clone());
                w.error = Some(e);
                break;
            }
            // Only now is the chunk in the output: count it, and drop it (its permit goes
            // back to the reader).
            commit(d, counts, &mut w);
            counters.done.fetch_add(records, Ordering::Relaxed);
            next += 1;
        }
    }
    let _ = out.flush();
    w
}

/// The counts of one chunk, added to the summary once the chunk is in the output.
#[derive(Debug)]
struct ChunkCounts {
    verdicts: [[u64; 3]; cccgate_core::Reason::COUNT],
    unknown: u64,
    bad_requests: Vec<BadRequest>,
    snapshot: Option<(u64, String)>,
    last_line: u64,
}

/// Writes the lines of one chunk into `buf` and counts them.
fn render(d: &Done, view: &mut ResponseView, buf: &mut Vec<u8>) -> Result<ChunkCounts, String> {
    let bytes: &[u8] = d.response.as_deref().unwrap_or_default();
    let mut counts = ChunkCounts {
        verdicts: [[0; 3]; cccgate_core::Reason::COUNT],
        unknown: 0,
        bad_requests: Vec::new(),
        snapshot: None,
        last_line: 0,
    };
    let content_id = if d.response.is_some() {
        view.parse(d.rpc, bytes).map_err(|e| e.to_string())?;
        if view.len() != d.chunk.listings {
            return Err(format!(
                "the gateway answered {} results to a request of {} listings",
                view.len(),
                d.chunk.listings
            ));
        }
        let id = view.content_id(bytes).map_err(|e| e.to_string())?;
        counts.snapshot = Some((view.sequence, id.to_owned()));
        id
    } else {
        ""
    };
    let mut i = 0;
    for slot in &d.chunk.slots {
        match slot {
            Slot::Listing { line } => {
                let r = ResultView::parse(view.result(bytes, i)).map_err(|e| e.to_string())?;
                i += 1;
                put_result(buf, &r, content_id, *line);
                match r.outcome {
                    Outcome::Verdict {
                        decision, reason, ..
                    } => match (decision_of(decision), reason_of(reason)) {
                        (Some(d), Some(r)) => counts.verdicts[r.index()][d as usize] += 1,
                        _ => counts.unknown += 1,
                    },
                    Outcome::Error { field, message } => counts.bad_requests.push(BadRequest {
                        line: *line,
                        listing_id: r.listing_id.to_owned(),
                        field: field.to_owned(),
                        error: message.to_owned(),
                    }),
                    Outcome::Missing => counts.bad_requests.push(BadRequest {
                        line: *line,
                        listing_id: r.listing_id.to_owned(),
                        field: String::new(),
                        error: "the gateway returned neither a verdict nor an error".to_owned(),
                    }),
                }
                counts.last_line = *line;
            }
            Slot::Bad(b) => {
                put_error(buf, b.listing_id.as_deref(), &b.error, None, b.line);
                counts.last_line = b.line;
            }
        }
    }
    Ok(counts)
}

/// Counts one written chunk into the summary.
fn commit(d: Done, counts: ChunkCounts, w: &mut Written) {
    let t = &mut w.tally;
    if d.response.is_some() {
        t.latency_us.saturating_record(d.latency_us.max(1));
    }
    for &m in &d.chunk.merchants {
        t.merchants.insert(m);
    }
    for (row, add) in t.verdicts.iter_mut().zip(counts.verdicts) {
        for (n, a) in row.iter_mut().zip(add) {
            *n += a;
        }
    }
    t.unknown_verdicts += counts.unknown;
    for b in counts.bad_requests {
        t.bad_request(b);
    }
    if let Some(key) = counts.snapshot {
        *t.snapshots.entry(key).or_insert(0) += d.chunk.listings as u64;
    }
    for slot in d.chunk.slots {
        if let Slot::Bad(b) = slot {
            t.bad_line(*b);
        }
    }
    w.last_line = counts.last_line.max(w.last_line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_needs_an_output_of_exactly_skip_whole_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.jsonl");
        // No file, or an empty one: a tail replayed into a new file.
        check_resume(&out, 3).unwrap();
        std::fs::write(&out, "").unwrap();
        check_resume(&out, 3).unwrap();
        std::fs::write(&out, "a\nb\nc\n").unwrap();
        check_resume(&out, 3).unwrap();
        let err = check_resume(&out, 5).unwrap_err().to_string();
        assert!(
            err.contains("holds 3 verdict lines") && err.contains("--skip 3"),
            "{err}"
        );
        std::fs::write(&out, "a\nb\nc\n{\"listing_id\":").unwrap();
        let err = check_resume(&out, 3).unwrap_err().to_string();
        assert!(err.contains("a partial line"), "{err}");
    }
}

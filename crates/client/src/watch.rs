//! Following a gateway's register changes: the change feed as JSON lines (`cccgate watch`)
//! and watched listings whose CHANGED verdicts are appended to a replay's output
//! (`cccgate replay --watch`). See spec/watch.md.

use std::future::Future;
use std::io::Write;
use std::path::Path;

use cccgate_core::{Decision, Reason, Status as CertStatus};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{
    Certificate, ChangeBatch, ChangeCause, Listing, ListingResult, WatchChangesRequest, WatchEvent,
    WatchListingsRequest, WatchListingsResponse,
};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;

use crate::connect::{Credentials, TokenInterceptor};

use crate::input::{Format, InputError, ListingReader, Record};
use crate::output::{decision_of, reason_of};

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The target is not a URL or does not answer.
    #[error("{target}: {message}")]
    Connect {
        /// The gateway.
        target: String,
        /// Why.
        message: String,
    },
    /// The gateway refused or ended the stream (for a resume that is too old: re-check
    /// everything with `cccgate replay` and start again from 0).
    #[error("{target}: {}: {}", .status.code(), .status.message())]
    Gateway {
        /// The gateway.
        target: String,
        /// What it said.
        status: tonic::Status,
    },
    /// The output cannot be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The input cannot be read.
    #[error(transparent)]
    Input(#[from] InputError),
}

type Client = ListingCheckClient<InterceptedService<tonic::transport::Channel, TokenInterceptor>>;

async fn client(target: &str, credentials: &Credentials) -> Result<Client, WatchError> {
    let endpoint =
        crate::connect::endpoint(target, credentials).map_err(|e| WatchError::Connect {
            target: target.to_owned(),
            message: e.to_string(),
        })?;
    let channel = endpoint.connect().await.map_err(|e| WatchError::Connect {
        target: target.to_owned(),
        message: e.to_string(),
    })?;
    Ok(
        ListingCheckClient::with_interceptor(channel, credentials.interceptor())
            .max_decoding_message_size(256 << 20),
    )
}

fn cause_name(n: i32) -> &'static str {
    match ChangeCause::try_from(n) {
        Ok(ChangeCause::Snapshot) => "SNAPSHOT",
        Ok(ChangeCause::Day) => "DAY",
        Ok(ChangeCause::Bookmark) => "BOOKMARK",
        _ => "UNSPECIFIED",
    }
}

fn status_name(n: i32) -> &'static str {
    u8::try_from(n)
        .ok()
        .and_then(CertStatus::from_code)
        .map_or("UNSPECIFIED", CertStatus::as_str)
}

fn certificate(c: &Certificate) -> Value {
    json!({
        "number": c.number,
        "status": status_name(c.status),
        "product_code": c.product_code,
        "producer": c.producer,
        "expiry_date": c.expiry_date,
    })
}

/// One change batch as a JSON line (without the newline).
pub fn batch_json(b: &ChangeBatch) -> String {
    let changes: Vec<Value> = b
        .changes
        .iter()
        .map(|c| {
            json!({
                "number": c.number,
                "before": c.before.as_ref().map(certificate),
                "after": c.after.as_ref().map(certificate),
            })
        })
        .collect();
    json!({
        "sequence": b.sequence,
        "day": b.day,
        "cause": cause_name(b.cause),
        "changes": changes,
    })
    .to_string()
}

/// One watched listing's result as a JSON line (without the newline); `event` is `INITIAL`
/// or `CHANGED`.
pub fn result_json(r: &ListingResult, snapshot_sequence: u64, event: &str) -> String {
    match &r.outcome {
        Some(Outcome::Verdict(v)) => {
            let mut line = json!({
                "listing_id": r.listing_id,
                "event": event,
                "decision": decision_of(v.decision).map_or("UNSPECIFIED", Decision::as_str),
                "reason": reason_of(v.reason).map_or("UNSPECIFIED", Reason::as_str),
                "snapshot_sequence": snapshot_sequence,
            });
            if let (Some(c), Some(map)) = (&v.certificate, line.as_object_mut()) {
                map.insert("certificate_number".into(), c.number.clone().into());
                map.insert("certificate_status".into(), status_name(c.status).into());
                map.insert("expiry_date".into(), c.expiry_date.clone().into());
            }
            line.to_string()
        }
        Some(Outcome::Error(e)) => json!({
            "listing_id": r.listing_id, "event": event, "error": e.message, "field": e.field,
        })
        .to_string(),
        None => {
            json!({"listing_id": r.listing_id, "event": event, "error": "no verdict"}).to_string()
        }
    }
}

/// Prints the change feed of `target` from `from_sequence` (0: from now) to `out`, one JSON
/// line per batch (bookmarks included, so a reader sees the feed is live and where it
/// stands), until `stop` completes or the gateway ends the stream. Returns the batches.
pub async fn follow_changes(
    target: &str,
    credentials: &Credentials,
    from_sequence: u64,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<u64, WatchError> {
    let mut c = client(target, credentials).await?;
    let gateway = |status| WatchError::Gateway {
        target: target.to_owned(),
        status,
    };
    let mut stream = c
        .watch_changes(WatchChangesRequest { from_sequence })
        .await
        .map_err(gateway)?
        .into_inner();
    let mut n = 0;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(n),
            m = stream.message() => match m.map_err(gateway)? {
                None => return Ok(n),
                Some(b) => {
                    writeln!(out, "{}", batch_json(&b))?;
                    out.flush()?;
                    n += 1;
                }
            },
        }
    }
}

/// Reads the listings of `input` and watches them on `target` (in messages of `chunk`),
/// appending a JSON line to `out` for each CHANGED verdict, until `stop` completes or the
/// gateway ends the stream. The INITIAL answers are written only with `initial` (after a
/// replay, its output already has the current verdicts). Returns how many CHANGED lines were
/// written.
#[allow(clippy::too_many_arguments)] // each is a caller's option; a struct would only rename them
pub async fn watch_listings(
    target: &str,
    credentials: &Credentials,
    input: &Path,
    format: Option<Format>,
    chunk: usize,
    initial: bool,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<u64, WatchError> {
    let mut c = client(target, credentials).await?;
    let gateway = |status| WatchError::Gateway {
        target: target.to_owned(),
        status,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<WatchListingsRequest>(4);
    let mut stream = c
        .watch_listings(ReceiverStream::new(rx))
        .await
        .map_err(gateway)?
        .into_inner();
    // Read the input on a blocking thread; it sends the listings in chunks.
    let path = input.to_path_buf();
    let chunk = chunk.max(1);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), InputError> {
        let mut r = ListingReader::open(&path, format)?;
        let mut add = Vec::with_capacity(chunk);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        while let Some(listing) = r.next_record(|rec| match rec {
            Record::Listing { fields, .. } => Some(Listing {
                listing_id: text(fields[0]),
                merchant_id: text(fields[1]),
                product_code: text(fields[2]),
                certificate_number: text(fields[3]),
                model: text(fields[4]),
                event_time: text(fields[5]),
            }),
            Record::Bad { .. } => None,
        })? {
            add.extend(listing);
            if add.len() == chunk {
                let msg = WatchListingsRequest {
                    add: std::mem::replace(&mut add, Vec::with_capacity(chunk)),
                    remove: Vec::new(),
                };
                if tx.blocking_send(msg).is_err() {
                    return Ok(());
                }
            }
        }
        if !add.is_empty() {
            let _ = tx.blocking_send(WatchListingsRequest {
                add,
                remove: Vec::new(),
            });
        }
        // The request side closes here; the watches go on until the call is dropped.
        Ok(())
    });
    let mut n = 0;
    tokio::pin!(stop);
    let result = loop {
        tokio::select! {
            () = &mut stop => break Ok(n),
            m = stream.message() => match m.map_err(gateway) {
                Err(e) => break Err(e),
                Ok(None) => break Ok(n),
                Ok(Some(WatchListingsResponse { results, snapshot_sequence, event })) => {
                    let changed = event == WatchEvent::Changed as i32;
                    if changed || initial {
                        let name = if changed { "CHANGED" } else { "INITIAL" };
                        for r in &results {
                            writeln!(out, "{}", result_json(r, snapshot_sequence, name))?;
                            n += u64::from(changed);
                        }
                        out.flush()?;
                    }
                }
            },
        }
    };
    if reader.is_finished() {
        if let Ok(Err(e)) = reader.await {
            return Err(e.into());
        }
    } else {
        reader.abort();
    }
    result
}

//! The operators' web console, at `/` on the admin plane's HTTP listener (`--metrics-listen`).
//!
//! # What it shows
//!
//! - `/`: the snapshot in force (sequence, age, counts by status, source, origin), reloads and
//!   refusals with their reasons, the change history (the watch feed's batches), live verdict
//!   rates by reason (refreshed in place every 5 s by the page's only script), and two forms.
//! - `/lookup?cert=...`: a certificate typed as a merchant would type it (`CCC:`, dashes,
//!   full-width digits): its normalised number, status, product, models, producer, expiry.
//! - `/explain?product_code=...&certificate_number=...&model=...&event_time=...`: the verdict
//!   a listing gets now, the rule of the decision table that matched and the facts it read
//!   ([`cccgate_core::explain`], the same decision code the gateway answers with).
//! - With `--candidate-dir`, the candidate register and its shadow counts on `/`; with
//!   `--console-tokens` too, promote and discard buttons (`POST /candidate`; who may press
//!   them, and how cross-site requests are refused: [`candidate`]).
//!
//! # Design
//!
//! Server-rendered HTML with inline CSS: no CDN, no framework, works without a network. Every
//! value from outside (the register's text, the query, refusal reasons) goes through [`esc`].
//! Inputs are bounded before they are parsed: the query string at [`MAX_QUERY_BYTES`], each
//! field at its listing limit. The history of reloads and refusals and the rate samples are
//! kept by a sampler task in small rings ([`MAX_EVENTS`], [`RATE_WINDOW`]), so memory is fixed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use cccgate_core::{CertNumber, Day, Policy, Reason, Status, explain};
use cccgate_proto::v1::{CertificateStatus, ChangeCause, Listing as WireListing};

use crate::admin::AdminService;
use crate::reload::Reloader;
use crate::store::Loaded;
use crate::watch::feed::Feed;

mod candidate;

pub(crate) use candidate::Buttons;

/// Longest query string a console page reads; longer is refused before it is parsed.
pub(crate) const MAX_QUERY_BYTES: usize = 2048;
/// Reloads and refusals remembered, newest first.
pub(crate) const MAX_EVENTS: usize = 50;
/// The span the verdict rates are averaged over.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the sampler looks at the store, the refusals and the counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Change batches shown, and changes shown per batch.
const HISTORY_SHOWN: usize = 20;
const CHANGES_SHOWN: usize = 5;

/// What the console reads.
#[derive(Debug, Clone)]
pub(crate) struct Console {
    reloader: Arc<Reloader>,
    feed: Arc<Feed>,
    policy: Policy,
    seen: Arc<Mutex<Seen>>,
    /// Promote and discard go through the Admin service's own code.
    admin: AdminService,
    /// The candidate's buttons, when `--console-tokens` is set.
    buttons: Option<Arc<Buttons>>,
}

/// What the sampler remembers.
#[derive(Debug, Default)]
struct Seen {
    sequence: Option<u64>,
    refusal_at: Option<i64>,
    events: VecDeque<Event>,
    samples: VecDeque<(Instant, [u64; Reason::COUNT])>,
}

#[derive(Debug, Clone)]
struct Event {
    at_unix_ms: i64,
    what: &'static str,
    detail: String,
    reason: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Console {
    pub(crate) fn new(
        reloader: Arc<Reloader>,
        feed: Arc<Feed>,
        policy: Policy,
        admin: AdminService,
        buttons: Option<Arc<Buttons>>,
    ) -> Self {
        Console {
            reloader,
            feed,
            policy,
            seen: Arc::default(),
            admin,
            buttons,
        }
    }

    /// The console's routes, to merge into the metrics listener's router.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/rates", get(rates_fragment))
            .route("/lookup", get(lookup))
            .route("/explain", get(explain_page))
            .route("/candidate", post(candidate::press))
            .with_state(self)
    }

    /// Samples the store, the refusals and the verdict counters every [`SAMPLE_EVERY`],
    /// until dropped.
    pub(crate) async fn sample_forever(self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            self.observe(true);
        }
    }

    /// Notes a new snapshot or refusal since the last look, and (from the sampler) the
    /// verdict counters.
    fn observe(&self, sample_counters: bool) {
        let loaded = self.reloader.reader().load_full();
        let refusal = self.reloader.state.last_refusal();
        let mut seen = lock(&self.seen);
        if let Some(l) = &loaded
            && seen.sequence != Some(l.snapshot.sequence())
        {
            seen.sequence = Some(l.snapshot.sequence());
            let c = l.snapshot.counts();
            push(
                &mut seen.events,
                Event {
                    at_unix_ms: l.loaded_at_unix_ms,
                    what: "loaded",
                    detail: format!(
                        "sequence {} from {} ({} certificates, {} valid)",
                        l.snapshot.sequence(),
                        l.origin,
                        c.total,
                        c.valid()
                    ),
                    reason: String::new(),
                },
            );
        }
        if let Some(r) = refusal
            && seen.refusal_at != Some(r.at_unix_ms)
        {
            seen.refusal_at = Some(r.at_unix_ms);
            push(
                &mut seen.events,
                Event {
                    at_unix_ms: r.at_unix_ms,
                    what: "refused",
                    detail: format!("{} {}", r.kind.as_str(), r.path.display()),
                    reason: r.reason.clone(),
                },
            );
        }
        if sample_counters {
            let now = Instant::now();
            let counts = verdict_counts(&crate::metrics::prometheus().render());
            seen.samples.push_back((now, counts));
            while seen
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                seen.samples.pop_front();
            }
        }
    }

    fn loaded(&self) -> Option<Arc<Loaded>> {
        self.reloader.reader().load_full()
    }
}

fn push(events: &mut VecDeque<Event>, e: Event) {
    events.push_front(e);
    events.truncate(MAX_EVENTS);
}

/// Verdicts counted so far by reason, read from the Prometheus text (`cccgate_checks_total`).
fn verdict_counts(text: &str) -> [u64; Reason::COUNT] {
    let mut out = [0u64; Reason::COUNT];
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cccgate_checks_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(reason) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("reason=\""))
            .and_then(|r| r.strip_suffix('"'))
        else {
            continue;
        };
        if let (Some(r), Ok(v)) = (
            Reason::ALL.iter().find(|r| r.as_str() == reason),
            value.trim().parse::<f64>(),
        ) {
            out[r.index()] += v as u64;
        }
    }
    out
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `unix ms` as China time, `YYYY-MM-DD HH:MM:SS +08:00`.
fn china_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = Day::from_unix_seconds_cn(secs);
    let in_day = (secs + 8 * 3600).rem_euclid(86_400);
    format!(
        "{day} {:02}:{:02}:{:02} +08:00",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

fn age(ms: i64) -> String {
    let s = (crate::metrics::now_unix_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} d {} h", s / 86400, s / 3600 % 24),
    }
}

fn today() -> Day {
    Day::from_unix_seconds_cn(crate::metrics::now_unix_ms().div_euclid(1000))
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#1f3a5f;color:#fff;padding:10px 24px}header a{color:#fff;text-decoration:none}\
main{padding:12px 24px;max-width:1100px}section{background:#fff;border:1px solid #d8dde3;\
border-radius:6px;padding:10px 16px;margin:12px 0}h2{font-size:16px;margin:4px 0 8px}\
table{border-collapse:collapse}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}\
th{color:#57606a;font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}\
.ALLOW{color:#1a7f37}.BLOCK{color:#cf222e}.REVIEW{color:#9a6700}.err{color:#cf222e}\
input{font:inherit;padding:3px 6px;margin:2px 6px 2px 0}label{margin-right:8px}\
form{margin:6px 0}code{background:#eef1f4;padding:0 4px;border-radius:3px}";

fn page(title: &str, body: &str, script: bool) -> Html<String> {
    let script = if script {
        // The one script: refresh the rates table in place.
        "<script>setInterval(function(){fetch('/rates').then(function(r){return r.text()})\
         .then(function(t){document.getElementById('rates').innerHTML=t}).catch(function(){})},5000)</script>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} · cccgate</title>\
         <style>{STYLE}</style></head><body><header><a href=\"/\"><b>cccgate</b> console</a></header>\
         <main>{body}</main>{script}</body></html>",
        esc(title)
    ))
}

fn forms(cert: &str, listing: &ExplainInput) -> String {
    format!(
        "<section id=\"lookup\"><h2>Certificate lookup</h2>\
         <form action=\"/lookup\" method=\"get\"><label>certificate number \
         <input name=\"cert\" id=\"cert\" size=\"34\" maxlength=\"128\" value=\"{}\" \
         placeholder=\"CCC:2021-0109-0100-0001\"></label><button type=\"submit\">Look up</button></form>\
         </section><section id=\"explain-form\"><h2>Explain a listing</h2>\
         <form action=\"/explain\" method=\"get\">\
         <label>product code <input name=\"product_code\" id=\"product_code\" size=\"6\" maxlength=\"64\" value=\"{}\"></label>\
         <label>certificate number <input name=\"certificate_number\" id=\"certificate_number\" size=\"30\" maxlength=\"128\" value=\"{}\"></label>\
         <label>model <input name=\"model\" id=\"model\" size=\"16\" maxlength=\"256\" value=\"{}\"></label>\
         <label>event time <input name=\"event_time\" id=\"event_time\" size=\"26\" maxlength=\"64\" value=\"{}\" \
         placeholder=\"now, or 2026-11-27T10:00:00+08:00\"></label>\
         <button type=\"submit\">Explain</button></form></section>",
        esc(cert),
        esc(&listing.product_code),
        esc(&listing.certificate_number),
        esc(&listing.model),
        esc(&listing.event_time),
    )
}

async fn index(State(c): State<Console>) -> Html<String> {
    c.observe(false);
    let mut b = String::new();
    b.push_str("<section id=\"snapshot\"><h2>Snapshot in force</h2>");
    match c.loaded() {
        None => {
            b.push_str("<p class=\"err\">No snapshot is in force: checks answer UNAVAILABLE.</p>")
        }
        Some(l) => {
            let s = &l.snapshot;
            let counts = s.counts();
            let _ = write!(
                b,
                "<table><tr><th>sequence</th><td id=\"sequence\">{}</td></tr>\
                 <tr><th>content id</th><td><code>{}</code></td></tr>\
                 <tr><th>source</th><td>{}</td></tr><tr><th>generated at</th><td>{}</td></tr>\
                 <tr><th>built</th><td>{} (age {})</td></tr>\
                 <tr><th>in force since</th><td>{}</td></tr><tr><th>origin</th><td>{}</td></tr>\
                 <tr><th>size</th><td>{} bytes</td></tr></table>\
                 <h2>Certificates by status</h2><table><tr><th>total</th><td class=\"num\">{}</td></tr>",
                s.sequence(),
                esc(s.content_id()),
                esc(s.source()),
                esc(s.generated_at()),
                china_time(s.built_at_unix_ms()),
                age(s.built_at_unix_ms()),
                china_time(l.loaded_at_unix_ms),
                esc(&l.origin),
                s.byte_len(),
                counts.total,
            );
            for st in Status::ALL {
                let _ = write!(
                    b,
                    "<tr><th>{} {}</th><td class=\"num\">{}</td></tr>",
                    st.as_str(),
                    st.as_chinese(),
                    counts.of(st)
                );
            }
            b.push_str("</table>");
        }
    }
    b.push_str("</section>");
    b.push_str(&candidate::section(&c));

    let state = &c.reloader.state;
    let _ = write!(
        b,
        "<section id=\"reloads\"><h2>Reloads and refusals</h2><p>{} put in force, {} refused since start \
         ({} ago).</p>",
        state.loaded.load(std::sync::atomic::Ordering::Relaxed),
        state.refused.load(std::sync::atomic::Ordering::Relaxed),
        age(crate::metrics::now_unix_ms() - state.started.elapsed().as_millis() as i64),
    );
    {
        let seen = lock(&c.seen);
        if seen.events.is_empty() {
            b.push_str("<p>Nothing yet.</p>");
        } else {
            b.push_str("<table><tr><th>when</th><th>what</th><th>which</th><th>why</th></tr>");
            for e in &seen.events {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                    china_time(e.at_unix_ms),
                    if e.what == "refused" { "err" } else { "" },
                    e.what,
                    esc(&e.detail),
                    esc(&e.reason)
                );
            }
            b.push_str("</table>");
        }
    }
    b.push_str("</section>");

    b.push_str("<section id=\"history\"><h2>Change history</h2>");
    let history = c.feed.recent(HISTORY_SHOWN, CHANGES_SHOWN);
    if history.is_empty() {
        b.push_str("<p>No certificate has changed since this gateway started.</p>");
    } else {
        b.push_str(
            "<table><tr><th>sequence</th><th>day</th><th>cause</th><th class=\"num\">changes</th>\
             <th>first changes</th></tr>",
        );
        for h in history {
            let sample: Vec<String> = h
                .sample
                .iter()
                .map(|ch| {
                    let st = |c: &Option<cccgate_proto::v1::Certificate>| {
                        c.as_ref().map_or("—", |c| status_name(c.status))
                    };
                    format!(
                        "<code>{}</code> {} → {}",
                        esc(&ch.number),
                        st(&ch.before),
                        st(&ch.after)
                    )
                })
                .collect();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                h.sequence,
                esc(&h.day),
                match h.cause {
                    ChangeCause::Snapshot => "new snapshot",
                    ChangeCause::Day => "midnight",
                    _ => "other",
                },
                h.changes,
                sample.join("<br>")
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    let _ = write!(
        b,
        "<section><h2>Verdicts by reason</h2><div id=\"rates\">{}</div></section>",
        rates_html(&c)
    );
    b.push_str(&forms("", &ExplainInput::default()));
    page("console", &b, true)
}

fn status_name(code: i32) -> &'static str {
    match CertificateStatus::try_from(code) {
        Ok(CertificateStatus::Valid) => "VALID",
        Ok(CertificateStatus::Suspended) => "SUSPENDED",
        Ok(CertificateStatus::Revoked) => "REVOKED",
        Ok(CertificateStatus::Cancelled) => "CANCELLED",
        Ok(CertificateStatus::Expired) => "EXPIRED",
        _ => "?",
    }
}

fn rates_html(c: &Console) -> String {
    let seen = lock(&c.seen);
    let (Some((t0, first)), Some((t1, last))) = (seen.samples.front(), seen.samples.back()) else {
        return "<p>Sampling… (every 2 s)</p>".into();
    };
    let secs = t1.duration_since(*t0).as_secs_f64();
    let mut b = format!(
        "<table><tr><th>reason</th><th>decision</th><th class=\"num\">per second (last {:.0} s)</th>\
         <th class=\"num\">since start</th></tr>",
        secs
    );
    for r in Reason::ALL {
        let i = r.index();
        let rate = if secs > 0.0 {
            last[i].saturating_sub(first[i]) as f64 / secs
        } else {
            0.0
        };
        let d = c.policy.decision(r).as_str();
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"{d}\">{d}</td><td class=\"num\">{rate:.1}</td><td class=\"num\">{}</td></tr>",
            r.as_str(),
            last[i]
        );
    }
    b.push_str("</table>");
    b
}

async fn rates_fragment(State(c): State<Console>) -> Html<String> {
    Html(rates_html(&c))
}

/// Query parameters, percent-decoded; `Err` names what is wrong.
fn query(raw: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the query is {} bytes, over the limit of {MAX_QUERY_BYTES}",
            raw.len()
        ));
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "a bad %-escape in the query".to_string())?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the query is not UTF-8".to_string())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn bad_request(title: &str, message: &str) -> Response {
    let body = format!(
        "<section><h2>{}</h2><p class=\"err\" id=\"error\">{}</p></section>{}",
        esc(title),
        esc(message),
        forms("", &ExplainInput::default())
    );
    (StatusCode::BAD_REQUEST, page(title, &body, false)).into_response()
}

async fn lookup(State(c): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let params = match query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad_request("Certificate lookup", &e),
    };
    let text = param(&params, "cert");
    if text.len() > cccgate_core::CERTIFICATE_NUMBER_MAX_BYTES {
        return bad_request(
            "Certificate lookup",
            &format!(
                "the certificate number is {} bytes, over the limit of {}",
                text.len(),
                cccgate_core::CERTIFICATE_NUMBER_MAX_BYTES
            ),
        );
    }
    let mut b = String::from("<section id=\"result\"><h2>Certificate lookup</h2>");
    let Some(loaded) = c.loaded() else {
        b.push_str("<p class=\"err\">No snapshot is in force.</p></section>");
        return (StatusCode::SERVICE_UNAVAILABLE, page("lookup", &b, false)).into_response();
    };
    let mut status = StatusCode::OK;
    match CertNumber::normalize(text) {
        Err(e) => {
            status = StatusCode::BAD_REQUEST;
            let _ = write!(
                b,
                "<p class=\"err\" id=\"error\">“{}” is not a certificate number: {}</p>",
                esc(text),
                esc(&e.to_string())
            );
        }
        Ok(parsed) => match loaded.snapshot.record(parsed.number) {
            None => {
                status = StatusCode::NOT_FOUND;
                let _ = write!(
                    b,
                    "<p class=\"err\" id=\"error\">Certificate <code>{}</code> is not in snapshot {} \
                     (a listing with it is blocked: CERTIFICATE_NOT_FOUND).</p>",
                    parsed.number,
                    loaded.snapshot.sequence()
                );
            }
            Some(r) => {
                let expired = r.expires < today();
                let _ = write!(
                    b,
                    "<table id=\"certificate\">\
                     <tr><th>typed</th><td>{}</td></tr>\
                     <tr><th>number 证书编号</th><td id=\"number\"><code>{}</code>{}</td></tr>\
                     <tr><th>status 证书状态</th><td id=\"status\">{} {}</td></tr>\
                     <tr><th>product 产品</th><td>{} {}</td></tr>\
                     <tr><th>models 型号规格</th><td>{}</td></tr>\
                     <tr><th>producer 生产者</th><td>{}</td></tr>\
                     <tr><th>factory 生产企业</th><td>{}</td></tr>\
                     <tr><th>applicant 委托人</th><td>{}</td></tr>\
                     <tr><th>issued 发证日期</th><td>{}</td></tr>\
                     <tr><th>expiry 到期日期</th><td id=\"expiry\">{}{}</td></tr>\
                     <tr><th>status changed</th><td>{} {}</td></tr>\
                     <tr><th>body 认证机构</th><td>{}</td></tr>\
                     <tr><th>snapshot</th><td>{}</td></tr></table>",
                    esc(text),
                    r.number,
                    r.suffix
                        .map(|[a, b]| format!(" ({}{})", a as char, b as char))
                        .unwrap_or_default(),
                    r.status.as_str(),
                    r.status.as_chinese(),
                    r.product_code,
                    esc(&r.product_name),
                    esc(&r.models.join("; ")),
                    esc(&r.producer),
                    esc(&r.factory),
                    esc(&r.applicant),
                    r.issued,
                    r.expires,
                    if expired {
                        " <span class=\"err\">(past)</span>"
                    } else {
                        ""
                    },
                    r.status_changed.map(|d| d.to_string()).unwrap_or_default(),
                    esc(&r.status_reason),
                    esc(&r.body_name),
                    loaded.snapshot.sequence(),
                );
            }
        },
    }
    b.push_str("</section>");
    b.push_str(&forms(text, &ExplainInput::default()));
    (status, page("lookup", &b, false)).into_response()
}

/// The explain form's fields.
#[derive(Debug, Default)]
struct ExplainInput {
    product_code: String,
    certificate_number: String,
    model: String,
    event_time: String,
}

async fn explain_page(State(c): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let params = match query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad_request("Explain", &e),
    };
    let input = ExplainInput {
        product_code: param(&params, "product_code").to_owned(),
        certificate_number: param(&params, "certificate_number").to_owned(),
        model: param(&params, "model").to_owned(),
        event_time: param(&params, "event_time").to_owned(),
    };
    let mut b = String::from("<section id=\"result\"><h2>Explain</h2>");
    let Some(loaded) = c.loaded() else {
        b.push_str("<p class=\"err\">No snapshot is in force.</p></section>");
        return (StatusCode::SERVICE_UNAVAILABLE, page("explain", &b, false)).into_response();
    };
    let wire = WireListing {
        listing_id: "console".into(),
        merchant_id: "console".into(),
        product_code: input.product_code.clone(),
        certificate_number: input.certificate_number.clone(),
        model: input.model.clone(),
        event_time: input.event_time.clone(),
    };
    let mut status = StatusCode::OK;
    match wire.validate(today()) {
        Err(invalid) => {
            status = StatusCode::BAD_REQUEST;
            let _ = write!(
                b,
                "<p class=\"err\" id=\"error\">This listing is a bad request (field <code>{}</code>): {}</p>",
                invalid.field(),
                esc(&invalid.error.to_string())
            );
        }
        Ok(listing) => {
            let snapshot = &loaded.snapshot;
            let e = explain(snapshot, &listing, &c.policy);
            let v = &e.verdict;
            let d = v.decision.as_str();
            let _ = write!(
                b,
                "<p id=\"verdict\" class=\"{d}\"><b>{d}</b>: <code>{}</code>, rule {} of the decision table: {}.</p>",
                v.reason.as_str(),
                e.rule,
                esc(v.reason.rule_text())
            );
            if d != v.reason.table_decision().as_str() {
                let _ = write!(
                    b,
                    "<p>The table says {}; this gateway's policy (<code>--policy</code>) says {d}.</p>",
                    v.reason.table_decision().as_str()
                );
            }
            b.push_str("<h2>Facts used</h2><table id=\"facts\">");
            let _ = write!(
                b,
                "<tr><th>event day (China time)</th><td>{}</td></tr>",
                e.event_day
            );
            let product = match e.product_code {
                None => "none (not a CCC category)".to_string(),
                Some(code) => {
                    let name = snapshot
                        .catalogue()
                        .in_force(code, e.event_day)
                        .map(|c| format!(" {}", c.name))
                        .unwrap_or_default();
                    format!("{code}{}", esc(&name))
                }
            };
            let _ = write!(b, "<tr><th>product code</th><td>{product}</td></tr>");
            let mode = match (e.product_code, e.catalogue_mode) {
                (None, _) => "—",
                (Some(_), None) => "not in the catalogue in force on the event day",
                (Some(_), Some(cccgate_core::ConformityMode::Certificate)) => {
                    "certificate required (证书)"
                }
                (Some(_), Some(cccgate_core::ConformityMode::SelfDeclaration)) => {
                    "self-declaration (自我声明)"
                }
            };
            let _ = write!(b, "<tr><th>catalogue</th><td>{mode}</td></tr>");
            let number = match &e.number {
                Ok(n) => format!("<code>{n}</code>"),
                Err(err) => format!(
                    "{} ({})",
                    esc(&input.certificate_number),
                    esc(&err.to_string())
                ),
            };
            let _ = write!(
                b,
                "<tr><th>certificate number, normalised</th><td>{number}</td></tr>"
            );
            match &e.certificate {
                Some(cert) => {
                    let _ = write!(
                        b,
                        "<tr><th>certificate status</th><td>{} {}</td></tr>\
                         <tr><th>certificate product code</th><td>{}</td></tr>\
                         <tr><th>certificate expiry</th><td>{}{}</td></tr>\
                         <tr><th>producer</th><td>{}</td></tr>",
                        cert.status.as_str(),
                        cert.status.as_chinese(),
                        cert.product_code,
                        cert.expires,
                        if cert.expires < e.event_day {
                            " (before the event day)"
                        } else {
                            ""
                        },
                        esc(cert.producer)
                    );
                }
                None => b.push_str(
                    "<tr><th>certificate</th><td>not looked up, or not in the register</td></tr>",
                ),
            }
            let model = match e.model_covered {
                Some(true) => "covered by the certificate",
                Some(false) => "not covered by the certificate",
                None if input.model.trim().is_empty() => "none given",
                None => "not reached",
            };
            let _ = write!(
                b,
                "<tr><th>model</th><td>{} — {model}</td></tr><tr><th>snapshot</th><td>{}</td></tr></table>",
                esc(&input.model),
                v.snapshot_sequence
            );
        }
    }
    b.push_str("</section>");
    b.push_str(&forms("", &input));
    (status, page("explain", &b, false)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn queries_are_decoded_and_bounded() {
        let p = query(Some("cert=CCC%3A2021+0109&model=%E5%9E%8B")).unwrap();
        assert_eq!(param(&p, "cert"), "CCC:2021 0109");
        assert_eq!(param(&p, "model"), "型");
        assert_eq!(param(&p, "absent"), "");
        assert!(query(Some("cert=%zz")).is_err());
        assert!(query(Some("cert=%E5")).is_err());
        let long = format!("cert={}", "1".repeat(MAX_QUERY_BYTES));
        assert!(query(Some(&long)).unwrap_err().contains("over the limit"));
    }

    #[test]
    fn verdict_counts_are_read_from_the_prometheus_text() {
        let text = "# TYPE cccgate_checks_total counter\n\
            cccgate_checks_total{decision=\"ALLOW\",reason=\"CERTIFICATE_VALID\"} 12\n\
            cccgate_checks_total{decision=\"BLOCK\",reason=\"CERTIFICATE_REVOKED\"} 3\n\
            cccgate_checks_totally{reason=\"CERTIFICATE_VALID\"} 99\n";
        let c = verdict_counts(text);
        assert_eq!(c[Reason::CertificateValid.index()], 12);
        assert_eq!(c[Reason::CertificateRevoked.index()], 3);
        assert_eq!(c.iter().sum::<u64>(), 15);
    }
}

//! The console's candidate register section, and its promote and discard buttons.
//!
//! # Who may press them
//!
//! The console is on the metrics listener, which has no TLS and no caller tokens of its own,
//! so reaching the port must not be enough to change what is in force:
//!
//! - The buttons exist only when the gateway was started with `--console-tokens FILE` (the
//!   `NAME SHA256HEX` format of `--auth-tokens`, re-read when it changes). Without it the
//!   section only shows the candidate and `POST /candidate` answers 404.
//! - A press is a `POST /candidate` (form-encoded, body at most [`MAX_FORM_BYTES`], read under
//!   that limit) carrying the operator's token, typed into a password field. The token is
//!   hashed and compared with every entry in constant time; the operator's name is logged with
//!   the action and shown in the console's history.
//! - Against cross-site requests: a browser's `Sec-Fetch-Site` must say `same-origin` and its
//!   `Origin` must be this host, and the form carries a nonce the page was rendered with (a
//!   keyed SHA-256 of its time, with a per-process random key, valid for [`NONCE_TTL`]).
//! - Wrong tokens are limited: after [`MAX_FAILURES`] wrong tokens in a minute, presses answer
//!   429 until the minute is over, before any token is looked at.
//! - The form names the candidate sequence the operator saw: if the candidate changed
//!   meanwhile, the action is refused (as `expected_sequence` does for the Admin RPCs).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Console, Event, esc, lock, page, push};
use crate::auth::TokenAuth;

/// Longest form body read; longer is refused before it is parsed.
pub(crate) const MAX_FORM_BYTES: usize = 2048;
/// How long a rendered form's nonce stays valid.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(3600);
/// Wrong operator tokens accepted per minute before presses answer 429.
pub(crate) const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The buttons, when `--console-tokens` turns them on.
#[derive(Debug)]
pub(crate) struct Buttons {
    operators: Arc<TokenAuth>,
    key: [u8; 32],
    started: Instant,
    failures: Mutex<(Instant, u32)>,
}

impl Buttons {
    pub(crate) fn new(operators: Arc<TokenAuth>) -> Self {
        Buttons {
            operators,
            key: random_key(),
            started: Instant::now(),
            failures: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Re-reads the operators' tokens file when it changes, for as long as the task runs.
    pub(crate) async fn watch_tokens(self: Arc<Self>, every: Duration) {
        Arc::clone(&self.operators).watch(every).await;
    }

    /// A nonce for a form rendered now.
    fn nonce(&self) -> String {
        self.nonce_at(self.started.elapsed().as_secs())
    }

    fn nonce_at(&self, secs: u64) -> String {
        format!("{secs:x}.{}", hex::encode(self.mac(secs)))
    }

    fn mac(&self, secs: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(b"cccgate console form");
        h.update(secs.to_be_bytes());
        h.finalize().into()
    }

    /// Whether `nonce` is one this process made, less than [`NONCE_TTL`] ago.
    fn nonce_ok(&self, nonce: &str) -> bool {
        let Some((secs, mac)) = nonce.split_once('.') else {
            return false;
        };
        let (Ok(secs), Ok(mac)) = (u64::from_str_radix(secs, 16), hex::decode(mac)) else {
            return false;
        };
        let now = self.started.elapsed().as_secs();
        secs <= now
            && now - secs <= NONCE_TTL.as_secs()
            && bool::from(mac.as_slice().ct_eq(&self.mac(secs)))
    }

    /// Counts a wrong token; `false` when the minute's allowance was already used.
    fn allowed(&self) -> bool {
        let f = lock(&self.failures);
        f.0.elapsed() >= FAILURE_WINDOW || f.1 < MAX_FAILURES
    }

    fn failed(&self) {
        let mut f = lock(&self.failures);
        if f.0.elapsed() >= FAILURE_WINDOW {
            *f = (Instant::now(), 0);
        }
        f.1 += 1;
    }
}

/// 32 random bytes from the kernel; if it cannot be read, a hash of what differs between
/// processes (the key only has to be unknown to a browser on another site).
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom")
        && std::io::Read::read_exact(&mut f, &mut key).is_ok()
    {
        return key;
    }
    let mut h = Sha256::new();
    h.update(std::process::id().to_be_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()));
    h.update(format!(
        "{:?}",
        std::collections::hash_map::RandomState::new()
    ));
    h.update(format!("{:p}", &key));
    h.finalize().into()
}

/// The candidate section of the index page (empty without `--candidate-dir`).
pub(super) fn section(c: &Console) -> String {
    let Some(shadow) = c.admin.shadow() else {
        return String::new();
    };
    let mut b = String::from("<section id=\"candidate\"><h2>Candidate register</h2>");
    let Some(cand) = shadow.candidate() else {
        let _ = write!(
            b,
            "<p id=\"no-candidate\">No candidate: no valid snapshot in the candidate directory newer \
             than the last one discarded (looked for at start and at each reload).</p></section>"
        );
        return b;
    };
    let s = &cand.snapshot;
    let counts = s.counts();
    let in_force = c.loaded().map(|l| l.snapshot.sequence());
    let _ = write!(
        b,
        "<table><tr><th>sequence</th><td id=\"candidate-sequence\">{}</td></tr>\
         <tr><th>content id</th><td><code>{}</code></td></tr>\
         <tr><th>source</th><td>{}</td></tr><tr><th>file</th><td>{}</td></tr>\
         <tr><th>certificates</th><td>{} ({} valid)</td></tr>\
         <tr><th>sample</th><td>{}</td></tr>\
         <tr><th>shadow checks</th><td class=\"num\" id=\"shadow-checks\">{}</td></tr>\
         <tr><th>disagreements</th><td class=\"num\" id=\"disagreements\">{}</td></tr>\
         <tr><th>samples dropped</th><td class=\"num\">{}</td></tr></table>",
        s.sequence(),
        esc(s.content_id()),
        esc(s.source()),
        esc(&cand.origin),
        counts.total,
        counts.valid(),
        shadow.sample(),
        shadow.checks.load(std::sync::atomic::Ordering::Relaxed),
        shadow
            .disagreements
            .load(std::sync::atomic::Ordering::Relaxed),
        shadow.dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    if in_force.is_some_and(|f| s.sequence() <= f) {
        b.push_str(
            "<p class=\"err\">Its sequence is not above the snapshot in force: it cannot be promoted.</p>",
        );
    }
    match &c.buttons {
        None => b.push_str(
            "<p>Promote or discard it with <code>Admin.PromoteCandidate</code> / \
             <code>Admin.DiscardCandidate</code>; start the gateway with \
             <code>--console-tokens FILE</code> to do it here.</p>",
        ),
        Some(buttons) => {
            let _ = write!(
                b,
                "<form id=\"candidate-form\" action=\"/candidate\" method=\"post\">\
                 <input type=\"hidden\" name=\"nonce\" value=\"{}\">\
                 <input type=\"hidden\" name=\"sequence\" value=\"{}\">\
                 <label>operator token <input type=\"password\" name=\"token\" id=\"operator-token\" \
                 size=\"30\" maxlength=\"256\" autocomplete=\"off\" required></label>\
                 <button type=\"submit\" name=\"action\" value=\"promote\" id=\"promote\">Promote (put in force)</button> \
                 <button type=\"submit\" name=\"action\" value=\"discard\" id=\"discard\">Discard</button></form>",
                buttons.nonce(),
                s.sequence()
            );
        }
    }
    b.push_str("</section>");
    b
}

/// A refused or answered press: the page says what happened.
fn answer(status: StatusCode, ok: bool, message: &str) -> Response {
    let body = format!(
        "<section id=\"action\"><h2>Candidate register</h2><p id=\"action-result\" class=\"{}\">{}</p>\
         <p><a href=\"/\" id=\"back\">Back to the console</a></p></section>",
        if ok { "ALLOW" } else { "err" },
        esc(message)
    );
    (status, page("candidate", &body, false)).into_response()
}

/// Whether a browser says this request comes from another site.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
    {
        return Some(format!("Sec-Fetch-Site is {site:?}"));
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o == host);
        if !same {
            return Some(format!("Origin {origin:?} is not this console ({host:?})"));
        }
    }
    None
}

/// `POST /candidate`: promote or discard, for an operator with a token.
pub(super) async fn press(State(c): State<Console>, headers: HeaderMap, body: Body) -> Response {
    let Some(buttons) = c.buttons.clone() else {
        return answer(
            StatusCode::NOT_FOUND,
            false,
            "the console's buttons are off: start the gateway with --console-tokens FILE",
        );
    };
    if let Some(why) = cross_origin(&headers) {
        tracing::warn!(%why, "console: a cross-origin press refused");
        return answer(
            StatusCode::FORBIDDEN,
            false,
            &format!("refused: a cross-origin request ({why})"),
        );
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            false,
            "refused: the body must be application/x-www-form-urlencoded",
        );
    }
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                false,
                &format!("refused: the form is over the limit of {MAX_FORM_BYTES} bytes"),
            );
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return answer(StatusCode::BAD_REQUEST, false, "the form is not UTF-8");
    };
    let params = match super::query(Some(text)) {
        Ok(p) => p,
        Err(e) => return answer(StatusCode::BAD_REQUEST, false, &e),
    };
    let field = |name| super::param(&params, name);
    if !buttons.nonce_ok(field("nonce")) {
        return answer(
            StatusCode::FORBIDDEN,
            false,
            "refused: the form's nonce is missing, forged or over an hour old; reload the console and try again",
        );
    }
    if !buttons.allowed() {
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            false,
            &format!(
                "refused: more than {MAX_FAILURES} wrong operator tokens in the last minute; try again later"
            ),
        );
    }
    let Some(operator) = buttons.operators.caller(field("token")) else {
        buttons.failed();
        tracing::warn!(
            action = field("action"),
            "console: a press with a wrong operator token refused"
        );
        return answer(
            StatusCode::FORBIDDEN,
            false,
            "refused: wrong operator token (not in --console-tokens)",
        );
    };
    let action = field("action");
    let Ok(expected) = field("sequence").parse::<u64>() else {
        return answer(
            StatusCode::BAD_REQUEST,
            false,
            "field sequence: not the candidate's sequence number",
        );
    };
    let outcome = match action {
        "promote" => c
            .admin
            .promote(expected)
            .await
            .map(|r| (r.snapshot_sequence, r.message)),
        "discard" => c
            .admin
            .discard(expected)
            .await
            .map(|r| (r.discarded_sequence, r.message)),
        other => {
            return answer(
                StatusCode::BAD_REQUEST,
                false,
                &format!("field action: {other:?} is neither promote nor discard"),
            );
        }
    };
    let done = if action == "promote" {
        "promoted"
    } else {
        "discarded"
    };
    match outcome {
        Ok((sequence, message)) => {
            tracing::info!(operator = %operator, action, sequence, %message, "console: candidate {done}");
            push(
                &mut lock(&c.seen).events,
                Event {
                    at_unix_ms: crate::metrics::now_unix_ms(),
                    what: done,
                    detail: format!("candidate {sequence} by operator {operator}"),
                    reason: message.clone(),
                },
            );
            answer(StatusCode::OK, true, &format!("{message} (by {operator})"))
        }
        Err(status) => {
            tracing::warn!(operator = %operator, action, expected, error = status.message(), "console: candidate not {done}");
            answer(
                StatusCode::CONFLICT,
                false,
                &format!("not {done}: {}", status.message()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buttons() -> (tempfile::TempDir, Buttons) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ops");
        let hash = hex::encode(Sha256::digest(b"secret"));
        std::fs::write(&path, format!("alice {hash}\n")).unwrap();
        (dir, Buttons::new(TokenAuth::open(&path).unwrap()))
    }

    #[test]
    fn nonces_are_made_here_and_expire() {
        let (_dir, b) = buttons();
        assert!(b.nonce_ok(&b.nonce()));
        let (_other_dir, other) = buttons();
        assert!(!other.nonce_ok(&b.nonce()), "another process's key");
        assert!(!b.nonce_ok(""));
        assert!(!b.nonce_ok("0.00"));
        assert!(!b.nonce_ok("zz.00"));
        // A nonce from the future or older than the TTL is refused.
        assert!(!b.nonce_ok(&b.nonce_at(10_000)));
        let mut mac = b.nonce();
        mac.pop();
        mac.push(if b.nonce().ends_with('0') { '1' } else { '0' });
        assert!(!b.nonce_ok(&mac), "a changed MAC");
        let started = Instant::now()
            .checked_sub(NONCE_TTL + Duration::from_secs(5))
            .unwrap();
        let old = Buttons { started, ..b };
        assert!(!old.nonce_ok(&old.nonce_at(0)));
        assert!(old.nonce_ok(&old.nonce()));
    }

    #[test]
    fn wrong_tokens_are_limited_per_minute() {
        let (_dir, b) = buttons();
        for _ in 0..MAX_FAILURES {
            assert!(b.allowed());
            b.failed();
        }
        assert!(!b.allowed());
        // A minute later the allowance is back.
        lock(&b.failures).0 = Instant::now()
            .checked_sub(FAILURE_WINDOW + Duration::from_secs(1))
            .unwrap();
        assert!(b.allowed());
        b.failed();
        assert_eq!(lock(&b.failures).1, 1);
    }

    #[test]
    fn cross_origin_presses_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:9464".parse().unwrap());
        assert_eq!(cross_origin(&h), None, "curl sends neither");
        h.insert("origin", "http://127.0.0.1:9464".parse().unwrap());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert_eq!(cross_origin(&h), None);
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(cross_origin(&h).unwrap().contains("evil.example"));
        h.insert("origin", "http://127.0.0.1:9464".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_origin(&h).unwrap().contains("cross-site"));
        h.remove("sec-fetch-site");
        h.insert("origin", "null".parse().unwrap());
        assert!(cross_origin(&h).is_some());
    }
}

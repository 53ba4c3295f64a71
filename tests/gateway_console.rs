//! The operators' console on the admin plane's HTTP listener, end to end: the real gateway on
//! `127.0.0.1:0`, its pages fetched with curl (what they show, escaping, bounded inputs), then
//! driven in a real headless Chromium by `tests/node/console.mjs` (playwright-core): the page
//! loads, a lookup answers, an explain answers, a screenshot is taken.
//!
//! The candidate register's buttons: refusals (buttons off, no nonce, wrong operator token,
//! cross-origin, oversized form, a stale sequence) with curl, then discard and promote pressed
//! in Chromium by `tests/node/candidate.mjs`, each after a wrong token is refused.
//!
//! The browser part needs Debian's `chromium` and `npm ci` in `tests/node` (see
//! `cccgate_e2e::node`): without them it is skipped, unless `CI` is set.

use std::process::Command;
use std::time::{Duration, Instant};

use cccgate_core::{CertificateRecord, Status};
use cccgate_e2e::gateway::{
    TestGateway, cert_number, record, test_config, test_config_with, write_snapshot,
};
use cccgate_e2e::node::{node_dir, run_bounded, run_node};
use cccgate_proto::v1::{self, GetStatusRequest, ReloadRequest};
use cccgate_server::ConfigLayer;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn records(revoked: bool) -> Vec<CertificateRecord> {
    vec![
        record(1, Status::Valid, 901, &["X1-2026", "X1 Carbon"]),
        record(
            2,
            if revoked {
                Status::Revoked
            } else {
                Status::Valid
            },
            901,
            &["Y2"],
        ),
        record(3, Status::Suspended, 901, &[]),
    ]
}

/// GET `url` with curl: the status and the body.
fn get(url: &str) -> (u16, String) {
    let out = run_bounded(
        Command::new("curl").args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url]),
        Duration::from_secs(15),
    );
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

async fn get_async(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap()
}

/// Fetches `url` until its body contains `needle` (the sampler and the change feed follow a
/// swap asynchronously); bounded at 10 s.
async fn eventually(url: &str, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = get_async(url.to_owned()).await;
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} never showed {needle:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_register_and_answers_lookups_and_explains_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 7, &records(false));
    let gw = TestGateway::start(test_config(Some(dir.path())), true).await;
    let mut admin = gw.admin_client().await;
    let r = admin.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert_eq!(r.snapshot_sequence, 7);
    let base = format!("http://{}", gw.metrics_addr.unwrap());

    let (status, index) = get_async(format!("{base}/")).await;
    assert_eq!(status, 200);
    for needle in [
        "Snapshot in force",
        "<td id=\"sequence\">7</td>",
        "Certificates by status",
        "VALID 有效</th><td class=\"num\">2</td>",
        "Reloads and refusals",
        "Change history",
        "Verdicts by reason",
        "Certificate lookup",
        "Explain a listing",
    ] {
        assert!(index.contains(needle), "{needle:?} not in {index}");
    }
    // Offline: nothing is fetched from another origin.
    assert!(!index.contains("http://") && !index.contains("https://"));

    // A new snapshot (certificate 2 revoked), then a refused file: both in the history.
    write_snapshot(dir.path(), 8, &records(true));
    let r = admin.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert_eq!(r.snapshot_sequence, 8);
    std::fs::write(dir.path().join("snap-9.ccc"), b"not a snapshot").unwrap();
    let r = admin.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert_eq!(r.snapshot_sequence, 8, "the bad file changed nothing");
    let page = eventually(&format!("{base}/"), "new snapshot").await;
    let revoked = cert_number(2).to_string();
    assert!(
        page.contains(&format!("<code>{revoked}</code> VALID → REVOKED")),
        "{page}"
    );
    assert!(page.contains("snap-9.ccc"), "{page}");
    assert!(page.contains(">refused<"), "{page}");
    assert!(page.contains("sequence 8 from"), "{page}");

    // Lookups: typed as a merchant would; a malformed number; markup is shown as text.
    let typed = format!("CCC:{}", cert_number(1)).replace("0109", "-0109-");
    let (status, body) = get_async(format!("{base}/lookup?cert={}", urlencode(&typed))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("<code>{}</code>", cert_number(1))),
        "{body}"
    );
    assert!(body.contains("X1-2026; X1 Carbon"), "{body}");
    assert!(body.contains("2035-12-31"), "{body}");
    let (status, body) = get_async(format!(
        "{base}/lookup?cert={}",
        urlencode("<script>alert(1)</script>")
    ))
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"), "{body}");
    let (status, _) = get_async(format!("{base}/lookup?cert={}", "9".repeat(17))).await;
    assert_eq!(status, 400);
    let (status, body) = get_async(format!("{base}/lookup?cert={}", cert_number(99))).await;
    assert_eq!(status, 404);
    assert!(body.contains("CERTIFICATE_NOT_FOUND"), "{body}");
    // Bounded inputs: a query over the limit is refused before it is parsed.
    let (status, body) = get_async(format!("{base}/lookup?cert={}", "1".repeat(5000))).await;
    assert_eq!(status, 400);
    assert!(body.contains("over the limit of 2048"), "{body}");

    // Explain: the rule and the facts; a bad listing names its field.
    let (status, body) = get_async(format!(
        "{base}/explain?product_code=0901&certificate_number={}&model=&event_time=2026-11-27T10%3A00%3A00%2B08%3A00",
        cert_number(2)
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<b>BLOCK</b>: <code>CERTIFICATE_REVOKED</code>, rule 7"),
        "{body}"
    );
    assert!(body.contains("2026-11-27"), "{body}");
    let (status, body) = get_async(format!("{base}/explain?product_code=9x")).await;
    assert_eq!(status, 400);
    assert!(body.contains("<code>product_code</code>"), "{body}");
    // Verdict rates: three valid listings decided over gRPC show up, by reason, within a
    // sample or two (every 2 s).
    let mut client = gw.check_client().await;
    let valid = v1::Listing {
        listing_id: "L1".into(),
        merchant_id: "M1".into(),
        product_code: "0901".into(),
        certificate_number: cert_number(1).to_string(),
        ..Default::default()
    };
    let r = client
        .check_batch(v1::CheckBatchRequest {
            listings: vec![valid; 3],
            min_snapshot_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 3);
    let started = Instant::now();
    loop {
        let (_, rates) = get_async(format!("{base}/rates")).await;
        let row = rates
            .split("<tr>")
            .find(|r| r.contains("<td>CERTIFICATE_VALID</td>"))
            .unwrap_or_default()
            .to_owned();
        if row.contains("<td class=\"num\">3</td></tr>") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rates never counted 3 valid verdicts: {row} in {rates}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // /metrics is still there.
    let (status, body) = get_async(format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("cccgate_snapshot_sequence"));

    // Headless Chromium.
    let Some(node) = node_dir("tests/node") else {
        gw.stop().await.unwrap();
        return;
    };
    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("console.png");
    let blank = shots.path().join("blank.png");
    let out = tokio::task::spawn_blocking({
        let (shot, blank, typed) = (shot.clone(), blank.clone(), typed.clone());
        move || {
            run_node(
                &node,
                "console.mjs",
                &[
                    &base,
                    &typed,
                    "0901",
                    shot.to_str().unwrap(),
                    blank.to_str().unwrap(),
                ],
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "console.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["indexStatus"], 200);
    assert_eq!(seen["sequence"], "8");
    assert_eq!(seen["title"], "console · cccgate");
    assert_eq!(seen["lookupNumber"], cert_number(1).to_string());
    assert_eq!(seen["lookupStatus"], "VALID 有效");
    assert_eq!(seen["lookupExpiry"], "2035-12-31");
    assert_eq!(seen["lookupTyped"], typed);
    let verdict = seen["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("REVIEW: MODEL_NOT_COVERED, rule 11"),
        "{verdict}"
    );
    let facts = seen["facts"].to_string();
    assert!(
        facts.contains("<b>NOT-A-MODEL</b> — not covered"),
        "{facts}"
    );
    assert_eq!(seen["injected"], 0, "markup in the input became elements");
    assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
    // The screenshot is a real PNG with the page on it: several times an empty page's size.
    let png = std::fs::read(&shot).unwrap();
    // To look at it: CCCGATE_CONSOLE_SCREENSHOT=/tmp/console.png cargo test --test gateway_console
    if let Some(keep) = std::env::var_os("CCCGATE_CONSOLE_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    let empty = std::fs::read(&blank).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 3 * empty.len(),
        "screenshot {} bytes, an empty page {}",
        png.len(),
        empty.len()
    );
    gw.stop().await.unwrap();
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POST `form` (form-encoded) to `url` with curl and extra headers: the status and the body.
fn post(url: &str, form: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "--data",
        form,
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = run_bounded(cmd.arg(url), Duration::from_secs(15));
    assert!(out.status.success(), "curl {url}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

async fn post_async(url: String, form: String, headers: Vec<&'static str>) -> (u16, String) {
    tokio::task::spawn_blocking(move || post(&url, &form, &headers))
        .await
        .unwrap()
}

/// The value of the hidden field `name` in a console page.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Runs `candidate.mjs` (or, without a browser, the same presses with curl): a wrong token,
/// then `token`, for `action`; returns what the browser read.
async fn press_in_browser(base: &str, token: &str, action: &str) -> Option<Value> {
    let node = node_dir("tests/node")?;
    let (base, token, action) = (base.to_owned(), token.to_owned(), action.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        run_node(
            &node,
            "candidate.mjs",
            &[&base, &token, &action],
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "candidate.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

async fn press_with_curl(base: &str, token: &str, action: &str) -> (u16, String) {
    let (_, index) = get_async(format!("{base}/")).await;
    let form = format!(
        "nonce={}&sequence={}&token={token}&action={action}",
        hidden(&index, "nonce"),
        hidden(&index, "sequence")
    );
    post_async(format!("{base}/candidate"), form, vec![]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_buttons_need_an_operator_token_and_promote_or_discard_in_a_browser() {
    let (snaps, cands) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_snapshot(snaps.path(), 1, &records(false));
    write_snapshot(cands.path(), 2, &records(true));
    let layer = |tokens: Option<std::path::PathBuf>| ConfigLayer {
        candidate_dir: Some(cands.path().to_path_buf()),
        console_tokens: tokens,
        ..Default::default()
    };

    // Without --console-tokens: the candidate is shown, there are no buttons, a press is 404.
    let gw = TestGateway::start(test_config_with(Some(snaps.path()), layer(None)), true).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .unwrap();
    let base = format!("http://{}", gw.metrics_addr.unwrap());
    let page = eventually(&format!("{base}/"), "id=\"candidate-sequence\">2<").await;
    assert!(page.contains("--console-tokens FILE"), "{page}");
    assert!(!page.contains("id=\"promote\""), "{page}");
    let (status, body) = post_async(
        format!("{base}/candidate"),
        "action=promote&sequence=2&token=x".into(),
        vec![],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    gw.stop().await.unwrap();

    // With it.
    let tokens = snaps.path().join("operators.txt");
    let hash: String = Sha256::digest(b"ops-secret-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&tokens, format!("# operators\nalice {hash}\n")).unwrap();
    let gw = TestGateway::start(
        test_config_with(Some(snaps.path()), layer(Some(tokens.clone()))),
        true,
    )
    .await;
    let mut admin = gw.admin_client().await;
    admin.reload(ReloadRequest {}).await.unwrap();
    let base = format!("http://{}", gw.metrics_addr.unwrap());
    let url = format!("{base}/candidate");
    let page = eventually(&format!("{base}/"), "id=\"promote\"").await;
    assert!(page.contains("id=\"candidate-sequence\">2<"), "{page}");
    assert!(page.contains("type=\"password\""), "{page}");
    let nonce = hidden(&page, "nonce");
    let form = |nonce: &str, token: &str, seq: u64, action: &str| {
        format!("nonce={nonce}&sequence={seq}&token={token}&action={action}")
    };

    // GET is not a press.
    let (status, _) = get_async(url.clone()).await;
    assert_eq!(status, 405);
    // Refusals; none changes anything.
    let refusals: Vec<(String, Vec<&'static str>, u16, &str)> = vec![
        (form("", "ops-secret-1", 2, "discard"), vec![], 403, "nonce"),
        (
            form("1.deadbeef", "ops-secret-1", 2, "discard"),
            vec![],
            403,
            "nonce",
        ),
        (
            form(&nonce, "ops-secret-2", 2, "discard"),
            vec![],
            403,
            "wrong operator token",
        ),
        (
            form(&nonce, "", 2, "promote"),
            vec![],
            403,
            "wrong operator token",
        ),
        (
            form(&nonce, "ops-secret-1", 2, "discard"),
            vec!["Origin: http://evil.example"],
            403,
            "cross-origin",
        ),
        (
            form(&nonce, "ops-secret-1", 2, "discard"),
            vec!["Sec-Fetch-Site: cross-site"],
            403,
            "cross-origin",
        ),
        (
            form(&nonce, "ops-secret-1", 2, "discard"),
            vec!["Content-Type: text/plain"],
            415,
            "x-www-form-urlencoded",
        ),
        (
            format!(
                "{}&pad={}",
                form(&nonce, "ops-secret-1", 2, "discard"),
                "a".repeat(4000)
            ),
            vec![],
            413,
            "over the limit of 2048",
        ),
        (
            form(&nonce, "ops-secret-1", 5, "promote"),
            vec![],
            409,
            "the candidate is sequence 2, not 5",
        ),
        (
            form(&nonce, "ops-secret-1", 2, "explode"),
            vec![],
            400,
            "neither promote nor discard",
        ),
    ];
    for (body, headers, want, needle) in refusals {
        let (status, page) = post_async(url.clone(), body.clone(), headers).await;
        assert_eq!(status, want, "{body}: {page}");
        assert!(page.contains(needle), "{needle:?} not in {page}");
    }
    let s = admin
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.snapshot.unwrap().sequence, 1);
    assert_eq!(s.candidate.unwrap().snapshot.unwrap().sequence, 2);

    // Discard, then (a newer candidate after a reload) promote: in the browser, each after a
    // wrong token is refused; with curl when there is no browser here.
    match press_in_browser(&base, "ops-secret-1", "discard").await {
        Some(seen) => {
            assert_eq!(seen["candidateBefore"], "2", "{seen}");
            assert_eq!(seen["inForceBefore"], "1", "{seen}");
            assert_eq!(seen["buttons"], serde_json::json!(["promote", "discard"]));
            assert_eq!(seen["tokenType"], "password");
            assert_eq!(seen["wrong"]["status"], 403, "{seen}");
            let wrong = seen["wrong"]["result"].as_str().unwrap();
            assert!(wrong.contains("wrong operator token"), "{seen}");
            assert_eq!(seen["right"]["status"], 200, "{seen}");
            let right = seen["right"]["result"].as_str().unwrap();
            assert!(
                right.starts_with("candidate 2 discarded") && right.ends_with("(by alice)"),
                "{seen}"
            );
            assert_eq!(seen["inForceAfter"], "1", "{seen}");
            assert_eq!(seen["candidateAfter"], Value::Null, "{seen}");
            let history = seen["history"].as_str().unwrap();
            assert!(history.contains("candidate 2 by operator alice"), "{seen}");
            assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
        }
        None => {
            let (status, body) = press_with_curl(&base, "ops-secret-1", "discard").await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("candidate 2 discarded"), "{body}");
        }
    }
    let s = admin
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(s.candidate.is_none(), "discarded: {s:?}");
    assert_eq!(s.snapshot.unwrap().sequence, 1);

    write_snapshot(cands.path(), 3, &records(true));
    admin.reload(ReloadRequest {}).await.unwrap();
    eventually(&format!("{base}/"), "id=\"candidate-sequence\">3<").await;
    match press_in_browser(&base, "ops-secret-1", "promote").await {
        Some(seen) => {
            assert_eq!(seen["candidateBefore"], "3", "{seen}");
            assert_eq!(seen["wrong"]["status"], 403, "{seen}");
            assert_eq!(seen["right"]["status"], 200, "{seen}");
            let right = seen["right"]["result"].as_str().unwrap();
            assert!(right.starts_with("candidate 3 is in force"), "{seen}");
            assert_eq!(seen["inForceAfter"], "3", "{seen}");
            let history = seen["history"].as_str().unwrap();
            assert!(history.contains("candidate 3 by operator alice"), "{seen}");
            assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
        }
        None => {
            let (status, body) = press_with_curl(&base, "ops-secret-1", "promote").await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("candidate 3 is in force"), "{body}");
        }
    }
    let s = admin
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.snapshot.unwrap().sequence, 3, "promoted");
    gw.stop().await.unwrap();
}

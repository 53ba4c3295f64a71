//! A real client from another gRPC stack against the real gateway: Python grpcio
//! (`tests/python/client_test.py`) calls health, reflection, `Check`, `CheckBatch` and
//! `CheckStream` on a server started in-process on `127.0.0.1:0`.
//!
//! The one design decision to know: the decision, reason and certificate status the Python
//! client must see are written by hand from the decision table (`../shared/spec/verdicts.md`),
//! one case or more per rule, all twelve, as proto enum names. They are never derived through
//! the Rust wire mapping, so a swapped reason or status number on the wire fails the client.
//! The engine (`cccgate_core::check` against that very snapshot) must agree with the hand
//! table too, and supplies only the certificate facts the client compares besides.
//!
//! The Python modules come from `tests/python/requirements.txt`; when they are missing the
//! test fails with the command that installs them (CI installs them; it never skips).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cccgate_core::{
    Catalogue, CatalogueEntry, CertNumber, CertificateRecord, ConformityMode, Day, ListingEvent,
    Policy, ProductCode, Reason, Status, check,
};
use cccgate_e2e::gateway::{TestGateway, test_config};
use cccgate_proto::{certificate_to_wire, v1};
use cccgate_snapshot::{BuildInfo, Snapshot, SnapshotBuilder, file_name, write_atomic};
use serde_json::{Value, json};

/// The sequence of the snapshot the gateway serves.
const SEQUENCE: u64 = 4242;
/// Every fixture listing happens at this instant (China time), so verdicts do not depend on
/// the day the test runs; one listing leaves `event_time` empty on purpose (see `cases`).
const EVENT_TIME: &str = "2026-11-27T10:00:00+08:00";
const INSTALL: &str =
    "python3 -m pip install --target target/python -r tests/python/requirements.txt";

fn day(y: i32, m: u32, d: u32) -> Day {
    Day::from_ymd(y, m, d).expect("a real date")
}

fn code(c: u16) -> ProductCode {
    ProductCode::new(c).expect("4 digits")
}

fn catalogue() -> Catalogue {
    let entry = |c: u16, mode, from, until| CatalogueEntry {
        code: code(c),
        name: format!("产品{c:04}"),
        category_code: code(c).category(),
        category_name: "类别".into(),
        mode,
        from,
        until,
    };
    Catalogue::new(vec![
        entry(901, ConformityMode::Certificate, day(2002, 5, 1), None),
        entry(1606, ConformityMode::Certificate, day(2002, 5, 1), None),
        entry(
            1101,
            ConformityMode::SelfDeclaration,
            day(2019, 10, 1),
            None,
        ),
        // Left the catalogue before the event date: NOT_IN_CATALOGUE although the code exists.
        entry(
            807,
            ConformityMode::Certificate,
            day(2002, 5, 1),
            Some(day(2024, 1, 1)),
        ),
    ])
    .expect("a consistent catalogue")
}

/// Certificate `2021010901000<serial>` (or under `product`), with the given status and expiry.
fn record(product: u16, serial: u32, status: Status, expires: Day) -> CertificateRecord {
    CertificateRecord {
        number: CertNumber::from_parts(2021, 1, code(product), serial).expect("in range"),
        suffix: None,
        status,
        product_code: code(product),
        product_name: "微型计算机".into(),
        models: vec![format!("M-{serial}"), format!("M-{serial} Pro")],
        applicant: "某某科技有限公司".into(),
        producer: format!("深圳市生产者{serial}电子有限公司"),
        factory: "东莞工厂".into(),
        issued: day(2021, 3, 1),
        expires,
        status_changed: (status != Status::Valid).then(|| day(2025, 6, 1)),
        status_reason: String::new(),
        body_name: "中国质量认证中心".into(),
    }
}

/// Writes the fixture snapshot into `dir` (where the gateway will find it) and opens that very
/// file, so the expectations are computed against exactly what the gateway serves.
fn write_snapshot(dir: &Path) -> Snapshot {
    let later = day(2029, 12, 31);
    let records = vec![
        record(901, 1, Status::Valid, later),
        record(901, 2, Status::Suspended, later),
        record(901, 3, Status::Revoked, later),
        record(901, 4, Status::Cancelled, later),
        record(901, 5, Status::Expired, later),
        // Valid in the register, but its expiry date is before the event date.
        record(901, 6, Status::Valid, day(2026, 11, 26)),
        // Valid, for another product code than the listings that cite it.
        record(1606, 7, Status::Valid, later),
    ];
    let info = BuildInfo {
        sequence: SEQUENCE,
        source: "gateway_python test".into(),
        generated_at: "2026-11-27T02:00:00+08:00".into(),
        built_at_unix_ms: 1_795_000_000_000,
    };
    let bytes = SnapshotBuilder::from_records(info, catalogue(), records)
        .build()
        .expect("the fixture snapshot builds");
    let path = dir.join(file_name(SEQUENCE));
    write_atomic(&bytes, &path).expect("the fixture snapshot is written");
    Snapshot::open(&path).expect("the fixture snapshot opens")
}

fn event(id: &str, product_code: &str, certificate: &str, model: &str) -> ListingEvent {
    ListingEvent {
        listing_id: id.into(),
        merchant_id: "merchant-1".into(),
        product_code: product_code.into(),
        certificate_number: certificate.into(),
        model: model.into(),
        event_time: EVENT_TIME.into(),
    }
}

/// A fixture listing and the verdict the decision table gives it, written by hand: decision,
/// reason and (when a certificate is found) its status, as the proto's enum names.
struct Case {
    event: ListingEvent,
    decision: &'static str,
    reason: &'static str,
    status: Option<&'static str>,
}

fn case(
    event: ListingEvent,
    (decision, reason, status): (&'static str, &'static str, Option<&'static str>),
) -> Case {
    Case {
        event,
        decision,
        reason,
        status,
    }
}

const ALLOW: &str = "DECISION_ALLOW";
const BLOCK: &str = "DECISION_BLOCK";
const REVIEW: &str = "DECISION_REVIEW";
const VALID: Option<&str> = Some("CERTIFICATE_STATUS_VALID");

/// Listings that together hit every rule of the decision table, each with its verdict read off
/// the table by hand (rule numbers as in verdicts.md).
fn cases() -> Vec<Case> {
    let mut no_time = event("no-event-time", "", "", "");
    // Empty event_time means "when the gateway receives it"; with no product code the verdict
    // cannot depend on that day, so the expectation holds whenever the test runs.
    no_time.event_time.clear();
    let valid = (ALLOW, "REASON_CERTIFICATE_VALID", VALID);
    let not_in_catalogue = (ALLOW, "REASON_NOT_IN_CATALOGUE", None);
    let missing = (BLOCK, "REASON_CERTIFICATE_MISSING", None);
    vec![
        // 12: valid, product code and model match.
        case(event("valid", "0901", "2021010901000001", "M-1"), valid),
        case(
            event(
                "valid-typed",
                "0901",
                "CCC: 2021-0109-0100-0001(B0)",
                "m-1 pro",
            ),
            valid,
        ),
        case(
            event(
                "valid-fullwidth",
                "0901",
                "２０２１０１０９０１０００００１",
                "",
            ),
            valid,
        ),
        // 11: the model is not among the certificate's.
        case(
            event("model-not-covered", "0901", "2021010901000001", "M-999"),
            (REVIEW, "REASON_MODEL_NOT_COVERED", VALID),
        ),
        // 1: no product code, or a code no longer in the catalogue on the event date.
        case(no_time, not_in_catalogue),
        case(
            event("not-ccc-category", "", "2021010901000001", "M-1"),
            not_in_catalogue,
        ),
        case(
            event("left-catalogue", "0807", "2021010901000001", "M-1"),
            not_in_catalogue,
        ),
        // 2: 1101 is shown by self-declaration in this catalogue.
        case(
            event("self-declaration", "1101", "", ""),
            (ALLOW, "REASON_SELF_DECLARATION_PRODUCT", None),
        ),
        // 3: nothing left after normalisation.
        case(event("missing", "0901", "", "M-1"), missing),
        case(
            event("missing-after-prefix", "0901", " CCC: ", "M-1"),
            missing,
        ),
        // 4: not 16 digits.
        case(
            event("malformed", "0901", "2021-0109-01", "M-1"),
            (BLOCK, "REASON_CERTIFICATE_MALFORMED", None),
        ),
        // 5: no such certificate.
        case(
            event("not-found", "0901", "2021010901999999", "M-1"),
            (BLOCK, "REASON_CERTIFICATE_NOT_FOUND", None),
        ),
        // 6-8: 暂停, 撤销, 注销.
        case(
            event("suspended", "0901", "2021010901000002", "M-2"),
            (
                BLOCK,
                "REASON_CERTIFICATE_SUSPENDED",
                Some("CERTIFICATE_STATUS_SUSPENDED"),
            ),
        ),
        case(
            event("revoked", "0901", "2021010901000003", "M-3"),
            (
                BLOCK,
                "REASON_CERTIFICATE_REVOKED",
                Some("CERTIFICATE_STATUS_REVOKED"),
            ),
        ),
        case(
            event("cancelled", "0901", "2021010901000004", "M-4"),
            (
                BLOCK,
                "REASON_CERTIFICATE_CANCELLED",
                Some("CERTIFICATE_STATUS_CANCELLED"),
            ),
        ),
        // 9: 过期失效, or valid in the register but expired before the event date.
        case(
            event("expired-status", "0901", "2021010901000005", "M-5"),
            (
                BLOCK,
                "REASON_CERTIFICATE_EXPIRED",
                Some("CERTIFICATE_STATUS_EXPIRED"),
            ),
        ),
        case(
            event("expired-date", "0901", "2021010901000006", "M-6"),
            (BLOCK, "REASON_CERTIFICATE_EXPIRED", VALID),
        ),
        // 10: a 1606 certificate cited for a 0901 listing.
        case(
            event("product-mismatch", "0901", "2021011606000007", "M-7"),
            (BLOCK, "REASON_PRODUCT_MISMATCH", VALID),
        ),
        // 12 again: full-width model, after NFKC, upper case and no spaces, is "M-7PRO".
        case(
            event("商品-长名", "1606", "2021011606000007", "ｍ－７ ｐｒｏ"),
            valid,
        ),
    ]
}

/// Bad requests, each at fault in one field.
fn bad_listings() -> Vec<ListingEvent> {
    let mut no_id = event("", "0901", "2021010901000001", "M-1");
    no_id.listing_id.clear();
    let mut no_merchant = event("bad-merchant", "0901", "2021010901000001", "M-1");
    no_merchant.merchant_id.clear();
    let mut bad_time = event("bad-time", "0901", "2021010901000001", "M-1");
    bad_time.event_time = "yesterday".into();
    vec![
        event("bad-product-code", "09O1", "2021010901000001", "M-1"),
        no_merchant,
        no_id,
        bad_time,
        event("bad-model", "0901", "2021010901000001", &"M".repeat(300)),
    ]
}

/// The facts file: every case with its hand-written verdict (which the engine must agree with,
/// against `snapshot`) and the certificate facts, and every bad listing with the field the
/// gateway must name. Enum values are the proto's names.
fn facts(snapshot: &Snapshot) -> Value {
    let policy = Policy::default();
    let today = Day::from_unix_seconds_cn(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    let mut reasons = BTreeSet::new();
    let cases: Vec<Value> = cases()
        .iter()
        .map(|c| {
            let e = &c.event;
            let listing = e
                .listing(today)
                .unwrap_or_else(|err| panic!("fixture listing {:?} is valid: {err}", e.listing_id));
            let verdict = check(snapshot, &listing, &policy);
            reasons.insert(verdict.reason);
            // The engine agrees with the hand-written table (core names, not the wire mapping).
            let engine = (
                format!("DECISION_{}", verdict.decision.as_str()),
                format!("REASON_{}", verdict.reason.as_str()),
                verdict
                    .certificate
                    .as_ref()
                    .map(|cert| format!("CERTIFICATE_STATUS_{}", cert.status.as_str())),
            );
            assert_eq!(
                (engine.0.as_str(), engine.1.as_str(), engine.2.as_deref()),
                (c.decision, c.reason, c.status),
                "{}: the engine disagrees with the hand-written verdict",
                e.listing_id
            );
            let certificate = verdict.certificate.as_ref().map(|cert| {
                let w = certificate_to_wire(cert);
                json!({
                    "number": w.number,
                    "status": c.status,
                    "product_code": w.product_code,
                    "producer": w.producer,
                    "expiry_date": w.expiry_date,
                })
            });
            json!({
                "listing": e,
                "expect": {
                    "decision": c.decision,
                    "reason": c.reason,
                    "certificate": certificate,
                },
            })
        })
        .collect();
    // The fixture is only worth something if it walks the whole table.
    let missed: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| !reasons.contains(r))
        .map(|r| r.as_str())
        .collect();
    assert!(missed.is_empty(), "no fixture listing reaches {missed:?}");

    let bad: Vec<Value> = bad_listings()
        .iter()
        .map(|e| {
            let wire = v1::Listing::from(e);
            let err = wire
                .validate(today)
                .expect_err("a bad fixture listing must fail validation");
            json!({ "listing": e, "field": err.field() })
        })
        .collect();
    json!({
        "snapshot": { "sequence": snapshot.sequence(), "content_id": snapshot.content_id() },
        "cases": cases,
        "bad": bad,
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `python3`, finding the modules README's test command installs under `target/python` (a
/// stock Debian or Ubuntu python3 refuses installs into its own environment) before any
/// installed elsewhere.
fn python3() -> Command {
    let mut cmd = Command::new("python3");
    let local = repo_root().join("target/python");
    let path = match std::env::var_os("PYTHONPATH") {
        Some(old) if !old.is_empty() => {
            std::env::join_paths(std::iter::once(local).chain(std::env::split_paths(&old)))
                .expect("PYTHONPATH entries without separators")
        }
        _ => local.into_os_string(),
    };
    cmd.env("PYTHONPATH", path);
    cmd
}

/// Fails (never skips) when python3 or the grpc modules are missing, saying how to install them.
fn require_python() {
    let probe = python3()
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2, \
             grpc_reflection.v1alpha.reflection_pb2",
        ])
        .output();
    match probe {
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then run: {INSTALL}"),
        Ok(out) if !out.status.success() => panic!(
            "python3 lacks the grpc modules the client needs; run: {INSTALL}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

/// Runs the Python client against `target` and returns its exit status and output.
fn run_client(target: &str, admin: &str, facts_path: &Path) -> (std::process::ExitStatus, String) {
    let script = repo_root().join("tests/python/client_test.py");
    let out = python3()
        .arg(&script)
        .arg("--target")
        .arg(target)
        .arg("--admin-target")
        .arg(admin)
        .arg("--facts")
        .arg(facts_path)
        .arg("--proto-dir")
        .arg(repo_root().join("proto"))
        .arg("--timeout")
        .arg("10")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let text = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A gateway serving the fixture snapshot, loaded, with the facts file for the client.
struct Fixture {
    gateway: TestGateway,
    facts: Value,
    dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    require_python();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let snapshots = dir.path().join("snapshots");
    std::fs::create_dir_all(&snapshots).expect("snapshot directory");
    let snapshot = write_snapshot(&snapshots);
    let facts = facts(&snapshot);
    let gateway = TestGateway::start(test_config(Some(&snapshots)), false).await;
    // Reload runs the same serialised pass as start-up and publishes health before it returns:
    // once it answers, the snapshot is in force and health says SERVING.
    let reload = gateway
        .admin_client()
        .await
        .reload(v1::ReloadRequest {})
        .await
        .expect("Admin.Reload")
        .into_inner();
    assert_eq!(reload.snapshot_sequence, SEQUENCE, "{}", reload.message);
    Fixture {
        gateway,
        facts,
        dir,
    }
}

impl Fixture {
    /// Writes `facts` and runs the Python client on the blocking pool (the server keeps
    /// serving on the runtime meanwhile).
    async fn run_client(&self, name: &str, facts: &Value) -> (std::process::ExitStatus, String) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(facts).expect("JSON"))
            .expect("write the facts file");
        let target = self.gateway.addr.to_string();
        let admin = self.gateway.admin_addr.to_string();
        tokio::task::spawn_blocking(move || run_client(&target, &admin, &path))
            .await
            .expect("the client runner does not panic")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_sees_health_reflection_and_every_verdict() {
    let fx = start().await;
    let (status, output) = fx.run_client("facts.json", &fx.facts).await;
    assert!(
        status.success(),
        "tests/python/client_test.py failed ({status}):\n{output}"
    );
    // Shown with `cargo test --test gateway_python -- --nocapture`.
    println!("{output}");
    // Each of the client's ten checks printed its line; none was skipped.
    let passed = output.lines().filter(|l| l.starts_with("ok   ")).count();
    assert_eq!(passed, 10, "{output}");
    fx.gateway.stop().await.expect("the gateway stops cleanly");
}

/// The client is only a test if it can fail: one wrong expectation must make it exit 1 and
/// name the listing, the call and both verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_fails_on_a_verdict_the_gateway_does_not_give() {
    let fx = start().await;
    let mut facts = fx.facts.clone();
    let case = &mut facts["cases"][0];
    assert_eq!(case["listing"]["listing_id"], "valid");
    assert_eq!(case["expect"]["reason"], "REASON_CERTIFICATE_VALID");
    case["expect"]["decision"] = json!("DECISION_REVIEW");
    case["expect"]["reason"] = json!("REASON_MODEL_NOT_COVERED");
    let (status, output) = fx.run_client("wrong-facts.json", &facts).await;
    assert_eq!(status.code(), Some(1), "{output}");
    for needed in [
        &format!(
            "FAIL Check: {} listings get their expected verdicts",
            cases().len()
        ),
        "Check listing 'valid': got DECISION_ALLOW/REASON_CERTIFICATE_VALID, expected \
         DECISION_REVIEW/REASON_MODEL_NOT_COVERED",
        "FAIL CheckBatch",
        "FAIL CheckStream",
    ] {
        assert!(output.contains(needed), "no {needed:?} in:\n{output}");
    }
    fx.gateway.stop().await.expect("the gateway stops cleanly");
}

//! TLS and mTLS on the public and admin listeners, with certificates made at test time
//! (rcgen), and their rotation on disk without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{TestGateway, record, test_config_with, write_snapshot};
use cccgate_proto::v1::admin_client::AdminClient;
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{CheckRequest, GetStatusRequest, Listing, ReloadRequest};
use cccgate_server::ConfigLayer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A CA that signs certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate and key signed by `ca`, for `dns` names (none: only a CN).
fn leaf(ca: &Ca, cn: &str, dns: &[&str]) -> (String, String) {
    let mut params =
        CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if dns.contains(&"localhost") {
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    // Write and rename, as a certificate manager does, so a reader never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    ListingCheckClient::new(channel)
        .check(CheckRequest {
            listing: Some(Listing {
                listing_id: "L1".into(),
                merchant_id: "M1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_names_the_caller_plaintext_fails_and_rotated_files_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    write_snapshot(&snaps, 10, &[record(1, CertStatus::Valid, 901, &["X1"])]);
    let server_ca = ca("server CA 1");
    let client_ca = ca("marketplaces");
    let (cert, key) = leaf(&server_ca, "gateway", &["localhost"]);
    let cert_path = write(dir.path(), "tls.crt", &cert);
    let key_path = write(dir.path(), "tls.key", &key);
    let client_ca_path = write(dir.path(), "clients.crt", &client_ca.pem);
    let log = dir.path().join("decisions.jsonl");
    let config = test_config_with(
        Some(&snaps),
        ConfigLayer {
            tls_cert: Some(cert_path.clone()),
            tls_key: Some(key_path.clone()),
            tls_client_ca: Some(client_ca_path),
            admin_tls_cert: Some(cert_path.clone()),
            admin_tls_key: Some(key_path.clone()),
            decision_log: Some(log.clone()),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    // The admin plane is TLS (no client certificate needed there).
    let admin = tls_channel(gw.admin_addr, &server_ca.pem, None)
        .await
        .expect("admin over TLS");
    AdminClient::new(admin.clone())
        .reload(ReloadRequest {})
        .await
        .expect("Reload over TLS");

    // A caller with a certificate from the marketplaces' CA: named by its first DNS name.
    let shop_a = leaf(&client_ca, "Shop A Ltd", &["shop-a.example", "b.example"]);
    let ch = tls_channel(gw.addr, &server_ca.pem, Some(&shop_a))
        .await
        .expect("mTLS connects");
    check(ch).await.expect("Check over mTLS");
    // Named by its CN when it has no DNS name.
    let shop_c = leaf(&client_ca, "shop-c", &[]);
    check(
        tls_channel(gw.addr, &server_ca.pem, Some(&shop_c))
            .await
            .unwrap(),
    )
    .await
    .expect("Check over mTLS");
    // No client certificate, or one from another CA: refused.
    let no_cert = async {
        check(tls_channel(gw.addr, &server_ca.pem, None).await?)
            .await
            .map_err(|s| s.to_string())?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        no_cert.await.is_err(),
        "a caller without a certificate got in"
    );
    let stranger = leaf(&ca("elsewhere"), "stranger", &["stranger.example"]);
    let other_ca = async {
        check(tls_channel(gw.addr, &server_ca.pem, Some(&stranger)).await?)
            .await
            .map_err(|s| s.to_string())?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        other_ca.await.is_err(),
        "a certificate from another CA got in"
    );
    // HTTP/JSON on the same port, same TLS: HTTP/1.1 by ALPN with the caller's certificate
    // answers; without a certificate, or in plaintext, nothing is answered.
    let shop_a_cert = write(dir.path(), "shop-a.crt", &shop_a.0);
    let shop_a_key = write(dir.path(), "shop-a.key", &shop_a.1);
    let ca_path = write(dir.path(), "server-ca.crt", &server_ca.pem);
    let port = gw.addr.port();
    let curl = move |scheme: &str, identity: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-sS",
            "--http1.1",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(&ca_path);
        if identity {
            cmd.arg("--cert")
                .arg(&shop_a_cert)
                .arg("--key")
                .arg(&shop_a_key);
        }
        cmd.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(r#"{"listing": {"listingId": "L1", "merchantId": "M1"}}"#)
            .arg(format!("{scheme}://localhost:{port}/v1/check"));
        cmd.output().expect("curl runs")
    };
    let out = tokio::task::spawn_blocking(move || {
        [
            curl("https", true),
            curl("https", false),
            curl("http", true),
        ]
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out[0].stdout);
    assert!(
        text.ends_with("\n200") && text.contains("REASON_NOT_IN_CATALOGUE"),
        "{text} {}",
        String::from_utf8_lossy(&out[0].stderr)
    );
    for refused in &out[1..] {
        let text = String::from_utf8_lossy(&refused.stdout);
        assert!(!text.contains("verdict"), "answered: {text}");
        assert!(!text.ends_with("\n200"), "answered: {text}");
    }

    // Plaintext: fails.
    let plain = Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(check(plain).await.is_err(), "a plaintext call succeeded");
    }

    // Rotation: a certificate from a new server CA is written over the old files. New
    // connections get it at once: a client trusting only the new CA gets in.
    let server_ca_2 = ca("server CA 2");
    let (cert2, key2) = leaf(&server_ca_2, "gateway", &["localhost"]);
    write(dir.path(), "tls.key", &key2);
    write(dir.path(), "tls.crt", &cert2);
    check(
        tls_channel(gw.addr, &server_ca_2.pem, Some(&shop_a))
            .await
            .expect("the rotated certificate is served"),
    )
    .await
    .expect("Check after rotation");
    AdminClient::new(
        tls_channel(gw.admin_addr, &server_ca_2.pem, None)
            .await
            .expect("the admin plane's rotated certificate is served"),
    )
    .get_status(GetStatusRequest {})
    .await
    .expect("GetStatus after rotation");

    gw.stop().await.expect("stops");
    let text = std::fs::read_to_string(&log).unwrap();
    let clients: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["client"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // gRPC as shop-a and shop-c, HTTP/JSON as shop-a (its certificate names it there too),
    // then gRPC as shop-a after the rotation.
    assert_eq!(
        clients,
        [
            "shop-a.example",
            "shop-c",
            "shop-a.example",
            "shop-a.example"
        ],
        "{text}"
    );
}

/// `cccgate replay` and `cccgate watch` (the client library behind them) reach a gateway that
/// runs as in production: TLS with the operator's CA and a caller token. Without the token the
/// replay is refused (UNAUTHENTICATED), and the decision log names the caller that replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_watch_reach_a_gateway_with_tls_and_tokens() {
    use cccgate_client::connect::Credentials;
    use cccgate_client::replay::{ReplayConfig, replay};
    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    write_snapshot(&snaps, 10, &[record(1, CertStatus::Valid, 901, &["X1"])]);
    let server_ca = ca("server CA");
    let (cert, key) = leaf(&server_ca, "gateway", &["localhost"]);
    let ca_path = write(dir.path(), "ca.crt", &server_ca.pem);
    let hex: String = Sha256::digest(b"s3cret-nightly")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = write(dir.path(), "tokens", &format!("nightly-audit {hex}\n"));
    let log = dir.path().join("decisions.jsonl");
    let config = test_config_with(
        Some(&snaps),
        ConfigLayer {
            tls_cert: Some(write(dir.path(), "tls.crt", &cert)),
            tls_key: Some(write(dir.path(), "tls.key", &key)),
            auth_tokens: Some(tokens),
            decision_log: Some(log.clone()),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    let valid = cccgate_e2e::gateway::cert_number(1).to_string();
    let input = dir.path().join("night.jsonl");
    std::fs::write(
        &input,
        format!(
            "{{\"listing_id\":\"N1\",\"merchant_id\":\"M1\",\"product_code\":\"0901\",\"certificate_number\":\"{valid}\",\"model\":\"X1\",\"event_time\":\"2026-11-29T10:00:00+08:00\"}}\n\
             {{\"listing_id\":\"N2\",\"merchant_id\":\"M2\",\"product_code\":\"0901\",\"certificate_number\":\"2021010901999999\",\"model\":\"X1\",\"event_time\":\"2026-11-29T10:00:00+08:00\"}}\n"
        ),
    )
    .unwrap();
    let target = format!("https://{}", gw.addr);
    let mut cfg = ReplayConfig::new(&target, &input, &dir.path().join("out.jsonl"));
    cfg.progress = cccgate_client::progress::Mode::Off;
    cfg.retries = 0;
    cfg.retry_for = Duration::from_secs(2);

    // The CA and the token: every listing decided.
    cfg.credentials = Credentials::from_files(Some(&ca_path), None, None, Some("s3cret-nightly"))
        .expect("credentials");
    let done = replay(&cfg).await.expect("replay over TLS with a token");
    assert!(done.stopped.is_none(), "{:?}", done.stopped);
    assert_eq!((done.summary.records, done.summary.decided), (2, 2));
    assert_eq!(
        done.summary.decisions.get("ALLOW").map(|s| s.count),
        Some(1)
    );
    assert_eq!(
        done.summary.decisions.get("BLOCK").map(|s| s.count),
        Some(1)
    );
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(
        out.contains("\"N1\"") && out.contains("CERTIFICATE_VALID"),
        "{out}"
    );

    // The CA but no token: refused, nothing decided.
    cfg.credentials = Credentials::from_files(Some(&ca_path), None, None, None).unwrap();
    let text = match replay(&cfg).await {
        Err(e) => e.to_string(),
        Ok(o) => {
            assert_eq!(o.summary.decided, 0, "decided without a token");
            o.stopped
                .expect("a replay without a token must stop")
                .to_string()
        }
    };
    let lower = text.to_lowercase();
    assert!(
        lower.contains("unauthenticated") || lower.contains("authorization"),
        "{text}"
    );

    // The change feed over the same credentials: the first line is the bookmark of snapshot 10.
    let creds =
        Credentials::from_files(Some(&ca_path), None, None, Some("s3cret-nightly")).unwrap();
    let mut lines = Vec::new();
    let n = cccgate_client::watch::follow_changes(&target, &creds, 0, &mut lines, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await
    .expect("watch over TLS with a token");
    let text = String::from_utf8(lines).unwrap();
    assert!(
        n >= 1 && text.contains("BOOKMARK") && text.contains("\"sequence\":10"),
        "{text}"
    );

    // The decision log names the caller of the replay.
    gw.stop().await.expect("the gateway stops cleanly");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"nightly-audit\""), "{logged}");
}

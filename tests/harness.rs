//! Self-tests of the end-to-end harness in `tests/support/`.
//!
//! The ignored tests need the tools from `bash e2e/setup.sh`; run them with
//! `cargo test --test harness -- --include-ignored` (`make test` does).

mod support;

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Value, json};
use support::bao::Bao;
use support::proc::{self, Fixture, Process, Spec};
use support::{jwt, metrics};

const NS: &str = "default";
const SA: &str = "web";
const POD: &str = "web-7d4665cf4-gf7hq";
const POD_UID: &str = "1f43f7c5-6ebe-4877-8fd4-bbe07df83c6c";
const AUD: &str = "vault";

fn validation(aud: &str) -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[aud]);
    v.set_issuer(&[jwt::ISSUER]);
    v.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
    v.validate_nbf = true;
    v.leeway = 0;
    v
}

#[test]
fn minted_sa_token_verifies_with_public_key_and_has_k8s_claims() {
    let token = jwt::sa_token(NS, SA, POD, POD_UID, AUD, 600);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(jwt::KEY_ID));

    let data =
        jsonwebtoken::decode::<Value>(&token, &jwt::decoding_key(), &validation(AUD)).unwrap();
    let c = data.claims;
    assert_eq!(c["iss"], jwt::ISSUER);
    assert_eq!(c["sub"], "system:serviceaccount:default:web");
    assert_eq!(c["aud"], json!(["vault"]));
    let (iat, nbf, exp) = (
        c["iat"].as_i64().unwrap(),
        c["nbf"].as_i64().unwrap(),
        c["exp"].as_i64().unwrap(),
    );
    assert_eq!(nbf, iat);
    assert_eq!(exp, iat + 600);
    assert!((iat - jwt::now()).abs() <= 5);
    let k = &c["kubernetes.io"];
    assert_eq!(k["namespace"], NS);
    assert_eq!(k["pod"], json!({ "name": POD, "uid": POD_UID }));
    assert_eq!(k["serviceaccount"]["name"], SA);
    assert_eq!(
        k["serviceaccount"]["uid"],
        jwt::fake_uid("serviceaccount", "default/web")
    );
    assert_eq!(k["serviceaccount"]["uid"].as_str().unwrap().len(), 36);

    // Wrong audience is rejected.
    assert!(
        jsonwebtoken::decode::<Value>(&token, &jwt::decoding_key(), &validation("other")).is_err()
    );
    // A tampered payload fails the signature check.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let forged = jwt::sign_claims(&json!({"sub": "x"}));
    parts[1] = forged.split('.').nth(1).unwrap().to_string();
    assert!(
        jsonwebtoken::decode::<Value>(&parts.join("."), &jwt::decoding_key(), &validation(AUD))
            .is_err()
    );
}

#[test]
fn expired_sa_token_is_expired() {
    let token = jwt::expired_sa_token(NS, SA, POD, POD_UID, AUD);
    let err =
        jsonwebtoken::decode::<Value>(&token, &jwt::decoding_key(), &validation(AUD)).unwrap_err();
    assert_eq!(
        *err.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
    assert!(jwt::unverified_claims(&token)["exp"].as_i64().unwrap() < jwt::now() - 300);
}

#[test]
fn tokens_attribute_has_kubelet_shape() {
    let token = jwt::sa_token(NS, SA, POD, POD_UID, AUD, 3600);
    let attr = jwt::tokens_attribute(&[(AUD, &token)]);
    let v: Value = serde_json::from_str(&attr).unwrap();
    assert_eq!(v[AUD]["token"], token.as_str());
    let ts = v[AUD]["expirationTimestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-05-01T12:00:00Z".len(), "{ts}");
    assert!(ts.ends_with('Z'), "{ts}");
    assert_eq!(jwt::rfc3339(0), "1970-01-01T00:00:00Z");
}

#[test]
fn http_parser_handles_content_length_and_chunked() {
    let r =
        support::http::parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    let r = support::http::parse_response(
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn bao_jwt_login_accepts_bound_sa_and_rejects_others() {
    let bao = Bao::start();
    let health = support::http::get(&bao.addr, "/v1/sys/health")
        .unwrap()
        .json();
    assert_eq!(health["sealed"], false);

    bao.enable_auth("jwt", "jwt");
    bao.configure_jwt("jwt", jwt::PUBLIC_KEY_PEM);
    bao.put_policy(
        "app-read",
        r#"path "secret/data/app" { capabilities = ["read"] }"#,
    );
    let subject = jwt::subject(NS, SA);
    bao.jwt_role("jwt", "app", &subject, AUD, &["app-read"]);
    let written = bao.kv_put("secret/data/app", json!({ "password": "s3cr3t" }));
    assert_eq!(written["version"], 1);
    assert_eq!(
        bao.read("secret/data/app")["data"]["data"]["password"],
        "s3cr3t"
    );

    // The bound service account logs in, as its subject.
    let token = jwt::sa_token(NS, SA, POD, POD_UID, AUD, 600);
    let resp = bao.jwt_login("jwt", "app", &token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let auth = resp.json()["auth"].clone();
    assert!(
        auth["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("app-read")),
        "{auth}"
    );
    assert_eq!(auth["lease_duration"], 3600);
    let client_token = auth["client_token"].as_str().unwrap().to_string();
    let entity = bao.read(&format!(
        "identity/entity/id/{}",
        auth["entity_id"].as_str().unwrap()
    ));
    let alias_names: Vec<&str> = entity["data"]["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(alias_names, vec![subject.as_str()]);

    // ... and can read what the policy allows, nothing else.
    let r = bao.request_as(Some(&client_token), "GET", "secret/data/app", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["data"]["password"], "s3cr3t");
    let r = bao.request_as(Some(&client_token), "GET", "secret/data/other", None);
    assert_eq!(r.status, 403, "{}", r.text());

    // Another service account, a wrong audience, an expired token: rejected.
    let rejected = [
        (
            "other SA",
            jwt::sa_token(NS, "intruder", "intruder-0", POD_UID, AUD, 600),
        ),
        (
            "other namespace",
            jwt::sa_token("prod", SA, POD, POD_UID, AUD, 600),
        ),
        (
            "wrong audience",
            jwt::sa_token(NS, SA, POD, POD_UID, "not-vault", 600),
        ),
        ("expired", jwt::expired_sa_token(NS, SA, POD, POD_UID, AUD)),
    ];
    for (what, bad) in rejected {
        let r = bao.jwt_login("jwt", "app", &bad);
        assert!(
            matches!(r.status, 400 | 403),
            "{what}: HTTP {} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["auth"].is_null(), "{what}");
    }
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn bao_stops_on_drop() {
    let bao = Bao::start();
    let addr = bao.addr.clone();
    drop(bao);
    assert!(
        support::http::get(&addr, "/v1/sys/health").is_err(),
        "OpenBao still answers after drop"
    );
}

#[test]
#[ignore = "needs the e2e venv: run make test"]
fn python_client_reports_grpc_errors_as_json() {
    let dir = support::tempdir("pyclient");
    let missing = dir.path().join("absent.sock");
    for mode in ["localhost", "path", "percent", "default"] {
        let v = support::python_version(&missing, mode);
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["code"], "UNAVAILABLE", "{v}");
    }
    let req = support::mount_request(&json!({ "objects": "array: []" }), None, "/tmp/target");
    let v = support::python_mount(&missing, "localhost", &req);
    assert_eq!(v["ok"], false, "{v}");
}

/// `coffer serve` on a health address the test picks: a fixture for the
/// tests of [`proc::start`] itself.
struct Served {
    process: Process,
    health: String,
}

impl Fixture for Served {
    fn process(&self) -> &Process {
        &self.process
    }

    fn is_ready(&self) -> bool {
        support::http::probe(&self.health, "/readyz")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }

    fn awaiting(&self) -> String {
        format!("GET http://{}/readyz", self.health)
    }
}

fn serve_on(health: &str, extra: &[&str]) -> Served {
    let spec = Spec {
        name: "coffer",
        dir_prefix: "harness",
        log_file: "coffer.log",
        tail_lines: 20,
    };
    let process = Process::spawn(spec, Path::new(env!("CARGO_BIN_EXE_coffer")), |cmd, dir| {
        let sockets = dir.join("sockets");
        std::fs::create_dir(&sockets).unwrap();
        cmd.arg("serve")
            .arg("--socket-dir")
            .arg(&sockets)
            .args(["--provider", "vault", "--health-addr", health])
            .args(extra);
    });
    Served {
        process,
        health: health.to_owned(),
    }
}

#[test]
fn start_launches_again_when_the_port_was_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let mut addrs = Vec::new();
    let served = proc::start(Duration::from_secs(20), || {
        let health = match addrs.len() {
            0 => taken.clone(),
            _ => format!("127.0.0.1:{}", support::free_port()),
        };
        addrs.push(health.clone());
        serve_on(&health, &[])
    });
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert_eq!(served.health, addrs[1]);
    assert!(served.is_ready());
}

#[test]
fn start_does_not_retry_other_start_up_failures() {
    let mut launches = 0;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        proc::start(Duration::from_secs(20), || {
            launches += 1;
            let health = format!("127.0.0.1:{}", support::free_port());
            serve_on(&health, &["--no-such-flag"])
        })
    }));
    let message = match outcome {
        Ok(_) => panic!("coffer started with an unknown flag"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert_eq!(launches, 1);
    assert!(
        message.contains("coffer exited during start-up") && message.contains("--no-such-flag"),
        "{message}"
    );
}

/// A /metrics page for the reader's self-tests.
const METRICS_TEXT: &str = r#"# HELP coffer_backend_requests_total Backend calls.
# TYPE coffer_backend_requests_total counter
coffer_backend_requests_total{backend="vault",operation="login",outcome="ok"} 2
coffer_backend_requests_total{backend="vault",operation="read",outcome="ok"} 5
coffer_backend_requests_total{backend="vault",operation="read",outcome="not_found"} 1
coffer_labels_with_spaces{message="a } b \" c"} 7 1700000000000
coffer_mounts_in_flight 0
"#;

#[test]
fn metric_sums_every_series_the_prefix_starts() {
    let read = r#"coffer_backend_requests_total{backend="vault",operation="read""#;
    assert_eq!(metrics::metric_sum(METRICS_TEXT, read), Some(6.0));
    let login_ok =
        r#"coffer_backend_requests_total{backend="vault",operation="login",outcome="ok"} "#;
    assert_eq!(metrics::metric_sum(METRICS_TEXT, login_ok), Some(2.0));
}

#[test]
fn metric_reads_the_value_after_labels_holding_spaces_and_braces() {
    assert_eq!(
        metrics::metric_sum(METRICS_TEXT, "coffer_labels_with_spaces{"),
        Some(7.0)
    );
}

#[test]
fn an_absent_series_is_none_and_counts_as_zero() {
    assert_eq!(
        metrics::metric_sum(METRICS_TEXT, "coffer_mounts_total{"),
        None
    );
    assert_eq!(metrics::metric(METRICS_TEXT, "coffer_mounts_total{"), 0.0);
    assert_eq!(
        metrics::metric_sum(METRICS_TEXT, "coffer_mounts_in_flight "),
        Some(0.0)
    );
}

#[test]
#[should_panic(expected = "without a value")]
fn a_matching_line_without_a_number_panics() {
    metrics::metric_sum("coffer_x{a=\"b\"} oops\n", "coffer_x");
}

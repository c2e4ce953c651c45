//! Faults: Vault down at start, going down mid-run, slow, stalled,
//! flapping. Every mount answers within its deadline with the right code,
//! coffer keeps serving without a restart, later mounts succeed once Vault
//! is back, and a failed mount leaves the previous files alone.
//!
//! Real OpenBao behind a TCP proxy the tests switch (tests/support/proxy.rs).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use coffer::standin;
use serde_json::json;
use support::bao::Bao;
use support::metrics;
use support::mount::MountBuilder;
use support::proxy::{Mode, Proxy};
use support::{Coffer, coffer_cmd, jwt};

const NS: &str = "shop";
const SA: &str = "web";
const POD_UID: &str = "3c1f0b2a-4b5e-4c6d-8e7f-9a0b1c2d3e4f";
const SECRET: &str = "fault-secret-71c2";

fn bao() -> Bao {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["app"]);
    bao.kv_put("secret/data/app/db", json!({"password": SECRET}));
    bao
}

/// One Mount with a client deadline; returns the code and how long it took.
async fn mount(socket: &Path, addr: &str, deadline: Duration) -> (tonic::Code, String, Duration) {
    let request = MountBuilder::new("vault", NS, SA, "web-0", POD_UID)
        .params([
            ("roleName", "web"),
            ("vaultAddress", addr),
            ("vaultAuthMountPath", "jwt"),
            (
                "objects",
                "- {objectName: password, secretPath: secret/data/app/db, secretKey: password}",
            ),
        ])
        .sa_token("vault", 600)
        .build();
    let mut client = standin::connect(socket).await.expect("connect");
    let mut req = tonic::Request::new(request);
    req.set_timeout(deadline);
    let started = Instant::now();
    let result = client.mount(req).await;
    let elapsed = started.elapsed();
    match result {
        Ok(resp) => {
            let resp = resp.into_inner();
            assert_eq!(resp.files.len(), 1);
            assert_eq!(resp.files[0].contents, SECRET.as_bytes());
            (tonic::Code::Ok, String::new(), elapsed)
        }
        Err(s) => (s.code(), s.message().to_owned(), elapsed),
    }
}

/// The `coffer_mounts_in_flight` gauge (always exported).
fn in_flight(coffer: &Coffer) -> f64 {
    let text = coffer.health_get("/metrics").text();
    metrics::metric_sum(&text, "coffer_mounts_in_flight ")
        .unwrap_or_else(|| panic!("no coffer_mounts_in_flight in:\n{text}"))
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn vault_down_at_start_then_back_without_a_restart() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Reset).await;
    let coffer = Coffer::start(&["vault"], &[]);
    let pid = coffer.pid();
    let (code, msg, took) = mount(
        &coffer.socket("vault"),
        &proxy.addr,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, tonic::Code::Unavailable, "{msg}");
    assert!(msg.contains(&proxy.addr), "names the backend: {msg}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    proxy.set(Mode::Pass);
    let (code, msg, _) = mount(
        &coffer.socket("vault"),
        &proxy.addr,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, tonic::Code::Ok, "{msg}");
    assert_eq!(coffer.pid(), pid);
    assert_eq!(in_flight(&coffer), 0.0);
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn vault_going_down_mid_run_and_flapping() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Pass).await;
    let coffer = Coffer::start(&["vault"], &[]);
    let socket = coffer.socket("vault");
    assert_eq!(
        mount(&socket, &proxy.addr, Duration::from_secs(30)).await.0,
        tonic::Code::Ok
    );
    // Down mid-run: the cached login is still good, the read cannot happen.
    proxy.set(Mode::Reset);
    let (code, msg, took) = mount(&socket, &proxy.addr, Duration::from_secs(30)).await;
    assert_eq!(code, tonic::Code::Unavailable, "{msg}");
    assert!(took < Duration::from_secs(10));
    // Flapping: every answer is OK or UNAVAILABLE, none hangs.
    for i in 0..12 {
        proxy.set(if i % 2 == 0 { Mode::Pass } else { Mode::Reset });
        let (code, msg, took) = mount(&socket, &proxy.addr, Duration::from_secs(30)).await;
        assert!(
            matches!(code, tonic::Code::Ok | tonic::Code::Unavailable),
            "{i}: {code:?} {msg}"
        );
        assert!(took < Duration::from_secs(10), "{i}: {took:?}");
    }
    proxy.set(Mode::Pass);
    assert_eq!(
        mount(&socket, &proxy.addr, Duration::from_secs(30)).await.0,
        tonic::Code::Ok
    );
    assert_eq!(in_flight(&coffer), 0.0);
    assert!(!coffer.has_exited());
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn stalled_vault_is_deadline_exceeded_within_the_request_timeout() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Stall).await;
    let coffer = Coffer::start(&["vault"], &["--vault-request-timeout", "1s"]);
    let (code, msg, took) = mount(
        &coffer.socket("vault"),
        &proxy.addr,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{msg}");
    assert!(
        msg.contains("no answer in time") && msg.contains(&proxy.addr),
        "{msg}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn the_mount_deadline_and_the_callers_deadline_bound_a_stalled_vault() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Stall).await;
    let coffer = Coffer::start(&["vault"], &["--mount-timeout", "2s"]);
    let (code, msg, took) = mount(
        &coffer.socket("vault"),
        &proxy.addr,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{msg}");
    assert!(
        msg.contains("within 2s") && msg.contains("backend vault"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");

    // A caller with a shorter deadline (kubelet's 2 minutes, here 3 s) gets
    // coffer's own answer half a second before it.
    let coffer = Coffer::start(&["vault"], &[]);
    let (code, msg, took) =
        mount(&coffer.socket("vault"), &proxy.addr, Duration::from_secs(3)).await;
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{msg}");
    assert!(
        msg.contains("backend vault"),
        "coffer's message, not the client's: {msg}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(in_flight(&coffer), 0.0);
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn slow_vault_still_mounts_and_excess_mounts_wait_for_a_slot() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Delay(Duration::from_millis(300))).await;
    let coffer = Coffer::start(&["vault"], &["--max-concurrent-mounts", "1"]);
    let socket = coffer.socket("vault");
    let started = Instant::now();
    let results = futures_util::future::join_all(
        (0..3).map(|_| mount(&socket, &proxy.addr, Duration::from_secs(30))),
    )
    .await;
    for (code, msg, _) in &results {
        assert_eq!(*code, tonic::Code::Ok, "{msg}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));

    // One slot, a stalled backend, callers with 2 s: the waiting ones time out in time.
    proxy.set(Mode::Stall);
    let results = futures_util::future::join_all(
        (0..3).map(|_| mount(&socket, &proxy.addr, Duration::from_secs(2))),
    )
    .await;
    for (code, msg, took) in &results {
        assert_eq!(*code, tonic::Code::DeadlineExceeded, "{msg}");
        assert!(*took < Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(in_flight(&coffer), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OpenBao: run make test"]
async fn a_failed_mount_leaves_the_previous_files_intact() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Pass).await;
    let coffer = Coffer::start(&["coffer"], &[]);
    let dir = support::tempdir("faults");
    let spc = dir.path().join("spc.yaml");
    std::fs::write(
        &spc,
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {{name: app, namespace: {NS}}}\nspec:\n  provider: coffer\n  parameters:\n    backend: vault\n    roleName: web\n    vaultAddress: \"{}\"\n    vaultAuthMountPath: jwt\n    objects: |\n      - {{objectName: password, secretPath: secret/data/app/db, secretKey: password}}\n      - {{objectName: again, secretPath: secret/data/app/db, secretKey: password}}\n",
            proxy.addr
        ),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        jwt::sa_token(NS, SA, "web-0", POD_UID, "vault", 600),
    )
    .unwrap();
    let out = dir.path().join("volume");
    let run = || {
        coffer_cmd()
            .args([
                "mount",
                "--pod-name",
                "web-0",
                "--pod-uid",
                POD_UID,
                "--service-account",
                SA,
                "--timeout",
                "20s",
                "--spc",
            ])
            .arg(&spc)
            .arg("--socket")
            .arg(coffer.socket("coffer"))
            .arg("--token")
            .arg(format!("vault={}", token.display()))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let data = std::fs::read_link(out.join("..data")).unwrap();
    proxy.set(Mode::Reset);
    bao.kv_put("secret/data/app/db", json!({"password": "never-seen"}));
    let failed = run();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("Unavailable"),
        "{failed:?}"
    );
    assert_eq!(
        std::fs::read_link(out.join("..data")).unwrap(),
        data,
        "no new payload"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("password")).unwrap(),
        SECRET
    );
    assert_eq!(std::fs::read_to_string(out.join("again")).unwrap(), SECRET);
}

/// An AWS endpoint that signs the pod in (STS) and then throttles Secrets
/// Manager until told to stop, then answers normally.
fn throttling_aws(throttle: std::sync::Arc<std::sync::atomic::AtomicBool>) -> support::stub::Stub {
    support::stub::Stub::start(move |req: &support::stub::Request| {
        let body = String::from_utf8_lossy(&req.body);
        if body.contains("Action=AssumeRoleWithWebIdentity") {
            let xml = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>AKIAFAULTTEST</AccessKeyId><SecretAccessKey>fault-test-secret</SecretAccessKey><SessionToken>fault-test-session</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><SubjectFromWebIdentityToken>system:serviceaccount:shop:web</SubjectFromWebIdentityToken><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/shop/web</Arn><AssumedRoleId>AROAFAULT:web</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>";
            return (200, "text/xml", xml.as_bytes().to_vec());
        }
        if throttle.load(std::sync::atomic::Ordering::SeqCst) {
            return (
                400,
                "application/x-amz-json-1.1",
                br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_vec(),
            );
        }
        let arn = "arn:aws:secretsmanager:us-west-2:123456789012:secret:shop/db-AbCdEf";
        let out = match req.header("x-amz-target") {
            Some("secretsmanager.GetSecretValue") => {
                json!({"ARN": arn, "Name": "shop/db", "SecretString": SECRET, "VersionId": "v1", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9})
            }
            Some("secretsmanager.DescribeSecret") => {
                json!({"ARN": arn, "Name": "shop/db", "VersionIdsToStages": {"v1": ["AWSCURRENT"]}})
            }
            other => {
                return (
                    400,
                    "application/x-amz-json-1.1",
                    json!({"__type": "UnknownOperationException", "message": format!("{other:?}")})
                        .to_string()
                        .into_bytes(),
                );
            }
        };
        (
            200,
            "application/x-amz-json-1.1",
            out.to_string().into_bytes(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the coffer binary: run make test"]
async fn aws_throttling_is_unavailable_and_clears_without_a_restart() {
    let throttle = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let aws = throttling_aws(throttle.clone());
    let coffer = Coffer::start(
        &["aws"],
        &[
            "--aws-endpoint-url",
            &aws.url(),
            "--aws-region",
            "us-west-2",
        ],
    );
    let request = MountBuilder::new("aws", NS, SA, "web-0", POD_UID)
        .class_name("shop")
        .params([
            ("roleArn", "arn:aws:iam::123456789012:role/shop"),
            (
                "objects",
                "- {objectName: shop/db, objectType: secretsmanager}",
            ),
        ])
        .sa_token("sts.amazonaws.com", 600)
        .build();
    let mut client = standin::connect(&coffer.socket("aws")).await.unwrap();
    let started = Instant::now();
    let mut req = tonic::Request::new(request.clone());
    req.set_timeout(Duration::from_secs(60));
    let err = client.mount(req).await.expect_err("throttled");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    // Bounded retries with jitter, then the API and the quota by name.
    assert!(
        err.message()
            .contains("GetSecretValue: ThrottlingException")
            && err.message().contains("us-west-2")
            && err
                .message()
                .contains("GetSecretValue quota is 10,000 requests per second"),
        "{}",
        err.message()
    );
    assert_eq!(
        coffer.metric("coffer_backend_requests_total{backend=\"aws\",operation=\"secretsmanager.GetSecretValue\",outcome=\"error\"} "),
        4.0
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    throttle.store(false, std::sync::atomic::Ordering::SeqCst);
    let resp = client.mount(request).await.unwrap().into_inner();
    assert_eq!(resp.files[0].contents, SECRET.as_bytes());
    assert_eq!(in_flight(&coffer), 0.0);
}

//! End to end with real parts: OpenBao dev server (jwt auth trusting the
//! test ServiceAccount key), the real `coffer serve` binary, and the driver's
//! side played by `coffer mount` or by a gRPC-core (grpcio) client.
//!
//! Needs `bash e2e/setup.sh` (make test runs it):
//! `cargo test --test e2e_vault -- --include-ignored`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::bao::Bao;
use support::{Coffer, coffer_cmd, jwt, python_mount, python_version};

const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-5f7d9c-x2x9q";
const POD_UID: &str = "5b0a2b8e-1b7a-4c55-9b7e-0a8c7f1d2e3f";
const DB_PASSWORD: &str = "pw-Zq8v1LrT0kE7";
const API_KEY: &str = "ak-3f9d2c4b8e1a";

/// OpenBao with jwt auth at `jwt/`, role `web` for shop/web, and two secrets.
fn bao() -> Bao {
    let bao = Bao::start_with_jwt();
    seed(&bao);
    bao
}

/// Role `web` for shop/web at `jwt/` (jwt auth already enabled), and two secrets.
fn seed(bao: &Bao) {
    bao.put_policy(
        "web",
        r#"path "secret/data/shop/*" { capabilities = ["read"] }"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["web"]);
    bao.kv_put(
        "secret/data/shop/db",
        json!({"username": "shop", "password": DB_PASSWORD, "port": 5432}),
    );
    bao.kv_put("secret/data/shop/api", json!({"key": API_KEY}));
}

fn objects() -> &'static str {
    "- objectName: db-username\n  secretPath: secret/data/shop/db\n  secretKey: username\n\
     - objectName: db-password\n  secretPath: secret/data/shop/db\n  secretKey: password\n  filePermission: 0600\n\
     - objectName: db-port\n  secretPath: /v1/secret/data/shop/db\n  secretKey: port\n\
     - objectName: api/key\n  secretPath: secret/data/shop/api\n  secretKey: key\n  filePermission: 0640\n"
}

fn attributes(bao: &Bao, token: &str, extra: &[(&str, &str)]) -> Value {
    let mut a = json!({
        "backend": "vault",
        "roleName": "web",
        "vaultAddress": bao.addr,
        "vaultAuthMountPath": "jwt",
        "objects": objects(),
        "secretProviderClass": "shop-secrets",
        "csi.storage.k8s.io/pod.name": POD,
        "csi.storage.k8s.io/pod.namespace": NS,
        "csi.storage.k8s.io/pod.uid": POD_UID,
        "csi.storage.k8s.io/serviceAccount.name": SA,
        "csi.storage.k8s.io/ephemeral": "true",
        "csi.storage.k8s.io/serviceAccount.tokens": jwt::tokens_attribute(&[("vault", token)]),
    });
    for (k, v) in extra {
        a[*k] = json!(v);
    }
    a
}

fn request(attrs: &Value) -> Value {
    support::mount_request(
        attrs,
        None,
        &format!("/var/lib/kubelet/pods/{POD_UID}/volumes/kubernetes.io~csi/secrets/mount"),
    )
}

fn token() -> String {
    jwt::sa_token(NS, SA, POD, POD_UID, "vault", 600)
}

fn assert_log_clean(coffer: &Coffer, secrets: &[&str]) {
    let log = coffer.log_text();
    for s in secrets {
        assert!(
            !log.contains(s),
            "coffer log contains a secret or token fragment {s:?}:\n{log}"
        );
    }
    assert!(
        !log.contains("eyJ"),
        "coffer log contains something JWT-shaped:\n{log}"
    );
}

fn write_spc(dir: &Path, bao: &Bao, provider: &str, backend_line: &str) -> std::path::PathBuf {
    let indented: String = objects().lines().map(|l| format!("      {l}\n")).collect();
    let text = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: shop-secrets\n  namespace: {NS}\nspec:\n  provider: {provider}\n  parameters:\n{backend_line}    roleName: web\n    vaultAddress: \"{}\"\n    vaultAuthMountPath: jwt\n    objects: |\n{indented}",
        bao.addr
    );
    let path = dir.join("spc.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_mount(coffer: &Coffer, spc: &Path, token_file: &Path, out: &Path) -> (bool, String, String) {
    let output = coffer_cmd()
        .args(["mount", "--spc"])
        .arg(spc)
        .arg("--socket-dir")
        .arg(coffer.socket("coffer").parent().unwrap())
        .args([
            "--pod-name",
            POD,
            "--pod-namespace",
            NS,
            "--pod-uid",
            POD_UID,
            "--service-account",
            SA,
            "--timeout",
            "30s",
        ])
        .arg("--token")
        .arg(format!("vault={}", token_file.display()))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn versions(report: &str) -> Vec<(String, String)> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("version "))
        .map(|l| {
            let (id, v) = l.split_once(' ').unwrap();
            (id.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn driver_standin_mounts_files_with_modes_and_stable_versions() {
    let bao = bao();
    let coffer = Coffer::start(&["coffer"], &[]);
    let dir = support::tempdir("standin");
    let spc = write_spc(dir.path(), &bao, "coffer", "    backend: vault\n");
    let token_file = dir.path().join("token");
    let token = token();
    std::fs::write(&token_file, &token).unwrap();
    let out = dir.path().join("volume");

    let (ok, report, err) = run_mount(&coffer, &spc, &token_file, &out);
    assert!(ok, "mount failed: {err}\n{}", coffer.log_text());
    assert!(report.starts_with("wrote 4 file(s)"), "{report}");
    assert!(
        !report.contains(DB_PASSWORD) && !report.contains(API_KEY),
        "coffer mount printed a secret"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("db-username")).unwrap(),
        "shop"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("db-password")).unwrap(),
        DB_PASSWORD
    );
    assert_eq!(
        std::fs::read_to_string(out.join("db-port")).unwrap(),
        "5432"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("api/key")).unwrap(),
        API_KEY
    );
    let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode("db-username"), mode("db-password"), mode("api/key")),
        (0o644, 0o600, 0o640)
    );
    // The driver's layout: top-level names are symlinks into ..data.
    assert_eq!(
        std::fs::read_link(out.join("db-password")).unwrap(),
        Path::new("..data/db-password")
    );
    assert_eq!(
        std::fs::read_link(out.join("api")).unwrap(),
        Path::new("..data/api")
    );
    let first = versions(&report);
    assert_eq!(
        first.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["db-username", "db-password", "db-port", "api/key"]
    );

    // Same content: same versions, nothing rewritten (rotation republish).
    let (ok, report, err) = run_mount(&coffer, &spc, &token_file, &out);
    assert!(ok, "{err}");
    assert!(report.starts_with("unchanged"), "{report}");
    assert_eq!(versions(&report), first);

    // Rotate one secret: only its objects change version.
    bao.kv_put("secret/data/shop/api", json!({"key": "ak-rotated-77"}));
    let (ok, report, err) = run_mount(&coffer, &spc, &token_file, &out);
    assert!(ok, "{err}");
    let after = versions(&report);
    assert_eq!(after[0], first[0]);
    assert_eq!(after[1], first[1]);
    assert_ne!(after[3].1, first[3].1);
    assert_eq!(
        std::fs::read_to_string(out.join("api/key")).unwrap(),
        "ak-rotated-77"
    );

    assert_log_clean(
        &coffer,
        &[
            DB_PASSWORD,
            API_KEY,
            "ak-rotated-77",
            &token[token.len() - 20..],
        ],
    );
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn every_authority_form_a_driver_sends_gets_the_same_mount() {
    let bao = bao();
    let coffer = Coffer::start(&["coffer", "vault"], &[]);
    let token = token();
    let req = request(&attributes(&bao, &token, &[]));
    let mut results = Vec::new();
    for mode in ["localhost", "path", "percent", "default"] {
        let v = python_version(&coffer.socket("coffer"), mode);
        assert_eq!(v["ok"], true, "{mode}: {v}");
        assert_eq!(v["version"], "v1alpha1");
        assert_eq!(v["runtime_name"], "coffer");
        assert_eq!(v["runtime_version"], env!("CARGO_PKG_VERSION"));
        let m = python_mount(&coffer.socket("coffer"), mode, &req);
        assert_eq!(m["ok"], true, "{mode}: {m}\n{}", coffer.log_text());
        results.push((m["files"].clone(), m["object_versions"].clone()));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    let files = results[0].0.as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert!(files.iter().any(|f| f["path"] == "db-password"
        && f["mode"] == 0o600
        && f["size"] == DB_PASSWORD.len()));

    // A hashicorp SecretProviderClass on the vault socket: no `backend` needed.
    let mut hashicorp = attributes(&bao, &token, &[]);
    hashicorp.as_object_mut().unwrap().remove("backend");
    let m = python_mount(&coffer.socket("vault"), "path", &request(&hashicorp));
    assert_eq!(m["ok"], true, "{m}");
    // …while the coffer socket asks for it.
    let m = python_mount(&coffer.socket("coffer"), "localhost", &request(&hashicorp));
    assert_eq!(m["code"], "INVALID_ARGUMENT", "{m}");
    assert!(
        m["message"].as_str().unwrap().contains("\"backend\""),
        "{m}"
    );

    let metrics = coffer.health_get("/metrics").text();
    let rewrites = support::metrics::metric_sum(&metrics, "coffer_authority_rewrites_total ")
        .unwrap_or_else(|| panic!("no coffer_authority_rewrites_total in:\n{metrics}"));
    assert!(
        rewrites >= 2.0,
        "the raw-path form should have been rewritten:\n{metrics}"
    );
    assert!(
        metrics.contains("coffer_mounts_total{provider=\"coffer\",code=\"OK\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "coffer_backend_requests_total{backend=\"vault\",operation=\"login\",outcome=\"ok\"}"
        ),
        "{metrics}"
    );
    assert_log_clean(&coffer, &[DB_PASSWORD, API_KEY, &token[token.len() - 20..]]);
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn token_of_another_service_account_is_permission_denied() {
    let bao = bao();
    let coffer = Coffer::start(&["coffer"], &[]);
    let intruder = jwt::sa_token(NS, "intruder", POD, POD_UID, "vault", 600);
    let m = python_mount(
        &coffer.socket("coffer"),
        "localhost",
        &request(&attributes(&bao, &intruder, &[])),
    );
    assert_eq!(m["ok"], false);
    assert_eq!(m["code"], "PERMISSION_DENIED", "{m}");
    let msg = m["message"].as_str().unwrap();
    assert!(
        msg.contains("system:serviceaccount:shop:intruder")
            && msg.contains("role \"web\"")
            && msg.contains("auth/jwt"),
        "{msg}"
    );
    assert_log_clean(&coffer, &[&intruder[intruder.len() - 20..]]);
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn bad_input_gets_its_own_status_and_coffer_keeps_serving() {
    let bao = bao();
    let coffer = Coffer::start(&["coffer"], &[]);
    let token = token();
    let good = attributes(&bao, &token, &[]);
    let with = |k: &str, v: &str| {
        let mut a = good.clone();
        a[k] = json!(v);
        request(&a)
    };
    let raw = |attributes: &str, secrets: &str, permission: &str| json!({"attributes": attributes, "secrets": secrets, "target_path": "/t", "permission": permission});
    let good_str = good.to_string();
    let expired = jwt::expired_sa_token(NS, SA, POD, POD_UID, "vault");
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "attributes not JSON",
            raw("{\"objects\": ", "null", "420"),
            "INVALID_ARGUMENT",
            "attributes",
        ),
        (
            "attributes not strings",
            raw(r#"{"objects": 1}"#, "null", "420"),
            "INVALID_ARGUMENT",
            "attributes",
        ),
        (
            "tokens not JSON",
            with("csi.storage.k8s.io/serviceAccount.tokens", "{vault"),
            "INVALID_ARGUMENT",
            "serviceAccount.tokens",
        ),
        (
            "audience missing",
            with(
                "csi.storage.k8s.io/serviceAccount.tokens",
                &jwt::tokens_attribute(&[("aud1", &token)]),
            ),
            "FAILED_PRECONDITION",
            "tokenRequests",
        ),
        (
            "token expired",
            with(
                "csi.storage.k8s.io/serviceAccount.tokens",
                &jwt::tokens_attribute(&[("vault", &expired)]),
            ),
            "FAILED_PRECONDITION",
            "expired",
        ),
        (
            "permission not decimal",
            raw(&good_str, "null", "0644"),
            "INVALID_ARGUMENT",
            "permission",
        ),
        (
            "secrets not a map",
            raw(&good_str, "[1]", "420"),
            "INVALID_ARGUMENT",
            "secrets",
        ),
        (
            "objects not YAML list",
            with("objects", "objectName: [a"),
            "INVALID_ARGUMENT",
            "objects",
        ),
        (
            "duplicate objectName",
            with(
                "objects",
                "- {objectName: a, secretPath: secret/data/shop/db, secretKey: username}\n- {objectName: a, secretPath: secret/data/shop/db, secretKey: password}\n",
            ),
            "INVALID_ARGUMENT",
            "unique",
        ),
        (
            "path traversal",
            with(
                "objects",
                "- {objectName: ../x, secretPath: secret/data/shop/db, secretKey: username}\n",
            ),
            "INVALID_ARGUMENT",
            "\"..\"",
        ),
        (
            "reserved ..data",
            with(
                "objects",
                "- {objectName: ..data, secretPath: secret/data/shop/db, secretKey: username}\n",
            ),
            "INVALID_ARGUMENT",
            "reserves",
        ),
        (
            "mode 0o1777",
            with(
                "objects",
                "- {objectName: x, secretPath: secret/data/shop/db, secretKey: username, filePermission: 01777}\n",
            ),
            "INVALID_ARGUMENT",
            "above 0777",
        ),
        (
            "no roleName",
            with("roleName", ""),
            "INVALID_ARGUMENT",
            "roleName",
        ),
        (
            "missing secret",
            with(
                "objects",
                "- {objectName: x, secretPath: secret/data/shop/nope, secretKey: k}\n",
            ),
            "NOT_FOUND",
            "secret/data/shop/nope",
        ),
        (
            "missing key",
            with(
                "objects",
                "- {objectName: x, secretPath: secret/data/shop/db, secretKey: nope}\n",
            ),
            "NOT_FOUND",
            "\"nope\"",
        ),
        (
            "path not allowed",
            with(
                "objects",
                "- {objectName: x, secretPath: secret/data/other, secretKey: k}\n",
            ),
            "PERMISSION_DENIED",
            "secret/data/other",
        ),
        (
            "unknown backend",
            with("backend", "gcp"),
            "INVALID_ARGUMENT",
            "gcp",
        ),
    ];
    for (name, req, code, needle) in cases {
        let m = python_mount(&coffer.socket("coffer"), "localhost", &req);
        assert_eq!(m["ok"], false, "{name}: {m}");
        assert_eq!(m["code"], code, "{name}: {m}");
        let msg = m["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{name}: {msg:?} should contain {needle:?}"
        );
        assert!(
            !msg.contains(DB_PASSWORD) && !msg.contains("eyJ"),
            "{name}: message leaks: {msg}"
        );
        // Still serving, nothing restarted.
        assert_eq!(
            python_version(&coffer.socket("coffer"), "localhost")["ok"],
            true,
            "{name}"
        );
    }
    let m = python_mount(&coffer.socket("coffer"), "localhost", &request(&good));
    assert_eq!(m["ok"], true, "{m}");
    assert_log_clean(&coffer, &[DB_PASSWORD, API_KEY, &token[token.len() - 20..]]);
}

#[test]
#[ignore = "needs the coffer binary and grpcio: run make test"]
fn socket_is_private_stale_socket_is_replaced_and_a_file_is_left_alone() {
    let dir = support::tempdir("sockets");
    let socket = dir.path().join("coffer.sock");

    // A regular file at the socket path: refused, untouched.
    std::fs::write(&socket, b"not a socket").unwrap();
    let health = format!("127.0.0.1:{}", support::free_port());
    let out = coffer_cmd()
        .args([
            "serve",
            "--provider",
            "coffer",
            "--health-addr",
            &health,
            "--socket-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a socket; refusing to delete it"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
    std::fs::remove_file(&socket).unwrap();

    // A stale socket (nobody listening): replaced, and the new one is 0600.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut child = coffer_cmd()
        .args([
            "serve",
            "--provider",
            "coffer",
            "--health-addr",
            &health,
            "--socket-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _reaper = support::proc::Reaper::watch(child.id());
    let served = support::wait_for(Duration::from_secs(20), || {
        support::http::probe(&health, "/readyz")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(served.is_some(), "coffer did not become ready");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(python_version(&socket, "localhost")["ok"], true);

    // SIGTERM: exit 0 and the socket is gone.
    assert!(support::proc::send_signal(child.id(), "TERM"));
    let status = support::proc::wait_timeout(&mut child, Duration::from_secs(15))
        .expect("coffer did not stop");
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "socket left behind");
}

#[test]
#[ignore = "needs the coffer binary: run make test"]
fn health_endpoints_and_graceful_stop() {
    let mut coffer = Coffer::start(&["coffer", "openbao"], &[]);
    assert_eq!(coffer.health_get("/healthz").status, 200);
    assert_eq!(coffer.health_get("/readyz").status, 200);
    assert_eq!(coffer.health_get("/nope").status, 404);
    let metrics = coffer.health_get("/metrics").text();
    assert!(
        metrics.contains("# TYPE coffer_mounts_in_flight gauge"),
        "{metrics}"
    );
    let status = coffer.stop();
    assert!(status.success(), "{status}");
    assert!(!coffer.socket("coffer").exists() && !coffer.socket("openbao").exists());
}

#[test]
#[ignore = "needs the coffer binary: run make test"]
fn invalid_provider_name_is_refused_at_start() {
    let health = format!("127.0.0.1:{}", support::free_port());
    let dir = support::tempdir("badname");
    let out = coffer_cmd()
        .args([
            "serve",
            "--provider",
            "a.b",
            "--health-addr",
            &health,
            "--socket-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid provider name \"a.b\""),
        "{out:?}"
    );
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn refresh_interval_answers_republishes_without_asking_openbao() {
    // OpenBao with a file audit device: every request it handles is logged.
    let bao = Bao::start_with_audit();
    bao.enable_auth("jwt", "jwt");
    let key = std::fs::read_to_string(
        support::manifest_dir().join("tests/fixtures/sa-signing-key.pub.pem"),
    )
    .unwrap();
    bao.configure_jwt("jwt", &key);
    seed(&bao);
    let coffer = Coffer::start(&["coffer"], &[]);
    let reads = || {
        (
            bao.audited_count("read", "secret/data/shop/db")
                + bao.audited_count("read", "secret/data/shop/api"),
            bao.audited_count("update", "auth/jwt/login"),
        )
    };
    // The client shows sizes only; the rotated password is shorter.
    let password_size = |m: &Value| {
        let files = m["files"].as_array().unwrap();
        let f = files.iter().find(|f| f["path"] == "db-password").unwrap();
        f["size"].as_u64().unwrap()
    };
    let token = token();
    let hour = request(&attributes(&bao, &token, &[("refreshInterval", "1h")]));

    // First mount: one login, the two distinct reads.
    let first = python_mount(&coffer.socket("coffer"), "localhost", &hour);
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(reads(), (2, 1));

    // Republishes of the same pod with the same token within the interval:
    // the same files, and OpenBao sees nothing at all.
    bao.kv_put(
        "secret/data/shop/db",
        json!({"username": "shop", "password": "rotated-pw", "port": 5432}),
    );
    let audited = bao.audited().len();
    for _ in 0..3 {
        let again = python_mount(&coffer.socket("coffer"), "localhost", &hour);
        assert_eq!(again["ok"], true, "{again}");
        assert_eq!(again["files"], first["files"]);
        assert_eq!(again["object_versions"], first["object_versions"]);
    }
    assert_eq!(bao.audited().len(), audited, "{:?}", bao.audited());
    // The trade: the rotated password reaches the pod only after the
    // interval (or with a new token).

    // A new token (kubelet rotated it): the backend is asked again.
    let new_token = jwt::sa_token(NS, SA, POD, POD_UID, "vault", 900);
    let fresh = python_mount(
        &coffer.socket("coffer"),
        "localhost",
        &request(&attributes(&bao, &new_token, &[("refreshInterval", "1h")])),
    );
    assert_eq!(fresh["ok"], true, "{fresh}");
    assert_eq!(password_size(&first), DB_PASSWORD.len() as u64);
    assert_eq!(password_size(&fresh), "rotated-pw".len() as u64);
    assert_eq!(reads(), (4, 2));

    // Another pod with the same class never gets this pod's files.
    let mut other = attributes(&bao, &token, &[("refreshInterval", "1h")]);
    other["csi.storage.k8s.io/pod.uid"] = json!("0e0e0e0e-other-pod");
    let m = python_mount(&coffer.socket("coffer"), "localhost", &request(&other));
    assert_eq!(m["ok"], true, "{m}");
    assert_eq!(reads(), (6, 3));

    // Past the interval (1 ms here), and without one (the default): every
    // republish reads.
    let short = request(&attributes(&bao, &token, &[("refreshInterval", "1ms")]));
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(5));
        let m = python_mount(&coffer.socket("coffer"), "localhost", &short);
        assert_eq!(m["ok"], true, "{m}");
    }
    let plain = request(&attributes(&bao, &token, &[]));
    for _ in 0..2 {
        let m = python_mount(&coffer.socket("coffer"), "localhost", &plain);
        assert_eq!(m["ok"], true, "{m}");
    }
    assert_eq!(reads().0, 6 + 8);

    // A bad interval is the class's error.
    let bad = request(&attributes(&bao, &token, &[("refreshInterval", "1d")]));
    let m = python_mount(&coffer.socket("coffer"), "localhost", &bad);
    assert_eq!(m["code"], "INVALID_ARGUMENT", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("parameter refreshInterval: \"1d\" is not a duration"),
        "{m}"
    );

    assert_eq!(
        coffer.metric("coffer_cache_lookups_total{cache=\"mount_responses\",result=\"hit\"} "),
        3.0
    );
    assert_log_clean(
        &coffer,
        &[DB_PASSWORD, "rotated-pw", &token[token.len() - 20..]],
    );
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn a_vault_address_with_a_path_mounts_through_a_path_routing_gateway() {
    // Vault served under /vault by a gateway: the Go Vault client of the
    // vault and openbao providers sends /vault/v1/..., and so must coffer.
    let bao = bao();
    let gateway = support::proxy::PathProxy::start(&bao.addr, "/vault");
    let coffer = Coffer::start(&["coffer"], &[]);
    let token = token();
    let m = python_mount(
        &coffer.socket("coffer"),
        "localhost",
        &request(&attributes(
            &bao,
            &token,
            &[("vaultAddress", gateway.url.as_str())],
        )),
    );
    assert_eq!(m["ok"], true, "{m}\n{}", coffer.log_text());
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{m}");
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "db-password" && f["size"] == DB_PASSWORD.len())
    );
    let paths = gateway.paths();
    for expected in [
        "/vault/v1/auth/jwt/login",
        "/vault/v1/secret/data/shop/db",
        "/vault/v1/secret/data/shop/api",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected}: {paths:?}");
    }
    assert!(
        paths.iter().all(|p| p.starts_with("/vault/v1/")),
        "{paths:?}"
    );
}

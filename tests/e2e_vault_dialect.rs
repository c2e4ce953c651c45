//! The Vault/OpenBao dialect against a real OpenBao: key extraction, KV v1
//! and v2, whole responses, encodings, PKI, audiences, the kubernetes auth
//! method (with a TokenReview stand-in), login caching, TLS, OpenBao names,
//! and misbehaving servers. The driver's side is a tonic client built from
//! coffer's own stand-in module (`coffer::standin`), so contents can be checked.
//!
//! Needs `bash e2e/setup.sh` (make test runs it).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use support::bao::Bao;
use support::mount::{MountBuilder, Mounted as Mount};
use support::{Coffer, jwt};

const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-0";
const POD_UID: &str = "0d1f3c2a-4b5e-4c6d-8e7f-9a0b1c2d3e4f";

/// OpenBao with jwt auth, KV v2 and v1 data, a PKI engine and policies.
fn bao() -> Bao {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"
path "secret/data/app/*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["app"]);
    bao.kv_put(
        "secret/data/app/cfg",
        json!({"str": "s3cr3t-<&>", "num": 10, "obj": {"b": "hop", "a": 1}, "arr": [6, "stilton", true], "b64": "aGVsbG8=", "hexv": "68656c6c6f"}),
    );
    bao.kv_put("secret/data/app/versioned", json!({"v": "one"}));
    bao.kv_put("secret/data/app/versioned", json!({"v": "two"}));
    bao.enable_secrets("kv1", "kv", json!({"version": "1"}));
    bao.write("kv1/app", json!({"user": "u1", "data": "not-a-map"}));
    bao.enable_secrets("pki", "pki", json!({}));
    bao.write("sys/mounts/pki/tune", json!({"max_lease_ttl": "87600h"}));
    bao.write(
        "pki/root/generate/internal",
        json!({"common_name": "coffer-test-ca", "ttl": "8760h"}),
    );
    bao.write("pki/roles/web", json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "max_ttl": "72h", "ttl": "1h"}));
    bao
}

fn params(bao: &Bao, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut p: BTreeMap<String, String> = [
        ("roleName", "web"),
        ("vaultAddress", bao.addr.as_str()),
        ("vaultAuthMountPath", "jwt"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        p.insert((*k).to_owned(), (*v).to_owned());
    }
    p
}

async fn mount_as(
    socket: &Path,
    params: BTreeMap<String, String>,
    tokens: &[(&str, String)],
    pod_uid: &str,
) -> Result<Mount, tonic::Status> {
    let request = tokens
        .iter()
        .fold(
            MountBuilder::new("vault", NS, SA, POD, pod_uid).params(params),
            |b, (audience, token)| b.token(audience, token.clone()),
        )
        .build();
    support::mount::mount(socket, request).await
}

/// The pod's token, minted once: kubelet hands the same token to every
/// mount until it rotates it.
fn pod_token() -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| jwt::sa_token(NS, SA, POD, POD_UID, "vault", 3600))
        .clone()
}

async fn mount(socket: &Path, params: BTreeMap<String, String>) -> Result<Mount, tonic::Status> {
    mount_as(socket, params, &[("vault", pod_token())], POD_UID).await
}

fn text(m: &Mount, path: &str) -> String {
    String::from_utf8(m.files[path].1.clone()).unwrap()
}

const LOGINS: &str =
    "coffer_backend_requests_total{backend=\"vault\",operation=\"login\",outcome=\"ok\"}";
const READS: &str = "coffer_backend_requests_total{backend=\"vault\",operation=\"read\"";

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn key_extraction_follows_the_vault_provider_rules() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let objects = "
- {objectName: str, secretPath: secret/data/app/cfg, secretKey: str}
- {objectName: num, secretPath: secret/data/app/cfg, secretKey: num}
- {objectName: obj, secretPath: secret/data/app/cfg, secretKey: obj}
- {objectName: arr, secretPath: /v1/secret/data/app/cfg, secretKey: arr}
- {objectName: b64, secretPath: v1/secret/data/app/cfg, secretKey: b64, encoding: base64}
- {objectName: hex, secretPath: /secret/data/app/cfg, secretKey: hexv, encoding: HEX}
- {objectName: private, secretPath: secret/data/app/cfg, secretKey: str, filePermission: 0600}
- {objectName: whole, secretPath: secret/data/app/cfg}
- {objectName: old, secretPath: secret/data/app/versioned?version=1, secretKey: v}
- {objectName: new, secretPath: secret/data/app/versioned, secretKey: v}
- {objectName: kv1-user, secretPath: kv1/app, secretKey: user}
- {objectName: kv1-data, secretPath: kv1/app, secretKey: data}
- {objectName: kv1-whole, secretPath: kv1/app}
";
    let m = mount(
        &coffer.socket("vault"),
        params(&bao, &[("objects", objects)]),
    )
    .await
    .unwrap();
    let cases: &[(&str, &str)] = &[
        ("str", "s3cr3t-<&>"),
        ("num", "10"),
        ("obj", r#"{"a":1,"b":"hop"}"#),
        ("arr", r#"[6,"stilton",true]"#),
        ("b64", "hello"),
        ("hex", "hello"),
        ("old", "one"),
        ("new", "two"),
        ("kv1-user", "u1"),
        ("kv1-data", "not-a-map"),
    ];
    for (path, want) in cases {
        assert_eq!(text(&m, path), *want, "{path}");
    }
    assert_eq!(m.files["str"].0, 0o644);
    assert_eq!(m.files["private"].0, 0o600);

    // No secretKey: the whole response, in the Vault Go client's field order, Go-escaped.
    let whole = text(&m, "whole");
    let order: Vec<usize> = [
        "\"request_id\"",
        "\"lease_id\"",
        "\"lease_duration\"",
        "\"renewable\"",
        "\"data\"",
        "\"warnings\"",
    ]
    .iter()
    .map(|k| {
        whole
            .find(k)
            .unwrap_or_else(|| panic!("{k} missing in {whole}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{whole}");
    assert!(
        whole.contains(r#""str":"s3cr3t-\u003c\u0026\u003e""#),
        "{whole}"
    );
    let parsed: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(parsed["data"]["metadata"]["version"], 1);
    let kv1: Value = serde_json::from_slice(&m.files["kv1-whole"].1).unwrap();
    assert_eq!(kv1["data"]["user"], "u1");

    // Four distinct requests (cfg, versioned?version=1, versioned, kv1/app)… plus the
    // differently spelled cfg paths, which normalise to the same request.
    assert_eq!(
        coffer.metric(READS),
        4.0,
        "identical reads must be made once"
    );
    assert_eq!(m.versions.len(), 13);
    let logs = coffer.log_text();
    assert!(!logs.contains("s3cr3t") && !logs.contains("eyJ"), "{logs}");
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn pki_certificates_parse_are_reused_across_republish_and_differ_by_args() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let objects = r#"
- objectName: tls.crt
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {common_name: www.example.com, ttl: 1h}
  secretKey: certificate
- objectName: tls.key
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {common_name: www.example.com, ttl: 1h}
  secretKey: private_key
  filePermission: 0600
- objectName: api.crt
  secretPath: pki/issue/web
  method: POST
  secretArgs: {common_name: api.example.com, ttl: 1h}
  secretKey: certificate
"#;
    let p = params(&bao, &[("objects", objects)]);
    let first = mount(&coffer.socket("vault"), p.clone()).await.unwrap();
    let cert_pem = first.files["tls.crt"].1.clone();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem).expect("certificate is PEM");
    let cert = pem.parse_x509().expect("certificate parses");
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cn, ["www.example.com"]);
    assert!(text(&first, "tls.key").contains("PRIVATE KEY"));
    assert_eq!(first.files["tls.key"].0, 0o600);
    let (_, api) = x509_parser::pem::parse_x509_pem(&first.files["api.crt"].1).unwrap();
    let api = api.parse_x509().unwrap();
    assert_eq!(
        api.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "api.example.com"
    );
    // Certificate and key from the same response; two issues, not three.
    assert_eq!(coffer.metric(READS), 2.0);

    // The driver republishes every minute: same certificate, same versions, no new issue.
    for _ in 0..3 {
        let again = mount(&coffer.socket("vault"), p.clone()).await.unwrap();
        assert_eq!(again.files["tls.crt"].1, cert_pem);
        assert_eq!(again.versions, first.versions);
    }
    assert_eq!(coffer.metric(READS), 2.0);
    assert_eq!(
        coffer.metric("coffer_cache_lookups_total{cache=\"vault_dynamic\",result=\"hit\"}"),
        6.0
    );
    // Another pod gets its own certificate.
    let other = mount_as(
        &coffer.socket("vault"),
        p,
        &[(
            "vault",
            jwt::sa_token(
                NS,
                SA,
                "web-1",
                "11111111-2222-4333-8444-555555555555",
                "vault",
                600,
            ),
        )],
        "11111111-2222-4333-8444-555555555555",
    )
    .await
    .unwrap();
    assert_ne!(other.files["tls.crt"].1, cert_pem);
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn one_login_for_many_mounts_of_a_pod_even_when_concurrent() {
    let bao = bao();
    let coffer = Arc::new(Coffer::start(&["vault"], &[]));
    let p = params(
        &bao,
        &[(
            "objects",
            "- {objectName: s, secretPath: secret/data/app/cfg, secretKey: str}",
        )],
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (socket, p) = (coffer.socket("vault"), p.clone());
        tasks.push(tokio::spawn(
            async move { mount(&socket, p).await.map(|_| ()) },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        coffer.metric(LOGINS),
        1.0,
        "20 concurrent first mounts share one login"
    );
    for _ in 0..50 {
        mount(&coffer.socket("vault"), p.clone()).await.unwrap();
    }
    assert_eq!(
        coffer.metric(LOGINS),
        1.0,
        "70 mounts of one pod, one login"
    );
    assert_eq!(
        coffer.metric("coffer_cache_lookups_total{cache=\"vault_login\",result=\"hit\"}"),
        69.0
    );

    // A revoked token: one re-login, the mount still succeeds.
    bao.write("sys/leases/revoke-prefix/auth/jwt/login", json!({}));
    mount(&coffer.socket("vault"), p).await.unwrap();
    assert_eq!(coffer.metric(LOGINS), 2.0);
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn a_forged_token_naming_a_logged_in_pod_does_not_reuse_its_login() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let p = params(
        &bao,
        &[(
            "objects",
            "- {objectName: s, secretPath: kv1/app, secretKey: user}",
        )],
    );
    mount(&coffer.socket("vault"), p.clone()).await.unwrap();
    // Same pod UID, same subject, same audience, but not signed by the cluster.
    let real = pod_token();
    let mut parts: Vec<&str> = real.split('.').collect();
    let forged_sig = "c2lnbmF0dXJlLW9mLWFuLWF0dGFja2Vy";
    parts[2] = forged_sig;
    let forged = parts.join(".");
    let err = mount_as(
        &coffer.socket("vault"),
        p.clone(),
        &[("vault", forged)],
        POD_UID,
    )
    .await
    .err()
    .expect("forged token must not be served");
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    assert_eq!(coffer.metric(LOGINS), 1.0);
    // The real pod is still served from its cached login.
    mount(&coffer.socket("vault"), p).await.unwrap();
    assert_eq!(coffer.metric(LOGINS), 1.0);
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn custom_audience_selects_its_token() {
    let bao = bao();
    bao.jwt_role(
        "jwt",
        "custom",
        &jwt::subject(NS, SA),
        "custom-aud",
        &["app"],
    );
    let coffer = Coffer::start(&["vault"], &[]);
    let p = params(
        &bao,
        &[
            ("roleName", "custom"),
            ("audience", "custom-aud"),
            (
                "objects",
                "- {objectName: s, secretPath: kv1/app, secretKey: user}",
            ),
        ],
    );
    let tokens = [
        ("vault", jwt::sa_token(NS, SA, POD, POD_UID, "vault", 600)),
        (
            "custom-aud",
            jwt::sa_token(NS, SA, POD, POD_UID, "custom-aud", 600),
        ),
    ];
    let m = mount_as(&coffer.socket("vault"), p.clone(), &tokens, POD_UID)
        .await
        .unwrap();
    assert_eq!(text(&m, "s"), "u1");
    let err = mount_as(&coffer.socket("vault"), p, &tokens[..1], POD_UID)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("\"custom-aud\"") && err.message().contains("tokenRequests"),
        "{}",
        err.message()
    );
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn kubernetes_auth_method_with_a_token_review_endpoint() {
    let bao = bao();
    // kube-apiserver's TokenReview, as far as Vault needs it: verify the
    // signature with the test key and report the service account.
    let review = support::stub::Stub::start(|req: &support::stub::Request| {
        let (method, path, body) = (req.method.as_str(), req.path.as_str(), req.body.as_slice());
        if method != "POST" || path != "/apis/authentication.k8s.io/v1/tokenreviews" {
            return (404, "application/json", b"{}".to_vec());
        }
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let token = req["spec"]["token"].as_str().unwrap_or("");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_aud = false;
        let status = match jsonwebtoken::decode::<Value>(token, &jwt::decoding_key(), &validation) {
            Ok(data) => {
                let c = data.claims;
                let k = &c["kubernetes.io"];
                json!({"authenticated": true, "audiences": c["aud"], "user": {
                    "username": c["sub"],
                    "uid": k["serviceaccount"]["uid"],
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", k["namespace"].as_str().unwrap_or(""))],
                }})
            }
            Err(e) => json!({"authenticated": false, "error": e.to_string()}),
        };
        let out = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status});
        (201, "application/json", out.to_string().into_bytes())
    });
    bao.enable_auth("kubernetes", "kubernetes");
    let ca_dir = tempfile::tempdir().unwrap();
    let (_, ca_file, _) = certificates(ca_dir.path());
    let ca = std::fs::read_to_string(ca_file).unwrap();
    bao.write("auth/kubernetes/config", json!({"kubernetes_host": review.url(), "disable_local_ca_jwt": true, "kubernetes_ca_cert": ca}));
    bao.write(
        "auth/kubernetes/role/web",
        json!({"bound_service_account_names": [SA], "bound_service_account_namespaces": [NS], "token_policies": ["app"], "token_ttl": "1h"}),
    );
    let coffer = Coffer::start(&["vault"], &[]);
    // Default auth mount: kubernetes.
    let mut p = params(
        &bao,
        &[(
            "objects",
            "- {objectName: s, secretPath: kv1/app, secretKey: user}",
        )],
    );
    p.remove("vaultAuthMountPath");
    let m = mount(&coffer.socket("vault"), p.clone()).await.unwrap();
    assert_eq!(text(&m, "s"), "u1");
    assert!(
        review.count("/apis/authentication.k8s.io/v1/tokenreviews") >= 1,
        "Vault asked the TokenReview endpoint"
    );

    let other_uid = "99999999-2222-4333-8444-555555555555";
    let err = mount_as(
        &coffer.socket("vault"),
        p,
        &[(
            "vault",
            jwt::sa_token(NS, "intruder", "x", other_uid, "vault", 600),
        )],
        other_uid,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    assert!(
        err.message()
            .contains("system:serviceaccount:shop:intruder"),
        "{}",
        err.message()
    );
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn openbao_dialect_on_the_openbao_socket() {
    let bao = bao();
    bao.jwt_role("jwt", "bao-web", &jwt::subject(NS, SA), "openbao", &["app"]);
    let coffer = Coffer::start(&["openbao"], &[]);
    let p: BTreeMap<String, String> = [
        ("baoRoleName", "bao-web"),
        ("roleName", "wrong"),
        ("openbaoAddress", bao.addr.as_str()),
        ("vaultAddress", "http://127.0.0.1:1"),
        ("baoAuthMountPath", "jwt"),
        (
            "objects",
            "- {objectName: s, secretPath: kv1/app, secretKey: user}",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let m = mount_as(
        &coffer.socket("openbao"),
        p,
        &[(
            "openbao",
            jwt::sa_token(NS, SA, POD, POD_UID, "openbao", 600),
        )],
        POD_UID,
    )
    .await
    .unwrap();
    assert_eq!(text(&m, "s"), "u1");
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn sealed_or_unreachable_vault_is_unavailable_and_names_it() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let p = params(
        &bao,
        &[(
            "objects",
            "- {objectName: s, secretPath: kv1/app, secretKey: user}",
        )],
    );
    mount(&coffer.socket("vault"), p.clone()).await.unwrap();
    bao.write("sys/seal", json!({}));
    let err = mount(&coffer.socket("vault"), p).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(
        err.message().to_lowercase().contains("sealed"),
        "{}",
        err.message()
    );

    let down = params(
        &bao,
        &[
            ("vaultAddress", "http://127.0.0.1:9"),
            (
                "objects",
                "- {objectName: s, secretPath: kv1/app, secretKey: user}",
            ),
        ],
    );
    let err = mount(&coffer.socket("vault"), down).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("127.0.0.1:9"), "{}", err.message());
}

#[tokio::test]
#[ignore = "needs the coffer binary: run make test"]
async fn login_without_auth_block_or_with_empty_body_is_a_clear_error() {
    // A server that answers logins with 200 and no auth block, or 204.
    let fake = support::stub::Stub::start(|req: &support::stub::Request| match req.path.as_str() {
        "/v1/auth/jwt/login" => (
            200,
            "application/json",
            br#"{"request_id":"x","data":null}"#.to_vec(),
        ),
        "/v1/auth/empty/login" => (204, "application/json", Vec::new()),
        "/v1/auth/junk/login" => (200, "text/html", b"<html>proxy error</html>".to_vec()),
        _ => (404, "application/json", br#"{"errors":[]}"#.to_vec()),
    });
    let coffer = Coffer::start(&["vault"], &[]);
    for mount_path in ["jwt", "empty", "junk"] {
        let p: BTreeMap<String, String> = [
            ("roleName", "web"),
            ("vaultAddress", fake.url().as_str()),
            ("vaultAuthMountPath", mount_path),
            (
                "objects",
                "- {objectName: s, secretPath: kv1/app, secretKey: user}",
            ),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let err = mount(&coffer.socket("vault"), p).await.err().unwrap();
        assert_eq!(
            err.code(),
            tonic::Code::Internal,
            "{mount_path}: {}",
            err.message()
        );
        assert!(
            err.message().contains(&format!("auth/{mount_path}")),
            "{}",
            err.message()
        );
    }
    assert!(!coffer.has_exited());
    assert_eq!(
        support::python_version(&coffer.socket("vault"), "localhost")["ok"],
        true
    );
}

/// A TLS front for OpenBao with certificates made for the test.
struct TlsFront {
    addr: String,
    dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

fn certificates(dir: &Path) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coffer test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::create_dir_all(dir.join("cas")).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cas/ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["coffer".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).unwrap();
    (
        issuer,
        dir.join("ca.pem").display().to_string(),
        dir.join("cas").display().to_string(),
    )
}

async fn tls_front(backend: &str, require_client_cert: bool) -> (TlsFront, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, ca_file, ca_dir) = certificates(dir.path());
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["vault.test".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(issuer_der(dir.path())).unwrap();
        let verifier = tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
        .unwrap();
    let config = builder
        .with_single_cert(vec![server.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let backend = backend.trim_start_matches("http://").to_owned();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (
        TlsFront {
            addr,
            dir,
            _task: task,
        },
        ca_file,
        ca_dir,
    )
}

fn issuer_der(dir: &Path) -> tokio_rustls::rustls::pki_types::CertificateDer<'static> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap()
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn tls_ca_file_ca_directory_server_name_skip_verify_and_client_certificates() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let objects = "- {objectName: s, secretPath: kv1/app, secretKey: user}";
    let (front, ca_file, ca_dir) = tls_front(&bao.addr, false).await;
    let p = |extra: &[(&str, &str)]| {
        let mut p = params(
            &bao,
            &[("vaultAddress", front.addr.as_str()), ("objects", objects)],
        );
        for (k, v) in extra {
            p.insert((*k).to_owned(), (*v).to_owned());
        }
        p
    };
    let ok: &[&[(&str, &str)]] = &[
        &[
            ("vaultCACertPath", &ca_file),
            ("vaultTLSServerName", "vault.test"),
        ],
        &[
            ("vaultCADirectory", &ca_dir),
            ("vaultTLSServerName", "vault.test"),
        ],
        &[("vaultSkipTLSVerify", "true")],
    ];
    for extra in ok {
        let m = mount(&coffer.socket("vault"), p(extra))
            .await
            .unwrap_or_else(|e| panic!("{extra:?}: {}", e.message()));
        assert_eq!(text(&m, "s"), "u1");
    }
    let refused: &[&[(&str, &str)]] = &[
        // The certificate is for vault.test, not 127.0.0.1.
        &[("vaultCACertPath", &ca_file)],
        // Not signed by a CA the platform trusts.
        &[("vaultTLSServerName", "vault.test")],
        &[("vaultCACertPath", "/nonexistent/ca.pem")],
    ];
    for extra in refused {
        let err = mount(&coffer.socket("vault"), p(extra))
            .await
            .err()
            .unwrap_or_else(|| panic!("{extra:?} should fail"));
        assert!(
            matches!(
                err.code(),
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
            ),
            "{extra:?}: {:?} {}",
            err.code(),
            err.message()
        );
        assert!(err.message().contains(&front.addr), "{}", err.message());
    }

    // Mutual TLS: refused without a client certificate, served with one.
    let (mtls, mtls_ca, _) = tls_front(&bao.addr, true).await;
    let client_cert = mtls.dir.path().join("client.pem").display().to_string();
    let client_key = mtls.dir.path().join("client-key.pem").display().to_string();
    let mut base = params(
        &bao,
        &[
            ("vaultAddress", mtls.addr.as_str()),
            ("objects", objects),
            ("vaultCACertPath", &mtls_ca),
            ("vaultTLSServerName", "vault.test"),
        ],
    );
    assert!(mount(&coffer.socket("vault"), base.clone()).await.is_err());
    base.insert("vaultTLSClientCertPath".into(), client_cert);
    base.insert("vaultTLSClientKeyPath".into(), client_key);
    let m = mount(&coffer.socket("vault"), base)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message()));
    assert_eq!(text(&m, "s"), "u1");
    drop(front);
}

//! Hostile input: a table of requests and backend answers meant to break
//! coffer. Each gets a clear status within seconds, never a panic or a
//! hang, and coffer keeps serving. Real coffer binary; Vault is a stub
//! that logs everyone in and answers reads with the hostile bodies.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use coffer::grpc::MountRequest;
use serde_json::{Value, json};
use support::stub::Stub;
use support::{Coffer, jwt};
use tonic::Code;

const NS: &str = "shop";
const SA: &str = "web";
const UID: &str = "7e57c0de-4b5e-4c6d-8e7f-9a0b1c2d3e4f";

/// A Vault that accepts every login and answers reads by path.
fn hostile_vault() -> Stub {
    Stub::start(|req: &support::stub::Request| {
        let path = req.path.as_str();
        let big = || {
            let mut s = String::from(r#"{"data":{"k":""#);
            s.push_str(&"x".repeat(5 * 1024 * 1024));
            s.push_str(r#""}}"#);
            s.into_bytes()
        };
        match path {
            "/v1/auth/jwt/login" => (200, "application/json", br#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"auth":{"client_token":"hvs.stub","accessor":"a","policies":[],"token_policies":[],"metadata":null,"lease_duration":3600,"renewable":false,"entity_id":"","token_type":"service","orphan":true}}"#.to_vec()),
            "/v1/good" => (200, "application/json", br#"{"data":{"k":"v"}}"#.to_vec()),
            "/v1/html" => (200, "text/html", b"<html>gateway</html>".to_vec()),
            "/v1/not-utf8" => (200, "application/json", vec![b'{', 0xff, 0xfe, b'}']),
            "/v1/huge" => (200, "application/json", big()),
            "/v1/deep" => (200, "application/json", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
            "/v1/data-array" => (200, "application/json", br#"{"data":[1,2,3]}"#.to_vec()),
            "/v1/no-data" => (200, "application/json", br#"{"request_id":"x"}"#.to_vec()),
            "/v1/empty" => (204, "application/json", Vec::new()),
            "/v1/500" => (500, "text/plain", b"panic: runtime error".to_vec()),
            "/v1/503" => (503, "application/json", br#"{"errors":["Vault is sealed"]}"#.to_vec()),
            _ => (404, "application/json", br#"{"errors":[]}"#.to_vec()),
        }
    })
}

fn attributes(vault: &str, objects: &str, extra: &[(&str, &str)]) -> Value {
    let token = jwt::sa_token(NS, SA, "web-0", UID, "vault", 600);
    let mut a = json!({
        "roleName": "web",
        "vaultAddress": vault,
        "vaultAuthMountPath": "jwt",
        "objects": objects,
        "secretProviderClass": "hostile",
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": NS,
        "csi.storage.k8s.io/pod.uid": UID,
        "csi.storage.k8s.io/serviceAccount.name": SA,
        "csi.storage.k8s.io/ephemeral": "true",
        "csi.storage.k8s.io/serviceAccount.tokens": jwt::tokens_attribute(&[("vault", &token)]),
    });
    for (k, v) in extra {
        a[*k] = json!(v);
    }
    a
}

/// The wire form of MountRequest with `bytes` where the contract says
/// `string`: same field numbers, so invalid UTF-8 reaches coffer.
#[derive(Clone, PartialEq, prost::Message)]
struct RawMountRequest {
    #[prost(bytes = "vec", tag = "1")]
    attributes: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    secrets: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    target_path: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    permission: Vec<u8>,
}

async fn raw_mount(socket: &Path, raw: RawMountRequest) -> Result<(), tonic::Status> {
    let path = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<RawMountRequest, coffer::grpc::MountResponse> =
        tonic_prost::ProstCodec::default();
    grpc.unary(
        tonic::Request::new(raw),
        http::uri::PathAndQuery::from_static("/v1alpha1.CSIDriverProvider/Mount"),
        codec,
    )
    .await
    .map(|_| ())
}

enum Input {
    Attributes(Value),
    Request {
        attributes: String,
        secrets: String,
        permission: String,
    },
    Raw(RawMountRequest),
}

fn objects_of(path_name: &str, extra: &str) -> String {
    format!("- {{objectName: {path_name}, secretPath: good, secretKey: k{extra}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the coffer binary: run make test"]
async fn every_hostile_input_gets_a_clear_status_and_coffer_keeps_serving() {
    let vault = hostile_vault();
    let v = vault.url();
    let coffer = Coffer::start(&["vault"], &[]);
    let socket = coffer.socket("vault");
    let a = |objects: &str| Input::Attributes(attributes(&v, objects, &[]));
    let ax =
        |objects: &str, extra: &[(&str, &str)]| Input::Attributes(attributes(&v, objects, extra));
    let good_attrs = attributes(&v, &objects_of("a", ""), &[]).to_string();
    let req = |attributes: &str, secrets: &str, permission: &str| Input::Request {
        attributes: attributes.to_owned(),
        secrets: secrets.to_owned(),
        permission: permission.to_owned(),
    };
    let long_element = "e".repeat(256);
    let long_path = vec!["abcdefghij"; 460].join("/");
    let alias_bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let self_alias = "- &a {objectName: x, secretPath: good, secretKey: k, more: *a}";
    let deep_yaml = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let expired = jwt::expired_sa_token(NS, SA, "web-0", UID, "vault");
    let other_aud = jwt::sa_token(NS, SA, "web-0", UID, "aud1", 600);
    let huge_attr = "y".repeat(10 * 1024 * 1024);
    let many_tokens: String = {
        let entries: Vec<(String, String)> = (0..2000)
            .map(|i| (format!("aud{i}"), "x.y.z".to_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = entries
            .iter()
            .map(|(a, t)| (a.as_str(), t.as_str()))
            .collect();
        let m: serde_json::Map<String, Value> = refs
            .iter()
            .map(|(a, t)| ((*a).to_owned(), json!({"token": t})))
            .collect();
        Value::Object(m).to_string()
    };

    let cases: Vec<(&str, Input, Code, &str)> = vec![
        // attributes
        (
            "attributes not JSON",
            req("{", "null", "420"),
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "attributes a list",
            req("[]", "null", "420"),
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "attributes with a number",
            req(r#"{"a":1}"#, "null", "420"),
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "attributes nested",
            req(r#"{"a":{"b":"c"}}"#, "null", "420"),
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "attributes empty",
            req("", "null", "420"),
            Code::InvalidArgument,
            "attributes",
        ),
        (
            "no pod info",
            req(r#"{"objects":"x"}"#, "null", "420"),
            Code::InvalidArgument,
            "pod.name",
        ),
        (
            "10 MB attribute",
            ax(&objects_of("a", ""), &[("padding", &huge_attr)]),
            Code::Ok,
            "",
        ),
        (
            "invalid UTF-8 attributes",
            Input::Raw(RawMountRequest {
                attributes: vec![b'{', 0xc3, 0x28, b'}'],
                secrets: b"null".to_vec(),
                target_path: b"/t".to_vec(),
                permission: b"420".to_vec(),
            }),
            Code::InvalidArgument,
            "UTF-8",
        ),
        (
            "invalid UTF-8 permission",
            Input::Raw(RawMountRequest {
                attributes: good_attrs.clone().into_bytes(),
                secrets: b"null".to_vec(),
                target_path: b"/t".to_vec(),
                permission: vec![0xff],
            }),
            Code::InvalidArgument,
            "UTF-8",
        ),
        (
            "truncated protobuf",
            Input::Raw(RawMountRequest {
                attributes: vec![],
                secrets: vec![],
                target_path: vec![],
                permission: vec![],
            }),
            Code::InvalidArgument,
            "attributes",
        ),
        // secrets and permission
        (
            "secrets a list",
            req(&good_attrs, "[1]", "420"),
            Code::InvalidArgument,
            "secrets",
        ),
        (
            "secrets numbers",
            req(&good_attrs, r#"{"a":1}"#, "420"),
            Code::InvalidArgument,
            "secrets",
        ),
        (
            "permission octal text",
            req(&good_attrs, "null", "0644"),
            Code::InvalidArgument,
            "permission",
        ),
        (
            "permission negative",
            req(&good_attrs, "null", "-1"),
            Code::InvalidArgument,
            "permission",
        ),
        (
            "permission overflow",
            req(&good_attrs, "null", "99999999999999999999999"),
            Code::InvalidArgument,
            "permission",
        ),
        (
            "permission float",
            req(&good_attrs, "null", "1e3"),
            Code::InvalidArgument,
            "permission",
        ),
        // tokens
        (
            "tokens not JSON",
            ax(
                &objects_of("a", ""),
                &[("csi.storage.k8s.io/serviceAccount.tokens", "{")],
            ),
            Code::InvalidArgument,
            "serviceAccount.tokens",
        ),
        (
            "tokens a list",
            ax(
                &objects_of("a", ""),
                &[("csi.storage.k8s.io/serviceAccount.tokens", "[]")],
            ),
            Code::InvalidArgument,
            "serviceAccount.tokens",
        ),
        (
            "token entry without token",
            ax(
                &objects_of("a", ""),
                &[(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    r#"{"vault":{}}"#,
                )],
            ),
            Code::InvalidArgument,
            "serviceAccount.tokens",
        ),
        (
            "empty token",
            ax(
                &objects_of("a", ""),
                &[(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    r#"{"vault":{"token":""}}"#,
                )],
            ),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "token not a JWT",
            ax(
                &objects_of("a", ""),
                &[(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    r#"{"vault":{"token":"opaque"}}"#,
                )],
            ),
            Code::InvalidArgument,
            "not a JWT",
        ),
        (
            "bad expirationTimestamp",
            ax(
                &objects_of("a", ""),
                &[(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    r#"{"vault":{"token":"a.b.c","expirationTimestamp":"tomorrow"}}"#,
                )],
            ),
            Code::InvalidArgument,
            "RFC 3339",
        ),
        (
            "token without the audience",
            ax(
                &objects_of("a", ""),
                &[(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    &jwt::tokens_attribute(&[("aud1", &other_aud)]),
                )],
            ),
            Code::FailedPrecondition,
            "tokenRequests",
        ),
        (
            "expired token",
            ax(
                &objects_of("a", ""),
                &[(
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    &jwt::tokens_attribute(&[("vault", &expired)]),
                )],
            ),
            Code::FailedPrecondition,
            "expired",
        ),
        (
            "2000 audiences",
            ax(
                &objects_of("a", ""),
                &[("csi.storage.k8s.io/serviceAccount.tokens", &many_tokens)],
            ),
            Code::FailedPrecondition,
            "tokenRequests",
        ),
        // objects YAML and file rules
        (
            "objects not a list",
            a("objectName: a"),
            Code::InvalidArgument,
            "objects",
        ),
        ("objects empty", a(""), Code::InvalidArgument, "objects"),
        ("deep YAML", a(&deep_yaml), Code::InvalidArgument, "objects"),
        (
            "YAML alias bomb",
            a(alias_bomb),
            Code::InvalidArgument,
            "objects",
        ),
        (
            "recursive YAML alias",
            a(self_alias),
            Code::InvalidArgument,
            "objects",
        ),
        (
            "tab-indented YAML",
            a("-\tobjectName: a"),
            Code::InvalidArgument,
            "objects",
        ),
        (
            "path ../",
            a(&objects_of("../x", "")),
            Code::InvalidArgument,
            "\"..\" element",
        ),
        (
            "path ..data",
            a(&objects_of("..data", "")),
            Code::InvalidArgument,
            "reserves",
        ),
        (
            "path absolute",
            a(&objects_of("/etc/passwd", "")),
            Code::InvalidArgument,
            "absolute",
        ),
        (
            "path a//b",
            a(&objects_of("a//b", "")),
            Code::InvalidArgument,
            "not clean",
        ),
        (
            "path ./a",
            a(&objects_of("./a", "")),
            Code::InvalidArgument,
            "not clean",
        ),
        (
            "256-byte element",
            a(&objects_of(&long_element, "")),
            Code::InvalidArgument,
            "255 bytes",
        ),
        (
            "5,000-byte path",
            a(&objects_of(&long_path, "")),
            Code::InvalidArgument,
            "4096 bytes",
        ),
        (
            "NUL in a name",
            a("- {objectName: \"a\\0b\", secretPath: good, secretKey: k}"),
            Code::InvalidArgument,
            "NUL",
        ),
        (
            "mode 0o1777",
            a(&objects_of("a", ", filePermission: 01777")),
            Code::InvalidArgument,
            "above 0777",
        ),
        (
            "mode negative",
            a(&objects_of("a", ", filePermission: -1")),
            Code::InvalidArgument,
            "filePermission",
        ),
        (
            "duplicate names",
            a(
                "- {objectName: a, secretPath: good, secretKey: k}\n- {objectName: a, secretPath: good, secretKey: k}",
            ),
            Code::InvalidArgument,
            "unique",
        ),
        (
            "file and directory",
            a(
                "- {objectName: a, secretPath: good, secretKey: k}\n- {objectName: a/b, secretPath: good, secretKey: k}",
            ),
            Code::InvalidArgument,
            "both a file and a directory",
        ),
        (
            "secretPath traversal",
            a("- {objectName: a, secretPath: secret/../sys/raw, secretKey: k}"),
            Code::InvalidArgument,
            "secretPath",
        ),
        (
            "unknown method",
            a(&objects_of("a", ", method: DELETE")),
            Code::InvalidArgument,
            "method",
        ),
        // backend answers
        (
            "non-JSON body",
            a("- {objectName: a, secretPath: html, secretKey: k}"),
            Code::Internal,
            "not JSON",
        ),
        (
            "invalid UTF-8 body",
            a("- {objectName: a, secretPath: not-utf8, secretKey: k}"),
            Code::Internal,
            "object \"a\"",
        ),
        (
            "over 4 MiB value",
            a("- {objectName: a, secretPath: huge, secretKey: k}"),
            Code::ResourceExhausted,
            "--max-call-recv-msg-size",
        ),
        (
            "deeply nested JSON body",
            a("- {objectName: a, secretPath: deep, secretKey: k}"),
            Code::Internal,
            "object \"a\"",
        ),
        (
            "data is a list",
            a("- {objectName: a, secretPath: data-array, secretKey: k}"),
            Code::NotFound,
            "no data",
        ),
        (
            "no data",
            a("- {objectName: a, secretPath: no-data, secretKey: k}"),
            Code::NotFound,
            "no data",
        ),
        (
            "empty 204",
            a("- {objectName: a, secretPath: empty, secretKey: k}"),
            Code::Internal,
            "object \"a\"",
        ),
        (
            "500 without Vault errors",
            a("- {objectName: a, secretPath: 500, secretKey: k}"),
            Code::Unavailable,
            "HTTP 500",
        ),
        (
            "503 sealed",
            a("- {objectName: a, secretPath: 503, secretKey: k}"),
            Code::Unavailable,
            "sealed",
        ),
    ];
    assert!(cases.len() >= 40);
    // Every case runs and reports by name; the failures are listed together
    // at the end. Only coffer exiting stops the table (nothing is left to ask).
    let total = cases.len();
    let mut failures: Vec<String> = Vec::new();
    for (name, input, code, needle) in cases {
        let started = Instant::now();
        let sent = async {
            match input {
                Input::Attributes(attrs) => {
                    send(&socket, attrs.to_string(), "null".into(), "420".into()).await
                }
                Input::Request {
                    attributes,
                    secrets,
                    permission,
                } => send(&socket, attributes, secrets, permission).await,
                Input::Raw(raw) => raw_mount(&socket, raw).await,
            }
        };
        match tokio::time::timeout(CASE_DEADLINE, sent).await {
            Err(_) => failures.push(format!("{name}: no answer within {CASE_DEADLINE:?}")),
            Ok(result) => {
                let took = started.elapsed();
                if let Some(problem) = check_case(result, code, needle, took) {
                    failures.push(format!("{name}: {problem}"));
                }
            }
        }
        if coffer.has_exited() {
            failures.push(format!("{name}: coffer exited"));
            panic!(
                "coffer exited; failed cases so far:\n  {}\nlog:\n{}",
                failures.join("\n  "),
                coffer.log_text()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert_eq!(support::python_version(&socket, "localhost")["ok"], true);
    let log = coffer.log_text();
    assert!(
        !log.contains("eyJ") && !log.contains("hvs.stub") && !log.contains("panicked"),
        "{log}"
    );
}

/// How long one hostile case may take to be answered.
const CASE_DEADLINE: Duration = Duration::from_secs(10);

/// What is wrong with one case's answer, if anything: the status code, the
/// message (must contain `needle`, must hold no token) and the time taken.
fn check_case(
    result: Result<(), tonic::Status>,
    code: Code,
    needle: &str,
    took: Duration,
) -> Option<String> {
    if took >= CASE_DEADLINE {
        return Some(format!("took {took:?}"));
    }
    match result {
        Ok(()) if code != Code::Ok => Some(format!("succeeded, expected {code:?}")),
        Ok(()) => None,
        Err(status) if status.code() != code => Some(format!(
            "{:?}, expected {code:?}: {}",
            status.code(),
            status.message()
        )),
        Err(status) if !status.message().contains(needle) => {
            Some(format!("{:?} should contain {needle:?}", status.message()))
        }
        Err(status) if status.message().contains("eyJ") => Some("token in message".to_owned()),
        Err(_) => None,
    }
}

async fn send(
    socket: &Path,
    attributes: String,
    secrets: String,
    permission: String,
) -> Result<(), tonic::Status> {
    let mut client = coffer::standin::connect_with_limit(socket, 64 * 1024 * 1024)
        .await
        .unwrap();
    client
        .mount(MountRequest {
            attributes,
            secrets,
            target_path: "/t".into(),
            permission,
            current_object_version: vec![],
        })
        .await
        .map(|_| ())
}

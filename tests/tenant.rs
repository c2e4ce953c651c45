//! A hostile tenant: someone who may create a SecretProviderClass and a pod
//! in their own namespace, and so chooses every parameter coffer reads and
//! may point coffer at servers they run. Each attack runs against the real
//! binary while another tenant mounts an ordinary class from real OpenBao;
//! after each one coffer must still be running, its peak memory (VmHWM)
//! must be under the chart's 128 MiB limit, the other tenant's mount must
//! succeed within a 2 s deadline, and no request may reach a host the class
//! did not name (the pod's token must not travel).

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer::grpc::{MountRequest, MountResponse};
use serde_json::{Value, json};
use support::bao::Bao;
use support::raw::{self, RawServer};
use support::{Coffer, jwt};
use tonic::Code;

const NS: &str = "mallory";
const SA: &str = "app";
const UID: &str = "0bad0bad-4b5e-4c6d-8e7f-9a0b1c2d3e4f";
const VICTIM_NS: &str = "shop";
const VICTIM_SA: &str = "web";
const VICTIM_UID: &str = "600d600d-4b5e-4c6d-8e7f-9a0b1c2d3e4f";
const VICTIM_SECRET: &str = "victim-secret-5e1f";
/// The chart's memory limit.
const MAX_PEAK: u64 = 128 * 1024 * 1024;
/// What a hostile server sends where a size cap must hold.
const HUGE: u64 = 600 * 1024 * 1024;
const LOGIN: &[u8] = br#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":null,"auth":{"client_token":"hvs.evil","accessor":"a","policies":[],"token_policies":[],"metadata":null,"lease_duration":3600,"renewable":false,"entity_id":"","token_type":"service","orphan":true}}"#;

fn victim_bao() -> Bao {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    );
    bao.jwt_role(
        "jwt",
        "web",
        &jwt::subject(VICTIM_NS, VICTIM_SA),
        "vault",
        &["app"],
    );
    bao.kv_put("secret/data/app/db", json!({"password": VICTIM_SECRET}));
    bao
}

/// A request to a host the class did not name: nothing may ever arrive.
fn collector() -> RawServer {
    RawServer::start(|_, conn| {
        raw::json(conn, 200, LOGIN, false);
        false
    })
}

/// The attacker's "Vault": one behaviour per auth mount or secret path.
fn evil_vault(collector: &str) -> RawServer {
    let collector = collector.to_owned();
    RawServer::start(move |req, conn| {
        let deep = || format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
        match req.path.as_str() {
            "/v1/auth/jwt/login" => raw::json(conn, 200, LOGIN, true),
            "/v1/auth/ttlmax/login" => raw::json(
                conn,
                200,
                &String::from_utf8_lossy(LOGIN)
                    .replace("\"lease_duration\":3600", "\"lease_duration\":18446744073709551615")
                    .into_bytes(),
                true,
            ),
            "/v1/auth/big/login" | "/v1/big" => raw::stream_body(conn, HUGE, b' ', true),
            "/v1/auth/endless/login" => raw::stream_body(conn, HUGE, b' ', false),
            "/v1/auth/redirect/login" | "/v1/redirect" => {
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {collector}{}\r\nContent-Length: 0\r\n\r\n",
                    req.path
                );
                let _ = std::io::Write::write_all(conn, head.as_bytes());
            }
            "/v1/auth/drip/login" => {
                let _ = std::io::Write::write_all(
                    conn,
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
                );
                for _ in 0..100 {
                    if std::io::Write::write_all(conn, b" ").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            "/v1/auth/stall/login" => std::thread::sleep(Duration::from_secs(15)),
            "/v1/auth/garbage/login" => {
                let _ = std::io::Write::write_all(conn, &[0x16, 0x03, 0x01, 0xff, 0x00, 0x13, 0x37]);
            }
            "/v1/auth/header/login" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\n{{}}",
                    "h".repeat(1024 * 1024)
                );
                let _ = std::io::Write::write_all(conn, head.as_bytes());
            }
            "/v1/auth/deep/login" | "/v1/deep" => raw::json(conn, 200, &deep(), false),
            "/v1/auth/truncated/login" => {
                let _ = std::io::Write::write_all(
                    conn,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"auth\":",
                );
            }
            "/v1/auth/errors/login" => {
                let errors: Vec<String> = (0..50_000).map(|i| format!("error number {i}")).collect();
                raw::json(conn, 400, json!({ "errors": errors }).to_string().as_bytes(), false);
            }
            "/v1/good" => raw::json(conn, 200, br#"{"data":{"k":"v"}}"#, true),
            "/v1/fmt" => raw::json(conn, 200, br#"{"data":{"k":"s3cr%Qt{Kx}"}}"#, true),
            "/v1/lease" => raw::json(
                conn,
                200,
                br#"{"lease_id":"database/creds/x/1","lease_duration":18446744073709551615,"renewable":true,"data":{"k":"v"}}"#,
                true,
            ),
            "/v1/pki/issue/web" => raw::json(
                conn,
                200,
                br#"{"lease_id":"","lease_duration":0,"data":{"certificate":"c","expiration":9223372036854775807}}"#,
                true,
            ),
            _ => raw::json(conn, 404, br#"{"errors":[]}"#, false),
        }
        // Connections stay open only where keep-alive was answered.
        matches!(
            req.path.as_str(),
            "/v1/auth/jwt/login"
                | "/v1/auth/ttlmax/login"
                | "/v1/good"
                | "/v1/fmt"
                | "/v1/lease"
                | "/v1/pki/issue/web"
        )
    })
}

/// A Vault that keeps each connection alive after its first answer and
/// closes it, unanswered, when a second request arrives on it: what a
/// server restart or a load balancer's idle timeout does to a pooled
/// connection just as coffer reuses it.
fn closing_vault() -> RawServer {
    let per_conn: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    RawServer::start(move |req, conn| {
        let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let n = {
            let mut m = per_conn.lock().unwrap();
            let n = m.entry(peer).or_insert(0);
            *n += 1;
            *n
        };
        if n > 1 {
            return false; // close without an answer
        }
        match req.path.as_str() {
            "/v1/auth/jwt/login" => raw::json(conn, 200, LOGIN, true),
            _ => raw::json(conn, 200, br#"{"data":{"k":"v"}}"#, true),
        }
        true
    })
}

fn base_attributes(extra: &[(&str, &str)]) -> Value {
    let token = jwt::sa_token(NS, SA, "evil-0", UID, "vault", 600);
    let mut a = json!({
        "roleName": "r",
        "vaultAuthMountPath": "jwt",
        "secretProviderClass": "evil",
        "csi.storage.k8s.io/pod.name": "evil-0",
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

fn victim_attributes(bao: &str) -> Value {
    let token = jwt::sa_token(VICTIM_NS, VICTIM_SA, "web-0", VICTIM_UID, "vault", 600);
    json!({
        "roleName": "web",
        "vaultAddress": bao,
        "vaultAuthMountPath": "jwt",
        "objects": "- {objectName: password, secretPath: secret/data/app/db, secretKey: password}",
        "secretProviderClass": "shop",
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": VICTIM_NS,
        "csi.storage.k8s.io/pod.uid": VICTIM_UID,
        "csi.storage.k8s.io/serviceAccount.name": VICTIM_SA,
        "csi.storage.k8s.io/ephemeral": "true",
        "csi.storage.k8s.io/serviceAccount.tokens": jwt::tokens_attribute(&[("vault", &token)]),
    })
}

async fn mount(
    socket: &Path,
    attributes: &Value,
    deadline: Duration,
) -> Result<MountResponse, tonic::Status> {
    let mut client = coffer::standin::connect_with_limit(socket, 64 * 1024 * 1024)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let mut req = tonic::Request::new(MountRequest {
        attributes: attributes.to_string(),
        secrets: "null".into(),
        target_path: "/t".into(),
        permission: "420".into(),
        current_object_version: vec![],
    });
    req.set_timeout(deadline);
    client.mount(req).await.map(|r| r.into_inner())
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM in /proc status")
}

/// What an attack must end with.
#[derive(Debug, Clone, Copy)]
enum Want {
    Ok,
    /// This code, with this text in the message.
    Code(Code, &'static str),
}

struct Case {
    name: &'static str,
    socket: &'static str,
    attributes: Value,
    want: Want,
}

fn case(name: &'static str, extra: &[(&str, &str)], want: Want) -> Case {
    Case {
        name,
        socket: "vault",
        attributes: base_attributes(extra),
        want,
    }
}

fn aws_case(name: &'static str, objects: &str, extra: &[(&str, &str)], want: Want) -> Case {
    let mut attributes = base_attributes(&[("region", "us-east-1"), ("objects", objects)]);
    for (k, v) in extra {
        attributes[*k] = json!(v);
    }
    Case {
        name,
        socket: "aws",
        attributes,
        want,
    }
}

fn with_addr<'a>(addr: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("vaultAddress", addr)];
    v.extend_from_slice(extra);
    v
}

fn jmes_objects(path: &str) -> String {
    format!(
        "- objectName: db\n  objectType: secretsmanager\n  jmesPath:\n    - path: {}\n      objectAlias: a\n",
        serde_json::to_string(path).unwrap()
    )
}

fn alias_bomb() -> String {
    let mut y = String::from("- objectName: a\n  secretPath: good\n  secretKey: k\n  x: &x [");
    y.push_str(&"x,".repeat(4_000));
    y.push_str("x]\n  y: [");
    y.push_str(&"*x,".repeat(4_000));
    y.push_str("*x]\n");
    y
}

fn nested_bomb(prefix: &str) -> String {
    let mut y = format!("{prefix}  l0: &l0 [x,x,x,x,x,x,x,x,x]\n");
    for i in 1..10 {
        let p = i - 1;
        y.push_str(&format!(
            "  l{i}: &l{i} [{}]\n",
            vec![format!("*l{p}"); 9].join(",")
        ));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OpenBao: run make test"]
async fn no_class_or_server_takes_coffer_down_or_steals_a_token() {
    let bao = victim_bao();
    let collector = collector();
    let evil = evil_vault(&collector.addr);
    let closing = closing_vault();
    let dir = support::tempdir("tenant");
    let allowed = dir.path().join("tls");
    std::fs::create_dir(&allowed).unwrap();
    let fifo = allowed.join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sparse = allowed.join("sparse.pem");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let link = allowed.join("link.pem");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let allowed_arg = allowed.display().to_string();
    let coffer = Coffer::start(
        &["vault", "aws"],
        &[
            "--vault-request-timeout",
            "2s",
            "--vault-connect-timeout",
            "2s",
            "--aws-kube-api=false",
            "--aws-region",
            "us-east-1",
            "--tls-file-dir",
            &allowed_arg,
        ],
    );
    let pid = coffer.pid().unwrap();
    let vault_socket = coffer.socket("vault");
    let victim = victim_attributes(&bao.addr);
    let e = evil.addr.clone();
    let objects = |path: &str| format!("- {{objectName: a, secretPath: {path}, secretKey: k}}");
    let good = objects("good");
    let many_objects: String = (0..5_000)
        .map(|i| format!("- objectName: o{i}\n  secretPath: good\n  secretKey: k\n"))
        .collect();
    let big_yaml = format!("{good}\n#{}\n", "p".repeat(2 * 1024 * 1024));
    let paren_bomb = format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000));
    let not_bomb = format!("{}a", "!".repeat(20_000));
    let long_path = format!("a.{}", "b".repeat(100_000));
    let fifo_s = fifo.display().to_string();
    let sparse_s = sparse.display().to_string();
    let link_s = link.display().to_string();
    let bombs = alias_bomb();
    let nested = nested_bomb("- objectName: a\n  secretPath: good\n  secretKey: k\n");
    let templates_bomb = nested_bomb("- fileName: t\n  template: x\n");
    let template = |t: &str| {
        format!(
            "- fileName: out\n  template: {}\n",
            serde_json::to_string(t).unwrap()
        )
    };

    let invalid = |needle| Want::Code(Code::InvalidArgument, needle);
    let cases: Vec<Case> = vec![
        // jmesPath: parsed recursively by the jmespath crate.
        aws_case(
            "jmesPath of 20,000 nested parentheses",
            &jmes_objects(&paren_bomb),
            &[],
            invalid("too complex"),
        ),
        aws_case(
            "jmesPath of 20,000 negations",
            &jmes_objects(&not_bomb),
            &[],
            invalid("too complex"),
        ),
        aws_case(
            "jmesPath of 100 KB",
            &jmes_objects(&long_path),
            &[],
            invalid("too complex"),
        ),
        // YAML: aliases, nesting, size, counts.
        case(
            "4,000 aliases of a 4,000-item anchor",
            &with_addr(&e, &[("objects", &bombs)]),
            invalid("aliases"),
        ),
        case(
            "nested alias bomb",
            &with_addr(&e, &[("objects", &nested)]),
            invalid("aliases"),
        ),
        case(
            "recursive alias",
            &with_addr(
                &e,
                &[(
                    "objects",
                    "- &a {objectName: x, secretPath: good, secretKey: k, more: *a}",
                )],
            ),
            invalid("objects"),
        ),
        case(
            "50,000 nested flow sequences",
            &with_addr(
                &e,
                &[(
                    "objects",
                    &format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)),
                )],
            ),
            invalid("objects"),
        ),
        case(
            "alias bomb in templates",
            &with_addr(&e, &[("objects", &good), ("templates", &templates_bomb)]),
            invalid("aliases"),
        ),
        aws_case(
            "alias bomb in aws objects",
            &nested_bomb("- objectName: db\n  objectType: secretsmanager\n"),
            &[],
            invalid("aliases"),
        ),
        case(
            "objects parameter of 2 MiB",
            &with_addr(&e, &[("objects", &big_yaml)]),
            invalid("limit"),
        ),
        case(
            "5,000 objects",
            &with_addr(&e, &[("objects", &many_objects)]),
            invalid("limit"),
        ),
        // Templates: memory, time, and what errors may quote.
        case(
            "template allocating 90 MB at once",
            &with_addr(
                &e,
                &[
                    ("objects", &good),
                    ("templates", &template("{{ 'x' * 90000000 }}")),
                ],
            ),
            invalid("template"),
        ),
        case(
            "template doubling a string",
            &with_addr(
                &e,
                &[
                    ("objects", &good),
                    (
                        "templates",
                        &template(
                            "{% set s = namespace(v='x') %}{% for i in range(60) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}",
                        ),
                    ),
                ],
            ),
            invalid("template"),
        ),
        case(
            "template looping 10^10 times",
            &with_addr(
                &e,
                &[
                    ("objects", &good),
                    (
                        "templates",
                        &template(
                            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                        ),
                    ),
                ],
            ),
            invalid("template"),
        ),
        case(
            "format filter on a secret",
            &with_addr(
                &e,
                &[
                    ("objects", &objects("fmt")),
                    ("templates", &template("{{ (a ~ '') | format(1) }}")),
                ],
            ),
            invalid("format filter"),
        ),
        // Connection parameters the HTTP client cannot take.
        case(
            "vaultAddress with a space",
            &[("vaultAddress", "http://a b"), ("objects", &good)],
            invalid("vaultAddress"),
        ),
        case(
            "vaultAddress with credentials",
            &[
                ("vaultAddress", "http://u:p@127.0.0.1:1"),
                ("objects", &good),
            ],
            invalid("vaultAddress"),
        ),
        case(
            "vaultNamespace with a newline",
            &with_addr(
                &e,
                &[("vaultNamespace", "a\nX-Evil: 1"), ("objects", &good)],
            ),
            invalid("vaultNamespace"),
        ),
        case(
            "vaultNamespace with DEL",
            &with_addr(&e, &[("vaultNamespace", "a\u{7f}"), ("objects", &good)]),
            invalid("vaultNamespace"),
        ),
        // Files a class names.
        case(
            "vaultCACertPath /dev/urandom",
            &with_addr(
                &e,
                &[("vaultCACertPath", "/dev/urandom"), ("objects", &good)],
            ),
            invalid("--tls-file-dir"),
        ),
        case(
            "vaultCACertPath /dev/zero",
            &with_addr(&e, &[("vaultCACertPath", "/dev/zero"), ("objects", &good)]),
            invalid("--tls-file-dir"),
        ),
        case(
            "vaultCADirectory /dev",
            &with_addr(&e, &[("vaultCADirectory", "/dev"), ("objects", &good)]),
            invalid("--tls-file-dir"),
        ),
        case(
            "vaultCACertPath a FIFO",
            &with_addr(&e, &[("vaultCACertPath", &fifo_s), ("objects", &good)]),
            invalid("not a regular file"),
        ),
        case(
            "vaultCACertPath a link to /dev/zero",
            &with_addr(&e, &[("vaultCACertPath", &link_s), ("objects", &good)]),
            invalid("--tls-file-dir"),
        ),
        case(
            "client key from /proc/self/environ",
            &with_addr(
                &e,
                &[
                    ("vaultTLSClientCertPath", "/proc/self/environ"),
                    ("vaultTLSClientKeyPath", "/proc/self/environ"),
                    ("objects", &good),
                ],
            ),
            invalid("--tls-file-dir"),
        ),
        case(
            "vaultCACertPath a 2 GiB sparse file",
            &with_addr(&e, &[("vaultCACertPath", &sparse_s), ("objects", &good)]),
            invalid("above the limit"),
        ),
        // Hostile servers.
        case(
            "600 MB login answer",
            &with_addr(&e, &[("vaultAuthMountPath", "big"), ("objects", &good)]),
            Want::Code(Code::ResourceExhausted, "larger than"),
        ),
        case(
            "600 MB login answer without a length",
            &with_addr(&e, &[("vaultAuthMountPath", "endless"), ("objects", &good)]),
            Want::Code(Code::ResourceExhausted, "larger than"),
        ),
        case(
            "600 MB read answer",
            &with_addr(&e, &[("objects", &objects("big"))]),
            Want::Code(Code::ResourceExhausted, "larger than"),
        ),
        case(
            "login redirected to another host",
            &with_addr(
                &e,
                &[("vaultAuthMountPath", "redirect"), ("objects", &good)],
            ),
            Want::Code(Code::Internal, "307"),
        ),
        case(
            "read redirected to another host",
            &with_addr(&e, &[("objects", &objects("redirect"))]),
            Want::Code(Code::Internal, "307"),
        ),
        case(
            "login lease of 2^64-1 seconds",
            &with_addr(&e, &[("vaultAuthMountPath", "ttlmax"), ("objects", &good)]),
            Want::Ok,
        ),
        case(
            "lease of 2^64-1 seconds",
            &with_addr(&e, &[("objects", &objects("lease"))]),
            Want::Ok,
        ),
        case(
            "certificate expiring in 292 billion years",
            &with_addr(
                &e,
                &[(
                    "objects",
                    "- {objectName: c, secretPath: pki/issue/web, secretKey: certificate, method: PUT, secretArgs: {common_name: x}}",
                )],
            ),
            Want::Ok,
        ),
        case(
            "login answer dripping a byte at a time",
            &with_addr(&e, &[("vaultAuthMountPath", "drip"), ("objects", &good)]),
            Want::Code(Code::DeadlineExceeded, "in time"),
        ),
        case(
            "login never answered",
            &with_addr(&e, &[("vaultAuthMountPath", "stall"), ("objects", &good)]),
            Want::Code(Code::DeadlineExceeded, "in time"),
        ),
        case(
            "login answered with TLS bytes",
            &with_addr(&e, &[("vaultAuthMountPath", "garbage"), ("objects", &good)]),
            Want::Code(Code::Unavailable, "login"),
        ),
        case(
            "login answer with a 1 MiB header",
            &with_addr(&e, &[("vaultAuthMountPath", "header"), ("objects", &good)]),
            Want::Code(Code::Unavailable, "login"),
        ),
        case(
            "login answer nested 100,000 deep",
            &with_addr(&e, &[("vaultAuthMountPath", "deep"), ("objects", &good)]),
            Want::Code(Code::Internal, "login"),
        ),
        case(
            "read answer nested 100,000 deep",
            &with_addr(&e, &[("objects", &objects("deep"))]),
            Want::Code(Code::Internal, "object"),
        ),
        case(
            "login answer cut short",
            &with_addr(
                &e,
                &[("vaultAuthMountPath", "truncated"), ("objects", &good)],
            ),
            Want::Code(Code::Unavailable, "login"),
        ),
        case(
            "login refused with 50,000 errors",
            &with_addr(&e, &[("vaultAuthMountPath", "errors"), ("objects", &good)]),
            Want::Code(Code::PermissionDenied, "truncated"),
        ),
        // Hostile connection behaviour.
        case(
            "server closing pooled keep-alive connections",
            &[("vaultAddress", &closing.addr), ("objects", &good)],
            Want::Ok,
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    for c in cases {
        let socket = coffer.socket(c.socket);
        let attack = tokio::spawn({
            let attributes = c.attributes.clone();
            async move { mount(&socket, &attributes, Duration::from_secs(30)).await }
        });
        // Meanwhile, and again afterwards, another tenant mounts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        check_victim(&vault_socket, &victim, c.name, "during").await;
        let result = tokio::time::timeout(Duration::from_secs(40), attack)
            .await
            .unwrap_or_else(|_| panic!("{}: no answer", c.name))
            .unwrap();
        match (c.want, &result) {
            (Want::Ok, Ok(_)) => {}
            (Want::Code(code, needle), Err(status)) => {
                assert_eq!(status.code(), code, "{}: {}", c.name, status.message());
                assert!(
                    status.message().contains(needle),
                    "{}: {:?} should contain {needle:?}",
                    c.name,
                    status.message()
                );
                assert!(
                    !status.message().contains("eyJ"),
                    "{}: token in the message",
                    c.name
                );
                assert!(
                    !status.message().contains("Qt{K"),
                    "{}: secret in the message",
                    c.name
                );
                assert!(
                    status.message().len() <= 8192,
                    "{}: message of {} bytes",
                    c.name,
                    status.message().len()
                );
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        }
        assert!(
            !coffer.has_exited(),
            "{}: coffer exited\n{}",
            c.name,
            coffer.log_text()
        );
        let peak = peak_rss(pid);
        assert!(peak < MAX_PEAK, "{}: peak RSS {} MiB", c.name, peak >> 20);
        check_victim(&vault_socket, &victim, c.name, "after").await;
        assert!(
            collector.requests().is_empty(),
            "{}: a request reached another host",
            c.name
        );
    }

    eprintln!("peak RSS after every attack: {} MiB", peak_rss(pid) >> 20);
    // The pooled connection really was closed under coffer (and retried).
    assert!(
        closing.requests().len() >= 3,
        "{:?}",
        closing.requests().len()
    );
    let log = coffer.log_text();
    for needle in ["eyJ", "hvs.evil", VICTIM_SECRET, "s3cr%Qt"] {
        assert!(!log.contains(needle), "{needle} in the log");
    }
    assert!(!log.contains("panicked"), "{log}");
}

async fn check_victim(socket: &Path, victim: &Value, case: &str, when: &str) {
    match mount(socket, victim, Duration::from_secs(2)).await {
        Ok(resp) => {
            assert_eq!(resp.files.len(), 1, "{case} ({when})");
            assert_eq!(
                resp.files[0].contents,
                VICTIM_SECRET.as_bytes(),
                "{case} ({when})"
            );
        }
        Err(s) => panic!(
            "{case}: the other tenant's mount {when} failed: {:?} {}",
            s.code(),
            s.message()
        ),
    }
}

/// Versions are an HMAC over the object's definition and content; a class
/// pointing at a server it controls must not be able to reproduce (and so
/// test guesses against) the version of the same path on another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the coffer binary: run make test"]
async fn the_same_secret_from_another_server_has_another_version() {
    let collector = collector();
    let a = evil_vault(&collector.addr);
    let b = evil_vault(&collector.addr);
    let coffer = Coffer::start(&["vault"], &[]);
    let socket = coffer.socket("vault");
    let objects = "- {objectName: a, secretPath: good, secretKey: k}";
    let version = |addr: &str, ns: Option<&str>| {
        let mut extra = vec![("vaultAddress", addr), ("objects", objects)];
        if let Some(ns) = ns {
            extra.push(("vaultNamespace", ns));
        }
        base_attributes(&extra)
    };
    let mut seen = Vec::new();
    for attrs in [
        version(&a.addr, None),
        version(&b.addr, None),
        version(&a.addr, Some("team")),
    ] {
        let resp = mount(&socket, &attrs, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(resp.files[0].contents, b"v");
        seen.push(resp.object_version[0].version.clone());
    }
    assert_ne!(seen[0], seen[1], "address not bound");
    assert_ne!(seen[0], seen[2], "namespace not bound");
    let again = mount(&socket, &version(&a.addr, None), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(again.object_version[0].version, seen[0]);
}

/// A second `coffer serve` pointed at the same socket directory must not
/// take over, nor delete, the live provider's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the coffer binary: run make test"]
async fn a_second_coffer_on_the_same_sockets_neither_replaces_nor_removes_them() {
    let first = Coffer::start(&["vault"], &[]);
    let socket = first.socket("vault");
    let health = format!("127.0.0.1:{}", support::free_port());
    let mut second = support::coffer_cmd()
        .args([
            "serve",
            "--provider",
            "vault",
            "--health-addr",
            &health,
            "--socket-dir",
        ])
        .arg(&first.socket_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = support::proc::wait_timeout(&mut second, Duration::from_secs(20)) else {
        support::proc::kill_and_reap(&mut second);
        panic!("the second coffer did not exit");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(socket.exists());
    assert_eq!(support::python_version(&socket, "localhost")["ok"], true);
    assert!(!first.has_exited());
}

/// Clients that give up mid-mount (kubelet's deadline, a restarted driver)
/// leave no mount counted in flight, and idle connections cost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the coffer binary: run make test"]
async fn abandoned_mounts_and_idle_connections_leave_nothing_behind() {
    let collector = collector();
    let evil = evil_vault(&collector.addr);
    let coffer = Coffer::start(&["vault"], &["--vault-request-timeout", "10s"]);
    let socket = coffer.socket("vault");
    let stalled = base_attributes(&[
        ("vaultAddress", &evil.addr),
        ("vaultAuthMountPath", "stall"),
        (
            "objects",
            "- {objectName: a, secretPath: good, secretKey: k}",
        ),
    ]);
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (socket, stalled, started) = (socket.clone(), stalled.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            mount(&socket, &stalled, Duration::from_secs(60)).await
        }));
    }
    let in_flight = |coffer: &Coffer| -> f64 {
        coffer
            .health_get("/metrics")
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("coffer_mounts_in_flight "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let all_in = support::wait_for(Duration::from_secs(20), || {
        (in_flight(&coffer) >= 20.0).then_some(())
    });
    assert!(all_in.is_some(), "in flight: {}", in_flight(&coffer));
    for t in &tasks {
        t.abort();
    }
    let drained = support::wait_for(Duration::from_secs(20), || {
        (in_flight(&coffer) == 0.0).then_some(())
    });
    assert!(
        drained.is_some(),
        "in flight after cancel: {}",
        in_flight(&coffer)
    );
    // 500 connections that never send a request.
    let idle: Vec<_> = (0..500)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
        .collect();
    assert_eq!(support::python_version(&socket, "localhost")["ok"], true);
    drop(idle);
    assert!(!coffer.has_exited());
    assert!(collector.requests().is_empty());
}

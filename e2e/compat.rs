//! `make compat` and `make bench-peers`: coffer side by side with the real
//! providers it replaces, each behind the driver's own provider client
//! (`e2e/driverclient`, driver v1.6.0), against one real OpenBao and one
//! real moto, with the Kubernetes API played by `e2e/kubestandin`.
//!
//! * `compat`: every example SecretProviderClass for the vault, openbao and
//!   aws providers, and a table that exercises each parameter and object
//!   field of each dialect, mounted through coffer and through the peer.
//!   Files are compared byte for byte (paths, contents, modes), refusals by
//!   class (both refuse), object versions where the peer's carry meaning
//!   (the aws provider's VersionId / parameter version). Writes
//!   docs/compatibility.md (COMPAT_OUT overrides) and exits non-zero on any
//!   difference that is not listed, with its reason, in [`Case::known`].
//! * `bench`: the same warm mount through each provider: latency p50/p99,
//!   mounts/s at 16 and 64 callers, provider CPU per mount, RSS idle and
//!   after BENCH_PEER_MOUNTS (default 10,000) mounts, backend requests per
//!   mount (OpenBao's audit log, moto's request log). Writes the
//!   side-by-side section of docs/benchmarks.md.
//!
//! The peers are not built here. `e2e/setup-peers.sh` installs them with
//! `go install` from the Go module proxy at the pinned versions; where the
//! proxy does not serve them, point COFFER_PEER_VAULT_BIN,
//! COFFER_PEER_OPENBAO_BIN and COFFER_PEER_AWS_BIN at binaries of those
//! versions. Each peer runs as root in a private mount namespace
//! (`unshare -m`) where /run/secrets/kubernetes.io/serviceaccount holds a
//! token and namespace for client-go's in-cluster config, and (aws) where
//! /etc/hosts sends the regional STS names to 127.0.0.1, where kubestandin
//! fronts moto with TLS: the aws provider's STS client has a fixed https
//! endpoint. Nothing leaves 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::bao::Bao;
use support::driver::{self, KubeStandin, Request};
use support::moto::Moto;
use support::proc::{Reaper, kill_and_reap, open_log, scrub_env, tail};
use support::{Coffer, jwt, wait_for};

const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-0";
const POD_UID: &str = "5b0f2c1e-8d7a-4c3b-9e6f-1a2b3c4d5e6f";
const NODE: &str = "node-1";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/shop-web";
const IRSA: &str = "sts.amazonaws.com";
const POD_IDENTITY: &str = "pods.eks.amazonaws.com";
/// The driver release whose client drives every comparison.
const DRIVER: &str = "v1.6.0";
/// Regions the examples and the table use (STS names fronted for the aws peer).
const REGIONS: &[&str] = &["us-west-2", "us-east-1", "us-east-2", "eu-west-1"];

/// The peers and the versions `e2e/setup-peers.sh` pins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Vault,
    OpenBao,
    Aws,
}

impl Peer {
    const ALL: [Peer; 3] = [Peer::Vault, Peer::OpenBao, Peer::Aws];

    /// The peers to run: COMPAT_PEERS (e.g. `vault,aws`), default all.
    fn selected() -> Vec<Peer> {
        let want = std::env::var("COMPAT_PEERS").unwrap_or_default();
        Peer::ALL
            .into_iter()
            .filter(|p| want.is_empty() || want.split(',').any(|w| w.trim() == p.socket()))
            .collect()
    }

    fn socket(self) -> &'static str {
        match self {
            Peer::Vault => "vault",
            Peer::OpenBao => "openbao",
            Peer::Aws => "aws",
        }
    }

    fn project(self) -> &'static str {
        match self {
            Peer::Vault => "hashicorp/vault-csi-provider",
            Peer::OpenBao => "openbao/openbao-csi-provider",
            Peer::Aws => "aws/secrets-store-csi-driver-provider-aws",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Peer::Vault => "v1.7.4",
            Peer::OpenBao => "v2.0.2",
            Peer::Aws => "v3.1.1",
        }
    }

    fn env_key(self) -> &'static str {
        match self {
            Peer::Vault => "COFFER_PEER_VAULT_BIN",
            Peer::OpenBao => "COFFER_PEER_OPENBAO_BIN",
            Peer::Aws => "COFFER_PEER_AWS_BIN",
        }
    }

    /// The binary: COFFER_PEER_*_BIN, else what e2e/setup-peers.sh installed.
    fn bin(self) -> Result<PathBuf, String> {
        let p = support::tool_setting(self.env_key())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                support::manifest_dir()
                    .join("e2e/.tools/peers")
                    .join(self.socket())
            });
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{} {} not found at {} (run `bash e2e/setup-peers.sh`, or set {})",
                self.project(),
                self.version(),
                p.display(),
                self.env_key()
            ))
        }
    }
}

/// A peer provider process in its own mount namespace.
struct PeerProc {
    child: Option<Child>,
    _reaper: Reaper,
    dir: tempfile::TempDir,
    socket_dir: PathBuf,
    log_path: PathBuf,
}

impl PeerProc {
    fn start(peer: Peer, kube: &KubeStandin, moto: &Moto) -> PeerProc {
        let bin = peer.bin().unwrap_or_else(|e| panic!("{e}"));
        let dir = support::tempdir(&format!("peer-{}", peer.socket()));
        let socket_dir = dir.path().join("sockets");
        std::fs::create_dir(&socket_dir).unwrap();
        let sa = dir.path().join("serviceaccount");
        std::fs::create_dir(&sa).unwrap();
        std::fs::write(sa.join("token"), "standin-token").unwrap();
        std::fs::write(sa.join("namespace"), "csi").unwrap();
        std::fs::copy(kube.ca_file(), sa.join("ca.crt")).unwrap();
        let hosts = dir.path().join("hosts");
        let mut text = String::from("127.0.0.1 localhost\n");
        for r in REGIONS {
            let _ = writeln!(text, "127.0.0.1 sts.{r}.amazonaws.com");
        }
        std::fs::write(&hosts, text).unwrap();
        let log_path = dir.path().join("peer.log");
        let log = open_log(&log_path);
        let log_err = log.try_clone().unwrap();
        let health = format!("127.0.0.1:{}", support::free_port());
        let args: Vec<String> = match peer {
            Peer::Vault => vec![
                format!("-endpoint={}/vault.sock", socket_dir.display()),
                format!("-health-addr={health}"),
                "-log-level=warn".into(),
            ],
            Peer::OpenBao => vec![
                format!("-endpoint={}/openbao.sock", socket_dir.display()),
                format!("-health-addr={health}"),
            ],
            Peer::Aws => vec![
                format!("-provider-volume={}", socket_dir.display()),
                "-driver-writes-secrets=true".into(),
            ],
        };
        let (host, port) = kube.addr.split_once(':').unwrap();
        let script = r#"set -e
mount -t tmpfs -o size=1m,mode=0755 tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$1/token" "$1/namespace" "$1/ca.crt" /run/secrets/kubernetes.io/serviceaccount/
mount --bind "$2" /etc/hosts
shift 2
exec "$@""#;
        let mut cmd = Command::new("unshare");
        scrub_env(&mut cmd);
        cmd.args(["-m", "--propagation", "private", "--", "sh", "-c", script])
            .arg("peer-launch")
            .arg(&sa)
            .arg(&hosts)
            .arg(&bin)
            .args(&args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port)
            .env("SSL_CERT_FILE", kube.ca_file())
            .env("AWS_ENDPOINT_URL", &moto.addr)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn unshare for {}: {e}", peer.project()));
        let reaper = Reaper::watch(child.id());
        let mut p = PeerProc {
            child: Some(child),
            _reaper: reaper,
            dir,
            socket_dir,
            log_path,
        };
        let sock = p.socket_dir.join(format!("{}.sock", peer.socket()));
        let up = wait_for(Duration::from_secs(30), || {
            if let Some(c) = p.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return Some(false);
            }
            sock.exists().then_some(true)
        });
        if up != Some(true) {
            panic!(
                "{} did not open {}; log:\n{}",
                peer.project(),
                sock.display(),
                tail(&p.log_text(), 40)
            );
        }
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if support::proc::wait_timeout(&mut c, Duration::from_secs(5)).is_none() {
                kill_and_reap(&mut c);
            }
        }
        let _ = &self.dir;
    }
}

// ---------------------------------------------------------------------------
// The shared world: OpenBao, moto, the Kubernetes API, coffer.

struct World {
    bao: Bao,
    moto: Moto,
    kube: KubeStandin,
    coffer: Coffer,
    /// ARNs of moto secrets by name.
    arns: BTreeMap<String, String>,
    tokens: String,
}

fn world(coffer_extra: &[&str]) -> World {
    // A file audit device (declarative: OpenBao 2 refuses it over the API)
    // so the bench can count the requests each provider makes.
    let bao = Bao::start_with_config(
        "audit \"file\" \"compat\" {\n  options {\n    file_path = \"{dir}/audit.log\"\n  }\n}\n",
    );
    bao.enable_auth("jwt", "jwt");
    bao.configure_jwt("jwt", jwt::PUBLIC_KEY_PEM);
    // Both auth mount names the examples and defaults use, as jwt methods
    // trusting the test ServiceAccount key: the login call is the same.
    bao.enable_auth("kubernetes", "jwt");
    bao.configure_jwt("kubernetes", jwt::PUBLIC_KEY_PEM);
    bao.put_policy(
        "read-all",
        r#"path "*" { capabilities = ["read", "create", "update"] }"#,
    );
    // Every role accepts both providers' default audiences, so a mount's
    // success depends on the provider, not on which role name a case
    // picked; web-aud only the audience its case names.
    for mount in ["jwt", "kubernetes"] {
        for role in ["web", "web-bao", "web-aud", "api", "web-pki"] {
            let audiences = if role == "web-aud" {
                json!(["custom-aud"])
            } else {
                json!(["vault", "openbao"])
            };
            bao.write(
                &format!("auth/{mount}/role/{role}"),
                json!({
                    "role_type": "jwt",
                    "user_claim": "sub",
                    "bound_subject": jwt::subject(NS, SA),
                    "bound_audiences": audiences,
                    "token_ttl": "1h",
                    "token_policies": ["read-all"],
                }),
            );
        }
    }
    seed_bao(&bao);

    let moto = Moto::start();
    let arns = seed_moto(&moto);

    let mut fronts: Vec<String> = Vec::new();
    for r in REGIONS {
        fronts.push("-front".into());
        fronts.push(format!("sts.{r}.amazonaws.com={}", moto.addr));
    }
    let front_refs: Vec<&str> = fronts.iter().map(String::as_str).collect();
    let kube = KubeStandin::start(
        &json!({
            "serviceAccounts": [{"namespace": NS, "name": SA, "annotations": {"eks.amazonaws.com/role-arn": ROLE_ARN}}],
            "pods": [{"namespace": NS, "name": POD, "uid": POD_UID, "nodeName": NODE}],
            "nodes": [{"name": NODE, "labels": {"topology.kubernetes.io/region": "us-west-2"}}],
        }),
        &front_refs,
    );
    let kubeconfig = kube.kubeconfig();
    let mut args = vec![
        "--aws-endpoint-url",
        moto.addr.as_str(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
    ];
    args.extend_from_slice(coffer_extra);
    let coffer = Coffer::start(&["vault", "openbao", "aws"], &args);

    let tokens = jwt::tokens_attribute(&[
        ("vault", &jwt::sa_token(NS, SA, POD, POD_UID, "vault", 7200)),
        (
            "openbao",
            &jwt::sa_token(NS, SA, POD, POD_UID, "openbao", 7200),
        ),
        (
            "custom-aud",
            &jwt::sa_token(NS, SA, POD, POD_UID, "custom-aud", 7200),
        ),
        (IRSA, &jwt::sa_token(NS, SA, POD, POD_UID, IRSA, 7200)),
        (
            POD_IDENTITY,
            &jwt::sa_token(NS, SA, POD, POD_UID, POD_IDENTITY, 7200),
        ),
    ]);
    World {
        bao,
        moto,
        kube,
        coffer,
        arns,
        tokens,
    }
}

fn seed_bao(bao: &Bao) {
    bao.kv_put(
        "secret/data/app/cfg",
        json!({"str": "s3cr3t-<&>", "num": 10, "float": 1.5, "obj": {"b": "hop", "a": 1}, "arr": [6, "stilton", true], "nil": null, "b64": "aGVsbG8=", "hexv": "68656c6c6f", "utf": "héllo ☃", "bad64": "%%%"}),
    );
    bao.kv_put("secret/data/app/versioned", json!({"v": "one"}));
    bao.kv_put("secret/data/app/versioned", json!({"v": "two"}));
    // The examples' paths.
    bao.kv_put(
        "secret/data/web/db",
        json!({"username": "web-user", "password": "web-pass-1"}),
    );
    bao.kv_put(
        "secret/data/api/config",
        json!({"token": "api-token-1", "settings": "{\"debug\":false}"}),
    );
    bao.enable_secrets("kv1", "kv", json!({"version": "1"}));
    bao.write("kv1/app", json!({"user": "u1", "data": "not-a-map"}));
    bao.enable_secrets("pki", "pki", json!({}));
    bao.write("sys/mounts/pki/tune", json!({"max_lease_ttl": "87600h"}));
    bao.write(
        "pki/root/generate/internal",
        json!({"common_name": "compat-ca", "ttl": "8760h"}),
    );
    bao.write(
        "pki/roles/web",
        json!({"allowed_domains": ["example.com", "svc.cluster.local"], "allow_subdomains": true, "max_ttl": "72h", "ttl": "1h"}),
    );
}

const DB_JSON: &str = r#"{"username":"shop","password":"pw-Zq8v1LrT0kE7","port":5432,"tls":true,"nested":{"k":"v"},"connection-string":"postgres://db/shop"}"#;
const CERT: &[u8] = b"\x30\x82\x01\x0a\x00\xff\xfe-binary-cert";

fn seed_moto(moto: &Moto) -> BTreeMap<String, String> {
    let mut arns = BTreeMap::new();
    for region in ["us-west-2", "us-east-2"] {
        arns.insert(
            format!("{region}:shop/db"),
            moto.create_secret(region, "shop/db", DB_JSON),
        );
        moto.put_secret_value(region, "shop/db", DB_JSON);
        arns.insert(
            format!("{region}:shop/cert"),
            moto.create_binary_secret(region, "shop/cert", CERT),
        );
        moto.create_secret(region, "shop/plain", "just text");
        moto.put_parameter(region, "/shop/api-key", "ak-SSM-9f8e7d6c", "SecureString");
        moto.put_parameter(region, "/shop/flags", "beta=on,dark=off", "StringList");
        moto.put_parameter(region, "/shop/json", DB_JSON, "String");
        for v in ["one", "two", "three"] {
            moto.put_parameter(region, "/shop/multi", v, "String");
        }
        moto.label_parameter(region, "/shop/multi", 2, "stable");
    }
    // The examples' names.
    moto.create_secret(
        "us-west-2",
        "demo/db",
        r#"{"username":"demo","port":"5432"}"#,
    );
    moto.put_parameter("us-west-2", "/demo/api-key", "demo-key", "SecureString");
    moto.create_secret(
        "us-west-2",
        "shop/tls",
        "not reachable by the example's fixed ARN",
    );
    moto.create_secret(
        "eu-west-1",
        "prod/billing/db",
        r#"{"username":"billing","connection-string":"postgres://billing"}"#,
    );
    for (name, v) in [
        ("/search/prod/endpoint", "https://search"),
        ("/search/prod/api-key", "search-key"),
    ] {
        moto.put_parameter("us-east-1", name, v, "String");
    }
    for v in ["{}", "{\"a\":1}", "{\"a\":2}"] {
        moto.put_parameter("us-east-1", "/search/prod/feature-flags", v, "String");
    }
    arns
}

// ---------------------------------------------------------------------------
// Cases.

struct Case {
    id: String,
    peer: Peer,
    what: String,
    parameters: Value,
    /// Contents are issued anew on every call (PKI): compare paths and modes.
    dynamic: bool,
    /// A difference we know of, and why it stays.
    known: Option<&'static str>,
}

fn vault_params(w: &World, peer: Peer, extra: &[(&str, &str)], objects: &str) -> Value {
    let mut p = serde_json::Map::new();
    let (addr_key, role, mount_key) = match peer {
        Peer::OpenBao => ("baoAddress", "web-bao", "baoAuthMountPath"),
        _ => ("vaultAddress", "web", "vaultAuthMountPath"),
    };
    p.insert(addr_key.into(), w.bao.addr.clone().into());
    p.insert("roleName".into(), role.into());
    p.insert(mount_key.into(), "jwt".into());
    for (k, v) in extra {
        if v.is_empty() {
            p.remove(*k);
        } else {
            p.insert((*k).into(), (*v).into());
        }
    }
    p.insert("objects".into(), objects.into());
    Value::Object(p)
}

/// (id, what, parameters set (empty value: removed), objects YAML)
type VaultRow = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);
/// (id, what, parameters set (empty value: removed), objects YAML)
type AwsRow = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    String,
);

fn table(w: &World) -> Vec<Case> {
    let mut cases = Vec::new();
    // The Vault family: the same table through vault and openbao.
    let vault_rows: &[VaultRow] = &[
        (
            "kv2-keys",
            "KV v2 keys: string, number, float, object, array, null, unicode",
            &[],
            "- {objectName: str, secretPath: secret/data/app/cfg, secretKey: str}\n- {objectName: num, secretPath: secret/data/app/cfg, secretKey: num}\n- {objectName: float, secretPath: secret/data/app/cfg, secretKey: float}\n- {objectName: obj, secretPath: secret/data/app/cfg, secretKey: obj}\n- {objectName: arr, secretPath: secret/data/app/cfg, secretKey: arr}\n- {objectName: nil, secretPath: secret/data/app/cfg, secretKey: nil}\n- {objectName: utf, secretPath: secret/data/app/cfg, secretKey: utf}\n",
        ),
        (
            "kv2-whole",
            "no secretKey: the whole response as JSON",
            &[],
            "- {objectName: whole, secretPath: secret/data/app/cfg}\n",
        ),
        (
            "path-forms",
            "secretPath with /v1/, v1/ and / prefixes",
            &[],
            "- {objectName: a, secretPath: /v1/secret/data/app/cfg, secretKey: str}\n- {objectName: b, secretPath: v1/secret/data/app/cfg, secretKey: str}\n- {objectName: c, secretPath: /secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "kv2-version",
            "?version=N query on a KV v2 path",
            &[],
            "- {objectName: old, secretPath: 'secret/data/app/versioned?version=1', secretKey: v}\n- {objectName: new, secretPath: secret/data/app/versioned, secretKey: v}\n",
        ),
        (
            "kv1",
            "KV v1 keys and whole secret, a key named data",
            &[],
            "- {objectName: user, secretPath: kv1/app, secretKey: user}\n- {objectName: data, secretPath: kv1/app, secretKey: data}\n- {objectName: whole, secretPath: kv1/app}\n",
        ),
        (
            "encoding",
            "encoding base64, hex, utf-8 (any case)",
            &[],
            "- {objectName: b64, secretPath: secret/data/app/cfg, secretKey: b64, encoding: base64}\n- {objectName: hex, secretPath: secret/data/app/cfg, secretKey: hexv, encoding: HEX}\n- {objectName: utf8, secretPath: secret/data/app/cfg, secretKey: str, encoding: utf-8}\n",
        ),
        (
            "file-permission",
            "filePermission (YAML octal and decimal)",
            &[],
            "- {objectName: p600, secretPath: secret/data/app/cfg, secretKey: str, filePermission: 0600}\n- {objectName: p400, secretPath: secret/data/app/cfg, secretKey: str, filePermission: 256}\n",
        ),
        (
            "nested-names",
            "objectName with a directory",
            &[],
            "- {objectName: dir/file, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "pki",
            "method PUT with secretArgs (PKI issue)",
            &[],
            "- {objectName: tls.crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com}, secretKey: certificate}\n",
        ),
        (
            "audience",
            "audience parameter picks the token",
            &[("audience", "custom-aud"), ("roleName", "web-aud")],
            "- {objectName: str, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "k8s-mount-path",
            "vaultKubernetesMountPath (the older name of the auth mount)",
            &[
                ("vaultAuthMountPath", ""),
                ("baoAuthMountPath", ""),
                ("vaultKubernetesMountPath", "jwt"),
            ],
            "- {objectName: str, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "default-mount",
            "no auth mount parameter: the default mount `kubernetes`",
            &[("vaultAuthMountPath", ""), ("baoAuthMountPath", "")],
            "- {objectName: str, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "err-missing-key",
            "refused: secretKey not in the secret",
            &[],
            "- {objectName: x, secretPath: secret/data/app/cfg, secretKey: nope}\n",
        ),
        (
            "err-missing-path",
            "refused: secret path does not exist",
            &[],
            "- {objectName: x, secretPath: secret/data/app/missing, secretKey: str}\n",
        ),
        (
            "err-bad-encoding",
            "refused: value is not valid base64",
            &[],
            "- {objectName: x, secretPath: secret/data/app/cfg, secretKey: bad64, encoding: base64}\n",
        ),
        (
            "err-unknown-encoding",
            "refused: unknown encoding",
            &[],
            "- {objectName: x, secretPath: secret/data/app/cfg, secretKey: str, encoding: rot13}\n",
        ),
        (
            "err-bad-role",
            "refused: login with a role that does not exist",
            &[("roleName", "nobody")],
            "- {objectName: x, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "err-no-role",
            "refused: no roleName",
            &[("roleName", "")],
            "- {objectName: x, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "err-bad-yaml",
            "refused: objects is not YAML",
            &[],
            "- {objectName: x, secretPath: [\n",
        ),
        (
            "err-traversal",
            "refused: objectName escapes the volume",
            &[],
            "- {objectName: ../escape, secretPath: secret/data/app/cfg, secretKey: str}\n",
        ),
        (
            "err-duplicate",
            "the same objectName twice",
            &[],
            "- {objectName: x, secretPath: secret/data/app/cfg, secretKey: str}\n- {objectName: x, secretPath: secret/data/app/cfg, secretKey: num}\n",
        ),
        ("err-no-objects", "an empty objects list", &[], "[]\n"),
    ];
    for peer in [Peer::Vault, Peer::OpenBao] {
        for (id, what, extra, objects) in vault_rows {
            let mut extra: Vec<(&str, &str)> = extra.to_vec();
            if peer == Peer::OpenBao {
                // OpenBao's own names where the row sets a name.
                for (k, v) in extra.iter_mut() {
                    if *k == "roleName" && !v.is_empty() && *v != "nobody" {
                        *v = if *v == "web-aud" {
                            "web-aud"
                        } else {
                            "web-bao"
                        };
                    }
                    if *k == "vaultKubernetesMountPath" {
                        *k = "baoKubernetesMountPath";
                    }
                }
            }
            cases.push(Case {
                id: format!("{}/{id}", peer.socket()),
                peer,
                what: (*what).into(),
                parameters: vault_params(w, peer, &extra, objects),
                dynamic: *id == "pki",
                known: None,
            });
        }
    }

    // The aws dialect.
    let arn = &w.arns["us-west-2:shop/db"];
    let cert_arn = &w.arns["us-west-2:shop/cert"];
    let aws_rows: Vec<AwsRow> = vec![
        (
            "secretsmanager",
            "Secrets Manager by name, string and binary",
            vec![],
            "- {objectName: shop/db, objectType: secretsmanager}\n- {objectName: shop/cert, objectType: secretsmanager}\n".into(),
        ),
        (
            "arn",
            "Secrets Manager by ARN (type from the ARN), with alias",
            vec![],
            format!("- {{objectName: '{arn}', objectAlias: db.json}}\n- {{objectName: '{cert_arn}', objectAlias: tls.der}}\n"),
        ),
        (
            "jmespath",
            "jmesPath string results, a quoted key, per-entry filePermission",
            vec![],
            "- objectName: shop/db\n  objectType: secretsmanager\n  filePermission: \"0600\"\n  jmesPath:\n    - {path: username, objectAlias: db-user}\n    - {path: password, objectAlias: db-pass, filePermission: \"0640\"}\n    - {path: '\"connection-string\"', objectAlias: db-url}\n".into(),
        ),
        (
            "jmespath-number",
            "jmesPath that resolves to a number",
            vec![],
            "- objectName: shop/db\n  objectType: secretsmanager\n  jmesPath:\n    - {path: port, objectAlias: db-port}\n".into(),
        ),
        (
            "jmespath-bool",
            "jmesPath that resolves to a boolean",
            vec![],
            "- objectName: shop/db\n  objectType: secretsmanager\n  jmesPath:\n    - {path: tls, objectAlias: db-tls}\n".into(),
        ),
        (
            "jmespath-object",
            "jmesPath that resolves to an object",
            vec![],
            "- objectName: shop/db\n  objectType: secretsmanager\n  jmesPath:\n    - {path: nested, objectAlias: db-nested}\n".into(),
        ),
        (
            "version-label",
            "objectVersionLabel AWSPREVIOUS",
            vec![],
            "- {objectName: shop/db, objectType: secretsmanager, objectAlias: prev, objectVersionLabel: AWSPREVIOUS}\n".into(),
        ),
        (
            "ssm",
            "SSM: SecureString, StringList, by ARN",
            vec![],
            "- {objectName: /shop/api-key, objectType: ssmparameter}\n- {objectName: 'arn:aws:ssm:us-west-2:123456789012:parameter/shop/flags', objectAlias: flags}\n".into(),
        ),
        (
            "ssm-version",
            "SSM objectVersion",
            vec![],
            "- {objectName: /shop/multi, objectType: ssmparameter, objectAlias: v1, objectVersion: \"1\"}\n".into(),
        ),
        (
            "ssm-label",
            "SSM objectVersionLabel",
            vec![],
            "- {objectName: /shop/multi, objectType: ssmparameter, objectAlias: stable, objectVersionLabel: stable}\n".into(),
        ),
        (
            "ssm-two-versions",
            "one parameter twice in a class: at version 1 and at its latest",
            vec![],
            "- {objectName: /shop/multi, objectType: ssmparameter, objectAlias: v1, objectVersion: \"1\"}\n- {objectName: /shop/multi, objectType: ssmparameter, objectAlias: latest}\n".into(),
        ),
        (
            "ssm-jmespath",
            "jmesPath on an SSM parameter",
            vec![],
            "- objectName: /shop/json\n  objectType: ssmparameter\n  jmesPath:\n    - {path: username, objectAlias: ssm-user}\n".into(),
        ),
        (
            "path-translation-default",
            "pathTranslation unset: / becomes _",
            vec![],
            "- {objectName: /shop/api-key, objectType: ssmparameter}\n".into(),
        ),
        (
            "path-translation-dash",
            "pathTranslation -",
            vec![("pathTranslation", "-")],
            "- {objectName: /shop/api-key, objectType: ssmparameter}\n".into(),
        ),
        (
            "path-translation-false",
            "pathTranslation False: the path kept",
            vec![("pathTranslation", "False")],
            "- {objectName: shop/db, objectType: secretsmanager}\n".into(),
        ),
        (
            "file-permission",
            "filePermission on secret and parameter",
            vec![],
            "- {objectName: shop/db, objectType: secretsmanager, filePermission: \"0400\"}\n- {objectName: /shop/flags, objectType: ssmparameter, filePermission: \"0640\"}\n".into(),
        ),
        (
            "region-from-node",
            "no region: the node's topology label",
            vec![("region", "")],
            "- {objectName: shop/plain, objectType: secretsmanager}\n".into(),
        ),
        (
            "failover",
            "failoverRegion with failoverObject",
            vec![("failoverRegion", "us-east-2")],
            "- objectName: shop/plain\n  objectType: secretsmanager\n  objectAlias: plain\n  failoverObject: {objectName: shop/plain}\n".into(),
        ),
        (
            "err-failover-no-alias",
            "refused: failoverObject without objectAlias",
            vec![("failoverRegion", "us-east-2")],
            "- objectName: shop/plain\n  objectType: secretsmanager\n  failoverObject: {objectName: shop/plain}\n".into(),
        ),
        (
            "err-missing-secret",
            "refused: secret does not exist",
            vec![],
            "- {objectName: shop/none, objectType: secretsmanager}\n".into(),
        ),
        (
            "err-missing-param",
            "refused: parameter does not exist",
            vec![],
            "- {objectName: /shop/none, objectType: ssmparameter}\n".into(),
        ),
        (
            "err-jmespath-missing",
            "refused: jmesPath names no field",
            vec![],
            "- objectName: shop/db\n  objectType: secretsmanager\n  jmesPath:\n    - {path: nope, objectAlias: nope}\n".into(),
        ),
        (
            "err-jmespath-not-json",
            "refused: jmesPath on a value that is not JSON",
            vec![],
            "- objectName: shop/plain\n  objectType: secretsmanager\n  jmesPath:\n    - {path: a, objectAlias: a}\n".into(),
        ),
        (
            "err-no-type",
            "refused: a plain name without objectType",
            vec![],
            "- {objectName: shop/db}\n".into(),
        ),
        (
            "err-bad-type",
            "refused: unknown objectType",
            vec![],
            "- {objectName: shop/db, objectType: vault}\n".into(),
        ),
        (
            "err-duplicate",
            "refused: two objects with the same file name",
            vec![],
            "- {objectName: shop/db, objectType: secretsmanager}\n- {objectName: shop/db, objectType: secretsmanager}\n".into(),
        ),
        (
            "err-traversal",
            "refused: objectAlias escapes the volume",
            vec![],
            "- {objectName: shop/db, objectType: secretsmanager, objectAlias: ../escape}\n".into(),
        ),
        (
            "err-bad-yaml",
            "refused: objects is not YAML",
            vec![],
            "- {objectName: [\n".into(),
        ),
        (
            "err-same-failover",
            "refused: failoverRegion equal to region",
            vec![("failoverRegion", "us-west-2")],
            "- {objectName: shop/plain, objectType: secretsmanager}\n".into(),
        ),
    ];
    for (id, what, extra, objects) in aws_rows {
        let mut p = serde_json::Map::new();
        p.insert("region".into(), "us-west-2".into());
        for (k, v) in extra {
            if v.is_empty() {
                p.remove(k);
            } else {
                p.insert(k.into(), v.into());
            }
        }
        p.insert("objects".into(), objects.into());
        cases.push(Case {
            id: format!("aws/{id}"),
            peer: Peer::Aws,
            what: what.into(),
            parameters: Value::Object(p),
            dynamic: false,
            known: None,
        });
    }
    cases
}

/// Every example SecretProviderClass for a peer's provider name, with its
/// address pointed at the test OpenBao.
fn examples(w: &World) -> Vec<Case> {
    let root = support::manifest_dir().join("examples");
    let mut files = Vec::new();
    for dir in ["vault", "openbao", "aws", "demo"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
        v.sort();
        files.extend(v);
    }
    let mut cases = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(v) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if v["kind"].as_str() != Some("SecretProviderClass") {
                continue;
            }
            let provider = v["spec"]["provider"].as_str().unwrap_or("");
            let peer = match provider {
                "vault" => Peer::Vault,
                "openbao" => Peer::OpenBao,
                "aws" => Peer::Aws,
                _ => continue,
            };
            let mut params: serde_json::Map<String, Value> =
                serde_json::from_value(serde_json::to_value(&v["spec"]["parameters"]).unwrap())
                    .unwrap();
            for k in ["vaultAddress", "baoAddress", "openbaoAddress"] {
                if params.contains_key(k) {
                    params.insert(k.into(), w.bao.addr.clone().into());
                }
            }
            let name = v["metadata"]["name"].as_str().unwrap_or("?");
            let rel = f.strip_prefix(support::manifest_dir()).unwrap();
            cases.push(Case {
                id: format!("example:{}#{name}", rel.display()),
                peer,
                what: if peer == Peer::Aws {
                    format!("{}, as written", rel.display())
                } else {
                    format!("{}, its address pointed at the test OpenBao", rel.display())
                },
                parameters: Value::Object(params),
                dynamic: text.contains("pki/issue"),
                known: None,
            });
        }
    }
    cases
}

/// Differences that stay, by case id, with the reason.
fn known(id: &str) -> Option<&'static str> {
    const AWS_POD_IDENTITY: &str = "The aws provider dials the EKS Pod Identity agent at the fixed addresses 169.254.170.23 / [fd00:ec2::23], which a test on 127.0.0.1 cannot serve; coffer's agent address is a flag. Not compared.";
    const JMES_NON_STRING: &str = "coffer writes a jmesPath result that is a number, boolean, object or array as its JSON text; \
the aws provider refuses the whole mount (\"Invalid JMES search result type ... Only string is allowed\", reported to the \
driver as \"Failed to fetch secret from all regions\"). Every class the aws provider mounts, coffer mounts the same; \
coffer additionally mounts these. Kept as is for now (a src/ change, left to the coordinator): matching would mean \
refusing them too, and then `examples/aws/secretsmanager-jmespath.yaml` (`port`) must change as well.";
    const SSM_SAME_NAME: &str = "Of one SSM parameter listed twice in a class (here at version 1 under one alias and at its \
latest under another) the aws provider writes only one file and silently drops the other; coffer writes both, each with \
the value its selector names. A defect of the aws provider: coffer keeps its behaviour.";
    const FAILOVER_VERSION: &str = "With a failoverRegion the aws provider fetches every object from both regions on every \
mount; it writes the primary region's value but reports the VersionId of the last region it fetched (the failover \
region's). coffer asks the failover region only when the primary cannot answer, and reports the VersionId of the value \
it wrote. Files are the same. Kept: coffer's version describes the file it wrote.";
    match id {
        "example:examples/aws/ssm.yaml#search-config" => Some(AWS_POD_IDENTITY),
        "aws/jmespath-number" | "aws/jmespath-bool" | "aws/jmespath-object" => {
            Some(JMES_NON_STRING)
        }
        "aws/ssm-two-versions" => Some(SSM_SAME_NAME),
        "aws/failover" => Some(FAILOVER_VERSION),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Running and comparing.

#[derive(Debug)]
struct Outcome {
    ok: bool,
    code: String,
    message: String,
    files: Vec<(String, String, Vec<u8>)>,
    versions: BTreeMap<String, String>,
}

fn outcome(rep: &Value) -> Outcome {
    Outcome {
        ok: rep["ok"] == true,
        code: rep["code"]
            .as_str()
            .or(rep["errorReason"].as_str())
            .unwrap_or("")
            .to_owned(),
        message: rep["message"].as_str().unwrap_or("").to_owned(),
        files: if rep["ok"] == true {
            driver::files(rep)
        } else {
            vec![]
        },
        versions: rep["objectVersions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn mount(socket_dir: &Path, peer: Peer, params: &Value, tokens: &str, target: &Path) -> Outcome {
    let req = Request {
        provider: peer.socket().into(),
        parameters: params.clone(),
        volume_context: json!({
            "secretProviderClass": "compat",
            "csi.storage.k8s.io/pod.name": POD,
            "csi.storage.k8s.io/pod.namespace": NS,
            "csi.storage.k8s.io/pod.uid": POD_UID,
            "csi.storage.k8s.io/serviceAccount.name": SA,
            "csi.storage.k8s.io/ephemeral": "true",
            "csi.storage.k8s.io/serviceAccount.tokens": tokens,
        }),
        secrets: None,
    };
    outcome(&driver::mount(DRIVER, socket_dir, &req, target))
}

enum Verdict {
    Same(String),
    Differs(String),
}

fn clip(m: &str) -> String {
    let one_line = m.replace(['\n', '|'], " ");
    if one_line.chars().count() > 160 {
        format!("{}…", one_line.chars().take(160).collect::<String>())
    } else {
        one_line
    }
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s: String = s.chars().take(60).collect();
    format!("{s:?}")
}

/// A whole Vault response carries the server's `request_id`, new on every
/// request: blank its value (36 bytes) so the rest compares byte for byte.
fn without_request_id(b: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"\"request_id\":\"";
    let mut out = b.to_vec();
    if let Some(i) = out.windows(KEY.len()).position(|w| w == KEY) {
        let start = i + KEY.len();
        if out.len() >= start + 36 && out.get(start + 36) == Some(&b'"') {
            out[start..start + 36].fill(b'*');
        }
    }
    out
}

fn compare(case: &Case, coffer: &Outcome, peer: &Outcome) -> Verdict {
    match (coffer.ok, peer.ok) {
        (false, false) => Verdict::Same(format!(
            "both refuse (coffer {}: {}; peer {}: {})",
            coffer.code,
            clip(&coffer.message),
            peer.code,
            clip(&peer.message)
        )),
        (true, false) => Verdict::Differs(format!(
            "coffer mounts {} file(s); the peer refuses: {} {}",
            coffer.files.len(),
            peer.code,
            peer.message
        )),
        (false, true) => Verdict::Differs(format!(
            "coffer refuses ({} {}); the peer mounts {} file(s)",
            coffer.code,
            coffer.message,
            peer.files.len()
        )),
        (true, true) => {
            let mut diffs = Vec::new();
            let cpaths: Vec<_> = coffer.files.iter().map(|f| (&f.0, &f.1)).collect();
            let ppaths: Vec<_> = peer.files.iter().map(|f| (&f.0, &f.1)).collect();
            if cpaths != ppaths {
                diffs.push(format!(
                    "files (path, mode): coffer {cpaths:?}, peer {ppaths:?}"
                ));
            } else if !case.dynamic {
                for (c, p) in coffer.files.iter().zip(&peer.files) {
                    if c.2 != p.2 && without_request_id(&c.2) != without_request_id(&p.2) {
                        diffs.push(format!(
                            "{}: coffer {}, peer {}",
                            c.0,
                            short(&c.2),
                            short(&p.2)
                        ));
                    }
                }
            }
            let cids: Vec<_> = coffer.versions.keys().collect();
            let pids: Vec<_> = peer.versions.keys().collect();
            if cids != pids {
                diffs.push(format!(
                    "object version ids: coffer {cids:?}, peer {pids:?}"
                ));
            } else if case.peer == Peer::Aws && coffer.versions != peer.versions {
                let d: Vec<String> = coffer
                    .versions
                    .iter()
                    .filter(|(k, v)| peer.versions.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}: coffer {v}, peer {}", peer.versions[k]))
                    .collect();
                diffs.push(format!("object versions: {}", d.join("; ")));
            }
            if diffs.is_empty() {
                Verdict::Same(format!(
                    "same {} file(s){}",
                    coffer.files.len(),
                    if case.dynamic {
                        " (paths and modes; contents are issued per call)"
                    } else {
                        ", byte for byte"
                    }
                ))
            } else {
                Verdict::Differs(diffs.join("; "))
            }
        }
    }
}

struct Row {
    case_id: String,
    peer: Peer,
    what: String,
    verdict: String,
    differs: bool,
    known: Option<&'static str>,
}

fn run_compat() -> Result<(), String> {
    for p in Peer::selected() {
        p.bin()?;
    }
    let w = world(&[]);
    let peers: Vec<(Peer, PeerProc)> = Peer::selected()
        .iter()
        .map(|p| (*p, PeerProc::start(*p, &w.kube, &w.moto)))
        .collect();
    let scratch = support::tempdir("compat");
    let mut cases = table(&w);
    cases.extend(examples(&w));
    cases.retain(|c| peers.iter().any(|(p, _)| *p == c.peer));
    let mut rows = Vec::new();
    for (i, mut case) in cases.into_iter().enumerate() {
        if case.known.is_none() {
            case.known = known(&case.id);
        }
        if case.known.is_some_and(|k| k.ends_with("Not compared.")) {
            rows.push(Row {
                case_id: case.id.clone(),
                peer: case.peer,
                what: case.what.clone(),
                verdict: "not compared".into(),
                differs: true,
                known: case.known,
            });
            continue;
        }
        let proc_ = &peers.iter().find(|(p, _)| *p == case.peer).unwrap().1;
        let ct = scratch.path().join(format!("{i}-coffer"));
        let pt = scratch.path().join(format!("{i}-peer"));
        let c = mount(
            &w.coffer.socket_dir,
            case.peer,
            &case.parameters,
            &w.tokens,
            &ct,
        );
        let p = mount(
            &proc_.socket_dir,
            case.peer,
            &case.parameters,
            &w.tokens,
            &pt,
        );
        let (verdict, differs) = match compare(&case, &c, &p) {
            Verdict::Same(s) => (s, false),
            Verdict::Differs(s) => (s, true),
        };
        eprintln!(
            "{:<5} {:<60} {}",
            if differs { "DIFF" } else { "same" },
            case.id,
            verdict
        );
        rows.push(Row {
            case_id: case.id,
            peer: case.peer,
            what: case.what,
            verdict,
            differs,
            known: case.known,
        });
    }
    let unexplained: Vec<&Row> = rows
        .iter()
        .filter(|r| r.differs && r.known.is_none())
        .collect();
    let doc = render_compat(&rows);
    let out = std::env::var("COMPAT_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| support::manifest_dir().join("docs/compatibility.md"));
    std::fs::write(&out, doc).map_err(|e| format!("write {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    for (peer, proc_) in &peers {
        if !unexplained.is_empty() {
            eprintln!(
                "---- {} log (tail) ----\n{}",
                peer.project(),
                tail(&proc_.log_text(), 20)
            );
        }
    }
    drop(peers);
    if unexplained.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} difference(s) not listed in e2e/compat.rs `known`: {}",
            unexplained.len(),
            unexplained
                .iter()
                .map(|r| r.case_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn render_compat(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Compatibility with the providers coffer replaces\n");
    let _ = writeln!(
        s,
        "Generated by `make compat` (e2e/compat.rs); do not edit by hand. Each SecretProviderClass below was mounted \
through coffer and through the real provider, both behind the Secrets Store CSI driver's own provider client \
(`sigs.k8s.io/secrets-store-csi-driver` {DRIVER}, e2e/driverclient), against the same OpenBao dev server and moto server. \
Files are compared byte for byte (paths, modes, contents; in a whole Vault response the server's per-request `request_id` \
is blanked on both sides); refusals by class (both refuse: the peers answer most refusals with gRPC Unknown, coffer with a \
specific code); object versions by id, and for the aws provider by value (its versions are the secret's VersionId and the \
parameter's version). The Vault family's versions are HMACs under each provider's own key, so only their ids compare.\n"
    );
    let _ = writeln!(
        s,
        "| Peer | Version | Cases | Same | Listed differences | Unexplained |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for p in Peer::ALL {
        let r: Vec<&Row> = rows.iter().filter(|r| r.peer == p).collect();
        let same = r.iter().filter(|r| !r.differs).count();
        let listed = r.iter().filter(|r| r.differs && r.known.is_some()).count();
        let unexplained = r.iter().filter(|r| r.differs && r.known.is_none()).count();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {same} | {listed} | {unexplained} |",
            p.project(),
            p.version(),
            r.len()
        );
    }
    let _ = writeln!(
        s,
        "\nDriver clients proven by `make test` (tests/driver_client.rs): secrets-store-csi-driver {} mount through \
coffer's `vault`, `openbao`, `aws` and `coffer` sockets.\n",
        driver::DRIVER_VERSIONS.join(", ")
    );
    let _ = writeln!(s, "## Differences\n");
    let diffs: Vec<&Row> = rows.iter().filter(|r| r.differs).collect();
    if diffs.is_empty() {
        let _ = writeln!(s, "None.\n");
    }
    // Grouped by reason, in order of first appearance.
    let mut reasons: Vec<Option<&'static str>> = Vec::new();
    for r in &diffs {
        if !reasons.contains(&r.known) {
            reasons.push(r.known);
        }
    }
    for (i, reason) in reasons.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}. {}\n",
            i + 1,
            reason.unwrap_or("**Not explained: a bug to fix.**")
        );
        for r in diffs.iter().filter(|r| r.known == *reason) {
            let _ = writeln!(s, "   - `{}` ({}): {}", r.case_id, r.what, r.verdict);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\n## Every case\n");
    let _ = writeln!(s, "| Case | What | Result |");
    let _ = writeln!(s, "|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {}{} |",
            r.case_id,
            r.what.replace('|', "\\|"),
            r.verdict.replace('|', "\\|").replace('\n', " "),
            if r.differs { " (difference)" } else { "" }
        );
    }
    let _ = writeln!(s, "\n## Rerun\n");
    let _ = writeln!(
        s,
        "`make compat` (needs root for `unshare -m`, and the peers: `bash e2e/setup-peers.sh` installs them from the Go \
module proxy at the versions above; where the proxy does not serve them, set COFFER_PEER_VAULT_BIN, \
COFFER_PEER_OPENBAO_BIN and COFFER_PEER_AWS_BIN to binaries of those versions)."
    );
    s
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let res = match mode.as_str() {
        "compat" => run_compat(),
        "bench" => run_bench(),
        _ => Err("usage: compat compat|bench".into()),
    };
    if let Err(e) = res {
        eprintln!("compat: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// Side-by-side bench.

const SIDE_BY_SIDE_BEGIN: &str = "<!-- side-by-side: make bench-peers -->";

/// `coffer serve` without the tests' trace logging, as the chart runs it.
struct CofferProc {
    child: Option<Child>,
    _reaper: Reaper,
    _dir: tempfile::TempDir,
    socket_dir: PathBuf,
}

impl CofferProc {
    fn start(moto: &Moto, kube: &KubeStandin) -> CofferProc {
        let dir = support::tempdir("bench-coffer");
        let socket_dir = dir.path().join("sockets");
        std::fs::create_dir(&socket_dir).unwrap();
        let log = open_log(&dir.path().join("coffer.log"));
        let log_err = log.try_clone().unwrap();
        let mut cmd = Command::new(support::serve::coffer_bin());
        scrub_env(&mut cmd);
        cmd.arg("serve")
            .arg("--socket-dir")
            .arg(&socket_dir)
            .args([
                "--provider",
                "vault",
                "--provider",
                "openbao",
                "--provider",
                "aws",
            ])
            .arg("--health-addr")
            .arg(format!("127.0.0.1:{}", support::free_port()))
            .args(["--aws-endpoint-url", &moto.addr, "--node-name", NODE])
            .arg("--kubeconfig")
            .arg(kube.kubeconfig())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd.spawn().expect("spawn coffer");
        let reaper = Reaper::watch(child.id());
        let p = CofferProc {
            child: Some(child),
            _reaper: reaper,
            _dir: dir,
            socket_dir,
        };
        let ok = wait_for(Duration::from_secs(20), || {
            ["vault", "openbao", "aws"]
                .iter()
                .all(|s| p.socket_dir.join(format!("{s}.sock")).exists())
                .then_some(())
        });
        assert!(ok.is_some(), "coffer did not open its sockets");
        p
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for CofferProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if support::proc::wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                kill_and_reap(&mut c);
            }
        }
    }
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// user+sys CPU seconds of a process (clock ticks of 100 Hz).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// `driverclient bench`: its JSON report. At most `n` mounts from `c`
/// callers; none started after `secs` seconds (0: no limit).
fn load(socket_dir: &Path, req: &Request, n: usize, c: usize, secs: u64, scratch: &Path) -> Value {
    let dir = support::tempdir("bench-req");
    let file = dir.path().join("request.json");
    std::fs::write(&file, serde_json::to_vec(&req.to_json()).unwrap()).unwrap();
    let target = scratch.join(format!("t-{}", support::random_hex(6)));
    std::fs::create_dir_all(&target).unwrap();
    let mut cmd = Command::new(driver::client_bin(DRIVER));
    cmd.arg("bench")
        .arg("-socket-dir")
        .arg(socket_dir)
        .arg("-request")
        .arg(&file)
        .arg("-target")
        .arg(&target)
        .arg("-n")
        .arg(n.to_string())
        .arg("-c")
        .arg(c.to_string())
        .arg("-duration")
        .arg(format!("{secs}s"));
    let v = run_long(cmd);
    let _ = std::fs::remove_dir_all(&target);
    v
}

/// Like driver::run_json, with a deadline fit for a load run (20 min).
fn run_long(mut cmd: Command) -> Value {
    scrub_env(&mut cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run driverclient bench");
    assert!(out.status.success(), "driverclient bench failed");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("bench JSON")
}

struct Column {
    name: String,
    idle_rss_kib: u64,
    p50_ms: f64,
    p99_ms: f64,
    rate16: f64,
    rate64: f64,
    cpu_us_per_mount: f64,
    rss_after_kib: u64,
    after_mounts: usize,
    backend_per_mount: f64,
    failed: i64,
    fingerprint: String,
}

fn audit_requests(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"type\":\"request\""))
        .count()
}

fn moto_requests(moto: &Moto) -> usize {
    moto.log_text()
        .lines()
        .filter(|l| l.contains("\"POST / HTTP/1.1\""))
        .count()
}

/// Limits of one provider's run.
struct Budget {
    /// Sequential mounts for the latency figures (and at most this many seconds).
    seq: usize,
    seq_secs: u64,
    /// Seconds of each throughput run.
    rate_secs: u64,
    /// Total mounts before the final RSS (and at most this many seconds of soak).
    soak: usize,
    soak_secs: u64,
}

fn mounts_of(v: &Value) -> usize {
    v["mounts"].as_u64().unwrap_or(0) as usize
}

fn measure(
    name: &str,
    pid: u32,
    socket_dir: &Path,
    req: &Request,
    backend_count: &dyn Fn() -> usize,
    b: &Budget,
    scratch: &Path,
) -> Column {
    eprintln!("bench: {name}");
    // Warm (login, credentials, caches), then idle RSS.
    let warm = load(socket_dir, req, 20, 1, 0, scratch);
    assert_eq!(warm["failed"], 0, "{name}: warm-up failed: {warm}");
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_kib = proc_kib(pid, "VmRSS:");
    let b0 = backend_count();
    let lat = load(socket_dir, req, b.seq, 1, b.seq_secs, scratch);
    let b1 = backend_count();
    let cpu0 = cpu_seconds(pid);
    let r16 = load(socket_dir, req, 1_000_000, 16, b.rate_secs, scratch);
    let r64 = load(socket_dir, req, 1_000_000, 64, b.rate_secs, scratch);
    let cpu1 = cpu_seconds(pid);
    let so_far = 20 + mounts_of(&lat) + mounts_of(&r16) + mounts_of(&r64);
    let rest = b.soak.saturating_sub(so_far);
    let soak_rep = if rest > 0 {
        load(socket_dir, req, rest, 16, b.soak_secs, scratch)
    } else {
        json!({"failed": 0, "mounts": 0})
    };
    let failed = [&lat, &r16, &r64, &soak_rep]
        .iter()
        .map(|v| v["failed"].as_i64().unwrap_or(0))
        .sum();
    Column {
        name: name.into(),
        idle_rss_kib,
        p50_ms: lat["p50_ms"].as_f64().unwrap_or(0.0),
        p99_ms: lat["p99_ms"].as_f64().unwrap_or(0.0),
        rate16: r16["mounts_per_s"].as_f64().unwrap_or(0.0),
        rate64: r64["mounts_per_s"].as_f64().unwrap_or(0.0),
        cpu_us_per_mount: (cpu1 - cpu0) * 1e6 / (mounts_of(&r16) + mounts_of(&r64)).max(1) as f64,
        rss_after_kib: proc_kib(pid, "VmRSS:"),
        after_mounts: so_far + mounts_of(&soak_rep),
        backend_per_mount: (b1 - b0) as f64 / mounts_of(&lat).max(1) as f64,
        failed,
        fingerprint: lat["files_fingerprint"].as_str().unwrap_or("").into(),
    }
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_bench() -> Result<(), String> {
    for p in Peer::selected() {
        p.bin()?;
    }
    let budget = Budget {
        seq: env_num("BENCH_PEER_SEQ", 300) as usize,
        seq_secs: env_num("BENCH_PEER_SEQ_SECONDS", 60),
        rate_secs: env_num("BENCH_PEER_RATE_SECONDS", 15),
        soak: env_num("BENCH_PEER_MOUNTS", 10_000) as usize,
        soak_secs: env_num("BENCH_PEER_SOAK_SECONDS", 120),
    };
    let w = world(&[]);
    let audit = w.bao.dir().join("audit.log");
    // The tests' coffer (trace logging) is not what is measured: a release
    // coffer at its default log level is.
    let coffer = CofferProc::start(&w.moto, &w.kube);
    let peers: Vec<(Peer, PeerProc)> = Peer::selected()
        .iter()
        .map(|p| (*p, PeerProc::start(*p, &w.kube, &w.moto)))
        .collect();
    let scratch = support::tempdir("bench-peers");
    let vol = |spc: &str| {
        json!({
            "secretProviderClass": spc,
            "csi.storage.k8s.io/pod.name": POD,
            "csi.storage.k8s.io/pod.namespace": NS,
            "csi.storage.k8s.io/pod.uid": POD_UID,
            "csi.storage.k8s.io/serviceAccount.name": SA,
            "csi.storage.k8s.io/ephemeral": "true",
            "csi.storage.k8s.io/serviceAccount.tokens": w.tokens,
        })
    };
    let kv = "- {objectName: str, secretPath: secret/data/app/cfg, secretKey: str}\n";
    let aws_objects = "- {objectName: shop/db, objectType: secretsmanager}\n- {objectName: /shop/api-key, objectType: ssmparameter}\n";
    let mut sections = Vec::new();
    for peer in Peer::selected() {
        let params = match peer {
            Peer::Aws => json!({"region": "us-west-2", "objects": aws_objects}),
            _ => vault_params(&w, peer, &[], kv),
        };
        let req = Request {
            provider: peer.socket().into(),
            parameters: params,
            volume_context: vol("bench"),
            secrets: None,
        };
        let backend: Box<dyn Fn() -> usize> = match peer {
            Peer::Aws => Box::new(|| moto_requests(&w.moto)),
            _ => Box::new(|| audit_requests(&audit)),
        };
        let peer_proc = &peers.iter().find(|(p, _)| *p == peer).unwrap().1;
        let c = measure(
            &format!("coffer `{}` socket", peer.socket()),
            coffer.pid(),
            &coffer.socket_dir,
            &req,
            &*backend,
            &budget,
            scratch.path(),
        );
        let p = measure(
            &format!("{} {}", peer.project(), peer.version()),
            peer_proc.pid(),
            &peer_proc.socket_dir,
            &req,
            &*backend,
            &budget,
            scratch.path(),
        );
        sections.push((peer, c, p));
    }
    let text = render_bench(&sections, &budget);
    println!("{text}");
    let out = std::env::var("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| support::manifest_dir().join("docs/benchmarks.md"));
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    let head = match old.find(SIDE_BY_SIDE_BEGIN) {
        Some(i) => old[..i].trim_end().to_owned(),
        None => old.trim_end().to_owned(),
    };
    std::fs::write(&out, format!("{head}\n\n{text}"))
        .map_err(|e| format!("write {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn render_bench(sections: &[(Peer, Column, Column)], b: &Budget) -> String {
    let mut s = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(s, "{SIDE_BY_SIDE_BEGIN}");
    let _ = writeln!(s, "## Side by side with the providers coffer replaces\n");
    let _ = writeln!(
        s,
        "Measured by `make bench-peers` (e2e/compat.rs `bench`), one run; coffer {} (release build, default log level) and each \
peer as released, every one behind the Secrets Store CSI driver's own provider client (secrets-store-csi-driver {DRIVER}, \
e2e/driverclient `bench`), against the same OpenBao dev server and moto server on 127.0.0.1. Machine: {cores} cores, {cpu}, \
shared with other work while measuring. A mount is one pod's volume: one KV v2 key for the Vault family; one Secrets \
Manager secret and one SSM parameter for aws. Latency from sequential warm mounts; throughput at each \
concurrency; provider CPU (user+sys from /proc) over those; RSS after the stated number of mounts; backend requests per \
mount from OpenBao's audit log (requests) and moto's request log, over the sequential run. The peers log at their \
defaults (vault at warn; openbao, which has no level flag, and aws log every mount at info).\n\n\
Limits per provider: {} sequential mounts or {} s for the latency, {} s at each concurrency, then up to {} mounts in all \
or {} s more for the final RSS (a provider that cannot reach the count in that time shows how many it did).\n\n\
Why the peers level off near 5 mounts/s: each asks the Kubernetes API server something on every mount (vault and \
openbao read their HMAC key Secret; aws reads the ServiceAccount for its role annotation) through client-go with its \
default client-side rate limit of 5 requests/s (burst 10; the aws provider's `--qps`/`--burst` flags raise it, the \
Vault family has none). That holds in a cluster too, where the API server is also further away than this stand-in. \
coffer makes no Kubernetes API call on a warm mount.\n",
        env!("CARGO_PKG_VERSION"),
        b.seq,
        b.seq_secs,
        b.rate_secs,
        b.soak,
        b.soak_secs
    );
    for (peer, c, p) in sections {
        let _ = writeln!(
            s,
            "### {} socket: coffer vs {} {}\n",
            peer.socket(),
            peer.project(),
            peer.version()
        );
        let _ = writeln!(s, "| figure | {} | {} |", c.name, p.name);
        let _ = writeln!(s, "|---|---:|---:|");
        let rows: [(&str, String, String); 9] = [
            (
                "warm mount p50 / p99",
                format!("{:.2} ms / {:.2} ms", c.p50_ms, c.p99_ms),
                format!("{:.2} ms / {:.2} ms", p.p50_ms, p.p99_ms),
            ),
            (
                "mounts/s, 16 callers",
                format!("{:.0}", c.rate16),
                format!("{:.0}", p.rate16),
            ),
            (
                "mounts/s, 64 callers",
                format!("{:.0}", c.rate64),
                format!("{:.0}", p.rate64),
            ),
            (
                "provider CPU per mount",
                format!("{:.0} µs", c.cpu_us_per_mount),
                format!("{:.0} µs", p.cpu_us_per_mount),
            ),
            (
                "RSS idle (after warm-up)",
                format!("{:.1} MiB", c.idle_rss_kib as f64 / 1024.0),
                format!("{:.1} MiB", p.idle_rss_kib as f64 / 1024.0),
            ),
            (
                "RSS after mounts",
                format!(
                    "{:.1} MiB ({})",
                    c.rss_after_kib as f64 / 1024.0,
                    c.after_mounts
                ),
                format!(
                    "{:.1} MiB ({})",
                    p.rss_after_kib as f64 / 1024.0,
                    p.after_mounts
                ),
            ),
            (
                "backend requests per mount",
                format!("{:.2}", c.backend_per_mount),
                format!("{:.2}", p.backend_per_mount),
            ),
            ("failed mounts", c.failed.to_string(), p.failed.to_string()),
            (
                "volume fingerprint (same files)",
                c.fingerprint.clone(),
                p.fingerprint.clone(),
            ),
        ];
        for (k, a, b) in rows {
            let _ = writeln!(s, "| {k} | {a} | {b} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Rerun: `make bench-peers` (BENCH_PEER_SEQ, BENCH_PEER_SEQ_SECONDS, BENCH_PEER_RATE_SECONDS, BENCH_PEER_MOUNTS and \
BENCH_PEER_SOAK_SECONDS change the limits above)."
    );
    s
}

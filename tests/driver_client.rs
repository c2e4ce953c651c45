//! The Secrets Store CSI driver's own provider client against the real
//! `coffer serve`: `e2e/driverclient` built by `e2e/setup.sh` against the
//! driver's `pkg/secrets-store` at v1.4.8, v1.5.6 and v1.6.0 mounts through
//! coffer's `vault`, `openbao`, `aws` and `coffer` sockets exactly as that
//! driver release does (its dialing, its checks of the answer, its atomic
//! file writer), against a real OpenBao and a real moto, with the Kubernetes
//! API played by `e2e/kubestandin`.
//!
//! Needs `bash e2e/setup.sh` (make test runs it):
//! `cargo test --test driver_client -- --include-ignored`.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{Value, json};
use support::bao::Bao;
use support::driver::{self, DRIVER_VERSIONS, KubeStandin, Request};
use support::moto::Moto;
use support::{Coffer, jwt};

const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-0";
const POD_UID: &str = "5b0f2c1e-8d7a-4c3b-9e6f-1a2b3c4d5e6f";
const NODE: &str = "node-1";
const REGION: &str = "us-west-2";
const ROLE: &str = "arn:aws:iam::123456789012:role/shop-web";
const IRSA: &str = "sts.amazonaws.com";

const API_KEY: &str = "ak-9d8c7b6a5f4e";
const DB_JSON: &str = r#"{"username":"shop","port":5432}"#;
const SSM_VALUE: &str = "flag-one,flag-two";

struct World {
    bao: Bao,
    /// shop/db's VersionId and /shop/flags' version, as moto reports them.
    aws_versions: (String, String),
    _moto: Moto,
    kube: KubeStandin,
    coffer: Coffer,
}

fn world() -> World {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["app"]);
    bao.jwt_role("jwt", "web-bao", &jwt::subject(NS, SA), "openbao", &["app"]);
    bao.kv_put(
        "secret/data/app/cfg",
        json!({"user": "u1", "apiKey": API_KEY}),
    );

    let moto = Moto::start();
    moto.create_secret(REGION, "shop/db", DB_JSON);
    let flags_version = moto.put_parameter(REGION, "/shop/flags", SSM_VALUE, "StringList");
    let (_, got) = moto.call(
        "secretsmanager",
        REGION,
        "secretsmanager.GetSecretValue",
        &json!({"SecretId": "shop/db"}),
    );
    let version_id = got["VersionId"].as_str().expect("VersionId").to_owned();

    let kube = KubeStandin::start(
        &json!({
            "serviceAccounts": [{"namespace": NS, "name": SA, "annotations": {"eks.amazonaws.com/role-arn": ROLE}}],
            "pods": [{"namespace": NS, "name": POD, "uid": POD_UID, "nodeName": NODE}],
            "nodes": [{"name": NODE, "labels": {"topology.kubernetes.io/region": REGION}}],
        }),
        &[],
    );
    let coffer = Coffer::start(
        &["vault", "openbao", "aws", "coffer"],
        &[
            "--aws-endpoint-url",
            &moto.addr,
            "--kubeconfig",
            kube.kubeconfig().to_str().unwrap(),
            "--node-name",
            NODE,
        ],
    );
    World {
        bao,
        aws_versions: (version_id, flags_version.to_string()),
        _moto: moto,
        kube,
        coffer,
    }
}

/// The volume attributes kubelet sends for the pod, with its tokens.
fn volume_context(spc: &str, tokens: &[(&str, &str)]) -> Value {
    json!({
        "secretProviderClass": spc,
        "csi.storage.k8s.io/pod.name": POD,
        "csi.storage.k8s.io/pod.namespace": NS,
        "csi.storage.k8s.io/pod.uid": POD_UID,
        "csi.storage.k8s.io/serviceAccount.name": SA,
        "csi.storage.k8s.io/ephemeral": "true",
        "csi.storage.k8s.io/serviceAccount.tokens": jwt::tokens_attribute(tokens),
    })
}

const VAULT_OBJECTS: &str = "
- objectName: user
  secretPath: secret/data/app/cfg
  secretKey: user
- objectName: api-key
  secretPath: secret/data/app/cfg
  secretKey: apiKey
  filePermission: 0600
";

const AWS_OBJECTS: &str = "
- objectName: shop/db
  objectType: secretsmanager
  jmesPath:
    - path: username
      objectAlias: db-user
- objectName: /shop/flags
  objectType: ssmparameter
  objectAlias: flags
  filePermission: \"0640\"
";

/// Files a mount must write: (path, mode, contents).
type WantFiles = Vec<(&'static str, &'static str, Vec<u8>)>;

/// What each socket gets, and the files it must write.
fn cases(bao: &Bao) -> Vec<(Request, WantFiles)> {
    let vault_token = jwt::sa_token(NS, SA, POD, POD_UID, "vault", 600);
    let bao_token = jwt::sa_token(NS, SA, POD, POD_UID, "openbao", 600);
    let irsa_token = jwt::sa_token(NS, SA, POD, POD_UID, IRSA, 600);
    let vault_files = vec![
        ("api-key", "0600", API_KEY.as_bytes().to_vec()),
        ("user", "0644", b"u1".to_vec()),
    ];
    let aws_files = vec![
        ("db-user", "0644", b"shop".to_vec()),
        ("flags", "0640", SSM_VALUE.as_bytes().to_vec()),
        ("shop_db", "0644", DB_JSON.as_bytes().to_vec()),
    ];
    vec![
        (
            Request {
                provider: "vault".into(),
                parameters: json!({
                    "roleName": "web",
                    "vaultAddress": bao.addr,
                    "vaultAuthMountPath": "jwt",
                    "objects": VAULT_OBJECTS,
                }),
                volume_context: volume_context("app-vault", &[("vault", &vault_token)]),
                secrets: None,
            },
            vault_files.clone(),
        ),
        (
            Request {
                provider: "openbao".into(),
                parameters: json!({
                    "roleName": "web-bao",
                    "baoAddress": bao.addr,
                    "baoAuthMountPath": "jwt",
                    "objects": VAULT_OBJECTS,
                }),
                volume_context: volume_context("app-bao", &[("openbao", &bao_token)]),
                secrets: None,
            },
            vault_files.clone(),
        ),
        (
            Request {
                provider: "aws".into(),
                parameters: json!({"region": REGION, "objects": AWS_OBJECTS}),
                volume_context: volume_context("app-aws", &[(IRSA, &irsa_token)]),
                secrets: None,
            },
            aws_files,
        ),
        (
            Request {
                provider: "coffer".into(),
                parameters: json!({
                    "backend": "vault",
                    "roleName": "web",
                    "vaultAddress": bao.addr,
                    "vaultAuthMountPath": "jwt",
                    "objects": VAULT_OBJECTS,
                }),
                volume_context: volume_context("app-coffer", &[("vault", &vault_token)]),
                secrets: Some(json!({})),
            },
            vault_files,
        ),
    ]
}

fn authority_rewrites(coffer: &Coffer) -> f64 {
    coffer
        .health_get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("coffer_authority_rewrites_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no coffer_authority_rewrites_total in /metrics"))
}

/// What the pod sees in the target directory, read by this test itself:
/// (path, mode, contents) of every visible entry, following the driver
/// writer's symlinks.
fn volume(target: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".."))
        .map(|e| {
            let p = e.path();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            (
                e.file_name().to_string_lossy().into_owned(),
                format!("{mode:04o}"),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
#[ignore = "needs OpenBao, moto and the Go driver client: run make test"]
fn every_driver_release_mounts_through_every_socket() {
    let w = world();
    let scratch = support::tempdir("driver-targets");
    for version in DRIVER_VERSIONS {
        for (req, want) in cases(&w.bao) {
            let before = authority_rewrites(&w.coffer);
            let target = scratch.path().join(format!("{version}-{}", req.provider));
            let rep = driver::mount(version, &w.coffer.socket_dir, &req, &target);
            let what = format!("driver {version} on the {} socket", req.provider);
            assert_eq!(rep["ok"], true, "{what}: {rep}");
            assert_eq!(rep["driver"], *version, "{what}: linked driver module");
            assert_eq!(
                rep["runtimeVersion"],
                env!("CARGO_PKG_VERSION"),
                "{what}: {rep}"
            );

            let want: Vec<(String, String, Vec<u8>)> = want
                .into_iter()
                .map(|(p, m, c)| (p.to_owned(), m.to_owned(), c))
                .collect();
            assert_eq!(driver::files(&rep), want, "{what}: files in the report");
            assert_eq!(volume(&target), want, "{what}: files on disk");
            // The driver's atomic writer: visible names are symlinks into ..data.
            assert!(
                target.join("..data").is_symlink(),
                "{what}: no ..data written by the driver's writer"
            );
            assert!(
                std::fs::symlink_metadata(target.join(&want[0].0))
                    .unwrap()
                    .is_symlink(),
                "{what}: {} is not the writer's symlink",
                want[0].0
            );

            // One object version per file, as the driver records them.
            let versions = rep["objectVersions"].as_object().unwrap();
            let mut ids: Vec<&str> = versions.keys().map(String::as_str).collect();
            ids.sort_unstable();
            let mut want_ids: Vec<&str> = want.iter().map(|(p, _, _)| p.as_str()).collect();
            want_ids.sort_unstable();
            if req.provider == "aws" {
                // As the aws provider: one version per object and per
                // jmesPath file, keyed by file name: the secret's VersionId,
                // the parameter's version number.
                assert_eq!(ids, want_ids, "{what}: {rep}");
                let (vid, pv) = &w.aws_versions;
                assert_eq!(versions["shop_db"], vid.as_str(), "{what}: {rep}");
                assert_eq!(versions["db-user"], vid.as_str(), "{what}: {rep}");
                assert_eq!(versions["flags"], pv.as_str(), "{what}: {rep}");
            } else {
                assert_eq!(ids.len(), 2, "{what}: {rep}");
            }
            assert!(
                versions
                    .values()
                    .all(|v| v.as_str().is_some_and(|s| !s.is_empty())),
                "{what}: empty object version: {rep}"
            );

            // Up to v1.5 the driver dials with the socket path as
            // :authority (coffer rewrites it); v1.6 sends localhost.
            let rewrites = authority_rewrites(&w.coffer) - before;
            if *version == "v1.6.0" {
                assert_eq!(rewrites, 0.0, "{what}: v1.6 sends localhost");
            } else {
                assert!(rewrites >= 1.0, "{what}: socket path :authority not seen");
            }
        }
    }
    // The aws socket asked the Kubernetes API for the role (no roleArn in the SPC).
    assert!(
        w.kube.count(
            "GET",
            &format!("/api/v1/namespaces/{NS}/serviceaccounts/{SA}")
        ) >= 1,
        "{}",
        w.kube.log_text()
    );
}

#[test]
#[ignore = "needs OpenBao, moto and the Go driver client: run make test"]
fn a_refused_mount_reaches_the_driver_as_a_provider_error_and_writes_nothing() {
    let w = world();
    let scratch = support::tempdir("driver-refused");
    let token = jwt::sa_token(NS, SA, POD, POD_UID, "vault", 600);
    for version in DRIVER_VERSIONS {
        // The second object does not exist: nothing of the first may appear.
        let req = Request {
            provider: "vault".into(),
            parameters: json!({
                "roleName": "web",
                "vaultAddress": w.bao.addr,
                "vaultAuthMountPath": "jwt",
                "objects": "- {objectName: user, secretPath: secret/data/app/cfg, secretKey: user}\n- {objectName: gone, secretPath: secret/data/app/missing, secretKey: x}\n",
            }),
            volume_context: volume_context("app-vault", &[("vault", &token)]),
            secrets: None,
        };
        let target = scratch.path().join(*version);
        let rep = driver::mount(version, &w.coffer.socket_dir, &req, &target);
        assert_eq!(rep["ok"], false, "driver {version}: {rep}");
        assert_eq!(rep["errorReason"], "GRPCProviderError", "{rep}");
        assert_eq!(rep["code"], "NotFound", "{rep}");
        let msg = rep["message"].as_str().unwrap();
        assert!(msg.contains("secret/data/app/missing"), "{rep}");
        assert!(
            std::fs::read_dir(&target).unwrap().next().is_none(),
            "driver {version}: a refused mount wrote files"
        );

        // A provider name the driver itself refuses never reaches a socket.
        let bad = Request {
            provider: "no-such".into(),
            ..req
        };
        let rep = driver::mount(version, &w.coffer.socket_dir, &bad, &target);
        assert_eq!(rep["ok"], false, "{rep}");
        assert_eq!(
            rep["errorReason"], "FailedToLookupProviderGRPCClient",
            "{rep}"
        );
    }
}

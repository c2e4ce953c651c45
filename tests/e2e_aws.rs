//! End to end against a real moto server (Secrets Manager, SSM Parameter
//! Store, STS): the real `coffer serve` binary on the `aws` and `coffer`
//! sockets, the driver's side played by `coffer mount` and by a gRPC-core
//! client, and small stand-ins served by the test for the Kubernetes API
//! (ServiceAccount annotation, node label) and the EKS Pod Identity agent.
//!
//! Needs `bash e2e/setup.sh` (make test runs it):
//! `cargo test --test e2e_aws -- --include-ignored`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use support::moto::Moto;
use support::stub::{self, Stub};
use support::{Coffer, coffer_cmd, jwt, python_mount};

const REGION: &str = "us-west-2";
const FAILOVER: &str = "us-east-2";
const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-7d4665cf4-gf7hq";
const POD_UID: &str = "1f43f7c5-6ebe-4877-8fd4-bbe07df83c6c";
const ROLE: &str = "arn:aws:iam::123456789012:role/shop-web";
const IRSA: &str = "sts.amazonaws.com";
const POD_IDENTITY: &str = "pods.eks.amazonaws.com";

const DB_JSON: &str = r#"{"username":"shop","password":"pw-Zq8v1LrT0kE7","port":5432,"tls":true}"#;
const DB_PASSWORD: &str = "pw-Zq8v1LrT0kE7";
const CERT: &[u8] = b"\x30\x82\x01\x0a\x00\xff\xfe-binary-cert-Yh3k";
const API_KEY: &str = "ak-SSM-9f8e7d6c5b4a";
const FLAGS: &str = "beta=on,dark=off";

/// A scratch directory with the pod's token files.
struct Pod {
    dir: tempfile::TempDir,
    token: String,
}

impl Pod {
    fn new(audience: &str) -> Pod {
        let dir = support::tempdir("aws-pod");
        let token = jwt::sa_token(NS, SA, POD, POD_UID, audience, 600);
        std::fs::write(dir.path().join("token"), &token).unwrap();
        Pod { dir, token }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Writes a SecretProviderClass with these parameters; `objects` is YAML.
    fn spc(&self, name: &str, provider: &str, params: &[(&str, &str)], objects: &str) -> PathBuf {
        let mut text = format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  provider: {provider}\n  parameters:\n"
        );
        for (k, v) in params {
            text.push_str(&format!("    {k}: {}\n", serde_json::to_string(v).unwrap()));
        }
        text.push_str("    objects: |\n");
        for line in objects.lines() {
            text.push_str(&format!("      {line}\n"));
        }
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// `coffer mount` (the driver stand-in): (success, stdout, stderr).
fn mount(
    coffer: &Coffer,
    spc: &Path,
    audience: &str,
    pod: &Pod,
    out: &Path,
) -> (bool, String, String) {
    mount_as(coffer, spc, audience, &pod.token_file(), POD, POD_UID, out)
}

/// `coffer mount` for the pod `name` with `uid` and the token in `token_file`.
fn mount_as(
    coffer: &Coffer,
    spc: &Path,
    audience: &str,
    token_file: &Path,
    name: &str,
    uid: &str,
    out: &Path,
) -> (bool, String, String) {
    let output = coffer_cmd()
        .args(["mount", "--spc"])
        .arg(spc)
        .arg("--socket-dir")
        .arg(&coffer.socket_dir)
        .args([
            "--pod-name",
            name,
            "--pod-namespace",
            NS,
            "--pod-uid",
            uid,
            "--service-account",
            SA,
            "--timeout",
            "60s",
        ])
        .arg("--token")
        .arg(format!("{audience}={}", token_file.display()))
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

fn mount_ok(coffer: &Coffer, spc: &Path, audience: &str, pod: &Pod, out: &Path) -> String {
    let (ok, report, err) = mount(coffer, spc, audience, pod, out);
    assert!(ok, "mount failed: {err}\n{report}");
    report
}

fn mount_err(coffer: &Coffer, spc: &Path, pod: &Pod) -> String {
    let out = pod.dir.path().join("volume-err");
    let (ok, report, err) = mount(coffer, spc, IRSA, pod, &out);
    assert!(!ok, "mount should fail: {report}");
    err
}

fn read(out: &Path, file: &str) -> String {
    std::fs::read_to_string(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn mode(out: &Path, file: &str) -> u32 {
    std::fs::metadata(out.join(file))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn aws_calls(coffer: &Coffer, operation: &str) -> f64 {
    coffer.metric(&format!(
        "coffer_backend_requests_total{{backend=\"aws\",operation=\"{operation}\",outcome=\"ok\"}} "
    ))
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

/// moto with the shop's secrets and parameters in `region`; returns the ARNs
/// (db secret, binary cert secret).
fn seed(moto: &Moto, region: &str) -> (String, String) {
    let db = moto.create_secret(region, "shop/db", DB_JSON);
    let cert = moto.create_binary_secret(region, "shop/cert", CERT);
    moto.put_parameter(region, "/shop/api-key", API_KEY, "SecureString");
    moto.put_parameter(region, "/shop/flags", FLAGS, "StringList");
    (db, cert)
}

fn start_coffer(moto: &Moto, extra: &[&str]) -> Coffer {
    let mut args = vec!["--aws-endpoint-url", moto.addr.as_str()];
    args.extend_from_slice(extra);
    Coffer::start(&["aws", "coffer"], &args)
}

#[test]
#[ignore = "needs moto: run make test"]
fn files_match_the_aws_provider() {
    let moto = Moto::start();
    let (_, cert_arn) = seed(&moto, REGION);
    let coffer = start_coffer(&moto, &[]);
    let pod = Pod::new(IRSA);
    let objects = format!(
        "- objectName: shop/db\n  objectType: secretsmanager\n  filePermission: \"0600\"\n  jmesPath:\n    - path: username\n      objectAlias: db-user\n    - Path: port\n      ObjectAlias: db-port\n      filePermission: \"0640\"\n    - path: tls\n      objectAlias: db-tls\n\
         - objectName: {cert_arn}\n  objectAlias: tls.der\n\
         - objectName: /shop/api-key\n  objectType: ssmparameter\n\
         - ObjectName: arn:aws:ssm:{REGION}:123456789012:parameter/shop/flags\n  ObjectAlias: flags\n"
    );
    let spc = pod.spc(
        "shop-aws",
        "aws",
        &[("region", REGION), ("roleArn", ROLE)],
        &objects,
    );
    let out = pod.dir.path().join("volume");
    let report = mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert!(report.starts_with("wrote 7 file(s)"), "{report}");
    assert_eq!(read(&out, "shop_db"), DB_JSON);
    assert_eq!(read(&out, "db-user"), "shop");
    assert_eq!(read(&out, "db-port"), "5432");
    assert_eq!(read(&out, "db-tls"), "true");
    assert_eq!(std::fs::read(out.join("tls.der")).unwrap(), CERT);
    assert_eq!(read(&out, "_shop_api-key"), API_KEY);
    assert_eq!(read(&out, "flags"), FLAGS);
    assert_eq!(
        (
            mode(&out, "shop_db"),
            mode(&out, "db-user"),
            mode(&out, "db-port"),
            mode(&out, "flags")
        ),
        (0o600, 0o600, 0o640, 0o644)
    );
    // ObjectVersion ids are the file names, as the aws provider reports them.
    let ids: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("version "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        ids,
        [
            "shop_db",
            "db-user",
            "db-port",
            "db-tls",
            "tls.der",
            "_shop_api-key",
            "flags"
        ]
    );

    // Same SPC on the coffer socket with `backend: aws`, through a gRPC-core client.
    let attrs = json!({
        "backend": "aws",
        "region": REGION,
        "roleArn": ROLE,
        "objects": objects,
        "secretProviderClass": "shop-aws",
        "csi.storage.k8s.io/pod.name": POD,
        "csi.storage.k8s.io/pod.namespace": NS,
        "csi.storage.k8s.io/pod.uid": POD_UID,
        "csi.storage.k8s.io/serviceAccount.name": SA,
        "csi.storage.k8s.io/ephemeral": "true",
        "csi.storage.k8s.io/serviceAccount.tokens": jwt::tokens_attribute(&[(IRSA, &pod.token)]),
    });
    let req = support::mount_request(
        &attrs,
        None,
        "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/s/mount",
    );
    let m = python_mount(&coffer.socket("coffer"), "localhost", &req);
    assert_eq!(m["ok"], true, "{m}");
    assert_eq!(m["files"].as_array().unwrap().len(), 7, "{m}");
    let m = python_mount(&coffer.socket("aws"), "path", &req);
    assert_eq!(m["ok"], true, "{m}");

    // One STS call for the three mounts of the pod; the first reads each
    // secret, the next two only ask DescribeSecret whether it changed; one
    // GetParameters each.
    assert_eq!(aws_calls(&coffer, "sts.AssumeRoleWithWebIdentity"), 1.0);
    assert_eq!(aws_calls(&coffer, "secretsmanager.GetSecretValue"), 2.0);
    assert_eq!(aws_calls(&coffer, "secretsmanager.DescribeSecret"), 4.0);
    assert_eq!(
        aws_calls(&coffer, "secretsmanager.BatchGetSecretValue"),
        0.0
    );
    assert_eq!(aws_calls(&coffer, "ssm.GetParameters"), 3.0);
    assert_log_clean(
        &coffer,
        &[
            DB_PASSWORD,
            API_KEY,
            FLAGS,
            "binary-cert",
            &pod.token[pod.token.len() - 20..],
        ],
    );
}

#[test]
#[ignore = "needs moto: run make test"]
fn path_translation_and_version_pins() {
    let moto = Moto::start();
    seed(&moto, REGION);
    moto.create_secret(REGION, "shop/rotating", "v1-secret");
    let v2 = moto.put_secret_value(REGION, "shop/rotating", "v2-secret");
    moto.put_parameter(REGION, "/app/x", "x-one", "SecureString");
    moto.put_parameter(REGION, "/app/x", "x-two", "SecureString");
    moto.label_parameter(REGION, "/app/x", 1, "stable");
    moto.put_parameter(REGION, "/app/y", "y-one", "String");
    let coffer = start_coffer(&moto, &["--aws-region", REGION]);
    let pod = Pod::new(IRSA);

    let dash = pod.spc(
        "dash",
        "aws",
        &[("roleArn", ROLE), ("pathTranslation", "-")],
        "- {objectName: shop/db, objectType: secretsmanager}\n- {objectName: /shop/api-key, objectType: ssmparameter}\n",
    );
    let out = pod.dir.path().join("dash");
    mount_ok(&coffer, &dash, IRSA, &pod, &out);
    assert_eq!(read(&out, "shop-db"), DB_JSON);
    assert_eq!(read(&out, "-shop-api-key"), API_KEY);

    // Translation off: the leading "/" goes, the rest becomes directories.
    let off = pod.spc(
        "off",
        "aws",
        &[("roleArn", ROLE), ("pathTranslation", "False")],
        "- {objectName: /app/x, objectType: ssmparameter}\n- {objectName: /app/y, objectType: ssmparameter}\n",
    );
    let out = pod.dir.path().join("off");
    mount_ok(&coffer, &off, IRSA, &pod, &out);
    assert_eq!(read(&out, "app/x"), "x-two");
    assert_eq!(read(&out, "app/y"), "y-one");

    let before_get = aws_calls(&coffer, "secretsmanager.GetSecretValue");
    let before_params = aws_calls(&coffer, "ssm.GetParameters");
    let pins = pod.spc(
        "pins",
        "aws",
        &[("roleArn", ROLE)],
        &format!(
            "- {{objectName: shop/rotating, objectType: secretsmanager, objectAlias: current}}\n\
             - {{objectName: shop/rotating, objectType: secretsmanager, objectAlias: previous, objectVersionLabel: AWSPREVIOUS}}\n\
             - {{objectName: shop/rotating, objectType: secretsmanager, objectAlias: by-id, objectVersion: {v2}}}\n\
             - {{objectName: /app/x, objectType: ssmparameter, objectAlias: x-latest}}\n\
             - {{objectName: /app/x, objectType: ssmparameter, objectAlias: x-v1, objectVersion: \"1\"}}\n\
             - {{objectName: /app/x, objectType: ssmparameter, objectAlias: x-stable, objectVersionLabel: stable}}\n\
             - {{objectName: /app/y, objectType: ssmparameter, objectAlias: y}}\n"
        ),
    );
    let out = pod.dir.path().join("pins");
    mount_ok(&coffer, &pins, IRSA, &pod, &out);
    assert_eq!(read(&out, "current"), "v2-secret");
    assert_eq!(read(&out, "previous"), "v1-secret");
    assert_eq!(read(&out, "by-id"), "v2-secret");
    assert_eq!(read(&out, "x-latest"), "x-two");
    assert_eq!(read(&out, "x-v1"), "x-one");
    assert_eq!(read(&out, "x-stable"), "x-one");
    assert_eq!(read(&out, "y"), "y-one");
    // One GetSecretValue per distinct secret/version asked (the current
    // version and the pinned ID are the same version, but asked apart). A
    // parameter appears once per GetParameters call, so /app/x's three
    // forms take three.
    assert_eq!(
        aws_calls(&coffer, "secretsmanager.GetSecretValue") - before_get,
        3.0
    );
    assert_eq!(aws_calls(&coffer, "ssm.GetParameters") - before_params, 3.0);
    assert_log_clean(&coffer, &[DB_PASSWORD, API_KEY, "v1-secret", "x-one"]);
}

#[test]
#[ignore = "needs moto: run make test"]
fn twenty_five_secrets_read_once_and_fifty_mounts_one_sts_call() {
    let moto = Moto::start();
    let mut objects = String::new();
    for i in 0..25 {
        moto.create_secret(REGION, &format!("bulk/s{i:02}"), &format!("value-{i:02}"));
        objects.push_str(&format!(
            "- {{objectName: bulk/s{i:02}, objectType: secretsmanager}}\n"
        ));
    }
    for i in 0..12 {
        moto.put_parameter(
            REGION,
            &format!("/bulk/p{i:02}"),
            &format!("param-{i:02}"),
            "SecureString",
        );
        objects.push_str(&format!(
            "- {{objectName: /bulk/p{i:02}, objectType: ssmparameter}}\n"
        ));
    }
    let coffer = start_coffer(&moto, &["--aws-region", REGION]);
    let pod = Pod::new(IRSA);
    let spc = pod.spc("bulk", "aws", &[("roleArn", ROLE)], &objects);
    let out = pod.dir.path().join("bulk");
    let report = mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert!(report.starts_with("wrote 37 file(s)"), "{report}");
    assert_eq!(read(&out, "bulk_s24"), "value-24");
    assert_eq!(read(&out, "_bulk_p11"), "param-11");
    assert_eq!(aws_calls(&coffer, "secretsmanager.GetSecretValue"), 25.0);
    assert_eq!(aws_calls(&coffer, "secretsmanager.DescribeSecret"), 0.0);
    assert_eq!(aws_calls(&coffer, "ssm.GetParameters"), 2.0);

    // 49 more mounts of the same pod, 7 at a time: still one STS call, and
    // one DescribeSecret each for the value the first mount read.
    let small = pod.spc(
        "small",
        "aws",
        &[("roleArn", ROLE)],
        "- {objectName: bulk/s00, objectType: secretsmanager}\n",
    );
    std::thread::scope(|s| {
        for t in 0..7 {
            let (coffer, pod, small) = (&coffer, &pod, &small);
            s.spawn(move || {
                for k in 0..7 {
                    let out = pod.dir.path().join(format!("m{t}-{k}"));
                    mount_ok(coffer, small, IRSA, pod, &out);
                }
            });
        }
    });
    assert_eq!(aws_calls(&coffer, "sts.AssumeRoleWithWebIdentity"), 1.0);
    assert_eq!(aws_calls(&coffer, "secretsmanager.GetSecretValue"), 25.0);
    assert_eq!(aws_calls(&coffer, "secretsmanager.DescribeSecret"), 49.0);
    assert_eq!(
        coffer.metric("coffer_cache_lookups_total{cache=\"aws_credentials\",result=\"miss\"} "),
        1.0
    );
    assert_eq!(
        coffer.metric("coffer_cache_lookups_total{cache=\"aws_credentials\",result=\"hit\"} "),
        49.0
    );
    assert_eq!(
        coffer.metric("coffer_mounts_total{provider=\"aws\",code=\"OK\"} "),
        50.0
    );
    assert_log_clean(
        &coffer,
        &["value-0", "param-0", &pod.token[pod.token.len() - 20..]],
    );
}

/// Requests per API since `before`, as moto recorded them and as coffer's
/// `coffer_backend_requests_total` counts them (every attempt, any outcome).
struct Calls {
    moto: Vec<usize>,
    coffer: Vec<f64>,
}

const COUNTED: [(&str, &str); 5] = [
    (
        "secretsmanager.GetSecretValue",
        "secretsmanager.GetSecretValue",
    ),
    (
        "secretsmanager.DescribeSecret",
        "secretsmanager.DescribeSecret",
    ),
    (
        "secretsmanager.BatchGetSecretValue",
        "secretsmanager.BatchGetSecretValue",
    ),
    ("AmazonSSM.GetParameters", "ssm.GetParameters"),
    (
        "sts.AssumeRoleWithWebIdentity",
        "sts.AssumeRoleWithWebIdentity",
    ),
];

fn calls(moto: &Moto, coffer: &Coffer) -> Calls {
    let recorded = moto.requests();
    Calls {
        moto: COUNTED
            .iter()
            .map(|(api, _)| recorded.iter().filter(|r| r == api).count())
            .collect(),
        coffer: COUNTED
            .iter()
            .map(|(_, op)| {
                ["ok", "refused", "error"]
                    .iter()
                    .map(|outcome| {
                        coffer.metric(&format!(
                            "coffer_backend_requests_total{{backend=\"aws\",operation=\"{op}\",outcome=\"{outcome}\"}} "
                        ))
                    })
                    .sum()
            })
            .collect(),
    }
}

/// Asserts the requests since `before`: (GetSecretValue, DescribeSecret,
/// BatchGetSecretValue, GetParameters, AssumeRoleWithWebIdentity), counted
/// by moto and by coffer alike.
fn assert_calls(
    moto: &Moto,
    coffer: &Coffer,
    before: &Calls,
    want: [usize; 5],
    step: &str,
) -> Calls {
    let now = calls(moto, coffer);
    let by_moto: Vec<usize> = now
        .moto
        .iter()
        .zip(&before.moto)
        .map(|(a, b)| a - b)
        .collect();
    let by_coffer: Vec<usize> = now
        .coffer
        .iter()
        .zip(&before.coffer)
        .map(|(a, b)| (a - b) as usize)
        .collect();
    assert_eq!(
        by_moto, want,
        "{step}: requests moto answered (GetSecretValue, DescribeSecret, BatchGetSecretValue, GetParameters, STS)"
    );
    assert_eq!(by_coffer, want, "{step}: requests coffer counts");
    now
}

#[test]
#[ignore = "needs moto: run make test"]
fn republish_asks_describe_secret_and_reads_only_what_changed() {
    let moto = Moto::start();
    seed(&moto, REGION);
    moto.create_secret(REGION, "shop/rotating", "r1");
    moto.put_secret_value(REGION, "shop/rotating", "r2");
    let coffer = start_coffer(&moto, &["--aws-region", REGION]);
    let pod = Pod::new(IRSA);
    let spc = pod.spc(
        "republish",
        "aws",
        &[("roleArn", ROLE)],
        "- {objectName: shop/db, objectType: secretsmanager, objectAlias: db}\n\
         - {objectName: shop/cert, objectType: secretsmanager, objectAlias: cert}\n\
         - {objectName: shop/rotating, objectType: secretsmanager, objectAlias: current}\n\
         - {objectName: shop/rotating, objectType: secretsmanager, objectAlias: previous, objectVersionLabel: AWSPREVIOUS}\n\
         - {objectName: /shop/api-key, objectType: ssmparameter, objectAlias: api-key}\n\
         - {objectName: /shop/flags, objectType: ssmparameter, objectAlias: flags}\n",
    );
    moto.start_recording();
    let start = calls(&moto, &coffer);
    let out = pod.dir.path().join("volume");

    // Cold: one GetSecretValue per distinct secret/version, one
    // GetParameters for both parameters, one STS call.
    mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert_eq!(
        (
            read(&out, "db"),
            read(&out, "current"),
            read(&out, "previous")
        ),
        (DB_JSON.to_owned(), "r2".to_owned(), "r1".to_owned())
    );
    let now = assert_calls(&moto, &coffer, &start, [4, 0, 0, 1, 1], "cold mount");

    // Republish, nothing changed: one DescribeSecret per distinct secret,
    // no value read again.
    mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert_eq!(read(&out, "db"), DB_JSON);
    assert_eq!(std::fs::read(out.join("cert")).unwrap(), CERT);
    let now = assert_calls(&moto, &coffer, &now, [0, 3, 0, 1, 0], "unchanged republish");

    // One secret changed: it alone is read again.
    moto.put_secret_value(REGION, "shop/db", "db-v2");
    mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert_eq!(read(&out, "db"), "db-v2");
    assert_eq!(read(&out, "current"), "r2");
    let now = assert_calls(&moto, &coffer, &now, [1, 3, 0, 1, 0], "one secret changed");

    // A rotation moves both labels of shop/rotating: both versions are read.
    moto.put_secret_value(REGION, "shop/rotating", "r3");
    mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert_eq!(
        (read(&out, "current"), read(&out, "previous")),
        ("r3".to_owned(), "r2".to_owned())
    );
    let now = assert_calls(&moto, &coffer, &now, [2, 3, 0, 1, 0], "rotation");

    // Another pod never gets what this pod's credentials read: it reads
    // every value itself (and signs in itself).
    let other_token = pod.dir.path().join("other-token");
    std::fs::write(
        &other_token,
        jwt::sa_token(NS, SA, "web-other", "0c6d5a3e-other-pod", IRSA, 600),
    )
    .unwrap();
    let other_out = pod.dir.path().join("other");
    let (ok, report, err) = mount_as(
        &coffer,
        &spc,
        IRSA,
        &other_token,
        "web-other",
        "0c6d5a3e-other-pod",
        &other_out,
    );
    assert!(ok, "{err}\n{report}");
    assert_eq!(read(&other_out, "db"), "db-v2");
    let now = assert_calls(&moto, &coffer, &now, [4, 0, 0, 1, 1], "another pod");

    // A new token for the first pod means new credentials: what its old
    // credentials read is dropped and read again.
    std::fs::write(
        pod.token_file(),
        jwt::sa_token(NS, SA, POD, POD_UID, IRSA, 900),
    )
    .unwrap();
    mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert_eq!(read(&out, "db"), "db-v2");
    assert_calls(&moto, &coffer, &now, [4, 0, 0, 1, 1], "new credentials");
    // Per request (4 per mount): held values used on the unchanged
    // republish (4), the one-change republish (3) and the rotation (2).
    let hits = coffer.metric("coffer_cache_lookups_total{cache=\"aws_values\",result=\"hit\"} ");
    let misses = coffer.metric("coffer_cache_lookups_total{cache=\"aws_values\",result=\"miss\"} ");
    assert_eq!(
        (hits, misses),
        (4.0 + 3.0 + 2.0, 4.0 + 1.0 + 2.0 + 4.0 + 4.0)
    );
    assert_log_clean(&coffer, &[DB_PASSWORD, API_KEY, "db-v2", "r1", "r2", "r3"]);
}

#[test]
#[ignore = "needs moto: run make test"]
fn role_from_service_account_annotation_and_region_from_node_label() {
    let moto = Moto::start();
    seed(&moto, REGION);
    let dir = support::tempdir("kube");
    let (kube, kubeconfig) = stub::kube_api(
        vec![
            (
                NS.into(),
                SA.into(),
                vec![("eks.amazonaws.com/role-arn".into(), ROLE.into())],
            ),
            (NS.into(), "plain".into(), vec![]),
        ],
        vec![(
            "node-1".into(),
            vec![("topology.kubernetes.io/region".into(), REGION.into())],
        )],
        dir.path(),
    );
    let coffer = start_coffer(
        &moto,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node-name",
            "node-1",
        ],
    );
    let pod = Pod::new(IRSA);
    // No region, no roleArn: both from the Kubernetes API.
    let spc = pod.spc(
        "annotated",
        "aws",
        &[],
        "- {objectName: shop/db, objectType: secretsmanager, objectAlias: db}\n",
    );
    for k in 0..5 {
        let out = pod.dir.path().join(format!("v{k}"));
        mount_ok(&coffer, &spc, IRSA, &pod, &out);
        assert_eq!(read(&out, "db"), DB_JSON);
    }
    let sa_path = format!("/api/v1/namespaces/{NS}/serviceaccounts/{SA}");
    assert_eq!(kube.count(&sa_path), 1, "{:?}", kube.requests());
    assert_eq!(
        kube.count("/api/v1/nodes/node-1"),
        1,
        "{:?}",
        kube.requests()
    );
    assert_eq!(aws_calls(&coffer, "sts.AssumeRoleWithWebIdentity"), 1.0);

    // roleArn in the SPC: no ServiceAccount lookup at all.
    let other = Pod::new(IRSA);
    let with_role = other.spc(
        "with-role",
        "aws",
        &[("roleArn", "arn:aws:iam::123456789012:role/other")],
        "- {objectName: shop/db, objectType: secretsmanager, objectAlias: db}\n",
    );
    mount_ok(
        &coffer,
        &with_role,
        IRSA,
        &other,
        &other.dir.path().join("v"),
    );
    assert_eq!(kube.count(&sa_path), 1);
    assert_eq!(aws_calls(&coffer, "sts.AssumeRoleWithWebIdentity"), 2.0);

    // A ServiceAccount without the annotation: FailedPrecondition naming it.
    let out = other.dir.path().join("plain");
    let output = coffer_cmd()
        .args(["mount", "--spc"])
        .arg(&spc)
        .arg("--socket-dir")
        .arg(&coffer.socket_dir)
        .args([
            "--pod-name",
            POD,
            "--pod-namespace",
            NS,
            "--pod-uid",
            POD_UID,
        ])
        .args(["--service-account", "plain", "--timeout", "30s"])
        .arg("--token")
        .arg(format!("{IRSA}={}", other.token_file().display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        err.contains("code FailedPrecondition")
            && err.contains(
                "An IAM role must be associated with service account plain (namespace: shop)"
            ),
        "{err}"
    );
    assert_log_clean(&coffer, &[DB_PASSWORD, &pod.token[pod.token.len() - 20..]]);
}

#[test]
#[ignore = "needs moto: run make test"]
fn failover_region_only_when_the_primary_is_down() {
    let moto = Moto::start();
    // The values live in the failover region only.
    let (db_arn, _) = seed(&moto, FAILOVER);
    let db_primary_arn = db_arn.replace(FAILOVER, REGION);
    let pod = Pod::new(IRSA);
    let objects = format!(
        "- objectName: {db_primary_arn}\n  objectAlias: db\n  failoverObject:\n    objectName: {db_arn}\n\
         - {{objectName: /shop/api-key, objectType: ssmparameter, objectAlias: api-key}}\n"
    );
    let spc = pod.spc(
        "failover",
        "aws",
        &[
            ("region", REGION),
            ("failoverRegion", FAILOVER),
            ("roleArn", ROLE),
        ],
        &objects,
    );

    // Primary region down (nothing listens there): the failover region answers.
    let dead = format!("{REGION}=http://127.0.0.1:{}", support::free_port());
    let coffer = start_coffer(&moto, &["--aws-region-endpoint", &dead]);
    let out = pod.dir.path().join("down");
    mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert_eq!(read(&out, "db"), DB_JSON);
    assert_eq!(read(&out, "api-key"), API_KEY);
    drop(coffer);

    // Primary up but without the objects (a 4xx): an error, no failover.
    let coffer = start_coffer(&moto, &[]);
    let err = mount_err(&coffer, &spc, &pod);
    assert!(
        err.contains("code NotFound")
            && err.contains(&format!("secret {db_primary_arn:?} in {REGION}"))
            && err.contains("ResourceNotFoundException"),
        "{err}"
    );
    assert_eq!(aws_calls(&coffer, "secretsmanager.GetSecretValue"), 0.0);
    assert_eq!(
        coffer.metric("coffer_backend_requests_total{backend=\"aws\",operation=\"secretsmanager.GetSecretValue\",outcome=\"refused\"} "),
        1.0
    );
    assert_log_clean(&coffer, &[DB_PASSWORD, API_KEY]);
}

#[test]
#[ignore = "needs moto: run make test"]
fn errors_name_the_object_and_the_cause() {
    let moto = Moto::start();
    seed(&moto, REGION);
    let coffer = start_coffer(&moto, &["--aws-region", REGION]);
    let pod = Pod::new(IRSA);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "- {objectName: shop/nope, objectType: secretsmanager}\n",
            &[("roleArn", ROLE)],
            "code NotFound",
            &[
                "secret \"shop/nope\" in us-west-2",
                "ResourceNotFoundException",
            ],
        ),
        (
            "- {objectName: /shop/nope, objectType: ssmparameter}\n",
            &[("roleArn", ROLE)],
            "code NotFound",
            &["parameter \"/shop/nope\" in us-west-2", "ParameterNotFound"],
        ),
        (
            "- objectName: shop/db\n  objectType: secretsmanager\n  jmesPath: [{path: nothing.here, objectAlias: nope}]\n",
            &[("roleArn", ROLE)],
            "code NotFound",
            &["JMES Path - nothing.here for object alias - nope does not point to a valid object."],
        ),
        (
            "- objectName: /shop/api-key\n  objectType: ssmparameter\n  jmesPath: [{path: a, objectAlias: b}]\n",
            &[("roleArn", ROLE)],
            "code InvalidArgument",
            &["Invalid JSON used with jmesPath in secret: /shop/api-key."],
        ),
        (
            "- {objectName: shop/db, objectType: ssm}\n",
            &[("roleArn", ROLE)],
            "code InvalidArgument",
            &["Invalid objectType: ssm"],
        ),
        (
            "- {objectName: shop/db, objectType: secretsmanager}\n",
            &[("roleArn", ROLE), ("usePodIdentity", "true")],
            "code FailedPrecondition",
            &["pods.eks.amazonaws.com", "tokenRequests"],
        ),
        (
            "- {objectName: shop/db, objectType: secretsmanager}\n",
            &[],
            "code FailedPrecondition",
            &["service account web", "roleArn", "--aws-kube-api=false"],
        ),
    ];
    let coffer_no_kube = start_coffer(&moto, &["--aws-region", REGION, "--aws-kube-api=false"]);
    for (k, (objects, params, code, needles)) in cases.iter().enumerate() {
        let spc = pod.spc(&format!("case{k}"), "aws", params, objects);
        let target = if params.is_empty() {
            &coffer_no_kube
        } else {
            &coffer
        };
        let err = mount_err(target, &spc, &pod);
        assert!(err.contains(code), "case {k}: {err}");
        for n in *needles {
            assert!(err.contains(n), "case {k}: {err:?} should contain {n:?}");
        }
        assert!(!err.contains(DB_PASSWORD) && !err.contains("eyJ"), "{err}");
    }
    assert_log_clean(&coffer, &[DB_PASSWORD, API_KEY]);
}

#[test]
#[ignore = "needs moto: run make test"]
fn pod_identity_through_the_agent() {
    let moto = Moto::start();
    seed(&moto, REGION);
    let pod = Pod::new(POD_IDENTITY);
    let expected = pod.token.clone();
    let agent = Stub::start(move |req| {
        if req.path != "/v1/credentials" || req.header("authorization") != Some(expected.as_str()) {
            return (
                401,
                "application/json",
                br#"{"code":"InvalidToken","message":"bad token"}"#.to_vec(),
            );
        }
        let body = json!({
            "AccessKeyId": "ASIASTANDINAGENT0001",
            "SecretAccessKey": "standin-agent-secret-access-key",
            "Token": "standin-agent-session-token",
            "AccountId": "123456789012",
            "Expiration": jwt::rfc3339(jwt::now() + 3600),
        });
        (200, "application/json", body.to_string().into_bytes())
    });
    let endpoint = format!("{}/v1/credentials", agent.addr);
    let coffer = start_coffer(
        &moto,
        &[
            "--aws-region",
            REGION,
            "--aws-pod-identity-endpoint",
            &endpoint,
        ],
    );
    let spc = pod.spc(
        "pod-identity",
        "aws",
        &[("usePodIdentity", "true"), ("preferredAddressType", "ipv4")],
        "- {objectName: shop/db, objectType: secretsmanager, objectAlias: db}\n- {objectName: /shop/api-key, objectType: ssmparameter, objectAlias: key}\n",
    );
    for k in 0..3 {
        let out = pod.dir.path().join(format!("v{k}"));
        mount_ok(&coffer, &spc, POD_IDENTITY, &pod, &out);
        assert_eq!(read(&out, "db"), DB_JSON);
        assert_eq!(read(&out, "key"), API_KEY);
    }
    assert_eq!(
        agent.count("/v1/credentials"),
        1,
        "{:?}",
        agent.requests().len()
    );
    assert_eq!(aws_calls(&coffer, "eks-pod-identity.GetCredentials"), 1.0);
    assert_eq!(aws_calls(&coffer, "sts.AssumeRoleWithWebIdentity"), 0.0);
    assert_log_clean(
        &coffer,
        &[
            DB_PASSWORD,
            API_KEY,
            "standin-agent-secret-access-key",
            "standin-agent-session-token",
            &pod.token[pod.token.len() - 20..],
        ],
    );
}

#[test]
#[ignore = "needs the coffer binary: run make test"]
fn examples_pass_coffer_check() {
    let dir = support::manifest_dir().join("examples/aws");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let out = coffer_cmd().arg("check").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs moto: run make test"]
fn templates_render_a_dotenv_from_aws_secrets() {
    let moto = Moto::start();
    seed(&moto, REGION);
    let coffer = start_coffer(&moto, &[]);
    let pod = Pod::new(IRSA);
    let templates = "- fileName: app.env\n  filePermission: \"0600\"\n  template: |\n    DB_USER={{ db.username }}\n    DB_PASSWORD={{ db.password | dotenv }}\n    DB_PORT={{ db.port }}\n    API_KEY={{ api }}\n";
    let spc = pod.spc(
        "shop-env",
        "aws",
        &[("region", REGION), ("roleArn", ROLE), ("templates", templates)],
        "- {objectName: shop/db, objectType: secretsmanager, objectAlias: db, templateOnly: true}\n- {objectName: /shop/api-key, objectType: ssmparameter, objectAlias: api, templateOnly: true}\n",
    );
    let out = pod.dir.path().join("volume");
    let report = mount_ok(&coffer, &spc, IRSA, &pod, &out);
    assert!(report.starts_with("wrote 1 file(s)"), "{report}");
    assert_eq!(
        read(&out, "app.env"),
        format!("DB_USER=shop\nDB_PASSWORD=\"{DB_PASSWORD}\"\nDB_PORT=5432\nAPI_KEY={API_KEY}\n")
    );
    assert_eq!(mode(&out, "app.env"), 0o600);
    assert!(
        !out.join("db").exists() && !out.join("api").exists(),
        "templateOnly objects are not files"
    );
    let ids: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("version "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(ids, ["db", "api", "app.env"]);
    assert_log_clean(
        &coffer,
        &[DB_PASSWORD, API_KEY, &pod.token[pod.token.len() - 20..]],
    );
}

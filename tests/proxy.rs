//! Proxies: each of coffer's three HTTP stacks honours `HTTPS_PROXY` /
//! `HTTP_PROXY` and `NO_PROXY` as docs/operations.md#proxies says, against
//! a forward proxy on 127.0.0.1 that records what went through it:
//!
//! * Vault/OpenBao (reqwest): a real OpenBao dev server;
//! * AWS (the SDK's hyper client, given the environment's proxy settings):
//!   a real moto server;
//! * the Kubernetes API (kube-rs, with `--kubeconfig`): the test's stand-in.
//!
//! Needs `bash e2e/setup.sh` (make test runs it):
//! `cargo test --test proxy -- --include-ignored`.

mod support;

use std::path::{Path, PathBuf};

use serde_json::json;
use support::bao::Bao;
use support::moto::Moto;
use support::proxy::ForwardProxy;
use support::stub;
use support::{Coffer, coffer_cmd, jwt};

const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-0";
const POD_UID: &str = "5d0c7a52-4f0e-4c1b-9a57-1c2d3e4f5a6b";
const REGION: &str = "us-west-2";
const ROLE: &str = "arn:aws:iam::123456789012:role/shop-web";

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// `coffer mount` of `spc` with one token for `audience`; (success, stderr).
fn mount(coffer: &Coffer, dir: &Path, spc: &Path, audience: &str) -> (bool, String) {
    let token = dir.join(format!("token-{audience}"));
    std::fs::write(&token, jwt::sa_token(NS, SA, POD, POD_UID, audience, 600)).unwrap();
    let out = dir.join(format!("out-{}", support::random_hex(4)));
    let output = coffer_cmd()
        .args(["mount", "--spc"])
        .arg(spc)
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
        .args(["--service-account", SA, "--timeout", "60s", "--token"])
        .arg(format!("{audience}={}", token.display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_spc(dir: &Path, name: &str, provider: &str, params: &[(&str, &str)]) -> PathBuf {
    let mut text = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  provider: {provider}\n  parameters:\n"
    );
    for (k, v) in params {
        text.push_str(&format!("    {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
#[ignore = "needs OpenBao: run make test"]
fn vault_requests_go_through_http_proxy_unless_no_proxy_matches() {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["app"]);
    bao.kv_put(
        "secret/data/app/db",
        json!({"password": "through-the-proxy"}),
    );
    let dir = support::tempdir("proxy-vault");
    let spc = write_spc(
        dir.path(),
        "app",
        "vault",
        &[
            ("roleName", "web"),
            ("vaultAddress", &bao.addr),
            ("vaultAuthMountPath", "jwt"),
            (
                "objects",
                "- {objectName: password, secretPath: secret/data/app/db, secretKey: password}",
            ),
        ],
    );
    let vault = host_port(&bao.addr);

    let proxy = ForwardProxy::start();
    let coffer = Coffer::start_with_env(&["vault"], &[], &[("HTTP_PROXY", &proxy.url)]);
    let (ok, err) = mount(&coffer, dir.path(), &spc, "vault");
    assert!(ok, "mount through the proxy failed: {err}");
    assert!(
        proxy.targets().contains(&vault),
        "OpenBao was not reached through the proxy: {:?}",
        proxy.targets()
    );

    let bypassed = ForwardProxy::start();
    let coffer = Coffer::start_with_env(
        &["vault"],
        &[],
        &[("HTTP_PROXY", &bypassed.url), ("NO_PROXY", "127.0.0.1")],
    );
    let (ok, err) = mount(&coffer, dir.path(), &spc, "vault");
    assert!(ok, "mount with NO_PROXY failed: {err}");
    assert_eq!(bypassed.targets(), Vec::<String>::new(), "NO_PROXY ignored");
}

#[test]
#[ignore = "needs moto: run make test"]
fn aws_and_kubernetes_requests_go_through_the_proxy_unless_no_proxy_matches() {
    let moto = Moto::start();
    moto.create_secret(REGION, "shop/db", r#"{"password":"through-the-proxy"}"#);
    let dir = support::tempdir("proxy-aws");
    let (kube, kubeconfig) = stub::kube_api(
        vec![(
            NS.into(),
            SA.into(),
            vec![("eks.amazonaws.com/role-arn".into(), ROLE.into())],
        )],
        vec![],
        dir.path(),
    );
    // No roleArn: the role comes from the ServiceAccount, through kube-rs.
    let spc = write_spc(
        dir.path(),
        "db",
        "aws",
        &[
            ("region", REGION),
            (
                "objects",
                "- {objectName: shop/db, objectType: secretsmanager}",
            ),
        ],
    );
    let args = [
        "--aws-endpoint-url",
        moto.addr.as_str(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];

    let proxy = ForwardProxy::start();
    let coffer = Coffer::start_with_env(
        &["aws"],
        &args,
        &[("HTTP_PROXY", &proxy.url), ("HTTPS_PROXY", &proxy.url)],
    );
    let (ok, err) = mount(&coffer, dir.path(), &spc, "sts.amazonaws.com");
    assert!(ok, "mount through the proxy failed: {err}");
    let targets = proxy.targets();
    assert!(
        targets.contains(&host_port(&moto.addr)),
        "moto (STS, Secrets Manager) not reached through the proxy: {targets:?}"
    );
    assert!(
        targets.contains(&host_port(&kube.addr)),
        "the Kubernetes API not reached through the proxy: {targets:?}"
    );

    let bypassed = ForwardProxy::start();
    let coffer = Coffer::start_with_env(
        &["aws"],
        &args,
        &[
            ("HTTP_PROXY", &bypassed.url),
            ("HTTPS_PROXY", &bypassed.url),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    let (ok, err) = mount(&coffer, dir.path(), &spc, "sts.amazonaws.com");
    assert!(ok, "mount with NO_PROXY failed: {err}");
    assert_eq!(bypassed.targets(), Vec::<String>::new(), "NO_PROXY ignored");
}

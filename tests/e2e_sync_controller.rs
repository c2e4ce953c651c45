//! coffer as the provider of the Secrets Store Sync Controller
//! (kubernetes-sigs/secrets-store-sync-controller), against a real OpenBao
//! and a real moto server. The requests are built exactly as the
//! controller's provider client builds them ([`SyncController::request`]):
//! the controller's own pod name and UID for every SecretSync, the
//! SecretSync's namespace and ServiceAccount, one 600-second token per
//! SecretSync, `secrets` `{}`, the fixed target path `/mnt/secrets-store`.
//!
//! What matters: two SecretSyncs share the controller's pod UID but not
//! their identity. No cache (Vault logins, Vault dynamic responses, AWS
//! credentials) may hand one SecretSync what another's ServiceAccount got.
//!
//! Needs `bash e2e/setup.sh` (make test runs it).

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::bao::Bao;
use support::moto::Moto;
use support::mount::{Mounted, SecretSync, SyncController};
use support::{Coffer, jwt, stub};
use tonic::Code;

const DB_PASSWORD: &str = "pw-sync-Xr4t9Lm2";
const LOGINS: &str =
    "coffer_backend_requests_total{backend=\"vault\",operation=\"login\",outcome=\"ok\"}";

fn controller() -> SyncController {
    SyncController {
        pod_name: "secrets-store-sync-controller-6b9c8d7f5-x2k4q".into(),
        pod_uid: "7d2f4c1e-9a3b-4e5f-8c6d-0b1a2c3d4e5f".into(),
    }
}

async fn sync(coffer: &Coffer, socket: &str, s: &SecretSync) -> Result<Mounted, tonic::Status> {
    support::mount::mount(&coffer.socket(socket), controller().request(s)).await
}

fn text(m: &Mounted, path: &str) -> String {
    String::from_utf8(m.files[path].1.clone()).unwrap()
}

/// OpenBao with one role that two ServiceAccounts (team-a/app and
/// team-b/app) may log in with, a PKI engine and a KV secret.
fn bao() -> Bao {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "sync",
        r#"
path "secret/data/shared/*" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
"#,
    );
    bao.write(
        "auth/jwt/role/sync",
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_claims": {"sub": [jwt::subject("team-a", "app"), jwt::subject("team-b", "app")]},
            "bound_audiences": ["vault"],
            "token_ttl": "1h",
            "token_policies": ["sync"],
        }),
    );
    bao.kv_put(
        "secret/data/shared/db",
        json!({"username": "app", "password": DB_PASSWORD}),
    );
    bao.enable_secrets("pki", "pki", json!({}));
    bao.write("sys/mounts/pki/tune", json!({"max_lease_ttl": "87600h"}));
    bao.write(
        "pki/root/generate/internal",
        json!({"common_name": "coffer-sync-ca", "ttl": "8760h"}),
    );
    bao.write(
        "pki/roles/web",
        json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "max_ttl": "72h", "ttl": "1h"}),
    );
    bao
}

const VAULT_OBJECTS: &str = r#"
- objectName: tls.crt
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {common_name: www.example.com, ttl: 1h}
  secretKey: certificate
- {objectName: whoami, secretPath: auth/token/lookup-self, secretKey: display_name}
- {objectName: db, secretPath: secret/data/shared/db, allKeys: true}
"#;

fn vault_params(bao: &Bao) -> BTreeMap<String, String> {
    [
        ("roleName", "sync"),
        ("vaultAddress", bao.addr.as_str()),
        ("vaultAuthMountPath", "jwt"),
        ("objects", VAULT_OBJECTS),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn vault_secret_syncs_sharing_the_controller_pod_uid_stay_separate_identities() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let c = controller();
    let params = vault_params(&bao);
    let a = SecretSync::new(&c, "team-a", "app", params.clone(), &["vault"]);
    let b = SecretSync::new(&c, "team-b", "app", params.clone(), &["vault"]);

    let first_a = sync(&coffer, "vault", &a).await.unwrap();
    let paths: Vec<&str> = first_a.files.keys().map(String::as_str).collect();
    assert_eq!(paths, ["db/password", "db/username", "tls.crt", "whoami"]);
    assert_eq!(text(&first_a, "db/password"), DB_PASSWORD);
    assert_eq!(first_a.files["tls.crt"].0, 0o644, "the controller's 420");
    assert!(text(&first_a, "whoami").contains("system:serviceaccount:team-a:app"));

    // Same pod UID, same class, another ServiceAccount: its own login, its
    // own Vault token, its own certificate.
    let first_b = sync(&coffer, "vault", &b).await.unwrap();
    assert!(
        text(&first_b, "whoami").contains("system:serviceaccount:team-b:app"),
        "{}",
        text(&first_b, "whoami")
    );
    assert!(
        first_b.files["tls.crt"].1 != first_a.files["tls.crt"].1,
        "team-b must not get the certificate issued to team-a"
    );
    assert_eq!(coffer.metric(LOGINS), 2.0);

    // Resyncs: each SecretSync reuses its own login and certificate.
    for _ in 0..2 {
        let again_a = sync(&coffer, "vault", &a).await.unwrap();
        let again_b = sync(&coffer, "vault", &b).await.unwrap();
        assert!(again_a.files["tls.crt"].1 == first_a.files["tls.crt"].1);
        assert!(again_b.files["tls.crt"].1 == first_b.files["tls.crt"].1);
        assert!(text(&again_b, "whoami").contains("team-b"));
    }
    assert_eq!(coffer.metric(LOGINS), 2.0);
    assert_eq!(
        coffer.metric("coffer_cache_lookups_total{cache=\"vault_dynamic\",result=\"hit\"}"),
        4.0
    );

    // A SecretSync whose ServiceAccount the role does not accept gets
    // nothing, although its request carries the same pod UID.
    let c_sync = SecretSync::new(&c, "team-c", "app", params.clone(), &["vault"]);
    let err = sync(&coffer, "vault", &c_sync)
        .await
        .err()
        .expect("team-c must be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("system:serviceaccount:team-c:app"),
        "{}",
        err.message()
    );

    // A controller started without --token-request-audience sends no tokens.
    let no_tokens = SecretSync::new(&c, "team-a", "app", params, &[]);
    let err = sync(&coffer, "vault", &no_tokens)
        .await
        .err()
        .expect("no token");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("--token-request-audience"),
        "{}",
        err.message()
    );
    let log = coffer.log_text();
    assert!(!log.contains(DB_PASSWORD) && !log.contains("eyJ"), "{log}");
}

const REGION: &str = "us-west-2";
const IRSA: &str = "sts.amazonaws.com";
const STS_CALLS: &str = "coffer_backend_requests_total{backend=\"aws\",operation=\"sts.AssumeRoleWithWebIdentity\",outcome=\"ok\"} ";

#[tokio::test]
#[ignore = "needs moto: run make test"]
async fn aws_secret_syncs_sharing_the_controller_pod_uid_get_their_own_credentials() {
    let moto = Moto::start();
    moto.create_secret(
        REGION,
        "shop/db",
        &format!(r#"{{"username":"app","password":"{DB_PASSWORD}"}}"#),
    );
    let dir = support::tempdir("sync-kube");
    let role = |team: &str| format!("arn:aws:iam::123456789012:role/{team}-app");
    let (kube, kubeconfig) = stub::kube_api(
        vec![
            (
                "team-a".into(),
                "app".into(),
                vec![("eks.amazonaws.com/role-arn".into(), role("team-a"))],
            ),
            (
                "team-b".into(),
                "app".into(),
                vec![("eks.amazonaws.com/role-arn".into(), role("team-b"))],
            ),
        ],
        vec![],
        dir.path(),
    );
    let coffer = Coffer::start(
        &["aws"],
        &[
            "--aws-endpoint-url",
            &moto.addr,
            "--aws-region",
            REGION,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let c = controller();
    let params: BTreeMap<String, String> = [(
        "objects".to_owned(),
        "- {objectName: shop/db, objectType: secretsmanager, objectAlias: db, allKeys: true}\n"
            .to_owned(),
    )]
    .into();
    let a = SecretSync::new(&c, "team-a", "app", params.clone(), &[IRSA]);
    let b = SecretSync::new(&c, "team-b", "app", params.clone(), &[IRSA]);
    for _ in 0..3 {
        for s in [&a, &b] {
            let m = sync(&coffer, "aws", s).await.unwrap();
            assert_eq!(text(&m, "db/password"), DB_PASSWORD);
        }
    }
    // Each SecretSync's ServiceAccount was looked up, and each got its own
    // credentials, once.
    for team in ["team-a", "team-b"] {
        assert_eq!(
            kube.count(&format!("/api/v1/namespaces/{team}/serviceaccounts/app")),
            1,
            "{:?}",
            kube.requests()
        );
    }
    assert_eq!(coffer.metric(STS_CALLS), 2.0);

    // The same role for both (roleArn in the class), same pod UID, same
    // region: still one STS call per ServiceAccount token, never shared.
    let mut with_role = params;
    with_role.insert("roleArn".into(), role("shared"));
    let a = SecretSync::new(&c, "team-a", "app", with_role.clone(), &[IRSA]);
    let other = SecretSync::new(&c, "team-a", "other", with_role, &[IRSA]);
    for _ in 0..2 {
        sync(&coffer, "aws", &a).await.unwrap();
        sync(&coffer, "aws", &other).await.unwrap();
    }
    assert_eq!(coffer.metric(STS_CALLS), 4.0);
    let log = coffer.log_text();
    assert!(!log.contains(DB_PASSWORD) && !log.contains("eyJ"), "{log}");
}

//! `allKeys` (every key of a secret as its own file) and `optional`
//! (a missing object is left out, nothing else is forgiven) against a real
//! OpenBao and a real moto server, on every socket: `vault`, `openbao`,
//! `aws` and `coffer`. The driver's side is a tonic client built from
//! coffer's own stand-in module, so contents and versions can be checked.
//!
//! Needs `bash e2e/setup.sh` (make test runs it).

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::bao::Bao;
use support::moto::Moto;
use support::mount::{MountBuilder, Mounted};
use support::proxy::{Mode, Proxy};
use support::{Coffer, coffer_cmd, jwt};
use tonic::Code;

const NS: &str = "shop";
const SA: &str = "web";
const POD: &str = "web-0";
const POD_UID: &str = "5b0c6a7e-2f43-4d1a-9c8e-1a2b3c4d5e6f";
const DB_PASSWORD: &str = "pw-Hq2n8xV0";

/// OpenBao with jwt auth, a KV v2 and a KV v1 secret, one secret whose keys
/// cannot be file names, and a policy that allows `secret/data/app/*` only.
fn bao() -> Bao {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"
path "secret/data/app/*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["app"]);
    bao.jwt_role("jwt", "web-bao", &jwt::subject(NS, SA), "openbao", &["app"]);
    bao.kv_put(
        "secret/data/app/db",
        json!({"username": "shop", "password": DB_PASSWORD, "port": 5432, "tls": {"ca": "pem"}}),
    );
    bao.enable_secrets("kv1", "kv", json!({"version": "1"}));
    bao.write("kv1/legacy", json!({"user": "u1", "token": "t1"}));
    bao.kv_put("secret/data/app/slash", json!({"ok": "1", "a/b": "x"}));
    bao.kv_put("secret/data/app/dots", json!({"..": "x"}));
    bao.kv_put("secret/data/app/b64", json!({"k": "%%% not base64"}));
    bao
}

fn params(bao: &Bao, objects: &str) -> BTreeMap<String, String> {
    [
        ("roleName", "web"),
        ("vaultAddress", bao.addr.as_str()),
        ("vaultAuthMountPath", "jwt"),
        ("objects", objects),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// A mount of `objects` through the `vault` socket with the vault audience's token.
async fn vault_mount(
    coffer: &Coffer,
    bao: &Bao,
    objects: &str,
    token: &str,
) -> Result<Mounted, tonic::Status> {
    mount_on(coffer, "vault", params(bao, objects), "vault", token).await
}

/// The pod's token for `audience`, minted once per audience.
fn token(audience: &str) -> String {
    jwt::sa_token(NS, SA, POD, POD_UID, audience, 3600)
}

async fn mount_on(
    coffer: &Coffer,
    socket: &str,
    params: BTreeMap<String, String>,
    audience: &str,
    token: &str,
) -> Result<Mounted, tonic::Status> {
    let request = MountBuilder::new(socket, NS, SA, POD, POD_UID)
        .params(params)
        .token(audience, token.to_owned())
        .build();
    support::mount::mount(&coffer.socket(socket), request).await
}

fn text(m: &Mounted, path: &str) -> String {
    let (_, bytes) = m
        .files
        .get(path)
        .unwrap_or_else(|| panic!("no file {path:?}; files: {:?}", m.files.keys()));
    String::from_utf8(bytes.clone()).unwrap()
}

fn assert_log_clean(coffer: &Coffer, secrets: &[&str]) {
    let log = coffer.log_text();
    for s in secrets {
        assert!(!log.contains(s), "coffer log contains {s:?}:\n{log}");
    }
    assert!(!log.contains("eyJ"), "coffer log contains a JWT:\n{log}");
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn all_keys_write_one_versioned_file_per_key_of_kv1_and_kv2_secrets() {
    let bao = bao();
    let coffer = Coffer::start(&["vault", "openbao", "coffer"], &[]);
    let vault_token = token("vault");
    let objects = r#"
- {objectName: db, secretPath: secret/data/app/db, allKeys: true, filePermission: 0600}
- {objectName: legacy, secretPath: kv1/legacy, allKeys: true}
- {objectName: conf, secretPath: secret/data/app/db, allKeys: true, templateOnly: true}
- {objectName: port, secretPath: secret/data/app/db, secretKey: port}
"#;
    let mut p = params(&bao, objects);
    p.insert(
        "templates".into(),
        "- fileName: app.env\n  template: |\n    USER={{ conf.username }}\n    PASS={{ files[\"conf/password\"] }}\n"
            .into(),
    );
    let first = mount_on(&coffer, "vault", p.clone(), "vault", &vault_token)
        .await
        .unwrap();
    let paths: Vec<&str> = first.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "app.env",
            "db/password",
            "db/port",
            "db/tls",
            "db/username",
            "legacy/token",
            "legacy/user",
            "port"
        ]
    );
    assert_eq!(text(&first, "db/password"), DB_PASSWORD);
    assert_eq!(text(&first, "db/port"), "5432");
    assert_eq!(text(&first, "db/tls"), r#"{"ca":"pem"}"#);
    assert_eq!(text(&first, "legacy/user"), "u1");
    assert_eq!(first.files["db/password"].0, 0o600, "the object's mode");
    assert_eq!(first.files["legacy/user"].0, 0o644, "the request's mode");
    assert_eq!(
        text(&first, "app.env"),
        format!("USER=shop\nPASS={DB_PASSWORD}\n")
    );
    // One version per key file (templateOnly ones too), none for the directories.
    let ids: Vec<&str> = first.versions.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "app.env",
            "conf/password",
            "conf/port",
            "conf/tls",
            "conf/username",
            "db/password",
            "db/port",
            "db/tls",
            "db/username",
            "legacy/token",
            "legacy/user",
            "port"
        ]
    );
    assert_ne!(first.versions["db/password"], first.versions["db/username"]);

    // A new password: only the password files' versions (and the template's) change.
    bao.kv_put(
        "secret/data/app/db",
        json!({"username": "shop", "password": "rotated", "port": 5432, "tls": {"ca": "pem"}}),
    );
    let second = mount_on(&coffer, "vault", p, "vault", &vault_token)
        .await
        .unwrap();
    assert_eq!(text(&second, "db/password"), "rotated");
    let changed: Vec<&str> = first
        .versions
        .iter()
        .filter(|(id, v)| second.versions[*id] != **v)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(changed, ["app.env", "conf/password", "db/password"]);

    // The same class on the openbao socket (bao* names) and on coffer's own.
    let bao_params: BTreeMap<String, String> = [
        ("baoRoleName", "web-bao"),
        ("baoAddress", bao.addr.as_str()),
        ("baoAuthMountPath", "jwt"),
        (
            "objects",
            "- {objectName: legacy, secretPath: kv1/legacy, allKeys: true}\n- {objectName: maybe, secretPath: secret/data/app/none, secretKey: k, optional: true}\n",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let on_bao = mount_on(&coffer, "openbao", bao_params, "openbao", &token("openbao"))
        .await
        .unwrap();
    assert_eq!(text(&on_bao, "legacy/token"), "t1");
    assert_eq!(on_bao.versions["maybe"], "absent");
    let mut own = params(
        &bao,
        "- {objectName: legacy, secretPath: kv1/legacy, allKeys: true}\n",
    );
    own.insert("backend".into(), "vault".into());
    let on_coffer = mount_on(&coffer, "coffer", own, "vault", &vault_token)
        .await
        .unwrap();
    assert_eq!(on_coffer.files.len(), 2);
    assert_log_clean(&coffer, &[DB_PASSWORD, "rotated"]);
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn all_keys_that_are_not_file_names_fail_the_mount_naming_the_key() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let vault_token = token("vault");
    let cases = [
        ("secret/data/app/slash", "\"a/b\"", "contains \"/\""),
        ("secret/data/app/dots", "\"..\"", "\"..\" element"),
    ];
    for (path, key, reason) in cases {
        let objects = format!(
            "- {{objectName: db, secretPath: secret/data/app/db, secretKey: username}}\n- {{objectName: bad, secretPath: {path}, allKeys: true}}\n"
        );
        let err = mount_on(
            &coffer,
            "vault",
            params(&bao, &objects),
            "vault",
            &vault_token,
        )
        .await
        .err()
        .expect("mount must fail");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let msg = err.message();
        assert!(
            msg.contains(&format!("object \"bad\" (allKeys): key {key}")) && msg.contains(reason),
            "{msg}"
        );
    }
    // A key colliding with another object's file after expansion.
    let objects = "- {objectName: db/username, secretPath: secret/data/app/db, secretKey: port}\n- {objectName: db, secretPath: secret/data/app/db, allKeys: true}\n";
    let err = vault_mount(&coffer, &bao, objects, &vault_token)
        .await
        .err()
        .expect("mount must fail");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("both write the file \"db/username\""),
        "{}",
        err.message()
    );
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn optional_vault_objects_are_left_out_only_when_they_do_not_exist() {
    let bao = bao();
    let proxy = Proxy::start(&bao.addr, Mode::Pass).await;
    let coffer = Coffer::start(&["vault", "coffer"], &[]);
    let vault_token = token("vault");
    let objects = r#"
- {objectName: user, secretPath: secret/data/app/db, secretKey: username}
- {objectName: missing, secretPath: secret/data/app/nope, secretKey: k, optional: true}
- {objectName: no-key, secretPath: secret/data/app/db, secretKey: nope, optional: true}
- {objectName: gone, secretPath: secret/data/app/gone, allKeys: true, optional: true}
"#;
    let m = vault_mount(&coffer, &bao, objects, &vault_token)
        .await
        .unwrap();
    let paths: Vec<&str> = m.files.keys().map(String::as_str).collect();
    assert_eq!(paths, ["user"]);
    for id in ["missing", "no-key", "gone"] {
        assert_eq!(m.versions[id], "absent", "{id}");
    }
    assert_eq!(m.versions["user"].len(), 43);

    // Once it exists, it is mounted (on coffer's own socket this time).
    bao.kv_put("secret/data/app/gone", json!({"a": "1", "b": "2"}));
    let mut own = params(&bao, objects);
    own.insert("backend".into(), "vault".into());
    let m = mount_on(&coffer, "coffer", own, "vault", &vault_token)
        .await
        .unwrap();
    assert_eq!(text(&m, "gone/a"), "1");
    assert!(!m.versions.contains_key("gone"));
    assert_eq!(m.versions["missing"], "absent");

    // Everything that is not NotFound still fails the mount.
    let denied = "- {objectName: user, secretPath: secret/data/app/db, secretKey: username}\n- {objectName: other, secretPath: secret/data/other/x, secretKey: k, optional: true}\n";
    let err = vault_mount(&coffer, &bao, denied, &vault_token)
        .await
        .err()
        .expect("permission denied must fail");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("object \"other\""),
        "{}",
        err.message()
    );

    let parse = "- {objectName: k, secretPath: secret/data/app/b64, secretKey: k, encoding: base64, optional: true}\n";
    let err = vault_mount(&coffer, &bao, parse, &vault_token)
        .await
        .err()
        .expect("a value that does not decode must fail");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let intruder = jwt::sa_token(NS, "intruder", POD, POD_UID, "vault", 600);
    let err = mount_on(&coffer, "vault", params(&bao, objects), "vault", &intruder)
        .await
        .err()
        .expect("a refused login must fail");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Vault unreachable for the reads (the login is cached from before).
    let mut through_proxy = params(&bao, objects);
    through_proxy.insert("vaultAddress".into(), proxy.addr.clone());
    mount_on(
        &coffer,
        "vault",
        through_proxy.clone(),
        "vault",
        &vault_token,
    )
    .await
    .unwrap();
    proxy.set(Mode::Reset);
    let err = mount_on(&coffer, "vault", through_proxy, "vault", &vault_token)
        .await
        .err()
        .expect("an unreachable Vault must fail");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_log_clean(&coffer, &[DB_PASSWORD]);
}

const REGION: &str = "us-west-2";
const ROLE: &str = "arn:aws:iam::123456789012:role/shop-web";
const IRSA: &str = "sts.amazonaws.com";

fn aws_params(objects: &str) -> BTreeMap<String, String> {
    [("region", REGION), ("roleArn", ROLE), ("objects", objects)]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
#[ignore = "needs moto: run make test"]
async fn aws_all_keys_and_optional_objects() {
    let moto = Moto::start();
    moto.create_secret(
        REGION,
        "shop/db",
        &format!(r#"{{"username":"shop","password":"{DB_PASSWORD}","port":5432}}"#),
    );
    moto.create_secret(REGION, "shop/plain", "not json");
    moto.create_secret(REGION, "shop/bad-key", r#"{"ok":"1","../up":"x"}"#);
    moto.put_parameter(REGION, "/shop/json", r#"{"a":"1","b":true}"#, "String");
    let proxy = Proxy::start(&moto.addr, Mode::Pass).await;
    let coffer = Coffer::start(&["aws", "coffer"], &["--aws-endpoint-url", &proxy.addr]);
    let irsa = jwt::sa_token(NS, SA, POD, POD_UID, IRSA, 3600);
    let mount = |socket: &'static str, p: BTreeMap<String, String>| {
        let irsa = irsa.clone();
        let coffer = &coffer;
        async move { mount_on(coffer, socket, p, IRSA, &irsa).await }
    };

    let objects = r#"
- {objectName: shop/db, objectType: secretsmanager, objectAlias: db, allKeys: true, filePermission: "0600"}
- {objectName: /shop/json, objectType: ssmparameter, objectAlias: flags, allKeys: true}
- {objectName: shop/db, objectType: secretsmanager, objectAlias: whole}
- {objectName: shop/nope, objectType: secretsmanager, objectAlias: nope, optional: true}
- {objectName: /shop/nope, objectType: ssmparameter, objectAlias: nope-param, optional: true}
- objectName: shop/gone
  objectType: secretsmanager
  objectAlias: gone
  optional: true
  jmesPath: [{path: user, objectAlias: gone-user}]
"#;
    let m = mount("aws", aws_params(objects)).await.unwrap();
    let paths: Vec<&str> = m.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "db/password",
            "db/port",
            "db/username",
            "flags/a",
            "flags/b",
            "whole"
        ]
    );
    assert_eq!(text(&m, "db/password"), DB_PASSWORD);
    assert_eq!(text(&m, "db/port"), "5432");
    assert_eq!(text(&m, "flags/b"), "true");
    assert_eq!(m.files["db/password"].0, 0o600);
    for id in ["nope", "nope-param", "gone", "gone-user"] {
        assert_eq!(m.versions[id], "absent", "{id}");
    }
    assert_ne!(m.versions["db/password"], m.versions["db/username"]);

    // Created later: mounted on the next call (coffer socket, backend: aws).
    moto.create_secret(REGION, "shop/gone", r#"{"user":"g"}"#);
    let mut own = aws_params(objects);
    own.insert("backend".into(), "aws".into());
    let m = mount("coffer", own).await.unwrap();
    assert_eq!(text(&m, "gone-user"), "g");
    assert_eq!(m.versions["nope"], "absent");

    // A key that is not a file name, a value that is not JSON: the mount fails.
    let bad = "- {objectName: shop/bad-key, objectType: secretsmanager, objectAlias: bad, allKeys: true}\n";
    let err = mount("aws", aws_params(bad)).await.err().expect("bad key");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("object \"bad\" (allKeys): key \"../up\""),
        "{}",
        err.message()
    );
    let not_json =
        "- {objectName: shop/plain, objectType: secretsmanager, allKeys: true, optional: true}\n";
    let err = mount("aws", aws_params(not_json))
        .await
        .err()
        .expect("not JSON");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("shop/plain is not a JSON object"),
        "{}",
        err.message()
    );

    // AWS unreachable (credentials are cached): an optional object still fails.
    proxy.set(Mode::Reset);
    let err = mount("aws", aws_params(objects))
        .await
        .err()
        .expect("unreachable");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_log_clean(&coffer, &[DB_PASSWORD]);
}

/// `coffer check` on one class: (success, output).
fn check(provider: &str, params: &str, objects: &str) -> (bool, String) {
    let dir = support::tempdir("check");
    let file = dir.path().join("spc.yaml");
    let mut text = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: c\nspec:\n  provider: {provider}\n  parameters:\n{params}    objects: |\n"
    );
    for line in objects.lines() {
        text.push_str(&format!("      {line}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let out = coffer_cmd()
        .args(["check", "--vault-addr", "https://vault.example:8200"])
        .arg(&file)
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn coffer_check_knows_all_keys_and_optional_in_every_dialect() {
    let vault = "- {objectName: db, secretPath: secret/data/db, allKeys: true, optional: true}\n";
    let aws = "- {objectName: db, objectType: secretsmanager, allKeys: true, optional: true}\n";
    let cases = [
        ("vault", "    roleName: r\n", vault),
        ("openbao", "    baoRoleName: r\n", vault),
        ("coffer", "    backend: vault\n    roleName: r\n", vault),
        ("aws", "    region: us-west-2\n", aws),
        ("coffer", "    backend: aws\n    region: us-west-2\n", aws),
    ];
    for (provider, params, objects) in cases {
        let (ok, out) = check(provider, params, objects);
        assert!(ok && !out.contains("warning"), "{provider}: {out}");
        // A misspelt field is reported, so the check does read them.
        let (ok, out) = check(provider, params, &objects.replace("optional", "optionnal"));
        assert!(!ok && out.contains("optionnal"), "{provider}: {out}");
    }
    let (ok, out) = check(
        "vault",
        "    roleName: r\n",
        "- {objectName: db, secretPath: secret/data/db, secretKey: k, allKeys: true}\n",
    );
    assert!(
        !ok && out.contains("allKeys and secretKey cannot be used together"),
        "{out}"
    );
}

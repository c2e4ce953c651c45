//! Templates (`templates` parameter, `templateOnly` objects) against a real
//! OpenBao: a .env from several secrets, versions that follow the inputs,
//! errors that name the template and what is missing, bounded output, and
//! `coffer check` reporting syntax errors with positions.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use support::bao::Bao;
use support::mount::MountBuilder;
use support::{Coffer, coffer_cmd, jwt};

const NS: &str = "shop";
const SA: &str = "web";
const UID: &str = "a1b2c3d4-4b5e-4c6d-8e7f-9a0b1c2d3e4f";

fn bao() -> Bao {
    let bao = Bao::start_with_jwt();
    bao.put_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    );
    bao.jwt_role("jwt", "web", &jwt::subject(NS, SA), "vault", &["app"]);
    bao.kv_put(
        "secret/data/app/db",
        json!({"user": "shop", "conn": {"user": "shop", "password": "pw with $ and \"quotes\""}}),
    );
    bao.kv_put("secret/data/app/api", json!({"key": "ak-123"}));
    bao
}

const OBJECTS: &str = "
- {objectName: db, secretPath: secret/data/app/db, secretKey: conn, templateOnly: true}
- {objectName: db-user, secretPath: secret/data/app/db, secretKey: user}
- {objectName: api-key, secretPath: secret/data/app/api, secretKey: key, templateOnly: true}
";

const ENV: &str = r#"
- fileName: app.env
  filePermission: 0600
  template: |
    DB_USER={{ db.user }}
    DB_PASSWORD={{ db.password | dotenv }}
    DATABASE_URL=postgres://{{ files["db-user"] }}:{{ db["password"] | urlencode }}@db:5432/shop
    API_KEY={{ files["api-key"] }}
"#;

async fn mount(
    socket: &Path,
    bao: &Bao,
    templates: &str,
) -> Result<(BTreeMap<String, (i32, Vec<u8>)>, BTreeMap<String, String>), tonic::Status> {
    let request = MountBuilder::new("vault", NS, SA, "web-0", UID)
        .params([
            ("roleName", "web"),
            ("vaultAddress", bao.addr.as_str()),
            ("vaultAuthMountPath", "jwt"),
            ("objects", OBJECTS),
            ("templates", templates),
        ])
        .sa_token("vault", 600)
        .build();
    let mounted = support::mount::mount(socket, request).await?;
    Ok((mounted.files, mounted.versions))
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn dotenv_from_several_secrets_with_template_only_objects() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let (files, versions) = mount(&coffer.socket("vault"), &bao, ENV).await.unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["app.env", "db-user"],
        "templateOnly objects are not files"
    );
    assert_eq!(
        versions.keys().collect::<Vec<_>>(),
        ["api-key", "app.env", "db", "db-user"],
        "but they are versioned"
    );
    let (mode, env) = &files["app.env"];
    assert_eq!(*mode, 0o600);
    assert_eq!(
        String::from_utf8(env.clone()).unwrap(),
        "DB_USER=shop\nDB_PASSWORD=\"pw with \\$ and \\\"quotes\\\"\"\nDATABASE_URL=postgres://shop:pw%20with%20%24%20and%20%22quotes%22@db:5432/shop\nAPI_KEY=ak-123\n"
    );

    // Nothing changed: same versions. One input changed (even one the output
    // uses only through another object): the rendered file's version changes.
    let (_, again) = mount(&coffer.socket("vault"), &bao, ENV).await.unwrap();
    assert_eq!(again, versions);
    bao.kv_put("secret/data/app/api", json!({"key": "ak-456"}));
    let (files2, changed) = mount(&coffer.socket("vault"), &bao, ENV).await.unwrap();
    assert_ne!(changed["app.env"], versions["app.env"]);
    assert_ne!(changed["api-key"], versions["api-key"]);
    assert_eq!(changed["db-user"], versions["db-user"]);
    assert!(String::from_utf8_lossy(&files2["app.env"].1).contains("API_KEY=ak-456"));
    let unused = "- fileName: static.txt\n  template: \"{{ files['db-user'] }}\"\n";
    let (_, v1) = mount(&coffer.socket("vault"), &bao, unused).await.unwrap();
    bao.kv_put("secret/data/app/api", json!({"key": "ak-789"}));
    let (f2, v2) = mount(&coffer.socket("vault"), &bao, unused).await.unwrap();
    assert_eq!(f2["static.txt"].1, b"shop");
    assert_ne!(
        v1["static.txt"], v2["static.txt"],
        "any input change changes the version"
    );

    let log = coffer.log_text();
    for leak in ["ak-123", "ak-456", "pw with", "DATABASE_URL"] {
        assert!(!log.contains(leak), "{leak} in log");
    }
}

#[tokio::test]
#[ignore = "needs OpenBao: run make test"]
async fn template_errors_name_the_file_and_what_is_missing() {
    let bao = bao();
    let coffer = Coffer::start(&["vault"], &[]);
    let cases = [
        (
            "- {fileName: a.env, template: \"X={{ nope }}\"}",
            "object \"nope\"",
        ),
        (
            "- {fileName: a.env, template: \"X={{ db.pasword }}\"}",
            "field \"db.pasword\"",
        ),
        (
            "- {fileName: a.env, template: \"X={{ db.nofield }}\"}",
            "field \"db.nofield\"",
        ),
        (
            "- {fileName: a.env, template: \"{{ db.data\"}",
            "syntax error at line 1",
        ),
        (
            "- {fileName: db-user, template: x}",
            "both write the file \"db-user\"",
        ),
        ("- {fileName: ../x, template: x}", "\"..\" element"),
        (
            "- {fileName: big, template: \"{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}\"}",
            "above the limit of 2097152",
        ),
    ];
    for (templates, needle) in cases {
        let err = mount(&coffer.socket("vault"), &bao, templates)
            .await
            .err()
            .unwrap_or_else(|| panic!("{templates} should fail"));
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{templates}: {}",
            err.message()
        );
        assert!(
            err.message().contains(needle),
            "{templates}: {:?} should contain {needle:?}",
            err.message()
        );
    }
}

#[test]
fn coffer_check_reports_template_syntax_errors_with_positions() {
    let dir = support::tempdir("check-templates");
    let spc = dir.path().join("spc.yaml");
    std::fs::write(
        &spc,
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: app}\nspec:\n  provider: vault\n  parameters:\n    roleName: web\n    vaultAddress: http://vault:8200\n    objects: |\n      - {objectName: db, secretPath: secret/data/db, templateOnly: true}\n    templates: |\n      - fileName: app.env\n        template: |\n          A={{ db.user }}\n          B={{ db.password | nofilter }\n",
    )
    .unwrap();
    let out = coffer_cmd().arg("check").arg(&spc).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("template \"app.env\": syntax error at line 2, column"),
        "{text}"
    );
}

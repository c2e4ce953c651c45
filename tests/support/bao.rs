//! A real OpenBao dev server for tests, driven over its HTTP API.
//!
//! `bao server -dev` keeps everything in memory, starts unsealed with the
//! given root token and mounts KV v2 at `secret/`. It also opens a cluster
//! listener on API port + 1, so [`Bao::start`] picks a port pair.

use std::time::Duration;

use serde_json::{Value, json};

use super::proc::{self, Fixture, Process, Spec};
use super::{bao_bin, http, random_hex};

/// How long `Bao::start` waits for `/v1/sys/health`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

const SPEC: Spec = Spec {
    name: "OpenBao",
    dir_prefix: "bao",
    log_file: "bao.log",
    tail_lines: 50,
};

/// The file audit device's log, in the server's directory.
const AUDIT_LOG: &str = "audit.log";

pub struct Bao {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    pub root_token: String,
    process: Process,
    pub log_path: std::path::PathBuf,
}

impl Fixture for Bao {
    fn process(&self) -> &Process {
        &self.process
    }

    fn is_ready(&self) -> bool {
        http::probe(&self.addr, "/v1/sys/health")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }

    fn awaiting(&self) -> String {
        format!("GET {}/v1/sys/health", self.addr)
    }
}

impl Bao {
    /// Starts `bao server -dev` on 127.0.0.1 and waits (≤ 20 s) until
    /// `GET /v1/sys/health` answers 200 (again on other ports if its port
    /// was taken, see [`proc::start`]). Panics with
    /// [`super::NOT_INSTALLED`] if OpenBao is not installed.
    pub fn start() -> Bao {
        Self::start_with_config("")
    }

    /// [`Bao::start`] with a file audit device (declared in a config file,
    /// as OpenBao wants audit devices): every request OpenBao handles is in
    /// [`Bao::audited`].
    pub fn start_with_audit() -> Bao {
        Bao::start_with_config(&format!(
            "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{{dir}}/{AUDIT_LOG}\"\n  }}\n}}\n"
        ))
    }

    /// [`Bao::start`] with an extra configuration file (HCL) given to the
    /// dev server with `-config`; `{dir}` in it becomes the server's temp
    /// dir. E.g. a declarative `audit "file"` device, which OpenBao 2 does
    /// not let the API enable.
    pub fn start_with_config(config_hcl: &str) -> Bao {
        let bin = bao_bin();
        proc::start(START_TIMEOUT, || {
            let port = free_port_pair();
            let root_token = format!("root-{}", random_hex(16));
            let process = Process::spawn(SPEC, &bin, |cmd, dir| {
                cmd.arg("server")
                    .arg("-dev")
                    .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                    .arg(format!("-dev-root-token-id={root_token}"))
                    .arg("-dev-no-store-token")
                    .args(extra_config_arg(config_hcl, dir))
                    // Nothing of the developer's home (token helper, config).
                    .env("HOME", dir);
            });
            Bao {
                addr: format!("http://127.0.0.1:{port}"),
                root_token,
                log_path: process.log_path().to_owned(),
                process,
            }
        })
    }

    /// The requests OpenBao's audit device logged, as (operation, path),
    /// e.g. ("read", "secret/data/shop/db"), ("update", "auth/jwt/login").
    /// Empty unless started with [`Bao::start_with_audit`].
    pub fn audited(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir().join(AUDIT_LOG)).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .map(|e| {
                (
                    e["request"]["operation"].as_str().unwrap_or("").to_owned(),
                    e["request"]["path"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// How many audited requests had this operation and path.
    pub fn audited_count(&self, operation: &str, path: &str) -> usize {
        self.audited()
            .iter()
            .filter(|(o, p)| o == operation && p == path)
            .count()
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.process.dir()
    }

    /// A raw API call: `METHOD /v1/<path>` with `token` (if any) and a JSON
    /// body. Does not check the status.
    pub fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> http::Response {
        let url_path = format!("/v1/{}", path.trim_start_matches('/'));
        let body_bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let mut headers: Vec<(&str, &str)> = vec![("Accept", "application/json")];
        if body_bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(t) = token {
            headers.push(("X-Vault-Token", t));
        }
        http::request(
            &self.addr,
            method,
            &url_path,
            &headers,
            body_bytes.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{method} {}{url_path}: {e}", self.addr))
    }

    /// A raw API call with the root token. Does not check the status.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> http::Response {
        self.request_as(Some(&self.root_token), method, path, body)
    }

    fn expect_ok(&self, method: &str, path: &str, resp: http::Response) -> Value {
        assert!(
            resp.is_success(),
            "OpenBao {method} /v1/{path} -> HTTP {}: {}",
            resp.status,
            resp.text()
        );
        resp.json()
    }

    /// `POST /v1/<path>` with the root token; panics unless 2xx. Returns the
    /// response JSON (`Null` for 204).
    pub fn write(&self, path: &str, body: Value) -> Value {
        let resp = self.request("POST", path, Some(&body));
        self.expect_ok("POST", path, resp)
    }

    /// `GET /v1/<path>` with the root token; panics unless 2xx.
    pub fn read(&self, path: &str) -> Value {
        let resp = self.request("GET", path, None);
        self.expect_ok("GET", path, resp)
    }

    /// `DELETE /v1/<path>` with the root token; panics unless 2xx.
    pub fn delete(&self, path: &str) -> Value {
        let resp = self.request("DELETE", path, None);
        self.expect_ok("DELETE", path, resp)
    }

    /// Enables auth method `kind` (e.g. `jwt`, `kubernetes`, `approle`) at
    /// `auth/<path>`.
    pub fn enable_auth(&self, path: &str, kind: &str) {
        self.write(
            &format!("sys/auth/{}", path.trim_matches('/')),
            json!({ "type": kind }),
        );
    }

    /// Mounts secrets engine `kind` at `<path>` with `options` (e.g.
    /// `{"version":"2"}` for KV v2).
    pub fn enable_secrets(&self, path: &str, kind: &str, options: Value) {
        self.write(
            &format!("sys/mounts/{}", path.trim_matches('/')),
            json!({ "type": kind, "options": options }),
        );
    }

    /// Creates or replaces ACL policy `name`.
    pub fn put_policy(&self, name: &str, hcl: &str) {
        let resp = self.request(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(&json!({ "policy": hcl })),
        );
        self.expect_ok("PUT", &format!("sys/policies/acl/{name}"), resp);
    }

    /// Writes a KV v2 secret. `path` is the API path including `data/`,
    /// e.g. `secret/data/app`; `data` is the secret's key/value object.
    /// Returns the response `data` (holds `version`).
    pub fn kv_put(&self, path: &str, data: Value) -> Value {
        assert!(
            path.trim_start_matches('/').split('/').nth(1) == Some("data"),
            "kv_put wants a KV v2 API path like `secret/data/app`, got {path:?}"
        );
        let v = self.write(path, json!({ "data": data }));
        v["data"].clone()
    }

    /// [`Bao::start`] with the jwt auth method at `auth/jwt` trusting the
    /// test ServiceAccount signing key (what most end-to-end tests need).
    pub fn start_with_jwt() -> Bao {
        let bao = Bao::start();
        bao.enable_auth("jwt", "jwt");
        let key = std::fs::read_to_string(
            super::manifest_dir().join("tests/fixtures/sa-signing-key.pub.pem"),
        )
        .expect("test public key");
        bao.configure_jwt("jwt", &key);
        bao
    }

    /// Configures the JWT auth method mounted at `auth/<mount>` to trust
    /// tokens signed by `pubkey_pem` (SPKI PEM) and issued by the
    /// Kubernetes issuer [`super::jwt::ISSUER`].
    pub fn configure_jwt(&self, mount: &str, pubkey_pem: &str) {
        self.write(
            &format!("auth/{}/config", mount.trim_matches('/')),
            json!({
                "jwt_validation_pubkeys": [pubkey_pem],
                "bound_issuer": super::jwt::ISSUER,
            }),
        );
    }

    /// A JWT role: `role_type` jwt, `user_claim` sub, the given bound
    /// subject and audience, `token_ttl` 1h, `token_policies`.
    pub fn jwt_role(
        &self,
        mount: &str,
        role: &str,
        bound_subject: &str,
        audience: &str,
        policies: &[&str],
    ) {
        self.write(
            &format!("auth/{}/role/{role}", mount.trim_matches('/')),
            json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_subject": bound_subject,
                "bound_audiences": [audience],
                "token_ttl": "1h",
                "token_policies": policies,
            }),
        );
    }

    /// `POST auth/<mount>/login {"role", "jwt"}` without a token. Does not
    /// check the status (tests assert success or the 400/403 rejection).
    pub fn jwt_login(&self, mount: &str, role: &str, jwt: &str) -> http::Response {
        self.request_as(
            None,
            "POST",
            &format!("auth/{}/login", mount.trim_matches('/')),
            Some(&json!({ "role": role, "jwt": jwt })),
        )
    }
}

/// `-config=<dir>/extra.hcl` holding `config_hcl` (`{dir}` replaced), or
/// nothing for an empty config.
fn extra_config_arg(config_hcl: &str, dir: &std::path::Path) -> Vec<String> {
    if config_hcl.is_empty() {
        return vec![];
    }
    let file = dir.join("extra.hcl");
    let text = config_hcl.replace("{dir}", &dir.display().to_string());
    std::fs::write(&file, text).expect("write OpenBao config");
    vec![format!("-config={}", file.display())]
}

/// A port P on 127.0.0.1 with P and P+1 both free a moment ago (the dev
/// server's cluster listener takes API port + 1).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

//! The Vault/OpenBao SecretProviderClass dialect: hashicorp's parameter
//! names, OpenBao's `bao*`/`openbao*` aliases, and the `objects` list.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Error;
use super::tls::Tls;
use crate::request::Parameters;

/// Which parameter names a class uses: hashicorp's (`vault` socket, and
/// `backend: vault` on coffer's own sockets) or OpenBao's (`openbao`
/// socket: `bao*` > `openbao*` > `vault*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Vault,
    OpenBao,
}

impl Dialect {
    /// The dialect a provider socket name implies.
    pub fn for_socket(name: &str) -> Self {
        if name == "openbao" {
            Dialect::OpenBao
        } else {
            Dialect::Vault
        }
    }
}

/// Defaults from `coffer serve` flags and the environment.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub address: Option<String>,
    pub auth_mount: String,
    pub namespace: Option<String>,
    pub tls: Tls,
    pub policy: Policy,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            address: None,
            auth_mount: "kubernetes".into(),
            namespace: None,
            tls: Tls::default(),
            policy: Policy::default(),
        }
    }
}

/// What the operator lets a SecretProviderClass choose. The defaults allow
/// what the hashicorp and OpenBao providers allow (the drop-in promise);
/// the operator's own flags (`--vault-addr`, `--vault-skip-verify`) are
/// never refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Origins (`scheme://host:port`, normalized) a class may name; empty: any.
    pub allowed_addresses: Vec<String>,
    pub allow_http: bool,
    pub allow_skip_verify: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_addresses: Vec::new(),
            allow_http: true,
            allow_skip_verify: true,
        }
    }
}

/// Checks a Vault address (`http(s)://host[:port][/path]`, nothing else)
/// and returns its origin (`scheme://host:port`, host lower-cased). Done
/// at plan time: an address the HTTP client cannot use must be the class's
/// INVALID_ARGUMENT, never a panic inside a mount.
pub fn origin(address: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(address).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err("has no host".into());
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query (?) or fragment (#)".into());
    }
    let port = url.port_or_known_default().unwrap_or(0);
    Ok(format!(
        "{}://{}:{port}",
        url.scheme(),
        host.to_ascii_lowercase()
    ))
}

/// Longest namespace accepted (Vault's own paths are far shorter).
const MAX_NAMESPACE_BYTES: usize = 1024;

/// A namespace goes into the `X-Vault-Namespace` header: visible ASCII only.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(format!(
            "is {} bytes, above the limit of {MAX_NAMESPACE_BYTES}",
            namespace.len()
        ));
    }
    if let Some(bad) = namespace.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(format!(
            "may hold only visible ASCII characters (found byte 0x{bad:02x})"
        ));
    }
    Ok(())
}

/// Connection and identity settings of one SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub role: String,
    pub audience: String,
    pub tls: Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Put,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Base64,
    Hex,
}

/// One entry of `objects`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub name: String,
    /// The API path without the `/v1/` prefix, e.g. `secret/data/db`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub key: Option<String>,
    pub method: Method,
    pub args: Option<serde_json::Value>,
    pub encoding: Encoding,
    pub mode: Option<u32>,
    /// Fetched for templates only, not written as a file (coffer extension).
    pub template_only: bool,
    /// `allKeys: true`: one file per key of the secret's data, under a
    /// directory named `name` (coffer extension).
    pub all_keys: bool,
    /// `optional: true`: a secret or key that does not exist leaves the
    /// object out instead of failing the mount (coffer extension).
    pub optional: bool,
}

impl Object {
    /// The secret-free description that goes into the object version.
    pub fn config(&self) -> String {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let all_keys = if self.all_keys { "|allKeys" } else { "" };
        format!(
            "vault|{}|{}|{}|{}|{}|{:?}|{:?}{all_keys}",
            self.method.as_str(),
            self.path,
            query.join("&"),
            self.key.as_deref().unwrap_or(""),
            self.args
                .as_ref()
                .map(|a| String::from_utf8_lossy(&crate::gojson::to_vec(a)).into_owned())
                .unwrap_or_default(),
            self.encoding,
            self.mode,
        )
    }
}

/// A parsed SecretProviderClass.
#[derive(Debug, Clone)]
pub struct Spc {
    pub connection: Connection,
    pub objects: Vec<Object>,
    pub warnings: Vec<String>,
}

/// Looks a parameter up by its dialect's names: `bao*` > `openbao*` > `vault*` on OpenBao.
fn lookup<'a>(params: &'a Parameters, dialect: Dialect, suffix: &str) -> Option<(&'a str, String)> {
    let names: Vec<String> = match dialect {
        Dialect::OpenBao => vec![
            format!("bao{suffix}"),
            format!("openbao{suffix}"),
            format!("vault{suffix}"),
        ],
        _ => vec![format!("vault{suffix}")],
    };
    names
        .into_iter()
        .find_map(|n| params.non_empty(&n).map(|v| (v, n)))
}

pub fn parse(params: &Parameters, dialect: Dialect, defaults: &Defaults) -> Result<Spc, Error> {
    let role = match dialect {
        Dialect::OpenBao => lookup(params, dialect, "RoleName")
            .map(|(v, _)| v)
            .or_else(|| params.non_empty("roleName")),
        _ => params.non_empty("roleName"),
    }
    .ok_or(Error::Param {
        name: "roleName",
        reason: "is required (the Vault role to log in with)".into(),
    })?;

    let address = lookup(params, dialect, "Address")
        .map(|(v, _)| v.to_owned())
        .or_else(|| defaults.address.clone())
        .ok_or(Error::Param {
            name: "vaultAddress",
            reason: "is not set and coffer has no default (--vault-addr / VAULT_ADDR)".into(),
        })?;
    let address = address.trim_end_matches('/').to_owned();
    let address_origin = origin(&address).map_err(|reason| Error::Param {
        name: "vaultAddress",
        reason: format!("{:?} {reason}", shorten(&address)),
    })?;
    let from_class = lookup(params, dialect, "Address").is_some()
        && defaults.address.as_deref().map(|a| a.trim_end_matches('/')) != Some(address.as_str());
    if from_class {
        let policy = &defaults.policy;
        if !policy.allow_http && address_origin.starts_with("http://") {
            return Err(Error::Param {
                name: "vaultAddress",
                reason: format!(
                    "{address:?} is plain http://, which this coffer does not allow (--vault-allow-http=false)"
                ),
            });
        }
        if !policy.allowed_addresses.is_empty()
            && !policy.allowed_addresses.contains(&address_origin)
        {
            return Err(Error::Param {
                name: "vaultAddress",
                reason: format!(
                    "{address:?} is not among the addresses this coffer allows (--vault-allowed-address: {})",
                    policy.allowed_addresses.join(", ")
                ),
            });
        }
    }

    let k8s_mount = lookup(params, dialect, "KubernetesMountPath");
    let auth_mount = lookup(params, dialect, "AuthMountPath");
    let auth_mount = match (k8s_mount, auth_mount) {
        (Some((_, a)), Some((_, b))) => {
            return Err(Error::Param {
                name: "vaultAuthMountPath",
                reason: format!("({b}) cannot be set together with {a}: choose one auth mount"),
            });
        }
        (Some((v, _)), None) | (None, Some((v, _))) => v.to_owned(),
        (None, None) => defaults.auth_mount.clone(),
    };
    // `auth/jwt`, `/jwt/` and `jwt` all mean the mount at auth/jwt.
    let auth_mount = {
        let trimmed = auth_mount.trim_matches('/');
        trimmed.strip_prefix("auth/").unwrap_or(trimmed).to_owned()
    };
    if auth_mount.is_empty() || auth_mount.split('/').any(|e| e == ".." || e.is_empty()) {
        return Err(Error::Param {
            name: "vaultAuthMountPath",
            reason: format!("{auth_mount:?} is not an auth mount path"),
        });
    }
    let namespace = lookup(params, dialect, "Namespace")
        .map(|(v, _)| v.to_owned())
        .or_else(|| defaults.namespace.clone());
    if let Some(ns) = &namespace {
        check_namespace(ns).map_err(|reason| Error::Param {
            name: "vaultNamespace",
            reason,
        })?;
    }
    let audience = params
        .non_empty("audience")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if dialect == Dialect::OpenBao {
                "openbao".into()
            } else {
                "vault".into()
            }
        });

    let mut tls = defaults.tls.clone();
    let path_param = |suffix: &str| lookup(params, dialect, suffix).map(|(v, _)| v.to_owned());
    if let Some((raw, name)) = lookup(params, dialect, "SkipTLSVerify") {
        tls.skip_verify = crate::yaml::parse_bool(raw).ok_or_else(|| Error::Param {
            name: "vaultSkipTLSVerify",
            reason: format!("({name}) {raw:?} is not a boolean (true/false, 1/0, t/f)"),
        })?;
        if tls.skip_verify && !defaults.tls.skip_verify && !defaults.policy.allow_skip_verify {
            return Err(Error::Param {
                name: "vaultSkipTLSVerify",
                reason: format!(
                    "({name}) is \"true\", which this coffer does not allow (--vault-allow-skip-verify=false)"
                ),
            });
        }
    }
    if let Some(ca) = path_param("CACertPath") {
        tls.ca_cert = Some(ca);
        tls.ca_dir = None;
    }
    if let Some(dir) = path_param("CADirectory") {
        tls.ca_dir = Some(dir);
    }
    if let Some(name) = path_param("TLSServerName") {
        tls.server_name = Some(name);
    }
    let (cert, key) = (
        path_param("TLSClientCertPath"),
        path_param("TLSClientKeyPath"),
    );
    if cert.is_some() || key.is_some() {
        if cert.is_none() || key.is_none() {
            return Err(Error::Param {
                name: "vaultTLSClientCertPath",
                reason: "and vaultTLSClientKeyPath must be set together".into(),
            });
        }
        tls.client_cert = cert;
        tls.client_key = key;
    }

    let (objects, mut warnings) = parse_objects(params.get("objects").unwrap_or(""))?;
    const KNOWN: [&str; 11] = [
        "Address",
        "Namespace",
        "KubernetesMountPath",
        "AuthMountPath",
        "SkipTLSVerify",
        "CACertPath",
        "CADirectory",
        "TLSServerName",
        "TLSClientCertPath",
        "TLSClientKeyPath",
        "RoleName",
    ];
    for key in params.keys() {
        let suffix = ["openbao", "bao", "vault"]
            .iter()
            .find_map(|p| key.strip_prefix(p));
        if let Some(suffix) = suffix
            && suffix.starts_with(|c: char| c.is_ascii_uppercase())
            && !KNOWN.contains(&suffix)
        {
            warnings.push(format!(
                "unknown parameter {key:?} is ignored (a typo of a vault* parameter?)"
            ));
        }
    }
    Ok(Spc {
        connection: Connection {
            address,
            namespace,
            auth_mount,
            role: role.to_owned(),
            audience,
            tls,
        },
        objects,
        warnings,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    #[serde(default)]
    object_name: Option<String>,
    #[serde(default)]
    secret_path: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    secret_args: Option<serde_yaml::Value>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    file_permission: Option<serde_yaml::Value>,
    #[serde(default)]
    template_only: Option<bool>,
    #[serde(default)]
    all_keys: Option<bool>,
    #[serde(default)]
    optional: Option<bool>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_yaml::Value>,
}

/// An address as quoted in messages: at most 256 bytes of it.
fn shorten(s: &str) -> String {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Parses the `objects` YAML list.
pub fn parse_objects(yaml: &str) -> Result<(Vec<Object>, Vec<String>), Error> {
    if yaml.trim().is_empty() {
        return Err(Error::Param {
            name: "objects",
            reason: "is empty: name at least one secret to mount".into(),
        });
    }
    crate::yaml::check_cost(yaml).map_err(|reason| Error::Param {
        name: "objects",
        reason,
    })?;
    let raw: Vec<RawObject> = serde_yaml::from_str(yaml).map_err(|e| Error::Param {
        name: "objects",
        reason: format!("is not a YAML list of objects ({})", yaml_reason(&e)),
    })?;
    let mut objects = Vec::with_capacity(raw.len());
    let mut warnings = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let name = raw
            .object_name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Object {
                object: format!("#{}", index + 1),
                reason: "objectName is required".into(),
            })?;
        let bad = |reason: String| Error::Object {
            object: name.clone(),
            reason,
        };
        for key in raw.unknown.keys() {
            warnings.push(format!("object {name:?}: unknown key {key:?} is ignored (the known keys are objectName, secretPath, secretKey, method, secretArgs, encoding, filePermission, templateOnly, allKeys, optional)"));
        }
        let (path, query) =
            normalise_path(raw.secret_path.as_deref().unwrap_or("")).map_err(bad)?;
        if path.is_empty() {
            return Err(bad("secretPath is required".into()));
        }
        let method = match raw
            .method
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("") | Some("GET") => Method::Get,
            Some("PUT") => Method::Put,
            Some("POST") => Method::Post,
            Some(other) => return Err(bad(format!("method {other:?} is not GET, PUT or POST"))),
        };
        let args = match raw.secret_args {
            None | Some(serde_yaml::Value::Null) => None,
            Some(v) => Some(
                serde_json::to_value(&v)
                    .map_err(|_| bad("secretArgs cannot be sent as JSON".into()))?,
            ),
        };
        let key = raw.secret_key.filter(|k| !k.is_empty());
        let encoding = match raw
            .encoding
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("utf-8") | Some("utf8") => Encoding::Utf8,
            Some("base64") => Encoding::Base64,
            Some("hex") => Encoding::Hex,
            Some(other) => {
                return Err(bad(format!(
                    "encoding {other:?} is not utf-8, base64 or hex"
                )));
            }
        };
        let mode = match raw.file_permission {
            None | Some(serde_yaml::Value::Null) => None,
            Some(v) => match crate::yaml::mode(&v) {
                Some(0) => None,
                Some(m) => Some(m),
                None => {
                    return Err(bad(
                        "filePermission must be an octal mode such as 0600".into()
                    ));
                }
            },
        };
        let all_keys = raw.all_keys.unwrap_or(false);
        if all_keys && key.is_some() {
            return Err(bad(
                "allKeys and secretKey cannot be used together: allKeys writes every key of the secret as its own file".into(),
            ));
        }
        if key.is_none() && !all_keys && encoding != Encoding::Utf8 {
            warnings.push(format!("object {name:?}: encoding applies only with secretKey; the whole response is written as JSON"));
        }
        if let Some(m) = mode
            && m > 0o777
        {
            return Err(bad(format!(
                "filePermission {m} is above 0777 (decimal {m} = octal {m:o}); write the mode in octal with a leading zero, e.g. 0600"
            )));
        }
        objects.push(Object {
            name,
            path,
            query,
            key,
            method,
            args,
            encoding,
            mode,
            template_only: raw.template_only.unwrap_or(false),
            all_keys,
            optional: raw.optional.unwrap_or(false),
        });
    }
    let mut seen = BTreeMap::new();
    let mut dups = Vec::new();
    for o in &objects {
        if seen.insert(o.name.as_str(), ()).is_some() && !dups.contains(&o.name.as_str()) {
            dups.push(o.name.as_str());
        }
    }
    if !dups.is_empty() {
        return Err(Error::Param {
            name: "objects",
            reason: format!(
                "each objectName must be unique, but these are repeated: {}",
                dups.join(", ")
            ),
        });
    }
    Ok((objects, warnings))
}

/// `secret/foo`, `/secret/foo`, `v1/secret/foo`, `/v1/secret/foo` → `secret/foo`;
/// anything after `?` becomes query parameters.
fn normalise_path(raw: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1/").unwrap_or(path);
    let mut params = Vec::new();
    if let Some(query) = query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k).ok_or_else(|| {
                format!("secretPath query parameter {k:?} is not valid percent-encoding")
            })?;
            let v = percent_decode(v).ok_or_else(|| format!("secretPath query parameter {k:?} has a value that is not valid percent-encoding"))?;
            params.push((k, v));
        }
    }
    if path.split('/').any(|e| e == "..") {
        return Err("secretPath must not contain \"..\"".into());
    }
    Ok((path.to_owned(), params))
}

#[expect(
    clippy::indexing_slicing,
    reason = "`i < bytes.len()` is checked by the loop, and `get` covers the two bytes after `%`"
)]
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn yaml_reason(e: &serde_yaml::Error) -> String {
    // serde_yaml messages name types and positions and may quote a scalar of
    // the objects list: configuration, never a secret value.
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const OBJECTS: &str = "- objectName: db-password\n  secretPath: secret/data/db\n  secretKey: password\n  filePermission: 0600\n";

    #[test]
    fn all_keys_and_optional_are_known_fields() {
        let (objects, warnings) = parse_objects(
            "- {objectName: db, secretPath: secret/data/db, allKeys: true, optional: true}\n- {objectName: x, secretPath: secret/data/x, secretKey: k}\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(objects[0].all_keys && objects[0].optional);
        assert!(!objects[1].all_keys && !objects[1].optional);
        // allKeys is part of the definition (versions), optional is not.
        let mut plain = objects[0].clone();
        plain.all_keys = false;
        plain.optional = false;
        assert_ne!(plain.config(), objects[0].config());
        plain.all_keys = true;
        assert_eq!(plain.config(), objects[0].config());
        let err = parse_objects(
            "- {objectName: db, secretPath: secret/data/db, secretKey: k, allKeys: true}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("allKeys and secretKey cannot be used together"),
            "{err}"
        );
        // encoding applies to every key: no warning.
        let (_, warnings) = parse_objects(
            "- {objectName: db, secretPath: secret/data/db, allKeys: true, encoding: base64}\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn parses_hashicorp_names_with_defaults() {
        let d = Defaults {
            address: Some("http://127.0.0.1:8200".into()),
            ..Defaults::default()
        };
        let spc = parse(
            &params(&[("roleName", "web"), ("objects", OBJECTS)]),
            Dialect::Vault,
            &d,
        )
        .unwrap();
        assert_eq!(spc.connection.role, "web");
        assert_eq!(spc.connection.address, "http://127.0.0.1:8200");
        assert_eq!(spc.connection.auth_mount, "kubernetes");
        assert_eq!(spc.connection.audience, "vault");
        assert_eq!(spc.objects[0].path, "secret/data/db");
        assert_eq!(spc.objects[0].key.as_deref(), Some("password"));
        assert_eq!(spc.objects[0].mode, Some(0o600));
        assert!(spc.warnings.is_empty());
    }

    #[test]
    fn spc_overrides_defaults() {
        let d = Defaults {
            address: Some("http://default:8200".into()),
            ..Defaults::default()
        };
        let spc = parse(
            &params(&[
                ("roleName", "r"),
                ("vaultAddress", "https://v:8200/"),
                ("vaultAuthMountPath", "jwt"),
                ("audience", "a1"),
                ("objects", OBJECTS),
            ]),
            Dialect::Vault,
            &d,
        )
        .unwrap();
        assert_eq!(spc.connection.address, "https://v:8200");
        assert_eq!(spc.connection.auth_mount, "jwt");
        assert_eq!(spc.connection.audience, "a1");
    }

    #[test]
    fn addresses_and_namespaces_a_client_cannot_use_are_refused_at_plan_time() {
        let d = Defaults::default();
        for bad in [
            "http://a b",
            "http://",
            "vault:8200",
            "ftp://vault",
            "https://user:pw@vault",
            "https://vault?x=1",
            "https://vault#f",
            "https://[::1",
            "https://vault:99999",
        ] {
            let err = parse(
                &params(&[
                    ("roleName", "r"),
                    ("vaultAddress", bad),
                    ("objects", OBJECTS),
                ]),
                Dialect::Vault,
                &d,
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Param {
                        name: "vaultAddress",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        for bad in ["a\nb", "ns\u{7f}", "ns one", "é", &"n".repeat(2000)] {
            let err = parse(
                &params(&[
                    ("roleName", "r"),
                    ("vaultAddress", "https://v"),
                    ("vaultNamespace", bad),
                    ("objects", OBJECTS),
                ]),
                Dialect::Vault,
                &d,
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Param {
                        name: "vaultNamespace",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            origin("https://Vault.Example:8200/x").unwrap(),
            "https://vault.example:8200"
        );
        assert_eq!(origin("http://v").unwrap(), "http://v:80");
        assert_eq!(origin("https://[::1]").unwrap(), "https://[::1]:443");
    }

    #[test]
    fn operator_policy_limits_what_a_class_may_choose() {
        let d = Defaults {
            address: Some("http://operator:8200".into()),
            policy: Policy {
                allowed_addresses: vec![origin("https://vault.corp:8200").unwrap()],
                allow_http: false,
                allow_skip_verify: false,
            },
            ..Defaults::default()
        };
        let run = |extra: &[(&str, &str)]| {
            let mut p = vec![("roleName", "r"), ("objects", OBJECTS)];
            p.extend_from_slice(extra);
            parse(&params(&p), Dialect::Vault, &d)
        };
        // The operator's own (http) address is never refused.
        assert!(run(&[]).is_ok());
        assert!(run(&[("vaultAddress", "http://operator:8200/")]).is_ok());
        assert!(run(&[("vaultAddress", "https://VAULT.corp:8200")]).is_ok());
        for (extra, needle) in [
            (
                ("vaultAddress", "https://evil:8200"),
                "--vault-allowed-address",
            ),
            (
                ("vaultAddress", "https://vault.corp:8201"),
                "--vault-allowed-address",
            ),
            (
                ("vaultAddress", "http://vault.corp:8200"),
                "--vault-allow-http",
            ),
            (("vaultSkipTLSVerify", "true"), "--vault-allow-skip-verify"),
        ] {
            let err = run(&[extra]).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(run(&[("vaultSkipTLSVerify", "false")]).is_ok());
        // Defaults allow what the hashicorp provider allows.
        let open = Defaults::default();
        for extra in [
            ("vaultAddress", "http://any:1"),
            ("vaultSkipTLSVerify", "true"),
        ] {
            let mut p = vec![
                ("roleName", "r"),
                ("objects", OBJECTS),
                ("vaultAddress", "https://x"),
            ];
            p.push(extra);
            assert!(
                parse(&params(&p), Dialect::Vault, &open).is_ok(),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn openbao_prefixes_take_precedence() {
        let p = params(&[
            ("roleName", "plain"),
            ("vaultRoleName", "v"),
            ("openbaoRoleName", "o"),
            ("vaultAddress", "http://v"),
            ("openbaoAddress", "http://o"),
            ("baoAddress", "http://b"),
            ("objects", OBJECTS),
        ]);
        let spc = parse(&p, Dialect::OpenBao, &Defaults::default()).unwrap();
        assert_eq!(spc.connection.role, "o");
        assert_eq!(spc.connection.address, "http://b");
        assert_eq!(spc.connection.audience, "openbao");
    }

    #[test]
    fn errors_name_the_parameter() {
        let d = Defaults {
            address: Some("http://x".into()),
            ..Defaults::default()
        };
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("objects", OBJECTS)], "roleName"),
            (&[("roleName", "r")], "objects"),
            (
                &[("roleName", "r"), ("objects", "objectName: a")],
                "objects",
            ),
            (
                &[
                    ("roleName", "r"),
                    (
                        "objects",
                        "- objectName: a\n  secretPath: x\n- objectName: a\n  secretPath: y\n",
                    ),
                ],
                "unique",
            ),
            (
                &[
                    ("roleName", "r"),
                    ("objects", OBJECTS),
                    ("vaultAuthMountPath", "a"),
                    ("vaultKubernetesMountPath", "b"),
                ],
                "vaultKubernetesMountPath",
            ),
            (
                &[("roleName", "r"), ("objects", "- secretPath: x\n")],
                "objectName",
            ),
            (
                &[("roleName", "r"), ("objects", "- objectName: a\n")],
                "secretPath",
            ),
            (
                &[
                    ("roleName", "r"),
                    (
                        "objects",
                        "- objectName: a\n  secretPath: x\n  encoding: rot13\n",
                    ),
                ],
                "encoding",
            ),
            (
                &[
                    ("roleName", "r"),
                    (
                        "objects",
                        "- objectName: a\n  secretPath: x\n  method: DELETE\n",
                    ),
                ],
                "method",
            ),
            (
                &[
                    ("roleName", "r"),
                    (
                        "objects",
                        "- objectName: a\n  secretPath: x\n  filePermission: rw\n",
                    ),
                ],
                "filePermission",
            ),
            (
                &[
                    ("roleName", "r"),
                    ("vaultAddress", "ftp://x"),
                    ("objects", OBJECTS),
                ],
                "vaultAddress",
            ),
        ];
        for (p, needle) in cases {
            let err = parse(&params(p), Dialect::Vault, &d)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle}");
        }
        let err = parse(
            &params(&[("roleName", "r"), ("objects", OBJECTS)]),
            Dialect::Vault,
            &Defaults::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--vault-addr"));
    }

    #[test]
    fn tls_parameters_overlay_the_defaults() {
        let d = Defaults {
            address: Some("https://v".into()),
            tls: Tls {
                ca_dir: Some("/etc/ca".into()),
                skip_verify: true,
                ..Tls::default()
            },
            ..Defaults::default()
        };
        let spc = parse(
            &params(&[
                ("roleName", "r"),
                ("objects", OBJECTS),
                ("vaultCACertPath", "/ca.pem"),
                ("vaultSkipTLSVerify", "false"),
                ("vaultTLSServerName", "vault.internal"),
                ("vaultTLSClientCertPath", "/c.pem"),
                ("vaultTLSClientKeyPath", "/k.pem"),
            ]),
            Dialect::Vault,
            &d,
        )
        .unwrap();
        let tls = spc.connection.tls;
        assert_eq!(tls.ca_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(tls.ca_dir, None);
        assert!(!tls.skip_verify);
        assert_eq!(tls.server_name.as_deref(), Some("vault.internal"));
        assert_eq!(tls.client_key.as_deref(), Some("/k.pem"));
        let unchanged = parse(
            &params(&[("roleName", "r"), ("objects", OBJECTS)]),
            Dialect::Vault,
            &d,
        )
        .unwrap();
        assert!(unchanged.connection.tls.skip_verify);
        let err = parse(
            &params(&[
                ("roleName", "r"),
                ("objects", OBJECTS),
                ("vaultSkipTLSVerify", "yes"),
            ]),
            Dialect::Vault,
            &d,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"yes\""), "{err}");
        let err = parse(
            &params(&[
                ("roleName", "r"),
                ("objects", OBJECTS),
                ("vaultTLSClientKeyPath", "/k"),
            ]),
            Dialect::Vault,
            &d,
        )
        .unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
        let bao = parse(
            &params(&[
                ("baoRoleName", "r"),
                ("objects", OBJECTS),
                ("baoCACertPath", "/b.pem"),
                ("vaultCACertPath", "/v.pem"),
            ]),
            Dialect::OpenBao,
            &d,
        )
        .unwrap();
        assert_eq!(bao.connection.tls.ca_cert.as_deref(), Some("/b.pem"));
    }

    #[test]
    fn misspelt_vault_parameters_are_warnings() {
        let d = Defaults {
            address: Some("http://x".into()),
            ..Defaults::default()
        };
        let spc = parse(
            &params(&[
                ("roleName", "r"),
                ("objects", OBJECTS),
                ("vaultAdress", "http://y"),
                ("vaultCAPem", "x"),
                ("vaulted", "x"),
            ]),
            Dialect::Vault,
            &d,
        )
        .unwrap();
        assert_eq!(spc.warnings.len(), 2, "{:?}", spc.warnings);
        assert!(spc.warnings[0].contains("\"vaultAdress\""));
    }

    #[test]
    fn auth_mount_paths_are_normalised() {
        let d = Defaults {
            address: Some("http://x".into()),
            ..Defaults::default()
        };
        for raw in ["jwt", "/jwt/", "auth/jwt", "/auth/jwt"] {
            let spc = parse(
                &params(&[
                    ("roleName", "r"),
                    ("objects", OBJECTS),
                    ("vaultAuthMountPath", raw),
                ]),
                Dialect::Vault,
                &d,
            )
            .unwrap();
            assert_eq!(spc.connection.auth_mount, "jwt", "{raw}");
        }
        assert!(
            parse(
                &params(&[
                    ("roleName", "r"),
                    ("objects", OBJECTS),
                    ("vaultAuthMountPath", "a/../b")
                ]),
                Dialect::Vault,
                &d
            )
            .is_err()
        );
    }

    #[test]
    fn decimal_modes_get_a_hint() {
        let err = parse_objects("- {objectName: a, secretPath: x, filePermission: 600}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("leading zero"), "{err}");
    }

    #[test]
    fn unknown_object_keys_are_warnings() {
        let d = Defaults {
            address: Some("http://x".into()),
            ..Defaults::default()
        };
        let spc = parse(
            &params(&[
                ("roleName", "r"),
                (
                    "objects",
                    "- objectName: a\n  secretPath: x\n  secretkey: typo\n",
                ),
            ]),
            Dialect::Vault,
            &d,
        )
        .unwrap();
        assert_eq!(spc.warnings.len(), 1);
        assert!(spc.warnings[0].contains("\"secretkey\""));
    }

    #[test]
    fn secret_paths_are_normalised() {
        for raw in [
            "secret/foo",
            "/secret/foo",
            "v1/secret/foo",
            "/v1/secret/foo",
        ] {
            assert_eq!(normalise_path(raw).unwrap().0, "secret/foo", "{raw}");
        }
        let (path, query) = normalise_path("secret/data/x?version=1&a=b%20c").unwrap();
        assert_eq!(path, "secret/data/x");
        assert_eq!(
            query,
            vec![("version".into(), "1".into()), ("a".into(), "b c".into())]
        );
        assert!(normalise_path("secret/../sys/x").is_err());
        assert!(normalise_path("x?a=%zz").is_err());
    }

    /// Found with the `vault_objects` fuzz target's binary on large
    /// generated inputs (docs/fuzzing.md): 64,000 nested `{a: ` (256 KiB)
    /// kept the YAML scanner busy for 33 s (debug build) before serde_yaml
    /// refused the depth; coffer accepts mount requests of up to 64 MiB.
    #[test]
    fn deeply_nested_objects_are_refused_before_parsing() {
        let started = std::time::Instant::now();
        for yaml in ["{a: ".repeat(64_000), "[a, ".repeat(64_000)] {
            let err = parse_objects(&yaml).unwrap_err().to_string();
            assert!(
                err.contains("parameter objects") && err.contains("block style"),
                "{err}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Nesting serde_yaml accepts still parses.
        let nested = format!(
            "- objectName: a\n  secretPath: x\n  secretArgs: {}1{}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(parse_objects(&nested).is_ok());
    }

    #[test]
    fn modes_read_like_yaml_1_1() {
        let (objs, _) = parse_objects("- {objectName: a, secretPath: x, filePermission: 0600}\n- {objectName: b, secretPath: x, filePermission: 0o640}\n- {objectName: c, secretPath: x, filePermission: 420}\n- {objectName: d, secretPath: x, filePermission: \"0400\"}\n").unwrap();
        assert_eq!(
            objs.iter().map(|o| o.mode).collect::<Vec<_>>(),
            vec![Some(0o600), Some(0o640), Some(420), Some(0o400)]
        );
    }

    #[test]
    fn config_changes_with_definition() {
        let (objs, _) = parse_objects("- {objectName: a, secretPath: x, secretKey: k}\n- {objectName: b, secretPath: x, secretKey: j}\n").unwrap();
        assert_ne!(objs[0].config(), objs[1].config());
    }
}

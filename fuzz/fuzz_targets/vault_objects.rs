//! The Vault/OpenBao dialect: `params::parse_objects` (the `objects` YAML)
//! and the full `params::parse` in the Vault, OpenBao and coffer dialects,
//! then the plan as `coffer check` and a mount make it (`check_plan`).
//!
//! First byte % 3 == 0: the bytes are `objects` YAML.
//! == 1: NUL-separated `key \0 value \0 key \0 value …` parameters (seeds).
//! == 2: parameters built with `arbitrary` from the dialect's names (every
//! prefix and suffix), typical values and objects lists written as JSON
//! flow YAML.

#![no_main]

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use coffer::backend::vault::params::{self, Defaults, Dialect, Object};
use coffer::backend::vault::{self, VaultBackend};
use coffer::metrics::Metrics;
use coffer::mount::Backends;
use coffer::request::Parameters;
use coffer_fuzz::arb_json;
use libfuzzer_sys::fuzz_target;

const PREFIXES: &[&str] = &["vault", "bao", "openbao"];
const SUFFIXES: &[&str] = &[
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
    "Adress",
    "",
];
const PLAIN: &[&str] = &["roleName", "objects", "audience", "backend"];
const VALUES: &[&str] = &[
    "",
    "web",
    "vault",
    "true",
    "false",
    "1",
    "T",
    "yes",
    "http://127.0.0.1:8200",
    "https://vault.example.com:8200/",
    "127.0.0.1:8200",
    "kubernetes",
    "auth/jwt",
    "/jwt/",
    "auth/",
    "/",
    "a//b",
    "../x",
    "ns1/",
    "/etc/ssl/ca.pem",
];
const PATHS: &[&str] = &[
    "secret/data/db",
    "/v1/secret/data/db",
    "v1/secret/foo?version=1",
    "pki/issue/web?a=%41&b=+c&&d",
    "secret/../x",
    "secret/data/db?%zz=1",
    "?x=1",
    "",
];
const MODES: &[&str] = &[
    "0600", "0o644", "0", "0777", "1000", "600", "-1", "0x1f", "08",
];

fn backends() -> &'static Backends {
    static B: std::sync::OnceLock<Backends> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let mut config = vault::Config::default();
        config.defaults.address = Some("http://127.0.0.1:8200".into());
        let mut b = Backends::default();
        b.add(Arc::new(VaultBackend::new(
            config,
            Arc::new(Metrics::new()),
        )));
        b
    })
}

/// What every parsed object satisfies.
fn check_objects(objects: &[Object]) {
    let mut names = std::collections::BTreeSet::new();
    for o in objects {
        assert!(!o.name.is_empty());
        assert!(names.insert(o.name.as_str()), "duplicate {:?}", o.name);
        assert!(!o.path.is_empty(), "empty path for {:?}", o.name);
        assert!(!o.path.starts_with('/'), "path {:?} keeps a /", o.path);
        assert!(
            !o.path.split('/').any(|e| e == ".."),
            "path {:?} has ..",
            o.path
        );
        assert!(o.mode.is_none_or(|m| m <= 0o777), "mode {:?}", o.mode);
        let _ = o.config();
    }
}

fn run_params(params: &Parameters) {
    for defaults in [
        Defaults::default(),
        Defaults {
            address: Some("http://127.0.0.1:8200".into()),
            namespace: Some("ns1".into()),
            ..Defaults::default()
        },
    ] {
        for dialect in [Dialect::Vault, Dialect::OpenBao] {
            match params::parse(params, dialect, &defaults) {
                Ok(spc) => {
                    let c = &spc.connection;
                    assert!(
                        c.address.starts_with("http://") || c.address.starts_with("https://"),
                        "address {:?}",
                        c.address
                    );
                    assert!(!c.address.ends_with('/'), "address {:?}", c.address);
                    assert!(!c.role.is_empty());
                    assert!(!c.audience.is_empty());
                    assert!(
                        !c.auth_mount.is_empty()
                            && !c.auth_mount.split('/').any(|e| e.is_empty() || e == ".."),
                        "auth mount {:?}",
                        c.auth_mount
                    );
                    check_objects(&spc.objects);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
    for provider in ["vault", "openbao", "coffer"] {
        match backends().plan(provider, params) {
            Ok(plan) => assert!(!plan.plan.files.is_empty()),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    Prefixed(u8, u8),
    Plain(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Val {
    Choice(u8),
    Other(String),
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

fn arb_objects(u: &mut Unstructured) -> arbitrary::Result<String> {
    let n = u.int_in_range(0..=4)?;
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        let mut o = serde_json::Map::new();
        let mut field =
            |u: &mut Unstructured, name: &str, choices: &[&str]| -> arbitrary::Result<()> {
                match u.int_in_range(0..=3)? {
                    0 => {}
                    1 => {
                        o.insert(name.into(), pick(choices, u.arbitrary()?).into());
                    }
                    2 => {
                        o.insert(name.into(), String::arbitrary(u)?.into());
                    }
                    _ => {
                        o.insert(name.into(), arb_json(u, 2)?);
                    }
                }
                Ok(())
            };
        field(
            u,
            "objectName",
            &["a", "b", "dir/a", "a", "..data", "x/../y"],
        )?;
        field(u, "secretPath", PATHS)?;
        field(u, "secretKey", &["password", "", "data"])?;
        field(u, "method", &["GET", "put", "Post", "DELETE", ""])?;
        field(
            u,
            "encoding",
            &["base64", "HEX", "utf-8", "utf8", "", "latin1"],
        )?;
        field(u, "filePermission", MODES)?;
        field(u, "secretArgs", &["x"])?;
        if u.ratio(1, 8)? {
            o.insert(String::arbitrary(u)?, arb_json(u, 1)?);
        }
        list.push(serde_json::Value::Object(o));
    }
    // JSON is YAML's flow style; sometimes use a block list instead.
    if u.arbitrary()? {
        Ok(serde_json::Value::Array(list).to_string())
    } else {
        Ok(list.iter().map(|o| format!("- {o}\n")).collect::<String>())
    }
}

fn structured(u: &mut Unstructured) -> arbitrary::Result<()> {
    let mut params = Parameters::default();
    let n = u.int_in_range(0..=12)?;
    for _ in 0..n {
        let key = match Key::arbitrary(u)? {
            Key::Prefixed(p, s) => format!("{}{}", pick(PREFIXES, p), pick(SUFFIXES, s)),
            Key::Plain(i) => pick(PLAIN, i).to_owned(),
            Key::Other(s) => s,
        };
        let value = match Val::arbitrary(u)? {
            Val::Choice(i) => pick(VALUES, i).to_owned(),
            Val::Other(s) => s,
        };
        params.insert(key, value);
    }
    if u.ratio(3, 4)? {
        params.insert("roleName", "web");
    }
    if u.ratio(7, 8)? {
        params.insert("objects", arb_objects(u)?);
    }
    run_params(&params);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(yaml) = std::str::from_utf8(rest) else {
                return;
            };
            match params::parse_objects(yaml) {
                Ok((objects, _warnings)) => {
                    // An empty list ("[]") is refused later, by check_plan.
                    check_objects(&objects);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.split('\0');
            let mut params = Parameters::default();
            while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                params.insert(k, v);
            }
            run_params(&params);
        }
        _ => {
            let _ = structured(&mut Unstructured::new(rest));
        }
    }
});

//! `request::parse` on a whole `MountRequest`, then
//! `ServiceAccountTokens::for_audience` on every audience.
//!
//! First byte even: textual input, NUL-separated fields
//! `attributes \0 secrets \0 permission \0 audience,audience,…` (the seeds).
//! First byte odd: a structured request built with `arbitrary`, always with
//! the pod attributes so parsing gets past them, with JWT-shaped tokens and
//! secret values that carry a canary; neither error messages nor the
//! `Debug` of the parsed request may contain it.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use coffer::grpc;
use coffer::request::{self, keys};
use coffer_fuzz::{MARK, assert_no_mark, clean, fields};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Structured {
    pod_name: Option<String>,
    pod_namespace: Option<String>,
    pod_uid: Option<String>,
    service_account: Option<String>,
    ephemeral: Option<Ephemeral>,
    spc: Option<String>,
    extra: Vec<(String, String)>,
    tokens: Option<Vec<TokenEntry>>,
    tokens_in_secrets: bool,
    secrets: Secrets,
    permission: Permission,
    versions: Vec<(String, String)>,
    audiences: Vec<String>,
}

#[derive(Arbitrary, Debug)]
enum Ephemeral {
    True,
    False,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct TokenEntry {
    audience: String,
    token: TokenSpec,
    expiration: Expiration,
}

#[derive(Arbitrary, Debug)]
enum Expiration {
    Absent,
    Empty,
    Rfc3339 { year: u16, month: u8, day: u8 },
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum TokenSpec {
    /// Anything at all (not a JWT).
    Raw(String),
    /// header.claims.signature with chosen parts.
    Jwt {
        header: Header,
        sub: Option<String>,
        exp: Exp,
        extra_claims: Vec<(String, String)>,
        signature: Vec<u8>,
        /// Base64 with padding, which JWTs do not use.
        padded: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Header {
    Rs256,
    None,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Exp {
    Absent,
    /// Seconds from now (may be negative: expired).
    FromNow(i32),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Arbitrary, Debug)]
enum Secrets {
    Null,
    Empty,
    Map(Vec<(String, String)>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Permission {
    Empty,
    Mode(u32),
    Raw(String),
}

fn b64(bytes: &[u8], padded: bool) -> String {
    if padded {
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token_string(spec: &TokenSpec) -> String {
    match spec {
        TokenSpec::Raw(s) => format!("{MARK}{}", clean(s)),
        TokenSpec::Jwt {
            header,
            sub,
            exp,
            extra_claims,
            signature,
            padded,
        } => {
            let header = match header {
                Header::Rs256 => r#"{"alg":"RS256","typ":"JWT"}"#.to_owned(),
                Header::None => r#"{"alg":"none"}"#.to_owned(),
                Header::Raw(s) => clean(s),
            };
            let mut claims = serde_json::Map::new();
            for (k, v) in extra_claims {
                claims.insert(clean(k), serde_json::Value::String(clean(v)));
            }
            if let Some(sub) = sub {
                claims.insert("sub".into(), clean(sub).into());
            }
            match exp {
                Exp::Absent => {}
                Exp::FromNow(d) => {
                    claims.insert("exp".into(), (now() + i64::from(*d)).into());
                }
                Exp::Int(i) => {
                    claims.insert("exp".into(), (*i).into());
                }
                Exp::Float(f) => {
                    if let Some(n) = serde_json::Number::from_f64(*f) {
                        claims.insert("exp".into(), serde_json::Value::Number(n));
                    }
                }
                Exp::Str(s) => {
                    claims.insert("exp".into(), clean(s).into());
                }
            }
            let claims = clean(&serde_json::Value::Object(claims).to_string());
            // The canary sits in the signature: only the credential carries it.
            let mut sig = b64(signature, *padded);
            sig.push_str(MARK);
            format!(
                "{}.{}.{}",
                b64(header.as_bytes(), *padded),
                b64(claims.as_bytes(), *padded),
                sig
            )
        }
    }
}

fn structured(s: Structured) {
    let mut attrs = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        attrs.insert(clean(k), serde_json::Value::String(clean(v)));
    };
    for (k, v) in &s.extra {
        put(k, v);
    }
    put(keys::POD_NAME, s.pod_name.as_deref().unwrap_or("web-0"));
    put(
        keys::POD_NAMESPACE,
        s.pod_namespace.as_deref().unwrap_or("default"),
    );
    put(keys::POD_UID, s.pod_uid.as_deref().unwrap_or("1f43f7c5"));
    if let Some(sa) = &s.service_account {
        put(keys::SERVICE_ACCOUNT, sa);
    }
    match &s.ephemeral {
        None => {}
        Some(Ephemeral::True) => put(keys::EPHEMERAL, "true"),
        Some(Ephemeral::False) => put(keys::EPHEMERAL, "false"),
        Some(Ephemeral::Other(o)) => put(keys::EPHEMERAL, o),
    }
    if let Some(spc) = &s.spc {
        put(keys::SPC, spc);
    }

    let tokens_json = s.tokens.as_ref().map(|entries| {
        let mut map = serde_json::Map::new();
        for e in entries {
            let mut entry = serde_json::Map::new();
            entry.insert("token".into(), token_string(&e.token).into());
            match &e.expiration {
                Expiration::Absent => {}
                Expiration::Empty => {
                    entry.insert("expirationTimestamp".into(), "".into());
                }
                Expiration::Rfc3339 { year, month, day } => {
                    entry.insert(
                        "expirationTimestamp".into(),
                        format!("{year:04}-{month:02}-{day:02}T00:00:00Z").into(),
                    );
                }
                Expiration::Other(o) => {
                    entry.insert("expirationTimestamp".into(), clean(o).into());
                }
            }
            map.insert(clean(&e.audience), serde_json::Value::Object(entry));
        }
        serde_json::Value::Object(map).to_string()
    });

    let mut secrets_map: Option<serde_json::Map<String, serde_json::Value>> = match &s.secrets {
        Secrets::Null | Secrets::Empty | Secrets::Raw(_) => None,
        Secrets::Map(pairs) => Some(
            pairs
                .iter()
                .map(|(k, v)| (clean(k), format!("{MARK}{}", clean(v)).into()))
                .collect(),
        ),
    };
    if let Some(json) = &tokens_json {
        if s.tokens_in_secrets {
            secrets_map
                .get_or_insert_with(Default::default)
                .insert(keys::TOKENS.into(), json.clone().into());
        } else {
            attrs.insert(keys::TOKENS.into(), json.clone().into());
        }
    }
    let secrets = match (&s.secrets, secrets_map) {
        (_, Some(map)) => serde_json::Value::Object(map).to_string(),
        (Secrets::Empty, None) => String::new(),
        (Secrets::Raw(r), None) => clean(r),
        _ => "null".to_owned(),
    };
    let permission = match &s.permission {
        Permission::Empty => String::new(),
        Permission::Mode(m) => m.to_string(),
        Permission::Raw(r) => clean(r),
    };
    let req = grpc::MountRequest {
        attributes: serde_json::Value::Object(attrs).to_string(),
        secrets,
        target_path: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount".into(),
        permission,
        current_object_version: s
            .versions
            .iter()
            .map(|(id, version)| grpc::ObjectVersion {
                id: clean(id),
                version: clean(version),
            })
            .collect(),
    };
    assert_no_mark("Debug of the MountRequest", &format!("{req:?}"));
    let audiences: Vec<String> = s.audiences.iter().map(|a| clean(a)).collect();
    check(&req, &audiences, true);
}

/// Parses and checks what must hold for every request.
fn check(req: &grpc::MountRequest, extra_audiences: &[String], canary: bool) {
    let no_mark = |what: &str, text: &str| {
        if canary {
            assert_no_mark(what, text);
        }
    };
    let parsed = match request::parse(req) {
        Ok(p) => p,
        Err(e) => {
            no_mark("a request error", &e.to_string());
            no_mark("a request error (Debug)", &format!("{e:?}"));
            return;
        }
    };
    no_mark("Debug of the parsed request", &format!("{parsed:?}"));
    assert!(
        parsed.default_mode <= 0o777,
        "mode {:o}",
        parsed.default_mode
    );
    assert!(!parsed.pod.name.is_empty());
    assert!(!parsed.pod.namespace.is_empty());
    assert!(!parsed.pod.uid.is_empty());
    assert!(
        parsed
            .params
            .keys()
            .all(|k| !k.starts_with("csi.storage.k8s.io/")),
        "a csi.storage.k8s.io key is left in the parameters"
    );
    assert!(parsed.secrets.get(keys::TOKENS).is_none());
    let mut audiences: Vec<String> = parsed.tokens.audiences().map(str::to_owned).collect();
    audiences.extend(extra_audiences.iter().cloned());
    for audience in &audiences {
        match parsed.tokens.for_audience(audience) {
            Ok((token, claims)) => {
                assert!(!token.expose().is_empty());
                if let Some(expires) = claims.expires {
                    // An expiry in the claims that has passed must be refused
                    // (a second of slack for the clock moving on).
                    assert!(
                        expires.unix_timestamp() >= now() - 1,
                        "an expired token was accepted"
                    );
                }
            }
            Err(e) => {
                no_mark("a token error", &e.to_string());
                no_mark("a token error (Debug)", &format!("{e:?}"));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let f = fields(rest, 4);
        let get = |i: usize| f.get(i).cloned().unwrap_or_default();
        let req = grpc::MountRequest {
            attributes: get(0),
            secrets: get(1),
            target_path: "/t".into(),
            permission: get(2),
            current_object_version: vec![],
        };
        let audiences: Vec<String> = get(3).split(',').map(str::to_owned).collect();
        // Free text has no canary: panics and the other invariants count.
        check(&req, &audiences, false);
    } else if let Ok(s) = Unstructured::new(rest).arbitrary::<Structured>() {
        structured(s);
    }
});

//! `coffer mount`: the driver's side of a mount, for debugging an SPC
//! without a cluster and for tests. It builds the `MountRequest` exactly as
//! driver v1.6 does, calls the socket, checks the response as the driver
//! does, and writes the files with the driver's atomic-writer layout.
//! It prints paths, modes, sizes and versions — never contents.

pub mod atomic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cli::MountArgs;
use crate::errors::chain;
use crate::gojson;
use crate::grpc::csi_driver_provider_client::CsiDriverProviderClient;
use crate::grpc::{MountRequest, MountResponse};
use crate::request::keys;
use crate::secret::Token;
use crate::spc::SecretProviderClass;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SecretProviderClass")]
    Spc(#[from] crate::spc::Error),
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a JSON or YAML map of strings")]
    SecretRef { path: PathBuf },
    #[error("cannot connect to {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the provider refused the mount: code {code:?}: {message}")]
    Provider { code: tonic::Code, message: String },
    #[error("the provider answered error code {0:?} (the driver fails the mount)")]
    ErrorCode(String),
    #[error(
        "the provider returned no object versions (the driver fails the mount: \"missing object versions\")"
    )]
    NoVersions,
    #[error("file {path:?} has mode {mode}, outside 0..=0777")]
    Mode { path: String, mode: i32 },
    #[error("writing the files")]
    Write(#[from] atomic::Error),
}

/// The attributes JSON as driver v1.6 builds it: SPC parameters, then
/// volume attributes over them, then kubelet's pod info and tokens.
pub fn attributes(
    spc: &SecretProviderClass,
    volume_attributes: &[(String, String)],
    pod: &PodIdentity,
    tokens_json: Option<&str>,
) -> String {
    let mut map: BTreeMap<String, String> = spc.parameters.clone();
    map.insert(keys::SPC.into(), spc.name.clone());
    for (k, v) in volume_attributes {
        map.insert(k.clone(), v.clone());
    }
    map.insert(keys::POD_NAME.into(), pod.name.clone());
    map.insert(keys::POD_NAMESPACE.into(), pod.namespace.clone());
    map.insert(keys::POD_UID.into(), pod.uid.clone());
    map.insert(keys::SERVICE_ACCOUNT.into(), pod.service_account.clone());
    map.insert(keys::EPHEMERAL.into(), "true".into());
    if let Some(t) = tokens_json {
        map.insert(keys::TOKENS.into(), t.to_owned());
    }
    let value = serde_json::Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    );
    String::from_utf8_lossy(&gojson::to_vec(&value)).into_owned()
}

#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

/// `{"aud":{"token":"…","expirationTimestamp":"…"}}` as kubelet marshals
/// `map[string]TokenRequestStatus`.
pub fn tokens_json(tokens: &[(String, Token)]) -> String {
    let mut sorted: Vec<&(String, Token)> = tokens.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::from("{");
    for (i, (aud, token)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let exp = token_expiry(token)
            .unwrap_or_else(|| OffsetDateTime::now_utc() + Duration::from_secs(3600));
        let exp = exp
            .replace_nanosecond(0)
            .unwrap_or(exp)
            .format(&Rfc3339)
            .unwrap_or_default();
        out.push_str(&format!(
            "{}:{{\"token\":{},\"expirationTimestamp\":{}}}",
            gojson::string(aud),
            gojson::string(token.expose()),
            gojson::string(&exp)
        ));
    }
    out.push('}');
    out
}

fn token_expiry(token: &Token) -> Option<OffsetDateTime> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<i64>,
    }
    let claims: Claims = crate::request::unverified_claims(token.expose()).ok()?;
    OffsetDateTime::from_unix_timestamp(claims.exp?).ok()
}

/// A stable, UUID-shaped pod UID for namespace/name.
pub fn default_uid(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let h: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Connects like the driver: plaintext HTTP/2 over the socket, `:authority: localhost`.
pub async fn connect(socket: &Path) -> Result<CsiDriverProviderClient<Channel>, Error> {
    connect_with_limit(socket, crate::mount::MAX_RESPONSE_BYTES).await
}

/// [`connect`] with the driver's receive limit set to `limit` bytes.
pub async fn connect_with_limit(
    socket: &Path,
    limit: usize,
) -> Result<CsiDriverProviderClient<Channel>, Error> {
    let path = socket.to_owned();
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|source| Error::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    Ok(CsiDriverProviderClient::new(channel).max_decoding_message_size(limit))
}

/// Files to write and (object id, version) pairs.
pub type Checked = (Vec<atomic::Payload>, Vec<(String, String)>);

/// Checks a response as the driver does and turns it into payloads.
pub fn check_response(resp: MountResponse) -> Result<Checked, Error> {
    if let Some(e) = &resp.error
        && !e.code.is_empty()
    {
        return Err(Error::ErrorCode(e.code.clone()));
    }
    if resp.object_version.is_empty() {
        return Err(Error::NoVersions);
    }
    let versions = resp
        .object_version
        .into_iter()
        .map(|v| (v.id, v.version))
        .collect();
    let mut payloads = Vec::with_capacity(resp.files.len());
    for f in resp.files {
        let mode = u32::try_from(f.mode)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or(Error::Mode {
                path: f.path.clone(),
                mode: f.mode,
            })?;
        payloads.push(atomic::Payload {
            path: f.path,
            mode,
            contents: f.contents,
        });
    }
    Ok((payloads, versions))
}

async fn mount(args: MountArgs) -> Result<String, Error> {
    let spc = crate::spc::read(&args.spc)?
        .into_iter()
        .next()
        .ok_or_else(|| crate::spc::Error::None {
            path: args.spc.display().to_string(),
        })??;
    let namespace = args
        .pod_namespace
        .clone()
        .or_else(|| spc.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let pod = PodIdentity {
        uid: args
            .pod_uid
            .clone()
            .unwrap_or_else(|| default_uid(&namespace, &args.pod_name)),
        name: args.pod_name.clone(),
        namespace,
        service_account: args.service_account.clone(),
    };
    let mut tokens = Vec::new();
    for (aud, path) in &args.tokens {
        let raw = std::fs::read_to_string(path).map_err(|source| Error::Read {
            what: "token",
            path: path.clone(),
            source,
        })?;
        tokens.push((aud.clone(), Token::new(raw.trim().to_owned())));
    }
    let tokens = (!tokens.is_empty()).then(|| tokens_json(&tokens));
    let secrets = match &args.secret_ref {
        None => "null".to_owned(),
        Some(path) => {
            let raw = std::fs::read_to_string(path).map_err(|source| Error::Read {
                what: "secret",
                path: path.clone(),
                source,
            })?;
            let map: BTreeMap<String, String> =
                serde_yaml::from_str(&raw).map_err(|_| Error::SecretRef { path: path.clone() })?;
            let value = serde_json::Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            );
            String::from_utf8_lossy(&gojson::to_vec(&value)).into_owned()
        }
    };
    let request = MountRequest {
        attributes: attributes(&spc, &args.volume_attributes, &pod, tokens.as_deref()),
        secrets,
        target_path: format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/coffer/mount",
            pod.uid
        ),
        permission: "420".into(),
        current_object_version: vec![],
    };
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.socket_dir.join(format!("{}.sock", spc.provider)));
    let mut client = connect_with_limit(&socket, args.max_call_recv_msg_size).await?;
    let mut req = tonic::Request::new(request);
    req.set_timeout(args.timeout);
    let resp = client
        .mount(req)
        .await
        .map_err(|s| Error::Provider {
            code: s.code(),
            message: s.message().to_owned(),
        })?
        .into_inner();
    let (payloads, versions) = check_response(resp)?;

    let mut report = String::new();
    if payloads.is_empty() {
        report.push_str("no files returned: the driver leaves the volume as it is\n");
    } else {
        let written = atomic::write_payload(&args.out, &payloads)?;
        report.push_str(&format!(
            "{} {} file(s) in {}\n",
            if written { "wrote" } else { "unchanged:" },
            payloads.len(),
            args.out.display()
        ));
    }
    for p in &payloads {
        report.push_str(&format!(
            "file {} mode {:04o} size {}\n",
            printable(&p.path),
            p.mode,
            p.contents.len()
        ));
    }
    for (id, version) in &versions {
        report.push_str(&format!(
            "version {} {}\n",
            printable(id),
            printable(version)
        ));
    }
    Ok(report)
}

/// Text the provider chose (paths, versions, status messages), safe for a
/// terminal: control characters and bidirectional overrides are escaped
/// (`\u{1b}`), so a hostile provider cannot move the cursor, rewrite
/// earlier lines or hide text.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn run(args: MountArgs) -> ExitCode {
    match mount(args).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coffer mount: {}", printable(&chain(&e)));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_provider_text_cannot_drive_the_terminal() {
        assert_eq!(printable("db/password.txt"), "db/password.txt");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\rz\t"), "x\\u{a}y\\u{d}z\\u{9}");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        // A literal backslash cannot forge an escape.
        assert_eq!(printable("a\\u{1b}"), "a\\\\u{1b}");
        assert_eq!(printable("ünï"), "ünï");
    }

    fn spc() -> SecretProviderClass {
        SecretProviderClass {
            name: "db".into(),
            namespace: None,
            provider: "vault".into(),
            parameters: [
                ("objects".to_owned(), "- a: <b>".to_owned()),
                ("roleName".to_owned(), "web".to_owned()),
            ]
            .into(),
        }
    }

    #[test]
    fn attributes_are_sorted_go_json_with_pod_info_winning() {
        let pod = PodIdentity {
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            service_account: "sa".into(),
        };
        let attrs = attributes(
            &spc(),
            &[
                ("roleName".into(), "override".into()),
                (keys::POD_NAME.into(), "spoof".into()),
            ],
            &pod,
            Some("{}"),
        );
        assert_eq!(
            attrs,
            r#"{"csi.storage.k8s.io/ephemeral":"true","csi.storage.k8s.io/pod.name":"p","csi.storage.k8s.io/pod.namespace":"ns","csi.storage.k8s.io/pod.uid":"u","csi.storage.k8s.io/serviceAccount.name":"sa","csi.storage.k8s.io/serviceAccount.tokens":"{}","objects":"- a: \u003cb\u003e","roleName":"override","secretProviderClass":"db"}"#
        );
    }

    #[test]
    fn tokens_json_has_kubelet_shape() {
        let json = tokens_json(&[("vault".into(), Token::new("not.a.jwt".into()))]);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["vault"]["token"], "not.a.jwt");
        assert!(
            parsed["vault"]["expirationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        assert!(json.find("\"token\"").unwrap() < json.find("expirationTimestamp").unwrap());
    }

    #[test]
    fn response_checks_follow_the_driver() {
        let ok = MountResponse {
            object_version: vec![crate::grpc::ObjectVersion {
                id: "a".into(),
                version: "v".into(),
            }],
            error: None,
            files: vec![crate::grpc::File {
                path: "a".into(),
                mode: 0o600,
                contents: b"x".to_vec(),
            }],
        };
        assert!(check_response(ok.clone()).is_ok());
        let mut none = ok.clone();
        none.object_version.clear();
        assert!(matches!(check_response(none), Err(Error::NoVersions)));
        let mut code = ok.clone();
        code.error = Some(crate::grpc::Error {
            code: "AuthFailed".into(),
        });
        assert!(matches!(check_response(code), Err(Error::ErrorCode(_))));
        let mut mode = ok;
        mode.files[0].mode = 0o1777;
        assert!(matches!(check_response(mode), Err(Error::Mode { .. })));
    }

    #[test]
    fn default_uid_is_stable_and_uuid_shaped() {
        let a = default_uid("ns", "p");
        assert_eq!(a, default_uid("ns", "p"));
        assert_ne!(a, default_uid("ns", "q"));
        assert_eq!(a.len(), 36);
    }
}

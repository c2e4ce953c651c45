//! `MountRequest` → typed values. Nothing past this module sees the raw
//! strings the driver sent; nothing here ever puts a value into an error.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::grpc;
use crate::secret::Token;

/// Attribute keys kubelet and the driver add to the SPC parameters.
pub mod keys {
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
    pub const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
    pub const SPC: &str = "secretProviderClass";
}

/// Why a request could not be read. Messages name the field, never its value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("attributes is not a JSON object of strings ({0})")]
    Attributes(String),
    #[error(
        "attribute {0} is missing; the driver always sends it (is podInfoOnMount set on the CSIDriver?)"
    )]
    MissingPodInfo(&'static str),
    #[error("attribute {key} is not valid: {reason}")]
    InvalidAttribute { key: &'static str, reason: String },
    #[error(
        "csi.storage.k8s.io/serviceAccount.tokens is not a JSON map of audience to {{token, expirationTimestamp}} ({0})"
    )]
    Tokens(String),
    #[error("secrets is not \"null\" or a JSON object of strings ({0})")]
    Secrets(String),
    #[error(
        "permission {0:?} is not a decimal file mode between 0 and 511 (the driver sends \"420\")"
    )]
    Permission(String),
    #[error(
        "no token for audience {audience:?} in {}: add {{audience: {audience}}} to the CSIDriver's spec.tokenRequests, or for the Secrets Store Sync Controller to its --token-request-audience flag (audiences present: {present})",
        keys::TOKENS
    )]
    MissingAudience { audience: String, present: String },
    #[error("the token for audience {audience:?} is not a JWT ({reason})")]
    NotAJwt { audience: String, reason: String },
    #[error("the token for audience {audience:?} expired at {expired}")]
    Expired { audience: String, expired: String },
}

impl Error {
    /// Expired tokens are a precondition problem, the rest bad input.
    pub fn is_precondition(&self) -> bool {
        matches!(self, Error::Expired { .. } | Error::MissingAudience { .. })
    }
}

/// A parsed `MountRequest`.
#[derive(Debug)]
pub struct MountRequest {
    pub pod: PodInfo,
    /// The SecretProviderClass name, when the driver passed it (v1.6 always does).
    pub spc: Option<String>,
    /// SPC parameters and user volume attributes, without the `csi.storage.k8s.io/*` keys.
    pub params: Parameters,
    pub tokens: ServiceAccountTokens,
    pub secrets: NodePublishSecrets,
    /// The default mode for files that do not set one (`permission`).
    pub default_mode: u32,
    pub current_versions: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: Option<String>,
}

/// SecretProviderClass parameters. `Debug` shows keys only: parameters are
/// configuration, but users do put things there that are not ours to print.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Parameters(BTreeMap<String, String>);

impl Parameters {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter that is present and not empty.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }
}

impl FromIterator<(String, String)> for Parameters {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The pod's projected ServiceAccount tokens, one per audience.
#[derive(Debug, Default)]
pub struct ServiceAccountTokens(BTreeMap<String, ServiceAccountToken>);

#[derive(Debug)]
pub struct ServiceAccountToken {
    pub token: Token,
    pub expiration: Option<OffsetDateTime>,
}

/// What coffer reads from a token (the backend verifies the signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub subject: Option<String>,
    pub expires: Option<OffsetDateTime>,
}

impl ServiceAccountTokens {
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The token for `audience`, with its claims; refuses expired tokens.
    pub fn for_audience(&self, audience: &str) -> Result<(&Token, TokenClaims), Error> {
        let entry = self.0.get(audience).ok_or_else(|| Error::MissingAudience {
            audience: audience.to_owned(),
            present: if self.0.is_empty() {
                "none".to_owned()
            } else {
                let mut shown: Vec<String> =
                    self.0.keys().take(10).map(|k| format!("{k:?}")).collect();
                if self.0.len() > 10 {
                    shown.push(format!("and {} more", self.0.len() - 10));
                }
                shown.join(", ")
            },
        })?;
        let claims = decode_claims(audience, &entry.token)?;
        let expires = claims.expires.or(entry.expiration);
        if let Some(expires) = expires
            && expires <= OffsetDateTime::now_utc()
        {
            return Err(Error::Expired {
                audience: audience.to_owned(),
                expired: expires
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| expires.to_string()),
            });
        }
        Ok((&entry.token, claims))
    }
}

fn decode_claims(audience: &str, token: &Token) -> Result<TokenClaims, Error> {
    #[derive(Deserialize)]
    struct Claims {
        sub: Option<String>,
        exp: Option<i64>,
    }
    let claims: Claims = unverified_claims(token.expose()).map_err(|reason| Error::NotAJwt {
        audience: audience.to_owned(),
        reason,
    })?;
    Ok(TokenClaims {
        subject: claims.sub,
        expires: claims
            .exp
            .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok()),
    })
}

/// `{"alg":"RS256","typ":"JWT"}`: a header jsonwebtoken accepts.
const NEUTRAL_HEADER: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";

/// A JWT's claims, unverified: coffer never checks a signature (Vault or
/// AWS does), so the signing algorithm does not matter to it. jsonwebtoken
/// refuses headers naming an algorithm it cannot verify (ES512, from a
/// cluster signing with a P-521 key), so the header is checked for shape
/// here and jsonwebtoken decodes the claims under a neutral header.
/// Reasons describe the structure, never the token.
pub fn unverified_claims<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, String> {
    // Most tokens name an algorithm jsonwebtoken knows (kube-apiserver
    // signs with RS256): decoded as they are, in one pass. Anything it
    // refuses goes the long way below, which also words the reason.
    if token.bytes().filter(|&b| b == b'.').count() == 2
        && let Ok(data) = jsonwebtoken::dangerous::insecure_decode::<T>(token)
    {
        return Ok(data.claims);
    }
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three dot-separated parts".into());
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| "the header is not base64url".to_owned())?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| "the header is not JSON".to_owned())?;
    if !header.get("alg").is_some_and(serde_json::Value::is_string) {
        return Err("the header has no \"alg\"".into());
    }
    let neutral = format!("{NEUTRAL_HEADER}.{payload}.{signature}");
    jsonwebtoken::dangerous::insecure_decode::<T>(neutral)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// nodePublishSecretRef data. Values are secrets; `Debug` shows keys only.
#[derive(Default)]
pub struct NodePublishSecrets(BTreeMap<String, Token>);

impl NodePublishSecrets {
    pub fn get(&self, key: &str) -> Option<&Token> {
        self.0.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// SHA-256 over every key and value, for cache keys.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (k, v) in &self.0 {
            for part in [k.as_bytes(), v.expose().as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        h.finalize().into()
    }
}

impl fmt::Debug for NodePublishSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Parses a `MountRequest` as the driver sends it.
pub fn parse(req: &grpc::MountRequest) -> Result<MountRequest, Error> {
    let mut attributes: BTreeMap<String, String> =
        serde_json::from_str(&req.attributes).map_err(|e| Error::Attributes(json_reason(&e)))?;

    // The tokens may come in `attributes` or, with serviceAccountTokenInSecrets
    // (Kubernetes ≥ 1.35), in `secrets`; the driver copies them to both.
    let mut secrets = parse_secrets(&req.secrets)?;
    let tokens_json = attributes
        .remove(keys::TOKENS)
        .or_else(|| secrets.remove(keys::TOKENS).map(|t| t.expose().to_owned()));
    secrets.remove(keys::TOKENS);
    let tokens = match tokens_json {
        Some(json) if !json.is_empty() => parse_tokens(&json)?,
        _ => ServiceAccountTokens::default(),
    };

    let mut take = |key: &'static str| attributes.remove(key).filter(|v| !v.is_empty());
    let pod = PodInfo {
        name: take(keys::POD_NAME).ok_or(Error::MissingPodInfo(keys::POD_NAME))?,
        namespace: take(keys::POD_NAMESPACE).ok_or(Error::MissingPodInfo(keys::POD_NAMESPACE))?,
        uid: take(keys::POD_UID).ok_or(Error::MissingPodInfo(keys::POD_UID))?,
        service_account: take(keys::SERVICE_ACCOUNT),
    };
    if let Some(ephemeral) = take(keys::EPHEMERAL)
        && ephemeral != "true"
        && ephemeral != "false"
    {
        return Err(Error::InvalidAttribute {
            key: keys::EPHEMERAL,
            reason: "must be \"true\" or \"false\"".into(),
        });
    }
    let spc = attributes.get(keys::SPC).cloned();
    // Other csi.storage.k8s.io keys (future kubelet additions) are not parameters.
    attributes.retain(|k, _| !k.starts_with("csi.storage.k8s.io/"));

    Ok(MountRequest {
        pod,
        spc,
        params: Parameters(attributes),
        tokens,
        secrets: NodePublishSecrets(secrets),
        default_mode: parse_permission(&req.permission)?,
        current_versions: req
            .current_object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect(),
    })
}

fn parse_secrets(raw: &str) -> Result<BTreeMap<String, Token>, Error> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(BTreeMap::new());
    }
    let map: Option<BTreeMap<String, String>> =
        serde_json::from_str(trimmed).map_err(|e| Error::Secrets(json_reason(&e)))?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Token::new(v)))
        .collect())
}

fn parse_tokens(raw: &str) -> Result<ServiceAccountTokens, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        token: String,
        #[serde(default)]
        expiration_timestamp: Option<String>,
    }
    let map: BTreeMap<String, Entry> =
        serde_json::from_str(raw).map_err(|e| Error::Tokens(json_reason(&e)))?;
    let mut tokens = BTreeMap::new();
    for (audience, entry) in map {
        if entry.token.is_empty() {
            return Err(Error::Tokens(format!(
                "the token for audience {audience:?} is empty"
            )));
        }
        let expiration = match entry.expiration_timestamp.as_deref() {
            None | Some("") => None,
            Some(ts) => Some(OffsetDateTime::parse(ts, &Rfc3339).map_err(|_| {
                Error::Tokens(format!(
                    "expirationTimestamp of audience {audience:?} is not RFC 3339"
                ))
            })?),
        };
        tokens.insert(
            audience,
            ServiceAccountToken {
                token: Token::new(entry.token),
                expiration,
            },
        );
    }
    Ok(ServiceAccountTokens(tokens))
}

/// `"420"` → `0o644`. The driver JSON-encodes an `os.FileMode`, i.e. a decimal number.
pub fn parse_permission(raw: &str) -> Result<u32, Error> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(0o644);
    }
    match trimmed.parse::<u32>() {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(Error::Permission(truncate(trimmed, 32))),
    }
}

/// A serde_json error without the input it quotes (it could be a secret):
/// only the category, line and column.
fn json_reason(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong type",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

fn truncate(s: &str, max: usize) -> String {
    crate::errors::truncate(s, max, "…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.{}",
            b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64.encode(claims.to_string()),
            b64.encode(b"signature")
        )
    }

    #[test]
    fn claims_are_read_whatever_the_signing_algorithm() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        #[derive(serde::Deserialize)]
        struct C {
            sub: String,
        }
        // Headers jsonwebtoken reads itself, and ones it refuses (an
        // algorithm it cannot verify, a field of a type it does not expect).
        let headers = [
            "RS256", "ES256", "ES384", "ES512", "EdDSA", "PS512", "HS999",
        ]
        .map(|alg| format!(r#"{{"alg":"{alg}","kid":"k"}}"#))
        .into_iter()
        .chain([r#"{"alg":"RS256","x5c":5,"zip":[]}"#.to_owned()]);
        for header in headers {
            let alg = &header;
            let token = format!(
                "{}.{}.{}",
                b64.encode(&header),
                b64.encode(br#"{"sub":"system:serviceaccount:a:b"}"#),
                b64.encode(b"sig")
            );
            let c: C = unverified_claims(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(c.sub, "system:serviceaccount:a:b");
        }
        let claims = b64.encode(br#"{"sub":"x"}"#);
        for bad in [
            format!("{}.{claims}.s", b64.encode(b"[]")),
            format!("{}.{claims}.s", b64.encode(br#"{"typ":"JWT"}"#)),
            format!("!!.{claims}.s"),
            format!("{}.{claims}", b64.encode(br#"{"alg":"ES512"}"#)),
            format!("{}.{claims}.s.t", b64.encode(br#"{"alg":"ES512"}"#)),
            format!("{}.!!.s", b64.encode(br#"{"alg":"ES512"}"#)),
            format!("{}.!!.s", b64.encode(br#"{"alg":"RS256"}"#)),
            format!("{}.{claims}.s.t", b64.encode(br#"{"alg":"RS256"}"#)),
            format!("{}.{claims}.s", b64.encode(br#"{"alg":7}"#)),
        ] {
            assert!(unverified_claims::<C>(&bad).is_err(), "{bad}");
        }
    }

    fn attributes(extra: &[(&str, &str)]) -> String {
        let mut map = serde_json::Map::new();
        for (k, v) in [
            (keys::POD_NAME, "web-0"),
            (keys::POD_NAMESPACE, "default"),
            (keys::POD_UID, "1f43f7c5"),
            (keys::SERVICE_ACCOUNT, "web"),
            (keys::EPHEMERAL, "true"),
            (keys::SPC, "my-spc"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            map.insert(k.into(), v.into());
        }
        serde_json::Value::Object(map).to_string()
    }

    fn request(attributes: String) -> grpc::MountRequest {
        grpc::MountRequest {
            attributes,
            secrets: "null".into(),
            target_path: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }

    #[test]
    fn parses_what_driver_v1_6_sends() {
        let token = jwt(
            serde_json::json!({"sub": "system:serviceaccount:default:web", "exp": 4_102_444_800i64}),
        );
        let tokens = serde_json::json!({"vault": {"token": token, "expirationTimestamp": "2100-01-01T00:00:00Z"}}).to_string();
        let req = parse(&request(attributes(&[
            (keys::TOKENS, &tokens),
            ("objects", "- objectName: a\n"),
        ])))
        .unwrap();
        assert_eq!(req.pod.name, "web-0");
        assert_eq!(req.pod.namespace, "default");
        assert_eq!(req.pod.uid, "1f43f7c5");
        assert_eq!(req.pod.service_account.as_deref(), Some("web"));
        assert_eq!(req.spc.as_deref(), Some("my-spc"));
        assert_eq!(req.default_mode, 0o644);
        assert_eq!(req.params.get("objects"), Some("- objectName: a\n"));
        assert!(
            req.params
                .keys()
                .all(|k| !k.starts_with("csi.storage.k8s.io/"))
        );
        let (tok, claims) = req.tokens.for_audience("vault").unwrap();
        assert_eq!(tok.expose(), token);
        assert_eq!(
            claims.subject.as_deref(),
            Some("system:serviceaccount:default:web")
        );
        assert!(req.secrets.is_empty());
    }

    #[test]
    fn tokens_may_arrive_in_secrets() {
        let token = jwt(serde_json::json!({"sub": "s", "exp": 4_102_444_800i64}));
        let tokens =
            serde_json::json!({"vault": {"token": token, "expirationTimestamp": ""}}).to_string();
        let mut req = request(attributes(&[]));
        req.secrets = serde_json::json!({ keys::TOKENS: tokens, "user": "admin" }).to_string();
        let parsed = parse(&req).unwrap();
        assert!(parsed.tokens.for_audience("vault").is_ok());
        assert!(parsed.secrets.get(keys::TOKENS).is_none());
        assert_eq!(parsed.secrets.get("user").unwrap().expose(), "admin");
    }

    #[test]
    fn secrets_accepts_null_empty_object_and_map() {
        for raw in ["null", "{}", "", r#"{"a":"b"}"#] {
            let mut req = request(attributes(&[]));
            req.secrets = raw.into();
            assert!(parse(&req).is_ok(), "{raw}");
        }
    }

    #[test]
    fn malformed_inputs_name_the_field_and_hide_the_value() {
        let cases: Vec<(grpc::MountRequest, &str)> = vec![
            (request("{not json secret-value".into()), "attributes"),
            (request(r#"{"a": 1}"#.into()), "attributes"),
            (request(r#"["x"]"#.into()), "attributes"),
            (
                request(attributes(&[(keys::TOKENS, "secret-value{")])),
                "serviceAccount.tokens",
            ),
            (
                request(attributes(&[(keys::TOKENS, r#"{"vault":"secret-value"}"#)])),
                "serviceAccount.tokens",
            ),
            (
                {
                    let mut r = request(attributes(&[]));
                    r.secrets = "[secret-value".into();
                    r
                },
                "secrets",
            ),
            (
                {
                    let mut r = request(attributes(&[]));
                    r.permission = "0o644".into();
                    r
                },
                "permission",
            ),
            (
                {
                    let mut r = request(attributes(&[]));
                    r.permission = "512".into();
                    r
                },
                "permission",
            ),
            (
                {
                    let mut r = request(attributes(&[]));
                    r.permission = "-1".into();
                    r
                },
                "permission",
            ),
            (
                request(r#"{"csi.storage.k8s.io/pod.name":"p"}"#.into()),
                "pod.namespace",
            ),
        ];
        for (req, field) in cases {
            let err = parse(&req).expect_err(field).to_string();
            assert!(err.contains(field), "{err} should name {field}");
            assert!(!err.contains("secret-value"), "{err} leaks the input");
        }
    }

    #[test]
    fn missing_audience_says_how_to_fix_it() {
        let token = jwt(serde_json::json!({"sub": "s", "exp": 4_102_444_800i64}));
        let tokens = serde_json::json!({"aud1": {"token": token}}).to_string();
        let req = parse(&request(attributes(&[(keys::TOKENS, &tokens)]))).unwrap();
        let err = req.tokens.for_audience("vault").unwrap_err();
        assert!(err.is_precondition());
        let msg = err.to_string();
        assert!(
            msg.contains("\"vault\"") && msg.contains("tokenRequests") && msg.contains("\"aud1\""),
            "{msg}"
        );
        let none = parse(&request(attributes(&[]))).unwrap();
        assert!(
            none.tokens
                .for_audience("vault")
                .unwrap_err()
                .to_string()
                .contains("present: none")
        );
    }

    #[test]
    fn expired_and_malformed_tokens_are_refused() {
        let expired = jwt(serde_json::json!({"sub": "s", "exp": 1_000_000_000i64}));
        let tokens =
            serde_json::json!({"vault": {"token": expired}, "x": {"token": "opaque-secret"}})
                .to_string();
        let req = parse(&request(attributes(&[(keys::TOKENS, &tokens)]))).unwrap();
        let err = req.tokens.for_audience("vault").unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        let err = req.tokens.for_audience("x").unwrap_err();
        assert!(matches!(err, Error::NotAJwt { .. }));
        assert!(!err.to_string().contains("opaque-secret"));
    }

    #[test]
    fn permission_is_decimal() {
        assert_eq!(parse_permission("420").unwrap(), 0o644);
        assert_eq!(parse_permission("384").unwrap(), 0o600);
        assert_eq!(parse_permission("511").unwrap(), 0o777);
        assert!(parse_permission("512").is_err());
        assert!(parse_permission("abc").is_err());
    }
}

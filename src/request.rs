//! `MountRequest` → typed values. Nothing past this module sees the raw
//! strings the driver sent; nothing here ever puts a value into an error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A parsed `MountRequest`: what a republish repeats byte for byte, parsed
/// once and shared (see [`Memo`]), and the object versions it reports.
#[derive(Debug)]
pub struct MountRequest {
    parsed: Arc<Parsed>,
    pub current_versions: Vec<(String, String)>,
}

impl std::ops::Deref for MountRequest {
    type Target = Parsed;

    fn deref(&self) -> &Parsed {
        &self.parsed
    }
}

/// Everything of a `MountRequest` but the versions it reports.
#[derive(Debug)]
pub struct Parsed {
    pub pod: PodInfo,
    /// The SecretProviderClass name, when the driver passed it (v1.6 always does).
    pub spc: Option<String>,
    /// SPC parameters and user volume attributes, without the `csi.storage.k8s.io/*` keys.
    pub params: Parameters,
    pub tokens: ServiceAccountTokens,
    pub secrets: NodePublishSecrets,
    /// The default mode for files that do not set one (`permission`).
    pub default_mode: u32,
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
    /// The token's claims, decoded on first use (a republish reuses them
    /// with the parsed request), or why it is not a JWT.
    claims: std::sync::OnceLock<Result<TokenClaims, String>>,
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
        let claims = entry
            .claims
            .get_or_init(|| decode_claims(&entry.token))
            .clone()
            .map_err(|reason| Error::NotAJwt {
                audience: audience.to_owned(),
                reason,
            })?;
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

fn decode_claims(token: &Token) -> Result<TokenClaims, String> {
    #[derive(Deserialize)]
    struct Claims {
        sub: Option<String>,
        exp: Option<i64>,
    }
    let claims: Claims = unverified_claims(token.expose())?;
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
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three dot-separated parts".into());
    };
    // Most tokens name an algorithm jsonwebtoken knows (kube-apiserver
    // signs with RS256): decoded as they are, in one pass. Anything it
    // refuses goes the long way below, which also words the reason.
    if let Ok(data) = jsonwebtoken::dangerous::insecure_decode::<T>(token) {
        return Ok(data.claims);
    }
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
    Ok(MountRequest {
        parsed: Arc::new(parse_shared(req)?),
        current_versions: current_versions(req),
    })
}

fn current_versions(req: &grpc::MountRequest) -> Vec<(String, String)> {
    req.current_object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}

fn parse_shared(req: &grpc::MountRequest) -> Result<Parsed, Error> {
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

    Ok(Parsed {
        pod,
        spc,
        params: Parameters(attributes),
        tokens,
        secrets: NodePublishSecrets(secrets),
        default_mode: parse_permission(&req.permission)?,
    })
}

/// Parsed requests by their exact bytes. kubelet republishes every volume
/// every minute or two with the same attributes (the same token until it
/// rotates it), and parsing them — two JSON documents, the token's claims,
/// its SHA-256 for the caches — is a good part of a warm mount's CPU. A
/// request whose `attributes`, `secrets` and `permission` equal a kept
/// one's, byte for byte, gets the same parse; anything else is parsed.
///
/// What is kept holds the pods' tokens (as the login cache holds the
/// Vault tokens they bought): at most [`MEMO_ENTRIES`] requests of at most
/// [`MEMO_REQUEST_BYTES`] each and [`MEMO_BYTES`] in all, each for at most [`MEMO_TTL`] after it was
/// parsed (the sweep drops it then), zeroed when dropped, never printed.
#[derive(Default)]
pub struct Memo {
    state: Mutex<MemoState>,
}

#[derive(Default)]
struct MemoState {
    entries: HashMap<Kept, Entry>,
    /// Attributes and secrets bytes of `entries`.
    bytes: usize,
}

/// Most requests kept; when full, the memo starts again.
pub const MEMO_ENTRIES: usize = 1024;
/// Most bytes of requests kept (attributes and secrets; their parses hold
/// about as much again); when full, the memo starts again.
pub const MEMO_BYTES: usize = 4 * 1024 * 1024;
/// Requests larger than this (attributes and secrets) are parsed each time.
pub const MEMO_REQUEST_BYTES: usize = 16 * 1024;
/// How long a parse is reused.
pub const MEMO_TTL: Duration = Duration::from_secs(10 * 60);

/// The attributes of a kept request: zeroed on drop, not printable.
#[derive(PartialEq, Eq)]
struct Kept(zeroize::Zeroizing<String>);

/// As `str` hashes, so a lookup by `&str` finds it.
impl std::hash::Hash for Kept {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for Kept {
    fn borrow(&self) -> &str {
        &self.0
    }
}

struct Entry {
    secrets: zeroize::Zeroizing<String>,
    permission: String,
    parsed: Arc<Parsed>,
    until: Instant,
}

impl Memo {
    /// [`parse`], reusing the parse of an identical request.
    pub fn parse(&self, req: &grpc::MountRequest) -> Result<MountRequest, Error> {
        let current_versions = current_versions(req);
        let kept = req.attributes.len().saturating_add(req.secrets.len()) <= MEMO_REQUEST_BYTES;
        if kept && let Some(parsed) = self.get(req) {
            return Ok(MountRequest {
                parsed,
                current_versions,
            });
        }
        let parsed = Arc::new(parse_shared(req)?);
        if kept {
            let size = req.attributes.len() + req.secrets.len();
            let mut state = self.lock();
            if state.entries.len() >= MEMO_ENTRIES || state.bytes + size > MEMO_BYTES {
                state.entries.clear();
                state.bytes = 0;
            }
            let replaced = state.entries.insert(
                Kept(zeroize::Zeroizing::new(req.attributes.clone())),
                Entry {
                    secrets: zeroize::Zeroizing::new(req.secrets.clone()),
                    permission: req.permission.clone(),
                    parsed: parsed.clone(),
                    until: Instant::now() + MEMO_TTL,
                },
            );
            state.bytes += size;
            if let Some(old) = replaced {
                // The same attributes, other secrets or permission.
                state.bytes -= req.attributes.len() + old.secrets.len();
            }
        }
        Ok(MountRequest {
            parsed,
            current_versions,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, req: &grpc::MountRequest) -> Option<Arc<Parsed>> {
        let state = self.lock();
        let entry = state.entries.get(req.attributes.as_str())?;
        (*entry.secrets == req.secrets
            && entry.permission == req.permission
            && entry.until > Instant::now())
        .then(|| entry.parsed.clone())
    }

    /// Drops the parses past [`MEMO_TTL`]; how many went.
    pub fn sweep(&self) -> usize {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&self, now: Instant) -> usize {
        let mut state = self.lock();
        let before = state.entries.len();
        let mut freed = 0;
        state.entries.retain(|kept, e| {
            let keep = e.until > now;
            if !keep {
                freed += kept.0.len() + e.secrets.len();
            }
            keep
        });
        state.bytes -= freed;
        before - state.entries.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
                claims: std::sync::OnceLock::new(),
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

    fn with_token(sub: &str) -> grpc::MountRequest {
        let token = jwt(serde_json::json!({"sub": sub, "exp": 4_102_444_800i64}));
        let tokens = serde_json::json!({"vault": {"token": token}}).to_string();
        request(attributes(&[(keys::TOKENS, &tokens)]))
    }

    #[test]
    fn an_identical_request_reuses_the_parse_and_any_other_byte_parses_anew() {
        let memo = Memo::default();
        let req = with_token("system:serviceaccount:default:web");
        let first = memo.parse(&req).unwrap();
        let again = memo.parse(&req).unwrap();
        assert!(Arc::ptr_eq(&first.parsed, &again.parsed));
        // The token's digest and claims are computed once for both.
        let (token, _) = first.tokens.for_audience("vault").unwrap();
        let (same, claims) = again.tokens.for_audience("vault").unwrap();
        assert_eq!(token.digest(), same.digest());
        assert_eq!(
            claims.subject.as_deref(),
            Some("system:serviceaccount:default:web")
        );

        let other_token = with_token("system:serviceaccount:default:other");
        let mut other_secrets = req.clone();
        other_secrets.secrets = r#"{"k":"v"}"#.into();
        let mut other_mode = req.clone();
        other_mode.permission = "256".into();
        for other in [other_token, other_secrets, other_mode] {
            let parsed = memo.parse(&other).unwrap();
            assert!(!Arc::ptr_eq(&first.parsed, &parsed.parsed));
        }
        let other = memo
            .parse(&with_token("system:serviceaccount:default:other"))
            .unwrap();
        let (_, claims) = other.tokens.for_audience("vault").unwrap();
        assert_eq!(
            claims.subject.as_deref(),
            Some("system:serviceaccount:default:other")
        );
        // The versions a request reports are its own, never the kept ones.
        // (One parse is kept per attributes: the last one.)
        let first = memo.parse(&req).unwrap();
        let mut versioned = req.clone();
        versioned.current_object_version = vec![grpc::ObjectVersion {
            id: "a".into(),
            version: "1".into(),
        }];
        let parsed = memo.parse(&versioned).unwrap();
        assert!(Arc::ptr_eq(&first.parsed, &parsed.parsed));
        assert_eq!(parsed.current_versions, vec![("a".into(), "1".into())]);
        assert!(first.current_versions.is_empty());
    }

    #[test]
    fn the_memo_is_bounded_in_size_count_and_time_and_keeps_no_failure() {
        let memo = Memo::default();
        let big = request(attributes(&[("objects", &"x".repeat(MEMO_REQUEST_BYTES))]));
        memo.parse(&big).unwrap();
        assert!(memo.is_empty(), "a request over the size bound was kept");

        let bad = request("{not json".into());
        assert!(memo.parse(&bad).is_err());
        assert!(memo.parse(&bad).is_err());
        assert!(memo.is_empty());

        for i in 0..MEMO_ENTRIES + 10 {
            memo.parse(&request(attributes(&[("n", &i.to_string())])))
                .unwrap();
        }
        assert!(memo.len() <= MEMO_ENTRIES, "{}", memo.len());
        assert!(!memo.is_empty());

        // At most MEMO_BYTES of requests, however few.
        let memo_bytes = Memo::default();
        let filler = "x".repeat(MEMO_REQUEST_BYTES - 1024);
        for i in 0..2 * MEMO_BYTES / filler.len() {
            let req = request(attributes(&[("n", &i.to_string()), ("objects", &filler)]));
            memo_bytes.parse(&req).unwrap();
            assert!(memo_bytes.lock().bytes <= MEMO_BYTES);
            // A republish with other secrets replaces its entry's bytes.
            let mut other = req.clone();
            other.secrets = r#"{"k":"v"}"#.into();
            memo_bytes.parse(&other).unwrap();
        }
        let state = memo_bytes.lock();
        let counted: usize = state
            .entries
            .iter()
            .map(|(k, e)| k.0.len() + e.secrets.len())
            .sum();
        assert_eq!(state.bytes, counted);
        assert!(state.entries.len() < MEMO_BYTES / filler.len() + 1);
        drop(state);

        assert_eq!(memo.sweep(), 0);
        let kept = memo.len();
        assert_eq!(
            memo.sweep_at(Instant::now() + MEMO_TTL + Duration::from_secs(1)),
            kept
        );
        assert!(memo.is_empty());
        assert_eq!(memo.lock().bytes, 0);
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

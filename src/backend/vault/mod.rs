//! Vault and OpenBao: log in with the pod's ServiceAccount token
//! (`auth/<mount>/login`, kubernetes or jwt method), read each object's path,
//! extract the key. Logins are cached per pod and connection and shared
//! by concurrent mounts; identical reads within one mount are made once.

pub mod extract;
pub mod params;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde_json::Value;
use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
use vaultrs::api::{EndpointMiddleware, EndpointResult};
use vaultrs::error::ClientError;

use self::params::{Connection, Defaults, Method, Object, Spc};
use super::http::{self as policy, BodyError, BodyTooLarge};
use super::{Backend, BackendError, Dialect, ErrorKind, Fetch, FetchContext, Plan, PlannedFile};
use crate::metrics::Metrics;
use crate::mount::request::{self, Parameters};
use crate::secret::{SecretBytes, Token};

/// Vault backend errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parameter {name} {reason}")]
    Param { name: &'static str, reason: String },
    #[error("object {object:?}: {reason}")]
    Object { object: String, reason: String },
    #[error("pod identity")]
    Identity(#[source] request::Error),
    #[error("cannot set up a Vault client for {address}: {reason}")]
    Client { address: String, reason: String },
    #[error(
        "login to {address} as {subject} with role {role:?} on auth/{mount} was refused (HTTP {code}): {errors}"
    )]
    LoginRefused {
        address: String,
        subject: String,
        role: String,
        mount: String,
        code: u16,
        errors: String,
    },
    #[error("login to {address} on auth/{mount}: {reason}")]
    Login {
        address: String,
        mount: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("object {object:?}: {method} {path} at {address} failed (HTTP {code}): {errors}")]
    Read {
        object: String,
        method: &'static str,
        path: String,
        address: String,
        code: u16,
        errors: String,
    },
    #[error("object {object:?}: {method} {path} at {address}: {reason}")]
    Request {
        object: String,
        method: &'static str,
        path: String,
        address: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("object {object:?}")]
    Extract {
        object: String,
        #[source]
        source: extract::ExtractError,
    },
}

impl BackendError for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Param { .. } | Error::Object { .. } => ErrorKind::InvalidArgument,
            Error::Identity(e) if e.is_precondition() => ErrorKind::FailedPrecondition,
            Error::Identity(_) => ErrorKind::InvalidArgument,
            Error::Client { .. } => ErrorKind::InvalidArgument,
            Error::LoginRefused { .. } => ErrorKind::PermissionDenied,
            Error::Login { kind, .. } | Error::Request { kind, .. } => *kind,
            Error::Read { code, .. } => match code {
                400 => ErrorKind::InvalidArgument,
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                429 | 502..=504 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Error::Extract { source, .. } => match source {
                extract::ExtractError::MissingKey { .. } | extract::ExtractError::NoData { .. } => {
                    ErrorKind::NotFound
                }
                extract::ExtractError::Decode { .. } => ErrorKind::InvalidArgument,
            },
        }
    }
}

/// Settings of the backend as a whole.
#[derive(Debug, Clone)]
pub struct Config {
    pub defaults: Defaults,
    /// Redirects, body cap and timeouts of every request to Vault.
    pub http: policy::Policy,
    /// Where TLS files named by a class may be read from.
    pub tls_files: tls::FilePolicy,
    /// Most cached logins, and most cached dynamic responses.
    pub cache_size: usize,
    /// Most requests of one mount in flight at once.
    pub parallel_reads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            defaults: Defaults::default(),
            http: policy::Policy::default(),
            tls_files: tls::FilePolicy::default(),
            cache_size: 1000,
            parallel_reads: 8,
        }
    }
}

/// The Vault/OpenBao backend.
pub struct VaultBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    metrics: Arc<Metrics>,
    /// One HTTP client (connection pool) per (address, namespace, TLS).
    clients: Mutex<HashMap<ClientKey, Arc<VaultHttp>>>,
    logins: Mutex<HashMap<LoginKey, Arc<tokio::sync::Mutex<Option<CachedLogin>>>>>,
    /// Dynamic responses (leases, certificates) per pod and request.
    responses: Mutex<HashMap<ResponseKey, CachedResponse>>,
}

type ClientKey = (String, Option<String>, tls::Tls);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ResponseKey {
    pod_uid: String,
    connection: Connection,
    read: ReadKey,
}

/// A dynamic response kept as bytes (zeroed on drop) until it is too old to reuse.
struct CachedResponse {
    body: SecretBytes,
    reuse_until: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LoginKey {
    pod_uid: String,
    subject: String,
    /// The cached Vault token is reused only for the exact ServiceAccount
    /// token that Vault accepted at login: coffer cannot check a token's
    /// signature itself, so a caller with a forged token naming the same pod
    /// must not ride on the real pod's login. (kubelet rotates the token at
    /// 80% of its lifetime, so this costs one login per rotation.)
    token: [u8; 32],
    connection: Connection,
}

struct CachedLogin {
    token: Token,
    valid_until: Instant,
}

impl VaultBackend {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                metrics,
                clients: Mutex::new(HashMap::new()),
                logins: Mutex::new(HashMap::new()),
                responses: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Backend for VaultBackend {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn plan(&self, params: &Parameters, dialect: Dialect) -> Result<Plan, super::Error> {
        let spc = params::parse(params, dialect, &self.inner.config.defaults)?;
        // The version binds the server: the same path and value on a server
        // a class controls must not reproduce a victim's version (which
        // would let it test guesses of the victim's secret).
        let server = format!(
            "{}|{}",
            spc.connection.address,
            spc.connection.namespace.as_deref().unwrap_or("")
        );
        let files = spc
            .objects
            .iter()
            .map(|o| PlannedFile {
                object: o.name.clone(),
                path: o.name.clone(),
                mode: o.mode,
                config: format!("{}|server:{server}", o.config()),
                template_only: o.template_only,
            })
            .collect();
        Ok(Plan {
            backend: "vault",
            files,
            warnings: spc.warnings.clone(),
            fetch: Box::new(VaultFetch {
                inner: self.inner.clone(),
                spc,
            }),
        })
    }
}

struct VaultFetch {
    inner: Arc<Inner>,
    spc: Spc,
}

/// One distinct request of a mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<String>,
}

impl ReadKey {
    fn of(o: &Object) -> Self {
        Self {
            method: o.method,
            path: o.path.clone(),
            query: o.query.clone(),
            body: o
                .args
                .as_ref()
                .map(|a| String::from_utf8_lossy(&crate::gojson::to_vec(a)).into_owned()),
        }
    }
}

#[async_trait]
impl Fetch for VaultFetch {
    #[expect(
        clippy::indexing_slicing,
        reason = "indices come from 0..len of `reads`/`results` and from `index_of`, built from `reads` positions"
    )]
    async fn fetch(&self, ctx: &FetchContext<'_>) -> Result<Vec<SecretBytes>, super::Error> {
        let conn = &self.spc.connection;
        let (jwt, claims) = ctx
            .tokens
            .for_audience(&conn.audience)
            .map_err(Error::Identity)?;
        let client = self.inner.client(conn).await?;
        let key = LoginKey {
            pod_uid: ctx.pod.uid.clone(),
            subject: claims.subject.clone().unwrap_or_default(),
            token: jwt.digest(),
            connection: conn.clone(),
        };

        // Distinct reads, in first-use order; each object points at one.
        let mut reads: Vec<(ReadKey, &Object)> = Vec::new();
        let mut index_of: Vec<usize> = Vec::with_capacity(self.spc.objects.len());
        for object in &self.spc.objects {
            let rk = ReadKey::of(object);
            let idx = match reads.iter().position(|(k, _)| *k == rk) {
                Some(i) => i,
                None => {
                    reads.push((rk, object));
                    reads.len() - 1
                }
            };
            index_of.push(idx);
        }

        let (token, cached) = self.inner.login(&key, &client, jwt).await?;
        let pod_uid = ctx.pod.uid.as_str();
        let limit = self.inner.config.parallel_reads.max(1);
        let (inner, client_ref, token_ref, reads_ref) = (&self.inner, &*client, &token, &reads);
        let mut results: Vec<Result<Value, Error>> = stream::iter(0..reads.len())
            .map(move |i| {
                let (rk, o) = &reads_ref[i];
                inner.read_reusing(pod_uid, client_ref, conn, token_ref, rk, &o.name)
            })
            .buffered(limit)
            .collect()
            .await;
        // A cached token may have been revoked or expired early: log in once more.
        if cached
            && results
                .iter()
                .any(|r| matches!(r, Err(Error::Read { code: 403, .. })))
        {
            self.inner.forget(&key, &token).await;
            let (fresh, _) = self.inner.login(&key, &client, jwt).await?;
            for (i, (rk, o)) in reads.iter().enumerate() {
                if matches!(results[i], Err(Error::Read { code: 403, .. })) {
                    results[i] = self
                        .inner
                        .read_reusing(pod_uid, &client, conn, &fresh, rk, &o.name)
                        .await;
                }
            }
        }
        let mut responses = Vec::with_capacity(results.len());
        for result in results {
            responses.push(result?);
        }
        self.spc
            .objects
            .iter()
            .zip(index_of)
            .map(|(object, idx)| {
                extract::extract(object, &responses[idx])
                    .map(SecretBytes::new)
                    .map_err(|source| {
                        Error::Extract {
                            object: object.name.clone(),
                            source,
                        }
                        .into()
                    })
            })
            .collect()
    }
}

impl Inner {
    /// The HTTP client for a connection: cached, or built (TLS files read
    /// on the blocking pool) without holding the cache's lock, so a slow or
    /// hostile file of one class cannot stall the mounts of another.
    async fn client(&self, conn: &Connection) -> Result<Arc<VaultHttp>, Error> {
        let key = (
            conn.address.clone(),
            conn.namespace.clone(),
            conn.tls.clone(),
        );
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let (conn_owned, http, files) = (
            conn.clone(),
            self.config.http,
            self.config.tls_files.clone(),
        );
        let built = tokio::task::spawn_blocking(move || VaultHttp::new(&conn_owned, &http, &files))
            .await
            .map_err(|_| "building the HTTP client failed".to_owned())
            .and_then(|r| r)
            .map_err(|reason| Error::Client {
                address: conn.address.clone(),
                reason,
            })?;
        let client = Arc::new(built);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= 256 {
            clients.clear();
        }
        Ok(clients.entry(key).or_insert(client).clone())
    }

    /// A Vault token for the pod: cached, or from one login shared by
    /// every concurrent mount that needs it. Returns whether it was cached.
    async fn login(
        &self,
        key: &LoginKey,
        client: &VaultHttp,
        jwt: &Token,
    ) -> Result<(Token, bool), Error> {
        let slot = {
            let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
            if logins.len() >= self.config.cache_size.max(1) {
                logins.retain(|_, slot| {
                    Arc::strong_count(slot) > 1
                        || slot.try_lock().is_ok_and(|l| {
                            l.as_ref().is_some_and(|c| c.valid_until > Instant::now())
                        })
                });
                // Still full of valid logins: drop idle ones (their pods log in
                // again when they next mount) so the bound holds.
                let cap = self.config.cache_size.max(1);
                if logins.len() >= cap {
                    let idle: Vec<LoginKey> = logins
                        .iter()
                        .filter(|(_, slot)| Arc::strong_count(slot) == 1)
                        .map(|(k, _)| k.clone())
                        .take(logins.len() + 1 - cap)
                        .collect();
                    for k in idle {
                        logins.remove(&k);
                    }
                }
            }
            logins.entry(key.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(cached) = guard.as_ref()
            && cached.valid_until > Instant::now()
            && self.config.cache_size > 0
        {
            self.metrics.cache_lookup("vault_login", true);
            tracing::debug!(vault = %key.connection.address, role = %key.connection.role, "vault login cache hit");
            return Ok((cached.token.clone(), true));
        }
        self.metrics.cache_lookup("vault_login", false);
        let conn = &key.connection;
        let started = Instant::now();
        let result = client
            .login(&conn.auth_mount, &conn.role, jwt.expose())
            .await;
        self.metrics
            .backend_request("vault", "login", outcome(&result), started.elapsed());
        let auth = result.map_err(|e| match e {
            ClientError::APIError {
                code: code @ (400 | 401 | 403),
                errors,
            } => Error::LoginRefused {
                address: conn.address.clone(),
                subject: if key.subject.is_empty() {
                    "the pod's service account".into()
                } else {
                    key.subject.clone()
                },
                role: conn.role.clone(),
                mount: conn.auth_mount.clone(),
                code,
                errors: join_errors(&errors),
            },
            other => {
                let (kind, reason) = classify(&other);
                Error::Login {
                    address: conn.address.clone(),
                    mount: conn.auth_mount.clone(),
                    reason,
                    kind,
                }
            }
        })?;
        if auth.client_token.is_empty() {
            return Err(Error::Login {
                address: conn.address.clone(),
                mount: conn.auth_mount.clone(),
                reason: "the response has no client token".into(),
                kind: ErrorKind::Internal,
            });
        }
        let lease = Duration::from_secs(auth.lease_duration.min(MAX_LEASE_SECS));
        // Renew well before expiry; a token without TTL is still re-checked every 5 minutes.
        let ttl = if lease.is_zero() {
            Duration::from_secs(300)
        } else {
            lease.mul_f64(0.8)
        };
        tracing::debug!(
            vault = %conn.address,
            auth_mount = %conn.auth_mount,
            role = %conn.role,
            subject = %key.subject,
            lease_s = lease.as_secs(),
            "vault login"
        );
        let token = Token::new(auth.client_token);
        *guard = Some(CachedLogin {
            token: token.clone(),
            valid_until: Instant::now() + ttl,
        });
        Ok((token, false))
    }

    async fn forget(&self, key: &LoginKey, token: &Token) {
        let slot = self
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(slot) = slot {
            let mut guard = slot.lock().await;
            if guard
                .as_ref()
                .is_some_and(|c| c.token.expose() == token.expose())
            {
                *guard = None;
            }
        }
    }

    /// Reads, reusing a dynamic response of the same pod and request while
    /// less than two thirds of its lifetime has passed: the driver's
    /// republish every minute must not issue a new certificate each time.
    async fn read_reusing(
        &self,
        pod_uid: &str,
        client: &VaultHttp,
        conn: &Connection,
        token: &Token,
        rk: &ReadKey,
        object: &str,
    ) -> Result<Value, Error> {
        let key = ResponseKey {
            pod_uid: pod_uid.to_owned(),
            connection: conn.clone(),
            read: rk.clone(),
        };
        let reusable = {
            let responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
            responses
                .get(&key)
                .filter(|c| c.reuse_until > Instant::now())
                .and_then(|c| serde_json::from_slice::<Value>(c.body.expose()).ok())
        };
        if let Some(value) = reusable {
            self.metrics.cache_lookup("vault_dynamic", true);
            tracing::debug!(path = %rk.path, object, "reusing a dynamic response");
            return Ok(value);
        }
        let value = self.read(client, conn, token, rk, object).await?;
        if let Some(lifetime) =
            dynamic_lifetime(rk.method, &value).filter(|_| self.config.cache_size > 0)
        {
            self.metrics.cache_lookup("vault_dynamic", false);
            let mut responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if responses.len() >= self.config.cache_size.max(1) {
                responses.retain(|_, c| c.reuse_until > now);
                if responses.len() >= self.config.cache_size.max(1)
                    && let Some(victim) = responses
                        .iter()
                        .min_by_key(|(_, c)| c.reuse_until)
                        .map(|(k, _)| k.clone())
                {
                    responses.remove(&victim);
                }
            }
            responses.insert(
                key,
                CachedResponse {
                    body: SecretBytes::new(serde_json::to_vec(&value).unwrap_or_default()),
                    reuse_until: now + lifetime.mul_f64(2.0 / 3.0),
                },
            );
        }
        Ok(value)
    }

    async fn read(
        &self,
        client: &VaultHttp,
        conn: &Connection,
        token: &Token,
        rk: &ReadKey,
        object: &str,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let result = client.read(token, rk).await;
        self.metrics
            .backend_request("vault", "read", outcome(&result), started.elapsed());
        result.map_err(|e| match e {
            ClientError::APIError { code, errors } => Error::Read {
                object: object.to_owned(),
                method: rk.method.as_str(),
                path: rk.path.clone(),
                address: conn.address.clone(),
                code,
                errors: join_errors(&errors),
            },
            other => {
                let (kind, reason) = classify(&other);
                Error::Request {
                    object: object.to_owned(),
                    method: rk.method.as_str(),
                    path: rk.path.clone(),
                    address: conn.address.clone(),
                    reason,
                    kind,
                }
            }
        })
    }
}

/// Longest lease or token lifetime believed (32 days, Vault's default
/// max_lease_ttl): a server's `lease_duration` of 2^64-1 must not overflow
/// an `Instant`, nor keep a response cached for ever.
const MAX_LEASE_SECS: u64 = 32 * 24 * 3600;

/// How long a dynamic response lives: its lease, or a certificate's
/// `expiration`. `None` for static data (KV), which is always read fresh.
fn dynamic_lifetime(method: Method, response: &Value) -> Option<Duration> {
    let lease_id = response
        .get("lease_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let lease = response
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(MAX_LEASE_SECS);
    if !lease_id.is_empty() && lease > 0 {
        return Some(Duration::from_secs(lease));
    }
    if method == Method::Get {
        return None;
    }
    if let Some(expiration) = response.pointer("/data/expiration").and_then(Value::as_i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        return (expiration > now).then(|| {
            Duration::from_secs(
                expiration
                    .saturating_sub(now)
                    .unsigned_abs()
                    .min(MAX_LEASE_SECS),
            )
        });
    }
    (lease > 0).then(|| Duration::from_secs(lease))
}

fn outcome<T>(result: &Result<T, ClientError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ClientError::APIError { code, .. }) if *code < 500 => "refused",
        Err(_) => "error",
    }
}

fn join_errors(errors: &[String]) -> String {
    let joined: Vec<String> = errors
        .iter()
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if joined.is_empty() {
        "no error message".into()
    } else {
        joined.join("; ")
    }
}

/// Kind and a message for failures that are not Vault API errors.
fn classify(e: &ClientError) -> (ErrorKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(big) = err.downcast_ref::<BodyTooLarge>() {
            return (ErrorKind::ResourceExhausted, big.to_string());
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            // A certificate problem is configuration: retrying will not help.
            return (ErrorKind::FailedPrecondition, format!("TLS: {tls}"));
        }
        if let Some(re) = err.downcast_ref::<reqwest::Error>() {
            if let Some(tls) = find_source::<rustls::Error>(re) {
                return (ErrorKind::FailedPrecondition, format!("TLS: {tls}"));
            }
            // The TLS connector does not always expose rustls' error as a
            // source; its message is still the root cause.
            let cause = root_cause(re);
            let lower = cause.to_ascii_lowercase();
            if lower.contains("certificate")
                || lower.contains("received fatal alert")
                || lower.contains("handshake")
            {
                return (ErrorKind::FailedPrecondition, format!("TLS: {cause}"));
            }
            if re.is_timeout() {
                return (
                    ErrorKind::DeadlineExceeded,
                    "no answer in time (Vault is slow or stalled)".into(),
                );
            }
            if re.is_connect() {
                return (
                    ErrorKind::Unavailable,
                    format!("cannot connect ({})", root_cause(re)),
                );
            }
            return (
                ErrorKind::Unavailable,
                format!("the request failed ({})", root_cause(re)),
            );
        }
        if let Some(rustify::errors::ClientError::ServerResponseError { code, .. }) =
            err.downcast_ref::<rustify::errors::ClientError>()
        {
            let kind = if matches!(code, 429 | 500..=504) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Internal
            };
            return (
                kind,
                format!("HTTP {code} with a body that is not a Vault error"),
            );
        }
        source = err.source();
    }
    match e {
        ClientError::ResponseEmptyError => (
            ErrorKind::Internal,
            "the response is empty (no auth block)".into(),
        ),
        ClientError::ResponseDataEmptyError => {
            (ErrorKind::NotFound, "the response has no data".into())
        }
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ResponseParseError { .. },
        } => (ErrorKind::Internal, "the response is not JSON".into()),
        other => (ErrorKind::Internal, other.to_string()),
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        // rustls errors arrive wrapped in io::Error by the TLS connector.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<T>()
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The HTTP side of one connection (address, namespace, TLS settings):
/// the request policy of [`super::http`] applied to vaultrs' endpoints.
/// vaultrs describes the requests (paths, bodies, `X-Vault-*` headers) and
/// parses the answers; this sends them, which vaultrs' own client cannot do
/// with a body cap.
struct VaultHttp {
    address: String,
    namespace: Option<String>,
    /// Keeps connections alive between requests.
    pooled: reqwest::Client,
    /// Keeps none: for the one retry after a pooled connection turned out closed.
    fresh: reqwest::Client,
    max_body: usize,
}

impl VaultHttp {
    fn new(
        conn: &Connection,
        http: &policy::Policy,
        files: &tls::FilePolicy,
    ) -> Result<Self, String> {
        let config = tls::client_config(&conn.tls, files)?;
        let build = |fresh: bool| {
            policy::builder(http, fresh)
                .tls_backend_preconfigured(config.clone())
                .build()
                .map_err(|e| e.to_string())
        };
        Ok(Self {
            address: conn.address.clone(),
            namespace: conn.namespace.clone(),
            pooled: build(false)?,
            fresh: build(true)?,
            max_body: http.max_body,
        })
    }

    fn middleware(&self, token: Option<&Token>) -> EndpointMiddleware {
        EndpointMiddleware {
            token: token.map(|t| t.expose().to_owned()).unwrap_or_default(),
            version: "v1".into(),
            wrap: None,
            namespace: self.namespace.clone(),
        }
    }

    /// `auth/<mount>/login` with the pod's JWT (kubernetes and jwt methods
    /// take the same body). Retried once on a fresh connection if the pooled
    /// one was closed under it.
    async fn login(
        &self,
        mount: &str,
        role: &str,
        jwt: &str,
    ) -> Result<vaultrs::api::AuthInfo, ClientError> {
        let endpoint = LoginWithKubernetesRequest::builder()
            .mount(mount)
            .role(role)
            .jwt(jwt)
            .build()
            .map_err(|e| ClientError::RestClientError {
                source: rustify::errors::ClientError::EndpointBuildError { source: e.into() },
            })?;
        let call = Call {
            http: self,
            retry_stale: true,
        };
        let result: EndpointResult<()> = endpoint
            .with_middleware(&self.middleware(None))
            .exec(&call)
            .await
            .map_err(api_error)?
            .wrap::<EndpointResult<()>>()
            .map_err(ClientError::from)?;
        result.auth.ok_or(ClientError::ResponseEmptyError)
    }

    /// One read; GETs are retried once on a fresh connection if the pooled
    /// one was closed under them (a PUT or POST may issue a credential, so
    /// it is not sent twice).
    async fn read(&self, token: &Token, rk: &ReadKey) -> Result<Value, ClientError> {
        let call = Call {
            http: self,
            retry_stale: rk.method == Method::Get,
        };
        RawRequest { key: rk }
            .with_middleware(&self.middleware(Some(token)))
            .exec(&call)
            .await
            .map_err(api_error)?
            .parse()
            .map_err(ClientError::from)
    }
}

/// A Vault error answer (`{"errors": [...]}`) as vaultrs' APIError; any
/// other failure as it is.
fn api_error(e: rustify::errors::ClientError) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    if let rustify::errors::ClientError::ServerResponseError {
        code,
        content: Some(content),
    } = &e
        && let Ok(parsed) = serde_json::from_str::<Errors>(content)
    {
        return ClientError::APIError {
            code: *code,
            errors: parsed.errors,
        };
    }
    ClientError::RestClientError { source: e }
}

/// One request's way out: the pooled client, and whether a stale pooled
/// connection may be retried on a fresh one.
struct Call<'a> {
    http: &'a VaultHttp,
    retry_stale: bool,
}

impl Call<'_> {
    async fn attempt(
        &self,
        client: &reqwest::Client,
        req: &http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, (rustify::errors::ClientError, bool)> {
        let request_error = |e: reqwest::Error| {
            let stale = policy::is_stale_connection(&e);
            (
                rustify::errors::ClientError::RequestError {
                    source: e.into(),
                    url: req.uri().to_string(),
                    method: req.method().to_string(),
                },
                stale,
            )
        };
        let mut builder = client.request(req.method().clone(), req.uri().to_string());
        for (name, value) in req.headers() {
            builder = builder.header(name, value);
        }
        let response = builder
            .body(req.body().clone())
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        let body = policy::read_capped(response, self.http.max_body)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(big) => (
                    rustify::errors::ClientError::ResponseError { source: big.into() },
                    false,
                ),
                BodyError::Read(e) => request_error(e),
            })?;
        http::Response::builder()
            .status(status)
            .body(body)
            .map_err(|e| {
                (
                    rustify::errors::ClientError::ResponseError { source: e.into() },
                    false,
                )
            })
    }
}

#[async_trait]
impl rustify::client::Client for Call<'_> {
    fn base(&self) -> &str {
        &self.http.address
    }

    async fn send(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, rustify::errors::ClientError> {
        match self.attempt(&self.http.pooled, &req).await {
            Ok(response) => Ok(response),
            Err((_, true)) if self.retry_stale => {
                tracing::debug!(vault = %self.http.address, "pooled connection was closed; retrying on a new one");
                self.attempt(&self.http.fresh, &req)
                    .await
                    .map_err(|(e, _)| e)
            }
            Err((e, _)) => Err(e),
        }
    }
}

/// Any path, method, query and JSON body; the whole JSON response back.
struct RawRequest<'a> {
    key: &'a ReadKey,
}

impl Endpoint for RawRequest<'_> {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.key.path.clone()
    }

    fn method(&self) -> RequestMethod {
        match self.key.method {
            Method::Get => RequestMethod::GET,
            Method::Put => RequestMethod::PUT,
            Method::Post => RequestMethod::POST,
        }
    }

    fn query(&self) -> Result<Option<String>, rustify::errors::ClientError> {
        if self.key.query.is_empty() {
            return Ok(None);
        }
        let pairs: Vec<String> = self
            .key
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        Ok(Some(pairs.join("&")))
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.key.body.as_ref().map(|b| b.as_bytes().to_vec()))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

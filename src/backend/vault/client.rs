//! HTTP to Vault: one client (a connection pool) per address, namespace
//! and TLS settings, and the two requests coffer makes: a login and a raw
//! request for an object's path. vaultrs describes the requests (paths,
//! bodies, `X-Vault-*` headers) and parses the answers; the sending is done
//! here under the policy of [`crate::backend::http`] (no redirects, capped
//! bodies, timeouts, one retry of a closed pooled connection), which
//! vaultrs' own client cannot apply. The Vault token header is marked
//! sensitive, so no HTTP layer prints it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rustify::endpoint::{Endpoint, MiddleWare};
use serde_json::Value;
use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
use vaultrs::api::{AuthInfo, EndpointError, EndpointMiddleware, EndpointResult};

use vaultrs::error::ClientError;

use super::error::Error;
use super::params::{Connection, Method, Object};
use super::tls;
use crate::backend::http as policy;
use crate::secret::Token;

/// Most clients kept; past it the pool starts again.
const MAX_CLIENTS: usize = 256;

type ClientKey = (String, Option<String>, tls::Tls);

/// One HTTP client per (address, namespace, TLS).
pub struct Pool {
    clients: Mutex<HashMap<ClientKey, Arc<VaultHttp>>>,
    http: policy::Policy,
    files: tls::FilePolicy,
}

impl Pool {
    pub fn new(http: policy::Policy, files: tls::FilePolicy) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            http,
            files,
        }
    }

    /// The client for a connection: cached, or built (TLS files read on the
    /// blocking pool) without holding the pool's lock, so a slow or hostile
    /// file of one class cannot stall the mounts of another.
    pub async fn get(&self, conn: &Connection) -> Result<Arc<VaultHttp>, Error> {
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
        let (owned, http, files) = (conn.clone(), self.http, self.files.clone());
        let built = tokio::task::spawn_blocking(move || VaultHttp::new(&owned, &http, &files))
            .await
            .map_err(|_| "building the HTTP client failed".to_owned())
            .and_then(|r| r)
            .map_err(|reason| Error::Client {
                address: conn.address.clone(),
                reason,
            })?;
        let client = Arc::new(built);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        Ok(clients.entry(key).or_insert(client).clone())
    }
}

/// The HTTP side of one connection.
pub struct VaultHttp {
    address: String,
    namespace: Option<String>,
    /// `X-Vault-Namespace`, built once.
    namespace_header: Option<http::HeaderValue>,
    /// The address's own path ([`address_prefix`]), which goes before `/v1`.
    prefix: String,
    client: policy::client::Client,
}

impl VaultHttp {
    fn new(
        conn: &Connection,
        http: &policy::Policy,
        files: &tls::FilePolicy,
    ) -> Result<Self, String> {
        let config = tls::client_config(&conn.tls, files)?;
        let target = http::Uri::try_from(conn.address.as_str())
            .map_err(|e| format!("the address is not a valid URI: {e}"))?;
        let namespace_header = conn
            .namespace
            .as_deref()
            .map(http::HeaderValue::from_str)
            .transpose()
            .map_err(|_| "the namespace is not a valid header value".to_owned())?;
        Ok(Self {
            address: conn.address.clone(),
            namespace: conn.namespace.clone(),
            namespace_header,
            prefix: address_prefix(&conn.address)?,
            client: policy::client::Client::new(http, config, &target)?,
        })
    }
}

/// `X-Vault-Request: true`, which Vault requires of requests that may
/// come from a browser, sent on every request as the Vault client does.
static VAULT_REQUEST: http::HeaderValue = http::HeaderValue::from_static("true");

/// One request's way out for rustify (the login): the connection's
/// client, and whether the request may be repeated on a fresh connection.
struct Call<'a> {
    http: &'a VaultHttp,
    retry_stale: bool,
}

/// A transport failure as rustify reports it, the cause kept as the source.
fn transport_error(
    e: policy::client::Error,
    method: &http::Method,
    uri: &http::Uri,
) -> rustify::errors::ClientError {
    match e {
        policy::client::Error::TooLarge(big) => {
            rustify::errors::ClientError::ResponseError { source: big.into() }
        }
        other => rustify::errors::ClientError::RequestError {
            source: other.into(),
            url: uri.to_string(),
            method: method.to_string(),
        },
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
        let (parts, body) = req.into_parts();
        let body = bytes::Bytes::from(body);
        let headers: Vec<(http::HeaderName, &http::HeaderValue)> = parts
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value))
            .collect();
        let request = policy::client::Request {
            method: &parts.method,
            uri: &parts.uri,
            headers: &headers,
            body: Some(&body),
        };
        let (status, body) = self
            .http
            .client
            .send(&request, self.retry_stale)
            .await
            .map_err(|e| transport_error(e, &parts.method, &parts.uri))?;
        http::Response::builder()
            .status(status)
            .body(body)
            .map_err(|e| rustify::errors::ClientError::ResponseError { source: e.into() })
    }
}

/// vaultrs' request decoration (API version prefix, `X-Vault-Request`,
/// token, namespace), with the token header marked sensitive and the API
/// version moved after the address's own path.
struct Headers {
    vaultrs: EndpointMiddleware,
    prefix: String,
}

impl Headers {
    fn new(client: &VaultHttp, token: Option<&Token>) -> Self {
        Self {
            vaultrs: EndpointMiddleware {
                token: token.map(|t| t.expose().to_owned()).unwrap_or_default(),
                version: "v1".into(),
                wrap: None,
                namespace: client.namespace.clone(),
            },
            prefix: client.prefix.clone(),
        }
    }
}

/// vaultrs puts `/v1` before the whole path, the address's own path
/// included, and keeps the login path's leading slash as an empty segment
/// there (`/v1/vault//auth/...`); the Go Vault client puts it after the
/// address's path (`/vault/v1/auth/...`).
fn version_after_prefix(uri: &http::Uri, prefix: &str) -> Option<http::Uri> {
    if prefix.is_empty() {
        return None;
    }
    let rest = uri
        .path_and_query()?
        .as_str()
        .strip_prefix("/v1")?
        .strip_prefix(prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with(['/', '?']))?;
    let rest = match rest.trim_start_matches('/') {
        trimmed if trimmed.len() < rest.len() => format!("/{trimmed}"),
        _ => rest.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(format!("{prefix}/v1{rest}").parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

impl MiddleWare for Headers {
    fn request<E: Endpoint>(
        &self,
        endpoint: &E,
        req: &mut http::Request<Vec<u8>>,
    ) -> Result<(), rustify::errors::ClientError> {
        self.vaultrs.request(endpoint, req)?;
        if let Some(token) = req.headers_mut().get_mut("X-Vault-Token") {
            token.set_sensitive(true);
        }
        if let Some(uri) = version_after_prefix(req.uri(), &self.prefix) {
            *req.uri_mut() = uri;
        }
        Ok(())
    }

    fn response<E: Endpoint>(
        &self,
        endpoint: &E,
        resp: &mut http::Response<Vec<u8>>,
    ) -> Result<(), rustify::errors::ClientError> {
        self.vaultrs.response(endpoint, resp)
    }
}

/// A Vault error answer (`{"errors": [...]}`) as an API error; anything
/// else as the transport failure it is.
fn api_error(e: rustify::errors::ClientError) -> ClientError {
    if let rustify::errors::ClientError::ServerResponseError {
        code,
        content: Some(body),
    } = &e
        && let Ok(err) = serde_json::from_str::<EndpointError>(body)
    {
        return ClientError::APIError {
            code: *code,
            errors: err.errors,
        };
    }
    ClientError::RestClientError { source: e }
}

/// `auth/<mount>/login` with the pod's JWT (the kubernetes and jwt
/// methods take the same body).
pub async fn login(
    client: &VaultHttp,
    mount: &str,
    role: &str,
    jwt: &Token,
) -> Result<AuthInfo, ClientError> {
    let endpoint = LoginWithKubernetesRequest {
        mount: mount.to_owned(),
        role: role.to_owned(),
        jwt: jwt.expose().to_owned(),
    };
    let call = Call {
        http: client,
        retry_stale: true,
    };
    let result: EndpointResult<()> = endpoint
        .with_middleware(&Headers::new(client, None))
        .exec(&call)
        .await
        .map_err(api_error)?
        .wrap::<EndpointResult<()>>()
        .map_err(|source| ClientError::RestClientError { source })?;
    result.auth.ok_or(ClientError::ResponseEmptyError)
}

/// One distinct request of a mount: what identical objects share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Request {
    pub fn of(o: &Object) -> Self {
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

/// A Vault token as coffer sends it: the `X-Vault-Token` header, built
/// once per login and marked sensitive, so no HTTP layer prints it and
/// `Debug` shows nothing. Requests share its bytes, which are zeroed when
/// the last of them is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultToken(http::HeaderValue);

/// The token's bytes, zeroed on drop.
struct Zeroed(zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Zeroed {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl VaultToken {
    /// Refuses a token that cannot be a header value (a hostile or broken
    /// server's answer), which vaultrs' own client would panic on.
    pub fn new(token: &Token) -> Result<Self, String> {
        let bytes = zeroize::Zeroizing::new(token.expose().as_bytes().to_vec());
        let mut header = http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(Zeroed(
            bytes,
        )))
        .map_err(|_| "Vault returned a token that is not a valid header value".to_owned())?;
        header.set_sensitive(true);
        Ok(Self(header))
    }
}

impl std::fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultToken(<redacted>)")
    }
}

/// One distinct request of a mount, prepared when the class is planned:
/// the URL is built once, exactly as vaultrs and rustify build it (the
/// address, the path's segments percent-encoded, `.` and `..` dropped, the
/// query, then `v1` before the whole path), and checked to be a valid URI.
#[derive(Debug)]
pub struct Read {
    pub request: Arc<Request>,
    uri: http::Uri,
    method: http::Method,
    body: Option<bytes::Bytes>,
}

impl Read {
    pub fn new(address: &str, request: Request) -> Result<Self, String> {
        let uri = url(address, &request)?;
        let method = match request.method {
            Method::Get => http::Method::GET,
            Method::Put => http::Method::PUT,
            Method::Post => http::Method::POST,
        };
        let body = request
            .body
            .as_ref()
            .map(|b| bytes::Bytes::copy_from_slice(b.as_bytes()));
        Ok(Self {
            request: Arc::new(request),
            uri,
            method,
            body,
        })
    }
}

/// The path of a Vault address (`https://gateway/vault` → `/vault`), or
/// "" for none. The API version goes after it, as the Go Vault client of the
/// vault and openbao providers puts it (`path.Join(address path, "/v1/...")`),
/// so a Vault behind a path-routing proxy gets the same URLs from coffer.
fn address_prefix(address: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(address).map_err(|e| format!("the address: {e}"))?;
    Ok(url.path().trim_end_matches('/').to_owned())
}

/// The URL of `request` on the Vault at `address`: the address's own path,
/// `/v1`, then the request's path segments (percent-encoded, `.` and `..`
/// dropped, as vaultrs and rustify encode them) and query.
fn url(address: &str, request: &Request) -> Result<http::Uri, String> {
    let mut url = reqwest::Url::parse(address).map_err(|e| format!("the address: {e}"))?;
    let prefix = url.path().trim_end_matches('/').to_owned();
    url.set_path("");
    url.path_segments_mut()
        .map_err(|()| "the address cannot have a path".to_owned())?
        .extend(request.path.split('/'));
    if !request.query.is_empty() {
        url.set_query(Some(&query(&request.query)));
    }
    let versioned = format!("{prefix}/v1{}", url.path());
    url.set_path(&versioned);
    http::Uri::try_from(url.as_str()).map_err(|e| format!("not a valid URI: {e}"))
}

fn query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Sends `read` with `token`; the whole JSON answer back. Errors are those
/// vaultrs gives for the same answer (API errors by status and Vault's
/// `errors`, transport failures, a body that is not JSON).
pub async fn send(
    client: &VaultHttp,
    token: &VaultToken,
    read: &Read,
) -> Result<Value, ClientError> {
    let token_header = http::HeaderName::from_static("x-vault-token");
    let mut headers = Vec::with_capacity(3);
    headers.push((
        http::HeaderName::from_static("x-vault-request"),
        &VAULT_REQUEST,
    ));
    headers.push((token_header, &token.0));
    if let Some(ns) = &client.namespace_header {
        headers.push((http::HeaderName::from_static("x-vault-namespace"), ns));
    }
    let request = policy::client::Request {
        method: &read.method,
        uri: &read.uri,
        headers: &headers,
        body: read.body.as_ref(),
    };
    let (status, body) = client
        .client
        .send(&request, read.request.method == Method::Get)
        .await
        .map_err(|e| ClientError::RestClientError {
            source: transport_error(e, &read.method, &read.uri),
        })?;
    if !rustify::client::HTTP_SUCCESS_CODES.contains(&status.as_u16()) {
        return Err(api_error(
            rustify::errors::ClientError::ServerResponseError {
                code: status.as_u16(),
                content: String::from_utf8(body).ok(),
            },
        ));
    }
    parse_json(body)
        .await
        .map_err(|e| ClientError::RestClientError {
            source: rustify::errors::ClientError::ResponseParseError {
                source: e.into(),
                content: None,
            },
        })
}

/// Bodies above this are parsed on the blocking pool: a class can name a
/// server that answers megabytes, and parsing them on the async worker
/// would hold up every other tenant's mount.
const PARSE_INLINE_BYTES: usize = 256 * 1024;

async fn parse_json(body: Vec<u8>) -> Result<Value, serde_json::Error> {
    if body.len() <= PARSE_INLINE_BYTES {
        return serde_json::from_slice(&body);
    }
    match tokio::task::spawn_blocking(move || serde_json::from_slice(&body)).await {
        Ok(parsed) => parsed,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(serde::de::Error::custom(
            "parsing was cancelled (coffer is shutting down)",
        )),
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

#[cfg(test)]
mod tests {
    use rustify::enums::{RequestMethod, RequestType, ResponseType};

    use super::*;

    /// An endpoint for vaultrs' middleware to decorate.
    struct Any;

    impl Endpoint for Any {
        type Response = Value;
        const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
        const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;
        fn path(&self) -> String {
            String::new()
        }
        fn method(&self) -> RequestMethod {
            RequestMethod::GET
        }
    }

    /// The URL coffer sent before it built URLs itself: rustify's, then
    /// vaultrs' `v1` prefix, then reqwest parsing the result.
    fn through_vaultrs(address: &str, request: &Request) -> Option<String> {
        let q = (!request.query.is_empty()).then(|| query(&request.query));
        std::panic::catch_unwind(|| {
            let mut req = rustify::http::build_request(
                address,
                &request.path,
                RequestMethod::GET,
                q.clone(),
                None,
            )
            .ok()?;
            EndpointMiddleware {
                token: String::new(),
                version: "v1".into(),
                wrap: None,
                namespace: None,
            }
            .request(&Any, &mut req)
            .ok()?;
            reqwest::Url::parse(&req.uri().to_string())
                .ok()
                .map(|u| u.to_string())
        })
        .ok()
        .flatten()
    }

    #[test]
    fn read_urls_are_the_ones_vaultrs_built_with_v1_after_the_address_path() {
        // (address, its path): an address with a path gets what vaultrs
        // builds for the address without it, with the path before /v1, as
        // the Go Vault client does (path.Join(address path, "/v1/...")).
        let addresses = [
            ("http://127.0.0.1:8200", ""),
            ("https://VAULT.corp:8200", ""),
            ("https://vault.corp/prefix", "/prefix"),
            ("https://vault.corp/a%20b/c/", "/a%20b/c"),
            ("http://[::1]:8200", ""),
        ];
        let paths = [
            "secret/data/app",
            "secret/data/a b",
            "secret/data/a%20b",
            "secret/data/../x",
            "secret/./data",
            "secret//data",
            "secret/data/ü",
            "secret/data/a?b",
            "secret/data/a#b",
            "secret/%2e%2e/x",
            "a\\b",
            "a|b^c`d",
            "a{b}\"c<d>",
            "/leading",
            "trailing/",
            "",
        ];
        let queries: [Vec<(String, String)>; 3] = [
            vec![],
            vec![("version".into(), "2".into())],
            vec![("a b".into(), "c&d=é".into()), ("x".into(), String::new())],
        ];
        let mut built = 0;
        let mut cases = 0;
        for (address, prefix) in addresses {
            for path in paths {
                for q in &queries {
                    let request = Request {
                        method: Method::Get,
                        path: path.to_owned(),
                        query: q.clone(),
                        body: None,
                    };
                    let ours = url(address, &request).map(|u| u.to_string()).ok();
                    let theirs = if prefix.is_empty() {
                        through_vaultrs(address, &request)
                    } else {
                        let origin = "https://vault.corp";
                        through_vaultrs(origin, &request)
                            .map(|u| u.replacen(origin, &format!("{origin}{prefix}"), 1))
                    };
                    assert_eq!(ours, theirs, "{address} {path:?} {q:?}");
                    built += usize::from(ours.is_some());
                    cases += 1;
                }
            }
        }
        // Every one of them is a URL both build (none is an error on either side).
        assert_eq!(built, cases);
    }

    /// A Vault that records each request line and refuses every request.
    async fn refusing_vault() -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0u8; length];
                        if conn.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(line);
                        let answer = br#"{"errors":["permission denied"]}"#;
                        let reply = format!(
                            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            answer.len()
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err()
                            || conn.write_all(answer).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), lines)
    }

    #[tokio::test]
    async fn the_login_and_reads_put_v1_after_the_address_path_as_the_go_client_does() {
        let (origin, lines) = refusing_vault().await;
        for (address, prefix) in [
            (format!("{origin}/vault"), "/vault"),
            (format!("{origin}/vault/"), "/vault"),
            (origin.clone(), ""),
        ] {
            lines.lock().unwrap().clear();
            let conn = Connection {
                address: address.clone(),
                namespace: None,
                auth_mount: "jwt".into(),
                role: "web".into(),
                audience: "vault".into(),
                tls: tls::Tls::default(),
            };
            let http = VaultHttp::new(
                &conn,
                &policy::Policy::default(),
                &tls::FilePolicy::default(),
            )
            .unwrap();
            let refused = login(&http, "jwt", "web", &Token::new("a.b.c".into())).await;
            assert!(
                matches!(refused, Err(ClientError::APIError { code: 403, .. })),
                "{refused:?}"
            );
            let read = Read::new(
                &address,
                Request {
                    method: Method::Get,
                    path: "secret/data/app".into(),
                    query: vec![("version".into(), "2".into())],
                    body: None,
                },
            )
            .unwrap();
            let token = VaultToken::new(&Token::new("hvs.x".into())).unwrap();
            let refused = send(&http, &token, &read).await;
            assert!(
                matches!(refused, Err(ClientError::APIError { code: 403, .. })),
                "{refused:?}"
            );
            assert_eq!(
                *lines.lock().unwrap(),
                vec![
                    format!("post {prefix}/v1/auth/jwt/login http/1.1"),
                    format!("get {prefix}/v1/secret/data/app?version=2 http/1.1"),
                ],
                "{address}"
            );
        }
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_and_none_is_printed() {
        assert!(VaultToken::new(&Token::new("s.abc\ndef".into())).is_err());
        let token = VaultToken::new(&Token::new("hvs.secret-value".into())).unwrap();
        assert_eq!(format!("{token:?}"), "VaultToken(<redacted>)");
        assert!(token.0.is_sensitive());
    }
}

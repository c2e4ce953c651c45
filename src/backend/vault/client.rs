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
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde_json::Value;
use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
use vaultrs::api::{AuthInfo, EndpointError, EndpointMiddleware, EndpointResult};
use vaultrs::error::ClientError;

use super::error::Error;
use super::params::{Connection, Method, Object};
use super::tls;
use crate::backend::http::{self as policy, BodyError};
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
}

/// One request's way out: the pooled client, and whether a request that
/// failed on a pooled connection the server had closed may be sent once
/// more on a fresh one (logins and GETs: a PUT or POST may issue a
/// credential, so it is not sent twice).
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
        let response = client
            .request(req.method().clone(), req.uri().to_string())
            .headers(req.headers().clone())
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

/// vaultrs' request decoration (API version prefix, `X-Vault-Request`,
/// token, namespace), with the token header marked sensitive.
struct Headers(EndpointMiddleware);

impl Headers {
    fn new(client: &VaultHttp, token: Option<&Token>) -> Self {
        Self(EndpointMiddleware {
            token: token.map(|t| t.expose().to_owned()).unwrap_or_default(),
            version: "v1".into(),
            wrap: None,
            namespace: client.namespace.clone(),
        })
    }
}

impl MiddleWare for Headers {
    fn request<E: Endpoint>(
        &self,
        endpoint: &E,
        req: &mut http::Request<Vec<u8>>,
    ) -> Result<(), rustify::errors::ClientError> {
        self.0.request(endpoint, req)?;
        if let Some(token) = req.headers_mut().get_mut("X-Vault-Token") {
            token.set_sensitive(true);
        }
        Ok(())
    }

    fn response<E: Endpoint>(
        &self,
        endpoint: &E,
        resp: &mut http::Response<Vec<u8>>,
    ) -> Result<(), rustify::errors::ClientError> {
        self.0.response(endpoint, resp)
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

/// Sends `request` with `token`; the whole JSON answer back.
pub async fn send(
    client: &VaultHttp,
    token: &Token,
    request: &Request,
) -> Result<Value, ClientError> {
    let call = Call {
        http: client,
        retry_stale: request.method == Method::Get,
    };
    Raw(request)
        .with_middleware(&Headers::new(client, Some(token)))
        .exec(&call)
        .await
        .map_err(api_error)?
        .parse()
        .map_err(|source| ClientError::RestClientError { source })
}

/// Any path, method, query and JSON body; the whole JSON response back.
struct Raw<'a>(&'a Request);

impl Endpoint for Raw<'_> {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.0.path.clone()
    }

    fn method(&self) -> RequestMethod {
        match self.0.method {
            Method::Get => RequestMethod::GET,
            Method::Put => RequestMethod::PUT,
            Method::Post => RequestMethod::POST,
        }
    }

    fn query(&self) -> Result<Option<String>, rustify::errors::ClientError> {
        if self.0.query.is_empty() {
            return Ok(None);
        }
        let pairs: Vec<String> = self
            .0
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        Ok(Some(pairs.join("&")))
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.0.body.as_ref().map(|b| b.as_bytes().to_vec()))
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

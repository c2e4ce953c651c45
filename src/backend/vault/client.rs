//! HTTP to Vault: one vaultrs client (a connection pool) per address,
//! namespace and TLS settings, and the two requests coffer makes: a login
//! and a raw request for an object's path. The Vault token header is marked
//! sensitive, so no HTTP layer prints it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustify::endpoint::{Endpoint, MiddleWare};
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde_json::Value;
use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
use vaultrs::api::{AuthInfo, EndpointError, EndpointMiddleware, EndpointResult};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::error::Error;
use super::params::{Connection, Method, Object};
use super::tls;
use crate::secret::Token;

/// Most clients kept; past it the pool starts again.
const MAX_CLIENTS: usize = 256;

type ClientKey = (String, Option<String>, tls::Tls);

/// One HTTP client per (address, namespace, TLS).
pub struct Pool {
    clients: Mutex<HashMap<ClientKey, Arc<VaultClient>>>,
    timeout: Duration,
}

impl Pool {
    pub fn new(timeout: Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    pub fn get(&self, conn: &Connection) -> Result<Arc<VaultClient>, Error> {
        let key = (
            conn.address.clone(),
            conn.namespace.clone(),
            conn.tls.clone(),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = Arc::new(self.build(conn)?);
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn build(&self, conn: &Connection) -> Result<VaultClient, Error> {
        let bad = |reason: String| Error::Client {
            address: conn.address.clone(),
            reason,
        };
        let mut builder = VaultClientSettingsBuilder::default();
        // Every field explicit: vaultrs would otherwise read VAULT_TOKEN and friends.
        builder
            .address(&conn.address)
            .token("")
            .ca_certs(Vec::new())
            .identity(None)
            .verify(!conn.tls.skip_verify)
            .timeout(Some(self.timeout))
            .namespace(conn.namespace.clone());
        let settings = builder.build().map_err(|e| bad(e.to_string()))?;
        if conn.tls.is_default() {
            return VaultClient::new(settings).map_err(|e| bad(e.to_string()));
        }
        let config = tls::client_config(&conn.tls).map_err(bad)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .timeout(self.timeout)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(VaultClient {
            http: rustify::clients::reqwest::Client::new(settings.address.as_str(), http),
            middle: EndpointMiddleware {
                token: String::new(),
                version: "v1".into(),
                wrap: None,
                namespace: settings.namespace.clone(),
            },
            settings,
        })
    }
}

/// vaultrs' request decoration (API version prefix, `X-Vault-Request`,
/// token, namespace), with the token header marked sensitive.
struct Headers(EndpointMiddleware);

impl Headers {
    fn new(client: &VaultClient, token: Option<&Token>) -> Self {
        Self(EndpointMiddleware {
            token: token.map(|t| t.expose().to_owned()).unwrap_or_default(),
            version: "v1".into(),
            wrap: None,
            namespace: client.settings.namespace.clone(),
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
    client: &VaultClient,
    mount: &str,
    role: &str,
    jwt: &Token,
) -> Result<AuthInfo, ClientError> {
    let endpoint = LoginWithKubernetesRequest {
        mount: mount.to_owned(),
        role: role.to_owned(),
        jwt: jwt.expose().to_owned(),
    };
    let result: EndpointResult<()> = endpoint
        .with_middleware(&Headers::new(client, None))
        .exec(&client.http)
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
    client: &VaultClient,
    token: &Token,
    request: &Request,
) -> Result<Value, ClientError> {
    Raw(request)
        .with_middleware(&Headers::new(client, Some(token)))
        .exec(&client.http)
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

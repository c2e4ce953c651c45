//! Vault and OpenBao: log in with the pod's ServiceAccount token
//! (`auth/<mount>/login`, kubernetes or jwt method), read each object's path,
//! extract the key. Logins are cached per pod and connection and shared
//! by concurrent mounts ([`login`]); identical reads within one mount are
//! made once; dynamic responses are reused per pod ([`dynamic`]).
//!
//! Files: [`args`] (flags), [`params`] (the vault/openbao dialects),
//! [`client`] (HTTP), [`login`], [`dynamic`], [`extract`] (response →
//! file bytes), [`tls`], [`error`].

pub mod args;
pub mod client;
pub mod dynamic;
pub mod error;
pub mod extract;
pub mod login;
pub mod params;
pub mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use serde_json::Value;
use vaultrs::error::ClientError;

pub use self::args::Args;
use self::client::{Read, Request, VaultHttp, VaultToken};
use self::dynamic::{ResponseKey, Responses};
pub use self::error::Error;
use self::login::{LoginKey, Logins};
use self::params::{Connection, Defaults, Dialect, Spc};
use super::support::{distinct, timed};
use super::{Backend, BackendError, ErrorKind, Fetch, FetchContext, Fetched, Plan, PlannedFile};
use crate::metrics::Metrics;
use crate::request::Parameters;
use crate::secret::SecretBytes;

/// Settings of the backend as a whole.
#[derive(Debug, Clone)]
pub struct Config {
    pub defaults: Defaults,
    /// Redirects, body cap and timeouts of every request to Vault.
    pub http: super::http::Policy,
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
            http: super::http::Policy::default(),
            tls_files: tls::FilePolicy::default(),
            cache_size: 1000,
            parallel_reads: 8,
        }
    }
}

/// The backend, configured from its flags.
pub fn build(args: &Args, metrics: Arc<Metrics>) -> Arc<dyn Backend> {
    Arc::new(VaultBackend::new(args.config(), metrics))
}

/// The Vault/OpenBao backend.
pub struct VaultBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    metrics: Arc<Metrics>,
    clients: client::Pool,
    logins: Logins,
    responses: Responses,
}

impl VaultBackend {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                clients: client::Pool::new(config.http, config.tls_files.clone()),
                logins: Logins::new(config.cache_size, metrics.clone()),
                responses: Responses::new(config.cache_size, metrics.clone()),
                config,
                metrics,
            }),
        }
    }
}

impl Backend for VaultBackend {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn sockets(&self) -> &'static [&'static str] {
        &["vault", "openbao"]
    }

    fn sweep(&self) -> usize {
        self.inner.logins.sweep() + self.inner.responses.sweep()
    }

    fn plan(&self, params: &Parameters, socket: &str) -> Result<Plan, super::Error> {
        let dialect = Dialect::for_socket(socket);
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
                path: o.name.clone(),
                mode: o.mode,
                config: format!("{}|server:{server}", o.config()),
                template_only: o.template_only,
                all_keys: o.all_keys,
                optional: o.optional,
            })
            .collect();
        // Distinct requests, in first-use order, each prepared once for
        // every mount of the class (named by the first object that needs
        // it); each object points at one.
        let (requests, index_of) = distinct(spc.objects.iter().map(Request::of));
        let mut reads: Vec<(Read, String)> = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter();
        for (object, &k) in spc.objects.iter().zip(&index_of) {
            // In first-use order, a request is new exactly when its index is the next one.
            if k < reads.len() {
                continue;
            }
            let Some(request) = requests.next() else {
                break;
            };
            let read =
                Read::new(&spc.connection.address, request).map_err(|reason| Error::Object {
                    object: object.name.clone(),
                    reason: format!("{:?} cannot be requested: {reason}", object.path),
                })?;
            reads.push((read, object.name.clone()));
        }
        let Spc {
            connection,
            objects,
            warnings,
        } = spc;
        Ok(Plan {
            files,
            audience: connection.audience.clone(),
            warnings,
            fetch: Box::new(VaultFetch {
                inner: self.inner.clone(),
                connection: Arc::new(connection),
                client: tokio::sync::OnceCell::new(),
                objects,
                reads,
                index_of,
            }),
        })
    }
}

struct VaultFetch {
    inner: Arc<Inner>,
    connection: Arc<Connection>,
    objects: Vec<params::Object>,
    /// The connection's client, taken from the pool on first use.
    client: tokio::sync::OnceCell<Arc<VaultHttp>>,
    /// Distinct reads and the first object that needs each.
    reads: Vec<(Read, String)>,
    /// Per object, in plan order: its read in `reads`.
    index_of: Vec<usize>,
}

#[async_trait]
impl Fetch for VaultFetch {
    #[expect(
        clippy::indexing_slicing,
        reason = "indices come from 0..len of `requests`/`results` and from `index_of`, built from `requests` positions"
    )]
    async fn fetch(&self, ctx: &FetchContext<'_>) -> Result<Vec<Fetched>, super::Error> {
        let conn = &self.connection;
        let client = self
            .client
            .get_or_try_init(|| self.inner.clients.get(conn))
            .await?;
        let key = LoginKey {
            pod_uid: ctx.pod.uid.clone(),
            subject: ctx.claims.subject.clone().unwrap_or_default(),
            token: ctx.token.digest(),
            connection: conn.clone(),
        };
        let requests = &self.reads;

        let logins = &self.inner.logins;
        let (token, cached) = logins.token(&key, client, ctx.token).await?;
        // Dynamic responses are reused per pod *and* identity: the Sync
        // Controller sends one pod UID (its own) for every SecretSync.
        let owner = &dynamic::Owner::new(&ctx.pod.uid, ctx.claims.subject.as_deref(), ctx.token);
        let limit = self.inner.config.parallel_reads.max(1);
        let (inner, client_ref, token_ref) = (&self.inner, &**client, &token);
        let mut results: Vec<Result<Value, Error>> = stream::iter(0..requests.len())
            .map(move |i| {
                let (read, object) = &requests[i];
                inner.read_reusing(owner, client_ref, conn, token_ref, read, object)
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
            logins.forget(&key, &token).await;
            let (fresh, _) = logins.token(&key, client, ctx.token).await?;
            for (i, (read, object)) in requests.iter().enumerate() {
                if matches!(results[i], Err(Error::Read { code: 403, .. })) {
                    results[i] = self
                        .inner
                        .read_reusing(owner, client, conn, &fresh, read, object)
                        .await;
                }
            }
        }
        // Per object, in plan order: the first failure fails the mount,
        // except NotFound on an optional object, which leaves it out.
        let mut out = Vec::with_capacity(self.objects.len());
        for (object, &idx) in self.objects.iter().zip(&self.index_of) {
            let response = match &results[idx] {
                Ok(v) => v,
                Err(e) if object.optional && e.kind() == ErrorKind::NotFound => {
                    out.push(Fetched::Absent);
                    continue;
                }
                #[expect(clippy::unwrap_used, reason = "this arm matched an Err at `idx`")]
                Err(_) => return Err(results.swap_remove(idx).unwrap_err().into()),
            };
            let extracted = if object.all_keys {
                extract::extract_keys(object, response).map(|keys| {
                    Fetched::Keys(
                        keys.into_iter()
                            .map(|(k, v)| (k, SecretBytes::new(v)))
                            .collect(),
                    )
                })
            } else {
                extract::extract(object, response).map(|v| Fetched::File(SecretBytes::new(v)))
            };
            let error = match extracted {
                Ok(fetched) => {
                    out.push(fetched);
                    continue;
                }
                Err(source) => Error::Extract {
                    object: object.name.clone(),
                    source,
                },
            };
            if object.optional && error.kind() == ErrorKind::NotFound {
                out.push(Fetched::Absent);
            } else {
                return Err(error.into());
            }
        }
        Ok(out)
    }
}

impl Inner {
    /// Reads, reusing a dynamic response of the same pod, identity and request.
    async fn read_reusing(
        &self,
        owner: &dynamic::Owner,
        client: &VaultHttp,
        conn: &Arc<Connection>,
        token: &VaultToken,
        read: &Read,
        object: &str,
    ) -> Result<Value, Error> {
        let key = ResponseKey {
            owner: owner.clone(),
            connection: conn.clone(),
            request: read.request.clone(),
        };
        if let Some(value) = self.responses.reusable(&key, object) {
            return Ok(value);
        }
        let value = self.read(client, conn, token, read, object).await?;
        self.responses.keep(&key, &value).await;
        Ok(value)
    }

    async fn read(
        &self,
        client: &VaultHttp,
        conn: &Connection,
        token: &VaultToken,
        read: &Read,
        object: &str,
    ) -> Result<Value, Error> {
        let request = &read.request;
        timed(
            &self.metrics,
            "vault",
            "read",
            client::send(client, token, read),
            error::outcome,
        )
        .await
        .map_err(|e| match e {
            ClientError::APIError { code, errors } => Error::Read {
                object: object.to_owned(),
                method: request.method.as_str(),
                path: request.path.clone(),
                address: conn.address.clone(),
                code,
                errors: error::join_errors(&errors),
            },
            other => {
                let (kind, reason) = error::classify(&other);
                Error::Request {
                    object: object.to_owned(),
                    method: request.method.as_str(),
                    path: request.path.clone(),
                    address: conn.address.clone(),
                    reason,
                    kind,
                }
            }
        })
    }
}

//! AWS Secrets Manager and SSM Parameter Store, as a drop-in for
//! aws/secrets-store-csi-driver-provider-aws: the same SecretProviderClass
//! parameters and files, fewer calls. Secrets Manager values come in
//! `BatchGetSecretValue` calls of up to 20 (one `GetSecretValue` only for
//! version pins), SSM in `GetParameters` calls of up to 10, the failover
//! region only when the primary fails with a retryable error, and the
//! pod's credentials from a cache shared by concurrent mounts.

pub mod identity;
pub mod jmes;
pub mod params;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use futures_util::future::join_all;
use tokio::sync::{OnceCell, Semaphore};

use self::identity::{CredentialKey, Identity, KubeSettings};
use self::params::{AddressType, Kind, Spc};
use super::{Backend, BackendError, Dialect, ErrorKind, Fetch, FetchContext, Plan, PlannedFile};
use crate::metrics::Metrics;
use crate::mount::request::{self, Parameters};
use crate::secret::{SecretBytes, Token};

/// Secrets Manager's limit of secret IDs in one `BatchGetSecretValue`.
pub const SM_BATCH: usize = 20;
/// SSM's limit of names in one `GetParameters`.
pub const SSM_BATCH: usize = 10;
/// AWS calls in flight for one mount and region.
const CONCURRENCY: usize = 8;

/// AWS backend errors. None carries a secret value or a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SecretProviderClass is wrong (the aws provider's message).
    #[error("{message}")]
    Spc { message: String },
    #[error("pod identity")]
    Identity(#[source] request::Error),
    /// Something outside coffer must change first (role, region, API access).
    #[error("{message}")]
    Precondition { message: String },
    #[error("{what}: {reason}")]
    Kube {
        what: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("no credentials from {how}{}: {reason}", if .at.is_empty() { String::new() } else { format!(" ({})", .at) })]
    Credentials {
        how: &'static str,
        at: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("{0}")]
    Aws(Box<AwsError>),
    #[error("{what} {object:?}: {source}")]
    Jmes {
        what: &'static str,
        object: String,
        #[source]
        source: jmes::JmesError,
    },
    #[error("{primary}; then from the failover region: {failover}")]
    Failover {
        primary: Box<Error>,
        failover: Box<Error>,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Objects(Vec<Error>),
}

/// One AWS call's failure for one object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} {object:?} in {region}: {operation}: {code}: {message}")]
pub struct AwsError {
    pub what: &'static str,
    pub object: String,
    pub region: String,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub kind: ErrorKind,
    pub retryable: bool,
}

fn aws(e: AwsError) -> Error {
    Error::Aws(Box::new(e))
}

impl Error {
    /// Worth asking the failover region: the primary could not answer.
    fn retryable(&self) -> bool {
        match self {
            Error::Aws(e) => e.retryable,
            Error::Credentials { kind, .. } | Error::Kube { kind, .. } => {
                matches!(kind, ErrorKind::Unavailable | ErrorKind::DeadlineExceeded)
            }
            _ => false,
        }
    }
}

impl BackendError for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Spc { .. } => ErrorKind::InvalidArgument,
            Error::Identity(e) if e.is_precondition() => ErrorKind::FailedPrecondition,
            Error::Identity(_) => ErrorKind::InvalidArgument,
            Error::Precondition { .. } => ErrorKind::FailedPrecondition,
            Error::Kube { kind, .. } | Error::Credentials { kind, .. } => *kind,
            Error::Aws(e) => e.kind,
            Error::Jmes { source, .. } => match source {
                jmes::JmesError::NoMatch { .. } => ErrorKind::NotFound,
                _ => ErrorKind::InvalidArgument,
            },
            Error::Failover { failover, .. } => failover.kind(),
            Error::Objects(all) => all.first().map_or(ErrorKind::Internal, |e| e.kind()),
        }
    }
}

/// Settings of the backend as a whole (from `coffer serve` flags).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub defaults: params::Defaults,
    /// `--aws-endpoint-url`: every service, every region.
    pub endpoint_url: Option<String>,
    /// `--aws-region-endpoint REGION=URL`: every service in one region.
    pub region_endpoints: Vec<(String, String)>,
    /// `--aws-pod-identity-endpoint`: the agent's URL instead of the link-local ones.
    pub pod_identity_endpoint: Option<String>,
    pub pod_identity_timeout: Duration,
    pub kube: KubeSettings,
}

/// The AWS backend.
pub struct AwsBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    metrics: Arc<Metrics>,
    identity: Identity,
    /// Shared SDK settings and HTTP client, loaded on first use.
    base: OnceCell<SdkConfig>,
}

impl AwsBackend {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        let identity = Identity::new(
            config.kube.clone(),
            metrics.clone(),
            config.pod_identity_timeout,
        );
        Self {
            inner: Arc::new(Inner {
                config,
                metrics,
                identity,
                base: OnceCell::new(),
            }),
        }
    }
}

impl Backend for AwsBackend {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn plan(&self, params: &Parameters, _dialect: Dialect) -> Result<Plan, super::Error> {
        let spc = params::parse(params, &self.inner.config.defaults)?;
        let mut files = Vec::new();
        for o in &spc.objects {
            files.push(PlannedFile {
                object: o.file.clone(),
                path: o.file.clone(),
                mode: o.mode,
                config: o.config(&spc),
                template_only: o.template_only,
            });
            for j in &o.jmes {
                if let Err(source) = jmes::validate(&j.path) {
                    return Err(Error::Jmes {
                        what: what(o.kind),
                        object: o.name.clone(),
                        source,
                    }
                    .into());
                }
                files.push(PlannedFile {
                    object: j.file.clone(),
                    path: j.file.clone(),
                    mode: j.mode,
                    config: o.jmes_config(&spc, j),
                    template_only: false,
                });
            }
        }
        Ok(Plan {
            backend: "aws",
            files,
            warnings: spc.warnings.clone(),
            fetch: Box::new(AwsFetch {
                inner: self.inner.clone(),
                spc: Arc::new(spc),
            }),
        })
    }
}

fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::SecretsManager => "secret",
        Kind::SsmParameter => "parameter",
    }
}

struct AwsFetch {
    inner: Arc<Inner>,
    spc: Arc<Spc>,
}

/// How the pod gets credentials.
enum Auth<'a> {
    Irsa { role: String, token: &'a Token },
    PodIdentity { urls: Vec<String>, token: &'a Token },
}

type Fetched = Vec<Option<Result<Vec<u8>, Error>>>;

#[async_trait]
impl Fetch for AwsFetch {
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    async fn fetch(&self, ctx: &FetchContext<'_>) -> Result<Vec<SecretBytes>, super::Error> {
        let spc = &*self.spc;
        let region = match &spc.region {
            Some(r) => r.clone(),
            None => {
                let r = self.inner.identity.node_region().await?;
                spc.check_regions(&r)?;
                r
            }
        };
        let auth = self.inner.auth(spc, ctx).await?;
        let all: Vec<usize> = (0..spc.objects.len()).collect();

        let mut values: Fetched = (0..spc.objects.len()).map(|_| None).collect();
        let mut primary = self
            .inner
            .fetch_region(spc, &all, &region, false, &auth, ctx)
            .await;
        // Cached credentials AWS no longer accepts (revoked session, clock
        // skew): forget them and ask once more for what they failed.
        if let Ok(got) = &mut primary {
            let refused: Vec<usize> = got
                .iter()
                .filter(|(_, r)| matches!(r, Err(e) if e.kind() == ErrorKind::Unauthenticated))
                .map(|(i, _)| *i)
                .collect();
            if !refused.is_empty() {
                self.inner.forget(&auth, ctx, &region).await;
                if let Ok(again) = self
                    .inner
                    .fetch_region(spc, &refused, &region, false, &auth, ctx)
                    .await
                {
                    got.retain(|(i, _)| !refused.contains(i));
                    got.extend(again);
                }
            }
        }
        match primary {
            Ok(got) => {
                for (i, r) in got {
                    values[i] = Some(r);
                }
            }
            Err(e) => {
                if !(e.retryable() && spc.failover_region.is_some()) {
                    return Err(e.into());
                }
                tracing::warn!(region = %region, error = %e, "no credentials in the primary region; trying the failover region");
                let message = e.to_string();
                for v in values.iter_mut() {
                    *v = Some(Err(Error::Credentials {
                        how: "the primary region",
                        at: region.clone(),
                        reason: message.clone(),
                        kind: e.kind(),
                    }));
                }
            }
        }

        if let Some(failover) = &spc.failover_region {
            let retry: Vec<usize> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| matches!(v, Some(Err(e)) if e.retryable()))
                .map(|(i, _)| i)
                .collect();
            if !retry.is_empty() {
                tracing::info!(
                    region = %region,
                    failover = %failover,
                    objects = retry.len(),
                    "primary region failed with a retryable error; asking the failover region"
                );
                let got = self
                    .inner
                    .fetch_region(spc, &retry, failover, true, &auth, ctx)
                    .await;
                match got {
                    Ok(got) => {
                        for (i, r) in got {
                            let primary = values[i].take();
                            values[i] = Some(match (r, primary) {
                                (Ok(v), _) => Ok(v),
                                (Err(f), Some(Err(p))) => Err(Error::Failover {
                                    primary: Box::new(p),
                                    failover: Box::new(f),
                                }),
                                (Err(f), _) => Err(f),
                            });
                        }
                    }
                    Err(f) => {
                        let (reason, kind) = (f.to_string(), f.kind());
                        for i in retry {
                            let failover_error = Error::Credentials {
                                how: "the failover region",
                                at: failover.clone(),
                                reason: reason.clone(),
                                kind,
                            };
                            values[i] = Some(Err(match values[i].take() {
                                Some(Err(p)) => Error::Failover {
                                    primary: Box::new(p),
                                    failover: Box::new(failover_error),
                                },
                                _ => failover_error,
                            }));
                        }
                    }
                }
            }
        }

        // Files in plan order: each object, then its jmesPath files.
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (o, v) in spc.objects.iter().zip(values) {
            let bytes = match v {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    errors.push(e);
                    continue;
                }
                None => {
                    errors.push(aws(AwsError {
                        what: what(o.kind),
                        object: o.name.clone(),
                        region: region.clone(),
                        operation: "fetch",
                        code: "NoResult".into(),
                        message: "no value was fetched".into(),
                        kind: ErrorKind::Internal,
                        retryable: false,
                    }));
                    continue;
                }
            };
            if o.jmes.is_empty() {
                out.push(SecretBytes::new(bytes));
                continue;
            }
            let json = match jmes::parse(&o.name, &bytes) {
                Ok(j) => j,
                Err(source) => {
                    errors.push(Error::Jmes {
                        what: what(o.kind),
                        object: o.name.clone(),
                        source,
                    });
                    continue;
                }
            };
            out.push(SecretBytes::new(bytes));
            for j in &o.jmes {
                match jmes::extract(&json, &j.path, &j.alias) {
                    Ok(b) => out.push(SecretBytes::new(b)),
                    Err(source) => errors.push(Error::Jmes {
                        what: what(o.kind),
                        object: o.name.clone(),
                        source,
                    }),
                }
            }
        }
        match errors.len() {
            0 => Ok(out),
            1 => Err(errors.remove(0).into()),
            _ => Err(Error::Objects(errors).into()),
        }
    }
}

impl Inner {
    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .no_credentials()
                    .region(Region::from_static("us-east-1"));
                if let Ok(app) =
                    aws_config::AppName::new(format!("coffer-{}", env!("CARGO_PKG_VERSION")))
                {
                    loader = loader.app_name(app);
                }
                loader.load().await
            })
            .await
    }

    /// The endpoint for `service` in `region`: `--aws-region-endpoint`, else
    /// the SDK's `AWS_ENDPOINT_URL_<SERVICE>`, else `--aws-endpoint-url`,
    /// else AWS's own (`None`).
    fn endpoint(&self, service_env: &str, region: &str) -> Option<String> {
        self.config
            .region_endpoints
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, u)| u.clone())
            .or_else(|| std::env::var(service_env).ok().filter(|u| !u.is_empty()))
            .or_else(|| self.config.endpoint_url.clone())
    }

    async fn auth<'a>(&self, spc: &Spc, ctx: &FetchContext<'a>) -> Result<Auth<'a>, Error> {
        if spc.pod_identity {
            let (token, _) = ctx
                .tokens
                .for_audience(identity::POD_IDENTITY_AUDIENCE)
                .map_err(Error::Identity)?;
            let urls = match &self.config.pod_identity_endpoint {
                Some(url) => vec![url.clone()],
                None => match spc.address {
                    AddressType::Ipv4 => vec![identity::POD_IDENTITY_IPV4.to_owned()],
                    AddressType::Ipv6 => vec![identity::POD_IDENTITY_IPV6.to_owned()],
                    AddressType::Auto => vec![
                        identity::POD_IDENTITY_IPV4.to_owned(),
                        identity::POD_IDENTITY_IPV6.to_owned(),
                    ],
                },
            };
            return Ok(Auth::PodIdentity { urls, token });
        }
        let (token, _) = ctx
            .tokens
            .for_audience(identity::IRSA_AUDIENCE)
            .map_err(Error::Identity)?;
        let role = match &spc.role_arn {
            Some(r) => r.clone(),
            None => {
                let sa = ctx.pod.service_account.as_deref().ok_or_else(|| Error::Precondition {
                    message: "the mount request names no service account (csi.storage.k8s.io/serviceAccount.name); set roleArn in the SecretProviderClass".into(),
                })?;
                self.identity
                    .service_account_role(&ctx.pod.namespace, sa)
                    .await?
            }
        };
        Ok(Auth::Irsa { role, token })
    }

    async fn forget(&self, auth: &Auth<'_>, ctx: &FetchContext<'_>, region: &str) {
        self.identity
            .forget(&credential_key(auth, ctx, region))
            .await;
    }

    async fn credentials(
        &self,
        auth: &Auth<'_>,
        ctx: &FetchContext<'_>,
        region: &str,
    ) -> Result<Credentials, Error> {
        let key = credential_key(auth, ctx, region);
        match auth {
            Auth::PodIdentity { urls, token } => {
                self.identity
                    .cached(key, || self.identity.pod_identity(urls, token))
                    .await
            }
            Auth::Irsa { role, token } => {
                self.identity
                    .cached(key, || self.assume_role(role, token, ctx, region))
                    .await
            }
        }
    }

    async fn assume_role(
        &self,
        role: &str,
        token: &Token,
        ctx: &FetchContext<'_>,
        region: &str,
    ) -> Result<Credentials, Error> {
        let mut b = aws_sdk_sts::config::Builder::from(self.base().await)
            .region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint("AWS_ENDPOINT_URL_STS", region) {
            b = b.endpoint_url(url);
        }
        let sts = aws_sdk_sts::Client::from_conf(b.build());
        let started = Instant::now();
        let result = sts
            .assume_role_with_web_identity()
            .role_arn(role)
            .role_session_name(identity::session_name(&ctx.pod.namespace, &ctx.pod.name))
            .web_identity_token(token.expose())
            .send()
            .await;
        let failure = result.as_ref().err().map(classify);
        self.metrics.backend_request(
            "aws",
            "sts.AssumeRoleWithWebIdentity",
            outcome(failure.as_ref()),
            started.elapsed(),
        );
        let out = match result {
            Ok(out) => out,
            Err(_) => {
                let f = failure.unwrap_or_default();
                let kind = match f.code.as_str() {
                    "InvalidIdentityToken" | "ExpiredTokenException" => ErrorKind::Unauthenticated,
                    "AccessDenied" | "AccessDeniedException" => ErrorKind::PermissionDenied,
                    "IDPCommunicationError" | "IDPRejectedClaim" => ErrorKind::Unavailable,
                    _ => f.kind,
                };
                return Err(Error::Credentials {
                    how: "STS AssumeRoleWithWebIdentity",
                    at: format!("role {role}, region {region}"),
                    reason: format!("{}: {}", f.code, f.message),
                    kind,
                });
            }
        };
        let c = out.credentials.ok_or_else(|| Error::Credentials {
            how: "STS AssumeRoleWithWebIdentity",
            at: format!("role {role}, region {region}"),
            reason: "the answer has no credentials".into(),
            kind: ErrorKind::Internal,
        })?;
        let expiry = std::time::SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expiry,
            "coffer-irsa",
        ))
    }

    /// Fetches the objects `indices` from `region`. `Err` only when no
    /// credentials could be had there; per-object failures are in the list.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    async fn fetch_region(
        &self,
        spc: &Spc,
        indices: &[usize],
        region: &str,
        failover: bool,
        auth: &Auth<'_>,
        ctx: &FetchContext<'_>,
    ) -> Result<Vec<(usize, Result<Vec<u8>, Error>)>, Error> {
        let creds = self.credentials(auth, ctx, region).await?;
        let base = self.base().await;
        let limit = Semaphore::new(CONCURRENCY);
        let sm: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| spc.objects[i].kind == Kind::SecretsManager)
            .collect();
        let ssm: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| spc.objects[i].kind == Kind::SsmParameter)
            .collect();
        let sm_fut = async {
            if sm.is_empty() {
                return Vec::new();
            }
            let mut b = aws_sdk_secretsmanager::config::Builder::from(base)
                .region(Region::new(region.to_owned()))
                .credentials_provider(creds.clone());
            if let Some(url) = self.endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER", region) {
                b = b.endpoint_url(url);
            }
            let client = aws_sdk_secretsmanager::Client::from_conf(b.build());
            self.secrets_manager(&client, spc, &sm, region, failover, &limit)
                .await
        };
        let ssm_fut = async {
            if ssm.is_empty() {
                return Vec::new();
            }
            let mut b = aws_sdk_ssm::config::Builder::from(base)
                .region(Region::new(region.to_owned()))
                .credentials_provider(creds.clone());
            if let Some(url) = self.endpoint("AWS_ENDPOINT_URL_SSM", region) {
                b = b.endpoint_url(url);
            }
            let client = aws_sdk_ssm::Client::from_conf(b.build());
            self.parameters(&client, spc, &ssm, region, failover, &limit)
                .await
        };
        let (mut a, b) = tokio::join!(sm_fut, ssm_fut);
        a.extend(b);
        Ok(a)
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    async fn secrets_manager(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        spc: &Spc,
        indices: &[usize],
        region: &str,
        failover: bool,
        limit: &Semaphore,
    ) -> Vec<(usize, Result<Vec<u8>, Error>)> {
        // Pinned versions need GetSecretValue; the rest share batches.
        let mut pinned = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        for &i in indices {
            let (name, version, label) = spc.objects[i].request(failover);
            if version.is_some() || label.is_some() {
                pinned.push(i);
            } else if !ids.iter().any(|id| id == name) {
                ids.push(name.to_owned());
            }
        }
        let batches = join_all(ids.chunks(SM_BATCH).map(|chunk| async move {
            let _permit = limit.acquire().await;
            self.batch_get(client, chunk, region, limit).await
        }));
        let singles = join_all(pinned.iter().map(|&i| async move {
            let _permit = limit.acquire().await;
            let (name, version, label) = spc.objects[i].request(failover);
            (
                i,
                self.get_secret(client, name, version, label, region).await,
            )
        }));
        let (batches, singles) = tokio::join!(batches, singles);
        let by_id: HashMap<String, Result<Vec<u8>, Error>> =
            batches.into_iter().flatten().collect();
        let mut out = singles;
        for &i in indices {
            let (name, version, label) = spc.objects[i].request(failover);
            if version.is_some() || label.is_some() {
                continue;
            }
            // The first object of an ID takes the result; others get a copy.
            let result = match by_id.get(name) {
                Some(r) => copy(r),
                None => Err(missing(Kind::SecretsManager, name, region)),
            };
            out.push((i, result));
        }
        out
    }

    /// One `BatchGetSecretValue` for up to 20 IDs; IDs it cannot answer
    /// (or a batch refused as a whole with AccessDenied, e.g. an IAM policy
    /// written for the aws provider's GetSecretValue) are fetched one by one.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    async fn batch_get(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        ids: &[String],
        region: &str,
        _limit: &Semaphore,
    ) -> Vec<(String, Result<Vec<u8>, Error>)> {
        let mut out: Vec<(String, Result<Vec<u8>, Error>)> = Vec::new();
        let mut answered: Vec<bool> = vec![false; ids.len()];
        let mut next: Option<String> = None;
        for _page in 0..10 {
            let started = Instant::now();
            let result = client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.to_vec()))
                .set_next_token(next.take())
                .send()
                .await;
            let failure = result.as_ref().err().map(classify);
            self.metrics.backend_request(
                "aws",
                "secretsmanager.BatchGetSecretValue",
                outcome(failure.as_ref()),
                started.elapsed(),
            );
            let page = match result {
                Ok(p) => p,
                Err(_) => {
                    let f = failure.unwrap_or_default();
                    if f.kind == ErrorKind::PermissionDenied {
                        tracing::debug!(
                            region,
                            code = %f.code,
                            "BatchGetSecretValue refused; falling back to GetSecretValue per secret (grant secretsmanager:BatchGetSecretValue to save calls)"
                        );
                        break;
                    }
                    for (k, id) in ids.iter().enumerate() {
                        if !answered[k] {
                            answered[k] = true;
                            out.push((
                                id.clone(),
                                Err(f.error(
                                    Kind::SecretsManager,
                                    id,
                                    region,
                                    "BatchGetSecretValue",
                                )),
                            ));
                        }
                    }
                    break;
                }
            };
            for entry in page.secret_values() {
                let Some(k) = ids.iter().enumerate().position(|(k, id)| {
                    !answered[k] && secret_matches(id, entry.name(), entry.arn())
                }) else {
                    continue;
                };
                answered[k] = true;
                out.push((
                    ids[k].clone(),
                    secret_value(
                        entry.secret_string(),
                        entry.secret_binary().map(|b| b.as_ref()),
                        &ids[k],
                        region,
                    ),
                ));
            }
            for e in page.errors() {
                let Some(k) = ids.iter().enumerate().position(|(k, id)| {
                    !answered[k]
                        && e.secret_id()
                            .is_some_and(|s| secret_matches(id, Some(s), Some(s)))
                }) else {
                    continue;
                };
                answered[k] = true;
                let code = e.error_code().unwrap_or("Unknown").to_owned();
                let (kind, retryable) = code_kind(&code, None);
                out.push((
                    ids[k].clone(),
                    Err(aws(AwsError {
                        what: "secret",
                        object: ids[k].clone(),
                        region: region.to_owned(),
                        operation: "BatchGetSecretValue",
                        message: e.message().unwrap_or("no message").to_owned(),
                        code,
                        kind,
                        retryable,
                    })),
                ));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() && answered.iter().any(|a| !a) => {
                    next = Some(t.to_owned())
                }
                _ => break,
            }
        }
        // Whatever the batch did not answer: one by one.
        let rest: Vec<&String> = ids
            .iter()
            .zip(&answered)
            .filter(|(_, a)| !**a)
            .map(|(id, _)| id)
            .collect();
        let singles = join_all(rest.into_iter().map(|id| async move {
            (
                id.clone(),
                self.get_secret(client, id, None, None, region).await,
            )
        }))
        .await;
        out.extend(singles);
        out
    }

    async fn get_secret(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        id: &str,
        version: Option<&str>,
        label: Option<&str>,
        region: &str,
    ) -> Result<Vec<u8>, Error> {
        let started = Instant::now();
        let result = client
            .get_secret_value()
            .secret_id(id)
            .set_version_id(version.map(str::to_owned))
            .set_version_stage(label.map(str::to_owned))
            .send()
            .await;
        let failure = result.as_ref().err().map(classify);
        self.metrics.backend_request(
            "aws",
            "secretsmanager.GetSecretValue",
            outcome(failure.as_ref()),
            started.elapsed(),
        );
        match result {
            Ok(v) => secret_value(
                v.secret_string(),
                v.secret_binary().map(|b| b.as_ref()),
                id,
                region,
            ),
            Err(_) => Err(failure.unwrap_or_default().error(
                Kind::SecretsManager,
                id,
                region,
                "GetSecretValue",
            )),
        }
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    async fn parameters(
        &self,
        client: &aws_sdk_ssm::Client,
        spc: &Spc,
        indices: &[usize],
        region: &str,
        failover: bool,
        limit: &Semaphore,
    ) -> Vec<(usize, Result<Vec<u8>, Error>)> {
        let mut requests: Vec<String> = Vec::new();
        let mut of_object = Vec::with_capacity(indices.len());
        for &i in indices {
            let (name, version, label) = spc.objects[i].request(failover);
            let r = ssm_request(name, version, label);
            if !requests.contains(&r) {
                requests.push(r.clone());
            }
            of_object.push((i, r));
        }
        let batches = ssm_batches(&requests);
        let results = join_all(batches.iter().map(|batch| async move {
            let _permit = limit.acquire().await;
            self.get_parameters(client, batch, region).await
        }))
        .await;
        let by_request: HashMap<String, Result<Vec<u8>, Error>> =
            results.into_iter().flatten().collect();
        of_object
            .into_iter()
            .map(|(i, r)| {
                let result = match by_request.get(&r) {
                    Some(r) => copy(r),
                    None => Err(missing(Kind::SsmParameter, &r, region)),
                };
                (i, result)
            })
            .collect()
    }

    async fn get_parameters(
        &self,
        client: &aws_sdk_ssm::Client,
        batch: &[String],
        region: &str,
    ) -> Vec<(String, Result<Vec<u8>, Error>)> {
        let started = Instant::now();
        let result = client
            .get_parameters()
            .set_names(Some(batch.to_vec()))
            .with_decryption(true)
            .send()
            .await;
        let failure = result.as_ref().err().map(classify);
        self.metrics.backend_request(
            "aws",
            "ssm.GetParameters",
            outcome(failure.as_ref()),
            started.elapsed(),
        );
        let out = match result {
            Ok(out) => out,
            Err(_) => {
                let f = failure.unwrap_or_default();
                return batch
                    .iter()
                    .map(|r| {
                        (
                            r.clone(),
                            Err(f.error(Kind::SsmParameter, r, region, "GetParameters")),
                        )
                    })
                    .collect();
            }
        };
        batch
            .iter()
            .map(|r| {
                let base = ssm_base(r);
                let name = ssm_name(base);
                let found = out.parameters().iter().find(|p| {
                    p.name() == Some(name.as_str())
                        || p.name() == Some(base)
                        || p.arn() == Some(base)
                });
                let result = match found {
                    Some(p) => match p.value() {
                        Some(v) => Ok(v.as_bytes().to_vec()),
                        None => Err(aws(AwsError {
                            what: "parameter",
                            object: r.clone(),
                            region: region.to_owned(),
                            operation: "GetParameters",
                            code: "NoValue".into(),
                            message: "the parameter has no value".into(),
                            kind: ErrorKind::Internal,
                            retryable: false,
                        })),
                    },
                    None if out.invalid_parameters().iter().any(|i| i == r) => Err(aws(AwsError {
                        what: "parameter",
                        object: r.clone(),
                        region: region.to_owned(),
                        operation: "GetParameters",
                        code: "ParameterNotFound".into(),
                        message: "listed in InvalidParameters: no such parameter, version or label (or no permission to see it)".into(),
                        kind: ErrorKind::NotFound,
                        retryable: false,
                    })),
                    None => Err(missing(Kind::SsmParameter, r, region)),
                };
                (r.clone(), result)
            })
            .collect()
    }
}

/// The cache key of the pod's credentials: per role (or agent), pod and
/// region for IRSA; agent credentials are not regional.
fn credential_key(auth: &Auth<'_>, ctx: &FetchContext<'_>, region: &str) -> CredentialKey {
    match auth {
        Auth::PodIdentity { urls, token } => CredentialKey {
            principal: urls.join(" "),
            pod_uid: ctx.pod.uid.clone(),
            region: String::new(),
            token: token.digest(),
        },
        Auth::Irsa { role, token } => CredentialKey {
            principal: role.clone(),
            pod_uid: ctx.pod.uid.clone(),
            region: region.to_owned(),
            token: token.digest(),
        },
    }
}

/// One request's result for each object that asked for it.
fn copy(r: &Result<Vec<u8>, Error>) -> Result<Vec<u8>, Error> {
    match r {
        Ok(v) => Ok(v.clone()),
        Err(Error::Aws(e)) => Err(Error::Aws(e.clone())),
        Err(other) => Err(Error::Precondition {
            message: other.to_string(),
        }),
    }
}

fn missing(kind: Kind, name: &str, region: &str) -> Error {
    aws(AwsError {
        what: what(kind),
        object: name.to_owned(),
        region: region.to_owned(),
        operation: match kind {
            Kind::SecretsManager => "BatchGetSecretValue",
            Kind::SsmParameter => "GetParameters",
        },
        code: "NoResult".into(),
        message: "the answer has neither a value nor an error for it".into(),
        kind: ErrorKind::Internal,
        retryable: false,
    })
}

fn secret_value(
    string: Option<&str>,
    binary: Option<&[u8]>,
    id: &str,
    region: &str,
) -> Result<Vec<u8>, Error> {
    match (string, binary) {
        (Some(s), _) => Ok(s.as_bytes().to_vec()),
        (None, Some(b)) => Ok(b.to_vec()),
        (None, None) => Err(aws(AwsError {
            what: "secret",
            object: id.to_owned(),
            region: region.to_owned(),
            operation: "GetSecretValue",
            code: "NoValue".into(),
            message: "the secret version has neither SecretString nor SecretBinary".into(),
            kind: ErrorKind::Internal,
            retryable: false,
        })),
    }
}

/// Whether a returned secret (name, ARN) is the one asked for by `id`: a
/// name, a full ARN, or a partial ARN (without the 6-character suffix).
pub fn secret_matches(id: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    if name == Some(id) || arn == Some(id) {
        return true;
    }
    match arn {
        Some(arn) if id.starts_with("arn:") => arn
            .strip_prefix(id)
            .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-')),
        _ => false,
    }
}

/// `name`, `name:version` or `name:label`, as GetParameters takes them.
pub fn ssm_request(name: &str, version: Option<&str>, label: Option<&str>) -> String {
    match (version, label) {
        (Some(v), _) => format!("{name}:{v}"),
        (None, Some(l)) => format!("{name}:{l}"),
        (None, None) => name.to_owned(),
    }
}

/// The parameter of a request, without its `:version` / `:label` selector.
pub fn ssm_base(request: &str) -> &str {
    if request.starts_with("arn:") {
        // arn:partition:ssm:region:account:parameter/name[:selector]
        let mut colons = request.match_indices(':').map(|(i, _)| i).skip(5);
        return match colons.next() {
            Some(i) => &request[..i],
            None => request,
        };
    }
    match request.rfind(':') {
        Some(i) => &request[..i],
        None => request,
    }
}

/// The parameter's name: itself, or from an ARN (`parameter/a/b` → `/a/b`, `parameter/a` → `a`).
pub fn ssm_name(base: &str) -> String {
    match params::Arn::parse(base) {
        Some(arn) => {
            let rest = arn
                .resource
                .strip_prefix("parameter")
                .unwrap_or(arn.resource);
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            if rest.contains('/') {
                format!("/{rest}")
            } else {
                rest.to_owned()
            }
        }
        None => base.to_owned(),
    }
}

/// Batches of at most 10 requests in which no parameter appears twice, so
/// every answer maps back to exactly one request (two versions of one
/// parameter in one call cannot be told apart when AWS leaves out the selector).
#[expect(
    clippy::indexing_slicing,
    reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
)]
pub fn ssm_batches(requests: &[String]) -> Vec<Vec<String>> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    for r in requests {
        let name = ssm_name(ssm_base(r));
        let slot = batches
            .iter()
            .position(|b| b.len() < SSM_BATCH && !b.iter().any(|x| ssm_name(ssm_base(x)) == name));
        match slot {
            Some(k) => batches[k].push(r.clone()),
            None => batches.push(vec![r.clone()]),
        }
    }
    batches
}

/// What a failed AWS call said.
#[derive(Debug, Clone)]
struct Failure {
    code: String,
    message: String,
    kind: ErrorKind,
    retryable: bool,
    /// "refused" (the service answered no) or "error".
    outcome: &'static str,
}

impl Default for Failure {
    fn default() -> Self {
        Self {
            code: "Unknown".into(),
            message: "no message".into(),
            kind: ErrorKind::Internal,
            retryable: false,
            outcome: "error",
        }
    }
}

impl Failure {
    fn error(&self, kind: Kind, object: &str, region: &str, operation: &'static str) -> Error {
        aws(AwsError {
            what: what(kind),
            object: object.to_owned(),
            region: region.to_owned(),
            operation,
            code: self.code.clone(),
            message: self.message.clone(),
            kind: self.kind,
            retryable: self.retryable,
        })
    }
}

fn outcome(failure: Option<&Failure>) -> &'static str {
    failure.map_or("ok", |f| f.outcome)
}

/// gRPC kind and retryability of an AWS error code (and HTTP status).
pub fn code_kind(code: &str, status: Option<u16>) -> (ErrorKind, bool) {
    match code {
        "AccessDeniedException" | "AccessDenied" | "KMSAccessDeniedException" => {
            (ErrorKind::PermissionDenied, false)
        }
        // Secrets Manager cannot decrypt with the secret's KMS key: almost
        // always a missing kms:Decrypt grant for the caller.
        "DecryptionFailure" | "KMSDisabledException" | "KMSInvalidStateException" => {
            (ErrorKind::PermissionDenied, false)
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "SignatureDoesNotMatch" => (ErrorKind::Unauthenticated, false),
        "ResourceNotFoundException"
        | "ParameterNotFound"
        | "ParameterVersionNotFound"
        | "InvalidParameters" => (ErrorKind::NotFound, false),
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ThrottledException" => (ErrorKind::Unavailable, true),
        "InternalServiceError"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => (ErrorKind::Unavailable, true),
        "InvalidRequestException" => (ErrorKind::FailedPrecondition, false),
        "InvalidParameterException"
        | "ValidationException"
        | "InvalidKeyId"
        | "InvalidNextTokenException" => (ErrorKind::InvalidArgument, false),
        _ => match status {
            Some(400) => (ErrorKind::InvalidArgument, false),
            Some(401) => (ErrorKind::Unauthenticated, false),
            Some(403) => (ErrorKind::PermissionDenied, false),
            Some(404) => (ErrorKind::NotFound, false),
            Some(429) => (ErrorKind::Unavailable, true),
            Some(s) if s >= 500 => (ErrorKind::Unavailable, true),
            _ => (ErrorKind::Internal, false),
        },
    }
}

fn classify<E>(e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let err = ctx.err();
            let code = err.code().unwrap_or("Unknown").to_owned();
            let (kind, retryable) = code_kind(&code, Some(status));
            Failure {
                message: err
                    .message()
                    .map(|m| m.chars().take(500).collect())
                    .unwrap_or_else(|| format!("HTTP {status}")),
                code,
                kind,
                retryable,
                outcome: if (400..500).contains(&status) && !retryable {
                    "refused"
                } else {
                    "error"
                },
            }
        }
        SdkError::TimeoutError(_) => Failure {
            code: "Timeout".into(),
            message: "no answer in time".into(),
            kind: ErrorKind::DeadlineExceeded,
            retryable: true,
            outcome: "error",
        },
        SdkError::DispatchFailure(d) => Failure {
            code: if d.is_timeout() {
                "Timeout".into()
            } else {
                "ConnectionFailed".into()
            },
            message: format!("cannot reach the endpoint ({})", identity::root_cause(e)),
            kind: if d.is_timeout() {
                ErrorKind::DeadlineExceeded
            } else {
                ErrorKind::Unavailable
            },
            retryable: true,
            outcome: "error",
        },
        SdkError::ResponseError(_) => Failure {
            code: "BadResponse".into(),
            message: format!("the answer cannot be read ({})", identity::root_cause(e)),
            kind: ErrorKind::Unavailable,
            retryable: true,
            outcome: "error",
        },
        _ => Failure {
            code: "RequestNotSent".into(),
            message: identity::root_cause(e),
            kind: ErrorKind::Internal,
            retryable: false,
            outcome: "error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_at_most_20_secrets_and_10_parameters() {
        let ids: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        let sizes: Vec<usize> = ids.chunks(SM_BATCH).map(<[String]>::len).collect();
        assert_eq!(sizes, [20, 5]);
        for (n, want) in [
            (1usize, vec![1usize]),
            (10, vec![10]),
            (11, vec![10, 1]),
            (25, vec![10, 10, 5]),
        ] {
            let reqs: Vec<String> = (0..n).map(|i| format!("/p/{i}")).collect();
            let got: Vec<usize> = ssm_batches(&reqs).iter().map(Vec::len).collect();
            assert_eq!(got, want, "{n}");
        }
    }

    #[test]
    fn one_parameter_appears_once_per_batch() {
        let reqs: Vec<String> = vec![
            "/p/a".into(),
            "/p/a:1".into(),
            "/p/a:old".into(),
            "arn:aws:ssm:us-west-2:1:parameter/p/a:2".into(),
            "/p/b".into(),
        ];
        let batches = ssm_batches(&reqs);
        assert_eq!(batches.len(), 4);
        for b in &batches {
            let mut names: Vec<String> = b.iter().map(|r| ssm_name(ssm_base(r))).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), b.len(), "{b:?}");
        }
    }

    #[test]
    fn ssm_requests_and_names() {
        assert_eq!(ssm_request("/a", Some("3"), None), "/a:3");
        assert_eq!(ssm_request("/a", None, Some("prod")), "/a:prod");
        assert_eq!(ssm_request("/a", None, None), "/a");
        assert_eq!(ssm_base("/a:3"), "/a");
        assert_eq!(ssm_base("/a"), "/a");
        let arn = "arn:aws:ssm:us-west-2:123456789012:parameter/app/key";
        assert_eq!(ssm_base(arn), arn);
        assert_eq!(ssm_base(&format!("{arn}:4")), arn);
        assert_eq!(ssm_name(arn), "/app/key");
        assert_eq!(
            ssm_name("arn:aws:ssm:us-west-2:123456789012:parameter/plain"),
            "plain"
        );
        assert_eq!(ssm_name("/x/y"), "/x/y");
    }

    #[test]
    fn returned_secrets_map_back_to_what_was_asked() {
        let arn = "arn:aws:secretsmanager:us-west-2:1:secret:db-AbCdEf";
        assert!(secret_matches("db", Some("db"), Some(arn)));
        assert!(secret_matches(arn, Some("db"), Some(arn)));
        assert!(secret_matches(
            "arn:aws:secretsmanager:us-west-2:1:secret:db",
            Some("db"),
            Some(arn)
        ));
        assert!(!secret_matches("d", Some("db"), Some(arn)));
        assert!(!secret_matches(
            "arn:aws:secretsmanager:us-west-2:1:secret:d",
            Some("db"),
            Some(arn)
        ));
    }

    #[test]
    fn error_codes_map_to_grpc_kinds() {
        let cases: &[(&str, Option<u16>, ErrorKind, bool)] = &[
            (
                "AccessDeniedException",
                Some(400),
                ErrorKind::PermissionDenied,
                false,
            ),
            (
                "ResourceNotFoundException",
                Some(400),
                ErrorKind::NotFound,
                false,
            ),
            ("ParameterNotFound", Some(400), ErrorKind::NotFound, false),
            (
                "DecryptionFailure",
                Some(400),
                ErrorKind::PermissionDenied,
                false,
            ),
            (
                "ThrottlingException",
                Some(400),
                ErrorKind::Unavailable,
                true,
            ),
            (
                "InternalServiceError",
                Some(500),
                ErrorKind::Unavailable,
                true,
            ),
            (
                "UnrecognizedClientException",
                Some(400),
                ErrorKind::Unauthenticated,
                false,
            ),
            (
                "InvalidRequestException",
                Some(400),
                ErrorKind::FailedPrecondition,
                false,
            ),
            ("Whatever", Some(503), ErrorKind::Unavailable, true),
            ("Whatever", Some(404), ErrorKind::NotFound, false),
            ("Whatever", None, ErrorKind::Internal, false),
        ];
        for (code, status, kind, retry) in cases {
            assert_eq!(code_kind(code, *status), (*kind, *retry), "{code}");
        }
    }
}

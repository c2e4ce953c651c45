//! AWS Secrets Manager and SSM Parameter Store, as a drop-in for
//! aws/secrets-store-csi-driver-provider-aws: the same SecretProviderClass
//! parameters and files, calls spent as the per-account quotas they are.
//! Secrets Manager: `GetSecretValue` per secret/version a pod has not read,
//! `DescribeSecret` per secret it has, the value held per pod and
//! credentials ([`secretsmanager`], [`held`]); SSM in `GetParameters`
//! calls of up to 10 ([`ssm`]); throttling and other transient failures
//! retried with jitter inside the mount's deadline ([`Inner::call`]); the
//! failover region only when the primary fails with a retryable error
//! ([`fetch`]); the pod's credentials from a cache shared by concurrent
//! mounts ([`identity`]).
//!
//! Files: [`args`] (flags), [`params`] (the aws dialect), [`fetch`],
//! [`secretsmanager`], [`held`], [`ssm`], [`identity`] (IRSA, Pod Identity,
//! the Kubernetes API), [`jmes`], [`error`].

pub mod args;
pub mod error;
pub mod fetch;
pub mod held;
pub mod identity;
pub mod jmes;
pub mod params;
pub mod secretsmanager;
pub mod ssm;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::OnceCell;

pub use self::args::Args;
pub use self::error::{AwsError, Error};
use self::error::{Failure, classify, what};
use self::fetch::AwsFetch;
use self::identity::{Identity, KubeSettings};
use super::support::{Retry, timed};
use super::{Backend, Plan, PlannedFile};
use crate::metrics::Metrics;
use crate::request::Parameters;

pub use self::ssm::SSM_BATCH;

/// Retries of a Secrets Manager or SSM call that was throttled or failed
/// in passing: 4 calls at most, full jitter from 100 ms doubling to 2 s,
/// none that would end within 1 s of the mount's deadline.
pub const RETRY: Retry = Retry {
    attempts: 4,
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
    margin: Duration::from_secs(1),
};

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
    /// `--aws-held-values`: Secrets Manager values held for republishes (0: none).
    pub held_values: usize,
    /// `--aws-held-bytes`: their bytes at most.
    pub held_bytes: usize,
}

/// The AWS backend.
pub struct AwsBackend {
    inner: Arc<Inner>,
}

/// A fetched secret or parameter value and its version as AWS names it
/// (a Secrets Manager VersionId, an SSM parameter's version number).
#[derive(Clone)]
pub(crate) struct Value {
    pub(crate) bytes: crate::secret::SecretBytes,
    pub(crate) version: Option<String>,
}

pub(crate) struct Inner {
    config: Config,
    metrics: Arc<Metrics>,
    identity: Identity,
    /// Shared SDK settings and HTTP client, loaded on first use.
    base: OnceCell<SdkConfig>,
    /// Secrets Manager values per pod and credentials.
    held: held::Store,
}

/// The backend, configured from its flags.
pub fn build(args: &Args, metrics: Arc<Metrics>) -> Arc<dyn Backend> {
    Arc::new(AwsBackend::new(args.config(), metrics))
}

impl AwsBackend {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        let identity = Identity::new(
            config.kube.clone(),
            metrics.clone(),
            config.pod_identity_timeout,
        );
        let held = held::Store::new(config.held_values, config.held_bytes);
        Self {
            inner: Arc::new(Inner {
                config,
                metrics,
                identity,
                base: OnceCell::new(),
                held,
            }),
        }
    }
}

impl Backend for AwsBackend {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn sockets(&self) -> &'static [&'static str] {
        &["aws"]
    }

    fn sweep(&self) -> usize {
        self.inner.identity.sweep()
    }

    fn plan(&self, params: &Parameters, socket: &str) -> Result<Plan, super::Error> {
        let spc = params::parse(params, &self.inner.config.defaults)?;
        let mut files = Vec::new();
        for o in &spc.objects {
            files.push(PlannedFile {
                path: o.file.clone(),
                mode: o.mode,
                config: o.config(&spc),
                template_only: o.template_only,
                all_keys: o.all_keys,
                optional: o.optional,
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
                    path: j.file.clone(),
                    mode: j.mode,
                    config: o.jmes_config(&spc, j),
                    optional: o.optional,
                    ..Default::default()
                });
            }
        }
        let audience = if spc.pod_identity {
            identity::POD_IDENTITY_AUDIENCE
        } else {
            identity::IRSA_AUDIENCE
        };
        Ok(Plan {
            files,
            audience: audience.to_owned(),
            warnings: spc.warnings.clone(),
            fetch: Box::new(AwsFetch {
                inner: self.inner.clone(),
                spc: Arc::new(spc),
                // The aws provider's object versions: the secret's VersionId,
                // the parameter's version number. Other sockets: the HMAC.
                provider_versions: socket == "aws",
            }),
        })
    }
}

impl Inner {
    pub(crate) async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                // The SDK's default HTTPS client: with this behavior version
                // it honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY
                // (docs/operations.md#proxies, tests/proxy.rs).
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

    /// One Secrets Manager or SSM call (`operation` as the metrics name
    /// it), each attempt timed and counted, retried under [`RETRY`] while
    /// it fails in a way worth repeating; the failure after the last one.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        deadline: Instant,
        mut send: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<
            Output = Result<T, SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>>,
        >,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let metrics = &*self.metrics;
        let (result, made) = RETRY
            .run(
                deadline,
                || timed(metrics, "aws", operation, send(), |e| classify(e).outcome),
                |e| classify(e).retryable,
            )
            .await;
        result.map_err(|e| classify(&e).after(made, operation))
    }

    /// The endpoint for `service` in `region`: `--aws-region-endpoint`, else
    /// the SDK's `AWS_ENDPOINT_URL_<SERVICE>`, else `--aws-endpoint-url`,
    /// else AWS's own (`None`).
    pub(crate) fn endpoint(&self, service_env: &str, region: &str) -> Option<String> {
        self.config
            .region_endpoints
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, u)| u.clone())
            .or_else(|| std::env::var(service_env).ok().filter(|u| !u.is_empty()))
            .or_else(|| self.config.endpoint_url.clone())
    }
}

//! Who the pod is to AWS, without minting a token: the ServiceAccount
//! tokens kubelet passes (CSIDriver `tokenRequests`) become AWS
//! credentials through STS `AssumeRoleWithWebIdentity` (IRSA, [`sts`]) or
//! the EKS Pod Identity agent ([`pod_identity`]). Credentials are cached
//! per (role, pod, region, token) until shortly before they expire, and
//! concurrent mounts share one call. The Kubernetes API ([`k8s`]) is read
//! only for what the SecretProviderClass does not say.

pub mod k8s;
pub mod pod_identity;
pub mod sts;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use tokio::sync::OnceCell;

pub use self::k8s::KubeSettings;
use super::Inner;
use super::error::Error;
use super::params::{AddressType, Spc};
use crate::backend::FetchContext;
use crate::backend::support::Cache;
use crate::metrics::Metrics;
use crate::secret::Token;

pub const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const POD_IDENTITY_IPV4: &str = "http://169.254.170.23/v1/credentials";
pub const POD_IDENTITY_IPV6: &str = "http://[fd00:ec2::23]/v1/credentials";

/// How long a ServiceAccount's role annotation is trusted.
const ANNOTATION_TTL: Duration = Duration::from_secs(30);
/// Credentials are renewed this long before they expire…
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// …and never kept longer than this.
const MAX_CACHE: Duration = Duration::from_secs(3600);
/// Bound of each cache; past it, idle entries are dropped.
const MAX_ENTRIES: usize = 4096;

/// Who asks, for the credential cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    /// The role ARN (IRSA) or the agent address (Pod Identity).
    pub principal: String,
    pub pod_uid: String,
    /// The STS region (IRSA); empty for Pod Identity.
    pub region: String,
    /// SHA-256 of the pod's token: cached credentials are reused only for
    /// the exact token AWS accepted (coffer cannot verify tokens itself).
    pub token: [u8; 32],
}

/// How the pod gets credentials.
pub enum Auth<'a> {
    Irsa { role: String, token: &'a Token },
    PodIdentity { urls: Vec<String>, token: &'a Token },
}

pub struct Identity {
    kube: KubeSettings,
    metrics: Arc<Metrics>,
    kube_client: OnceCell<Result<::kube::Client, String>>,
    roles: Cache<(String, String), Option<String>>,
    regions: Cache<String, String>,
    credentials: Cache<CredentialKey, Credentials>,
    agent_timeout: Duration,
    /// Built on first use (`coffer check` builds backends and never calls out).
    agent: std::sync::OnceLock<Result<crate::backend::http::client::Client, String>>,
}

impl Identity {
    pub fn new(kube: KubeSettings, metrics: Arc<Metrics>, agent_timeout: Duration) -> Self {
        Self {
            kube,
            metrics,
            kube_client: OnceCell::new(),
            roles: Cache::new(MAX_ENTRIES),
            regions: Cache::new(MAX_ENTRIES),
            credentials: Cache::new(MAX_ENTRIES),
            agent_timeout,
            agent: std::sync::OnceLock::new(),
        }
    }

    /// Drops credentials, roles and regions past their time (see
    /// [`Cache::sweep`]).
    pub fn sweep(&self) -> usize {
        self.credentials.sweep() + self.roles.sweep() + self.regions.sweep()
    }

    /// Credentials from `fetch`, cached under `key`; one call for all
    /// concurrent callers.
    pub async fn cached<F, Fut>(&self, key: CredentialKey, fetch: F) -> Result<Credentials, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Credentials, Error>>,
    {
        let (creds, hit) = self
            .credentials
            .get_or_fill(&key, || async {
                let creds = fetch().await?;
                let keep = cache_for(creds.expiry());
                Ok((creds, keep))
            })
            .await?;
        self.metrics
            .credential_cache("aws", if hit { "hit" } else { "miss" });
        Ok(creds)
    }

    /// Drops cached credentials (after AWS refused them).
    pub async fn forget(&self, key: &CredentialKey) {
        self.credentials.forget_if(key, |_| true).await;
    }
}

impl Inner {
    /// How this pod gets credentials for this class.
    pub(super) async fn auth<'a>(
        &self,
        spc: &Spc,
        ctx: &FetchContext<'a>,
    ) -> Result<Auth<'a>, Error> {
        let token = ctx.token;
        if spc.pod_identity {
            let urls = match &self.config.pod_identity_endpoint {
                Some(url) => vec![url.clone()],
                None => match spc.address {
                    AddressType::Ipv4 => vec![POD_IDENTITY_IPV4.to_owned()],
                    AddressType::Ipv6 => vec![POD_IDENTITY_IPV6.to_owned()],
                    AddressType::Auto => {
                        vec![POD_IDENTITY_IPV4.to_owned(), POD_IDENTITY_IPV6.to_owned()]
                    }
                },
            };
            return Ok(Auth::PodIdentity { urls, token });
        }
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

    pub(super) async fn forget(&self, auth: &Auth<'_>, ctx: &FetchContext<'_>, region: &str) {
        self.identity
            .forget(&credential_key(auth, ctx, region))
            .await;
    }

    pub(super) async fn credentials(
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
                let session = sts::session_name(&ctx.pod.namespace, &ctx.pod.name);
                self.identity
                    .cached(key, || self.assume_role(role, token, session, region))
                    .await
            }
        }
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

/// How long to keep credentials that expire at `expiry`.
pub fn cache_for(expiry: Option<SystemTime>) -> Duration {
    let Some(expiry) = expiry else {
        return Duration::from_secs(300);
    };
    let left = expiry
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let keep = if left > RENEW_BEFORE * 2 {
        left - RENEW_BEFORE
    } else {
        left / 2
    };
    keep.min(MAX_CACHE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_kept_until_shortly_before_expiry() {
        let now = SystemTime::now();
        let hour = cache_for(Some(now + Duration::from_secs(3600)));
        assert!(hour <= Duration::from_secs(3300) && hour > Duration::from_secs(3200));
        let short = cache_for(Some(now + Duration::from_secs(400)));
        assert!(short <= Duration::from_secs(200));
        assert_eq!(
            cache_for(Some(now - Duration::from_secs(1))),
            Duration::ZERO
        );
        assert!(cache_for(Some(now + Duration::from_secs(86_400))) <= MAX_CACHE);
    }
}

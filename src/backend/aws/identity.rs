//! Who the pod is to AWS, without minting a token: the ServiceAccount
//! tokens kubelet passes (CSIDriver `tokenRequests`) become AWS
//! credentials through STS `AssumeRoleWithWebIdentity` (IRSA) or the EKS
//! Pod Identity agent. Credentials are cached per (role, pod, region) until
//! shortly before they expire, and concurrent mounts share one call. The
//! Kubernetes API is read only for what the SecretProviderClass does not
//! say (the ServiceAccount's role annotation, the node's region), through
//! one client and short caches, so a burst of mounts costs one GET.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::OnceCell;

use super::Error;

/// Largest answer read from the EKS Pod Identity agent (credentials JSON).
const AGENT_MAX_BODY: usize = 64 * 1024;
use crate::backend::ErrorKind;
use crate::metrics::Metrics;
use crate::secret::Token;

pub const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
const LEGACY_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";
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

/// Kubernetes API access settings.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// Read the ServiceAccount annotation and node label at all.
    pub enabled: bool,
    /// A kubeconfig file; else in-cluster config (or KUBECONFIG / ~/.kube/config).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The node coffer runs on, for its region label.
    pub node_name: Option<String>,
}

/// A value cached until `until`, filled by one caller while the others wait.
type Slot<T> = Arc<tokio::sync::Mutex<Option<(T, Instant)>>>;

struct SlotMap<K, T> {
    slots: Mutex<HashMap<K, Slot<T>>>,
}

impl<K: std::hash::Hash + Eq + Clone, T> SlotMap<K, T> {
    fn new() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &K) -> Slot<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_ENTRIES {
            let now = Instant::now();
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .try_lock()
                        .is_ok_and(|v| v.as_ref().is_some_and(|(_, until)| *until > now))
            });
        }
        slots.entry(key.clone()).or_default().clone()
    }
}

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

pub struct Identity {
    kube: KubeSettings,
    metrics: Arc<Metrics>,
    kube_client: OnceCell<Result<kube::Client, String>>,
    roles: SlotMap<(String, String), Option<String>>,
    regions: SlotMap<String, String>,
    credentials: SlotMap<CredentialKey, Credentials>,
    agent_timeout: Duration,
    /// Built on first use (`coffer check` builds backends and never calls out).
    agent: std::sync::OnceLock<reqwest::Client>,
}

impl Identity {
    pub fn new(kube: KubeSettings, metrics: Arc<Metrics>, agent_timeout: Duration) -> Self {
        Self {
            kube,
            metrics,
            kube_client: OnceCell::new(),
            roles: SlotMap::new(),
            regions: SlotMap::new(),
            credentials: SlotMap::new(),
            agent_timeout,
            agent: std::sync::OnceLock::new(),
        }
    }

    async fn kube(&self, need: &str) -> Result<kube::Client, Error> {
        if !self.kube.enabled {
            return Err(Error::Precondition {
                message: format!(
                    "{need}, and coffer's Kubernetes API access is off (--aws-kube-api=false)"
                ),
            });
        }
        let client = self
            .kube_client
            .get_or_init(|| async {
                let config = match &self.kube.kubeconfig {
                    Some(path) => {
                        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                            format!("cannot read kubeconfig {}: {e}", path.display())
                        })?;
                        kube::Config::from_custom_kubeconfig(
                            kc,
                            &kube::config::KubeConfigOptions::default(),
                        )
                        .await
                        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
                    }
                    None => kube::Config::infer()
                        .await
                        .map_err(|e| format!("no in-cluster or kubeconfig configuration ({e})"))?,
                };
                // A stalled API server must not hold a mount for its whole deadline.
                let mut config = config;
                config.connect_timeout = Some(Duration::from_secs(5));
                config.read_timeout = Some(Duration::from_secs(15));
                config.write_timeout = Some(Duration::from_secs(15));
                kube::Client::try_from(config)
                    .map_err(|e| format!("cannot build a Kubernetes client ({e})"))
            })
            .await;
        client.clone().map_err(|reason| Error::Precondition {
            message: format!("{need}, but coffer cannot reach the Kubernetes API: {reason}"),
        })
    }

    /// The role for IRSA: the ServiceAccount's `eks.amazonaws.com/role-arn`.
    pub async fn service_account_role(&self, namespace: &str, sa: &str) -> Result<String, Error> {
        let slot = self.roles.slot(&(namespace.to_owned(), sa.to_owned()));
        let mut guard = slot.lock().await;
        if let Some((role, until)) = guard.as_ref()
            && *until > Instant::now()
        {
            return role_or_error(role.clone(), namespace, sa);
        }
        let need = format!(
            "the IAM role of service account {sa} (namespace: {namespace}) is needed (set roleArn in the SecretProviderClass to skip this lookup)"
        );
        let client = self.kube(&need).await?;
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client, namespace);
        let started = Instant::now();
        let got = api.get(sa).await;
        self.metrics.backend_request(
            "aws",
            "kubernetes.GetServiceAccount",
            kube_outcome(&got),
            started.elapsed(),
        );
        let role = match got {
            Ok(account) => account
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROLE_ANNOTATION))
                .filter(|r| !r.is_empty())
                .cloned(),
            Err(e) => {
                let (kind, reason) = kube_error(&e);
                // Not cached: the next mount tries again.
                return Err(Error::Kube {
                    what: format!("failed to get service account {namespace}/{sa}"),
                    reason,
                    kind,
                });
            }
        };
        *guard = Some((role.clone(), Instant::now() + ANNOTATION_TTL));
        role_or_error(role, namespace, sa)
    }

    /// The region from the node's `topology.kubernetes.io/region` label.
    pub async fn node_region(&self) -> Result<String, Error> {
        let Some(node) = self.kube.node_name.clone().filter(|n| !n.is_empty()) else {
            return Err(Error::Precondition {
                message: "no region: set region in the SecretProviderClass, or --aws-region / AWS_REGION on coffer, or NODE_NAME (--node-name) so coffer reads the node's topology.kubernetes.io/region label".into(),
            });
        };
        let slot = self.regions.slot(&node);
        let mut guard = slot.lock().await;
        if let Some((region, _)) = guard.as_ref() {
            return Ok(region.clone());
        }
        let need = format!(
            "no region in the SecretProviderClass or coffer's flags (set region, or --aws-region / AWS_REGION), so the label {REGION_LABEL} of node {node} is needed"
        );
        let client = self.kube(&need).await?;
        let api: kube::Api<Node> = kube::Api::all(client);
        let started = Instant::now();
        let got = api.get(&node).await;
        self.metrics.backend_request(
            "aws",
            "kubernetes.GetNode",
            kube_outcome(&got),
            started.elapsed(),
        );
        let node_obj = got.map_err(|e| {
            let (kind, reason) = kube_error(&e);
            Error::Kube {
                what: format!("failed to retrieve region from node {node}"),
                reason,
                kind,
            }
        })?;
        let labels = node_obj.metadata.labels.unwrap_or_default();
        let region = labels
            .get(REGION_LABEL)
            .or_else(|| labels.get(LEGACY_REGION_LABEL))
            .filter(|r| !r.is_empty())
            .cloned()
            .ok_or_else(|| Error::Precondition {
                message: format!(
                    "failed to retrieve region from node {node}: Region not found (no {REGION_LABEL} label); set region in the SecretProviderClass or --aws-region"
                ),
            })?;
        // A node does not move: cached for the life of the process.
        *guard = Some((region.clone(), Instant::now() + MAX_CACHE));
        Ok(region)
    }

    /// Credentials from `fetch`, cached under `key`; one call for all
    /// concurrent callers. Returns whether they came from the cache.
    pub async fn cached<F, Fut>(&self, key: CredentialKey, fetch: F) -> Result<Credentials, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Credentials, Error>>,
    {
        let slot = self.credentials.slot(&key);
        let mut guard = slot.lock().await;
        if let Some((creds, until)) = guard.as_ref()
            && *until > Instant::now()
        {
            self.metrics.credential_cache("aws", "hit");
            return Ok(creds.clone());
        }
        self.metrics.credential_cache("aws", "miss");
        let creds = fetch().await?;
        *guard = Some((creds.clone(), Instant::now() + cache_for(creds.expiry())));
        Ok(creds)
    }

    /// Drops cached credentials (after AWS refused them).
    pub async fn forget(&self, key: &CredentialKey) {
        let slot = self.credentials.slot(key);
        *slot.lock().await = None;
    }

    /// EKS Pod Identity: the agent exchanges the pod's token for credentials.
    /// Its answer is a few hundred bytes; [`AGENT_MAX_BODY`] bounds it.
    pub async fn pod_identity(&self, urls: &[String], token: &Token) -> Result<Credentials, Error> {
        let agent = self.agent.get_or_init(|| {
            let policy = crate::backend::http::Policy {
                max_body: AGENT_MAX_BODY,
                connect_timeout: self.agent_timeout.min(Duration::from_secs(5)),
                request_timeout: self.agent_timeout,
            };
            // No redirects (the pod's token is in the request), capped answers.
            crate::backend::http::builder(&policy, false)
                // The agent is link-local (or a test's loopback): never through a proxy.
                .no_proxy()
                .build()
                .unwrap_or_default()
        });
        let mut last = None;
        for url in urls {
            let started = Instant::now();
            let result = agent
                .get(url)
                .header(reqwest::header::AUTHORIZATION, token.expose())
                .send()
                .await;
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.backend_request(
                        "aws",
                        "eks-pod-identity.GetCredentials",
                        "error",
                        started.elapsed(),
                    );
                    let kind = if e.is_timeout() {
                        ErrorKind::DeadlineExceeded
                    } else {
                        ErrorKind::Unavailable
                    };
                    last = Some(Error::Credentials {
                        how: "EKS Pod Identity agent",
                        at: url.clone(),
                        reason: format!(
                            "cannot reach the agent ({}); is the eks-pod-identity-agent add-on running on this node?",
                            root_cause(&e)
                        ),
                        kind,
                    });
                    // Auto: try the next address.
                    continue;
                }
            };
            let status = response.status();
            let body = match crate::backend::http::read_capped(response, AGENT_MAX_BODY).await {
                Ok(body) => body,
                Err(e) => {
                    self.metrics.backend_request(
                        "aws",
                        "eks-pod-identity.GetCredentials",
                        "error",
                        started.elapsed(),
                    );
                    last = Some(Error::Credentials {
                        how: "EKS Pod Identity agent",
                        at: url.clone(),
                        reason: e.to_string(),
                        kind: ErrorKind::Unavailable,
                    });
                    continue;
                }
            };
            self.metrics.backend_request(
                "aws",
                "eks-pod-identity.GetCredentials",
                if status.is_success() {
                    "ok"
                } else if status.is_client_error() {
                    "refused"
                } else {
                    "error"
                },
                started.elapsed(),
            );
            if !status.is_success() {
                let kind = match status.as_u16() {
                    400 => ErrorKind::InvalidArgument,
                    401 => ErrorKind::Unauthenticated,
                    403 => ErrorKind::PermissionDenied,
                    404 => ErrorKind::FailedPrecondition,
                    429 | 500..=599 => ErrorKind::Unavailable,
                    _ => ErrorKind::Internal,
                };
                return Err(Error::Credentials {
                    how: "EKS Pod Identity agent",
                    at: url.clone(),
                    reason: format!("HTTP {}: {}", status.as_u16(), agent_message(&body)),
                    kind,
                });
            }
            return parse_agent_credentials(&body).map_err(|reason| Error::Credentials {
                how: "EKS Pod Identity agent",
                at: url.clone(),
                reason,
                kind: ErrorKind::Internal,
            });
        }
        Err(last.unwrap_or_else(|| Error::Credentials {
            how: "EKS Pod Identity agent",
            at: String::new(),
            reason: "no agent address".into(),
            kind: ErrorKind::Internal,
        }))
    }
}

fn role_or_error(role: Option<String>, namespace: &str, sa: &str) -> Result<String, Error> {
    role.ok_or_else(|| Error::Precondition {
        message: format!(
            "An IAM role must be associated with service account {sa} (namespace: {namespace}): annotate it with {ROLE_ANNOTATION}, or set roleArn in the SecretProviderClass"
        ),
    })
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCredentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

/// The agent's (container credentials) JSON. Errors never quote the body.
pub fn parse_agent_credentials(body: &[u8]) -> Result<Credentials, String> {
    let c: AgentCredentials = serde_json::from_slice(body).map_err(|_| {
        "the agent's answer is not credentials JSON (AccessKeyId, SecretAccessKey, Token, Expiration)".to_owned()
    })?;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
        return Err("the agent's answer has empty credentials".into());
    }
    let expiry = match c.expiration.as_deref() {
        None | Some("") => None,
        Some(ts) => Some(
            OffsetDateTime::parse(ts, &Rfc3339)
                .map_err(|_| "the agent's Expiration is not RFC 3339".to_owned())?
                .into(),
        ),
    };
    Ok(Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        c.token.filter(|t| !t.is_empty()),
        expiry,
        "coffer-eks-pod-identity",
    ))
}

/// The agent's error text, if it is the usual `{"code","message"}` JSON
/// (it describes the request, never credentials); else a placeholder.
fn agent_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(m) => {
            let text = [m.code, m.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let text: String = text.chars().take(300).collect();
            if text.is_empty() {
                "no message".into()
            } else {
                text
            }
        }
        Err(_) => "no message".into(),
    }
}

fn kube_outcome<T>(r: &Result<T, kube::Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(kube::Error::Api(s)) if s.code < 500 => "refused",
        Err(_) => "error",
    }
}

fn kube_error(e: &kube::Error) -> (ErrorKind, String) {
    match e {
        kube::Error::Api(s) => {
            let kind = match s.code {
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                429 | 500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            };
            (kind, format!("HTTP {}: {}", s.code, s.message))
        }
        other => (ErrorKind::Unavailable, root_cause(other)),
    }
}

pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The STS session name: `coffer.<namespace>.<pod>`, in STS's alphabet, ≤ 64 characters.
pub fn session_name(namespace: &str, pod: &str) -> String {
    let raw = format!("coffer.{namespace}.{pod}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
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

    #[test]
    fn agent_answers() {
        let ok = br#"{"AccessKeyId":"AKIDEXAMPLE","SecretAccessKey":"wJalr","Token":"tok","AccountId":"123456789012","Expiration":"2100-01-01T00:00:00Z"}"#;
        let c = parse_agent_credentials(ok).unwrap();
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert!(c.expiry().is_some());
        let e = parse_agent_credentials(b"{\"AccessKeyId\": \"secretish\"").unwrap_err();
        assert!(!e.contains("secretish"));
        assert!(parse_agent_credentials(br#"{"AccessKeyId":"","SecretAccessKey":""}"#).is_err());
        assert_eq!(
            agent_message(br#"{"code":"AccessDeniedException","message":"denied"}"#),
            "AccessDeniedException: denied"
        );
        assert_eq!(agent_message(b"<html>"), "no message");
    }

    #[test]
    fn session_names_fit_sts() {
        assert_eq!(session_name("shop", "web-0"), "coffer.shop.web-0");
        let long = session_name("n", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert_eq!(session_name("a b", "c/d"), "coffer.a-b.c-d");
    }
}

//! The Kubernetes API, read only for what a SecretProviderClass does not
//! say: the ServiceAccount's role annotation and the node's region label.
//! One client, short caches, so a burst of mounts costs one GET.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};

use super::{ANNOTATION_TTL, Identity, MAX_CACHE, REGION_LABEL, ROLE_ANNOTATION};
use crate::backend::ErrorKind;
use crate::backend::aws::Error;
use crate::backend::support::{Outcome, status_kind, timed};
use crate::errors::root_cause;

const LEGACY_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";

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

impl Identity {
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
        let key = (namespace.to_owned(), sa.to_owned());
        // Errors are not kept: the next mount asks again.
        let (role, _) = self
            .roles
            .get_or_fill(&key, || async {
                let need = format!(
                    "the IAM role of service account {sa} (namespace: {namespace}) is needed (set roleArn in the SecretProviderClass to skip this lookup)"
                );
                let client = self.kube(&need).await?;
                let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client, namespace);
                let account = timed(
                    &self.metrics,
                    "aws",
                    "kubernetes.GetServiceAccount",
                    api.get(sa),
                    kube_outcome,
                )
                .await
                .map_err(|e| {
                    let (kind, reason) = kube_error(&e);
                    Error::Kube {
                        what: format!("failed to get service account {namespace}/{sa}"),
                        reason,
                        kind,
                    }
                })?;
                let role = account
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ROLE_ANNOTATION))
                    .filter(|r| !r.is_empty())
                    .cloned();
                Ok((role, ANNOTATION_TTL))
            })
            .await?;
        role.ok_or_else(|| Error::Precondition {
            message: format!(
                "An IAM role must be associated with service account {sa} (namespace: {namespace}): annotate it with {ROLE_ANNOTATION}, or set roleArn in the SecretProviderClass"
            ),
        })
    }

    /// The region from the node's `topology.kubernetes.io/region` label.
    pub async fn node_region(&self) -> Result<String, Error> {
        let Some(node) = self.kube.node_name.clone().filter(|n| !n.is_empty()) else {
            return Err(Error::Precondition {
                message: "no region: set region in the SecretProviderClass, or --aws-region / AWS_REGION on coffer, or NODE_NAME (--node-name) so coffer reads the node's topology.kubernetes.io/region label".into(),
            });
        };
        let (region, _) = self
            .regions
            .get_or_fill(&node, || async {
                let need = format!(
                    "no region in the SecretProviderClass or coffer's flags (set region, or --aws-region / AWS_REGION), so the label {REGION_LABEL} of node {node} is needed"
                );
                let client = self.kube(&need).await?;
                let api: kube::Api<Node> = kube::Api::all(client);
                let node_obj = timed(
                    &self.metrics,
                    "aws",
                    "kubernetes.GetNode",
                    api.get(&node),
                    kube_outcome,
                )
                .await
                .map_err(|e| {
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
                // A node does not move: kept for the life of the process.
                Ok((region, MAX_CACHE))
            })
            .await?;
        Ok(region)
    }
}

fn kube_outcome(e: &kube::Error) -> Outcome {
    match e {
        kube::Error::Api(s) => Outcome::of_status(s.code),
        _ => Outcome::Error,
    }
}

fn kube_error(e: &kube::Error) -> (ErrorKind, String) {
    match e {
        kube::Error::Api(s) => {
            let kind = match status_kind(s.code) {
                ErrorKind::InvalidArgument => ErrorKind::Internal,
                other => other,
            };
            (kind, format!("HTTP {}: {}", s.code, s.message))
        }
        other => (ErrorKind::Unavailable, root_cause(other)),
    }
}

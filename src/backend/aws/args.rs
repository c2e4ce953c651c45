//! `coffer serve` / `coffer check` flags of the AWS backend.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;

use super::Config;
use super::identity::KubeSettings;
use super::params::Defaults;

/// AWS defaults, endpoints and identity settings.
#[derive(Debug, Clone, ClapArgs)]
#[group(skip)]
pub struct Args {
    /// Default AWS region for SecretProviderClasses without `region` (else the node's topology.kubernetes.io/region label).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// AWS endpoint for every service and region (tests, proxies). The SDK's AWS_ENDPOINT_URL_<SERVICE> variables take precedence.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// REGION=URL: AWS endpoint for every service in one region (VPC endpoints; repeatable or comma-separated).
    #[arg(long = "aws-region-endpoint", env = "COFFER_AWS_REGION_ENDPOINTS", value_delimiter = ',', value_parser = crate::cli::parse_kv)]
    pub aws_region_endpoints: Vec<(String, String)>,
    /// URL of the EKS Pod Identity agent instead of http://169.254.170.23/v1/credentials and http://[fd00:ec2::23]/v1/credentials.
    #[arg(long, env = "COFFER_AWS_POD_IDENTITY_ENDPOINT")]
    pub aws_pod_identity_endpoint: Option<String>,
    /// Timeout of one call to the EKS Pod Identity agent.
    #[arg(long, visible_alias = "pod-identity-http-timeout", env = "COFFER_AWS_POD_IDENTITY_TIMEOUT", default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub aws_pod_identity_timeout: Duration,
    /// Read ServiceAccount role annotations and the node's region label from the Kubernetes API.
    #[arg(long, env = "COFFER_AWS_KUBE_API", default_value_t = true, action = clap::ArgAction::Set)]
    pub aws_kube_api: bool,
    /// Kubeconfig for the Kubernetes API (default: in-cluster, else KUBECONFIG / ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The node coffer runs on (downward API spec.nodeName), for its region label.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Secrets Manager values held (per pod and credentials) so that a republish costs one DescribeSecret per secret instead of GetSecretValue; 0 reads every value on every mount.
    #[arg(long, env = "COFFER_AWS_HELD_VALUES", default_value_t = 16384)]
    pub aws_held_values: usize,
    /// Bytes of the values held for republishes, at most.
    #[arg(long, env = "COFFER_AWS_HELD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub aws_held_bytes: usize,
}

impl Args {
    /// The backend's settings; an empty value counts as unset.
    pub fn config(&self) -> Config {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Config {
            defaults: Defaults {
                region: set(&self.aws_region),
            },
            endpoint_url: set(&self.aws_endpoint_url),
            region_endpoints: self.aws_region_endpoints.clone(),
            pod_identity_endpoint: set(&self.aws_pod_identity_endpoint),
            pod_identity_timeout: self.aws_pod_identity_timeout,
            kube: KubeSettings {
                enabled: self.aws_kube_api,
                kubeconfig: self.kubeconfig.clone(),
                node_name: set(&self.node_name),
            },
            held_values: self.aws_held_values,
            held_bytes: self.aws_held_bytes,
        }
    }
}

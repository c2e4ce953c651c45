//! Command line: `coffer serve | mount | check`. Every flag has an
//! environment variable, so the Helm chart can set either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coffer", version, about = "A Secrets Store CSI driver provider for Vault/OpenBao and AWS", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the provider sockets (what the DaemonSet runs).
    Serve(ServeArgs),
    /// Mount a SecretProviderClass through a provider socket, as the driver does, into a directory.
    Mount(MountArgs),
    /// Check SecretProviderClass manifests offline; exit 1 with one line per problem.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of provider sockets (the driver's --provider-volume).
    #[arg(
        long,
        env = "COFFER_SOCKET_DIR",
        default_value = "/var/run/secrets-store-csi-providers"
    )]
    pub socket_dir: PathBuf,
    /// Provider name to serve as <socket-dir>/<NAME>.sock; repeat for more.
    /// `vault`, `openbao` and `aws` speak those providers' dialects; other names use the `backend` parameter.
    #[arg(
        long = "provider",
        env = "COFFER_PROVIDERS",
        value_delimiter = ',',
        default_value = "coffer"
    )]
    pub providers: Vec<String>,
    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "COFFER_HEALTH_ADDR", default_value = "0.0.0.0:8098")]
    pub health_addr: SocketAddr,
    #[arg(long, env = "COFFER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level of coffer's own messages: error, warn, info, debug, trace.
    #[arg(long, env = "COFFER_LOG_LEVEL", default_value = "info")]
    pub log_level: tracing::Level,
    /// Mounts served at once; more wait for a slot within their deadline.
    #[arg(long, env = "COFFER_MAX_CONCURRENT_MOUNTS", default_value_t = 256)]
    pub max_concurrent_mounts: usize,
    /// Deadline of one mount (kubelet gives up after 2m).
    #[arg(long, env = "COFFER_MOUNT_TIMEOUT", default_value = "100s", value_parser = parse_duration)]
    pub mount_timeout: Duration,
    /// On SIGTERM, how long in-flight mounts may take to finish.
    #[arg(long, env = "COFFER_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// File with the key of object versions (HMAC); share it across nodes. Random per process if unset.
    #[arg(long, env = "COFFER_HMAC_KEY_FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// Largest response coffer sends; keep it at the driver's --max-call-recv-msg-size.
    #[arg(long, env = "COFFER_MAX_RESPONSE_BYTES", default_value_t = crate::mount::MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// Backend defaults, used by `serve` and `check`.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Default Vault/OpenBao address for SecretProviderClasses without vaultAddress.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// Default auth mount path (kubernetes or jwt method) for SecretProviderClasses without vaultAuthMountPath.
    #[arg(long, env = "COFFER_VAULT_AUTH_MOUNT", default_value = "kubernetes")]
    pub vault_auth_mount: String,
    /// Default Vault namespace (Enterprise / OpenBao namespaces).
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// Default CA certificate file (PEM) to verify Vault's TLS certificate.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_ca_cert: Option<String>,
    /// Default directory of CA certificates (PEM); ignored when --vault-ca-cert is set.
    #[arg(long, env = "VAULT_CAPATH")]
    pub vault_ca_path: Option<String>,
    /// Default name to verify Vault's certificate against (instead of the address's host).
    #[arg(long, env = "VAULT_TLS_SERVER_NAME")]
    pub vault_tls_server_name: Option<String>,
    /// Default client certificate (PEM) for mutual TLS with Vault.
    #[arg(long, env = "VAULT_CLIENT_CERT", requires = "vault_client_key")]
    pub vault_client_cert: Option<String>,
    /// Default client key (PEM) for mutual TLS with Vault.
    #[arg(long, env = "VAULT_CLIENT_KEY", requires = "vault_client_cert")]
    pub vault_client_key: Option<String>,
    /// Skip verification of Vault's certificate (testing only).
    #[arg(long, env = "VAULT_SKIP_VERIFY", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub vault_skip_verify: bool,
    /// Most cached Vault logins, and most cached dynamic responses (leases, certificates).
    #[arg(long, env = "COFFER_CACHE_SIZE", default_value_t = 1000)]
    pub cache_size: usize,
    /// Timeout of one HTTP request to Vault (and of each read within it).
    #[arg(long, env = "COFFER_VAULT_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub vault_request_timeout: Duration,
    /// Timeout of connecting to Vault (TCP and TLS).
    #[arg(long, env = "COFFER_VAULT_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub vault_connect_timeout: Duration,
    /// Largest response body accepted from a backend (default: twice --max-response-bytes plus 64 KiB, room for JSON around the largest secret a mount may return).
    #[arg(long, env = "COFFER_BACKEND_MAX_RESPONSE_BYTES")]
    pub backend_max_response_bytes: Option<usize>,
    /// Vault/OpenBao addresses a SecretProviderClass may name in vaultAddress (scheme://host[:port]; repeatable or comma-separated). Empty: any. --vault-addr is always allowed.
    #[arg(
        long = "vault-allowed-address",
        env = "COFFER_VAULT_ALLOWED_ADDRESSES",
        value_delimiter = ','
    )]
    pub vault_allowed_addresses: Vec<String>,
    /// Whether a SecretProviderClass may name an http:// (plain-text) vaultAddress.
    #[arg(long, env = "COFFER_VAULT_ALLOW_HTTP", default_value_t = true, action = clap::ArgAction::Set)]
    pub vault_allow_http: bool,
    /// Whether a SecretProviderClass may set vaultSkipTLSVerify: "true".
    #[arg(long, env = "COFFER_VAULT_ALLOW_SKIP_VERIFY", default_value_t = true, action = clap::ArgAction::Set)]
    pub vault_allow_skip_verify: bool,
    /// Directories a SecretProviderClass's TLS files (vaultCACertPath, vaultCADirectory, vaultTLSClientCertPath, vaultTLSClientKeyPath) must be under (repeatable or comma-separated). Empty: any directory. Either way only regular files of at most 1 MiB are read.
    #[arg(
        long = "tls-file-dir",
        env = "COFFER_TLS_FILE_DIRS",
        value_delimiter = ','
    )]
    pub tls_file_dirs: Vec<PathBuf>,
    /// Default AWS region for SecretProviderClasses without `region` (else the node's topology.kubernetes.io/region label).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// AWS endpoint for every service and region (tests, proxies). The SDK's AWS_ENDPOINT_URL_<SERVICE> variables take precedence.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// REGION=URL: AWS endpoint for every service in one region (VPC endpoints; repeatable or comma-separated).
    #[arg(long = "aws-region-endpoint", env = "COFFER_AWS_REGION_ENDPOINTS", value_delimiter = ',', value_parser = parse_kv)]
    pub aws_region_endpoints: Vec<(String, String)>,
    /// URL of the EKS Pod Identity agent instead of http://169.254.170.23/v1/credentials and http://[fd00:ec2::23]/v1/credentials.
    #[arg(long, env = "COFFER_AWS_POD_IDENTITY_ENDPOINT")]
    pub aws_pod_identity_endpoint: Option<String>,
    /// Timeout of one call to the EKS Pod Identity agent.
    #[arg(long, env = "COFFER_AWS_POD_IDENTITY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
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
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The SecretProviderClass manifest (YAML).
    #[arg(long)]
    pub spc: PathBuf,
    /// Provider socket; default <socket-dir>/<spec.provider>.sock as the driver finds it.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    #[arg(
        long,
        env = "COFFER_SOCKET_DIR",
        default_value = "/var/run/secrets-store-csi-providers"
    )]
    pub socket_dir: PathBuf,
    /// Directory to write the volume into (the driver's atomic-writer layout).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "coffer-debug")]
    pub pod_name: String,
    /// Default: the SecretProviderClass's namespace, else "default".
    #[arg(long)]
    pub pod_namespace: Option<String>,
    /// Default: a fixed UID derived from namespace and pod name.
    #[arg(long)]
    pub pod_uid: Option<String>,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// AUDIENCE=FILE: a ServiceAccount token for an audience (repeatable), as kubelet passes from the CSIDriver's tokenRequests.
    #[arg(long = "token", value_parser = parse_token_arg)]
    pub tokens: Vec<(String, PathBuf)>,
    /// A JSON or YAML map of strings: the nodePublishSecretRef data.
    #[arg(long)]
    pub secret_ref: Option<PathBuf>,
    /// KEY=VALUE volume attribute (repeatable); overrides SPC parameters, as in the driver.
    #[arg(long = "volume-attribute", value_parser = parse_kv)]
    pub volume_attributes: Vec<(String, String)>,
    /// Largest response accepted, like the driver's --max-call-recv-msg-size.
    #[arg(long, default_value_t = crate::mount::MAX_RESPONSE_BYTES)]
    pub max_call_recv_msg_size: usize,
    /// Deadline of the call (kubelet uses 2m).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// SecretProviderClass manifests (several documents per file allowed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// `100s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 100s, 2m or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{raw:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{raw:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_token_arg(raw: &str) -> Result<(String, PathBuf), String> {
    let (aud, file) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not AUDIENCE=FILE"))?;
    Ok((aud.to_owned(), PathBuf::from(file)))
}

fn parse_kv(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100s").unwrap(), Duration::from_secs(100));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn serve_defaults_match_the_documentation() {
        let cli = Cli::try_parse_from(["coffer", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.socket_dir,
            PathBuf::from("/var/run/secrets-store-csi-providers")
        );
        assert_eq!(args.providers, vec!["coffer".to_owned()]);
        assert_eq!(args.health_addr.to_string(), "0.0.0.0:8098");
        assert_eq!(args.mount_timeout, Duration::from_secs(100));
        assert_eq!(args.backends.vault_auth_mount, "kubernetes");
        assert!(args.backends.aws_kube_api);
        assert_eq!(
            args.backends.aws_pod_identity_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn providers_repeat() {
        let cli = Cli::try_parse_from([
            "coffer",
            "serve",
            "--provider",
            "vault",
            "--provider",
            "openbao",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.providers,
            vec!["vault".to_owned(), "openbao".to_owned()]
        );
    }
}

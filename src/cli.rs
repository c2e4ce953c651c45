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
    pub backends: crate::backend::registry::BackendArgs,
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
    pub backends: crate::backend::registry::BackendArgs,
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

pub fn parse_kv(raw: &str) -> Result<(String, String), String> {
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
        assert_eq!(args.backends.vault.vault_auth_mount, "kubernetes");
        assert!(args.backends.aws.aws_kube_api);
        assert_eq!(
            args.backends.aws.aws_pod_identity_timeout,
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

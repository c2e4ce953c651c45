//! Command line: `coffer serve | mount | check`. Every flag has an
//! environment variable, so the Helm chart can set either.
//!
//! Written for users who copy flags from the Go programs around coffer
//! ([`Cli::parse_from_args`]): Go's single-dash long flags (`-vault-addr`),
//! the peers' flag names as aliases (`--endpoint`, `--provider-volume`,
//! `--vault-mount`, `--vault-tls-ca-cert`, ...), `:PORT` listen addresses, Go
//! durations (`1m30s`), and the last of a repeated flag wins, as with Go's
//! `flag` package (docs/migration.md#flags).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coffer", version, about = "A Secrets Store CSI driver provider for Vault/OpenBao and AWS", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line as users write it: Go-style `-flag` spellings
    /// are read as `--flag`, then `coffer serve`'s peer flags (`--endpoint`,
    /// `--debug`) are folded into coffer's own.
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args = go_style_flags(args.into_iter().map(Into::into));
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Command::Serve(serve), Some(("serve", m))) =
            (&mut cli.command, matches.subcommand())
        {
            serve
                .fold_peer_flags(m)
                .map_err(|e| command.error(clap::error::ErrorKind::ValueValidation, e))?;
        }
        Ok(cli)
    }
}

/// `-name` and `-name=value` (Go's `flag` package takes one or two dashes)
/// become `--name...`; single letters (`-h`, `-V`), negative numbers and
/// everything after `--` stay as they are.
fn go_style_flags(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        let text = arg.to_str();
        match text {
            Some("--") => {
                rest = true;
                out.push(arg);
            }
            Some(t)
                if !rest
                    && t.len() > 2
                    && t.starts_with('-')
                    && t.as_bytes().get(1).is_some_and(u8::is_ascii_alphabetic) =>
            {
                out.push(format!("-{t}").into());
            }
            _ => out.push(arg),
        }
    }
    out
}

fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
        || matches.value_source(id) == Some(ValueSource::EnvVariable)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the provider sockets (what the DaemonSet runs).
    Serve(ServeArgs),
    /// Mount a SecretProviderClass through a provider socket, as the driver does, into a directory.
    Mount(MountArgs),
    /// Check SecretProviderClass manifests offline (for CI): exit 0 when nothing fails, 1 on an error or warning (with --strict, a note too), 2 on a bad command line.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Directory of provider sockets (the driver's --provider-volume).
    #[arg(
        long,
        visible_alias = "provider-volume",
        env = "COFFER_SOCKET_DIR",
        default_value = "/var/run/secrets-store-csi-providers"
    )]
    pub socket_dir: PathBuf,
    /// The vault/openbao provider's socket path, e.g. /provider/vault.sock or unix:///provider/vault.sock: the same as --socket-dir /provider --provider vault (repeatable).
    #[arg(long = "endpoint", value_name = "PATH")]
    pub endpoints: Vec<String>,
    /// Provider name to serve as <socket-dir>/<NAME>.sock; repeat for more.
    /// `vault`, `openbao` and `aws` speak those providers' dialects; other names use the `backend` parameter.
    #[arg(
        long = "provider",
        env = "COFFER_PROVIDERS",
        value_delimiter = ',',
        default_value = "coffer"
    )]
    pub providers: Vec<String>,
    /// Address of the HTTP server for /healthz, /readyz and /metrics: HOST:PORT, [IPv6]:PORT, or :PORT for every interface.
    #[arg(long, env = "COFFER_HEALTH_ADDR", default_value = "0.0.0.0:8098", value_parser = crate::goflags::listen_addr)]
    pub health_addr: SocketAddr,
    #[arg(long, env = "COFFER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level of coffer's own messages: error, warn, info, debug, trace.
    #[arg(long, env = "COFFER_LOG_LEVEL", default_value = "info")]
    pub log_level: tracing::Level,
    /// The vault/openbao provider's --debug: log at debug level unless --log-level is given.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub debug: Option<bool>,
    /// Threads that run mounts (the async runtime's workers). One keeps a
    /// warm mount cheapest: no cross-thread wake-ups, and no more CPU than
    /// a DaemonSet's limit buys; work that grows with a class's size
    /// (large parameter sets, templates, TLS files) runs on the blocking
    /// pool, so it does not hold the worker. Raise it on a node that mounts
    /// thousands of volumes per second.
    #[arg(long, env = "COFFER_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
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

impl ServeArgs {
    /// Folds the peers' flags into coffer's: each `--endpoint` sets the
    /// socket directory and adds its provider (replacing the default
    /// `coffer` unless `--provider` was given too); `--debug` raises the
    /// log level to debug unless `--log-level` was given.
    fn fold_peer_flags(&mut self, matches: &ArgMatches) -> Result<(), String> {
        if !self.endpoints.is_empty() {
            let mut dir: Option<PathBuf> = None;
            let mut names = Vec::new();
            for endpoint in &self.endpoints {
                let (parent, name) = split_endpoint(endpoint)?;
                match &dir {
                    Some(d) if *d != parent => {
                        return Err(format!(
                            "--endpoint {endpoint:?}: every socket must be in one directory, not {} and {}",
                            d.display(),
                            parent.display()
                        ));
                    }
                    _ => dir = Some(parent),
                }
                names.push(name);
            }
            if let Some(dir) = dir {
                if explicit(matches, "socket_dir") && self.socket_dir != dir {
                    return Err(format!(
                        "--endpoint puts sockets in {} but --socket-dir is {}",
                        dir.display(),
                        self.socket_dir.display()
                    ));
                }
                self.socket_dir = dir;
            }
            if !explicit(matches, "providers") {
                self.providers.clear();
            }
            for name in names {
                if !self.providers.contains(&name) {
                    self.providers.push(name);
                }
            }
        }
        if self.debug == Some(true) && !explicit(matches, "log_level") {
            self.log_level = tracing::Level::DEBUG;
        }
        Ok(())
    }
}

/// `/provider/vault.sock` or `unix:///provider/vault.sock` → (`/provider`, `vault`).
fn split_endpoint(endpoint: &str) -> Result<(PathBuf, String), String> {
    let path = Path::new(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".sock"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!("--endpoint {endpoint:?}: expected a socket path ending in <provider>.sock")
        })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| {
            format!("--endpoint {endpoint:?}: expected a directory before the socket name")
        })?;
    Ok((dir.to_path_buf(), name.to_owned()))
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
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

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CheckFormat {
    /// One line per finding, then `ok: ...` when nothing fails.
    Text,
    /// One JSON object: counts and findings (file, class, severity, message).
    Json,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct CheckArgs {
    /// SecretProviderClass manifests (several documents per file allowed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Fail on notes too: classes that pass only with a server default (--vault-addr) not given here.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    #[command(flatten)]
    pub backends: crate::backend::registry::BackendArgs,
}

/// A duration flag: Go's form (`1m30s`, `1.5h`, `300ms`) or plain seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    crate::goflags::duration(raw)
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
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    fn serve(argv: &[&str]) -> Result<ServeArgs, String> {
        let mut full = vec!["coffer", "serve"];
        full.extend_from_slice(argv);
        match Cli::parse_from_args(full)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Serve(args) => Ok(args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn worker_threads_default_to_one_and_stay_in_range() {
        assert_eq!(serve(&[]).unwrap().worker_threads, 1);
        assert_eq!(serve(&["--worker-threads=4"]).unwrap().worker_threads, 4);
        for bad in ["0", "257", "-1", "two"] {
            assert!(
                serve(&["--worker-threads", bad]).is_err(),
                "--worker-threads {bad}"
            );
        }
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let args = serve(&[
            "--log-level=debug",
            "--mount-timeout=10s",
            "--log-level=trace",
            "--mount-timeout=1m30s",
            "--vault-addr=https://a:8200",
            "--vault-addr=https://b:8200",
        ])
        .unwrap();
        assert_eq!(args.log_level, tracing::Level::TRACE);
        assert_eq!(args.mount_timeout, Duration::from_secs(90));
        assert_eq!(
            args.backends.vault.vault_addr.as_deref(),
            Some("https://b:8200")
        );
        // Repeatable flags still collect every value.
        let args = serve(&["--provider=vault", "--provider=aws"]).unwrap();
        assert_eq!(args.providers, vec!["vault", "aws"]);
    }

    #[test]
    fn go_listen_addresses_and_durations_are_accepted() {
        let args = serve(&[
            "--health-addr=:8080",
            "--shutdown-grace=1m30s",
            "--vault-request-timeout=1.5s",
            "--aws-pod-identity-timeout=500ms",
        ])
        .unwrap();
        assert_eq!(args.health_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(args.shutdown_grace, Duration::from_secs(90));
        assert_eq!(
            args.backends.vault.vault_request_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            args.backends.aws.aws_pod_identity_timeout,
            Duration::from_millis(500)
        );
        let err = serve(&["--health-addr=:http"]).unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
    }

    #[test]
    fn the_vault_providers_flags_are_accepted_as_they_are_written() {
        // hashicorp's chart: --endpoint and --log-level; flags as Go reads them.
        let args = serve(&[
            "-endpoint=/provider/vault.sock",
            "-vault-addr=https://vault:8200",
            "-vault-mount=k8s",
            "-vault-namespace=team",
            "-vault-tls-ca-cert=/ca.pem",
            "-vault-tls-ca-directory=/cas",
            "-vault-tls-server-name=vault.svc",
            "-vault-tls-client-cert=/c.pem",
            "-vault-tls-client-key=/k.pem",
            "-vault-tls-skip-verify=true",
            "-health-addr=:8080",
        ])
        .unwrap();
        assert_eq!(args.socket_dir, PathBuf::from("/provider"));
        assert_eq!(args.providers, vec!["vault"]);
        let v = &args.backends.vault;
        assert_eq!(v.vault_addr.as_deref(), Some("https://vault:8200"));
        assert_eq!(v.vault_auth_mount, "k8s");
        assert_eq!(v.vault_namespace.as_deref(), Some("team"));
        assert_eq!(v.vault_ca_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(v.vault_ca_path.as_deref(), Some("/cas"));
        assert_eq!(v.vault_tls_server_name.as_deref(), Some("vault.svc"));
        assert_eq!(v.vault_client_cert.as_deref(), Some("/c.pem"));
        assert_eq!(v.vault_client_key.as_deref(), Some("/k.pem"));
        assert!(v.vault_skip_verify);
        assert_eq!(args.health_addr.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn the_openbao_and_aws_providers_flags_are_accepted() {
        // OpenBao's chart: --endpoint and --debug; its -openbao-* flags.
        let args = serve(&[
            "--endpoint=unix:///provider/openbao.sock",
            "--debug=true",
            "--openbao-addr=https://bao:8200",
            "--openbao-mount=jwt",
            "--openbao-tls-skip-verify",
        ])
        .unwrap();
        assert_eq!(args.socket_dir, PathBuf::from("/provider"));
        assert_eq!(args.providers, vec!["openbao"]);
        assert_eq!(args.log_level, tracing::Level::DEBUG);
        assert_eq!(
            args.backends.vault.vault_addr.as_deref(),
            Some("https://bao:8200")
        );
        assert_eq!(args.backends.vault.vault_auth_mount, "jwt");
        assert!(args.backends.vault.vault_skip_verify);
        // --debug does not override an explicit --log-level; --debug=false is a no-op.
        assert_eq!(
            serve(&["--debug", "--log-level=warn"]).unwrap().log_level,
            tracing::Level::WARN
        );
        assert_eq!(
            serve(&["--debug=false"]).unwrap().log_level,
            tracing::Level::INFO
        );
        // The aws provider's chart: --provider-volume, --pod-identity-http-timeout.
        let args = serve(&[
            "--provider-volume=/var/run/secrets-store-csi-providers",
            "--provider=aws",
            "--pod-identity-http-timeout=2s",
        ])
        .unwrap();
        assert_eq!(
            args.socket_dir,
            PathBuf::from("/var/run/secrets-store-csi-providers")
        );
        assert_eq!(
            args.backends.aws.aws_pod_identity_timeout,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn endpoints_must_agree_with_each_other_and_with_socket_dir() {
        let args = serve(&[
            "--endpoint=/p/vault.sock",
            "--endpoint=/p/openbao.sock",
            "--provider=coffer",
        ])
        .unwrap();
        assert_eq!(args.providers, vec!["coffer", "vault", "openbao"]);
        for bad in [
            vec!["--endpoint=/p/vault.sock", "--endpoint=/q/openbao.sock"],
            vec!["--endpoint=/p/vault.sock", "--socket-dir=/q"],
            vec!["--endpoint=/p/vault"],
            vec!["--endpoint=vault.sock"],
        ] {
            assert!(serve(&bad).is_err(), "{bad:?}");
        }
        // A value after `--` and negative numbers are not flags.
        assert_eq!(
            go_style_flags(["-x", "-ab", "-1", "--", "-cd"].iter().map(OsString::from)),
            ["-x", "--ab", "-1", "--", "-cd"]
                .map(OsString::from)
                .to_vec()
        );
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

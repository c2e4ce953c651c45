//! `coffer serve` / `coffer check` flags of the Vault/OpenBao backend.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;

use super::Config;
use super::params::{Defaults, Policy};
use super::tls::{FilePolicy, Tls};

/// Vault/OpenBao defaults and limits.
#[derive(Debug, Clone, ClapArgs)]
#[group(skip)]
pub struct Args {
    /// Default Vault/OpenBao address for SecretProviderClasses without vaultAddress.
    #[arg(long, visible_alias = "openbao-addr", env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// Default auth mount path (kubernetes or jwt method) for SecretProviderClasses without vaultAuthMountPath.
    #[arg(long, visible_aliases = ["vault-mount", "openbao-mount"], env = "COFFER_VAULT_AUTH_MOUNT", default_value = "kubernetes")]
    pub vault_auth_mount: String,
    /// Default Vault namespace (Enterprise / OpenBao namespaces).
    #[arg(long, visible_alias = "openbao-namespace", env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// Default CA certificate file (PEM) to verify Vault's TLS certificate.
    #[arg(long, visible_aliases = ["vault-tls-ca-cert", "openbao-tls-ca-cert"], env = "VAULT_CACERT")]
    pub vault_ca_cert: Option<String>,
    /// Default directory of CA certificates (PEM); ignored when --vault-ca-cert is set.
    #[arg(long, visible_aliases = ["vault-tls-ca-directory", "openbao-tls-ca-directory"], env = "VAULT_CAPATH")]
    pub vault_ca_path: Option<String>,
    /// Default name to verify Vault's certificate against (instead of the address's host).
    #[arg(
        long,
        visible_alias = "openbao-tls-server-name",
        env = "VAULT_TLS_SERVER_NAME"
    )]
    pub vault_tls_server_name: Option<String>,
    /// Default client certificate (PEM) for mutual TLS with Vault.
    #[arg(long, visible_aliases = ["vault-tls-client-cert", "openbao-tls-client-cert"], env = "VAULT_CLIENT_CERT", requires = "vault_client_key")]
    pub vault_client_cert: Option<String>,
    /// Default client key (PEM) for mutual TLS with Vault.
    #[arg(long, visible_aliases = ["vault-tls-client-key", "openbao-tls-client-key"], env = "VAULT_CLIENT_KEY", requires = "vault_client_cert")]
    pub vault_client_key: Option<String>,
    /// Skip verification of Vault's certificate (testing only); `--vault-skip-verify` or `--vault-skip-verify=true|false`.
    #[arg(long, visible_aliases = ["vault-tls-skip-verify", "openbao-tls-skip-verify"], env = "VAULT_SKIP_VERIFY", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub vault_skip_verify: bool,
    /// Most cached Vault logins, and most cached dynamic responses (leases, certificates).
    #[arg(long, env = "COFFER_CACHE_SIZE", default_value_t = 1000)]
    pub cache_size: usize,
    /// Timeout of one HTTP request to Vault (and of each read within it).
    #[arg(long, env = "COFFER_VAULT_REQUEST_TIMEOUT", default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub vault_request_timeout: Duration,
    /// Timeout of connecting to Vault (TCP and TLS).
    #[arg(long, env = "COFFER_VAULT_CONNECT_TIMEOUT", default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub vault_connect_timeout: Duration,
    /// Largest answer read from Vault/OpenBao (default: twice --max-response-bytes plus 64 KiB, room for the JSON around the largest secret a mount may return).
    #[arg(long, env = "COFFER_BACKEND_MAX_RESPONSE_BYTES")]
    pub backend_max_response_bytes: Option<usize>,
    /// Vault/OpenBao addresses a SecretProviderClass may name in vaultAddress (scheme://host[:port]; repeatable or comma-separated). Empty: any. --vault-addr is always allowed.
    #[arg(long = "vault-allowed-address", env = "COFFER_VAULT_ALLOWED_ADDRESSES", value_delimiter = ',', value_parser = parse_allowed_address)]
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
}

/// An allowed address as its origin (`scheme://host:port`), or why it is not one.
fn parse_allowed_address(raw: &str) -> Result<String, String> {
    super::params::origin(raw).map_err(|reason| format!("{raw:?} {reason}"))
}

/// The default of --backend-max-response-bytes for a --max-response-bytes.
pub fn default_max_body(max_response_bytes: usize) -> usize {
    max_response_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

impl Args {
    /// The backend's settings; an empty value counts as unset.
    pub fn config(&self) -> Config {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Config {
            defaults: Defaults {
                address: set(&self.vault_addr),
                auth_mount: self.vault_auth_mount.clone(),
                namespace: set(&self.vault_namespace),
                tls: Tls {
                    ca_cert: set(&self.vault_ca_cert),
                    ca_dir: set(&self.vault_ca_path),
                    server_name: set(&self.vault_tls_server_name),
                    client_cert: set(&self.vault_client_cert),
                    client_key: set(&self.vault_client_key),
                    skip_verify: self.vault_skip_verify,
                },
                policy: Policy {
                    allowed_addresses: self.vault_allowed_addresses.clone(),
                    allow_http: self.vault_allow_http,
                    allow_skip_verify: self.vault_allow_skip_verify,
                },
            },
            http: crate::backend::http::Policy {
                max_body: self
                    .backend_max_response_bytes
                    .unwrap_or_else(|| default_max_body(crate::mount::MAX_RESPONSE_BYTES)),
                connect_timeout: self.vault_connect_timeout,
                request_timeout: self.vault_request_timeout,
            },
            tls_files: FilePolicy {
                dirs: self.tls_file_dirs.clone(),
            },
            cache_size: self.cache_size,
            parallel_reads: 8,
        }
    }
}

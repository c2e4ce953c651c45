//! `coffer serve` / `coffer check` flags of the Vault/OpenBao backend.

use std::time::Duration;

use clap::Args as ClapArgs;

use super::Config;
use super::params::Defaults;
use super::tls::Tls;

/// Vault/OpenBao defaults and limits.
#[derive(Debug, Clone, ClapArgs)]
#[group(skip)]
pub struct Args {
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
    /// Timeout of one HTTP request to Vault.
    #[arg(long, env = "COFFER_VAULT_REQUEST_TIMEOUT", default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub vault_request_timeout: Duration,
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
            },
            request_timeout: self.vault_request_timeout,
            cache_size: self.cache_size,
            parallel_reads: 8,
        }
    }
}

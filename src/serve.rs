//! `coffer serve`: wires sockets, backends, health and signals together.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::cli::{BackendArgs, LogFormat, ServeArgs};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::mount::{Backends, Mounter, version::Versioner};
use crate::server::{self, Limits, socket};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("provider sockets")]
    Socket(#[from] socket::Error),
    #[error("object versions")]
    Versions(#[from] crate::mount::version::Error),
    #[error("cannot listen on {addr} for health and metrics")]
    Health {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
    #[error("{0}")]
    Flags(String),
}

/// Largest backend response by default: room for the JSON around the
/// largest secret a mount may return (escaping, base64, metadata).
pub fn backend_max_body(args: &BackendArgs, max_response_bytes: usize) -> usize {
    args.backend_max_response_bytes.unwrap_or_else(|| {
        max_response_bytes
            .saturating_mul(2)
            .saturating_add(64 * 1024)
    })
}

/// The backends this build has, configured from flags. `Err` names a flag
/// value that cannot be used.
pub fn backends(
    args: &BackendArgs,
    max_response_bytes: usize,
    metrics: Arc<Metrics>,
) -> Result<Backends, String> {
    let mut backends = Backends::default();
    #[cfg(feature = "vault")]
    {
        use crate::backend::vault;
        let none_if_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let config = vault::Config {
            defaults: vault::params::Defaults {
                address: none_if_empty(&args.vault_addr),
                auth_mount: args.vault_auth_mount.clone(),
                namespace: none_if_empty(&args.vault_namespace),
                tls: vault::tls::Tls {
                    ca_cert: none_if_empty(&args.vault_ca_cert),
                    ca_dir: none_if_empty(&args.vault_ca_path),
                    server_name: none_if_empty(&args.vault_tls_server_name),
                    client_cert: none_if_empty(&args.vault_client_cert),
                    client_key: none_if_empty(&args.vault_client_key),
                    skip_verify: args.vault_skip_verify,
                },
                policy: vault::params::Policy::new(
                    &args.vault_allowed_addresses,
                    args.vault_allow_http,
                    args.vault_allow_skip_verify,
                )?,
            },
            http: crate::backend::http::Policy {
                max_body: backend_max_body(args, max_response_bytes),
                connect_timeout: args.vault_connect_timeout,
                request_timeout: args.vault_request_timeout,
            },
            tls_files: vault::tls::FilePolicy {
                dirs: args.tls_file_dirs.clone(),
            },
            cache_size: args.cache_size,
            parallel_reads: 8,
        };
        backends.add(Arc::new(vault::VaultBackend::new(config, metrics.clone())));
    }
    #[cfg(feature = "aws")]
    {
        use crate::backend::aws;
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let config = aws::Config {
            defaults: aws::params::Defaults {
                region: non_empty(&args.aws_region),
            },
            endpoint_url: non_empty(&args.aws_endpoint_url),
            region_endpoints: args.aws_region_endpoints.clone(),
            pod_identity_endpoint: non_empty(&args.aws_pod_identity_endpoint),
            pod_identity_timeout: args.aws_pod_identity_timeout,
            kube: aws::identity::KubeSettings {
                enabled: args.aws_kube_api,
                kubeconfig: args.kubeconfig.clone(),
                node_name: non_empty(&args.node_name),
            },
        };
        backends.add(Arc::new(aws::AwsBackend::new(config, metrics.clone())));
    }
    let _ = (args, max_response_bytes, metrics);
    Ok(backends)
}

pub fn init_logging(format: LogFormat, level: tracing::Level) {
    // Other crates stay at warn whatever coffer's level: their debug output
    // can include request details that must never reach a log.
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,coffer={level}"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Panics go to the log as one JSON line with their place. The message is
/// logged only when it is a literal (`&'static str`): a formatted one may
/// quote data a mount was handling.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("(message not logged: it may quote data)");
        tracing::error!(%location, message, "panic (a bug in coffer)");
    }));
}

/// Runs until SIGTERM or SIGINT, then drains and removes the sockets.
pub async fn run(args: ServeArgs) -> Result<(), Error> {
    install_panic_hook();
    let metrics = Arc::new(Metrics::new());
    let versions = match &args.hmac_key_file {
        Some(path) => Versioner::from_file(path)?,
        None => {
            tracing::info!(
                "no --hmac-key-file: object versions use a random key and change when coffer restarts"
            );
            Versioner::random()?
        }
    };
    let mounter = Arc::new(Mounter::new(
        backends(&args.backends, args.max_response_bytes, metrics.clone()).map_err(Error::Flags)?,
        versions,
        args.max_response_bytes,
    ));
    let limits = Limits {
        max_concurrent_mounts: args.max_concurrent_mounts.max(1),
        mount_timeout: args.mount_timeout,
    };
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_mounts));

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(Error::Signal)?;

    let health_listener = health::bind(args.health_addr)
        .await
        .map_err(|source| Error::Health {
            addr: args.health_addr,
            source,
        })?;
    let listeners = server::bind_all(&args.socket_dir, &args.providers)?;
    let paths: Vec<_> = listeners.iter().map(|l| l.path.clone()).collect();
    let bound: Vec<_> = listeners
        .iter()
        .map(|l| (l.path.clone(), l.identity.clone()))
        .collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut servers = Vec::new();
    for listener in listeners {
        tracing::info!(provider = %listener.name, socket = %listener.path.display(), "serving");
        let (mounter, metrics, permits, limits) = (
            mounter.clone(),
            metrics.clone(),
            permits.clone(),
            limits.clone(),
        );
        let shutdown = stopped(stop_rx.clone());
        servers.push(tokio::spawn(async move {
            let name = listener.name.clone();
            if let Err(e) = server::serve(listener, mounter, metrics, permits, &limits, shutdown).await {
                tracing::error!(provider = %name, error = %crate::server::status::chain(&e), "socket server failed");
            }
        }));
    }
    let health = Health {
        sockets: paths.clone(),
        metrics: metrics.clone(),
    };
    let health_task = tokio::spawn(health::serve(
        health_listener,
        health,
        stopped(stop_rx.clone()),
    ));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        health = %args.health_addr,
        max_concurrent_mounts = limits.max_concurrent_mounts,
        mount_timeout_s = limits.mount_timeout.as_secs_f64(),
        "coffer ready"
    );

    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(
        signal,
        grace_s = args.shutdown_grace.as_secs_f64(),
        "shutting down: no new connections, draining mounts"
    );
    let _ = stop_tx.send(true);
    // Mounts still waiting for a slot get UNAVAILABLE, which the driver retries.
    permits.close();
    let drain = futures_util::future::join_all(servers);
    if tokio::time::timeout(args.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!("grace period over; mounts still running are abandoned");
    }
    health_task.abort();
    for (path, identity) in &bound {
        socket::remove(path, identity);
    }
    tracing::info!("stopped");
    Ok(())
}

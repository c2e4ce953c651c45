//! `coffer serve`: wires sockets, backends, health and signals together.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::backend::registry::BackendArgs;
use crate::cli::{LogFormat, ServeArgs};
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
}

/// The backend flags, with defaults that follow other `serve` flags: the
/// largest Vault answer read follows --max-response-bytes.
fn with_response_limit(args: &ServeArgs) -> BackendArgs {
    #[cfg_attr(
        not(feature = "vault"),
        expect(unused_mut, reason = "only the Vault flags follow it")
    )]
    let mut backends = args.backends.clone();
    #[cfg(feature = "vault")]
    if backends.vault.backend_max_response_bytes.is_none() {
        backends.vault.backend_max_response_bytes = Some(
            crate::backend::vault::args::default_max_body(args.max_response_bytes),
        );
    }
    backends
}

/// The backends this build has, configured from flags.
pub fn backends(args: &BackendArgs, metrics: &Arc<Metrics>) -> Backends {
    Backends::from(args.build(metrics))
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
        backends(&with_response_limit(&args), &metrics),
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
                tracing::error!(provider = %name, error = %crate::errors::chain(&e), "socket server failed");
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
    let sweeper = tokio::spawn(sweep(mounter.clone()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        health = %args.health_addr,
        worker_threads = args.worker_threads,
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
    sweeper.abort();
    for (path, identity) in &bound {
        socket::remove(path, identity);
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often what coffer keeps is swept of entries past their lifetime.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Every [`SWEEP_EVERY`], drops kept tokens, credentials and responses
/// whose time has passed (otherwise they would wait until their cache needs
/// the room). The tick also keeps the runtime's next timer within
/// [`SWEEP_EVERY`], so arming a backend request's timeout (30 s) does not
/// wake the I/O driver for an earlier deadline on every request: measured
/// one `eventfd` write and one `epoll_wait` fewer per mount.
async fn sweep(mounter: Arc<Mounter>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let gone = mounter.sweep();
        if gone > 0 {
            tracing::debug!(entries = gone, "swept expired cache entries");
        }
    }
}

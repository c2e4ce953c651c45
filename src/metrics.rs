//! Prometheus metrics: mounts by provider and gRPC code, mount duration,
//! in-flight mounts, backend requests by backend, operation and outcome,
//! `coffer_build_info`, and the standard `process_*` metrics (CPU, memory,
//! file descriptors, from the `metrics-process` crate). docs/operations.md
//! lists them all.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    provider: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

// Label values known at compile time are `&'static str`: a lookup then
// allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

/// The duration histogram has no `outcome`: one series set per operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    backend: &'static str,
    operation: &'static str,
}

/// Upper bounds of both duration histograms, in seconds: 10 buckets (plus
/// `+Inf`) from a warm cached mount (well under 5 ms) to the mount deadline
/// (100 s by default; kubelet gives up at 120 s).
pub const DURATION_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 100.0];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The standard process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, ...), read from
/// /proc by `metrics-process` at every scrape. Values the platform does not
/// give are left out.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = metrics_process::collector::collect();
        if let Some(v) = m.cpu_seconds_total {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_open_fds",
                "Number of open file descriptors.",
                m.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                m.max_fds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                m.virtual_memory_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                m.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                m.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                m.threads,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// One mount in `coffer_mounts_in_flight`, for as long as it lives.
#[must_use = "the mount is counted only while the guard lives"]
pub struct InFlight(Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// All of coffer's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// `process_*`, without the `coffer_` prefix (as every exporter names them).
    process: Registry,
    mounts: Family<MountLabels, Counter>,
    mount_duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    backend_requests: Family<BackendLabels, Counter>,
    backend_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    authority_rewrites: Counter<u64, AtomicU64>,
    cache_lookups: Family<CacheLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("coffer");
        let mounts = Family::<MountLabels, Counter>::default();
        let mount_duration =
            Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        let in_flight = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let backend_requests = Family::<BackendLabels, Counter>::default();
        let backend_duration =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        let authority_rewrites = Counter::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "build",
            "coffer's version and compiled-in backends (value 1)",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("backends", compiled_backends()),
            ]),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        registry.register(
            "cache_lookups",
            "Cache lookups by cache (vault_login, vault_dynamic, ...) and result (hit, miss)",
            cache_lookups.clone(),
        );
        registry.register(
            "mounts",
            "Mount calls by provider socket and gRPC code",
            mounts.clone(),
        );
        registry.register(
            "mount_duration_seconds",
            "Time to answer a Mount",
            mount_duration.clone(),
        );
        registry.register(
            "mounts_in_flight",
            "Mounts being served now",
            in_flight.clone(),
        );
        registry.register(
            "backend_requests",
            "Requests to backends by operation and outcome",
            backend_requests.clone(),
        );
        registry.register(
            "backend_request_duration_seconds",
            "Time of backend requests by operation, whatever the outcome",
            backend_duration.clone(),
        );
        registry.register(
            "authority_rewrites",
            "HTTP/2 header blocks whose :authority (socket path from drivers <= v1.5) was replaced by localhost",
            authority_rewrites.clone(),
        );
        Self {
            registry,
            process,
            mounts,
            mount_duration,
            in_flight,
            backend_requests,
            backend_duration,
            authority_rewrites,
            cache_lookups,
        }
    }

    /// Counts a mount in flight until the guard drops: also when the mount
    /// panics or the client goes away and its future is dropped.
    pub fn mount_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn mount_finished(&self, provider: &str, code: tonic::Code, elapsed: Duration) {
        self.mounts
            .get_or_create(&MountLabels {
                provider: provider.to_owned(),
                code: code_name(code),
            })
            .inc();
        self.mount_duration
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn backend_request(
        &self,
        backend: &'static str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let labels = BackendLabels {
            backend,
            operation,
            outcome,
        };
        self.backend_requests.get_or_create(&labels).inc();
        self.backend_duration
            .get_or_create(&OperationLabels {
                backend: labels.backend,
                operation: labels.operation,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }

    /// A credential cache lookup of `backend` (`result`: `hit` or `miss`),
    /// counted as cache `<backend>_credentials`.
    pub fn credential_cache(&self, backend: &str, result: &str) {
        let cache = match backend {
            "aws" => "aws_credentials",
            "vault" => "vault_credentials",
            _ => "other_credentials",
        };
        self.cache_lookup(cache, result == "hit");
    }

    pub fn authority_rewritten(&self, n: u64) {
        self.authority_rewrites.inc_by(n);
    }

    /// OpenMetrics text exposition: coffer's metrics, then `process_*`.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        let written = text::encode_registry(&mut out, &self.registry)
            .and_then(|()| text::encode_registry(&mut out, &self.process))
            .and_then(|()| text::encode_eof(&mut out));
        if written.is_err() {
            out.clear();
        }
        out
    }
}

/// The backends compiled into this binary, e.g. `vault,aws`.
fn compiled_backends() -> &'static str {
    match (cfg!(feature = "vault"), cfg!(feature = "aws")) {
        (true, true) => "vault,aws",
        (true, false) => "vault",
        (false, true) => "aws",
        (false, false) => "",
    }
}

/// The gRPC code as the driver's events and logs spell it (grpc-go's
/// `codes.Code` names: `OK`, `InvalidArgument`, `Canceled`, ...), so that
/// a `code` label matches the `code = ...` of a FailedMount event.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        let in_flight = m.mount_started();
        assert!(m.encode().contains("coffer_mounts_in_flight 1"));
        m.mount_finished("coffer", tonic::Code::Ok, Duration::from_millis(3));
        drop(in_flight);
        m.backend_request("vault", "login", "ok", Duration::from_millis(1));
        m.credential_cache("aws", "hit");
        let text = m.encode();
        for needle in [
            "coffer_mounts_total{provider=\"coffer\",code=\"OK\"} 1",
            "coffer_mount_duration_seconds_bucket",
            "coffer_mounts_in_flight 0",
            "coffer_backend_requests_total{backend=\"vault\",operation=\"login\",outcome=\"ok\"} 1",
            "coffer_authority_rewrites_total 0",
            "coffer_cache_lookups_total{cache=\"aws_credentials\",result=\"hit\"} 1",
            &format!(
                "coffer_build_info{{version=\"{}\",backends=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                compiled_backends()
            ),
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "one EOF, at the end:\n{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }

    #[test]
    fn process_metrics_are_this_process() {
        let text = Metrics::new().encode();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .unwrap()
        };
        // This test process holds at least stdin/stdout/stderr open and has
        // used some memory; its start time is after 2020.
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_start_time_seconds") > 1.577e9);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(
            !text.contains("coffer_process_"),
            "process_* must not be prefixed"
        );
    }

    #[test]
    fn duration_histograms_have_ten_buckets_and_no_outcome() {
        let m = Metrics::new();
        m.mount_finished("coffer", tonic::Code::Internal, Duration::from_millis(40));
        m.backend_request("vault", "read", "ok", Duration::from_millis(2));
        m.backend_request("vault", "read", "error", Duration::from_millis(2));
        let text = m.encode();
        let buckets = |metric: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{metric}_bucket{{")))
                .count()
        };
        assert_eq!(buckets("coffer_mount_duration_seconds"), 11, "{text}");
        // ok and error share one histogram: 10 buckets + +Inf, not twice that.
        assert_eq!(
            buckets("coffer_backend_request_duration_seconds"),
            11,
            "{text}"
        );
        assert!(
            text.contains("coffer_backend_request_duration_seconds_count{backend=\"vault\",operation=\"read\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("coffer_mounts_total{provider=\"coffer\",code=\"Internal\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn codes_are_spelled_as_grpc_go_spells_them() {
        // The driver's FailedMount events: "rpc error: code = InvalidArgument desc = ...".
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::DeadlineExceeded), "DeadlineExceeded");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }
}

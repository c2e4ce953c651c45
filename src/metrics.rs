//! Prometheus metrics: mounts by provider and gRPC code, mount duration,
//! in-flight mounts, backend requests by backend, operation and outcome.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

fn duration_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// All of coffer's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    mounts: Family<MountLabels, Counter>,
    mount_duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    backend_requests: Family<BackendLabels, Counter>,
    backend_duration: Family<BackendLabels, Histogram, fn() -> Histogram>,
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
            Family::<BackendLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        let authority_rewrites = Counter::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
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
            "Time of backend requests",
            backend_duration.clone(),
        );
        registry.register(
            "authority_rewrites",
            "HTTP/2 header blocks whose :authority (socket path from drivers <= v1.5) was replaced by localhost",
            authority_rewrites.clone(),
        );
        Self {
            registry,
            mounts,
            mount_duration,
            in_flight,
            backend_requests,
            backend_duration,
            authority_rewrites,
            cache_lookups,
        }
    }

    pub fn mount_started(&self) {
        self.in_flight.inc();
    }

    pub fn mount_finished(&self, provider: &str, code: tonic::Code, elapsed: Duration) {
        self.in_flight.dec();
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
            .get_or_create(&labels)
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

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The gRPC code's canonical name (`OK`, `INVALID_ARGUMENT`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.mount_started();
        m.mount_finished("coffer", tonic::Code::Ok, Duration::from_millis(3));
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
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

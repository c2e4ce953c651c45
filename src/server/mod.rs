//! The gRPC side: one Unix socket per provider name, each serving
//! `v1alpha1.CSIDriverProvider`. Thin: it times and counts mounts, turns
//! errors into statuses (in [`status`]) and hands everything else to `mount`.

pub mod authority;
pub mod socket;
pub mod status;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::grpc::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::grpc::{MountRequest, MountResponse, VersionRequest, VersionResponse};
use crate::metrics::Metrics;
use crate::mount::{self, Mounter};

/// Settings shared by every socket.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_concurrent_mounts: usize,
    pub mount_timeout: Duration,
}

/// The service behind one socket.
pub struct Provider {
    name: String,
    mounter: Arc<Mounter>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    mount_timeout: Duration,
}

impl Provider {
    pub fn new(
        name: String,
        mounter: Arc<Mounter>,
        metrics: Arc<Metrics>,
        permits: Arc<Semaphore>,
        mount_timeout: Duration,
    ) -> Self {
        Self {
            name,
            mounter,
            metrics,
            permits,
            mount_timeout,
        }
    }

    async fn mount_inner(
        &self,
        req: &MountRequest,
        deadline: Duration,
    ) -> Result<
        (
            MountResponse,
            Option<crate::request::MountRequest>,
            mount::Outcome,
        ),
        (status::Failure, Option<crate::request::MountRequest>),
    > {
        let parsed = match self.mounter.parse(req) {
            Ok(p) => p,
            Err(e) => return Err((status::Failure::Mount(e.into()), None)),
        };
        let backend = match self.mounter.backends().select(&self.name, &parsed.params) {
            Ok(b) => b.name(),
            Err(e) => return Err((status::Failure::Mount(e), Some(parsed))),
        };
        let until = Instant::now() + deadline;
        let work = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| status::Failure::ShuttingDown)?;
            self.mounter
                .mount(&self.name, &parsed, until)
                .await
                .map_err(status::Failure::Mount)
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(Ok((resp, outcome))) => Ok((resp, Some(parsed), outcome)),
            Ok(Err(f)) => Err((f, Some(parsed))),
            Err(_) => Err((
                status::Failure::Timeout {
                    after: deadline,
                    backend,
                },
                Some(parsed),
            )),
        }
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for Provider {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "coffer".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.metrics.mount_started();
        // Finish before the caller's deadline (kubelet's 2 minutes) so the
        // user sees our message rather than a bare DeadlineExceeded.
        let deadline = match grpc_timeout(request.metadata()) {
            Some(client) => self
                .mount_timeout
                .min(client.saturating_sub(Duration::from_millis(500))),
            None => self.mount_timeout,
        };
        // A panic is a bug; it fails this mount, not the process or the
        // connection (tonic would reset the stream without a status).
        let result = match AssertUnwindSafe(self.mount_inner(request.get_ref(), deadline))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(provider = %self.name, "mount panicked (a bug in coffer)");
                Err((status::Failure::Panic, None))
            }
        };
        let elapsed = started.elapsed();
        match result {
            Ok((response, parsed, outcome)) => {
                self.metrics
                    .mount_finished(&self.name, tonic::Code::Ok, elapsed);
                if let Some(reused) = outcome.reused {
                    self.metrics.cache_lookup("mount_responses", reused);
                }
                let pod = parsed.as_ref().map(|p| &p.pod);
                tracing::info!(
                    provider = %self.name,
                    pod.namespace = pod.map_or("", |p| p.namespace.as_str()),
                    pod.name = pod.map_or("", |p| p.name.as_str()),
                    spc = parsed.as_ref().and_then(|p| p.spc.as_deref()).unwrap_or(""),
                    backend = outcome.backend,
                    objects = outcome.objects,
                    bytes = outcome.bytes,
                    reused = outcome.reused.unwrap_or(false),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    code = "OK",
                    "mount"
                );
                Ok(Response::new(response))
            }
            Err((failure, parsed)) => {
                let status = failure.into_status();
                self.metrics
                    .mount_finished(&self.name, status.code(), elapsed);
                let pod = parsed.as_ref().map(|p| &p.pod);
                tracing::warn!(
                    provider = %self.name,
                    pod.namespace = pod.map_or("", |p| p.namespace.as_str()),
                    pod.name = pod.map_or("", |p| p.name.as_str()),
                    spc = parsed.as_ref().and_then(|p| p.spc.as_deref()).unwrap_or(""),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    code = crate::metrics::code_name(status.code()),
                    error = status.message(),
                    "mount"
                );
                Err(status)
            }
        }
    }
}

/// The `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A bound socket ready to serve.
pub struct Listener {
    pub name: String,
    pub path: PathBuf,
    /// The socket file this process bound (removed on exit only if unchanged).
    pub identity: socket::Identity,
    listener: tokio::net::UnixListener,
}

/// Binds every provider socket; on any failure, removes those already bound.
pub fn bind_all(dir: &std::path::Path, names: &[String]) -> Result<Vec<Listener>, socket::Error> {
    let mut bound: Vec<Listener> = Vec::new();
    for name in names {
        let result = socket::validate_name(name).and_then(|()| {
            let path = socket::socket_path(dir, name);
            socket::bind(&path).map(|(listener, identity)| Listener {
                name: name.clone(),
                path,
                identity,
                listener,
            })
        });
        match result {
            Ok(l) => bound.push(l),
            Err(e) => {
                for l in &bound {
                    socket::remove(&l.path, &l.identity);
                }
                return Err(e);
            }
        }
    }
    Ok(bound)
}

/// Serves one socket until `shutdown` resolves, then drains its connections.
pub async fn serve(
    listener: Listener,
    mounter: Arc<Mounter>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let provider = Provider::new(
        listener.name.clone(),
        mounter,
        metrics.clone(),
        permits,
        limits.mount_timeout,
    );
    let incoming = UnixListenerStream::new(listener.listener).map(move |conn| {
        conn.map(|s| authority::NormalizeAuthority::new(s).with_metrics(metrics.clone()))
    });
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            undecodable_request_is_invalid_argument as fn(_) -> _,
        ))
        .add_service(
            CsiDriverProviderServer::new(provider)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// A request that does not decode (a string field that is not UTF-8, a
/// truncated message) is the caller's error: tonic answers INTERNAL, the
/// driver should see INVALID_ARGUMENT. The message stays tonic's.
fn undecodable_request_is_invalid_argument(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = resp.headers();
    let internal = headers.get("grpc-status").is_some_and(|v| v == "13");
    let decode = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            m.starts_with("failed to decode Protobuf message")
                || m.starts_with("failed%20to%20decode")
        });
    if internal && decode {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{self, Backend, Plan};
    use crate::request::Parameters;

    /// A backend with a bug: planning panics.
    struct Buggy;

    impl Backend for Buggy {
        fn name(&self) -> &'static str {
            "buggy"
        }
        fn sockets(&self) -> &'static [&'static str] {
            &[]
        }
        #[expect(
            clippy::indexing_slicing,
            reason = "the bug this test needs: an index out of bounds"
        )]
        fn plan(&self, params: &Parameters, _: &str) -> Result<Plan, backend::Error> {
            let none: Vec<&str> = Vec::new();
            let i = params.iter().count();
            panic!("unreachable: {}", none[i]);
        }
    }

    #[tokio::test]
    async fn a_panicking_mount_answers_internal_and_is_not_left_in_flight() {
        let mut backends = mount::Backends::default();
        backends.add(Arc::new(Buggy));
        let mounter = Arc::new(Mounter::new(
            backends,
            mount::version::Versioner::random().unwrap(),
            mount::MAX_RESPONSE_BYTES,
        ));
        let metrics = Arc::new(Metrics::new());
        let provider = Provider::new(
            "coffer".into(),
            mounter,
            metrics.clone(),
            Arc::new(Semaphore::new(4)),
            Duration::from_secs(10),
        );
        let attributes = serde_json::json!({
            "backend": "buggy",
            "csi.storage.k8s.io/pod.name": "p",
            "csi.storage.k8s.io/pod.namespace": "n",
            "csi.storage.k8s.io/pod.uid": "u",
            "csi.storage.k8s.io/serviceAccount.name": "s",
        });
        let request = Request::new(MountRequest {
            attributes: attributes.to_string(),
            secrets: "null".into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: vec![],
        });
        let status = CsiDriverProvider::mount(&provider, request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{}", status.message());
        assert!(status.message().contains("a bug"), "{}", status.message());
        let text = metrics.encode();
        assert!(text.contains("coffer_mounts_in_flight 0"), "{text}");
        assert!(text.contains("code=\"Internal\""), "{text}");
    }

    #[test]
    fn grpc_timeout_units() {
        let mut m = tonic::metadata::MetadataMap::new();
        for (raw, want) in [
            ("120S", Some(Duration::from_secs(120))),
            ("2M", Some(Duration::from_secs(120))),
            ("500m", Some(Duration::from_millis(500))),
            ("1x", None),
            ("S", None),
        ] {
            m.insert("grpc-timeout", raw.parse().unwrap());
            assert_eq!(grpc_timeout(&m), want, "{raw}");
        }
    }
}

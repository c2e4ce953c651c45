//! The HTTP client for requests to one server a class names (Vault,
//! OpenBao), under the [policy](super): hyper-util's pooled HTTP/1.1
//! client over rustls, with the TLS configuration coffer built for the
//! class, and the proxy the environment names for the server
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read by
//! hyper-util's matcher): `https://` through a `CONNECT` tunnel (TLS end to
//! end with the server), `http://` sent to the proxy in absolute form.
//!
//! One client serves one server, so the route is decided once, when the
//! client is built, and a request costs no proxy matching and no URL
//! parsing: callers hand over a prepared [`http::Uri`]. The EKS Pod
//! Identity agent gets a client of its own ([`Client::http_only`]): plain
//! HTTP to a link-local address, never through a proxy.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::{
    self,
    connect::{Connected, Connection, HttpConnector, proxy::Tunnel},
};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{BodyTooLarge, POOL_IDLE, Policy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Why a request got no (acceptable) answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The whole request, its answer included, took longer than the policy allows.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection: refused, unreachable, TLS refused, the proxy refused, or too slow.
    #[error("cannot connect")]
    Connect(#[source] legacy::Error),
    /// The connection failed while the request was sent or its answer awaited.
    #[error("the request failed")]
    Request(#[source] legacy::Error),
    #[error("reading the response failed")]
    Read(#[source] hyper::Error),
    #[error(transparent)]
    TooLarge(#[from] BodyTooLarge),
}

impl Error {
    /// The request or its connection ran out of time.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Connect(e) => source_is::<ConnectTimeout>(e),
            _ => false,
        }
    }

    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }

    /// The pooled connection the request went out on had been closed by
    /// the server (idle timeout, restart, a load balancer): no answer came,
    /// and a new connection may well work. Not for connect errors (that
    /// connection was new) or timeouts.
    fn is_stale_connection(&self) -> bool {
        let source: &(dyn std::error::Error + 'static) = match self {
            Error::Request(e) => e,
            Error::Read(e) => e,
            _ => return false,
        };
        let mut current = Some(source);
        while let Some(err) = current {
            if let Some(h) = err.downcast_ref::<hyper::Error>()
                && (h.is_incomplete_message() || h.is_canceled())
            {
                return true;
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                )
            {
                return true;
            }
            current = err.source();
        }
        false
    }
}

fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<T>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// Connecting (TCP, the proxy's tunnel, TLS) took longer than the policy allows.
#[derive(Debug, thiserror::Error)]
#[error("connecting took longer than {0:?}")]
struct ConnectTimeout(Duration);

/// The proxy a route goes through: where, and its credentials.
#[derive(Clone)]
struct Proxy {
    uri: Uri,
    auth: Option<HeaderValue>,
}

/// How requests to the server travel.
#[derive(Clone)]
enum Route {
    Direct(HttpsConnector<HttpConnector>),
    /// `https://` through the proxy's `CONNECT` tunnel.
    Tunnel(HttpsConnector<Tunnel<HttpConnector>>),
    /// `http://` to the proxy, which forwards it.
    Forward(HttpConnector, Proxy),
}

/// Opens connections for hyper-util's pool along the route, within the
/// policy's connect timeout.
#[derive(Clone)]
struct Connector {
    route: Route,
    timeout: Duration,
}

/// A connection, and whether it leads to a forwarding proxy (requests on
/// it then carry the absolute URL).
struct Conn {
    io: Stream,
    forwarded: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each route's connector is always ready (HttpConnector is).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let connecting: Connecting = match &self.route {
            Route::Direct(https) => tls_or_plain(https, dst),
            Route::Tunnel(https) => tls_or_plain(https, dst),
            Route::Forward(tcp, proxy) => {
                let connect = tower::Service::call(&mut tcp.clone(), proxy.uri.clone());
                Box::pin(async move {
                    let io = connect.await.map_err(BoxError::from)?;
                    Ok(Conn {
                        io: MaybeHttpsStream::Http(io),
                        forwarded: true,
                    })
                })
            }
        };
        let limit = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(limit, connecting)
                .await
                .map_err(|_| BoxError::from(ConnectTimeout(limit)))?
        })
    }
}

/// A connection to `dst` through `https` (TLS for `https://`), directly
/// or through a tunnel.
fn tls_or_plain<C>(https: &HttpsConnector<C>, dst: Uri) -> Connecting
where
    HttpsConnector<C>: tower::Service<Uri, Response = Stream, Error = BoxError> + Clone,
    <HttpsConnector<C> as tower::Service<Uri>>::Future: Send + 'static,
{
    let connect = tower::Service::call(&mut https.clone(), dst);
    Box::pin(async move {
        connect.await.map(|io| Conn {
            io,
            forwarded: false,
        })
    })
}

/// A request to send: everything but the body is shared with the caller's
/// prepared copy (a [`Uri`] and [`HeaderValue`]s clone by reference count).
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a [(HeaderName, &'a HeaderValue)],
    pub body: Option<&'a Bytes>,
}

/// Requests to one server (scheme, host and port of `target`).
pub struct Client {
    /// Keeps connections alive between requests.
    pooled: legacy::Client<Connector, Full<Bytes>>,
    /// Keeps none: for the one retry after a pooled connection turned out closed.
    fresh: legacy::Client<Connector, Full<Bytes>>,
    /// `Proxy-Authorization` of a forwarding proxy with credentials.
    proxy_auth: Option<HeaderValue>,
    policy: Policy,
}

impl Client {
    /// A client for `target`, with `tls` for `https://`, routed through
    /// the proxy the environment names for it, if any.
    pub fn new(policy: &Policy, tls: rustls::ClientConfig, target: &Uri) -> Result<Self, String> {
        let proxy = Matcher::from_env().intercept(target).map(|i| Proxy {
            uri: i.uri().clone(),
            auth: i.basic_auth().cloned(),
        });
        Self::with_proxy(policy, tls, target, proxy)
    }

    /// A client for plain `http://` servers that never goes through a
    /// proxy (the EKS Pod Identity agent, link-local). It trusts no
    /// certificate, so an `https://` server fails as untrusted.
    pub fn http_only(policy: &Policy) -> Result<Self, String> {
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Self::with_proxy(policy, tls, &Uri::from_static("http://localhost"), None)
    }

    fn with_proxy(
        policy: &Policy,
        tls: rustls::ClientConfig,
        target: &Uri,
        proxy: Option<Proxy>,
    ) -> Result<Self, String> {
        let mut tcp = HttpConnector::new();
        // The scheme is checked by the TLS layer; TCP connects either.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1();
        let mut proxy_auth = None;
        let route = match proxy {
            None => Route::Direct(https.wrap_connector(tcp)),
            Some(p) if p.uri.scheme_str() != Some("http") => {
                return Err(format!(
                    "the proxy for {target} is not an http:// URL (coffer reaches proxies over plain HTTP; TLS to the server runs end to end through them)"
                ));
            }
            Some(p) if target.scheme() == Some(&http::uri::Scheme::HTTPS) => {
                let mut tunnel = Tunnel::new(p.uri, tcp);
                if let Some(auth) = p.auth {
                    tunnel = tunnel.with_auth(auth);
                }
                Route::Tunnel(https.wrap_connector(tunnel))
            }
            Some(p) => {
                proxy_auth = p.auth.clone().map(|mut a| {
                    a.set_sensitive(true);
                    a
                });
                Route::Forward(tcp, p)
            }
        };
        let connector = Connector {
            route,
            timeout: policy.connect_timeout,
        };
        let build = |idle: usize| {
            legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_max_idle_per_host(idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector.clone())
        };
        Ok(Self {
            pooled: build(usize::MAX),
            fresh: build(0),
            proxy_auth,
            policy: *policy,
        })
    }

    fn build(&self, req: &Request<'_>) -> http::Request<Full<Bytes>> {
        let body = req.body.cloned().map(Full::new).unwrap_or_default();
        let mut request = http::Request::new(body);
        *request.method_mut() = req.method.clone();
        *request.uri_mut() = req.uri.clone();
        let headers = request.headers_mut();
        for (name, value) in req.headers {
            headers.append(name, (*value).clone());
        }
        if let Some(auth) = &self.proxy_auth {
            headers.insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        request
    }

    /// Sends `req` and reads the answer (its body up to the policy's cap),
    /// all within the policy's request timeout. A request that failed on a
    /// pooled connection the server had closed is sent once more on a new
    /// one when `retry_stale` (logins and GETs; a PUT or POST may issue a
    /// credential, so it is not sent twice).
    pub async fn send(
        &self,
        req: &Request<'_>,
        retry_stale: bool,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let limit = self.policy.request_timeout;
        let exchange = async {
            match self.attempt(&self.pooled, req).await {
                Err(e) if retry_stale && e.is_stale_connection() => {
                    tracing::debug!("pooled connection was closed; retrying on a new one");
                    self.attempt(&self.fresh, req).await
                }
                other => other,
            }
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout(limit))?
    }

    async fn attempt(
        &self,
        client: &legacy::Client<Connector, Full<Bytes>>,
        req: &Request<'_>,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let response = client.request(self.build(req)).await.map_err(|e| {
            if e.is_connect() {
                Error::Connect(e)
            } else {
                Error::Request(e)
            }
        })?;
        let status = response.status();
        let body = read_capped(response.into_body(), self.policy.max_body).await?;
        Ok((status, body))
    }
}

/// Reads a body, refusing it as soon as it exceeds `limit` (by its
/// Content-Length, or by what has arrived).
async fn read_capped(mut body: hyper::body::Incoming, limit: usize) -> Result<Vec<u8>, Error> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyTooLarge { limit }.into());
    }
    // Room for what the server announced, up to 64 KiB: a larger answer
    // grows as it arrives, so an announced length costs nothing until sent.
    let announced = usize::try_from(body.size_hint().lower()).unwrap_or(0);
    let mut out = Vec::with_capacity(announced.min(64 * 1024));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Error::Read)?;
        if let Ok(chunk) = frame.into_data() {
            if out.len().saturating_add(chunk.len()) > limit {
                return Err(BodyTooLarge { limit }.into());
            }
            out.extend_from_slice(&chunk);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn tls() -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
    }

    fn policy(max_body: usize) -> Policy {
        Policy {
            max_body,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Reads one request head (up to the blank line); None when the peer closed.
    async fn read_head(conn: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    /// A server on 127.0.0.1 that hands each connection, numbered from 0, to `serve`.
    async fn server<F, Fut>(serve: F) -> (Uri, Arc<AtomicUsize>)
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(n, conn));
            }
        });
        (uri, count)
    }

    fn get(uri: &Uri) -> Request<'_> {
        static GET: Method = Method::GET;
        Request {
            method: &GET,
            uri,
            headers: &[],
            body: None,
        }
    }

    fn client(policy: &Policy, target: &Uri, proxy: Option<Proxy>) -> Client {
        Client::with_proxy(policy, tls(), target, proxy).unwrap()
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (uri, _) = server(|_, mut conn| async move {
            read_head(&mut conn).await;
            let _ = conn
                .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/steal\r\nContent-Length: 0\r\n\r\n")
                .await;
        })
        .await;
        let (status, _) = client(&policy(1024), &uri, None)
            .send(&get(&uri), true)
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 307);
    }

    #[tokio::test]
    async fn bodies_above_the_cap_are_refused_whether_announced_or_not() {
        for announced in [true, false] {
            let (uri, _) = server(move |_, mut conn| async move {
                read_head(&mut conn).await;
                let head: &[u8] = if announced {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
                };
                let _ = conn.write_all(head).await;
                let _ = conn.write_all(&[b'x'; 5000]).await;
            })
            .await;
            let err = client(&policy(1024), &uri, None)
                .send(&get(&uri), true)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::TooLarge(_)), "{err}");
            let (_, body) = client(&policy(8192), &uri, None)
                .send(&get(&uri), true)
                .await
                .unwrap();
            assert_eq!(body.len(), 5000);
        }
    }

    /// The first connection answers one request, then closes under the
    /// next one without answering; later connections answer.
    async fn closes_after_one_answer() -> (Uri, Arc<AtomicUsize>) {
        server(|n, mut conn| async move {
            read_head(&mut conn).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            if n == 0 {
                read_head(&mut conn).await;
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_request_on_a_pooled_connection_the_server_closed_is_sent_again_once_if_repeatable() {
        let (uri, connections) = closes_after_one_answer().await;
        let c = client(&policy(1024), &uri, None);
        c.send(&get(&uri), true).await.unwrap();
        let (status, body) = c.send(&get(&uri), true).await.unwrap();
        assert_eq!((status.as_u16(), body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(connections.load(Ordering::SeqCst), 2);

        let (uri, connections) = closes_after_one_answer().await;
        let c = client(&policy(1024), &uri, None);
        c.send(&get(&uri), false).await.unwrap();
        let err = c.send(&get(&uri), false).await.unwrap_err();
        assert!(!err.is_connect() && !err.is_timeout(), "{err:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout() {
        let (uri, _) = server(|_, mut conn| async move {
            read_head(&mut conn).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let quick = Policy {
            request_timeout: Duration::from_millis(200),
            ..policy(1024)
        };
        let err = client(&quick, &uri, None)
            .send(&get(&uri), true)
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
    }

    /// A proxy that keeps the head of each request it gets and answers `reply`.
    async fn recording_proxy(reply: &'static [u8]) -> (Uri, Arc<std::sync::Mutex<Vec<String>>>) {
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        let (proxy, _) = server(move |_, mut conn| {
            let seen = seen.clone();
            async move {
                if let Some(head) = read_head(&mut conn).await {
                    seen.lock().unwrap().push(head);
                }
                let _ = conn.write_all(reply).await;
            }
        })
        .await;
        (proxy, heads)
    }

    #[tokio::test]
    async fn http_goes_to_a_forwarding_proxy_with_the_absolute_url_and_its_credentials() {
        let (proxy, heads) =
            recording_proxy(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let target: Uri = "http://vault.internal:8200".parse().unwrap();
        let read: Uri = "http://vault.internal:8200/v1/secret/data/app"
            .parse()
            .unwrap();
        let auth = HeaderValue::from_static("Basic dTpw");
        let c = client(
            &policy(1024),
            &target,
            Some(Proxy {
                uri: proxy,
                auth: Some(auth),
            }),
        );
        let (status, _) = c.send(&get(&read), true).await.unwrap();
        assert_eq!(status.as_u16(), 200);
        let heads = heads.lock().unwrap();
        let head = heads.first().expect("the proxy got the request");
        assert!(
            head.starts_with("GET http://vault.internal:8200/v1/secret/data/app HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic dtpw\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn https_goes_through_a_connect_tunnel_and_a_refused_tunnel_is_a_connect_error() {
        let (proxy, heads) =
            recording_proxy(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
        let target: Uri = "https://vault.internal:8200".parse().unwrap();
        let read: Uri = "https://vault.internal:8200/v1/secret/data/app"
            .parse()
            .unwrap();
        let c = client(
            &policy(1024),
            &target,
            Some(Proxy {
                uri: proxy,
                auth: Some(HeaderValue::from_static("Basic dTpw")),
            }),
        );
        let err = c.send(&get(&read), true).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let heads = heads.lock().unwrap();
        let head = heads.first().expect("the proxy got the CONNECT");
        assert!(
            head.starts_with("CONNECT vault.internal:8200 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic dtpw\r\n"),
            "{head}"
        );
        // The server's path never reaches the proxy in the clear.
        assert!(!head.contains("secret/data"), "{head}");
    }

    #[test]
    fn a_proxy_that_is_not_plain_http_is_refused() {
        let target: Uri = "https://vault.internal:8200".parse().unwrap();
        let proxy = Proxy {
            uri: "https://proxy.internal:3128".parse().unwrap(),
            auth: None,
        };
        let err = Client::with_proxy(&policy(1024), tls(), &target, Some(proxy))
            .err()
            .expect("refused");
        assert!(err.contains("not an http:// URL"), "{err}");
    }
}

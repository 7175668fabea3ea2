//! hsm-server: the HTTPS serving that `hsm-node` and `hsm-proxy` share.
//!
//! Decides what a connection must do to be served — finish the TLS 1.3
//! handshake within `io_timeout`, send each request's headers within it,
//! move a byte at least every `idle_timeout`, and have a request in flight
//! at least every `idle_timeout` (an HTTP/2 connection's keep-alive PINGs
//! move bytes but are not use) — how many connections are
//! served at once (`max_connections`; more wait in the kernel's backlog),
//! HTTP/1.1 and HTTP/2 by ALPN with bounded headers, and how serving stops:
//! when `shutdown` completes the listener closes and in-flight requests get
//! `shutdown_grace` to finish. Never: what a request means (the caller's
//! handler) or what the TLS configuration trusts (the caller builds it).
//!
//! Metrics, named with the caller's prefix (documented in each binary's
//! metrics table): `{prefix}_connections` (gauge, open connections) and
//! `{prefix}_tls_handshake_failures_total` (counter).
//!
//! Also shared: how both create the files they write ([`private_fs`]).
#![forbid(unsafe_code)]

pub mod private_fs;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// SHA-256 fingerprint (hex) of the client's TLS certificate, when it
    /// presented one.
    pub fingerprint: Option<String>,
}

/// The answer type of every handler.
pub type Resp = Response<Full<Bytes>>;
/// A boxed handler future.
pub type RespFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;
/// A request handler.
pub type Handler = Arc<dyn Fn(Request<Incoming>, Arc<Peer>) -> RespFuture + Send + Sync>;

/// Connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub io_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
    /// Metric name prefix: `hsm_node`, `hsm_proxy`.
    pub metrics_prefix: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{hint}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
    pub hint: String,
}

/// Binds a listener; a port in use gets `in_use_hint` appended.
pub async fn bind(addr: SocketAddr, in_use_hint: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = if source.kind() == io::ErrorKind::AddrInUse {
            in_use_hint.to_string()
        } else {
            String::new()
        };
        BindError { addr, source, hint }
    })
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; serve on.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// Serves HTTPS on `listener` until `shutdown` completes, then drains.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    limits: Limits,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) {
    let connections = format!("{}_connections", limits.metrics_prefix);
    let handshake_failures = format!("{}_tls_handshake_failures_total", limits.metrics_prefix);
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let limit = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.io_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, addr) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or similar: back off, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, handler, builder) = (acceptor.clone(), handler.clone(), builder.clone());
        let watcher = graceful.watcher();
        let (connections, handshake_failures) = (connections.clone(), handshake_failures.clone());
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.io_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    metrics::counter!(handshake_failures).increment(1);
                    tracing::debug!(%addr, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    metrics::counter!(handshake_failures).increment(1);
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let fingerprint = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| fingerprint(c));
            let peer = Arc::new(Peer { addr, fingerprint });
            let activity = Arc::new(Activity::new());
            let io = TokioIo::new(IdleIo {
                inner: tls,
                activity: activity.clone(),
            });
            let requests = activity.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let head = req.method() == http::Method::HEAD;
                // In flight from here until the answer's body is sent (or dropped).
                let guard = InFlight::begin(requests.clone());
                let fut = handler(req, peer.clone());
                async move {
                    let resp = without_body_for_head(head, fut.await);
                    Ok::<_, Infallible>(resp.map(|body| Tracked {
                        inner: body,
                        guard: Some(guard),
                    }))
                }
            });
            metrics::gauge!(connections.clone()).increment(1.0);
            let conn = builder.serve_connection(io, svc).into_owned();
            let conn = watcher.watch(conn);
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            tracing::debug!(%addr, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = tokio::time::sleep(limits.idle_timeout / 4) => {
                        if activity.idle_for() >= limits.idle_timeout {
                            tracing::debug!(%addr, "closing idle connection");
                            break;
                        }
                    }
                }
            }
            metrics::gauge!(connections).decrement(1.0);
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
}

/// An answer to HEAD carries no body (RFC 9110 §9.3.2). hyper drops it over
/// HTTP/1.1 but sends it over HTTP/2, where the client then sees a
/// protocol error instead of the status.
fn without_body_for_head(head: bool, mut resp: Resp) -> Resp {
    if head {
        *resp.body_mut() = Full::new(Bytes::new());
    }
    resp
}

/// Serves plain HTTP/1.1 (for probes and Prometheus on loopback) until the
/// task is dropped.
pub async fn serve_plain(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((tcp, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let peer = Arc::new(Peer {
                addr,
                fingerprint: None,
            });
            let svc = service_fn(move |req: Request<Incoming>| {
                let fut = handler(req, peer.clone());
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// When a connection last moved a byte, and when it last had a request in
/// flight.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    last_request_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(0),
        }
    }
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    /// How long the connection has been idle: no byte moved, or no request
    /// in flight (whichever is longer).
    fn idle_for(&self) -> Duration {
        let since = |ms: &AtomicU64| {
            self.start
                .elapsed()
                .saturating_sub(Duration::from_millis(ms.load(Ordering::Relaxed)))
        };
        let bytes = since(&self.last_ms);
        let requests = if self.in_flight.load(Ordering::Relaxed) > 0 {
            Duration::ZERO
        } else {
            since(&self.last_request_ms)
        };
        bytes.max(requests)
    }
}

/// A request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.last_request_ms.store(a.now_ms(), Ordering::Relaxed);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_request_ms
            .store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request in flight until it is sent.
struct Tracked {
    inner: Full<Bytes>,
    guard: Option<InFlight>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            self.guard = None;
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An I/O stream that notes activity, for the idle timeout.
struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The process-wide Prometheus recorder, installed once by
/// [`install_metrics`]; [`render_metrics`] gives its text exposition.
static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the Prometheus recorder with real buckets for each histogram
/// named in `histograms`. Call once per process, before serving.
pub fn install_metrics(histograms: &[(&str, &[f64])]) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut b = PrometheusBuilder::new();
    for (name, buckets) in histograms {
        b = b
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .map_err(|e| e.to_string())?;
    }
    let recorder = b.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    let _ = METRICS.set(handle);
    Ok(())
}

/// The Prometheus text exposition (empty before [`install_metrics`]).
pub fn render_metrics() -> Option<String> {
    METRICS.get().map(|h| h.render())
}

/// The bearer token of a request, if it carries one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

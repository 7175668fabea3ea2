//! The network edge: the TLS 1.3 listener with required client
//! certificates, HTTP/1.1 and HTTP/2 by ALPN, connection limits and
//! timeouts, the optional plain health/metrics listener, and graceful
//! shutdown.
//!
//! Decides: what a connection must do to be served (finish the handshake
//! with a certificate from the client CA within `io_timeout_secs`, send
//! headers within it, stay active within `idle_timeout_secs`), how many
//! connections are served at once, and how the node stops (SIGTERM/SIGINT:
//! health turns not-ready, the listener closes, in-flight requests finish
//! within `shutdown_grace_secs`). Never: what a request means (`service`).

use crate::layout::NodeDir;
use crate::metrics as m;
use crate::service::{edge, Node, Peer};
use http::{Method, Request};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::WebPkiClientVerifier;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {message}")]
    Tls { path: String, message: String },
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: std::net::SocketAddr,
        source: io::Error,
        hint: &'static str,
    },
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls {
        path: path.display().to_string(),
        message: format!("{e} (the node's TLS files are made by `hsm-node init`)"),
    })
}

/// The TLS server configuration: TLS 1.3 only, client certificates from
/// the node's client CA required, ALPN h2 then http/1.1.
pub fn tls_config(dir: &NodeDir) -> Result<rustls::ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let bad = |p: &std::path::Path, m: String| ServeError::Tls {
        path: p.display().to_string(),
        message: m,
    };
    let cert_path = dir.server_cert();
    let key_path = dir.server_key();
    let ca_path = dir.client_ca();
    let chain = rustls_pemfile::certs(&mut &read_pem(&cert_path)?[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&cert_path, "no certificate in the file".into()));
    }
    let key = rustls_pemfile::private_key(&mut &read_pem(&key_path)?[..])
        .map_err(|e| bad(&key_path, e.to_string()))?
        .ok_or_else(|| bad(&key_path, "no private key in the file".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &read_pem(&ca_path)?[..]) {
        let c = c.map_err(|e| bad(&ca_path, e.to_string()))?;
        roots.add(c).map_err(|e| bad(&ca_path, e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(&ca_path, e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&cert_path, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(&key_path, e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Binds a listener, with a hint for the usual mistake.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = if source.kind() == io::ErrorKind::AddrInUse {
            " (the port is in use: another node or program listens there; change `listen` in node.json or pass --listen)"
        } else {
            ""
        };
        ServeError::Bind { addr, source, hint }
    })
}

/// Serves until SIGTERM or SIGINT, then drains. `listener` is already bound.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    metrics_listener: Option<TcpListener>,
) {
    let s = &node.settings;
    let io_timeout = Duration::from_secs(s.io_timeout_secs);
    let idle_timeout = Duration::from_secs(s.idle_timeout_secs);
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let limit = Arc::new(Semaphore::new(s.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(io_timeout)
        .max_buf_size(s.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    if let Some(ml) = metrics_listener {
        tokio::spawn(serve_plain(node.clone(), ml));
    }
    let sweeper = tokio::spawn(purge_sweeper(node.clone()));
    let tamper = tokio::spawn(tamper_trigger(node.clone()));

    node.set_ready(true);
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    let shutdown = shutdown_signal();
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
        let acceptor = acceptor.clone();
        let node = node.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(io_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    m::handshake_failure();
                    tracing::debug!(%addr, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    m::handshake_failure();
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let Some(fingerprint) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::pki::fingerprint(c))
            else {
                return;
            };
            let peer = Arc::new(Peer { fingerprint });
            let activity = Arc::new(Activity::new());
            let io = TokioIo::new(IdleIo {
                inner: tls,
                activity: activity.clone(),
            });
            let svc = service_fn(move |req: Request<Incoming>| {
                let node = node.clone();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(node.handle(req, peer).await) }
            });
            m::connections(1.0);
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
                    _ = tokio::time::sleep(idle_timeout / 4) => {
                        if activity.idle_for() >= idle_timeout {
                            tracing::debug!(%addr, "closing idle connection");
                            break;
                        }
                    }
                }
            }
            m::connections(-1.0);
        });
    }
    node.set_ready(false);
    sweeper.abort();
    tamper.abort();
    drop(listener);
    let grace = Duration::from_secs(node.settings.shutdown_grace_secs);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    tracing::info!("stopped");
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the node can only be killed; serve on.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// The tamper trigger: SIGUSR2 zeroizes the node at once, as a tamper
/// event does on the seed appliance (wire it to a chassis or enclosure
/// sensor, or send it from a monitoring agent).
async fn tamper_trigger(node: Arc<Node>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    while usr2.recv().await.is_some() {
        tracing::error!("tamper event (SIGUSR2): zeroizing");
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.zeroize("tamper: SIGUSR2")).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "zeroization failed"),
            Err(e) => tracing::error!(error = %e, "zeroization task failed"),
        }
    }
}

/// Purges soft-deleted keys whose recovery window has passed, and drops
/// tombstones past their retention, every ten minutes.
async fn purge_sweeper(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let n = node.clone();
        let _ = tokio::task::spawn_blocking(move || {
            n.purge_due();
            n.drop_old_tombstones();
        })
        .await;
    }
}

/// Plain HTTP/1.1 for probes and Prometheus: `GET /health` and
/// `GET /metrics` only.
async fn serve_plain(node: Arc<Node>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let node = node.clone();
                async move {
                    let r = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/health") => node.health(),
                        (&Method::GET, "/metrics") => m::render(),
                        _ => edge::error(&edge::ApiError::new(
                            hsm_api::ErrorCode::NotFound,
                            "only /health and /metrics",
                        )),
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
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

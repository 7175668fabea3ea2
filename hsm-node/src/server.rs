//! The node's network edge: the TLS configuration (TLS 1.3, a client
//! certificate from the node's client CA required), the node's settings
//! turned into `hsm-server` limits, the optional plain health/metrics
//! listener, the background sweeper, the tamper trigger, and the stop
//! sequence (SIGTERM/SIGINT: health turns not-ready, the listener closes,
//! in-flight requests finish within `shutdown_grace_secs`). The serving
//! itself is `hsm-server`'s. Never: what a request means (`service`).

use crate::layout::NodeDir;
use crate::service::{edge, Node, Peer};
use http::{Method, Request};
use hyper::body::Incoming;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {message}")]
    Tls { path: String, message: String },
    #[error("{0}")]
    Bind(String),
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
    hsm_server::bind(
        addr,
        " (the port is in use: another node or program listens there; change `listen` in node.json or pass --listen)",
    )
    .await
    .map_err(|e| ServeError::Bind(e.to_string()))
}

/// Serves until SIGTERM or SIGINT, then drains. `listener` is already bound.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    metrics_listener: Option<TcpListener>,
) {
    let s = &node.settings;
    let limits = hsm_server::Limits {
        io_timeout: Duration::from_secs(s.io_timeout_secs),
        idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        max_connections: s.max_connections,
        max_header_bytes: s.max_header_bytes,
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        metrics_prefix: "hsm_node",
    };
    let plain = metrics_listener.map(|ml| {
        let node = node.clone();
        let handler: hsm_server::Handler = Arc::new(move |req, _peer| {
            let node = node.clone();
            Box::pin(async move {
                match (req.method(), req.uri().path()) {
                    (&Method::GET, "/health") => node.health(),
                    (&Method::GET, "/metrics") => node.metrics(),
                    _ => edge::error(&edge::ApiError::new(
                        hsm_api::ErrorCode::NotFound,
                        "only /health and /metrics",
                    )),
                }
            })
        });
        tokio::spawn(hsm_server::serve_plain(ml, handler))
    });
    let sweeper = tokio::spawn(purge_sweeper(node.clone()));
    let tamper = tokio::spawn(tamper_trigger(node.clone()));
    let handler: hsm_server::Handler = {
        let node = node.clone();
        Arc::new(move |req: Request<Incoming>, peer: Arc<hsm_server::Peer>| {
            let node = node.clone();
            Box::pin(async move {
                // The TLS layer requires a client certificate, so there is
                // always a fingerprint; an empty one matches no partition.
                let peer = Arc::new(Peer {
                    fingerprint: peer.fingerprint.clone().unwrap_or_default(),
                });
                node.handle(req, peer).await
            })
        })
    };
    // It may have missed changes while it was away: behind until a resync
    // round includes it (`service::sync`).
    node.mark_started();
    node.set_ready(true);
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    let drain_node = node.clone();
    let shutdown = async move {
        hsm_server::shutdown_signal().await;
        drain_node.set_ready(false);
    };
    hsm_server::serve_tls(listener, tls, limits, handler, shutdown).await;
    sweeper.abort();
    tamper.abort();
    if let Some(p) = plain {
        p.abort();
    }
    tracing::info!("stopped");
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
/// tombstones past their retention, every ten minutes; drops pending
/// versions past their deadline every tenth of `pending_ttl_secs`.
async fn purge_sweeper(node: Arc<Node>) {
    let every = Duration::from_secs(node.settings.pending_ttl_secs.max(10) / 10);
    let mut pending = tokio::time::interval(every);
    let mut purge = tokio::time::interval(Duration::from_secs(600));
    loop {
        let n = node.clone();
        tokio::select! {
            _ = pending.tick() => {
                let _ = tokio::task::spawn_blocking(move || n.drop_expired_pending()).await;
            }
            _ = purge.tick() => {
                let _ = tokio::task::spawn_blocking(move || {
                    n.purge_due();
                    n.drop_old_tombstones();
                })
                .await;
            }
        }
    }
}

//! The node's network edge: serving with the TLS configuration of `tls`,
//! the node's settings turned into `hsm-server` limits, the optional plain
//! health/metrics listener, the background sweeper, the tamper trigger, and
//! the stop sequence (SIGTERM/SIGINT: health turns not-ready, the listener closes,
//! in-flight requests finish within `shutdown_grace_secs`). The serving
//! itself is `hsm-server`'s. Never: what a request means (`service`).

use crate::service::{edge, Node, Peer};
use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Bind(String),
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

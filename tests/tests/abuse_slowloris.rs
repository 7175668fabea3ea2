//! Slowloris: many connections to a node and to the proxy's listener that
//! send nothing, a partial TLS ClientHello, or a TLS handshake followed by
//! partial HTTP/1.1 request headers, one byte a second. Each must be closed
//! by the server after its handshake/header deadline (`hsm_server::Limits::
//! io_timeout`: 10 s for both, node.json's `io_timeout_secs` default and the
//! proxy's fixed value), and meanwhile a normal client, also opening new
//! connections, gets answers with bounded latency. Afterwards the servers'
//! open descriptors are back near where they were.
//!
//! A second test holds HTTP/2 connections that send no request (one answers
//! the keep-alive PINGs) and checks they are closed after `idle_timeout`.
//!
//! `HSM_SLOWLORIS_CONNS` sets the connections per server (default 200,
//! capped well within `ulimit -n`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;

use abuse::{fd_limit, open_fds, tls_config, Latencies};
use hsm_api::{Client, Curve, KeyCreateParameters, Role, SignatureAlgorithm};
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The servers' handshake/header deadline (see the module comment).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a slow connection may live at most before the test calls it
/// unbounded.
const CAP: Duration = Duration::from_secs(25);

#[derive(Debug, Clone, Copy)]
enum Slow {
    /// TCP only; nothing sent.
    Silent,
    /// The first bytes of a ClientHello, then one more byte a second.
    PartialHello,
    /// A whole TLS handshake, then request headers one byte a second.
    PartialHeaders,
}

/// Holds one slow connection open as long as the server allows; returns
/// how long the server kept it.
async fn slow_connection(
    addr: String,
    kind: Slow,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let tcp = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
    let tick = Duration::from_secs(1);
    match kind {
        Slow::Silent | Slow::PartialHello => {
            let mut hello = Vec::new();
            let mut conn =
                rustls::ClientConnection::new(cfg, ServerName::try_from("127.0.0.1").unwrap())
                    .map_err(|e| e.to_string())?;
            conn.write_tls(&mut hello).map_err(|e| e.to_string())?;
            let (mut r, mut w) = tcp.into_split();
            let mut sent = if matches!(kind, Slow::PartialHello) {
                5
            } else {
                0
            };
            w.write_all(&hello[..sent])
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            loop {
                tokio::select! {
                    r = r.read(&mut buf) => match r {
                        // Closed (or an alert, then closed): the server gave up on us.
                        Ok(0) | Err(_) => return Ok(started.elapsed()),
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(tick) => {
                        if started.elapsed() > CAP {
                            return Err(format!("{kind:?} still open after {CAP:?}"));
                        }
                        // Never the whole hello: one byte short at most.
                        if matches!(kind, Slow::PartialHello) && sent + 1 < hello.len() {
                            if w.write_all(&hello[sent..sent + 1]).await.is_err() {
                                return Ok(started.elapsed());
                            }
                            sent += 1;
                        }
                    }
                }
            }
        }
        Slow::PartialHeaders => {
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let (mut r, mut w) = tokio::io::split(tls);
            w.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
                .await
                .map_err(|e| e.to_string())?;
            w.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            loop {
                tokio::select! {
                    r = r.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Ok(started.elapsed()),
                        Ok(n) => {
                            // hyper may answer 408 before closing.
                            let t = String::from_utf8_lossy(&buf[..n]).to_string();
                            if !t.starts_with("HTTP/1.1 4") {
                                return Err(format!("unexpected answer to partial headers: {t}"));
                            }
                        }
                    },
                    _ = tokio::time::sleep(tick) => {
                        if started.elapsed() > CAP {
                            return Err(format!("{kind:?} still open after {CAP:?}"));
                        }
                        if w.write_all(b"a").await.is_err() || w.flush().await.is_err() {
                            return Ok(started.elapsed());
                        }
                    }
                }
            }
        }
    }
}

/// Calls `sign` every 50 ms until `stop`, on `make()`'s client, a fresh one
/// (a new TLS connection) every 10th call.
fn normal_client(
    make: impl Fn() -> Client + Send + 'static,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Latencies, Vec<String>)> {
    tokio::spawn(async move {
        let mut lat = Latencies::default();
        let mut errors = Vec::new();
        let mut c = make();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if i.is_multiple_of(10) {
                c = make();
            }
            i += 1;
            let t = Instant::now();
            let r = c
                .sign("ec", None, SignatureAlgorithm::Es256, &[7u8; 32])
                .await;
            lat.push(t.elapsed());
            if let Err(e) = r {
                errors.push(e.to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (lat, errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_closed_and_normal_clients_are_served() {
    let limit = fd_limit();
    let want: usize = std::env::var("HSM_SLOWLORIS_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Two servers, one descriptor each side per connection, plus margin:
    // stay within a quarter of the limit.
    let per_server = want.min(((limit as usize).saturating_sub(256)) / 8).max(10);

    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let node = &nodes[0];
    let node_pid = node.pid().unwrap();
    let proxy_pid = abuse::proxy_pid(&proxy);
    let node_fds_before = open_fds(node_pid);
    let proxy_fds_before = open_fds(proxy_pid);

    let proxy_addr = proxy.url.trim_start_matches("https://").to_string();
    let app = node.pki.cert("app");
    let node_cfg = tls_config(&node.pki.ca(), Some((&app.0, &app.1)), &[b"http/1.1"]);
    let proxy_cfg = tls_config(&proxy.ca, None, &[b"http/1.1"]);

    // Normal clients: one direct (mTLS, crypto user), one through the proxy.
    let stop = Arc::new(AtomicBool::new(false));
    let direct = {
        let pki = node.pki.clone();
        let base = node.base_url();
        let token = node.user().await.unwrap().token();
        normal_client(
            move || {
                let (c, k) = pki.cert("app");
                let cfg =
                    hsm_api::ClientConfig::from_files(base.clone(), &pki.ca(), Some((&c, &k)))
                        .unwrap();
                let client = Client::new(&cfg).unwrap();
                client.set_token(token.clone());
                client
            },
            stop.clone(),
        )
    };
    let via_proxy = {
        let (url, ca) = (proxy.url.clone(), proxy.ca.clone());
        let token = proxy.login(Role::CryptoUser).await.unwrap().token();
        normal_client(
            move || {
                let cfg = hsm_api::ClientConfig::from_files(url.clone(), &ca, None).unwrap();
                let client = Client::new(&cfg).unwrap();
                client.set_token(token.clone());
                client
            },
            stop.clone(),
        )
    };

    let started = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    let kinds = [Slow::Silent, Slow::PartialHello, Slow::PartialHeaders];
    for i in 0..per_server {
        let kind = kinds[i % kinds.len()];
        slow.spawn({
            let (a, c) = (node.addr.clone(), node_cfg.clone());
            async move { ("node", kind, slow_connection(a, kind, c).await) }
        });
        slow.spawn({
            let (a, c) = (proxy_addr.clone(), proxy_cfg.clone());
            async move { ("proxy", kind, slow_connection(a, kind, c).await) }
        });
    }
    // While they hang on, the node holds them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node_fds_during = open_fds(node_pid);
    let proxy_fds_during = open_fds(proxy_pid);

    let mut kept = Latencies::default();
    let mut failures = Vec::new();
    while let Some(r) = slow.join_next().await {
        let (who, kind, r) = r.unwrap();
        match r {
            Ok(d) => kept.push(d),
            Err(e) => failures.push(format!("{who} {kind:?}: {e}")),
        }
    }
    let all_closed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Latencies::default();
    let mut errors = Vec::new();
    for h in [direct, via_proxy] {
        let (l, e) = h.await.unwrap();
        lat.0.extend(l.0);
        errors.extend(e);
    }
    assert!(
        failures.is_empty(),
        "{} slow connections misbehaved: {failures:?}",
        failures.len()
    );
    // Closed by the deadline, not before it (then it would be something else).
    assert!(
        kept.max() < IO_TIMEOUT + Duration::from_secs(8),
        "slow connections held too long: {}",
        kept.summary()
    );
    assert!(
        kept.quantile(0.0) >= IO_TIMEOUT - Duration::from_secs(2),
        "slow connections closed before the deadline: {}",
        kept.summary()
    );
    assert!(errors.is_empty(), "normal clients failed: {errors:?}");
    assert!(lat.len() > 50, "too few normal requests: {}", lat.len());
    assert!(
        lat.quantile(0.99) < Duration::from_secs(1),
        "normal clients: {}",
        lat.summary()
    );
    // The node's descriptors went up with the slow connections, and back.
    assert!(
        node_fds_during >= node_fds_before + per_server / 2,
        "{node_fds_before} -> {node_fds_during}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut node_fds_after, mut proxy_fds_after) = (open_fds(node_pid), open_fds(proxy_pid));
    while (node_fds_after > node_fds_before + 10 || proxy_fds_after > proxy_fds_before + 10)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (node_fds_after, proxy_fds_after) = (open_fds(node_pid), open_fds(proxy_pid));
    }
    assert!(
        node_fds_after <= node_fds_before + 10,
        "node fds {node_fds_before} -> {node_fds_after}"
    );
    assert!(
        proxy_fds_during >= proxy_fds_before + per_server / 2,
        "{proxy_fds_before} -> {proxy_fds_during}"
    );
    assert!(
        proxy_fds_after <= proxy_fds_before + 10,
        "proxy fds {proxy_fds_before} -> {proxy_fds_after}"
    );
    assert!(abuse::alive(node_pid) && abuse::alive(proxy_pid));
    println!(
        "abuse_slowloris: ulimit -n {limit}; {per_server} slow connections each to a node and the proxy (silent / partial ClientHello / partial headers), all closed in {:?}; held {}; fds node {node_fds_before} -> {node_fds_during} -> {node_fds_after}, proxy {proxy_fds_before} -> {proxy_fds_during} -> {proxy_fds_after}; normal clients: {}, 0 errors",
        all_closed,
        kept.summary().replace("requests", "connections"),
        lat.summary()
    );
}

/// HTTP/2 connections that never send a request: one whose client stack
/// answers the server's keep-alive PINGs (any real HTTP/2 client does), one
/// that sends the preface and then nothing. Both must be closed after
/// `idle_timeout_secs`, set to 32 here: above the server's 30 s PING
/// interval, so the PINGs are exchanged before the deadline (they used to
/// count as activity, and such a connection was kept forever). About 33 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_after_idle_timeout() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut node = TestNode::start().await.unwrap();
    node.kill();
    let settings = node.dir.join("node.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    let idle = Duration::from_secs(32);
    s["idle_timeout_secs"] = serde_json::json!(idle.as_secs());
    std::fs::write(&settings, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    node.run().await.unwrap();
    let app = node.pki.cert("app");
    let cfg = tls_config(&node.pki.ca(), Some((&app.0, &app.1)), &[b"h2"]);
    let started = Instant::now();

    // A real HTTP/2 client: hyper's connection task answers PINGs.
    let tls = abuse::connect(&node.addr, cfg.clone()).await.unwrap();
    let (_sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tls))
        .await
        .unwrap();
    let answering = tokio::spawn(async move {
        let _ = conn.await;
        started.elapsed()
    });
    // The preface and an empty SETTINGS frame, then silence.
    let mut raw = abuse::connect(&node.addr, cfg).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let silent = tokio::spawn(async move {
        let mut b = [0u8; 1024];
        loop {
            match raw.read(&mut b).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    });
    // The idle check runs every idle_timeout / 4.
    let bound = idle + idle / 4 + Duration::from_secs(3);
    let silent = tokio::time::timeout(bound, silent)
        .await
        .map(|r| r.unwrap());
    let answering = tokio::time::timeout(bound, answering)
        .await
        .map(|r| r.unwrap());
    println!(
        "abuse_slowloris HTTP/2 idle (idle_timeout {idle:?}): silent connection closed after {silent:?}; PING-answering connection closed after {answering:?}"
    );
    assert!(
        silent.as_ref().is_ok_and(|d| *d >= idle),
        "silent h2 connection: {silent:?}"
    );
    assert!(
        answering.as_ref().is_ok_and(|d| *d >= idle),
        "PING-answering h2 connection kept: {answering:?}"
    );
}

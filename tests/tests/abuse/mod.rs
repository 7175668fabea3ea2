//! Helpers shared by the abuse suites (`abuse_*.rs`): raw TLS connections
//! with a chosen ALPN and identity, hand-written HTTP/1.1 requests and a
//! small response reader, latency recording, and what a well-formed answer
//! of the dialect is.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use hsm_api::{ErrorBody, ErrorCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client TLS configuration: trusts `ca`, presents `identity` (PEM cert
/// and key files) when given, offers `alpn`.
pub fn tls_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &std::fs::read(ca).unwrap()[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match identity {
        None => b.with_no_client_auth(),
        Some((c, k)) => {
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut &std::fs::read(c).unwrap()[..])
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut &std::fs::read(k).unwrap()[..])
                    .unwrap()
                    .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// Connects over TCP and completes a TLS handshake (to `127.0.0.1`).
pub async fn connect(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(cfg).connect(name, tcp).await
}

/// An HTTP/1.1 answer read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no answer was read.
#[derive(Debug)]
pub enum RawError {
    /// The server closed (or reset) the connection without a whole answer.
    Closed(String),
    /// No whole answer within the deadline.
    Timeout,
    /// Bytes that are not an HTTP/1.1 answer.
    Garbled(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `request` (a whole HTTP/1.1 request, head and body) and reads one
/// answer, within `deadline`.
pub async fn http1<S>(
    s: &mut S,
    request: &[u8],
    deadline: Duration,
) -> Result<RawResponse, RawError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let work = async {
        // The server may answer (and close) before it read everything.
        let write_err = s.write_all(request).await.err();
        let _ = s.flush().await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            match s.read(&mut chunk).await {
                Ok(0) => {
                    return Err(RawError::Closed(format!(
                        "closed after {} bytes of answer; write error: {write_err:?}",
                        buf.len()
                    )))
                }
                Err(e) => {
                    return Err(RawError::Closed(format!(
                        "read error after {} bytes of answer: {e}; write error: {write_err:?}",
                        buf.len()
                    )))
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let (proto, code) = (parts.next(), parts.next());
        if proto != Some("HTTP/1.1") && proto != Some("HTTP/1.0") {
            return Err(RawError::Garbled(status_line.to_string()));
        }
        let status: u16 = code
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| RawError::Garbled(status_line.to_string()))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = buf[head_end + 4..].to_vec();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        // The answer to HEAD has no body, whatever its content-length says.
        let head_request = request.starts_with(b"HEAD ");
        if head_request {
            body.clear();
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| RawError::Garbled(format!("content-length {len}")))?;
            while body.len() < len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Err(RawError::Closed("short body".into())),
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            body.truncate(len);
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            // Not used by these servers (every answer is a full body).
            return Err(RawError::Garbled("chunked answer".into()));
        }
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(RawError::Timeout),
    }
}

/// A whole HTTP/1.1 request with a body and `Content-Length`.
pub fn request1(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// What an answer of the dialect must look like: a success (2xx, a JSON body
/// or none), or an error body `{"error":{"code","message"}}` with a known
/// code whose status is the answer's status. Returns the code, if an error.
pub fn well_formed(status: u16, body: &[u8]) -> Result<Option<ErrorCode>, String> {
    if (200..300).contains(&status) {
        if body.is_empty() || serde_json::from_slice::<serde_json::Value>(body).is_ok() {
            return Ok(None);
        }
        return Err(format!(
            "{status} with a body that is not JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    let e: ErrorBody = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{status} without an error body ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    let code = ErrorCode::parse(&e.error.code)
        .ok_or_else(|| format!("{status}: unknown code {}", e.error.code))?;
    if code.status() != status {
        return Err(format!(
            "{status} with code {code} (whose status is {})",
            code.status()
        ));
    }
    if e.error.message.is_empty() {
        return Err(format!("{status} {code} with an empty message"));
    }
    if status >= 500 && status != 503 {
        return Err(format!("{status} {code}: {}", e.error.message));
    }
    Ok(Some(code))
}

/// Latencies of a set of requests, for the one-line summaries.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn time<T>(&mut self, started: Instant, v: T) -> T {
        self.0.push(started.elapsed());
        v
    }
    pub fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn summary(&self) -> String {
        format!(
            "{} requests, p50 {:?}, p99 {:?}, max {:?}",
            self.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.max()
        )
    }
}

/// Whether a process is still alive (by PID).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // The state follows the command in parentheses; Z is a zombie.
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The soft limit on open files of this process.
pub fn fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(1024)
}

/// The sum of every series of a Prometheus metric in a text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A node's `/metrics` over its TLS listener, as client `app`.
pub async fn node_metrics(node: &hsm_tests::TestNode) -> String {
    let (c, k) = node.pki.cert("app");
    let cfg = hsm_api::ClientConfig::from_files(
        format!("https://{}", node.addr),
        &node.pki.ca(),
        Some((&c, &k)),
    )
    .unwrap();
    let client = hsm_api::Client::new(&cfg).unwrap();
    let (st, body) = client
        .raw(http::Method::GET, "/metrics", None, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// Inventory summaries of every node (as the crypto officer, directly).
pub async fn inventories(nodes: &[hsm_tests::TestNode]) -> Vec<hsm_api::InventorySummary> {
    let mut v = Vec::new();
    for n in nodes {
        v.push(n.officer().await.unwrap().inventory().await.unwrap());
    }
    v
}

/// The PID of a test proxy: the process whose command line names its
/// configuration file (found in /proc; never used to signal anything).
pub fn proxy_pid(proxy: &hsm_tests::TestProxy) -> u32 {
    let cfg = proxy.dir.join("proxy.toml");
    let cfg = cfg.to_string_lossy();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(cfg.as_ref()))
                .unwrap_or(false)
        })
        .expect("the proxy process")
}

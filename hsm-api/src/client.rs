//! A typed async client for the dialect, over HTTPS with mutual TLS.
//!
//! One [`Client`] holds one connection pool (HTTP/2 when the server offers
//! it by ALPN, else HTTP/1.1 keep-alive) and one bearer token. Every call has
//! a deadline (`ClientConfig::timeout`) that covers connecting, sending and
//! reading the whole answer. The client never retries: retry policy belongs
//! to the caller (the proxy's failover, a test's loop).

use crate::alg::{EncryptionAlgorithm, MacAlgorithm, Role, SignatureAlgorithm};
use crate::error::ErrorCode;
use crate::route::{KeyOp, Route};
use crate::types::*;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What can go wrong on a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The client could not be built (certificate files, URL).
    #[error("client configuration: {0}")]
    Config(String),
    /// No connection could be made (TCP or TLS): the request was never sent.
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// The request was sent (or may have been) but no whole answer came back.
    #[error("transport to {url}: {message}")]
    Transport { url: String, message: String },
    /// The deadline passed before the whole answer arrived.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server answered 2xx with a body this client cannot read.
    #[error("unreadable answer from {url}: {message}")]
    Decode { url: String, message: String },
}

impl ClientError {
    /// The error code, when the server sent one this client knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }
    /// Whether the request certainly never reached the server.
    pub fn never_sent(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Where the client's certificates come from, as PEM.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL: `https://host:port` for the proxy, plus `/partitions/{p}`
    /// for a node. No trailing slash.
    pub base_url: String,
    /// CA certificate(s) that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain and private key, for mutual TLS.
    /// `None` connects without a client certificate.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Deadline for one call, from sending to the last byte of the answer.
    pub timeout: Duration,
    /// Deadline for establishing one connection (TCP and TLS).
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// Reads the CA and the client identity from PEM files.
    pub fn from_files(
        base_url: impl Into<String>,
        ca: &Path,
        cert: Option<(&Path, &Path)>,
    ) -> Result<ClientConfig, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| ClientError::Config(format!("{}: {e}", p.display())))
        };
        let identity_pem = match cert {
            Some((c, k)) => Some((read(c)?, read(k)?)),
            None => None,
        };
        Ok(ClientConfig {
            base_url: base_url.into(),
            ca_pem: read(ca)?,
            identity_pem,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        })
    }
}

type HttpsClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A connection pool and a bearer token to one base URL. Cheap to clone;
/// clones share the pool and the token.
#[derive(Clone)]
pub struct Client {
    inner: HttpsClient,
    base: Arc<str>,
    timeout: Duration,
    token: Arc<RwLock<Option<String>>>,
    /// Logs back in with these when a typed call meets 401 (see
    /// [`Client::relogin_as`]).
    relogin: Option<Arc<Relogin>>,
    /// Body bytes sent and received, shared by every clone and fork (one
    /// count per pool: per server).
    traffic: Arc<Traffic>,
}

/// Request and answer body bytes of the calls a client (and its clones and
/// forks) got an answer to: what a copy or an inventory comparison costs,
/// without headers and TLS framing; a call that got no answer is not
/// counted.
#[derive(Debug, Default)]
pub struct Traffic {
    sent: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
}

impl Traffic {
    /// (sent, received) body bytes so far.
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.sent.load(Relaxed), self.received.load(Relaxed))
    }
}

/// A role and password a client logs back in with.
struct Relogin {
    role: Role,
    password: zeroize::Zeroizing<String>,
    /// One login at a time: calls that met 401 together log in once.
    turn: tokio::sync::Mutex<()>,
}

/// Builds the rustls client configuration for a CA and optional identity.
pub fn tls_client_config(
    ca_pem: &[u8],
    identity_pem: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| ClientError::Config(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Config("CA PEM holds no certificate".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match identity_pem {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = rustls_pemfile::certs(&mut &cert_pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Config(format!("client certificate PEM: {e}")))?;
            let key = rustls_pemfile::private_key(&mut &key_pem[..])
                .map_err(|e| ClientError::Config(format!("client key PEM: {e}")))?
                .ok_or_else(|| ClientError::Config("client key PEM holds no key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(format!("client identity: {e}")))?
        }
    };
    Ok(config)
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Client, ClientError> {
        let tls = tls_client_config(&config.ca_pem, config.identity_pem.as_ref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // A pooled HTTP/2 connection whose peer went silent (a
            // half-open link, a hung host) would take every later request
            // to its death: pings find it out and close it.
            .http2_keep_alive_interval(Some(config.timeout.max(Duration::from_millis(500))))
            .http2_keep_alive_timeout(config.timeout.max(Duration::from_millis(500)))
            .http2_keep_alive_while_idle(true)
            .build(connector);
        let base = config.base_url.trim_end_matches('/');
        if !base.starts_with("https://") {
            return Err(ClientError::Config(format!(
                "base URL `{base}` must start with https://"
            )));
        }
        Ok(Client {
            inner,
            base: base.into(),
            timeout: config.timeout,
            token: Arc::new(RwLock::new(None)),
            relogin: None,
            traffic: Arc::default(),
        })
    }

    /// A client sharing this one's connection pool but with a token slot
    /// of its own: one pool per server, one session per credential.
    pub fn fork(&self) -> Client {
        Client {
            inner: self.inner.clone(),
            base: self.base.clone(),
            timeout: self.timeout,
            token: Arc::new(RwLock::new(None)),
            relogin: None,
            traffic: self.traffic.clone(),
        }
    }

    /// The same client (pool and token shared) that, when a typed call is
    /// answered 401 — the server restarted and forgot the token — logs in
    /// again as `role` and sends the call once more. A 401 means the call
    /// did not run, so sending it again is safe for any call. Raw calls
    /// ([`Client::raw`]) are left to their caller.
    pub fn relogin_as(&self, role: Role, password: &str) -> Client {
        Client {
            relogin: Some(Arc::new(Relogin {
                role,
                password: zeroize::Zeroizing::new(password.to_string()),
                turn: tokio::sync::Mutex::new(()),
            })),
            ..self.clone()
        }
    }

    /// The same client with another deadline per call (shares pool and token).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// The body bytes this client's pool has moved (clones and forks
    /// included).
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The token in use, if any.
    pub fn token(&self) -> Option<String> {
        self.token.read().ok().and_then(|t| t.clone())
    }

    /// The base URL calls are made against.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Uses this bearer token from now on (shared with clones).
    pub fn set_token(&self, token: Option<String>) {
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
    }

    /// Logs in as `role` and keeps the token for later calls.
    pub async fn login(&self, role: Role, password: &str) -> Result<LoginResponse, ClientError> {
        let req = LoginRequest {
            role,
            password: password.to_string(),
        };
        let body =
            serde_json::to_vec(&req).map_err(|e| ClientError::Config(format!("body: {e}")))?;
        let (status, bytes) = self
            .raw(
                Route::Login.method(),
                &Route::Login.path(),
                Some("application/json"),
                Bytes::from(body),
            )
            .await?;
        let resp: LoginResponse = self.decode(&Route::Login, status, bytes)?;
        self.set_token(Some(resp.access_token.clone()));
        Ok(resp)
    }

    /// Ends the session of the token in use (`POST /logout`, answered 204)
    /// and forgets it; never logs in again first (see
    /// [`Client::relogin_as`]). A token the server no longer knows is
    /// forgotten too, and answered as its 401.
    pub async fn logout(&self) -> Result<(), ClientError> {
        let (status, bytes) = self
            .raw(
                Route::Logout.method(),
                &Route::Logout.path(),
                None,
                Bytes::new(),
            )
            .await?;
        if status.is_success() || status == StatusCode::UNAUTHORIZED {
            self.set_token(None);
        }
        self.decode_bytes(status, bytes).map(|_| ())
    }

    /// Sends one request and returns the status and raw body, whatever the
    /// status: for tests of error handling and for relays.
    pub async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.raw_with(method, path_and_query, content_type, &[], body)
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// [`Client::raw`] with extra request headers; also answers the
    /// response headers.
    pub async fn raw_with(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let token = self.token.read().ok().and_then(|t| t.clone());
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ClientError::Config(format!("token: {e}")))?;
            req = req.header(http::header::AUTHORIZATION, v);
        }
        let sent = body.len() as u64;
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Config(format!("request to {url}: {e}")))?;
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                if e.is_connect() {
                    ClientError::Connect {
                        url: url.clone(),
                        message: error_chain(&e),
                    }
                } else {
                    ClientError::Transport {
                        url: url.clone(),
                        message: error_chain(&e),
                    }
                }
            })?;
            let status = resp.status();
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: error_chain(&e),
            })?;
            let body = body.to_bytes();
            use std::sync::atomic::Ordering::Relaxed;
            self.traffic.sent.fetch_add(sent, Relaxed);
            self.traffic.received.fetch_add(body.len() as u64, Relaxed);
            Ok((status, parts.headers, body))
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                url,
                timeout: self.timeout,
            }),
        }
    }

    /// Calls a route with an optional JSON body; decodes a 2xx answer as
    /// `T` and anything else as an error body.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &Route,
        query: Option<&str>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call_with(route, query, &[], body).await
    }

    /// [`Client::call`] with extra request headers (a request id, say:
    /// [`crate::request::REQUEST_ID_HEADER`] makes a retried creation
    /// answer the version its first attempt made).
    pub async fn call_with<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &Route,
        query: Option<&str>,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let bytes = self.call_bytes(route, query, headers, body).await?;
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: format!("{}{}", self.base, route.path()),
            message: e.to_string(),
        })
    }

    async fn call_bytes<B: Serialize>(
        &self,
        route: &Route,
        query: Option<&str>,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Option<&B>,
    ) -> Result<Bytes, ClientError> {
        let mut pq = route.path();
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let (ct, payload) = match body {
            Some(b) => (
                Some("application/json"),
                Bytes::from(
                    serde_json::to_vec(b).map_err(|e| ClientError::Config(format!("body: {e}")))?,
                ),
            ),
            None => (None, Bytes::new()),
        };
        let sent_with = self.token();
        let send = |payload: Bytes| async {
            self.raw_with(route.method(), &pq, ct, headers, payload)
                .await
                .map(|(status, _, body)| (status, body))
        };
        let (mut status, mut bytes) = send(payload.clone()).await?;
        if status == StatusCode::UNAUTHORIZED && *route != Route::Login {
            if let Some(r) = &self.relogin {
                let turn = r.turn.lock().await;
                // Another call that met the same 401 may have logged in
                // while this one waited: then its token serves.
                if self.token() == sent_with {
                    self.login(r.role, &r.password).await?;
                }
                drop(turn);
                (status, bytes) = send(payload).await?;
            }
        }
        self.decode_bytes(status, bytes)
    }

    /// A typed answer: the body of a 2xx, else the error body as an error.
    fn decode<T: DeserializeOwned>(
        &self,
        route: &Route,
        status: StatusCode,
        bytes: Bytes,
    ) -> Result<T, ClientError> {
        let bytes = self.decode_bytes(status, bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: format!("{}{}", self.base, route.path()),
            message: e.to_string(),
        })
    }

    fn decode_bytes(&self, status: StatusCode, bytes: Bytes) -> Result<Bytes, ClientError> {
        if status.is_success() {
            return Ok(bytes);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (
                format!("HTTP{}", status.as_u16()),
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            ),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call::<(), _>(&Route::Health, None, None).await
    }

    pub async fn create_key(
        &self,
        name: &str,
        params: &KeyCreateParameters,
    ) -> Result<KeyBundle, ClientError> {
        self.call(&Route::CreateKey { name: name.into() }, None, Some(params))
            .await
    }

    pub async fn import_key(
        &self,
        name: &str,
        params: &KeyImportParameters,
    ) -> Result<KeyBundle, ClientError> {
        self.call(&Route::ImportKey { name: name.into() }, None, Some(params))
            .await
    }

    pub async fn get_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyBundle, ClientError> {
        let route = Route::GetKey {
            name: name.into(),
            version: version.map(Into::into),
        };
        self.call::<(), _>(&route, None, None).await
    }

    pub async fn update_key(
        &self,
        name: &str,
        version: Option<&str>,
        params: &KeyUpdateParameters,
    ) -> Result<KeyBundle, ClientError> {
        let route = Route::UpdateKey {
            name: name.into(),
            version: version.map(Into::into),
        };
        self.call(&route, None, Some(params)).await
    }

    /// One page of keys; pass the previous page's `nextLink` to continue.
    pub async fn list_keys_page(
        &self,
        next_link: Option<&str>,
        maxresults: Option<u32>,
    ) -> Result<Page<KeyItem>, ClientError> {
        self.page(&Route::ListKeys, next_link, maxresults).await
    }

    /// Every key, following `nextLink`.
    pub async fn list_keys(&self) -> Result<Vec<KeyItem>, ClientError> {
        self.all_pages(&Route::ListKeys).await
    }

    pub async fn list_versions(&self, name: &str) -> Result<Vec<KeyItem>, ClientError> {
        self.all_pages(&Route::ListVersions { name: name.into() })
            .await
    }

    pub async fn list_deleted(&self) -> Result<Vec<DeletedKeyItem>, ClientError> {
        self.all_pages(&Route::ListDeleted).await
    }

    async fn page<T: DeserializeOwned>(
        &self,
        route: &Route,
        next_link: Option<&str>,
        maxresults: Option<u32>,
    ) -> Result<Page<T>, ClientError> {
        let query = match next_link {
            // nextLink is absolute; keep only its query so the call goes to
            // this client's base (a relay may sit in between).
            Some(link) => link.split_once('?').map(|(_, q)| q.to_string()),
            None => maxresults.map(|n| format!("maxresults={n}")),
        };
        self.call::<(), _>(route, query.as_deref(), None).await
    }

    async fn all_pages<T: DeserializeOwned>(&self, route: &Route) -> Result<Vec<T>, ClientError> {
        let mut out = Vec::new();
        let mut link: Option<String> = None;
        // Bounded: a server that keeps sending nextLink cannot loop us forever.
        for _ in 0..100_000 {
            let page: Page<T> = self.page(route, link.as_deref(), None).await?;
            out.extend(page.value);
            match page.next_link {
                Some(l) => link = Some(l),
                None => return Ok(out),
            }
        }
        Err(ClientError::Decode {
            url: route.path(),
            message: "more than 100000 pages".into(),
        })
    }

    pub async fn delete_key(&self, name: &str) -> Result<DeletedKeyBundle, ClientError> {
        self.call::<(), _>(&Route::DeleteKey { name: name.into() }, None, None)
            .await
    }

    pub async fn get_deleted(&self, name: &str) -> Result<DeletedKeyBundle, ClientError> {
        self.call::<(), _>(&Route::GetDeleted { name: name.into() }, None, None)
            .await
    }

    pub async fn recover_deleted(&self, name: &str) -> Result<KeyBundle, ClientError> {
        self.call::<(), _>(&Route::RecoverDeleted { name: name.into() }, None, None)
            .await
    }

    pub async fn purge_deleted(&self, name: &str) -> Result<(), ClientError> {
        self.call_bytes::<()>(&Route::PurgeDeleted { name: name.into() }, None, &[], None)
            .await?;
        Ok(())
    }

    pub async fn backup_key(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        let r: BackupKeyResult = self
            .call::<(), _>(&Route::BackupKey { name: name.into() }, None, None)
            .await?;
        Ok(r.value.0)
    }

    pub async fn restore_key(&self, blob: &[u8]) -> Result<KeyBundle, ClientError> {
        let req = KeyRestoreParameters { value: blob.into() };
        self.call(&Route::RestoreKey, None, Some(&req)).await
    }

    pub async fn rotate_key(&self, name: &str) -> Result<KeyBundle, ClientError> {
        self.call::<(), _>(&Route::RotateKey { name: name.into() }, None, None)
            .await
    }

    fn op(name: &str, version: Option<&str>, op: KeyOp) -> Route {
        Route::Operation {
            name: name.into(),
            version: version.map(Into::into),
            op,
        }
    }

    /// Signs a digest (the message itself for EdDSA).
    pub async fn sign(
        &self,
        name: &str,
        version: Option<&str>,
        alg: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<KeyOperationResult, ClientError> {
        let req = KeySignParameters {
            alg,
            value: digest.into(),
        };
        self.call(&Self::op(name, version, KeyOp::Sign), None, Some(&req))
            .await
    }

    pub async fn verify(
        &self,
        name: &str,
        version: Option<&str>,
        alg: SignatureAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, ClientError> {
        let req = KeyVerifyParameters {
            alg,
            digest: digest.into(),
            value: signature.into(),
        };
        let r: KeyVerifyResult = self
            .call(&Self::op(name, version, KeyOp::Verify), None, Some(&req))
            .await?;
        Ok(r.value)
    }

    /// encrypt / decrypt / wrapkey / unwrapkey with the full parameter set.
    pub async fn crypt(
        &self,
        name: &str,
        version: Option<&str>,
        op: KeyOp,
        params: &KeyOperationsParameters,
    ) -> Result<KeyOperationResult, ClientError> {
        self.call(&Self::op(name, version, op), None, Some(params))
            .await
    }

    pub async fn encrypt(
        &self,
        name: &str,
        version: Option<&str>,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<KeyOperationResult, ClientError> {
        let p = KeyOperationsParameters {
            alg,
            value: plaintext.into(),
            iv: None,
            aad: aad.map(Into::into),
            tag: None,
        };
        self.crypt(name, version, KeyOp::Encrypt, &p).await
    }

    pub async fn mac(
        &self,
        name: &str,
        version: Option<&str>,
        alg: MacAlgorithm,
        data: &[u8],
    ) -> Result<KeyOperationResult, ClientError> {
        let req = KeyMacParameters {
            alg,
            value: data.into(),
        };
        self.call(&Self::op(name, version, KeyOp::Mac), None, Some(&req))
            .await
    }

    pub async fn verify_mac(
        &self,
        name: &str,
        version: Option<&str>,
        alg: MacAlgorithm,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, ClientError> {
        let req = KeyVerifyMacParameters {
            alg,
            value: data.into(),
            mac: mac.into(),
        };
        let r: KeyVerifyResult = self
            .call(&Self::op(name, version, KeyOp::VerifyMac), None, Some(&req))
            .await?;
        Ok(r.value)
    }

    pub async fn derive(
        &self,
        name: &str,
        version: Option<&str>,
        params: &KeyDeriveParameters,
    ) -> Result<KeyBundle, ClientError> {
        self.call(&Self::op(name, version, KeyOp::Derive), None, Some(params))
            .await
    }

    /// Member protocol: the inventory summary.
    pub async fn inventory(&self) -> Result<InventorySummary, ClientError> {
        self.call::<(), _>(&Route::Inventory, None, None).await
    }

    /// Member protocol: the non-empty buckets.
    pub async fn inventory_buckets(&self) -> Result<InventoryBuckets, ClientError> {
        self.call::<(), _>(&Route::InventoryBuckets, None, None)
            .await
    }

    /// Member protocol: every entry of one bucket, following `nextLink`.
    pub async fn inventory_bucket(&self, bucket: u8) -> Result<Vec<InventoryItem>, ClientError> {
        self.all_pages(&Route::InventoryBucket { bucket }).await
    }

    /// Member protocol: the slice hashes of one bucket.
    pub async fn inventory_slices(&self, bucket: u8) -> Result<InventorySlices, ClientError> {
        self.call::<(), _>(&Route::InventorySlices { bucket }, None, None)
            .await
    }

    /// Member protocol: the entries of one slice of one bucket.
    pub async fn inventory_slice(
        &self,
        bucket: u8,
        slice: u8,
    ) -> Result<Vec<InventoryItem>, ClientError> {
        self.all_pages(&Route::InventorySlice { bucket, slice })
            .await
    }

    /// Member protocol: export a key object as a clone blob.
    pub async fn clone_export(&self, name: &str) -> Result<CloneBlob, ClientError> {
        self.clone_export_with(name, None).await
    }

    /// Member protocol: export a key object carrying `version` even while
    /// it is pending (the replication of a new version).
    pub async fn clone_export_with(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<CloneBlob, ClientError> {
        let req = CloneExportRequest {
            name: name.into(),
            version: version.map(str::to_string),
        };
        self.call(&Route::CloneExport, None, Some(&req)).await
    }

    /// Member protocol: commit a pending version (idempotent).
    pub async fn clone_commit(&self, req: &CommitRequest) -> Result<CommitResult, ClientError> {
        self.call(&Route::CloneCommit, None, Some(req)).await
    }

    /// Member protocol: the member's sync state.
    pub async fn sync_state(&self) -> Result<SyncState, ClientError> {
        self.call::<(), _>(&Route::SyncState, None, None).await
    }

    /// Member protocol: change the sync state (lease, commit, behind).
    pub async fn sync(&self, req: &SyncRequest) -> Result<SyncState, ClientError> {
        self.call(&Route::Sync, None, Some(req)).await
    }

    /// Member protocol: import a clone blob.
    pub async fn clone_import(&self, blob: &CloneBlob) -> Result<CloneImportResult, ClientError> {
        self.call(&Route::CloneImport, None, Some(blob)).await
    }

    /// Member protocol: withdraw the version a create made under a request
    /// id (used when the create could not be made durable).
    pub async fn clone_withdraw(
        &self,
        req: &WithdrawRequest,
    ) -> Result<WithdrawResult, ClientError> {
        self.call(&Route::CloneWithdraw, None, Some(req)).await
    }

    pub async fn rng(&self, count: u32) -> Result<Vec<u8>, ClientError> {
        let r: RandomBytes = self
            .call(&Route::Rng, None, Some(&GetRandomBytesRequest { count }))
            .await?;
        Ok(r.value.0)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The path of a certificate file next to a base directory, for callers
/// that keep `ca.pem`, `NAME.pem` and `NAME.key` together.
pub fn pem_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

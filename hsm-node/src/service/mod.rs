//! The node's request handling: from an HTTP request on an authenticated
//! TLS connection to an answer in the Key Vault dialect.
//!
//! Decides: the order of checks (partition → registered client → route →
//! token → role → handler; a logout needs only the token), that `/health`
//! and `/metrics` answer only a client certificate registered to some
//! partition of this node (403 `ClientNotRegistered` otherwise; the plain
//! `metrics_listen` listener is the way for probes and scrapers without one;
//! a zeroized node, which holds nothing and no registration, says so on
//! `/health` to any certificate of its CA), the key cache, and the
//! per-request metrics.
//! Handlers live in `keys` (key management) and `ops` (key use).
//! Never: TLS or connection limits (see `server`), storage layout (`store`).

mod admin_api;
mod cache;
pub mod edge;
mod keys;
mod member;
mod ops;
mod sync;

use crate::audit::AuditEvent;
use crate::auth::{self, Sessions};
use crate::clock::now_secs;
use crate::layout::NodeSettings;
use crate::metrics as m;
use crate::partition::PartitionState;
use crate::store::Store;
use bytes::Bytes;
use edge::{ApiError, ApiResult, Resp};
use hsm_api::{ErrorCode, Health, LoginRequest, LoginResponse, Route, RouteError};
use http::{Method, Request, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    /// SHA-256 fingerprint (hex) of the client's TLS certificate.
    pub fingerprint: String,
}

/// Largest admin request body (a partition restore).
const ADMIN_MAX_BODY: usize = 256 << 20;
/// A request answered after this long is logged as a `slow request`
/// warning with its operation (what `/metrics` shows only as a bucket).
const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// A running node's shared state.
pub struct Node {
    pub settings: NodeSettings,
    base_url: String,
    pub store: Arc<Store>,
    /// Where key material lives: sealed in `store`, or in a PKCS#11 token.
    pub keys: crate::keystore::KeyStore,
    partitions: RwLock<HashMap<String, Arc<PartitionState>>>,
    sessions: Sessions,
    cache: cache::KeyCache,
    ready: AtomicBool,
    io_timeout: Duration,
    /// The node directory (zeroization destroys files in it).
    dir: crate::layout::NodeDir,
    /// Set once the node is zeroized: every key request is refused with it.
    zeroized: RwLock<Option<crate::zeroization::Marker>>,
    /// Admin API logins and lockout (in memory).
    admin: admin_api::AdminGuard,
    /// The audit trail (none in tools that serve no requests).
    audit: Option<crate::audit::Audit>,
    /// Resync leases, by partition (`sync`).
    leases: sync::Leases,
    /// See [`Node::sync_generation`].
    sync_generation: std::sync::atomic::AtomicU64,
}

impl Node {
    /// Builds the node from its settings, database and master key:
    /// unseals every partition's KEK (a wrong master key fails here). A
    /// zeroized node has no master key: it starts empty and refuses key
    /// requests with the zeroization marker's message.
    pub fn new(
        settings: NodeSettings,
        dir: crate::layout::NodeDir,
        store: Arc<Store>,
        keys: crate::keystore::KeyStore,
        master: Option<&[u8; 32]>,
        audit: Option<crate::audit::Audit>,
    ) -> Result<Node, String> {
        let zeroized = crate::zeroization::marker(&dir);
        let mut partitions = HashMap::new();
        if let (Some(master), None) = (master, &zeroized) {
            for rec in store.partitions().map_err(|e| e.to_string())? {
                let st = PartitionState::unseal(master, &rec).map_err(|e| {
                    format!(
                        "partition `{}`: cannot unseal its key with this master key: {e}",
                        rec.name
                    )
                })?;
                partitions.insert(rec.name.clone(), Arc::new(st));
            }
        }
        let counts = store.live_key_counts().map_err(|e| e.to_string())?;
        for name in partitions.keys() {
            m::set_keys(name, counts.get(name).copied().unwrap_or(0));
        }
        Ok(Node {
            cache: cache::KeyCache::new(settings.key_cache_entries.max(1)),
            base_url: settings.base_url(),
            io_timeout: Duration::from_secs(settings.io_timeout_secs),
            sessions: Sessions::new(Duration::from_secs(settings.token_ttl_secs), 100_000),
            admin: admin_api::AdminGuard::default(),
            settings,
            store,
            keys,
            partitions: RwLock::new(partitions),
            ready: AtomicBool::new(false),
            dir,
            zeroized: RwLock::new(zeroized),
            audit,
            leases: Default::default(),
            sync_generation: rand::random::<u64>().into(),
        })
    }

    /// Appends an audit record (no-op without an audit trail).
    pub fn record(&self, ev: AuditEvent) {
        if let Some(a) = &self.audit {
            a.record(ev);
        }
    }

    /// Waits until every audit record so far is on disk.
    pub fn flush_audit(&self) {
        if let Some(a) = &self.audit {
            a.flush();
        }
    }

    /// The zeroization marker, when the node is zeroized.
    pub fn zeroized(&self) -> Option<crate::zeroization::Marker> {
        self.zeroized.read().ok().and_then(|z| z.clone())
    }

    /// Zeroizes the node now: forgets every unsealed secret and session,
    /// then destroys the master key and the database on disk. From then on
    /// every key request is refused, until `hsm-node init`.
    pub fn zeroize(&self, reason: &str) -> Result<crate::zeroization::Marker, String> {
        if let Ok(mut z) = self.zeroized.write() {
            // Refuse new requests before anything is destroyed.
            *z = Some(crate::zeroization::Marker {
                time: now_secs(),
                reason: reason.into(),
            });
        }
        if let Ok(mut p) = self.partitions.write() {
            for name in p.keys() {
                m::set_keys(name, 0);
            }
            p.clear();
        }
        self.cache.clear();
        self.sessions.clear();
        // A token member's keys and domain wrapping keys live in the
        // token: destroyed there first. A token that fails here does not
        // stop the rest (the master key and database still go); the audit
        // trail says what was left.
        match self.keys.destroy_all_blocking() {
            Ok(0) if !self.keys.is_token() => {}
            Ok(n) => self.record(
                AuditEvent::new("zeroize.token", "ok")
                    .detail(format!("{n} token objects destroyed")),
            ),
            Err(e) => {
                tracing::error!(error = %e, "zeroize: token objects not destroyed");
                self.record(AuditEvent::new("zeroize.token", "error").detail(e.to_string()));
            }
        }
        self.record(AuditEvent::new("zeroize", "ok").detail(reason));
        self.flush_audit();
        let marker = crate::zeroization::destroy(&self.dir, reason)?;
        if let Ok(mut z) = self.zeroized.write() {
            *z = Some(marker.clone());
        }
        Ok(marker)
    }

    /// Marks the node ready (after the listener is bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Puts every partition's domain wrapping key into the token (a token
    /// member; a no-op for a software one). Run at start, before serving.
    pub async fn install_domain_keys(&self) -> Result<(), String> {
        let parts: Vec<Arc<PartitionState>> = self
            .partitions
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for part in parts {
            self.keys
                .install_domain(&part)
                .await
                .map_err(|e| format!("partition `{}`: {e}", part.name))?;
        }
        Ok(())
    }

    /// A partition's state, shared, for work that leaves the request's
    /// task (a blocking thread).
    pub(crate) fn partition_arc(&self, name: &str) -> ApiResult<Arc<PartitionState>> {
        self.partition(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::PartitionNotFound,
                format!("no partition `{name}`"),
            )
        })
    }

    pub(crate) fn partition(&self, name: &str) -> Option<Arc<PartitionState>> {
        self.partitions.read().ok()?.get(name).cloned()
    }

    /// The base URL of a partition: what kids and the login challenge use.
    pub fn partition_base(&self, p: &str) -> String {
        format!("{}/partitions/{p}", self.base_url)
    }

    /// Answers one request. Never fails: every error is an error body.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, peer: Arc<Peer>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let (label, resp) = self.route(&parts, body, &path, &peer).await;
        let took = started.elapsed();
        if took >= SLOW_REQUEST {
            tracing::warn!(
                operation = label,
                ms = took.as_millis() as u64,
                "slow request"
            );
        }
        m::observe_request(
            label,
            resp.extensions().get::<ErrorCode>().copied(),
            started.elapsed(),
        );
        resp
    }

    async fn route<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        path: &str,
        peer: &Peer,
    ) -> (&'static str, Resp)
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match path {
            "/health" | "/metrics" if parts.method == Method::GET => {
                let health = path == "/health";
                let label = if health { "health" } else { "metrics" };
                let zeroized_health = health && self.zeroized().is_some();
                if !zeroized_health && !self.registered_anywhere(peer) {
                    let e = ApiError::new(
                        ErrorCode::ClientNotRegistered,
                        format!(
                            "this client certificate is not registered to any partition of this node: \
                             {path} answers registered clients only (probes and scrapers without one \
                             use the plain metrics_listen listener)"
                        ),
                    );
                    return (label, edge::error(&e));
                }
                return (
                    label,
                    if health {
                        self.health()
                    } else {
                        self.metrics()
                    },
                );
            }
            _ => {}
        }
        if let Some(sub) = path.strip_prefix("/admin/") {
            // Restores carry whole partitions: a larger limit, more time.
            let limit = self.settings.max_body_bytes.max(ADMIN_MAX_BODY);
            let body = match edge::read_body(body, limit, self.io_timeout * 30).await {
                Ok(b) => b,
                Err(e) => return ("admin", edge::error(&e)),
            };
            let r = self
                .admin_request(parts, sub, &body)
                .await
                .unwrap_or_else(|e| edge::error(&e));
            return ("admin", r);
        }
        if let Some(z) = self.zeroized() {
            return (
                "zeroized",
                edge::error(&ApiError::new(ErrorCode::Zeroized, z.message())),
            );
        }
        let Some(rest) = path.strip_prefix("/partitions/") else {
            return (
                "unknown",
                edge::error(&ApiError::new(ErrorCode::NotFound, "no such path")),
            );
        };
        let (p, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(part) = self.partition(p) else {
            let e = ApiError::new(ErrorCode::PartitionNotFound, format!("no partition `{p}`"));
            return ("unknown", edge::error(&e));
        };
        if !part.clients.contains(&peer.fingerprint) {
            let e = ApiError::new(
                ErrorCode::ClientNotRegistered,
                format!("this client certificate is not registered to partition `{p}`"),
            );
            return ("unknown", edge::error(&e));
        }
        let route = match Route::parse(&parts.method, &format!("/{sub}")) {
            Ok(r) => r,
            Err(RouteError::NotFound) => {
                return (
                    "unknown",
                    edge::error(&ApiError::new(ErrorCode::NotFound, "no such path")),
                )
            }
            Err(RouteError::MethodNotAllowed) => {
                let e = ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "method not allowed on this path",
                );
                return ("unknown", edge::error(&e));
            }
        };
        let label = m::route_label(&route);
        let body = match edge::read_body(body, self.settings.max_body_bytes, self.io_timeout).await
        {
            Ok(b) => b,
            Err(e) => return (label, edge::error(&e)),
        };
        if route == Route::Login {
            return (
                label,
                self.login(&part, &body, peer)
                    .await
                    .unwrap_or_else(|e| edge::error(&e)),
            );
        }
        let session = match self.authenticate(parts, &part, peer) {
            Ok(s) => s,
            Err(e) => return (label, edge::challenge(&e, &self.partition_base(p))),
        };
        // Every role may end its own session (the token just checked: of
        // this partition and this client).
        if route == Route::Logout {
            return (label, self.logout(parts, &session, peer));
        }
        let kind = audit_kind(&route);
        let base_event = |outcome: &str| {
            kind.map(|k| {
                let mut ev = AuditEvent::new(k, outcome)
                    .partition(part.name.clone())
                    .role(session.role.as_str())
                    .client(peer.fingerprint.chars().take(16).collect::<String>());
                match &route {
                    Route::Operation { name, version, op } => {
                        ev = ev.key(name.clone()).op(op.as_str());
                        if let Some(v) = version {
                            ev = ev.version(v.clone());
                        }
                    }
                    r => {
                        if let Some(n) = route_key(r) {
                            ev = ev.key(n.to_string());
                        }
                    }
                }
                ev
            })
        };
        if !auth::permits(session.role, &route) {
            let e = ApiError::new(
                ErrorCode::Forbidden,
                format!("the {} role may not do this", session.role),
            );
            if let Some(ev) = base_event(ErrorCode::Forbidden.as_str()) {
                self.record(ev);
            }
            return (label, edge::error(&e));
        }
        let request = match request_of(&route, &parts.headers, &body) {
            Ok(r) => r,
            Err(e) => {
                let e = ApiError::new(ErrorCode::BadParameter, e.to_string());
                if let Some(ev) = base_event(ErrorCode::BadParameter.as_str()) {
                    self.record(ev);
                }
                return (label, edge::error(&e));
            }
        };
        let ctx = Ctx {
            node: self,
            part: &part,
            query: parts.uri.query(),
            through_proxy: request.is_some()
                && parts.headers.contains_key(hsm_api::REQUEST_STAMP_HEADER),
            request,
        };
        let event = base_event("");
        let resp = match ctx.dispatch(route, &body).await {
            Ok(r) => r,
            Err(e) => edge::error(&e),
        };
        if let Some(mut ev) = event {
            ev.outcome = resp
                .extensions()
                .get::<ErrorCode>()
                .map(|c| c.as_str())
                .unwrap_or("ok")
                .to_string();
            self.record(ev);
        }
        (label, resp)
    }

    /// Whether the peer's certificate is registered to some partition here.
    fn registered_anywhere(&self, peer: &Peer) -> bool {
        self.partitions.read().is_ok_and(|p| {
            p.values()
                .any(|part| part.clients.contains(&peer.fingerprint))
        })
    }

    /// The `/health` answer: ready while serving, not-ready otherwise —
    /// and not-ready while the token (a token member) is unhealthy (a hung
    /// call, a lost token, a refused PIN), so the proxy fails over.
    pub fn health(&self) -> Resp {
        let zeroized = self.zeroized().is_some();
        let token = match self.keys.token().map(|t| t.health()) {
            Some(crate::keystore::token::TokenHealth::Unhealthy(why)) => Some(why),
            _ => None,
        };
        let serving = self.ready.load(Ordering::SeqCst);
        let ready = serving && !zeroized && token.is_none();
        let reason = if zeroized {
            Some("zeroized: initialise the node again".to_string())
        } else if !serving {
            Some("starting or shutting down".to_string())
        } else {
            token.map(|why| format!("token: {why}"))
        };
        let h = Health {
            status: if ready { "ready" } else { "not-ready" }.into(),
            reason,
            sync_generation: Some(self.sync_generation()),
        };
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        edge::json(status, &h)
    }

    /// The `/metrics` answer: the text exposition, or `Unavailable` when
    /// no recorder is installed.
    pub fn metrics(&self) -> Resp {
        match m::render() {
            Some(text) => edge::with_body(StatusCode::OK, "text/plain; version=0.0.4", text.into()),
            None => edge::error(&ApiError::new(
                ErrorCode::Unavailable,
                "metrics are not enabled",
            )),
        }
    }

    /// The bearer token of a request.
    fn bearer(parts: &http::request::Parts) -> ApiResult<&str> {
        let unauthorized = |m: &str| ApiError::new(ErrorCode::Unauthorized, m);
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("a bearer token is required; POST /login first"))?;
        header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))
    }

    fn authenticate(
        &self,
        parts: &http::request::Parts,
        part: &PartitionState,
        peer: &Peer,
    ) -> ApiResult<auth::Session> {
        let unauthorized = |m: &str| ApiError::new(ErrorCode::Unauthorized, m);
        let token = Self::bearer(parts)?;
        let s = self
            .sessions
            .check(token)
            .ok_or_else(|| unauthorized("the token is unknown or expired; log in again"))?;
        if s.partition != part.name || s.client != peer.fingerprint {
            return Err(unauthorized(
                "the token was issued for another partition or client",
            ));
        }
        Ok(s)
    }

    /// Ends the session of an authenticated request's token: 204, and the
    /// token answers 401 from now on.
    fn logout(&self, parts: &http::request::Parts, session: &auth::Session, peer: &Peer) -> Resp {
        if let Ok(token) = Self::bearer(parts) {
            self.sessions.revoke(token);
        }
        tracing::info!(partition = %session.partition, role = %session.role, "logout");
        self.record(
            AuditEvent::new("logout", "ok")
                .partition(session.partition.clone())
                .role(session.role.as_str())
                .client(peer.fingerprint.chars().take(16).collect::<String>()),
        );
        edge::no_content()
    }

    async fn login(&self, part: &Arc<PartitionState>, body: &[u8], peer: &Peer) -> ApiResult<Resp> {
        let req: LoginRequest = edge::parse_json(body)?;
        let now = now_secs();
        let p = part.name.clone();
        let role = req.role;
        let store = self.store.clone();
        let attempts = self.settings.lockout_attempts;
        let lock_secs = self.settings.lockout_secs as i64;
        // The check, the counter and the lock are one step under the
        // role's login turn, so two parallel guesses cannot both get
        // the last attempt. The password is hashed outside any store
        // transaction, and a login that changes nothing (the usual
        // success) writes nothing: a burst of logins after a restart
        // never holds up key changes.
        let state = part.clone();
        let outcome = tokio::task::spawn_blocking(
            move || -> Result<LoginOutcome, crate::store::StoreError> {
                let _turn = state
                    .login_turn(role)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let rec = store.partition(&p)?;
                let Some(r) = rec.roles.get(role.as_str()) else {
                    return Ok(LoginOutcome::NoRole);
                };
                if let Some(until) = r.locked_until.filter(|u| *u > now) {
                    return Ok(LoginOutcome::Locked(until - now));
                }
                let dirty = r.failures != 0 || r.locked_until.is_some();
                m::password_check(&p, role);
                if auth::verify_password(&req.password, &r.password_hash) {
                    if dirty {
                        store.update_partition(&p, |rec| {
                            if let Some(r) = rec.roles.get_mut(role.as_str()) {
                                r.failures = 0;
                                r.locked_until = None;
                            }
                        })?;
                    }
                    return Ok(LoginOutcome::Ok);
                }
                store.update_partition(&p, |rec| {
                    let Some(r) = rec.roles.get_mut(role.as_str()) else {
                        return LoginOutcome::NoRole;
                    };
                    r.locked_until = None;
                    r.failures += 1;
                    if r.failures >= attempts {
                        r.failures = 0;
                        r.locked_until = Some(now + lock_secs);
                        LoginOutcome::JustLocked(lock_secs)
                    } else {
                        LoginOutcome::Failed(attempts - r.failures)
                    }
                })
            },
        )
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("login task: {e}")))??;
        let login_event = |outcome: &str| {
            AuditEvent::new("login", outcome)
                .partition(part.name.clone())
                .role(role.as_str())
                .client(peer.fingerprint.chars().take(16).collect::<String>())
        };
        let fail = |code: ErrorCode, msg: String| {
            tracing::warn!(partition = %part.name, role = %role, %msg, "login refused");
            self.record(login_event(code.as_str()).detail(msg.clone()));
            Err(ApiError::new(code, msg))
        };
        match outcome {
            LoginOutcome::Ok => {
                let token = self.sessions.issue(&part.name, role, &peer.fingerprint);
                tracing::info!(partition = %part.name, role = %role, "login");
                self.record(login_event("ok"));
                Ok(edge::json(
                    StatusCode::OK,
                    &LoginResponse {
                        access_token: token.to_string(),
                        token_type: "Bearer".into(),
                        expires_in: self.sessions.ttl().as_secs(),
                    },
                ))
            }
            LoginOutcome::NoRole => fail(
                ErrorCode::LoginFailed,
                format!("role {role} has no password set"),
            ),
            LoginOutcome::Locked(left) => {
                m::login_failure(&part.name, role);
                fail(
                    ErrorCode::RoleLocked,
                    format!("role {role} is locked for {left} more seconds"),
                )
            }
            LoginOutcome::JustLocked(secs) => {
                m::login_failure(&part.name, role);
                m::lockout(&part.name, role);
                fail(
                    ErrorCode::RoleLocked,
                    format!("wrong password; role {role} is now locked for {secs} seconds"),
                )
            }
            LoginOutcome::Failed(left) => {
                m::login_failure(&part.name, role);
                fail(
                    ErrorCode::LoginFailed,
                    format!("wrong password for role {role}; {left} attempts left before lockout"),
                )
            }
        }
    }

    /// Drops purge tombstones older than `tombstone_retention_days`.
    pub fn drop_old_tombstones(&self) -> usize {
        if self.zeroized().is_some() {
            return 0;
        }
        let before = now_secs() - i64::from(self.settings.tombstone_retention_days) * 86_400;
        match self.store.drop_tombstones(before) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "dropping old tombstones");
                0
            }
        }
    }

    /// Purges soft-deleted keys whose date has come; returns how many.
    pub fn purge_due(&self) -> usize {
        if self.zeroized().is_some() {
            return 0;
        }
        let due = match self.store.due_for_purge(now_secs()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "listing keys due for purge");
                return 0;
            }
        };
        let mut n = 0;
        for (p, name) in due {
            match self.store.purge(&p, &name) {
                Ok(()) => {
                    self.cache.invalidate(&p, &name);
                    tracing::info!(partition = %p, key = %name, "scheduled purge");
                    n += 1;
                }
                Err(e) => {
                    tracing::error!(partition = %p, key = %name, error = %e, "scheduled purge")
                }
            }
        }
        n
    }
}

enum LoginOutcome {
    Ok,
    NoRole,
    Locked(i64),
    JustLocked(i64),
    Failed(u32),
}

/// The audit record kind of a route; reads are not audited.
fn audit_kind(r: &Route) -> Option<&'static str> {
    Some(match r {
        Route::CreateKey { .. } => "key.create",
        Route::ImportKey { .. } => "key.import",
        Route::UpdateKey { .. } => "key.update",
        Route::DeleteKey { .. } => "key.delete",
        Route::RecoverDeleted { .. } => "key.recover",
        Route::PurgeDeleted { .. } => "key.purge",
        Route::BackupKey { .. } => "key.backup",
        Route::RestoreKey => "key.restore",
        Route::RotateKey { .. } => "key.rotate",
        Route::Operation { .. } => "key.use",
        Route::CloneExport => "clone.export",
        Route::CloneImport => "clone.import",
        Route::CloneWithdraw => "clone.withdraw",
        Route::CloneCommit => "clone.commit",
        _ => return None,
    })
}

/// The key a route names, if any.
fn route_key(r: &Route) -> Option<&str> {
    match r {
        Route::CreateKey { name }
        | Route::ImportKey { name }
        | Route::DeleteKey { name }
        | Route::RecoverDeleted { name }
        | Route::PurgeDeleted { name }
        | Route::BackupKey { name }
        | Route::RotateKey { name } => Some(name),
        Route::UpdateKey { name, .. } | Route::GetKey { name, .. } => Some(name),
        _ => None,
    }
}

/// The request id and stamp of a request that makes a key version
/// (`hsm_api::request`); other requests carry none. Without a stamp
/// header, this node's clock stamps the attempt.
fn request_of(
    route: &Route,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Option<hsm_api::RequestStamp>, hsm_api::request::RequestIdError> {
    if !matches!(
        route,
        Route::CreateKey { .. } | Route::ImportKey { .. } | Route::RotateKey { .. }
    ) {
        return Ok(None);
    }
    let Some(id) = headers.get(hsm_api::REQUEST_ID_HEADER) else {
        return Ok(None);
    };
    let id = hsm_api::request::request_digest(id.as_bytes(), route.label(), body)?;
    let stamp = match headers.get(hsm_api::REQUEST_STAMP_HEADER) {
        Some(s) => hsm_api::request::parse_stamp(s.as_bytes())?,
        None => hsm_api::request::next_stamp(),
    };
    Ok(Some(hsm_api::RequestStamp { id, stamp }))
}

/// One authenticated request's context.
struct Ctx<'a> {
    node: &'a Node,
    part: &'a PartitionState,
    query: Option<&'a str>,
    /// The request id of a request that makes a key version.
    request: Option<hsm_api::RequestStamp>,
    /// The request came through the proxy (it carries the attempt's stamp):
    /// a version it makes is pending until the proxy commits it.
    through_proxy: bool,
}

impl Ctx<'_> {
    async fn dispatch(&self, route: Route, body: &[u8]) -> ApiResult<Resp> {
        match route {
            Route::Login | Route::Logout | Route::Health | Route::Metrics => Err(ApiError::new(
                ErrorCode::NotFound,
                "no such path in a partition",
            )),
            Route::Rng => self.rng(body),
            Route::CreateKey { name } => self.create(&name, body).await,
            Route::ImportKey { name } => self.import(&name, body).await,
            Route::GetKey { name, version } => self.get(&name, version.as_deref()),
            Route::ListKeys => self.list_keys(),
            Route::ListVersions { name } => self.list_versions(&name),
            Route::UpdateKey { name, version } => {
                self.update(&name, version.as_deref(), body).await
            }
            Route::DeleteKey { name } => self.delete(&name).await,
            Route::ListDeleted => self.list_deleted(),
            Route::GetDeleted { name } => self.get_deleted(&name),
            Route::RecoverDeleted { name } => self.recover(&name).await,
            Route::PurgeDeleted { name } => self.purge(&name).await,
            Route::BackupKey { name } => self.backup(&name).await,
            Route::RestoreKey => self.restore(body).await,
            Route::RotateKey { name } => self.rotate(&name).await,
            Route::Operation { name, version, op } => {
                self.operation(&name, version.as_deref(), op, body).await
            }
            Route::Inventory => self.inventory_summary(),
            Route::InventoryBuckets => self.inventory_buckets(),
            Route::InventoryBucket { bucket } => self.inventory_bucket(bucket),
            Route::InventorySlices { bucket } => self.inventory_slices(bucket),
            Route::InventorySlice { bucket, slice } => self.inventory_slice(bucket, slice),
            Route::CloneExport => self.clone_export(body).await,
            Route::CloneImport => self.clone_import(body).await,
            Route::CloneWithdraw => self.clone_withdraw(body).await,
            Route::CloneCommit => self.clone_commit(body).await,
            Route::SyncState => self.sync_state(),
            Route::Sync => self.sync(body).await,
        }
    }

    /// Runs a store write off the async threads (it waits for fsync).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.node.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("storage task: {e}")))?
            .map_err(ApiError::from)
    }
}

/// Checks a key name.
fn check_name(name: &str) -> ApiResult<()> {
    if hsm_api::is_valid_key_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidKeyName,
            "key names are 1-127 characters of 0-9, a-z, A-Z and -",
        ))
    }
}

/// Checks a version segment: a malformed one can name no key.
fn check_version(name: &str, v: Option<&str>) -> ApiResult<()> {
    match v {
        Some(v) if !hsm_api::is_valid_version(v) => Err(ApiError::new(
            ErrorCode::KeyNotFound,
            format!(
                "key `{name}` has no version `{}`",
                v.chars().take(40).collect::<String>()
            ),
        )),
        _ => Ok(()),
    }
}

//! The virtual partition: the application-facing Key Vault keys dialect at
//! the listener's root.
//!
//! Decides: application login (the password is checked by a member; the
//! proxy keeps it only in memory, to open member sessions and to log a
//! recovering member back in; only the crypto-officer and crypto-user
//! roles log in here), proxy bearer tokens (each acts as the credential it
//! was issued for, until it expires or is logged out, which ends the
//! member sessions no other token uses) and the 401 challenge the SDKs
//! expect, which requests are idempotent, the request id of a key
//! creation (the application's `x-ms-client-request-id`, or a fresh one),
//! that a change is acknowledged only when durable on `min_replicas`
//! members (a new version that is not is withdrawn from the members that
//! hold it, so no half-made key stays visible; one whose maker was lost
//! before it could be copied is made again on another member), and that
//! every URL in an answer is the proxy's configured `public_url` (a
//! member's identity never leaks, and the request's `Host` is never
//! echoed: it must be present and well-formed, then any host is answered
//! alike). The member protocol is not exposed here. Never: member choice
//! or retries (`forward`), copying (`resync`).

use crate::forward::{Forwarder, Kind, Outgoing, Scope, Trace};
use crate::member::{Credential, Member};
use crate::resync;
use bytes::Bytes;
use hsm_api::request;
use hsm_api::{
    ErrorBody, ErrorCode, ErrorDetail, KeyOp, LoginRequest, LoginResponse, Role, Route, RouteError,
};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub type Resp = Response<Full<Bytes>>;

/// Settings of the virtual partition.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The proxy's URL (`listener.public_url` in effect, no trailing `/`):
    /// every `kid` and the challenge's login URL are built from it.
    pub public_url: String,
    /// Changes are acknowledged when durable on this many members.
    pub min_replicas: usize,
    /// Lifetime of a proxy token.
    pub token_ttl: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time to wait for a request body.
    pub body_timeout: Duration,
}

struct AppSession {
    cred: Credential,
    expires: Instant,
}

pub struct Proxy {
    pub forwarder: Arc<Forwarder>,
    pub settings: ApiSettings,
    /// The proxy's own credential for background work (replication, resync).
    pub background: Credential,
    sessions: RwLock<HashMap<[u8; 32], AppSession>>,
    /// Key creations in flight, by request digest (one handler at a time).
    creating: Gates<tokio::sync::Mutex<()>>,
    /// Copies still running after a change was acknowledged: key name →
    /// members that may not hold its new state yet. Requests on that key
    /// avoid them until their copy ends.
    copying: Arc<Copying>,
    /// Changes in flight through this proxy, by key name (see [`Changes`]).
    changes: Changes,
}

/// Key name → members whose copy of the key's latest change is running.
type Copying = Mutex<HashMap<String, Vec<String>>>;

/// The creations running through this proxy, by key name. A creation
/// (create, import, rotate) makes a new version on one member, copies it,
/// and withdraws it if it cannot be made durable on `min_replicas`. While
/// that version exists unacknowledged, a read or use of the key (one that
/// does not name a version) arriving through this proxy waits until it is
/// settled, so that none meets a version that is then withdrawn. A quick
/// creation holds its key from the start, a slow one (RSA, rotation) from
/// its generation's end; creations of one key run one at a time; reads and
/// uses never hold up a creation. Other changes are never withdrawn and
/// take no turn.
#[derive(Default)]
struct Changes {
    running: Gates<tokio::sync::RwLock<()>>,
}

/// A table of locks by key that hold an entry only while someone holds or
/// waits on its lock (request ids, key names).
struct Gates<L> {
    map: Mutex<HashMap<String, Arc<L>>>,
    /// Entries in `map`, so that a lookup skips the lock when the table is
    /// empty (the common case).
    count: std::sync::atomic::AtomicUsize,
}

impl<L> Default for Gates<L> {
    fn default() -> Self {
        Gates {
            map: Mutex::new(HashMap::new()),
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl<L: Default> Gates<L> {
    /// The lock of `key`, made if there is none (`None`: table poisoned).
    fn enter(&self, key: &str) -> Option<Arc<L>> {
        let mut m = self.map.lock().ok()?;
        let gate = m.entry(key.to_string()).or_default().clone();
        self.count
            .store(m.len(), std::sync::atomic::Ordering::SeqCst);
        Some(gate)
    }

    /// The lock of `key`, if someone holds or waits on it.
    fn find(&self, key: &str) -> Option<Arc<L>> {
        if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return None;
        }
        self.map.lock().ok()?.get(key).cloned()
    }

    /// Forgets `key`'s lock if nobody but the table and the caller holds
    /// it (a held guard keeps a clone).
    fn release(&self, key: &str, gate: &Arc<L>) {
        if let Ok(mut m) = self.map.lock() {
            if Arc::strong_count(gate) <= 2 {
                m.remove(key);
                self.count
                    .store(m.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

impl Changes {
    /// Waits until no change to `key` runs (or `deadline`: false).
    async fn settled(&self, key: &str, deadline: tokio::time::Instant) -> bool {
        let Some(gate) = self.running.find(key) else {
            return true;
        };
        let read = tokio::time::timeout_at(deadline, gate.read()).await;
        let settled = read.is_ok();
        drop(read);
        self.running.release(key, &gate);
        settled
    }

    /// Takes the turn to change `key` (or `None` at `deadline`); the turn
    /// ends when the guard drops.
    async fn turn(&self, key: &str, deadline: tokio::time::Instant) -> Option<ChangeTurn<'_>> {
        let gate = self.running.enter(key)?;
        let guard = tokio::time::timeout_at(deadline, gate.clone().write_owned())
            .await
            .ok();
        let turn = ChangeTurn {
            changes: self,
            key: key.to_string(),
            gate,
            guard,
        };
        turn.guard.is_some().then_some(turn)
    }
}

/// What ties the attempts of one request: its request id's digest and
/// turn (key creations), its deadline (counted from its arrival), and
/// whether it already holds its key's turn (see [`Changes`]).
struct Bounds<'a> {
    digest: Option<&'a str>,
    deadline: tokio::time::Instant,
    in_turn: bool,
    /// The turn of the request's id (a retry waits for the first).
    same_id: Option<&'a tokio::sync::Mutex<()>>,
}

/// A change's turn on its key; see [`Changes`].
struct ChangeTurn<'a> {
    changes: &'a Changes,
    key: String,
    gate: Arc<tokio::sync::RwLock<()>>,
    guard: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
}

impl Drop for ChangeTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.changes.running.release(&self.key, &self.gate);
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Resp {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.as_str().into(),
            message: message.into(),
        },
    };
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *r.status_mut() =
        StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.extensions_mut().insert(code);
    r
}

fn json_bytes(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn token_key(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a route may run twice (reads and crypto operations, but not
/// derive, which makes a key; key creations run under a request id).
fn kind_of(r: &Route) -> Kind {
    match r {
        Route::CreateKey { .. } | Route::ImportKey { .. } | Route::RotateKey { .. } => Kind::Create,
        Route::GetKey { .. }
        | Route::ListKeys
        | Route::ListVersions { .. }
        | Route::ListDeleted => Kind::Idempotent,
        Route::GetDeleted { .. } | Route::Rng | Route::BackupKey { .. } => Kind::Idempotent,
        Route::Operation { op, .. } if *op != KeyOp::Derive => Kind::Idempotent,
        Route::UpdateKey { .. }
        | Route::DeleteKey { .. }
        | Route::RecoverDeleted { .. }
        | Route::PurgeDeleted { .. }
        | Route::RestoreKey => Kind::Merged,
        _ => Kind::Mutation,
    }
}

/// The key a route names.
/// Whether a read or use names the version it wants (a new version being
/// made cannot be it).
fn pinned(r: &Route) -> bool {
    matches!(
        r,
        Route::GetKey {
            version: Some(_),
            ..
        } | Route::Operation {
            version: Some(_),
            ..
        }
    )
}

fn key_of(r: &Route) -> Option<&str> {
    match r {
        Route::CreateKey { name }
        | Route::ImportKey { name }
        | Route::DeleteKey { name }
        | Route::RecoverDeleted { name }
        | Route::PurgeDeleted { name }
        | Route::BackupKey { name }
        | Route::RotateKey { name }
        | Route::GetDeleted { name }
        | Route::ListVersions { name } => Some(name),
        Route::GetKey { name, .. }
        | Route::UpdateKey { name, .. }
        | Route::Operation { name, .. } => Some(name),
        _ => None,
    }
}

impl Proxy {
    pub fn new(forwarder: Arc<Forwarder>, settings: ApiSettings, background: Credential) -> Proxy {
        Proxy {
            forwarder,
            settings,
            background,
            sessions: RwLock::new(HashMap::new()),
            creating: Gates::default(),
            changes: Changes::default(),
            copying: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Answers one application request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        if let Err(msg) = names_a_host(&parts) {
            return error(ErrorCode::BadParameter, msg);
        }
        let base = self.settings.public_url.clone();
        let (label, resp) = self.route(&parts, body, &base).await;
        let outcome = resp
            .extensions()
            .get::<ErrorCode>()
            .map(|c| c.as_str())
            .unwrap_or("ok");
        crate::metrics::request(label, outcome, started.elapsed());
        resp
    }

    async fn route(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        base: &str,
    ) -> (&'static str, Resp) {
        let path = parts.uri.path();
        let route = match Route::parse(&parts.method, path) {
            Ok(
                Route::Inventory
                | Route::InventoryBuckets
                | Route::InventoryBucket { .. }
                | Route::InventorySlices { .. }
                | Route::InventorySlice { .. },
            )
            | Ok(Route::CloneExport | Route::CloneImport | Route::CloneWithdraw)
            | Ok(Route::Metrics) => return ("unknown", error(ErrorCode::NotFound, "no such path")),
            Ok(r) => r,
            Err(RouteError::NotFound) => {
                return ("unknown", error(ErrorCode::NotFound, "no such path"))
            }
            Err(RouteError::MethodNotAllowed) => {
                return (
                    "unknown",
                    error(
                        ErrorCode::MethodNotAllowed,
                        "method not allowed on this path",
                    ),
                )
            }
        };
        let label = crate::metrics::route_label(&route);
        if route == Route::Health {
            return (label, self.health());
        }
        let collect = Limited::new(body, self.settings.max_body_bytes).collect();
        let Ok(collected) = tokio::time::timeout(self.settings.body_timeout, collect).await else {
            return (
                label,
                error(
                    ErrorCode::RequestTimeout,
                    "request body did not arrive in time",
                ),
            );
        };
        let body = match collected {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let m = format!(
                    "request body exceeds {} bytes",
                    self.settings.max_body_bytes
                );
                return (label, error(ErrorCode::BodyTooLarge, m));
            }
            Err(e) => {
                return (
                    label,
                    error(ErrorCode::InvalidJson, format!("reading body: {e}")),
                )
            }
        };
        if route == Route::Login {
            return (label, self.login(&body).await);
        }
        if route == Route::Logout {
            return (label, self.logout(parts, base).await);
        }
        let cred = match self.authenticate(parts) {
            Some(c) => c,
            None => return (label, challenge(base)),
        };
        let kind = kind_of(&route);
        let request_id = if kind == Kind::Create {
            match request_id(&parts.headers) {
                Ok(id) => Some(id),
                Err((code, message)) => return (label, error(code, message)),
            }
        } else {
            None
        };
        let out = Outgoing {
            method: parts.method.clone(),
            pq: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(path)
                .to_string(),
            slow: slow_keygen(&route, &body),
            body,
            request_id,
        };
        (label, self.execute(&route, kind, &cred, &out, base).await)
    }

    fn health(&self) -> Resp {
        let members = self.forwarder.group.members();
        let now = tokio::time::Instant::now();
        let healthy = members.iter().filter(|m| m.serving(now)).count();
        let status = if healthy > 0 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let h = hsm_api::Health {
            status: if healthy > 0 { "ready" } else { "not-ready" }.into(),
            reason: (healthy == 0).then(|| "no member of the group is healthy".to_string()),
            sync_generation: None,
        };
        json_bytes(
            status,
            Bytes::from(serde_json::to_vec(&h).unwrap_or_default()),
        )
    }

    fn authenticate(&self, parts: &http::request::Parts) -> Option<Credential> {
        let token = hsm_server::bearer_token(&parts.headers)?;
        let m = self.sessions.read().ok()?;
        let s = m.get(&token_key(token))?;
        (s.expires > Instant::now()).then(|| s.cred.clone())
    }

    async fn login(&self, body: &[u8]) -> Resp {
        let req: LoginRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(ErrorCode::InvalidJson, e.to_string()),
        };
        // The replication role is the members' own (the proxy's background
        // credential): no application route needs it, and forwarding guesses
        // would let anyone lock it on the members, so that a member that
        // restarts could not be logged back in and caught up. The security
        // officer uses no keys, and its guesses would count towards the
        // members' lockout of the role that manages the partition.
        let why = match req.role {
            Role::Replication => Some("it is the proxy's own background credential"),
            Role::SecurityOfficer => Some("it manages partitions on the members and uses no keys"),
            Role::CryptoOfficer | Role::CryptoUser => None,
        };
        if let Some(why) = why {
            return error(
                ErrorCode::Forbidden,
                format!(
                    "the {} role cannot log in through the proxy ({why}); applications log in as crypto-officer or crypto-user",
                    req.role
                ),
            );
        }
        let cred = Credential::new(req.role, &req.password);
        let deadline = self.forwarder.deadlines.attempt;
        let mut tried = Vec::new();
        // A member checks the password; an unreachable one hands over to the next.
        while let Some(m) = self.forwarder.group.pick(&tried) {
            tried.push(m.name().to_string());
            match m.typed(&cred, deadline).await {
                Ok(_) => {
                    let mut raw = [0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut raw);
                    let token = hsm_api::b64::encode(&raw);
                    if let Ok(mut s) = self.sessions.write() {
                        let now = Instant::now();
                        s.retain(|_, v| v.expires > now);
                        s.insert(
                            token_key(&token),
                            AppSession {
                                cred,
                                expires: now + self.settings.token_ttl,
                            },
                        );
                    }
                    let resp = LoginResponse {
                        access_token: token,
                        token_type: "Bearer".into(),
                        expires_in: self.settings.token_ttl.as_secs(),
                    };
                    return json_bytes(
                        StatusCode::OK,
                        Bytes::from(serde_json::to_vec(&resp).unwrap_or_default()),
                    );
                }
                Err(e @ hsm_api::ClientError::Api { .. }) => {
                    let code = e.code().unwrap_or(ErrorCode::LoginFailed);
                    let message = match e {
                        hsm_api::ClientError::Api { message, .. } => message,
                        other => other.to_string(),
                    };
                    return error(code, message);
                }
                Err(e) => {
                    m.note_error(&e.to_string());
                    continue;
                }
            }
        }
        error(
            ErrorCode::Unavailable,
            "no member of the group can check the login now",
        )
    }

    /// Ends an application token: 204, and it answers 401 from now on.
    /// When no other live token holds its credential, the proxy's member
    /// sessions of that credential end too: forgotten here and logged out
    /// on every member at once, each within an attempt deadline (best
    /// effort: a member that does not answer lets its token expire).
    async fn logout(&self, parts: &http::request::Parts, base: &str) -> Resp {
        let Some(token) = hsm_server::bearer_token(&parts.headers) else {
            return challenge(base);
        };
        let now = Instant::now();
        let (cred, shared) = {
            let Ok(mut m) = self.sessions.write() else {
                return error(ErrorCode::Internal, "session table poisoned");
            };
            let Some(s) = m.remove(&token_key(token)).filter(|s| s.expires > now) else {
                return challenge(base);
            };
            let key = s.cred.key();
            let shared = m.values().any(|o| o.expires > now && o.cred.key() == key);
            (s.cred, shared)
        };
        if !shared {
            self.end_member_sessions(&cred).await;
        }
        tracing::info!(role = %cred.role, member_sessions_ended = !shared, "logout");
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    }

    /// Forgets every member session of `cred` and logs out of each; the
    /// logouts run to their end even if the application hangs up.
    async fn end_member_sessions(&self, cred: &Credential) {
        let timeout = self.forwarder.deadlines.attempt;
        let mut tasks = tokio::task::JoinSet::new();
        for m in self.forwarder.group.members().iter() {
            if let Some(c) = m.end_session(cred) {
                let m = m.clone();
                tasks.spawn(async move {
                    if let Err(e) = c.with_timeout(timeout).logout().await {
                        tracing::debug!(member = m.name(), error = %e, "member logout failed");
                    }
                });
            }
        }
        let all = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
        let _ = all.await;
    }

    async fn execute(
        &self,
        route: &Route,
        kind: Kind,
        cred: &Credential,
        out: &Outgoing,
        base: &str,
    ) -> Resp {
        // The deadline counts from the request's arrival, waits included.
        let deadline = self.forwarder.scope(out).deadline;
        // One handler at a time per request id: an application retry that
        // arrives while the first is still running waits for it, then
        // finds the version it made.
        let digest = out
            .request_id
            .as_ref()
            .and_then(|id| request::request_digest(id.as_bytes(), route.label(), &out.body).ok());
        let gate = digest
            .as_ref()
            .map(|d| self.creating.enter(d).unwrap_or_default());
        let bounds = Bounds {
            digest: digest.as_deref(),
            deadline,
            in_turn: false,
            same_id: gate.as_deref(),
        };
        let mut r = self
            .execute_in_turn(route, kind, cred, out, base, bounds)
            .await;
        if let (Some(d), Some(g)) = (&digest, gate) {
            self.creating.release(d, &g);
        }
        if let Some(id) = &out.request_id {
            r.headers_mut()
                .insert(hsm_api::REQUEST_ID_HEADER, id.clone());
        }
        r
    }

    /// Waits for the request's turns — its request id's (a retry of a
    /// running request), its key's (see [`Changes`]) — then runs it.
    async fn execute_in_turn(
        &self,
        route: &Route,
        kind: Kind,
        cred: &Credential,
        out: &Outgoing,
        base: &str,
        mut bounds: Bounds<'_>,
    ) -> Resp {
        let busy = |what: String| error(ErrorCode::Unavailable, format!("{what}; try again"));
        let _same = match bounds.same_id {
            Some(g) => match tokio::time::timeout_at(bounds.deadline, g.lock()).await {
                Ok(held) => Some(held),
                Err(_) => return busy("a request with this request id is still running".into()),
            },
            None => None,
        };
        let mut turn = None;
        if let Some(key) = key_of(route) {
            if kind == Kind::Create && !out.slow {
                // A quick creation holds its key from the start; a slow
                // one (RSA, rotation) only while it is replicated, so
                // that uses of the key do not wait for its generation.
                turn = self.changes.turn(key, bounds.deadline).await;
                if turn.is_none() {
                    return busy(format!(
                        "another creation of `{key}` is still being replicated"
                    ));
                }
                bounds.in_turn = true;
            } else if kind == Kind::Idempotent
                && !pinned(route)
                && !self.changes.settled(key, bounds.deadline).await
            {
                return busy(format!(
                    "a new version of `{key}` is still being replicated"
                ));
            }
        }
        let r = self
            .execute_once(route, kind, cred, out, base, bounds)
            .await;
        drop(turn);
        r
    }

    async fn execute_once(
        &self,
        route: &Route,
        kind: Kind,
        cred: &Credential,
        out: &Outgoing,
        base: &str,
        bounds: Bounds<'_>,
    ) -> Resp {
        let Bounds {
            digest,
            deadline,
            in_turn,
            ..
        } = bounds;
        let key = key_of(route);
        let mut trace = Trace::default();
        // Members that made this creation and were lost before it could be
        // copied: the next attempt goes elsewhere.
        let mut lost: Vec<String> = Vec::new();
        let (answer, bytes) = loop {
            let mut avoid = lost.clone();
            if let (Some(k), Ok(c)) = (key, self.copying.lock()) {
                avoid.extend(c.get(k).into_iter().flatten().cloned());
            }
            let (member, answer) = match self
                .forwarder
                .forward(
                    cred,
                    out,
                    kind,
                    key,
                    &mut trace,
                    Scope {
                        avoid: &avoid,
                        deadline,
                    },
                )
                .await
            {
                Ok(x) => x,
                Err(e) => return error(e.code(), e.to_string()),
            };
            let bytes = rewrite(&answer.body, member.base_url(), base);
            if kind == Kind::Idempotent || !answer.status.is_success() {
                break (answer, bytes);
            }
            let name = match route {
                Route::RestoreKey => bundle_kid(&bytes).map(|(n, _)| n),
                Route::Operation {
                    op: KeyOp::Derive, ..
                } => bundle_kid(&bytes).map(|(n, _)| n),
                r => key_of(r).map(str::to_string),
            };
            // A version this attempt made can be taken back; one it only
            // found (made by an earlier attempt, maybe acknowledged) never.
            let made = match (digest, answer.stamp, bundle_kid(&bytes)) {
                (Some(d), Some(stamp), Some((_, version))) if !answer.replayed => {
                    Some(hsm_api::WithdrawRequest {
                        name: String::new(),
                        version,
                        request_id: d.to_string(),
                        stamp,
                    })
                }
                _ => None,
            };
            let Some(name) = name else {
                break (answer, bytes);
            };
            let fresh = made.is_some();
            // A new version not yet held: uses of the key wait until it
            // is acknowledged or withdrawn (see `Changes`).
            let _hold = match fresh && !in_turn {
                true => self.changes.turn(&name, deadline).await,
                false => None,
            };
            // The version a creation made or found: it is pending on the
            // members until committed after `min_replicas` copies.
            let version = match kind {
                Kind::Create => bundle_kid(&bytes).map(|(_, v)| v),
                _ => None,
            };
            match self
                .replicate(&member, &name, made, version.as_deref(), deadline)
                .await
            {
                Ok(()) => break (answer, bytes),
                // The member that made a new version was lost before it
                // could be copied: the version exists there only, never
                // acknowledged. Another attempt elsewhere (a later stamp)
                // makes the version that counts; the lost copy loses to it
                // in resync when the member comes back.
                Err(Replication::SourceLost(_))
                    if fresh && tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(
                        member = member.name(),
                        key = %name,
                        "the member that made a key was lost before it was copied; creating it elsewhere"
                    );
                    member.mark_missed();
                    lost.push(member.name().to_string());
                }
                Err(Replication::SourceLost(r) | Replication::NotDurable(r)) => return r,
            }
        };
        let mut r = json_bytes(answer.status, bytes);
        if !answer.status.is_success() {
            if let Some(code) =
                crate::forward::answer_code(&answer).and_then(|c| ErrorCode::parse(&c))
            {
                r.extensions_mut().insert(code);
            }
        }
        r
    }

    /// Copies a changed object from the member that made the change to the
    /// others, and answers an error unless it is durable on `min_replicas`.
    /// `made` names the version a key creation made and its request id: if
    /// it is not durable, it is withdrawn wherever it got to. Opening
    /// sessions and withdrawing take at most an attempt deadline, the
    /// copies what is left of the request's `deadline` (a member slowed by
    /// load still counts, and the quorum answers as soon as it can); none
    /// goes more than `MIN_COPY_TIME` past the deadline.
    async fn replicate(
        &self,
        origin: &Member,
        name: &str,
        made: Option<hsm_api::WithdrawRequest>,
        version: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<(), Replication> {
        let members = self.forwarder.group.members();
        // What is left of the request's deadline (at least MIN_COPY_TIME).
        let left = || {
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(MIN_COPY_TIME)
        };
        let timeout = self.forwarder.deadlines.attempt.min(left());
        let source = members.iter().position(|m| m.name() == origin.name());
        // Sessions with every member at once: a hung member costs one
        // attempt deadline, not one per member.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, m) in members.iter().enumerate() {
            let (m, cred) = (m.clone(), self.background.clone());
            tasks.spawn(async move {
                let r = m.typed(&cred, timeout).await;
                if let Err(e) = &r {
                    m.note_error(&e.to_string());
                }
                (i, r.ok())
            });
        }
        let mut clients: Vec<Option<hsm_api::Client>> = vec![None; members.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, c)) = joined {
                clients[i] = c;
            }
        }
        let need = self.settings.min_replicas.min(members.len()).max(1);
        let Some(src) = source else {
            return Err(Replication::SourceLost(error(
                ErrorCode::Unavailable,
                "the member that made the change left the group",
            )));
        };
        let reachable: Vec<(usize, hsm_api::Client)> = clients
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i, c)))
            .collect();
        let Some(src_pos) = reachable.iter().position(|(i, _)| *i == src) else {
            return Err(Replication::SourceLost(error(
                ErrorCode::Unavailable,
                "cannot reach the member that made the change to copy it",
            )));
        };
        let copy_time = left();
        let only: Vec<hsm_api::Client> = reachable
            .iter()
            .map(|(_, c)| c.with_timeout(copy_time))
            .collect();
        let index: Vec<usize> = reachable.iter().map(|(i, _)| *i).collect();
        // Set once the change is acknowledged: the commit a copy that ends
        // after the answer gets too (a new version).
        let commit_late: Arc<std::sync::OnceLock<hsm_api::CommitRequest>> = Arc::default();
        // A copy that ends after the answer: a member that did not get it
        // lacks an acknowledged change, and serves nothing until caught up.
        let later = {
            let version = version.map(str::to_string);
            let (members, index) = (members.clone(), index.clone());
            let (copying, key) = (self.copying.clone(), name.to_string());
            let (clients, commit_late) = (only.clone(), commit_late.clone());
            move |pos: usize, holds: bool| {
                if let Some(m) = index.get(pos).and_then(|i| members.get(*i)) {
                    match (holds, commit_late.get(), clients.get(pos)) {
                        (true, Some(req), Some(c)) => {
                            let (c, req, m) = (c.clone(), req.clone(), m.clone());
                            tokio::spawn(async move {
                                if let Err(e) = c.clone_commit(&req).await {
                                    tracing::warn!(member = m.name(), key = %req.name, error = %e, "late commit failed");
                                    m.mark_missed();
                                }
                            });
                        }
                        (true, None, _) if version.is_some() => m.mark_missed(),
                        (false, _, _) => m.mark_missed(),
                        _ => {}
                    }
                    crate::metrics::replication_pending(m.name(), usize::from(!holds));
                    copy_ended(&copying, &key, m.name());
                }
            }
        };
        // Every copy is running until it ends: `later` ends the ones that
        // outlast the answer, `marks` (when dropped) all the others.
        let mut marks = CopyMarks::begin(
            &self.copying,
            name,
            index
                .iter()
                .filter(|i| **i != src)
                .map(|&i| members[i].name().to_string())
                .collect(),
        );
        let spread = match resync::spread(&only, src_pos, name, version, need, later).await {
            Ok(s) => s,
            Err(e) => {
                // The others lack a change their origin holds. A new
                // version (`made`) is left unacknowledged on its origin
                // alone and is made again elsewhere: it holds nobody back.
                if made.is_none() {
                    for m in members.iter() {
                        if m.name() != origin.name() {
                            m.mark_missed();
                        }
                    }
                }
                return Err(Replication::SourceLost(error(
                    ErrorCode::Unavailable,
                    format!("replication of `{name}` failed: {e}"),
                )));
            }
        };
        let durable = spread.holders.len();
        for (i, m) in members.iter().enumerate() {
            let pos = index.iter().position(|j| *j == i);
            if pos.is_some_and(|p| spread.pending.contains(&p)) {
                // Still copying: requests on this key avoid it until
                // `later` hears that the copy ended.
                marks.hand_over(m.name());
                crate::metrics::replication_pending(m.name(), 1);
                continue;
            }
            let durable_here = pos.is_some_and(|p| spread.holders.contains(&p));
            if !durable_here {
                // It lacks this change: no requests until it is caught up.
                m.mark_missed();
            }
            crate::metrics::replication_pending(m.name(), usize::from(!durable_here));
        }
        if durable < need {
            let Some(mut req) = made else {
                return Err(Replication::NotDurable(error(
                    ErrorCode::Unavailable,
                    format!(
                        "the change to `{name}` is durable on {durable} member(s), fewer than min_replicas = {need}; \
                         it is not acknowledged, and resync will finish or supersede it"
                    ),
                )));
            };
            req.name = name.to_string();
            let withdraw_time = self.forwarder.deadlines.attempt.min(left());
            let again: Vec<hsm_api::Client> =
                only.iter().map(|c| c.with_timeout(withdraw_time)).collect();
            let withdrawn = withdraw(&again, &req).await;
            let what = if withdrawn >= durable {
                "the new version was withdrawn from every member that held it; nothing was created"
                    .to_string()
            } else {
                format!(
                    "the new version was withdrawn from {withdrawn} member(s); the tombstone \
                     this leaves removes any other copy at the next resync"
                )
            };
            return Err(Replication::NotDurable(error(
                ErrorCode::Unavailable,
                format!(
                    "`{name}` could be made durable on {durable} member(s) only, fewer than \
                     min_replicas = {need}: {what}. A retry with the x-ms-client-request-id \
                     of this answer makes at most one version"
                ),
            )));
        }
        // Durable on `need` members: a new version is committed on them
        // (and on each copy that ends later), and only then acknowledged.
        let Some(vr) = spread.version.filter(|v| v.pending) else {
            return Ok(());
        };
        let req = hsm_api::CommitRequest {
            name: name.to_string(),
            version: vr.version,
            material: vr.material,
        };
        let _ = commit_late.set(req.clone());
        let commit_time = self.forwarder.deadlines.attempt.min(left());
        let mut tasks = tokio::task::JoinSet::new();
        for &pos in &spread.holders {
            let (c, req) = (only[pos].with_timeout(commit_time), req.clone());
            tasks.spawn(async move { (pos, c.clone_commit(&req).await) });
        }
        let mut committed = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(_))) => committed += 1,
                Ok((pos, Err(e))) => {
                    tracing::warn!(key = %name, error = %e, "commit failed");
                    if let Some(m) = index.get(pos).and_then(|i| members.get(*i)) {
                        m.mark_missed();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "commit task failed"),
            }
        }
        if committed < need {
            return Err(Replication::NotDurable(error(
                ErrorCode::Unavailable,
                format!(
                    "the new version of `{name}` is durable on {durable} member(s) but was committed on \
                     {committed} only, fewer than min_replicas = {need}: it is not acknowledged. It may \
                     become visible when resync spreads the commit; a retry with the x-ms-client-request-id \
                     of this answer finds it instead of making another"
                ),
            )));
        }
        Ok(())
    }
}

/// Whether a request generates a key that may take seconds (an RSA key;
/// a rotation, whose key type the proxy does not know).
fn slow_keygen(route: &Route, body: &[u8]) -> bool {
    match route {
        Route::RotateKey { .. } => true,
        Route::CreateKey { .. } => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("kty")?.as_str().map(|k| k.starts_with("RSA")))
            .unwrap_or(false),
        _ => false,
    }
}

/// Asks every member to withdraw a version; returns how many removed it.
async fn withdraw(members: &[hsm_api::Client], req: &hsm_api::WithdrawRequest) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for m in members {
        let (m, req) = (m.clone(), req.clone());
        tasks.spawn(async move { m.clone_withdraw(&req).await });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(w)) if w.withdrawn => n += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(key = %req.name, error = %e, "withdraw failed"),
            Err(e) => tracing::warn!(error = %e, "withdraw task failed"),
        }
    }
    n
}

/// The request id of a key creation: the application's
/// `x-ms-client-request-id` (the SDKs keep it across their retries, so a
/// retried create finds the key it made), else a fresh one. A malformed
/// header is refused.
fn request_id(headers: &http::HeaderMap) -> Result<HeaderValue, (ErrorCode, String)> {
    match headers.get(hsm_api::REQUEST_ID_HEADER) {
        Some(v) => match request::request_digest(v.as_bytes(), "", b"") {
            Ok(_) => Ok(v.clone()),
            Err(e) => Err((ErrorCode::BadParameter, e.to_string())),
        },
        None => {
            let mut raw = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            HeaderValue::from_str(&hex::encode(raw))
                .map_err(|e| (ErrorCode::Internal, e.to_string()))
        }
    }
}

/// The name and version in a key bundle's kid (`…/keys/{name}/{version}`).
fn bundle_kid(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let kid = v.get("key")?.get("kid")?.as_str()?;
    let mut parts = kid.rsplit('/');
    let version = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    Some((name, version))
}

/// Replaces the member's partition base URL with the proxy's in an answer.
fn rewrite(body: &Bytes, member_base: &str, proxy_base: &str) -> Bytes {
    match std::str::from_utf8(body) {
        Ok(text) if text.contains(member_base) => {
            Bytes::from(text.replace(member_base, proxy_base))
        }
        _ => body.clone(),
    }
}

/// The copies of one change a request has running, in `Proxy::copying`
/// while they run. Dropping it ends every copy not handed over to the
/// background (so an error or a dropped request leaves no stale mark).
struct CopyMarks {
    copying: Arc<Copying>,
    key: String,
    members: Vec<String>,
}

impl CopyMarks {
    fn begin(copying: &Arc<Copying>, key: &str, members: Vec<String>) -> CopyMarks {
        if let Ok(mut c) = copying.lock() {
            c.entry(key.to_string())
                .or_default()
                .extend(members.iter().cloned());
        }
        CopyMarks {
            copying: copying.clone(),
            key: key.to_string(),
            members,
        }
    }

    /// This member's copy outlasts the request; the background ends it.
    fn hand_over(&mut self, member: &str) {
        self.members.retain(|m| m != member);
    }
}

impl Drop for CopyMarks {
    fn drop(&mut self) {
        for m in &self.members {
            copy_ended(&self.copying, &self.key, m);
        }
    }
}

/// One member's copy of `key` ended (see `Proxy::copying`).
fn copy_ended(copying: &Copying, key: &str, member: &str) {
    if let Ok(mut c) = copying.lock() {
        if let Some(v) = c.get_mut(key) {
            if let Some(at) = v.iter().position(|n| n == member) {
                v.swap_remove(at);
            }
            if v.is_empty() {
                c.remove(key);
            }
        }
    }
}

/// The least time copies get, even when the request's deadline is
/// nearly spent by its attempts.
const MIN_COPY_TIME: Duration = Duration::from_millis(200);

/// Why a change was not acknowledged.
enum Replication {
    /// The member that made it could not be reached to copy it (it left
    /// the group, or died or hung right after answering): nothing was
    /// copied anywhere.
    SourceLost(Resp),
    /// Copied, but to fewer than `min_replicas` members.
    NotDurable(Resp),
}

/// Whether the request names a plain `host[:port]` (its authority or
/// `Host`), as HTTP/1.1 requires of every request. Checked and then
/// ignored: answers carry `public_url`, whatever host was named.
fn names_a_host(parts: &http::request::Parts) -> Result<(), &'static str> {
    let host = match parts.uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => match parts.headers.get(header::HOST) {
            Some(h) => h
                .to_str()
                .map_err(|_| "the Host header is not a host name")?
                .to_string(),
            None => return Err("the request names no host"),
        },
    };
    let authority: http::uri::Authority = host
        .parse()
        .map_err(|_| "the Host header is not a host name")?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err("the Host header is not a host name");
    }
    Ok(())
}

/// The 401 with the bearer challenge the Key Vault SDKs expect.
fn challenge(base: &str) -> Resp {
    let mut r = error(
        ErrorCode::Unauthorized,
        "a bearer token is required; POST /login first",
    );
    let v = format!("Bearer authorization=\"{base}/login\", resource=\"{base}\"");
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{copy_ended, names_a_host, CopyMarks, Copying};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn marked(c: &Copying, key: &str) -> Vec<String> {
        let mut v = c.lock().unwrap().get(key).cloned().unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn copy_marks_last_while_copies_run_and_never_go_stale() {
        let c: Arc<Copying> = Arc::new(Mutex::new(HashMap::new()));
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        {
            let mut marks = CopyMarks::begin(&c, "k", names(&["m1", "m2"]));
            // A second change of the same key, concurrently.
            let other = CopyMarks::begin(&c, "k", names(&["m2"]));
            assert_eq!(marked(&c, "k"), names(&["m1", "m2", "m2"]));
            drop(other);
            assert_eq!(marked(&c, "k"), names(&["m1", "m2"]));
            // m2's copy outlasts the request: the background ends it.
            marks.hand_over("m2");
        }
        assert_eq!(marked(&c, "k"), names(&["m2"]), "m1 ended with the request");
        copy_ended(&c, "k", "m2");
        assert!(c.lock().unwrap().is_empty(), "nothing left behind");
        // Ending a copy twice (or one never marked) takes nothing else.
        let _keep = CopyMarks::begin(&c, "j", names(&["m0"]));
        copy_ended(&c, "j", "m1");
        assert_eq!(marked(&c, "j"), names(&["m0"]));
    }

    fn parts(uri: &str, host: Option<&[u8]>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(
                http::header::HOST,
                http::HeaderValue::from_bytes(h).unwrap(),
            );
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_plain_host_or_authority_is_taken() {
        for (uri, host) in [
            ("/keys", Some(&b"127.0.0.1:8443"[..])),
            ("https://[::1]:9/keys", None),
            ("/keys", Some(b"hsm.example")),
        ] {
            assert!(names_a_host(&parts(uri, host)).is_ok(), "{uri} {host:?}");
        }
    }

    #[test]
    fn a_host_that_is_not_a_plain_authority_is_refused() {
        for bad in [
            &b"1\t7.0.0.1"[..],
            b"a b",
            b"user@host",
            b"host/path",
            b"h\"ost",
            b"h\\ost",
            b"",
            b":443",
        ] {
            assert!(
                names_a_host(&parts("/keys", Some(bad))).is_err(),
                "{:?} was taken",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(names_a_host(&parts("/keys", None)).is_err());
    }
}

//! One member of the group as the proxy sees it: its identity, its
//! connection pool, its sessions (one per credential), its load and its
//! health.
//!
//! Decides: how a request reaches a member with a valid session (logging
//! in, and back in after the member restarted, by itself, one login at a
//! time per member; a request that got no session was never sent), and what the
//! member's observable state is. Never: which member to use (`group`,
//! `balance`) or what to do when it fails (`forward`).

use crate::balance::{self, Load};
use crate::health::MemberHealth;
use bytes::Bytes;
use hsm_api::{Client, ClientError, Role};
use http::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// Whether a member takes traffic normally or only when no active one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Active,
    Standby,
}

/// What the proxy needs to know to reach a member.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub name: String,
    /// `https://host:port` of the node.
    pub url: String,
    pub role: MemberRole,
    pub weight: u32,
    /// Free text: cloud, peered, on-prem…
    pub location: String,
    /// The member's partition base (`{url}/partitions/{p}`) and TLS files.
    pub client: hsm_api::ClientConfig,
}

/// A credential the proxy logs in to members with.
#[derive(Clone)]
pub struct Credential {
    pub role: Role,
    pub password: Arc<Zeroizing<String>>,
    /// Names the credential without holding the password (computed once:
    /// every forwarded request looks its session up by it).
    key: [u8; 32],
}

impl Credential {
    pub fn new(role: Role, password: &str) -> Credential {
        let mut h = Sha256::new();
        h.update(role.as_str().as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        Credential {
            role,
            password: Arc::new(Zeroizing::new(password.to_string())),
            key: h.finalize().into(),
        }
    }
    /// A key naming this credential without holding the password.
    pub fn key(&self) -> [u8; 32] {
        self.key
    }
}

/// A member at run time.
pub struct Member {
    pub spec: MemberSpec,
    /// The member's connection pool (sessions fork it).
    client: Client,
    /// The node's root (for `/health`), unauthenticated.
    root: Client,
    /// One logged-in client per credential.
    sessions: Arc<Mutex<HashMap<[u8; 32], Client>>>,
    /// The login in progress per credential. A member coming back under
    /// load gets one login (a password hash on the member) per credential,
    /// not one per request; the login runs in its own task to its end
    /// ([`LOGIN_TIMEOUT`]) even when the requests that wait on it give up
    /// first, so impatient requests never pile abandoned logins on the
    /// member. The entry goes when the login ends.
    logins: Arc<Mutex<HashMap<[u8; 32], LoginFlight>>>,
    pub load: Load,
    pub health: Mutex<MemberHealth>,
    /// The last error seen, for the status page.
    pub last_error: Mutex<Option<String>>,
    /// Drained by an operator: no new requests.
    pub drained: std::sync::atomic::AtomicBool,
    /// Changes this proxy could not copy to the member and has not yet
    /// reported to it (`SyncRequest::Behind`). While non-zero it serves no
    /// request through this proxy; once the member knows, its own sync
    /// state (below) holds it out for every proxy.
    missed: std::sync::atomic::AtomicU64,
    /// The member's own sync state, as last read by a health check: it
    /// serves only while in sync (and of this proxy's member protocol).
    sync: Mutex<Option<hsm_api::SyncState>>,
    /// The member's `sync_generation` (in its `/health` answer) when `sync`
    /// was read: while a check sees the same number, the state has not
    /// moved and is not read again.
    sync_seen: Mutex<Option<u64>>,
    /// Unit tests only: answers every request instead of the network, so
    /// that the forwarder's timing runs on tokio's paused clock.
    #[cfg(test)]
    script: Option<Script>,
}

/// A scripted member's answer to one request (unit tests of `forward`).
#[cfg(test)]
pub(crate) type Script = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Answer, ClientError>> + Send>,
        > + Send
        + Sync,
>;

/// How long one login to a member may take, whoever waits on it (a
/// password hash on a busy member can take a while; a member that does not
/// answer at all is left to the health checks).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A login under way: its answer once it has one.
type LoginFlight = tokio::sync::watch::Receiver<Option<Result<Client, ClientError>>>;

/// A member's answer to a forwarded request.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// The member answered with a version an earlier attempt made
    /// (`hsm_api::REPLAYED_HEADER`).
    pub replayed: bool,
    /// The stamp this attempt carried (key creations).
    pub stamp: Option<u64>,
}

impl Member {
    pub fn new(spec: MemberSpec) -> Result<Member, ClientError> {
        let client = Client::new(&spec.client)?;
        let mut root_cfg = spec.client.clone();
        root_cfg.base_url = spec.url.trim_end_matches('/').to_string();
        let root = Client::new(&root_cfg)?;
        let load = Load::new(
            spec.weight,
            balance::DEFAULT_DECAY,
            Duration::from_millis(5),
        );
        Ok(Member {
            spec,
            client,
            root,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            logins: Arc::new(Mutex::new(HashMap::new())),
            load,
            health: Mutex::new(MemberHealth::default()),
            last_error: Mutex::new(None),
            drained: std::sync::atomic::AtomicBool::new(false),
            missed: std::sync::atomic::AtomicU64::new(0),
            sync: Mutex::new(None),
            sync_seen: Mutex::new(None),
            #[cfg(test)]
            script: None,
        })
    }

    /// A healthy active member that answers by `script` (unit tests).
    #[cfg(test)]
    pub(crate) fn scripted(name: &str, script: Script) -> Result<Member, ClientError> {
        let spec = MemberSpec {
            name: name.to_string(),
            url: format!("https://{name}.invalid"),
            role: MemberRole::Active,
            weight: 1,
            location: "test".into(),
            client: hsm_api::ClientConfig {
                base_url: format!("https://{name}.invalid/partitions/p"),
                ca_pem: include_bytes!("testdata/scripted-ca.pem").to_vec(),
                identity_pem: None,
                timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
            },
        };
        let m = Member {
            script: Some(script),
            ..Member::new(spec)?
        };
        if let Ok(mut h) = m.health.lock() {
            *h = MemberHealth::up();
        }
        m.set_sync(Some(hsm_api::SyncState {
            protocol: hsm_api::MEMBER_PROTOCOL,
            behind: 0,
            synced: 0,
            last_synced: 0,
            expired: false,
            lease: None,
        }));
        Ok(m)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether requests may go to the member now: healthy (checks up, not
    /// ejected), not drained, and caught up by its own account.
    pub fn serving(&self, now: tokio::time::Instant) -> bool {
        !self.drained.load(std::sync::atomic::Ordering::SeqCst)
            && self.missed() == 0
            && self.in_sync()
            && self.health.lock().map(|h| h.healthy(now)).unwrap_or(false)
    }

    /// Records the member's sync state (`None`: unknown, not in sync).
    pub fn set_sync(&self, s: Option<hsm_api::SyncState>) {
        if let Ok(mut g) = self.sync.lock() {
            *g = s;
        }
    }

    /// Records the state read under the member's `sync_generation` `seen`
    /// (from the health check before the read).
    pub fn set_sync_seen(&self, s: Option<hsm_api::SyncState>, seen: Option<u64>) {
        self.set_sync(s);
        if let Ok(mut g) = self.sync_seen.lock() {
            *g = seen;
        }
    }

    /// Whether what this proxy knows of the member's sync state still holds
    /// under the `sync_generation` of its latest health answer: in sync,
    /// read under that same number, and no change of ours to report.
    pub fn sync_unmoved(&self, generation: Option<u64>) -> bool {
        generation.is_some()
            && self.sync_seen.lock().is_ok_and(|g| *g == generation)
            && self.missed() == 0
            && self.in_sync()
    }

    /// The member's sync state as last read.
    pub fn sync_state(&self) -> Option<hsm_api::SyncState> {
        self.sync.lock().ok().and_then(|g| g.clone())
    }

    /// The member says it holds every change, and speaks our protocol.
    pub fn in_sync(&self) -> bool {
        self.sync_state()
            .is_some_and(|s| s.protocol == hsm_api::MEMBER_PROTOCOL && s.in_sync())
    }

    /// Notes that the member may lack a change (see `missed`).
    pub fn mark_missed(&self) {
        self.missed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The count of possibly missed changes; see [`Member::caught_up`].
    pub fn missed(&self) -> u64 {
        self.missed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The member was told of the misses counted up to `seen` (it counts
    /// itself behind): clear the count, unless something was missed since.
    pub fn caught_up(&self, seen: u64) {
        let _ = self.missed.compare_exchange(
            seen,
            0,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Body bytes (sent, received) exchanged with the member so far, by
    /// every session.
    pub fn traffic(&self) -> (u64, u64) {
        self.client.traffic().bytes()
    }

    /// The partition base URL on this member; every kid it returns starts so.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// The client of a credential, logging in if there is no session yet
    /// (or waiting, at most `timeout`, for the login already under way).
    async fn session(&self, cred: &Credential, timeout: Duration) -> Result<Client, ClientError> {
        let key = cred.key();
        let existing = || self.sessions.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(c) = existing() {
            return Ok(c.with_timeout(timeout));
        }
        let mut flight = {
            let Ok(mut logins) = self.logins.lock() else {
                return Err(ClientError::Config("login table poisoned".into()));
            };
            // A login may have ended between the look above and this lock.
            if let Some(c) = existing() {
                return Ok(c.with_timeout(timeout));
            }
            logins
                .entry(key)
                .or_insert_with(|| self.start_login(cred))
                .clone()
        };
        let url = || format!("{}/login", self.client.base_url());
        let answer = match tokio::time::timeout(timeout, flight.wait_for(Option::is_some)).await {
            Err(_) => Err(ClientError::Timeout {
                url: url(),
                timeout,
            }),
            Ok(Err(_)) => Err(ClientError::Connect {
                url: url(),
                message: "the login task ended without an answer".into(),
            }),
            Ok(Ok(done)) => match done.as_ref() {
                Some(Ok(c)) => Ok(c.with_timeout(timeout)),
                Some(Err(e)) => Err(e.clone()),
                None => Err(ClientError::Connect {
                    url: url(),
                    message: "the login ended without an answer".into(),
                }),
            },
        };
        answer
    }

    /// Starts the one login of `cred` in its own task; see `logins`.
    fn start_login(&self, cred: &Credential) -> LoginFlight {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let key = cred.key();
        // Typed calls (replication, resync, withdrawals) log back in by
        // themselves if the member restarts and forgets the token.
        let client = self.client.fork().relogin_as(cred.role, &cred.password);
        let (role, password) = (cred.role, cred.password.clone());
        let (sessions, logins) = (self.sessions.clone(), self.logins.clone());
        tokio::spawn(async move {
            let result = client
                .with_timeout(LOGIN_TIMEOUT)
                .login(role, &password)
                .await
                .map(|_| client);
            if let (Ok(c), Ok(mut m)) = (&result, sessions.lock()) {
                m.insert(key, c.clone());
            }
            if let Ok(mut l) = logins.lock() {
                l.remove(&key);
            }
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// Forgets every session (the member went down or refused one: it may
    /// have restarted and forgotten its tokens); the next use logs in again.
    pub fn forget_sessions(&self) {
        if let Ok(mut m) = self.sessions.lock() {
            m.clear();
        }
    }

    /// Forgets the session of `cred` and hands it over (to be logged out:
    /// the application logged out); the next use logs in again.
    pub fn end_session(&self, cred: &Credential) -> Option<Client> {
        self.sessions.lock().ok()?.remove(&cred.key())
    }

    /// Forgets the session of `cred` if it still holds the token a
    /// refused request carried (not one a later login brought).
    fn forget_session(&self, cred: &Credential, refused: &Option<String>) {
        if let Ok(mut m) = self.sessions.lock() {
            if m.get(&cred.key()).is_some_and(|c| c.token() == *refused) {
                m.remove(&cred.key());
            }
        }
    }

    /// Sends one request with a session of `cred`; a 401 (the member
    /// restarted and forgot the token) logs in again once, by itself.
    pub async fn send(
        &self,
        cred: &Credential,
        method: &Method,
        path_and_query: &str,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        #[cfg(test)]
        if let Some(script) = &self.script {
            return script().await;
        }
        for attempt in 0..2 {
            // Without a session the request itself was never sent.
            let c = self.session(cred, timeout).await.map_err(unsent)?;
            let ct = (!body.is_empty()).then_some("application/json");
            let token = c.token();
            let (status, answer_headers, bytes) = c
                .raw_with(method.clone(), path_and_query, ct, headers, body.clone())
                .await?;
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.forget_session(cred, &token);
                continue;
            }
            return Ok(Answer {
                status,
                body: bytes,
                replayed: answer_headers
                    .get(hsm_api::REPLAYED_HEADER)
                    .is_some_and(|v| v.as_bytes() == b"true"),
                stamp: None,
            });
        }
        Err(ClientError::Api {
            status: 401,
            code: "Unauthorized".into(),
            message: "member refused the session".into(),
        })
    }

    /// A typed call with a session (the member protocol, health checks).
    pub async fn typed(&self, cred: &Credential, timeout: Duration) -> Result<Client, ClientError> {
        self.session(cred, timeout).await
    }

    /// The node's `/health`, with a deadline: Ok(true) when ready.
    /// One health check: whether the member is ready, and its
    /// `sync_generation` (see [`Member::sync_unmoved`]).
    pub async fn check_health(
        &self,
        timeout: Duration,
    ) -> Result<(bool, Option<u64>), ClientError> {
        match self.root.with_timeout(timeout).health().await {
            Ok(h) => Ok((h.status == "ready", h.sync_generation)),
            Err(ClientError::Api { .. }) => Ok((false, None)),
            Err(e) => Err(e),
        }
    }

    pub fn note_error(&self, e: &str) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e.chars().take(300).collect());
        }
    }
}

/// A failure to open a session (reaching or logging in to the member)
/// means the request was never sent: it may go elsewhere at no risk. A
/// member's refusal of the credential stays what it is.
fn unsent(e: ClientError) -> ClientError {
    match e {
        ClientError::Timeout { url, timeout } => ClientError::Connect {
            url,
            message: format!("no session within {timeout:?}; the request was not sent"),
        },
        ClientError::Transport { url, message } => ClientError::Connect {
            url,
            message: format!("opening a session: {message}; the request was not sent"),
        },
        other => other,
    }
}

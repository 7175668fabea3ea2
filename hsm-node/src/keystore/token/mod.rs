//! A PKCS#11 token as the node's key store: opening the module, choosing
//! the slot, logging in, and a bounded pool of sessions that every call
//! runs on, off the async runtime.
//!
//! Decides:
//! - the slot is chosen by token label or serial, never by slot number
//!   (slot numbers change when tokens are added or removed);
//! - the PIN comes from a file (or a systemd credential, which is a file),
//!   read once; a PIN the token refuses at start is tried **once** and the
//!   open fails with [`TokenError::WrongPin`]: the node must never burn the
//!   token's own lockout counter in a retry loop. A login that lapses later
//!   (`CKR_USER_NOT_LOGGED_IN`) is renewed once; a PIN refused then stops
//!   every further login until a restart and makes the token unhealthy;
//! - every call takes one of `sessions` permits and runs on a blocking
//!   thread with a deadline (`call_timeout`). A call past its deadline
//!   keeps its permit until it returns, so hung calls can never grow
//!   without bound, and the token reports unhealthy while any is hung;
//! - with `exclusive_writes` (the default on SoftHSM2 only), a call that
//!   creates or destroys objects (a key generated, unwrapped or created,
//!   objects destroyed) takes every session permit, so it runs alone:
//!   SoftHSM2's file store fails a creation that meets another session's
//!   object search with `CKR_GENERAL_ERROR` (SoftHSMv2 issue 573; measured
//!   by the `a_burst_of_creations…` test). Other tokens run writes beside
//!   key use;
//! - a session whose handle went invalid, or a token that was removed, is
//!   dropped and the call tried once more on a fresh session; what fails
//!   again makes the token unhealthy (so the proxy fails over) until a
//!   later call succeeds;
//! - the key operations remember each key's object handle once found
//!   (`C_FindObjects` on every call costs more than the `C_Sign` itself in
//!   SoftHSM2, and grows with the objects on the token). PKCS#11 lets any
//!   session of the application use a handle another found. The node's own
//!   destroys forget them all; a handle the token refuses
//!   (`CKR_OBJECT_HANDLE_INVALID`, `CKR_KEY_HANDLE_INVALID`: an object
//!   destroyed behind the node's back) forgets them all and the call is
//!   tried once more with handles found afresh; a lost session or a
//!   lapsed login (which a token taken out and put back gives, after which
//!   a handle may name another object) forgets them too. At most
//!   [`MAX_CACHED_HANDLES`] are kept;
//! - the mechanism list is read at open: an operation the token lacks is
//!   refused with [`TokenError::Unsupported`] naming the mechanism, before
//!   any call.
//!
//! Never: what a key is made of (`keys`) or the operations' arguments
//! (`ops`); metadata or authorisation (the node's service).

pub mod keys;
pub mod ops;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// Default number of concurrent PKCS#11 sessions.
pub const DEFAULT_SESSIONS: usize = 8;
/// Object handles remembered at most (beyond it the memory starts again).
pub const MAX_CACHED_HANDLES: usize = 65_536;
/// Default deadline of one PKCS#11 call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline of a key generation (`C_GenerateKey`,
/// `C_GenerateKeyPair`): RSA-4096 takes seconds on many tokens.
pub const DEFAULT_KEYGEN_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the token.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// The vendor's PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token, by label or serial number.
    pub select: TokenSelect,
    /// File holding the crypto user's PIN (one line; a trailing newline is
    /// ignored).
    pub pin_file: PathBuf,
    /// Concurrent sessions (and so concurrent calls), at least 1.
    pub sessions: usize,
    /// Deadline of one call, the wait for a free session included.
    pub call_timeout: Duration,
    /// Deadline of a key generation, the wait for a session included.
    pub keygen_timeout: Duration,
    /// Whether a call that creates or destroys objects runs alone;
    /// `None`: on SoftHSM2 only (see the module's top comment).
    pub exclusive_writes: Option<bool>,
}

/// Which token of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelect {
    Label(String),
    Serial(String),
}

impl std::fmt::Display for TokenSelect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelect::Label(l) => write!(f, "label `{l}`"),
            TokenSelect::Serial(s) => write!(f, "serial `{s}`"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("PKCS#11 module {path}: {reason}")]
    Module { path: PathBuf, reason: String },
    #[error("no token with {select} in {module}; tokens there: {found}")]
    NoSuchToken {
        select: TokenSelect,
        module: PathBuf,
        found: String,
    },
    #[error("PIN file {path}: {reason}")]
    PinFile { path: PathBuf, reason: String },
    /// The token refused the PIN. Not retried: the token's lockout counter
    /// is the customer's.
    #[error(
        "the token refused the PIN from {path} ({rv}); not tried again, so as not to \
         lock the token: check the PIN file"
    )]
    WrongPin { path: PathBuf, rv: String },
    #[error("the token lacks {mechanism}, which {what} needs")]
    Unsupported {
        mechanism: String,
        what: &'static str,
    },
    /// What hsm-node does not (yet) do on a token member, whatever the
    /// token offers: Ed25519 and X25519 keys, EdDSA, key agreement.
    #[error("{what} on a token member is not supported by hsm-node yet ({mechanism})")]
    NotYet {
        mechanism: &'static str,
        what: &'static str,
    },
    /// A key of the wrong kind for the operation, or bad input the token
    /// refused (bad signature length, bad ciphertext).
    #[error("{0}")]
    Invalid(String),
    #[error("the token did not answer {function} within {secs} s")]
    Timeout { function: &'static str, secs: u64 },
    #[error("the token is unavailable: {0}")]
    Unavailable(String),
    #[error("{function}: {rv}")]
    Call { function: &'static str, rv: String },
}

impl TokenError {
    /// Whether the token (rather than the request) failed: the node should
    /// report unhealthy and the proxy fail over.
    pub fn is_token_fault(&self) -> bool {
        matches!(
            self,
            TokenError::Timeout { .. } | TokenError::Unavailable(_) | TokenError::Call { .. }
        )
    }
}

/// What the token's state says about this node's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHealth {
    Ok,
    Unhealthy(String),
}

/// An open, logged-in token.
#[derive(Clone)]
pub struct Token {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    pin_file: PathBuf,
    describe: String,
    mechanisms: HashSet<u64>,
    idle: Mutex<Vec<Session>>,
    /// Object handles found by `CKA_ID` and part.
    handles: Mutex<HashMap<(Vec<u8>, keys::Part), ObjectHandle>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// `permits`' size: what a write takes when it runs alone.
    sessions: u32,
    exclusive_writes: bool,
    call_timeout: Duration,
    keygen_timeout: Duration,
    /// Calls past their deadline that have not returned yet.
    hung: AtomicUsize,
    /// The PIN was refused on a renewal: no more logins.
    login_refused: AtomicBool,
    /// The last call failed for a reason of the token's own.
    last_fault: Mutex<Option<String>>,
}

/// The text of a PKCS#11 return value, as the spec spells it.
pub(crate) fn rv_text(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, _) => format!("{rv:?}"),
        other => other.to_string(),
    }
}

fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Return values after which the session is useless.
fn session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::DeviceError
            | RvError::CryptokiNotInitialized
    )
}

/// Return values that mean the token or its link failed, not the request.
fn token_fault(rv: RvError) -> bool {
    session_lost(rv)
        || matches!(
            rv,
            RvError::DeviceMemory
                | RvError::HostMemory
                | RvError::GeneralError
                | RvError::FunctionFailed
                | RvError::TokenWriteProtected
                | RvError::UserNotLoggedIn
        )
}

/// Reads the PIN file: one line, surrounding whitespace ignored.
fn read_pin(path: &Path) -> Result<AuthPin, TokenError> {
    let bad = |reason: String| TokenError::PinFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("is not UTF-8".into()))?;
    let pin = text.trim();
    if pin.is_empty() {
        return Err(bad("is empty".into()));
    }
    if pin.contains('\n') {
        return Err(bad("holds more than one line".into()));
    }
    Ok(AuthPin::from(pin.to_string()))
}

fn find_slot(ctx: &Pkcs11, cfg: &TokenConfig) -> Result<(Slot, String), TokenError> {
    let module_err = |e: CkError| TokenError::Module {
        path: cfg.module.clone(),
        reason: format!("C_GetSlotList: {}", rv_text(&e)),
    };
    let mut found = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(module_err)? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let (label, serial) = (info.label().trim(), info.serial_number().trim());
        let hit = match &cfg.select {
            TokenSelect::Label(l) => label == l,
            TokenSelect::Serial(s) => serial == s,
        };
        if hit {
            let describe = format!(
                "{} {} (label `{label}`, serial `{serial}`)",
                info.manufacturer_id().trim(),
                info.model().trim()
            );
            return Ok((slot, describe));
        }
        found.push(format!("`{label}` (serial {serial})"));
    }
    Err(TokenError::NoSuchToken {
        select: cfg.select.clone(),
        module: cfg.module.clone(),
        found: if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        },
    })
}

impl Token {
    /// Loads the module, finds the token, logs in once and reads its
    /// mechanisms. Blocking: call it before the runtime serves requests, or
    /// from `spawn_blocking`.
    pub fn open(cfg: &TokenConfig) -> Result<Token, TokenError> {
        if cfg.sessions == 0 {
            return Err(TokenError::Invalid("sessions must be at least 1".into()));
        }
        let pin = read_pin(&cfg.pin_file)?;
        let module_err = |what: &str, e: CkError| TokenError::Module {
            path: cfg.module.clone(),
            reason: format!("{what}: {}", rv_text(&e)),
        };
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| module_err("loading", e))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_err("C_Initialize", e)),
        }
        let (slot, describe) = find_slot(&ctx, cfg)?;
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| module_err("C_GetMechanismList", e))?
            .into_iter()
            .map(|m| *m)
            .collect();
        let first = ctx
            .open_rw_session(slot)
            .map_err(|e| module_err("C_OpenSession", e))?;
        match first.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e @ CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked, _))
            | Err(e @ CkError::Pkcs11(RvError::PinExpired | RvError::PinInvalid, _)) => {
                return Err(TokenError::WrongPin {
                    path: cfg.pin_file.clone(),
                    rv: rv_text(&e),
                })
            }
            Err(e) => return Err(module_err("C_Login", e)),
        }
        let sessions = u32::try_from(cfg.sessions)
            .map_err(|_| TokenError::Invalid("sessions must be at most 2^32-1".into()))?;
        let exclusive_writes = cfg
            .exclusive_writes
            .unwrap_or_else(|| describe.starts_with("SoftHSM"));
        tracing::info!(token = %describe, module = %cfg.module.display(), sessions, exclusive_writes, "token logged in");
        Ok(Token {
            inner: Arc::new(Inner {
                ctx,
                slot,
                pin,
                pin_file: cfg.pin_file.clone(),
                describe,
                mechanisms,
                idle: Mutex::new(vec![first]),
                handles: Mutex::new(HashMap::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(cfg.sessions)),
                sessions,
                exclusive_writes,
                call_timeout: cfg.call_timeout,
                keygen_timeout: cfg.keygen_timeout,
                hung: AtomicUsize::new(0),
                login_refused: AtomicBool::new(false),
                last_fault: Mutex::new(None),
            }),
        })
    }

    /// Manufacturer, model, label and serial, for logs and the audit trail.
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    /// Whether the token offers a mechanism.
    pub fn has(&self, m: MechanismType) -> bool {
        self.inner.mechanisms.contains(&*m)
    }

    /// Refuses an operation whose mechanism the token lacks.
    pub fn require(&self, m: MechanismType, what: &'static str) -> Result<(), TokenError> {
        if self.has(m) {
            Ok(())
        } else {
            Err(TokenError::Unsupported {
                mechanism: m.to_string(),
                what,
            })
        }
    }

    /// The token's part of the node's health.
    pub fn health(&self) -> TokenHealth {
        let i = &self.inner;
        let hung = i.hung.load(Ordering::SeqCst);
        if hung > 0 {
            return TokenHealth::Unhealthy(format!(
                "{hung} PKCS#11 call(s) past their deadline have not returned"
            ));
        }
        if i.login_refused.load(Ordering::SeqCst) {
            return TokenHealth::Unhealthy(format!(
                "the token refused the PIN from {} on a renewed login",
                i.pin_file.display()
            ));
        }
        match i.last_fault.lock().ok().and_then(|f| f.clone()) {
            Some(f) => TokenHealth::Unhealthy(f),
            None => TokenHealth::Ok,
        }
    }

    /// Runs `f` on a pooled session, on a blocking thread, within the call
    /// deadline; recovers a lost session or a lapsed login once. For calls
    /// that only use objects.
    pub async fn call<T, F>(&self, function: &'static str, f: F) -> Result<T, TokenError>
    where
        T: Send + 'static,
        F: Fn(&Session) -> Result<T, CkError> + Send + 'static,
    {
        self.call_within(self.inner.call_timeout, false, function, f)
            .await
    }

    /// [`Token::call`] for a call that creates or destroys objects: it runs
    /// alone under `exclusive_writes`.
    pub async fn write_call<T, F>(&self, function: &'static str, f: F) -> Result<T, TokenError>
    where
        T: Send + 'static,
        F: Fn(&Session) -> Result<T, CkError> + Send + 'static,
    {
        self.call_within(self.inner.call_timeout, true, function, f)
            .await
    }

    /// [`Token::write_call`] for a key generation, within its own deadline.
    pub async fn keygen_call<T, F>(&self, function: &'static str, f: F) -> Result<T, TokenError>
    where
        T: Send + 'static,
        F: Fn(&Session) -> Result<T, CkError> + Send + 'static,
    {
        self.call_within(self.inner.keygen_timeout, true, function, f)
            .await
    }

    /// Waits for a session permit (every one for a write that runs alone:
    /// the semaphore is fair, so a waiting write holds later calls back and
    /// is not starved) and runs the call, both within `deadline`: when
    /// every session is held by a hung call, the next caller gets
    /// [`TokenError::Timeout`] at its deadline instead of waiting forever.
    async fn call_within<T, F>(
        &self,
        deadline: Duration,
        writes: bool,
        function: &'static str,
        f: F,
    ) -> Result<T, TokenError>
    where
        T: Send + 'static,
        F: Fn(&Session) -> Result<T, CkError> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let timeout = || TokenError::Timeout {
            function,
            secs: deadline.as_secs(),
        };
        let i = &self.inner;
        let wanted = if writes && i.exclusive_writes {
            i.sessions
        } else {
            1
        };
        let permits = Arc::clone(&i.permits).acquire_many_owned(wanted);
        let permit = match tokio::time::timeout(deadline, permits).await {
            Ok(p) => p.map_err(|_| TokenError::Unavailable("the token is closed".into()))?,
            Err(_) => {
                tracing::error!(function, token = %i.describe, writes, "no PKCS#11 session free within the call's deadline");
                return Err(timeout());
            }
        };
        let left = deadline.saturating_sub(started.elapsed());
        let inner = Arc::clone(&self.inner);
        let timed_out = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&timed_out);
        let task = tokio::task::spawn_blocking(move || {
            let r = inner.run(function, &f);
            if flag.load(Ordering::SeqCst) {
                // The caller gave up on this call; it has returned now.
                inner.hung.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(function, "a PKCS#11 call past its deadline returned");
            }
            drop(permit);
            r
        });
        match tokio::time::timeout(left, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(TokenError::Unavailable(format!("{function} panicked: {e}"))),
            Err(_) => {
                self.inner.hung.fetch_add(1, Ordering::SeqCst);
                timed_out.store(true, Ordering::SeqCst);
                tracing::error!(function, token = %self.inner.describe, "PKCS#11 call past its deadline");
                Err(timeout())
            }
        }
    }
}

impl Token {
    /// The handle of `id`'s `part`: remembered from an earlier call, or
    /// found (see [`Token::handle`]) and remembered.
    pub(crate) fn cached_handle(
        &self,
        s: &Session,
        id: &[u8],
        part: keys::Part,
    ) -> Result<ObjectHandle, CkError> {
        let key = (id.to_vec(), part);
        if let Some(h) = self
            .inner
            .handles
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
        {
            return Ok(h);
        }
        let h = Self::handle(s, id, part)?;
        if let Ok(mut m) = self.inner.handles.lock() {
            if m.len() >= MAX_CACHED_HANDLES {
                m.clear();
            }
            m.insert(key, h);
        }
        Ok(h)
    }

    /// Forgets every remembered handle (objects were destroyed).
    pub(crate) fn forget_handles(&self) {
        self.inner.forget_handles();
    }
}

impl Inner {
    fn forget_handles(&self) {
        if let Ok(mut m) = self.handles.lock() {
            m.clear();
        }
    }

    fn session(&self) -> Result<Session, CkError> {
        if let Some(s) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(s);
        }
        self.ctx.open_rw_session(self.slot)
    }

    fn give_back(&self, s: Session) {
        if let Ok(mut v) = self.idle.lock() {
            v.push(s);
        }
    }

    fn fault(&self, what: Option<String>) {
        if let Ok(mut f) = self.last_fault.lock() {
            if f.is_some() && what.is_none() {
                tracing::info!(token = %self.describe, "token answers again");
            }
            *f = what;
        }
    }

    /// Logs in again after `CKR_USER_NOT_LOGGED_IN`, at most once per lapse
    /// and never after the PIN was refused.
    fn login_again(&self, s: &Session) -> Result<(), TokenError> {
        if self.login_refused.load(Ordering::SeqCst) {
            return Err(TokenError::Unavailable(
                "the token refused the PIN earlier; restart the node with a good PIN file".into(),
            ));
        }
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::warn!(token = %self.describe, "token login lapsed; logged in again");
                Ok(())
            }
            Err(e @ CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked, _)) => {
                self.login_refused.store(true, Ordering::SeqCst);
                tracing::error!(token = %self.describe, rv = %rv_text(&e), "token refused the PIN on a renewed login; no more logins");
                Err(TokenError::Unavailable(format!(
                    "the token refused the PIN on a renewed login ({})",
                    rv_text(&e)
                )))
            }
            Err(e) => Err(TokenError::Call {
                function: "C_Login",
                rv: rv_text(&e),
            }),
        }
    }

    fn run<T>(
        &self,
        function: &'static str,
        f: &dyn Fn(&Session) -> Result<T, CkError>,
    ) -> Result<T, TokenError> {
        // Each recovery at most once per call, each on its own: a stale
        // handle found afresh may then meet a lapsed login (a token reset
        // gives both).
        let (mut relogged, mut refound, mut reopened) = (false, false, false);
        loop {
            let s = match self.session() {
                Ok(s) => s,
                Err(e) => {
                    let why = format!("C_OpenSession: {}", rv_text(&e));
                    self.fault(Some(why.clone()));
                    return Err(TokenError::Unavailable(why));
                }
            };
            match f(&s) {
                Ok(v) => {
                    self.give_back(s);
                    self.fault(None);
                    return Ok(v);
                }
                Err(e) => {
                    let rv = rv_of(&e);
                    if rv == Some(RvError::UserNotLoggedIn) && !relogged {
                        relogged = true;
                        // A lapsed login may be a token taken out and put
                        // back: its objects' handles may name others now.
                        self.forget_handles();
                        let relogin = self.login_again(&s);
                        self.give_back(s);
                        relogin.inspect_err(|e| self.fault(Some(e.to_string())))?;
                        continue;
                    }
                    if matches!(
                        rv,
                        Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
                    ) && !refound
                    {
                        // A remembered handle the token no longer knows
                        // (or a key that is not there): find afresh once.
                        refound = true;
                        self.forget_handles();
                        self.give_back(s);
                        continue;
                    }
                    if rv.is_some_and(session_lost) {
                        drop(s);
                        // The same: a lost session may be a token reset.
                        self.forget_handles();
                        if !reopened {
                            reopened = true;
                            tracing::warn!(function, rv = %rv_text(&e), "PKCS#11 session lost; trying a fresh one");
                            continue;
                        }
                    } else {
                        self.give_back(s);
                    }
                    let err = map_call_error(function, &e);
                    if rv.is_some_and(token_fault) {
                        self.fault(Some(err.to_string()));
                    }
                    return Err(err);
                }
            }
        }
    }
}

/// A failed call as the node reports it: bad input the token refused is
/// the caller's; anything else is the token's.
fn map_call_error(function: &'static str, e: &CkError) -> TokenError {
    match rv_of(e) {
        Some(
            RvError::SignatureInvalid
            | RvError::SignatureLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::MechanismParamInvalid,
        ) => TokenError::Invalid(format!("{function}: {}", rv_text(e))),
        Some(RvError::MechanismInvalid) => TokenError::Unsupported {
            mechanism: format!("the mechanism of {function}"),
            what: function,
        },
        Some(rv) if session_lost(rv) => {
            TokenError::Unavailable(format!("{function}: {}", rv_text(e)))
        }
        _ => TokenError::Call {
            function,
            rv: rv_text(e),
        },
    }
}

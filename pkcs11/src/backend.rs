//! The module's link to the proxy: one runtime, one connection pool, one
//! login, and the rule for when a failed request is sent again.
//!
//! Decides: calls run on the module's own tokio runtime (two worker
//! threads), whatever thread of the application makes them, so an
//! application with a runtime of its own can call in too; a request that
//! met no proxy (refused connection, a proxy restarting) or a 503 (no
//! member can serve) is retried with backoff for `retry_ms`, then fails with
//! `CKR_DEVICE_ERROR`; a 401 (the proxy restarted and forgot the token) logs
//! in again with the PIN kept in memory since `C_Login`, once for all calls
//! that met it; `C_Logout` (or closing the last session) ends the token on
//! the proxy, once, in at most 2 s. Member failover itself is the proxy's
//! job.

use crate::config::Config;
use crate::error::{Error, Result};
use hsm_api::{Client, ClientConfig, ClientError, ErrorCode, Role};
use std::future::Future;
use std::sync::RwLock;
use std::time::Duration;
use tokio::time::Instant;

/// First pause between two attempts of a call the proxy could not take.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait for the proxy's answer to a logout (less if `timeout_ms`
/// is less).
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Backend {
    rt: Option<tokio::runtime::Runtime>,
    /// The pool, without a token.
    base: Client,
    /// The logged-in client (shares the pool), and its role.
    session: RwLock<Option<(Role, Client)>>,
    retry_for: Duration,
    logout_timeout: Duration,
}

impl Backend {
    pub fn new(cfg: &Config) -> Result<Backend> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
        };
        let identity_pem = match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let client_config = ClientConfig {
            base_url: cfg.url.trim_end_matches('/').to_string(),
            ca_pem: read(&cfg.ca)?,
            identity_pem,
            timeout: cfg.timeout(),
            connect_timeout: cfg.timeout().min(Duration::from_secs(5)),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hsm-pkcs11")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("runtime: {e}")))?;
        // The client's pool spawns its connection tasks on the runtime it
        // is built in.
        let _enter = rt.enter();
        let base = Client::new(&client_config).map_err(|e| Error::Config(e.to_string()))?;
        drop(_enter);
        Ok(Backend {
            rt: Some(rt),
            base,
            session: RwLock::new(None),
            retry_for: cfg.retry_for(),
            logout_timeout: cfg.timeout().min(LOGOUT_TIMEOUT),
        })
    }

    /// Runs a future on the module's runtime and waits for it on the
    /// calling thread.
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let rt = self.rt.as_ref().ok_or(Error::NotInitialized)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Failed("the module's runtime stopped".into()))
    }

    /// Logs in to the proxy as `role`. The PIN is kept (zeroized on drop)
    /// to log in again when the proxy forgets the session.
    pub fn login(&self, role: Role, pin: &str) -> Result<()> {
        let client = self.base.fork().relogin_as(role, pin);
        let c = client.clone();
        let pin = zeroize::Zeroizing::new(pin.to_string());
        let retry_for = self.retry_for;
        self.block(async move {
            retrying(retry_for, || {
                let c = c.clone();
                let pin = pin.clone();
                async move { c.login(role, &pin).await.map(|_| ()) }
            })
            .await
        })??;
        if let Ok(mut s) = self.session.write() {
            *s = Some((role, client));
        }
        Ok(())
    }

    /// Forgets the login; its client is for [`Backend::logout`]. (Taken
    /// under the token's user lock, so that a `C_Login` racing a
    /// `C_Logout` never has its new login ended.)
    pub fn end_login(&self) -> Option<Client> {
        self.session.write().ok()?.take().map(|(_, c)| c)
    }

    /// Ends the token of a login [`Backend::end_login`] ended on the proxy
    /// (which ends the proxy's member sessions no other token uses): once,
    /// within [`LOGOUT_TIMEOUT`] at most; a proxy that cannot be reached
    /// lets the token expire. The next `C_Login` logs in afresh.
    pub fn logout(&self, ended: Option<Client>) {
        let Some(c) = ended else {
            return;
        };
        let c = c.with_timeout(self.logout_timeout);
        match self.block(async move { c.logout().await }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "logging out of the proxy"),
            Err(e) => tracing::warn!(error = %e, "logging out of the proxy"),
        }
    }

    /// The role logged in as, if any.
    pub fn role(&self) -> Option<Role> {
        self.session
            .read()
            .ok()
            .and_then(|s| s.as_ref().map(|(r, _)| *r))
    }

    fn client(&self) -> Result<Client> {
        self.session
            .read()
            .ok()
            .and_then(|s| s.as_ref().map(|(_, c)| c.clone()))
            .ok_or(Error::UserNotLoggedIn)
    }

    /// Runs `f` with the logged-in client, retrying as the module's top
    /// comment says.
    pub fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, ClientError>> + Send,
    {
        let client = self.client()?;
        let retry_for = self.retry_for;
        self.block(async move { retrying(retry_for, || f(client.clone())).await })?
    }

    /// [`Backend::call`] without a login (`/rng` needs none).
    pub fn call_anonymous<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, ClientError>> + Send,
    {
        let client = self.client().unwrap_or_else(|_| self.base.clone());
        let retry_for = self.retry_for;
        self.block(async move { retrying(retry_for, || f(client.clone())).await })?
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // C_Finalize must not wait for idle connections to close.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a failed call may be sent again: the proxy was not reached, or
/// said it cannot serve now. Every call the module makes is safe to repeat
/// (operations are idempotent; creations carry a request id).
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::Transport { .. }
        | ClientError::Timeout { .. } => true,
        ClientError::Api { status, .. } => {
            *status == 503 && e.code() != Some(ErrorCode::Zeroized) || *status == 502
        }
        _ => false,
    }
}

async fn retrying<T, F, Fut>(retry_for: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, ClientError>>,
{
    let start = Instant::now();
    let mut pause = FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && start.elapsed() + pause < retry_for => {
                tracing::debug!(error = %e, attempts, "proxy call failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                if retryable(&e) {
                    tracing::warn!(error = %e, attempts, "proxy call failed; giving up");
                }
                return Err(Error::from_api(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn refused() -> ClientError {
        ClientError::Connect {
            url: "https://127.0.0.1:1".into(),
            message: "refused".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_proxy_is_retried_until_it_answers() {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        let r = retrying(Duration::from_secs(5), move || {
            let k = m.fetch_add(1, Ordering::SeqCst);
            async move {
                if k < 4 {
                    Err(refused())
                } else {
                    Ok(k)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_stops_at_its_deadline_with_a_device_error() {
        let start = tokio::time::Instant::now();
        let r: Result<()> = retrying(Duration::from_secs(3), || async { Err(refused()) }).await;
        assert!(matches!(r, Err(Error::Device(_))), "{r:?}");
        let took = start.elapsed();
        assert!(took <= Duration::from_secs(3), "{took:?}");
        assert!(took >= Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried() {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        let r: Result<()> = retrying(Duration::from_secs(3), move || {
            m.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ClientError::Api {
                    status: 401,
                    code: "LoginFailed".into(),
                    message: "wrong password".into(),
                })
            }
        })
        .await;
        assert!(matches!(r, Err(Error::PinIncorrect)), "{r:?}");
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}

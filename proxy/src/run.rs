//! Assembly: from a validated configuration to a serving proxy.
//!
//! Decides: how each configuration section becomes the policies of the
//! modules (one mapping, here), the listeners (the application's HTTPS
//! listener at the root; the metrics listener with `/metrics`, `/status`,
//! `/status.json`, `/ready` and `/live`, loopback by default), the
//! background tasks, and the stop sequence (SIGTERM/SIGINT: the listener
//! closes and in-flight requests finish). Never: request semantics (`api`), member choice (`group`).

use crate::api::{ApiSettings, Proxy};
use crate::budget::RetryBudget;
use crate::checker::{self, CheckTiming, Resyncer};
use crate::forward::{Deadlines, Forwarder};
use crate::group::{Group, HealthPolicy};
use crate::health::{CheckPolicy, EjectPolicy};
use crate::hedge::HedgePolicy;
use crate::member::{Credential, Member, MemberRole, MemberSpec};
use crate::status;
use ha_config::Config;
use hsm_api::Role;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("member {member}: {message}")]
    Member { member: String, message: String },
    #[error("{0}")]
    Listen(String),
    #[error("{path}: {message}")]
    Tls { path: String, message: String },
}

/// The proxy's parts, built from a configuration.
pub struct Assembled {
    pub proxy: Arc<Proxy>,
    pub group: Arc<Group>,
    pub resyncer: Arc<Resyncer>,
    pub timing: CheckTiming,
    pub resync_interval: Duration,
}

fn read(path: &Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|e| RunError::Tls {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// One member from its configuration.
fn build_member(cfg: &Config, m: &ha_config::Member) -> Result<Member, RunError> {
    let r = &cfg.requests;
    let client = hsm_api::ClientConfig {
        base_url: m.partition_url(&cfg.group.partition),
        ca_pem: read(&m.ca)?,
        identity_pem: Some((read(&m.client_cert)?, read(&m.client_key)?)),
        timeout: r.attempt_timeout,
        connect_timeout: r.attempt_timeout.min(Duration::from_secs(3)),
    };
    let spec = MemberSpec {
        name: m.name.clone(),
        url: m.url.clone(),
        role: match m.role {
            ha_config::MemberRole::Active => MemberRole::Active,
            ha_config::MemberRole::Standby => MemberRole::Standby,
        },
        weight: m.weight,
        location: m.location.clone(),
        client,
    };
    Member::new(spec).map_err(|e| RunError::Member {
        member: m.name.clone(),
        message: e.to_string(),
    })
}

/// The running member set: the group and one health watcher per member,
/// changed together by a reload.
pub struct Supervisor {
    pub group: Arc<Group>,
    pub resyncer: Arc<Resyncer>,
    timing: CheckTiming,
    watchers: std::sync::Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The configuration file, for SIGHUP and `/admin/reload`.
    pub config_path: Option<std::path::PathBuf>,
    /// `group.min_replicas` in effect: `/ready` needs this many healthy
    /// members (set at start; a reload does not change it).
    pub min_replicas: usize,
    /// Who may use the operations surface (the token changes on reload).
    pub operator: crate::operator::Access,
}

impl Supervisor {
    fn start(&self, m: &Arc<Member>) {
        let role = match m.spec.role {
            MemberRole::Active => "active",
            MemberRole::Standby => "standby",
        };
        crate::metrics::member_added(m.name(), &m.spec.location, role);
        let h = tokio::spawn(checker::watch(
            m.clone(),
            self.group.clone(),
            self.resyncer.clone(),
            self.timing,
        ));
        if let Ok(mut w) = self.watchers.lock() {
            if let Some(old) = w.insert(m.name().to_string(), h) {
                old.abort();
            }
        }
    }

    /// Applies a new configuration's member list without dropping a
    /// request: members with the same name and URL are kept as they are
    /// (health, sessions, load); new ones start down and are caught up by
    /// their watcher before they take traffic; removed ones stop being
    /// chosen at once and finish what they were doing. Other sections
    /// change on restart. Returns (added, removed).
    pub fn reload(&self, cfg: &Config) -> Result<(Vec<String>, Vec<String>), RunError> {
        let current = self.group.members();
        let mut next = Vec::new();
        let mut added = Vec::new();
        for m in &cfg.members {
            match current
                .iter()
                .find(|c| c.name() == m.name && c.spec.url == m.url)
            {
                Some(keep) => next.push(keep.clone()),
                None => {
                    next.push(Arc::new(build_member(cfg, m)?));
                    added.push(m.name.clone());
                }
            }
        }
        let removed: Vec<String> = current
            .iter()
            .filter(|c| !next.iter().any(|n| Arc::ptr_eq(n, c)))
            .map(|c| c.name().to_string())
            .collect();
        self.group.replace(next.clone());
        if let Ok(mut w) = self.watchers.lock() {
            for r in &removed {
                if let Some(h) = w.remove(r) {
                    h.abort();
                }
            }
        }
        for m in next.iter().filter(|m| added.iter().any(|a| a == m.name())) {
            self.start(m);
        }
        // A replaced member of the same name: its new watcher replaced the old.
        tracing::info!(?added, ?removed, "configuration reloaded");
        Ok((added, removed))
    }

    /// Reloads from the configuration file.
    pub fn reload_file(&self) -> Result<(Vec<String>, Vec<String>), RunError> {
        let path = self
            .config_path
            .as_ref()
            .ok_or_else(|| RunError::Config("no configuration file to reload".into()))?;
        let cfg = Config::load(path)
            .map_err(|e| RunError::Config(format!("{}:\n{e}", path.display())))?;
        let token = cfg
            .metrics
            .read_admin_token()
            .map_err(|e| RunError::Config(e.to_string()))?;
        let out = self.reload(&cfg)?;
        self.operator.set_token(token.as_ref().map(|t| t.expose()));
        Ok(out)
    }
}

/// Builds every part from a validated configuration; `bound` is the
/// address the application listener is bound to (the default public URL).
pub fn assemble(cfg: &Config, bound: std::net::SocketAddr) -> Result<Assembled, RunError> {
    let cred = cfg
        .group
        .read_credential()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let role: Role = cred
        .role
        .as_str()
        .parse()
        .map_err(|e: hsm_api::alg::Unsupported| RunError::Config(e.to_string()))?;
    let background = Credential::new(role, cred.password.expose());
    let r = &cfg.requests;
    let members = cfg
        .members
        .iter()
        .map(|m| build_member(cfg, m))
        .collect::<Result<Vec<_>, _>>()?;
    let e = &cfg.ejection;
    let policy = HealthPolicy {
        checks: CheckPolicy {
            rise: cfg.health.rise,
            fall: cfg.health.fall,
        },
        eject: EjectPolicy {
            consecutive_failures: e.consecutive_failures,
            base: e.base_time,
            max: e.max_time,
            max_ejected_percent: e.max_ejected_percent,
            panic_threshold_percent: e.panic_threshold_percent,
        },
    };
    let group = Arc::new(Group::new(members, policy));
    let resyncer = Arc::new(Resyncer::new(
        group.clone(),
        background.clone(),
        r.attempt_timeout,
    ));
    let repair = resyncer.clone();
    let repair_pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forwarder = Arc::new(Forwarder {
        group: group.clone(),
        budget: RetryBudget::new(
            r.retry_budget.ratio,
            f64::from(r.retry_budget.min_per_second),
        ),
        hedge: r
            .hedge
            .enabled
            .then(|| HedgePolicy::new(r.hedge.percentile, r.hedge.min_delay, r.hedge.max_delay)),
        deadlines: Deadlines {
            attempt: r.attempt_timeout,
            total: r.total_timeout,
            keygen: r.keygen_timeout,
        },
        on_missing: Box::new(move |m, key| {
            // A member lacks a key another may hold: one repair round in the
            // background, however many requests noticed (a key that truly
            // does not exist is "missing" everywhere and repairs nothing).
            tracing::debug!(member = m.name(), key, "member answered not found");
            if !repair_pending.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let (r, pending) = (repair.clone(), repair_pending.clone());
                tokio::spawn(async move {
                    r.round(None).await;
                    pending.store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
        }),
    });
    let settings = ApiSettings {
        public_url: cfg.listener.effective_public_url(bound),
        min_replicas: cfg.effective_min_replicas() as usize,
        token_ttl: Duration::from_secs(3600),
        max_body_bytes: 256 * 1024,
        body_timeout: Duration::from_secs(10),
    };
    let proxy = Arc::new(Proxy::new(forwarder, settings, background));
    let timing = CheckTiming {
        interval: cfg.health.interval,
        timeout: cfg.health.timeout,
        recovery_min: cfg.recovery.min_backoff,
        recovery_max: cfg.recovery.max_backoff,
        slow_start: cfg.requests.attempt_timeout / 4,
    };
    Ok(Assembled {
        proxy,
        group,
        resyncer,
        timing,
        resync_interval: cfg.resync.interval,
    })
}

/// The application listener's TLS: the configured certificate, no client
/// certificate (applications authenticate with bearer tokens).
pub fn tls_config(cfg: &Config) -> Result<rustls::ServerConfig, RunError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = &cfg.listener.cert;
    let key = &cfg.listener.key;
    let bad = |p: &Path, m: String| RunError::Tls {
        path: p.display().to_string(),
        message: m,
    };
    let chain = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    let k = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| bad(key, e.to_string()))?
        .ok_or_else(|| bad(key, "no private key in the file".into()))?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, k)
        .map_err(|e| bad(key, e.to_string()))?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(c)
}

/// Runs the proxy until `shutdown` completes. `on_ready` gets the bound
/// application and metrics addresses.
pub async fn serve(
    cfg: &Config,
    config_path: Option<&Path>,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>),
) -> Result<(), RunError> {
    let tls = tls_config(cfg)?;
    let admin_token = cfg
        .metrics
        .read_admin_token()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let listener = hsm_server::bind(
        cfg.listener.address,
        " (the port is in use: change listener.address)",
    )
    .await
    .map_err(|e| RunError::Listen(e.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(|e| RunError::Listen(e.to_string()))?;
    let parts = assemble(cfg, bound)?;
    let metrics_listener = if cfg.metrics.enabled {
        Some(
            hsm_server::bind(
                cfg.metrics.address,
                " (the port is in use: change metrics.address)",
            )
            .await
            .map_err(|e| RunError::Listen(e.to_string()))?,
        )
    } else {
        None
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let sup = Arc::new(Supervisor {
        group: parts.group.clone(),
        resyncer: parts.resyncer.clone(),
        timing: parts.timing,
        watchers: std::sync::Mutex::new(std::collections::HashMap::new()),
        config_path: config_path.map(|p| p.to_path_buf()),
        min_replicas: cfg.effective_min_replicas() as usize,
        operator: crate::operator::Access::new(
            admin_token.as_ref().map(|t| t.expose()),
            cfg.metrics.status_open,
        ),
    });
    crate::metrics::min_replicas(cfg.effective_min_replicas());
    crate::metrics::resync_runs_init();
    for m in parts.group.members().iter() {
        sup.start(m);
    }
    let mut tasks = vec![tokio::spawn(checker::periodic(
        parts.resyncer.clone(),
        parts.resync_interval,
    ))];
    tasks.push(tokio::spawn(reload_on_sighup(sup.clone())));
    if let Some(ml) = metrics_listener {
        tasks.push(tokio::spawn(hsm_server::serve_plain(
            ml,
            status::handler(sup.clone()),
        )));
    }
    let proxy = parts.proxy.clone();
    let handler: hsm_server::Handler = Arc::new(move |req, _peer| {
        let proxy = proxy.clone();
        Box::pin(proxy.handle(req))
    });
    let limits = hsm_server::Limits {
        io_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        max_connections: 4096,
        max_header_bytes: 16 * 1024,
        shutdown_grace: cfg.requests.total_timeout + Duration::from_secs(1),
        metrics_prefix: "hsm_proxy",
    };
    tracing::info!(
        addr = %bound,
        public_url = %parts.proxy.settings.public_url,
        members = parts.group.members().len(),
        "hsm-proxy listening"
    );
    on_ready(bound, metrics_addr);
    hsm_server::serve_tls(listener, tls, limits, handler, shutdown).await;
    for t in tasks {
        t.abort();
    }
    if let Ok(mut w) = sup.watchers.lock() {
        for (_, h) in w.drain() {
            h.abort();
        }
    }
    Ok(())
}

/// SIGHUP reloads the member list from the configuration file.
async fn reload_on_sighup(sup: Arc<Supervisor>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        if let Err(e) = sup.reload_file() {
            tracing::error!(error = %e, "reload refused; the running configuration stays");
        }
    }
}

//! The configuration's keys: their types, their defaults, and their
//! documentation, written once.
//!
//! Decides: every key of the configuration file, what it means, its type and
//! its default. Never: how the file is found and read (`load`), or which
//! combinations of values are allowed (`validate`).
//!
//! Each section is declared with `section!`, which keeps the field's doc
//! comment as rustdoc and also as a [`FieldDoc`], so that the reference
//! (`docs/CONFIG.md`) is generated from the very text written here.
//!
//! Why each default is what it is, against the anchors of DESIGN.md (Luna HA
//! 20 s failover and 60 s recovery poll, HAProxy `inter 2s fall 3 rise 2`,
//! Envoy 5 consecutive failures and 30 s × n ejection up to 300 s with panic
//! below 50 %, linkerd's 20 % + 10/s retry budget and 1 s → 60 s penalty), is
//! said in each key's doc; the default functions at the end only return it.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What kind of value a key takes: for the reference, and for the fix of an
/// error about the key.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// One value: its name in the reference and an example as written in TOML.
    Value {
        name: &'static str,
        example: &'static str,
    },
    /// A table of keys.
    Table(&'static [FieldDoc]),
    /// A list of tables.
    List(&'static [FieldDoc]),
}

/// One key of a section, as declared.
#[derive(Debug, Clone, Copy)]
pub struct FieldDoc {
    /// The key, as written in the file.
    pub name: &'static str,
    /// The field's doc comment, one `///` line per line.
    pub doc: &'static str,
    /// Its kind; tables and lists of tables have keys of their own.
    pub kind: Kind,
}

/// A type that can appear as the value of a key.
pub trait Documented {
    const KIND: Kind;
}

/// A table of documented keys, declared with `section!`.
pub trait Section {
    const FIELDS: &'static [FieldDoc];
}

macro_rules! value_kind {
    ($($ty:ty => $name:literal, $example:literal;)*) => {
        $(impl Documented for $ty {
            const KIND: Kind = Kind::Value { name: $name, example: $example };
        })*
    };
}

value_kind! {
    Duration => "duration", "\"2s\"";
    u32 => "integer", "3";
    f64 => "number", "0.2";
    bool => "boolean", "true";
    String => "string", "\"text\"";
    PathBuf => "path", "\"tls/file.pem\"";
    SocketAddr => "IP address and port", "\"127.0.0.1:9464\"";
    MemberRole => "`active` or `standby`", "\"active\"";
}

impl<T: Documented> Documented for Option<T> {
    const KIND: Kind = T::KIND;
}

impl<T: Section> Documented for Vec<T> {
    const KIND: Kind = Kind::List(T::FIELDS);
}

/// Declares a section: a serde struct that refuses unknown keys, whose
/// fields' doc comments are also kept as [`Section::FIELDS`]. Doc comments
/// come first, then `#[serde(…)]` attributes.
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($fattr:tt)*)])*
                pub $field:ident : $ty:ty,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                $(#[serde($($fattr)*)])*
                pub $field: $ty,
            )*
        }

        impl $crate::schema::Section for $name {
            const FIELDS: &'static [$crate::schema::FieldDoc] = &[$($crate::schema::FieldDoc {
                name: stringify!($field),
                doc: concat!($($doc, "\n"),*),
                kind: <$ty as $crate::schema::Documented>::KIND,
            }),*];
        }

        impl $crate::schema::Documented for $name {
            const KIND: $crate::schema::Kind =
                $crate::schema::Kind::Table(<$name as $crate::schema::Section>::FIELDS);
        }
    };
}
pub(crate) use section;

section! {
    /// The configuration of one `hsm-proxy`: one HA group of HSM members
    /// presented to applications as one virtual partition.
    pub struct Config {
        /// The application-facing HTTPS listener. It serves the virtual
        /// partition in the Key Vault keys dialect at its root path.
        pub listener: Listener,
        /// The group: which partition of the members it is, how many copies
        /// of a new key make it durable, and the proxy's own credential.
        pub group: Group,
        /// The HSM members, 1 to 16, each a `[[members]]` table in TOML or
        /// an item of the `members:` list in YAML.
        pub members: Vec<Member>,
        /// Active health checks: the proxy probes every member itself,
        /// with its background credential.
        #[serde(default)]
        pub health: Health,
        /// Passive ejection (outlier detection): a member that fails
        /// requests is taken out of balancing for a while, without waiting
        /// for the health checks to notice.
        #[serde(default)]
        pub ejection: Ejection,
        /// Deadlines, retries and hedging of application requests.
        #[serde(default)]
        pub requests: Requests,
        /// How members that are down are probed until they come back.
        #[serde(default)]
        pub recovery: Recovery,
        /// Background comparison of the members' key inventories.
        #[serde(default)]
        pub resync: Resync,
        /// The Prometheus metrics listener.
        #[serde(default)]
        pub metrics: Metrics,
    }
}

section! {
    /// The application-facing HTTPS listener.
    pub struct Listener {
        /// Address and port the listener binds. Default `127.0.0.1:8443`:
        /// loopback, because the proxy is a sidecar next to its
        /// application; bind another address only when applications reach
        /// the proxy over the network.
        #[serde(default = "default_listen")]
        pub address: SocketAddr,
        /// The URL applications reach the proxy at, `https://host:port`
        /// with nothing after the port; its host should be a name of
        /// `listener.cert`. Every `kid` in an answer and the login URL of
        /// the Bearer challenge are built from it, never from the
        /// request's `Host` header: a request naming another host gets
        /// the same answer, with this URL in it. Default computed:
        /// `https://` and the
        /// address the listener is bound to (`listener.address`, with the
        /// port the system chose when it is 0), right for a sidecar that
        /// applications reach as `https://127.0.0.1:8443`. A listener on
        /// every interface (`0.0.0.0` or `::`) has no such address: there
        /// it is required, and the configuration is refused without it.
        /// Set it too when applications use a name (`https://hsm.example:8443`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub public_url: Option<String>,
        /// PEM file with the listener's certificate chain, leaf first (at
        /// least one `CERTIFICATE` block). Applications verify it against
        /// its CA (the Key Vault SDK's `connection_verify`). Required.
        pub cert: PathBuf,
        /// PEM file with the private key of `listener.cert`: exactly one
        /// `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY`
        /// block. Keep it readable by the proxy's user only; `check-config`
        /// warns when everyone can read it. Required.
        pub key: PathBuf,
    }
}

section! {
    /// The group as a whole.
    pub struct Group {
        /// The partition that holds this group's keys on every member: the
        /// proxy reaches it at `members[].url` + `/partitions/{partition}`.
        /// Every member must hold it, initialised with the same cloning
        /// domain. 1 to 32 characters of `a-z`, `0-9` and `-`, starting with
        /// a letter (the node's rule). Required.
        pub partition: String,
        /// How many members must hold a new key durably before its creation
        /// is acknowledged; when fewer can, the create fails with a clear
        /// error and no half-made key is visible. 1 to the number of
        /// members. Default: 2, or every member when there are fewer (the
        /// effective value is shown by `check-config`). This is CloudHSM's
        /// rule (a key exists on 2 HSMs before use) without Luna HA's wait
        /// for every member, so one member down never blocks key creation;
        /// the other members get the key by replication and resync.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub min_replicas: Option<u32>,
        /// File holding the role and password the proxy logs in to every
        /// member's partition with, for its own background work (health
        /// checks, inventory comparison, replication and resync); see *The
        /// credential file* below. Must exist and be readable;
        /// `check-config` warns when everyone can read it. Required.
        pub credential_file: PathBuf,
    }
}

section! {
    /// One HSM member of the group.
    pub struct Member {
        /// Short name of the member, used in logs, metric labels, the
        /// status page and environment overrides
        /// (`HSM_PROXY__MEMBERS__<NAME>__<KEY>`). 1 to 32 characters of
        /// `a-z`, `0-9` and `-`; unique in the group. Required.
        pub name: String,
        /// Base URL of the member node, `https://host:port` with nothing
        /// after the port; the proxy reaches the partition at this URL +
        /// `/partitions/{group.partition}`. hsm-node serves TLS only, so the
        /// scheme is `https`. Unique in the group. Required.
        pub url: String,
        /// `active` members take traffic; `standby` members take traffic
        /// only when no active member is available, like a Luna HA standby
        /// member at a far site. At least one member must be active.
        /// Default `active`.
        #[serde(default)]
        pub role: MemberRole,
        /// Relative share of traffic, 1 to 100: the balancer compares
        /// members by load (peak-EWMA latency × outstanding requests)
        /// divided by weight, so a member of weight 2 is picked as if it
        /// were half as loaded. Default `1`: latency alone already steers
        /// traffic to near members and away from far ones.
        #[serde(default = "default_weight")]
        pub weight: u32,
        /// Free-text label of where the member runs, e.g. `cloud`, `peered`
        /// or `on-prem`: shown in logs, on the member's metrics and on the
        /// status page; it does not change balancing. 1 to 64 printable
        /// characters. Default `local`.
        #[serde(default = "default_location")]
        pub location: String,
        /// PEM file with the client certificate chain the proxy presents to
        /// this member (mutual TLS); the member must accept it for the
        /// partition. Required.
        pub client_cert: PathBuf,
        /// PEM file with the private key of `client_cert` (exactly one key
        /// block). Required.
        pub client_key: PathBuf,
        /// PEM file with the CA certificate(s) that signed this member's
        /// server certificate. Required.
        pub ca: PathBuf,
    }
}

/// Whether a member takes traffic in normal operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Takes traffic whenever healthy.
    #[default]
    Active,
    /// Takes traffic only when no active member is available.
    Standby,
}

section! {
    /// Active health checks.
    pub struct Health {
        /// Time between two checks of one member. Default `1s`: HAProxy
        /// checks every 2 s (`inter 2s`).
        #[serde(with = "crate::duration", default = "default_health_interval")]
        pub interval: Duration,
        /// How long one check may take before it counts as failed; at most
        /// `health.interval`. Default `500ms`: a node answers a check in
        /// about a millisecond on a warm connection, so half a second is a
        /// failure even across a VPN.
        #[serde(with = "crate::duration", default = "default_health_timeout")]
        pub timeout: Duration,
        /// Consecutive successful checks that bring a down member back (it
        /// is resynchronised before it takes traffic). At least 1.
        /// Default `2`: HAProxy's `rise 2`, at twice its pace.
        #[serde(default = "default_rise")]
        pub rise: u32,
        /// Consecutive failed checks that mark a member down. At least 1.
        /// Default `2`: with the 1 s interval a member that stops answering
        /// is down within about 2.5 s, where HAProxy (`inter 2s fall 3`)
        /// takes 6 s and Luna HA 20 s. Requests do not wait for this: a
        /// refused connection is retried on another member at once.
        #[serde(default = "default_fall")]
        pub fall: u32,
    }
}

section! {
    /// Passive ejection.
    pub struct Ejection {
        /// Consecutive failed requests on one member (connection or TLS
        /// failure, timeout, or a 5xx from the member) that eject it. At
        /// least 1. Default `3`: Envoy ejects after 5, linkerd after 7.
        #[serde(default = "default_consecutive_failures")]
        pub consecutive_failures: u32,
        /// Length of a member's first ejection; its n-th ejection in a row
        /// lasts n × this, up to `ejection.max_time`. More than 0.
        /// Default `5s`: Envoy's base is 30 s, so a member with a passing
        /// fault is back six times sooner.
        #[serde(with = "crate::duration", default = "default_base_ejection")]
        pub base_time: Duration,
        /// Longest ejection, at least `ejection.base_time`. Default `2m`:
        /// Envoy's cap is 300 s.
        #[serde(with = "crate::duration", default = "default_max_ejection")]
        pub max_time: Duration,
        /// Most members, as a percentage of the group, that passive
        /// ejection may hold out at once (rounded down, but one member may
        /// always be ejected); 0 to 100. Default `50`: ejection alone never
        /// takes out the majority of the group; the health checks still can.
        #[serde(default = "default_max_ejected_percent")]
        pub max_ejected_percent: u32,
        /// When fewer than this percentage of the members are healthy, the
        /// proxy stops trusting health and balances over every member
        /// (panic mode), so that a wrong health signal cannot take the
        /// whole group offline; 0 turns panic mode off. 0 to 100.
        /// Default `50`, as Envoy.
        #[serde(default = "default_panic_threshold")]
        pub panic_threshold_percent: u32,
    }
}

section! {
    /// Deadlines, retries and hedging.
    pub struct Requests {
        /// Deadline of one attempt on one member, from sending the request
        /// to the last byte of the answer; more than 0 and at most
        /// `requests.total_timeout`. A member that has not answered by then
        /// is abandoned and the request retried on another member.
        /// Default `2s`: Luna HA waits 20 s before it fails over.
        #[serde(with = "crate::duration", default = "default_attempt_timeout")]
        pub attempt_timeout: Duration,
        /// Deadline of the whole request across all attempts, hedges and
        /// retries; when it passes the application gets a 503 that says
        /// why. More than 0. Default `5s`: room for two full attempts and a
        /// hedge. When no member can take the request at all the proxy
        /// answers 503 at once rather than waiting (linkerd waits 3 s).
        #[serde(with = "crate::duration", default = "default_total_timeout")]
        pub total_timeout: Duration,
        /// Deadline of one attempt of a key generation that may take
        /// seconds on the member: creating an RSA key (a 4096-bit one can
        /// take several seconds) and rotating any key. Such a request may
        /// take `keygen_timeout` + `total_timeout` in all. Other key
        /// creations (EC, oct, import) use `attempt_timeout`. At least
        /// `requests.attempt_timeout`. Default `30s`.
        #[serde(with = "crate::duration", default = "default_keygen_timeout")]
        pub keygen_timeout: Duration,
        /// Retries on another member are limited by a budget, so that a
        /// struggling group is not buried under retries. Requests that were
        /// never sent (connection or TLS failure, ejected member) are
        /// retried whatever the budget says.
        #[serde(default)]
        pub retry_budget: RetryBudget,
        /// Hedging: when an idempotent crypto operation (sign, verify,
        /// encrypt, decrypt, wrap, unwrap, MAC, derive) has no answer after
        /// a delay, the same request goes to a second member and the first
        /// answer wins. Key management is never hedged.
        #[serde(default)]
        pub hedge: Hedge,
    }
}

section! {
    /// The retry budget.
    pub struct RetryBudget {
        /// Retries may add at most this fraction of the requests of the last
        /// `requests.retry_budget.window`; 0 to 1. Default `0.2`, as linkerd.
        #[serde(default = "default_retry_ratio")]
        pub ratio: f64,
        /// Retries per second allowed on top of the ratio, so that a quiet
        /// proxy can still retry. Default `10`, as linkerd.
        #[serde(default = "default_retry_min_per_second")]
        pub min_per_second: u32,
        /// How far back the ratio counts requests; more than 0. Default
        /// `10s`, as linkerd's budget TTL.
        #[serde(with = "crate::duration", default = "default_retry_window")]
        pub window: Duration,
    }
}

section! {
    /// The hedging policy.
    pub struct Hedge {
        /// Whether crypto operations are hedged. Default `true`: a hung
        /// member then costs a request one hedge delay, not an attempt
        /// timeout.
        #[serde(default = "default_hedge_enabled")]
        pub enabled: bool,
        /// The hedge delay is this percentile of the operation's recent
        /// latency, kept between `min_delay` and `max_delay`; more than 0
        /// and less than 100. Default `95`: about one request in twenty is
        /// hedged while all is well.
        #[serde(default = "default_hedge_percentile")]
        pub percentile: f64,
        /// Floor of the hedge delay, more than 0, so that noise on a very
        /// fast group does not double its load. Default `10ms`.
        #[serde(with = "crate::duration", default = "default_hedge_min_delay")]
        pub min_delay: Duration,
        /// Cap of the hedge delay, at least `min_delay` and less than
        /// `requests.attempt_timeout`. Default `500ms`: a hung member costs
        /// a request at most half a second.
        #[serde(with = "crate::duration", default = "default_hedge_max_delay")]
        pub max_delay: Duration,
    }
}

section! {
    /// Recovery probing.
    pub struct Recovery {
        /// First wait before probing a member that went down (connect, log
        /// in, check). Each failed probe doubles the wait, up to
        /// `recovery.max_backoff`, and every wait is randomised (jitter) so
        /// that proxies do not probe in step; probing never gives up. More
        /// than 0. Default `200ms`: linkerd starts at 1 s.
        #[serde(with = "crate::duration", default = "default_min_backoff")]
        pub min_backoff: Duration,
        /// Longest wait between two probes of a down member, at least
        /// `recovery.min_backoff`. Default `30s`: Luna HA polls every 60 s,
        /// linkerd backs off to 60 s.
        #[serde(with = "crate::duration", default = "default_max_backoff")]
        pub max_backoff: Duration,
    }
}

section! {
    /// Background resynchronisation.
    pub struct Resync {
        /// Time between two comparisons of the members' inventories (one
        /// round trip per member when nothing differs); a member found
        /// lacking a key is repaired. A member coming back is always
        /// resynchronised before it takes traffic, whatever this says. More
        /// than 0. Default `30s`.
        #[serde(with = "crate::duration", default = "default_resync_interval")]
        pub interval: Duration,
    }
}

section! {
    /// The metrics listener.
    pub struct Metrics {
        /// Whether to serve Prometheus metrics at
        /// `http://{metrics.address}/metrics`. Default `true`.
        #[serde(default = "default_metrics_enabled")]
        pub enabled: bool,
        /// Address of the plain-HTTP metrics listener, which shows no key
        /// names and no secrets. Default `127.0.0.1:9464`: loopback, on the
        /// Prometheus exporters' port; `check-config` warns when it is not
        /// loopback.
        #[serde(default = "default_metrics_address")]
        pub address: SocketAddr,
        /// File holding the operator token: one line of at least 32
        /// characters, no spaces (`openssl rand -hex 32`). Every `/admin`
        /// call on the metrics listener must carry it as
        /// `Authorization: Bearer <token>`, as must `/status` and
        /// `/status.json` unless `metrics.status_open`. Keep it readable by
        /// the proxy's user only (a systemd credential or a Kubernetes
        /// Secret); `check-config` warns when everyone can read it. Read at
        /// start and again at every reload (SIGHUP, `/admin/reload`), so it
        /// rotates without a restart. Default: none, and then every
        /// `/admin` call is refused (`403`) and the status page is closed
        /// unless `metrics.status_open`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub admin_token_file: Option<PathBuf>,
        /// Whether `/status` and `/status.json` answer without the
        /// operator token. They show member names, URLs, states and errors
        /// (never keys or secrets). Default `false`; `hsm-proxy dev` sets
        /// it, on loopback, so that its status page opens in a browser.
        /// `/metrics`, `/ready` and `/live` are always open, for probes and
        /// scraping.
        #[serde(default)]
        pub status_open: bool,
    }
}

// The defaults. Each key's doc above says why it is what it is; `Default`
// for a section is every key at its default, by the same functions serde
// uses (a test checks that the two agree).

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: default_consecutive_failures(),
            base_time: default_base_ejection(),
            max_time: default_max_ejection(),
            max_ejected_percent: default_max_ejected_percent(),
            panic_threshold_percent: default_panic_threshold(),
        }
    }
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            attempt_timeout: default_attempt_timeout(),
            total_timeout: default_total_timeout(),
            keygen_timeout: default_keygen_timeout(),
            retry_budget: RetryBudget::default(),
            hedge: Hedge::default(),
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: default_retry_ratio(),
            min_per_second: default_retry_min_per_second(),
            window: default_retry_window(),
        }
    }
}

impl Default for Hedge {
    fn default() -> Self {
        Hedge {
            enabled: default_hedge_enabled(),
            percentile: default_hedge_percentile(),
            min_delay: default_hedge_min_delay(),
            max_delay: default_hedge_max_delay(),
        }
    }
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl Default for Resync {
    fn default() -> Self {
        Resync {
            interval: default_resync_interval(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: default_metrics_enabled(),
            address: default_metrics_address(),
            admin_token_file: None,
            status_open: false,
        }
    }
}

impl Listener {
    /// The URL kids and challenges are built from: `public_url` (without a
    /// trailing `/`), else `https://{bound}`, where `bound` is the address
    /// the listener was bound to.
    pub fn effective_public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{bound}"),
        }
    }

    /// A listener on the default address with the given certificate files.
    pub fn new(cert: PathBuf, key: PathBuf) -> Listener {
        Listener {
            address: default_listen(),
            public_url: None,
            cert,
            key,
        }
    }
}

impl Member {
    /// An active member of weight 1 at location `local`, with the given
    /// name, URL and certificate files.
    pub fn new(
        name: &str,
        url: &str,
        client_cert: PathBuf,
        client_key: PathBuf,
        ca: PathBuf,
    ) -> Member {
        Member {
            name: name.into(),
            url: url.into(),
            role: MemberRole::default(),
            weight: default_weight(),
            location: default_location(),
            client_cert,
            client_key,
            ca,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_weight() -> u32 {
    1
}
fn default_location() -> String {
    "local".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_health_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}
fn default_consecutive_failures() -> u32 {
    3
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(5)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(120)
}
fn default_max_ejected_percent() -> u32 {
    50
}
fn default_panic_threshold() -> u32 {
    50
}
fn default_attempt_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_total_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_keygen_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_ratio() -> f64 {
    0.2
}
fn default_retry_min_per_second() -> u32 {
    10
}
fn default_retry_window() -> Duration {
    Duration::from_secs(10)
}
fn default_hedge_enabled() -> bool {
    true
}
fn default_hedge_percentile() -> f64 {
    95.0
}
fn default_hedge_min_delay() -> Duration {
    Duration::from_millis(10)
}
fn default_hedge_max_delay() -> Duration {
    Duration::from_millis(500)
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_resync_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_metrics_enabled() -> bool {
    true
}
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `min_replicas` when the file does not set it: 2, or every member when
/// there are fewer.
pub fn default_min_replicas(members: usize) -> u32 {
    // At most 16 members pass validation; saturate for anything larger.
    u32::try_from(members.min(2)).unwrap_or(2)
}

//! The proxy's Prometheus metrics: every name, label and bucket is defined
//! and documented here, and nowhere else.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `hsm_proxy_requests_total` | counter | `op`, `outcome` | application requests answered; `outcome` is `ok` or the error code |
//! | `hsm_proxy_request_duration_seconds` | histogram | `op` | time from request to answer, retries and hedges included |
//! | `hsm_proxy_member_up` | gauge | `member` | 1 when the member is up by active checks (set after each check; ejected and drained members show in `hsm_proxy_member_state`) |
//! | `hsm_proxy_member_latency_seconds` | gauge | `member` | the balancer's peak-EWMA latency estimate |
//! | `hsm_proxy_member_outstanding` | gauge | `member` | requests in flight on the member |
//! | `hsm_proxy_member_errors_total` | counter | `member` | failed attempts on the member |
//! | `hsm_proxy_retries_total` | counter | `member` | retries after a failed attempt on `member` |
//! | `hsm_proxy_hedges_total` | counter | `member` | hedged copies sent to `member` |
//! | `hsm_proxy_ejections_total` | counter | `member` | passive ejections |
//! | `hsm_proxy_replication_pending` | gauge | `member` | objects the member is known to lack (repaired by resync) |
//! | `hsm_proxy_resync_runs_total` | counter | | anti-entropy rounds |
//! | `hsm_proxy_resync_objects_copied_total` | counter | `member` | objects copied to the member by resync or repair |
//! | `hsm_proxy_inventory_divergence` | gauge | `member` | buckets of the member's inventory that differed in the last round |
//! | `hsm_proxy_member_state` | gauge | `member`, `state` | 1 for the member's state on the status page (`up`, `down`, `ejected`, `drained`, `syncing`: checks pass but it may lack changes, held back until a resync round includes it), 0 for the others; refreshed at each scrape |
//! | `hsm_proxy_member_info` | gauge | `member`, `location`, `role` | always 1: the member's configured `location` (its site) and `role` (`active`, `standby`), to group other series by site |
//! | `hsm_proxy_member_failovers_total` | counter | `member` | times the member left the healthy set while serving (turned down by checks, or ejected while up): its traffic moved to the other members |
//! | `hsm_proxy_member_body_bytes_total` | counter | `member`, `direction` | request (`sent`) and answer (`received`) body bytes of the requests the member answered — forwarded requests, replication, resync and withdrawals; without headers and TLS framing, and without requests that got no answer (timed out, connection lost); refreshed at each scrape |
//! | `hsm_proxy_group_members` | gauge | | members in the member table; refreshed at each scrape |
//! | `hsm_proxy_group_healthy_members` | gauge | | members whose state is `up` (not down, ejected or drained); refreshed at each scrape |
//! | `hsm_proxy_min_replicas` | gauge | | the effective `group.min_replicas`: members a change must be durable on before it is acknowledged |
//! | `hsm_proxy_connections` | gauge | | open application connections (named by `hsm-server` with this crate's prefix) |
//! | `hsm_proxy_tls_handshake_failures_total` | counter | | application TLS handshakes refused or timed out (likewise) |
//! | `hsm_proxy_admin_requests_total` | counter | `action`, `outcome` | calls of the operations surface: `action` is `drain`, `undrain`, `resync`, `reload`, `unknown` (another `/admin` path) or `status` (the status page, counted only when refused); `outcome` is `ok`, `not_found` (no such member or call), `error` (a reload that failed), `busy` (a resync that found another proxy's round for 30 s), or a refusal: `unauthorized` (no or a wrong token), `no_token_configured`, `cross_site` (an `Origin` header or a content type other than JSON), `method_not_allowed` |
//!
//! Per-member counters and gauges start at 0 when the member joins the
//! table ([`member_added`]), so a rate or a panel has data before the first
//! event. Series of a member removed by a reload stay at their last value
//! until the proxy restarts.

use std::time::Duration;

pub const REQUESTS: &str = "hsm_proxy_requests_total";
pub const REQUEST_DURATION: &str = "hsm_proxy_request_duration_seconds";
pub const MEMBER_UP: &str = "hsm_proxy_member_up";
pub const MEMBER_LATENCY: &str = "hsm_proxy_member_latency_seconds";
pub const MEMBER_OUTSTANDING: &str = "hsm_proxy_member_outstanding";
pub const MEMBER_ERRORS: &str = "hsm_proxy_member_errors_total";
pub const RETRIES: &str = "hsm_proxy_retries_total";
pub const HEDGES: &str = "hsm_proxy_hedges_total";
pub const EJECTIONS: &str = "hsm_proxy_ejections_total";
pub const REPLICATION_PENDING: &str = "hsm_proxy_replication_pending";
pub const RESYNC_RUNS: &str = "hsm_proxy_resync_runs_total";
pub const RESYNC_COPIED: &str = "hsm_proxy_resync_objects_copied_total";
pub const DIVERGENCE: &str = "hsm_proxy_inventory_divergence";
pub const MEMBER_STATE: &str = "hsm_proxy_member_state";
pub const MEMBER_INFO: &str = "hsm_proxy_member_info";
pub const FAILOVERS: &str = "hsm_proxy_member_failovers_total";
pub const MEMBER_BODY_BYTES: &str = "hsm_proxy_member_body_bytes_total";
pub const GROUP_MEMBERS: &str = "hsm_proxy_group_members";
pub const GROUP_HEALTHY: &str = "hsm_proxy_group_healthy_members";
pub const MIN_REPLICAS: &str = "hsm_proxy_min_replicas";
/// Recorded by `hsm-server` under this crate's prefix (`run::serve`'s limits).
pub const CONNECTIONS: &str = "hsm_proxy_connections";
pub const HANDSHAKE_FAILURES: &str = "hsm_proxy_tls_handshake_failures_total";
pub const ADMIN_REQUESTS: &str = "hsm_proxy_admin_requests_total";

/// The values of `state` in [`MEMBER_STATE`], as the status page names them.
pub const MEMBER_STATES: &[&str] = &["up", "down", "ejected", "drained", "syncing"];

/// Latency buckets, seconds: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide recorder. Call once, before serving.
pub fn install() -> Result<(), String> {
    hsm_server::install_metrics(&[(REQUEST_DURATION, LATENCY_BUCKETS)])?;
    metrics::counter!(HANDSHAKE_FAILURES).increment(0);
    metrics::gauge!(CONNECTIONS).increment(0.0);
    Ok(())
}

/// The text exposition.
pub fn render() -> String {
    hsm_server::render_metrics().unwrap_or_default()
}

pub fn request(op: &'static str, outcome: &str, elapsed: Duration) {
    metrics::counter!(REQUESTS, "op" => op, "outcome" => outcome.to_string()).increment(1);
    metrics::histogram!(REQUEST_DURATION, "op" => op).record(elapsed.as_secs_f64());
}

pub fn member_state(member: &str, up: bool, latency: Duration, outstanding: u64) {
    let m = member.to_string();
    metrics::gauge!(MEMBER_UP, "member" => m.clone()).set(if up { 1.0 } else { 0.0 });
    metrics::gauge!(MEMBER_LATENCY, "member" => m.clone()).set(latency.as_secs_f64());
    metrics::gauge!(MEMBER_OUTSTANDING, "member" => m).set(outstanding as f64);
}

pub fn member_error(member: &str) {
    metrics::counter!(MEMBER_ERRORS, "member" => member.to_string()).increment(1);
}

pub fn retry(member: &str) {
    metrics::counter!(RETRIES, "member" => member.to_string()).increment(1);
}

pub fn hedge(member: &str) {
    metrics::counter!(HEDGES, "member" => member.to_string()).increment(1);
}

pub fn ejection(member: &str) {
    metrics::counter!(EJECTIONS, "member" => member.to_string()).increment(1);
}

pub fn replication_pending(member: &str, n: usize) {
    metrics::gauge!(REPLICATION_PENDING, "member" => member.to_string()).set(n as f64);
}

pub fn resync_run() {
    metrics::counter!(RESYNC_RUNS).increment(1);
}

/// Before the first round, so the counter exists at 0.
pub fn resync_runs_init() {
    metrics::counter!(RESYNC_RUNS).increment(0);
}

pub fn resync_copied(member: &str, n: u64) {
    metrics::counter!(RESYNC_COPIED, "member" => member.to_string()).increment(n);
}

pub fn divergence(member: &str, buckets: usize) {
    metrics::gauge!(DIVERGENCE, "member" => member.to_string()).set(buckets as f64);
}

/// A member joined the table (start or reload): its info series, and its
/// counters and gauges at 0.
pub fn member_added(member: &str, location: &str, role: &'static str) {
    let m = member.to_string();
    metrics::gauge!(MEMBER_INFO, "member" => m.clone(), "location" => location.to_string(), "role" => role)
        .set(1.0);
    for c in [
        MEMBER_ERRORS,
        RETRIES,
        HEDGES,
        EJECTIONS,
        FAILOVERS,
        RESYNC_COPIED,
    ] {
        metrics::counter!(c, "member" => m.clone()).increment(0);
    }
    for g in [REPLICATION_PENDING, DIVERGENCE] {
        metrics::gauge!(g, "member" => m.clone()).set(0.0);
    }
}

pub fn failover(member: &str) {
    metrics::counter!(FAILOVERS, "member" => member.to_string()).increment(1);
}

/// One call of the operations surface (see [`ADMIN_REQUESTS`]).
pub fn admin(action: &'static str, outcome: &'static str) {
    metrics::counter!(ADMIN_REQUESTS, "action" => action, "outcome" => outcome).increment(1);
}

pub fn min_replicas(n: u32) {
    metrics::gauge!(MIN_REPLICAS).set(f64::from(n));
}

/// The group's state as the status page shows it, set just before a scrape
/// renders: one `state` series per member and the healthy count.
pub fn group_state<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) {
    let (mut total, mut healthy) = (0usize, 0usize);
    for (member, state) in members {
        total += 1;
        healthy += usize::from(state == "up");
        for s in MEMBER_STATES {
            metrics::gauge!(MEMBER_STATE, "member" => member.to_string(), "state" => *s)
                .set(if *s == state { 1.0 } else { 0.0 });
        }
    }
    metrics::gauge!(GROUP_MEMBERS).set(total as f64);
    metrics::gauge!(GROUP_HEALTHY).set(healthy as f64);
}

/// A member's body bytes so far (`hsm_api::Client::traffic`), set just
/// before a scrape renders.
pub fn member_bytes(member: &str, sent: u64, received: u64) {
    for (direction, v) in [("sent", sent), ("received", received)] {
        metrics::counter!(MEMBER_BODY_BYTES, "member" => member.to_string(), "direction" => direction)
            .absolute(v);
    }
}

/// The `op` label of a route: [`hsm_api::Route::label`].
pub fn route_label(r: &hsm_api::Route) -> &'static str {
    r.label()
}

//! The node's Prometheus metrics: every name, label and bucket is defined
//! and documented here, and nowhere else.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `hsm_node_requests_total` | counter | `op`, `outcome` | requests answered; `outcome` is `ok` or the error code |
//! | `hsm_node_request_duration_seconds` | histogram | `op` | time from request to answer |
//! | `hsm_node_keys` | gauge | `partition` | live (not deleted) keys |
//! | `hsm_node_login_failures_total` | counter | `partition`, `role` | failed logins (wrong password or locked) |
//! | `hsm_node_password_checks_total` | counter | `partition`, `role` | password hashes computed for logins, including logins whose client gave up before the answer: each costs a core for tens of milliseconds, so a spike means a login storm or guessing |
//! | `hsm_node_lockouts_total` | counter | `partition`, `role` | roles locked after repeated failures |
//! | `hsm_node_connections` | gauge | | open client connections |
//! | `hsm_node_tls_handshake_failures_total` | counter | | handshakes refused or timed out |
//! | `hsm_node_audit_records_total` | counter | | records written to the audit log |
//! | `hsm_node_audit_syslog_dropped_total` | counter | | audit records not forwarded to the syslog collector (queue full, or the collector unreachable at shutdown or over UDP); they are still in the local log |
//! | `hsm_node_pending_expired_total` | counter | | pending key versions dropped because no proxy committed them by their deadline (`pending_ttl_secs`): a proxy died or could not reach `min_replicas` while creating a key; never an acknowledged key |
//!
//! `op` is one of the route labels of [`route_label`] (`sign`, `create`, …).
//! The counters without labels start at 0 when the recorder is installed,
//! and a partition's login counters when its key count is first set
//! ([`set_keys`]), so a rate (or an alert on one) has data before the first
//! event.

use hsm_api::{ErrorCode, Role, Route};
use std::time::Duration;

pub const REQUESTS: &str = "hsm_node_requests_total";
pub const REQUEST_DURATION: &str = "hsm_node_request_duration_seconds";
pub const KEYS: &str = "hsm_node_keys";
pub const LOGIN_FAILURES: &str = "hsm_node_login_failures_total";
pub const PASSWORD_CHECKS: &str = "hsm_node_password_checks_total";
pub const LOCKOUTS: &str = "hsm_node_lockouts_total";
pub const CONNECTIONS: &str = "hsm_node_connections";
pub const HANDSHAKE_FAILURES: &str = "hsm_node_tls_handshake_failures_total";
pub const AUDIT_RECORDS: &str = "hsm_node_audit_records_total";
pub const AUDIT_SYSLOG_DROPPED: &str = "hsm_node_audit_syslog_dropped_total";
pub const PENDING_EXPIRED: &str = "hsm_node_pending_expired_total";

/// Latency buckets, seconds: 50 µs to 10 s, covering a cached ECDSA sign on
/// loopback up to an RSA-4096 key generation.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder. Call once, before serving.
pub fn install() -> Result<(), String> {
    hsm_server::install_metrics(&[(REQUEST_DURATION, LATENCY_BUCKETS)])?;
    describe();
    for c in [
        HANDSHAKE_FAILURES,
        AUDIT_RECORDS,
        AUDIT_SYSLOG_DROPPED,
        PENDING_EXPIRED,
    ] {
        metrics::counter!(c).increment(0);
    }
    metrics::gauge!(CONNECTIONS).increment(0.0);
    Ok(())
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Requests answered, by operation and outcome");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request to answer"
    );
    metrics::describe_gauge!(KEYS, "Live (not deleted) keys per partition");
    metrics::describe_counter!(LOGIN_FAILURES, "Failed logins per partition and role");
    metrics::describe_counter!(
        PASSWORD_CHECKS,
        "Password hashes computed for logins, per partition and role (abandoned logins included)"
    );
    metrics::describe_counter!(LOCKOUTS, "Roles locked after repeated failed logins");
    metrics::describe_gauge!(CONNECTIONS, "Open client connections");
    metrics::describe_counter!(HANDSHAKE_FAILURES, "TLS handshakes refused or timed out");
    metrics::describe_counter!(AUDIT_RECORDS, "Records written to the audit log");
    metrics::describe_counter!(
        AUDIT_SYSLOG_DROPPED,
        "Audit records not forwarded to the syslog collector (still in the local log)"
    );
    metrics::describe_counter!(
        PENDING_EXPIRED,
        "Pending key versions dropped, not committed by their deadline"
    );
}

/// The text exposition, for `GET /metrics`; `None` when no recorder is
/// installed. The HTTP answer is built by the service (`Node::metrics`).
pub fn render() -> Option<String> {
    hsm_server::render_metrics()
}

/// The `op` label of a route: [`Route::label`].
pub fn route_label(r: &Route) -> &'static str {
    r.label()
}

/// Records one answered request; `error` is the code of an error answer.
pub fn observe_request(op: &'static str, error: Option<ErrorCode>, elapsed: Duration) {
    let outcome = error.map(ErrorCode::as_str).unwrap_or("ok");
    metrics::counter!(REQUESTS, "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_DURATION, "op" => op).record(elapsed.as_secs_f64());
}

/// A partition's key count, set when it is opened, created or restored;
/// its login counters start at 0 for every role then, so that the first
/// failure or lockout is an increase (an alert on `increase()` sees it).
pub fn set_keys(partition: &str, n: u64) {
    metrics::gauge!(KEYS, "partition" => partition.to_string()).set(n as f64);
    for role in Role::ALL {
        let p = partition.to_string();
        metrics::counter!(LOGIN_FAILURES, "partition" => p.clone(), "role" => role.as_str())
            .increment(0);
        metrics::counter!(LOCKOUTS, "partition" => p, "role" => role.as_str()).increment(0);
    }
}

pub fn keys_delta(partition: &str, d: f64) {
    metrics::gauge!(KEYS, "partition" => partition.to_string()).increment(d);
}

pub fn login_failure(partition: &str, role: Role) {
    metrics::counter!(LOGIN_FAILURES, "partition" => partition.to_string(), "role" => role.as_str())
        .increment(1);
}

pub fn password_check(partition: &str, role: Role) {
    metrics::counter!(PASSWORD_CHECKS, "partition" => partition.to_string(), "role" => role.as_str())
        .increment(1);
}

pub fn lockout(partition: &str, role: Role) {
    metrics::counter!(LOCKOUTS, "partition" => partition.to_string(), "role" => role.as_str())
        .increment(1);
}

pub fn connections(delta: f64) {
    metrics::gauge!(CONNECTIONS).increment(delta);
}

pub fn handshake_failure() {
    metrics::counter!(HANDSHAKE_FAILURES).increment(1);
}

pub fn audit_record() {
    metrics::counter!(AUDIT_RECORDS).increment(1);
}

pub fn audit_syslog_dropped() {
    metrics::counter!(AUDIT_SYSLOG_DROPPED).increment(1);
}

pub fn pending_expired(n: u64) {
    metrics::counter!(PENDING_EXPIRED).increment(n);
}

//! The metrics listener: Prometheus `/metrics`, the status page `/status`
//! (server-rendered HTML in the spirit of HAProxy's stats page) and the same
//! facts as `/status.json`, the probes `/ready` and `/live`, and the admin
//! calls: `POST /admin/resync` (a round now), `POST /admin/reload` (the
//! member list and the operator token from the configuration file, as
//! SIGHUP), `POST /admin/drain/{member}` and `/admin/undrain/{member}`
//! (stop or resume sending it requests). It binds loopback by default; it
//! shows names, states and errors, never keys or secrets. Who may call what
//! is `operator`'s rule: `/admin` and (unless open) the status page need the
//! operator token; every admin call is logged and counted.
//!
//! The probes (for Kubernetes, systemd watchdogs, load balancers):
//!
//! - `GET /ready`: `200 {"ready":true,"healthy":H,"members":N,"min_replicas":M}`
//!   when at least `group.min_replicas` members are healthy (state `up`:
//!   not down, ejected or drained), so that a key creation can be made
//!   durable; otherwise `503` with the same fields, `"ready":false` and a
//!   `"reason"` in words. A readiness probe.
//! - `GET /live`: `200 {"live":true}` whenever the process serves this
//!   listener, whatever the members' state. A liveness probe: it fails only
//!   when the proxy is wedged, so a group outage never restarts the proxy.
//!
//! Decides: what an operator sees per member — state (up, down, ejected,
//! drained), role, location, latency estimate, outstanding requests, last
//! error — how the page is rendered (every value HTML-escaped; a member
//! that is not up is named in a red banner above the table, and its row and
//! state badge carry the state's colour: red for DOWN), and what ready
//! means. `/metrics` refreshes the per-member state gauges from the same
//! snapshot before rendering.

use crate::group::Group;
use crate::run::Supervisor;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub url: String,
    pub role: crate::member::MemberRole,
    pub location: String,
    /// `up`, `down`, `ejected`, `drained` or `syncing` (checks pass, but it
    /// may lack changes: held back until a resync round includes it).
    pub state: &'static str,
    pub latency_ms: f64,
    pub outstanding: u64,
    pub ejections: u32,
    pub last_error: Option<String>,
}

#[derive(Serialize)]
pub struct GroupStatus {
    pub members: Vec<MemberStatus>,
    pub healthy: usize,
}

pub fn status(group: &Group) -> GroupStatus {
    let now = tokio::time::Instant::now();
    let members: Vec<MemberStatus> = group
        .members()
        .iter()
        .map(|m| {
            let drained = m.drained.load(std::sync::atomic::Ordering::SeqCst);
            let (state, ejections) = match m.health.lock() {
                Ok(_) if drained => ("drained", 0),
                Ok(h) if h.ejected(now) => ("ejected", h.ejections()),
                Ok(h) if h.is_up() && m.missed() > 0 => ("syncing", h.ejections()),
                Ok(h) if h.is_up() => ("up", h.ejections()),
                Ok(h) => ("down", h.ejections()),
                Err(_) => ("down", 0),
            };
            MemberStatus {
                name: m.name().to_string(),
                url: m.spec.url.clone(),
                role: m.spec.role,
                location: m.spec.location.clone(),
                state,
                latency_ms: m.load.estimate().as_secs_f64() * 1000.0,
                outstanding: m.load.outstanding(),
                ejections,
                last_error: m.last_error.lock().ok().and_then(|e| e.clone()),
            }
        })
        .collect();
    let healthy = members.iter().filter(|m| m.state == "up").count();
    GroupStatus { members, healthy }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page's style: one colour per state, strong enough to find a dead
/// member at a glance — its whole row red and a white-on-red `DOWN` badge.
const STYLE: &str = "body{font-family:sans-serif;margin:16px;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #999;padding:6px 10px;text-align:left}\
th{background:#eceff1}\
tr.state-up{background:#e8f5e9}tr.state-down{background:#ffcdd2}\
tr.state-ejected{background:#ffe0b2}tr.state-syncing{background:#fff9c4}tr.state-drained{background:#eeeeee}\
.badge{display:inline-block;min-width:5em;text-align:center;font-weight:bold;padding:2px 6px;border-radius:3px;color:#fff}\
.badge.up{background:#2e7d32}.badge.down{background:#c62828}\
.badge.ejected{background:#ef6c00}.badge.syncing{background:#f9a825}.badge.drained{background:#616161}\
.summary{font-size:1.2em}.summary.degraded{color:#c62828;font-weight:bold}\
.alert{background:#c62828;color:#fff;font-weight:bold;padding:8px 12px;display:inline-block}";

pub fn html(s: &GroupStatus) -> String {
    let mut rows = String::new();
    for m in &s.members {
        rows.push_str(&format!(
            "<tr class=\"member state-{state}\" data-member=\"{name}\"><td>{name}</td><td>{}</td><td>{:?}</td><td>{}</td>\
<td><span class=\"badge {state}\">{}</span></td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&m.url),
            m.role,
            esc(&m.location),
            m.state.to_uppercase(),
            m.latency_ms,
            m.outstanding,
            m.ejections,
            esc(m.last_error.as_deref().unwrap_or("")),
            name = esc(&m.name),
            state = m.state,
        ));
    }
    let not_up: Vec<String> = s
        .members
        .iter()
        .filter(|m| m.state != "up")
        .map(|m| format!("{} {}", esc(&m.name), m.state.to_uppercase()))
        .collect();
    let alert = if not_up.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"alert\" id=\"not-up\">{}</p>",
            not_up.join(" · ")
        )
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>hsm-proxy status</title>\
<style>{STYLE}</style></head><body><h1>hsm-proxy</h1>\
<p class=\"summary{}\" id=\"summary\">{} of {} members healthy</p>{alert}\
<table><tr><th>member</th><th>url</th><th>role</th><th>location</th><th>state</th><th>latency (ms)</th><th>outstanding</th><th>ejections</th><th>last error</th></tr>\n{rows}</table>\
<p><a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
        if s.healthy < s.members.len() { " degraded" } else { "" },
        s.healthy,
        s.members.len()
    )
}

/// `GET /ready`: ready when at least `min_replicas` members are up.
pub fn ready(s: &GroupStatus, min_replicas: usize) -> (StatusCode, String) {
    let members = s.members.len();
    let mut body = serde_json::json!({
        "ready": s.healthy >= min_replicas,
        "healthy": s.healthy,
        "members": members,
        "min_replicas": min_replicas,
    });
    if s.healthy >= min_replicas {
        return (StatusCode::OK, body.to_string());
    }
    body["reason"] = serde_json::Value::String(format!(
        "{} of {members} members healthy, fewer than min_replicas ({min_replicas}): \
         a new key could not be made durable",
        s.healthy
    ));
    (StatusCode::SERVICE_UNAVAILABLE, body.to_string())
}

/// Drains or undrains member `name`: (the metric's outcome, the answer).
fn drain(group: &Group, name: &str, on: bool) -> (&'static str, Response<Full<Bytes>>) {
    match group.members().iter().find(|m| m.name() == name) {
        Some(m) => {
            m.drained.store(on, std::sync::atomic::Ordering::SeqCst);
            (
                "ok",
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"member": name, "drained": on}).to_string(),
                ),
            )
        }
        None => (
            "not_found",
            error_reply(StatusCode::NOT_FOUND, &format!("no member {name}")),
        ),
    }
}

fn reply(status: StatusCode, ct: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// The metrics listener's handler: `/admin` through [`admin`], the
/// status page behind the operator token unless open (`operator`), the
/// probes and `/metrics` open.
pub fn handler(sup: Arc<Supervisor>) -> hsm_server::Handler {
    Arc::new(move |req, peer| {
        let sup = sup.clone();
        Box::pin(async move {
            let group = &sup.group;
            let (parts, _body) = req.into_parts();
            let path = parts.uri.path().to_string();
            if path == "/admin" || path.starts_with("/admin/") {
                return admin(&sup, &parts, &path, &peer).await;
            }
            let status_page = matches!(path.as_str(), "/status" | "/status.json");
            if parts.method == Method::GET && status_page {
                if let Err(r) = sup.operator.status(&parts.headers) {
                    crate::metrics::admin("status", r.outcome);
                    tracing::warn!(peer = %peer.addr, outcome = r.outcome, "status page refused");
                    return refused(&r);
                }
            }
            match (&parts.method, path.as_str()) {
                (&Method::GET, "/metrics") => {
                    let s = status(group);
                    crate::metrics::group_state(
                        s.members.iter().map(|m| (m.name.as_str(), m.state)),
                    );
                    for m in group.members().iter() {
                        let (sent, received) = m.traffic();
                        crate::metrics::member_bytes(m.name(), sent, received);
                    }
                    reply(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        crate::metrics::render(),
                    )
                }
                (&Method::GET, "/status") => reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    html(&status(group)),
                ),
                (&Method::GET, "/ready") => {
                    let (code, body) = ready(&status(group), sup.min_replicas);
                    reply(code, "application/json", body)
                }
                (&Method::GET, "/live") => {
                    reply(StatusCode::OK, "application/json", "{\"live\":true}".into())
                }
                (&Method::GET, "/status.json") => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string(&status(group)).unwrap_or_default(),
                ),
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
            }
        })
    })
}

/// One `/admin` call: `POST` only, refused unless the operator's
/// (`operator::Access::admin`), then done, logged (who, from where, what,
/// how it ended) and counted in `hsm_proxy_admin_requests_total`.
async fn admin(
    sup: &Supervisor,
    parts: &http::request::Parts,
    path: &str,
    peer: &hsm_server::Peer,
) -> Response<Full<Bytes>> {
    let rest = path.trim_start_matches("/admin").trim_start_matches('/');
    let (action, member) = match rest.split_once('/') {
        Some(("drain", m)) => ("drain", Some(m)),
        Some(("undrain", m)) => ("undrain", Some(m)),
        None if rest == "resync" => ("resync", None),
        None if rest == "reload" => ("reload", None),
        _ => ("unknown", None),
    };
    if parts.method != Method::POST {
        crate::metrics::admin(action, "method_not_allowed");
        let mut r = error_reply(StatusCode::METHOD_NOT_ALLOWED, "the /admin calls are POST");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let operator = match sup.operator.admin(&parts.headers) {
        Ok(o) => o,
        Err(r) => {
            crate::metrics::admin(action, r.outcome);
            tracing::warn!(peer = %peer.addr, action, outcome = r.outcome, "admin call refused");
            return refused(&r);
        }
    };
    let (outcome, resp) = match (action, member) {
        ("drain", Some(m)) => drain(&sup.group, m, true),
        ("undrain", Some(m)) => drain(&sup.group, m, false),
        ("reload", _) => match sup.reload_file() {
            Ok((added, removed)) => (
                "ok",
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"added": added, "removed": removed}).to_string(),
                ),
            ),
            Err(e) => (
                "error",
                error_reply(StatusCode::BAD_REQUEST, &e.to_string()),
            ),
        },
        ("resync", _) => {
            let done = sup
                .resyncer
                .round_waiting(std::time::Duration::from_secs(30))
                .await;
            (
                if done { "ok" } else { "busy" },
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"resync": if done { "done" } else { "another proxy's round held the lease for 30 s" }})
                        .to_string(),
                ),
            )
        }
        _ => (
            "not_found",
            error_reply(StatusCode::NOT_FOUND, "no such /admin call"),
        ),
    };
    crate::metrics::admin(action, outcome);
    tracing::info!(
        operator = %operator,
        peer = %peer.addr,
        action,
        member = member.unwrap_or_default(),
        outcome,
        "admin call"
    );
    resp
}

/// The answer to a refused call; a `401` says how to authenticate.
fn refused(r: &crate::operator::Refusal) -> Response<Full<Bytes>> {
    let mut resp = error_reply(r.status, &r.message);
    if r.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hsm-proxy operations\""),
        );
    }
    resp
}

/// `{"error":{"code":…,"message":…}}`, the code the status's reason.
fn error_reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let code = status
        .canonical_reason()
        .unwrap_or("Error")
        .replace(' ', "");
    reply(
        status,
        "application/json",
        serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(states: &[&'static str]) -> GroupStatus {
        let members: Vec<MemberStatus> = states
            .iter()
            .enumerate()
            .map(|(i, state)| MemberStatus {
                name: format!("m{i}"),
                url: format!("https://10.0.0.{i}:8443"),
                role: crate::member::MemberRole::Active,
                location: "local".into(),
                state,
                latency_ms: 1.0,
                outstanding: 0,
                ejections: 0,
                last_error: None,
            })
            .collect();
        let healthy = members.iter().filter(|m| m.state == "up").count();
        GroupStatus { members, healthy }
    }

    #[test]
    fn ready_needs_min_replicas_members_up() {
        let (code, body) = ready(&group(&["up", "up", "down"]), 2);
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("\"ready\":true") && !body.contains("reason"),
            "{body}"
        );
        // Ejected and drained members do not count.
        let (code, body) = ready(&group(&["up", "ejected", "drained"]), 2);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("\"ready\":false")
                && body.contains("\"healthy\":1")
                && body.contains("1 of 3 members healthy, fewer than min_replicas (2)"),
            "{body}"
        );
        assert_eq!(ready(&group(&["up"]), 1).0, StatusCode::OK);
        assert_eq!(
            ready(&group(&["down"]), 1).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    fn member(name: &str, state: &'static str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            url: format!("https://{name}:1"),
            role: crate::member::MemberRole::Active,
            location: "<site>".into(),
            state,
            latency_ms: 1.0,
            outstanding: 0,
            ejections: 0,
            last_error: Some("a <b>bad</b> error".into()),
        }
    }

    #[test]
    fn a_down_member_is_named_in_the_banner_with_a_red_row_and_values_are_escaped() {
        let page = html(&GroupStatus {
            members: vec![member("m0", "up"), member("m1", "down")],
            healthy: 1,
        });
        assert!(page.contains("<tr class=\"member state-down\" data-member=\"m1\">"));
        assert!(page.contains("<span class=\"badge down\">DOWN</span>"));
        assert!(page.contains("<p class=\"alert\" id=\"not-up\">m1 DOWN</p>"));
        assert!(page.contains("class=\"summary degraded\""));
        assert!(page.contains("tr.state-down{background:#ffcdd2}"));
        assert!(page.contains("&lt;site&gt;") && !page.contains("<site>"));
        assert!(!page.contains("<b>bad</b>"));
        let healthy = html(&GroupStatus {
            members: vec![member("m0", "up")],
            healthy: 1,
        });
        assert!(!healthy.contains("id=\"not-up\"") && !healthy.contains("summary degraded"));
    }
}

//! The metrics listener: Prometheus `/metrics`, the status page `/status`
//! (server-rendered HTML in the spirit of HAProxy's stats page) and the same
//! facts as `/status.json`, the probes `/ready` and `/live`, and the admin
//! calls: `POST /admin/resync` (a round now), `POST /admin/reload` (the
//! member list from the configuration file, as SIGHUP),
//! `POST /admin/drain/{member}` and `/admin/undrain/{member}` (stop or
//! resume sending it requests). It binds loopback by default; it shows
//! names, states and errors, never keys or secrets.
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
//! Decides: what an operator sees per member — state (up, down, ejected),
//! role, location, latency estimate, outstanding requests, last error — how
//! the page is rendered (every value HTML-escaped), and what ready means.

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
    /// `up`, `down` or `ejected`.
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

pub fn html(s: &GroupStatus) -> String {
    let mut rows = String::new();
    for m in &s.members {
        let color = match m.state {
            "up" => "#c8f7c5",
            "ejected" => "#fde2a7",
            _ => "#f7c5c5",
        };
        rows.push_str(&format!(
            "<tr style=\"background:{color}\"><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td><b>{}</b></td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&m.name),
            esc(&m.url),
            m.role,
            esc(&m.location),
            m.state,
            m.latency_ms,
            m.outstanding,
            m.ejections,
            esc(m.last_error.as_deref().unwrap_or("")),
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>hsm-proxy status</title>\
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px}}</style>\
</head><body><h1>hsm-proxy</h1><p>{} of {} members healthy</p>\
<table><tr><th>member</th><th>url</th><th>role</th><th>location</th><th>state</th><th>latency (ms)</th><th>outstanding</th><th>ejections</th><th>last error</th></tr>\n{rows}</table>\
<p><a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
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

fn drain(group: &Group, name: &str, on: bool) -> Response<Full<Bytes>> {
    match group.members().iter().find(|m| m.name() == name) {
        Some(m) => {
            m.drained.store(on, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(member = name, drained = on, "drain changed");
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::json!({"member": name, "drained": on}).to_string(),
            )
        }
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no member {name}\n"),
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

/// The metrics listener's handler.
pub fn handler(sup: Arc<Supervisor>) -> hsm_server::Handler {
    Arc::new(move |req, _peer| {
        let sup = sup.clone();
        Box::pin(async move {
            let (group, resyncer) = (&sup.group, &sup.resyncer);
            let path = req.uri().path().to_string();
            if req.method() == Method::POST {
                if let Some(name) = path.strip_prefix("/admin/drain/") {
                    return drain(group, name, true);
                }
                if let Some(name) = path.strip_prefix("/admin/undrain/") {
                    return drain(group, name, false);
                }
                if path == "/admin/reload" {
                    return match sup.reload_file() {
                        Ok((added, removed)) => reply(
                            StatusCode::OK,
                            "application/json",
                            serde_json::json!({"added": added, "removed": removed}).to_string(),
                        ),
                        Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
                    };
                }
            }
            match (req.method(), path.as_str()) {
                (&Method::GET, "/metrics") => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    crate::metrics::render(),
                ),
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
                (&Method::POST, "/admin/resync") => {
                    resyncer.round(None).await;
                    reply(
                        StatusCode::OK,
                        "application/json",
                        "{\"resync\":\"done\"}".into(),
                    )
                }
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
            }
        })
    })
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
}

//! The metrics listener: Prometheus `/metrics`, the status page `/status`
//! (server-rendered HTML in the spirit of HAProxy's stats page) and the same
//! facts as `/status.json`, plus `POST /admin/resync` to run a resync round
//! now. It binds loopback by default; it shows names, states and errors,
//! never keys or secrets.
//!
//! Decides: what an operator sees per member — state (up, down, ejected),
//! role, location, latency estimate, outstanding requests, last error — and
//! how the page is rendered (every value HTML-escaped).

use crate::checker::Resyncer;
use crate::group::Group;
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
            let (state, ejections) = match m.health.lock() {
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

fn reply(status: StatusCode, ct: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// The metrics listener's handler.
pub fn handler(group: Arc<Group>, resyncer: Arc<Resyncer>) -> hsm_server::Handler {
    Arc::new(move |req, _peer| {
        let (group, resyncer) = (group.clone(), resyncer.clone());
        Box::pin(async move {
            match (req.method(), req.uri().path()) {
                (&Method::GET, "/metrics") => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    crate::metrics::render(),
                ),
                (&Method::GET, "/status") => reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    html(&status(&group)),
                ),
                (&Method::GET, "/status.json") => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string(&status(&group)).unwrap_or_default(),
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

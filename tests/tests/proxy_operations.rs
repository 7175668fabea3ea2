//! The proxy's operations surface (the metrics listener) against a real
//! `hsm-proxy` process: every `/admin` call and the status page need the
//! operator token (`metrics.admin_token_file`); requests shaped like a web
//! page's (an `Origin` header, a form or text body) are refused even with
//! it; every refusal leaves the group as it was; `/metrics`, `/ready` and
//! `/live` stay open; each admin call is logged with who made it and
//! counted; a reload rotates the token; without a token `/admin` is closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use std::process::Command;
use std::time::Duration;

/// `curl -X method url` with `headers`: (HTTP status, body).
fn curl(method: &str, url: &str, headers: &[String]) -> (u16, String) {
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
    ];
    for h in headers {
        args.push("-H".into());
        args.push(h.clone());
    }
    args.push(url.into());
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

const JSON: &str = "content-type: application/json";

/// Every member's state on the status page, read with the token.
fn states(p: &TestProxy) -> Vec<String> {
    p.status().unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_status_need_the_operator_token_and_refuse_cross_site_requests() {
    let nodes = TestNode::group(2).await.unwrap();
    let mut p = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let token = p.admin_token.clone();
    let m = p.metrics.clone();
    let wrong = "f".repeat(64);
    let calls = ["drain/m0", "drain/m1", "resync", "reload", "undrain/m0"];

    // No token, a wrong one, another scheme: 401 with a challenge, nothing done.
    for call in calls {
        let url = format!("{m}/admin/{call}");
        for headers in [
            vec![JSON.to_string()],
            vec![JSON.to_string(), bearer(&wrong)],
            vec![
                JSON.to_string(),
                format!("Authorization: Basic {}", "b3A6cGFzcw=="),
            ],
        ] {
            let (code, body) = curl("POST", &url, &headers);
            assert_eq!(code, 401, "POST /admin/{call} with {headers:?}: {body}");
            assert!(body.contains("operator token"), "{body}");
        }
        // Shaped like a browser's cross-site request, with the right token:
        // an Origin header (403), or a body a page can send without a
        // preflight (415).
        let (code, body) = curl(
            "POST",
            &url,
            &[
                JSON.to_string(),
                bearer(&token),
                "Origin: https://evil.example".into(),
            ],
        );
        assert_eq!(code, 403, "{call} with an Origin: {body}");
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let (code, body) = curl(
                "POST",
                &url,
                &[format!("content-type: {ct}"), bearer(&token)],
            );
            assert_eq!(code, 415, "{call} as {ct}: {body}");
        }
        let (code, _) = curl("POST", &url, &[bearer(&token)]);
        assert_eq!(code, 415, "{call} without a content type");
    }
    // State unchanged: both members still up, none drained.
    assert_eq!(states(&p), ["up", "up"]);
    let refused = p
        .metric(
            "hsm_proxy_admin_requests_total",
            &[("action", "drain"), ("outcome", "unauthorized")],
        )
        .unwrap();
    assert_eq!(refused, 6.0, "3 refusals for each of the 2 drains");
    assert_eq!(
        p.metric(
            "hsm_proxy_admin_requests_total",
            &[("action", "drain"), ("outcome", "cross_site")]
        )
        .unwrap(),
        10.0
    );

    // The status page: the token, or 401; never an answer to a wrong one.
    for path in ["/status", "/status.json"] {
        let url = format!("{m}{path}");
        let (code, body) = curl("GET", &url, &[]);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains("m0"), "{path} told a member name: {body}");
        let (code, _) = curl("GET", &url, &[bearer(&wrong)]);
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) = curl("GET", &url, &[bearer(&token)]);
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.contains("m0"));
    }
    // Probes and scraping stay open.
    for path in ["/metrics", "/ready", "/live"] {
        let (code, _) = curl("GET", &format!("{m}{path}"), &[]);
        assert_eq!(code, 200, "{path}");
    }

    // With the token: done, logged with who and from where, counted.
    let (code, body) = p.admin("drain/m0").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(states(&p), ["drained", "up"]);
    let (code, body) = p.admin("drain/nobody").unwrap();
    assert_eq!(code, 404, "{body}");
    let (code, body) = p.admin("undrain/m0").unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = p.admin("no-such-call").unwrap();
    assert_eq!(code, 404);
    let (code, _) = curl("GET", &format!("{m}/admin/resync"), &[bearer(&token)]);
    assert_eq!(code, 405, "GET on /admin");
    let log = p.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains("admin call")
                && l.contains("action=\"drain\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no log line of the drain:\n{log}"));
    assert!(
        line.contains("operator=token:") && line.contains("peer=127.0.0.1"),
        "{line}"
    );
    assert!(!log.contains(&token), "the token is in the log");
    assert_eq!(
        p.metric(
            "hsm_proxy_admin_requests_total",
            &[("action", "drain"), ("outcome", "ok")]
        )
        .unwrap(),
        1.0
    );

    // A reload reads the token file again: the old token stops working.
    let new_token = "0123456789abcdef".repeat(4);
    hsm_tests::write_mode(&p.dir.join("admin-token"), &new_token, 0o600).unwrap();
    let (code, body) = p.admin("reload").unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = p.admin("resync").unwrap();
    assert_eq!(code, 401, "the old token after the reload");
    p.admin_token = new_token;
    let (code, body) = p.admin("resync").unwrap();
    assert_eq!(code, 200, "{body}");

    // No token configured: every /admin call is closed (403), and so is the
    // status page; the probes still answer.
    let cfg = std::fs::read_to_string(p.dir.join("proxy.toml")).unwrap();
    std::fs::write(
        p.dir.join("proxy.toml"),
        cfg.replace("admin_token_file = \"admin-token\"\n", ""),
    )
    .unwrap();
    p.kill();
    p.restart(0).await.unwrap();
    let m = p.metrics.clone();
    for call in calls {
        let (code, body) = p.admin(call).unwrap();
        assert_eq!(code, 403, "{call} with no token configured: {body}");
        assert!(body.contains("metrics.admin_token_file"), "{body}");
    }
    let (code, _) = curl(
        "GET",
        &format!("{m}/status.json"),
        &[bearer(&p.admin_token)],
    );
    assert_eq!(code, 403);
    for path in ["/metrics", "/ready", "/live"] {
        let (code, _) = curl("GET", &format!("{m}{path}"), &[]);
        assert!(code == 200 || code == 503, "{path}: {code}");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

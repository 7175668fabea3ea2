//! Health and metrics: the unauthenticated health answer, and Prometheus
//! metrics that count what clients did, on the TLS listener and on the
//! optional plain `metrics_listen`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::{Client, ClientConfig, Curve, KeyCreateParameters, SignatureAlgorithm};
use hsm_tests::TestNode;
use http::Method;

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(node: &TestNode) -> String {
    let (c, k) = node.pki.cert("app");
    let cfg = ClientConfig::from_files(
        format!("https://{}", node.addr),
        &node.pki.ca(),
        Some((&c, &k)),
    )
    .unwrap();
    let client = Client::new(&cfg).unwrap();
    let (st, body) = client
        .raw(Method::GET, "/metrics", None, Default::default())
        .await
        .unwrap();
    assert_eq!(st, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_operations_outcomes_keys_and_latency() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    for name in ["a", "b", "c"] {
        co.create_key(name, &KeyCreateParameters::ec(Curve::P256))
            .await
            .unwrap();
    }
    co.delete_key("c").await.unwrap();
    for _ in 0..5 {
        co.sign("a", None, SignatureAlgorithm::Es256, &[1u8; 32])
            .await
            .unwrap();
    }
    let _ = co
        .sign("a", None, SignatureAlgorithm::Es256, &[1u8; 7])
        .await
        .unwrap_err();
    let _ = co.get_key("missing", None).await.unwrap_err();

    let body = scrape(&node).await;
    assert_eq!(
        metric(&body, r#"hsm_node_keys{partition="p1"}"#),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, r#"hsm_node_requests_total{op="sign",outcome="ok"}"#),
        Some(5.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"hsm_node_requests_total{op="sign",outcome="InvalidDigestLength"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"hsm_node_requests_total{op="get",outcome="KeyNotFound"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"hsm_node_requests_total{op="create",outcome="ok"}"#
        ),
        Some(3.0),
        "{body}"
    );
    // A real histogram with the documented buckets, not a summary.
    assert_eq!(
        metric(
            &body,
            r#"hsm_node_request_duration_seconds_bucket{op="sign",le="+Inf"}"#
        ),
        Some(6.0),
        "{body}"
    );
    assert!(
        body.contains(r#"hsm_node_request_duration_seconds_bucket{op="sign",le="0.00005"}"#),
        "{body}"
    );
    assert!(
        metric(&body, "hsm_node_connections").is_some_and(|n| n >= 1.0),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_plain_and_tells_no_secrets() {
    let mut node = TestNode::start().await.unwrap();
    // Serve the plain listener too: stop, set metrics_listen, start again.
    node.kill();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings_path = node.dir.join("node.json");
    let mut settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings_path).unwrap()).unwrap();
    settings["metrics_listen"] = serde_json::json!(format!("127.0.0.1:{port}"));
    std::fs::write(
        &settings_path,
        serde_json::to_vec_pretty(&settings).unwrap(),
    )
    .unwrap();
    node.run().await.unwrap();
    let co = node.officer().await.unwrap();
    co.create_key("secret-name-xyz", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();

    // Over TLS, without a token.
    let (c, k) = node.pki.cert("app");
    let cfg = ClientConfig::from_files(
        format!("https://{}", node.addr),
        &node.pki.ca(),
        Some((&c, &k)),
    )
    .unwrap();
    let h = Client::new(&cfg).unwrap().health().await.unwrap();
    assert_eq!(h.status, "ready");

    // Over plain HTTP on the metrics listener (curl: a second implementation).
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/health")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The state, and the number that tells proxies whether the sync state
    // moved: nothing else.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["status", "sync_generation"], "{text}");
    assert_eq!(v["status"], "ready");
    assert!(v["sync_generation"].is_u64(), "{text}");
    assert!(!text.contains("secret-name-xyz") && !text.contains("p1"));
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        metric(&text, r#"hsm_node_keys{partition="p1"}"#),
        Some(1.0),
        "{text}"
    );
    // Key names never appear in metrics.
    assert!(!text.contains("secret-name-xyz"));
    // Nothing else is served there.
    let st = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/partitions/p1/keys"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&st.stdout), "404");
}

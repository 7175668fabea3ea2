//! Bad input through the proxy gets the same precise error as from a node,
//! changes nothing on any member, and the member protocol is not exposed;
//! a forged `Host` header is never echoed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;

use bytes::Bytes;
use hsm_api::*;
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use http::Method;

async fn send(c: &Client, method: Method, path: &str, body: &[u8]) -> (u16, String) {
    let (st, bytes) = c
        .raw(
            method,
            path,
            Some("application/json"),
            Bytes::copy_from_slice(body),
        )
        .await
        .unwrap();
    let e: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{path}: not an error body: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (st.as_u16(), e.error.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_node_s_error_and_changes_nothing() {
    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let via_proxy = proxy.login(Role::CryptoOfficer).await.unwrap();
    let direct = nodes[0].officer().await.unwrap();
    via_proxy
        .create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let before: Vec<InventorySummary> = {
        let mut v = Vec::new();
        for n in &nodes {
            v.push(n.officer().await.unwrap().inventory().await.unwrap());
        }
        v
    };
    let d32 = hsm_api::b64::encode(&[1u8; 32]);
    let cases: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::POST, "/keys/k/create".into(), b"{\"kty\":".to_vec()),
        (
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"EC","colour":"red"}"#.to_vec(),
        ),
        (
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"DSA"}"#.to_vec(),
        ),
        (
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"RSA","key_size":1024}"#.to_vec(),
        ),
        (
            Method::POST,
            "/keys/bad_name!/create".into(),
            br#"{"kty":"EC"}"#.to_vec(),
        ),
        (
            Method::POST,
            "/keys/ec//sign".into(),
            br#"{"alg":"ES256","value":"+/+/"}"#.to_vec(),
        ),
        (
            Method::POST,
            "/keys/ec//sign".into(),
            format!(r#"{{"alg":"RS256","value":"{d32}"}}"#).into_bytes(),
        ),
        (
            Method::POST,
            "/keys/ec//sign".into(),
            format!(
                r#"{{"alg":"ES256","value":"{}"}}"#,
                hsm_api::b64::encode(&[1u8; 20])
            )
            .into_bytes(),
        ),
        (
            Method::POST,
            "/keys/nope//sign".into(),
            format!(r#"{{"alg":"ES256","value":"{d32}"}}"#).into_bytes(),
        ),
        (Method::POST, "/rng".into(), br#"{"count":0}"#.to_vec()),
    ];
    for (method, path, body) in cases {
        let p = send(&via_proxy, method.clone(), &path, &body).await;
        let d = send(&direct, method, &path, &body).await;
        assert_eq!(p, d, "{path}: proxy and node disagree");
        assert!((400..500).contains(&p.0), "{path}: {p:?}");
    }
    // Oversized: refused by the proxy itself with the same code.
    let big = vec![b'a'; 300 * 1024];
    assert_eq!(
        send(&via_proxy, Method::POST, "/keys/ec//sign", &big)
            .await
            .1,
        "BodyTooLarge"
    );
    // The member protocol is not reachable through the proxy.
    for path in ["/inventory", "/inventory/buckets", "/clone/export"] {
        let m = if path == "/clone/export" {
            Method::POST
        } else {
            Method::GET
        };
        assert_eq!(
            send(&via_proxy, m, path, b"{\"name\":\"ec\"}").await,
            (404, "NotFound".into()),
            "{path}"
        );
    }
    for (n, b) in nodes.iter().zip(&before) {
        assert_eq!(
            &n.officer().await.unwrap().inventory().await.unwrap(),
            b,
            "a refused request changed a member"
        );
    }
}

/// One HTTP/1.1 request to the proxy on a fresh TLS connection, naming
/// `host`; asserts that `evil` appears nowhere in the answer.
async fn as_host(
    proxy: &TestProxy,
    host: &str,
    evil: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> abuse::RawResponse {
    let addr = proxy.url.trim_start_matches("https://");
    let cfg = abuse::tls_config(&proxy.ca, None, &[b"http/1.1"]);
    let mut s = abuse::connect(addr, cfg).await.unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    let r = abuse::http1(&mut s, &req, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&r.body);
    for (k, v) in &r.headers {
        assert!(
            !v.contains(evil) && !k.contains(evil),
            "{method} {path}: header {k}: {v}"
        );
    }
    assert!(!text.contains(evil), "{method} {path}: {} {text}", r.status);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_host_header_never_appears_in_an_answer() {
    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let evil = "evil.example";
    let ours = proxy.url.clone();
    for host in [evil, "evil.example:443"] {
        // The challenge of an unauthenticated request names the proxy.
        let r = as_host(&proxy, host, evil, "GET", "/keys", None, b"").await;
        assert_eq!(r.status, 401);
        let challenge = r.header("www-authenticate").unwrap();
        assert_eq!(
            challenge,
            format!("Bearer authorization=\"{ours}/login\", resource=\"{ours}\"")
        );
        let login = format!(
            r#"{{"role":"crypto-officer","password":"{}"}}"#,
            hsm_tests::CO_PASSWORD
        );
        let r = as_host(&proxy, host, evil, "POST", "/login", None, login.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let token: LoginResponse = serde_json::from_slice(&r.body).unwrap();
        let t = Some(token.access_token.as_str());
        let name = if host == evil { "hk" } else { "hk2" };
        let kid_of = |r: &abuse::RawResponse| -> String {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["key"]["kid"].as_str().unwrap().to_string()
        };
        let r = as_host(
            &proxy,
            host,
            evil,
            "POST",
            &format!("/keys/{name}/create"),
            t,
            br#"{"kty":"EC","crv":"P-256"}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            kid_of(&r).starts_with(&format!("{ours}/keys/{name}/")),
            "{}",
            kid_of(&r)
        );
        let r = as_host(&proxy, host, evil, "GET", &format!("/keys/{name}"), t, b"").await;
        assert_eq!(r.status, 200);
        assert!(kid_of(&r).starts_with(&format!("{ours}/keys/{name}/")));
        let r = as_host(
            &proxy,
            host,
            evil,
            "POST",
            &format!("/keys/{name}/rotate"),
            t,
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(kid_of(&r).starts_with(&format!("{ours}/keys/{name}/")));
        for path in [
            "/keys".to_string(),
            format!("/keys/{name}/versions"),
            "/deletedkeys".into(),
        ] {
            let r = as_host(&proxy, host, evil, "GET", &path, t, b"").await;
            assert_eq!(r.status, 200, "{path}");
            if path != "/deletedkeys" {
                assert!(String::from_utf8_lossy(&r.body).contains(&format!("{ours}/keys/{name}")));
            }
        }
        let r = as_host(&proxy, host, evil, "GET", "/health", None, b"").await;
        assert_eq!(r.status, 200);
    }
}

//! Bad input through the proxy gets the same precise error as from a node,
//! changes nothing on any member, and the member protocol is not exposed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

//! Bad input to a node: each gets a 4xx with one precise code, and the
//! partition is exactly as it was afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use hsm_api::{Client, Curve, ErrorBody, ErrorCode, KeyCreateParameters, KeyOperationsParameters};
use hsm_tests::TestNode;
use http::Method;

/// Everything a client can observe of a partition.
async fn snapshot(c: &Client) -> String {
    let mut out = Vec::new();
    let keys = c.list_keys().await.unwrap();
    for k in &keys {
        let name = k.kid.rsplit('/').next().unwrap().to_string();
        out.push(serde_json::to_string(&c.get_key(&name, None).await.unwrap()).unwrap());
        out.push(serde_json::to_string(&c.list_versions(&name).await.unwrap()).unwrap());
    }
    out.push(serde_json::to_string(&c.list_deleted().await.unwrap()).unwrap());
    out.join("\n")
}

/// Sends a raw request and returns the status and the error code.
async fn send(c: &Client, method: Method, path: &str, body: &[u8]) -> (u16, String, String) {
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
    (st.as_u16(), e.error.code, e.error.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_precise_code_and_changes_nothing() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    co.create_key("aes", &KeyCreateParameters::oct(128))
        .await
        .unwrap();
    co.create_key("gone", &KeyCreateParameters::oct(256))
        .await
        .unwrap();
    co.delete_key("gone").await.unwrap();
    let before = snapshot(&co).await;

    let d32 = hsm_api::b64::encode(&[1u8; 32]);
    let big = vec![b'a'; 300 * 1024];
    let cases: Vec<(&str, Method, String, Vec<u8>, ErrorCode)> = vec![
        ("malformed JSON", Method::POST, "/keys/k/create".into(), b"{\"kty\":".to_vec(), ErrorCode::InvalidJson),
        ("not an object", Method::POST, "/keys/k/create".into(), b"[1,2]".to_vec(), ErrorCode::InvalidJson),
        ("empty body", Method::POST, "/keys/k/create".into(), Vec::new(), ErrorCode::InvalidJson),
        (
            "unknown field",
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"EC","crv":"P-256","colour":"red"}"#.to_vec(),
            ErrorCode::UnknownField,
        ),
        (
            "unknown kty",
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"DSA"}"#.to_vec(),
            ErrorCode::UnsupportedAlgorithm,
        ),
        (
            "RSA size out of range",
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"RSA","key_size":1024}"#.to_vec(),
            ErrorCode::BadParameter,
        ),
        (
            "invalid key name",
            Method::POST,
            "/keys/bad_name!/create".into(),
            br#"{"kty":"EC","crv":"P-256"}"#.to_vec(),
            ErrorCode::InvalidKeyName,
        ),
        (
            "key name too long",
            Method::POST,
            format!("/keys/{}/create", "a".repeat(128)),
            br#"{"kty":"EC","crv":"P-256"}"#.to_vec(),
            ErrorCode::InvalidKeyName,
        ),
        (
            "bad base64url",
            Method::POST,
            "/keys/ec//sign".into(),
            br#"{"alg":"ES256","value":"+/+/"}"#.to_vec(),
            ErrorCode::InvalidBase64,
        ),
        (
            "unknown algorithm",
            Method::POST,
            "/keys/ec//sign".into(),
            format!(r#"{{"alg":"ES257","value":"{d32}"}}"#).into_bytes(),
            ErrorCode::UnsupportedAlgorithm,
        ),
        (
            "algorithm not matching the key (RSA on EC)",
            Method::POST,
            "/keys/ec//sign".into(),
            format!(r#"{{"alg":"RS256","value":"{d32}"}}"#).into_bytes(),
            ErrorCode::AlgorithmKeyMismatch,
        ),
        (
            "algorithm not matching the curve",
            Method::POST,
            "/keys/ec//sign".into(),
            format!(r#"{{"alg":"ES384","value":"{}"}}"#, hsm_api::b64::encode(&[1u8; 48])).into_bytes(),
            ErrorCode::AlgorithmKeyMismatch,
        ),
        (
            "wrong digest length",
            Method::POST,
            "/keys/ec//sign".into(),
            format!(r#"{{"alg":"ES256","value":"{}"}}"#, hsm_api::b64::encode(&[1u8; 20])).into_bytes(),
            ErrorCode::InvalidDigestLength,
        ),
        (
            "GCM size not matching the key",
            Method::POST,
            "/keys/aes//encrypt".into(),
            format!(r#"{{"alg":"A256GCM","value":"{d32}"}}"#).into_bytes(),
            ErrorCode::AlgorithmKeyMismatch,
        ),
        (
            "oversized body",
            Method::POST,
            "/keys/ec//sign".into(),
            big,
            ErrorCode::BodyTooLarge,
        ),
        ("unknown path", Method::GET, "/frobnicate".into(), Vec::new(), ErrorCode::NotFound),
        ("wrong method", Method::DELETE, "/rng".into(), Vec::new(), ErrorCode::MethodNotAllowed),
        (
            "malformed version",
            Method::GET,
            "/keys/ec/not-a-version".into(),
            Vec::new(),
            ErrorCode::KeyNotFound,
        ),
        (
            "missing key",
            Method::POST,
            "/keys/nope//sign".into(),
            format!(r#"{{"alg":"ES256","value":"{d32}"}}"#).into_bytes(),
            ErrorCode::KeyNotFound,
        ),
        (
            "exportable keys are not offered",
            Method::POST,
            "/keys/k/create".into(),
            br#"{"kty":"EC","crv":"P-256","attributes":{"exportable":true}}"#.to_vec(),
            ErrorCode::NotSupported,
        ),
        (
            "too many tags",
            Method::POST,
            "/keys/k/create".into(),
            serde_json::to_vec(&serde_json::json!({
                "kty": "EC",
                "tags": (0..16).map(|i| (format!("t{i}"), "v".to_string())).collect::<std::collections::BTreeMap<_, _>>()
            }))
            .unwrap(),
            ErrorCode::BadParameter,
        ),
        (
            "create under a soft-deleted name",
            Method::POST,
            "/keys/gone/create".into(),
            br#"{"kty":"oct","key_size":256}"#.to_vec(),
            ErrorCode::Conflict,
        ),
        (
            "restore of garbage",
            Method::POST,
            "/keys/restore".into(),
            br#"{"value":"AAAA"}"#.to_vec(),
            ErrorCode::InvalidBackup,
        ),
        (
            "rng count out of range",
            Method::POST,
            "/rng".into(),
            br#"{"count":0}"#.to_vec(),
            ErrorCode::BadParameter,
        ),
        (
            "bad maxresults",
            Method::GET,
            "/keys?maxresults=500".into(),
            Vec::new(),
            ErrorCode::BadParameter,
        ),
    ];
    for (what, method, path, body, want) in cases {
        let (status, got, message) = send(&co, method, &path, &body).await;
        assert_eq!(got, want.as_str(), "{what}: {message}");
        assert_eq!(status, want.status(), "{what}");
        assert!((400..500).contains(&status), "{what}");
        assert!(!message.is_empty(), "{what}");
    }

    // A GCM decrypt with a wrong tag, through the typed client.
    let enc = co
        .encrypt(
            "aes",
            None,
            hsm_api::EncryptionAlgorithm::A128Gcm,
            b"secret",
            None,
        )
        .await
        .unwrap();
    let mut tag = enc.tag.clone().unwrap();
    tag.0[0] ^= 1;
    let p = KeyOperationsParameters {
        alg: hsm_api::EncryptionAlgorithm::A128Gcm,
        value: enc.value.clone(),
        iv: enc.iv.clone(),
        aad: None,
        tag: Some(tag),
    };
    let e = co
        .crypt("aes", None, hsm_api::KeyOp::Decrypt, &p)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DecryptionFailed));

    assert_eq!(
        snapshot(&co).await,
        before,
        "a refused request changed the partition"
    );
}

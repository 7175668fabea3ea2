//! A key creation happens once, whatever is retried: a request id makes a
//! retried create, import or rotate find the version it made (on a node and
//! through the proxy); two copies of one version made by two attempts
//! settle on the later attempt's (the one the proxy acknowledged), by the
//! import rule and by resync; a create that cannot be made durable on
//! `min_replicas` members is withdrawn and leaves no key behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use hsm_api::*;
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::time::{Duration, Instant};

fn ec() -> Bytes {
    Bytes::from(serde_json::to_vec(&KeyCreateParameters::ec(Curve::P256)).unwrap())
}

fn headers(id: &str, stamp: Option<u64>) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = vec![(
        HeaderName::from_static(REQUEST_ID_HEADER),
        HeaderValue::from_str(id).unwrap(),
    )];
    if let Some(s) = stamp {
        h.push((
            HeaderName::from_static(REQUEST_STAMP_HEADER),
            HeaderValue::from(s),
        ));
    }
    h
}

/// POSTs `path` with a request id; returns the status and the JSON answer.
async fn post(
    c: &Client,
    path: &str,
    id: &str,
    stamp: Option<u64>,
    body: Bytes,
) -> (StatusCode, serde_json::Value) {
    send(c, Method::POST, path, id, stamp, body).await
}

async fn send(
    c: &Client,
    method: Method,
    path: &str,
    id: &str,
    stamp: Option<u64>,
    body: Bytes,
) -> (StatusCode, serde_json::Value) {
    let (status, _, bytes) = c
        .raw_with(
            method,
            path,
            Some("application/json"),
            &headers(id, stamp),
            body,
        )
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn kid(v: &serde_json::Value) -> String {
    v["key"]["kid"].as_str().unwrap_or_default().to_string()
}

fn version_of(v: &serde_json::Value) -> String {
    kid(v).rsplit('/').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_finds_the_version_it_made() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let (s1, a) = post(&co, "/keys/k/create", "req-1", None, ec()).await;
    assert_eq!(s1, StatusCode::OK, "{a}");
    let (s2, b) = post(&co, "/keys/k/create", "req-1", None, ec()).await;
    assert_eq!(s2, StatusCode::OK, "{b}");
    assert_eq!(kid(&a), kid(&b), "a retried create made another version");
    assert_eq!(
        a["key"]["x"], b["key"]["x"],
        "a retried create made another key"
    );
    assert_eq!(co.list_versions("k").await.unwrap().len(), 1);
    // Another request id is another version.
    let (_, c) = post(&co, "/keys/k/create", "req-2", None, ec()).await;
    assert_ne!(kid(&c), kid(&a));
    assert_eq!(co.list_versions("k").await.unwrap().len(), 2);
    // Rotate and import likewise.
    let (_, r1) = post(&co, "/keys/k/rotate", "req-3", None, Bytes::new()).await;
    let (_, r2) = post(&co, "/keys/k/rotate", "req-3", None, Bytes::new()).await;
    assert_eq!(kid(&r1), kid(&r2));
    assert_eq!(co.list_versions("k").await.unwrap().len(), 3);
    let jwk = serde_json::json!({"key": {"kty": "oct-HSM", "k": b64::encode(&[9u8; 32])}});
    let body = Bytes::from(serde_json::to_vec(&jwk).unwrap());
    let (si, i1) = send(&co, Method::PUT, "/keys/imp", "req-4", None, body.clone()).await;
    assert_eq!(si, StatusCode::OK, "{i1}");
    let (_, i2) = send(&co, Method::PUT, "/keys/imp", "req-4", None, body).await;
    assert_eq!(kid(&i1), kid(&i2));
    assert_eq!(co.list_versions("imp").await.unwrap().len(), 1);
    // The same id with other key material is another request: another
    // version, never the first key answered in its place.
    let other = serde_json::json!({"key": {"kty": "oct-HSM", "k": b64::encode(&[8u8; 32])}});
    let body = Bytes::from(serde_json::to_vec(&other).unwrap());
    let (_, i3) = send(&co, Method::PUT, "/keys/imp", "req-4", None, body).await;
    assert_ne!(kid(&i3), kid(&i1));
    assert_eq!(co.list_versions("imp").await.unwrap().len(), 2);
    // A malformed request id is refused, and nothing is made.
    let long = "x".repeat(300);
    let (sb, e) = post(&co, "/keys/bad/create", &long, None, ec()).await;
    assert_eq!(sb, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "BadParameter");
    let (sb, e) = post(&co, "/keys/bad/create", "ok", Some(0), ec()).await;
    assert_eq!(sb, StatusCode::OK, "{e}");
    let (status, _, raw) = co
        .raw_with(
            Method::POST,
            "/keys/bad2/create",
            Some("application/json"),
            &[
                (
                    HeaderName::from_static(REQUEST_STAMP_HEADER),
                    HeaderValue::from_static("soon"),
                ),
                (
                    HeaderName::from_static(REQUEST_ID_HEADER),
                    HeaderValue::from_static("fine"),
                ),
            ],
            ec(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{raw:?}");
    assert!(co.get_key("bad2", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_attempts_of_one_create_settle_on_the_later_one() {
    let nodes = TestNode::group(2).await.unwrap();
    let (a, b) = (
        nodes[0].officer().await.unwrap(),
        nodes[1].officer().await.unwrap(),
    );
    // Two attempts of one request (stamps 200 and 100) through a proxy:
    // each makes a pending version on its member, under one version id,
    // with its own key material; neither is visible before a commit.
    let (_, later) = post(&b, "/keys/dup/create", "r", Some(200), ec()).await;
    let (_, earlier) = post(&a, "/keys/dup/create", "r", Some(100), ec()).await;
    let version = version_of(&later);
    assert_eq!(version, version_of(&earlier), "one request, one version id");
    assert_ne!(later["key"]["x"], earlier["key"]["x"]);
    for m in [&a, &b] {
        assert_eq!(
            m.get_key("dup", None).await.unwrap_err().code(),
            Some(ErrorCode::KeyNotFound),
            "a pending version is not usable"
        );
    }
    let ra = nodes[0].login(Role::Replication).await.unwrap();
    let rb = nodes[1].login(Role::Replication).await.unwrap();
    // Resync does not spread pending versions: both inventories are empty.
    assert_eq!(ra.inventory().await.unwrap().count, 0);
    // The later attempt's pending copy replaces the earlier one; the
    // earlier one never replaces the later.
    let blob_a = ra.clone_export_with("dup", Some(&version)).await.unwrap();
    let blob_b = rb.clone_export_with("dup", Some(&version)).await.unwrap();
    let kept = rb.clone_import(&blob_a).await.unwrap();
    assert_eq!(kept.outcome, CloneOutcome::KeptNewer);
    assert!(!kept.holds);
    assert!(ra.clone_import(&blob_b).await.unwrap().holds);
    // The proxy commits the copy it replicated, on both.
    let vr = blob_b.version.clone().unwrap();
    assert!(vr.pending);
    let commit = hsm_api::CommitRequest {
        name: "dup".into(),
        version: vr.version.clone(),
        material: vr.material.clone(),
    };
    // The earlier attempt's material cannot be committed.
    let wrong = hsm_api::CommitRequest {
        material: blob_a.version.clone().unwrap().material,
        ..commit.clone()
    };
    assert_eq!(
        ra.clone_commit(&wrong).await.unwrap_err().code(),
        Some(ErrorCode::Conflict)
    );
    ra.clone_commit(&commit).await.unwrap();
    rb.clone_commit(&commit).await.unwrap();
    // Committing twice is harmless.
    rb.clone_commit(&commit).await.unwrap();
    let ka = a.get_key("dup", None).await.unwrap();
    let kb = b.get_key("dup", None).await.unwrap();
    assert_eq!(
        serde_json::to_value(&ka.key).unwrap()["x"],
        later["key"]["x"],
        "the abandoned attempt's key survived on a"
    );
    assert_eq!(ka.key.x, kb.key.x);
    assert_eq!(a.list_versions("dup").await.unwrap().len(), 1);
    assert_eq!(
        ra.inventory().await.unwrap().summary,
        rb.inventory().await.unwrap().summary
    );
    // The earlier attempt's blob, arriving late, changes nothing.
    let late = ra.clone_import(&blob_a).await.unwrap();
    assert!(!late.holds);
    assert_eq!(a.get_key("dup", None).await.unwrap().key.x, ka.key.x);
    // A later retry of the same request on a answers the same key.
    let (_, again) = post(&a, "/keys/dup/create", "r", Some(300), ec()).await;
    assert_eq!(again["key"]["x"], later["key"]["x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_the_request_id_and_replicates_the_acknowledged_copy() {
    let nodes = TestNode::group(2).await.unwrap();
    // An abandoned attempt left a copy on m0 only.
    let a = nodes[0].officer().await.unwrap();
    let (_, stale) = post(&a, "/keys/k/create", "app-req", Some(1), ec()).await;
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    let (s, first) = post(&co, "/keys/k/create", "app-req", None, ec()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert!(kid(&first).starts_with(&proxy.url), "{first}");
    assert_eq!(version_of(&first), version_of(&stale));
    // Whichever member ran it (m0 confirms its copy, m1 makes a new one
    // that wins), every member holds the acknowledged key, once.
    // (The last copy may finish just after the answer.)
    for n in &nodes {
        let c = n.officer().await.unwrap();
        let k = hsm_tests::eventually(Duration::from_secs(5), || async {
            let k = c.get_key("k", None).await?;
            let x = serde_json::to_value(&k.key)?["x"].clone();
            anyhow::ensure!(x == first["key"]["x"], "another key: {x}");
            Ok(k)
        })
        .await;
        assert!(
            k.is_ok(),
            "a member holds another key than the one acknowledged: {k:?}"
        );
    }
    let (_, second) = post(&co, "/keys/k/create", "app-req", None, ec()).await;
    assert_eq!(kid(&second), kid(&first));
    assert_eq!(second["key"]["x"], first["key"]["x"]);
    assert_eq!(co.list_versions("k").await.unwrap().len(), 1);
    // Without a request id, every create is a new version.
    co.create_key("k", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    assert_eq!(co.list_versions("k").await.unwrap().len(), 2);
    // A malformed id is refused by the proxy itself.
    let (s, e) = post(&co, "/keys/k/create", &"y".repeat(257), None, ec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(co.list_versions("k").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_below_min_replicas_is_withdrawn_and_leaves_no_key() {
    let mut nodes = TestNode::group(2).await.unwrap();
    let opts = ProxyOptions {
        min_replicas: Some(2),
        ..Default::default()
    };
    let proxy = TestProxy::start(&nodes, opts).await.unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    co.create_key("existing", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    nodes[1].kill();
    proxy
        .wait_state("m1", "down", Duration::from_secs(10))
        .await
        .unwrap();
    let t = Instant::now();
    let (s, e) = post(&co, "/keys/half/create", "half-1", None, ec()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["error"]["code"], "Unavailable");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("withdrawn"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Not visible through the proxy, nor on the member that made it.
    let err = co.get_key("half", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::KeyNotFound), "{err}");
    let direct = nodes[0].officer().await.unwrap();
    let err = direct.get_key("half", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::KeyNotFound), "{err}");
    assert!(co
        .list_keys()
        .await
        .unwrap()
        .iter()
        .all(|k| !k.kid.contains("/half")));
    // A rotation below min_replicas withdraws only its new version.
    let (s, _) = post(&co, "/keys/existing/rotate", "rot-1", None, Bytes::new()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(direct.list_versions("existing").await.unwrap().len(), 1);
    // The member comes back; the same request now succeeds, once.
    nodes[1].run().await.unwrap();
    proxy
        .wait_state("m1", "up", Duration::from_secs(20))
        .await
        .unwrap();
    let (s, made) = post(&co, "/keys/half/create", "half-1", None, ec()).await;
    assert_eq!(s, StatusCode::OK, "{made}");
    for n in &nodes {
        let c = n.officer().await.unwrap();
        let k = hsm_tests::eventually(Duration::from_secs(5), || async {
            Ok(c.get_key("half", None).await?)
        })
        .await
        .unwrap();
        assert_eq!(c.list_versions("half").await.unwrap().len(), 1);
        assert_eq!(serde_json::to_value(&k.key).unwrap()["x"], made["key"]["x"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_create_below_min_replicas_is_never_withdrawn() {
    let mut nodes = TestNode::group(2).await.unwrap();
    let opts = ProxyOptions {
        min_replicas: Some(2),
        ..Default::default()
    };
    let proxy = TestProxy::start(&nodes, opts).await.unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    // Acknowledged on both members; the answer could have been lost.
    let (s, made) = post(&co, "/keys/kept/create", "kept-1", None, ec()).await;
    assert_eq!(s, StatusCode::OK, "{made}");
    nodes[1].kill();
    proxy
        .wait_state("m1", "down", Duration::from_secs(10))
        .await
        .unwrap();
    // The retry finds the version on m0 but cannot show it durable on 2:
    // an error, and the acknowledged key must stay.
    let (s, e) = post(&co, "/keys/kept/create", "kept-1", None, ec()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let k = nodes[0]
        .officer()
        .await
        .unwrap()
        .get_key("kept", None)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&k.key).unwrap()["x"],
        made["key"]["x"],
        "a retry withdrew an acknowledged key"
    );
    // And the request id is echoed, so that a client without one can retry.
    let (status, headers, _) = co
        .raw_with(
            Method::POST,
            "/keys/fresh/create",
            Some("application/json"),
            &[],
            ec(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get(REQUEST_ID_HEADER).is_some(), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_meets_a_creation_that_is_then_withdrawn() {
    use hsm_tests::relay::{Fault, Relay};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let nodes = TestNode::group(2).await.unwrap();
    let relays = [
        Relay::start(&nodes[0].addr).await.unwrap(),
        Relay::start(&nodes[1].addr).await.unwrap(),
    ];
    let opts = ProxyOptions {
        min_replicas: Some(2),
        via: relays.iter().map(|r| Some(r.addr())).collect(),
        ..Default::default()
    };
    let proxy = TestProxy::start(&nodes, opts).await.unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    // The proxy's sessions with both members are open.
    co.create_key("warm", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    // m1 goes silent: a creation made on m0 cannot be copied there, so it
    // is not durable on 2 members and is withdrawn after the copy's
    // deadline — seconds during which m0 holds the key.
    relays[1].set(Fault::Blackhole);
    let reader = proxy.login(Role::CryptoUser).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                answers.push(match reader.get_key("half", None).await {
                    Ok(_) => "found".to_string(),
                    Err(e) => e
                        .code()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or(e.to_string()),
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let made = co
        .create_key("half", &KeyCreateParameters::ec(Curve::P256))
        .await;
    stop.store(true, Ordering::SeqCst);
    let answers = watch.await.unwrap();
    let e = made.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
    // Every read through the proxy while the creation ran waited for it
    // and then found no key: none met the key that was then withdrawn.
    assert!(answers.len() >= 2, "{answers:?}");
    assert!(
        answers.iter().all(|a| a == "KeyNotFound"),
        "a read met the creation that was withdrawn: {answers:?}"
    );
    let direct = nodes[0].officer().await.unwrap();
    let err = direct.get_key("half", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::KeyNotFound), "{err}");
}

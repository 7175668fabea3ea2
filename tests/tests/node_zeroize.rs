//! Zeroization: by the admin API, by the tamper trigger and by the CLI.
//! Afterwards no file under the node's directory holds any key it had (or
//! its master key), and the node refuses key requests with a clear error
//! until it is initialised again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::{hsm_node, hsm_node_ok, TestNode, ADMIN_PASSWORD, PARTITION};
use std::path::Path;
use std::time::Duration;

/// Every file under `dir`, recursively, with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts no file under `dir` (except `skip`) holds any of `secrets`, raw
/// or base64url or hex.
fn assert_absent(dir: &Path, secrets: &[(&str, Vec<u8>)], skip: Option<&Path>) {
    for (path, bytes) in files(dir) {
        if Some(path.as_path()) == skip {
            continue;
        }
        for (what, s) in secrets {
            for form in [
                s.clone(),
                hsm_api::b64::encode(s).into_bytes(),
                hex::encode(s).into_bytes(),
            ] {
                assert!(!holds(&bytes, &form), "{} holds {what}", path.display());
            }
        }
    }
}

/// Imports keys whose material the test knows; returns (what, bytes).
async fn known_keys(co: &Client) -> Vec<(&'static str, Vec<u8>)> {
    let aes: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(91).wrapping_add(3))
        .collect();
    co.import_key(
        "aes",
        &KeyImportParameters {
            key: JsonWebKey {
                kty: Some(KeyType::Oct),
                k: Some(aes.clone().into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // An EC key with a known private scalar.
    let d = p256::SecretKey::from_slice(&[0x42u8; 32]).unwrap();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&d.public_key(), false);
    co.import_key(
        "ec",
        &KeyImportParameters {
            key: JsonWebKey {
                kty: Some(KeyType::Ec),
                crv: Some(Curve::P256),
                d: Some(vec![0x42u8; 32].into()),
                x: Some(point.x().unwrap().to_vec().into()),
                y: Some(point.y().unwrap().to_vec().into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    co.create_key("made-here", &KeyCreateParameters::ec(Curve::P384))
        .await
        .unwrap();
    vec![
        ("the AES key", aes),
        ("the EC private scalar", vec![0x42u8; 32]),
    ]
}

async fn admin(node: &TestNode) -> Client {
    let (c, k) = node.pki.cert("app");
    let cfg = ClientConfig::from_files(
        format!("https://{}/admin", node.addr),
        &node.pki.ca(),
        Some((&c, &k)),
    )
    .unwrap();
    Client::new(&cfg).unwrap()
}

async fn admin_post(c: &Client, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (st, bytes) = c
        .raw(
            http::Method::POST,
            path,
            Some("application/json"),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    (
        st.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

async fn assert_zeroized(node: &TestNode, co: &Client) {
    let e = co
        .sign("made-here", None, SignatureAlgorithm::Es384, &[1u8; 48])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Zeroized), "{e}");
    assert_eq!(e.status(), Some(503));
    assert!(e.to_string().contains("initialised again"), "{e}");
    let c = node.client_as("app").unwrap();
    assert_eq!(
        c.login(Role::CryptoOfficer, hsm_tests::CO_PASSWORD)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Zeroized)
    );
    assert!(!node.dir.join("master.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_zeroize_destroys_every_key_and_the_node_refuses_until_initialised_again() {
    let mut node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let mut secrets = known_keys(&co).await;
    let master = std::fs::read(node.dir.join("master.key")).unwrap();
    // At rest, before anything: no file holds a key in clear.
    assert_absent(&node.dir, &secrets, None);
    assert_absent(
        &node.dir,
        &[("the master key", master.clone())],
        Some(&node.dir.join("master.key")),
    );
    secrets.push(("the master key", master));

    let adm = admin(&node).await;
    let (st, body) = admin_post(
        &adm,
        "/login",
        serde_json::json!({"password": "wrong-password"}),
    )
    .await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("LoginFailed"))
    );
    let (st, body) = admin_post(
        &adm,
        "/login",
        serde_json::json!({"password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    adm.set_token(body["access_token"].as_str().map(str::to_string));
    // A partition token is no admin token, and the word is required.
    let partition_token = node
        .client_as("app")
        .unwrap()
        .login(Role::CryptoOfficer, hsm_tests::CO_PASSWORD)
        .await
        .unwrap()
        .access_token;
    let impostor = admin(&node).await;
    impostor.set_token(Some(partition_token));
    let (st, body) = admin_post(
        &impostor,
        "/zeroize",
        serde_json::json!({"confirm": "zeroize"}),
    )
    .await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (st, body) = admin_post(&adm, "/zeroize", serde_json::json!({"confirm": "yes"})).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (400, Some("BadParameter"))
    );
    co.sign("made-here", None, SignatureAlgorithm::Es384, &[1u8; 48])
        .await
        .unwrap();

    let (st, body) = admin_post(&adm, "/zeroize", serde_json::json!({"confirm": "zeroize"})).await;
    assert_eq!(st, 200, "{body}");
    assert_zeroized(&node, &co).await;
    assert_absent(&node.dir, &secrets, None);
    assert!(!node.dir.join("data.redb").exists());
    assert!(std::fs::read_to_string(node.dir.join("ZEROIZED"))
        .unwrap()
        .contains("admin API"));

    // Still zeroized after a restart.
    node.kill();
    node.run().await.unwrap();
    let c = node.client_as("app").unwrap();
    let e = c
        .login(Role::CryptoOfficer, hsm_tests::CO_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Zeroized));
    let h = hsm_api::Client::new(
        &ClientConfig::from_files(
            format!("https://{}", node.addr),
            &node.pki.ca(),
            Some((&node.pki.cert("app").0, &node.pki.cert("app").1)),
        )
        .unwrap(),
    )
    .unwrap()
    .raw(http::Method::GET, "/health", None, Default::default())
    .await
    .unwrap();
    assert_eq!(h.0, 503);
    assert!(String::from_utf8_lossy(&h.1).contains("zeroized"));

    // Initialised again: an empty node that works; the old keys are gone.
    node.signal_and_wait("TERM", Duration::from_secs(20))
        .unwrap();
    let dir = node.dir.to_str().unwrap().to_string();
    hsm_node_ok(&["init", "--dir", &dir], &[]).unwrap();
    hsm_node_ok(
        &["partition", "create", "--dir", &dir, "--name", PARTITION],
        &[
            ("HSM_SO_PASSWORD", hsm_tests::SO_PASSWORD),
            ("HSM_CO_PASSWORD", hsm_tests::CO_PASSWORD),
            ("HSM_CU_PASSWORD", hsm_tests::CU_PASSWORD),
        ],
    )
    .unwrap();
    let app = node.pki.cert("app").0;
    hsm_node_ok(
        &[
            "partition",
            "register-client",
            "--dir",
            &dir,
            "--name",
            PARTITION,
            "--cert",
            app.to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    node.run().await.unwrap();
    let co = node.officer().await.unwrap();
    assert_eq!(
        co.get_key("aes", None).await.unwrap_err().code(),
        Some(ErrorCode::KeyNotFound)
    );
    co.create_key("fresh", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    assert_absent(&node.dir, &secrets, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tamper_trigger_zeroizes_a_running_node() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let secrets = known_keys(&co).await;
    let pid = node.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-USR2", &pid.to_string()])
        .status()
        .unwrap();
    // Zeroization is immediate; allow the signal a moment to arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.dir.join("master.key").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGUSR2 did not zeroize; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_zeroized(&node, &co).await;
    assert_absent(&node.dir, &secrets, None);
    assert!(std::fs::read_to_string(node.dir.join("ZEROIZED"))
        .unwrap()
        .contains("tamper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_zeroizes_a_stopped_node_only() {
    let mut node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let secrets = known_keys(&co).await;
    let dir = node.dir.to_str().unwrap().to_string();
    let (ok, msg) = hsm_node(&["zeroize", "--dir", &dir, "--yes"], &[]).unwrap();
    assert!(!ok && msg.contains("is running"), "{msg}");
    let (ok, msg) = hsm_node(&["zeroize", "--dir", &dir], &[]).unwrap();
    assert!(!ok && msg.contains("--yes"), "{msg}");
    node.signal_and_wait("TERM", Duration::from_secs(20))
        .unwrap();
    hsm_node_ok(&["zeroize", "--dir", &dir, "--yes"], &[]).unwrap();
    assert_absent(&node.dir, &secrets, None);
    node.run().await.unwrap();
    let c = node.client_as("app").unwrap();
    assert_eq!(
        c.login(Role::CryptoOfficer, hsm_tests::CO_PASSWORD)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Zeroized)
    );
}

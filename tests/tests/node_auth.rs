//! Who may do what on a node: passwords, lockout, client registration,
//! roles, and the key attributes that gate every use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::{
    Client, ClientError, Curve, ErrorCode, KeyAttributes, KeyCreateParameters, KeyOperation, Role,
    SignatureAlgorithm,
};
use hsm_tests::{logout_status, TestNode, CO_PASSWORD, CU_PASSWORD};

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Option<ErrorCode> {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_and_ten_failures_lock_the_role_across_restarts() {
    let mut node = TestNode::start().await.unwrap();
    let c = node.client_as("app").unwrap();

    let e = c
        .login(Role::CryptoUser, "not-the-password")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LoginFailed));
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("9 attempts left"), "{e}");

    // Eight more failures: still only LoginFailed. The tenth locks.
    for _ in 0..8 {
        assert_eq!(
            code(c.login(Role::CryptoUser, "wrong-again").await),
            Some(ErrorCode::LoginFailed)
        );
    }
    let e = c.login(Role::CryptoUser, "wrong-again").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RoleLocked), "{e}");
    assert!(e.to_string().contains("locked for 600 seconds"), "{e}");

    // Locked: even the right password is refused, and says so.
    let e = c.login(Role::CryptoUser, CU_PASSWORD).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RoleLocked), "{e}");

    // Another role of the same partition is not affected.
    c.login(Role::CryptoOfficer, CO_PASSWORD).await.unwrap();

    // The lock is durable: a restarted node still refuses.
    node.kill();
    node.run().await.unwrap();
    let c = node.client_as("app").unwrap();
    assert_eq!(
        code(c.login(Role::CryptoUser, CU_PASSWORD).await),
        Some(ErrorCode::RoleLocked)
    );

    // The failures and the lockout are counted in the metrics.
    let (st, body) = metrics_of(&node).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("hsm_node_login_failures_total{partition=\"p1\",role=\"crypto-user\"} 1"),
        "{body}"
    );
}

async fn metrics_of(node: &TestNode) -> (u16, String) {
    let (c, k) = node.pki.cert("app");
    let cfg = hsm_api::ClientConfig::from_files(
        format!("https://{}", node.addr),
        &node.pki.ca(),
        Some((&c, &k)),
    )
    .unwrap();
    let client = Client::new(&cfg).unwrap();
    let (st, body) = client
        .raw(http::Method::GET, "/metrics", None, Default::default())
        .await
        .unwrap();
    (st.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_and_foreign_certificates_are_refused() {
    let node = TestNode::start().await.unwrap();

    // Signed by the node's client CA but not registered to the partition.
    let stranger = node.client_as("stranger").unwrap();
    let e = stranger
        .login(Role::CryptoOfficer, CO_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ClientNotRegistered), "{e}");
    assert_eq!(e.status(), Some(403));

    // It gets nothing at all: not even health or metrics (403, a clear
    // error, no metrics text), where the registered client gets them.
    let root = |cert: &str| {
        let (c, k) = node.pki.cert(cert);
        let cfg = hsm_api::ClientConfig::from_files(
            format!("https://{}", node.addr),
            &node.pki.ca(),
            Some((&c, &k)),
        )
        .unwrap();
        Client::new(&cfg).unwrap()
    };
    let (stranger_root, app_root) = (root("stranger"), root("app"));
    for path in [
        "/health",
        "/metrics",
        "/partitions/p1/keys",
        "/partitions/p1/login",
    ] {
        let method = if path.ends_with("login") {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let (st, body) = stranger_root
            .raw(method, path, Some("application/json"), Default::default())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert_eq!(st, 403, "{path}: {text}");
        let err: hsm_api::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(err.error.code, "ClientNotRegistered", "{path}");
        assert!(
            err.error.message.contains("not registered"),
            "{path}: {text}"
        );
        assert!(!text.contains("hsm_node_"), "{path}: {text}");
    }
    for path in ["/health", "/metrics"] {
        let (st, _) = app_root
            .raw(http::Method::GET, path, None, Default::default())
            .await
            .unwrap();
        assert_eq!(st, 200, "{path}");
    }

    // From another CA altogether: the TLS handshake itself fails.
    let other = tempfile::tempdir().unwrap();
    let pki = hsm_tests::TestPki::create(other.path()).unwrap();
    let (c, k) = pki.cert("app");
    let cfg =
        hsm_api::ClientConfig::from_files(node.base_url(), &node.pki.ca(), Some((&c, &k))).unwrap();
    let foreign = Client::new(&cfg).unwrap();
    let e = foreign
        .login(Role::CryptoOfficer, CO_PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Connect { .. } | ClientError::Transport { .. }
        ),
        "{e:?}"
    );

    // No client certificate at all: refused too.
    let cfg = hsm_api::ClientConfig::from_files(node.base_url(), &node.pki.ca(), None).unwrap();
    let anonymous = Client::new(&cfg).unwrap();
    assert!(matches!(
        anonymous.health().await,
        Err(ClientError::Transport { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_get_the_bearer_challenge() {
    let node = TestNode::start().await.unwrap();
    let c = node.client_as("app").unwrap();
    let (st, _) = c
        .raw(http::Method::GET, "/keys", None, Default::default())
        .await
        .unwrap();
    assert_eq!(st, 401);

    // The exact challenge the Key Vault SDKs parse.
    let (c2, k2) = node.pki.cert("app");
    let tls = hsm_api::client::tls_client_config(
        &std::fs::read(node.pki.ca()).unwrap(),
        Some(&(std::fs::read(c2).unwrap(), std::fs::read(k2).unwrap())),
    )
    .unwrap();
    let hdr = challenge_header(&node, tls).await;
    let base = node.base_url();
    assert_eq!(
        hdr,
        format!("Bearer authorization=\"{base}/login\", resource=\"{base}\"")
    );

    c.set_token(Some("forged-token".into()));
    let e = c.list_keys().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
}

/// Reads the WWW-Authenticate header of an unauthenticated GET /keys with a
/// plain hyper client (the typed client does not expose headers).
async fn challenge_header(node: &TestNode, tls: rustls::ClientConfig) -> String {
    use http_body_util::Empty;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(conn);
    let uri: http::Uri = format!("{}/keys", node.base_url()).parse().unwrap();
    let resp = client.get(uri).await.unwrap();
    assert_eq!(resp.status(), 401);
    resp.headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_users_use_keys_but_cannot_create_import_or_delete() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let cu = node.user().await.unwrap();
    let so = node.login(Role::SecurityOfficer).await.unwrap();
    co.create_key("k1", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();

    let forbidden = Some(ErrorCode::Forbidden);
    assert_eq!(
        code(
            cu.create_key("k2", &KeyCreateParameters::ec(Curve::P256))
                .await
        ),
        forbidden
    );
    let import = hsm_api::KeyImportParameters {
        key: hsm_api::JsonWebKey {
            kty: Some(hsm_api::KeyType::Oct),
            k: Some(vec![7u8; 32].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(code(cu.import_key("k3", &import).await), forbidden);
    assert_eq!(code(cu.delete_key("k1").await), forbidden);
    assert_eq!(code(cu.rotate_key("k1").await), forbidden);
    assert_eq!(code(cu.restore_key(b"x").await), forbidden);

    // The user signs; the security officer reads but uses no key.
    let sig = cu
        .sign("k1", None, SignatureAlgorithm::Es256, &[1u8; 32])
        .await
        .unwrap();
    assert_eq!(sig.value.0.len(), 64);
    assert_eq!(
        code(
            so.sign("k1", None, SignatureAlgorithm::Es256, &[1u8; 32])
                .await
        ),
        forbidden
    );
    assert_eq!(so.list_keys().await.unwrap().len(), 1);

    // Nothing the refused calls tried exists.
    let names: Vec<String> = co
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ops_enabled_exp_and_nbf_are_enforced() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let digest = [9u8; 32];
    let es256 = SignatureAlgorithm::Es256;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // key_ops without sign.
    let mut p = KeyCreateParameters::ec(Curve::P256);
    p.key_ops = Some(vec![KeyOperation::Verify]);
    co.create_key("verify-only", &p).await.unwrap();
    assert_eq!(
        code(co.sign("verify-only", None, es256, &digest).await),
        Some(ErrorCode::OperationNotPermitted)
    );

    // key_ops that do not fit the key type are refused at create.
    let mut p = KeyCreateParameters::ec(Curve::P256);
    p.key_ops = Some(vec![KeyOperation::Encrypt]);
    assert_eq!(
        code(co.create_key("ec-encrypt", &p).await),
        Some(ErrorCode::BadParameter)
    );

    // Disabled, then enabled again.
    let mut p = KeyCreateParameters::ec(Curve::P256);
    p.attributes = Some(KeyAttributes {
        enabled: Some(false),
        ..Default::default()
    });
    co.create_key("off", &p).await.unwrap();
    assert_eq!(
        code(co.sign("off", None, es256, &digest).await),
        Some(ErrorCode::KeyDisabled)
    );
    let upd = hsm_api::KeyUpdateParameters {
        attributes: Some(KeyAttributes {
            enabled: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    co.update_key("off", None, &upd).await.unwrap();
    co.sign("off", None, es256, &digest).await.unwrap();

    // Expired, and not yet valid.
    let mut p = KeyCreateParameters::ec(Curve::P256);
    p.attributes = Some(KeyAttributes {
        exp: Some(now - 60),
        ..Default::default()
    });
    co.create_key("expired", &p).await.unwrap();
    assert_eq!(
        code(co.sign("expired", None, es256, &digest).await),
        Some(ErrorCode::KeyExpired)
    );
    let mut p = KeyCreateParameters::ec(Curve::P256);
    p.attributes = Some(KeyAttributes {
        nbf: Some(now + 3600),
        ..Default::default()
    });
    co.create_key("later", &p).await.unwrap();
    assert_eq!(
        code(co.sign("later", None, es256, &digest).await),
        Some(ErrorCode::KeyNotYetValid)
    );

    // Moving exp into the future makes the expired key usable; the check is
    // not a cached verdict.
    let upd = hsm_api::KeyUpdateParameters {
        attributes: Some(KeyAttributes {
            exp: Some(now + 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    co.update_key("expired", None, &upd).await.unwrap();
    co.sign("expired", None, es256, &digest).await.unwrap();
}

/// A node forgets its tokens when it restarts. A client made with
/// `relogin_as` logs in again by itself on the 401 and its typed call
/// goes through (the proxy's replication and resync sessions rely on it);
/// one without gets the 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_relogin_survives_a_node_restart() {
    let mut node = TestNode::start().await.unwrap();
    let plain = node.officer().await.unwrap();
    let relogin = node
        .client_as("app")
        .unwrap()
        .relogin_as(Role::CryptoOfficer, CO_PASSWORD);
    relogin
        .login(Role::CryptoOfficer, CO_PASSWORD)
        .await
        .unwrap();
    let before = relogin.token();
    plain
        .create_key("k", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    node.kill();
    node.run().await.unwrap();

    let e = plain.get_key("k", None).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    // Calls that meet the 401 together log in once between them.
    let checks = || node.metric("hsm_node_password_checks_total", &[]);
    let checks_before = checks().await.unwrap();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = relogin.clone();
            tokio::spawn(async move { c.get_key("k", None).await })
        })
        .collect();
    for call in calls {
        let got = call.await.unwrap().unwrap();
        assert_eq!(got.key.kid.unwrap().rsplit('/').nth(1), Some("k"));
    }
    assert_ne!(relogin.token(), before, "it logged in again");
    assert_eq!(checks().await.unwrap() - checks_before, 1.0, "one login");
    // A wrong password is not retried into a loop: one 401 stays an error.
    let wrong = node
        .client_as("app")
        .unwrap()
        .relogin_as(Role::CryptoOfficer, "not the password");
    let e = wrong.get_key("k", None).await.unwrap_err();
    assert!(matches!(e.status(), Some(401)), "{e}");
}

/// `POST /logout` ends the session of the token it is sent with, and no
/// other: that token answers 401 afterwards (and logging it out again too),
/// another token of the same role and client keeps working, and the role
/// logs in again. Without a token it is the usual 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_token_it_is_sent_with() {
    let node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    let other = node.officer().await.unwrap();
    co.create_key("k1", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();

    assert_eq!(logout_status(&co).await.unwrap(), 204);
    let e = co.list_keys().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(
        logout_status(&co).await.unwrap(),
        401,
        "an ended token logs out no more"
    );
    assert_eq!(other.list_keys().await.unwrap().len(), 1);

    let anonymous = node.client_as("app").unwrap();
    assert_eq!(logout_status(&anonymous).await.unwrap(), 401);

    co.login(Role::CryptoOfficer, CO_PASSWORD).await.unwrap();
    assert_eq!(co.list_keys().await.unwrap().len(), 1);
    // The typed call forgets the token it ended.
    let ended = co.token();
    co.logout().await.unwrap();
    assert_eq!(co.token(), None);
    let gone = node.client_as("app").unwrap();
    gone.set_token(ended);
    assert_eq!(gone.list_keys().await.unwrap_err().status(), Some(401));
    assert_eq!(other.list_keys().await.unwrap().len(), 1);
}

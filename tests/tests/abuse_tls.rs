//! TLS with wrong, expired and unregistered certificates.
//!
//! - A node requires a client certificate from its client CA (TLS 1.3
//!   only): no certificate, one from another CA, an expired or not yet
//!   valid one, a server-only certificate (no clientAuth) and TLS 1.2 are
//!   each refused in the handshake with the matching alert, and counted in
//!   `hsm_node_tls_handshake_failures_total`; a certificate from the right
//!   CA that is not registered to the partition completes the handshake
//!   and gets `403 ClientNotRegistered`. A good client is served
//!   meanwhile, and nothing in the partition changes.
//! - The proxy's listener is server-authenticated TLS only (applications
//!   authenticate with bearer tokens): whatever certificate a client holds
//!   it is never asked for it, and without a token gets `401 Unauthorized`
//!   with the bearer challenge.
//! - A member whose server certificate comes from another CA is never
//!   trusted: it stays down, gets no request, and the group serves on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;

use abuse::{connect, http1, metric_sum, node_metrics, request1, tls_config, RawError};
use hsm_api::{Curve, ErrorCode, KeyCreateParameters, Role, SignatureAlgorithm};
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes a client certificate for `cn` signed by `issuer` (or self-signed),
/// valid from `from` to `to` days relative to now.
fn client_cert(
    dir: &Path,
    name: &str,
    issuer: Option<&Issuer<'_, KeyPair>>,
    from: i64,
    to: i64,
    eku: ExtendedKeyUsagePurpose,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "app");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(to);
    let cert = match issuer {
        Some(i) => p.signed_by(&key, i).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// A refused identity: (what, cert and key files, alerts one of which the
/// error must name).
type Refused<'a> = (&'a str, Option<(PathBuf, PathBuf)>, &'a [&'a str]);

/// How one TLS client fared against a node: the handshake error, or the
/// HTTP answer.
async fn attempt(
    addr: &str,
    cfg: std::sync::Arc<rustls::ClientConfig>,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = connect(addr, cfg).await.map_err(|e| e.to_string())?;
    // With TLS 1.3 the server checks the client's certificate after the
    // client considers the handshake done: its refusal arrives as an alert
    // on the first read.
    let req = request1("GET", "/partitions/p1/keys", &[], b"");
    match http1(&mut s, &req, Duration::from_secs(10)).await {
        Ok(r) => Ok((r.status, r.body)),
        Err(RawError::Closed(m)) | Err(RawError::Garbled(m)) => Err(m),
        Err(RawError::Timeout) => Err("timeout".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_every_wrong_certificate_in_the_handshake() {
    let node = TestNode::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let co = node.officer().await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let before = co.inventory().await.unwrap();
    let ca = node.pki.ca();

    // Another CA, and the node's own CA (its key is in the test PKI).
    let other_key = KeyPair::generate().unwrap();
    let mut op = CertificateParams::new(Vec::<String>::new()).unwrap();
    op.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    op.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let other_ca = op.self_signed(&other_key).unwrap();
    let other = Issuer::from_ca_cert_pem(&other_ca.pem(), other_key).unwrap();
    let right = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(&ca).unwrap(),
        KeyPair::from_pem(&std::fs::read_to_string(node.pki.dir.join("ca.key")).unwrap()).unwrap(),
    )
    .unwrap();
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let d = tmp.path();
    let foreign = client_cert(d, "foreign", Some(&other), -1, 30, client.clone());
    let expired = client_cert(d, "expired", Some(&right), -30, -1, client.clone());
    let future = client_cert(d, "future", Some(&right), 2, 30, client.clone());
    let selfsigned = client_cert(d, "self", None, -1, 30, client.clone());
    let server_only = client_cert(
        d,
        "server-only",
        Some(&right),
        -1,
        30,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let unregistered = client_cert(d, "unregistered", Some(&right), -1, 30, client);
    let app = node.pki.cert("app");
    let h1: &[&[u8]] = &[b"http/1.1"];

    let failures_before = metric_sum(
        &node_metrics(&node).await,
        "hsm_node_tls_handshake_failures_total",
    );
    // (what, client config, words one of which the error must contain)
    let p = |x: &(PathBuf, PathBuf)| (x.0.clone(), x.1.clone());
    let refused: Vec<Refused> = vec![
        (
            "no client certificate",
            None,
            &["CertificateRequired", "HandshakeFailure"],
        ),
        (
            "certificate from another CA",
            Some(p(&foreign)),
            &["UnknownCA", "BadCertificate"],
        ),
        (
            "self-signed certificate",
            Some(p(&selfsigned)),
            &["UnknownCA", "BadCertificate"],
        ),
        (
            "expired certificate",
            Some(p(&expired)),
            &["CertificateExpired", "BadCertificate"],
        ),
        (
            "certificate not yet valid",
            Some(p(&future)),
            &["CertificateExpired", "BadCertificate"],
        ),
        (
            "server-only certificate",
            Some(p(&server_only)),
            &["UnsupportedCertificate", "BadCertificate"],
        ),
    ];
    let mut good = 0;
    let mut seen = Vec::new();
    for (what, id, words) in &refused {
        let cfg = tls_config(
            &ca,
            id.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            h1,
        );
        let out = attempt(&node.addr, cfg).await;
        let err = out.expect_err(&format!("{what}: the node answered"));
        assert!(
            words.iter().any(|w| err.contains(w)),
            "{what}: refused, but with `{err}`"
        );
        let alert = words
            .iter()
            .find(|w| err.contains(**w))
            .copied()
            .unwrap_or_default();
        seen.push(format!("{what}: {alert}"));
        // Meanwhile the good client is served.
        co.sign("ec", None, SignatureAlgorithm::Es256, &[1u8; 32])
            .await
            .unwrap();
        good += 1;
    }
    // TLS 1.2 with the right certificate: the node speaks TLS 1.3 only.
    {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &std::fs::read(&ca).unwrap()[..]) {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = rustls_pemfile::certs(&mut &std::fs::read(&app.0).unwrap()[..])
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut &std::fs::read(&app.1).unwrap()[..])
            .unwrap()
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        let err = attempt(&node.addr, std::sync::Arc::new(cfg))
            .await
            .unwrap_err();
        assert!(err.contains("ProtocolVersion"), "TLS 1.2: `{err}`");
    }
    let failures_after = metric_sum(
        &node_metrics(&node).await,
        "hsm_node_tls_handshake_failures_total",
    );
    assert_eq!(
        failures_after - failures_before,
        (refused.len() + 1) as f64,
        "every refused handshake is counted"
    );

    // Right CA, not registered: the handshake completes, the partition refuses.
    let cfg = tls_config(&ca, Some((&unregistered.0, &unregistered.1)), h1);
    let (status, body) = attempt(&node.addr, cfg).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(
        abuse::well_formed(status, &body).unwrap(),
        Some(ErrorCode::ClientNotRegistered)
    );
    // The registered certificate over the same raw path works (the control).
    let cfg = tls_config(&ca, Some((&app.0, &app.1)), h1);
    let (status, body) = attempt(&node.addr, cfg).await.unwrap();
    assert_eq!(
        (status, abuse::well_formed(status, &body).unwrap()),
        (401, Some(ErrorCode::Unauthorized))
    );

    assert_eq!(
        co.inventory().await.unwrap(),
        before,
        "the partition changed"
    );
    println!(
        "abuse_tls node: {} handshakes refused ({}) + TLS 1.2: ProtocolVersion, each counted; 1 unregistered -> 403 ClientNotRegistered; {good} good requests served; 0 failures",
        refused.len(),
        seen.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_listener_asks_no_certificate_and_never_trusts_a_foreign_member() {
    let mut nodes = TestNode::group(2).await.unwrap();
    // A node of another PKI: its server certificate is from another CA.
    let foreign = TestNode::start().await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();

    // Clients with any certificate, or none: never asked for it; no token, 401.
    let tmp = tempfile::tempdir().unwrap();
    let expired = {
        let right = Issuer::from_ca_cert_pem(
            &std::fs::read_to_string(nodes[0].pki.ca()).unwrap(),
            KeyPair::from_pem(&std::fs::read_to_string(nodes[0].pki.dir.join("ca.key")).unwrap())
                .unwrap(),
        )
        .unwrap();
        client_cert(
            tmp.path(),
            "expired",
            Some(&right),
            -30,
            -1,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    };
    let foreign_app = foreign.pki.cert("app");
    let addr = proxy.url.trim_start_matches("https://").to_string();
    let ids: Vec<(&str, Option<(&Path, &Path)>)> = vec![
        ("none", None),
        ("expired", Some((&expired.0, &expired.1))),
        ("another CA", Some((&foreign_app.0, &foreign_app.1))),
    ];
    for (what, id) in &ids {
        // HTTP/1.1, raw.
        let cfg = tls_config(&proxy.ca, *id, &[b"http/1.1"]);
        let mut s = connect(&addr, cfg).await.unwrap();
        let r = http1(
            &mut s,
            &request1("GET", "/keys", &[], b""),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            abuse::well_formed(r.status, &r.body).unwrap(),
            Some(ErrorCode::Unauthorized),
            "{what}"
        );
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer ")),
            "{what}"
        );
        // HTTP/2 (the typed client negotiates it), same identity.
        let mut cfg = hsm_api::ClientConfig::from_files(proxy.url.clone(), &proxy.ca, *id).unwrap();
        cfg.timeout = Duration::from_secs(10);
        let e = hsm_api::Client::new(&cfg)
            .unwrap()
            .list_keys()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{what}: {e}");
    }

    // A member whose server certificate is from another CA joins the list.
    let m = node_metrics(&foreign).await;
    let reqs_before = metric_sum(&m, "hsm_node_requests_total");
    let fails_before = metric_sum(&m, "hsm_node_tls_handshake_failures_total");
    let members: Vec<(String, &TestNode, bool)> = vec![
        ("m0".into(), &nodes[0], false),
        ("m1".into(), &nodes[1], false),
        ("m2".into(), &foreign, false),
    ];
    proxy.reload_members(&members).unwrap();
    let cu = proxy.login(Role::CryptoUser).await.unwrap();
    let mut served = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        cu.sign("ec", None, SignatureAlgorithm::Es256, &[2u8; 32])
            .await
            .unwrap();
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = proxy.status().unwrap();
    let m2 = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m2")
        .cloned()
        .expect("m2 in the status");
    assert_ne!(
        m2["state"], "up",
        "a member with a foreign certificate is up: {m2}"
    );
    let err = m2["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "m2's last error does not name its certificate: {m2}"
    );
    // The foreign node refused the proxy's certificate or the proxy refused
    // its own: handshakes failed there, and no request was ever answered.
    let foreign_metrics = node_metrics(&foreign).await;
    assert!(metric_sum(&foreign_metrics, "hsm_node_tls_handshake_failures_total") > fails_before);
    // Only our own earlier /metrics call was answered by the foreign node.
    assert_eq!(
        metric_sum(&foreign_metrics, "hsm_node_requests_total") - reqs_before,
        1.0,
        "the foreign member answered a request from the proxy"
    );
    // The group serves with one member stopped too: the foreign one never counts.
    nodes[1].kill();
    for _ in 0..20 {
        cu.sign("ec", None, SignatureAlgorithm::Es256, &[3u8; 32])
            .await
            .unwrap();
        served += 1;
    }
    println!(
        "abuse_tls proxy: {} client identities x HTTP/1.1+HTTP/2 -> 401 challenge; foreign-CA member stayed `{}` ({err}); {served} requests served meanwhile; 0 failures",
        ids.len(),
        m2["state"]
    );
}

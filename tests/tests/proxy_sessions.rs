//! The proxy's sessions: its own tokens, which act only as the role they
//! were issued for and end at `POST /logout` (with the member sessions no
//! other token uses); the roles that cannot log in through it; and its
//! sessions to a member: however many requests wait for one, and however
//! soon they give up, the member computes one login.
//!
//! A member that comes back under load used to receive a login from every
//! request that found no session and gave up on it at its own deadline;
//! each abandoned login still cost the member a password hash, and they
//! queued in front of key changes (the rolling-restart chaos scenario
//! stalled on it). `Member` now runs one login per credential in its own
//! task to its end.
#![allow(clippy::unwrap_used)]

use hsm_api::{
    Client, ClientConfig, ClientError, Curve, ErrorCode, KeyCreateParameters, Role,
    SignatureAlgorithm,
};
use hsm_proxy::member::{Credential, Member, MemberRole, MemberSpec};
use hsm_tests::{
    logout_status, ProxyOptions, TestNode, TestProxy, CO_PASSWORD, REPLICATION_PASSWORD,
    SO_PASSWORD,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHECKS: &str = "hsm_node_password_checks_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impatient_requests_share_one_login_and_abandon_none() {
    let node = TestNode::start().await.unwrap();
    // How long one login takes here: the requests below give up in a
    // quarter of it.
    let mut login = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        node.login(Role::CryptoOfficer).await.unwrap();
        login = login.min(started.elapsed());
    }
    let patience = (login / 4).max(Duration::from_millis(1));
    let (cert, key) = node.pki.cert("app");
    let spec = MemberSpec {
        name: "m0".into(),
        url: format!("https://{}", node.addr),
        role: MemberRole::Active,
        weight: 1,
        location: "test".into(),
        client: ClientConfig::from_files(node.base_url(), &node.pki.ca(), Some((&cert, &key)))
            .unwrap(),
    };
    let member = Arc::new(Member::new(spec).unwrap());
    let cred = Credential::new(Role::CryptoOfficer, CO_PASSWORD);
    let labels = [("role", "crypto-officer")];
    let before = node.metric(CHECKS, &labels).await.unwrap();

    // Twelve requests arrive over about three logins' time, each willing
    // to wait a quarter of a login for a session.
    let mut waiters = Vec::new();
    for _ in 0..12 {
        let (member, cred) = (member.clone(), cred.clone());
        waiters.push(tokio::spawn(async move {
            member.typed(&cred, patience).await.is_ok()
        }));
        tokio::time::sleep(patience / 2).await;
    }
    let mut served = 0;
    for w in waiters {
        served += usize::from(w.await.unwrap());
    }
    // The login they shared ends by itself and serves what comes next.
    let c = member.typed(&cred, Duration::from_secs(10)).await.unwrap();
    c.list_keys().await.unwrap();
    let checks = node.metric(CHECKS, &labels).await.unwrap() - before;
    assert_eq!(
        checks, 1.0,
        "one login was due; the member hashed {checks} password(s) (login {login:?}, \
         patience {patience:?}, {served} of 12 requests served)"
    );
}

/// The sum over `nodes` of counter `name` with `labels`.
async fn on_members(nodes: &[TestNode], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += n.metric(name, labels).await.unwrap();
    }
    sum
}

const MEMBER_LOGOUTS: &str = "hsm_node_requests_total";
const LOGOUT_OK: [(&str, &str); 2] = [("op", "logout"), ("outcome", "ok")];

fn anonymous(proxy: &TestProxy) -> Client {
    Client::new(&ClientConfig::from_files(proxy.url.clone(), &proxy.ca, None).unwrap()).unwrap()
}

/// `POST /logout` on the proxy ends the token it is sent with: it answers
/// 401 afterwards, another token of the same credential keeps working, and
/// the member sessions of that credential stay while such a token lives.
/// When the last one logs out, the proxy logs out of each member session it
/// held for it (one member logout per member login it made), so the next
/// login of that credential is checked by a member again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_token_and_the_member_sessions_no_other_token_uses() {
    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let cu_checks = [("role", "crypto-user")];
    let checks_before = on_members(&nodes, CHECKS, &cu_checks).await;
    let a = proxy.login(Role::CryptoUser).await.unwrap();
    let b = proxy.login(Role::CryptoUser).await.unwrap();
    for _ in 0..8 {
        a.list_keys().await.unwrap();
    }

    assert_eq!(logout_status(&a).await.unwrap(), 204);
    let e = a.list_keys().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert_eq!(logout_status(&a).await.unwrap(), 401, "an ended token");
    assert_eq!(logout_status(&anonymous(&proxy)).await.unwrap(), 401);
    b.list_keys().await.unwrap();
    assert_eq!(
        on_members(&nodes, MEMBER_LOGOUTS, &LOGOUT_OK).await,
        0.0,
        "another token still uses the member sessions"
    );

    assert_eq!(logout_status(&b).await.unwrap(), 204);
    assert_eq!(b.list_keys().await.unwrap_err().status(), Some(401));
    let member_logins = on_members(&nodes, CHECKS, &cu_checks).await - checks_before;
    assert!(member_logins >= 1.0);
    assert_eq!(
        on_members(&nodes, MEMBER_LOGOUTS, &LOGOUT_OK).await,
        member_logins,
        "every member session of the credential was logged out"
    );

    // No member session is left to answer a login from the proxy's cache.
    let before = on_members(&nodes, CHECKS, &cu_checks).await;
    let c = proxy.login(Role::CryptoUser).await.unwrap();
    c.list_keys().await.unwrap();
    assert!(on_members(&nodes, CHECKS, &cu_checks).await - before >= 1.0);
}

/// The security officer (the proxy uses none) and replication (the
/// proxy's own background credential) cannot log in through the proxy,
/// even with the right password, and the attempt never reaches a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_officer_and_replication_cannot_log_in_through_the_proxy() {
    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let c = anonymous(&proxy);
    for (role, password) in [
        (Role::SecurityOfficer, SO_PASSWORD),
        (Role::Replication, REPLICATION_PASSWORD),
    ] {
        let labels = [("role", role.as_str())];
        let before = on_members(&nodes, CHECKS, &labels).await;
        let e = c.login(role, password).await.unwrap_err();
        assert_eq!(e.status(), Some(403), "{role}: {e}");
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{role}: {e}");
        assert!(
            e.to_string().contains("cannot log in through the proxy"),
            "{role}: {e}"
        );
        assert_eq!(on_members(&nodes, CHECKS, &labels).await, before, "{role}");
    }
    proxy.login(Role::CryptoOfficer).await.unwrap();
    proxy.login(Role::CryptoUser).await.unwrap();
}

/// A proxy token acts only as the role it was issued for (its member
/// sessions are that role's), and is the proxy's alone: a member does not
/// take it, nor the proxy a member's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_token_acts_only_as_its_role_and_only_at_the_proxy() {
    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    let cu = proxy.login(Role::CryptoUser).await.unwrap();
    co.create_key("k1", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let forbidden = |r: Result<hsm_api::KeyBundle, ClientError>| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    };
    forbidden(
        cu.create_key("k2", &KeyCreateParameters::ec(Curve::P256))
            .await,
    );
    forbidden(cu.rotate_key("k1").await);
    let e = cu.delete_key("k1").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    cu.sign("k1", None, SignatureAlgorithm::Es256, &[1u8; 32])
        .await
        .unwrap();
    assert_eq!(co.list_keys().await.unwrap().len(), 1);

    let at_member = nodes[0].client_as("app").unwrap();
    at_member.set_token(co.token());
    assert_eq!(at_member.list_keys().await.unwrap_err().status(), Some(401));
    let member_token = nodes[0].officer().await.unwrap().token();
    let at_proxy = anonymous(&proxy);
    at_proxy.set_token(member_token);
    assert_eq!(at_proxy.list_keys().await.unwrap_err().status(), Some(401));
}

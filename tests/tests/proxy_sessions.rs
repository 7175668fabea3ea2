//! The proxy's sessions to a member: however many requests wait for one,
//! and however soon they give up, the member computes one login.
//!
//! A member that comes back under load used to receive a login from every
//! request that found no session and gave up on it at its own deadline;
//! each abandoned login still cost the member a password hash, and they
//! queued in front of key changes (the rolling-restart chaos scenario
//! stalled on it). `Member` now runs one login per credential in its own
//! task to its end.
#![allow(clippy::unwrap_used)]

use hsm_api::{ClientConfig, Role};
use hsm_proxy::member::{Credential, Member, MemberRole, MemberSpec};
use hsm_tests::{TestNode, CO_PASSWORD};
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

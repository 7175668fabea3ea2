//! HAProxy 2.6 as configured for the benchmarks (`hsm_tests::haproxy`), in
//! front of real members: its configuration is valid and serves, the
//! stick table keeps each application session on the member that issued
//! it (without it, round robin would send a token to members that never
//! issued it), and what a member's death costs an application behind it:
//! its session is gone with the member, so its requests fail until it logs
//! in again — the behaviour `hsm-proxy` exists to hide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::haproxy::Haproxy;
use hsm_tests::{ProxyOptions, TestNode, TestProxy, CU_PASSWORD};
use std::time::Duration;

const D: [u8; 32] = [9u8; 32];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_pins_sessions_and_a_dead_member_costs_its_sessions() {
    let mut nodes = TestNode::group(3).await.unwrap();
    // The key on every member: made through hsm-proxy, which replicates.
    {
        let proxy = TestProxy::start(&nodes, ProxyOptions::default())
            .await
            .unwrap();
        let co = proxy.login(Role::CryptoOfficer).await.unwrap();
        co.create_key("k", &KeyCreateParameters::ec(Curve::P256))
            .await
            .unwrap();
        hsm_tests::held_by_every_member(&nodes, &["k"], Duration::from_secs(5))
            .await
            .unwrap();
    }
    let ha = Haproxy::start(&nodes).await.unwrap();
    // Three applications, three logins: round robin spreads the logins,
    // the stick table keeps each token on its member.
    let mut apps = Vec::new();
    for _ in 0..3 {
        let c = ha.client(&nodes[0].pki).unwrap();
        c.login(Role::CryptoUser, CU_PASSWORD).await.unwrap();
        apps.push(c);
    }
    for c in &apps {
        for _ in 0..20 {
            c.sign("k", None, SignatureAlgorithm::Es256, &D)
                .await
                .unwrap_or_else(|e| panic!("a pinned session failed: {e}\n{}", ha.log()));
        }
    }
    // Every member served: the logins were spread.
    let mut served = 0;
    for n in &nodes {
        if n.signs_ok().await.unwrap() > 0.0 {
            served += 1;
        }
    }
    assert_eq!(served, 3, "HAProxy did not spread the sessions");

    // A member dies: the sessions it issued die with it.
    nodes[0].kill();
    let mut failed = 0;
    for c in &apps {
        if c.sign("k", None, SignatureAlgorithm::Es256, &D)
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    assert_eq!(failed, 1, "exactly the session on the dead member fails");
    // It works again only after the application logs in again.
    for c in &apps {
        c.login(Role::CryptoUser, CU_PASSWORD).await.unwrap();
        c.sign("k", None, SignatureAlgorithm::Es256, &D)
            .await
            .unwrap();
    }
}

//! The audit trail of a running node: logins (failed and successful),
//! logouts, key management, every key use with its outcome, refused
//! requests, admin changes and zeroize each leave one chained record, and
//! `audit verify` accepts the real log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::{hsm_node, hsm_node_ok, logout_status, TestNode};
use std::time::Duration;

fn records(node: &TestNode) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(node.dir.join("audit/audit.log")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn find<'a>(rs: &'a [serde_json::Value], kind: &str, outcome: &str) -> Vec<&'a serde_json::Value> {
    rs.iter()
        .filter(|r| r["kind"] == kind && r["outcome"] == outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_audits_logins_changes_and_every_key_use() {
    let mut node = TestNode::start().await.unwrap();
    let c = node.client_as("app").unwrap();
    assert!(c
        .login(Role::CryptoOfficer, "wrong-password")
        .await
        .is_err());
    let co = node.officer().await.unwrap();
    let cu = node.user().await.unwrap();
    co.create_key("k", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let v = co.get_key("k", None).await.unwrap().key.kid.unwrap();
    let version = v.rsplit('/').next().unwrap().to_string();
    for _ in 0..3 {
        cu.sign("k", Some(&version), SignatureAlgorithm::Es256, &[1u8; 32])
            .await
            .unwrap();
    }
    assert!(cu
        .sign("k", None, SignatureAlgorithm::Es256, &[1u8; 5])
        .await
        .is_err());
    assert!(cu.delete_key("k").await.is_err()); // forbidden for a crypto user
    co.delete_key("k").await.unwrap();
    assert_eq!(logout_status(&co).await.unwrap(), 204);
    node.signal_and_wait("TERM", Duration::from_secs(20))
        .unwrap();

    let rs = records(&node);
    assert_eq!(find(&rs, "login", "LoginFailed").len(), 1);
    assert!(find(&rs, "login", "ok").len() >= 2);
    let logout = find(&rs, "logout", "ok");
    assert_eq!(logout.len(), 1);
    assert_eq!(logout[0]["role"], "crypto-officer");
    let create = find(&rs, "key.create", "ok");
    assert_eq!(create.len(), 1);
    assert_eq!(create[0]["key"], "k");
    assert_eq!(create[0]["role"], "crypto-officer");
    let uses = find(&rs, "key.use", "ok");
    assert_eq!(uses.len(), 3);
    assert!(uses
        .iter()
        .all(|r| r["op"] == "sign" && r["key"] == "k" && r["version"] == version.as_str()));
    assert_eq!(find(&rs, "key.use", "InvalidDigestLength").len(), 1);
    assert_eq!(find(&rs, "key.delete", "Forbidden").len(), 1);
    assert_eq!(find(&rs, "key.delete", "ok").len(), 1);
    assert_eq!(find(&rs, "node.start", "ok").len(), 1);
    assert_eq!(find(&rs, "node.stop", "ok").len(), 1);
    // Chained: each record names the one before.
    for w in rs.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["mac"]);
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1
        );
    }
    let dir = node.dir.to_str().unwrap().to_string();
    let out = hsm_node_ok(&["audit", "verify", "--dir", &dir], &[]).unwrap();
    assert!(out.contains("OK"), "{out}");

    // Offline admin changes and a zeroize are in the same chain.
    let app = node.pki.cert("stranger").0;
    hsm_node_ok(
        &[
            "partition",
            "register-client",
            "--dir",
            &dir,
            "--name",
            "p1",
            "--cert",
            app.to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    hsm_node_ok(&["zeroize", "--dir", &dir, "--yes"], &[]).unwrap();
    let rs = records(&node);
    // Setup registered `app`; the test registered `stranger`.
    let regs = find(&rs, "client.register", "ok");
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[1]["detail"], "stranger");
    assert_eq!(find(&rs, "partition.create", "ok").len(), 1);
    assert_eq!(find(&rs, "zeroize", "ok").len(), 1);
    assert!(hsm_node_ok(&["audit", "verify", "--dir", &dir], &[])
        .unwrap()
        .contains("OK"));

    // An edited record is caught.
    let log = node.dir.join("audit/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"key\":\"k\"", "\"key\":\"x\"", 1)).unwrap();
    let (ok, out) = hsm_node(&["audit", "verify", "--dir", &dir], &[]).unwrap();
    assert!(!ok && out.contains("edited"), "{out}");
    node.run().await.ok();
}

//! The `hsm-node` command line: clear one-line errors for the usual
//! mistakes, help for every command, and a clean stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::{Curve, KeyCreateParameters, SignatureAlgorithm};
use hsm_tests::{hsm_node, TestNode};
use std::time::Duration;

fn fails_with(args: &[&str], needle: &str) {
    let (ok, text) = hsm_node(args, &[]).unwrap();
    assert!(!ok, "hsm-node {args:?} should fail");
    assert!(
        text.contains(needle),
        "hsm-node {args:?}: expected `{needle}` in: {text}"
    );
    let error_lines = text.lines().filter(|l| l.contains("error")).count();
    assert!(error_lines >= 1, "{text}");
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["run", "--help"],
        vec!["pki", "init-ca", "--help"],
        vec!["pki", "issue", "--help"],
        vec!["partition", "create", "--help"],
        vec!["partition", "list", "--help"],
        vec!["partition", "delete", "--help"],
        vec!["partition", "passwd", "--help"],
        vec!["partition", "register-client", "--help"],
        vec!["partition", "unregister-client", "--help"],
        vec!["audit", "verify", "--help"],
    ] {
        let (ok, text) = hsm_node(&cmd, &[]).unwrap();
        assert!(ok && text.contains("Usage"), "{cmd:?}: {text}");
    }
}

#[test]
fn a_directory_that_is_not_a_node_is_named() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("nothing");
    fails_with(
        &["run", "--dir", d.to_str().unwrap()],
        "is not a node directory",
    );
    fails_with(
        &["partition", "list", "--dir", d.to_str().unwrap()],
        "is not a node directory",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_node_errors_missing_certificate_and_port_in_use() {
    let mut node = TestNode::start().await.unwrap();
    let dir = node.dir.to_str().unwrap().to_string();

    // Partition commands and a second `run` refuse a running node.
    fails_with(
        &["partition", "list", "--dir", &dir],
        "is running; stop it first",
    );
    fails_with(&["run", "--dir", &dir], "already running");

    // A port in use is named as such.
    let other = tempfile::tempdir().unwrap();
    let d2 = other.path().join("n2");
    let pki = node.pki.dir.to_str().unwrap().to_string();
    hsm_tests::hsm_node_ok(&["init", "--dir", d2.to_str().unwrap(), "--pki", &pki], &[]).unwrap();
    fails_with(
        &["run", "--dir", d2.to_str().unwrap(), "--listen", &node.addr],
        "port is in use",
    );

    // A second init of the same directory is refused.
    fails_with(
        &["init", "--dir", &dir, "--pki", &pki],
        "already holds a node",
    );

    // A missing server certificate is named, with where it comes from.
    node.kill();
    std::fs::remove_file(node.dir.join("tls/server.pem")).unwrap();
    fails_with(&["run", "--dir", &dir], "tls/server.pem");
}

#[test]
fn init_refuses_a_missing_ca() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("n");
    let pki = t.path().join("no-pki");
    fails_with(
        &[
            "init",
            "--dir",
            d.to_str().unwrap(),
            "--pki",
            pki.to_str().unwrap(),
        ],
        "ca.pem",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut node = TestNode::start().await.unwrap();
    let co = node.officer().await.unwrap();
    co.create_key("k", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    // A burst of signatures in flight while SIGTERM arrives.
    let mut inflight = Vec::new();
    for _ in 0..20 {
        let co = co.clone();
        inflight.push(tokio::spawn(async move {
            co.sign("k", None, SignatureAlgorithm::Es256, &[5u8; 32])
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let status = tokio::task::spawn_blocking(move || {
        let st = node.signal_and_wait("TERM", Duration::from_secs(20));
        (st, node)
    })
    .await
    .unwrap();
    let (st, node) = status;
    assert!(
        st.unwrap().success(),
        "exit status after SIGTERM; log:\n{}",
        node.log()
    );
    // Requests either completed or were never accepted; none hung.
    for h in inflight {
        let r = tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .unwrap()
            .unwrap();
        if let Ok(sig) = r {
            assert_eq!(sig.value.0.len(), 64);
        }
    }
    // The orderly exit path ran: the address file is withdrawn.
    assert!(!node.dir.join("listen.addr").exists(), "{}", node.log());
}

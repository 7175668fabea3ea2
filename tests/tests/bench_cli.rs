//! `hsm-bench` against a real `hsm-node`: it creates the workload's keys,
//! runs closed and open loops, writes a JSON result whose figures agree
//! with each other, and refuses bad input with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::{bin, TestNode, CO_PASSWORD};
use std::process::Command;

fn bench(node: &TestNode, args: &[&str], password: Option<&str>) -> (bool, String, String) {
    let (cert, key) = node.pki.cert("app");
    let mut cmd = Command::new(bin("hsm-bench"));
    cmd.arg("--url")
        .arg(node.base_url())
        .arg("--ca")
        .arg(node.pki.ca())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--quiet")
        .args(args)
        .env_remove("HSM_BENCH_PASSWORD");
    if !args.contains(&"--role") {
        cmd.args(["--role", "crypto-officer"]);
    }
    if let Some(p) = password {
        cmd.env("HSM_BENCH_PASSWORD", p);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loops_against_a_node_write_consistent_results() {
    let node = TestNode::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed.json");
    let (ok, stdout, stderr) = bench(
        &node,
        &[
            "--setup",
            "--workload",
            "es256=3,a256gcm=1",
            "--concurrency",
            "4",
            "--seconds",
            "1",
            "--warmup",
            "0.2",
            "--json",
            closed.to_str().unwrap(),
        ],
        Some(CO_PASSWORD),
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("created key bench-ec"), "{stderr}");
    assert!(stdout.contains("closed loop, 4 workers"), "{stdout}");
    let r = read(&closed);
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["workload"], "es256=3,a256gcm=1");
    let n = r["ok"].as_u64().unwrap();
    assert!(n > 20, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["ops_per_sec"].as_f64().unwrap(), n as f64);
    // The latencies: every good answer in the window, and each worker's
    // last request, sent in the window and answered after it.
    let outlasted = r["outlasted"].as_u64().unwrap();
    assert!(outlasted <= 4, "{r}");
    let all = &r["latency_us"];
    assert_eq!(all["count"].as_u64(), Some(n + outlasted));
    let q = |k: &str| all[k].as_u64().unwrap();
    assert!(q("p50") <= q("p90") && q("p90") <= q("p99") && q("p99") <= q("p999"));
    assert!(q("p999") <= q("max") && q("p50") > 0, "{all}");
    let es = r["per_op"]["es256"]["count"].as_u64().unwrap();
    let aes = r["per_op"]["a256gcm"]["count"].as_u64().unwrap();
    assert_eq!(es + aes, n + outlasted);
    assert!(es > aes, "the mix is 3:1: {es} vs {aes}");

    // Open loop: the schedule sets the rate, not the answers.
    let open = dir.path().join("open.json");
    let (ok, _, stderr) = bench(
        &node,
        &[
            "--rate",
            "100",
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--json",
            open.to_str().unwrap(),
        ],
        Some(CO_PASSWORD),
    );
    assert!(ok, "{stderr}");
    let r = read(&open);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["rate"], 100.0);
    let n = r["ok"].as_u64().unwrap();
    assert!((90..=101).contains(&n), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_reason() {
    let node = TestNode::start().await.unwrap();
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["--workload", "es512"],
            Some(CO_PASSWORD),
            "`es512` is no operation",
        ),
        (&[], None, "environment variable HSM_BENCH_PASSWORD"),
        (&["--seconds", "0"], Some(CO_PASSWORD), "--seconds must be"),
        (
            &["--role", "admin"],
            Some(CO_PASSWORD),
            "`admin` is no role",
        ),
        (&["--seconds", "1"], Some("wrong"), "LoginFailed"),
    ];
    for (args, password, expect) in cases {
        let (ok, _, stderr) = bench(&node, args, password);
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

//! File modes: every file a node or `hsm-proxy dev` writes is 0600 and
//! every directory it makes 0700, whatever the umask allows; and the dev
//! group stays on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::dev_group::DevGroup;
use hsm_tests::{hsm_node_ok, TestNode, PARTITION};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every file and directory under `root` (itself included) whose mode is
/// not 0600 (files) or 0700 (directories), with its mode.
fn too_open(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut wrong = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let mode = md.permissions().mode() & 0o777;
        if md.is_dir() {
            if mode != 0o700 {
                wrong.push((p.clone(), mode));
            }
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if md.is_file() && mode != 0o600 {
            wrong.push((p, mode));
        }
    }
    wrong
}

fn shown(wrong: &[(PathBuf, u32)]) -> String {
    wrong
        .iter()
        .map(|(p, m)| format!("{:o} {}", m, p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_directory_and_its_backups_are_private() {
    // Init, partition, registration, a run (audit trail, listen.addr), a
    // stop and a backup: everything the node wrote.
    let mut node = TestNode::start().await.unwrap();
    node.signal_and_wait("TERM", Duration::from_secs(30))
        .unwrap();
    let backup = node.root.path().join("p1.backup");
    hsm_node_ok(
        &[
            "partition",
            "backup",
            "--dir",
            node.dir.to_str().unwrap(),
            "--name",
            PARTITION,
            "--out",
            backup.to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    for f in [
        "node.json",
        "data.redb",
        "master.key",
        "audit.key",
        "tls/server.key",
    ] {
        assert!(node.dir.join(f).exists(), "{f}");
    }
    assert!(node.dir.join("audit").is_dir());
    let mut wrong = too_open(&node.dir);
    wrong.extend(too_open(&backup));
    assert!(wrong.is_empty(), "too open:\n{}", shown(&wrong));
    // The development PKI `hsm-node pki` made (the CA key with it).
    let wrong = too_open(&node.pki.dir);
    assert!(wrong.is_empty(), "too open:\n{}", shown(&wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_directory_is_private() {
    let mut group = DevGroup::start(1).unwrap();
    group.wait_ready().await.unwrap();
    let dir = group.dir();
    for f in [
        "dev.json",
        "dev-state.json",
        "proxy.toml",
        "proxy.credential",
        "domain.secret",
        "pki/ca.key",
        "members/m0/node.json",
        "members/m0/data.redb",
    ] {
        assert!(dir.join(f).exists(), "{f}\n{}", group.logs());
    }
    let wrong = too_open(&dir);
    group.stop();
    assert!(wrong.is_empty(), "too open:\n{}", shown(&wrong));
}

/// `hsm-proxy dev` is for this machine: asked to listen on every interface
/// it refuses with a clear message and writes nothing.
#[test]
fn the_dev_group_refuses_a_non_loopback_listener_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("g");
    for listen in ["0.0.0.0:0", "[::]:8443"] {
        let out = std::process::Command::new(hsm_tests::bin("hsm-proxy"))
            .arg("dev")
            .arg("--dir")
            .arg(&dir)
            .args(["--listen", listen])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{listen}: {err}");
        assert!(err.contains("loopback only"), "{listen}: {err}");
        assert!(!dir.exists(), "{listen}: {} was written", dir.display());
    }
}

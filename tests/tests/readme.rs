//! The README's walkthrough, run as written: every ```sh block between the
//! `walkthrough:start` and `walkthrough:end` markers, in one bash, with the
//! port changed to a free one and `demo/` to a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match (in_block, line.trim_start()) {
            (false, "```sh") => in_block = true,
            (true, "```") => {
                in_block = false;
                script.push('\n');
            }
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let script = walkthrough();
    assert!(
        script.contains("hsm-node run"),
        "walkthrough not found:\n{script}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    std::fs::create_dir_all(&demo).unwrap();
    let port = free_port().to_string();
    // The release path of the README becomes the binaries under test.
    let script = script
        .replace(
            "$PWD/target/release",
            hsm_tests::bin_dir().to_str().unwrap(),
        )
        .replace("8443", &port)
        .replace("demo/", &format!("{}/", demo.display()));
    let guarded = format!(
        "set -euo pipefail\ntrap 'kill $NODE_PID 2>/dev/null || true' EXIT\nNODE_PID=\n{script}\nNODE_PID=\necho WALKTHROUGH-OK\n"
    );
    let out = Command::new("timeout")
        .args(["120", "bash", "-c", &guarded])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(demo.join("node1.log")).unwrap_or_default();
    assert!(
        out.status.success() && stdout.contains("WALKTHROUGH-OK"),
        "walkthrough failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- node log\n{log}",
        out.status
    );
    assert!(stdout.contains("\"kty\": \"EC-HSM\""), "{stdout}");
    assert!(
        stdout.contains("Verified OK"),
        "OpenSSL did not verify the signature:\n{stdout}\n{stderr}"
    );
}

//! The official `azure-keyvault-keys` Python SDK, unchanged, against the
//! proxy: `hsm-proxy dev` brings up three software members behind the proxy,
//! and `tests/sdk/test_keyvault_sdk.py` runs under pytest with `HSM_DEV_JSON`
//! pointing at the group's `dev.json`. The Python packages live in the
//! repository's `.venv`, which `.ci/run` creates; without it this test fails
//! (it never skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::dev_group::{repo_root, DevGroup};
use std::path::Path;
use std::process::{Command, Stdio};

/// The whole pytest run (it takes seconds; this is a liveness bound, kept
/// under nextest's terminate-after).
const PYTEST_TIMEOUT_SECS: &str = "200";

#[tokio::test]
async fn the_azure_keyvault_keys_sdk_works_against_the_proxy() {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash .ci/run` (it creates .venv with azure-keyvault-keys, \
         cryptography, pytest and requests from tests/sdk/requirements.txt)",
        python.display()
    );

    let mut group = DevGroup::start(3).unwrap();
    let info = group.wait_ready().await.unwrap();
    let url = info["url"].as_str().unwrap_or_default();
    assert!(url.starts_with("https://127.0.0.1:"), "dev.json url: {url}");
    assert_eq!(info["members"].as_array().map(Vec::len), Some(3), "{info}");

    let out = Command::new("timeout")
        .arg(PYTEST_TIMEOUT_SECS)
        .arg(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/sdk"])
        .current_dir(&root)
        .env("HSM_DEV_JSON", group.dev_json())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running pytest");
    let report = format!(
        "pytest ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        panic!("the SDK suite failed: {report}\n{}", group.logs());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(" passed") && !stdout.contains("failed") && !stdout.contains("skipped"),
        "{report}"
    );

    // SIGTERM stops the proxy cleanly, and it stops its members.
    let st = group.stop();
    assert!(
        st.is_some_and(|s| s.success()),
        "hsm-proxy dev did not exit cleanly on SIGTERM: {st:?}\n{}",
        group.logs()
    );
    for m in info["members"].as_array().unwrap() {
        let pid = m["pid"].as_u64().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "member {} (pid {pid}) still runs after the proxy stopped",
            m["name"]
        );
    }
    println!("{}", stdout.trim_end());
}

//! The official `azure-keyvault-keys` Python SDK, unchanged, against the
//! proxy: `hsm-proxy dev` brings up three software members behind the proxy,
//! and `tests/sdk/test_keyvault_sdk.py` runs under pytest with `HSM_DEV_JSON`
//! pointing at the group's `dev.json`. The Python packages live in the
//! repository's `.venv`, which `.ci/run` creates; without it this test fails
//! (it never skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::{Client, ClientConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the group may take to write `dev.json`, and then to be healthy.
const START: Duration = Duration::from_secs(60);
/// The whole pytest run (it takes seconds; this is a liveness bound, kept
/// under nextest's terminate-after).
const PYTEST_TIMEOUT_SECS: &str = "200";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `hsm-proxy dev` as a child; SIGTERM (by PID) when dropped.
struct DevGroup {
    root: tempfile::TempDir,
    child: Option<Child>,
}

impl DevGroup {
    fn start() -> DevGroup {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("g");
        let out = std::fs::File::create(root.path().join("proxy.out")).unwrap();
        let err = std::fs::File::create(root.path().join("proxy.err")).unwrap();
        let proxy = hsm_tests::bin("hsm-proxy");
        let child = Command::new(&proxy)
            .args(["dev", "--dir", dir.to_str().unwrap()])
            .args(["--members", "3", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", proxy.display()));
        DevGroup {
            root,
            child: Some(child),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("g")
    }

    fn dev_json(&self) -> PathBuf {
        self.dir().join("dev.json")
    }

    /// The proxy's output and every member's log, for a failure message.
    fn logs(&self) -> String {
        let mut s = format!(
            "--- hsm-proxy stdout\n{}\n--- hsm-proxy stderr\n{}",
            read(&self.root.path().join("proxy.out")),
            read(&self.root.path().join("proxy.err"))
        );
        if let Ok(entries) = std::fs::read_dir(self.dir().join("logs")) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                s.push_str(&format!("\n--- {}\n{}", p.display(), read(&p)));
            }
        }
        s
    }

    /// Panics with the logs if the proxy has already exited.
    fn assert_running(&mut self, what: &str) {
        let st = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
        if let Some(st) = st {
            panic!("hsm-proxy dev exited with {st} {what}\n{}", self.logs());
        }
    }

    /// Waits (bounded) for `dev.json`, then for the proxy's `/health` over
    /// TLS with the dev CA; returns the parsed `dev.json`.
    async fn wait_ready(&mut self) -> serde_json::Value {
        let deadline = Instant::now() + START;
        let info: serde_json::Value = loop {
            // dev.json is written whole (then the proxy starts listening);
            // a partial read parses as an error and is retried.
            if let Ok(v) = serde_json::from_str(&read(&self.dev_json())) {
                break v;
            }
            self.assert_running("before writing dev.json");
            assert!(
                Instant::now() < deadline,
                "no dev.json within {START:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = info["url"].as_str().expect("dev.json: url").to_string();
        let ca = PathBuf::from(info["ca_cert"].as_str().expect("dev.json: ca_cert"));
        assert!(url.starts_with("https://127.0.0.1:"), "dev.json url: {url}");
        assert_eq!(info["members"].as_array().map(Vec::len), Some(3), "{info}");
        let client =
            Client::new(&ClientConfig::from_files(url.as_str(), &ca, None).unwrap()).unwrap();
        let deadline = Instant::now() + START;
        loop {
            match client.health().await {
                Ok(h) if h.status == "ready" => break,
                other => {
                    self.assert_running("before it was healthy");
                    assert!(
                        Instant::now() < deadline,
                        "{url}/health not ready within {START:?}: {other:?}\n{}",
                        self.logs()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        info
    }

    /// SIGTERM by PID and wait (bounded); SIGKILL if it will not stop.
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for DevGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

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

    let mut group = DevGroup::start();
    let info = group.wait_ready().await;

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

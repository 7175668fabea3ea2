//! `hsm-proxy dev` as a child process, for the suites that drive a whole
//! group through an outside client (the Key Vault SDK, PKCS#11 consumers):
//! start it in a temporary directory, wait until `dev.json` is written and
//! `/health` is ready, collect its logs for a failure message, and stop it
//! (SIGTERM by PID, then SIGKILL) when dropped.

use anyhow::{bail, Context, Result};
use hsm_api::{Client, ClientConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the group may take to write `dev.json`, and then to be healthy.
const START: Duration = Duration::from_secs(60);

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// A file's text, or empty when it cannot be read.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `hsm-proxy dev` group.
pub struct DevGroup {
    pub root: tempfile::TempDir,
    child: Option<Child>,
}

impl DevGroup {
    /// Starts `hsm-proxy dev` with `members` members on a free loopback port:
    /// software members, or each on a SoftHSM2 token of its own
    /// (`--pkcs11-module`) when `HSM_TEST_TOKEN_MEMBERS` makes every member
    /// a token member ([`crate::token_members`]; `dev` makes no mixed group).
    pub fn start(members: usize) -> Result<DevGroup> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("g");
        let out = std::fs::File::create(root.path().join("proxy.out"))?;
        let err = std::fs::File::create(root.path().join("proxy.err"))?;
        let proxy = crate::bin("hsm-proxy");
        let mut cmd = Command::new(&proxy);
        cmd.arg("dev").arg("--dir").arg(&dir).args([
            "--members",
            &members.to_string(),
            "--listen",
            "127.0.0.1:0",
        ]);
        if Self::on_tokens() {
            cmd.args(["--pkcs11-module", crate::token_members::SOFTHSM_MODULE]);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", proxy.display()))?;
        Ok(DevGroup {
            root,
            child: Some(child),
        })
    }

    /// Whether this run's dev groups keep their keys in tokens.
    pub fn on_tokens() -> bool {
        (0..2).all(|i| crate::token_members::is_token_member(&format!("node{i}")))
    }

    /// The group's directory (`dev.json`, `pki/`, `logs/`, members).
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("g")
    }

    pub fn dev_json(&self) -> PathBuf {
        self.dir().join("dev.json")
    }

    /// The tail of the proxy's output and of every member's log, for a
    /// failure message.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- hsm-proxy stdout\n{}\n--- hsm-proxy stderr\n{}",
            tail(&read(&self.root.path().join("proxy.out")), 200),
            tail(&read(&self.root.path().join("proxy.err")), 200)
        );
        if let Ok(entries) = std::fs::read_dir(self.dir().join("logs")) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                s.push_str(&format!("\n--- {}\n{}", p.display(), tail(&read(&p), 200)));
            }
        }
        s
    }

    /// An error with the logs if the proxy has already exited.
    pub fn check_running(&mut self, what: &str) -> Result<()> {
        let st = match self.child.as_mut() {
            Some(c) => c.try_wait()?,
            None => None,
        };
        match st {
            Some(st) => bail!("hsm-proxy dev exited with {st} {what}\n{}", self.logs()),
            None => Ok(()),
        }
    }

    /// Waits (bounded) for `dev.json`, then for the proxy's `/health` over
    /// TLS with the dev CA; returns the parsed `dev.json`.
    pub async fn wait_ready(&mut self) -> Result<serde_json::Value> {
        let deadline = Instant::now() + START;
        let info: serde_json::Value = loop {
            // dev.json is written whole (then the proxy starts listening);
            // a partial read parses as an error and is retried.
            if let Ok(v) = serde_json::from_str(&read(&self.dev_json())) {
                break v;
            }
            self.check_running("before writing dev.json")?;
            if Instant::now() > deadline {
                bail!("no dev.json within {START:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = info["url"].as_str().context("dev.json: url")?.to_string();
        let ca = PathBuf::from(info["ca_cert"].as_str().context("dev.json: ca_cert")?);
        let client = Client::new(&ClientConfig::from_files(url.as_str(), &ca, None)?)?;
        let deadline = Instant::now() + START;
        loop {
            match client.health().await {
                Ok(h) if h.status == "ready" => break,
                other => {
                    self.check_running("before it was healthy")?;
                    if Instant::now() > deadline {
                        bail!(
                            "{url}/health not ready within {START:?}: {other:?}\n{}",
                            self.logs()
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(info)
    }

    /// SIGTERM by PID and wait (bounded); SIGKILL if it will not stop.
    pub fn stop(&mut self) -> Option<ExitStatus> {
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

//! The harness of the cross-process suites: real `hsm-node` processes
//! started from the built binary, over real mutual TLS on loopback.
//!
//! A test reads like its scenario:
//! `let node = TestNode::start().await?; let co = node.officer().await?;`.
//! Every process started here is killed (by its PID) when its handle drops.
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use hsm_api::{Client, ClientConfig, Role};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Passwords of the test partition's roles.
pub const SO_PASSWORD: &str = "so-password-1";
pub const CO_PASSWORD: &str = "co-password-1";
pub const CU_PASSWORD: &str = "cu-password-1";
/// The test partition.
pub const PARTITION: &str = "p1";

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one up.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, e.g. `hsm-node`.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Runs `hsm-node ARGS…` to completion; returns (success, stderr).
pub fn hsm_node(args: &[&str], envs: &[(&str, &str)]) -> Result<(bool, String)> {
    let out = Command::new(bin("hsm-node"))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin("hsm-node").display()))?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok((out.status.success(), text))
}

/// Like [`hsm_node`], failing the test when the command fails.
pub fn hsm_node_ok(args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
    let (ok, text) = hsm_node(args, envs)?;
    if !ok {
        bail!("hsm-node {args:?} failed: {text}");
    }
    Ok(text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A development PKI in a temporary directory: a CA, a registered client
/// certificate `app`, and an unregistered one `stranger`.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn create(root: &Path) -> Result<TestPki> {
        let dir = root.join("pki");
        hsm_node_ok(&["pki", "init-ca", "--dir", s(&dir)], &[])?;
        for name in ["app", "stranger"] {
            hsm_node_ok(&["pki", "issue", "--dir", s(&dir), "--name", name], &[])?;
        }
        Ok(TestPki { dir })
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")))
    }
}

/// A running `hsm-node` with one partition `p1` whose client `app` is registered.
pub struct TestNode {
    pub root: tempfile::TempDir,
    pub pki: TestPki,
    pub dir: PathBuf,
    pub addr: String,
    child: Option<Child>,
}

impl TestNode {
    /// Initialises and starts a node on a free loopback port.
    pub async fn start() -> Result<TestNode> {
        let root = tempfile::tempdir()?;
        let pki = TestPki::create(root.path())?;
        let dir = root.path().join("node");
        hsm_node_ok(
            &["init", "--dir", s(&dir), "--pki", s(&pki.dir), "--listen", "127.0.0.1:0"],
            &[],
        )?;
        hsm_node_ok(
            &["partition", "create", "--dir", s(&dir), "--name", PARTITION],
            &[
                ("HSM_SO_PASSWORD", SO_PASSWORD),
                ("HSM_CO_PASSWORD", CO_PASSWORD),
                ("HSM_CU_PASSWORD", CU_PASSWORD),
            ],
        )?;
        let app = pki.cert("app").0;
        hsm_node_ok(
            &["partition", "register-client", "--dir", s(&dir), "--name", PARTITION, "--cert", s(&app)],
            &[],
        )?;
        let mut node = TestNode { root, pki, dir, addr: String::new(), child: None };
        node.run().await?;
        Ok(node)
    }

    /// Starts the node process (again) and waits until it serves.
    pub async fn run(&mut self) -> Result<()> {
        let addr_file = self.dir.join("listen.addr");
        let _ = std::fs::remove_file(&addr_file);
        let listen = if self.addr.is_empty() { "127.0.0.1:0".to_string() } else { self.addr.clone() };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("node.log"))?;
        let child = Command::new(bin("hsm-node"))
            .args(["run", "--dir", s(&self.dir), "--listen", &listen])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting hsm-node")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                self.addr = a.trim().to_string();
                break;
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("hsm-node exited with {st} before serving; log:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!("hsm-node did not start within 30 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("node.log")).unwrap_or_default()
    }

    /// The node's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by PID (e.g. "TERM") and waits for exit up to `wait`.
    pub fn signal_and_wait(&mut self, sig: &str, wait: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else { bail!("not running") };
        Command::new("kill").args([&format!("-{sig}"), &c.id().to_string()]).status()?;
        let deadline = Instant::now() + wait;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("hsm-node did not exit within {wait:?} after SIG{sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The partition's base URL.
    pub fn base_url(&self) -> String {
        format!("https://{}/partitions/{PARTITION}", self.addr)
    }

    /// A client presenting certificate `cert` (from the test PKI), not logged in.
    pub fn client_as(&self, cert: &str) -> Result<Client> {
        let (c, k) = self.pki.cert(cert);
        let cfg = ClientConfig::from_files(self.base_url(), &self.pki.ca(), Some((&c, &k)))?;
        Ok(Client::new(&cfg)?)
    }

    /// A client with the registered certificate, logged in as `role`.
    pub async fn login(&self, role: Role) -> Result<Client> {
        let c = self.client_as("app")?;
        let pw = match role {
            Role::SecurityOfficer => SO_PASSWORD,
            Role::CryptoOfficer => CO_PASSWORD,
            Role::CryptoUser => CU_PASSWORD,
        };
        c.login(role, pw).await?;
        Ok(c)
    }

    /// A crypto officer's client.
    pub async fn officer(&self) -> Result<Client> {
        self.login(Role::CryptoOfficer).await
    }

    /// A crypto user's client.
    pub async fn user(&self) -> Result<Client> {
        self.login(Role::CryptoUser).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

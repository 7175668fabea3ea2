//! The harness of the cross-process suites: real `hsm-node` processes
//! started from the built binary, over real mutual TLS on loopback.
//!
//! A test reads like its scenario:
//! `let node = TestNode::start().await?; let co = node.officer().await?;`.
//! Every process started here is killed (by its PID) when its handle drops.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod dev_group;
pub mod haproxy;
pub mod p11rate;
pub mod relay;
pub mod token_members;

use anyhow::{bail, Context, Result};
use hsm_api::{Client, ClientConfig, Role};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Passwords of the test partition's roles.
pub const SO_PASSWORD: &str = "so-password-1";
pub const CO_PASSWORD: &str = "co-password-1";
pub const CU_PASSWORD: &str = "cu-password-1";
pub const REPLICATION_PASSWORD: &str = "replication-password-1";
/// The node administrator's password (admin API).
pub const ADMIN_PASSWORD: &str = "admin-password-1";
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
///
/// A command on the directory of a token member (`--dir D` with a
/// `D.softhsm2.conf` beside it, see [`token_members`]) gets that token's
/// `SOFTHSM2_CONF`, as the running member does.
pub fn hsm_node(args: &[&str], envs: &[(&str, &str)]) -> Result<(bool, String)> {
    let mut cmd = Command::new(bin("hsm-node"));
    if let Some(dir) = args.windows(2).find(|w| w[0] == "--dir").map(|w| w[1]) {
        let conf = token_members::token_files(Path::new(dir)).conf;
        if conf.exists() {
            cmd.env("SOFTHSM2_CONF", conf);
        }
    }
    let out = cmd
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
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }
    /// The server certificate for `127.0.0.1` that the test proxies
    /// (hsm-proxy, HAProxy) present, issued on first use.
    pub fn server_cert(&self) -> Result<(PathBuf, PathBuf)> {
        let (cert, key) = self.cert("proxy-server");
        if !cert.exists() {
            hsm_node_ok(
                &[
                    "pki",
                    "issue",
                    "--dir",
                    s(&self.dir),
                    "--name",
                    "proxy-server",
                    "--server",
                    "--san",
                    "127.0.0.1",
                ],
                &[],
            )?;
        }
        Ok((cert, key))
    }
}

/// A running `hsm-node` with one partition `p1` whose client `app` is registered.
pub struct TestNode {
    /// Keeps the temporary directory alive while any node of a group lives.
    pub root: std::sync::Arc<tempfile::TempDir>,
    pub pki: std::sync::Arc<TestPki>,
    pub dir: PathBuf,
    pub addr: String,
    /// The network namespace the node runs in (chaos partitions), if any.
    pub netns: Option<String>,
    child: Option<Child>,
}

impl TestNode {
    /// Initialises and starts a node on a free loopback port, in a cloning
    /// domain of its own.
    pub async fn start() -> Result<TestNode> {
        let root = std::sync::Arc::new(tempfile::tempdir()?);
        let pki = std::sync::Arc::new(TestPki::create(root.path())?);
        let domain = root.path().join("domain.secret");
        TestNode::start_in(root, pki, "node", &domain).await
    }

    /// Initialises node `name` under `root` with the shared PKI and the
    /// cloning-domain file `domain` (created if missing), and starts it.
    pub async fn start_in(
        root: std::sync::Arc<tempfile::TempDir>,
        pki: std::sync::Arc<TestPki>,
        name: &str,
        domain: &Path,
    ) -> Result<TestNode> {
        let dir = TestNode::init_only(root.clone(), pki.clone(), name, domain, &[]).await?;
        let mut node = TestNode {
            root,
            pki,
            dir,
            addr: String::new(),
            netns: None,
            child: None,
        };
        node.run().await?;
        Ok(node)
    }

    /// Like [`TestNode::start_in`], but the node runs inside network
    /// namespace `netns` and listens on `ip` (its certificate names it).
    pub async fn start_in_netns(
        root: std::sync::Arc<tempfile::TempDir>,
        pki: std::sync::Arc<TestPki>,
        name: &str,
        domain: &Path,
        netns: &str,
        ip: &str,
    ) -> Result<TestNode> {
        let dir = TestNode::init_only(root.clone(), pki.clone(), name, domain, &[ip, "127.0.0.1"])
            .await?;
        let mut node = TestNode {
            root,
            pki,
            dir,
            addr: format!("{ip}:0"),
            netns: Some(netns.to_string()),
            child: None,
        };
        node.run().await?;
        Ok(node)
    }

    /// Initialises node `name` (node, partition, registered client) without
    /// starting it; returns its directory.
    async fn init_only(
        root: std::sync::Arc<tempfile::TempDir>,
        pki: std::sync::Arc<TestPki>,
        name: &str,
        domain: &Path,
        sans: &[&str],
    ) -> Result<PathBuf> {
        let dir = root.path().join(name);
        let mut args = vec![
            "init",
            "--dir",
            s(&dir),
            "--pki",
            s(&pki.dir),
            "--listen",
            "127.0.0.1:0",
        ];
        for san in sans {
            args.extend(["--san", san]);
        }
        // A token member (HSM_TEST_TOKEN_MEMBERS): a fresh SoftHSM2 token.
        let token = if token_members::is_token_member(name) {
            Some(token_members::make_token(&dir)?)
        } else {
            None
        };
        let (pin, conf) = token
            .as_ref()
            .map(|t| (s(&t.pin_file).to_string(), s(&t.conf).to_string()))
            .unwrap_or_default();
        if let Some(t) = &token {
            args.extend([
                "--pkcs11-module",
                token_members::SOFTHSM_MODULE,
                "--token-label",
                t.label.as_str(),
                "--pin-file",
                pin.as_str(),
            ]);
        }
        let mut envs = vec![("HSM_ADMIN_PASSWORD", ADMIN_PASSWORD)];
        if token.is_some() {
            envs.push(("SOFTHSM2_CONF", conf.as_str()));
        }
        hsm_node_ok(&args, &envs)?;
        hsm_node_ok(
            &[
                "partition",
                "create",
                "--dir",
                s(&dir),
                "--name",
                PARTITION,
                "--domain-file",
                s(domain),
            ],
            &[
                ("HSM_SO_PASSWORD", SO_PASSWORD),
                ("HSM_CO_PASSWORD", CO_PASSWORD),
                ("HSM_CU_PASSWORD", CU_PASSWORD),
                ("HSM_REPLICATION_PASSWORD", REPLICATION_PASSWORD),
            ],
        )?;
        let app = pki.cert("app").0;
        hsm_node_ok(
            &[
                "partition",
                "register-client",
                "--dir",
                s(&dir),
                "--name",
                PARTITION,
                "--cert",
                s(&app),
            ],
            &[],
        )?;
        Ok(dir)
    }

    /// Loses the node's data: stops it, removes its directory and
    /// initialises it again (same PKI, same cloning domain, the partition
    /// empty), then starts it on the same address.
    pub async fn rebuild(&mut self) -> Result<()> {
        self.kill();
        std::fs::remove_dir_all(&self.dir)?;
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("node dir name")?;
        let domain = self.root.path().join("domain.secret");
        let fresh =
            TestNode::init_only(self.root.clone(), self.pki.clone(), &name, &domain, &[]).await?;
        debug_assert_eq!(fresh, self.dir);
        self.run().await
    }

    /// `n` nodes sharing one PKI and one cloning domain: the members of a group.
    pub async fn group(n: usize) -> Result<Vec<TestNode>> {
        let root = std::sync::Arc::new(tempfile::tempdir()?);
        let pki = std::sync::Arc::new(TestPki::create(root.path())?);
        let domain = root.path().join("domain.secret");
        let mut out = Vec::new();
        for i in 0..n {
            out.push(
                TestNode::start_in(root.clone(), pki.clone(), &format!("node{i}"), &domain).await?,
            );
        }
        Ok(out)
    }

    /// The node's log file.
    fn log_path(&self) -> PathBuf {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.root.path().join(format!("{name}.log"))
    }

    /// Starts the node process (again) and waits until it serves.
    pub async fn run(&mut self) -> Result<()> {
        let addr_file = self.dir.join("listen.addr");
        // A file that cannot be removed (a read-only disk) cannot tell
        // that this start served: then only the process staying up can.
        let stale = matches!(std::fs::remove_file(&addr_file),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound);
        let started = Instant::now();
        let listen = if self.addr.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.addr.clone()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let node_bin = bin("hsm-node");
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the node: the PID is the node's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, s(&node_bin)]);
                c
            }
            None => Command::new(&node_bin),
        };
        let child = cmd
            .args(["run", "--dir", s(&self.dir), "--listen", &listen])
            // A token member's SoftHSM2 token (`token_members`).
            .envs(
                Some(token_members::token_files(&self.dir).conf)
                    .filter(|c| c.exists())
                    .map(|c| ("SOFTHSM2_CONF", c)),
            )
            // Test nodes log at INFO (logins, key changes, copies: not per
            // signature), so a failed scenario's dump shows what a member
            // was doing; HSM_TEST_NODE_LOG overrides it.
            .env(
                "RUST_LOG",
                std::env::var("HSM_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting hsm-node")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !stale {
                if let Ok(a) = std::fs::read_to_string(&addr_file) {
                    self.addr = a.trim().to_string();
                    break;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    self.child = None;
                    bail!(
                        "hsm-node exited with {st} before serving; log:\n{}",
                        self.log()
                    );
                }
            }
            if stale && started.elapsed() > Duration::from_secs(3) {
                break;
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
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
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
    pub fn signal_and_wait(
        &mut self,
        sig: &str,
        wait: Duration,
    ) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("not running")
        };
        Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()?;
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
            Role::Replication => REPLICATION_PASSWORD,
        };
        c.login(role, pw).await?;
        Ok(c)
    }

    /// Signatures this node answered `ok` since it started
    /// (`hsm_node_requests_total{op="sign",outcome="ok"}` on its `/metrics`).
    pub async fn signs_ok(&self) -> Result<f64> {
        self.metric(
            "hsm_node_requests_total",
            &[("op", "sign"), ("outcome", "ok")],
        )
        .await
    }

    /// The sum of the series of counter or gauge `name` on this node's
    /// `/metrics` that carry every label of `labels` (0 when none does).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(sum_series(&self.metrics_text().await?, name, labels))
    }

    /// This node's `/metrics` text (the scrape is itself counted there, as
    /// `hsm_node_requests_total{op="metrics"}`).
    pub async fn metrics_text(&self) -> Result<String> {
        let (c, k) = self.pki.cert("app");
        let cfg = ClientConfig::from_files(
            format!("https://{}", self.addr),
            &self.pki.ca(),
            Some((&c, &k)),
        )?;
        let (status, body) = Client::new(&cfg)?
            .raw(http::Method::GET, "/metrics", None, Default::default())
            .await?;
        if !status.is_success() {
            bail!("GET /metrics on {}: {status}", self.addr);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
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

/// Anti-entropy between members, as a test drives it: one round of the
/// proxy's own resync (`hsm_proxy::resync::reconcile`, which brings every
/// member to the union of their states). Returns the number of copies that
/// changed a member; an error when a member could not be compared.
pub async fn reconcile(members: &[Client]) -> Result<usize> {
    let report = hsm_proxy::resync::reconcile(members).await;
    anyhow::ensure!(
        report.failed.is_empty(),
        "resync failed on members {:?}",
        report.failed
    );
    Ok(report.total_copied() as usize)
}

/// Options of a test proxy.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Member roles by index: `true` = standby.
    pub standby: Vec<bool>,
    pub attempt_timeout: &'static str,
    pub total_timeout: &'static str,
    pub health_interval: &'static str,
    pub min_replicas: Option<u32>,
    pub hedge: bool,
    /// Per member: an address to reach it through (a fault relay) instead
    /// of its own.
    pub via: Vec<Option<String>>,
    /// `ejection.max_time`, when not the default.
    pub ejection_max: Option<&'static str>,
    /// How long `start` waits for every member to be up (caught up by
    /// resync first, which takes long for a member that missed much).
    pub ready_within: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            standby: Vec::new(),
            attempt_timeout: "1s",
            total_timeout: "4s",
            health_interval: "200ms",
            min_replicas: None,
            hedge: true,
            via: Vec::new(),
            ejection_max: None,
            ready_within: Duration::from_secs(30),
        }
    }
}

/// A running `hsm-proxy run` in front of test nodes.
pub struct TestProxy {
    pub dir: PathBuf,
    pub url: String,
    pub metrics: String,
    pub ca: PathBuf,
    /// The operator token (`metrics.admin_token_file` = `DIR/admin-token`):
    /// [`TestProxy::admin`] and the status reads send it.
    pub admin_token: String,
    child: Option<Child>,
    _root: std::sync::Arc<tempfile::TempDir>,
}

impl TestProxy {
    /// Writes a configuration for `nodes` (which share a PKI) and starts the
    /// proxy; returns once every member is healthy.
    pub async fn start(nodes: &[TestNode], opts: ProxyOptions) -> Result<TestProxy> {
        let first = nodes.first().context("no nodes")?;
        let root = first.root.clone();
        let pki = first.pki.clone();
        let dir = root.path().join(format!("proxy-{}", std::process::id()));
        let dir = {
            let mut d = dir;
            let mut i = 0;
            while d.exists() {
                i += 1;
                d = root.path().join(format!("proxy-{i}"));
            }
            d
        };
        std::fs::create_dir_all(&dir)?;
        pki.server_cert()?;
        std::fs::write(
            dir.join("credential.toml"),
            format!("role = \"replication\"\npassword = \"{REPLICATION_PASSWORD}\"\n"),
        )?;
        let mut cfg = format!(
            "[listener]\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [group]\npartition = \"{PARTITION}\"\ncredential_file = \"credential.toml\"\n{}\n\
             [health]\ninterval = \"{}\"\ntimeout = \"{}\"\nrise = 1\nfall = 2\n\n\
             [requests]\nattempt_timeout = \"{}\"\ntotal_timeout = \"{}\"\n\n[requests.hedge]\nenabled = {}\nmax_delay = \"200ms\"\n\n\
             [recovery]\nmin_backoff = \"100ms\"\nmax_backoff = \"1s\"\n\n[resync]\ninterval = \"2s\"\n\n\
             [metrics]\naddress = \"127.0.0.1:0\"\nadmin_token_file = \"admin-token\"\n\n",
            s(&pki.dir.join("proxy-server.pem")),
            s(&pki.dir.join("proxy-server.key")),
            opts.min_replicas.map(|m| format!("min_replicas = {m}\n")).unwrap_or_default(),
            opts.health_interval,
            opts.health_interval,
            opts.attempt_timeout,
            opts.total_timeout,
            opts.hedge,
        );
        if let Some(max) = opts.ejection_max {
            cfg.push_str(&format!("[ejection]\nmax_time = \"{max}\"\n\n"));
        }
        let admin_token = hex::encode(rand::random::<[u8; 32]>());
        write_mode(&dir.join("admin-token"), &admin_token, 0o600)?;
        std::fs::write(dir.join("proxy.header.toml"), &cfg)?;
        let members: Vec<(String, &TestNode, bool)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("m{i}"),
                    n,
                    opts.standby.get(i).copied().unwrap_or(false),
                )
            })
            .collect();
        cfg.push_str(&members_toml(&members, &pki, &opts.via)?);
        std::fs::write(dir.join("proxy.toml"), cfg)?;
        let mut p = TestProxy {
            dir: dir.clone(),
            url: String::new(),
            metrics: String::new(),
            ca: pki.ca(),
            admin_token,
            child: None,
            _root: root,
        };
        p.spawn().await?;
        p.wait_healthy(
            nodes.len() - opts.standby.iter().filter(|s| **s).count().min(nodes.len()),
            opts.ready_within,
        )
        .await?;
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// Starts the proxy process on its configuration and waits for its
    /// listeners (a restart keeps the log, appending).
    async fn spawn(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("proxy.log"))?;
        let addr_file = dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(bin("hsm-proxy"))
            .args([
                "run",
                "--config",
                s(&dir.join("proxy.toml")),
                "--addr-file",
                s(&addr_file),
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting hsm-proxy")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                let mut lines = text.lines();
                self.url = format!("https://{}", lines.next().unwrap_or_default());
                self.metrics = format!("http://{}", lines.next().unwrap_or_default());
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("hsm-proxy exited with {st}; log:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!("hsm-proxy did not start; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (no draining), then the same configuration started again;
    /// returns once `healthy` members are up. The listeners get new ports.
    pub async fn crash_and_restart(&mut self, healthy: usize) -> Result<()> {
        self.kill();
        self.restart(healthy).await
    }

    /// SIGKILL (no draining), and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the proxy again on the same configuration after [`TestProxy::kill`]
    /// (or a stop); returns once `healthy` members are up. The listeners
    /// get new ports: clients must log in again.
    pub async fn restart(&mut self, healthy: usize) -> Result<()> {
        if self.child.is_some() {
            bail!("the proxy is still running");
        }
        self.spawn().await?;
        self.wait_healthy(healthy, Duration::from_secs(30)).await
    }

    /// The sum of the series of `name` on the proxy's `/metrics` that
    /// carry every label of `labels` (0 when none does).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(sum_series(&self.metrics_text()?, name, labels))
    }

    /// The proxy process's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Rewrites the configuration's member list (name, node, standby) and
    /// sends SIGHUP.
    pub fn reload_members(&self, members: &[(String, &TestNode, bool)]) -> Result<()> {
        let first = members.first().context("no members")?;
        let mut cfg = std::fs::read_to_string(self.dir.join("proxy.header.toml"))?;
        cfg.push_str(&members_toml(members, &first.1.pki, &[])?);
        std::fs::write(self.dir.join("proxy.toml"), cfg)?;
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .context("proxy not running")?;
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        Ok(())
    }

    /// `Authorization: Bearer <operator token>`, for curl's `-H`.
    fn operator_header(&self) -> String {
        format!("Authorization: Bearer {}", self.admin_token)
    }

    /// The proxy's `/status.json` (with the operator token).
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &self.operator_header(),
                &format!("{}/status.json", self.metrics),
            ])
            .output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `POST /admin/{what}` with the operator token, as an operator's
    /// script would: (HTTP status, body).
    pub fn admin(&self, what: &str) -> Result<(u16, String)> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
                "-H",
                &self.operator_header(),
                "-H",
                "content-type: application/json",
                &format!("{}/admin/{what}", self.metrics),
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    /// The proxy's `/status.json`, fetched without a `curl` process (to
    /// poll many proxies often): one HTTP/1.1 GET on its metrics listener.
    pub async fn status_async(&self) -> Result<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self
            .metrics
            .strip_prefix("http://")
            .context("the metrics address is not http://")?;
        let get = async {
            let mut conn = tokio::net::TcpStream::connect(host).await?;
            conn.write_all(
                format!(
                    "GET /status.json HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                    self.admin_token
                )
                .as_bytes(),
            )
            .await?;
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).await?;
            anyhow::Ok(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .context("status.json: no answer within 5 s")??;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("status.json: no end of headers")?;
        let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
            bail!("status.json: {}", head.lines().next().unwrap_or_default());
        }
        if head.contains("transfer-encoding: chunked") {
            bail!("status.json: a chunked answer (not read here)");
        }
        Ok(serde_json::from_slice(&answer[split + 4..])?)
    }

    /// The proxy's `/metrics` text.
    pub fn metrics_text(&self) -> Result<String> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/metrics", self.metrics)])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until at least `n` members are up.
    pub async fn wait_healthy(&self, n: usize, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            // `/ready` (open, unlike the status page): `healthy` counts the
            // members whose state is `up`.
            let ready = Command::new("curl")
                .args(["-s", &format!("{}/ready", self.metrics)])
                .output()?;
            if let Ok(s) = serde_json::from_slice::<serde_json::Value>(&ready.stdout) {
                if s["healthy"].as_u64().is_some_and(|up| up as usize >= n) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "fewer than {n} members up within {within:?}: {:?}\nlog:\n{}",
                    self.status().ok(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until member `name` has state `state`.
    pub async fn wait_state(&self, name: &str, state: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = self.status() {
                let found = s["members"]
                    .as_array()
                    .and_then(|m| m.iter().find(|m| m["name"] == name))
                    .map(|m| m["state"] == state)
                    .unwrap_or(false);
                if found {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "member {name} not {state} within {within:?}: {:?}",
                    self.status().ok()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of the virtual partition, logged in as `role`.
    pub async fn login(&self, role: Role) -> Result<Client> {
        let cfg = ClientConfig::from_files(self.url.clone(), &self.ca, None)?;
        let c = Client::new(&cfg)?;
        let pw = match role {
            Role::SecurityOfficer => SO_PASSWORD,
            Role::CryptoOfficer => CO_PASSWORD,
            Role::CryptoUser => CU_PASSWORD,
            Role::Replication => REPLICATION_PASSWORD,
        };
        c.login(role, pw).await?;
        Ok(c)
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn members_toml(
    members: &[(String, &TestNode, bool)],
    pki: &TestPki,
    via: &[Option<String>],
) -> Result<String> {
    let (cert, key) = pki.cert("app");
    let mut out = String::new();
    for (i, (name, n, standby)) in members.iter().enumerate() {
        let role = if *standby { "standby" } else { "active" };
        let addr = via
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| n.addr.clone());
        out.push_str(&format!(
            "[[members]]\nname = \"{name}\"\nurl = \"https://{}\"\nrole = \"{role}\"\n\
             client_cert = \"{}\"\nclient_key = \"{}\"\nca = \"{}\"\n\n",
            addr,
            s(&cert),
            s(&key),
            s(&pki.ca()),
        ));
    }
    Ok(out)
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestNode {
    /// Sends a signal (STOP, CONT, KILL…) to the node process by its PID.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.pid().context("not running")?;
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()?;
        Ok(())
    }
}

/// The body bytes of copying `name` once from `from` to `to` over the
/// member protocol (the export answer, the import request and its answer):
/// what a full copy costs per key, for resync figures.
pub async fn copy_bytes(from: &TestNode, to: &TestNode, name: &str) -> Result<u64> {
    let (a, b) = (
        from.login(Role::Replication).await?,
        to.login(Role::Replication).await?,
    );
    let before = (a.traffic().bytes(), b.traffic().bytes());
    let blob = a.clone_export(name).await?;
    b.clone_import(&blob).await?;
    let after = (a.traffic().bytes(), b.traffic().bytes());
    Ok((after.0 .0 - before.0 .0)
        + (after.0 .1 - before.0 .1)
        + (after.1 .0 - before.1 .0)
        + (after.1 .1 - before.1 .1))
}

/// The sum of the series of counter or gauge `name` in a Prometheus text
/// exposition that carry every label of `labels` (0 when none does).
pub fn sum_series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && wanted.iter().all(|w| l.contains(w.as_str()))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The series of counter `name` in a Prometheus text exposition summed
/// by the value of label `label` (series without it are left out): e.g.
/// `hsm_node_requests_total` by `op`.
pub fn by_label(text: &str, name: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let key = format!("{label}=\"");
    let mut out = std::collections::BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = labels.rsplit_once("} ") else {
            continue;
        };
        let Some(v) = value.trim().parse::<f64>().ok() else {
            continue;
        };
        let at = if labels.starts_with(&key) {
            Some(0)
        } else {
            labels.find(&format!(",{key}")).map(|i| i + 1)
        };
        let Some(at) = at else {
            continue;
        };
        let start = at + key.len();
        let Some(len) = labels[start..].find('"') else {
            continue;
        };
        *out.entry(labels[start..start + len].to_string())
            .or_insert(0.0) += v;
    }
    out
}

/// The status of a `POST /logout` with `c`'s token (the wire contract,
/// without the typed client's forgetting of the token).
pub async fn logout_status(c: &Client) -> Result<u16> {
    let (st, _) = c
        .raw(http::Method::POST, "/logout", None, Default::default())
        .await?;
    Ok(st.as_u16())
}

/// Calls `f` every 50 ms until it succeeds or `within` has passed, and
/// returns its last result: for state that converges in the background
/// (a member's copy of a change finishes after the change was
/// acknowledged by `min_replicas` members).
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        let r = f().await;
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every one of `nodes` holds the keys `names` (copies of an
/// acknowledged change may end just after the answer), at most `within`.
pub async fn held_by_every_member(
    nodes: &[TestNode],
    names: &[&str],
    within: Duration,
) -> Result<()> {
    for n in nodes {
        let c = n.officer().await?;
        for name in names {
            eventually(within, || async { Ok(c.get_key(name, None).await?) })
                .await
                .with_context(|| format!("{name} on {}", n.addr))?;
        }
    }
    Ok(())
}

/// Writes `text` to a new file created with `mode` (a secret's file).
pub fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The record `service/keys.rs` builds for a created key's first version.
pub fn version_record(
    part: &hsm_node::partition::PartitionState,
    name: &str,
    version: &str,
    m: &hsm_node::crypto::KeyMaterial,
    now: i64,
) -> Result<hsm_node::store::VersionRecord> {
    let (sealed, material_digest) = part
        .seal_material(name, version, m)
        .map_err(|e| anyhow::anyhow!("sealing {name}: {e}"))?;
    Ok(hsm_node::store::VersionRecord {
        material_digest,
        public_jwk: m.public_jwk(),
        key_ops: m.default_key_ops(),
        enabled: true,
        nbf: None,
        exp: None,
        created: now,
        updated: now,
        tags: None,
        sealed: sealed.into(),
        token: None,
        request: None,
        // Fixed by the inputs, so that two members preloaded alike agree.
        stamp: u64::try_from(now).unwrap_or(0) * 1_000_000,
        attr_stamp: u64::try_from(now).unwrap_or(0) * 1_000_000,
        pending_until: None,
    })
}

/// Loads `n` EC P-256 keys `bench-0…` into the stopped member at `full`
/// and all but `missing` of them (every k-th left out) into the one at
/// `partial`: the same versions, material, times and generations, so that
/// the two inventories differ only by the missing keys.
pub fn preload_pair(
    full: &std::path::Path,
    partial: &std::path::Path,
    n: usize,
    missing: usize,
) -> Result<()> {
    preload_group(&[full, partial], n, &[0, missing])
}

/// Loads `n` EC P-256 keys `bench-0…` into the stopped members at `dirs`,
/// the same versions, material, times and generations on each, except
/// that member `k` lacks `missing[k]` of them (every j-th left out; no
/// entry is 0): members with nothing missing have equal inventories.
pub fn preload_group(dirs: &[&std::path::Path], n: usize, missing: &[usize]) -> Result<()> {
    use hsm_node::crypto::{KeyMaterial, KeySpec};
    use hsm_node::partition::PartitionState;
    let open = |dir: &std::path::Path| -> Result<(hsm_node::offline::Offline, PartitionState)> {
        let off = hsm_node::offline::Offline::open(dir)?;
        let rec = off.store.partition(PARTITION)?;
        let part = PartitionState::unseal(&off.master, &rec)
            .map_err(|e| anyhow::anyhow!("unsealing the partition: {e}"))?;
        Ok((off, part))
    };
    let members = dirs.iter().map(|d| open(d)).collect::<Result<Vec<_>>>()?;
    // Per member: every how many-th key it lacks (never, for none).
    let skip: Vec<usize> = (0..dirs.len())
        .map(|k| {
            let m = missing.get(k).copied().unwrap_or(0);
            n.checked_div(m).unwrap_or(usize::MAX).max(1)
        })
        .collect();
    let now = hsm_node::clock::now_secs();
    let started = std::time::Instant::now();
    let batch = 5000;
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let mut keys = Vec::with_capacity(end - i);
        for j in i..end {
            let m = KeyMaterial::generate(&KeySpec::Ec(hsm_api::Curve::P256))?;
            let version = format!("{:032x}", rand::random::<u128>());
            keys.push((format!("bench-{j}"), version, m));
        }
        for (k, (off, part)) in members.iter().enumerate() {
            let mut recs = std::collections::HashMap::new();
            let mut names = Vec::new();
            for (j, (name, version, m)) in keys.iter().enumerate() {
                let index = i + j;
                if skip[k] != usize::MAX && index % skip[k] == skip[k] - 1 {
                    continue;
                }
                let rec = version_record(part, name, version, m, now)?;
                names.push(name.clone());
                recs.insert(name.clone(), (version.clone(), rec));
            }
            let mut it = names.into_iter();
            off.store.with_objects(
                PARTITION,
                || it.next(),
                |o| {
                    let (v, r) = recs.remove(&o.name).ok_or_else(|| {
                        hsm_node::store::StoreError::Db(format!("no record for {}", o.name))
                    })?;
                    o.rec.versions.push(v.clone());
                    o.versions.insert(v, r);
                    Ok(())
                },
            )?;
        }
        i = end;
        if i % 50_000 == 0 || i == n {
            eprintln!(
                "preload: {i}/{n} keys in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

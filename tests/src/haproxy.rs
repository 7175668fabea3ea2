//! HAProxy in front of test members, as a team would put it in front of its
//! HSMs instead of `hsm-proxy`: the comparison point of the benchmarks.
//!
//! Decides: HAProxy's configuration for this job, its best one we know of —
//! HTTP mode, TLS to the application and mutual TLS re-encrypted to every
//! member (the members' CA verified; HAProxy presents the registered client
//! certificate `app`), round robin, active health checks on `GET /health`
//! (`inter 2s fall 3 rise 2`), `retry-on all-retryable-errors` with
//! `option redispatch`. Member sessions are per member (a token one member
//! issued means nothing to another), so the login answer's `access_token`
//! is stored in a stick table and every request carrying it goes to the
//! member that issued it; when that member fails, the request is
//! redispatched and the other member refuses the token (401) until the
//! application logs in again. The process runs in the foreground (`-db`)
//! on a loopback port and is killed by its PID when dropped.

use crate::{TestNode, TestPki};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running HAProxy.
pub struct Haproxy {
    /// The partition's URL through HAProxy (`https://127.0.0.1:PORT/partitions/p1`).
    pub url: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// The configuration for `members` (their `host:port`), with the files in `dir`.
pub fn config(port: u16, members: &[String], dir: &Path, ca: &Path) -> String {
    let d = dir.display();
    let mut c = format!(
        "global\n\
         \x20   log stderr format raw local0 warning\n\
         \x20   maxconn 4096\n\
         \x20   tune.ssl.default-dh-param 2048\n\
         defaults\n\
         \x20   mode http\n\
         \x20   log global\n\
         \x20   option httplog\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 4s\n\
         \x20   timeout http-keep-alive 30s\n\
         \x20   retries 2\n\
         \x20   option redispatch\n\
         \x20   retry-on all-retryable-errors\n\
         frontend app\n\
         \x20   bind 127.0.0.1:{port} ssl crt {d}/frontend.pem alpn h2,http/1.1\n\
         \x20   default_backend members\n\
         backend members\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk GET /health\n\
         \x20   http-check expect status 200\n\
         \x20   default-server check inter 2s fall 3 rise 2 ssl verify required ca-file {ca} crt {d}/client.pem alpn h2,http/1.1 check-alpn http/1.1\n\
         \x20   stick-table type string len 64 size 100k expire 2h\n\
         \x20   http-request set-var(txn.login) bool(true) if {{ path_end /login }}\n\
         \x20   http-response wait-for-body time 2s if {{ var(txn.login) -m bool }}\n\
         \x20   stick store-response res.body,json_query('$.access_token') if {{ var(txn.login) -m bool }}\n\
         \x20   stick match req.hdr(authorization),word(2,' ')\n",
        ca = ca.display()
    );
    for (i, m) in members.iter().enumerate() {
        c.push_str(&format!("    server m{i} {m}\n"));
    }
    c
}

fn concat(out: &Path, parts: &[PathBuf]) -> Result<()> {
    let mut all = Vec::new();
    for p in parts {
        all.extend(std::fs::read(p).with_context(|| p.display().to_string())?);
        if all.last() != Some(&b'\n') {
            all.push(b'\n');
        }
    }
    std::fs::write(out, all)?;
    Ok(())
}

impl Haproxy {
    /// Starts HAProxy in front of `nodes` (one group, one PKI) and waits
    /// until it accepts connections and sees every member up.
    pub async fn start(nodes: &[TestNode]) -> Result<Haproxy> {
        Haproxy::start_via(nodes, &[]).await
    }

    /// [`Haproxy::start`], reaching member `i` at `via[i]` when given (a
    /// fault relay) instead of its own address.
    pub async fn start_via(nodes: &[TestNode], via: &[Option<String>]) -> Result<Haproxy> {
        let Some(first) = nodes.first() else {
            bail!("no members")
        };
        let pki: &TestPki = &first.pki;
        let dir = first
            .root
            .path()
            .join(format!("haproxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // The frontend's certificate: the proxy's test server certificate.
        let (server_cert, server_key) = pki.server_cert()?;
        concat(&dir.join("frontend.pem"), &[server_cert, server_key])?;
        let (cert, key) = pki.cert("app");
        concat(&dir.join("client.pem"), &[cert, key])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let members: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                via.get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| n.addr.clone())
            })
            .collect();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config(port, &members, &dir, &pki.ca()))?;
        let check = Command::new(haproxy_bin())
            .args(["-c", "-f"])
            .arg(&cfg)
            .output()
            .context("running haproxy -c (is HAProxy installed? .ci/run installs it)")?;
        if !check.status.success() {
            bail!(
                "haproxy -c refused the configuration:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let h = Haproxy {
            url: format!("https://127.0.0.1:{port}/partitions/{}", crate::PARTITION),
            dir,
            child: Some(child),
        };
        // Up when the frontend answers a member's /health through it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = hsm_api::ClientConfig::from_files(
            format!("https://127.0.0.1:{port}"),
            &pki.ca(),
            None,
        )?;
        let c = hsm_api::Client::new(&probe)?;
        loop {
            if c.health().await.is_ok() {
                return Ok(h);
            }
            if Instant::now() > deadline {
                bail!("HAProxy did not serve within 20 s:\n{}", h.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// HAProxy's log (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client of the partition through HAProxy (the registered
    /// certificate is presented to HAProxy too, which ignores it).
    pub fn client(&self, pki: &TestPki) -> Result<hsm_api::Client> {
        let cfg = hsm_api::ClientConfig::from_files(self.url.clone(), &pki.ca(), None)?;
        Ok(hsm_api::Client::new(&cfg)?)
    }
}

/// `haproxy` from PATH or /usr/sbin (not on a non-login shell's PATH).
pub fn haproxy_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("haproxy")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! `hsm-proxy dev`: a whole local group on one machine, for development and
//! for trying hsm-ha out.
//!
//! Decides the layout of the dev directory and its first-start set-up: a
//! development PKI (`pki/`), one cloning domain (`domain.secret`), random
//! passwords, N members (`members/mN`, `hsm-node` processes on loopback
//! ports fixed at first start, each with a plain-HTTP metrics listener on
//! loopback for Prometheus), the proxy's credential file, the operator
//! token (`admin-token`, mode 0600: every `/admin` call needs it; the dev
//! group's status page is open, on loopback) and configuration
//! (`proxy.toml`), and `dev.json` describing it all (mode 0600: it holds the
//! passwords). Started again on the same directory it
//! brings back the same group with its keys. Member processes are children:
//! one that dies stays dead (the proxy fails over and the status page shows
//! it down); on SIGINT/SIGTERM the proxy drains and the members are stopped.
//! With `--pkcs11-module` every member keeps its keys in a token of that
//! module (`tokens`).

mod tokens;

pub use tokens::TokenRequest;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `DIR/dev.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevInfo {
    pub url: String,
    pub ca_cert: PathBuf,
    pub partition: String,
    pub crypto_officer_password: String,
    pub crypto_user_password: String,
    pub metrics_url: String,
    pub status_url: String,
    /// The operator token's file (`metrics.admin_token_file`): send its
    /// content as `Authorization: Bearer …` to `/admin/...`. Absent for a
    /// directory made before the token existed (its `/admin` is closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    pub members: Vec<DevMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevMember {
    pub name: String,
    pub url: String,
    /// The member's Prometheus endpoint, `http://127.0.0.1:PORT/metrics`
    /// (the node's `metrics_listen`).
    pub metrics_url: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    /// The label of the PKCS#11 token the member keeps its keys in
    /// (`--pkcs11-module`); absent for a software member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
}

/// What first start decides and later starts reuse (`DIR/dev-state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    members: Vec<(String, SocketAddr)>,
    /// Each member's metrics listener, by member name. Absent in a
    /// directory made before members had one: chosen at the next start.
    #[serde(default)]
    member_metrics: Vec<(String, SocketAddr)>,
    proxy: SocketAddr,
    metrics: SocketAddr,
    so: String,
    co: String,
    cu: String,
    replication: String,
    /// The members' tokens (`--pkcs11-module`); absent: software members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens: Option<tokens::DevTokens>,
}

impl State {
    /// Member `i`'s token, if the group's members are on tokens.
    fn token(&self, i: usize) -> Option<&tokens::MemberToken> {
        self.tokens.as_ref().and_then(|t| t.members.get(i))
    }
}

const PARTITION: &str = "p1";

fn hsm_node() -> PathBuf {
    // Beside this binary (cargo builds both into one directory), else PATH.
    let exe = std::env::current_exe().unwrap_or_default();
    let near = exe.with_file_name("hsm-node");
    if near.exists() {
        near
    } else {
        PathBuf::from("hsm-node")
    }
}

fn node(args: &[&str], envs: &[(&str, String)]) -> Result<(), String> {
    let out = Command::new(hsm_node())
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "running {}: {e} (build it: cargo build -p hsm-node)",
                hsm_node().display()
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "hsm-node {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

pub(crate) fn password() -> Result<String, String> {
    let mut b = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    Ok(hsm_api::b64::encode(&b))
}

/// An operator token: 32 random bytes, hex.
fn operator_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Every file of the dev directory is 0600, every directory 0700
/// (`hsm_server::private_fs`).
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    hsm_server::private_fs::write_atomic(path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// First start: everything the group needs on disk.
fn create(
    dir: &Path,
    n: usize,
    listen: SocketAddr,
    token: Option<&TokenRequest>,
) -> Result<State, String> {
    // The dev group's passwords sit in dev.json and its certificate names
    // only localhost: it is for this machine, never for a network.
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen {listen}: hsm-proxy dev serves loopback only (its certificate names \
             localhost and 127.0.0.1, its passwords are in dev.json); use 127.0.0.1 or ::1, \
             and `hsm-proxy run` with listener.public_url to serve a network"
        ));
    }
    if !(1..=16).contains(&n) {
        return Err(format!("--members must be 1 to 16, got {n}"));
    }
    hsm_server::private_fs::create_dir_all(&dir.join("members"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let pki = dir.join("pki");
    node(
        &["pki", "init-ca", "--dir", &s(&pki), "--cn", "hsm-ha dev CA"],
        &[],
    )?;
    node(&["pki", "issue", "--dir", &s(&pki), "--name", "proxy"], &[])?;
    node(
        &[
            "pki",
            "issue",
            "--dir",
            &s(&pki),
            "--name",
            "proxy-server",
            "--server",
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        ],
        &[],
    )?;
    let proxy = if listen.port() == 0 {
        free_port()?
    } else {
        listen
    };
    let members: Vec<(String, SocketAddr)> = (0..n)
        .map(|i| Ok((format!("m{i}"), free_port()?)))
        .collect::<Result<_, String>>()?;
    let names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    let tokens = token
        .map(|t| tokens::prepare(t, &dir.join("members"), &names))
        .transpose()?;
    let st = State {
        members,
        member_metrics: Vec::new(),
        proxy,
        metrics: free_port()?,
        so: password()?,
        co: password()?,
        cu: password()?,
        replication: password()?,
        tokens,
    };
    let domain = dir.join("domain.secret");
    for (i, (name, addr)) in st.members.iter().enumerate() {
        let d = dir.join("members").join(name);
        let (token_args, env) = match (&st.tokens, st.token(i)) {
            (Some(t), Some(m)) => (m.init_args(&t.module), m.env()),
            _ => (Vec::new(), Vec::new()),
        };
        let mut init = vec![
            "init".to_string(),
            "--dir".into(),
            s(&d),
            "--pki".into(),
            s(&pki),
            "--listen".into(),
            addr.to_string(),
        ];
        init.extend(token_args);
        node(&init.iter().map(String::as_str).collect::<Vec<_>>(), &env)?;
        let mut passwords = env.clone();
        passwords.extend([
            ("HSM_SO_PASSWORD", st.so.clone()),
            ("HSM_CO_PASSWORD", st.co.clone()),
            ("HSM_CU_PASSWORD", st.cu.clone()),
            ("HSM_REPLICATION_PASSWORD", st.replication.clone()),
        ]);
        node(
            &[
                "partition",
                "create",
                "--dir",
                &s(&d),
                "--name",
                PARTITION,
                "--domain-file",
                &s(&domain),
            ],
            &passwords,
        )?;
        node(
            &[
                "partition",
                "register-client",
                "--dir",
                &s(&d),
                "--name",
                PARTITION,
                "--cert",
                &s(&pki.join("proxy.pem")),
            ],
            &env,
        )?;
    }
    write_private(
        &dir.join("proxy.credential"),
        &format!(
            "role = \"replication\"\npassword = \"{}\"\n",
            st.replication
        ),
    )?;
    write_private(&dir.join("admin-token"), &format!("{}\n", operator_token()))?;
    let mut cfg = format!(
        "# Written by `hsm-proxy dev`; see docs/CONFIG.md for every key.\n\
         [listener]\naddress = \"{}\"\ncert = \"pki/proxy-server.pem\"\nkey = \"pki/proxy-server.key\"\n\n\
         [group]\npartition = \"{PARTITION}\"\ncredential_file = \"proxy.credential\"\n\n\
         # /admin needs the token; the status page is open here (loopback, a dev group).\n\
         [metrics]\naddress = \"{}\"\nadmin_token_file = \"admin-token\"\nstatus_open = true\n\n",
        st.proxy, st.metrics
    );
    for (name, addr) in &st.members {
        cfg.push_str(&format!(
            "[[members]]\nname = \"{name}\"\nurl = \"https://{addr}\"\nlocation = \"local\"\n\
             client_cert = \"pki/proxy.pem\"\nclient_key = \"pki/proxy.key\"\nca = \"pki/ca.pem\"\n\n"
        ));
    }
    write_private(&dir.join("proxy.toml"), &cfg)?;
    write_private(
        &dir.join("dev-state.json"),
        &serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?,
    )?;
    Ok(st)
}

/// The member processes, stopped by their PIDs when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// Runs the dev group until SIGINT or SIGTERM.
///
/// `token`: put every member on a PKCS#11 token (first start only; a
/// directory made without tokens refuses it, as one made with tokens keeps
/// them).
pub fn run(
    dir: &Path,
    n: usize,
    listen: SocketAddr,
    token: Option<&TokenRequest>,
) -> Result<(), String> {
    let state_path = dir.join("dev-state.json");
    let mut st: State = if state_path.exists() {
        let text =
            std::fs::read(&state_path).map_err(|e| format!("{}: {e}", state_path.display()))?;
        let st: State =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", state_path.display()))?;
        if let (Some(t), None) = (token, &st.tokens) {
            return Err(format!(
                "--pkcs11-module {}: {} holds a dev group of software members, and members                  are put on tokens at first start only; use a new --dir",
                t.module.display(),
                dir.display()
            ));
        }
        st
    } else {
        create(dir, n, listen, token)?
    };
    if st.member_metrics.len() != st.members.len() {
        st.member_metrics = st
            .members
            .iter()
            .map(|(name, _)| Ok((name.clone(), free_port()?)))
            .collect::<Result<_, String>>()?;
        write_private(
            &state_path,
            &serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?,
        )?;
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    hsm_server::private_fs::create_dir_all(&dir.join("logs")).map_err(|e| e.to_string())?;
    let mut children = Children(Vec::new());
    let mut members = Vec::new();
    for (i, ((name, addr), (_, metrics))) in st.members.iter().zip(&st.member_metrics).enumerate() {
        let d = dir.join("members").join(name);
        let token = st.token(i);
        let log = hsm_server::private_fs::append(&dir.join("logs").join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(d.join("listen.addr"));
        let child = Command::new(hsm_node())
            .args(["run", "--dir", &s(&d)])
            .args(["--metrics-listen", &metrics.to_string()])
            .envs(token.map(|t| t.env()).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting member {name}: {e}"))?;
        members.push(DevMember {
            name: name.clone(),
            url: format!("https://{addr}"),
            metrics_url: format!("http://{metrics}/metrics"),
            pid: child.id(),
            data_dir: d.clone(),
            token_label: token.map(|t| t.label.clone()),
        });
        children.0.push(child);
    }
    // Wait until every member serves.
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &members {
        while !m.data_dir.join("listen.addr").exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "member {} did not start; see {}",
                    m.name,
                    dir.join("logs").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let cfg = ha_config::Config::load(&dir.join("proxy.toml")).map_err(|e| e.to_string())?;
    let info = DevInfo {
        url: format!("https://{}", st.proxy),
        ca_cert: dir.join("pki/ca.pem"),
        partition: PARTITION.into(),
        crypto_officer_password: st.co.clone(),
        crypto_user_password: st.cu.clone(),
        metrics_url: format!("http://{}/metrics", st.metrics),
        status_url: format!("http://{}/status", st.metrics),
        admin_token_file: cfg.metrics.admin_token_file.clone(),
        members,
    };
    write_private(
        &dir.join("dev.json"),
        &serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        crate::metrics::install()?;
        crate::run::serve(
            &cfg,
            Some(&dir.join("proxy.toml")),
            hsm_server::shutdown_signal(),
            |_, _| {
                // The one place this binary writes to stdout: how to use the group.
                println!("{}", usage(&dir, &info));
            },
        )
        .await
        .map_err(|e| e.to_string())
    })?;
    drop(children);
    Ok(())
}

fn usage(dir: &Path, i: &DevInfo) -> String {
    format!(
        "hsm-proxy dev: {n} members behind {url} (partition {p}){tokens}\n\
         \n  everything about this group: {dir}/dev.json\n  CA certificate: {ca}\n  status page: {status}\n  metrics: {metrics}\n\
         \nSign with curl:\n\
         \n  TOKEN=$(curl -s --cacert {ca} -X POST {url}/login -H 'content-type: application/json' \\\n    -d '{{\"role\":\"crypto-officer\",\"password\":\"'$(jq -r .crypto_officer_password {dir}/dev.json)'\"}}' | jq -r .access_token)\n\
         \x20 curl -s --cacert {ca} -H \"Authorization: Bearer $TOKEN\" -X POST {url}/keys/demo/create -d '{{\"kty\":\"EC\",\"crv\":\"P-256\"}}'\n\
         \x20 curl -s --cacert {ca} -H \"Authorization: Bearer $TOKEN\" -X POST {url}/keys/demo//sign \\\n    -d '{{\"alg\":\"ES256\",\"value\":\"'$(printf hello | openssl dgst -sha256 -binary | basenc --base64url | tr -d =)'\"}}'\n\
         \nOperations (drain, undrain, resync, reload) need the operator token:\n\
         \n  curl -s -X POST -H \"Authorization: Bearer $(cat {dir}/admin-token)\" -H 'content-type: application/json' {admin}/admin/drain/m0\n\
         \nOr with the azure-keyvault-keys SDK: see README.md (KeyClient(vault_url=\"{url}\", credential=..., \n  verify_challenge_resource=False, connection_verify=\"{ca}\")).\n\
         \nCtrl-C stops the proxy and the members; `hsm-proxy dev --dir {dir}` brings them back with their keys.",
        n = i.members.len(),
        tokens = match i.members.first().and_then(|m| m.token_label.as_ref()) {
            Some(_) => ", keys in PKCS#11 tokens",
            None => "",
        },
        url = i.url,
        p = i.partition,
        dir = dir.display(),
        ca = i.ca_cert.display(),
        status = i.status_url,
        metrics = i.metrics_url,
        admin = i.metrics_url.trim_end_matches("/metrics"),
    )
}

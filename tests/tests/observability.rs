//! Observability against the real tools: the alert rules under `promtool`,
//! the Grafana dashboards' structure, a real Prometheus scraping
//! `hsm-proxy dev` (every dashboard query parses and returns data, the
//! member-down alert fires when a member is killed), the status page as
//! headless Chromium renders it, and audit records of requests made through
//! the proxy arriving at a real rsyslogd.
//!
//! The tools come from Debian packages that `.ci/run` installs (`prometheus`
//! gives `prometheus` and `promtool`; `chromium`; `rsyslog`). A test whose
//! tool is missing fails with the package to install; none skips.
//!
//! `docs/status.png` is the screenshot of the status-page test: run it with
//! `HSM_STATUS_SCREENSHOT=docs/status.png` (a path relative to the
//! repository) to write it there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DIGEST: [u8; 32] = [7u8; 32];
/// The dashboards, alert rules and scrape configuration under test.
const DASHBOARDS: &[&str] = &["overview", "members", "replication", "nodes"];
/// The Grafana schema version the dashboards are written for (Grafana 10.x/11.x).
const SCHEMA_VERSION: u64 = 39;
/// What `$__rate_interval` becomes in the live test (Prometheus scrapes every
/// second there; Grafana would use at least four scrape intervals).
const RATE_INTERVAL: &str = "20s";
/// The `group` label the live test gives the dev group's targets.
const GROUP: &str = "dev";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Debian-packaged tool, looked up on PATH and in the sbin directories.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: `apt-get install {package}` (.ci/run installs it); \
                 this test needs the real tool"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion; (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", url])
        .stdin(Stdio::null())
        .output()
        .expect("curl is needed (apt-get install curl)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------- rules

/// Names of the alerts of `alerts.yml` (`- alert: NAME` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn alert_rules_and_scrape_config_pass_promtool_and_every_alert_has_a_unit_test() {
    let promtool = tool("promtool", "prometheus");
    let dir = repo_root().join("dashboards");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool check config:\n{out}");
    let (ok, out) = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert is unit-tested: named in alerts.test.yml with at least one
    // evaluation where it fires (a non-empty exp_alerts) and one where it
    // stays silent (exp_alerts: []).
    let rules = read(&dir.join("alerts.yml"));
    let tests = read(&dir.join("alerts.test.yml"));
    let names = alert_names(&rules);
    assert!(names.len() >= 8, "too few alerts found: {names:?}");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for name in &names {
        let (mut fires, mut silent) = (false, false);
        for (i, l) in lines.iter().enumerate() {
            if *l == format!("alertname: {name}") {
                match lines.get(i + 1) {
                    Some(&"exp_alerts: []") => silent = true,
                    Some(&"exp_alerts:") => fires = true,
                    other => panic!("alerts.test.yml: {name}: unexpected line after it: {other:?}"),
                }
            }
        }
        assert!(fires, "alerts.test.yml never expects {name} to fire");
        assert!(
            silent,
            "alerts.test.yml never expects {name} to stay silent"
        );
        // And its runbook section exists in docs/OPERATIONS.md.
        let ops = read(&repo_root().join("docs/OPERATIONS.md"));
        assert!(
            ops.contains(&format!("### {name}")),
            "docs/OPERATIONS.md has no section `### {name}`"
        );
    }
    for ann in ["summary:", "runbook:"] {
        let n = rules.lines().filter(|l| l.trim().starts_with(ann)).count();
        assert_eq!(n, names.len(), "not every alert has a `{ann}` annotation");
    }
}

// ---------------------------------------------------------------- dashboards

fn dashboard(name: &str) -> Value {
    let path = repo_root().join(format!("dashboards/{name}.json"));
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (dashboard, panel title, expr) of the dashboards.
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    name.to_string(),
                    p["title"].as_str().unwrap_or_default().to_string(),
                    t["expr"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    out
}

/// The `hsm_*` metric names a PromQL expression (or rule file) mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("hsm_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if before_ok && !text[start..end].ends_with('_') {
            out.insert(text[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// The sample names of a Prometheus text exposition.
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Grafana's structure rules the dashboards must meet; each broken rule is
/// one line of the answer.
fn dashboard_problems(name: &str, d: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    if d["schemaVersion"].as_u64() != Some(SCHEMA_VERSION) {
        bad.push(format!(
            "schemaVersion is {}, not {SCHEMA_VERSION}",
            d["schemaVersion"]
        ));
    }
    for key in ["uid", "title"] {
        if d[key].as_str().is_none_or(str::is_empty) {
            bad.push(format!("no {key}"));
        }
    }
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |n: &str| vars.iter().find(|v| v["name"] == n).cloned();
    match var("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        other => bad.push(format!("no Prometheus datasource variable: {other:?}")),
    }
    for n in ["group", "member"] {
        match var(n) {
            Some(v) if v["type"] == "query" && v["datasource"]["uid"] == "${datasource}" => {
                if !v["query"]["query"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("label_values(")
                {
                    bad.push(format!("variable {n}: not a label_values query"));
                }
            }
            other => bad.push(format!("no `{n}` query variable on $datasource: {other:?}")),
        }
    }
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        bad.push("no panels".into());
    }
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        match p["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            other => bad.push(format!("panel {title:?}: id {other:?} missing or repeated")),
        }
        if p["type"].as_str().is_none_or(str::is_empty) {
            bad.push(format!("panel {title:?}: no type"));
        }
        let g = &p["gridPos"];
        let fits = ["h", "w", "x", "y"].iter().all(|k| g[k].is_u64())
            && g["x"].as_u64().unwrap_or(99) + g["w"].as_u64().unwrap_or(99) <= 24;
        if !fits {
            bad.push(format!(
                "panel {title:?}: gridPos {g} outside the 24-column grid"
            ));
        }
        if p["datasource"]["uid"] != "${datasource}" {
            bad.push(format!("panel {title:?}: datasource is not $datasource"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            bad.push(format!("panel {title:?}: no query"));
        }
        let mut refs = BTreeSet::new();
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            if expr.trim().is_empty() {
                bad.push(format!("panel {title:?}: a target without expr"));
            }
            if !refs.insert(t["refId"].as_str().unwrap_or_default().to_string()) {
                bad.push(format!("panel {title:?}: refId repeated"));
            }
            if metric_names(expr).is_empty() && !expr.starts_with("up{") {
                bad.push(format!("panel {title:?}: {expr} names no hsm-ha metric"));
            }
            if !expr.contains("group=~\"$group\"") {
                bad.push(format!("panel {title:?}: {expr} ignores $group"));
            }
        }
    }
    bad.into_iter()
        .map(|b| format!("{name}.json: {b}"))
        .collect()
}

#[test]
fn dashboards_are_well_formed_grafana_dashboards() {
    let mut uids = BTreeSet::new();
    let mut bad = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        bad.extend(dashboard_problems(name, &d));
        assert!(uids.insert(d["uid"].to_string()), "{name}: uid repeated");
    }
    assert!(bad.is_empty(), "dashboard problems:\n{}", bad.join("\n"));
    // The rules of `dashboard_problems` catch what they should.
    let mut broken = dashboard("overview");
    broken["panels"][1]["id"] = broken["panels"][0]["id"].clone();
    broken["panels"][2]["targets"] = Value::Array(vec![]);
    broken["schemaVersion"] = 16.into();
    let found = dashboard_problems("broken", &broken).join("\n");
    for want in ["repeated", "no query", "schemaVersion"] {
        assert!(found.contains(want), "{want} not caught:\n{found}");
    }
}

// ---------------------------------------------------------------- dev group

/// `hsm-proxy dev` as a child; SIGTERM (by PID) when dropped.
struct DevGroup {
    root: tempfile::TempDir,
    child: Option<Child>,
    info: Value,
}

impl DevGroup {
    async fn start() -> DevGroup {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("g");
        let proxy = hsm_tests::bin("hsm-proxy");
        let child = Command::new(&proxy)
            .args(["dev", "--dir", dir.to_str().unwrap()])
            .args(["--members", "3", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.path().join("proxy.out")).unwrap())
            .stderr(std::fs::File::create(root.path().join("proxy.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", proxy.display()));
        let mut g = DevGroup {
            root,
            child: Some(child),
            info: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        g.info = loop {
            if let Ok(v) = serde_json::from_str::<Value>(
                &std::fs::read_to_string(g.dir().join("dev.json")).unwrap_or_default(),
            ) {
                break v;
            }
            g.assert_running("before writing dev.json");
            assert!(Instant::now() < deadline, "no dev.json\n{}", g.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        g.wait_members(3, Duration::from_secs(60)).await;
        g
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("g")
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["proxy.out", "proxy.err"] {
            let p = self.root.path().join(f);
            s.push_str(&format!(
                "--- {f}\n{}\n",
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
        s
    }

    fn assert_running(&mut self, what: &str) {
        if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("hsm-proxy dev exited with {st} {what}\n{}", self.logs());
        }
    }

    fn status(&self) -> Value {
        http_get(
            self.info["status_url"]
                .as_str()
                .unwrap()
                .replace("/status", "/status.json")
                .as_str(),
        )
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
    }

    fn state_of(&self, member: &str) -> String {
        self.status()["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == member))
            .and_then(|m| m["state"].as_str())
            .unwrap_or("?")
            .to_string()
    }

    async fn wait_members(&mut self, up: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let n = self.status()["healthy"].as_u64().unwrap_or(0) as usize;
            if n == up {
                return;
            }
            self.assert_running("while waiting for members");
            assert!(
                Instant::now() < deadline,
                "{up} members not healthy within {within:?}: {}\n{}",
                self.status(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_state(&self, member: &str, state: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.state_of(member) != state {
            assert!(
                Instant::now() < deadline,
                "{member} not {state} within {within:?}: {}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn member(&self, name: &str) -> &Value {
        self.info["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no member {name} in dev.json"))
    }

    /// SIGKILL a member by its PID (dev members that die stay dead).
    fn kill_member(&self, name: &str) {
        let pid = self.member(name)["pid"].as_u64().unwrap();
        let (ok, out) = run(Command::new("kill").args(["-KILL", &pid.to_string()]));
        assert!(ok, "kill {pid}: {out}");
    }

    fn client(&self) -> Client {
        let cfg = ClientConfig::from_files(
            self.info["url"].as_str().unwrap(),
            Path::new(self.info["ca_cert"].as_str().unwrap()),
            None,
        )
        .unwrap();
        Client::new(&cfg).unwrap()
    }

    /// A client of a member's partition directly, with the proxy's certificate.
    fn member_client(&self, name: &str) -> Client {
        let pki = self.dir().join("pki");
        let cfg = ClientConfig::from_files(
            format!(
                "{}/partitions/p1",
                self.member(name)["url"].as_str().unwrap()
            ),
            &pki.join("ca.pem"),
            Some((&pki.join("proxy.pem"), &pki.join("proxy.key"))),
        )
        .unwrap();
        Client::new(&cfg).unwrap()
    }

    async fn officer(&self) -> Client {
        let c = self.client();
        c.login(
            Role::CryptoOfficer,
            self.info["crypto_officer_password"].as_str().unwrap(),
        )
        .await
        .unwrap();
        c
    }
}

impl Drop for DevGroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- Prometheus

/// Prometheus in the foreground on a free loopback port, its storage in a
/// temporary directory; killed by its PID when dropped.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Prometheus {
    /// Runs `dashboards/prometheus.yml` with `alerts.yml` as written, the
    /// scrape and evaluation intervals shortened to 1 s, and target files
    /// for the dev group.
    async fn start(g: &DevGroup) -> Prometheus {
        let bin = tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let src = repo_root().join("dashboards");
        let cfg = read(&src.join("prometheus.yml"));
        for line in ["  scrape_interval: 15s\n", "  evaluation_interval: 15s\n"] {
            assert!(
                cfg.contains(line),
                "dashboards/prometheus.yml lacks {line:?}"
            );
        }
        let cfg = cfg
            .replace(
                "  scrape_interval: 15s\n",
                "  scrape_interval: 1s\n  scrape_timeout: 1s\n",
            )
            .replace(
                "  evaluation_interval: 15s\n",
                "  evaluation_interval: 1s\n",
            );
        std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
        std::fs::copy(src.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
        std::fs::create_dir(dir.path().join("targets")).unwrap();
        let hostport = |url: &str| {
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_string()
        };
        let proxy = serde_json::json!([{
            "targets": [hostport(g.info["metrics_url"].as_str().unwrap())],
            "labels": {"group": GROUP}
        }]);
        let nodes: Vec<Value> = g.info["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let url = m["metrics_url"]
                    .as_str()
                    .unwrap_or_else(|| panic!("dev.json: member without metrics_url: {m}"));
                serde_json::json!({"targets": [hostport(url)], "labels": {"group": GROUP, "member": m["name"]}})
            })
            .collect();
        std::fs::write(dir.path().join("targets/hsm-proxy.json"), proxy.to_string()).unwrap();
        std::fs::write(
            dir.path().join("targets/hsm-node.json"),
            Value::Array(nodes).to_string(),
        )
        .unwrap();
        let port = free_port();
        let d = dir.path().display().to_string();
        let child = Command::new(&bin)
            .arg(format!("--config.file={d}/prometheus.yml"))
            .arg(format!("--storage.tsdb.path={d}/data"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut p = Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&format!("{}/-/ready", p.url)).is_none() {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("prometheus exited with {st}:\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "20",
            "-G",
            &format!("{}{path}", self.url),
        ]);
        for (k, v) in params {
            cmd.args(["--data-urlencode", &format!("{k}={v}")]);
        }
        let (ok, out) = run(&mut cmd);
        assert!(ok, "curl {path}: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
    }

    fn query(&self, expr: &str) -> Value {
        self.api("/api/v1/query", &[("query", expr)])
    }

    /// Active alerts named `name` in `state` (`pending` or `firing`).
    fn alerts(&self, name: &str, state: &str) -> Vec<Value> {
        self.api("/api/v1/alerts", &[])["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
            .collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, mut f: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "{what} within {within:?}; alerts: {}\n{}",
                self.api("/api/v1/alerts", &[]),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A panel's query as Grafana sends it with group `dev` and every member.
fn as_grafana_sends(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$group", GROUP)
        .replace("$member", ".*");
    assert!(!e.contains('$'), "unknown variable left in {e}");
    e
}

/// Application traffic until `stop`: signs through the proxy, and a failed
/// login now and then. Returns (ok, failed) signs.
async fn traffic(g: Client, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match g.sign("k", None, SignatureAlgorithm::Es256, &DIGEST).await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
        if i.is_multiple_of(40) {
            let _ = g
                .raw(
                    http::Method::GET,
                    "/keys/no-such-key/",
                    None,
                    bytes::Bytes::new(),
                )
                .await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_dev_group_every_panel_returns_data_and_member_down_fires() {
    let g = DevGroup::start().await;
    let prom = Prometheus::start(&g).await;
    // Every target (the proxy and three members) is scraped.
    prom.wait_for("4 targets up", Duration::from_secs(30), |p| {
        p.api("/api/v1/targets", &[])["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| t.len() == 4 && t.iter().all(|t| t["health"] == "up"))
    })
    .await;

    // Traffic: a key, signs in the background, failed logins through the
    // proxy, and a role locked on m0 by 10 wrong passwords sent to it directly.
    let co = g.officer().await;
    co.create_key("k", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = tokio::spawn(traffic(co.clone(), stop.clone()));
    for _ in 0..3 {
        let r = g.client().login(Role::CryptoUser, "wrong-password").await;
        assert!(r.is_err(), "a wrong password logged in");
    }
    let m0 = g.member_client("m0");
    for _ in 0..10 {
        assert!(m0.login(Role::CryptoUser, "wrong-password").await.is_err());
    }

    // Kill m2; the proxy sees it down; changes made meanwhile are pending for it.
    g.kill_member("m2");
    g.wait_state("m2", "down", Duration::from_secs(60)).await;
    for i in 0..3 {
        co.create_key(
            &format!("while-down-{i}"),
            &KeyCreateParameters::ec(Curve::P256),
        )
        .await
        .unwrap();
    }

    // The member-down alert fires for m2 (and only m2); the group still has
    // min_replicas healthy members, so the group alerts stay silent.
    prom.wait_for(
        "HsmMemberDown firing for m2",
        Duration::from_secs(120),
        |p| !p.alerts("HsmMemberDown", "firing").is_empty(),
    )
    .await;
    let firing = prom.alerts("HsmMemberDown", "firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["labels"]["member"], "m2", "{firing:?}");
    assert_eq!(firing[0]["labels"]["group"], GROUP, "{firing:?}");
    assert!(firing[0]["annotations"]["runbook"]
        .as_str()
        .is_some_and(|r| r.len() > 40));
    prom.wait_for(
        "HsmRoleLockedOut firing for m0",
        Duration::from_secs(30),
        |p| {
            p.alerts("HsmRoleLockedOut", "firing")
                .iter()
                .any(|a| a["labels"]["member"] == "m0" && a["labels"]["role"] == "crypto-user")
        },
    )
    .await;
    for silent in [
        "HsmGroupAllMembersDown",
        "HsmGroupBelowMinReplicas",
        "HsmErrorRatioHigh",
    ] {
        for state in ["pending", "firing"] {
            let a = prom.alerts(silent, state);
            assert!(a.is_empty(), "{silent} is {state}: {a:?}");
        }
    }
    // Every rule Prometheus loaded is healthy and carries its texts.
    let groups = prom.api("/api/v1/rules", &[])["data"]["groups"].clone();
    let rules: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(
        rules.len(),
        alert_names(&read(&repo_root().join("dashboards/alerts.yml"))).len()
    );
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
        for a in ["summary", "runbook"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                "{r}"
            );
        }
    }

    // The template variables find the group and its members.
    let groups = prom.api(
        "/api/v1/label/group/values",
        &[("match[]", "hsm_proxy_group_members")],
    );
    assert_eq!(groups["data"], serde_json::json!([GROUP]), "{groups}");
    for metric in ["hsm_proxy_member_info", "hsm_node_requests_total"] {
        let m = prom.api(
            "/api/v1/label/member/values",
            &[("match[]", &format!("{metric}{{group=~\"{GROUP}\"}}"))],
        );
        assert_eq!(
            m["data"],
            serde_json::json!(["m0", "m1", "m2"]),
            "{metric}: {m}"
        );
    }

    // Every metric a dashboard or alert names is in the real /metrics of the
    // proxy or a member.
    let mut exposed = exposed_names(&http_get(g.info["metrics_url"].as_str().unwrap()).unwrap());
    for m in ["m0", "m1"] {
        let url = g.member(m)["metrics_url"].as_str().unwrap();
        exposed.extend(exposed_names(&http_get(url).unwrap()));
    }
    let mut named = BTreeSet::new();
    for (_, _, expr) in panel_queries() {
        named.extend(metric_names(&expr));
    }
    for line in read(&repo_root().join("dashboards/alerts.yml")).lines() {
        named.extend(metric_names(line.split('#').next().unwrap_or_default()));
    }
    let unknown: Vec<&String> = named.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "named but not exposed: {unknown:?}\nexposed: {exposed:?}"
    );

    // Every panel query parses and returns data. Some need a few scrapes of
    // the newest events, so each gets a bounded number of tries.
    let mut problems = Vec::new();
    for (dash, title, expr) in panel_queries() {
        let e = as_grafana_sends(&expr);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = prom.query(&e);
            if r["status"] != "success" {
                problems.push(format!("{dash} / {title}: {e}: {r}"));
                break;
            }
            let n = r["data"]["result"].as_array().map_or(0, Vec::len);
            if n > 0 {
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!("{dash} / {title}: no data: {e}"));
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = bg.await.unwrap();
    assert!(problems.is_empty(), "panels:\n{}", problems.join("\n"));
    assert!(ok > 0, "no sign succeeded ({failed} failed)");

    // The data are the group's: m2 is down in the state series, two members
    // healthy, the member-down counted one failover, m0's lockout and failed
    // logins are counted, and the proxy answered the 3 wrong passwords.
    let one = |e: &str| -> f64 {
        let r = prom.query(e);
        r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{e}: {r}"))
    };
    assert_eq!(
        one("hsm_proxy_member_state{member=\"m2\",state=\"down\"}"),
        1.0
    );
    assert_eq!(one("hsm_proxy_group_healthy_members"), 2.0);
    assert_eq!(one("hsm_proxy_min_replicas"), 2.0);
    assert_eq!(one("hsm_proxy_member_failovers_total{member=\"m2\"}"), 1.0);
    assert_eq!(
        one("sum(hsm_node_lockouts_total{member=\"m0\",role=\"crypto-user\"})"),
        1.0
    );
    assert!(one("sum(hsm_node_login_failures_total{member=\"m0\",role=\"crypto-user\"})") >= 10.0);
    assert_eq!(
        one("sum(hsm_proxy_requests_total{op=\"login\",outcome!=\"ok\"})"),
        3.0
    );
}

// ---------------------------------------------------------------- status page

/// Where the exact colours of the status page's style appear in a PNG:
/// `tests/obs/png_bands.py` → {colour: [[first_row, last_row, pixels]]}.
fn colour_bands(png: &Path, colours: &[&str]) -> Value {
    let script = repo_root().join("tests/obs/png_bands.py");
    let (ok, out) = run(Command::new("python3").arg(&script).arg(png).args(colours));
    assert!(ok, "png_bands.py: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn bands(v: &Value, colour: &str) -> Vec<(u64, u64, u64)> {
    v[colour]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b[0].as_u64().unwrap(),
                b[1].as_u64().unwrap(),
                b[2].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium_shows_the_killed_member_down_in_red() {
    let chromium = tool("chromium", "chromium");
    let g = DevGroup::start().await;
    g.kill_member("m1");
    g.wait_state("m1", "down", Duration::from_secs(60)).await;
    let url = g.info["status_url"].as_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let shot = out.path().join("status.png");
    let chrome = |extra: &[String]| {
        let mut cmd = Command::new("timeout");
        cmd.arg("90")
            .arg(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(["--force-device-scale-factor=1", "--window-size=1100,420"])
            .arg(format!(
                "--user-data-dir={}",
                out.path().join("profile").display()
            ))
            .args(extra)
            .arg(&url);
        run(&mut cmd)
    };

    // The DOM after Chromium parsed and rendered the page.
    let (ok, dom) = chrome(&["--dump-dom".to_string()]);
    assert!(ok, "chromium --dump-dom failed:\n{dom}");
    let row = |name: &str| -> String {
        let at = dom
            .find(&format!("data-member=\"{name}\""))
            .unwrap_or_else(|| panic!("no row for {name} in the DOM:\n{dom}"));
        let start = dom[..at].rfind("<tr").unwrap();
        let end = at + dom[at..].find("</tr>").unwrap();
        dom[start..end].to_string()
    };
    let dead = row("m1");
    assert!(dead.contains("class=\"member state-down\""), "{dead}");
    assert!(
        dead.contains("<span class=\"badge down\">DOWN</span>"),
        "{dead}"
    );
    for up in ["m0", "m2"] {
        let r = row(up);
        assert!(r.contains("state-up") && r.contains(">UP</span>"), "{r}");
    }
    assert!(
        dom.contains("id=\"not-up\">m1 DOWN</p>"),
        "no banner naming m1:\n{dom}"
    );
    assert!(dom.contains("2 of 3 members healthy"), "{dom}");

    // What Chromium painted: one red row with the DOWN badge inside it, two
    // green rows each with an UP badge, and the red banner above the table.
    let (ok, log) = chrome(&[format!("--screenshot={}", shot.display())]);
    assert!(ok && shot.exists(), "chromium --screenshot failed:\n{log}");
    let (down_row, down_badge, up_row, up_badge) = ("ffcdd2", "c62828", "e8f5e9", "2e7d32");
    let v = colour_bands(&shot, &[down_row, down_badge, up_row, up_badge]);
    let red_rows = bands(&v, down_row);
    let green_rows = bands(&v, up_row);
    let reds = bands(&v, down_badge);
    let greens = bands(&v, up_badge);
    assert_eq!(red_rows.len(), 1, "expected one red row: {v}");
    assert_eq!(green_rows.len(), 2, "expected two green rows: {v}");
    let inside = |b: &(u64, u64, u64), row: &(u64, u64, u64)| b.0 >= row.0 && b.1 <= row.1;
    assert!(
        reds.iter().any(|b| inside(b, &red_rows[0]) && b.2 > 500),
        "no DOWN badge painted in the red row: {v}"
    );
    for r in &green_rows {
        assert!(
            greens.iter().any(|b| inside(b, r) && b.2 > 500),
            "no UP badge in {r:?}: {v}"
        );
    }
    assert!(
        reds.iter().any(|b| b.1 < green_rows[0].0 && b.2 > 1000),
        "no red banner above the table: {v}"
    );
    if let Ok(dest) = std::env::var("HSM_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, repo_root().join(dest)).unwrap();
    }
}

// ---------------------------------------------------------------- audit

/// rsyslogd in the foreground on a loopback TCP port, writing what it
/// receives in RFC 5424 form; killed by its PID when dropped.
struct Rsyslogd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Rsyslogd {
    fn start() -> Rsyslogd {
        let bin = tool("rsyslogd", "rsyslog");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let conf = format!(
            "global(workDirectory=\"{d}/work\" maxMessageSize=\"64k\")\n\
             module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             *.* action(type=\"omfile\" file=\"{d}/received.log\" template=\"RSYSLOG_SyslogProtocol23Format\")\n"
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let child = Command::new(&bin)
            .arg("-n")
            .arg("-f")
            .arg(dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut r = Rsyslogd { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", r.port)).is_err() {
            if let Some(st) = r.child.try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({st}): {}",
                    read(&r.dir.path().join("stderr"))
                );
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd not listening after 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn received(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("received.log")).unwrap_or_default()
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_of_requests_through_the_proxy_reach_rsyslogd_from_every_member() {
    let rs = Rsyslogd::start();
    // Three members forwarding their audit trail to rsyslogd over TCP, each
    // under its own APP-NAME, behind the proxy.
    let mut nodes = TestNode::group(3).await.unwrap();
    // Records written before forwarding was configured stay local only.
    let mut before = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.signal_and_wait("TERM", Duration::from_secs(20)).unwrap();
        before.push(read(&n.dir.join("audit/audit.log")).lines().count());
        let path = n.dir.join("node.json");
        let mut s: Value = serde_json::from_str(&read(&path)).unwrap();
        s["audit"]["syslog"] = serde_json::json!({
            "protocol": "tcp",
            "address": format!("127.0.0.1:{}", rs.port),
            "app_name": format!("hsm-member-m{i}"),
            "facility": "local4",
        });
        std::fs::write(&path, serde_json::to_string_pretty(&s).unwrap()).unwrap();
        n.run().await.unwrap();
    }
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();

    // Application requests through the proxy: a login, a key created (on one
    // member, cloned to the others), signs spread over the members, and a
    // wrong password.
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    co.create_key("audited", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    for _ in 0..30 {
        co.sign("audited", None, SignatureAlgorithm::Es256, &DIGEST)
            .await
            .unwrap();
    }
    let anon = Client::new(&ClientConfig::from_files(proxy.url.clone(), &proxy.ca, None).unwrap())
        .unwrap();
    assert!(anon.login(Role::CryptoUser, "wrong").await.is_err());

    // Every record each member wrote locally reaches rsyslogd, as an RFC
    // 5424 message with that member's APP-NAME (PRI local4 = 20 × 8 + severity).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kinds = BTreeSet::new();
    loop {
        let got = rs.received();
        let mut missing = Vec::new();
        kinds.clear();
        for (i, n) in nodes.iter().enumerate() {
            let local = read(&n.dir.join("audit/audit.log"));
            let app = format!(" hsm-member-m{i} ");
            for rec in local.lines().skip(before[i]) {
                let v: Value = serde_json::from_str(rec).unwrap();
                let kind = v["kind"].as_str().unwrap_or_default().to_string();
                match got.lines().find(|l| l.ends_with(rec)) {
                    Some(l) => {
                        let pri: u32 = l
                            .strip_prefix('<')
                            .and_then(|l| l.split('>').next())
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0);
                        assert!(
                            l.contains(&app)
                                && (160..168).contains(&pri)
                                && l[..12].contains(">1 "),
                            "member m{i}'s record arrived wrongly: {l}"
                        );
                        kinds.insert((i, kind, v["op"].as_str().unwrap_or_default().to_string()));
                    }
                    None => missing.push(format!("m{i}: {rec}")),
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records not at rsyslogd after 30 s:\n{}\nreceived:\n{got}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The application's requests are among them: its login, the key's
    // creation on one member and its arrival on the other two, signs, and the
    // refused login; every member contributed records of its own.
    let has = |k: &str, op: Option<&str>| {
        kinds
            .iter()
            .filter(|(_, kind, o)| kind == k && op.is_none_or(|op| op == o))
            .map(|(i, _, _)| *i)
            .collect::<BTreeSet<usize>>()
    };
    let summary = format!("{kinds:?}");
    assert!(
        !has("key.create", None).is_empty(),
        "no key.create: {summary}"
    );
    assert!(
        !has("key.use", Some("sign")).is_empty(),
        "no sign: {summary}"
    );
    let logins: BTreeSet<usize> = has("login", None);
    assert!(!logins.is_empty(), "no login: {summary}");
    let members: BTreeSet<usize> = kinds
        .iter()
        .filter(|(_, k, _)| k != "node.start")
        .map(|(i, _, _)| *i)
        .collect();
    assert_eq!(
        members.len(),
        3,
        "not every member forwarded request records: {summary}"
    );
    drop(proxy);
}

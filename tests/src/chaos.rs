//! The chaos suite's parts: the workload that keeps a group busy while
//! faults happen, the ledger of what the application was told, and the
//! invariants checked after every scenario.
//!
//! Decides what "nothing lost" means, checked against the members
//! themselves, not the proxy:
//! - every acknowledged key is on at least `min_replicas` members and,
//!   after resync, on every live member with the same digest;
//! - no deleted key comes back;
//! - no idempotent request failed while at least one member was healthy
//!   (the workload counts failures; a scenario says when all were down);
//! - every request ended within its total deadline (plus slack);
//! - the proxy's request metrics agree with what the client saw.
//!
//! The scenarios are in `tests/tests/chaos*.rs`; the seed-driven random
//! mode is [`random_run`] (short in CI, long from the `chaos` binary).

use crate::relay::{Fault, Relay};
use crate::{ProxyOptions, TestNode, TestProxy};
use anyhow::{bail, Context, Result};
use hsm_api::{Client, Curve, KeyCreateParameters, Role, SignatureAlgorithm};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the application was told: keys acknowledged (name → public key
/// coordinate), keys whose deletion was acknowledged, and names whose last
/// change failed, so that the application cannot know whether it happened
/// (a timeout, a 503): those must only converge.
#[derive(Debug, Default)]
pub struct Ledger {
    pub acked: BTreeMap<String, String>,
    pub deleted: BTreeSet<String>,
    pub uncertain: BTreeSet<String>,
}

/// What a workload saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub requests: u64,
    pub failures: u64,
    /// Requests that took longer than the deadline plus slack.
    pub late: u64,
    pub slowest: Duration,
    /// First few failure messages, for the report.
    pub errors: Vec<String>,
}

impl Tally {
    /// One request: how long it took against its limit, and its error.
    pub fn record(&mut self, took: Duration, limit: Duration, err: Option<String>) {
        self.requests += 1;
        self.slowest = self.slowest.max(took);
        if took > limit {
            self.late += 1;
        }
        if let Some(e) = err {
            self.failures += 1;
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }

    pub fn merge(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.failures += o.failures;
        self.late += o.late;
        self.slowest = self.slowest.max(o.slowest);
        for e in &o.errors {
            if self.errors.len() < 5 {
                self.errors.push(e.clone());
            }
        }
    }
}

/// Slack on top of a deadline for scheduling on a loaded 2-core machine.
pub const SLACK: Duration = Duration::from_millis(700);

/// Signs with `key` from `tasks` concurrent tasks until `stop` is set;
/// every request is bounded by `limit` (the proxy's total deadline).
pub fn sign_load(
    client: &Client,
    key: &str,
    tasks: usize,
    limit: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Tally> {
    let (client, key) = (client.clone(), key.to_string());
    tokio::spawn(async move {
        let mut joins = Vec::new();
        for _ in 0..tasks {
            let (c, k, stop) = (client.clone(), key.clone(), stop.clone());
            joins.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = c
                        .sign(&k, None, SignatureAlgorithm::Es256, &[5u8; 32])
                        .await;
                    t.record(
                        started.elapsed(),
                        limit + SLACK,
                        r.err().map(|e| e.to_string()),
                    );
                    // A bounded rate: about 100/s per task at most.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                t
            }));
        }
        let mut all = Tally::default();
        for j in joins {
            if let Ok(t) = j.await {
                all.merge(&t);
            }
        }
        all
    })
}

/// Creates `name` through `c` and records it in the ledger when acknowledged.
pub async fn create(c: &Client, ledger: &Mutex<Ledger>, name: &str) -> Result<()> {
    let r = c
        .create_key(name, &KeyCreateParameters::ec(Curve::P256))
        .await;
    let Ok(mut l) = ledger.lock() else {
        bail!("ledger poisoned")
    };
    l.deleted.remove(name);
    match r {
        Ok(b) => {
            l.uncertain.remove(name);
            l.acked
                .insert(name.to_string(), public_of(&serde_json::to_value(&b.key)?));
            Ok(())
        }
        Err(e) => {
            l.acked.remove(name);
            l.uncertain.insert(name.to_string());
            Err(e.into())
        }
    }
}

/// Deletes `name` through `c` and records it when acknowledged.
pub async fn delete(c: &Client, ledger: &Mutex<Ledger>, name: &str) -> Result<()> {
    let r = c.delete_key(name).await;
    let Ok(mut l) = ledger.lock() else {
        bail!("ledger poisoned")
    };
    l.acked.remove(name);
    match r {
        Ok(_) => {
            l.uncertain.remove(name);
            l.deleted.insert(name.to_string());
            Ok(())
        }
        Err(e) => {
            l.uncertain.insert(name.to_string());
            Err(e.into())
        }
    }
}

fn public_of(jwk: &serde_json::Value) -> String {
    ["x", "n", "k"]
        .iter()
        .find_map(|f| jwk.get(f).and_then(|v| v.as_str()))
        .unwrap_or_default()
        .to_string()
}

/// Every inventory entry of a member, by name.
pub async fn entries(c: &Client) -> Result<BTreeMap<String, hsm_api::InventoryItem>> {
    let mut out = BTreeMap::new();
    for b in c.inventory_buckets().await?.buckets {
        for e in c.inventory_bucket(b.bucket).await? {
            out.insert(e.name.clone(), e);
        }
    }
    Ok(out)
}

/// Replication-role clients of the given members.
pub async fn replicators(nodes: &[&TestNode]) -> Result<Vec<Client>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.login(Role::Replication).await?);
    }
    Ok(out)
}

/// Asks the proxy for a resync round until every member given holds the
/// same inventory, within `within`.
pub async fn settle(proxy: &TestProxy, nodes: &[&TestNode], within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let clients = replicators(nodes).await?;
    loop {
        let _ = proxy.admin("resync");
        let mut sums = BTreeSet::new();
        for c in &clients {
            sums.insert(c.inventory().await?.summary);
        }
        if sums.len() == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "members still differ after {within:?}: {} distinct inventories",
                sums.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What the invariant check found.
#[derive(Debug, Default, Clone)]
pub struct Check {
    pub keys_checked: usize,
    pub keys_lost: usize,
    pub deleted_back: usize,
    pub under_replicated: usize,
    pub problems: Vec<String>,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.keys_lost == 0 && self.deleted_back == 0 && self.under_replicated == 0
    }
}

/// Before resync: every acknowledged key is on at least `min_replicas`
/// of `nodes` (all members, the ones that were down included).
pub async fn check_replicas(
    nodes: &[&TestNode],
    ledger: &Ledger,
    min_replicas: usize,
) -> Result<Check> {
    let mut check = Check::default();
    let mut per_member = Vec::new();
    for c in replicators(nodes).await? {
        per_member.push(entries(&c).await?);
    }
    for name in ledger.acked.keys() {
        let holders = per_member
            .iter()
            .filter(|m| m.get(name).is_some_and(|e| !e.tombstone && !e.deleted))
            .count();
        if holders < min_replicas.min(nodes.len()) {
            check.under_replicated += 1;
            check
                .problems
                .push(format!("{name}: on {holders} member(s)"));
        }
    }
    Ok(check)
}

/// After resync: every acknowledged key on every live member, the same
/// digest everywhere and the same public key as acknowledged; no deleted
/// key live anywhere.
pub async fn check_settled(nodes: &[&TestNode], ledger: &Ledger) -> Result<Check> {
    let mut check = Check::default();
    let clients = replicators(nodes).await?;
    let mut per_member = Vec::new();
    for c in &clients {
        per_member.push(entries(c).await?);
    }
    let officer = nodes.first().context("no nodes")?.officer().await?;
    for (name, x) in &ledger.acked {
        check.keys_checked += 1;
        let digests: BTreeSet<Option<&String>> = per_member
            .iter()
            .map(|m| {
                m.get(name)
                    .filter(|e| !e.tombstone && !e.deleted)
                    .map(|e| &e.digest)
            })
            .collect();
        if digests.len() != 1 || digests.contains(&None) {
            let states: Vec<&str> = per_member
                .iter()
                .map(|m| match m.get(name) {
                    None => "absent",
                    Some(e) if e.tombstone => "tombstone",
                    Some(e) if e.deleted => "deleted",
                    Some(_) => "live",
                })
                .collect();
            check.keys_lost += 1;
            check.problems.push(format!(
                "{name}: {states:?} on the members, digests {digests:?}"
            ));
            continue;
        }
        match officer.get_key(name, None).await {
            Ok(b) => {
                if &public_of(&serde_json::to_value(&b.key)?) != x {
                    check.keys_lost += 1;
                    check
                        .problems
                        .push(format!("{name}: another key than acknowledged"));
                }
            }
            Err(e) => {
                check.keys_lost += 1;
                check.problems.push(format!("{name}: {e}"));
            }
        }
    }
    for name in &ledger.deleted {
        let back = per_member
            .iter()
            .any(|m| m.get(name).is_some_and(|e| !e.tombstone && !e.deleted));
        if back {
            check.deleted_back += 1;
            check
                .problems
                .push(format!("{name}: deleted, but live again"));
        }
    }
    Ok(check)
}

/// `hsm_proxy_requests_total{op=…}` summed by outcome ok / not ok.
pub fn proxy_requests(proxy: &TestProxy, op: &str) -> Result<(f64, f64)> {
    let text = proxy.metrics_text()?;
    let (mut ok, mut bad) = (0.0, 0.0);
    let prefix = "hsm_proxy_requests_total{";
    for line in text.lines().filter(|l| l.starts_with(prefix)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !labels.contains(&format!("op=\"{op}\"")) {
            continue;
        }
        let v: f64 = value.parse().unwrap_or(0.0);
        if labels.contains("outcome=\"ok\"") {
            ok += v;
        } else {
            bad += v;
        }
    }
    Ok((ok, bad))
}

/// One scenario's line in the report.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub scenario: String,
    pub faults: u64,
    pub requests: u64,
    pub failures: u64,
    pub late: u64,
    pub slowest: Duration,
    pub keys: usize,
    pub keys_lost: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chaos summary: scenario={} faults={} requests={} failures={} late={} slowest_ms={} keys={} keys_lost={}",
            self.scenario,
            self.faults,
            self.requests,
            self.failures,
            self.late,
            self.slowest.as_millis(),
            self.keys,
            self.keys_lost
        )
    }
}

/// Asserts the invariants after a scenario and prints its summary line.
/// `nodes` are the live members at the end.
pub async fn finish(
    scenario: &str,
    proxy: &TestProxy,
    nodes: &[&TestNode],
    ledger: &Ledger,
    min_replicas: usize,
    tally: &Tally,
    faults: u64,
) -> Result<Summary> {
    let replicas = check_replicas(nodes, ledger, min_replicas).await?;
    settle(proxy, nodes, Duration::from_secs(30)).await?;
    let settled = check_settled(nodes, ledger).await?;
    let s = Summary {
        scenario: scenario.to_string(),
        faults,
        requests: tally.requests,
        failures: tally.failures,
        late: tally.late,
        slowest: tally.slowest,
        keys: settled.keys_checked,
        keys_lost: settled.keys_lost + settled.deleted_back,
    };
    println!("{s}");
    if !replicas.ok() || !settled.ok() || tally.failures > 0 || tally.late > 0 {
        let log = proxy.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        eprintln!(
            "proxy log, warnings (last 40):\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
        // HSM_CHAOS_DUMP=DIR keeps every full log of a failed scenario.
        if let Ok(dir) = std::env::var("HSM_CHAOS_DUMP") {
            let dir = std::path::Path::new(&dir).join(scenario);
            if std::fs::create_dir_all(&dir).is_ok() {
                let _ = std::fs::write(dir.join("proxy.log"), &log);
                for (i, n) in nodes.iter().enumerate() {
                    let _ = std::fs::write(dir.join(format!("member{i}.log")), n.log());
                }
                eprintln!("full logs in {}", dir.display());
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "member {i} log (last 25 lines):\n{}",
                lines[lines.len().saturating_sub(25)..].join("\n")
            );
        }
    }
    if !replicas.ok() || !settled.ok() {
        bail!(
            "{scenario}: invariants broken: {:?} {:?}",
            replicas.problems,
            settled.problems
        );
    }
    if tally.failures > 0 {
        bail!(
            "{scenario}: {} request(s) failed: {:?}",
            tally.failures,
            tally.errors
        );
    }
    if tally.late > 0 {
        bail!(
            "{scenario}: {} request(s) outlived the deadline (slowest {:?})",
            tally.late,
            tally.slowest
        );
    }
    Ok(s)
}

/// Proxy options of the chaos scenarios: short deadlines, quick checks,
/// ejections of at most 8 s (a member faulted again and again is ejected
/// for longer each time: the default cap of 2 min would outlast a run).
pub fn options() -> ProxyOptions {
    ProxyOptions {
        attempt_timeout: "800ms",
        total_timeout: "3s",
        health_interval: "200ms",
        ejection_max: Some("8s"),
        ..Default::default()
    }
}

/// Longest wait for a healed member to be up again: the ejection cap of
/// [`options`] and a catch-up round, with room for a loaded machine.
pub const HEAL: Duration = Duration::from_secs(40);

/// The total deadline of [`options`].
pub const TOTAL: Duration = Duration::from_secs(3);

/// A seed-driven random run: `members` members behind relays, a signing
/// load, and for `seconds` a random schedule of operations (create,
/// delete) and faults on one member at a time (SIGKILL and restart,
/// SIGSTOP and SIGCONT, each relay fault). Reproducible from the seed,
/// which is printed first.
pub async fn random_run(seed: u64, seconds: u64) -> Result<Summary> {
    println!(
        "chaos random run: seed={seed} seconds={seconds} (HSM_CHAOS_SEED={seed} reproduces it)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut nodes = TestNode::group(3).await?;
    let mut relays = Vec::new();
    for n in &nodes {
        relays.push(Relay::start(&n.addr).await?);
    }
    let opts = ProxyOptions {
        via: relays.iter().map(|r| Some(r.addr())).collect(),
        ..options()
    };
    let proxy = TestProxy::start(&nodes, opts).await?;
    let co = proxy.login(Role::CryptoOfficer).await?;
    let ledger = Mutex::new(Ledger::default());
    create(&co, &ledger, "hot").await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = sign_load(&co, "hot", 2, TOTAL, stop.clone());
    let mut ops = Tally::default();
    let mut faults = 0u64;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut next_key = 0u32;
    // The member currently faulted, and how.
    let mut faulted: Option<(usize, &'static str)> = None;
    while Instant::now() < until {
        match rng.gen_range(0..10) {
            0..=4 => {
                let name = format!("r{next_key}");
                next_key += 1;
                let started = Instant::now();
                let r = create(&co, &ledger, &name).await;
                ops.record(
                    started.elapsed(),
                    TOTAL + SLACK,
                    r.err().map(|e| format!("create {name}: {e}")),
                );
            }
            5 => {
                let victim = ledger.lock().ok().and_then(|l| {
                    let names: Vec<&String> = l.acked.keys().filter(|n| *n != "hot").collect();
                    (!names.is_empty()).then(|| names[rng.gen_range(0..names.len())].clone())
                });
                if let Some(name) = victim {
                    let started = Instant::now();
                    let r = delete(&co, &ledger, &name).await;
                    ops.record(
                        started.elapsed(),
                        TOTAL + SLACK,
                        r.err().map(|e| format!("delete {name}: {e}")),
                    );
                }
            }
            _ => {
                // Heal the current fault, or inject a new one.
                if let Some((i, how)) = faulted.take() {
                    match how {
                        "kill" => nodes[i].run().await?,
                        "stop" => nodes[i].signal("CONT")?,
                        _ => relays[i].set(Fault::Pass),
                    }
                    proxy.wait_state(&format!("m{i}"), "up", HEAL).await?;
                } else {
                    let i = rng.gen_range(0..nodes.len());
                    let how = match rng.gen_range(0..7) {
                        0 => {
                            nodes[i].kill();
                            "kill"
                        }
                        1 => {
                            nodes[i].signal("STOP")?;
                            "stop"
                        }
                        2 => {
                            relays[i].set(Fault::Delay {
                                base: Duration::from_millis(rng.gen_range(5..80)),
                                jitter: Duration::from_millis(20),
                            });
                            "delay"
                        }
                        3 => {
                            relays[i].set(Fault::Blackhole);
                            "blackhole"
                        }
                        4 => {
                            relays[i].set(Fault::Reset);
                            "reset"
                        }
                        5 => {
                            relays[i].set(Fault::Drip {
                                every: Duration::from_millis(2),
                            });
                            "drip"
                        }
                        _ => {
                            relays[i].set(Fault::HalfOpen);
                            "half-open"
                        }
                    };
                    faults += 1;
                    faulted = Some((i, how));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
    }
    if let Some((i, how)) = faulted.take() {
        match how {
            "kill" => nodes[i].run().await?,
            "stop" => nodes[i].signal("CONT")?,
            _ => relays[i].set(Fault::Pass),
        }
    }
    proxy
        .wait_healthy(nodes.len(), Duration::from_secs(30))
        .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut tally = load.await.context("load task")?;
    let (ok, bad) = proxy_requests(&proxy, "sign")?;
    if (ok + bad) as u64 != tally.requests || ok as u64 != tally.requests - tally.failures {
        bail!(
            "the proxy counted {ok} ok + {bad} failed signs; the client saw {} with {} failures",
            tally.requests,
            tally.failures
        );
    }
    // Key changes may be refused while fewer than min_replicas members can
    // take them (one member faulted while another is still ejected from an
    // earlier fault): their outcome is unknown to the application, the
    // ledger counts them uncertain, and only convergence is checked for
    // those names. Signs must never fail.
    println!(
        "chaos random run: {} key change(s), {} refused: {:?}",
        ops.requests, ops.failures, ops.errors
    );
    tally.requests += ops.requests;
    tally.late += ops.late;
    tally.slowest = tally.slowest.max(ops.slowest);
    let ledger = ledger
        .into_inner()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    let live: Vec<&TestNode> = nodes.iter().collect();
    finish(
        &format!("random(seed={seed})"),
        &proxy,
        &live,
        &ledger,
        2,
        &tally,
        faults,
    )
    .await
}

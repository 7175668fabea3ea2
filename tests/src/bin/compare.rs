//! Side by side on the same members, in one run: straight to one member,
//! through `hsm-proxy`, and through HAProxy 2.6 configured for the job
//! (`hsm_tests::haproxy`), each loaded by `hsm-bench`'s closed loop.
//!
//! A group of `--members` real `hsm-node` processes (one PKI, one cloning
//! domain). The keys are created through `hsm-proxy`, which replicates them,
//! so every member holds the same keys. Each side logs in as crypto user on
//! `--connections` connections (HAProxy pins each session to the member
//! that issued it, so it spreads load only over several sessions); the
//! workers share them. For every workload the three sides run one after the
//! other, in an order that rotates every round; the tables give medians
//! over rounds and the ratios of the same round.
//!
//! ```text
//! cargo build --release -p hsm-node -p hsm-proxy -p hsm-tests
//! target/release/compare --seconds 5 --rounds 3 --json compare.json
//! ```
//!
//! `--only sidecars` runs issue 16's benchmark alone: a member's catch-up
//! with 1, 5 and 20 sidecars running, and key creation through one
//! sidecar against five (see `sidecars` below and docs/BENCHMARKS.md).
//!
//! `--only tokens` runs issue 18's benchmark: ES256 through one SoftHSM2
//! token member, through hsm-proxy and through HAProxy over 3 token
//! members, against SoftHSM2's own in-process `C_Sign` rate (CKM_ECDSA over
//! a 32-byte digest, `p11bench` in a child process on a fresh token of its
//! own) from as many threads as the HTTP sides have workers, the four
//! taking turns in every round (see `tokens` below and docs/BENCHMARKS.md).
//! SoftHSM2 (`/usr/lib/softhsm/libsofthsm2.so`) and `pkcs11-tool` must be
//! installed (`.ci/run` installs them).
//!
//! HAProxy must be installed (`apt-get install haproxy`; `.ci/run` does).
//! Every loop ends by time; all traffic is on loopback.
#![forbid(unsafe_code)]

// Each benchmark binary uses a part of the shared module.
#[allow(dead_code)]
#[path = "../bench.rs"]
mod bench;

use anyhow::{bail, Context, Result};
use clap::Parser;
use hsm_api::{Client, Role};
use hsm_bench::load::{self, Mode, Plan};
use hsm_bench::report;
use hsm_bench::workload::{Mix, Payload};
use hsm_tests::haproxy::Haproxy;
use hsm_tests::{ProxyOptions, TestNode, TestProxy, CU_PASSWORD};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    about = "hsm-proxy against direct access, HAProxy and the in-process ceiling: throughput, failover, scale and resync, in one run"
)]
struct Args {
    /// Run only these sections (repeatable); all of them by default:
    /// throughput, failover, scale, resync, sidecars, tokens.
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// The short mode: 2 s windows, one round, 5 s after each fault, 16
    /// members, resync of 20,000 keys, sidecar catch-ups over 5,000 keys:
    /// a few minutes in all.
    #[arg(long)]
    short: bool,
    /// Write the report (`REPORT.md`), every window as JSON and the charts
    /// (SVG) into this directory.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Measured seconds per window [default: 5, short: 2].
    #[arg(long)]
    seconds: Option<f64>,
    /// Unmeasured warm-up seconds before each window [default: 0.5, short: 0.3].
    #[arg(long)]
    warmup: Option<f64>,
    /// Rounds of the throughput and tokens sections, and of the sidecars
    /// section's catch-ups (per sidecar count) and key-creation windows;
    /// medians are over rounds [default: 3, short: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Members of the group in the throughput and failover sections.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Closed-loop workers per window; in the tokens section also the
    /// threads of SoftHSM2's in-process `C_Sign` (at most 512).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Client connections (and sessions) per side.
    #[arg(long, default_value_t = 3)]
    connections: usize,
    /// Workloads, `;`-separated mixes (see `hsm-bench --workload`).
    #[arg(long, default_value = "es256;rs256;a256gcm;es256=5,rs256=1,a256gcm=4")]
    workloads: String,
    /// Failover: seconds measured from the fault [default: 10, short: 5].
    #[arg(long)]
    after: Option<f64>,
    /// Scale: the large group's members (the small one has 3).
    #[arg(long, default_value_t = 16)]
    scale_members: usize,
    /// Resync: keys on the complete member [default: 200000, short: 20000].
    #[arg(long)]
    resync_keys: Option<usize>,
    /// Sidecars: keys preloaded on the 3 members before the returning
    /// member misses 1 % of that many [default: 20000, short: 5000].
    #[arg(long)]
    sidecar_keys: Option<usize>,
    /// Sidecars: how many sidecars run during each catch-up, comma
    /// separated; the ratios are against the first.
    #[arg(long, value_delimiter = ',', default_value = "1,5,20")]
    sidecar_counts: Vec<usize>,
    /// Sidecars: the quiet seconds before the fault that measure what the
    /// idle sidecars cost the members (health checks, periodic resync
    /// rounds: every 2 s in the test configuration).
    #[arg(long, default_value_t = 4.0)]
    quiet: f64,
    /// Sidecars: concurrent key creators in all, for one sidecar and for
    /// the same load spread over `--spread-sidecars`.
    #[arg(long, default_value_t = 16)]
    sidecar_concurrency: usize,
    /// Sidecars: how many sidecars the key creation load is spread over
    /// (also the number of client sessions on either side).
    #[arg(long, default_value_t = 5)]
    spread_sidecars: usize,
}

/// The report's sections, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Throughput,
    Failover,
    Scale,
    Resync,
    /// Issue 16: catch-up cost and key creation with 1, 5 and 20 sidecars.
    Sidecars,
    /// Issue 18: ES256 on SoftHSM2 token members against SoftHSM2's own
    /// in-process `C_Sign`, direct, through hsm-proxy and through HAProxy.
    Tokens,
}

/// The settings after `--short` and the defaults are applied.
struct Settings {
    seconds: f64,
    warmup: f64,
    rounds: usize,
    after: f64,
    resync_keys: usize,
    sidecar_keys: usize,
    quiet: f64,
}

impl Args {
    fn settings(&self) -> Settings {
        let pick = |v: Option<f64>, full: f64, short: f64| {
            v.unwrap_or(if self.short { short } else { full })
        };
        Settings {
            seconds: pick(self.seconds, 5.0, 2.0),
            warmup: pick(self.warmup, 0.5, 0.3),
            rounds: self.rounds.unwrap_or(if self.short { 1 } else { 3 }),
            after: pick(self.after, 10.0, 5.0),
            resync_keys: self
                .resync_keys
                .unwrap_or(if self.short { 20_000 } else { 200_000 }),
            sidecar_keys: self
                .sidecar_keys
                .unwrap_or(if self.short { 5_000 } else { 20_000 }),
            quiet: self.quiet,
        }
    }

    fn wants(&self, s: Section) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

/// One section of the report: its markdown, the JSON of its windows and
/// its charts (file name, SVG).
#[derive(Default)]
struct Part {
    markdown: String,
    json: Vec<serde_json::Value>,
    charts: Vec<(String, String)>,
}

/// The sides of the throughput section, in table order. `in-process` is
/// the raw ceiling: the same operations done by aws-lc-rs inside this
/// process (`hsm_bench::ceiling`).
const SIDES: [&str; 4] = ["direct", "hsm-proxy", "haproxy", "in-process"];

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let st = a.settings();
    bench::check_timing(st.seconds, st.warmup, st.rounds)?;
    if a.members < 2 || a.connections == 0 || a.concurrency == 0 {
        bail!("--members must be at least 2, --connections and --concurrency at least 1");
    }
    if !(0.5..=120.0).contains(&st.after) {
        bail!("--after must be in [0.5, 120] seconds");
    }
    if !(3..=16).contains(&a.scale_members) {
        bail!("--scale-members must be from 3 to 16");
    }
    if !(1000..=1_000_000).contains(&st.resync_keys) {
        bail!("--resync-keys must be from 1000 to 1000000");
    }
    if !(100..=1_000_000).contains(&st.sidecar_keys) {
        bail!("--sidecar-keys must be from 100 to 1000000");
    }
    if a.sidecar_counts.is_empty() || a.sidecar_counts.iter().any(|n| !(1..=64).contains(n)) {
        bail!("--sidecar-counts must list counts from 1 to 64");
    }
    if !(2..=64).contains(&a.spread_sidecars) || a.sidecar_concurrency == 0 {
        bail!("--spread-sidecars must be from 2 to 64, --sidecar-concurrency at least 1");
    }
    if !(1.0..=60.0).contains(&st.quiet) {
        bail!("--quiet must be in [1, 60] seconds");
    }
    let mixes: Vec<Mix> = a
        .workloads
        .split(';')
        .map(|w| Mix::parse(w).map_err(|e| anyhow::anyhow!("--workloads `{w}`: {e}")))
        .collect::<Result<_>>()?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)?;
    }
    let started = std::time::Instant::now();
    let mut report = format!(
        "# hsm-ha benchmarks\n\nMachine: {}; {} build; {}.\nCommand: `compare {}`.\n\n",
        bench::machine(),
        bench::profile(),
        bench::source_state(),
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let mut json = serde_json::Map::new();
    for (section, title) in [
        (Section::Throughput, "Throughput, side by side"),
        (Section::Failover, "Failover under load"),
        (Section::Scale, "Scale: 3 against 16 members"),
        (Section::Resync, "Resync of a member that missed keys"),
        (
            Section::Sidecars,
            "Sidecars: catch-up cost and key creation with several sidecars",
        ),
        (
            Section::Tokens,
            "Token members: ES256 on SoftHSM2 against its own in-process C_Sign",
        ),
    ] {
        if !a.wants(section) {
            continue;
        }
        eprintln!("compare: section {title}");
        let part = match section {
            Section::Throughput => throughput(&a, &st, &mixes).await?,
            Section::Failover => failover(&a, &st).await?,
            Section::Scale => scale(&a, &st).await?,
            Section::Resync => resync(&st).await?,
            Section::Sidecars => sidecars(&a, &st).await?,
            Section::Tokens => tokens(&a, &st).await?,
        };
        report.push_str(&format!("## {title}\n\n{}\n", part.markdown));
        for (file, svg) in &part.charts {
            report.push_str(&format!("![{title}]({file})\n\n"));
            if let Some(dir) = &a.out {
                std::fs::write(dir.join(file), svg)?;
            }
        }
        json.insert(format!("{section:?}").to_lowercase(), part.json.into());
    }
    report.push_str(&format!(
        "All sections took {:.0} s.\n",
        started.elapsed().as_secs_f64()
    ));
    println!("{report}");
    if let Some(dir) = &a.out {
        std::fs::write(dir.join("REPORT.md"), &report)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(&json)? + "\n",
        )?;
        eprintln!("compare: report in {}", dir.join("REPORT.md").display());
    }
    Ok(())
}

/// Direct to one member, through hsm-proxy, through HAProxy and in
/// process, for every workload; the sides take turns within each round.
async fn throughput(a: &Args, st: &Settings, mixes: &[Mix]) -> Result<Part> {
    eprintln!(
        "compare: starting {} members, hsm-proxy and HAProxy",
        a.members
    );
    let nodes = TestNode::group(a.members).await?;
    let proxy = TestProxy::start(&nodes, ProxyOptions::default()).await?;
    let co = proxy.login(Role::CryptoOfficer).await?;
    for mix in mixes {
        for op in mix.ops() {
            op.ensure_key(&co).await?;
        }
    }
    // Every member holds the keys before HAProxy (which does not copy) uses them.
    let mut keys: Vec<&str> = mixes
        .iter()
        .flat_map(|m| m.ops())
        .map(|o| o.key_name())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    hsm_tests::held_by_every_member(&nodes, &keys, Duration::from_secs(10)).await?;
    let ha = Haproxy::start(&nodes).await?;
    let sides = http_sides(&nodes, &proxy, &ha, a.connections).await?;
    let payload = Payload::new();
    let ceiling = hsm_bench::ceiling::Ceiling::new(&payload)?;
    let mut part = Part::default();
    // (workload, side) -> per-round results
    let mut got: BTreeMap<(usize, usize), Vec<report::Result>> = BTreeMap::new();
    for round in 0..st.rounds {
        for (w, mix) in mixes.iter().enumerate() {
            for k in 0..SIDES.len() {
                let s = (k + round) % SIDES.len();
                let p = payload.clone();
                let plan = closed_plan(a, st);
                let out = if let Some(clients) = sides.get(s).cloned() {
                    http_window(clients, mix, &p, plan, &[]).await.0
                } else {
                    // The ceiling: done on the worker's own thread.
                    let c = ceiling.clone();
                    let send = move |op: hsm_bench::workload::Op, _worker: usize| {
                        let r = c.run(op, &p).map_err(|e| e.to_string());
                        async move { r }
                    };
                    load::run(plan, mix, send, |_| {}).await
                };
                let r = report::Result::new(
                    SIDES[s],
                    &mix.describe(),
                    plan.mode,
                    a.connections,
                    st.warmup,
                    &out,
                );
                eprintln!(
                    "compare: round {} {:<28} {:<10} {:>9.0} ops/s  p99 {:>6} µs  errors {}",
                    round + 1,
                    mix.describe(),
                    SIDES[s],
                    r.ops_per_sec,
                    r.latency_us.as_ref().map(|q| q.p99).unwrap_or(0),
                    r.errors
                );
                let mut v = serde_json::to_value(&r)?;
                v["round"] = serde_json::json!(round + 1);
                part.json.push(v);
                got.entry((w, s)).or_default().push(r);
            }
        }
    }
    part.markdown = table(mixes, &got, a, st);
    // The ceiling is orders of magnitude above the rest (it is in the
    // table): the chart shows each proxy's share of direct access.
    let chart = hsm_bench::chart::Bars {
        title: "Throughput through each proxy, as a share of direct access",
        y_label: "ops/s through the proxy / ops/s direct",
        groups: mixes.iter().map(Mix::describe).collect(),
        series: [1usize, 2]
            .iter()
            .map(|&s| {
                let v = (0..mixes.len())
                    .map(|w| same_round_ratio(&got, w, s, 0))
                    .collect();
                (SIDES[s].to_string(), v)
            })
            .collect(),
    };
    part.charts.push(("throughput.svg".into(), chart.svg()?));
    drop(ha);
    Ok(part)
}

/// The clients of the three HTTP sides, in [`SIDES`] order: each side
/// logs in as crypto user on `connections` connections — straight to the
/// first member, through hsm-proxy, and through HAProxy.
async fn http_sides(
    nodes: &[TestNode],
    proxy: &TestProxy,
    ha: &Haproxy,
    connections: usize,
) -> Result<Vec<Arc<Vec<Client>>>> {
    let mut sides = Vec::new();
    for side in &SIDES[..3] {
        let mut clients = Vec::new();
        for _ in 0..connections {
            let c = match *side {
                "direct" => nodes[0].login(Role::CryptoUser).await?,
                "hsm-proxy" => proxy.login(Role::CryptoUser).await?,
                _ => {
                    let c = ha.client(&nodes[0].pki)?;
                    c.login(Role::CryptoUser, CU_PASSWORD).await?;
                    c
                }
            };
            clients.push(c);
        }
        sides.push(Arc::new(clients));
    }
    Ok(sides)
}

/// The closed loop of the throughput sections: `--concurrency` workers,
/// `--warmup`, then the measured `--seconds`.
fn closed_plan(a: &Args, st: &Settings) -> Plan {
    Plan {
        mode: Mode::Closed {
            concurrency: a.concurrency,
        },
        warmup: Duration::from_secs_f64(st.warmup),
        duration: Duration::from_secs_f64(st.seconds),
    }
}

/// One window of `mix` over `clients` (the workers share them round
/// robin), and the CPU across its measured seconds: of `pids`, in their
/// order, of this process (the load) and of the rest of the machine.
async fn http_window(
    clients: Arc<Vec<Client>>,
    mix: &Mix,
    payload: &Payload,
    plan: Plan,
    pids: &[u32],
) -> (load::Outcome, bench::CpuUse) {
    let p = payload.clone();
    let send = move |op: hsm_bench::workload::Op, worker: usize| {
        let c = clients[worker % clients.len()].clone();
        let p = p.clone();
        async move { op.send(&c, &p).await.map_err(|e| short(&e)) }
    };
    let hz = bench::clock_ticks_per_sec();
    tokio::join!(load::run(plan, mix, send, |_| {}), async {
        tokio::time::sleep(plan.warmup).await;
        let a = bench::sample(pids);
        tokio::time::sleep(plan.duration).await;
        bench::cpu_between(&a, &bench::sample(pids), hz)
    })
}

/// A fault on one member.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Stop,
    Delay,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Stop => "SIGSTOP",
            Fault::Delay => "+200 ms each way",
        }
    }
}

/// The failover scenarios: a fresh group per fault and side, every member
/// behind a relay (so that a delay can be added), ES256 under the closed
/// loop; the fault hits the member that has served the most when the
/// warm-up ends (through HAProxy, one holding sessions), and the window
/// measures `--after` seconds from it. Clients log in again by themselves
/// on a 401 (`Client::relogin_as`), as the Key Vault SDKs answer a
/// challenge, so that a session lost with a member costs one failed
/// request, not every later one.
async fn failover(a: &Args, st: &Settings) -> Result<Part> {
    use hsm_tests::relay::{Fault as RelayFault, Relay};
    let mix = Mix::parse("es256")?;
    let mut t = format!(
        "ES256, closed loop, {} workers, {} connection(s); the fault hits the busiest of {} members after {} s; measured for {} s from the fault.\n\n\
         | fault | side | ok | failed | outlasted the window | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        a.concurrency, a.connections, a.members, st.warmup.max(2.0), st.after
    );
    let mut part = Part::default();
    // (fault, side) -> worst latency in ms
    let mut worst: Vec<(Fault, &str, f64)> = Vec::new();
    for fault in [Fault::Kill, Fault::Stop, Fault::Delay] {
        for side in ["hsm-proxy", "haproxy"] {
            let mut nodes = TestNode::group(a.members.max(2)).await?;
            let mut relays = Vec::new();
            for n in &nodes {
                relays.push(Relay::start(&n.addr).await?);
            }
            let via: Vec<Option<String>> = relays.iter().map(|r| Some(r.addr())).collect();
            let proxy = TestProxy::start(
                &nodes,
                ProxyOptions {
                    via: via.clone(),
                    ..ProxyOptions::default()
                },
            )
            .await?;
            let co = proxy.login(Role::CryptoOfficer).await?;
            let op = hsm_bench::workload::Op::Es256;
            op.ensure_key(&co).await?;
            hsm_tests::held_by_every_member(&nodes, &[op.key_name()], Duration::from_secs(10))
                .await?;
            let ha = if side == "haproxy" {
                Some(Haproxy::start_via(&nodes, &via).await?)
            } else {
                None
            };
            let mut clients = Vec::new();
            for _ in 0..a.connections {
                let c = match &ha {
                    None => proxy.login(Role::CryptoUser).await?,
                    Some(h) => {
                        let c = h.client(&nodes[0].pki)?;
                        c.login(Role::CryptoUser, CU_PASSWORD).await?;
                        c
                    }
                };
                clients.push(c.relogin_as(Role::CryptoUser, CU_PASSWORD));
            }
            let clients = Arc::new(clients);
            let p = Payload::new();
            let send = move |op: hsm_bench::workload::Op, worker: usize| {
                let c = clients[worker % clients.len()].clone();
                let p = p.clone();
                async move { op.send(&c, &p).await.map_err(|e| short(&e)) }
            };
            let warmup = Duration::from_secs_f64(st.warmup.max(2.0));
            let plan = Plan {
                mode: Mode::Closed {
                    concurrency: a.concurrency,
                },
                warmup,
                duration: Duration::from_secs_f64(st.after),
            };
            let nodes_ref = &mut nodes;
            let relays_ref = &relays;
            let (out, hit) = tokio::join!(load::run(plan, &mix, send, |_| {}), async {
                tokio::time::sleep(warmup).await;
                // The member serving the most: with HAProxy, one that holds
                // sessions (a member holding none would be no test).
                let mut busiest = (0, -1.0);
                for (i, n) in nodes_ref.iter().enumerate() {
                    let signs = n.signs_ok().await.unwrap_or(0.0);
                    if signs > busiest.1 {
                        busiest = (i, signs);
                    }
                }
                let i = busiest.0;
                eprintln!(
                    "compare: {} on m{i} (it answered {} signatures so far)",
                    fault.name(),
                    busiest.1
                );
                match fault {
                    Fault::Kill => {
                        nodes_ref[i].kill();
                        Ok(i)
                    }
                    Fault::Stop => nodes_ref[i].signal("STOP").map(|_| i),
                    Fault::Delay => {
                        relays_ref[i].set(RelayFault::Delay {
                            base: Duration::from_millis(200),
                            jitter: Duration::ZERO,
                        });
                        Ok(i)
                    }
                }
            });
            let hit = hit?;
            if matches!(fault, Fault::Stop) {
                let _ = nodes[hit].signal("CONT");
            }
            let r = report::Result::new(side, "es256", plan.mode, a.connections, st.warmup, &out);
            let q = r.latency_us.clone();
            let ms = |f: fn(&report::Quantiles) -> u64| {
                q.as_ref().map(|x| f(x) as f64 / 1000.0).unwrap_or(0.0)
            };
            let kinds: Vec<String> = r
                .error_kinds
                .iter()
                .map(|(k, n)| format!("{n} × {k}"))
                .collect();
            eprintln!(
                "compare: {} {side}: {} ok, {} failed, p99 {:.1} ms, max {:.1} ms",
                fault.name(),
                r.ok,
                r.errors,
                ms(|x| x.p99),
                ms(|x| x.max)
            );
            t.push_str(&format!(
                "| {} | {side} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
                fault.name(),
                r.ok,
                r.errors,
                r.outlasted,
                ms(|x| x.p50),
                ms(|x| x.p99),
                ms(|x| x.p999),
                ms(|x| x.max),
                if kinds.is_empty() {
                    "-".to_string()
                } else {
                    kinds.join(", ")
                }
            ));
            let mut v = serde_json::to_value(&r)?;
            v["fault"] = serde_json::json!(fault.name());
            part.json.push(v);
            worst.push((fault, side, ms(|x| x.max)));
            drop(ha);
        }
    }
    let faults = [Fault::Kill, Fault::Stop, Fault::Delay];
    let chart = hsm_bench::chart::Bars {
        title: "Slowest request in the window after the fault",
        y_label: "milliseconds",
        groups: faults.iter().map(|f| f.name().to_string()).collect(),
        series: ["hsm-proxy", "haproxy"]
            .iter()
            .map(|side| {
                let v = faults
                    .iter()
                    .map(|f| {
                        worst
                            .iter()
                            .find(|(g, s, _)| g.name() == f.name() && s == side)
                            .map(|x| x.2)
                            .unwrap_or(0.0)
                    })
                    .collect();
                (side.to_string(), v)
            })
            .collect(),
    };
    part.charts.push(("failover.svg".into(), chart.svg()?));
    part.markdown = t;
    Ok(part)
}

fn short(e: &hsm_api::ClientError) -> String {
    match e {
        hsm_api::ClientError::Api { status, code, .. } => format!("{status} {code}"),
        other => other.to_string().chars().take(60).collect(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median over rounds of side `x`'s throughput over side `y`'s in the
/// same round, for workload `w`.
fn same_round_ratio(
    got: &BTreeMap<(usize, usize), Vec<report::Result>>,
    w: usize,
    x: usize,
    y: usize,
) -> f64 {
    let runs = |s: usize| got.get(&(w, s)).cloned().unwrap_or_default();
    median(
        runs(x)
            .iter()
            .zip(runs(y).iter())
            .filter(|(_, b)| b.ops_per_sec > 0.0)
            .map(|(a, b)| a.ops_per_sec / b.ops_per_sec)
            .collect(),
    )
}

/// The markdown tables: throughput and ratios, then latency quantiles.
fn table(
    mixes: &[Mix],
    got: &BTreeMap<(usize, usize), Vec<report::Result>>,
    a: &Args,
    st: &Settings,
) -> String {
    let mut t = format!(
        "Closed loop, {} workers, {} connection(s) per side, {} s windows, {} round(s); medians over rounds.\n\n",
        a.concurrency, a.connections, st.seconds, st.rounds
    );
    t.push_str("| workload | direct ops/s | hsm-proxy ops/s | HAProxy ops/s | in-process ops/s | hsm-proxy / HAProxy | hsm-proxy / direct | hsm-proxy / in-process | errors direct / hsm-proxy / HAProxy |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (w, mix) in mixes.iter().enumerate() {
        let runs = |s: usize| got.get(&(w, s)).cloned().unwrap_or_default();
        let ops = |s: usize| median(runs(s).iter().map(|r| r.ops_per_sec).collect());
        // Ratios of the same round, then the median.
        let ratio = |x: usize, y: usize| same_round_ratio(got, w, x, y);
        let errs = |s: usize| runs(s).iter().map(|r| r.errors).sum::<u64>();
        t.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {} / {} / {} |\n",
            mix.describe(),
            ops(0),
            ops(1),
            ops(2),
            ops(3),
            ratio(1, 2),
            ratio(1, 0),
            ratio(1, 3),
            errs(0),
            errs(1),
            errs(2)
        ));
    }
    t.push_str("\nLatency, medians over rounds (µs):\n\n| workload | side | p50 | p99 | p99.9 | max |\n|---|---|---:|---:|---:|---:|\n");
    for (w, mix) in mixes.iter().enumerate() {
        for (s, side) in SIDES.iter().enumerate() {
            let runs = got.get(&(w, s)).cloned().unwrap_or_default();
            let q = |f: fn(&report::Quantiles) -> u64| {
                median(
                    runs.iter()
                        .filter_map(|r| r.latency_us.as_ref().map(|x| f(x) as f64))
                        .collect(),
                )
            };
            t.push_str(&format!(
                "| {} | {side} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                mix.describe(),
                q(|x| x.p50),
                q(|x| x.p99),
                q(|x| x.p999),
                q(|x| x.max)
            ));
        }
    }
    t
}

/// VmRSS and VmHWM of a process, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Waits until every member's inventory summary is the same and counts at
/// least `at_least` objects; returns the count.
async fn converged(nodes: &[TestNode], at_least: u64, within: Duration) -> Result<u64> {
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(n.login(Role::Replication).await?);
    }
    hsm_tests::eventually(within, || {
        let clients = clients.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut count = 0;
            for c in &clients {
                let s = c.inventory().await?;
                count = s.count;
                seen.insert(s.summary);
            }
            if seen.len() == 1 && count >= at_least {
                Ok(count)
            } else {
                bail!(
                    "not converged: {} distinct summaries, {count} objects",
                    seen.len()
                )
            }
        }
    })
    .await
}

/// Item 4 of the benchmarks issue: for a group of 3 and of
/// `--scale-members`, the proxy's CPU per request and memory under ES256
/// load, and key creation: acknowledged keys/s (at `min_replicas`) and keys/s
/// until every member holds every key.
async fn scale(a: &Args, st: &Settings) -> Result<Part> {
    let hz = bench::clock_ticks_per_sec();
    let mut part = Part::default();
    let mut t = format!(
        "ES256 through hsm-proxy, closed loop, {} workers, {} s; then key creation (EC P-256, closed loop, 8 workers, {} s). \
         CPU is the proxy process's user + system time over the window, per answered request.\n\n\
         | members | ES256 ops/s | proxy CPU µs / request | proxy RSS MiB (peak) | keys/s acknowledged | keys/s on every member | keys made |\n|---:|---:|---:|---:|---:|---:|---:|\n",
        a.concurrency, st.seconds, st.seconds
    );
    let mut keys_series = Vec::new();
    for n in [3, a.scale_members] {
        eprintln!("compare: scale: {n} members");
        let nodes = TestNode::group(n).await?;
        let proxy = TestProxy::start(&nodes, ProxyOptions::default()).await?;
        let pid = proxy.pid().context("the proxy is not running")?;
        let co = proxy.login(Role::CryptoOfficer).await?;
        let op = hsm_bench::workload::Op::Es256;
        op.ensure_key(&co).await?;
        converged(&nodes, 1, Duration::from_secs(30)).await?;
        let mut clients = Vec::new();
        for _ in 0..a.connections {
            clients.push(proxy.login(Role::CryptoUser).await?);
        }
        let clients = Arc::new(clients);
        let p = Payload::new();
        let send = {
            let clients = clients.clone();
            move |op: hsm_bench::workload::Op, worker: usize| {
                let c = clients[worker % clients.len()].clone();
                let p = p.clone();
                async move { op.send(&c, &p).await.map_err(|e| short(&e)) }
            }
        };
        let mix = Mix::parse("es256")?;
        let closed = |seconds: f64, concurrency: usize| Plan {
            mode: Mode::Closed { concurrency },
            warmup: Duration::ZERO,
            duration: Duration::from_secs_f64(seconds),
        };
        // Warm-up outside the sampled window.
        load::run(closed(st.warmup, a.concurrency), &mix, send.clone(), |_| {}).await;
        let before = bench::sample(&[pid]);
        let out = load::run(closed(st.seconds, a.concurrency), &mix, send, |_| {}).await;
        let after = bench::sample(&[pid]);
        let cpu = bench::cpu_between(&before, &after, hz);
        let ops = out.ok as f64 / out.window.as_secs_f64();
        let us = bench::us_per_op(cpu.watched(), ops);
        let (_, peak) = rss_kib(pid);
        // Key creation: names from one counter.
        let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let create = {
            let co = co.clone();
            let made = made.clone();
            move |_op: hsm_bench::workload::Op, _worker: usize| {
                let co = co.clone();
                let i = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    co.create_key(
                        &format!("scale-{i}"),
                        &hsm_api::KeyCreateParameters::ec(hsm_api::Curve::P256),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| short(&e))
                }
            }
        };
        let started = std::time::Instant::now();
        let out = load::run(closed(st.seconds, 8), &mix, create, |_| {}).await;
        let acked = out.ok as f64 / out.window.as_secs_f64();
        let keys = converged(&nodes, out.ok + 1, Duration::from_secs(300)).await? - 1;
        let everywhere = keys as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "compare: scale {n}: {ops:.0} ES256/s, {us:.0} µs CPU/request, {acked:.0} keys/s acknowledged, {everywhere:.0} keys/s everywhere"
        );
        t.push_str(&format!(
            "| {n} | {ops:.0} | {us:.0} | {:.1} | {acked:.0} | {everywhere:.0} | {keys} |\n",
            peak as f64 / 1024.0
        ));
        part.json.push(serde_json::json!({
            "members": n, "es256_ops_per_sec": ops, "proxy_cpu_us_per_request": us,
            "proxy_rss_peak_kib": peak, "keys_per_sec_acknowledged": acked,
            "keys_per_sec_everywhere": everywhere, "keys": keys,
            "creation_errors": out.error_count(),
        }));
        keys_series.push((format!("{n} members"), vec![acked, everywhere]));
    }
    let chart = hsm_bench::chart::Bars {
        title: "Key creation through hsm-proxy",
        y_label: "keys per second",
        groups: vec!["acknowledged".into(), "on every member".into()],
        series: keys_series,
    };
    part.charts.push(("scale-keys.svg".into(), chart.svg()?));
    part.markdown = t;
    Ok(part)
}

/// Item 4's resync: a member missing 0.5 %, 1 % and 5 % of `--resync-keys`
/// keys (1,000, 2,000 and 10,000 of the default 200,000), loaded offline into two stopped members with identical records
/// (so that only the missing keys differ); then the proxy starts and
/// catches the member up before it serves. Bytes are the body bytes the
/// proxy exchanged with both members (`hsm_proxy_member_body_bytes_total`);
/// a full copy is every key's copy at the bytes one copy measured here
/// (export answer, import request and answer).
async fn resync(st: &Settings) -> Result<Part> {
    let n = st.resync_keys;
    let mut t = format!(
        "Two members, {} keys (EC P-256) on the complete one; the other misses the share below, spread over every bucket. \
         Time is from the proxy's start to equal inventories on both members; bytes are request and answer bodies between the proxy and the members.\n\n\
         | missing | keys copied | time s | bytes moved | full copy bytes | share of a full copy |\n|---:|---:|---:|---:|---:|---:|\n",
        bench::thousands(n as f64)
    );
    let mut part = Part::default();
    let mut shares = Vec::new();
    for share in [0.005, 0.01, 0.05] {
        let missing = ((n as f64) * share).round() as usize;
        eprintln!("compare: resync: {n} keys, {missing} missing");
        let mut nodes = TestNode::group(2).await?;
        for node in &mut nodes {
            node.kill();
        }
        hsm_tests::preload_pair(&nodes[0].dir, &nodes[1].dir, n, missing)?;
        for node in &mut nodes {
            node.run().await?;
        }
        let started = std::time::Instant::now();
        let opts = ProxyOptions {
            ready_within: Duration::from_secs(900),
            ..ProxyOptions::default()
        };
        let proxy = TestProxy::start(&nodes, opts).await?;
        let count = converged(&nodes, n as u64, Duration::from_secs(900)).await?;
        let took = started.elapsed();
        let moved = proxy.metric("hsm_proxy_member_body_bytes_total", &[])? as u64;
        // One copy's bytes, measured: export from the complete member,
        // import into the other (which already holds it: same bytes).
        let per_copy = hsm_tests::copy_bytes(&nodes[0], &nodes[1], "bench-0").await?;
        let full = per_copy * n as u64;
        let ratio = moved as f64 / full as f64;
        eprintln!(
            "compare: resync {missing} missing: {:.1} s, {moved} bytes, {:.1} % of a full copy",
            took.as_secs_f64(),
            ratio * 100.0
        );
        t.push_str(&format!(
            "| {} ({} %) | {} | {:.1} | {} | {} | {:.1} % |\n",
            bench::thousands(missing as f64),
            share * 100.0,
            bench::thousands(missing as f64),
            took.as_secs_f64(),
            bench::thousands(moved as f64),
            bench::thousands(full as f64),
            ratio * 100.0
        ));
        part.json.push(serde_json::json!({
            "keys": n, "missing": missing, "objects_after": count, "seconds": took.as_secs_f64(),
            "bytes_moved": moved, "bytes_per_copy": per_copy, "full_copy_bytes": full,
            "share_of_full_copy": ratio,
        }));
        shares.push(ratio * 100.0);
    }
    let chart = hsm_bench::chart::Bars {
        title: "Resync traffic as a share of a full copy",
        y_label: "per cent",
        groups: vec![
            "0.5 % missing".into(),
            "1 % missing".into(),
            "5 % missing".into(),
        ],
        series: vec![("hsm-proxy resync".into(), shares)],
    };
    part.charts.push(("resync.svg".into(), chart.svg()?));
    part.markdown = t;
    Ok(part)
}

/// The member that is stopped and caught up in the sidecars section.
const RETURNING: usize = 2;

/// Member requests answered over a window, by `op` label of
/// `hsm_node_requests_total`, summed over the members.
#[derive(Clone, Debug, Default)]
struct Ops(BTreeMap<String, f64>);

impl Ops {
    /// The ops that are neither health checks, logins nor metrics
    /// scrapes: the member protocol (inventory*, clone*, and whatever
    /// else a sidecar asks a member during a catch-up).
    fn protocol(&self) -> f64 {
        self.0
            .iter()
            .filter(|(op, _)| !matches!(op.as_str(), "health" | "login" | "metrics"))
            .map(|(_, n)| n)
            .sum()
    }
    fn of(&self, op: &str) -> f64 {
        self.0.get(op).copied().unwrap_or(0.0)
    }
    fn add(&mut self, other: &Ops, sign: f64) {
        for (op, n) in &other.0 {
            *self.0.entry(op.clone()).or_insert(0.0) += sign * n;
        }
    }
}

/// Every member's answered requests by op (`None` for a member that is
/// not running: nothing).
async fn member_ops(nodes: &[TestNode]) -> Result<Vec<Ops>> {
    let mut out = Vec::new();
    for n in nodes {
        if n.pid().is_none() {
            out.push(Ops::default());
            continue;
        }
        let text = n.metrics_text().await?;
        out.push(Ops(hsm_tests::by_label(
            &text,
            "hsm_node_requests_total",
            "op",
        )));
    }
    Ok(out)
}

/// Bytes through every relay, (to the members, from the members), summed.
fn relay_bytes(relays: &[hsm_tests::relay::Relay]) -> (u64, u64) {
    relays.iter().fold((0, 0), |(a, b), r| {
        let (x, y) = r.bytes();
        (a + x, b + y)
    })
}

/// What the members saw over one window: requests by op (summed over
/// the members) and relay bytes both ways.
#[derive(Clone, Debug, Default)]
struct Seen {
    ops: Ops,
    bytes: u64,
    /// Through the returning member's relay alone.
    returning_bytes: u64,
}

/// One catch-up window.
struct Window {
    seconds: f64,
    /// Seconds from the restart until each sidecar first showed the
    /// returning member `up`.
    up_after: Vec<f64>,
    seen: Seen,
    /// Objects the sidecars say they copied to the returning member
    /// (`hsm_proxy_resync_objects_copied_total`; 0 when a proxy does not
    /// export it). For information: the harness does not depend on it.
    sidecar_copies: f64,
}

/// The catch-ups with `sidecars` sidecars running.
struct CatchUp {
    sidecars: usize,
    /// What the members saw per second in the quiet window before the
    /// first fault.
    background: Seen,
    windows: Vec<Window>,
}

impl CatchUp {
    fn median(&self, f: impl Fn(&Window) -> f64) -> f64 {
        median(self.windows.iter().map(f).collect())
    }
    fn net_protocol(&self, w: &Window) -> f64 {
        w.seen.ops.protocol() - self.background.ops.protocol() * w.seconds
    }
    fn net_bytes(&self, w: &Window) -> f64 {
        w.seen.bytes as f64 - self.background.bytes as f64 * w.seconds
    }
}

/// A signed whole number with thousands separators.
fn signed_thousands(x: f64) -> String {
    if x < -0.5 {
        format!("-{}", bench::thousands(-x))
    } else {
        bench::thousands(x.max(0.0))
    }
}

/// Waits until every sidecar's `/status.json` shows member `name` in a
/// state for which `want` holds; returns, per sidecar, the seconds from
/// `since` to the first such sight.
async fn sidecars_see(
    sidecars: &[TestProxy],
    name: &str,
    want: impl Fn(&str) -> bool,
    since: std::time::Instant,
    within: Duration,
) -> Result<Vec<f64>> {
    let mut seen: Vec<Option<f64>> = vec![None; sidecars.len()];
    let deadline = since + within;
    loop {
        for (i, p) in sidecars.iter().enumerate() {
            if seen[i].is_some() {
                continue;
            }
            let Ok(s) = p.status_async().await else {
                continue;
            };
            let state = s["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == name))
                .and_then(|m| m["state"].as_str())
                .unwrap_or("");
            if want(state) {
                seen[i] = Some(since.elapsed().as_secs_f64());
            }
        }
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{} of {} sidecars did not see {name} as wanted within {within:?}",
                seen.iter().filter(|s| s.is_none()).count(),
                sidecars.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Objects the sidecars say they copied to member `name`
/// (`hsm_proxy_resync_objects_copied_total`, summed over them).
fn copied_to(sidecars: &[TestProxy], name: &str) -> f64 {
    sidecars
        .iter()
        .map(|p| {
            p.metric("hsm_proxy_resync_objects_copied_total", &[("member", name)])
                .unwrap_or(0.0)
        })
        .sum()
}

/// The catch-ups with `n` sidecars: a fresh group of 3 members preloaded
/// with `keys` identical keys, every member behind a counting relay
/// shared by the `n` sidecars; a quiet window for the background; then
/// `repeats` times: member [`RETURNING`] SIGKILLed, 1 % of `keys` created
/// through sidecar 0, the member restarted, and the window measured until
/// every sidecar shows it `up` and the three inventory summaries are
/// equal ([`one_catch_up`]).
async fn catch_up(n: usize, keys: usize, quiet: Duration, repeats: usize) -> Result<CatchUp> {
    use hsm_tests::relay::Relay;
    eprintln!("compare: sidecars: {n} sidecar(s), 3 members, {keys} keys");
    let mut nodes = TestNode::group(3).await?;
    for node in &mut nodes {
        node.kill();
    }
    let dirs: Vec<&std::path::Path> = nodes.iter().map(|n| n.dir.as_path()).collect();
    hsm_tests::preload_group(&dirs, keys, &[0, 0, 0])?;
    for node in &mut nodes {
        node.run().await?;
    }
    let mut relays = Vec::new();
    for node in &nodes {
        relays.push(Relay::start(&node.addr).await?);
    }
    let via: Vec<Option<String>> = relays.iter().map(|r| Some(r.addr())).collect();
    let mut sidecars = Vec::new();
    for _ in 0..n {
        let opts = ProxyOptions {
            via: via.clone(),
            ..ProxyOptions::default()
        };
        sidecars.push(TestProxy::start(&nodes, opts).await?);
    }
    // The quiet window: what n idle sidecars cost the members per second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ops0, bytes0) = (member_ops(&nodes).await?, relay_bytes(&relays));
    let ret0 = relays[RETURNING].bytes();
    let q0 = std::time::Instant::now();
    tokio::time::sleep(quiet).await;
    let (ops1, bytes1) = (member_ops(&nodes).await?, relay_bytes(&relays));
    let ret1 = relays[RETURNING].bytes();
    let qs = q0.elapsed().as_secs_f64();
    let mut bg = Ops::default();
    for (a, b) in ops1.iter().zip(&ops0) {
        bg.add(a, 1.0 / qs);
        bg.add(b, -1.0 / qs);
    }
    let background = Seen {
        ops: bg,
        bytes: (((bytes1.0 + bytes1.1) - (bytes0.0 + bytes0.1)) as f64 / qs) as u64,
        returning_bytes: (((ret1.0 + ret1.1) - (ret0.0 + ret0.1)) as f64 / qs) as u64,
    };
    let mut windows = Vec::new();
    for r in 0..repeats {
        if r > 0 {
            // Let the last window's stragglers (a round still running) end.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let w = one_catch_up(&mut nodes, &relays, &sidecars, keys, r).await?;
        eprintln!(
            "compare: sidecars {n}, catch-up {}: {:.1} s, {:.0} member-protocol requests ({:.0} clone_import), {:.0} health, {:.0} logins, {} bytes",
            r + 1,
            w.seconds,
            w.seen.ops.protocol(),
            w.seen.ops.of("clone_import"),
            w.seen.ops.of("health"),
            w.seen.ops.of("login"),
            w.seen.bytes
        );
        windows.push(w);
    }
    drop(sidecars);
    Ok(CatchUp {
        sidecars: n,
        background,
        windows,
    })
}

/// Catch-up number `round` (from 0) on a running group: the fault, 1 % of
/// `keys` created while the member is down, the restart and the window.
async fn one_catch_up(
    nodes: &mut [TestNode],
    relays: &[hsm_tests::relay::Relay],
    sidecars: &[TestProxy],
    keys: usize,
    round: usize,
) -> Result<Window> {
    let missing = (keys / 100).max(1);
    let name = format!("m{RETURNING}");
    // The fault, and the keys the member misses.
    nodes[RETURNING].kill();
    sidecars_see(
        sidecars,
        &name,
        |s| s != "up",
        std::time::Instant::now(),
        Duration::from_secs(30),
    )
    .await?;
    let co = sidecars[0].login(Role::CryptoOfficer).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 8;
    for w in 0..workers {
        let co = co.clone();
        tasks.spawn(async move {
            let mut i = w;
            while i < missing {
                co.create_key(
                    &format!("late-{round}-{i}"),
                    &hsm_api::KeyCreateParameters::ec(hsm_api::Curve::P256),
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating late-{round}-{i}: {e}"))?;
                i += workers;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    // The harness's own member requests during the window, to take out:
    // the inventory reads that decide convergence and one login on the
    // returning member (the others log in before the window).
    let mut others = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        others.push(if i == RETURNING {
            None
        } else {
            Some(node.login(Role::Replication).await?)
        });
    }
    let mut own = vec![Ops::default(); nodes.len()];
    // The window: from the restart.
    let (base, b0) = (member_ops(nodes).await?, relay_bytes(relays));
    let r0 = relays[RETURNING].bytes();
    let copied0 = copied_to(sidecars, &name);
    let t0 = std::time::Instant::now();
    nodes[RETURNING].run().await?;
    let within = Duration::from_secs(600);
    // Every sidecar serves through it again; then the inventories (the
    // harness touches no member before this).
    let up_after = sidecars_see(sidecars, &name, |s| s == "up", t0, within).await?;
    {
        let c = nodes[RETURNING].client_as("app")?;
        let r = c
            .login(Role::Replication, hsm_tests::REPLICATION_PASSWORD)
            .await;
        if r.is_ok() || matches!(r, Err(hsm_api::ClientError::Api { .. })) {
            own[RETURNING].add(&Ops([("login".to_string(), 1.0)].into()), 1.0);
        }
        r?;
        others[RETURNING] = Some(c);
    }
    loop {
        let mut summaries = std::collections::BTreeSet::new();
        let mut counts = Vec::new();
        for (i, c) in others.iter().enumerate() {
            let Some(c) = c else { continue };
            let r = c.inventory().await;
            if r.is_ok() || matches!(r, Err(hsm_api::ClientError::Api { .. })) {
                own[i].add(&Ops([("inventory".to_string(), 1.0)].into()), 1.0);
            }
            let s = r?;
            summaries.insert(s.summary);
            counts.push(s.count);
        }
        if summaries.len() == 1
            && counts
                .iter()
                .all(|c| *c >= (keys + missing * (round + 1)) as u64)
        {
            break;
        }
        if t0.elapsed() > within {
            bail!("the members did not converge within {within:?}: counts {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (end, b1) = (member_ops(nodes).await?, relay_bytes(relays));
    let r1 = relays[RETURNING].bytes();
    let copied1 = copied_to(sidecars, &name);
    let mut ops = Ops::default();
    for i in 0..nodes.len() {
        ops.add(&end[i], 1.0);
        // The returning member's counters started at 0 with its process.
        if i != RETURNING {
            ops.add(&base[i], -1.0);
        }
        ops.add(&own[i], -1.0);
    }
    let seen = Seen {
        ops,
        bytes: (b1.0 + b1.1) - (b0.0 + b0.1),
        returning_bytes: (r1.0 + r1.1) - (r0.0 + r0.1),
    };
    Ok(Window {
        seconds,
        up_after,
        seen,
        sidecar_copies: copied1 - copied0,
    })
}

/// Key creation through one sidecar, then spread over `many` sidecars, at
/// the same total client concurrency and the same number of client
/// sessions (`many`: all on the one sidecar, or one per sidecar). Rounds
/// alternate the order; returns (keys/s with one, keys/s with many,
/// errors) per round.
async fn creation_rounds(
    a: &Args,
    st: &Settings,
    many: usize,
) -> Result<Vec<(f64, f64, u64, u64)>> {
    eprintln!(
        "compare: sidecars: key creation, 1 against {many} sidecars, {} creators",
        a.sidecar_concurrency
    );
    let nodes = TestNode::group(3).await?;
    let first = TestProxy::start(&nodes, ProxyOptions::default()).await?;
    let mut made_total = 0u64;
    let mut out = Vec::new();
    for round in 0..st.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [1, many] } else { [many, 1] };
        let mut got = BTreeMap::new();
        for k in order {
            let mut extra = Vec::new();
            for _ in 1..k {
                extra.push(TestProxy::start(&nodes, ProxyOptions::default()).await?);
            }
            let mut clients = Vec::new();
            for s in 0..many {
                let p = if s == 0 || k == 1 {
                    &first
                } else {
                    &extra[(s - 1) % extra.len()]
                };
                clients.push(p.login(Role::CryptoOfficer).await?);
            }
            let clients = Arc::new(clients);
            let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let create = {
                let made = made.clone();
                move |_op: hsm_bench::workload::Op, worker: usize| {
                    let c = clients[worker % clients.len()].clone();
                    let i = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async move {
                        c.create_key(
                            &format!("spread-{round}-{k}-{i}"),
                            &hsm_api::KeyCreateParameters::ec(hsm_api::Curve::P256),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| short(&e))
                    }
                }
            };
            let plan = Plan {
                mode: Mode::Closed {
                    concurrency: a.sidecar_concurrency,
                },
                warmup: Duration::from_secs_f64(st.warmup),
                duration: Duration::from_secs_f64(st.seconds),
            };
            let r = load::run(plan, &Mix::parse("es256")?, create, |_| {}).await;
            let rate = r.ok as f64 / r.window.as_secs_f64();
            eprintln!(
                "compare: round {} creation through {k} sidecar(s): {rate:.0} keys/s acknowledged, {} errors",
                round + 1,
                r.error_count()
            );
            // Every attempt that was answered made a key (or failed
            // cleanly); wait for the copies to end before the next window.
            made_total += made.load(std::sync::atomic::Ordering::Relaxed);
            converged(&nodes, 0, Duration::from_secs(120)).await?;
            got.insert(k, (rate, r.error_count()));
            drop(extra);
        }
        let (one, e1) = got.get(&1).copied().unwrap_or_default();
        let (spread, e2) = got.get(&many).copied().unwrap_or_default();
        out.push((one, spread, e1, e2));
    }
    eprintln!("compare: sidecars: {made_total} creations attempted");
    Ok(out)
}

/// Issue 16's benchmark: the catch-up of a member that missed 1 % of the
/// keys with 1, 5 and 20 sidecars running (member requests from the
/// members' own metrics, bytes from counting relays, time), and key
/// creation through one sidecar against the same load spread over 5.
async fn sidecars(a: &Args, st: &Settings) -> Result<Part> {
    let keys = st.sidecar_keys;
    let quiet = Duration::from_secs_f64(st.quiet);
    let mut part = Part::default();
    let mut runs = Vec::new();
    for &n in &a.sidecar_counts {
        runs.push(catch_up(n, keys, quiet, st.rounds).await?);
    }
    let missing = (keys / 100).max(1);
    let mut t = format!(
        "Three members preloaded with the same {} EC P-256 keys; every member behind a counting relay that all sidecars share \
         (bytes both ways, TLS records and handshakes included; the harness's own reads go around the relays). \
         With the sidecars running, a quiet window of {:.0} s gives the background (health checks, periodic resync rounds). \
         Then, {} time(s) on the same group: member m{RETURNING} is SIGKILLed, {} keys (1 %) are created through sidecar 0, and the member restarts; the window runs from \
         the restart until every sidecar shows it `up` in `/status.json` and the three inventory summaries are equal. \
         Requests are the members' own `hsm_node_requests_total` deltas, summed over the 3 members, the harness's own inventory reads and login taken out; \
         member protocol is every op but `health`, `login` and `metrics`. \
         Net is the window minus the background rate times the window's length. Medians over the catch-ups; the protocol requests of each in the last column.\n\n\
         | sidecars | catch-up s | member-protocol requests | clone_import | health checks | logins | relay bytes | bytes via m{RETURNING} | background protocol req/s | background bytes/s | net protocol requests | net bytes | objects copied (sidecars' count) | protocol requests, each catch-up |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        bench::thousands(keys as f64),
        st.quiet,
        st.rounds,
        bench::thousands(missing as f64),
    );
    for r in &runs {
        t.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |\n",
            r.sidecars,
            r.median(|w| w.seconds),
            bench::thousands(r.median(|w| w.seen.ops.protocol())),
            bench::thousands(r.median(|w| w.seen.ops.of("clone_import"))),
            bench::thousands(r.median(|w| w.seen.ops.of("health"))),
            bench::thousands(r.median(|w| w.seen.ops.of("login"))),
            bench::thousands(r.median(|w| w.seen.bytes as f64)),
            bench::thousands(r.median(|w| w.seen.returning_bytes as f64)),
            r.background.ops.protocol(),
            bench::thousands(r.background.bytes as f64),
            signed_thousands(r.median(|w| r.net_protocol(w))),
            signed_thousands(r.median(|w| r.net_bytes(w))),
            bench::thousands(r.median(|w| w.sidecar_copies)),
            r.windows
                .iter()
                .map(|w| bench::thousands(w.seen.ops.protocol()))
                .collect::<Vec<_>>()
                .join(" / "),
        ));
    }
    let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
    let mut ratios: Vec<(usize, [f64; 5])> = Vec::new();
    if let Some(base) = runs.first() {
        t.push_str(&format!(
            "\nMedians against {} sidecar(s)' (goal: member requests and bytes per catch-up at most 1.2× at 20 sidecars):\n\n\
             | sidecars | member-protocol requests × | net × | relay bytes × | net bytes × | catch-up time × |\n|---:|---:|---:|---:|---:|---:|\n",
            base.sidecars
        ));
        let of = |r: &CatchUp| {
            [
                r.median(|w| w.seen.ops.protocol()),
                r.median(|w| r.net_protocol(w)),
                r.median(|w| w.seen.bytes as f64),
                r.median(|w| r.net_bytes(w)),
                r.median(|w| w.seconds),
            ]
        };
        let b = of(base);
        for r in &runs[1..] {
            let x = of(r);
            let v: [f64; 5] = std::array::from_fn(|i| ratio(x[i], b[i]));
            t.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                r.sidecars, v[0], v[1], v[2], v[3], v[4]
            ));
            ratios.push((r.sidecars, v));
        }
    }
    for r in &runs {
        let mut bg = serde_json::Map::new();
        for (op, n) in &r.background.ops.0 {
            bg.insert(op.clone(), serde_json::json!(n));
        }
        for (i, w) in r.windows.iter().enumerate() {
            let mut ops = serde_json::Map::new();
            for (op, n) in &w.seen.ops.0 {
                ops.insert(op.clone(), serde_json::json!(n));
            }
            part.json.push(serde_json::json!({
                "kind": "catch-up", "sidecars": r.sidecars, "catch_up": i + 1, "keys": keys, "missing": missing,
                "seconds": w.seconds, "sidecar_up_after_seconds": w.up_after,
                "member_requests_by_op": ops, "member_protocol_requests": w.seen.ops.protocol(),
                "relay_bytes": w.seen.bytes, "relay_bytes_returning_member": w.seen.returning_bytes,
                "background_requests_per_sec_by_op": bg,
                "background_relay_bytes_per_sec": r.background.bytes,
                "background_relay_bytes_per_sec_returning_member": r.background.returning_bytes,
                "net_member_protocol_requests": r.net_protocol(w), "net_relay_bytes": r.net_bytes(w),
                "sidecar_objects_copied": w.sidecar_copies,
            }));
        }
    }
    // Key creation.
    let many = a.spread_sidecars;
    let rounds = creation_rounds(a, st, many).await?;
    let one = median(rounds.iter().map(|r| r.0).collect());
    let spread = median(rounds.iter().map(|r| r.1).collect());
    let same_round = median(
        rounds
            .iter()
            .filter(|r| r.0 > 0.0)
            .map(|r| r.1 / r.0)
            .collect(),
    );
    t.push_str(&format!(
        "\nKey creation (EC P-256), closed loop, {} creators in all, {} client sessions (all on one sidecar, or one per sidecar), \
         {} s windows, {} round(s) alternating the order, 3 members; medians over rounds (goal: {many} sidecars at least 0.8× of one):\n\n\
         | sidecars | keys/s acknowledged | errors |\n|---:|---:|---:|\n\
         | 1 | {one:.0} | {} |\n| {many} | {spread:.0} | {} |\n\n\
         {many} sidecars / 1, same round: **{same_round:.2}**.\n",
        a.sidecar_concurrency,
        many,
        st.seconds,
        st.rounds,
        rounds.iter().map(|r| r.2).sum::<u64>(),
        rounds.iter().map(|r| r.3).sum::<u64>(),
    ));
    for (i, r) in rounds.iter().enumerate() {
        part.json.push(serde_json::json!({
            "kind": "creation", "round": i + 1, "concurrency": a.sidecar_concurrency,
            "sessions": many, "keys_per_sec_one_sidecar": r.0,
            "keys_per_sec_spread": r.1, "spread_sidecars": many,
            "errors_one_sidecar": r.2, "errors_spread": r.3,
        }));
    }
    if !ratios.is_empty() {
        let chart = hsm_bench::chart::Bars {
            title: "Catch-up cost against one sidecar",
            y_label: "× the cost with one sidecar",
            groups: vec![
                "member-protocol requests (net)".into(),
                "relay bytes (net)".into(),
                "catch-up time".into(),
            ],
            series: ratios
                .iter()
                .map(|(n, v)| {
                    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
                    (
                        format!("{n} sidecars"),
                        vec![finite(v[1]), finite(v[3]), finite(v[4])],
                    )
                })
                .collect(),
        };
        part.charts
            .push(("sidecars-catchup.svg".into(), chart.svg()?));
    }
    let chart = hsm_bench::chart::Bars {
        title: "Key creation at the same client concurrency",
        y_label: "keys acknowledged per second",
        groups: vec!["1 sidecar".into(), format!("{many} sidecars")],
        series: vec![("hsm-proxy".into(), vec![one, spread])],
    };
    part.charts
        .push(("sidecars-create.svg".into(), chart.svg()?));
    part.markdown = t;
    Ok(part)
}

/// The sides of the tokens section, in table order.
const TOKEN_SIDES: [&str; 4] = ["in-process C_Sign", "direct", "hsm-proxy", "haproxy"];
/// The token members behind the proxies in the tokens section.
const TOKEN_MEMBERS: usize = 3;

/// One window of the tokens section.
struct TokenWindow {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU µs per signature: the 3 members together, the front (hsm-proxy
    /// or HAProxy), the load generator (this process), the rest of the
    /// machine; `None` where it does not apply.
    cpu_us: [Option<f64>; 4],
    /// In process: the signing process's CPU µs per signature (its threads
    /// are load and signer at once).
    own_cpu_us: Option<f64>,
}

/// The median over rounds of side `x`'s signs/s over side `y`'s in the
/// same round, and each round's ratio.
fn token_ratio(got: &[Vec<TokenWindow>], x: usize, y: usize) -> (f64, Vec<f64>) {
    let each: Vec<f64> = got[x]
        .iter()
        .zip(&got[y])
        .filter(|(_, b)| b.ops_per_sec > 0.0)
        .map(|(a, b)| a.ops_per_sec / b.ops_per_sec)
        .collect();
    (median(each.clone()), each)
}

/// Issue 18's benchmark: ES256 (CKM_ECDSA over the request's 32-byte
/// digest, in SoftHSM2) through one token member, through hsm-proxy and
/// through HAProxy over 3 token members, against SoftHSM2's own
/// in-process `C_Sign` rate from `--concurrency` threads (each with its own
/// session) on a fresh token of its own, measured by `p11bench` in a child
/// process (SoftHSM2 reads `SOFTHSM2_CONF` when it is loaded). The members
/// are token members whatever `HSM_TEST_TOKEN_MEMBERS` says. The four sides
/// take turns in every round, in an order that rotates; ratios are of the
/// same round, then the median.
async fn tokens(a: &Args, st: &Settings) -> Result<Part> {
    use hsm_tests::p11rate::{self, Alg};
    use hsm_tests::token_members;
    if a.concurrency > 512 {
        bail!("--concurrency must be at most 512 for the tokens section (p11bench's threads)");
    }
    let tmp = tempfile::tempdir()?;
    let own = token_members::make_token(&tmp.path().join("in-process"))?;
    let target = p11rate::Target {
        name: "SoftHSM2 in-process",
        module: token_members::SOFTHSM_MODULE.into(),
        token: own.label.clone(),
        pin: token_members::TOKEN_PIN.into(),
        env: vec![("SOFTHSM2_CONF", own.conf.display().to_string())],
    };
    eprintln!("compare: tokens: starting {TOKEN_MEMBERS} token members, hsm-proxy and HAProxy");
    let nodes = {
        let _all = token_members::all_tokens();
        TestNode::group(TOKEN_MEMBERS).await?
    };
    let proxy = TestProxy::start(&nodes, ProxyOptions::default()).await?;
    let co = proxy.login(Role::CryptoOfficer).await?;
    let op = hsm_bench::workload::Op::Es256;
    op.ensure_key(&co).await?;
    hsm_tests::held_by_every_member(&nodes, &[op.key_name()], Duration::from_secs(30)).await?;
    // The key is in every member's token, not in its database.
    for n in &nodes {
        let (ok, text) =
            token_members::pkcs11_tool(&n.dir, &["--list-objects", "--type", "privkey"])?;
        if !ok || !text.contains("Private Key Object") {
            bail!("{}: no private key in its token:\n{text}", n.dir.display());
        }
    }
    let ha = Haproxy::start(&nodes).await?;
    let sides = http_sides(&nodes, &proxy, &ha, a.connections).await?;
    let mut pids: Vec<u32> = nodes.iter().filter_map(TestNode::pid).collect();
    if pids.len() != TOKEN_MEMBERS {
        bail!("a token member is not running");
    }
    pids.push(proxy.pid().context("the proxy is not running")?);
    pids.push(ha.pid().context("HAProxy is not running")?);
    let mix = Mix::parse("es256")?;
    let payload = Payload::new();
    let mut part = Part::default();
    let mut got: Vec<Vec<TokenWindow>> = TOKEN_SIDES.iter().map(|_| Vec::new()).collect();
    let mut library = None;
    for round in 0..st.rounds {
        for k in 0..TOKEN_SIDES.len() {
            let s = (k + round) % TOKEN_SIDES.len();
            let w = if s == 0 {
                let run = p11rate::Run {
                    alg: Alg::EcP256,
                    threads: a.concurrency,
                    seconds: st.seconds,
                    warmup: st.warmup,
                };
                // A blocking child run: the runtime's other threads go on.
                let o = tokio::task::block_in_place(|| p11rate::run_child(&target, run))?;
                if o.errors > 0 {
                    bail!(
                        "in-process C_Sign: {} errors, first: {}",
                        o.errors,
                        o.first_error.unwrap_or_default()
                    );
                }
                let mut v = serde_json::json!({
                    "target": TOKEN_SIDES[0], "workload": "es256", "round": round + 1,
                    "alg": run.alg.name(), "mechanism": run.alg.describe(),
                    "threads": run.threads, "seconds": run.seconds, "warmup_seconds": run.warmup,
                    "ok": o.signs, "errors": o.errors, "ops_per_sec": o.rate,
                    "p50_ms": o.p50_ms, "p99_ms": o.p99_ms,
                });
                v["cpu_us_per_sign"] = serde_json::json!(o.cpu_us_per_sign());
                v["library"] = serde_json::json!(o.library);
                part.json.push(v);
                library = o.library.clone().or(library);
                TokenWindow {
                    ops_per_sec: o.rate,
                    p50_ms: o.p50_ms,
                    p99_ms: o.p99_ms,
                    errors: o.errors,
                    cpu_us: [None; 4],
                    own_cpu_us: o.cpu_us_per_sign(),
                }
            } else {
                let plan = closed_plan(a, st);
                let (out, cpu) =
                    http_window(sides[s - 1].clone(), &mix, &payload, plan, &pids).await;
                let r = report::Result::new(
                    TOKEN_SIDES[s],
                    "es256",
                    plan.mode,
                    a.connections,
                    st.warmup,
                    &out,
                );
                let per = |cores: f64| {
                    (r.ops_per_sec > 0.0).then(|| bench::us_per_op(cores, r.ops_per_sec))
                };
                let members: f64 = cpu.procs.iter().take(TOKEN_MEMBERS).sum();
                let front = match s {
                    2 => cpu.procs.get(TOKEN_MEMBERS).copied(),
                    3 => cpu.procs.get(TOKEN_MEMBERS + 1).copied(),
                    _ => None,
                };
                // Everything else: the idle front of the other side, the
                // kernel, other processes.
                let rest = cpu.other + cpu.watched() - members - front.unwrap_or(0.0);
                let cpu_us = [per(members), front.and_then(per), per(cpu.bench), per(rest)];
                let mut v = serde_json::to_value(&r)?;
                v["round"] = serde_json::json!(round + 1);
                v["cpu_us_per_sign"] = serde_json::json!({
                    "members": cpu_us[0], "front": cpu_us[1],
                    "load_generator": cpu_us[2], "rest_of_machine": cpu_us[3],
                });
                part.json.push(v);
                let q = r.latency_us.clone();
                let ms = |f: fn(&report::Quantiles) -> u64| {
                    q.as_ref().map(|x| f(x) as f64 / 1000.0).unwrap_or(0.0)
                };
                TokenWindow {
                    ops_per_sec: r.ops_per_sec,
                    p50_ms: ms(|x| x.p50),
                    p99_ms: ms(|x| x.p99),
                    errors: r.errors,
                    cpu_us,
                    own_cpu_us: None,
                }
            };
            eprintln!(
                "compare: tokens round {} {:<18} {:>8.0} signs/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                round + 1,
                TOKEN_SIDES[s],
                w.ops_per_sec,
                w.p50_ms,
                w.p99_ms,
                w.errors
            );
            got[s].push(w);
        }
    }
    drop(ha);
    let opt = |v: Vec<Option<f64>>| {
        let v: Vec<f64> = v.into_iter().flatten().collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0}", median(v))
        }
    };
    let mut t = format!(
        "ES256 (P-256) over a 32-byte digest; closed loop, {} workers, {} connection(s) per HTTP side, {} s windows after {} s of warm-up, \
         {} round(s), the four sides in an order that rotates every round; medians over rounds. \
         The {TOKEN_MEMBERS} members are hsm-node token members, each on a SoftHSM2 token of its own (default `token.sessions`: 8); the key was made through hsm-proxy \
         and `pkcs11-tool` found it in every member's token. In process: `p11bench` in a child process, {} threads each with its own session, \
         {} on a fresh SoftHSM2 token of its own (module: {}). \
         CPU is user + system time over the measured seconds per answered signature: the 3 members together, the front (hsm-proxy or HAProxy), \
         the load generator (this process), the rest of the machine (the idle front, the kernel, other processes); in process, the signing process's own.\n\n\
         | side | signs/s | p50 ms | p99 ms | errors | CPU µs/sign: members | front | load generator | rest of machine | in-process signer |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        a.concurrency,
        a.connections,
        st.seconds,
        st.warmup,
        st.rounds,
        a.concurrency,
        Alg::EcP256.describe(),
        library.as_deref().unwrap_or("unknown"),
    );
    for (s, side) in TOKEN_SIDES.iter().enumerate() {
        let w = &got[s];
        let col = |i: usize| opt(w.iter().map(|x| x.cpu_us[i]).collect());
        t.push_str(&format!(
            "| {side} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |\n",
            median(w.iter().map(|x| x.ops_per_sec).collect()),
            median(w.iter().map(|x| x.p50_ms).collect()),
            median(w.iter().map(|x| x.p99_ms).collect()),
            w.iter().map(|x| x.errors).sum::<u64>(),
            col(0),
            col(1),
            col(2),
            col(3),
            opt(w.iter().map(|x| x.own_cpu_us).collect()),
        ));
    }
    t.push_str(
        "\nRatios of signs/s in the same round, median over rounds:\n\n\
         | ratio | median | each round | goal | met |\n|---|---:|---|---:|---|\n",
    );
    let mut ratios = serde_json::Map::new();
    for (name, key, x, y, goal) in [
        (
            "token member direct / SoftHSM2 in-process C_Sign",
            "direct_over_in_process",
            1,
            0,
            Some(0.6),
        ),
        (
            "hsm-proxy / HAProxy over the 3 token members",
            "proxy_over_haproxy",
            2,
            3,
            Some(1.0),
        ),
        (
            "hsm-proxy / token member direct",
            "proxy_over_direct",
            2,
            1,
            None,
        ),
    ] {
        let (m, each) = token_ratio(&got, x, y);
        t.push_str(&format!(
            "| {name} | **{m:.2}** | {} | {} | {} |\n",
            each.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" / "),
            goal.map(|g| format!("≥ {g}")).unwrap_or_else(|| "-".into()),
            match goal {
                Some(g) if m >= g => "yes",
                Some(_) => "**no**",
                None => "-",
            }
        ));
        ratios.insert(
            key.into(),
            serde_json::json!({"median": m, "rounds": each, "goal": goal}),
        );
    }
    part.json
        .push(serde_json::json!({"kind": "ratios", "ratios": ratios}));
    let chart = hsm_bench::chart::Bars {
        title: "ES256 on SoftHSM2: token members against in-process C_Sign",
        y_label: "signatures per second",
        groups: vec!["ES256".into()],
        series: TOKEN_SIDES
            .iter()
            .enumerate()
            .map(|(s, side)| {
                (
                    side.to_string(),
                    vec![median(got[s].iter().map(|x| x.ops_per_sec).collect())],
                )
            })
            .collect(),
    };
    part.charts.push(("tokens.svg".into(), chart.svg()?));
    part.markdown = t;
    Ok(part)
}

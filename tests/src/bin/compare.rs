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
//! HAProxy must be installed (`apt-get install haproxy`; `.ci/run` does).
//! Every loop ends by time; all traffic is on loopback.
#![forbid(unsafe_code)]

use anyhow::{bail, Result};
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
#[command(about = "direct vs hsm-proxy vs HAProxy, side by side on the same members")]
struct Args {
    /// Measured seconds per window.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured warm-up seconds before each window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Rounds; medians are over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Members of the group.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Closed-loop workers per window.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Client connections (and sessions) per side.
    #[arg(long, default_value_t = 3)]
    connections: usize,
    /// Workloads, `;`-separated mixes (see `hsm-bench --workload`).
    #[arg(long, default_value = "es256;rs256;a256gcm;es256=5,rs256=1,a256gcm=4")]
    workloads: String,
    /// Write every window's result as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run the failover scenarios instead: for each fault on one of the
    /// members (SIGKILL, SIGSTOP, 200 ms added each way by a relay) and
    /// each proxy, a fresh group under ES256 load; failed requests and
    /// latency over `--after` seconds from the fault.
    #[arg(long)]
    failover: bool,
    /// Failover: seconds measured from the fault.
    #[arg(long, default_value_t = 10.0)]
    after: f64,
}

const SIDES: [&str; 3] = ["direct", "hsm-proxy", "haproxy"];

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    if a.rounds == 0 || a.members == 0 || a.connections == 0 || a.concurrency == 0 {
        bail!("--rounds, --members, --connections and --concurrency must be at least 1");
    }
    let mixes: Vec<Mix> = a
        .workloads
        .split(';')
        .map(|w| Mix::parse(w).map_err(|e| anyhow::anyhow!("--workloads `{w}`: {e}")))
        .collect::<Result<_>>()?;
    if a.failover {
        println!("{}", failover(&a).await?);
        return Ok(());
    }
    eprintln!(
        "compare: starting {} members, hsm-proxy and HAProxy",
        a.members
    );
    let nodes = TestNode::group(a.members).await?;
    let proxy = TestProxy::start(&nodes, ProxyOptions::default()).await?;
    let co = proxy.login(Role::CryptoOfficer).await?;
    for mix in &mixes {
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
    let mut sides: Vec<Arc<Vec<Client>>> = Vec::new();
    for side in SIDES {
        let mut clients = Vec::new();
        for _ in 0..a.connections {
            let c = match side {
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
    let payload = Payload::new();
    let mut all: Vec<serde_json::Value> = Vec::new();
    // (workload, side) -> per-round results
    let mut got: BTreeMap<(usize, usize), Vec<report::Result>> = BTreeMap::new();
    for round in 0..a.rounds {
        for (w, mix) in mixes.iter().enumerate() {
            for k in 0..SIDES.len() {
                let s = (k + round) % SIDES.len();
                let clients = sides[s].clone();
                let p = payload.clone();
                let send = move |op: hsm_bench::workload::Op, worker: usize| {
                    let c = clients[worker % clients.len()].clone();
                    let p = p.clone();
                    async move { op.send(&c, &p).await.map_err(|e| short(&e)) }
                };
                let plan = Plan {
                    mode: Mode::Closed {
                        concurrency: a.concurrency,
                    },
                    warmup: Duration::from_secs_f64(a.warmup),
                    duration: Duration::from_secs_f64(a.seconds),
                };
                let out = load::run(plan, mix, send, |_| {}).await;
                let r = report::Result::new(
                    SIDES[s],
                    &mix.describe(),
                    plan.mode,
                    a.connections,
                    a.warmup,
                    &out,
                );
                eprintln!(
                    "compare: round {} {:<28} {:<9} {:>9.0} ops/s  p99 {:>6} µs  errors {}",
                    round + 1,
                    mix.describe(),
                    SIDES[s],
                    r.ops_per_sec,
                    r.latency_us.as_ref().map(|q| q.p99).unwrap_or(0),
                    r.errors
                );
                let mut v = serde_json::to_value(&r)?;
                v["round"] = serde_json::json!(round + 1);
                all.push(v);
                got.entry((w, s)).or_default().push(r);
            }
        }
    }
    println!("{}", table(&mixes, &got, &a));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&all)? + "\n")?;
    }
    drop(ha);
    Ok(())
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
async fn failover(a: &Args) -> Result<String> {
    use hsm_tests::relay::{Fault as RelayFault, Relay};
    let mix = Mix::parse("es256")?;
    let mut t = format!(
        "ES256, closed loop, {} workers, {} connection(s); the fault hits the busiest of {} members after {} s; measured for {} s from the fault.\n\n\
         | fault | side | ok | failed | outlasted the window | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        a.concurrency, a.connections, a.members, a.warmup.max(2.0), a.after
    );
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
            let warmup = Duration::from_secs_f64(a.warmup.max(2.0));
            let plan = Plan {
                mode: Mode::Closed {
                    concurrency: a.concurrency,
                },
                warmup,
                duration: Duration::from_secs_f64(a.after),
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
            let r = report::Result::new(side, "es256", plan.mode, a.connections, a.warmup, &out);
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
            drop(ha);
        }
    }
    Ok(t)
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

/// The markdown tables: throughput and ratios, then latency quantiles.
fn table(mixes: &[Mix], got: &BTreeMap<(usize, usize), Vec<report::Result>>, a: &Args) -> String {
    let mut t = format!(
        "Closed loop, {} workers, {} connection(s) per side, {} s windows, {} round(s); medians over rounds.\n\n",
        a.concurrency, a.connections, a.seconds, a.rounds
    );
    t.push_str("| workload | direct ops/s | hsm-proxy ops/s | HAProxy ops/s | hsm-proxy / HAProxy | hsm-proxy / direct | errors direct / hsm-proxy / HAProxy |\n|---|---:|---:|---:|---:|---:|---|\n");
    for (w, mix) in mixes.iter().enumerate() {
        let runs = |s: usize| got.get(&(w, s)).cloned().unwrap_or_default();
        let ops = |s: usize| median(runs(s).iter().map(|r| r.ops_per_sec).collect());
        // Ratios of the same round, then the median.
        let ratio = |x: usize, y: usize| {
            median(
                runs(x)
                    .iter()
                    .zip(runs(y).iter())
                    .filter(|(_, b)| b.ops_per_sec > 0.0)
                    .map(|(a, b)| a.ops_per_sec / b.ops_per_sec)
                    .collect(),
            )
        };
        let errs = |s: usize| runs(s).iter().map(|r| r.errors).sum::<u64>();
        t.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {} / {} / {} |\n",
            mix.describe(),
            ops(0),
            ops(1),
            ops(2),
            ratio(1, 2),
            ratio(1, 0),
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

//! Throughput and latency through `hsm-proxy` vs straight to one member,
//! measured side by side.
//!
//! A group of `--members` real `hsm-node` processes (one PKI, one cloning
//! domain) with a real `hsm-proxy` in front (`TestProxy`, default options).
//! The keys (EC P-256, RSA-2048, oct-256) are created through the proxy, so
//! every member holds the same keys; the direct side uses them on member 0
//! over its own mTLS connection, the proxy side through the proxy's virtual
//! partition. Both log in as crypto user and run the same load loop.
//!
//! Per round: for each operation a throughput window direct and one through
//! the proxy with `--concurrency` tasks, then for each operation a latency
//! window of each at concurrency 1; the order of direct and proxy swaps
//! every round. Medians over rounds; the ratio proxy/direct and the added
//! latency (proxy minus direct, paired per round) are taken from windows of
//! the same round.
//!
//! ```text
//! cargo build --release -p hsm-node -p hsm-proxy -p hsm-tests
//! cargo run --release -p hsm-tests --bin proxy-bench -- --seconds 5 --rounds 3
//! ```
//!
//! The node and proxy binaries are found next to this executable (see
//! `hsm_tests::bin_dir`), so a release run uses `target/release/`. Every
//! loop ends by time; all traffic is on loopback.
#![forbid(unsafe_code)]

// Each benchmark binary uses a part of the shared module.
#[allow(dead_code)]
#[path = "../bench.rs"]
mod bench;

use anyhow::{bail, Context, Result};
use bench::{median, median_secs, ms, thousands, us_per_op, Load, Op, Payload, Window};
use clap::Parser;
use hsm_api::{Client, Role};
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use std::fmt::Write as _;

#[derive(Parser, Debug)]
#[command(about = "hsm-proxy in front of a group vs direct to one member")]
struct Args {
    /// Measured seconds per window.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured warm-up seconds before each window (load runs, not counted).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Rounds of the whole interleaved sequence; medians are over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Members of the group behind the proxy.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Concurrent client tasks of the throughput windows (both sides).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Client instances per side (each its own TCP+TLS connection; HTTP/2
    /// multiplexes the tasks over them).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Worker threads of the client's tokio runtime (default: all cores).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Skip the concurrency-1 latency windows.
    #[arg(long)]
    no_latency: bool,
    /// Operations to run, comma-separated: es256, rs256, a256gcm, rng.
    #[arg(long, value_delimiter = ',', default_values_t = [Op::Es256, Op::Rs256, Op::A256Gcm])]
    ops: Vec<Op>,
}

/// The issue's goal for proxy/direct throughput, where it sets one.
fn goal(op: Op) -> Option<f64> {
    match op {
        Op::Es256 => Some(0.6),
        Op::Rs256 => Some(0.9),
        Op::A256Gcm | Op::Rng => None,
    }
}

/// The issue's goal for the p50 latency the proxy adds at concurrency 1.
const ADDED_P50_GOAL_US: f64 = 100.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Direct,
    Proxy,
}

struct Setup {
    // Dropped in this order: the proxy first, then its members.
    proxy: TestProxy,
    nodes: Vec<TestNode>,
    direct: Vec<Client>,
    via_proxy: Vec<Client>,
    payload: Payload,
    /// proxy, member 0, member 1, …
    pids: Vec<u32>,
}

/// The pid of the `hsm-proxy` whose command line names this proxy's
/// configuration (the harness keeps the child private).
fn proxy_pid(proxy: &TestProxy) -> Result<u32> {
    let cfg = proxy.dir.join("proxy.toml");
    let want = cfg.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("hsm-proxy")) && args.contains(&want) {
            return Ok(pid);
        }
    }
    bail!("no hsm-proxy process with --config {want}")
}

impl Setup {
    async fn start(args: &Args) -> Result<Setup> {
        let nodes = TestNode::group(args.members).await.context("group")?;
        let proxy = TestProxy::start(&nodes, ProxyOptions::default())
            .await
            .context("starting hsm-proxy")?;
        // Created through the proxy: replicated to every member.
        bench::create_keys(&proxy.login(Role::CryptoOfficer).await?).await?;
        let payload = Payload::new()?;
        for (i, n) in nodes.iter().enumerate() {
            bench::check_answers(&[n.user().await?], &payload)
                .await
                .with_context(|| format!("the keys on member {i}"))?;
        }
        let mut direct = Vec::new();
        let mut via_proxy = Vec::new();
        for _ in 0..args.connections {
            direct.push(nodes[0].user().await?);
            via_proxy.push(proxy.login(Role::CryptoUser).await?);
        }
        bench::check_answers(&direct, &payload).await?;
        bench::check_answers(&via_proxy, &payload).await?;
        let mut pids = vec![proxy_pid(&proxy)?];
        for n in &nodes {
            pids.push(n.pid().context("member not running")?);
        }
        Ok(Setup {
            proxy,
            nodes,
            direct,
            via_proxy,
            payload,
            pids,
        })
    }

    /// Hedged copies the proxy has sent so far (all members).
    fn hedges(&self) -> f64 {
        let text = self.proxy.metrics_text().unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("hsm_proxy_hedges_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn window(&self, side: Side, op: Op, w: Window, hz: f64) -> Result<Measured> {
        let clients = match side {
            Side::Direct => &self.direct,
            Side::Proxy => &self.via_proxy,
        };
        let h0 = self.hedges();
        let load = bench::drive(clients, op, &self.payload, w, &self.pids, hz)
            .await
            .with_context(|| match side {
                Side::Direct => "direct to member 0",
                Side::Proxy => "through the proxy",
            })?;
        let hedged = match side {
            Side::Direct => 0.0,
            Side::Proxy => self.hedges() - h0,
        };
        Ok(Measured { load, hedged })
    }
}

struct Measured {
    load: Load,
    /// Hedged copies sent during the window and its warm-up.
    hedged: f64,
}

impl Measured {
    fn proxy_cpu(&self) -> f64 {
        self.load.cpu.procs.first().copied().unwrap_or(0.0)
    }
    fn members_cpu(&self) -> f64 {
        self.load.cpu.procs.iter().skip(1).sum()
    }
    fn member0_cpu(&self) -> f64 {
        self.load.cpu.procs.get(1).copied().unwrap_or(0.0)
    }
    /// Hedged copies per answered request, in %.
    fn hedged_pct(&self) -> f64 {
        if self.load.answered == 0 {
            0.0
        } else {
            self.hedged / self.load.answered as f64 * 100.0
        }
    }
}

struct Pair {
    round: usize,
    op: Op,
    direct: Measured,
    proxy: Measured,
}

fn us(d: Option<std::time::Duration>) -> f64 {
    d.map(|d| d.as_secs_f64() * 1e6).unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let args = Args::parse();
    bench::check_timing(args.seconds, args.warmup, args.rounds)?;
    if args.concurrency == 0 || args.connections == 0 || args.members == 0 || args.ops.is_empty() {
        bail!("--concurrency, --connections, --members and --ops must be non-zero");
    }
    let cores = bench::cores();
    let client_threads = args.client_threads.unwrap_or(cores).max(1);
    let hz = bench::clock_ticks_per_sec();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let setup = rt.block_on(Setup::start(&args))?;

    let tput = Window {
        concurrency: args.concurrency,
        warmup: args.warmup,
        seconds: args.seconds,
    };
    let lat = Window {
        concurrency: 1,
        ..tput
    };
    let mut throughput: Vec<Pair> = Vec::new();
    let mut latency: Vec<Pair> = Vec::new();
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [Side::Direct, Side::Proxy]
        } else {
            [Side::Proxy, Side::Direct]
        };
        let mut phases = vec![(tput, &mut throughput)];
        if !args.no_latency {
            phases.push((lat, &mut latency));
        }
        for (w, out) in phases {
            for &op in &args.ops {
                let mut got: Vec<(Side, Measured)> = Vec::new();
                for side in order {
                    let m = rt.block_on(setup.window(side, op, w, hz))?;
                    got.push((side, m));
                }
                let (mut direct, mut proxy) = (None, None);
                for (side, m) in got {
                    match side {
                        Side::Direct => direct = Some(m),
                        Side::Proxy => proxy = Some(m),
                    }
                }
                let (Some(direct), Some(proxy)) = (direct, proxy) else {
                    bail!("a side was not measured");
                };
                out.push(Pair {
                    round,
                    op,
                    direct,
                    proxy,
                });
            }
        }
    }
    let bins = (hsm_tests::bin("hsm-node"), hsm_tests::bin("hsm-proxy"));
    let members = setup.nodes.len();
    drop(setup);

    let mut out = String::new();
    writeln!(out, "### hsm-proxy vs direct to one member\n")?;
    writeln!(
        out,
        "Machine: {cores} cores ({}). Build: {}; `{}`, `{}`.",
        bench::cpu_model(),
        bench::profile(),
        bins.0.display(),
        bins.1.display()
    )?;
    writeln!(
        out,
        "Group: {members} `hsm-node` members behind 1 `hsm-proxy` (harness defaults); direct = \
         member 0. Each side: {} client connection(s) (mTLS to the member, TLS to the proxy), \
         crypto user, {client_threads} client runtime threads. Throughput: {} tasks; latency: 1 \
         task. {} s measured (+{} s warm-up) per window, {} round(s), interleaved (direct and \
         proxy alternate which goes first). Client, proxy and all members share the same {cores} \
         cores.\n",
        args.connections, args.concurrency, args.seconds, args.warmup, args.rounds
    )?;

    writeln!(
        out,
        "Throughput per round (CPU in cores busy during the window; \"members\" = all {members} \
         members together):\n"
    )?;
    writeln!(out, "| round | operation | direct ops/s | proxy ops/s | proxy/direct | direct p50 / p99 ms | proxy p50 / p99 ms | direct CPU client / member 0 / other | proxy CPU client / proxy / members / other | hedged |")?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|---:|")?;
    for r in &throughput {
        let (d, p) = (&r.direct, &r.proxy);
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {} / {} | {} / {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} / {:.2} | {:.1} % |",
            r.round,
            r.op.title(),
            thousands(d.load.ops_per_sec),
            thousands(p.load.ops_per_sec),
            p.load.ops_per_sec / d.load.ops_per_sec,
            ms(d.load.p50),
            ms(d.load.p99),
            ms(p.load.p50),
            ms(p.load.p99),
            d.load.cpu.bench,
            d.member0_cpu(),
            d.load.cpu.other + d.load.cpu.watched() - d.member0_cpu(),
            p.load.cpu.bench,
            p.proxy_cpu(),
            p.members_cpu(),
            p.load.cpu.other,
            p.hedged_pct(),
        )?;
    }

    writeln!(
        out,
        "\nThroughput, medians over rounds (CPU µs per answered operation):\n"
    )?;
    writeln!(out, "| operation | direct ops/s | proxy ops/s | proxy/direct | goal | met | client µs/op direct / proxy | proxy µs/op | members µs/op direct / proxy | total µs/op direct / proxy |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")?;
    for &op in &args.ops {
        let rs: Vec<&Pair> = throughput.iter().filter(|r| r.op == op).collect();
        let med = |f: &dyn Fn(&Pair) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let d = med(&|r| r.direct.load.ops_per_sec);
        let p = med(&|r| r.proxy.load.ops_per_sec);
        let ratio = p / d;
        let (g, met) = match goal(op) {
            Some(g) => (
                format!("≥ {g}"),
                if ratio >= g { "yes" } else { "**no**" }.to_string(),
            ),
            None => ("-".into(), "-".into()),
        };
        let per = |m: &Measured, cores: f64| us_per_op(cores, m.load.ops_per_sec);
        writeln!(
            out,
            "| {} | {} | {} | {:.3} | {g} | {met} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            op.title(),
            thousands(d),
            thousands(p),
            ratio,
            med(&|r| per(&r.direct, r.direct.load.cpu.bench)),
            med(&|r| per(&r.proxy, r.proxy.load.cpu.bench)),
            med(&|r| per(&r.proxy, r.proxy.proxy_cpu())),
            med(&|r| per(&r.direct, r.direct.member0_cpu())),
            med(&|r| per(&r.proxy, r.proxy.members_cpu())),
            med(&|r| per(&r.direct, r.direct.load.cpu.bench + r.direct.member0_cpu())),
            med(&|r| per(
                &r.proxy,
                r.proxy.load.cpu.bench + r.proxy.load.cpu.watched()
            )),
        )?;
    }

    if !latency.is_empty() {
        writeln!(out, "\nLatency at concurrency 1, per round (µs):\n")?;
        writeln!(out, "| round | operation | direct p50 | proxy p50 | added p50 | direct p99 | proxy p99 | added p99 | ops/s direct / proxy | proxy CPU µs/op | hedged |")?;
        writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for r in &latency {
            let (d, p) = (&r.direct.load, &r.proxy.load);
            writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} / {} | {:.1} | {:.1} % |",
                r.round,
                r.op.title(),
                us(d.p50),
                us(p.p50),
                us(p.p50) - us(d.p50),
                us(d.p99),
                us(p.p99),
                us(p.p99) - us(d.p99),
                thousands(d.ops_per_sec),
                thousands(p.ops_per_sec),
                us_per_op(r.proxy.proxy_cpu(), p.ops_per_sec),
                r.proxy.hedged_pct(),
            )?;
        }
        writeln!(
            out,
            "\nLatency at concurrency 1, medians over rounds (µs; added = proxy − direct of the \
             same round, then the median):\n"
        )?;
        writeln!(out, "| operation | direct p50 | proxy p50 | added p50 | goal | met | direct p99 | proxy p99 | added p99 | proxy CPU µs/op |")?;
        writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")?;
        for &op in &args.ops {
            let rs: Vec<&Pair> = latency.iter().filter(|r| r.op == op).collect();
            let added50 = median(
                rs.iter()
                    .map(|r| us(r.proxy.load.p50) - us(r.direct.load.p50))
                    .collect(),
            );
            let added99 = median(
                rs.iter()
                    .map(|r| us(r.proxy.load.p99) - us(r.direct.load.p99))
                    .collect(),
            );
            let met = if added50 <= ADDED_P50_GOAL_US {
                "yes"
            } else {
                "**no**"
            };
            writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.0} | ≤ {ADDED_P50_GOAL_US:.0} | {met} | {:.0} | {:.0} | {:.0} | {:.1} |",
                op.title(),
                median_secs(rs.iter().map(|r| &r.direct.load.p50)) * 1e6,
                median_secs(rs.iter().map(|r| &r.proxy.load.p50)) * 1e6,
                added50,
                median_secs(rs.iter().map(|r| &r.direct.load.p99)) * 1e6,
                median_secs(rs.iter().map(|r| &r.proxy.load.p99)) * 1e6,
                added99,
                median(
                    rs.iter()
                        .map(|r| us_per_op(r.proxy.proxy_cpu(), r.proxy.load.ops_per_sec))
                        .collect()
                ),
            )?;
        }
    }
    writeln!(
        out,
        "\nCPU from /proc/PID/stat utime+stime (client = this process) and /proc/stat (other = \
         the rest of the machine). hedged = hedged copies the proxy sent during the window and \
         its warm-up per answered request (`hsm_proxy_hedges_total`)."
    )?;
    print!("{out}");
    Ok(())
}

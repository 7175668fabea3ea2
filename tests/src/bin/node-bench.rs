//! Node throughput vs in-process aws-lc-rs, measured side by side.
//!
//! For ES256 sign, RS256 sign and A256GCM encrypt of 1 KiB, this measures
//! (1) raw aws-lc-rs on `--threads` OS threads and (2) one real `hsm-node`
//! process over mutual TLS with keep-alive, driven by `--concurrency` client
//! tasks, back to back for each operation, for `--rounds` rounds. It prints
//! Markdown: per-round figures, then per operation the median ops/s of both,
//! the ratio node/raw, latency percentiles and where the CPU went.
//!
//! ```text
//! cargo build --release -p hsm-node -p hsm-tests
//! cargo run --release -p hsm-tests --bin node-bench -- --seconds 5 --rounds 3
//! ```
//!
//! The node binary is found next to this executable (see
//! `hsm_tests::bin_dir`), so a release run uses `target/release/hsm-node`.
//! Every loop ends by time; all traffic is on loopback.
#![forbid(unsafe_code)]

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::aead::{Aad, RandomizedNonceKey, AES_256_GCM};
use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use clap::Parser;
use hsm_api::{Client, Curve, EncryptionAlgorithm, KeyCreateParameters, SignatureAlgorithm};
use hsm_tests::TestNode;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "hsm-node throughput over mTLS vs in-process aws-lc-rs")]
struct Args {
    /// Measured seconds per operation and side, per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured warm-up seconds before each measurement (load runs, not counted).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Rounds of the whole interleaved sequence; medians are over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// OS threads for the raw aws-lc-rs side (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Concurrent client tasks against the node.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Client instances (each its own pool, so its own TCP+TLS connection;
    /// HTTP/2 multiplexes the tasks over them). Tasks are spread round-robin.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Worker threads of the client's tokio runtime (default: all cores).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Operations to run, comma-separated: es256, rs256, a256gcm.
    #[arg(long, value_delimiter = ',', default_values_t = [Op::Es256, Op::Rs256, Op::A256Gcm])]
    ops: Vec<Op>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    Es256,
    Rs256,
    #[value(name = "a256gcm")]
    A256Gcm,
    /// `POST /rng` of 32 bytes: next to no crypto, so the node side shows
    /// the cost of a request itself. Not run unless asked for.
    Rng,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Es256 => "es256",
            Op::Rs256 => "rs256",
            Op::A256Gcm => "a256gcm",
            Op::Rng => "rng",
        })
    }
}

impl Op {
    fn title(self) -> &'static str {
        match self {
            Op::Es256 => "ES256 sign (P-256)",
            Op::Rs256 => "RS256 sign (RSA-2048)",
            Op::A256Gcm => "A256GCM encrypt 1 KiB",
            Op::Rng => "RNG 32 bytes (request baseline)",
        }
    }
    /// The issue's goal for node/raw, where it sets one.
    fn goal(self) -> Option<f64> {
        match self {
            Op::Es256 => Some(0.5),
            Op::Rs256 => Some(0.9),
            Op::A256Gcm | Op::Rng => None,
        }
    }
    /// Operations between two clock reads on the raw side: the clock read
    /// must stay negligible next to the operation (AES-GCM of 1 KiB is
    /// ~140 ns, a clock read ~25 ns).
    fn batch(self) -> u64 {
        match self {
            Op::Es256 => 4,
            Op::Rs256 => 1,
            Op::A256Gcm | Op::Rng => 64,
        }
    }
    fn key_name(self) -> &'static str {
        match self {
            Op::Es256 => "bench-ec",
            Op::Rs256 => "bench-rsa",
            Op::A256Gcm => "bench-aes",
            Op::Rng => "",
        }
    }
}

const PLAINTEXT_LEN: usize = 1024;
const RNG_LEN: usize = 32;

// ---------------------------------------------------------------------------
// CPU accounting from /proc (Linux): process and whole-machine ticks.

#[derive(Clone, Copy, Default)]
struct CpuSample {
    /// utime+stime of this process (all threads), in ticks.
    bench: u64,
    /// utime+stime of the node process, in ticks.
    node: u64,
    /// Non-idle ticks of the whole machine, summed over CPUs.
    busy: u64,
    at: Option<Instant>,
}

fn proc_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which ends with the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum()
}

fn sample(node_pid: Option<u32>) -> CpuSample {
    CpuSample {
        bench: proc_ticks("self"),
        node: node_pid.map(|p| proc_ticks(&p.to_string())).unwrap_or(0),
        busy: machine_busy_ticks(),
        at: Some(Instant::now()),
    }
}

/// CPU used between two samples, in cores (1.0 = one core busy all along).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    bench: f64,
    node: f64,
    /// Everything else on the machine (other processes, kernel).
    other: f64,
}

fn cpu_between(a: CpuSample, b: CpuSample, hz: f64) -> CpuUse {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    if secs <= 0.0 || hz <= 0.0 {
        return CpuUse::default();
    }
    let cores = |t: u64| t as f64 / hz / secs;
    let bench = cores(b.bench.saturating_sub(a.bench));
    let node = cores(b.node.saturating_sub(a.node));
    let busy = cores(b.busy.saturating_sub(a.busy));
    CpuUse {
        bench,
        node,
        other: (busy - bench - node).max(0.0),
    }
}

fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------
// Raw aws-lc-rs.

struct RawKeys {
    ec: EcdsaKeyPair,
    rsa: RsaKeyPair,
    aes: RandomizedNonceKey,
}

impl RawKeys {
    fn generate() -> Result<RawKeys> {
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| anyhow!("P-256 keygen: {e}"))?;
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| anyhow!("RSA keygen: {e}"))?;
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).map_err(|e| anyhow!("rand: {e}"))?;
        let aes = RandomizedNonceKey::new(&AES_256_GCM, &k).map_err(|e| anyhow!("AES key: {e}"))?;
        Ok(RawKeys { ec, rsa, aes })
    }
}

/// One thread's loop: runs `op` until `end`, counting the operations whose
/// batch started at or after `start` (the first clock read past `start`)
/// and the exact time between that read and the last one.
fn raw_thread(keys: &RawKeys, op: Op, start: Instant, end: Instant) -> Result<(u64, Duration)> {
    let mut digest = [0u8; 32];
    aws_lc_rs::rand::fill(&mut digest).map_err(|e| anyhow!("rand: {e}"))?;
    let plaintext = vec![0x5au8; PLAINTEXT_LEN];
    let mut buf: Vec<u8> = Vec::with_capacity(PLAINTEXT_LEN + 16);
    let mut rsa_sig = vec![0u8; keys.rsa.public_modulus_len()];
    let mut rng_buf = [0u8; RNG_LEN];
    let batch = op.batch();
    let mut counted = 0u64;
    let mut t0: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= end {
            let since = t0.map(|t| now.duration_since(t)).unwrap_or_default();
            return Ok((counted, since));
        }
        if t0.is_none() && now >= start {
            t0 = Some(now);
        }
        for _ in 0..batch {
            match op {
                Op::Es256 => {
                    let d = Digest::import_less_safe(&digest, &SHA256)
                        .map_err(|e| anyhow!("digest: {e}"))?;
                    let sig = keys.ec.sign_digest(&d).map_err(|e| anyhow!("ES256: {e}"))?;
                    black_box(sig);
                }
                Op::Rs256 => {
                    let d = Digest::import_less_safe(&digest, &SHA256)
                        .map_err(|e| anyhow!("digest: {e}"))?;
                    keys.rsa
                        .sign_digest(&RSA_PKCS1_SHA256, &d, &mut rsa_sig)
                        .map_err(|e| anyhow!("RS256: {e}"))?;
                    black_box(&rsa_sig);
                }
                Op::A256Gcm => {
                    buf.clear();
                    buf.extend_from_slice(&plaintext);
                    let nonce = keys
                        .aes
                        .seal_in_place_append_tag(Aad::empty(), &mut buf)
                        .map_err(|e| anyhow!("A256GCM: {e}"))?;
                    black_box((&nonce, &buf));
                }
                Op::Rng => {
                    aws_lc_rs::rand::fill(&mut rng_buf).map_err(|e| anyhow!("rand: {e}"))?;
                    black_box(&rng_buf);
                }
            }
        }
        if t0.is_some() {
            counted += batch;
        }
    }
}

struct Measured {
    ops_per_sec: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    cpu: CpuUse,
}

fn measure_raw(
    keys: &Arc<RawKeys>,
    op: Op,
    threads: usize,
    args: &Args,
    hz: f64,
) -> Result<Measured> {
    let warm = Duration::from_secs_f64(args.warmup);
    let run = Duration::from_secs_f64(args.seconds);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for _ in 0..threads {
        let keys = keys.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || -> Result<(u64, Duration)> {
            barrier.wait();
            // All threads derive the same window from the same clock after
            // the barrier; the main thread samples CPU across it.
            let start = Instant::now() + warm;
            raw_thread(&keys, op, start, start + run)
        }));
    }
    barrier.wait();
    let t = Instant::now();
    std::thread::sleep(warm);
    let a = sample(None);
    std::thread::sleep((t + warm + run).saturating_duration_since(Instant::now()));
    let b = sample(None);
    let mut rate = 0.0;
    for h in handles {
        let (n, d) = h.join().map_err(|_| anyhow!("raw thread panicked"))??;
        if d.is_zero() {
            bail!("raw thread measured no time");
        }
        rate += n as f64 / d.as_secs_f64();
    }
    Ok(Measured {
        ops_per_sec: rate,
        p50: None,
        p99: None,
        cpu: cpu_between(a, b, hz),
    })
}

// ---------------------------------------------------------------------------
// The node over mTLS.

struct NodeSide {
    node: TestNode,
    clients: Vec<Client>,
    digest: Vec<u8>,
    plaintext: Vec<u8>,
}

impl NodeSide {
    async fn start(connections: usize) -> Result<NodeSide> {
        let node = TestNode::start().await.context("starting hsm-node")?;
        let co = node.officer().await?;
        co.create_key(Op::Es256.key_name(), &KeyCreateParameters::ec(Curve::P256))
            .await?;
        co.create_key(Op::Rs256.key_name(), &KeyCreateParameters::rsa(2048))
            .await?;
        co.create_key(Op::A256Gcm.key_name(), &KeyCreateParameters::oct(256))
            .await?;
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            // Each is its own pool; logging in opens its connection, so the
            // load afterwards runs over an established keep-alive connection.
            clients.push(node.user().await?);
        }
        let mut digest = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut digest).map_err(|e| anyhow!("rand: {e}"))?;
        let side = NodeSide {
            node,
            clients,
            digest,
            plaintext: vec![0x5au8; PLAINTEXT_LEN],
        };
        // One checked answer per operation: the node really does the work.
        for c in &side.clients {
            for op in [Op::Es256, Op::Rs256, Op::A256Gcm, Op::Rng] {
                let len = one(c, op, &side.digest, &side.plaintext).await?;
                let want = match op {
                    Op::Es256 => 64,
                    Op::Rs256 => 256,
                    Op::A256Gcm => PLAINTEXT_LEN,
                    Op::Rng => RNG_LEN,
                };
                if len != want {
                    bail!("{op}: answer of {len} bytes, expected {want}");
                }
            }
        }
        Ok(side)
    }
}

/// One operation against the node; returns the length of the answer's value.
async fn one(c: &Client, op: Op, digest: &[u8], plaintext: &[u8]) -> Result<usize> {
    let name = op.key_name();
    let r = match op {
        Op::Es256 => c.sign(name, None, SignatureAlgorithm::Es256, digest).await,
        Op::Rs256 => c.sign(name, None, SignatureAlgorithm::Rs256, digest).await,
        Op::A256Gcm => {
            c.encrypt(name, None, EncryptionAlgorithm::A256Gcm, plaintext, None)
                .await
        }
        Op::Rng => {
            let v = c.rng(RNG_LEN as u32).await;
            return Ok(v.with_context(|| format!("{op} against the node"))?.len());
        }
    };
    let r = r.with_context(|| format!("{op} against the node"))?;
    Ok(r.value.as_slice().len())
}

async fn measure_node(side: &NodeSide, op: Op, args: &Args, hz: f64) -> Result<Measured> {
    let warm = Duration::from_secs_f64(args.warmup);
    let run = Duration::from_secs_f64(args.seconds);
    let t = Instant::now();
    let (start, end) = (t + warm, t + warm + run);
    let digest = Arc::new(side.digest.clone());
    let plaintext = Arc::new(side.plaintext.clone());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..args.concurrency.max(1) {
        let c = side.clients[i % side.clients.len()].clone();
        let (digest, plaintext) = (digest.clone(), plaintext.clone());
        set.spawn(async move {
            // Latencies of the answers that arrived inside the window.
            let mut lat: Vec<Duration> = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return Ok::<_, anyhow::Error>(lat);
                }
                one(&c, op, &digest, &plaintext).await?;
                let t1 = Instant::now();
                if t1 >= start && t1 < end {
                    lat.push(t1 - t0);
                }
            }
        });
    }
    let pid = side.node.pid();
    tokio::time::sleep_until(start.into()).await;
    let a = sample(pid);
    tokio::time::sleep_until(end.into()).await;
    let b = sample(pid);
    let mut all: Vec<Duration> = Vec::new();
    while let Some(r) = set.join_next().await {
        // The first error aborts the run (the set's other tasks are
        // aborted when it drops).
        all.extend(r.context("client task")??);
    }
    all.sort_unstable();
    let pct = |p: f64| -> Option<Duration> {
        if all.is_empty() {
            return None;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all.get(i).copied()
    };
    Ok(Measured {
        ops_per_sec: all.len() as f64 / run.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        cpu: cpu_between(a, b, hz),
    })
}

// ---------------------------------------------------------------------------
// Report.

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU microseconds per operation from cores busy and ops/s.
fn us_per_op(cores: f64, ops_per_sec: f64) -> f64 {
    cores / ops_per_sec * 1e6
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
        .unwrap_or_else(|| "-".into())
}

fn thousands(x: f64) -> String {
    let digits = (x.round() as u64).to_string();
    let groups: Vec<String> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect();
    groups.join(",")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

struct RoundResult {
    round: usize,
    op: Op,
    raw: Measured,
    node: Measured,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    if !(0.0..=60.0).contains(&args.warmup) {
        bail!("--warmup must be in [0, 60]");
    }
    if args.rounds == 0 || args.concurrency == 0 || args.connections == 0 || args.ops.is_empty() {
        bail!("--rounds, --concurrency, --connections and --ops must be non-zero");
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = args.threads.unwrap_or(cores).max(1);
    let client_threads = args.client_threads.unwrap_or(cores).max(1);
    let hz = clock_ticks_per_sec();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let keys = Arc::new(RawKeys::generate()?);
    let side = rt.block_on(NodeSide::start(args.connections))?;

    let mut results: Vec<RoundResult> = Vec::new();
    for round in 1..=args.rounds {
        for &op in &args.ops {
            let raw = measure_raw(&keys, op, threads, &args, hz)?;
            let node = rt.block_on(measure_node(&side, op, &args, hz))?;
            results.push(RoundResult {
                round,
                op,
                raw,
                node,
            });
        }
    }
    let node_bin = hsm_tests::bin("hsm-node");
    drop(side);

    let mut out = String::new();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    writeln!(out, "### hsm-node throughput vs in-process aws-lc-rs\n")?;
    writeln!(
        out,
        "Machine: {cores} cores ({}). Build: {profile}; node binary `{}`.",
        cpu_model(),
        node_bin.display()
    )?;
    writeln!(
        out,
        "Raw: {threads} threads. Node: 1 `hsm-node` process, mTLS (TLS 1.3) keep-alive over {} \
         client connection(s), {} concurrent tasks on {client_threads} client runtime threads. \
         {} s measured (+{} s warm-up) per operation and side, {} round(s), interleaved.\n",
        args.connections, args.concurrency, args.seconds, args.warmup, args.rounds
    )?;

    writeln!(out, "Per round (CPU in cores busy during the node window: bench client / node / everything else):\n")?;
    writeln!(out, "| round | operation | raw ops/s | node ops/s | node/raw | p50 ms | p99 ms | CPU client / node / other | node CPU µs/op | client CPU µs/op | other CPU during raw |")?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")?;
    for r in &results {
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {} | {} | {:.2} / {:.2} / {:.2} | {:.1} | {:.1} | {:.2} |",
            r.round,
            r.op.title(),
            thousands(r.raw.ops_per_sec),
            thousands(r.node.ops_per_sec),
            r.node.ops_per_sec / r.raw.ops_per_sec,
            ms(r.node.p50),
            ms(r.node.p99),
            r.node.cpu.bench,
            r.node.cpu.node,
            r.node.cpu.other,
            us_per_op(r.node.cpu.node, r.node.ops_per_sec),
            us_per_op(r.node.cpu.bench, r.node.ops_per_sec),
            r.raw.cpu.other,
        )?;
    }

    writeln!(out, "\nMedians over rounds:\n")?;
    writeln!(out, "| operation | raw ops/s | node ops/s | node/raw | goal | met | p50 ms | p99 ms | client CPU share | CPU µs/op node / raw | node/raw per CPU-second |")?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    )?;
    for &op in &args.ops {
        let rs: Vec<&RoundResult> = results.iter().filter(|r| r.op == op).collect();
        let raw = median(rs.iter().map(|r| r.raw.ops_per_sec).collect());
        let node = median(rs.iter().map(|r| r.node.ops_per_sec).collect());
        let p50 = median(
            rs.iter()
                .filter_map(|r| r.node.p50)
                .map(|d| d.as_secs_f64())
                .collect(),
        );
        let p99 = median(
            rs.iter()
                .filter_map(|r| r.node.p99)
                .map(|d| d.as_secs_f64())
                .collect(),
        );
        let share = median(
            rs.iter()
                .map(|r| {
                    let c = r.node.cpu;
                    if c.bench + c.node > 0.0 {
                        c.bench / (c.bench + c.node)
                    } else {
                        f64::NAN
                    }
                })
                .collect(),
        );
        // Ops per CPU-second the node spent vs ops per CPU-second the raw
        // threads spent: what the ratio would be if the node had the cores
        // to itself (client elsewhere) and scaled linearly. Derived, not the goal.
        let per_cpu = median(
            rs.iter()
                .map(|r| {
                    let node_eff = r.node.ops_per_sec / r.node.cpu.node;
                    let raw_eff = r.raw.ops_per_sec / r.raw.cpu.bench;
                    node_eff / raw_eff
                })
                .collect(),
        );
        let node_us = median(
            rs.iter()
                .map(|r| us_per_op(r.node.cpu.node, r.node.ops_per_sec))
                .collect(),
        );
        let raw_us = median(
            rs.iter()
                .map(|r| us_per_op(r.raw.cpu.bench, r.raw.ops_per_sec))
                .collect(),
        );
        let ratio = node / raw;
        let (goal, met) = match op.goal() {
            Some(g) => (
                format!("≥ {g}"),
                if ratio >= g { "yes" } else { "**no**" }.to_string(),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        writeln!(
            out,
            "| {} | {} | {} | {:.3} | {goal} | {met} | {:.2} | {:.2} | {:.0} % | {:.1} / {:.2} | {:.3} |",
            op.title(),
            thousands(raw),
            thousands(node),
            ratio,
            p50 * 1e3,
            p99 * 1e3,
            share * 100.0,
            node_us,
            raw_us,
            per_cpu,
        )?;
    }
    writeln!(
        out,
        "\nClient CPU share = bench process CPU / (bench + node CPU) during the node window \
         (from /proc/PID/stat utime+stime); client and node share the same {cores} cores. \
         node/raw per CPU-second = (node ops/s / node CPU) / (raw ops/s / raw CPU): the \
         node's cost per operation against the bare library's, client excluded."
    )?;
    print!("{out}");
    Ok(())
}

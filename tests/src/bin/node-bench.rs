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

// Each benchmark binary uses a part of the shared module.
#[allow(dead_code)]
#[path = "../bench.rs"]
mod bench;

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::aead::{Aad, RandomizedNonceKey, AES_256_GCM};
use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use bench::{
    clock_ticks_per_sec, cpu_between, cpu_model, median, median_secs, ms, sample, thousands,
    us_per_op, CpuUse, Load, Op, Payload, Window, PLAINTEXT_LEN, RNG_LEN,
};
use clap::Parser;
use hsm_api::Client;
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

/// The issue's goal for node/raw, where it sets one.
fn goal(op: Op) -> Option<f64> {
    match op {
        Op::Es256 => Some(0.5),
        Op::Rs256 => Some(0.9),
        Op::A256Gcm | Op::Rng => None,
    }
}

/// Operations between two clock reads on the raw side: the clock read
/// must stay negligible next to the operation (AES-GCM of 1 KiB is
/// ~140 ns, a clock read ~25 ns).
fn batch(op: Op) -> u64 {
    match op {
        Op::Es256 => 4,
        Op::Rs256 => 1,
        Op::A256Gcm | Op::Rng => 64,
    }
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
    let batch = batch(op);
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
    let a = sample(&[]);
    std::thread::sleep((t + warm + run).saturating_duration_since(Instant::now()));
    let b = sample(&[]);
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
        cpu: cpu_between(&a, &b, hz),
    })
}

// ---------------------------------------------------------------------------
// The node over mTLS.

struct NodeSide {
    node: TestNode,
    clients: Vec<Client>,
    payload: Payload,
}

impl NodeSide {
    async fn start(connections: usize) -> Result<NodeSide> {
        let node = TestNode::start().await.context("starting hsm-node")?;
        bench::create_keys(&node.officer().await?).await?;
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            // Each is its own pool; logging in opens its connection, so the
            // load afterwards runs over an established keep-alive connection.
            clients.push(node.user().await?);
        }
        let payload = Payload::new()?;
        bench::check_answers(&clients, &payload).await?;
        Ok(NodeSide {
            node,
            clients,
            payload,
        })
    }
}

async fn measure_node(side: &NodeSide, op: Op, args: &Args, hz: f64) -> Result<Load> {
    let w = Window {
        concurrency: args.concurrency,
        warmup: args.warmup,
        seconds: args.seconds,
    };
    let pids: Vec<u32> = side.node.pid().into_iter().collect();
    bench::drive(&side.clients, op, &side.payload, w, &pids, hz).await
}

// ---------------------------------------------------------------------------
// Report.

struct RoundResult {
    round: usize,
    op: Op,
    raw: Measured,
    node: Load,
}

fn main() -> Result<()> {
    let args = Args::parse();
    bench::check_timing(args.seconds, args.warmup, args.rounds)?;
    if args.concurrency == 0 || args.connections == 0 || args.ops.is_empty() {
        bail!("--concurrency, --connections and --ops must be non-zero");
    }
    let cores = bench::cores();
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
    let profile = bench::profile();
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
            r.node.cpu.watched(),
            r.node.cpu.other,
            us_per_op(r.node.cpu.watched(), r.node.ops_per_sec),
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
        let p50 = median_secs(rs.iter().map(|r| &r.node.p50));
        let p99 = median_secs(rs.iter().map(|r| &r.node.p99));
        let share = median(
            rs.iter()
                .map(|r| {
                    let c = &r.node.cpu;
                    if c.bench + c.watched() > 0.0 {
                        c.bench / (c.bench + c.watched())
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
                    let node_eff = r.node.ops_per_sec / r.node.cpu.watched();
                    let raw_eff = r.raw.ops_per_sec / r.raw.cpu.bench;
                    node_eff / raw_eff
                })
                .collect(),
        );
        let node_us = median(
            rs.iter()
                .map(|r| us_per_op(r.node.cpu.watched(), r.node.ops_per_sec))
                .collect(),
        );
        let raw_us = median(
            rs.iter()
                .map(|r| us_per_op(r.raw.cpu.bench, r.raw.ops_per_sec))
                .collect(),
        );
        let ratio = node / raw;
        let (goal, met) = match goal(op) {
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

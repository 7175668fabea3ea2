//! Shared by the benchmark binaries (`node-bench`, `proxy-bench`), which
//! include it with `#[path = "../bench.rs"] mod bench;`: the operations, the
//! keys they use, the client load loop, CPU accounting from /proc and the
//! report helpers. Not part of the library.

use anyhow::{anyhow, bail, Context, Result};
use hsm_api::{Client, Curve, EncryptionAlgorithm, KeyCreateParameters, SignatureAlgorithm};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PLAINTEXT_LEN: usize = 1024;
pub const RNG_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Es256,
    Rs256,
    #[value(name = "a256gcm")]
    A256Gcm,
    /// `POST /rng` of 32 bytes: next to no crypto, so it shows the cost of
    /// a request itself. Not run unless asked for.
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
    pub const ALL: [Op; 4] = [Op::Es256, Op::Rs256, Op::A256Gcm, Op::Rng];

    pub fn title(self) -> &'static str {
        match self {
            Op::Es256 => "ES256 sign (P-256)",
            Op::Rs256 => "RS256 sign (RSA-2048)",
            Op::A256Gcm => "A256GCM encrypt 1 KiB",
            Op::Rng => "RNG 32 bytes (request baseline)",
        }
    }
    pub fn key_name(self) -> &'static str {
        match self {
            Op::Es256 => "bench-ec",
            Op::Rs256 => "bench-rsa",
            Op::A256Gcm => "bench-aes",
            Op::Rng => "",
        }
    }
    /// Length of a correct answer's value.
    fn answer_len(self) -> usize {
        match self {
            Op::Es256 => 64,
            Op::Rs256 => 256,
            Op::A256Gcm => PLAINTEXT_LEN,
            Op::Rng => RNG_LEN,
        }
    }
}

/// Creates the keys of the operations (EC P-256, RSA-2048, oct-256) with a
/// crypto officer's client.
pub async fn create_keys(co: &Client) -> Result<()> {
    co.create_key(Op::Es256.key_name(), &KeyCreateParameters::ec(Curve::P256))
        .await?;
    co.create_key(Op::Rs256.key_name(), &KeyCreateParameters::rsa(2048))
        .await?;
    co.create_key(Op::A256Gcm.key_name(), &KeyCreateParameters::oct(256))
        .await?;
    Ok(())
}

/// What every request carries: a random 32-byte digest to sign and 1 KiB
/// to encrypt.
#[derive(Clone)]
pub struct Payload {
    pub digest: Arc<Vec<u8>>,
    pub plaintext: Arc<Vec<u8>>,
}

impl Payload {
    pub fn new() -> Result<Payload> {
        let mut digest = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut digest).map_err(|e| anyhow!("rand: {e}"))?;
        Ok(Payload {
            digest: Arc::new(digest),
            plaintext: Arc::new(vec![0x5au8; PLAINTEXT_LEN]),
        })
    }
}

/// One operation; returns the length of the answer's value.
pub async fn one(c: &Client, op: Op, p: &Payload) -> Result<usize> {
    let name = op.key_name();
    let r = match op {
        Op::Es256 => {
            c.sign(name, None, SignatureAlgorithm::Es256, &p.digest)
                .await
        }
        Op::Rs256 => {
            c.sign(name, None, SignatureAlgorithm::Rs256, &p.digest)
                .await
        }
        Op::A256Gcm => {
            c.encrypt(name, None, EncryptionAlgorithm::A256Gcm, &p.plaintext, None)
                .await
        }
        Op::Rng => {
            let v = c.rng(RNG_LEN as u32).await;
            return Ok(v.with_context(|| format!("{op}"))?.len());
        }
    };
    let r = r.with_context(|| format!("{op}"))?;
    Ok(r.value.as_slice().len())
}

/// One checked answer per operation and client: the server really does the
/// work (and the connection is open before anything is measured).
pub async fn check_answers(clients: &[Client], p: &Payload) -> Result<()> {
    for c in clients {
        for op in Op::ALL {
            let len = one(c, op, p).await?;
            if len != op.answer_len() {
                bail!("{op}: answer of {len} bytes, expected {}", op.answer_len());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The load loop.

/// One measured window of client load.
pub struct Load {
    /// Answers that arrived inside the window, per second.
    pub ops_per_sec: f64,
    /// Every answer, warm-up included.
    pub answered: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub cpu: CpuUse,
}

/// How a window of load is run.
#[derive(Clone, Copy)]
pub struct Window {
    /// Concurrent client tasks.
    pub concurrency: usize,
    /// Unmeasured seconds of load before the window.
    pub warmup: f64,
    /// Measured seconds.
    pub seconds: f64,
}

/// `w.concurrency` tasks share `clients` round-robin, each sending `op` one
/// request after the other; after `w.warmup` the window of `w.seconds` is
/// measured: answers that arrive inside it, their latencies (send to
/// answer), and the CPU of this process, of `pids` and of the machine
/// across it. Only successful answers count; the first error aborts.
pub async fn drive(
    clients: &[Client],
    op: Op,
    p: &Payload,
    w: Window,
    pids: &[u32],
    hz: f64,
) -> Result<Load> {
    if clients.is_empty() {
        bail!("no clients");
    }
    let warm = Duration::from_secs_f64(w.warmup);
    let run = Duration::from_secs_f64(w.seconds);
    let t = Instant::now();
    let (start, end) = (t + warm, t + warm + run);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..w.concurrency.max(1) {
        let c = clients[i % clients.len()].clone();
        let p = p.clone();
        set.spawn(async move {
            // Latencies of the answers that arrived inside the window.
            let mut lat: Vec<Duration> = Vec::new();
            let mut answered = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return Ok::<_, anyhow::Error>((lat, answered));
                }
                one(&c, op, &p).await?;
                answered += 1;
                let t1 = Instant::now();
                if t1 >= start && t1 < end {
                    lat.push(t1 - t0);
                }
            }
        });
    }
    tokio::time::sleep_until(start.into()).await;
    let a = sample(pids);
    tokio::time::sleep_until(end.into()).await;
    let b = sample(pids);
    let mut all: Vec<Duration> = Vec::new();
    let mut answered = 0;
    while let Some(r) = set.join_next().await {
        // The first error aborts the run (the set's other tasks are
        // aborted when it drops).
        let (lat, n) = r.context("client task")??;
        all.extend(lat);
        answered += n;
    }
    all.sort_unstable();
    Ok(Load {
        ops_per_sec: all.len() as f64 / run.as_secs_f64(),
        answered,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        cpu: cpu_between(&a, &b, hz),
    })
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(i).copied()
}

// ---------------------------------------------------------------------------
// CPU accounting from /proc (Linux): process and whole-machine ticks.

#[derive(Clone, Default)]
pub struct CpuSample {
    /// utime+stime of this process (all threads), in ticks.
    bench: u64,
    /// utime+stime of each watched process, in ticks.
    procs: Vec<u64>,
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

pub fn sample(pids: &[u32]) -> CpuSample {
    CpuSample {
        bench: proc_ticks("self"),
        procs: pids.iter().map(|p| proc_ticks(&p.to_string())).collect(),
        busy: machine_busy_ticks(),
        at: Some(Instant::now()),
    }
}

/// CPU used between two samples, in cores (1.0 = one core busy all along).
#[derive(Clone, Default)]
pub struct CpuUse {
    /// This process (the load generator).
    pub bench: f64,
    /// Each watched process, in the order of the pids sampled.
    pub procs: Vec<f64>,
    /// Everything else on the machine (other processes, kernel).
    pub other: f64,
}

impl CpuUse {
    /// The watched processes together.
    pub fn watched(&self) -> f64 {
        self.procs.iter().sum()
    }
}

pub fn cpu_between(a: &CpuSample, b: &CpuSample, hz: f64) -> CpuUse {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    if secs <= 0.0 || hz <= 0.0 {
        return CpuUse::default();
    }
    let cores = |t: u64| t as f64 / hz / secs;
    let bench = cores(b.bench.saturating_sub(a.bench));
    let procs: Vec<f64> = a
        .procs
        .iter()
        .zip(&b.procs)
        .map(|(x, y)| cores(y.saturating_sub(*x)))
        .collect();
    let busy = cores(b.busy.saturating_sub(a.busy));
    let other = (busy - bench - procs.iter().sum::<f64>()).max(0.0);
    CpuUse {
        bench,
        procs,
        other,
    }
}

pub fn clock_ticks_per_sec() -> f64 {
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
// Report helpers.

pub fn median(mut v: Vec<f64>) -> f64 {
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

/// Median of the durations that are present, in seconds.
pub fn median_secs<'a>(v: impl Iterator<Item = &'a Option<Duration>>) -> f64 {
    median(v.filter_map(|d| d.map(|d| d.as_secs_f64())).collect())
}

/// CPU microseconds per operation from cores busy and ops/s.
pub fn us_per_op(cores: f64, ops_per_sec: f64) -> f64 {
    cores / ops_per_sec * 1e6
}

pub fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
        .unwrap_or_else(|| "-".into())
}

pub fn thousands(x: f64) -> String {
    let digits = (x.round() as u64).to_string();
    let groups: Vec<String> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect();
    groups.join(",")
}

pub fn cpu_model() -> String {
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

/// Checks the common timing flags.
pub fn check_timing(seconds: f64, warmup: f64, rounds: usize) -> Result<()> {
    if !(seconds > 0.0 && seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    if !(0.0..=60.0).contains(&warmup) {
        bail!("--warmup must be in [0, 60]");
    }
    if rounds == 0 {
        bail!("--rounds must be non-zero");
    }
    Ok(())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The machine in one line: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let (cpu, cores) = (cpu_model(), cores());
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(|l| l.trim_start_matches("MemTotal:").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), MemTotal {mem_total}, Linux {kernel}")
}

/// The commit the binaries were built from and whether the node's sources
/// differed from it (best effort: the checkout this tool was compiled in).
pub fn source_state() -> String {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return format!("{} (not a git checkout)", repo.display());
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "hsm-node",
        "hsm-api",
        "server",
        "Cargo.lock",
    ])
    .map(|s| {
        if s.is_empty() {
            "node sources clean".to_string()
        } else {
            format!("uncommitted changes in: {}", s.lines().count())
        }
    })
    .unwrap_or_default();
    format!("commit {head} ({dirty})")
}

//! Capacity of one `hsm-node` partition at the seed appliance's figures:
//! 218,000 AES-256, 91,000 P-256 and 19,000 RSA-2048 keys in one partition.
//!
//! 1. Creates a node directory with the `hsm-node` CLI, as the harness does
//!    (`pki init-ca`, `pki issue`, `init`, `partition create`,
//!    `partition register-client`).
//! 2. Loads the partition offline through the library: every key is a new
//!    name with one version whose record is built as `service/keys.rs`
//!    builds a created key's (sealed material and material digest from
//!    `PartitionState::seal_material`, public JWK, default key_ops, enabled),
//!    a few thousand names per `Store::with_objects` transaction. RSA-2048
//!    material comes from a pool of `--rsa-pool` distinct generated keys
//!    reused round-robin under distinct names (RSA keygen costs ~60 ms).
//! 3. Measures: start-up (spawn of `hsm-node run` to the first ready
//!    `GET /health` over mTLS, `--starts` times, SIGTERM between), RSS from
//!    `/proc/PID/status` after start-up, after a warm phase of random key
//!    operations and after a sweep that uses every key once, the size of
//!    `data.redb`, and the inventory compare (body and on-the-wire sizes,
//!    latency of the summary, the bucket list and one bucket).
//! 4. Prints Markdown to stdout; progress goes to stderr.
//!
//! ```text
//! cargo build --release -p hsm-node -p hsm-tests
//! target/release/capacity            # the issue's figures
//! target/release/capacity --aes 2000 --p256 1000 --rsa 200 --rsa-pool 8   # a quick check
//! ```
//!
//! The node binary is the one next to this executable (`hsm_tests::bin`),
//! so a release run uses `target/release/hsm-node`. All traffic is on
//! loopback; every process started here is stopped by its PID.
#![forbid(unsafe_code)]

// Each benchmark binary uses a part of the shared module.
#[allow(dead_code)]
#[path = "../bench.rs"]
mod bench;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hsm_api::{Client, ClientConfig, Curve, EncryptionAlgorithm, Role, Route, SignatureAlgorithm};
use hsm_node::crypto::{KeyMaterial, KeySpec};
use hsm_node::offline::Offline;
use hsm_node::partition::PartitionState;
use hsm_node::store::{Store, StoreError, VersionRecord};
use hsm_tests::{
    bin, hsm_node_ok, ADMIN_PASSWORD, CO_PASSWORD, CU_PASSWORD, PARTITION, REPLICATION_PASSWORD,
    SO_PASSWORD,
};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Capacity of one hsm-node partition: start-up, RSS, inventory compare")]
struct Args {
    /// Work directory (PKI, node directory, logs). Default: a fresh temporary
    /// directory, removed at the end unless --keep. A given directory is kept.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary directory.
    #[arg(long)]
    keep: bool,
    /// Measure a node already created and loaded in --dir by an earlier run
    /// (skips creation and loading).
    #[arg(long, requires = "dir")]
    reuse: bool,
    /// AES-256 keys to load.
    #[arg(long, default_value_t = 218_000)]
    aes: usize,
    /// P-256 keys to load.
    #[arg(long, default_value_t = 91_000)]
    p256: usize,
    /// RSA-2048 keys to load (material from the pool, reused round-robin).
    #[arg(long, default_value_t = 19_000)]
    rsa: usize,
    /// Distinct RSA-2048 keys generated for the pool.
    #[arg(long, default_value_t = 64)]
    rsa_pool: usize,
    /// Names per store transaction while loading.
    #[arg(long, default_value_t = 4000)]
    batch: usize,
    /// Start-ups measured with the database in the page cache (SIGTERM
    /// between them; the last one serves the rest of the run).
    #[arg(long, default_value_t = 3)]
    starts: usize,
    /// Start-ups measured first with `data.redb` evicted from the page cache
    /// (`dd if=data.redb iflag=nocache count=0`, this file only), as after a
    /// reboot.
    #[arg(long, default_value_t = 3)]
    cold_starts: usize,
    /// Random key operations of the warm phase (ES256, RS256, A256GCM on
    /// keys drawn uniformly from all names).
    #[arg(long, default_value_t = 20_000)]
    warm_ops: usize,
    /// Skip the sweep (one operation on every key, RSA first, then P-256,
    /// then AES: the heaviest possible content of the node's key cache).
    #[arg(long)]
    no_sweep: bool,
    /// Concurrent requests of the warm phase and the sweep.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Timed calls of GET /inventory.
    #[arg(long, default_value_t = 100)]
    inventory_calls: usize,
    /// Timed calls of GET /inventory/buckets and of one bucket's pages.
    #[arg(long, default_value_t = 20)]
    bucket_calls: usize,
    /// Seed of the warm phase's key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keys of each kind held in memory by the memory probe.
    #[arg(long, default_value_t = 5000)]
    probe_keys: usize,
    /// Internal: run the memory probe on --dir in this process and print
    /// its figures (the main run starts itself again with this flag, so the
    /// probe's RSS is not mixed with the loader's).
    #[arg(long, hide = true, requires = "dir")]
    probe: bool,
}

// ---------------------------------------------------------------------------
// Key kinds and names.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Aes,
    P256,
    Rsa,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Aes => "aes",
            Kind::P256 => "p256",
            Kind::Rsa => "rsa",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Kind::Aes => "AES-256",
            Kind::P256 => "P-256",
            Kind::Rsa => "RSA-2048",
        }
    }
    fn op(self) -> &'static str {
        match self {
            Kind::Aes => "A256GCM encrypt",
            Kind::P256 => "ES256 sign",
            Kind::Rsa => "RS256 sign",
        }
    }
}

fn key_name(kind: Kind, i: usize) -> String {
    format!("{}-{i:06}", kind.prefix())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// splitmix64: a small, seeded, reproducible choice of keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// Small helpers: paths, statistics, /proc.

fn s(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 100.0 {
        format!("{m:.0} ms")
    } else if m >= 10.0 {
        format!("{m:.1} ms")
    } else {
        format!("{m:.2} ms")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let first = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    let mut out = digits[..first].to_string();
    for group in digits.as_bytes()[first..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

/// Memory of a process from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
}

fn mem(pid: u32) -> Result<Mem> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut m = Mem::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let kib = v
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        match k {
            "VmRSS" => m.rss = kib,
            "VmHWM" => m.hwm = kib,
            "RssAnon" => m.anon = kib,
            "RssFile" => m.file = kib,
            _ => {}
        }
    }
    Ok(m)
}

fn mem_text(m: Mem) -> String {
    format!(
        "VmRSS {} (anon {}, file {}), VmHWM {}",
        mib(m.rss),
        mib(m.anon),
        mib(m.file),
        mib(m.hwm)
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Total size of the files under `dir` (0 when missing).
fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Step 1: the node directory, made with the CLI as the harness does.

struct Layout {
    pki: PathBuf,
    node: PathBuf,
    log: PathBuf,
}

impl Layout {
    fn at(root: &Path) -> Layout {
        Layout {
            pki: root.join("pki"),
            node: root.join("node"),
            log: root.join("node.log"),
        }
    }
    fn ca(&self) -> PathBuf {
        self.pki.join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.pki.join("app.pem")
    }
    fn key(&self) -> PathBuf {
        self.pki.join("app.key")
    }
}

fn create_node(root: &Path, l: &Layout) -> Result<()> {
    hsm_node_ok(&["pki", "init-ca", "--dir", s(&l.pki)?], &[])?;
    hsm_node_ok(&["pki", "issue", "--dir", s(&l.pki)?, "--name", "app"], &[])?;
    hsm_node_ok(
        &[
            "init",
            "--dir",
            s(&l.node)?,
            "--pki",
            s(&l.pki)?,
            "--listen",
            "127.0.0.1:0",
        ],
        &[("HSM_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    )?;
    let domain = root.join("domain.secret");
    hsm_node_ok(
        &[
            "partition",
            "create",
            "--dir",
            s(&l.node)?,
            "--name",
            PARTITION,
            "--domain-file",
            s(&domain)?,
        ],
        &[
            ("HSM_SO_PASSWORD", SO_PASSWORD),
            ("HSM_CO_PASSWORD", CO_PASSWORD),
            ("HSM_CU_PASSWORD", CU_PASSWORD),
            ("HSM_REPLICATION_PASSWORD", REPLICATION_PASSWORD),
        ],
    )?;
    hsm_node_ok(
        &[
            "partition",
            "register-client",
            "--dir",
            s(&l.node)?,
            "--name",
            PARTITION,
            "--cert",
            s(&l.cert())?,
        ],
        &[],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Step 2: loading the partition offline through the library.

struct LoadReport {
    /// Per kind: keys and wall time (material, sealing, records and commits).
    kinds: Vec<(Kind, usize, Duration)>,
    pool: usize,
    pool_time: Duration,
    total: Duration,
    objects: u64,
}

fn load(node_dir: &Path, args: &Args) -> Result<LoadReport> {
    let started = Instant::now();
    let off = Offline::open(node_dir).context("opening the node directory offline")?;
    let rec = off.store.partition(PARTITION)?;
    let part = PartitionState::unseal(&off.master, &rec)
        .map_err(|e| anyhow!("unsealing partition {PARTITION}: {e}"))?;

    let pool_n = args.rsa_pool.min(args.rsa);
    if args.rsa > 0 && pool_n == 0 {
        bail!("--rsa {} needs --rsa-pool of at least 1", args.rsa);
    }
    eprintln!("generating {pool_n} RSA-2048 keys for the pool");
    let t = Instant::now();
    let pool = (0..pool_n)
        .map(|_| KeyMaterial::generate(&KeySpec::Rsa { bits: 2048 }))
        .collect::<Result<Vec<_>, _>>()?;
    let pool_time = t.elapsed();

    let plan = [
        (Kind::Aes, args.aes),
        (Kind::P256, args.p256),
        (Kind::Rsa, args.rsa),
    ];
    let total: usize = plan.iter().map(|(_, n)| n).sum();
    let step = (total / 10).max(1);
    let mut done = 0usize;
    let mut next_report = step;
    let batch = args.batch.max(1);
    let mut kinds = Vec::new();
    for (kind, n) in plan {
        let t = Instant::now();
        let mut i = 0;
        while i < n {
            let end = (i + batch).min(n);
            let now = hsm_node::clock::now_secs();
            let mut names = Vec::with_capacity(end - i);
            let mut recs: HashMap<String, (String, VersionRecord)> =
                HashMap::with_capacity(end - i);
            for j in i..end {
                let name = key_name(kind, j);
                let version = hex(&hsm_node::crypto::random_bytes(16)?);
                let generated;
                let m = match kind {
                    Kind::Aes => {
                        generated = KeyMaterial::generate(&KeySpec::Oct { bits: 256 })?;
                        &generated
                    }
                    Kind::P256 => {
                        generated = KeyMaterial::generate(&KeySpec::Ec(Curve::P256))?;
                        &generated
                    }
                    Kind::Rsa => &pool[j % pool.len()],
                };
                let rec = hsm_tests::version_record(&part, &name, &version, m, now)?;
                names.push(name.clone());
                recs.insert(name, (version, rec));
            }
            let mut it = names.into_iter();
            off.store
                .with_objects(
                    PARTITION,
                    || it.next(),
                    |o| {
                        let (v, r) = recs.remove(&o.name).ok_or_else(|| {
                            StoreError::Db(format!("no record prepared for {}", o.name))
                        })?;
                        if o.exists() {
                            return Err(StoreError::NameTaken(o.name.clone()));
                        }
                        o.rec.versions.push(v.clone());
                        o.versions.insert(v, r);
                        Ok(())
                    },
                )
                .with_context(|| format!("loading {} keys {i}..{end}", kind.title()))?;
            done += end - i;
            i = end;
            if done >= next_report || done == total {
                eprintln!(
                    "loaded {done}/{total} keys ({:.0} %) in {:.1} s",
                    done as f64 * 100.0 / total as f64,
                    started.elapsed().as_secs_f64()
                );
                next_report = (done / step + 1) * step;
            }
        }
        kinds.push((kind, n, t.elapsed()));
    }
    let (_, objects) = off.store.inventory_summary(PARTITION)?;
    Ok(LoadReport {
        kinds,
        pool: pool_n,
        pool_time,
        total: started.elapsed(),
        objects,
    })
}

/// What start-up does before serving, timed in this process on the same
/// database (page cache warm, redb cache cold): open, partitions and
/// unsealing, `live_key_counts`.
struct OfflineStartup {
    open: Duration,
    partitions: Duration,
    live_counts: Duration,
    live: u64,
}

fn offline_startup(node_dir: &Path) -> Result<OfflineStartup> {
    let nd = hsm_node::layout::NodeDir::new(node_dir);
    let master = nd.load_master_key()?;
    let t = Instant::now();
    let store = Store::open(&nd.database())?;
    let open = t.elapsed();
    let t = Instant::now();
    for rec in store.partitions()? {
        PartitionState::unseal(&master, &rec).map_err(|e| anyhow!("unsealing: {e}"))?;
    }
    let partitions = t.elapsed();
    let t = Instant::now();
    let counts = store.live_key_counts()?;
    let live_counts = t.elapsed();
    Ok(OfflineStartup {
        open,
        partitions,
        live_counts,
        live: counts.get(PARTITION).copied().unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------
// The memory probe: where a node's RSS goes, measured in a fresh process
// that makes the same library calls as the node on the same database.

/// One probe figure: a label and the process's VmRSS (KiB) after it.
fn probe_line(label: &str, extra: impl std::fmt::Display) -> Result<()> {
    let m = mem(std::process::id())?;
    println!("{label} {} {} {extra}", m.rss, m.anon);
    Ok(())
}

fn probe(node_dir: &Path, args: &Args) -> Result<()> {
    let nd = hsm_node::layout::NodeDir::new(node_dir);
    let master = nd.load_master_key()?;
    probe_line("start", 0)?;
    let store = Store::open(&nd.database())?;
    probe_line("open", 0)?;
    // What start-up does: every name record is read once.
    let live = store.live_key_counts()?;
    probe_line("live_key_counts", live.get(PARTITION).copied().unwrap_or(0))?;
    // Every name and its current version read once (what a sweep of all
    // keys reads), records decoded and dropped page by page; the JSON
    // bytes stored per table are summed on the way.
    let (mut name_bytes, mut version_bytes, mut n) = (0u64, 0u64, 0u64);
    let mut after: Option<String> = None;
    loop {
        let (page, more) = store.list_names(PARTITION, after.as_deref(), 2000, false)?;
        for (name, rec, ver) in &page {
            name_bytes +=
                (PARTITION.len() + name.len()) as u64 + serde_json::to_vec(rec)?.len() as u64;
            version_bytes +=
                (PARTITION.len() + name.len() + rec.current().map(str::len).unwrap_or(0)) as u64
                    + serde_json::to_vec(ver)?.len() as u64;
            n += 1;
        }
        after = page.last().map(|(name, ..)| name.clone());
        if !more || after.is_none() {
            break;
        }
    }
    probe_line("read_all", n)?;
    let mut inventory_bytes = 0u64;
    for b in 0..=255u8 {
        let (entries, _) = store.inventory_entries(PARTITION, b, None, usize::MAX)?;
        for e in &entries {
            inventory_bytes +=
                (PARTITION.len() + 1 + e.name.len()) as u64 + serde_json::to_vec(e)?.len() as u64;
        }
    }
    probe_line("read_inventory", 0)?;
    println!(
        "stored_bytes names {name_bytes} versions {version_bytes} inventory {inventory_bytes}"
    );
    // The node's key cache keeps, per name, the version, its record and the
    // parsed key: hold `probe_keys` of each kind the same way.
    let rec = store.partition(PARTITION)?;
    let part = PartitionState::unseal(&master, &rec).map_err(|e| anyhow!("unsealing: {e}"))?;
    let counts = [
        (Kind::Aes, args.aes),
        (Kind::P256, args.p256),
        (Kind::Rsa, args.rsa),
    ];
    let mut held = Vec::new();
    for (kind, count) in counts {
        let k = args.probe_keys.min(count);
        if k == 0 {
            continue;
        }
        let before = mem(std::process::id())?;
        let mut v = Vec::with_capacity(k);
        for i in 0..k {
            let name = key_name(kind, i);
            let (version, record) = store.live_version(PARTITION, &name, None)?;
            let material = part
                .unseal_material(&name, &version, record.sealed.as_slice())
                .map_err(|e| anyhow!("{e}"))?;
            let loaded = hsm_node::crypto::LoadedKey::load(&material)?;
            v.push((format!("{PARTITION}\0{name}"), version, record, loaded));
        }
        let after = mem(std::process::id())?;
        println!(
            "cached {} {k} {}",
            kind.prefix(),
            after.rss.saturating_sub(before.rss)
        );
        held.push(v);
    }
    drop(held);
    Ok(())
}

/// The probe's figures, parsed.
#[derive(Default)]
struct Probe {
    /// VmRSS (KiB) after each step.
    steps: Vec<(String, u64)>,
    stored: (u64, u64, u64),
    /// Kind, keys held, RSS growth (KiB).
    cached: Vec<(Kind, u64, u64)>,
}

impl Probe {
    fn rss(&self, step: &str) -> u64 {
        self.steps
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, r)| *r)
            .unwrap_or(0)
    }
    /// Bytes per cached key of a kind.
    fn per_key(&self, kind: Kind) -> Option<f64> {
        self.cached
            .iter()
            .find(|(k, ..)| *k == kind)
            .filter(|(_, n, _)| *n > 0)
            .map(|(_, n, kib)| *kib as f64 * 1024.0 / *n as f64)
    }
}

fn run_probe(root: &Path, args: &Args) -> Result<Probe> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["--probe", "--dir", s(root)?])
        .args(["--aes", &args.aes.to_string()])
        .args(["--p256", &args.p256.to_string()])
        .args(["--rsa", &args.rsa.to_string()])
        .args(["--probe-keys", &args.probe_keys.to_string()]);
    let out = cmd.output().context("running the memory probe")?;
    if !out.status.success() {
        bail!(
            "the memory probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut p = Probe::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        match w.first().copied() {
            Some("stored_bytes") => p.stored = (num(2), num(4), num(6)),
            Some("cached") => {
                let kind = match w.get(1).copied() {
                    Some("aes") => Kind::Aes,
                    Some("p256") => Kind::P256,
                    _ => Kind::Rsa,
                };
                p.cached.push((kind, num(2), num(3)));
            }
            Some(step) => p.steps.push((step.to_string(), num(1))),
            None => {}
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------------------
// Step 3: running the node.

/// A running node, stopped by its PID when dropped.
struct NodeProc {
    child: Option<Child>,
    pid: u32,
    addr: String,
}

impl NodeProc {
    /// Sends SIGTERM by PID and waits for the exit; returns the time it took.
    fn stop(&mut self) -> Result<Duration> {
        let Some(mut c) = self.child.take() else {
            bail!("node not running")
        };
        let t = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill")?;
        let deadline = t + Duration::from_secs(60);
        loop {
            if c.try_wait()?.is_some() {
                return Ok(t.elapsed());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("hsm-node did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Startup {
    /// Spawn to `listen.addr` written (bound, `Node::new` done).
    addr_file: Duration,
    /// Spawn to the first `GET /health` answered `ready` over mTLS.
    ready: Duration,
}

struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Tls {
    fn client(&self, base_url: String) -> Result<Client> {
        let cfg = ClientConfig {
            base_url,
            ca_pem: self.ca.clone(),
            identity_pem: Some((self.cert.clone(), self.key.clone())),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        };
        Ok(Client::new(&cfg)?)
    }
}

async fn start_node(l: &Layout, tls: &Tls) -> Result<(NodeProc, Startup)> {
    let addr_file = l.node.join("listen.addr");
    let _ = std::fs::remove_file(&addr_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    let exe = bin("hsm-node");
    let t = Instant::now();
    let child = Command::new(&exe)
        .args(["run", "--dir", s(&l.node)?, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    let mut node = NodeProc {
        child: Some(child),
        pid,
        addr: String::new(),
    };
    let deadline = t + Duration::from_secs(120);
    let check_alive = |node: &mut NodeProc| -> Result<()> {
        if let Some(c) = node.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                bail!(
                    "hsm-node exited with {st} before serving; see {}",
                    l.log.display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("hsm-node did not become ready within 120 s");
        }
        Ok(())
    };
    let at_addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            node.addr = a.trim().to_string();
            break t.elapsed();
        }
        check_alive(&mut node)?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let health = tls.client(format!("https://{}", node.addr))?;
    let ready = loop {
        if let Ok(h) = health.health().await {
            if h.status == "ready" {
                break t.elapsed();
            }
        }
        check_alive(&mut node)?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    Ok((
        node,
        Startup {
            addr_file: at_addr,
            ready,
        },
    ))
}

// ---------------------------------------------------------------------------
// Key operations: the warm phase and the sweep.

async fn one_op(c: &Client, kind: Kind, i: usize) -> Result<()> {
    let name = key_name(kind, i);
    let digest = [0x5au8; 32];
    let r = match kind {
        Kind::Aes => {
            c.encrypt(&name, None, EncryptionAlgorithm::A256Gcm, &[7u8; 64], None)
                .await
        }
        Kind::P256 => {
            c.sign(&name, None, SignatureAlgorithm::Es256, &digest)
                .await
        }
        Kind::Rsa => {
            c.sign(&name, None, SignatureAlgorithm::Rs256, &digest)
                .await
        }
    };
    r.with_context(|| format!("{} with {name}", kind.op()))?;
    Ok(())
}

/// Runs `ops` with `concurrency` tasks sharing one client; returns the wall
/// time and the node's memory at every tenth of the operations.
async fn run_ops(
    c: &Client,
    ops: Vec<(Kind, usize)>,
    concurrency: usize,
    pid: u32,
) -> Result<(Duration, Vec<Mem>)> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let ops = Arc::new(ops);
    let next = Arc::new(AtomicUsize::new(0));
    let total = ops.len();
    let step = (total / 10).max(1);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (c, ops, next, samples) = (c.clone(), ops.clone(), next.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(kind, j)) = ops.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                one_op(&c, kind, j).await?;
                if (i + 1) % step == 0 {
                    let m = mem(pid).unwrap_or_default();
                    eprintln!(
                        "  {} / {total} operations in {:.1} s; node {}",
                        i + 1,
                        t.elapsed().as_secs_f64(),
                        mem_text(m)
                    );
                    if let Ok(mut s) = samples.lock() {
                        s.push((i + 1, m));
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = t.elapsed();
    let mut s = samples.lock().map(|s| s.clone()).unwrap_or_default();
    s.sort_by_key(|(i, _)| *i);
    Ok((elapsed, s.into_iter().map(|(_, m)| m).collect()))
}

// ---------------------------------------------------------------------------
// A TCP relay that counts TLS records, for on-the-wire sizes.

/// One direction of a relayed TLS connection.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    /// TCP payload bytes (TLS records with their headers).
    bytes: u64,
    /// TLS records.
    records: u64,
    /// Records of outer type application_data (23) and their lengths
    /// (ciphertext: plaintext + 1 content-type byte + 16-byte AEAD tag).
    app_records: u64,
    app_len: u64,
    hdr: [u8; 5],
    have: usize,
    skip: usize,
}

/// TLS 1.3 expansion of an application_data record's plaintext: the inner
/// content type and the 16-byte AEAD tag (plus the 5-byte record header).
const TLS13_AEAD_EXPANSION: u64 = 1 + 16;

impl Flow {
    fn feed(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let len = u16::from_be_bytes([self.hdr[3], self.hdr[4]]) as usize;
                self.records += 1;
                if self.hdr[0] == 23 {
                    self.app_records += 1;
                    self.app_len += len as u64;
                }
                self.skip = len;
                self.have = 0;
            }
        }
    }
    /// HTTP bytes carried (TLS plaintext of application_data records).
    fn plaintext(&self) -> u64 {
        self.app_len
            .saturating_sub(self.app_records * TLS13_AEAD_EXPANSION)
    }
    fn minus(&self, o: &Flow) -> Flow {
        Flow {
            bytes: self.bytes - o.bytes,
            records: self.records - o.records,
            app_records: self.app_records - o.app_records,
            app_len: self.app_len - o.app_len,
            ..Flow::default()
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ConnStats {
    /// Client to node.
    up: Flow,
    /// Node to client.
    down: Flow,
    closed: bool,
}

type Conns = Arc<Mutex<Vec<Arc<Mutex<ConnStats>>>>>;

struct Relay {
    addr: std::net::SocketAddr,
    conns: Conns,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns: Conns = Arc::new(Mutex::new(Vec::new()));
        let list = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let stats = Arc::new(Mutex::new(ConnStats::default()));
                if let Ok(mut l) = list.lock() {
                    l.push(stats.clone());
                }
                tokio::spawn(async move {
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    let up = pump(ir, ow, stats.clone(), true);
                    let down = pump(or, iw, stats.clone(), false);
                    tokio::join!(up, down);
                    if let Ok(mut s) = stats.lock() {
                        s.closed = true;
                    }
                });
            }
        });
        Ok(Relay { addr, conns, task })
    }

    fn clear(&self) {
        if let Ok(mut l) = self.conns.lock() {
            l.clear();
        }
    }

    fn snapshot(&self) -> Vec<ConnStats> {
        self.conns
            .lock()
            .map(|l| l.iter().filter_map(|c| c.lock().ok().map(|c| *c)).collect())
            .unwrap_or_default()
    }

    /// Waits until every relayed connection has closed; returns them.
    async fn closed(&self) -> Result<Vec<ConnStats>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.snapshot();
            if !s.is_empty() && s.iter().all(|c| c.closed) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("relayed connections did not close within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    stats: Arc<Mutex<ConnStats>>,
    up: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Ok(mut s) = stats.lock() {
            if up {
                s.up.feed(&buf[..n]);
            } else {
                s.down.feed(&buf[..n]);
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// The marginal bytes of one more request on an established connection.
#[derive(Debug, Clone, Copy, Default)]
struct Marginal {
    up: Flow,
    down: Flow,
}

impl Marginal {
    fn http(&self) -> (u64, u64) {
        (self.up.plaintext(), self.down.plaintext())
    }
    fn text(&self) -> String {
        let (u, d) = self.http();
        format!(
            "request {u} B + response {d} B = **{} B** HTTP; on the wire {} + {} = {} B in {} + {} TLS records",
            u + d,
            self.up.bytes,
            self.down.bytes,
            self.up.bytes + self.down.bytes,
            self.up.app_records,
            self.down.app_records
        )
    }
}

/// curl against the relay: `urls` requests on one connection. Returns curl's
/// `-w` lines and the relay's count for the connection(s).
async fn curl_run(
    relay: &Relay,
    l: &Layout,
    token: &str,
    http: &str,
    urls: usize,
) -> Result<(Vec<String>, Vec<ConnStats>)> {
    relay.clear();
    let url = format!(
        "https://127.0.0.1:{}/partitions/{PARTITION}/inventory",
        relay.addr.port()
    );
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-s",
        "-S",
        "--fail",
        http,
        "--cacert",
        s(&l.ca())?,
        "--cert",
        s(&l.cert())?,
        "--key",
        s(&l.key())?,
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-w",
        "%{size_request} %{size_header} %{size_download} %{http_version} %{num_connects}\\n",
    ]);
    for _ in 0..urls {
        cmd.args(["-o", "/dev/null", &url]);
    }
    let out = cmd.output().await.context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl {http} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let conns = relay.closed().await?;
    Ok((lines, conns))
}

struct CurlResult {
    http: &'static str,
    /// curl's `size_request size_header size_download http_version num_connects` of the first request.
    counters: String,
    marginal: Marginal,
    /// Whole single-request connection (handshake, request, close).
    single: ConnStats,
}

async fn curl_measure(
    relay: &Relay,
    l: &Layout,
    token: &str,
    http: &'static str,
) -> Result<CurlResult> {
    let (lines1, c1) = curl_run(relay, l, token, http, 1).await?;
    let (lines2, c2) = curl_run(relay, l, token, http, 2).await?;
    if c1.len() != 1 || c2.len() != 1 || lines2.len() != 2 {
        bail!(
            "curl {http}: expected one connection per run and two transfers, got {} and {} connections, {} transfers",
            c1.len(),
            c2.len(),
            lines2.len()
        );
    }
    Ok(CurlResult {
        http,
        counters: lines1.first().cloned().unwrap_or_default(),
        marginal: Marginal {
            up: c2[0].up.minus(&c1[0].up),
            down: c2[0].down.minus(&c1[0].down),
        },
        single: c1[0],
    })
}

/// hsm_api::Client (hyper, HTTP/2: what the proxy uses) through the relay:
/// per call, the bytes that crossed for one `GET /inventory` on the
/// established connection. Returns the median call by total bytes.
async fn client_marginal(relay: &Relay, tls: &Tls, token: &str, calls: usize) -> Result<Marginal> {
    relay.clear();
    let c = tls.client(format!(
        "https://127.0.0.1:{}/partitions/{PARTITION}",
        relay.addr.port()
    ))?;
    c.set_token(Some(token.to_string()));
    c.inventory().await?; // handshake and first request
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut out = Vec::new();
    for _ in 0..calls {
        let before = relay.snapshot();
        c.inventory().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = relay.snapshot();
        if before.len() != 1 || after.len() != 1 {
            bail!("the client opened another connection through the relay");
        }
        out.push(Marginal {
            up: after[0].up.minus(&before[0].up),
            down: after[0].down.minus(&before[0].down),
        });
    }
    out.sort_by_key(|m| m.up.bytes + m.down.bytes);
    out.get(out.len() / 2)
        .copied()
        .ok_or_else(|| anyhow!("no calls"))
}

// ---------------------------------------------------------------------------
// The inventory compare.

struct Inventory {
    summary_body: usize,
    summary_json: String,
    summary_lat: Vec<Duration>,
    buckets_body: usize,
    buckets_n: usize,
    buckets_lat: Vec<Duration>,
    bucket: u8,
    bucket_entries: u64,
    bucket_pages: usize,
    bucket_bytes: usize,
    bucket_lat: Vec<Duration>,
}

async fn get(c: &Client, path_and_query: &str) -> Result<Bytes> {
    let (status, body) = c
        .raw(http::Method::GET, path_and_query, None, Bytes::new())
        .await?;
    if !status.is_success() {
        bail!(
            "GET {path_and_query}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Every page of one bucket: (pages, bytes, entries).
async fn bucket_pages(c: &Client, bucket: u8) -> Result<(usize, usize, usize)> {
    let path = Route::InventoryBucket { bucket }.path();
    let mut pq = path.clone();
    let (mut pages, mut bytes, mut entries) = (0, 0, 0);
    loop {
        let body = get(c, &pq).await?;
        pages += 1;
        bytes += body.len();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        entries += v["value"].as_array().map(Vec::len).unwrap_or(0);
        match v["nextLink"].as_str() {
            Some(link) => {
                let q = link
                    .split_once('?')
                    .map(|(_, q)| q)
                    .ok_or_else(|| anyhow!("nextLink without a query: {link}"))?;
                pq = format!("{path}?{q}");
            }
            None => return Ok((pages, bytes, entries)),
        }
        if pages > 10_000 {
            bail!("more than 10,000 pages in bucket {bucket}");
        }
    }
}

async fn inventory(c: &Client, args: &Args) -> Result<Inventory> {
    let body = get(c, "/inventory").await?;
    let summary_json = String::from_utf8_lossy(&body).into_owned();
    for _ in 0..5 {
        c.inventory().await?;
    }
    let mut summary_lat = Vec::new();
    for _ in 0..args.inventory_calls {
        let t = Instant::now();
        c.inventory().await?;
        summary_lat.push(t.elapsed());
    }

    let buckets = get(c, "/inventory/buckets").await?;
    let parsed: hsm_api::InventoryBuckets = serde_json::from_slice(&buckets)?;
    let mut buckets_lat = Vec::new();
    for _ in 0..args.bucket_calls {
        let t = Instant::now();
        get(c, "/inventory/buckets").await?;
        buckets_lat.push(t.elapsed());
    }
    // The fullest bucket: the worst case of one differing bucket.
    let (bucket, bucket_entries) = parsed
        .buckets
        .iter()
        .max_by_key(|b| b.count)
        .map(|b| (b.bucket, b.count))
        .unwrap_or((0, 0));
    let (bucket_pages_n, bucket_bytes, _) = bucket_pages(c, bucket).await?;
    let mut bucket_lat = Vec::new();
    for _ in 0..args.bucket_calls {
        let t = Instant::now();
        let (_, _, n) = bucket_pages(c, bucket).await?;
        bucket_lat.push(t.elapsed());
        if n as u64 != bucket_entries {
            bail!("bucket {bucket}: {n} entries listed, {bucket_entries} counted");
        }
    }
    Ok(Inventory {
        summary_body: body.len(),
        summary_json,
        summary_lat,
        buckets_body: buckets.len(),
        buckets_n: parsed.buckets.len(),
        buckets_lat,
        bucket,
        bucket_entries,
        bucket_pages: bucket_pages_n,
        bucket_bytes,
        bucket_lat,
    })
}

// ---------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = Args::parse();
    let (root, temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let result = run(&args, &root);
    match temp {
        Some(t) if args.keep => {
            let p = t.keep();
            eprintln!("kept {}", p.display());
        }
        Some(t) => t.close()?,
        None => {}
    }
    result
}

fn run(args: &Args, root: &Path) -> Result<()> {
    let l = Layout::at(root);
    if args.probe {
        return probe(&l.node, args);
    }
    let node_bin = bin("hsm-node");
    if !node_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p hsm-node -p hsm-tests`",
            node_bin.display()
        );
    }
    let mut out = String::new();
    writeln!(out, "Machine: {}", bench::machine())?;
    writeln!(
        out,
        "Node binary: `{}`; work directory `{}`",
        node_bin.display(),
        root.display()
    )?;
    writeln!(out, "Source: {}", bench::source_state())?;
    writeln!(out, "Load average at start: {}", loadavg())?;

    let load_report = if args.reuse {
        if !l.node.join("data.redb").exists() {
            bail!("--reuse: {} holds no node", l.node.display());
        }
        None
    } else {
        if l.node.exists() {
            bail!(
                "{} already exists: pass --reuse to measure it, or another --dir",
                l.node.display()
            );
        }
        eprintln!("creating the node in {}", l.node.display());
        create_node(root, &l)?;
        Some(load(&l.node, args)?)
    };
    let db = l.node.join("data.redb");
    let db_meta = std::fs::metadata(&db)?;
    let db_len = db_meta.len();
    let db_alloc = {
        use std::os::unix::fs::MetadataExt;
        db_meta.blocks() * 512
    };
    let offline = offline_startup(&l.node)?;
    eprintln!(
        "offline: open {}, partitions {}, live_key_counts {} ({} live keys)",
        ms(offline.open),
        ms(offline.partitions),
        ms(offline.live_counts),
        offline.live
    );

    let tls = Tls {
        ca: std::fs::read(l.ca())?,
        cert: std::fs::read(l.cert())?,
        key: std::fs::read(l.key())?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(measure(
        args,
        root,
        &l,
        &tls,
        out,
        load_report,
        db_len,
        db_alloc,
        offline,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    root: &Path,
    l: &Layout,
    tls: &Tls,
    mut out: String,
    load_report: Option<LoadReport>,
    db_len: u64,
    db_alloc: u64,
    offline: OfflineStartup,
) -> Result<()> {
    // Start-ups: each measured from spawn to ready; RSS at ready and 3 s later
    // (the purge sweeper's first tick scans every name right after start).
    let db = l.node.join("data.redb");
    let mut colds = Vec::new();
    for i in 0..args.cold_starts {
        let dd = Command::new("dd")
            .arg(format!("if={}", db.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .context("running dd to evict data.redb from the page cache")?;
        if !dd.success() {
            bail!("dd iflag=nocache failed on {}", db.display());
        }
        let (mut n, st) = start_node(l, tls).await?;
        let at_ready = mem(n.pid)?;
        let stop = n.stop()?;
        eprintln!(
            "cold start {}: ready in {} (listen.addr at {}); {}",
            i + 1,
            ms(st.ready),
            ms(st.addr_file),
            mem_text(at_ready)
        );
        colds.push((st, at_ready, stop));
    }
    let mut starts = Vec::new();
    let mut node = None;
    for i in 0..args.starts.max(1) {
        let (mut n, st) = start_node(l, tls).await?;
        let at_ready = mem(n.pid)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let settled = mem(n.pid)?;
        eprintln!(
            "start {}: ready in {} (listen.addr at {}); {}; 3 s later {}",
            i + 1,
            ms(st.ready),
            ms(st.addr_file),
            mem_text(at_ready),
            mem_text(settled)
        );
        let last = i + 1 == args.starts.max(1);
        let stop = if last { None } else { Some(n.stop()?) };
        starts.push((st, at_ready, settled, stop));
        if last {
            node = Some(n);
        }
    }
    let Some(mut node) = node else {
        bail!("no node running")
    };
    let base = format!("https://{}/partitions/{PARTITION}", node.addr);
    // The node's key cache cap (`key_cache_entries` in node.json).
    let cache_cap = hsm_node::layout::NodeDir::new(&l.node)
        .load_settings()?
        .key_cache_entries
        .max(1);

    // Inventory compare (replication credential, as the proxy's background work).
    let repl = tls.client(base.clone())?;
    let login = repl.login(Role::Replication, REPLICATION_PASSWORD).await?;
    let token = login.access_token.clone();
    eprintln!("inventory: timing summary, bucket list and one bucket");
    let inv = inventory(&repl, args).await?;

    // Wire sizes through the counting relay.
    let relay = Relay::start(node.addr.clone()).await?;
    eprintln!("inventory: wire sizes through the relay");
    let client_m = client_marginal(&relay, tls, &token, 11).await?;
    let have_curl = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut curls = Vec::new();
    if have_curl {
        for http in ["--http1.1", "--http2"] {
            curls.push(curl_measure(&relay, l, &token, http).await?);
        }
    }
    drop(relay);

    // Warm phase: random key operations with a crypto-user login.
    let user = tls.client(base.clone())?;
    user.login(Role::CryptoUser, CU_PASSWORD).await?;
    let counts = match &load_report {
        Some(r) => r.kinds.iter().map(|(k, n, _)| (*k, *n)).collect::<Vec<_>>(),
        None => vec![
            (Kind::Aes, args.aes),
            (Kind::P256, args.p256),
            (Kind::Rsa, args.rsa),
        ],
    };
    let total_keys: usize = counts.iter().map(|(_, n)| n).sum();
    let mut rng = Rng(args.seed);
    let mut warm = Vec::with_capacity(args.warm_ops);
    if total_keys > 0 {
        for _ in 0..args.warm_ops {
            let mut r = rng.below(total_keys);
            for &(k, n) in &counts {
                if r < n {
                    warm.push((k, r));
                    break;
                }
                r -= n;
            }
        }
    }
    let distinct = warm.iter().collect::<HashSet<_>>().len();
    let per_kind: Vec<(Kind, usize)> = counts
        .iter()
        .map(|(k, _)| (*k, warm.iter().filter(|(w, _)| w == k).count()))
        .collect();
    let before_warm = mem(node.pid)?;
    eprintln!("warm phase: {} operations", warm.len());
    let warm_n = warm.len();
    let (warm_time, _) = run_ops(&user, warm, args.concurrency, node.pid).await?;
    let after_warm = mem(node.pid)?;
    eprintln!("after warm: {}", mem_text(after_warm));

    let sweep = if args.no_sweep {
        None
    } else {
        let mut ops = Vec::with_capacity(total_keys);
        for kind in [Kind::Rsa, Kind::P256, Kind::Aes] {
            let n = counts
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            ops.extend((0..n).map(|i| (kind, i)));
        }
        eprintln!(
            "sweep: one operation on each of {} keys (RSA, then P-256, then AES)",
            ops.len()
        );
        let n = ops.len();
        let (t, series) = run_ops(&user, ops, args.concurrency, node.pid).await?;
        let m = mem(node.pid)?;
        eprintln!("after sweep: {}", mem_text(m));
        Some((n, t, m, series))
    };
    let stop_last = node.stop()?;
    eprintln!("memory probe");
    let probe = run_probe(root, args)?;
    writeln!(out, "Load average at end: {}", loadavg())?;

    // ---- the report ----
    writeln!(out)?;
    if let Some(r) = &load_report {
        writeln!(
            out,
            "### Load (offline, through the library; for information)"
        )?;
        writeln!(out)?;
        writeln!(out, "| keys | count | time | keys/s |")?;
        writeln!(out, "|---|---:|---:|---:|")?;
        for (k, n, t) in &r.kinds {
            writeln!(
                out,
                "| {} | {} | {} | {:.0} |",
                k.title(),
                thousands(*n as u64),
                secs(*t),
                *n as f64 / t.as_secs_f64().max(1e-9)
            )?;
        }
        writeln!(
            out,
            "| RSA-2048 pool: {} distinct keys generated | | {} | |",
            r.pool,
            secs(r.pool_time)
        )?;
        writeln!(
            out,
            "| **total** (open, pool, load; {} objects in the inventory) | {} | {} | |",
            thousands(r.objects),
            thousands(r.kinds.iter().map(|(_, n, _)| *n as u64).sum()),
            secs(r.total)
        )?;
        writeln!(out)?;
    }

    writeln!(out, "### Start-up, memory, disk")?;
    writeln!(out)?;
    writeln!(out, "| figure | value | how measured |")?;
    writeln!(out, "|---|---|---|")?;
    let readies: Vec<Duration> = starts.iter().map(|(s, ..)| s.ready).collect();
    for (i, (st, at_ready, settled, stop)) in starts.iter().enumerate() {
        writeln!(
            out,
            "| start-up {} | **{}** (listen.addr written at {}) | spawn of `hsm-node run --dir DIR --listen 127.0.0.1:0` to the first `GET /health` answered `ready` over mTLS (polled every 1 ms){} |",
            i + 1,
            ms(st.ready),
            ms(st.addr_file),
            match stop {
                Some(d) => format!("; then SIGTERM, exit after {}", ms(*d)),
                None => format!("; the node kept for the rest; SIGTERM at the end, exit after {}", ms(stop_last)),
            }
        )?;
        writeln!(
            out,
            "| RSS at ready, start {} | {} | `/proc/PID/status` right after ready |",
            i + 1,
            mem_text(*at_ready)
        )?;
        writeln!(
            out,
            "| RSS 3 s after ready, start {} | {} | same, after the purge sweeper's first pass |",
            i + 1,
            mem_text(*settled)
        )?;
    }
    writeln!(
        out,
        "| **start-up, median of {}** | **{}** | |",
        readies.len(),
        ms(median(&readies))
    )?;
    let cold_readies: Vec<Duration> = colds.iter().map(|(s, ..)| s.ready).collect();
    for (i, (st, at_ready, stop)) in colds.iter().enumerate() {
        writeln!(
            out,
            "| cold start-up {} | **{}** (listen.addr written at {}); at ready {} | as above, with `data.redb` first evicted from the page cache (`dd if=data.redb iflag=nocache count=0`); SIGTERM, exit after {} |",
            i + 1,
            ms(st.ready),
            ms(st.addr_file),
            mem_text(*at_ready),
            ms(*stop)
        )?;
    }
    if !cold_readies.is_empty() {
        writeln!(
            out,
            "| **cold start-up, median of {}** | **{}** | measured before the warm start-ups |",
            cold_readies.len(),
            ms(median(&cold_readies))
        )?;
    }
    writeln!(
        out,
        "| what start-up does, timed offline | `Store::open` {}, partitions + unseal {}, `live_key_counts` {} ({} live keys) | the same calls in this process on the same file (page cache warm, redb cache cold) |",
        ms(offline.open),
        ms(offline.partitions),
        ms(offline.live_counts),
        thousands(offline.live)
    )?;
    writeln!(
        out,
        "| RSS before the warm phase | {} | `/proc/PID/status` after the inventory measurements |",
        mem_text(before_warm)
    )?;
    let kinds_text: Vec<String> = per_kind
        .iter()
        .map(|(k, n)| format!("{} {}", thousands(*n as u64), k.op()))
        .collect();
    writeln!(
        out,
        "| RSS after the warm phase | **{}** | {} random operations ({}) on {} distinct keys drawn uniformly from all names, crypto-user login, {} concurrent over one HTTP/2 connection, {} ({:.0} ops/s) |",
        mem_text(after_warm),
        thousands(warm_n as u64),
        kinds_text.join(", "),
        thousands(distinct as u64),
        args.concurrency,
        secs(warm_time),
        warm_n as f64 / warm_time.as_secs_f64().max(1e-9)
    )?;
    if let Some((n, t, m, series)) = &sweep {
        let (n, t, m) = (*n, *t, *m);
        writeln!(
            out,
            "| RSS after the sweep (worst case) | **{}** | one operation on every key ({} operations: all RSA, then P-256, then AES, so the node's key cache, capped at {} names (`key_cache_entries`) and cleared when full, holds the heaviest mix before its first clear), {} ({:.0} ops/s); VmHWM is the peak over the node's life |",
            mem_text(m),
            thousands(n as u64),
            thousands(cache_cap as u64),
            secs(t),
            n as f64 / t.as_secs_f64().max(1e-9)
        )?;
        let pts: Vec<String> = series.iter().map(|m| mib(m.rss)).collect();
        writeln!(
            out,
            "| VmRSS during the sweep | {} | `/proc/PID/status` at every tenth of the sweep |",
            pts.join(" → ")
        )?;
    }
    writeln!(
        out,
        "| `data.redb` on disk | {} ({:.1} MiB; {:.1} MiB allocated) | file length and allocated blocks after loading |",
        thousands(db_len),
        db_len as f64 / 1048576.0,
        db_alloc as f64 / 1048576.0
    )?;
    let audit = dir_size(&l.node.join("audit"));
    if audit > 0 {
        writeln!(
            out,
            "| audit log on disk at the end | {} ({:.1} MiB) | size of `DIR/audit` after every phase above (one record per key operation) |",
            thousands(audit),
            audit as f64 / 1048576.0
        )?;
    }
    writeln!(out)?;

    writeln!(out, "### Inventory compare at this size")?;
    writeln!(out)?;
    writeln!(out, "| figure | value | how measured |")?;
    writeln!(out, "|---|---|---|")?;
    writeln!(
        out,
        "| `GET /partitions/p1/inventory` body | **{} B**: `{}` | response body as received |",
        inv.summary_body,
        inv.summary_json.trim()
    )?;
    writeln!(
        out,
        "| same, one more call on an open connection, `hsm_api::Client` (hyper, HTTP/2, as the proxy calls it) | {} | a TCP relay between client and node counts TLS records per direction; median of 11 calls; HTTP bytes = application_data record lengths − 17 B each (inner type + AEAD tag), i.e. excluding the 22 B of TLS overhead per record |",
        client_m.text()
    )?;
    for c in &curls {
        writeln!(
            out,
            "| same with `curl {}` | {}; curl's `size_request size_header size_download http_version num_connects`: `{}`; whole one-request connection incl. TLS handshake: {} B up, {} B down | the relay's count of a connection with two requests minus that of a connection with one (curl sends its default `User-Agent` and `Accept`, and the bearer token) |",
            c.http,
            c.marginal.text(),
            c.counters,
            c.single.up.bytes,
            c.single.down.bytes
        )?;
    }
    writeln!(
        out,
        "| `GET /inventory` latency | **median {}**, p90 {}, min {}, max {} | {} sequential calls on a kept-alive HTTP/2 connection after 5 unmeasured, `hsm_api::Client::inventory` (request to decoded answer) |",
        ms(median(&inv.summary_lat)),
        ms(percentile(&inv.summary_lat, 0.9)),
        ms(percentile(&inv.summary_lat, 0.0)),
        ms(percentile(&inv.summary_lat, 1.0)),
        inv.summary_lat.len()
    )?;
    writeln!(
        out,
        "| `GET /inventory/buckets` | median {} (p90 {}); body {} B, {} non-empty buckets | {} sequential calls |",
        ms(median(&inv.buckets_lat)),
        ms(percentile(&inv.buckets_lat, 0.9)),
        thousands(inv.buckets_body as u64),
        inv.buckets_n,
        inv.buckets_lat.len()
    )?;
    writeln!(
        out,
        "| `GET /inventory/buckets/{}` (the fullest bucket, every page) | median {} (p90 {}); {} entries in {} pages, {} B of bodies | {} sequential fetches of all pages (500 entries a page), following `nextLink` |",
        inv.bucket,
        ms(median(&inv.bucket_lat)),
        ms(percentile(&inv.bucket_lat, 0.9)),
        thousands(inv.bucket_entries),
        inv.bucket_pages,
        thousands(inv.bucket_bytes as u64),
        inv.bucket_lat.len()
    )?;
    writeln!(out)?;

    // Where the memory goes.
    writeln!(out, "### Where the memory goes")?;
    writeln!(out)?;
    writeln!(
        out,
        "A fresh process (this tool started again with `--probe`) makes the node's own library calls on the same database and reads its VmRSS after each step: redb's page cache (as `Store::open` sizes it: 90 % read cache, 10 % write cache) keeps every page read up to its size, and the node's key cache keeps, per name used, the version, its record and the parsed key."
    )?;
    writeln!(out)?;
    writeln!(out, "| step | probe VmRSS | growth |")?;
    writeln!(out, "|---|---:|---:|")?;
    let mut prev = 0;
    for (step, label) in [
        ("start", "process started"),
        ("open", "`Store::open`"),
        (
            "live_key_counts",
            "`live_key_counts` (start-up reads every name record)",
        ),
        (
            "read_all",
            "every name and its current version read once (`list_names`, as a sweep of all keys reads them)",
        ),
        ("read_inventory", "every inventory entry read once"),
    ] {
        let r = probe.rss(step);
        writeln!(
            out,
            "| {label} | {} | {} |",
            mib(r),
            if step == "start" {
                String::new()
            } else {
                format!("+{}", mib(r.saturating_sub(prev)))
            }
        )?;
        prev = r;
    }
    for (kind, n, kib) in &probe.cached {
        writeln!(
            out,
            "| {} {} keys held as the key cache holds them (unsealed, parsed, with record and name) | | +{} = {:.0} B a key |",
            thousands(*n),
            kind.title(),
            mib(*kib),
            *kib as f64 * 1024.0 / (*n).max(1) as f64
        )?;
    }
    // The key cache at its cap with the heaviest mix.
    let cap = cache_cap;
    let r = args.rsa.min(cap);
    let p = args.p256.min(cap - r);
    let a = args.aes.min(cap - r - p);
    let est = probe.per_key(Kind::Rsa).unwrap_or(0.0) * r as f64
        + probe.per_key(Kind::P256).unwrap_or(0.0) * p as f64
        + probe.per_key(Kind::Aes).unwrap_or(0.0) * a as f64;
    writeln!(
        out,
        "| estimate: key cache full ({} names: {} RSA, {} P-256, {} AES) | | ≈ {:.0} MiB |",
        thousands(cap as u64),
        thousands(r as u64),
        thousands(p as u64),
        thousands(a as u64),
        est / 1048576.0
    )?;
    let (nb, vb, ib) = probe.stored;
    writeln!(
        out,
        "| stored record bytes (key + JSON value): names {:.1} MiB, versions {:.1} MiB, inventory {:.1} MiB; `data.redb` {:.1} MiB | | |",
        nb as f64 / 1048576.0,
        vb as f64 / 1048576.0,
        ib as f64 / 1048576.0,
        db_len as f64 / 1048576.0
    )?;
    writeln!(out)?;

    // Goals.
    let start_med = median(&readies);
    let peak_rss = starts
        .iter()
        .map(|(_, a, b, _)| a.hwm.max(b.hwm))
        .chain([after_warm.hwm])
        .chain(sweep.as_ref().map(|(_, _, m, _)| m.hwm))
        .max()
        .unwrap_or(0);
    let (cu, cd) = client_m.http();
    writeln!(out, "### Goals")?;
    writeln!(out)?;
    writeln!(out, "| goal | measured | met? |")?;
    writeln!(out, "|---|---|---|")?;
    let yn = |b: bool| if b { "yes" } else { "**no**" };
    writeln!(
        out,
        "| start-up ≤ 5 s | page cache warm: median {} (each: {}); `data.redb` evicted from the page cache: median {} (each: {}) | {} |",
        ms(start_med),
        readies
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", "),
        ms(median(&cold_readies)),
        cold_readies
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", "),
        yn(readies
            .iter()
            .chain(&cold_readies)
            .all(|d| *d <= Duration::from_secs(5)))
    )?;
    writeln!(
        out,
        "| RSS ≤ 512 MiB, all three loads in one partition | peak VmHWM {} ({}); after the warm phase VmRSS {} | {} |",
        mib(peak_rss),
        if sweep.is_some() { "after the sweep of every key" } else { "no sweep run" },
        mib(after_warm.rss),
        yn(peak_rss <= 512 * 1024)
    )?;
    let curl_text: Vec<String> = curls
        .iter()
        .map(|c| {
            let (u, d) = c.marginal.http();
            format!("curl {}: {} B", c.http, u + d)
        })
        .collect();
    writeln!(
        out,
        "| equal-inventory compare in one round trip < 1 KiB | one `GET /inventory`: {} B HTTP (request {cu} + response {cd}) with hsm_api::Client over HTTP/2; {} | {} |",
        cu + cd,
        curl_text.join("; "),
        yn(cu + cd < 1024 && curls.iter().all(|c| {
            let (u, d) = c.marginal.http();
            u + d < 1024
        }))
    )?;
    print!("{out}");
    Ok(())
}

//! PKCS#11 signing rate: our module (libhsm_pkcs11.so) through `hsm-proxy`
//! and its members, against SoftHSM2 loaded directly and SoftHSM2 through
//! p11-kit's remote PKCS#11 (`p11-kit server` + `p11-kit-client.so`), on the
//! same machine in one run.
//!
//! One module (`--module`, `--pin`, `--token-label`): logs in as CKU_USER,
//! finds or generates the token key `p11bench-<alg>`, checks one signature
//! with C_Verify, then signs from `--threads` threads (one session each)
//! for `--warmup` + `--seconds` seconds and reports signs/s, the p50/p99
//! latency of the calls made in the measured seconds and the process's CPU
//! per signature over them:
//!
//! ```text
//! p11bench --module /usr/lib/softhsm/libsofthsm2.so --token-label softhsm --pin 1234 \
//!          --threads 8 --seconds 10 --alg ec-p256
//! ```
//!
//! `--compare` starts everything itself in temporary directories and
//! measures the three side by side, each run in a child `p11bench` process
//! (a clean load of the module with its own environment):
//!
//! - hsm-ha: `hsm-proxy dev --members 3` (the `hsm-proxy` next to this
//!   binary), `libhsm_pkcs11.so` next to this binary with `HSM_PKCS11_CONF`
//!   naming the group's URL and CA, PIN = the crypto officer's password;
//! - SoftHSM2 direct: `/usr/lib/softhsm/libsofthsm2.so`, a token made by
//!   `softhsm2-util --init-token`;
//! - SoftHSM2 through p11-kit: `p11-kit server --provider libsofthsm2.so
//!   pkcs11:token=softhsm` (its own token), the client loading
//!   `p11-kit-client.so` with `P11_KIT_SERVER_ADDRESS`.
//!
//! ```text
//! cargo build --release -p hsm-tests -p hsm-proxy -p hsm-node -p hsm-pkcs11
//! target/release/p11bench --compare --threads 1,16 --seconds 10 --alg ec-p256,rsa-2048
//! ```
//!
//! The algorithms, a run's outcome and its JSON line, and the child runs
//! are `hsm_tests::p11rate`'s, shared with `compare --only tokens`.
//!
//! Everything runs on this machine and its loopback; every loop ends by
//! time.
#![forbid(unsafe_code)]

// Each benchmark binary uses a part of the shared module.
#[allow(dead_code)]
#[path = "../bench.rs"]
mod bench;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_tests::p11rate::{run_child, Alg, Outcome, Run, Target};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const P11KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
const SOFTHSM_LABEL: &str = "softhsm";
const SOFTHSM_PIN: &str = "1234";
/// DER of the P-256 OID (CKA_EC_PARAMS).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[derive(Parser, Debug)]
#[command(
    about = "PKCS#11 signing rate: one module, or --compare ours / SoftHSM2 / p11-kit remote"
)]
struct Args {
    /// The PKCS#11 module (.so) to load (without --compare).
    #[arg(long)]
    module: Option<PathBuf>,
    /// The CKU_USER PIN (without --compare).
    #[arg(long)]
    pin: Option<String>,
    /// The label of the token to use (without --compare).
    #[arg(long)]
    token_label: Option<String>,
    /// Signing threads, each with its own session; with --compare a
    /// comma-separated list, each count measured on every module.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    threads: Vec<usize>,
    /// Measured seconds of each run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unmeasured warm-up seconds before each run (signing, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Key and mechanism: ec-p256 (CKM_ECDSA over a 32-byte digest) or
    /// rsa-2048 (CKM_SHA256_RSA_PKCS over 32 bytes); with --compare a
    /// comma-separated list.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ec-p256")]
    alg: Vec<Alg>,
    /// Print one JSON object per run instead of text.
    #[arg(long)]
    json: bool,
    /// Start hsm-proxy dev, a SoftHSM2 token and a p11-kit server, and
    /// measure our module, SoftHSM2 direct and SoftHSM2 through p11-kit
    /// remote side by side (a Markdown table on stdout).
    #[arg(long)]
    compare: bool,
    /// Members of the hsm-proxy dev group (--compare).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Rounds of the whole sequence (--compare); the table shows the median
    /// of each cell's rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also write the --compare report (Markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A cryptoki error as `C_Function: CKR name`.
fn ck(e: CkError) -> anyhow::Error {
    match e {
        CkError::Pkcs11(rv, f) => anyhow!("{f}: {rv:?}"),
        other => anyhow!("{other}"),
    }
}

fn find_slot(p11: &Pkcs11, label: &str) -> Result<Slot> {
    let slots = p11.get_slots_with_token().map_err(ck)?;
    let mut seen = Vec::new();
    for slot in slots {
        let info = p11.get_token_info(slot).map_err(ck)?;
        let l = info.label().trim_end().to_string();
        if l == label {
            return Ok(slot);
        }
        seen.push(l);
    }
    bail!("no token labelled {label:?} (tokens: {seen:?})")
}

fn find_one(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck)?;
    Ok(found.first().copied())
}

/// The key pair `p11bench-<alg>` on the token: found, or generated.
fn key_pair(session: &Session, alg: Alg) -> Result<(ObjectHandle, ObjectHandle, bool)> {
    let label = format!("p11bench-{}", alg.name());
    if let (Some(prv), Some(pub_)) = (
        find_one(session, ObjectClass::PRIVATE_KEY, &label)?,
        find_one(session, ObjectClass::PUBLIC_KEY, &label)?,
    ) {
        return Ok((prv, pub_, false));
    }
    let l = Attribute::Label(label.as_bytes().to_vec());
    let (mech, mut pub_t, kt) = match alg {
        Alg::EcP256 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(P256_PARAMS.to_vec())],
            KeyType::EC,
        ),
        Alg::Rsa2048 => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            KeyType::RSA,
        ),
    };
    pub_t.extend([
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(kt),
        Attribute::Token(true),
        Attribute::Verify(true),
        l.clone(),
    ]);
    let prv_t = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(kt),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        l,
    ];
    let (pub_, prv) = session
        .generate_key_pair(&mech, &pub_t, &prv_t)
        .map_err(ck)?;
    Ok((prv, pub_, true))
}

fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

/// Loads `module`, logs in and signs from `threads` sessions.
fn measure(
    module: &Path,
    token: &str,
    pin: &str,
    alg: Alg,
    threads: usize,
    seconds: f64,
    warmup: f64,
) -> Result<Outcome> {
    if threads == 0 || threads > 512 {
        bail!("--threads must be in 1..=512");
    }
    bench::check_timing(seconds, warmup, 1)?;
    let p11 = Pkcs11::new(module).with_context(|| format!("loading {}", module.display()))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(ck)?;
    let library = p11.get_library_info().ok().map(|i| {
        format!(
            "{} {} {}",
            i.manufacturer_id().trim(),
            i.library_description().trim(),
            i.library_version()
        )
    });
    let slot = find_slot(&p11, token)?;
    let admin = p11.open_rw_session(slot).map_err(ck)?;
    match admin.login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(ck(e)).context("C_Login as CKU_USER"),
    }
    let (prv, pub_, _) = key_pair(&admin, alg)?;
    let mech = alg.mechanism();
    let data = [7u8; 32];
    let sig = admin.sign(&mech, prv, &data).map_err(ck)?;
    admin
        .verify(&mech, pub_, &data, &sig)
        .map_err(ck)
        .context("C_Verify of the first signature")?;

    let sessions: Vec<Session> = (0..threads)
        .map(|_| p11.open_rw_session(slot).map_err(ck))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    let measured_from = start + Duration::from_secs_f64(warmup);
    let end = measured_from + Duration::from_secs_f64(seconds);
    let hz = bench::clock_ticks_per_sec();
    let mut cpu_cores = None;
    let results: Vec<(Vec<u32>, u64, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(t, session)| {
                scope.spawn(move || {
                    // Mechanism holds raw pointers (not Send): made here.
                    let mech = alg.mechanism();
                    let mut lat = Vec::with_capacity(4096);
                    let (mut errors, mut first) = (0u64, None);
                    let mut data = [0u8; 32];
                    data[0] = t as u8;
                    let mut n: u64 = 0;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        n += 1;
                        data[24..].copy_from_slice(&n.to_be_bytes());
                        let r = session.sign(&mech, prv, &data);
                        let t1 = Instant::now();
                        match r {
                            Ok(_) if t0 >= measured_from && t1 <= end => {
                                let us = (t1 - t0).as_micros().min(u128::from(u32::MAX));
                                lat.push(us as u32);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                errors += 1;
                                first.get_or_insert_with(|| ck(e).to_string());
                                if errors > 1000 {
                                    break;
                                }
                            }
                        }
                    }
                    (lat, errors, first)
                })
            })
            .collect();
        // This process's CPU over the measured seconds (the signing
        // threads' and, next to nothing, this sleeping one's).
        std::thread::sleep(measured_from.saturating_duration_since(Instant::now()));
        let a = bench::sample(&[]);
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let b = bench::sample(&[]);
        cpu_cores = Some(bench::cpu_between(&a, &b, hz).bench);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Vec::new(), 1, Some("thread panicked".into())))
            })
            .collect()
    });
    let mut all: Vec<u32> = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for (lat, e, f) in results {
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    all.sort_unstable();
    drop(admin);
    // C_Finalize: a module that stays loaded (a Rust cdylib is not unloaded
    // by dlclose) can then be initialized again for the next --alg.
    p11.finalize().map_err(ck)?;
    Ok(Outcome {
        signs: all.len() as u64,
        errors,
        first_error,
        rate: all.len() as f64 / seconds,
        p50_ms: percentile_ms(&all, 0.50),
        p99_ms: percentile_ms(&all, 0.99),
        cpu_cores,
        library,
    })
}

fn single(args: &Args) -> Result<()> {
    let module = args.module.as_deref().context("--module is required")?;
    let token = args
        .token_label
        .as_deref()
        .context("--token-label is required")?;
    let pin = args.pin.as_deref().context("--pin is required")?;
    let [threads] = args.threads[..] else {
        bail!("one --threads value without --compare");
    };
    for &alg in &args.alg {
        let o = measure(module, token, pin, alg, threads, args.seconds, args.warmup)?;
        if args.json {
            println!("{}", o.json(module, token, alg, threads, args.seconds));
        } else {
            println!(
                "{} {token} {} threads {threads}: {} signs in {} s = {:.0} signs/s, p50 {:.2} ms, \
                 p99 {:.2} ms, CPU {} µs/sign, errors {}{}",
                module.display(),
                alg.name(),
                o.signs,
                args.seconds,
                o.rate,
                o.p50_ms,
                o.p99_ms,
                o.cpu_us_per_sign()
                    .map(|us| format!("{us:.0}"))
                    .unwrap_or_else(|| "-".into()),
                o.errors,
                o.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// --compare

/// A child process ended by SIGTERM (by PID) when dropped.
struct Proc {
    what: String,
    child: Option<Child>,
}

impl Proc {
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
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
        eprintln!("{} did not stop on SIGTERM; killing it", self.what);
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn softhsm_token(dir: &Path) -> Result<PathBuf> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", SOFTHSM_LABEL])
        .args(["--pin", SOFTHSM_PIN, "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .stdin(Stdio::null())
        .output()
        .context("softhsm2-util (Debian package softhsm2)")?;
    if !out.status.success() {
        bail!(
            "softhsm2-util --init-token: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(conf)
}

/// `hsm-proxy dev --members N` in `dir`; returns the process and dev.json.
fn start_group(dir: &Path, members: usize) -> Result<(Proc, serde_json::Value)> {
    std::fs::create_dir_all(dir)?;
    let proxy = hsm_tests::bin("hsm-proxy");
    let g = dir.join("g");
    let child = Command::new(&proxy)
        .args(["dev", "--dir"])
        .arg(&g)
        .args(["--members", &members.to_string(), "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("proxy.out"))?)
        .stderr(std::fs::File::create(dir.join("proxy.err"))?)
        .spawn()
        .with_context(|| format!("starting {}", proxy.display()))?;
    let mut proc_ = Proc {
        what: "hsm-proxy dev".into(),
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let info: serde_json::Value = loop {
        if let Ok(v) = std::fs::read_to_string(g.join("dev.json"))
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str(&t)?))
        {
            break v;
        }
        if let Some(c) = proc_.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                bail!(
                    "hsm-proxy dev exited with {st}: {}",
                    std::fs::read_to_string(dir.join("proxy.err")).unwrap_or_default()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("no dev.json within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let url = info["url"].as_str().context("dev.json: url")?.to_string();
    let ca = PathBuf::from(info["ca_cert"].as_str().context("dev.json: ca_cert")?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client =
            hsm_api::Client::new(&hsm_api::ClientConfig::from_files(url.as_str(), &ca, None)?)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.health().await {
                Ok(h) if h.status == "ready" => return Ok::<_, anyhow::Error>(()),
                other if Instant::now() > deadline => {
                    bail!("{url}/health not ready within 60 s: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })?;
    Ok((proc_, info))
}

/// `p11-kit server` in the foreground over SoftHSM2 (`conf`); returns the
/// process and the `P11_KIT_SERVER_ADDRESS` for its clients.
fn start_p11kit(dir: &Path, conf: &Path) -> Result<(Proc, String)> {
    let sock = dir.join("p11kit.sock");
    let child = Command::new("p11-kit")
        .args(["server", "--foreground", "--sh", "--name"])
        .arg(&sock)
        .args(["--provider", SOFTHSM_MODULE])
        .arg(format!("pkcs11:token={SOFTHSM_LABEL}"))
        .env("SOFTHSM2_CONF", conf)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("p11kit.out"))?)
        .stderr(std::fs::File::create(dir.join("p11kit.err"))?)
        .spawn()
        .context("starting p11-kit server (Debian package p11-kit)")?;
    let proc_ = Proc {
        what: "p11-kit server".into(),
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        if Instant::now() > deadline {
            bail!(
                "p11-kit server made no socket within 20 s: {}",
                std::fs::read_to_string(dir.join("p11kit.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc_, format!("unix:path={}", sock.display())))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn compare(args: &Args) -> Result<()> {
    if args.rounds == 0 || args.rounds > 20 {
        bail!("--rounds must be in 1..=20");
    }
    bench::check_timing(args.seconds, args.warmup, args.rounds)?;
    let ours_module = hsm_tests::bin_dir().join("libhsm_pkcs11.so");
    for m in [
        ours_module.as_path(),
        Path::new(SOFTHSM_MODULE),
        Path::new(P11KIT_CLIENT),
    ] {
        if !m.exists() {
            bail!("{} is missing", m.display());
        }
    }
    let tmp = tempfile::tempdir()?;
    let (mut group, info) =
        start_group(&tmp.path().join("ours"), args.members).context("starting hsm-proxy dev")?;
    let ours_conf = tmp.path().join("pkcs11.toml");
    std::fs::write(
        &ours_conf,
        format!(
            "url = \"{}\"\nca = \"{}\"\n",
            info["url"].as_str().context("url")?,
            info["ca_cert"].as_str().context("ca_cert")?
        ),
    )?;
    let direct_dir = tmp.path().join("softhsm-direct");
    let direct_conf = softhsm_token(&direct_dir)?;
    let remote_dir = tmp.path().join("softhsm-remote");
    let remote_conf = softhsm_token(&remote_dir)?;
    let (mut p11kit, address) = start_p11kit(&remote_dir, &remote_conf)?;

    let targets = [
        Target {
            name: "hsm-ha",
            module: ours_module.clone(),
            token: "hsm-ha".into(),
            pin: info["crypto_officer_password"]
                .as_str()
                .context("crypto_officer_password")?
                .into(),
            env: vec![("HSM_PKCS11_CONF", ours_conf.display().to_string())],
        },
        Target {
            name: "SoftHSM2 direct",
            module: SOFTHSM_MODULE.into(),
            token: SOFTHSM_LABEL.into(),
            pin: SOFTHSM_PIN.into(),
            env: vec![("SOFTHSM2_CONF", direct_conf.display().to_string())],
        },
        Target {
            name: "SoftHSM2 via p11-kit",
            module: P11KIT_CLIENT.into(),
            token: SOFTHSM_LABEL.into(),
            pin: SOFTHSM_PIN.into(),
            env: vec![("P11_KIT_SERVER_ADDRESS", address.clone())],
        },
    ];

    // cells[(alg, threads, target)] = outcomes over rounds
    let mut cells: Vec<((Alg, usize, usize), Vec<Outcome>)> = Vec::new();
    for round in 0..args.rounds {
        for &alg in &args.alg {
            for &threads in &args.threads {
                for (ti, target) in targets.iter().enumerate() {
                    let o = run_child(
                        target,
                        Run {
                            alg,
                            threads,
                            seconds: args.seconds,
                            warmup: args.warmup,
                        },
                    )?;
                    eprintln!(
                        "round {} {} threads {threads} {}: {:.0} signs/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                        round + 1,
                        alg.name(),
                        target.name,
                        o.rate,
                        o.p50_ms,
                        o.p99_ms,
                        o.errors
                    );
                    if o.errors > 0 {
                        bail!(
                            "{} {} threads {threads}: {} errors, first: {}",
                            target.name,
                            alg.name(),
                            o.errors,
                            o.first_error.unwrap_or_default()
                        );
                    }
                    match cells.iter_mut().find(|(k, _)| *k == (alg, threads, ti)) {
                        Some((_, v)) => v.push(o),
                        None => cells.push(((alg, threads, ti), vec![o])),
                    }
                }
            }
        }
    }
    p11kit.stop();
    group.stop();

    let mut md = String::new();
    md.push_str(&format!(
        "Machine: {}. Code: {} ({} build). Command: `p11bench --compare --threads {} --seconds {} \
         --warmup {} --alg {} --rounds {} --members {}`. Each cell: the median over {} round(s) of \
         signs/s (p50 / p99 latency in ms); ratios are of the rates.\n\n",
        bench::machine(),
        bench::source_state(),
        bench::profile(),
        args.threads
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.seconds,
        args.warmup,
        args.alg
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(","),
        args.rounds,
        args.members,
        args.rounds
    ));
    md.push_str(
        "| key, mechanism | threads | hsm-ha (module + proxy + members) | SoftHSM2 direct | \
         SoftHSM2 via p11-kit remote | hsm-ha / direct | hsm-ha / p11-kit |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for &alg in &args.alg {
        for &threads in &args.threads {
            let get = |ti: usize| {
                let v = cells
                    .iter()
                    .find(|(k, _)| *k == (alg, threads, ti))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (
                    median(v.iter().map(|o| o.rate).collect()),
                    median(v.iter().map(|o| o.p50_ms).collect()),
                    median(v.iter().map(|o| o.p99_ms).collect()),
                )
            };
            let cols: Vec<(f64, f64, f64)> = (0..targets.len()).map(get).collect();
            let cell =
                |c: (f64, f64, f64)| format!("{} ({:.2} / {:.2})", bench::thousands(c.0), c.1, c.2);
            md.push_str(&format!(
                "| {} | {threads} | {} | {} | {} | {:.2} | {:.2} |\n",
                alg.describe(),
                cell(cols[0]),
                cell(cols[1]),
                cell(cols[2]),
                cols[0].0 / cols[1].0,
                cols[0].0 / cols[2].0,
            ));
        }
    }
    print!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.compare {
        compare(&args)
    } else {
        single(&args)
    }
}

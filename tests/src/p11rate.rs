//! A PKCS#11 module's own signing rate, as `p11bench` measures it, in a
//! child process of its own: shared by `p11bench --compare` (ours, SoftHSM2
//! direct, SoftHSM2 through p11-kit) and `compare --only tokens` (SoftHSM2's
//! in-process `C_Sign` beside the token members it is compared with).
//!
//! Decides: the algorithms and their mechanisms (`ec-p256`: `CKM_ECDSA`
//! over a 32-byte digest, which is what ES256 on a token member does;
//! `rsa-2048`: `CKM_SHA256_RSA_PKCS` over 32 bytes), what one measured run
//! reports and its JSON line (the child's last line of output), and how a
//! child `p11bench` is run: its module, token, PIN and environment (a
//! module such as SoftHSM2 reads its configuration from the environment
//! when it is loaded, so each run gets a clean load of its own). Never: the
//! measuring loop itself (`p11bench`'s `measure`) or the report.

use anyhow::{bail, Context, Result};
use cryptoki::mechanism::Mechanism;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Key and mechanism of a run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Alg {
    #[value(name = "ec-p256")]
    EcP256,
    #[value(name = "rsa-2048")]
    Rsa2048,
}

impl Alg {
    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Alg::EcP256 => "ec-p256",
            Alg::Rsa2048 => "rsa-2048",
        }
    }

    /// The signing mechanism (made where it is used: a `Mechanism` holds
    /// raw pointers and is not `Send`).
    pub fn mechanism(self) -> Mechanism<'static> {
        match self {
            Alg::EcP256 => Mechanism::Ecdsa,
            Alg::Rsa2048 => Mechanism::Sha256RsaPkcs,
        }
    }

    /// The key and mechanism, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Alg::EcP256 => "EC P-256, CKM_ECDSA over a 32-byte digest",
            Alg::Rsa2048 => "RSA-2048, CKM_SHA256_RSA_PKCS over 32 bytes",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Signatures that started and ended inside the measured seconds.
    pub signs: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// `signs` per measured second.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU of the measuring process over the measured seconds, in cores
    /// (1.0 = one core busy all along); `None` when it was not read.
    pub cpu_cores: Option<f64>,
    /// The module's own description (`C_GetInfo`: manufacturer, library
    /// description and version), when it was read.
    pub library: Option<String>,
}

impl Outcome {
    /// The JSON line a child prints.
    pub fn json(
        &self,
        module: &Path,
        token: &str,
        alg: Alg,
        threads: usize,
        seconds: f64,
    ) -> String {
        serde_json::json!({
            "module": module.display().to_string(),
            "library": self.library,
            "token": token,
            "alg": alg.name(),
            "threads": threads,
            "seconds": seconds,
            "signs": self.signs,
            "errors": self.errors,
            "first_error": self.first_error,
            "rate": self.rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "cpu_cores": self.cpu_cores,
        })
        .to_string()
    }

    /// Reads a child's JSON line back.
    pub fn from_json(v: &serde_json::Value) -> Result<Outcome> {
        let f = |k: &str| v[k].as_f64().with_context(|| format!("{k} in {v}"));
        Ok(Outcome {
            signs: v["signs"].as_u64().context("signs")?,
            errors: v["errors"].as_u64().context("errors")?,
            first_error: v["first_error"].as_str().map(str::to_string),
            rate: f("rate")?,
            p50_ms: f("p50_ms")?,
            p99_ms: f("p99_ms")?,
            cpu_cores: v["cpu_cores"].as_f64(),
            library: v["library"].as_str().map(str::to_string),
        })
    }

    /// CPU microseconds per signature, when the CPU was read.
    pub fn cpu_us_per_sign(&self) -> Option<f64> {
        self.cpu_cores
            .filter(|_| self.rate > 0.0)
            .map(|c| c / self.rate * 1e6)
    }
}

/// One module to measure: how to load it.
pub struct Target {
    /// For reports and errors.
    pub name: &'static str,
    pub module: PathBuf,
    pub token: String,
    pub pin: String,
    /// Set in the child's environment (e.g. `SOFTHSM2_CONF`).
    pub env: Vec<(&'static str, String)>,
}

/// How long and how wide one run is.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub alg: Alg,
    /// Signing threads, each with its own session.
    pub threads: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Unmeasured seconds of signing first.
    pub warmup: f64,
}

/// One run of `target` in a child `p11bench`; its outcome.
pub fn run_child(target: &Target, run: Run) -> Result<Outcome> {
    // The binary beside this one (a rebuild while this runs replaces the
    // file at the same path).
    let exe = crate::bin("p11bench");
    if !exe.exists() {
        bail!(
            "{} is missing: build it (`cargo build --release -p hsm-tests`)",
            exe.display()
        );
    }
    let mut cmd = Command::new(&exe);
    cmd.arg("--module")
        .arg(&target.module)
        .args(["--token-label", &target.token, "--pin", &target.pin])
        .args([
            "--alg",
            run.alg.name(),
            "--threads",
            &run.threads.to_string(),
        ])
        .args(["--seconds", &run.seconds.to_string()])
        .args(["--warmup", &run.warmup.to_string(), "--json"])
        .stdin(Stdio::null());
    for (k, v) in &target.env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running p11bench")?;
    if !out.status.success() {
        bail!(
            "{} {} threads {}: {}\n{}",
            target.name,
            run.alg.name(),
            run.threads,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("p11bench printed nothing")?;
    Outcome::from_json(&serde_json::from_str(line).context("p11bench's JSON line")?)
}

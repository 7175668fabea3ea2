//! `hsm-bench`: load against one Key Vault keys endpoint — an `hsm-node`
//! partition, `hsm-proxy`, or a load balancer in front of members — in a
//! closed or an open loop, with a progress line every second, a table at
//! the end and, with `--json`, the result as JSON (`hsm_bench::report`).
#![forbid(unsafe_code)]

use clap::Parser;
use hsm_api::{Client, ClientConfig, ClientError, Role};
use hsm_bench::load::{self, Mode, Plan, Progress};
use hsm_bench::report;
use hsm_bench::workload::{Mix, Payload};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Every flag of the command line.
#[derive(Parser, Debug)]
#[command(name = "hsm-bench", version, about)]
struct Args {
    /// Base URL of the endpoint: `https://127.0.0.1:8443` for hsm-proxy (or
    /// a load balancer), `https://HOST:PORT/partitions/NAME` for a node.
    #[arg(long)]
    url: String,
    /// PEM file with the CA certificate(s) that signed the server's.
    #[arg(long)]
    ca: PathBuf,
    /// PEM client certificate for mutual TLS (nodes require a registered
    /// one); with `--key`.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The role to log in as: `crypto-user`, or `crypto-officer` (needed
    /// by `--setup`).
    #[arg(long, default_value = "crypto-user")]
    role: String,
    /// Name of the environment variable that holds the role's password
    /// (never a flag: command lines are visible to every user).
    #[arg(long, default_value = "HSM_BENCH_PASSWORD")]
    password_env: String,
    /// The operations, one (`es256`, `rs256`, `a256gcm`) or a weighted
    /// mix: `es256=50,rs256=10,a256gcm=40`.
    #[arg(long, default_value = "es256")]
    workload: String,
    /// Closed loop: this many workers, each sending its next request when
    /// the last is answered. The default mode.
    #[arg(long, default_value_t = 32, conflicts_with = "rate")]
    concurrency: usize,
    /// Open loop instead: start this many requests per second on a fixed
    /// schedule; latency counts from each request's scheduled start.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: most requests in flight; a scheduled request beyond it
    /// is not started and is counted as such.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before the measured window, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Client connections (each its own TCP and TLS session); workers
    /// share them round-robin, over HTTP/2 when the server offers it.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds one request may take before it counts as a `Timeout` error.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Create the workload's keys first where missing (`bench-ec`,
    /// `bench-rsa`, `bench-aes`); needs `--role crypto-officer`.
    #[arg(long)]
    setup: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("connecting to {url}: {source}")]
    Client { url: String, source: ClientError },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hsm-bench: error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsm-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A failed request's kind, for the error counts.
fn kind(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, code, .. } => format!("{status} {code}"),
        ClientError::Timeout { .. } => "Timeout".into(),
        ClientError::Connect { .. } => "Connect".into(),
        ClientError::Transport { .. } => "Transport".into(),
        ClientError::Decode { .. } => "BadAnswer".into(),
        other => other.to_string().chars().take(60).collect(),
    }
}

async fn run(a: Args) -> Result<(), BenchError> {
    let mix = Mix::parse(&a.workload).map_err(|e| BenchError::Usage(format!("--workload: {e}")))?;
    let role: Role = a
        .role
        .parse()
        .map_err(|_| BenchError::Usage(format!("--role: `{}` is no role", a.role)))?;
    let seconds_ok = a.seconds > 0.0 && a.seconds <= 86_400.0;
    if !seconds_ok || !(0.0..=3600.0).contains(&a.warmup) {
        return Err(BenchError::Usage(
            "--seconds must be in (0, 86400] and --warmup in [0, 3600]".into(),
        ));
    }
    if a.concurrency == 0 || a.connections == 0 || a.max_in_flight == 0 {
        return Err(BenchError::Usage(
            "--concurrency, --connections and --max-in-flight must be at least 1".into(),
        ));
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r <= 1_000_000.0)) {
        return Err(BenchError::Usage("--rate must be in (0, 1000000]".into()));
    }
    if !(a.timeout > 0.0 && a.timeout <= 3600.0) {
        return Err(BenchError::Usage("--timeout must be in (0, 3600]".into()));
    }
    let password = std::env::var(&a.password_env).map_err(|_| {
        BenchError::Usage(format!(
            "set the password of {role} in the environment variable {}",
            a.password_env
        ))
    })?;
    let client_err = |source| BenchError::Client {
        url: a.url.clone(),
        source,
    };
    let mut cfg = ClientConfig::from_files(
        a.url.clone(),
        &a.ca,
        a.cert.as_deref().zip(a.key.as_deref()),
    )
    .map_err(client_err)?;
    cfg.timeout = Duration::from_secs_f64(a.timeout);
    let mut clients = Vec::new();
    for _ in 0..a.connections {
        let c = Client::new(&cfg).map_err(client_err)?;
        c.login(role, &password).await.map_err(client_err)?;
        clients.push(c);
    }
    let payload = Payload::new();
    if a.setup {
        for op in mix.ops() {
            if op.ensure_key(&clients[0]).await.map_err(client_err)? {
                eprintln!("hsm-bench: created key {}", op.key_name());
            }
        }
    }
    // One checked request per operation and connection before the clock
    // starts: the keys exist and every connection is open.
    for c in &clients {
        for op in mix.ops() {
            op.send(c, &payload).await.map_err(client_err)?;
        }
    }
    let mode = match a.rate {
        Some(rate) => Mode::Open {
            rate,
            max_in_flight: a.max_in_flight,
        },
        None => Mode::Closed {
            concurrency: a.concurrency,
        },
    };
    let plan = Plan {
        mode,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.seconds),
    };
    let clients = Arc::new(clients);
    let send = {
        let (clients, payload) = (clients.clone(), payload.clone());
        move |op: hsm_bench::workload::Op, worker: usize| {
            let c = clients[worker % clients.len()].clone();
            let p = payload.clone();
            async move { op.send(&c, &p).await.map_err(|e| kind(&e)) }
        }
    };
    let quiet = a.quiet;
    let outcome = load::run(plan, &mix, send, |p: Progress| {
        if !quiet {
            eprintln!(
                "hsm-bench: {:>5.1}/{:.0} s  {} ok  {} errors  {}/s",
                p.elapsed.as_secs_f64(),
                p.total.as_secs_f64(),
                p.ok,
                p.errors,
                p.last_second
            );
        }
    })
    .await;
    let result = report::Result::new(
        &a.url,
        &mix.describe(),
        mode,
        a.connections,
        a.warmup,
        &outcome,
    );
    print!("{}", result.table());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| BenchError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

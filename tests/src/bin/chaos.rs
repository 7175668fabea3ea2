//! The chaos suite's long random run: a seed-driven schedule of faults and
//! operations against a real group behind a real proxy, for as long as
//! asked, then the invariants of `hsm_tests::chaos`.
//!
//! `cargo run --release -p hsm-tests --bin chaos -- --seconds 600 [--seed N]`
//! (build `hsm-node` and `hsm-proxy` in the same profile first). Prints the
//! seed first and one `chaos summary:` line per run; exits non-zero when an
//! invariant broke, with the seed that reproduces it.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// How long each run lasts.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The seed of the first run (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Runs, each with the next seed.
    #[arg(long, default_value_t = 1)]
    runs: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let mut total = hsm_tests::chaos::Summary::default();
    for seed in first..first + args.runs {
        match hsm_tests::chaos::random_run(seed, args.seconds).await {
            Ok(s) => {
                total.faults += s.faults;
                total.requests += s.requests;
                total.failures += s.failures;
                total.keys += s.keys;
                total.keys_lost += s.keys_lost;
                total.slowest = total.slowest.max(s.slowest);
            }
            Err(e) => {
                eprintln!("chaos run with seed {seed} failed: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    total.scenario = format!("random x{} ({}s each)", args.runs, args.seconds);
    println!("{total}");
    std::process::ExitCode::SUCCESS
}

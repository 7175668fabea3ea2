//! When requests are sent, and how their latency is counted.
//!
//! Decides: the two modes — **closed loop** (`concurrency` workers, each
//! sending its next request when the last is answered: throughput at a
//! given parallelism) and **open loop** (requests start on a fixed
//! schedule of `rate` per second whatever the answers; latency counts from
//! the *scheduled* start, so a server that stalls is charged for every
//! request it delayed — no coordinated omission; a request that would
//! exceed `max_in_flight` is not started and counted as such) — the
//! warm-up that is not measured, which answers are measured (those that
//! arrive inside the window), and the once-a-second progress report.
//! Latencies go into one HdrHistogram per operation (microseconds, 3
//! significant digits, up to 10 minutes). Never: what a request is
//! (`workload`) or how results are shown (`report`).

use crate::workload::{Mix, Op};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

/// How long to load.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub mode: Mode,
    /// Load that is not measured, first.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// Once a second while the load runs.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Since the start (warm-up included).
    pub elapsed: Duration,
    pub total: Duration,
    /// Answered in the window so far.
    pub ok: u64,
    pub errors: u64,
    /// Answers (good or not) in the last second.
    pub last_second: u64,
}

/// What one run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Latency of the good answers in the window, per operation (µs).
    pub latency: BTreeMap<Op, Histogram<u64>>,
    /// Good answers in the window.
    pub ok: u64,
    /// Failed requests in the window, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Open loop: scheduled requests not started (the in-flight cap).
    pub not_started: u64,
    /// Requests started in the window and answered only after it (a stall
    /// at the end): not in `ok` or `errors`, but the latency of the good
    /// ones is in `latency`, so that a request held past the window is not
    /// hidden.
    pub outlasted: u64,
    /// The measured window.
    pub window: Duration,
}

impl Outcome {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
    /// Every operation's latencies in one histogram.
    pub fn all(&self) -> Histogram<u64> {
        let mut h = histogram();
        for x in self.latency.values() {
            let _ = h.add(x);
        }
        h
    }
}

/// A histogram of microseconds, 1 µs to 10 minutes, 3 digits.
#[allow(clippy::expect_used)]
pub fn histogram() -> Histogram<u64> {
    // Constant bounds within the constructor's rules (low ≥ 1, high ≥ 2 ×
    // low, digits ≤ 5): it cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds")
}

struct Sample {
    op: Op,
    latency: Duration,
    error: Option<String>,
    /// When it was sent (open loop: scheduled).
    sent: Instant,
    done: Instant,
}

/// Runs `plan`: `send(op, worker)` sends one request (the worker index
/// lets the caller spread workers over connections) and answers `Err`
/// with a short error kind. Operations are drawn from `mix`.
pub async fn run<F, Fut>(
    plan: Plan,
    mix: &Mix,
    send: F,
    mut progress: impl FnMut(Progress),
) -> Outcome
where
    F: Fn(Op, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let send = Arc::new(send);
    let t0 = Instant::now();
    let start = t0 + plan.warmup;
    let end = start + plan.duration;
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let not_started = Arc::new(AtomicU64::new(0));
    let driver = match plan.mode {
        Mode::Closed { concurrency } => {
            let mut workers = tokio::task::JoinSet::new();
            for w in 0..concurrency.max(1) {
                let (send, tx, mix) = (send.clone(), tx.clone(), mix.clone());
                workers.spawn(async move {
                    let mut draw = rand::random::<u32>();
                    while Instant::now() < end {
                        draw = draw.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let op = mix.pick(draw >> 8);
                        let sent = Instant::now();
                        let r = send(op, w).await;
                        let done = Instant::now();
                        let _ = tx.send(Sample {
                            op,
                            latency: done - sent,
                            error: r.err(),
                            sent,
                            done,
                        });
                    }
                });
            }
            tokio::spawn(async move { while workers.join_next().await.is_some() {} })
        }
        Mode::Open {
            rate,
            max_in_flight,
        } => {
            let (send, tx, mix) = (send.clone(), tx.clone(), mix.clone());
            let not_started = not_started.clone();
            tokio::spawn(async move {
                let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let in_flight = Arc::new(AtomicUsize::new(0));
                let mut tasks = tokio::task::JoinSet::new();
                let mut draw = rand::random::<u32>();
                for i in 0u64.. {
                    let at = t0 + period.mul_f64(i as f64);
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    while tasks.try_join_next().is_some() {}
                    if in_flight.load(Ordering::SeqCst) >= max_in_flight {
                        if at >= start {
                            not_started.fetch_add(1, Ordering::SeqCst);
                        }
                        continue;
                    }
                    draw = draw.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let op = mix.pick(draw >> 8);
                    let (send, tx, in_flight) = (send.clone(), tx.clone(), in_flight.clone());
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    tasks.spawn(async move {
                        let r = send(op, i as usize).await;
                        let done = Instant::now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        // From the scheduled start: a stall is charged to
                        // every request it held up.
                        let _ = tx.send(Sample {
                            op,
                            latency: done - at,
                            error: r.err(),
                            sent: at,
                            done,
                        });
                    });
                }
                while tasks.join_next().await.is_some() {}
            })
        }
    };
    drop(tx);

    let mut out = Outcome {
        latency: BTreeMap::new(),
        ok: 0,
        errors: BTreeMap::new(),
        not_started: 0,
        outlasted: 0,
        window: plan.duration,
    };
    let total = plan.warmup + plan.duration;
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_second = 0u64;
    loop {
        tokio::select! {
            s = rx.recv() => {
                let Some(s) = s else { break };
                last_second += 1;
                // Answers that arrive inside the window count; an answer
                // after it counts only as having outlasted the window (if
                // sent inside it), with its latency.
                if s.done < start {
                    continue;
                }
                if s.done >= end {
                    if s.sent >= start && s.sent < end {
                        out.outlasted += 1;
                        if s.error.is_some() {
                            continue;
                        }
                        let micros = u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX);
                        out.latency
                            .entry(s.op)
                            .or_insert_with(histogram)
                            .saturating_record(micros.max(1));
                    }
                    continue;
                }
                match s.error {
                    None => {
                        out.ok += 1;
                        let micros = u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX);
                        out.latency
                            .entry(s.op)
                            .or_insert_with(histogram)
                            .saturating_record(micros.max(1));
                    }
                    Some(kind) => *out.errors.entry(kind).or_default() += 1,
                }
            }
            _ = tick.tick() => {
                progress(Progress {
                    elapsed: t0.elapsed().min(total),
                    total,
                    ok: out.ok,
                    errors: out.errors.values().sum(),
                    last_second,
                });
                last_second = 0;
            }
        }
    }
    let _ = driver.await;
    out.not_started = not_started.load(Ordering::SeqCst);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plan(mode: Mode) -> Plan {
        Plan {
            mode,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_measures_only_its_window() {
        let mix = Mix::parse("es256").unwrap();
        // Every request takes 10 ms: 4 workers make 400 answers a second.
        let out = run(
            plan(Mode::Closed { concurrency: 4 }),
            &mix,
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(())
            },
            |_| {},
        )
        .await;
        assert!((3990..=4010).contains(&out.ok), "{}", out.ok);
        let h = &out.latency[&Op::Es256];
        assert_eq!(h.value_at_quantile(0.5), h.value_at_quantile(0.99));
        assert!((9_990..=10_010).contains(&h.value_at_quantile(0.99)));
        assert_eq!(out.error_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_charges_a_stall_to_every_request_it_held_up() {
        let mix = Mix::parse("es256").unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        // 100 requests a second, 1 ms each; but from 5 s to 6 s the server
        // stalls: every request waits until 6 s.
        let stall_from = Instant::now() + Duration::from_secs(5);
        let stall_to = stall_from + Duration::from_secs(1);
        let out = run(
            plan(Mode::Open {
                rate: 100.0,
                max_in_flight: 1000,
            }),
            &mix,
            move |_, _| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    let now = Instant::now();
                    if now >= stall_from && now < stall_to {
                        tokio::time::sleep_until(stall_to).await;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok(())
                }
            },
            |_| {},
        )
        .await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1100,
            "the schedule, not the answers"
        );
        assert!((995..=1001).contains(&out.ok), "{}", out.ok);
        let h = &out.latency[&Op::Es256];
        // 100 of ~1000 requests waited for the stall: p99 near a second,
        // the median untouched.
        assert!(
            h.value_at_quantile(0.5) <= 1_100,
            "{}",
            h.value_at_quantile(0.5)
        );
        assert!(
            h.value_at_quantile(0.99) >= 900_000,
            "{}",
            h.value_at_quantile(0.99)
        );
        assert!(h.max() >= 990_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_held_past_the_window_is_counted_with_its_latency() {
        let mix = Mix::parse("es256").unwrap();
        // From 8 s on, every request hangs 30 s: the window ends at 11 s.
        let hang_from = Instant::now() + Duration::from_secs(8);
        let out = run(
            plan(Mode::Closed { concurrency: 2 }),
            &mix,
            move |_, _| async move {
                if Instant::now() >= hang_from {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(())
            },
            |_| {},
        )
        .await;
        assert_eq!(out.outlasted, 2, "both workers' last requests");
        assert!(out.all().max() >= 30_000_000, "{}", out.all().max());
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_flight_cap_is_counted_and_errors_by_kind() {
        let mix = Mix::parse("es256=1,rs256=1").unwrap();
        let out = run(
            plan(Mode::Open {
                rate: 100.0,
                max_in_flight: 5,
            }),
            &mix,
            |op, _| async move {
                // Each takes 100 ms: 10 would be in flight; 5 are allowed.
                tokio::time::sleep(Duration::from_millis(100)).await;
                match op {
                    Op::Rs256 => Err("Unavailable".to_string()),
                    _ => Ok(()),
                }
            },
            |_| {},
        )
        .await;
        assert!(out.not_started >= 400, "{}", out.not_started);
        let errs = out.errors.get("Unavailable").copied().unwrap_or(0);
        assert!(errs > 100 && out.ok > 100, "{errs} {}", out.ok);
        assert!(
            !out.latency.contains_key(&Op::Rs256),
            "errors have no latency"
        );
    }
}

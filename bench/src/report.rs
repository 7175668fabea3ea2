//! Results: the JSON document a run writes, and the text table it prints.
//!
//! Decides: the fields of a result (what was run against what, counts,
//! throughput, and latency quantiles p50, p90, p99, p99.9 and the maximum,
//! overall and per operation, in microseconds) and their names. Never:
//! how they were measured (`load`).

use crate::load::{Mode, Outcome};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency quantiles of one histogram, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        Quantiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// One run's result, as written by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Result {
    /// The base URL the load went to.
    pub target: String,
    /// The mix, as `es256=50,rs256=10`.
    pub workload: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: the workers.
    pub concurrency: Option<usize>,
    /// Open loop: the scheduled requests per second.
    pub rate: Option<f64>,
    /// Client connections (each its own TCP and TLS session).
    pub connections: usize,
    pub warmup_seconds: f64,
    pub seconds: f64,
    /// Good answers in the measured window.
    pub ok: u64,
    /// Failed requests in the window, and by kind.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Open loop: requests not started because `max_in_flight` were.
    pub not_started: u64,
    /// Requests sent in the window and answered only after it (their
    /// latency is in the quantiles).
    pub outlasted: u64,
    /// Good answers per second of the window.
    pub ops_per_sec: f64,
    /// Latency of the good answers, all operations (µs).
    pub latency_us: Option<Quantiles>,
    /// The same per operation.
    pub per_op: BTreeMap<String, Quantiles>,
}

impl Result {
    pub fn new(
        target: &str,
        workload: &str,
        mode: Mode,
        connections: usize,
        warmup: f64,
        o: &Outcome,
    ) -> Result {
        let (mode_name, concurrency, rate) = match mode {
            Mode::Closed { concurrency } => ("closed", Some(concurrency), None),
            Mode::Open { rate, .. } => ("open", None, Some(rate)),
        };
        let all = o.all();
        let secs = o.window.as_secs_f64();
        Result {
            target: target.to_string(),
            workload: workload.to_string(),
            mode: mode_name,
            concurrency,
            rate,
            connections,
            warmup_seconds: warmup,
            seconds: secs,
            ok: o.ok,
            errors: o.error_count(),
            error_kinds: o.errors.clone(),
            not_started: o.not_started,
            outlasted: o.outlasted,
            ops_per_sec: if secs > 0.0 {
                (o.ok as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
            latency_us: (!all.is_empty()).then(|| Quantiles::of(&all)),
            per_op: o
                .latency
                .iter()
                .map(|(op, h)| (op.name().to_string(), Quantiles::of(h)))
                .collect(),
        }
    }

    /// The text table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let how = match (self.concurrency, self.rate) {
            (Some(c), _) => format!("closed loop, {c} workers"),
            (_, Some(r)) => format!("open loop, {r} requests/s"),
            _ => String::new(),
        };
        t.push_str(&format!(
            "{} → {}: {how}, {} connection(s), {} s measured\n",
            self.workload, self.target, self.connections, self.seconds
        ));
        t.push_str(&format!(
            "ok {}  errors {}  not started {}  outlasted the window {}  throughput {:.1} ops/s\n",
            self.ok, self.errors, self.not_started, self.outlasted, self.ops_per_sec
        ));
        for (k, n) in &self.error_kinds {
            t.push_str(&format!("  error {k}: {n}\n"));
        }
        t.push_str("operation   count      p50 µs   p90 µs   p99 µs  p99.9 µs   max µs\n");
        let row = |name: &str, q: &Quantiles| {
            format!(
                "{name:<10} {:>6} {:>10} {:>8} {:>8} {:>9} {:>8}\n",
                q.count, q.p50, q.p90, q.p99, q.p999, q.max
            )
        };
        for (op, q) in &self.per_op {
            t.push_str(&row(op, q));
        }
        if let Some(q) = &self.latency_us {
            t.push_str(&row("all", q));
        }
        t
    }
}

//! Hedging: when an idempotent request has waited longer than most
//! requests take, the proxy sends a copy to another member and takes the
//! first answer, so a hung member costs a request no more than one hedge
//! delay.
//!
//! Decides: the hedge delay — the chosen percentile of recent latencies,
//! clamped to [floor, cap]; with too few samples it is the cap. Never:
//! whether a request may be hedged (only idempotent crypto operations) or
//! whether the retry budget allows it (`budget`).

use std::sync::Mutex;
use std::time::Duration;

/// Latencies kept for the percentile.
const SAMPLES: usize = 1024;
/// Samples needed before the percentile is trusted.
const MIN_SAMPLES: usize = 32;
/// The percentile is recomputed every this many samples.
const REFRESH_EVERY: usize = 64;

#[derive(Debug)]
pub struct HedgePolicy {
    percentile: f64,
    floor: Duration,
    cap: Duration,
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    buf: Vec<Duration>,
    next: usize,
    since_refresh: usize,
    delay: Duration,
}

impl HedgePolicy {
    /// `percentile` in (0, 100], e.g. 95.0.
    pub fn new(percentile: f64, floor: Duration, cap: Duration) -> HedgePolicy {
        HedgePolicy {
            percentile: percentile.clamp(1.0, 100.0),
            floor,
            cap: cap.max(floor),
            inner: Mutex::new(Ring {
                buf: Vec::with_capacity(SAMPLES),
                next: 0,
                since_refresh: 0,
                delay: cap.max(floor),
            }),
        }
    }

    /// Records one successful request's latency.
    pub fn observe(&self, latency: Duration) {
        let Ok(mut r) = self.inner.lock() else { return };
        if r.buf.len() < SAMPLES {
            r.buf.push(latency);
        } else {
            let i = r.next;
            r.buf[i] = latency;
        }
        r.next = (r.next + 1) % SAMPLES;
        r.since_refresh += 1;
        if r.buf.len() >= MIN_SAMPLES
            && (r.since_refresh >= REFRESH_EVERY || r.buf.len() == MIN_SAMPLES)
        {
            r.since_refresh = 0;
            let mut sorted = r.buf.clone();
            sorted.sort_unstable();
            let rank = ((self.percentile / 100.0) * sorted.len() as f64).ceil() as usize;
            let p = sorted[rank.clamp(1, sorted.len()) - 1];
            r.delay = p.clamp(self.floor, self.cap);
        }
    }

    /// How long to wait before hedging.
    pub fn delay(&self) -> Duration {
        self.inner.lock().map(|r| r.delay).unwrap_or(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_cap_until_enough_samples_then_the_percentile() {
        let h = HedgePolicy::new(95.0, ms(2), ms(500));
        assert_eq!(h.delay(), ms(500));
        for i in 0..100u64 {
            h.observe(ms(i % 20 + 1)); // 1..=20 ms, evenly
        }
        assert_eq!(h.delay(), ms(19));
    }

    #[test]
    fn the_delay_is_clamped() {
        let h = HedgePolicy::new(95.0, ms(10), ms(50));
        for _ in 0..64 {
            h.observe(ms(1));
        }
        assert_eq!(h.delay(), ms(10));
        for _ in 0..1024 {
            h.observe(ms(900));
        }
        assert_eq!(h.delay(), ms(50));
    }
}

//! Balancing: which member serves the next request.
//!
//! Decides: power of two choices over the candidates the caller offers
//! (healthy active members; standby ones only when no active one is), each
//! scored by peak-EWMA latency × (outstanding + 1) ÷ weight, so near members
//! win and far ones (over a VPN) still share; a re-admitted member starts
//! with a pessimistic estimate (slow start). Never: health (`health` decides
//! who is a candidate), retries (`failover`).
//!
//! Unlike tower's `PeakEwma`, an idle member's estimate does not decay
//! toward "free": estimates move only on observations, and active health
//! checks give every member one per interval, so a far member that got no
//! traffic keeps an honest cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How fast the estimate forgets: the EWMA time constant.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// A member's load signals. Shared by the request path (`start`/`finish`)
/// and the chooser; cheap to update.
#[derive(Debug)]
pub struct Load {
    weight: u32,
    decay: Duration,
    outstanding: AtomicU64,
    /// (estimate in ns, time of the last observation).
    ewma: Mutex<(f64, Option<Instant>)>,
}

/// A request in flight on a member; dropping it without `finish` counts it
/// done without a latency sample (a cancelled hedge).
#[must_use]
pub struct InFlight<'a> {
    load: &'a Load,
    started: Instant,
    done: bool,
}

impl InFlight<'_> {
    /// Records the request's latency and ends it.
    pub fn finish(mut self) -> Duration {
        self.done = true;
        let rtt = self.started.elapsed();
        self.load.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.load.observe(rtt);
        rtt
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.load.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Load {
    /// `weight` 1..=100 (0 is treated as 1); `initial` is the estimate a new
    /// member starts with.
    pub fn new(weight: u32, decay: Duration, initial: Duration) -> Load {
        Load {
            weight: weight.max(1),
            decay,
            outstanding: AtomicU64::new(0),
            ewma: Mutex::new((initial.as_nanos() as f64, None)),
        }
    }

    /// Marks a request started.
    pub fn start(&self) -> InFlight<'_> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self,
            started: Instant::now(),
            done: false,
        }
    }

    /// One latency observation (a request or a health check). A sample
    /// above the estimate replaces it at once (peak); one below pulls it
    /// down exponentially with the time since the last sample.
    pub fn observe(&self, rtt: Duration) {
        let now = Instant::now();
        let rtt = rtt.as_nanos() as f64;
        let Ok(mut e) = self.ewma.lock() else { return };
        let (est, last) = *e;
        let next = if rtt > est {
            rtt
        } else {
            let elapsed = last
                .map(|l| now.saturating_duration_since(l))
                .unwrap_or(self.decay);
            let w = (-elapsed.as_secs_f64() / self.decay.as_secs_f64().max(1e-9)).exp();
            est * w + rtt * (1.0 - w)
        };
        *e = (next, Some(now));
    }

    /// Slow start: after re-admission the member is assumed as slow as
    /// `pessimistic` until observations show otherwise.
    pub fn reset_pessimistic(&self, pessimistic: Duration) {
        if let Ok(mut e) = self.ewma.lock() {
            *e = (pessimistic.as_nanos() as f64, Some(Instant::now()));
        }
    }

    /// The current latency estimate.
    pub fn estimate(&self) -> Duration {
        let ns = self.ewma.lock().map(|e| e.0).unwrap_or(0.0);
        Duration::from_nanos(ns.max(0.0) as u64)
    }

    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The score P2C compares: lower is better.
    pub fn cost(&self) -> f64 {
        let est = self.ewma.lock().map(|e| e.0).unwrap_or(0.0).max(1.0);
        est * (self.outstanding() as f64 + 1.0) / f64::from(self.weight)
    }
}

/// Picks one of `candidates` (indices into the caller's member table) by
/// power of two choices: two distinct candidates at random, the cheaper
/// wins. `cost(i)` scores candidate `i`. Returns `None` when there is none.
pub fn choose<R: rand::Rng>(
    candidates: &[usize],
    cost: impl Fn(usize) -> f64,
    rng: &mut R,
) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ia, ib) = (candidates[a], candidates[b]);
            Some(if cost(ib) < cost(ia) { ib } else { ia })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn peaks_are_taken_at_once_and_forgotten_slowly() {
        let l = Load::new(1, DEFAULT_DECAY, ms(1));
        l.observe(ms(100));
        assert_eq!(l.estimate(), ms(100));
        l.observe(ms(1));
        // Right after the peak, one fast sample moves the estimate little.
        assert!(l.estimate() > ms(90), "{:?}", l.estimate());
    }

    #[test]
    fn outstanding_requests_raise_the_cost_and_drop_lowers_it() {
        let l = Load::new(1, DEFAULT_DECAY, ms(10));
        let base = l.cost();
        let a = l.start();
        let b = l.start();
        assert!((l.cost() / base - 3.0).abs() < 1e-9);
        drop(a);
        b.finish();
        assert_eq!(l.outstanding(), 0);
    }

    #[test]
    fn weight_divides_the_cost() {
        let light = Load::new(1, DEFAULT_DECAY, ms(10));
        let heavy = Load::new(4, DEFAULT_DECAY, ms(10));
        assert!((light.cost() / heavy.cost() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn near_members_win_most_but_far_ones_still_share() {
        // Member 0 is near (1 ms), member 1 far (20 ms), member 2 far too.
        let loads = [
            Load::new(1, DEFAULT_DECAY, ms(1)),
            Load::new(1, DEFAULT_DECAY, ms(20)),
            Load::new(1, DEFAULT_DECAY, ms(20)),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut hits = [0usize; 3];
        for _ in 0..3000 {
            let i = choose(&[0, 1, 2], |i| loads[i].cost(), &mut rng).unwrap();
            hits[i] += 1;
        }
        // P2C: the best of 3 wins whenever drawn (2 of 3 pairs); the far
        // ones share the pair that excludes the near one.
        assert!(hits[0] > 1800 && hits[1] > 300 && hits[2] > 300, "{hits:?}");
    }

    #[test]
    fn slow_start_makes_a_readmitted_member_pessimistic() {
        let l = Load::new(1, DEFAULT_DECAY, ms(1));
        l.reset_pessimistic(ms(500));
        assert_eq!(l.estimate(), ms(500));
        let other = Load::new(1, DEFAULT_DECAY, ms(5));
        assert!(l.cost() > other.cost());
    }

    #[test]
    fn no_candidates_no_choice_one_candidate_always() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(choose(&[], |_| 0.0, &mut rng), None);
        assert_eq!(choose(&[5], |_| 0.0, &mut rng), Some(5));
    }
}

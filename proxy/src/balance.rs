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
use std::time::Duration;
// tokio's clock: the same as std's, except under a paused test clock.
use tokio::time::Instant;

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

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_a_readmitted_member_back_over_time() {
        use rand::Rng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let steady = Load::new(1, DEFAULT_DECAY, ms(5));
        let back = Load::new(1, DEFAULT_DECAY, ms(5));
        // Re-admitted: pessimistic (as the checker does on WentUp).
        back.reset_pessimistic(ms(500));
        let loads = [&steady, &back];
        // Every 200 ms both members are observed with the same jittered
        // latency (4-6 ms: health checks and requests), and 20 requests
        // are placed. Share of the re-admitted member per 10 s window:
        let mut shares = Vec::new();
        let mut estimates = Vec::new();
        for _window in 0..9 {
            let mut wins = 0;
            for _step in 0..50 {
                tokio::time::advance(ms(200)).await;
                for l in loads {
                    l.observe(Duration::from_micros(rng.gen_range(4000..6000)));
                }
                wins += (0..20)
                    .filter(|_| choose(&[0, 1], |i| loads[i].cost(), &mut rng) == Some(1))
                    .count();
            }
            shares.push(wins as f64 / 1000.0);
            estimates.push(back.estimate());
        }
        // No traffic at first, then a gradual return, not a jump...
        assert!(shares[0] < 0.02, "{shares:?}");
        assert!(estimates[0] > ms(100), "recovered at once: {estimates:?}");
        assert!(
            estimates[..5].windows(2).all(|w| w[1] < w[0]),
            "{estimates:?}"
        );
        // ...to a fair share within a minute and a half.
        let last = shares[shares.len() - 1];
        assert!(last > 0.25, "share after 90 s: {shares:?}");
        assert!(shares[2] < last, "{shares:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_member_keeps_its_estimate_however_long_it_waits() {
        let far = Load::new(1, DEFAULT_DECAY, ms(5));
        far.observe(ms(40));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(far.estimate(), ms(40), "an idle member decayed to free");
        // The first sample after a long gap counts fully (w ~ 0).
        far.observe(ms(6));
        assert!(far.estimate() < ms(7));
    }

    #[test]
    fn no_candidates_no_choice_one_candidate_always() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(choose(&[], |_| 0.0, &mut rng), None);
        assert_eq!(choose(&[5], |_| 0.0, &mut rng), Some(5));
    }
}

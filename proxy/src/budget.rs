//! The retry budget: how many retries and hedges the proxy may add on top
//! of the application's requests, so that retries cannot multiply load on
//! a struggling group (linkerd's rule: a share of recent requests plus a
//! floor per second).
//!
//! Decides: whether one more retry may be sent now. Over a sliding window
//! of `WINDOW_SLOTS` one-second slots, the budget is
//! `ratio × requests + min_per_sec × window − retries`. A request that was
//! never sent (connect failure, ejected member) is retried without asking
//! the budget: it added no load. Never: which member a retry goes to.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

const WINDOW_SLOTS: usize = 10;
const SLOT: Duration = Duration::from_secs(1);

/// A budget shared by every request of the proxy.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// (slot index since start, requests, retries) per slot, ring.
    slots: [(u64, u64, u64); WINDOW_SLOTS],
}

impl Window {
    fn slot(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        let idx = (now.saturating_duration_since(self.start).as_nanos() / SLOT.as_nanos()) as u64;
        let s = &mut self.slots[(idx % WINDOW_SLOTS as u64) as usize];
        if s.0 != idx {
            *s = (idx, 0, 0);
        }
        s
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let idx = (now.saturating_duration_since(self.start).as_nanos() / SLOT.as_nanos()) as u64;
        self.slots
            .iter()
            .filter(|s| s.0 <= idx && idx - s.0 < WINDOW_SLOTS as u64)
            .fold((0, 0), |(r, t), s| (r + s.1, t + s.2))
    }
}

impl RetryBudget {
    /// `ratio`: retries allowed per request (0.2 = 20 %); `min_per_sec`:
    /// retries always allowed per second, so a quiet proxy can still fail over.
    pub fn new(ratio: f64, min_per_sec: f64) -> RetryBudget {
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_sec: min_per_sec.max(0.0),
            inner: Mutex::new(Window {
                start: Instant::now(),
                slots: [(u64::MAX, 0, 0); WINDOW_SLOTS],
            }),
        }
    }

    /// Counts an application request.
    pub fn deposit(&self) {
        let now = Instant::now();
        if let Ok(mut w) = self.inner.lock() {
            w.slot(now).1 += 1;
        }
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let Ok(mut w) = self.inner.lock() else {
            return false;
        };
        let (requests, retries) = w.totals(now);
        let allowed = self.ratio * requests as f64 + self.min_per_sec * WINDOW_SLOTS as f64;
        if (retries as f64) < allowed.floor() {
            w.slot(now).2 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::new(0.2, 1.0);
        for _ in 0..100 {
            b.deposit();
        }
        // 20 % of 100 + 1/s × 10 s = 30.
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_and_the_budget_comes_back() {
        let b = RetryBudget::new(0.0, 1.0);
        assert_eq!((0..50).filter(|_| b.try_withdraw()).count(), 10);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_withdraw(), "retries of the last 10 s still count");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!((0..50).filter(|_| b.try_withdraw()).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_allows_nothing() {
        let b = RetryBudget::new(0.0, 0.0);
        b.deposit();
        assert!(!b.try_withdraw());
    }
}

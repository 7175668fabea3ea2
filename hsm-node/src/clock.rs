//! Time on a node: wall-clock seconds and milliseconds, and the hybrid
//! logical clock that stamps every replicated change.
//!
//! Decides: what a stamp is. A stamp is a u64 of microseconds since the
//! Unix epoch, taken as max(this machine's clock, the last stamp issued or
//! seen + 1): it follows real time while clocks agree, and never goes below
//! a stamp this node has seen, so a machine whose clock is behind still
//! orders its change after every change it knew of (a rotation becomes
//! current, a recover wins over the delete it undoes). Never: which stamp
//! wins a merge (`replication`, `store`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A hybrid logical clock (see the module comment).
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// Notes a stamp seen in replicated state: later stamps exceed it.
    pub fn observe(&self, stamp: u64) {
        self.last.fetch_max(stamp, Ordering::SeqCst);
    }

    /// A new stamp, above every stamp issued or observed so far.
    pub fn stamp(&self) -> u64 {
        let now = now_micros();
        let mut prev = self.last.load(Ordering::SeqCst);
        loop {
            let next = now.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hlc;

    #[test]
    fn stamps_increase_and_pass_every_stamp_seen() {
        let c = Hlc::default();
        let a = c.stamp();
        assert!(c.stamp() > a);
        // A stamp from a member whose clock is an hour ahead.
        let ahead = a + 3_600_000_000;
        c.observe(ahead);
        let b = c.stamp();
        assert!(b > ahead, "a stamp after seeing {ahead} is {b}");
        // Observing an older stamp changes nothing.
        c.observe(a);
        assert!(c.stamp() > b);
    }
}

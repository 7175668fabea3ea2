//! Health: whether a member may take traffic.
//!
//! Decides, per member, from two signals: active checks (a member turns
//! down after `fall` consecutive failed checks and up after `rise`
//! successes) and passive ejection (after `consecutive_failures` failed
//! requests the member is ejected for `base × 2^(n-1)`, capped at `max`,
//! where n counts ejections since it last stayed healthy; never more than
//! `max_ejected_percent` of the members at once). And, for the group, panic
//! mode: when fewer than `panic_threshold_percent` of the members are
//! healthy, every member is a candidate again (Envoy's rule), since routing
//! to a doubtful member beats failing everything. Never: which candidate
//! serves (`balance`), or the probing schedule (`recovery`).
//!
//! All timing uses `tokio::time::Instant`, so the tests run on the paused
//! clock and are exact.

use std::time::Duration;
use tokio::time::Instant;

/// Active-check thresholds.
#[derive(Debug, Clone, Copy)]
pub struct CheckPolicy {
    /// Consecutive successes to turn a down member up.
    pub rise: u32,
    /// Consecutive failures to turn an up member down.
    pub fall: u32,
}

/// Passive-ejection policy.
#[derive(Debug, Clone, Copy)]
pub struct EjectPolicy {
    /// Consecutive failed requests that eject a member.
    pub consecutive_failures: u32,
    /// The first ejection's length; each next one doubles.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
    /// Most members ejected at once, in percent of the group (at least one
    /// member may always be ejected).
    pub max_ejected_percent: u32,
    /// Below this share of healthy members, panic mode routes to all.
    pub panic_threshold_percent: u32,
}

/// One member's health.
#[derive(Debug, Clone)]
pub struct MemberHealth {
    /// Up by active checks.
    up: bool,
    checks_ok: u32,
    checks_failed: u32,
    requests_failed: u32,
    /// Ejected until then.
    ejected_until: Option<Instant>,
    /// Ejections since the member last proved healthy for a full `max`.
    ejections: u32,
    last_ejected: Option<Instant>,
}

impl Default for MemberHealth {
    /// A new member is down until its first `rise` checks pass: no
    /// "healthy: true // TODO".
    fn default() -> Self {
        MemberHealth {
            up: false,
            checks_ok: 0,
            checks_failed: 0,
            requests_failed: 0,
            ejected_until: None,
            ejections: 0,
            last_ejected: None,
        }
    }
}

/// What an observation changed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentUp,
    WentDown,
    Ejected(Duration),
}

impl MemberHealth {
    /// A member that starts up (e.g. one known good from a previous run).
    pub fn up() -> MemberHealth {
        MemberHealth {
            up: true,
            ..MemberHealth::default()
        }
    }

    /// Up by checks and not ejected now.
    pub fn healthy(&self, now: Instant) -> bool {
        self.up && !self.ejected(now)
    }

    pub fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The number of ejections counted toward the next one's length.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Whether one more successful check would turn this down member up.
    pub fn would_rise(&self, p: CheckPolicy) -> bool {
        !self.up && self.checks_ok + 1 >= p.rise.max(1)
    }

    /// One active check's result.
    pub fn check(&mut self, ok: bool, p: CheckPolicy) -> Transition {
        if ok {
            self.checks_failed = 0;
            self.checks_ok = self.checks_ok.saturating_add(1);
            if !self.up && self.checks_ok >= p.rise.max(1) {
                self.up = true;
                self.requests_failed = 0;
                return Transition::WentUp;
            }
        } else {
            self.checks_ok = 0;
            self.checks_failed = self.checks_failed.saturating_add(1);
            if self.up && self.checks_failed >= p.fall.max(1) {
                self.up = false;
                return Transition::WentDown;
            }
        }
        Transition::None
    }

    /// One request's result. `may_eject` is false when the group's cap on
    /// ejected members is reached (see [`may_eject`]).
    pub fn request(
        &mut self,
        ok: bool,
        p: EjectPolicy,
        now: Instant,
        may_eject: bool,
    ) -> Transition {
        if ok {
            self.requests_failed = 0;
            // A member that stayed healthy for a whole `max` since its last
            // ejection starts counting afresh.
            if self
                .last_ejected
                .is_some_and(|t| now.saturating_duration_since(t) >= p.max * 2)
            {
                self.ejections = 0;
                self.last_ejected = None;
            }
            return Transition::None;
        }
        self.requests_failed = self.requests_failed.saturating_add(1);
        if self.requests_failed < p.consecutive_failures.max(1) || self.ejected(now) || !may_eject {
            return Transition::None;
        }
        self.requests_failed = 0;
        self.ejections = self.ejections.saturating_add(1);
        let factor = 1u32
            .checked_shl(self.ejections.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        let length = p.base.saturating_mul(factor).min(p.max);
        self.ejected_until = Some(now + length);
        self.last_ejected = Some(now);
        Transition::Ejected(length)
    }

    /// Ends an ejection early (a recovery probe succeeded).
    pub fn readmit(&mut self) {
        self.ejected_until = None;
    }
}

/// Whether one more member may be ejected, given how many are ejected now.
pub fn may_eject(ejected_now: usize, members: usize, p: EjectPolicy) -> bool {
    let cap = (members * p.max_ejected_percent as usize / 100).max(1);
    ejected_now < cap
}

/// Panic mode: too few healthy members to trust health at all.
pub fn panic_mode(healthy: usize, members: usize, p: EjectPolicy) -> bool {
    members > 0 && healthy * 100 < members * p.panic_threshold_percent as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKS: CheckPolicy = CheckPolicy { rise: 2, fall: 3 };
    const EJECT: EjectPolicy = EjectPolicy {
        consecutive_failures: 3,
        base: Duration::from_secs(5),
        max: Duration::from_secs(60),
        max_ejected_percent: 50,
        panic_threshold_percent: 50,
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_member_waits_for_rise_checks_and_falls_after_fall() {
        let mut h = MemberHealth::default();
        let now = Instant::now();
        assert!(!h.healthy(now));
        assert_eq!(h.check(true, CHECKS), Transition::None);
        assert_eq!(h.check(true, CHECKS), Transition::WentUp);
        assert!(h.healthy(now));
        assert_eq!(h.check(false, CHECKS), Transition::None);
        assert_eq!(h.check(false, CHECKS), Transition::None);
        // A success in between resets the count.
        assert_eq!(h.check(true, CHECKS), Transition::None);
        for _ in 0..2 {
            assert_eq!(h.check(false, CHECKS), Transition::None);
        }
        assert_eq!(h.check(false, CHECKS), Transition::WentDown);
        assert!(!h.healthy(now));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_doubles_up_to_the_cap_and_expires_on_the_clock() {
        let mut h = MemberHealth::up();
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let now = Instant::now();
            for _ in 0..2 {
                assert_eq!(h.request(false, EJECT, now, true), Transition::None);
            }
            match h.request(false, EJECT, now, true) {
                Transition::Ejected(d) => lengths.push(d.as_secs()),
                t => panic!("{t:?}"),
            }
            assert!(!h.healthy(Instant::now()));
            tokio::time::advance(
                Duration::from_secs(lengths[lengths.len() - 1]) - Duration::from_millis(1),
            )
            .await;
            assert!(
                !h.healthy(Instant::now()),
                "still ejected a millisecond before the end"
            );
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(h.healthy(Instant::now()));
        }
        assert_eq!(lengths, vec![5, 10, 20, 40, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_healthy_spell_resets_the_ejection_count() {
        let mut h = MemberHealth::up();
        for _ in 0..3 {
            h.request(false, EJECT, Instant::now(), true);
        }
        assert_eq!(h.ejections(), 1);
        tokio::time::advance(EJECT.max * 2).await;
        h.request(true, EJECT, Instant::now(), true);
        assert_eq!(h.ejections(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_between_failures_prevent_ejection() {
        let mut h = MemberHealth::up();
        for _ in 0..10 {
            h.request(false, EJECT, Instant::now(), true);
            h.request(false, EJECT, Instant::now(), true);
            assert_eq!(
                h.request(true, EJECT, Instant::now(), true),
                Transition::None
            );
        }
        assert!(h.healthy(Instant::now()));
    }

    #[test]
    fn the_ejection_cap_and_panic_threshold() {
        // 50 % of 4 members: two may be ejected, not three.
        assert!(may_eject(1, 4, EJECT));
        assert!(!may_eject(2, 4, EJECT));
        // A single member may always be ejected (then panic mode routes to it).
        assert!(may_eject(0, 1, EJECT));
        assert!(!panic_mode(2, 4, EJECT));
        assert!(panic_mode(1, 4, EJECT));
        assert!(panic_mode(0, 1, EJECT));
        assert!(!panic_mode(0, 0, EJECT));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_back_an_ejection() {
        let mut h = MemberHealth::up();
        for _ in 0..3 {
            assert_eq!(
                h.request(false, EJECT, Instant::now(), false),
                Transition::None
            );
        }
        assert!(h.healthy(Instant::now()));
    }
}

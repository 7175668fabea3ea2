//! The background work that keeps the member table true: active health
//! checks, recovery probing, catch-up before re-admission, and periodic
//! resync.
//!
//! Decides: when each member is checked (every `interval` while healthy;
//! while down, on a jittered exponential backoff between `recovery_min` and
//! `recovery_max`, forever), that a member about to turn up is first caught
//! up by a resync round — so it never serves a key it lacks — and starts
//! with a pessimistic latency estimate (slow start). Never: what "healthy"
//! means (`health`) or how objects are compared (`resync`).

use crate::group::Group;
use crate::health::Transition;
use crate::member::{Credential, Member};
use crate::resync;
use backon::BackoffBuilder;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Timing of checks and recovery.
#[derive(Debug, Clone, Copy)]
pub struct CheckTiming {
    pub interval: Duration,
    pub timeout: Duration,
    pub recovery_min: Duration,
    pub recovery_max: Duration,
    /// Estimate a re-admitted member starts with.
    pub slow_start: Duration,
}

/// Runs resync rounds, one at a time.
pub struct Resyncer {
    pub group: Arc<Group>,
    pub credential: Credential,
    pub timeout: Duration,
    running: Mutex<()>,
}

impl Resyncer {
    pub fn new(group: Arc<Group>, credential: Credential, timeout: Duration) -> Resyncer {
        Resyncer {
            group,
            credential,
            timeout,
            running: Mutex::new(()),
        }
    }

    /// One round over every reachable member plus `extra` (a member about
    /// to be re-admitted, not yet in the healthy set). Returns whether
    /// `extra` (if any) was reached and compared.
    pub async fn round(&self, extra: Option<&Member>) -> bool {
        let _one = self.running.lock().await;
        let members = self.group.members();
        let mut clients = Vec::new();
        let mut names = Vec::new();
        // What each member may have missed when the round began: a round
        // that includes it clears that much, and no later miss.
        let seen: Vec<u64> = members.iter().map(|m| m.missed()).collect();
        for m in members.iter() {
            let is_extra = extra.is_some_and(|e| e.name() == m.name());
            let healthy = m
                .health
                .lock()
                .map(|h| h.healthy(tokio::time::Instant::now()))
                .unwrap_or(false);
            if !healthy && !is_extra {
                continue;
            }
            match m.typed(&self.credential, self.timeout).await {
                Ok(c) => {
                    clients.push(c);
                    names.push(m.name().to_string());
                }
                Err(e) => m.note_error(&format!("resync: {e}")),
            }
        }
        crate::metrics::resync_run();
        let report = resync::reconcile(&clients).await;
        for i in &report.failed {
            // A refused session (a restarted member) is renewed next round.
            if let Some(m) = members.iter().find(|m| m.name() == names[*i]) {
                m.forget_sessions();
            }
        }
        for (i, n) in names.iter().enumerate() {
            if report.failed.contains(&i) {
                continue;
            }
            if let Some(k) = members.iter().position(|m| m.name() == n) {
                members[k].caught_up(seen[k]);
            }
        }
        for (i, n) in &report.copied {
            crate::metrics::resync_copied(&names[*i], *n);
        }
        for (i, n) in &report.divergent_buckets {
            crate::metrics::divergence(&names[*i], *n);
        }
        if report.total_copied() > 0 {
            tracing::info!(
                copied = report.total_copied(),
                "resync round copied objects"
            );
        }
        match extra {
            None => true,
            Some(e) => names
                .iter()
                .position(|n| n == e.name())
                .is_some_and(|i| !report.failed.contains(&i)),
        }
    }
}

/// The waits between probes of a member that is down: jittered
/// exponential from `recovery_min` to `recovery_max`, forever. Each schedule
/// gets its own jitter seed (backon without `std` would use one fixed seed,
/// and every member would probe in lockstep).
pub fn recovery_schedule(t: &CheckTiming) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_jitter_seed(rand::random())
        .with_min_delay(t.recovery_min)
        .with_max_delay(t.recovery_max)
        .without_max_times()
        .build()
}

/// Checks one member forever (until the task is aborted).
pub async fn watch(
    member: Arc<Member>,
    group: Arc<Group>,
    resyncer: Arc<Resyncer>,
    t: CheckTiming,
) {
    let fresh = || recovery_schedule(&t);
    let mut backoff = fresh();
    loop {
        let started = tokio::time::Instant::now();
        let result = member.check_health(t.timeout).await;
        let rtt = started.elapsed();
        let mut ok = matches!(result, Ok(true));
        if let Err(e) = &result {
            member.note_error(&format!("health check: {e}"));
        }
        if !ok {
            // It may be restarting, without its data: catch it up first.
            member.mark_missed();
        }
        if ok {
            member.load.observe(rtt);
        }
        let would_rise = member
            .health
            .lock()
            .map(|h| !h.is_up() && h.would_rise(group.policy.checks))
            .unwrap_or(false);
        if ok && would_rise {
            // It was down: its sessions may be gone with a restart.
            member.forget_sessions();
            // Catch up before taking traffic: a resync round including it.
            ok = resyncer.round(Some(&member)).await;
            if !ok {
                tracing::warn!(
                    member = member.name(),
                    "catch-up failed; not re-admitted yet"
                );
            }
        } else if ok && member.missed() > 0 {
            // Up, but it may lack changes (a copy that failed, a request
            // or check that failed): no traffic until a round includes it.
            if !resyncer.round(Some(&member)).await {
                tracing::warn!(member = member.name(), "catch-up failed; still held back");
            }
        }
        let (transition, was_healthy) = match member.health.lock() {
            Ok(mut h) => {
                let was = h.healthy(tokio::time::Instant::now());
                (h.check(ok, group.policy.checks), was)
            }
            Err(_) => (Transition::None, false),
        };
        match transition {
            Transition::WentUp => {
                member.load.reset_pessimistic(t.slow_start);
                tracing::info!(member = member.name(), "member up (caught up)");
            }
            Transition::WentDown => {
                tracing::warn!(member = member.name(), "member down after failed checks");
                if was_healthy {
                    // Not already out by an ejection: its traffic moves now.
                    crate::metrics::failover(member.name());
                }
            }
            _ => {}
        }
        let healthy = member.health.lock().map(|h| h.is_up()).unwrap_or(false);
        crate::metrics::member_state(
            member.name(),
            healthy,
            member.load.estimate(),
            member.load.outstanding(),
        );
        let wait = if healthy {
            backoff = fresh();
            t.interval
        } else {
            backoff.next().unwrap_or(t.recovery_max)
        };
        tokio::time::sleep(wait).await;
    }
}

/// Runs a resync round every `interval` forever.
pub async fn periodic(resyncer: Arc<Resyncer>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        resyncer.round(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_probes_back_off_exponentially_with_jitter_and_never_stop() {
        let t = CheckTiming {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            recovery_min: Duration::from_millis(100),
            recovery_max: Duration::from_secs(5),
            slow_start: Duration::from_millis(250),
        };
        let waits: Vec<Duration> = recovery_schedule(&t).take(40).collect();
        assert_eq!(waits.len(), 40, "the schedule ended");
        // Jitter adds up to one more delay on top of the exponential one.
        for w in &waits {
            assert!(*w >= t.recovery_min && *w <= t.recovery_max * 2, "{w:?}");
        }
        // It grows: the last waits are far above the first.
        let early: Duration = waits[..3].iter().sum();
        let late: Duration = waits[37..].iter().sum();
        assert!(late > early * 4, "{early:?} vs {late:?}");
        // Two schedules differ (jitter), so members do not probe in lockstep.
        let other: Vec<Duration> = recovery_schedule(&t).take(40).collect();
        assert_ne!(waits, other);
    }
}

//! The background work that keeps the member table true: active health
//! checks, recovery probing, catch-up before re-admission, and periodic
//! resync.
//!
//! Decides: when each member is checked (every `interval` while healthy;
//! while down, on a jittered exponential backoff between `recovery_min` and
//! `recovery_max`, forever); that a member serves only while its *own* sync
//! state says it holds every change (read at every check: the member counts
//! itself behind when it starts and when a proxy reports a change it could
//! not copy, which this proxy does as soon as the member answers again), so
//! that all proxies agree on it; that a resync round runs under a lease
//! taken on every member it includes (in member order, so two proxies
//! never both hold a round: the one refused steps back), starts after a
//! random delay so that many proxies seeing one member behind do not all
//! race for it, and commits on each member it caught up the epoch it read
//! with the lease; that a returning member starts with a pessimistic
//! latency estimate (slow start). Never: what "healthy" means (`health`)
//! or how objects are compared (`resync`).

use crate::group::Group;
use crate::health::Transition;
use crate::member::{Credential, Member};
use crate::resync;
use backon::BackoffBuilder;
use hsm_api::{Client, ClientError, SyncRequest, SyncState, MEMBER_PROTOCOL};
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

/// Runs resync rounds, one at a time, under the members' lease.
pub struct Resyncer {
    pub group: Arc<Group>,
    pub credential: Credential,
    pub timeout: Duration,
    running: Mutex<()>,
    /// This proxy's name as a lease holder (random per process).
    holder: String,
}

/// The longest wait before a proxy tries to catch a member up: spread so
/// that of many proxies that saw it behind, one takes the lease first and
/// the others find it taken (or the member in sync) and step back.
pub const CATCH_UP_JITTER: Duration = Duration::from_millis(500);

impl Resyncer {
    pub fn new(group: Arc<Group>, credential: Credential, timeout: Duration) -> Resyncer {
        Resyncer {
            group,
            credential,
            timeout,
            running: Mutex::new(()),
            holder: format!("proxy-{:016x}", rand::random::<u64>()),
        }
    }

    /// How long a round's lease lasts: long enough for a round over many
    /// objects; a proxy that dies holding it delays the next round by this
    /// much at most.
    fn lease_ttl(&self) -> Duration {
        (self.timeout * 4).max(Duration::from_secs(30))
    }

    /// Rounds until one gets the lease, for up to `within` (an operator's
    /// `POST /admin/resync`, which must not be a no-op because another
    /// proxy's round was running).
    pub async fn round_waiting(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        loop {
            match self.try_round(None).await {
                Some(_) => return true,
                None if tokio::time::Instant::now() >= until => return false,
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// One round (see [`Resyncer::try_round`]); false when another proxy
    /// holds the lease or `extra` was not caught up.
    pub async fn round(&self, extra: Option<&Member>) -> bool {
        self.try_round(extra).await.unwrap_or(false)
    }

    /// One round over every reachable member plus `extra` (a member to
    /// catch up, not yet serving), under a lease on each: `None` when
    /// another proxy holds one (its round does the work), else whether
    /// `extra` (if any) was reached, compared and committed in sync.
    pub async fn try_round(&self, extra: Option<&Member>) -> Option<bool> {
        let _one = self.running.lock().await;
        let members = self.group.members();
        let mut clients = Vec::new();
        let mut names = Vec::new();
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
            let expired = m.sync_state().is_some_and(|s| s.expired);
            if expired {
                // It could bring purged keys back: never a part of a round.
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
        // The lease on every member, in member order; the `behind` each
        // had when leased is what the round may commit.
        let ttl_ms = self.lease_ttl().as_millis() as u64;
        let mut leased: Vec<(Client, String, u64)> = Vec::new();
        for (c, n) in clients.iter().zip(&names) {
            let req = SyncRequest::Lease {
                holder: self.holder.clone(),
                ttl_ms,
            };
            match c.sync(&req).await {
                Ok(st) if st.lease.as_ref().is_some_and(|l| l.holder == self.holder) => {
                    leased.push((c.clone(), n.clone(), st.behind));
                }
                Ok(_) => {
                    self.release(&leased).await;
                    tracing::debug!(member = %n, "resync: another proxy holds the lease");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(member = %n, error = %e, "resync: no lease");
                }
            }
        }
        let round: Vec<Client> = leased.iter().map(|(c, _, _)| c.clone()).collect();
        let names: Vec<String> = leased.iter().map(|(_, n, _)| n.clone()).collect();
        crate::metrics::resync_run();
        let report = resync::reconcile(&round).await;
        for i in &report.failed {
            // A refused session (a restarted member) is renewed next round.
            if let Some(m) = members.iter().find(|m| m.name() == names[*i]) {
                m.forget_sessions();
            }
        }
        for (i, (c, n, epoch)) in leased.iter().enumerate() {
            if report.failed.contains(&i) {
                continue;
            }
            let req = SyncRequest::Commit {
                holder: self.holder.clone(),
                epoch: *epoch,
            };
            match c.sync(&req).await {
                Ok(st) => {
                    if let Some(m) = members.iter().find(|m| m.name() == n) {
                        m.set_sync(Some(st));
                    }
                }
                Err(e) => {
                    tracing::warn!(member = %n, error = %e, "resync: commit of the round refused")
                }
            }
        }
        self.release(&leased).await;
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
        Some(match extra {
            None => true,
            Some(e) => names
                .iter()
                .position(|n| n == e.name())
                .is_some_and(|i| !report.failed.contains(&i)),
        })
    }

    async fn release(&self, leased: &[(Client, String, u64)]) {
        for (c, n, _) in leased {
            let req = SyncRequest::Release {
                holder: self.holder.clone(),
            };
            if let Err(e) = c.sync(&req).await {
                tracing::debug!(member = %n, error = %e, "resync: lease not released (it expires)");
            }
        }
    }

    /// Reads the member's sync state, first telling it of the changes this
    /// proxy could not copy to it; `Err` with the reason when the member
    /// cannot take part (an older member protocol, no session).
    async fn refresh_sync(&self, member: &Member) -> Result<SyncState, String> {
        let c = member
            .typed(&self.credential, self.timeout)
            .await
            .map_err(|e| format!("sync state: {e}"))?;
        let missed = member.missed();
        let st = if missed > 0 {
            c.sync(&SyncRequest::Behind).await
        } else {
            c.sync_state().await
        };
        let st = match st {
            Ok(st) => st,
            Err(ClientError::Api { status: 404, .. }) | Err(ClientError::Api { status: 405, .. }) => {
                return Err(format!(
                    "the member speaks member protocol 1 (hsm-node from before per-version merge); \
                     this proxy needs {MEMBER_PROTOCOL}: upgrade the member (its store is migrated in place)"
                ))
            }
            Err(e) => return Err(format!("sync state: {e}")),
        };
        if missed > 0 {
            member.caught_up(missed);
        }
        if st.protocol != MEMBER_PROTOCOL {
            return Err(format!(
                "the member speaks member protocol {}, this proxy {MEMBER_PROTOCOL}: run one version in the group",
                st.protocol
            ));
        }
        Ok(st)
    }

    /// A check found the member up, its `/health` carrying `generation`:
    /// learn its sync state (unless it has not moved since the last read:
    /// a group in sync costs no request beyond the check) and, when it is
    /// behind and no other proxy's round is on it, catch it up. Returns
    /// whether the member can take part in the group at all.
    async fn catch_up(&self, member: &Member, generation: Option<u64>) -> bool {
        if member.sync_unmoved(generation) {
            return true;
        }
        let st = match self.refresh_sync(member).await {
            Ok(st) => st,
            Err(e) => {
                member.note_error(&e);
                member.set_sync_seen(None, None);
                return false;
            }
        };
        let behind = !st.in_sync();
        member.set_sync_seen(Some(st.clone()), generation);
        if st.expired {
            member.note_error(
                "away longer than the tombstone retention: refused until rebuilt (see the member's log)",
            );
            return true;
        }
        if !behind {
            return true;
        }
        let taken = |s: &SyncState| s.lease.as_ref().is_some_and(|l| l.holder != self.holder);
        if taken(&st) {
            return true;
        }
        let wait = CATCH_UP_JITTER.mul_f64(rand::random::<f64>());
        tokio::time::sleep(wait).await;
        // Someone else may have begun (or finished) meanwhile.
        if let Ok(st) = self.refresh_sync(member).await {
            let done = st.in_sync() || taken(&st);
            member.set_sync(Some(st));
            if done {
                return true;
            }
        }
        if self.round(Some(member)).await {
            tracing::info!(
                member = member.name(),
                "member caught up by this proxy's round"
            );
        }
        true
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
        let generation = result.as_ref().ok().and_then(|(_, g)| *g);
        let mut ok = matches!(result, Ok((true, _)));
        if let Err(e) = &result {
            member.note_error(&format!("health check: {e}"));
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
        }
        if ok {
            // Serves only while its own sync state says it holds every
            // change; catches it up when it does not (`Resyncer::catch_up`).
            ok = resyncer.catch_up(&member, generation).await;
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

/// Runs a resync round about every `interval` forever (each wait drawn
/// from 0.75 to 1.25 × `interval`, so the proxies of a group spread out;
/// a proxy that finds the lease taken skips its turn).
pub async fn periodic(resyncer: Arc<Resyncer>, interval: Duration) {
    loop {
        tokio::time::sleep(interval.mul_f64(0.75 + rand::random::<f64>() / 2.0)).await;
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

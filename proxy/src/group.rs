//! The group: the member table and who may serve a request now.
//!
//! Decides: the candidates for a request — healthy active members; standby
//! members only when no active one is healthy; every member in panic mode
//! (too few healthy to trust health) — and picks one by `balance`. The
//! table is one snapshot swapped whole (reload adds and removes members
//! without touching requests in flight). Never: retries (`forward`).

use crate::balance;
use crate::health::{self, CheckPolicy, EjectPolicy};
use crate::member::{Member, MemberRole};
use std::sync::{Arc, RwLock};
use tokio::time::Instant;

/// The policies that decide health.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    pub checks: CheckPolicy,
    pub eject: EjectPolicy,
}

pub struct Group {
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    pub policy: HealthPolicy,
}

impl Group {
    pub fn new(members: Vec<Member>, policy: HealthPolicy) -> Group {
        Group {
            members: RwLock::new(Arc::new(members.into_iter().map(Arc::new).collect())),
            policy,
        }
    }

    /// The current member table.
    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Replaces the member table (reload).
    pub fn replace(&self, members: Vec<Arc<Member>>) {
        if let Ok(mut m) = self.members.write() {
            *m = Arc::new(members);
        }
    }

    /// Members that may serve now, excluding those already tried.
    pub fn candidates(&self, members: &[Arc<Member>], exclude: &[String]) -> Vec<usize> {
        let now = Instant::now();
        let healthy = |m: &Member| m.serving(now);
        let open: Vec<usize> = (0..members.len())
            .filter(|i| !exclude.iter().any(|e| e == members[*i].name()))
            .collect();
        let by_role = |role: MemberRole| -> Vec<usize> {
            open.iter()
                .copied()
                .filter(|i| members[*i].spec.role == role && healthy(&members[*i]))
                .collect()
        };
        let active = by_role(MemberRole::Active);
        if !active.is_empty() {
            return active;
        }
        let standby = by_role(MemberRole::Standby);
        if !standby.is_empty() {
            return standby;
        }
        let healthy_all = members.iter().filter(|m| healthy(m)).count();
        if health::panic_mode(healthy_all, members.len(), self.policy.eject) {
            // Panic mode: health cannot be trusted; try anyone not yet
            // tried, except drained members (an operator's decision).
            return open
                .into_iter()
                .filter(|i| {
                    !members[*i]
                        .drained
                        .load(std::sync::atomic::Ordering::SeqCst)
                })
                .collect();
        }
        Vec::new()
    }

    /// Picks a member for a request, excluding those already tried.
    pub fn pick(&self, exclude: &[String]) -> Option<Arc<Member>> {
        let members = self.members();
        let c = self.candidates(&members, exclude);
        let mut rng = rand::thread_rng();
        balance::choose(&c, |i| members[i].load.cost(), &mut rng).map(|i| members[i].clone())
    }

    /// Members currently ejected, for the cap on ejections.
    pub fn ejected_count(&self) -> usize {
        let now = Instant::now();
        self.members()
            .iter()
            .filter(|m| m.health.lock().map(|h| h.ejected(now)).unwrap_or(false))
            .count()
    }

    /// Records a request's outcome on a member's passive health.
    pub fn record(&self, m: &Member, ok: bool) {
        let may = health::may_eject(
            self.ejected_count(),
            self.members().len(),
            self.policy.eject,
        );
        let now = Instant::now();
        let (t, was_healthy) = match m.health.lock() {
            Ok(mut h) => {
                let was = h.healthy(now);
                (h.request(ok, self.policy.eject, now, may), was)
            }
            Err(_) => return,
        };
        if let health::Transition::Ejected(d) = t {
            // Its requests failed: it may have restarted without its data,
            // or missed copies. When the ejection ends it serves again only
            // once a resync round has included it.
            m.mark_missed();
            if was_healthy {
                crate::metrics::failover(m.name());
            }
            tracing::warn!(
                member = m.name(),
                seconds = d.as_secs_f64(),
                "member ejected after consecutive failures"
            );
            crate::metrics::ejection(m.name());
        }
    }
}

//! The member's own sync state: whether this partition holds every change
//! its group acknowledged, as far as anyone told it.
//!
//! Decides: when the member counts itself behind (at every start of the
//! node, and when a proxy reports a change it could not copy here: the
//! `behind` epoch rises), when it is in sync again (a resync round that read
//! `behind` under its lease and compared this member with the group
//! commits that epoch as `synced`), the round's lease (one holder at a time,
//! for a bounded time, kept in memory: a restarted member is behind anyway),
//! and when the member is *expired*: behind and away longer than the
//! tombstone retention, with keys — it could bring purged keys back, so it
//! refuses the member protocol until rebuilt. Every proxy reads this
//! instead of keeping its own marks, so a returning member is caught up
//! once for all of them. Never: how members are compared (the proxy's
//! resync).

use super::edge::{self, ApiError, ApiResult, Resp};
use super::{Ctx, Node};
use crate::store::SyncRecord;
use hsm_api::{ErrorCode, Lease, SyncRequest, SyncState, MEMBER_PROTOCOL};
use http::StatusCode;
use std::time::{Duration, Instant};

/// The longest lease a round may take.
const MAX_LEASE: Duration = Duration::from_secs(600);

/// Who holds a partition's resync lease, until when.
pub(super) type Leases = std::sync::Mutex<std::collections::HashMap<String, (String, Instant)>>;

/// How stale a member in sync lets `last_synced` get: a round that
/// commits an epoch already committed writes the time only when it is
/// older than this (so rounds on a member in sync cost no fsync). Far
/// below any tombstone retention (days), which is what it is measured
/// against.
const LAST_SYNCED_GRAIN_SECS: i64 = 60;

/// Whether a change of the sync record changes what a proxy would
/// conclude (in sync or not): the `behind` and `synced` epochs.
fn moved(before: &SyncRecord, after: &SyncRecord) -> bool {
    (before.behind, before.synced) != (after.behind, after.synced)
}

impl Node {
    /// Counts every partition behind: called once when the node starts
    /// serving (it may have missed changes while it was away).
    pub fn mark_started(&self) {
        let names: Vec<String> = match self.partitions.read() {
            Ok(p) => p.keys().cloned().collect(),
            Err(_) => return,
        };
        for p in names {
            if let Err(e) = self.store.update_sync(&p, |r| r.behind += 1) {
                tracing::error!(partition = %p, error = %e, "recording the start in the sync state");
            }
        }
        self.sync_moved();
    }

    /// Some partition's `behind` or `synced` epoch changed: the number in
    /// every `/health` answer changes with it (see [`Node::sync_generation`]).
    fn sync_moved(&self) {
        self.sync_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A number that changes whenever the `behind` or `synced` epoch of
    /// any partition here changes, and differs between two runs of the
    /// node (it starts at random): sent in `/health`, so that a proxy
    /// reads `/sync` only when it changed, not at every check.
    pub fn sync_generation(&self) -> u64 {
        self.sync_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn is_expired(&self, p: &str, rec: &SyncRecord) -> bool {
        let retention = i64::from(self.settings.tombstone_retention_days) * 86_400;
        rec.behind > rec.synced
            && crate::clock::now_secs() - rec.last_synced > retention
            && self
                .store
                .inventory_summary(p)
                .is_ok_and(|(_, count)| count > 0)
    }

    fn sync_view(&self, p: &str, rec: &SyncRecord) -> SyncState {
        let lease = self.leases.lock().ok().and_then(|l| {
            let (holder, until) = l.get(p)?;
            let left = until.checked_duration_since(Instant::now())?;
            Some(Lease {
                holder: holder.clone(),
                expires_in_ms: left.as_millis() as u64,
            })
        });
        SyncState {
            protocol: MEMBER_PROTOCOL,
            behind: rec.behind,
            synced: rec.synced,
            last_synced: rec.last_synced,
            expired: self.is_expired(p, rec),
            lease,
        }
    }

    /// Drops pending versions past their deadline (the sweeper).
    pub fn drop_expired_pending(&self) -> usize {
        if self.zeroized().is_some() {
            return 0;
        }
        match self.store.drop_expired(crate::clock::now_millis()) {
            Ok(n) => {
                if n > 0 {
                    crate::metrics::pending_expired(n as u64);
                    tracing::warn!(
                        versions = n,
                        "pending versions dropped: not committed by their deadline"
                    );
                }
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "dropping expired pending versions");
                0
            }
        }
    }
}

impl Ctx<'_> {
    /// Refuses the member protocol on an expired partition.
    pub(super) fn check_not_expired(&self) -> ApiResult<()> {
        let rec = self.node.store.sync_record(&self.part.name)?;
        if self.node.is_expired(&self.part.name, &rec) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "partition `{}` was away longer than the tombstone retention ({} days) and may hold keys the group purged: \
                     it takes no part in replication until rebuilt (initialise its data directory again with the same cloning domain; resync then copies the group's keys to it)",
                    self.part.name, self.node.settings.tombstone_retention_days
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn sync_state(&self) -> ApiResult<Resp> {
        let rec = self.node.store.sync_record(&self.part.name)?;
        Ok(edge::json(
            StatusCode::OK,
            &self.node.sync_view(&self.part.name, &rec),
        ))
    }

    pub(super) async fn sync(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: SyncRequest = edge::parse_json(body)?;
        let p = self.part.name.clone();
        let holds = |holder: &str| {
            self.node.leases.lock().ok().is_some_and(|l| {
                l.get(&p)
                    .is_some_and(|(h, until)| h == holder && *until > Instant::now())
            })
        };
        let bad = |m: &str| Err(ApiError::new(ErrorCode::BadParameter, m));
        match &req {
            SyncRequest::Lease { holder, ttl_ms } => {
                if holder.is_empty() || holder.len() > 128 {
                    return bad("holder must be 1 to 128 characters");
                }
                let ttl = Duration::from_millis(*ttl_ms).min(MAX_LEASE);
                if let Ok(mut l) = self.node.leases.lock() {
                    let now = Instant::now();
                    let free = l
                        .get(&p)
                        .is_none_or(|(h, until)| h == holder || *until <= now);
                    if free {
                        l.insert(p.clone(), (holder.clone(), now + ttl));
                    }
                }
            }
            SyncRequest::Release { holder } => {
                if let Ok(mut l) = self.node.leases.lock() {
                    if l.get(&p).is_some_and(|(h, _)| h == holder) {
                        l.remove(&p);
                    }
                }
            }
            SyncRequest::Commit { holder, epoch } => {
                if !holds(holder) {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        "only the holder of the resync lease may commit a round",
                    ));
                }
                let epoch = *epoch;
                let store = self.node.store.clone();
                let pp = p.clone();
                let now = crate::clock::now_secs();
                let (ok, before, after) = self
                    .write(move |_| {
                        store.update_sync(&pp, |r| {
                            if epoch > r.behind {
                                return false;
                            }
                            if epoch > r.synced || now - r.last_synced >= LAST_SYNCED_GRAIN_SECS {
                                r.synced = r.synced.max(epoch);
                                r.last_synced = now;
                            }
                            true
                        })
                    })
                    .await?;
                if !ok {
                    return bad("a round cannot commit an epoch the member has not reached");
                }
                if moved(&before, &after) {
                    self.node.sync_moved();
                    tracing::info!(partition = %p, epoch, holder = %holder, "resync round committed: in sync");
                } else {
                    tracing::debug!(partition = %p, epoch, holder = %holder, "resync round committed");
                }
            }
            SyncRequest::Behind => {
                let store = self.node.store.clone();
                let pp = p.clone();
                self.write(move |_| store.update_sync(&pp, |r| r.behind += 1))
                    .await?;
                self.node.sync_moved();
                tracing::warn!(partition = %p, "a proxy reports a change it could not copy here: behind until the next round");
            }
        }
        self.sync_state()
    }
}

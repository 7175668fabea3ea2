//! Resync: anti-entropy between members over the member protocol.
//!
//! Decides: how members are compared (summaries in one call each; when they
//! differ, the bucket hashes; in a differing bucket, its 256 slice hashes;
//! then only the differing slices' entries — or the whole bucket's, when
//! many slices differ or a member cannot answer slices) and
//! what is copied (for every object, the newest state — highest generation,
//! then digest — exported from a member that has it and imported into every
//! member that lacks it; the members' own import rule keeps an older blob
//! out, so copying is safe in any order; a member that keeps its own state
//! because the rule ranks it higher, as with the copy of a retried key
//! creation's last attempt, becomes the source in turn). Never: when to run (the checker
//! runs it before re-admitting a member; a timer runs it periodically; an
//! admin call runs it now).

use hsm_api::{Client, ClientError, CloneOutcome};
use std::collections::{BTreeMap, BTreeSet};

/// What one round did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Objects copied, per target member index.
    pub copied: BTreeMap<usize, u64>,
    /// Buckets that differed, per member index (against the others).
    pub divergent_buckets: BTreeMap<usize, usize>,
    /// Members that could not be compared (errors), by index.
    pub failed: BTreeSet<usize>,
}

impl Report {
    pub fn total_copied(&self) -> u64 {
        self.copied.values().sum()
    }
}

/// Brings every reachable member of `members` to the newest state of every
/// object any of them holds. Errors on one member mark it failed and do not
/// stop the others.
pub async fn reconcile(members: &[Client]) -> Report {
    let mut report = Report::default();
    let mut summaries = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        match m.inventory().await {
            Ok(s) => {
                summaries.insert(i, s.summary);
            }
            Err(e) => {
                tracing::warn!(member = i, error = %e, "resync: inventory unavailable");
                report.failed.insert(i);
            }
        }
    }
    let distinct: BTreeSet<&String> = summaries.values().collect();
    if distinct.len() <= 1 {
        return report;
    }
    let live: Vec<usize> = summaries.keys().copied().collect();
    // member -> bucket -> (hash, objects)
    let mut buckets: BTreeMap<usize, BTreeMap<u8, (String, u64)>> = BTreeMap::new();
    for &i in &live {
        match members[i].inventory_buckets().await {
            Ok(b) => {
                buckets.insert(
                    i,
                    b.buckets
                        .into_iter()
                        .map(|b| (b.bucket, (b.hash, b.count)))
                        .collect(),
                );
            }
            Err(e) => {
                tracing::warn!(member = i, error = %e, "resync: buckets unavailable");
                report.failed.insert(i);
            }
        }
    }
    let live: Vec<usize> = buckets.keys().copied().collect();
    let all: BTreeSet<u8> = buckets.values().flat_map(|b| b.keys().copied()).collect();
    let differing: Vec<u8> = all
        .into_iter()
        .filter(|b| {
            live.iter()
                .map(|i| buckets[i].get(b))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .collect();
    for &i in &live {
        let n = differing
            .iter()
            .filter(|b| {
                let mine = buckets[&i].get(b);
                live.iter().any(|j| buckets[j].get(b) != mine)
            })
            .count();
        report.divergent_buckets.insert(i, n);
    }
    for bucket in differing {
        let size = live
            .iter()
            .filter_map(|i| buckets[i].get(&bucket).map(|b| b.1))
            .max()
            .unwrap_or(0);
        if let Err(e) = reconcile_bucket(members, &live, bucket, size, &mut report).await {
            // Which member lacks what is unknown: none of them counts as
            // caught up this round (a member coming back is not
            // re-admitted on a round that did not finish).
            tracing::warn!(bucket, error = %e, "resync: bucket not reconciled this round");
            report.failed.extend(live.iter().copied());
        }
    }
    report
}

async fn reconcile_bucket(
    members: &[Client],
    live: &[usize],
    bucket: u8,
    size: u64,
    report: &mut Report,
) -> Result<(), ClientError> {
    // name -> per member (generation, digest)
    let mut entries: BTreeMap<String, BTreeMap<usize, (u64, String)>> = BTreeMap::new();
    let mut add = |i: usize, items: Vec<hsm_api::InventoryItem>| {
        for e in items {
            entries
                .entry(e.name)
                .or_default()
                .insert(i, (e.generation, e.digest));
        }
    };
    let slices = if size >= SLICED_FROM {
        differing_slices(members, live, bucket).await
    } else {
        None
    };
    match slices {
        Some(slices) => {
            for &s in &slices {
                for &i in live {
                    add(i, members[i].inventory_slice(bucket, s).await?);
                }
            }
        }
        None => {
            for &i in live {
                add(i, members[i].inventory_bucket(bucket).await?);
            }
        }
    }
    for (name, states) in entries {
        let Some((&winner, best)) = states.iter().max_by(|a, b| a.1.cmp(b.1)) else {
            continue;
        };
        let behind: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| states.get(i) != Some(best))
            .collect();
        if behind.is_empty() {
            continue;
        }
        let mut source = winner;
        let mut targets = behind;
        // Each pass either converges or hands over to a member whose state
        // the import rule ranks higher; there are at most `live` of those.
        for _ in 0..live.len() {
            let blob = members[source].clone_export(&name).await?;
            let mut kept = None;
            for &i in &targets {
                match members[i].clone_import(&blob).await {
                    Ok(r) if r.outcome == CloneOutcome::KeptNewer && r.digest != blob.digest => {
                        kept.get_or_insert(i);
                    }
                    Ok(r) if r.outcome == CloneOutcome::Applied => {
                        *report.copied.entry(i).or_default() += 1
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(member = i, key = %name, error = %e, "resync: copy refused");
                        report.failed.insert(i);
                    }
                }
            }
            let Some(k) = kept else { break };
            targets = live.iter().copied().filter(|&i| i != k).collect();
            source = k;
        }
    }
    Ok(())
}

/// Buckets of at least this many objects (on some member) are compared
/// slice by slice; a smaller bucket's listing costs less than its slice
/// hashes (about 170 bytes an entry against 4 KiB of hashes).
pub const SLICED_FROM: u64 = 64;

/// Past this many differing slices, one listing of the whole bucket costs
/// less than a request per slice.
pub const MAX_SLICE_REQUESTS: usize = 32;

/// The slices of `bucket` whose hashes differ between the live members, or
/// `None` when the whole bucket is to be listed instead: too many slices
/// differ, or a member did not answer slices (a node without them).
async fn differing_slices(members: &[Client], live: &[usize], bucket: u8) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    for &i in live {
        match members[i].inventory_slices(bucket).await {
            Ok(s) if s.slices.len() == 16 * hsm_api::SLICES => all.push(s),
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(member = i, bucket, error = %e, "resync: no slices; listing the bucket");
                return None;
            }
        }
    }
    let differing: Vec<u8> = (0..=255u8)
        .filter(|&s| {
            all.iter()
                .map(|x| x.slice(s))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .collect();
    // None differing while the bucket hashes differ: the bucket changed
    // between the two reads, or two slices' short hashes collided; the
    // listing settles it either way.
    (!differing.is_empty() && differing.len() <= MAX_SLICE_REQUESTS).then_some(differing)
}

/// The least time copies get to end after the quorum held the change.
pub const COPY_GRACE: std::time::Duration = std::time::Duration::from_millis(10);

/// Who holds a copied object when [`spread`] returned.
#[derive(Debug, Default)]
pub struct Spread {
    /// Indices that hold exactly the exported state (the source first).
    pub holders: Vec<usize>,
    /// Indices whose copy was still running; each ends in the background
    /// and is reported to the `later` callback of [`spread`].
    pub pending: Vec<usize>,
}

/// Copies one object from the member holding its newest state to every
/// other member (replication after a change, or repair of a member that
/// lacked it). Returns when `need` members (the source included) hold
/// exactly the exported state and the other copies have had as long again
/// (at least [`COPY_GRACE`]), or when every copy has ended: a slow or hung
/// member delays nobody much once enough members have it. Copies still
/// running then finish in the background; `later(index, holds)` is called
/// as each ends.
pub async fn spread(
    members: &[Client],
    source: usize,
    name: &str,
    need: usize,
    later: impl Fn(usize, bool) + Send + 'static,
) -> Result<Spread, ClientError> {
    let blob = members[source].clone_export(name).await?;
    let mut holders = vec![source];
    let mut ended = vec![source];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        if i == source {
            continue;
        }
        let (m, blob) = (m.clone(), blob.clone());
        tasks.spawn(async move { (i, m.clone_import(&blob).await) });
    }
    let digest = blob.digest.clone();
    let started = tokio::time::Instant::now();
    let note = |joined, ended: &mut Vec<usize>, holders: &mut Vec<usize>| {
        if let Some((i, holds)) = copied(joined, &digest, name) {
            ended.push(i);
            if holds {
                holders.push(i);
            }
        }
    };
    while holders.len() < need {
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        note(joined, &mut ended, &mut holders);
    }
    // The others get as long again as the quorum took (at least
    // `COPY_GRACE`): on a healthy group every copy ends in that time, so
    // the answer finds the change everywhere; only a slow or hung member
    // is left to the background.
    let grace = started.elapsed().max(COPY_GRACE);
    let _ = tokio::time::timeout(grace, async {
        while let Some(joined) = tasks.join_next().await {
            note(joined, &mut ended, &mut holders);
        }
    })
    .await;
    let pending: Vec<usize> = (0..members.len()).filter(|i| !ended.contains(i)).collect();
    if !tasks.is_empty() {
        let name = name.to_string();
        tokio::spawn(async move {
            while let Some(joined) = tasks.join_next().await {
                if let Some((i, holds)) = copied(joined, &digest, &name) {
                    later(i, holds);
                }
            }
        });
    }
    Ok(Spread { holders, pending })
}

type Copied =
    Result<(usize, Result<hsm_api::CloneImportResult, ClientError>), tokio::task::JoinError>;

/// One copy's end: (index, whether it now holds exactly `digest`).
fn copied(joined: Copied, digest: &str, name: &str) -> Option<(usize, bool)> {
    match joined {
        // Durable there only if it now holds exactly this state: a member
        // that kept another copy (a newer change, or the copy of another
        // attempt of a creation) does not count.
        Ok((i, Ok(res))) if res.digest == digest => Some((i, true)),
        Ok((i, Ok(res))) => {
            tracing::warn!(member = i, key = name, outcome = ?res.outcome, "replica kept another state");
            Some((i, false))
        }
        Ok((i, Err(e))) => {
            tracing::warn!(member = i, key = name, error = %e, "replication to member failed");
            Some((i, false))
        }
        Err(e) => {
            tracing::warn!(error = %e, "replication task failed");
            None
        }
    }
}

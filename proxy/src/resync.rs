//! Resync: anti-entropy between members over the member protocol.
//!
//! Decides: how members are compared (summaries in one call each; when they
//! differ, the bucket hashes; in a differing bucket, its 256 slice hashes;
//! then only the differing slices' entries — or the whole bucket's, when
//! many slices differ or a member cannot answer slices) and
//! what is copied (for every object whose members differ, the union of
//! their states: the members merge per version, so copying is safe in any
//! order and nothing any member holds is lost — see `merge_object`;
//! pending versions are not in the inventory and never copied here).
//! Never: when to run (the checker
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
        merge_object(members, live, &name, &states, report).await?;
    }
    Ok(())
}

/// Brings every live member to the union of the states of one object
/// (the members' merge is a join: commutative, idempotent, any order).
/// When one state is held and the others only lack the object — the usual
/// catch-up — that state is exported once and imported where it lacks.
/// When states differ, one member (a holder of the most common state)
/// first takes in every other state, then its union goes to the rest. A
/// member whose import changes nothing writes nothing.
async fn merge_object(
    members: &[Client],
    live: &[usize],
    name: &str,
    states: &BTreeMap<usize, (u64, String)>,
    report: &mut Report,
) -> Result<(), ClientError> {
    // digest -> holders
    let mut by_state: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (&i, (_, d)) in states {
        by_state.entry(d.as_str()).or_default().push(i);
    }
    let Some((_, hub_holders)) = by_state.iter().max_by_key(|(d, h)| (h.len(), *d)) else {
        return Ok(());
    };
    let hub = hub_holders[0];
    let mut hub_changed = false;
    for holders in by_state.values() {
        if holders.contains(&hub) {
            continue;
        }
        let blob = members[holders[0]].clone_export(name).await?;
        match members[hub].clone_import(&blob).await {
            Ok(r) => {
                if r.outcome == CloneOutcome::Applied {
                    hub_changed = true;
                    *report.copied.entry(hub).or_default() += 1;
                }
            }
            Err(e) => {
                tracing::warn!(member = hub, key = %name, error = %e, "resync: copy refused");
                report.failed.insert(hub);
            }
        }
    }
    let hub_digest = &states[&hub].1;
    let targets: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&i| i != hub && (hub_changed || states.get(&i).map(|s| &s.1) != Some(hub_digest)))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let blob = members[hub].clone_export(name).await?;
    for i in targets {
        match members[i].clone_import(&blob).await {
            Ok(r) if r.outcome == CloneOutcome::Applied => {
                *report.copied.entry(i).or_default() += 1
            }
            Ok(r) if !r.holds => {
                tracing::warn!(member = i, key = %name, "resync: member keeps another copy of a version");
                report.failed.insert(i);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(member = i, key = %name, error = %e, "resync: copy refused");
                report.failed.insert(i);
            }
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
    /// The version the blob was exported for (a new version to commit).
    pub version: Option<hsm_api::VersionRef>,
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
    version: Option<&str>,
    need: usize,
    later: impl Fn(usize, bool) + Send + 'static,
) -> Result<Spread, ClientError> {
    let blob = members[source].clone_export_with(name, version).await?;
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
    Ok(Spread {
        holders,
        pending,
        version: blob.version.clone(),
    })
}

type Copied =
    Result<(usize, Result<hsm_api::CloneImportResult, ClientError>), tokio::task::JoinError>;

/// One copy's end: (index, whether it now holds all the blob carried).
fn copied(joined: Copied, _digest: &str, name: &str) -> Option<(usize, bool)> {
    match joined {
        // Durable there only if it now holds all of the blob: a member that
        // kept another copy of one of its versions (the copy of another
        // attempt of a creation) does not count.
        Ok((i, Ok(res))) if res.holds => Some((i, true)),
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

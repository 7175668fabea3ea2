//! Many sidecars racing on the same keys (issue 16): five `hsm-proxy`
//! sidecars in front of one group of three `hsm-node` members, each driven
//! by its own crypto officer, taking every step of a seeded schedule at the
//! same instant (a barrier before each step), while faults happen.
//!
//! The steps: every sidecar creates fresh names of its own; all create the
//! same fresh shared names at once (each creation is a new version of the
//! name); all rotate the same shared names at once; some delete a shared
//! key while the others rotate it, then some recover it while the others
//! rotate it (a rotation or a recovery of a deleted key, and a rotation of
//! a name none of whose creations was acknowledged, may be refused with a
//! 4xx: not acknowledged, fine). The faults, one at a time so that two
//! members stay up, each healed by the clock in the middle of a step: a
//! sidecar SIGKILLed a few ms after its creations of a step were sent (in
//! the middle of their replication), then restarted; a member SIGSTOPped
//! for 2.5 s while steps run; a member SIGKILLed and restarted (same data)
//! after 1.5 s while steps run.
//!
//! Every creation and rotation carries its own `x-ms-client-request-id`,
//! so its version id is known whatever its outcome
//! (`hsm_api::request::version_for`; checked against the `kid` of every
//! acknowledged answer). The ledger holds every acknowledged version
//! (name, version, public key) and every *uncertain* one (no answer, an
//! error, a sidecar killed under it).
//!
//! What it proves, after each fault and at the end (every shared key that
//! took part in a deletion recovered first, then a resync round):
//! 1. every acknowledged version is readable, with the acknowledged public
//!    key, through every sidecar and directly from every member, and is
//!    listed among its name's versions everywhere: concurrent creations and
//!    rotations through any number of sidecars all survive;
//! 2. no version that was neither acknowledged nor uncertain is listed or
//!    served as current anywhere, no unknown name is listed, and an
//!    uncertain version that exists has the same material on every member;
//! 3. no request (the steps' and the checks' reads) got a 5xx answer, nor
//!    no answer at all, while two members or more were up (always, here),
//!    except those cut by the killed sidecar; and no creation or rotation
//!    of a live key was refused.
//!
//! It prints one `chaos summary:` line per run (steps, requests,
//! acknowledged and uncertain versions, lost, changed, phantom, 5xx…), and
//! before it the acknowledged and lost versions by kind of step and the
//! 5xx answers by request.
//!
//! Running it:
//! - CI: `cargo nextest run -p hsm-tests --test chaos_sidecars` (seed 16,
//!   48 steps, about 25 s);
//! - one seed: `HSM_CHAOS_SEED=7`; several in turn (the long run):
//!   `HSM_CHAOS_SEEDS=1,2,3`; a longer schedule: `HSM_CHAOS_STEPS=120`.
//!   The seed fixes the operations and the faults' order, members and
//!   sidecar; where a fault starts and ends also depends on timing (the
//!   pause and the downtime are in seconds, steps take what they take,
//!   150 ms at least). `HSM_CHAOS_DUMP=DIR` keeps every log of the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::request::{request_digest, version_for};
use hsm_api::*;
use hsm_tests::chaos::{self, HEAL};
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

const SIDECARS: usize = 5;
const MEMBERS: usize = 3;
/// The seed of the CI run.
const CI_SEED: u64 = 16;
const CI_STEPS: usize = 48;
/// The shortest step: the conductor waits this long from a step's start
/// before the next, so that a fault measured in seconds spans a bounded
/// number of steps (every fault fits in the CI schedule) while steps run.
const MIN_STEP: Duration = Duration::from_millis(150);
/// How long a paused member stays stopped, and a killed one down.
const PAUSE: Duration = Duration::from_millis(2500);
const DOWN: Duration = Duration::from_millis(1500);
/// Longest wait for the group to settle (equal inventories) before a check.
const SETTLE: Duration = Duration::from_secs(30);
/// A client's deadline for one call: the proxy's total deadline (3 s), or
/// for a rotation held by the stopped member (the proxy's keygen deadline
/// is 30 s) the 2.5 s pause and the rest, and room for a loaded machine.
const CALL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sidecars_racing_creations_rotations_and_deletions_lose_no_version() {
    let seeds: Vec<u64> = match std::env::var("HSM_CHAOS_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("HSM_CHAOS_SEEDS: numbers, comma-separated")
            })
            .collect(),
        Err(_) => vec![std::env::var("HSM_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(CI_SEED)],
    };
    let steps = std::env::var("HSM_CHAOS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_STEPS);
    let mut broken = Vec::new();
    for seed in seeds {
        let counts = run(seed, steps).await;
        if !counts.ok() {
            broken.push(format!("seed {seed}: {counts}"));
        }
    }
    assert!(
        broken.is_empty(),
        "sidecar races broke the invariants (reproduce with HSM_CHAOS_SEED=N HSM_CHAOS_STEPS={steps}):\n{}",
        broken.join("\n")
    );
}

// ---------------------------------------------------------------- schedule

/// One step, taken by every sidecar at the same instant.
#[derive(Debug, Clone)]
enum Step {
    /// Every sidecar creates `n` fresh names of its own.
    Own { n: usize },
    /// Every sidecar creates each of these fresh names: one version each.
    SameNames { names: Vec<String> },
    /// Every sidecar rotates each of these (live) shared names.
    Rotate { names: Vec<String> },
    /// The sidecars in `deleters` delete `name`, the others rotate it.
    DeleteOrRotate { name: String, deleters: Vec<usize> },
    /// The sidecars in `recoverers` recover `name`, the others rotate it.
    RecoverOrRotate {
        name: String,
        recoverers: Vec<usize>,
    },
}

impl Step {
    fn label(&self) -> &'static str {
        match self {
            Step::Own { .. } => "own",
            Step::SameNames { .. } => "same_names",
            Step::Rotate { .. } => "rotate",
            Step::DeleteOrRotate { .. } => "delete_or_rotate",
            Step::RecoverOrRotate { .. } => "recover_or_rotate",
        }
    }
    fn creates(&self) -> bool {
        matches!(self, Step::Own { .. } | Step::SameNames { .. })
    }
    /// Whether a rotation in this step may meet a deleted key.
    fn races_a_deletion(&self) -> bool {
        matches!(
            self,
            Step::DeleteOrRotate { .. } | Step::RecoverOrRotate { .. }
        )
    }
}

/// A fault, in the order the seed gave.
#[derive(Debug, Clone, Copy)]
enum Planned {
    /// SIGKILL of a sidecar `after` its creations of a step were sent.
    KillSidecar { sidecar: usize, after: Duration },
    /// SIGSTOP of a member for [`PAUSE`].
    PauseMember { member: usize },
    /// SIGKILL of a member, restarted after [`DOWN`].
    KillMember { member: usize },
}

struct Schedule {
    steps: Vec<Step>,
    faults: VecDeque<Planned>,
    /// The first fault comes at this step; each next one this many steps
    /// after the last was healed.
    first_fault: usize,
    gap: usize,
    /// Every shared name that took part in a deletion.
    contested: BTreeSet<String>,
}

fn schedule(seed: u64, steps: usize) -> Schedule {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(steps);
    // Live shared names, open to rotation and deletion.
    let mut pool: Vec<String> = Vec::new();
    let mut contested = BTreeSet::new();
    let mut next_shared = 0;
    let mut fresh = |pool: &mut Vec<String>| {
        let name = format!("shared{next_shared}");
        next_shared += 1;
        pool.push(name.clone());
        name
    };
    while out.len() < steps {
        // Shared names first, so that there are some to rotate and delete.
        let kind = if pool.len() < 2 {
            3
        } else {
            rng.gen_range(0..10)
        };
        match kind {
            0..=2 => out.push(Step::Own { n: 2 }),
            3..=4 => {
                let names = (0..2).map(|_| fresh(&mut pool)).collect();
                out.push(Step::SameNames { names });
            }
            5..=7 => {
                let names = pool
                    .choose_multiple(&mut rng, 3.min(pool.len()))
                    .cloned()
                    .collect();
                out.push(Step::Rotate { names });
            }
            _ => {
                let name = pool.swap_remove(rng.gen_range(0..pool.len()));
                contested.insert(name.clone());
                let mut who: Vec<usize> = (0..SIDECARS).collect();
                who.shuffle(&mut rng);
                let deleters = who[..rng.gen_range(1..=2)].to_vec();
                who.shuffle(&mut rng);
                let recoverers = who[..rng.gen_range(1..=3)].to_vec();
                out.push(Step::DeleteOrRotate {
                    name: name.clone(),
                    deleters,
                });
                out.push(Step::RecoverOrRotate { name, recoverers });
            }
        }
    }
    out.truncate(steps);
    let mut faults = vec![
        Planned::KillSidecar {
            sidecar: rng.gen_range(0..SIDECARS),
            after: Duration::from_millis(rng.gen_range(2..25)),
        },
        Planned::PauseMember {
            member: rng.gen_range(0..MEMBERS),
        },
        Planned::KillMember {
            member: rng.gen_range(0..MEMBERS),
        },
    ];
    faults.shuffle(&mut rng);
    Schedule {
        steps: out,
        faults: faults.into(),
        first_fault: rng.gen_range(2..5),
        gap: rng.gen_range(2..4),
        contested,
    }
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Rotate,
    Delete,
    Recover,
}

/// What a request got.
#[derive(Debug, Clone)]
enum Outcome {
    /// A creation or rotation acknowledged: the version its kid names and
    /// its public key.
    Acked { version: String, public: String },
    /// A deletion or recovery done.
    Done,
    /// A 4xx answer.
    Refused(String),
    /// A 5xx answer.
    ServerError(String),
    /// No answer (timeout, cut connection) or an unreadable one.
    NoAnswer(String),
}

#[derive(Debug, Clone)]
struct Record {
    sidecar: usize,
    step: usize,
    op: Op,
    name: String,
    /// The version a creation or rotation makes, from its request id.
    version: Option<String>,
    outcome: Outcome,
    took: Duration,
}

fn outcome_of_error(e: &ClientError) -> Outcome {
    match e.status() {
        Some(s) if s >= 500 => Outcome::ServerError(e.to_string()),
        Some(_) => Outcome::Refused(e.to_string()),
        None => Outcome::NoAnswer(e.to_string()),
    }
}

/// The public half of a JWK: `x.y` (EC, OKP) or `n.e` (RSA).
fn public(jwk: &JsonWebKey) -> String {
    let v = serde_json::to_value(jwk).unwrap_or_default();
    let f = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
    if jwk.n.is_some() {
        format!("{}.{}", f("n"), f("e"))
    } else {
        format!("{}.{}", f("x"), f("y"))
    }
}

/// The version a kid names (its last path segment).
fn kid_version(kid: Option<&str>) -> String {
    kid.and_then(|k| k.rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

/// One request of a sidecar, with its own request id for a creation or
/// a rotation.
async fn call(c: Client, sidecar: usize, step: usize, op: Op, name: String, id: String) -> Record {
    let started = Instant::now();
    let header = [(
        http::HeaderName::from_static(REQUEST_ID_HEADER),
        http::HeaderValue::from_str(&id).unwrap(),
    )];
    let (version, result) = match op {
        Op::Create => {
            let params = KeyCreateParameters::ec(Curve::P256);
            let route = Route::CreateKey { name: name.clone() };
            let body = serde_json::to_vec(&params).unwrap();
            let digest = request_digest(id.as_bytes(), route.label(), &body).unwrap();
            let r = c
                .call_with::<_, KeyBundle>(&route, None, &header, Some(&params))
                .await;
            (Some(version_for(&name, &digest)), r.map(Some))
        }
        Op::Rotate => {
            let route = Route::RotateKey { name: name.clone() };
            let digest = request_digest(id.as_bytes(), route.label(), b"").unwrap();
            let r = c
                .call_with::<(), KeyBundle>(&route, None, &header, None)
                .await;
            (Some(version_for(&name, &digest)), r.map(Some))
        }
        Op::Delete => (None, c.delete_key(&name).await.map(|_| None)),
        Op::Recover => (None, c.recover_deleted(&name).await.map(|_| None)),
    };
    let outcome = match result {
        Ok(Some(b)) => Outcome::Acked {
            version: kid_version(b.key.kid.as_deref()),
            public: public(&b.key),
        },
        Ok(None) => Outcome::Done,
        Err(e) => outcome_of_error(&e),
    };
    Record {
        sidecar,
        step,
        op,
        name,
        version,
        outcome,
        took: started.elapsed(),
    }
}

/// What sidecar `p` sends in step `s`.
fn calls_of(seed: u64, p: usize, s: usize, step: &Step) -> Vec<(Op, String, String)> {
    let id = |name: &str, op: &str| format!("chaos-sidecars-{seed}-{s}-{p}-{op}-{name}");
    let mut out = Vec::new();
    match step {
        Step::Own { n } => {
            for j in 0..*n {
                let name = format!("own{p}-{s}-{j}");
                out.push((Op::Create, id(&name, "create"), name));
            }
        }
        Step::SameNames { names } => {
            for name in names {
                out.push((Op::Create, id(name, "create"), name.clone()));
            }
        }
        Step::Rotate { names } => {
            for name in names {
                out.push((Op::Rotate, id(name, "rotate"), name.clone()));
            }
        }
        Step::DeleteOrRotate { name, deleters } => {
            let op = if deleters.contains(&p) {
                Op::Delete
            } else {
                Op::Rotate
            };
            out.push((op, id(name, "change"), name.clone()));
        }
        Step::RecoverOrRotate { name, recoverers } => {
            let op = if recoverers.contains(&p) {
                Op::Recover
            } else {
                Op::Rotate
            };
            out.push((op, id(name, "change"), name.clone()));
        }
    }
    out
}

/// What every sidecar's task shares with the conductor.
struct Shared {
    seed: u64,
    steps: Vec<Step>,
    barrier: Barrier,
    /// Each sidecar's logged-in crypto officer (replaced after a restart).
    clients: RwLock<Vec<Client>>,
    /// Per sidecar: the last step (+1) whose requests are on their way.
    sent: Vec<AtomicUsize>,
    records: Mutex<Vec<Record>>,
}

/// One sidecar's driver: every step at the barrier, its requests at once.
async fn sidecar(p: usize, shared: Arc<Shared>) {
    for (s, step) in shared.steps.iter().enumerate() {
        shared.barrier.wait().await;
        let c = shared.clients.read().unwrap()[p].clone();
        let mut set = tokio::task::JoinSet::new();
        for (op, id, name) in calls_of(shared.seed, p, s, step) {
            set.spawn(call(c.clone(), p, s, op, name, id));
        }
        // On the wire (the conductor kills a sidecar a few ms after this).
        tokio::time::sleep(Duration::from_millis(1)).await;
        shared.sent[p].store(s + 1, Ordering::SeqCst);
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                shared.records.lock().unwrap().push(r);
            }
        }
        shared.barrier.wait().await;
    }
}

// ---------------------------------------------------------------- ledger

/// What the application was told.
#[derive(Debug, Default, Clone)]
struct Ledger {
    /// (name, version) → public key of every acknowledged creation or rotation.
    acked: BTreeMap<(String, String), String>,
    /// Creations and rotations whose outcome the application cannot know.
    uncertain: BTreeSet<(String, String)>,
    /// Every name created.
    names: BTreeSet<String>,
    /// The kind of step each acknowledged version was made in.
    made_in: BTreeMap<(String, String), &'static str>,
}

impl Ledger {
    fn known(&self, name: &str, version: &str) -> bool {
        let k = (name.to_string(), version.to_string());
        self.acked.contains_key(&k) || self.uncertain.contains(&k)
    }
    fn has_acked(&self, name: &str) -> bool {
        self.acked_of(name).next().is_some()
    }
    /// The acknowledged versions of `name`, as ledger keys.
    fn acked_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a (String, String)> + 'a {
        self.acked.keys().filter(move |(n, _)| n == name)
    }
}

/// A run's counts: its `chaos summary:` line.
#[derive(Debug, Default, Clone)]
struct Counts {
    seed: u64,
    steps: usize,
    faults: u64,
    checks: u64,
    requests: u64,
    acked: usize,
    uncertain: usize,
    /// 4xx answers where a deletion races (allowed).
    refused: u64,
    /// 4xx answers to a creation or rotation of a live key.
    refused_live: u64,
    /// Acknowledged versions missing, unreadable or unlisted somewhere.
    lost: BTreeSet<(String, String)>,
    /// Acknowledged versions served with another public key.
    changed: BTreeSet<(String, String)>,
    /// Versions (or names) neither acknowledged nor uncertain, listed or
    /// served as current.
    phantom: BTreeSet<(String, String)>,
    /// Uncertain versions present on some members only, or with different
    /// material.
    diverged: BTreeSet<(String, String)>,
    server_errors: u64,
    /// 5xx answers to the steps' requests, by operation and step kind.
    server_errors_by_op: BTreeMap<String, u64>,
    /// No answer (outside the killed sidecar) or an unreadable one.
    no_answer: u64,
    /// No answer from the sidecar killed under its requests (uncertain).
    cut: u64,
    /// A kid whose version is not the one its request id names.
    misnamed: u64,
    unsettled: u64,
    /// Faults of the plan the schedule ended before.
    unreached: usize,
    slowest: Duration,
    problems: Vec<String>,
}

impl Counts {
    fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.changed.is_empty()
            && self.phantom.is_empty()
            && self.diverged.is_empty()
            && self.server_errors == 0
            && self.no_answer == 0
            && self.refused_live == 0
            && self.misnamed == 0
            && self.unsettled == 0
            && self.unreached == 0
    }
    fn problem(&mut self, p: String) {
        if self.problems.len() < 40 {
            self.problems.push(p);
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos summary: scenario=sidecars(seed={}) sidecars={SIDECARS} members={MEMBERS} steps={} faults={} checks={} requests={} acked_versions={} uncertain={} refused={} refused_live={} lost={} changed={} phantom={} diverged={} 5xx={} no_answer={} cut={} misnamed={} unsettled={} unreached={} slowest_ms={}",
            self.seed,
            self.steps,
            self.faults,
            self.checks,
            self.requests,
            self.acked,
            self.uncertain,
            self.refused,
            self.refused_live,
            self.lost.len(),
            self.changed.len(),
            self.phantom.len(),
            self.diverged.len(),
            self.server_errors,
            self.no_answer,
            self.cut,
            self.misnamed,
            self.unsettled,
            self.unreached,
            self.slowest.as_millis()
        )
    }
}

/// Books one step's answers: the ledger, and what the counts must know.
/// `killed` is the sidecar SIGKILLed under this step's requests.
fn book(records: Vec<Record>, step: &Step, killed: Option<usize>, l: &mut Ledger, n: &mut Counts) {
    // Names that had an acknowledged version before this step: a key
    // whose every creation failed does not exist, and its rotation may
    // be refused.
    let existed: Vec<bool> = records.iter().map(|r| l.has_acked(&r.name)).collect();
    for (r, existed) in records.into_iter().zip(existed) {
        n.requests += 1;
        n.slowest = n.slowest.max(r.took);
        if r.op == Op::Create {
            l.names.insert(r.name.clone());
        }
        let what = format!(
            "step {} sidecar {} {:?} {}",
            r.step, r.sidecar, r.op, r.name
        );
        match (&r.outcome, &r.version) {
            (Outcome::Acked { version, public }, Some(v)) => {
                if version != v {
                    n.misnamed += 1;
                    n.problem(format!(
                        "{what}: acknowledged as version {version}, its request id names {v}"
                    ));
                }
                l.acked
                    .insert((r.name.clone(), version.clone()), public.clone());
                l.made_in
                    .insert((r.name.clone(), version.clone()), step.label());
                continue;
            }
            (_, Some(v)) => {
                l.uncertain.insert((r.name.clone(), v.clone()));
            }
            _ => {}
        }
        match &r.outcome {
            Outcome::Acked { .. } | Outcome::Done => {}
            Outcome::Refused(e) => {
                let may = matches!(r.op, Op::Delete | Op::Recover)
                    || (r.op == Op::Rotate && (step.races_a_deletion() || !existed));
                if may {
                    n.refused += 1;
                } else {
                    n.refused_live += 1;
                    n.problem(format!("{what}: refused: {e}"));
                }
            }
            Outcome::ServerError(e) => {
                n.server_errors += 1;
                *n.server_errors_by_op
                    .entry(format!("{:?}/{}", r.op, step.label()))
                    .or_default() += 1;
                n.problem(format!("{what}: {e}"));
            }
            Outcome::NoAnswer(e) => {
                if killed == Some(r.sidecar) {
                    n.cut += 1;
                } else {
                    n.no_answer += 1;
                    n.problem(format!("{what}: {e}"));
                }
            }
        }
    }
    n.acked = l.acked.len();
    n.uncertain = l.uncertain.len();
}

// ---------------------------------------------------------------- checks

/// What one reader (a sidecar or a member) served.
#[derive(Debug, Default)]
struct Seen {
    reader: String,
    lost: Vec<((String, String), String)>,
    changed: Vec<((String, String), String)>,
    phantom: Vec<((String, String), String)>,
    server_errors: u64,
    no_answer: u64,
    requests: u64,
}

impl Seen {
    fn failed(&mut self, e: &ClientError) {
        match e.status() {
            Some(s) if s >= 500 => self.server_errors += 1,
            Some(_) => {}
            None => self.no_answer += 1,
        }
    }
    /// Every acknowledged version of `name` counts as lost, for `why`.
    fn lose_all(&mut self, ledger: &Ledger, name: &str, why: String) {
        for k in ledger.acked_of(name) {
            self.lost.push((k.clone(), why.clone()));
        }
    }
}

/// Reads everything the ledger knows through `c`: every acknowledged
/// version, every name's versions and current version, every name.
async fn read_all(reader: String, c: Client, ledger: Arc<Ledger>) -> Seen {
    let mut seen = Seen {
        reader: reader.clone(),
        ..Default::default()
    };
    for ((name, version), want) in &ledger.acked {
        seen.requests += 1;
        let key = (name.clone(), version.clone());
        match c.get_key(name, Some(version)).await {
            Ok(b) if public(&b.key) == *want => {}
            Ok(_) => seen
                .changed
                .push((key, format!("{reader}: another public key"))),
            Err(e) => {
                seen.failed(&e);
                seen.lost.push((key, format!("{reader}: {e}")));
            }
        }
    }
    for name in &ledger.names {
        // A name whose only creations are uncertain may not exist.
        let gone_ok = |e: &ClientError| e.status() == Some(404) && !ledger.has_acked(name);
        seen.requests += 1;
        match c.list_versions(name).await {
            Ok(items) => {
                let listed: BTreeSet<String> = items
                    .iter()
                    .map(|i| kid_version(Some(i.kid.as_str())))
                    .collect();
                for v in &listed {
                    if !ledger.known(name, v) {
                        seen.phantom
                            .push(((name.clone(), v.clone()), format!("{reader}: listed")));
                    }
                }
                for k in ledger.acked_of(name) {
                    if !listed.contains(&k.1) {
                        seen.lost.push((
                            k.clone(),
                            format!("{reader}: not listed among {} versions", listed.len()),
                        ));
                    }
                }
            }
            Err(e) if gone_ok(&e) => {}
            Err(e) => {
                seen.failed(&e);
                seen.lose_all(&ledger, name, format!("{reader}: listing versions: {e}"));
            }
        }
        seen.requests += 1;
        match c.get_key(name, None).await {
            Ok(b) => {
                let v = kid_version(b.key.kid.as_deref());
                if !ledger.known(name, &v) {
                    seen.phantom
                        .push(((name.clone(), v), format!("{reader}: served as current")));
                }
            }
            Err(e) if gone_ok(&e) => {}
            Err(e) => {
                seen.failed(&e);
                seen.lose_all(&ledger, name, format!("{reader}: no current version: {e}"));
            }
        }
    }
    seen.requests += 1;
    match c.list_keys().await {
        Ok(items) => {
            for i in items {
                // `…/keys/{name}`, or `…/keys/{name}/{version}`.
                let name = i
                    .kid
                    .rsplit_once("/keys/")
                    .and_then(|(_, rest)| rest.split('/').next())
                    .unwrap_or_default()
                    .to_string();
                if !ledger.names.contains(&name) {
                    seen.phantom
                        .push(((name, "*".into()), format!("{reader}: unknown name listed")));
                }
            }
        }
        Err(e) => seen.failed(&e),
    }
    seen
}

/// After a fault and at the end: every contested shared key recovered
/// (a 4xx is fine: it was live), a resync round, then every reader.
async fn check(
    label: &str,
    shared: &Shared,
    proxies: &[TestProxy],
    nodes: &[TestNode],
    contested: &BTreeSet<String>,
    ledger: &Ledger,
    n: &mut Counts,
) {
    n.checks += 1;
    let started = Instant::now();
    let clients = shared.clients.read().unwrap().clone();
    for name in contested.iter().filter(|c| ledger.names.contains(*c)) {
        n.requests += 1;
        if let Err(e) = clients[0].recover_deleted(name).await {
            match outcome_of_error(&e) {
                Outcome::Refused(_) => {}
                Outcome::ServerError(m) => {
                    n.server_errors += 1;
                    n.problem(format!("{label}: recovering {name}: {m}"));
                }
                _ => {
                    n.no_answer += 1;
                    n.problem(format!("{label}: recovering {name}: {e}"));
                }
            }
        }
    }
    let members: Vec<&TestNode> = nodes.iter().collect();
    if let Err(e) = chaos::settle(&proxies[0], &members, SETTLE).await {
        n.unsettled += 1;
        n.problem(format!("{label}: {e:#}"));
    }
    let ledger = Arc::new(ledger.clone());
    let mut readers = tokio::task::JoinSet::new();
    for (p, c) in clients.iter().enumerate() {
        readers.spawn(read_all(format!("sidecar {p}"), c.clone(), ledger.clone()));
    }
    let mut direct = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let c = node.officer().await.unwrap().with_timeout(CALL);
        direct.push(c.clone());
        readers.spawn(read_all(format!("member {i}"), c, ledger.clone()));
    }
    let mut lost_per_reader = BTreeMap::new();
    while let Some(seen) = readers.join_next().await {
        let seen = seen.unwrap();
        let distinct: BTreeSet<&(String, String)> = seen.lost.iter().map(|(k, _)| k).collect();
        if !distinct.is_empty() {
            lost_per_reader.insert(seen.reader.clone(), distinct.len());
        }
        n.requests += seen.requests;
        n.server_errors += seen.server_errors;
        n.no_answer += seen.no_answer;
        for (what, found) in [
            ("lost", seen.lost),
            ("changed", seen.changed),
            ("phantom", seen.phantom),
        ] {
            for (k, why) in found {
                let set = match what {
                    "lost" => &mut n.lost,
                    "changed" => &mut n.changed,
                    _ => &mut n.phantom,
                };
                if set.insert(k.clone()) {
                    n.problem(format!("{label}: {what} {}/{}: {why}", k.0, k.1));
                }
            }
        }
    }
    // An uncertain version that exists is the same key on every member.
    for (name, version) in &ledger.uncertain {
        let mut answers = BTreeSet::new();
        for c in &direct {
            n.requests += 1;
            answers.insert(match c.get_key(name, Some(version)).await {
                Ok(b) => Some(public(&b.key)),
                Err(e) if e.status() == Some(404) => None,
                Err(e) => Some(format!("error: {e}")),
            });
        }
        if answers.len() > 1 {
            let k = (name.clone(), version.clone());
            if n.diverged.insert(k) {
                n.problem(format!(
                    "{label}: uncertain {name}/{version}: {} different answers from the members",
                    answers.len()
                ));
            }
        }
    }
    println!(
        "chaos sidecars: check {label}: {} acknowledged, {} uncertain versions read in {:?}: lost={} changed={} phantom={} diverged={}; lost as seen by each reader {lost_per_reader:?}",
        ledger.acked.len(),
        ledger.uncertain.len(),
        started.elapsed(),
        n.lost.len(),
        n.changed.len(),
        n.phantom.len(),
        n.diverged.len()
    );
}

// ---------------------------------------------------------------- the run

/// The fault in progress.
#[derive(Debug, Clone, Copy)]
enum Active {
    Paused { member: usize, since: Instant },
    Down { member: usize, since: Instant },
}

async fn run(seed: u64, steps: usize) -> Counts {
    println!(
        "chaos sidecars: seed={seed} steps={steps} (HSM_CHAOS_SEED={seed} HSM_CHAOS_STEPS={steps} reproduces it)"
    );
    let mut plan = schedule(seed, steps);
    let kinds = |f: fn(&Step) -> bool| plan.steps.iter().filter(|s| f(s)).count();
    println!(
        "chaos sidecars: schedule: own={} same_names={} rotate={} delete_or_rotate={} recover_or_rotate={}; faults {:?}",
        kinds(|s| matches!(s, Step::Own { .. })),
        kinds(|s| matches!(s, Step::SameNames { .. })),
        kinds(|s| matches!(s, Step::Rotate { .. })),
        kinds(|s| matches!(s, Step::DeleteOrRotate { .. })),
        kinds(|s| matches!(s, Step::RecoverOrRotate { .. })),
        plan.faults
    );
    let mut nodes = TestNode::group(MEMBERS).await.unwrap();
    let opts = ProxyOptions {
        min_replicas: Some(2),
        ..chaos::options()
    };
    let mut proxies = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..SIDECARS {
        let p = TestProxy::start(&nodes, opts.clone()).await.unwrap();
        clients.push(
            p.login(Role::CryptoOfficer)
                .await
                .unwrap()
                .with_timeout(CALL),
        );
        proxies.push(p);
    }
    let shared = Arc::new(Shared {
        seed,
        steps: std::mem::take(&mut plan.steps),
        barrier: Barrier::new(SIDECARS + 1),
        clients: RwLock::new(clients),
        sent: (0..SIDECARS).map(|_| AtomicUsize::new(0)).collect(),
        records: Mutex::new(Vec::new()),
    });
    let mut drivers = Vec::new();
    for p in 0..SIDECARS {
        drivers.push(tokio::spawn(sidecar(p, shared.clone())));
    }
    let mut ledger = Ledger::default();
    let mut n = Counts {
        seed,
        steps,
        ..Default::default()
    };
    let started = Instant::now();
    let mut active: Option<Active> = None;
    let mut next_fault = plan.first_fault;
    for (s, step) in shared.steps.iter().enumerate() {
        shared.barrier.wait().await;
        let step_started = Instant::now();
        // While the step runs: start the next fault when its turn has
        // come, and heal the one in progress when its time has come (by
        // the clock, not at a step's end: a request held up by a stopped
        // member holds its step until the member goes on).
        let mut healed = None;
        let mut killed = None;
        if active.is_none() && s >= next_fault {
            match plan.faults.front().copied() {
                Some(Planned::KillSidecar { sidecar, after }) if step.creates() => {
                    plan.faults.pop_front();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while shared.sent[sidecar].load(Ordering::SeqCst) <= s
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    tokio::time::sleep(after).await;
                    proxies[sidecar].kill();
                    n.faults += 1;
                    println!(
                        "chaos sidecars: step {s}: sidecar {sidecar} killed {after:?} after sending"
                    );
                    killed = Some(sidecar);
                }
                Some(Planned::KillSidecar { .. }) | None => {}
                Some(Planned::PauseMember { member }) => {
                    plan.faults.pop_front();
                    nodes[member].signal("STOP").unwrap();
                    n.faults += 1;
                    println!("chaos sidecars: step {s}: member {member} paused");
                    active = Some(Active::Paused {
                        member,
                        since: Instant::now(),
                    });
                }
                Some(Planned::KillMember { member }) => {
                    plan.faults.pop_front();
                    nodes[member].kill();
                    n.faults += 1;
                    println!("chaos sidecars: step {s}: member {member} killed");
                    active = Some(Active::Down {
                        member,
                        since: Instant::now(),
                    });
                }
            }
        }
        let step_end = async {
            tokio::time::sleep(MIN_STEP.saturating_sub(step_started.elapsed())).await;
            shared.barrier.wait().await;
        };
        tokio::pin!(step_end);
        loop {
            let heal_at = match active {
                Some(Active::Paused { since, .. }) => Some(since + PAUSE),
                Some(Active::Down { since, .. }) => Some(since + DOWN),
                None => None,
            };
            tokio::select! {
                _ = &mut step_end => break,
                _ = tokio::time::sleep_until(heal_at.unwrap_or(step_started).into()), if heal_at.is_some() => {
                    match active.take() {
                        Some(Active::Paused { member, .. }) => {
                            nodes[member].signal("CONT").unwrap();
                            healed = Some(format!("after member {member} paused"));
                        }
                        Some(Active::Down { member, .. }) => {
                            nodes[member].run().await.unwrap();
                            healed = Some(format!("after member {member} killed and restarted"));
                        }
                        None => {}
                    }
                    println!("chaos sidecars: step {s}: healed");
                }
            }
        }
        let records = std::mem::take(&mut *shared.records.lock().unwrap());
        book(records, step, killed, &mut ledger, &mut n);
        if let Some(k) = killed {
            proxies[k].restart(MEMBERS).await.unwrap();
            let c = proxies[k]
                .login(Role::CryptoOfficer)
                .await
                .unwrap()
                .with_timeout(CALL);
            shared.clients.write().unwrap()[k] = c;
            healed = Some(format!("after sidecar {k} killed"));
        }
        if let Some(label) = healed {
            println!("chaos sidecars: step {s}: healed, checking {label}");
            for p in &proxies {
                p.wait_healthy(MEMBERS, HEAL).await.unwrap();
            }
            check(
                &label,
                &shared,
                &proxies,
                &nodes,
                &plan.contested,
                &ledger,
                &mut n,
            )
            .await;
            next_fault = s + 1 + plan.gap;
        }
    }
    for d in drivers {
        d.await.unwrap();
    }
    println!("chaos sidecars: {steps} steps in {:?}", started.elapsed());
    if !plan.faults.is_empty() {
        n.unreached = plan.faults.len();
        n.problem(format!(
            "faults not reached in {steps} steps: {:?}",
            plan.faults
        ));
    }
    match active.take() {
        Some(Active::Paused { member, .. }) => nodes[member].signal("CONT").unwrap(),
        Some(Active::Down { member, .. }) => nodes[member].run().await.unwrap(),
        None => {}
    }
    for p in &proxies {
        p.wait_healthy(MEMBERS, HEAL).await.unwrap();
    }
    check(
        "at the end",
        &shared,
        &proxies,
        &nodes,
        &plan.contested,
        &ledger,
        &mut n,
    )
    .await;
    let mut lost_by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &n.lost {
        *lost_by_kind
            .entry(ledger.made_in.get(k).copied().unwrap_or("name"))
            .or_default() += 1;
    }
    let mut acked_by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for kind in ledger.made_in.values() {
        *acked_by_kind.entry(kind).or_default() += 1;
    }
    println!(
        "chaos sidecars: acknowledged versions by step kind {acked_by_kind:?}, lost {lost_by_kind:?}; 5xx by request {:?}",
        n.server_errors_by_op
    );
    println!("{n}");
    if !n.ok() {
        eprintln!("seed {seed}: problems (first {}):", n.problems.len());
        for p in &n.problems {
            eprintln!("  {p}");
        }
    }
    // HSM_CHAOS_DUMP=DIR keeps every log of the run.
    if let Ok(dir) = std::env::var("HSM_CHAOS_DUMP") {
        let dir = std::path::Path::new(&dir).join(format!("sidecars-{seed}"));
        if std::fs::create_dir_all(&dir).is_ok() {
            for (i, p) in proxies.iter().enumerate() {
                let _ = std::fs::write(dir.join(format!("sidecar{i}.log")), p.log());
            }
            for (i, node) in nodes.iter().enumerate() {
                let _ = std::fs::write(dir.join(format!("member{i}.log")), node.log());
            }
            eprintln!("full logs in {}", dir.display());
        }
    }
    n
}

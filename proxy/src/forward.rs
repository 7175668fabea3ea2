//! Failover: getting one request answered by the group.
//!
//! Decides, per request: a deadline per attempt and in total; which
//! failures are retried (on a *different* member only): a request never
//! sent (connect or TLS failure) always; an idempotent one (reads and
//! crypto operations) after a timeout, a broken connection or a 5xx, under
//! the retry budget; a key creation (create, import, rotate) likewise,
//! because it carries a request id and a per-attempt stamp that make a
//! retry land on the same version and the last attempt's copy win
//! (`hsm_api::request`); any other mutation only when it certainly did not
//! run (never sent, or refused with 503 before running). Idempotent requests are
//! hedged: after the hedge delay a copy goes to another member and the
//! first good answer wins. A member answering "key not found" for an
//! idempotent key request is skipped for this request and reported for
//! repair. When no member can serve, the answer is an immediate 503.
//! Never: how members are chosen (`group`) or what mutations replicate
//! (`replicate`).

use crate::budget::RetryBudget;
use crate::group::Group;
use crate::hedge::HedgePolicy;
use crate::member::{Answer, Credential, Member};
use bytes::Bytes;
use hsm_api::{ClientError, ErrorBody, ErrorCode};
use http::{Method, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// Timing policy of requests.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// One attempt on one member.
    pub attempt: Duration,
    /// The whole request, retries and hedges included.
    pub total: Duration,
    /// One attempt of a slow key generation (RSA creation, rotation); such
    /// a request gets `keygen + total` in all.
    pub keygen: Duration,
}

impl Deadlines {
    /// (per attempt, in total) for a request.
    fn of(&self, slow: bool) -> (Duration, Duration) {
        if slow {
            (self.keygen, self.keygen + self.total)
        } else {
            (self.attempt, self.total)
        }
    }
}

/// Whether a request may run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads and crypto operations: retried and hedged.
    Idempotent,
    /// Key creation under a request id: retried like reads, never hedged.
    Create,
    /// A change of a register the members merge by stamp (update, delete,
    /// recover, purge, restore): run twice on two members, it converges to
    /// one state, so it is retried like a creation, never hedged.
    Merged,
    /// Other changes (derive, which makes a key): retried only when they
    /// certainly did not run.
    Mutation,
}

impl Kind {
    /// Whether a request that may have run can be sent again elsewhere.
    fn may_repeat(self) -> bool {
        matches!(self, Kind::Idempotent | Kind::Create | Kind::Merged)
    }
}

/// Why the group could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no member of the group can serve now (all down, ejected or already tried)")]
    NoMember,
    #[error("no answer within the total deadline of {0:?}")]
    Deadline(Duration),
    #[error("member {member}: {error}")]
    Member { member: String, error: ClientError },
}

impl ForwardError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

/// What happened, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trace {
    pub attempts: u32,
    pub retries: u32,
    pub hedges: u32,
}

/// Told when a member answered "key not found" for a key (to repair it).
pub type MissingHook = Box<dyn Fn(&Member, &str) + Send + Sync>;

pub struct Forwarder {
    pub group: Arc<Group>,
    pub budget: RetryBudget,
    pub hedge: Option<HedgePolicy>,
    pub deadlines: Deadlines,
    /// Called with (member, key name) when a member lacks a key the group has.
    pub on_missing: MissingHook,
}

/// The error code in an error answer.
pub fn answer_code(a: &Answer) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(&a.body)
        .ok()
        .map(|b| b.error.code)
}

type Attempt = (Arc<Member>, Result<Answer, ClientError>, Duration);

/// What bounds one request's forwarding.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Members not to try (they already failed this request).
    pub avoid: &'a [String],
    /// When the request must be answered.
    pub deadline: Instant,
}

/// One request as the forwarder sends it.
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    pub pq: String,
    pub body: Bytes,
    /// The request id of a key creation (`Kind::Create`): every attempt
    /// carries it, with a fresh stamp.
    pub request_id: Option<http::HeaderValue>,
    /// A key generation that may take seconds: `Deadlines::keygen` applies.
    pub slow: bool,
}

impl Outgoing {
    /// The headers of one attempt, and its stamp.
    fn headers(&self) -> (Vec<(http::HeaderName, http::HeaderValue)>, Option<u64>) {
        let Some(id) = &self.request_id else {
            return (Vec::new(), None);
        };
        let n = hsm_api::request::next_stamp();
        let stamp = http::HeaderValue::from(n);
        let h = vec![
            (
                http::HeaderName::from_static(hsm_api::REQUEST_ID_HEADER),
                id.clone(),
            ),
            (
                http::HeaderName::from_static(hsm_api::REQUEST_STAMP_HEADER),
                stamp,
            ),
        ];
        (h, Some(n))
    }
}

async fn attempt(m: Arc<Member>, cred: Credential, out: Outgoing, timeout: Duration) -> Attempt {
    let flight = m.load.start();
    let (headers, stamp) = out.headers();
    // The whole attempt (session included) within its deadline.
    let r = match tokio::time::timeout(
        timeout,
        m.send(&cred, &out.method, &out.pq, &headers, &out.body, timeout),
    )
    .await
    {
        Ok(r) => r.map(|mut a| {
            a.stamp = stamp;
            a
        }),
        Err(_) => Err(ClientError::Timeout {
            url: format!("{}{}", m.base_url(), out.pq),
            timeout,
        }),
    };
    let rtt = match &r {
        Ok(_) => flight.finish(),
        Err(_) => {
            drop(flight);
            timeout
        }
    };
    (m, r, rtt)
}

/// The attempts of one request in flight: the first, and a hedge beside
/// it. Polled in the request's own task, so that an answer wakes the
/// handler directly (a spawned attempt would cost a hand-off between
/// threads per request).
struct Flight<F> {
    slots: [Option<Pin<Box<F>>>; 2],
}

impl<F: Future<Output = Attempt>> Flight<F> {
    fn new(first: F) -> Flight<F> {
        Flight {
            slots: [Some(Box::pin(first)), None],
        }
    }

    /// Adds the hedge (a third attempt never runs beside two).
    fn add(&mut self, f: F) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.is_none()) {
            *slot = Some(Box::pin(f));
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The next attempt to finish (pending forever when empty: callers
    /// check `is_empty` first).
    async fn next(&mut self) -> Attempt {
        std::future::poll_fn(|cx| {
            for slot in self.slots.iter_mut() {
                if let Some(f) = slot {
                    if let Poll::Ready(a) = f.as_mut().poll(cx) {
                        *slot = None;
                        return Poll::Ready(a);
                    }
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Forwarder {
    /// Sends a request to the group and returns the answering member and
    /// its answer (which may be an error answer from the member, e.g. 404).
    /// `scope` bounds it: members not to try, and when it must be answered.
    pub async fn forward(
        &self,
        cred: &Credential,
        out: &Outgoing,
        kind: Kind,
        key: Option<&str>,
        trace: &mut Trace,
        scope: Scope<'_>,
    ) -> Result<(Arc<Member>, Answer), ForwardError> {
        self.budget.deposit();
        let (per_attempt, total) = self.deadlines.of(out.slow);
        let deadline = scope.deadline;
        let mut tried: Vec<String> = scope.avoid.to_vec();
        let mut last: Option<ForwardError> = None;
        let mut last_answer: Option<(Arc<Member>, Answer)> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last.unwrap_or(ForwardError::Deadline(total)));
            }
            let Some(m) = self.group.pick(&tried) else {
                if let Some(a) = last_answer {
                    return Ok(a);
                }
                return Err(last.unwrap_or(ForwardError::NoMember));
            };
            tried.push(m.name().to_string());
            let timeout = per_attempt.min(deadline - now);
            // The attempt runs in this task (no hand-off to another
            // thread); only a hedge adds a second one beside it.
            let mut flight = Flight::new(attempt(m.clone(), cred.clone(), out.clone(), timeout));
            trace.attempts += 1;
            let hedge_at = match (&self.hedge, kind) {
                (Some(h), Kind::Idempotent) => Some(Instant::now() + h.delay()),
                _ => None,
            };
            let mut hedged = false;
            // Run the attempt (and maybe its hedge) until one good answer or both done.
            let mut outcome: Option<Attempt> = None;
            while !flight.is_empty() {
                let sleep_until = hedge_at.filter(|_| !hedged).unwrap_or(deadline);
                tokio::select! {
                    biased;
                    a = flight.next() => {
                        let good = matches!(&a.1, Ok(ans) if !retryable_answer(ans, kind));
                        if good || flight.is_empty() {
                            outcome = Some(a);
                            break;
                        }
                        // The other copy may still win; note this failure.
                        self.note(&a, kind);
                        outcome = Some(a);
                    }
                    _ = tokio::time::sleep_until(sleep_until), if !hedged && hedge_at.is_some() => {
                        hedged = true;
                        if !self.budget.try_withdraw() {
                            continue;
                        }
                        if let Some(h) = self.group.pick(&tried) {
                            tried.push(h.name().to_string());
                            trace.hedges += 1;
                            trace.attempts += 1;
                            crate::metrics::hedge(h.name());
                            let t = per_attempt.min(deadline.saturating_duration_since(Instant::now()));
                            flight.add(attempt(h, cred.clone(), out.clone(), t));
                        }
                    }
                }
            }
            // A copy still running (the loser of a hedge) is dropped here.
            drop(flight);
            let Some((m, r, rtt)) = outcome else { continue };
            match r {
                Ok(ans) => {
                    let code = (!ans.status.is_success())
                        .then(|| answer_code(&ans))
                        .flatten();
                    if ans.status.is_server_error() {
                        self.group.record(&m, false);
                        m.note_error(&format!(
                            "{} {}",
                            ans.status,
                            code.clone().unwrap_or_default()
                        ));
                        let never_ran = matches!(code.as_deref(), Some("Unavailable" | "Zeroized"));
                        let again = kind.may_repeat() || never_ran;
                        if again && (never_ran || self.budget.try_withdraw()) {
                            trace.retries += 1;
                            crate::metrics::retry(m.name());
                            last_answer = Some((m, ans));
                            continue;
                        }
                        return Ok((m, ans));
                    }
                    self.group.record(&m, true);
                    if ans.status.is_success() {
                        if let Some(h) = &self.hedge {
                            h.observe(rtt);
                        }
                    }
                    // A member lacking a key the group may hold: try another.
                    if kind == Kind::Idempotent && code.as_deref() == Some("KeyNotFound") {
                        if let Some(k) = key {
                            (self.on_missing)(&m, k);
                        }
                        last_answer = Some((m, ans));
                        continue;
                    }
                    return Ok((m, ans));
                }
                Err(e) => {
                    self.group.record(&m, !against_member(&e));
                    m.note_error(&e.to_string());
                    let never_sent = e.never_sent();
                    if never_sent || (kind.may_repeat() && self.budget.try_withdraw()) {
                        trace.retries += 1;
                        crate::metrics::retry(m.name());
                        last = Some(ForwardError::Member {
                            member: m.name().to_string(),
                            error: e,
                        });
                        continue;
                    }
                    return Err(ForwardError::Member {
                        member: m.name().to_string(),
                        error: e,
                    });
                }
            }
        }
    }

    /// A request arriving now: no member avoided, its total deadline.
    pub fn scope(&self, out: &Outgoing) -> Scope<'static> {
        Scope {
            avoid: &[],
            deadline: Instant::now() + self.deadlines.of(out.slow).1,
        }
    }

    /// Records an attempt for the member's passive health: a member that
    /// answered, even with a 4xx (a locked role refusing the session's
    /// login, a missing key), is healthy; a 5xx, a timeout or a broken
    /// connection counts against it.
    fn note(&self, a: &Attempt, _kind: Kind) {
        let (m, r, _) = a;
        let ok = match r {
            Ok(ans) => !ans.status.is_server_error(),
            Err(e) => !against_member(e),
        };
        self.group.record(m, ok);
    }
}

/// Whether a failed attempt counts against the member's passive health: a
/// timeout, a broken connection or a 5xx do; a 4xx the member answered —
/// such as a role locked there refusing the session's login — does not
/// (the member is up; the credential is the problem, and ejecting the
/// member would cut every other credential off it too).
fn against_member(e: &ClientError) -> bool {
    !matches!(e, ClientError::Api { status, .. } if *status < 500)
}

/// An answer that should not end the request: a 5xx from a member.
fn retryable_answer(a: &Answer, kind: Kind) -> bool {
    a.status.is_server_error()
        || (kind == Kind::Idempotent
            && a.status == StatusCode::NOT_FOUND
            && answer_code(a).as_deref() == Some("KeyNotFound"))
}

/// The forwarder's timing on tokio's paused clock, with scripted members
/// (`Member::scripted`): hedging, per-attempt and total deadlines, which
/// failures are retried, the retry budget. Members share one script keyed
/// by the order of calls, so that the outcome does not depend on which
/// member the balancer picks first.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::group::HealthPolicy;
    use crate::health::{CheckPolicy, EjectPolicy};
    use crate::member::Script;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// What the n-th call (over all members) does.
    #[derive(Clone, Copy)]
    enum Step {
        /// Answers with this status after this long.
        Answer(u64, u16),
        /// Never answers.
        Hang,
        /// Cannot connect (never sent).
        Refuse,
        /// The member refuses the session's login: the role is locked there.
        Locked,
    }

    fn answer(status: u16, body: &'static str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from_static(body.as_bytes()),
            replayed: false,
            stamp: None,
        }
    }

    /// `n` members answering the calls in order by `steps` (the last step
    /// repeats); returns the forwarder and the call counter.
    fn group(
        n: usize,
        steps: &[Step],
        hedge: Option<HedgePolicy>,
        budget: RetryBudget,
    ) -> (Forwarder, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let steps: Arc<Vec<Step>> = Arc::new(steps.to_vec());
        let members = (0..n)
            .map(|i| {
                let (calls, steps) = (calls.clone(), steps.clone());
                let script: Script = Arc::new(move || {
                    let k = calls.fetch_add(1, Ordering::SeqCst);
                    let step = steps[k.min(steps.len() - 1)];
                    Box::pin(async move {
                        match step {
                            Step::Answer(after, 503) => {
                                tokio::time::sleep(ms(after)).await;
                                Ok(answer(
                                    503,
                                    r#"{"error":{"code":"Unavailable","message":"busy"}}"#,
                                ))
                            }
                            Step::Answer(after, 500) => {
                                tokio::time::sleep(ms(after)).await;
                                Ok(answer(
                                    500,
                                    r#"{"error":{"code":"Internal","message":"broke"}}"#,
                                ))
                            }
                            Step::Answer(after, status) => {
                                tokio::time::sleep(ms(after)).await;
                                Ok(answer(status, "{}"))
                            }
                            Step::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                Ok(answer(200, "{}"))
                            }
                            Step::Refuse => Err(ClientError::Connect {
                                url: "https://m.invalid".into(),
                                message: "refused".into(),
                            }),
                            Step::Locked => Err(ClientError::Api {
                                status: 403,
                                code: "RoleLocked".into(),
                                message: "role crypto-user is locked".into(),
                            }),
                        }
                    })
                });
                Member::scripted(&format!("m{i}"), script).unwrap()
            })
            .collect();
        let policy = HealthPolicy {
            checks: CheckPolicy { rise: 2, fall: 3 },
            eject: EjectPolicy {
                consecutive_failures: 5,
                base: Duration::from_secs(10),
                max: Duration::from_secs(120),
                max_ejected_percent: 50,
                panic_threshold_percent: 0,
            },
        };
        let f = Forwarder {
            group: Arc::new(Group::new(members, policy)),
            budget,
            hedge,
            deadlines: Deadlines {
                attempt: ms(800),
                total: ms(2000),
                keygen: Duration::from_secs(30),
            },
            on_missing: Box::new(|_, _| {}),
        };
        (f, calls)
    }

    fn hedge_after(delay: u64) -> Option<HedgePolicy> {
        // Too few samples: the delay is the cap.
        Some(HedgePolicy::new(95.0, ms(1), ms(delay)))
    }

    fn budget() -> RetryBudget {
        RetryBudget::new(0.2, 10.0)
    }

    fn out() -> Outgoing {
        Outgoing {
            method: Method::POST,
            pq: "/keys/k/sign".into(),
            body: Bytes::new(),
            request_id: None,
            slow: false,
        }
    }

    async fn run(f: &Forwarder, kind: Kind) -> (Result<u16, String>, Duration, Trace) {
        let cred = Credential::new(hsm_api::Role::CryptoUser, "pw");
        let mut trace = Trace::default();
        let start = Instant::now();
        let scope = f.scope(&out());
        let r = f
            .forward(&cred, &out(), kind, Some("k"), &mut trace, scope)
            .await;
        let took = start.elapsed();
        (
            r.map(|(_, a)| a.status.as_u16()).map_err(|e| e.to_string()),
            took,
            trace,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_member_costs_an_idempotent_request_one_hedge_delay() {
        let (f, calls) = group(
            3,
            &[Step::Hang, Step::Answer(2, 200)],
            hedge_after(50),
            budget(),
        );
        let (r, took, trace) = run(&f, Kind::Idempotent).await;
        assert_eq!(r, Ok(200));
        assert_eq!(took, ms(52), "hedge after 50 ms, answered 2 ms later");
        assert_eq!((trace.attempts, trace.hedges, trace.retries), (2, 1, 0));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_refusing_a_locked_role_is_not_ejected() {
        // Every call is refused as a locked role would be: 20 requests, far
        // past the 5 consecutive failures that eject a failing member.
        let (f, calls) = group(2, &[Step::Locked], None, budget());
        for _ in 0..20 {
            let (r, _, _) = run(&f, Kind::Idempotent).await;
            assert!(r.is_err(), "{r:?}");
        }
        assert!(calls.load(Ordering::SeqCst) >= 20);
        let now = Instant::now();
        for m in f.group.members().iter() {
            assert!(m.serving(now), "{} was ejected for a locked role", m.name());
        }
        // A member that cannot be reached is ejected as before.
        let (f, _) = group(2, &[Step::Refuse], None, budget());
        for _ in 0..20 {
            let _ = run(&f, Kind::Idempotent).await;
        }
        let now = Instant::now();
        assert!(f.group.members().iter().any(|m| !m.serving(now)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_sends_no_hedge() {
        let (f, calls) = group(3, &[Step::Answer(49, 200)], hedge_after(50), budget());
        let (r, took, trace) = run(&f, Kind::Idempotent).await;
        assert_eq!((r, took), (Ok(200), ms(49)));
        assert_eq!(trace.hedges, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_budget_no_hedge_is_sent() {
        let (f, calls) = group(
            3,
            &[Step::Answer(300, 200), Step::Answer(1, 200)],
            hedge_after(50),
            RetryBudget::new(0.0, 0.0),
        );
        let (r, took, trace) = run(&f, Kind::Idempotent).await;
        assert_eq!((r, took), (Ok(200), ms(300)), "waited for the first member");
        assert_eq!(trace.hedges, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_creation_is_never_hedged_but_retried_after_its_attempt_deadline() {
        let (f, calls) = group(
            3,
            &[Step::Hang, Step::Answer(5, 200)],
            hedge_after(50),
            budget(),
        );
        let (r, took, trace) = run(&f, Kind::Create).await;
        assert_eq!(r, Ok(200));
        assert_eq!(took, ms(805), "the attempt deadline (800 ms), then 5 ms");
        assert_eq!((trace.hedges, trace.retries), (0, 1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mutation_that_may_have_run_is_not_sent_again() {
        let (f, calls) = group(3, &[Step::Hang, Step::Answer(1, 200)], None, budget());
        let (r, took, trace) = run(&f, Kind::Mutation).await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(took, ms(800));
        assert_eq!((trace.attempts, trace.retries), (1, 0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_merged_change_that_may_have_run_goes_elsewhere_once_the_attempt_times_out() {
        let (f, calls) = group(3, &[Step::Hang, Step::Answer(1, 200)], None, budget());
        let (r, took, trace) = run(&f, Kind::Merged).await;
        assert_eq!((r, took), (Ok(200), ms(801)));
        assert_eq!((trace.attempts, trace.retries, trace.hedges), (2, 1, 0));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mutation_never_sent_or_refused_before_running_goes_elsewhere() {
        let (f, calls) = group(3, &[Step::Refuse, Step::Answer(3, 200)], None, budget());
        let (r, took, trace) = run(&f, Kind::Mutation).await;
        assert_eq!((r, took), (Ok(200), ms(3)));
        assert_eq!(trace.retries, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // 503 Unavailable: the member refused before running it.
        let (f, calls) = group(
            3,
            &[Step::Answer(1, 503), Step::Answer(1, 200)],
            None,
            RetryBudget::new(0.0, 0.0),
        );
        let (r, _, _) = run(&f, Kind::Mutation).await;
        assert_eq!(r, Ok(200), "retried without budget: it never ran");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn every_member_hung_ends_at_the_total_deadline() {
        let (f, calls) = group(3, &[Step::Hang], None, budget());
        let (r, took, trace) = run(&f, Kind::Idempotent).await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(took, ms(2000), "800 + 800 + the 400 left");
        assert_eq!(trace.attempts, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        // A 500 may have run: retried only under the budget.
        let steps = [Step::Answer(1, 500), Step::Answer(1, 200)];
        let (f, calls) = group(3, &steps, None, RetryBudget::new(0.0, 0.0));
        let (r, _, trace) = run(&f, Kind::Idempotent).await;
        assert_eq!(r, Ok(500), "the member's answer, not retried");
        assert_eq!(trace.retries, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (f, calls) = group(3, &steps, None, budget());
        let (r, _, trace) = run(&f, Kind::Idempotent).await;
        assert_eq!(r, Ok(200), "retried under the budget");
        assert_eq!(trace.retries, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_serving_member_is_an_immediate_error() {
        let (f, calls) = group(2, &[Step::Answer(1, 200)], hedge_after(50), budget());
        for m in f.group.members().iter() {
            m.drained.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let (r, took, _) = run(&f, Kind::Idempotent).await;
        assert!(r.is_err());
        assert_eq!(took, Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}

//! Floods of bad logins, directly against a node and through the proxy.
//!
//! The node's policy (hsm-node/src/auth.rs, `lockout_attempts` default 10,
//! `lockout_secs` default 600): consecutive failed logins of a role lock it;
//! while locked even the right password gets `403 RoleLocked`; the check,
//! the counter and the lock are one transaction, so concurrent guesses get
//! no extra attempts. Sessions opened before the lock keep working.
//!
//! The proxy forwards an application's login to one member; a flood through
//! it locks the flooded role on the members it reaches, but never the
//! proxy's own background credential (the `replication` role): the proxy
//! refuses application logins as `replication`, so they cannot even count.
//! Meanwhile clients with valid sessions keep getting answers, with
//! bounded latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;

use abuse::Latencies;
use hsm_api::{Client, Curve, ErrorCode, KeyCreateParameters, Role, SignatureAlgorithm};
use hsm_tests::{ProxyOptions, TestNode, TestProxy, CO_PASSWORD, CU_PASSWORD};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wrong logins in a flood, and how many at once.
const FLOOD: usize = 300;
const CONCURRENCY: usize = 32;
/// Liveness bound for the clients that keep working during a flood.
const P99_BOUND: Duration = Duration::from_secs(1);

/// Sends `n` logins as `role` with wrong passwords, `CONCURRENCY` at a time,
/// each on a fresh client from `make`; returns the error code of each.
async fn flood(
    make: impl Fn() -> Client,
    role: Role,
    n: usize,
) -> Vec<Result<(), Option<ErrorCode>>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = make();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let _p = permit;
            c.login(role, &format!("wrong-password-{i}"))
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

/// The error code of a failed harness login.
fn code_of(r: anyhow::Result<Client>) -> Option<ErrorCode> {
    match r {
        Ok(_) => None,
        Err(e) => e
            .downcast_ref::<hsm_api::ClientError>()
            .and_then(|c| c.code()),
    }
}

fn count(v: &[Result<(), Option<ErrorCode>>], code: ErrorCode) -> usize {
    v.iter().filter(|r| **r == Err(Some(code))).count()
}

/// Signs with `c` until `stop`, recording latencies and errors.
fn keep_signing(
    c: Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Latencies, Vec<String>)> {
    tokio::spawn(async move {
        let mut lat = Latencies::default();
        let mut errors = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = c
                .sign("ec", None, SignatureAlgorithm::Es256, &[5u8; 32])
                .await;
            lat.push(t.elapsed());
            if let Err(e) = r {
                errors.push(e.to_string());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (lat, errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_locks_the_role_and_nothing_else() {
    let mut node = TestNode::start().await.unwrap();
    // A short lock, to see it end: stop, set lockout_secs, start again.
    // Long enough to outlast the flood on a loaded machine (a lock that
    // ends mid-flood lets more guesses through, which is the policy, not a
    // fault; at 4 s it did on a CI machine running three builds).
    node.kill();
    let settings = node.dir.join("node.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    s["lockout_secs"] = serde_json::json!(10);
    std::fs::write(&settings, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    node.run().await.unwrap();
    let attempts = s["lockout_attempts"].as_u64().unwrap_or(10) as usize;

    let co = node.officer().await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let cu = node.user().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let signers = [
        keep_signing(cu.clone(), stop.clone()),
        keep_signing(co.clone(), stop.clone()),
    ];

    // A certificate not registered to the partition never reaches the
    // password check: its guesses do not count.
    let strangers = flood(|| node.client_as("stranger").unwrap(), Role::CryptoUser, 40).await;
    assert_eq!(count(&strangers, ErrorCode::ClientNotRegistered), 40);
    node.user()
        .await
        .expect("guesses from an unregistered client locked the role");

    let started = Instant::now();
    let out = flood(|| node.client_as("app").unwrap(), Role::CryptoUser, FLOOD).await;
    let flood_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let failed = count(&out, ErrorCode::LoginFailed);
    let locked = count(&out, ErrorCode::RoleLocked);
    // Exactly attempts-1 plain failures, then the lock: concurrency buys no
    // extra guesses.
    assert_eq!(failed, attempts - 1, "{out:?}");
    assert_eq!(locked, FLOOD - failed, "{out:?}");

    // Locked: the right password is refused too; other roles are not locked.
    assert_eq!(code_of(node.user().await), Some(ErrorCode::RoleLocked));
    node.officer().await.unwrap();
    node.login(Role::Replication).await.unwrap();
    // Sessions from before the flood still work.
    cu.sign("ec", None, SignatureAlgorithm::Es256, &[6u8; 32])
        .await
        .unwrap();

    let mut lat = Latencies::default();
    for s in signers {
        let (l, errors) = s.await.unwrap();
        assert!(
            errors.is_empty(),
            "valid sessions failed during the flood: {errors:?}"
        );
        lat.0.extend(l.0);
    }
    assert!(
        lat.len() > 10,
        "too few requests during the flood: {}",
        lat.len()
    );
    assert!(lat.quantile(0.99) < P99_BOUND, "{}", lat.summary());

    // The metrics saw it.
    let m = abuse::node_metrics(&node).await;
    assert!(abuse::metric_sum(&m, "hsm_node_login_failures_total") >= (FLOOD) as f64);
    assert!(abuse::metric_sum(&m, "hsm_node_lockouts_total") >= 1.0);

    // The lock ends after lockout_secs.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        match code_of(node.user().await) {
            None => break,
            Some(ErrorCode::RoleLocked) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            other => panic!("the lock did not end: {other:?}"),
        }
    }
    println!(
        "abuse_login_flood node: {FLOOD} wrong logins ({CONCURRENCY} at once) in {flood_time:?}: {failed} LoginFailed, {locked} RoleLocked; 40 unregistered-client guesses not counted; valid sessions: {}, 0 errors; lock ended after lockout_secs",
        lat.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_the_proxy_never_locks_its_background_credential() {
    let mut nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let cu = proxy.login(Role::CryptoUser).await.unwrap();
    let anon = || {
        let cfg = hsm_api::ClientConfig::from_files(proxy.url.clone(), &proxy.ca, None).unwrap();
        Client::new(&cfg).unwrap()
    };

    let stop = Arc::new(AtomicBool::new(false));
    let signers = [
        keep_signing(cu.clone(), stop.clone()),
        keep_signing(co.clone(), stop.clone()),
    ];

    // Wrong passwords for the proxy's own role: refused by the proxy itself.
    let repl = flood(anon, Role::Replication, 60).await;
    assert_eq!(count(&repl, ErrorCode::Forbidden), 60, "{repl:?}");
    // …and so never counted by a member.
    for n in &nodes {
        n.login(Role::Replication)
            .await
            .expect("a flood through the proxy locked the members' replication role");
    }
    // What a locked background credential would break: a member that
    // restarts (forgetting every session) must be logged back in by the
    // proxy and caught up before it serves again.
    nodes[1].kill();
    proxy
        .wait_state("m1", "down", Duration::from_secs(10))
        .await
        .unwrap();
    nodes[1].run().await.unwrap();
    proxy
        .wait_state("m1", "up", Duration::from_secs(15))
        .await
        .unwrap();

    // Wrong passwords for the crypto user: each member locks the role after
    // its own `lockout_attempts` failures.
    let started = Instant::now();
    let out = flood(anon, Role::CryptoUser, FLOOD).await;
    let flood_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let failed = count(&out, ErrorCode::LoginFailed);
    let locked = count(&out, ErrorCode::RoleLocked);
    assert_eq!(failed + locked, FLOOD, "{out:?}");
    // Not bounded by 9 per member: the lock counts *consecutive* failures,
    // and the proxy's own correct logins for the valid sessions (a member
    // session opened again, e.g. after a member restart or a login that
    // timed out in the flood's queue) reset the count in between.
    // Concurrency alone buys no extra guess: see the node test.
    assert!(
        failed < FLOOD / 2,
        "the lock did not hold: {failed} plain failures"
    );

    // Both members' crypto-user role is locked now (the flood reached both),
    // and the proxy's background credential and the officer are not.
    for n in &nodes {
        assert_eq!(code_of(n.user().await), Some(ErrorCode::RoleLocked));
        n.login(Role::Replication).await.unwrap();
    }
    // Through the proxy the right password is either refused (the chosen
    // member checks it: locked) or accepted from the proxy's cache, when that
    // member already holds a session of this very credential (the valid
    // sessions' one): the proxy does not ask the member again. A guess never
    // matches a cached credential unless it is the password.
    let via_proxy = match anon().login(Role::CryptoUser, CU_PASSWORD).await {
        Ok(_) => "accepted from the proxy's session cache".to_string(),
        Err(e) => {
            assert_eq!(e.code(), Some(ErrorCode::RoleLocked), "{e}");
            "refused: RoleLocked".to_string()
        }
    };
    anon()
        .login(Role::CryptoOfficer, CO_PASSWORD)
        .await
        .unwrap();
    // The proxy's background work still logs in: a new key replicates to
    // both members (min_replicas = 2 needs the background credential).
    co.create_key("after-flood", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    for n in &nodes {
        n.officer()
            .await
            .unwrap()
            .get_key("after-flood", None)
            .await
            .unwrap();
    }
    // The proxy still sees every member up.
    proxy
        .wait_healthy(nodes.len(), Duration::from_secs(5))
        .await
        .unwrap();

    let mut lat = Latencies::default();
    for s in signers {
        let (l, errors) = s.await.unwrap();
        assert!(
            errors.is_empty(),
            "valid sessions failed during the flood: {errors:?}"
        );
        lat.0.extend(l.0);
    }
    assert!(
        lat.len() > 10,
        "too few requests during the flood: {}",
        lat.len()
    );
    assert!(lat.quantile(0.99) < P99_BOUND, "{}", lat.summary());
    println!(
        "abuse_login_flood proxy: 60 replication-role logins -> 403 Forbidden at the proxy; {FLOOD} wrong crypto-user logins ({CONCURRENCY} at once) in {flood_time:?}: {failed} LoginFailed, {locked} RoleLocked; replication role never locked; right password through the proxy while locked: {via_proxy}; valid sessions: {}, 0 errors",
        lat.summary()
    );
}

//! Process-level fuzzing: a seeded loop of randomly mutated requests (paths,
//! methods, headers, bodies) sent over TLS to a real `hsm-node` and through
//! a real `hsm-proxy`, over hand-written HTTP/1.1 and over HTTP/2.
//!
//! Every request carries a crypto user's token, a bogus token or none, so
//! none may change the partition. Checked: every answer to a valid HTTP
//! request is a success or a well-formed JSON error with a known code and
//! its status, never a 5xx other than 503; requests whose HTTP framing was
//! mutated get an answer of the server's HTTP layer (a 4xx) or a closed
//! connection; both processes stay up, serve a good request afterwards,
//! log no panic, and every member's inventory summary is what it was.
//!
//! Cases: `HSM_FUZZ_CASES` (default 2000, spread over the four channels);
//! seed: `HSM_FUZZ_SEED` (default: from the clock, printed). A long run:
//! `HSM_FUZZ_CASES=20000 cargo nextest run -p hsm-tests --test abuse_fuzz_http --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;

use abuse::{connect, http1, inventories, tls_config, well_formed, RawError};
use bytes::Bytes;
use hsm_api::{Client, Curve, KeyCreateParameters, Role, SignatureAlgorithm};
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use http::{HeaderName, HeaderValue, Method};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One generated request.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    /// Path and query, relative to the partition base.
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const WORDS: &[&str] = &[
    "keys",
    "create",
    "restore",
    "backup",
    "rotate",
    "versions",
    "deletedkeys",
    "recover",
    "inventory",
    "buckets",
    "clone",
    "export",
    "import",
    "withdraw",
    "health",
    "metrics",
    "rng",
    "sign",
    "verify",
    "encrypt",
    "decrypt",
    "wrapkey",
    "unwrapkey",
    "mac",
    "verifymac",
    "derive",
    "ec",
    "aes",
    "nope",
    "..",
    ".",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "255",
    "-1",
    "",
    "0123456789abcdef0123456789abcdef",
    "partitions",
    "p1",
    "admin",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "BREW", "get", "M-SEARCH",
];
/// Characters allowed in a path by the URI grammar (besides `%XX`).
const PATH_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/";

fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> &'a T {
    &v[rng.gen_range(0..v.len())]
}

fn rand_str(rng: &mut StdRng, chars: &[u8], max: usize) -> String {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| *pick(rng, chars) as char).collect()
}

/// The valid requests mutations start from: (method, path, body).
fn seeds() -> Vec<(&'static str, String, String)> {
    let d = |n: usize| hsm_api::b64::encode(&vec![3u8; n]);
    vec![
        ("GET", "/keys".into(), String::new()),
        ("GET", "/keys?maxresults=2".into(), String::new()),
        ("GET", "/keys/ec".into(), String::new()),
        ("GET", "/keys/ec/".into(), String::new()),
        ("GET", "/keys/ec/versions".into(), String::new()),
        ("GET", "/deletedkeys".into(), String::new()),
        ("GET", "/deletedkeys/ec".into(), String::new()),
        (
            "POST",
            "/keys/ec//sign".into(),
            format!(r#"{{"alg":"ES256","value":"{}"}}"#, d(32)),
        ),
        (
            "POST",
            "/keys/ec//verify".into(),
            format!(
                r#"{{"alg":"ES256","digest":"{}","value":"{}"}}"#,
                d(32),
                d(64)
            ),
        ),
        (
            "POST",
            "/keys/aes//encrypt".into(),
            format!(
                r#"{{"alg":"A256GCM","value":"{}","aad":"{}"}}"#,
                d(20),
                d(4)
            ),
        ),
        (
            "POST",
            "/keys/aes//decrypt".into(),
            format!(
                r#"{{"alg":"A256GCM","value":"{}","iv":"{}","tag":"{}"}}"#,
                d(20),
                d(12),
                d(16)
            ),
        ),
        (
            "POST",
            "/keys/aes//wrapkey".into(),
            format!(r#"{{"alg":"A256KW","value":"{}"}}"#, d(32)),
        ),
        (
            "POST",
            "/keys/aes//unwrapkey".into(),
            format!(r#"{{"alg":"A256KW","value":"{}"}}"#, d(40)),
        ),
        (
            "POST",
            "/keys/aes//mac".into(),
            format!(r#"{{"alg":"HS256","value":"{}"}}"#, d(10)),
        ),
        ("POST", "/rng".into(), r#"{"count":16}"#.into()),
        (
            "POST",
            "/keys/k/create".into(),
            r#"{"kty":"EC","crv":"P-256","key_ops":["sign"],"tags":{"a":"b"}}"#.into(),
        ),
        (
            "PUT",
            "/keys/k".into(),
            format!(r#"{{"key":{{"kty":"oct","k":"{}"}}}}"#, d(32)),
        ),
        (
            "PATCH",
            "/keys/ec".into(),
            r#"{"attributes":{"enabled":false}}"#.into(),
        ),
        ("DELETE", "/keys/ec".into(), String::new()),
        ("POST", "/keys/ec/rotate".into(), String::new()),
        ("POST", "/keys/ec/backup".into(), String::new()),
        (
            "POST",
            "/keys/restore".into(),
            format!(r#"{{"value":"{}"}}"#, d(100)),
        ),
        ("POST", "/deletedkeys/ec/recover".into(), String::new()),
        ("DELETE", "/deletedkeys/ec".into(), String::new()),
        (
            "POST",
            "/keys/ec//derive".into(),
            r#"{"alg":"KBKDF-CTR-HMAC-SHA256","target":"t","info":"AA"}"#.into(),
        ),
        ("GET", "/inventory".into(), String::new()),
        ("GET", "/inventory/buckets/7".into(), String::new()),
        ("POST", "/clone/export".into(), r#"{"name":"ec"}"#.into()),
        (
            "POST",
            "/clone/import".into(),
            r#"{"format":"x","domain":"d","name":"ec","generation":1,"digest":"d","sealed":"AA"}"#
                .into(),
        ),
        (
            "POST",
            "/clone/withdraw".into(),
            r#"{"name":"ec","version":"0123456789abcdef0123456789abcdef","request_id":"00"}"#
                .into(),
        ),
    ]
}

fn mutate_path(rng: &mut StdRng, path: &str) -> String {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let mut segs: Vec<String> = p.split('/').map(str::to_string).collect();
    match rng.gen_range(0..6) {
        0 => {
            let i = rng.gen_range(0..segs.len());
            segs[i] = pick(rng, WORDS).to_string();
        }
        1 => {
            let i = rng.gen_range(0..=segs.len());
            segs.insert(i, pick(rng, WORDS).to_string());
        }
        2 if segs.len() > 1 => {
            let i = rng.gen_range(1..segs.len());
            segs.remove(i);
        }
        3 => {
            let i = rng.gen_range(0..segs.len());
            segs[i] = rand_str(rng, PATH_CHARS, 40);
        }
        4 => {
            let i = rng.gen_range(0..segs.len());
            segs[i] = format!("{}{}", segs[i], "a".repeat(rng.gen_range(100..300)));
        }
        _ => {
            let i = rng.gen_range(0..segs.len());
            segs[i] = segs[i].bytes().map(|b| format!("%{b:02X}")).collect();
        }
    }
    let mut out = segs.join("/");
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    let query = match rng.gen_range(0..4) {
        0 => format!("maxresults={}", rng.gen_range(-5i64..50)),
        1 => format!(
            "$skiptoken={}&api-version=7.4",
            rand_str(rng, PATH_CHARS, 30).replace(['/', '?'], "")
        ),
        2 => q.to_string(),
        _ => String::new(),
    };
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query);
    }
    out
}

fn mutate_body(rng: &mut StdRng, body: &str) -> Vec<u8> {
    let mut b = body.as_bytes().to_vec();
    match rng.gen_range(0..6) {
        0 => {
            // Replace a JSON field by a value of another type.
            if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(body) {
                let keys: Vec<String> = m.keys().cloned().collect();
                let v = match rng.gen_range(0..7) {
                    0 => serde_json::Value::Null,
                    1 => serde_json::json!(rng.gen::<i64>()),
                    2 => serde_json::json!(u64::MAX),
                    3 => serde_json::json!(rand_str(rng, PATH_CHARS, 60)),
                    4 => serde_json::json!([1, "a", null]),
                    5 => serde_json::json!({"x": {"y": [true]}}),
                    _ => serde_json::json!(-1.5e300),
                };
                if !keys.is_empty() && rng.gen_bool(0.7) {
                    let k = pick(rng, &keys).clone();
                    m.insert(k, v);
                } else {
                    m.insert(rand_str(rng, b"abcdefghij_", 8), v);
                }
                b = serde_json::to_vec(&m).unwrap();
            }
        }
        1 => {
            for _ in 0..rng.gen_range(1..8) {
                if !b.is_empty() {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
            }
        }
        2 => b.truncate(rng.gen_range(0..=b.len())),
        3 => {
            let n = rng.gen_range(0..400);
            b = (0..n).map(|_| rng.gen()).collect();
        }
        4 => {
            // Deep nesting and huge numbers.
            let depth = rng.gen_range(100..3000);
            b = format!(
                "{{\"alg\":{}1e999999{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes();
        }
        _ => {}
    }
    b
}

fn generate(rng: &mut StdRng, seeds: &[(&'static str, String, String)], token: &str) -> Req {
    let (m, p, b) = pick(rng, seeds).clone();
    let mut r = Req {
        method: m.to_string(),
        path: p,
        headers: Vec::new(),
        body: b.into_bytes(),
    };
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..4) {
            0 => r.path = mutate_path(rng, &r.path),
            1 => r.method = pick(rng, METHODS).to_string(),
            2 => r.body = mutate_body(rng, std::str::from_utf8(&r.body).unwrap_or("")),
            _ => {
                let (k, v) = match rng.gen_range(0..6) {
                    0 => (
                        hsm_api::REQUEST_ID_HEADER.to_string(),
                        rand_str(rng, PATH_CHARS, 300),
                    ),
                    1 => (
                        hsm_api::REQUEST_STAMP_HEADER.to_string(),
                        rand_str(rng, b"0123456789-x", 25),
                    ),
                    2 => (
                        "content-type".into(),
                        pick(
                            rng,
                            &[
                                "text/plain",
                                "application/json; charset=latin1",
                                "",
                                "multipart/form-data",
                                "application/xml",
                            ],
                        )
                        .to_string(),
                    ),
                    3 => ("x-forwarded-host".into(), rand_str(rng, PATH_CHARS, 50)),
                    4 => ("accept-encoding".into(), "gzip, br".into()),
                    _ => ("x-ms-return-client-request-id".into(), "true".into()),
                };
                r.headers.push((k, v));
            }
        }
    }
    // Who is asking: a crypto user, a bogus token, or nobody. Never an
    // officer: nothing generated here may change the partition.
    match rng.gen_range(0..6) {
        0 => {}
        1 => r.headers.push((
            "authorization".into(),
            format!("Bearer {}", rand_str(rng, PATH_CHARS, 50)),
        )),
        2 => r.headers.push(("authorization".into(), "Bearer".into())),
        _ => r
            .headers
            .push(("authorization".into(), format!("Bearer {token}"))),
    }
    // Logins are the flood suite's: a guessed password counts to a lockout.
    if r.path.split(['?', '/']).any(|s| s == "login") {
        r.path = "/keys".into();
    }
    r
}

fn head(r: &Req, base: &str) -> Vec<u8> {
    let mut h = format!(
        "{} {base}{} HTTP/1.1\r\nhost: 127.0.0.1\r\n",
        r.method, r.path
    );
    for (k, v) in &r.headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(&format!("content-length: {}\r\n\r\n", r.body.len()));
    let mut out = h.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// Flips bytes of the request head (not the body): the HTTP framing itself.
fn mangle_framing(rng: &mut StdRng, bytes: &mut [u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    for _ in 0..rng.gen_range(1..4) {
        let i = rng.gen_range(0..end.max(1));
        bytes[i] = *pick(rng, b"\r\n :\0\x7f\xff\tA/");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_get_well_formed_answers_and_change_nothing() {
    let cases: usize = std::env::var("HSM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("HSM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("abuse_fuzz_http: seed {seed} (HSM_FUZZ_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);

    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    co.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    co.create_key("aes", &KeyCreateParameters::oct(256))
        .await
        .unwrap();
    let before = inventories(&nodes).await;
    let node_cu = nodes[0].user().await.unwrap();
    let proxy_cu = proxy.login(Role::CryptoUser).await.unwrap();
    let app = nodes[0].pki.cert("app");
    let node_tls = tls_config(&nodes[0].pki.ca(), Some((&app.0, &app.1)), &[b"http/1.1"]);
    let proxy_tls = tls_config(&proxy.ca, None, &[b"http/1.1"]);
    let proxy_addr = proxy.url.trim_start_matches("https://").to_string();
    // The HTTP/2 channels: the typed clients with the crypto user's pool,
    // but the token each request sets itself.
    let h2 = |c: &Client| {
        let c = c.fork();
        c.set_token(None);
        c
    };
    let (node_h2, proxy_h2) = (h2(&node_cu), h2(&proxy_cu));
    let node_token = node_cu.token().unwrap();
    let proxy_token = proxy_cu.token().unwrap();
    let seeds = seeds();

    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let (mut framing, mut unsendable) = (0usize, 0usize);
    let started = Instant::now();
    for i in 0..cases {
        let channel = i % 4;
        let to_node = channel % 2 == 0;
        let token = if to_node { &node_token } else { &proxy_token };
        let req = generate(&mut rng, &seeds, token);
        let base = if to_node { "/partitions/p1" } else { "" };
        let who = format!(
            "#{i} {} {}",
            if to_node { "node" } else { "proxy" },
            if channel < 2 { "HTTP/1.1" } else { "HTTP/2" }
        );
        if channel < 2 {
            let mut bytes = head(&req, base);
            let mangled = rng.gen_bool(0.15);
            if mangled {
                mangle_framing(&mut rng, &mut bytes);
                framing += 1;
            }
            let (addr, tls) = if to_node {
                (&nodes[0].addr, &node_tls)
            } else {
                (&proxy_addr, &proxy_tls)
            };
            let mut s = match connect(addr, tls.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{who}: cannot connect: {e}"));
                    continue;
                }
            };
            match http1(&mut s, &bytes, Duration::from_secs(15)).await {
                Ok(r) if req.method == "HEAD" && !mangled => {
                    // No body to check: the status alone.
                    if r.status >= 500 && r.status != 503 {
                        failures.push(format!("{who}: HEAD answered {}", r.status));
                    }
                    *codes.entry(format!("{} (HEAD)", r.status)).or_default() += 1;
                }
                Ok(r) => match well_formed(r.status, &r.body) {
                    Ok(code) => {
                        *codes
                            .entry(
                                code.map(|c| c.to_string())
                                    .unwrap_or_else(|| format!("{} ok", r.status)),
                            )
                            .or_default() += 1
                    }
                    Err(e) if mangled && (400..500).contains(&r.status) && r.body.is_empty() => {
                        let _ = e;
                        *codes
                            .entry(format!("{} (HTTP layer)", r.status))
                            .or_default() += 1;
                    }
                    Err(e) => failures.push(format!(
                        "{who}: {e}; request {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    )),
                },
                Err(RawError::Closed(_)) if mangled => {
                    *codes.entry("closed (HTTP layer)".into()).or_default() += 1
                }
                Err(e) => failures.push(format!(
                    "{who}: {e:?}; request {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                )),
            }
        } else {
            let client = if to_node { &node_h2 } else { &proxy_h2 };
            let (Ok(method), Ok(headers)) = (
                Method::from_bytes(req.method.as_bytes()),
                req.headers
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            HeaderName::from_bytes(k.as_bytes())?,
                            HeaderValue::from_str(v)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>(),
            ) else {
                unsendable += 1;
                continue;
            };
            match client
                .raw_with(
                    method,
                    &req.path,
                    None,
                    &headers,
                    Bytes::from(req.body.clone()),
                )
                .await
            {
                Ok((st, _, _)) if req.method == "HEAD" => {
                    if st.as_u16() >= 500 && st.as_u16() != 503 {
                        failures.push(format!("{who}: HEAD answered {st}"));
                    }
                    *codes.entry(format!("{} (HEAD)", st.as_u16())).or_default() += 1;
                }
                Ok((st, _, body)) => match well_formed(st.as_u16(), &body) {
                    Ok(code) => {
                        *codes
                            .entry(
                                code.map(|c| c.to_string())
                                    .unwrap_or_else(|| format!("{} ok", st.as_u16())),
                            )
                            .or_default() += 1
                    }
                    Err(e) => failures.push(format!("{who}: {e}; request {req:?}")),
                },
                // The client refused to build it (e.g. a path that is no URI).
                Err(hsm_api::ClientError::Config(_)) => unsendable += 1,
                Err(e) => failures.push(format!("{who}: {e}; request {req:?}")),
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still up, still serving, nothing changed, no panic logged.
    for n in &nodes {
        assert!(abuse::alive(n.pid().unwrap()));
        assert!(!n.log().contains("panicked"), "{}", n.log());
    }
    assert!(abuse::alive(abuse::proxy_pid(&proxy)));
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
    proxy_cu
        .sign("ec", None, SignatureAlgorithm::Es256, &[1u8; 32])
        .await
        .unwrap();
    node_cu
        .sign("ec", None, SignatureAlgorithm::Es256, &[1u8; 32])
        .await
        .unwrap();
    assert_eq!(
        inventories(&nodes).await,
        before,
        "a fuzzed request changed a member (seed {seed})"
    );
    proxy.wait_healthy(2, Duration::from_secs(5)).await.unwrap();
    println!(
        "abuse_fuzz_http: {cases} cases ({framing} with mangled framing, {unsendable} not sendable over HTTP/2) in {elapsed:?}, 0 failures, inventories unchanged; answers: {codes:?}"
    );
}

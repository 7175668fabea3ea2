//! Fuzzing the request parsing that the proxy and the node share, in
//! process, with `proptest` (runs in plain `cargo test`, so in CI; cargo-fuzz
//! needs a nightly toolchain, which these machines do not have).
//!
//! Properties:
//! - `Route::parse` never panics on any method and path, and a parsed route
//!   is canonical: parsing its own `path()` with its own `method()` gives it
//!   back; every generated route parses back from its path.
//! - Every JSON request body type either decodes or gives an error, never a
//!   panic, on arbitrary bytes, on byte-mutated valid bodies and on
//!   structurally mutated valid bodies (a field replaced by a value of
//!   another type, a field added or removed); valid bodies round-trip.
//! - `request_digest` accepts exactly 1–256 printable ASCII bytes,
//!   `parse_stamp` exactly decimal digits fitting a u64; `ListQuery::parse`
//!   and `b64::decode` never panic.
//!
//! Cases per property: `HSM_FUZZ_CASES` (default 1000). A long run:
//! `HSM_FUZZ_CASES=100000 cargo nextest run -p hsm-tests --test abuse_parse`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

fn cases() -> u32 {
    std::env::var("HSM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs a property over a strategy and prints the one-line summary.
fn check<S: Strategy>(what: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let n = AtomicU64::new(0);
    runner()
        .run(&strategy, |v| {
            n.fetch_add(1, Ordering::Relaxed);
            test(v)
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    println!(
        "abuse_parse {what}: {} cases, 0 failures",
        n.load(Ordering::Relaxed)
    );
}

fn any_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        prop::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::CONNECT,
        ]),
        // Extension methods: any token.
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Paths: arbitrary text, and paths made of the dialect's own words (which
/// reach deep into the parser) mixed with odd segments.
fn any_path() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        prop::sample::select(vec![
            "",
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
            "login",
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
            "255",
            "256",
            "+1",
            "-1",
            "..",
            ".",
            "%2F",
            "k1",
            "0123456789abcdef0123456789abcdef",
        ])
        .prop_map(str::to_string),
        "\\PC{0,20}",
        "[a-zA-Z0-9-]{1,130}",
    ];
    prop_oneof![
        "\\PC{0,200}",
        any::<String>(),
        (prop::collection::vec(word, 0..7), any::<bool>()).prop_map(|(segs, slash)| {
            let p = segs.join("/");
            if slash {
                format!("/{p}")
            } else {
                p
            }
        }),
    ]
}

fn key_name() -> impl Strategy<Value = String> {
    "[0-9a-zA-Z-]{1,127}"
}

fn version() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[0-9a-f]{32}")
}

fn any_route() -> impl Strategy<Value = Route> {
    let op = prop::sample::select(KeyOp::ALL.to_vec());
    prop_oneof![
        prop::sample::select(vec![
            Route::Login,
            Route::Logout,
            Route::Health,
            Route::Metrics,
            Route::Rng,
            Route::ListKeys,
            Route::RestoreKey,
            Route::ListDeleted,
            Route::Inventory,
            Route::InventoryBuckets,
            Route::CloneExport,
            Route::CloneImport,
            Route::CloneWithdraw,
        ]),
        key_name().prop_map(|name| Route::CreateKey { name }),
        key_name().prop_map(|name| Route::ImportKey { name }),
        (key_name(), version()).prop_map(|(name, version)| Route::GetKey { name, version }),
        key_name().prop_map(|name| Route::ListVersions { name }),
        (key_name(), version()).prop_map(|(name, version)| Route::UpdateKey { name, version }),
        key_name().prop_map(|name| Route::DeleteKey { name }),
        key_name().prop_map(|name| Route::BackupKey { name }),
        key_name().prop_map(|name| Route::RotateKey { name }),
        key_name().prop_map(|name| Route::GetDeleted { name }),
        key_name().prop_map(|name| Route::RecoverDeleted { name }),
        key_name().prop_map(|name| Route::PurgeDeleted { name }),
        (key_name(), version(), op).prop_map(|(name, version, op)| Route::Operation {
            name,
            version,
            op
        }),
        any::<u8>().prop_map(|bucket| Route::InventoryBucket { bucket }),
    ]
}

#[test]
fn route_parse_never_panics_and_is_canonical() {
    check(
        "Route::parse(arbitrary)",
        (any_method(), any_path()),
        |(m, p)| {
            if let Ok(r) = Route::parse(&m, &p) {
                prop_assert_eq!(&r.method(), &m, "{:?} {:?}", m, p);
                prop_assert_eq!(
                    Route::parse(&r.method(), &r.path()),
                    Ok(r.clone()),
                    "{:?}",
                    p
                );
            }
            Ok(())
        },
    );
}

#[test]
fn generated_routes_parse_back_from_their_paths() {
    check("Route round trip", any_route(), |r| {
        prop_assert_eq!(Route::parse(&r.method(), &r.path()), Ok(r.clone()));
        // The same path with the SDK's trailing slash where it means the
        // same thing, and any other method is refused, not misrouted.
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if m != r.method() {
                if let Ok(other) = Route::parse(&m, &r.path()) {
                    prop_assert_eq!(other.method(), m);
                    prop_assert_ne!(other, r.clone());
                }
            }
        }
        Ok(())
    });
}

/// Valid bodies of every request type, as JSON values.
fn valid_bodies() -> Vec<(&'static str, serde_json::Value)> {
    let d32 = B64(vec![7u8; 32]);
    let jwk = JsonWebKey {
        kty: Some(KeyType::Ec),
        crv: Some(Curve::P256),
        x: Some(B64(vec![1; 32])),
        y: Some(B64(vec![2; 32])),
        d: Some(B64(vec![3; 32])),
        ..JsonWebKey::default()
    };
    let v = |x: &dyn erased::Ser| x.value();
    vec![
        (
            "KeyCreateParameters",
            v(&KeyCreateParameters::ec(Curve::P256)),
        ),
        ("KeyCreateParameters", v(&KeyCreateParameters::rsa(2048))),
        (
            "KeyImportParameters",
            v(&KeyImportParameters {
                hsm: Some(true),
                key: jwk.clone(),
                ..KeyImportParameters::default()
            }),
        ),
        (
            "KeyUpdateParameters",
            v(&KeyUpdateParameters {
                key_ops: Some(vec![KeyOperation::Sign]),
                attributes: Some(KeyAttributes {
                    enabled: Some(false),
                    ..KeyAttributes::default()
                }),
                ..KeyUpdateParameters::default()
            }),
        ),
        (
            "KeySignParameters",
            v(&KeySignParameters {
                alg: SignatureAlgorithm::Es256,
                value: d32.clone(),
            }),
        ),
        (
            "KeyVerifyParameters",
            v(&KeyVerifyParameters {
                alg: SignatureAlgorithm::Rs256,
                digest: d32.clone(),
                value: B64(vec![9; 256]),
            }),
        ),
        (
            "KeyOperationsParameters",
            v(&KeyOperationsParameters {
                alg: EncryptionAlgorithm::A256Gcm,
                value: d32.clone(),
                iv: Some(B64(vec![1; 12])),
                aad: Some(B64(vec![2; 5])),
                tag: Some(B64(vec![3; 16])),
            }),
        ),
        (
            "KeyMacParameters",
            v(&KeyMacParameters {
                alg: MacAlgorithm::Hs256,
                value: d32.clone(),
            }),
        ),
        (
            "KeyVerifyMacParameters",
            v(&KeyVerifyMacParameters {
                alg: MacAlgorithm::Hs512,
                value: d32.clone(),
                mac: B64(vec![4; 64]),
            }),
        ),
        (
            "KeyDeriveParameters",
            v(&KeyDeriveParameters {
                alg: DeriveAlgorithm::Ecdh,
                target: "derived".into(),
                peer: Some(jwk),
                info: Some(d32.clone()),
                key_size: Some(256),
                key_ops: None,
                attributes: None,
                tags: None,
            }),
        ),
        (
            "KeyRestoreParameters",
            v(&KeyRestoreParameters { value: d32.clone() }),
        ),
        (
            "GetRandomBytesRequest",
            v(&GetRandomBytesRequest { count: 32 }),
        ),
        (
            "LoginRequest",
            v(&LoginRequest {
                role: Role::CryptoUser,
                password: "pw".into(),
            }),
        ),
        (
            "CloneExportRequest",
            v(&CloneExportRequest {
                name: "k".into(),
                version: None,
            }),
        ),
        (
            "WithdrawRequest",
            v(&WithdrawRequest {
                name: "k".into(),
                version: "0123456789abcdef0123456789abcdef".into(),
                request_id: "ab".repeat(32),
                stamp: 1,
            }),
        ),
        (
            "CloneBlob",
            v(&CloneBlob {
                format: "hsm-clone-v1".into(),
                domain: "00".repeat(8),
                name: "k".into(),
                generation: 1,
                digest: "ab".repeat(32),
                version: None,
                sealed: d32,
            }),
        ),
    ]
}

mod erased {
    /// A serializable value, object-safe.
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

/// Decodes `bytes` as the named type; Ok(true) when it decoded. A panic in
/// a Deserialize implementation fails the test.
fn decode_as(ty: &str, bytes: &[u8]) -> bool {
    fn d<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(b: &[u8]) -> bool {
        match serde_json::from_slice::<T>(b) {
            Ok(v) => {
                // Whatever decodes re-encodes and decodes to the same value.
                let again: T = serde_json::from_slice(&serde_json::to_vec(&v).unwrap())
                    .unwrap_or_else(|e| panic!("re-decoding {v:?}: {e}"));
                assert_eq!(again, v);
                true
            }
            Err(_) => false,
        }
    }
    match ty {
        "KeyCreateParameters" => d::<KeyCreateParameters>(bytes),
        "KeyImportParameters" => d::<KeyImportParameters>(bytes),
        "KeyUpdateParameters" => d::<KeyUpdateParameters>(bytes),
        "KeySignParameters" => d::<KeySignParameters>(bytes),
        "KeyVerifyParameters" => d::<KeyVerifyParameters>(bytes),
        "KeyOperationsParameters" => d::<KeyOperationsParameters>(bytes),
        "KeyMacParameters" => d::<KeyMacParameters>(bytes),
        "KeyVerifyMacParameters" => d::<KeyVerifyMacParameters>(bytes),
        "KeyDeriveParameters" => d::<KeyDeriveParameters>(bytes),
        "KeyRestoreParameters" => d::<KeyRestoreParameters>(bytes),
        "GetRandomBytesRequest" => d::<GetRandomBytesRequest>(bytes),
        "LoginRequest" => d::<LoginRequest>(bytes),
        "CloneExportRequest" => d::<CloneExportRequest>(bytes),
        "WithdrawRequest" => d::<WithdrawRequest>(bytes),
        "CloneBlob" => d::<CloneBlob>(bytes),
        other => panic!("unknown type {other}"),
    }
}

#[test]
fn valid_bodies_decode() {
    // The base of the mutations below: every one must decode as is.
    for (ty, v) in valid_bodies() {
        assert!(decode_as(ty, &serde_json::to_vec(&v).unwrap()), "{ty}: {v}");
    }
}

#[test]
fn bodies_decode_or_fail_on_arbitrary_bytes() {
    let types: Vec<&str> = valid_bodies().into_iter().map(|(t, _)| t).collect();
    check(
        "JSON bodies(arbitrary bytes)",
        (
            prop::sample::select(types),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..512),
                "\\PC{0,256}".prop_map(String::into_bytes),
            ],
        ),
        |(ty, bytes)| {
            decode_as(ty, &bytes);
            Ok(())
        },
    );
}

/// One byte-level mutation of a body.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    b"\"".to_vec(),
                    b"{".to_vec(),
                    b"}".to_vec(),
                    b"[".to_vec(),
                    b",".to_vec(),
                    b":".to_vec(),
                    b"\\u0000".to_vec(),
                    b"\\ud800".to_vec(),
                    b"1e999999".to_vec(),
                    b"-0".to_vec(),
                    b"null".to_vec(),
                    vec![0xff, 0xfe],
                    "é".as_bytes().to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    let len = body.len().max(1);
    match m {
        Mutation::Flip(i, b) => {
            if !body.is_empty() {
                let i = i % body.len();
                body[i] ^= b | 1;
            }
        }
        Mutation::Delete(i, n) => {
            let i = i % len;
            let end = (i + n).min(body.len());
            if i < end {
                body.drain(i..end);
            }
        }
        Mutation::Insert(i, b) => {
            let i = i % (body.len() + 1);
            body.splice(i..i, b.iter().copied());
        }
        Mutation::Truncate(i) => body.truncate(i % len),
        Mutation::Duplicate(i, n) => {
            let i = i % len;
            let end = (i + n).min(body.len());
            if i < end {
                let piece = body[i..end].to_vec();
                body.splice(i..i, piece);
            }
        }
    }
}

#[test]
fn mutated_valid_bodies_decode_or_fail() {
    let bodies = valid_bodies();
    let decoded = AtomicU64::new(0);
    check(
        "JSON bodies(byte mutations)",
        (0..bodies.len(), prop::collection::vec(mutation(), 1..6)),
        |(i, muts)| {
            let (ty, v) = &bodies[i];
            let mut b = serde_json::to_vec(v).unwrap();
            for m in &muts {
                apply(&mut b, m);
            }
            if decode_as(ty, &b) {
                decoded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    );
    println!(
        "abuse_parse byte mutations: {} still decoded",
        decoded.load(Ordering::Relaxed)
    );
}

/// A JSON value of any shape, including extreme numbers and deep nesting.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "\\PC{0,40}".prop_map(Value::String),
        "[A-Za-z0-9_-]{0,400}".prop_map(Value::String),
        prop::sample::select(vec![
            "RSA",
            "EC",
            "oct-HSM",
            "P-256",
            "ES256",
            "RS256",
            "A256GCM",
            "crypto-officer",
            "replication",
            "sign",
            "ECDH",
            "HS256",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn structurally_mutated_bodies_decode_or_fail() {
    let bodies = valid_bodies();
    let decoded = AtomicU64::new(0);
    check(
        "JSON bodies(field mutations)",
        (
            0..bodies.len(),
            any::<usize>(),
            json_value(),
            "[a-z_]{1,12}",
            0u8..4,
        ),
        |(i, pick, value, new_field, how)| {
            let (ty, v) = &bodies[i];
            let mut v = v.clone();
            let obj = v.as_object_mut().unwrap();
            let keys: Vec<String> = obj.keys().cloned().collect();
            let field = keys[pick % keys.len()].clone();
            match how {
                0 => {
                    obj.insert(field, value);
                }
                1 => {
                    obj.remove(&field);
                }
                2 => {
                    obj.insert(new_field, value);
                }
                _ => {
                    // The whole body replaced by another shape.
                    v = value;
                }
            }
            if decode_as(ty, &serde_json::to_vec(&v).unwrap()) {
                decoded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    );
    println!(
        "abuse_parse field mutations: {} still decoded",
        decoded.load(Ordering::Relaxed)
    );
}

#[test]
fn deeply_nested_bodies_are_refused_not_overflowing() {
    // serde_json's recursion limit (128) must turn this into an error, not
    // a stack overflow, for every body type.
    for depth in [100usize, 129, 10_000, 200_000] {
        let mut b = b"{\"kty\":".to_vec();
        b.extend(std::iter::repeat_n(b'[', depth));
        b.extend(std::iter::repeat_n(b']', depth));
        b.push(b'}');
        for (ty, _) in valid_bodies() {
            assert!(!decode_as(ty, &b), "{ty} depth {depth}");
        }
    }
    println!(
        "abuse_parse deep nesting: 4 depths x {} types refused",
        valid_bodies().len()
    );
}

#[test]
fn request_ids_and_stamps() {
    check(
        "request_digest",
        (
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                "[ -~]{1,256}".prop_map(String::into_bytes),
                // Printable, with one byte at an edge of the range.
                (
                    "[ -~]{0,256}",
                    prop::sample::select(vec![0x00u8, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff]),
                    any::<usize>(),
                )
                    .prop_map(|(s, b, i)| {
                        let mut v = s.into_bytes();
                        let i = i % (v.len() + 1);
                        v.insert(i, b);
                        v
                    }),
            ],
            prop::sample::select(vec!["create", "import", "rotate", ""]),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        |(raw, op, body)| {
            let ok =
                !raw.is_empty() && raw.len() <= 256 && raw.iter().all(|b| (0x20..0x7f).contains(b));
            match request::request_digest(&raw, op, &body) {
                Ok(d) => {
                    prop_assert!(ok, "accepted {:?}", raw);
                    prop_assert_eq!(d.len(), 64);
                    prop_assert!(d.bytes().all(|c| c.is_ascii_hexdigit()));
                    // Bound to the operation and the body.
                    let mut other = body.clone();
                    other.push(0);
                    prop_assert_ne!(
                        request::request_digest(&raw, op, &other).ok(),
                        Some(d.clone())
                    );
                    prop_assert_ne!(request::request_digest(&raw, "other", &body).ok(), Some(d));
                }
                Err(_) => prop_assert!(!ok, "refused {:?}", raw),
            }
            Ok(())
        },
    );
    check(
        "parse_stamp",
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..30),
            "[0-9]{0,25}".prop_map(String::into_bytes),
            any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        ],
        |raw| {
            let text = std::str::from_utf8(&raw).ok();
            let want = text
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            prop_assert_eq!(request::parse_stamp(&raw).ok(), want);
            Ok(())
        },
    );
}

#[test]
fn queries_and_base64_never_panic() {
    check(
        "ListQuery::parse + b64::decode",
        (prop::option::of("\\PC{0,100}"), "[A-Za-z0-9_=+/-]{0,100}"),
        |(q, b)| {
            if let Ok(lq) = ListQuery::parse(q.as_deref()) {
                if let Some(n) = lq.maxresults {
                    prop_assert!((1..=25).contains(&n));
                }
            }
            if let Ok(bytes) = b64::decode(&b) {
                // What decodes re-encodes to the same text, padding aside.
                prop_assert_eq!(b64::encode(&bytes), b.trim_end_matches('='));
            }
            Ok(())
        },
    );
}

//! Oversized and malformed requests over HTTP/1.1 (hand-written, on raw TLS
//! connections) and HTTP/2 (the typed client negotiates it), to a node and
//! through the proxy. `node_bad_input.rs` and `proxy_bad_input.rs` cover the
//! JSON-level codes over HTTP/2; this suite covers the transport: bodies
//! over the limit however they are framed, huge and many headers, long
//! URIs, broken framing (garbage request line, conflicting lengths), odd
//! content types and methods, invalid UTF-8 and trailing garbage — each
//! with its precise answer (a JSON error with its code, or hyper's own
//! status without a body where the HTTP framing itself is refused), and
//! nothing changes on any member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;

use abuse::{connect, http1, inventories, request1, tls_config, well_formed, RawError};
use bytes::Bytes;
use hsm_api::{Client, Curve, ErrorCode, KeyCreateParameters, Role};
use hsm_tests::{ProxyOptions, TestNode, TestProxy};
use http::{HeaderName, HeaderValue, Method};
use std::sync::Arc;
use std::time::Duration;

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// A JSON error body with this code (and its status).
    Code(ErrorCode),
    /// HTTP framing refused by the server's HTTP layer: this status, no
    /// JSON body, the connection closed afterwards.
    Http(u16),
    /// A success.
    Ok,
}

struct Target {
    name: &'static str,
    addr: String,
    /// Path prefix of the partition: `/partitions/p1` or empty.
    base: &'static str,
    tls: Arc<rustls::ClientConfig>,
    token: String,
    /// The typed client (HTTP/2), logged in as the crypto officer.
    client: Client,
}

/// Raw HTTP/1.1 requests: (what, request bytes, want).
fn h1_cases(t: &Target) -> Vec<(String, Vec<u8>, Want)> {
    let b = t.base;
    let auth = format!("Bearer {}", t.token);
    let a = ("authorization", auth.as_str());
    let json = ("content-type", "application/json");
    let d32 = hsm_api::b64::encode(&[1u8; 32]);
    let sign = format!(r#"{{"alg":"ES256","value":"{d32}"}}"#);
    let big = vec![b'a'; 300 * 1024];
    let mut v: Vec<(String, Vec<u8>, Want)> = Vec::new();
    let mut case = |what: &str, req: Vec<u8>, want: Want| v.push((what.to_string(), req, want));

    case(
        "control: a good sign",
        request1(
            "POST",
            &format!("{b}/keys/ec//sign"),
            &[a, json],
            sign.as_bytes(),
        ),
        Want::Ok,
    );
    case(
        "body over the limit, content-length",
        request1("POST", &format!("{b}/keys/ec//sign"), &[a, json], &big),
        Want::Code(ErrorCode::BodyTooLarge),
    );
    {
        // Chunked: the size is known only as it arrives.
        let mut r = format!(
            "POST {b}/keys/ec//sign HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for piece in big.chunks(16 * 1024) {
            r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            r.extend_from_slice(piece);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        case(
            "body over the limit, chunked",
            r,
            Want::Code(ErrorCode::BodyTooLarge),
        );
    }
    {
        // Declares 10 MiB, sends 300 KiB of it.
        let mut r = format!(
            "POST {b}/keys/ec//sign HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {auth}\r\ncontent-length: 10485760\r\n\r\n"
        )
        .into_bytes();
        r.extend_from_slice(&big);
        case(
            "declared 10 MiB, 300 KiB sent",
            r,
            Want::Code(ErrorCode::BodyTooLarge),
        );
    }
    let huge = "x".repeat(20 * 1024);
    case(
        "one 20 KiB header",
        request1("GET", &format!("{b}/keys/ec"), &[a, ("x-huge", &huge)], b""),
        Want::Http(431),
    );
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many_ref: Vec<(&str, &str)> = many
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([a])
        .collect();
    case(
        "120 headers",
        request1("GET", &format!("{b}/keys/ec"), &many_ref, b""),
        Want::Http(431),
    );
    let fine = "y".repeat(8 * 1024);
    case(
        "control: an 8 KiB header",
        request1("GET", &format!("{b}/keys/ec"), &[a, ("x-fine", &fine)], b""),
        Want::Ok,
    );
    case(
        "20 KiB URI",
        request1(
            "GET",
            &format!("{b}/keys/{}", "k".repeat(20 * 1024)),
            &[a],
            b"",
        ),
        Want::Http(431),
    );
    case(
        "2 KiB key name",
        request1(
            "POST",
            &format!("{b}/keys/{}/create", "k".repeat(2048)),
            &[a, json],
            br#"{"kty":"EC"}"#,
        ),
        Want::Code(ErrorCode::InvalidKeyName),
    );
    case(
        "truncated JSON",
        request1(
            "POST",
            &format!("{b}/keys/k/create"),
            &[a, json],
            b"{\"kty\":",
        ),
        Want::Code(ErrorCode::InvalidJson),
    );
    case(
        "invalid UTF-8",
        request1(
            "POST",
            &format!("{b}/keys/k/create"),
            &[a, json],
            b"{\"kty\":\"E\xff\xfeC\"}",
        ),
        Want::Code(ErrorCode::InvalidJson),
    );
    case(
        "trailing garbage after the JSON",
        request1(
            "POST",
            &format!("{b}/keys/k/create"),
            &[a, json],
            br#"{"kty":"EC","crv":"P-256"} x"#,
        ),
        Want::Code(ErrorCode::InvalidJson),
    );
    case(
        "duplicate field",
        request1(
            "POST",
            &format!("{b}/keys/k/create"),
            &[a, json],
            br#"{"kty":"EC","kty":"RSA"}"#,
        ),
        Want::Code(ErrorCode::InvalidJson),
    );
    case(
        "NUL bytes",
        request1(
            "POST",
            &format!("{b}/keys/k/create"),
            &[a, json],
            b"\0\0\0\0",
        ),
        Want::Code(ErrorCode::InvalidJson),
    );
    case(
        "form body as x-www-form-urlencoded",
        request1(
            "POST",
            &format!("{b}/keys/k/create"),
            &[a, ("content-type", "application/x-www-form-urlencoded")],
            b"kty=EC&crv=P-256",
        ),
        Want::Code(ErrorCode::InvalidJson),
    );
    // The content type is not checked: a JSON body is read as JSON under any.
    case(
        "JSON body as text/plain",
        request1(
            "POST",
            &format!("{b}/keys/ec//sign"),
            &[a, ("content-type", "text/plain")],
            sign.as_bytes(),
        ),
        Want::Ok,
    );
    case(
        "JSON body as multipart/form-data",
        request1(
            "POST",
            &format!("{b}/keys/ec//sign"),
            &[a, ("content-type", "multipart/form-data; boundary=x")],
            sign.as_bytes(),
        ),
        Want::Ok,
    );
    case(
        "no body on create",
        request1("POST", &format!("{b}/keys/k/create"), &[a], b""),
        Want::Code(ErrorCode::InvalidJson),
    );
    case(
        "unknown method",
        request1("BREW", &format!("{b}/keys"), &[a], b""),
        Want::Code(ErrorCode::MethodNotAllowed),
    );
    case(
        "dot segments",
        request1("GET", &format!("{b}/keys/../inventory"), &[a], b""),
        Want::Code(ErrorCode::InvalidKeyName),
    );
    case(
        "percent-encoded slash",
        request1("GET", &format!("{b}/keys/a%2F..%2Finventory"), &[a], b""),
        Want::Code(ErrorCode::InvalidKeyName),
    );
    case(
        "a token that is not Bearer",
        request1(
            "GET",
            &format!("{b}/keys"),
            &[("authorization", "Basic Zm9vOmJhcg==")],
            b"",
        ),
        Want::Code(ErrorCode::Unauthorized),
    );
    case(
        "garbage request line",
        b"\x16\x03\x01 nonsense\r\n\r\n".to_vec(),
        Want::Http(400),
    );
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): an empty
    // chunked body, no token.
    case(
        "content-length and transfer-encoding",
        format!("POST {b}/keys/ec//sign HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(),
        Want::Code(ErrorCode::Unauthorized),
    );
    case(
        "two different content-lengths",
        format!("POST {b}/keys/ec//sign HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!").into_bytes(),
        Want::Http(400),
    );
    case(
        "a space in the header name",
        format!("GET {b}/keys HTTP/1.1\r\nhost: x\r\nbad header: 1\r\n\r\n").into_bytes(),
        Want::Http(400),
    );
    case(
        "HTTP/1.0",
        format!("GET {b}/keys/ec HTTP/1.0\r\nhost: 127.0.0.1\r\nauthorization: {auth}\r\n\r\n")
            .into_bytes(),
        Want::Ok,
    );
    case(
        "HEAD",
        request1("HEAD", &format!("{b}/keys"), &[a], b""),
        Want::Http(405),
    );
    case(
        "HTTP/2.0 in an HTTP/1 request line",
        format!("GET {b}/keys HTTP/2.0\r\nhost: x\r\n\r\n").into_bytes(),
        Want::Http(400),
    );
    v
}

async fn run_h1(t: &Target, what: &str, req: &[u8], want: Want) -> Result<(), String> {
    let mut s = connect(&t.addr, t.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let r = match http1(&mut s, req, Duration::from_secs(20)).await {
        Ok(r) => r,
        Err(RawError::Closed(m)) => return Err(format!("closed without an answer: {m}")),
        Err(e) => return Err(format!("{e:?}")),
    };
    match want {
        Want::Http(status) => {
            if r.status != status {
                return Err(format!(
                    "got {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            if serde_json::from_slice::<serde_json::Value>(&r.body).is_ok() {
                return Err("a JSON body where the HTTP layer refuses".into());
            }
        }
        Want::Code(code) => {
            let got = well_formed(r.status, &r.body)?;
            if got != Some(code) {
                return Err(format!(
                    "got {} {:?}: {}",
                    r.status,
                    got,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
        Want::Ok => {
            if well_formed(r.status, &r.body)?.is_some() {
                return Err(format!(
                    "got {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    let _ = what;
    Ok(())
}

/// An HTTP/2 case: (what, method, path, headers, body, want).
type H2Case<'a> = (
    &'a str,
    Method,
    &'a str,
    Vec<(HeaderName, HeaderValue)>,
    Vec<u8>,
    Want,
);

/// HTTP/2 cases through the typed client.
async fn run_h2(t: &Target) -> (usize, Vec<String>) {
    let d32 = hsm_api::b64::encode(&[1u8; 32]);
    let sign = format!(r#"{{"alg":"ES256","value":"{d32}"}}"#);
    let hv = |s: &str| HeaderValue::from_str(s).unwrap();
    let cases: Vec<H2Case> = vec![
        (
            "control",
            Method::POST,
            "/keys/ec//sign",
            vec![],
            sign.clone().into_bytes(),
            Want::Ok,
        ),
        (
            "body over the limit",
            Method::POST,
            "/keys/ec//sign",
            vec![],
            vec![b'a'; 300 * 1024],
            Want::Code(ErrorCode::BodyTooLarge),
        ),
        (
            "one 20 KiB header",
            Method::GET,
            "/keys/ec",
            vec![(
                HeaderName::from_static("x-huge"),
                hv(&"x".repeat(20 * 1024)),
            )],
            vec![],
            Want::Http(431),
        ),
        (
            "200 headers of 100 bytes",
            Method::GET,
            "/keys/ec",
            (0..200)
                .map(|i| {
                    (
                        HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                        hv(&"v".repeat(100)),
                    )
                })
                .collect(),
            vec![],
            Want::Http(431),
        ),
        (
            "control: an 8 KiB header",
            Method::GET,
            "/keys/ec",
            vec![(HeaderName::from_static("x-fine"), hv(&"y".repeat(8 * 1024)))],
            vec![],
            Want::Ok,
        ),
        (
            "trailing garbage",
            Method::POST,
            "/keys/k/create",
            vec![],
            br#"{"kty":"EC"} ]"#.to_vec(),
            Want::Code(ErrorCode::InvalidJson),
        ),
        (
            "invalid UTF-8",
            Method::POST,
            "/keys/k/create",
            vec![],
            b"{\"kty\":\"\xc3\x28\"}".to_vec(),
            Want::Code(ErrorCode::InvalidJson),
        ),
        (
            "unknown method",
            Method::from_bytes(b"BREW").unwrap(),
            "/keys",
            vec![],
            vec![],
            Want::Code(ErrorCode::MethodNotAllowed),
        ),
        (
            "text/plain",
            Method::POST,
            "/keys/ec//sign",
            vec![(http::header::CONTENT_TYPE, hv("text/plain"))],
            sign.clone().into_bytes(),
            Want::Ok,
        ),
        // No route answers HEAD; the 405 must come without a body (a body
        // on a HEAD answer is an HTTP/2 protocol error for the client).
        (
            "HEAD",
            Method::HEAD,
            "/keys",
            vec![],
            vec![],
            Want::Http(405),
        ),
    ];
    let total = cases.len();
    let mut failures = Vec::new();
    for (what, m, path, headers, body, want) in cases {
        // No content type unless the case sets one.
        let r = t
            .client
            .raw_with(m, path, None, &headers, Bytes::from(body))
            .await;
        let outcome = match (r, want) {
            (Ok((st, _, b)), Want::Http(s)) => {
                if st.as_u16() == s && serde_json::from_slice::<serde_json::Value>(&b).is_err() {
                    Ok(())
                } else {
                    Err(format!("got {st} {}", String::from_utf8_lossy(&b)))
                }
            }
            (Err(e), Want::Http(_)) => Err(format!("no answer: {e}")),
            (Ok((st, _, b)), Want::Code(c)) => match well_formed(st.as_u16(), &b) {
                Ok(Some(got)) if got == c => Ok(()),
                other => Err(format!("got {st} {other:?}")),
            },
            (Ok((st, _, b)), Want::Ok) => match well_formed(st.as_u16(), &b) {
                Ok(None) => Ok(()),
                other => Err(format!("got {st} {other:?}")),
            },
            (Err(e), _) => Err(format!("no answer: {e}")),
        };
        if let Err(e) = outcome {
            failures.push(format!("{} HTTP/2 {what}: {e}", t.name));
        }
    }
    (total, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_get_precise_answers_and_change_nothing() {
    let nodes = TestNode::group(2).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let pco = proxy.login(Role::CryptoOfficer).await.unwrap();
    pco.create_key("ec", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let before = inventories(&nodes).await;
    let nco = nodes[0].officer().await.unwrap();
    let app = nodes[0].pki.cert("app");
    let h1: &[&[u8]] = &[b"http/1.1"];
    let targets = [
        Target {
            name: "node",
            addr: nodes[0].addr.clone(),
            base: "/partitions/p1",
            tls: tls_config(&nodes[0].pki.ca(), Some((&app.0, &app.1)), h1),
            token: nco.token().unwrap(),
            client: nco,
        },
        Target {
            name: "proxy",
            addr: proxy.url.trim_start_matches("https://").to_string(),
            base: "",
            tls: tls_config(&proxy.ca, None, h1),
            token: pco.token().unwrap(),
            client: pco,
        },
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for t in &targets {
        for (what, req, want) in h1_cases(t) {
            n += 1;
            if let Err(e) = run_h1(t, &what, &req, want).await {
                failures.push(format!("{} HTTP/1.1 {what}: want {want:?}, {e}", t.name));
            }
        }
        let (total, f) = run_h2(t).await;
        n += total;
        failures.extend(f);
    }
    // Proxy only: a request naming no host, and the member protocol.
    let proxy_t = &targets[1];
    let no_host = format!(
        "GET /keys HTTP/1.1\r\nauthorization: Bearer {}\r\n\r\n",
        proxy_t.token
    );
    let more = [
        (
            "no Host header",
            no_host.into_bytes(),
            Want::Code(ErrorCode::BadParameter),
        ),
        (
            "member protocol: withdraw",
            request1(
                "POST",
                "/clone/withdraw",
                &[("authorization", &format!("Bearer {}", proxy_t.token))],
                br#"{"name":"ec","version":"0123456789abcdef0123456789abcdef","request_id":"00"}"#,
            ),
            Want::Code(ErrorCode::NotFound),
        ),
        (
            "member protocol: import",
            request1(
                "POST",
                "/clone/import",
                &[("authorization", &format!("Bearer {}", proxy_t.token))],
                b"{}",
            ),
            Want::Code(ErrorCode::NotFound),
        ),
    ];
    for (what, req, want) in more {
        n += 1;
        if let Err(e) = run_h1(proxy_t, what, &req, want).await {
            failures.push(format!("proxy HTTP/1.1 {what}: want {want:?}, {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        inventories(&nodes).await,
        before,
        "a refused request changed a member"
    );
    for node in &nodes {
        assert!(abuse::alive(node.pid().unwrap()));
    }
    assert!(abuse::alive(abuse::proxy_pid(&proxy)));
    println!("abuse_bad_input: {n} cases (HTTP/1.1 and HTTP/2, node and proxy), 0 failures, members unchanged");
}

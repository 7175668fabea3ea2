//! Who may use the operations surface of the metrics listener.
//!
//! Decides: which calls need the operator token (`metrics.admin_token_file`).
//! Every `POST /admin/...` does; `/status` and `/status.json` do unless
//! `metrics.status_open`; `/metrics`, `/ready` and `/live` never do, for
//! probes and scraping. It also decides how the token is checked (a
//! constant-time comparison of SHA-256 digests; the token itself is not
//! kept) and which requests are refused as cross-site before any token is
//! looked at:
//! - an `/admin` request with an `Origin` header: a browser sent it from a
//!   page;
//! - one whose `Content-Type` is not `application/json`: a page can send
//!   a form or `text/plain` without a CORS preflight, but not JSON.
//!
//! Never: what an admin action does (`status`), or how it is logged and
//! counted (`status` too, through `metrics::admin`).

use http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::RwLock;

/// The operator token's digest and whether the status page is open.
pub struct Access {
    token: RwLock<Option<[u8; 32]>>,
    status_open: bool,
}

/// Why a request was refused: its status and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The metric's `outcome` label.
    pub outcome: &'static str,
    pub message: String,
}

/// Who a request that passed is, for the log: `token:<first 8 hex digits of
/// the token's SHA-256>` (which token, without giving it away), or `open`
/// for the status page when it needs none.
pub type Operator = String;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal without an early exit, so the time taken tells nothing.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refusal(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        outcome,
        message: message.into(),
    }
}

impl Access {
    /// `token`: the operator token (`None`: no token configured).
    pub fn new(token: Option<&str>, status_open: bool) -> Access {
        Access {
            token: RwLock::new(token.map(digest)),
            status_open,
        }
    }

    /// A new token read by a reload (`None`: the configuration no longer
    /// names one, and `/admin` closes).
    pub fn set_token(&self, token: Option<&str>) {
        if let Ok(mut t) = self.token.write() {
            *t = token.map(digest);
        }
    }

    /// Whether `/status` and `/status.json` need no token.
    pub fn status_open(&self) -> bool {
        self.status_open
    }

    /// The check of an `/admin` request: not cross-site, then the token.
    pub fn admin(&self, headers: &HeaderMap) -> Result<Operator, Refusal> {
        if headers.contains_key(header::ORIGIN) {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "cross_site",
                "an /admin request from a web page (it has an Origin header) is refused",
            ));
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "cross_site",
                "an /admin request needs `Content-Type: application/json`",
            ));
        }
        self.bearer(headers)
    }

    /// The check of a status page request.
    pub fn status(&self, headers: &HeaderMap) -> Result<Operator, Refusal> {
        if self.status_open {
            return Ok("open".into());
        }
        self.bearer(headers)
    }

    fn bearer(&self, headers: &HeaderMap) -> Result<Operator, Refusal> {
        let want = self.token.read().ok().and_then(|t| *t).ok_or_else(|| {
            refusal(
                StatusCode::FORBIDDEN,
                "no_token_configured",
                "no operator token is configured (metrics.admin_token_file): this call is closed",
            )
        })?;
        let given = hsm_server::bearer_token(headers).ok_or_else(|| {
            refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the operator token: `Authorization: Bearer <token>` (metrics.admin_token_file)",
            )
        })?;
        let got = digest(given);
        if !same(&got, &want) {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the operator token is wrong",
            ));
        }
        Ok(format!("token:{}", hex::encode(&got[..4])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::WARNING),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        h
    }

    fn outcome(r: Result<Operator, Refusal>) -> (u16, &'static str) {
        match r {
            Ok(_) => (200, "ok"),
            Err(r) => (r.status.as_u16(), r.outcome),
        }
    }

    #[test]
    fn admin_needs_json_no_origin_and_the_right_token() {
        let a = Access::new(Some(TOKEN), false);
        let bearer = format!("Bearer {TOKEN}");
        let ok = [
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
        ];
        assert_eq!(outcome(a.admin(&headers(&ok))), (200, "ok"));
        let with_charset = [
            ("content-type", "Application/JSON; charset=utf-8"),
            ("authorization", bearer.as_str()),
        ];
        assert_eq!(outcome(a.admin(&headers(&with_charset))), (200, "ok"));
        // Cross-site shapes, even with the right token.
        let from_page = [
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
            ("origin", "https://evil.example"),
        ];
        assert_eq!(outcome(a.admin(&headers(&from_page))), (403, "cross_site"));
        for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
            let form = [("content-type", ct), ("authorization", bearer.as_str())];
            assert_eq!(outcome(a.admin(&headers(&form))), (415, "cross_site"));
        }
        // No token, a wrong one, another scheme.
        let json = [("content-type", "application/json")];
        assert_eq!(outcome(a.admin(&headers(&json))), (401, "unauthorized"));
        let wrong = [
            ("content-type", "application/json"),
            ("authorization", "Bearer 0123456789abcdef0123456789abcdeX"),
        ];
        assert_eq!(outcome(a.admin(&headers(&wrong))), (401, "unauthorized"));
        let basic = [
            ("content-type", "application/json"),
            ("authorization", "Basic b3A6cGFzcw=="),
        ];
        assert_eq!(outcome(a.admin(&headers(&basic))), (401, "unauthorized"));
    }

    #[test]
    fn without_a_token_admin_is_closed_and_a_reload_opens_or_closes_it() {
        let a = Access::new(None, false);
        let bearer = format!("Bearer {TOKEN}");
        let h = headers(&[
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
        ]);
        assert_eq!(outcome(a.admin(&h)), (403, "no_token_configured"));
        assert_eq!(outcome(a.status(&h)), (403, "no_token_configured"));
        a.set_token(Some(TOKEN));
        assert_eq!(outcome(a.admin(&h)), (200, "ok"));
        a.set_token(Some("another-token-of-thirty-two-chars"));
        assert_eq!(outcome(a.admin(&h)), (401, "unauthorized"));
        a.set_token(None);
        assert_eq!(outcome(a.admin(&h)), (403, "no_token_configured"));
    }

    #[test]
    fn the_status_page_needs_the_token_unless_open() {
        let closed = Access::new(Some(TOKEN), false);
        assert_eq!(
            outcome(closed.status(&HeaderMap::new())),
            (401, "unauthorized")
        );
        let bearer = format!("Bearer {TOKEN}");
        let h = headers(&[("authorization", bearer.as_str())]);
        assert_eq!(outcome(closed.status(&h)), (200, "ok"));
        let open = Access::new(Some(TOKEN), true);
        assert_eq!(outcome(open.status(&HeaderMap::new())), (200, "ok"));
        // Open status opens nothing else.
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(outcome(open.admin(&json)), (401, "unauthorized"));
    }

    #[test]
    fn the_operator_is_named_without_the_token() {
        let a = Access::new(Some(TOKEN), false);
        let bearer = format!("Bearer {TOKEN}");
        let who = a
            .status(&headers(&[("authorization", bearer.as_str())]))
            .unwrap_or_default();
        assert!(who.starts_with("token:") && who.len() == 14, "{who}");
        assert!(!who.contains(TOKEN));
    }
}

//! Request ids: how a key creation that is retried (by the proxy on another
//! member, or by the application's SDK) never makes two keys.
//!
//! Decides: the headers (`x-ms-client-request-id`, which the Key Vault SDKs
//! send on every request and keep across their own retries; and
//! `x-hsm-request-stamp`, which the proxy sets on every attempt), how a
//! request id becomes the new version's id (the same on every member, so a
//! retry lands on the same version wherever it runs), and which of two
//! copies of that version wins when two attempts both ran: the one stamped
//! by the later attempt. The proxy acknowledges only its last attempt, so
//! the acknowledged copy always wins. The node's store and import rule apply
//! this; the proxy stamps.

use serde::{Deserialize, Serialize};

/// The header carrying the application's request id.
pub const REQUEST_ID_HEADER: &str = "x-ms-client-request-id";
/// The header carrying the attempt's stamp (microseconds, from the proxy's
/// clock, increasing across attempts of one proxy process).
pub const REQUEST_STAMP_HEADER: &str = "x-hsm-request-stamp";
/// Set (`true`) on a node's answer that returned a version an earlier
/// attempt of the request made, instead of making one.
pub const REPLAYED_HEADER: &str = "x-hsm-replayed";
/// Longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// The request that made a key version, kept with the version and cloned
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStamp {
    /// SHA-256 (hex) of the application's request id.
    pub id: String,
    /// The stamp of the latest attempt that made or confirmed the version.
    pub stamp: u64,
}

/// Why a request id header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("x-ms-client-request-id must be 1 to 256 printable ASCII characters")]
    BadId,
    #[error("x-hsm-request-stamp must be a decimal number of microseconds")]
    BadStamp,
}

/// The digest under which a request is stored (hex SHA-256): of the
/// application's request id, bound to the operation (`Route::label`) and
/// the request body, so that an id reused for another request (other
/// parameters, other key material) names another version instead of
/// answering the first one. An error when the header is empty, too long
/// or not printable ASCII.
pub fn request_digest(raw: &[u8], op: &str, body: &[u8]) -> Result<String, RequestIdError> {
    use sha2::{Digest, Sha256};
    if raw.is_empty()
        || raw.len() > MAX_REQUEST_ID_LEN
        || !raw.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return Err(RequestIdError::BadId);
    }
    let mut h = Sha256::new();
    h.update(b"hsm-ha request\0");
    h.update(raw);
    h.update([0]);
    h.update(op.as_bytes());
    h.update([0]);
    h.update(Sha256::digest(body));
    Ok(hex::encode(h.finalize()))
}

/// Parses a stamp header.
pub fn parse_stamp(raw: &[u8]) -> Result<u64, RequestIdError> {
    std::str::from_utf8(raw)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(RequestIdError::BadStamp)
}

/// The version id a request makes for a key name: 32 hex characters,
/// the same on every member.
pub fn version_for(name: &str, id_digest: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"hsm-ha version\0");
    h.update(name.as_bytes());
    h.update([0]);
    h.update(id_digest.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Microseconds since the Unix epoch, strictly increasing within this
/// process (a clock step backwards does not reorder stamps).
pub fn next_stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_hashed() {
        assert_eq!(
            request_digest(b"", "create", b""),
            Err(RequestIdError::BadId)
        );
        assert_eq!(
            request_digest(&[b'a'; 257], "create", b""),
            Err(RequestIdError::BadId)
        );
        assert_eq!(
            request_digest(b"a\nb", "create", b""),
            Err(RequestIdError::BadId)
        );
        let id = b"5b1d6c1e-0000-4000-8000-000000000001";
        let d = request_digest(id, "create", b"{}").unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(d, request_digest(id, "create", b"{}").unwrap());
        assert_ne!(d, request_digest(b"other", "create", b"{}").unwrap());
        assert_ne!(d, request_digest(id, "import", b"{}").unwrap());
        assert_ne!(d, request_digest(id, "create", b"{ }").unwrap());
    }

    #[test]
    fn versions_depend_on_name_and_id() {
        let v = version_for("k", "ab");
        assert!(crate::is_valid_version(&v));
        assert_eq!(v, version_for("k", "ab"));
        assert_ne!(v, version_for("k2", "ab"));
        assert_ne!(v, version_for("k", "ac"));
    }

    #[test]
    fn stamps_increase() {
        let a = next_stamp();
        let b = next_stamp();
        assert!(b > a);
        assert_eq!(parse_stamp(b"123"), Ok(123));
        assert_eq!(parse_stamp(b"-1"), Err(RequestIdError::BadStamp));
        assert_eq!(parse_stamp(b""), Err(RequestIdError::BadStamp));
    }
}

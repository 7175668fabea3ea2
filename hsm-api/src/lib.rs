//! hsm-api: the wire types of the Key Vault keys dialect that hsm-ha speaks,
//! and a typed async client for it.
//!
//! Both servers (`hsm-node`, `hsm-proxy`) and every test use these types, so
//! the dialect is written down once. This crate has no server code.
#![forbid(unsafe_code)]

pub mod alg;
pub mod b64;
pub mod client;
pub mod error;
pub mod request;
pub mod route;
pub mod types;

pub use alg::*;
pub use b64::B64;
pub use client::{Client, ClientConfig, ClientError};
pub use error::ErrorCode;
pub use request::{RequestStamp, REPLAYED_HEADER, REQUEST_ID_HEADER, REQUEST_STAMP_HEADER};
pub use route::{KeyOp, ListQuery, Route, RouteError};
pub use types::*;

/// Key names: 1 to 127 characters of `0-9`, `a-z`, `A-Z` and `-`, as in Key Vault.
pub fn is_valid_key_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Versions are 32 lowercase hex characters.
pub fn is_valid_version(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

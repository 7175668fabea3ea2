//! hsm-pkcs11: a PKCS#11 (Cryptoki 2.40) module that presents the proxy's
//! virtual partition as one slot with one token, so that applications
//! written for an HSM (OpenSSL's engine, Java's SunPKCS11, pkcs11-tool,
//! GnuTLS) use the HA group without a change.
//!
//! The parts: `config` (where the proxy is), `backend` (the link to it),
//! `objects` (keys as Cryptoki objects), `mechanism` (mechanisms and how
//! they map onto the proxy's algorithms), `token` (sessions, login and the
//! operations, in safe Rust) and `ffi` (the C entry points: the only place
//! with `unsafe`). Errors are one enum, turned into `CK_RV` once
//! (`error`). `docs/PKCS11.md` is the operator's guide.

pub mod backend;
pub mod config;
pub mod error;
pub mod ffi;
pub mod mechanism;
pub mod objects;
pub mod token;

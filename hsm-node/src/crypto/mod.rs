//! Key material and the cryptographic operations on it (aws-lc-rs).
//!
//! Decides: which key types, sizes and algorithms exist and how they fit
//! together, how private material is serialised for storage, how a JWK is
//! imported and what public JWK a key shows. Never: storage, encryption at
//! rest, authorisation, key_ops/enabled/exp checks (the caller does those).

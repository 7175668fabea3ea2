//! Key material and the cryptographic operations on it (aws-lc-rs).
//!
//! Decides: which key types, sizes and algorithms exist and how they fit
//! together, how private material is serialised for storage, how a JWK is
//! imported and what public JWK a key shows. Never: storage, encryption at
//! rest, authorisation, key_ops/enabled/exp checks (the caller does those).
//!
//! The pieces:
//! - [`KeySpec`]: what to generate, validated from a create request.
//! - [`KeyMaterial`]: the key as the node keeps it (private parts zeroized
//!   on drop), its storage form ([`KeyMaterial::to_bytes`]) and its public JWK.
//! - [`LoadedKey`]: a key parsed once for repeated operations.
//! - [`seal`] / [`open`], [`kbkdf`], [`random_bytes`]: helpers over raw bytes.
//!
//! Nothing here prints or formats key bytes: `Debug` shows only the key's
//! description, and error messages name algorithms, curves and lengths.

mod error;
mod jwk;
mod kw;
mod loaded;
mod material;
mod spec;
mod sym;
mod transfer;

#[cfg(test)]
mod tests;

pub use error::CryptoError;
pub use loaded::{Encrypted, LoadedKey};
pub use material::KeyMaterial;
pub use spec::KeySpec;
pub use sym::{kbkdf, open, random_bytes, seal, KBKDF_MAX_OUTPUT};
pub use transfer::{Payload, WrapKind};

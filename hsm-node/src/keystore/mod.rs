//! The key-store boundary: where a key version's material lives and which
//! code performs its operations.
//!
//! Two stores:
//! - **software**: the material sealed in the node's own database under the
//!   partition's key (`partition`, `crypto`), unsealed into memory for use;
//! - **token** (`token`): the material inside a PKCS#11 token (a Luna,
//!   CloudHSM or nShield partition, SoftHSM2 in tests), created there as a
//!   sensitive token object and used only through the token's own functions;
//!   the node keeps the object's `CKA_ID` and never the key bytes.
//!
//! Decides: nothing about who may call what or about metadata; only how a
//! token is opened, logged in to, called and recovered (`token`) and what a
//! token key is made of (`token::keys`).

pub mod token;

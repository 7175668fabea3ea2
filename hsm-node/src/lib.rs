//! hsm-node: a software network HSM. See the README for how to run one.
#![forbid(unsafe_code)]

pub mod crypto;

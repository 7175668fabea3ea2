//! hsm-proxy: the hsm-ha sidecar. One virtual HSM partition over up to 16
//! members. This crate is being built up module by module (issue 4); what
//! exists so far:
//!
//! | module | decides |
//! |---|---|
//! | `balance` | which candidate member serves the next request |
#![forbid(unsafe_code)]

pub mod balance;

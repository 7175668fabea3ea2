//! hsm-node: a software network HSM that behaves like one partitioned
//! appliance. See the README for how to run one.
//!
//! | module | decides |
//! |---|---|
//! | `layout` | the node directory and its settings file |
//! | `pki` | the development CA and certificates |
//! | `offline` | initialising a node, managing partitions offline |
//! | `store` | durable state in redb, one transaction per change |
//! | `crypto` | key material and cryptographic operations |
//! | `domain` | the cloning domain and keys derived from it |
//! | `partition` | a partition's secrets in memory, sealing key material |
//! | `replication` | clone blobs and the rule that decides which state wins |
//! | `auth` | passwords, lockout, tokens, role permissions |
//! | `service` | request handling in the Key Vault dialect |
//! | `server` | TLS, HTTP, limits, shutdown |
//! | `metrics` | every metric's name and meaning |
//! | `zeroization` | destroying the node's secrets, the zeroized state |
//! | `audit` | the hash-chained audit log, its verification, syslog forwarding |
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod clock;
pub mod crypto;
pub mod domain;
pub mod layout;
pub mod metrics;
pub mod offline;
pub mod partition;
pub mod pki;
pub mod replication;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod zeroization;

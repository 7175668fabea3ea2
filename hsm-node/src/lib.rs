//! hsm-node: a software network HSM that behaves like one partitioned
//! appliance. See the README for how to run one.
//!
//! Dependencies point one way: `clock`, `crypto`, `pki`, `auth`, `metrics`
//! < `audit`, `store`, `domain` < `layout`, `partition` < `keystore` <
//! `zeroization`, `replication`, `tls` < `service` < `server` < `offline`.
//! A module uses only modules left of its `<`; the binary (`main.rs`) sits
//! on top. `tests/layout.rs` fails on a cycle, or on a use this order does
//! not allow.
//!
//! | module | decides |
//! |---|---|
//! | `clock` | wall-clock time and the stamps of the hybrid logical clock |
//! | `crypto` | key material and cryptographic operations |
//! | `pki` | the development CA and certificates |
//! | `auth` | passwords, lockout, tokens, role permissions |
//! | `metrics` | every metric's name and meaning |
//! | `audit` | the hash-chained audit log, its verification, syslog forwarding |
//! | `store` | durable state in redb, one transaction per change |
//! | `domain` | the cloning domain and keys derived from it |
//! | `layout` | the node directory and its settings file |
//! | `partition` | a partition's secrets in memory, sealing key material |
//! | `keystore` | where key material lives: sealed in the store, or in a PKCS#11 token |
//! | `zeroization` | destroying the node's secrets, the zeroized state |
//! | `replication` | clone blobs, the rule that decides which state wins, and backups (`backup`) |
//! | `tls` | the TLS server configuration and which TLS files are usable |
//! | `service` | the running node's state and request handling in the Key Vault dialect, the HTTP admin API |
//! | `server` | serving: TLS connections, limits, the plain health/metrics listener, shutdown |
//! | `offline` | initialising a node, partitions, clients and backup files on a stopped node |
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod clock;
pub mod crypto;
pub mod domain;
pub mod keystore;
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

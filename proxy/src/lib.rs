//! hsm-proxy: the hsm-ha sidecar. One virtual HSM partition over up to 16
//! members. Its modules:
//!
//! | module | decides |
//! |---|---|
//! | `balance` | which candidate member serves the next request |
//! | `health` | whether a member may take traffic: checks, ejection, panic mode |
//! | `budget` | how many retries and hedges may be added (retry budget) |
//! | `hedge` | when to hedge an idempotent request (latency percentile) |
//! | `member` | one member: connection pool, sessions, load, health |
//! | `group` | the member table and who may serve now |
//! | `forward` | getting one request answered: deadlines, retries, hedging, request ids of key creations |
//! | `checker` | health checks, recovery probing, catch-up before re-admission, periodic resync |
//! | `resync` | anti-entropy over the member protocol, and spreading one change |
//! | `api` | the virtual partition: login, tokens, the dialect, replication on change, withdrawal of a creation below `min_replicas` |
//! | `metrics` | every metric's name and meaning |
//! | `status` | the metrics listener: /metrics, /status, /status.json, the probes and the /admin calls |
//! | `operator` | who may use the operations surface: the operator token, the cross-site refusals |
//! | `run` | assembly from the configuration, listeners, stop sequence |
//! | `dev` | `hsm-proxy dev`: a local group of software members behind the proxy |
#![forbid(unsafe_code)]

pub mod api;
pub mod balance;
pub mod budget;
pub mod checker;
pub mod dev;
pub mod forward;
pub mod group;
pub mod health;
pub mod hedge;
pub mod member;
pub mod metrics;
pub mod operator;
pub mod resync;
pub mod run;
pub mod status;

//! `hsm-bench`: a load generator for anything that speaks the Key Vault
//! keys dialect — an `hsm-node` partition, `hsm-proxy`, or a general load
//! balancer in front of members.
//!
//! Modules: [`workload`] decides what is sent (operations, their keys, a
//! weighted mix); [`load`] decides when (closed or open loop) and how
//! latency is counted; [`report`] turns the recorded histograms into the
//! JSON result and the text table; [`ceiling`] does the same operations
//! in process with aws-lc-rs, for the raw ceiling; [`chart`] draws the
//! report's bar charts. The binary (`src/main.rs`) wires the
//! command line to them.
#![forbid(unsafe_code)]

pub mod ceiling;
pub mod chart;
pub mod load;
pub mod report;
pub mod workload;

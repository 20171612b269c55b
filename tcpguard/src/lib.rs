//! tcpguard: SYN-flood detection and mitigation (userspace side).
//!
//! `loader` owns the eBPF object and its attachment; `maps` turns BPF maps
//! into plain Rust snapshots and writes settings and lists back.

pub mod bench;
pub mod bench_flood;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod demo;
pub mod daemon_check;
pub mod flood;
pub mod lab;
pub mod loader;
pub mod maps;
pub mod model;
pub mod net;
pub mod proto;
pub mod summary;

//! tcpguard: SYN-flood detection and mitigation (userspace side).
//!
//! `loader` owns the eBPF object and its attachment; `maps` turns BPF maps
//! into plain Rust snapshots and writes settings and lists back; `model` is
//! the vocabulary the daemon and the CLI share. The lab tools (`lab/`:
//! namespaces, the flood generator, the demo, benchmarks and their command
//! line) exist only with the `lab` feature, in the `tcpguard-lab` binary,
//! never in the shipped `tcpguard`.

pub mod assets;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod daemon_check;
#[cfg(feature = "lab")]
pub mod lab;
pub mod loader;
pub mod maps;
pub mod model;
pub mod net;
pub mod proto;
pub mod settings;
pub mod summary;
pub mod sys;
pub mod upstream;
pub mod validate;

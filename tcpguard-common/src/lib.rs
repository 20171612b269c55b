//! Types and pure logic shared by the XDP program and the userspace daemon.
//!
//! Everything here compiles for the BPF target (`no_std`) and for the host,
//! where it is unit-tested. The XDP program is a thin shell around these
//! functions: parsing ([`parse`]), handshake transitions ([`handshake`]),
//! the per-source SYN token bucket ([`ratelimit`]) and half-open accounting
//! ([`halfopen`]).
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod attack;
pub mod counters;
pub mod halfopen;
pub mod handshake;
pub mod parse;
pub mod quick;
pub mod ratelimit;
pub mod sketch;
pub mod synack;
pub mod types;
pub mod verdict;

#[cfg(all(feature = "craft", not(target_arch = "bpf")))]
pub mod craft;
#[cfg(all(feature = "fuzzing", not(target_arch = "bpf")))]
pub mod fuzzing;

pub use attack::{promote_threshold, rate_step};
pub use counters::{Category, Counter, Counters, COUNTER_COUNT};
pub use types::*;

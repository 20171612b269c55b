//! Upstream mitigation through an existing BGP speaker (`[upstream]`):
//! FlowSpec rules (RFC 8955/8956) announced and withdrawn through gobgpd's
//! gRPC API, with a client generated at build time from the API definitions
//! of the installed GoBGP. tcpguard never speaks BGP itself.
//!
//! - this file: a rule as tcpguard means it ([`Rule`]).
//! - `plan`: what should be announced now, from the blocks, the SYN rate
//!   against the host's capacity and the operator's own announcements, with
//!   the guardrails (widest source, allow-list and local addresses, no
//!   source rules in a spoofed flood, a cap, a rate of new announcements,
//!   a TTL on each). Pure: the daemon feeds it once per tick.
//! - `gobgp`: the rule as a gobgpd path marked as tcpguard's own (a standard
//!   community, [`MARK`]) and back, and [`Client::reconcile`]: make the
//!   marked paths in gobgpd's global RIB exactly a desired set, leaving
//!   every path tcpguard did not mark alone.
//!
//! The daemon's side (a task that reconciles, its status) is in
//! `daemon/upstream.rs`.

pub mod gobgp;
pub mod plan;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::net::Prefix;

pub use gobgp::{from_path, to_path, Client, Reconciled, MARK};

/// What a rule does to the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// traffic-rate 0 (RFC 8955 §7.3): drop.
    Discard,
    /// traffic-rate in bytes per second.
    RateLimit { bytes_per_sec: f32 },
}

/// A FlowSpec rule as tcpguard announces it: TCP to `dst` (the host's own
/// address), optionally from `src`, to `dports` (none: any port), SYN
/// without ACK when `syn_only`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub dst: Prefix,
    pub src: Option<Prefix>,
    pub dports: Vec<u16>,
    pub syn_only: bool,
    pub action: Action,
}

impl Rule {
    /// The match, as a comparable key (the action aside).
    pub fn key(&self) -> String {
        format!("{}|{:?}|{:?}|{}", self.dst, self.src, self.dports, self.syn_only)
    }

    /// The match and the action: two rules with one identity are one path.
    pub fn identity(&self) -> String {
        format!("{}|{:?}", self.key(), self.action)
    }

    pub fn v6(&self) -> bool {
        self.dst.addr.is_ipv6()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp to {}", self.dst)?;
        if let Some(s) = &self.src {
            write!(f, " from {s}")?;
        }
        if !self.dports.is_empty() {
            let p: Vec<String> = self.dports.iter().map(ToString::to_string).collect();
            write!(f, " port {}", p.join(","))?;
        }
        if self.syn_only {
            f.write_str(" SYN")?;
        }
        match self.action {
            Action::Discard => f.write_str(" → discard"),
            Action::RateLimit { bytes_per_sec } => write!(f, " → rate-limit {bytes_per_sec} B/s"),
        }
    }
}

//! The shared vocabulary of the daemon and its clients: attack kinds and
//! phases, detection rules and their evidence, how an interface is
//! attached, why a prefix is blocked. `ctl` and `proto` import these, never
//! the daemon's internals.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    FewHeavySources,
    SpoofedRandom,
    DistributedReal,
    /// ACKs that match no connection (a flood the SYN-cookie defence does
    /// not see); detected beside a SYN flood's kind, not instead of it.
    AckFlood,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::FewHeavySources, Kind::SpoofedRandom, Kind::DistributedReal, Kind::AckFlood];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FewHeavySources => "few-heavy-sources",
            Kind::SpoofedRandom => "spoofed-random",
            Kind::DistributedReal => "distributed-real",
            Kind::AckFlood => "ack-flood",
        }
    }

    /// A SYN flood's kind (not `ack-flood`).
    pub fn is_syn(self) -> bool {
        self != Kind::AckFlood
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Idle,
    /// Over threshold, not yet for `start-ticks` ticks.
    Pending,
    Active,
    CoolingDown,
}

impl Phase {
    /// An attack is on: active, or cooling down.
    pub fn is_attack(self) -> bool {
        matches!(self, Phase::Active | Phase::CoolingDown)
    }
}

/// A detection rule, as named in the config's `[detection]` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    SynRate,
    HalfOpen,
    CompletionRatio,
    HeavyShare,
    NewSourceRatio,
    /// A listener's SYN queue against its backlog.
    ListenerQueue,
    /// Connection attempts a listener dropped, per second.
    ListenerDrops,
    /// ACKs to protected ports matching no connection, per second.
    AckRate,
    /// RSTs the kernel sent, per second (TcpOutRsts).
    KernelRsts,
    /// The datapath entered ACK-checking mode by itself.
    DatapathAckMode,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SynRate => "syn-rate",
            Rule::HalfOpen => "half-open",
            Rule::CompletionRatio => "completion-ratio",
            Rule::HeavyShare => "heavy-share",
            Rule::NewSourceRatio => "new-source-ratio",
            Rule::ListenerQueue => "listener-queue",
            Rule::ListenerDrops => "listener-drops",
            Rule::AckRate => "ack-rate",
            Rule::KernelRsts => "kernel-rsts",
            Rule::DatapathAckMode => "datapath-ack-mode",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's observed value against its threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub rule: Rule,
    pub observed: f64,
    pub threshold: f64,
    /// What the rule was observed on (a listener's address:port), when not
    /// the host as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Evidence {
    pub fn new(rule: Rule, observed: f64, threshold: f64) -> Self {
        Evidence { rule, observed, threshold, subject: None }
    }

    pub fn at(rule: Rule, observed: f64, threshold: f64, subject: String) -> Self {
        Evidence { rule, observed, threshold, subject: Some(subject) }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |x: f64| if x.fract() == 0.0 || x.abs() >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") };
        write!(f, "{} {} (threshold {})", self.rule, n(self.observed), n(self.threshold))?;
        if let Some(s) = &self.subject {
            write!(f, " at {s}")?;
        }
        Ok(())
    }
}

/// A listener and how hard it is pressed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerPressure {
    pub addr: String,
    pub syn_queue: u64,
    pub accept_queue: u64,
    pub backlog: u64,
    /// SYN queue / backlog.
    pub share: f64,
    pub drops_per_sec: f64,
    /// At or over `listener-queue-share`, or dropping.
    pub pressured: bool,
}

/// Why a prefix is on the block-list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "origin", rename_all = "kebab-case")]
pub enum BlockOrigin {
    /// The daemon blocked a heavy source (policy drop/auto).
    HeavySource { syn_per_sec: f64, half_open: u64 },
    /// `tcpguard block`.
    Operator,
    /// `datapath.block` in the config.
    Config,
    /// Found pinned from a previous run.
    Pinned,
}

impl fmt::Display for BlockOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOrigin::HeavySource { syn_per_sec, half_open } => {
                write!(f, "heavy source: {syn_per_sec:.0} SYN/s, {half_open} half-open")
            }
            BlockOrigin::Operator => f.write_str("operator"),
            BlockOrigin::Config => f.write_str("config datapath.block"),
            BlockOrigin::Pinned => f.write_str("kept from a previous run (pinned)"),
        }
    }
}

/// How an interface came to be protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// Attached by this run in native (driver) mode.
    Native,
    /// Attached by this run in generic (skb) mode.
    Skb,
    /// Taken over from a previous run's pinned link (no gap in protection).
    Adopted,
}

impl Attach {
    pub fn as_str(self) -> &'static str {
        match self {
            Attach::Native => "native",
            Attach::Skb => "skb",
            Attach::Adopted => "adopted",
        }
    }
}

/// How to attach: `Auto` tries native (driver) mode, then generic (skb).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" | "drv" | "driver" => Ok(Self::Native),
            "skb" | "generic" => Ok(Self::Skb),
            _ => Err(format!("unknown XDP mode {s:?}: expected auto, native or skb")),
        }
    }
}

/// The kernel's own view of TCP, as a cross-check of the datapath.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelView {
    pub syn_recv: u64,
    pub syncookies_sent: u64,
    pub syncookies_recv: u64,
    pub syncookies_failed: u64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// SYNs to a full SYN queue answered with a cookie / dropped
    /// (TCPReqQFullDoCookies, TCPReqQFullDrop).
    #[serde(default)]
    pub req_qfull_cookies: u64,
    #[serde(default)]
    pub req_qfull_drops: u64,
    /// Current value of net.ipv4.tcp_syncookies.
    pub syncookies: u8,
    /// RSTs the kernel sent (Tcp OutRsts): its answer to every ACK that
    /// matches no connection.
    #[serde(default)]
    pub out_rsts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_wire_are_the_documented_ones() {
        assert_eq!(serde_json::to_string(&Rule::NewSourceRatio).unwrap(), "\"new-source-ratio\"");
        assert_eq!(serde_json::to_string(&Kind::SpoofedRandom).unwrap(), "\"spoofed-random\"");
        for r in [
            Rule::SynRate,
            Rule::HalfOpen,
            Rule::CompletionRatio,
            Rule::HeavyShare,
            Rule::NewSourceRatio,
            Rule::ListenerQueue,
            Rule::ListenerDrops,
            Rule::AckRate,
            Rule::KernelRsts,
            Rule::DatapathAckMode,
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        let o = BlockOrigin::HeavySource { syn_per_sec: 5000.4, half_open: 3 };
        assert_eq!(o.to_string(), "heavy source: 5000 SYN/s, 3 half-open");
    }
}

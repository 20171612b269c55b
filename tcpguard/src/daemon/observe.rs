//! The tick's last step: one [`Observation`], a plain struct cheap to
//! clone, made from what the tick sampled, detected and applied. `status`
//! renders it (status.rs), `/metrics` renders it at scrape time
//! (metrics.rs), and the log's events are cut from it. Counter deltas and
//! rates are computed here, once.

use tcpguard_common::{Counter, Counters};

use crate::{
    config::{DatapathMode, PolicyMode, SynCookies},
    daemon::{
        datapaths::{DpAttack, Iface},
        detect::{Assessment, Event},
    },
    model::{Attach, BlockOrigin, KernelView, Kind},
    net::Prefix,
};

/// One interface as the tick saw it.
#[derive(Clone, Debug)]
#[allow(clippy::struct_excessive_bools)] // independent facts about one interface
pub struct IfaceObs {
    pub name: String,
    pub how: Attach,
    /// Its XDP link is attached to it (the kernel's view).
    pub attached: bool,
    /// An interface of its name exists (false: deleted or moved away).
    pub present: bool,
    pub attack_mode: bool,
    /// Its datapath checks ACKs to listeners (an ACK flood).
    pub ack_mode: bool,
    /// Times its datapath entered attack mode by itself.
    pub attack_entries: u64,
    /// Who answers its SYNs in attack mode ("xdp", "kernel cookies", ...) and why.
    pub responder: String,
    pub responder_reason: String,
    /// Its responder is XDP (not the kernel's cookies).
    pub responder_xdp: bool,
    pub fallbacks: u64,
    /// The datapath may answer from XDP now.
    pub answering: bool,
    /// Its failed transmits are observed (see `proto`'s `tx_watch`).
    pub tx_watch: bool,
    pub driver_tx_errors: Option<u64>,
    pub mtu: u32,
    /// Its counters now, a tick ago, and when this daemon started.
    pub counters: Counters,
    pub prev: Counters,
    pub base: Counters,
}

impl IfaceObs {
    pub fn from_iface(i: &Iface, base: Counters) -> Self {
        IfaceObs {
            name: i.name.clone(),
            how: i.att.how,
            attached: i.attached,
            present: i.present,
            attack_mode: i.attack.active != 0,
            ack_mode: i.ack_mode.active != 0,
            attack_entries: i.attack.entries,
            responder: i.responder.name().to_string(),
            responder_reason: i.responder.reason.clone(),
            responder_xdp: i.responder.xdp,
            fallbacks: i.responder.fallbacks,
            answering: i.answering,
            // A veth's failed transmits are its driver's count: observable
            // only while the daemon can read it.
            tx_watch: i.tx_watch && (i.link.kind != "veth" || i.driver_tx_errors.is_some()),
            driver_tx_errors: i.driver_tx_errors,
            mtu: i.link.mtu,
            counters: i.counters,
            prev: i.prev,
            base,
        }
    }

    /// A counter's advance over the last tick.
    pub fn delta(&self, c: Counter) -> u64 {
        self.counters.get(c).wrapping_sub(self.prev.get(c))
    }

    /// A counter's advance since this daemon started.
    pub fn total(&self, c: Counter) -> u64 {
        self.counters.get(c).saturating_sub(self.base.get(c))
    }
}

/// A block-list entry with why it is there.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockObs {
    pub prefix: Prefix,
    /// CLOCK_MONOTONIC expiry; 0 = until unblocked.
    pub expires_ns: u64,
    pub origin: BlockOrigin,
}

/// The mitigations as applied.
#[derive(Clone, Debug, Default)]
pub struct MitigationObs {
    pub dp_attack: DpAttack,
    /// The datapath's ACK-checking mode.
    pub dp_ack: DpAttack,
    /// tcp_syncookies / tcp_timestamps as the operator had them, while
    /// tcpguard has them changed.
    pub syncookies_original: Option<u8>,
    pub timestamps_original: Option<u8>,
    pub blocks: Vec<BlockObs>,
    pub allowed: Vec<Prefix>,
    pub block_capacity: u32,
    pub block_failures: u64,
    pub last_block_error: Option<String>,
    /// Blocks the daemon added for heavy sources.
    pub daemon_blocks: usize,
    /// Failed changes of a sysctl and its saved record so far, and the
    /// last one while it lasts.
    pub state_failures: u64,
    pub state_error: Option<String>,
    /// tcp_syncookies and tcp_timestamps as read back (what is in effect).
    pub syncookies_now: Option<u8>,
    pub timestamps_now: Option<u8>,
}

impl MitigationObs {
    /// tcpguard has tcp_syncookies at 2, and it is 2.
    pub fn cookies_forced(&self) -> bool {
        self.syncookies_original.is_some() && self.syncookies_now == Some(2)
    }
}

/// The configuration as the views need it.
#[derive(Clone, Debug, Default)]
pub struct ConfigObs {
    pub policy: PolicyMode,
    pub datapath_mode: DatapathMode,
    pub syn_cookies: SynCookies,
    /// The XDP responder answers in attack mode (policy, mode, syn-cookies).
    pub responder_enabled: bool,
    pub attack_sample: u32,
    pub max_blocked: usize,
    pub hold_down_secs: f64,
}

/// Everything one tick knows, for `status`, `/metrics` and the log.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// CLOCK_MONOTONIC of the tick, and seconds since the previous one.
    pub now_ns: u64,
    pub dt: f64,
    pub uptime_secs: f64,
    /// All interfaces' counters summed: now, a tick ago, at this daemon's start.
    pub counters: Counters,
    pub prev: Counters,
    pub base: Counters,
    pub ifaces: Vec<IfaceObs>,
    /// Every interface sees the server's side (TC egress).
    pub egress: bool,
    pub assessment: Option<Assessment>,
    /// Attacks declared since start, by kind (`Kind::ALL` order).
    pub attacks: Vec<u64>,
    pub half_open: u64,
    /// Handshakes that aged out as failed since start.
    pub failed_total: u64,
    /// Attack mode's distinct sources per second.
    pub distinct_per_sec: f64,
    pub kernel: KernelView,
    pub mitigation: MitigationObs,
    pub config: ConfigObs,
    /// `[upstream]` when enabled: the rules and gobgpd's state.
    pub upstream: Option<crate::proto::UpstreamView>,
}

impl Observation {
    /// A counter's rate over the last tick.
    pub fn rate(&self, c: Counter) -> f64 {
        self.counters.get(c).saturating_sub(self.prev.get(c)) as f64 / self.dt.max(1e-3)
    }

    /// A counter's advance since this daemon started (the maps may predate it).
    pub fn total(&self, c: Counter) -> u64 {
        self.counters.get(c).saturating_sub(self.base.get(c))
    }

    /// An attack (SYN or ACK flood) is active or cooling down.
    pub fn attack_active(&self) -> bool {
        self.assessment.as_ref().is_some_and(|a| a.phase.is_attack() || a.ack.active())
    }

    /// The XDP responder answers now (attack mode, and the policy answers from XDP).
    pub fn responder_armed(&self) -> bool {
        self.mitigation.dp_attack.active && self.config.responder_enabled
    }

    /// Attacks declared since start.
    pub fn attacks_total(&self) -> u64 {
        self.attacks.iter().sum()
    }

    /// Packets dropped per second over the last tick, all reasons.
    pub fn dropped_per_sec(&self) -> f64 {
        [Counter::DropBlocked, Counter::DropBlockedOther, Counter::DropRateLimited, Counter::DropAckInvalid]
            .iter()
            .map(|c| self.rate(*c))
            .sum()
    }

    /// Log the tick's events (an attack started or ended), once.
    pub fn log_events(&self) {
        let Some(a) = &self.assessment else { return };
        for e in a.events() {
            match e {
                Event::Started(k) => {
                    let evidence = if k.is_syn() { &a.evidence } else { &a.ack.evidence };
                    let ev: Vec<String> = evidence.iter().map(ToString::to_string).collect();
                    let mixed = if a.kinds().len() > 1 { " (mixed flood: " } else { "" };
                    let also = if mixed.is_empty() {
                        String::new()
                    } else {
                        let names: Vec<&str> = a.kinds().iter().map(|k| k.as_str()).collect();
                        format!("{mixed}{})", names.join(" + "))
                    };
                    log::warn!("attack started: {}{also} — {}", k.as_str(), ev.join(", "));
                }
                Event::Ended(k) => {
                    log::warn!("attack over: {} (quiet for {} s)", k.as_str(), self.config.hold_down_secs);
                }
            }
        }
    }
}

/// Index of a kind in `Kind::ALL` (the order of `Observation::attacks`).
pub fn kind_index(k: Kind) -> usize {
    Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

//! Detection: a pure function from map snapshots to an assessment. No I/O,
//! no clocks (time arrives in the sample), so it is tested on synthetic
//! series.
//!
//! Rule (all thresholds from `[detection]`): a tick is *over threshold* when
//! the total SYN rate is at least `min-syn-rate` and either the half-open
//! count reaches `half-open-threshold` or the completion ratio
//! (completed / SYN) falls below `min-completion-ratio`. A flash crowd of
//! real clients completes its handshakes, so it stays under.
//!
//! Kind, while over threshold:
//! - few heavy sources: sources at or above `heavy-source-syn-rate` carry at
//!   least `heavy-share` of the SYNs;
//! - spoofed random sources: the handshakes do not complete (completion
//!   ratio below `min-completion-ratio`: spoofed sources never answer the
//!   SYN-ACK), or never-seen sources per SYN reach
//!   `spoofed-new-source-ratio`;
//! - distributed real sources: otherwise — many sources, none heavy, that
//!   do complete handshakes yet keep the half-open count high.
//!
//! The kernel's own view counts too (`Sample::listeners`, from sock_diag):
//! a listener whose SYN queue holds `listener-queue-share` of its backlog,
//! or that drops connection attempts, is under pressure, and pressure with a
//! completion ratio under `min-completion-ratio` is over threshold whatever
//! the SYN rate. The host's listeners also scale the absolute thresholds
//! down: `min-syn-rate` and `half-open-threshold` are capped by the
//! listeners' total backlog (what they can hold), so a small server is not
//! judged by a big one's numbers.
//!
//! Lifecycle with hysteresis: `start-ticks` consecutive ticks over threshold
//! start an attack; once under, it cools down and is over after
//! `hold-down-secs` without a tick over threshold.
//!
//! ACK floods have a lifecycle of their own beside it (a flood can be both,
//! and is then named both): a tick is over threshold when ACKs to protected
//! ports that match no connection arrive at `min-ack-rate` or more (the
//! datapath counts those the kernel answers with a RST, seen on egress, and
//! those it drops itself in ACK-checking mode; without the egress program,
//! the kernel's own count of RSTs sent stands in). The datapath entering
//! ACK-checking mode by itself (its per-CPU rate crossed
//! `datapath.attack-ack-rate` within a 5 ms window) counts as the first
//! tick over threshold, so one more tick declares the flood.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    config::DetectionConfig,
    daemon::listeners::ListenerSample,
    net::{host_len, Prefix},
};

/// Cumulative counters and current gauges at one instant.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds on a monotonic clock.
    pub t: f64,
    /// SYNs that reached the handshake tracker.
    pub syn: u64,
    /// SYNs the block-list dropped (only SYNs: a blocked source's ACKs and
    /// data are counted apart, `drop_blocked_other`, and never feed the SYN
    /// rate). They count as arriving SYNs, from heavy sources.
    pub blocked: u64,
    pub completed: u64,
    pub new_sources: u64,
    pub half_open: u64,
    /// Sources the datapath reported as heavy (and still follows).
    pub sources: Vec<SourceSample>,
    /// The kernel's listeners and their queues.
    pub listeners: Vec<ListenerSample>,
    /// ACKs to protected ports that matched no connection: answered by the
    /// kernel with a RST (seen on egress), or dropped (counted) by the
    /// datapath's ACK check.
    pub unmatched_acks: u64,
    /// RSTs the kernel sent (TcpOutRsts, the whole network namespace).
    pub kernel_rsts: u64,
    /// The egress program sees the kernel's RSTs (else `kernel_rsts` stands
    /// in for the unmatched ACKs it answered).
    pub egress: bool,
    /// The datapath entered ACK-checking mode by itself.
    pub ack_mode_by_datapath: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceSample {
    pub addr: IpAddr,
    /// Prefix length: the whole address for a source, 24 or 64 for an
    /// aggregate of sources (its network address in `addr`).
    pub len: u8,
    /// Cumulative SYNs from this source.
    pub syns: u64,
    pub completed: u64,
    pub half_open: u64,
    /// Cumulative SYNs when first reported: the rate base for a newcomer.
    pub syns_at_report: u64,
}

pub use crate::model::{Evidence, Kind, ListenerPressure, Phase, Rule};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Started(Kind),
    Ended(Kind),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub syn_per_sec: f64,
    pub completed_per_sec: f64,
    /// completed / SYN over the tick; 1.0 when there were no SYNs.
    pub completion_ratio: f64,
    pub new_sources_per_sec: f64,
    pub half_open: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeavySource {
    pub addr: IpAddr,
    /// As in [`SourceSample`]: 32/128 a source, 24/64 an aggregate.
    #[serde(default)]
    pub len: u8,
    pub syn_per_sec: f64,
    pub half_open: u64,
    pub completed: u64,
}

impl HeavySource {
    /// An aggregate of sources (/24, /64), not one address.
    pub fn is_aggregate(&self) -> bool {
        self.len != host_len(self.addr)
    }
}

/// The ACK-flood side of a tick's assessment.
#[derive(Clone, Debug, PartialEq)]
pub struct AckAssessment {
    pub over: bool,
    pub phase: Phase,
    /// Why the tick was (or was not) over threshold.
    pub evidence: Vec<Evidence>,
    pub event: Option<Event>,
    pub unmatched_per_sec: f64,
    pub kernel_rsts_per_sec: f64,
    /// Seconds since the ACK flood started.
    pub since: Option<f64>,
}

impl Default for AckAssessment {
    fn default() -> Self {
        AckAssessment {
            over: false,
            phase: Phase::Idle,
            evidence: Vec::new(),
            event: None,
            unmatched_per_sec: 0.0,
            kernel_rsts_per_sec: 0.0,
            since: None,
        }
    }
}

impl AckAssessment {
    pub fn active(&self) -> bool {
        self.phase.is_attack()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub over: bool,
    pub phase: Phase,
    /// The kind of the current attack (Active or CoolingDown).
    pub kind: Option<Kind>,
    /// Why the last tick was (or was not) over threshold, and why this kind.
    pub evidence: Vec<Evidence>,
    pub event: Option<Event>,
    pub rates: Rates,
    /// Sources at or above the heavy rate this tick, heaviest first.
    pub heavy: Vec<HeavySource>,
    /// The listeners, most pressed first.
    pub listeners: Vec<ListenerPressure>,
    /// Seconds since the attack started.
    pub since: Option<f64>,
    /// The ACK-flood side, with its own lifecycle.
    pub ack: AckAssessment,
}

impl Assessment {
    /// The kinds of flood on now (active or cooling down): a SYN flood's
    /// kind, then `ack-flood`; both for a mixed flood.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut v: Vec<Kind> = self.kind.into_iter().collect();
        if self.ack.active() {
            v.push(Kind::AckFlood);
        }
        v
    }

    /// The events of this tick, the SYN side's first.
    pub fn events(&self) -> impl Iterator<Item = Event> {
        self.event.into_iter().chain(self.ack.event)
    }
}

/// One kind of flood's phases with hysteresis.
#[derive(Clone, Debug)]
struct Lifecycle {
    phase: Phase,
    over_ticks: u32,
    kind: Option<Kind>,
    started_at: f64,
    last_over_at: f64,
}

impl Lifecycle {
    fn new() -> Self {
        Lifecycle { phase: Phase::Idle, over_ticks: 0, kind: None, started_at: 0.0, last_over_at: 0.0 }
    }

    fn active(&self) -> bool {
        self.phase.is_attack()
    }

    /// One tick: `over` threshold or not; `start_ticks` consecutive ticks
    /// over start it, `hold_down` seconds under end it.
    fn advance(&mut self, t: f64, over: bool, kind: Option<Kind>, start_ticks: u32, hold_down: f64) -> Option<Event> {
        if over {
            self.last_over_at = t;
            self.over_ticks = self.over_ticks.saturating_add(1);
        } else {
            self.over_ticks = 0;
        }
        match (self.phase, over) {
            (Phase::Idle | Phase::Pending, true) => {
                if self.over_ticks >= start_ticks {
                    self.phase = Phase::Active;
                    self.kind = kind;
                    self.started_at = t;
                    return kind.map(Event::Started);
                }
                self.phase = Phase::Pending;
                None
            }
            (Phase::Pending, false) => {
                self.phase = Phase::Idle;
                None
            }
            (Phase::Active | Phase::CoolingDown, true) => {
                self.phase = Phase::Active;
                self.kind = kind.or(self.kind);
                None
            }
            (Phase::Active, false) => {
                self.phase = Phase::CoolingDown;
                self.cool_or_end(t, hold_down)
            }
            (Phase::CoolingDown, false) => self.cool_or_end(t, hold_down),
            (Phase::Idle, false) => None,
        }
    }

    fn cool_or_end(&mut self, t: f64, hold_down: f64) -> Option<Event> {
        if t - self.last_over_at >= hold_down {
            self.phase = Phase::Idle;
            return self.kind.take().map(Event::Ended);
        }
        None
    }

    /// Seconds since it started, while on.
    fn since(&self, t: f64) -> Option<f64> {
        self.active().then_some(t - self.started_at)
    }
}

#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectionConfig,
    prev: Option<Sample>,
    prev_sources: HashMap<(IpAddr, u8), u64>,
    syn: Lifecycle,
    ack: Lifecycle,
}

impl Detector {
    pub fn new(cfg: DetectionConfig) -> Self {
        Detector { cfg, prev: None, prev_sources: HashMap::new(), syn: Lifecycle::new(), ack: Lifecycle::new() }
    }

    /// New thresholds (reload); the attack state carries over.
    pub fn reconfigure(&mut self, cfg: DetectionConfig) {
        self.cfg = cfg;
    }

    pub fn phase(&self) -> Phase {
        self.syn.phase
    }

    pub fn step(&mut self, s: Sample) -> Assessment {
        let Some(prev) = self.prev.take() else {
            // First sample: nothing to compare with.
            for src in &s.sources {
                self.prev_sources.insert((src.addr, src.len), src.syns);
            }
            let listeners = listener_pressure(&s.listeners, &s.listeners, 1.0, self.cfg.listener_queue_share);
            self.prev = Some(s);
            let mut a = self.assessment(false, Vec::new(), None, Rates::default(), Vec::new());
            a.listeners = listeners;
            return a;
        };
        let dt = (s.t - prev.t).max(1e-3);
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
        let blocked = d(s.blocked, prev.blocked);
        let syn = d(s.syn, prev.syn) + blocked;
        let completed = d(s.completed, prev.completed);
        let rates = Rates {
            syn_per_sec: syn / dt,
            completed_per_sec: completed / dt,
            completion_ratio: if syn > 0.0 { (completed / syn).min(1.0) } else { 1.0 },
            new_sources_per_sec: d(s.new_sources, prev.new_sources) / dt,
            half_open: s.half_open,
        };

        // Per-source rates for the followed sources.
        let mut heavy: Vec<HeavySource> = Vec::new();
        let mut next_prev = HashMap::with_capacity(s.sources.len());
        for src in &s.sources {
            let host = src.len == host_len(src.addr);
            let heavy_rate = if host { self.cfg.heavy_source_syn_rate } else { self.cfg.heavy_prefix_syn_rate } as f64;
            let rate = match self.prev_sources.get(&(src.addr, src.len)) {
                Some(&p) => d(src.syns, p) / dt,
                // Newly reported: it reached the heavy rate within one
                // second; count what it sent since the report too.
                None => (d(src.syns, src.syns_at_report) / dt).max(heavy_rate),
            };
            next_prev.insert((src.addr, src.len), src.syns);
            if rate >= heavy_rate && heavy_rate > 0.0 {
                heavy.push(HeavySource {
                    addr: src.addr,
                    len: src.len,
                    syn_per_sec: rate,
                    half_open: src.half_open,
                    completed: src.completed,
                });
            }
        }
        drop_aggregates_of_heavy_sources(&mut heavy, self.cfg.heavy_prefix_syn_rate as f64);
        heavy.sort_by(|a, b| b.syn_per_sec.total_cmp(&a.syn_per_sec));
        self.prev_sources = next_prev;

        let c = &self.cfg;
        let listeners = listener_pressure(&s.listeners, &prev.listeners, dt, c.listener_queue_share);
        // What the host's listeners can hold caps the absolute thresholds.
        let capacity: u64 = s.listeners.iter().map(|l| l.backlog).sum();
        let (min_rate, half_open_thr) = if capacity > 0 {
            (c.min_syn_rate.min(capacity as f64), c.half_open_threshold.min(capacity))
        } else {
            (c.min_syn_rate, c.half_open_threshold)
        };
        let mut evidence = vec![Evidence::new(Rule::SynRate, rates.syn_per_sec, min_rate)];
        let busy = rates.syn_per_sec >= min_rate;
        let half_open_high = rates.half_open >= half_open_thr;
        let low_completion = rates.completion_ratio < c.min_completion_ratio;
        if half_open_high || !low_completion {
            evidence.push(Evidence::new(Rule::HalfOpen, rates.half_open as f64, half_open_thr as f64));
        }
        if low_completion || !half_open_high {
            evidence.push(Evidence::new(Rule::CompletionRatio, rates.completion_ratio, c.min_completion_ratio));
        }
        let pressed: Vec<&ListenerPressure> = listeners.iter().filter(|l| l.pressured).collect();
        for l in pressed.iter().take(3) {
            if l.share >= c.listener_queue_share {
                evidence.push(Evidence::at(Rule::ListenerQueue, l.share, c.listener_queue_share, l.addr.clone()));
            }
            if l.drops_per_sec > 0.0 {
                evidence.push(Evidence::at(Rule::ListenerDrops, l.drops_per_sec, 0.0, l.addr.clone()));
            }
        }
        let over = (busy && (half_open_high || low_completion)) || (!pressed.is_empty() && low_completion);

        let mut classified = None;
        if over {
            // Blocked sources were heavy when blocked: their dropped SYNs
            // keep counting as heavy-source traffic.
            let heavy_rate = heavy_total(&heavy) + blocked / dt;
            let share = (heavy_rate / rates.syn_per_sec.max(1e-9)).min(1.0);
            let new_ratio = (rates.new_sources_per_sec / rates.syn_per_sec.max(1e-9)).min(1.0);
            let kind = if share >= c.heavy_share {
                evidence.push(Evidence::new(Rule::HeavyShare, share, c.heavy_share));
                Kind::FewHeavySources
            } else if low_completion || new_ratio >= c.spoofed_new_source_ratio {
                // Spoofed sources never complete; random addresses are new.
                evidence.push(Evidence::new(Rule::NewSourceRatio, new_ratio, c.spoofed_new_source_ratio));
                Kind::SpoofedRandom
            } else {
                // Real, distributed: they complete, recur, and none is heavy.
                evidence.push(Evidence::new(Rule::NewSourceRatio, new_ratio, c.spoofed_new_source_ratio));
                evidence.push(Evidence::new(Rule::HeavyShare, share, c.heavy_share));
                Kind::DistributedReal
            };
            classified = Some(kind);
        }

        let event = self.syn.advance(s.t, over, classified, self.cfg.start_ticks, self.cfg.hold_down_secs);
        let ack = self.step_ack(&s, &prev, dt);
        self.prev = Some(s);
        let mut a = self.assessment(over, evidence, event, rates, heavy);
        a.listeners = listeners;
        a.ack = ack;
        a
    }

    /// The ACK-flood side of a tick.
    fn step_ack(&mut self, s: &Sample, prev: &Sample, dt: f64) -> AckAssessment {
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        let kernel_rsts_per_sec = rate(s.kernel_rsts, prev.kernel_rsts);
        // Without the egress program only the kernel's count of its RSTs
        // sees the ACKs it answered.
        let unmatched_per_sec = if s.egress {
            rate(s.unmatched_acks, prev.unmatched_acks)
        } else {
            rate(s.unmatched_acks, prev.unmatched_acks) + kernel_rsts_per_sec
        };
        let min = self.cfg.min_ack_rate;
        let over = unmatched_per_sec >= min;
        let mut evidence = vec![
            Evidence::new(Rule::AckRate, unmatched_per_sec, min),
            Evidence::new(Rule::KernelRsts, kernel_rsts_per_sec, min),
        ];
        // The datapath's own entry is a tick over threshold already.
        let start_ticks = if s.ack_mode_by_datapath && over {
            evidence.push(Evidence::new(Rule::DatapathAckMode, 1.0, 1.0));
            self.cfg.start_ticks.saturating_sub(1).max(1)
        } else {
            self.cfg.start_ticks
        };
        let event = self.ack.advance(s.t, over, Some(Kind::AckFlood), start_ticks, self.cfg.hold_down_secs);
        AckAssessment {
            over,
            phase: self.ack.phase,
            evidence,
            event,
            unmatched_per_sec,
            kernel_rsts_per_sec,
            since: self.ack.since(s.t),
        }
    }

    fn assessment(
        &self,
        over: bool,
        evidence: Vec<Evidence>,
        event: Option<Event>,
        rates: Rates,
        heavy: Vec<HeavySource>,
    ) -> Assessment {
        let active = self.syn.active();
        Assessment {
            over,
            phase: self.syn.phase,
            kind: if active { self.syn.kind } else { None },
            evidence,
            event,
            since: self.syn.since(self.prev.as_ref().map_or(0.0, |p| p.t)),
            rates,
            heavy,
            listeners: Vec::new(),
            ack: AckAssessment::default(),
        }
    }
}

/// An aggregate is heavy for what its sources send *besides* its heavy
/// sources: one heavy address makes its /24 look heavy too, and blocking
/// the /24 for it would cut off its neighbours.
fn drop_aggregates_of_heavy_sources(heavy: &mut Vec<HeavySource>, prefix_rate: f64) {
    let hosts: Vec<(IpAddr, f64)> =
        heavy.iter().filter(|h| !h.is_aggregate()).map(|h| (h.addr, h.syn_per_sec)).collect();
    heavy.retain(|h| {
        if !h.is_aggregate() {
            return true;
        }
        let net = Prefix::new(h.addr, h.len);
        let own: f64 = hosts.iter().filter(|(a, _)| net.contains(*a)).map(|(_, r)| r).sum();
        h.syn_per_sec - own >= prefix_rate
    });
}

/// SYN/s of the heavy sources and aggregates, a source inside a heavy
/// aggregate counted once (with its aggregate).
fn heavy_total(heavy: &[HeavySource]) -> f64 {
    let aggs: Vec<Prefix> = heavy.iter().filter(|h| h.is_aggregate()).map(|h| Prefix::new(h.addr, h.len)).collect();
    heavy.iter().filter(|h| h.is_aggregate() || !aggs.iter().any(|a| a.contains(h.addr))).map(|h| h.syn_per_sec).sum()
}

/// Each listener's pressure this tick (`prev`: the last tick's readings,
/// for the drop rate), most pressed first.
fn listener_pressure(now: &[ListenerSample], prev: &[ListenerSample], dt: f64, share: f64) -> Vec<ListenerPressure> {
    let mut out: Vec<ListenerPressure> = now
        .iter()
        .map(|l| {
            let before = prev.iter().find(|p| p.addr == l.addr).map_or(l.drops, |p| p.drops);
            let drops_per_sec = l.drops.saturating_sub(before) as f64 / dt;
            let q = if l.backlog == 0 { 0.0 } else { l.syn_queue as f64 / l.backlog as f64 };
            ListenerPressure {
                addr: l.addr.map_or_else(|| "?".into(), |a| a.to_string()),
                syn_queue: l.syn_queue,
                accept_queue: l.accept_queue,
                backlog: l.backlog,
                share: q,
                drops_per_sec,
                pressured: (l.backlog > 0 && q >= share) || drops_per_sec > 0.0,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.pressured
            .cmp(&a.pressured)
            .then(b.share.total_cmp(&a.share))
            .then(b.drops_per_sec.total_cmp(&a.drops_per_sec))
    });
    out
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;

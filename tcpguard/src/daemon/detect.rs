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
}

#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectionConfig,
    prev: Option<Sample>,
    prev_sources: HashMap<(IpAddr, u8), u64>,
    phase: Phase,
    over_ticks: u32,
    kind: Option<Kind>,
    started_at: f64,
    last_over_at: f64,
}

impl Detector {
    pub fn new(cfg: DetectionConfig) -> Self {
        Detector {
            cfg,
            prev: None,
            prev_sources: HashMap::new(),
            phase: Phase::Idle,
            over_ticks: 0,
            kind: None,
            started_at: 0.0,
            last_over_at: 0.0,
        }
    }

    /// New thresholds (reload); the attack state carries over.
    pub fn reconfigure(&mut self, cfg: DetectionConfig) {
        self.cfg = cfg;
    }

    pub fn phase(&self) -> Phase {
        self.phase
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

        let event = self.advance(s.t, over, classified);
        self.prev = Some(s);
        let mut a = self.assessment(over, evidence, event, rates, heavy);
        a.listeners = listeners;
        a
    }

    fn advance(&mut self, t: f64, over: bool, kind: Option<Kind>) -> Option<Event> {
        if over {
            self.last_over_at = t;
            self.over_ticks = self.over_ticks.saturating_add(1);
        } else {
            self.over_ticks = 0;
        }
        match (self.phase, over) {
            (Phase::Idle | Phase::Pending, true) => {
                if self.over_ticks >= self.cfg.start_ticks {
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
                self.cool_or_end(t)
            }
            (Phase::CoolingDown, false) => self.cool_or_end(t),
            (Phase::Idle, false) => None,
        }
    }

    fn cool_or_end(&mut self, t: f64) -> Option<Event> {
        if t - self.last_over_at >= self.cfg.hold_down_secs {
            self.phase = Phase::Idle;
            return self.kind.take().map(Event::Ended);
        }
        None
    }

    fn assessment(
        &self,
        over: bool,
        evidence: Vec<Evidence>,
        event: Option<Event>,
        rates: Rates,
        heavy: Vec<HeavySource>,
    ) -> Assessment {
        let active = matches!(self.phase, Phase::Active | Phase::CoolingDown);
        Assessment {
            over,
            phase: self.phase,
            kind: if active { self.kind } else { None },
            evidence,
            event,
            since: active.then(|| self.prev.as_ref().map_or(0.0, |p| p.t) - self.started_at),
            rates,
            heavy,
            listeners: Vec::new(),
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
mod tests {
    use super::*;

    /// A synthetic traffic generator: cumulative counters advanced per tick.
    struct Series {
        t: f64,
        s: Sample,
        tick: f64,
    }

    impl Series {
        fn new() -> Self {
            Series { t: 0.0, s: Sample::default(), tick: 0.25 }
        }
        /// One tick with the given per-second rates and half-open gauge.
        fn tick(
            &mut self,
            syn: f64,
            completed: f64,
            new_src: f64,
            half_open: u64,
            sources: &[(IpAddr, f64)],
        ) -> Sample {
            self.t += self.tick;
            self.s.t = self.t;
            self.s.syn += (syn * self.tick) as u64;
            self.s.completed += (completed * self.tick) as u64;
            self.s.new_sources += (new_src * self.tick) as u64;
            self.s.half_open = half_open;
            for (addr, rate) in sources {
                match self.s.sources.iter_mut().find(|x| x.addr == *addr) {
                    Some(x) => x.syns += (rate * self.tick) as u64,
                    None => self.s.sources.push(SourceSample {
                        addr: *addr,
                        len: host_len(*addr),
                        syns: (rate * self.tick) as u64,
                        completed: 0,
                        half_open: 0,
                        syns_at_report: 0,
                    }),
                }
            }
            self.s.clone()
        }
    }

    fn cfg() -> DetectionConfig {
        DetectionConfig::default()
    }

    fn listener(addr: &str, syn_queue: u64, backlog: u64, drops: u64) -> ListenerSample {
        ListenerSample { addr: Some(addr.parse().unwrap()), syn_queue, accept_queue: 0, backlog, drops }
    }

    #[test]
    fn a_low_rate_flood_filling_a_small_backlog_is_an_attack_naming_the_listener() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        let calm = vec![listener("10.0.0.1:8080", 0, 64, 0), listener("0.0.0.0:22", 0, 128, 0)];
        for _ in 0..4 {
            let mut s = g.tick(20.0, 20.0, 2.0, 1, &[]);
            s.listeners.clone_from(&calm);
            assert!(!d.step(s).over);
        }
        // 600 spoofed SYN/s: far under min-syn-rate, but the 64-deep queue is full.
        let full = vec![listener("10.0.0.1:8080", 64, 64, 0), listener("0.0.0.0:22", 0, 128, 0)];
        let mut last = None;
        for _ in 0..2 {
            let mut s = g.tick(600.0, 10.0, 590.0, 400, &[]);
            s.listeners.clone_from(&full);
            last = Some(d.step(s));
        }
        let a = last.unwrap();
        assert_eq!((a.phase, a.kind), (Phase::Active, Some(Kind::SpoofedRandom)), "{:?}", a.evidence);
        let q = a.evidence.iter().find(|e| e.rule == Rule::ListenerQueue).expect("listener evidence");
        assert_eq!((q.observed, q.threshold, q.subject.as_deref()), (1.0, 0.5, Some("10.0.0.1:8080")));
        assert_eq!(q.to_string(), "listener-queue 1 (threshold 0.50) at 10.0.0.1:8080");
        assert!(a.listeners[0].pressured && a.listeners[0].addr == "10.0.0.1:8080");
        assert!(!a.listeners[1].pressured);
        // The SYN-rate floor is what the listeners hold in all (64 + 128).
        assert!((a.evidence[0].threshold - 192.0).abs() < 1e-9, "{:?}", a.evidence[0]);
    }

    #[test]
    fn a_flood_spread_over_one_subnet_is_few_heavy_through_its_aggregate() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        // 20 addresses of one /24 at 150 SYN/s each (under the 200 heavy
        // rate): no source is heavy, the /24 (3000 SYN/s) is.
        let net: IpAddr = "198.51.100.0".parse().unwrap();
        let hosts: Vec<(IpAddr, f64)> = (1..=20u8).map(|i| (IpAddr::from([198, 51, 100, i]), 150.0)).collect();
        let mut a = None;
        for _ in 0..4 {
            let mut s = g.tick(3000.0, 30.0, 1.0, 1000, &hosts);
            let agg = s.sources.iter().filter(|x| x.len == 32).map(|x| x.syns).sum();
            s.sources.push(SourceSample {
                addr: net,
                len: 24,
                syns: agg,
                completed: 0,
                half_open: 0,
                syns_at_report: 0,
            });
            a = Some(d.step(s));
        }
        let a = a.unwrap();
        assert_eq!(a.kind, Some(Kind::FewHeavySources), "{:?}", a.evidence);
        assert_eq!(a.heavy.len(), 1, "only the aggregate is heavy: {:?}", a.heavy);
        assert_eq!((a.heavy[0].addr, a.heavy[0].len), (net, 24));
        // Counted once: its sources (not heavy) add nothing beside it.
        let h = |addr: &str, len: u8, r: f64| HeavySource {
            addr: addr.parse().unwrap(),
            len,
            syn_per_sec: r,
            half_open: 0,
            completed: 0,
        };
        // One heavy address does not make its /24 heavy; a /24 with enough
        // besides it does.
        let mut v = vec![h("203.0.113.0", 24, 5000.0), h("203.0.113.9", 32, 4500.0), h("198.51.100.0", 24, 3000.0)];
        drop_aggregates_of_heavy_sources(&mut v, 1000.0);
        let kept: Vec<String> = v.iter().map(|x| format!("{}/{}", x.addr, x.len)).collect();
        assert_eq!(kept, ["203.0.113.9/32", "198.51.100.0/24"]);
        let total =
            heavy_total(&[h("198.51.100.0", 24, 3000.0), h("198.51.100.5", 32, 400.0), h("10.0.0.1", 32, 500.0)]);
        assert!((total - 3500.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn a_flash_crowd_that_fills_a_queue_but_completes_is_not_an_attack() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        for _ in 0..20 {
            let mut s = g.tick(900.0, 895.0, 300.0, 40, &[]);
            s.listeners = vec![listener("10.0.0.1:80", 100, 128, 0)];
            let a = d.step(s);
            assert!(!a.over, "{:?}", a.evidence);
            assert!(a.listeners[0].pressured, "the pressure itself is shown");
        }
    }

    #[test]
    fn a_listener_dropping_attempts_is_under_pressure() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        let mut drops = 0;
        let mut a = None;
        for _ in 0..4 {
            drops += 50;
            let mut s = g.tick(300.0, 30.0, 280.0, 10, &[]);
            s.listeners = vec![listener("[2001:db8::1]:443", 3, 4096, drops)];
            a = Some(d.step(s));
        }
        let a = a.unwrap();
        assert_eq!(a.phase, Phase::Active);
        let e = a.evidence.iter().find(|e| e.rule == Rule::ListenerDrops).expect("drops evidence");
        assert_eq!((e.observed, e.subject.as_deref()), (200.0, Some("[2001:db8::1]:443")));
    }

    #[test]
    fn flash_crowd_of_real_clients_is_not_an_attack() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        // Normal: 200 conn/s. Then a flash crowd at 10x: 2000 SYN/s, all complete,
        // a few hundred new sources per second, half-open small.
        for _ in 0..20 {
            let a = d.step(g.tick(200.0, 200.0, 20.0, 5, &[]));
            assert_eq!(a.phase, Phase::Idle);
        }
        for _ in 0..40 {
            let a = d.step(g.tick(2000.0, 1990.0, 400.0, 40, &[]));
            assert!(!a.over, "{:?}", a.evidence);
            assert_eq!(a.phase, Phase::Idle);
            assert_eq!(a.kind, None);
        }
    }

    #[test]
    fn spoofed_flood_is_spoofed_and_starts_after_start_ticks() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        d.step(g.tick(100.0, 100.0, 5.0, 2, &[]));
        d.step(g.tick(100.0, 100.0, 5.0, 2, &[]));
        // The seed signature: many half-open, random (always new) sources.
        let a = d.step(g.tick(50_000.0, 100.0, 49_000.0, 30_000, &[]));
        assert!(a.over);
        assert_eq!(a.phase, Phase::Pending);
        let a = d.step(g.tick(50_000.0, 100.0, 49_000.0, 60_000, &[]));
        assert_eq!(a.phase, Phase::Active);
        assert_eq!(a.kind, Some(Kind::SpoofedRandom));
        assert_eq!(a.event, Some(Event::Started(Kind::SpoofedRandom)));
        let ev: Vec<&str> = a.evidence.iter().map(|e| e.rule.as_str()).collect();
        assert!(ev.contains(&"syn-rate") && ev.contains(&"new-source-ratio"), "{ev:?}");
        let sr = &a.evidence[0];
        assert_eq!((sr.observed, sr.threshold), (50_000.0, 1000.0));
    }

    #[test]
    fn one_heavy_source_is_few_heavy_and_named() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        let bad: IpAddr = "198.51.100.66".parse().unwrap();
        let good: IpAddr = "198.51.100.7".parse().unwrap();
        d.step(g.tick(100.0, 100.0, 1.0, 1, &[(good, 5.0)]));
        let mut last = None;
        for _ in 0..3 {
            last = Some(d.step(g.tick(20_100.0, 100.0, 1.0, 3000, &[(bad, 20_000.0), (good, 5.0)])));
        }
        let a = last.unwrap();
        assert_eq!(a.kind, Some(Kind::FewHeavySources));
        assert_eq!(a.heavy.len(), 1, "only the heavy one: {:?}", a.heavy);
        assert_eq!(a.heavy[0].addr, bad);
        assert!((a.heavy[0].syn_per_sec - 20_000.0).abs() < 1.0);
    }

    #[test]
    fn a_blocked_heavy_source_stays_heavy_not_spoofed() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        let bad: IpAddr = "198.51.100.66".parse().unwrap();
        d.step(g.tick(100.0, 100.0, 1.0, 1, &[]));
        for _ in 0..3 {
            d.step(g.tick(10_000.0, 50.0, 1.0, 3000, &[(bad, 10_000.0)]));
        }
        // Blocked: its SYNs now end as block-list drops; its own stats stop.
        let mut last = None;
        for _ in 0..8 {
            g.s.blocked += 2500;
            last = Some(d.step(g.tick(50.0, 50.0, 1.0, 3000, &[(bad, 0.0)])));
        }
        let a = last.unwrap();
        assert_eq!(a.phase, Phase::Active, "still under attack while it floods");
        assert_eq!(a.kind, Some(Kind::FewHeavySources), "{:?}", a.evidence);
    }

    #[test]
    fn distributed_real_sources() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        d.step(g.tick(100.0, 100.0, 1.0, 1, &[]));
        let mut a = None;
        for _ in 0..3 {
            // 10k SYN/s from recurring sources (few new); most complete,
            // but they hold the half-open count high.
            a = Some(d.step(g.tick(10_000.0, 7000.0, 50.0, 4000, &[])));
        }
        assert_eq!(a.unwrap().kind, Some(Kind::DistributedReal));
    }

    #[test]
    fn spoofed_flood_reusing_addresses_is_still_spoofed() {
        // A spoofed flood from a small prefix revisits addresses: few are
        // new, but none completes a handshake.
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        d.step(g.tick(100.0, 100.0, 1.0, 1, &[]));
        let mut a = None;
        for _ in 0..3 {
            a = Some(d.step(g.tick(50_000.0, 50.0, 500.0, 90_000, &[])));
        }
        let a = a.unwrap();
        assert_eq!(a.kind, Some(Kind::SpoofedRandom));
        assert!(
            a.evidence.iter().any(|e| e.rule == Rule::CompletionRatio && e.observed < e.threshold),
            "{:?}",
            a.evidence
        );
    }

    #[test]
    fn attack_ends_after_hold_down_not_before() {
        let c = DetectionConfig { hold_down_secs: 2.0, ..cfg() };
        let mut d = Detector::new(c);
        let mut g = Series::new();
        d.step(g.tick(0.0, 0.0, 0.0, 0, &[]));
        for _ in 0..4 {
            d.step(g.tick(50_000.0, 0.0, 49_000.0, 9000, &[]));
        }
        assert_eq!(d.phase(), Phase::Active);
        // Flood stops: cooling for 2 s (8 ticks of 0.25 s), then over.
        let mut ended_at = None;
        for i in 1..=12 {
            let a = d.step(g.tick(50.0, 50.0, 1.0, 3, &[]));
            if let Some(Event::Ended(k)) = a.event {
                assert_eq!(k, Kind::SpoofedRandom);
                ended_at = Some(i);
            } else if ended_at.is_none() {
                assert_eq!(a.phase, Phase::CoolingDown, "tick {i}");
                assert_eq!(a.kind, Some(Kind::SpoofedRandom), "kind kept while cooling");
            }
        }
        assert_eq!(ended_at, Some(8));
        assert_eq!(d.phase(), Phase::Idle);
    }

    #[test]
    fn a_blip_during_cooldown_reactivates_without_a_new_start() {
        let c = DetectionConfig { hold_down_secs: 2.0, ..cfg() };
        let mut d = Detector::new(c);
        let mut g = Series::new();
        d.step(g.tick(0.0, 0.0, 0.0, 0, &[]));
        for _ in 0..3 {
            d.step(g.tick(50_000.0, 0.0, 49_000.0, 9000, &[]));
        }
        d.step(g.tick(10.0, 10.0, 1.0, 0, &[]));
        assert_eq!(d.phase(), Phase::CoolingDown);
        let a = d.step(g.tick(50_000.0, 0.0, 49_000.0, 9000, &[]));
        assert_eq!(a.phase, Phase::Active);
        assert_eq!(a.event, None, "same attack, not a new one");
    }

    #[test]
    fn single_tick_spike_does_not_start_an_attack() {
        let mut d = Detector::new(cfg());
        let mut g = Series::new();
        d.step(g.tick(0.0, 0.0, 0.0, 0, &[]));
        let a = d.step(g.tick(50_000.0, 0.0, 49_000.0, 9000, &[]));
        assert_eq!(a.phase, Phase::Pending);
        let a = d.step(g.tick(10.0, 10.0, 1.0, 0, &[]));
        assert_eq!(a.phase, Phase::Idle);
        assert_eq!(a.event, None);
    }
}

//! What should be announced upstream now, and what is refused and why.
//! Pure: the daemon feeds it one [`Inputs`] per tick and the operator's
//! hand announcements; it keeps the table of announcements (each with its
//! cause, reason, age and expiry) that the gobgpd task reconciles to.
//!
//! Three causes:
//! - `block`: a block with an expiry that tcpguard holds (a heavy source or
//!   aggregate, `tcpguard block --ttl`), as "TCP SYN from the blocked prefix
//!   to each protected address and port → discard", until the block ends.
//! - `rate-limit`: the SYN rate reached `upstream.host-capacity`, as "TCP SYN
//!   without ACK to each protected address and port → traffic-rate", until
//!   `upstream.hold-down-secs` after the attack ended (or, with no attack
//!   declared, after the rate fell below the capacity).
//! - `operator`: `tcpguard upstream announce`, for its TTL.
//!
//! Guardrails, each refusal said once and shown in `status`: a source prefix
//! never wider than `upstream.widest-source-v4/-v6`, never covering an
//! allow-listed or local address, never a new one while a spoofed-random
//! flood is on (its sources are forged); destinations only the host's own
//! protected addresses; at most `upstream.max-announcements`, at most
//! `upstream.max-new-per-minute` new ones a minute; each withdrawn at the
//! latest `upstream.max-ttl-secs` after it was made, and not made again
//! while its cause lasts.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{Action, Rule};
use crate::{config::UpstreamConfig, net::Prefix};

const NS: u64 = 1_000_000_000;

/// Why an announcement stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    Block,
    RateLimit,
    Operator,
}

impl Cause {
    pub const ALL: [Cause; 3] = [Cause::Block, Cause::RateLimit, Cause::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Block => "block",
            Cause::RateLimit => "rate-limit",
            Cause::Operator => "operator",
        }
    }
}

/// One rule tcpguard has announced (or, in monitor mode, would).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub rule: Rule,
    pub cause: Cause,
    pub reason: String,
    /// CLOCK_MONOTONIC: when it was made, and when it ends at the latest.
    pub since_ns: u64,
    pub expires_ns: u64,
}

/// A rule not announced, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub what: String,
    pub reason: String,
}

/// A block as the planner needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockIn {
    pub prefix: Prefix,
    /// CLOCK_MONOTONIC expiry; 0 = until unblocked (never announced).
    pub expires_ns: u64,
    /// From `datapath.block` (the operator's standing policy: never announced).
    pub configured: bool,
}

/// One tick's view of the host.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub now_ns: u64,
    pub blocks: Vec<BlockIn>,
    pub syn_per_sec: f64,
    /// A SYN flood is on (active or cooling down).
    pub attack: bool,
    /// A spoofed-random SYN flood is on (active or cooling down).
    pub spoofed: bool,
    /// The host's own protected addresses, as host prefixes.
    pub destinations: Vec<Prefix>,
    /// The protected ports (none: every port).
    pub ports: Vec<u16>,
    pub allow: Vec<Prefix>,
    /// Every address of the host.
    pub local: Vec<IpAddr>,
    /// Policy monitor: nothing is announced, what would be is logged.
    pub monitor: bool,
}

/// An operator's announcement by hand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandRule {
    pub src: Option<Prefix>,
    /// None: every protected address of the source's family.
    pub dst: Option<Prefix>,
    pub port: Option<u16>,
    /// Bytes per second; None: discard.
    pub rate_limit: Option<u64>,
    pub ttl_secs: Option<u64>,
}

pub struct Planner {
    cfg: UpstreamConfig,
    /// By the rule's match.
    table: BTreeMap<String, Announcement>,
    /// Ended by the TTL cap or withdrawn by hand: not made again while
    /// their cause lasts.
    suppressed: BTreeSet<String>,
    /// When the last new announcements were made (the per-minute limit).
    recent: VecDeque<u64>,
    /// The rate-limit rules stand until then; the highest rate seen.
    capacity_until: u64,
    capacity_peak: f64,
    /// This tick's refusals, by the rule's match.
    refused: BTreeMap<String, Refusal>,
    /// Refusals so far (each counted when it starts).
    pub refused_total: u64,
    last: Inputs,
}

impl Planner {
    pub fn new(cfg: UpstreamConfig) -> Self {
        Planner {
            cfg,
            table: BTreeMap::new(),
            suppressed: BTreeSet::new(),
            recent: VecDeque::new(),
            capacity_until: 0,
            capacity_peak: 0.0,
            refused: BTreeMap::new(),
            refused_total: 0,
            last: Inputs::default(),
        }
    }

    /// A reloaded config: the limits apply from the next step.
    pub fn set_config(&mut self, cfg: UpstreamConfig) {
        self.cfg = cfg;
    }

    pub fn announcements(&self) -> impl Iterator<Item = &Announcement> {
        self.table.values()
    }

    pub fn refused(&self) -> impl Iterator<Item = &Refusal> {
        self.refused.values()
    }

    /// Policy monitor: the table is what would be announced.
    pub fn monitor(&self) -> bool {
        self.last.monitor
    }

    /// What gobgpd should hold: nothing in monitor mode.
    pub fn desired(&self) -> Vec<Rule> {
        if self.last.monitor {
            return Vec::new();
        }
        self.table.values().map(|a| a.rule.clone()).collect()
    }

    /// One tick. Returns what to log (each refusal and change once).
    pub fn step(&mut self, inp: Inputs) -> Vec<String> {
        let now = inp.now_ns;
        let mut log = Vec::new();
        let mut refused = BTreeMap::new();
        let candidates = self.candidates(&inp, &mut log, &mut refused);
        let keys: BTreeSet<String> = candidates.iter().map(|(r, ..)| r.key()).collect();
        // What stands: renewed by its cause, ended by it or by the TTL cap.
        let max_ttl = self.cfg.max_ttl_secs.saturating_mul(NS);
        let mut ended = Vec::new();
        for (k, a) in &mut self.table {
            if a.cause != Cause::Operator {
                match candidates.iter().find(|(r, ..)| &r.key() == k) {
                    Some((r, _, reason, exp)) => {
                        a.expires_ns = (*exp).min(a.since_ns.saturating_add(max_ttl));
                        a.rule = r.clone();
                        a.reason.clone_from(reason);
                    }
                    None => a.expires_ns = now,
                }
            }
            if a.expires_ns <= now {
                ended.push(k.clone());
            }
        }
        for k in ended {
            let a = self.table.remove(&k).expect("in the table");
            if keys.contains(&k) {
                log.push(format!(
                    "upstream: withdrawing {} after upstream.max-ttl-secs ({} s); not announced again while its \
                     cause lasts",
                    a.rule, self.cfg.max_ttl_secs
                ));
                self.suppressed.insert(k);
            } else {
                log.push(format!("upstream: withdrawing {} ({} ended)", a.rule, a.cause.as_str()));
            }
        }
        self.suppressed.retain(|k| keys.contains(k));
        // New ones, within the limits.
        for (rule, cause, reason, exp) in candidates {
            let k = rule.key();
            if self.table.contains_key(&k) || self.suppressed.contains(&k) {
                continue;
            }
            if let Err(why) = self.admit(&rule, cause, &inp) {
                refused.insert(k, Refusal { what: rule.to_string(), reason: why });
                continue;
            }
            if inp.monitor {
                log.push(format!("upstream: policy monitor: would announce {rule} ({reason})"));
            } else {
                log.push(format!("upstream: announcing {rule} ({reason})"));
            }
            self.recent.push_back(now);
            let expires_ns = exp.min(now.saturating_add(max_ttl));
            self.table.insert(k, Announcement { rule, cause, reason, since_ns: now, expires_ns });
        }
        self.note_refusals(refused, &mut log);
        self.last = inp;
        log
    }

    /// Refusals that started this tick are logged and counted.
    fn note_refusals(&mut self, refused: BTreeMap<String, Refusal>, log: &mut Vec<String>) {
        for (k, r) in &refused {
            if self.refused.get(k).is_none_or(|old| old.reason != r.reason) {
                self.refused_total += 1;
                log.push(format!("upstream: not announcing {}: {}", r.what, r.reason));
            }
        }
        self.refused = refused;
    }

    /// Room for one more new announcement: the cap, the per-minute limit,
    /// and no new source rule in a spoofed flood.
    fn admit(&mut self, rule: &Rule, cause: Cause, inp: &Inputs) -> Result<(), String> {
        if rule.src.is_some() && cause == Cause::Block && inp.spoofed {
            return Err("a spoofed-random flood is on: its sources are forged, a source rule would stop nothing \
                        and could cut off whoever owns the address"
                .into());
        }
        if self.table.len() >= self.cfg.max_announcements {
            return Err(format!("upstream.max-announcements ({}) reached", self.cfg.max_announcements));
        }
        let minute_ago = inp.now_ns.saturating_sub(60 * NS);
        while self.recent.front().is_some_and(|t| *t <= minute_ago) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.cfg.max_new_per_minute {
            return Err(format!(
                "upstream.max-new-per-minute ({}) reached; retried when the minute allows",
                self.cfg.max_new_per_minute
            ));
        }
        Ok(())
    }

    /// Every rule the host's state calls for now: (rule, cause, reason,
    /// expiry). Sources that fail a guardrail are refused here.
    fn candidates(
        &mut self,
        inp: &Inputs,
        log: &mut Vec<String>,
        refused: &mut BTreeMap<String, Refusal>,
    ) -> Vec<(Rule, Cause, String, u64)> {
        let now = inp.now_ns;
        let mut out = Vec::new();
        let cap = self.cfg.host_capacity;
        let over = cap > 0 && inp.syn_per_sec >= cap as f64;
        let standing = self.capacity_until > now;
        if over || (standing && inp.attack) {
            if !standing {
                log.push(format!(
                    "upstream: {:.0} SYN/s reached upstream.host-capacity ({cap}/s): rate-limiting SYNs upstream",
                    inp.syn_per_sec
                ));
                self.capacity_peak = 0.0;
            }
            self.capacity_peak = self.capacity_peak.max(inp.syn_per_sec);
            self.capacity_until = now.saturating_add((self.cfg.hold_down_secs * 1e9) as u64);
        }
        if self.capacity_until > now {
            let reason = format!("SYN rate up to {:.0}/s over upstream.host-capacity {cap}/s", self.capacity_peak);
            let bytes = self.cfg.rate_limit_bytes_per_sec as f32;
            for d in &inp.destinations {
                let rule = Rule {
                    dst: *d,
                    src: None,
                    dports: inp.ports.clone(),
                    syn_only: true,
                    action: Action::RateLimit { bytes_per_sec: bytes },
                };
                out.push((rule, Cause::RateLimit, reason.clone(), self.capacity_until));
            }
        }
        if self.cfg.announce_blocks {
            for b in inp.blocks.iter().filter(|b| !b.configured && b.expires_ns > now) {
                let rules = self.source_rules(b.prefix, None, &inp.ports, Action::Discard, inp);
                let reason = format!("blocked {} for {} s more", b.prefix, (b.expires_ns - now) / NS);
                match rules {
                    Ok(rules) => out.extend(rules.into_iter().map(|r| (r, Cause::Block, reason.clone(), b.expires_ns))),
                    Err(why) => {
                        refused.insert(
                            format!("block {}", b.prefix),
                            Refusal { what: format!("the block on {}", b.prefix), reason: why },
                        );
                    }
                }
            }
        }
        out
    }

    /// The rules for a source prefix: one per protected destination of its
    /// family (or `dst`), after the source's guardrails.
    fn source_rules(
        &self,
        src: Prefix,
        dst: Option<Prefix>,
        ports: &[u16],
        action: Action,
        inp: &Inputs,
    ) -> Result<Vec<Rule>, String> {
        self.check_source(&src, inp)?;
        let dsts: Vec<Prefix> = match dst {
            Some(d) => vec![d],
            None => inp.destinations.iter().filter(|d| d.addr.is_ipv4() == src.addr.is_ipv4()).copied().collect(),
        };
        if dsts.is_empty() {
            return Err(format!(
                "no protected address of the host is {} (upstream.destinations)",
                if src.addr.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        Ok(dsts
            .into_iter()
            .map(|d| Rule { dst: d, src: Some(src), dports: ports.to_vec(), syn_only: true, action })
            .collect())
    }

    /// A source prefix may be announced: not wider than the limit, covering
    /// no allow-listed and no local address.
    fn check_source(&self, p: &Prefix, inp: &Inputs) -> Result<(), String> {
        let (widest, key) = if p.addr.is_ipv4() {
            (self.cfg.widest_source_v4, "upstream.widest-source-v4")
        } else {
            (self.cfg.widest_source_v6, "upstream.widest-source-v6")
        };
        if p.len < widest {
            return Err(format!("{p} is wider than /{widest} ({key})"));
        }
        if let Some(a) = inp.allow.iter().find(|a| p.contains(a.addr) || a.contains(p.addr)) {
            return Err(format!("{p} covers the allow-listed {a}"));
        }
        if let Some(l) = inp.local.iter().find(|l| p.contains(**l)) {
            return Err(format!("{p} covers the host's own address {l}"));
        }
        Ok(())
    }

    /// `tcpguard upstream announce`: the same guardrails, a TTL (the
    /// default or the one given, at most upstream.max-ttl-secs).
    pub fn announce_by_hand(&mut self, h: &HandRule) -> Result<Vec<Rule>, String> {
        let inp = self.last.clone();
        if inp.monitor {
            return Err("policy monitor announces nothing".into());
        }
        let ttl = h.ttl_secs.unwrap_or(self.cfg.default_ttl_secs);
        if ttl == 0 || ttl > self.cfg.max_ttl_secs {
            return Err(format!("the TTL {ttl} s is outside 1..={} s (upstream.max-ttl-secs)", self.cfg.max_ttl_secs));
        }
        if let Some(d) = &h.dst {
            if !inp.destinations.contains(d) {
                let mine: Vec<String> = inp.destinations.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{d} is not one of the host's protected addresses ({})",
                    if mine.is_empty() { "none".to_string() } else { mine.join(", ") }
                ));
            }
        }
        let action = h.rate_limit.map_or(Action::Discard, |b| Action::RateLimit { bytes_per_sec: b as f32 });
        let ports: Vec<u16> = h.port.map_or_else(|| inp.ports.clone(), |p| vec![p]);
        let rules = if let Some(src) = h.src {
            self.source_rules(src, h.dst, &ports, action, &inp)?
        } else {
            if action == Action::Discard {
                return Err("a discard without a source would cut off every client: give --src, or \
                            --rate-limit for a rate limit of every source"
                    .into());
            }
            let dsts: Vec<Prefix> = h.dst.map_or_else(|| inp.destinations.clone(), |d| vec![d]);
            if dsts.is_empty() {
                return Err("the host has no protected address (upstream.destinations)".into());
            }
            dsts.into_iter()
                .map(|d| Rule { dst: d, src: None, dports: ports.clone(), syn_only: true, action })
                .collect()
        };
        let now = inp.now_ns;
        let fresh: Vec<&Rule> = rules.iter().filter(|r| !self.table.contains_key(&r.key())).collect();
        if self.table.len() + fresh.len() > self.cfg.max_announcements {
            return Err(format!("upstream.max-announcements ({}) would be exceeded", self.cfg.max_announcements));
        }
        let minute_ago = now.saturating_sub(60 * NS);
        let recent = self.recent.iter().filter(|t| **t > minute_ago).count();
        if recent + fresh.len() > self.cfg.max_new_per_minute {
            return Err(format!("upstream.max-new-per-minute ({}) would be exceeded", self.cfg.max_new_per_minute));
        }
        for r in &rules {
            let k = r.key();
            if !self.table.contains_key(&k) {
                self.recent.push_back(now);
            }
            self.suppressed.remove(&k);
            let a = Announcement {
                rule: r.clone(),
                cause: Cause::Operator,
                reason: "tcpguard upstream announce".into(),
                since_ns: now,
                expires_ns: now.saturating_add(ttl * NS),
            };
            self.table.insert(k, a);
        }
        Ok(rules)
    }

    /// `tcpguard upstream withdraw`: every announcement matching the source
    /// (and the destination and port, when given). One the host's state
    /// still calls for is not made again while its cause lasts.
    pub fn withdraw_by_hand(&mut self, src: Option<Prefix>, dst: Option<Prefix>, port: Option<u16>) -> Vec<Rule> {
        let hit = |a: &Announcement| {
            a.rule.src == src && dst.is_none_or(|d| a.rule.dst == d) && port.is_none_or(|p| a.rule.dports.contains(&p))
        };
        let keys: Vec<String> = self.table.iter().filter(|(_, a)| hit(a)).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for k in keys {
            let a = self.table.remove(&k).expect("in the table");
            if a.cause != Cause::Operator {
                self.suppressed.insert(k);
            }
            out.push(a.rule);
        }
        out
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

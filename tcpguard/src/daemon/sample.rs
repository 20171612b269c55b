//! The tick's first step, every reading in one place: maps →
//! `detect::Sample` (the counters, the half-open ring, attack mode's
//! distinct-source estimate, the heavy sources the datapath reported), and
//! beside it the datapaths' attack mode, the block-lists, whether each XDP
//! link is still attached, and the kernel's view. Read once per tick, with a
//! cost that does not grow with the number of sources.

use std::{collections::HashMap, net::IpAddr};

use anyhow::Result;
use tcpguard_common::{halfopen::Tally, Counter, Counters, SrcStats};

use crate::{
    daemon::{
        datapaths::{Datapaths, DpAttack},
        detect::{Sample, SourceSample},
        kernel,
        listeners::{self, ListenerSample},
        mitigate::BlockList,
    },
    model::KernelView,
    net::Prefix,
};

/// Followed heavy sources: dropped after this long without new SYNs.
const FOLLOW_SECS: f64 = 10.0;
/// At most this many followed sources (point lookups per tick).
const FOLLOW_MAX: usize = 4096;

struct Followed {
    syns_at_report: u64,
    last_syns: u64,
    last_growth: f64,
}

/// What one tick read.
pub struct Reading {
    pub sample: Sample,
    /// All interfaces' counters summed (each interface's are in `Datapaths`).
    pub counters: Counters,
    /// The datapaths' attack mode, and their ACK-checking mode.
    pub attack: DpAttack,
    pub ack_mode: DpAttack,
    /// The block-lists (the same on every interface).
    pub blocks: BlockList,
    pub kernel: KernelView,
}

#[derive(Default)]
pub struct Sampler {
    tally: Tally,
    /// Heavy sources (host prefixes) and aggregates (/24, /64).
    followed: HashMap<Prefix, Followed>,
    /// Sum of the per-tick distinct-source estimates (attack mode).
    attack_distinct: u64,
    pub distinct_per_sec: f64,
    pub half_open: u64,
    prev_t: Option<f64>,
}

impl Sampler {
    pub fn failed_total(&self) -> u64 {
        self.tally.failed_total
    }

    /// A source or aggregate the datapath reported heavy: follow it with
    /// point lookups.
    pub fn follow(&mut self, what: Prefix, syns: u64, t: f64) {
        self.followed.entry(what).or_insert(Followed { syns_at_report: syns, last_syns: syns, last_growth: t });
    }

    pub fn read(
        &mut self,
        dps: &mut Datapaths,
        (t, now): (f64, u64),
        half_open_timeout_secs: u64,
        ports: &[u16],
    ) -> Result<Reading> {
        let c = dps.counters()?;
        let attack = dps.attack()?;
        let ack_mode = dps.ack_mode()?;
        let blocks = dps.blocks()?;
        dps.check_attached();
        let slots = dps.half_open_slots()?;
        self.half_open = self.tally.update(&slots, now / 1_000_000_000, half_open_timeout_secs);
        // Distinct sources since the last tick (attack mode's estimate).
        let distinct = dps.take_distinct()?;
        self.attack_distinct += distinct.round() as u64;
        self.distinct_per_sec = distinct / self.prev_t.map_or(1.0, |p| (t - p).max(1e-3));
        self.prev_t = Some(t);
        let sources = self.followed_sources(dps, t)?;
        let (all, syn_recv) = listeners::read().unwrap_or_else(|e| {
            log::debug!("sock_diag: {e}");
            (Vec::new(), 0)
        });
        let kernel = kernel::read_view(syn_recv);
        let sample = Sample {
            t,
            // SYNs the server refused (a closed port: a scan) are not a
            // SYN flood's.
            syn: c.get(Counter::Syn).saturating_sub(c.get(Counter::SynRefused) + c.get(Counter::CookieNoListener)),
            // A blocked flood is an ongoing (mitigated) attack, not a finished
            // one. SYNs only: blocking a prefix with established flows must
            // not raise or prolong an attack.
            blocked: c.get(Counter::DropBlocked),
            // Handshakes completed through the tracker, and through cookies.
            completed: c.get(Counter::HandshakeCompleted) + c.get(Counter::CookieAckValid),
            // Attack mode inserts no source: its distinct-source estimate
            // stands in for the table's new entries.
            new_sources: c.get(Counter::NewSource) + self.attack_distinct,
            half_open: self.half_open,
            sources,
            listeners: exposed(all, ports),
            // Answered by the kernel (its RSTs, on egress), or checked and
            // dropped (or, in monitor mode, counted) in XDP.
            unmatched_acks: c.get(Counter::AckUnmatched)
                + c.get(Counter::DropAckInvalid)
                + c.get(Counter::MonitorAckInvalid),
            kernel_rsts: kernel.out_rsts,
            egress: dps.egress(),
            ack_mode_by_datapath: ack_mode.active && ack_mode.by_datapath,
        };
        Ok(Reading { sample, counters: c, attack, ack_mode, blocks, kernel })
    }

    /// Point lookups of the followed sources only: cost grows with the
    /// number of heavy sources, not with the size of the source table.
    fn followed_sources(&mut self, dps: &mut Datapaths, t: f64) -> Result<Vec<SourceSample>> {
        let mut sources = Vec::with_capacity(self.followed.len());
        let keys: Vec<Prefix> = self.followed.keys().copied().collect();
        for key in keys {
            let host = key.is_host();
            let found = if host {
                source(dps, key.addr)?.map(|s| (s.syns, s.completed, s.half_open))
            } else {
                aggregate(dps, key.addr)?.map(|syns| (syns, 0, 0))
            };
            let f = self.followed.get_mut(&key).expect("key from the map");
            let Some((syns, completed, half_open)) = found else {
                f.last_growth = f64::MIN;
                continue;
            };
            if syns > f.last_syns {
                f.last_syns = syns;
                f.last_growth = t;
            }
            sources.push(SourceSample {
                addr: key.addr,
                len: key.len,
                syns,
                completed,
                half_open,
                syns_at_report: f.syns_at_report,
            });
        }
        self.followed.retain(|_, f| t - f.last_growth < FOLLOW_SECS);
        if self.followed.len() > FOLLOW_MAX {
            let mut v: Vec<(Prefix, f64)> = self.followed.iter().map(|(a, f)| (*a, f.last_growth)).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (a, _) in v.into_iter().skip(FOLLOW_MAX) {
                self.followed.remove(&a);
            }
        }
        Ok(sources)
    }
}

/// One source's statistics summed over interfaces; `None` if none tracks it.
fn source(dps: &mut Datapaths, addr: IpAddr) -> Result<Option<SrcStats>> {
    let mut total: Option<SrcStats> = None;
    for s in dps.each(|_, m| m.source(addr))?.into_iter().flatten() {
        let t = total.get_or_insert_with(SrcStats::default);
        t.syns += s.syns;
        t.completed += s.completed;
        t.half_open += s.half_open;
        t.dropped += s.dropped;
    }
    Ok(total)
}

/// An aggregate's SYNs summed over interfaces; `None` if none counts it.
fn aggregate(dps: &mut Datapaths, net: IpAddr) -> Result<Option<u64>> {
    let found: Vec<_> = dps.each(|_, m| m.aggregate(net))?.into_iter().flatten().collect();
    Ok((!found.is_empty()).then(|| found.iter().map(|a| a.syns).sum()))
}

/// The listeners a flood from the network can reach: not bound to a
/// loopback address (the daemon's own metrics listener, local services),
/// and on a protected port when `datapath.ports` names any.
fn exposed(all: Vec<ListenerSample>, ports: &[u16]) -> Vec<ListenerSample> {
    all.into_iter()
        .filter(|l| l.addr.is_some_and(|a| !a.ip().is_loopback() && (ports.is_empty() || ports.contains(&a.port()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listeners_the_network_reaches_count() {
        let l = |a: &str| ListenerSample { addr: Some(a.parse().unwrap()), backlog: 5, ..ListenerSample::default() };
        let all = vec![l("127.0.0.1:9717"), l("[::1]:25"), l("0.0.0.0:80"), l("10.0.0.1:22"), l("[::]:443")];
        let names = |v: Vec<ListenerSample>| v.iter().map(|x| x.addr.unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(names(exposed(all.clone(), &[])), ["0.0.0.0:80", "10.0.0.1:22", "[::]:443"]);
        assert_eq!(names(exposed(all, &[80, 443])), ["0.0.0.0:80", "[::]:443"]);
    }
}

//! Policy: assessment -> actions. Pure; remembers only what a policy must
//! (repeat offences, whether it forced SYN cookies, the blocks it added).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use crate::{
    config::{PolicyConfig, PolicyMode},
    daemon::detect::{Assessment, Kind, Phase},
    model::BlockOrigin,
    net::Prefix,
};

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Block { prefix: Prefix, ttl_secs: u64, origin: BlockOrigin },
    ForceCookies,
    RestoreCookies,
}

#[derive(Clone, Debug)]
pub struct Policy {
    cfg: PolicyConfig,
    offences: HashMap<IpAddr, u32>,
    /// Aggregates already reported as not blocked (they cover an
    /// allow-listed address): said once, not every tick.
    warned: std::collections::HashSet<Prefix>,
    /// ForceCookies was said and RestoreCookies not yet (each said once).
    cookies_forced: bool,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Self {
        Policy { cfg, offences: HashMap::new(), warned: std::collections::HashSet::new(), cookies_forced: false }
    }

    pub fn mode(&self) -> PolicyMode {
        self.cfg.mode
    }

    /// A reloaded `[policy]`; what it remembers (offences, forced cookies) stays.
    pub fn reconfigure(&mut self, cfg: PolicyConfig) {
        self.cfg = cfg;
    }

    /// Actions for this tick. `allow` is the allow-list, `blocked` what is
    /// blocked now, `daemon_blocks` how many of those the daemon added.
    pub fn decide(
        &mut self,
        a: &Assessment,
        allow: &[Prefix],
        blocked: &HashSet<Prefix>,
        daemon_blocks: usize,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let mode = self.cfg.mode;
        let active = matches!(a.phase, Phase::Active | Phase::CoolingDown);
        if !active {
            if self.cookies_forced {
                self.cookies_forced = false;
                out.push(Action::RestoreCookies);
            }
            return out;
        }
        let Some(kind) = a.kind else { return out };
        let block = matches!((mode, kind), (PolicyMode::Drop | PolicyMode::Auto, Kind::FewHeavySources));
        let cookies = match mode {
            PolicyMode::SynCookie => true,
            PolicyMode::Auto => matches!(kind, Kind::SpoofedRandom | Kind::DistributedReal),
            PolicyMode::Drop | PolicyMode::Monitor => false,
        };
        if cookies && !self.cookies_forced {
            self.cookies_forced = true;
            out.push(Action::ForceCookies);
        }
        if block && a.phase == Phase::Active {
            let mut room = self.cfg.max_blocked.saturating_sub(daemon_blocks);
            for h in &a.heavy {
                let prefix = Prefix::new(h.addr, h.len);
                // Never block an allow-listed address, whether the block is
                // the address itself or an aggregate covering it.
                let covers_allowed = allow.iter().any(|p| p.contains(h.addr) || prefix.contains(p.addr));
                if blocked.iter().any(|b| b.contains(h.addr) && b.len <= prefix.len) || covers_allowed {
                    if covers_allowed && !prefix.is_host() && self.warned.insert(prefix) {
                        log::warn!("not blocking the heavy aggregate {prefix}: it covers an allow-listed address");
                    }
                    continue;
                }
                if room == 0 {
                    log::warn!("block-list cap ({}) reached: not blocking {}", self.cfg.max_blocked, h.addr);
                    break;
                }
                room -= 1;
                let n = self.offences.entry(h.addr).or_insert(0);
                let ttl = self.cfg.block_ttl_secs.saturating_mul(1u64 << (*n).min(20)).min(self.cfg.block_ttl_max_secs);
                *n += 1;
                out.push(Action::Block {
                    prefix,
                    ttl_secs: ttl,
                    origin: BlockOrigin::HeavySource { syn_per_sec: h.syn_per_sec, half_open: h.half_open },
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::detect::{Evidence, HeavySource, Rates};

    fn assessment(phase: Phase, kind: Option<Kind>, heavy: &[&str]) -> Assessment {
        Assessment {
            over: phase == Phase::Active,
            phase,
            kind,
            evidence: vec![Evidence::new(crate::model::Rule::SynRate, 1.0, 1.0)],
            event: None,
            rates: Rates::default(),
            heavy: heavy
                .iter()
                .map(|a| {
                    // "net/len" is an aggregate, a bare address a source.
                    let p: Prefix = a.parse().unwrap();
                    HeavySource { addr: p.addr, len: p.len, syn_per_sec: 5000.0, half_open: 100, completed: 0 }
                })
                .collect(),
            listeners: Vec::new(),
            since: Some(1.0),
            ack: crate::daemon::detect::AckAssessment::default(),
        }
    }

    #[test]
    fn auto_blocks_heavy_sources_never_allowed_ones() {
        let mut p = Policy::new(PolicyConfig::default());
        let allow: Vec<Prefix> = vec!["192.0.2.0/24".parse().unwrap()];
        let a = assessment(Phase::Active, Some(Kind::FewHeavySources), &["198.51.100.66", "192.0.2.9"]);
        let acts = p.decide(&a, &allow, &HashSet::new(), 0);
        assert_eq!(acts.len(), 1, "{acts:?}");
        match &acts[0] {
            Action::Block { prefix, ttl_secs, .. } => {
                assert_eq!(prefix.to_string(), "198.51.100.66/32");
                assert_eq!(*ttl_secs, 60);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_heavy_aggregate_is_blocked_as_the_prefix_unless_it_covers_an_allowed_address() {
        let mut p = Policy::new(PolicyConfig::default());
        let a = assessment(Phase::Active, Some(Kind::FewHeavySources), &["198.51.100.0/24", "2001:db8:1:2::/64"]);
        let blocks: Vec<String> = p
            .decide(&a, &[], &HashSet::new(), 0)
            .iter()
            .map(|x| match x {
                Action::Block { prefix, .. } => prefix.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(blocks, ["198.51.100.0/24", "2001:db8:1:2::/64"]);
        // One allow-listed address inside: the aggregate is never blocked.
        let allow: Vec<Prefix> = vec!["198.51.100.7".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(p.decide(&a, &allow, &HashSet::new(), 0).is_empty());
        // A source inside an aggregate already blocked is not blocked again.
        let inside = assessment(Phase::Active, Some(Kind::FewHeavySources), &["198.51.100.9"]);
        let blocked: HashSet<Prefix> = ["198.51.100.0/24".parse().unwrap()].into_iter().collect();
        assert!(p.decide(&inside, &[], &blocked, 1).is_empty());
    }

    #[test]
    fn repeat_offenders_get_longer_blocks_capped() {
        let mut p =
            Policy::new(PolicyConfig { block_ttl_secs: 60, block_ttl_max_secs: 200, ..PolicyConfig::default() });
        let a = assessment(Phase::Active, Some(Kind::FewHeavySources), &["198.51.100.66"]);
        let ttls: Vec<u64> = (0..4)
            .map(|_| match &p.decide(&a, &[], &HashSet::new(), 0)[0] {
                Action::Block { ttl_secs, .. } => *ttl_secs,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ttls, vec![60, 120, 200, 200]);
    }

    #[test]
    fn block_list_cap_is_respected() {
        let mut p = Policy::new(PolicyConfig { max_blocked: 3, ..PolicyConfig::default() });
        let a = assessment(Phase::Active, Some(Kind::FewHeavySources), &["198.51.100.1", "198.51.100.2"]);
        assert_eq!(p.decide(&a, &[], &HashSet::new(), 2).len(), 1);
        assert_eq!(p.decide(&a, &[], &HashSet::new(), 3).len(), 0);
    }

    #[test]
    fn spoofed_floods_get_cookies_never_blocks() {
        for mode in [PolicyMode::Auto, PolicyMode::SynCookie] {
            let mut p = Policy::new(PolicyConfig { mode, ..PolicyConfig::default() });
            // Even if some spoofed address looked heavy, spoofed kind never blocks.
            let a = assessment(Phase::Active, Some(Kind::SpoofedRandom), &["203.0.113.5"]);
            assert_eq!(p.decide(&a, &[], &HashSet::new(), 0), vec![Action::ForceCookies]);
            // Forced once, not again; kept while cooling down.
            assert!(p.decide(&a, &[], &HashSet::new(), 0).is_empty());
            let cooling = assessment(Phase::CoolingDown, Some(Kind::SpoofedRandom), &[]);
            assert!(p.decide(&cooling, &[], &HashSet::new(), 0).is_empty());
            // Over: restore.
            let idle = assessment(Phase::Idle, None, &[]);
            assert_eq!(p.decide(&idle, &[], &HashSet::new(), 0), vec![Action::RestoreCookies]);
        }
        let mut p = Policy::new(PolicyConfig { mode: PolicyMode::Drop, ..PolicyConfig::default() });
        let a = assessment(Phase::Active, Some(Kind::SpoofedRandom), &["203.0.113.5"]);
        assert!(p.decide(&a, &[], &HashSet::new(), 0).is_empty());
    }

    #[test]
    fn monitor_does_nothing() {
        let mut p = Policy::new(PolicyConfig { mode: PolicyMode::Monitor, ..PolicyConfig::default() });
        for k in Kind::ALL {
            let a = assessment(Phase::Active, Some(k), &["198.51.100.66"]);
            assert!(p.decide(&a, &[], &HashSet::new(), 0).is_empty());
        }
    }
}

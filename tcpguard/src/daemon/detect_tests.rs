//! Unit tests of `detect`.
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
    fn tick(&mut self, syn: f64, completed: f64, new_src: f64, half_open: u64, sources: &[(IpAddr, f64)]) -> Sample {
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
        s.sources.push(SourceSample { addr: net, len: 24, syns: agg, completed: 0, half_open: 0, syns_at_report: 0 });
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
    let total = heavy_total(&[h("198.51.100.0", 24, 3000.0), h("198.51.100.5", 32, 400.0), h("10.0.0.1", 32, 500.0)]);
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
    assert!(a.evidence.iter().any(|e| e.rule == Rule::CompletionRatio && e.observed < e.threshold), "{:?}", a.evidence);
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

impl Series {
    /// One tick of a SYN-calm host with `acks` unmatched ACKs/s (and as many
    /// kernel RSTs/s when `rsts`).
    fn ack_tick(&mut self, acks: f64, rsts: f64, by_datapath: bool) -> Sample {
        self.s.egress = true;
        self.s.unmatched_acks += (acks * self.tick) as u64;
        self.s.kernel_rsts += (rsts * self.tick) as u64;
        self.s.ack_mode_by_datapath = by_datapath;
        self.tick(10.0, 10.0, 1.0, 0, &[])
    }
}

#[test]
fn an_ack_flood_is_named_with_its_evidence_and_ends_after_the_hold_down() {
    let mut d = Detector::new(cfg());
    let mut g = Series::new();
    // Stale connections after a restart: a few hundred RSTs/s are no flood.
    for _ in 0..8 {
        let a = d.step(g.ack_tick(300.0, 300.0, false));
        assert!(!a.ack.over && a.ack.phase == Phase::Idle && a.kinds().is_empty(), "{a:?}");
    }
    // 100k unmatched ACKs/s: pending one tick, then active.
    let a = d.step(g.ack_tick(100_000.0, 100_000.0, false));
    assert_eq!((a.ack.over, a.ack.phase, a.ack.event), (true, Phase::Pending, None));
    let a = d.step(g.ack_tick(100_000.0, 100_000.0, false));
    assert_eq!(a.ack.event, Some(Event::Started(Kind::AckFlood)));
    assert_eq!(a.kinds(), vec![Kind::AckFlood]);
    // The SYN side is untouched: no SYN flood kind, no SYN event.
    assert_eq!((a.phase, a.kind, a.event), (Phase::Idle, None, None));
    let rules: Vec<Rule> = a.ack.evidence.iter().map(|e| e.rule).collect();
    assert_eq!(rules, vec![Rule::AckRate, Rule::KernelRsts]);
    assert!((a.ack.unmatched_per_sec - 100_000.0).abs() < 1.0, "{}", a.ack.unmatched_per_sec);
    // Dropped in XDP: the kernel sends no RSTs, the datapath still counts.
    for _ in 0..4 {
        let a = d.step(g.ack_tick(100_000.0, 0.0, false));
        assert!(a.ack.over && a.ack.active() && a.ack.event.is_none());
    }
    // Over: cooling down for the hold-down (5 s = 20 ticks), then ended.
    let mut ended = None;
    for i in 0..40 {
        let a = d.step(g.ack_tick(0.0, 0.0, false));
        if a.ack.event.is_some() {
            ended = Some((i, a.ack.event));
            break;
        }
        assert_eq!(a.ack.phase, Phase::CoolingDown);
    }
    let (i, ev) = ended.expect("ended");
    assert_eq!(ev, Some(Event::Ended(Kind::AckFlood)));
    assert!((19..=20).contains(&i), "ended after {i} quiet ticks");
}

#[test]
fn the_datapaths_own_entry_counts_as_the_first_tick_over() {
    let mut d = Detector::new(cfg());
    let mut g = Series::new();
    d.step(g.ack_tick(0.0, 0.0, false));
    let a = d.step(g.ack_tick(80_000.0, 80_000.0, true));
    assert_eq!(a.ack.event, Some(Event::Started(Kind::AckFlood)), "{a:?}");
    assert!(a.ack.evidence.iter().any(|e| e.rule == Rule::DatapathAckMode));
    // An entry alone, under min-ack-rate (a burst of 5 ms), declares nothing.
    let mut d = Detector::new(cfg());
    let mut g = Series::new();
    d.step(g.ack_tick(0.0, 0.0, false));
    let a = d.step(g.ack_tick(500.0, 500.0, true));
    assert!(!a.ack.over && a.ack.event.is_none(), "{a:?}");
}

#[test]
fn without_the_egress_program_the_kernels_rsts_stand_in() {
    let mut d = Detector::new(cfg());
    let mut g = Series::new();
    let mut events = Vec::new();
    for _ in 0..4 {
        let mut s = g.ack_tick(0.0, 50_000.0, false);
        s.egress = false;
        events.extend(d.step(s).ack.event);
    }
    assert_eq!(events, vec![Event::Started(Kind::AckFlood)]);
}

#[test]
fn a_mixed_syn_and_ack_flood_is_named_both() {
    let mut d = Detector::new(cfg());
    let mut g = Series::new();
    let mut last = None;
    for _ in 0..4 {
        g.s.egress = true;
        g.s.unmatched_acks += 20_000;
        // Spoofed SYNs: none completes, every source new.
        last = Some(d.step(g.tick(40_000.0, 0.0, 40_000.0, 2000, &[])));
    }
    let a = last.unwrap();
    assert_eq!(a.kinds(), vec![Kind::SpoofedRandom, Kind::AckFlood], "{a:?}");
    assert!(a.phase.is_attack() && a.ack.active());
}

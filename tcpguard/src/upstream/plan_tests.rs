//! The planner's rules and guardrails, tick by tick.

use super::*;

const S: u64 = NS;

fn cfg() -> UpstreamConfig {
    UpstreamConfig { enabled: true, host_capacity: 50_000, hold_down_secs: 10.0, ..UpstreamConfig::default() }
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn inputs(now_s: u64) -> Inputs {
    Inputs {
        now_ns: now_s * S,
        destinations: vec![p("198.18.0.1/32"), p("fd00:7467::1/128")],
        ports: vec![8080],
        allow: vec![p("127.0.0.0/8"), p("192.0.2.10/32")],
        local: vec!["198.18.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        ..Inputs::default()
    }
}

fn block(s: &str, until_s: u64) -> BlockIn {
    BlockIn { prefix: p(s), expires_ns: until_s * S, configured: false }
}

fn rules(pl: &Planner) -> Vec<String> {
    pl.desired().iter().map(ToString::to_string).collect()
}

#[test]
fn a_block_is_announced_per_destination_of_its_family_and_withdrawn_with_it() {
    let mut pl = Planner::new(cfg());
    let mut i = inputs(100);
    i.blocks = vec![block("203.0.113.66/32", 160)];
    pl.step(i);
    assert_eq!(rules(&pl), ["tcp to 198.18.0.1/32 from 203.0.113.66/32 port 8080 SYN → discard"]);
    let a = pl.announcements().next().unwrap();
    assert_eq!((a.cause, a.expires_ns), (Cause::Block, 160 * S), "its TTL is the block's");
    // The block goes (unblocked, expired): so does the rule.
    pl.step(inputs(101));
    assert!(rules(&pl).is_empty());
    // IPv6: the IPv6 destination only.
    let mut i = inputs(102);
    i.blocks = vec![block("2001:db8:66::/48", 200)];
    pl.step(i);
    assert_eq!(rules(&pl), ["tcp to fd00:7467::1/128 from 2001:db8:66::/48 port 8080 SYN → discard"]);
}

#[test]
fn guardrails_refuse_wide_allow_listed_local_and_permanent_sources() {
    let mut pl = Planner::new(cfg());
    let mut i = inputs(100);
    i.blocks = vec![
        block("10.0.0.0/8", 200),                                                       // wider than /24
        block("192.0.2.0/24", 200),  // covers the allow-listed 192.0.2.10
        block("198.18.0.0/24", 200), // covers the host's own address
        block("2001:db8::/32", 200), // wider than /48
        BlockIn { prefix: p("203.0.113.1/32"), expires_ns: 0, configured: false }, // until unblocked
        BlockIn { prefix: p("203.0.113.2/32"), expires_ns: 200 * S, configured: true }, // datapath.block
    ];
    let log = pl.step(i.clone());
    assert!(rules(&pl).is_empty(), "{:?}", rules(&pl));
    let why: Vec<String> = pl.refused().map(|r| r.reason.clone()).collect();
    assert_eq!(why.len(), 4, "{why:?}");
    assert!(why.iter().any(|r| r.contains("wider than /24 (upstream.widest-source-v4)")), "{why:?}");
    assert!(why.iter().any(|r| r.contains("covers the allow-listed 192.0.2.10/32")), "{why:?}");
    assert!(why.iter().any(|r| r.contains("covers the host's own address 198.18.0.1")), "{why:?}");
    assert!(why.iter().any(|r| r.contains("wider than /48")), "{why:?}");
    assert_eq!(log.len(), 4, "each refusal said once: {log:?}");
    assert_eq!(pl.refused_total, 4);
    // The next tick says nothing new and counts nothing new.
    i.now_ns += S;
    assert!(pl.step(i).is_empty());
    assert_eq!(pl.refused_total, 4);
}

#[test]
fn no_new_source_rule_while_a_spoofed_flood_is_on() {
    let mut pl = Planner::new(cfg());
    let mut i = inputs(100);
    i.blocks = vec![block("203.0.113.66/32", 200)];
    i.spoofed = true;
    pl.step(i.clone());
    assert!(rules(&pl).is_empty());
    assert!(pl.refused().any(|r| r.reason.contains("spoofed-random")), "{:?}", pl.refused().collect::<Vec<_>>());
    // The flood ends: the block (a real heavy source) goes upstream.
    i.spoofed = false;
    i.now_ns += S;
    pl.step(i);
    assert_eq!(rules(&pl).len(), 1);
}

#[test]
fn the_host_capacity_rule_stands_for_the_hold_down_after_the_rate_falls() {
    let mut pl = Planner::new(cfg());
    let mut i = inputs(100);
    i.syn_per_sec = 80_000.0;
    let log = pl.step(i.clone());
    assert!(log.iter().any(|l| l.contains("reached upstream.host-capacity")), "{log:?}");
    assert_eq!(
        rules(&pl),
        [
            "tcp to 198.18.0.1/32 port 8080 SYN → rate-limit 1000000 B/s",
            "tcp to fd00:7467::1/128 port 8080 SYN → rate-limit 1000000 B/s"
        ]
    );
    assert!(pl.announcements().all(|a| a.cause == Cause::RateLimit && a.rule.src.is_none()));
    // Under capacity, the attack still on: kept.
    i.syn_per_sec = 10_000.0;
    i.attack = true;
    for t in [105, 114, 123] {
        i.now_ns = t * S;
        pl.step(i.clone());
        assert_eq!(rules(&pl).len(), 2, "while the attack lasts ({t} s)");
    }
    // The attack over at 124 s: kept for the hold-down (10 s), then withdrawn.
    i.attack = false;
    for t in [124, 128, 132] {
        i.now_ns = t * S;
        pl.step(i.clone());
        assert_eq!(rules(&pl).len(), 2, "at {t} s");
    }
    i.now_ns = 134 * S;
    pl.step(i);
    assert!(rules(&pl).is_empty());
}

#[test]
fn the_cap_and_the_rate_of_new_announcements_hold() {
    let mut pl = Planner::new(UpstreamConfig { max_announcements: 3, max_new_per_minute: 2, ..cfg() });
    let mut i = inputs(100);
    i.blocks = (1..=5).map(|n| block(&format!("203.0.113.{n}/32"), 1000)).collect();
    pl.step(i.clone());
    assert_eq!(rules(&pl).len(), 2, "two a minute");
    assert_eq!(pl.refused().filter(|r| r.reason.contains("max-new-per-minute")).count(), 3);
    i.now_ns = 161 * S;
    pl.step(i.clone());
    assert_eq!(rules(&pl).len(), 3, "the cap");
    assert_eq!(pl.refused().filter(|r| r.reason.contains("max-announcements (3)")).count(), 2);
}

#[test]
fn no_announcement_outlives_max_ttl_nor_comes_back_while_its_cause_lasts() {
    let mut pl = Planner::new(UpstreamConfig { max_ttl_secs: 60, ..cfg() });
    let mut i = inputs(100);
    i.blocks = vec![block("203.0.113.66/32", 10_000)];
    pl.step(i.clone());
    assert_eq!(pl.announcements().next().unwrap().expires_ns, 160 * S);
    i.now_ns = 160 * S;
    let log = pl.step(i.clone());
    assert!(rules(&pl).is_empty());
    assert!(log.iter().any(|l| l.contains("after upstream.max-ttl-secs")), "{log:?}");
    i.now_ns = 200 * S;
    pl.step(i.clone());
    assert!(rules(&pl).is_empty(), "not again while the block lasts");
    // The block ends; a new one later is announced afresh.
    i.blocks.clear();
    pl.step(i.clone());
    i.blocks = vec![block("203.0.113.66/32", 10_000)];
    pl.step(i);
    assert_eq!(rules(&pl).len(), 1);
}

#[test]
fn monitor_mode_announces_nothing_and_says_what_it_would() {
    let mut pl = Planner::new(cfg());
    let mut i = inputs(100);
    i.monitor = true;
    i.syn_per_sec = 90_000.0;
    let log = pl.step(i);
    assert!(pl.desired().is_empty());
    assert_eq!(pl.announcements().count(), 2, "the table shows what would be announced");
    assert!(log.iter().any(|l| l.contains("would announce")), "{log:?}");
    assert!(pl
        .announce_by_hand(&HandRule {
            src: Some(p("203.0.113.9/32")),
            dst: None,
            port: None,
            rate_limit: None,
            ttl_secs: None
        })
        .is_err());
}

#[test]
fn by_hand_the_same_checks_a_ttl_and_withdraw() {
    let mut pl = Planner::new(cfg());
    pl.step(inputs(100));
    let hand = |src: &str| HandRule { src: Some(p(src)), dst: None, port: None, rate_limit: None, ttl_secs: Some(30) };
    assert!(pl.announce_by_hand(&hand("10.0.0.0/8")).unwrap_err().contains("wider than /24"));
    assert!(pl.announce_by_hand(&hand("192.0.2.0/28")).unwrap_err().contains("allow-listed"));
    let no_src = HandRule { src: None, dst: None, port: None, rate_limit: None, ttl_secs: None };
    assert!(pl.announce_by_hand(&no_src).unwrap_err().contains("without a source"));
    let foreign = HandRule { dst: Some(p("192.0.2.99/32")), ..hand("203.0.113.9/32") };
    assert!(pl.announce_by_hand(&foreign).unwrap_err().contains("not one of the host's protected addresses"));
    let long = HandRule { ttl_secs: Some(10 * 86_400), ..hand("203.0.113.9/32") };
    assert!(pl.announce_by_hand(&long).unwrap_err().contains("max-ttl-secs"));
    let r = pl.announce_by_hand(&hand("203.0.113.9/32")).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(rules(&pl).len(), 1);
    // It stands for its TTL (30 s), then goes.
    pl.step(inputs(129));
    assert_eq!(rules(&pl).len(), 1);
    pl.step(inputs(131));
    assert!(rules(&pl).is_empty());
    // Withdrawn by hand: an automatic one stays away while its block lasts.
    let mut i = inputs(140);
    i.blocks = vec![block("203.0.113.66/32", 1000)];
    pl.step(i.clone());
    assert_eq!(pl.withdraw_by_hand(Some(p("203.0.113.66/32")), None, None).len(), 1);
    i.now_ns += S;
    pl.step(i);
    assert!(rules(&pl).is_empty());
}

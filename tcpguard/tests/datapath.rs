//! BPF_PROG_TEST_RUN on crafted packets: every verdict, and the counters
//! each must move, in the real kernel (root required).

mod common;

use std::net::IpAddr;

use common::*;
use tcpguard::{
    loader::Datapath,
    maps::{monotonic_ns, Maps},
    net::Prefix,
};
use tcpguard_common::{
    craft::Craft,
    parse::{ETH_P_8021AD, ETH_P_8021Q, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    Counter::*,
    Settings, FLAG_EGRESS, FLAG_MONITOR, FLAG_PORT_FILTER,
};

const CLIENT: [u8; 4] = [192, 0, 2, 10];
const SERVER: [u8; 4] = [192, 0, 2, 1];

fn syn4(src: [u8; 4], sport: u16, isn: u32) -> Craft {
    Craft::v4(src, SERVER, sport, 80).flags(TCP_SYN).seq(isn).syn_options()
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[15] = last;
    a
}

/// Run `frame`, assert the verdict and exactly the counter deltas given
/// (besides `packets`, which every run moves by one, and `new_source`,
/// which has tests of its own below).
fn expect(dp: &mut Datapath, frame: &[u8], verdict: u32, moved: &[(tcpguard_common::Counter, u64)]) {
    let before = counters(dp);
    let v = run(dp, frame);
    let after = counters(dp);
    let mut d = delta(&before, &after);
    d.retain(|(n, _)| *n != "new_source");
    d.sort_unstable();
    let mut want: Vec<(&str, u64)> = moved.iter().map(|(c, n)| (c.name(), *n)).collect();
    want.push(("packets", 1));
    want.sort_unstable();
    assert_eq!(v, verdict, "verdict (1 = drop, 2 = pass); counters moved: {d:?}");
    assert_eq!(d, want, "counter deltas");
}

fn maps(dp: &mut Datapath) -> Maps<'_> {
    Maps::new(&mut dp.ebpf)
}

fn source(dp: &mut Datapath, a: IpAddr) -> tcpguard_common::SrcStats {
    maps(dp).source(a).unwrap().expect("source is tracked")
}

#[test]
fn syn_v4_opens_half_open() {
    let mut dp = load();
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 7).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    let s = source(&mut dp, IpAddr::from(CLIENT));
    assert_eq!((s.syns, s.half_open, s.completed), (1, 1, 0));
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 1);
}

#[test]
fn syn_v6_opens_half_open() {
    let mut dp = load();
    let f = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).seq(5).syn_options().build();
    expect(&mut dp, &f, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)]);
    let s = source(&mut dp, IpAddr::from(v6(10)));
    assert_eq!((s.syns, s.half_open), (1, 1));
}

#[test]
fn syn_behind_one_and_two_vlan_tags() {
    let mut dp = load();
    let one = syn4(CLIENT, 1000, 1).vlans(&[ETH_P_8021Q]).build();
    let two = syn4(CLIENT, 1001, 1).vlans(&[ETH_P_8021AD, ETH_P_8021Q]).build();
    expect(&mut dp, &one, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)]);
    expect(&mut dp, &two, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 2);
}

#[test]
fn retransmitted_syn_is_not_a_new_half_open() {
    let mut dp = load();
    let f = syn4(CLIENT, 1000, 42).build();
    expect(&mut dp, &f, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)]);
    expect(&mut dp, &f, XDP_PASS, &[(Syn, 1), (SynRetransmit, 1), (PassTcp, 1)]);
    // A new ISN on the same 4-tuple replaces the abandoned attempt.
    let g = syn4(CLIENT, 1000, 9000).build();
    expect(
        &mut dp,
        &g,
        XDP_PASS,
        &[(Syn, 1), (HalfOpenReplaced, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 1);
}

#[test]
fn ack_with_isn_plus_one_completes() {
    let mut dp = load();
    run(&dp, &syn4(CLIENT, 1000, 100).build());
    let ack = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(101).ack(5555).build();
    expect(&mut dp, &ack, XDP_PASS, &[(HandshakeCompleted, 1), (PassTcp, 1)]);
    let s = source(&mut dp, IpAddr::from(CLIENT));
    assert_eq!((s.completed, s.half_open), (1, 0));
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 0);
    // Data on the established flow afterwards: just passes.
    let data = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(101).payload(b"GET /").build();
    expect(&mut dp, &data, XDP_PASS, &[(PassTcp, 1)]);
}

#[test]
fn ack_with_wrong_seq_does_not_complete() {
    let mut dp = load();
    run(&dp, &syn4(CLIENT, 1000, 100).build());
    let ack = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(500).build();
    expect(&mut dp, &ack, XDP_PASS, &[(AckBadSeq, 1), (PassTcp, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).completed, 0);
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 1);
}

#[test]
fn rst_clears_half_open() {
    let mut dp = load();
    run(&dp, &syn4(CLIENT, 1000, 100).build());
    let rst = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_RST).seq(101).build();
    expect(&mut dp, &rst, XDP_PASS, &[(Rst, 1), (RstHalfOpen, 1), (PassTcp, 1)]);
    let s = source(&mut dp, IpAddr::from(CLIENT));
    assert_eq!((s.rsts, s.half_open), (1, 0));
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 0);
}

#[test]
fn fin_is_counted() {
    let mut dp = load();
    run(&dp, &syn4(CLIENT, 1000, 100).build());
    let fin = Craft::v4(CLIENT, SERVER, 2000, 80).flags(TCP_FIN | TCP_ACK).seq(1).build();
    expect(&mut dp, &fin, XDP_PASS, &[(Fin, 1), (PassTcp, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).fins, 1);
}

#[test]
fn blocked_prefix_is_dropped() {
    let mut dp = load();
    maps(&mut dp).block(&"192.0.2.0/24".parse().unwrap(), 0).unwrap();
    expect(&mut dp, &syn4(CLIENT, 1000, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
    // Not only SYNs: every TCP packet from the prefix, counted apart so it
    // never feeds the SYN rate (bug 1: ACKs and data counted as SYNs).
    let ack = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(2).build();
    expect(&mut dp, &ack, XDP_DROP, &[(DropBlockedOther, 1)]);
    let data = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(2).payload(b"GET /").build();
    expect(&mut dp, &data, XDP_DROP, &[(DropBlockedOther, 1)]);
    let fin = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_FIN | TCP_ACK).seq(7).build();
    expect(&mut dp, &fin, XDP_DROP, &[(DropBlockedOther, 1)]);
    // Another source passes.
    expect(
        &mut dp,
        &syn4([198, 51, 100, 1], 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    // Unblocking lifts it.
    assert!(maps(&mut dp).unblock(&"192.0.2.0/24".parse().unwrap()).unwrap());
    expect(
        &mut dp,
        &syn4(CLIENT, 1001, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
}

#[test]
fn blocked_v6_prefix_is_dropped() {
    let mut dp = load();
    maps(&mut dp).block(&"2001:db8::/32".parse().unwrap(), 0).unwrap();
    let f = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).seq(5).build();
    expect(&mut dp, &f, XDP_DROP, &[(DropBlocked, 1)]);
}

#[test]
fn the_block_lists_first_byte_summary_never_hides_an_entry() {
    let mut dp = load();
    let passed = [(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)];
    let sixteen: Prefix = "10.200.0.0/16".parse().unwrap();
    maps(&mut dp).block(&sixteen, 0).unwrap();
    let f = maps(&mut dp).block_first().unwrap();
    assert!(f.known == 1 && f.may_hold(10, false), "{f:?}");
    assert!(!f.may_hold(11, false) && !f.may_hold(0x20, true), "only the first bytes the entries cover: {f:?}");
    // Dropped on the fast path (plain IPv4) and the full one (a tagged
    // frame) alike; a source outside the summary passes on both.
    let blocked = [10, 200, 1, 1];
    expect(&mut dp, &syn4(blocked, 1000, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
    expect(&mut dp, &syn4(blocked, 1001, 1).vlans(&[ETH_P_8021Q]).build(), XDP_DROP, &[(DropBlocked, 1)]);
    let data = Craft::v4(blocked, SERVER, 1000, 80).flags(TCP_ACK).seq(2).payload(b"GET /").build();
    expect(&mut dp, &data, XDP_DROP, &[(DropBlockedOther, 1)]);
    let other = [11, 0, 0, 1];
    expect(&mut dp, &syn4(other, 1000, 1).build(), XDP_PASS, &passed);
    expect(&mut dp, &syn4(other, 1001, 1).vlans(&[ETH_P_8021Q]).build(), XDP_PASS, &passed);
    // An entry added (as the daemon does, the list alone) is in effect at
    // once: the summary is widened before the trie gets it. IPv6 too.
    let eight: Prefix = "11.0.0.0/8".parse().unwrap();
    maps(&mut dp).insert_block(&eight, 0).unwrap();
    expect(&mut dp, &syn4(other, 1002, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
    let v6_net: Prefix = "2001:db8::/32".parse().unwrap();
    maps(&mut dp).block(&v6_net, 0).unwrap();
    let f6 = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).seq(5).build();
    expect(&mut dp, &f6, XDP_DROP, &[(DropBlocked, 1)]);
    // A removal leaves a superset (a walk that finds nothing) until the
    // summary is rewritten from the lists.
    let mut m = maps(&mut dp);
    assert!(m.remove_block(&eight).unwrap());
    assert!(m.block_first().unwrap().may_hold(11, false), "a superset until synced");
    expect(&mut dp, &syn4(other, 1003, 1).build(), XDP_PASS, &passed);
    assert!(maps(&mut dp).unblock(&v6_net).unwrap());
    let f = maps(&mut dp).block_first().unwrap();
    assert!(f.may_hold(10, false) && !f.may_hold(11, false) && !f.may_hold(0x20, true), "synced: {f:?}");
    // A summary never written (all zero, as a map made before it existed):
    // the trie decides.
    maps(&mut dp).insert_block(&eight, 0).unwrap();
    set_block_first(&mut dp, tcpguard_common::quick::FirstBytes::default());
    expect(&mut dp, &syn4(other, 1004, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
    expect(&mut dp, &syn4(blocked, 1002, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
    expect(&mut dp, &syn4([12, 0, 0, 1], 1000, 1).build(), XDP_PASS, &passed);
}

#[test]
fn summaries_left_stale_in_the_pins_are_rewritten_from_the_lists_on_load() {
    // A build that knew no summary (or an older daemon) added a block to
    // the pinned list and left the pinned summary as it was: the next load
    // rewrites it from the list, so the block holds from the first packet.
    use tcpguard::loader::LoadOptions;
    require_root();
    let pins = PinDir::new("summary");
    let opts = LoadOptions { pin_dir: Some(pins.0.clone()), ..LoadOptions::default() };
    {
        let mut dp = Datapath::load(&opts).unwrap();
        maps(&mut dp).block(&"198.51.100.0/24".parse().unwrap(), 0).unwrap();
        // Known, and without the block's first byte.
        set_block_first(&mut dp, tcpguard_common::quick::FirstBytes::of([]));
        set_allow_first(&mut dp, tcpguard_common::quick::FirstBytes::of([]));
        maps(&mut dp).insert_allow(&Prefix::host(IpAddr::from([203, 0, 113, 9])), 0).unwrap();
        set_allow_first(&mut dp, tcpguard_common::quick::FirstBytes::of([]));
    }
    let mut dp = Datapath::load(&opts).unwrap();
    let m = maps(&mut dp);
    assert!(m.block_first().unwrap().may_hold(198, false), "block summary rewritten");
    assert!(m.allow_first().unwrap().may_hold(203, false), "allow summary rewritten");
    expect(&mut dp, &syn4([198, 51, 100, 7], 1000, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
}

/// Write a list summary map as an older build (none) or a test wants it.
fn set_summary(dp: &mut Datapath, name: &str, f: tcpguard_common::quick::FirstBytes) {
    let map = dp.ebpf.map_mut(name).unwrap();
    let mut arr: aya::maps::Array<&mut aya::maps::MapData, tcpguard_common::quick::FirstBytes> =
        aya::maps::Array::try_from(map).unwrap();
    arr.set(0, f, 0).unwrap();
}

fn set_block_first(dp: &mut Datapath, f: tcpguard_common::quick::FirstBytes) {
    set_summary(dp, tcpguard_common::map_names::BLOCK_FIRST, f);
}

fn set_allow_first(dp: &mut Datapath, f: tcpguard_common::quick::FirstBytes) {
    set_summary(dp, tcpguard_common::map_names::ALLOW_FIRST, f);
}

#[test]
fn allow_list_beats_block_list() {
    let mut dp = load();
    let mut m = maps(&mut dp);
    m.block(&"192.0.2.0/24".parse().unwrap(), 0).unwrap();
    m.allow(&Prefix::host(IpAddr::from(CLIENT)), monotonic_ns()).unwrap();
    // The allow-listed SYN goes on as if no block matched: counted and tracked.
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 1).build(),
        XDP_PASS,
        &[(AllowOverride, 1), (Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 1);
    // Its neighbour in the blocked /24 is still dropped.
    expect(&mut dp, &syn4([192, 0, 2, 11], 1000, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
}

#[test]
fn expired_block_passes() {
    let mut dp = load();
    // (Expiry is read on the coarse clock: up to a jiffy behind.)
    maps(&mut dp).block(&"192.0.2.0/24".parse().unwrap(), monotonic_ns() - 100_000_000).unwrap();
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 1).build(),
        XDP_PASS,
        &[(BlockExpired, 1), (Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    // A block whose time is still running drops.
    maps(&mut dp).block(&"192.0.2.0/24".parse().unwrap(), monotonic_ns() + 60_000_000_000).unwrap();
    expect(&mut dp, &syn4(CLIENT, 1001, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
}

#[test]
fn rate_limit_drops_past_the_burst() {
    let mut dp = load();
    maps(&mut dp).set_settings(&Settings { syn_rate: 1, syn_burst: 3, ..Settings::default() }).unwrap();
    for i in 0..3 {
        expect(
            &mut dp,
            &syn4(CLIENT, 1000 + i, 1).build(),
            XDP_PASS,
            &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
        );
    }
    for i in 3..6 {
        expect(&mut dp, &syn4(CLIENT, 1000 + i, 1).build(), XDP_DROP, &[(Syn, 1), (DropRateLimited, 1)]);
    }
    let s = source(&mut dp, IpAddr::from(CLIENT));
    assert_eq!((s.syns, s.dropped, s.half_open), (6, 3, 3));
    // Other sources have their own bucket.
    expect(
        &mut dp,
        &syn4([198, 51, 100, 1], 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    // An allow-listed source is never rate limited.
    maps(&mut dp).allow(&Prefix::host(IpAddr::from(CLIENT)), 0).unwrap();
    expect(
        &mut dp,
        &syn4(CLIENT, 2000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (AllowOverride, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
}

#[test]
fn monitor_mode_passes_what_enforce_drops() {
    let mut dp = load();
    maps(&mut dp)
        .set_settings(&Settings { flags: FLAG_MONITOR, syn_rate: 1, syn_burst: 1, ..Settings::default() })
        .unwrap();
    maps(&mut dp).block(&"198.51.100.0/24".parse().unwrap(), 0).unwrap();
    // A blocked source's SYN in monitor mode is counted and tracked like any
    // other (bug 2: it was counted neither as a SYN nor as a handshake).
    expect(
        &mut dp,
        &syn4([198, 51, 100, 7], 1000, 1).build(),
        XDP_PASS,
        &[(MonitorBlocked, 1), (Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    let s7 = source(&mut dp, IpAddr::from([198, 51, 100, 7]));
    assert_eq!((s7.syns, s7.half_open), (1, 1));
    let ack7 = Craft::v4([198, 51, 100, 7], SERVER, 1000, 80).flags(TCP_ACK).seq(2).build();
    expect(&mut dp, &ack7, XDP_PASS, &[(MonitorBlocked, 1), (HandshakeCompleted, 1), (PassTcp, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from([198, 51, 100, 7])).completed, 1);
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    expect(
        &mut dp,
        &syn4(CLIENT, 1001, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (MonitorRateLimited, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    // The same packets in enforce mode are dropped.
    let s = maps(&mut dp).settings().unwrap();
    maps(&mut dp).set_settings(&Settings { flags: s.flags & !FLAG_MONITOR, ..s }).unwrap();
    expect(&mut dp, &syn4([198, 51, 100, 7], 1000, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
    expect(&mut dp, &syn4(CLIENT, 1002, 1).build(), XDP_DROP, &[(Syn, 1), (DropRateLimited, 1)]);
}

#[test]
fn monitor_mode_charges_no_drop_to_an_allow_listed_source() {
    // Bug 3: in monitor mode an allow-listed source's `dropped` grew
    // although nothing was (or would have been) dropped.
    let mut dp = load();
    maps(&mut dp)
        .set_settings(&Settings { flags: FLAG_MONITOR, syn_rate: 1, syn_burst: 1, ..Settings::default() })
        .unwrap();
    maps(&mut dp).allow(&Prefix::host(IpAddr::from(CLIENT)), 0).unwrap();
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    expect(
        &mut dp,
        &syn4(CLIENT, 1001, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (AllowOverride, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).dropped, 0);
    // A source that is not allow-listed is charged the would-be drop.
    let other = [198, 51, 100, 9];
    run(&dp, &syn4(other, 1000, 1).build());
    expect(
        &mut dp,
        &syn4(other, 1001, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (MonitorRateLimited, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    assert_eq!(source(&mut dp, IpAddr::from(other)).dropped, 1);
}

#[test]
fn every_tcp_packet_ends_in_exactly_one_outcome_counter() {
    // The one exit: whatever path a packet takes, one pass or drop counter
    // moves (the SYN-cookie XDP_TX has its own tests in attack.rs).
    use tcpguard_common::Category;
    let mut dp = load();
    maps(&mut dp)
        .set_settings(&Settings { flags: FLAG_MONITOR, syn_rate: 1, syn_burst: 2, ..Settings::default() })
        .unwrap();
    maps(&mut dp).block(&"198.51.100.0/24".parse().unwrap(), 0).unwrap();
    maps(&mut dp).allow(&"198.51.100.128/25".parse().unwrap(), 0).unwrap();
    let srcs = [CLIENT, [198, 51, 100, 7], [198, 51, 100, 200]];
    let kinds = [TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN | TCP_ACK, TCP_SYN | TCP_ACK];
    for monitor in [true, false] {
        let s = maps(&mut dp).settings().unwrap();
        let flags = if monitor { s.flags | FLAG_MONITOR } else { s.flags & !FLAG_MONITOR };
        maps(&mut dp).set_settings(&Settings { flags, ..s }).unwrap();
        for (i, src) in srcs.iter().enumerate() {
            for (k, fl) in kinds.iter().enumerate() {
                for rep in 0..3u16 {
                    let f = Craft::v4(*src, SERVER, 1000 + rep + 10 * k as u16, 80).flags(*fl).seq(1).build();
                    let before = counters(&mut dp);
                    let v = run(&dp, &f);
                    let d = delta(&before, &counters(&mut dp));
                    let outcomes: Vec<_> = d
                        .iter()
                        .filter(|(n, _)| {
                            let c = tcpguard_common::Counter::ALL.iter().find(|c| c.name() == *n).unwrap();
                            matches!(c.category(), Category::Pass | Category::Drop)
                        })
                        .collect();
                    assert_eq!(outcomes.len(), 1, "monitor={monitor} src {i} kind {fl:#x}: {d:?}");
                    let dropped = outcomes[0].0.starts_with("drop_");
                    assert_eq!(dropped, v == XDP_DROP, "{d:?}");
                }
            }
        }
    }
}

#[test]
fn unprotected_port_passes_untracked() {
    let mut dp = load();
    let mut m = maps(&mut dp);
    m.set_settings(&Settings { flags: FLAG_PORT_FILTER, ..Settings::default() }).unwrap();
    m.set_ports(&[80]).unwrap();
    let to22 = Craft::v4(CLIENT, SERVER, 1000, 22).flags(TCP_SYN).seq(1).build();
    expect(&mut dp, &to22, XDP_PASS, &[(PassUnprotectedPort, 1)]);
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
}

#[test]
fn truncated_headers_pass_counted() {
    let mut dp = load();
    // Ethernet: a VLAN TPID with the tag cut off (the kernel needs >= 14 bytes).
    let mut eth = syn4(CLIENT, 1, 1).vlans(&[ETH_P_8021Q]).build();
    eth.truncate(16);
    expect(&mut dp, &eth, XDP_PASS, &[(PassTruncatedEth, 1)]);
    let full = syn4(CLIENT, 1, 1).build();
    expect(&mut dp, &full[..14 + 12], XDP_PASS, &[(PassTruncatedIp, 1)]);
    expect(&mut dp, &full[..14 + 20 + 10], XDP_PASS, &[(PassTruncatedTcp, 1)]);
    // Options announced by the data offset but missing.
    expect(&mut dp, &full[..full.len() - 4], XDP_PASS, &[(PassTruncatedTcp, 1)]);
    let v6 = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).build();
    expect(&mut dp, &v6[..14 + 30], XDP_PASS, &[(PassTruncatedIp, 1)]);
}

#[test]
fn bad_header_lengths_pass_counted() {
    let mut dp = load();
    expect(&mut dp, &syn4(CLIENT, 1, 1).ihl(4).build(), XDP_PASS, &[(PassBadIhl, 1)]);
    expect(&mut dp, &syn4(CLIENT, 1, 1).doff(4).build(), XDP_PASS, &[(PassBadDoff, 1)]);
    // IPv4 options are honoured: the TCP header is found after them.
    expect(
        &mut dp,
        &syn4(CLIENT, 1, 1).ip_options(12).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
}

#[test]
fn fragments_and_non_tcp_pass_counted() {
    let mut dp = load();
    expect(&mut dp, &syn4(CLIENT, 1, 1).frag_offset(100).build(), XDP_PASS, &[(PassFragment, 1)]);
    let f6 = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).v6_ext(&[44]).frag_offset(10).build();
    expect(&mut dp, &f6, XDP_PASS, &[(PassFragment, 1)]);
    expect(&mut dp, &syn4(CLIENT, 1, 1).l4_proto(17).build(), XDP_PASS, &[(PassNonTcp, 1)]);
    expect(&mut dp, &syn4(CLIENT, 1, 1).ethertype(0x0806).build(), XDP_PASS, &[(PassNonIp, 1)]);
    let deep = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).v6_ext(&[0, 60, 60, 60, 60]).build();
    expect(&mut dp, &deep, XDP_PASS, &[(PassIpv6ExtLimit, 1)]);
    // Extension headers within the walk: the SYN is seen.
    let ext = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).v6_ext(&[0, 43, 60]).build();
    expect(&mut dp, &ext, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)]);
}

#[test]
fn malformed_input_never_drops_even_with_a_block_for_everything() {
    // Block the whole v4 space: anything parsed as TCP would be dropped, so
    // every pass below proves the packet was not mis-parsed into a drop.
    let mut dp = load();
    maps(&mut dp).block(&"0.0.0.0/0".parse().unwrap(), 0).unwrap();
    let full = syn4(CLIENT, 1, 1).build();
    let mut rng = 0x1234_5678_u64;
    for len in 14..full.len() {
        assert_eq!(run(&dp, &full[..len]), XDP_PASS, "truncated at {len}");
    }
    for _ in 0..500 {
        let mut f = full.clone();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Corrupt the version/IHL byte or the data offset byte at random.
        let (i, v) = if rng & 1 == 0 { (14, (rng >> 8) as u8) } else { (14 + 20 + 12, (rng >> 8) as u8) };
        f[i] = v;
        let verdict = run(&dp, &f);
        let ok_v4 = i == 14 && v == 0x45;
        let ok_doff = i == 46 && (v >> 4) >= 5 && (v >> 4) <= ((full.len() - 34) / 4) as u8;
        if !(ok_v4 || ok_doff) {
            assert_eq!(verdict, XDP_PASS, "byte {i} = {v:#04x}");
        }
    }
}

#[test]
fn new_sources_are_counted_once() {
    let mut dp = load();
    let before = counters(&mut dp);
    for i in 0..10u8 {
        run(&dp, &syn4([198, 51, 100, i], 1000, 1).build());
        run(&dp, &syn4([198, 51, 100, i], 1001, 1).build());
    }
    let after = counters(&mut dp);
    assert_eq!(after.get(NewSource) - before.get(NewSource), 10);
    assert_eq!(after.get(Syn) - before.get(Syn), 20);
}

#[test]
fn heavy_source_is_reported_once_per_second() {
    use aya::maps::RingBuf;
    let mut dp = load();
    maps(&mut dp).set_settings(&Settings { heavy_syns_per_sec: 5, ..Settings::default() }).unwrap();
    for i in 0..20 {
        run(&dp, &syn4(CLIENT, 2000 + i, 1).build());
    }
    run(&dp, &syn4([198, 51, 100, 1], 1000, 1).build());
    assert_eq!(counters(&mut dp).get(HeavyEvent), 1);
    let mut rb = RingBuf::try_from(dp.ebpf.map_mut("EVENTS").unwrap()).unwrap();
    let item = rb.next().expect("one heavy-source event");
    let ev: tcpguard_common::HeavyEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
    assert_eq!(&ev.addr[12..], &CLIENT);
    assert_eq!(ev.syns, 5);
    assert_eq!(ev.half_open, 4, "reported before its fifth half-open entry is added");
    drop(item);
    assert!(rb.next().is_none());
}

#[test]
fn a_subnet_is_counted_and_reported_as_an_aggregate() {
    use aya::maps::RingBuf;
    let mut dp = load();
    maps(&mut dp)
        .set_settings(&Settings { heavy_syns_per_sec: 100, heavy_prefix_syns_per_sec: 5, ..Settings::default() })
        .unwrap();
    // Five addresses of one /24, one SYN each: no source is heavy, the /24 is.
    for i in 1..=5u8 {
        run(&dp, &syn4([198, 51, 100, i], 1000, 1).build());
    }
    // Another /24 and a /64 stay under.
    run(&dp, &syn4([198, 51, 101, 1], 1000, 1).build());
    for i in 0..3u8 {
        let f = Craft::v6(v6(20 + i), v6(1), 1000, 443).flags(TCP_SYN).seq(5).build();
        run(&dp, &f);
    }
    let c = counters(&mut dp);
    assert_eq!((c.get(HeavyPrefixEvent), c.get(HeavyEvent)), (1, 0));
    let agg = |m: &Maps<'_>, a: &str| m.aggregate(a.parse().unwrap()).unwrap().map(|x| x.syns);
    let m = maps(&mut dp);
    assert_eq!(agg(&m, "198.51.100.0"), Some(5));
    assert_eq!(agg(&m, "198.51.101.0"), Some(1));
    assert_eq!(agg(&m, "2001:db8::"), Some(3), "the v6 sources share their /64");
    let mut rb = RingBuf::try_from(dp.ebpf.map_mut("EVENTS").unwrap()).unwrap();
    let item = rb.next().expect("one aggregate event");
    assert_eq!(item.len(), std::mem::size_of::<tcpguard_common::AggEvent>());
    let ev: tcpguard_common::AggEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
    assert_eq!((&ev.addr[12..], ev.len, ev.syns), (&[198u8, 51, 100, 0][..], 24, 5));
    drop(item);
    assert!(rb.next().is_none());
}

/// Differential test: the same random and mutated frames through the host
/// parser and the XDP program. For every frame they agree: a parse error
/// on the host is the same pass counter in the kernel (and nothing else
/// but `packets`), a parsed TCP segment is handled as TCP (no parse-error
/// counter), and the verdict is always PASS (no lists, no limits).
#[test]
fn host_parser_and_xdp_agree_on_random_and_mutated_frames() {
    use tcpguard_common::{parse, Category};
    let mut dp = load();
    let bases = [
        syn4(CLIENT, 1000, 1).build(),
        syn4(CLIENT, 1000, 1).vlans(&[ETH_P_8021AD, ETH_P_8021Q]).build(),
        Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(2).ack(3).payload(b"hello").build(),
        Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).seq(5).syn_options().v6_ext(&[0, 60]).build(),
        Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_RST).build(),
        syn4(CLIENT, 1000, 1).ip_options(8).build(),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let parse_errors: Vec<_> = tcpguard_common::Counter::ALL
        .iter()
        .filter(|c| c.category() == Category::Pass && !matches!(c, PassTcp | PassUnprotectedPort))
        .map(|c| c.name())
        .collect();
    let (mut parsed, mut errors) = (0, 0);
    for i in 0..4000u32 {
        let base = &bases[(next() % bases.len() as u64) as usize];
        let mut f = base.clone();
        // Mutate 1-4 bytes in the headers, or truncate, or both.
        for _ in 0..=(next() % 4) {
            let at = (next() as usize) % f.len().min(96);
            f[at] = next() as u8;
        }
        if i % 5 == 0 {
            let keep = (next() as usize) % f.len();
            f.truncate(keep.max(14));
        }
        let host = parse::parse(&f[..]);
        let before = counters(&mut dp);
        let verdict = run(&dp, &f);
        let d = delta(&before, &counters(&mut dp));
        assert_eq!(verdict, XDP_PASS, "frame {i}: {f:02x?}");
        let moved_errors: Vec<_> = d.iter().filter(|(n, _)| parse_errors.contains(n)).collect();
        if let Err(e) = host {
            errors += 1;
            let mut want = vec![("packets", 1), (e.counter().name(), 1)];
            want.sort_unstable();
            let mut got = d.clone();
            got.sort_unstable();
            assert_eq!(got, want, "frame {i}: host {e:?}, kernel {d:?}: {f:02x?}");
        } else {
            parsed += 1;
            assert!(moved_errors.is_empty(), "frame {i}: host parsed it, kernel counted {moved_errors:?}: {f:02x?}");
            assert!(d.iter().any(|(n, _)| *n == PassTcp.name()), "frame {i}: handled as TCP: {d:?}");
        }
    }
    assert!(parsed > 500 && errors > 500, "both outcomes exercised: {parsed} parsed, {errors} errors");
}

#[test]
fn a_source_the_table_refuses_is_still_judged_and_tracked() {
    // Bug 4: a failed source-table insert returned PASS with no outcome
    // counter, no rate limit and no half-open entry. A plain hash table with
    // room for one source stands in for SRC_STATS (same key and value), so
    // the kernel really refuses the second source's insert (E2BIG), as it
    // may a contended table under a flood.
    use aya::maps::{HashMap, MapData};
    use tcpguard::loader::LoadOptions;
    use tcpguard_common::{SrcKey, SrcStats};
    require_root();
    let pins = PinDir::new("refuse");
    let dir = pins.0.clone();
    let tiny: HashMap<MapData, SrcKey, SrcStats> = HashMap::create(1, 0).unwrap();
    tiny.pin(dir.join("SRC_STATS")).unwrap();
    // (Adopted as it is: a map of another type would otherwise be replaced.)
    let opts = LoadOptions { pin_dir: Some(dir.clone()), retire_stale: false, ..LoadOptions::default() };
    let mut dp = Datapath::load(&opts).unwrap();
    maps(&mut dp).set_settings(&Settings { syn_rate: 1, syn_burst: 1, ..Settings::default() }).unwrap();
    expect(
        &mut dp,
        &syn4(CLIENT, 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    let refused = [198, 51, 100, 3];
    expect(
        &mut dp,
        &syn4(refused, 1000, 1).build(),
        XDP_PASS,
        &[(Syn, 1), (SourceInsertFailed, 1), (SynTracked, 1), (HalfOpenOpened, 1), (PassTcp, 1)],
    );
    // Its handshake is tracked: the ACK completes it.
    let ack = Craft::v4(refused, SERVER, 1000, 80).flags(TCP_ACK).seq(2).build();
    expect(&mut dp, &ack, XDP_PASS, &[(HandshakeCompleted, 1), (PassTcp, 1)]);
    // The tracked source is still limited on its own bucket.
    expect(&mut dp, &syn4(CLIENT, 1001, 1).build(), XDP_DROP, &[(Syn, 1), (DropRateLimited, 1)]);
}

#[test]
fn pins_left_by_another_version_are_replaced_and_compatible_ones_kept() {
    // An upgrade: the counters grew (another value size) while the
    // block-list kept its layout. The new build must load, start its
    // counters afresh and keep the block.
    use aya::maps::{MapData, MapInfo, PerCpuArray};
    use tcpguard::loader::LoadOptions;
    require_root();
    let pins = PinDir::new("upgrade");
    let dir = pins.0.clone();
    // A build with the block already in place.
    {
        let mut dp = Datapath::load(&LoadOptions { pin_dir: Some(dir.clone()), ..LoadOptions::default() }).unwrap();
        maps(&mut dp).block(&"198.51.100.0/24".parse().unwrap(), 0).unwrap();
    }
    // ...and an old COUNTERS: a plain array with a smaller value.
    std::fs::remove_file(dir.join("COUNTERS")).unwrap();
    let old: PerCpuArray<MapData, [u64; 8]> = PerCpuArray::create(1, 0).unwrap();
    old.pin(dir.join("COUNTERS")).unwrap();
    assert_eq!(MapInfo::from_pin(dir.join("COUNTERS")).unwrap().value_size(), 64);

    let mut dp = Datapath::load(&LoadOptions { pin_dir: Some(dir.clone()), ..LoadOptions::default() })
        .expect("a build loads over another version's pins");
    let want = std::mem::size_of::<tcpguard_common::Counters>() as u32;
    assert_eq!(MapInfo::from_pin(dir.join("COUNTERS")).unwrap().value_size(), want, "COUNTERS made anew");
    // The compatible block-list was adopted with its entry: it still drops.
    expect(&mut dp, &syn4([198, 51, 100, 7], 1000, 1).build(), XDP_DROP, &[(DropBlocked, 1)]);
}

/// A pin directory of a test's own on bpffs, removed on drop (also when
/// the test fails).
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new(tag: &str) -> Self {
        let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/tcpguard-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `frame` through the egress program: it always lets it go (TC_ACT_OK)
/// and moves exactly these counters.
fn expect_egress(dp: &mut Datapath, frame: &[u8], moved: &[(tcpguard_common::Counter, u64)]) {
    let before = counters(dp);
    assert_eq!(run_egress(dp, frame), 0, "egress never drops");
    let mut d = delta(&before, &counters(dp));
    d.sort_unstable();
    let mut want: Vec<(&str, u64)> = moved.iter().map(|(c, n)| (c.name(), *n)).collect();
    want.sort_unstable();
    assert_eq!(d, want, "egress counter deltas");
}

fn with_egress(dp: &mut Datapath) {
    let s = maps(dp).settings().unwrap();
    maps(dp).set_settings(&Settings { flags: s.flags | FLAG_EGRESS, ..s }).unwrap();
}

fn synack4(to: [u8; 4], dport: u16, server_isn: u32, ack: u32) -> Vec<u8> {
    Craft::v4(SERVER, to, 80, dport).flags(TCP_SYN | TCP_ACK).seq(server_isn).ack(ack).build()
}

#[test]
fn the_servers_synack_makes_a_syn_half_open_and_the_ack_must_acknowledge_it() {
    let mut dp = load();
    with_egress(&mut dp);
    // The client's SYN is tracked, not yet half-open: the server has not answered.
    expect(&mut dp, &syn4(CLIENT, 1000, 100).build(), XDP_PASS, &[(Syn, 1), (SynTracked, 1), (PassTcp, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 0);
    // An ACK before any SYN-ACK completes nothing.
    let early = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(101).ack(7001).build();
    expect(&mut dp, &early, XDP_PASS, &[(AckUnanswered, 1), (PassTcp, 1)]);
    // The server's SYN-ACK (ack = ISN + 1) on egress: half-open now, its ISN kept.
    expect_egress(&mut dp, &synack4(CLIENT, 1000, 7000, 101), &[(SynAckOut, 1), (HalfOpenOpened, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 1);
    // Sent again (same ISN): nothing new.
    expect_egress(&mut dp, &synack4(CLIENT, 1000, 7000, 101), &[(SynAckOut, 1), (SynAckRetransmit, 1)]);
    // A SYN-ACK for another SYN of the tuple is not this one's.
    expect_egress(&mut dp, &synack4(CLIENT, 1000, 9000, 555), &[(SynAckOut, 1)]);
    // The right seq, the wrong ack: not the final ACK.
    let bad = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(101).ack(9001).build();
    expect(&mut dp, &bad, XDP_PASS, &[(AckBadAck, 1), (PassTcp, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).completed, 0);
    // seq = ISN + 1 and ack = server ISN + 1: complete.
    let ack = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(101).ack(7001).build();
    expect(&mut dp, &ack, XDP_PASS, &[(HandshakeCompleted, 1), (PassTcp, 1)]);
    let s = source(&mut dp, IpAddr::from(CLIENT));
    assert_eq!((s.completed, s.half_open), (1, 0));
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 0);
}

/// The bulk of what a server sends (data, pure ACKs) is told apart from two
/// header loads and left alone; a SYN-ACK, RST or FIN among it still takes
/// the full path, whatever else its flags hold.
#[test]
fn the_servers_data_is_let_go_and_its_handshake_segments_still_count() {
    let mut dp = load();
    with_egress(&mut dp);
    expect(&mut dp, &syn4(CLIENT, 1500, 100).build(), XDP_PASS, &[(Syn, 1), (SynTracked, 1), (PassTcp, 1)]);
    let data = |f: u8| Craft::v4(SERVER, CLIENT, 80, 1500).flags(f).seq(7001).ack(101).payload(b"hello").build();
    for f in [TCP_ACK, TCP_ACK | 0x08, TCP_ACK | 0x20, TCP_ACK | 0x40 | 0x80] {
        expect_egress(&mut dp, &data(f), &[]);
    }
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 0, "no data segment opened anything");
    // A SYN-ACK with ECN flags still makes the SYN half-open.
    let synack = Craft::v4(SERVER, CLIENT, 80, 1500).flags(TCP_SYN | TCP_ACK | 0x40).seq(7000).ack(101).build();
    expect_egress(&mut dp, &synack, &[(SynAckOut, 1), (HalfOpenOpened, 1)]);
    // An RST with PSH closes it.
    let rst = Craft::v4(SERVER, CLIENT, 80, 1500).flags(TCP_RST | 0x08).seq(7001).build();
    expect_egress(&mut dp, &rst, &[(RstHalfOpen, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 0);
}

#[test]
fn the_servers_synack_over_ipv6_too() {
    let mut dp = load();
    with_egress(&mut dp);
    let syn = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_SYN).seq(5).syn_options().build();
    expect(&mut dp, &syn, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (PassTcp, 1)]);
    let synack = Craft::v6(v6(1), v6(10), 443, 1000).flags(TCP_SYN | TCP_ACK).seq(40).ack(6).build();
    expect_egress(&mut dp, &synack, &[(SynAckOut, 1), (HalfOpenOpened, 1)]);
    let ack = Craft::v6(v6(10), v6(1), 1000, 443).flags(TCP_ACK).seq(6).ack(41).build();
    expect(&mut dp, &ack, XDP_PASS, &[(HandshakeCompleted, 1), (PassTcp, 1)]);
}

#[test]
fn a_syn_the_server_resets_is_refused_not_half_open() {
    let mut dp = load();
    with_egress(&mut dp);
    // A port scan: SYNs to a closed port, each answered with RST|ACK.
    for port in 0..5u16 {
        let syn = Craft::v4(CLIENT, SERVER, 2000 + port, 81).flags(TCP_SYN).seq(300).build();
        expect(&mut dp, &syn, XDP_PASS, &[(Syn, 1), (SynTracked, 1), (PassTcp, 1)]);
        let rst = Craft::v4(SERVER, CLIENT, 81, 2000 + port).flags(TCP_RST | TCP_ACK).seq(0).ack(301).build();
        expect_egress(&mut dp, &rst, &[(SynRefused, 1)]);
    }
    assert_eq!(maps(&mut dp).half_open_entries().unwrap(), 0);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 0);
    // An RST that does not acknowledge the SYN refuses nothing.
    expect(&mut dp, &syn4(CLIENT, 3000, 10).build(), XDP_PASS, &[(Syn, 1), (SynTracked, 1), (PassTcp, 1)]);
    let stray = Craft::v4(SERVER, CLIENT, 80, 3000).flags(TCP_RST | TCP_ACK).ack(99).build();
    expect_egress(&mut dp, &stray, &[]);
    // After the SYN-ACK, a server RST closes the half-open handshake.
    expect_egress(&mut dp, &synack4(CLIENT, 3000, 50, 11), &[(SynAckOut, 1), (HalfOpenOpened, 1)]);
    let abort = Craft::v4(SERVER, CLIENT, 80, 3000).flags(TCP_RST).seq(51).build();
    expect_egress(&mut dp, &abort, &[(RstHalfOpen, 1)]);
    assert_eq!(source(&mut dp, IpAddr::from(CLIENT)).half_open, 0);
}

/// Every prefix the command line, the control protocol and the config
/// accept is one the datapath can match: blocked, it drops a SYN from an
/// address inside it. (Written in every form the three parsers meet:
/// IPv4, IPv6, IPv4-mapped and -compatible IPv6, host bits set, no length.)
#[test]
fn every_accepted_prefix_matches_a_packet_from_inside_it() {
    use proptest::prelude::*;
    let dp = std::cell::RefCell::new(load());
    let form = prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv4Addr::from(a))),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv6Addr::from(a))),
        (any::<[u8; 4]>(), 96u8..=128)
            .prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv4Addr::from(a).to_ipv6_mapped())),
        (any::<[u8; 4]>(), 96u8..=128).prop_map(|(a, l)| {
            let v = u32::from_be_bytes(a);
            format!("{}/{l}", std::net::Ipv6Addr::from(u128::from(v)))
        }),
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
    ];
    let cfg = ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(cfg, |(text in form, host in any::<u128>())| {
        // The three ways in.
        let cli: Result<Prefix, _> = text.parse();
        let control: Result<tcpguard::proto::Request, _> =
            serde_json::from_str(&format!(r#"{{"cmd":"block","prefix":"{text}","ttl_secs":null,"force":true}}"#));
        let config = tcpguard::config::Config::parse(
            &format!("[datapath]\nblock = [\"{text}\"]\nwide-entries = true\n"),
            "prop.toml",
        );
        // They agree on what they accept.
        prop_assert_eq!(cli.is_ok(), control.is_ok(), "{} cli {:?} control {:?}", text, cli, control);
        prop_assert_eq!(cli.is_ok(), config.is_ok(), "{} cli {:?} config {:?}", text, cli, config.err());
        let Ok(p) = cli else { return Ok(()) };
        // A source inside the prefix: its bits, then any host bits.
        let src = match p.addr {
            IpAddr::V4(a) => {
                let keep = if p.len == 0 { 0 } else { u32::MAX << (32 - u32::from(p.len)) };
                let v = (u32::from(a) & keep) | (host as u32 & !keep);
                IpAddr::V4(v.into())
            }
            IpAddr::V6(a) => {
                let keep = if p.len == 0 { 0 } else { u128::MAX << (128 - u32::from(p.len)) };
                IpAddr::V6(((u128::from(a) & keep) | (host & !keep)).into())
            }
        };
        // An IPv4-mapped address denotes an IPv4 host: its packets are IPv4.
        let src = match src {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        let frame = match src {
            IpAddr::V4(a) => syn4(a.octets(), 1000, 1).build(),
            IpAddr::V6(a) => Craft::v6(a.octets(), v6(1), 1000, 443).flags(TCP_SYN).seq(5).build(),
        };
        let mut dp = dp.borrow_mut();
        maps(&mut dp).block(&p, 0).unwrap();
        let v = run(&dp, &frame);
        prop_assert!(maps(&mut dp).unblock(&p).unwrap());
        prop_assert_eq!(v, XDP_DROP, "{} (as {}) did not match a SYN from {}", text, p, src);
    });
}

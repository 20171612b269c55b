//! Per-packet cost of the datapath with BPF_PROG_TEST_RUN, as ratios to a
//! pass-everything XDP program measured in the same run.
//!
//! Two regimes, each with its own baseline:
//! - repeat: one packet run `repeat` times in the kernel loop; the kernel
//!   reports mean ns per run. For paths whose state does not change with
//!   repetition (non-TCP, established data, blocked source).
//! - single-shot: one run per syscall with a different packet each time (a
//!   new source, or a new connection from a known source); the kernel's
//!   per-call timing includes its clock reads, so both the path and its
//!   baseline carry that fixed overhead.

use std::fmt::Write as _;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use tcpguard_common::{
    craft::Craft,
    parse::{TCP_ACK, TCP_SYN},
};

use crate::{
    lab::baselines::Baselines,
    loader::{Datapath, LoadOptions},
    maps::Maps,
};

struct Row {
    name: &'static str,
    regime: &'static str,
    ns: f64,
    base_ns: f64,
    target: Option<f64>,
    /// The baseline is the tracking path's new-source SYN, not the empty program.
    vs_tracking: bool,
}

impl Default for Row {
    fn default() -> Self {
        Row { name: "", regime: "", ns: 0.0, base_ns: 1.0, target: None, vs_tracking: false }
    }
}

/// `n` SYNs with Linux options from distinct sources (`src(base + i)`) to `dport`.
fn spoofed_syns(base: u32, n: u32, dport: u16) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            Craft::v4(src(base + i), DST, 1024 + (i % 60000) as u16, dport).flags(TCP_SYN).seq(i).syn_options().build()
        })
        .collect()
}

/// The answered SYN's rows: as the daemon runs it (the egress program on,
/// the listener proven: no socket lookup), and with a lookup per SYN.
/// Returns the pass-all baseline of these single-shot SYNs.
fn answered_rows(
    dp: &mut Datapath,
    pass: &Baselines,
    settings: &tcpguard_common::Settings,
    singles: u32,
    tracking_new_ns: f64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<f64> {
    use tcpguard_common::{Settings, FLAG_EGRESS};
    let settings = *settings;
    // A spoofed flood: every SYN from a new random source, Linux options.
    let flood = spoofed_syns(2_000_000, singles, 80);
    let base = single_ns(pass.xdp(), &flood)?;
    let ns_lookup = single_ns(dp.program(), &flood)?;
    let sent = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::CookieSent);
    anyhow::ensure!(sent >= u64::from(singles) * 9 / 10, "the responder answered only {sent} of {singles} SYNs");
    // As the daemon runs it, with the egress program marking the 4-tuples
    // the server closes: the listener, proven by a cookie made for it at
    // most a second ago, answers without a socket lookup.
    let with_egress = Settings { flags: settings.flags | FLAG_EGRESS, ..settings };
    Maps::new(&mut dp.ebpf).set_settings(&with_egress)?;
    let quick0 = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::CookieNoLookup);
    let ns = single_ns(dp.program(), &spoofed_syns(6_000_000, singles, 80))?;
    let quick = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::CookieNoLookup) - quick0;
    anyhow::ensure!(quick >= u64::from(singles) * 9 / 10, "only {quick} of {singles} SYNs skipped the lookup");
    rows.push(Row {
        name: "attack mode: spoofed SYN → SYN-ACK from XDP",
        regime: "single-shot",
        ns,
        base_ns: base,
        ..Row::default()
    });
    rows.push(Row {
        name: "attack mode: spoofed SYN → SYN-ACK from XDP",
        regime: "single-shot",
        ns,
        base_ns: tracking_new_ns,
        target: Some(0.3),
        vs_tracking: true,
    });
    rows.push(Row {
        name: "attack mode without the egress program: socket lookup per SYN, then the SYN-ACK",
        regime: "single-shot",
        ns: ns_lookup,
        base_ns: base,
        ..Row::default()
    });
    Maps::new(&mut dp.ebpf).set_settings(&settings)?;
    Ok(base)
}

/// Attack-mode rows (run inside a namespace with a listener on :80).
fn attack_rows(singles: u32, repeat: u32, rounds: usize, tracking_new_ns: f64) -> anyhow::Result<Vec<Row>> {
    use tcpguard_common::{AttackState, Settings, ATTACK_REASON_DAEMON, FLAG_ANSWER, FLAG_XDP_COOKIES};
    let _l = std::net::TcpListener::bind("0.0.0.0:80")?;
    let mut rows = Vec::new();
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let pass = Baselines::load()?;
    let settings = Settings {
        flags: FLAG_XDP_COOKIES | FLAG_ANSWER,
        synack_wscale: 7,
        heavy_syns_per_sec: 200,
        hash_seed: 0x5eed,
        // Craft's default destination MAC: the frames are the host's own.
        mac: [0x02, 0, 0, 0, 0, 2, 0, 0],
        ..Settings::default()
    };
    let mut m = Maps::new(&mut dp.ebpf);
    m.set_settings(&settings)?;
    // The host's own address (one local-address lookup on the answered path).
    m.add_local(std::net::IpAddr::from(DST))?;
    m.set_attack(&AttackState { active: 1, reason: ATTACK_REASON_DAEMON, ..AttackState::default() })?;
    let base = answered_rows(&mut dp, &pass, &settings, singles, tracking_new_ns, &mut rows)?;
    // Where the responder's time goes: the same SYNs to a closed port (the
    // socket lookup misses: accounting + lookup), then the full path
    // without the kernel's cookie (tcp_syncookies=1: the helper refuses
    // before computing it).
    let closed = spoofed_syns(3_000_000, singles, 81);
    let ns_closed = single_ns(dp.program(), &closed)?;
    rows.push(Row {
        name: "attack mode: SYN to a closed port (socket lookup misses)",
        regime: "single-shot",
        ns: ns_closed,
        base_ns: base,
        ..Row::default()
    });
    // What the host check costs: SYNs to an address the host does not own
    // stop at it (MAC compare + one local-address lookup), before the socket
    // lookup; against the responder-off row it is the check alone.
    let foreign: Vec<Vec<u8>> = (0..singles)
        .map(|i| {
            Craft::v4(src(5_000_000 + i), [192, 0, 2, 77], 1024 + (i % 60000) as u16, 80)
                .flags(TCP_SYN)
                .seq(i)
                .syn_options()
                .build()
        })
        .collect();
    let ns_foreign = single_ns(dp.program(), &foreign)?;
    rows.push(Row {
        name: "attack mode: SYN not for this host (host check, then the kernel)",
        regime: "single-shot",
        ns: ns_foreign,
        base_ns: base,
        ..Row::default()
    });
    std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "1")?;
    let refused = spoofed_syns(4_000_000, singles, 80);
    let ns_refused = single_ns(dp.program(), &refused)?;
    std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2")?;
    rows.push(Row {
        name: "attack mode: SYN to a listener, cookie refused (lookup + helper, no cookie)",
        regime: "single-shot",
        ns: ns_refused,
        base_ns: base,
        ..Row::default()
    });
    // The same flood with the responder off: what the accounting costs.
    let mut m = Maps::new(&mut dp.ebpf);
    m.set_settings(&Settings { flags: 0, ..settings })?;
    let ns_acct = single_ns(dp.program(), &spoofed_syns(2_000_000, singles, 80))?;
    rows.push(Row {
        name: "attack mode, responder off: sketch + HLL, kernel answers",
        regime: "single-shot",
        ns: ns_acct,
        base_ns: base,
        ..Row::default()
    });
    // A heavy source the daemon has blocked: dropped by the block-list
    // before any accounting.
    let mut m = Maps::new(&mut dp.ebpf);
    m.set_settings(&settings)?;
    m.block(&"10.250.0.66/32".parse().map_err(anyhow::Error::msg)?, 0)?;
    let heavy = Craft::v4([10, 250, 0, 66], DST, 40000, 80).flags(TCP_SYN).seq(1).syn_options().build();
    let (ns, b) = paired_repeat(&dp, &pass, &heavy, repeat, rounds)?;
    rows.push(Row {
        name: "attack mode: SYN from a heavy source, blocked (drop)",
        regime: "repeat",
        ns,
        base_ns: b,
        target: Some(2.0),
        ..Row::default()
    });
    rows.extend(ack_rows(&mut dp, &pass, singles)?);
    Ok(rows)
}

/// ACK-flood rows (the datapath in attack mode, a listener on :80): what
/// an unmatched ACK costs in attack mode (dropped) and in tracking mode
/// (passed to the kernel).
fn ack_rows(dp: &mut Datapath, pass: &Baselines, singles: u32) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // An ACK flood: spoofed bare ACKs of no connection to the listener. In
    // attack mode each is looked up, fails the cookie check, and is dropped;
    // in tracking mode it passes to the kernel, which looks it up again and
    // answers with a RST.
    let acks: Vec<Vec<u8>> = (0..singles)
        .map(|i| {
            Craft::v4(src(6_000_000 + i), DST, 1024 + (i % 60000) as u16, 80)
                .flags(TCP_ACK)
                .seq(i.wrapping_mul(2_654_435_761))
                .ack(i ^ 0x5bd1_e995)
                .build()
        })
        .collect();
    let dropped_before = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::DropAckInvalid);
    let ns_ack = single_ns(dp.program(), &acks)?;
    let dropped = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::DropAckInvalid) - dropped_before;
    anyhow::ensure!(dropped >= u64::from(singles) * 9 / 10, "attack mode dropped only {dropped} of {singles} ACKs");
    let base_ack = single_ns(pass.xdp(), &acks)?;
    rows.push(Row {
        name: "attack mode: spoofed ACK to a listener (lookup + cookie check, drop)",
        regime: "single-shot",
        ns: ns_ack,
        base_ns: base_ack,
        ..Row::default()
    });
    Maps::new(&mut dp.ebpf).set_attack(&tcpguard_common::AttackState::default())?;
    // ACK-checking mode alone (an ACK flood, no SYN flood): the same check.
    Maps::new(&mut dp.ebpf).set_ack_mode(&tcpguard_common::AttackState {
        active: 1,
        reason: tcpguard_common::ATTACK_REASON_DAEMON,
        ..tcpguard_common::AttackState::default()
    })?;
    let dropped_before = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::DropAckInvalid);
    let ns_ack_mode = single_ns(dp.program(), &acks)?;
    let dropped = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::DropAckInvalid) - dropped_before;
    anyhow::ensure!(dropped >= u64::from(singles) * 9 / 10, "ACK-checking mode dropped only {dropped} of {singles}");
    rows.push(Row {
        name: "ACK-checking mode: spoofed ACK to a listener (lookup + cookie check, drop)",
        regime: "single-shot",
        ns: ns_ack_mode,
        base_ns: base_ack,
        ..Row::default()
    });
    // What an established flow's packet pays while the check is on: its
    // socket is found (a real connection in this namespace), it passes.
    Maps::new(&mut dp.ebpf).add_local(std::net::IpAddr::from([127, 0, 0, 1]))?;
    let l = std::net::TcpListener::bind("127.0.0.1:8081")?;
    let _c = std::net::TcpStream::connect("127.0.0.1:8081")?;
    let (_s, peer) = l.accept()?;
    let data = Craft::v4([127, 0, 0, 1], [127, 0, 0, 1], peer.port(), 8081)
        .flags(TCP_ACK)
        .seq(1)
        .ack(1)
        .payload(&[0u8; 64])
        .build();
    let frames = vec![data; singles as usize / 10];
    let before = Maps::new(&mut dp.ebpf).counters()?;
    let ns_est = single_ns(dp.program(), &frames)?;
    let after = Maps::new(&mut dp.ebpf).counters()?;
    let c = tcpguard_common::Counter::PassTcp;
    anyhow::ensure!(
        after.get(c) - before.get(c) == frames.len() as u64
            && after.get(tcpguard_common::Counter::NotForHost) == before.get(tcpguard_common::Counter::NotForHost),
        "the established flow's data was not checked and passed"
    );
    let base_est = single_ns(pass.xdp(), &frames)?;
    rows.push(Row {
        name: "ACK-checking mode: established flow's data (socket found, pass)",
        regime: "single-shot",
        ns: ns_est,
        base_ns: base_est,
        ..Row::default()
    });
    Maps::new(&mut dp.ebpf).set_ack_mode(&tcpguard_common::AttackState::default())?;
    let ns_ack_calm = single_ns(dp.program(), &acks)?;
    rows.push(Row {
        name: "tracking mode: spoofed ACK to a listener (passed; the kernel answers RST)",
        regime: "single-shot",
        ns: ns_ack_calm,
        base_ns: base_ack,
        ..Row::default()
    });
    Ok(rows)
}

/// Mean ns per run of `frame` through `p` (an XDP or a TC program).
fn repeat_ns<P>(p: &P, frame: &[u8], repeat: u32) -> anyhow::Result<f64>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let r = p.test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })?;
    Ok(r.duration.as_nanos() as f64)
}

/// Median over `rounds` of the mean ns/packet, alternating path and baseline
/// so both see the same machine state.
fn paired_repeat(
    dp: &Datapath,
    pass: &Baselines,
    frame: &[u8],
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        b.push(repeat_ns(pass.xdp(), frame, repeat)?);
        a.push(repeat_ns(dp.program(), frame, repeat)?);
    }
    Ok((median(&mut a), median(&mut b)))
}

/// The repeat regime's rows: non-TCP, established data, a blocked SYN.
fn repeat_rows(repeat: u32, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Repeat regime.
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let pass = Baselines::load()?;
    let udp = Craft::v4(src(1), DST, 5353, 53).l4_proto(17).build();
    let (ns, base) = paired_repeat(&dp, &pass, &udp, repeat, rounds)?;
    rows.push(Row { name: "non-TCP (UDP)", regime: "repeat", ns, base_ns: base, target: Some(1.2), ..Row::default() });
    // The yardstick of the fixed part: xdp-filter's per-packet statistics
    // record (one per-CPU lookup by action, packets and bytes raised), run
    // on the same frame against the same empty program.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        b.push(repeat_ns(pass.xdp(), &udp, repeat)?);
        a.push(repeat_ns(pass.xdp_named(crate::lab::baselines::XDP_STATS), &udp, repeat)?);
    }
    rows.push(Row {
        name: "yardstick: xdp-filter's stats record alone",
        regime: "repeat",
        ns: median(&mut a),
        base_ns: median(&mut b),
        ..Row::default()
    });

    let data = Craft::v4(src(2), DST, 40000, 80).flags(TCP_ACK).seq(5).ack(9).payload(&[0u8; 64]).build();
    let (ns, base) = paired_repeat(&dp, &pass, &data, repeat, rounds)?;
    rows.push(Row {
        name: "TCP data, established flow",
        regime: "repeat",
        ns,
        base_ns: base,
        target: Some(1.5),
        ..Row::default()
    });

    Maps::new(&mut dp.ebpf).block(&"10.200.0.0/16".parse().map_err(anyhow::Error::msg)?, 0)?;
    let blocked = Craft::v4([10, 200, 1, 1], DST, 40000, 80).flags(TCP_SYN).seq(1).syn_options().build();
    let (ns, base) = paired_repeat(&dp, &pass, &blocked, repeat, rounds)?;
    rows.push(Row {
        name: "SYN from a blocked source (drop)",
        regime: "repeat",
        ns,
        base_ns: base,
        target: Some(2.0),
        ..Row::default()
    });

    // The same established-data packet with a non-empty block-list: the
    // price of the block-list lookup on every TCP packet, when an entry
    // covers the source's first byte (10.200.0.0/16 and 10.0.0.2: the trie
    // is walked) and when none does (the summary answers).
    let (ns, base) = paired_repeat(&dp, &pass, &data, repeat, rounds)?;
    rows.push(Row {
        name: "TCP data, block-list non-empty, an entry covers the first byte",
        regime: "repeat",
        ns,
        base_ns: base,
        ..Row::default()
    });
    let outside = Craft::v4([192, 0, 2, 2], DST, 40000, 80).flags(TCP_ACK).seq(5).ack(9).payload(&[0u8; 64]).build();
    let (ns, base) = paired_repeat(&dp, &pass, &outside, repeat, rounds)?;
    rows.push(Row {
        name: "TCP data, block-list non-empty, no entry covers the first byte",
        regime: "repeat",
        ns,
        base_ns: base,
        ..Row::default()
    });
    drop(dp);
    Ok(rows)
}

/// The TC egress program against a pass-everything TC program: a data
/// packet the server sends (the common case: parsed, not a SYN-ACK or RST),
/// and the SYN-ACK that makes a tracked SYN half-open (single-shot: each
/// answers a different tracked SYN).
fn egress_rows(singles: u32, repeat: u32, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let pass = Baselines::load()?;
    let mut m = Maps::new(&mut dp.ebpf);
    let s = m.settings()?;
    m.set_settings(&tcpguard_common::Settings { flags: s.flags | tcpguard_common::FLAG_EGRESS, ..s })?;
    let out = Craft::v4(DST, src(2), 80, 40000).flags(TCP_ACK).seq(9).ack(5).payload(&[0u8; 64]).build();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        b.push(repeat_ns(pass.tc(), &out, repeat)?);
        a.push(repeat_ns(dp.egress(), &out, repeat)?);
    }
    let mut rows = vec![Row {
        name: "egress: TCP data the server sends",
        regime: "repeat",
        ns: median(&mut a),
        base_ns: median(&mut b),
        target: Some(1.5),
        ..Row::default()
    }];
    // Tracked SYNs (through XDP), then their SYN-ACKs through egress.
    let syns: Vec<Vec<u8>> = (0..singles)
        .map(|i| Craft::v4(src(5000 + i), DST, 40000, 80).flags(TCP_SYN).seq(i).syn_options().build())
        .collect();
    for f in &syns {
        repeat_ns(dp.program(), f, 1)?;
    }
    let synacks: Vec<Vec<u8>> = (0..singles)
        .map(|i| {
            Craft::v4(DST, src(5000 + i), 80, 40000).flags(TCP_SYN | TCP_ACK).seq(77).ack(i.wrapping_add(1)).build()
        })
        .collect();
    let mut total = 0.0;
    let mut base = 0.0;
    for f in &synacks {
        base += repeat_ns(pass.tc(), f, 1)?;
        total += repeat_ns(dp.egress(), f, 1)?;
    }
    // The kernel's RSTs to unmatched ACKs (an ACK flood before the check is
    // on): counted in the rate window that enters ACK-checking mode.
    let rsts: Vec<Vec<u8>> = (0..singles)
        .map(|i| {
            Craft::v4(DST, src(7_000_000 + i), 80, 1024 + (i % 60000) as u16)
                .flags(tcpguard_common::parse::TCP_RST)
                .seq(i)
                .build()
        })
        .collect();
    let (mut rst_total, mut rst_base) = (0.0, 0.0);
    for f in &rsts {
        rst_base += repeat_ns(pass.tc(), f, 1)?;
        rst_total += repeat_ns(dp.egress(), f, 1)?;
    }
    let counted = Maps::new(&mut dp.ebpf).counters()?.get(tcpguard_common::Counter::AckUnmatched);
    anyhow::ensure!(counted >= u64::from(singles), "egress counted {counted} of {singles} RSTs");
    rows.push(Row {
        name: "egress: the kernel's RST to an unmatched ACK (counted)",
        regime: "single-shot",
        ns: rst_total / f64::from(singles),
        base_ns: rst_base / f64::from(singles),
        ..Row::default()
    });
    rows.push(Row {
        name: "egress: SYN-ACK of a tracked SYN (half-open)",
        regime: "single-shot",
        ns: total / f64::from(singles),
        base_ns: base / f64::from(singles),
        target: Some(4.0),
        ..Row::default()
    });
    Ok(rows)
}

fn single_ns(p: &Xdp, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = 0f64;
    for f in frames {
        total += repeat_ns(p, f, 1)?;
    }
    Ok(total / frames.len() as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn src(i: u32) -> [u8; 4] {
    // 100.64.0.0/10 style spread without touching real hosts: packets never
    // leave BPF_PROG_TEST_RUN.
    let x = 0x0a00_0000 | (i & 0x00ff_ffff);
    x.to_be_bytes()
}

const DST: [u8; 4] = [192, 0, 2, 1];

pub fn packets(quick: bool) -> anyhow::Result<String> {
    let repeat: u32 = if quick { 100_000 } else { 1_000_000 };
    let rounds = if quick { 3 } else { 7 };
    let singles: u32 = if quick { 20_000 } else { 100_000 };
    let mut rows = repeat_rows(repeat, rounds)?;

    // Single-shot regime: fresh maps, distinct packets.
    let dp = Datapath::load(&LoadOptions::default())?;
    let pass = Baselines::load()?;
    let new_src: Vec<Vec<u8>> = (0..singles)
        .map(|i| Craft::v4(src(1000 + i), DST, 40000, 80).flags(TCP_SYN).seq(i).syn_options().build())
        .collect();
    let known: Vec<Vec<u8>> = (0..singles)
        .map(|i| {
            Craft::v4([10, 99, 0, 1], DST, 1024 + (i % 60000) as u16, 80)
                .flags(TCP_SYN)
                .seq(i ^ 0x5a5a)
                .syn_options()
                .build()
        })
        .collect();
    let base_single = single_ns(pass.xdp(), &new_src)?;
    let ns_new = single_ns(dp.program(), &new_src)?;
    let ns_known = single_ns(dp.program(), &known)?;
    let base_single2 = single_ns(pass.xdp(), &known)?;
    let base = f64::midpoint(base_single, base_single2);
    rows.push(Row {
        name: "SYN from a new source",
        regime: "single-shot",
        ns: ns_new,
        base_ns: base,
        target: Some(8.0),
        ..Row::default()
    });
    rows.push(Row {
        name: "SYN from a known source (new connection)",
        regime: "single-shot",
        ns: ns_known,
        base_ns: base,
        target: Some(8.0),
        ..Row::default()
    });
    drop(dp);

    rows.extend(egress_rows(singles, repeat, rounds)?);

    // Attack mode, in a namespace of its own with a real listener (the
    // responder looks the socket up in the running thread's namespace) and
    // tcp_syncookies=2, as the daemon sets it.
    let ns = crate::lab::Netns::new("bpk")?;
    ns.sysctl("net.ipv4.tcp_syncookies", "2")?;
    ns.sysctl("net.ipv4.tcp_timestamps", "2")?;
    let attack_rows = ns.run(|| attack_rows(singles, repeat, rounds, ns_new))??;
    rows.extend(attack_rows);

    let mut s = String::new();
    let _ = writeln!(s, "## Per-packet cost (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        s,
        "Targets: the tracking paths against the pass-everything baseline; the attack-mode SYN → SYN-ACK \
         against today's tracking path for a SYN from a new source (the row marked *vs new-source SYN*).\n"
    );
    let _ = writeln!(
        s,
        "Repeat regime: {repeat} repetitions per measurement, median of {rounds} rounds alternating with \
         the baseline. Single-shot regime: mean of {singles} one-packet runs, each a different packet.\n"
    );
    let _ = writeln!(s, "| path | regime | ns/packet | baseline ns | ratio | target | |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---|");
    for r in &rows {
        let ratio = r.ns / r.base_ns;
        let name = if r.vs_tracking { format!("{} (*vs new-source SYN*)", r.name) } else { r.name.to_string() };
        let (t, ok) = match r.target {
            Some(t) => (format!("≤ {t}×"), if ratio <= t { "met" } else { "missed" }),
            None => ("—".into(), ""),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.2}× | {} | {} |",
            name, r.regime, r.ns, r.base_ns, ratio, t, ok
        );
    }
    Ok(s)
}

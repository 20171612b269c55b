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
    loader::{Datapath, LoadOptions},
    maps::Maps,
};

struct Row {
    name: &'static str,
    regime: &'static str,
    ns: f64,
    base_ns: f64,
    target: Option<f64>,
}

fn repeat_ns(p: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let r = p.test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })?;
    Ok(r.duration.as_nanos() as f64)
}

/// Median over `rounds` of the mean ns/packet, alternating path and baseline
/// so both see the same machine state.
fn paired_repeat(dp: &Datapath, frame: &[u8], repeat: u32, rounds: usize) -> anyhow::Result<(f64, f64)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        b.push(repeat_ns(dp.baseline(), frame, repeat)?);
        a.push(repeat_ns(dp.program(), frame, repeat)?);
    }
    Ok((median(&mut a), median(&mut b)))
}

fn single_ns(p: &Xdp, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = 0f64;
    for f in frames {
        total += repeat_ns(p, f, 1)?;
    }
    Ok(total / frames.len() as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
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
    let mut rows = Vec::new();

    // Repeat regime.
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let udp = Craft::v4(src(1), DST, 5353, 53).l4_proto(17).build();
    let (ns, base) = paired_repeat(&dp, &udp, repeat, rounds)?;
    rows.push(Row { name: "non-TCP (UDP)", regime: "repeat", ns, base_ns: base, target: Some(1.2) });

    let data = Craft::v4(src(2), DST, 40000, 80).flags(TCP_ACK).seq(5).ack(9).payload(&[0u8; 64]).build();
    let (ns, base) = paired_repeat(&dp, &data, repeat, rounds)?;
    rows.push(Row { name: "TCP data, established flow", regime: "repeat", ns, base_ns: base, target: Some(1.5) });

    Maps::new(&mut dp.ebpf).block(&"10.200.0.0/16".parse().map_err(anyhow::Error::msg)?, 0)?;
    let blocked = Craft::v4([10, 200, 1, 1], DST, 40000, 80).flags(TCP_SYN).seq(1).syn_options().build();
    let (ns, base) = paired_repeat(&dp, &blocked, repeat, rounds)?;
    rows.push(Row { name: "SYN from a blocked source (drop)", regime: "repeat", ns, base_ns: base, target: Some(2.0) });

    // The same established-data packet with a non-empty block-list: the
    // price of the block-list lookup on every TCP packet.
    let (ns, base) = paired_repeat(&dp, &data, repeat, rounds)?;
    rows.push(Row { name: "TCP data, block-list non-empty", regime: "repeat", ns, base_ns: base, target: None });
    drop(dp);

    // Single-shot regime: fresh maps, distinct packets.
    let dp = Datapath::load(&LoadOptions::default())?;
    let new_src: Vec<Vec<u8>> = (0..singles)
        .map(|i| Craft::v4(src(1000 + i), DST, 40000, 80).flags(TCP_SYN).seq(i).syn_options().build())
        .collect();
    let known: Vec<Vec<u8>> = (0..singles)
        .map(|i| Craft::v4([10, 99, 0, 1], DST, 1024 + (i % 60000) as u16, 80).flags(TCP_SYN).seq(i ^ 0x5a5a).syn_options().build())
        .collect();
    let base_single = single_ns(dp.baseline(), &new_src)?;
    let ns_new = single_ns(dp.program(), &new_src)?;
    let ns_known = single_ns(dp.program(), &known)?;
    let base_single2 = single_ns(dp.baseline(), &known)?;
    let base = (base_single + base_single2) / 2.0;
    rows.push(Row { name: "SYN from a new source", regime: "single-shot", ns: ns_new, base_ns: base, target: Some(8.0) });
    rows.push(Row { name: "SYN from a known source (new connection)", regime: "single-shot", ns: ns_known, base_ns: base, target: Some(8.0) });

    let mut s = String::new();
    let _ = writeln!(s, "## Per-packet cost (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        s,
        "Repeat regime: {repeat} repetitions per measurement, median of {rounds} rounds alternating with \
         the baseline. Single-shot regime: mean of {singles} one-packet runs, each a different packet.\n"
    );
    let _ = writeln!(s, "| path | regime | ns/packet | baseline ns | ratio | target | |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---|");
    for r in &rows {
        let ratio = r.ns / r.base_ns;
        let (t, ok) = match r.target {
            Some(t) => (format!("≤ {t}×"), if ratio <= t { "met" } else { "missed" }),
            None => ("—".into(), ""),
        };
        let _ = writeln!(s, "| {} | {} | {:.1} | {:.1} | {:.2}× | {} | {} |", r.name, r.regime, r.ns, r.base_ns, ratio, t, ok);
    }
    Ok(s)
}

//! `cargo xtask bench`: the per-packet benchmark and the flood labs, run
//! through `tcpguard-lab`, written to docs/benchmarks.md with the plot.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{debian_tools, is_root, output, plot, run, say, toolchain, workspace_root, BENCH_TOOLS, LAB_BUILD};

pub fn bench(quick: bool) -> Result<()> {
    toolchain()?;
    debian_tools(BENCH_TOOLS)?;
    if !is_root() {
        bail!("benchmarks run BPF_PROG_TEST_RUN and namespace labs and need root");
    }
    run(Command::new("cargo").args(LAB_BUILD))?;
    let bin = workspace_root().join("target/release/tcpguard-lab");
    let q: &[&str] = if quick { &["--quick"] } else { &[] };
    let cmd = format!("cargo xtask bench{}", if quick { " --quick" } else { "" });

    say("per-packet cost (BPF_PROG_TEST_RUN)");
    let o =
        Command::new(&bin).args(["bench", "packets"]).args(q).output().context("running tcpguard-lab bench packets")?;
    if !o.status.success() {
        bail!("tcpguard-lab bench packets failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let packets = String::from_utf8_lossy(&o.stdout).into_owned();
    print!("{packets}");

    say("flood lab: (a)-(e) side by side, detection latency, daemon cost (a few minutes)");
    let o = Command::new(&bin)
        .args(["bench", "flood"])
        .args(q)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running tcpguard-lab bench flood")?;
    if !o.status.success() {
        bail!("tcpguard-lab bench flood failed");
    }
    let flood: Value = serde_json::from_slice(&o.stdout).context("bench flood output")?;
    std::fs::create_dir_all("docs")?;
    plot::success_vs_rate(&flood, Path::new("docs/flood-success.png"))?;
    let flood_md = flood_markdown(&flood, &cmd);
    print!("{flood_md}");

    let doc = format!(
        "# tcpguard benchmarks\n\nProduced by `{cmd}` on {} (as root), in one run. Ratios are \
         against a baseline measured in the same run; absolute numbers are for orientation.\n\n{packets}\n{flood_md}",
        machine()
    );
    let doc = format!("{doc}\n{ATTACK_MODE_READING}");
    std::fs::write("docs/benchmarks.md", doc)?;
    std::fs::write("docs/bench-flood.json", serde_json::to_string_pretty(&flood)?)?;
    say("wrote docs/benchmarks.md, docs/bench-flood.json and docs/flood-success.png");
    Ok(())
}

/// How to read the attack-mode rows, and what dominates where a goal is
/// missed (appended to docs/benchmarks.md by every run).
const ATTACK_MODE_READING: &str = "## Reading the attack-mode numbers

Goals (issue: attack mode): at the highest rate the lab reaches, legit success 100 %, legit p99 ≤ 2× the
kernel-alone p99 of the same run (or ≤ 20 ms), softirq per received flood packet ≤ 0.75× kernel alone:
compare the *full* rows of (e) and (b). Per packet: attack-mode SYN → SYN-ACK ≤ 0.3× the tracking path's
new-source SYN; a SYN from a heavy, blocked source ≤ 2× the empty program. Mitigation in effect ≤ 10 ms
after flood start (datapath stamps), attack declared ≤ 0.5 s.

What the attack-mode SYN costs, from the breakdown rows (each adds one stage to the one before): *responder off*
is the fixed-memory accounting (the source's hash, HyperLogLog for one source in 8, the count-min sketch for one SYN
in 8 at random, the per-CPU rate window, one sampled SYN in 64 tracked in full); *closed port* adds the socket lookup
(`bpf_skc_lookup_tcp`: the established hash, where a random spoofed 4-tuple lands on a cold bucket, then the
listener hash); *cookie refused* adds the kernel helper's own checks; *without the egress program* adds the cookie
(two SipHash rounds in the kernel), the option read and the SYN-ACK's headers and checksums: the path every SYN
took before the lookup-free one. The answered row as the daemon runs it skips the lookup: a cookie made for the
port's listener by the lookup's path (`bpf_tcp_gen_syncookie`, which also stamps the listener as sending cookies,
so the kernel accepts their ACKs) vouches for that listener for one second, and within it the SYN's cookie comes
from `bpf_tcp_raw_gen_syncookie_ipv4/6` unless the egress program saw the server close that 4-tuple within
TIME_WAIT (a 4 KiB summary read per SYN, and one byte of 64 KiB of marks only when the summary is recent). The
SYN-ACK is built, checksummed and written over the SYN in 4-byte words; a bare or Linux SYN's header is read in
place. What remains on it: the accounting's hash and rate window, the host check, the cookie's SipHash, the frame's
growth for a bare SYN (`bpf_xdp_adjust_tail`) and the rewrite. Single-shot rows run one packet per syscall with
cold caches and the kernel's per-call timing, so they overstate every path alike; the live figure under the flood
(bpf_stats) is the one to hold against the ≤ 300 ns goal. Beyond this: the `bpf_sk_assign_tcp_reqsk` kfunc at TC
ingress (kernel ≥ 6.9; aya 0.14 cannot call kfuncs, later aya needs a newer rustc than this machine has).

**The ≤ 300 ns goal against its floors.** The full-rate rounds' controls measure, under the same flood in the
same run, what bpf_stats reads for a program that does nothing, (p), and for a bare responder, (r): the parse, the
kernel's cookie from the raw helper and tcpguard's word-sized rewrite, with no accounting and no check. (r) is the
least any XDP SYN-cookie responder costs on this kernel and VM; tcpguard's (e) is that plus the product's work: the
entry and its counters, the rate window and mode, the sampled sketch and HyperLogLog, the one SYN in 64 tracked in
full (its half-open entry, an LRU insert; its source's entry only if the source has one), the host, listener and
TIME_WAIT checks. Where (r) itself reads above 300 ns, the goal is
below the floor of answering from XDP here, and no cut to tcpguard's own work can meet it.

The answered path first checks that the SYN is the host's own: the destination MAC against the interface's (a
compare of six bytes in the settings already read) and the destination address among the host's IPv4 addresses,
kept in one cache line (`LOCAL_V4`, up to 15; IPv6, or more addresses, take the local-address hash); the closed-port
and refused rows pay it too, and the *not for this host* row stops right after it, so that row less the *responder
off* row is what the check costs. An allow-listed source's SYN goes to the kernel: the default allow-list
(127.0.0.0/8, ::1) is never empty, so the first bytes its entries cover are summarised in `ALLOW_FIRST` and a source
outside them is not walked through the trie. The transmit watch costs nothing per packet: its raw tracepoint program
runs on a driver's failed XDP action only, and veth's failed transmits are read from its own statistics each tick. (The
program it had on veth's `xdp:xdp_bulk_tx` ran on nearly every flush of a full-rate flood, one packet a poll, and in a
profile of (e) took about as many softirq samples as the XDP program itself.)

The fixed part every packet pays (the non-TCP and established-flow rows) is held against xdp-filter's: the
*yardstick* row runs its per-packet statistics record alone (one per-CPU lookup by action, packets and bytes raised)
against the same empty program. tcpguard's record is the same shape (one per-CPU lookup, the packet count and the
exit's counter raised); what the non-TCP row pays beyond the yardstick is the entry's two header words. The repeat
rows move by about ±3 ns from run to run, which is the width of the 1.2× and 2× goals' margins here.

The blocked heavy source's SYN is dropped before any accounting, in the entry's inlined fast path: what it pays is
the fixed part of every packet (per-CPU counters, two header words, the settings) plus one LPM-trie walk of the
block-list, about one empty program's time with one entry. The walk is made only for a source whose first octet an
entry covers: the block-lists' first bytes are summarised in `BLOCK_FIRST`, as the allow-lists' are, so while the
daemon blocks heavy sources the rest of the traffic skips it (the two *block-list non-empty* rows: the walk, and
the summary alone). An exact-match hash of blocked hosts ahead of the trie was not built: a host the summary
cannot rule out would pay the hash and then, for a prefix entry, the trie too.

On veth every flood packet is still an skb before XDP sees it (generic XDP conversion and the veth ring), and the
XDP_TX reply crosses the peer's XDP program and stack: the lab understates the gain a NIC in driver mode would show,
where flood packets never become skbs.
";

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn flood_markdown(b: &Value, cmd: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let secs = f(&b["seconds_per_point"]);
    let _ = writeln!(s, "## Under a spoofed SYN flood: (a)-(e) side by side\n");
    let _ = writeln!(
        s,
        "Command: `{cmd}`. Each point is a fresh namespace lab (server, legit client, attacker on its own veth). \
         The attacker sends spoofed SYNs from random addresses in 198.19.0.0/16 with tcpguard's generator \
         (AF_PACKET, sendmmsg batches of 64; its maximum on one core into a bare lab: **{:.0} SYN/s**), at a \
         fixed rate or flat out (*full*: as fast as the generator goes against that setup). For {secs:.0} s the \
         legit client opens a connection every 25 ms (open loop, 1 s timeout; a real listener answers). \
         *rx* is what the server's attacker-facing veth received. Softirq is the share of all CPU time on the \
         2-core machine, and per received flood packet (softirq ns over the run / packets received): the \
         sender's syscalls land in system time, so softirq isolates the receive path. *vs (b)* is that per-packet \
         figure against (b) at the same target rate. *XDP ns* is the tcpguard program's own time per run \
         (`bpf_stats`: run_time_ns / run_cnt, all packets). (c)-(e): `tcpguard run` with default thresholds; \
         (d) sets `syn-cookies = \"kernel\"` and `attack-syn-rate = 0` (the kernel answers; the datapath enters \
         attack mode only when the daemon detects the flood); (e) is the default (attack mode entered by the \
         datapath, SYNs answered from XDP). The full-rate comparison is repeated below in rounds, with two \
         controls as floors of the XDP ns column: (p) the kernel alone with a two-instruction XDP_PASS program \
         (what bpf_stats' own accounting and the dispatch cost), and (r) the kernel alone with a *bare XDP \
         responder*: every SYN answered with the kernel's cookie (`bpf_tcp_raw_gen_syncookie_ipv4`) and \
         tcpguard's own SYN-ACK rewrite, with none of the product's work (no accounting, no mode, no host, \
         listener or TIME_WAIT check; its cookies are not ones the kernel would accept without a listener \
         stamp, so it is a control, not a defence).\n",
        f(&b["generator_max_pps"])
    );
    let _ = writeln!(
        s,
        "| flood (target) | setup | sent SYN/s | rx SYN/s | legit success | median ms | p99 ms \
        | softirq | softirq ns / rx pkt | vs (b) | XDP ns |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let labels = |k: &str| match k {
        "a" => "(a) no protection: syncookies=0, backlog 16",
        "b" => "(b) kernel default: syncookies=1",
        "c" => "(c) tcpguard drop",
        "d" => "(d) tcpguard auto, kernel cookies",
        _ => "(e) tcpguard auto, attack mode (XDP cookies)",
    };
    let points = b["points"].as_array().cloned().unwrap_or_default();
    for p in &points {
        let target = p["target_pps"].as_u64().unwrap_or(0);
        let kernel = points
            .iter()
            .find(|q| q["setup"] == "b" && q["target_pps"] == p["target_pps"])
            .map(|q| f(&q["softirq_ns_per_rx"]));
        let vs = match kernel {
            Some(k) if p["setup"] != "a" => format!("{:.2}×", f(&p["softirq_ns_per_rx"]) / k),
            _ => "—".into(),
        };
        let xdp = p["xdp_ns_per_packet"].as_f64().map_or("—".into(), |x| format!("{x:.0}"));
        let flood = if target == 0 { "full".to_string() } else { target.to_string() };
        let _ = writeln!(s, "{}", point_row(p, &flood, labels(p["setup"].as_str().unwrap_or("")), &vs, &xdp));
    }
    let _ = writeln!(s, "\nWhere each stops serving legit clients (first tested rate with success below 90%):\n");
    for k in ["a", "b", "c", "d", "e"] {
        let stop = points.iter().filter(|p| p["setup"] == k).find(|p| f(&p["legit"]["success"]) < 0.9);
        let max = points.iter().filter(|p| p["setup"] == k).map(|p| f(&p["sent_pps"])).fold(0.0, f64::max);
        let _ = match stop {
            Some(p) => writeln!(
                s,
                "- {}: at {} SYN/s ({:.1}% success)",
                labels(k),
                p["target_pps"],
                f(&p["legit"]["success"]) * 100.0
            ),
            None => writeln!(s, "- {}: serves through the highest rate reached, {max:.0} SYN/s", labels(k)),
        };
    }
    s.push_str(&full_rounds_markdown(b));
    s.push_str(&ack_markdown(b));
    s.push_str(&latency_and_cost_markdown(b));
    s
}

/// One flood point as a table row: flood, setup, sent and received rates,
/// legit success and latency, softirq, then `vs` and `xdp` as given.
fn point_row(p: &Value, flood: &str, label: &str, vs: &str, xdp: &str) -> String {
    format!(
        "| {flood} | {label} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.2} | {:.1}% | {:.0} | {vs} | {xdp} |",
        f(&p["sent_pps"]),
        f(&p["received_pps"]),
        f(&p["legit"]["success"]) * 100.0,
        f(&p["legit"]["p50_ms"]),
        f(&p["legit"]["p99_ms"]),
        f(&p["softirq_pct"]),
        f(&p["softirq_ns_per_rx"]),
    )
}

/// The full-rate comparison in rounds: per setup the median of each figure,
/// and the ratios the issue's goals are stated in.
fn full_rounds_markdown(b: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let points = b["full_rounds"].as_array().cloned().unwrap_or_default();
    if points.is_empty() {
        return s;
    }
    let med = |k: &str, key: &dyn Fn(&Value) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = points.iter().filter(|p| p["setup"] == k).filter_map(key).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let rounds = points.iter().filter(|p| p["setup"] == "e").count();
    let _ = writeln!(s, "\n## At the generator's full rate, in rounds: (b), (p), (r), (e)\n");
    let _ = writeln!(
        s,
        "The same full-rate point, {rounds} rounds of the four setups in turn, each a fresh lab; every figure is the \
         median over the rounds (one 6 s run moves by about ±15 % in XDP ns and softirq on this shared 2-core VM). \
         Goals (issue 18): tcpguard's live XDP ns ≤ 300, softirq per received flood packet ≤ 0.5× the kernel \
         alone's. (p) and (r) are the floors: a program that does nothing, and a responder that does nothing but \
         answer.\n"
    );
    let _ = writeln!(
        s,
        "| setup | rx pkt/s | legit success | p99 ms | softirq ns / rx pkt | vs (b) | XDP ns | XDP ns, each round |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
    let kernel = med("b", &|p| p["softirq_ns_per_rx"].as_f64());
    for (k, label) in [
        ("b", "(b) kernel alone: syncookies=1"),
        ("p", "(p) control: (b) + a pass-all XDP program"),
        ("r", "(r) control: (b) + a bare XDP responder"),
        ("e", "(e) tcpguard default, attack mode"),
    ] {
        let soft = med(k, &|p| p["softirq_ns_per_rx"].as_f64());
        let xdp = med(k, &|p| p["xdp_ns_per_packet"].as_f64());
        let each: Vec<String> = points
            .iter()
            .filter(|p| p["setup"] == k)
            .filter_map(|p| p["xdp_ns_per_packet"].as_f64())
            .map(|x| format!("{x:.0}"))
            .collect();
        let vs = match (soft, kernel) {
            (Some(a), Some(b)) => format!("{:.2}×", a / b),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {label} | {:.0} | {:.1}% | {:.2} | {:.0} | {vs} | {} | {} |",
            med(k, &|p| p["received_pps"].as_f64()).unwrap_or(f64::NAN),
            med(k, &|p| p["legit"]["success"].as_f64()).unwrap_or(f64::NAN) * 100.0,
            med(k, &|p| p["legit"]["p99_ms"].as_f64()).unwrap_or(f64::NAN),
            soft.unwrap_or(f64::NAN),
            xdp.map_or("—".into(), |x| format!("{x:.0}")),
            if each.is_empty() { "—".to_string() } else { each.join(", ") },
        );
    }
    s
}

/// The ACK-flood rows: (b) the kernel alone against (e) tcpguard's default.
fn ack_markdown(b: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let points = b["ack_points"].as_array().cloned().unwrap_or_default();
    if points.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## Under a spoofed ACK flood: (b) the kernel alone against (e) tcpguard\n");
    let _ = writeln!(
        s,
        "The same labs, the generator sending bare ACKs of no connection (random sources in 198.19.0.0/16, \
         random seq/ack) to the listener's port at its full rate. The kernel alone looks each one up and answers \
         it with a RST; tcpguard's egress program counts those RSTs, enters ACK-checking mode within a 5 ms \
         window (datapath.attack-ack-rate), and the XDP program then drops every ACK that reaches a listener \
         without a connection or a valid cookie. (p) is a control: the kernel alone with a two-instruction \
         XDP_PASS program on the server's attacker-facing veth, i.e. what veth's XDP receive path costs by itself \
         when every flood packet is passed on. Goals (issue 21): legit 100%, legit p99 at most max(2× the kernel \
         alone's, 20 ms), softirq per received flood packet at most 0.6× the kernel alone's.\n"
    );
    let _ = writeln!(
        s,
        "| flood | setup | sent ACK/s | rx ACK/s | legit success | median ms | p99 ms | softirq | softirq ns / rx \
         pkt | vs (b) | XDP ns |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let kernel = points.iter().find(|q| q["setup"] == "b").map(|q| f(&q["softirq_ns_per_rx"]));
    for p in &points {
        let vs = match kernel {
            Some(k) => format!("{:.2}×", f(&p["softirq_ns_per_rx"]) / k),
            None => "—".into(),
        };
        let xdp = p["xdp_ns_per_packet"].as_f64().map_or("—".into(), |x| format!("{x:.0}"));
        let label = match p["setup"].as_str() {
            Some("b") => "(b) kernel alone: syncookies=1",
            Some("p") => "(p) control: (b) + a pass-all XDP program",
            _ => "(e) tcpguard default",
        };
        let _ = writeln!(s, "{}", point_row(p, "ACK, full", label, &vs, &xdp));
    }
    s
}

fn latency_and_cost_markdown(b: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ =
        writeln!(s, "\n![softirq per received flood packet and legit p99, against flood rate](flood-success.png)\n");
    let _ = writeln!(s, "## Detection latency\n");
    let _ = writeln!(
        s,
        "`tcpguard run` (policy auto, 250 ms tick, 2 ticks to start); `status` polled every 10 \
        ms; flood starts staggered against the tick.\n"
    );
    let _ = writeln!(
        s,
        "The first two columns are seen through `status` (so they include up to one tick); the datapath's own \
         stamps (CLOCK_MONOTONIC, the flood's first batch from the generator's report) give when attack mode was \
         entered and when the first SYN-ACK left from XDP (the mitigation in effect).\n"
    );
    let _ = writeln!(
        s,
        "| flood | SYN/s | runs | start → declared (median / max) | start → mitigation seen in \
        status (median / max) | first SYN → attack mode, datapath stamps | first SYN → first XDP SYN-ACK |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for l in b["latency"].as_array().cloned().unwrap_or_default() {
        let what = if l["kind"] == "spoofed-random" {
            "spoofed random → SYNs answered with cookies"
        } else {
            "single source → source blocked in XDP"
        };
        let ms = |m: &Value, x: &Value| match (m.as_f64(), x.as_f64()) {
            (Some(m), Some(x)) => format!("{:.1} ms / {:.1} ms", m * 1e3, x * 1e3),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {:.2} s / {:.2} s | {:.2} s / {:.2} s | {} | {} |",
            l["flood_pps"],
            l["runs"],
            f(&l["declared_median"]),
            f(&l["declared_max"]),
            f(&l["mitigated_median"]),
            f(&l["mitigated_max"]),
            ms(&l["dp_entered_median"], &l["dp_entered_max"]),
            ms(&l["dp_first_cookie_median"], &l["dp_first_cookie_max"])
        );
    }
    let d = &b["daemon"];
    let _ = writeln!(s, "\n## Daemon cost with 100,000 flooding sources\n");
    let _ = writeln!(
        s,
        "{} distinct source addresses (198.18.0.0/15, round robin) at {:.0} SYN/s for {:.0} s; the datapath \
            tracked {} sources. \
         Measured from /proc/<pid>/stat and VmRSS of the daemon process; tick time from its own histogram.\n",
        d["sources"],
        f(&d["flood_pps"]),
        f(&d["seconds"]),
        d["tracked_sources_in_datapath"]
    );
    let _ = writeln!(s, "| daemon CPU (% of one core) | max RSS | mean tick | tick interval |");
    let _ = writeln!(s, "|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| {:.2}% | {:.1} MB | {:.2} ms | {} ms |",
        f(&d["cpu_pct_of_core"]),
        f(&d["rss_max_mb"]),
        f(&d["tick_mean_ms"]),
        d["tick_ms"]
    );
    s
}

fn machine() -> String {
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default().trim().to_string();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("Linux {kernel}, {cpus} × {model}")
}

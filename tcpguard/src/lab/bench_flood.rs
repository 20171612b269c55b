//! Flood benchmarks in a namespace lab, side by side in one run under the
//! same spoofed flood, at fixed rates and at the generator's full rate:
//! (a) no protection: tcp_syncookies=0, listen backlog 16;
//! (b) the kernel's default: tcp_syncookies=1, backlog 128;
//! (c) tcpguard, policy drop (plus the kernel default);
//! (d) tcpguard, policy auto, the kernel answering (`syn-cookies = "kernel"`,
//!     attack mode only once the daemon detects the flood);
//! (e) tcpguard, policy auto with its defaults: attack mode entered by the
//!     datapath, SYNs answered from XDP with kernel SYN cookies.
//! For each: legit success and connect latency (median, p99), softirq CPU
//! of the machine and per flood packet the server received, and the XDP
//! program's own ns per packet (bpf_stats). Then detection latency and the
//! daemon's CPU and RSS with 100,000 sources.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    lab::flood::{self, FloodKind, FloodSpec, Sources},
    lab::{probe_stats, Attacker, DaemonProcess, Lab, Netns, ProbeStats, Prober, Server, SERVER_IP},
};

const PORT: u16 = 8080;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Setup {
    #[serde(rename = "a")]
    NoProtection,
    #[serde(rename = "b")]
    KernelCookies,
    #[serde(rename = "c")]
    TcpguardDrop,
    #[serde(rename = "d")]
    TcpguardAuto,
    #[serde(rename = "e")]
    TcpguardAttackMode,
    /// A control for the ACK flood: (b) with a pass-everything XDP program
    /// on the server's attacker-facing interface (what veth's XDP receive
    /// path costs by itself).
    #[serde(rename = "p")]
    KernelPassXdp,
    /// A control for the SYN flood: (b) with the bare XDP responder on the
    /// attacker-facing interface (raw cookie and rewrite, none of
    /// tcpguard's checks or accounting): the floor of answering from XDP.
    #[serde(rename = "r")]
    BareResponder,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::NoProtection,
        Setup::KernelCookies,
        Setup::TcpguardDrop,
        Setup::TcpguardAuto,
        Setup::TcpguardAttackMode,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Setup::NoProtection => "(a) no protection: syncookies=0, backlog 16",
            Setup::KernelCookies => "(b) kernel default: syncookies=1, backlog 128",
            Setup::TcpguardDrop => "(c) tcpguard policy drop",
            Setup::TcpguardAuto => "(d) tcpguard auto, kernel cookies",
            Setup::TcpguardAttackMode => "(e) tcpguard auto, attack mode (XDP cookies)",
            Setup::KernelPassXdp => "(p) control: (b) with a pass-all XDP program",
            Setup::BareResponder => "(r) control: (b) with a bare XDP responder (no checks, no accounting)",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub setup: Setup,
    /// 0 = the generator's full rate.
    pub target_pps: u64,
    pub sent_pps: f64,
    /// Packets the server's attacker-facing interface received per second.
    pub received_pps: f64,
    pub legit: ProbeStats,
    /// Softirq share of all CPU time on the machine during the flood (%).
    pub softirq_pct: f64,
    /// Softirq CPU time per packet the server received (ns).
    pub softirq_ns_per_rx: f64,
    /// The XDP program's own time per run (bpf_stats run_time / run_cnt), ns.
    pub xdp_ns_per_packet: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub kind: String,
    pub flood_pps: u64,
    pub runs: usize,
    /// Flood start -> `status` shows the attack (median, max; seconds).
    pub declared_median: f64,
    pub declared_max: f64,
    /// Flood start -> mitigation in effect (cookies forced / source blocked).
    pub mitigated_median: f64,
    pub mitigated_max: f64,
    /// The datapath's own stamps: first flood SYN batch sent -> attack mode
    /// entered, and -> first SYN-ACK from XDP (median, max; seconds).
    pub dp_entered_median: Option<f64>,
    pub dp_entered_max: Option<f64>,
    pub dp_first_cookie_median: Option<f64>,
    pub dp_first_cookie_max: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DaemonCost {
    pub sources: u64,
    pub flood_pps: f64,
    pub seconds: f64,
    /// Daemon CPU, % of one core.
    pub cpu_pct_of_core: f64,
    pub rss_max_mb: f64,
    pub tick_mean_ms: f64,
    pub tick_ms: u64,
    pub tracked_sources_in_datapath: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FloodBench {
    pub generator_max_pps: f64,
    pub seconds_per_point: f64,
    pub points: Vec<Point>,
    /// A spoofed ACK flood at the generator's full rate: (b) the kernel
    /// alone, (e) tcpguard's default.
    pub ack_points: Vec<Point>,
    /// The issue's full-rate comparison on its own: (b), (p), (r) and (e)
    /// alternating for several rounds, so that each figure is a median
    /// rather than one 6 s run.
    pub full_rounds: Vec<Point>,
    pub latency: Vec<Latency>,
    pub daemon: DaemonCost,
}

/// (softirq, total) jiffies of the whole machine, from the aggregate "cpu"
/// line of /proc/stat.
pub fn cpu_times() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total = f.iter().take(8).sum();
    (f.get(6).copied().unwrap_or(0), total)
}

/// `tcpguard run` for the lab's two server interfaces with `policy`.
fn daemon(lab: &Lab, att: &Attacker, policy: &str, tag: &str) -> Result<DaemonProcess> {
    daemon_with(lab, att, policy, tag, "")
}

/// As [`daemon`], with extra `[datapath]` keys.
fn daemon_with(lab: &Lab, att: &Attacker, policy: &str, tag: &str, datapath: &str) -> Result<DaemonProcess> {
    let dir = std::env::temp_dir().join(format!("tcpguard-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/tcpguard-bench-{tag}-{}", std::process::id()));
    let cfg = format!(
        "[daemon]\nstate-dir = \"{}\"\npin-root = \"{}\"\n[policy]\nmode = \"{policy}\"\n[datapath]\n{datapath}\n",
        dir.join("state").display(),
        pin_root.display()
    );
    let cfg_path = dir.join("c.toml");
    std::fs::write(&cfg_path, cfg)?;
    let args: Vec<&std::ffi::OsStr> = vec![
        "--config".as_ref(),
        cfg_path.as_os_str(),
        "--iface".as_ref(),
        lab.srv_if.as_ref(),
        "--iface".as_ref(),
        att.srv_if.as_ref(),
    ];
    DaemonProcess::start(&lab.server, &crate::lab::tcpguard_exe()?, &args, &dir, vec![pin_root])
}

fn spec(att: &Attacker, sources: Sources, pps: u64, secs: f64, seed: u64) -> FloodSpec {
    FloodSpec {
        rate: pps,
        duration: Duration::from_secs_f64(secs),
        seed,
        ..att.flood(IpAddr::V4(SERVER_IP), PORT, sources)
    }
}

fn spoofed() -> Sources {
    Sources::Random("198.19.0.0/16".parse().expect("prefix"))
}

fn lab() -> Result<(Lab, Attacker)> {
    let lab = Lab::new().context("lab")?;
    let att = lab.add_attacker().context("attacker")?;
    Ok((lab, att))
}

fn set(ns: &Netns, k: &str, v: &str) -> Result<()> {
    ns.sysctl(k, v).with_context(|| format!("sysctl {k}={v}"))
}

/// Packets received so far on `dev` in `ns` (iproute2's JSON link stats).
pub fn rx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link output")?;
    v[0]["stats64"]["rx"]["packets"].as_u64().context("rx packets in ip -s -j link")
}

/// (run_time_ns, run_cnt) summed over the loaded XDP programs named tcpguard.
fn xdp_stats() -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(crate::loader::PROGRAM))
        .fold((0, 0), |(t, n), p| (t + p.run_time().as_nanos() as u64, n + p.run_count()))
}

/// One point: a fresh lab, the setup, a flood at `pps` (0 = full rate) for
/// `secs`, a legit client probing throughout.
fn point(setup: Setup, pps: u64, secs: f64) -> Result<Point> {
    point_of(setup, pps, secs, FloodKind::Syn)
}

/// One setup under one flood of `kind` (SYNs or bare ACKs).
fn point_of(setup: Setup, pps: u64, secs: f64, kind: FloodKind) -> Result<Point> {
    let (lab, att) = lab()?;
    let (cookies, backlog) = match setup {
        Setup::NoProtection => ("0", 16),
        _ => ("1", 128),
    };
    set(&lab.server, "net.ipv4.tcp_syncookies", cookies)?;
    let server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), backlog)?;
    let _daemon = match setup {
        Setup::TcpguardDrop => Some(daemon(&lab, &att, "drop", "c")?),
        Setup::TcpguardAuto => {
            Some(daemon_with(&lab, &att, "auto", "d", "syn-cookies = \"kernel\"\nattack-syn-rate = 0")?)
        }
        Setup::TcpguardAttackMode => Some(daemon(&lab, &att, "auto", "e")?),
        _ => None,
    };
    // The control: a two-instruction XDP_PASS program on the interface the
    // flood comes in by, detached when `pass` drops. Its own bpf_stats are
    // the floor of the XDP ns column: what the kernel's accounting of a run
    // (two clock reads) and the dispatch cost with no work at all.
    // The bare responder (r) likewise: the floor of answering from XDP.
    use crate::lab::baselines::{Baselines, XDP_BARE, XDP_PASS};
    let control = match setup {
        Setup::KernelPassXdp => Some(XDP_PASS),
        Setup::BareResponder => Some(XDP_BARE),
        _ => None,
    };
    let pass = match control {
        Some(name) => {
            let mut b = Baselines::load().context("the control XDP programs")?;
            let dev = att.srv_if.clone();
            lab.server.run(|| b.attach_named(name, &dev))?.with_context(|| format!("attaching {name}"))?;
            Some((b, name))
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let fspec = FloodSpec { kind, ..spec(&att, spoofed(), pps, secs, 0xbe4c + pps) };
    let st = stop.clone();
    let rx0 = rx_packets(&lab.server, &att.srv_if)?;
    let (soft0, tot0) = cpu_times();
    let stats = || match &pass {
        Some((b, name)) => b.xdp_named(name).info().map_or((0, 0), |i| (i.run_time().as_nanos() as u64, i.run_count())),
        None => xdp_stats(),
    };
    let (run0, cnt0) = stats();
    let t0 = Instant::now();
    let flood = att.ns.spawn(move || flood::run(&fspec, &st))?;
    // Probe from fresh client state: the flood is on from the start.
    let prober = Prober::start(
        &lab.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), PORT),
        Duration::from_millis(25),
        Duration::from_secs(1),
    )?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let probes = prober.stop();
    let rep = flood.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    let (soft1, tot1) = cpu_times();
    let (run1, cnt1) = stats();
    let rx = rx_packets(&lab.server, &att.srv_if)?.saturating_sub(rx0);
    let wall = t0.elapsed().as_secs_f64();
    server.stop();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let soft_ns = (soft1 - soft0) as f64 * 1e9 / hz;
    let runs = cnt1.saturating_sub(cnt0);
    Ok(Point {
        setup,
        target_pps: pps,
        sent_pps: rep.pps(),
        received_pps: rx as f64 / wall,
        legit: probe_stats(&probes),
        softirq_pct: (soft1 - soft0) as f64 * 100.0 / (tot1 - tot0).max(1) as f64,
        softirq_ns_per_rx: soft_ns / rx.max(1) as f64,
        xdp_ns_per_packet: (runs > 0).then(|| run1.saturating_sub(run0) as f64 / runs as f64),
    })
}

fn generator_max() -> Result<f64> {
    let (lab, att) = lab()?;
    let stop = Arc::new(AtomicBool::new(false));
    let fspec = spec(&att, spoofed(), 0, 3.0, 7);
    let rep = att.ns.run(|| flood::run(&fspec, &stop))??;
    drop(lab);
    Ok(rep.pps())
}

fn latency(kind: &str, pps: u64, runs: usize) -> Result<Latency> {
    let (mut declared, mut mitigated) = (Vec::new(), Vec::new());
    let (mut dp_entered, mut dp_cookie) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (lab, att) = lab()?;
        let _server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 128)?;
        let d = daemon(&lab, &att, "auto", "lat")?;
        let sources =
            if kind == "spoofed-random" { spoofed() } else { Sources::Single("203.0.113.66".parse().expect("addr")) };
        let stop = Arc::new(AtomicBool::new(false));
        let fspec = spec(&att, sources, pps, 4.0, 0x1a7 + i as u64);
        let st = stop.clone();
        // Stagger the start against the 250 ms tick.
        std::thread::sleep(Duration::from_millis(37 * i as u64));
        let t0 = Instant::now();
        let flood = att.ns.spawn(move || flood::run(&fspec, &st))?;
        let (mut dec, mut mit) = (None, None);
        while t0.elapsed() < Duration::from_secs(4) && (dec.is_none() || mit.is_none()) {
            if let Some(v) = d.status() {
                let e = t0.elapsed().as_secs_f64();
                if dec.is_none() && v.attack.active && v.attack.kind.is_some_and(|k| k.as_str() == kind) {
                    dec = Some(e);
                }
                // Spoofed: SYNs answered with cookies, from XDP (attack mode)
                // or by the kernel (forced).
                let m = if kind == "spoofed-random" {
                    v.datapath.first_cookie_ns != 0 || (v.kernel.syncookies_forced && v.kernel.view.syncookies == 2)
                } else {
                    !v.blocked.is_empty()
                };
                if mit.is_none() && m {
                    mit = Some(e);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rep = flood.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        if let Some(v) = d.status() {
            let dp = &v.datapath;
            let since = |t: u64| (t != 0 && t >= rep.first_send_ns).then(|| (t - rep.first_send_ns) as f64 / 1e9);
            if dp.entered_by.as_deref() == Some("datapath") {
                if let Some(e) = since(dp.entered_ns) {
                    dp_entered.push(e);
                }
                if let Some(e) = since(dp.first_cookie_ns) {
                    dp_cookie.push(e);
                }
            }
        }
        declared.push(dec.unwrap_or(f64::NAN));
        mitigated.push(mit.unwrap_or(f64::NAN));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let opt_med = |v: &mut Vec<f64>| (!v.is_empty()).then(|| med(v));
    Ok(Latency {
        dp_entered_max: (!dp_entered.is_empty()).then(|| max(&dp_entered)),
        dp_first_cookie_max: (!dp_cookie.is_empty()).then(|| max(&dp_cookie)),
        dp_entered_median: opt_med(&mut dp_entered),
        dp_first_cookie_median: opt_med(&mut dp_cookie),
        kind: kind.into(),
        flood_pps: pps,
        runs,
        declared_max: max(&declared),
        mitigated_max: max(&mitigated),
        declared_median: med(&mut declared),
        mitigated_median: med(&mut mitigated),
    })
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of comm: utime is the 12th, stime the 13th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

fn proc_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn daemon_cost(sources: u32, secs: f64) -> Result<DaemonCost> {
    let (lab, att) = lab()?;
    let _server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 128)?;
    let d = daemon(&lab, &att, "auto", "cost")?;
    let stop = Arc::new(AtomicBool::new(false));
    // 100k distinct addresses from 198.18.0.0/15, round-robin, as fast as
    // the generator goes: the source table fills with 100k entries.
    let fspec = spec(&att, Sources::Set("198.18.0.0/15".parse().expect("prefix"), sources), 0, secs + 2.0, 3);
    let st = stop.clone();
    let flood = att.ns.spawn(move || flood::run(&fspec, &st))?;
    std::thread::sleep(Duration::from_secs(2));
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let c0 = proc_cpu_ticks(d.pid());
    let t0 = Instant::now();
    let mut rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        rss = rss.max(proc_rss_mb(d.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = (proc_cpu_ticks(d.pid()) - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    let tick = scrape_tick(&lab.server)?;
    let v = d.status();
    let rep = flood.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    let tracked = v.as_ref().map_or(0, |v| v.counters.get("new_source").copied().unwrap_or(0));
    Ok(DaemonCost {
        sources: u64::from(sources),
        flood_pps: rep.pps(),
        seconds: secs,
        cpu_pct_of_core: cpu,
        rss_max_mb: rss,
        tick_mean_ms: tick * 1000.0,
        tick_ms: 250,
        tracked_sources_in_datapath: tracked,
    })
}

/// Mean tick duration (s) from the daemon's own histogram.
fn scrape_tick(ns: &Netns) -> Result<f64> {
    let text = ns.run(|| -> std::io::Result<String> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9717")?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tcpguard\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let get = |n: &str| text.lines().find_map(|l| l.strip_prefix(n)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    Ok(get("tcpguard_tick_duration_seconds_sum ") / get("tcpguard_tick_duration_seconds_count ").max(1.0))
}

/// A spoofed ACK flood at the generator's full rate, the kernel alone (b)
/// against tcpguard's default (e), side by side: the starting point of
/// issue 21 (ACK floods). A markdown table.
pub fn ack_side_by_side(secs: f64) -> Result<String> {
    side_by_side("ACK", secs, ack_points)
}

/// A spoofed SYN flood at the generator's full rate, the kernel alone (b),
/// the pass-all control (p) (its XDP ns: the floor of that column), the
/// bare responder (r) (the floor of answering from XDP) and tcpguard's
/// default (e), `rounds` times alternating: the quick form of the
/// full-rate rows of `bench flood`, for measuring one datapath change at a
/// time. A markdown table.
pub fn syn_side_by_side(secs: f64, rounds: usize) -> Result<String> {
    side_by_side("SYN", secs, |secs| {
        let mut v = Vec::new();
        for _ in 0..rounds.max(1) {
            for s in [Setup::KernelCookies, Setup::KernelPassXdp, Setup::BareResponder, Setup::TcpguardAttackMode] {
                v.push(point(s, 0, secs)?);
            }
        }
        Ok(v)
    })
}

fn side_by_side(kind: &str, secs: f64, points: impl FnOnce(f64) -> Result<Vec<Point>>) -> Result<String> {
    use std::fmt::Write as _;
    crate::lab::sweep_stale();
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let mut out = String::from(
        "| flood | setup | sent pkt/s | rx pkt/s | legit success | p50 ms | p99 ms | softirq | softirq ns / rx pkt \
         | XDP ns |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points(secs)? {
        let _ = writeln!(
            out,
            "| {kind}, full rate | {} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.2} | {:.1}% | {:.0} | {} |",
            p.setup.label(),
            p.sent_pps,
            p.received_pps,
            p.legit.success * 100.0,
            p.legit.p50_ms,
            p.legit.p99_ms,
            p.softirq_pct,
            p.softirq_ns_per_rx,
            p.xdp_ns_per_packet.map_or("—".to_string(), |n| format!("{n:.0}"))
        );
    }
    Ok(out)
}

/// A spoofed ACK flood at the generator's full rate for `secs` against (b)
/// the kernel alone, (p) the pass-all XDP control and (e) tcpguard.
fn ack_points(secs: f64) -> Result<Vec<Point>> {
    [Setup::KernelCookies, Setup::KernelPassXdp, Setup::TcpguardAttackMode]
        .into_iter()
        .map(|s| point_of(s, 0, secs, FloodKind::Ack))
        .collect()
}

/// Rounds of the full-rate comparison in `bench flood`.
const FULL_ROUNDS: usize = 3;

pub fn run(quick: bool) -> Result<FloodBench> {
    crate::lab::sweep_stale();
    let secs = if quick { 3.0 } else { 6.0 };
    let mut out = FloodBench { seconds_per_point: secs, ..FloodBench::default() };
    out.generator_max_pps = generator_max()?;
    eprintln!("generator maximum: {:.0} SYN/s", out.generator_max_pps);
    // bpf_stats for the XDP program's own time, for as long as this fd lives.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    // 0 = the generator's full rate.
    let rates: Vec<u64> = if quick { vec![100_000, 0] } else { vec![10_000, 30_000, 60_000, 100_000, 150_000, 0] };
    for &r in &rates {
        for s in Setup::ALL {
            let p = point(s, r, secs)?;
            eprintln!(
                "{:<46} {:>7} SYN/s (sent {:>7.0}, rx {:>7.0}): legit {:>5.1}% p50 {:>6.2} ms p99 {:>7.2} ms \
                    softirq {:>4.1}% {:>6.0} ns/rx xdp {:>6.0} ns",
                s.label(),
                r,
                p.sent_pps,
                p.received_pps,
                p.legit.success * 100.0,
                p.legit.p50_ms,
                p.legit.p99_ms,
                p.softirq_pct,
                p.softirq_ns_per_rx,
                p.xdp_ns_per_packet.unwrap_or(f64::NAN)
            );
            out.points.push(p);
        }
    }
    // The full-rate comparison, alternating rounds, with the floors of its
    // XDP ns column: the pass-all control (p) (bpf_stats' own accounting
    // and the dispatch) and the bare responder (r) (any XDP responder's
    // parse, cookie and rewrite).
    for round in 0..if quick { 1 } else { FULL_ROUNDS } {
        for s in [Setup::KernelCookies, Setup::KernelPassXdp, Setup::BareResponder, Setup::TcpguardAttackMode] {
            let p = point(s, 0, secs)?;
            eprintln!(
                "round {round}: {:<46} full rate: softirq {:>6.0} ns/rx xdp {:>6.0} ns",
                s.label(),
                p.softirq_ns_per_rx,
                p.xdp_ns_per_packet.unwrap_or(f64::NAN)
            );
            out.full_rounds.push(p);
        }
    }
    for p in ack_points(secs)? {
        eprintln!(
            "{:<46} ACK flood, full rate (sent {:>7.0}, rx {:>7.0}): legit {:>5.1}% p99 {:>7.2} ms {:>6.0} ns/rx xdp \
             {:>6.0} ns",
            p.setup.label(),
            p.sent_pps,
            p.received_pps,
            p.legit.success * 100.0,
            p.legit.p99_ms,
            p.softirq_ns_per_rx,
            p.xdp_ns_per_packet.unwrap_or(f64::NAN)
        );
        out.ack_points.push(p);
    }
    let runs = if quick { 2 } else { 5 };
    out.latency.push(latency("spoofed-random", 50_000, runs)?);
    out.latency.push(latency("few-heavy-sources", 10_000, runs)?);
    eprintln!("latency: {:?}", out.latency);
    out.daemon = daemon_cost(100_000, if quick { 4.0 } else { 10.0 })?;
    eprintln!("daemon: {:?}", out.daemon);
    Ok(out)
}

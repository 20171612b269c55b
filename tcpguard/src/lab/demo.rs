//! `tcpguard demo` (run by `cargo xtask demo`): a self-contained lab — a
//! server namespace with a real TCP listener, a legit client and an attacker
//! in namespaces of their own, joined by veth pairs — with `tcpguard run`
//! on the server's two interfaces using the embedded default config. It
//! drives steady clients, a spoofed random-source flood, a quiet spell, a
//! single-source flood and the end of it, showing the live status, then
//! prints a summary. Everything is removed on exit and on Ctrl-C.

use std::{
    io::IsTerminal as _,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    daemon::detect::Kind,
    lab::flood::{self, FloodKind, FloodReport, FloodSpec, Sources},
    lab::{probe_stats, DaemonProcess, Lab, Probe, Prober, Server, SERVER_IP},
    proto::StatusView,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Phase {
    name: &'static str,
    secs: u64,
    flood: Option<(Sources, u64, FloodKind)>,
    /// The kind the flood should be classified as.
    expect: Option<Kind>,
}

#[allow(clippy::too_many_lines)] // a script: lab, daemon, then the phases in order
pub fn run(phase_scale: f64) -> Result<()> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let tty = std::io::stdout().is_terminal();
    println!("tcpguard demo: building the lab (namespaces server, client, attacker; veth pairs)...");
    let lab = Lab::new().context("creating the lab namespaces")?;
    let att = lab.add_attacker().context("adding the attacker namespace")?;
    let port = 8080;
    let server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), port), 128)?;

    let dir = std::env::temp_dir().join(format!("tcpguard-demo-{}", std::process::id()));
    let pins = [&lab.srv_if, &att.srv_if].iter().map(|i| PathBuf::from(crate::loader::PIN_ROOT).join(i)).collect();
    let names = ["--iface", lab.srv_if.as_str(), "--iface", att.srv_if.as_str()];
    let args: Vec<&std::ffi::OsStr> = names.iter().map(std::ffi::OsStr::new).collect();
    let daemon = DaemonProcess::start(&lab.server, &crate::lab::tcpguard_exe()?, &args, &dir, pins)?;
    println!("tcpguard run --iface {} --iface {}   (embedded default config, policy auto)", lab.srv_if, att.srv_if);
    let status = || daemon.status();

    let prober = Prober::start(
        &lab.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), port),
        Duration::from_millis(20),
        Duration::from_secs(1),
    )?;
    let s = |x: u64| ((x as f64 * phase_scale).round() as u64).max(2);
    // A quiet spell outlasts the hold-down (5 s) at any scale: each flood
    // is then an attack of its own, ended before the next starts.
    let quiet = s(9).max(7);
    let phases = [
        Phase { name: "steady legit clients", secs: s(6), flood: None, expect: None },
        Phase {
            name: "spoofed random-source SYN flood (50k SYN/s from 198.19.0.0/17)",
            secs: s(15),
            flood: Some((Sources::Random("198.19.0.0/17".parse().expect("prefix")), 50_000, FloodKind::Syn)),
            expect: Some(Kind::SpoofedRandom),
        },
        Phase { name: "flood stopped", secs: quiet, flood: None, expect: None },
        Phase {
            name: "single-source SYN flood (10k SYN/s from 203.0.113.66)",
            secs: s(12),
            flood: Some((Sources::Single("203.0.113.66".parse().expect("addr")), 10_000, FloodKind::Syn)),
            expect: Some(Kind::FewHeavySources),
        },
        Phase { name: "flood stopped", secs: quiet, flood: None, expect: None },
        Phase {
            name: "spoofed ACK flood (50k ACK/s of no connection)",
            secs: s(12),
            flood: Some((Sources::Random("198.19.0.0/17".parse().expect("prefix")), 50_000, FloodKind::Ack)),
            expect: Some(Kind::AckFlood),
        },
        Phase { name: "flood stopped", secs: quiet, flood: None, expect: None },
    ];

    struct Row {
        name: &'static str,
        from: f64,
        to: f64,
        detected_after: Option<f64>,
        mitigated_after: Option<f64>,
        kind: Option<String>,
        mitigation: Vec<String>,
        sent: Option<FloodReport>,
        ended_after: Option<f64>,
    }
    let mut rows: Vec<Row> = Vec::new();
    let demo_start = Instant::now();
    let mut last_status: Option<StatusView> = None;
    'phases: for ph in &phases {
        let stop = Arc::new(AtomicBool::new(false));
        let fl = match &ph.flood {
            Some((src, rate, kind)) => {
                let spec = FloodSpec {
                    kind: *kind,
                    rate: *rate,
                    duration: Duration::from_secs(ph.secs),
                    seed: 0x5eed,
                    ..att.flood(IpAddr::V4(SERVER_IP), port, src.clone())
                };
                let st = stop.clone();
                Some(att.ns.spawn(move || flood::run(&spec, &st))?)
            }
            None => None,
        };
        let from = demo_start.elapsed().as_secs_f64();
        let mut row = Row {
            name: ph.name,
            from,
            to: from,
            detected_after: None,
            mitigated_after: None,
            kind: None,
            mitigation: Vec::new(),
            sent: None,
            ended_after: None,
        };
        let end = Instant::now() + Duration::from_secs(ph.secs);
        let mut polls = 0u32;
        while Instant::now() < end {
            if INTERRUPTED.load(Ordering::SeqCst) {
                stop.store(true, Ordering::SeqCst);
                if let Some(f) = fl {
                    let _ = f.join();
                }
                break 'phases;
            }
            if let Some(v) = status() {
                let now = demo_start.elapsed().as_secs_f64() - from;
                if let Some(k) = ph.expect.filter(|k| v.attack.active && v.attack.kinds.contains(k)) {
                    if row.detected_after.is_none() {
                        row.detected_after = Some(now);
                        row.kind = Some(k.as_str().to_string());
                    }
                }
                let mitigated = match ph.expect {
                    Some(Kind::FewHeavySources) => !v.blocked.is_empty(),
                    Some(Kind::AckFlood) => v.ack_flood.datapath == "checking",
                    Some(_) => v.kernel.syncookies_forced,
                    None => false,
                };
                if mitigated && row.mitigated_after.is_none() {
                    row.mitigated_after = Some(now);
                }
                if ph.flood.is_none()
                    && !v.attack.active
                    && row.ended_after.is_none()
                    && rows.last().is_some_and(|r: &Row| r.sent.is_some())
                {
                    row.ended_after = Some(now);
                }
                if ph.flood.is_some() && v.attack.active {
                    for m in &v.attack.mitigation {
                        if !row.mitigation.contains(m) {
                            row.mitigation.push(m.clone());
                        }
                    }
                    for b in &v.blocked {
                        let m = format!("blocked {}", b.prefix);
                        if !row.mitigation.contains(&m) {
                            row.mitigation.push(m);
                        }
                    }
                }
                if polls.is_multiple_of(4) {
                    let probes = prober.snapshot();
                    screen(tty, ph.name, demo_start.elapsed().as_secs_f64(), &v, &probes);
                }
                last_status = Some(v);
            }
            polls += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, Ordering::SeqCst);
        if let Some(f) = fl {
            row.sent = f.join().ok().and_then(Result::ok);
        }
        row.to = demo_start.elapsed().as_secs_f64();
        rows.push(row);
    }
    let probes = prober.stop();
    let served = server.stop();
    drop(daemon);
    drop(att);
    drop(lab);
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);

    println!("\n=== tcpguard demo summary{} ===", if interrupted { " (interrupted)" } else { "" });
    println!("{:<66} {:>9} {:>8} {:>8}  detection / mitigation", "phase", "legit ok", "p50 ms", "p99 ms");
    for r in &rows {
        let p: Vec<Probe> = probes.iter().copied().filter(|p| p.at >= r.from && p.at < r.to).collect();
        let st = probe_stats(&p);
        let det = match (&r.sent, r.detected_after, &r.kind) {
            (Some(rep), Some(d), Some(k)) => format!(
                "{k} detected after {d:.2}s, mitigated after {}; {}; flood sent {} packets ({:.0}/s)",
                r.mitigated_after.map_or("-".into(), |m| format!("{m:.2}s")),
                r.mitigation.join(", "),
                rep.sent,
                rep.pps()
            ),
            (Some(rep), _, _) => format!("not detected as expected; flood sent {} packets", rep.sent),
            _ => r.ended_after.map_or(String::new(), |e| format!("attack over after {e:.1}s (hold-down 5 s)")),
        };
        println!("{:<66} {:>8.1}% {:>8.2} {:>8.2}  {}", r.name, st.success * 100.0, st.p50_ms, st.p99_ms, det);
    }
    if let Some(v) = last_status {
        println!(
            "attacks declared: {}; connections served: {served}; namespaces, veths, pins and the daemon removed.",
            v.attack.attacks_total
        );
    }
    Ok(())
}

fn screen(tty: bool, phase: &str, t: f64, v: &StatusView, probes: &[Probe]) {
    let recent: Vec<Probe> = probes.iter().copied().filter(|p| p.at >= t - 3.0).collect();
    let st = probe_stats(&recent);
    if tty {
        print!("\x1b[H\x1b[2J");
        println!("tcpguard demo — t={t:5.1}s — {phase}\n");
        println!(
            "legit clients (last 3 s): {:.1}% ok of {} attempts, p50 {:.2} ms, p99 {:.2} ms\n",
            st.success * 100.0,
            st.attempts,
            st.p50_ms,
            st.p99_ms
        );
        print!("{}", crate::ctl::render_status(v));
        println!("\nCtrl-C stops the demo and cleans up.");
    } else {
        let kinds: Vec<&str> = v.attack.kinds.iter().map(|k| k.as_str()).collect();
        let kind = if kinds.is_empty() { "-".to_string() } else { kinds.join("+") };
        println!(
            "t={t:5.1}s {:<40.40} attack={:<5} kind={:<18} datapath={:<8} ack-check={:<8} xdp-synacks/s={:>7.0} \
                syn/s={:>7.0} half-open={:>6} drops/s={:>7.0} blocked={} cookies={} legit={:>5.1}%",
            phase,
            v.attack.active,
            kind,
            v.datapath.mode,
            v.ack_flood.datapath,
            v.datapath.cookies_sent_per_sec,
            v.syn_per_sec,
            v.half_open,
            v.dropped_per_sec,
            v.blocked.len(),
            if v.kernel.syncookies_forced { "forced" } else { "off" },
            st.success * 100.0
        );
    }
}

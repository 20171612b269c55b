//! Attack mode on hosts as users have them (root, namespace labs, real
//! floods, real clients): replies from XDP that cannot leave (a veth peer
//! with no XDP program, as a container's has), a peer program removed and
//! put back mid-flood, generic mode, a host that forwards, an MTU that
//! changes, a daemon handed over under a flood, two interfaces.

#![allow(clippy::too_many_lines)] // end-to-end scenarios read top to bottom

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{e2e::*, require_root, serial};
use serde_json::Value;
use tcpguard::{
    flood::{self, FloodSpec, Sources},
    lab::{self, probe_stats, Lab, Netns, Prober, Server, SERVER_IP},
};

/// A legit client's connection: a real client retransmits its SYN after a
/// second, so 3 s is what a client waits at least.
const LEGIT_TIMEOUT: Duration = Duration::from_secs(3);

fn spoofed() -> Sources {
    Sources::Random("198.19.0.0/16".parse().unwrap())
}

/// A spoofed flood through the legit client's own veth, at a rate that veth
/// carries with any XDP program on it. (At the generator's full rate the
/// shared veth's XDP receive ring overflows whatever the program does: legit
/// 88% with tcpguard only tracking, against 100% with no program at all;
/// the full-rate case is `two_interfaces_...`, flood on its own veth.)
const SHARED_RATE: u64 = 50_000;

fn shared_flood(lab: &Lab, secs: u64, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<flood::FloodReport> {
    start_flood(lab, spoofed(), SHARED_RATE, secs, stop.clone())
}

fn iface<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("{name} in {v:#}"))
}

fn legit(lab: &Lab) -> Prober {
    Prober::start(&lab.client, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), Duration::from_millis(25), LEGIT_TIMEOUT)
        .unwrap()
}

fn report(what: &str, p: &[lab::Probe]) -> f64 {
    let s = probe_stats(p);
    let slow = p.iter().filter(|x| x.ok && x.latency > Duration::from_millis(900)).count();
    eprintln!(
        "{what}: legit {:.1}% of {} (p50 {:.2} ms, p99 {:.2} ms, {slow} over 0.9 s)",
        s.success * 100.0,
        s.attempts,
        s.p50_ms,
        s.p99_ms
    );
    s.success
}

#[test]
fn a_peer_without_xdp_gets_the_kernels_cookies_and_legit_clients_connect() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    lab.set_peer_xdp(false).unwrap();
    let f = Files::new("nopeer");
    f.write_config("auto", "");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    let v = status(&f).unwrap();
    let i = iface(&v, &lab.srv_if);
    assert_eq!(i["responder"], "kernel cookies", "{i:#}");
    assert_eq!(i["responder_reason"], "XDP_TX undeliverable: veth peer has no XDP program");
    assert!(i["tx_watch"].as_bool().unwrap(), "{i:#}");

    let probes = legit(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = shared_flood(&lab, 8, &stop);
    let (v, _) = wait_status(&f, Duration::from_secs(3), "attack mode", |v| iface(v, &lab.srv_if)["mode"] == "attack");
    let i = iface(&v, &lab.srv_if);
    assert_eq!(i["responder"], "kernel cookies");
    let rep = flood.join().unwrap();
    let p = probes.stop();
    let ok = report(&format!("peer without XDP, flood {:.0} SYN/s", rep.pps()), &p);
    assert!(ok >= 0.99, "legit {ok}");
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let v = status(&f).unwrap();
    let c = &v["counters"];
    // Nothing was answered from XDP, so nothing was lost in transmit; the
    // kernel answered the flood with its own cookies.
    assert_eq!(c["cookie_sent"], 0, "{c:#}");
    assert_eq!(c["xdp_tx_failed"], 0, "{c:#}");
    assert!(c["attack_syn"].as_u64().unwrap() > 10_000, "{c:#}");
    assert!(v["kernel"]["syncookies_sent"].as_u64().unwrap() > 1_000, "{:#}", v["kernel"]);
    let text = ctl(&f, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("responder: kernel cookies (XDP_TX undeliverable: veth peer has no XDP program)"),
        "{text}"
    );
    drop(d);
    drop(server);
}

#[test]
fn a_peer_program_removed_mid_flood_falls_back_within_a_tick_and_xdp_returns() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("peerflip");
    f.write_config("auto", "");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    let probes = legit(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = shared_flood(&lab, 14, &stop);
    let (v, _) = wait_status(&f, Duration::from_secs(3), "XDP answering", |v| {
        let i = iface(v, &lab.srv_if);
        i["answering"] == true && i["xdp_synacks_per_sec"].as_f64().unwrap_or(0.0) > 1000.0
    });
    assert_eq!(iface(&v, &lab.srv_if)["responder"], "xdp");
    std::thread::sleep(Duration::from_secs(1));

    // The peer's program goes: XDP_TX frames are dropped by veth.
    lab.set_peer_xdp(false).unwrap();
    let t = Instant::now();
    let (v, took) = wait_status(&f, Duration::from_secs(2), "fallback", |v| {
        iface(v, &lab.srv_if)["responder"] == "kernel cookies"
    });
    eprintln!("peer program removed: fell back after {:.0} ms", took.as_secs_f64() * 1e3);
    assert!(took <= Duration::from_secs(1), "fallback took {took:?}");
    let i = iface(&v, &lab.srv_if);
    assert!(i["responder_reason"].as_str().unwrap().contains("XDP_TX failing"), "{i:#}");
    assert_eq!(i["fallbacks"], 1);
    // Failed transmits stop growing once the kernel answers.
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let failed = |f: &Files| status(f).unwrap()["counters"]["xdp_tx_failed"].as_u64().unwrap();
    let before = failed(&f);
    assert!(before > 0, "the kernel reported the undelivered replies");
    std::thread::sleep(Duration::from_secs(1));
    let after = failed(&f);
    assert_eq!(before, after, "failed transmits still growing after the fallback");
    let metrics = scrape(&lab);
    let series = |n: &str| format!("{n}{{interface=\"{}\"}}", lab.srv_if);
    assert_eq!(metric(&metrics, &series("tcpguard_interface_responder_xdp")), 0.0);
    assert!(metric(&metrics, &series("tcpguard_xdp_tx_errors_total")) > 0.0);
    assert_eq!(metric(&metrics, &series("tcpguard_responder_fallbacks_total")), 1.0);
    eprintln!("failed transmits before the fallback: {before}; {:.1} s since removal", t.elapsed().as_secs_f64());

    // Put back: after the back-off the XDP responder returns and is kept.
    lab.set_peer_xdp(true).unwrap();
    let (_, took) = wait_status(&f, Duration::from_secs(40), "XDP back", |v| {
        let i = iface(v, &lab.srv_if);
        i["responder"] == "xdp" && i["answering"] == true
    });
    eprintln!("peer program back: XDP answering again after {:.1} s", took.as_secs_f64());
    let sent = |f: &Files| status(f).unwrap()["counters"]["cookie_sent"].as_u64().unwrap();
    let s0 = sent(&f);
    std::thread::sleep(Duration::from_millis(3 * TICK_MS));
    assert!(sent(&f) > s0 + 1000, "XDP answers again");
    assert_eq!(failed(&f), after, "no new failed transmits once the peer has its program");
    stop.store(true, Ordering::Relaxed);
    let rep = flood.join().unwrap();
    let p = probes.stop();
    let ok = report(&format!("peer program removed and put back, flood {:.0} SYN/s", rep.pps()), &p);
    assert!(ok >= 0.99, "legit {ok}");
    let log = d.stop();
    assert!(log.contains("XDP replies are not leaving"), "{log}");
    assert!(log.contains("XDP replies leave again"), "{log}");
    drop(server);
}


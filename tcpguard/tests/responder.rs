//! Attack mode on hosts as users have them (root, namespace labs, real
//! floods, real clients): replies from XDP that cannot leave (a veth peer
//! with no XDP program, as a container's has), a peer program removed and
//! put back mid-flood, generic mode, a host that forwards, an MTU that
//! changes, a daemon handed over under a flood, two interfaces.

#![allow(clippy::float_cmp)] // exact values read back from metrics
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
    lab::flood::{self, FloodSpec, Sources},
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

/// Wait until `name` answers SYNs from XDP (over 1,000 SYN-ACKs/s); the status then.
fn wait_answering(f: &Files, name: &str, limit: Duration) -> (Value, Duration) {
    wait_status(f, limit, "XDP answering", |v| {
        let i = iface(v, name);
        i["answering"] == true && i["xdp_synacks_per_sec"].as_f64().unwrap_or(0.0) > 1000.0
    })
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
    assert!(text.contains("responder: kernel cookies (XDP_TX undeliverable: veth peer has no XDP program)"), "{text}");
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
    let (v, _) = wait_answering(&f, &lab.srv_if, Duration::from_secs(3));
    assert_eq!(iface(&v, &lab.srv_if)["responder"], "xdp");
    std::thread::sleep(Duration::from_secs(1));

    // The peer's program goes: XDP_TX frames are dropped by veth.
    lab.set_peer_xdp(false).unwrap();
    let t = Instant::now();
    let (v, took) =
        wait_status(&f, Duration::from_secs(2), "fallback", |v| iface(v, &lab.srv_if)["responder"] == "kernel cookies");
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
    // veth's failures are its driver's own count (ethtool,
    // rx_queue_N_xdp_tx_errors), read each tick: the interface's figure and
    // the sum over interfaces say the same as the driver once all three
    // have stopped moving (up to three ticks; the sum is read earlier in
    // the tick); a disagreement then fails with all three in full.
    let witnesses = |v: &serde_json::Value| {
        let i = iface(v, &lab.srv_if);
        (i["driver_xdp_tx_errors"].as_u64().expect("veth has the statistic"), i["xdp_tx_failed"].as_u64().unwrap())
    };
    let mut v = status(&f).unwrap();
    for _ in 0..3 {
        let (driver, watch) = witnesses(&v);
        if driver == watch && watch == after {
            break;
        }
        std::thread::sleep(Duration::from_millis(TICK_MS));
        v = status(&f).unwrap();
    }
    let (driver, watch) = witnesses(&v);
    eprintln!("failed transmits: all interfaces {after} (this interface {watch}), driver {driver}");
    assert_eq!(
        (driver, watch),
        (after, after),
        "the counts disagree (driver, this interface's) against all interfaces'; status: {:#}",
        iface(&v, &lab.srv_if)
    );
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

/// Add `line` to the config's `[daemon]` table.
fn daemon_key(f: &Files, line: &str) {
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(f.config(), text.replacen("[daemon]\n", &format!("[daemon]\n{line}\n"), 1)).unwrap();
}

fn counter(f: &Files, name: &str) -> u64 {
    status(f).unwrap()["counters"][name].as_u64().unwrap()
}

#[test]
fn generic_mode_answers_from_xdp_whatever_the_peer() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    lab.set_peer_xdp(false).unwrap();
    let f = Files::new("skb");
    f.write_config("auto", "");
    daemon_key(&f, "xdp-mode = \"skb\"");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    let v = status(&f).unwrap();
    let i = iface(&v, &lab.srv_if);
    assert_eq!(i["responder"], "xdp", "{i:#}");
    assert!(i["responder_reason"].as_str().unwrap().starts_with("generic (skb) XDP"), "{i:#}");
    let probes = legit(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = shared_flood(&lab, 6, &stop);
    wait_status(&f, Duration::from_secs(3), "XDP answering", |v| iface(v, &lab.srv_if)["answering"] == true);
    let rep = flood.join().unwrap();
    let p = probes.stop();
    let ok = report(&format!("generic mode, peer without XDP, flood {:.0} SYN/s", rep.pps()), &p);
    assert!(ok >= 0.99, "legit {ok}");
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let sent = counter(&f, "cookie_sent");
    assert!(sent > 10_000, "answered from XDP");
    // Almost all without a socket lookup (the listener proven once a
    // second), and the legit clients above connected through those cookies.
    let quick = counter(&f, "cookie_no_lookup");
    assert!(quick * 10 >= sent * 9, "{quick} of {sent} answers skipped the lookup");
    assert_eq!(counter(&f, "xdp_tx_failed"), 0);
    assert_eq!(iface(&status(&f).unwrap(), &lab.srv_if)["fallbacks"], 0);
    drop(d);
    drop(server);
}

#[test]
fn two_interfaces_each_show_their_own_mode_and_responder_under_a_full_rate_flood() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let att = lab.add_attacker().unwrap();
    // The legit clients' veth has no XDP program on its peer; the
    // attacker's has one.
    lab.set_peer_xdp(false).unwrap();
    let f = Files::new("twoif");
    f.write_config("auto", "");
    let server = serve(&lab);
    let d = Daemon::start_on(&lab, &f, &[&lab.srv_if, &att.srv_if]);
    let probes = legit(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    // The attacker at the generator's full rate on its own veth, and a
    // second flood through the legit clients' veth.
    let spec = FloodSpec {
        rate: 0,
        duration: Duration::from_secs(8),
        seed: rand_seed(),
        ..att.flood(IpAddr::V4(SERVER_IP), PORT, spoofed())
    };
    let stop2 = stop.clone();
    let big = att.ns.spawn(move || flood::run(&spec, &stop2).expect("flood")).unwrap();
    let small = start_flood(&lab, spoofed(), 30_000, 8, stop.clone());
    let (v, _) = wait_status(&f, Duration::from_secs(3), "both interfaces in attack mode", |v| {
        iface(v, &lab.srv_if)["mode"] == "attack"
            && iface(v, &att.srv_if)["mode"] == "attack"
            && iface(v, &att.srv_if)["xdp_synacks_per_sec"].as_f64().unwrap_or(0.0) > 10_000.0
    });
    let (a, c) = (iface(&v, &att.srv_if), iface(&v, &lab.srv_if));
    assert_eq!(a["responder"], "xdp", "{a:#}");
    assert_eq!(a["answering"], true, "{a:#}");
    assert_eq!(c["responder"], "kernel cookies", "{c:#}");
    assert_eq!(c["responder_reason"], "XDP_TX undeliverable: veth peer has no XDP program");
    assert_eq!(c["answering"], false, "{c:#}");
    let m = scrape(&lab);
    let series = |n: &str, i: &str| format!("{n}{{interface=\"{i}\"}}");
    assert_eq!(metric(&m, &series("tcpguard_interface_responder_xdp", &att.srv_if)), 1.0);
    assert_eq!(metric(&m, &series("tcpguard_interface_responder_xdp", &lab.srv_if)), 0.0);
    assert_eq!(metric(&m, &series("tcpguard_interface_attack_mode", &att.srv_if)), 1.0);
    assert_eq!(metric(&m, &series("tcpguard_interface_attack_mode", &lab.srv_if)), 1.0);
    assert!(metric(&m, &series("tcpguard_interface_xdp_syncookies_sent_total", &att.srv_if)) > 10_000.0);
    assert_eq!(metric(&m, &series("tcpguard_interface_xdp_syncookies_sent_total", &lab.srv_if)), 0.0);
    let text = ctl(&f, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    eprintln!("{text}");
    let line = |i: &str| text.lines().find(|l| l.trim_start().starts_with(&format!("{i}:"))).unwrap().to_string();
    assert!(line(&att.srv_if).contains("ATTACK MODE, responder: xdp"), "{text}");
    assert!(line(&lab.srv_if).contains("responder: kernel cookies (XDP_TX undeliverable"), "{text}");
    let (big, small) = (big.join().unwrap(), small.join().unwrap());
    let p = probes.stop();
    let ok = report(&format!("two interfaces, floods {:.0} + {:.0} SYN/s", big.pps(), small.pps()), &p);
    assert!(ok >= 0.99, "legit {ok}");
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let v = status(&f).unwrap();
    let (a, c) = (iface(&v, &att.srv_if), iface(&v, &lab.srv_if));
    assert_eq!(c["xdp_tx_failed"], 0, "nothing answered where replies do not leave: {c:#}");
    // At the generator's full rate the attacker's peer ring overflows now
    // and then (a real failed transmit, ENOSPC): a share far under the
    // fallback's, so its responder stays XDP.
    eprintln!(
        "attacker's interface: {} failed transmits of {} XDP SYN-ACKs",
        a["xdp_tx_failed"], v["counters"]["cookie_sent"]
    );
    assert_eq!(a["fallbacks"], 0, "{a:#}");
    drop(d);
    drop(server);
}

#[test]
fn a_forwarding_host_answers_only_its_own_connections_in_attack_mode() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    // A backend behind the server, which routes between the two.
    let backend = Netns::new("b").unwrap();
    let n = std::process::id();
    let (sb, bs) = (format!("tgF{n}"), format!("tgf{n}"));
    lab::ip(&[
        "link",
        "add",
        &sb,
        "netns",
        &lab.server.name,
        "type",
        "veth",
        "peer",
        "name",
        &bs,
        "netns",
        &backend.name,
    ])
    .unwrap();
    lab.server.ip(&["addr", "add", "198.51.100.1/24", "dev", &sb]).unwrap();
    backend.ip(&["addr", "add", "198.51.100.2/24", "dev", &bs]).unwrap();
    lab.server.ip(&["link", "set", &sb, "up"]).unwrap();
    backend.ip(&["link", "set", &bs, "up"]).unwrap();
    backend.ip(&["route", "add", "default", "via", "198.51.100.1"]).unwrap();
    lab.client.ip(&["route", "add", "198.51.100.0/24", "via", "198.18.0.1"]).unwrap();
    lab.server.sysctl("net.ipv4.ip_forward", "1").unwrap();
    // A wildcard listener on the server and the same port on the backend.
    let local = Server::start(&lab.server, "0.0.0.0:8080".parse().unwrap(), 128).unwrap();
    let remote = Server::start(&backend, "198.51.100.2:8080".parse().unwrap(), 128).unwrap();
    let to_backend: SocketAddr = "198.51.100.2:8080".parse().unwrap();
    let to_server = SocketAddr::new(IpAddr::V4(SERVER_IP), PORT);
    assert_eq!(common::connect_n(&lab, to_backend, 5), 5, "forwarding works before the daemon");

    let f = Files::new("fwd");
    f.write_config("auto", "");
    let d = Daemon::start(&lab, &f);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = shared_flood(&lab, 8, &stop);
    wait_answering(&f, &lab.srv_if, Duration::from_secs(3));
    let fwd = common::connect_n(&lab, to_backend, 50);
    let own = common::connect_n(&lab, to_server, 50);
    eprintln!("attack mode: forwarded connections {fwd}/50, local {own}/50");
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let v = status(&f).unwrap();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert_eq!(fwd, 50, "forwarded connections through a host in attack mode");
    assert_eq!(own, 50, "the host's own connections");
    let i = iface(&v, &lab.srv_if);
    assert_eq!(i["mode"], "attack", "{i:#}");
    // Each forwarded connection's SYN and its ACKs went to the kernel.
    assert!(i["not_for_host"].as_u64().unwrap() >= 100, "{i:#}");
    drop(d);
    drop((local, remote));
}

/// Read exactly `REQ` bytes, answer "ok": a request larger than one segment.
const REQ: usize = 3000;

fn big_request_server(lab: &Lab, port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    lab.server
        .spawn(move || {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut buf = vec![0u8; REQ];
                if s.read_exact(&mut buf).is_ok() && s.write_all(b"ok").is_ok() {
                    served += 1;
                }
            }
            served
        })
        .unwrap()
}

/// Connect, send `REQ` bytes, read "ok"; the MSS the connection uses.
fn big_request(lab: &Lab, to: SocketAddr) -> Option<u32> {
    lab.client
        .run(move || {
            let mut s = TcpStream::connect_timeout(&to, LEGIT_TIMEOUT).ok()?;
            s.set_read_timeout(Some(LEGIT_TIMEOUT)).unwrap();
            s.write_all(&vec![b'x'; REQ]).ok()?;
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            let mut mss: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid socket and an int-sized buffer for TCP_MAXSEG.
            let rc = unsafe {
                libc::getsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::IPPROTO_TCP,
                    libc::TCP_MAXSEG,
                    (&raw mut mss).cast(),
                    &raw mut len,
                )
            };
            (rc == 0 && &b == b"ok").then_some(mss as u32)
        })
        .unwrap()
}

#[test]
fn the_synack_mss_follows_an_mtu_lowered_in_attack_mode() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("mtu");
    f.write_config("auto", "");
    let server = serve(&lab);
    let bstop = Arc::new(AtomicBool::new(false));
    let big = big_request_server(&lab, 8082, bstop.clone());
    let d = Daemon::start(&lab, &f);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = shared_flood(&lab, 12, &stop);
    wait_answering(&f, &lab.srv_if, Duration::from_secs(3));
    let to = SocketAddr::new(IpAddr::V4(SERVER_IP), 8082);
    let acks0 = counter(&f, "cookie_ack_valid");
    assert!(big_request(&lab, to).is_some_and(|m| m <= 1460), "a large request at MTU 1500");

    lab.server.ip(&["link", "set", &lab.srv_if, "mtu", "1400"]).unwrap();
    let (_, took) =
        wait_status(&f, Duration::from_secs(2), "MSS 1360", |v| iface(v, &lab.srv_if)["synack_mss"] == 1360);
    eprintln!("MTU 1400: the status shows MSS 1360 after {:.0} ms", took.as_secs_f64() * 1e3);
    assert!(took <= Duration::from_millis(2 * TICK_MS), "took {took:?}");
    std::thread::sleep(Duration::from_millis(TICK_MS));
    let results: Vec<Option<u32>> = (0..5).map(|_| big_request(&lab, to)).collect();
    eprintln!("requests of {REQ} bytes after the MTU change: MSS {results:?}");
    assert!(results.iter().all(|r| r.is_some_and(|m| m <= 1360)), "{results:?}");
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    assert!(counter(&f, "cookie_ack_valid") >= acks0 + 6, "the connections went through XDP cookies");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    bstop.store(true, Ordering::Relaxed);
    assert!(big.join().unwrap() >= 6);
    let log = d.stop();
    assert!(log.contains("mtu 1500 -> 1400"), "{log}");
    drop(server);
}

/// Whether the pinned settings of `iface` let the datapath answer from XDP.
fn pinned_answering(f: &Files, iface: &str) -> bool {
    let md = aya::maps::MapData::from_pin(f.pin_root.join(iface).join(tcpguard_common::map_names::SETTINGS)).unwrap();
    let arr: aya::maps::Array<_, tcpguard_common::Settings> =
        aya::maps::Array::try_from(aya::maps::Map::Array(md)).unwrap();
    arr.get(&0, 0).unwrap().flags & tcpguard_common::FLAG_ANSWER != 0
}

#[test]
fn a_handover_under_a_flood_never_leaves_xdp_answering_without_its_sysctls() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("handover");
    f.write_config("auto", "");
    let ts0 = lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap();
    let sc0 = lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap();
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    let probes = legit(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = shared_flood(&lab, 30, &stop);
    let answering = |f: &Files| wait_answering(f, &lab.srv_if, Duration::from_secs(4));
    answering(&f);
    assert!(pinned_answering(&f, &lab.srv_if));

    // SIGUSR2 (the package's upgrade path): exit 75, XDP stays attached.
    let mut d = d;
    d.signal(libc::SIGUSR2);
    let st = d.child.wait().unwrap();
    assert_eq!(st.code(), Some(75), "{}", d.log_text());
    // No daemon for a moment: everything stays as it was for the next one,
    // the responder and the sysctls it needs together (nothing flips under
    // connections whose cookies were made with them).
    assert!(pinned_answering(&f, &lab.srv_if), "the responder stopped for a handover");
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), "2");
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), "2");
    assert!(xdp_attached(&lab), "still attached");
    let gap = common::connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 20);
    assert_eq!(gap, 20, "legit clients while no daemon runs");

    // The next daemon adopts attack mode and the sysctls, and answers.
    let d = Daemon::start(&lab, &f);
    assert_eq!(status(&f).unwrap()["interfaces"][0]["adopted"], true);
    answering(&f);
    assert!(d.log_text().contains("attack mode from a previous run: adopted"), "{}", d.log_text());
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), "2");

    // A stop with stay-attached (no daemon to follow): the datapath stops
    // answering from XDP first, then the operator's sysctls come back.
    daemon_key(&f, "stay-attached = true");
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let log = d.stop();
    assert!(log.contains("staying attached"), "{log}");
    assert!(!pinned_answering(&f, &lab.srv_if), "XDP answering with the sysctls restored under it");
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), ts0);
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), sc0);
    assert!(xdp_attached(&lab));
    let gap = common::connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 20);
    assert_eq!(gap, 20, "legit clients with no daemon, the kernel answering");
    std::thread::sleep(Duration::from_secs(1));
    let d = Daemon::start(&lab, &f);
    answering(&f);
    stop.store(true, Ordering::Relaxed);
    let rep = flood.join().unwrap();
    let p = probes.stop();
    let ok = report(&format!("two handovers under a flood of {:.0} SYN/s", rep.pps()), &p);
    assert!(ok >= 0.99, "legit {ok}");
    drop(d);
    drop(server);
}

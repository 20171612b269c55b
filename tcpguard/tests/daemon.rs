//! End-to-end: `tcpguard run` on the server veth of a namespace lab, a real
//! kernel listener, real clients, real floods from the project's generator;
//! observed through `tcpguard status --json`, /metrics over HTTP, signals
//! and the sysctl itself. Root required.

#![allow(clippy::float_cmp)] // exact values read back from JSON and metrics
#![allow(clippy::too_many_lines)] // end-to-end scenarios read top to bottom

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{connect_n, require_root, serial};
use serde_json::Value;
use tcpguard::{
    lab::flood::{self, FloodSpec, Sources},
    lab::{Lab, Server, SERVER_IP},
};

use common::e2e::*;

/// Programs on the server interface's TCX egress hook.
fn egress_programs(lab: &Lab) -> usize {
    let iface = lab.srv_if.clone();
    lab.server
        .run(move || {
            aya::programs::SchedClassifier::query_tcx(&iface, aya::programs::TcAttachType::Egress)
                .map_or(0, |(_, progs)| progs.len())
        })
        .unwrap()
}

#[test]
fn spoofed_flood_forces_cookies_then_restores() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("spoof");
    f.write_config("auto", "");
    let original = lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap();
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    assert_eq!(connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 10), 10);

    let flood_stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 20_000, 30, flood_stop.clone());
    let (v, _) = wait_status(&f, Duration::from_secs(5), "spoofed attack", |v| {
        v["attack"]["active"] == true && v["attack"]["kind"] == "spoofed-random"
    });
    let latency = started.elapsed();
    eprintln!("detection latency (flood start -> status shows attack): {latency:?}");
    // Two ticks over threshold; the first tick after the flood starts is partial.
    assert!(latency <= Duration::from_millis(3 * TICK_MS + 150), "detected after {latency:?}");
    let rules: Vec<&str> =
        v["attack"]["evidence"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"syn-rate") && rules.contains(&"new-source-ratio"), "{rules:?}");
    let (v, _) =
        wait_status(&f, Duration::from_secs(2), "cookies forced", |v| v["kernel"]["syncookies_forced"] == true);
    assert_eq!(v["kernel"]["syncookies"], 2);
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), "2");
    // The datapath answers the flood from XDP: attack mode, SYN-ACKs sent.
    let (v, _) = wait_status(&f, Duration::from_secs(2), "XDP responder", |v| {
        v["datapath"]["mode"] == "attack" && v["counters"]["cookie_sent"].as_u64().unwrap() > 1000
    });
    assert_eq!(v["datapath"]["responder"], "xdp", "{:#}", v["datapath"]);
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), "2");
    // Real clients still get in during the flood.
    assert_eq!(
        connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 10),
        10,
        "legit clients during the spoofed flood"
    );

    // Metrics over real HTTP, counters moving.
    let m1 = scrape(&lab);
    assert!(m1.starts_with("HTTP/1.1 200 OK"));
    // Keep-alive: two requests on one connection; anything but /metrics is 404.
    let two = lab
        .server
        .run(|| {
            let mut s = TcpStream::connect("127.0.0.1:9717").unwrap();
            s.write_all(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap();
    assert!(two.starts_with("HTTP/1.1 200 OK") && two.contains("HTTP/1.1 404 Not Found"), "{two}");
    assert_eq!(metric(&m1, "tcpguard_attack_active"), 1.0);
    // Every tcpguard series the shipped alerting rules and dashboard use is exported.
    let rules = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/prometheus/tcpguard-alerts.yml"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana/tcpguard-dashboard.json"),
    ]
    .map(|p| std::fs::read_to_string(p).unwrap())
    .concat();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tcpguard_"))
        .collect();
    assert!(used.len() >= 12, "{used:?}");
    for name in used {
        assert!(m1.lines().any(|l| l.starts_with(name)), "the rules or dashboard use {name}, /metrics lacks it");
    }
    assert_eq!(metric(&m1, "tcpguard_syncookies_forced"), 1.0);
    assert_eq!(metric(&m1, "tcpguard_attacks_total{kind=\"spoofed-random\"}"), 1.0);
    std::thread::sleep(Duration::from_millis(3 * TICK_MS));
    let m2 = scrape(&lab);
    assert!(metric(&m2, "tcpguard_syn_packets_total") > metric(&m1, "tcpguard_syn_packets_total"));
    assert_eq!(metric(&m2, "tcpguard_datapath_attack_mode"), 1.0);
    assert!(metric(&m2, "tcpguard_xdp_syncookies_sent_total") > 1000.0);

    // The kernel agrees: it accepted the legit clients' cookie ACKs (the
    // SYN-ACKs came from XDP with its own cookies).
    let v = status(&f).unwrap();
    assert!(v["kernel"]["syncookies_recv"].as_u64().unwrap() >= 10, "{:#}", v["kernel"]);

    flood_stop.store(true, Ordering::Relaxed);
    let rep = flood.join().unwrap();
    assert!(rep.sent > 10_000);
    let (v, waited) = wait_status(&f, Duration::from_secs(8), "attack over", |v| v["attack"]["active"] == false);
    eprintln!("attack over {waited:?} after the flood stopped (hold-down 2 s)");
    assert!(waited >= Duration::from_millis(1500), "ended before the hold-down: {waited:?}");
    assert_eq!(v["kernel"]["syncookies_forced"], false);
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), original, "sysctl restored");

    let log = d.stop();
    assert!(log.contains("attack started: spoofed-random"), "{log}");
    assert!(!xdp_attached(&lab), "clean stop detaches");
    assert!(server.stop() >= 20);
}

#[test]
fn single_source_flood_is_blocked_and_survives_kill_9() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("single");
    // The paced generator can catch up in bursts past the datapath's own
    // attack-mode threshold; this test is about blocking, so keep it off.
    f.write_config("auto", "[datapath]\nattack-syn-rate = 0\n");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);

    let bad: IpAddr = "198.51.100.66".parse().unwrap();
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Single(bad), 5_000, 30, flood_stop.clone());
    let (v, _) = wait_status(&f, Duration::from_secs(5), "heavy source blocked", |v| {
        v["blocked"].as_array().unwrap().iter().any(|b| b["prefix"] == "198.51.100.66/32")
    });
    assert_eq!(v["attack"]["kind"], "few-heavy-sources", "{:#}", v["attack"]);
    assert_eq!(v["kernel"]["syncookies_forced"], false, "a heavy real source is blocked, not answered with cookies");
    // Its SYNs are dropped in XDP, and another client still connects.
    let (v, _) =
        wait_status(&f, Duration::from_secs(3), "drops", |v| v["counters"]["drop_blocked"].as_u64().unwrap() > 1000);
    std::thread::sleep(Duration::from_millis(4 * TICK_MS));
    let later = status(&f).unwrap();
    assert_eq!(later["attack"]["active"], true, "a blocked flood is still an attack: {:#}", later["attack"]);
    assert_eq!(later["attack"]["kind"], "few-heavy-sources", "{:#}", later["attack"]);
    assert_eq!(later["kernel"]["syncookies_forced"], false, "blocking the source is the mitigation; no cookies");
    let top: Vec<&str> = v["top_sources"].as_array().unwrap().iter().map(|s| s["addr"].as_str().unwrap()).collect();
    assert!(top.contains(&"198.51.100.66") || v["attack"]["active"] == true);
    assert_eq!(connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 10), 10);
    // A datapath log record (aya-log) reached the daemon's log.
    assert!(d.log_text().contains("heavy source 198.51.100.66"), "{}", d.log_text());

    // kill -9: XDP stays attached (pinned link) and keeps dropping.
    let before = status(&f).unwrap()["counters"]["drop_blocked"].as_u64().unwrap();
    assert_eq!(egress_programs(&lab), 1, "TC egress attached");
    d.kill9();
    assert!(xdp_attached(&lab), "XDP stays attached after kill -9");
    assert_eq!(egress_programs(&lab), 1, "so does TC egress");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 5),
        5,
        "clients connect while the daemon is down"
    );

    // Restart adopts the link and the block-list.
    let d = Daemon::start(&lab, &f);
    let v = status(&f).unwrap();
    assert_eq!(v["interfaces"][0]["adopted"], true, "{:#}", v["interfaces"]);
    assert!(d.log_text().contains("TC egress adopted"), "{}", d.log_text());
    assert_eq!(egress_programs(&lab), 1, "adopted, not attached twice");
    assert!(
        v["blocked"].as_array().unwrap().iter().any(|b| b["prefix"] == "198.51.100.66/32"),
        "block-list kept: {:#}",
        v["blocked"]
    );
    let after = v["counters"]["drop_blocked"].as_u64().unwrap();
    assert!(after > before + 1000, "the datapath kept dropping while the daemon was dead: {before} -> {after}");
    flood_stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();

    // Operator commands on the same daemon.
    let o = ctl(&f, &["unblock", "198.51.100.66/32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ctl(&f, &["unblock", "198.51.100.66/32"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not blocked"));
    let o = ctl(&f, &["block", "203.0.113.0/24", "--ttl", "1h"]);
    assert!(o.status.success());
    let o = ctl(&f, &["allow", "203.0.113.7"]);
    assert!(o.status.success());
    let o = ctl(&f, &["block", "203.0.113.7"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("allow-listed"), "{o:?}");
    // A block of everything is refused unless forced, and never lands.
    for wide in ["0.0.0.0/0", "::/0", "10.0.0.0/8"] {
        let o = ctl(&f, &["block", wide]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--force"), "{wide}: {o:?}");
    }
    let v = status(&f).unwrap();
    assert!(!v["blocked"].as_array().unwrap().iter().any(|b| b["prefix"] == "0.0.0.0/0"), "{:#}", v["blocked"]);
    let o = ctl(&f, &["block", "10.0.0.0/8", "--force", "--ttl", "1m"]);
    assert!(o.status.success(), "{o:?}");
    assert!(ctl(&f, &["unblock", "10.0.0.0/8"]).status.success());
    // An allow-list entry of everything is refused unless forced, as a block is.
    for wide in ["0.0.0.0/0", "::/0"] {
        let o = ctl(&f, &["allow", wide]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("--force") && err.contains("unjudged"), "{wide}: {o:?}");
    }
    let v = status(&f).unwrap();
    assert!(!v["allowed"].as_array().unwrap().iter().any(|a| a == "0.0.0.0/0"), "{:#}", v["allowed"]);
    // A TTL of 0 would expire at once: refused by the CLI, and by the daemon
    // for a raw request.
    let o = ctl(&f, &["block", "203.0.113.9", "--ttl", "0"]);
    assert!(!o.status.success(), "{o:?}");
    let raw =
        tcpguard::proto::Request::Block { prefix: "203.0.113.9/32".parse().unwrap(), ttl_secs: Some(0), force: false };
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(tcpguard::ctl::request(&f.socket(), &raw));
    assert!(matches!(&r, Err(e) if e.to_string().contains("expire at once")), "refused by the daemon: {r:?}");
    // A TTL past the cap is refused at parse time instead of wrapping.
    let o = ctl(&f, &["block", "203.0.113.9", "--ttl", "18446744074s"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("longest block TTL"), "{o:?}");
    let o = ctl(&f, &["top", "--json", "--limit", "3"]);
    let top: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(top[0]["addr"], "198.51.100.66", "{top:#}");
    d.stop();
    assert_eq!(egress_programs(&lab), 0, "a clean stop detaches egress too");
    assert!(server.stop() >= 15);
}

#[test]
fn reload_kill_restore_and_permissions() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("reload");
    f.write_config("syn-cookie", "");
    let d = Daemon::start(&lab, &f);

    // SIGHUP with a valid file: applied.
    f.write_config("monitor", "");
    d.signal(libc::SIGHUP);
    wait_status(&f, Duration::from_secs(3), "policy monitor", |v| v["policy"] == "monitor");
    // A run-time allow survives a reload, is listed, and can be removed.
    assert!(ctl(&f, &["allow", "203.0.113.50"]).status.success());
    // A reload that changes restart-only keys keeps their running values:
    // the socket stays where it is.
    let other = f.dir.join("other.sock");
    let text = std::fs::read_to_string(f.config())
        .unwrap()
        .replace(&format!("socket = \"{}\"", f.socket().display()), &format!("socket = \"{}\"", other.display()));
    std::fs::write(f.config(), text).unwrap();
    d.signal(libc::SIGHUP);
    let (v, _) = wait_status(&f, Duration::from_secs(3), "reloaded", |_| d.log_text().contains("control changed"));
    assert!(v["allowed"].as_array().unwrap().iter().any(|a| a == "203.0.113.50/32"), "{:#}", v["allowed"]);
    let o = ctl(&f, &["block", "203.0.113.50"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("allow-listed"), "still allowed after the reload: {o:?}");
    assert!(ctl(&f, &["unallow", "203.0.113.50"]).status.success());
    let v = status(&f).unwrap();
    assert!(!v["allowed"].as_array().unwrap().iter().any(|a| a == "203.0.113.50/32"), "{:#}", v["allowed"]);
    assert!(!ctl(&f, &["unallow", "127.0.0.0/8"]).status.success(), "config entries are not removed at run time");
    f.write_config("monitor", "");

    // SIGHUP with a bad file: refused, old config keeps running.
    std::fs::write(f.config(), "[policy]\nmode = \"nuke\"\n").unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let v = status(&f).expect("daemon still answers after a bad reload");
    assert_eq!(v["policy"], "monitor");
    assert!(d.log_text().contains("reload refused, keeping the running config"), "{}", d.log_text());
    assert!(d.log_text().contains("unknown variant `nuke`"));

    // An unprivileged user is refused by the socket's permissions.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "status", "--socket"])
        .arg(f.socket())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"), "{}", String::from_utf8_lossy(&o.stderr));

    // Killed while forcing cookies: the next start restores the operator's value.
    f.write_config("syn-cookie", "");
    d.signal(libc::SIGHUP);
    wait_status(&f, Duration::from_secs(3), "policy syn-cookie", |v| v["policy"] == "syn-cookie");
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 20_000, 30, flood_stop.clone());
    wait_status(&f, Duration::from_secs(5), "cookies forced", |v| v["kernel"]["syncookies_forced"] == true);
    d.kill9();
    flood_stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), "2", "left forced by the killed daemon");
    let state = std::fs::read_to_string(f.dir.join("state/state.json")).unwrap();
    assert!(state.contains("\"syncookies_original\": 1"), "{state}");
    let d = Daemon::start(&lab, &f);
    // Restored at start, or, when the killed run left the datapath in attack
    // mode, adopted with it and restored once it ends (hold-down 2 s here).
    let t = Instant::now();
    while lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap() != "1" {
        assert!(t.elapsed() < Duration::from_secs(6), "not restored:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log_text();
    assert!(
        log.contains("restoring the operator's value 1")
            || (log.contains("attack mode from a previous run: adopted")
                && log.contains("tcp_syncookies restored to 1")),
        "{log}"
    );
    d.stop();
    assert!(!Path::new(&f.socket()).exists(), "socket removed on exit");
    // Not running: one line that says so and how to start it.
    let o = ctl(&f, &["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not running") && err.contains("tcpguard run"), "{err}");
}

/// TCP_INFO's window-scale nibbles of a connected socket: (snd, rcv).
fn wscales(s: &TcpStream) -> (u8, u8) {
    use std::os::fd::AsRawFd;
    // SAFETY: TCP_INFO fills at most len bytes of a zeroed tcp_info.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &raw mut len)
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4 share one byte.
    (info.tcpi_snd_rcv_wscale & 0xf, info.tcpi_snd_rcv_wscale >> 4)
}

const MIB: usize = 1 << 20;

/// A server that sends 1 MiB to each client and reports its own sockets'
/// window scales.
fn bulk_server(lab: &Lab, port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u8, u8)>> {
    lab.server
        .spawn(move || {
            let l = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(SERVER_IP), port)).expect("bulk listener");
            l.set_nonblocking(true).unwrap();
            let mut seen = Vec::new();
            let chunk = vec![0x5au8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        // The client speaks first (as HTTP does): with SYN
                        // cookies a lost final ACK is only repaired by the
                        // client's next segment, so a server that speaks first
                        // could wait forever (true of the kernel's cookies too).
                        let mut req = [0u8; 4];
                        if s.read_exact(&mut req).is_err() {
                            continue;
                        }
                        seen.push(wscales(&s));
                        for _ in 0..MIB / chunk.len() {
                            if s.write_all(&chunk).is_err() {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            seen
        })
        .unwrap()
}

#[test]
fn attack_mode_answers_a_full_rate_flood_from_xdp_and_clients_move_data() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("atk");
    f.write_config("auto", "");
    let cookies0 = lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap();
    let ts0 = lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap();
    let server = serve(&lab);
    let bulk_stop = Arc::new(AtomicBool::new(false));
    let bulk = bulk_server(&lab, 8081, bulk_stop.clone());
    let d = Daemon::start(&lab, &f);

    // A spoofed random-source flood at the generator's full rate.
    let stop = Arc::new(AtomicBool::new(false));
    let spec = FloodSpec {
        rate: 0,
        duration: Duration::from_secs(6),
        seed: rand_seed(),
        ..lab.client_flood(IpAddr::V4(SERVER_IP), PORT, Sources::Random("198.19.0.0/16".parse().unwrap()))
    };
    let stop2 = stop.clone();
    let flood = lab
        .client
        .spawn(move || {
            let t0 = tcpguard::maps::monotonic_ns();
            (t0, flood::run(&spec, &stop2).expect("flood"))
        })
        .unwrap();
    let (v, _) = wait_status(&f, Duration::from_secs(3), "datapath attack mode", |v| {
        v["datapath"]["mode"] == "attack" && v["datapath"]["first_cookie_ns"].as_u64().unwrap_or(0) > 0
    });
    let dp = &v["datapath"];
    assert_eq!(dp["entered_by"], "datapath", "{dp:#}");

    // Real clients during the flood: handshakes through XDP cookies, and a
    // 1 MiB transfer each with window scaling in effect.
    let to = SocketAddr::new(IpAddr::V4(SERVER_IP), 8081);
    let transfers: Vec<(usize, (u8, u8))> = lab
        .client
        .run(move || {
            (0..5)
                .map(|_| {
                    let mut s =
                        TcpStream::connect_timeout(&to, Duration::from_secs(3)).expect("connect during the flood");
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.write_all(b"GET\n").unwrap();
                    let ws = wscales(&s);
                    let mut buf = Vec::with_capacity(MIB);
                    s.read_to_end(&mut buf).expect("read 1 MiB");
                    (buf.len(), ws)
                })
                .collect()
        })
        .unwrap();
    for (n, (snd, rcv)) in &transfers {
        assert_eq!(*n, MIB, "a whole MiB");
        assert!(*snd > 0 && *rcv > 0, "window scaling in effect on the client: snd {snd}, rcv {rcv}");
    }
    assert_eq!(connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 10), 10, "legit clients during the flood");
    // The status is the last tick's snapshot.
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let v = status(&f).unwrap();
    let c = &v["counters"];
    assert!(c["cookie_sent"].as_u64().unwrap() > 10_000, "{c:#}");
    assert!(c["cookie_ack_valid"].as_u64().unwrap() >= 15, "{c:#}");
    assert!(
        v["kernel"]["syncookies_recv"].as_u64().unwrap() >= 15,
        "the kernel took the cookie ACKs: {:#}",
        v["kernel"]
    );
    // The kernel answers no SYN that attack mode could answer itself; only
    // SYNs that came before the datapath's entry (tracking mode, the first
    // ~ms of the flood), and those attack mode held back until the daemon
    // had set the sysctls its cookies need (`cookie_held`, a few ms), can
    // have reached the listener's queue and its kernel cookies.
    let before_entry = c["syn"].as_u64().unwrap() - c["attack_syn"].as_u64().unwrap();
    let held = c["cookie_held"].as_u64().unwrap() + c["cookie_refused"].as_u64().unwrap();
    let kernel_sent = v["kernel"]["syncookies_sent"].as_u64().unwrap();
    eprintln!("kernel cookies {kernel_sent}: {before_entry} SYNs before attack mode, {held} held until armed");
    assert!(
        kernel_sent <= before_entry + held && before_entry < 2_000 && held < 10_000,
        "the kernel answered {kernel_sent} SYNs; {before_entry} came before attack mode, {held} held: {:#}",
        v["kernel"]
    );
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), "2");

    let (spawned, rep) = flood.join().unwrap();
    let t0 = rep.first_send_ns;
    eprintln!(
        "generator start-up (thread in the namespace to first batch): {:.2} ms",
        t0.saturating_sub(spawned) as f64 / 1e6
    );
    let dp = &v["datapath"];
    let entered = dp["entered_ns"].as_u64().unwrap();
    let window = dp["trigger_window_ns"].as_u64().unwrap();
    let first = dp["first_cookie_ns"].as_u64().unwrap();
    eprintln!(
        "flood {:.0} SYN/s sent; attack mode {:.2} ms after flood start ({:.2} ms into the tripping window), \
            first XDP SYN-ACK {:.2} ms after flood start",
        rep.pps(),
        entered.saturating_sub(t0) as f64 / 1e6,
        entered.saturating_sub(window) as f64 / 1e6,
        first.saturating_sub(t0) as f64 / 1e6
    );
    assert!(
        entered >= t0 && entered - t0 <= 10_000_000,
        "entered {} ms after flood start",
        (entered as f64 - t0 as f64) / 1e6
    );
    assert!(entered - window <= tcpguard_common::ATTACK_WINDOW_NS);

    // After the flood: attack mode ends after the hold-down, sysctls restored.
    wait_status(&f, Duration::from_secs(8), "attack mode over", |v| {
        v["datapath"]["mode"] == "tracking" && v["attack"]["active"] == false
    });
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), cookies0, "tcp_syncookies restored");
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), ts0, "tcp_timestamps restored");
    let log = d.stop();
    assert!(log.contains("entered attack mode"), "{log}");
    assert!(log.contains("datapath attack mode off"), "{log}");
    bulk_stop.store(true, Ordering::Relaxed);
    let seen = bulk.join().unwrap();
    assert!(
        seen.len() >= 5 && seen.iter().all(|(snd, rcv)| *snd > 0 && *rcv > 0),
        "server sockets' window scales: {seen:?}"
    );
    drop(server);
}

#[test]
fn one_daemon_per_host_and_a_warning_in_a_private_mount_namespace() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("lock");
    f.write_config("auto", "");
    let d = Daemon::start(&lab, &f);
    // Its control socket deleted from under it: a second daemon must still
    // not start, nor touch the first one's XDP link.
    std::fs::remove_file(f.socket()).unwrap();
    let o = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.server.name))
        .args([BIN, "run", "--config"])
        .arg(f.config())
        .args(["--iface", &lab.srv_if])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a second daemon started: {err}");
    assert!(err.contains("another tcpguard daemon") && err.contains(&d.child.id().to_string()), "{err}");
    assert!(xdp_attached(&lab), "the first daemon's link is untouched");
    assert!(!d.log_text().contains("adopted"), "{}", d.log_text());
    // A reload that moves control.socket onto another process's live socket
    // keeps the running path; stopping must not unlink the other socket.
    let other = f.dir.join("other.sock");
    let other_listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
    let text = std::fs::read_to_string(f.config())
        .unwrap()
        .replace(&format!("socket = \"{}\"", f.socket().display()), &format!("socket = \"{}\"", other.display()));
    std::fs::write(f.config(), text).unwrap();
    d.signal(libc::SIGHUP);
    let t = Instant::now();
    while !d.log_text().contains("control changed") && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let d_log = d.stop();
    assert!(d_log.contains("control changed"), "{d_log}");
    assert!(other.exists(), "the other process's socket survived the daemon's stop");
    drop(other_listener);

    // Under `ip netns exec` (a private mount namespace) the daemon says its
    // pins would not outlive it.
    let f2 = Files::new("privmnt");
    f2.write_config("auto", "");
    let log = f2.dir.join("daemon.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.server.name, BIN, "run", "--config"])
        .arg(f2.config())
        .args(["--iface", &lab.srv_if])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let t = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("private to this process's mount namespace") || t.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(text.contains("private to this process's mount namespace"), "{text}");
    // ...and it does not say so when run the way a service is.
    assert!(!d_log.contains("private to this process"), "{d_log}");
}

#[test]
fn a_block_the_datapath_refuses_is_never_reported_as_done() {
    use aya::maps::{lpm_trie::Key, LpmTrie, Map, MapData};
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("full");
    // A small list, as configured: the capacity is the operator's.
    f.write_config_policy("mode = \"auto\"\nmax-blocked = 32", "[datapath]\nblock-list-entries = 64\n");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    // Fill the pinned IPv4 block-list to its capacity behind the daemon's back.
    let pin = f.pin_root.join(&lab.srv_if).join("BLOCK_V4");
    let mut trie: LpmTrie<MapData, [u8; 4], tcpguard_common::BlockEntry> =
        LpmTrie::try_from(Map::LpmTrie(MapData::from_pin(&pin).unwrap())).unwrap();
    for i in 0..64_u32 {
        let a = (0x0a00_0000 | i).to_be_bytes();
        trie.insert(&Key::new(32, a), tcpguard_common::BlockEntry { expires_ns: 0 }, 0).unwrap();
    }
    drop(trie);
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Single("198.51.100.66".parse().unwrap()), 5_000, 30, flood_stop.clone());
    let (v, _) = wait_status(&f, Duration::from_secs(8), "a refused block", |v| {
        v["attack"]["mitigation"].as_array().unwrap().iter().any(|m| m.as_str().unwrap().starts_with("FAILING"))
    });
    flood_stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let mitigation: Vec<&str> =
        v["attack"]["mitigation"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(!mitigation.iter().any(|m| m.contains("heavy sources blocked")), "{mitigation:?}");
    assert!(!v["blocked"].as_array().unwrap().iter().any(|b| b["prefix"] == "198.51.100.66/32"));
    // The list's limits and fill are visible: in status (JSON and text) and /metrics.
    let l = &v["block_list"];
    assert_eq!((l["capacity"].as_u64(), l["entries_v4"].as_u64()), (Some(64), Some(64)), "{l}");
    assert_eq!(l["auto_block_cap"].as_u64(), Some(32), "{l}");
    assert!(l["refused"].as_u64().unwrap() >= 1, "{l}");
    let text = String::from_utf8(ctl(&f, &["status"]).stdout).unwrap();
    assert!(text.contains("block-list IPv4 64/64 FULL"), "{text}");
    let m = scrape(&lab);
    assert!(metric(&m, "tcpguard_block_failures_total") >= 1.0);
    assert_eq!(metric(&m, "tcpguard_block_list_capacity"), 64.0);
    assert_eq!(metric(&m, "tcpguard_block_list_entries{family=\"ipv4\"}"), 64.0);
    let log = d.stop();
    assert!(log.contains("blocking 198.51.100.66/32 failed"), "{log}");
    assert!(!log.contains("blocked 198.51.100.66/32"), "{log}");
    // A restart with a bigger configured list keeps the pinned one (and its
    // blocks), says so, and reports the size the list really has.
    f.write_config_policy("mode = \"auto\"\nmax-blocked = 32", "[datapath]\nblock-list-entries = 128\n");
    let d = Daemon::start(&lab, &f);
    let (v, _) = wait_status(&f, Duration::from_secs(5), "a status", |_| true);
    assert_eq!(v["block_list"]["capacity"].as_u64(), Some(64), "{}", v["block_list"]);
    let log = d.stop();
    let warned = "the pinned block-lists hold 64 entries each, not datapath.block-list-entries = 128";
    assert!(log.contains(warned), "{log}");
    drop(server);
}

#[test]
fn idle_connections_past_the_fd_limit_do_not_starve_the_daemon() {
    use std::os::unix::process::CommandExt as _;
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("fds");
    f.write_config("auto", "");
    let log = f.dir.join("daemon.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", lab.server.name))
        .args([BIN, "run", "--config"])
        .arg(f.config())
        .args(["--iface", &lab.srv_if])
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // A small fd limit, as a service might have: 256.
    // SAFETY: setrlimit in the child before exec; no allocation.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    while status(&f).is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon did not come up: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // 400 idle connections to /metrics, more than the daemon has fds.
    let conns = lab
        .server
        .run(|| (0..400).filter_map(|_| TcpStream::connect("127.0.0.1:9717").ok()).collect::<Vec<_>>())
        .unwrap();
    assert!(conns.len() >= 300, "{} connections", conns.len());
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = || {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let rest =
            s.rsplit_once(')').unwrap().1.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
        rest[11] + rest[12]
    };
    let c0 = ticks();
    let t0 = Instant::now();
    // The daemon keeps answering and ticking.
    let answered = (0..10)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(150));
            status(&f).is_some()
        })
        .count();
    let cpu = (ticks() - c0) as f64 / hz / t0.elapsed().as_secs_f64();
    drop(conns);
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(answered, 10, "status answered {answered} of 10 times\n{text}");
    assert!(cpu < 0.3, "daemon CPU {:.0} % of a core with idle connections\n{text}", cpu * 100.0);
}

#[test]
fn top_scans_off_the_daemon_loop() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("top");
    // Tracking mode throughout, so every source enters the table.
    f.write_config("monitor", "[datapath]\nattack-syn-rate = 0\n");
    let d = Daemon::start(&lab, &f);
    let spec = FloodSpec {
        rate: 0,
        count: 200_000,
        duration: Duration::from_secs(20),
        options: false,
        ..lab.client_flood(IpAddr::V4(SERVER_IP), PORT, Sources::Set("198.18.0.0/15".parse().unwrap(), 100_000))
    };
    lab.client.run(|| flood::run(&spec, &AtomicBool::new(false)).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Three clients scan the ~100k-entry table over and over (a scan takes
    // about a tick here); meanwhile commands served by the daemon's loop
    // must not wait behind them.
    let stop = Arc::new(AtomicBool::new(false));
    let scanners: Vec<_> = (0..3)
        .map(|_| {
            let (stop, sock) = (stop.clone(), f.socket());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let o = Command::new(BIN)
                        .args(["top", "--json", "--limit", "5", "--socket"])
                        .arg(&sock)
                        .output()
                        .unwrap();
                    assert!(o.status.success(), "{o:?}");
                    let top: Value = serde_json::from_slice(&o.stdout).unwrap();
                    assert_eq!(top.as_array().unwrap().len(), 5);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    for i in 0..8 {
        let t = Instant::now();
        let o = ctl(&f, &["block", &format!("203.0.113.{}", 10 + i), "--ttl", "1m"]);
        worst = worst.max(t.elapsed());
        assert!(o.status.success(), "{o:?}");
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, Ordering::Relaxed);
    let scans: usize = scanners.into_iter().map(|s| s.join().unwrap()).sum();
    d.stop();
    assert!(scans >= 3, "{scans} scans");
    assert!(worst < Duration::from_millis(150), "a block waited {worst:?} behind top scans");
}

#[test]
fn a_low_rate_flood_against_a_small_backlog_is_detected_naming_the_listener() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("lowrate");
    f.write_config("auto", "");
    // A listener with a small backlog, as many services keep.
    let server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 64).expect("listener");
    let d = Daemon::start(&lab, &f);
    assert_eq!(connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 5), 5);
    let stop = Arc::new(AtomicBool::new(false));
    // 600 spoofed SYN/s: well under min-syn-rate (1000).
    let started = Instant::now();
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 600, 20, stop.clone());
    let (v, _) = wait_status(&f, Duration::from_secs(3), "a low-rate attack", |v| v["attack"]["active"] == true);
    eprintln!("detected {:?} after the flood started", started.elapsed());
    let me = format!("{SERVER_IP}:{PORT}");
    let ev = v["attack"]["evidence"].as_array().unwrap();
    assert!(
        ev.iter().any(|e| e["rule"] == "listener-queue" && e["subject"] == me.as_str()),
        "the listener is named: {ev:#?}"
    );
    assert!(v["syn_per_sec"].as_f64().unwrap() < 1000.0, "{}", v["syn_per_sec"]);
    let l = &v["listeners"][0];
    assert_eq!(
        (l["addr"].as_str(), l["backlog"].as_u64(), l["pressured"].as_bool()),
        (Some(&*me), Some(64), Some(true))
    );
    let text = String::from_utf8(ctl(&f, &["status"]).stdout).unwrap();
    assert!(text.contains("listeners under pressure:") && text.contains(&me), "{text}");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    drop(d);
    drop(server);
}

#[test]
fn a_flash_crowd_of_real_clients_raises_nothing() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("crowd");
    f.write_config("auto", "");
    let server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 128).expect("listener");
    let d = Daemon::start(&lab, &f);
    // Four clients connecting back to back for 4 s: hundreds of real
    // connections per second, every handshake completing.
    let to = SocketAddr::new(IpAddr::V4(SERVER_IP), PORT);
    let t = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while t.elapsed() < Duration::from_secs(4) {
                        n += connect_n(&lab, to, 50);
                    }
                    n
                })
            })
            .collect();
        let mut seen_attack = false;
        while t.elapsed() < Duration::from_secs(4) {
            if status(&f).is_some_and(|v| v["attack"]["phase"] != "idle") {
                seen_attack = true;
            }
            std::thread::sleep(Duration::from_millis(TICK_MS / 2));
        }
        assert!(!seen_attack, "a flash crowd raised an attack");
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let rate = done as f64 / t.elapsed().as_secs_f64();
    eprintln!("flash crowd: {done} connections, {rate:.0}/s");
    assert!(rate > 200.0, "a crowd: {rate:.0} connections/s");
    let v = status(&f).unwrap();
    assert_eq!(v["attack"]["attacks_total"], 0, "{:#}", v["attack"]);
    drop(d);
    drop(server);
}

/// A real connect() scan (as `nmap -sT`) of closed ports from the client
/// namespace for `secs`: `threads` scanners, each pausing 10 ms every
/// `burst` probes when `burst` > 0. Returns the probes refused, and the
/// attack phases `status` showed meanwhile.
fn scan(lab: &Lab, f: &Files, threads: u16, burst: usize, secs: u64) -> (usize, Vec<String>) {
    let t = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    lab.client
                        .run(move || {
                            let (mut n, mut probes) = (0, 0usize);
                            let mut port = 10_000 + k;
                            while t.elapsed() < Duration::from_secs(secs) {
                                let to = SocketAddr::new(IpAddr::V4(SERVER_IP), port);
                                if let Err(e) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                                    n += usize::from(e.kind() == std::io::ErrorKind::ConnectionRefused);
                                }
                                port = if port > 60_000 { 10_000 + k } else { port + threads };
                                probes += 1;
                                if burst > 0 && probes % burst == 0 {
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                            }
                            n
                        })
                        .unwrap()
                })
            })
            .collect();
        let mut phases = Vec::new();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Some(v) = status(f) {
                phases.push(v["attack"]["phase"].as_str().unwrap_or("?").to_string());
            }
            std::thread::sleep(Duration::from_millis(TICK_MS / 2));
        }
        (hs.into_iter().map(|h| h.join().unwrap()).sum(), phases)
    })
}

#[test]
fn a_port_scan_across_closed_ports_raises_no_syn_flood_alarm() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("scan");
    f.write_config("auto", "");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    // A paced scan, well over the SYN-rate floor (the listener's backlog,
    // 128/s) and never completing: the datapath tracks every SYN and the
    // egress program sees each refused.
    let (refused, phases) = scan(&lab, &f, 1, 20, 3);
    eprintln!("paced scan: {refused} closed ports probed, {:.0}/s", refused as f64 / 3.0);
    assert!(refused > 1_000, "a real scan: {refused} probes");
    assert!(phases.iter().all(|p| p == "idle"), "the scan raised an alarm: {phases:?}");
    let c = status(&f).unwrap()["counters"].clone();
    assert!(c["syn_refused"].as_u64().unwrap() as f64 >= refused as f64 * 0.9, "refused on egress: {c:#}");
    // Flat out (tens of thousands of probes/s): the datapath's own attack
    // mode takes over and sees no listener for them; still no alarm.
    let (refused, phases) = scan(&lab, &f, 4, 0, 3);
    eprintln!("full-speed scan: {refused} closed ports probed, {:.0}/s", refused as f64 / 3.0);
    assert!(phases.iter().all(|p| p == "idle"), "the scan raised an alarm: {phases:?}");
    let v = status(&f).unwrap();
    let c = &v["counters"];
    let seen = c["syn_refused"].as_u64().unwrap() + c["cookie_no_listener"].as_u64().unwrap();
    assert!(seen as f64 >= refused as f64 * 0.9, "refused SYNs counted: {c:#}");
    assert_eq!(v["attack"]["attacks_total"], 0);
    drop(d);
    drop(server);
}

#[test]
fn half_open_agrees_with_the_kernels_syn_recv_during_a_flood() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    // Kernel cookies off; SYN-ACKs retried 3 times: a request lives 1+2+4+8 = 15 s.
    lab.server.sysctl("net.ipv4.tcp_syncookies", "0").unwrap();
    lab.server.sysctl("net.ipv4.tcp_synack_retries", "3").unwrap();
    lab.server.sysctl("net.ipv4.tcp_max_syn_backlog", "16384").unwrap();
    let f = Files::new("synrecv");
    // The half-open timeout is that span; monitor: nothing answers for the kernel.
    f.write_config("monitor", "[datapath]\nhalf-open-timeout-secs = 15\nattack-syn-rate = 0\n");
    let server = Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 4096).expect("listener");
    let d = Daemon::start(&lab, &f);
    let stop = Arc::new(AtomicBool::new(false));
    // 100 SYN/s keeps the queue under half the backlog (1,500 of 4,096): past
    // half, the kernel prunes old requests early (fewer retries).
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 100, 60, stop.clone());
    // Past one whole span, so requests are both made and dropped.
    std::thread::sleep(Duration::from_secs(18));
    let ss = || {
        lab.server
            .run(|| {
                let o = Command::new("ss").args(["-Htan", "state", "syn-recv"]).output().expect("ss");
                String::from_utf8_lossy(&o.stdout).lines().count() as f64
            })
            .unwrap()
    };
    for _ in 0..4 {
        let kernel = ss();
        let v = status(&f).unwrap();
        assert_eq!(v["half_open_basis"], "server", "counted from the server's SYN-ACKs");
        let ours = v["half_open"].as_f64().unwrap();
        let kernel2 = ss();
        let k = f64::midpoint(kernel, kernel2);
        eprintln!("half-open: tcpguard {ours}, ss state syn-recv {k}");
        assert!(k > 1000.0, "the flood filled the SYN queue: {k}");
        assert!((ours - k).abs() <= 0.1 * k, "tcpguard {ours} vs kernel {k}");
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    drop(d);
    drop(server);
}

#[test]
fn a_flood_spread_over_one_subnet_is_blocked_as_the_subnet() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("subnet");
    f.write_config("auto", "");
    let server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    // 20 addresses of 198.51.100.0/24 at 150 SYN/s each: every one under
    // the 200 SYN/s heavy rate, the /24 at 3,000.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Set("198.51.100.0/24".parse().unwrap(), 20), 3_000, 30, stop.clone());
    let (v, waited) = wait_status(&f, Duration::from_secs(5), "the /24 blocked", |v| {
        v["blocked"].as_array().unwrap().iter().any(|b| b["prefix"] == "198.51.100.0/24")
    });
    eprintln!("/24 blocked {waited:?} after the flood started");
    assert_eq!(v["attack"]["kind"], "few-heavy-sources", "{:#}", v["attack"]);
    assert!(
        !v["blocked"].as_array().unwrap().iter().any(|b| b["prefix"].as_str().unwrap().ends_with("/32")),
        "no single address was heavy: {:#}",
        v["blocked"]
    );
    std::thread::sleep(Duration::from_millis(2 * TICK_MS));
    let before = status(&f).unwrap()["counters"]["drop_blocked"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after = status(&f).unwrap()["counters"]["drop_blocked"].as_u64().unwrap();
    assert!(after > before + 500, "the /24 is dropped in XDP: {before} -> {after}");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    d.stop();

    // The same flood with one address of the /24 allow-listed: the
    // aggregate is never blocked (its sources are not heavy either).
    let f2 = Files::new("subnet-allow");
    f2.write_config("auto", "[datapath]\nallow = [\"127.0.0.0/8\", \"198.51.100.200\"]\n");
    let d = Daemon::start(&lab, &f2);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Set("198.51.100.0/24".parse().unwrap(), 20), 3_000, 30, stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    let v = status(&f2).unwrap();
    assert!(v["blocked"].as_array().unwrap().is_empty(), "{:#}", v["blocked"]);
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let log = d.stop();
    assert!(log.contains("not blocking the heavy aggregate 198.51.100.0/24"), "{log}");
    drop(server);
}

#[test]
fn a_deleted_interface_shows_as_detached_in_metrics_and_the_log() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("detach");
    f.write_config("auto", "");
    let d = Daemon::start(&lab, &f);
    let series = format!("tcpguard_datapath_attached{{interface=\"{}\"}}", lab.srv_if);
    assert_eq!(metric(&scrape(&lab), &series), 1.0);
    // Deleting one end of the veth pair deletes both: the XDP link goes defunct.
    lab.server.ip(&["link", "del", &lab.srv_if]).unwrap();
    let t = Instant::now();
    while metric(&scrape(&lab), &series) != 0.0 {
        assert!(t.elapsed() < Duration::from_secs(3), "still reported attached:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status(&f).is_some(), "the daemon must keep running (other interfaces, the control socket)");
    let log = d.stop();
    assert!(log.contains("XDP is no longer attached"), "{log}");
}

/// Poll `done` every 200 ms until it holds; fail naming `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    t.elapsed()
}

/// GET over HTTP/1.0 from inside the server namespace; the body.
fn http_get(lab: &Lab, port: u16, path: &str) -> Option<String> {
    lab.server
        .run(|| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
        })
        .unwrap()
}

/// Prometheus' view of one alert: None (inactive), "pending" or "firing".
fn alert_state(lab: &Lab, port: u16, name: &str) -> Option<String> {
    let body = http_get(lab, port, "/api/v1/alerts")?;
    let v: Value = serde_json::from_str(&body).expect("alerts API answers JSON");
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .map(|a| a["state"].as_str().unwrap_or("").to_string())
}

/// The Debian `prometheus` binary scrapes a lab daemon every second with the
/// shipped alerting rules: a spoofed flood makes TcpguardSynFloodActive fire
/// (seen through Prometheus' HTTP API), the end of the flood resolves it, and
/// stopping the daemon makes TcpguardDown pending.
#[test]
fn prometheus_fires_the_attack_alert_and_resolves_it() {
    const PROM_PORT: u16 = 9790;
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("prom");
    f.write_config("auto", "");
    let _server = serve(&lab);
    let d = Daemon::start(&lab, &f);
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/prometheus/tcpguard-alerts.yml");
    let prom_cfg = f.dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: tcpguard\n    static_configs:\n      - targets: ['127.0.0.1:9717']\n"
        ),
    )
    .unwrap();
    let prom_log = f.dir.join("prometheus.log");
    let mut prom = lab
        .server
        .command("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!("--storage.tsdb.path={}", f.dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&prom_log).unwrap())
        .spawn()
        .expect("prometheus not found: `cargo xtask prereqs` installs Debian's prometheus package");
    /// Ends prometheus; on a failing test, shows its log.
    struct Stop<'a>(&'a mut Child, PathBuf);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if std::thread::panicking() {
                eprintln!("prometheus log:\n{}", std::fs::read_to_string(&self.1).unwrap_or_default());
            }
        }
    }
    let prom = Stop(&mut prom, prom_log);

    // Prometheus is up and scraping tcpguard; the rules are loaded.
    let ready = || {
        http_get(&lab, PROM_PORT, "/api/v1/targets").is_some_and(|b| b.contains("\"health\":\"up\""))
            && http_get(&lab, PROM_PORT, "/api/v1/rules").is_some_and(|b| b.contains("TcpguardSynFloodActive"))
    };
    wait_until(Duration::from_secs(30), "prometheus scraping tcpguard with the rules loaded", ready);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert_state(&lab, PROM_PORT, "TcpguardSynFloodActive"), None, "fires with no flood");

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 20_000, 60, stop.clone());
    wait_until(Duration::from_secs(15), "TcpguardSynFloodActive firing", || {
        alert_state(&lab, PROM_PORT, "TcpguardSynFloodActive").as_deref() == Some("firing")
    });
    let fired = started.elapsed();
    let body = http_get(&lab, PROM_PORT, "/api/v1/alerts").unwrap();
    assert!(body.contains("\"summary\":\"SYN flood on 127.0.0.1:9717\""), "{body}");
    stop.store(true, Ordering::Relaxed);
    assert!(flood.join().unwrap().sent > 10_000);
    let resolved = wait_until(Duration::from_secs(20), "TcpguardSynFloodActive resolved", || {
        alert_state(&lab, PROM_PORT, "TcpguardSynFloodActive").is_none()
    });
    eprintln!("prometheus: attack alert firing {fired:?} after flood start, resolved {resolved:?} after it stopped");

    d.stop();
    wait_until(Duration::from_secs(10), "TcpguardDown pending with the daemon stopped", || {
        alert_state(&lab, PROM_PORT, "TcpguardDown").as_deref() == Some("pending")
    });
    drop(prom);
}

/// SIGUSR2 hands over: the daemon exits with 75 (the unit restarts on it)
/// leaving XDP attached and sysctls restored; the next start adopts the link.
#[test]
fn sigusr2_hands_over_without_detaching() {
    let _serial = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let f = Files::new("usr2");
    f.write_config("auto", "");
    let mut d = Daemon::start(&lab, &f);
    assert!(ctl(&f, &["block", "203.0.113.9/32"]).status.success());
    d.signal(libc::SIGUSR2);
    let t = Instant::now();
    let st = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no exit on SIGUSR2:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st.code(), Some(75), "{}", d.log_text());
    assert!(xdp_attached(&lab), "handover detached XDP:\n{}", d.log_text());
    assert!(d.log_text().contains("staying attached"), "{}", d.log_text());
    let d2 = Daemon::start(&lab, &f);
    let v = status(&f).unwrap();
    assert_eq!(v["interfaces"][0]["adopted"], true, "{v:#}");
    assert!(v["blocked"].to_string().contains("203.0.113.9/32"), "{v:#}");
    let log = d2.stop();
    assert!(log.contains("detached"), "{log}");
    assert!(!xdp_attached(&lab));
}

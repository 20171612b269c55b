//! Upstream (BGP FlowSpec) against real gobgpd (root): a "server" namespace
//! whose gobgpd tcpguard drives over its gRPC API, peered by eBGP
//! (ipv4-flowspec, ipv6-flowspec) with a "router" namespace's gobgpd, as an
//! operator's edge router would be. The client alone first (what it
//! reconciles reaches the router's RIB, goes when withdrawn, and never
//! touches a path it did not mark); then `tcpguard run` in the lab with
//! real floods: blocks and rate limits in the router's RIB within 2 s, the
//! guardrails, a clean stop, kill -9 and restart, gobgpd down and back.

#![allow(clippy::too_many_lines)] // end-to-end scenarios read top to bottom
#![allow(clippy::float_cmp)] // exact values read back from metrics

mod common;

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{e2e::*, require_root, serial};
use serde_json::Value;
use tcpguard::{
    lab::{
        flood::{self, FloodReport, FloodSpec, Sources},
        ip, Lab, Netns, Server, SERVER_IP6,
    },
    upstream::{from_path, Action, Client, Rule},
};

const API_PORT: u16 = 50_151;

/// gobgpd in a namespace, stopped (by PID) on drop.
struct Gobgpd {
    child: Option<Child>,
    ns: String,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Gobgpd {
    fn start(ns: &Netns, tag: &str, asn: u32, me: &str, peer: &str, peer_as: u32) -> Self {
        let dir = std::env::temp_dir().join(format!("tcpguard-upstream-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("gobgpd.toml");
        std::fs::write(
            &cfg,
            format!(
                "[global.config]\n  as = {asn}\n  router-id = \"{me}\"\n  port = 179\n  local-address-list = \
                 [\"{me}\"]\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer}\"\n    peer-as = \
                 {peer_as}\n  [neighbors.timers.config]\n    connect-retry = 1\n  [[neighbors.afi-safis]]\n    \
                 [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-flowspec\"\n  [[neighbors.afi-safis]]\n    \
                 [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-flowspec\"\n"
            ),
        )
        .unwrap();
        let log = dir.join("gobgpd.log");
        let mut g = Gobgpd { child: None, ns: ns.name.clone(), cfg, log };
        g.resume();
        g
    }

    /// Start (again) with the same config.
    fn resume(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "gobgpd", "-f"])
            .arg(&self.cfg)
            .args(["--api-hosts", &format!("127.0.0.1:{API_PORT}"), "--log-level", "info"])
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .expect("gobgpd (Debian package gobgpd; `cargo xtask prereqs` installs it)");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.log.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The operator's edge: a router namespace whose gobgpd peers by eBGP with
/// the server's gobgpd (which tcpguard drives), over a veth of their own.
struct Edge {
    router: Netns,
    server_bgp: Gobgpd,
    _router_bgp: Gobgpd,
    /// The server's end of its link to the router.
    s_if: String,
}

impl Edge {
    fn new(server: &Netns) -> Self {
        let router = Netns::new("r").unwrap();
        let n = std::process::id() % 100_000;
        let (s_if, r_if) = (format!("tgu{n}"), format!("tgr{n}"));
        ip(&[
            "link",
            "add",
            &s_if,
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            &r_if,
            "netns",
            &router.name,
        ])
        .unwrap();
        for (ns, dev, addr) in [(server, &s_if, "10.255.100.1/30"), (&router, &r_if, "10.255.100.2/30")] {
            ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
            ns.ip(&["link", "set", "lo", "up"]).unwrap();
        }
        let server_bgp = Gobgpd::start(server, "server", 64_512, "10.255.100.1", "10.255.100.2", 64_513);
        let router_bgp = Gobgpd::start(&router, "router", 64_513, "10.255.100.2", "10.255.100.1", 64_512);
        wait_session(server);
        Edge { router, server_bgp, _router_bgp: router_bgp, s_if }
    }
}

/// The server's gobgpd has its session with the router up.
fn wait_session(server: &Netns) {
    let t = Instant::now();
    loop {
        let peers = in_ns(server, async {
            match Client::connect(&api()).await {
                Ok(mut c) => c.peers().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        });
        if peers.iter().any(|(a, s)| a == "10.255.100.2" && s == "established") {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no BGP session: {peers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run an async block on a runtime inside `ns` (gobgpd's API is on that
/// namespace's loopback).
fn in_ns<T: Send>(ns: &Netns, f: impl std::future::Future<Output = T> + Send) -> T {
    ns.run(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)).unwrap()
}

fn api() -> String {
    format!("127.0.0.1:{API_PORT}")
}

/// The rules in the router's RIB (received from the server).
fn router_rules(router: &Netns) -> Vec<Rule> {
    in_ns(router, async {
        let mut c = Client::connect(&api()).await.unwrap();
        let mut out = Vec::new();
        for v6 in [false, true] {
            out.extend(c.global_paths(v6).await.unwrap().iter().filter_map(from_path));
        }
        out
    })
}

fn wait_router(router: &Netns, what: &str, pred: impl Fn(&[Rule]) -> bool) -> Duration {
    let t = Instant::now();
    loop {
        let rules = router_rules(router);
        if pred(&rules) {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "router: {what} not seen; its RIB: {rules:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reconcile_announces_to_the_router_withdraws_orphans_and_leaves_others_alone() {
    let _g = serial();
    require_root();
    let server = Netns::new("u").unwrap();
    let edge = Edge::new(&server);
    let router = &edge.router;

    let block4 = Rule {
        dst: "198.18.0.1/32".parse().unwrap(),
        src: Some("203.0.113.66/32".parse().unwrap()),
        dports: vec![8080],
        syn_only: true,
        action: Action::Discard,
    };
    let block6 = Rule {
        dst: "fd00:7467::1/128".parse().unwrap(),
        src: Some("2001:db8:66::/48".parse().unwrap()),
        dports: vec![8080],
        syn_only: true,
        action: Action::Discard,
    };
    let limit = Rule {
        dst: "198.18.0.1/32".parse().unwrap(),
        src: None,
        dports: vec![8080],
        syn_only: true,
        action: Action::RateLimit { bytes_per_sec: 125_000.0 },
    };
    let desired = vec![block4.clone(), block6.clone(), limit.clone()];
    let d2 = desired.clone();
    let r = in_ns(&server, async move { Client::connect(&api()).await.unwrap().reconcile(&d2).await.unwrap() });
    assert_eq!((r.added, r.withdrawn, r.kept), (3, 0, 0));
    let took = wait_router(router, "the three rules", |rules| desired.iter().all(|d| rules.contains(d)));
    eprintln!("reconcile -> all three rules in the router's RIB: {took:?}");
    assert!(took <= Duration::from_secs(2), "{took:?}");
    // The same desired set again: nothing changes.
    let d2 = desired.clone();
    let r = in_ns(&server, async move { Client::connect(&api()).await.unwrap().reconcile(&d2).await.unwrap() });
    assert_eq!((r.added, r.withdrawn, r.kept), (0, 0, 3));

    // The operator's own FlowSpec rule, not marked as tcpguard's.
    let out = Command::new("ip")
        .args(["netns", "exec", &server.name, "gobgp", "--port", &API_PORT.to_string()])
        .args([
            "global",
            "rib",
            "-a",
            "ipv4-flowspec",
            "add",
            "match",
            "destination",
            "198.18.0.9/32",
            "then",
            "discard",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let operators = |rules: &[Rule]| rules.iter().any(|r| r.dst.to_string() == "198.18.0.9/32");
    wait_router(router, "the operator's rule", operators);

    // A block ended: only it goes; the rate limit stays.
    let keep = vec![limit.clone()];
    let r = in_ns(&server, async move { Client::connect(&api()).await.unwrap().reconcile(&keep).await.unwrap() });
    assert_eq!((r.added, r.withdrawn, r.kept), (0, 2, 1));
    let took = wait_router(router, "the blocks withdrawn", |rules| {
        !rules.contains(&block4) && !rules.contains(&block6) && rules.contains(&limit) && operators(rules)
    });
    eprintln!("withdraw -> gone from the router's RIB: {took:?}");
    assert!(took <= Duration::from_secs(2), "{took:?}");

    // A new run (after a crash) that wants nothing: its orphan is withdrawn,
    // the operator's rule stays.
    let r = in_ns(&server, async { Client::connect(&api()).await.unwrap().reconcile(&[]).await.unwrap() });
    assert_eq!((r.added, r.withdrawn, r.kept), (0, 1, 0));
    wait_router(router, "only the operator's rule", |rules| rules.len() == 1 && operators(rules));
    let ours = in_ns(&server, async { Client::connect(&api()).await.unwrap().announced().await.unwrap() });
    assert!(ours.is_empty(), "{ours:?}");
}

/// The daemon's config: the lab's, port 8080 protected, upstream on with
/// a reconcile every second; `upstream` and `datapath` lines added.
fn upstream_config(f: &Files, datapath: &str, upstream: &str) {
    f.write_config(
        "auto",
        &format!(
            "[datapath]\nports = [{PORT}]\nattack-syn-rate = 0\n{datapath}\n[upstream]\nenabled = true\napi = \
             \"127.0.0.1:{API_PORT}\"\nreconcile-secs = 1\n{upstream}\n"
        ),
    );
}

fn discard(dst: &str, src: &str) -> Rule {
    Rule {
        dst: dst.parse().unwrap(),
        src: Some(src.parse().unwrap()),
        dports: vec![PORT],
        syn_only: true,
        action: Action::Discard,
    }
}

/// The block status shows for `addr` (a host or an aggregate holding it).
fn block_of(v: &Value, addr: IpAddr) -> Option<String> {
    v["blocked"].as_array().unwrap().iter().find_map(|b| {
        let p: tcpguard::net::Prefix = b["prefix"].as_str()?.parse().ok()?;
        p.contains(addr).then(|| p.to_string())
    })
}

/// A single-source flood until blocked; the block's prefix and when status showed it.
fn flood_until_blocked(
    lab: &Lab,
    f: &Files,
    dst: IpAddr,
    bad: IpAddr,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<FloodReport>, String, Instant) {
    let flood = start_flood_to(lab, dst, Sources::Single(bad), 5_000, 60, stop);
    let (v, _) = wait_status(f, Duration::from_secs(8), "the flood's source blocked", |v| block_of(v, bad).is_some());
    (flood, block_of(&v, bad).unwrap(), Instant::now())
}

fn upstream_of(f: &Files) -> Value {
    status(f).expect("status")["upstream"].clone()
}

#[test]
fn a_blocked_flood_source_reaches_the_routers_rib_and_leaves_with_its_block() {
    let _g = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let edge = Edge::new(&lab.server);
    let f = Files::new("upblock");
    upstream_config(&f, "", "");
    let _srv = serve(&lab);
    let v6: IpAddr = SERVER_IP6.parse().unwrap();
    let _srv6 = Server::start(&lab.server, SocketAddr::new(v6, PORT), 128).unwrap();
    let d = Daemon::start(&lab, &f);

    for (dst, bad, host) in [
        (IpAddr::V4(tcpguard::lab::SERVER_IP), "198.51.100.66", "198.18.0.1/32"),
        (v6, "2001:db8:66::66", "fd00:7467::1/128"),
    ] {
        let bad: IpAddr = bad.parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flood, blocked, seen) = flood_until_blocked(&lab, &f, dst, bad, stop.clone());
        let want = discard(host, &blocked);
        wait_router(&edge.router, &format!("{want}"), |r| r.contains(&want));
        let took = seen.elapsed();
        eprintln!("{bad}: blocked as {blocked}; block seen in status -> discard rule in the router's RIB: {took:?}");
        assert!(took <= Duration::from_secs(2), "{took:?}");
        // Only that rule: one destination of the source's family.
        assert_eq!(router_rules(&edge.router), std::slice::from_ref(&want));
        let u = upstream_of(&f);
        assert_eq!(u["reachable"], true, "{u:#}");
        assert_eq!(u["peers"][0]["state"], "established", "{u:#}");
        let a = &u["announcements"][0];
        assert_eq!((a["kind"].as_str(), a["src"].as_str()), (Some("block"), Some(blocked.as_str())), "{u:#}");
        assert!(a["ttl_secs"].as_f64().unwrap() > 0.0, "every announcement has a TTL: {u:#}");
        let m = scrape(&lab);
        assert_eq!(metric(&m, "tcpguard_upstream_announcements{kind=\"block\"}"), 1.0);
        assert_eq!(metric(&m, "tcpguard_upstream_reachable"), 1.0);
        assert_eq!(metric(&m, "tcpguard_upstream_peer_established{peer=\"10.255.100.2\"}"), 1.0);
        // `tcpguard upstream` says the same in words.
        let o = ctl(&f, &["upstream"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains(&format!("from {blocked}")) && text.contains("established"),
            "{text}"
        );

        stop.store(true, Ordering::Relaxed);
        flood.join().unwrap();
        // Unblocked once the flood is over (while its source is still seen
        // heavy, the policy would block it again, and rightly).
        wait_status(&f, Duration::from_secs(15), "the attack over", |v| v["attack"]["active"] == false);
        let o = ctl(&f, &["unblock", &blocked]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let took = wait_router(&edge.router, "the rule gone", |r| !r.contains(&want));
        eprintln!("{bad}: unblock -> gone from the router's RIB: {took:?}");
        assert!(took <= Duration::from_secs(2), "{took:?}");
    }
    let log = d.stop();
    assert!(log.contains("upstream: announcing tcp to 198.18.0.1/32 from 198.51.100.66"), "{log}");
}

#[test]
fn host_capacity_rate_limits_upstream_and_the_guardrails_hold() {
    let _g = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let edge = Edge::new(&lab.server);
    let f = Files::new("upcap");
    upstream_config(
        &f,
        "allow = [\"127.0.0.0/8\", \"::1/128\", \"198.51.100.10/32\"]",
        "host-capacity = 3000\nhold-down-secs = 2\nmax-announcements = 3\n",
    );
    let _srv = serve(&lab);
    let d = Daemon::start(&lab, &f);

    // A spoofed flood over the host's capacity.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood_to(
        &lab,
        IpAddr::V4(tcpguard::lab::SERVER_IP),
        Sources::Random("198.19.0.0/16".parse().unwrap()),
        8_000,
        60,
        stop.clone(),
    );
    let limit = |dst: &str| Rule {
        dst: dst.parse().unwrap(),
        src: None,
        dports: vec![PORT],
        syn_only: true,
        action: Action::RateLimit { bytes_per_sec: 1_000_000.0 },
    };
    let (l4, l6) = (limit("198.18.0.1/32"), limit("fd00:7467::1/128"));
    let (_, _) =
        wait_status(&f, Duration::from_secs(5), "a spoofed flood", |v| v["attack"]["kind"] == "spoofed-random");
    let decided = wait_status(&f, Duration::from_secs(3), "the rate limit decided", |v| {
        v["upstream"]["announcements"].as_array().unwrap().iter().any(|a| a["kind"] == "rate-limit")
    });
    let took = wait_router(&edge.router, "the SYN rate limits", |r| r.contains(&l4) && r.contains(&l6));
    eprintln!(
        "over host-capacity: rate limit decided {:?} after the attack was named; in the router's RIB {took:?} later",
        decided.1
    );
    assert!(took <= Duration::from_secs(2), "{took:?}");
    // A block made during a spoofed flood is not announced: its sources are forged.
    let o = ctl(&f, &["block", "203.0.113.77", "--ttl", "2m"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (v, _) = wait_status(&f, Duration::from_secs(2), "the source rule held back", |v| {
        v["upstream"]["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("spoofed-random"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let rib = router_rules(&edge.router);
    assert!(rib.iter().all(|r| r.src.is_none()), "no source rule in a spoofed flood: {rib:?} {:#}", v["upstream"]);

    // The flood ends; the rate limits stay for the hold-down after the attack.
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    wait_status(&f, Duration::from_secs(15), "the attack over", |v| v["attack"]["active"] == false);
    assert!(router_rules(&edge.router).contains(&l4), "still there at the attack's end");
    let gone = wait_router(&edge.router, "the rate limits gone", |r| !r.contains(&l4) && !r.contains(&l6));
    eprintln!("attack over -> rate limits gone from the router's RIB: {gone:?} (upstream.hold-down-secs = 2)");
    assert!(gone >= Duration::from_millis(1500) && gone <= Duration::from_secs(4), "{gone:?}");
    // The flood over, the operator's block is a real source again: announced.
    let b77 = discard("198.18.0.1/32", "203.0.113.77/32");
    wait_router(&edge.router, "the block announced after the spoofed flood", |r| r.contains(&b77));

    // Guardrails: a /8 (forced locally) and a prefix around an allow-listed
    // address are blocked here, never announced.
    for (prefix, force, why) in [
        ("10.0.0.0/8", true, "wider than /24 (upstream.widest-source-v4)"),
        ("198.51.100.0/24", false, "covers the allow-listed 198.51.100.10/32"),
    ] {
        let mut args = vec!["block", prefix, "--ttl", "2m"];
        if force {
            args.push("--force");
        }
        let o = ctl(&f, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        wait_status(&f, Duration::from_secs(2), why, |v| {
            v["upstream"]["refused"].as_array().unwrap().iter().any(|r| r["reason"].as_str().unwrap().contains(why))
        });
    }
    // The cap (3): two more of four blocks go upstream, two are held back.
    for n in 1..=4 {
        let o = ctl(&f, &["block", &format!("203.0.113.{n}"), "--ttl", "2m"]);
        assert!(o.status.success());
    }
    let (v, _) = wait_status(&f, Duration::from_secs(2), "the cap", |v| {
        v["upstream"]["refused"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["reason"].as_str().unwrap().contains("max-announcements (3)"))
            .count()
            == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let rib = router_rules(&edge.router);
    assert_eq!(rib.len(), 3, "{rib:?} {:#}", v["upstream"]);
    for r in &rib {
        let src = r.src.unwrap();
        assert!(src.len >= 24, "{r}");
        assert!(!src.contains("198.51.100.10".parse().unwrap()), "an allow-listed address inside {r}");
    }
    // By hand: the same cap; withdraw one and there is room.
    let o = ctl(&f, &["upstream", "announce", "--src", "203.0.113.200", "--ttl", "3s"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("max-announcements"), "{o:?}");
    let o = ctl(&f, &["upstream", "withdraw", "--src", "203.0.113.77/32"]);
    assert!(o.status.success(), "{o:?}");
    wait_router(&edge.router, "withdrawn by hand", |r| !r.contains(&b77));
    let o = ctl(&f, &["upstream", "announce", "--src", "203.0.113.200", "--ttl", "3s"]);
    assert!(o.status.success(), "{o:?}");
    let by_hand = discard("198.18.0.1/32", "203.0.113.200/32");
    wait_router(&edge.router, "announced by hand", |r| r.contains(&by_hand));
    let o = ctl(&f, &["upstream", "--json"]);
    let u: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(u["announcements"].as_array().unwrap().iter().any(|a| a["kind"] == "operator"), "{u:#}");
    let took = wait_router(&edge.router, "the TTL ran out", |r| !r.contains(&by_hand));
    assert!(took <= Duration::from_secs(5), "{took:?}");
    assert_eq!(metric(&scrape(&lab), "tcpguard_upstream_announcements{kind=\"operator\"}"), 0.0);

    // A reload that turns upstream off withdraws every rule; the blocks stay local.
    assert_eq!(router_rules(&edge.router).len(), 3);
    let text = std::fs::read_to_string(f.config()).unwrap().replace("enabled = true", "enabled = false");
    std::fs::write(f.config(), text).unwrap();
    d.signal(libc::SIGHUP);
    let took = wait_router(&edge.router, "an empty RIB after the reload", <[Rule]>::is_empty);
    eprintln!("reload with upstream off -> router's RIB empty: {took:?}");
    assert!(took <= Duration::from_secs(2), "{took:?}");
    let (v, _) = wait_status(&f, Duration::from_secs(2), "no upstream in status", |v| v["upstream"].is_null());
    assert!(block_of(&v, "203.0.113.1".parse().unwrap()).is_some(), "the local blocks stay");
    assert_eq!(metric(&scrape(&lab), "tcpguard_upstream_enabled"), 0.0);
    d.stop();
}

#[test]
fn clean_stop_kill_9_restart_and_gobgpd_down_and_back() {
    let _g = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let mut edge = Edge::new(&lab.server);
    let f = Files::new("uplife");
    upstream_config(&f, "", "");
    let _srv = serve(&lab);
    let d = Daemon::start(&lab, &f);
    let bad: IpAddr = "198.51.100.66".parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flood, blocked, _) = flood_until_blocked(&lab, &f, IpAddr::V4(tcpguard::lab::SERVER_IP), bad, stop.clone());
    let standing = discard("198.18.0.1/32", &blocked);
    let short = discard("198.18.0.1/32", "203.0.113.6/32");
    assert!(ctl(&f, &["block", "203.0.113.6", "--ttl", "4s"]).status.success());
    wait_router(&edge.router, "both rules", |r| r.contains(&standing) && r.contains(&short));

    // kill -9: nothing withdraws; the short block ends while no daemon runs.
    d.kill9();
    std::thread::sleep(Duration::from_secs(5));
    let rib = router_rules(&edge.router);
    assert!(rib.contains(&standing) && rib.contains(&short), "{rib:?}");
    let started = Instant::now();
    let d = Daemon::start(&lab, &f);
    let took = wait_router(&edge.router, "the stale rule withdrawn, the standing one kept", |r| {
        r.contains(&standing) && !r.contains(&short)
    });
    let took = started.elapsed().max(took);
    eprintln!("restart after kill -9 -> stale rule withdrawn: {took:?}");
    assert!(took <= Duration::from_secs(3), "{took:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let log = d.log_text();
    assert!(log.contains("0 announced, 1 withdrawn, 1 kept"), "the standing rule is kept, never withdrawn: {log}");

    // gobgpd stops mid-attack: local blocking goes on, the failure shows.
    edge.server_bgp.stop();
    let (v, _) = wait_status(&f, Duration::from_secs(4), "gobgpd unreachable", |v| v["upstream"]["reachable"] == false);
    assert!(v["upstream"]["error"].as_str().unwrap().contains("127.0.0.1:50151"), "{:#}", v["upstream"]);
    let drops = |v: &Value| v["counters"]["drop_blocked"].as_u64().unwrap();
    let before = drops(&v);
    std::thread::sleep(Duration::from_secs(2));
    let v = status(&f).unwrap();
    assert!(drops(&v) > before + 5_000, "local blocking goes on: {} -> {}", before, drops(&v));
    assert!(block_of(&v, bad).is_some());
    let m = scrape(&lab);
    assert_eq!(metric(&m, "tcpguard_upstream_reachable"), 0.0);
    assert!(metric(&m, "tcpguard_upstream_failures_total") >= 2.0);
    assert_eq!(metric(&m, "tcpguard_upstream_enabled"), 1.0, "what the alert TcpguardUpstreamUnreachable reads");
    let o = ctl(&f, &["upstream"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("UNREACHABLE"), "{o:?}");
    assert_eq!(d.log_text().matches("local mitigation goes on").count(), 1, "logged once: {}", d.log_text());
    // The router lost the session, and with it the rule.
    wait_router(&edge.router, "the rule gone with the session", <[Rule]>::is_empty);
    // gobgpd back: the next reconcile restores the rule.
    edge.server_bgp.resume();
    let back = Instant::now();
    wait_session(&lab.server);
    wait_router(&edge.router, "the rule restored", |r| r.contains(&standing));
    eprintln!("gobgpd restarted -> rule back in the router's RIB: {:?}", back.elapsed());
    wait_status(&f, Duration::from_secs(3), "reachable again", |v| v["upstream"]["reachable"] == true);
    assert!(d.log_text().contains("answers again"), "{}", d.log_text());

    // A clean stop withdraws everything.
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let t = Instant::now();
    let log = d.stop();
    let took = wait_router(&edge.router, "an empty RIB", <[Rule]>::is_empty);
    let took = t.elapsed().max(took);
    eprintln!("clean stop -> router's RIB empty: {took:?}");
    assert!(took <= Duration::from_secs(2), "{took:?}");
    assert!(log.contains("every tcpguard rule withdrawn"), "{log}");
}

/// The lab's stand-in for a router's FlowSpec engine: the router's FlowSpec
/// RIB (IPv4) written as an nftables forward chain in its namespace, each
/// rule with a counter. Returns the ruleset applied.
fn apply_flowspec_as_nft(router: &Netns) -> String {
    let mut rules = String::new();
    for r in router_rules(router).iter().filter(|r| !r.v6()) {
        let mut m = format!("ip daddr {}", r.dst);
        if let Some(s) = r.src {
            m = format!("ip saddr {s} {m}");
        }
        m.push_str(" meta l4proto tcp");
        if !r.dports.is_empty() {
            let ports: Vec<String> = r.dports.iter().map(ToString::to_string).collect();
            m = format!("{m} tcp dport {{ {} }}", ports.join(", "));
        }
        if r.syn_only {
            m.push_str(" tcp flags & (syn | ack) == syn");
        }
        let then = match r.action {
            Action::Discard => "counter drop".to_string(),
            Action::RateLimit { bytes_per_sec } => {
                format!("limit rate over {} bytes/second counter drop", bytes_per_sec as u64)
            }
        };
        let _ = writeln!(rules, "    {m} {then}");
    }
    let text = format!(
        "flush ruleset\ntable inet flowspec {{\n  chain forward {{\n    type filter hook forward priority 0; policy \
         accept;\n{rules}  }}\n}}\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &router.name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft (Debian package nftables; `cargo xtask prereqs` installs it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "nft -f: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    text
}

/// Packets the router's FlowSpec rules dropped (the nft counters summed).
fn nft_dropped(router: &Netns) -> u64 {
    let o = Command::new("ip")
        .args(["netns", "exec", &router.name, "nft", "list", "table", "inet", "flowspec"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.split("counter packets ").skip(1).filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok()).sum()
}

#[test]
fn the_routers_flowspec_rib_as_nftables_drops_the_attackers_syns_at_the_router() {
    let _g = serial();
    require_root();
    let lab = Lab::new().unwrap();
    let edge = Edge::new(&lab.server);
    // An attacker behind the router: attacker -> router -> server.
    let attacker = Netns::new("a").unwrap();
    let n = std::process::id() % 100_000;
    let (a_if, ra_if) = (format!("tga{n}"), format!("tgq{n}"));
    ip(&[
        "link",
        "add",
        &a_if,
        "netns",
        &attacker.name,
        "type",
        "veth",
        "peer",
        "name",
        &ra_if,
        "netns",
        &edge.router.name,
    ])
    .unwrap();
    for (ns, dev, addr) in [(&attacker, &a_if, "10.255.200.2/30"), (&edge.router, &ra_if, "10.255.200.1/30")] {
        ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    edge.router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    edge.router.ip(&["route", "add", "198.18.0.0/16", "via", "10.255.100.1"]).unwrap();
    attacker.ip(&["route", "add", "default", "via", "10.255.200.1"]).unwrap();
    lab.server.ip(&["route", "add", "10.255.200.0/30", "via", "10.255.100.2"]).unwrap();

    let f = Files::new("upnft");
    upstream_config(&f, "", "");
    let _srv = serve(&lab);
    // The server protects the interface the attacker's SYNs come in by.
    let d = Daemon::start_on(&lab, &f, &[&lab.srv_if, &edge.s_if]);
    apply_flowspec_as_nft(&edge.router);

    let bad: IpAddr = "10.255.200.2".parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spec = FloodSpec {
        ifname: a_if.clone(),
        src_mac: tcpguard::lab::mac(&attacker, &a_if).unwrap(),
        dst_mac: tcpguard::lab::mac(&edge.router, &ra_if).unwrap(),
        rate: 5_000,
        duration: Duration::from_mins(1),
        seed: rand_seed(),
        ..lab.client_flood(IpAddr::V4(tcpguard::lab::SERVER_IP), PORT, Sources::Single(bad))
    };
    let st = stop.clone();
    let flood = attacker.spawn(move || flood::run(&spec, &st).expect("flood")).unwrap();
    wait_status(&f, Duration::from_secs(8), "the attacker blocked at the server", |v| block_of(v, bad).is_some());
    let want = discard("198.18.0.1/32", "10.255.200.2/32");
    wait_router(&edge.router, "the discard rule", |r| r.contains(&want));
    // Before the router acts: the SYNs cross the link and XDP drops them.
    let drops = |v: &Value| v["counters"]["drop_blocked"].as_u64().unwrap();
    let a = drops(&status(&f).unwrap());
    std::thread::sleep(Duration::from_secs(1));
    let b = drops(&status(&f).unwrap());
    assert!(b - a > 2_000, "the server drops the flood itself: {a} -> {b}");

    // The router applies its FlowSpec RIB: the SYNs stop there.
    let ruleset = apply_flowspec_as_nft(&edge.router);
    assert!(ruleset.contains("ip saddr 10.255.200.2/32 ip daddr 198.18.0.1/32"), "{ruleset}");
    std::thread::sleep(Duration::from_millis(300));
    let (r0, s0) = (nft_dropped(&edge.router), drops(&status(&f).unwrap()));
    std::thread::sleep(Duration::from_secs(1));
    let (r1, s1) = (nft_dropped(&edge.router), drops(&status(&f).unwrap()));
    eprintln!("with the router's rule: {} SYNs dropped at the router, {} reached the server in 1 s", r1 - r0, s1 - s0);
    assert!(r1 - r0 > 2_000, "the router drops the flood: {r0} -> {r1}");
    assert!(s1 - s0 < 50, "nothing of it reaches the server: {s0} -> {s1}");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    d.stop();
    wait_router(&edge.router, "the RIB empty after the clean stop", <[Rule]>::is_empty);
    let ruleset = apply_flowspec_as_nft(&edge.router);
    assert!(!ruleset.contains("saddr"), "{ruleset}");
}

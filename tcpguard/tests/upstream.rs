//! The upstream client against real gobgpd (root; issue 20 groundwork): a
//! "server" namespace whose gobgpd tcpguard drives over its gRPC API,
//! peered by eBGP (ipv4-flowspec, ipv6-flowspec) with a "router"
//! namespace's gobgpd, as an operator's edge router would be. What tcpguard
//! reconciles must reach the router's RIB, go when withdrawn, and never
//! touch a path it did not mark.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{require_root, serial};
use tcpguard::{
    lab::{ip, Netns},
    upstream::{from_path, Action, Client, Rule},
};

const API_PORT: u16 = 50_151;

/// gobgpd in a namespace, stopped (by PID) on drop.
struct Gobgpd {
    child: Child,
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
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "gobgpd", "-f"])
            .arg(&cfg)
            .args(["--api-hosts", &format!("127.0.0.1:{API_PORT}"), "--log-level", "info"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("gobgpd (Debian package gobgpd; `cargo xtask prereqs` installs it)");
        Gobgpd { child, log }
    }
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if let Some(d) = self.log.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
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
    let router = Netns::new("r").unwrap();
    let (s_if, r_if) = (format!("tgu{}", std::process::id() % 100_000), format!("tgr{}", std::process::id() % 100_000));
    ip(&["link", "add", &s_if, "netns", &server.name, "type", "veth", "peer", "name", &r_if, "netns", &router.name])
        .unwrap();
    for (ns, dev, addr) in [(&server, &s_if, "198.18.100.1/30"), (&router, &r_if, "198.18.100.2/30")] {
        ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
        ns.ip(&["link", "set", "lo", "up"]).unwrap();
    }
    let _s = Gobgpd::start(&server, "server", 64_512, "198.18.100.1", "198.18.100.2", 64_513);
    let _r = Gobgpd::start(&router, "router", 64_513, "198.18.100.2", "198.18.100.1", 64_512);

    // The session comes up (gobgpd's own view, through the same client).
    let t = Instant::now();
    loop {
        let peers = in_ns(&server, async {
            match Client::connect(&api()).await {
                Ok(mut c) => c.peers().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        });
        if peers.iter().any(|(a, s)| a == "198.18.100.2" && s == "established") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no BGP session: {peers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

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
    let took = wait_router(&router, "the three rules", |rules| desired.iter().all(|d| rules.contains(d)));
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
    wait_router(&router, "the operator's rule", operators);

    // A block ended: only it goes; the rate limit stays.
    let keep = vec![limit.clone()];
    let r = in_ns(&server, async move { Client::connect(&api()).await.unwrap().reconcile(&keep).await.unwrap() });
    assert_eq!((r.added, r.withdrawn, r.kept), (0, 2, 1));
    let took = wait_router(&router, "the blocks withdrawn", |rules| {
        !rules.contains(&block4) && !rules.contains(&block6) && rules.contains(&limit) && operators(rules)
    });
    eprintln!("withdraw -> gone from the router's RIB: {took:?}");
    assert!(took <= Duration::from_secs(2), "{took:?}");

    // A new run (after a crash) that wants nothing: its orphan is withdrawn,
    // the operator's rule stays.
    let r = in_ns(&server, async { Client::connect(&api()).await.unwrap().reconcile(&[]).await.unwrap() });
    assert_eq!((r.added, r.withdrawn, r.kept), (0, 1, 0));
    wait_router(&router, "only the operator's rule", |rules| rules.len() == 1 && operators(rules));
    let ours = in_ns(&server, async { Client::connect(&api()).await.unwrap().announced().await.unwrap() });
    assert!(ours.is_empty(), "{ours:?}");
}

//! Interfaces that come and go under the daemon: deleted and re-created
//! (a container restarted, a namespace rebuilt) while a flood goes on
//! elsewhere, and one that does not exist at start. `tcpguard run` on a
//! namespace lab. Root required.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{connect_n, require_root, serial};
use serde_json::Value;
use tcpguard::lab::{flood, flood::Sources, Lab, SERVER_IP};

use common::e2e::*;

fn iface<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap()
}

#[test]
fn an_interface_deleted_and_recreated_under_a_flood_is_reported_gone_and_attached_again() {
    require_root();
    let _g = serial();
    let mut lab = Lab::new().unwrap();
    let att = lab.add_attacker().unwrap();
    let _srv = serve(&lab);
    let f = Files::new("ifgone");
    f.write_config("auto", "");
    let srv_if = lab.srv_if.clone();
    let d = Daemon::start_on(&lab, &f, &[&srv_if, &att.srv_if]);
    // A spoofed flood on the attacker's veth for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let spec = flood::FloodSpec {
        rate: 20_000,
        duration: Duration::from_secs(30),
        seed: rand_seed(),
        ..att.flood(IpAddr::V4(SERVER_IP), PORT, Sources::Random("198.19.0.0/16".parse().unwrap()))
    };
    let stop2 = stop.clone();
    let flood = att.ns.spawn(move || flood::run(&spec, &stop2).expect("flood")).unwrap();
    wait_status(&f, Duration::from_secs(5), "the flood seen", |v| v["attack"]["active"] == true);

    // Deleted: reported gone within a tick (not "protecting"), in status,
    // --json and /metrics.
    lab.delete_link().unwrap();
    let (v, took) = wait_status(&f, Duration::from_millis(3 * TICK_MS), "the interface reported gone", |v| {
        iface(v, &srv_if)["present"] == false
    });
    assert_eq!(iface(&v, &srv_if)["attached"], false, "{v:#}");
    eprintln!("reported gone after {took:?}");
    let text = String::from_utf8(ctl(&f, &["status"]).stdout).unwrap();
    assert!(text.contains(&format!("{srv_if} (GONE)")) && text.contains("GONE (interface deleted"), "{text}");
    let m = scrape(&lab);
    assert!(metric(&m, &format!("tcpguard_datapath_attached{{interface=\"{srv_if}\"}}")) < 0.5, "metrics say detached");
    // The other interface goes on as it was.
    assert_eq!(iface(&v, &att.srv_if)["attached"], true);

    // Re-created under the same name: attached again by itself within 2 s.
    std::thread::sleep(Duration::from_millis(500));
    lab.recreate_link().unwrap();
    let t = Instant::now();
    let (v, _) = wait_status(&f, Duration::from_secs(2), "attached again", |v| {
        let i = iface(v, &srv_if);
        i["present"] == true && i["attached"] == true
    });
    eprintln!("attached again {:?} after the interface returned", t.elapsed());
    assert!(xdp_attached(&lab), "XDP on the new interface");
    assert_eq!(iface(&v, &srv_if)["mtu"], 1500);
    let m = scrape(&lab);
    assert!(metric(&m, &format!("tcpguard_datapath_attached{{interface=\"{srv_if}\"}}")) > 0.5);
    // Protection resumes: legit clients through it, the flood still on.
    let ok = connect_n(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 100);
    assert!(ok >= 99, "legit {ok}/100 once the interface is back");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let log = d.stop();
    assert!(log.contains("the interface is gone") && log.contains("the interface is back"), "{log}");
}

#[test]
fn an_interface_moved_to_another_namespace_and_back_is_followed() {
    require_root();
    let _g = serial();
    let lab = Lab::new().unwrap();
    let f = Files::new("ifmove");
    f.write_config("auto", "");
    let srv_if = lab.srv_if.clone();
    let d = Daemon::start(&lab, &f);
    let away = tcpguard::lab::Netns::new("m").unwrap();
    lab.server.ip(&["link", "set", &srv_if, "netns", &away.name]).unwrap();
    wait_status(&f, Duration::from_millis(3 * TICK_MS), "gone from the daemon's namespace", |v| {
        iface(v, &srv_if)["present"] == false
    });
    away.ip(&["link", "set", &srv_if, "netns", &lab.server.name]).unwrap();
    lab.server.ip(&["link", "set", &srv_if, "up"]).unwrap();
    wait_status(&f, Duration::from_secs(2), "attached again on its return", |v| {
        let i = iface(v, &srv_if);
        i["present"] == true && i["attached"] == true
    });
    assert!(xdp_attached(&lab), "XDP on the returned interface");
    let log = d.stop();
    assert!(log.contains("the interface is gone") && log.contains("the interface is back"), "{log}");
}

#[test]
fn an_interface_that_does_not_exist_at_start_is_refused_with_the_reason() {
    require_root();
    let _g = serial();
    let lab = Lab::new().unwrap();
    let f = Files::new("ifnone");
    f.write_config("auto", "");
    let o = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.server.name))
        .args([BIN, "run", "--config"])
        .arg(f.config())
        .args(["--iface", "nosuch0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("interface nosuch0") && err.contains("exist when it starts"), "{err}");
    assert!(!f.socket().exists(), "nothing left running");
}

//! The control socket under the clients a busy host gives it: hundreds of
//! idle or slow connections, and a `top` over a full source table.
//! `tcpguard run` on a namespace lab's server veth. Root required.

mod common;

use std::{
    io::Write as _,
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{require_root, serial};
use serde_json::Value;
use tcpguard::lab::{flood::Sources, Lab};

use common::e2e::*;

/// The daemon's resident memory in KiB.
fn rss_kib(d: &Daemon) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

#[test]
fn idle_clients_cannot_lock_out_status_or_commands() {
    require_root();
    let _g = serial();
    let lab = Lab::new().unwrap();
    let f = Files::new("idle");
    f.write_config("auto", "");
    let d = Daemon::start(&lab, &f);
    // 300 clients that connect and never finish a request: half send one
    // byte of a length prefix, half nothing. Re-opened as they are cut.
    let open = |n: usize| -> Vec<UnixStream> {
        (0..n)
            .map(|i| {
                let mut s = UnixStream::connect(f.socket()).unwrap();
                if i % 2 == 0 {
                    s.write_all(&[0]).unwrap();
                }
                s
            })
            .collect()
    };
    let mut idle = open(300);
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let v = status(&f).expect("status answers");
        worst = worst.max(t.elapsed());
        assert!(v["version"].is_string());
        idle.retain(|s| s.peer_addr().is_ok());
        idle.extend(open(300usize.saturating_sub(idle.len()) / 2));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(worst < Duration::from_secs(1), "status took {worst:?} with 300 idle clients");
    // A command gets through too.
    let o = ctl(&f, &["block", "203.0.113.77", "--ttl", "1m"]);
    assert!(o.status.success(), "{o:?}");
    // An idle client is told why it is cut, within the request deadline.
    let mut s = UnixStream::connect(f.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let r: tcpguard::proto::Response = {
        let mut len = [0u8; 4];
        std::io::Read::read_exact(&mut s, &mut len).unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        std::io::Read::read_exact(&mut s, &mut buf).unwrap();
        serde_json::from_slice(&buf).unwrap()
    };
    assert!(t.elapsed() <= Duration::from_millis(2500), "cut after {:?}", t.elapsed());
    assert!(matches!(&r, tcpguard::proto::Response::Error { message } if message.contains("no request")), "{r:?}");
    drop(idle);
    d.stop();
}

#[test]
fn top_over_a_full_source_table_says_what_it_left_out_and_memory_returns() {
    require_root();
    let _g = serial();
    let lab = Lab::new().unwrap();
    let _srv = serve(&lab);
    let f = Files::new("topbig");
    // Tracking mode only (no attack mode): every source enters the table.
    f.write_config("monitor", "[datapath]\nattack-syn-rate = 0\n");
    let d = Daemon::start(&lab, &f);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 30_000, 4, stop.clone());
    flood.join().unwrap();
    let rss_before = rss_kib(&d);
    let o = ctl(&f, &["top", "--json", "--limit", "60000"]);
    assert!(o.status.success(), "{o:?}");
    let top: Value = serde_json::from_slice(&o.stdout).unwrap();
    let shown = top.as_array().unwrap().len();
    assert_eq!(shown, tcpguard::daemon::api::TOP_MAX, "capped");
    let err = String::from_utf8_lossy(&o.stderr);
    let more: usize = err.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(more > 10_000 && err.contains("more sources not shown"), "{err}");
    // Twice more: the daemon's memory comes back after each answer.
    for _ in 0..2 {
        assert!(ctl(&f, &["top", "--json", "--limit", "60000"]).status.success());
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = rss_kib(&d);
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS {rss_before} KiB before, {rss_after} KiB after three large `top` answers"
    );
    eprintln!("RSS {rss_before} KiB before, {rss_after} KiB after three `top --limit 60000` ({shown} + {more})");
    stop.store(true, Ordering::Relaxed);
    d.stop();
}

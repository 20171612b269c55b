//! The sysctl record (daemon.state-dir/state.json) under the conditions a
//! real host gives it: a record that cannot be written, and records a crash,
//! a bad edit or a hostile user left. `tcpguard run` on a namespace lab's
//! server veth; the sysctls are the server namespace's own. Root required.

mod common;

use std::{
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

fn mitigation(v: &Value) -> String {
    v["attack"]["mitigation"]
        .as_array()
        .map(|m| m.iter().map(|x| x.as_str().unwrap_or("")).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

#[test]
fn a_sysctl_change_whose_record_cannot_be_saved_is_held_back_and_reported() {
    require_root();
    let _g = serial();
    let lab = Lab::new().unwrap();
    let _srv = serve(&lab);
    let f = Files::new("statefail");
    f.write_config("syn-cookie", "");
    // A directory where the record's temporary file goes: it cannot be written.
    let blocker = f.dir.join("state/state.json.tmp");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let before = lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap();
    let d = Daemon::start(&lab, &f);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 20_000, 30, stop.clone());
    let (v, _) = wait_status(&f, Duration::from_secs(8), "the held-back change reported", |v| {
        v["attack"]["active"] == true && mitigation(v).contains("FAILING: a sysctl change is held back")
    });
    // Nothing claimed that is not in effect, and nothing changed without its record.
    assert_eq!(v["kernel"]["syncookies_forced"], false, "{:#}", v["kernel"]);
    assert!(!mitigation(&v).contains("SYN cookies forced"), "{}", mitigation(&v));
    assert!(mitigation(&v).contains("state.json"), "names the file: {}", mitigation(&v));
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), before, "changed without a record");
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap(), "1", "changed without a record");
    let m = scrape(&lab);
    assert!(metric(&m, "tcpguard_state_write_failures_total") > 0.0, "counted");
    assert!(metric(&m, "tcpguard_syncookies_forced") < 0.5, "not claimed forced");

    // The directory goes: a later tick saves the record and makes the change.
    std::fs::remove_dir_all(&blocker).unwrap();
    let (v, _) = wait_status(&f, Duration::from_secs(5), "cookies forced once the record is saved", |v| {
        v["kernel"]["syncookies_forced"] == true
    });
    assert!(!mitigation(&v).contains("FAILING"), "{}", mitigation(&v));
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), "2");
    let saved = std::fs::read_to_string(f.dir.join("state/state.json")).unwrap();
    assert!(saved.contains(&format!("\"syncookies_original\": {before}")), "{saved}");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let log = d.stop();
    assert!(log.contains("tried again every tick"), "{log}");
    assert_eq!(lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap(), before, "restored on exit");
}

/// A record that cannot be trusted is never written to /proc/sys: the
/// kernel default is restored instead, and the log names the file.
#[test]
fn a_hostile_or_malformed_record_restores_the_kernel_default_and_says_so() {
    require_root();
    let _g = serial();
    let lab = Lab::new().unwrap();
    for (tag, record, want) in [
        ("hostile", r#"{"syncookies_original": 7, "timestamps_original": 7}"#, "syncookies_original = 7"),
        ("malformed", r#"{"syncookies_original": "abc", "timestamps_original": 0}"#, "syncookies_original = \"abc\""),
        ("junk", "abc", "is not a JSON object"),
    ] {
        let f = Files::new(&format!("state{tag}"));
        f.write_config("auto", "");
        std::fs::create_dir_all(f.dir.join("state")).unwrap();
        std::fs::write(f.dir.join("state/state.json"), record).unwrap();
        // As a crashed run would have left them.
        lab.server.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2")).unwrap().unwrap();
        lab.server.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_timestamps", "2")).unwrap().unwrap();
        let d = Daemon::start(&lab, &f);
        wait_status(&f, Duration::from_secs(3), "running", |_| true);
        let t = Instant::now();
        while lab.server.read_sysctl("net.ipv4.tcp_syncookies").unwrap() != "1" {
            assert!(t.elapsed() < Duration::from_secs(3), "{tag}: not restored:\n{}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        // tcp_timestamps: the valid 0 beside the bad field is kept; otherwise the default.
        let ts = lab.server.read_sysctl("net.ipv4.tcp_timestamps").unwrap();
        assert_eq!(ts, if tag == "malformed" { "0" } else { "1" }, "{tag}");
        let log = d.stop();
        assert!(log.contains(want) && log.contains("state.json"), "{tag}: {log}");
        assert!(log.contains("kernel default 1"), "{tag}: {log}");
        assert!(!log.contains("=7") && !log.contains("to 7"), "{tag}: 7 was written: {log}");
        lab.server.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_timestamps", "1")).unwrap().unwrap();
    }
}

//! Network-namespace lab: a real kernel TCP listener in a server namespace
//! with tcpguard's XDP program on its veth, real clients, and a spoofed SYN
//! flood sent by the project's own generator. Root required.

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

use common::*;
use tcpguard::{
    flood::{self, FloodSpec, Sources},
    lab::{Lab, CLIENT_IP, SERVER_IP, SERVER_IP6},
    loader::AttachMode,
    maps::Maps,
};
use tcpguard_common::{halfopen::Tally, Counter};

const PORT: u16 = 8080;

/// Accept and drain connections until `stop`; returns the thread handle.
fn serve(lab: &Lab, addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    lab.server
        .spawn(move || {
            let l = TcpListener::bind(addr).expect("bind listener in server namespace");
            l.set_nonblocking(true).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 16];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"ok");
                        n += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            n
        })
        .expect("enter server namespace")
}

fn connect_n(lab: &Lab, to: SocketAddr, n: usize) -> usize {
    lab.client
        .run(move || {
            (0..n)
                .filter(|_| {
                    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
                        return false;
                    };
                    let mut buf = [0u8; 2];
                    s.write_all(b"hi").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ok"
                })
                .count()
        })
        .expect("enter client namespace")
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn flood_spec(lab: &Lab, sources: Sources, count: u64) -> FloodSpec {
    FloodSpec {
        ifname: lab.cli_if.clone(),
        src_mac: lab.cli_mac,
        dst_mac: lab.srv_mac,
        dst: IpAddr::V4(SERVER_IP),
        dport: PORT,
        sources,
        rate: 20_000,
        count,
        duration: Duration::from_secs(10),
        options: true,
        seed: 0x7467,
    }
}

#[test]
fn lab_handshakes_spoofed_flood_and_block() {
    require_root();
    let lab = Lab::new().expect("create lab namespaces");
    let mut dp = load();
    let mode = lab.server.run(|| dp.attach(&lab.srv_if, AttachMode::Auto)).unwrap().expect("attach XDP");
    assert_eq!(mode, "native", "veth supports native XDP");

    let stop = Arc::new(AtomicBool::new(false));
    let srv4 = serve(&lab, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), stop.clone());
    let srv6 = serve(&lab, SocketAddr::new(SERVER_IP6.parse().unwrap(), PORT), stop.clone());
    std::thread::sleep(Duration::from_millis(100));

    // 1. Real clients: every handshake completes, none left half-open.
    let to4 = SocketAddr::new(IpAddr::V4(SERVER_IP), PORT);
    let to6 = SocketAddr::new(SERVER_IP6.parse().unwrap(), PORT);
    assert_eq!(connect_n(&lab, to4, 20), 20);
    assert_eq!(connect_n(&lab, to6, 5), 5);
    assert!(
        wait_for(|| counters(&mut dp).get(Counter::HandshakeCompleted) == 25),
        "completed handshakes: {:?}",
        counters(&mut dp).get(Counter::HandshakeCompleted)
    );
    let c = counters(&mut dp);
    assert_eq!(c.get(Counter::Syn), 25);
    assert_eq!(Maps::new(&mut dp.ebpf).half_open_entries().unwrap(), 0);
    let cli = Maps::new(&mut dp.ebpf).source(IpAddr::V4(CLIENT_IP)).unwrap().expect("client tracked");
    assert_eq!((cli.syns, cli.completed, cli.half_open), (20, 20, 0));

    // 2. Spoofed flood from 198.19.0.0/16: half-open, visible per source.
    let before = counters(&mut dp);
    let spec = flood_spec(&lab, Sources::Random("198.19.0.0/16".parse().unwrap()), 2000);
    let rep = lab.client.run(|| flood::run(&spec, &AtomicBool::new(false))).unwrap().expect("flood");
    assert_eq!(rep.sent, 2000);
    assert!(wait_for(|| counters(&mut dp).get(Counter::Syn) - before.get(Counter::Syn) >= 1900));
    let after = counters(&mut dp);
    let syns = after.get(Counter::Syn) - before.get(Counter::Syn);
    let completed = after.get(Counter::HandshakeCompleted) - before.get(Counter::HandshakeCompleted);
    assert_eq!(completed, 0, "a spoofed flood completes no handshake");
    let m = Maps::new(&mut dp.ebpf);
    let mut tally = Tally::default();
    let now = tcpguard::maps::monotonic_ns() / 1_000_000_000;
    let half_open = tally.update(&m.half_open_slots().unwrap(), now, 10);
    assert!(half_open >= syns * 95 / 100, "half-open {half_open} of {syns} SYNs");
    let flooders = m
        .sources()
        .unwrap()
        .into_iter()
        .filter(|(a, s)| matches!(a, IpAddr::V4(v) if v.octets()[..2] == [198, 19]) && s.half_open == 1)
        .count() as u64;
    assert!(flooders >= syns * 95 / 100, "{flooders} spoofed sources with a half-open entry, of {syns}");

    // 3. Block 198.20.0.0/16: its SYNs are dropped while the client still connects.
    Maps::new(&mut dp.ebpf).block(&"198.20.0.0/16".parse().unwrap(), 0).unwrap();
    let before = counters(&mut dp);
    let spec = flood_spec(&lab, Sources::Random("198.20.0.0/16".parse().unwrap()), 1000);
    let flooder = lab
        .client
        .spawn(move || flood::run(&spec, &AtomicBool::new(false)))
        .expect("client namespace");
    let ok = connect_n(&lab, to4, 20);
    let rep = flooder.join().unwrap().expect("flood");
    assert_eq!(ok, 20, "legit client during the blocked flood");
    assert!(wait_for(|| counters(&mut dp).get(Counter::DropBlocked) - before.get(Counter::DropBlocked) >= rep.sent * 95 / 100));
    let after = counters(&mut dp);
    assert_eq!(after.get(Counter::Syn) - before.get(Counter::Syn), 20, "only the client's SYNs were tracked");

    stop.store(true, Ordering::Relaxed);
    assert!(srv4.join().unwrap() >= 40);
    assert_eq!(srv6.join().unwrap(), 5);
}

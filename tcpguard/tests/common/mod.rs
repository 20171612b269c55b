//! Helpers for the kernel tests. These tests need root and a kernel with
//! BPF; without them they fail with a message (never skip).
#![allow(dead_code)]

pub mod e2e;

use aya::programs::{TestRun, TestRunOptions};
use tcpguard::{
    loader::{Datapath, LoadOptions},
    maps::Maps,
};
use tcpguard_common::{Counter, Counters};

pub fn require_root() {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        uid, 0,
        "kernel tests need root (BPF_PROG_TEST_RUN, XDP, network namespaces): run `cargo xtask test` as root"
    );
}

pub fn load() -> Datapath {
    require_root();
    Datapath::load(&LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading the datapath failed: {e}: {}", tcpguard::loader::source_chain(&e)))
}

/// Run the tcpguard program once on `frame`; the XDP verdict.
pub fn run(dp: &Datapath, frame: &[u8]) -> u32 {
    let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..TestRunOptions::default() };
    dp.program().test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
}

/// Run the TC egress program once on `frame` (a packet this host sends).
pub fn run_egress(dp: &Datapath, frame: &[u8]) -> i32 {
    let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..TestRunOptions::default() };
    dp.egress().test_run(opts).expect("BPF_PROG_TEST_RUN (egress)").return_value as i32
}

pub fn counters(dp: &mut Datapath) -> Counters {
    Maps::new(&mut dp.ebpf).counters().expect("read counters")
}

/// Counter deltas between two snapshots, as (name, delta) for the non-zero ones.
pub fn delta(before: &Counters, after: &Counters) -> Vec<(&'static str, u64)> {
    Counter::ALL
        .iter()
        .filter_map(|c| {
            let d = after.get(*c).wrapping_sub(before.get(*c));
            (d != 0).then(|| (c.name(), d))
        })
        .collect()
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Real connections from the lab's client namespace: connect, send, read
/// the server's "ok". How many of `n` succeeded.
pub fn connect_n(lab: &tcpguard::lab::Lab, to: std::net::SocketAddr, n: usize) -> usize {
    use std::io::{Read as _, Write as _};
    lab.client
        .run(move || {
            (0..n)
                .filter(|_| {
                    let Ok(mut s) = std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(3)) else {
                        return false;
                    };
                    let mut buf = [0u8; 2];
                    s.write_all(b"hi").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ok"
                })
                .count()
        })
        .expect("enter client namespace")
}

/// Lab tests send floods that load both cores of a small machine; tests
/// that measure timing must not share it. Each lab test holds this.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

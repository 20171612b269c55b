//! The project's own SYN flood generator: crafted Ethernet frames sent with
//! sendmmsg(2) on an AF_PACKET socket, in batches, at a target rate or as
//! fast as one core goes. Sources are spoofed at random from a prefix, one
//! fixed address, or a fixed set of N addresses; IPv4 or IPv6.
//!
//! Only for lab interfaces: callers pass an interface inside a namespace
//! they created.

use std::{
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use tcpguard_common::{
    craft::Craft,
    parse::{TCP_ACK, TCP_SYN},
};

use crate::net::Prefix;

#[derive(Clone, Debug)]
pub enum Sources {
    /// A fresh random address from the prefix for every SYN.
    Random(Prefix),
    /// One address.
    Single(IpAddr),
    /// N addresses from the prefix, used round-robin.
    Set(Prefix, u32),
}

#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub ifname: String,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst: IpAddr,
    pub dport: u16,
    pub sources: Sources,
    /// Packets per second; 0 = as fast as possible.
    pub rate: u64,
    /// Stop after this many packets (0 = no count limit).
    pub count: u64,
    /// Stop after this long.
    pub duration: Duration,
    /// Linux-like SYN options (MSS, SACK, timestamps, wscale) or none.
    pub options: bool,
    pub seed: u64,
    /// What each packet is: a SYN, or a bare ACK (an ACK flood).
    pub kind: FloodKind,
}

/// The packets of a flood.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FloodKind {
    /// Client SYNs (`options` decides their TCP options).
    #[default]
    Syn,
    /// ACKs of no connection (random seq and ack, no options): what the
    /// kernel looks up, fails to match, and answers with a RST.
    Ack,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FloodReport {
    pub sent: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// CLOCK_MONOTONIC (the datapath's clock) just before the first batch
    /// went out: the flood's start, comparable with the datapath's stamps.
    pub first_send_ns: u64,
}

impl FloodReport {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// xorshift64*: fast, good enough for spoofed addresses and ports.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn pick(p: &Prefix, r: u64) -> IpAddr {
    match p.addr {
        IpAddr::V4(a) => {
            let host = if p.len >= 32 { 0 } else { (r as u32) & (u32::MAX >> p.len) };
            IpAddr::V4((u32::from(a) | host).into())
        }
        IpAddr::V6(a) => {
            let host = if p.len >= 128 { 0 } else { u128::from(r) & (u128::MAX >> p.len) };
            IpAddr::V6((u128::from(a) | host).into())
        }
    }
}

const BATCH: usize = 64;

/// An AF_PACKET socket bound to one interface (of the calling thread's
/// network namespace).
pub struct PacketSocket {
    fd: i32,
    ifindex: i32,
}

impl PacketSocket {
    pub fn open(ifname: &str) -> io::Result<Self> {
        let c = std::ffi::CString::new(ifname).map_err(|_| io::Error::other("bad interface name"))?;
        // SAFETY: plain syscalls with valid arguments.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::other(format!("no interface {ifname} in this namespace")));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        let rc = unsafe { libc::bind(fd, (&raw const sll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Send frames with one sendmmsg call per batch; returns how many went.
    pub fn send_batch(&self, frames: &[Vec<u8>]) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> =
            frames.iter().map(|f| libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }).collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let _ = self.ifindex;
        // SAFETY: msgs and iov point at live buffers for the call's duration.
        let n = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Build one frame of the flood (a SYN, or an ACK) from `src`.
pub fn syn_frame(spec: &FloodSpec, src: IpAddr, sport: u16, seq: u32) -> Vec<u8> {
    let c = match (src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Craft::v4(s.octets(), d.octets(), sport, spec.dport),
        (IpAddr::V6(s), IpAddr::V6(d)) => Craft::v6(s.octets(), d.octets(), sport, spec.dport),
        (IpAddr::V4(s), IpAddr::V6(d)) => Craft::v6(s.to_ipv6_mapped().octets(), d.octets(), sport, spec.dport),
        (IpAddr::V6(s), IpAddr::V4(d)) => {
            Craft::v4(s.to_ipv4_mapped().map_or([0; 4], |a| a.octets()), d.octets(), sport, spec.dport)
        }
    };
    match spec.kind {
        FloodKind::Syn => {
            let c = c.flags(TCP_SYN).seq(seq).macs(spec.src_mac, spec.dst_mac);
            if spec.options { c.syn_options() } else { c }.build()
        }
        FloodKind::Ack => {
            c.flags(TCP_ACK).seq(seq).ack(seq.rotate_left(13) ^ 0x5bd1_e995).macs(spec.src_mac, spec.dst_mac).build()
        }
    }
}

/// Send the flood from the calling thread (which must be in the namespace
/// that holds `spec.ifname`). Paced per batch when `rate` > 0.
pub fn run(spec: &FloodSpec, stop: &std::sync::atomic::AtomicBool) -> io::Result<FloodReport> {
    let sock = PacketSocket::open(&spec.ifname)?;
    let mut rng = Rng(spec.seed | 1);
    let start = Instant::now();
    let mut rep = FloodReport::default();
    let mut i: u64 = 0;
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed)
            || start.elapsed() >= spec.duration
            || (spec.count > 0 && rep.sent >= spec.count)
        {
            break;
        }
        let want = if spec.count > 0 { (spec.count - rep.sent).min(BATCH as u64) as usize } else { BATCH };
        frames.clear();
        for _ in 0..want {
            let r = rng.next();
            let src = match &spec.sources {
                Sources::Random(p) => pick(p, r),
                Sources::Single(a) => *a,
                Sources::Set(p, n) => pick(p, (i % u64::from((*n).max(1))) + 1),
            };
            let sport = 1024 + (r >> 48) as u16 % 64_000;
            frames.push(syn_frame(spec, src, sport, (r >> 16) as u32));
            i += 1;
        }
        if rep.first_send_ns == 0 {
            rep.first_send_ns = crate::maps::monotonic_ns();
        }
        // What a full queue refused (a short sendmmsg, ENOBUFS) is sent again,
        // so the frames, and a set's sources, go out in order and none is
        // skipped; the report counts only what went out.
        let mut off = 0;
        while off < frames.len() {
            match sock.send_batch(&frames[off..]) {
                Ok(n) if n > 0 => {
                    rep.sent += n as u64;
                    off += n;
                }
                Ok(_) => rep.errors += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => rep.errors += 1,
                Err(e) => return Err(e),
            }
            if off < frames.len() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || start.elapsed() >= spec.duration {
                    break;
                }
                std::thread::yield_now();
            }
        }
        if spec.rate > 0 {
            // Sleep until the schedule for what has been sent so far.
            let due = Duration::from_secs_f64(rep.sent as f64 / spec.rate as f64);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due.checked_sub(el).unwrap());
            }
        }
    }
    rep.elapsed = start.elapsed();
    Ok(rep)
}

impl std::str::FromStr for Sources {
    type Err = String;
    /// `random:PREFIX`, `single:ADDR` or `set:PREFIX:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected random:PREFIX, single:ADDR or set:PREFIX:N");
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "random" => Ok(Sources::Random(rest.parse()?)),
            "single" => Ok(Sources::Single(rest.parse().map_err(|_| bad())?)),
            "set" => {
                let (p, n) = rest.rsplit_once(':').ok_or_else(bad)?;
                Ok(Sources::Set(p.parse()?, n.parse().map_err(|_| bad())?))
            }
            _ => Err(bad()),
        }
    }
}

/// Inode number of the kernel's initial network namespace
/// (`PROC_NET_INIT_INO` in include/linux/proc_ns.h).
const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// True when the calling thread is in the host's network namespace — the
/// kernel's initial one, or PID 1's where that is readable — where a flood
/// must never be sent; also when it cannot be determined (fail closed).
pub fn in_host_netns() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let Ok(me) = std::fs::metadata(format!("/proc/self/task/{tid}/ns/net")) else { return true };
    if me.ino() == PROC_NET_INIT_INO {
        return true;
    }
    // From inside another namespace PID 1's link is usually unreadable.
    std::fs::metadata("/proc/1/ns/net").is_ok_and(|init| init.ino() == me.ino() && init.dev() == me.dev())
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut m = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address like 02:00:00:00:00:01"));
    }
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_mac_parse() {
        assert!(matches!("random:198.19.0.0/16".parse::<Sources>(), Ok(Sources::Random(_))));
        assert!(matches!("single:2001:db8::1".parse::<Sources>(), Ok(Sources::Single(IpAddr::V6(_)))));
        assert!(matches!("set:198.18.0.0/15:100000".parse::<Sources>(), Ok(Sources::Set(_, 100_000))));
        assert!("bogus".parse::<Sources>().is_err());
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00").is_err());
    }

    #[test]
    fn set_sources_cycle_through_n_addresses() {
        let p: Prefix = "198.18.0.0/15".parse().unwrap();
        let a: std::collections::HashSet<IpAddr> = (0..250u64).map(|i| pick(&p, (i % 100) + 1)).collect();
        assert_eq!(a.len(), 100);
        assert!(a.iter().all(|x| p.contains(*x)));
    }

    #[test]
    fn v6_frames_parse_back() {
        let spec = FloodSpec {
            ifname: "x".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst: "fd00:7467::1".parse().unwrap(),
            dport: 443,
            sources: Sources::Single("fd00:7467::99".parse().unwrap()),
            rate: 0,
            count: 1,
            duration: Duration::from_secs(1),
            options: false,
            seed: 1,
            kind: FloodKind::Syn,
        };
        let f = syn_frame(&spec, "fd00:7467::99".parse().unwrap(), 1234, 77);
        let p = tcpguard_common::parse::parse(&f[..]).unwrap();
        assert!(p.is_v6 && p.dport == 443 && p.seq == 77 && p.has(TCP_SYN));
        // An ACK flood's packet: a bare ACK, no SYN, no options.
        let ack = FloodSpec { kind: FloodKind::Ack, ..spec };
        let f = syn_frame(&ack, "fd00:7467::99".parse().unwrap(), 1234, 77);
        let p = tcpguard_common::parse::parse(&f[..]).unwrap();
        assert!(p.has(TCP_ACK) && !p.has(TCP_SYN) && p.seq == 77 && p.ack != 0 && p.doff == 5, "{p:?}");
    }
}

//! The kernel's own view of its listeners, from NETLINK_SOCK_DIAG: every
//! LISTEN socket with its backlog and drop count, and every request socket
//! (SYN_RECV: a SYN answered, the ACK not yet in), assigned to the listener
//! that owns it. A listener whose SYN queue is near its backlog, or that
//! drops connection attempts, is under pressure whatever the absolute SYN
//! rate: that is what a SYN flood does to a server.
//!
//! For a LISTEN socket the kernel reports the accept queue in `rqueue` and
//! the backlog (`sk_max_ack_backlog`, the limit of both the accept queue and
//! the SYN queue) in `wqueue`; `SK_MEMINFO_DROPS` counts the connection
//! attempts it dropped (accept queue full, SYN queue full without cookies,
//! no memory: the kernel's ListenDrops, per socket).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use serde::{Deserialize, Serialize};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const TCP_SYN_RECV: u32 = 3;
const TCP_LISTEN: u32 = 10;
/// `INET_DIAG_SKMEMINFO`: an array of `SK_MEMINFO_*` u32 values.
const INET_DIAG_SKMEMINFO: u16 = 4;
const SK_MEMINFO_DROPS: usize = 8;
const DIAG_MSG_LEN: usize = 72;

#[repr(C)]
struct Request {
    // struct nlmsghdr
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    // struct inet_diag_req_v2
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: [u8; 48],
}

/// One socket as sock_diag reports it (the fields tcpguard reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSock {
    pub state: u8,
    pub local: SocketAddr,
    pub rqueue: u32,
    pub wqueue: u32,
    /// `SK_MEMINFO_DROPS`, when asked for and present.
    pub drops: Option<u32>,
}

/// A listener and its queues at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSample {
    pub addr: Option<SocketAddr>,
    /// Request sockets (SYN_RECV) it owns: its SYN queue.
    pub syn_queue: u64,
    /// Established connections waiting for accept().
    pub accept_queue: u64,
    /// Its backlog: the limit of either queue.
    pub backlog: u64,
    /// Connection attempts it dropped (cumulative, `ListenDrops` for it).
    pub drops: u64,
}

/// Every listener (IPv4 and IPv6) with its SYN queue, and the number of
/// request sockets in all (what `ss -tan state syn-recv` lists).
pub fn read() -> io::Result<(Vec<ListenerSample>, u64)> {
    let mut listen = Vec::new();
    let mut reqs = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        listen.extend(dump(family, 1 << TCP_LISTEN, 1 << (INET_DIAG_SKMEMINFO - 1))?);
        reqs.extend(dump(family, 1 << TCP_SYN_RECV, 0)?);
    }
    let total = reqs.len() as u64;
    Ok((assign(&listen, &reqs), total))
}

/// Assign request sockets to the listener that owns them: the same port,
/// and the same address or a wildcard listener (an exact one wins; an IPv6
/// wildcard takes IPv4 requests too, as a dual-stack socket does).
pub fn assign(listen: &[DiagSock], reqs: &[DiagSock]) -> Vec<ListenerSample> {
    let mut out: Vec<ListenerSample> = listen
        .iter()
        .map(|l| ListenerSample {
            addr: Some(l.local),
            syn_queue: 0,
            accept_queue: u64::from(l.rqueue),
            backlog: u64::from(l.wqueue),
            drops: u64::from(l.drops.unwrap_or(0)),
        })
        .collect();
    for r in reqs {
        let local = unmap(r.local);
        let mut best: Option<(usize, bool)> = None;
        for (i, l) in listen.iter().enumerate() {
            let la = unmap(l.local);
            if la.port() != local.port() {
                continue;
            }
            let exact = la.ip() == local.ip();
            let wildcard = la.ip().is_unspecified() && (la.is_ipv6() || local.is_ipv4());
            if exact && best.is_none_or(|(_, e)| !e) {
                best = Some((i, true));
            } else if wildcard && best.is_none() {
                best = Some((i, false));
            }
        }
        if let Some((i, _)) = best {
            out[i].syn_queue += 1;
        }
    }
    out
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn dump(family: u8, states: u32, ext: u8) -> io::Result<Vec<DiagSock>> {
    // SAFETY: plain syscalls with checked results.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(self.0) };
        }
    }
    let fd = Fd(fd);
    let req = Request {
        len: std::mem::size_of::<Request>() as u32,
        kind: SOCK_DIAG_BY_FAMILY,
        flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        seq: 1,
        pid: 0,
        family,
        protocol: libc::IPPROTO_TCP as u8,
        ext,
        pad: 0,
        states,
        id: [0; 48],
    };
    // SAFETY: sends the request struct's bytes.
    let n = unsafe { libc::send(fd.0, (&raw const req).cast(), req.len as usize, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: receives into a buffer of the given length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if parse_batch(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse one datagram of netlink messages into `out`; true at NLMSG_DONE.
/// Every length is checked: a malformed reply is an error, not a panic.
pub fn parse_batch(b: &[u8], out: &mut Vec<DiagSock>) -> io::Result<bool> {
    let bad = || io::Error::other("malformed sock_diag reply");
    let mut off = 0usize;
    while off + NLMSG_HDRLEN <= b.len() {
        let len = u32_ne(b, off) as usize;
        let kind = u16_ne(b, off + 4);
        if len < NLMSG_HDRLEN || off + len > b.len() {
            return Err(bad());
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => return Err(io::Error::other("sock_diag returned an error")),
            SOCK_DIAG_BY_FAMILY => out.push(parse_msg(&b[off + NLMSG_HDRLEN..off + len]).ok_or_else(bad)?),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Ok(false)
}

/// One `inet_diag_msg` and its attributes.
fn parse_msg(m: &[u8]) -> Option<DiagSock> {
    if m.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = m[0];
    let port = u16::from_be_bytes([m[4], m[5]]);
    let ip = if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&m[8..24]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let mut s = DiagSock {
        state: m[1],
        local: SocketAddr::new(ip, port),
        rqueue: u32_ne(m, 56),
        wqueue: u32_ne(m, 60),
        drops: None,
    };
    let mut off = DIAG_MSG_LEN;
    while off + 4 <= m.len() {
        let len = usize::from(u16_ne(m, off));
        let kind = u16_ne(m, off + 2);
        if len < 4 || off + len > m.len() {
            return None;
        }
        if kind == INET_DIAG_SKMEMINFO && len >= 4 + 4 * (SK_MEMINFO_DROPS + 1) {
            s.drops = Some(u32_ne(m, off + 4 + 4 * SK_MEMINFO_DROPS));
        }
        off += (len + 3) & !3;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(state: u8, local: &str, rq: u32, wq: u32) -> DiagSock {
        DiagSock { state, local: local.parse().unwrap(), rqueue: rq, wqueue: wq, drops: Some(3) }
    }

    #[test]
    fn requests_go_to_the_listener_that_owns_them() {
        let listen = [
            sock(10, "0.0.0.0:80", 0, 128),
            sock(10, "10.0.0.1:80", 2, 64),
            sock(10, "[::]:443", 0, 4096),
            sock(10, "127.0.0.1:25", 0, 5),
        ];
        let reqs = [
            sock(3, "10.0.0.1:80", 0, 0),           // exact listener wins over 0.0.0.0:80
            sock(3, "10.0.0.2:80", 0, 0),           // the wildcard
            sock(3, "[::ffff:10.0.0.2]:443", 0, 0), // v4 on a dual-stack v6 listener
            sock(3, "[2001:db8::1]:443", 0, 0),     // v6 on it
            sock(3, "10.0.0.1:8080", 0, 0),         // nobody's: not counted
            sock(3, "127.0.0.2:25", 0, 0),          // a different specific address
        ];
        let l = assign(&listen, &reqs);
        let q: Vec<(String, u64, u64, u64)> =
            l.iter().map(|x| (x.addr.unwrap().to_string(), x.syn_queue, x.accept_queue, x.backlog)).collect();
        assert_eq!(
            q,
            [
                ("0.0.0.0:80".into(), 1, 0, 128),
                ("10.0.0.1:80".into(), 1, 2, 64),
                ("[::]:443".into(), 2, 0, 4096),
                ("127.0.0.1:25".into(), 0, 0, 5),
            ]
        );
        assert!(l.iter().all(|x| x.drops == 3));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let mut out = Vec::new();
        // A header claiming more bytes than there are.
        let mut b = vec![0u8; 16];
        b[..4].copy_from_slice(&100u32.to_ne_bytes());
        b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(parse_batch(&b, &mut out).is_err());
        // A message too short for an inet_diag_msg.
        b[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(parse_batch(&b, &mut out).is_err());
        // Every truncation of a good message with an attribute.
        let mut m = vec![0u8; NLMSG_HDRLEN + DIAG_MSG_LEN + 4 + 4 * 9];
        let total = m.len() as u32;
        m[..4].copy_from_slice(&total.to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[NLMSG_HDRLEN] = libc::AF_INET as u8;
        m[NLMSG_HDRLEN + 1] = 10;
        let a = NLMSG_HDRLEN + DIAG_MSG_LEN;
        m[a..a + 2].copy_from_slice(&(4u16 + 36).to_ne_bytes());
        m[a + 2..a + 4].copy_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
        m[a + 4 + 32..a + 4 + 36].copy_from_slice(&7u32.to_ne_bytes());
        assert!(!parse_batch(&m, &mut out).unwrap());
        assert_eq!(out.last().unwrap().drops, Some(7));
        // Cut anywhere: the header still claims the full length, so refused.
        for cut in NLMSG_HDRLEN..m.len() {
            assert!(parse_batch(&m[..cut], &mut Vec::new()).is_err(), "cut {cut}");
        }
    }

    /// The real kernel: a listener with a known backlog shows up with it.
    #[test]
    fn reads_this_hosts_listeners() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (all, _) = read().unwrap();
        let me = all.iter().find(|x| x.addr == Some(SocketAddr::from(([127, 0, 0, 1], port)))).expect("listed");
        // std's listen() backlog is 128 (capped by net.core.somaxconn).
        assert!(me.backlog > 0 && me.backlog <= 4096, "{me:?}");
        assert_eq!((me.syn_queue, me.accept_queue), (0, 0));
    }
}

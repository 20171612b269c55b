//! What the host is, as the kernel says it, for the XDP responder: each
//! protected interface's index, MAC, MTU and kind (rtnetlink `RTM_GETLINK`),
//! whether a veth's peer can receive XDP_TX frames, the host's own addresses
//! (`getifaddrs`, itself rtnetlink), and where `ifindex` sits in the
//! kernel's `struct net_device` (its BTF), for the transmit watch.

use std::{io, net::IpAddr};

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_TARGET_NETNSID: u16 = 46;
const XDP_ATTACHED_SKB: u8 = 2;

/// One interface as rtnetlink reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// `IFLA_INFO_KIND` ("veth", "bridge", ...); empty for a physical NIC.
    pub kind: String,
    /// The peer of a veth (`IFLA_LINK`) and the namespace it lives in, as
    /// this namespace numbers it (`IFLA_LINK_NETNSID`; `None`: this one).
    pub peer: Option<(u32, Option<i32>)>,
    /// An XDP program is attached (any mode).
    pub xdp: bool,
    /// It is attached in generic (skb) mode (`XDP_ATTACHED_SKB`).
    pub xdp_generic: bool,
}

/// The interface called `name` in this network namespace.
pub fn link_by_name(name: &str) -> io::Result<Link> {
    let mut attrs = Vec::new();
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    push_attr(&mut attrs, IFLA_IFNAME, &n);
    get_link(0, &attrs).map_err(|e| io::Error::new(e.kind(), format!("interface {name}: {e}")))
}

/// The interface with index `ifindex`, in the namespace `netnsid` names
/// (`None`: this one).
pub fn link_by_index(ifindex: u32, netnsid: Option<i32>) -> io::Result<Link> {
    let mut attrs = Vec::new();
    if let Some(id) = netnsid {
        push_attr(&mut attrs, IFLA_TARGET_NETNSID, &id.to_ne_bytes());
    }
    get_link(ifindex as i32, &attrs)
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Netlink attributes in `buf`: (type without flags, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let data = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, data))
    })
}

fn u32_of(d: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

fn get_link(ifindex: i32, extra: &[u8]) -> io::Result<Link> {
    let mut msg = Vec::with_capacity(64);
    let total = NLMSG_HDRLEN + IFINFOMSG_LEN + extra.len();
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change.
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    msg.extend_from_slice(&[0; 8]);
    msg.extend_from_slice(extra);
    let reply = roundtrip(&msg)?;
    parse_link(&reply)
}

fn roundtrip(msg: &[u8]) -> io::Result<Vec<u8>> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; closed on drop.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: buffer and length of our message.
    if unsafe { libc::send(raw, msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn parse_link(buf: &[u8]) -> io::Result<Link> {
    let bad = || io::Error::other("short rtnetlink reply");
    if buf.len() < NLMSG_HDRLEN {
        return Err(bad());
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == NLMSG_ERROR {
        let errno = buf.get(16..20).and_then(|b| b.try_into().ok()).map_or(0, i32::from_ne_bytes);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != RTM_NEWLINK || buf.len() < NLMSG_HDRLEN + IFINFOMSG_LEN {
        return Err(bad());
    }
    let len = (u32_of(buf).ok_or_else(bad)? as usize).min(buf.len());
    let info = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + IFINFOMSG_LEN];
    let mut l = Link { ifindex: u32_of(&info[4..8]).unwrap_or(0), ..Link::default() };
    let (mut peer, mut peer_ns) = (None, None);
    for (t, d) in attrs(&buf[NLMSG_HDRLEN + IFINFOMSG_LEN..len]) {
        match t {
            IFLA_ADDRESS if d.len() == 6 => l.mac.copy_from_slice(d),
            IFLA_MTU => l.mtu = u32_of(d).unwrap_or(0),
            IFLA_LINK => peer = u32_of(d),
            IFLA_LINK_NETNSID => peer_ns = u32_of(d).map(|v| v as i32),
            IFLA_LINKINFO => {
                if let Some((_, k)) = attrs(d).find(|(t, _)| *t == IFLA_INFO_KIND) {
                    l.kind = String::from_utf8_lossy(k).trim_end_matches('\0').to_string();
                }
            }
            IFLA_XDP => {
                let mode = attrs(d).find(|(t, _)| *t == IFLA_XDP_ATTACHED).and_then(|(_, v)| v.first().copied());
                l.xdp = mode.is_some_and(|m| m != 0);
                l.xdp_generic = mode == Some(XDP_ATTACHED_SKB);
            }
            _ => {}
        }
    }
    // A peer in another namespace may have the same index as this end.
    if let Some(p) = peer.filter(|p| *p != 0 && (*p != l.ifindex || peer_ns.is_some())) {
        l.peer = Some((p, peer_ns));
    }
    Ok(l)
}

/// Every address configured on an interface of this network namespace.
pub fn local_addrs() -> io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = if_addrs()?.into_iter().map(|(_, a)| a).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// (interface, address) for every address of this network namespace.
pub fn if_addrs() -> io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head`, freed below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_name is a NUL-terminated string of the node.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: an AF_INET sockaddr is a sockaddr_in (read unaligned).
                    let sin = unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                    out.push((name, IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())));
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6 (read unaligned).
                    let sin6 = unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                    out.push((name, IpAddr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether XDP_TX frames sent on `link` can leave, as far as the kernel's
/// configuration tells before any is sent: `Ok(why)` deliverable (or not
/// known to fail: the transmit watch decides), `Err(why)` not.
pub fn judge_delivery(link: &Link) -> Result<String, String> {
    if link.xdp_generic {
        return Ok("generic (skb) XDP: replies go out through the stack".into());
    }
    if link.kind != "veth" {
        let what =
            if link.kind.is_empty() { "the NIC's driver".to_string() } else { format!("a {} device", link.kind) };
        return Ok(format!("native XDP on {what}; failed transmits watched (xdp:xdp_exception)"));
    }
    match link.peer {
        None => Ok("native XDP on veth, peer not found; failed transmits watched (the driver's count)".into()),
        Some((idx, ns)) => match link_by_index(idx, ns) {
            Ok(p) if p.xdp => Ok("native XDP on veth; the peer has an XDP program".into()),
            Ok(_) => Err("XDP_TX undeliverable: veth peer has no XDP program".into()),
            Err(e) => Ok(format!("native XDP on veth, peer not readable ({e}); failed transmits watched")),
        },
    }
}

/// The driver's own count of failed XDP_TX transmits (ethtool statistics
/// whose name has `xdp_tx_err`: veth's `rx_queue_N_xdp_tx_errors`, summed
/// over queues): veth's failed transmits, read every tick; for other
/// drivers a second witness beside `xdp:xdp_exception`. `None` when the
/// driver has no such statistic.
pub fn driver_xdp_tx_errors(name: &str) -> io::Result<Option<u64>> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSTATS: u32 = 0x1d;
    const ETH_SS_STATS: u32 = 1;
    const GSTRING_LEN: usize = 32;
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; closed on drop.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // One SIOCETHTOOL call with `buf` (a command struct, as u64 words for alignment).
    let call = |buf: &mut [u64]| -> io::Result<()> {
        // SAFETY: a zeroed ifreq is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::other(format!("interface name {name:?} too long")));
        }
        for (d, c) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = c as libc::c_char;
        }
        req.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
        // SAFETY: SIOCETHTOOL reads and writes the command struct in `buf`, sized by its caller.
        let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[1] (u32).
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_STATS;
    if let Err(e) = call(&mut info) {
        return if e.raw_os_error() == Some(libc::EOPNOTSUPP) { Ok(None) } else { Err(e) };
    }
    let n = (info[2] & 0xffff_ffff) as usize;
    if n == 0 || n > 65_536 {
        return Ok(None);
    }
    // struct ethtool_gstrings: cmd, string_set, len (u32 each), then n names.
    let mut strings = vec![0u64; (12 + n * GSTRING_LEN).div_ceil(8)];
    strings[0] = u64::from(ETHTOOL_GSTRINGS) | (u64::from(ETH_SS_STATS) << 32);
    strings[1] = n as u64;
    call(&mut strings)?;
    // SAFETY: plain bytes of the buffer the kernel filled.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(strings.as_ptr().cast(), strings.len() * 8) };
    let wanted: Vec<usize> = (0..n)
        .filter(|i| {
            let s = &bytes[12 + i * GSTRING_LEN..12 + (i + 1) * GSTRING_LEN];
            s.windows(10).any(|w| w == b"xdp_tx_err")
        })
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    // struct ethtool_stats: cmd, n_stats (u32 each), then n u64 values.
    let mut stats = vec![0u64; 1 + n];
    stats[0] = u64::from(ETHTOOL_GSTATS) | ((n as u64) << 32);
    call(&mut stats)?;
    Ok(Some(wanted.iter().map(|i| stats[1 + i]).sum()))
}

/// Offset of `ifindex` in the running kernel's `struct net_device`, read
/// from its BTF (`/sys/kernel/btf/vmlinux`).
pub fn net_device_ifindex_offset() -> io::Result<u32> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
    btf_member_offset(&data, "net_device", "ifindex")
        .ok_or_else(|| io::Error::other("struct net_device has no ifindex in the kernel's BTF"))
}

/// The byte offset of `member` in struct `name`, from raw BTF.
pub fn btf_member_offset(btf: &[u8], name: &str, member: &str) -> Option<u32> {
    let u32_at = |o: usize| btf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    if btf.get(..2)? != [0x9f, 0xeb] {
        return None; // not little-endian BTF
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let str_at = |o: u32| -> Option<&[u8]> {
        let s = btf.get(strings + o as usize..)?;
        Some(&s[..s.iter().position(|b| *b == 0)?])
    };
    let mut at = types;
    while at + 12 <= types + type_len {
        let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        // Bytes after the common header, by kind (BTF_KIND_*).
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => 12 * vlen,
            6 | 13 => 8 * vlen,
            _ => 0,
        };
        if kind == 4 && str_at(name_off)? == name.as_bytes() {
            for m in 0..vlen {
                let mo = at + 12 + 12 * m;
                if str_at(u32_at(mo)?)? == member.as_bytes() {
                    let bits = u32_at(mo + 8)?;
                    let bits = if kflag == 1 { bits & 0xff_ffff } else { bits };
                    return Some(bits / 8);
                }
            }
        }
        at += 12 + extra;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_read_and_kernel_btf_has_the_ifindex_offset() {
        let lo = link_by_name("lo").expect("lo exists in every namespace");
        assert_eq!(lo.ifindex, 1);
        assert!(lo.mtu > 0);
        assert!(link_by_name("no-such-if0").is_err());
        assert!(local_addrs().unwrap().contains(&IpAddr::from([127, 0, 0, 1])));
        // net_device.ifindex sits well inside the struct on every kernel.
        let off = net_device_ifindex_offset().expect("BTF");
        assert!((64..4096).contains(&off), "{off}");
    }

    #[test]
    fn attributes_round_trip() {
        let mut b = Vec::new();
        push_attr(&mut b, IFLA_MTU, &1400u32.to_ne_bytes());
        push_attr(&mut b, IFLA_IFNAME, b"ab\0");
        let v: Vec<_> = attrs(&b).collect();
        assert_eq!(v, vec![(IFLA_MTU, &1400u32.to_ne_bytes()[..]), (IFLA_IFNAME, &b"ab\0"[..])]);
        // A length past the end stops the walk instead of reading beyond it.
        assert_eq!(attrs(&[200, 0, 1, 0, 0, 0]).count(), 0);
    }
}

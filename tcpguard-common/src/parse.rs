//! Header parsing: Ethernet, up to two VLAN tags, IPv4 (IHL honoured,
//! non-first fragments skipped), IPv6 (bounded extension-header walk), TCP
//! (data offset honoured). Generic over [`PacketBuf`] so the same code runs
//! on an XDP context in the kernel and on a byte slice in host tests.
//!
//! Anything that cannot be parsed yields a [`ParseError`]; the XDP program
//! passes such packets and counts them by reason — it never drops them.

use crate::Counter;

/// Bounds-checked reads from a packet.
pub trait PacketBuf {
    /// `N` bytes at `off`, or `None` if the packet is shorter.
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl PacketBuf for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let s = self.get(off..off.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }
}

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_TCP: u8 = 6;
/// How many IPv6 extension headers the walk follows before giving up.
pub const MAX_IPV6_EXT: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// Why a packet was not parsed as TCP. Each maps to one pass counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    NonIp,
    NonTcp,
    Fragment,
    TruncatedEth,
    TruncatedIp,
    TruncatedTcp,
    BadIhl,
    BadDoff,
    Ipv6ExtLimit,
}

impl ParseError {
    #[inline(always)]
    pub fn counter(self) -> Counter {
        match self {
            ParseError::NonIp => Counter::PassNonIp,
            ParseError::NonTcp => Counter::PassNonTcp,
            ParseError::Fragment => Counter::PassFragment,
            ParseError::TruncatedEth => Counter::PassTruncatedEth,
            ParseError::TruncatedIp => Counter::PassTruncatedIp,
            ParseError::TruncatedTcp => Counter::PassTruncatedTcp,
            ParseError::BadIhl => Counter::PassBadIhl,
            ParseError::BadDoff => Counter::PassBadDoff,
            ParseError::Ipv6ExtLimit => Counter::PassIpv6ExtLimit,
        }
    }
}

/// The fields of a TCP segment the datapath needs. Eight-byte aligned with
/// the addresses first: the BPF target has no unaligned loads, so only an
/// address known to be aligned is read (hashed, copied into a map key) in
/// words rather than byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket {
    /// Source/destination; IPv4 as IPv4-mapped IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub seq: u32,
    pub ack: u32,
    pub sport: u16,
    pub dport: u16,
    /// Offset of the IP header in the frame (after Ethernet and VLAN tags).
    pub l3_off: u16,
    /// Offset of the TCP header in the frame.
    pub l4_off: u16,
    pub is_v6: bool,
    pub flags: u8,
    /// TCP header length in 32-bit words (5..=15).
    pub doff: u8,
}

impl TcpPacket {
    #[inline(always)]
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    // As two 64-bit words: the XDP program's stores are two instead of a
    // byte loop over the zeros (LLVM's out-of-line memset on BPF).
    let lo = 0u64.to_ne_bytes();
    let hi = u64::from_ne_bytes([0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]).to_ne_bytes();
    let w = [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)];
    // SAFETY: plain bytes either way; [u64; 2] and [u8; 16] have one size.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(w) }
}

/// Parse an Ethernet frame down to TCP.
#[inline(always)]
pub fn parse<B: PacketBuf + ?Sized>(b: &B) -> Result<TcpPacket, ParseError> {
    let mut off = ETH_HLEN;
    let mut proto = be16(b.bytes::<2>(12).ok_or(ParseError::TruncatedEth)?);
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner, or QinQ 802.1Q).
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16(b.bytes::<2>(off + 2).ok_or(ParseError::TruncatedEth)?);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = be16(b.bytes::<2>(off + 2).ok_or(ParseError::TruncatedEth)?);
            off += 4;
        }
    }
    match proto {
        ETH_P_IP => parse_ipv4(b, off),
        ETH_P_IPV6 => parse_ipv6(b, off),
        _ => Err(ParseError::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4<B: PacketBuf + ?Sized>(b: &B, off: usize) -> Result<TcpPacket, ParseError> {
    let h = b.bytes::<20>(off).ok_or(ParseError::TruncatedIp)?;
    if h[0] >> 4 != 4 {
        return Err(ParseError::TruncatedIp);
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 {
        return Err(ParseError::BadIhl);
    }
    // Fragment offset (13 bits) non-zero: no TCP header in this packet.
    if be16([h[6], h[7]]) & 0x1fff != 0 {
        return Err(ParseError::Fragment);
    }
    if h[9] != IPPROTO_TCP {
        return Err(ParseError::NonTcp);
    }
    let saddr = v4_mapped([h[12], h[13], h[14], h[15]]);
    let daddr = v4_mapped([h[16], h[17], h[18], h[19]]);
    parse_tcp(b, off, off + ihl * 4, saddr, daddr, false)
}

#[inline(always)]
fn parse_ipv6<B: PacketBuf + ?Sized>(b: &B, off: usize) -> Result<TcpPacket, ParseError> {
    let h = b.bytes::<40>(off).ok_or(ParseError::TruncatedIp)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::TruncatedIp);
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&h[8..24]);
    daddr.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut l4 = off + 40;
    // Bounded walk of the extension headers a TCP packet may carry.
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => return parse_tcp(b, off, l4, saddr, daddr, true),
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let e = b.bytes::<2>(l4).ok_or(ParseError::TruncatedIp)?;
                next = e[0];
                l4 += (e[1] as usize + 1) * 8;
            }
            // Fragment header: 8 bytes; a non-zero offset means no TCP header.
            44 => {
                let e = b.bytes::<4>(l4).ok_or(ParseError::TruncatedIp)?;
                if be16([e[2], e[3]]) & 0xfff8 != 0 {
                    return Err(ParseError::Fragment);
                }
                next = e[0];
                l4 += 8;
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let e = b.bytes::<2>(l4).ok_or(ParseError::TruncatedIp)?;
                next = e[0];
                l4 += (e[1] as usize + 2) * 4;
            }
            _ => return Err(ParseError::NonTcp),
        }
    }
    if next == IPPROTO_TCP {
        return parse_tcp(b, off, l4, saddr, daddr, true);
    }
    Err(ParseError::Ipv6ExtLimit)
}

/// The frame offsets of [`plain_v4`]'s six words: the IPv4 addresses and
/// the TCP header's first 16 bytes of an untagged IPv4 packet without IP
/// options (its TCP header at 34).
pub const PLAIN_V4_WORDS: [usize; 6] = [26, 30, 34, 38, 42, 46];

/// The packet [`parse`] makes of an untagged IPv4 TCP segment without IP
/// options that is not a fragment (the caller checked that much, from the
/// ethertype, version and IHL, fragment offset and protocol), from the six
/// words at [`PLAIN_V4_WORDS`] as loaded in the host's byte order, and the
/// frame's length. `None` where the TCP header would not parse (a data
/// offset under 5, options past the frame's end). The datapath's way past
/// the byte-wise parse for the commonest frame; equal to `parse`'s result,
/// as the host tests check.
#[inline(always)]
pub fn plain_v4(w: [u32; 6], frame_len: usize) -> Option<TcpPacket> {
    let [s0, s1, d0, d1] = w[2].to_ne_bytes();
    let [doff, flags, _, _] = w[5].to_ne_bytes();
    let doff = doff >> 4;
    if doff < 5 || frame_len < 34 + usize::from(doff) * 4 {
        return None;
    }
    Some(TcpPacket {
        saddr: v4_mapped(w[0].to_ne_bytes()),
        daddr: v4_mapped(w[1].to_ne_bytes()),
        seq: u32::from_be(w[3]),
        ack: u32::from_be(w[4]),
        sport: be16([s0, s1]),
        dport: be16([d0, d1]),
        l3_off: ETH_HLEN as u16,
        l4_off: (ETH_HLEN + 20) as u16,
        is_v6: false,
        flags,
        doff,
    })
}

#[inline(always)]
fn parse_tcp<B: PacketBuf + ?Sized>(
    b: &B,
    l3_off: usize,
    off: usize,
    saddr: [u8; 16],
    daddr: [u8; 16],
    is_v6: bool,
) -> Result<TcpPacket, ParseError> {
    let t = b.bytes::<20>(off).ok_or(ParseError::TruncatedTcp)?;
    let doff = (t[12] >> 4) as usize;
    if doff < 5 {
        return Err(ParseError::BadDoff);
    }
    // The options the data offset announces must be in the packet.
    if doff > 5 && b.bytes::<1>(off + doff * 4 - 1).is_none() {
        return Err(ParseError::TruncatedTcp);
    }
    Ok(TcpPacket {
        saddr,
        daddr,
        is_v6,
        sport: be16([t[0], t[1]]),
        dport: be16([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
        doff: doff as u8,
        l3_off: l3_off as u16,
        l4_off: off as u16,
    })
}

#[cfg(all(test, feature = "craft"))]
mod tests {
    #[test]
    fn v4_mapped_is_the_ipv6_form() {
        let want: std::net::Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(super::v4_mapped([192, 0, 2, 7]), want.octets());
    }

    use super::*;
    use crate::craft::Craft;

    fn v6addr(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = last;
        a
    }

    fn v4() -> Craft {
        Craft::v4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80).flags(TCP_SYN).seq(1000)
    }

    /// The six words a datapath loads for `plain_v4`.
    fn plain_words(f: &[u8]) -> [u32; 6] {
        PLAIN_V4_WORDS.map(|o| u32::from_ne_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]))
    }

    #[test]
    fn plain_v4_is_the_parse_of_a_plain_ipv4_segment() {
        let shapes = [
            v4().build(),
            v4().syn_options().build(),
            v4().flags(TCP_ACK).seq(0xdead_beef).ack(0x0102_0304).payload(&[7u8; 100]).build(),
            v4().flags(TCP_ACK | TCP_FIN).payload(&[1u8; 3]).build(),
            v4().flags(TCP_RST).build(),
            Craft::v4([192, 0, 2, 255], [198, 51, 100, 1], 65535, 1).flags(0xff).seq(u32::MAX).ack(1).build(),
        ];
        for f in &shapes {
            let want = parse(&f[..]).unwrap();
            assert_eq!(plain_v4(plain_words(f), f.len()), Some(want), "frame {f:02x?}");
        }
        // A data offset under 5, or options past the frame's end: no
        // packet, as the parse says.
        let mut bad = v4().syn_options().build();
        bad[46] = 0x40 | (bad[46] & 0x0f);
        assert_eq!(parse(&bad[..]), Err(ParseError::BadDoff));
        assert_eq!(plain_v4(plain_words(&bad), bad.len()), None);
        let full = v4().syn_options().build();
        let cut = &full[..full.len() - 1];
        assert_eq!(parse(cut), Err(ParseError::TruncatedTcp));
        assert_eq!(plain_v4(plain_words(cut), cut.len()), None);
        // Exactly the options the offset announces: a packet.
        assert!(plain_v4(plain_words(&full), full.len()).is_some());
    }

    #[test]
    fn syn_v4() {
        let p = parse(&v4().build()[..]).unwrap();
        assert_eq!(p.sport, 40000);
        assert_eq!(p.dport, 80);
        assert_eq!(p.seq, 1000);
        assert!(p.has(TCP_SYN));
        assert!(!p.is_v6);
        assert_eq!(&p.saddr[12..], &[10, 0, 0, 1]);
        assert_eq!(&p.daddr[10..12], &[0xff, 0xff]);
    }

    #[test]
    fn syn_v6_and_ext_headers() {
        let c = Craft::v6(v6addr(5), v6addr(6), 1234, 443).flags(TCP_SYN).seq(7);
        let p = parse(&c.clone().build()[..]).unwrap();
        assert!(p.is_v6);
        assert_eq!(p.dport, 443);
        assert_eq!(p.saddr[15], 5);
        // hop-by-hop + destination options + first fragment: still TCP.
        let p2 = parse(&c.clone().v6_ext(&[0, 60, 44]).build()[..]).unwrap();
        assert_eq!(TcpPacket { l4_off: p.l4_off, ..p2 }, p);
        assert_eq!((p.l3_off, p.l4_off, p2.l4_off), (14, 54, 54 + 8 + 8 + 8));
        // Non-first fragment.
        assert_eq!(parse(&c.clone().v6_ext(&[44]).frag_offset(8).build()[..]), Err(ParseError::Fragment));
        // Five extension headers: beyond the bounded walk.
        assert_eq!(parse(&c.clone().v6_ext(&[0, 60, 60, 60, 60]).build()[..]), Err(ParseError::Ipv6ExtLimit));
    }

    #[test]
    fn vlan_tags() {
        let one = parse(&v4().vlans(&[ETH_P_8021Q]).build()[..]).unwrap();
        let two = parse(&v4().vlans(&[ETH_P_8021AD, ETH_P_8021Q]).build()[..]).unwrap();
        let none = parse(&v4().build()[..]).unwrap();
        assert_eq!(TcpPacket { l3_off: 14, l4_off: 34, ..one }, none);
        assert_eq!(TcpPacket { l3_off: 14, l4_off: 34, ..two }, none);
        assert_eq!((one.l3_off, one.l4_off, two.l3_off, two.l4_off), (18, 38, 22, 42));
        assert_eq!(none.doff, 5);
        // A third tag is not followed: the inner type is a VLAN, not IP.
        assert_eq!(parse(&v4().vlans(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q]).build()[..]), Err(ParseError::NonIp));
    }

    #[test]
    fn ipv4_options_and_tcp_options_honoured() {
        let p = parse(&v4().ip_options(8).tcp_options(12).build()[..]).unwrap();
        assert_eq!(p.dport, 80);
        assert_eq!(p.seq, 1000);
    }

    #[test]
    fn errors_by_reason() {
        let full = v4().build();
        assert_eq!(parse(&full[..10]), Err(ParseError::TruncatedEth));
        assert_eq!(parse(&full[..20]), Err(ParseError::TruncatedIp));
        assert_eq!(parse(&full[..40]), Err(ParseError::TruncatedTcp));
        assert_eq!(parse(&v4().ihl(4).build()[..]), Err(ParseError::BadIhl));
        assert_eq!(parse(&v4().doff(4).build()[..]), Err(ParseError::BadDoff));
        assert_eq!(parse(&v4().frag_offset(185).build()[..]), Err(ParseError::Fragment));
        assert_eq!(parse(&v4().l4_proto(17).build()[..]), Err(ParseError::NonTcp));
        assert_eq!(parse(&v4().ethertype(0x0806).build()[..]), Err(ParseError::NonIp));
        // Data offset announces options that are not there.
        let mut short = v4().tcp_options(12).build();
        short.truncate(short.len() - 4);
        assert_eq!(parse(&short[..]), Err(ParseError::TruncatedTcp));
        // MF set, offset zero: a first fragment still carries TCP.
        assert!(parse(&v4().more_fragments().build()[..]).is_ok());
    }
}

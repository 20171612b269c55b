//! Answering a SYN from XDP: the pure parts (option parsing, the SYN-ACK's
//! headers, checksums). The cookie itself comes from the kernel
//! (`bpf_tcp_gen_syncookie` on the listening socket), so the kernel accepts
//! the final ACK as one of its own cookies.
//!
//! Options the kernel can recover from a cookie ACK: the MSS (in the cookie)
//! and, only when the client offered timestamps, window scaling, SACK and
//! ECN, which the kernel decodes from the low [`TSBITS`] bits of the TSecr
//! the client echoes (kernel `cookie_init_timestamp` /
//! `cookie_timestamp_decode`). That decoding is exact only with
//! `net.ipv4.tcp_timestamps = 2` (no per-connection timestamp offset),
//! which the daemon sets while the XDP responder is on. Without client
//! timestamps the SYN-ACK carries only the MSS, as the kernel's own cookie
//! SYN-ACK does.
//!
//! Layouts written (the kernel's own order):
//! - with timestamps (40-byte TCP header): MSS, SACK-permitted or two NOPs,
//!   timestamps (TSval = encoded options, TSecr = client's TSval), NOP and
//!   window scale or four NOPs;
//! - without (24-byte TCP header): MSS.

use crate::parse::{TCP_ACK, TCP_SYN};

/// Low bits of TSval that carry the client's options.
pub const TSBITS: u32 = 6;
/// Window-scale bits of the encoding; all ones = no window scaling.
pub const TS_OPT_WSCALE_MASK: u32 = 0xf;
pub const TS_OPT_SACK: u32 = 1 << 4;
/// The kernel's largest window scale.
pub const TCP_MAX_WSCALE: u8 = 14;

/// What a client's SYN offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    /// MSS option value, 0 when absent.
    pub mss: u16,
    pub has_wscale: bool,
    pub wscale: u8,
    pub sack_ok: bool,
    pub has_ts: bool,
    pub tsval: u32,
}

/// Most options walked in one SYN (more are ignored; the common layouts
/// have at most eight, counting NOPs).
pub const MAX_OPTIONS: usize = 16;

/// A walk over a SYN's options, one option per [`option_step`]. The XDP
/// program drives it with `bpf_loop` (a plain loop over options with
/// data-dependent lengths explodes the verifier's path count); the host
/// drives it with [`parse_syn_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionWalk {
    /// Offset of the next option in the TCP header.
    pub at: u32,
    /// End of the options (data offset × 4, at most 60).
    pub end: u32,
    pub found: SynOptions,
}

impl OptionWalk {
    #[inline(always)]
    pub fn new(th_len: usize) -> Self {
        OptionWalk { at: 20, end: if th_len > 60 { 60 } else { th_len as u32 }, found: SynOptions::default() }
    }
}

/// Read one option of `th` (the TCP header, 64 bytes so that every masked
/// index is in bounds) at `w.at`. Returns false when the walk is over.
#[inline(always)]
pub fn option_step(th: &[u8; 64], w: &mut OptionWalk) -> bool {
    let i = w.at as usize & 63;
    let end = w.end as usize;
    if i >= end || i >= 59 {
        return false;
    }
    let kind = th[i];
    if kind == 0 {
        return false;
    }
    if kind == 1 {
        w.at = i as u32 + 1;
        return true;
    }
    let olen = th[(i + 1) & 63] as usize;
    if olen < 2 || i + olen > end {
        return false;
    }
    let o = &mut w.found;
    match (kind, olen) {
        (2, 4) => o.mss = u16::from_be_bytes([th[(i + 2) & 63], th[(i + 3) & 63]]),
        (3, 3) => {
            o.has_wscale = true;
            let v = th[(i + 2) & 63];
            o.wscale = if v > TCP_MAX_WSCALE { TCP_MAX_WSCALE } else { v };
        }
        (4, 2) => o.sack_ok = true,
        (8, 10) => {
            o.has_ts = true;
            o.tsval = u32::from_be_bytes([th[(i + 2) & 63], th[(i + 3) & 63], th[(i + 4) & 63], th[(i + 5) & 63]]);
        }
        _ => {}
    }
    w.at = (i + olen) as u32;
    true
}

/// The options of a Linux client's SYN, read in place when they have the
/// exact layout Linux sends (MSS, SACK-permitted, timestamps, NOP, window
/// scale: a 40-byte header); `None` for any other layout (then walked).
#[inline(always)]
pub fn linux_layout(th: &[u8; 64], len: usize) -> Option<SynOptions> {
    if len != 40
        || th[20] != 2
        || th[21] != 4
        || th[24] != 4
        || th[25] != 2
        || th[26] != 8
        || th[27] != 10
        || th[36] != 1
        || th[37] != 3
        || th[38] != 3
    {
        return None;
    }
    let w = th[39];
    Some(SynOptions {
        mss: u16::from_be_bytes([th[22], th[23]]),
        has_wscale: true,
        wscale: if w > TCP_MAX_WSCALE { TCP_MAX_WSCALE } else { w },
        sack_ok: true,
        has_ts: true,
        tsval: u32::from_be_bytes([th[28], th[29], th[30], th[31]]),
    })
}

/// Parse the options of a SYN (`len` = data offset × 4).
pub fn parse_syn_options(th: &[u8; 64], len: usize) -> SynOptions {
    let mut w = OptionWalk::new(len);
    for _ in 0..MAX_OPTIONS {
        if !option_step(th, &mut w) {
            break;
        }
    }
    w.found
}

/// TSval carrying the client's options, as the kernel builds it: the
/// current millisecond clock with its low [`TSBITS`] bits replaced, never
/// ahead of the clock.
#[inline(always)]
pub fn encode_tsval(now_ms: u32, o: &SynOptions) -> u32 {
    let mut options = if o.has_wscale { o.wscale as u32 & TS_OPT_WSCALE_MASK } else { TS_OPT_WSCALE_MASK };
    if o.sack_ok {
        options |= TS_OPT_SACK;
    }
    let mut ts = (now_ms >> TSBITS) << TSBITS | options;
    if ts > now_ms {
        ts = ts.wrapping_sub(1 << TSBITS);
    }
    ts
}

/// What the kernel will decode from a TSecr: (wscale or None, sack).
pub fn decode_tsecr(tsecr: u32) -> (Option<u8>, bool) {
    let ws = tsecr & TS_OPT_WSCALE_MASK;
    ((ws != TS_OPT_WSCALE_MASK).then_some(ws as u8), tsecr & TS_OPT_SACK != 0)
}

/// The window scale the kernel computes for a listener with default
/// buffers (`tcp_select_initial_window`): from the larger of
/// `net.ipv4.tcp_rmem[2]` and `net.core.rmem_max`.
pub fn kernel_wscale(tcp_rmem_max: u64, rmem_max: u64) -> u8 {
    let space = tcp_rmem_max.max(rmem_max).clamp(1, u64::from(u16::MAX) << TCP_MAX_WSCALE);
    let ilog2 = 63 - space.leading_zeros() as i32;
    (ilog2 - 15).clamp(0, i32::from(TCP_MAX_WSCALE)) as u8
}

/// A SYN-ACK's TCP header (checksum zero; see [`tcp_checksum_v4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAckTcp {
    pub bytes: [u8; 40],
    /// 40 with timestamps, 24 without.
    pub len: usize,
}

/// What a SYN-ACK needs besides the client's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Ports as in the SYN (the reply swaps them).
    pub sport: u16,
    pub dport: u16,
    pub client_isn: u32,
    pub cookie: u32,
    pub our_mss: u16,
    pub our_wscale: u8,
    /// The millisecond clock for TSval.
    pub now_ms: u32,
}

/// Build the SYN-ACK answering a SYN.
pub fn synack_tcp(r: &Reply, o: &SynOptions) -> SynAckTcp {
    let mut bytes = [0u8; 40];
    let len = write_synack(&mut bytes, r, o);
    SynAckTcp { bytes, len }
}

/// [`synack_tcp`] into a buffer the caller owns (in XDP, per-CPU scratch:
/// the BPF stack is small). Every byte of `b` is written; returns the
/// header length.
#[inline(always)]
pub fn write_synack(b: &mut [u8; 40], r: &Reply, o: &SynOptions) -> usize {
    let Reply { sport, dport, client_isn, cookie, our_mss, our_wscale, now_ms } = *r;
    let len = if o.has_ts { 40 } else { 24 };
    let put16 = |b: &mut [u8; 40], at: usize, v: u16| {
        let x = v.to_be_bytes();
        b[at] = x[0];
        b[at + 1] = x[1];
    };
    let put32 = |b: &mut [u8; 40], at: usize, v: u32| {
        let x = v.to_be_bytes();
        b[at] = x[0];
        b[at + 1] = x[1];
        b[at + 2] = x[2];
        b[at + 3] = x[3];
    };
    put16(b, 0, dport);
    put16(b, 2, sport);
    put32(b, 4, cookie);
    put32(b, 8, client_isn.wrapping_add(1));
    b[12] = ((len / 4) as u8) << 4;
    b[13] = TCP_SYN | TCP_ACK;
    // The initial window, as the kernel rounds it: whole segments of what
    // fits in 16 bits.
    let seg = if o.has_ts { our_mss.saturating_sub(12) } else { our_mss };
    let seg = if seg == 0 { 536 } else { seg };
    put16(b, 14, (u16::MAX / seg) * seg);
    put32(b, 16, 0); // checksum, urgent pointer
    b[20] = 2;
    b[21] = 4;
    put16(b, 22, our_mss);
    if o.has_ts {
        let (k, l) = if o.sack_ok { (4, 2) } else { (1, 1) };
        b[24] = k;
        b[25] = l;
        b[26] = 8;
        b[27] = 10;
        put32(b, 28, encode_tsval(now_ms, o));
        put32(b, 32, o.tsval);
        let ws = if o.has_wscale { u32::from_be_bytes([1, 3, 3, our_wscale]) } else { 0x0101_0101 };
        put32(b, 36, ws);
    } else {
        let mut i = 24;
        while i < 40 {
            put32(b, i, 0);
            i += 4;
        }
    }
    len
}

/// Ones'-complement sum of `N` bytes taken as big-endian 16-bit words.
#[inline(always)]
pub fn sum_words<const N: usize>(b: &[u8; N], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        acc += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    acc
}

#[inline(always)]
pub fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Checksum of a SYN-ACK TCP header over IPv4 (`len` bytes of `t`, the
/// rest zero as [`write_synack`] leaves it).
#[inline(always)]
pub fn tcp_checksum_v4(src: &[u8; 4], dst: &[u8; 4], t: &[u8; 40], len: usize) -> u16 {
    let acc = sum_words(src, 0) + sum_words(dst, 0) + 6 + len as u32;
    // Bytes past `len` are zero, so summing all 40 is the same sum.
    fold(sum_words(t, acc))
}

/// Checksum of a SYN-ACK TCP header over IPv6.
#[inline(always)]
pub fn tcp_checksum_v6(src: &[u8; 16], dst: &[u8; 16], t: &[u8; 40], len: usize) -> u16 {
    let acc = sum_words(src, 0) + sum_words(dst, 0) + 6 + len as u32;
    fold(sum_words(t, acc))
}

/// A fresh IPv4 header for the reply: DF, TTL 64, checksum filled in.
#[inline(always)]
pub fn ipv4_header(src: &[u8; 4], dst: &[u8; 4], tcp_len: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = 64;
    h[9] = 6;
    h[12..16].copy_from_slice(src);
    h[16..20].copy_from_slice(dst);
    let c = fold(sum_words(&h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// The first 8 bytes of the reply's IPv6 header (addresses follow).
#[inline(always)]
pub fn ipv6_fixed(tcp_len: usize) -> [u8; 8] {
    let l = (tcp_len as u16).to_be_bytes();
    [0x60, 0, 0, 0, l[0], l[1], 6, 64]
}

#[cfg(all(test, feature = "craft"))]
mod tests {
    use super::*;
    use crate::craft::{fold as cfold, sum16};

    fn th(opts: &[u8]) -> ([u8; 64], usize) {
        let mut t = [0u8; 64];
        t[20..20 + opts.len()].copy_from_slice(opts);
        (t, 20 + opts.len().div_ceil(4) * 4)
    }

    const LINUX: [u8; 20] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 1, 0, 2, 0, 0, 0, 0, 1, 3, 3, 7];

    #[test]
    fn parses_common_layouts() {
        let (t, l) = th(&LINUX);
        let o = parse_syn_options(&t, l);
        assert_eq!(
            o,
            SynOptions { mss: 1460, has_wscale: true, wscale: 7, sack_ok: true, has_ts: true, tsval: 0x0001_0002 }
        );
        // The in-place read of Linux's layout agrees with the walk, and
        // declines anything else.
        assert_eq!(linux_layout(&t, l), Some(o));
        let (t2, l2) = th(&[2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2]);
        assert_eq!(linux_layout(&t2, l2), None);
        let mut t3 = t;
        t3[39] = 200;
        assert_eq!(linux_layout(&t3, l).unwrap().wscale, parse_syn_options(&t3, l).wscale);
        // Windows: MSS, NOP, WS, NOP, NOP, SACK-permitted; no timestamps.
        let (t, l) = th(&[2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2]);
        let o = parse_syn_options(&t, l);
        assert_eq!((o.mss, o.wscale, o.sack_ok, o.has_ts), (1460, 8, true, false));
        // macOS: MSS, NOP, WS, NOP, NOP, TS, SACK-permitted, EOL.
        let (t, l) = th(&[2, 4, 0x05, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 4, 2, 0, 0]);
        let o = parse_syn_options(&t, l);
        assert_eq!((o.mss, o.wscale, o.sack_ok, o.tsval), (1460, 6, true, 0x0102_0304));
        // None at all (hping3).
        let (t, l) = th(&[]);
        assert_eq!(parse_syn_options(&t, l), SynOptions::default());
    }

    #[test]
    fn malformed_options_stop_the_walk() {
        // Zero length: stop, keep what came before.
        let (t, l) = th(&[2, 4, 0x05, 0xb4, 8, 0, 1, 1]);
        assert_eq!(parse_syn_options(&t, l).mss, 1460);
        // An option running past the header is ignored.
        let (t, _) = th(&[1, 1, 8, 10, 0, 0, 0, 5]);
        assert!(!parse_syn_options(&t, 28).has_ts);
        // Window scale above 14 is clamped, as the kernel does.
        let (t, l) = th(&[3, 3, 200, 0]);
        assert_eq!(parse_syn_options(&t, l).wscale, 14);
        // Every byte value in every position: never panics.
        for pos in 20..60 {
            for v in 0..=255u8 {
                let mut t = [1u8; 64];
                t[pos] = v;
                let _ = parse_syn_options(&t, 60);
            }
        }
    }

    #[test]
    fn tsval_encodes_what_the_kernel_decodes() {
        let (t, l) = th(&LINUX);
        let o = parse_syn_options(&t, l);
        for now in [0u32, 63, 64, 1_000_000, u32::MAX] {
            let ts = encode_tsval(now, &o);
            assert!(ts <= now || now < 64, "never ahead of the clock");
            assert_eq!(decode_tsecr(ts), (Some(7), true));
        }
        let no_ws = SynOptions { has_ts: true, ..SynOptions::default() };
        assert_eq!(decode_tsecr(encode_tsval(5000, &no_ws)), (None, false));
    }

    #[test]
    fn kernel_wscale_matches_tcp_select_initial_window() {
        // Debian defaults: tcp_rmem max 6 MiB, rmem_max 208 KiB -> 7.
        assert_eq!(kernel_wscale(6_291_456, 212_992), 7);
        assert_eq!(kernel_wscale(33_554_432, 212_992), 10);
        assert_eq!(kernel_wscale(65_535, 0), 0);
        assert_eq!(kernel_wscale(u64::MAX, 0), 14);
    }

    #[test]
    fn synack_headers_and_checksums_verify() {
        let (t, l) = th(&LINUX);
        let o = parse_syn_options(&t, l);
        let r = Reply {
            sport: 40000,
            dport: 80,
            client_isn: 1000,
            cookie: 0xdead_beef,
            our_mss: 1460,
            our_wscale: 7,
            now_ms: 123_456,
        };
        let s = synack_tcp(&r, &o);
        assert_eq!(s.len, 40);
        assert_eq!(&s.bytes[0..4], &[0, 80, 0x9c, 0x40]);
        assert_eq!(u32::from_be_bytes(s.bytes[4..8].try_into().unwrap()), 0xdead_beef);
        assert_eq!(u32::from_be_bytes(s.bytes[8..12].try_into().unwrap()), 1001);
        assert_eq!(s.bytes[13], 0x12);
        assert_eq!(u16::from_be_bytes([s.bytes[14], s.bytes[15]]), 65160);
        assert_eq!(&s.bytes[20..28], &[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
        assert_eq!(&s.bytes[32..40], &[0, 1, 0, 2, 1, 3, 3, 7]);
        let (src, dst) = ([192, 0, 2, 1], [192, 0, 2, 10]);
        let c = tcp_checksum_v4(&src, &dst, &s.bytes, s.len);
        let mut seg = s.bytes[..s.len].to_vec();
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let pseudo = sum16(&src, 0) + sum16(&dst, 0) + 6 + seg.len() as u32;
        assert_eq!(cfold(sum16(&seg, pseudo)), 0, "TCP checksum verifies");
        let ip = ipv4_header(&src, &dst, s.len);
        assert_eq!(cfold(sum16(&ip, 0)), 0, "IPv4 header checksum verifies");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 60);

        // No timestamps: MSS only, 24 bytes, v6 checksum.
        let r = Reply { sport: 1, dport: 2, client_isn: u32::MAX, cookie: 7, our_mss: 1440, our_wscale: 7, now_ms: 0 };
        let s = synack_tcp(&r, &SynOptions { mss: 1440, ..Default::default() });
        assert_eq!(s.len, 24);
        assert_eq!(u32::from_be_bytes(s.bytes[8..12].try_into().unwrap()), 0, "ack wraps");
        assert!(s.bytes[24..].iter().all(|b| *b == 0));
        let (a, b) = ([0x20; 16], [0xfd; 16]);
        let c = tcp_checksum_v6(&a, &b, &s.bytes, s.len);
        let mut seg = s.bytes[..24].to_vec();
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(cfold(sum16(&seg, sum16(&a, 0) + sum16(&b, 0) + 6 + 24)), 0);
    }
}

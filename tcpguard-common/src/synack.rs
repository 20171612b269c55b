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

/// A word of four wire bytes, in the machine's order: what a 4-byte load
/// of those bytes gives. The reply is built and checksummed in such words
/// (a ones'-complement sum is the same in either byte order, RFC 1071
/// 2(B)), so the XDP program moves the SYN-ACK with word loads and stores
/// instead of byte by byte.
#[inline(always)]
pub const fn wire(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

/// The wire bytes of a word (the inverse of [`wire`]).
#[inline(always)]
pub const fn bytes(w: u32) -> [u8; 4] {
    w.to_ne_bytes()
}

/// Bytes 20..40 of a SYN's TCP header, as five [`wire`] words.
pub type LinuxOptionWords = [u32; 5];

/// The options of a Linux client's SYN, read in place when they have the
/// exact layout Linux sends (MSS, SACK-permitted, timestamps, NOP, window
/// scale: a 40-byte header; `w` = its bytes 20..40 as [`wire`] words);
/// `None` for any other layout (then walked).
#[inline(always)]
pub fn linux_layout_words(w: &LinuxOptionWords) -> Option<SynOptions> {
    let [m0, m1, ..] = bytes(w[0]);
    let [o0, o1, o2, ws] = bytes(w[4]);
    if m0 != 2 || m1 != 4 || w[1] != wire([4, 2, 8, 10]) || o0 != 1 || o1 != 3 || o2 != 3 {
        return None;
    }
    let [_, _, a, b] = bytes(w[0]);
    Some(SynOptions {
        mss: u16::from_be_bytes([a, b]),
        has_wscale: true,
        wscale: if ws > TCP_MAX_WSCALE { TCP_MAX_WSCALE } else { ws },
        sack_ok: true,
        has_ts: true,
        tsval: u32::from_be(w[2]),
    })
}

/// [`linux_layout_words`] on a copied header (`len` = data offset × 4).
pub fn linux_layout(th: &[u8; 64], len: usize) -> Option<SynOptions> {
    if len != 40 {
        return None;
    }
    let at = |i: usize| wire([th[i], th[i + 1], th[i + 2], th[i + 3]]);
    linux_layout_words(&[at(20), at(24), at(28), at(32), at(36)])
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

/// A SYN-ACK's TCP header, checksum included.
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

/// A SYN-ACK's TCP header as [`wire`] words: 10 with timestamps, 6 (the
/// rest zero) without.
pub type SynAckWords = [u32; 10];

/// The SYN-ACK answering a SYN, as [`wire`] words with the checksum zero
/// (see [`with_checksum`]); returns the header length, 40 or 24.
#[inline(always)]
pub fn synack_words(r: &Reply, o: &SynOptions) -> (SynAckWords, usize) {
    let Reply { sport, dport, client_isn, cookie, our_mss, our_wscale, now_ms } = *r;
    let be16 = |v: u16| v.to_be_bytes();
    let be32 = |v: u32| wire(v.to_be_bytes());
    let len = if o.has_ts { 40 } else { 24 };
    // The initial window, as the kernel rounds it: whole segments of what
    // fits in 16 bits.
    let seg = if o.has_ts { our_mss.saturating_sub(12) } else { our_mss };
    let seg = if seg == 0 { 536 } else { seg };
    let (d, s, win, mss) = (be16(dport), be16(sport), be16((u16::MAX / seg) * seg), be16(our_mss));
    let mut w = [0u32; 10];
    w[0] = wire([d[0], d[1], s[0], s[1]]);
    w[1] = be32(cookie);
    w[2] = be32(client_isn.wrapping_add(1));
    w[3] = wire([((len / 4) as u8) << 4, TCP_SYN | TCP_ACK, win[0], win[1]]);
    // w[4]: checksum and urgent pointer.
    w[5] = wire([2, 4, mss[0], mss[1]]);
    if o.has_ts {
        w[6] = if o.sack_ok { wire([4, 2, 8, 10]) } else { wire([1, 1, 8, 10]) };
        w[7] = be32(encode_tsval(now_ms, o));
        w[8] = be32(o.tsval);
        w[9] = if o.has_wscale { wire([1, 3, 3, our_wscale]) } else { wire([1, 1, 1, 1]) };
    }
    (w, len)
}

/// Ones'-complement sum of [`wire`] words into a 64-bit accumulator (fold
/// with [`checksum`]).
#[inline(always)]
pub fn sum<const N: usize>(w: &[u32; N], mut acc: u64) -> u64 {
    let mut i = 0;
    while i < N {
        acc += u64::from(w[i]);
        i += 1;
    }
    acc
}

/// The Internet checksum of an accumulated sum, as the two wire bytes to
/// store.
#[inline(always)]
pub fn checksum(mut acc: u64) -> [u8; 2] {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    (!(acc as u16)).to_ne_bytes()
}

/// The pseudo-header's protocol and length as one [`wire`] word (the same
/// sum for IPv4's 12-byte and IPv6's 40-byte pseudo-header).
#[inline(always)]
pub fn pseudo_tail(tcp_len: usize) -> u32 {
    let l = (tcp_len as u16).to_be_bytes();
    wire([0, 6, l[0], l[1]])
}

/// The SYN-ACK's words with the TCP checksum filled in; `addrs` is the
/// [`sum`] of the pseudo-header's addresses.
#[inline(always)]
pub fn with_checksum(mut w: SynAckWords, len: usize, addrs: u64) -> SynAckWords {
    // Words past `len` are zero: summing all ten is the same sum.
    let c = checksum(sum(&w, addrs + u64::from(pseudo_tail(len))));
    w[4] = wire([c[0], c[1], 0, 0]);
    w
}

/// A fresh IPv4 header for the reply, as [`wire`] words: DF, TTL 64,
/// checksum filled in; `src`, `dst` as [`wire`] words.
#[inline(always)]
pub fn ipv4_words(src: u32, dst: u32, tcp_len: usize) -> [u32; 5] {
    let l = ((20 + tcp_len) as u16).to_be_bytes();
    let mut h = [wire([0x45, 0, l[0], l[1]]), wire([0, 0, 0x40, 0]), wire([64, 6, 0, 0]), src, dst];
    let c = checksum(sum(&h, 0));
    h[2] = wire([64, 6, c[0], c[1]]);
    h
}

/// The first two words of the reply's IPv6 header (addresses follow).
#[inline(always)]
pub fn ipv6_words(tcp_len: usize) -> [u32; 2] {
    let l = (tcp_len as u16).to_be_bytes();
    [wire([0x60, 0, 0, 0]), wire([l[0], l[1], 6, 64])]
}

/// An address's [`wire`] words.
#[inline(always)]
pub fn addr_words<const N: usize, const W: usize>(a: &[u8; N]) -> [u32; W] {
    let mut w = [0u32; W];
    let mut i = 0;
    while i < W && 4 * i + 3 < N {
        w[i] = wire([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
        i += 1;
    }
    w
}

/// The SYN-ACK answering a SYN between `src` (the SYN's destination, an
/// IPv4 or IPv6 address) and `dst`, checksum included: the host's model of
/// what the XDP program writes.
pub fn synack_tcp<const N: usize>(r: &Reply, o: &SynOptions, src: &[u8; N], dst: &[u8; N]) -> SynAckTcp {
    let addrs = sum(&addr_words::<N, 4>(src), sum(&addr_words::<N, 4>(dst), 0));
    let (w, len) = synack_words(r, o);
    let w = with_checksum(w, len, addrs);
    let mut out = [0u8; 40];
    for (i, x) in w.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&bytes(*x));
    }
    SynAckTcp { bytes: out, len }
}

/// The reply's IPv4 header as bytes (the host's model).
pub fn ipv4_header(src: &[u8; 4], dst: &[u8; 4], tcp_len: usize) -> [u8; 20] {
    let w = ipv4_words(wire(*src), wire(*dst), tcp_len);
    let mut out = [0u8; 20];
    for (i, x) in w.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&bytes(*x));
    }
    out
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
        let (src, dst) = ([192, 0, 2, 1], [192, 0, 2, 10]);
        let s = synack_tcp(&r, &o, &src, &dst);
        assert_eq!(s.len, 40);
        assert_eq!(&s.bytes[0..4], &[0, 80, 0x9c, 0x40]);
        assert_eq!(u32::from_be_bytes(s.bytes[4..8].try_into().unwrap()), 0xdead_beef);
        assert_eq!(u32::from_be_bytes(s.bytes[8..12].try_into().unwrap()), 1001);
        assert_eq!(s.bytes[12], 0xa0);
        assert_eq!(s.bytes[13], 0x12);
        assert_eq!(u16::from_be_bytes([s.bytes[14], s.bytes[15]]), 65160);
        assert_eq!(&s.bytes[18..20], &[0, 0], "urgent pointer");
        assert_eq!(&s.bytes[20..28], &[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
        assert_eq!(&s.bytes[32..40], &[0, 1, 0, 2, 1, 3, 3, 7]);
        let pseudo = sum16(&src, 0) + sum16(&dst, 0) + 6 + s.len as u32;
        assert_eq!(cfold(sum16(&s.bytes[..s.len], pseudo)), 0, "TCP checksum verifies");
        let ip = ipv4_header(&src, &dst, s.len);
        assert_eq!(cfold(sum16(&ip, 0)), 0, "IPv4 header checksum verifies");
        assert_eq!(&ip[..12], &[0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, ip[10], ip[11]]);
        assert_eq!((&ip[12..16], &ip[16..20]), (&src[..], &dst[..]));

        // No timestamps: MSS only, 24 bytes, v6 checksum.
        let r = Reply { sport: 1, dport: 2, client_isn: u32::MAX, cookie: 7, our_mss: 1440, our_wscale: 7, now_ms: 0 };
        let (a, b) = ([0x20; 16], [0xfd; 16]);
        let s = synack_tcp(&r, &SynOptions { mss: 1440, ..Default::default() }, &a, &b);
        assert_eq!(s.len, 24);
        assert_eq!(s.bytes[12], 0x60);
        assert_eq!(u32::from_be_bytes(s.bytes[8..12].try_into().unwrap()), 0, "ack wraps");
        assert!(s.bytes[24..].iter().all(|b| *b == 0));
        assert_eq!(cfold(sum16(&s.bytes[..24], sum16(&a, 0) + sum16(&b, 0) + 6 + 24)), 0);
        assert_eq!(ipv6_words(24).map(bytes), [[0x60, 0, 0, 0], [0, 24, 6, 64]]);
    }

    /// The word-built headers' checksums verify for any reply, options and
    /// addresses (checked with the byte-wise sum of `craft`).
    #[test]
    fn word_checksums_verify_for_any_reply() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let v = next();
            let r = Reply {
                sport: v as u16,
                dport: (v >> 16) as u16,
                client_isn: (v >> 32) as u32,
                cookie: next() as u32,
                our_mss: (next() % 9000) as u16,
                our_wscale: (v % 15) as u8,
                now_ms: next() as u32,
            };
            let o = SynOptions {
                mss: v as u16,
                has_wscale: v & 1 != 0,
                wscale: ((v >> 8) % 15) as u8,
                sack_ok: v & 2 != 0,
                has_ts: v & 4 != 0,
                tsval: (v >> 3) as u32,
            };
            let (a4, b4) = ((next() as u32).to_be_bytes(), (next() as u32).to_be_bytes());
            let s = synack_tcp(&r, &o, &a4, &b4);
            assert_eq!(s.len, if o.has_ts { 40 } else { 24 });
            assert_eq!(cfold(sum16(&s.bytes[..s.len], sum16(&a4, 0) + sum16(&b4, 0) + 6 + s.len as u32)), 0);
            assert_eq!(cfold(sum16(&ipv4_header(&a4, &b4, s.len), 0)), 0);
            let mut a6 = [0u8; 16];
            let mut b6 = [0u8; 16];
            a6[..8].copy_from_slice(&next().to_ne_bytes());
            a6[8..].copy_from_slice(&next().to_ne_bytes());
            b6[..8].copy_from_slice(&next().to_ne_bytes());
            b6[8..].copy_from_slice(&next().to_ne_bytes());
            let s = synack_tcp(&r, &o, &a6, &b6);
            assert_eq!(cfold(sum16(&s.bytes[..s.len], sum16(&a6, 0) + sum16(&b6, 0) + 6 + s.len as u32)), 0);
            // The echoed TSval and the encoded options, where present.
            if o.has_ts {
                assert_eq!(u32::from_be_bytes(s.bytes[32..36].try_into().unwrap()), o.tsval);
                let (ws, sack) = decode_tsecr(u32::from_be_bytes(s.bytes[28..32].try_into().unwrap()));
                assert_eq!((ws, sack), (o.has_wscale.then_some(o.wscale), o.sack_ok));
            }
        }
    }
}

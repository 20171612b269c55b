//! The packet and the clock: bounds-checked reads for the shared parser
//! (XDP and TC contexts), word loads and stores of checked packet ranges,
//! the per-CPU counters, the flow key. Touches no map.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    programs::{TcContext, XdpContext},
};
use tcpguard_common::{
    parse::{self, PacketBuf, TcpPacket},
    Counter, Counters, FlowKey,
};

/// The packet bounds of a program context (XDP ingress, TC egress).
pub(crate) trait PacketCtx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl PacketCtx for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

impl PacketCtx for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

/// Bounds-checked reads of a context's packet, for the shared parser.
pub(crate) struct Frame<'a, C>(pub(crate) &'a C);

impl<C: PacketCtx> PacketBuf for Frame<'_, C> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + off + N > end {
            return None;
        }
        // SAFETY: the range [start+off, start+off+N) was checked against data_end.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
    }
}

/// A 2- or 4-byte value of the packet at `p + off`, as `synack::wire`
/// reads it, with one load. The packet is only 2-byte aligned (the Ethernet
/// header is 14 bytes), and LLVM splits an access it may not assume aligned
/// into bytes: headers are read, and the SYN-ACK written, with plain loads
/// and stores instead. The kernel's verifier admits a misaligned packet
/// access wherever the architecture has efficient unaligned access (x86-64,
/// arm64); it refuses one only under strict alignment. The caller
/// bounds-checked `off + size_of::<T>()`.
#[inline(always)]
pub(crate) fn ld<T: Copy>(p: *mut u8, off: usize) -> T {
    // SAFETY: inside the checked range; see above on alignment.
    #[allow(clippy::cast_ptr_alignment)]
    unsafe {
        (p.add(off) as *const T).read()
    }
}

/// A value stored into the packet (see [`ld`]).
#[inline(always)]
pub(crate) fn st<T: Copy>(p: *mut u8, off: usize, v: T) {
    // SAFETY: inside the checked range; see `ld` on alignment.
    #[allow(clippy::cast_ptr_alignment)]
    unsafe {
        (p.add(off) as *mut T).write(v);
    }
}

/// `N` consecutive words of the packet from `off` (see [`ld`]).
#[inline(always)]
pub(crate) fn ld_words<const N: usize>(p: *mut u8, off: usize) -> [u32; N] {
    let mut w = [0u32; N];
    let mut i = 0;
    while i < N {
        w[i] = ld(p, off + 4 * i);
        i += 1;
    }
    w
}

/// `N` words stored into the packet from `off` (see [`ld`]).
#[inline(always)]
pub(crate) fn st_words<const N: usize>(p: *mut u8, off: usize, w: &[u32; N]) {
    let mut i = 0;
    while i < N {
        st(p, off + 4 * i, w[i]);
        i += 1;
    }
}

/// The protocol of an untagged IPv4 packet without IP options that is not a
/// fragment, from two header words; `None` for any other frame (`f`: the
/// frame's start, 34 bytes of it bounds-checked). The entry's and the
/// egress program's way past the full parse.
#[inline(always)]
pub(crate) fn plain_ipv4_proto(f: *mut u8) -> Option<u8> {
    // Bytes 12..16 (ethertype, version and IHL, TOS) and 20..24 (flags and
    // fragment offset, TTL, protocol).
    let [t0, t1, v, _] = tcpguard_common::synack::bytes(ld(f, 12));
    let [f0, f1, _, proto] = tcpguard_common::synack::bytes(ld(f, 20));
    let plain = u16::from_be_bytes([t0, t1]) == tcpguard_common::parse::ETH_P_IP
        && v == 0x45
        && u16::from_be_bytes([f0, f1]) & 0x1fff == 0;
    plain.then_some(proto)
}

#[inline(always)]
pub(crate) fn bump(c: &mut Counters, which: Counter) {
    c.v[which as usize] += 1;
}

/// `bump` for a counter chosen at run time (the parse error): the index
/// is bounds-checked where the verifier can see it.
#[inline(always)]
pub(crate) fn bump_dyn(c: &mut Counters, which: Counter) {
    let w = which as u32;
    // SAFETY: a volatile read of a local, so the check below stays.
    let i = unsafe { core::ptr::read_volatile(&w) } as usize;
    if i < tcpguard_common::COUNTER_COUNT {
        c.v[i] += 1;
    }
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn coarse_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Attack mode's clock for a SYN: the coarse clock, read once per jiffy per
/// CPU and kept in the CPU's rate window. Reading jiffies is one load; the
/// coarse clock's seqcount read of the timekeeper cost about 37 ns a SYN
/// under a full-rate flood on this VM. The coarse clock changes only at a
/// tick, as jiffies does, so the cached value is the clock's own, late by at
/// most the tick in which the timekeeper is updated after jiffies (a few
/// milliseconds; the closed marks allow for it).
#[inline(always)]
pub(crate) fn attack_clock_ns() -> u64 {
    // SAFETY: helper without arguments.
    let j = unsafe { bpf_jiffies64() };
    let Some(w) = crate::maps::RATE_WIN.get_ptr_mut(0) else { return coarse_ns() };
    // SAFETY: per-CPU value, only this CPU writes it.
    let w = unsafe { &mut *w };
    if w.clock_jiffies != j || w.clock_ns == 0 {
        w.clock_jiffies = j;
        w.clock_ns = coarse_ns();
        w.clock_ms = w.clock_ns / 1_000_000;
    }
    w.clock_ns
}

/// `now` in milliseconds: the CPU's attack clock keeps it (see
/// [`attack_clock_ns`]) when `now` is that clock's reading, so an answered
/// SYN makes no 64-bit division (the BPF target has no multiply-high for a
/// division by a constant); any other time is divided.
#[inline(always)]
pub(crate) fn millis(now: u64) -> u32 {
    match crate::maps::RATE_WIN.get(0) {
        Some(w) if w.clock_ns == now && now != 0 => w.clock_ms as u32,
        _ => (now / 1_000_000) as u32,
    }
}

#[inline(always)]
pub(crate) fn v4(p: &TcpPacket) -> [u8; 4] {
    [p.saddr[12], p.saddr[13], p.saddr[14], p.saddr[15]]
}

#[inline(always)]
pub(crate) fn flow_key(p: &TcpPacket) -> FlowKey {
    FlowKey { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, _pad: 0 }
}

/// The packet of a frame the entry found to be untagged IPv4 TCP without
/// IP options, not a fragment (`plain_ipv4_proto`), from six word loads
/// (`parse::plain_v4`, the parse's result): no byte-wise parse and no call.
/// `None`: the full parse decides (and counts) the frame.
#[inline(always)]
pub(crate) fn plain_tcp4(ctx: &XdpContext) -> Option<TcpPacket> {
    // SAFETY: reads the context pointer field of a valid XdpContext (see
    // `parse_frame` on the volatile read).
    let raw = unsafe { core::ptr::read_volatile(&ctx.ctx) };
    let ctx = XdpContext::new(raw);
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 50 > end {
        return None;
    }
    let f = start as *mut u8;
    let o = parse::PLAIN_V4_WORDS;
    let w = [ld(f, o[0]), ld(f, o[1]), ld(f, o[2]), ld(f, o[3]), ld(f, o[4]), ld(f, o[5])];
    parse::plain_v4(w, end - start)
}

/// The parse as a BPF subprogram of its own: its temporaries (headers
/// copied out of the packet) get a frame that is gone before the SYN and
/// ACK paths run.
/// (The volatile read keeps LLVM from passing `data`/`data_end` in as
/// plain integers, which the verifier refuses.)
#[inline(never)]
pub(crate) fn parse_frame(ctx: &XdpContext) -> Result<TcpPacket, parse::ParseError> {
    // SAFETY: reads the context pointer field of a valid XdpContext.
    let raw = unsafe { core::ptr::read_volatile(&ctx.ctx) };
    parse::parse(&Frame(&XdpContext::new(raw)))
}

//! tcpguard XDP datapath. A thin shell: parsing, handshake transitions, the
//! token bucket and half-open accounting live in `tcpguard-common` and are
//! unit-tested on the host; this file applies their results to BPF maps.
//!
//! Two modes. *Tracking* (calm): per packet, in order of cost: one per-CPU
//! counter lookup and the parse (every packet); the settings lookup (TCP);
//! the port filter (only if configured); the block-lists (only if
//! non-empty); the half-open lookup (TCP with ACK); the source table, the
//! half-open insert and the clock (SYN only). The allow-list is consulted
//! only when a drop is about to happen.
//!
//! *Attack* (a flood is on; entered by the datapath itself when one CPU's
//! SYN rate crosses `Settings::attack_syn_rate`, or by the daemon): no map
//! insert per SYN. A SYN updates a per-CPU count-min sketch and HyperLogLog
//! registers; only sources the sketch finds heavy reach the source table,
//! and one SYN in `attack_sample` is tracked in full. A SYN to a listening
//! socket is answered from XDP with a SYN-ACK carrying the kernel's own SYN
//! cookie (`bpf_tcp_gen_syncookie`), so the kernel keeps no state and, on a
//! NIC in driver mode, builds no skb for it. An ACK that reaches a listener
//! (no connection) with no valid cookie is dropped.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{bpf_sock_tuple, tcphdr, xdp_action, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_loop, bpf_sk_release, bpf_skc_lookup_tcp,
        bpf_tcp_check_syncookie, bpf_tcp_gen_syncookie, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    },
    macros::{classifier, map, raw_tracepoint, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TcContext, XdpContext},
};
use tcpguard_common::{
    halfopen::{self, BUCKETS, NS_PER_SEC},
    handshake::{self, AckAction, SynAckAction, SynAction},
    parse::{self, PacketBuf, TcpPacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    ratelimit::{self, Bucket},
    sketch::{self, Hll, Sketch},
    synack,
    verdict::{self, Rule},
    AggEvent, AggStats, AllowEntry, AttackState, BlockEntry, Counter, Counters, FlowKey, HalfOpen, HeavyEvent,
    HoBucket, ModeEvent, RateWindow, Settings, SrcKey, SrcStats, ATTACK_REASON_SYN_RATE, DEFAULT_AGG_ENTRIES,
    DEFAULT_HALF_OPEN_ENTRIES, DEFAULT_SRC_ENTRIES, FLAG_ANSWER, FLAG_EGRESS, FLAG_HAS_ALLOWS, FLAG_HAS_BLOCKS,
    FLAG_MONITOR, FLAG_PORT_FILTER, FLAG_TX_BULK, FLAG_XDP_COOKIES, LIST_ENTRIES, LOCAL_ADDR_ENTRIES, PORT_ENTRIES,
};

#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
// One LRU list shared by all CPUs: BPF_F_NO_COMMON_LRU would split the
// capacity per CPU, and a flood landing on one CPU would then evict live
// entries at max_entries / ncpus (measured: 100k sources counted as 210k).
#[map]
static HALF_OPEN: LruHashMap<FlowKey, HalfOpen> = LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_ENTRIES, 0);
/// Coarse time of the last SYN per 4-tuple hash: the ACK path's pre-filter.
#[map]
static SYN_SEEN: Array<u64> = Array::with_max_entries(handshake::FILTER_SLOTS, 0);
#[map]
static HO_BUCKETS: PerCpuArray<HoBucket> = PerCpuArray::with_max_entries(BUCKETS, 0);
#[map]
static SRC_STATS: LruHashMap<SrcKey, SrcStats> = LruHashMap::with_max_entries(DEFAULT_SRC_ENTRIES, 0);
/// Per-aggregate (/24, /64) SYN counts: a flood spread over one subnet,
/// each address under the heavy rate, is heavy as a whole.
#[map]
static AGG_STATS: LruHashMap<SrcKey, AggStats> = LruHashMap::with_max_entries(DEFAULT_AGG_ENTRIES, 0);
#[map]
static ALLOW_V4: LpmTrie<[u8; 4], AllowEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], AllowEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
/// Scratch space for building a `SrcStats` off the BPF stack.
#[map]
static SCRATCH: PerCpuArray<SrcStats> = PerCpuArray::with_max_entries(1, 0);
/// Heavy-source reports for the daemon.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(PORT_ENTRIES, 0);
/// Attack-mode state, shared by all CPUs and the daemon.
#[map]
static ATTACK: Array<AttackState> = Array::with_max_entries(1, 0);
#[map]
static RATE_WIN: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SKETCH: PerCpuArray<Sketch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static HLL: PerCpuArray<Hll> = PerCpuArray::with_max_entries(1, 0);
/// The host's own addresses (the daemon keeps it in step with the kernel's):
/// the responder answers, and the ACK check drops, only for these.
#[map]
static LOCAL_ADDRS: HashMap<SrcKey, u8> = HashMap::with_max_entries(LOCAL_ADDR_ENTRIES, 0);
/// Per CPU: the `cookie_sent` count the transmit watch has accounted for.
#[map]
static TX_MARK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// Buffers of the SYN-cookie responder, off the small BPF stack.
#[repr(C)]
struct Reply {
    /// The SYN's TCP header, copied off the packet for the cookie helper
    /// and the option walk.
    th: [u8; 64],
    /// The SYN-ACK's TCP header.
    tcp: [u8; 40],
    /// The reply's IPv4 header.
    ip4: [u8; 20],
    /// The socket lookup's key.
    tuple: bpf_sock_tuple,
}
#[map]
static REPLY: PerCpuArray<Reply> = PerCpuArray::with_max_entries(1, 0);

/// `sk_state` of a listening socket.
const TCP_LISTEN: u32 = 10;
/// `BPF_F_CURRENT_NETNS`: look sockets up in the device's namespace.
const CURRENT_NETNS: u64 = u64::MAX;

/// The tcpguard datapath.
#[xdp]
pub fn tcpguard(ctx: XdpContext) -> u32 {
    // Whatever goes wrong inside, the packet passes.
    try_tcpguard(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// A program that passes everything: the benchmark baseline, and the peer
/// program veth needs to deliver XDP_TX frames.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The packet bounds of a program context (XDP ingress, TC egress).
trait PacketCtx {
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
struct Frame<'a, C>(&'a C);

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

#[inline(always)]
fn bump(c: &mut Counters, which: Counter) {
    c.v[which as usize] += 1;
}

/// `bump` for a counter chosen at run time (the parse error): the index
/// is bounds-checked where the verifier can see it.
#[inline(always)]
fn bump_dyn(c: &mut Counters, which: Counter) {
    let w = which as u32;
    // SAFETY: a volatile read of a local, so the check below stays.
    let i = unsafe { core::ptr::read_volatile(&w) } as usize;
    if i < tcpguard_common::COUNTER_COUNT {
        c.v[i] += 1;
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn v4(p: &TcpPacket) -> [u8; 4] {
    [p.saddr[12], p.saddr[13], p.saddr[14], p.saddr[15]]
}

#[inline(always)]
fn allowed(p: &TcpPacket) -> bool {
    if p.is_v6 {
        ALLOW_V6.get(Key::new(128, p.saddr)).is_some()
    } else {
        ALLOW_V4.get(Key::new(32, v4(p))).is_some()
    }
}

/// Allow-listed, when the allow-lists hold anything at all.
#[inline(always)]
fn allowed_if_any(s: &Settings, p: &TcpPacket) -> bool {
    s.flags & FLAG_HAS_ALLOWS != 0 && allowed(p)
}

/// Addressed to this host: to the interface's own MAC and a local address.
/// Anything else (forwarded traffic, a neighbour's address, a stale MAC) is
/// the kernel's to route or discard: never answered or dropped here.
#[inline(always)]
fn for_host(ctx: &XdpContext, s: &Settings, p: &TcpPacket) -> bool {
    match Frame(ctx).bytes::<6>(0) {
        Some(dst) if s.own_mac(&dst) => {}
        _ => return false,
    }
    // SAFETY: read-only presence check.
    unsafe { LOCAL_ADDRS.get(&SrcKey { addr: p.daddr }) }.is_some()
}

/// `Some(true)` blocked, `Some(false)` matched an expired entry, `None` no match.
#[inline(always)]
fn blocked(p: &TcpPacket) -> Option<bool> {
    let e = if p.is_v6 { BLOCK_V6.get(Key::new(128, p.saddr)) } else { BLOCK_V4.get(Key::new(32, v4(p))) }?;
    let exp = e.expires_ns;
    // The coarse clock (one jiffy behind at most) is enough for TTLs in
    // seconds, and cheaper on the drop path.
    Some(exp == 0 || coarse_ns() < exp)
}

/// A rule wants the packet dropped: the verdict (allow-list, monitor mode,
/// the counter by reason and kind) is `verdict::decide`'s; its counter is
/// recorded here.
#[inline(always)]
fn judge(c: &mut Counters, s: &Settings, p: &TcpPacket, rule: Rule, syn: bool) -> verdict::Verdict {
    let v = verdict::decide(s.flags, rule, allowed_if_any(s, p), syn);
    bump(c, v.counter);
    v
}

#[inline(always)]
fn flow_key(p: &TcpPacket) -> FlowKey {
    FlowKey { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, _pad: 0 }
}

/// Close an entry: an answered (half-open) one leaves the accounting ring
/// and the source's window; an unanswered one was never counted.
#[inline(always)]
fn close_half_open(e: &HalfOpen, src: &SrcKey, timeout: u64, now: u64) -> Option<*mut SrcStats> {
    if e.answered() && !handshake::is_expired(e, now, timeout) {
        let sec = e.synack_ns / NS_PER_SEC;
        if let Some(b) = HO_BUCKETS.get_ptr_mut(halfopen::slot(sec)) {
            // SAFETY: per-CPU slot, only this CPU writes it.
            halfopen::record_close(unsafe { &mut *b }, sec);
        }
    }
    let st = SRC_STATS.get_ptr_mut(src)?;
    // SAFETY: map value pointer; concurrent updates may lose an increment.
    let sr = unsafe { &mut *st };
    if e.answered() && e.synack_ns >= sr.window_start_ns && sr.half_open > 0 {
        sr.half_open -= 1;
    }
    Some(st)
}

/// The parse as a BPF subprogram of its own: its temporaries (headers
/// copied out of the packet) get a frame that is gone before the SYN and
/// ACK paths run.
/// (The volatile read keeps LLVM from passing `data`/`data_end` in as
/// plain integers, which the verifier refuses.)
#[inline(never)]
fn parse_frame(ctx: &XdpContext) -> Result<TcpPacket, parse::ParseError> {
    // SAFETY: reads the context pointer field of a valid XdpContext.
    let raw = unsafe { core::ptr::read_volatile(&ctx.ctx) };
    parse::parse(&Frame(&XdpContext::new(raw)))
}

fn try_tcpguard(ctx: &XdpContext) -> Result<u32, ()> {
    let c = COUNTERS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    let c = unsafe { &mut *c };
    bump(c, Counter::Packets);

    let p = match parse_frame(ctx) {
        Ok(p) => p,
        Err(e) => {
            bump_dyn(c, e.counter());
            return Ok(xdp_action::XDP_PASS);
        }
    };
    // Index 0 of an array always exists; its all-zero value is the default.
    let s = SETTINGS.get(0).ok_or(())?;
    if s.flags & FLAG_PORT_FILTER != 0 {
        // SAFETY: read-only presence check.
        if unsafe { PORTS.get(p.dport) }.is_none() {
            bump(c, Counter::PassUnprotectedPort);
            return Ok(xdp_action::XDP_PASS);
        }
    }
    // The one exit of a TCP packet to a protected port: a drop or an XDP_TX
    // was counted where it was decided (`drop_*`, `cookie_sent`); a pass is
    // counted here.
    let v = on_tcp(ctx, c, s, &p);
    if v == xdp_action::XDP_PASS {
        bump(c, Counter::PassTcp);
    }
    Ok(v)
}

/// A TCP packet to a protected port: block-list, then by kind.
#[inline(always)]
fn on_tcp(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket) -> u32 {
    let syn = p.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
    if s.flags & FLAG_HAS_BLOCKS != 0 {
        match blocked(p) {
            // Dropped, or (allow-listed, monitor mode) tracked like any other.
            Some(true) => {
                if judge(c, s, p, Rule::Blocked, syn).drop {
                    return xdp_action::XDP_DROP;
                }
            }
            Some(false) => bump(c, Counter::BlockExpired),
            None => {}
        }
    }
    if syn {
        let v = on_syn(ctx, c, s, p);
        if v != RESPOND {
            return v;
        }
        let v = answer_syn(ctx, c, s, p);
        return if v == KERNEL_ANSWERS { xdp_action::XDP_PASS } else { v };
    }
    if p.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK && attack_active() {
        match attack_ack(ctx, c, s, p) {
            AckCheck::Drop => return xdp_action::XDP_DROP,
            AckCheck::Cookie => {
                on_ack(c, s, p, Counter::SampledCompleted);
                return xdp_action::XDP_PASS;
            }
            AckCheck::Pass => {}
        }
    }
    if p.has(TCP_SYN) {
        if p.has(TCP_ACK) {
            bump(c, Counter::SynAckIn);
        }
        return xdp_action::XDP_PASS;
    }
    if p.has(TCP_RST) {
        bump(c, Counter::Rst);
        on_rst(c, s, p);
    } else if p.has(TCP_ACK) {
        on_ack(c, s, p, Counter::HandshakeCompleted);
    }
    if p.has(TCP_FIN) {
        bump(c, Counter::Fin);
        if let Some(st) = SRC_STATS.get_ptr_mut(&SrcKey { addr: p.saddr }) {
            // SAFETY: map value pointer.
            unsafe { (*st).fins += 1 };
        }
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn attack_active() -> bool {
    matches!(ATTACK.get(0), Some(a) if a.active != 0)
}

/// A client SYN. A BPF subprogram: the packet's dispatch in the main
/// program stays small, and the combined stack of a call chain (at most
/// 512 bytes) has room for the responder below it.
#[inline(never)]
fn on_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket) -> u32 {
    bump(c, Counter::Syn);
    let now = now_ns();
    let Some(w) = RATE_WIN.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: per-CPU value, only this CPU writes it.
    let w = unsafe { &mut *w };
    let over = tcpguard_common::rate_step(w, now, s.attack_window_syns());
    let Some(atk) = ATTACK.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: shared map value; the fields are plain words, a racing CPU
    // entering at the same instant writes the same kind of values.
    let atk = unsafe { &mut *atk };
    if atk.active == 0 && over {
        atk.active = 1;
        atk.reason = ATTACK_REASON_SYN_RATE;
        atk.entered_ns = now;
        atk.trigger_window_ns = w.win_start_ns;
        atk.first_cookie_ns = 0;
        atk.entries += 1;
        bump(c, Counter::AttackEntered);
        if let Some(mut ev) = EVENTS.reserve::<ModeEvent>(0) {
            ev.write(ModeEvent { entered_ns: now, trigger_window_ns: w.win_start_ns });
            ev.submit(0);
        }
    }
    if atk.active == 0 {
        // Tracking mode: the source's aggregate (/24, /64) too.
        if s.heavy_prefix_syns_per_sec != 0 {
            count_aggregate(c, s, p, now);
        }
        return track_syn(ctx, c, s, p, &SynArgs { now, promoted: 0 });
    }

    // Attack mode: fixed-memory accounting; heavy (or rate-limited)
    // sources are followed in the source table, one SYN in `attack_sample`
    // is tracked in full; the flood's one-SYN sources never reach a table.
    bump(c, Counter::AttackSyn);
    let h = sketch::src_hash(&p.saddr, s.hash_seed);
    if let Some(r) = HLL.get_ptr_mut(0) {
        // SAFETY: per-CPU value.
        sketch::hll_add(unsafe { &mut *r }, h);
    }
    let sk = SKETCH.get_ptr_mut(0);
    let est = match sk {
        // SAFETY: per-CPU value.
        Some(sk) => sketch::cms_add(unsafe { &mut *sk }, h, w.epoch),
        None => 0,
    };
    let promote = tcpguard_common::promote_threshold(s);
    let heavy = promote != 0 && sketch::promote_estimate(est, w.epoch_syns) >= promote;
    // Aggregates (/24, /64) through the same sketch under their own hash:
    // only one the sketch finds heavy reaches its table.
    if s.heavy_prefix_syns_per_sec != 0 {
        let ah = sketch::src_hash(&tcpguard_common::aggregate_key(&p.saddr), !s.hash_seed);
        let aest = match sk {
            // SAFETY: per-CPU value (the pointer looked up above).
            Some(sk) => sketch::cms_add(unsafe { &mut *sk }, ah, w.epoch),
            None => 0,
        };
        if sketch::promote_estimate(aest, w.epoch_syns) >= u64::from(s.heavy_prefix_syns_per_sec) {
            count_aggregate(c, s, p, now);
        }
    }
    let sampled = c.get(Counter::AttackSyn) % s.sample_every() == 0;
    if heavy || sampled {
        if sampled {
            bump(c, Counter::AttackSampled);
        }
        let v = track_syn(ctx, c, s, p, &SynArgs { now, promoted: if heavy { est as u64 } else { 0 } });
        if v == xdp_action::XDP_DROP {
            return v;
        }
    }
    if allowed_if_any(s, p) {
        bump(c, Counter::CookieSkipAllowed);
    } else if s.flags & FLAG_MONITOR != 0 {
        bump(c, Counter::MonitorCookie);
    } else if s.flags & FLAG_XDP_COOKIES != 0 {
        // The caller calls the responder: a call chain one frame shorter.
        return RESPOND;
    }
    xdp_action::XDP_PASS
}

/// The tracking path of a SYN: source table, rate limit, half-open table.
/// `promoted` > 0: a source the attack-mode sketch found heavy with that
/// many SYNs this epoch (it is entered in the source table, and no
/// half-open entry is made for it).
/// What `track_syn` needs besides the packet (a BPF subprogram takes at
/// most five arguments).
struct SynArgs {
    now: u64,
    promoted: u64,
}

#[inline(never)]
fn track_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, a: &SynArgs) -> u32 {
    let (now, promoted) = (a.now, a.promoted);
    let src = &SrcKey { addr: p.saddr };

    let st = match SRC_STATS.get_ptr_mut(src) {
        Some(st) => st,
        None => {
            // Build the new entry in a per-CPU scratch slot (the BPF stack
            // is 512 bytes).
            let Some(fresh) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
            // SAFETY: per-CPU scratch value, only this CPU uses it.
            let fresh = unsafe { &mut *fresh };
            *fresh = SrcStats::default();
            fresh.first_seen_ns = now;
            fresh.window_start_ns = now;
            fresh.second_start_ns = now;
            if promoted > 0 {
                // What the sketch counted before the source got here, so
                // the heavy report fires now.
                fresh.syns = promoted - 1;
                let heavy = if s.heavy_syns_per_sec == 0 { promoted } else { s.heavy_syns_per_sec };
                fresh.second_syns = if promoted < heavy { promoted } else { heavy } - 1;
                bump(c, Counter::SketchPromoted);
            }
            // A failed insert is counted, never logged: it can happen per
            // packet under a flood. The SYN is then judged and tracked on
            // the fresh copy (what a new source gets), so it still meets
            // the rate limit and opens its half-open entry.
            if SRC_STATS.insert(src, &*fresh, 0).is_err() {
                bump(c, Counter::SourceInsertFailed);
                fresh as *mut SrcStats
            } else {
                bump(c, Counter::NewSource);
                match SRC_STATS.get_ptr_mut(src) {
                    Some(st) => st,
                    None => fresh as *mut SrcStats,
                }
            }
        }
    };
    // SAFETY: map value pointer; see SrcStats docs on concurrency.
    let st = unsafe { &mut *st };
    st.syns += 1;
    st.last_seen_ns = now;
    if now.saturating_sub(st.second_start_ns) >= NS_PER_SEC {
        st.second_start_ns = now;
        st.second_syns = 0;
    }
    st.second_syns += 1;
    if s.heavy_syns_per_sec != 0 && st.second_syns == s.heavy_syns_per_sec {
        // Written in place in the ring buffer: no copy on the BPF stack.
        if let Some(mut ev) = EVENTS.reserve::<HeavyEvent>(0) {
            ev.write(HeavyEvent { addr: p.saddr, syns: st.syns, half_open: st.half_open, completed: st.completed });
            ev.submit(0);
            bump(c, Counter::HeavyEvent);
        }
        // Rare by construction (once per source per second at the heavy
        // rate): a datapath record for the daemon's log.
        if p.is_v6 {
            aya_log_ebpf::info!(ctx, "heavy source {:i}: {} SYNs within one second", p.saddr, st.second_syns);
        } else {
            let a = u32::from_be_bytes(v4(p));
            aya_log_ebpf::info!(ctx, "heavy source {:i}: {} SYNs within one second", a, st.second_syns);
        }
    }

    if s.syn_rate != 0 {
        let b = Bucket { tokens_milli: st.tokens_milli, refill_ns: st.refill_ns };
        let (ok, b) = ratelimit::take(b, now, s.syn_rate, s.syn_burst);
        st.tokens_milli = b.tokens_milli;
        st.refill_ns = b.refill_ns;
        if !ok {
            let v = judge(c, s, p, Rule::RateLimited, true);
            if v.source_dropped {
                st.dropped += 1;
            }
            if v.drop {
                return xdp_action::XDP_DROP;
            }
        }
    }
    if promoted == 0 && track_handshake(c, s, p, now) && s.flags & FLAG_EGRESS == 0 {
        // No egress program: half-open from the SYN.
        count_half_open(c, Some(st), now, s.timeout_ns());
    }
    xdp_action::XDP_PASS
}

/// Count a SYN against its source's aggregate (/24 or /64) and report the
/// aggregate once per second at the heavy-prefix rate.
#[inline(never)]
fn count_aggregate(c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64) {
    let key = SrcKey { addr: tcpguard_common::aggregate_key(&p.saddr) };
    let a = match AGG_STATS.get_ptr_mut(&key) {
        Some(a) => a,
        None => {
            let fresh = AggStats { syns: 0, second_syns: 0, second_start_ns: now };
            if AGG_STATS.insert(&key, &fresh, 0).is_err() {
                return;
            }
            match AGG_STATS.get_ptr_mut(&key) {
                Some(a) => a,
                None => return,
            }
        }
    };
    // SAFETY: map value pointer; concurrent updates may lose an increment.
    let a = unsafe { &mut *a };
    a.syns += 1;
    if now.saturating_sub(a.second_start_ns) >= NS_PER_SEC {
        a.second_start_ns = now;
        a.second_syns = 0;
    }
    a.second_syns += 1;
    if a.second_syns == u64::from(s.heavy_prefix_syns_per_sec) {
        if let Some(mut ev) = EVENTS.reserve::<AggEvent>(0) {
            let len = if p.is_v6 { tcpguard_common::AGG_V6_LEN } else { tcpguard_common::AGG_V4_LEN };
            ev.write(AggEvent { addr: key.addr, syns: a.syns, len: u32::from(len), _pad: 0 });
            ev.submit(0);
            bump(c, Counter::HeavyPrefixEvent);
        }
    }
}

/// A handshake became half-open at `now`: the accounting ring and the
/// source's window.
#[inline(always)]
fn count_half_open(c: &mut Counters, st: Option<&mut SrcStats>, now: u64, timeout: u64) {
    bump(c, Counter::HalfOpenOpened);
    let sec = now / NS_PER_SEC;
    if let Some(b) = HO_BUCKETS.get_ptr_mut(halfopen::slot(sec)) {
        // SAFETY: per-CPU slot.
        halfopen::record_open(unsafe { &mut *b }, sec);
    }
    if let Some(st) = st {
        if now.saturating_sub(st.window_start_ns) >= timeout {
            st.failed += st.half_open;
            st.half_open = 0;
            st.window_start_ns = now;
        }
        st.half_open += 1;
    }
}

/// Enter a client SYN in the half-open table. It becomes half-open when
/// the server answers (`tcpguard_egress`), not here: a SYN the server drops
/// or refuses is never half-open.
/// Returns whether a new handshake was entered.
#[inline(always)]
fn track_handshake(c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64) -> bool {
    let key = flow_key(p);
    let answered = if s.flags & FLAG_EGRESS == 0 { now } else { 0 };
    let e = HalfOpen { isn: p.seq, server_isn: 0, syn_ns: now, synack_ns: answered };
    // Most SYNs (all of a flood's) open a new handshake: try the insert
    // first and look the tuple up only when it already exists.
    let entered = if HALF_OPEN.insert(&key, &e, BPF_NOEXIST.into()).is_ok() {
        true
    } else {
        // SAFETY: the value is copied out before any update.
        let existing = unsafe { HALF_OPEN.get(&key) }.copied();
        match handshake::on_syn(existing.as_ref(), p.seq) {
            SynAction::Retransmit => {
                bump(c, Counter::SynRetransmit);
                false
            }
            action => {
                if action == SynAction::Replace {
                    bump(c, Counter::HalfOpenReplaced);
                }
                HALF_OPEN.insert(&key, &e, 0).is_ok()
            }
        }
    };
    if entered {
        if let Some(slot) = SYN_SEEN.get_ptr_mut(handshake::filter_slot(&p.saddr, p.sport, p.dport)) {
            // SAFETY: array slot; a racing writer stores a time just as recent.
            unsafe { *slot = now };
        }
        bump(c, Counter::SynTracked);
    }
    entered
}

/// `N` bytes at `off` of the packet, bounds-checked for the verifier.
#[inline(always)]
fn pkt_ptr<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*mut u8> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut u8)
}

#[inline(always)]
fn store<const N: usize>(ctx: &XdpContext, off: usize, b: &[u8; N]) -> Option<()> {
    let ptr = pkt_ptr::<N>(ctx, off)?;
    // SAFETY: [ptr, ptr + N) lies inside the packet (checked above).
    unsafe { core::ptr::write_unaligned(ptr as *mut [u8; N], *b) };
    Some(())
}

/// The socket for the packet's 4-tuple (established, TIME_WAIT, request or
/// listener), or null. The caller releases it.
#[inline(always)]
fn lookup_socket(ctx: &XdpContext, p: &TcpPacket) -> *mut aya_ebpf::bindings::bpf_sock {
    let Some(r) = REPLY.get_ptr_mut(0) else { return core::ptr::null_mut() };
    // SAFETY: per-CPU scratch; writing plain-data union members.
    let t = unsafe { &mut (*r).tuple };
    let size = if p.is_v6 {
        // SAFETY: as above.
        unsafe {
            let v6 = &mut t.__bindgen_anon_1.ipv6;
            v6.saddr = words(&p.saddr);
            v6.daddr = words(&p.daddr);
            v6.sport = p.sport.to_be();
            v6.dport = p.dport.to_be();
        }
        36
    } else {
        // SAFETY: as above.
        unsafe {
            let v4t = &mut t.__bindgen_anon_1.ipv4;
            v4t.saddr = u32::from_ne_bytes(v4(p));
            v4t.daddr = u32::from_ne_bytes([p.daddr[12], p.daddr[13], p.daddr[14], p.daddr[15]]);
            v4t.sport = p.sport.to_be();
            v4t.dport = p.dport.to_be();
        }
        12
    };
    // SAFETY: helper call with the tuple in scratch of the stated size.
    unsafe { bpf_skc_lookup_tcp(ctx.ctx as *mut _, t, size, CURRENT_NETNS, 0) }
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// The IP header length the responder rewrites in place: 20 (IPv4 without
/// options) or 40 (IPv6 without extension headers); 0 for anything else.
#[inline(always)]
fn plain_ip_len(p: &TcpPacket) -> usize {
    let want = if p.is_v6 { 40 } else { 20 };
    if p.l4_off as usize == p.l3_off as usize + want {
        want
    } else {
        0
    }
}

/// `answer_syn`'s "not answered here": the SYN goes on to the kernel.
const KERNEL_ANSWERS: u32 = u32::MAX;
/// `on_syn`'s "answer this SYN from XDP" (then `answer_syn` decides).
const RESPOND: u32 = u32::MAX - 1;

/// Answer a SYN to a listener with a cookie SYN-ACK (XDP_TX), or
/// [`KERNEL_ANSWERS`]. A BPF subprogram of its own (at most five
/// arguments, no stack arguments): its buffers get their own stack frame.
#[inline(never)]
fn answer_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket) -> u32 {
    answer(ctx, c, s, p).unwrap_or(KERNEL_ANSWERS)
}

#[inline(always)]
fn answer(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket) -> Option<u32> {
    if !for_host(ctx, s, p) {
        bump(c, Counter::NotForHost);
        return None;
    }
    let ip_len = plain_ip_len(p);
    if ip_len == 0 {
        bump(c, Counter::CookieOddHeaders);
        return None;
    }
    let th_len = (p.doff as u32 & 0xf) * 4;
    if th_len < 20 {
        bump(c, Counter::CookieOddHeaders);
        return None;
    }
    let r = REPLY.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, only this CPU uses it during this run.
    let r = unsafe { &mut *r };
    let sk = lookup_socket(ctx, p);
    if sk.is_null() {
        bump(c, Counter::CookieNoListener);
        return None;
    }
    // SAFETY: non-null socket from the lookup; released on every path below.
    if unsafe { (*sk).state } != TCP_LISTEN {
        unsafe { bpf_sk_release(sk as *mut _) };
        bump(c, Counter::CookieOtherSocket);
        return None;
    }
    if s.flags & FLAG_ANSWER == 0 {
        // SAFETY: the socket from the lookup, released once.
        unsafe { bpf_sk_release(sk as *mut _) };
        bump(c, Counter::CookieHeld);
        return None;
    }
    let cookie = gen_cookie(ctx, p, sk, ip_len, th_len, &mut r.th);
    // SAFETY: the socket from the lookup, released once.
    unsafe { bpf_sk_release(sk as *mut _) };
    let Some(cookie) = cookie else {
        bump(c, Counter::CookieRefused);
        return None;
    };
    let mut walk = synack::OptionWalk::new(th_len as usize);
    // Linux clients' layout is read in place; anything else is walked.
    match synack::linux_layout(&r.th, th_len as usize) {
        Some(o) => walk.found = o,
        // SAFETY: the callback gets a pointer to `walk`, alive for the call.
        None => unsafe {
            bpf_loop(
                synack::MAX_OPTIONS as u32,
                option_cb as *mut core::ffi::c_void,
                &mut walk as *mut synack::OptionWalk as *mut core::ffi::c_void,
                0,
            );
        },
    }
    let mss = match (p.is_v6, s.synack_mss4, s.synack_mss6) {
        (false, 0, _) => 1460,
        (false, m, _) => m as u16,
        (true, _, 0) => 1440,
        (true, _, m) => m as u16,
    };
    let now_ms = (now_ns() / 1_000_000) as u32;
    let reply = synack::Reply {
        sport: p.sport,
        dport: p.dport,
        client_isn: p.seq,
        cookie,
        our_mss: mss,
        our_wscale: s.synack_wscale as u8,
        now_ms,
    };
    let len = synack::write_synack(&mut r.tcp, &reply, &walk.found);
    let l3 = p.l3_off as usize & 0x3f;
    let l4 = p.l4_off as usize & 0x7f;
    // Resize the frame to exactly the reply: headers, no payload.
    let cur = (ctx.data_end() - ctx.data()) as i32;
    let delta = (l4 + len) as i32 - cur;
    if delta != 0 {
        // SAFETY: helper on our own context; packet pointers are re-derived after.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            bump(c, Counter::CookieOddHeaders);
            return None;
        }
    }
    let sum = if p.is_v6 {
        synack::tcp_checksum_v6(&p.daddr, &p.saddr, &r.tcp, len)
    } else {
        let (src, dst) = ([p.daddr[12], p.daddr[13], p.daddr[14], p.daddr[15]], v4(p));
        r.ip4 = synack::ipv4_header(&src, &dst, len);
        store(ctx, l3, &r.ip4)?;
        synack::tcp_checksum_v4(&src, &dst, &r.tcp, len)
    };
    let sum = sum.to_be_bytes();
    r.tcp[16] = sum[0];
    r.tcp[17] = sum[1];
    if p.is_v6 {
        store(ctx, l3, &synack::ipv6_fixed(len))?;
        store(ctx, l3 + 8, &p.daddr)?;
        store(ctx, l3 + 24, &p.saddr)?;
    }
    if len == 40 {
        store(ctx, l4, &r.tcp)?;
    } else {
        // SAFETY: the first 24 bytes of the 40-byte buffer.
        store(ctx, l4, unsafe { &*(r.tcp.as_ptr() as *const [u8; 24]) })?;
    }
    let macs = Frame(ctx).bytes::<12>(0)?;
    store(
        ctx,
        0,
        &[macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]],
    )?;
    bump(c, Counter::CookieSent);
    if let Some(atk) = ATTACK.get_ptr_mut(0) {
        // SAFETY: shared map value; a racing first write stores a time as early.
        unsafe {
            if (*atk).first_cookie_ns == 0 {
                (*atk).first_cookie_ns = now_ns();
            }
        }
    }
    Some(xdp_action::XDP_TX)
}

/// One step of the SYN option walk, called by `bpf_loop`: 0 goes on, 1 stops.
extern "C" fn option_cb(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(r) = REPLY.get_ptr(0) else { return 1 };
    // SAFETY: ctx is the walk `answer` passed; r the per-CPU copy of the header.
    let (w, r) = unsafe { (&mut *(ctx as *mut synack::OptionWalk), &*r) };
    if synack::option_step(&r.th, w) {
        0
    } else {
        1
    }
}

/// The kernel's cookie for this SYN from its listener; the SYN's TCP
/// header is copied to `th` for the helper and the option walk.
#[inline(always)]
fn gen_cookie(
    ctx: &XdpContext,
    p: &TcpPacket,
    sk: *mut aya_ebpf::bindings::bpf_sock,
    ip_len: usize,
    th_len: u32,
    th: &mut [u8; 64],
) -> Option<u32> {
    let th_len = if th_len > 60 { 60 } else { th_len };
    let th = th.as_mut_ptr();
    // SAFETY: copies th_len (20..=60) bytes into a 64-byte buffer.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, p.l4_off as u32, th as *mut _, th_len) } != 0 {
        return None;
    }
    let l3 = p.l3_off as usize & 0x3f;
    let r = if ip_len == 40 {
        let iph = pkt_ptr::<40>(ctx, l3)?;
        // SAFETY: sk is a listener; iph spans 40 packet bytes; th th_len bytes.
        unsafe { bpf_tcp_gen_syncookie(sk as *mut _, iph as *mut _, 40, th as *mut tcphdr, th_len) }
    } else {
        let iph = pkt_ptr::<20>(ctx, l3)?;
        // SAFETY: as above, 20 bytes of IPv4 header.
        unsafe { bpf_tcp_gen_syncookie(sk as *mut _, iph as *mut _, 20, th as *mut tcphdr, th_len) }
    };
    if r < 0 {
        return None;
    }
    Some(r as u32)
}

enum AckCheck {
    /// Not a listener's business (a connection exists, or no socket at all).
    Pass,
    /// A valid cookie ACK: a handshake completed through a cookie.
    Cookie,
    Drop,
}

/// Attack mode, an ACK without SYN/RST: one reaching a listener (no
/// connection for its 4-tuple) must carry a valid cookie.
#[inline(never)]
fn attack_ack(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket) -> AckCheck {
    let ip_len = plain_ip_len(p);
    if ip_len == 0 {
        return AckCheck::Pass;
    }
    if !for_host(ctx, s, p) {
        bump(c, Counter::NotForHost);
        return AckCheck::Pass;
    }
    let sk = lookup_socket(ctx, p);
    if sk.is_null() {
        // No socket at all: a closed port, or traffic not for this host.
        return AckCheck::Pass;
    }
    // SAFETY: non-null socket from the lookup; released below.
    if unsafe { (*sk).state } != TCP_LISTEN {
        unsafe { bpf_sk_release(sk as *mut _) };
        return AckCheck::Pass;
    }
    let l3 = p.l3_off as usize & 0x3f;
    let l4 = p.l4_off as usize & 0x7f;
    let r = match (pkt_ptr::<40>(ctx, l3), pkt_ptr::<20>(ctx, l3), pkt_ptr::<20>(ctx, l4)) {
        // SAFETY: listener socket; header pointers bounds-checked.
        (Some(iph), _, Some(th)) if ip_len == 40 => unsafe {
            bpf_tcp_check_syncookie(sk as *mut _, iph as *mut _, 40, th as *mut tcphdr, 20)
        },
        // SAFETY: as above.
        (_, Some(iph), Some(th)) if ip_len == 20 => unsafe {
            bpf_tcp_check_syncookie(sk as *mut _, iph as *mut _, 20, th as *mut tcphdr, 20)
        },
        _ => -1,
    };
    // SAFETY: the socket from the lookup, released once.
    unsafe { bpf_sk_release(sk as *mut _) };
    if r == 0 {
        bump(c, Counter::CookieAckValid);
        return AckCheck::Cookie;
    }
    if judge(c, s, p, Rule::InvalidAck, false).drop {
        AckCheck::Drop
    } else {
        AckCheck::Pass
    }
}

#[inline(never)]
fn on_ack(c: &mut Counters, s: &Settings, p: &TcpPacket, completed: Counter) {
    let src = &SrcKey { addr: p.saddr };
    let timeout = s.timeout_ns();
    // Established flows stop here: no SYN hashed to this slot recently.
    match SYN_SEEN.get(handshake::filter_slot(&p.saddr, p.sport, p.dport)) {
        Some(&stamp) if stamp != 0 && handshake::filter_may_match(stamp, coarse_ns(), timeout) => {}
        _ => return,
    }
    let key = flow_key(p);
    // SAFETY: copied out before removal.
    let Some(e) = (unsafe { HALF_OPEN.get(&key) }).copied() else {
        return;
    };
    let now = now_ns();
    // Without the egress program the server's ISN is unknown: seq decides.
    let proven = completed == Counter::SampledCompleted || s.flags & FLAG_EGRESS == 0;
    match handshake::on_ack(&e, p.seq, p.ack, now, timeout, proven) {
        AckAction::BadSeq => bump(c, Counter::AckBadSeq),
        AckAction::BadAck => bump(c, Counter::AckBadAck),
        AckAction::Unanswered => bump(c, Counter::AckUnanswered),
        action => {
            if HALF_OPEN.remove(&key).is_err() {
                return; // another CPU completed it first
            }
            // A cookie ACK is counted as `cookie_ack_valid` already: the
            // sampled entry it closes counts apart.
            bump(c, completed);
            if action == AckAction::CompleteLate {
                bump(c, Counter::HandshakeCompletedLate);
            }
            if let Some(st) = close_half_open(&e, src, timeout, now) {
                // SAFETY: map value pointer.
                unsafe { (*st).completed += 1 };
            }
        }
    }
}

#[inline(never)]
fn on_rst(c: &mut Counters, s: &Settings, p: &TcpPacket) {
    let src = &SrcKey { addr: p.saddr };
    let key = flow_key(p);
    // SAFETY: copied out before removal.
    let found = unsafe { HALF_OPEN.get(&key) }.copied();
    let now = now_ns();
    let st = match found {
        Some(e) if HALF_OPEN.remove(&key).is_ok() => {
            bump(c, Counter::RstHalfOpen);
            close_half_open(&e, src, s.timeout_ns(), now)
        }
        _ => SRC_STATS.get_ptr_mut(src),
    };
    if let Some(st) = st {
        // SAFETY: map value pointer.
        unsafe { (*st).rsts += 1 };
    }
}

/// The server's side of the handshake, on the protected interface's egress
/// (TC): its SYN-ACK makes a tracked SYN half-open (the kernel's SYN_RCVD)
/// and records its ISN, which the client's final ACK must acknowledge; its
/// RST to a tracked SYN (no listener) marks the SYN refused. It never
/// changes or drops a packet.
#[classifier]
pub fn tcpguard_egress(ctx: TcContext) -> i32 {
    egress(&ctx);
    TC_ACT_OK
}

/// `TC_ACT_OK`: let the packet go on.
const TC_ACT_OK: i32 = 0;

/// A TC program that lets everything go: the egress program's benchmark
/// baseline.
#[classifier]
pub fn tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// The egress parse as a subprogram (see `parse_frame`).
#[inline(never)]
fn parse_skb(ctx: &TcContext) -> Result<TcpPacket, parse::ParseError> {
    // SAFETY: reads the context pointer field of a valid TcContext.
    let raw = unsafe { core::ptr::read_volatile(&ctx.skb.skb) };
    parse::parse(&Frame(&TcContext::new(raw)))
}

#[inline(always)]
fn egress(ctx: &TcContext) -> Option<()> {
    let p = parse_skb(ctx).ok()?;
    let fl = p.flags & (TCP_SYN | TCP_ACK | TCP_RST);
    if fl != TCP_SYN | TCP_ACK && p.flags & TCP_RST == 0 {
        return None;
    }
    let s = SETTINGS.get(0)?;
    // The protected port is this host's, the source port on egress.
    // SAFETY: read-only presence check.
    if s.flags & FLAG_PORT_FILTER != 0 && unsafe { PORTS.get(p.sport) }.is_none() {
        return None;
    }
    let c = COUNTERS.get_ptr_mut(0)?;
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    let c = unsafe { &mut *c };
    // The client's 4-tuple, as the SYN was keyed.
    let key = FlowKey { saddr: p.daddr, daddr: p.saddr, sport: p.dport, dport: p.sport, _pad: 0 };
    if fl == TCP_SYN | TCP_ACK {
        bump(c, Counter::SynAckOut);
        on_synack_out(c, s, &p, &key);
    } else {
        on_rst_out(c, s, &p, &key);
    }
    Some(())
}

#[inline(never)]
fn on_synack_out(c: &mut Counters, s: &Settings, p: &TcpPacket, key: &FlowKey) {
    let Some(e) = HALF_OPEN.get_ptr_mut(key) else { return };
    // SAFETY: map value pointer; the entry is updated in place.
    let e = unsafe { &mut *e };
    match handshake::on_synack(e, p.seq, p.ack) {
        SynAckAction::Mismatch => {}
        SynAckAction::Retransmit => bump(c, Counter::SynAckRetransmit),
        SynAckAction::Open => {
            // Without FLAG_EGRESS the SYN was counted half-open already.
            if s.flags & FLAG_EGRESS == 0 || e.answered() {
                e.server_isn = p.seq;
                return;
            }
            let now = now_ns();
            e.server_isn = p.seq;
            e.synack_ns = now;
            // SAFETY: map value pointer; concurrent updates may lose an increment.
            let st = SRC_STATS.get_ptr_mut(&SrcKey { addr: p.daddr }).map(|st| unsafe { &mut *st });
            count_half_open(c, st, now, s.timeout_ns());
        }
    }
}

/// The server resets a tracked handshake: before answering it, the SYN was
/// refused (a closed port: a scan, not a flood); after, it is closed like a
/// client RST would close it.
#[inline(never)]
fn on_rst_out(c: &mut Counters, s: &Settings, p: &TcpPacket, key: &FlowKey) {
    // SAFETY: copied out before removal.
    let Some(e) = (unsafe { HALF_OPEN.get(key) }).copied() else { return };
    if p.has(TCP_ACK) && p.ack != e.isn.wrapping_add(1) {
        return;
    }
    if HALF_OPEN.remove(key).is_err() {
        return;
    }
    if e.answered() {
        bump(c, Counter::RstHalfOpen);
        close_half_open(&e, &SrcKey { addr: p.daddr }, s.timeout_ns(), now_ns());
    } else {
        bump(c, Counter::SynRefused);
    }
}

/// The transmit watch: veth reports each flush of XDP_TX frames through
/// `xdp:xdp_bulk_tx` (`dev, sent, drops, err`), on the CPU that ran the XDP
/// program, right after that device's poll. A flush is this interface's
/// when this CPU sent replies (`cookie_sent`) since the last flush the watch
/// accounted: no other device's poll runs between a poll and its flush.
#[raw_tracepoint(tracepoint = "xdp_bulk_tx")]
pub fn tcpguard_tx_bulk(ctx: RawTracePointContext) -> u32 {
    tx_bulk(&ctx);
    0
}

#[inline(always)]
fn tx_bulk(ctx: &RawTracePointContext) -> Option<()> {
    let s = SETTINGS.get(0)?;
    if s.flags & FLAG_TX_BULK == 0 {
        return None;
    }
    let c = COUNTERS.get_ptr_mut(0)?;
    let mark = TX_MARK.get_ptr_mut(0)?;
    // SAFETY: per-CPU values; the XDP program on this CPU is not running
    // while its flush is traced.
    let (c, mark) = unsafe { (&mut *c, &mut *mark) };
    let sent_here = c.get(Counter::CookieSent);
    if sent_here == *mark {
        return None; // another device's flush
    }
    *mark = sent_here;
    let sent: i64 = ctx.arg(1);
    let drops: i64 = ctx.arg(2);
    c.v[Counter::XdpTxDelivered as usize] += (sent as i32).max(0) as u64;
    c.v[Counter::XdpTxFailed as usize] += (drops as i32).max(0) as u64;
    Some(())
}

/// Other drivers report an XDP action they failed to carry out through
/// `xdp:xdp_exception` (`dev, prog, act`): an XDP_TX on this interface
/// (its ifindex read from `struct net_device` at the offset the daemon
/// found in the kernel's BTF) is a failed reply.
#[raw_tracepoint(tracepoint = "xdp_exception")]
pub fn tcpguard_tx_exception(ctx: RawTracePointContext) -> u32 {
    tx_exception(&ctx);
    0
}

#[inline(always)]
fn tx_exception(ctx: &RawTracePointContext) -> Option<()> {
    let act: u64 = ctx.arg(2);
    if act as u32 != xdp_action::XDP_TX {
        return None;
    }
    let s = SETTINGS.get(0)?;
    if s.dev_ifindex_off == 0 || s.ifindex == 0 {
        return None;
    }
    let dev: u64 = ctx.arg(0);
    // SAFETY: a kernel read through the helper; a bad address fails cleanly.
    let ifindex = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((dev + u64::from(s.dev_ifindex_off & 0xffff)) as *const u32)
    }
    .ok()?;
    if ifindex != s.ifindex {
        return None;
    }
    let c = COUNTERS.get_ptr_mut(0)?;
    // SAFETY: per-CPU value.
    unsafe { (*c).v[Counter::XdpTxFailed as usize] += 1 };
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

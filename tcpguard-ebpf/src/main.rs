//! tcpguard XDP datapath. A thin shell: parsing, handshake transitions, the
//! token bucket and half-open accounting live in `tcpguard-common` and are
//! unit-tested on the host; this file applies their results to BPF maps.
//!
//! Per packet, in order of cost: one per-CPU counter lookup and the parse
//! (every packet); the settings lookup (TCP); the port filter (only if
//! configured); the block-lists (only if non-empty); the half-open lookup
//! (TCP with ACK); the source table, the half-open insert and the clock
//! (SYN only). The allow-list is consulted only when a drop is about to
//! happen.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use tcpguard_common::{
    halfopen::{self, BUCKETS, NS_PER_SEC},
    handshake::{self, AckAction, SynAction},
    parse::{self, PacketBuf, TcpPacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    ratelimit::{self, Bucket},
    AllowEntry, BlockEntry, Counter, Counters, FlowKey, HalfOpen, HeavyEvent, HoBucket, Settings, SrcKey,
    SrcStats, DEFAULT_HALF_OPEN_ENTRIES, DEFAULT_SRC_ENTRIES, FLAG_HAS_BLOCKS, FLAG_MONITOR,
    FLAG_PORT_FILTER, LIST_ENTRIES, PORT_ENTRIES,
};

#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
// One LRU list shared by all CPUs: BPF_F_NO_COMMON_LRU would split the
// capacity per CPU, and a flood landing on one CPU would then evict live
// entries at max_entries / ncpus (measured: 100k sources counted as 210k).
#[map]
static HALF_OPEN: LruHashMap<FlowKey, HalfOpen> =
    LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_ENTRIES, 0);
/// Coarse time of the last SYN per 4-tuple hash: the ACK path's pre-filter.
#[map]
static SYN_SEEN: Array<u64> = Array::with_max_entries(handshake::FILTER_SLOTS, 0);
#[map]
static HO_BUCKETS: PerCpuArray<HoBucket> = PerCpuArray::with_max_entries(BUCKETS, 0);
#[map]
static SRC_STATS: LruHashMap<SrcKey, SrcStats> = LruHashMap::with_max_entries(DEFAULT_SRC_ENTRIES, 0);
#[map]
static ALLOW_V4: LpmTrie<[u8; 4], AllowEntry> =
    LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], AllowEntry> =
    LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> =
    LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> =
    LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
/// Scratch space for building a `SrcStats` off the BPF stack.
#[map]
static SCRATCH: PerCpuArray<SrcStats> = PerCpuArray::with_max_entries(1, 0);
/// Heavy-source reports for the daemon.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(PORT_ENTRIES, 0);

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

struct Frame<'a>(&'a XdpContext);

impl PacketBuf for Frame<'_> {
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

/// `Some(true)` blocked, `Some(false)` matched an expired entry, `None` no match.
#[inline(always)]
fn blocked(p: &TcpPacket) -> Option<bool> {
    let e = if p.is_v6 {
        BLOCK_V6.get(Key::new(128, p.saddr))
    } else {
        BLOCK_V4.get(Key::new(32, v4(p)))
    }?;
    let exp = e.expires_ns;
    Some(exp == 0 || now_ns() < exp)
}

#[derive(Clone, Copy)]
enum Reason {
    Blocked,
    RateLimited,
}

/// A drop decision: the allow-list overrides it, monitor mode only counts it.
#[inline(always)]
fn enforce(c: &mut Counters, s: &Settings, p: &TcpPacket, why: Reason) -> u32 {
    if allowed(p) {
        bump(c, Counter::PassAllowed);
        return xdp_action::XDP_PASS;
    }
    let monitor = s.flags & FLAG_MONITOR != 0;
    let (counter, action) = match (why, monitor) {
        (Reason::Blocked, false) => (Counter::DropBlocked, xdp_action::XDP_DROP),
        (Reason::RateLimited, false) => (Counter::DropRateLimited, xdp_action::XDP_DROP),
        (Reason::Blocked, true) => (Counter::MonitorBlocked, xdp_action::XDP_PASS),
        (Reason::RateLimited, true) => (Counter::MonitorRateLimited, xdp_action::XDP_PASS),
    };
    bump(c, counter);
    action
}

#[inline(always)]
fn flow_key(p: &TcpPacket) -> FlowKey {
    FlowKey { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, _pad: 0 }
}

/// Close a half-open entry in the accounting ring and the source's window.
#[inline(always)]
fn close_half_open(e: &HalfOpen, src: &SrcKey, timeout: u64, now: u64) -> Option<*mut SrcStats> {
    if !handshake::is_expired(e, now, timeout) {
        let sec = e.opened_ns / NS_PER_SEC;
        if let Some(b) = HO_BUCKETS.get_ptr_mut(halfopen::slot(sec)) {
            // SAFETY: per-CPU slot, only this CPU writes it.
            halfopen::record_close(unsafe { &mut *b }, sec);
        }
    }
    let st = SRC_STATS.get_ptr_mut(src)?;
    // SAFETY: map value pointer; concurrent updates may lose an increment.
    let sr = unsafe { &mut *st };
    if e.opened_ns >= sr.window_start_ns && sr.half_open > 0 {
        sr.half_open -= 1;
    }
    Some(st)
}

fn try_tcpguard(ctx: &XdpContext) -> Result<u32, ()> {
    let c = COUNTERS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    let c = unsafe { &mut *c };
    bump(c, Counter::Packets);

    let p = match parse::parse(&Frame(ctx)) {
        Ok(p) => p,
        Err(e) => {
            bump(c, e.counter());
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
    if s.flags & FLAG_HAS_BLOCKS != 0 {
        match blocked(&p) {
            Some(true) => return Ok(enforce(c, s, &p, Reason::Blocked)),
            Some(false) => bump(c, Counter::PassBlockExpired),
            None => {}
        }
    }

    let src = SrcKey { addr: p.saddr };
    if p.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
        return Ok(on_syn(ctx, c, s, &p, &src));
    }
    if p.has(TCP_SYN) {
        if p.has(TCP_ACK) {
            bump(c, Counter::SynAckIn);
        }
        bump(c, Counter::PassTcp);
        return Ok(xdp_action::XDP_PASS);
    }
    if p.has(TCP_RST) {
        bump(c, Counter::Rst);
        on_rst(c, s, &p, &src);
    } else if p.has(TCP_ACK) {
        on_ack(c, s, &p, &src);
    }
    if p.has(TCP_FIN) {
        bump(c, Counter::Fin);
        if let Some(st) = SRC_STATS.get_ptr_mut(&src) {
            // SAFETY: map value pointer.
            unsafe { (*st).fins += 1 };
        }
    }
    bump(c, Counter::PassTcp);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn on_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, src: &SrcKey) -> u32 {
    bump(c, Counter::Syn);
    let now = now_ns();
    let timeout = s.timeout_ns();

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
            // A failed insert is counted, never logged: it can happen per
            // packet under a flood.
            if SRC_STATS.insert(src, &*fresh, 0).is_err() {
                bump(c, Counter::SourceInsertFailed);
            } else {
                bump(c, Counter::NewSource);
            }
            match SRC_STATS.get_ptr_mut(src) {
                Some(st) => st,
                None => return xdp_action::XDP_PASS,
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
            let v = enforce(c, s, p, Reason::RateLimited);
            if v == xdp_action::XDP_DROP || s.flags & FLAG_MONITOR != 0 {
                st.dropped += 1;
            }
            if v == xdp_action::XDP_DROP {
                return v;
            }
        }
    }

    let key = flow_key(p);
    let e = HalfOpen { isn: p.seq, _pad: 0, opened_ns: now };
    // Most SYNs (all of a flood's) open a new handshake: try the insert
    // first and look the tuple up only when it already exists.
    let opened = if HALF_OPEN.insert(&key, &e, BPF_NOEXIST.into()).is_ok() {
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
    if opened {
        if let Some(slot) = SYN_SEEN.get_ptr_mut(handshake::filter_slot(&p.saddr, p.sport, p.dport)) {
            // SAFETY: array slot; a racing writer stores a time just as recent.
            unsafe { *slot = now };
        }
        bump(c, Counter::HalfOpenOpened);
        let sec = now / NS_PER_SEC;
        if let Some(b) = HO_BUCKETS.get_ptr_mut(halfopen::slot(sec)) {
            // SAFETY: per-CPU slot.
            halfopen::record_open(unsafe { &mut *b }, sec);
        }
        if now.saturating_sub(st.window_start_ns) >= timeout {
            st.failed += st.half_open;
            st.half_open = 0;
            st.window_start_ns = now;
        }
        st.half_open += 1;
    }
    bump(c, Counter::PassTcp);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn on_ack(c: &mut Counters, s: &Settings, p: &TcpPacket, src: &SrcKey) {
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
    match handshake::on_ack(&e, p.seq, now, timeout) {
        AckAction::BadSeq => bump(c, Counter::AckBadSeq),
        action => {
            if HALF_OPEN.remove(&key).is_err() {
                return; // another CPU completed it first
            }
            bump(c, Counter::HandshakeCompleted);
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

#[inline(always)]
fn on_rst(c: &mut Counters, s: &Settings, p: &TcpPacket, src: &SrcKey) {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

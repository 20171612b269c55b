//! tcpguard XDP datapath. A thin shell: parsing, handshake transitions, the
//! token bucket and half-open accounting live in `tcpguard-common` and are
//! unit-tested on the host; this crate applies their results to BPF maps.
//! This file holds the entry points and the packet's dispatch; each module
//! is one concern, and its `use crate::maps::{...}` line shows which maps it
//! touches: `maps` (all of them), `context` (packet reads, counters, clock),
//! `lists` (allow/block), `syn` (rate window, attack-mode sketch),
//! `tracking` (source and half-open tables), `responder` (XDP SYN cookies),
//! `ack` (cookie check, handshake completion, RST), `egress` (TC), `txwatch`
//! (failed XDP_TX), `bench` (pass-all baselines).
//!
//! First the entry itself (`classify`, two header loads) decides frames
//! that are not IP and untagged IPv4 that is not TCP; then a fast path
//! (`fast_path`) decides an established IPv4 flow's segment and an untagged
//! IPv4 segment from a blocked source, as the full path would, without the
//! full parse. Everything else takes the full path, an untagged IPv4
//! segment with its packet made from six word loads (`plain_tcp4`), any
//! other frame parsed byte by byte (`parse_frame`).
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
//!
//! *ACK-checking* (an ACK flood is on; entered by the egress program when
//! one CPU's rate of unmatched ACKs, seen as the kernel's RSTs to them,
//! crosses `Settings::attack_ack_rate`, or by the daemon): that last check
//! alone, SYNs handled as in tracking mode.
#![no_std]
#![no_main]

mod ack;
mod bench;
mod context;
mod egress;
mod lists;
mod maps;
mod responder;
mod syn;
mod tracking;
mod txwatch;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, raw_tracepoint, xdp},
    maps::lpm_trie::Key,
    programs::{RawTracePointContext, TcContext, XdpContext},
};
use tcpguard_common::{
    parse::{TcpPacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    synack::bytes,
    verdict::Rule,
    Counter, Counters, Settings, SrcKey, FLAG_HAS_ALLOWS, FLAG_HAS_BLOCKS, FLAG_PORT_FILTER,
};

use crate::{
    ack::{attack_ack, on_ack, on_rst, AckCheck},
    context::{attack_clock_ns, bump, bump_dyn, coarse_ns, ld, now_ns, parse_frame, plain_ipv4_proto, plain_tcp4},
    lists::{allowed_v4, blocked, judge, may_be_blocked},
    maps::{BLOCK_V4, COUNTERS, PORTS, SETTINGS, SRC_STATS, SYN_SEEN},
    responder::{answer_syn, KERNEL_ANSWERS},
    syn::{acks_checked, attack_active, on_syn, RESPOND},
};

/// The tcpguard datapath.
#[xdp]
pub fn tcpguard(ctx: XdpContext) -> u32 {
    // Whatever goes wrong inside, the packet passes.
    try_tcpguard(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

fn try_tcpguard(ctx: &XdpContext) -> Result<u32, ()> {
    let c = COUNTERS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    let c = unsafe { &mut *c };
    bump(c, Counter::Packets);
    let (v, plain) = match classify(ctx, c) {
        Class::Decided(v) => return Ok(v),
        Class::PlainTcp4 => (fast_path(ctx, c), true),
        Class::Other => (SLOW, false),
    };
    if v != SLOW && v != SLOW_UNBLOCKED {
        return Ok(v);
    }
    // The fast path found no block-list entry for the source: not again.
    let unblocked = v == SLOW_UNBLOCKED;

    // A plain IPv4 segment from its words; anything else, or what the
    // words leave undecided, parsed in full.
    let quick = if plain { plain_tcp4(ctx) } else { None };
    let p = match quick {
        Some(p) => p,
        None => match parse_frame(ctx) {
            Ok(p) => p,
            Err(e) => {
                bump_dyn(c, e.counter());
                return Ok(xdp_action::XDP_PASS);
            }
        },
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
    let v = on_tcp(ctx, c, s, &p, unblocked);
    if v == xdp_action::XDP_PASS {
        bump(c, Counter::PassTcp);
    }
    Ok(v)
}

/// A calm day's commonest TCP segments (untagged IPv4, which `classify`
/// found), decided without the full parse and with the verdict and counter
/// the full path gives them: a segment of an established flow (ACK without
/// SYN, RST or FIN) when nothing could make it more than a pass: no
/// block-list, no ACK check, and no half-open handshake its 4-tuple could
/// complete (the half-open pre-filter says so). And a segment from a
/// blocked host or prefix is dropped here. [`SLOW`]: the full path.
/// Inlined in the entry: a BPF-to-BPF call cost an established flow's
/// segment about 11 ns of its 34 over an empty program (test_run), and the
/// path's locals are a few words of the entry's stack frame (the full
/// path's call chain, which needs most of the 512-byte stack, still fits:
/// the verifier checks it at every load).
#[inline(always)]
fn fast_path(ctx: &XdpContext, c: &mut Counters) -> u32 {
    fast(ctx, c).unwrap_or(SLOW)
}

/// What the entry makes of a frame from two header loads, with no
/// subprogram call.
enum Class {
    /// Decided and counted: a frame that is neither IP nor tagged, an
    /// untagged IPv4 packet (no IP options, not a fragment) that is not TCP.
    Decided(u32),
    /// An untagged IPv4 TCP segment without IP options, not a fragment: the
    /// fast path's.
    PlainTcp4,
    /// Anything else: the full path.
    Other,
}

#[inline(always)]
fn classify(ctx: &XdpContext, c: &mut Counters) -> Class {
    use tcpguard_common::parse::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP};
    let start = ctx.data();
    if start + 14 > ctx.data_end() {
        return Class::Other;
    }
    let f = start as *mut u8;
    let proto = u16::from_be(ld(f, 12));
    if proto != ETH_P_IP {
        if proto != ETH_P_IPV6 && proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            bump(c, Counter::PassNonIp);
            return Class::Decided(xdp_action::XDP_PASS);
        }
        return Class::Other;
    }
    if start + 34 > ctx.data_end() {
        return Class::Other;
    }
    match plain_ipv4_proto(f) {
        Some(IPPROTO_TCP) => Class::PlainTcp4,
        Some(_) => {
            bump(c, Counter::PassNonTcp);
            Class::Decided(xdp_action::XDP_PASS)
        }
        None => Class::Other,
    }
}

/// `fast_path`'s "not decided here".
const SLOW: u32 = u32::MAX;
/// `fast_path`'s "not decided here, and the block-lists hold no entry for
/// the source" (an untagged IPv4 segment: the full path's lookup would be
/// the same).
const SLOW_UNBLOCKED: u32 = u32::MAX - 2;

/// The fast path of a segment `classify` found plain IPv4 TCP (its IP
/// header is 20 bytes at offset 14).
#[inline(always)]
fn fast(ctx: &XdpContext, c: &mut Counters) -> Option<u32> {
    // SAFETY: reads the context pointer field of a valid XdpContext (the
    // volatile read keeps the packet pointers the verifier's, as in
    // `parse_frame`).
    let raw = unsafe { core::ptr::read_volatile(&ctx.ctx) };
    let ctx = XdpContext::new(raw);
    let start = ctx.data();
    if start + 54 > ctx.data_end() {
        return None;
    }
    let f = start as *mut u8;
    let [doff, flags] = ld::<u16>(f, 46).to_ne_bytes();
    let doff = doff >> 4;
    // The options the data offset announces are in the packet.
    if doff < 5 || start + 34 + usize::from(doff) * 4 > ctx.data_end() {
        return None;
    }
    let s = SETTINGS.get(0)?;
    let [s0, s1, d0, d1] = bytes(ld(f, 34));
    let (sport, dport) = (u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1]));
    if s.flags & FLAG_PORT_FILTER != 0 {
        // SAFETY: read-only presence check.
        if unsafe { PORTS.get(dport) }.is_none() {
            bump(c, Counter::PassUnprotectedPort);
            return Some(xdp_action::XDP_PASS);
        }
    }
    let src: u32 = ld(f, 26);
    if s.flags & FLAG_HAS_BLOCKS != 0 {
        // A blocked source dropped here, before any other work; what the
        // block does not drop (allow-listed, monitor mode) and an expired
        // entry go the full way, which counts them.
        let src4 = bytes(src);
        let e = if may_be_blocked(src4[0], false) { BLOCK_V4.get(Key::new(32, src4)) } else { None };
        if let Some(e) = e {
            if e.expires_ns != 0 && coarse_ns() >= e.expires_ns {
                return None;
            }
            let allowed = s.flags & FLAG_HAS_ALLOWS != 0 && allowed_v4(src4);
            let syn = flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
            let v = tcpguard_common::verdict::decide(s.flags, Rule::Blocked, allowed, syn);
            if !v.drop {
                return None;
            }
            bump(c, v.counter);
            return Some(xdp_action::XDP_DROP);
        }
    }
    if flags & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) != TCP_ACK || acks_checked() {
        return Some(SLOW_UNBLOCKED);
    }
    let slot = tcpguard_common::handshake::filter_slot_v4(src, sport, dport);
    if let Some(&stamp) = SYN_SEEN.get(slot) {
        if stamp != 0 && tcpguard_common::handshake::filter_may_match(stamp, coarse_ns(), s.timeout_ns()) {
            return Some(SLOW_UNBLOCKED);
        }
    }
    bump(c, Counter::PassTcp);
    Some(xdp_action::XDP_PASS)
}

/// A TCP packet to a protected port: block-list, then by kind.
#[inline(always)]
fn on_tcp(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, unblocked: bool) -> u32 {
    let syn = p.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
    if s.flags & FLAG_HAS_BLOCKS != 0 && !unblocked {
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
        // One clock read for the SYN's accounting and its answer; in attack
        // mode the coarse clock (a tick's resolution is plenty for the
        // sketch's epochs, the answer's timestamp and the listener's
        // freshness, and on a VM the precise one costs ~80 ns a read),
        // itself read once per jiffy per CPU.
        let now = if attack_active() { attack_clock_ns() } else { now_ns() };
        let v = on_syn(ctx, c, s, p, now);
        if v != RESPOND {
            return v;
        }
        let v = answer_syn(ctx, c, s, p, now);
        return if v == KERNEL_ANSWERS { xdp_action::XDP_PASS } else { v };
    }
    if p.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK && acks_checked() {
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

/// The server's side of the handshake, on the protected interface's egress
/// (TC): its SYN-ACK makes a tracked SYN half-open (the kernel's SYN_RCVD)
/// and records its ISN, which the client's final ACK must acknowledge; its
/// RST to a tracked SYN (no listener) marks the SYN refused. It never
/// changes or drops a packet.
#[classifier]
pub fn tcpguard_egress(ctx: TcContext) -> i32 {
    egress::egress(&ctx);
    egress::TC_ACT_OK
}

/// The transmit watch: drivers report an XDP action they failed to carry
/// out through `xdp:xdp_exception` (`dev, prog, act`): an XDP_TX on this
/// interface (its ifindex read from `struct net_device` at the offset the
/// daemon found in the kernel's BTF) is a failed reply. It runs only on a
/// failure. (veth reports its failed XDP_TX in a flush's `xdp:xdp_bulk_tx`
/// instead, which runs on every poll of a flood, about as often as the
/// datapath itself: the daemon reads veth's own count of them, ethtool's
/// `rx_queue_N_xdp_tx_errors`, every tick.)
#[raw_tracepoint(tracepoint = "xdp_exception")]
pub fn tcpguard_tx_exception(ctx: RawTracePointContext) -> u32 {
    txwatch::tx_exception(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

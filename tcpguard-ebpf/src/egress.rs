//! The server's side of the handshake on the interface's egress (TC): its
//! SYN-ACK makes a tracked SYN half-open, its RST marks it refused or
//! closed; its RST without ACK answers an ACK that matched no socket, which
//! is what an ACK flood is made of: counted, and at `attack_ack_rate` on one
//! CPU the datapath enters ACK-checking mode. Never changes or drops a
//! packet.

use aya_ebpf::programs::TcContext;
use tcpguard_common::{
    handshake::{self, SynAckAction},
    parse::{self, TcpPacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    synack::bytes,
    AckModeEvent, Counter, Counters, FlowKey, Settings, SrcKey, ATTACK_REASON_ACK_RATE, FLAG_EGRESS, FLAG_PORT_FILTER,
};

use crate::{
    context::{bump, coarse_ns, ld, now_ns, plain_ipv4_proto, Frame},
    maps::{ACK_ATTACK, ACK_WIN, CLOSED_SEEN, CLOSED_SUMMARY, COUNTERS, EVENTS, HALF_OPEN, PORTS, SETTINGS, SRC_STATS},
    tracking::{close_half_open, count_half_open},
};

/// `TC_ACT_OK`: let the packet go on.
pub(crate) const TC_ACT_OK: i32 = 0;

/// The egress parse as a subprogram (see `parse_frame`).
#[inline(never)]
pub(crate) fn parse_skb(ctx: &TcContext) -> Result<TcpPacket, parse::ParseError> {
    // SAFETY: reads the context pointer field of a valid TcContext.
    let raw = unsafe { core::ptr::read_volatile(&ctx.skb.skb) };
    parse::parse(&Frame(&TcContext::new(raw)))
}

/// A segment the egress program has nothing to do with, told from two
/// header loads without the full parse: an untagged IPv4 TCP segment (no IP
/// options, not a fragment) with none of SYN, FIN and RST, the bulk of what
/// a server sends. Anything else (tagged, IPv6, not TCP, headers not in the
/// linear part) is left to the parse.
#[inline(always)]
fn plain_data_segment(ctx: &TcContext) -> bool {
    // SAFETY: reads the context pointer field of a valid TcContext (see
    // `parse_skb`).
    let raw = unsafe { core::ptr::read_volatile(&ctx.skb.skb) };
    let ctx = TcContext::new(raw);
    let start = ctx.data();
    if start + 48 > ctx.data_end() {
        return false;
    }
    let f = start as *mut u8;
    plain_ipv4_proto(f) == Some(tcpguard_common::parse::IPPROTO_TCP)
        && bytes(ld::<u32>(f, 44))[3] & (TCP_SYN | TCP_FIN | TCP_RST) == 0
}

#[inline(always)]
pub(crate) fn egress(ctx: &TcContext) -> Option<()> {
    if plain_data_segment(ctx) {
        return None;
    }
    let p = parse_skb(ctx).ok()?;
    if p.flags & TCP_FIN != 0 {
        // The server closes: its side of this 4-tuple may end in TIME_WAIT,
        // and a SYN for it must find that socket (the responder's lookup).
        let slot = handshake::closed_slot(&p.daddr, p.dport, p.sport);
        let mark = handshake::closed_mark(coarse_ns());
        let (line, at) = handshake::closed_place(slot);
        if let Some(t) = CLOSED_SEEN.get_ptr_mut(line) {
            // SAFETY: array entry; a racing CPU writes a time as recent.
            unsafe { (*t)[at & 63] = mark };
        }
        // The summary after the mark (a SYN reads the mark only once the
        // summary is recent), written only when it changes: the responder
        // reads these lines on every SYN of a flood.
        let (line, at) = handshake::closed_summary_place(slot);
        if let Some(t) = CLOSED_SUMMARY.get_ptr_mut(line) {
            // SAFETY: as above.
            unsafe {
                if (*t)[at & 63] != mark {
                    (*t)[at & 63] = mark;
                }
            }
        }
    }
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
    } else if !on_rst_out(c, s, &p, &key) && !p.has(TCP_ACK) {
        // Not a tracked handshake's: the kernel's answer to an ACK that
        // matched no socket (its RST to a segment without ACK carries ACK).
        on_unmatched_ack(c, s);
    }
    Some(())
}

/// The server answered an ACK that matched no socket: count it in this
/// CPU's window, and enter ACK-checking mode when the window is full.
#[inline(never)]
pub(crate) fn on_unmatched_ack(c: &mut Counters, s: &Settings) {
    bump(c, Counter::AckUnmatched);
    let Some(w) = ACK_WIN.get_ptr_mut(0) else { return };
    let now = now_ns();
    // SAFETY: per-CPU value, only this CPU writes it.
    if !tcpguard_common::rate_step(unsafe { &mut *w }, now, s.attack_window_acks()) {
        return;
    }
    let Some(a) = ACK_ATTACK.get_ptr_mut(0) else { return };
    // SAFETY: shared map value of plain words; a racing CPU writes the same.
    let a = unsafe { &mut *a };
    if a.active == 0 {
        // SAFETY: per-CPU value, read after its update above.
        let (win_start, win_acks) = unsafe { ((*w).win_start_ns, (*w).win_syns) };
        a.active = 1;
        a.reason = ATTACK_REASON_ACK_RATE;
        a.entered_ns = now;
        a.trigger_window_ns = win_start;
        a.entries += 1;
        bump(c, Counter::AckModeEntered);
        if let Some(mut ev) = EVENTS.reserve::<AckModeEvent>(0) {
            ev.write(AckModeEvent { entered_ns: now, trigger_window_ns: win_start, window_acks: win_acks });
            ev.submit(0);
        }
    }
}

#[inline(never)]
pub(crate) fn on_synack_out(c: &mut Counters, s: &Settings, p: &TcpPacket, key: &FlowKey) {
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
/// client RST would close it. Whether it was a tracked handshake's.
#[inline(never)]
pub(crate) fn on_rst_out(c: &mut Counters, s: &Settings, p: &TcpPacket, key: &FlowKey) -> bool {
    // SAFETY: copied out before removal.
    let Some(e) = (unsafe { HALF_OPEN.get(key) }).copied() else { return false };
    if p.has(TCP_ACK) && p.ack != e.isn.wrapping_add(1) {
        return false;
    }
    if HALF_OPEN.remove(key).is_err() {
        return true;
    }
    if e.answered() {
        bump(c, Counter::RstHalfOpen);
        close_half_open(&e, &SrcKey { addr: p.daddr }, s.timeout_ns(), now_ns());
    } else {
        bump(c, Counter::SynRefused);
    }
    true
}

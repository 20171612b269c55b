//! ACKs and RSTs: attack mode's cookie check for an ACK that reaches a
//! listener, and the tracking path's handshake completion and reset.

use aya_ebpf::{
    bindings::tcphdr,
    helpers::{bpf_sk_release, bpf_tcp_check_syncookie},
    programs::XdpContext,
};
use tcpguard_common::{
    handshake::{self, AckAction},
    parse::TcpPacket,
    verdict::Rule,
    Counter, Counters, Settings, SrcKey, FLAG_EGRESS,
};

use crate::{
    context::{bump, coarse_ns, flow_key, now_ns},
    lists::judge,
    maps::{HALF_OPEN, SRC_STATS, SYN_SEEN},
    responder::{for_host, lookup_socket, pkt_ptr, plain_ip_len, TCP_LISTEN},
    tracking::close_half_open,
};

pub(crate) enum AckCheck {
    /// Not a listener's business (a connection exists, or no socket at all).
    Pass,
    /// A valid cookie ACK: a handshake completed through a cookie.
    Cookie,
    Drop,
}

/// Attack mode, an ACK without SYN/RST: one reaching a listener (no
/// connection for its 4-tuple) must carry a valid cookie.
#[inline(never)]
pub(crate) fn attack_ack(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket) -> AckCheck {
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
pub(crate) fn on_ack(c: &mut Counters, s: &Settings, p: &TcpPacket, completed: Counter) {
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
pub(crate) fn on_rst(c: &mut Counters, s: &Settings, p: &TcpPacket) {
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

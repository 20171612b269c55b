//! Attack mode's answer: a SYN to a listener on this host gets a SYN-ACK
//! carrying the kernel's own SYN cookie, written over the SYN and sent back
//! with XDP_TX. Anything it cannot answer goes on to the kernel.

use aya_ebpf::{
    bindings::{tcphdr, xdp_action},
    helpers::{
        bpf_loop, bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_gen_syncookie, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use tcpguard_common::{
    handshake,
    parse::{PacketBuf, TcpPacket},
    synack, Counter, Counters, Settings, SrcKey, FLAG_ANSWER, FLAG_EGRESS,
};

use crate::{
    context::{bump, ld, ld_words, millis, now_ns, st, st_words, v4, Frame},
    maps::{ATTACK, CLOSED_SEEN, CLOSED_SUMMARY, LISTENER_SEEN, LOCAL_ADDRS, LOCAL_V4, REPLY},
};

/// `sk_state` of a listening socket.
pub(crate) const TCP_LISTEN: u32 = 10;
/// `BPF_F_CURRENT_NETNS`: look sockets up in the device's namespace.
pub(crate) const CURRENT_NETNS: u64 = u64::MAX;

/// Addressed to this host: to the interface's own MAC and a local address.
/// Anything else (forwarded traffic, a neighbour's address, a stale MAC) is
/// the kernel's to route or discard: never answered or dropped here.
#[inline(always)]
pub(crate) fn for_host(ctx: &XdpContext, s: &Settings, p: &TcpPacket) -> bool {
    match Frame(ctx).bytes::<6>(0) {
        Some(dst) if s.own_mac(&dst) => {}
        _ => return false,
    }
    // IPv4: the cache line of addresses, when it knows.
    if !p.is_v6 {
        let a = u32::from_ne_bytes([p.daddr[12], p.daddr[13], p.daddr[14], p.daddr[15]]);
        // (A match, not `and_then`: LLVM left that closure a BPF function
        // of its own, a call and a return per SYN.)
        if let Some(l) = LOCAL_V4.get(0) {
            if let Some(local) = l.holds(a) {
                return local;
            }
        }
    }
    // SAFETY: read-only presence check.
    unsafe { LOCAL_ADDRS.get(&SrcKey { addr: p.daddr }) }.is_some()
}

/// `N` bytes at `off` of the packet, bounds-checked for the verifier.
#[inline(always)]
pub(crate) fn pkt_ptr<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*mut u8> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut u8)
}

/// The SYN's options walked on a copy of its TCP header (any layout but a
/// bare SYN's and Linux's).
#[inline(always)]
fn walk_options(ctx: &XdpContext, p: &TcpPacket, th_len: u32, th: &mut [u8; 64]) -> Option<synack::SynOptions> {
    let n = if th_len > 60 { 60 } else { th_len };
    // SAFETY: copies n (20..=60) bytes into a 64-byte buffer.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, p.l4_off as u32, th.as_mut_ptr() as *mut _, n) } != 0 {
        return None;
    }
    let mut walk = synack::OptionWalk::new(n as usize);
    // SAFETY: the callback gets a pointer to `walk`, alive for the call.
    unsafe {
        bpf_loop(
            synack::MAX_OPTIONS as u32,
            option_cb as *mut core::ffi::c_void,
            &mut walk as *mut synack::OptionWalk as *mut core::ffi::c_void,
            0,
        );
    }
    Some(walk.found)
}

/// The socket for the packet's 4-tuple (established, TIME_WAIT, request or
/// listener), or null. The caller releases it.
#[inline(always)]
pub(crate) fn lookup_socket(ctx: &XdpContext, p: &TcpPacket) -> *mut aya_ebpf::bindings::bpf_sock {
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
pub(crate) fn words(a: &[u8; 16]) -> [u32; 4] {
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
pub(crate) fn plain_ip_len(p: &TcpPacket) -> usize {
    let want = if p.is_v6 { 40 } else { 20 };
    if p.l4_off as usize == p.l3_off as usize + want {
        want
    } else {
        0
    }
}

/// The closed mark of the SYN's 4-tuple (0: not closed lately), read from
/// the 64 KiB of marks only when its summary (4 KiB, in cache) is recent.
/// A mark it cannot read reads as just made.
#[inline(always)]
fn closed_mark_of(p: &TcpPacket, now: u64) -> u8 {
    let slot = handshake::closed_slot(&p.saddr, p.sport, p.dport);
    let (line, at) = handshake::closed_summary_place(slot);
    let Some(summary) = CLOSED_SUMMARY.get(line) else { return handshake::closed_mark(now) };
    if !handshake::closed_recently(summary[at & 63], now) {
        return 0;
    }
    let (line, at) = handshake::closed_place(slot);
    match CLOSED_SEEN.get(line) {
        Some(marks) => marks[at & 63],
        None => handshake::closed_mark(now),
    }
}

/// `answer_syn`'s "not answered here": the SYN goes on to the kernel.
pub(crate) const KERNEL_ANSWERS: u32 = u32::MAX;

/// Answer a SYN to a listener with a cookie SYN-ACK (XDP_TX), or
/// [`KERNEL_ANSWERS`]. Inlined in the entry, as `on_syn` is (a call and a
/// return less: test_run, attack SYN answered, 370-387 -> 357-360 ns); its
/// buffers are the per-CPU `REPLY`, not the stack.
#[inline(always)]
pub(crate) fn answer_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64) -> u32 {
    answer(ctx, c, s, p, now).unwrap_or(KERNEL_ANSWERS)
}

#[inline(always)]
pub(crate) fn answer(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64) -> Option<u32> {
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
    let seen = LISTENER_SEEN.get_ptr_mut(handshake::listener_slot(p.dport, p.is_v6))?;
    // The socket lookup is skipped while a cookie made for this port's
    // listener is recent and the server closed no connection of this
    // 4-tuple lately (only known with the egress program's FIN marks).
    // SAFETY: array slot; a plain word.
    let quick =
        s.flags & FLAG_EGRESS != 0 && handshake::answer_without_lookup(unsafe { *seen }, closed_mark_of(p, now), now);
    let cookie = if quick {
        if s.flags & FLAG_ANSWER == 0 {
            bump(c, Counter::CookieHeld);
            return None;
        }
        let cookie = gen_cookie(ctx, p, core::ptr::null_mut(), ip_len, th_len, &mut r.th);
        if cookie.is_some() {
            bump(c, Counter::CookieNoLookup);
        }
        cookie
    } else {
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
        if cookie.is_some() {
            // The listener is proven, and the kernel stamped it as sending
            // cookies: later SYNs to the port skip the lookup for a while.
            // SAFETY: array slot; a racing CPU writes a time as recent.
            unsafe { *seen = now };
        }
        cookie
    };
    let Some(cookie) = cookie else {
        bump(c, Counter::CookieRefused);
        return None;
    };
    if write_reply(ctx, s, p, th_len, cookie, millis(now), &mut r.th).is_none() {
        bump(c, Counter::CookieOddHeaders);
        return None;
    }
    bump(c, Counter::CookieSent);
    if let Some(atk) = ATTACK.get_ptr_mut(0) {
        // SAFETY: shared map value; a racing first write stores a time as early.
        unsafe {
            if (*atk).first_cookie_ns == 0 {
                // The precise clock (`now` may be the coarse one).
                (*atk).first_cookie_ns = now_ns();
            }
        }
    }
    Some(xdp_action::XDP_TX)
}

/// The SYN-ACK written over the SYN (`cookie` its ISN, `now_ms` its TSval
/// clock): the client's options read (none for a bare SYN, Linux's layout
/// in place, anything else walked on a copy in `th`), the frame resized to
/// the reply, the
/// headers rewritten in words and the MACs swapped. `None`: the frame is
/// left for the kernel (only before the resize) or, after it, malformed.
#[inline(always)]
pub(crate) fn write_reply(
    ctx: &XdpContext,
    s: &Settings,
    p: &TcpPacket,
    th_len: u32,
    cookie: u32,
    now_ms: u32,
    th: &mut [u8; 64],
) -> Option<()> {
    let l3 = p.l3_off as usize & 0x3f;
    let l4 = p.l4_off as usize & 0x7f;
    // The client's options: none (a bare SYN), Linux's layout read in
    // place, or anything else walked on a copy.
    let linux = if th_len == 40 {
        let t = pkt_ptr::<40>(ctx, l4)?;
        synack::linux_layout_words(&ld_words::<5>(t, 20))
    } else {
        None
    };
    let found = match linux {
        Some(o) => o,
        None if th_len == 20 => synack::SynOptions::default(),
        None => walk_options(ctx, p, th_len, th)?,
    };
    let mss = match (p.is_v6, s.synack_mss4, s.synack_mss6) {
        (false, 0, _) => 1460,
        (false, m, _) => m as u16,
        (true, _, 0) => 1440,
        (true, _, m) => m as u16,
    };
    let reply = synack::Reply {
        sport: p.sport,
        dport: p.dport,
        client_isn: p.seq,
        cookie,
        our_mss: mss,
        our_wscale: s.synack_wscale as u8,
        now_ms,
    };
    let (words, len) = synack::synack_words(&reply, &found);
    // Resize the frame to exactly the reply: headers, no payload.
    let cur = (ctx.data_end() - ctx.data()) as i32;
    let delta = (l4 + len) as i32 - cur;
    if delta != 0 {
        // SAFETY: helper on our own context; packet pointers are re-derived after.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return None;
        }
    }
    // The IP header in place: addresses swapped, the rest the reply's own.
    let addrs = if p.is_v6 {
        let ip = pkt_ptr::<40>(ctx, l3)?;
        let (a, b) = (ld_words::<4>(ip, 8), ld_words::<4>(ip, 24));
        st_words(ip, 0, &synack::ipv6_words(len));
        st_words(ip, 8, &b);
        st_words(ip, 24, &a);
        synack::sum(&a, synack::sum(&b, 0))
    } else {
        let ip = pkt_ptr::<20>(ctx, l3)?;
        let [a, b] = ld_words::<2>(ip, 12);
        st_words(ip, 0, &synack::ipv4_words(b, a, len));
        u64::from(a) + u64::from(b)
    };
    let w = synack::with_checksum(words, len, addrs);
    let t = pkt_ptr::<24>(ctx, l4)?;
    st_words(t, 0, &[w[0], w[1], w[2], w[3], w[4], w[5]]);
    if len == 40 {
        let t = pkt_ptr::<40>(ctx, l4)?;
        st_words(t, 24, &[w[6], w[7], w[8], w[9]]);
    }
    // The MACs swapped, as three half-word pairs.
    let e = pkt_ptr::<12>(ctx, 0)?;
    let [d0, d1, d2, s0, s1, s2]: [u16; 6] = [ld(e, 0), ld(e, 2), ld(e, 4), ld(e, 6), ld(e, 8), ld(e, 10)];
    for (i, v) in [s0, s1, s2, d0, d1, d2].into_iter().enumerate() {
        st(e, 2 * i, v);
    }
    Some(())
}

/// One step of the SYN option walk, called by `bpf_loop`: 0 goes on, 1 stops.
pub(crate) extern "C" fn option_cb(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(r) = REPLY.get_ptr(0) else { return 1 };
    // SAFETY: ctx is the walk `answer` passed; r the per-CPU copy of the header.
    let (w, r) = unsafe { (&mut *(ctx as *mut synack::OptionWalk), &*r) };
    if synack::option_step(&r.th, w) {
        0
    } else {
        1
    }
}

/// The kernel's cookie for this SYN: from its listener `sk` (the lookup's
/// path: `bpf_tcp_gen_syncookie` also stamps the listener as sending
/// cookies, so the kernel accepts their ACKs), or with a null `sk` from the
/// raw helpers (the same secret and MSS table, no listener). The helpers
/// read the SYN's TCP header in the packet when it is a bare SYN's (20
/// bytes) or Linux's (40); any other length is copied to `th` first (the
/// helper's length must be a bound the verifier knows).
#[inline(always)]
pub(crate) fn gen_cookie(
    ctx: &XdpContext,
    p: &TcpPacket,
    sk: *mut aya_ebpf::bindings::bpf_sock,
    ip_len: usize,
    th_len: u32,
    th: &mut [u8; 64],
) -> Option<u32> {
    let l4 = p.l4_off as usize & 0x7f;
    let (th, th_len) = match th_len {
        20 => (pkt_ptr::<20>(ctx, l4)?, 20),
        40 => (pkt_ptr::<40>(ctx, l4)?, 40),
        n => {
            let n = if n > 60 { 60 } else { n };
            // SAFETY: copies n (20..=60) bytes into a 64-byte buffer.
            if unsafe { bpf_xdp_load_bytes(ctx.ctx, p.l4_off as u32, th.as_mut_ptr() as *mut _, n) } != 0 {
                return None;
            }
            (th.as_mut_ptr(), n)
        }
    };
    let l3 = p.l3_off as usize & 0x3f;
    let th = th as *mut tcphdr;
    // SAFETY (all four calls): iph spans the stated packet bytes, th th_len
    // bytes of the packet or the copy; a non-null sk is the listener from
    // the lookup.
    let r = if ip_len == 40 {
        let iph = pkt_ptr::<40>(ctx, l3)?;
        if sk.is_null() {
            unsafe { bpf_tcp_raw_gen_syncookie_ipv6(iph as *mut _, th, th_len) }
        } else {
            unsafe { bpf_tcp_gen_syncookie(sk as *mut _, iph as *mut _, 40, th, th_len) }
        }
    } else {
        let iph = pkt_ptr::<20>(ctx, l3)?;
        if sk.is_null() {
            unsafe { bpf_tcp_raw_gen_syncookie_ipv4(iph as *mut _, th, th_len) }
        } else {
            unsafe { bpf_tcp_gen_syncookie(sk as *mut _, iph as *mut _, 20, th, th_len) }
        }
    };
    if r < 0 {
        return None;
    }
    Some(r as u32)
}

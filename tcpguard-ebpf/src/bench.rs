//! Programs that pass everything: the benchmark baselines (loaded only by
//! `tcpguard-lab bench`), and the peer program a veth lab can attach so
//! XDP_TX frames are delivered; and the bare responder, the benchmark's
//! floor of answering a SYN from XDP. Not loaded by the daemon.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, map, xdp},
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};

use tcpguard_common::parse::{TCP_ACK, TCP_RST, TCP_SYN};

use crate::{
    context::{coarse_ns, parse_frame},
    egress::TC_ACT_OK,
    maps::{REPLY, SETTINGS},
    responder::{gen_cookie, plain_ip_len, write_reply},
};

/// A program that passes everything: the benchmark baseline, and the peer
/// program veth needs to deliver XDP_TX frames.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Per action, packets and bytes: xdp-filter's statistics record.
#[map]
static XDP_STATS_REC: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(5, 0);

/// What xdp-filter (xdp-tools) pays per packet for its statistics and
/// nothing else: at its one exit, the per-CPU record of the action is
/// looked up and its packet and byte counts raised. The benchmark's yardstick
/// for tcpguard's fixed part (the "do no worse").
#[xdp]
pub fn xdp_stats_record(ctx: XdpContext) -> u32 {
    let action = xdp_action::XDP_PASS;
    if let Some(r) = XDP_STATS_REC.get_ptr_mut(action) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*r)[0] += 1;
            (*r)[1] += (ctx.data_end() - ctx.data()) as u64;
        }
    }
    action
}

/// A TC program that lets everything go: the egress program's benchmark
/// baseline.
#[classifier]
pub fn tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// The floor of any XDP SYN-cookie responder on this kernel, for the
/// benchmark only: every SYN without IP options or extension headers is
/// answered with the kernel's cookie from the raw helper and tcpguard's own
/// rewrite, with none of the product's work: no accounting, no mode, no
/// local-address, MAC, listener or TIME_WAIT check. (Its cookies are not
/// ones the kernel accepts unless the listener sent cookies lately: a
/// control, never a defence.)
#[xdp]
pub fn xdp_bare_responder(ctx: XdpContext) -> u32 {
    bare_respond(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn bare_respond(ctx: &XdpContext) -> Option<u32> {
    let p = parse_frame(ctx).ok()?;
    if p.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
        return None;
    }
    let ip_len = plain_ip_len(&p);
    let th_len = (p.doff as u32 & 0xf) * 4;
    if ip_len == 0 || th_len < 20 {
        return None;
    }
    let s = SETTINGS.get(0)?;
    let r = REPLY.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, only this CPU uses it during this run.
    let r = unsafe { &mut *r };
    let cookie = gen_cookie(ctx, &p, core::ptr::null_mut(), ip_len, th_len, &mut r.th)?;
    write_reply(ctx, s, &p, th_len, cookie, (coarse_ns() / 1_000_000) as u32, &mut r.th)?;
    Some(xdp_action::XDP_TX)
}

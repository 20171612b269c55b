//! The transmit watch: XDP_TX replies the driver failed to send, counted
//! from the kernel's `xdp` tracepoints (the entry points are in main.rs).

use aya_ebpf::{bindings::xdp_action, programs::RawTracePointContext};
use tcpguard_common::{Counter, FLAG_TX_BULK};

use crate::maps::{COUNTERS, SETTINGS, TX_MARK};

#[inline(always)]
pub(crate) fn tx_bulk(ctx: &RawTracePointContext) -> Option<()> {
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

#[inline(always)]
pub(crate) fn tx_exception(ctx: &RawTracePointContext) -> Option<()> {
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

//! The transmit watch: XDP_TX replies the driver failed to send, counted
//! from the kernel's `xdp:xdp_exception` tracepoint (the entry point is in
//! main.rs).

use aya_ebpf::{bindings::xdp_action, programs::RawTracePointContext};
use tcpguard_common::Counter;

use crate::maps::{COUNTERS, SETTINGS};

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

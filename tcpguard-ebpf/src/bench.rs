//! Programs that pass everything: the benchmark baselines (loaded only by
//! `tcpguard-lab bench`), and the peer program a veth lab can attach so
//! XDP_TX frames are delivered. Not loaded by the daemon.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::egress::TC_ACT_OK;

/// A program that passes everything: the benchmark baseline, and the peer
/// program veth needs to deliver XDP_TX frames.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A TC program that lets everything go: the egress program's benchmark
/// baseline.
#[classifier]
pub fn tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

//! The allow- and block-lists (LPM tries, each pair behind the summary of
//! the first bytes its entries cover) and the verdict of a rule that wants
//! a packet dropped.

use aya_ebpf::maps::lpm_trie::Key;
use tcpguard_common::{
    parse::TcpPacket,
    verdict::{self, Rule},
    Counters, Settings, FLAG_HAS_ALLOWS,
};

use crate::{
    context::{bump, coarse_ns, v4},
    maps::{ALLOW_FIRST, ALLOW_V4, ALLOW_V6, BLOCK_FIRST, BLOCK_V4, BLOCK_V6},
};

/// Whether an allow-list entry can cover a source whose first byte is
/// `first`: false means not allow-listed, with no walk of the trie.
#[inline(always)]
fn may_be_allowed(first: u8, v6: bool) -> bool {
    ALLOW_FIRST.get(0).is_none_or(|f| f.may_hold(first, v6))
}

/// Whether a block-list entry can cover a source whose first byte is
/// `first`: false means not blocked, with no walk of the trie.
#[inline(always)]
pub(crate) fn may_be_blocked(first: u8, v6: bool) -> bool {
    BLOCK_FIRST.get(0).is_none_or(|f| f.may_hold(first, v6))
}

#[inline(always)]
pub(crate) fn allowed(p: &TcpPacket) -> bool {
    if p.is_v6 {
        may_be_allowed(p.saddr[0], true) && ALLOW_V6.get(Key::new(128, p.saddr)).is_some()
    } else {
        allowed_v4(v4(p))
    }
}

/// An IPv4 source (its four bytes) allow-listed.
#[inline(always)]
pub(crate) fn allowed_v4(src: [u8; 4]) -> bool {
    may_be_allowed(src[0], false) && ALLOW_V4.get(Key::new(32, src)).is_some()
}

/// Allow-listed, when the allow-lists hold anything at all.
#[inline(always)]
pub(crate) fn allowed_if_any(s: &Settings, p: &TcpPacket) -> bool {
    s.flags & FLAG_HAS_ALLOWS != 0 && allowed(p)
}

/// `Some(true)` blocked, `Some(false)` matched an expired entry, `None` no match.
#[inline(always)]
pub(crate) fn blocked(p: &TcpPacket) -> Option<bool> {
    let first = if p.is_v6 { p.saddr[0] } else { p.saddr[12] };
    if !may_be_blocked(first, p.is_v6) {
        return None;
    }
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
pub(crate) fn judge(c: &mut Counters, s: &Settings, p: &TcpPacket, rule: Rule, syn: bool) -> verdict::Verdict {
    let v = verdict::decide(s.flags, rule, allowed_if_any(s, p), syn);
    bump(c, v.counter);
    v
}

//! A client SYN: the per-CPU rate window that enters attack mode, and in
//! attack mode the fixed-memory accounting (count-min sketch, HyperLogLog)
//! that decides which SYNs reach the tracking path and which the responder.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_get_prandom_u32, programs::XdpContext};
use tcpguard_common::{
    parse::TcpPacket, sketch, Counter, Counters, ModeEvent, RateWindow, Settings, ATTACK_REASON_SYN_RATE, FLAG_MONITOR,
    FLAG_XDP_COOKIES,
};

use crate::{
    context::bump,
    lists::allowed_if_any,
    maps::{ACK_ATTACK, ATTACK, EVENTS, HLL, RATE_WIN, SKETCH},
    tracking::{count_aggregate, track_syn, SynArgs},
};

#[inline(always)]
pub(crate) fn attack_active() -> bool {
    matches!(ATTACK.get(0), Some(a) if a.active != 0)
}

/// ACKs to a listener are checked for a cookie: in attack mode, or in
/// ACK-checking mode (an ACK flood, entered by the egress program or the
/// daemon).
#[inline(always)]
pub(crate) fn acks_checked() -> bool {
    attack_active() || matches!(ACK_ATTACK.get(0), Some(a) if a.active != 0)
}

/// A client SYN. Inlined in the entry: as a BPF subprogram of its own its
/// call and return cost an attack-mode SYN about 15 ns (test_run: 396-400
/// against 361-367 ns answered; the return goes through the kernel's
/// return thunk on this CPU). Its locals are in the entry's frame, and the
/// deepest chain below it (`track_syn`, `account`, or the responder, each
/// a subprogram) still fits the 512-byte stack: the verifier checks it at
/// every load.
#[inline(always)]
pub(crate) fn on_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64) -> u32 {
    bump(c, Counter::Syn);
    let Some(w) = RATE_WIN.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: per-CPU value, only this CPU writes it.
    let w = unsafe { &mut *w };
    let Some(atk) = ATTACK.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: shared map value; the fields are plain words, a racing CPU
    // entering at the same instant writes the same kind of values.
    let atk = unsafe { &mut *atk };
    // In attack mode the window only counts: no threshold (a division)
    // per SYN.
    let threshold = if atk.active == 0 { s.attack_window_syns() } else { 0 };
    let over = tcpguard_common::rate_step(w, now, threshold);
    if atk.active == 0 && over {
        atk.active = 1;
        atk.reason = ATTACK_REASON_SYN_RATE;
        atk.entered_ns = now;
        atk.trigger_window_ns = w.win_start_ns;
        atk.first_cookie_ns = 0;
        atk.entries += 1;
        bump(c, Counter::AttackEntered);
        if let Some(mut ev) = EVENTS.reserve::<ModeEvent>(0) {
            ev.write(ModeEvent { entered_ns: now, trigger_window_ns: w.win_start_ns });
            ev.submit(0);
        }
    }
    if atk.active == 0 {
        // Tracking mode: the source's aggregate (/24, /64) too.
        if s.heavy_prefix_syns_per_sec != 0 {
            count_aggregate(c, s, p, now, 1);
        }
        return track_syn(ctx, c, s, p, &SynArgs { now, promoted: 0, weight: 1, enter: 1 });
    }

    // Attack mode: fixed-memory accounting of a sampled share; heavy (or
    // rate-limited) sources are followed in the source table, one SYN in
    // `attack_sample` is tracked in full; the flood's one-SYN sources never
    // reach a table.
    bump(c, Counter::AttackSyn);
    let h = sketch::src_hash(&p.saddr, s.hash_seed);
    // Distinct sources: every SYN of a fixed subset of them.
    if sketch::hll_subset(h) {
        if let Some(r) = HLL.get_ptr_mut(0) {
            // SAFETY: per-CPU value.
            sketch::hll_add(unsafe { &mut *r }, h);
        }
    }
    // The sketch: one SYN in `ACCOUNT_EVERY`, chosen at random (this CPU's
    // xorshift stream, seeded from the kernel each window), its estimates
    // scaled back.
    if w.rng == 0 {
        // SAFETY: helper without arguments.
        w.rng = unsafe { sketch::seed(bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    }
    let est = if sketch::counted(sketch::next_random(&mut w.rng)) { account(c, s, p, w, now) } else { 0 };
    let promote = tcpguard_common::promote_threshold(s);
    let heavy = est != 0 && promote != 0 && sketch::promote_estimate(est, w.epoch_syns) >= promote;
    let sampled = s.sampled(c.get(Counter::AttackSyn));
    if heavy || sampled {
        if sampled {
            bump(c, Counter::AttackSampled);
        }
        let args = if heavy {
            SynArgs { now, promoted: est, weight: u64::from(sketch::ACCOUNT_EVERY), enter: 1 }
        } else {
            SynArgs { now, promoted: 0, weight: 1, enter: 0 }
        };
        let v = track_syn(ctx, c, s, p, &args);
        if v == xdp_action::XDP_DROP {
            return v;
        }
    }
    if allowed_if_any(s, p) {
        bump(c, Counter::CookieSkipAllowed);
    } else if s.flags & FLAG_MONITOR != 0 {
        bump(c, Counter::MonitorCookie);
    } else if s.flags & FLAG_XDP_COOKIES != 0 {
        // The caller calls the responder: a call chain one frame shorter.
        return RESPOND;
    }
    xdp_action::XDP_PASS
}

/// A SYN the sampled sketch counts (and its aggregate): its source's
/// scaled estimate. A subprogram (at most five arguments: the source's
/// hash is made again): its frame (the aggregate's key and hash) is not on
/// the stack when `track_syn` runs.
#[inline(never)]
fn account(c: &mut Counters, s: &Settings, p: &TcpPacket, w: &RateWindow, now: u64) -> u64 {
    let sk = SKETCH.get_ptr_mut(0);
    let h = sketch::src_hash(&p.saddr, s.hash_seed);
    let est = match sk {
        // SAFETY: per-CPU value.
        Some(sk) => sketch::scaled(sketch::cms_add(unsafe { &mut *sk }, h, w.epoch)),
        None => 0,
    };
    // Aggregates (/24, /64) through the same sketch under their own hash:
    // only one the sketch finds heavy reaches its table.
    if s.heavy_prefix_syns_per_sec != 0 {
        let ah = sketch::src_hash(&tcpguard_common::aggregate_key(&p.saddr), !s.hash_seed);
        let aest = match sk {
            // SAFETY: per-CPU value (the pointer looked up above).
            Some(sk) => sketch::scaled(sketch::cms_add(unsafe { &mut *sk }, ah, w.epoch)),
            None => 0,
        };
        if sketch::promote_estimate(aest, w.epoch_syns) >= u64::from(s.heavy_prefix_syns_per_sec) {
            count_aggregate(c, s, p, now, u64::from(sketch::ACCOUNT_EVERY));
        }
    }
    est
}

/// `on_syn`'s "answer this SYN from XDP" (then `answer_syn` decides).
pub(crate) const RESPOND: u32 = u32::MAX - 1;

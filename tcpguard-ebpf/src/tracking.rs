//! Tracking mode: the source table (heavy sources, the rate limit), the
//! per-aggregate counts, the half-open table and its accounting ring.

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    programs::XdpContext,
};
use tcpguard_common::{
    halfopen::{self, NS_PER_SEC},
    handshake::{self, SynAction},
    parse::TcpPacket,
    ratelimit::{self, Bucket},
    verdict::Rule,
    AggEvent, AggStats, Counter, Counters, HalfOpen, HeavyEvent, Settings, SrcKey, SrcStats, FLAG_EGRESS,
};

use crate::{
    context::{bump, flow_key, v4},
    lists::judge,
    maps::{AGG_STATS, EVENTS, HALF_OPEN, HO_BUCKETS, SCRATCH, SRC_STATS, SYN_SEEN},
};

/// The tracking path of a SYN: source table, rate limit, half-open table.
/// `promoted` > 0: a source the attack-mode sketch found heavy with that
/// many SYNs this epoch (it is entered in the source table, and no
/// half-open entry is made for it).
/// What `track_syn` needs besides the packet (a BPF subprogram takes at
/// most five arguments).
pub(crate) struct SynArgs {
    pub(crate) now: u64,
    pub(crate) promoted: u64,
    /// SYNs this one stands for: 1, or `sketch::ACCOUNT_EVERY` for a SYN
    /// the sampled sketch counted and promoted.
    pub(crate) weight: u64,
    /// A source not in the table is entered (0: attack mode's one SYN in
    /// `attack_sample` from a source the sketch does not find heavy; it
    /// updates its source's entry if there is one, and is judged on a
    /// fresh copy if not: a spoofed source would only evict a real one,
    /// and attack mode counts distinct sources by HyperLogLog).
    pub(crate) enter: u64,
}

#[inline(never)]
pub(crate) fn track_syn(ctx: &XdpContext, c: &mut Counters, s: &Settings, p: &TcpPacket, a: &SynArgs) -> u32 {
    let (now, promoted, weight) = (a.now, a.promoted, if a.weight == 0 { 1 } else { a.weight });
    let src = &SrcKey { addr: p.saddr };

    let st = match SRC_STATS.get_ptr_mut(src) {
        Some(st) => st,
        None => {
            // Build the new entry in a per-CPU scratch slot (the BPF stack
            // is 512 bytes).
            let Some(fresh) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
            // SAFETY: per-CPU scratch value, only this CPU uses it.
            let fresh = unsafe { &mut *fresh };
            *fresh = SrcStats::default();
            fresh.first_seen_ns = now;
            fresh.window_start_ns = now;
            fresh.second_start_ns = now;
            if promoted > 0 {
                // What the sketch counted before the source got here, so
                // the heavy report fires now.
                // (Less this SYN's weight, added below.)
                fresh.syns = promoted.saturating_sub(weight);
                let heavy = if s.heavy_syns_per_sec == 0 { promoted } else { s.heavy_syns_per_sec };
                fresh.second_syns = (if promoted < heavy { promoted } else { heavy }).saturating_sub(weight);
                bump(c, Counter::SketchPromoted);
            }
            // A failed insert is counted, never logged: it can happen per
            // packet under a flood. The SYN is then judged and tracked on
            // the fresh copy (what a new source gets), so it still meets
            // the rate limit and opens its half-open entry; so is a SYN
            // that enters no source.
            if a.enter == 0 {
                fresh as *mut SrcStats
            } else if SRC_STATS.insert(src, &*fresh, 0).is_err() {
                bump(c, Counter::SourceInsertFailed);
                fresh as *mut SrcStats
            } else {
                bump(c, Counter::NewSource);
                match SRC_STATS.get_ptr_mut(src) {
                    Some(st) => st,
                    None => fresh as *mut SrcStats,
                }
            }
        }
    };
    // SAFETY: map value pointer; see SrcStats docs on concurrency.
    let st = unsafe { &mut *st };
    st.syns += weight;
    st.last_seen_ns = now;
    if now.saturating_sub(st.second_start_ns) >= NS_PER_SEC {
        st.second_start_ns = now;
        st.second_syns = 0;
    }
    let before = st.second_syns;
    st.second_syns += weight;
    // Once a second, when the count crosses the heavy rate.
    if s.heavy_syns_per_sec != 0 && before < s.heavy_syns_per_sec && st.second_syns >= s.heavy_syns_per_sec {
        // Written in place in the ring buffer: no copy on the BPF stack.
        if let Some(mut ev) = EVENTS.reserve::<HeavyEvent>(0) {
            ev.write(HeavyEvent { addr: p.saddr, syns: st.syns, half_open: st.half_open, completed: st.completed });
            ev.submit(0);
            bump(c, Counter::HeavyEvent);
        }
        // Rare by construction (once per source per second at the heavy
        // rate): a datapath record for the daemon's log.
        // (Target "tcpguard": the record reads as it did before the split.)
        if p.is_v6 {
            aya_log_ebpf::info!(ctx, target: "tcpguard", "heavy source {:i}: {} SYNs within one second", p.saddr, st.second_syns);
        } else {
            let a = u32::from_be_bytes(v4(p));
            aya_log_ebpf::info!(ctx, target: "tcpguard", "heavy source {:i}: {} SYNs within one second", a, st.second_syns);
        }
    }

    if s.syn_rate != 0 {
        let b = Bucket { tokens_milli: st.tokens_milli, refill_ns: st.refill_ns };
        let (ok, b) = ratelimit::take_for(b, now, s.syn_rate, s.syn_burst, weight);
        st.tokens_milli = b.tokens_milli;
        st.refill_ns = b.refill_ns;
        if !ok {
            let v = judge(c, s, p, Rule::RateLimited, true);
            if v.source_dropped {
                st.dropped += 1;
            }
            if v.drop {
                return xdp_action::XDP_DROP;
            }
        }
    }
    if promoted == 0 && track_handshake(c, s, p, now) && s.flags & FLAG_EGRESS == 0 {
        // No egress program: half-open from the SYN.
        count_half_open(c, Some(st), now, s.timeout_ns());
    }
    xdp_action::XDP_PASS
}

/// Count a SYN (standing for `weight` SYNs: see `SynArgs`) against its
/// source's aggregate (/24 or /64) and report the aggregate once per second
/// at the heavy-prefix rate.
#[inline(never)]
pub(crate) fn count_aggregate(c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64, weight: u64) {
    let key = SrcKey { addr: tcpguard_common::aggregate_key(&p.saddr) };
    let a = match AGG_STATS.get_ptr_mut(&key) {
        Some(a) => a,
        None => {
            let fresh = AggStats { syns: 0, second_syns: 0, second_start_ns: now };
            if AGG_STATS.insert(&key, &fresh, 0).is_err() {
                return;
            }
            match AGG_STATS.get_ptr_mut(&key) {
                Some(a) => a,
                None => return,
            }
        }
    };
    // SAFETY: map value pointer; concurrent updates may lose an increment.
    let a = unsafe { &mut *a };
    a.syns += weight;
    if now.saturating_sub(a.second_start_ns) >= NS_PER_SEC {
        a.second_start_ns = now;
        a.second_syns = 0;
    }
    let before = a.second_syns;
    a.second_syns += weight;
    let heavy = u64::from(s.heavy_prefix_syns_per_sec);
    if before < heavy && a.second_syns >= heavy {
        if let Some(mut ev) = EVENTS.reserve::<AggEvent>(0) {
            let len = if p.is_v6 { tcpguard_common::AGG_V6_LEN } else { tcpguard_common::AGG_V4_LEN };
            ev.write(AggEvent { addr: key.addr, syns: a.syns, len: u32::from(len), _pad: 0 });
            ev.submit(0);
            bump(c, Counter::HeavyPrefixEvent);
        }
    }
}

/// A handshake became half-open at `now`: the accounting ring and the
/// source's window.
#[inline(always)]
pub(crate) fn count_half_open(c: &mut Counters, st: Option<&mut SrcStats>, now: u64, timeout: u64) {
    bump(c, Counter::HalfOpenOpened);
    let sec = now / NS_PER_SEC;
    if let Some(b) = HO_BUCKETS.get_ptr_mut(halfopen::slot(sec)) {
        // SAFETY: per-CPU slot.
        halfopen::record_open(unsafe { &mut *b }, sec);
    }
    if let Some(st) = st {
        if now.saturating_sub(st.window_start_ns) >= timeout {
            st.failed += st.half_open;
            st.half_open = 0;
            st.window_start_ns = now;
        }
        st.half_open += 1;
    }
}

/// Enter a client SYN in the half-open table. It becomes half-open when
/// the server answers (`tcpguard_egress`), not here: a SYN the server drops
/// or refuses is never half-open.
/// Returns whether a new handshake was entered.
#[inline(always)]
pub(crate) fn track_handshake(c: &mut Counters, s: &Settings, p: &TcpPacket, now: u64) -> bool {
    let key = flow_key(p);
    let answered = if s.flags & FLAG_EGRESS == 0 { now } else { 0 };
    let e = HalfOpen { isn: p.seq, server_isn: 0, syn_ns: now, synack_ns: answered };
    // Most SYNs (all of a flood's) open a new handshake: try the insert
    // first and look the tuple up only when it already exists.
    let entered = if HALF_OPEN.insert(&key, &e, BPF_NOEXIST.into()).is_ok() {
        true
    } else {
        // SAFETY: the value is copied out before any update.
        let existing = unsafe { HALF_OPEN.get(&key) }.copied();
        match handshake::on_syn(existing.as_ref(), p.seq) {
            SynAction::Retransmit => {
                bump(c, Counter::SynRetransmit);
                false
            }
            action => {
                if action == SynAction::Replace {
                    bump(c, Counter::HalfOpenReplaced);
                }
                HALF_OPEN.insert(&key, &e, 0).is_ok()
            }
        }
    };
    if entered {
        if let Some(slot) = SYN_SEEN.get_ptr_mut(handshake::filter_slot(&p.saddr, p.sport, p.dport)) {
            // SAFETY: array slot; a racing writer stores a time just as recent.
            unsafe { *slot = now };
        }
        bump(c, Counter::SynTracked);
    }
    entered
}

/// Close an entry: an answered (half-open) one leaves the accounting ring
/// and the source's window; an unanswered one was never counted.
#[inline(always)]
pub(crate) fn close_half_open(e: &HalfOpen, src: &SrcKey, timeout: u64, now: u64) -> Option<*mut SrcStats> {
    if e.answered() && !handshake::is_expired(e, now, timeout) {
        let sec = e.synack_ns / NS_PER_SEC;
        if let Some(b) = HO_BUCKETS.get_ptr_mut(halfopen::slot(sec)) {
            // SAFETY: per-CPU slot, only this CPU writes it.
            halfopen::record_close(unsafe { &mut *b }, sec);
        }
    }
    let st = SRC_STATS.get_ptr_mut(src)?;
    // SAFETY: map value pointer; concurrent updates may lose an increment.
    let sr = unsafe { &mut *st };
    if e.answered() && e.synack_ns >= sr.window_start_ns && sr.half_open > 0 {
        sr.half_open -= 1;
    }
    Some(st)
}

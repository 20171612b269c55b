//! Handshake transitions, as pure functions of the stored half-open entry
//! and the packet. The XDP program applies the returned action to its maps.
//!
//! Lifecycle of an entry in `HALF_OPEN` (keyed by the client's 4-tuple):
//! - a client SYN enters it with the client ISN and the time (XDP);
//! - a SYN repeating that ISN is a retransmission, not a new handshake;
//! - a SYN with another ISN replaces it (the old attempt failed);
//! - the server's SYN-ACK acknowledging ISN + 1 (TC egress) records the
//!   server's ISN and makes it half-open (the kernel's SYN_RCVD); an RST
//!   from the server instead (no listener) removes it as refused, never
//!   half-open;
//! - the client's ACK with seq = ISN + 1 *and* ack = server ISN + 1
//!   completes it (entry removed);
//! - an RST removes it;
//! - otherwise it ages out: once older than the half-open timeout it is
//!   counted as a failed handshake by the accounting ring
//!   ([`crate::halfopen`]) and the LRU reclaims its slot when space is
//!   needed. A completion that arrives later still completes (counted as
//!   late) but no longer changes the half-open count.

use crate::HalfOpen;

/// Slots in the SYN pre-filter (`SYN_SEEN`, an array of coarse timestamps).
pub const FILTER_SLOTS: u32 = 1 << 16;

/// Pre-filter slot of a 4-tuple. The ACK path of an established flow reads
/// one array slot instead of hashing the 40-byte key into `HALF_OPEN`:
/// only when a SYN hashed to the same slot within the half-open timeout is
/// the table looked up. False positives cost one lookup; there are no false
/// negatives while the slot's stamp is younger than the timeout.
#[inline(always)]
pub fn filter_slot(saddr: &[u8; 16], sport: u16, dport: u16) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([saddr[i], saddr[i + 1], saddr[i + 2], saddr[i + 3]]);
    filter_mix(w(0) ^ w(4) ^ w(8), w(12), sport, dport)
}

/// [`filter_slot`] of an IPv4 source given as its 4-byte word
/// (`synack::wire` of its bytes): the same slot as its v4-mapped address.
#[inline(always)]
pub fn filter_slot_v4(src: u32, sport: u16, dport: u16) -> u32 {
    // The v4-mapped prefix: words 0 and 1 zero, word 2 ::ffff.
    filter_mix(u32::from_ne_bytes([0, 0, 0xff, 0xff]), src, sport, dport)
}

#[inline(always)]
fn filter_mix(high: u32, low: u32, sport: u16, dport: u16) -> u32 {
    const K: u32 = 0x9E37_79B1;
    let ports = (u32::from(sport) << 16) | u32::from(dport);
    // Multiply between the words so that address and port bits do not
    // cancel each other as a plain XOR fold would.
    let mut x = high.wrapping_mul(K) ^ low;
    x = x.wrapping_mul(K) ^ ports;
    // murmur3's 32-bit finaliser.
    x ^= x >> 16;
    x = x.wrapping_mul(0x85EB_CA6B);
    x ^= x >> 13;
    x = x.wrapping_mul(0xC2B2_AE35);
    x ^= x >> 16;
    x & (FILTER_SLOTS - 1)
}

/// Whether a slot stamped at `stamp_ns` may hold a live half-open entry.
/// The stamps come from a coarse clock: allow one extra second of slack.
#[inline(always)]
pub fn filter_may_match(stamp_ns: u64, now_ns: u64, timeout_ns: u64) -> bool {
    stamp_ns != 0 && now_ns.saturating_sub(stamp_ns) < timeout_ns + 1_000_000_000
}

/// How long the server's TIME_WAIT socket of a closed 4-tuple lives
/// (`TCP_TIMEWAIT_LEN`).
pub const TIME_WAIT_NS: u64 = 60_000_000_000;
/// How long a kernel cookie made for a port's listener (the socket lookup's
/// path) vouches for that listener: within it, later SYNs to the port are
/// answered without a lookup. It also bounds how long an answer may go out
/// for a listener that has since closed.
pub const LISTENER_FRESH_NS: u64 = 1_000_000_000;
/// Slots of the per-(family, port) listener stamps.
pub const LISTENER_SLOTS: u32 = 1 << 17;
/// Slots of the closed-4-tuple marks: one byte each, 64 KiB, small enough
/// to stay in cache under a flood, where each SYN reads a random slot.
pub const CLOSED_SLOTS: u32 = 1 << 16;
/// Marks per map entry. An array map rounds every value up to 8 bytes, so
/// one-byte values would take 512 KiB (measured: the random read of a mark
/// was 57 % of the responder's time under a full-rate flood); the marks are
/// stored 64 to an entry, one cache line.
pub const CLOSED_PER_LINE: u32 = 64;
/// Entries of the closed-mark map.
pub const CLOSED_LINES: u32 = CLOSED_SLOTS / CLOSED_PER_LINE;
/// One entry of the closed-mark map.
pub type ClosedLine = [u8; CLOSED_PER_LINE as usize];

/// Where a closed-mark slot lives: (entry, byte in the entry).
#[inline(always)]
pub fn closed_place(slot: u32) -> (u32, usize) {
    (slot / CLOSED_PER_LINE % CLOSED_LINES, (slot % CLOSED_PER_LINE) as usize)
}

/// Closed-mark slots one summary mark stands for.
pub const CLOSED_SUMMARY_SPAN: u32 = 16;
/// Slots of the closed-mark summary: 4 KiB, 64 cache lines, which a flood
/// reads often enough to keep in cache. Each holds the latest mark of its
/// [`CLOSED_SUMMARY_SPAN`] slots, so a summary that is not recent proves
/// that none of them is, without reading the 64 KiB of marks (a random read
/// there missed the cache under a full-rate flood: measured 27 % of the
/// program's samples). Only a SYN whose summary is recent reads its own
/// mark: with the server closing C connections a second, a share of about
/// 1 − e^(−64·C / 4,096) of the SYNs (15 % at C = 10, 79 % at C = 100).
pub const CLOSED_SUMMARY_SLOTS: u32 = CLOSED_SLOTS / CLOSED_SUMMARY_SPAN;
/// Entries of the summary map (64 marks to an entry, as the marks').
pub const CLOSED_SUMMARY_LINES: u32 = CLOSED_SUMMARY_SLOTS / CLOSED_PER_LINE;

/// Where the summary of a closed-mark slot lives: (entry, byte).
#[inline(always)]
pub fn closed_summary_place(slot: u32) -> (u32, usize) {
    let s = slot / CLOSED_SUMMARY_SPAN % CLOSED_SUMMARY_SLOTS;
    (s / CLOSED_PER_LINE, (s % CLOSED_PER_LINE) as usize)
}
/// A closed-4-tuple mark counts time in units of 2^32 ns (about 4.3 s) ...
const CLOSED_UNIT_SHIFT: u32 = 32;
/// ... and stays recent for this many units after the one it was made in
/// (64 s and more: TIME_WAIT's 60 s with a unit's rounding to spare).
const CLOSED_UNITS: u8 = 15;

/// Slot of a destination port and family in the listener stamps.
#[inline(always)]
pub fn listener_slot(dport: u16, v6: bool) -> u32 {
    u32::from(dport) | (u32::from(v6) << 16)
}

/// Slot of a client 4-tuple in the closed marks.
#[inline(always)]
pub fn closed_slot(saddr: &[u8; 16], sport: u16, dport: u16) -> u32 {
    filter_slot(saddr, sport, dport) & (CLOSED_SLOTS - 1)
}

/// The mark of a 4-tuple the server closes at `now_ns`: its time unit
/// modulo 255, plus one (so never 0, which means "never closed"). The marks
/// wrap every 255 units (18 min): an old mark can read as recent again,
/// which only costs a socket lookup; a recent one never reads as old.
#[inline(always)]
pub fn closed_mark(now_ns: u64) -> u8 {
    ((now_ns >> CLOSED_UNIT_SHIFT) % 255) as u8 + 1
}

/// Whether the 4-tuple's slot was closed by the server recently enough
/// that a TIME_WAIT socket may hold it. A mark one unit ahead of `now_ns`
/// counts too: the reader's clock may be a few milliseconds behind the
/// writer's (a per-CPU cached coarse clock), across a unit's boundary.
#[inline(always)]
pub fn closed_recently(mark: u8, now_ns: u64) -> bool {
    let age = (u16::from(closed_mark(now_ns)) + 255 - u16::from(mark)) % 255;
    mark != 0 && (age <= u16::from(CLOSED_UNITS) || age == 254)
}

/// Whether a SYN may be answered from XDP without a socket lookup: the
/// port's listener was proven within [`LISTENER_FRESH_NS`] (which also
/// keeps the kernel's "cookies sent recently" stamp on it fresh: the kernel
/// refuses cookie ACKs to a listener without one), and the server closed no
/// connection of this 4-tuple's slot within TIME_WAIT (its TIME_WAIT
/// socket, which only the lookup finds, must get the SYN).
#[inline(always)]
pub fn answer_without_lookup(listener_ns: u64, closed: u8, now_ns: u64) -> bool {
    listener_ns != 0
        && now_ns >= listener_ns
        && now_ns - listener_ns < LISTENER_FRESH_NS
        && !closed_recently(closed, now_ns)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynAction {
    /// No entry for the 4-tuple: open one.
    Open,
    /// Same ISN as the open entry: a retransmission, nothing new.
    Retransmit,
    /// An entry with another ISN: the old attempt is abandoned, open anew.
    Replace,
}

#[inline(always)]
pub fn on_syn(existing: Option<&HalfOpen>, seq: u32) -> SynAction {
    match existing {
        None => SynAction::Open,
        Some(e) if e.isn == seq => SynAction::Retransmit,
        Some(_) => SynAction::Replace,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckAction {
    /// seq = ISN + 1, ack = server ISN + 1, within the timeout: complete.
    Complete,
    /// As `Complete`, after the timeout: complete, already counted as failed.
    CompleteLate,
    /// Any other seq: not the final ACK of this handshake.
    BadSeq,
    /// The right seq, but not acknowledging the server's SYN-ACK.
    BadAck,
    /// The server has not answered the SYN: nothing to complete.
    Unanswered,
}

/// The client's ACK against the entry. `proven`: the ACK carries a SYN
/// cookie the kernel validated (the SYN-ACK came from XDP, not through
/// egress): the seq alone decides.
#[inline(always)]
pub fn on_ack(entry: &HalfOpen, seq: u32, ack: u32, now_ns: u64, timeout_ns: u64, proven: bool) -> AckAction {
    if seq != entry.isn.wrapping_add(1) {
        return AckAction::BadSeq;
    }
    if !proven {
        if !entry.answered() {
            return AckAction::Unanswered;
        }
        if ack != entry.server_isn.wrapping_add(1) {
            return AckAction::BadAck;
        }
    }
    if entry.answered() && is_expired(entry, now_ns, timeout_ns) {
        AckAction::CompleteLate
    } else {
        AckAction::Complete
    }
}

/// The server's SYN-ACK for the entry (egress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynAckAction {
    /// The first answer to this SYN: half-open from now.
    Open,
    /// The server sent it again (same ISN): nothing new.
    Retransmit,
    /// It does not acknowledge this entry's SYN (ack != ISN + 1).
    Mismatch,
}

#[inline(always)]
pub fn on_synack(entry: &HalfOpen, seq: u32, ack: u32) -> SynAckAction {
    if ack != entry.isn.wrapping_add(1) {
        SynAckAction::Mismatch
    } else if entry.answered() && entry.server_isn == seq {
        SynAckAction::Retransmit
    } else {
        SynAckAction::Open
    }
}

/// Whether an answered entry outlived the half-open timeout.
#[inline(always)]
pub fn is_expired(entry: &HalfOpen, now_ns: u64, timeout_ns: u64) -> bool {
    now_ns.saturating_sub(entry.synack_ns) >= timeout_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry answered by the server (ISN 7000) at `t`.
    fn e(isn: u32, t: u64) -> HalfOpen {
        HalfOpen { isn, server_isn: 7000, syn_ns: t.saturating_sub(1), synack_ns: t.max(1) }
    }

    #[test]
    fn syn_transitions() {
        assert_eq!(on_syn(None, 5), SynAction::Open);
        assert_eq!(on_syn(Some(&e(5, 0)), 5), SynAction::Retransmit);
        assert_eq!(on_syn(Some(&e(5, 0)), 6), SynAction::Replace);
    }

    #[test]
    fn filter_slot_is_in_range_and_spreads() {
        let mut seen = std::collections::HashSet::new();
        for port in 0..1000u16 {
            let mut a = [0u8; 16];
            a[15] = (port % 7) as u8;
            let s = filter_slot(&a, 40000 + port, 80);
            assert!(s < FILTER_SLOTS);
            seen.insert(s);
        }
        assert!(seen.len() >= 980, "{} distinct slots of 1000", seen.len());
        // The IPv4 form gives the v4-mapped address's slot.
        for i in 0..10_000u32 {
            let a = i.wrapping_mul(2_654_435_761).to_be_bytes();
            let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]];
            let (sp, dp) = (i as u16 ^ 0x5a5a, (i >> 3) as u16);
            assert_eq!(filter_slot_v4(u32::from_ne_bytes(a), sp, dp), filter_slot(&mapped, sp, dp));
        }
        let t = 10_000_000_000;
        assert!(!filter_may_match(0, 5, t));
        assert!(filter_may_match(100, 100 + t, t));
        assert!(!filter_may_match(100, 100 + t + 1_000_000_000, t));
    }

    #[test]
    fn a_syn_skips_the_lookup_only_for_a_fresh_listener_and_no_recent_close() {
        let t = 1_000_000_000_000u64;
        assert!(answer_without_lookup(t, 0, t + 1));
        assert!(answer_without_lookup(t, 0, t + LISTENER_FRESH_NS - 1));
        assert!(!answer_without_lookup(t, 0, t + LISTENER_FRESH_NS), "stale listener stamp");
        assert!(!answer_without_lookup(0, 0, t), "never proven");
        assert!(!answer_without_lookup(t + 5, 0, t), "a stamp from another CPU's later clock read");
        // The server closed this 4-tuple (slot) at c: TIME_WAIT may hold it
        // for 60 s, the mark says so for all of them, and not forever.
        let every_unit = (0..600u64).map(|u| (u << 32) + (u * 7_919_000_000) % (1 << 32));
        for c in [t, t + (1 << 32) - 1, (256 << 32) - 1, 0, 1].into_iter().chain(every_unit) {
            let m = closed_mark(c);
            assert_ne!(m, 0);
            for dt in [0, 1_000_000_000, 30_000_000_000, TIME_WAIT_NS, TIME_WAIT_NS + 1_000_000_000] {
                assert!(closed_recently(m, c + dt), "closed at {c}, {dt} ns later");
                assert!(!answer_without_lookup(c + dt, m, c + dt + 1));
            }
            assert!(!closed_recently(m, c + 70_000_000_000), "closed at {c}, 70 s later");
            // Read with a clock up to 10 ms behind the writer's.
            for lag in [1, 4_000_000, 10_000_000] {
                assert!(closed_recently(m, c.saturating_sub(lag)), "closed at {c}, read {lag} ns before");
            }
        }
        assert!(!closed_recently(0, t), "never closed");
        assert_eq!(listener_slot(80, false), 80);
        assert_eq!(listener_slot(80, true), 80 + 65_536);
        assert!(listener_slot(u16::MAX, true) < LISTENER_SLOTS);
        assert!(closed_slot(&[7; 16], 1234, 80) < CLOSED_SLOTS);
        // Every slot has one place, and the places cover the entries once.
        let mut seen = vec![false; CLOSED_SLOTS as usize];
        for slot in 0..CLOSED_SLOTS {
            let (line, at) = closed_place(slot);
            assert!(line < CLOSED_LINES && at < CLOSED_PER_LINE as usize);
            let i = (line * CLOSED_PER_LINE) as usize + at;
            assert!(!seen[i], "slot {slot} shares a place");
            seen[i] = true;
        }
        assert_eq!(CLOSED_LINES as usize * core::mem::size_of::<ClosedLine>(), 64 * 1024);
        // The summary: 4 KiB, each place standing for CLOSED_SUMMARY_SPAN
        // slots exactly.
        let mut per = vec![0u32; CLOSED_SUMMARY_SLOTS as usize];
        for slot in 0..CLOSED_SLOTS {
            let (line, at) = closed_summary_place(slot);
            assert!(line < CLOSED_SUMMARY_LINES && at < CLOSED_PER_LINE as usize);
            per[(line * CLOSED_PER_LINE) as usize + at] += 1;
        }
        assert!(per.iter().all(|n| *n == CLOSED_SUMMARY_SPAN));
        assert_eq!(CLOSED_SUMMARY_LINES as usize * core::mem::size_of::<ClosedLine>(), 4 * 1024);
    }

    #[test]
    fn ack_transitions() {
        let s = 1_000_000_000;
        assert_eq!(on_ack(&e(100, 1), 101, 7001, 5, s, false), AckAction::Complete);
        assert_eq!(on_ack(&e(100, 1), 100, 7001, 5, s, false), AckAction::BadSeq);
        assert_eq!(on_ack(&e(100, 1), 102, 7001, 5, s, false), AckAction::BadSeq);
        // The right seq, acknowledging something else than the SYN-ACK.
        assert_eq!(on_ack(&e(100, 1), 101, 7002, 5, s, false), AckAction::BadAck);
        assert_eq!(on_ack(&e(100, 1), 101, 0, 5, s, false), AckAction::BadAck);
        assert_eq!(on_ack(&e(100, 1), 101, 7001, s + 1, s, false), AckAction::CompleteLate);
        // ISNs at the top of the sequence space wrap.
        let top = HalfOpen { isn: u32::MAX, server_isn: u32::MAX, syn_ns: 1, synack_ns: 2 };
        assert_eq!(on_ack(&top, 0, 0, 5, s, false), AckAction::Complete);
        // Never answered: nothing to complete, whatever the ACK says...
        let pending = HalfOpen { isn: 100, server_isn: 0, syn_ns: 1, synack_ns: 0 };
        assert_eq!(on_ack(&pending, 101, 1, 5, s, false), AckAction::Unanswered);
        // ...unless the kernel validated a cookie in it (SYN-ACK from XDP).
        assert_eq!(on_ack(&pending, 101, 12345, 5, s, true), AckAction::Complete);
        assert_eq!(on_ack(&pending, 102, 12345, 5, s, true), AckAction::BadSeq);
    }

    #[test]
    fn synack_transitions() {
        let pending = HalfOpen { isn: 100, server_isn: 0, syn_ns: 1, synack_ns: 0 };
        assert_eq!(on_synack(&pending, 7000, 101), SynAckAction::Open);
        assert_eq!(on_synack(&pending, 7000, 100), SynAckAction::Mismatch);
        let answered = HalfOpen { server_isn: 7000, synack_ns: 5, ..pending };
        assert_eq!(on_synack(&answered, 7000, 101), SynAckAction::Retransmit);
        // Another ISN for the same SYN: the server started over.
        assert_eq!(on_synack(&answered, 9000, 101), SynAckAction::Open);
    }
}

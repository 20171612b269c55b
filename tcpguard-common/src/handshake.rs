//! Handshake transitions, as pure functions of the stored half-open entry
//! and the packet. The XDP program applies the returned action to its maps.
//!
//! Lifecycle of an entry in `HALF_OPEN` (keyed by the client's 4-tuple):
//! - a client SYN opens it with the client ISN and the time;
//! - a SYN repeating that ISN is a retransmission, not a new handshake;
//! - a SYN with another ISN replaces it (the old attempt failed);
//! - the client's ACK with seq = ISN + 1 completes it (entry removed);
//! - an RST removes it;
//! - otherwise it ages out: once older than the half-open timeout it is
//!   counted as a failed handshake by the accounting ring
//!   ([`crate::halfopen`]) and the LRU reclaims its slot when space is
//!   needed. A completion that arrives later still completes (counted as
//!   late) but no longer changes the half-open count.

use crate::HalfOpen;

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
    /// seq = ISN + 1 within the timeout: handshake complete.
    Complete,
    /// seq = ISN + 1 after the timeout: complete, already counted as failed.
    CompleteLate,
    /// Any other seq: not the final ACK of this handshake.
    BadSeq,
}

#[inline(always)]
pub fn on_ack(entry: &HalfOpen, seq: u32, now_ns: u64, timeout_ns: u64) -> AckAction {
    if seq != entry.isn.wrapping_add(1) {
        AckAction::BadSeq
    } else if is_expired(entry, now_ns, timeout_ns) {
        AckAction::CompleteLate
    } else {
        AckAction::Complete
    }
}

#[inline(always)]
pub fn is_expired(entry: &HalfOpen, now_ns: u64, timeout_ns: u64) -> bool {
    now_ns.saturating_sub(entry.opened_ns) >= timeout_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(isn: u32, t: u64) -> HalfOpen {
        HalfOpen { isn, _pad: 0, opened_ns: t }
    }

    #[test]
    fn syn_transitions() {
        assert_eq!(on_syn(None, 5), SynAction::Open);
        assert_eq!(on_syn(Some(&e(5, 0)), 5), SynAction::Retransmit);
        assert_eq!(on_syn(Some(&e(5, 0)), 6), SynAction::Replace);
    }

    #[test]
    fn ack_transitions() {
        let s = 1_000_000_000;
        assert_eq!(on_ack(&e(100, 0), 101, 5, s), AckAction::Complete);
        assert_eq!(on_ack(&e(100, 0), 100, 5, s), AckAction::BadSeq);
        assert_eq!(on_ack(&e(100, 0), 102, 5, s), AckAction::BadSeq);
        assert_eq!(on_ack(&e(100, 0), 101, s, s), AckAction::CompleteLate);
        // ISN at the top of the sequence space wraps.
        assert_eq!(on_ack(&e(u32::MAX, 0), 0, 1, s), AckAction::Complete);
    }
}

//! The datapath's drop decision as one pure function: the XDP program asks
//! it whenever a rule (block-list, rate limit, invalid ACK in attack mode)
//! wants a packet dropped, and applies the answer. Host-tested over its
//! whole truth table below.
//!
//! The rules:
//! - an allow-listed source is never dropped; the packet goes on as if no
//!   rule had matched (a SYN is counted and tracked), and nothing is
//!   counted against the source;
//! - in monitor mode nothing is dropped either; the would-be drop is
//!   counted (`monitor_*`, and on the source as a would-be drop) and the
//!   packet is tracked like any other;
//! - otherwise the packet is dropped, counted by reason and, for the
//!   block-list, by kind (SYN or other), so only dropped SYNs feed the SYN
//!   rate; a dropped packet is not tracked.

use crate::{Counter, FLAG_MONITOR};

/// Which rule wants the packet dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Blocked,
    RateLimited,
    /// Attack mode: an ACK to a listener without a valid SYN cookie.
    InvalidAck,
}

/// What to do with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub drop: bool,
    /// The counter this decision moves: the packet's outcome when it is
    /// dropped (`drop_*`), else a note on a packet that goes on
    /// (`allow_override`, `monitor_*`) and ends in its own pass counter.
    pub counter: Counter,
    /// Go on with handshake tracking (counting the SYN, the half-open
    /// entry, the completion).
    pub track: bool,
    /// Count the packet as dropped (or, in monitor mode, as would-be
    /// dropped) on its source.
    pub source_dropped: bool,
}

/// The decision for a packet that `rule` wants dropped. `allowed`: the
/// source is on the allow-list; `syn`: the packet is a client SYN.
#[inline(always)]
pub fn decide(flags: u32, rule: Rule, allowed: bool, syn: bool) -> Verdict {
    if allowed {
        return Verdict { drop: false, counter: Counter::AllowOverride, track: true, source_dropped: false };
    }
    if flags & FLAG_MONITOR != 0 {
        let counter = match rule {
            Rule::Blocked => Counter::MonitorBlocked,
            Rule::RateLimited => Counter::MonitorRateLimited,
            Rule::InvalidAck => Counter::MonitorAckInvalid,
        };
        return Verdict { drop: false, counter, track: true, source_dropped: true };
    }
    let counter = match (rule, syn) {
        (Rule::Blocked, true) => Counter::DropBlocked,
        (Rule::Blocked, false) => Counter::DropBlockedOther,
        (Rule::RateLimited, _) => Counter::DropRateLimited,
        (Rule::InvalidAck, _) => Counter::DropAckInvalid,
    };
    Verdict { drop: true, counter, track: false, source_dropped: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, FLAG_HAS_ALLOWS, FLAG_HAS_BLOCKS, FLAG_PORT_FILTER, FLAG_XDP_COOKIES};

    /// The whole table: every rule × allow-listed or not × monitor or not ×
    /// SYN or not, under every combination of the other flags (which must
    /// not matter).
    #[test]
    fn truth_table() {
        use Counter::*;
        let table = [
            // (rule, allowed, monitor, syn) → (drop, counter, track, source_dropped)
            (Rule::Blocked, false, false, true, (true, DropBlocked, false, true)),
            (Rule::Blocked, false, false, false, (true, DropBlockedOther, false, true)),
            (Rule::Blocked, false, true, true, (false, MonitorBlocked, true, true)),
            (Rule::Blocked, false, true, false, (false, MonitorBlocked, true, true)),
            (Rule::Blocked, true, false, true, (false, AllowOverride, true, false)),
            (Rule::Blocked, true, false, false, (false, AllowOverride, true, false)),
            (Rule::Blocked, true, true, true, (false, AllowOverride, true, false)),
            (Rule::Blocked, true, true, false, (false, AllowOverride, true, false)),
            (Rule::RateLimited, false, false, true, (true, DropRateLimited, false, true)),
            (Rule::RateLimited, false, false, false, (true, DropRateLimited, false, true)),
            (Rule::RateLimited, false, true, true, (false, MonitorRateLimited, true, true)),
            (Rule::RateLimited, false, true, false, (false, MonitorRateLimited, true, true)),
            (Rule::RateLimited, true, false, true, (false, AllowOverride, true, false)),
            (Rule::RateLimited, true, false, false, (false, AllowOverride, true, false)),
            (Rule::RateLimited, true, true, true, (false, AllowOverride, true, false)),
            (Rule::RateLimited, true, true, false, (false, AllowOverride, true, false)),
            (Rule::InvalidAck, false, false, true, (true, DropAckInvalid, false, true)),
            (Rule::InvalidAck, false, false, false, (true, DropAckInvalid, false, true)),
            (Rule::InvalidAck, false, true, true, (false, MonitorAckInvalid, true, true)),
            (Rule::InvalidAck, false, true, false, (false, MonitorAckInvalid, true, true)),
            (Rule::InvalidAck, true, false, true, (false, AllowOverride, true, false)),
            (Rule::InvalidAck, true, false, false, (false, AllowOverride, true, false)),
            (Rule::InvalidAck, true, true, true, (false, AllowOverride, true, false)),
            (Rule::InvalidAck, true, true, false, (false, AllowOverride, true, false)),
        ];
        let others = [FLAG_HAS_ALLOWS, FLAG_HAS_BLOCKS, FLAG_PORT_FILTER, FLAG_XDP_COOKIES];
        for (rule, allowed, monitor, syn, (drop, counter, track, source_dropped)) in table {
            for mask in 0..1u32 << others.len() {
                let mut flags = if monitor { FLAG_MONITOR } else { 0 };
                for (i, f) in others.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        flags |= f;
                    }
                }
                let v = decide(flags, rule, allowed, syn);
                let want = Verdict { drop, counter, track, source_dropped };
                assert_eq!(v, want, "{rule:?} allowed={allowed} monitor={monitor} syn={syn} flags={flags:#x}");
            }
        }
    }

    /// The invariants the table encodes, stated on their own.
    #[test]
    fn invariants() {
        for rule in [Rule::Blocked, Rule::RateLimited, Rule::InvalidAck] {
            for flags in 0..64u32 {
                for (allowed, syn) in [(false, false), (false, true), (true, false), (true, true)] {
                    let v = decide(flags, rule, allowed, syn);
                    // A drop is counted as a drop, a pass never is.
                    assert_eq!(v.drop, v.counter.category() == Category::Drop, "{v:?}");
                    // Nothing dropped is tracked; everything passed is.
                    assert_eq!(v.track, !v.drop);
                    // Nothing is dropped for an allow-listed source or in monitor mode.
                    assert!(!(v.drop && (allowed || flags & FLAG_MONITOR != 0)));
                    // An allow-listed source is never charged a drop.
                    assert!(!(allowed && v.source_dropped));
                    // Only SYNs are counted as dropped SYNs.
                    assert!(v.counter != Counter::DropBlocked || syn);
                }
            }
        }
    }
}

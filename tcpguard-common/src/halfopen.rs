//! Half-open accounting without scanning the half-open table.
//!
//! Each CPU keeps a ring of [`BUCKETS`] one-second slots (`HO_BUCKETS`, a
//! per-CPU array). A handshake opened in second `s` increments `opened` of
//! slot `s % BUCKETS`; when it completes or is reset within the timeout,
//! `closed` of the slot of its *opening* second is incremented (on whichever
//! CPU sees the close). So, summed over CPUs:
//! - half-open now = Σ (opened − closed) over the seconds inside the timeout;
//! - failed handshakes = Σ (opened − closed) of each second as it leaves the
//!   window, read once by userspace as it ticks.
//!
//! Userspace cost per tick is O(CPUs × BUCKETS), whatever the table size.

use crate::HoBucket;

pub const BUCKETS: u32 = 64;
pub const NS_PER_SEC: u64 = 1_000_000_000;

#[inline(always)]
pub fn slot(sec: u64) -> u32 {
    (sec % BUCKETS as u64) as u32
}

/// Record an open in `b` for second `sec`, resetting a stale slot.
#[inline(always)]
pub fn record_open(b: &mut HoBucket, sec: u64) {
    if b.sec != sec {
        *b = HoBucket { sec, opened: 0, closed: 0 };
    }
    b.opened += 1;
}

/// Record a close of a handshake opened in `sec`. Returns false when the
/// slot has already been reused for a later second (the close is too late
/// to matter).
#[inline(always)]
pub fn record_close(b: &mut HoBucket, sec: u64) -> bool {
    match b.sec.cmp(&sec) {
        core::cmp::Ordering::Equal => {
            b.closed += 1;
            true
        }
        core::cmp::Ordering::Less => {
            // This CPU opened nothing in that second yet: claim the slot.
            *b = HoBucket { sec, opened: 0, closed: 1 };
            true
        }
        core::cmp::Ordering::Greater => false,
    }
}

/// Userspace view of the ring: slots of all CPUs folded by second.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Last second whose leaving of the window was already accounted.
    pub settled_upto: u64,
    pub failed_total: u64,
}

impl Tally {
    /// Half-open count now, and update `failed_total` with the seconds that
    /// left the window since the last call. `slots` are every CPU's slots.
    pub fn update(&mut self, slots: &[HoBucket], now_sec: u64, timeout_sec: u64) -> u64 {
        let timeout_sec = timeout_sec.clamp(1, BUCKETS as u64 - 4);
        // Seconds strictly older than this are out of the window.
        let horizon = now_sec.saturating_sub(timeout_sec);
        let mut half_open: i64 = 0;
        let mut failed: i64 = 0;
        for b in slots {
            let net = b.opened as i64 - b.closed as i64;
            if b.sec >= horizon && b.sec <= now_sec {
                half_open += net;
            } else if b.sec < horizon && b.sec >= self.settled_upto {
                failed += net;
            }
        }
        if self.settled_upto == 0 {
            // First look: what is already out of the window predates us.
            failed = 0;
        }
        self.settled_upto = horizon;
        self.failed_total += failed.max(0) as u64;
        half_open.max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_and_expiry() {
        // Two CPUs. Second 100: CPU0 opens 3, CPU1 closes 1 of them.
        let mut cpu0 = vec![HoBucket::default(); BUCKETS as usize];
        let mut cpu1 = vec![HoBucket::default(); BUCKETS as usize];
        for _ in 0..3 {
            record_open(&mut cpu0[slot(100) as usize], 100);
        }
        assert!(record_close(&mut cpu1[slot(100) as usize], 100));
        let all = |a: &Vec<HoBucket>, b: &Vec<HoBucket>| [a.clone(), b.clone()].concat();
        let mut t = Tally::default();
        assert_eq!(t.update(&all(&cpu0, &cpu1), 100, 10), 2);
        assert_eq!(t.update(&all(&cpu0, &cpu1), 105, 10), 2);
        assert_eq!(t.failed_total, 0);
        // Past the timeout the two open ones are failed, once.
        assert_eq!(t.update(&all(&cpu0, &cpu1), 111, 10), 0);
        assert_eq!(t.failed_total, 2);
        assert_eq!(t.update(&all(&cpu0, &cpu1), 112, 10), 0);
        assert_eq!(t.failed_total, 2);
    }

    #[test]
    fn slot_reuse_resets_and_late_close_is_ignored() {
        let mut b = HoBucket::default();
        record_open(&mut b, 5);
        record_open(&mut b, 5 + BUCKETS as u64);
        assert_eq!(b, HoBucket { sec: 5 + BUCKETS as u64, opened: 1, closed: 0 });
        assert!(!record_close(&mut b, 5));
        assert_eq!(b.closed, 0);
    }
}

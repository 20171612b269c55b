//! Per-source SYN token bucket in integer arithmetic (no floats in BPF).
//! Tokens are kept in thousandths so that low rates refill smoothly.

/// A bucket refilled at `rate` tokens/s up to `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub tokens_milli: u64,
    pub refill_ns: u64,
}

/// Longest gap credited in one refill; bounds the multiplication.
const MAX_GAP_NS: u64 = 100_000_000_000;
/// Highest rate and burst honoured (the config rejects larger values).
pub const MAX_RATE: u64 = 10_000_000;
pub const MAX_BURST: u64 = 1_000_000_000;

/// Refill the bucket to `now_ns` and try to take one token.
/// `rate == 0` means unlimited. A fresh bucket (`refill_ns == 0`) starts full.
#[inline(always)]
pub fn take(b: Bucket, now_ns: u64, rate: u64, burst: u64) -> (bool, Bucket) {
    take_for(b, now_ns, rate, burst, 1)
}

/// [`take`] for a SYN that stands for `n` (a sampled one): it takes `n`
/// tokens (at most a full bucket), so the source is held to the rate in
/// the SYNs it sends, not in those sampled.
#[inline(always)]
pub fn take_for(b: Bucket, now_ns: u64, rate: u64, burst: u64, n: u64) -> (bool, Bucket) {
    if rate == 0 {
        return (true, b);
    }
    // Clamp so that the products below cannot overflow (plain multiplies:
    // overflow-checked ones need 128-bit helpers the BPF target lacks).
    let rate = if rate > MAX_RATE { MAX_RATE } else { rate };
    let burst = if burst == 0 {
        rate
    } else if burst > MAX_BURST {
        MAX_BURST
    } else {
        burst
    };
    let cap = burst.wrapping_mul(1000);
    let mut tokens = if b.refill_ns == 0 {
        cap
    } else {
        let gap = now_ns.saturating_sub(b.refill_ns);
        let gap = if gap > MAX_GAP_NS { MAX_GAP_NS } else { gap };
        // gap <= 1e11 ns and rate <= 1e7/s: the product is < 2^64.
        let add = gap.wrapping_mul(rate) / 1_000_000;
        let t = b.tokens_milli.saturating_add(add);
        if t > cap {
            cap
        } else {
            t
        }
    };
    // `n` tokens, or a full bucket when the burst is smaller than `n`.
    let need = n.wrapping_mul(1000);
    let need = if need > cap { cap } else { need };
    let allowed = tokens >= need;
    if allowed {
        tokens -= need;
    }
    (allowed, Bucket { tokens_milli: tokens, refill_ns: now_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn run(n: usize, start: u64, step: u64, rate: u64, burst: u64) -> usize {
        let mut b = Bucket { tokens_milli: 0, refill_ns: 0 };
        let mut ok = 0;
        for i in 0..n {
            let (a, nb) = take(b, start + i as u64 * step, rate, burst);
            b = nb;
            ok += usize::from(a);
        }
        ok
    }

    #[test]
    fn burst_then_limit() {
        // 100 SYNs in the same nanosecond: exactly the burst passes.
        assert_eq!(run(100, S, 0, 10, 20), 20);
        // Burst 0 means burst = rate.
        assert_eq!(run(100, S, 0, 10, 0), 10);
    }

    #[test]
    fn sustained_rate() {
        // 10 s at 1000 SYN/s against rate 100, burst 10: about 10 + 100*10.
        let ok = run(10_000, S, S / 1000, 100, 10);
        assert!((1005..=1011).contains(&ok), "{ok}");
    }

    #[test]
    fn unlimited_and_refill_cap() {
        assert_eq!(run(1000, S, 0, 0, 0), 1000);
        // A long idle gap refills only to the burst.
        let b = Bucket { tokens_milli: 0, refill_ns: S };
        let (_, b) = take(b, S + 1000 * S, 5, 7);
        assert_eq!(b.tokens_milli, 6000);
    }

    #[test]
    fn a_sampled_syn_is_charged_for_the_syns_it_stands_for() {
        // 100/s, burst 100: a source whose every 8th SYN is seen, each
        // charged 8, is held to about 100/s of what it sends.
        let mut b = Bucket { tokens_milli: 0, refill_ns: 0 };
        let mut allowed = 0;
        for i in 1..=1_000u64 {
            // 1,000 seen SYNs in 10 s: 8,000 sent, 800 a second.
            let (ok, nb) = take_for(b, i * S / 100, 100, 100, 8);
            b = nb;
            allowed += u64::from(ok);
        }
        // The burst (100 tokens: 13 seen SYNs) and 10 s at 100/s (125 seen).
        assert!((130..=140).contains(&allowed), "{allowed} of 1,000 allowed");
        // n = 1 is `take`.
        let b0 = Bucket { tokens_milli: 5_500, refill_ns: S };
        assert_eq!(take_for(b0, 2 * S, 3, 10, 1), take(b0, 2 * S, 3, 10));
    }
}

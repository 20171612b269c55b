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
    let allowed = tokens >= 1000;
    if allowed {
        tokens -= 1000;
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
}

//! Fixed-memory per-source accounting for attack mode: the attacker
//! chooses the source addresses, so nothing here grows with them.
//!
//! - [`Sketch`]: a count-min sketch of SYNs per source, [`CMS_ROWS`] rows of
//!   [`CMS_COLS`] 32-bit cells, one per CPU. Each cell carries the epoch it
//!   counts (top 8 bits) and the count (low 24 bits), so a new epoch starts
//!   without clearing anything: a cell of an older epoch reads as zero.
//!   Updates are *conservative* (only the cells at the current minimum are
//!   raised), which keeps estimates tighter than plain count-min.
//!
//!   Error bound (per CPU, per epoch, `N` SYNs counted in it): the estimate
//!   never undercounts; it overcounts by more than `e·N / CMS_COLS` with
//!   probability at most `e^-CMS_ROWS` (about 0.27 % of `N`, with
//!   probability ≥ 98 %). Heavy-source promotion subtracts the mean load of
//!   a cell (`N / CMS_COLS`, see [`promote_estimate`]), so a flood of
//!   random sources, however fast, does not make its sources look heavy.
//! - [`Hll`]: HyperLogLog registers ([`HLL_REGS`] per CPU) of the distinct
//!   SYN sources; the daemon merges CPUs by maximum, estimates, and clears
//!   them every tick. Standard error 1.04 / √[`HLL_REGS`] ≈ 6.5 %.
//!
//! Both are fed a sampled share, so that a flood's SYN pays for them only
//! one time in [`ACCOUNT_EVERY`]:
//! - the sketch counts a SYN chosen at random with probability
//!   1/[`ACCOUNT_EVERY`] (per SYN, so every source is sampled in proportion
//!   to what it sends), and its estimates are scaled back ([`scaled`]). A
//!   source's scaled estimate is unbiased; its sampling spread is
//!   √(n·([`ACCOUNT_EVERY`] − 1)) for n SYNs (≈ 2.6·√n: 19 % at n = 200,
//!   6 % at 2,000), on top of the sketch's own overcount, which scaled is
//!   the same e·N / [`CMS_COLS`] in expectation. A heavy source well over
//!   the promotion rate is promoted as before; one near it, in about half of
//!   its epochs.
//! - the registers take every SYN of the sources whose hash falls in a
//!   1-in-[`ACCOUNT_EVERY`] subset ([`hll_subset`]; a source is in it or not,
//!   whatever it sends), and the distinct count is scaled back
//!   ([`distinct_estimate`]): unbiased, with the subset's binomial spread
//!   (√(7·D) for D distinct sources: 2.6 % at D = 10,000) on top of the
//!   registers' 6.5 %.

/// Rows of the count-min sketch (independent hash slices).
pub const CMS_ROWS: usize = 4;
/// Cells per row (a power of two).
pub const CMS_COLS: usize = 1024;
const COL_BITS: u32 = 10;
/// Largest count a cell holds (24 bits).
pub const CELL_MAX: u32 = 0x00ff_ffff;
/// HyperLogLog registers (a power of two).
pub const HLL_REGS: usize = 256;
const HLL_BITS: u32 = 8;
/// The sampled share of attack mode's accounting: one SYN in this many
/// reaches the sketch, one source in this many the registers.
pub const ACCOUNT_EVERY: u32 = 8;
/// One epoch of the sketch: 2^30 ns (about 1.07 s).
pub const EPOCH_SHIFT: u32 = 30;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sketch {
    pub cells: [u32; CMS_ROWS * CMS_COLS],
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch { cells: [0; CMS_ROWS * CMS_COLS] }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hll {
    pub regs: [u8; HLL_REGS],
}

impl Default for Hll {
    fn default() -> Self {
        Hll { regs: [0; HLL_REGS] }
    }
}

/// The sketch epoch of a `bpf_ktime_get_ns()` time.
#[inline(always)]
pub fn epoch(now_ns: u64) -> u64 {
    now_ns >> EPOCH_SHIFT
}

#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Seeded 64-bit hash of a source address (IPv4-mapped or IPv6).
#[inline(always)]
pub fn src_hash(addr: &[u8; 16], seed: u64) -> u64 {
    let a = u64::from_ne_bytes([addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7]]);
    let b = u64::from_ne_bytes([addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15]]);
    fmix64(fmix64(a ^ seed) ^ b)
}

#[inline(always)]
fn cell_index(h: u64, row: usize) -> usize {
    (row * CMS_COLS + ((h >> (row as u32 * COL_BITS)) as usize & (CMS_COLS - 1))) & (CMS_ROWS * CMS_COLS - 1)
}

#[inline(always)]
fn cell_count(cell: u32, tag: u32) -> u32 {
    if cell >> 24 == tag {
        cell & CELL_MAX
    } else {
        0
    }
}

/// Count one SYN of the source hashed to `h` in epoch `ep`; returns the
/// source's estimated SYNs in this epoch on this CPU, this one included.
#[inline(always)]
pub fn cms_add(s: &mut Sketch, h: u64, ep: u64) -> u32 {
    let tag = (ep & 0xff) as u32;
    let i0 = cell_index(h, 0);
    let i1 = cell_index(h, 1);
    let i2 = cell_index(h, 2);
    let i3 = cell_index(h, 3);
    let c0 = cell_count(s.cells[i0], tag);
    let c1 = cell_count(s.cells[i1], tag);
    let c2 = cell_count(s.cells[i2], tag);
    let c3 = cell_count(s.cells[i3], tag);
    let m = min(min(c0, c1), min(c2, c3));
    if m >= CELL_MAX {
        return CELL_MAX;
    }
    let new = m + 1;
    let v = (tag << 24) | new;
    // Conservative update: raise only the cells below the new minimum.
    if c0 < new {
        s.cells[i0] = v;
    }
    if c1 < new {
        s.cells[i1] = v;
    }
    if c2 < new {
        s.cells[i2] = v;
    }
    if c3 < new {
        s.cells[i3] = v;
    }
    new
}

/// Whether a SYN, given a random word, is one the sketch counts (one in
/// [`ACCOUNT_EVERY`]).
#[inline(always)]
pub fn counted(random: u32) -> bool {
    random.is_multiple_of(ACCOUNT_EVERY)
}

/// The next draw of a per-CPU xorshift64 stream (`state` never 0: the
/// caller seeds it from the kernel's random, about every 5 ms). Cheaper
/// per SYN than the kernel's helper (a call into a per-CPU PRNG: about
/// 19 ns a SYN under a full-rate flood on this VM); an attacker who cannot
/// read the seed cannot aim SYNs outside the draw either.
#[inline(always)]
pub fn next_random(state: &mut u64) -> u32 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x >> 32) as u32
}

/// A seed for [`next_random`] from two random words: never 0.
#[inline(always)]
pub fn seed(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo) | 1
}

/// A sketch estimate (of sampled SYNs) scaled to all SYNs.
#[inline(always)]
pub fn scaled(est: u32) -> u64 {
    u64::from(est) * u64::from(ACCOUNT_EVERY)
}

/// Whether a source hashed to `h` is in the registers' subset: bits the
/// sketch's columns do not use, so the subset says nothing about them.
#[inline(always)]
pub fn hll_subset(h: u64) -> bool {
    ((h >> 56) as u32).is_multiple_of(ACCOUNT_EVERY)
}

/// The estimate without counting (for tests and the daemon).
pub fn cms_estimate(s: &Sketch, h: u64, ep: u64) -> u32 {
    let tag = (ep & 0xff) as u32;
    let mut m = u32::MAX;
    for row in 0..CMS_ROWS {
        m = min(m, cell_count(s.cells[cell_index(h, row)], tag));
    }
    m
}

#[inline(always)]
fn min(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

/// The estimate used to promote a source to "heavy": the sketch estimate
/// less the mean load of one cell (`epoch_syns / CMS_COLS`), so that the
/// background of many light sources does not promote them all.
/// With a sampled sketch, `est` is the [`scaled`] estimate and
/// `epoch_syns` all SYNs: the mean load of a cell scales the same way.
#[inline(always)]
pub fn promote_estimate(est: u64, epoch_syns: u64) -> u64 {
    est.saturating_sub(epoch_syns >> COL_BITS)
}

/// Record a source in the HyperLogLog registers.
#[inline(always)]
pub fn hll_add(r: &mut Hll, h: u64) {
    // A second mix so the register choice is independent of the sketch columns.
    let g = fmix64(h ^ 0x9e37_79b9_7f4a_7c15);
    let idx = (g >> (64 - HLL_BITS)) as usize & (HLL_REGS - 1);
    // Rank: position of the first 1 bit in the remaining 56 bits (1..=57).
    let rest = g << HLL_BITS;
    let rank = if rest == 0 { (64 - HLL_BITS + 1) as u8 } else { rest.leading_zeros() as u8 + 1 };
    if r.regs[idx] < rank {
        r.regs[idx] = rank;
    }
}

/// Merge per-CPU registers (maximum per register).
#[cfg(not(target_arch = "bpf"))]
pub fn hll_merge<'a>(regs: impl IntoIterator<Item = &'a Hll>) -> Hll {
    let mut out = Hll::default();
    for r in regs {
        for (o, v) in out.regs.iter_mut().zip(r.regs.iter()) {
            *o = (*o).max(*v);
        }
    }
    out
}

/// Distinct sources of all SYNs from the per-CPU registers of the
/// [`hll_subset`]: merged, estimated, scaled back.
#[cfg(not(target_arch = "bpf"))]
pub fn distinct_estimate<'a>(regs: impl IntoIterator<Item = &'a Hll>) -> f64 {
    hll_estimate(&hll_merge(regs)) * f64::from(ACCOUNT_EVERY)
}

/// Distinct-count estimate of merged registers (with the small-range
/// correction of the original HyperLogLog paper).
#[cfg(not(target_arch = "bpf"))]
pub fn hll_estimate(r: &Hll) -> f64 {
    let m = HLL_REGS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let mut sum = 0.0;
    let mut zeros = 0usize;
    for &v in &r.regs {
        sum += 2f64.powi(-i32::from(v));
        if v == 0 {
            zeros += 1;
        }
    }
    let e = alpha * m * m / sum;
    if e <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&i.to_be_bytes());
        a
    }

    /// A heavy source inside a random-source flood: the estimate never
    /// undercounts, stays within the documented bound, and promotion picks
    /// the heavy source and none of the flood's.
    #[test]
    fn count_min_error_bound_and_promotion() {
        let seed = 0x1234_5678_9abc_def0;
        let mut s = Box::<Sketch>::default();
        let ep = epoch(5 << EPOCH_SHIFT);
        let heavy = src_hash(&v4(0xc633_6442), seed);
        let mut n: u64 = 0;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut heavy_true = 0u32;
        for i in 0..300_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            n += 1;
            if i % 100 == 0 {
                heavy_true += 1;
                cms_add(&mut s, heavy, ep);
            } else {
                let est = cms_add(&mut s, src_hash(&v4(rng as u32), seed), ep);
                // A random source sends about one SYN: never promoted at 200/s.
                assert!(promote_estimate(u64::from(est), n) < 200, "random source promoted: est {est} of {n}");
            }
        }
        let est = cms_estimate(&s, heavy, ep);
        assert!(est >= heavy_true, "count-min never undercounts: {est} < {heavy_true}");
        let bound = (std::f64::consts::E * n as f64 / CMS_COLS as f64) as u32;
        assert!(est - heavy_true <= bound, "overcount {} > bound {bound}", est - heavy_true);
        assert!(promote_estimate(u64::from(est), n) >= u64::from(heavy_true) - u64::from(bound));
        // Over all light sources the overcount stays within the bound for
        // at least 98 % of them.
        let mut over = 0;
        for i in 0..2000u32 {
            let h = src_hash(&v4(0x0a00_0000 + i), seed);
            if cms_estimate(&s, h, ep) > bound {
                over += 1;
            }
        }
        assert!(over <= 40, "{over} of 2000 absent sources above the bound");
    }

    /// The sketch fed one SYN in ACCOUNT_EVERY at random, as the datapath
    /// feeds it: the heavy source is promoted within its first few hundred
    /// SYNs, no random source ever is, and the scaled estimate is within
    /// the sampling spread (4 standard deviations) and the sketch's bound.
    #[test]
    fn sampled_sketch_finds_the_heavy_source_and_no_other() {
        let seed = 0x0bad_cafe_f00d_1234;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20u32 {
            let mut s = Box::<Sketch>::default();
            let ep = epoch(u64::from(round) << EPOCH_SHIFT);
            let heavy = src_hash(&v4(0xc633_6400 + round), seed);
            let (mut n, mut heavy_true, mut first_promoted) = (0u64, 0u64, None);
            // The datapath's draw: a stream of its own, seeded again every
            // window (here every 500 SYNs) from the kernel's random.
            let mut draw = 0u64;
            for i in 0..300_000u32 {
                n += 1;
                let is_heavy = i % 100 == 0;
                let h = if is_heavy { heavy } else { src_hash(&v4(next() as u32), seed) };
                heavy_true += u64::from(is_heavy);
                if i % 500 == 0 {
                    draw = super::seed((next() >> 32) as u32, next() as u32);
                }
                if !counted(next_random(&mut draw)) {
                    continue;
                }
                let est = scaled(cms_add(&mut s, h, ep));
                let promoted = promote_estimate(est, n) >= 200;
                if is_heavy {
                    if promoted && first_promoted.is_none() {
                        first_promoted = Some(heavy_true);
                    }
                } else {
                    assert!(!promoted, "round {round}: a random source promoted (est {est} of {n})");
                }
            }
            // At 1 % of 300,000 SYNs (3,000 a second), the heavy source
            // crosses 200 after about 200 of its SYNs.
            let at = first_promoted.expect("the heavy source is promoted");
            assert!(at <= 400, "round {round}: promoted only after {at} of its SYNs");
            let est = scaled(cms_estimate(&s, heavy, ep)) as f64;
            let (t, k) = (heavy_true as f64, f64::from(ACCOUNT_EVERY));
            let spread = 4.0 * (t * (k - 1.0)).sqrt();
            let bound = std::f64::consts::E * n as f64 / CMS_COLS as f64;
            assert!(est >= t - spread && est <= t + spread + bound, "round {round}: scaled {est} for {t}");
        }
        // One in ACCOUNT_EVERY draws is counted, and so is one in
        // ACCOUNT_EVERY of a source that sends in step with any period
        // (every 8th, every 64th SYN): the draw does not count SYNs.
        let mut draw = super::seed(1, 2);
        let picks: Vec<bool> = (0..800_000).map(|_| counted(next_random(&mut draw))).collect();
        let c = picks.iter().filter(|p| **p).count();
        assert!((97_000..=103_000).contains(&c), "{c} of 800,000 counted");
        for period in [2usize, 8, 64, 500] {
            let (all, hit) = (picks.len() / period, picks.iter().step_by(period).filter(|p| **p).count());
            let want = all as f64 / f64::from(ACCOUNT_EVERY);
            let spread = 5.0 * (want * (1.0 - 1.0 / f64::from(ACCOUNT_EVERY))).sqrt();
            assert!((hit as f64 - want).abs() <= spread, "every {period}th: {hit} of {all}");
        }
    }

    /// The registers fed by the source subset, scaled back, estimate all
    /// distinct sources (within 3 × the combined spread).
    #[test]
    fn distinct_count_from_the_source_subset() {
        for &n in &[5_000u32, 50_000, 400_000] {
            let mut cpus = [Hll::default(), Hll::default()];
            let mut members = 0;
            for i in 0..n {
                let h = src_hash(&v4(i.wrapping_mul(2_654_435_761)), 7);
                if hll_subset(h) {
                    members += 1;
                    // Each SYN of a member: several, on either CPU.
                    hll_add(&mut cpus[(i % 2) as usize], h);
                    hll_add(&mut cpus[((i + 1) % 2) as usize], h);
                }
            }
            let share = f64::from(members) / f64::from(n);
            assert!((share - 1.0 / f64::from(ACCOUNT_EVERY)).abs() < 0.02, "subset share {share:.3}");
            let e = distinct_estimate(cpus.iter());
            let err = (e - f64::from(n)).abs() / f64::from(n);
            assert!(err < 0.25, "n {n}: estimate {e:.0}, error {:.1} %", err * 100.0);
        }
    }

    #[test]
    fn new_epoch_reads_zero_without_clearing() {
        let mut s = Box::<Sketch>::default();
        let h = src_hash(&v4(7), 1);
        for _ in 0..10 {
            cms_add(&mut s, h, 3);
        }
        assert_eq!(cms_estimate(&s, h, 3), 10);
        assert_eq!(cms_estimate(&s, h, 4), 0);
        assert_eq!(cms_add(&mut s, h, 4), 1);
    }

    #[test]
    fn hll_estimates_within_error() {
        for &n in &[100u32, 5_000, 50_000, 400_000] {
            let mut cpus = [Hll::default(), Hll::default()];
            for i in 0..n {
                // Sources spread over two CPUs, some seen on both.
                let h = src_hash(&v4(i.wrapping_mul(2_654_435_761)), 99);
                hll_add(&mut cpus[(i % 2) as usize], h);
                if i % 3 == 0 {
                    hll_add(&mut cpus[((i + 1) % 2) as usize], h);
                }
            }
            let e = hll_estimate(&hll_merge(cpus.iter()));
            let err = (e - f64::from(n)).abs() / f64::from(n);
            // 3 standard errors (3 × 6.5 %).
            assert!(err < 0.2, "n {n}: estimate {e:.0}, error {:.1} %", err * 100.0);
        }
        assert!(hll_estimate(&Hll::default()).abs() < f64::EPSILON);
    }
}

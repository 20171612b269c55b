//! Attack-mode entry and promotion, as pure functions the XDP program
//! applies to its maps.

use crate::{sketch, RateWindow, Settings, ATTACK_WINDOW_NS};

/// Count one SYN in this CPU's window and sketch epoch. Returns whether
/// the window's SYNs have reached `threshold` (0 = never): the datapath
/// then enters attack mode, within one [`ATTACK_WINDOW_NS`] window of the
/// rate being crossed.
#[inline(always)]
pub fn rate_step(w: &mut RateWindow, now_ns: u64, threshold: u64) -> bool {
    if now_ns.wrapping_sub(w.win_start_ns) >= ATTACK_WINDOW_NS {
        w.win_start_ns = now_ns;
        w.win_syns = 0;
        // A fresh seed for the sampling draw each window.
        w.rng = 0;
    }
    w.win_syns += 1;
    let ep = sketch::epoch(now_ns);
    if w.epoch != ep {
        w.epoch = ep;
        w.epoch_syns = 0;
    }
    w.epoch_syns += 1;
    threshold != 0 && w.win_syns >= threshold
}

/// SYNs per epoch at which a source is promoted from the sketch to the
/// source table in attack mode: the heavy rate, or the per-source rate
/// limit when that is lower (so the limit still applies). 0 = never.
#[inline(always)]
pub fn promote_threshold(s: &Settings) -> u64 {
    match (s.heavy_syns_per_sec, s.syn_rate) {
        (0, r) => r,
        (h, 0) => h,
        (h, r) => {
            if h < r {
                h
            } else {
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enters_within_one_window_of_the_rate() {
        let s = Settings { attack_syn_rate: 20_000, ..Settings::default() };
        let n = s.attack_window_syns();
        assert_eq!(n, 100);
        let mut w = RateWindow::default();
        let t0 = 1_000_000_000_000u64;
        // 10k SYN/s (one per 100 µs) never trips it.
        assert!(!(0..1000).any(|i| rate_step(&mut w, t0 + i * 100_000, n)));
        // 200k SYN/s (one per 5 µs): trips after 100 SYNs, 0.5 ms in.
        let t1 = t0 + 1_000_000_000;
        let first = (0..1000u64).find(|i| rate_step(&mut w, t1 + i * 5_000, n)).unwrap();
        assert!(first * 5_000 <= ATTACK_WINDOW_NS, "tripped after {first} SYNs");
        assert_eq!(Settings::default().attack_window_syns(), 0, "0 = off");
        assert_eq!(Settings { attack_syn_rate: 1, ..s }.attack_window_syns(), 1);
    }

    #[test]
    fn epoch_counts_reset() {
        let mut w = RateWindow::default();
        let e = 1u64 << sketch::EPOCH_SHIFT;
        rate_step(&mut w, 3 * e, 0);
        rate_step(&mut w, 3 * e + 1, 0);
        assert_eq!(w.epoch_syns, 2);
        rate_step(&mut w, 4 * e, 0);
        assert_eq!((w.epoch, w.epoch_syns), (4, 1));
    }

    #[test]
    fn promotion_threshold_is_the_lower_of_heavy_and_limit() {
        let s = Settings { heavy_syns_per_sec: 200, ..Settings::default() };
        assert_eq!(promote_threshold(&s), 200);
        assert_eq!(promote_threshold(&Settings { syn_rate: 50, ..s }), 50);
        assert_eq!(promote_threshold(&Settings { syn_rate: 500, ..s }), 200);
        assert_eq!(promote_threshold(&Settings::default()), 0);
    }
}

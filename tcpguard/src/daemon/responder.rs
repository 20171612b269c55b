//! Who answers SYNs on one interface in attack mode: the XDP responder, or
//! the kernel's own cookies. Pure: it sees the interface's static judgement
//! (`host::judge_delivery`) and, per tick, the replies XDP sent and the
//! transmits the kernel reported failed; it says when to change.
//!
//! - At attach, an interface whose replies cannot leave (a veth peer with no
//!   XDP program) starts with the kernel; otherwise with XDP.
//! - Answering from XDP, failed transmits over [`FAIL_SHARE`] of the replies
//!   (and more than [`FAIL_MIN`]) in one tick fall back to the kernel.
//! - From the kernel, XDP is tried again after a back-off (doubling from
//!   [`BACKOFF_MIN`] to [`BACKOFF_MAX`] seconds): the static judgement first;
//!   then a probe that keeps XDP only if no transmit fails while it sends
//!   [`PROBE_REPLIES`] replies.

/// Share of one tick's replies that may fail before falling back. Replies
/// that cannot leave fail all but none; a path that works loses a few in
/// bursts at a full-rate flood (a veth peer's ring full: 1,234 of 1.46 M
/// SYN-ACKs in 8 s in the lab, up to about 3 % of one 250 ms tick), which
/// must not put the kernel's cookies, at more CPU per SYN, in its place.
pub const FAIL_SHARE: f64 = 0.10;
/// Failures one tick may have whatever the share (stray counts at a tick's edge).
pub const FAIL_MIN: u64 = 2;
pub const BACKOFF_MIN: f64 = 1.0;
pub const BACKOFF_MAX: f64 = 30.0;
/// Replies a probe sends without a failure before XDP is kept.
pub const PROBE_REPLIES: u64 = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Responder {
    /// XDP answers (else the kernel's cookies).
    pub xdp: bool,
    /// Why, as `status` says it.
    pub reason: String,
    /// Times this interface fell back at run time.
    pub fallbacks: u64,
    backoff: f64,
    retry_at: f64,
    /// Replies sent since XDP was tried again (`None`: not probing).
    probe_sent: Option<u64>,
}

/// A change the daemon logs.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    FellBack { failed: u64, sent: u64, retry_in: f64 },
    Retrying,
    Kept,
    StillUndeliverable,
}

impl Responder {
    pub fn new(judged: Result<String, String>, t: f64) -> Self {
        let (xdp, reason) = match judged {
            Ok(why) => (true, why),
            Err(why) => (false, why),
        };
        Responder { xdp, reason, fallbacks: 0, backoff: BACKOFF_MIN, retry_at: t + BACKOFF_MIN, probe_sent: None }
    }

    /// One tick: `sent` replies from XDP and `failed` transmits since the
    /// last; `judge` re-reads the static judgement when a retry is due.
    pub fn step(
        &mut self,
        t: f64,
        sent: u64,
        failed: u64,
        judge: impl FnOnce() -> Result<String, String>,
    ) -> Option<Change> {
        if self.xdp {
            if let Some(n) = &mut self.probe_sent {
                if failed > 0 {
                    return Some(self.fall_back(t, sent, failed));
                }
                *n += sent;
                if *n >= PROBE_REPLIES {
                    self.probe_sent = None;
                    self.backoff = BACKOFF_MIN;
                    return Some(Change::Kept);
                }
                return None;
            }
            if failed > FAIL_MIN && failed as f64 > FAIL_SHARE * sent as f64 {
                return Some(self.fall_back(t, sent, failed));
            }
            return None;
        }
        if t < self.retry_at {
            return None;
        }
        match judge() {
            Ok(why) => {
                self.xdp = true;
                self.reason = why;
                self.probe_sent = Some(0);
                Some(Change::Retrying)
            }
            Err(why) => {
                self.reason = why;
                self.retry_at = t + self.backoff;
                self.backoff = (self.backoff * 2.0).min(BACKOFF_MAX);
                Some(Change::StillUndeliverable)
            }
        }
    }

    fn fall_back(&mut self, t: f64, sent: u64, failed: u64) -> Change {
        let retry_in = self.backoff;
        self.xdp = false;
        self.fallbacks += 1;
        self.probe_sent = None;
        self.reason = format!("XDP_TX failing: {failed} of {sent} replies not transmitted in one tick");
        self.retry_at = t + retry_in;
        self.backoff = (self.backoff * 2.0).min(BACKOFF_MAX);
        Change::FellBack { failed, sent, retry_in }
    }

    /// What `status` shows: "xdp", "xdp (probing)" or "kernel cookies".
    pub fn name(&self) -> &'static str {
        match (self.xdp, self.probe_sent.is_some()) {
            (true, false) => "xdp",
            (true, true) => "xdp (probing)",
            (false, _) => "kernel cookies",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unnecessary_wraps, clippy::float_cmp)] // judgements as `step` takes them; exact back-offs
mod tests {
    use super::*;

    fn ok() -> Result<String, String> {
        Ok("fine".into())
    }

    #[test]
    fn undeliverable_at_attach_starts_with_the_kernel_and_rechecks_with_back_off() {
        let mut r = Responder::new(Err("veth peer has no XDP program".into()), 0.0);
        assert!(!r.xdp);
        assert_eq!(r.step(0.5, 0, 0, ok), None, "not before the back-off");
        let no = || Err("still none".to_string());
        assert_eq!(r.step(1.0, 0, 0, no), Some(Change::StillUndeliverable));
        assert_eq!(r.step(1.5, 0, 0, no), None);
        assert_eq!(r.step(2.0, 0, 0, no), Some(Change::StillUndeliverable));
        assert_eq!(r.step(3.9, 0, 0, no), None, "back-off doubled to 2 s");
        assert_eq!(r.step(4.0, 0, 0, ok), Some(Change::Retrying));
        assert_eq!(r.name(), "xdp (probing)");
    }

    #[test]
    fn failures_over_the_share_fall_back_within_the_tick_and_probes_need_zero() {
        let mut r = Responder::new(ok(), 0.0);
        assert_eq!(r.step(0.25, 1000, 2, ok), None, "a stray count is no failure");
        assert_eq!(r.step(0.5, 1000, 99, ok), None, "under 10 %: a full ring's burst");
        assert!(matches!(r.step(0.75, 1000, 400, ok), Some(Change::FellBack { failed: 400, .. })));
        assert!(!r.xdp && r.reason.contains("400 of 1000"));
        assert_eq!(r.fallbacks, 1);
        assert_eq!(r.step(1.75, 0, 0, ok), Some(Change::Retrying));
        // A probe with one failure falls back again, and waits twice as long.
        assert!(matches!(r.step(2.0, 10, 1, ok), Some(Change::FellBack { retry_in, .. }) if retry_in == 2.0));
        assert_eq!(r.step(3.9, 0, 0, ok), None);
        assert_eq!(r.step(4.0, 0, 0, ok), Some(Change::Retrying));
        assert_eq!(r.step(4.25, 40, 0, ok), None);
        assert_eq!(r.step(4.5, 40, 0, ok), Some(Change::Kept));
        assert_eq!(r.name(), "xdp");
        // Kept: the back-off starts afresh.
        assert!(matches!(r.step(5.0, 100, 50, ok), Some(Change::FellBack { retry_in, .. }) if retry_in == BACKOFF_MIN));
    }
}

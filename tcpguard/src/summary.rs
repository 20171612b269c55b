//! The one-screen counter summary printed by `tcpguard watch`.

use std::fmt::Write as _;

use tcpguard_common::{Counter, Counters};

/// Render counters (and per-second rates against `prev`) as a short table.
pub fn render(
    iface: &str,
    mode: &str,
    c: &Counters,
    prev: &Counters,
    secs: f64,
    half_open: u64,
    failed: u64,
) -> String {
    let rate = |k: Counter| (c.get(k).wrapping_sub(prev.get(k))) as f64 / secs.max(1e-3);
    let mut s = String::new();
    let _ = writeln!(s, "tcpguard on {iface} (XDP {mode})    Ctrl-C to detach and exit");
    let _ = writeln!(s, "{:<24}{:>14}{:>12}", "", "total", "per sec");
    for k in [Counter::Packets, Counter::Syn, Counter::HandshakeCompleted, Counter::Rst, Counter::Fin] {
        let _ = writeln!(s, "{:<24}{:>14}{:>12.0}", k.name(), c.get(k), rate(k));
    }
    let _ = writeln!(s, "{:<24}{:>14}", "half_open_now", half_open);
    let _ = writeln!(s, "{:<24}{:>14}", "handshakes_failed", failed);
    let _ = writeln!(s, "drops:");
    for k in [
        Counter::DropBlocked,
        Counter::DropBlockedOther,
        Counter::DropRateLimited,
        Counter::MonitorBlocked,
        Counter::MonitorRateLimited,
    ] {
        let _ = writeln!(s, "  {:<22}{:>14}{:>12.0}", k.name(), c.get(k), rate(k));
    }
    let _ = writeln!(s, "passes:");
    for k in Counter::ALL.iter().filter(|k| k.name().starts_with("pass_")) {
        if c.get(*k) != 0 {
            let _ = writeln!(s, "  {:<22}{:>14}{:>12.0}", k.name(), c.get(*k), rate(*k));
        }
    }
    s
}

//! The client side of the control socket: `status`, `top`, `block`,
//! `unblock`, `allow`. Errors an operator can act on.

use std::{fmt::Write as _, io, path::Path, time::Duration};

use tokio::net::UnixStream;

use crate::proto::{read_frame, write_frame, Request, Response, SourceView, StatusView, UpstreamView};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "tcpguard is not running (no daemon answers on {path}). Start it with `systemctl start tcpguard` or \
        `tcpguard run --iface IFACE`"
    )]
    NotRunning { path: String },
    #[error(
        "permission denied on {path}: run as root or as a member of the socket's group (control.group in the config)"
    )]
    Denied { path: String },
    #[error("talking to the daemon on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: crate::proto::ProtoError,
    },
    #[error("the daemon did not answer within 10 s on {path}")]
    Timeout { path: String },
    #[error("{0}")]
    Daemon(String),
}

pub async fn request(socket: &Path, req: &Request) -> Result<Response, CtlError> {
    let path = socket.display().to_string();
    let mut s = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => CtlError::NotRunning { path },
                io::ErrorKind::PermissionDenied => CtlError::Denied { path },
                _ => CtlError::Io { path, source: e.into() },
            })
        }
    };
    let exchange = async {
        write_frame(&mut s, req).await?;
        read_frame::<_, Response>(&mut s).await
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Err(_) => Err(CtlError::Timeout { path }),
        Ok(Err(e)) => Err(CtlError::Io { path, source: e }),
        Ok(Ok(Response::Error { message })) => Err(CtlError::Daemon(message)),
        Ok(Ok(r)) => Ok(r),
    }
}

fn dur(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The datapath's mode: tracking, or attack mode with its responder's figures.
fn render_datapath(v: &StatusView, s: &mut String) {
    let d = &v.datapath;
    if d.mode == "attack" {
        let mut line = format!("datapath: ATTACK MODE for {}", dur(d.since_secs.unwrap_or(0.0)));
        if let Some(by) = &d.entered_by {
            let _ = write!(line, ", entered by the {by}");
        }
        if let Some(ms) = d.entry_ms {
            let _ = write!(line, " {ms:.1} ms into its SYN burst");
        }
        if let Some(ms) = d.first_cookie_ms {
            let _ = write!(line, ", first XDP SYN-ACK at {ms:.1} ms");
        }
        let _ = writeln!(*s, "{line}");
        let _ = writeln!(
            *s,
            "  responder {}: {:.0} SYN-ACKs/s from XDP, {:.0} cookie ACKs/s, {:.0} invalid ACKs dropped/s, \
                ~{:.0} distinct sources/s, 1 SYN in {} tracked",
            d.responder,
            d.cookies_sent_per_sec,
            d.cookie_acks_per_sec,
            d.invalid_acks_dropped_per_sec,
            d.distinct_sources_per_sec,
            d.sample_one_in
        );
    } else if !d.mode.is_empty() {
        let _ =
            writeln!(*s, "datapath: {} (responder {}; entered attack mode {} times)", d.mode, d.responder, d.entries);
    }
}

/// The ACK side: unmatched ACKs and the datapath's ACK check, when either
/// is worth a line.
fn render_ack_flood(v: &StatusView, s: &mut String) {
    let k = &v.ack_flood;
    if k.datapath.is_empty() {
        return; // an older daemon's answer
    }
    if k.datapath == "checking" || k.active || k.unmatched_acks_per_sec >= 1.0 {
        let by = k.entered_by.as_ref().map_or(String::new(), |b| format!(", entered by the {b}"));
        let _ = writeln!(
            *s,
            "ACK check: {}{by}: {:.0} unmatched ACKs/s, {:.0} dropped/s in XDP, kernel RSTs {:.0}/s; {} entries \
                by the datapath so far",
            if k.datapath == "checking" { "ON" } else { "off" },
            k.unmatched_acks_per_sec,
            k.dropped_per_sec,
            k.kernel_rsts_per_sec,
            k.entries
        );
    }
}

/// Each interface on a line of its own: mode, responder and why, figures.
fn render_interfaces(v: &StatusView, s: &mut String) {
    for i in &v.interfaces {
        if i.mode.is_empty() {
            continue; // an older daemon's answer
        }
        let mut line = format!(
            "  {}: {}{}, responder: {} ({})",
            i.name,
            if !i.present {
                "GONE (interface deleted or moved away; attached again when it returns), "
            } else if i.attached {
                ""
            } else {
                "DETACHED, "
            },
            match (i.mode == "attack", i.ack_checking) {
                (true, _) => "ATTACK MODE",
                (false, true) => "ACK-checking",
                (false, false) => "tracking",
            },
            i.responder,
            i.responder_reason
        );
        if i.mode == "attack" || i.xdp_synacks_per_sec > 0.0 {
            let _ = write!(line, ", {:.0} SYN-ACKs/s from XDP", i.xdp_synacks_per_sec);
        }
        if i.xdp_tx_failed > 0 {
            let _ = write!(line, ", {} failed transmits ({:.0}/s)", i.xdp_tx_failed, i.xdp_tx_failed_per_sec);
            if let Some(d) = i.driver_xdp_tx_errors {
                let _ = write!(line, " (driver's count: {d})");
            }
        }
        if i.fallbacks > 0 {
            let _ = write!(line, ", fell back {} times", i.fallbacks);
        }
        if !i.tx_watch {
            line.push_str(", failed transmits not observable");
        }
        let _ = writeln!(*s, "{line}; MTU {} (MSS {}), {} attack-mode entries", i.mtu, i.synack_mss, i.attack_entries);
    }
}

/// The human status view: the answer to "is this host under attack, and
/// what is tcpguard doing about it?" on one screen.
pub fn render_status(v: &StatusView) -> String {
    let mut s = String::new();
    let ifs: Vec<String> = v
        .interfaces
        .iter()
        .map(|i| {
            let how = if !i.present {
                "GONE"
            } else if !i.attached {
                "DETACHED"
            } else if i.adopted {
                "adopted from a previous run"
            } else {
                i.xdp_mode.as_str()
            };
            format!("{} ({how})", i.name)
        })
        .collect();
    let _ = writeln!(
        s,
        "tcpguard {} — protecting {} — policy {}, datapath {}, up {}",
        v.version,
        ifs.join(", "),
        v.policy,
        v.datapath_mode,
        dur(v.uptime_secs)
    );
    let a = &v.attack;
    if a.active {
        let kinds: Vec<&str> = a.kinds.iter().map(|k| k.as_str()).collect();
        let kind = if kinds.len() > 1 {
            format!("{} (mixed flood)", kinds.join(" + "))
        } else {
            a.kind.map_or("unknown", |k| k.as_str()).to_string()
        };
        let phase = if a.phase == crate::model::Phase::CoolingDown { " (cooling down)" } else { "" };
        let _ = writeln!(s, "ATTACK: {kind}{phase} for {}", dur(a.since_secs.unwrap_or(0.0)));
        for m in &a.mitigation {
            let _ = writeln!(s, "  mitigation: {m}");
        }
    } else {
        let _ = writeln!(s, "no attack ({} so far)", a.attacks_total);
    }
    render_datapath(v, &mut s);
    render_ack_flood(v, &mut s);
    render_interfaces(v, &mut s);
    let ev: Vec<String> = a.evidence.iter().map(ToString::to_string).collect();
    if !ev.is_empty() {
        let _ = writeln!(s, "  evidence: {}", ev.join("; "));
    }
    let _ = writeln!(
        s,
        "traffic: {:.0} SYN/s, {:.0} completed/s (ratio {:.2}), {} half-open ({}), {:.0} new sources/s, {:.0} \
            drops/s, {} failed handshakes",
        v.syn_per_sec,
        v.completed_per_sec,
        v.completion_ratio,
        v.half_open,
        match v.half_open_basis.as_str() {
            "server" => "SYN-ACKs sent, no ACK yet",
            "client" => "SYNs not completed; no egress program",
            _ => "?",
        },
        v.new_sources_per_sec,
        v.dropped_per_sec,
        v.handshakes_failed
    );
    let k = &v.kernel;
    let _ = writeln!(
        s,
        "kernel: tcp_syncookies={}{}, {} SYN_RECV, cookies sent {} / recv {} / failed {}, listen overflows {}, \
            drops {}, SYN queue full {} (cookies) / {} (dropped)",
        k.view.syncookies,
        if k.syncookies_forced { " (forced by tcpguard)" } else { "" },
        k.view.syn_recv,
        k.view.syncookies_sent,
        k.view.syncookies_recv,
        k.view.syncookies_failed,
        k.view.listen_overflows,
        k.view.listen_drops,
        k.view.req_qfull_cookies,
        k.view.req_qfull_drops
    );
    render_listeners(v, &mut s);
    render_blocks(v, &mut s);
    if let Some(u) = &v.upstream {
        let _ = writeln!(s, "{}", upstream_line(u));
    }
    render_heavy(v, &mut s);
    s
}

fn render_heavy(v: &StatusView, s: &mut String) {
    if !v.top_sources.is_empty() {
        let _ = writeln!(s, "heavy sources:");
        for t in &v.top_sources {
            let _ = writeln!(
                s,
                "  {:<40} {:>8.0} SYN/s {:>6} half-open {:>6} completed",
                t.prefix_len.map_or_else(|| t.addr.to_string(), |l| format!("{}/{l} (aggregate)", t.addr)),
                t.syn_per_sec,
                t.half_open,
                t.completed
            );
        }
    }
}

/// Listeners under pressure (all of them with `--json`).
fn render_listeners(v: &StatusView, s: &mut String) {
    let pressed: Vec<_> = v.listeners.iter().filter(|l| l.pressured).collect();
    if pressed.is_empty() {
        return;
    }
    let _ = writeln!(s, "listeners under pressure:");
    for l in pressed {
        let _ = writeln!(
            s,
            "  {:<40} SYN queue {}/{} ({:.0}%), accept queue {}, {:.0} drops/s",
            l.addr,
            l.syn_queue,
            l.backlog,
            l.share * 100.0,
            l.accept_queue,
            l.drops_per_sec
        );
    }
}

fn render_blocks(v: &StatusView, s: &mut String) {
    let l = &v.block_list;
    let full = |n: usize| if l.capacity > 0 && n >= l.capacity as usize { " FULL" } else { "" };
    let _ = writeln!(
        s,
        "blocked ({}): block-list IPv4 {}/{}{}, IPv6 {}/{}{}; auto blocks {}/{} (policy.max-blocked); {} refused",
        v.blocked.len(),
        l.entries_v4,
        l.capacity,
        full(l.entries_v4),
        l.entries_v6,
        l.capacity,
        full(l.entries_v6),
        l.auto_blocks,
        l.auto_block_cap,
        l.refused
    );
    for b in v.blocked.iter().take(20) {
        let exp = b.expires_in_secs.map_or("permanent".into(), |e| format!("expires in {}", dur(e)));
        let _ = writeln!(s, "  {:<24} {:<20} {}", b.prefix.to_string(), exp, b.reason);
    }
    if v.blocked.len() > 20 {
        let _ = writeln!(s, "  ... {} more (tcpguard status --json)", v.blocked.len() - 20);
    }
}

/// gobgpd's state and the rule count in one line.
fn upstream_line(u: &UpstreamView) -> String {
    let gobgpd = match (u.reachable, &u.error) {
        (Some(false), Some(e)) => format!("UNREACHABLE ({e})"),
        (Some(false), None) => "UNREACHABLE".into(),
        (None, _) => "not reached yet".into(),
        (Some(true), _) => {
            let peers: Vec<String> = u.peers.iter().map(|p| format!("{} {}", p.address, p.state)).collect();
            format!("reachable, peers: {}", if peers.is_empty() { "none".into() } else { peers.join(", ") })
        }
    };
    format!(
        "upstream: gobgpd {} {gobgpd}; {} rule(s) {}{}",
        u.api,
        u.announcements.len(),
        if u.monitor { "would be announced (policy monitor)" } else { "announced" },
        if u.refused.is_empty() { String::new() } else { format!(", {} held back", u.refused.len()) }
    )
}

/// `tcpguard upstream`: the rules with age, TTL and reason, what is held
/// back and why, gobgpd's state.
pub fn render_upstream(u: &UpstreamView) -> String {
    let mut s = upstream_line(u);
    s.push('\n');
    for a in &u.announcements {
        let _ = writeln!(
            s,
            "  {:<11} {}\n              age {}, withdrawn in {} at the latest; {}",
            a.kind,
            a.rule,
            dur(a.age_secs),
            dur(a.ttl_secs),
            a.reason
        );
    }
    for r in &u.refused {
        let _ = writeln!(s, "  held back   {}: {}", r.what, r.reason);
    }
    let _ = writeln!(
        s,
        "  totals: {} announced, {} withdrawn, {} gobgpd failures, {} refused by a guardrail",
        u.announced_total, u.withdrawn_total, u.failures_total, u.refused_total
    );
    s
}

pub fn render_top(v: &[SourceView]) -> String {
    let mut s = format!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "source", "SYN/s", "SYNs", "completed", "half-open", "dropped"
    );
    for t in v {
        let _ = writeln!(
            s,
            "{:<40} {:>10.0} {:>10} {:>10} {:>10} {:>10}",
            t.addr.to_string(),
            t.syn_per_sec,
            t.syns,
            t.completed,
            t.half_open,
            t.dropped
        );
    }
    s
}

/// "30", "30s", "5m", "2h", "1d" -> seconds.
pub use crate::validate::MAX_TTL_SECS;

pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n = num
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a duration like 30s, 10m, 2h or 1d"))?;
    n.checked_mul(mult).filter(|t| *t <= MAX_TTL_SECS).ok_or_else(|| {
        format!("{s:?} is longer than the longest block TTL (365d); omit --ttl for a block until unblocked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("10m").unwrap(), 600);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        // No wrap-around: these were accepted and expired in 0.29 s, or kept
        // for centuries, before the cap.
        for t in ["18446744074s", "99999999999s", "213503982335d", "366d"] {
            let e = parse_duration(t).unwrap_err();
            assert!(e.contains("longest block TTL"), "{t}: {e}");
        }
        assert_eq!(parse_duration("365d").unwrap(), MAX_TTL_SECS);
        assert_eq!(dur(3725.0), "1h02m");
    }

    #[tokio::test]
    async fn not_running_message_says_how_to_start() {
        let e = request(Path::new("/nonexistent/tcpguard.sock"), &Request::Status).await.unwrap_err().to_string();
        assert!(e.contains("not running") && e.contains("tcpguard run"), "{e}");
    }

    #[test]
    fn status_renders_attack_and_blocks() {
        let mut v = StatusView::default();
        v.attack.active = true;
        v.attack.kind = Some(crate::model::Kind::SpoofedRandom);
        v.attack.phase = crate::model::Phase::Active;
        v.attack.mitigation = vec!["SYN cookies forced".into()];
        v.blocked.push(crate::proto::BlockView {
            prefix: "198.51.100.66/32".parse().unwrap(),
            expires_in_secs: Some(42.0),
            reason: "operator".into(),
        });
        let text = render_status(&v);
        assert!(text.contains("ATTACK: spoofed-random"), "{text}");
        assert!(text.contains("mitigation: SYN cookies forced"));
        assert!(text.contains("198.51.100.66/32") && text.contains("expires in 42s"));
        // An older daemon's answer has no ACK side: no line for it.
        assert!(!text.contains("ACK check"), "{text}");
    }

    #[test]
    fn status_names_a_mixed_flood_and_the_ack_check() {
        use crate::model::Kind;
        let mut v = StatusView::default();
        v.attack.active = true;
        v.attack.kind = Some(Kind::SpoofedRandom);
        v.attack.kinds = vec![Kind::SpoofedRandom, Kind::AckFlood];
        v.ack_flood.active = true;
        v.ack_flood.datapath = "checking".into();
        v.ack_flood.entered_by = Some("datapath".into());
        v.ack_flood.unmatched_acks_per_sec = 250_000.0;
        v.ack_flood.dropped_per_sec = 249_000.0;
        v.ack_flood.entries = 1;
        v.interfaces.push(crate::proto::InterfaceView {
            name: "eth1".into(),
            present: true,
            attached: true,
            mode: "tracking".into(),
            ack_checking: true,
            ..crate::proto::InterfaceView::default()
        });
        let text = render_status(&v);
        assert!(text.contains("ATTACK: spoofed-random + ack-flood (mixed flood)"), "{text}");
        assert!(
            text.contains("ACK check: ON, entered by the datapath: 250000 unmatched ACKs/s, 249000 dropped/s"),
            "{text}"
        );
        assert!(text.contains("1 entries by the datapath so far"), "{text}");
        assert!(text.contains("eth1: ACK-checking"), "{text}");
        // Calm: no ACK line unless unmatched ACKs arrive.
        v.attack = crate::proto::AttackView::default();
        v.ack_flood = crate::proto::AckFloodView { datapath: "off".into(), ..crate::proto::AckFloodView::default() };
        assert!(!render_status(&v).contains("ACK check"));
    }
}

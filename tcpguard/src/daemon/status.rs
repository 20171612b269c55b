//! Where a status line comes from: [`render`] turns the tick's
//! `Observation` into the `StatusView` that `tcpguard status` prints (and
//! `--json` serialises). Pure: no map reads, no daemon state.

use std::collections::BTreeMap;

use tcpguard_common::Counter;

use crate::{
    config::{DatapathMode, PolicyMode, SynCookies},
    daemon::observe::{IfaceObs, Observation},
    model::{Attach, Kind},
    proto::{
        AckFloodView, AttackView, BlockListView, BlockView, DatapathView, InterfaceView, KernelStatus, SourceView,
        StatusView,
    },
};

/// The status view of an observation, as of `now_ns` (CLOCK_MONOTONIC).
pub fn render(o: &Observation, now_ns: u64) -> StatusView {
    let m = &o.mitigation;
    let v4 = m.blocks.iter().filter(|b| b.prefix.addr.is_ipv4()).count();
    let block_list = BlockListView {
        capacity: m.block_capacity,
        entries_v4: v4,
        entries_v6: m.blocks.len() - v4,
        auto_block_cap: o.config.max_blocked,
        auto_blocks: m.daemon_blocks,
        refused: m.block_failures,
    };
    let blocked = m
        .blocks
        .iter()
        .filter(|b| b.expires_ns == 0 || b.expires_ns > now_ns)
        .map(|b| BlockView {
            prefix: b.prefix,
            expires_in_secs: (b.expires_ns != 0).then(|| (b.expires_ns - now_ns) as f64 / 1e9),
            reason: b.origin.to_string(),
        })
        .collect();
    let (rates, top) = match &o.assessment {
        Some(a) => (
            a.rates.clone(),
            a.heavy
                .iter()
                .take(10)
                .map(|h| SourceView {
                    addr: h.addr,
                    prefix_len: h.is_aggregate().then_some(h.len),
                    syn_per_sec: h.syn_per_sec,
                    syns: 0,
                    completed: h.completed,
                    half_open: h.half_open,
                    dropped: 0,
                })
                .collect(),
        ),
        None => (crate::daemon::detect::Rates::default(), Vec::new()),
    };
    let counters: BTreeMap<String, u64> =
        Counter::ALL.iter().map(|c| (c.name().to_string(), o.counters.get(*c))).collect();
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        interfaces: o.ifaces.iter().map(|i| interface_view(o, i)).collect(),
        policy: o.config.policy.as_str().into(),
        datapath_mode: match o.config.datapath_mode {
            DatapathMode::Enforce => "enforce".into(),
            DatapathMode::Monitor => "monitor".into(),
        },
        uptime_secs: o.uptime_secs,
        attack: attack_view(o),
        ack_flood: ack_flood_view(o),
        datapath: datapath_view(o, now_ns),
        half_open: o.half_open,
        half_open_basis: if o.egress { "server" } else { "client" }.into(),
        handshakes_failed: o.failed_total,
        syn_per_sec: rates.syn_per_sec,
        completed_per_sec: rates.completed_per_sec,
        completion_ratio: rates.completion_ratio,
        new_sources_per_sec: rates.new_sources_per_sec,
        dropped_per_sec: o.dropped_per_sec(),
        blocked,
        block_list,
        allowed: m.allowed.clone(),
        top_sources: top,
        listeners: o.assessment.as_ref().map(|a| a.listeners.iter().take(10).cloned().collect()).unwrap_or_default(),
        kernel: KernelStatus {
            view: o.kernel.clone(),
            syncookies_forced: m.cookies_forced(),
            syncookies_original: m.syncookies_original,
            timestamps_original: m.timestamps_original,
        },
        counters,
        upstream: o.upstream.clone(),
    }
}

/// One interface: its own mode, responder and figures.
fn interface_view(o: &Observation, i: &IfaceObs) -> InterfaceView {
    let per_sec = |c: Counter| i.delta(c) as f64 / o.dt.max(1e-3);
    let (responder, reason) = if o.config.responder_enabled {
        (i.responder.clone(), i.responder_reason.clone())
    } else {
        ("off".to_string(), "the policy or datapath.syn-cookies does not answer from XDP".to_string())
    };
    InterfaceView {
        name: i.name.clone(),
        xdp_mode: i.how.as_str().into(),
        adopted: i.how == Attach::Adopted,
        attached: i.attached,
        present: i.present,
        mode: if i.attack_mode { "attack" } else { "tracking" }.into(),
        ack_checking: i.ack_mode,
        responder,
        responder_reason: reason,
        answering: i.answering,
        xdp_synacks_per_sec: per_sec(Counter::CookieSent),
        xdp_tx_failed: i.counters.get(Counter::XdpTxFailed),
        xdp_tx_failed_per_sec: per_sec(Counter::XdpTxFailed),
        driver_xdp_tx_errors: i.driver_tx_errors,
        tx_watch: i.tx_watch,
        fallbacks: i.fallbacks,
        attack_entries: i.attack_entries,
        mtu: i.mtu,
        synack_mss: i.mtu.clamp(576, 65_535) - 40,
        not_for_host: i.counters.get(Counter::NotForHost),
    }
}

fn datapath_view(o: &Observation, now: u64) -> DatapathView {
    let d = &o.mitigation.dp_attack;
    let ms = |a: u64, b: u64| (a >= b && b != 0).then(|| (a - b) as f64 / 1e6);
    let responder = if !o.config.responder_enabled {
        match o.config.syn_cookies {
            SynCookies::Kernel => "kernel".to_string(),
            SynCookies::Xdp => format!(
                "off (policy {}, datapath {})",
                o.config.policy.as_str(),
                if o.config.datapath_mode == DatapathMode::Monitor { "monitor" } else { "enforce" }
            ),
        }
    } else if d.active {
        "xdp".to_string()
    } else {
        "xdp (armed in attack mode)".to_string()
    };
    DatapathView {
        mode: if d.active { "attack" } else { "tracking" }.into(),
        entered_by: d.active.then(|| if d.by_datapath { "datapath" } else { "daemon" }.to_string()),
        since_secs: d.active.then(|| now.saturating_sub(d.entered_ns) as f64 / 1e9),
        entry_ms: if d.active && d.by_datapath { ms(d.entered_ns, d.trigger_window_ns) } else { None },
        first_cookie_ms: if d.active {
            ms(d.first_cookie_ns, if d.by_datapath { d.trigger_window_ns } else { d.entered_ns })
        } else {
            None
        },
        entered_ns: d.entered_ns,
        trigger_window_ns: d.trigger_window_ns,
        first_cookie_ns: d.first_cookie_ns,
        responder,
        entries: d.entries,
        cookies_sent_per_sec: o.rate(Counter::CookieSent),
        cookie_acks_per_sec: o.rate(Counter::CookieAckValid),
        invalid_acks_dropped_per_sec: o.rate(Counter::DropAckInvalid),
        distinct_sources_per_sec: o.distinct_per_sec,
        sample_one_in: o.config.attack_sample,
    }
}

fn ack_flood_view(o: &Observation) -> AckFloodView {
    let d = &o.mitigation.dp_ack;
    let Some(a) = &o.assessment else {
        return AckFloodView { datapath: "off".into(), entries: d.entries, ..AckFloodView::default() };
    };
    let a = &a.ack;
    AckFloodView {
        active: a.active(),
        phase: a.phase,
        since_secs: a.since,
        unmatched_acks_per_sec: a.unmatched_per_sec,
        kernel_rsts_per_sec: a.kernel_rsts_per_sec,
        dropped_per_sec: o.rate(Counter::DropAckInvalid),
        datapath: if d.active { "checking" } else { "off" }.into(),
        entered_by: d.active.then(|| if d.by_datapath { "datapath" } else { "daemon" }.to_string()),
        entries: d.entries,
        evidence: a.evidence.clone(),
    }
}

fn attack_view(o: &Observation) -> AttackView {
    let Some(a) = &o.assessment else { return AttackView::default() };
    let m = &o.mitigation;
    let syn_active = a.phase.is_attack();
    let active = syn_active || a.ack.active();
    let mut mitigation = Vec::new();
    if o.responder_armed() {
        mitigation
            .push("SYNs to listeners answered from XDP with the kernel's SYN cookies; invalid ACKs dropped".into());
    }
    if m.dp_ack.active {
        mitigation.push(if o.config.datapath_mode == DatapathMode::Monitor {
            "ACK check on: ACKs to listeners without a connection or a valid cookie counted (datapath monitor)".into()
        } else {
            "ACKs to listeners without a connection or a valid cookie dropped in XDP".into()
        });
    }
    match (m.syncookies_original, m.syncookies_now) {
        (Some(orig), Some(2)) => mitigation.push(format!("SYN cookies forced (tcp_syncookies=2, restores to {orig})")),
        (Some(orig), now) => mitigation.push(format!(
            "tcp_syncookies is {} (being restored to {orig})",
            now.map_or("unreadable".to_string(), |n| n.to_string())
        )),
        (None, _) => {}
    }
    if let Some(e) = &m.state_error {
        mitigation.push(format!(
            "FAILING: a sysctl change is held back ({e}); {} failures, tried again every tick",
            m.state_failures
        ));
    }
    if active
        && a.kind == Some(Kind::FewHeavySources)
        && matches!(o.config.policy, PolicyMode::Drop | PolicyMode::Auto)
        && m.daemon_blocks > 0
    {
        mitigation.push("heavy sources blocked in XDP".into());
    }
    if let Some(e) = &m.last_block_error {
        mitigation.push(format!("FAILING: {} blocks refused by the datapath; last: {e}", m.block_failures));
    }
    if active && o.config.policy == PolicyMode::Monitor {
        mitigation.push("none (policy monitor)".into());
    }
    let mut evidence = a.evidence.clone();
    if a.ack.over || a.ack.active() {
        evidence.extend(a.ack.evidence.iter().cloned());
    }
    let kinds = a.kinds();
    AttackView {
        active,
        phase: if syn_active || !a.ack.active() { a.phase } else { a.ack.phase },
        kind: kinds.first().copied(),
        kinds,
        since_secs: match (a.since, a.ack.since) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
        evidence,
        mitigation,
        attacks_total: o.attacks_total(),
    }
}

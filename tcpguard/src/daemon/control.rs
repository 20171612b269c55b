//! The control socket's requests answered: status, top, block, unblock,
//! allow. Runs on the daemon's loop; the views are built from the last
//! tick's readings.

use std::collections::BTreeMap;

use anyhow::Result;
use tcpguard_common::Counter;

use crate::{
    config::{DatapathMode, PolicyMode, SynCookies},
    daemon::Daemon,
    maps::monotonic_ns,
    model::{Attach, BlockOrigin, Kind, Phase},
    net::Prefix,
    proto::{
        AttackView, BlockListView, BlockView, DatapathView, InterfaceView, KernelStatus, Request, Response, SourceView,
        StatusView,
    },
};

impl Daemon {
    pub(super) fn handle(&mut self, req: &Request) -> Response {
        let r = match *req {
            // (Answered from the published snapshot by the socket server.)
            Request::Status => self.snapshot().map(|s| Response::Status(Box::new(s))),
            // The socket server scans the pinned tables itself, off this loop.
            Request::Top { .. } => {
                Ok(Response::Error { message: "top is answered by the control socket server".into() })
            }
            Request::Block { prefix, ttl_secs, force } => self.operator_block(prefix, ttl_secs, force),
            Request::Unblock { prefix } => self.operator_unblock(prefix),
            Request::Allow { prefix } => self.operator_allow(prefix),
            Request::Unallow { prefix } => self.operator_unallow(prefix),
        };
        r.unwrap_or_else(|e| Response::Error { message: format!("{e:#}") })
    }

    fn operator_block(&mut self, prefix: Prefix, ttl: Option<u64>, force: bool) -> Result<Response> {
        let (widest, key) = if prefix.addr.is_ipv4() {
            (self.cfg.policy.widest_block_v4, "policy.widest-block-v4")
        } else {
            (self.cfg.policy.widest_block_v6, "policy.widest-block-v6")
        };
        if prefix.len < widest && !force {
            return Ok(Response::Error {
                message: format!(
                    "refusing to block {prefix}: wider than /{widest} ({key}), it would cut off every client in it \
                     that is not allow-listed (SSH included); pass --force if you mean it"
                ),
            });
        }
        if ttl.is_some_and(|t| t > crate::ctl::MAX_TTL_SECS) {
            return Ok(Response::Error {
                message: format!("a block TTL is at most {} s (365d)", crate::ctl::MAX_TTL_SECS),
            });
        }
        if let Some(a) = self.allow_list().iter().find(|a| a.contains(prefix.addr)) {
            return Ok(Response::Error {
                message: format!(
                    "{prefix} is allow-listed by {a}; the allow-list always wins, so a block would have no effect"
                ),
            });
        }
        let exp = ttl.map_or(0, |s| monotonic_ns().saturating_add(s.saturating_mul(1_000_000_000)));
        self.dps.block(&prefix, exp)?;
        self.mitigator.blocks.insert(prefix, BlockOrigin::Operator);
        let until = ttl.map_or("until unblocked".to_string(), |s| format!("for {s} s"));
        log::info!("operator blocked {prefix} {until}");
        Ok(Response::Done { message: format!("blocked {prefix} {until}") })
    }

    fn operator_unblock(&mut self, prefix: Prefix) -> Result<Response> {
        let any = self.dps.unblock(&prefix)?;
        self.mitigator.blocks.remove(&prefix);
        Ok(if any {
            log::info!("operator unblocked {prefix}");
            Response::Done { message: format!("unblocked {prefix}") }
        } else {
            Response::Error { message: format!("{prefix} is not blocked (see `tcpguard status` for the list)") }
        })
    }

    fn operator_allow(&mut self, prefix: Prefix) -> Result<Response> {
        self.dps.allow(&prefix, monotonic_ns())?;
        self.mitigator.runtime_allows.insert(prefix);
        log::info!("operator allowed {prefix}");
        Ok(Response::Done {
            message: format!(
                "allowed {prefix}: always passes, never blocked or rate limited \
            (until restart; add it to datapath.allow to keep it)"
            ),
        })
    }

    fn operator_unallow(&mut self, prefix: Prefix) -> Result<Response> {
        if self.cfg.datapath.allow.contains(&prefix) {
            return Ok(Response::Error {
                message: format!("{prefix} is in datapath.allow; remove it from the config file and reload"),
            });
        }
        if !self.mitigator.runtime_allows.remove(&prefix) {
            return Ok(Response::Error {
                message: format!("{prefix} was not allowed with `tcpguard allow` (see `tcpguard status`)"),
            });
        }
        self.dps.disallow(&prefix)?;
        log::info!("operator removed the allow-list entry {prefix}");
        Ok(Response::Done { message: format!("{prefix} is no longer allow-listed") })
    }

    /// One interface: its own mode, responder and figures.
    fn interface_view(&self, i: &crate::daemon::datapaths::Iface) -> InterfaceView {
        let per_sec = |c: Counter| i.delta(c) as f64 / self.rate_dt.max(1e-3);
        let (responder, reason) = if self.responder_enabled() {
            (i.responder.name().to_string(), i.responder.reason.clone())
        } else {
            ("off".to_string(), "the policy or datapath.syn-cookies does not answer from XDP".to_string())
        };
        let mtu = i.link.mtu;
        InterfaceView {
            name: i.name.clone(),
            xdp_mode: i.att.how.as_str().into(),
            adopted: i.att.how == Attach::Adopted,
            attached: i.attached,
            mode: if i.attack.active != 0 { "attack" } else { "tracking" }.into(),
            responder,
            responder_reason: reason,
            answering: i.answering,
            xdp_synacks_per_sec: per_sec(Counter::CookieSent),
            xdp_tx_failed: i.counters.get(Counter::XdpTxFailed),
            xdp_tx_failed_per_sec: per_sec(Counter::XdpTxFailed),
            driver_xdp_tx_errors: i.driver_tx_errors,
            tx_watch: i.tx_watch,
            fallbacks: i.responder.fallbacks,
            attack_entries: i.attack.entries,
            mtu,
            synack_mss: mtu.clamp(576, 65_535) - 40,
            not_for_host: i.counters.get(Counter::NotForHost),
        }
    }

    fn datapath_view(&self) -> DatapathView {
        let d = &self.mitigator.dp_attack;
        let now = monotonic_ns();
        let ms = |a: u64, b: u64| (a >= b && b != 0).then(|| (a - b) as f64 / 1e6);
        let responder = if !self.responder_enabled() {
            match self.cfg.datapath.syn_cookies {
                SynCookies::Kernel => "kernel".to_string(),
                SynCookies::Xdp => format!(
                    "off (policy {}, datapath {})",
                    self.policy.mode().as_str(),
                    if self.cfg.datapath.mode == DatapathMode::Monitor { "monitor" } else { "enforce" }
                ),
            }
        } else if d.active {
            "xdp".to_string()
        } else {
            "xdp (armed in attack mode)".to_string()
        };
        let r = |c: Counter| self.counter_rate(c);
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
            cookies_sent_per_sec: r(Counter::CookieSent),
            cookie_acks_per_sec: r(Counter::CookieAckValid),
            invalid_acks_dropped_per_sec: r(Counter::DropAckInvalid),
            distinct_sources_per_sec: self.sampler.distinct_per_sec,
            sample_one_in: self.cfg.datapath.attack_sample,
        }
    }

    /// A counter's rate over the last tick.
    fn counter_rate(&self, c: Counter) -> f64 {
        self.counters.get(c).saturating_sub(self.rate_base.get(c)) as f64 / self.rate_dt.max(1e-3)
    }

    fn attack_view(&self) -> AttackView {
        let Some(a) = &self.last else { return AttackView::default() };
        let active = matches!(a.phase, Phase::Active | Phase::CoolingDown);
        let mut mitigation = Vec::new();
        if self.responder_armed() {
            mitigation
                .push("SYNs to listeners answered from XDP with the kernel's SYN cookies; invalid ACKs dropped".into());
        }
        if let Some(orig) = self.mitigator.state.syncookies_original {
            mitigation.push(format!("SYN cookies forced (tcp_syncookies=2, restores to {orig})"));
        }
        if active
            && a.kind == Some(Kind::FewHeavySources)
            && matches!(self.policy.mode(), PolicyMode::Drop | PolicyMode::Auto)
            && self.mitigator.daemon_blocks() > 0
        {
            mitigation.push("heavy sources blocked in XDP".into());
        }
        if let Some(e) = &self.mitigator.last_block_error {
            mitigation
                .push(format!("FAILING: {} blocks refused by the datapath; last: {e}", self.mitigator.block_failures));
        }
        if active && self.policy.mode() == PolicyMode::Monitor {
            mitigation.push("none (policy monitor)".into());
        }
        AttackView {
            active,
            phase: a.phase,
            kind: a.kind,
            since_secs: a.since,
            evidence: a.evidence.clone(),
            mitigation,
            attacks_total: self.attacks_total,
        }
    }

    /// The status view of the last tick: published once per tick for
    /// `status` (and after any change an operator makes).
    pub(super) fn snapshot(&mut self) -> Result<StatusView> {
        let now = monotonic_ns();
        let entries = self.dps.blocks()?;
        let v4 = entries.iter().filter(|(p, _)| p.addr.is_ipv4()).count();
        let block_list = BlockListView {
            capacity: self.mitigator.block_capacity,
            entries_v4: v4,
            entries_v6: entries.len() - v4,
            auto_block_cap: self.cfg.policy.max_blocked,
            auto_blocks: self.mitigator.daemon_blocks(),
            refused: self.mitigator.block_failures,
        };
        let blocked = entries
            .into_iter()
            .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
            .map(|(prefix, e)| BlockView {
                prefix,
                expires_in_secs: (e.expires_ns != 0).then(|| (e.expires_ns - now) as f64 / 1e9),
                reason: self.mitigator.blocks.get(&prefix).unwrap_or(&BlockOrigin::Pinned).to_string(),
            })
            .collect();
        let (rates, top) = match &self.last {
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
            Counter::ALL.iter().map(|c| (c.name().to_string(), self.counters.get(*c))).collect();
        Ok(StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            interfaces: self.dps.ifaces().iter().map(|i| self.interface_view(i)).collect(),
            policy: self.policy.mode().as_str().into(),
            datapath_mode: match self.cfg.datapath.mode {
                DatapathMode::Enforce => "enforce".into(),
                DatapathMode::Monitor => "monitor".into(),
            },
            uptime_secs: self.started.elapsed().as_secs_f64(),
            attack: self.attack_view(),
            datapath: self.datapath_view(),
            half_open: self.sampler.half_open,
            half_open_basis: if self.dps.egress() { "server" } else { "client" }.into(),
            handshakes_failed: self.sampler.failed_total(),
            syn_per_sec: rates.syn_per_sec,
            completed_per_sec: rates.completed_per_sec,
            completion_ratio: rates.completion_ratio,
            new_sources_per_sec: rates.new_sources_per_sec,
            dropped_per_sec: self.dropped_per_sec,
            blocked,
            block_list,
            allowed: self.allow_list(),
            top_sources: top,
            listeners: self.last.as_ref().map(|a| a.listeners.iter().take(10).cloned().collect()).unwrap_or_default(),
            kernel: KernelStatus {
                view: self.kernel.clone(),
                syncookies_forced: self.mitigator.state.syncookies_original.is_some(),
                syncookies_original: self.mitigator.state.syncookies_original,
                timestamps_original: self.mitigator.state.timestamps_original,
            },
            counters,
        })
    }
}

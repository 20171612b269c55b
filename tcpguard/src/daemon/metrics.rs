//! Where a metric comes from: a struct that owns its registry and renders
//! the tick's `Observation` into it at scrape time ([`Metrics::render`]),
//! served on /metrics. Counters are the observation's totals since this
//! daemon started. No per-address labels: top sources belong in
//! `tcpguard status`.

use std::{net::SocketAddr, sync::Arc};

use prometheus::{
    core::Collector, Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tcpguard_common::Counter;
use tokio::net::TcpListener;

use crate::{
    daemon::observe::{kind_index, IfaceObs, Observation},
    model::Kind,
};

/// The daemon's latest observation, as the metrics server reads it.
pub type Latest = tokio::sync::watch::Receiver<Arc<Observation>>;

/// Advance a counter to `total` (it never goes back).
fn advance(c: &IntCounter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

pub struct Metrics {
    pub registry: Registry,
    packets: IntCounter,
    syn: IntCounter,
    completed: IntCounter,
    failed: IntCounter,
    new_sources: IntCounter,
    insert_failed: IntCounter,
    half_open: IntGauge,
    dropped: IntCounterVec,
    would_drop: IntCounterVec,
    passed: IntCounterVec,
    attack_active: IntGauge,
    syn_flood_active: IntGauge,
    attacks: IntCounterVec,
    blocked: IntGauge,
    block_list_entries: prometheus::IntGaugeVec,
    block_list_capacity: IntGauge,
    listeners_pressured: IntGauge,
    syncookies_forced: IntGauge,
    /// 1 while the datapath is in attack mode.
    datapath_attack: IntGauge,
    ifaces: IfaceMetrics,
    upstream: UpstreamMetrics,
    not_for_host: IntCounter,
    block_failures: IntCounter,
    state_failures: IntCounter,
    attack_entries: IntCounter,
    attack_syns: IntCounter,
    xdp_cookies: IntCounter,
    xdp_cookies_no_lookup: IntCounter,
    xdp_cookie_acks: IntCounter,
    k_syn_recv: IntGauge,
    unmatched_acks: IntCounter,
    ack_flood_active: IntGauge,
    datapath_ack_mode: IntGauge,
    ack_mode_entries: IntCounter,
    pub tick: Histogram,
}

fn reg<T: Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl Metrics {
    #[allow(clippy::too_many_lines)] // one declaration per series, with its help text
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("tcpguard".into()), None).expect("valid prefix");
        let counter = |n: &str, h: &str| reg(&r, IntCounter::new(n, h).expect("valid metric"));
        let vec = |n: &str, h: &str, l: &str| reg(&r, IntCounterVec::new(Opts::new(n, h), &[l]).expect("valid metric"));
        let gauge = |n: &str, h: &str| reg(&r, IntGauge::new(n, h).expect("valid metric"));
        let gauge_vec = |n: &str, h: &str, l: &str| {
            reg(&r, prometheus::IntGaugeVec::new(Opts::new(n, h), &[l]).expect("valid metric"))
        };
        let m = Metrics {
            packets: counter("packets_total", "Packets seen by the XDP program."),
            syn: counter("syn_packets_total", "Client SYNs (SYN without ACK) to protected ports."),
            completed: counter(
                "handshakes_completed_total",
                "Handshakes completed by the client's ACK (seq = \
                ISN + 1), or by a valid SYN-cookie ACK in attack mode.",
            ),
            failed: counter("handshakes_failed_total", "Half-open handshakes that outlived the half-open timeout."),
            new_sources: counter("new_sources_total", "Source addresses entered into the source table."),
            insert_failed: counter(
                "source_insert_failures_total",
                "SYNs whose source the source table refused \
                (passed untracked).",
            ),
            half_open: gauge("half_open_connections", "Half-open handshakes within the half-open timeout."),
            dropped: vec(
                "dropped_packets_total",
                "Packets dropped by the XDP program, by reason (blocked: SYNs of blocked sources; blocked_other: \
                 their other TCP packets).",
                "reason",
            ),
            would_drop: vec(
                "monitor_would_drop_total",
                "Packets monitor mode would have dropped, by \
                reason.",
                "reason",
            ),
            passed: vec("passed_packets_total", "Packets passed without tracking, by reason.", "reason"),
            attack_active: gauge(
                "attack_active",
                "1 while an attack (a SYN flood, an ACK flood, or both) is active or cooling down.",
            ),
            syn_flood_active: gauge("syn_flood_active", "1 while a SYN flood is active or cooling down."),
            attacks: vec("attacks_total", "Attacks declared, by kind.", "kind"),
            blocked: gauge("blocked_prefixes", "Entries in the block-lists."),
            block_list_entries: gauge_vec(
                "block_list_entries",
                "Entries in each block-list, by address family.",
                "family",
            ),
            block_list_capacity: gauge(
                "block_list_capacity",
                "Entries each block-list holds (datapath.block-list-entries as the map was made); a full list \
                 refuses blocks.",
            ),
            listeners_pressured: gauge("listeners_under_pressure", "Listeners under pressure (sock_diag)."),
            syncookies_forced: gauge("syncookies_forced", "1 while tcpguard forces net.ipv4.tcp_syncookies=2."),
            block_failures: counter(
                "block_failures_total",
                "Blocks the datapath refused (a full block-list); such a source is not blocked.",
            ),
            state_failures: counter(
                "state_write_failures_total",
                "Sysctl changes held back because the sysctl or its saved record (daemon.state-dir/state.json) \
                 could not be written; each is tried again the next tick.",
            ),
            ifaces: IfaceMetrics::new(&r),
            upstream: UpstreamMetrics::new(&r),
            not_for_host: counter(
                "not_for_host_packets_total",
                "Attack-mode SYNs and ACKs not addressed to this host (another MAC or a non-local address: \
                 forwarded traffic), left to the kernel.",
            ),
            datapath_attack: gauge(
                "datapath_attack_mode",
                "1 while the datapath is in attack mode (no per-SYN \
                state, XDP SYN cookies).",
            ),
            attack_entries: counter(
                "datapath_attack_entries_total",
                "Times the datapath entered attack mode by \
                itself (its SYN rate crossed the threshold).",
            ),
            attack_syns: counter(
                "attack_mode_syn_packets_total",
                "SYNs handled in attack mode (counted in \
                fixed-size sketches, no table insert).",
            ),
            xdp_cookies: counter("xdp_syncookies_sent_total", "SYN-ACKs with a kernel SYN cookie sent from XDP."),
            xdp_cookies_no_lookup: counter(
                "xdp_syncookies_without_lookup_total",
                "Of those, SYN-ACKs sent without a socket lookup (the port's listener proven within a second).",
            ),
            xdp_cookie_acks: counter(
                "xdp_syncookie_acks_total",
                "ACKs carrying a valid SYN cookie (handshakes \
                completed through cookies).",
            ),
            k_syn_recv: gauge("kernel_syn_recv_sockets", "SYN_RECV sockets according to the kernel (sock_diag)."),
            unmatched_acks: counter(
                "unmatched_acks_total",
                "ACKs to protected ports that matched no connection: answered by the kernel with a RST (seen on \
                 egress), or checked and dropped in XDP (ACK-checking or attack mode).",
            ),
            ack_flood_active: gauge("ack_flood_active", "1 while an ACK flood is active or cooling down."),
            datapath_ack_mode: gauge(
                "datapath_ack_mode",
                "1 while the datapath checks ACKs to listeners (ACK-checking mode: no connection and no valid \
                 cookie, dropped).",
            ),
            ack_mode_entries: counter(
                "datapath_ack_mode_entries_total",
                "Times the datapath entered ACK-checking mode by itself (its unmatched-ACK rate crossed \
                 datapath.attack-ack-rate).",
            ),
            tick: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("tick_duration_seconds", "Time the daemon spends per tick.")
                        .buckets(vec![0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]),
                )
                .expect("valid metric"),
            ),
            registry: r,
        };
        for k in Kind::ALL {
            m.attacks.with_label_values(&[k.as_str()]);
        }
        m
    }

    /// Render an observation: gauges as observed, counters advanced to the
    /// observation's totals since this daemon started (the maps may predate
    /// it). The kernel's TcpExt counters are node_exporter's, not ours.
    pub fn render(&self, o: &Observation) {
        for i in &o.ifaces {
            self.ifaces.render(i, o.config.responder_enabled);
        }
        let a = o.assessment.as_ref();
        self.listeners_pressured.set(a.map_or(0, |a| a.listeners.iter().filter(|l| l.pressured).count()) as i64);
        let m = &o.mitigation;
        advance(&self.block_failures, m.block_failures);
        self.datapath_attack.set(i64::from(m.dp_attack.active));
        self.datapath_ack_mode.set(i64::from(m.dp_ack.active));
        self.ack_flood_active.set(i64::from(a.is_some_and(|a| a.ack.active())));
        let t = |x: Counter| o.total(x);
        advance(&self.packets, t(Counter::Packets));
        advance(&self.syn, t(Counter::Syn));
        advance(&self.completed, t(Counter::HandshakeCompleted) + t(Counter::CookieAckValid));
        advance(&self.attack_entries, t(Counter::AttackEntered));
        advance(&self.ack_mode_entries, t(Counter::AckModeEntered));
        advance(
            &self.unmatched_acks,
            t(Counter::AckUnmatched) + t(Counter::DropAckInvalid) + t(Counter::MonitorAckInvalid),
        );
        advance(&self.attack_syns, t(Counter::AttackSyn));
        advance(&self.xdp_cookies, t(Counter::CookieSent));
        advance(&self.xdp_cookies_no_lookup, t(Counter::CookieNoLookup));
        advance(&self.xdp_cookie_acks, t(Counter::CookieAckValid));
        advance(&self.new_sources, t(Counter::NewSource));
        advance(&self.not_for_host, t(Counter::NotForHost));
        advance(&self.insert_failed, t(Counter::SourceInsertFailed));
        advance(&self.failed, o.failed_total);
        let vec = |v: &IntCounterVec, label: &str, c: Counter| advance(&v.with_label_values(&[label]), t(c));
        vec(&self.dropped, "blocked", Counter::DropBlocked);
        vec(&self.dropped, "blocked_other", Counter::DropBlockedOther);
        vec(&self.dropped, "rate_limited", Counter::DropRateLimited);
        vec(&self.dropped, "invalid_ack", Counter::DropAckInvalid);
        vec(&self.would_drop, "invalid_ack", Counter::MonitorAckInvalid);
        vec(&self.would_drop, "blocked", Counter::MonitorBlocked);
        vec(&self.would_drop, "rate_limited", Counter::MonitorRateLimited);
        for x in Counter::ALL.iter().filter(|x| x.category() == tcpguard_common::Category::Pass) {
            vec(&self.passed, &x.name()["pass_".len()..], *x);
        }
        for k in Kind::ALL {
            advance(&self.attacks.with_label_values(&[k.as_str()]), o.attacks.get(kind_index(k)).copied().unwrap_or(0));
        }
        self.half_open.set(o.half_open as i64);
        self.attack_active.set(i64::from(o.attack_active()));
        self.syn_flood_active.set(i64::from(a.is_some_and(|a| a.phase.is_attack())));
        let v4 = m.blocks.iter().filter(|b| b.prefix.addr.is_ipv4()).count();
        self.blocked.set(m.blocks.len() as i64);
        self.block_list_entries.with_label_values(&["ipv4"]).set(v4 as i64);
        self.block_list_entries.with_label_values(&["ipv6"]).set((m.blocks.len() - v4) as i64);
        self.block_list_capacity.set(i64::from(m.block_capacity));
        self.syncookies_forced.set(i64::from(m.cookies_forced()));
        advance(&self.state_failures, m.state_failures);
        self.k_syn_recv.set(o.kernel.syn_recv as i64);
        self.upstream.render(o.upstream.as_ref());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-interface series (label `interface`).
struct IfaceMetrics {
    attached: prometheus::IntGaugeVec,
    attack: prometheus::IntGaugeVec,
    responder_xdp: prometheus::IntGaugeVec,
    cookies: IntCounterVec,
    tx_errors: IntCounterVec,
    fallbacks: IntCounterVec,
}

impl IfaceMetrics {
    fn new(r: &Registry) -> Self {
        let gauge = |n: &str, h: &str| {
            reg(r, prometheus::IntGaugeVec::new(Opts::new(n, h), &["interface"]).expect("valid metric"))
        };
        let counter =
            |n: &str, h: &str| reg(r, IntCounterVec::new(Opts::new(n, h), &["interface"]).expect("valid metric"));
        IfaceMetrics {
            attached: gauge(
                "datapath_attached",
                "1 while the XDP program is attached to the interface; 0: it is unprotected (deleted or \
                re-created interface, link detached) until tcpguard restarts.",
            ),
            attack: gauge("interface_attack_mode", "1 while this interface's datapath is in attack mode."),
            responder_xdp: gauge(
                "interface_responder_xdp",
                "1 while this interface's SYNs are answered from XDP in attack mode; 0: the kernel's SYN cookies \
                 answer (XDP replies would not leave, or the policy does not answer from XDP).",
            ),
            cookies: counter(
                "interface_xdp_syncookies_sent_total",
                "SYN-ACKs sent from XDP (XDP_TX) on this interface.",
            ),
            tx_errors: counter(
                "xdp_tx_errors_total",
                "XDP_TX replies the interface's driver failed to transmit (veth's own count, the kernel's \
                 xdp:xdp_exception for other drivers): SYN-ACKs that never left.",
            ),
            fallbacks: counter(
                "responder_fallbacks_total",
                "Times the interface fell back from the XDP responder to the kernel's cookies because its XDP \
                 replies failed to leave.",
            ),
        }
    }

    /// `responder`: the policy answers from XDP at all.
    fn render(&self, i: &IfaceObs, responder: bool) {
        let l = [i.name.as_str()];
        self.attached.with_label_values(&l).set(i64::from(i.attached));
        self.attack.with_label_values(&l).set(i64::from(i.attack_mode));
        self.responder_xdp.with_label_values(&l).set(i64::from(responder && i.responder_xdp));
        advance(&self.cookies.with_label_values(&l), i.total(Counter::CookieSent));
        advance(&self.tx_errors.with_label_values(&l), i.total(Counter::XdpTxFailed));
        advance(&self.fallbacks.with_label_values(&l), i.fallbacks);
    }
}

/// `[upstream]`: the rules and gobgpd's state.
struct UpstreamMetrics {
    enabled: IntGauge,
    reachable: IntGauge,
    announcements: prometheus::IntGaugeVec,
    announced: IntCounter,
    withdrawn: IntCounter,
    failures: IntCounter,
    refused: IntCounter,
    peers: prometheus::IntGaugeVec,
}

impl UpstreamMetrics {
    fn new(r: &Registry) -> Self {
        let gauge = |n: &str, h: &str| reg(r, IntGauge::new(n, h).expect("valid metric"));
        let counter = |n: &str, h: &str| reg(r, IntCounter::new(n, h).expect("valid metric"));
        let gauge_vec = |n: &str, h: &str, l: &str| {
            reg(r, prometheus::IntGaugeVec::new(Opts::new(n, h), &[l]).expect("valid metric"))
        };
        UpstreamMetrics {
            enabled: gauge("upstream_enabled", "1 while upstream (BGP FlowSpec through gobgpd) is enabled."),
            reachable: gauge(
                "upstream_reachable",
                "1 while gobgpd answered the last reconcile; 0: it did not (or none was tried yet), and the rules \
                 that should stand upstream may not.",
            ),
            announcements: gauge_vec(
                "upstream_announcements",
                "FlowSpec rules tcpguard has announced (or, in policy monitor, would), by kind: block, rate-limit, \
                 operator.",
                "kind",
            ),
            announced: counter("upstream_announced_total", "Paths added to gobgpd."),
            withdrawn: counter(
                "upstream_withdrawn_total",
                "Paths withdrawn from gobgpd (ended, or orphans of an earlier run).",
            ),
            failures: counter(
                "upstream_failures_total",
                "Reconciles with gobgpd that failed (unreachable, an error, a timeout).",
            ),
            refused: counter(
                "upstream_refused_total",
                "Rules a guardrail held back (each counted once when it starts).",
            ),
            peers: gauge_vec(
                "upstream_peer_established",
                "gobgpd's BGP peers as of the last reconcile: 1 while the session is established.",
                "peer",
            ),
        }
    }

    fn render(&self, u: Option<&crate::proto::UpstreamView>) {
        self.enabled.set(i64::from(u.is_some()));
        let Some(u) = u else { return };
        self.reachable.set(i64::from(u.reachable == Some(true)));
        for k in crate::upstream::plan::Cause::ALL {
            let n = u.announcements.iter().filter(|a| a.kind == k.as_str()).count();
            self.announcements.with_label_values(&[k.as_str()]).set(n as i64);
        }
        advance(&self.announced, u.announced_total);
        advance(&self.withdrawn, u.withdrawn_total);
        advance(&self.failures, u.failures_total);
        advance(&self.refused, u.refused_total);
        self.peers.reset();
        for p in &u.peers {
            self.peers.with_label_values(&[p.address.as_str()]).set(i64::from(p.state == "established"));
        }
    }
}

/// Concurrent metrics connections at most; more wait in the kernel's backlog.
const MAX_CONNS: usize = 64;

/// Serve `GET /metrics` over HTTP/1.1 (hyper: request parsing, keep-alive,
/// header timeouts). Anything else: 404. At most [`MAX_CONNS`] connections
/// at once, each for at most 60 s; an accept error (EMFILE, ENFILE, ENOMEM)
/// backs off instead of spinning, so the daemon's tick never starves.
pub async fn serve(listener: TcpListener, metrics: Arc<std::sync::Mutex<Metrics>>, latest: Latest) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                log::warn!("metrics: accept failed ({e}); backing off");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let latest = latest.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let obs = latest.borrow().clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &obs, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_mins(1), conn).await;
        });
    }
}

fn respond<B>(
    metrics: &std::sync::Mutex<Metrics>,
    obs: &Observation,
    req: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, ctype, body) = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        let body = metrics
            .lock()
            .map(|m| {
                m.render(obs);
                m.encode()
            })
            .unwrap_or_default();
        (hyper::StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
    } else {
        (hyper::StatusCode::NOT_FOUND, "text/plain", b"tcpguard: try GET /metrics\n".to_vec())
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

/// Bind the metrics listener (an error names the address).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr} (metrics.listen): {e}"))
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;

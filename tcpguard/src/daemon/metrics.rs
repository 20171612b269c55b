//! Prometheus metrics: a struct that owns its registry, updated once per
//! tick from the BPF counters (summed over CPUs), served on /metrics. No
//! per-address labels: top sources belong in `tcpguard status`.

use std::{net::SocketAddr, sync::Arc};

use prometheus::{
    core::Collector, Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tcpguard_common::{Counter, Counters};
use tokio::net::TcpListener;

use crate::model::{KernelView, Kind};

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
    attacks: IntCounterVec,
    blocked: IntGauge,
    block_list_entries: prometheus::IntGaugeVec,
    block_list_capacity: IntGauge,
    listeners_pressured: IntGauge,
    syncookies_forced: IntGauge,
    /// 1 while the datapath is in attack mode.
    datapath_attack: IntGauge,
    ifaces: IfaceMetrics,
    not_for_host: IntCounter,
    block_failures: IntCounter,
    attack_entries: IntCounter,
    attack_syns: IntCounter,
    xdp_cookies: IntCounter,
    xdp_cookie_acks: IntCounter,
    k_syn_recv: IntGauge,
    pub tick: Histogram,
}

fn reg<T: Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl Metrics {
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
            attack_active: gauge("attack_active", "1 while an attack is active or cooling down."),
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
            ifaces: IfaceMetrics::new(&r),
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
            xdp_cookie_acks: counter(
                "xdp_syncookie_acks_total",
                "ACKs carrying a valid SYN cookie (handshakes \
                completed through cookies).",
            ),
            k_syn_recv: gauge("kernel_syn_recv_sockets", "SYN_RECV sockets according to the kernel (sock_diag)."),
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

    /// One tick: counters advance by what the datapath counted since the
    /// previous tick (`prev`: the daemon's last reading; the maps may
    /// predate this process); `k`: the kernel's view now (gauges only: its
    /// TcpExt counters are node_exporter's).
    pub fn update(&mut self, (prev, c): (&Counters, &Counters), k: &KernelView, t: &TickFigures) {
        let TickFigures {
            half_open,
            failed_delta,
            blocked,
            block_capacity,
            block_failures,
            attack,
            forced,
            datapath_attack,
            listeners_pressured,
            ifaces,
        } = *t;
        for i in ifaces {
            self.ifaces.update(i);
        }
        self.listeners_pressured.set(listeners_pressured as i64);
        self.block_failures.inc_by(block_failures.saturating_sub(self.block_failures.get()));
        self.datapath_attack.set(i64::from(datapath_attack));
        let d = |x: Counter| c.get(x).wrapping_sub(prev.get(x));
        self.packets.inc_by(d(Counter::Packets));
        self.syn.inc_by(d(Counter::Syn));
        self.completed.inc_by(d(Counter::HandshakeCompleted) + d(Counter::CookieAckValid));
        self.attack_entries.inc_by(d(Counter::AttackEntered));
        self.attack_syns.inc_by(d(Counter::AttackSyn));
        self.xdp_cookies.inc_by(d(Counter::CookieSent));
        self.xdp_cookie_acks.inc_by(d(Counter::CookieAckValid));
        self.new_sources.inc_by(d(Counter::NewSource));
        self.not_for_host.inc_by(d(Counter::NotForHost));
        self.insert_failed.inc_by(d(Counter::SourceInsertFailed));
        self.failed.inc_by(failed_delta);
        self.dropped.with_label_values(&["blocked"]).inc_by(d(Counter::DropBlocked));
        self.dropped.with_label_values(&["blocked_other"]).inc_by(d(Counter::DropBlockedOther));
        self.dropped.with_label_values(&["rate_limited"]).inc_by(d(Counter::DropRateLimited));
        self.dropped.with_label_values(&["invalid_ack"]).inc_by(d(Counter::DropAckInvalid));
        self.would_drop.with_label_values(&["invalid_ack"]).inc_by(d(Counter::MonitorAckInvalid));
        self.would_drop.with_label_values(&["blocked"]).inc_by(d(Counter::MonitorBlocked));
        self.would_drop.with_label_values(&["rate_limited"]).inc_by(d(Counter::MonitorRateLimited));
        for x in Counter::ALL.iter().filter(|x| x.category() == tcpguard_common::Category::Pass) {
            self.passed.with_label_values(&[&x.name()["pass_".len()..]]).inc_by(d(*x));
        }
        self.half_open.set(half_open as i64);
        self.attack_active.set(i64::from(attack));
        self.blocked.set((blocked[0] + blocked[1]) as i64);
        self.block_list_entries.with_label_values(&["ipv4"]).set(blocked[0] as i64);
        self.block_list_entries.with_label_values(&["ipv6"]).set(blocked[1] as i64);
        self.block_list_capacity.set(i64::from(block_capacity));
        self.syncookies_forced.set(i64::from(forced));
        self.k_syn_recv.set(k.syn_recv as i64);
    }

    pub fn attack_started(&self, k: Kind) {
        self.attacks.with_label_values(&[k.as_str()]).inc();
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

/// What the daemon knows besides the counters, once per tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct TickFigures<'a> {
    pub half_open: u64,
    /// Handshakes that aged out as failed since the last tick.
    pub failed_delta: u64,
    /// Entries in the IPv4 and IPv6 block-lists.
    pub blocked: [usize; 2],
    /// Entries each block-list holds.
    pub block_capacity: u32,
    /// Blocks the datapath refused so far (cumulative).
    pub block_failures: u64,
    /// An attack is active or cooling down.
    pub attack: bool,
    /// tcpguard has set tcp_syncookies=2.
    pub forced: bool,
    pub datapath_attack: bool,
    /// Each interface's own figures.
    pub ifaces: &'a [IfaceFigures],
    /// Listeners under pressure.
    pub listeners_pressured: usize,
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
                "XDP_TX replies the interface's driver failed to transmit (the kernel's xdp:xdp_bulk_tx drops and \
                 xdp:xdp_exception): SYN-ACKs that never left.",
            ),
            fallbacks: counter(
                "responder_fallbacks_total",
                "Times the interface fell back from the XDP responder to the kernel's cookies because its XDP \
                 replies failed to leave.",
            ),
        }
    }

    fn update(&self, i: &IfaceFigures) {
        let l = [i.name.as_str()];
        self.attached.with_label_values(&l).set(i64::from(i.attached));
        self.attack.with_label_values(&l).set(i64::from(i.attack_mode));
        self.responder_xdp.with_label_values(&l).set(i64::from(i.responder_xdp));
        self.cookies.with_label_values(&l).inc_by(i.cookies_delta);
        self.tx_errors.with_label_values(&l).inc_by(i.tx_failed_delta);
        let f = self.fallbacks.with_label_values(&l);
        f.inc_by(i.fallbacks.saturating_sub(f.get()));
    }
}

/// One interface's figures for a tick.
#[derive(Clone, Debug, Default)]
pub struct IfaceFigures {
    pub name: String,
    /// Its XDP link is attached to it (the kernel's view).
    pub attached: bool,
    pub attack_mode: bool,
    /// Its SYNs are answered from XDP in attack mode.
    pub responder_xdp: bool,
    /// XDP SYN-ACKs and failed transmits since the last tick.
    pub cookies_delta: u64,
    pub tx_failed_delta: u64,
    /// Run-time fallbacks so far (cumulative).
    pub fallbacks: u64,
}

/// Concurrent metrics connections at most; more wait in the kernel's backlog.
const MAX_CONNS: usize = 64;

/// Serve `GET /metrics` over HTTP/1.1 (hyper: request parsing, keep-alive,
/// header timeouts). Anything else: 404. At most [`MAX_CONNS`] connections
/// at once, each for at most 60 s; an accept error (EMFILE, ENFILE, ENOMEM)
/// backs off instead of spinning, so the daemon's tick never starves.
pub async fn serve(listener: TcpListener, metrics: Arc<std::sync::Mutex<Metrics>>) {
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
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &req)) }
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
    req: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, ctype, body) = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        let body = metrics.lock().map(|m| m.encode()).unwrap_or_default();
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
mod tests {
    use super::*;

    #[test]
    fn names_and_no_address_labels() {
        let mut m = Metrics::new();
        let mut c = Counters::default();
        c.v[Counter::Syn as usize] = 10;
        c.v[Counter::DropBlocked as usize] = 3;
        let t = TickFigures {
            half_open: 7,
            failed_delta: 2,
            blocked: [1, 0],
            block_capacity: 64,
            block_failures: 2,
            attack: true,
            forced: true,
            datapath_attack: true,
            listeners_pressured: 1,
            ifaces: &[
                IfaceFigures {
                    name: "eth1".into(),
                    attached: true,
                    attack_mode: true,
                    responder_xdp: true,
                    cookies_delta: 40,
                    tx_failed_delta: 0,
                    fallbacks: 0,
                },
                IfaceFigures {
                    name: "eth2".into(),
                    attached: false,
                    attack_mode: false,
                    responder_xdp: false,
                    cookies_delta: 0,
                    tx_failed_delta: 9,
                    fallbacks: 1,
                },
            ],
        };
        let k = KernelView::default();
        m.update((&Counters::default(), &c), &k, &t);
        m.attack_started(Kind::SpoofedRandom);
        let text = String::from_utf8(m.encode()).unwrap();
        for want in [
            "tcpguard_syn_packets_total 10",
            "tcpguard_half_open_connections 7",
            "tcpguard_handshakes_failed_total 2",
            "tcpguard_dropped_packets_total{reason=\"blocked\"} 3",
            "tcpguard_attack_active 1",
            "tcpguard_attacks_total{kind=\"spoofed-random\"} 1",
            "tcpguard_blocked_prefixes 1",
            "tcpguard_block_list_entries{family=\"ipv4\"} 1",
            "tcpguard_block_list_entries{family=\"ipv6\"} 0",
            "tcpguard_block_list_capacity 64",
            "tcpguard_listeners_under_pressure 1",
            "tcpguard_syncookies_forced 1",
            "tcpguard_datapath_attack_mode 1",
            "tcpguard_datapath_attached{interface=\"eth1\"} 1",
            "tcpguard_datapath_attached{interface=\"eth2\"} 0",
            "tcpguard_interface_attack_mode{interface=\"eth1\"} 1",
            "tcpguard_interface_attack_mode{interface=\"eth2\"} 0",
            "tcpguard_interface_responder_xdp{interface=\"eth1\"} 1",
            "tcpguard_interface_responder_xdp{interface=\"eth2\"} 0",
            "tcpguard_interface_xdp_syncookies_sent_total{interface=\"eth1\"} 40",
            "tcpguard_xdp_tx_errors_total{interface=\"eth2\"} 9",
            "tcpguard_responder_fallbacks_total{interface=\"eth2\"} 1",
            "tcpguard_block_failures_total 2",
            "tcpguard_tick_duration_seconds_bucket",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("addr="), "no per-address labels");
        // The kernel's TcpExt counters are node_exporter's to export.
        assert!(!text.contains("tcpext"), "{text}");
        // Counters advance by deltas.
        let before = c;
        c.v[Counter::Syn as usize] = 15;
        m.update((&before, &c), &k, &TickFigures::default());
        assert!(String::from_utf8(m.encode()).unwrap().contains("tcpguard_syn_packets_total 15"));
    }
}

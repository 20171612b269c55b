//! `tcpguard run`: load, attach (or adopt), tick, answer, reload, shut down.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tcpguard_common::{
    halfopen::Tally, map_names, sketch, AttackState, Counter, Counters, HeavyEvent, ModeEvent, Settings,
    ATTACK_REASON_DAEMON, ATTACK_REASON_SYN_RATE, FLAG_MONITOR, FLAG_PORT_FILTER, FLAG_XDP_COOKIES,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    config::{Config, DatapathMode, PolicyMode, SynCookies},
    daemon::{
        api::{self, ApiCall},
        detect::{Assessment, Detector, Event, Phase, Sample, SourceSample},
        kernel::{self, KernelView, SavedState},
        metrics::{self, Metrics},
        notify,
        policy::{Action, Policy},
    },
    loader::{source_chain, Attachment, Datapath, LoadOptions},
    maps::{monotonic_ns, Maps},
    net::Prefix,
    proto::{AttackView, BlockView, DatapathView, InterfaceView, KernelStatus, Request, Response, SourceView, StatusView},
};

pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub socket: Option<PathBuf>,
}

struct Iface {
    name: String,
    dp: Datapath,
    att: Attachment,
}

/// What the datapath reports on its ring buffer, read as it arrives (the
/// reader task wakes on the ring buffer's notification, not on the tick).
enum DpEvent {
    /// A source reached the heavy rate.
    Heavy { addr: IpAddr, syns: u64 },
    /// An interface's datapath entered attack mode by itself.
    AttackEntered { iface: String, entered_ns: u64 },
}

/// The datapath's attack mode as the daemon last read it (all interfaces).
#[derive(Clone, Debug, Default)]
struct DpAttack {
    active: bool,
    /// Entered by the datapath itself (else by the daemon).
    by_datapath: bool,
    entered_ns: u64,
    trigger_window_ns: u64,
    first_cookie_ns: u64,
    entries: u64,
}

struct Followed {
    syns_at_report: u64,
    last_syns: u64,
    last_growth: f64,
}

struct BlockMeta {
    reason: String,
}

/// Followed heavy sources: dropped after this long without new SYNs.
const FOLLOW_SECS: f64 = 10.0;
/// At most this many followed sources (point lookups per tick).
const FOLLOW_MAX: usize = 4096;

struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    ifaces: Vec<Iface>,
    detector: Detector,
    policy: Policy,
    tally: Tally,
    followed: HashMap<IpAddr, Followed>,
    block_meta: HashMap<Prefix, BlockMeta>,
    runtime_allows: HashSet<Prefix>,
    state: SavedState,
    metrics: Arc<Mutex<Metrics>>,
    last: Option<Assessment>,
    counters: Counters,
    prev_counters: Counters,
    prev_t: f64,
    dropped_per_sec: f64,
    kernel: KernelView,
    half_open: u64,
    started: Instant,
    watchdog: bool,
    /// Seed of the datapath's per-source sketch hash (random per start).
    hash_seed: u64,
    dp_attack: DpAttack,
    /// Counters one tick before `counters`, and the time between them.
    rate_base: Counters,
    rate_dt: f64,
    /// Sum of the per-tick distinct-source estimates (attack mode).
    attack_distinct: u64,
    distinct_per_sec: f64,
}

#[derive(Clone, Copy)]
enum Sysctl {
    Syncookies,
    Timestamps,
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let mut cfg = match &opts.config_path {
        Some(p) => Config::load(p)?,
        None => {
            log::info!("no --config given: using the embedded default configuration (see config/tcpguard.toml)");
            Config::embedded()
        }
    };
    if !opts.interfaces.is_empty() {
        cfg.daemon.interfaces = opts.interfaces.clone();
    }
    if let Some(s) = &opts.socket {
        cfg.control.socket = s.clone();
    }
    if cfg.daemon.interfaces.is_empty() {
        anyhow::bail!("no interface to protect: pass --iface NAME or set daemon.interfaces in the config");
    }
    crate::daemon_check::require_capabilities()?;

    // A previous run killed while forcing sysctls: put the operator's values back.
    let mut state = kernel::load_state(&cfg.daemon.state_dir);
    if state.syncookies_original.is_some() || state.timestamps_original.is_some() {
        if let Some(orig) = state.syncookies_original.take() {
            log::warn!("a previous run left net.ipv4.tcp_syncookies forced; restoring the operator's value {orig}");
            kernel::write_syncookies(orig).context("restoring net.ipv4.tcp_syncookies")?;
        }
        if let Some(orig) = state.timestamps_original.take() {
            log::warn!("a previous run left net.ipv4.tcp_timestamps set; restoring the operator's value {orig}");
            kernel::write_timestamps(orig).context("restoring net.ipv4.tcp_timestamps")?;
        }
        kernel::save_state(&cfg.daemon.state_dir, &state)
            .with_context(|| format!("writing state in {} (daemon.state-dir)", cfg.daemon.state_dir.display()))?;
    }

    let mut ifaces = Vec::new();
    let mut readers = Vec::new();
    for name in &cfg.daemon.interfaces {
        let pin_dir = cfg.daemon.pin_root.join(name);
        let load = LoadOptions {
            half_open_entries: cfg.datapath.half_open_entries,
            source_entries: cfg.datapath.source_entries,
            pin_dir: Some(pin_dir.clone()),
        };
        let mut dp = Datapath::load(&load).with_context(|| format!("loading the datapath for {name}"))?;
        start_ebpf_logger(&mut dp, name);
        let events = dp
            .ebpf
            .take_map(map_names::EVENTS)
            .context("EVENTS map missing")
            .and_then(|m| RingBuf::try_from(m).context("EVENTS is not a ring buffer"))?;
        readers.push((name.clone(), events));
        let att = dp
            .attach_pinned(name, cfg.daemon.xdp_mode, &pin_dir.join("link"))
            .map_err(|e| anyhow::anyhow!("{e}: {}", source_chain(&e)))?;
        if att.adopted {
            log::info!("{name}: adopted the pinned XDP link of a previous run (maps and block-list kept)");
        } else {
            log::info!("{name}: XDP attached in {} mode, link and maps pinned under {}", att.mode, pin_dir.display());
        }
        ifaces.push(Iface { name: name.clone(), dp, att });
    }

    let metrics = Arc::new(Mutex::new(Metrics::new()));
    let mut d = Daemon {
        detector: Detector::new(cfg.detection.clone()),
        policy: Policy::new(cfg.policy.clone()),
        cfg,
        config_path: opts.config_path,
        ifaces,
        tally: Tally::default(),
        followed: HashMap::new(),
        block_meta: HashMap::new(),
        runtime_allows: HashSet::new(),
        state,
        metrics: metrics.clone(),
        last: None,
        counters: Counters::default(),
        prev_counters: Counters::default(),
        prev_t: 0.0,
        dropped_per_sec: 0.0,
        kernel: KernelView::default(),
        half_open: 0,
        started: Instant::now(),
        watchdog: notify::watchdog_enabled(),
        hash_seed: kernel::random_u64(),
        dp_attack: DpAttack::default(),
        rate_base: Counters::default(),
        rate_dt: 1.0,
        attack_distinct: 0,
        distinct_per_sec: 0.0,
    };
    d.apply_settings(None)?;
    // A pinned datapath may still be in attack mode from a previous run: start
    // from calm (the datapath re-enters within one window if the flood goes on).
    if d.read_dp_attack()?.active {
        log::warn!("the datapath is still in attack mode from a previous run; back to tracking (it re-enters by itself if the flood goes on)");
        for i in 0..d.ifaces.len() {
            let mut m = d.maps(i);
            let cur = m.attack()?;
            m.set_attack(&AttackState { active: 0, left_ns: monotonic_ns(), ..cur })?;
        }
    }
    d.dp_attack = d.read_dp_attack()?;
    d.sync_sysctls();
    d.counters = d.read_counters()?;
    d.prev_counters = d.counters;
    d.kernel = kernel::read_view();
    metrics.lock().expect("metrics lock").baseline(&d.counters, &d.kernel);

    if d.cfg.metrics.enabled {
        let l = metrics::bind(d.cfg.metrics.listen).await?;
        log::info!("metrics on http://{}/metrics", d.cfg.metrics.listen);
        tokio::spawn(metrics::serve(l, metrics.clone()));
    }
    let listener = api::bind(&d.cfg.control)?;
    log::info!("control socket {}", d.cfg.control.socket.display());
    let (tx, mut rx) = mpsc::channel::<ApiCall>(64);
    tokio::spawn(api::serve(listener, tx));

    let (ev_tx, mut ev_rx) = mpsc::channel::<DpEvent>(1024);
    for (name, rb) in readers {
        spawn_event_reader(name, rb, ev_tx.clone())?;
    }

    notify::notify("READY=1");
    let mut tick = tokio::time::interval(Duration::from_millis(d.cfg.daemon.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = d.tick() {
                    log::error!("tick failed: {e:#}");
                }
            }
            Some((req, reply)) = rx.recv() => {
                let _ = reply.send(d.handle(req));
            }
            Some(ev) = ev_rx.recv() => d.on_event(ev),
            _ = hup.recv() => d.reload(),
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
        }
    };
    notify::notify("STOPPING=1");
    d.shutdown();
    result
}

/// Read an interface's ring buffer as records arrive and hand them to the
/// main loop. Malformed records are skipped.
fn spawn_event_reader(iface: String, rb: RingBuf<MapData>, tx: mpsc::Sender<DpEvent>) -> Result<()> {
    // SAFETY: the ring buffer owns its fd, which stays open and unchanged
    // until the ring buffer (moved into the AsyncFd) drops.
    let mut fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .with_context(|| format!("{iface}: polling the datapath's ring buffer"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            let rb = guard.get_inner_mut();
            while let Some(item) = rb.next() {
                let ev = if item.len() == std::mem::size_of::<HeavyEvent>() {
                    // SAFETY: the datapath writes a whole HeavyEvent per record of this size.
                    let ev: HeavyEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    DpEvent::Heavy { addr: crate::maps::key_addr(&tcpguard_common::SrcKey { addr: ev.addr }), syns: ev.syns }
                } else if item.len() == std::mem::size_of::<ModeEvent>() {
                    // SAFETY: as above, a whole ModeEvent.
                    let ev: ModeEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    DpEvent::AttackEntered { iface: iface.clone(), entered_ns: ev.entered_ns }
                } else {
                    continue;
                };
                drop(item);
                // A full channel drops heavy reports (the datapath repeats
                // them every second); never blocks the reader.
                let _ = tx.try_send(ev);
            }
            guard.clear_ready();
        }
    });
    Ok(())
}

fn start_ebpf_logger(dp: &mut Datapath, iface: &str) {
    match aya_log::EbpfLogger::init(&mut dp.ebpf) {
        Ok(logger) => {
            let iface = iface.to_string();
            tokio::spawn(async move {
                // SAFETY: the logger owns its ring-buffer fd, which stays open
                // and unchanged until the logger (moved into the AsyncFd) drops.
                let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
                let Ok(mut fd) = registered else {
                    log::warn!("{iface}: cannot poll the datapath log");
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable_mut().await else { return };
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(e) => log::warn!("{iface}: datapath log records unavailable: {e}"),
    }
}

impl Daemon {
    fn maps(&mut self, i: usize) -> Maps<'_> {
        Maps::new(&mut self.ifaces[i].dp.ebpf)
    }

    fn read_counters(&mut self) -> Result<Counters> {
        let mut c = Counters::default();
        for i in 0..self.ifaces.len() {
            c.add(&self.maps(i).counters()?);
        }
        Ok(c)
    }

    /// Whether the XDP SYN-cookie responder answers in attack mode: only
    /// for policies that answer floods with cookies, in enforce mode.
    fn responder_enabled(&self) -> bool {
        self.cfg.datapath.syn_cookies == SynCookies::Xdp
            && self.cfg.datapath.mode == DatapathMode::Enforce
            && matches!(self.cfg.policy.mode, PolicyMode::Auto | PolicyMode::SynCookie)
    }

    fn allow_list(&self) -> Vec<Prefix> {
        self.cfg.datapath.allow.iter().copied().chain(self.runtime_allows.iter().copied()).collect()
    }

    /// Push the config into every interface's maps. `old` is the config
    /// being replaced (its allow/block entries that are gone are removed).
    fn apply_settings(&mut self, old: Option<&Config>) -> Result<()> {
        let p = &self.cfg.datapath;
        let mut flags = 0;
        if p.mode == DatapathMode::Monitor {
            flags |= FLAG_MONITOR;
        }
        if !p.ports.is_empty() {
            flags |= FLAG_PORT_FILTER;
        }
        if self.responder_enabled() {
            flags |= FLAG_XDP_COOKIES;
        }
        let settings = Settings {
            flags,
            _pad: 0,
            syn_rate: p.syn_rate_per_source,
            syn_burst: p.syn_burst,
            half_open_timeout_ns: p.half_open_timeout_secs * 1_000_000_000,
            heavy_syns_per_sec: self.cfg.detection.heavy_source_syn_rate,
            attack_syn_rate: p.attack_syn_rate,
            hash_seed: self.hash_seed,
            attack_sample: p.attack_sample,
            synack_wscale: u32::from(kernel::listener_wscale()),
            synack_mss4: 0,
            synack_mss6: 0,
        };
        let (ports, allow, block) = (p.ports.clone(), p.allow.clone(), p.block.clone());
        let now = monotonic_ns();
        for i in 0..self.ifaces.len() {
            // The MSS XDP SYN-ACKs advertise, from this interface's MTU.
            let mtu = kernel::iface_mtu(&self.ifaces[i].name).unwrap_or(1500).clamp(576, 65_535);
            let mut m = self.maps(i);
            // Keep the list flags as the lists say.
            let cur = m.settings()?;
            let keep = cur.flags & (tcpguard_common::FLAG_HAS_BLOCKS | tcpguard_common::FLAG_HAS_ALLOWS);
            m.set_settings(&Settings { flags: settings.flags | keep, synack_mss4: mtu - 40, synack_mss6: mtu - 60, ..settings })?;
            m.set_ports(&ports)?;
            if let Some(old) = old {
                for a in old.datapath.allow.iter().filter(|a| !allow.contains(a)) {
                    m.disallow(a)?;
                }
                for b in old.datapath.block.iter().filter(|b| !block.contains(b)) {
                    m.unblock(b)?;
                }
            }
            for a in &allow {
                m.allow(a, now)?;
            }
            for b in &block {
                m.block(b, 0)?;
            }
            m.sync_block_flag()?;
        }
        for b in &block {
            self.block_meta.insert(*b, BlockMeta { reason: "config datapath.block".into() });
        }
        Ok(())
    }

    fn reload(&mut self) {
        notify::reloading();
        let Some(path) = self.config_path.clone() else {
            log::warn!("SIGHUP: running on the embedded default config; nothing to reload (start with --config PATH)");
            notify::notify("READY=1");
            return;
        };
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, keeping the running config: {e}");
                notify::notify("READY=1");
                return;
            }
        };
        // Keys that only take effect on restart.
        let cur = &self.cfg;
        let restart_only = [
            ("daemon.interfaces", new.daemon.interfaces != cur.daemon.interfaces && !new.daemon.interfaces.is_empty()),
            ("daemon.pin-root", new.daemon.pin_root != cur.daemon.pin_root),
            ("daemon.tick-ms", new.daemon.tick_ms != cur.daemon.tick_ms),
            ("datapath.half-open-entries", new.datapath.half_open_entries != cur.datapath.half_open_entries),
            ("datapath.source-entries", new.datapath.source_entries != cur.datapath.source_entries),
            ("metrics", new.metrics != cur.metrics),
            ("control", new.control != cur.control),
        ];
        for (key, changed) in restart_only {
            if changed {
                log::warn!("reload: {key} changed; it takes effect after a restart");
            }
        }
        new.daemon.interfaces = cur.daemon.interfaces.clone();
        new.daemon.tick_ms = cur.daemon.tick_ms;
        let old = std::mem::replace(&mut self.cfg, new);
        self.detector.reconfigure(self.cfg.detection.clone());
        self.policy.cfg = self.cfg.policy.clone();
        match self.apply_settings(Some(&old)) {
            Ok(()) => log::info!("reloaded {} (policy {})", path.display(), self.cfg.policy.mode.as_str()),
            Err(e) => {
                log::error!("reload: applying the new config to the maps failed ({e:#}); restoring the old one");
                self.cfg = old;
                self.detector.reconfigure(self.cfg.detection.clone());
                self.policy.cfg = self.cfg.policy.clone();
                let _ = self.apply_settings(None);
            }
        }
        notify::notify("READY=1");
    }

    fn tick(&mut self) -> Result<()> {
        let started = Instant::now();
        let now = monotonic_ns();
        let t = now as f64 / 1e9;
        let c = self.read_counters()?;
        let mut slots = Vec::new();
        for i in 0..self.ifaces.len() {
            slots.extend(self.maps(i).half_open_slots()?);
        }
        let failed_before = self.tally.failed_total;
        self.half_open = self.tally.update(&slots, now / 1_000_000_000, self.cfg.datapath.half_open_timeout_secs);

        self.dp_attack = self.read_dp_attack()?;
        // Distinct sources since the last tick (attack mode's estimate).
        let mut regs = Vec::new();
        for i in 0..self.ifaces.len() {
            let mut m = self.maps(i);
            regs.extend(m.hll()?);
            m.clear_hll()?;
        }
        let distinct = sketch::hll_estimate(&sketch::hll_merge(regs.iter()));
        self.attack_distinct += distinct.round() as u64;
        self.distinct_per_sec = distinct / (t - self.prev_t).max(1e-3);
        // Point lookups of the followed sources only: cost grows with the
        // number of heavy sources, not with the size of the source table.
        let mut sources = Vec::with_capacity(self.followed.len());
        let addrs: Vec<IpAddr> = self.followed.keys().copied().collect();
        for addr in addrs {
            let mut total = tcpguard_common::SrcStats::default();
            let mut found = false;
            for i in 0..self.ifaces.len() {
                if let Some(s) = self.maps(i).source(addr)? {
                    found = true;
                    total.syns += s.syns;
                    total.completed += s.completed;
                    total.half_open += s.half_open;
                }
            }
            let f = self.followed.get_mut(&addr).expect("key from the map");
            if !found {
                f.last_growth = f64::MIN;
                continue;
            }
            if total.syns > f.last_syns {
                f.last_syns = total.syns;
                f.last_growth = t;
            }
            sources.push(SourceSample {
                addr,
                syns: total.syns,
                completed: total.completed,
                half_open: total.half_open,
                syns_at_report: f.syns_at_report,
            });
        }
        self.followed.retain(|_, f| t - f.last_growth < FOLLOW_SECS);
        if self.followed.len() > FOLLOW_MAX {
            let mut v: Vec<(IpAddr, f64)> = self.followed.iter().map(|(a, f)| (*a, f.last_growth)).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (a, _) in v.into_iter().skip(FOLLOW_MAX) {
                self.followed.remove(&a);
            }
        }

        let a = self.detector.step(Sample {
            t,
            syn: c.get(Counter::Syn),
            // A blocked flood is an ongoing (mitigated) attack, not a finished one.
            blocked: c.get(Counter::DropBlocked),
            // Handshakes completed through the tracker, and through cookies.
            completed: c.get(Counter::HandshakeCompleted) + c.get(Counter::CookieAckValid),
            // Attack mode inserts no source: its distinct-source estimate
            // stands in for the table's new entries.
            new_sources: c.get(Counter::NewSource) + self.attack_distinct,
            half_open: self.half_open,
            sources,
        });
        match a.event {
            Some(Event::Started(k)) => {
                self.metrics.lock().expect("metrics lock").attack_started(k);
                let ev: Vec<String> = a.evidence.iter().map(|e| format!("{} {:.2} (threshold {:.2})", e.rule, e.observed, e.threshold)).collect();
                log::warn!("attack started: {} — {}", k.as_str(), ev.join(", "));
            }
            Some(Event::Ended(k)) => log::warn!("attack over: {} (quiet for {} s)", k.as_str(), self.cfg.detection.hold_down_secs),
            None => {}
        }

        // Expire timed blocks (the datapath already ignores them).
        let blocks = if self.ifaces.is_empty() { Vec::new() } else { self.maps(0).blocks()? };
        let mut blocked: HashSet<Prefix> = HashSet::new();
        for (p, e) in &blocks {
            if e.expires_ns != 0 && e.expires_ns <= now {
                for i in 0..self.ifaces.len() {
                    self.maps(i).unblock(p)?;
                }
                self.block_meta.remove(p);
                log::info!("block on {p} expired");
            } else {
                blocked.insert(*p);
            }
        }
        let daemon_blocks = self.block_meta.values().filter(|m| m.reason.starts_with("heavy source")).count();
        let acts = self.policy.decide(&a, &self.allow_list(), &blocked, daemon_blocks);
        for act in acts {
            self.apply(act, now, &mut blocked);
        }
        self.steer_attack_mode(&a, now);
        self.sync_sysctls();

        self.kernel = kernel::read_view();
        let dt = (t - self.prev_t).max(1e-3);
        let drops = |c: &Counters| c.get(Counter::DropBlocked) + c.get(Counter::DropRateLimited) + c.get(Counter::DropAckInvalid);
        self.dropped_per_sec = drops(&c).saturating_sub(drops(&self.prev_counters)) as f64 / dt;
        self.rate_base = self.prev_counters;
        self.rate_dt = dt;
        self.prev_counters = c;
        self.prev_t = t;
        self.counters = c;
        {
            let mut m = self.metrics.lock().expect("metrics lock");
            let active = matches!(a.phase, Phase::Active | Phase::CoolingDown);
            m.update(&c, self.half_open, self.tally.failed_total - failed_before, &self.kernel, blocked.len(), active, self.policy.cookies_forced);
            m.datapath_attack.set(i64::from(self.dp_attack.active));
            m.tick.observe(started.elapsed().as_secs_f64());
        }
        self.last = Some(a);
        if self.watchdog {
            notify::notify("WATCHDOG=1");
        }
        Ok(())
    }

    fn apply(&mut self, act: Action, now: u64, blocked: &mut HashSet<Prefix>) {
        match act {
            Action::Block { prefix, ttl_secs, reason } => {
                let exp = now + ttl_secs * 1_000_000_000;
                for i in 0..self.ifaces.len() {
                    if let Err(e) = self.maps(i).block(&prefix, exp) {
                        log::error!("blocking {prefix}: {e}");
                    }
                }
                log::warn!("blocked {prefix} for {ttl_secs} s: {reason}");
                self.block_meta.insert(prefix, BlockMeta { reason });
                blocked.insert(prefix);
            }
            // Applied with the responder's needs in `sync_sysctls`.
            Action::ForceCookies | Action::RestoreCookies => {}
        }
    }

    fn read_dp_attack(&mut self) -> Result<DpAttack> {
        let mut out = DpAttack::default();
        for i in 0..self.ifaces.len() {
            let a = self.maps(i).attack()?;
            out.entries += a.entries;
            if a.active != 0 && (!out.active || a.entered_ns < out.entered_ns) {
                out.active = true;
                out.by_datapath = a.reason == ATTACK_REASON_SYN_RATE;
                out.entered_ns = a.entered_ns;
                out.trigger_window_ns = a.trigger_window_ns;
            }
            if a.active != 0 && a.first_cookie_ns != 0 && (out.first_cookie_ns == 0 || a.first_cookie_ns < out.first_cookie_ns) {
                out.first_cookie_ns = a.first_cookie_ns;
            }
        }
        Ok(out)
    }

    /// A record from the datapath's ring buffer.
    fn on_event(&mut self, ev: DpEvent) {
        match ev {
            DpEvent::Heavy { addr, syns } => {
                let t = monotonic_ns() as f64 / 1e9;
                self.followed.entry(addr).or_insert(Followed { syns_at_report: syns, last_syns: syns, last_growth: t });
            }
            DpEvent::AttackEntered { iface, entered_ns } => {
                let age_ms = monotonic_ns().saturating_sub(entered_ns) as f64 / 1e6;
                log::warn!("{iface}: the datapath entered attack mode (SYN rate over datapath.attack-syn-rate); noticed {age_ms:.1} ms later");
                // Arm the responder now, not at the next tick.
                self.dp_attack.active = true;
                self.sync_sysctls();
            }
        }
    }

    /// The daemon's side of the datapath's attack mode: it confirms an entry
    /// (the detector declares the attack), puts the datapath in attack mode
    /// for attacks under the datapath's own threshold, and ends it when the
    /// attack is over, or when an entry is not confirmed within the
    /// hold-down.
    fn steer_attack_mode(&mut self, a: &Assessment, now: u64) {
        let attack = matches!(a.phase, Phase::Active | Phase::CoolingDown);
        let hold_ns = (self.cfg.detection.hold_down_secs * 1e9) as u64;
        let want = if attack {
            true
        } else if self.dp_attack.active {
            // Unconfirmed: keep it for the hold-down after entry, then leave.
            a.phase == Phase::Pending || now.saturating_sub(self.dp_attack.entered_ns) < hold_ns
        } else {
            false
        };
        if want == self.dp_attack.active {
            return;
        }
        for i in 0..self.ifaces.len() {
            let mut m = self.maps(i);
            let r = m.attack().and_then(|cur| {
                let next = if want {
                    AttackState { active: 1, reason: ATTACK_REASON_DAEMON, entered_ns: now, first_cookie_ns: 0, ..cur }
                } else {
                    AttackState { active: 0, left_ns: now, ..cur }
                };
                m.set_attack(&next)
            });
            if let Err(e) = r {
                log::error!("{}: setting the datapath's attack mode: {e}", self.ifaces[i].name);
            }
        }
        if want {
            log::warn!("datapath attack mode on (the daemon detected an attack)");
            self.dp_attack = DpAttack { active: true, by_datapath: false, entered_ns: now, ..self.dp_attack.clone() };
        } else {
            let why = if matches!(a.event, Some(Event::Ended(_))) { "the attack is over" } else { "not confirmed by the detector" };
            log::warn!("datapath attack mode off ({why})");
            self.dp_attack.active = false;
        }
    }

    /// Whether the XDP responder is answering now (attack mode on, and on
    /// for this policy).
    fn responder_armed(&self) -> bool {
        self.dp_attack.active && self.responder_enabled()
    }

    /// Put the sysctls where the mitigations need them: tcp_syncookies=2
    /// while the policy forces cookies or the XDP responder answers (the
    /// kernel makes cookies for it only then), tcp_timestamps=2 while the
    /// responder answers (the option encoding needs it). The operator's
    /// values are saved on disk first and restored after.
    fn sync_sysctls(&mut self) {
        let armed = self.responder_armed();
        let want_cookies = self.policy.cookies_forced || armed;
        let r = self.set_sysctl(Sysctl::Syncookies, want_cookies).and_then(|()| self.set_sysctl(Sysctl::Timestamps, armed));
        if let Err(e) = r {
            log::error!("{e:#}");
        }
    }

    fn set_sysctl(&mut self, which: Sysctl, on: bool) -> Result<()> {
        let (name, saved) = match which {
            Sysctl::Syncookies => ("net.ipv4.tcp_syncookies", self.state.syncookies_original),
            Sysctl::Timestamps => ("net.ipv4.tcp_timestamps", self.state.timestamps_original),
        };
        let (read, write): (fn() -> std::io::Result<u8>, fn(u8) -> std::io::Result<()>) = match which {
            Sysctl::Syncookies => (kernel::read_syncookies, kernel::write_syncookies),
            Sysctl::Timestamps => (kernel::read_timestamps, kernel::write_timestamps),
        };
        match (on, saved) {
            (true, None) => {
                let cur = read().with_context(|| format!("reading {name}"))?;
                if cur == 2 {
                    return Ok(());
                }
                // Remember the operator's value on disk before changing it.
                match which {
                    Sysctl::Syncookies => self.state.syncookies_original = Some(cur),
                    Sysctl::Timestamps => self.state.timestamps_original = Some(cur),
                }
                kernel::save_state(&self.cfg.daemon.state_dir, &self.state)
                    .with_context(|| format!("saving state in {}", self.cfg.daemon.state_dir.display()))?;
                write(2).with_context(|| format!("setting {name}=2"))?;
                log::warn!("{name}=2 (was {cur})");
            }
            (false, Some(orig)) => {
                write(orig).with_context(|| format!("restoring {name}={orig}"))?;
                log::warn!("{name} restored to {orig}");
                match which {
                    Sysctl::Syncookies => self.state.syncookies_original = None,
                    Sysctl::Timestamps => self.state.timestamps_original = None,
                }
                kernel::save_state(&self.cfg.daemon.state_dir, &self.state)
                    .with_context(|| format!("saving state in {}", self.cfg.daemon.state_dir.display()))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        // Leave attack mode: with no daemon to end it, it must not outlive us.
        if self.dp_attack.active {
            for i in 0..self.ifaces.len() {
                let mut m = self.maps(i);
                let r = m.attack().and_then(|cur| m.set_attack(&AttackState { active: 0, left_ns: monotonic_ns(), ..cur }));
                if let Err(e) = r {
                    log::error!("leaving attack mode: {e}");
                }
            }
            self.dp_attack.active = false;
        }
        self.policy.cookies_forced = false;
        self.sync_sysctls();
        let stay = self.cfg.daemon.stay_attached;
        for iface in &mut self.ifaces {
            iface.dp.release(&iface.att.link_pin, stay);
            if stay {
                log::info!("{}: staying attached (daemon.stay-attached); the next start adopts the link", iface.name);
            } else {
                log::info!("{}: detached", iface.name);
            }
        }
        self.ifaces.clear();
        api::remove(&self.cfg.control.socket);
    }

    fn handle(&mut self, req: Request) -> Response {
        let r = match req {
            Request::Status => self.status().map(|s| Response::Status(Box::new(s))),
            Request::Top { limit } => self.top(limit).map(|sources| Response::Top { sources }),
            Request::Block { prefix, ttl_secs } => self.operator_block(prefix, ttl_secs),
            Request::Unblock { prefix } => self.operator_unblock(prefix),
            Request::Allow { prefix } => self.operator_allow(prefix),
        };
        r.unwrap_or_else(|e| Response::Error { message: format!("{e:#}") })
    }

    fn operator_block(&mut self, prefix: Prefix, ttl: Option<u64>) -> Result<Response> {
        if let Some(a) = self.allow_list().iter().find(|a| a.contains(prefix.addr)) {
            return Ok(Response::Error { message: format!("{prefix} is allow-listed by {a}; the allow-list always wins, so a block would have no effect") });
        }
        let exp = ttl.map_or(0, |s| monotonic_ns() + s * 1_000_000_000);
        for i in 0..self.ifaces.len() {
            self.maps(i).block(&prefix, exp)?;
        }
        self.block_meta.insert(prefix, BlockMeta { reason: "operator".into() });
        let until = ttl.map_or("until unblocked".to_string(), |s| format!("for {s} s"));
        log::info!("operator blocked {prefix} {until}");
        Ok(Response::Done { message: format!("blocked {prefix} {until}") })
    }

    fn operator_unblock(&mut self, prefix: Prefix) -> Result<Response> {
        let mut any = false;
        for i in 0..self.ifaces.len() {
            any |= self.maps(i).unblock(&prefix)?;
        }
        self.block_meta.remove(&prefix);
        Ok(if any {
            log::info!("operator unblocked {prefix}");
            Response::Done { message: format!("unblocked {prefix}") }
        } else {
            Response::Error { message: format!("{prefix} is not blocked (see `tcpguard status` for the list)") }
        })
    }

    fn operator_allow(&mut self, prefix: Prefix) -> Result<Response> {
        let now = monotonic_ns();
        for i in 0..self.ifaces.len() {
            self.maps(i).allow(&prefix, now)?;
        }
        self.runtime_allows.insert(prefix);
        log::info!("operator allowed {prefix}");
        Ok(Response::Done { message: format!("allowed {prefix}: always passes, never blocked or rate limited (until restart; add it to datapath.allow to keep it)") })
    }

    fn top(&mut self, limit: usize) -> Result<Vec<SourceView>> {
        let mut by: HashMap<IpAddr, SourceView> = HashMap::new();
        for i in 0..self.ifaces.len() {
            for (addr, s) in self.maps(i).sources()? {
                let v = by.entry(addr).or_insert(SourceView { addr, syn_per_sec: 0.0, syns: 0, completed: 0, half_open: 0, dropped: 0 });
                v.syns += s.syns;
                v.completed += s.completed;
                v.half_open += s.half_open;
                v.dropped += s.dropped;
            }
        }
        if let Some(a) = &self.last {
            for h in &a.heavy {
                if let Some(v) = by.get_mut(&h.addr) {
                    v.syn_per_sec = h.syn_per_sec;
                }
            }
        }
        let mut v: Vec<SourceView> = by.into_values().collect();
        v.sort_by(|a, b| b.syn_per_sec.total_cmp(&a.syn_per_sec).then(b.syns.cmp(&a.syns)));
        v.truncate(limit);
        Ok(v)
    }

    fn datapath_view(&self) -> DatapathView {
        let d = &self.dp_attack;
        let now = monotonic_ns();
        let ms = |a: u64, b: u64| (a >= b && b != 0).then(|| (a - b) as f64 / 1e6);
        let responder = if !self.responder_enabled() {
            match self.cfg.datapath.syn_cookies {
                SynCookies::Kernel => "kernel".to_string(),
                SynCookies::Xdp => format!("off (policy {}, datapath {})", self.policy.mode().as_str(), if self.cfg.datapath.mode == DatapathMode::Monitor { "monitor" } else { "enforce" }),
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
            distinct_sources_per_sec: self.distinct_per_sec,
            sample_one_in: self.cfg.datapath.attack_sample,
        }
    }

    /// A counter's rate over the last tick.
    fn counter_rate(&self, c: Counter) -> f64 {
        self.counters.get(c).saturating_sub(self.rate_base.get(c)) as f64 / self.rate_dt.max(1e-3)
    }

    fn status(&mut self) -> Result<StatusView> {
        let now = monotonic_ns();
        let blocks = if self.ifaces.is_empty() { Vec::new() } else { self.maps(0).blocks()? };
        let blocked = blocks
            .into_iter()
            .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
            .map(|(prefix, e)| BlockView {
                prefix,
                expires_in_secs: (e.expires_ns != 0).then(|| (e.expires_ns - now) as f64 / 1e9),
                reason: self.block_meta.get(&prefix).map_or_else(|| "kept from a previous run (pinned)".into(), |m| m.reason.clone()),
            })
            .collect();
        let a = self.last.clone();
        let (attack, rates, top) = match &a {
            Some(a) => {
                let active = matches!(a.phase, Phase::Active | Phase::CoolingDown);
                let mut mitigation = Vec::new();
                if self.responder_armed() {
                    mitigation.push("SYNs to listeners answered from XDP with the kernel's SYN cookies; invalid ACKs dropped".into());
                }
                if self.state.syncookies_original.is_some() {
                    mitigation.push(format!(
                        "SYN cookies forced (tcp_syncookies=2, restores to {})",
                        self.state.syncookies_original.map_or("?".into(), |v| v.to_string())
                    ));
                }
                if active && a.kind == Some(crate::daemon::detect::Kind::FewHeavySources) && matches!(self.policy.mode(), crate::config::PolicyMode::Drop | crate::config::PolicyMode::Auto) {
                    mitigation.push("heavy sources blocked in XDP".into());
                }
                if active && self.policy.mode() == crate::config::PolicyMode::Monitor {
                    mitigation.push("none (policy monitor)".into());
                }
                let top: Vec<SourceView> = a
                    .heavy
                    .iter()
                    .take(10)
                    .map(|h| SourceView { addr: h.addr, syn_per_sec: h.syn_per_sec, syns: 0, completed: h.completed, half_open: h.half_open, dropped: 0 })
                    .collect();
                (
                    AttackView {
                        active,
                        phase: a.phase,
                        kind: a.kind,
                        since_secs: a.since,
                        evidence: a.evidence.clone(),
                        mitigation,
                        attacks_total: self.metrics.lock().expect("metrics lock").attacks_total(),
                    },
                    a.rates.clone(),
                    top,
                )
            }
            None => (AttackView::default(), Default::default(), Vec::new()),
        };
        let counters: BTreeMap<String, u64> = Counter::ALL.iter().map(|c| (c.name().to_string(), self.counters.get(*c))).collect();
        Ok(StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            interfaces: self.ifaces.iter().map(|i| InterfaceView { name: i.name.clone(), xdp_mode: i.att.mode.into(), adopted: i.att.adopted }).collect(),
            policy: self.policy.mode().as_str().into(),
            datapath_mode: match self.cfg.datapath.mode {
                DatapathMode::Enforce => "enforce".into(),
                DatapathMode::Monitor => "monitor".into(),
            },
            uptime_secs: self.started.elapsed().as_secs_f64(),
            attack,
            datapath: self.datapath_view(),
            half_open: self.half_open,
            handshakes_failed: self.tally.failed_total,
            syn_per_sec: rates.syn_per_sec,
            completed_per_sec: rates.completed_per_sec,
            completion_ratio: rates.completion_ratio,
            new_sources_per_sec: rates.new_sources_per_sec,
            dropped_per_sec: self.dropped_per_sec,
            blocked,
            allowed: self.allow_list(),
            top_sources: top,
            kernel: KernelStatus {
                view: self.kernel.clone(),
                syncookies_forced: self.policy.cookies_forced,
                syncookies_original: self.state.syncookies_original,
                timestamps_original: self.state.timestamps_original,
            },
            counters,
        })
    }
}

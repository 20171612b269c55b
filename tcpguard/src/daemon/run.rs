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
    halfopen::Tally, map_names, Counter, Counters, HeavyEvent, Settings, FLAG_MONITOR, FLAG_PORT_FILTER, FLAG_XDP_COOKIES,
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
    proto::{AttackView, BlockView, InterfaceView, KernelStatus, Request, Response, SourceView, StatusView},
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
    events: RingBuf<MapData>,
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

    // A previous run killed while forcing SYN cookies: put the operator's value back.
    let mut state = kernel::load_state(&cfg.daemon.state_dir);
    if let Some(orig) = state.syncookies_original.take() {
        log::warn!("a previous run left net.ipv4.tcp_syncookies forced; restoring the operator's value {orig}");
        kernel::write_syncookies(orig).context("restoring net.ipv4.tcp_syncookies")?;
        kernel::save_state(&cfg.daemon.state_dir, &state)
            .with_context(|| format!("writing state in {} (daemon.state-dir)", cfg.daemon.state_dir.display()))?;
    }

    let mut ifaces = Vec::new();
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
        let att = dp
            .attach_pinned(name, cfg.daemon.xdp_mode, &pin_dir.join("link"))
            .map_err(|e| anyhow::anyhow!("{e}: {}", source_chain(&e)))?;
        if att.adopted {
            log::info!("{name}: adopted the pinned XDP link of a previous run (maps and block-list kept)");
        } else {
            log::info!("{name}: XDP attached in {} mode, link and maps pinned under {}", att.mode, pin_dir.display());
        }
        ifaces.push(Iface { name: name.clone(), dp, att, events });
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
    };
    d.apply_settings(None)?;
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
            _ = hup.recv() => d.reload(),
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
        }
    };
    notify::notify("STOPPING=1");
    d.shutdown();
    result
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

        // Heavy-source reports from the datapath.
        for iface in &mut self.ifaces {
            while let Some(item) = iface.events.next() {
                if item.len() < std::mem::size_of::<HeavyEvent>() {
                    continue;
                }
                // SAFETY: the datapath writes a whole HeavyEvent per record.
                let ev: HeavyEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let addr = crate::maps::key_addr(&tcpguard_common::SrcKey { addr: ev.addr });
                self.followed.entry(addr).or_insert(Followed { syns_at_report: ev.syns, last_syns: ev.syns, last_growth: t });
            }
        }
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
            completed: c.get(Counter::HandshakeCompleted),
            new_sources: c.get(Counter::NewSource),
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

        self.kernel = kernel::read_view();
        let dt = (t - self.prev_t).max(1e-3);
        let drops = |c: &Counters| c.get(Counter::DropBlocked) + c.get(Counter::DropRateLimited);
        self.dropped_per_sec = drops(&c).saturating_sub(drops(&self.prev_counters)) as f64 / dt;
        self.prev_counters = c;
        self.prev_t = t;
        self.counters = c;
        {
            let mut m = self.metrics.lock().expect("metrics lock");
            let active = matches!(a.phase, Phase::Active | Phase::CoolingDown);
            m.update(&c, self.half_open, self.tally.failed_total - failed_before, &self.kernel, blocked.len(), active, self.policy.cookies_forced);
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
            Action::ForceCookies => {
                if let Err(e) = self.force_cookies() {
                    log::error!("forcing SYN cookies failed: {e:#}");
                    self.policy.cookies_forced = false;
                }
            }
            Action::RestoreCookies => self.restore_cookies(),
        }
    }

    fn force_cookies(&mut self) -> Result<()> {
        let cur = kernel::read_syncookies().context("reading net.ipv4.tcp_syncookies")?;
        if self.state.syncookies_original.is_none() {
            // Remember the operator's value on disk before changing it.
            self.state.syncookies_original = Some(cur);
            kernel::save_state(&self.cfg.daemon.state_dir, &self.state)
                .with_context(|| format!("saving state in {}", self.cfg.daemon.state_dir.display()))?;
        }
        kernel::write_syncookies(2).context("setting net.ipv4.tcp_syncookies=2")?;
        log::warn!("SYN cookies forced: net.ipv4.tcp_syncookies=2 (was {cur})");
        Ok(())
    }

    fn restore_cookies(&mut self) {
        if let Some(orig) = self.state.syncookies_original {
            match kernel::write_syncookies(orig) {
                Ok(()) => {
                    log::warn!("SYN cookies restored: net.ipv4.tcp_syncookies={orig}");
                    self.state.syncookies_original = None;
                    if let Err(e) = kernel::save_state(&self.cfg.daemon.state_dir, &self.state) {
                        log::error!("saving state: {e}");
                    }
                }
                Err(e) => log::error!("restoring net.ipv4.tcp_syncookies={orig}: {e}"),
            }
        }
    }

    fn shutdown(&mut self) {
        self.restore_cookies();
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
                if self.policy.cookies_forced {
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
            },
            counters,
        })
    }
}

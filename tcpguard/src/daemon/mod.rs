//! `tcpguard run`: the daemon's lifecycle. Load and attach (or adopt) a
//! datapath per interface, then one select loop: the tick (sample → detect
//! → decide → apply → publish), control requests, datapath events, signals
//! (SIGHUP reloads, SIGTERM/SIGINT stop), and a clean shutdown.
//!
//! One job per module: `datapaths` (the per-interface fan-out), `events`
//! (ring buffer and log readers), `sample` (maps → detect::Sample),
//! `detect` (pure), `policy` (pure), `mitigate` (blocks, attack mode,
//! sysctls), `control` (requests → responses), `metrics`, `kernel`,
//! `notify`, `api` (the control socket).

pub mod api;
mod control;
pub mod datapaths;
pub mod detect;
mod events;
pub mod host;
pub mod kernel;
pub mod listeners;
pub mod metrics;
mod mitigate;
pub mod notify;
pub mod policy;
pub mod responder;
mod sample;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tcpguard_common::{Counter, Counters, Settings, FLAG_MONITOR, FLAG_PORT_FILTER, FLAG_XDP_COOKIES};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    config::{Config, DatapathMode, PolicyMode, SynCookies},
    daemon::{
        api::ApiCall,
        datapaths::Datapaths,
        detect::{Assessment, Detector, Event, Phase},
        events::DpEvent,
        kernel::KernelView,
        metrics::Metrics,
        mitigate::Mitigator,
        policy::Policy,
        sample::Sampler,
    },
    maps::monotonic_ns,
    model::BlockOrigin,
    net::Prefix,
};

pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub socket: Option<PathBuf>,
}

pub(crate) struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    dps: Datapaths,
    detector: Detector,
    policy: Policy,
    sampler: Sampler,
    mitigator: Mitigator,
    metrics: Arc<Mutex<Metrics>>,
    /// The last tick's assessment and readings.
    last: Option<Assessment>,
    counters: Counters,
    /// Counters one tick before `counters`, and the time between them.
    rate_base: Counters,
    rate_dt: f64,
    prev_t: f64,
    dropped_per_sec: f64,
    kernel: KernelView,
    started: Instant,
    watchdog: bool,
    /// Seed of the datapath's per-source sketch hash (random per start).
    hash_seed: u64,
    /// Attacks declared since start.
    attacks_total: u64,
    /// The status snapshot, published once per tick.
    status_tx: tokio::sync::watch::Sender<Arc<crate::proto::StatusView>>,
}

/// The configuration to run: the file (or the embedded default) with the
/// command line's interfaces and socket on top.
fn effective_config(opts: &RunOptions) -> Result<Config> {
    let mut cfg = if let Some(p) = &opts.config_path {
        Config::load(p)?
    } else {
        log::info!("no --config given: using the embedded default configuration (see config/tcpguard.toml)");
        Config::embedded()
    };
    if !opts.interfaces.is_empty() {
        cfg.daemon.interfaces.clone_from(&opts.interfaces);
        // The command line's interfaces meet the config's checks too.
        if let Err((key, reason)) = cfg.check() {
            return Err(crate::config::ConfigError::Invalid { origin: "--iface".into(), key, reason }.into());
        }
    }
    if let Some(s) = &opts.socket {
        cfg.control.socket.clone_from(s);
    }
    if cfg.daemon.interfaces.is_empty() {
        return Err(crate::config::ConfigError::Invalid {
            origin: opts.config_path.as_ref().map_or_else(|| "embedded default".into(), |p| p.display().to_string()),
            key: "daemon.interfaces",
            reason: "no interface to protect: set the interfaces to attach to (or pass --iface NAME)".into(),
        }
        .into());
    }
    Ok(cfg)
}

/// How the daemon loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT: detached unless daemon.stay-attached.
    Clean,
    /// SIGUSR2: exited leaving XDP attached for the next start to adopt (a
    /// restart without an unprotected gap, e.g. after a package upgrade).
    Handover,
}

pub async fn run(opts: RunOptions) -> Result<Stopped> {
    let cfg = effective_config(&opts)?;
    crate::daemon_check::require_capabilities()?;
    // One daemon per host (per state directory), before anything is touched.
    let _lock = kernel::lock_instance(&cfg.daemon.state_dir)
        .with_context(|| format!("locking {} (daemon.state-dir)", cfg.daemon.state_dir.display()))?;
    // What a previous run left changed (restored below, once the datapath
    // no longer answers from XDP).
    let mitigator = Mitigator::start(cfg.daemon.state_dir.clone());
    let (mut dps, readers) = Datapaths::open(&cfg, events::start_logger)?;
    let mut mitigator = mitigator;
    mitigator.block_capacity = block_list_capacity(&mut dps, &cfg)?;
    if kernel::private_bpffs(&cfg.daemon.pin_root) {
        log::warn!(
            "the bpf filesystem under {} is private to this process's mount namespace (e.g. under `ip netns exec`): \
             its pins vanish when it exits, so a crash would not leave the host protected; run it as a service, or \
             with `nsenter --net=...` for a network namespace",
            cfg.daemon.pin_root.display()
        );
    }
    let metrics = Arc::new(Mutex::new(Metrics::new()));
    let mut d = Daemon {
        detector: Detector::new(cfg.detection.clone()),
        policy: Policy::new(cfg.policy.clone()),
        cfg,
        config_path: opts.config_path,
        dps,
        sampler: Sampler::default(),
        mitigator,
        metrics: metrics.clone(),
        last: None,
        counters: Counters::default(),
        rate_base: Counters::default(),
        rate_dt: 1.0,
        prev_t: 0.0,
        dropped_per_sec: 0.0,
        kernel: KernelView::default(),
        started: Instant::now(),
        watchdog: notify::watchdog_enabled(),
        hash_seed: kernel::random_u64(),
        attacks_total: 0,
        status_tx: tokio::sync::watch::channel(Arc::new(crate::proto::StatusView::default())).0,
    };
    d.dps.follow_host();
    // Written with the responder held back: this daemon lets it answer once
    // it knows the sysctls are in effect.
    d.apply_settings(None)?;
    if d.dps.attack()?.active {
        // A handover (SIGUSR2) or a crash in attack mode: adopt it as it is,
        // sysctls included (state.json has the operator's values), so that
        // connections whose cookies were made under them still complete. It
        // is held for the hold-down unless the detector confirms the attack.
        log::warn!(
            "the datapath is in attack mode from a previous run: adopted, with the sysctls it needs (restored when \
             it ends)"
        );
        d.mitigator.adopt_attack_mode(&mut d.dps, monotonic_ns());
    } else {
        // Sysctls a killed run left changed: put back now that no datapath
        // answers from XDP (a pinned one could until the settings above).
        d.mitigator.restore_saved()?;
    }
    d.mitigator.dp_attack = d.dps.attack()?;
    d.sync_sysctls();
    d.counters = d.dps.counters()?;
    d.rate_base = d.counters;
    d.kernel = kernel::read_view(listeners::read().map_or(0, |(_, n)| n));

    if d.cfg.metrics.enabled {
        let l = metrics::bind(d.cfg.metrics.listen).await?;
        log::info!("metrics on http://{}/metrics", d.cfg.metrics.listen);
        tokio::spawn(metrics::serve(l, metrics.clone()));
    }
    let listener = api::bind(&d.cfg.control)?;
    log::info!("control socket {}", d.cfg.control.socket.display());
    let (tx, mut rx) = mpsc::channel::<ApiCall>(64);
    d.publish_snapshot();
    let top_tables: Vec<PathBuf> = d
        .dps
        .ifaces()
        .iter()
        .map(|i| d.cfg.daemon.pin_root.join(&i.name).join(tcpguard_common::map_names::SRC_STATS))
        .collect();
    tokio::spawn(api::serve(listener, tx, d.status_tx.subscribe(), Arc::new(top_tables)));
    let (ev_tx, mut ev_rx) = mpsc::channel::<DpEvent>(1024);
    for (name, rb) in readers {
        events::spawn_reader(name, rb, ev_tx.clone())?;
    }

    notify::notify("READY=1");
    let result = d.serve(&mut rx, &mut ev_rx).await;
    notify::notify("STOPPING=1");
    let handover = matches!(result, Ok(Stopped::Handover));
    if handover {
        log::info!("SIGUSR2: handing over; XDP stays attached for the next start to adopt");
    }
    d.shutdown(handover);
    result
}

/// The block-lists' real size; a pinned list of another size than the
/// config's is kept (with its blocks) and reported.
fn block_list_capacity(dps: &mut Datapaths, cfg: &Config) -> Result<u32> {
    let cap = dps.block_list_capacity()?;
    if cap != cfg.datapath.block_list_entries {
        log::warn!(
            "the pinned block-lists hold {cap} entries each, not datapath.block-list-entries = {}: a pinned list keeps \
             its size; to resize, stop tcpguard and remove BLOCK_V4 and BLOCK_V6 under {}/<iface>/ (their blocks \
             go with them)",
            cfg.datapath.block_list_entries,
            cfg.daemon.pin_root.display()
        );
    }
    Ok(cap)
}

impl Daemon {
    /// The daemon loop: ticks, control requests, datapath events and signals,
    /// until SIGTERM, SIGINT or SIGUSR2.
    async fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<ApiCall>,
        ev_rx: &mut mpsc::Receiver<DpEvent>,
    ) -> Result<Stopped> {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.daemon.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.tick() {
                        log::error!("tick failed: {e:#}");
                    }
                }
                Some((req, reply)) = rx.recv() => {
                    let _ = reply.send(self.handle(&req));
                    // What the operator changed shows in `status` at once.
                    self.publish_snapshot();
                }
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                _ = hup.recv() => self.reload(),
                _ = term.recv() => return Ok(Stopped::Clean),
                _ = int.recv() => return Ok(Stopped::Clean),
                _ = usr2.recv() => return Ok(Stopped::Handover),
            }
        }
    }

    /// One tick: sample → detect → decide → apply → publish.
    fn tick(&mut self) -> Result<()> {
        let started = Instant::now();
        let now = monotonic_ns();
        let t = now as f64 / 1e9;
        self.mitigator.dp_attack = self.dps.attack()?;
        let mut reading = self.sampler.read(
            &mut self.dps,
            (t, now),
            self.cfg.datapath.half_open_timeout_secs,
            &self.cfg.datapath.ports,
        )?;
        let a = self.detector.step(std::mem::take(&mut reading.sample));
        self.log_event(&a);
        let mut blocked = self.mitigator.expire_blocks(&mut self.dps, now)?;
        let acts = self.policy.decide(&a, &self.allow_list(), &blocked, self.mitigator.daemon_blocks());
        self.mitigator.apply(&mut self.dps, acts, now, &mut blocked);
        let hold = self.cfg.detection.hold_down_secs;
        self.mitigator.steer_attack_mode(&mut self.dps, &a, now, hold, self.policy.cookies_forced);
        self.dps.follow_host();
        self.dps.step_responders(t);
        self.sync_sysctls();
        let v4 = blocked.iter().filter(|p| p.addr.is_ipv4()).count();
        self.publish(&reading, &a, t, [v4, blocked.len() - v4]);
        self.metrics.lock().expect("metrics lock").tick.observe(started.elapsed().as_secs_f64());
        self.last = Some(a);
        self.publish_snapshot();
        if self.watchdog {
            notify::notify("WATCHDOG=1");
        }
        Ok(())
    }

    fn log_event(&mut self, a: &Assessment) {
        match a.event {
            Some(Event::Started(k)) => {
                self.attacks_total += 1;
                self.metrics.lock().expect("metrics lock").attack_started(k);
                let ev: Vec<String> = a.evidence.iter().map(ToString::to_string).collect();
                log::warn!("attack started: {} — {}", k.as_str(), ev.join(", "));
            }
            Some(Event::Ended(k)) => {
                log::warn!("attack over: {} (quiet for {} s)", k.as_str(), self.cfg.detection.hold_down_secs);
            }
            None => {}
        }
    }

    /// The tick's readings for `status` and `/metrics`.
    fn publish(&mut self, r: &sample::Reading, a: &Assessment, t: f64, blocked: [usize; 2]) {
        let (c, failed_delta) = (&r.counters, r.failed_delta);
        self.kernel = kernel::read_view(r.syn_recv);
        let dt = (t - self.prev_t).max(1e-3);
        let drops = |c: &Counters| {
            c.get(Counter::DropBlocked)
                + c.get(Counter::DropBlockedOther)
                + c.get(Counter::DropRateLimited)
                + c.get(Counter::DropAckInvalid)
        };
        self.dropped_per_sec = drops(c).saturating_sub(drops(&self.counters)) as f64 / dt;
        self.rate_base = self.counters;
        self.rate_dt = dt;
        self.counters = *c;
        self.prev_t = t;
        self.dps.check_attached();
        let xdp_policy = self.responder_enabled();
        let ifaces: Vec<metrics::IfaceFigures> = self
            .dps
            .ifaces()
            .iter()
            .map(|i| metrics::IfaceFigures {
                name: i.name.clone(),
                attached: i.attached,
                attack_mode: i.attack.active != 0,
                responder_xdp: xdp_policy && i.responder.xdp,
                cookies_delta: i.delta(Counter::CookieSent),
                tx_failed_delta: i.delta(Counter::XdpTxFailed),
                fallbacks: i.responder.fallbacks,
            })
            .collect();
        let mut m = self.metrics.lock().expect("metrics lock");
        let active = matches!(a.phase, Phase::Active | Phase::CoolingDown);
        let forced = self.mitigator.state.syncookies_original.is_some();
        let figures = metrics::TickFigures {
            half_open: self.sampler.half_open,
            failed_delta,
            blocked,
            block_capacity: self.mitigator.block_capacity,
            block_failures: self.mitigator.block_failures,
            attack: active,
            forced,
            datapath_attack: self.mitigator.dp_attack.active,
            listeners_pressured: a.listeners.iter().filter(|l| l.pressured).count(),
            ifaces: &ifaces,
        };
        m.update((&self.rate_base, c), &self.kernel, &figures);
    }

    fn publish_snapshot(&mut self) {
        match self.snapshot() {
            Ok(v) => {
                self.status_tx.send_replace(Arc::new(v));
            }
            Err(e) => log::error!("building the status snapshot: {e:#}"),
        }
    }

    /// A record from a datapath's ring buffer.
    fn on_event(&mut self, ev: DpEvent) {
        match ev {
            DpEvent::Heavy { addr, syns } => self.sampler.follow(Prefix::host(addr), syns, monotonic_ns() as f64 / 1e9),
            DpEvent::HeavyPrefix { prefix, syns } => self.sampler.follow(prefix, syns, monotonic_ns() as f64 / 1e9),
            DpEvent::AttackEntered { iface, entered_ns } => {
                let age_ms = monotonic_ns().saturating_sub(entered_ns) as f64 / 1e6;
                log::warn!(
                    "{iface}: the datapath entered attack mode (SYN rate over datapath.attack-syn-rate); \
                    noticed {age_ms:.1} ms later"
                );
                // Arm the responder now, not at the next tick.
                self.mitigator.dp_attack.active = true;
                self.sync_sysctls();
            }
        }
    }

    /// Whether the XDP responder answers in attack mode: only for policies
    /// that answer floods with cookies, in enforce mode.
    fn responder_enabled(&self) -> bool {
        self.cfg.datapath.syn_cookies == SynCookies::Xdp
            && self.cfg.datapath.mode == DatapathMode::Enforce
            && matches!(self.cfg.policy.mode, PolicyMode::Auto | PolicyMode::SynCookie)
    }

    /// Whether the XDP responder is answering now.
    fn responder_armed(&self) -> bool {
        self.mitigator.dp_attack.active && self.responder_enabled()
    }

    /// tcp_syncookies=2 while the policy forces cookies or the responder
    /// answers; tcp_timestamps=2 while the responder answers. The datapath
    /// answers from XDP only while both are in effect: it stops before they
    /// are restored, and starts after they are set, so its TS-encoded
    /// cookies always meet a kernel that decodes them.
    fn sync_sysctls(&mut self) {
        let armed = self.responder_armed();
        if !armed {
            self.dps.set_answering(false);
        }
        let ready = self.mitigator.sync_sysctls(self.policy.cookies_forced || armed, armed);
        if armed {
            self.dps.set_answering(ready);
        }
    }

    fn allow_list(&self) -> Vec<Prefix> {
        self.cfg.datapath.allow.iter().copied().chain(self.mitigator.runtime_allows.iter().copied()).collect()
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
        if self.dps.egress() {
            flags |= tcpguard_common::FLAG_EGRESS;
        }
        let settings = Settings {
            flags,
            heavy_prefix_syns_per_sec: self.cfg.detection.heavy_prefix_syn_rate as u32,
            syn_rate: p.syn_rate_per_source,
            syn_burst: p.syn_burst,
            half_open_timeout_ns: p.half_open_timeout_secs * 1_000_000_000,
            heavy_syns_per_sec: self.cfg.detection.heavy_source_syn_rate,
            attack_syn_rate: p.attack_syn_rate,
            hash_seed: self.hash_seed,
            attack_sample: p.attack_sample,
            synack_wscale: u32::from(kernel::listener_wscale()),
            ..Settings::default()
        };
        let runtime: Vec<Prefix> = self.mitigator.runtime_allows.iter().copied().collect();
        self.dps.apply(&settings, &self.cfg, old, &runtime, monotonic_ns())?;
        for b in &self.cfg.datapath.block {
            self.mitigator.blocks.insert(*b, BlockOrigin::Config);
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
            ("daemon.state-dir", new.daemon.state_dir != cur.daemon.state_dir),
            ("datapath.half-open-entries", new.datapath.half_open_entries != cur.datapath.half_open_entries),
            ("datapath.source-entries", new.datapath.source_entries != cur.datapath.source_entries),
            ("datapath.block-list-entries", new.datapath.block_list_entries != cur.datapath.block_list_entries),
            ("metrics", new.metrics != cur.metrics),
            ("control", new.control != cur.control),
        ];
        for (key, changed) in restart_only {
            if changed {
                log::warn!("reload: {key} changed; it takes effect after a restart (the running value is kept)");
            }
        }
        // Restart-only keys keep their running values until a restart: a
        // changed socket path or state directory applied half-way would
        // leave the old socket behind, unlink someone else's, or move the
        // crash-recovery file mid-run.
        new.daemon.interfaces.clone_from(&cur.daemon.interfaces);
        new.daemon.tick_ms = cur.daemon.tick_ms;
        new.daemon.pin_root.clone_from(&cur.daemon.pin_root);
        new.daemon.state_dir.clone_from(&cur.daemon.state_dir);
        new.datapath.half_open_entries = cur.datapath.half_open_entries;
        new.datapath.source_entries = cur.datapath.source_entries;
        new.datapath.block_list_entries = cur.datapath.block_list_entries;
        new.metrics = cur.metrics.clone();
        new.control = cur.control.clone();
        // Checked again with the running values: a cap that fits only the
        // new list size does not fit the list the datapath has.
        if let Err((key, why)) = new.check() {
            log::error!(
                "reload refused, keeping the running config: {key}: {why} (with the running restart-only keys)"
            );
            notify::notify("READY=1");
            return;
        }
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

    /// `handover`: stay attached whatever daemon.stay-attached says, and
    /// leave attack mode and the sysctls to the next daemon.
    fn shutdown(&mut self, handover: bool) {
        if handover {
            // The next daemon adopts attack mode, the responder and the
            // sysctls as they are (state.json records the operator's values):
            // nothing flips under connections in flight.
            if self.mitigator.dp_attack.active {
                log::info!("handing over in attack mode: the responder and its sysctls stay for the next daemon");
            }
        } else {
            // Leave attack mode: with no daemon to end it, it must not outlive
            // us; the responder stops before the sysctls are restored.
            if self.mitigator.dp_attack.active {
                self.mitigator.leave_attack_mode(&mut self.dps, monotonic_ns());
            }
            self.policy.cookies_forced = false;
            self.sync_sysctls();
        }
        self.dps.release(self.cfg.daemon.stay_attached || handover);
        api::remove(&self.cfg.control.socket);
    }
}

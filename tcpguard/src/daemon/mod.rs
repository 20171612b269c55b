//! `tcpguard run`: the daemon's lifecycle, and where the tick's five steps
//! are ([`Daemon::tick`]): sample → detect → decide → apply → observe.
//! Load and attach (or adopt) a datapath per interface, then one select
//! loop: the tick, control requests, datapath events, signals (SIGHUP
//! reloads, SIGTERM/SIGINT stop, SIGUSR2 hands over), and a clean shutdown.
//!
//! One job per module: `datapaths` (the per-interface fan-out and the one
//! settings write), `follow` (interfaces kept in step with the host),
//! `sample` (every reading of a tick), `detect` (pure), `policy` (pure),
//! `mitigate` (carries out every action: blocks, cookies, attack mode,
//! sysctls), `observe` (the tick's one observation), `status` and `metrics`
//! (its two renderings), `control` (the operator's commands), `reload`,
//! `events`, `kernel`, `host`, `responder`, `listeners`, `notify`, `api`,
//! `upstream` (FlowSpec rules through gobgpd, `[upstream]`).

pub mod api;
mod control;
pub mod datapaths;
pub mod detect;
mod events;
mod follow;
pub mod host;
pub mod kernel;
pub mod listeners;
pub mod metrics;
mod mitigate;
pub mod notify;
pub mod observe;
pub mod policy;
mod reload;
pub mod responder;
mod sample;
pub mod status;
pub mod upstream;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tcpguard_common::Counters;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    daemon::{
        api::ApiCall,
        datapaths::Datapaths,
        detect::{Assessment, Detector, Event},
        events::DpEvent,
        metrics::Metrics,
        mitigate::{BlockList, Mitigator},
        observe::{kind_index, ConfigObs, IfaceObs, Observation},
        policy::{Action, Policy},
        sample::{Reading, Sampler},
    },
    maps::monotonic_ns,
    model::{BlockOrigin, KernelView, Kind},
    net::Prefix,
    settings::responder_enabled,
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
    started: Instant,
    watchdog: bool,
    /// Counters at this daemon's start, summed and per interface (the
    /// metrics count from here).
    base: Counters,
    iface_base: Vec<Counters>,
    /// Attacks declared since start, by kind.
    attacks: Vec<u64>,
    /// The last observation, and its channel to `status` and `/metrics`.
    observation: Observation,
    published: watch::Sender<Arc<Observation>>,
    /// `[upstream]` when enabled.
    upstream: Option<upstream::Upstream>,
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
    let mut mitigator = Mitigator::start(cfg.daemon.state_dir.clone());
    let (mut dps, readers) = Datapaths::open(&cfg, events::start_logger)?;
    mitigator.set_block_capacity(block_list_capacity(&mut dps, &cfg)?);
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
        started: Instant::now(),
        watchdog: notify::watchdog_enabled(),
        base: Counters::default(),
        iface_base: Vec::new(),
        attacks: vec![0; Kind::ALL.len()],
        observation: Observation::default(),
        published: watch::channel(Arc::new(Observation::default())).0,
        upstream: None,
    };
    d.dps.follow_host();
    // Written with the responder held back: this daemon lets it answer once
    // it knows the sysctls are in effect.
    d.apply_settings(None)?;
    let attack = d.dps.attack()?;
    if attack.active {
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
        d.mitigator.sampled_attack(attack);
    }
    let ack_mode = d.dps.ack_mode()?;
    if ack_mode.active {
        log::warn!("the datapath is in ACK-checking mode from a previous run: adopted");
        d.mitigator.adopt_ack_mode(&mut d.dps, monotonic_ns());
    }
    d.mitigator.sync_sysctls(&mut d.dps, responder_enabled(&d.cfg));
    d.base = d.dps.counters()?;
    d.iface_base = d.dps.ifaces().iter().map(|i| i.counters).collect();
    let blocks = d.dps.blocks()?;
    let kernel = kernel::read_view(listeners::read().map_or(0, |(_, n)| n));
    let base = d.base;
    if d.cfg.upstream.enabled {
        d.upstream = Some(upstream::Upstream::start(&d.cfg.upstream));
    }
    d.observe(None, &base, &blocks, kernel, monotonic_ns() as f64 / 1e9);

    if d.cfg.metrics.enabled {
        let l = metrics::bind(d.cfg.metrics.listen).await?;
        log::info!("metrics on http://{}/metrics", d.cfg.metrics.listen);
        tokio::spawn(metrics::serve(l, metrics.clone(), d.published.subscribe()));
    }
    let listener = api::bind(&d.cfg.control)?;
    log::info!("control socket {}", d.cfg.control.socket.display());
    let (tx, mut rx) = mpsc::channel::<ApiCall>(64);
    let top_tables: Vec<PathBuf> = d
        .dps
        .ifaces()
        .iter()
        .map(|i| d.cfg.daemon.pin_root.join(&i.name).join(tcpguard_common::map_names::SRC_STATS))
        .collect();
    tokio::spawn(api::serve(listener, tx, d.published.subscribe(), Arc::new(top_tables)));
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
    // A clean stop takes every upstream rule back (nothing of ours stands
    // in the network with no daemon to end it); a handover leaves them.
    if let Some(u) = d.upstream.take() {
        u.stop(!handover).await;
    }
    d.shutdown(handover);
    result
}

/// The addresses upstream rules may protect: `upstream.destinations` that
/// are this host's, else every global address of the protected interfaces.
fn upstream_destinations(cfg: &Config, addrs: &[(String, std::net::IpAddr)]) -> Vec<Prefix> {
    if !cfg.upstream.destinations.is_empty() {
        return cfg.upstream.destinations.iter().filter(|d| addrs.iter().any(|(_, a)| *a == d.addr)).copied().collect();
    }
    let mut out: Vec<Prefix> = addrs
        .iter()
        .filter(|(n, a)| cfg.daemon.interfaces.contains(n) && crate::net::is_global_unicast(*a))
        .map(|(_, a)| Prefix::host(*a))
        .collect();
    out.sort();
    out.dedup();
    out
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
                    self.refresh_observation();
                }
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                _ = hup.recv() => self.reload(),
                _ = term.recv() => return Ok(Stopped::Clean),
                _ = int.recv() => return Ok(Stopped::Clean),
                _ = usr2.recv() => return Ok(Stopped::Handover),
            }
        }
    }

    /// One tick: sample → detect → decide → apply → observe.
    fn tick(&mut self) -> Result<()> {
        let started = Instant::now();
        let now = monotonic_ns();
        let t = now as f64 / 1e9;
        // Sample: every reading of the tick.
        let mut reading = self.sampler.read(
            &mut self.dps,
            (t, now),
            self.cfg.datapath.half_open_timeout_secs,
            &self.cfg.datapath.ports,
        )?;
        self.mitigator.sampled_attack(reading.attack.clone());
        self.mitigator.sampled_ack_mode(reading.ack_mode.clone());
        // Detect.
        let a = self.detector.step(std::mem::take(&mut reading.sample));
        // Decide.
        let blocked = self.mitigator.expire_blocks(&mut self.dps, &mut reading.blocks, now)?;
        let acts = self.policy.decide(&a, &self.allow_list(), &blocked, self.mitigator.daemon_blocks());
        // Apply: every action, then attack mode, the host, the responders
        // and the sysctls they need.
        self.mitigator.apply(&mut self.dps, acts, now, &mut reading.blocks);
        self.mitigator.steer_attack_mode(&mut self.dps, &a, now, self.cfg.detection.hold_down_secs);
        let enforce = self.policy.mode() != crate::config::PolicyMode::Monitor;
        self.mitigator.steer_ack_mode(&mut self.dps, &a.ack, now, self.cfg.detection.hold_down_secs, enforce);
        self.dps.follow_host();
        self.dps.step_responders(t);
        self.mitigator.sync_sysctls(&mut self.dps, responder_enabled(&self.cfg));
        self.step_upstream(&a, &reading.blocks, now);
        // Observe.
        let Reading { counters, blocks, kernel, .. } = reading;
        self.observe(Some(a), &counters, &blocks, kernel, t);
        self.metrics.lock().expect("metrics lock").tick.observe(started.elapsed().as_secs_f64());
        if self.watchdog {
            notify::notify("WATCHDOG=1");
        }
        Ok(())
    }

    /// The tick's observation: made once, its events logged, published to
    /// `status` and `/metrics`.
    fn observe(&mut self, a: Option<Assessment>, counters: &Counters, blocks: &BlockList, kernel: KernelView, t: f64) {
        for ev in a.iter().flat_map(Assessment::events) {
            if let Event::Started(k) = ev {
                self.attacks[kind_index(k)] += 1;
            }
        }
        let prev = &self.observation;
        let dt = if prev.now_ns == 0 { 1.0 } else { (t - prev.now_ns as f64 / 1e9).max(1e-3) };
        let o = Observation {
            now_ns: (t * 1e9) as u64,
            dt,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            prev: if prev.now_ns == 0 { self.base } else { prev.counters },
            counters: *counters,
            base: self.base,
            ifaces: self
                .dps
                .ifaces()
                .iter()
                .zip(self.iface_base.iter().chain(std::iter::repeat(&Counters::default())))
                .map(|(i, base)| IfaceObs::from_iface(i, *base))
                .collect(),
            egress: self.dps.egress(),
            assessment: a,
            attacks: self.attacks.clone(),
            half_open: self.sampler.half_open,
            failed_total: self.sampler.failed_total(),
            distinct_per_sec: self.sampler.distinct_per_sec,
            kernel,
            mitigation: self.mitigator.observe(blocks, self.allow_list()),
            config: self.config_obs(),
            upstream: self.upstream.as_ref().map(|u| u.view((t * 1e9) as u64)),
        };
        o.log_events();
        self.observation = o;
        self.published.send_replace(Arc::new(self.observation.clone()));
    }

    /// After an operator's change: the block-lists read again, the
    /// mitigations and config taken anew, the rest as the tick observed it.
    fn refresh_observation(&mut self) {
        let blocks = match self.dps.blocks() {
            Ok(b) => b,
            Err(e) => {
                log::error!("reading the block-lists: {e:#}");
                return;
            }
        };
        self.observation.mitigation = self.mitigator.observe(&blocks, self.allow_list());
        self.observation.config = self.config_obs();
        self.observation.upstream = self.upstream.as_ref().map(|u| u.view(monotonic_ns()));
        self.published.send_replace(Arc::new(self.observation.clone()));
    }

    fn config_obs(&self) -> ConfigObs {
        ConfigObs {
            policy: self.policy.mode(),
            datapath_mode: self.cfg.datapath.mode,
            syn_cookies: self.cfg.datapath.syn_cookies,
            responder_enabled: responder_enabled(&self.cfg),
            attack_sample: self.cfg.datapath.attack_sample,
            max_blocked: self.cfg.policy.max_blocked,
            hold_down_secs: self.cfg.detection.hold_down_secs,
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
                self.mitigator.datapath_entered();
                self.mitigator.sync_sysctls(&mut self.dps, responder_enabled(&self.cfg));
            }
            DpEvent::AckModeEntered { iface, entered_ns } => {
                let age_ms = monotonic_ns().saturating_sub(entered_ns) as f64 / 1e6;
                log::warn!(
                    "{iface}: the datapath entered ACK-checking mode (the kernel's RSTs to unmatched ACKs over \
                     datapath.attack-ack-rate); noticed {age_ms:.1} ms later"
                );
                self.mitigator.ack_mode_entered(&mut self.dps, entered_ns);
            }
        }
    }

    /// Feed the upstream planner this tick's blocks, SYN rate and flood kind.
    fn step_upstream(&mut self, a: &Assessment, blocks: &BlockList, now: u64) {
        if self.upstream.is_none() {
            return;
        }
        let addrs = host::if_addrs().unwrap_or_default();
        let destinations = upstream_destinations(&self.cfg, &addrs);
        let mut local: Vec<std::net::IpAddr> = addrs.into_iter().map(|(_, a)| a).collect();
        local.sort();
        local.dedup();
        let inputs = crate::upstream::plan::Inputs {
            now_ns: now,
            blocks: blocks
                .iter()
                .map(|(p, e)| crate::upstream::plan::BlockIn {
                    prefix: *p,
                    expires_ns: e.expires_ns,
                    configured: matches!(self.mitigator.origin(p), Some(BlockOrigin::Config)),
                })
                .collect(),
            syn_per_sec: a.rates.syn_per_sec,
            attack: a.phase.is_attack(),
            spoofed: a.kind == Some(Kind::SpoofedRandom),
            destinations,
            ports: self.cfg.datapath.ports.clone(),
            allow: self.allow_list(),
            local,
            monitor: self.policy.mode() == crate::config::PolicyMode::Monitor,
        };
        if let Some(u) = self.upstream.as_mut() {
            u.step(inputs);
        }
    }

    fn allow_list(&self) -> Vec<Prefix> {
        self.cfg.datapath.allow.iter().copied().chain(self.mitigator.runtime_allows().copied()).collect()
    }

    /// Push the config into every interface's maps. `old` is the config
    /// being replaced (its allow/block entries that are gone are removed).
    fn apply_settings(&mut self, old: Option<&Config>) -> Result<()> {
        let runtime: Vec<Prefix> = self.mitigator.runtime_allows().copied().collect();
        self.dps.apply(&self.cfg, old, &runtime, monotonic_ns())?;
        for b in &self.cfg.datapath.block {
            self.mitigator.record_block(*b, BlockOrigin::Config);
        }
        Ok(())
    }

    /// `handover`: stay attached whatever daemon.stay-attached says, and
    /// leave attack mode and the sysctls to the next daemon.
    fn shutdown(&mut self, handover: bool) {
        if handover {
            // The next daemon adopts attack mode, the responder and the
            // sysctls as they are (state.json records the operator's values):
            // nothing flips under connections in flight.
            if self.mitigator.dp_attack().active {
                log::info!("handing over in attack mode: the responder and its sysctls stay for the next daemon");
            }
            if self.mitigator.dp_ack().active {
                log::info!("handing over in ACK-checking mode: it stays for the next daemon");
            }
        } else {
            // Leave attack mode: with no daemon to end it, it must not outlive
            // us; the responder stops before the sysctls are restored.
            if self.mitigator.dp_attack().active {
                self.mitigator.leave_attack_mode(&mut self.dps, monotonic_ns());
            }
            if self.mitigator.dp_ack().active {
                self.mitigator.leave_ack_mode(&mut self.dps, monotonic_ns());
            }
            let mut unchanged = BlockList::new();
            self.mitigator.apply(&mut self.dps, vec![Action::RestoreCookies], monotonic_ns(), &mut unchanged);
            self.mitigator.sync_sysctls(&mut self.dps, responder_enabled(&self.cfg));
        }
        self.dps.release(self.cfg.daemon.stay_attached || handover);
        api::remove(&self.cfg.control.socket);
    }
}

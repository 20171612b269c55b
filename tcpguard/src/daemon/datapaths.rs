//! The protected interfaces, one loaded and attached datapath each, and the
//! fan-out the daemon needs over them: counters summed, lists written to
//! every one, attack mode read and set on all, and each interface's
//! settings written whole in one place ([`Datapaths::write_settings`], from
//! `settings::build`). Following the host (MTU, MAC, addresses, whether
//! replies leave) is in `follow.rs`.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tcpguard_common::{
    map_names,
    sketch::{self, Hll},
    AttackState, BlockEntry, Counter, Counters, HoBucket, ATTACK_REASON_ACK_RATE, ATTACK_REASON_DAEMON,
    ATTACK_REASON_SYN_RATE,
};

use super::{
    host::{self, Link},
    responder::Responder,
};
use crate::{
    config::Config,
    loader::{source_chain, Attachment, Datapath, LoadOptions},
    maps::{Maps, MapsError},
    net::Prefix,
    settings::{self, Facts},
};

#[allow(clippy::struct_excessive_bools)] // independent facts about one interface, not a state machine
pub struct Iface {
    pub name: String,
    pub dp: Datapath,
    pub att: Attachment,
    /// The TC egress program is attached (the server's SYN-ACKs are seen).
    pub egress: bool,
    /// The XDP link was attached to the interface at the last check.
    pub attached: bool,
    /// An interface of this name exists in the daemon's namespace (false
    /// once it is deleted or moved away; attached again when it returns).
    pub present: bool,
    /// The interface as the kernel last described it (index, MAC, MTU, kind).
    pub link: Link,
    /// Who answers this interface's SYNs in attack mode.
    pub responder: Responder,
    /// The datapath is allowed to answer from XDP now (`FLAG_ANSWER` as
    /// last written).
    pub answering: bool,
    /// The `xdp:xdp_exception` program is attached for it (veth: see
    /// `driver_failed`).
    pub tx_watch: bool,
    /// Its counters (summed over CPUs) at the last two readings.
    pub counters: Counters,
    pub prev: Counters,
    /// Its attack-mode state as last read.
    pub attack: AttackState,
    /// Its ACK-checking mode as last read.
    pub ack_mode: AttackState,
    /// The driver's own failed XDP_TX count (ethtool), where it has one.
    pub driver_tx_errors: Option<u64>,
    /// A veth's failed XDP_TX as its driver counted them since the daemon
    /// attached (their tracepoint, `xdp:xdp_bulk_tx`, runs on every poll
    /// of a flood and is not watched): added to its `xdp_tx_failed`.
    pub driver_failed: u64,
    /// Its block-lists and allow-lists hold anything (as last written).
    pub has_blocks: bool,
    pub has_allows: bool,
}

impl Iface {
    /// A counter's advance between the last two readings.
    pub fn delta(&self, c: Counter) -> u64 {
        self.counters.get(c).wrapping_sub(self.prev.get(c))
    }
}

/// The datapath's two flood modes, each one `AttackState` entry.
#[derive(Clone, Copy)]
enum Mode {
    /// Attack mode (a SYN flood).
    Attack,
    /// ACK-checking mode (an ACK flood).
    AckCheck,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Attack => "attack mode",
            Mode::AckCheck => "ACK-checking mode",
        }
    }
    fn read(self, m: &Maps<'_>) -> Result<AttackState, MapsError> {
        match self {
            Mode::Attack => m.attack(),
            Mode::AckCheck => m.ack_mode(),
        }
    }
    fn write(self, m: &mut Maps<'_>, a: &AttackState) -> Result<(), MapsError> {
        match self {
            Mode::Attack => m.set_attack(a),
            Mode::AckCheck => m.set_ack_mode(a),
        }
    }
}

/// The datapath's attack mode (or ACK-checking mode) as last read (all
/// interfaces).
#[derive(Clone, Debug, Default)]
pub struct DpAttack {
    pub active: bool,
    /// Entered by the datapath itself (else by the daemon).
    pub by_datapath: bool,
    pub entered_ns: u64,
    pub trigger_window_ns: u64,
    pub first_cookie_ns: u64,
    /// Times the datapaths entered attack mode by themselves.
    pub entries: u64,
}

impl DpAttack {
    /// Every interface's state as one: active if any is, the earliest entry.
    fn fold(per: &[AttackState]) -> DpAttack {
        let mut out = DpAttack::default();
        for a in per {
            out.entries += a.entries;
            if a.active != 0 && (!out.active || a.entered_ns < out.entered_ns) {
                out.active = true;
                out.by_datapath = matches!(a.reason, ATTACK_REASON_SYN_RATE | ATTACK_REASON_ACK_RATE);
                out.entered_ns = a.entered_ns;
                out.trigger_window_ns = a.trigger_window_ns;
            }
            if a.active != 0
                && a.first_cookie_ns != 0
                && (out.first_cookie_ns == 0 || a.first_cookie_ns < out.first_cookie_ns)
            {
                out.first_cookie_ns = a.first_cookie_ns;
            }
        }
        out
    }
}

/// Every protected interface's datapath.
pub struct Datapaths {
    pub(super) ifaces: Vec<Iface>,
    /// What the settings are made from besides each interface.
    pub(super) host: HostFacts,
    /// The config the settings were last built from (`None` until `apply`).
    pub(super) cfg: Option<Config>,
    /// The host's addresses as last written to the datapaths.
    pub(super) local: Vec<IpAddr>,
}

/// The host's side of every interface's settings.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct HostFacts {
    /// `struct net_device`'s ifindex offset (kernel BTF; 0 = unknown).
    pub dev_ifindex_off: u32,
    /// Seed of the datapath's per-source sketch hash (random per start).
    pub hash_seed: u64,
    /// The window scale the kernel gives this host's listeners.
    pub wscale: u8,
}

/// The facts `settings::build` needs about one interface.
fn facts(host: &HostFacts, i: &Iface) -> Facts {
    Facts {
        mtu: i.link.mtu,
        mac: i.link.mac,
        ifindex: i.link.ifindex,
        dev_ifindex_off: host.dev_ifindex_off,
        egress: i.egress,
        has_blocks: i.has_blocks,
        has_allows: i.has_allows,
        answering: i.answering,
        hash_seed: host.hash_seed,
        wscale: host.wscale,
    }
}

/// A ring buffer taken out of a datapath, for the event reader.
pub type Events = (String, RingBuf<MapData>);

impl Datapaths {
    /// Load, attach (or adopt) and pin a datapath per configured interface.
    /// `on_load` sees each datapath before it is attached (the log reader).
    pub fn open(cfg: &Config, mut on_load: impl FnMut(&mut Datapath, &str)) -> Result<(Self, Vec<Events>)> {
        let mut ifaces = Vec::new();
        let mut readers = Vec::new();
        for name in &cfg.daemon.interfaces {
            // Refused at start, with the reason: tcpguard protects interfaces
            // that exist; one deleted later is attached again when it returns.
            if let Err(e) = host::link_by_name(name) {
                anyhow::bail!(
                    "interface {name} (daemon.interfaces or --iface): {e}; tcpguard attaches to interfaces that \
                     exist when it starts (one deleted later is attached again by itself when it returns)"
                );
            }
            let pin_dir = cfg.daemon.pin_root.join(name);
            let load = LoadOptions {
                half_open_entries: cfg.datapath.half_open_entries,
                source_entries: cfg.datapath.source_entries,
                block_list_entries: cfg.datapath.block_list_entries,
                pin_dir: Some(pin_dir.clone()),
                retire_stale: true,
            };
            let mut dp = Datapath::load(&load).with_context(|| format!("loading the datapath for {name}"))?;
            on_load(&mut dp, name);
            let events = dp
                .ebpf
                .take_map(map_names::EVENTS)
                .context("EVENTS map missing")
                .and_then(|m| RingBuf::try_from(m).context("EVENTS is not a ring buffer"))?;
            readers.push((name.clone(), events));
            let att = dp
                .attach_pinned(name, cfg.daemon.xdp_mode, &pin_dir.join("link"))
                .map_err(|e| anyhow::anyhow!("{e}: {}", source_chain(&e)))?;
            if att.how == crate::model::Attach::Adopted {
                log::info!("{name}: adopted the pinned XDP link of a previous run (maps and block-list kept)");
            } else {
                log::info!(
                    "{name}: XDP attached in {} mode, link and maps pinned under {}",
                    att.how.as_str(),
                    pin_dir.display()
                );
            }
            let egress = match dp.attach_egress_pinned(name, &pin_dir.join(crate::loader::EGRESS_LINK)) {
                Ok(adopted) => {
                    log::info!(
                        "{name}: TC egress {} (the server's SYN-ACKs make a SYN half-open)",
                        if adopted { "adopted" } else { "attached" }
                    );
                    true
                }
                Err(e) => {
                    log::warn!(
                        "{name}: {e}: {}; half-open is counted from the client's SYN and the final ACK is \
                         checked by its seq only",
                        source_chain(&e)
                    );
                    false
                }
            };
            let link = host::link_by_name(name).with_context(|| format!("reading {name} (rtnetlink)"))?;
            let judged = host::judge_delivery(&link);
            let responder = Responder::new(judged, crate::maps::monotonic_ns() as f64 / 1e9);
            log::info!("{name}: attack-mode responder {} ({})", responder.name(), responder.reason);
            let tx_watch = match dp.attach_tx_watch() {
                Ok(()) => true,
                Err(e) => {
                    log::warn!(
                        "{name}: {e}: {}; failed XDP transmits cannot be seen, only the static check of the \
                         interface decides who answers",
                        source_chain(&e)
                    );
                    false
                }
            };
            ifaces.push(Iface {
                name: name.clone(),
                dp,
                att,
                egress,
                attached: true,
                present: true,
                link,
                responder,
                answering: false,
                tx_watch,
                counters: Counters::default(),
                prev: Counters::default(),
                attack: AttackState::default(),
                ack_mode: AttackState::default(),
                driver_tx_errors: None,
                driver_failed: 0,
                has_blocks: false,
                has_allows: false,
            });
        }
        let dev_ifindex_off = host::net_device_ifindex_offset().unwrap_or_else(|e| {
            log::warn!("no ifindex offset from the kernel's BTF ({e}): xdp:xdp_exception failures are not counted");
            0
        });
        let host = HostFacts { dev_ifindex_off, hash_seed: super::kernel::random_u64(), wscale: 0 };
        Ok((Datapaths { ifaces, host, cfg: None, local: Vec::new() }, readers))
    }

    /// The one place an interface's settings are written: built whole from
    /// the config and the interface's facts. Nothing is written before the
    /// config is (`apply`).
    pub(super) fn write_settings(cfg: Option<&Config>, host: &HostFacts, i: &mut Iface) -> Result<(), MapsError> {
        let Some(cfg) = cfg else { return Ok(()) };
        let s = settings::build(Some(cfg), &facts(host, i));
        Maps::new(&mut i.dp.ebpf).set_settings(&s)
    }

    /// Re-read an interface's lists (are they empty?) and write its settings.
    /// The lists' first-byte summaries are rewritten from the lists too.
    fn lists_changed(cfg: Option<&Config>, host: &HostFacts, i: &mut Iface) -> Result<(), MapsError> {
        let mut m = Maps::new(&mut i.dp.ebpf);
        m.sync_first_bytes()?;
        (i.has_blocks, i.has_allows) = m.lists_nonempty()?;
        Self::write_settings(cfg, host, i)
    }

    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// Every interface sees the server's side (TC egress).
    pub fn egress(&self) -> bool {
        !self.ifaces.is_empty() && self.ifaces.iter().all(|i| i.egress)
    }

    /// Run `f` on every interface's maps; the first error stops it.
    pub fn each<T>(&mut self, mut f: impl FnMut(&str, &mut Maps<'_>) -> Result<T, MapsError>) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(self.ifaces.len());
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            out.push(f(&i.name, &mut m).with_context(|| format!("datapath on {}", i.name))?);
        }
        Ok(out)
    }

    /// Global counters summed over interfaces (and CPUs). The driver's own
    /// count of failed XDP_TX is read here too: a veth's (whose failures no
    /// tracepoint is watched for) joins its `xdp_tx_failed`, in the same
    /// tick's counters that the responder steps on.
    pub fn counters(&mut self) -> Result<Counters> {
        let mut c = Counters::default();
        let per = self.each(|_, m| m.counters())?;
        for (i, mut x) in self.ifaces.iter_mut().zip(per) {
            let before = i.driver_tx_errors;
            i.driver_tx_errors = host::driver_xdp_tx_errors(&i.name).ok().flatten();
            if let (true, Some(b), Some(n)) = (i.link.kind == "veth", before, i.driver_tx_errors) {
                // A count that went back (the interface made anew) starts
                // again from there.
                i.driver_failed += n.saturating_sub(b);
            }
            x.v[Counter::XdpTxFailed as usize] += i.driver_failed;
            c.add(&x);
            i.prev = std::mem::replace(&mut i.counters, x);
        }
        Ok(c)
    }

    pub fn half_open_slots(&mut self) -> Result<Vec<HoBucket>> {
        Ok(self.each(|_, m| m.half_open_slots())?.into_iter().flatten().collect())
    }

    /// Distinct SYN sources since the last call: the HyperLogLog registers
    /// of every CPU and interface merged, then cleared.
    pub fn take_distinct(&mut self) -> Result<f64> {
        let regs: Vec<Hll> = self
            .each(|_, m| {
                let r = m.hll()?;
                m.clear_hll()?;
                Ok(r)
            })?
            .into_iter()
            .flatten()
            .collect();
        Ok(sketch::distinct_estimate(regs.iter()))
    }

    /// Attack mode over all interfaces: active if any is, the earliest entry.
    pub fn attack(&mut self) -> Result<DpAttack> {
        let per = self.each(|_, m| m.attack())?;
        for (i, a) in self.ifaces.iter_mut().zip(&per) {
            i.attack = *a;
        }
        Ok(DpAttack::fold(&per))
    }

    /// ACK-checking mode over all interfaces, as [`Datapaths::attack`].
    pub fn ack_mode(&mut self) -> Result<DpAttack> {
        let per = self.each(|_, m| m.ack_mode())?;
        for (i, a) in self.ifaces.iter_mut().zip(&per) {
            i.ack_mode = *a;
        }
        Ok(DpAttack::fold(&per))
    }

    /// Put every interface in attack mode (entered by the daemon) or take
    /// them out of it. Errors are logged per interface.
    pub fn set_attack(&mut self, on: bool, now: u64) {
        self.set_mode(Mode::Attack, on, now);
    }

    /// The same for ACK-checking mode.
    pub fn set_ack_mode(&mut self, on: bool, now: u64) {
        self.set_mode(Mode::AckCheck, on, now);
    }

    fn set_mode(&mut self, mode: Mode, on: bool, now: u64) {
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r = mode.read(&m).and_then(|cur| {
                let next = if on {
                    AttackState { active: 1, reason: ATTACK_REASON_DAEMON, entered_ns: now, first_cookie_ns: 0, ..cur }
                } else {
                    AttackState { active: 0, left_ns: now, ..cur }
                };
                mode.write(&mut m, &next)
            });
            if let Err(e) = r {
                log::error!("{}: setting the datapath's {}: {e}", i.name, mode.name());
            }
        }
    }

    /// ACK-checking mode on every interface that is not in it yet, as
    /// entered by the datapath at `entered_ns` (one interface's egress
    /// program saw the flood's RSTs; the flood may come in by another). The
    /// interfaces it was turned on for.
    pub fn spread_ack_mode(&mut self, entered_ns: u64) -> Vec<String> {
        let mut spread = Vec::new();
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r = m.ack_mode().and_then(|cur| {
                if cur.active != 0 {
                    return Ok(false);
                }
                let next = AttackState { active: 1, reason: ATTACK_REASON_ACK_RATE, entered_ns, ..cur };
                m.set_ack_mode(&next).map(|()| true)
            });
            match r {
                Ok(true) => spread.push(i.name.clone()),
                Ok(false) => {}
                Err(e) => log::error!("{}: setting the datapath's ACK-checking mode: {e}", i.name),
            }
        }
        spread
    }

    /// Mark every interface's attack mode (on) as entered by the datapath at
    /// `now`: what a new daemon adopts from a previous one.
    pub fn adopt_attack(&mut self, now: u64) {
        self.adopt_mode(Mode::Attack, now);
    }

    /// The same for ACK-checking mode.
    pub fn adopt_ack_mode(&mut self, now: u64) {
        self.adopt_mode(Mode::AckCheck, now);
    }

    fn adopt_mode(&mut self, mode: Mode, now: u64) {
        let reason = match mode {
            Mode::Attack => ATTACK_REASON_SYN_RATE,
            Mode::AckCheck => ATTACK_REASON_ACK_RATE,
        };
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r = mode.read(&m).and_then(|cur| {
                if cur.active == 0 {
                    return Ok(());
                }
                mode.write(&mut m, &AttackState { reason, entered_ns: now, ..cur })
            });
            if let Err(e) = r {
                log::error!("{}: adopting the datapath's {}: {e}", i.name, mode.name());
            }
        }
    }

    /// Change every interface's lists with `f`, then its settings (the
    /// list flags); the first error stops it. Whether any `f` said true.
    fn change_lists(&mut self, mut f: impl FnMut(&mut Maps<'_>) -> Result<bool, MapsError>) -> Result<bool> {
        let mut any = false;
        for i in &mut self.ifaces {
            let r = f(&mut Maps::new(&mut i.dp.ebpf))
                .and_then(|x| Self::lists_changed(self.cfg.as_ref(), &self.host, i).map(|()| x));
            any |= r.with_context(|| format!("datapath on {}", i.name))?;
        }
        Ok(any)
    }

    pub fn block(&mut self, p: &Prefix, expires_ns: u64) -> Result<()> {
        self.change_lists(|m| m.insert_block(p, expires_ns).map(|()| true)).map(drop)
    }

    /// Whether any interface had the block.
    pub fn unblock(&mut self, p: &Prefix) -> Result<bool> {
        self.change_lists(|m| m.remove_block(p))
    }

    pub fn allow(&mut self, p: &Prefix, now_ns: u64) -> Result<()> {
        self.change_lists(|m| m.insert_allow(p, now_ns).map(|()| true)).map(drop)
    }

    pub fn disallow(&mut self, p: &Prefix) -> Result<()> {
        self.change_lists(|m| m.remove_allow(p)).map(drop)
    }

    /// The block-list (the same on every interface; read from the first).
    pub fn blocks(&mut self) -> Result<Vec<(Prefix, BlockEntry)>> {
        match self.ifaces.first_mut() {
            Some(i) => Ok(Maps::new(&mut i.dp.ebpf).blocks()?),
            None => Ok(Vec::new()),
        }
    }

    /// Entries each block-list holds (the first interface's; every
    /// interface's list is made from the same config).
    pub fn block_list_capacity(&mut self) -> Result<u32> {
        match self.ifaces.first_mut() {
            Some(i) => Ok(Maps::new(&mut i.dp.ebpf).block_list_capacity()?),
            None => Ok(0),
        }
    }

    /// Write the lists and settings of `cfg` to every interface; entries
    /// of `old` that are gone are removed. The settings are built per
    /// interface by `settings::build`.
    pub fn apply(&mut self, cfg: &Config, old: Option<&Config>, runtime_allows: &[Prefix], now: u64) -> Result<()> {
        let p = &cfg.datapath;
        self.cfg = Some(cfg.clone());
        self.host.wscale = super::kernel::listener_wscale();
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r: Result<(), MapsError> = (|| {
                m.set_ports(&p.ports)?;
                // On start (no `old`), entries a previous run left pinned that
                // the config no longer has go too: `tcpguard allow` lasts
                // until the daemon restarts, as it says.
                if old.is_none() {
                    for a in m.allows()?.iter().filter(|a| !p.allow.contains(a) && !runtime_allows.contains(a)) {
                        m.remove_allow(a)?;
                    }
                }
                if let Some(old) = old {
                    for a in old.datapath.allow.iter().filter(|a| !p.allow.contains(a) && !runtime_allows.contains(a)) {
                        m.remove_allow(a)?;
                    }
                    for b in old.datapath.block.iter().filter(|b| !p.block.contains(b)) {
                        m.remove_block(b)?;
                    }
                }
                for a in p.allow.iter().chain(runtime_allows) {
                    m.insert_allow(a, now)?;
                }
                for b in &p.block {
                    m.insert_block(b, 0)?;
                }
                Ok(())
            })();
            r.and_then(|()| Self::lists_changed(self.cfg.as_ref(), &self.host, i))
                .with_context(|| format!("datapath on {}", i.name))?;
        }
        Ok(())
    }

    /// On exit: keep the pinned links (`stay`) or detach.
    pub fn release(&mut self, stay: bool) {
        for i in &mut self.ifaces {
            i.dp.release(&i.att.link_pin, stay);
            if stay {
                log::info!("{}: staying attached; the next start adopts the link", i.name);
            } else {
                log::info!("{}: detached", i.name);
            }
        }
        self.ifaces.clear();
    }
}

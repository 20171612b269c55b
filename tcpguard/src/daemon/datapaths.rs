//! The protected interfaces, one loaded and attached datapath each, and the
//! fan-out the daemon needs over them: counters summed, lists and settings
//! written to every one, attack mode read and set on all.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tcpguard_common::{
    map_names,
    sketch::{self, Hll},
    AttackState, BlockEntry, Counter, Counters, HoBucket, Settings, SrcStats, ATTACK_REASON_DAEMON,
    ATTACK_REASON_SYN_RATE, FLAG_ANSWER, FLAG_TX_BULK,
};

use super::{
    host::{self, Link},
    responder::{Change, Responder},
};
use crate::{
    config::Config,
    loader::{source_chain, Attachment, Datapath, LoadOptions},
    maps::{Maps, MapsError},
    net::Prefix,
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
    /// The interface as the kernel last described it (index, MAC, MTU, kind).
    pub link: Link,
    /// Who answers this interface's SYNs in attack mode.
    pub responder: Responder,
    /// The datapath is allowed to answer from XDP now (`FLAG_ANSWER` as
    /// last written).
    pub answering: bool,
    /// The kernel's failed-transmit tracepoints are attached for it.
    pub tx_watch: bool,
    /// Its counters (summed over CPUs) at the last two readings.
    pub counters: Counters,
    pub prev: Counters,
    /// Its attack-mode state as last read.
    pub attack: AttackState,
    /// The driver's own failed XDP_TX count (ethtool), where it has one.
    pub driver_tx_errors: Option<u64>,
}

impl Iface {
    /// A counter's advance between the last two readings.
    pub fn delta(&self, c: Counter) -> u64 {
        self.counters.get(c).wrapping_sub(self.prev.get(c))
    }
}

/// The datapath's attack mode as last read (all interfaces).
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

/// Every protected interface's datapath.
pub struct Datapaths {
    ifaces: Vec<Iface>,
    /// `struct net_device`'s ifindex offset (kernel BTF; 0 = unknown).
    dev_ifindex_off: u32,
    /// The host's addresses as last written to the datapaths.
    local: Vec<IpAddr>,
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `s` with what comes from the interface: the MSS from its MTU, its MAC and
/// index, and whether veth's bulk-transmit tracepoint reports its replies.
fn with_link(s: Settings, l: &Link, dev_ifindex_off: u32) -> Settings {
    let mtu = if l.mtu == 0 { 1500 } else { l.mtu.clamp(576, 65_535) };
    let mut mac = [0u8; 8];
    mac[..6].copy_from_slice(&l.mac);
    let bulk = if l.kind == "veth" { FLAG_TX_BULK } else { 0 };
    Settings {
        flags: (s.flags & !FLAG_TX_BULK) | bulk,
        synack_mss4: mtu - 40,
        synack_mss6: mtu - 60,
        mac,
        ifindex: l.ifindex,
        dev_ifindex_off,
        ..s
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
                link,
                responder,
                answering: false,
                tx_watch,
                counters: Counters::default(),
                prev: Counters::default(),
                attack: AttackState::default(),
                driver_tx_errors: None,
            });
        }
        let dev_ifindex_off = host::net_device_ifindex_offset().unwrap_or_else(|e| {
            log::warn!("no ifindex offset from the kernel's BTF ({e}): xdp:xdp_exception failures are not counted");
            0
        });
        Ok((Datapaths { ifaces, dev_ifindex_off, local: Vec::new() }, readers))
    }

    /// Keep each datapath in step with the host: the interface's MTU (the
    /// MSS of XDP SYN-ACKs), MAC and index, and the host's own addresses
    /// (the only ones answered for). Changes are written at once and logged.
    pub fn follow_host(&mut self) {
        for i in &mut self.ifaces {
            i.driver_tx_errors = host::driver_xdp_tx_errors(&i.name).ok().flatten();
            let Ok(now) = host::link_by_name(&i.name) else { continue };
            if now.mtu != i.link.mtu || now.mac != i.link.mac || now.ifindex != i.link.ifindex {
                log::info!(
                    "{}: interface changed (mtu {} -> {}, ifindex {} -> {}, mac {} -> {}); XDP SYN-ACKs follow",
                    i.name,
                    i.link.mtu,
                    now.mtu,
                    i.link.ifindex,
                    now.ifindex,
                    mac_str(i.link.mac),
                    mac_str(now.mac)
                );
                i.link = now;
                let mut m = Maps::new(&mut i.dp.ebpf);
                let r = m.settings().and_then(|cur| m.set_settings(&with_link(cur, &i.link, self.dev_ifindex_off)));
                if let Err(e) = r {
                    log::error!("{}: writing the interface's settings: {e}", i.name);
                }
            }
        }
        match host::local_addrs() {
            Ok(addrs) if addrs != self.local => {
                let added: Vec<IpAddr> = addrs.iter().filter(|a| !self.local.contains(a)).copied().collect();
                let gone: Vec<IpAddr> = self.local.iter().filter(|a| !addrs.contains(a)).copied().collect();
                let r = self.each(|_, m| {
                    for a in &added {
                        m.add_local(*a)?;
                    }
                    for a in &gone {
                        m.remove_local(*a)?;
                    }
                    Ok(())
                });
                match r {
                    Ok(_) => {
                        log::info!(
                            "local addresses: {} added, {} gone ({} in all)",
                            added.len(),
                            gone.len(),
                            addrs.len()
                        );
                        self.local = addrs;
                    }
                    Err(e) => log::error!("writing the local addresses: {e:#}"),
                }
            }
            Ok(_) => {}
            Err(e) => log::error!("reading the host's addresses: {e}"),
        }
    }

    /// One tick of every interface's responder: fall back to the kernel when
    /// XDP replies fail to leave, try XDP again after the back-off
    /// (`set_answering` then applies it).
    pub fn step_responders(&mut self, t: f64) {
        for i in &mut self.ifaces {
            let (sent, failed) = (i.delta(Counter::CookieSent), i.delta(Counter::XdpTxFailed));
            let link = &i.link;
            match i.responder.step(t, sent, failed, || host::judge_delivery(link)) {
                Some(Change::FellBack { failed, sent, retry_in }) => log::error!(
                    "{}: XDP replies are not leaving ({failed} of {sent} transmits failed in one tick): the \
                     kernel's SYN cookies answer on this interface; XDP is tried again in {retry_in:.0} s",
                    i.name
                ),
                Some(Change::Retrying) => {
                    log::info!("{}: trying the XDP responder again ({})", i.name, i.responder.reason);
                }
                Some(Change::Kept) => log::info!("{}: XDP replies leave again; the XDP responder answers", i.name),
                Some(Change::StillUndeliverable) | None => {}
            }
        }
    }

    /// Let the datapaths answer from XDP (where their responder is XDP) or
    /// stop them. Written only where it changes; errors are logged.
    pub fn set_answering(&mut self, armed: bool) {
        for i in &mut self.ifaces {
            let want = armed && i.responder.xdp;
            if want == i.answering {
                continue;
            }
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r = m.settings().and_then(|cur| {
                let flags = if want { cur.flags | FLAG_ANSWER } else { cur.flags & !FLAG_ANSWER };
                m.set_settings(&Settings { flags, ..cur })
            });
            match r {
                Ok(()) => i.answering = want,
                Err(e) => log::error!("{}: switching the XDP responder: {e}", i.name),
            }
        }
    }

    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// Ask the kernel whether each interface's XDP link is still attached to
    /// it (the interface may have been deleted or re-created, or the link
    /// detached by hand); log each change once. `Iface::attached` holds it.
    pub fn check_attached(&mut self) {
        for i in &mut self.ifaces {
            let now = crate::sys::link_attached_to(&i.att.link_pin, &i.name).unwrap_or_else(|e| {
                log::debug!("{}: reading the XDP link {}: {e}", i.name, i.att.link_pin.display());
                false
            });
            if now != i.attached {
                if now {
                    log::info!("{}: XDP attached again", i.name);
                } else {
                    log::error!(
                        "{}: XDP is no longer attached (interface deleted or re-created, or the link detached): \
                             this interface is unprotected until tcpguard restarts",
                        i.name
                    );
                }
                i.attached = now;
            }
        }
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

    /// Global counters summed over interfaces (and CPUs).
    pub fn counters(&mut self) -> Result<Counters> {
        let mut c = Counters::default();
        let per = self.each(|_, m| m.counters())?;
        for (i, x) in self.ifaces.iter_mut().zip(per) {
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
        Ok(sketch::hll_estimate(&sketch::hll_merge(regs.iter())))
    }

    /// Attack mode over all interfaces: active if any is, the earliest entry.
    pub fn attack(&mut self) -> Result<DpAttack> {
        let mut out = DpAttack::default();
        let per = self.each(|_, m| m.attack())?;
        for (i, a) in self.ifaces.iter_mut().zip(&per) {
            i.attack = *a;
        }
        for a in per {
            out.entries += a.entries;
            if a.active != 0 && (!out.active || a.entered_ns < out.entered_ns) {
                out.active = true;
                out.by_datapath = a.reason == ATTACK_REASON_SYN_RATE;
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
        Ok(out)
    }

    /// Put every interface in attack mode (entered by the daemon) or take
    /// them out of it. Errors are logged per interface.
    pub fn set_attack(&mut self, on: bool, now: u64) {
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r = m.attack().and_then(|cur| {
                let next = if on {
                    AttackState { active: 1, reason: ATTACK_REASON_DAEMON, entered_ns: now, first_cookie_ns: 0, ..cur }
                } else {
                    AttackState { active: 0, left_ns: now, ..cur }
                };
                m.set_attack(&next)
            });
            if let Err(e) = r {
                log::error!("{}: setting the datapath's attack mode: {e}", i.name);
            }
        }
    }

    /// Mark every interface's attack mode (on) as entered by the datapath at
    /// `now`: what a new daemon adopts from a previous one.
    pub fn adopt_attack(&mut self, now: u64) {
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let r = m.attack().and_then(|cur| {
                if cur.active == 0 {
                    return Ok(());
                }
                m.set_attack(&AttackState { reason: ATTACK_REASON_SYN_RATE, entered_ns: now, ..cur })
            });
            if let Err(e) = r {
                log::error!("{}: adopting the datapath's attack mode: {e}", i.name);
            }
        }
    }

    pub fn block(&mut self, p: &Prefix, expires_ns: u64) -> Result<()> {
        self.each(|_, m| m.block(p, expires_ns)).map(drop)
    }

    /// Whether any interface had the block.
    pub fn unblock(&mut self, p: &Prefix) -> Result<bool> {
        Ok(self.each(|_, m| m.unblock(p))?.into_iter().any(|x| x))
    }

    pub fn allow(&mut self, p: &Prefix, now_ns: u64) -> Result<()> {
        self.each(|_, m| m.allow(p, now_ns)).map(drop)
    }

    pub fn disallow(&mut self, p: &Prefix) -> Result<()> {
        self.each(|_, m| m.disallow(p)).map(drop)
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

    /// One source's statistics summed over interfaces; `None` if none tracks it.
    pub fn source(&mut self, addr: IpAddr) -> Result<Option<SrcStats>> {
        let mut total: Option<SrcStats> = None;
        for s in self.each(|_, m| m.source(addr))?.into_iter().flatten() {
            let t = total.get_or_insert_with(SrcStats::default);
            t.syns += s.syns;
            t.completed += s.completed;
            t.half_open += s.half_open;
            t.dropped += s.dropped;
        }
        Ok(total)
    }

    /// An aggregate's SYNs summed over interfaces; `None` if none counts it.
    pub fn aggregate(&mut self, net: IpAddr) -> Result<Option<u64>> {
        let found: Vec<_> = self.each(|_, m| m.aggregate(net))?.into_iter().flatten().collect();
        Ok((!found.is_empty()).then(|| found.iter().map(|a| a.syns).sum()))
    }

    /// Write the settings and lists of `cfg` to every interface; entries of
    /// `old` that are gone are removed. `settings` is completed per
    /// interface (MSS from its MTU, the list flags as the lists say).
    pub fn apply(
        &mut self,
        settings: &Settings,
        cfg: &Config,
        old: Option<&Config>,
        runtime_allows: &[Prefix],
        now: u64,
    ) -> Result<()> {
        let p = &cfg.datapath;
        for i in &mut self.ifaces {
            let mut m = Maps::new(&mut i.dp.ebpf);
            let answering = if i.answering { FLAG_ANSWER } else { 0 };
            let r: Result<(), MapsError> = (|| {
                let cur = m.settings()?;
                let keep = cur.flags & (tcpguard_common::FLAG_HAS_BLOCKS | tcpguard_common::FLAG_HAS_ALLOWS);
                let s = Settings { flags: (settings.flags & !FLAG_ANSWER) | keep | answering, ..*settings };
                m.set_settings(&with_link(s, &i.link, self.dev_ifindex_off))?;
                m.set_ports(&p.ports)?;
                // On start (no `old`), entries a previous run left pinned that
                // the config no longer has go too: `tcpguard allow` lasts
                // until the daemon restarts, as it says.
                if old.is_none() {
                    for a in m.allows()?.iter().filter(|a| !p.allow.contains(a) && !runtime_allows.contains(a)) {
                        m.disallow(a)?;
                    }
                }
                if let Some(old) = old {
                    for a in old.datapath.allow.iter().filter(|a| !p.allow.contains(a) && !runtime_allows.contains(a)) {
                        m.disallow(a)?;
                    }
                    for b in old.datapath.block.iter().filter(|b| !p.block.contains(b)) {
                        m.unblock(b)?;
                    }
                }
                for a in p.allow.iter().chain(runtime_allows) {
                    m.allow(a, now)?;
                }
                for b in &p.block {
                    m.block(b, 0)?;
                }
                m.sync_block_flag()
            })();
            r.with_context(|| format!("datapath on {}", i.name))?;
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

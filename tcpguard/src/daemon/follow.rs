//! Each interface's datapath kept in step with the host: the interface's
//! MTU, MAC and index (the MSS and addressing of XDP SYN-ACKs), the host's
//! own addresses (the only ones answered for), whether XDP replies leave
//! (the responder falls back to the kernel's cookies when they do not),
//! whether the XDP link is still attached, and interfaces that go away and
//! come back (deleted, re-created, moved to another namespace and back):
//! reported gone at once, attached again by themselves when they return.

use std::net::IpAddr;

use tcpguard_common::Counter;

use super::{
    datapaths::{Datapaths, HostFacts, Iface},
    host::{self, Link},
    responder::{Change, Responder},
};
use crate::{config::Config, loader::source_chain};

/// Attach an interface's datapath to a new device of its name: the link
/// and egress pins of the old one are stale. Its maps (lists, tables) are
/// kept. Logged; a failure is logged and tried again next tick.
fn reattach(cfg: &Config, host: &HostFacts, i: &mut Iface, link: Link) {
    let egress_pin = i.att.link_pin.with_file_name(crate::loader::EGRESS_LINK);
    for pin in [&i.att.link_pin, &egress_pin] {
        if let Err(e) = std::fs::remove_file(pin) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("{}: removing the stale pin {}: {e}", i.name, pin.display());
            }
        }
    }
    match i.dp.attach_pinned(&i.name, cfg.daemon.xdp_mode, &i.att.link_pin) {
        Ok(att) => i.att = att,
        Err(e) => {
            if i.present {
                log::error!("{}: attaching to the new interface failed: {e}: {}", i.name, source_chain(&e));
            }
            i.present = true;
            i.attached = false;
            return;
        }
    }
    i.egress = i.dp.attach_egress_pinned(&i.name, &egress_pin).is_ok();
    i.responder = Responder::new(host::judge_delivery(&link), crate::maps::monotonic_ns() as f64 / 1e9);
    log::warn!(
        "{}: the interface is back (ifindex {} -> {}): XDP attached again in {} mode, egress {}; protection resumes \
         (responder {}: {})",
        i.name,
        i.link.ifindex,
        link.ifindex,
        i.att.how.as_str(),
        if i.egress { "attached" } else { "not attached" },
        i.responder.name(),
        i.responder.reason
    );
    i.link = link;
    i.present = true;
    i.attached = true;
    i.answering = false; // the responder starts held, as at start
    if let Err(e) = Datapaths::write_settings(Some(cfg), host, i) {
        log::error!("{}: writing the interface's settings: {e}", i.name);
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Datapaths {
    /// Keep each datapath in step with the host: the interface's MTU (the
    /// MSS of XDP SYN-ACKs), MAC and index, and the host's own addresses
    /// (the only ones answered for). Changes are written at once and logged.
    pub fn follow_host(&mut self) {
        let cfg = self.cfg.as_ref();
        for i in &mut self.ifaces {
            let now = match host::link_by_name(&i.name) {
                Ok(now) => now,
                Err(e) => {
                    if i.present {
                        log::error!(
                            "{}: the interface is gone ({e}): unprotected until it returns; tcpguard attaches \
                             again by itself when an interface of this name appears",
                            i.name
                        );
                    }
                    i.present = false;
                    i.attached = false;
                    continue;
                }
            };
            if !i.present || now.ifindex != i.link.ifindex {
                if crate::sys::link_attached_to(&i.att.link_pin, &i.name).unwrap_or(false) {
                    // Moved to another namespace and back: the device, and
                    // its XDP link, stayed the same.
                    log::warn!("{}: the interface is back, its XDP link still attached; protection resumes", i.name);
                    (i.present, i.attached, i.link) = (true, true, now);
                    if let Err(e) = Datapaths::write_settings(cfg, &self.host, i) {
                        log::error!("{}: writing the interface's settings: {e}", i.name);
                    }
                } else if let Some(cfg) = cfg {
                    // A new device of the name (deleted and re-created, maybe
                    // between two ticks): attached anew, stale pins replaced.
                    reattach(cfg, &self.host, i, now);
                }
                continue;
            }
            if now.mtu != i.link.mtu || now.mac != i.link.mac {
                log::info!(
                    "{}: interface changed (mtu {} -> {}, mac {} -> {}); XDP SYN-ACKs follow",
                    i.name,
                    i.link.mtu,
                    now.mtu,
                    mac_str(i.link.mac),
                    mac_str(now.mac)
                );
                i.link = now;
                if let Err(e) = Datapaths::write_settings(cfg, &self.host, i) {
                    log::error!("{}: writing the interface's settings: {e}", i.name);
                }
            }
        }
        match host::local_addrs() {
            Ok(addrs) if addrs != self.local => {
                let added: Vec<IpAddr> = addrs.iter().filter(|a| !self.local.contains(a)).copied().collect();
                let gone: Vec<IpAddr> = self.local.iter().filter(|a| !addrs.contains(a)).copied().collect();
                let r = self.each(|_, m| m.change_locals(&added, &gone));
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
        let cfg = self.cfg.as_ref();
        for i in &mut self.ifaces {
            let want = armed && i.responder.xdp;
            if want == i.answering {
                continue;
            }
            i.answering = want;
            if let Err(e) = Datapaths::write_settings(cfg, &self.host, i) {
                i.answering = !want;
                log::error!("{}: switching the XDP responder: {e}", i.name);
            }
        }
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
                        "{}: XDP is no longer attached: the interface was deleted or re-created (attached again \
                         when one of its name is there), or the link was detached by hand (restart tcpguard)",
                        i.name
                    );
                }
                i.attached = now;
            }
        }
    }
}

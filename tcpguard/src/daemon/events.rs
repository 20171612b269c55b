//! What the datapath tells the daemon between ticks: heavy-source reports,
//! attack-mode and ACK-checking-mode entries on its ring buffer, and aya-log records, each
//! read by a task that wakes on the buffer's notification.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use std::net::IpAddr;
use tcpguard_common::{AckModeEvent, AggEvent, HeavyEvent, ModeEvent};
use tokio::sync::mpsc;

use crate::loader::Datapath;

/// A record from a datapath's ring buffer.
pub enum DpEvent {
    /// A source reached the heavy rate.
    Heavy { addr: IpAddr, syns: u64 },
    /// An aggregate (/24, /64) reached the heavy-prefix rate.
    HeavyPrefix { prefix: crate::net::Prefix, syns: u64 },
    /// An interface's datapath entered attack mode by itself.
    AttackEntered { iface: String, entered_ns: u64 },
    /// An interface's egress program put its datapath in ACK-checking mode.
    AckModeEntered { iface: String, entered_ns: u64 },
}

pub fn spawn_reader(iface: String, rb: RingBuf<MapData>, tx: mpsc::Sender<DpEvent>) -> Result<()> {
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
                    DpEvent::Heavy {
                        addr: crate::maps::key_addr(&tcpguard_common::SrcKey { addr: ev.addr }),
                        syns: ev.syns,
                    }
                } else if item.len() == std::mem::size_of::<AggEvent>() {
                    // SAFETY: as above, a whole AggEvent.
                    let ev: AggEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    let addr = crate::maps::key_addr(&tcpguard_common::SrcKey { addr: ev.addr });
                    DpEvent::HeavyPrefix { prefix: crate::net::Prefix::new(addr, ev.len as u8), syns: ev.syns }
                } else if item.len() == std::mem::size_of::<ModeEvent>() {
                    // SAFETY: as above, a whole ModeEvent.
                    let ev: ModeEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    DpEvent::AttackEntered { iface: iface.clone(), entered_ns: ev.entered_ns }
                } else if item.len() == std::mem::size_of::<AckModeEvent>() {
                    // SAFETY: as above, a whole AckModeEvent.
                    let ev: AckModeEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    DpEvent::AckModeEntered { iface: iface.clone(), entered_ns: ev.entered_ns }
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

pub fn start_logger(dp: &mut Datapath, iface: &str) {
    match aya_log::EbpfLogger::init(&mut dp.ebpf) {
        Ok(logger) => {
            let iface = iface.to_string();
            tokio::spawn(async move {
                // SAFETY: the logger owns its ring-buffer fd, which stays open
                // and unchanged until the logger (moved into the AsyncFd) drops.
                let registered =
                    unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
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

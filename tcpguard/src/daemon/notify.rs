//! systemd notification (sd_notify) without libsystemd: READY=1 after
//! attach, WATCHDOG=1 from the tick loop, RELOADING=1 / STOPPING=1.

use std::os::unix::net::UnixDatagram;

pub fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    if let Err(e) = res {
        log::debug!("sd_notify {msg:?}: {e}");
    }
}

/// True when systemd expects keep-alives (WatchdogSec= set).
pub fn watchdog_enabled() -> bool {
    std::env::var("WATCHDOG_USEC").is_ok_and(|v| v.parse::<u64>().is_ok_and(|u| u > 0))
}

/// MONOTONIC_USEC for RELOADING=1 (Type=notify-reload wants it; harmless otherwise).
pub fn reloading() {
    let us = crate::maps::monotonic_ns() / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={us}"));
}

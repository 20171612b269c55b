//! The kernel's own view, as a cross-check of the datapath: SYN_RECV
//! sockets (netlink sock_diag, filtered in the kernel), TcpExt counters from
//! /proc/net/netstat, and the `net.ipv4.tcp_syncookies` sysctl.

use std::{collections::HashMap, io, path::Path};

use serde::{Deserialize, Serialize};

pub const SYNCOOKIES: &str = "/proc/sys/net/ipv4/tcp_syncookies";
pub const TIMESTAMPS: &str = "/proc/sys/net/ipv4/tcp_timestamps";

pub use crate::model::KernelView;

/// The kernel's counters, with `syn_recv` request sockets (read with the
/// listeners, `listeners::read`).
pub fn read_view(syn_recv: u64) -> KernelView {
    let ext = read_tcpext().unwrap_or_default();
    let g = |k: &str| ext.get(k).copied().unwrap_or(0);
    KernelView {
        syn_recv,
        req_qfull_cookies: g("TCPReqQFullDoCookies"),
        req_qfull_drops: g("TCPReqQFullDrop"),
        syncookies_sent: g("SyncookiesSent"),
        syncookies_recv: g("SyncookiesRecv"),
        syncookies_failed: g("SyncookiesFailed"),
        listen_overflows: g("ListenOverflows"),
        listen_drops: g("ListenDrops"),
        syncookies: read_syncookies().unwrap_or(0),
        out_rsts: read_table("/proc/net/snmp", "Tcp:").ok().and_then(|t| t.get("OutRsts").copied()).unwrap_or(0),
    }
}

/// TcpExt counters from /proc/net/netstat (a header line of names, then a
/// line of values).
pub fn read_tcpext() -> io::Result<HashMap<String, u64>> {
    read_table("/proc/net/netstat", "TcpExt:")
}

fn read_table(path: &str, prefix: &str) -> io::Result<HashMap<String, u64>> {
    parse_table(&std::fs::read_to_string(path)?, prefix)
        .ok_or_else(|| io::Error::other(format!("no {prefix} lines in {path}")))
}

pub fn parse_tcpext(text: &str) -> io::Result<HashMap<String, u64>> {
    parse_table(text, "TcpExt:").ok_or_else(|| io::Error::other("no TcpExt lines in /proc/net/netstat"))
}

/// One table of /proc/net/netstat or /proc/net/snmp: the first two lines
/// starting with `prefix` (names, then values).
fn parse_table(text: &str, prefix: &str) -> Option<HashMap<String, u64>> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return None;
    };
    Some(
        names
            .split_whitespace()
            .skip(1)
            .zip(values.split_whitespace().skip(1))
            .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
            .collect(),
    )
}

pub fn read_syncookies() -> io::Result<u8> {
    let s = std::fs::read_to_string(SYNCOOKIES)?;
    s.trim().parse().map_err(|_| io::Error::other(format!("unexpected {SYNCOOKIES} value {s:?}")))
}

pub fn write_syncookies(v: u8) -> io::Result<()> {
    std::fs::write(SYNCOOKIES, format!("{v}\n"))
}

pub fn read_timestamps() -> io::Result<u8> {
    let s = std::fs::read_to_string(TIMESTAMPS)?;
    s.trim().parse().map_err(|_| io::Error::other(format!("unexpected {TIMESTAMPS} value {s:?}")))
}

pub fn write_timestamps(v: u8) -> io::Result<()> {
    std::fs::write(TIMESTAMPS, format!("{v}\n"))
}

/// The window scale the kernel gives this host's listeners, from
/// `net.ipv4.tcp_rmem` (max) and `net.core.rmem_max`: XDP SYN-ACKs must
/// advertise the same one.
pub fn listener_wscale() -> u8 {
    let rmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").ok();
    let tcp_max = rmem.as_deref().and_then(|s| s.split_whitespace().nth(2)?.parse().ok()).unwrap_or(6_291_456);
    let core_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992);
    tcpguard_common::synack::kernel_wscale(tcp_max, core_max)
}

/// An interface's MTU in the current network namespace (SIOCGIFMTU).
pub fn iface_mtu(name: &str) -> io::Result<u32> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed ifreq is valid; the name is copied with its length checked.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        // SAFETY: fd from socket() above.
        unsafe { libc::close(fd) };
        return Err(io::Error::other(format!("interface name {name:?} too long")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU fills ifr_mtu of a valid ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: fd from socket() above.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    // SAFETY: the kernel wrote ifr_mtu.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Held for the daemon's whole life: an exclusive `flock` on the state
/// directory itself (not on a file in it, which could be deleted and
/// recreated under a running daemon), taken before anything is attached
/// or adopted. A second daemon with the same state directory stops there.
pub struct InstanceLock {
    _dir: std::fs::File,
}

pub fn lock_instance(state_dir: &Path) -> io::Result<InstanceLock> {
    std::fs::create_dir_all(state_dir)?;
    let dir = std::fs::File::open(state_dir)?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&dir), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = std::fs::read_to_string(state_dir.join("daemon.pid")).unwrap_or_default();
            return Err(io::Error::other(format!(
                "another tcpguard daemon (pid {}) holds {} (daemon.state-dir); stop it first",
                pid.trim(),
                state_dir.display()
            )));
        }
        return Err(err);
    }
    std::fs::write(state_dir.join("daemon.pid"), format!("{}\n", std::process::id()))?;
    Ok(InstanceLock { _dir: dir })
}

/// Whether the bpffs holding `pin_root` is a different filesystem from the
/// one PID 1 sees at the same path (or, where PID 1's root cannot be read,
/// the parent process): then the pins live in a bpffs of this process's
/// own mount namespace (e.g. under `ip netns exec`) and vanish with it. A
/// service whose /sys/fs/bpf is propagated from the host sees the same
/// filesystem and is not flagged.
pub fn private_bpffs(pin_root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let mut ours = pin_root.to_path_buf();
    while !ours.exists() {
        if !ours.pop() {
            return false;
        }
    }
    let Ok(dev) = std::fs::metadata(&ours).map(|m| m.dev()) else { return false };
    let rel = ours.strip_prefix("/").unwrap_or(&ours).to_path_buf();
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    for root in ["/proc/1/root".to_string(), format!("/proc/{ppid}/root")] {
        let theirs = Path::new(&root).join(&rel);
        if std::fs::read_link(&root).is_err() {
            continue; // that root is not readable here
        }
        return std::fs::metadata(&theirs).map(|m| m.dev()).map_or(true, |d| d != dev);
    }
    false
}

/// 64 random bits (getrandom), for hash seeds.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: writes at most 8 bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n != 8 {
        // Still unpredictable enough to an outside attacker.
        return crate::maps::monotonic_ns().rotate_left(17) ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(b)
}

/// The sysctl value tcpguard changed and must restore, kept on disk so a
/// restart after a crash can put it back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The operator's tcp_syncookies value while tcpguard forces 2.
    pub syncookies_original: Option<u8>,
    /// The operator's tcp_timestamps value while the XDP responder needs 2.
    #[serde(default)]
    pub timestamps_original: Option<u8>,
}

/// The kernel's default of both sysctls tcpguard saves: what is restored
/// when the saved original cannot be trusted.
pub const SYSCTL_DEFAULT: u8 = 1;

/// The state file as read: each field kept or refused on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    pub state: SavedState,
    /// What was wrong, each with what is done instead (for the log).
    pub problems: Vec<String>,
    /// The file exists but is no JSON object: which sysctls it recorded is
    /// unknown (the caller restores any left at 2 to the kernel default).
    pub unreadable: bool,
}

/// Read `dir/state.json`. A field that is absent or null records nothing;
/// a value the sysctl takes (0, 1, 2) is kept; anything else (a string,
/// 300, -1: a malformed or hostile file) is refused, named, and replaced by
/// the kernel default, since a record means tcpguard changed the sysctl.
pub fn load_state(dir: &Path) -> LoadedState {
    let path = dir.join("state.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LoadedState::default(),
        Err(e) => {
            let problems = vec![format!("cannot read {}: {e}", path.display())];
            return LoadedState { problems, unreadable: true, ..LoadedState::default() };
        }
    };
    let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(&text) else {
        let problems = vec![format!("{} is not a JSON object of saved sysctl values", path.display())];
        return LoadedState { problems, unreadable: true, ..LoadedState::default() };
    };
    let mut problems = Vec::new();
    let mut field = |key: &str, sysctl: &str| -> Option<u8> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => {
                if let Some(n @ 0..=2) = x.as_u64() {
                    return Some(n as u8);
                }
                problems.push(format!(
                    "{}: {key} = {x} is not a value {sysctl} takes (0, 1 or 2): the kernel default \
                     {SYSCTL_DEFAULT} is restored instead",
                    path.display()
                ));
                Some(SYSCTL_DEFAULT)
            }
        }
    };
    let state = SavedState {
        syncookies_original: field("syncookies_original", "net.ipv4.tcp_syncookies"),
        timestamps_original: field("timestamps_original", "net.ipv4.tcp_timestamps"),
    };
    LoadedState { state, problems, unreadable: false }
}

pub fn save_state(dir: &Path, st: &SavedState) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, dir.join("state.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpext_parse() {
        let text = "TcpExt: SyncookiesSent SyncookiesRecv ListenDrops\nTcpExt: 5 3 9\nIpExt: InOctets\nIpExt: 1\n";
        let m = parse_tcpext(text).unwrap();
        assert_eq!(m["SyncookiesSent"], 5);
        assert_eq!(m["ListenDrops"], 9);
        assert!(parse_tcpext("IpExt: a\nIpExt: 1\n").is_err());
        // /proc/net/snmp's Tcp table (not "TcpExt:").
        let snmp = "Ip: Forwarding\nIp: 1\nTcp: RtoAlgorithm ActiveOpens OutRsts\nTcp: 1 7 4242\n";
        assert_eq!(parse_table(snmp, "Tcp:").unwrap()["OutRsts"], 4242);
        assert!(parse_table(snmp, "Udp:").is_none());
    }

    #[test]
    fn state_round_trip() {
        let dir = std::env::temp_dir().join(format!("tcpguard-state-{}", std::process::id()));
        let st = SavedState { syncookies_original: Some(1), timestamps_original: Some(1) };
        save_state(&dir, &st).unwrap();
        assert_eq!(load_state(&dir).state, st);
        // A state file from before timestamps were saved still loads.
        std::fs::write(dir.join("state.json"), r#"{"syncookies_original": 0}"#).unwrap();
        assert_eq!(load_state(&dir).state, SavedState { syncookies_original: Some(0), timestamps_original: None });
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(load_state(&dir), LoadedState::default());
    }

    #[test]
    fn saved_values_are_validated_field_by_field() {
        let dir = std::env::temp_dir().join(format!("tcpguard-state-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |text: &str| {
            std::fs::write(dir.join("state.json"), text).unwrap();
            load_state(&dir)
        };
        // Hostile: a value the sysctl does not take is never written back;
        // the kernel default is restored instead, and said.
        let l = load(r#"{"syncookies_original": 7, "timestamps_original": 7}"#);
        assert_eq!(l.state, SavedState { syncookies_original: Some(1), timestamps_original: Some(1) });
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems[0].contains("syncookies_original = 7") && l.problems[0].contains("default 1"));
        // Malformed fields, each on its own: a valid one beside is kept.
        for bad in [r#""abc""#, "300", "-1", "1.5", "true"] {
            let l = load(&format!(r#"{{"syncookies_original": {bad}, "timestamps_original": 0}}"#));
            assert_eq!(l.state, SavedState { syncookies_original: Some(1), timestamps_original: Some(0) }, "{bad}");
            assert_eq!(l.problems.len(), 1, "{bad}: {:?}", l.problems);
            assert!(!l.unreadable);
        }
        // Not JSON at all, or not an object: unknown, said.
        for junk in ["abc", "300", "[1, 2]", ""] {
            let l = load(junk);
            assert!(l.unreadable && l.state == SavedState::default() && l.problems.len() == 1, "{junk}: {l:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

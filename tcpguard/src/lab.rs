//! Network-namespace labs: namespaces joined by veth pairs, owned by guards
//! that delete them on drop (also when a test panics). Used by the kernel
//! tests, the demo and the benchmarks; never touches the host's own links.
//!
//! Names carry the creating PID (`tgl<pid>x<n>...`), so runs never collide and
//! a lab left behind by a killed run is swept by the next one.

use std::{
    fs::File,
    io,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip` (iproute2): {0}")]
    Spawn(#[source] io::Error),
    #[error("cannot enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("attaching the pass-everything XDP program to the lab's peer end {iface}")]
    PeerXdp {
        iface: String,
        #[source]
        source: Box<crate::loader::LoaderError>,
    },
}

const PREFIX: &str = "tgl";
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Run `ip` with arguments; error with its stderr on failure.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip").args(args).output().map_err(LabError::Spawn)?;
    if !out.status.success() {
        return Err(LabError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create a namespace named `tgl<pid>x<seq><role>` with loopback up.
    pub fn new(role: &str) -> Result<Self, LabError> {
        let name = format!("{PREFIX}{}x{}{role}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Move the calling thread into this namespace. Sockets it opens
    /// afterwards belong to the namespace.
    pub fn enter(&self) -> Result<(), LabError> {
        let path = format!("/run/netns/{}", self.name);
        let err = |source| LabError::Enter { name: self.name.clone(), source };
        let f = File::open(&path).map_err(err)?;
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Run `f` on a new thread inside the namespace and wait for it.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, LabError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Spawn a detached thread inside the namespace.
    pub fn spawn<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> Result<std::thread::JoinHandle<T>, LabError> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| LabError::Enter { name: self.name.clone(), source })?;
        Ok(std::thread::spawn(move || {
            // SAFETY: plain syscall on an fd we own.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        }))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.run(|| std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), value))?
            .map_err(|source| LabError::Enter { name: format!("{} sysctl {key}", self.name), source })
    }

    pub fn read_sysctl(&self, key: &str) -> Result<String, LabError> {
        self.run(|| std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))))?
            .map(|s| s.trim().to_string())
            .map_err(|source| LabError::Enter { name: format!("{} sysctl {key}", self.name), source })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth ends and XDP attachments.
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("tcpguard lab: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// The daemon binary the lab tools start: `tcpguard`, next to the running
/// `tcpguard-lab` (both are built into the same target directory).
pub fn tcpguard_exe() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?.with_file_name("tcpguard");
    if exe.exists() {
        Ok(exe)
    } else {
        Err(io::Error::other(format!("{} not found: build it with `cargo build --release -p tcpguard`", exe.display())))
    }
}

/// Delete lab namespaces left by processes that no longer exist.
pub fn sweep_stale() {
    let Ok(out) = ip(&["netns", "list"]) else { return };
    for line in out.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some((pid, _)) = rest.split_once('x') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Two namespaces joined by a veth pair:
/// server `srv_if` = 198.18.0.1/16, client `cli_if` = 198.18.0.2/16
/// (RFC 2544 benchmarking range: never a real host). The server routes
/// everything (SYN-ACKs to spoofed sources too) to the client, whose kernel
/// discards what is not its own.
pub struct Lab {
    pub server: Netns,
    pub client: Netns,
    pub srv_if: String,
    pub cli_if: String,
    pub srv_mac: [u8; 6],
    pub cli_mac: [u8; 6],
    /// A pass-everything XDP program on the peer ends (client, attacker):
    /// veth delivers the server's XDP_TX frames (SYN-ACKs from the XDP
    /// responder) only to a peer that has an XDP program. A NIC needs none;
    /// a container's veth usually has none, which `set_peer_xdp` makes.
    peer_xdp: std::sync::Mutex<PeerXdp>,
}

/// The pass-everything program and the peer ends it is attached to.
struct PeerXdp {
    dp: crate::loader::Datapath,
    links: std::collections::HashMap<String, aya::programs::xdp::XdpLinkId>,
}

/// Attach the pass-everything program to `dev` inside `ns` (`on`), or detach it.
fn peer_program(peer: &std::sync::Mutex<PeerXdp>, ns: &Netns, dev: &str, on: bool) -> Result<(), LabError> {
    let mut guard = peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let p: &mut PeerXdp = &mut guard;
    let err = |source| LabError::PeerXdp { iface: dev.to_string(), source: Box::new(source) };
    if on {
        if !p.links.contains_key(dev) {
            let (_, id) = ns.run(|| p.dp.attach_baseline_link(dev))?.map_err(err)?;
            p.links.insert(dev.to_string(), id);
        }
    } else if let Some(id) = p.links.remove(dev) {
        p.dp.detach_baseline(id).map_err(err)?;
    }
    Ok(())
}

fn attach_peer(peer: &std::sync::Mutex<PeerXdp>, ns: &Netns, dev: &str) -> Result<(), LabError> {
    peer_program(peer, ns, dev, true)
}

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER_IP6: &str = "fd00:7467::1";
pub const CLIENT_IP6: &str = "fd00:7467::2";

impl Lab {
    pub fn new() -> Result<Self, LabError> {
        sweep_stale();
        let server = Netns::new("s")?;
        let client = Netns::new("c")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let srv_if = format!("tgs{}x{n}", std::process::id());
        let cli_if = format!("tgc{}x{n}", std::process::id());
        // Create the pair directly inside the namespaces: it never exists in
        // the host namespace.
        ip(&[
            "link",
            "add",
            &srv_if,
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            &cli_if,
            "netns",
            &client.name,
        ])?;
        for (ns, dev, v4, v6) in [
            (&server, &srv_if, "198.18.0.1/16", "fd00:7467::1/64"),
            (&client, &cli_if, "198.18.0.2/16", "fd00:7467::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", dev])?;
            ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        server.ip(&["route", "add", "default", "via", "198.18.0.2"])?;
        server.ip(&["-6", "route", "add", "default", "via", CLIENT_IP6])?;
        // The client answers ARP/ND for nothing spoofed; static neighbours
        // keep the lab independent of timing.
        let srv_mac = mac(&server, &srv_if)?;
        let cli_mac = mac(&client, &cli_if)?;
        let small = crate::loader::LoadOptions { half_open_entries: 1024, source_entries: 1024, ..Default::default() };
        let peer = crate::loader::Datapath::load(&small)
            .map_err(|source| LabError::PeerXdp { iface: cli_if.clone(), source: Box::new(source) })?;
        let peer_xdp = std::sync::Mutex::new(PeerXdp { dp: peer, links: std::collections::HashMap::new() });
        attach_peer(&peer_xdp, &client, &cli_if)?;
        Ok(Lab { server, client, srv_if, cli_if, srv_mac, cli_mac, peer_xdp })
    }
}

impl Lab {
    /// Put the pass-everything program on the client's end of the server's
    /// veth, or take it off: without it (a container's veth), XDP_TX frames
    /// from the server never reach the client.
    pub fn set_peer_xdp(&self, on: bool) -> Result<(), LabError> {
        peer_program(&self.peer_xdp, &self.client, &self.cli_if, on)
    }
}

fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6], LabError> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    let bad = || LabError::Ip { args: format!("link show {dev}"), stderr: format!("no MAC in {out:?}") };
    let s = out.split("link/ether ").nth(1).ok_or_else(bad)?;
    let mut m = [0u8; 6];
    for (i, part) in s.split_whitespace().next().ok_or_else(bad)?.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// A third namespace, the attacker, on its own veth into the server:
/// server side `srv_if` = 198.19.254.1/24, attacker `att_if` = 198.19.254.2/24.
pub struct Attacker {
    pub ns: Netns,
    pub srv_if: String,
    pub att_if: String,
    pub srv_mac: [u8; 6],
    pub att_mac: [u8; 6],
}

impl Lab {
    /// Add an attacker namespace joined to the server by a second veth pair.
    pub fn add_attacker(&self) -> Result<Attacker, LabError> {
        let ns = Netns::new("a")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let srv_if = format!("tgS{}x{n}", std::process::id());
        let att_if = format!("tgA{}x{n}", std::process::id());
        ip(&[
            "link",
            "add",
            &srv_if,
            "netns",
            &self.server.name,
            "type",
            "veth",
            "peer",
            "name",
            &att_if,
            "netns",
            &ns.name,
        ])?;
        self.server.ip(&["addr", "add", "198.19.254.1/24", "dev", &srv_if])?;
        ns.ip(&["addr", "add", "198.19.254.2/24", "dev", &att_if])?;
        self.server.ip(&["link", "set", &srv_if, "up"])?;
        ns.ip(&["link", "set", &att_if, "up"])?;
        let srv_mac = mac(&self.server, &srv_if)?;
        let att_mac = mac(&ns, &att_if)?;
        attach_peer(&self.peer_xdp, &ns, &att_if)?;
        Ok(Attacker { ns, srv_if, att_if, srv_mac, att_mac })
    }
}

/// A TCP listener with a chosen backlog, accepting and answering in a
/// thread inside the server namespace until dropped.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Server {
    pub fn start(ns: &Netns, addr: std::net::SocketAddr, backlog: i32) -> Result<Self, LabError> {
        use std::sync::{atomic::AtomicBool, Arc};
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let l = match listen(addr, backlog) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return 0;
                }
            };
            let mut served = 0u64;
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        use std::io::{Read as _, Write as _};
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
                        let mut b = [0u8; 2];
                        let _ = s.read(&mut b);
                        let _ = s.write_all(b"ok");
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_micros(500)),
                }
            }
            served
        })?;
        rx.recv().map_err(|_| LabError::Spawn(io::Error::other("listener thread died")))?.map_err(LabError::Spawn)?;
        Ok(Server { stop, thread: Some(thread) })
    }

    /// Stop and return how many connections were served.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A non-blocking listener with an explicit backlog (std's is fixed).
fn listen(addr: std::net::SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    // Re-issue listen(2) with the wanted backlog.
    // SAFETY: fd owned by `l`.
    if unsafe { libc::listen(l.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Outcome of one legit connection attempt.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Seconds since the prober started.
    pub at: f64,
    pub ok: bool,
    pub latency: std::time::Duration,
}

/// A legit client, open-loop: every `interval` a new attempt starts (in its
/// own thread, so a stalled attempt does not delay the next) that connects,
/// sends, reads the answer and closes, bounded by `timeout`. Every setup
/// under test thus gets the same number of attempts. Runs in the client
/// namespace until stopped.
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub results: std::sync::Arc<std::sync::Mutex<Vec<Probe>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(
        ns: &Netns,
        to: std::net::SocketAddr,
        interval: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<Self, LabError> {
        use std::sync::{atomic::AtomicBool, Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let (s2, r2) = (stop.clone(), results.clone());
        let thread = ns.spawn(move || {
            let t0 = std::time::Instant::now();
            let mut inflight = Vec::new();
            let mut n: u32 = 0;
            while !s2.load(Ordering::Relaxed) {
                let r3 = r2.clone();
                // Threads inherit this thread's network namespace.
                inflight.push(std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    let ok = probe_once(to, timeout);
                    let p = Probe { at: t.duration_since(t0).as_secs_f64(), ok, latency: t.elapsed() };
                    r3.lock().expect("probe lock").push(p);
                }));
                inflight.retain(|h| !h.is_finished());
                n += 1;
                let next = interval * n;
                if let Some(rest) = next.checked_sub(t0.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            for h in inflight {
                let _ = h.join();
            }
        })?;
        Ok(Prober { stop, results, thread: Some(thread) })
    }

    pub fn snapshot(&self) -> Vec<Probe> {
        let mut v = self.results.lock().expect("probe lock").clone();
        v.sort_by(|a, b| a.at.total_cmp(&b.at));
        v
    }

    /// Stop starting attempts, wait for those in flight, return all.
    pub fn stop(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_once(to: std::net::SocketAddr, timeout: std::time::Duration) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&to, timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    let mut b = [0u8; 2];
    s.write_all(b"hi").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"ok"
}

/// Success ratio and latency percentiles (of successful attempts).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ProbeStats {
    pub attempts: usize,
    pub success: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn probe_stats(p: &[Probe]) -> ProbeStats {
    if p.is_empty() {
        return ProbeStats::default();
    }
    let mut lat: Vec<f64> = p.iter().filter(|x| x.ok).map(|x| x.latency.as_secs_f64() * 1000.0).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * q).round() as usize] };
    ProbeStats {
        attempts: p.len(),
        success: p.iter().filter(|x| x.ok).count() as f64 / p.len() as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

/// `tcpguard run` started inside a lab's server namespace with `nsenter
/// --net` (network namespace only, so pins land on the host's bpffs).
/// On drop: SIGTERM (the daemon restores sysctls and detaches), then
/// SIGKILL if needed, then its pins and files are removed.
pub struct DaemonProcess {
    child: std::process::Child,
    pub socket: std::path::PathBuf,
    pub log: std::path::PathBuf,
    cleanup: Vec<std::path::PathBuf>,
    rt: tokio::runtime::Runtime,
}

impl DaemonProcess {
    /// Start `exe run <args...> --socket <dir>/tcpguard.sock` in `ns` and
    /// wait until it answers. `cleanup` lists pin directories to remove.
    pub fn start(
        ns: &Netns,
        exe: &std::path::Path,
        args: &[&std::ffi::OsStr],
        dir: &std::path::Path,
        cleanup: Vec<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("tcpguard.sock");
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg(exe)
            .arg("run")
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting tcpguard run")?;
        let mut cleanup = cleanup;
        cleanup.push(dir.to_path_buf());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let d = DaemonProcess { child, socket, log, cleanup, rt };
        let t = std::time::Instant::now();
        while d.status().is_none() {
            if t.elapsed() > std::time::Duration::from_secs(15) {
                anyhow::bail!("the daemon did not start:\n{}", std::fs::read_to_string(&d.log).unwrap_or_default());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(d)
    }

    pub fn status(&self) -> Option<crate::proto::StatusView> {
        match self.rt.block_on(crate::ctl::request(&self.socket, &crate::proto::Request::Status)) {
            Ok(crate::proto::Response::Status(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = std::time::Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in &self.cleanup {
            let _ = std::fs::remove_dir_all(p);
            // Its parent too, when this run left it empty (the default pin
            // root a demo creates); anything pinned there by others stays.
            if let Some(parent) = p.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// A flood spec from `ifname`/`src_mac` toward `dst_mac`, with defaults
/// callers override: as fast as possible, no count, 10 s, Linux-like options.
fn flood_from(
    ifname: &str,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    dst: std::net::IpAddr,
    dport: u16,
    sources: crate::flood::Sources,
) -> crate::flood::FloodSpec {
    crate::flood::FloodSpec {
        ifname: ifname.to_string(),
        src_mac,
        dst_mac,
        dst,
        dport,
        sources,
        rate: 0,
        count: 0,
        duration: std::time::Duration::from_secs(10),
        options: true,
        seed: 0x7467,
    }
}

impl Lab {
    /// A flood sent from the client namespace into the server.
    pub fn client_flood(
        &self,
        dst: std::net::IpAddr,
        dport: u16,
        sources: crate::flood::Sources,
    ) -> crate::flood::FloodSpec {
        flood_from(&self.cli_if, self.cli_mac, self.srv_mac, dst, dport, sources)
    }
}

impl Attacker {
    /// A flood sent from the attacker namespace into the server.
    pub fn flood(&self, dst: std::net::IpAddr, dport: u16, sources: crate::flood::Sources) -> crate::flood::FloodSpec {
        flood_from(&self.att_if, self.att_mac, self.srv_mac, dst, dport, sources)
    }
}

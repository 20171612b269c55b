//! Traffic in a lab: a real kernel listener, open-loop connection probes
//! and their statistics, and `tcpguard run` as a process in a namespace.

use std::{io, os::fd::AsRawFd, process::Command, sync::atomic::Ordering};

use crate::lab::{LabError, Netns};

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

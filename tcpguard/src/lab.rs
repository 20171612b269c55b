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
    Enter { name: String, #[source] source: io::Error },
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
            "link", "add", &srv_if, "netns", &server.name, "type", "veth", "peer", "name", &cli_if,
            "netns", &client.name,
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
        Ok(Lab { server, client, srv_if, cli_if, srv_mac, cli_mac })
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

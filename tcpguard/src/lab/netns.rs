//! Network-namespace labs: namespaces joined by veth pairs, owned by guards
//! that delete them on drop (also when a test panics). Used by the kernel
//! tests, the demo and the benchmarks; never touches the host's own links.
//!
//! Names carry the creating PID (`tgl<pid>x<n>...`), so runs never collide and
//! a lab left behind by a killed run is swept by the next one.

use std::{
    fs::File,
    io,
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
pub(crate) static SEQ: AtomicU32 = AtomicU32::new(0);

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

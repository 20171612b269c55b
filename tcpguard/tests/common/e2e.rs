//! The end-to-end harness: a daemon started in a lab's server namespace,
//! its files, its status and metrics.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use serde_json::Value;
use tcpguard::{
    lab::flood::{self, FloodReport, FloodSpec, Sources},
    lab::{Lab, Server, SERVER_IP},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_tcpguard");
pub const PORT: u16 = 8080;
pub const TICK_MS: u64 = 250;

/// Per-test files: config, socket, state, pins. Removed on drop.
pub struct Files {
    pub dir: PathBuf,
    pub pin_root: PathBuf,
}

impl Files {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcpguard-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Let an unprivileged user reach the socket's directory (the socket's own mode decides).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/tcpguard-e2e-{tag}-{}", std::process::id()));
        Files { dir, pin_root }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("tcpguard.sock")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("tcpguard.toml")
    }
    pub fn write_config(&self, policy: &str, extra: &str) {
        self.write_config_policy(&format!("mode = \"{policy}\""), extra);
    }

    /// `policy`: the lines of the [policy] table.
    pub fn write_config_policy(&self, policy: &str, extra: &str) {
        let text = format!(
            "[daemon]\ntick-ms = {TICK_MS}\nstate-dir = \"{}\"\npin-root = \"{}\"\n\
             [detection]\nhold-down-secs = 2\n\
             [policy]\n{policy}\n\
             [control]\nsocket = \"{}\"\n{extra}",
            self.dir.join("state").display(),
            self.pin_root.display(),
            self.socket().display()
        );
        std::fs::write(self.config(), text).unwrap();
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A daemon we started; killed by PID on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(lab: &Lab, f: &Files) -> Self {
        Self::start_on(lab, f, &[&lab.srv_if])
    }

    /// Protecting the named interfaces of the lab's server.
    pub fn start_on(lab: &Lab, f: &Files, ifaces: &[&str]) -> Self {
        let log = f.dir.join(format!("daemon-{}.log", Instant::now().elapsed().as_nanos()));
        let out = std::fs::File::create(&log).unwrap();
        // nsenter --net: the network namespace only, so pins land on the host's bpffs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.server.name))
            .args([BIN, "run", "--config"])
            .arg(f.config())
            .args(ifaces.iter().flat_map(|i| ["--iface", i]))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start tcpguard run");
        let d = Daemon { child, log };
        let t = Instant::now();
        while status(f).is_none() {
            assert!(t.elapsed() < Duration::from_secs(10), "daemon did not come up:\n{}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "tcpguard exited with {st}:\n{}", self.log_text());
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no clean exit:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log_text()
    }
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn status(f: &Files) -> Option<Value> {
    let o = Command::new(BIN).args(["status", "--json", "--socket"]).arg(f.socket()).output().ok()?;
    o.status.success().then(|| serde_json::from_slice(&o.stdout).expect("status --json is JSON"))
}

pub fn wait_status(f: &Files, limit: Duration, what: &str, mut pred: impl FnMut(&Value) -> bool) -> (Value, Duration) {
    let t = Instant::now();
    loop {
        if let Some(v) = status(f) {
            if pred(&v) {
                return (v, t.elapsed());
            }
            assert!(t.elapsed() <= limit, "timed out after {limit:?} waiting for {what}; last status: {v:#}");
        } else if t.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}; daemon not answering");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn ctl(f: &Files, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).arg("--socket").arg(f.socket()).output().unwrap()
}

pub fn serve(lab: &Lab) -> Server {
    Server::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT), 128).expect("listener")
}

pub fn start_flood(
    lab: &Lab,
    sources: Sources,
    rate: u64,
    secs: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<FloodReport> {
    start_flood_to(lab, IpAddr::V4(SERVER_IP), sources, rate, secs, stop)
}

/// A flood from the client namespace to `dst`, port [`PORT`].
pub fn start_flood_to(
    lab: &Lab,
    dst: IpAddr,
    sources: Sources,
    rate: u64,
    secs: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<FloodReport> {
    let spec = FloodSpec {
        rate,
        duration: Duration::from_secs(secs),
        seed: rand_seed(),
        ..lab.client_flood(dst, PORT, sources)
    };
    lab.client.spawn(move || flood::run(&spec, &stop).expect("flood")).unwrap()
}

pub fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

pub fn scrape(lab: &Lab) -> String {
    lab.server
        .run(|| {
            let mut s = TcpStream::connect("127.0.0.1:9717").expect("metrics listener");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} not found"))
}

/// An XDP program is attached to the lab server's interface.
pub fn xdp_attached(lab: &Lab) -> bool {
    lab.server.ip(&["link", "show", "dev", &lab.srv_if]).unwrap().contains("xdp")
}

//! The Debian package under a real systemd: a Debian bookworm container
//! (debootstrap, cached under target/nspawn) booted with systemd-nspawn on
//! its own network namespace; the .deb that `cargo xtask deb` built is
//! installed with apt, and the unit as shipped is started, queried, reloaded,
//! hung, stopped and broken. Root, systemd-nspawn and debootstrap required
//! (`cargo xtask prereqs` installs them); the test fails, never skips.
//!
//! XDP is attached only to a veth pair made inside the container's own
//! network namespace; the flood is sent from a namespace this test creates.

#![allow(clippy::too_many_lines)] // one boot, checked top to bottom

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tcpguard::{
    lab::flood::{self, FloodSpec, Sources},
    lab::{probe_stats, Netns, Prober},
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Bump when the cached rootfs must be rebuilt (what it includes changed).
const ROOTFS_VERSION: &str = "1";
const SRV_MAC: [u8; 6] = [0x02, 0x54, 0x47, 0, 0, 1];
const ATK_MAC: [u8; 6] = [0x02, 0x54, 0x47, 0, 0, 2];

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn have(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success())
}

/// The Debian mirror apt is configured with (deb822 or one-line sources),
/// else deb.debian.org.
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    for f in files {
        let Ok(s) = fs::read_to_string(&f) else { continue };
        for line in s.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let uri = line
                .strip_prefix("URIs:")
                .and_then(|r| r.split_whitespace().next())
                .or_else(|| line.strip_prefix("deb ").and_then(|r| r.split_whitespace().find(|w| w.contains("://"))));
            // The Debian archive itself, not debian-security or a vendor's repository.
            if let Some(u) = uri.filter(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return u.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// The container's root: bookworm minbase with systemd, iproute2 and a
/// oneshot unit mounting bpffs (systemd refuses a .mount unit for an API
/// file system). Built once per machine; later runs reuse it read-only
/// (`--volatile=overlay`), so each boot starts from the same tree.
fn rootfs() -> PathBuf {
    let base = Path::new(ROOT).join("target/nspawn");
    let root = base.join("bookworm");
    let marker = base.join(format!("bookworm.ready-v{ROOTFS_VERSION}"));
    if marker.exists() {
        eprintln!("systemd test: cached rootfs {}", root.display());
        return root;
    }
    let t = Instant::now();
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&base).unwrap();
    let tmp = base.join("bookworm.partial");
    let _ = fs::remove_dir_all(&tmp);
    let mirror = debian_mirror();
    eprintln!("systemd test: building the container rootfs (debootstrap bookworm from {mirror}, once per machine)");
    let o = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd,systemd-sysv,dbus,iproute2", "bookworm"])
        .arg(&tmp)
        .arg(&mirror)
        .output()
        .expect("debootstrap not found: `cargo xtask prereqs` installs it");
    assert!(o.status.success(), "debootstrap failed:\n{}", text(&o));
    let units = tmp.join("etc/systemd/system");
    fs::create_dir_all(units.join("local-fs.target.wants")).unwrap();
    fs::write(
        units.join("bpffs.service"),
        "[Unit]\nDescription=BPF file system at /sys/fs/bpf (tcpguard test container)\nDefaultDependencies=no\n\
         ConditionPathIsMountPoint=!/sys/fs/bpf\nBefore=local-fs.target\n\n[Service]\nType=oneshot\n\
         RemainAfterExit=yes\nExecStart=/bin/mkdir -p /sys/fs/bpf\nExecStart=/bin/mount -t bpf bpffs /sys/fs/bpf\n\n\
         [Install]\nWantedBy=local-fs.target\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../bpffs.service", units.join("local-fs.target.wants/bpffs.service")).unwrap();
    // No console login prompt racing the test's commands for the tty.
    let _ = fs::remove_file(tmp.join("etc/systemd/system/getty.target.wants/getty@tty1.service"));
    fs::rename(&tmp, &root).unwrap();
    fs::write(&marker, format!("built in {:.0} s from {mirror}\n", t.elapsed().as_secs_f64())).unwrap();
    eprintln!("systemd test: rootfs built in {:.0} s", t.elapsed().as_secs_f64());
    root
}

/// The newest .deb `cargo xtask deb` wrote, refusing one older than the sources.
fn package() -> PathBuf {
    let dir = Path::new(ROOT).join("target/debian");
    let deb = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: build the package first with `cargo xtask deb`", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tcpguard_")))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("no tcpguard_*.deb in target/debian: run `cargo xtask deb`");
    let built = deb.metadata().unwrap().modified().unwrap();
    for src in ["tcpguard/src", "tcpguard-common/src", "tcpguard-ebpf/src", "config", "tcpguard/debian"] {
        for f in walk(&Path::new(ROOT).join(src)) {
            let m = f.metadata().unwrap().modified().unwrap();
            assert!(m <= built, "{} is newer than {}: rebuild with `cargo xtask deb`", f.display(), deb.display());
        }
    }
    deb
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A booted container. Dropping it powers it off (SIGTERM to nspawn, then
/// SIGKILL after 20 s) and removes the cgroups nspawn made for it.
struct Container {
    nspawn: Child,
    pid1: u32,
    cgroups: Vec<PathBuf>,
    log: PathBuf,
}

/// A cgroup per hierarchy that nspawn (`--keep-unit`) builds its own
/// `payload`/`supervisor` cgroups under; removed with the container.
fn own_cgroups() -> Vec<PathBuf> {
    let name = format!("tcpguard-nspawn-{}", std::process::id());
    let mut out = Vec::new();
    for h in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"] {
        if Path::new(h).join("cgroup.procs").exists() {
            out.push(Path::new(h).join(&name));
        }
    }
    if out.is_empty() {
        out.push(Path::new("/sys/fs/cgroup").join(&name));
    }
    for c in &out {
        fs::create_dir_all(c).unwrap_or_else(|e| panic!("mkdir {}: {e}", c.display()));
    }
    out
}

fn remove_cgroup(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Container {
    fn boot(root: &Path, deb: &Path) -> Container {
        let log = std::env::temp_dir().join(format!("tcpguard-nspawn-{}.log", std::process::id()));
        let cgroups = own_cgroups();
        let procs: Vec<PathBuf> = cgroups.iter().map(|c| c.join("cgroup.procs")).collect();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(root)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--volatile=overlay",
                "--capability=CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON,CAP_SYS_ADMIN",
                "--system-call-filter=bpf",
                "--console=read-only",
            ])
            .arg(format!("--bind-ro={}:/root/tcpguard.deb", deb.display()))
            .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::from(fs::File::options().append(true).open(&log).unwrap()));
        // SAFETY: between fork and exec only writes to already-known paths.
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    fs::write(p, "0")?;
                }
                Ok(())
            });
        }
        let nspawn = cmd.spawn().expect("systemd-nspawn not found: `cargo xtask prereqs` installs systemd-container");
        let mut c = Container { pid1: 0, nspawn, cgroups, log };
        let t = Instant::now();
        while c.pid1 == 0 {
            assert!(t.elapsed() < Duration::from_secs(30), "container did not start:\n{}", c.console());
            if let Ok(Some(st)) = c.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({st}):\n{}", c.console());
            }
            c.pid1 = descendant_named(c.nspawn.id(), "systemd").unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Until systemd's private bus is up, systemctl prints nothing.
        let state = loop {
            let o = c.sh("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !state.is_empty() || t.elapsed() > Duration::from_mins(1) {
                break state;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            state == "running",
            "container booted to {state:?}:\n{}\n{}",
            text(&c.sh("systemctl --failed --no-pager")),
            c.console()
        );
        c
    }

    fn console(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A shell command inside every namespace of the container.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "/bin/sh", "-c", script])
            .output()
            .expect("nsenter")
    }

    /// Like `sh`, asserting success; returns stdout and stderr.
    fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        if !o.status.success() {
            let j = text(&self.sh("journalctl -u tcpguard.service --no-pager -o cat -n 40"));
            panic!("in the container: {script}\n{}\ntcpguard's journal:\n{j}", text(&o));
        }
        text(&o)
    }

    fn unit_prop(&self, prop: &str) -> String {
        self.ok(&format!("systemctl show -P {prop} tcpguard.service")).trim().to_string()
    }

    fn journal(&self) -> String {
        self.ok("journalctl -u tcpguard.service --no-pager -o cat")
    }

    fn xdp_attached(&self) -> bool {
        self.ok("ip -d link show dev tg0").contains("prog/xdp")
    }

    fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut(&Self) -> bool) {
        let t = Instant::now();
        while !f(self) {
            assert!(t.elapsed() < Duration::from_secs(secs), "timed out after {secs} s waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SAFETY: signal to the child we started.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !matches!(self.nspawn.try_wait(), Ok(Some(_))) {
            // SAFETY: the container's init, which this test started; SIGKILL ends its PID namespace.
            unsafe { libc::kill(self.pid1 as i32, libc::SIGKILL) };
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        for c in &self.cgroups {
            remove_cgroup(c);
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// The first process under `pid` (depth first) whose comm is `name`.
fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
        if fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|s| s.trim() == name) {
            return Some(c);
        }
        if let Some(d) = descendant_named(c, name) {
            return Some(d);
        }
    }
    None
}

/// Rewrite one `key = value` line of the installed config (first match
/// after `[table]`).
fn set_key(c: &Container, table: &str, key: &str, value: &str) {
    c.ok(&format!(
        "sed -i '/^\\[{table}\\]/,/^\\[/ s|^{key} = .*|{key} = {value}|' /etc/tcpguard/tcpguard.toml && \
         grep -qxF '{key} = {value}' /etc/tcpguard/tcpguard.toml"
    ));
}

#[test]
fn package_under_real_systemd() {
    assert!(
        Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
        "the systemd test boots a container and must run as root"
    );
    for bin in ["systemd-nspawn", "debootstrap", "nsenter"] {
        assert!(have(bin), "{bin} not found: `cargo xtask prereqs` installs it");
    }
    let t0 = Instant::now();
    let deb = package();
    let root = rootfs();
    let t_boot = Instant::now();
    let c = Container::boot(&root, &deb);
    eprintln!("systemd test: container running in {:.1} s", t_boot.elapsed().as_secs_f64());

    // 1. The documented install path.
    c.ok("apt-get install -y -q /root/tcpguard.deb");
    c.ok("test -x /usr/bin/tcpguard && getent group tcpguard");
    let conffiles = c.ok("cat /var/lib/dpkg/info/tcpguard.conffiles");
    assert!(conffiles.contains("/etc/tcpguard/tcpguard.toml"), "config is not a conffile: {conffiles}");
    c.ok("grep -q '^group = \"tcpguard\"' /etc/tcpguard/tcpguard.toml");
    c.ok("test -f /lib/systemd/system/tcpguard.service && test -f /usr/share/man/man1/tcpguard-status.1.gz");
    c.ok("test -f /usr/share/bash-completion/completions/tcpguard");
    c.ok("test -f /usr/share/zsh/vendor-completions/_tcpguard");
    c.ok("test -f /usr/share/fish/vendor_completions.d/tcpguard.fish && test -f /usr/share/man/man1/tcpguard.1.gz");
    c.ok("tcpguard config check /etc/tcpguard/tcpguard.toml");
    assert_eq!(c.unit_prop("UnitFileState"), "disabled", "the package must not enable the service by itself");
    c.ok("useradd -M -G tcpguard alice && useradd -M bob");

    // 2. As installed (no interface set), the unit fails and says why.
    let o = c.sh("systemctl start tcpguard");
    assert!(!o.status.success(), "started with no interface configured");
    let j = c.journal();
    assert!(j.contains("daemon.interfaces"), "journal does not name the key to set:\n{j}");
    // A config error exits 78, which the unit does not retry.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.unit_prop("ExecMainStatus"), "78");
    assert_eq!(c.unit_prop("ActiveState"), "failed", "systemd retries a config that cannot work");
    assert_eq!(c.unit_prop("NRestarts"), "0");
    c.ok("systemctl reset-failed tcpguard");

    // The protected interface: a veth inside the container, its peer in a
    // namespace of ours that the flood comes from.
    let atk = Netns::new("ct").unwrap();
    // `ip` from the host's mount namespace (where /run/netns/<atk> is) in the container's network namespace.
    let o = Command::new("nsenter")
        .args(["-t", &c.pid1.to_string(), "-n", "ip", "link", "add", "tg0", "address", &mac(SRV_MAC)])
        .args(["type", "veth", "peer", "name", "tg1", "address", &mac(ATK_MAC), "netns", &atk.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "veth pair: {}", text(&o));
    c.ok("ip addr add 10.77.0.1/24 dev tg0 && ip link set tg0 up");
    atk.ip(&["addr", "add", "10.77.0.2/24", "dev", "tg1"]).unwrap();
    atk.ip(&["link", "set", "tg1", "up"]).unwrap();
    c.ok("echo 1 > /proc/sys/net/ipv4/tcp_syncookies && echo 1 > /proc/sys/net/ipv4/tcp_timestamps");
    set_key(&c, "daemon", "interfaces", "[\"tg0\"]");

    // 3. `systemctl start` returns once XDP is attached (READY=1 after attach).
    let t = Instant::now();
    c.ok("systemctl start tcpguard");
    let start_secs = t.elapsed().as_secs_f64();
    assert!(c.xdp_attached(), "systemctl start returned before XDP was attached to tg0");
    let j = c.journal();
    assert!(j.contains("TC egress attached"), "the hardened unit must allow the TCX egress link:\n{j}");
    assert_eq!(c.unit_prop("ActiveState"), "active");
    let pid_a = c.unit_prop("MainPID");

    // 4. The control socket: the group's members may use it, others may not.
    let s = c.ok("runuser -u alice -- tcpguard status");
    assert!(s.contains("tg0"), "status for a group member:\n{s}");
    let o = c.sh("runuser -u bob -- tcpguard status");
    assert!(!o.status.success(), "a user outside the group read the status:\n{}", text(&o));
    assert!(text(&o).contains("permission denied"), "refusal does not say why:\n{}", text(&o));

    // 5. Reload: a changed threshold applies; a broken file is refused by
    //    `systemctl reload` itself and the running config stays.
    set_key(&c, "detection", "min-syn-rate", "777");
    c.ok("systemctl reload tcpguard");
    c.wait_for("the reloaded threshold in status", 5, |c| c.ok("tcpguard status").contains("threshold 777"));
    c.ok("cp /etc/tcpguard/tcpguard.toml /root/good.toml");
    set_key(&c, "detection", "start-ticks", "0");
    let o = c.sh("systemctl reload tcpguard");
    assert!(!o.status.success(), "systemctl reload accepted a broken config");
    std::thread::sleep(Duration::from_millis(600));
    assert!(c.ok("tcpguard status").contains("threshold 777"), "the running config changed after a refused reload");
    assert_eq!(c.unit_prop("ActiveState"), "active");
    assert_eq!(c.unit_prop("MainPID"), pid_a, "a refused reload restarted the daemon");
    let j = c.journal();
    assert!(j.contains("detection.start-ticks"), "journal lacks the refused key:\n{j}");
    c.ok("cp /root/good.toml /etc/tcpguard/tcpguard.toml");

    // 6. A hung daemon: the watchdog kills it, the restarted one adopts the
    //    pinned link and the block-list.
    c.ok("tcpguard block 203.0.113.0/24");
    c.ok(&format!("kill -STOP {pid_a}"));
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.xdp_attached(), "the pinned link must keep protecting while the daemon hangs");
    let t = Instant::now();
    c.wait_for("the watchdog restart", 40, |c| {
        c.unit_prop("NRestarts") == "1" && c.unit_prop("ActiveState") == "active"
    });
    let watchdog_secs = t.elapsed().as_secs_f64();
    let pid_b = c.unit_prop("MainPID");
    assert_ne!(pid_b, pid_a);
    let j = c.journal();
    assert!(j.contains("Watchdog timeout"), "no watchdog timeout in the journal:\n{j}");
    let v: serde_json::Value = serde_json::from_str(&c.ok("tcpguard status --json 2>/dev/null")).unwrap();
    assert_eq!(v["interfaces"][0]["adopted"], true, "restarted daemon did not adopt the pinned link: {v}");
    let blocked = v["blocked"].to_string();
    assert!(blocked.contains("203.0.113.0/24"), "block-list lost across the restart: {blocked}");

    // 7. Under a flood the daemon forces the SYN-cookie sysctls; `systemctl
    //    stop` restores them and detaches.
    let stop = Arc::new(AtomicBool::new(false));
    let spec = FloodSpec {
        ifname: "tg1".into(),
        src_mac: ATK_MAC,
        dst_mac: SRV_MAC,
        dst: "10.77.0.1".parse().unwrap(),
        dport: 80,
        sources: Sources::Random("198.19.0.0/16".parse().unwrap()),
        rate: 60_000,
        count: 0,
        duration: Duration::from_secs(30),
        options: true,
        seed: 7,
        kind: tcpguard::lab::flood::FloodKind::Syn,
    };
    let flooding = {
        let (stop, spec) = (stop.clone(), spec.clone());
        atk.spawn(move || flood::run(&spec, &stop)).unwrap()
    };
    c.wait_for("net.ipv4.tcp_syncookies=2 under the flood", 20, |c| {
        c.ok("cat /proc/sys/net/ipv4/tcp_syncookies").trim() == "2"
    });
    assert_eq!(c.ok("cat /proc/sys/net/ipv4/tcp_timestamps").trim(), "2");
    c.ok("systemctl stop tcpguard");
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().unwrap().unwrap().sent;
    assert!(sent > 0);
    assert_eq!(c.ok("cat /proc/sys/net/ipv4/tcp_syncookies").trim(), "1", "syncookies not restored on stop");
    assert_eq!(c.ok("cat /proc/sys/net/ipv4/tcp_timestamps").trim(), "1", "timestamps not restored on stop");
    assert!(!c.xdp_attached(), "XDP still attached after systemctl stop");
    assert_eq!(c.unit_prop("ActiveState"), "inactive");

    // 8. A config that fails `config check`: the unit fails, the journal says why.
    set_key(&c, "detection", "start-ticks", "0");
    let o = c.sh("systemctl start tcpguard");
    assert!(!o.status.success(), "started with a broken config");
    assert_eq!(c.unit_prop("ActiveState"), "failed");
    let j = c.ok("journalctl -u tcpguard.service --no-pager -o cat -n 30");
    assert!(j.contains("detection.start-ticks") && j.contains("outside 1..=100"), "journal:\n{j}");
    assert!(!c.xdp_attached());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.unit_prop("ActiveState"), "failed", "systemd retries a config that fails the check");

    // 9. Upgrade (the package installed over itself): the running daemon is
    //    restarted and adopts the pinned link and maps; the edited conffile stays.
    c.ok("cp /root/good.toml /etc/tcpguard/tcpguard.toml && systemctl reset-failed tcpguard");
    c.ok("systemctl enable --now tcpguard");
    let pid_c = c.unit_prop("MainPID");
    c.ok("tcpguard block 198.51.100.0/24");
    // The container's veth is what a container has: no XDP program on its
    // peer. The responder says so and lets the kernel answer.
    let v: serde_json::Value = serde_json::from_str(&c.ok("tcpguard status --json 2>/dev/null")).unwrap();
    let i = &v["interfaces"][0];
    assert_eq!(i["responder"], "kernel cookies", "{i:#}");
    assert_eq!(i["responder_reason"], "XDP_TX undeliverable: veth peer has no XDP program", "{i:#}");
    assert_eq!(i["tx_watch"], true, "the hardened unit must allow the transmit watch: {i:#}");
    // On a veth that is the driver's own count (ethtool), read by the daemon.
    assert!(i["driver_xdp_tx_errors"].is_u64(), "the hardened unit reads veth's failed-transmit count: {i:#}");
    // The upgrade happens under a flood, with legit clients connecting to a
    // listener in the container throughout.
    let lstop = Arc::new(AtomicBool::new(false));
    let listener = container_listener(c.pid1, "10.77.0.1:8080", lstop.clone());
    let to: std::net::SocketAddr = "10.77.0.1:8080".parse().unwrap();
    let probes = Prober::start(&atk, to, Duration::from_millis(25), Duration::from_secs(3)).unwrap();
    let fstop = Arc::new(AtomicBool::new(false));
    let spec = FloodSpec { rate: 50_000, duration: Duration::from_mins(1), seed: 9, dport: 8080, ..spec };
    let flooding = {
        let stop = fstop.clone();
        atk.spawn(move || flood::run(&spec, &stop)).unwrap()
    };
    c.wait_for("attack mode under the flood", 10, |c| {
        let v: serde_json::Value = serde_json::from_str(&c.ok("tcpguard status --json 2>/dev/null")).unwrap();
        v["interfaces"][0]["mode"] == "attack"
    });
    c.ok("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall /root/tcpguard.deb");
    // Between the old daemon's exit and the new one's start, XDP stays attached.
    assert!(c.xdp_attached(), "the upgrade left the interface unprotected");
    c.wait_for("the upgraded daemon", 10, |c| {
        c.unit_prop("ActiveState") == "active" && c.unit_prop("MainPID") != pid_c
    });
    let pid_d = c.unit_prop("MainPID");
    assert_ne!(pid_d, pid_c, "an upgrade must restart the running daemon (new binary)");
    let v: serde_json::Value = serde_json::from_str(&c.ok("tcpguard status --json 2>/dev/null")).unwrap();
    assert_eq!(v["interfaces"][0]["adopted"], true, "the upgraded daemon did not adopt the pinned link: {v}");
    assert!(v["blocked"].to_string().contains("198.51.100.0/24"), "block-list lost across the upgrade: {v}");
    c.ok("grep -qxF 'interfaces = [\"tg0\"]' /etc/tcpguard/tcpguard.toml");
    assert!(c.journal().contains("SIGUSR2: handing over"), "the upgrade did not hand over");
    std::thread::sleep(Duration::from_secs(2));
    fstop.store(true, Ordering::Relaxed);
    let rate = flooding.join().unwrap().unwrap().pps();
    let p = probes.stop();
    lstop.store(true, Ordering::Relaxed);
    let served = listener.join().unwrap();
    let legit = probe_stats(&p);
    eprintln!(
        "upgrade under a {rate:.0} SYN/s flood: legit {:.1}% of {} (p99 {:.1} ms), listener served {served}",
        legit.success * 100.0,
        legit.attempts,
        legit.p99_ms
    );
    assert!(legit.success >= 0.99, "legit clients across the upgrade: {legit:?}");

    // 10. Removal stops and disables the service and detaches; purge removes
    //     the config and the saved state; the group stays.
    c.ok("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q tcpguard");
    assert!(!c.xdp_attached(), "XDP still attached after the package was removed");
    // Stopped, the unit file removed and masked (deb-systemd-helper, as
    // dh_installsystemd does: the enablement is forgotten on purge).
    c.ok("test ! -e /lib/systemd/system/tcpguard.service");
    c.ok("test \"$(readlink /etc/systemd/system/tcpguard.service)\" = /dev/null");
    assert_eq!(c.unit_prop("ActiveState"), "inactive");
    c.ok("test -f /etc/tcpguard/tcpguard.toml && test ! -e /usr/bin/tcpguard");
    c.ok("test -e /sys/fs/bpf/tcpguard/tg0"); // remove keeps the pinned block-list
    c.ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q tcpguard");
    c.ok("test ! -e /etc/tcpguard/tcpguard.toml && test ! -e /var/lib/tcpguard && getent group tcpguard");
    c.ok("test ! -e /etc/systemd/system/multi-user.target.wants/tcpguard.service");
    c.ok("test ! -L /etc/systemd/system/tcpguard.service");
    c.ok("test ! -e /sys/fs/bpf/tcpguard");

    eprintln!(
        "systemd test: start→READY {start_secs:.2} s, watchdog restart {watchdog_secs:.1} s, whole test {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A listener inside the container's network namespace that answers "ok"
/// to each connection, until `stop`. How many it served.
fn container_listener(pid1: u32, addr: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    use std::io::{Read as _, Write as _};
    let ns = std::fs::File::open(format!("/proc/{pid1}/ns/net")).unwrap();
    let addr = addr.to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on an fd we own, for this thread only.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) }, 0);
        let l = std::net::TcpListener::bind(&addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let served = served.clone();
                    // One thread each: a stalled client never holds up the next.
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                        let mut b = [0u8; 2];
                        if s.read_exact(&mut b).is_ok() && s.write_all(b"ok").is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        served.load(Ordering::Relaxed)
    })
}

//! `cargo xtask`: prerequisites, test, bench, demo, fuzz.
//!
//! xtask deliberately does not depend on the tcpguard crates: building them
//! needs bpf-linker and the nightly rust-src component, which `prereqs`
//! installs first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

mod plot;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent).
    Prereqs,
    /// Install prerequisites, build everything, run every test (root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The demo lab: install prerequisites, build release, run `tcpguard-lab demo` (root).
    Demo {
        /// Scale the phase durations (1.0 = about 55 s).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Benchmarks: per-packet cost with BPF_PROG_TEST_RUN; writes docs/benchmarks.md.
    Bench {
        /// Fewer repetitions (a quick look, not for the record).
        #[arg(long)]
        quick: bool,
    },
    /// Build the Debian package (target/debian/tcpguard_*.deb): binary, conffile,
    /// systemd unit, man pages, shell completions, alerting rules, dashboard.
    Deb,
    /// Fuzz the packet parser, the SYN option walk and the control socket's
    /// framing for longer than the test command does (5 s per target).
    Fuzz {
        /// Seconds per fuzz target (seven targets, run two at a time).
        #[arg(long, default_value_t = 300)]
        secs: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::Prereqs => prereqs(),
        Cmd::Test { args } => test(&args),
        Cmd::Bench { quick } => bench(quick),
        Cmd::Demo { scale } => demo(scale),
        Cmd::Fuzz { secs } => fuzz(secs),
        Cmd::Deb => {
            toolchain()?;
            cargo_deb()?;
            deb()
        }
    }
}

fn fuzz(secs: u64) -> Result<()> {
    toolchain()?;
    say(&format!("fuzzing for {secs} s per target (TCPGUARD_FUZZ_SECS)"));
    for (pkg, what) in [("tcpguard-common", "packet parser, SYN option walk"), ("tcpguard", "control-socket framing")] {
        say(&format!("{pkg}: {what}"));
        run(Command::new("cargo")
            .args(["test", "--release", "-p", pkg, "--test", "fuzz", "--", "--test-threads", "2", "--nocapture"])
            .env("TCPGUARD_FUZZ_SECS", secs.to_string()))?;
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !st.success() {
        bail!("{shown} failed: {st}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

const BPF_LINKER: &str = "0.10.4";
const CARGO_DEB: &str = "3.8.0";

/// Install every prerequisite that is missing, one visible line each.
fn prereqs() -> Result<()> {
    toolchain()?;
    cargo_deb()?;
    debian_tools(TEST_TOOLS)
}

/// The Debian packages the tests use: (command, package).
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("systemd-analyze", "systemd"),
    ("promtool", "prometheus"),
    ("systemd-nspawn", "systemd-container"),
    ("debootstrap", "debootstrap"),
    ("lintian", "lintian"),
];

/// What the demo needs (the lab's `ip`).
const LAB_TOOLS: &[(&str, &str)] = &[("ip", "iproute2")];

/// What the benchmarks need: the lab, and a font for the plot.
const BENCH_TOOLS: &[(&str, &str)] =
    &[("ip", "iproute2"), ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core")];

/// What building the eBPF object needs (no root).
fn toolchain() -> Result<()> {
    // 1. The nightly toolchain with rust-src (the eBPF crate builds core).
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("installing the nightly toolchain (rustup toolchain install nightly --profile minimal)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let comps = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .unwrap_or_default();
    if comps.lines().any(|l| l.starts_with("rust-src")) {
        say("nightly rust-src: present");
    } else {
        say("installing rust-src for the nightly toolchain (rustup component add rust-src --toolchain nightly)");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    // 2. bpf-linker, the pinned version that loads the toolchain's own LLVM.
    cargo_tool("bpf-linker", BPF_LINKER)
}

/// A tool from crates.io at a pinned version (`cargo install --locked`),
/// unless that version is on the PATH already.
fn cargo_tool(name: &str, version: &str) -> Result<()> {
    let have = output(Command::new(name).arg("--version")).unwrap_or_default();
    if have.contains(version) {
        say(&format!("{name} {version}: present"));
        return Ok(());
    }
    say(&format!("installing {name} {version} (cargo install --locked {name}@{version})"));
    run(Command::new("cargo").args(["install", "--locked", &format!("{name}@{version}")]))
}

/// cargo-deb, which builds the Debian package.
fn cargo_deb() -> Result<()> {
    cargo_tool("cargo-deb", CARGO_DEB)
}

/// Debian packages for the kernel tests, labs, the systemd container and the
/// alerting tests (root installs the missing ones). Each is probed by a
/// command on the PATH, or by a file when given an absolute path.
fn debian_tools(tools: &[(&str, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    for (probe, pkg) in tools {
        let present = if probe.starts_with('/') {
            Path::new(probe).exists()
        } else {
            output(Command::new("sh").args(["-c", &format!("command -v {probe}")])).is_some()
        };
        if !present {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        let names: Vec<&str> = tools.iter().map(|(_, p)| *p).collect();
        say(&format!("Debian packages {}: present", names.join(", ")));
    } else if is_root() {
        say(&format!("installing {} (apt-get install -y {})", missing.join(", "), missing.join(" ")));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        bail!(
            "missing packages {}: install them (apt-get install {}) or run as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    prereqs()?;
    if !is_root() {
        bail!(
            "the test suite includes kernel tests (BPF_PROG_TEST_RUN, XDP on veth, network namespaces) and \
            must run as root"
        );
    }
    say("building the workspace (eBPF object via tcpguard/build.rs)");
    run(Command::new("cargo").args(["build", "--release"]))?;
    deb()?;
    say("running every test: host unit tests, BPF_PROG_TEST_RUN tests, namespace labs");
    run(Command::new("cargo").args(["test", "--release"]).args(extra))?;
    Ok(())
}

/// Build the Debian package from the release binary.
fn deb() -> Result<()> {
    say("building the release binary for the package");
    run(Command::new("cargo").args(["build", "--release", "-p", "tcpguard", "--bin", "tcpguard"]))?;
    let root = workspace_root();
    let assets = root.join("target/release/deb-assets");
    let _ = std::fs::remove_dir_all(&assets);
    say("generating man pages, shell completions and the packaged config (tcpguard generate)");
    let o = Command::new(root.join("target/release/tcpguard"))
        .arg("generate")
        .arg(&assets)
        .output()
        .context("running tcpguard generate")?;
    if !o.status.success() {
        bail!("tcpguard generate failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Man pages gzipped, as Debian ships them (-n: no name or time inside).
    for entry in std::fs::read_dir(assets.join("man")).context("reading the generated man pages")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            run(Command::new("gzip").args(["-9nf"]).arg(&path))?;
        }
    }
    let maintainer = std::env::var("TCPGUARD_DEB_MAINTAINER").ok().filter(|m| !m.trim().is_empty());
    write_changelog(&assets.join("changelog"), maintainer.as_deref())?;
    say("packaging (cargo deb --no-build)");
    let mut cmd = Command::new("cargo");
    cmd.args(["deb", "-p", "tcpguard", "--no-build"]);
    if let Some(m) = &maintainer {
        say(&format!("maintainer: {m} (TCPGUARD_DEB_MAINTAINER)"));
        cmd.args(["--maintainer", m]);
    }
    let o = cmd.stderr(std::process::Stdio::inherit()).output().context("running cargo deb")?;
    if !o.status.success() {
        bail!("cargo deb failed");
    }
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().lines().last().unwrap_or_default());
    if !path.exists() {
        bail!("cargo deb did not name the package it wrote (stdout: {})", String::from_utf8_lossy(&o.stdout));
    }
    say(&format!("wrote {}", path.display()));
    Ok(())
}

/// The first `key = "value"` line of a manifest (relative to the workspace).
fn manifest_string(manifest: &str, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(workspace_root().join(manifest))?;
    let prefix = format!("{key} = \"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.strip_suffix('"')))
        .map(str::to_string)
        .with_context(|| format!("no {key} in {manifest}"))
}

/// The Debian changelog of this build: one entry for the workspace version,
/// dated by the last commit (reproducible), signed by the package's
/// maintainer (`maintainer`, else the one in tcpguard/Cargo.toml).
fn write_changelog(path: &Path, maintainer: Option<&str>) -> Result<()> {
    let version = manifest_string("Cargo.toml", "version")?;
    let default_maintainer = manifest_string("tcpguard/Cargo.toml", "maintainer")?;
    let date = output(Command::new("git").args(["log", "-1", "--format=%cD"]))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .or_else(|| output(Command::new("date").arg("-R")).map(|d| d.trim().to_string()))
        .context("no date for the changelog")?;
    let text = format!(
        "tcpguard ({version}-1) unstable; urgency=medium\n\n  * tcpguard {version}: see /usr/share/doc/tcpguard/README.md.\n\n -- {}  {date}\n",
        maintainer.unwrap_or(&default_maintainer)
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// The daemon and the lab tools (`tcpguard-lab`: demo, flood, benchmarks),
/// which the shipped build leaves out.
const LAB_BUILD: &[&str] = &["build", "--release", "-p", "tcpguard", "--features", "lab"];

fn demo(scale: f64) -> Result<()> {
    toolchain()?;
    debian_tools(LAB_TOOLS)?;
    if !is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    say("building tcpguard and its lab tools (release, feature lab)");
    run(Command::new("cargo").args(LAB_BUILD))?;
    let bin = workspace_root().join("target/release/tcpguard-lab");
    run(Command::new(bin).args(["demo", "--scale", &scale.to_string()]))
}

fn bench(quick: bool) -> Result<()> {
    toolchain()?;
    debian_tools(BENCH_TOOLS)?;
    if !is_root() {
        bail!("benchmarks run BPF_PROG_TEST_RUN and namespace labs and need root");
    }
    run(Command::new("cargo").args(LAB_BUILD))?;
    let bin = workspace_root().join("target/release/tcpguard-lab");
    let q: &[&str] = if quick { &["--quick"] } else { &[] };
    let cmd = format!("cargo xtask bench{}", if quick { " --quick" } else { "" });

    say("per-packet cost (BPF_PROG_TEST_RUN)");
    let o =
        Command::new(&bin).args(["bench", "packets"]).args(q).output().context("running tcpguard-lab bench packets")?;
    if !o.status.success() {
        bail!("tcpguard-lab bench packets failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let packets = String::from_utf8_lossy(&o.stdout).into_owned();
    print!("{packets}");

    say("flood lab: (a)-(e) side by side, detection latency, daemon cost (a few minutes)");
    let o = Command::new(&bin)
        .args(["bench", "flood"])
        .args(q)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running tcpguard-lab bench flood")?;
    if !o.status.success() {
        bail!("tcpguard-lab bench flood failed");
    }
    let flood: Value = serde_json::from_slice(&o.stdout).context("bench flood output")?;
    std::fs::create_dir_all("docs")?;
    plot::success_vs_rate(&flood, Path::new("docs/flood-success.png"))?;
    let flood_md = flood_markdown(&flood, &cmd);
    print!("{flood_md}");

    let doc = format!(
        "# tcpguard benchmarks\n\nProduced by `{cmd}` on {} (as root), in one run. Ratios are \
         against a baseline measured in the same run; absolute numbers are for orientation.\n\n{packets}\n{flood_md}",
        machine()
    );
    let doc = format!("{doc}\n{ATTACK_MODE_READING}");
    std::fs::write("docs/benchmarks.md", doc)?;
    std::fs::write("docs/bench-flood.json", serde_json::to_string_pretty(&flood)?)?;
    say("wrote docs/benchmarks.md, docs/bench-flood.json and docs/flood-success.png");
    Ok(())
}

/// How to read the attack-mode rows, and what dominates where a goal is
/// missed (appended to docs/benchmarks.md by every run).
const ATTACK_MODE_READING: &str = "## Reading the attack-mode numbers

Goals (issue: attack mode): at the highest rate the lab reaches, legit success 100 %, legit p99 ≤ 2× the
kernel-alone p99 of the same run (or ≤ 20 ms), softirq per received flood packet ≤ 0.75× kernel alone:
compare the *full* rows of (e) and (b). Per packet: attack-mode SYN → SYN-ACK ≤ 0.3× the tracking path's
new-source SYN; a SYN from a heavy, blocked source ≤ 2× the empty program. Mitigation in effect ≤ 10 ms
after flood start (datapath stamps), attack declared ≤ 0.5 s.

What the attack-mode SYN costs, from the breakdown rows (each adds one stage to the one before): *responder off*
is the fixed-memory accounting (hash, count-min sketch, HyperLogLog, the per-CPU rate window, one sampled SYN in 64
tracked in full); *closed port* adds the socket lookup (`bpf_skc_lookup_tcp`: the established hash, where a random
spoofed 4-tuple lands on a cold bucket, then the listener hash); *cookie refused* adds the kernel helper's own checks;
the full row adds the cookie (two SipHash rounds in the kernel), the option read and the SYN-ACK's headers and
checksums. The socket lookup is the largest stage and cannot be skipped: a 4-tuple with a TIME_WAIT socket must go to
the kernel, and the cookie helper needs the listener. It is the same lookup the kernel makes for every SYN it
receives, so on the flood path it replaces, not adds to, the kernel's work: that is why softirq per received packet
falls while the per-packet ratio against the tracking path stays above 0.3×. What would cut it: answering from a
listener found once per port (a sockhash the daemon fills, which needs the listeners' fds) with the TIME_WAIT check
reduced to SYNs whose 4-tuple was recently closed, or the `bpf_sk_assign_tcp_reqsk` kfunc at TC ingress (kernel ≥
6.9; aya 0.14 cannot call kfuncs, later aya needs a newer rustc than this machine has).

The answered path also checks that the SYN is the host's own before the socket lookup: the destination MAC
against the interface's (a compare of six bytes in the settings already read) and the destination address in the
local-address hash (one lookup); the closed-port and refused rows pay it too, and the *not for this host* row
stops right after it, so that row less the *responder off* row is what the check costs. The transmit watch costs nothing per
packet: its raw tracepoint programs run once per veth flush of XDP_TX frames (up to 16 frames) and per driver
exception, not per SYN.

The blocked heavy source's SYN is dropped before any accounting; what it pays is the fixed part of every packet
(per-CPU counters, the parse, the settings) plus one LPM-trie walk of the block-list, and the LPM walk alone is
about one empty program's time. What would bring it under 2×: an exact-match hash of blocked /32 and /128 hosts
(what the daemon adds for heavy sources) checked before the trie, or a per-source drop bit in the sketch's cells.

On veth every flood packet is still an skb before XDP sees it (generic XDP conversion and the veth ring), and the
XDP_TX reply crosses the peer's XDP program and stack: the lab understates the gain a NIC in driver mode would show,
where flood packets never become skbs.
";

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn flood_markdown(b: &Value, cmd: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let secs = f(&b["seconds_per_point"]);
    let _ = writeln!(s, "## Under a spoofed SYN flood: (a)-(e) side by side\n");
    let _ = writeln!(
        s,
        "Command: `{cmd}`. Each point is a fresh namespace lab (server, legit client, attacker on its own veth). \
         The attacker sends spoofed SYNs from random addresses in 198.19.0.0/16 with tcpguard's generator \
         (AF_PACKET, sendmmsg batches of 64; its maximum on one core into a bare lab: **{:.0} SYN/s**), at a \
         fixed rate or flat out (*full*: as fast as the generator goes against that setup). For {secs:.0} s the \
         legit client opens a connection every 25 ms (open loop, 1 s timeout; a real listener answers). \
         *rx* is what the server's attacker-facing veth received. Softirq is the share of all CPU time on the \
         2-core machine, and per received flood packet (softirq ns over the run / packets received): the \
         sender's syscalls land in system time, so softirq isolates the receive path. *vs (b)* is that per-packet \
         figure against (b) at the same target rate. *XDP ns* is the tcpguard program's own time per run \
         (`bpf_stats`: run_time_ns / run_cnt, all packets). (c)-(e): `tcpguard run` with default thresholds; \
         (d) sets `syn-cookies = \"kernel\"` and `attack-syn-rate = 0` (the kernel answers; the datapath enters \
         attack mode only when the daemon detects the flood); (e) is the default (attack mode entered by the \
         datapath, SYNs answered from XDP).\n",
        f(&b["generator_max_pps"])
    );
    let _ = writeln!(
        s,
        "| flood (target) | setup | sent SYN/s | rx SYN/s | legit success | median ms | p99 ms \
        | softirq | softirq ns / rx pkt | vs (b) | XDP ns |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let labels = |k: &str| match k {
        "a" => "(a) no protection: syncookies=0, backlog 16",
        "b" => "(b) kernel default: syncookies=1",
        "c" => "(c) tcpguard drop",
        "d" => "(d) tcpguard auto, kernel cookies",
        _ => "(e) tcpguard auto, attack mode (XDP cookies)",
    };
    let points = b["points"].as_array().cloned().unwrap_or_default();
    for p in &points {
        let target = p["target_pps"].as_u64().unwrap_or(0);
        let kernel = points
            .iter()
            .find(|q| q["setup"] == "b" && q["target_pps"] == p["target_pps"])
            .map(|q| f(&q["softirq_ns_per_rx"]));
        let vs = match kernel {
            Some(k) if p["setup"] != "a" => format!("{:.2}×", f(&p["softirq_ns_per_rx"]) / k),
            _ => "—".into(),
        };
        let xdp = p["xdp_ns_per_packet"].as_f64().map_or("—".into(), |x| format!("{x:.0}"));
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.2} | {:.1}% | {:.0} | {vs} | {xdp} |",
            if target == 0 { "full".to_string() } else { target.to_string() },
            labels(p["setup"].as_str().unwrap_or("")),
            f(&p["sent_pps"]),
            f(&p["received_pps"]),
            f(&p["legit"]["success"]) * 100.0,
            f(&p["legit"]["p50_ms"]),
            f(&p["legit"]["p99_ms"]),
            f(&p["softirq_pct"]),
            f(&p["softirq_ns_per_rx"]),
        );
    }
    let _ = writeln!(s, "\nWhere each stops serving legit clients (first tested rate with success below 90%):\n");
    for k in ["a", "b", "c", "d", "e"] {
        let stop = points.iter().filter(|p| p["setup"] == k).find(|p| f(&p["legit"]["success"]) < 0.9);
        let max = points.iter().filter(|p| p["setup"] == k).map(|p| f(&p["sent_pps"])).fold(0.0, f64::max);
        let _ = match stop {
            Some(p) => writeln!(
                s,
                "- {}: at {} SYN/s ({:.1}% success)",
                labels(k),
                p["target_pps"],
                f(&p["legit"]["success"]) * 100.0
            ),
            None => writeln!(s, "- {}: serves through the highest rate reached, {max:.0} SYN/s", labels(k)),
        };
    }
    s.push_str(&latency_and_cost_markdown(b));
    s
}

fn latency_and_cost_markdown(b: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ =
        writeln!(s, "\n![softirq per received flood packet and legit p99, against flood rate](flood-success.png)\n");
    let _ = writeln!(s, "## Detection latency\n");
    let _ = writeln!(
        s,
        "`tcpguard run` (policy auto, 250 ms tick, 2 ticks to start); `status` polled every 10 \
        ms; flood starts staggered against the tick.\n"
    );
    let _ = writeln!(
        s,
        "The first two columns are seen through `status` (so they include up to one tick); the datapath's own \
         stamps (CLOCK_MONOTONIC, the flood's first batch from the generator's report) give when attack mode was \
         entered and when the first SYN-ACK left from XDP (the mitigation in effect).\n"
    );
    let _ = writeln!(
        s,
        "| flood | SYN/s | runs | start → declared (median / max) | start → mitigation seen in \
        status (median / max) | first SYN → attack mode, datapath stamps | first SYN → first XDP SYN-ACK |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for l in b["latency"].as_array().cloned().unwrap_or_default() {
        let what = if l["kind"] == "spoofed-random" {
            "spoofed random → SYNs answered with cookies"
        } else {
            "single source → source blocked in XDP"
        };
        let ms = |m: &Value, x: &Value| match (m.as_f64(), x.as_f64()) {
            (Some(m), Some(x)) => format!("{:.1} ms / {:.1} ms", m * 1e3, x * 1e3),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {:.2} s / {:.2} s | {:.2} s / {:.2} s | {} | {} |",
            l["flood_pps"],
            l["runs"],
            f(&l["declared_median"]),
            f(&l["declared_max"]),
            f(&l["mitigated_median"]),
            f(&l["mitigated_max"]),
            ms(&l["dp_entered_median"], &l["dp_entered_max"]),
            ms(&l["dp_first_cookie_median"], &l["dp_first_cookie_max"])
        );
    }
    let d = &b["daemon"];
    let _ = writeln!(s, "\n## Daemon cost with 100,000 flooding sources\n");
    let _ = writeln!(
        s,
        "{} distinct source addresses (198.18.0.0/15, round robin) at {:.0} SYN/s for {:.0} s; the datapath \
            tracked {} sources. \
         Measured from /proc/<pid>/stat and VmRSS of the daemon process; tick time from its own histogram.\n",
        d["sources"],
        f(&d["flood_pps"]),
        f(&d["seconds"]),
        d["tracked_sources_in_datapath"]
    );
    let _ = writeln!(s, "| daemon CPU (% of one core) | max RSS | mean tick | tick interval |");
    let _ = writeln!(s, "|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| {:.2}% | {:.1} MB | {:.2} ms | {} ms |",
        f(&d["cpu_pct_of_core"]),
        f(&d["rss_max_mb"]),
        f(&d["tick_mean_ms"]),
        d["tick_ms"]
    );
    s
}

fn machine() -> String {
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default().trim().to_string();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("Linux {kernel}, {cpus} × {model}")
}

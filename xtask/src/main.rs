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

mod bench;
mod deb;
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
        Cmd::Bench { quick } => bench::bench(quick),
        Cmd::Demo { scale } => demo(scale),
        Cmd::Fuzz { secs } => fuzz(secs),
        Cmd::Deb => {
            toolchain()?;
            cargo_deb()?;
            deb::deb()
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
    // The upstream tests run gobgpd itself (a server's and a router's), and
    // apply the router's FlowSpec RIB with nft.
    ("gobgpd", "gobgpd"),
    ("nft", "nftables"),
];

/// What every build needs besides the toolchain: gobgpd's gRPC client
/// (`[upstream]`) is generated from GoBGP's API definitions with protoc and
/// the well-known types.
const BUILD_TOOLS: &[(&str, &str)] = &[
    ("protoc", "protobuf-compiler"),
    ("/usr/include/google/protobuf/any.proto", "libprotobuf-dev"),
    ("/usr/share/gocode/src/github.com/osrg/gobgp/api/gobgp.proto", "golang-github-osrg-gobgp-dev"),
];

/// What the demo needs (the lab's `ip`).
const LAB_TOOLS: &[(&str, &str)] = &[("ip", "iproute2")];

/// What the benchmarks need: the lab, and a font for the plot.
const BENCH_TOOLS: &[(&str, &str)] =
    &[("ip", "iproute2"), ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core")];

/// What building needs: the eBPF object's toolchain (no root) and the
/// Debian packages of [`BUILD_TOOLS`] (root installs them).
fn toolchain() -> Result<()> {
    debian_tools(BUILD_TOOLS)?;
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
    deb::deb()?;
    say("running every test: host unit tests, BPF_PROG_TEST_RUN tests, namespace labs");
    run(Command::new("cargo").args(["test", "--release"]).args(extra))?;
    Ok(())
}

/// Build the Debian package from the release binary.
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

//! `cargo xtask`: prerequisites, test, bench, demo.
//!
//! xtask deliberately does not depend on the tcpguard crates: building them
//! needs bpf-linker and the nightly rust-src component, which `prereqs`
//! installs first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
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
    /// The demo lab: install prerequisites, build release, run `tcpguard demo` (root).
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
    }
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

/// Install every prerequisite that is missing, one visible line each.
fn prereqs() -> Result<()> {
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
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER) {
        say(&format!("bpf-linker {BPF_LINKER}: present"));
    } else {
        say(&format!("installing bpf-linker {BPF_LINKER} (cargo install --locked bpf-linker@{BPF_LINKER})"));
        run(Command::new("cargo").args(["install", "--locked", &format!("bpf-linker@{BPF_LINKER}")]))?;
    }
    // 3. Tools the kernel tests and labs use.
    let mut missing = Vec::new();
    for (bin, pkg) in [("ip", "iproute2"), ("systemd-analyze", "systemd")] {
        if output(Command::new("sh").args(["-c", &format!("command -v {bin}")])).is_none() {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        say("iproute2, systemd-analyze: present");
    } else if is_root() {
        say(&format!("installing {} (apt-get install -y {})", missing.join(", "), missing.join(" ")));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        bail!("missing packages {}: install them (apt-get install {}) or run as root", missing.join(", "), missing.join(" "));
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    prereqs()?;
    if !is_root() {
        bail!("the test suite includes kernel tests (BPF_PROG_TEST_RUN, XDP on veth, network namespaces) and must run as root");
    }
    say("building the workspace (eBPF object via tcpguard/build.rs)");
    run(Command::new("cargo").args(["build", "--release"]))?;
    say("running every test: host unit tests, BPF_PROG_TEST_RUN tests, namespace labs");
    run(Command::new("cargo").args(["test", "--release"]).args(extra))?;
    Ok(())
}

fn demo(scale: f64) -> Result<()> {
    prereqs()?;
    if !is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    say("building tcpguard (release)");
    run(Command::new("cargo").args(["build", "--release", "-p", "tcpguard"]))?;
    let bin = workspace_root().join("target/release/tcpguard");
    run(Command::new(bin).args(["demo", "--scale", &scale.to_string()]))
}

fn bench(quick: bool) -> Result<()> {
    prereqs()?;
    if !is_root() {
        bail!("benchmarks run BPF_PROG_TEST_RUN and need root");
    }
    run(Command::new("cargo").args(["build", "--release", "-p", "tcpguard"]))?;
    let bin = workspace_root().join("target/release/tcpguard");
    let mut args = vec!["bench", "packets"];
    if quick {
        args.push("--quick");
    }
    let o = Command::new(&bin).args(&args).output().context("running tcpguard bench")?;
    if !o.status.success() {
        bail!("tcpguard bench failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let section = String::from_utf8_lossy(&o.stdout).into_owned();
    print!("{section}");
    let doc = format!(
        "# tcpguard benchmarks\n\nProduced by `cargo xtask bench{}` on {} (as root). Numbers are \
         ratios against a baseline measured in the same run; absolute nanoseconds are for \
         orientation only.\n\n{section}",
        if quick { " --quick" } else { "" },
        machine()
    );
    std::fs::create_dir_all("docs")?;
    std::fs::write("docs/benchmarks.md", doc)?;
    say("wrote docs/benchmarks.md");
    Ok(())
}

fn machine() -> String {
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default().trim().to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("Linux {kernel}, {cpus} × {model}")
}

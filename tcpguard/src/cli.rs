//! Command line: one enum variant per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{model::AttachMode, net::Prefix};

#[derive(Parser, Debug)]
#[command(name = "tcpguard", version, about = "SYN-flood detection and mitigation with XDP")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where clients find the daemon.
#[derive(Args, Debug, Clone)]
pub struct Client {
    /// Control socket (default: control.socket of --config, else /run/tcpguard/tcpguard.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Read the socket path from this config file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: attach XDP, detect, mitigate, serve metrics and the control socket.
    Run {
        /// Config file (default: the embedded default config, see config/tcpguard.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Interface to protect (repeatable); overrides daemon.interfaces.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Control socket path; overrides control.socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Is the host under attack, and what is tcpguard doing about it?
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: Client,
    },
    /// Tracked sources, heaviest first (scans the source table).
    Top {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: Client,
    },
    /// Block a prefix in XDP (all TCP to protected ports).
    Block {
        prefix: Prefix,
        /// How long, e.g. 30s, 10m, 2h, 1d, at most 365d (default: until unblocked).
        #[arg(long)]
        ttl: Option<String>,
        /// Block a prefix wider than policy.widest-block-v4/-v6 (e.g. 0.0.0.0/0).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: Client,
    },
    /// Remove a block.
    Unblock {
        prefix: Prefix,
        #[command(flatten)]
        client: Client,
    },
    /// Allow-list a prefix until the daemon restarts: always passes, never blocked or rate limited.
    Allow {
        prefix: Prefix,
        #[command(flatten)]
        client: Client,
    },
    /// Remove a prefix that `allow` added (entries from datapath.allow stay).
    Unallow {
        prefix: Prefix,
        #[command(flatten)]
        client: Client,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
    /// Write the man pages, shell completions and the packaged config into a
    /// directory (used by `cargo xtask deb`).
    #[command(hide = true)]
    Generate {
        /// Output directory (created).
        out: PathBuf,
    },
    /// Attach to one interface in the foreground and print a counter
    /// summary every second until Ctrl-C, then detach.
    Watch {
        /// Interface to protect.
        #[arg(long)]
        iface: String,
        /// XDP mode: auto (native, falling back to skb), native or skb.
        #[arg(long, default_value = "auto")]
        xdp_mode: AttachMode,
        /// Do not pin maps under /sys/fs/bpf/tcpguard/<iface>/.
        #[arg(long)]
        no_pin: bool,
        /// Seconds between summaries.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Parse and validate a config file; print the first problem with its key.
    Check { path: PathBuf },
    /// Print the embedded default config.
    Default,
}

/// The lab tools' command line (`tcpguard-lab`, built with the `lab`
/// feature; not part of the shipped binary).
#[cfg(feature = "lab")]
#[derive(Parser, Debug)]
#[command(
    name = "tcpguard-lab",
    version,
    about = "tcpguard's lab tools: demo, flood generator, benchmarks (never for production hosts)"
)]
pub struct LabCli {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[cfg(feature = "lab")]
#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// A self-contained demo lab: namespaces, a real server and clients, floods, live status.
    Demo {
        /// Scale every phase's duration (1.0 = about 55 s in all).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Lab tool: send a SYN flood from this network namespace (refuses the
    /// host's own namespace). For namespaces you created, e.g. with
    /// `ip netns exec LAB tcpguard-lab flood ...`.
    Flood {
        /// Interface to send on (inside the lab namespace).
        #[arg(long)]
        iface: String,
        /// Destination address (IPv4 or IPv6).
        #[arg(long)]
        dst: std::net::IpAddr,
        /// Destination MAC, e.g. 02:00:00:00:00:01.
        #[arg(long)]
        dst_mac: String,
        #[arg(long, default_value_t = 80)]
        dport: u16,
        /// random:PREFIX | single:ADDR | set:PREFIX:N
        #[arg(long, default_value = "random:198.19.0.0/16")]
        sources: String,
        /// SYN/s; 0 = as fast as possible.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Stop after this many SYNs (0 = no limit).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// SYNs without TCP options.
        #[arg(long)]
        no_options: bool,
    },
    /// Benchmarks (run through `cargo xtask bench`).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[cfg(feature = "lab")]
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Per-packet cost with BPF_PROG_TEST_RUN.
    Packets {
        #[arg(long)]
        quick: bool,
    },
    /// Flood lab: (a)-(e) side by side, detection latency, daemon cost; JSON on stdout.
    Flood {
        #[arg(long)]
        quick: bool,
    },
}

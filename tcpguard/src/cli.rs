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
        /// Allow a prefix wider than policy.widest-block-v4/-v6 (e.g. 0.0.0.0/0).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: Client,
    },
    /// Remove a prefix that `allow` added (entries from datapath.allow stay).
    Unallow {
        prefix: Prefix,
        #[command(flatten)]
        client: Client,
    },
    /// FlowSpec rules pushed upstream through gobgpd (`[upstream]`): the list
    /// with age, TTL and reason, gobgpd's state; announce or withdraw by hand.
    Upstream {
        #[command(subcommand)]
        what: Option<UpstreamCmd>,
        /// Machine-readable output (the list).
        #[arg(long)]
        json: bool,
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

#[derive(Subcommand, Debug)]
pub enum UpstreamCmd {
    /// Announce a rule by hand, with the guardrails automatic rules meet:
    /// SYN from --src to the host's protected addresses (or --dst), discarded
    /// (or rate-limited with --rate-limit).
    Announce {
        #[command(flatten)]
        rule: RuleMatch,
        /// Rate-limit to this many bytes per second instead of discarding.
        #[arg(long)]
        rate_limit: Option<u64>,
        /// How long, e.g. 30s, 10m, 2h (default upstream.default-ttl-secs).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Withdraw the announcements from --src (to --dst, --port when given);
    /// without --src, the rate limits (no source).
    Withdraw {
        #[command(flatten)]
        rule: RuleMatch,
    },
}

/// What an upstream rule matches: SYN from --src to --dst, port --port.
#[derive(Args, Debug, Clone, Copy)]
pub struct RuleMatch {
    /// The source prefix (at most upstream.widest-source-v4/-v6 wide).
    #[arg(long)]
    pub src: Option<Prefix>,
    /// One of the host's protected addresses (default: each of the source's family).
    #[arg(long)]
    pub dst: Option<Prefix>,
    /// The destination port (default: datapath.ports, or every port).
    #[arg(long)]
    pub port: Option<u16>,
}

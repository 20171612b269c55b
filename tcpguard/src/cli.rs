//! Command line: one enum variant per subcommand.

use clap::{Parser, Subcommand};

use crate::loader::AttachMode;

#[derive(Parser, Debug)]
#[command(name = "tcpguard", version, about = "SYN-flood detection and mitigation with XDP")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// Benchmarks (run through `cargo xtask bench`).
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Per-packet cost with BPF_PROG_TEST_RUN.
    Packets {
        #[arg(long)]
        quick: bool,
    },
}

//! `tcpguard-lab`'s command line.

use clap::{Parser, Subcommand};

/// The lab tools' command line (`tcpguard-lab`, built with the `lab`
/// feature; not part of the shipped binary).
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
        /// An ACK flood: bare ACKs of no connection instead of SYNs.
        #[arg(long)]
        ack: bool,
    },
    /// Benchmarks (run through `cargo xtask bench`).
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
    /// Flood lab: (a)-(e) side by side, detection latency, daemon cost; JSON on stdout.
    Flood {
        #[arg(long)]
        quick: bool,
    },
    /// A spoofed SYN flood at full rate: the kernel alone, a pass-all XDP
    /// control (the floor of the XDP ns column) and tcpguard's default,
    /// alternating (a markdown table).
    Syn {
        /// Seconds per setup.
        #[arg(long, default_value_t = 6.0)]
        secs: f64,
        /// Rounds of the pair.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// A spoofed ACK flood at full rate: the kernel alone against tcpguard (a markdown table).
    Ack {
        /// Seconds per setup.
        #[arg(long, default_value_t = 6.0)]
        secs: f64,
    },
}

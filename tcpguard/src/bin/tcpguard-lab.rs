//! `tcpguard-lab`: the lab tools (demo, SYN flood generator, benchmarks).
//! Built only with the `lab` feature (`cargo xtask demo|bench` do it); the
//! shipped `tcpguard` binary contains none of this.

use std::time::Duration;

use anyhow::Result;
use clap::Parser as _;
use tcpguard::lab::cli::{BenchWhat, LabCli, LabCommand};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = LabCli::parse();
    if let Err(e) = dispatch(cli.command) {
        eprintln!("tcpguard-lab: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Demo { scale } => {
            tcpguard::daemon_check::require_capabilities()?;
            tcpguard::lab::demo::run(scale)
        }
        LabCommand::Flood { iface, dst, dst_mac, dport, sources, rate, count, duration, no_options, ack } => {
            use tcpguard::lab::flood;
            if flood::in_host_netns() {
                anyhow::bail!(
                    "refusing to flood from the host's own network namespace: run it inside a lab \
                    namespace you created (ip netns exec LAB tcpguard-lab flood ...)"
                );
            }
            let spec = flood::FloodSpec {
                src_mac: [0x02, 0x74, 0x67, 0, 0, 1],
                dst_mac: flood::parse_mac(&dst_mac).map_err(anyhow::Error::msg)?,
                ifname: iface,
                dst,
                dport,
                sources: sources.parse().map_err(anyhow::Error::msg)?,
                rate,
                count,
                duration: Duration::from_secs_f64(duration),
                options: !no_options,
                kind: if ack { flood::FloodKind::Ack } else { flood::FloodKind::Syn },
                seed: std::process::id().into(),
            };
            let stop = std::sync::atomic::AtomicBool::new(false);
            let rep = flood::run(&spec, &stop)?;
            println!(
                "sent {} {} in {:.2} s ({:.0}/s), {} send errors",
                rep.sent,
                if ack { "ACKs" } else { "SYNs" },
                rep.elapsed.as_secs_f64(),
                rep.pps(),
                rep.errors
            );
            Ok(())
        }
        LabCommand::Bench { what: BenchWhat::Ack { secs } } => {
            tcpguard::daemon_check::require_capabilities()?;
            print!("{}", tcpguard::lab::bench_flood::ack_side_by_side(secs)?);
            Ok(())
        }
        LabCommand::Bench { what: BenchWhat::Syn { secs, rounds } } => {
            tcpguard::daemon_check::require_capabilities()?;
            print!("{}", tcpguard::lab::bench_flood::syn_side_by_side(secs, rounds)?);
            Ok(())
        }
        LabCommand::Bench { what: BenchWhat::Flood { quick } } => {
            tcpguard::daemon_check::require_capabilities()?;
            let r = tcpguard::lab::bench_flood::run(quick)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        LabCommand::Bench { what: BenchWhat::Packets { quick } } => {
            tcpguard::daemon_check::require_capabilities()?;
            print!("{}", tcpguard::lab::bench::packets(quick)?);
            Ok(())
        }
    }
}

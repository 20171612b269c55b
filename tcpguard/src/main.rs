use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::Parser as _;
use tcpguard::{
    cli::{Cli, Client, Command, ConfigCmd, RuleMatch, UpstreamCmd},
    config::{Config, ControlConfig},
    ctl, daemon,
    loader::{pin_dir_for, Datapath, LoadOptions},
    maps::{monotonic_ns, Maps},
    proto::{Request, Response},
    summary,
};
use tcpguard_common::halfopen::Tally;

fn done(r: Response) -> Result<()> {
    match r {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

/// sysexits.h EX_CONFIG: a configuration error (the config file or the command line).
const EX_CONFIG: i32 = 78;
/// sysexits.h EX_TEMPFAIL: exited on SIGUSR2 leaving XDP attached, to be
/// started again at once (the unit's RestartForceExitStatus).
const EX_TEMPFAIL: i32 = 75;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(dispatch(cli)) {
        eprintln!("tcpguard: {e:#}");
        // EX_CONFIG: the unit's RestartPreventExitStatus, so systemd does not
        // retry a configuration that cannot work until someone edits it.
        let config = e.chain().any(|c| c.downcast_ref::<tcpguard::config::ConfigError>().is_some());
        std::process::exit(if config { EX_CONFIG } else { 1 });
    }
}

fn socket_of(c: &Client) -> Result<PathBuf> {
    if let Some(s) = &c.socket {
        return Ok(s.clone());
    }
    match &c.config {
        Some(p) => Ok(Config::load(p)?.control.socket),
        None => Ok(ControlConfig::default().socket),
    }
}

async fn ask(c: &Client, req: Request) -> Result<Response> {
    Ok(ctl::request(&socket_of(c)?, &req).await?)
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config, ifaces, socket } => {
            match daemon::run(daemon::RunOptions { config_path: config, interfaces: ifaces, socket }).await? {
                daemon::Stopped::Clean => Ok(()),
                // The unit restarts on this status (RestartForceExitStatus).
                daemon::Stopped::Handover => std::process::exit(EX_TEMPFAIL),
            }
        }
        Command::Status { json, client } => match ask(&client, Request::Status).await? {
            Response::Status(v) if json => {
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(())
            }
            Response::Status(v) => {
                print!("{}", ctl::render_status(&v));
                Ok(())
            }
            other => anyhow::bail!("unexpected answer: {other:?}"),
        },
        Command::Top { limit, json, client } => match ask(&client, Request::Top { limit }).await? {
            Response::Top { sources, left_out } if json => {
                println!("{}", serde_json::to_string_pretty(&sources)?);
                if left_out > 0 {
                    eprintln!(
                        "{left_out} more sources not shown (at most {} per answer)",
                        tcpguard::daemon::api::TOP_MAX
                    );
                }
                Ok(())
            }
            Response::Top { sources, left_out } => {
                print!("{}", ctl::render_top(&sources));
                if left_out > 0 {
                    println!(
                        "... {left_out} more sources not shown (at most {} per answer)",
                        tcpguard::daemon::api::TOP_MAX
                    );
                }
                Ok(())
            }
            other => anyhow::bail!("unexpected answer: {other:?}"),
        },
        Command::Block { prefix, ttl, force, client } => {
            let ttl_secs = ttl.map(|t| ctl::parse_duration(&t)).transpose().map_err(anyhow::Error::msg)?;
            tcpguard::validate::ttl(ttl_secs).map_err(anyhow::Error::msg)?;
            done(ask(&client, Request::Block { prefix, ttl_secs, force }).await?)
        }
        Command::Upstream { what, json, client } => upstream(what, json, &client).await,
        Command::Unblock { prefix, client } => done(ask(&client, Request::Unblock { prefix }).await?),
        Command::Allow { prefix, force, client } => done(ask(&client, Request::Allow { prefix, force }).await?),
        Command::Unallow { prefix, client } => done(ask(&client, Request::Unallow { prefix }).await?),
        Command::Config { what: ConfigCmd::Check { path } } => {
            let cfg = Config::load(&path)?;
            println!(
                "{}: ok (policy {}, interfaces [{}], {} allow, {} block)",
                path.display(),
                cfg.policy.mode.as_str(),
                cfg.daemon.interfaces.join(", "),
                cfg.datapath.allow.len(),
                cfg.datapath.block.len()
            );
            Ok(())
        }
        Command::Config { what: ConfigCmd::Default } => {
            print!("{}", tcpguard::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Generate { out } => {
            for f in tcpguard::assets::write_all(&out).with_context(|| format!("writing into {}", out.display()))? {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Watch { iface, xdp_mode, no_pin, interval, duration } => {
            watch(&iface, xdp_mode, !no_pin, interval, duration).await
        }
    }
}

/// `tcpguard upstream`: the list (from `status`), or announce/withdraw.
async fn upstream(what: Option<UpstreamCmd>, json: bool, client: &Client) -> Result<()> {
    match what {
        None => match ask(client, Request::Status).await? {
            Response::Status(v) => {
                let Some(u) = v.upstream else {
                    anyhow::bail!("upstream is off (set upstream.enabled = true and reload)");
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&u)?);
                } else {
                    print!("{}", ctl::render_upstream(&u));
                }
                Ok(())
            }
            other => anyhow::bail!("unexpected answer: {other:?}"),
        },
        Some(UpstreamCmd::Announce { rule: RuleMatch { src, dst, port }, rate_limit, ttl }) => {
            let ttl_secs = ttl.map(|t| ctl::parse_duration(&t)).transpose().map_err(anyhow::Error::msg)?;
            let h = tcpguard::upstream::plan::HandRule { src, dst, port, rate_limit, ttl_secs };
            done(ask(client, Request::UpstreamAnnounce(h)).await?)
        }
        Some(UpstreamCmd::Withdraw { rule: RuleMatch { src, dst, port } }) => {
            done(ask(client, Request::UpstreamWithdraw { src, dst, port }).await?)
        }
    }
}

async fn watch(
    iface: &str,
    mode: tcpguard::loader::AttachMode,
    pin: bool,
    interval: f64,
    duration: Option<f64>,
) -> Result<()> {
    tcpguard::daemon_check::require_capabilities()?;
    let pin_dir = pin.then(|| pin_dir_for(iface));
    let opts = LoadOptions { pin_dir: pin_dir.clone(), ..LoadOptions::default() };
    let mut dp = Datapath::load(&opts).context("loading the XDP program")?;
    let used = dp.attach(iface, mode).with_context(|| format!("attaching to {iface}"))?;
    // The server's side too: half-open from its SYN-ACKs, refused SYNs apart.
    let egress = match dp.attach_egress(iface) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("{e}: half-open is counted from the client's SYN");
            false
        }
    };
    // No config: it counts and enforces nothing (lists from earlier pins
    // are looked at, as their flags say).
    let mut m = Maps::new(&mut dp.ebpf);
    let (has_blocks, has_allows) = m.lists_nonempty()?;
    let facts = tcpguard::settings::Facts { egress, has_blocks, has_allows, ..Default::default() };
    m.set_settings(&tcpguard::settings::build(None, &facts))?;
    log::info!(
        "attached to {iface} in {used} mode{}",
        match &pin_dir {
            Some(d) => format!(", maps pinned under {}", d.display()),
            None => String::new(),
        }
    );
    let tty = std::io::stdout().is_terminal();
    let mut tally = Tally::default();
    let mut prev = Maps::new(&mut dp.ebpf).counters()?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(interval.max(0.1)));
    let started = std::time::Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                let m = Maps::new(&mut dp.ebpf);
                let c = m.counters()?;
                let timeout_s = m.settings()?.timeout_ns() / 1_000_000_000;
                let half_open = tally.update(&m.half_open_slots()?, monotonic_ns() / 1_000_000_000, timeout_s);
                let text = summary::render(iface, used, &c, &prev, interval, half_open, tally.failed_total);
                if tty { print!("\x1b[H\x1b[2J"); }
                println!("{text}");
                prev = c;
                if duration.is_some_and(|d| started.elapsed().as_secs_f64() >= d) { break; }
            }
        }
    }
    drop(dp); // detaches
    if let Some(dir) = pin_dir {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing pins in {}", dir.display()))?;
        // The pin root too, when nothing else is pinned there (a daemon's pins stay).
        if let Some(root) = dir.parent() {
            let _ = std::fs::remove_dir(root);
        }
    }
    log::info!("detached from {iface}");
    Ok(())
}

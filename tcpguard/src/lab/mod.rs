//! The lab: everything tcpguard needs to test and show itself on one
//! machine, and nothing the shipped daemon uses. Built only with the `lab`
//! feature, into the `tcpguard-lab` binary and the kernel tests.
//!
//! - `netns`: network namespaces owned by guards that delete them on drop.
//! - this file: `Lab` (server and client namespaces joined by a veth pair)
//!   and attackers on veths of their own.
//! - `traffic`: a real kernel listener, open-loop probes, a daemon process.
//! - `flood`: the SYN flood generator (AF_PACKET).
//! - `baselines`: the pass-everything programs (benchmark baselines, the
//!   peer program that lets veth deliver XDP_TX frames).
//! - `bench` (per-packet cost), `bench_flood` (flood labs), `demo`, `cli`.

pub mod baselines;
pub mod bench;
pub mod bench_flood;
pub mod cli;
pub mod demo;
pub mod flood;
pub mod netns;
pub mod traffic;

use std::{net::Ipv4Addr, sync::atomic::Ordering};

pub use netns::{ip, sweep_stale, tcpguard_exe, LabError, Netns};
pub use traffic::{probe_stats, DaemonProcess, Probe, ProbeStats, Prober, Server};

use crate::lab::{baselines::Baselines, netns::SEQ};

/// Two namespaces joined by a veth pair:
/// server `srv_if` = 198.18.0.1/16, client `cli_if` = 198.18.0.2/16
/// (RFC 2544 benchmarking range: never a real host). The server routes
/// everything (SYN-ACKs to spoofed sources too) to the client, whose kernel
/// discards what is not its own.
pub struct Lab {
    pub server: Netns,
    pub client: Netns,
    pub srv_if: String,
    pub cli_if: String,
    pub srv_mac: [u8; 6],
    pub cli_mac: [u8; 6],
    /// A pass-everything XDP program on the peer ends (client, attacker):
    /// veth delivers the server's XDP_TX frames (SYN-ACKs from the XDP
    /// responder) only to a peer that has an XDP program. A NIC needs none;
    /// a container's veth usually has none, which `set_peer_xdp` makes.
    peer_xdp: std::sync::Mutex<PeerXdp>,
}

/// The pass-everything program and the peer ends it is attached to.
struct PeerXdp {
    progs: Baselines,
    links: std::collections::HashMap<String, aya::programs::xdp::XdpLinkId>,
}

/// Attach the pass-everything program to `dev` inside `ns` (`on`), or detach it.
fn peer_program(peer: &std::sync::Mutex<PeerXdp>, ns: &Netns, dev: &str, on: bool) -> Result<(), LabError> {
    let mut guard = peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let p: &mut PeerXdp = &mut guard;
    let err = |source| LabError::PeerXdp { iface: dev.to_string(), source: Box::new(source) };
    if on {
        if !p.links.contains_key(dev) {
            let id = ns.run(|| p.progs.attach_xdp(dev))?.map_err(err)?;
            p.links.insert(dev.to_string(), id);
        }
    } else if let Some(id) = p.links.remove(dev) {
        p.progs.detach_xdp(id).map_err(err)?;
    }
    Ok(())
}

fn attach_peer(peer: &std::sync::Mutex<PeerXdp>, ns: &Netns, dev: &str) -> Result<(), LabError> {
    peer_program(peer, ns, dev, true)
}

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER_IP6: &str = "fd00:7467::1";
pub const CLIENT_IP6: &str = "fd00:7467::2";

impl Lab {
    pub fn new() -> Result<Self, LabError> {
        sweep_stale();
        let server = Netns::new("s")?;
        let client = Netns::new("c")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let srv_if = format!("tgs{}x{n}", std::process::id());
        let cli_if = format!("tgc{}x{n}", std::process::id());
        let (srv_mac, cli_mac) = make_pair(&server, &client, &srv_if, &cli_if)?;
        let peer = Baselines::load()
            .map_err(|source| LabError::PeerXdp { iface: cli_if.clone(), source: Box::new(source) })?;
        let peer_xdp = std::sync::Mutex::new(PeerXdp { progs: peer, links: std::collections::HashMap::new() });
        attach_peer(&peer_xdp, &client, &cli_if)?;
        Ok(Lab { server, client, srv_if, cli_if, srv_mac, cli_mac, peer_xdp })
    }
}

/// The server-client veth pair, made directly inside the namespaces (it
/// never exists in the host namespace), addressed and routed; the MACs.
fn make_pair(server: &Netns, client: &Netns, srv_if: &str, cli_if: &str) -> Result<([u8; 6], [u8; 6]), LabError> {
    ip(&["link", "add", srv_if, "netns", &server.name, "type", "veth", "peer", "name", cli_if, "netns", &client.name])?;
    for (ns, dev, v4, v6) in
        [(server, srv_if, "198.18.0.1/16", "fd00:7467::1/64"), (client, cli_if, "198.18.0.2/16", "fd00:7467::2/64")]
    {
        ns.ip(&["addr", "add", v4, "dev", dev])?;
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    server.ip(&["route", "add", "default", "via", "198.18.0.2"])?;
    server.ip(&["-6", "route", "add", "default", "via", CLIENT_IP6])?;
    Ok((mac(server, srv_if)?, mac(client, cli_if)?))
}

impl Lab {
    /// Delete the server-client veth pair (a container stopped, a namespace
    /// torn down): the server's interface is gone.
    pub fn delete_link(&self) -> Result<(), LabError> {
        self.server.ip(&["link", "del", &self.srv_if])?;
        let mut p = self.peer_xdp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.links.remove(&self.cli_if);
        Ok(())
    }

    /// Make the pair again under the same names and addresses (new
    /// interfaces: new indexes and MACs), the peer program on the client's end.
    pub fn recreate_link(&mut self) -> Result<(), LabError> {
        (self.srv_mac, self.cli_mac) = make_pair(&self.server, &self.client, &self.srv_if, &self.cli_if)?;
        attach_peer(&self.peer_xdp, &self.client, &self.cli_if)
    }

    /// Put the pass-everything program on the client's end of the server's
    /// veth, or take it off: without it (a container's veth), XDP_TX frames
    /// from the server never reach the client.
    pub fn set_peer_xdp(&self, on: bool) -> Result<(), LabError> {
        peer_program(&self.peer_xdp, &self.client, &self.cli_if, on)
    }
}

/// The MAC address of `dev` in `ns`.
pub fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6], LabError> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    let bad = || LabError::Ip { args: format!("link show {dev}"), stderr: format!("no MAC in {out:?}") };
    let s = out.split("link/ether ").nth(1).ok_or_else(bad)?;
    let mut m = [0u8; 6];
    for (i, part) in s.split_whitespace().next().ok_or_else(bad)?.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// A third namespace, the attacker, on its own veth into the server:
/// server side `srv_if` = 198.19.254.1/24, attacker `att_if` = 198.19.254.2/24.
pub struct Attacker {
    pub ns: Netns,
    pub srv_if: String,
    pub att_if: String,
    pub srv_mac: [u8; 6],
    pub att_mac: [u8; 6],
}

impl Lab {
    /// Add an attacker namespace joined to the server by a second veth pair.
    pub fn add_attacker(&self) -> Result<Attacker, LabError> {
        let ns = Netns::new("a")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let srv_if = format!("tgS{}x{n}", std::process::id());
        let att_if = format!("tgA{}x{n}", std::process::id());
        ip(&[
            "link",
            "add",
            &srv_if,
            "netns",
            &self.server.name,
            "type",
            "veth",
            "peer",
            "name",
            &att_if,
            "netns",
            &ns.name,
        ])?;
        self.server.ip(&["addr", "add", "198.19.254.1/24", "dev", &srv_if])?;
        ns.ip(&["addr", "add", "198.19.254.2/24", "dev", &att_if])?;
        self.server.ip(&["link", "set", &srv_if, "up"])?;
        ns.ip(&["link", "set", &att_if, "up"])?;
        let srv_mac = mac(&self.server, &srv_if)?;
        let att_mac = mac(&ns, &att_if)?;
        attach_peer(&self.peer_xdp, &ns, &att_if)?;
        Ok(Attacker { ns, srv_if, att_if, srv_mac, att_mac })
    }
}

/// A flood spec from `ifname`/`src_mac` toward `dst_mac`, with defaults
/// callers override: as fast as possible, no count, 10 s, Linux-like options.
fn flood_from(
    ifname: &str,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    dst: std::net::IpAddr,
    dport: u16,
    sources: flood::Sources,
) -> flood::FloodSpec {
    flood::FloodSpec {
        ifname: ifname.to_string(),
        src_mac,
        dst_mac,
        dst,
        dport,
        sources,
        rate: 0,
        count: 0,
        duration: std::time::Duration::from_secs(10),
        options: true,
        seed: 0x7467,
        kind: flood::FloodKind::Syn,
    }
}

impl Lab {
    /// A flood sent from the client namespace into the server.
    pub fn client_flood(&self, dst: std::net::IpAddr, dport: u16, sources: flood::Sources) -> flood::FloodSpec {
        flood_from(&self.cli_if, self.cli_mac, self.srv_mac, dst, dport, sources)
    }
}

impl Attacker {
    /// A flood sent from the attacker namespace into the server.
    pub fn flood(&self, dst: std::net::IpAddr, dport: u16, sources: flood::Sources) -> flood::FloodSpec {
        flood_from(&self.att_if, self.att_mac, self.srv_mac, dst, dport, sources)
    }
}

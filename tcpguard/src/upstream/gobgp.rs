//! The gobgpd side: a [`Rule`] as a gobgpd path (FlowSpec NLRI, traffic-rate
//! extended community, tcpguard's mark) and back, and the API client.

use std::collections::BTreeSet;

use anyhow::{anyhow, Context as _, Result};

use super::{Action, Rule};
use crate::net::Prefix;

/// gobgpd's API, generated from GoBGP's `api/*.proto` (package `apipb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod apipb {
    tonic::include_proto!("apipb");
}

use apipb::gobgp_api_client::GobgpApiClient;

/// The standard community that marks a path as tcpguard's own
/// (64512:7467, a private AS number): reconcile touches only these.
pub const MARK: u32 = 64512 * 65536 + 7467;

/// FlowSpec component types (RFC 8955 §4.2.2).
const FS_DST_PREFIX: u32 = 1;
const FS_SRC_PREFIX: u32 = 2;
const FS_IP_PROTO: u32 = 3;
const FS_DST_PORT: u32 = 5;
const FS_TCP_FLAGS: u32 = 9;
/// Numeric operator: end of list, equal.
const OP_END_EQ: u32 = 0x81;
/// Numeric operator: equal (more follow, OR).
const OP_EQ: u32 = 0x01;
/// Bitmask operator: match (all bits of the value set)...
const OP_MATCH: u32 = 0x01;
/// ...and, ANDed, NOT (none of the bits of the value set), end of list.
const OP_END_AND_NOT: u32 = 0xc2;
const TCP_SYN: u64 = 0x02;
const TCP_ACK: u64 = 0x10;

fn any<M: prost::Message>(name: &str, m: &M) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/apipb.{name}"), value: m.encode_to_vec() }
}

fn unpack<M: prost::Message + Default>(a: &prost_types::Any, name: &str) -> Option<M> {
    (a.type_url.rsplit('/').next() == Some(&format!("apipb.{name}"))).then(|| M::decode(a.value.as_slice()).ok())?
}

fn family(v6: bool) -> apipb::Family {
    apipb::Family {
        afi: if v6 { apipb::family::Afi::Ip6 } else { apipb::family::Afi::Ip } as i32,
        safi: apipb::family::Safi::FlowSpecUnicast as i32,
    }
}

fn prefix_rule(kind: u32, p: &Prefix) -> prost_types::Any {
    let r =
        apipb::FlowSpecIpPrefix { r#type: kind, prefix_len: u32::from(p.len), prefix: p.addr.to_string(), offset: 0 };
    any("FlowSpecIPPrefix", &r)
}

fn component(kind: u32, items: Vec<(u32, u64)>) -> prost_types::Any {
    let items = items.into_iter().map(|(op, value)| apipb::FlowSpecComponentItem { op, value }).collect();
    any("FlowSpecComponent", &apipb::FlowSpecComponent { r#type: kind, items })
}

/// The gobgpd path of a rule, marked as tcpguard's.
pub fn to_path(r: &Rule) -> apipb::Path {
    let mut rules = vec![prefix_rule(FS_DST_PREFIX, &r.dst)];
    if let Some(s) = &r.src {
        rules.push(prefix_rule(FS_SRC_PREFIX, s));
    }
    rules.push(component(FS_IP_PROTO, vec![(OP_END_EQ, 6)]));
    if !r.dports.is_empty() {
        let n = r.dports.len();
        let items = r
            .dports
            .iter()
            .enumerate()
            .map(|(i, p)| (if i + 1 == n { OP_END_EQ } else { OP_EQ }, u64::from(*p)))
            .collect();
        rules.push(component(FS_DST_PORT, items));
    }
    if r.syn_only {
        // SYN set, and (AND) not ACK.
        rules.push(component(FS_TCP_FLAGS, vec![(OP_MATCH, TCP_SYN), (OP_END_AND_NOT, TCP_ACK)]));
    }
    let rate = match r.action {
        Action::Discard => 0.0,
        Action::RateLimit { bytes_per_sec } => bytes_per_sec,
    };
    let ext = apipb::ExtendedCommunitiesAttribute {
        communities: vec![any("TrafficRateExtended", &apipb::TrafficRateExtended { asn: 0, rate })],
    };
    let next_hop = if r.v6() { "::" } else { "0.0.0.0" };
    let pattrs = vec![
        any("OriginAttribute", &apipb::OriginAttribute { origin: 0 }),
        any("NextHopAttribute", &apipb::NextHopAttribute { next_hop: next_hop.into() }),
        any("ExtendedCommunitiesAttribute", &ext),
        any("CommunitiesAttribute", &apipb::CommunitiesAttribute { communities: vec![MARK] }),
    ];
    apipb::Path {
        family: Some(family(r.v6())),
        nlri: Some(any("FlowSpecNLRI", &apipb::FlowSpecNlri { rules })),
        pattrs,
        ..apipb::Path::default()
    }
}

/// Whether a path carries tcpguard's mark.
fn marked(p: &apipb::Path) -> bool {
    p.pattrs
        .iter()
        .filter_map(|a| unpack::<apipb::CommunitiesAttribute>(a, "CommunitiesAttribute"))
        .any(|c| c.communities.contains(&MARK))
}

/// Whether a path was originated by this gobgpd (added through its API)
/// rather than learned from a peer.
fn local(p: &apipb::Path) -> bool {
    !p.is_from_external && matches!(p.neighbor_ip.as_str(), "" | "<nil>" | "0.0.0.0" | "::")
}

/// The rule a path encodes, if it is one of the shapes [`to_path`] makes.
pub fn from_path(p: &apipb::Path) -> Option<Rule> {
    let nlri: apipb::FlowSpecNlri = unpack(p.nlri.as_ref()?, "FlowSpecNLRI")?;
    let (mut dst, mut src, mut dports, mut syn_only) = (None, None, Vec::new(), false);
    for r in &nlri.rules {
        if let Some(x) = unpack::<apipb::FlowSpecIpPrefix>(r, "FlowSpecIPPrefix") {
            let pfx = Prefix::new(x.prefix.parse().ok()?, u8::try_from(x.prefix_len).ok()?);
            match x.r#type {
                FS_DST_PREFIX => dst = Some(pfx),
                FS_SRC_PREFIX => src = Some(pfx),
                _ => return None,
            }
        } else if let Some(c) = unpack::<apipb::FlowSpecComponent>(r, "FlowSpecComponent") {
            match c.r#type {
                FS_IP_PROTO => {}
                FS_DST_PORT => dports = c.items.iter().map(|i| i.value as u16).collect(),
                FS_TCP_FLAGS => syn_only = true,
                _ => return None,
            }
        }
    }
    let rate = p
        .pattrs
        .iter()
        .filter_map(|a| unpack::<apipb::ExtendedCommunitiesAttribute>(a, "ExtendedCommunitiesAttribute"))
        .flat_map(|e| e.communities)
        .find_map(|c| unpack::<apipb::TrafficRateExtended>(&c, "TrafficRateExtended"))?
        .rate;
    let action = if rate == 0.0 { Action::Discard } else { Action::RateLimit { bytes_per_sec: rate } };
    Some(Rule { dst: dst?, src, dports, syn_only, action })
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: usize,
    pub withdrawn: usize,
    pub kept: usize,
}

/// A connection to gobgpd's API.
pub struct Client {
    api: GobgpApiClient<tonic::transport::Channel>,
}

impl Client {
    /// Connect to gobgpd's API at `addr` (host:port).
    pub async fn connect(addr: &str) -> Result<Self> {
        let api = GobgpApiClient::connect(format!("http://{addr}"))
            .await
            .with_context(|| format!("connecting to gobgpd's API at {addr}"))?;
        Ok(Client { api })
    }

    /// Paths of one FlowSpec family in gobgpd's global RIB.
    pub async fn global_paths(&mut self, v6: bool) -> Result<Vec<apipb::Path>> {
        let req = apipb::ListPathRequest {
            table_type: apipb::TableType::Global as i32,
            family: Some(family(v6)),
            ..apipb::ListPathRequest::default()
        };
        let mut stream = self.api.list_path(req).await.context("gobgpd ListPath")?.into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await.context("gobgpd ListPath stream")? {
            out.extend(r.destination.into_iter().flat_map(|d| d.paths));
        }
        Ok(out)
    }

    /// The rules tcpguard announced (its marked, locally originated paths).
    pub async fn announced(&mut self) -> Result<Vec<Rule>> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            out.extend(self.own(v6).await?.into_iter().filter_map(|p| from_path(&p)));
        }
        Ok(out)
    }

    /// tcpguard's marked paths of one family, originated here (a marked
    /// path learned from a peer, another host's tcpguard, is not ours).
    async fn own(&mut self, v6: bool) -> Result<Vec<apipb::Path>> {
        Ok(self.global_paths(v6).await?.into_iter().filter(|p| marked(p) && local(p)).collect())
    }

    pub async fn announce(&mut self, r: &Rule) -> Result<()> {
        let req = apipb::AddPathRequest {
            table_type: apipb::TableType::Global as i32,
            vrf_id: String::new(),
            path: Some(to_path(r)),
        };
        self.api.add_path(req).await.with_context(|| format!("gobgpd AddPath ({r})"))?;
        Ok(())
    }

    async fn withdraw_path(&mut self, p: apipb::Path) -> Result<()> {
        let req = apipb::DeletePathRequest {
            table_type: apipb::TableType::Global as i32,
            family: p.family,
            path: Some(p),
            ..apipb::DeletePathRequest::default()
        };
        self.api.delete_path(req).await.context("gobgpd DeletePath")?;
        Ok(())
    }

    /// Make tcpguard's marked paths exactly `desired`: withdraw the ones
    /// not desired (orphans of a crashed run, ended blocks), announce the
    /// missing ones. Paths without the mark are never touched.
    pub async fn reconcile(&mut self, desired: &[Rule]) -> Result<Reconciled> {
        let mut done = Reconciled::default();
        let want: BTreeSet<String> = desired.iter().map(Rule::identity).collect();
        let mut have = BTreeSet::new();
        for v6 in [false, true] {
            for p in self.own(v6).await? {
                let key = from_path(&p).map(|r| r.identity());
                match key {
                    Some(k) if want.contains(&k) && have.insert(k.clone()) => done.kept += 1,
                    _ => {
                        self.withdraw_path(p).await?;
                        done.withdrawn += 1;
                    }
                }
            }
        }
        for r in desired {
            let k = r.identity();
            if have.insert(k) {
                self.announce(r).await?;
                done.added += 1;
            }
        }
        Ok(done)
    }

    /// gobgpd's peers and their session state (e.g. "established").
    pub async fn peers(&mut self) -> Result<Vec<(String, String)>> {
        let mut stream =
            self.api.list_peer(apipb::ListPeerRequest::default()).await.context("gobgpd ListPeer")?.into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await.context("gobgpd ListPeer stream")? {
            let p = r.peer.ok_or_else(|| anyhow!("ListPeer: a peer without its record"))?;
            let addr = p.conf.map(|c| c.neighbor_address).unwrap_or_default();
            let state = p
                .state
                .and_then(|s| apipb::peer_state::SessionState::try_from(s.session_state).ok())
                .map_or_else(|| "unknown".to_string(), |s| s.as_str_name().to_lowercase());
            out.push((addr, state));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_survives_its_encoding() {
        let rules = [
            Rule {
                dst: "198.18.0.1/32".parse().unwrap(),
                src: Some("203.0.113.66/32".parse().unwrap()),
                dports: vec![8080],
                syn_only: true,
                action: Action::Discard,
            },
            Rule {
                dst: "2001:db8::1/128".parse().unwrap(),
                src: None,
                dports: vec![80, 443],
                syn_only: true,
                action: Action::RateLimit { bytes_per_sec: 125_000.0 },
            },
        ];
        for r in rules {
            let p = to_path(&r);
            assert!(marked(&p));
            assert_eq!(from_path(&p).as_ref(), Some(&r), "{r}");
        }
    }
}

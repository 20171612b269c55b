//! Control-socket protocol: one request, one response, each a JSON value
//! behind a 4-byte big-endian length, capped at [`MAX_FRAME`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    model::{Evidence, KernelView, Kind, Phase},
    net::Prefix,
};

pub const MAX_FRAME: u32 = 4 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Every tracked source, heaviest first (scans the source table).
    Top {
        limit: usize,
    },
    Block {
        prefix: Prefix,
        ttl_secs: Option<u64>,
        /// Block even a prefix wider than the configured limit.
        #[serde(default)]
        force: bool,
    },
    Unblock {
        prefix: Prefix,
    },
    Allow {
        prefix: Prefix,
        /// Allow even a prefix wider than the configured limit.
        #[serde(default)]
        force: bool,
    },
    /// Remove an allow-list entry added at run time.
    Unallow {
        prefix: Prefix,
    },
    /// Announce a FlowSpec rule upstream by hand (`[upstream]`).
    UpstreamAnnounce(crate::upstream::plan::HandRule),
    /// Withdraw the announcements from `src` (to `dst`, `port` when given).
    UpstreamWithdraw {
        src: Option<Prefix>,
        dst: Option<Prefix>,
        port: Option<u16>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status(Box<StatusView>),
    Top {
        sources: Vec<SourceView>,
        /// Sources past the limit or the most one answer carries.
        #[serde(default)]
        left_out: usize,
    },
    Done {
        message: String,
    },
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub interfaces: Vec<InterfaceView>,
    pub policy: String,
    pub datapath_mode: String,
    pub uptime_secs: f64,
    pub attack: AttackView,
    /// ACK floods: the unmatched ACK rate and the datapath's ACK check.
    #[serde(default)]
    pub ack_flood: AckFloodView,
    /// The datapath's own mode (tracking, or attack mode with the SYN-cookie responder).
    #[serde(default)]
    pub datapath: DatapathView,
    pub half_open: u64,
    /// What `half_open` counts: "server" (SYN-ACKs the server sent, seen on
    /// egress, not yet acknowledged: the kernel's SYN_RCVD, plus its cookie
    /// SYN-ACKs) or "client" (client SYNs not yet completed: no egress
    /// program).
    #[serde(default)]
    pub half_open_basis: String,
    pub handshakes_failed: u64,
    pub syn_per_sec: f64,
    pub completed_per_sec: f64,
    pub completion_ratio: f64,
    pub new_sources_per_sec: f64,
    pub dropped_per_sec: f64,
    pub blocked: Vec<BlockView>,
    /// The block-lists' fill and limits.
    #[serde(default)]
    pub block_list: BlockListView,
    pub allowed: Vec<Prefix>,
    pub top_sources: Vec<SourceView>,
    /// The host's listeners (the kernel's view), most pressed first.
    #[serde(default)]
    pub listeners: Vec<crate::model::ListenerPressure>,
    pub kernel: KernelStatus,
    pub counters: std::collections::BTreeMap<String, u64>,
    /// `[upstream]`: absent when off.
    #[serde(default)]
    pub upstream: Option<UpstreamView>,
}

/// FlowSpec rules pushed upstream through gobgpd, and gobgpd's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpstreamView {
    /// gobgpd's API address.
    pub api: String,
    /// gobgpd answered the last reconcile (null: none tried yet).
    pub reachable: Option<bool>,
    pub error: Option<String>,
    /// Policy monitor: `announcements` are what would be announced.
    pub monitor: bool,
    /// gobgpd's BGP peers and their session state ("established", ...).
    pub peers: Vec<PeerView>,
    pub announcements: Vec<AnnouncementView>,
    /// Rules held back by a guardrail, and why.
    pub refused: Vec<RefusalView>,
    /// tcpguard's paths gobgpd held after the last reconcile.
    pub held: usize,
    pub announced_total: u64,
    pub withdrawn_total: u64,
    pub failures_total: u64,
    pub refused_total: u64,
    pub last_reconcile_age_secs: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub address: String,
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnouncementView {
    /// The rule in words ("tcp to 198.18.0.1/32 from 203.0.113.7/32 port 80 SYN → discard").
    pub rule: String,
    /// "block", "rate-limit" or "operator".
    pub kind: String,
    pub reason: String,
    pub src: Option<Prefix>,
    pub dst: Prefix,
    pub ports: Vec<u16>,
    pub age_secs: f64,
    /// Until it is withdrawn at the latest.
    pub ttl_secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusalView {
    pub what: String,
    pub reason: String,
}

/// `true`, for fields an older daemon's answer lacks.
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // a wire format: independent yes/no facts
pub struct InterfaceView {
    pub name: String,
    pub xdp_mode: String,
    /// True when the attachment was adopted from a previous run's pin.
    pub adopted: bool,
    /// The XDP link is attached to the interface (the kernel's view).
    #[serde(default)]
    pub attached: bool,
    /// An interface of this name exists (false: deleted or moved to another
    /// namespace; tcpguard attaches again when it returns).
    #[serde(default = "yes")]
    pub present: bool,
    /// This interface's datapath: "tracking" or "attack".
    #[serde(default)]
    pub mode: String,
    /// Its datapath checks ACKs to listeners (ACK-checking mode).
    #[serde(default)]
    pub ack_checking: bool,
    /// Who answers its SYNs in attack mode: "xdp", "xdp (probing)",
    /// "kernel cookies" (replies from XDP would not leave), or "off" (the
    /// policy does not answer from XDP).
    #[serde(default)]
    pub responder: String,
    /// Why, e.g. "XDP_TX undeliverable: veth peer has no XDP program".
    #[serde(default)]
    pub responder_reason: String,
    /// The datapath may answer from XDP right now (attack mode, sysctls set).
    #[serde(default)]
    pub answering: bool,
    #[serde(default)]
    pub xdp_synacks_per_sec: f64,
    /// XDP_TX replies the driver failed to send (the kernel's tracepoints).
    #[serde(default)]
    pub xdp_tx_failed: u64,
    #[serde(default)]
    pub xdp_tx_failed_per_sec: f64,
    /// The driver's own count of failed XDP_TX (ethtool, e.g. veth's
    /// `rx_queue_N_xdp_tx_errors`): a second witness, where it has one.
    #[serde(default)]
    pub driver_xdp_tx_errors: Option<u64>,
    /// Its failed transmits are observed: veth's own count is readable,
    /// or for other drivers the `xdp:xdp_exception` program is attached.
    #[serde(default)]
    pub tx_watch: bool,
    /// Times it fell back to the kernel's cookies at run time.
    #[serde(default)]
    pub fallbacks: u64,
    /// Times its datapath entered attack mode by itself.
    #[serde(default)]
    pub attack_entries: u64,
    /// Its MTU and the MSS its XDP SYN-ACKs advertise (IPv4).
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub synack_mss: u32,
    /// SYNs and ACKs attack mode left to the kernel as not for this host.
    #[serde(default)]
    pub not_for_host: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackView {
    /// A SYN flood or an ACK flood is on (active or cooling down).
    pub active: bool,
    /// The SYN flood's phase; the ACK flood's when no SYN flood is on.
    pub phase: Phase,
    /// The SYN flood's kind; `ack-flood` when only an ACK flood is on.
    pub kind: Option<Kind>,
    /// Every kind on now: a mixed flood names both (e.g. spoofed-random and
    /// ack-flood).
    #[serde(default)]
    pub kinds: Vec<Kind>,
    pub since_secs: Option<f64>,
    pub evidence: Vec<Evidence>,
    pub mitigation: Vec<String>,
    pub attacks_total: u64,
}

impl Default for AttackView {
    fn default() -> Self {
        AttackView {
            active: false,
            phase: Phase::Idle,
            kind: None,
            kinds: Vec::new(),
            since_secs: None,
            evidence: Vec::new(),
            mitigation: Vec::new(),
            attacks_total: 0,
        }
    }
}

/// The ACK-flood side: ACKs that match no connection, and the datapath's
/// ACK check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AckFloodView {
    pub active: bool,
    pub phase: Phase,
    pub since_secs: Option<f64>,
    /// ACKs to protected ports matching no connection, per second (answered
    /// by the kernel with a RST, or dropped in XDP).
    pub unmatched_acks_per_sec: f64,
    /// RSTs the kernel sent per second (TcpOutRsts).
    pub kernel_rsts_per_sec: f64,
    /// Invalid ACKs dropped in XDP per second (ACK check, or attack mode).
    pub dropped_per_sec: f64,
    /// The datapath's ACK check: "checking" or "off".
    pub datapath: String,
    /// Who turned it on: "datapath" (its rate crossed
    /// datapath.attack-ack-rate) or "daemon".
    pub entered_by: Option<String>,
    /// Times the datapath entered ACK-checking mode by itself.
    pub entries: u64,
    pub evidence: Vec<Evidence>,
}

impl Default for AckFloodView {
    fn default() -> Self {
        AckFloodView {
            active: false,
            phase: Phase::Idle,
            since_secs: None,
            unmatched_acks_per_sec: 0.0,
            kernel_rsts_per_sec: 0.0,
            dropped_per_sec: 0.0,
            datapath: String::new(),
            entered_by: None,
            entries: 0,
            evidence: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatapathView {
    /// "tracking" (calm: every handshake followed) or "attack" (no per-SYN state).
    pub mode: String,
    /// Who entered attack mode: "datapath" (its SYN rate crossed
    /// datapath.attack-syn-rate) or "daemon" (the detector).
    pub entered_by: Option<String>,
    pub since_secs: Option<f64>,
    /// Milliseconds from the start of the SYN window that tripped attack
    /// mode to the entry, and to the first SYN-ACK sent from XDP.
    pub entry_ms: Option<f64>,
    pub first_cookie_ms: Option<f64>,
    /// The datapath's own timestamps (CLOCK_MONOTONIC ns; 0 = none): entry,
    /// start of the SYN window that tripped it, first XDP SYN-ACK.
    pub entered_ns: u64,
    pub trigger_window_ns: u64,
    pub first_cookie_ns: u64,
    /// "xdp" (answering now), "xdp (armed in attack mode)", "kernel" or "off (policy ...)".
    pub responder: String,
    /// Times the datapath entered attack mode by itself (all interfaces).
    pub entries: u64,
    pub cookies_sent_per_sec: f64,
    pub cookie_acks_per_sec: f64,
    pub invalid_acks_dropped_per_sec: f64,
    /// Distinct SYN sources per second (attack mode's HyperLogLog estimate).
    pub distinct_sources_per_sec: f64,
    /// One SYN in this many is tracked in full in attack mode.
    pub sample_one_in: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockListView {
    /// Entries each list (IPv4, IPv6) holds.
    pub capacity: u32,
    pub entries_v4: usize,
    pub entries_v6: usize,
    /// policy.max-blocked: blocks the daemon itself keeps at most.
    pub auto_block_cap: usize,
    pub auto_blocks: usize,
    /// Blocks the datapath refused since start (a full list).
    pub refused: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    pub prefix: Prefix,
    /// Seconds left; None = permanent.
    pub expires_in_secs: Option<f64>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub addr: IpAddr,
    /// Set for an aggregate of sources (24 or 64): `addr` is its network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    pub syn_per_sec: f64,
    pub syns: u64,
    pub completed: u64,
    pub half_open: u64,
    pub dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelStatus {
    #[serde(flatten)]
    pub view: KernelView,
    /// tcpguard has set tcp_syncookies=2 and will restore the original.
    pub syncookies_forced: bool,
    pub syncookies_original: Option<u8>,
    /// The operator's tcp_timestamps while the XDP responder needs 2.
    #[serde(default)]
    pub timestamps_original: Option<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge { len: u32 },
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::TooLarge { len: u32::MAX })?;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge { len });
    }
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> Result<T, ProtoError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge { len });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::Block { prefix: "198.51.100.0/24".parse().unwrap(), ttl_secs: Some(30), force: false };
        write_frame(&mut a, &req).await.unwrap();
        let got: Request = read_frame(&mut b).await.unwrap();
        assert_eq!(got, req);
        // The wire form is stable JSON an operator can read.
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"cmd":"block","prefix":"198.51.100.0/24","ttl_secs":30,"force":false}"#
        );
        // Oversized length is refused before allocating.
        a.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
        assert!(matches!(read_frame::<_, Request>(&mut b).await, Err(ProtoError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&5u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{nope").await.unwrap();
        assert!(matches!(read_frame::<_, Request>(&mut b).await, Err(ProtoError::Json(_))));
        let bad: Result<Request, _> = serde_json::from_str(r#"{"cmd":"block","prefix":"10.0.0.0/99"}"#);
        assert!(bad.unwrap_err().to_string().contains("prefix length"));
    }

    #[test]
    fn status_json_has_the_documented_fields() {
        let v = serde_json::to_value(StatusView::default()).unwrap();
        for path in [
            "/attack/active",
            "/attack/kind",
            "/attack/evidence",
            "/half_open",
            "/syn_per_sec",
            "/blocked",
            "/top_sources",
            "/kernel/syncookies_forced",
        ] {
            assert!(v.pointer(path).is_some(), "missing {path} in {v}");
        }
    }
}

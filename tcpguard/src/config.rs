//! Configuration: serde types with kebab-case keys, defaults per section,
//! unknown keys rejected, and `check()` for semantics. No I/O but reading
//! the file. The commented default file (config/tcpguard.toml) is embedded
//! and is what `tcpguard run` uses without --config.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{model::AttachMode, net::Prefix};

/// The documented default configuration, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../../config/tcpguard.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {key}: {reason}")]
    Invalid { origin: String, key: &'static str, reason: String },
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub datapath: DatapathConfig,
    pub detection: DetectionConfig,
    pub policy: PolicyConfig,
    pub metrics: MetricsConfig,
    pub control: ControlConfig,
    pub upstream: UpstreamConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub interfaces: Vec<String>,
    pub xdp_mode: AttachMode,
    pub tick_ms: u64,
    pub stay_attached: bool,
    pub state_dir: PathBuf,
    pub pin_root: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            interfaces: Vec::new(),
            xdp_mode: AttachMode::Auto,
            tick_ms: 250,
            stay_attached: false,
            state_dir: "/var/lib/tcpguard".into(),
            pin_root: crate::loader::PIN_ROOT.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DatapathMode {
    #[default]
    Enforce,
    Monitor,
}

/// Who answers SYNs while the datapath is in attack mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SynCookies {
    /// XDP answers SYNs to listeners with the kernel's own SYN cookie.
    #[default]
    Xdp,
    /// The kernel answers (with its SYN cookies when the policy forces them).
    Kernel,
}

impl SynCookies {
    pub fn as_str(self) -> &'static str {
        match self {
            SynCookies::Xdp => "xdp",
            SynCookies::Kernel => "kernel",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DatapathConfig {
    pub mode: DatapathMode,
    pub ports: Vec<u16>,
    pub half_open_timeout_secs: u64,
    pub half_open_entries: u32,
    pub source_entries: u32,
    /// Capacity of each block-list (IPv4 and IPv6 each), fixed when the
    /// maps are created (a pinned list keeps the size it was made with).
    pub block_list_entries: u32,
    pub syn_rate_per_source: u64,
    pub syn_burst: u64,
    pub allow: Vec<Prefix>,
    pub block: Vec<Prefix>,
    /// Accept `block` entries wider than policy.widest-block-v4/-v6 (the
    /// config's `--force`).
    pub wide_entries: bool,
    pub syn_cookies: SynCookies,
    pub attack_syn_rate: u64,
    pub attack_sample: u32,
    /// Unmatched ACKs per second on one CPU that put the datapath in
    /// ACK-checking mode by itself (0 = only the daemon does).
    pub attack_ack_rate: u64,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mode: DatapathMode::Enforce,
            ports: Vec::new(),
            half_open_timeout_secs: 10,
            half_open_entries: tcpguard_common::DEFAULT_HALF_OPEN_ENTRIES,
            source_entries: tcpguard_common::DEFAULT_SRC_ENTRIES,
            block_list_entries: tcpguard_common::LIST_ENTRIES,
            syn_rate_per_source: 0,
            syn_burst: 0,
            allow: vec!["127.0.0.0/8".parse().expect("valid"), "::1/128".parse().expect("valid")],
            block: Vec::new(),
            wide_entries: false,
            syn_cookies: SynCookies::Xdp,
            attack_syn_rate: 20_000,
            attack_sample: 64,
            attack_ack_rate: 20_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DetectionConfig {
    pub min_syn_rate: f64,
    pub half_open_threshold: u64,
    pub min_completion_ratio: f64,
    pub start_ticks: u32,
    pub hold_down_secs: f64,
    pub heavy_source_syn_rate: u64,
    /// An aggregate (IPv4 /24, IPv6 /64) sending this many SYN/s in all is
    /// "heavy" (0 = no aggregates).
    pub heavy_prefix_syn_rate: u64,
    pub heavy_share: f64,
    pub spoofed_new_source_ratio: f64,
    /// A listener whose SYN queue holds at least this share of its backlog
    /// is under pressure.
    pub listener_queue_share: f64,
    /// ACKs per second to a protected port that match no connection (the
    /// kernel answers each with a RST) that make an ACK flood.
    pub min_ack_rate: f64,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            min_syn_rate: 1000.0,
            half_open_threshold: 512,
            min_completion_ratio: 0.5,
            start_ticks: 2,
            hold_down_secs: 5.0,
            heavy_source_syn_rate: 200,
            heavy_prefix_syn_rate: 1000,
            heavy_share: 0.5,
            spoofed_new_source_ratio: 0.5,
            listener_queue_share: 0.5,
            min_ack_rate: 1000.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    Monitor,
    Drop,
    SynCookie,
    #[default]
    Auto,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Monitor => "monitor",
            PolicyMode::Drop => "drop",
            PolicyMode::SynCookie => "syn-cookie",
            PolicyMode::Auto => "auto",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    pub block_ttl_secs: u64,
    pub block_ttl_max_secs: u64,
    pub max_blocked: usize,
    /// `tcpguard block` refuses prefixes shorter than these unless --force.
    pub widest_block_v4: u8,
    pub widest_block_v6: u8,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: PolicyMode::Auto,
            block_ttl_secs: 60,
            block_ttl_max_secs: 3600,
            max_blocked: 1024,
            widest_block_v4: 16,
            widest_block_v6: 48,
        }
    }
}

/// `[upstream]`: FlowSpec rules pushed to the network through a gobgpd the
/// operator runs (off by default).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub enabled: bool,
    /// gobgpd's gRPC API (its --api-hosts).
    pub api: SocketAddr,
    /// Seconds between reconciles of gobgpd's RIB with what should stand.
    pub reconcile_secs: u64,
    /// The addresses rules may protect (host prefixes of this host); empty:
    /// every global address of the protected interfaces.
    pub destinations: Vec<Prefix>,
    /// Announce blocks with an expiry (heavy sources, `tcpguard block --ttl`).
    pub announce_blocks: bool,
    pub widest_source_v4: u8,
    pub widest_source_v6: u8,
    /// SYN/s the host absorbs; at or over it, SYNs are rate-limited upstream
    /// (0 = never).
    pub host_capacity: u64,
    /// The rate a rate-limit rule lets through, in bytes per second.
    pub rate_limit_bytes_per_sec: u64,
    /// Seconds a rate-limit rule stays after the SYN rate fell below the capacity.
    pub hold_down_secs: f64,
    pub max_announcements: usize,
    pub max_new_per_minute: usize,
    /// No announcement stands longer.
    pub max_ttl_secs: u64,
    /// The TTL of `tcpguard upstream announce` without --ttl.
    pub default_ttl_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            enabled: false,
            api: "127.0.0.1:50051".parse().expect("valid"),
            reconcile_secs: 5,
            destinations: Vec::new(),
            announce_blocks: true,
            widest_source_v4: 24,
            widest_source_v6: 48,
            host_capacity: 0,
            rate_limit_bytes_per_sec: 1_000_000,
            hold_down_secs: 60.0,
            max_announcements: 200,
            max_new_per_minute: 60,
            max_ttl_secs: 86_400,
            default_ttl_secs: 600,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: "127.0.0.1:9717".parse().expect("valid") }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ControlConfig {
    pub socket: PathBuf,
    pub mode: SocketMode,
    pub group: String,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { socket: "/run/tcpguard/tcpguard.sock".into(), mode: SocketMode(0o660), group: String::new() }
    }
}

impl ControlConfig {
    /// The socket file mode.
    pub fn mode_bits(&self) -> u32 {
        self.mode.0
    }
}

/// The control socket's file mode, written in the config as an octal
/// string ("0660") and checked when the file is parsed: the owner must be
/// able to read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SocketMode(pub u32);

impl TryFrom<String> for SocketMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let m = u32::from_str_radix(&s, 8).map_err(|_| {
            format!("control.mode: {s:?} must be an octal mode like \"0660\" that lets the owner read and write")
        })?;
        crate::validate::socket_mode(m).map_err(|e| format!("control.mode: {e}"))?;
        Ok(SocketMode(m))
    }
}

impl From<SocketMode> for String {
    fn from(m: SocketMode) -> String {
        format!("{:04o}", m.0)
    }
}

impl Config {
    /// Parse and check TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: flatten(&e.to_string()) })?;
        cfg.check().map_err(|(key, reason)| ConfigError::Invalid { origin: origin.to_string(), key, reason })?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        // An empty file is a mistake (a truncated write, the wrong path), not
        // "every default": it would reset every key, the socket path included.
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Err(ConfigError::Parse {
                origin: path.display().to_string(),
                message: "the file has no settings at all; refusing it (omit --config for the embedded default)".into(),
            });
        }
        Self::parse(&text, &path.display().to_string())
    }

    pub fn embedded() -> Self {
        Self::parse(DEFAULT_TOML, "embedded default").expect("the embedded default config is valid")
    }

    /// Semantic checks: the first problem, as (key, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let d = &self.daemon;
        if !(50..=5000).contains(&d.tick_ms) {
            return Err(("daemon.tick-ms", format!("{} is outside 50..=5000", d.tick_ms)));
        }
        for (n, i) in d.interfaces.iter().enumerate() {
            if i.is_empty() || i.len() > 15 || i.contains('/') || i.contains(char::is_whitespace) {
                return Err(("daemon.interfaces", format!("{i:?} is not a valid interface name")));
            }
            // Twice would attach twice to one device and count it double.
            if d.interfaces[..n].contains(i) {
                return Err(("daemon.interfaces", format!("{i:?} is listed more than once")));
            }
        }
        let p = &self.datapath;
        if !(1..=60).contains(&p.half_open_timeout_secs) {
            return Err(("datapath.half-open-timeout-secs", format!("{} is outside 1..=60", p.half_open_timeout_secs)));
        }
        if !(1024..=16_777_216).contains(&p.half_open_entries) {
            return Err(("datapath.half-open-entries", format!("{} is outside 1024..=16777216", p.half_open_entries)));
        }
        if !(1024..=16_777_216).contains(&p.source_entries) {
            return Err(("datapath.source-entries", format!("{} is outside 1024..=16777216", p.source_entries)));
        }
        if !(64..=1_048_576).contains(&p.block_list_entries) {
            return Err(("datapath.block-list-entries", format!("{} is outside 64..=1048576", p.block_list_entries)));
        }
        if p.syn_rate_per_source > tcpguard_common::ratelimit::MAX_RATE {
            return Err(("datapath.syn-rate-per-source", format!("at most {}", tcpguard_common::ratelimit::MAX_RATE)));
        }
        if p.syn_burst > tcpguard_common::ratelimit::MAX_BURST {
            return Err(("datapath.syn-burst", format!("at most {}", tcpguard_common::ratelimit::MAX_BURST)));
        }
        if p.ports.contains(&0) {
            return Err(("datapath.ports", "port 0 cannot be protected".into()));
        }
        if p.ports.len() > tcpguard_common::PORT_ENTRIES as usize {
            return Err(("datapath.ports", format!("at most {} ports", tcpguard_common::PORT_ENTRIES)));
        }
        if p.attack_syn_rate != 0 && p.attack_syn_rate < 1000 {
            return Err((
                "datapath.attack-syn-rate",
                format!("{} is below 1000 SYN/s (0 turns it off)", p.attack_syn_rate),
            ));
        }
        if p.attack_ack_rate != 0 && p.attack_ack_rate < 1000 {
            return Err((
                "datapath.attack-ack-rate",
                format!("{} is below 1000 unmatched ACKs/s (0 turns it off)", p.attack_ack_rate),
            ));
        }
        if !(1..=65_536).contains(&p.attack_sample) {
            return Err(("datapath.attack-sample", format!("{} is outside 1..=65536", p.attack_sample)));
        }
        if let Some(b) = p.block.iter().find(|b| p.allow.iter().any(|a| a == *b)) {
            return Err(("datapath.block", format!("{b} is also in datapath.allow")));
        }
        let widest = crate::validate::Widest { v4: self.policy.widest_block_v4, v6: self.policy.widest_block_v6 };
        for b in &p.block {
            if let Err(e) = crate::validate::block(b, widest, p.wide_entries) {
                return Err(("datapath.block", format!("{e} (in the config: datapath.wide-entries = true)")));
            }
        }
        self.check_detection()?;
        let y = &self.policy;
        if y.block_ttl_secs == 0 {
            return Err(("policy.block-ttl-secs", "must be at least 1".into()));
        }
        if y.block_ttl_max_secs < y.block_ttl_secs {
            return Err((
                "policy.block-ttl-max-secs",
                format!("{} is below policy.block-ttl-secs ({})", y.block_ttl_max_secs, y.block_ttl_secs),
            ));
        }
        // Half the list stays free for the operator's own blocks.
        let cap = self.datapath.block_list_entries as usize / 2;
        if y.max_blocked == 0 || y.max_blocked > cap {
            return Err((
                "policy.max-blocked",
                format!("{} is outside 1..={cap} (half of datapath.block-list-entries)", y.max_blocked),
            ));
        }
        if y.widest_block_v4 > 32 {
            return Err(("policy.widest-block-v4", format!("{} is not a prefix length (0..=32)", y.widest_block_v4)));
        }
        if y.widest_block_v6 > 128 {
            return Err(("policy.widest-block-v6", format!("{} is not a prefix length (0..=128)", y.widest_block_v6)));
        }
        if y.block_ttl_max_secs > crate::ctl::MAX_TTL_SECS {
            return Err(("policy.block-ttl-max-secs", format!("{} is longer than 365 days", y.block_ttl_max_secs)));
        }
        let c = &self.control;
        if !c.socket.is_absolute() {
            return Err(("control.socket", format!("{} must be an absolute path", c.socket.display())));
        }
        self.check_upstream()
    }

    fn check_upstream(&self) -> Result<(), (&'static str, String)> {
        let u = &self.upstream;
        if !(1..=300).contains(&u.reconcile_secs) {
            return Err(("upstream.reconcile-secs", format!("{} is outside 1..=300", u.reconcile_secs)));
        }
        if let Some(d) = u.destinations.iter().find(|d| !d.is_host()) {
            return Err(("upstream.destinations", format!("{d} is not one address (a /32 or /128 of this host)")));
        }
        // Never a wider source than a /8 or a /32, whatever is asked.
        if !(8..=32).contains(&u.widest_source_v4) {
            return Err(("upstream.widest-source-v4", format!("{} is outside 8..=32", u.widest_source_v4)));
        }
        if !(32..=128).contains(&u.widest_source_v6) {
            return Err(("upstream.widest-source-v6", format!("{} is outside 32..=128", u.widest_source_v6)));
        }
        if u.host_capacity > 0 && u.host_capacity < 1000 {
            return Err((
                "upstream.host-capacity",
                format!("{} is below 1000 SYN/s (0 turns it off)", u.host_capacity),
            ));
        }
        if u.rate_limit_bytes_per_sec == 0 || u.rate_limit_bytes_per_sec > 100_000_000_000 {
            return Err((
                "upstream.rate-limit-bytes-per-sec",
                format!("{} is outside 1..=100000000000 (a discard is a block)", u.rate_limit_bytes_per_sec),
            ));
        }
        if !(u.hold_down_secs.is_finite() && (0.0..=3600.0).contains(&u.hold_down_secs)) {
            return Err(("upstream.hold-down-secs", format!("{} is outside 0..=3600", u.hold_down_secs)));
        }
        if !(1..=10_000).contains(&u.max_announcements) {
            return Err(("upstream.max-announcements", format!("{} is outside 1..=10000", u.max_announcements)));
        }
        if !(1..=10_000).contains(&u.max_new_per_minute) {
            return Err(("upstream.max-new-per-minute", format!("{} is outside 1..=10000", u.max_new_per_minute)));
        }
        if !(60..=604_800).contains(&u.max_ttl_secs) {
            return Err(("upstream.max-ttl-secs", format!("{} is outside 60..=604800 (a week)", u.max_ttl_secs)));
        }
        if u.default_ttl_secs == 0 || u.default_ttl_secs > u.max_ttl_secs {
            return Err((
                "upstream.default-ttl-secs",
                format!("{} is outside 1..=upstream.max-ttl-secs ({})", u.default_ttl_secs, u.max_ttl_secs),
            ));
        }
        Ok(())
    }
    fn check_detection(&self) -> Result<(), (&'static str, String)> {
        let t = &self.detection;
        let ratio = |key: &'static str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((key, format!("{v} is not a ratio in 0..=1")))
            }
        };
        ratio("detection.min-completion-ratio", t.min_completion_ratio)?;
        ratio("detection.heavy-share", t.heavy_share)?;
        ratio("detection.spoofed-new-source-ratio", t.spoofed_new_source_ratio)?;
        ratio("detection.listener-queue-share", t.listener_queue_share)?;
        if t.listener_queue_share == 0.0 {
            return Err(("detection.listener-queue-share", "must be above 0 (1 = only a full queue)".into()));
        }
        if !(t.min_syn_rate.is_finite() && t.min_syn_rate > 0.0) {
            return Err(("detection.min-syn-rate", format!("{} must be a positive rate", t.min_syn_rate)));
        }
        if !(t.min_ack_rate.is_finite() && t.min_ack_rate > 0.0) {
            return Err(("detection.min-ack-rate", format!("{} must be a positive rate", t.min_ack_rate)));
        }
        if !(1..=100).contains(&t.start_ticks) {
            return Err(("detection.start-ticks", format!("{} is outside 1..=100", t.start_ticks)));
        }
        if !(t.hold_down_secs.is_finite() && (0.0..=3600.0).contains(&t.hold_down_secs)) {
            return Err(("detection.hold-down-secs", format!("{} is outside 0..=3600", t.hold_down_secs)));
        }
        if t.heavy_source_syn_rate == 0 {
            return Err(("detection.heavy-source-syn-rate", "must be at least 1".into()));
        }
        if t.heavy_prefix_syn_rate > 10_000_000 {
            return Err(("detection.heavy-prefix-syn-rate", format!("{} is over 10000000", t.heavy_prefix_syn_rate)));
        }
        Ok(())
    }
}

/// TOML errors span several lines with a source excerpt; keep them on one
/// line for logs while keeping the key and the reason.
fn flatten(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

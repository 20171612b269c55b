//! Where a config key becomes a map value: the datapath's `Settings` for
//! one interface, from the configuration and that interface's facts, in one
//! pure function ([`build`]). The daemon (start, reload, every change of an
//! interface or of the lists) and `tcpguard watch` write what it returns,
//! whole; nothing else assembles a `Settings`.

use tcpguard_common::{
    Settings, FLAG_ANSWER, FLAG_EGRESS, FLAG_HAS_ALLOWS, FLAG_HAS_BLOCKS, FLAG_MONITOR, FLAG_PORT_FILTER,
    FLAG_XDP_COOKIES,
};

use crate::config::{Config, DatapathMode, PolicyMode, SynCookies};

/// What one interface's settings depend on besides the config: the
/// interface as the kernel describes it, what the daemon found on the host,
/// and the state the daemon keeps (lists, the responder's go-ahead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // independent facts, not a state machine
pub struct Facts {
    /// The interface's MTU (0: unknown, taken as 1500).
    pub mtu: u32,
    pub mac: [u8; 6],
    pub ifindex: u32,
    /// `struct net_device`'s ifindex offset (kernel BTF; 0 = unknown).
    pub dev_ifindex_off: u32,
    /// The TC egress program sees the server's side.
    pub egress: bool,
    /// The block-lists and allow-lists hold anything.
    pub has_blocks: bool,
    pub has_allows: bool,
    /// The responder may answer now (its sysctls are in effect).
    pub answering: bool,
    /// Seed of the per-source sketch hash (random per daemon start).
    pub hash_seed: u64,
    /// The window scale the kernel gives this host's listeners.
    pub wscale: u8,
}

/// Whether the XDP responder answers in attack mode: only for policies that
/// answer floods with cookies, in enforce mode, with `syn-cookies = "xdp"`.
pub fn responder_enabled(cfg: &Config) -> bool {
    cfg.datapath.syn_cookies == SynCookies::Xdp
        && cfg.datapath.mode == DatapathMode::Enforce
        && matches!(cfg.policy.mode, PolicyMode::Auto | PolicyMode::SynCookie)
}

/// The settings of one interface. `cfg` is `None` for a datapath run
/// without a config (`tcpguard watch`): it counts, and enforces nothing.
pub fn build(cfg: Option<&Config>, f: &Facts) -> Settings {
    let mut flags = 0;
    let on = |flag: u32, yes: bool| if yes { flag } else { 0 };
    flags |= on(FLAG_EGRESS, f.egress);
    flags |= on(FLAG_HAS_BLOCKS, f.has_blocks);
    flags |= on(FLAG_HAS_ALLOWS, f.has_allows);
    let mtu = if f.mtu == 0 { 1500 } else { f.mtu.clamp(576, 65_535) };
    let mut mac = [0u8; 8];
    mac[..6].copy_from_slice(&f.mac);
    let link = Settings {
        synack_mss4: mtu - 40,
        synack_mss6: mtu - 60,
        mac,
        ifindex: f.ifindex,
        dev_ifindex_off: f.dev_ifindex_off,
        synack_wscale: u32::from(f.wscale),
        hash_seed: f.hash_seed,
        ..Settings::default()
    };
    let Some(cfg) = cfg else { return Settings { flags, ..link } };
    let p = &cfg.datapath;
    flags |= on(FLAG_MONITOR, p.mode == DatapathMode::Monitor);
    flags |= on(FLAG_PORT_FILTER, !p.ports.is_empty());
    let responder = responder_enabled(cfg);
    flags |= on(FLAG_XDP_COOKIES, responder);
    flags |= on(FLAG_ANSWER, responder && f.answering);
    Settings {
        flags,
        heavy_prefix_syns_per_sec: cfg.detection.heavy_prefix_syn_rate as u32,
        syn_rate: p.syn_rate_per_source,
        syn_burst: p.syn_burst,
        half_open_timeout_ns: p.half_open_timeout_secs * 1_000_000_000,
        heavy_syns_per_sec: cfg.detection.heavy_source_syn_rate,
        attack_syn_rate: p.attack_syn_rate,
        attack_sample: p.attack_sample,
        attack_ack_rate: p.attack_ack_rate,
        ..link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            mtu: 9000,
            mac: [2, 0, 0, 0, 0, 1],
            ifindex: 7,
            dev_ifindex_off: 224,
            egress: true,
            has_blocks: true,
            has_allows: false,
            answering: true,
            hash_seed: 42,
            wscale: 7,
        }
    }

    #[test]
    fn every_key_lands_in_its_field() {
        let mut cfg = Config::embedded();
        cfg.datapath.ports = vec![80];
        cfg.datapath.syn_rate_per_source = 100;
        cfg.datapath.syn_burst = 200;
        cfg.datapath.half_open_timeout_secs = 3;
        cfg.datapath.attack_syn_rate = 5000;
        cfg.datapath.attack_sample = 32;
        cfg.detection.heavy_source_syn_rate = 900;
        cfg.detection.heavy_prefix_syn_rate = 1200;
        let s = build(Some(&cfg), &facts());
        assert_eq!(
            (s.syn_rate, s.syn_burst, s.half_open_timeout_ns, s.attack_syn_rate, s.attack_sample),
            (100, 200, 3_000_000_000, 5000, 32)
        );
        assert_eq!((s.heavy_syns_per_sec, s.heavy_prefix_syns_per_sec), (900, 1200));
        assert_eq!((s.synack_mss4, s.synack_mss6, s.synack_wscale, s.hash_seed), (8960, 8940, 7, 42));
        assert_eq!((s.mac, s.ifindex, s.dev_ifindex_off), ([2, 0, 0, 0, 0, 1, 0, 0], 7, 224));
        let want = FLAG_EGRESS | FLAG_HAS_BLOCKS | FLAG_PORT_FILTER | FLAG_XDP_COOKIES | FLAG_ANSWER;
        assert_eq!(s.flags, want, "{:#x}", s.flags);
    }

    #[test]
    fn the_responder_answers_only_where_policy_mode_and_cookies_say() {
        let mut cfg = Config::embedded();
        assert!(responder_enabled(&cfg), "the default answers from XDP");
        let f = facts();
        for (label, change) in [
            ("syn-cookies kernel", (|c: &mut Config| c.datapath.syn_cookies = SynCookies::Kernel) as fn(&mut Config)),
            ("datapath monitor", |c| c.datapath.mode = DatapathMode::Monitor),
            ("policy drop", |c| c.policy.mode = PolicyMode::Drop),
            ("policy monitor", |c| c.policy.mode = PolicyMode::Monitor),
        ] {
            let mut c = cfg.clone();
            change(&mut c);
            let s = build(Some(&c), &f);
            assert_eq!(s.flags & (FLAG_XDP_COOKIES | FLAG_ANSWER), 0, "{label}");
        }
        cfg.policy.mode = PolicyMode::SynCookie;
        let held = build(Some(&cfg), &Facts { answering: false, ..f });
        assert_eq!(held.flags & (FLAG_XDP_COOKIES | FLAG_ANSWER), FLAG_XDP_COOKIES, "armed, not answering yet");
        let monitor = Config {
            datapath: crate::config::DatapathConfig { mode: DatapathMode::Monitor, ..cfg.datapath.clone() },
            ..cfg
        };
        assert_ne!(build(Some(&monitor), &f).flags & FLAG_MONITOR, 0);
    }

    #[test]
    fn the_mss_follows_the_mtu_within_bounds() {
        let mss = |mtu| build(None, &Facts { mtu, ..facts() }).synack_mss4;
        assert_eq!((mss(0), mss(1500), mss(100), mss(70_000)), (1460, 1460, 536, 65_495));
    }

    #[test]
    fn without_a_config_only_the_interface_and_the_lists_count() {
        let s = build(None, &Facts { has_allows: true, ..facts() });
        assert_eq!(s.flags, FLAG_EGRESS | FLAG_HAS_BLOCKS | FLAG_HAS_ALLOWS);
        assert_eq!((s.syn_rate, s.heavy_syns_per_sec, s.attack_syn_rate), (0, 0, 0));
        let plain = build(None, &Facts { egress: false, has_blocks: false, ..Facts::default() });
        assert_eq!(plain.flags, 0);
    }
}

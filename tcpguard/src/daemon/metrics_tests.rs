//! Unit tests of `metrics`.
use tcpguard_common::Counters;

use super::*;

fn iface(name: &str, attached: bool, attack: bool, xdp: bool, cookies: u64, failed: u64, fb: u64) -> IfaceObs {
    let mut counters = Counters::default();
    counters.v[Counter::CookieSent as usize] = cookies;
    counters.v[Counter::XdpTxFailed as usize] = failed;
    IfaceObs {
        name: name.into(),
        how: crate::model::Attach::Native,
        attached,
        present: attached,
        attack_mode: attack,
        ack_mode: false,
        attack_entries: 0,
        responder: String::new(),
        responder_reason: String::new(),
        responder_xdp: xdp,
        fallbacks: fb,
        answering: false,
        tx_watch: true,
        driver_tx_errors: None,
        mtu: 1500,
        counters,
        prev: Counters::default(),
        base: Counters::default(),
    }
}

#[test]
#[allow(clippy::too_many_lines)] // one observation and the table of every metric's expected line
fn names_and_no_address_labels() {
    use crate::{
        daemon::{
            datapaths::DpAttack,
            detect::{AckAssessment, Assessment, Rates},
            observe::{BlockObs, ConfigObs, MitigationObs},
        },
        model::{BlockOrigin, ListenerPressure, Phase},
    };
    let m = Metrics::new();
    let mut c = Counters::default();
    c.v[Counter::Syn as usize] = 10;
    c.v[Counter::DropBlocked as usize] = 3;
    c.v[Counter::AckUnmatched as usize] = 100;
    c.v[Counter::DropAckInvalid as usize] = 50;
    c.v[Counter::AckModeEntered as usize] = 2;
    c.v[Counter::CookieSent as usize] = 40;
    c.v[Counter::CookieNoLookup as usize] = 39;
    let pressed = ListenerPressure {
        addr: "0.0.0.0:80".into(),
        syn_queue: 16,
        accept_queue: 0,
        backlog: 16,
        share: 1.0,
        drops_per_sec: 0.0,
        pressured: true,
    };
    let mut o = Observation {
        counters: c,
        half_open: 7,
        failed_total: 2,
        attacks: vec![0, 1, 0, 1],
        assessment: Some(Assessment {
            over: true,
            phase: Phase::Active,
            kind: Some(Kind::SpoofedRandom),
            evidence: Vec::new(),
            event: None,
            rates: Rates::default(),
            heavy: Vec::new(),
            listeners: vec![pressed],
            since: None,
            ack: AckAssessment { phase: Phase::Active, ..AckAssessment::default() },
        }),
        mitigation: MitigationObs {
            dp_attack: DpAttack { active: true, ..DpAttack::default() },
            dp_ack: DpAttack { active: true, by_datapath: true, ..DpAttack::default() },
            syncookies_original: Some(1),
            blocks: vec![BlockObs {
                prefix: "198.51.100.0/24".parse().unwrap(),
                expires_ns: 0,
                origin: BlockOrigin::Config,
            }],
            block_capacity: 64,
            block_failures: 2,
            ..MitigationObs::default()
        },
        config: ConfigObs { responder_enabled: true, ..ConfigObs::default() },
        ifaces: vec![iface("eth1", true, true, true, 40, 0, 0), iface("eth2", false, false, false, 0, 9, 1)],
        ..Observation::default()
    };
    m.render(&o);
    let text = String::from_utf8(m.encode()).unwrap();
    for want in [
        "tcpguard_syn_packets_total 10",
        "tcpguard_half_open_connections 7",
        "tcpguard_handshakes_failed_total 2",
        "tcpguard_dropped_packets_total{reason=\"blocked\"} 3",
        "tcpguard_attack_active 1",
        "tcpguard_attacks_total{kind=\"spoofed-random\"} 1",
        "tcpguard_attacks_total{kind=\"ack-flood\"} 1",
        "tcpguard_syn_flood_active 1",
        "tcpguard_ack_flood_active 1",
        "tcpguard_datapath_ack_mode 1",
        "tcpguard_datapath_ack_mode_entries_total 2",
        "tcpguard_unmatched_acks_total 150",
        "tcpguard_blocked_prefixes 1",
        "tcpguard_block_list_entries{family=\"ipv4\"} 1",
        "tcpguard_block_list_entries{family=\"ipv6\"} 0",
        "tcpguard_block_list_capacity 64",
        "tcpguard_listeners_under_pressure 1",
        "tcpguard_syncookies_forced 1",
        "tcpguard_datapath_attack_mode 1",
        "tcpguard_datapath_attached{interface=\"eth1\"} 1",
        "tcpguard_datapath_attached{interface=\"eth2\"} 0",
        "tcpguard_interface_attack_mode{interface=\"eth1\"} 1",
        "tcpguard_interface_attack_mode{interface=\"eth2\"} 0",
        "tcpguard_interface_responder_xdp{interface=\"eth1\"} 1",
        "tcpguard_interface_responder_xdp{interface=\"eth2\"} 0",
        "tcpguard_interface_xdp_syncookies_sent_total{interface=\"eth1\"} 40",
        "tcpguard_xdp_tx_errors_total{interface=\"eth2\"} 9",
        "tcpguard_responder_fallbacks_total{interface=\"eth2\"} 1",
        "tcpguard_block_failures_total 2",
        "tcpguard_xdp_syncookies_sent_total 40",
        "tcpguard_xdp_syncookies_without_lookup_total 39",
        "tcpguard_tick_duration_seconds_bucket",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("addr="), "no per-address labels");
    // The kernel's TcpExt counters are node_exporter's to export.
    assert!(!text.contains("tcpext"), "{text}");
    // Counters advance by deltas.
    o.counters.v[Counter::Syn as usize] = 15;
    m.render(&o);
    assert!(String::from_utf8(m.encode()).unwrap().contains("tcpguard_syn_packets_total 15"));
}

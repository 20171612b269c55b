//! Unit tests of `config`.
use super::*;

#[test]
fn embedded_default_equals_code_defaults() {
    // The documented file and the Default impls must not drift apart.
    assert_eq!(Config::embedded(), Config::default());
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let e = Config::parse("[detection]\nmin-syn-rat = 5\n", "t.toml").unwrap_err().to_string();
    assert!(e.contains("t.toml"), "{e}");
    assert!(e.contains("unknown field `min-syn-rat`"), "{e}");
    let e = Config::parse("[nonsense]\n", "t.toml").unwrap_err().to_string();
    assert!(e.contains("unknown field `nonsense`"), "{e}");
}

#[test]
fn bad_values_name_the_key_and_reason() {
    let cases = [
        ("[daemon]\ntick-ms = 10\n", "daemon.tick-ms", "outside 50..=5000"),
        ("[detection]\nmin-completion-ratio = 1.5\n", "detection.min-completion-ratio", "not a ratio"),
        ("[policy]\nblock-ttl-secs = 100\nblock-ttl-max-secs = 10\n", "policy.block-ttl-max-secs", "below"),
        ("[control]\nmode = \"0999\"\n", "control.mode", "octal"),
        ("[datapath]\nblock = [\"10.0.0.0/8\"]\nallow = [\"10.0.0.0/8\"]\n", "datapath.block", "also in"),
        ("[datapath]\nhalf-open-timeout-secs = 0\n", "datapath.half-open-timeout-secs", "outside"),
        ("[datapath]\nattack-syn-rate = 10\n", "datapath.attack-syn-rate", "below 1000"),
        ("[datapath]\nattack-ack-rate = 999\n", "datapath.attack-ack-rate", "below 1000"),
        ("[detection]\nmin-ack-rate = -5\n", "detection.min-ack-rate", "positive rate"),
        ("[detection]\nmin-ack-rate = nan\n", "detection.min-ack-rate", "positive rate"),
        ("[datapath]\nattack-sample = 0\n", "datapath.attack-sample", "outside"),
        ("[policy]\nwidest-block-v4 = 33\n", "policy.widest-block-v4", "prefix length"),
        ("[daemon]\ninterfaces = [\"srv0\", \"srv0\"]\n", "daemon.interfaces", "listed more than once"),
        ("[datapath]\nblock = [\"::ffff:10.0.0.1/128\"]\n", "block", "IPv4-mapped"),
        ("[policy]\nblock-ttl-max-secs = 99999999999\n", "policy.block-ttl-max-secs", "365 days"),
        ("[datapath]\nblock-list-entries = 10\n", "datapath.block-list-entries", "outside 64..="),
        ("[datapath]\nblock-list-entries = 1024\n", "policy.max-blocked", "half of datapath.block-list-entries"),
        ("[datapath]\nblock = [\"0.0.0.0/0\"]\n", "datapath.block", "datapath.wide-entries = true"),
        ("[datapath]\nblock = [\"2001:db8::/32\"]\n", "datapath.block", "wider than /48"),
        ("[control]\nmode = \"0777\"\n", "control.mode", "every local user"),
        ("[control]\nmode = \"0662\"\n", "control.mode", "every local user"),
        ("[upstream]\napi = \"gobgpd\"\n", "api", "invalid socket address"),
        ("[upstream]\nreconcile-secs = 0\n", "upstream.reconcile-secs", "outside 1..=300"),
        ("[upstream]\ndestinations = [\"198.18.0.0/24\"]\n", "upstream.destinations", "not one address"),
        ("[upstream]\nwidest-source-v4 = 0\n", "upstream.widest-source-v4", "outside 8..=32"),
        ("[upstream]\nwidest-source-v6 = 16\n", "upstream.widest-source-v6", "outside 32..=128"),
        ("[upstream]\nhost-capacity = 10\n", "upstream.host-capacity", "below 1000"),
        ("[upstream]\nrate-limit-bytes-per-sec = 0\n", "upstream.rate-limit-bytes-per-sec", "a discard is a block"),
        ("[upstream]\nmax-announcements = 0\n", "upstream.max-announcements", "outside"),
        ("[upstream]\nmax-ttl-secs = 10\n", "upstream.max-ttl-secs", "outside 60..="),
        ("[upstream]\ndefault-ttl-secs = 100000\n", "upstream.default-ttl-secs", "max-ttl-secs"),
        ("[upstream]\nhold-down-secs = -1\n", "upstream.hold-down-secs", "outside 0..=3600"),
    ];
    // The config's opt-in takes a wide block as the CLI's --force does.
    let c = Config::parse("[datapath]\nblock = [\"10.0.0.0/8\"]\nwide-entries = true\n", "t.toml").unwrap();
    assert_eq!(c.datapath.block.len(), 1);
    for (text, key, reason) in cases {
        let e = Config::parse(text, "t.toml").unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(reason), "{text:?} gave {e:?}");
    }
    // Type errors from serde also carry the key.
    let e = Config::parse("[policy]\nmode = \"nuke\"\n", "t.toml").unwrap_err().to_string();
    assert!(e.contains("unknown variant `nuke`") && e.contains("mode"), "{e}");
    let e = Config::parse("[datapath]\nallow = [\"10.0.0.0/33\"]\n", "t.toml").unwrap_err().to_string();
    assert!(e.contains("prefix length"), "{e}");
}

#[test]
fn an_empty_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("tcpguard-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("empty.toml");
    for text in ["", "\n  \n", "# only a comment\n"] {
        std::fs::write(&p, text).unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("no settings at all"), "{text:?}: {e}");
    }
    std::fs::write(&p, "[policy]\nmode = \"drop\"\n").unwrap();
    assert!(Config::load(&p).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn partial_file_takes_defaults_for_the_rest() {
    let c = Config::parse("[policy]\nmode = \"drop\"\n", "t.toml").unwrap();
    assert_eq!(c.policy.mode, PolicyMode::Drop);
    assert_eq!(c.detection, DetectionConfig::default());
    assert_eq!(c.daemon.tick_ms, 250);
}

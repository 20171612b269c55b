//! The shipped files: the systemd unit passes `systemd-analyze verify`, the
//! commented default config is what the binary embeds and checks clean, the
//! Prometheus alerting rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`).

use std::{fmt::Write as _, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_tcpguard");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(format!("{ROOT}/config/tcpguard.service")).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "RestartPreventExitStatus=78",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    // verify needs the ExecStart binary to exist: point it at the one just built.
    let dir = std::env::temp_dir().join(format!("tcpguard-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tcpguard.service");
    std::fs::write(&path, unit.replace("/usr/bin/tcpguard", BIN)).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze not found: `cargo xtask prereqs` installs it (Debian package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "systemd-analyze verify failed:\n{out}");
    assert!(!out.contains("tcpguard.service:"), "warnings about the unit:\n{out}");
}

#[test]
fn shipped_config_checks_clean_and_bad_one_names_the_key() {
    let o = Command::new(BIN).args(["config", "check", &format!("{ROOT}/config/tcpguard.toml")]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": ok (policy auto"));
    let o = Command::new(BIN).args(["config", "default"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(format!("{ROOT}/config/tcpguard.toml")).unwrap()
    );

    let bad = std::env::temp_dir().join(format!("tcpguard-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[detection]\nstart-ticks = 0\n").unwrap();
    let o = Command::new(BIN).arg("config").arg("check").arg(&bad).output().unwrap();
    let _ = std::fs::remove_file(&bad);
    assert_eq!(o.status.code(), Some(78), "a config error exits EX_CONFIG (the unit does not retry it)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("detection.start-ticks") && err.contains("outside 1..=100"), "{err}");
}

#[test]
fn alerting_rules_check_and_their_unit_tests_pass() {
    let dir = format!("{ROOT}/config/prometheus");
    let promtool = |args: &[&str]| {
        Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool not found: `cargo xtask prereqs` installs it (Debian package prometheus)")
    };
    let o = promtool(&["check", "rules", "tcpguard-alerts.yml"]);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains("SUCCESS: 12 rules found"), "{out}");
    // Every alert has unit tests.
    let rules = std::fs::read_to_string(format!("{dir}/tcpguard-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(format!("{dir}/tcpguard-alerts.test.yml")).unwrap();
    for name in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {name}")), "no promtool test for {name}");
    }
    let o = promtool(&["test", "rules", "tcpguard-alerts.test.yml"]);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains("SUCCESS"), "{out}");
}

/// The metric names an expression selects (each is written `name{...}`).
fn selected_series(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in expr.match_indices('{') {
        let head = &expr[..i];
        let start = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).map_or(0, |p| p + 1);
        if start < i {
            out.push(head[start..].to_string());
        }
    }
    out
}

#[test]
fn dashboard_queries_are_valid_promql_over_exported_series() {
    let text = std::fs::read_to_string(format!("{ROOT}/config/grafana/tcpguard-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    // Only series tcpguard or node_exporter export (and the scrape's `up`).
    for e in &exprs {
        for name in selected_series(e) {
            assert!(
                name.starts_with("tcpguard_") || name.starts_with("node_netstat_TcpExt_") || name == "up",
                "{name} in {e}"
            );
        }
    }
    // Every query through promtool's parser, as recording rules (Grafana's
    // $instance becomes a regex that matches everything).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$instance", ".*").replace('\'', "''");
        let _ = writeln!(rules, "      - record: tcpguard:dashboard_query_{i}\n        expr: '{e}'");
    }
    let path = std::env::temp_dir().join(format!("tcpguard-dashboard-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let o = Command::new("promtool").args(["check", "rules"]).arg(&path).output().expect("promtool");
    let _ = std::fs::remove_file(&path);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
    assert_eq!(selected_series("rate(tcpguard_x{a=\"b\"}[1m]) / up{job=\"t\"}"), ["tcpguard_x", "up"]);
    // The check can fail: a broken query is refused.
    std::fs::write(&path, "groups:\n  - name: d\n    rules:\n      - record: x:y\n        expr: 'rate(up[1m]'\n")
        .unwrap();
    let o = Command::new("promtool").args(["check", "rules"]).arg(&path).output().expect("promtool");
    let _ = std::fs::remove_file(&path);
    assert!(!o.status.success(), "promtool accepted a broken query");
}

/// The package the test command built passes Debian's own checker: no
/// error, no warning (the one override it ships says why in a comment).
#[test]
fn the_package_is_lintian_clean() {
    let dir = std::path::PathBuf::from(format!("{ROOT}/target/debian"));
    let deb = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; `cargo xtask test` builds the package first", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("no .deb in target/debian: `cargo xtask test` builds it");
    let o = Command::new("lintian")
        .arg(&deb)
        .output()
        .expect("lintian not found: `cargo xtask prereqs` installs it (Debian package lintian)");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let tags: Vec<&str> = out.lines().filter(|l| l.starts_with("E: ") || l.starts_with("W: ")).collect();
    assert!(tags.is_empty(), "lintian on {}:\n{}", deb.display(), tags.join("\n"));
    assert!(o.status.success(), "lintian failed on {}:\n{out}", deb.display());
    // gobgpd ([upstream], off by default) is suggested, never required.
    let o = Command::new("dpkg-deb").arg("-f").arg(&deb).args(["Depends", "Recommends", "Suggests"]).output().unwrap();
    let fields = String::from_utf8_lossy(&o.stdout);
    assert!(fields.contains("Suggests: gobgpd"), "{fields}");
    assert!(!fields.lines().any(|l| l.starts_with("Depends:") && l.contains("gobgp")), "{fields}");
    // Every override carries its reason.
    let overrides = std::fs::read_to_string(format!("{ROOT}/tcpguard/debian/lintian/tcpguard")).unwrap();
    let mut reason = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            reason = true;
        } else if !line.trim().is_empty() {
            assert!(reason, "lintian override without a comment saying why: {line}");
            reason = false;
        }
    }
}

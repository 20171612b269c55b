//! Up-front capability check with an actionable message.

/// CAP_BPF = 39, CAP_NET_ADMIN = 12, CAP_PERFMON = 38, CAP_SYS_ADMIN = 21.
const NEEDED: [(u32, &str); 2] = [(12, "CAP_NET_ADMIN"), (39, "CAP_BPF")];

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Fail with the missing capabilities named and how to run with them.
pub fn require_capabilities() -> anyhow::Result<()> {
    let Some(eff) = effective_caps() else { return Ok(()) };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    // CAP_SYS_ADMIN covers CAP_BPF on every kernel.
    let missing: Vec<&str> =
        NEEDED.iter().filter(|(bit, _)| !(has(*bit) || *bit == 39 && has(21))).map(|(_, n)| *n).collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "missing capabilities: {} (needed to load BPF programs and attach XDP). \
         Run as root (sudo tcpguard ...), or as the systemd service in config/tcpguard.service, \
         or grant them: sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(command -v tcpguard)",
        missing.join(", ")
    )
}

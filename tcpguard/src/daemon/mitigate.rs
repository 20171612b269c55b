//! Applies what the policy decided: blocks with a TTL and an origin, the
//! datapath's attack mode, and the sysctls the mitigations need (saved to
//! disk before they change, restored after, and after a crash).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use anyhow::{Context as _, Result};

use crate::{
    daemon::{
        datapaths::{Datapaths, DpAttack},
        detect::{Assessment, Event, Phase},
        kernel::{self, SavedState},
        policy::Action,
    },
    model::BlockOrigin,
    net::Prefix,
};

#[derive(Clone, Copy)]
enum Sysctl {
    Syncookies,
    Timestamps,
}

impl Sysctl {
    fn name(self) -> &'static str {
        match self {
            Sysctl::Syncookies => "net.ipv4.tcp_syncookies",
            Sysctl::Timestamps => "net.ipv4.tcp_timestamps",
        }
    }
    fn read(self) -> std::io::Result<u8> {
        match self {
            Sysctl::Syncookies => kernel::read_syncookies(),
            Sysctl::Timestamps => kernel::read_timestamps(),
        }
    }
    fn write(self, v: u8) -> std::io::Result<()> {
        match self {
            Sysctl::Syncookies => kernel::write_syncookies(v),
            Sysctl::Timestamps => kernel::write_timestamps(v),
        }
    }
    fn saved(self, st: &mut SavedState) -> &mut Option<u8> {
        match self {
            Sysctl::Syncookies => &mut st.syncookies_original,
            Sysctl::Timestamps => &mut st.timestamps_original,
        }
    }
}

pub struct Mitigator {
    /// Why each prefix is blocked (what this run added or found in the config).
    pub blocks: HashMap<Prefix, BlockOrigin>,
    /// Allow-list entries added at run time (`tcpguard allow`).
    pub runtime_allows: HashSet<Prefix>,
    /// The sysctl values to restore, mirrored in `state_dir/state.json`.
    pub state: SavedState,
    state_dir: PathBuf,
    /// The datapath's attack mode as last read or set.
    pub dp_attack: DpAttack,
    /// Blocks the datapath refused (a full block-list): never counted as done.
    pub block_failures: u64,
    pub last_block_error: Option<String>,
    /// Entries each block-list holds (read from the kernel's map).
    pub block_capacity: u32,
    last_block_error_logged: Option<std::time::Instant>,
}

impl Mitigator {
    /// Load the saved state (`restore_saved` puts back what it records).
    pub fn start(state_dir: PathBuf) -> Self {
        let state = kernel::load_state(&state_dir);
        Mitigator {
            blocks: HashMap::new(),
            runtime_allows: HashSet::new(),
            state,
            state_dir,
            dp_attack: DpAttack::default(),
            block_failures: 0,
            block_capacity: tcpguard_common::LIST_ENTRIES,
            last_block_error: None,
            last_block_error_logged: None,
        }
    }

    /// Sysctls a killed run left changed are put back to the operator's
    /// values it saved. Call once no datapath answers from XDP.
    pub fn restore_saved(&mut self) -> Result<()> {
        let mut restored = false;
        for which in [Sysctl::Syncookies, Sysctl::Timestamps] {
            if let Some(orig) = which.saved(&mut self.state).take() {
                log::warn!("a previous run left {} changed; restoring the operator's value {orig}", which.name());
                which.write(orig).with_context(|| format!("restoring {}", which.name()))?;
                restored = true;
            }
        }
        if restored {
            self.save().context("daemon.state-dir")?;
        }
        Ok(())
    }

    /// Both sysctls the XDP responder needs are 2 now.
    fn responder_sysctls_in_effect() -> bool {
        matches!(kernel::read_syncookies(), Ok(2)) && matches!(kernel::read_timestamps(), Ok(2))
    }

    /// Blocks this daemon added for heavy sources (counted against the cap).
    pub fn daemon_blocks(&self) -> usize {
        self.blocks.values().filter(|o| matches!(o, BlockOrigin::HeavySource { .. })).count()
    }

    /// Remove timed blocks that ran out (the datapath already ignores them);
    /// what is blocked now.
    pub fn expire_blocks(&mut self, dps: &mut Datapaths, now: u64) -> Result<HashSet<Prefix>> {
        let mut blocked = HashSet::new();
        for (p, e) in dps.blocks()? {
            if e.expires_ns != 0 && e.expires_ns <= now {
                dps.unblock(&p)?;
                self.blocks.remove(&p);
                log::info!("block on {p} expired");
            } else {
                blocked.insert(p);
            }
        }
        Ok(blocked)
    }

    pub fn apply(&mut self, dps: &mut Datapaths, acts: Vec<Action>, now: u64, blocked: &mut HashSet<Prefix>) {
        for act in acts {
            match act {
                Action::Block { prefix, ttl_secs, origin } => {
                    let exp = now.saturating_add(ttl_secs.saturating_mul(1_000_000_000));
                    match dps.block(&prefix, exp) {
                        Ok(()) => {
                            log::warn!("blocked {prefix} for {ttl_secs} s: {origin}");
                            self.blocks.insert(prefix, origin);
                            blocked.insert(prefix);
                        }
                        Err(e) => {
                            // Not done is not reported as done: no block entry,
                            // no "blocked" log, a failure counted and shown.
                            self.block_failures += 1;
                            let msg = format!(
                                "blocking {prefix} failed: {e:#} (the block-list holds at most {} entries per family: \
                                 datapath.block-list-entries)",
                                self.block_capacity
                            );
                            let quiet = self.last_block_error_logged.is_some_and(|t| t.elapsed().as_secs() < 10);
                            if !quiet {
                                log::error!("{msg}");
                                self.last_block_error_logged = Some(std::time::Instant::now());
                            }
                            self.last_block_error = Some(msg);
                        }
                    }
                }
                // Applied with the responder's needs in `sync_sysctls`.
                Action::ForceCookies | Action::RestoreCookies => {}
            }
        }
    }

    /// The daemon's side of the datapath's attack mode. An entry by the
    /// datapath itself is kept while the detector confirms the attack, and
    /// for the hold-down after entry when it does not (then left). The
    /// daemon itself puts the datapath in attack mode for an attack the
    /// policy answers with cookies (`cookies`) that stays under the
    /// datapath's own threshold, and ends it with the attack.
    pub fn steer_attack_mode(
        &mut self,
        dps: &mut Datapaths,
        a: &Assessment,
        now: u64,
        hold_down_secs: f64,
        cookies: bool,
    ) {
        let attack = matches!(a.phase, Phase::Active | Phase::CoolingDown);
        let d = &self.dp_attack;
        let want = if d.active && d.by_datapath {
            attack || a.phase == Phase::Pending || now.saturating_sub(d.entered_ns) < (hold_down_secs * 1e9) as u64
        } else {
            attack && cookies
        };
        if want == self.dp_attack.active {
            return;
        }
        dps.set_attack(want, now);
        if want {
            log::warn!("datapath attack mode on (the daemon detected an attack)");
            self.dp_attack = DpAttack { active: true, by_datapath: false, entered_ns: now, ..self.dp_attack.clone() };
        } else {
            let why = if matches!(a.event, Some(Event::Ended(_))) {
                "the attack is over"
            } else {
                "not confirmed by the detector"
            };
            log::warn!("datapath attack mode off ({why})");
            self.dp_attack.active = false;
        }
    }

    /// Take over attack mode a previous run left on (a handover or a
    /// crash): entered anew by the datapath as of `now`, so it lasts the
    /// hold-down unless the detector confirms the attack.
    pub fn adopt_attack_mode(&mut self, dps: &mut Datapaths, now: u64) {
        dps.adopt_attack(now);
        self.dp_attack = DpAttack { active: true, by_datapath: true, entered_ns: now, ..DpAttack::default() };
    }

    /// Leave attack mode (shutdown): with no daemon
    /// to end it, it must not outlive one.
    pub fn leave_attack_mode(&mut self, dps: &mut Datapaths, now: u64) {
        dps.set_attack(false, now);
        self.dp_attack.active = false;
    }

    /// Put the sysctls where the mitigations need them: tcp_syncookies=2
    /// while `cookies` (the policy forces them, or the XDP responder
    /// answers: the kernel makes cookies for it only then), tcp_timestamps=2
    /// while `timestamps` (the responder's option encoding needs it).
    /// Timestamps go first: the cookie helper works as soon as
    /// tcp_syncookies is 2, and its TS-encoded options need the other.
    /// Returns whether the responder's sysctls are both in effect.
    pub fn sync_sysctls(&mut self, cookies: bool, timestamps: bool) -> bool {
        let r = self.set(Sysctl::Timestamps, timestamps).and_then(|()| self.set(Sysctl::Syncookies, cookies));
        if let Err(e) = r {
            log::error!("{e:#}");
        }
        Self::responder_sysctls_in_effect()
    }

    fn set(&mut self, which: Sysctl, on: bool) -> Result<()> {
        let name = which.name();
        match (on, *which.saved(&mut self.state)) {
            (true, None) => {
                let cur = which.read().with_context(|| format!("reading {name}"))?;
                if cur == 2 {
                    return Ok(());
                }
                // Remember the operator's value on disk before changing it.
                *which.saved(&mut self.state) = Some(cur);
                self.save()?;
                which.write(2).with_context(|| format!("setting {name}=2"))?;
                log::warn!("{name}=2 (was {cur})");
            }
            (false, Some(orig)) => {
                which.write(orig).with_context(|| format!("restoring {name}={orig}"))?;
                log::warn!("{name} restored to {orig}");
                *which.saved(&mut self.state) = None;
                self.save()?;
            }
            _ => {}
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        kernel::save_state(&self.state_dir, &self.state)
            .with_context(|| format!("saving state in {}", self.state_dir.display()))
    }
}

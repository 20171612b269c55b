//! Applies what the policy decided, every action: blocks with a TTL and an
//! origin, SYN cookies forced or restored, the datapath's attack mode, and
//! the sysctls the mitigations need (saved to disk before they change,
//! restored after, and after a crash). The saved sysctl state is the record
//! of what was applied.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use anyhow::{Context as _, Result};

use tcpguard_common::BlockEntry;

use crate::{
    daemon::{
        datapaths::{Datapaths, DpAttack},
        detect::{AckAssessment, Assessment, Event, Phase},
        kernel::{self, SavedState},
        observe::{BlockObs, MitigationObs},
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

/// The block-lists as sampled this tick, kept up to date as blocks expire
/// and are added: one read per tick.
pub type BlockList = Vec<(Prefix, BlockEntry)>;

pub struct Mitigator {
    /// Why each prefix is blocked (what this run added or found in the config).
    blocks: HashMap<Prefix, BlockOrigin>,
    /// Allow-list entries added at run time (`tcpguard allow`).
    runtime_allows: HashSet<Prefix>,
    /// The sysctl values to restore, mirrored in `state_dir/state.json`.
    state: SavedState,
    state_dir: PathBuf,
    /// The policy forces SYN cookies (`Action::ForceCookies` applied).
    cookies_forced: bool,
    /// The datapath's attack mode as last read or set.
    dp_attack: DpAttack,
    /// Its ACK-checking mode as last read or set.
    dp_ack: DpAttack,
    /// Blocks the datapath refused (a full block-list): never counted as done.
    block_failures: u64,
    last_block_error: Option<String>,
    /// Entries each block-list holds (read from the kernel's map).
    block_capacity: u32,
    last_block_error_logged: Option<std::time::Instant>,
    /// Failed changes of a sysctl and its record (the file could not be
    /// written, or the sysctl), and the last one while it lasts.
    state_failures: u64,
    state_error: Option<String>,
    /// tcp_syncookies and tcp_timestamps as read back after each change.
    sysctls_now: (Option<u8>, Option<u8>),
}

impl Mitigator {
    /// Load the saved state (`restore_saved` puts back what it records).
    /// What the file gets wrong is logged with what is done instead; a file
    /// that cannot be read at all leaves a sysctl found at 2 to be restored
    /// to the kernel default (a crashed run's, or the operator's: said so).
    pub fn start(state_dir: PathBuf) -> Self {
        let loaded = kernel::load_state(&state_dir);
        for p in &loaded.problems {
            log::error!("{p}");
        }
        let mut state = loaded.state;
        if loaded.unreadable {
            for which in [Sysctl::Syncookies, Sysctl::Timestamps] {
                if matches!(which.read(), Ok(2)) {
                    log::warn!(
                        "{} is 2 and the record of its original value is unreadable: restoring the kernel default {}",
                        which.name(),
                        kernel::SYSCTL_DEFAULT
                    );
                    *which.saved(&mut state) = Some(kernel::SYSCTL_DEFAULT);
                }
            }
        }
        Mitigator {
            blocks: HashMap::new(),
            runtime_allows: HashSet::new(),
            state,
            state_dir,
            cookies_forced: false,
            dp_attack: DpAttack::default(),
            dp_ack: DpAttack::default(),
            block_failures: 0,
            block_capacity: tcpguard_common::LIST_ENTRIES,
            last_block_error: None,
            last_block_error_logged: None,
            state_failures: 0,
            state_error: None,
            sysctls_now: (None, None),
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
            // Not fatal: a stale record only restores the same value again.
            if let Err(e) = self.save(&self.state) {
                log::error!("{e:#}");
            }
        }
        Ok(())
    }

    /// Read both sysctls back: what is in effect, not what was meant.
    fn read_back(&mut self) {
        self.sysctls_now = (kernel::read_syncookies().ok(), kernel::read_timestamps().ok());
    }

    /// Blocks this daemon added for heavy sources (counted against the cap).
    pub fn daemon_blocks(&self) -> usize {
        self.blocks.values().filter(|o| matches!(o, BlockOrigin::HeavySource { .. })).count()
    }

    /// The datapath's attack mode as last read or set.
    pub fn dp_attack(&self) -> &DpAttack {
        &self.dp_attack
    }

    /// The datapaths' attack mode as this tick sampled it.
    pub fn sampled_attack(&mut self, d: DpAttack) {
        self.dp_attack = d;
    }

    /// The datapaths' ACK-checking mode as this tick sampled it.
    pub fn sampled_ack_mode(&mut self, d: DpAttack) {
        self.dp_ack = d;
    }

    /// The datapath's ACK-checking mode as last read or set.
    pub fn dp_ack(&self) -> &DpAttack {
        &self.dp_ack
    }

    /// A datapath entered attack mode by itself (its ring-buffer record).
    pub fn datapath_entered(&mut self) {
        self.dp_attack.active = true;
    }

    /// Entries each block-list holds.
    pub fn set_block_capacity(&mut self, cap: u32) {
        self.block_capacity = cap;
    }

    /// Why `prefix` is blocked: recorded when a block is made.
    pub fn record_block(&mut self, prefix: Prefix, origin: BlockOrigin) {
        self.blocks.insert(prefix, origin);
    }

    /// Why `prefix` is blocked, as recorded.
    pub fn origin(&self, prefix: &Prefix) -> Option<&BlockOrigin> {
        self.blocks.get(prefix)
    }

    pub fn forget_block(&mut self, prefix: &Prefix) {
        self.blocks.remove(prefix);
    }

    /// Allow-list entries added with `tcpguard allow` (until restart).
    pub fn runtime_allows(&self) -> impl Iterator<Item = &Prefix> {
        self.runtime_allows.iter()
    }

    pub fn add_runtime_allow(&mut self, p: Prefix) {
        self.runtime_allows.insert(p);
    }

    /// Whether it was there.
    pub fn remove_runtime_allow(&mut self, p: &Prefix) -> bool {
        self.runtime_allows.remove(p)
    }

    /// Remove timed blocks that ran out (the datapath already ignores them)
    /// from the datapaths and from `list` (this tick's block-lists); what is
    /// blocked now.
    pub fn expire_blocks(&mut self, dps: &mut Datapaths, list: &mut BlockList, now: u64) -> Result<HashSet<Prefix>> {
        let mut blocked = HashSet::new();
        let mut kept = Vec::with_capacity(list.len());
        for (p, e) in list.drain(..) {
            if e.expires_ns != 0 && e.expires_ns <= now {
                dps.unblock(&p)?;
                self.blocks.remove(&p);
                log::info!("block on {p} expired");
            } else {
                blocked.insert(p);
                kept.push((p, e));
            }
        }
        *list = kept;
        Ok(blocked)
    }

    /// Carry out the policy's actions. A block made is added to `list`.
    pub fn apply(&mut self, dps: &mut Datapaths, acts: Vec<Action>, now: u64, list: &mut BlockList) {
        for act in acts {
            match act {
                Action::Block { prefix, ttl_secs, origin } => {
                    let exp = now.saturating_add(ttl_secs.saturating_mul(1_000_000_000));
                    match dps.block(&prefix, exp) {
                        Ok(()) => {
                            log::warn!("blocked {prefix} for {ttl_secs} s: {origin}");
                            self.blocks.insert(prefix, origin);
                            list.push((prefix, BlockEntry { expires_ns: exp }));
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
                // The sysctl follows in `sync_sysctls`, with the responder's needs.
                Action::ForceCookies => self.cookies_forced = true,
                Action::RestoreCookies => self.cookies_forced = false,
            }
        }
    }

    /// The daemon's side of the datapath's attack mode. An entry by the
    /// datapath itself is kept while the detector confirms the attack, and
    /// for the hold-down after entry when it does not (then left). The
    /// daemon itself puts the datapath in attack mode for an attack the
    /// policy answers with cookies (`cookies`) that stays under the
    /// datapath's own threshold, and ends it with the attack.
    pub fn steer_attack_mode(&mut self, dps: &mut Datapaths, a: &Assessment, now: u64, hold_down_secs: f64) {
        let attack = matches!(a.phase, Phase::Active | Phase::CoolingDown);
        let seen = attack || a.phase == Phase::Pending;
        let want = mode_wanted(&self.dp_attack, seen, attack && self.cookies_forced, now, hold_down_secs);
        if want == self.dp_attack.active {
            return;
        }
        dps.set_attack(want, now);
        let ended = matches!(a.event, Some(Event::Ended(_)));
        switched(&mut self.dp_attack, want, now, ("attack mode", "an attack", "the attack is over"), ended);
    }

    /// The daemon's side of ACK-checking mode, as for attack mode: an entry
    /// by the datapath itself is kept while the detector sees the ACK flood
    /// (pending or on), and for the hold-down after entry when it does not.
    /// The daemon enters it for an ACK flood under the datapath's own
    /// threshold (unless `enforce` is false: policy monitor), and ends it
    /// with the flood.
    pub fn steer_ack_mode(
        &mut self,
        dps: &mut Datapaths,
        a: &AckAssessment,
        now: u64,
        hold_down_secs: f64,
        enforce: bool,
    ) {
        let d = &self.dp_ack;
        let want = mode_wanted(d, a.phase != Phase::Idle, a.active() && enforce, now, hold_down_secs);
        if want && d.active {
            // On every interface, whichever one's egress saw the flood.
            spread_ack_mode(dps, d.entered_ns);
            return;
        }
        if want == d.active {
            return;
        }
        dps.set_ack_mode(want, now);
        let ended = matches!(a.event, Some(Event::Ended(_)));
        let names = ("ACK-checking mode", "an ACK flood", "the ACK flood is over");
        switched(&mut self.dp_ack, want, now, names, ended);
    }

    /// An interface's egress program entered ACK-checking mode (its
    /// ring-buffer record): every other interface follows at once.
    pub fn ack_mode_entered(&mut self, dps: &mut Datapaths, entered_ns: u64) {
        if !self.dp_ack.active {
            self.dp_ack = DpAttack { active: true, by_datapath: true, entered_ns, ..self.dp_ack.clone() };
        }
        spread_ack_mode(dps, entered_ns);
    }

    /// Take over ACK-checking mode a previous run left on, as
    /// [`Mitigator::adopt_attack_mode`] does for attack mode.
    pub fn adopt_ack_mode(&mut self, dps: &mut Datapaths, now: u64) {
        dps.adopt_ack_mode(now);
        self.dp_ack = DpAttack { active: true, by_datapath: true, entered_ns: now, ..DpAttack::default() };
    }

    /// Leave ACK-checking mode (shutdown).
    pub fn leave_ack_mode(&mut self, dps: &mut Datapaths, now: u64) {
        dps.set_ack_mode(false, now);
        self.dp_ack.active = false;
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

    /// tcp_syncookies=2 while the policy forces cookies or the responder
    /// answers; tcp_timestamps=2 while the responder answers (`responder`:
    /// the config lets it answer from XDP at all). The datapaths answer
    /// from XDP only while both are in effect: they stop before the sysctls
    /// are restored, and start after they are set, so their TS-encoded
    /// cookies always meet a kernel that decodes them.
    pub fn sync_sysctls(&mut self, dps: &mut Datapaths, responder: bool) {
        let armed = self.dp_attack.active && responder;
        if !armed {
            dps.set_answering(false);
        }
        self.set_sysctls(self.cookies_forced || armed, armed);
        self.read_back();
        if armed {
            dps.set_answering(self.sysctls_now == (Some(2), Some(2)));
        }
    }

    /// The mitigations as applied, with this tick's block-lists.
    pub fn observe(&self, list: &BlockList, allowed: Vec<Prefix>) -> MitigationObs {
        MitigationObs {
            dp_attack: self.dp_attack.clone(),
            dp_ack: self.dp_ack.clone(),
            syncookies_original: self.state.syncookies_original,
            timestamps_original: self.state.timestamps_original,
            blocks: list
                .iter()
                .map(|(p, e)| BlockObs {
                    prefix: *p,
                    expires_ns: e.expires_ns,
                    origin: self.blocks.get(p).cloned().unwrap_or(BlockOrigin::Pinned),
                })
                .collect(),
            allowed,
            block_capacity: self.block_capacity,
            block_failures: self.block_failures,
            last_block_error: self.last_block_error.clone(),
            daemon_blocks: self.daemon_blocks(),
            state_failures: self.state_failures,
            state_error: self.state_error.clone(),
            syncookies_now: self.sysctls_now.0,
            timestamps_now: self.sysctls_now.1,
        }
    }

    /// tcp_syncookies=2 while `cookies` (the kernel makes cookies for the
    /// XDP responder only then), tcp_timestamps=2 while `timestamps` (the
    /// responder's option encoding needs it). Timestamps go first: the
    /// cookie helper works as soon as tcp_syncookies is 2, and its
    /// TS-encoded options need the other. Returns whether the responder's
    /// sysctls are both in effect. Failures are logged by `set`.
    fn set_sysctls(&mut self, cookies: bool, timestamps: bool) {
        let _ = self.set(Sysctl::Timestamps, timestamps).and_then(|()| self.set(Sysctl::Syncookies, cookies));
    }

    /// Change one sysctl and its record. The record in memory changes only
    /// once the sysctl and the file are both written: a failure leaves it
    /// as it was, is counted and shown (`status`, `/metrics`), and the next
    /// tick tries again.
    fn set(&mut self, which: Sysctl, on: bool) -> Result<()> {
        let r = self.try_set(which, on);
        match &r {
            Ok(()) => self.state_error = None,
            Err(e) => {
                let msg = format!("{e:#}");
                if self.state_error.as_deref() != Some(msg.as_str()) {
                    log::error!("{msg}; tried again every tick");
                }
                self.state_failures += 1;
                self.state_error = Some(msg);
            }
        }
        r
    }

    fn try_set(&mut self, which: Sysctl, on: bool) -> Result<()> {
        let name = which.name();
        match (on, *which.saved(&mut self.state)) {
            (true, None) => {
                let cur = which.read().with_context(|| format!("reading {name}"))?;
                if cur == 2 {
                    return Ok(());
                }
                // Remember the operator's value on disk before changing it.
                let mut next = self.state.clone();
                *which.saved(&mut next) = Some(cur);
                self.save(&next).with_context(|| format!("not setting {name}=2"))?;
                if let Err(e) = which.write(2) {
                    // Put the file back as it was: nothing was changed.
                    let _ = self.save(&self.state);
                    return Err(anyhow::Error::new(e).context(format!("setting {name}=2")));
                }
                self.state = next;
                log::warn!("{name}=2 (was {cur})");
            }
            (false, Some(orig)) => {
                which.write(orig).with_context(|| format!("restoring {name}={orig}"))?;
                let mut next = self.state.clone();
                *which.saved(&mut next) = None;
                self.save(&next).with_context(|| format!("{name} is back at {orig}, but its record stays"))?;
                self.state = next;
                log::warn!("{name} restored to {orig}");
            }
            _ => {}
        }
        Ok(())
    }

    fn save(&self, st: &SavedState) -> Result<()> {
        kernel::save_state(&self.state_dir, st).with_context(|| {
            format!("saving the sysctl record {} (daemon.state-dir)", self.state_dir.join("state.json").display())
        })
    }
}

/// ACK-checking mode on every interface not in it yet, logged.
fn spread_ack_mode(dps: &mut Datapaths, entered_ns: u64) {
    let spread = dps.spread_ack_mode(entered_ns);
    if !spread.is_empty() {
        log::warn!("ACK-checking mode on for {} too (the flood may come in by any interface)", spread.join(", "));
    }
}

/// Whether a datapath mode should be on. An entry by the datapath itself is
/// kept while the detector `seen`s the flood (pending or on), and for the
/// hold-down after entry when it does not; otherwise the mode is on while
/// the daemon wants it (`daemon_wants`).
fn mode_wanted(d: &DpAttack, seen: bool, daemon_wants: bool, now: u64, hold_down_secs: f64) -> bool {
    if d.active && d.by_datapath {
        seen || now.saturating_sub(d.entered_ns) < (hold_down_secs * 1e9) as u64
    } else {
        daemon_wants
    }
}

/// The daemon switched a mode (`names`: the mode, the flood, "it is over"),
/// already written to the datapaths: recorded and logged.
fn switched(d: &mut DpAttack, on: bool, now: u64, names: (&str, &str, &str), ended: bool) {
    let (mode, flood, over) = names;
    if on {
        log::warn!("datapath {mode} on (the daemon detected {flood})");
        *d = DpAttack { active: true, by_datapath: false, entered_ns: now, ..d.clone() };
    } else {
        let why = if ended { over } else { "not confirmed by the detector" };
        log::warn!("datapath {mode} off ({why})");
        d.active = false;
    }
}

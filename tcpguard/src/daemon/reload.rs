//! SIGHUP: reload the config file. A bad file, or one that fails with the
//! running restart-only keys, is refused and the running config kept; a
//! config the maps refuse is rolled back.

use crate::{
    config::Config,
    daemon::{notify, Daemon},
};

/// A key that takes effect only on restart: whether it changed between the
/// running config and a new one, and how to keep the running value.
struct RestartOnly {
    key: &'static str,
    changed: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

/// The one table of restart-only keys. A changed socket path or state
/// directory applied half-way would leave the old socket behind, unlink
/// someone else's, or move the crash-recovery file mid-run; map sizes and
/// interfaces belong to the loaded datapaths.
const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly {
        key: "daemon.interfaces",
        changed: |new, cur| new.daemon.interfaces != cur.daemon.interfaces && !new.daemon.interfaces.is_empty(),
        keep: |new, cur| new.daemon.interfaces.clone_from(&cur.daemon.interfaces),
    },
    RestartOnly {
        key: "daemon.pin-root",
        changed: |new, cur| new.daemon.pin_root != cur.daemon.pin_root,
        keep: |new, cur| new.daemon.pin_root.clone_from(&cur.daemon.pin_root),
    },
    RestartOnly {
        key: "daemon.tick-ms",
        changed: |new, cur| new.daemon.tick_ms != cur.daemon.tick_ms,
        keep: |new, cur| new.daemon.tick_ms = cur.daemon.tick_ms,
    },
    RestartOnly {
        key: "daemon.state-dir",
        changed: |new, cur| new.daemon.state_dir != cur.daemon.state_dir,
        keep: |new, cur| new.daemon.state_dir.clone_from(&cur.daemon.state_dir),
    },
    RestartOnly {
        key: "datapath.half-open-entries",
        changed: |new, cur| new.datapath.half_open_entries != cur.datapath.half_open_entries,
        keep: |new, cur| new.datapath.half_open_entries = cur.datapath.half_open_entries,
    },
    RestartOnly {
        key: "datapath.source-entries",
        changed: |new, cur| new.datapath.source_entries != cur.datapath.source_entries,
        keep: |new, cur| new.datapath.source_entries = cur.datapath.source_entries,
    },
    RestartOnly {
        key: "datapath.block-list-entries",
        changed: |new, cur| new.datapath.block_list_entries != cur.datapath.block_list_entries,
        keep: |new, cur| new.datapath.block_list_entries = cur.datapath.block_list_entries,
    },
    RestartOnly {
        key: "metrics",
        changed: |new, cur| new.metrics != cur.metrics,
        keep: |new, cur| new.metrics = cur.metrics.clone(),
    },
    RestartOnly {
        key: "control",
        changed: |new, cur| new.control != cur.control,
        keep: |new, cur| new.control = cur.control.clone(),
    },
];

/// `new` with the running values of the restart-only keys; the keys that
/// changed (each is logged by the caller).
fn keep_restart_only(new: &mut Config, cur: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    for r in RESTART_ONLY {
        if (r.changed)(new, cur) {
            changed.push(r.key);
        }
        (r.keep)(new, cur);
    }
    changed
}

impl Daemon {
    pub(super) fn reload(&mut self) {
        notify::reloading();
        self.try_reload();
        notify::notify("READY=1");
    }

    fn try_reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            log::warn!("SIGHUP: running on the embedded default config; nothing to reload (start with --config PATH)");
            return;
        };
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, keeping the running config: {e}");
                return;
            }
        };
        for key in keep_restart_only(&mut new, &self.cfg) {
            log::warn!("reload: {key} changed; it takes effect after a restart (the running value is kept)");
        }
        // Checked again with the running values: a cap that fits only the
        // new list size does not fit the list the datapath has.
        if let Err((key, why)) = new.check() {
            log::error!(
                "reload refused, keeping the running config: {key}: {why} (with the running restart-only keys)"
            );
            return;
        }
        let old = std::mem::replace(&mut self.cfg, new);
        self.reconfigure();
        match self.apply_settings(Some(&old)) {
            Ok(()) => log::info!("reloaded {} (policy {})", path.display(), self.cfg.policy.mode.as_str()),
            Err(e) => {
                log::error!("reload: applying the new config to the maps failed ({e:#}); restoring the old one");
                self.cfg = old;
                self.reconfigure();
                let _ = self.apply_settings(None);
            }
        }
    }

    /// The detector, the policy and upstream take the running config's
    /// sections. Upstream turned off, or pointed at another gobgpd: the old
    /// task withdraws its rules and ends; turned on: a task starts.
    fn reconfigure(&mut self) {
        self.detector.reconfigure(self.cfg.detection.clone());
        self.policy.reconfigure(self.cfg.policy.clone());
        let u = &self.cfg.upstream;
        match self.upstream.take() {
            Some(mut cur) if u.enabled && cur.api() == u.api => {
                cur.set_config(u);
                self.upstream = Some(cur);
            }
            Some(cur) => {
                log::info!(
                    "reload: upstream {}: withdrawing from gobgpd at {}",
                    if u.enabled { "moved" } else { "off" },
                    cur.api()
                );
                cur.stop_soon(true);
                if u.enabled {
                    self.upstream = Some(crate::daemon::upstream::Upstream::start(u));
                }
            }
            None if u.enabled => self.upstream = Some(crate::daemon::upstream::Upstream::start(u)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_keep_their_running_values_and_are_named() {
        let cur = Config::embedded();
        let mut new = cur.clone();
        new.daemon.tick_ms += 500;
        new.daemon.state_dir = "/elsewhere".into();
        new.datapath.source_entries *= 2;
        new.control.socket = "/tmp/other.sock".into();
        new.policy.max_blocked += 1;
        let changed = keep_restart_only(&mut new, &cur);
        assert_eq!(changed, ["daemon.tick-ms", "daemon.state-dir", "datapath.source-entries", "control"]);
        assert_eq!(new.daemon.tick_ms, cur.daemon.tick_ms);
        assert_eq!(new.daemon.state_dir, cur.daemon.state_dir);
        assert_eq!(new.datapath.source_entries, cur.datapath.source_entries);
        assert_eq!(new.control, cur.control);
        // A reloadable key is taken as it is.
        assert_eq!(new.policy.max_blocked, cur.policy.max_blocked + 1);
        // Interfaces left out of the new file are not a change.
        let mut none = cur.clone();
        none.daemon.interfaces.clear();
        assert!(keep_restart_only(&mut none, &cur).is_empty());
        assert_eq!(none.daemon.interfaces, cur.daemon.interfaces);
    }
}

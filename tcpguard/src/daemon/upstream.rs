//! `[upstream]` on the daemon's side: the planner fed once per tick, and a
//! task that makes gobgpd's tcpguard-marked paths what the planner wants,
//! at once when that changes and every `upstream.reconcile-secs` (so that
//! orphans of a crash go, and what a restarted gobgpd lost comes back).
//!
//! The task never holds up the daemon loop: local mitigation goes on
//! whatever gobgpd does. An unreachable gobgpd is logged once (and once
//! when it answers again), and shown in `status` and `/metrics`. A clean
//! stop withdraws everything; a handover (SIGUSR2) leaves the rules to the
//! next daemon, whose first reconcile keeps what still stands.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    config::UpstreamConfig,
    maps::monotonic_ns,
    net::Prefix,
    proto::{AnnouncementView, PeerView, RefusalView, UpstreamView},
    upstream::{
        plan::{HandRule, Inputs, Planner},
        Client, Rule,
    },
};

/// How long one reconcile (connect, list, add, delete, peers) may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(5);
/// How long a clean stop waits for the withdrawals.
const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// What the task reports.
#[derive(Clone, Debug, Default)]
pub struct TaskState {
    /// gobgpd answered the last reconcile (None: none tried yet).
    pub reachable: Option<bool>,
    pub error: Option<String>,
    pub peers: Vec<(String, String)>,
    pub announced_total: u64,
    pub withdrawn_total: u64,
    pub failures_total: u64,
    /// CLOCK_MONOTONIC of the last reconcile that succeeded.
    pub last_ok_ns: u64,
    /// tcpguard's paths gobgpd held after the last reconcile.
    pub held: usize,
}

pub struct Upstream {
    api: SocketAddr,
    planner: Planner,
    /// None until the first tick planned: a restarted daemon must not
    /// withdraw what still stands before it knows what that is.
    desired: watch::Sender<Option<Vec<Rule>>>,
    stop: mpsc::Sender<(bool, oneshot::Sender<()>)>,
    state: Arc<Mutex<TaskState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Start the task (its first reconcile withdraws what a crashed run left).
    pub fn start(cfg: &UpstreamConfig) -> Self {
        let (desired, rx) = watch::channel(None);
        let (stop, stop_rx) = mpsc::channel(1);
        let state = Arc::new(Mutex::new(TaskState::default()));
        let every = Duration::from_secs(cfg.reconcile_secs);
        let task = tokio::spawn(run(cfg.api, every, rx, stop_rx, state.clone()));
        log::info!("upstream: driving gobgpd at {} (reconcile every {} s)", cfg.api, cfg.reconcile_secs);
        Upstream { api: cfg.api, planner: Planner::new(cfg.clone()), desired, stop, state, task }
    }

    pub fn api(&self) -> SocketAddr {
        self.api
    }

    pub fn set_config(&mut self, cfg: &UpstreamConfig) {
        self.planner.set_config(cfg.clone());
    }

    /// One tick: plan, log what changed, hand the task what should stand.
    pub fn step(&mut self, inp: Inputs) {
        for line in self.planner.step(inp) {
            log::warn!("{line}");
        }
        self.publish();
    }

    fn publish(&self) {
        let want = Some(self.planner.desired());
        self.desired.send_if_modified(|cur| {
            if *cur == want {
                false
            } else {
                *cur = want;
                true
            }
        });
    }

    pub fn announce(&mut self, h: &HandRule) -> Result<Vec<Rule>, String> {
        let r = self.planner.announce_by_hand(h)?;
        self.publish();
        Ok(r)
    }

    pub fn withdraw(&mut self, src: Option<Prefix>, dst: Option<Prefix>, port: Option<u16>) -> Vec<Rule> {
        let r = self.planner.withdraw_by_hand(src, dst, port);
        self.publish();
        r
    }

    /// End the task: with `withdraw`, after taking every rule back (a clean
    /// stop), else leaving them (a handover). Bounded by [`STOP_DEADLINE`].
    pub async fn stop(self, withdraw: bool) {
        let (done, wait) = oneshot::channel();
        if self.stop.send((withdraw, done)).await.is_ok() {
            match tokio::time::timeout(STOP_DEADLINE, wait).await {
                Ok(_) => {}
                Err(_) => log::error!(
                    "upstream: gobgpd at {} did not confirm the withdrawals within {STOP_DEADLINE:?}; the next \
                     start withdraws what is stale",
                    self.api
                ),
            }
        }
        self.task.abort();
    }

    /// Stop without waiting (a reload that turns upstream off or moves it).
    pub fn stop_soon(self, withdraw: bool) {
        let (done, _) = oneshot::channel();
        let _ = self.stop.try_send((withdraw, done));
    }

    /// The view `status` and `/metrics` show.
    pub fn view(&self, now: u64) -> UpstreamView {
        let st = self.state.lock().expect("upstream state").clone();
        let secs = |ns: u64| ns as f64 / 1e9;
        UpstreamView {
            api: self.api.to_string(),
            reachable: st.reachable,
            error: st.error,
            monitor: self.planner.monitor(),
            peers: st.peers.into_iter().map(|(address, state)| PeerView { address, state }).collect(),
            announcements: self
                .planner
                .announcements()
                .map(|a| AnnouncementView {
                    rule: a.rule.to_string(),
                    kind: a.cause.as_str().into(),
                    reason: a.reason.clone(),
                    src: a.rule.src,
                    dst: a.rule.dst,
                    ports: a.rule.dports.clone(),
                    age_secs: secs(now.saturating_sub(a.since_ns)),
                    ttl_secs: secs(a.expires_ns.saturating_sub(now)),
                })
                .collect(),
            refused: self
                .planner
                .refused()
                .map(|r| RefusalView { what: r.what.clone(), reason: r.reason.clone() })
                .collect(),
            held: st.held,
            announced_total: st.announced_total,
            withdrawn_total: st.withdrawn_total,
            failures_total: st.failures_total,
            refused_total: self.planner.refused_total,
            last_reconcile_age_secs: (st.last_ok_ns != 0).then(|| secs(now.saturating_sub(st.last_ok_ns))),
        }
    }
}

/// The task: reconcile on every change and every `every`, until stopped.
async fn run(
    api: SocketAddr,
    every: Duration,
    mut desired: watch::Receiver<Option<Vec<Rule>>>,
    mut stop: mpsc::Receiver<(bool, oneshot::Sender<()>)>,
    state: Arc<Mutex<TaskState>>,
) {
    let mut client = None;
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // A stop first: a reload that ends this task sends it and then
            // drops the sender of `desired`, which must not end the task
            // before it has withdrawn.
            biased;
            s = stop.recv() => {
                if let Some((withdraw, done)) = s {
                    if withdraw {
                        round(api, &mut client, &[], &state).await;
                        let held = state.lock().expect("upstream state").held;
                        if held == 0 {
                            log::info!("upstream: every tcpguard rule withdrawn from gobgpd at {api}");
                        }
                    } else {
                        log::info!("upstream: handing over; the rules stay in gobgpd for the next daemon");
                    }
                    let _ = done.send(());
                }
                return;
            }
            r = desired.changed() => if r.is_err() { return },
            _ = timer.tick() => {}
        }
        let want = desired.borrow_and_update().clone();
        if let Some(want) = want {
            round(api, &mut client, &want, &state).await;
        }
    }
}

/// One reconcile, connecting first if need be; failures drop the
/// connection (the next round connects anew) and are logged once.
async fn round(api: SocketAddr, client: &mut Option<Client>, want: &[Rule], state: &Mutex<TaskState>) {
    let r = tokio::time::timeout(ROUND_DEADLINE, async {
        if client.is_none() {
            *client = Some(Client::connect(&api.to_string()).await?);
        }
        let c = client.as_mut().expect("connected");
        let done = c.reconcile(want).await.with_context(|| format!("gobgpd at {api}"))?;
        let peers = c.peers().await.with_context(|| format!("gobgpd at {api}"))?;
        anyhow::Ok((done, peers))
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("gobgpd at {api} did not answer within {ROUND_DEADLINE:?}")));
    let mut st = state.lock().expect("upstream state");
    match r {
        Ok((done, peers)) => {
            if st.reachable == Some(false) {
                log::warn!("upstream: gobgpd at {api} answers again; reconciled");
            }
            if done.added + done.withdrawn > 0 {
                log::info!(
                    "upstream: gobgpd: {} announced, {} withdrawn, {} kept",
                    done.added,
                    done.withdrawn,
                    done.kept
                );
            }
            st.reachable = Some(true);
            st.error = None;
            st.peers = peers;
            st.announced_total += done.added as u64;
            st.withdrawn_total += done.withdrawn as u64;
            st.held = done.added + done.kept;
            st.last_ok_ns = monotonic_ns();
        }
        Err(e) => {
            *client = None;
            st.failures_total += 1;
            let msg = format!("{e:#}");
            if st.reachable != Some(false) {
                log::error!(
                    "upstream: {msg}; the rules wait until it answers (retried every round), local mitigation goes \
                     on"
                );
            }
            st.reachable = Some(false);
            st.error = Some(msg);
            st.peers.clear();
        }
    }
}

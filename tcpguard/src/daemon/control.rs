//! The operator's commands from the control socket: block, unblock,
//! allow, unallow. Run on the daemon's loop; each change shows in `status`
//! at once (the observation is refreshed). `status` and `top` are answered
//! by the socket server itself (api.rs), off this loop.

use anyhow::Result;

use crate::{
    daemon::Daemon,
    maps::monotonic_ns,
    model::BlockOrigin,
    net::Prefix,
    proto::{Request, Response},
    validate,
};

impl Daemon {
    pub(super) fn handle(&mut self, req: &Request) -> Response {
        let r = match *req {
            // (Answered from the published observation by the socket server.)
            Request::Status => {
                Ok(Response::Status(Box::new(crate::daemon::status::render(&self.observation, monotonic_ns()))))
            }
            // The socket server scans the pinned tables itself, off this loop.
            Request::Top { .. } => {
                Ok(Response::Error { message: "top is answered by the control socket server".into() })
            }
            Request::Block { prefix, ttl_secs, force } => self.operator_block(prefix, ttl_secs, force),
            Request::Unblock { prefix } => self.operator_unblock(prefix),
            Request::Allow { prefix, force } => self.operator_allow(prefix, force),
            Request::Unallow { prefix } => self.operator_unallow(prefix),
            Request::UpstreamAnnounce(ref h) => Ok(self.upstream_announce(h)),
            Request::UpstreamWithdraw { src, dst, port } => Ok(self.upstream_withdraw(src, dst, port)),
        };
        r.unwrap_or_else(|e| Response::Error { message: format!("{e:#}") })
    }

    fn operator_block(&mut self, prefix: Prefix, ttl: Option<u64>, force: bool) -> Result<Response> {
        if let Err(message) = validate::block(&prefix, self.widest(), force).and_then(|()| validate::ttl(ttl)) {
            return Ok(Response::Error { message });
        }
        if let Some(a) = self.allow_list().iter().find(|a| a.contains(prefix.addr)) {
            return Ok(Response::Error {
                message: format!(
                    "{prefix} is allow-listed by {a}; the allow-list always wins, so a block would have no effect"
                ),
            });
        }
        let exp = ttl.map_or(0, |s| monotonic_ns().saturating_add(s.saturating_mul(1_000_000_000)));
        self.dps.block(&prefix, exp)?;
        self.mitigator.record_block(prefix, BlockOrigin::Operator);
        let until = ttl.map_or("until unblocked".to_string(), |s| format!("for {s} s"));
        log::info!("operator blocked {prefix} {until}");
        Ok(Response::Done { message: format!("blocked {prefix} {until}") })
    }

    fn operator_unblock(&mut self, prefix: Prefix) -> Result<Response> {
        let any = self.dps.unblock(&prefix)?;
        self.mitigator.forget_block(&prefix);
        Ok(if any {
            log::info!("operator unblocked {prefix}");
            Response::Done { message: format!("unblocked {prefix}") }
        } else {
            Response::Error { message: format!("{prefix} is not blocked (see `tcpguard status` for the list)") }
        })
    }

    fn upstream_announce(&mut self, h: &crate::upstream::plan::HandRule) -> Response {
        let Some(u) = self.upstream.as_mut() else { return upstream_off() };
        match u.announce(h) {
            Ok(rules) => {
                let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
                log::info!("operator announced upstream: {}", text.join("; "));
                Response::Done { message: format!("announcing {}", text.join("; ")) }
            }
            Err(message) => Response::Error { message },
        }
    }

    fn upstream_withdraw(&mut self, src: Option<Prefix>, dst: Option<Prefix>, port: Option<u16>) -> Response {
        let Some(u) = self.upstream.as_mut() else { return upstream_off() };
        let rules = u.withdraw(src, dst, port);
        if rules.is_empty() {
            return Response::Error { message: "no upstream announcement matches (see `tcpguard upstream`)".into() };
        }
        let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
        log::info!("operator withdrew upstream: {}", text.join("; "));
        Response::Done {
            message: format!(
                "withdrawing {} (one the host's state still calls for is not announced again while its cause lasts)",
                text.join("; ")
            ),
        }
    }

    /// The limits on blocks and allow-list entries (`[policy]`).
    fn widest(&self) -> validate::Widest {
        validate::Widest { v4: self.cfg.policy.widest_block_v4, v6: self.cfg.policy.widest_block_v6 }
    }

    fn operator_allow(&mut self, prefix: Prefix, force: bool) -> Result<Response> {
        if let Err(message) = validate::allow(&prefix, self.widest(), force) {
            return Ok(Response::Error { message });
        }
        self.dps.allow(&prefix, monotonic_ns())?;
        self.mitigator.add_runtime_allow(prefix);
        log::info!("operator allowed {prefix}");
        Ok(Response::Done {
            message: format!(
                "allowed {prefix}: always passes, never blocked or rate limited \
            (until restart; add it to datapath.allow to keep it)"
            ),
        })
    }

    fn operator_unallow(&mut self, prefix: Prefix) -> Result<Response> {
        if self.cfg.datapath.allow.contains(&prefix) {
            return Ok(Response::Error {
                message: format!("{prefix} is in datapath.allow; remove it from the config file and reload"),
            });
        }
        if !self.mitigator.remove_runtime_allow(&prefix) {
            return Ok(Response::Error {
                message: format!("{prefix} was not allowed with `tcpguard allow` (see `tcpguard status`)"),
            });
        }
        self.dps.disallow(&prefix)?;
        log::info!("operator removed the allow-list entry {prefix}");
        Ok(Response::Done { message: format!("{prefix} is no longer allow-listed") })
    }
}

fn upstream_off() -> Response {
    Response::Error { message: "upstream is off (set upstream.enabled = true and reload)".into() }
}

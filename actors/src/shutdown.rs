//! The ordered shutdown sequence: readiness off, drain delay, then every tier from the top
//! down, each phase bounded by its own deadline and the whole by one more.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{join_all, LocalBoxFuture, Shared};

use crate::child::Exit;
use crate::spec::Tier;

/// Why the service is stopping; decides the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// SIGTERM or SIGINT (named), or an operator's request.
    Signal(&'static str),
    /// A child exceeded its restart intensity under the `exit` escalation.
    Escalation(String),
}

impl ShutdownReason {
    /// 0 for a requested stop that finished in time, 1 for one that overran `shutdown.timeout`,
    /// 70 (EX_SOFTWARE) for an escalation, so the orchestrator can tell them apart.
    pub fn exit_code(&self, finished_in_time: bool) -> i32 {
        match (self, finished_in_time) {
            (ShutdownReason::Escalation(_), _) => 70,
            (ShutdownReason::Signal(_), true) => 0,
            (ShutdownReason::Signal(_), false) => 1,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Signal(name) => write!(f, "{name}"),
            ShutdownReason::Escalation(why) => write!(f, "escalation: {why}"),
        }
    }
}

/// The deadlines of the sequence, from `[shutdown]` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownPlan {
    /// Time between readiness going off and the HTTP drain, for load balancers to deregister
    /// the instance (Kubernetes keeps routing to a terminating pod for a few seconds).
    pub drain_delay: Duration,
    /// Deadline of the HTTP phase: in-flight requests finish within it.
    pub http_timeout: Duration,
    /// Deadline of the workers phase: running jobs finish within it.
    pub workers_timeout: Duration,
    /// Deadline of the stores phase: locks released, pools closed.
    pub stores_timeout: Duration,
    /// The deadline of the whole sequence; past it the process exits with code 1.
    pub total: Duration,
}

impl ShutdownPlan {
    /// The deadline of `tier`'s phase.
    pub fn timeout(&self, tier: Tier) -> Duration {
        match tier {
            Tier::Http => self.http_timeout,
            Tier::Workers => self.workers_timeout,
            Tier::Stores => self.stores_timeout,
        }
    }
}

/// A running child as the sequence sees it: its name, how to ask it to stop, and its end.
pub(crate) struct Stopping {
    pub name: String,
    pub stop: Rc<dyn Fn()>,
    pub exited: Shared<LocalBoxFuture<'static, Exit>>,
}

/// Runs the sequence over `tiers` (given top tier first) and tells whether it finished within
/// `plan.total`. Readiness must already be off: the caller flips it synchronously, so that no
/// probe can observe "ready" once a stop was asked for.
pub(crate) async fn run(plan: ShutdownPlan, tiers: Vec<(Tier, Vec<Stopping>)>) -> bool {
    let started = Instant::now();
    phase_line("readiness", true, Duration::ZERO);
    let phases = async {
        let delay_started = Instant::now();
        actix_rt::time::sleep(plan.drain_delay).await;
        phase_line("drain_delay", true, delay_started.elapsed());
        for (tier, children) in tiers {
            stop_tier(tier, children, plan.timeout(tier)).await;
        }
    };
    let remaining = plan.total.saturating_sub(started.elapsed());
    match actix_rt::time::timeout(remaining, phases).await {
        Ok(()) => {
            log::info!(
                "shutdown complete took_ms={}",
                started.elapsed().as_millis()
            );
            true
        }
        Err(_) => {
            log::error!(
                "shutdown outcome=timeout: the sequence overran shutdown.timeout ({} ms)",
                plan.total.as_millis()
            );
            false
        }
    }
}

/// Asks every child of one tier to stop, then waits for all of them, at most `timeout`.
async fn stop_tier(tier: Tier, children: Vec<Stopping>, timeout: Duration) {
    let started = Instant::now();
    for child in &children {
        (child.stop)();
    }
    let waits = children.iter().map(|child| child.exited.clone());
    match actix_rt::time::timeout(timeout, join_all(waits)).await {
        Ok(_) => phase_line(tier.name(), true, started.elapsed()),
        Err(_) => {
            let pending: Vec<&str> = children
                .iter()
                .filter(|child| child.exited.peek().is_none())
                .map(|child| child.name.as_str())
                .collect();
            phase_line(tier.name(), false, started.elapsed());
            log::warn!(
                "shutdown phase={} still running after {} ms: {}",
                tier.name(),
                timeout.as_millis(),
                pending.join(", ")
            );
        }
    }
}

/// The one log line per phase that operators (and the process tests) read.
fn phase_line(phase: &str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "timeout" };
    let line = format!(
        "shutdown phase={phase} outcome={outcome} took_ms={}",
        took.as_millis()
    );
    if ok {
        log::info!("{line}");
    } else {
        log::warn!("{line}");
    }
}

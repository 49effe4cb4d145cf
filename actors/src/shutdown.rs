//! The ordered shutdown sequence: readiness off, drain delay, then every tier from the top
//! down, each phase bounded by its own deadline and the whole by one more.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{join_all, LocalBoxFuture, Shared};
use futures::FutureExt;

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

/// A point of the sequence where a service's own [`ShutdownTask`]s run.
///
/// Why points between the tiers rather than hooks on children: what a task may still use is
/// decided by what has stopped. Before the drain everything is up; after HTTP no new request
/// arrives but jobs still run; after the workers nothing but the task itself uses the stores,
/// which are still up; after the stores only the process is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Right after readiness turned off, alongside the drain delay; everything still runs.
    BeforeDrain,
    /// Once HTTP has drained, before the workers stop: no request is in flight any more.
    AfterHttp,
    /// Once the workers have stopped, before the stores stop: the stores are still up and
    /// nothing else uses them (flush a buffer, release what the service holds).
    AfterWorkers,
    /// Once the stores have stopped: last words that need no store (flush an exporter).
    AfterStores,
}

impl Phase {
    /// The phase's name in the `shutdown phase=<name> task=<name>` log lines.
    pub fn name(self) -> &'static str {
        match self {
            Phase::BeforeDrain => "before_drain",
            Phase::AfterHttp => "after_http",
            Phase::AfterWorkers => "after_workers",
            Phase::AfterStores => "after_stores",
        }
    }

    /// The point that follows the stop of `tier`.
    fn after(tier: Tier) -> Self {
        match tier {
            Tier::Http => Phase::AfterHttp,
            Tier::Workers => Phase::AfterWorkers,
            Tier::Stores => Phase::AfterStores,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs one task of the shutdown (its future says why it failed, if it did).
pub type TaskFn = Box<dyn FnOnce() -> LocalBoxFuture<'static, Result<(), String>>>;

/// Work of the service's own to do at one [`Phase`] of the shutdown, within a deadline (Akka's
/// `CoordinatedShutdown.addTask`). Tasks of one phase run together; the sequence goes on when
/// all of them have finished or run out of time, and each is logged as
/// `shutdown phase=<phase> task=<name> outcome=ok|failed|timeout took_ms=<ms>`.
pub struct ShutdownTask {
    /// Where in the sequence it runs.
    pub phase: Phase,
    /// Its name in the log line.
    pub name: String,
    /// How long it may take; past it the sequence goes on without it.
    pub timeout: Duration,
    /// The work.
    pub run: TaskFn,
}

impl ShutdownTask {
    /// A task named `name` at `phase`, given at most `timeout`.
    pub fn new<F>(
        phase: Phase,
        name: impl Into<String>,
        timeout: Duration,
        run: impl FnOnce() -> F + 'static,
    ) -> Self
    where
        F: std::future::Future<Output = Result<(), String>> + 'static,
    {
        Self {
            phase,
            name: name.into(),
            timeout,
            run: Box::new(move || run().boxed_local()),
        }
    }
}

/// The longest task deadline of each phase: what the tasks add to the sequence at most, for the
/// start-up check that the whole fits in `shutdown.timeout`.
pub fn task_budget(tasks: &[ShutdownTask]) -> Duration {
    let mut longest: std::collections::BTreeMap<Phase, Duration> = Default::default();
    for task in tasks {
        let entry = longest.entry(task.phase).or_default();
        *entry = (*entry).max(task.timeout);
    }
    longest.values().sum()
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
pub(crate) async fn run(
    plan: ShutdownPlan,
    tiers: Vec<(Tier, Vec<Stopping>)>,
    mut tasks: Vec<ShutdownTask>,
) -> bool {
    let started = Instant::now();
    phase_line("readiness", true, Duration::ZERO);
    let mut take = |phase: Phase| -> Vec<ShutdownTask> {
        let (now, later) = tasks.drain(..).partition(|task| task.phase == phase);
        tasks = later;
        now
    };
    let before_drain = take(Phase::BeforeDrain);
    let after: Vec<(Tier, Vec<ShutdownTask>)> = tiers
        .iter()
        .map(|(tier, _)| (*tier, take(Phase::after(*tier))))
        .collect();
    let phases = async {
        let delay_started = Instant::now();
        let delay = async {
            actix_rt::time::sleep(plan.drain_delay).await;
            phase_line("drain_delay", true, delay_started.elapsed());
        };
        futures::join!(delay, run_tasks(Phase::BeforeDrain, before_drain));
        for ((tier, children), (_, tasks)) in tiers.into_iter().zip(after) {
            stop_tier(tier, children, plan.timeout(tier)).await;
            run_tasks(Phase::after(tier), tasks).await;
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
/// A tier with nothing running (a service without stores, say) has no phase and no line.
async fn stop_tier(tier: Tier, children: Vec<Stopping>, timeout: Duration) {
    if children.is_empty() {
        return;
    }
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

/// Runs the tasks of one phase together, each within its own deadline.
async fn run_tasks(phase: Phase, tasks: Vec<ShutdownTask>) {
    let runs = tasks.into_iter().map(|task| async move {
        let started = Instant::now();
        let outcome = match actix_rt::time::timeout(task.timeout, (task.run)()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(error)) => {
                log::warn!("shutdown phase={phase} task={} failed: {error}", task.name);
                "failed"
            }
            Err(_) => "timeout",
        };
        let took = started.elapsed().as_millis();
        let line = format!(
            "shutdown phase={phase} task={} outcome={outcome} took_ms={took}",
            task.name
        );
        if outcome == "ok" {
            log::info!("{line}");
        } else {
            log::warn!("{line}");
        }
    });
    join_all(runs).await;
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

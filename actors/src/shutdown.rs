//! The ordered shutdown sequence: readiness off, drain delay, then every tier from the top
//! down, each phase bounded by its own deadline and the whole by one more.

use std::cell::RefCell;
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

/// How one step of the shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It finished within its deadline.
    Ok,
    /// A task answered with an error (logged with it).
    Failed,
    /// It ran out of time; the sequence went on without it.
    Timeout,
}

impl Outcome {
    /// The `outcome=` word of the log line.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One step of a shutdown, as its `shutdown phase=…` log line says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// `readiness`, `drain_delay`, a tier (`http`, `workers`, `stores`) or, for a task, its
    /// [`Phase`] (`after_http`, …).
    pub phase: &'static str,
    /// The task's name, for a service's own [`ShutdownTask`].
    pub task: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub took: Duration,
}

/// What a finished shutdown did, step by step, and the exit code it ends with: what
/// [`Terminated`](crate::Terminated) resolves with, so that code embedding a service (a
/// test) can check the order and outcome of the sequence without reading logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Why the service stopped.
    pub reason: String,
    /// The steps, in the order they ended.
    pub steps: Vec<Step>,
    /// Whether the whole finished within `shutdown.timeout`.
    pub finished_in_time: bool,
    /// The process exit code (see [`ShutdownReason::exit_code`]).
    pub exit_code: i32,
}

impl ShutdownReport {
    /// The step of `phase` (and of `task`, for a task's step), if the sequence had it.
    pub fn step(&self, phase: &str, task: Option<&str>) -> Option<&Step> {
        self.steps
            .iter()
            .find(|step| step.phase == phase && step.task.as_deref() == task)
    }
}

/// The steps recorded so far; shared by the phases of one sequence.
type Steps = Rc<RefCell<Vec<Step>>>;

/// A running child as the sequence sees it: its name, how to ask it to stop, and its end.
pub(crate) struct Stopping {
    pub name: String,
    pub stop: Rc<dyn Fn()>,
    pub exited: Shared<LocalBoxFuture<'static, Exit>>,
}

/// Runs the sequence over `tiers` (given top tier first) and reports it. Readiness must already
/// be off: the caller flips it synchronously, so that no probe can observe "ready" once a stop
/// was asked for.
pub(crate) async fn run(
    reason: ShutdownReason,
    plan: ShutdownPlan,
    tiers: Vec<(Tier, Vec<Stopping>)>,
    mut tasks: Vec<ShutdownTask>,
) -> ShutdownReport {
    let started = Instant::now();
    let steps = Steps::default();
    record(&steps, "readiness", None, Outcome::Ok, Duration::ZERO);
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
            let took = delay_started.elapsed();
            record(&steps, "drain_delay", None, Outcome::Ok, took);
        };
        futures::join!(delay, run_tasks(&steps, Phase::BeforeDrain, before_drain));
        for ((tier, children), (_, tasks)) in tiers.into_iter().zip(after) {
            stop_tier(&steps, tier, children, plan.timeout(tier)).await;
            run_tasks(&steps, Phase::after(tier), tasks).await;
        }
    };
    let remaining = plan.total.saturating_sub(started.elapsed());
    let finished_in_time = match actix_rt::time::timeout(remaining, phases).await {
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
    };
    let steps = steps.take();
    ShutdownReport {
        reason: reason.to_string(),
        steps,
        finished_in_time,
        exit_code: reason.exit_code(finished_in_time),
    }
}

/// Asks every child of one tier to stop, then waits for all of them, at most `timeout`.
/// A tier with nothing running (a service without stores, say) has no phase and no line.
async fn stop_tier(steps: &Steps, tier: Tier, children: Vec<Stopping>, timeout: Duration) {
    if children.is_empty() {
        return;
    }
    let started = Instant::now();
    for child in &children {
        (child.stop)();
    }
    let waits = children.iter().map(|child| child.exited.clone());
    match actix_rt::time::timeout(timeout, join_all(waits)).await {
        Ok(_) => record(steps, tier.name(), None, Outcome::Ok, started.elapsed()),
        Err(_) => {
            let pending: Vec<&str> = children
                .iter()
                .filter(|child| child.exited.peek().is_none())
                .map(|child| child.name.as_str())
                .collect();
            record(
                steps,
                tier.name(),
                None,
                Outcome::Timeout,
                started.elapsed(),
            );
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
async fn run_tasks(steps: &Steps, phase: Phase, tasks: Vec<ShutdownTask>) {
    let runs = tasks.into_iter().map(|task| async move {
        let started = Instant::now();
        let outcome = match actix_rt::time::timeout(task.timeout, (task.run)()).await {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(error)) => {
                log::warn!("shutdown phase={phase} task={} failed: {error}", task.name);
                Outcome::Failed
            }
            Err(_) => Outcome::Timeout,
        };
        record(
            steps,
            phase.name(),
            Some(task.name),
            outcome,
            started.elapsed(),
        );
    });
    join_all(runs).await;
}

/// Keeps a step for the report and writes its log line, the one per step that operators (and
/// the process tests) read: `shutdown phase=<phase> [task=<name>] outcome=<o> took_ms=<ms>`.
fn record(
    steps: &Steps,
    phase: &'static str,
    task: Option<String>,
    outcome: Outcome,
    took: Duration,
) {
    let task_part = task
        .as_deref()
        .map(|name| format!(" task={name}"))
        .unwrap_or_default();
    let line = format!(
        "shutdown phase={phase}{task_part} outcome={} took_ms={}",
        outcome.name(),
        took.as_millis()
    );
    if outcome == Outcome::Ok {
        log::info!("{line}");
    } else {
        log::warn!("{line}");
    }
    steps.borrow_mut().push(Step {
        phase,
        task,
        outcome,
        took,
    });
}

//! The supervisor actor: starts children in tier order, restarts them by their spec, escalates
//! crash loops, and runs the ordered shutdown.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::prelude::*;
use futures::channel::oneshot;
use serde::Serialize;

use crate::child::{Exit, Running};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::shutdown::{self, ShutdownPlan, ShutdownReason, ShutdownReport, ShutdownTask, Stopping};
use crate::spec::{ChildSpec, Escalation, Restart, SupervisorConfig, Tier};

/// Owns the lifecycle of every child of the service.
///
/// Why not `actix::Supervisor`: it restarts only actors that call `ctx.stop()` themselves,
/// never one that panicked, has no backoff or restart limit, and `System::stop()` stops arbiters
/// in no particular order. This one restarts a child that ended (panic, error or stop, by its
/// [`Restart`] type) after an exponential, jittered backoff; counts restarts against the
/// child's intensity and escalates past it; and stops tiers from the top down on
/// [`Shutdown`], each within its deadline.
pub struct Supervisor {
    config: SupervisorConfig,
    plan: ShutdownPlan,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    children: Vec<Child>,
    /// The service's own shutdown tasks, handed to the sequence when it starts.
    tasks: Vec<ShutdownTask>,
    shutting_down: bool,
    terminated: Option<oneshot::Sender<ShutdownReport>>,
}

struct Child {
    spec: ChildSpec,
    state: ChildState,
    running: Option<Running>,
    /// Bumped on every start, so that the end of an old incarnation is never mistaken for the
    /// end of the current one.
    generation: u64,
    restarts: u64,
    /// Failures since the child last stayed up for `reset_after`; drives the backoff.
    consecutive_failures: u32,
    /// Restart times within the intensity window.
    recent_restarts: VecDeque<Instant>,
    last_error: Option<String>,
    started_at: Option<Instant>,
    degraded: bool,
}

/// Where a child is in its life, as `/admin/actors` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Its factory is running.
    Starting,
    /// Started and not ended.
    Running,
    /// Ended; waiting out its backoff before the next start.
    Restarting,
    /// Asked to stop by the shutdown.
    Stopping,
    /// Ended and not to be restarted.
    Stopped,
    /// Ended and will not be started again (by its restart type or by escalation).
    Failed,
}

/// A child's public state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct ChildInfo {
    /// The child's name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// What it is doing now.
    pub state: ChildState,
    /// Its restart type.
    pub restart: Restart,
    /// Restarts since the start of the process.
    pub restarts: u64,
    /// Whether it exceeded its restart intensity (the instance is then not ready).
    pub degraded: bool,
    /// Why it last ended, when it failed.
    pub last_error: Option<String>,
    /// How long the current incarnation has run.
    pub uptime_ms: Option<u64>,
}

/// Resolves with the report of the shutdown sequence (its steps and exit code) once it has
/// finished, whatever started it (a signal, or an escalation inside the supervisor).
pub struct Terminated(oneshot::Receiver<ShutdownReport>);

impl Future for Terminated {
    type Output = ShutdownReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<ShutdownReport> {
        Pin::new(&mut self.0).poll(cx).map(|report| {
            // A supervisor dropped without finishing a shutdown is a failure.
            report.unwrap_or_else(|_| ShutdownReport {
                reason: "the supervisor stopped without a shutdown sequence".into(),
                steps: Vec::new(),
                finished_in_time: false,
                exit_code: 1,
            })
        })
    }
}

/// Starts the ordered shutdown. Idempotent: a second request while one runs is logged and
/// ignored (the second-signal hard exit is the signal handler's business).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown(pub ShutdownReason);

/// Makes the running child named `.0` panic inside its own task, so that supervision (the
/// restart, its backoff, the restart metric, the intensity) is exercised for real, the way a
/// bug would. `Err` says why it could not: no such child, not running, or not killable (only
/// actors started by [`start_actor`](crate::start_actor) and
/// [`start_plain_actor`](crate::start_plain_actor) are, and only with the `testing` feature).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct Kill(pub String);

/// Lists every child with its state, for `/admin/actors`.
#[derive(Message, Debug)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct ListChildren;

impl Supervisor {
    /// A supervisor with no children yet, and the future that reports its exit code.
    pub fn new(
        config: SupervisorConfig,
        plan: ShutdownPlan,
        readiness: Readiness,
        metrics: Arc<Metrics>,
    ) -> (Self, Terminated) {
        let (terminated_tx, terminated_rx) = oneshot::channel();
        let supervisor = Self {
            config,
            plan,
            readiness,
            metrics,
            children: Vec::new(),
            tasks: Vec::new(),
            shutting_down: false,
            terminated: Some(terminated_tx),
        };
        (supervisor, Terminated(terminated_rx))
    }

    /// Declares a child; children start when the supervisor does, in tier order and, within a
    /// tier, in the order they were added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(Child {
            spec,
            state: ChildState::Starting,
            running: None,
            generation: 0,
            restarts: 0,
            consecutive_failures: 0,
            recent_restarts: VecDeque::new(),
            last_error: None,
            started_at: None,
            degraded: false,
        });
        self
    }

    /// Adds a task to run at its phase of the shutdown.
    pub fn task(mut self, task: ShutdownTask) -> Self {
        self.tasks.push(task);
        self
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        if self.shutting_down {
            self.children[index].state = ChildState::Stopped;
            return;
        }
        let child = &mut self.children[index];
        child.generation += 1;
        let generation = child.generation;
        match (child.spec.factory)() {
            Ok(running) => {
                if generation > 1 {
                    child.restarts += 1;
                    self.metrics
                        .actor_restarts_total
                        .with_label_values(&[child.spec.name.as_str()])
                        .inc();
                    log::info!(
                        "child {} restarted (restart {})",
                        child.spec.name,
                        child.restarts
                    );
                }
                child.state = ChildState::Running;
                child.started_at = Some(Instant::now());
                let exited = running.exited();
                child.running = Some(running);
                ctx.spawn(
                    exited
                        .into_actor(self)
                        .map(move |exit, act, ctx| act.on_exit(index, generation, exit, ctx)),
                );
                ctx.run_later(self.config.reset_after, move |act, _| {
                    act.mark_stable(index, generation)
                });
            }
            Err(error) => {
                let exit = Exit::Failed(format!("start failed: {error}"));
                self.on_exit(index, generation, exit, ctx);
            }
        }
    }

    fn on_exit(&mut self, index: usize, generation: u64, exit: Exit, ctx: &mut Context<Self>) {
        let child = &mut self.children[index];
        if child.generation != generation {
            return;
        }
        child.running = None;
        let name = child.spec.name.clone();
        if self.shutting_down {
            child.state = ChildState::Stopped;
            log::info!("child {name} stopped");
            return;
        }
        let failed = match &exit {
            Exit::Normal => {
                log::warn!("child {name} stopped on its own");
                false
            }
            Exit::Failed(error) => {
                log::error!("child {name} failed: {error}");
                child.last_error = Some(error.clone());
                true
            }
        };
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        };
        if !restart {
            child.state = if failed {
                ChildState::Failed
            } else {
                ChildState::Stopped
            };
            return;
        }

        let now = Instant::now();
        let window = child.spec.intensity.window;
        child.recent_restarts.push_back(now);
        while child
            .recent_restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > window)
        {
            child.recent_restarts.pop_front();
        }
        let over_intensity =
            child.recent_restarts.len() > child.spec.intensity.max_restarts as usize;
        let delay = if over_intensity {
            let why = format!(
                "child {name} exceeded its restart intensity ({} restarts in {} s)",
                child.spec.intensity.max_restarts,
                window.as_secs_f64()
            );
            match self.config.escalation {
                Escalation::Exit => {
                    log::error!("{why}; escalating: ordered shutdown, exit code 70");
                    child.state = ChildState::Failed;
                    ctx.notify(Shutdown(ShutdownReason::Escalation(why)));
                    return;
                }
                Escalation::Degrade => {
                    if !child.degraded {
                        log::error!("{why}; escalating: not ready until it stays up");
                        child.degraded = true;
                        self.readiness.set_degraded(&name, true);
                    }
                    child.spec.backoff.max
                }
            }
        } else {
            child.spec.backoff.delay(child.consecutive_failures)
        };
        child.consecutive_failures = child.consecutive_failures.saturating_add(1);
        child.state = ChildState::Restarting;
        log::info!("child {name} restarts in {} ms", delay.as_millis());
        ctx.run_later(delay, move |act, ctx| act.start_child(index, ctx));
    }

    /// Called `reset_after` a start: if that incarnation is still up, the child has recovered.
    fn mark_stable(&mut self, index: usize, generation: u64) {
        let child = &mut self.children[index];
        if child.generation != generation || child.state != ChildState::Running {
            return;
        }
        child.consecutive_failures = 0;
        child.recent_restarts.clear();
        if child.degraded {
            child.degraded = false;
            self.readiness.set_degraded(&child.spec.name, false);
            log::info!(
                "child {} is stable again; no longer degraded",
                child.spec.name
            );
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Children are kept in start order: stores first, HTTP last.
        self.children.sort_by_key(|child| child.spec.tier);
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, Shutdown(reason): Shutdown, ctx: &mut Self::Context) {
        if self.shutting_down {
            log::info!("shutdown already under way; ignoring {reason}");
            return;
        }
        self.shutting_down = true;
        self.readiness.begin_shutdown();
        log::info!("shutdown started ({reason})");

        let mut tiers: Vec<(Tier, Vec<Stopping>)> = Tier::ALL
            .iter()
            .rev()
            .map(|tier| (*tier, Vec::new()))
            .collect();
        for child in &mut self.children {
            let Some(running) = &child.running else {
                if child.state == ChildState::Restarting {
                    child.state = ChildState::Stopped;
                }
                continue;
            };
            child.state = ChildState::Stopping;
            if let Some((_, stopping)) = tiers.iter_mut().find(|(tier, _)| *tier == child.spec.tier)
            {
                stopping.push(Stopping {
                    name: child.spec.name.clone(),
                    stop: running.stopper(),
                    exited: running.exited(),
                });
            }
        }
        let tasks = std::mem::take(&mut self.tasks);
        ctx.spawn(
            shutdown::run(reason, self.plan, tiers, tasks)
                .into_actor(self)
                .map(move |report, act, _| {
                    if let Some(terminated) = act.terminated.take() {
                        let _ = terminated.send(report);
                    }
                }),
        );
    }
}

impl Handler<Kill> for Supervisor {
    type Result = Result<(), String>;

    fn handle(&mut self, Kill(name): Kill, _: &mut Self::Context) -> Result<(), String> {
        let child = self
            .children
            .iter()
            .find(|child| child.spec.name == name)
            .ok_or_else(|| format!("no child named {name}"))?;
        let running = child
            .running
            .as_ref()
            .ok_or_else(|| format!("child {name} is not running ({:?})", child.state))?;
        if running.kill() {
            log::warn!("child {name} killed on request");
            Ok(())
        } else {
            Err(format!(
                "child {name} cannot be killed: not an actor started by start_actor, \
                 or steward-actors was built without the testing feature"
            ))
        }
    }
}

impl Handler<ListChildren> for Supervisor {
    type Result = Vec<ChildInfo>;

    fn handle(&mut self, _: ListChildren, _: &mut Self::Context) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|child| ChildInfo {
                name: child.spec.name.clone(),
                tier: child.spec.tier,
                state: child.state,
                restart: child.spec.restart,
                restarts: child.restarts,
                degraded: child.degraded,
                last_error: child.last_error.clone(),
                uptime_ms: child
                    .started_at
                    .filter(|_| child.state == ChildState::Running)
                    .map(|at| at.elapsed().as_millis() as u64),
            })
            .collect()
    }
}

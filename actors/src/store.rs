//! Store actors: each owns one bb8 pool, connects lazily, and keeps checking its store with
//! backoff so that it reports and recovers from outages by itself. What a store does beyond
//! that (cache commands, queries) is its [`Backend`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8::{ManageConnection, RunError};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use prometheus::Histogram;
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::breaker::Breaker;
use crate::child::{start_actor, Stop};
use crate::metrics::Metrics;
use crate::pool::{build_pool, Evicting, StorePool};
use crate::slot::Slot;
use crate::spec::{ChildSpec, SupervisorConfig, Tier};
use crate::trace::TracedActor;

/// Pool settings, the same keys for every store (`[redis.pool]`, `[postgres.pool]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Most connections the pool holds.
    pub max_size: u32,
    /// Connections kept open while idle.
    pub min_idle: u32,
    /// How long a checkout may wait for a connection, including connecting.
    #[serde(with = "crate::duration")]
    pub connection_timeout: Duration,
    /// Connections are replaced after this long.
    #[serde(with = "crate::duration")]
    pub max_lifetime: Duration,
    /// Idle connections above `min_idle` are closed after this long.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
}

/// How a store actor watches its store.
#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    /// Time between checks while the store answers.
    pub interval: Duration,
    /// Deadline of one check.
    pub timeout: Duration,
    /// Time between checks while it does not.
    pub backoff: Backoff,
}

/// What a particular store adds to the pool-owning actor: its own state, and its messages
/// (implemented as `Handler`s on `StoreActor<ThisBackend>`).
pub trait Backend: Sized + Unpin + 'static {
    /// Connects to the store.
    /// Its errors' text is what logs, readiness and breakers show.
    type Manager: ManageConnection<Error: std::fmt::Display> + Clone;

    /// Called after every successful health check; the database runs its migrations here.
    fn on_up(_actor: &mut StoreActor<Self>, _ctx: &mut Context<StoreActor<Self>>) {}

    /// Work to finish before the actor stops (the lock actor releases its locks); the actor
    /// handles no other message meanwhile.
    fn before_stop(
        _actor: &mut StoreActor<Self>,
        _ctx: &mut Context<StoreActor<Self>>,
    ) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }

    /// A reason the store cannot serve yet even though it answers (migrations pending).
    fn not_ready(&self) -> Option<String> {
        None
    }
}

/// The answer to a [`Ping`].
#[derive(Clone, Debug, Serialize)]
pub struct PingReport {
    /// Whether the store answered.
    pub ok: bool,
    /// How long the answer took.
    pub latency_ms: f64,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl PingReport {
    pub(crate) fn failed(error: impl Into<String>, started: Instant) -> Self {
        Self {
            ok: false,
            latency_ms: millis(started.elapsed()),
            error: Some(error.into()),
        }
    }
}

/// Asks a store actor to check its store now: check out a connection and run the manager's
/// validity check (`PING` for Redis, an empty query for PostgreSQL) within `timeout`.
#[derive(Message, Debug)]
#[rtype(result = "PingReport")]
pub struct Ping {
    /// Deadline of one check.
    pub timeout: Duration,
}

/// Makes the actor panic: the test suite's way to crash a store actor in a running service.
#[cfg(feature = "test-hooks")]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Crash;

/// The pool and its health, common to every store.
pub struct StoreCore<M: ManageConnection<Error: std::fmt::Display>> {
    /// The child's name.
    pub name: &'static str,
    /// The pool, which drops connections that failed, and the store's breaker.
    pub pool: StorePool<M>,
    manager: Arc<Evicting<M>>,
    health: HealthConfig,
    failures: u32,
    up: Option<bool>,
    /// Where the actor reports its store's health and pool.
    pub metrics: Arc<Metrics>,
    /// This actor's `actor_mailbox_wait_seconds`, resolved once.
    mailbox_wait: Histogram,
}

/// Owns the pool of one store, and the backend state on top of it.
///
/// Why the pool is built unchecked: the service must start, and serve `/health/live`, while a
/// store is down. The actor then checks the store right away and keeps checking, on
/// `interval` while it answers and with backoff while it does not, logging each transition;
/// a check also re-establishes connections, so recovery needs no restart.
pub struct StoreActor<B: Backend> {
    /// What every store actor has: name, pool, health checks, metrics.
    pub core: StoreCore<B::Manager>,
    /// What this store does with it.
    pub backend: B,
}

/// How many messages may wait in a store actor's mailbox before senders wait. actix's default
/// of 16 would make a burst of 64 concurrent requests queue in front of the mailbox.
const MAILBOX_CAPACITY: usize = 4096;

impl<B: Backend> StoreActor<B> {
    /// A store actor around `backend`, with its pool built but not yet connected.
    pub fn new(
        name: &'static str,
        manager: B::Manager,
        settings: &StoreSettings,
        backend: B,
    ) -> Self {
        let breaker = settings.breaker.clone();
        let pool = build_pool(manager.clone(), &settings.pool, breaker.clone());
        let core = StoreCore {
            name,
            pool,
            manager: Arc::new(Evicting::new(manager, breaker)),
            health: settings.health,
            failures: 0,
            up: None,
            metrics: Arc::clone(&settings.metrics),
            mailbox_wait: settings
                .metrics
                .actor_mailbox_wait_seconds
                .with_label_values(&[name]),
        };
        Self { core, backend }
    }

    /// Checks the store within `timeout`: validates a pooled connection or, when the pool
    /// holds none (the store was down) or that one fails, connects afresh and hands the new
    /// connection to the pool. A connection that fails validation is marked broken so the pool
    /// drops it.
    ///
    /// Why connect directly when the pool is empty: bb8 sends a failed connection attempt to
    /// its error sink and lets the caller wait until its timeout, so a refused connection,
    /// which the kernel reports at once, would read as "no answer within 1000 ms" after a
    /// second. Connecting here reports it as refused, at once.
    fn check(&self, timeout: Duration) -> impl Future<Output = PingReport> + 'static {
        let pool = self.core.pool.clone();
        let manager = Arc::clone(&self.core.manager);
        async move {
            let started = Instant::now();
            let late = || format!("no answer within {} ms", timeout.as_millis());
            let checked = async {
                if pool.state().connections > 0 {
                    let mut conn = pool.get().await.map_err(|e| describe_run::<B>(&e))?;
                    if manager.validate(&mut conn).await.is_ok() {
                        return Ok(());
                    }
                    // That connection died (a restarted server, a forgetful NAT); whether the
                    // store is down is for a fresh one to say.
                    conn.mark_broken();
                }
                let mut conn = manager.connect().await.map_err(|e| e.to_string())?;
                manager
                    .validate(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = pool.add(conn); // no room: another caller filled the pool meanwhile
                Ok::<(), String>(())
            };
            match actix_rt::time::timeout(timeout, checked).await {
                Ok(Ok(())) => PingReport {
                    ok: true,
                    latency_ms: millis(started.elapsed()),
                    error: None,
                },
                Ok(Err(error)) => PingReport::failed(error, started),
                Err(_) => PingReport::failed(late(), started),
            }
        }
    }

    /// Records a check's outcome: logs transitions, updates metrics and the backoff.
    fn record(&mut self, report: &PingReport, ctx: &mut Context<Self>) {
        let core = &mut self.core;
        let took = Duration::from_secs_f64(report.latency_ms / 1000.0);
        let started = Instant::now()
            .checked_sub(took)
            .unwrap_or_else(Instant::now);
        core.pool
            .breaker()
            .observe_check(report.ok, report.error.as_deref(), started);
        let was_up = core.up;
        core.up = Some(report.ok);
        if report.ok {
            match was_up {
                Some(true) => {}
                Some(false) => log::info!(
                    "store {} is back after {} failed checks (latency_ms={:.2})",
                    core.name,
                    core.failures,
                    report.latency_ms
                ),
                None => log::info!(
                    "store {} connected (latency_ms={:.2})",
                    core.name,
                    report.latency_ms
                ),
            }
            core.failures = 0;
        } else {
            if was_up != Some(false) {
                log::warn!(
                    "store {} unreachable: {}; retrying with backoff",
                    core.name,
                    report.error.as_deref().unwrap_or("unknown error")
                );
            }
            core.failures = core.failures.saturating_add(1);
        }
        let state = core.pool.state();
        let metrics = &core.metrics;
        metrics
            .store_up
            .with_label_values(&[core.name])
            .set(i64::from(report.ok));
        metrics
            .pool_connections
            .with_label_values(&[core.name, "idle"])
            .set(i64::from(state.idle_connections));
        metrics
            .pool_connections
            .with_label_values(&[core.name, "active"])
            .set(i64::from(state.connections - state.idle_connections));
        if report.ok {
            B::on_up(self, ctx);
        }
    }

    /// Runs a check and schedules the next one.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(
            self.check(self.core.health.timeout)
                .into_actor(self)
                .map(|report, act, ctx| {
                    act.record(&report, ctx);
                    let next = if report.ok {
                        act.core.health.interval
                    } else {
                        act.core
                            .health
                            .backoff
                            .delay(act.core.failures.saturating_sub(1))
                    };
                    ctx.run_later(next, |act, ctx| act.watch(ctx));
                }),
        );
    }
}

/// A bb8 checkout error as text.
pub fn describe_run<B: Backend>(
    error: &RunError<<B::Manager as ManageConnection>::Error>,
) -> String {
    match error {
        RunError::User(error) => error.to_string(),
        RunError::TimedOut => "timed out waiting for a connection".to_owned(),
    }
}

impl<B: Backend> Actor for StoreActor<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.watch(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        log::info!("store {} closing its pool", self.core.name);
    }
}

impl<B: Backend> Handler<Ping> for StoreActor<B> {
    type Result = ResponseActFuture<Self, PingReport>;

    fn handle(&mut self, ping: Ping, _: &mut Self::Context) -> Self::Result {
        Box::pin(
            self.check(ping.timeout)
                .into_actor(self)
                .map(|report, act, ctx| {
                    act.record(&report, ctx);
                    match act.backend.not_ready() {
                        Some(reason) if report.ok => PingReport {
                            ok: false,
                            error: Some(reason),
                            ..report
                        },
                        _ => report,
                    }
                }),
        )
    }
}

impl<B: Backend> TracedActor for StoreActor<B> {
    fn mailbox(&self) -> (&'static str, Histogram) {
        (self.core.name, self.core.mailbox_wait.clone())
    }
}

impl<B: Backend> Handler<Stop> for StoreActor<B> {
    type Result = ();

    /// Stopping drops the actor and with it the pool, which closes its connections; the
    /// backend's last work (releasing locks) runs first.
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        match B::before_stop(self, ctx) {
            Some(last) => ctx.wait(last.into_actor(self).map(|(), _, ctx| ctx.stop())),
            None => ctx.stop(),
        }
    }
}

#[cfg(feature = "test-hooks")]
impl<B: Backend> Handler<Crash> for StoreActor<B> {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("store {} crashed on request of a test hook", self.core.name);
    }
}

/// Everything a store actor needs besides its manager and backend.
#[derive(Clone)]
pub struct StoreSettings {
    /// The actor's pool.
    pub pool: PoolConfig,
    /// How often, and how, the store is checked.
    pub health: HealthConfig,
    /// Where it reports.
    pub metrics: Arc<Metrics>,
    /// The store's breaker, shared by every actor on the same store.
    pub breaker: Breaker,
}

/// Declares a store actor as a child of the stores tier: every start builds a fresh actor
/// (pool and backend state) and publishes its address in `slot`.
pub fn store_child<B: Backend>(
    name: &'static str,
    manager: B::Manager,
    settings: StoreSettings,
    backend: impl Fn() -> B + 'static,
    slot: Slot<StoreActor<B>>,
    supervisor: &SupervisorConfig,
) -> ChildSpec {
    ChildSpec::new(name, Tier::Stores, supervisor, move || {
        let actor = StoreActor::new(name, manager.clone(), &settings, backend());
        let (addr, running) = start_actor(actor);
        slot.set(addr);
        Ok(running)
    })
}

/// Something `/health/ready` can ping, whatever store is behind it.
pub trait Probe: Send + Sync {
    /// Asks the store to answer within `timeout`; a failure is reported, not returned.
    fn ping(&self, timeout: Duration) -> LocalBoxFuture<'static, PingReport>;
}

impl<B: Backend> Probe for Slot<StoreActor<B>> {
    fn ping(&self, timeout: Duration) -> LocalBoxFuture<'static, PingReport> {
        let addr = self.get();
        async move {
            let started = Instant::now();
            let Some(addr) = addr else {
                return PingReport::failed("not started", started);
            };
            match addr.send(Ping { timeout }).await {
                Ok(report) => report,
                Err(error) => {
                    PingReport::failed(crate::StoreError::from(error).to_string(), started)
                }
            }
        }
        .boxed_local()
    }
}

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

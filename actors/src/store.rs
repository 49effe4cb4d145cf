//! Store actors: each owns one bb8 pool, connects lazily, and keeps checking its store with
//! backoff so that it reports and recovers from outages by itself.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8::{ManageConnection, Pool};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::child::{start_actor, Stop};
use crate::metrics::Metrics;
use crate::pool::Evicting;
use crate::slot::Slot;
use crate::spec::{ChildSpec, SupervisorConfig, Tier};

/// Pool settings, the same keys for every store (`[redis.pool]`, `[postgres.pool]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub max_size: u32,
    pub min_idle: u32,
    /// How long a checkout may wait for a connection, including connecting.
    #[serde(with = "crate::duration")]
    pub connection_timeout: Duration,
    #[serde(with = "crate::duration")]
    pub max_lifetime: Duration,
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

/// The answer to a [`Ping`].
#[derive(Clone, Debug, Serialize)]
pub struct PingReport {
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl PingReport {
    fn failed(error: impl Into<String>, started: Instant) -> Self {
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
    pub timeout: Duration,
}

/// Makes the actor panic: the test suite's way to crash a store actor in a running service.
#[cfg(feature = "test-hooks")]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Crash;

/// Owns the pool of one store.
///
/// Why the pool is built unchecked: the service must start, and serve `/health/live`, while a
/// store is down. The actor then checks the store right away and keeps checking, on
/// `interval` while it answers and with backoff while it does not, logging each transition;
/// a check also re-establishes connections, so recovery needs no restart.
pub struct StoreActor<M: ManageConnection> {
    name: &'static str,
    manager: Arc<Evicting<M>>,
    pool: Pool<Evicting<M>>,
    health: HealthConfig,
    failures: u32,
    up: Option<bool>,
    metrics: Arc<Metrics>,
}

impl<M> StoreActor<M>
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
    pub fn new(
        name: &'static str,
        manager: M,
        pool: PoolConfig,
        health: HealthConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let built = Pool::builder()
            .max_size(pool.max_size)
            .min_idle(Some(pool.min_idle))
            .connection_timeout(pool.connection_timeout)
            .max_lifetime(Some(pool.max_lifetime))
            .idle_timeout(Some(pool.idle_timeout))
            // bb8's default PINGs on every checkout: a second round trip per command.
            // Broken connections are found by the health checks and by the commands themselves.
            .test_on_check_out(false)
            // The actor retries with its own backoff and reports the outage; bb8 retrying inside
            // `connection_timeout` would only hide it.
            .retry_connection(false)
            .build_unchecked(Evicting(manager.clone()));
        Self {
            name,
            manager: Arc::new(Evicting(manager)),
            pool: built,
            health,
            failures: 0,
            up: None,
            metrics,
        }
    }

    /// Checks out a connection and validates it, within `timeout`. A connection that fails
    /// validation, or does not answer in time, is marked broken so the pool replaces it.
    fn check(&self, timeout: Duration) -> impl Future<Output = PingReport> + 'static {
        let pool = self.pool.clone();
        let manager = Arc::clone(&self.manager);
        async move {
            let started = Instant::now();
            let late = || format!("no answer within {} ms", timeout.as_millis());
            let mut conn = match actix_rt::time::timeout(timeout, pool.get()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => return PingReport::failed(error.to_string(), started),
                Err(_) => return PingReport::failed(late(), started),
            };
            let remaining = timeout.saturating_sub(started.elapsed());
            let error = match actix_rt::time::timeout(remaining, manager.is_valid(&mut conn)).await
            {
                Ok(Ok(())) => {
                    return PingReport {
                        ok: true,
                        latency_ms: millis(started.elapsed()),
                        error: None,
                    }
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => late(),
            };
            conn.mark_broken();
            PingReport::failed(error, started)
        }
    }

    /// Records a check's outcome: logs transitions, updates metrics and the backoff.
    fn record(&mut self, report: &PingReport) {
        let was_up = self.up;
        self.up = Some(report.ok);
        if report.ok {
            match was_up {
                Some(true) => {}
                Some(false) => log::info!(
                    "store {} is back after {} failed checks (latency_ms={:.2})",
                    self.name,
                    self.failures,
                    report.latency_ms
                ),
                None => log::info!(
                    "store {} connected (latency_ms={:.2})",
                    self.name,
                    report.latency_ms
                ),
            }
            self.failures = 0;
        } else {
            if was_up != Some(false) {
                log::warn!(
                    "store {} unreachable: {}; retrying with backoff",
                    self.name,
                    report.error.as_deref().unwrap_or("unknown error")
                );
            }
            self.failures = self.failures.saturating_add(1);
        }
        let state = self.pool.state();
        let metrics = &self.metrics;
        metrics
            .store_up
            .with_label_values(&[self.name])
            .set(i64::from(report.ok));
        metrics
            .pool_connections
            .with_label_values(&[self.name, "idle"])
            .set(i64::from(state.idle_connections));
        metrics
            .pool_connections
            .with_label_values(&[self.name, "active"])
            .set(i64::from(state.connections - state.idle_connections));
    }

    /// Runs a check and schedules the next one.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(
            self.check(self.health.timeout)
                .into_actor(self)
                .map(|report, act, ctx| {
                    act.record(&report);
                    let next = if report.ok {
                        act.health.interval
                    } else {
                        act.health.backoff.delay(act.failures.saturating_sub(1))
                    };
                    ctx.run_later(next, |act, ctx| act.watch(ctx));
                }),
        );
    }
}

impl<M> Actor for StoreActor<M>
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.watch(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        log::info!("store {} closing its pool", self.name);
    }
}

impl<M> Handler<Ping> for StoreActor<M>
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
    type Result = ResponseActFuture<Self, PingReport>;

    fn handle(&mut self, ping: Ping, _: &mut Self::Context) -> Self::Result {
        Box::pin(
            self.check(ping.timeout)
                .into_actor(self)
                .map(|report, act, _| {
                    act.record(&report);
                    report
                }),
        )
    }
}

impl<M> Handler<Stop> for StoreActor<M>
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
    type Result = ();

    /// Stopping drops the actor and with it the pool, which closes its connections.
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(feature = "test-hooks")]
impl<M> Handler<Crash> for StoreActor<M>
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("store {} crashed on request of a test hook", self.name);
    }
}

/// Declares a store actor as a child of the stores tier: every start builds a fresh actor
/// (and pool) from `manager` and publishes its address in `slot`.
pub fn store_child<M>(
    name: &'static str,
    manager: M,
    pool: PoolConfig,
    health: HealthConfig,
    slot: Slot<StoreActor<M>>,
    metrics: Arc<Metrics>,
    supervisor: &SupervisorConfig,
) -> ChildSpec
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
    ChildSpec::new(name, Tier::Stores, supervisor, move || {
        let actor = StoreActor::new(name, manager.clone(), pool, health, Arc::clone(&metrics));
        let (addr, running) = start_actor(actor);
        slot.set(addr);
        Ok(running)
    })
}

/// Something `/health/ready` can ping, whatever store is behind it.
pub trait Probe: Send + Sync {
    fn ping(&self, timeout: Duration) -> LocalBoxFuture<'static, PingReport>;
}

impl<M> Probe for Slot<StoreActor<M>>
where
    M: ManageConnection + Clone,
    M::Error: std::error::Error + 'static,
{
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

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

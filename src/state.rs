//! What HTTP handlers can reach: the edge's own state, and the reference API's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use actix::{Actor, Addr};
use steward_actors::cache::CacheActor;
use steward_actors::db::DbActor;
use steward_actors::jobs::JobWorker;
use steward_actors::lock::LockActor;
use steward_actors::ratelimit::{LimiterActor, Policy, Reservations};
use steward_actors::store::PingReport;
use steward_actors::{Metrics, Probe, Readiness, Slot, StoreError, Supervisor};

use crate::config::CacheSettings;
use crate::telemetry::LogControl;

/// What the HTTP edge reads — the middleware, health, metrics and admin routes: the
/// framework's own state, never a service's. Cloned into every actix-web worker (it is all
/// handles: `Arc`s, slots and actor addresses).
#[derive(Clone)]
pub struct EdgeState {
    /// Whether the instance takes traffic.
    pub readiness: Readiness,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The supervisor, for `/admin/actors`.
    pub supervisor: Addr<Supervisor>,
    /// The rate-limiter actor.
    pub limiter: Slot<LimiterActor>,
    /// Rate-limit policies, checked in order for every request.
    pub policies: Arc<[Arc<Policy>]>,
    /// Rate-limit units reserved by the limiter actor, spent here without a message.
    pub reservations: Reservations,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// Changes the log filter (`PUT /admin/log-level`).
    pub log: LogControl,
    /// `None` when no admin token is configured: the admin routes are then not mounted.
    pub admin_token: Option<Arc<str>>,
    /// Where `/metrics` is served and who may read it.
    pub metrics_route: MetricsRoute,
    /// The stores `/health/ready` pings, and their last answers.
    pub pings: PingCache,
}

/// What the reference API's handlers reach: its stores, its job kinds and its settings.
#[derive(Clone)]
pub struct AppState {
    /// The cache actor (Redis).
    pub cache: Slot<CacheActor>,
    /// The database actor (PostgreSQL).
    pub db: Slot<DbActor>,
    /// The lock actor.
    pub locks: Slot<LockActor>,
    /// The job queue's worker.
    pub jobs: Slot<JobWorker>,
    /// The job kinds a handler is registered for.
    pub job_kinds: Arc<[&'static str]>,
    /// Attempts of a job that asks for none.
    pub default_max_attempts: u32,
    /// TTLs and limits of the kv and accounts APIs.
    pub api: CacheSettings,
    /// The actor-less kv route of the benchmark build.
    #[cfg(feature = "bench-routes")]
    pub direct: Arc<crate::http::bench_routes::Direct>,
}

/// Where `/metrics` is served (`[metrics]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsRoute {
    /// On the main listener, to anyone.
    Public,
    /// On the main listener, behind the admin token.
    AdminToken,
    /// Only on a listener of its own.
    OwnListener,
}

/// One store's answer to a readiness ping.
pub struct Checked {
    /// The store's name in the readiness report.
    pub name: &'static str,
    /// Whether its being down makes the instance not ready.
    pub required: bool,
    /// Its answer.
    pub report: PingReport,
}

/// The last round of readiness pings, kept for `ttl`: however often `/health/ready` is asked
/// (by probes, or by a client hammering it), the stores are pinged at most once per `ttl` per
/// process. Callers arriving while a round is under way wait for it instead of starting one.
#[derive(Clone)]
pub struct PingCache {
    ttl: Duration,
    /// Deadline of each ping.
    timeout: Duration,
    dependencies: Arc<[Dependency]>,
    last: Arc<tokio::sync::Mutex<Option<Round>>>,
}

/// A round of pings and when it was made.
type Round = (Instant, Arc<[Checked]>);

impl PingCache {
    /// Pings `dependencies`, each within `timeout`, at most once per `ttl`.
    pub fn new(ttl: Duration, timeout: Duration, dependencies: Vec<Dependency>) -> Self {
        Self {
            ttl,
            timeout,
            dependencies: dependencies.into(),
            last: Arc::default(),
        }
    }

    /// The current round, pinging the stores first when the last one is older than the ttl;
    /// a new round is counted in `readiness_checks_total`.
    pub async fn checks(&self, metrics: &Metrics) -> Arc<[Checked]> {
        let mut last = self.last.lock().await;
        if let Some((at, checks)) = last.as_ref() {
            if at.elapsed() < self.ttl {
                return Arc::clone(checks);
            }
        }
        let timeout = self.timeout;
        let pings = self.dependencies.iter().map(|dependency| async move {
            Checked {
                name: dependency.name,
                required: dependency.required,
                report: dependency.probe.ping(timeout).await,
            }
        });
        let checks: Arc<[Checked]> = join_all(pings).await.into();
        metrics.readiness_checks_total.inc();
        *last = Some((Instant::now(), Arc::clone(&checks)));
        checks
    }
}

/// A store `/health/ready` checks.
pub struct Dependency {
    /// The store's name in the readiness report.
    pub name: &'static str,
    /// Pings it.
    pub probe: Box<dyn Probe + Send + Sync>,
    /// A required store that is down makes the instance not ready; another one only shows.
    pub required: bool,
}

impl AppState {
    /// The database actor, or unavailable before its first start.
    pub fn db(&self) -> Result<Addr<DbActor>, StoreError> {
        current(&self.db)
    }

    /// The cache actor, or unavailable before its first start.
    pub fn cache(&self) -> Result<Addr<CacheActor>, StoreError> {
        current(&self.cache)
    }

    /// The lock actor, or unavailable before its first start.
    pub fn locks(&self) -> Result<Addr<LockActor>, StoreError> {
        current(&self.locks)
    }

    /// The job worker, or unavailable before its first start.
    pub fn jobs(&self) -> Result<Addr<JobWorker>, StoreError> {
        current(&self.jobs)
    }
}

/// The address in `slot`; before the store's first start it is unavailable (a 503 at the
/// edge, which maps store errors to statuses in one place).
fn current<A: Actor>(slot: &Slot<A>) -> Result<Addr<A>, StoreError> {
    slot.get()
        .ok_or_else(|| StoreError::Unavailable("the store is starting".to_owned()))
}

//! What the HTTP edge reads: the framework's own state, never a service's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use actix::Addr;
use steward_actors::ratelimit::{LimiterActor, Policy, Reservations};
use steward_actors::store::PingReport;
use steward_actors::{Breaker, Metrics, Probe, Readiness, Slot, Supervisor};

use crate::auth::Authenticator;
use crate::http::deadline::Deadlines;
use crate::http::shed::Shedder;
use crate::telemetry::LogControl;

/// What the HTTP edge reads — the middleware, health, metrics and admin routes: the
/// framework's own state, never a service's. Cloned into every actix-web worker (it is all
/// handles: `Arc`s, slots and actor addresses).
#[derive(Clone)]
pub struct EdgeState {
    /// The service's name, for `/version`.
    pub service: &'static str,
    /// The service's version, for `/version`.
    pub version: &'static str,
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
    /// The stores and checks `/health/ready` runs, and their last answers.
    pub pings: PingCache,
    /// `/openapi.json`, built once at start-up and served without a copy.
    pub openapi: actix_web::web::Bytes,
    /// The stores' breakers, for `/admin/actors`.
    pub breakers: Arc<[Breaker]>,
    /// The adaptive concurrency limits; `None` when `shedding.enabled` is false.
    pub shedder: Option<Arc<Shedder>>,
    /// The request deadlines by path prefix.
    pub deadlines: Arc<Deadlines>,
    /// Who may call the service's routes.
    pub auth: Arc<Authenticator>,
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

/// A store or a service's check that `/health/ready` runs.
pub struct Dependency {
    /// The store's name in the readiness report.
    pub name: &'static str,
    /// Pings it.
    pub probe: Box<dyn Probe + Send + Sync>,
    /// A required store that is down makes the instance not ready; another one only shows.
    pub required: bool,
}

impl Dependency {
    /// `name` checked by `probe`; `required`: its failure makes the instance not ready.
    pub fn new(name: &'static str, probe: impl Probe + 'static, required: bool) -> Self {
        Self {
            name,
            probe: Box::new(probe),
            required,
        }
    }
}

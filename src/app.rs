//! Wiring: builds the supervisor with a service's children (stores, workers, its own actors,
//! then HTTP) from the settings and the service's declarations.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext};
use actix_web::dev::Server;
use bb8_postgres::PostgresConnectionManager;
use futures::FutureExt;
use steward_actors::cache::Cache;
use steward_actors::db::Db;
use steward_actors::jobs::{job_worker_child, Registry, WorkerSettings};
use steward_actors::lock::Locks;
use steward_actors::managers::{
    postgres_manager, redis_manager, ManagerError, RedisConnectionManager,
};
use steward_actors::migrations::Migration;
use steward_actors::ratelimit::{Limiter, Reservations};
use steward_actors::shutdown::task_budget;
use steward_actors::store::{store_child, Backend, PingReport, StoreActor, StoreSettings};
use steward_actors::stores::Stores;
use steward_actors::{
    Breaker, ChildSpec, Exit, Metrics, Phase, Probe, Readiness, Running, ShutdownReport,
    ShutdownTask, Slot, Supervisor, SupervisorConfig, Terminated, Tier,
};
use tokio_postgres::NoTls;

use crate::auth::{Authenticator, JwtVerifier};
use crate::config::{parse_net, ConfigError, Loaded, Origin, ServerSettings, Settings};
use crate::context::{Context, Parts};
use crate::http::deadline::Deadlines;
use crate::http::shed::Shedder;
use crate::jobs::Jobs;
use crate::service::{CheckFn, Criticality, Service};
use crate::state::{Dependency, EdgeState, MetricsRoute, PingCache};
use crate::telemetry::LogControl;
use crate::{fd_budget, http, listener, memory, openapi, signals, telemetry};

/// A started service.
///
/// Tests start it in-process on port 0 through [`Service::start`]; the binary starts it
/// through [`Service::run`], which adds the command line and signal handling.
pub struct Application {
    /// Where the HTTP server listens (the port chosen when the setting was 0).
    pub addr: SocketAddr,
    /// What handlers get: for code embedding the service (tests, jobs started by hand).
    pub context: Context,
    /// The supervisor: send it `Shutdown` to stop the instance in order.
    pub supervisor: Addr<Supervisor>,
    /// Whether the instance takes traffic.
    pub readiness: Readiness,
    /// The instance's metrics registry.
    pub metrics: Arc<Metrics>,
    terminated: Terminated,
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The connections do not fit under the file descriptor limit.
    #[error(transparent)]
    Budget(#[from] fd_budget::BudgetError),
    /// A socket could not be bound or read.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// `host:port` as configured.
        address: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A store's URL cannot be used.
    #[error("the connection settings of a store cannot be used: {0}")]
    Store(#[from] ManagerError),
    /// The metrics could not be registered.
    #[error("cannot build the metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The service uses something it did not declare (jobs without Redis, migrations
    /// without PostgreSQL).
    #[error("the service cannot start as declared: {0}")]
    Declaration(String),
    /// The configuration does not fit what the service declared (its shutdown tasks).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[tracing]` is enabled and its exporter cannot be built.
    #[error("tracing cannot start: {0}")]
    Tracing(String),
}

impl Application {
    /// Binds the listener and starts the supervisor, which starts the children in tier order.
    /// Must be called inside an actix `System`.
    pub(crate) fn start(
        service: Service,
        loaded: &Loaded,
        log: LogControl,
    ) -> Result<Self, StartError> {
        let settings = Arc::new(loaded.settings.clone());
        check_declarations(&service, &settings)?;
        let backends = service.backends;
        let Listeners {
            server,
            main: listener,
            metrics: metrics_listener,
        } = Listeners::bind(&settings)?;
        let addr = local_addr(&listener, &server.host)?;
        let metrics = Arc::new(Metrics::new()?);
        metrics
            .steward_build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("STEWARD_GIT_COMMIT")])
            .set(1);
        let tracing =
            crate::trace::install(&settings.tracing, service.name, service.version, &metrics)
                .map_err(StartError::Tracing)?;
        let readiness = Readiness::default();
        let stores = Stores::default();
        let breaker = |store| Breaker::new(store, settings.breaker, &metrics);
        let redis_breaker = backends.redis.then(|| breaker("redis"));
        let postgres_breaker = backends.postgres.then(|| breaker("postgres"));
        let breakers: Arc<[Breaker]> = redis_breaker
            .iter()
            .chain(&postgres_breaker)
            .cloned()
            .chain(service.breakers.iter().map(|name| breaker(name)))
            .collect();
        let (queues, jobs) = job_queues(&service.jobs, &settings);
        let auth = Arc::new(authenticator(
            backends.redis,
            &service.public,
            &stores,
            &settings,
            &metrics,
            loaded,
        )?);
        let context = Context::new(Parts {
            name: service.name,
            settings: Arc::clone(&settings),
            sections: loaded.sections.clone(),
            backends,
            stores: stores.clone(),
            jobs,
            actors: service.actors,
            metrics: Arc::clone(&metrics),
            readiness: readiness.clone(),
            breakers: Arc::clone(&breakers),
            api_keys: auth.api_keys().cloned(),
        });

        let mut children = Vec::new();
        let mut dependencies = Vec::new();
        let reservations = Reservations::default();
        if let Some(breaker) = &redis_breaker {
            let store = || store_settings(&settings, settings.redis.pool, &metrics, breaker);
            let cache_config = settings.cache_config();
            let cache_metrics = Arc::clone(&metrics);
            children.push(redis_store_child(
                &settings,
                store(),
                "redis",
                stores.cache.clone(),
                move |prefix| Cache::new(prefix, cache_config.clone(), &cache_metrics),
            )?);
            let lock_timeout = settings.locks.timeout;
            children.push(redis_store_child(
                &settings,
                store(),
                "locks",
                stores.locks.clone(),
                move |prefix| Locks::new(prefix, lock_timeout),
            )?);
            let limit_timeout = settings.ratelimit.timeout;
            let actor_reservations = reservations.clone();
            children.push(redis_store_child(
                &settings,
                store(),
                "ratelimit",
                stores.limiter.clone(),
                move |prefix| Limiter::new(prefix, limit_timeout, actor_reservations.clone()),
            )?);
            let required = settings.health.require_redis;
            dependencies.push(Dependency::new("redis", stores.cache.clone(), required));
            dependencies.push(Dependency::new("locks", stores.locks.clone(), required));
            dependencies.push(Dependency::new(
                "ratelimit",
                stores.limiter.clone(),
                required,
            ));
        }
        if let Some(breaker) = &postgres_breaker {
            children.push(postgres_child(
                &settings,
                store_settings(&settings, settings.postgres.pool, &metrics, breaker),
                &stores,
                service.migrations,
            )?);
            dependencies.push(Dependency::new("postgres", stores.db.clone(), true));
        }
        for (queue, (slot, registers)) in queues {
            let registry = registers
                .iter()
                .fold(Registry::default(), |registry, register| {
                    register(registry, &context)
                });
            let mut config = settings.worker_config();
            config.queue = queue;
            let worker = WorkerSettings {
                config,
                prefix: settings.redis.key_prefix.clone(),
                manager: redis_manager(&settings.redis.url)?,
                pool: settings.redis.pool,
                // Job kinds need Redis (checked above), so the breaker is there.
                breaker: redis_breaker.clone().unwrap_or_else(|| breaker("redis")),
                registry,
                stores: stores.clone(),
                metrics: Arc::clone(&metrics),
                consumer: consumer_name(),
            };
            children.push(job_worker_child(worker, slot, &settings.supervisor));
        }
        for make in service.children {
            children.push(make(&context, &settings.supervisor));
        }
        for check in service.checks {
            let probe = CheckProbe {
                ctx: context.clone(),
                check: check.check,
            };
            let required = check.criticality == Criticality::Critical;
            dependencies.push(Dependency::new(check.name, probe, required));
        }
        let mut tasks: Vec<ShutdownTask> = service
            .tasks
            .into_iter()
            .map(|task| {
                let ctx = context.clone();
                let run = task.run;
                ShutdownTask::new(task.phase, task.name, task.timeout, move || run(ctx))
            })
            .collect();
        if let Some(tracing) = tracing {
            tasks.push(flush_spans(tracing, settings.tracing.export_timeout));
        }
        check_shutdown_budget(&settings, &tasks, loaded)?;
        let document = actix_web::web::Bytes::from(openapi::document(
            service.name,
            service.version,
            service.about,
            service.openapi,
            &service.errors,
            &service.public,
        ));
        let routes = service.routes;

        let (supervisor, terminated) = Supervisor::new(
            settings.supervisor,
            settings.shutdown_plan(),
            readiness.clone(),
            Arc::clone(&metrics),
        );
        let supervisor = tasks.into_iter().fold(supervisor, Supervisor::task);
        let supervisor = Supervisor::create(|ctx| {
            let edge = EdgeState {
                service: service.name,
                version: service.version,
                readiness: readiness.clone(),
                metrics: Arc::clone(&metrics),
                supervisor: ctx.address(),
                limiter: stores.limiter.clone(),
                reservations,
                policies: settings
                    .ratelimit
                    .policies
                    .iter()
                    .cloned()
                    .map(Arc::new)
                    .collect(),
                trusted_proxies: settings
                    .ratelimit
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| parse_net(p))
                    .collect(),
                log,
                admin_token: settings.admin_token().map(Arc::from),
                metrics_route: match (&metrics_listener, settings.metrics.require_token) {
                    (Some(_), _) => MetricsRoute::OwnListener,
                    (None, true) => MetricsRoute::AdminToken,
                    (None, false) => MetricsRoute::Public,
                },
                pings: PingCache::new(
                    settings.health.ready_cache,
                    settings.health.timeout,
                    dependencies,
                ),
                openapi: document,
                breakers,
                shedder: settings.shedding.enabled.then(|| {
                    Arc::new(Shedder::new(
                        settings.shedding.clone(),
                        Arc::clone(&metrics),
                    ))
                }),
                deadlines: Arc::new(Deadlines::new(&settings.deadlines)),
                auth,
            };
            let supervisor = children.into_iter().fold(supervisor, Supervisor::child);
            let supervisor = match metrics_listener {
                Some(listener) => {
                    let edge = edge.clone();
                    supervisor.child(http_child(
                        "metrics-http",
                        listener,
                        move |socket| http::metrics_server(socket, edge.clone()),
                        &settings.supervisor,
                    ))
                }
                None => supervisor,
            };
            let http_timeout = settings.shutdown.http_timeout;
            let app = context.clone();
            supervisor.child(http_child(
                "http",
                listener,
                move |socket| {
                    let routes = routes.clone();
                    let (edge, app) = (edge.clone(), app.clone());
                    http::server(&server, http_timeout, socket, edge, app, routes)
                },
                &settings.supervisor,
            ))
        });
        log::info!(target: "steward", "listening addr={addr}");
        Ok(Self {
            addr,
            context,
            supervisor,
            readiness,
            metrics,
            terminated,
        })
    }

    /// Resolves with the exit code once a shutdown sequence has finished.
    pub async fn stopped(self) -> i32 {
        self.terminated.await.exit_code
    }

    /// Resolves with the report of the shutdown sequence once it has finished: each step
    /// (phase or task) with its outcome and duration, and the exit code.
    pub async fn finished(self) -> ShutdownReport {
        self.terminated.await
    }
}

/// What the service uses must be what it declared.
fn check_declarations(service: &Service, settings: &Settings) -> Result<(), StartError> {
    let backends = service.backends;
    if !service.jobs.is_empty() && !backends.redis {
        return Err(StartError::Declaration(
            "job kinds need Redis: add Backends::REDIS to Service::backends".into(),
        ));
    }
    if !service.migrations.is_empty() && !backends.postgres {
        return Err(StartError::Declaration(
            "migrations need PostgreSQL: add Backends::POSTGRES to Service::backends".into(),
        ));
    }
    let mut kinds = std::collections::HashSet::new();
    for job in &service.jobs {
        if !kinds.insert(job.kind) {
            return Err(StartError::Declaration(format!(
                "job kind {} is declared twice",
                job.kind
            )));
        }
        if job.queue.as_deref() == Some(settings.workers.queue.as_str()) {
            return Err(StartError::Declaration(format!(
                "job kind {} names the default queue {} as a queue of its own",
                job.kind, settings.workers.queue
            )));
        }
    }
    Ok(())
}

/// The phases plus the longest task of each must fit in `shutdown.timeout`.
/// The last spans, exported once the stores have stopped (their last commands are spans
/// too), within `timeout`; on a thread of its own, since the exporter blocks.
fn flush_spans(tracing: crate::trace::Tracing, timeout: std::time::Duration) -> ShutdownTask {
    ShutdownTask::new(
        Phase::AfterStores,
        "flush_spans",
        timeout,
        move || async move {
            actix_rt::task::spawn_blocking(move || tracing.flush(timeout))
                .await
                .map_err(|e| e.to_string())?
        },
    )
}

fn check_shutdown_budget(
    settings: &Settings,
    tasks: &[ShutdownTask],
    loaded: &Loaded,
) -> Result<(), StartError> {
    let s = &settings.shutdown;
    let tasks_take = task_budget(tasks);
    let needed = s.drain_delay + s.http_timeout + s.workers_timeout + s.stores_timeout + tasks_take;
    if tasks_take.is_zero() || needed < s.timeout {
        return Ok(());
    }
    Err(StartError::Config(ConfigError {
        key: "shutdown.timeout".into(),
        value: Some(humantime::format_duration(s.timeout).to_string()),
        origin: loaded
            .origin("shutdown.timeout")
            .cloned()
            .unwrap_or(Origin::Builtin("steward")),
        expected: format!(
            "more than drain_delay + the three phase timeouts + the service's shutdown tasks ({} ms in all)",
            needed.as_millis()
        ),
    }))
}

/// The service's queues, each with its worker's slot and the kinds it runs, and the [`Jobs`]
/// handle over them.
fn job_queues<'a>(
    declared: &'a [crate::jobs::Declared],
    settings: &Settings,
) -> (Queues<'a>, Jobs) {
    let mut queues: Queues<'a> = Vec::new();
    let mut kinds = HashMap::new();
    for job in declared {
        let name = job.queue.as_ref().unwrap_or(&settings.workers.queue);
        let index = match queues.iter().position(|(queue, _)| queue == name) {
            Some(index) => index,
            None => {
                queues.push((name.clone(), (Slot::default(), Vec::new())));
                queues.len() - 1
            }
        };
        queues[index].1 .1.push(&job.register);
        kinds.insert(job.kind, index);
    }
    let slots = queues
        .iter()
        .map(|(name, (slot, _))| (name.clone(), slot.clone()))
        .collect();
    let jobs = Jobs::new(
        slots,
        kinds,
        settings.workers.queue.clone(),
        settings.workers.max_attempts,
    );
    (queues, jobs)
}

/// Each queue's name, its worker's slot and how to register the kinds it runs.
type Queues<'a> = Vec<(
    String,
    (
        Slot<steward_actors::jobs::JobWorker>,
        Vec<&'a crate::jobs::Register>,
    ),
)>;

/// A service's readiness check as the ping cache runs it.
struct CheckProbe {
    ctx: Context,
    check: CheckFn,
}

impl Probe for CheckProbe {
    fn ping(
        &self,
        timeout: std::time::Duration,
    ) -> futures::future::LocalBoxFuture<'static, PingReport> {
        let run = (self.check)(self.ctx.clone());
        async move {
            let started = std::time::Instant::now();
            let outcome = match actix_rt::time::timeout(timeout, run).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            };
            PingReport {
                ok: outcome.is_ok(),
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                error: outcome.err(),
            }
        }
        .boxed_local()
    }
}

/// The sockets the service listens on, bound before anything starts (so a bind error stops the
/// start-up, and a restarted HTTP child reuses its socket), and the server settings fitted to
/// the descriptor budget.
struct Listeners {
    server: ServerSettings,
    main: TcpListener,
    /// `metrics.listen`'s, when set.
    metrics: Option<TcpListener>,
}

impl Listeners {
    fn bind(settings: &Settings) -> Result<Self, StartError> {
        let budget = fd_budget::fit(settings)?;
        let mut server = settings.server.clone();
        if budget.clamped {
            log::warn!(
                target: "steward",
                "server.max_connections lowered from {} to {} per worker: the file descriptor limit is {}",
                server.max_connections,
                budget.max_connections,
                budget.limit
            );
        }
        server.max_connections = budget.max_connections;
        let main = listener::bind((server.host.as_str(), server.port), server.backlog).map_err(
            |source| StartError::Listen {
                address: format!("{}:{}", server.host, server.port),
                source,
            },
        )?;
        let metrics = match settings.metrics.listen.as_str() {
            "" => None,
            address => {
                let bound = listener::bind(address, server.backlog);
                let listener = bound.map_err(|source| StartError::Listen {
                    address: address.to_owned(),
                    source,
                })?;
                let metrics_addr = local_addr(&listener, address)?;
                log::info!(target: "steward", "metrics listener addr={metrics_addr}");
                Some(listener)
            }
        };
        Ok(Self {
            server,
            main,
            metrics,
        })
    }
}

/// The address a bound `listener` listens on.
fn local_addr(listener: &TcpListener, address: &str) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Listen {
        address: address.to_owned(),
        source,
    })
}

/// How a store actor checks its store and reports, with the pool `pool` and the store's
/// `breaker`.
fn store_settings(
    settings: &Settings,
    pool: steward_actors::PoolConfig,
    metrics: &Arc<Metrics>,
    breaker: &Breaker,
) -> StoreSettings {
    StoreSettings {
        pool,
        health: settings.store_health(),
        metrics: Arc::clone(metrics),
        breaker: breaker.clone(),
    }
}

/// A store actor on Redis, as a child of the stores tier: a pool of its own from `[redis]` and
/// its backend built with the key prefix. The cache, lock and rate-limit actors differ only in
/// their name and backend.
fn redis_store_child<B: Backend<Manager = RedisConnectionManager>>(
    settings: &Settings,
    store: StoreSettings,
    name: &'static str,
    slot: Slot<StoreActor<B>>,
    backend: impl Fn(String) -> B + 'static,
) -> Result<ChildSpec, StartError> {
    let prefix = settings.redis.key_prefix.clone();
    Ok(store_child(
        name,
        redis_manager(&settings.redis.url)?,
        store,
        move || backend(prefix.clone()),
        slot,
        &settings.supervisor,
    ))
}

/// The database actor, applying `migrations` when it starts.
fn postgres_child(
    settings: &Settings,
    store: StoreSettings,
    stores: &Stores,
    migrations: &'static [Migration],
) -> Result<ChildSpec, StartError> {
    let db_config = settings.db_config();
    Ok(store_child(
        "postgres",
        postgres_manager_for(settings)?,
        store,
        move || Db::new(db_config, migrations),
        stores.db.clone(),
        &settings.supervisor,
    ))
}

/// The PostgreSQL manager the settings describe.
pub fn postgres_manager_for(
    settings: &Settings,
) -> Result<PostgresConnectionManager<NoTls>, ManagerError> {
    let password = Some(settings.postgres.password.as_str()).filter(|p| !p.is_empty());
    postgres_manager(
        &settings.postgres.url,
        password,
        settings.postgres.pool.connection_timeout,
        settings.postgres.query_timeout,
    )
}

/// `migrate`: applies the service's migrations and exits, without starting the service.
pub(crate) fn migrate(settings: &Settings, migrations: &[Migration]) -> i32 {
    telemetry::init(&settings.log.level, settings.log.format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            log::error!(target: "steward", "cannot start a runtime: {error}");
            return 1;
        }
    };
    let outcome = runtime.block_on(async {
        use bb8::ManageConnection;
        let manager = postgres_manager_for(settings).map_err(|e| e.to_string())?;
        let mut client = manager.connect().await.map_err(|e| e.to_string())?;
        steward_actors::migrations::migrate(&mut client, migrations)
            .await
            .map_err(|e| e.to_string())
    });
    let code = match outcome {
        Ok(applied) if applied.is_empty() => {
            log::info!(target: "steward", "migrations: nothing to apply");
            0
        }
        Ok(applied) => {
            log::info!(target: "steward", "migrations applied: {applied:?}");
            0
        }
        Err(error) => {
            log::error!(target: "steward", "migrations failed: {error}");
            1
        }
    };
    telemetry::flush();
    code
}

/// This process's consumer name in the job queue: unique across processes (host, pid and a
/// random part, since containers all run as pid 1), stable while the process lives.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{:08x}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// The HTTP server as a child of the top tier.
///
/// The listening socket stays open across restarts of the server (each incarnation serves a
/// duplicate of it) and is closed when the child is asked to stop, so connections arriving
/// after the HTTP phase began are refused by the kernel rather than queued unanswered.
fn http_child(
    name: &'static str,
    listener: TcpListener,
    build: impl Fn(TcpListener) -> std::io::Result<Server> + 'static,
    supervisor: &SupervisorConfig,
) -> ChildSpec {
    let listener = Rc::new(RefCell::new(Some(listener)));
    ChildSpec::new(name, Tier::Http, supervisor, move || {
        let socket = listener
            .borrow()
            .as_ref()
            .ok_or("the listening socket is closed")?
            .try_clone()?;
        let server = build(socket)?;
        let handle = server.handle();
        let listener = Rc::clone(&listener);
        let exited = server.map(|result| match result {
            Ok(()) => Exit::Normal,
            Err(error) => Exit::Failed(error.to_string()),
        });
        Ok(Running::new(exited, move || {
            listener.borrow_mut().take();
            let handle = handle.clone();
            actix_rt::spawn(async move { handle.stop(true).await });
        }))
    })
}

/// The edge's authentication as `[auth]` describes it; a JWT key that cannot be loaded is a
/// configuration error naming its key.
fn authenticator(
    uses_redis: bool,
    public: &[String],
    stores: &Stores,
    settings: &Settings,
    metrics: &Arc<Metrics>,
    loaded: &Loaded,
) -> Result<Authenticator, StartError> {
    let auth = &settings.auth;
    // Kept in Redis: a service without it has no API keys (config validation said so).
    let api_keys = (auth.api_keys.enabled && uses_redis).then(|| stores.cache.clone());
    let jwt = match auth.jwt.enabled {
        false => None,
        true => Some(JwtVerifier::new(&auth.jwt).map_err(|(key, expected)| {
            StartError::Config(ConfigError {
                key: key.to_owned(),
                value: None,
                origin: loaded
                    .origin(key)
                    .cloned()
                    .unwrap_or(Origin::Builtin("steward")),
                expected,
            })
        })?),
    };
    Ok(Authenticator::new(
        auth,
        api_keys,
        jwt,
        public.to_vec(),
        Arc::clone(metrics),
    ))
}

/// Runs `service` until it has shut down; returns the process exit code.
pub(crate) fn serve(service: Service, loaded: Loaded) -> i32 {
    let settings = &loaded.settings;
    let log = telemetry::init(&settings.log.level, settings.log.format);
    log::info!(
        target: "steward",
        "starting {} {} (steward {}, {})",
        service.name,
        service.version,
        env!("CARGO_PKG_VERSION"),
        env!("STEWARD_GIT_COMMIT")
    );
    memory::trim_periodically(settings.server.memory_trim_interval);
    let code = actix_rt::System::new().block_on(async move {
        let app = match service.start(&loaded, log) {
            Ok(app) => app,
            Err(StartError::Config(error)) => {
                eprintln!("{error}");
                return crate::cli::EXIT_CONFIG;
            }
            Err(error) => {
                log::error!(target: "steward", "start-up failed: {error}");
                return 1;
            }
        };
        if let Err(error) = signals::handle(app.supervisor.clone()) {
            log::error!(target: "steward", "cannot install signal handlers: {error}");
            return 1;
        }
        app.stopped().await
    });
    log::info!(target: "steward", "exiting with code {code}");
    telemetry::flush();
    code
}

//! Wiring: builds the supervisor with its children (stores, then HTTP) from the settings.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext};
use actix_web::dev::Server;
use bb8_postgres::PostgresConnectionManager;
use futures::FutureExt;
use steward_actors::cache::Cache;
use steward_actors::db::Db;
use steward_actors::jobs::{job_worker_child, WorkerSettings};
use steward_actors::lock::Locks;
use steward_actors::managers::{
    postgres_manager, redis_manager, ManagerError, RedisConnectionManager,
};
use steward_actors::ratelimit::{Limiter, Reservations};
use steward_actors::store::{store_child, Backend, StoreActor, StoreSettings};
use steward_actors::stores::Stores;
use steward_actors::{
    ChildSpec, Exit, Metrics, Probe, Readiness, Running, Slot, Supervisor, SupervisorConfig,
    Terminated, Tier,
};
use tokio_postgres::NoTls;

use crate::config::{parse_net, ServerSettings, Settings};
use crate::migrations::MIGRATIONS;
use crate::state::{AppState, Dependency, EdgeState, MetricsRoute, PingCache};
use crate::telemetry::LogControl;
use crate::{fd_budget, http, listener, memory, signals, telemetry};

/// A started steward instance.
///
/// Tests start it in-process on port 0 (see `tests/common`); the binary starts it through
/// [`serve`], which adds signal handling.
pub struct Application {
    /// Where the HTTP server listens (the port chosen when the setting was 0).
    pub addr: SocketAddr,
    /// The store actors, for code embedding the service (job handlers, tests).
    pub stores: Stores,
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
}

impl Application {
    /// Binds the listener and starts the supervisor, which starts the stores and then HTTP.
    /// Must be called inside an actix `System`.
    pub fn start(settings: &Settings, log: LogControl) -> Result<Self, StartError> {
        let Listeners {
            server,
            main: listener,
            metrics: metrics_listener,
        } = Listeners::bind(settings)?;
        let addr = local_addr(&listener, &server.host)?;
        let metrics = Arc::new(Metrics::new()?);
        let readiness = Readiness::default();
        let cache = Slot::default();
        let db = Slot::default();
        let store = |pool| StoreSettings {
            pool,
            health: settings.store_health(),
            metrics: Arc::clone(&metrics),
        };
        let cache_config = settings.cache_config();
        let cache_metrics = Arc::clone(&metrics);
        let cache_child = redis_store_child(
            settings,
            store(settings.redis.pool),
            "redis",
            cache.clone(),
            move |prefix| Cache::new(prefix, cache_config.clone(), &cache_metrics),
        )?;
        let locks = Slot::default();
        let limiter = Slot::default();
        let lock_timeout = settings.locks.timeout;
        let locks_child = redis_store_child(
            settings,
            store(settings.redis.pool),
            "locks",
            locks.clone(),
            move |prefix| Locks::new(prefix, lock_timeout),
        )?;
        let limit_timeout = settings.ratelimit.timeout;
        let reservations = Reservations::default();
        let actor_reservations = reservations.clone();
        let limiter_child = redis_store_child(
            settings,
            store(settings.redis.pool),
            "ratelimit",
            limiter.clone(),
            move |prefix| Limiter::new(prefix, limit_timeout, actor_reservations.clone()),
        )?;
        let db_config = settings.db_config();
        let db_child = store_child(
            "postgres",
            postgres_manager_for(settings)?,
            store(settings.postgres.pool),
            move || Db::new(db_config, MIGRATIONS),
            db.clone(),
            &settings.supervisor,
        );
        #[cfg(feature = "bench-routes")]
        let direct = crate::http::bench_routes::Direct::new(settings)?;
        let (supervisor, terminated) = Supervisor::new(
            settings.supervisor,
            settings.shutdown_plan(),
            readiness.clone(),
            Arc::clone(&metrics),
        );
        let stores = Stores {
            cache: cache.clone(),
            db: db.clone(),
            locks: locks.clone(),
            limiter: limiter.clone(),
        };
        let jobs = Slot::default();
        let registry = crate::jobs::registry(settings.workers.statement_ttl, &settings.idempotency);
        let kinds: Arc<[&'static str]> = registry.kinds().into();
        let worker_child = job_worker_child(
            WorkerSettings {
                config: settings.worker_config(),
                prefix: settings.redis.key_prefix.clone(),
                manager: redis_manager(&settings.redis.url)?,
                pool: settings.redis.pool,
                registry,
                stores: stores.clone(),
                metrics: Arc::clone(&metrics),
                consumer: consumer_name(),
            },
            jobs.clone(),
            &settings.supervisor,
        );
        let supervisor = Supervisor::create(|ctx| {
            let redis = |name, probe: Box<dyn Probe + Send + Sync>| Dependency {
                name,
                probe,
                required: settings.health.require_redis,
            };
            let dependencies = vec![
                redis("redis", Box::new(cache.clone())),
                redis("locks", Box::new(locks.clone())),
                redis("ratelimit", Box::new(limiter.clone())),
                Dependency {
                    name: "postgres",
                    probe: Box::new(db.clone()),
                    required: true,
                },
            ];
            let edge = EdgeState {
                readiness: readiness.clone(),
                metrics: Arc::clone(&metrics),
                supervisor: ctx.address(),
                limiter,
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
            };
            let state = AppState {
                cache,
                db,
                locks,
                jobs,
                job_kinds: kinds,
                default_max_attempts: settings.workers.max_attempts,
                api: settings.cache.clone(),
                #[cfg(feature = "bench-routes")]
                direct: Arc::new(direct),
            };
            let supervisor = supervisor
                .child(cache_child)
                .child(locks_child)
                .child(limiter_child)
                .child(db_child)
                .child(worker_child);
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
            supervisor.child(http_child(
                "http",
                listener,
                move |socket| {
                    http::server(&server, http_timeout, socket, edge.clone(), state.clone())
                },
                &settings.supervisor,
            ))
        });
        log::info!(target: "steward", "listening addr={addr}");
        Ok(Self {
            addr,
            stores,
            supervisor,
            readiness,
            metrics,
            terminated,
        })
    }

    /// Resolves with the exit code once a shutdown sequence has finished.
    pub async fn stopped(self) -> i32 {
        self.terminated.await
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

/// `steward migrate`: applies the migrations and exits, without starting the service.
pub fn migrate(settings: &Settings) -> i32 {
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
        steward_actors::migrations::migrate(&mut client, MIGRATIONS)
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
            .try_clone()
            .map_err(|e| e.to_string())?;
        let server = build(socket).map_err(|e| e.to_string())?;
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

/// Runs the service until it has shut down; returns the process exit code.
pub fn serve(settings: Settings) -> i32 {
    let log = telemetry::init(&settings.log.level, settings.log.format);
    log::info!(
        target: "steward",
        "starting steward {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("STEWARD_GIT_COMMIT")
    );
    memory::trim_periodically(settings.server.memory_trim_interval);
    let code = actix_rt::System::new().block_on(async move {
        let app = match Application::start(&settings, log) {
            Ok(app) => app,
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

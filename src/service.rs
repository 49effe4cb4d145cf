//! The service a team declares: its routes, config sections, actors, jobs, readiness checks,
//! shutdown tasks, migrations, error codes and OpenAPI paths, and the stores it uses.
//! [`Service::run`] is all `main` needs; [`Service::start`] starts the same value in-process.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::web::{self, ServiceConfig};
use actix_web::{FromRequest, Handler, Responder};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use steward_actors::migrations::Migration;
use steward_actors::{ChildSpec, Phase, Slot, SupervisorConfig, Tier};

use crate::app::{Application, StartError};
use crate::config::{self, Declared, Loaded, Schema, Section, Sources};
use crate::context::Context;
use crate::http::error::ErrorCode;
use crate::jobs::{self, Job};
use crate::telemetry::LogControl;

/// The stores a service uses. A store it does not use is never connected to: the service
/// starts, serves and is ready without it, and readiness, `check-config` and the shutdown
/// phases leave it out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backends {
    /// Redis: the cache, locks, the rate limiter and the job queues.
    pub redis: bool,
    /// PostgreSQL: the database actor and the migrations.
    pub postgres: bool,
}

impl Backends {
    /// No store at all.
    pub const NONE: Backends = Backends {
        redis: false,
        postgres: false,
    };
    /// Redis only.
    pub const REDIS: Backends = Backends {
        redis: true,
        postgres: false,
    };
    /// PostgreSQL only.
    pub const POSTGRES: Backends = Backends {
        redis: false,
        postgres: true,
    };
    /// Both stores.
    pub const ALL: Backends = Backends {
        redis: true,
        postgres: true,
    };
}

/// Whether a readiness check failing makes the instance not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criticality {
    /// Failing, it turns `/health/ready` to 503: the instance cannot serve without it.
    Critical,
    /// Failing, it only shows (status "degraded"): the instance still serves.
    Optional,
}

/// Adds a service's routes to each HTTP worker's app.
pub(crate) type Routes = Arc<dyn Fn(&mut ServiceConfig) + Send + Sync>;
/// Builds one child spec once the context exists.
pub(crate) type MakeChild = Box<dyn FnOnce(&Context, &SupervisorConfig) -> ChildSpec>;
/// A readiness check: `Ok` when what it checks answers.
pub(crate) type CheckFn =
    Arc<dyn Fn(Context) -> LocalBoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A declared readiness check.
pub(crate) struct Check {
    pub name: &'static str,
    pub criticality: Criticality,
    pub check: CheckFn,
}

/// What a shutdown task may answer: nothing (it cannot fail), or a `Result` whose error is
/// logged with the task's `outcome=failed` line.
pub trait TaskOutcome {
    /// The outcome as the shutdown sequence records it.
    fn into_outcome(self) -> Result<(), String>;
}

impl TaskOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> TaskOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|error| error.to_string())
    }
}

/// A declared shutdown task.
pub(crate) struct Task {
    pub phase: Phase,
    pub name: &'static str,
    pub timeout: Duration,
    pub run: Box<dyn FnOnce(Context) -> LocalBoxFuture<'static, Result<(), String>>>,
}

/// A service built on steward: what it is called and everything it adds to the framework.
///
/// Build one with [`Service::new`] and the methods below, then call [`Service::run`] from
/// `main`. The crate-level documentation walks through each extension point.
pub struct Service {
    pub(crate) name: &'static str,
    pub(crate) version: &'static str,
    pub(crate) about: &'static str,
    pub(crate) defaults: Option<&'static str>,
    pub(crate) sections: Vec<Declared>,
    pub(crate) backends: Backends,
    pub(crate) routes: Vec<Routes>,
    pub(crate) children: Vec<MakeChild>,
    pub(crate) actors: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) jobs: Vec<jobs::Declared>,
    pub(crate) checks: Vec<Check>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) migrations: &'static [Migration],
    pub(crate) openapi: Option<utoipa::openapi::OpenApi>,
    pub(crate) errors: Vec<ErrorCode>,
    pub(crate) public: Vec<String>,
    pub(crate) breakers: Vec<&'static str>,
}

impl Service {
    /// A service called `name` (logs, `/version`, the OpenAPI title), using no store until
    /// [`Service::backends`] says otherwise.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            version: env!("CARGO_PKG_VERSION"),
            about: "",
            defaults: None,
            sections: Vec::new(),
            backends: Backends::NONE,
            routes: Vec::new(),
            children: Vec::new(),
            actors: HashMap::new(),
            jobs: Vec::new(),
            checks: Vec::new(),
            tasks: Vec::new(),
            migrations: &[],
            openapi: None,
            errors: Vec::new(),
            public: Vec::new(),
            breakers: Vec::new(),
        }
    }

    /// The service's version, for `/version` and `--version`: pass
    /// `env!("CARGO_PKG_VERSION")` (steward's own version otherwise).
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = version;
        self
    }

    /// One line saying what the service does, for `--help` and the OpenAPI document.
    pub fn about(mut self, about: &'static str) -> Self {
        self.about = about;
        self
    }

    /// The stores the service declared with [`Service::backends`]: what a test kit or a
    /// tool must provide for it.
    pub fn uses(&self) -> Backends {
        self.backends
    }

    /// Declares a circuit breaker for a dependency of the service's own (another service's
    /// API, a store its own actor talks to), configured by `[breaker]` like the stores' and
    /// reported with them (`store_breaker_state{store=<name>}`, `/admin/actors`). Wrap the
    /// calls with `ctx.breaker(name)`'s [`Breaker::call`](steward_actors::Breaker::call).
    ///
    /// # Panics
    /// When `name` is declared twice or names a store steward has (`redis`, `postgres`).
    pub fn breaker(mut self, name: &'static str) -> Self {
        assert!(
            !self.breakers.contains(&name) && !["redis", "postgres"].contains(&name),
            "breaker {name} is declared twice or is one of steward's own"
        );
        self.breakers.push(name);
        self
    }

    /// The stores the service uses (none by default).
    pub fn backends(mut self, backends: Backends) -> Self {
        self.backends = backends;
        self
    }

    /// The defaults of the service's own sections, as TOML: usually
    /// `include_str!("../config/default.toml")`. They list the service's keys (any other key
    /// in a file or a variable is an error) and are layered over steward's.
    pub fn defaults(mut self, toml: &'static str) -> Self {
        self.defaults = Some(toml);
        self
    }

    /// Declares config section `T` (`[T::NAME]`), read and validated at start-up and reached
    /// with [`Context::config`].
    ///
    /// # Panics
    /// When the name is one of steward's sections or was declared already.
    pub fn config<T: Section>(mut self) -> Self {
        let name = T::NAME;
        let taken = config::STEWARD_DEFAULTS
            .parse::<toml::Table>()
            .map(|table| table.contains_key(name))
            .unwrap_or(false);
        assert!(
            !taken && !self.sections.iter().any(|s| s.name == name),
            "config section [{name}] is taken"
        );
        self.sections.push(Declared::of::<T>());
        self
    }

    /// Adds routes, as plain actix-web. Every route gets the whole edge: request id, the
    /// error envelope, metrics by route pattern, the access log, limits, the drain, security
    /// headers and rate-limit policies. Handlers take [`Context`] as an extractor.
    pub fn routes(mut self, routes: impl Fn(&mut ServiceConfig) + Send + Sync + 'static) -> Self {
        self.routes.push(Arc::new(routes));
        self
    }

    /// Makes the routes under the path prefix `prefix` public: the edge does not authenticate
    /// them (their handlers see [`Principal::anonymous`](crate::Principal::anonymous)).
    /// Every other route of the service needs credentials when `auth.required` is on; see
    /// [`crate::auth`]. steward's own routes (health, metrics, version, `/openapi.json`) are
    /// always public.
    pub fn public(mut self, prefix: &'static str) -> Self {
        self.public.push(prefix.to_owned());
        self
    }

    /// Adds `GET path` answered by `handler` (shorthand for a route in [`Service::routes`]).
    pub fn get<F, Args>(self, path: &'static str, handler: F) -> Self
    where
        F: Handler<Args> + Clone + Send + Sync,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.routes(move |cfg| {
            cfg.route(path, web::get().to(handler.clone()));
        })
    }

    /// Adds `POST path` answered by `handler` (shorthand for a route in [`Service::routes`]).
    pub fn post<F, Args>(self, path: &'static str, handler: F) -> Self
    where
        F: Handler<Args> + Clone + Send + Sync,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.routes(move |cfg| {
            cfg.route(path, web::post().to(handler.clone()));
        })
    }

    /// Declares an actor of the service's own, supervised in the workers tier (after the
    /// stores, before HTTP; stopped after HTTP has drained): restarted by `make` after a
    /// panic or a stop, with the `[supervisor]` backoff and intensity, shown in
    /// `/admin/actors` and counted in `actor_restarts_total{actor=<name>}`. Reach it with
    /// [`Context::actor`].
    ///
    /// At shutdown its task is ended where it is (see
    /// [`start_plain_actor`](steward_actors::start_plain_actor)). An actor that must finish
    /// or release something first, or belongs in another tier, is declared with
    /// [`Service::child`] and started with [`start_actor`](steward_actors::start_actor) and a
    /// [`Stop`](steward_actors::Stop) handler.
    ///
    /// # Panics
    /// When an actor of the same type was declared already.
    pub fn actor<A>(mut self, name: &'static str, make: impl Fn(&Context) -> A + 'static) -> Self
    where
        A: Actor<Context = actix::Context<A>>,
    {
        let slot: Slot<A> = Slot::default();
        let previous = self
            .actors
            .insert(TypeId::of::<A>(), Arc::new(slot.clone()));
        assert!(previous.is_none(), "actor {name}'s type was declared twice");
        self.children.push(Box::new(move |ctx, supervisor| {
            let ctx = ctx.clone();
            ChildSpec::new(name, Tier::Workers, supervisor, move || {
                let (addr, running) = steward_actors::start_plain_actor(make(&ctx));
                slot.set(addr);
                Ok(running)
            })
        }));
        self
    }

    /// Declares a supervised child in full (any [`Tier`], restart type, backoff, intensity),
    /// built once the context exists.
    pub fn child(
        mut self,
        spec: impl FnOnce(&Context, &SupervisorConfig) -> ChildSpec + 'static,
    ) -> Self {
        self.children.push(Box::new(spec));
        self
    }

    /// Declares job kind `J` on the default queue (`workers.queue`). Needs Redis.
    pub fn job<J: Job>(mut self) -> Self {
        self.jobs.push(jobs::Declared::new::<J>(None, None));
        self
    }

    /// Declares job kind `J` on a queue of its own, with a worker of its own (child
    /// `jobs:<queue>`), so slow kinds cannot hold up the others. Needs Redis.
    pub fn job_on<J: Job>(mut self, queue: &str) -> Self {
        self.jobs
            .push(jobs::Declared::new::<J>(Some(queue.to_owned()), None));
        self
    }

    /// Declares job kind `J` on the default queue, also run once every `interval` across all
    /// replicas (one job per interval however many replicas run; its payload is `null`, so
    /// `J::Payload` must accept it, as `()` or an `Option` do).
    pub fn every<J: Job>(mut self, interval: impl Fn(&Context) -> Duration + 'static) -> Self {
        self.jobs
            .push(jobs::Declared::new::<J>(None, Some(Box::new(interval))));
        self
    }

    /// Adds a readiness check, run with the store checks by `/health/ready` (within
    /// `health.timeout`, at most once per `health.ready_cache`) and shown in its report; its
    /// error, as text, is the report's `error`.
    pub fn readiness<F, Fut, E>(
        mut self,
        name: &'static str,
        criticality: Criticality,
        check: F,
    ) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        self.checks.push(Check {
            name,
            criticality,
            check: Arc::new(move |ctx| {
                check(ctx)
                    .map(|outcome| outcome.map_err(|error| error.to_string()))
                    .boxed_local()
            }),
        });
        self
    }

    /// Adds a task to run at `phase` of the shutdown, given at most `timeout`; logged as
    /// `shutdown phase=<phase> task=<name> outcome=<ok|failed|timeout> took_ms=<ms>`. The
    /// longest task of each phase counts against `shutdown.timeout` at start-up.
    pub fn on_shutdown<F, Fut>(
        mut self,
        phase: Phase,
        name: &'static str,
        timeout: Duration,
        task: F,
    ) -> Self
    where
        F: FnOnce(Context) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: TaskOutcome,
    {
        self.tasks.push(Task {
            phase,
            name,
            timeout,
            run: Box::new(move |ctx| task(ctx).map(TaskOutcome::into_outcome).boxed_local()),
        });
        self
    }

    /// The service's database migrations, applied in order under an advisory lock when the
    /// database actor starts, and by `migrate`. Needs PostgreSQL.
    pub fn migrations(mut self, migrations: &'static [Migration]) -> Self {
        self.migrations = migrations;
        self
    }

    /// The service's OpenAPI paths and schemas (usually `ApiDoc::openapi()` of a
    /// `#[derive(utoipa::OpenApi)]`), merged with steward's own into `/openapi.json`.
    pub fn openapi(mut self, document: utoipa::openapi::OpenApi) -> Self {
        self.openapi = Some(document);
        self
    }

    /// The service's error codes, listed with steward's in the OpenAPI document
    /// (`x-error-codes`).
    pub fn errors(mut self, codes: &[ErrorCode]) -> Self {
        self.errors.extend_from_slice(codes);
        self
    }

    /// What the configuration of this service holds.
    pub fn schema(&self) -> Schema {
        Schema {
            service: self.name,
            defaults: self.defaults,
            sections: self.sections.clone(),
            backends: self.backends,
        }
    }

    /// Loads and validates the configuration from `sources`.
    pub fn load_config(&self, sources: &Sources) -> Result<Loaded, config::ConfigError> {
        config::load(sources, &self.schema())
    }

    /// Starts the service in the current actix `System` with `loaded`: the stores, the
    /// workers and the service's actors under the supervisor, then HTTP. Tests call this;
    /// `run` calls it with signal handling around it.
    pub fn start(self, loaded: &Loaded, log: LogControl) -> Result<Application, StartError> {
        Application::start(self, loaded, log)
    }

    /// The command line of every steward service: `serve` (the default), `check-config`,
    /// `healthcheck` and `migrate`, with `--config FILE`. Returns the exit code for `main`.
    pub fn run(self) -> ExitCode {
        let code = crate::cli::run(self);
        ExitCode::from(u8::try_from(code).unwrap_or(1))
    }
}

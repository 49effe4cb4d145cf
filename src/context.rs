//! The one typed context of a service: what its routes, jobs, actors, readiness checks and
//! shutdown tasks reach.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix::{Actor, Addr};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use steward_actors::cache::CacheActor;
use steward_actors::db::DbActor;
use steward_actors::lock::LockActor;
use steward_actors::ratelimit::LimiterActor;
use steward_actors::stores::Stores;
use steward_actors::{Breaker, Metrics, Readiness, Slot, StoreError};

use crate::auth::ApiKeys;
use crate::config::{Section, Settings};
use crate::http::error::ApiError;
use crate::jobs::{current, Jobs};
use crate::service::Backends;

/// What a handler, a job, an actor's factory, a readiness check or a shutdown task is given:
/// the stores the service declared, its config sections, its actors by type, the job queues,
/// the metrics registry and the readiness state.
///
/// One `Arc` inside: cloning it is one atomic increment. Routes take it as an extractor:
///
/// ```
/// use actix_web::HttpResponse;
/// use steward::{ApiError, Context};
///
/// async fn handler(ctx: Context) -> Result<HttpResponse, ApiError> {
///     let _db = ctx.db()?; // 503 while PostgreSQL's actor is (re)starting
///     Ok(HttpResponse::Ok().body(ctx.name()))
/// }
/// ```
///
/// Why one context rather than `web::Data` per store: the edge and the framework's own routes
/// never read it (they have their own state), so a service can put anything of its own here
/// without the framework knowing its types, and jobs get exactly what routes get.
#[derive(Clone)]
pub struct Context(Arc<Parts>);

/// The parts a [`Context`] is made of, filled in by the service's start.
pub(crate) struct Parts {
    pub name: &'static str,
    pub settings: Arc<Settings>,
    pub sections: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub backends: Backends,
    pub stores: Stores,
    pub jobs: Jobs,
    pub actors: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub breakers: Arc<[Breaker]>,
    pub api_keys: Option<ApiKeys>,
}

impl Context {
    pub(crate) fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }

    /// The service's name, as given to `Service::new`.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The framework's settings (`[server]`, `[redis]`, `[workers]`, ...), validated.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The service's own config section `T`, validated at start-up.
    ///
    /// # Panics
    /// When `T` was not declared with `Service::config`: a programming error, found by the
    /// first request that reaches the code.
    #[inline]
    pub fn config<T: Section>(&self) -> &T {
        self.0
            .sections
            .get(&TypeId::of::<T>())
            .and_then(|section| section.downcast_ref::<T>())
            .unwrap_or_else(|| {
                panic!(
                    "config section [{}] was not declared with Service::config",
                    T::NAME
                )
            })
    }

    /// The cache actor (Redis).
    #[inline]
    pub fn cache(&self) -> Result<Addr<CacheActor>, StoreError> {
        self.store(&self.0.stores.cache, self.0.backends.redis, "Redis")
    }

    /// The database actor (PostgreSQL).
    #[inline]
    pub fn db(&self) -> Result<Addr<DbActor>, StoreError> {
        self.store(&self.0.stores.db, self.0.backends.postgres, "PostgreSQL")
    }

    /// The lock actor (Redis).
    #[inline]
    pub fn locks(&self) -> Result<Addr<LockActor>, StoreError> {
        self.store(&self.0.stores.locks, self.0.backends.redis, "Redis")
    }

    /// The rate-limiter actor (Redis): the edge applies `[ratelimit]` policies by path on its
    /// own; a handler may ask it for decisions of its own (`steward::actors::ratelimit`).
    #[inline]
    pub fn limiter(&self) -> Result<Addr<LimiterActor>, StoreError> {
        self.store(&self.0.stores.limiter, self.0.backends.redis, "Redis")
    }

    /// The job queues.
    #[inline]
    pub fn jobs(&self) -> &Jobs {
        &self.0.jobs
    }

    /// The store actors' slots, for code that keeps them (actors of the service's own).
    pub fn stores(&self) -> &Stores {
        &self.0.stores
    }

    /// The service's actor of type `A` (declared with `Service::actor`): its live
    /// incarnation, or unavailable while it restarts.
    pub fn actor<A: Actor>(&self) -> Result<Addr<A>, StoreError> {
        let slot = self
            .0
            .actors
            .get(&TypeId::of::<A>())
            .and_then(|slot| slot.downcast_ref::<Slot<A>>())
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "actor {} was not declared with Service::actor",
                    std::any::type_name::<A>()
                ))
            })?;
        current(slot)
    }

    /// The metrics registry `/metrics` exposes: register the service's own metrics in
    /// `metrics().registry`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The circuit breaker of a store the service uses (`"redis"`, `"postgres"`), or of a
    /// dependency declared with `Service::breaker`: to see its state, or to wrap calls.
    pub fn breaker(&self, store: &str) -> Option<&Breaker> {
        self.0.breakers.iter().find(|b| b.store() == store)
    }

    /// The service's API keys (`[auth.api_keys]`), to issue, list and revoke them from a route
    /// of its own — keys for its own users, say — as `/admin/api-keys` does for operators;
    /// `None` when the scheme is off or the service does not use Redis.
    pub fn api_keys(&self) -> Option<&ApiKeys> {
        self.0.api_keys.as_ref()
    }

    /// Whether the instance takes traffic (off once a shutdown has begun).
    pub fn readiness(&self) -> &Readiness {
        &self.0.readiness
    }

    #[inline]
    fn store<A: Actor>(
        &self,
        slot: &Slot<A>,
        declared: bool,
        store: &str,
    ) -> Result<Addr<A>, StoreError> {
        if !declared {
            return Err(StoreError::Internal(format!(
                "this service does not use {store}: declare it with Service::backends"
            )));
        }
        current(slot)
    }
}

impl FromRequest for Context {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    #[inline]
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.app_data::<Context>().cloned().ok_or_else(|| {
            StoreError::Internal("the route is not mounted by a steward Service".into()).into()
        }))
    }
}

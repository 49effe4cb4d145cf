//! The cache actor: Redis GET / SET / DEL, and cache-aside with request coalescing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;
use futures::future::{BoxFuture, LocalBoxFuture, Shared};
use futures::FutureExt;
use prometheus::IntCounter;
use rand::Rng;
use redis::{Cmd, FromRedisValue};

use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::redis_conn::{LuaScript, RedisPool, SharedConnection};
use crate::store::{Backend, StoreActor};

/// The actor that owns the Redis pool.
pub type CacheActor = StoreActor<Cache>;

/// How the cache actor behaves (from `[cache]`).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Deadline of one Redis command; past it the cache counts as failed for that call.
    pub timeout: Duration,
    /// TTLs are spread by up to this fraction either way, so keys written together do not
    /// expire together.
    pub ttl_jitter: f64,
    /// How long get_or_load remembers "not found"; zero turns negative caching off.
    pub negative_ttl: Duration,
}

/// Cache state beyond the pool: the shared connection (see [`SharedConnection`] for why one)
/// and the loads in flight.
pub struct Cache {
    inner: Rc<CacheInner>,
}

struct CacheInner {
    prefix: String,
    config: CacheConfig,
    counters: Counters,
    conn: SharedConnection,
    inflight: RefCell<HashMap<String, Inflight>>,
    next_load: Cell<u64>,
}

type LoadResult = Result<Option<Vec<u8>>, StoreError>;

/// A load in flight for one key, which later misses for the key join.
struct Inflight {
    id: u64,
    result: Shared<LocalBoxFuture<'static, LoadResult>>,
    /// Set by a delete of the key while the load runs: its result must not be cached.
    invalidated: Rc<Cell<bool>>,
}

/// Values get_or_load stores start with a tag, so "not found" can be cached too.
const FOUND: u8 = b'v';
const NOT_FOUND: u8 = b'n';

/// `cache_requests_total` children, resolved once: looking labels up per command hashes
/// strings under a lock on the hot path.
struct Counters {
    get_hit: IntCounter,
    get_miss: IntCounter,
    set_ok: IntCounter,
    delete_ok: IntCounter,
    script_ok: IntCounter,
    coalesced: IntCounter,
    errors: [IntCounter; 4],
}

/// The commands, as labels and as indexes into `Counters::errors`.
#[derive(Clone, Copy)]
enum Op {
    Get = 0,
    Set = 1,
    Delete = 2,
    Script = 3,
}

impl Op {
    const LABELS: [&'static str; 4] = ["get", "set", "delete", "script"];
}

impl Counters {
    fn new(metrics: &Metrics) -> Self {
        let counter = |op: &str, result: &str| {
            metrics
                .cache_requests_total
                .with_label_values(&[op, result])
        };
        Self {
            get_hit: counter("get", "hit"),
            get_miss: counter("get", "miss"),
            set_ok: counter("set", "ok"),
            delete_ok: counter("delete", "ok"),
            script_ok: counter("script", "ok"),
            coalesced: counter("get_or_load", "coalesced"),
            errors: Op::LABELS.map(|op| counter(op, "error")),
        }
    }
}

impl Cache {
    /// A cache backend whose keys all start with `prefix`, so instances can share a Redis.
    pub fn new(prefix: String, config: CacheConfig, metrics: &Metrics) -> Self {
        let config_timeout = config.timeout;
        Self {
            inner: Rc::new(CacheInner {
                prefix,
                config,
                counters: Counters::new(metrics),
                conn: SharedConnection::new(config_timeout),
                inflight: RefCell::default(),
                next_load: Cell::new(0),
            }),
        }
    }
}

impl Backend for Cache {
    type Manager = RedisConnectionManager;
}

/// What a cache command needs once it left the actor: shared state, the pool, the metrics.
#[derive(Clone)]
struct Ops {
    inner: Rc<CacheInner>,
    pool: RedisPool,
    metrics: std::sync::Arc<Metrics>,
}

impl Ops {
    fn new(actor: &CacheActor) -> Self {
        Self {
            inner: Rc::clone(&actor.backend.inner),
            pool: actor.core.pool.clone(),
            metrics: std::sync::Arc::clone(&actor.core.metrics),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.inner.prefix, key)
    }

    /// Runs one command on the shared connection, keeping the cache's health figures.
    async fn run<T: FromRedisValue>(
        &self,
        op: Op,
        cmd: &Cmd,
        deadline: Deadline,
    ) -> Result<T, StoreError> {
        let outcome = self.inner.conn.run(&self.pool, cmd, deadline).await;
        let degraded = &self.metrics.cache_degraded;
        match &outcome {
            Ok(_) => degraded.set(0),
            // The caller's budget ran out: nothing to say about Redis.
            Err(StoreError::DeadlineExceeded) => {}
            Err(error) => {
                degraded.set(1);
                self.inner.counters.errors[op as usize].inc();
                let op = Op::LABELS[op as usize];
                log::debug!(target: "steward::cache", "cache {op} failed: {error}");
            }
        }
        outcome
    }

    async fn get(&self, key: &str, deadline: Deadline) -> Result<Option<Vec<u8>>, StoreError> {
        let value: Option<Vec<u8>> = self
            .run(Op::Get, redis::cmd("GET").arg(key), deadline)
            .await?;
        let counters = &self.inner.counters;
        if value.is_some() {
            counters.get_hit.inc()
        } else {
            counters.get_miss.inc()
        }
        Ok(value)
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let millis = ttl.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(millis);
        self.run::<()>(Op::Set, &cmd, deadline).await?;
        self.inner.counters.set_ok.inc();
        Ok(())
    }

    async fn delete(&self, key: &str, deadline: Deadline) -> Result<(), StoreError> {
        // A load in flight read the old state: it must not write it back, nor serve later misses.
        if let Some(load) = self.inner.inflight.borrow_mut().remove(key) {
            load.invalidated.set(true);
        }
        self.run::<()>(Op::Delete, redis::cmd("DEL").arg(key), deadline)
            .await?;
        self.inner.counters.delete_ok.inc();
        Ok(())
    }

    async fn script(&self, msg: Script) -> Result<redis::Value, StoreError> {
        let keys: Vec<String> = msg.keys.iter().map(|key| self.key(key)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&dyn crate::redis_conn::ToRedisArgsDyn> =
            msg.args.iter().map(|a| a as _).collect();
        let outcome = self
            .inner
            .conn
            .eval(&self.pool, msg.script, &keys, &args, msg.deadline)
            .await;
        match &outcome {
            Ok(_) => self.inner.counters.script_ok.inc(),
            Err(StoreError::DeadlineExceeded) => {}
            Err(error) => {
                self.inner.counters.errors[Op::Script as usize].inc();
                log::debug!(target: "steward::cache", "cache script failed: {error}");
            }
        }
        outcome
    }

    /// `ttl` spread by ±`ttl_jitter`.
    fn jittered(&self, ttl: Duration) -> Duration {
        let spread = self.inner.config.ttl_jitter;
        if spread <= 0.0 {
            return ttl;
        }
        ttl.mul_f64(1.0 + rand::rng().random_range(-spread..=spread))
    }

    /// Cache-aside for `key`: the cached value, or the loader's, cached on the way out.
    /// A Redis failure is not the caller's problem: the loader answers instead.
    async fn load_through(
        self,
        key: String,
        ttl: Duration,
        loader: Loader,
        id: u64,
        invalidated: Rc<Cell<bool>>,
        deadline: Deadline,
    ) -> LoadResult {
        let result = async {
            match self.get(&key, deadline).await {
                Ok(Some(raw)) => match raw.split_first() {
                    Some((&FOUND, value)) => return Ok(Some(value.to_vec())),
                    Some((&NOT_FOUND, _)) => return Ok(None),
                    _ => log::warn!(target: "steward::cache", "ignoring a malformed cache entry"),
                },
                Ok(None) => {}
                Err(_) => {} // counted and logged by `run`; fall back to the loader
            }
            let loaded = loader().await?;
            if !invalidated.get() {
                let stored = match &loaded {
                    Some(value) => Some(([&[FOUND][..], value].concat(), self.jittered(ttl))),
                    None if !self.inner.config.negative_ttl.is_zero() => {
                        Some((vec![NOT_FOUND], self.inner.config.negative_ttl))
                    }
                    None => None,
                };
                if let Some((raw, ttl)) = stored {
                    let _ = self.set(&key, &raw, ttl, deadline).await;
                }
            }
            Ok(loaded)
        }
        .await;
        let mut inflight = self.inner.inflight.borrow_mut();
        if inflight.get(&key).is_some_and(|load| load.id == id) {
            inflight.remove(&key);
        }
        result
    }
}

/// Reads `key`. `None` when absent.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct Get {
    /// The key, without the prefix.
    pub key: String,
    /// When the caller stops waiting.
    pub deadline: Deadline,
}

/// Writes `key` with exactly this TTL (a TTL a client asked for is not jittered).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Set {
    /// The key, without the prefix.
    pub key: String,
    /// The bytes to store.
    pub value: Vec<u8>,
    /// How long the value lives; spread by `ttl_jitter`.
    pub ttl: Duration,
    /// When the caller stops waiting.
    pub deadline: Deadline,
}

/// Deletes `key`, and keeps a load of it that is in flight from caching what it read.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Delete {
    /// The key, without the prefix.
    pub key: String,
    /// When the caller stops waiting.
    pub deadline: Deadline,
}

/// Produces the value of a key on a miss: `Ok(None)` for "does not exist".
pub type Loader = Box<dyn FnOnce() -> BoxFuture<'static, LoadResult> + Send>;

/// Cache-aside read of `key`: concurrent misses of one key in this process run the loader
/// once and share its answer; a Redis failure falls back to the loader instead of failing.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct GetOrLoad {
    /// The key, without the prefix.
    pub key: String,
    /// How long a loaded value is cached; spread by `ttl_jitter`.
    pub ttl: Duration,
    /// Produces the value on a miss; concurrent misses of one key share one call.
    pub loader: Loader,
    /// When the caller stops waiting: bounds the Redis commands (the loader has its own,
    /// usually the same). A miss that joins another caller's load waits for that load.
    pub deadline: Deadline,
}

/// Runs a Lua script on the cache's connection (breaker, deadline and command timeout as for
/// every cache command), for what a service keeps in Redis beyond plain values: several keys
/// changed atomically, a bounded index beside them. steward's own API keys are stored this way.
///
/// `keys` are given without the prefix and reach the script with it (`KEYS[i]`), so a service's
/// keys stay in its namespace; the script must touch no key it is not given.
#[derive(Message)]
#[rtype(result = "Result<redis::Value, StoreError>")]
pub struct Script {
    /// The script; its SHA1 is sent, its source only after a `NOSCRIPT`.
    pub script: &'static LuaScript,
    /// The keys it touches, without the prefix.
    pub keys: Vec<String>,
    /// `ARGV`.
    pub args: Vec<Vec<u8>>,
    /// When the caller stops waiting.
    pub deadline: Deadline,
}

impl Handler<Script> for CacheActor {
    type Result = ResponseFuture<Result<redis::Value, StoreError>>;

    fn handle(&mut self, msg: Script, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.script(msg).await })
    }
}

impl Handler<Get> for CacheActor {
    type Result = ResponseFuture<Result<Option<Vec<u8>>, StoreError>>;

    fn handle(&mut self, msg: Get, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.get(&ops.key(&msg.key), msg.deadline).await })
    }
}

impl Handler<Set> for CacheActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: Set, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move {
            ops.set(&ops.key(&msg.key), &msg.value, msg.ttl, msg.deadline)
                .await
        })
    }
}

impl Handler<Delete> for CacheActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: Delete, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.delete(&ops.key(&msg.key), msg.deadline).await })
    }
}

impl Handler<GetOrLoad> for CacheActor {
    type Result = ResponseFuture<LoadResult>;

    fn handle(&mut self, msg: GetOrLoad, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        let key = ops.key(&msg.key);
        if let Some(load) = ops.inner.inflight.borrow().get(&key) {
            ops.metrics.cache_loader_coalesced_total.inc();
            ops.inner.counters.coalesced.inc();
            return Box::pin(load.result.clone());
        }
        let id = ops.inner.next_load.get() + 1;
        ops.inner.next_load.set(id);
        let invalidated = Rc::new(Cell::new(false));
        let result = ops
            .clone()
            .load_through(
                key.clone(),
                msg.ttl,
                msg.loader,
                id,
                Rc::clone(&invalidated),
                msg.deadline,
            )
            .boxed_local()
            .shared();
        ops.inner.inflight.borrow_mut().insert(
            key,
            Inflight {
                id,
                result: result.clone(),
                invalidated,
            },
        );
        Box::pin(result)
    }
}

crate::traced_messages!(CacheActor: Get, Set, Delete, GetOrLoad, Script);

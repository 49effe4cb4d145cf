//! The lock actor: distributed locks in Redis with fencing tokens, released at shutdown.
//!
//! Key layout, under the configured prefix: `lock:c:<name>` for clients' locks (the HTTP API),
//! `lock:s:<name>` for the service's own (a job's exclusive section), and one counter,
//! `lock:fence`, that draws every fencing token. No name can reach another namespace or the
//! counter, whatever characters it holds, so a client can neither take the service's locks
//! nor corrupt a counter.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use prometheus::IntCounterVec;
use serde::Serialize;

use crate::backoff::Backoff;
use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::redis_conn::{LuaScript, RedisPool, SharedConnection};
use crate::store::{Backend, StoreActor};

/// The actor that owns the lock pool.
pub type LockActor = StoreActor<Locks>;

/// Takes the lock when it is free and draws the next fencing token, in one step.
///
/// Tokens come from one counter for every lock, so they grow strictly for each lock with a
/// single key in Redis. A missing counter (a fresh or restarted Redis that kept nothing) is
/// seeded with the server's time in microseconds, so tokens never go back below ones already
/// handed out, as long as fewer than a million grants a second were made.
const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1]), 0}
end
local now = redis.call('TIME')
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], now[1] * 1000000 + now[2])
end
local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, fence, now[1] * 1000 + math.floor(now[2] / 1000)}
"#;

/// Deletes the lock only for the holder of its token.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Extends the lock only for the holder of its token; answers the server time, or -1.
const EXTEND: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local now = redis.call('TIME')
  return now[1] * 1000 + math.floor(now[2] / 1000)
end
return -1
"#;

/// Whether the lock is held, its fencing token and time left; never its token.
const INSPECT: &str = r#"
local fence = redis.call('HGET', KEYS[1], 'fence')
if not fence then
  return {0, 0, 0}
end
return {1, tonumber(fence), redis.call('PTTL', KEYS[1])}
"#;

/// Lock state beyond the pool: the shared connection, the scripts, and the locks this process
/// holds (released at shutdown, renewed when asked).
pub struct Locks {
    inner: Rc<LocksInner>,
}

struct LocksInner {
    prefix: String,
    conn: SharedConnection,
    scripts: Scripts,
    held: RefCell<HashMap<LockName, Held>>,
    /// Delay between tries while waiting for a held lock.
    retry: Backoff,
}

struct Scripts {
    acquire: LuaScript,
    release: LuaScript,
    extend: LuaScript,
    inspect: LuaScript,
}

/// A lock this process holds.
struct Held {
    token: String,
    ttl: Duration,
    /// The renewal timer, when the lock is kept alive.
    renewal: Option<SpawnHandle>,
}

impl Locks {
    /// `timeout` bounds each Redis command.
    pub fn new(prefix: String, timeout: Duration) -> Self {
        Self {
            inner: Rc::new(LocksInner {
                prefix,
                conn: SharedConnection::new(timeout),
                scripts: Scripts {
                    acquire: LuaScript::new(ACQUIRE),
                    release: LuaScript::new(RELEASE),
                    extend: LuaScript::new(EXTEND),
                    inspect: LuaScript::new(INSPECT),
                },
                held: RefCell::default(),
                retry: Backoff {
                    min: Duration::from_millis(10),
                    max: Duration::from_millis(250),
                },
            }),
        }
    }
}

impl Backend for Locks {
    type Manager = RedisConnectionManager;

    /// Releases every lock this process holds, so others need not wait for them to expire.
    fn before_stop(
        actor: &mut LockActor,
        ctx: &mut Context<LockActor>,
    ) -> Option<LocalBoxFuture<'static, ()>> {
        let held: Vec<(LockName, Held)> = actor.backend.inner.held.borrow_mut().drain().collect();
        if held.is_empty() {
            return None;
        }
        for handle in held.iter().filter_map(|(_, h)| h.renewal) {
            ctx.cancel_future(handle);
        }
        let ops = Ops::new(actor);
        Some(
            async move {
                for (name, lock) in held {
                    match ops.release(&name, &lock.token).await {
                        Ok(_) => log::info!(target: "steward::locks", "released lock {name} at shutdown"),
                        Err(error) => log::warn!(target: "steward::locks", "could not release lock {name}: {error}"),
                    }
                }
            }
            .boxed_local(),
        )
    }
}

/// Whose a lock is. Each namespace has keys of its own, so the same name in two namespaces is
/// two locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Locks clients take through the API: any name they choose lives here.
    Client,
    /// The service's own locks (a job that must run alone): out of every client's reach.
    Service,
}

/// A lock: a name within a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockName {
    /// Whose lock it is.
    pub namespace: Namespace,
    /// The name within the namespace.
    pub name: String,
}

impl LockName {
    /// A lock in the clients' namespace.
    pub fn client(name: impl Into<String>) -> Self {
        Self {
            namespace: Namespace::Client,
            name: name.into(),
        }
    }

    /// A lock in the service's own namespace.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            namespace: Namespace::Service,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for LockName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let namespace = match self.namespace {
            Namespace::Client => "client",
            Namespace::Service => "service",
        };
        write!(f, "{namespace}/{}", self.name)
    }
}

/// A granted lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lock granted.
    pub name: LockName,
    /// Proves ownership for release and extend; keep it secret.
    pub token: String,
    /// Increases with every grant of this lock: a storage layer that remembers the largest
    /// token it saw can refuse a stale holder whose lease expired while it was paused.
    pub fencing_token: i64,
    /// Unix time in milliseconds, by the Redis server's clock.
    pub expires_at_ms: i64,
}

/// What an acquire got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lock is this caller's until the lease's expiry.
    Granted(Lease),
    /// Someone else holds it; it expires in `retry_after` at the latest.
    Held {
        /// When the current lease runs out at the latest.
        retry_after: Duration,
    },
}

/// Whether a lock is held, as anyone may see it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LockState {
    /// Whether a lease is in force.
    pub held: bool,
    /// The current lease's fencing token.
    pub fencing_token: Option<i64>,
    /// Time left of the current lease.
    pub expires_in_ms: Option<i64>,
}

/// Takes lock `name` for `ttl`, waiting up to `wait` (with jittered retries) while it is held.
#[derive(Message, Debug)]
#[rtype(result = "Result<Acquired, StoreError>")]
pub struct Acquire {
    /// The lock to take.
    pub name: LockName,
    /// The lease's length.
    pub ttl: Duration,
    /// How long to wait while another holds it; zero answers at once.
    pub wait: Duration,
    /// Whose lease it becomes, which decides renewal and release at shutdown.
    pub holder: Holder,
}

/// Who holds a granted lock, which decides what the actor does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A client outside the process (the HTTP API): the actor forgets the lease once granted;
    /// it expires or the client releases it.
    Client,
    /// This process: the actor releases it at shutdown, and with `keep_alive` renews it every
    /// `ttl / 3` for at most that long, reporting (log and
    /// `lock_operations_total{op="renew",result="lost"}`) if it was lost.
    Process {
        /// Renew every `ttl / 3` for at most this long; `None` lets the lease run its ttl.
        keep_alive: Option<Duration>,
    },
}

/// Releases lock `name` if `token` holds it; `Ok(false)` when it does not.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Release {
    /// The lock to release.
    pub name: LockName,
    /// The token its grant returned.
    pub token: String,
}

/// Extends lock `name` to `ttl` from now if `token` holds it; the new expiry (Unix ms), or
/// `None` when the token does not hold it.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<i64>, StoreError>")]
pub struct Extend {
    /// The lock to extend.
    pub name: LockName,
    /// The token its grant returned.
    pub token: String,
    /// The new lease's length, from now.
    pub ttl: Duration,
}

/// Asks whether a lock is held, and its fencing token and time left; never its token.
#[derive(Message, Debug)]
#[rtype(result = "Result<LockState, StoreError>")]
pub struct Inspect {
    /// The lock to look at.
    pub name: LockName,
}

#[derive(Clone)]
struct Ops {
    inner: Rc<LocksInner>,
    pool: RedisPool,
    counter: IntCounterVec,
}

impl Ops {
    fn new(actor: &LockActor) -> Self {
        Self {
            inner: Rc::clone(&actor.backend.inner),
            pool: actor.core.pool.clone(),
            counter: actor.core.metrics.lock_operations_total.clone(),
        }
    }

    /// The lock's key and the fencing counter's.
    fn keys(&self, lock: &LockName) -> (String, String) {
        let prefix = &self.inner.prefix;
        let namespace = match lock.namespace {
            Namespace::Client => "c",
            Namespace::Service => "s",
        };
        let key = format!("{prefix}lock:{namespace}:{}", lock.name);
        (key, format!("{prefix}lock:fence"))
    }

    fn count<T>(
        &self,
        op: &str,
        outcome: &Result<T, StoreError>,
        result: impl Fn(&T) -> &'static str,
    ) {
        let label = match outcome {
            Ok(value) => result(value),
            Err(_) => "error",
        };
        self.counter.with_label_values(&[op, label]).inc();
    }

    async fn acquire(
        &self,
        name: &LockName,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Acquired, StoreError> {
        let (key, fence) = self.keys(name);
        let token = format!("{:032x}", rand::random::<u128>());
        let ttl_ms = ttl.as_millis() as i64;
        let deadline = Instant::now() + wait;
        let mut attempt = 0;
        let outcome = loop {
            let reply: Vec<i64> = match self
                .inner
                .conn
                .eval(
                    &self.pool,
                    &self.inner.scripts.acquire,
                    &[&key, &fence],
                    &[&token, &ttl_ms],
                    Deadline::NONE,
                )
                .await
            {
                Ok(reply) => reply,
                Err(error) => break Err(error),
            };
            match reply.as_slice() {
                [1, fencing_token, now_ms] => {
                    break Ok(Acquired::Granted(Lease {
                        name: name.clone(),
                        token,
                        fencing_token: *fencing_token,
                        expires_at_ms: now_ms + ttl_ms,
                    }))
                }
                [0, pttl, _] => {
                    let left = Duration::from_millis((*pttl).max(1) as u64);
                    let now = Instant::now();
                    if now >= deadline {
                        break Ok(Acquired::Held { retry_after: left });
                    }
                    let pause = self
                        .inner
                        .retry
                        .delay(attempt)
                        .min(left)
                        .min(deadline - now);
                    actix_rt::time::sleep(pause).await;
                    attempt += 1;
                }
                other => {
                    break Err(StoreError::Internal(format!(
                        "unexpected acquire reply {other:?}"
                    )))
                }
            }
        };
        self.count("acquire", &outcome, |a| match a {
            Acquired::Granted(_) => "acquired",
            Acquired::Held { .. } => "held",
        });
        outcome
    }

    async fn release(&self, name: &LockName, token: &str) -> Result<bool, StoreError> {
        let (key, _) = self.keys(name);
        let outcome = self
            .inner
            .conn
            .eval::<i64>(
                &self.pool,
                &self.inner.scripts.release,
                &[&key],
                &[&token],
                Deadline::NONE,
            )
            .await
            .map(|deleted| deleted == 1);
        self.count("release", &outcome, |released| {
            if *released {
                "released"
            } else {
                "not_owner"
            }
        });
        outcome
    }

    async fn extend(
        &self,
        op: &str,
        name: &LockName,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let (key, _) = self.keys(name);
        let ttl_ms = ttl.as_millis() as i64;
        let outcome = self
            .inner
            .conn
            .eval::<i64>(
                &self.pool,
                &self.inner.scripts.extend,
                &[&key],
                &[&token, &ttl_ms],
                Deadline::NONE,
            )
            .await
            .map(|now_ms| (now_ms >= 0).then_some(now_ms + ttl_ms));
        // A client's extend with the wrong token is refused; our own renewal failing means
        // the lease was lost.
        let refused = if op == "renew" { "lost" } else { "not_owner" };
        self.count(op, &outcome, |extended| {
            if extended.is_some() {
                "extended"
            } else {
                refused
            }
        });
        outcome
    }

    async fn inspect(&self, name: &LockName) -> Result<LockState, StoreError> {
        let (key, _) = self.keys(name);
        let reply: Vec<i64> = self
            .inner
            .conn
            .eval(
                &self.pool,
                &self.inner.scripts.inspect,
                &[&key],
                &[],
                Deadline::NONE,
            )
            .await?;
        Ok(match reply.as_slice() {
            [1, fence, pttl] => LockState {
                held: true,
                fencing_token: Some(*fence),
                expires_in_ms: Some((*pttl).max(0)),
            },
            _ => LockState {
                held: false,
                fencing_token: None,
                expires_in_ms: None,
            },
        })
    }
}

impl LockActor {
    /// Renews `name` every `ttl / 3` until `until`; stops and reports when the lease is lost.
    fn keep_alive(
        &mut self,
        name: LockName,
        until: Instant,
        ctx: &mut Context<Self>,
    ) -> SpawnHandle {
        let ttl = self
            .backend
            .inner
            .held
            .borrow()
            .get(&name)
            .map(|h| h.ttl)
            .unwrap_or_default();
        ctx.run_interval(ttl / 3, move |act, ctx| {
            let Some(token) = act.backend.inner.held.borrow().get(&name).map(|h| h.token.clone()) else {
                return;
            };
            if Instant::now() >= until {
                // The cap is reached: stop renewing and let the lease run out.
                if let Some(handle) = act.backend.inner.held.borrow_mut().get_mut(&name).and_then(|h| h.renewal.take()) {
                    ctx.cancel_future(handle);
                }
                return;
            }
            let ops = Ops::new(act);
            let lock = name.clone();
            let renew = async move { ops.extend("renew", &lock, &token, ttl).await };
            ctx.spawn(renew.into_actor(act).map({
                let name = name.clone();
                move |outcome, act, ctx| {
                    if let Ok(Some(_)) = outcome {
                        return;
                    }
                    log::warn!(target: "steward::locks", "lock {name} was lost (renewal failed: {outcome:?})");
                    if let Some(held) = act.backend.inner.held.borrow_mut().remove(&name) {
                        if let Some(handle) = held.renewal {
                            ctx.cancel_future(handle);
                        }
                    }
                }
            }));
        })
    }
}

impl Handler<Acquire> for LockActor {
    type Result = ResponseActFuture<Self, Result<Acquired, StoreError>>;

    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        let (name, ttl, holder) = (msg.name.clone(), msg.ttl, msg.holder);
        let acquire = async move { ops.acquire(&msg.name, msg.ttl, msg.wait).await };
        Box::pin(acquire.into_actor(self).map(move |outcome, act, ctx| {
            let Holder::Process { keep_alive } = holder else {
                return outcome;
            };
            if let Ok(Acquired::Granted(lease)) = &outcome {
                let held = Held {
                    token: lease.token.clone(),
                    ttl,
                    renewal: None,
                };
                act.backend
                    .inner
                    .held
                    .borrow_mut()
                    .insert(name.clone(), held);
                if let Some(cap) = keep_alive {
                    let handle = act.keep_alive(name.clone(), Instant::now() + cap, ctx);
                    if let Some(held) = act.backend.inner.held.borrow_mut().get_mut(&name) {
                        held.renewal = Some(handle);
                    }
                }
            }
            outcome
        }))
    }
}

impl Handler<Release> for LockActor {
    type Result = ResponseActFuture<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: Release, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        let name = msg.name.clone();
        let release = async move { ops.release(&msg.name, &msg.token).await };
        Box::pin(release.into_actor(self).map(move |outcome, act, ctx| {
            // Whatever the answer, the holder has let go: stop renewing, so a release that
            // failed on a Redis error still ends with the lease running out by its ttl.
            if let Some(handle) = act
                .backend
                .inner
                .held
                .borrow_mut()
                .remove(&name)
                .and_then(|h| h.renewal)
            {
                ctx.cancel_future(handle);
            }
            outcome
        }))
    }
}

impl Handler<Extend> for LockActor {
    type Result = ResponseFuture<Result<Option<i64>, StoreError>>;

    fn handle(&mut self, msg: Extend, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.extend("extend", &msg.name, &msg.token, msg.ttl).await })
    }
}

impl Handler<Inspect> for LockActor {
    type Result = ResponseFuture<Result<LockState, StoreError>>;

    fn handle(&mut self, msg: Inspect, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.inspect(&msg.name).await })
    }
}

crate::traced_messages!(LockActor: Acquire, Release, Extend, Inspect);

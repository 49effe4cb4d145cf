//! The rate-limiter actor: GCRA (default), fixed-window and sliding-window limits in Redis,
//! decided by Lua scripts on the Redis server's clock, with a per-policy answer for when Redis
//! fails — allow, deny, or an in-process GCRA limiter until Redis answers again.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::redis_conn::{LuaScript, RedisPool, SharedConnection};
use crate::store::{Backend, StoreActor};

/// The actor that owns the rate limiter's pool.
pub type LimiterActor = StoreActor<Limiter>;

/// Generic cell rate algorithm: one "theoretical arrival time" per key, exact, O(1).
/// Replies `{allowed, remaining, reset_ms, retry_ms}`; times in microseconds inside.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission * tonumber(ARGV[3])
local allow_at = new_tat - tolerance
if now < allow_at then
  local remaining = math.max(0, math.floor((tolerance - (tat - now)) / emission))
  return {0, remaining, math.ceil((tat - now) / 1000), math.ceil((allow_at - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
local remaining = math.max(0, math.floor((tolerance - (new_tat - now)) / emission))
return {1, remaining, math.ceil((new_tat - now) / 1000), 0}
"#;

/// Fixed window: a counter per key and window; admits up to twice the limit across an edge.
const FIXED_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit, period, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = math.floor(now / period)
local key = KEYS[1] .. ':' .. window
local count = redis.call('INCRBY', key, cost)
if count == cost then redis.call('PEXPIRE', key, period) end
local reset = (window + 1) * period - now
if count > limit then
  redis.call('DECRBY', key, cost)
  return {0, math.max(0, limit - (count - cost)), reset, reset}
end
return {1, limit - count, reset, 0}
"#;

/// Sliding window counter: this window's count plus the last one's, weighted by overlap.
const SLIDING_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit, period, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = math.floor(now / period)
local elapsed = now - window * period
local current_key = KEYS[1] .. ':' .. window
local previous = tonumber(redis.call('GET', KEYS[1] .. ':' .. (window - 1)) or 0)
local current = tonumber(redis.call('GET', current_key) or 0)
local estimate = previous * (period - elapsed) / period + current
if estimate + cost > limit then
  local retry = period - elapsed
  if previous > 0 and limit - current - cost >= 0 then
    retry = math.max(1, math.ceil((period - elapsed) - (limit - current - cost) * period / previous))
  end
  return {0, math.max(0, math.floor(limit - estimate)), period - elapsed, retry}
end
redis.call('INCRBY', current_key, cost)
redis.call('PEXPIRE', current_key, period * 2)
return {1, math.max(0, math.floor(limit - estimate - cost)), period - elapsed, 0}
"#;

/// How a policy counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Generic cell rate algorithm: one timestamp per key, exact, bursts up to `burst`.
    Gcra,
    /// A counter per fixed window: cheap, up to twice the limit across a window's edge.
    FixedWindow,
    /// Two windows weighted by overlap: close to exact, two counters per key.
    SlidingWindow,
}

/// What a policy does when Redis cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Let requests through unlimited.
    Allow,
    /// Refuse requests (503).
    Deny,
    /// Limit in this process with the same policy (per replica, not cluster-wide).
    Local,
}

/// One limit, as configured under `[[ratelimit.policies]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Letters, digits, `_` and `-`; the `RateLimit-Policy` name and a metric label.
    pub name: String,
    /// Requests whose path starts with this are covered.
    pub prefix: String,
    /// Methods covered; empty covers all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Requests (cost units) per `period`.
    pub limit: u32,
    /// The window of `limit`.
    #[serde(with = "crate::duration")]
    pub period: Duration,
    /// How many may come at once (GCRA); defaults to `limit`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// How requests are counted.
    #[serde(default = "gcra")]
    pub algorithm: Algorithm,
    /// Cost units one request uses.
    #[serde(default = "one")]
    pub cost: u32,
    /// What happens while Redis cannot decide.
    #[serde(default = "local")]
    pub on_store_error: OnStoreError,
    /// Count would-be rejections without rejecting.
    #[serde(default)]
    pub dry_run: bool,
}

/// The path a rate-limit policy is matched against: percent-decoded once (as the router
/// decodes it, and `%2F` too), `.` and `..` segments resolved and runs of `/` folded, so that
/// every spelling of a route has one form. A path that needs none of this is borrowed as is,
/// which keeps the hot path free of allocation.
pub fn canonical_path(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') && !raw.contains("//") && !raw.contains("/.") {
        return Cow::Borrowed(raw);
    }
    let decoded = String::from_utf8_lossy(&percent_decode(raw.as_bytes())).into_owned();
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || path.is_empty() {
        path.push('/');
    }
    Cow::Owned(path)
}

/// `%XX` sequences as bytes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let pair = raw
            .get(i + 1..i + 3)
            .and_then(|p| Some((hex(p[0])?, hex(p[1])?)));
        match (raw[i], pair) {
            (b'%', Some((high, low))) => {
                out.push(high << 4 | low);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

fn gcra() -> Algorithm {
    Algorithm::Gcra
}

fn one() -> u32 {
    1
}

fn local() -> OnStoreError {
    OnStoreError::Local
}

impl Policy {
    /// The burst of GCRA: `burst` when set, else `limit`.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.limit)
    }

    /// Whether this policy covers a request. `path` must be the request's
    /// [`canonical_path`]: compared with the raw path, `/%761/kv` would slip past a `/v1/`
    /// prefix that the router (which decodes) still routes to `/v1/kv`.
    pub fn covers(&self, method: &str, path: &str) -> bool {
        path.starts_with(&self.prefix)
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// Where a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Redis decided.
    Redis,
    /// The in-process limiter, while Redis is unavailable.
    Local,
    /// Redis is unavailable and the policy says allow or deny without counting.
    Unlimited,
    /// Nobody could decide and the policy denies meanwhile (`on_store_error = "deny"`).
    Refused,
}

/// The answer for one request under one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Units left in the current window.
    pub remaining: u32,
    /// Time until the quota is whole again.
    pub reset_after: Duration,
    /// When denied: time until a request of this cost would be admitted.
    pub retry_after: Duration,
    /// Who decided.
    pub source: Source,
}

/// Asks whether `identity` may spend `cost` under `policy`.
#[derive(Message, Debug)]
#[rtype(result = "Decision")]
pub struct Check {
    /// The policy asked.
    pub policy: Arc<Policy>,
    /// Who is asking: a hashed API key or an address.
    pub identity: String,
    /// Units this request costs.
    pub cost: u32,
}

type LocalLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Limiter state beyond the pool: the shared connection, the scripts, whether Redis is
/// currently being bypassed, and the in-process limiters used meanwhile.
pub struct Limiter {
    inner: Rc<LimiterInner>,
}

struct LimiterInner {
    prefix: String,
    conn: SharedConnection,
    scripts: [LuaScript; 3],
    /// Set while Redis fails: the time of the next attempt to use it again. Between attempts
    /// decisions do not wait on Redis at all.
    bypass_until: Cell<Option<Instant>>,
    local: RefCell<HashMap<String, Rc<LocalLimiter>>>,
    local_checks: Cell<u64>,
    reservations: Reservations,
    asks: Cell<u64>,
}

/// Units charged in Redis ahead of use, per policy and identity, and the last known margin.
///
/// Shared between the actor (which reserves) and the request path (which spends without a
/// message to the actor, so most decisions far from the limit cost no thread hop at all).
#[derive(Clone, Default)]
pub struct Reservations(Arc<Mutex<HashMap<String, Reservation>>>);

impl Reservations {
    /// The key a reservation of `policy` for `identity` is kept under.
    pub fn key(policy: &Policy, identity: &str) -> String {
        format!("{}:{identity}", policy.name)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Reservation>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends `cost` reserved units for `key`, if enough are left and still fresh.
    pub fn take(&self, key: &str, cost: u32) -> Option<Decision> {
        let mut reservations = self.lock();
        let reservation = reservations.get_mut(key)?;
        if reservation.units < cost || reservation.expires < Instant::now() {
            return None;
        }
        reservation.units -= cost;
        reservation.remaining = reservation.remaining.saturating_sub(cost);
        Some(Decision {
            allowed: true,
            remaining: reservation.remaining,
            reset_after: reservation.reset_after,
            retry_after: Duration::ZERO,
            source: Source::Redis,
        })
    }
}

struct Reservation {
    units: u32,
    /// The quota left after the last answer, less what was spent here since.
    remaining: u32,
    reset_after: Duration,
    expires: Instant,
    /// A batch is being asked for.
    batching: bool,
}

/// Batches are reserved only while more than this many units remain, and are at most the
/// remaining quota divided by it.
const RESERVE_ABOVE: u32 = 1000;
/// The most requests' worth of units one batch reserves.
const MAX_BATCH: u32 = 256;
/// How long reserved units may be spent.
const RESERVATION_TTL: Duration = Duration::from_millis(50);

/// How long the limiter keeps off Redis after a failure before trying it again.
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(1);

impl Limiter {
    /// `timeout` bounds each Redis call: a decision must not hold a request up for long.
    /// `reservations` outlives the actor (it is shared with the request path and survives
    /// restarts).
    pub fn new(prefix: String, timeout: Duration, reservations: Reservations) -> Self {
        Self {
            inner: Rc::new(LimiterInner {
                prefix,
                conn: SharedConnection::new(timeout),
                scripts: [
                    LuaScript::new(GCRA),
                    LuaScript::new(FIXED_WINDOW),
                    LuaScript::new(SLIDING_WINDOW),
                ],
                bypass_until: Cell::new(None),
                local: RefCell::default(),
                local_checks: Cell::new(0),
                reservations,
                asks: Cell::new(0),
            }),
        }
    }
}

impl Backend for Limiter {
    type Manager = RedisConnectionManager;
}

struct Ops {
    inner: Rc<LimiterInner>,
    pool: RedisPool,
    decisions: IntCounterVec,
}

impl Ops {
    async fn check(&self, check: Check) -> Decision {
        let policy = &check.policy;
        let bypassing = self
            .inner
            .bypass_until
            .get()
            .is_some_and(|until| Instant::now() < until);
        let key = Reservations::key(policy, &check.identity);
        let outcome = if bypassing {
            Err(StoreError::Unavailable(
                "rate limiter is bypassing Redis".into(),
            ))
        } else if let Some(decision) = self.inner.reservations.take(&key, check.cost) {
            Ok(decision)
        } else {
            self.ask_with_reservation(policy, &key, &check.identity, check.cost)
                .await
        };
        let decision = match outcome {
            Ok(decision) => {
                if self.inner.bypass_until.take().is_some() {
                    log::info!(target: "steward::ratelimit", "Redis answers again; rate limits are cluster-wide again");
                }
                decision
            }
            Err(error) => {
                if self.inner.bypass_until.get().is_none() {
                    log::warn!(target: "steward::ratelimit", "Redis failed ({error}); rate limits fall back to each policy's on_store_error");
                }
                if !bypassing {
                    self.inner
                        .bypass_until
                        .set(Some(Instant::now() + RETRY_REDIS_AFTER));
                }
                self.decisions
                    .with_label_values(&[&policy.name, "error"])
                    .inc();
                self.fallback(policy, &check.identity, check.cost)
            }
        };
        let label = if decision.allowed { "allow" } else { "deny" };
        self.decisions
            .with_label_values(&[&policy.name, label])
            .inc();
        decision
    }

    /// Asks Redis for `cost`, and — when the last answer for this key left a wide margin —
    /// for a small batch more, kept here for the next requests.
    ///
    /// Why: every limited request otherwise costs a second Redis round trip and script run,
    /// which halved the throughput of a limited route at 64 connections. Reserved units are
    /// charged in Redis up front, so the cluster-wide total can never exceed the limit; a batch
    /// is only taken while the remaining quota is far above it (`RESERVE_ABOVE`), so near the
    /// limit every request is decided by Redis, one by one, exactly. A batch is at most a
    /// thousandth of the remaining quota (and `MAX_BATCH` requests); unused units lapse after
    /// `RESERVATION_TTL`, so what a client can lose is bounded by that thousandth.
    async fn ask_with_reservation(
        &self,
        policy: &Policy,
        key: &str,
        identity: &str,
        cost: u32,
    ) -> Result<Decision, StoreError> {
        // One batch at a time per key: concurrent batches would each reserve, and all but the
        // one kept would lapse unused.
        let extra = match self.inner.reservations.lock().get_mut(key) {
            Some(r) if r.remaining > RESERVE_ABOVE && !r.batching => {
                r.batching = true;
                (r.remaining / RESERVE_ABOVE).min(MAX_BATCH) * cost
            }
            _ => 0,
        };
        let asked = async {
            let decision = self.ask_redis(policy, identity, cost + extra).await?;
            if extra > 0 && !decision.allowed {
                return Ok((self.ask_redis(policy, identity, cost).await?, 0));
            }
            let reserved = if decision.allowed { extra } else { 0 };
            Ok::<_, StoreError>((decision, reserved))
        }
        .await;
        self.housekeeping();
        let mut reservations = self.inner.reservations.lock();
        let entry = reservations.entry(key.to_owned()).or_insert(Reservation {
            units: 0,
            remaining: 0,
            reset_after: Duration::ZERO,
            expires: Instant::now(),
            batching: false,
        });
        if extra > 0 {
            entry.batching = false;
        }
        let (mut decision, reserved) = asked?;
        let now = Instant::now();
        if entry.expires < now {
            entry.units = 0;
        }
        entry.units += reserved;
        // Units reserved here are prepaid, not spent: the client has them still.
        decision.remaining = decision.remaining.saturating_add(entry.units);
        entry.remaining = decision.remaining;
        entry.reset_after = decision.reset_after;
        entry.expires = now + RESERVATION_TTL;
        Ok(decision)
    }

    /// Now and then drops reservations nobody used lately.
    fn housekeeping(&self) {
        let asks = self.inner.asks.get().wrapping_add(1);
        self.inner.asks.set(asks);
        if asks % 1024 == 0 {
            let stale = Instant::now() - Duration::from_secs(1);
            self.inner
                .reservations
                .lock()
                .retain(|_, r| r.expires > stale);
        }
    }

    async fn ask_redis(
        &self,
        policy: &Policy,
        identity: &str,
        cost: u32,
    ) -> Result<Decision, StoreError> {
        let key = format!("{}rl:{}:{identity}", self.inner.prefix, policy.name);
        let period_ms = policy.period.as_millis().max(1) as i64;
        let reply: Vec<i64> = match policy.algorithm {
            Algorithm::Gcra => {
                let emission_us =
                    (policy.period.as_micros() as i64 / i64::from(policy.limit.max(1))).max(1);
                let tolerance_us = emission_us * i64::from(policy.burst());
                let args: [&dyn crate::redis_conn::ToRedisArgsDyn; 3] =
                    [&emission_us, &tolerance_us, &cost];
                self.inner
                    .conn
                    .eval(
                        &self.pool,
                        &self.inner.scripts[0],
                        &[&key],
                        &args,
                        Deadline::NONE,
                    )
                    .await?
            }
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                let script = &self.inner.scripts[if policy.algorithm == Algorithm::FixedWindow {
                    1
                } else {
                    2
                }];
                let args: [&dyn crate::redis_conn::ToRedisArgsDyn; 3] =
                    [&policy.limit, &period_ms, &cost];
                self.inner
                    .conn
                    .eval(&self.pool, script, &[&key], &args, Deadline::NONE)
                    .await?
            }
        };
        let [allowed, remaining, reset_ms, retry_ms] = reply[..] else {
            return Err(StoreError::Internal(format!(
                "unexpected limiter reply {reply:?}"
            )));
        };
        let millis = |ms: i64| Duration::from_millis(ms.max(0) as u64);
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_after: millis(reset_ms),
            retry_after: millis(retry_ms),
            source: Source::Redis,
        })
    }

    fn fallback(&self, policy: &Policy, identity: &str, cost: u32) -> Decision {
        let open = |allowed: bool, source| Decision {
            allowed,
            remaining: if allowed { policy.limit } else { 0 },
            reset_after: Duration::ZERO,
            retry_after: if allowed {
                Duration::ZERO
            } else {
                RETRY_REDIS_AFTER
            },
            source,
        };
        match policy.on_store_error {
            OnStoreError::Allow => open(true, Source::Unlimited),
            OnStoreError::Deny => open(false, Source::Refused),
            OnStoreError::Local => self.local(policy, identity, cost),
        }
    }

    /// The same policy in this process, with governor's GCRA.
    fn local(&self, policy: &Policy, identity: &str, cost: u32) -> Decision {
        let limiter = Rc::clone(
            self.inner
                .local
                .borrow_mut()
                .entry(policy.name.clone())
                .or_insert_with(|| {
                    let per_cell =
                        (policy.period / policy.limit.max(1)).max(Duration::from_nanos(1));
                    let burst = NonZeroU32::new(policy.burst()).unwrap_or(NonZeroU32::MIN);
                    let quota = Quota::with_period(per_cell)
                        .expect("a non-zero period")
                        .allow_burst(burst);
                    Rc::new(
                        RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                    )
                }),
        );
        // Keyed state grows with every identity seen; now and then forget the ones that are
        // whole again (it walks every key, so not on every decision).
        let checks = self.inner.local_checks.get().wrapping_add(1);
        self.inner.local_checks.set(checks);
        if checks % 1024 == 0 {
            limiter.retain_recent();
        }
        let cells = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&identity.to_owned(), cells) {
            Ok(Ok(snapshot)) => Decision {
                allowed: true,
                remaining: snapshot.remaining_burst_capacity(),
                reset_after: policy.period,
                retry_after: Duration::ZERO,
                source: Source::Local,
            },
            Ok(Err(not_until)) => Decision {
                allowed: false,
                remaining: 0,
                reset_after: policy.period,
                retry_after: not_until.wait_time_from(limiter.clock().now()),
                source: Source::Local,
            },
            Err(_) => Decision {
                allowed: false,
                remaining: 0,
                reset_after: policy.period,
                retry_after: policy.period,
                source: Source::Local,
            },
        }
    }
}

impl Handler<Check> for LimiterActor {
    type Result = ResponseFuture<Decision>;

    fn handle(&mut self, check: Check, _: &mut Self::Context) -> Self::Result {
        let ops = Ops {
            inner: Rc::clone(&self.backend.inner),
            pool: self.core.pool.clone(),
            decisions: self.core.metrics.ratelimit_decisions_total.clone(),
        };
        Box::pin(async move { ops.check(check).await })
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn every_spelling_of_a_path_has_one_canonical_form() {
        for spelling in [
            "/v1/kv/x",
            "/%761/kv/x",
            "/v%31/kv/x",
            "/%76%31/kv/x",
            "/v1/%6bv/x",
            "/v1/%6Bv/%78",
            "//v1/kv/x",
            "/v1//kv/x",
            "/./v1/kv/x",
            "/v1/./kv/x",
            "/a/../v1/kv/x",
            "/%2Fv1/kv/x",
            "/v1/kv/./x",
        ] {
            assert_eq!(canonical_path(spelling), "/v1/kv/x", "{spelling}");
        }
        assert_eq!(canonical_path("/v1/"), "/v1/");
        assert_eq!(canonical_path("/v1/x/.."), "/v1/");
        assert_eq!(canonical_path("/../.."), "/");
        assert_eq!(canonical_path("/%zz/%4"), "/%zz/%4");
        assert!(matches!(
            canonical_path("/v1/kv/x"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

crate::traced_messages!(LimiterActor: Check);

//! Configuration: layered TOML files and environment variables, validated at start-up.
//!
//! `load` merges the layers and remembers where each value came from, so that every error can
//! name the key, the value, its source and what was expected. `validate` checks ranges and the
//! consistency of the shutdown deadlines. Both failures exit with code 2.

mod load;
mod section;
mod validate;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_actors::cache::CacheConfig;
use steward_actors::db::DbConfig;
use steward_actors::jobs::WorkerConfig;
use steward_actors::ratelimit::Policy;
use steward_actors::store::HealthConfig;
use steward_actors::{Backoff, BreakerConfig, PoolConfig, ShutdownPlan, SupervisorConfig};

pub(crate) use load::redact_url;
pub use load::{load, Loaded, Origin, Schema, Sources, STEWARD_DEFAULTS};
pub(crate) use section::Declared;
pub use section::{Invalid, Section};
pub use validate::parse_net;

/// steward's own configuration: every section the framework reads. Every key is documented in
/// the built-in defaults (`src/config/default.toml`, compiled into the crate), which hold every
/// key and are also the list of known keys. A service's own sections are [`Section`]s beside
/// these.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[server]`: the HTTP listener and its limits.
    pub server: ServerSettings,
    /// `[redis]`: the Redis server and pool.
    pub redis: RedisSettings,
    /// `[postgres]`: the PostgreSQL server, pool and transactions.
    pub postgres: PostgresSettings,
    /// `[cache]`: the cache actor.
    pub cache: CacheSettings,
    /// `[locks]`: the lock actor.
    pub locks: LocksSettings,
    /// `[ratelimit]`: policies and trusted proxies.
    pub ratelimit: RateLimitSettings,
    /// `[workers]`: the job queue.
    pub workers: WorkersSettings,
    /// `[admin]`: the admin token.
    pub admin: AdminSettings,
    /// `[metrics]`: who may read `/metrics`.
    pub metrics: MetricsSettings,
    /// `[log]`: filter and format.
    pub log: LogSettings,
    /// `[health]`: store checks and readiness.
    pub health: HealthSettings,
    /// `[supervisor]`: restarts and escalation.
    pub supervisor: SupervisorConfig,
    /// `[shutdown]`: the phases' deadlines.
    pub shutdown: ShutdownSettings,
    /// `[breaker]`: when a store's circuit breaker opens, and for how long.
    pub breaker: BreakerConfig,
    /// `[shedding]`: the edge's adaptive concurrency limit.
    pub shedding: SheddingSettings,
    /// `[deadlines]`: how long a request may take, by path prefix.
    pub deadlines: DeadlineSettings,
    /// `[auth]`: who may call the service's routes.
    pub auth: AuthSettings,
    /// `[tracing]`: OpenTelemetry spans, exported over OTLP/HTTP.
    pub tracing: TracingSettings,
}

/// `[tracing]`; every key is described in `src/config/default.toml`. The standard `OTEL_*`
/// variables set these keys where they apply (see [`load`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// Whether spans are recorded and exported.
    pub enabled: bool,
    /// The collector's base URL; `/v1/traces` is appended.
    pub endpoint: String,
    /// The full URL of the traces endpoint, used as is; wins over `endpoint`.
    pub traces_endpoint: String,
    /// `key=value,key=value` headers sent with every export.
    pub headers: String,
    /// The service's name in the spans' resource; empty: the service's own name.
    pub service_name: String,
    /// Fraction of new traces recorded; a request that arrives in a trace follows its parent.
    pub sample_ratio: f64,
    /// Most spans in one export.
    pub batch_size: usize,
    /// Most spans waiting for export; past it spans are dropped and counted.
    pub queue_size: usize,
    /// Longest time a span waits before its batch is sent.
    #[serde(with = "steward_actors::duration")]
    pub batch_delay: Duration,
    /// Deadline of one export, and of the last flush at shutdown.
    #[serde(with = "steward_actors::duration")]
    pub export_timeout: Duration,
}

/// `[auth]`; every key is described in `src/config/default.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Whether the service's routes refuse callers without credentials.
    pub required: bool,
    /// Lets a production instance run with `required = false`, on purpose.
    pub open_in_production: bool,
    /// How long a verified credential is trusted before it is checked again.
    #[serde(with = "steward_actors::duration")]
    pub cache_ttl: Duration,
    /// Most verified credentials remembered per process.
    pub cache_size: usize,
    /// Failed authentications an address may make at once ...
    pub failure_burst: u32,
    /// ... and then one more per this long.
    #[serde(with = "steward_actors::duration")]
    pub failure_refill: Duration,
    /// `[auth.api_keys]`.
    pub api_keys: ApiKeySettings,
    /// `[auth.jwt]`.
    pub jwt: JwtSettings,
}

/// `[auth.api_keys]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Whether `X-Api-Key` is accepted (and `/admin/api-keys` mounted).
    pub enabled: bool,
    /// The key of the keyed hash API keys are stored under; resolved from `hash_key_file` too.
    pub hash_key: String,
    /// File holding `hash_key` (a mounted secret).
    pub hash_key_file: String,
    /// Most keys that may exist at once.
    pub max_keys: usize,
}

/// `[auth.jwt]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Whether `Authorization: Bearer <JWT>` is accepted.
    pub enabled: bool,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
    /// A PEM public key (RSA, P-256 or Ed25519).
    pub key_file: String,
    /// A JWKS document; the token's `kid` picks the key.
    pub jwks_file: String,
    /// An HS256 secret; resolved from `secret_file` too.
    pub secret: String,
    /// File holding the HS256 secret.
    pub secret_file: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "steward_actors::duration")]
    pub leeway: Duration,
}

/// `[shedding]`; every key is described in `config/default.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SheddingSettings {
    /// `false` admits every request.
    pub enabled: bool,
    /// The limit each route pattern starts with.
    pub initial_limit: usize,
    /// The limit never goes below this.
    pub min_limit: usize,
    /// ... nor above this.
    pub max_limit: usize,
    /// How many times its no-load latency a route may take before its limit shrinks ...
    pub tolerance: f64,
    /// ... plus this much.
    #[serde(with = "steward_actors::duration")]
    pub buffer: Duration,
    /// How often a route's limit is recomputed (with at least 10 requests seen).
    #[serde(with = "steward_actors::duration")]
    pub window: Duration,
    /// Path prefixes never shed, besides steward's own routes (health, metrics, admin).
    pub exempt: Vec<String>,
}

/// `[deadlines]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineSettings {
    /// The deadline of a request no prefix names; "0s" for none.
    #[serde(with = "steward_actors::duration")]
    pub default: Duration,
    /// Deadlines by path prefix; the longest matching prefix wins.
    pub routes: Vec<RouteDeadline>,
}

/// One `[[deadlines.routes]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDeadline {
    /// A path prefix, like `/v1/transfers`.
    pub prefix: String,
    /// How long requests under it may take.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
}

/// `[server]`; every key is described in `config/default.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Pending connections queued before accept.
    pub backlog: u32,
    /// Connections per worker (fitted to the descriptor limit at start-up).
    pub max_connections: usize,
    /// How long an idle keep-alive connection stays open.
    #[serde(with = "steward_actors::duration")]
    pub keep_alive: Duration,
    /// Deadline for the request head (408).
    #[serde(with = "steward_actors::duration")]
    pub client_request_timeout: Duration,
    /// Time a client gets to close its side.
    #[serde(with = "steward_actors::duration")]
    pub client_disconnect_timeout: Duration,
    /// Deadline for the whole body after the head (408).
    #[serde(with = "steward_actors::duration")]
    pub body_timeout: Duration,
    /// Largest request head in bytes (431).
    pub max_head_size: usize,
    /// Largest body in bytes (413).
    pub max_body_size: usize,
    /// Largest JSON body in bytes (413).
    pub max_json_size: usize,
    /// How often freed memory is handed back; zero turns it off.
    #[serde(with = "steward_actors::duration")]
    pub memory_trim_interval: Duration,
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` URL.
    pub url: String,
    /// Prefix of every key steward writes.
    pub key_prefix: String,
    /// Each Redis actor's pool.
    pub pool: PoolConfig,
}

/// `[postgres]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://` URL or libpq key-value string.
    pub url: String,
    /// Resolved from `password` or `password_file` by the loader; empty when neither is set.
    pub password: String,
    /// File holding the password (a mounted secret).
    pub password_file: String,
    /// Deadline of one query or transaction attempt, also the server's statement_timeout.
    #[serde(with = "steward_actors::duration")]
    pub query_timeout: Duration,
    /// Retries of a transaction aborted by a serialization failure or deadlock.
    pub tx_max_retries: u32,
    /// Delay between those retries.
    pub tx_backoff: Backoff,
    /// The database actor's pool.
    pub pool: PoolConfig,
}

/// `[cache]`: the cache actor.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Deadline of one Redis command of the cache.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    /// TTLs are spread by up to this fraction either way.
    pub ttl_jitter: f64,
    /// How long a "not found" is cached.
    #[serde(with = "steward_actors::duration")]
    pub negative_ttl: Duration,
}

/// `[locks]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocksSettings {
    /// Deadline of one Redis command of the lock actor.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
}

/// `[ratelimit]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Deadline of one Redis decision.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// The policies, all of which apply.
    pub policies: Vec<Policy>,
}

/// `[workers]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSettings {
    /// The queue's name.
    pub queue: String,
    /// Jobs run at once in this process.
    pub concurrency: usize,
    /// A job left unacknowledged this long is taken over.
    #[serde(with = "steward_actors::duration")]
    pub claim_idle: Duration,
    /// Pause between fetches while the queue is empty.
    #[serde(with = "steward_actors::duration")]
    pub poll_interval: Duration,
    /// Deadline of one run.
    #[serde(with = "steward_actors::duration")]
    pub job_timeout: Duration,
    /// Attempts of a job that asks for none.
    pub max_attempts: u32,
    /// Most jobs waiting at once.
    pub max_queued: u64,
    /// Most finished jobs whose documents are kept.
    pub max_finished: u64,
    /// Largest payload in bytes of JSON.
    pub max_payload_size: usize,
    /// How long a finished job's document is kept.
    #[serde(with = "steward_actors::duration")]
    pub status_ttl: Duration,
    /// How long a job's Idempotency-Key names it.
    #[serde(with = "steward_actors::duration")]
    pub idempotency_ttl: Duration,
    /// Deadline of one Redis command of the worker.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    /// Delay before a retry.
    pub retry_backoff: Backoff,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Resolved from `token` or `token_file`; empty means the admin routes are absent.
    pub token: String,
    /// File holding the token (a mounted secret).
    pub token_file: String,
}

/// `[metrics]`: who may read `/metrics`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` of a listener of its own for `/metrics`; empty serves it on the main one.
    pub listen: String,
    /// Whether `/metrics` on the main listener needs the admin token.
    pub require_token: bool,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Level or env_logger filter.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object a line, for log pipelines.
    Json,
}

/// `[health]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Time between a store actor's checks.
    #[serde(with = "steward_actors::duration")]
    pub interval: Duration,
    /// Deadline of one check or readiness ping.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    /// Whether readiness fails while Redis is down.
    pub require_redis: bool,
    /// How long readiness serves its last pings.
    #[serde(with = "steward_actors::duration")]
    pub ready_cache: Duration,
    /// Backoff between checks of a store that does not answer.
    pub reconnect: Backoff,
}

/// `[shutdown]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Wait after readiness turns 503, before draining HTTP.
    #[serde(with = "steward_actors::duration")]
    pub drain_delay: Duration,
    /// Deadline of the HTTP phase.
    #[serde(with = "steward_actors::duration")]
    pub http_timeout: Duration,
    /// Deadline of the workers phase.
    #[serde(with = "steward_actors::duration")]
    pub workers_timeout: Duration,
    /// Deadline of the stores phase.
    #[serde(with = "steward_actors::duration")]
    pub stores_timeout: Duration,
    /// Deadline of the whole sequence.
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    /// The orchestrator's grace period before SIGKILL.
    #[serde(with = "steward_actors::duration")]
    pub orchestrator_grace: Duration,
}

impl Settings {
    /// The shutdown sequence's deadlines.
    pub fn shutdown_plan(&self) -> ShutdownPlan {
        let s = &self.shutdown;
        ShutdownPlan {
            drain_delay: s.drain_delay,
            http_timeout: s.http_timeout,
            workers_timeout: s.workers_timeout,
            stores_timeout: s.stores_timeout,
            total: s.timeout,
        }
    }

    /// How store actors check their store.
    pub fn store_health(&self) -> HealthConfig {
        HealthConfig {
            interval: self.health.interval,
            timeout: self.health.timeout,
            backoff: self.health.reconnect,
        }
    }

    /// The database actor's settings.
    pub fn db_config(&self) -> DbConfig {
        DbConfig {
            query_timeout: self.postgres.query_timeout,
            tx_max_retries: self.postgres.tx_max_retries,
            tx_backoff: self.postgres.tx_backoff,
        }
    }

    /// The cache actor's settings.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            timeout: self.cache.timeout,
            ttl_jitter: self.cache.ttl_jitter,
            negative_ttl: self.cache.negative_ttl,
        }
    }

    /// The job worker's settings.
    pub fn worker_config(&self) -> WorkerConfig {
        let w = &self.workers;
        WorkerConfig {
            queue: w.queue.clone(),
            concurrency: w.concurrency,
            claim_idle: w.claim_idle,
            poll_interval: w.poll_interval,
            job_timeout: w.job_timeout,
            status_ttl: w.status_ttl,
            max_queued: w.max_queued,
            max_finished: w.max_finished,
            max_payload_size: w.max_payload_size,
            idempotency_ttl: w.idempotency_ttl,
            retry_backoff: w.retry_backoff,
            redis_timeout: w.timeout,
        }
    }

    /// The admin token, or `None` when the admin routes are disabled.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.as_str()).filter(|token| !token.is_empty())
    }
}

/// A configuration that cannot be used, with everything an operator needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key, such as `server.port`; empty for errors about a whole file.
    pub key: String,
    /// The offending value as written (secrets redacted), if there is one.
    pub value: Option<String>,
    /// Where the value came from.
    pub origin: Origin,
    /// What was expected instead.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: ")?;
        match (&self.key.is_empty(), &self.value) {
            (true, _) => write!(f, "{}", self.origin)?,
            (false, Some(value)) => write!(f, "{} = {} (from {})", self.key, value, self.origin)?,
            (false, None) => write!(f, "{} (from {})", self.key, self.origin)?,
        }
        write!(f, ": {}", self.expected)
    }
}

impl std::error::Error for ConfigError {}

//! Configuration: layered TOML files and environment variables, validated at start-up.
//!
//! `load` merges the layers and remembers where each value came from, so that every error can
//! name the key, the value, its source and what was expected. `validate` checks ranges and the
//! consistency of the shutdown deadlines. Both failures exit with code 2.

mod load;
mod validate;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_actors::cache::CacheConfig;
use steward_actors::db::DbConfig;
use steward_actors::jobs::WorkerConfig;
use steward_actors::ratelimit::Policy;
use steward_actors::store::HealthConfig;
use steward_actors::{Backoff, PoolConfig, ShutdownPlan, SupervisorConfig};

pub use load::{load, Loaded, Origin, Sources};
pub use validate::parse_net;

/// The whole configuration of one steward instance. Every key is documented in
/// `config/default.toml`, which must hold every key (it is also the list of known keys).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub postgres: PostgresSettings,
    pub cache: CacheSettings,
    pub locks: LocksSettings,
    pub ratelimit: RateLimitSettings,
    pub workers: WorkersSettings,
    pub idempotency: IdempotencySettings,
    pub admin: AdminSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub health: HealthSettings,
    pub supervisor: SupervisorConfig,
    pub shutdown: ShutdownSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub backlog: u32,
    pub max_connections: usize,
    #[serde(with = "steward_actors::duration")]
    pub keep_alive: Duration,
    #[serde(with = "steward_actors::duration")]
    pub client_request_timeout: Duration,
    #[serde(with = "steward_actors::duration")]
    pub client_disconnect_timeout: Duration,
    #[serde(with = "steward_actors::duration")]
    pub body_timeout: Duration,
    pub max_head_size: usize,
    pub max_body_size: usize,
    pub max_json_size: usize,
    #[serde(with = "steward_actors::duration")]
    pub memory_trim_interval: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub pool: PoolConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: String,
    /// Resolved from `password` or `password_file` by the loader; empty when neither is set.
    pub password: String,
    pub password_file: String,
    #[serde(with = "steward_actors::duration")]
    pub query_timeout: Duration,
    pub tx_max_retries: u32,
    pub tx_backoff: Backoff,
    pub pool: PoolConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    pub ttl_jitter: f64,
    #[serde(with = "steward_actors::duration")]
    pub negative_ttl: Duration,
    #[serde(with = "steward_actors::duration")]
    pub kv_default_ttl: Duration,
    pub max_value_size: usize,
    #[serde(with = "steward_actors::duration")]
    pub account_ttl: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocksSettings {
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    pub trusted_proxies: Vec<String>,
    pub policies: Vec<Policy>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSettings {
    pub queue: String,
    pub concurrency: usize,
    #[serde(with = "steward_actors::duration")]
    pub claim_idle: Duration,
    #[serde(with = "steward_actors::duration")]
    pub poll_interval: Duration,
    #[serde(with = "steward_actors::duration")]
    pub job_timeout: Duration,
    pub max_attempts: u32,
    pub max_queued: u64,
    pub max_finished: u64,
    pub max_payload_size: usize,
    #[serde(with = "steward_actors::duration")]
    pub status_ttl: Duration,
    #[serde(with = "steward_actors::duration")]
    pub idempotency_ttl: Duration,
    #[serde(with = "steward_actors::duration")]
    pub statement_ttl: Duration,
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    pub retry_backoff: Backoff,
}

/// `[idempotency]`: how long transfers' idempotency keys are kept.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    #[serde(with = "steward_actors::duration")]
    pub retention: Duration,
    #[serde(with = "steward_actors::duration")]
    pub prune_interval: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Resolved from `token` or `token_file`; empty means the admin routes are absent.
    pub token: String,
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    #[serde(with = "steward_actors::duration")]
    pub interval: Duration,
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    pub require_redis: bool,
    #[serde(with = "steward_actors::duration")]
    pub ready_cache: Duration,
    pub reconnect: Backoff,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    #[serde(with = "steward_actors::duration")]
    pub drain_delay: Duration,
    #[serde(with = "steward_actors::duration")]
    pub http_timeout: Duration,
    #[serde(with = "steward_actors::duration")]
    pub workers_timeout: Duration,
    #[serde(with = "steward_actors::duration")]
    pub stores_timeout: Duration,
    #[serde(with = "steward_actors::duration")]
    pub timeout: Duration,
    #[serde(with = "steward_actors::duration")]
    pub orchestrator_grace: Duration,
}

impl Settings {
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

    pub fn store_health(&self) -> HealthConfig {
        HealthConfig {
            interval: self.health.interval,
            timeout: self.health.timeout,
            backoff: self.health.reconnect,
        }
    }

    pub fn db_config(&self) -> DbConfig {
        DbConfig {
            query_timeout: self.postgres.query_timeout,
            tx_max_retries: self.postgres.tx_max_retries,
            tx_backoff: self.postgres.tx_backoff,
        }
    }

    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            timeout: self.cache.timeout,
            ttl_jitter: self.cache.ttl_jitter,
            negative_ttl: self.cache.negative_ttl,
        }
    }

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

//! Range and consistency checks that types alone cannot express.

use std::fmt::Display;
use std::time::Duration;

use steward_actors::managers::{postgres_manager, redis_manager};
use steward_actors::ratelimit::canonical_path;
use steward_actors::PoolConfig;

use super::load::redact_url;
use super::{ConfigError, Origin, Settings};
use crate::service::Backends;
use crate::telemetry::validate_filter;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The shortest admin token accepted: 128 bits of a random hex token.
const MIN_ADMIN_TOKEN: usize = 16;

/// Builds errors that name the key, its value and where the value came from.
struct Checker<'a> {
    origin: &'a dyn Fn(&str) -> Origin,
}

impl Checker<'_> {
    fn fail(&self, key: &str, value: &dyn Display, expected: String) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            value: Some(value.to_string()),
            origin: (self.origin)(key),
            expected,
        }
    }

    fn within(&self, key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
        if (min..=max).contains(&value) {
            return Ok(());
        }
        Err(self.fail(key, &value, format!("an integer from {min} to {max}")))
    }

    fn lasting(
        &self,
        key: &str,
        value: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<(), ConfigError> {
        if (min..=max).contains(&value) {
            return Ok(());
        }
        let expected = format!("a duration from {} to {}", shown(min), shown(max));
        Err(self.fail(key, &shown(value), expected))
    }

    fn pool(&self, section: &str, pool: &PoolConfig) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{section}.{name}");
        self.within(&key("max_size"), pool.max_size as usize, 1, 1_000)?;
        self.within(
            &key("min_idle"),
            pool.min_idle as usize,
            0,
            pool.max_size as usize,
        )?;
        self.lasting(
            &key("connection_timeout"),
            pool.connection_timeout,
            MS,
            MINUTE,
        )?;
        self.lasting(&key("max_lifetime"), pool.max_lifetime, SECOND, DAY)?;
        self.lasting(&key("idle_timeout"), pool.idle_timeout, SECOND, DAY)
    }
}

/// Checks `settings`; `origin` tells where a key's value came from. One function a section;
/// the first error found is returned.
pub(super) fn validate(
    settings: &Settings,
    backends: Backends,
    production: bool,
    origin: &dyn Fn(&str) -> Origin,
) -> Result<(), ConfigError> {
    let check = Checker { origin };
    auth(&check, settings, backends, production)?;
    if !backends.redis && !settings.ratelimit.policies.is_empty() {
        return Err(check.fail(
            "ratelimit.policies",
            &format!("{} policies", settings.ratelimit.policies.len()),
            "none: rate limits are kept in Redis, which this service does not use".into(),
        ));
    }
    let sections: [Section; 17] = [
        server, redis, postgres, cache, locks, ratelimit, workers, admin, metrics, log, health,
        supervisor, shutdown, breaker, shedding, deadlines, tracing,
    ];
    sections
        .iter()
        .try_for_each(|section| section(&check, settings))
}

/// The checks of one section.
type Section = fn(&Checker, &Settings) -> Result<(), ConfigError>;

/// `[server]`.
fn server(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let server = &settings.server;
    if server.host.trim().is_empty() {
        return Err(check.fail("server.host", &"\"\"", "a host name or IP address".into()));
    }
    check.within("server.workers", server.workers, 0, 256)?;
    check.within("server.backlog", server.backlog as usize, 1, 65_535)?;
    check.within(
        "server.max_connections",
        server.max_connections,
        1,
        1_000_000,
    )?;
    check.lasting("server.keep_alive", server.keep_alive, Duration::ZERO, HOUR)?;
    check.lasting(
        "server.client_request_timeout",
        server.client_request_timeout,
        MS,
        HOUR,
    )?;
    check.lasting("server.body_timeout", server.body_timeout, MS, HOUR)?;
    check.lasting(
        "server.client_disconnect_timeout",
        server.client_disconnect_timeout,
        MS,
        HOUR,
    )?;
    check.within("server.max_body_size", server.max_body_size, 1, 1 << 30)?;
    check.within(
        "server.max_head_size",
        server.max_head_size,
        1024,
        128 * 1024,
    )?;
    check.within("server.max_json_size", server.max_json_size, 1, 1 << 30)?;
    check.lasting(
        "server.memory_trim_interval",
        server.memory_trim_interval,
        Duration::ZERO,
        HOUR,
    )?;
    Ok(())
}

/// `[redis]`.
fn redis(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let redis = &settings.redis;
    redis_manager(&redis.url).map_err(|expected| {
        check.fail(
            "redis.url",
            &format!("{:?}", redact_url(&redis.url)),
            expected.to_string(),
        )
    })?;
    if redis.key_prefix.len() > 64 || redis.key_prefix.chars().any(char::is_whitespace) {
        let value = format!("{:?}", redis.key_prefix);
        return Err(check.fail(
            "redis.key_prefix",
            &value,
            "at most 64 characters, no white space".into(),
        ));
    }
    check.pool("redis.pool", &redis.pool)?;
    Ok(())
}

/// `[postgres]`.
fn postgres(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let postgres = &settings.postgres;
    let timeouts = (postgres.pool.connection_timeout, postgres.query_timeout);
    postgres_manager(&postgres.url, None, timeouts.0, timeouts.1).map_err(|expected| {
        check.fail(
            "postgres.url",
            &format!("{:?}", redact_url(&postgres.url)),
            expected.to_string(),
        )
    })?;
    check.pool("postgres.pool", &postgres.pool)?;
    check.lasting(
        "postgres.query_timeout",
        postgres.query_timeout,
        MS,
        10 * MINUTE,
    )?;
    check.within(
        "postgres.tx_max_retries",
        postgres.tx_max_retries as usize,
        0,
        100,
    )?;
    check.lasting(
        "postgres.tx_backoff.min",
        postgres.tx_backoff.min,
        MS,
        MINUTE,
    )?;
    check.lasting(
        "postgres.tx_backoff.max",
        postgres.tx_backoff.max,
        postgres.tx_backoff.min,
        MINUTE,
    )?;
    Ok(())
}

/// `[cache]`.
fn cache(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let cache = &settings.cache;
    check.lasting("cache.timeout", cache.timeout, MS, MINUTE)?;
    if !(0.0..=0.5).contains(&cache.ttl_jitter) {
        return Err(check.fail(
            "cache.ttl_jitter",
            &cache.ttl_jitter,
            "a fraction from 0.0 to 0.5".into(),
        ));
    }
    check.lasting(
        "cache.negative_ttl",
        cache.negative_ttl,
        Duration::ZERO,
        DAY,
    )?;
    Ok(())
}

/// `[locks]`.
fn locks(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    check.lasting("locks.timeout", settings.locks.timeout, MS, MINUTE)?;
    Ok(())
}

/// `[ratelimit]`: the policies and trusted proxies.
fn ratelimit(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let ratelimit = &settings.ratelimit;
    check.lasting("ratelimit.timeout", ratelimit.timeout, MS, MINUTE)?;
    for proxy in &ratelimit.trusted_proxies {
        if parse_net(proxy).is_none() {
            let expected = "addresses or CIDRs like \"10.0.0.0/8\"".to_owned();
            return Err(check.fail("ratelimit.trusted_proxies", &format!("{proxy:?}"), expected));
        }
    }
    let mut names = std::collections::HashSet::new();
    for policy in &ratelimit.policies {
        let value = format!("{:?}", policy.name);
        let problem = if policy.name.is_empty()
            || !policy
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Some("policy names of letters, digits, '_' and '-'".to_owned())
        } else if !names.insert(policy.name.as_str()) {
            Some("policy names that are unique".to_owned())
        } else if !policy.prefix.starts_with('/') || canonical_path(&policy.prefix) != policy.prefix
        {
            Some(format!(
                "policy {value}: a prefix starting with '/', without percent-encoding, '.' or '..' segments or '//'"
            ))
        } else if policy.limit == 0 || policy.burst() == 0 || policy.cost == 0 {
            Some(format!(
                "policy {value}: limit, burst and cost of at least 1"
            ))
        } else if policy.cost > policy.burst().max(policy.limit) {
            Some(format!("policy {value}: a cost no larger than its burst"))
        } else if policy.period < MS || policy.period > DAY {
            Some(format!("policy {value}: a period from 1ms to 1 day"))
        } else {
            None
        };
        if let Some(expected) = problem {
            return Err(check.fail("ratelimit.policies", &value, expected));
        }
    }
    Ok(())
}

/// `[workers]`.
fn workers(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let workers = &settings.workers;
    if workers.queue.is_empty()
        || !workers
            .queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        let expected = "a name of letters, digits, '_' and '-'".to_owned();
        return Err(check.fail("workers.queue", &format!("{:?}", workers.queue), expected));
    }
    check.within("workers.concurrency", workers.concurrency, 1, 10_000)?;
    check.within("workers.max_attempts", workers.max_attempts as usize, 1, 25)?;
    check.lasting("workers.claim_idle", workers.claim_idle, 100 * MS, DAY)?;
    check.lasting("workers.poll_interval", workers.poll_interval, MS, MINUTE)?;
    check.lasting("workers.job_timeout", workers.job_timeout, MS, DAY)?;
    check.lasting("workers.status_ttl", workers.status_ttl, SECOND, 30 * DAY)?;
    check.within(
        "workers.max_queued",
        workers.max_queued as usize,
        1,
        10_000_000,
    )?;
    check.within(
        "workers.max_finished",
        workers.max_finished as usize,
        1,
        10_000_000,
    )?;
    check.within(
        "workers.max_payload_size",
        workers.max_payload_size,
        2,
        1 << 24,
    )?;
    check.lasting(
        "workers.idempotency_ttl",
        workers.idempotency_ttl,
        SECOND,
        30 * DAY,
    )?;
    check.lasting("workers.timeout", workers.timeout, MS, MINUTE)?;
    check.lasting(
        "workers.retry_backoff.min",
        workers.retry_backoff.min,
        MS,
        DAY,
    )?;
    check.lasting(
        "workers.retry_backoff.max",
        workers.retry_backoff.max,
        workers.retry_backoff.min,
        DAY,
    )?;
    Ok(())
}

/// `[admin]`.
fn admin(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let token = &settings.admin.token;
    if !token.is_empty() && token.len() < MIN_ADMIN_TOKEN {
        return Err(check.fail(
            "admin.token",
            &"<redacted>",
            format!("at least {MIN_ADMIN_TOKEN} bytes (a random token: openssl rand -hex 32), or empty to turn the admin routes off"),
        ));
    }
    Ok(())
}

/// The shortest API-key hash key and HS256 secret accepted: 256 bits.
const MIN_AUTH_SECRET: usize = 32;

/// `[auth]`: the ranges, a scheme for `required`, the keys each scheme needs, and no open
/// production instance unless a second key says so.
fn auth(
    check: &Checker,
    settings: &Settings,
    backends: Backends,
    production: bool,
) -> Result<(), ConfigError> {
    let auth = &settings.auth;
    check.lasting("auth.cache_ttl", auth.cache_ttl, Duration::ZERO, MINUTE)?;
    check.within("auth.cache_size", auth.cache_size, 0, 1_000_000)?;
    check.within("auth.failure_burst", auth.failure_burst as usize, 1, 10_000)?;
    check.lasting("auth.failure_refill", auth.failure_refill, MS, HOUR)?;
    if production && !auth.required && !auth.open_in_production {
        return Err(check.fail(
            "auth.required",
            &false,
            "true when STEWARD_ENV=production; an instance behind a gateway that authenticates every request sets auth.open_in_production = true as well".into(),
        ));
    }
    let (keys, jwt) = (&auth.api_keys, &auth.jwt);
    // API keys live in Redis: a service without it has only the JWT scheme.
    let api_keys = keys.enabled && backends.redis;
    if auth.required && !api_keys && !jwt.enabled {
        return Err(check.fail(
            "auth.required",
            &true,
            "a scheme to authenticate with: auth.api_keys.enabled (API keys need Redis) or auth.jwt.enabled; or auth.required = false".into(),
        ));
    }
    if api_keys {
        if keys.hash_key.len() < MIN_AUTH_SECRET {
            let shown = if keys.hash_key.is_empty() {
                "\"\""
            } else {
                "<redacted>"
            };
            return Err(check.fail(
                "auth.api_keys.hash_key",
                &shown,
                format!("at least {MIN_AUTH_SECRET} bytes, the same on every replica (openssl rand -hex 32; STEWARD__AUTH__API_KEYS__HASH_KEY or hash_key_file), or auth.api_keys.enabled = false"),
            ));
        }
        check.within("auth.api_keys.max_keys", keys.max_keys, 1, 1_000_000)?;
    }
    if jwt.enabled {
        for (key, value) in [
            ("auth.jwt.issuer", &jwt.issuer),
            ("auth.jwt.audience", &jwt.audience),
        ] {
            if value.is_empty() {
                let expected = "the value every token must carry (a token for another issuer or audience is refused)";
                return Err(check.fail(key, &"\"\"", expected.into()));
            }
        }
        let sources = [&jwt.key_file, &jwt.jwks_file, &jwt.secret]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
        if sources != 1 {
            return Err(check.fail(
                "auth.jwt.key_file",
                &format!("{:?}", jwt.key_file),
                format!("exactly one of auth.jwt.key_file, auth.jwt.jwks_file and auth.jwt.secret (or secret_file); {sources} are set"),
            ));
        }
        if !jwt.secret.is_empty() && jwt.secret.len() < MIN_AUTH_SECRET {
            return Err(check.fail(
                "auth.jwt.secret",
                &"<redacted>",
                format!("at least {MIN_AUTH_SECRET} bytes (RFC 7518 asks for a key as long as the hash)"),
            ));
        }
        check.lasting("auth.jwt.leeway", jwt.leeway, Duration::ZERO, 5 * MINUTE)?;
    }
    Ok(())
}

/// `[metrics]`.
fn metrics(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let metrics = &settings.metrics;
    if !metrics.listen.is_empty() && metrics.listen.parse::<std::net::SocketAddr>().is_err() {
        let value = format!("{:?}", metrics.listen);
        let expected = "host:port, like \"0.0.0.0:9090\", or empty".to_owned();
        return Err(check.fail("metrics.listen", &value, expected));
    }
    if metrics.require_token && settings.admin.token.is_empty() {
        return Err(check.fail(
            "metrics.require_token",
            &true,
            "false while admin.token is empty (the token it asks for)".into(),
        ));
    }
    Ok(())
}

/// `[tracing]`: checked whether or not it is enabled, so that turning it on later in an
/// incident cannot fail on a value nobody looked at.
fn tracing(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let tracing = &settings.tracing;
    for (key, url) in [
        ("tracing.endpoint", &tracing.endpoint),
        ("tracing.traces_endpoint", &tracing.traces_endpoint),
    ] {
        let bad = if url.is_empty() {
            key == "tracing.endpoint"
        } else {
            !(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(char::is_whitespace)
        };
        if bad {
            return Err(check.fail(
                key,
                &format!("{url:?}"),
                "an http:// or https:// URL of an OTLP/HTTP collector".into(),
            ));
        }
    }
    if crate::trace::parse_headers(&tracing.headers).is_none() {
        return Err(check.fail(
            "tracing.headers",
            &"(not shown: it may hold credentials)",
            "key=value pairs separated by commas, with header-safe names and values".into(),
        ));
    }
    if !(0.0..=1.0).contains(&tracing.sample_ratio) {
        return Err(check.fail(
            "tracing.sample_ratio",
            &tracing.sample_ratio,
            "a fraction from 0 to 1".into(),
        ));
    }
    check.within("tracing.queue_size", tracing.queue_size, 1, 1_000_000)?;
    check.within(
        "tracing.batch_size",
        tracing.batch_size,
        1,
        tracing.queue_size,
    )?;
    for (key, value) in [
        ("tracing.batch_delay", tracing.batch_delay),
        ("tracing.export_timeout", tracing.export_timeout),
    ] {
        if value.is_zero() || value > Duration::from_secs(60) {
            return Err(check.fail(
                key,
                &humantime::format_duration(value),
                "more than 0s and at most 60s".into(),
            ));
        }
    }
    Ok(())
}

/// `[log]`.
fn log(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    if let Err(expected) = validate_filter(&settings.log.level) {
        return Err(check.fail("log.level", &format!("{:?}", settings.log.level), expected));
    }
    Ok(())
}

/// `[health]`.
fn health(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let health = &settings.health;
    check.lasting("health.interval", health.interval, 10 * MS, HOUR)?;
    check.lasting("health.timeout", health.timeout, 10 * MS, MINUTE)?;
    check.lasting(
        "health.ready_cache",
        health.ready_cache,
        Duration::ZERO,
        MINUTE,
    )?;
    check.lasting("health.reconnect.min", health.reconnect.min, MS, HOUR)?;
    check.lasting(
        "health.reconnect.max",
        health.reconnect.max,
        health.reconnect.min,
        HOUR,
    )?;
    Ok(())
}

/// `[supervisor]`.
fn supervisor(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let supervisor = &settings.supervisor;
    let max_restarts = supervisor.intensity.max_restarts as usize;
    check.within("supervisor.intensity.max_restarts", max_restarts, 0, 10_000)?;
    check.lasting(
        "supervisor.intensity.window",
        supervisor.intensity.window,
        MS,
        DAY,
    )?;
    check.lasting("supervisor.backoff.min", supervisor.backoff.min, MS, HOUR)?;
    check.lasting(
        "supervisor.backoff.max",
        supervisor.backoff.max,
        supervisor.backoff.min,
        HOUR,
    )?;
    check.lasting("supervisor.reset_after", supervisor.reset_after, MS, DAY)?;
    Ok(())
}

/// `[shutdown]`: each phase, and the whole sequence against the orchestrator's grace period.
fn shutdown(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let shutdown = &settings.shutdown;
    let ten_minutes = 10 * MINUTE;
    check.lasting(
        "shutdown.drain_delay",
        shutdown.drain_delay,
        Duration::ZERO,
        ten_minutes,
    )?;
    check.lasting(
        "shutdown.http_timeout",
        shutdown.http_timeout,
        MS,
        ten_minutes,
    )?;
    check.lasting(
        "shutdown.workers_timeout",
        shutdown.workers_timeout,
        MS,
        ten_minutes,
    )?;
    check.lasting(
        "shutdown.stores_timeout",
        shutdown.stores_timeout,
        MS,
        ten_minutes,
    )?;
    check.lasting(
        "shutdown.orchestrator_grace",
        shutdown.orchestrator_grace,
        MS,
        HOUR,
    )?;
    let phases = shutdown.drain_delay
        + shutdown.http_timeout
        + shutdown.workers_timeout
        + shutdown.stores_timeout;
    if shutdown.timeout <= phases {
        let expected = format!(
            "more than drain_delay + http_timeout + workers_timeout + stores_timeout = {}",
            shown(phases)
        );
        return Err(check.fail("shutdown.timeout", &shown(shutdown.timeout), expected));
    }
    if shutdown.timeout >= shutdown.orchestrator_grace {
        let expected = format!(
            "less than shutdown.orchestrator_grace = {} (from {}), or the orchestrator kills the process mid-shutdown",
            shown(shutdown.orchestrator_grace),
            (check.origin)("shutdown.orchestrator_grace")
        );
        return Err(check.fail("shutdown.timeout", &shown(shutdown.timeout), expected));
    }
    Ok(())
}

/// `[breaker]`.
fn breaker(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let breaker = &settings.breaker;
    let failures = breaker.consecutive_failures as usize;
    check.within("breaker.consecutive_failures", failures, 1, 1_000)?;
    if !(breaker.failure_ratio > 0.0 && breaker.failure_ratio <= 1.0) {
        let value = breaker.failure_ratio;
        let expected = "a share of calls above 0 and at most 1".to_owned();
        return Err(check.fail("breaker.failure_ratio", &value, expected));
    }
    check.within(
        "breaker.min_calls",
        breaker.min_calls as usize,
        1,
        1_000_000,
    )?;
    check.lasting("breaker.window", breaker.window, SECOND, HOUR)?;
    check.lasting("breaker.open_for", breaker.open_for, MS, HOUR)?;
    check.lasting(
        "breaker.max_open_for",
        breaker.max_open_for,
        breaker.open_for,
        HOUR,
    )
}

/// `[shedding]`.
fn shedding(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let shedding = &settings.shedding;
    check.within("shedding.min_limit", shedding.min_limit, 1, 100_000)?;
    check.within(
        "shedding.max_limit",
        shedding.max_limit,
        shedding.min_limit,
        100_000,
    )?;
    check.within(
        "shedding.initial_limit",
        shedding.initial_limit,
        shedding.min_limit,
        shedding.max_limit,
    )?;
    if !(1.0..=100.0).contains(&shedding.tolerance) {
        let expected = "a factor from 1 to 100".to_owned();
        return Err(check.fail("shedding.tolerance", &shedding.tolerance, expected));
    }
    check.lasting("shedding.buffer", shedding.buffer, Duration::ZERO, MINUTE)?;
    check.lasting("shedding.window", shedding.window, MS, MINUTE)?;
    for prefix in &shedding.exempt {
        if !prefix.starts_with('/') {
            let expected = "path prefixes starting with '/'".to_owned();
            return Err(check.fail("shedding.exempt", &format!("{prefix:?}"), expected));
        }
    }
    Ok(())
}

/// `[deadlines]`.
fn deadlines(check: &Checker, settings: &Settings) -> Result<(), ConfigError> {
    let deadlines = &settings.deadlines;
    check.lasting("deadlines.default", deadlines.default, Duration::ZERO, HOUR)?;
    for route in &deadlines.routes {
        if !route.prefix.starts_with('/') {
            let expected = "route prefixes starting with '/'".to_owned();
            return Err(check.fail("deadlines.routes", &format!("{:?}", route.prefix), expected));
        }
        if !(MS..=HOUR).contains(&route.timeout) {
            let expected = format!("prefix {:?}: a timeout from 1ms to 1h", route.prefix);
            return Err(check.fail("deadlines.routes", &shown(route.timeout), expected));
        }
    }
    Ok(())
}

/// An address or a CIDR; a bare address covers itself alone.
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

fn shown(duration: Duration) -> String {
    format!("\"{}\"", steward_actors::duration::format(duration))
}

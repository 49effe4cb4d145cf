//! `doctor`: checks what operators get wrong, one line each (✓, or ✗ with the fix), so that a
//! deployment is checked before it takes traffic rather than debugged after.
//!
//! The checks: the configuration loads (done before this runs: a configuration that does not
//! load exits 2 with the key at fault); each store the service uses answers, with its version
//! and round-trip time; the migrations are applied; Redis' `maxmemory-policy` cannot evict
//! what must not go; this host's clock agrees with Redis' (rate limits and locks run on Redis'
//! clock, job schedules on both); and, given a Kubernetes manifest, that its grace period,
//! preStop pause and probes fit the shutdown sequence.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bb8::ManageConnection;
use serde_json::Value;
use steward_actors::managers::{redis_manager, ManagerError};
use steward_actors::migrations::Migration;

use crate::app::postgres_manager_for;
use crate::config::{redact_url, Settings, ShutdownSettings};
use crate::service::Service;

/// How far this host's clock may be from Redis' before it shows in rate limits and schedules.
const MAX_CLOCK_OFFSET: Duration = Duration::from_millis(500);

/// How long a store gets to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// One checked thing: `✓ what`, or `✗ what — fix`.
pub(crate) struct Line {
    ok: bool,
    what: String,
    fix: Option<String>,
}

impl Line {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
            fix: None,
        }
    }

    fn bad(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fix {
            None => write!(f, "✓ {}", self.what),
            Some(fix) => write!(f, "✗ {} — fix: {fix}", self.what),
        }
    }
}

/// Runs every check (the store checks when `stores`), prints one line each, and answers the
/// exit code: 0 when all pass, 1 otherwise.
pub(crate) fn run(
    service: &Service,
    settings: &Settings,
    env: &str,
    stores: bool,
    manifest: Option<&Path>,
) -> i32 {
    let mut lines = vec![Line::ok(format!("configuration loads (STEWARD_ENV={env})"))];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("doctor: cannot start a runtime");
        return 1;
    };
    runtime.block_on(async {
        if stores && service.backends.redis {
            lines.extend(redis(settings).await);
        }
        if stores && service.backends.postgres {
            lines.extend(postgres(settings, service.migrations).await);
        }
    });
    if let Some(path) = manifest {
        lines.extend(manifest_checks(path, &settings.shutdown));
    }
    for line in &lines {
        println!("{line}");
    }
    i32::from(lines.iter().any(|line| !line.ok))
}

/// `milliseconds` of a duration, for the lines.
fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

async fn redis(settings: &Settings) -> Vec<Line> {
    let url = redact_url(&settings.redis.url);
    let connecting =
        redis_manager(&settings.redis.url).map(|manager| async move { manager.connect().await });
    let mut conn = match connect("Redis", &url, "redis.url", connecting, ToString::to_string).await
    {
        Ok(conn) => conn,
        Err(line) => return vec![line],
    };
    let started = Instant::now();
    let info: Result<String, _> = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await;
    let rtt = started.elapsed();
    let Ok(info) = info else {
        let what = format!("Redis at {url} refuses INFO");
        return vec![Line::bad(what, "check the credentials in redis.url")];
    };
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("of unknown version")
        .trim()
        .to_owned();
    let mut lines = vec![Line::ok(format!(
        "Redis {version} answers at {url} in {}",
        ms(rtt)
    ))];
    lines.push(eviction(&mut conn, &settings.redis.key_prefix).await);
    lines.push(clock(&mut conn).await);
    lines
}

/// Whether Redis' eviction policy can drop what steward keeps there and must not lose.
async fn eviction(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Line {
    let read = async {
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(conn)
            .await?;
        let limit: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(conn)
            .await?;
        Ok::<_, redis::RedisError>((policy.get(1).cloned(), limit.get(1).cloned()))
    };
    let (Some(policy), limit) =
        (match read.await {
            Ok(read) => read,
            Err(error) => return Line::bad(
                format!("cannot read Redis' maxmemory-policy ({error})"),
                "check it by hand (managed Redis often hides CONFIG): it must be volatile-lru or \
                 volatile-lfu",
            ),
        })
    else {
        return Line::bad(
            "Redis answers no maxmemory-policy",
            "set maxmemory-policy volatile-lru",
        );
    };
    let limit = limit.unwrap_or_default();
    let bounded = !matches!(limit.as_str(), "" | "0");
    let at_risk = format!(
        "held locks and the fencing counter ({prefix}lock:*), rate-limit windows ({prefix}rl:*), \
         queued jobs and their state ({prefix}jobs:*, {prefix}job:*), the API keys \
         ({prefix}auth:api-keys: every caller with a key would get 401)"
    );
    let fix = "CONFIG SET maxmemory-policy volatile-lru (and in redis.conf)";
    match policy.as_str() {
        "volatile-lru" | "volatile-lfu" => Line::ok(format!(
            "Redis maxmemory-policy {policy}: only keys with a TTL are evicted, the least used \
             first (cache entries before locks in use)"
        )),
        "noeviction" if !bounded => Line::ok(
            "Redis maxmemory-policy noeviction without maxmemory: nothing is evicted (memory is \
             bounded by the host only)",
        ),
        "noeviction" => Line::bad(
            format!(
                "Redis maxmemory-policy noeviction with maxmemory {limit}: once full, every write \
                 fails (cache fills, lock acquisitions, job enqueues answer 503)"
            ),
            fix,
        ),
        policy if policy.starts_with("allkeys-") => Line::bad(
            format!("Redis maxmemory-policy {policy} can evict any key: {at_risk}"),
            fix,
        ),
        policy => Line::bad(
            format!(
                "Redis maxmemory-policy {policy} evicts keys with a TTL regardless of use: held \
                 locks ({prefix}lock:*) and rate-limit windows ({prefix}rl:*) can go before cache \
                 entries"
            ),
            fix,
        ),
    }
}

/// The offset between this host's clock and Redis', corrected for half the round trip.
async fn clock(conn: &mut redis::aio::MultiplexedConnection) -> Line {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    };
    let before = now();
    let time: Result<(u64, u64), _> = redis::cmd("TIME").query_async(conn).await;
    let after = now();
    let Ok((seconds, micros)) = time else {
        return Line::bad(
            "Redis refuses TIME",
            "allow the TIME command for steward's user",
        );
    };
    let theirs = Duration::from_secs(seconds) + Duration::from_micros(micros);
    let ours = before + (after - before) / 2;
    let (offset, sign) = match theirs.checked_sub(ours) {
        Some(ahead) => (ahead, "ahead of"),
        None => (ours - theirs, "behind"),
    };
    let what = format!("Redis' clock is {} {sign} this host's", ms(offset));
    if offset <= MAX_CLOCK_OFFSET {
        Line::ok(what)
    } else {
        Line::bad(
            format!(
                "{what}: delayed jobs run early or late by as much, and rate-limit windows and \
                 lock expiries disagree with this host's logs"
            ),
            "synchronise both clocks (NTP/chrony)",
        )
    }
}

async fn postgres(settings: &Settings, migrations: &[Migration]) -> Vec<Line> {
    let url = redact_url(&settings.postgres.url);
    let connecting =
        postgres_manager_for(settings).map(|manager| async move { manager.connect().await });
    let client = match connect("PostgreSQL", &url, "postgres.url", connecting, pg_reason).await {
        Ok(client) => client,
        Err(line) => return vec![line],
    };
    let started = Instant::now();
    let version = client.query_one("SHOW server_version", &[]).await;
    let rtt = started.elapsed();
    let version: String = match version {
        Ok(row) => row.get(0),
        Err(error) => {
            return vec![Line::bad(
                format!("PostgreSQL at {url} refuses a query: {}", pg_reason(&error)),
                "check the role's rights",
            )]
        }
    };
    let mut lines = vec![Line::ok(format!(
        "PostgreSQL {version} answers at {url} in {}",
        ms(rtt)
    ))];
    lines.push(pending(&client, migrations).await);
    lines
}

/// Connects to a store within [`ANSWER_WITHIN`], or answers the line that says why not
/// (`connecting` is `Err` when the URL cannot be used at all, which validation normally
/// catches first).
async fn connect<T, E>(
    store: &str,
    url: &str,
    key: &str,
    connecting: Result<impl std::future::Future<Output = Result<T, E>>, ManagerError>,
    reason: impl Fn(&E) -> String,
) -> Result<T, Line> {
    let connecting = connecting
        .map_err(|error| Line::bad(format!("{key} {url} is unusable"), error.to_string()))?;
    match tokio::time::timeout(ANSWER_WITHIN, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(Line::bad(
            format!("{store} does not answer at {url}: {}", reason(&error)),
            format!("start {store} there, or set {key} to where it runs"),
        )),
        Err(_) => Err(Line::bad(
            format!("{store} does not answer at {url} within {ANSWER_WITHIN:?}"),
            format!("check the address, firewalls and {key}"),
        )),
    }
}

/// What the server or the connection said, rather than tokio-postgres' bare "db error".
fn pg_reason(error: &tokio_postgres::Error) -> String {
    match (error.as_db_error(), std::error::Error::source(error)) {
        (Some(db), _) => db.message().to_owned(),
        (None, Some(source)) => format!("{error}: {source}"),
        (None, None) => error.to_string(),
    }
}

/// Whether every migration the service has is applied.
async fn pending(client: &tokio_postgres::Client, migrations: &[Migration]) -> Line {
    if migrations.is_empty() {
        return Line::ok("migrations: the service has none");
    }
    let applied: Vec<i32> = match client
        .query("SELECT version FROM steward_migrations", &[])
        .await
    {
        Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
        // No table yet: nothing applied.
        Err(_) => Vec::new(),
    };
    let pending: Vec<String> = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.name))
        .collect();
    if pending.is_empty() {
        Line::ok(format!("migrations: all {} applied", migrations.len()))
    } else {
        Line::bad(
            format!("migrations pending: {}", pending.join(", ")),
            "run the `migrate` subcommand (serve also applies them at start-up, while not ready)",
        )
    }
}

/// The shutdown arithmetic of a Kubernetes manifest against `[shutdown]`.
fn manifest_checks(path: &Path, shutdown: &ShutdownSettings) -> Vec<Line> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            return vec![Line::bad(
                format!("cannot read {shown}: {error}"),
                "give the path of the manifest",
            )]
        }
    };
    let documents: Vec<Value> = match serde_saphyr::from_multiple(&text) {
        Ok(documents) => documents,
        Err(error) => {
            return vec![Line::bad(
                format!("{shown} is not YAML: {error}"),
                "fix the manifest",
            )]
        }
    };
    let workload = documents.iter().find(|doc| {
        matches!(
            doc["kind"].as_str(),
            Some("Deployment" | "StatefulSet" | "DaemonSet")
        )
    });
    let Some(pod) = workload.map(|doc| &doc["spec"]["template"]["spec"]) else {
        return vec![Line::bad(
            format!("{shown} holds no Deployment"),
            "give the manifest with the pod template",
        )];
    };
    let Some(container) = pod["containers"].get(0) else {
        return vec![Line::bad(
            format!("{shown}: the pod has no container"),
            "fix the manifest",
        )];
    };
    timing(pod, container, shutdown)
}

/// The checks of one pod template: see the README's "Shutdown" arithmetic.
fn timing(pod: &Value, container: &Value, shutdown: &ShutdownSettings) -> Vec<Line> {
    let mut lines = Vec::new();
    // Kubernetes' default when the field is absent.
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    let pre_stop = &container["lifecycle"]["preStop"];
    let sleep = pre_stop["sleep"]["seconds"]
        .as_u64()
        .map(Duration::from_secs);
    let pre_stop_pause = sleep.unwrap_or(Duration::ZERO);
    let secs = |d: Duration| format!("{} s", d.as_secs_f64());
    if pre_stop.is_object() && sleep.is_none() {
        lines.push(Line::bad(
            "preStop is not a sleep: its length cannot be checked",
            "use `preStop: {sleep: {seconds: N}}` with N = shutdown.drain_delay",
        ));
    } else if pre_stop_pause != shutdown.drain_delay {
        lines.push(Line::bad(
            format!(
                "preStop pause {} differs from shutdown.drain_delay {}",
                secs(pre_stop_pause),
                secs(shutdown.drain_delay)
            ),
            "make them equal: endpoints are removed while the pod keeps serving for that long",
        ));
    } else {
        lines.push(Line::ok(format!(
            "preStop pause {} = shutdown.drain_delay",
            secs(pre_stop_pause)
        )));
    }
    let needed = pre_stop_pause + shutdown.timeout;
    if grace > needed {
        lines.push(Line::ok(format!(
            "terminationGracePeriodSeconds {} > preStop {} + shutdown.timeout {}",
            secs(grace),
            secs(pre_stop_pause),
            secs(shutdown.timeout)
        )));
    } else {
        lines.push(Line::bad(
            format!(
                "terminationGracePeriodSeconds {} leaves no room for preStop {} + shutdown.timeout \
                 {}: the kubelet SIGKILLs the pod mid-drain",
                secs(grace),
                secs(pre_stop_pause),
                secs(shutdown.timeout)
            ),
            format!(
                "set terminationGracePeriodSeconds to at least {} (or lower shutdown.timeout)",
                needed.as_secs() + 5
            ),
        ));
    }
    if grace.saturating_sub(pre_stop_pause) != shutdown.orchestrator_grace {
        lines.push(Line::bad(
            format!(
                "shutdown.orchestrator_grace {} is not terminationGracePeriodSeconds minus preStop \
                 ({})",
                secs(shutdown.orchestrator_grace),
                secs(grace.saturating_sub(pre_stop_pause))
            ),
            "set shutdown.orchestrator_grace to what is left after preStop",
        ));
    }
    let live = container["livenessProbe"]["httpGet"]["path"].as_str();
    let ready = container["readinessProbe"]["httpGet"]["path"].as_str();
    match (live, ready) {
        (_, None) => lines.push(Line::bad(
            "no HTTP readiness probe: a draining or degraded pod keeps its traffic",
            "add readinessProbe.httpGet.path: /health/ready",
        )),
        (Some("/health/ready"), _) => lines.push(Line::bad(
            "the liveness probe asks /health/ready: a store outage restarts every pod at once",
            "point livenessProbe at /health/live",
        )),
        (_, Some(path)) if path != "/health/ready" => lines.push(Line::bad(
            format!("the readiness probe asks {path}"),
            "point readinessProbe at /health/ready",
        )),
        _ => lines.push(Line::ok(
            "probes: liveness on /health/live, readiness on /health/ready",
        )),
    }
    lines
}

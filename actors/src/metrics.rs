//! Every metric steward exports: one registry, every name in this module.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms); labels are
//! bounded sets (route patterns, actor and pool names), never raw paths or user input.

use prometheus::process_collector::ProcessCollector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The metric families of one steward instance.
///
/// Passed around as `Arc<Metrics>` instead of living in a global, so that several instances in
/// one test process do not count into each other.
pub struct Metrics {
    /// The one registry `/metrics` exposes; a service registers its own metrics here too.
    pub registry: Registry,
    /// HTTP requests by method, route pattern and status.
    pub http_requests_total: IntCounterVec,
    /// HTTP request latency by method and route pattern.
    pub http_request_duration_seconds: HistogramVec,
    /// HTTP requests being handled now.
    pub http_requests_in_flight: IntGauge,
    /// Requests answered 503 `overloaded` by the edge's concurrency limit, by route pattern.
    pub http_requests_shed_total: IntCounterVec,
    /// The edge's adaptive concurrency limit of each route pattern.
    pub http_concurrency_limit: IntGaugeVec,
    /// Restarts of each supervised child.
    pub actor_restarts_total: IntCounterVec,
    /// Time a message sent with `call` waited in an actor's mailbox before it was handled.
    pub actor_mailbox_wait_seconds: HistogramVec,
    /// Spans dropped because the export queue was full (the collector slow or away).
    pub tracing_spans_dropped_total: IntCounter,
    /// Spans sent to the collector, by result (`ok`, `failed`).
    pub tracing_spans_exported_total: IntCounterVec,
    /// 1, labelled with the running build's version and commit.
    pub steward_build_info: IntGaugeVec,
    /// Whether each store answered its last check (1) or not (0).
    pub store_up: IntGaugeVec,
    /// Each store's circuit breaker: 0 closed, 1 open, 2 half-open.
    pub store_breaker_state: IntGaugeVec,
    /// Breaker transitions by store and the state entered.
    pub store_breaker_transitions_total: IntCounterVec,
    /// Pool connections by pool and state (idle, active).
    pub pool_connections: IntGaugeVec,
    /// Cache operations by operation and result.
    pub cache_requests_total: IntCounterVec,
    /// Cache misses that waited for another caller's load of the same key.
    pub cache_loader_coalesced_total: IntCounter,
    /// Whether the cache is bypassed because Redis fails (1) or not (0).
    pub cache_degraded: IntGauge,
    /// PostgreSQL statement and transaction latency by name.
    pub db_query_duration_seconds: HistogramVec,
    /// Transactions run again after a serialization failure or deadlock.
    pub db_tx_retries_total: IntCounter,
    /// Lock operations by operation and result.
    pub lock_operations_total: IntCounterVec,
    /// Rate-limit decisions by policy and decision.
    pub ratelimit_decisions_total: IntCounterVec,
    /// Job runs by queue, kind and outcome.
    pub jobs_total: IntCounterVec,
    /// Rounds of store pings made for `/health/ready` (the others were served from cache).
    pub readiness_checks_total: IntCounter,
    /// Admin authentications refused, by outcome (`rejected`, `throttled`).
    pub admin_auth_failures_total: IntCounterVec,
    /// Requests to a service's routes refused by authentication, by reason (`missing`,
    /// `rejected`, `throttled`, `unavailable`).
    pub auth_failures_total: IntCounterVec,
    /// Credentials checked against their store or signature (a miss of the verified cache),
    /// by scheme (`api_key`, `jwt`).
    pub auth_verifications_total: IntCounterVec,
    /// Enqueues refused, by reason (`queue_full`, `payload_too_large`).
    pub jobs_rejected_total: IntCounterVec,
    /// Job run latency by kind.
    pub job_duration_seconds: HistogramVec,
    /// Jobs running now, by queue.
    pub jobs_in_flight: IntGaugeVec,
    /// Jobs in the stream, ready or delivered and not acknowledged, by queue.
    pub queue_depth: IntGaugeVec,
    /// Jobs delivered and not yet acknowledged, by queue.
    pub queue_pending: IntGaugeVec,
}

impl Metrics {
    /// Every metric, registered in a new registry with the process collector.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let metrics = Self {
            http_requests_total: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered"),
                &["method", "route", "status"],
            )?,
            http_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from the request's arrival at the app to its response",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["method", "route"],
            )?,
            http_requests_in_flight: IntGauge::new(
                "http_requests_in_flight",
                "HTTP requests being handled now",
            )?,
            http_requests_shed_total: IntCounterVec::new(
                Opts::new(
                    "http_requests_shed_total",
                    "Requests refused with 503 overloaded before any work, by route pattern",
                ),
                &["route"],
            )?,
            http_concurrency_limit: IntGaugeVec::new(
                Opts::new(
                    "http_concurrency_limit",
                    "Requests of a route pattern admitted at once (adaptive)",
                ),
                &["route"],
            )?,
            actor_restarts_total: IntCounterVec::new(
                Opts::new("actor_restarts_total", "Restarts of supervised children"),
                &["actor"],
            )?,
            actor_mailbox_wait_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "actor_mailbox_wait_seconds",
                    "Time a message waited in an actor's mailbox before its handling began",
                )
                .buckets(vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025, 0.1, 1.0,
                ]),
                &["actor"],
            )?,
            tracing_spans_dropped_total: IntCounter::new(
                "tracing_spans_dropped_total",
                "Spans dropped because the export queue was full",
            )?,
            tracing_spans_exported_total: IntCounterVec::new(
                Opts::new(
                    "tracing_spans_exported_total",
                    "Spans sent to the OTLP collector, by result",
                ),
                &["result"],
            )?,
            steward_build_info: IntGaugeVec::new(
                Opts::new(
                    "steward_build_info",
                    "Always 1; its labels name the running build",
                ),
                &["version", "commit"],
            )?,
            store_up: IntGaugeVec::new(
                Opts::new(
                    "store_up",
                    "1 when the store answered its last health check",
                ),
                &["store"],
            )?,
            store_breaker_state: IntGaugeVec::new(
                Opts::new(
                    "store_breaker_state",
                    "Circuit breaker of a store: 0 closed, 1 open, 2 half-open",
                ),
                &["store"],
            )?,
            store_breaker_transitions_total: IntCounterVec::new(
                Opts::new(
                    "store_breaker_transitions_total",
                    "Circuit breaker transitions by the state entered",
                ),
                &["store", "state"],
            )?,
            pool_connections: IntGaugeVec::new(
                Opts::new("pool_connections", "Connections held by a store pool"),
                &["pool", "state"],
            )?,
            cache_requests_total: IntCounterVec::new(
                Opts::new("cache_requests_total", "Cache operations by outcome"),
                &["op", "result"],
            )?,
            cache_loader_coalesced_total: IntCounter::new(
                "cache_loader_coalesced_total",
                "Cache misses that joined a load already in flight instead of running the loader",
            )?,
            cache_degraded: IntGauge::new(
                "cache_degraded",
                "1 while cache operations fail and reads fall back to the database",
            )?,
            db_query_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "db_query_duration_seconds",
                    "Time of a query or transaction, including the wait for a connection",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["query"],
            )?,
            db_tx_retries_total: IntCounter::new(
                "db_tx_retries_total",
                "Transactions run again after a serialization failure or deadlock",
            )?,
            lock_operations_total: IntCounterVec::new(
                Opts::new("lock_operations_total", "Lock operations by outcome"),
                &["op", "result"],
            )?,
            ratelimit_decisions_total: IntCounterVec::new(
                Opts::new(
                    "ratelimit_decisions_total",
                    "Rate-limit decisions; error when Redis failed",
                ),
                &["policy", "decision"],
            )?,
            jobs_total: IntCounterVec::new(
                Opts::new(
                    "jobs_total",
                    "Job runs by outcome (succeeded, retried, dead)",
                ),
                &["queue", "kind", "outcome"],
            )?,
            admin_auth_failures_total: IntCounterVec::new(
                Opts::new(
                    "admin_auth_failures_total",
                    "Admin requests refused: a wrong or missing token, or throttled",
                ),
                &["outcome"],
            )?,
            auth_failures_total: IntCounterVec::new(
                Opts::new(
                    "auth_failures_total",
                    "Requests refused by authentication: no, wrong or unverifiable credentials, or throttled",
                ),
                &["reason"],
            )?,
            auth_verifications_total: IntCounterVec::new(
                Opts::new(
                    "auth_verifications_total",
                    "Credentials verified against their store or signature (not served from the verified cache)",
                ),
                &["scheme"],
            )?,
            readiness_checks_total: IntCounter::new(
                "readiness_checks_total",
                "Rounds of store pings made for /health/ready; cached answers are not counted",
            )?,
            jobs_rejected_total: IntCounterVec::new(
                Opts::new(
                    "jobs_rejected_total",
                    "Enqueues refused: the queue full, or the payload too large",
                ),
                &["queue", "reason"],
            )?,
            job_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "job_duration_seconds",
                    "Time of one job run, recording included",
                ),
                &["kind"],
            )?,
            jobs_in_flight: IntGaugeVec::new(
                Opts::new("jobs_in_flight", "Jobs running now"),
                &["queue"],
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "queue_depth",
                    "Jobs in the stream, ready or delivered and unacknowledged",
                ),
                &["queue"],
            )?,
            queue_pending: IntGaugeVec::new(
                Opts::new("queue_pending", "Jobs delivered and not yet acknowledged"),
                &["queue"],
            )?,
            registry,
        };
        let registry = &metrics.registry;
        registry.register(Box::new(metrics.http_requests_total.clone()))?;
        registry.register(Box::new(metrics.http_request_duration_seconds.clone()))?;
        registry.register(Box::new(metrics.http_requests_in_flight.clone()))?;
        registry.register(Box::new(metrics.http_requests_shed_total.clone()))?;
        registry.register(Box::new(metrics.http_concurrency_limit.clone()))?;
        registry.register(Box::new(metrics.actor_restarts_total.clone()))?;
        registry.register(Box::new(metrics.actor_mailbox_wait_seconds.clone()))?;
        registry.register(Box::new(metrics.tracing_spans_dropped_total.clone()))?;
        registry.register(Box::new(metrics.tracing_spans_exported_total.clone()))?;
        registry.register(Box::new(metrics.steward_build_info.clone()))?;
        registry.register(Box::new(metrics.store_breaker_state.clone()))?;
        registry.register(Box::new(metrics.store_breaker_transitions_total.clone()))?;
        registry.register(Box::new(metrics.store_up.clone()))?;
        registry.register(Box::new(metrics.pool_connections.clone()))?;
        registry.register(Box::new(metrics.cache_requests_total.clone()))?;
        registry.register(Box::new(metrics.cache_loader_coalesced_total.clone()))?;
        registry.register(Box::new(metrics.cache_degraded.clone()))?;
        registry.register(Box::new(metrics.db_query_duration_seconds.clone()))?;
        registry.register(Box::new(metrics.db_tx_retries_total.clone()))?;
        registry.register(Box::new(metrics.lock_operations_total.clone()))?;
        registry.register(Box::new(metrics.ratelimit_decisions_total.clone()))?;
        registry.register(Box::new(metrics.jobs_total.clone()))?;
        registry.register(Box::new(metrics.jobs_rejected_total.clone()))?;
        registry.register(Box::new(metrics.readiness_checks_total.clone()))?;
        registry.register(Box::new(metrics.admin_auth_failures_total.clone()))?;
        registry.register(Box::new(metrics.auth_failures_total.clone()))?;
        registry.register(Box::new(metrics.auth_verifications_total.clone()))?;
        registry.register(Box::new(metrics.job_duration_seconds.clone()))?;
        registry.register(Box::new(metrics.jobs_in_flight.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.queue_pending.clone()))?;
        registry.register(Box::new(ProcessCollector::for_self()))?;
        Ok(metrics)
    }
}

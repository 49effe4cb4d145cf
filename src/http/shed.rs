//! Load shedding at the edge: an adaptive concurrency limit per route pattern.
//!
//! Why a concurrency limit and not a rate limit: what a route can take depends on what is
//! behind it right now (a pool of 16 PostgreSQL connections takes 800 requests of 20 ms a
//! second, and 32 a second once the database answers in 500 ms). Past that, requests only
//! queue (in a pool's wait list, in an actor's mailbox) and every one of them gets slower; the
//! queue grows until clients time out and retry, and the service does no useful work at all
//! (Facebook's "Fail at Scale"). Refusing the excess at the door, before it costs anything,
//! keeps the admitted requests as fast as the route can be.
//!
//! Why this algorithm: a gradient of latencies, as in Envoy's adaptive concurrency filter and
//! Netflix's Gradient2 limit. Each route learns its *no-load latency* (the mean latency of
//! windows in which it was not busy) and, once per window, compares the window's mean latency
//! with it: `gradient = (no_load × tolerance + buffer) / mean`, clamped to 0.25..1, and
//! `limit = used × gradient + √used`, where `used` is the most requests that were in flight
//! (at most the limit). A route answering as fast as unloaded grows its limit by √used (the
//! headroom that lets it find more capacity); one whose requests wait behind each other
//! shrinks it, to where the queue is about √limit deep — but never below what the window
//! carried without queueing (throughput × no-load latency, Little's law), so a lagging window
//! cannot push it under the route's capacity. Vegas needs a
//! reliable minimum RTT, which a route mixing cache hits and database reads does not have;
//! CoDel needs the time a request waited in a queue, and steward's queues (bb8's wait list,
//! actor mailboxes) are not the edge's to time. The latency a route answers with is.
//!
//! Windows in which a route used less than half its limit (it is *app-limited*) teach the
//! no-load latency and leave the limit alone: latency that grows while the route is not busy
//! comes from a slow store, and a smaller limit would not help it. A store that is down is the
//! breakers' work, not this.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use prometheus::{IntCounter, IntGauge};
use steward_actors::Metrics;

use super::error::{codes, ApiError};
use crate::config::SheddingSettings;

/// Windows with fewer completions than this carry too little to move a limit.
const MIN_SAMPLES: u32 = 10;

/// The limits of every route pattern, created on a route's first request.
pub struct Shedder {
    settings: SheddingSettings,
    metrics: Arc<Metrics>,
    routes: RwLock<HashMap<String, Arc<RouteLimit>>>,
}

/// One route pattern's limit: admission is two atomic operations; the estimate behind it is
/// updated under a lock once per request completion.
struct RouteLimit {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    gauge: IntGauge,
    shed: IntCounter,
    estimate: Mutex<Estimate>,
}

struct Estimate {
    limit: f64,
    no_load: Option<f64>,
    window_started: Instant,
    samples: u32,
    total: f64,
    busiest: usize,
}

impl Shedder {
    /// A shedder reporting in `metrics`.
    pub fn new(settings: SheddingSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            metrics,
            routes: RwLock::default(),
        }
    }

    /// The limit of `route`, or `None` when it is never shed.
    fn limit(&self, route: &str) -> Option<Arc<RouteLimit>> {
        let exempt = self.settings.exempt.iter().map(String::as_str);
        // Probes and scrapes must answer most when the service is busiest.
        if super::OWN_ROUTES
            .into_iter()
            .chain(exempt)
            .any(|prefix| route.starts_with(prefix))
        {
            return None;
        }
        if let Some(limit) = self.routes.read().ok()?.get(route) {
            return Some(Arc::clone(limit));
        }
        let mut routes = self.routes.write().ok()?;
        let limit = routes.entry(route.to_owned()).or_insert_with(|| {
            let initial = self.settings.initial_limit;
            let gauge = self
                .metrics
                .http_concurrency_limit
                .with_label_values(&[route]);
            gauge.set(initial as i64);
            Arc::new(RouteLimit {
                in_flight: AtomicUsize::new(0),
                limit: AtomicUsize::new(initial),
                gauge,
                shed: self
                    .metrics
                    .http_requests_shed_total
                    .with_label_values(&[route]),
                estimate: Mutex::new(Estimate {
                    limit: initial as f64,
                    no_load: None,
                    window_started: Instant::now(),
                    samples: 0,
                    total: 0.0,
                    busiest: 0,
                }),
            })
        });
        Some(Arc::clone(limit))
    }
}

impl RouteLimit {
    /// Takes a slot, or `false` when the route is at its limit.
    fn admit(&self) -> bool {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if now > self.limit.load(Ordering::Acquire) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives the slot back and learns from the request's latency.
    fn complete(&self, latency: Duration, settings: &SheddingSettings) {
        let busy = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let Ok(mut estimate) = self.estimate.lock() else {
            return;
        };
        estimate.samples += 1;
        estimate.total += latency.as_secs_f64();
        estimate.busiest = estimate.busiest.max(busy);
        let now = Instant::now();
        if estimate.samples < MIN_SAMPLES
            || now.duration_since(estimate.window_started) < settings.window
        {
            return;
        }
        let mean = estimate.total / f64::from(estimate.samples);
        let app_limited = (estimate.busiest as f64) < estimate.limit / 2.0;
        match estimate.no_load {
            // The no-load latency falls at once and rises only while the route is not busy, so
            // a queue (which makes every request slower) never passes for the route's cost.
            Some(no_load) if mean < no_load => estimate.no_load = Some(mean),
            Some(no_load) if app_limited => estimate.no_load = Some(0.9 * no_load + 0.1 * mean),
            Some(_) => {}
            None => estimate.no_load = Some(mean),
        }
        if !app_limited {
            let no_load = estimate.no_load.unwrap_or(mean);
            let target = no_load * settings.tolerance + settings.buffer.as_secs_f64();
            // Down to a quarter a window: a queue builds faster than window means show it.
            let gradient = (target / mean).clamp(0.25, 1.0);
            // Never below what the route just carried without queueing (Little's law: the
            // window's throughput times the no-load latency): the means a window sees lag
            // behind the limit, and a limit that overshoots under the route's capacity wastes
            // it for as long as it takes to grow back.
            let elapsed = now.duration_since(estimate.window_started).as_secs_f64();
            let carried = f64::from(estimate.samples) / elapsed * no_load;
            // From what was in use, not the nominal limit: a limit far above the traffic it
            // admits says nothing about what the route can take.
            let used = estimate.limit.min(estimate.busiest as f64);
            let limit = (used * gradient + used.sqrt()).max(carried);
            estimate.limit = limit.clamp(settings.min_limit as f64, settings.max_limit as f64);
            let rounded = estimate.limit.round() as usize;
            self.limit.store(rounded, Ordering::Release);
            self.gauge.set(rounded as i64);
        }
        estimate.window_started = now;
        estimate.samples = 0;
        estimate.total = 0.0;
        estimate.busiest = 0;
    }
}

/// Middleware: admits a request if its route pattern is under its limit, else answers
/// 503 `overloaded` with `Retry-After: 1` before the request reaches rate limiting or its
/// handler. Requests no route matches, and steward's own routes, are never shed.
pub async fn shed(
    shedder: Option<Arc<Shedder>>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = shedder.as_ref().and_then(|shedder| {
        let route = req.match_pattern()?;
        shedder.limit(&route)
    });
    let (Some(shedder), Some(limit)) = (shedder, limit) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    if !limit.admit() {
        limit.shed.inc();
        let refusal = ApiError::from(codes::OVERLOADED).retry_after(1);
        return Ok(req
            .into_response(actix_web::ResponseError::error_response(&refusal))
            .map_into_right_body());
    }
    let started = Instant::now();
    // A guard, so a request whose connection drops mid-way still gives its slot back.
    let slot = Slot {
        limit,
        shedder,
        started,
    };
    let response = next.call(req).await;
    drop(slot);
    Ok(response?.map_into_left_body())
}

struct Slot {
    limit: Arc<RouteLimit>,
    shedder: Arc<Shedder>,
    started: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit
            .complete(self.started.elapsed(), &self.shedder.settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SheddingSettings {
        SheddingSettings {
            enabled: true,
            initial_limit: 32,
            min_limit: 4,
            max_limit: 1024,
            tolerance: 1.0,
            buffer: Duration::from_millis(5),
            window: Duration::ZERO,
            exempt: vec!["/public/".into()],
        }
    }

    /// Ten requests of `latency` with `busy` in flight, completing over the last 100 ms.
    fn window(limit: &RouteLimit, busy: usize, latency: Duration, settings: &SheddingSettings) {
        window_over(limit, busy, latency, Duration::from_millis(100), settings);
    }

    fn window_over(
        limit: &RouteLimit,
        busy: usize,
        latency: Duration,
        over: Duration,
        settings: &SheddingSettings,
    ) {
        let started = Instant::now() - over;
        limit.estimate.lock().unwrap().window_started = started;
        for _ in 0..MIN_SAMPLES {
            limit.in_flight.store(busy, Ordering::Release);
            limit.complete(latency, settings);
        }
    }

    #[test]
    fn own_and_exempt_routes_have_no_limit() {
        let shedder = Shedder::new(settings(), Arc::new(Metrics::new().unwrap()));
        assert!(shedder.limit("/health/ready").is_none());
        assert!(shedder.limit("/admin/actors").is_none());
        assert!(shedder.limit("/public/{x}").is_none());
        assert!(shedder.limit("/v1/kv/{key}").is_some());
    }

    #[test]
    fn a_queueing_route_shrinks_and_a_fast_busy_one_grows() {
        let settings = settings();
        let shedder = Shedder::new(settings.clone(), Arc::new(Metrics::new().unwrap()));
        let route = shedder.limit("/v1/slow").unwrap();
        // Not busy: the no-load latency is learned, the limit stays.
        window(&route, 2, Duration::from_millis(20), &settings);
        assert_eq!(route.limit.load(Ordering::Acquire), 32);
        // Busy and four times slower: it shrinks, window after window, to the floor.
        for _ in 0..20 {
            window(&route, 40, Duration::from_millis(80), &settings);
        }
        assert!(route.limit.load(Ordering::Acquire) <= 5);
        // Busy and as fast as unloaded: it grows again.
        for _ in 0..5 {
            window(&route, 40, Duration::from_millis(20), &settings);
        }
        assert!(route.limit.load(Ordering::Acquire) > 10);
    }

    #[test]
    fn the_limit_never_falls_under_what_the_route_carries() {
        let settings = settings();
        let shedder = Shedder::new(settings.clone(), Arc::new(Metrics::new().unwrap()));
        let route = shedder.limit("/v1/pool").unwrap();
        window(&route, 2, Duration::from_millis(20), &settings);
        // Ten completions in 5 ms: 2,000 a second of a 20 ms route keep 40 busy. Latency
        // four times the no-load one says shrink, but not under those 40.
        window_over(
            &route,
            60,
            Duration::from_millis(80),
            Duration::from_millis(5),
            &settings,
        );
        assert!(route.limit.load(Ordering::Acquire) >= 40);
    }

    #[test]
    fn admission_stops_at_the_limit_and_slots_come_back() {
        let shedder = Shedder::new(settings(), Arc::new(Metrics::new().unwrap()));
        let route = shedder.limit("/v1/x").unwrap();
        assert!((0..32).all(|_| route.admit()));
        assert!(!route.admit());
        route.complete(Duration::from_millis(1), &settings());
        assert!(route.admit());
    }
}

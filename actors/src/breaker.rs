//! Circuit breakers: once a store keeps failing, calls to it fail at once instead of each
//! waiting out a timeout, until a probe finds it back.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::StoreError;
use crate::metrics::Metrics;

/// When a breaker opens and how long it stays open (`[breaker]`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// `false` lets every call through whatever happens (the breaker still reports).
    pub enabled: bool,
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// ... or when at least this share of the calls in `window` failed,
    pub failure_ratio: f64,
    /// ... once `window` has seen at least this many calls.
    pub min_calls: u32,
    /// The window the ratio is counted over.
    #[serde(with = "crate::duration")]
    pub window: Duration,
    /// How long it stays open the first time; each reopening without a success in between
    /// doubles it, up to `max_open_for`.
    #[serde(with = "crate::duration")]
    pub open_for: Duration,
    /// The longest it stays open before a probe.
    #[serde(with = "crate::duration")]
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(30),
        }
    }
}

/// A breaker's state, as `/admin/actors` and the `store_breaker_state` gauge show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail at once with `BreakerOpen`.
    Open,
    /// One call (the probe) goes through; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The value of `store_breaker_state{store}`.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What `/admin/actors` shows of a breaker.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakerReport {
    /// The store it guards.
    pub store: &'static str,
    /// Its state now.
    pub state: BreakerState,
    /// The last failure it saw.
    pub last_error: Option<String>,
    /// While open: milliseconds until a probe may go through.
    pub retry_in_ms: Option<u64>,
    /// Times it opened since it last closed.
    pub trips: u32,
}

/// The circuit breaker of one store, shared by every actor and pool that uses the store.
///
/// Why: without it, every request during an outage waits for a pool connection that cannot
/// come (up to the store's timeout) and answers 504, holding an HTTP connection all that time;
/// a queue that only grows is how a slow dependency becomes an outage. With it, after
/// `consecutive_failures` failures in a row, or `failure_ratio` of the calls in `window`, calls
/// fail at once with [`StoreError::BreakerOpen`] (503 with `Retry-After`). After `open_for`
/// one call goes through as a probe (half-open): its success closes the breaker, its failure
/// opens it again for twice as long. The store actor's own health checks feed it too: a failed
/// check opens it at once, a successful one closes it.
///
/// Only `Unavailable` and `Timeout` count as failures: a conflict or a missing row is the
/// store answering, `DeadlineExceeded` is the caller's budget and `PoolTimeout` the caller's
/// own load (every connection busy), not the store's fault.
///
/// Every open also advances the breaker's *generation*: pooled connections made before it are
/// checked once (`PING`, an empty query) before they are handed out again, so connections
/// broken by an outage never reach a request after it (see [`Evicting`](crate::pool::Evicting)).
///
/// A service's own store-like actor wraps its calls the same way:
///
/// ```
/// # async fn demo() -> Result<(), steward_actors::StoreError> {
/// use steward_actors::breaker::{Breaker, BreakerConfig};
/// use steward_actors::{Metrics, StoreError};
///
/// let metrics = Metrics::new().unwrap();
/// let payments = Breaker::new("payments-api", BreakerConfig::default(), &metrics);
/// let answer: Result<u32, StoreError> = payments.call(async { Ok(42) }).await;
/// assert_eq!(answer?, 42);
/// # Ok(()) }
/// # actix_rt::System::new().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Breaker(Arc<Shared>);

struct Shared {
    store: &'static str,
    config: BreakerConfig,
    state: Mutex<State>,
    generation: AtomicU64,
    opened: Notify,
    gauge: IntGauge,
    transitions: IntCounterVec,
}

struct State {
    phase: Phase,
    consecutive: u32,
    window_started: Instant,
    calls: u32,
    failures: u32,
    last_error: Option<String>,
    trips: u32,
    /// When a call or a health check last succeeded: a failed check that started before it
    /// brings old news.
    last_success: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Leave to make one call; report its outcome with [`Permit::record`]. A probe's permit
/// dropped without a record (its caller gave up) frees the probe slot for the next call.
#[must_use = "a permit records the call's outcome"]
pub struct Permit {
    breaker: Option<Breaker>,
    probe: bool,
}

impl Permit {
    /// Counts `result` for the breaker: `Unavailable` and `Timeout` are failures, anything
    /// else (including the store's own refusals) is the store answering.
    pub fn record<T>(mut self, result: &Result<T, StoreError>) {
        if let Some(breaker) = self.breaker.take() {
            match result {
                Err(error @ (StoreError::Unavailable(_) | StoreError::Timeout)) => {
                    breaker.failure(error.to_string())
                }
                Err(
                    StoreError::DeadlineExceeded
                    | StoreError::PoolTimeout
                    | StoreError::BreakerOpen { .. },
                ) => breaker.release(self.probe),
                _ => breaker.success(),
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.release(self.probe);
        }
    }
}

impl Breaker {
    /// A closed breaker for `store`, reporting in `metrics` (`store_breaker_state{store}`,
    /// `store_breaker_transitions_total{store,state}`).
    pub fn new(store: &'static str, config: BreakerConfig, metrics: &Metrics) -> Self {
        let gauge = metrics.store_breaker_state.with_label_values(&[store]);
        gauge.set(BreakerState::Closed.gauge());
        Self(Arc::new(Shared {
            store,
            config,
            state: Mutex::new(State {
                phase: Phase::Closed,
                consecutive: 0,
                window_started: Instant::now(),
                calls: 0,
                failures: 0,
                last_error: None,
                trips: 0,
                last_success: None,
            }),
            generation: AtomicU64::new(0),
            opened: Notify::new(),
            gauge,
            transitions: metrics.store_breaker_transitions_total.clone(),
        }))
    }

    /// The store it guards.
    pub fn store(&self) -> &'static str {
        self.0.store
    }

    /// Leave to call the store, or `BreakerOpen` at once. While open past `open_for`, the
    /// first caller becomes the half-open probe.
    pub fn permit(&self) -> Result<Permit, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        let probe = match state.phase {
            Phase::Closed => false,
            Phase::Open { until } if now < until => return Err(self.refusal(&state, until - now)),
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                self.enter(&mut state, Phase::HalfOpen { probing: true }, "");
                true
            }
            Phase::HalfOpen { probing: true } => {
                return Err(self.refusal(&state, self.0.config.open_for))
            }
        };
        Ok(Permit {
            breaker: Some(self.clone()),
            probe,
        })
    }

    /// Runs `call` under a permit and records its outcome.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let permit = self.permit()?;
        let result = call.await;
        permit.record(&result);
        result
    }

    /// Its state now.
    pub fn state(&self) -> BreakerState {
        self.lock().phase.state()
    }

    /// Its state, last failure and trips, for `/admin/actors`.
    pub fn report(&self) -> BreakerReport {
        let state = self.lock();
        let retry_in_ms = match state.phase {
            Phase::Open { until } => {
                Some(until.saturating_duration_since(Instant::now()).as_millis() as u64)
            }
            _ => None,
        };
        BreakerReport {
            store: self.0.store,
            state: state.phase.state(),
            last_error: state.last_error.clone(),
            retry_in_ms,
            trips: state.trips,
        }
    }

    /// The error a call refused now gets (`BreakerOpen` with the time until a probe).
    pub fn refused(&self) -> StoreError {
        let state = self.lock();
        let retry_in = match state.phase {
            Phase::Open { until } => until.saturating_duration_since(Instant::now()),
            _ => self.0.config.open_for,
        };
        self.refusal(&state, retry_in)
    }

    /// Advances on every open and every failed health check: a pooled connection older than
    /// the current generation is checked before it is handed out.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Resolves when the breaker next opens: a caller waiting for a pool connection stops
    /// waiting then.
    pub fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.opened.notified()
    }

    /// A connection attempt failed: counted like a failed call (a refused connection is
    /// reported at once, by its own words, instead of as a checkout that timed out).
    pub fn connect_failed(&self, cause: String) {
        self.failure(cause);
    }

    /// The outcome of a health check that started at `started`. A failed check opens the
    /// breaker at once (the store actor knows the store is down; no request need find out
    /// again) and advances the generation; a successful one closes it (the check is a probe
    /// that went all the way to the store, and readiness turns ready on the same answer, so no
    /// request is refused once the instance says it is ready). A failed check that started before a call or another check
    /// succeeded is old news (several actors check one store, each on its own schedule) and
    /// changes nothing.
    pub fn observe_check(&self, ok: bool, error: Option<&str>, started: Instant) {
        let mut state = self.lock();
        if ok {
            state.last_success = Some(Instant::now());
            if !matches!(state.phase, Phase::Closed) {
                state.trips = 0;
                self.enter(&mut state, Phase::Closed, "a health check succeeded");
            }
            return;
        }
        if state.last_success.is_some_and(|success| success > started) {
            return;
        }
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        state.last_error = error.map(str::to_owned);
        if !matches!(state.phase, Phase::Open { .. }) {
            self.trip(&mut state, "a health check failed");
        }
    }

    fn success(&self) {
        let mut state = self.lock();
        state.last_success = Some(Instant::now());
        self.count(&mut state, false);
        state.consecutive = 0;
        if let Phase::HalfOpen { .. } = state.phase {
            state.trips = 0;
            self.enter(&mut state, Phase::Closed, "the probe succeeded");
        }
    }

    fn failure(&self, cause: String) {
        let mut state = self.lock();
        state.last_error = Some(cause);
        match state.phase {
            Phase::Closed => {
                self.count(&mut state, true);
                state.consecutive += 1;
                let config = &self.0.config;
                let ratio = f64::from(state.failures) / f64::from(state.calls.max(1));
                if state.consecutive >= config.consecutive_failures {
                    let why = format!("{} failures in a row", state.consecutive);
                    self.trip(&mut state, &why);
                } else if state.calls >= config.min_calls && ratio >= config.failure_ratio {
                    let why = format!("{} of {} calls failed", state.failures, state.calls);
                    self.trip(&mut state, &why);
                }
            }
            Phase::HalfOpen { .. } => self.trip(&mut state, "the probe failed"),
            Phase::Open { .. } => {}
        }
    }

    /// A probe that ended without telling anything: the next caller probes instead.
    fn release(&self, probe: bool) {
        if probe {
            let mut state = self.lock();
            if let Phase::HalfOpen { probing: true } = state.phase {
                state.phase = Phase::HalfOpen { probing: false };
            }
        }
    }

    fn count(&self, state: &mut State, failed: bool) {
        let now = Instant::now();
        if now.duration_since(state.window_started) >= self.0.config.window {
            state.window_started = now;
            state.calls = 0;
            state.failures = 0;
        }
        state.calls += 1;
        state.failures += u32::from(failed);
    }

    fn trip(&self, state: &mut State, why: &str) {
        if !self.0.config.enabled {
            return;
        }
        let config = &self.0.config;
        let open_for = config
            .open_for
            .saturating_mul(1 << state.trips.min(16))
            .min(config.max_open_for);
        state.trips += 1;
        state.consecutive = 0;
        state.calls = 0;
        state.failures = 0;
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        log::warn!(
            target: "steward::breaker",
            "breaker of store {} opened ({why}): calls fail at once for {} ms; last error: {}",
            self.0.store,
            open_for.as_millis(),
            state.last_error.as_deref().unwrap_or("none")
        );
        self.enter(
            state,
            Phase::Open {
                until: Instant::now() + open_for,
            },
            "",
        );
        self.0.opened.notify_waiters();
    }

    fn enter(&self, state: &mut State, phase: Phase, why: &str) {
        let (from, to) = (state.phase.state(), phase.state());
        state.phase = phase;
        if from == to {
            return;
        }
        match to {
            BreakerState::Closed => {
                log::info!(target: "steward::breaker", "breaker of store {} closed: {why}", self.0.store)
            }
            BreakerState::HalfOpen => {
                log::info!(target: "steward::breaker", "breaker of store {} half-open: letting one call through", self.0.store)
            }
            BreakerState::Open => {}
        }
        self.0.gauge.set(to.gauge());
        self.0
            .transitions
            .with_label_values(&[self.0.store, to.label()])
            .inc();
    }

    fn refusal(&self, state: &State, retry_in: Duration) -> StoreError {
        StoreError::BreakerOpen {
            store: self.0.store,
            retry_in,
            cause: state.last_error.clone().unwrap_or_default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere cannot poison it
        // into uselessness.
        self.0
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> (Breaker, Metrics) {
        let metrics = Metrics::new().unwrap();
        let config = BreakerConfig {
            consecutive_failures: 3,
            min_calls: 10,
            open_for,
            max_open_for: open_for * 8,
            ..BreakerConfig::default()
        };
        (Breaker::new("store", config, &metrics), metrics)
    }

    fn fail(breaker: &Breaker) {
        let permit = breaker.permit().expect("a permit");
        permit.record::<()>(&Err(StoreError::Unavailable("refused".into())));
    }

    fn succeed(breaker: &Breaker) {
        breaker.permit().expect("a permit").record(&Ok(()));
    }

    fn transitions(metrics: &Metrics, state: &str) -> u64 {
        metrics
            .store_breaker_transitions_total
            .with_label_values(&["store", state])
            .get()
    }

    #[test]
    fn consecutive_failures_open_it_and_calls_then_fail_at_once() {
        let (breaker, metrics) = breaker(Duration::from_secs(60));
        fail(&breaker);
        fail(&breaker);
        succeed(&breaker); // a success in between starts the count again
        fail(&breaker);
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Closed);
        let generation = breaker.generation();
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(
            breaker.generation() > generation,
            "pooled connections get checked"
        );
        match breaker.permit() {
            Err(StoreError::BreakerOpen {
                store,
                retry_in,
                cause,
            }) => {
                assert_eq!(store, "store");
                assert!(retry_in > Duration::from_secs(50), "{retry_in:?}");
                assert!(cause.contains("refused"), "{cause}");
            }
            other => panic!("expected BreakerOpen, got {:?}", other.map(|_| ())),
        }
        assert_eq!(
            metrics
                .store_breaker_state
                .with_label_values(&["store"])
                .get(),
            1
        );
        assert_eq!(transitions(&metrics, "open"), 1);
        assert_eq!(
            breaker.report().last_error.as_deref(),
            Some("store unavailable: refused")
        );
    }

    #[test]
    fn a_failure_ratio_opens_it_too() {
        let (breaker, _) = breaker(Duration::from_secs(60));
        for _ in 0..5 {
            succeed(&breaker);
            fail(&breaker);
        }
        assert_eq!(breaker.state(), BreakerState::Open, "5 of 10 calls failed");
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_success_closes_it() {
        let (breaker, metrics) = breaker(Duration::from_millis(10));
        (0..3).for_each(|_| fail(&breaker));
        std::thread::sleep(Duration::from_millis(20));
        let probe = breaker.permit().expect("the probe");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.permit().is_err(), "one probe at a time");
        probe.record(&Ok(()));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(transitions(&metrics, "half_open"), 1);
        assert_eq!(transitions(&metrics, "closed"), 1);
        assert_eq!(breaker.report().trips, 0);
    }

    #[test]
    fn a_failed_probe_reopens_it_for_longer() {
        let (breaker, _) = breaker(Duration::from_millis(10));
        (0..3).for_each(|_| fail(&breaker));
        std::thread::sleep(Duration::from_millis(20));
        fail(&breaker); // the probe
        assert_eq!(breaker.state(), BreakerState::Open);
        let retry_in = breaker.report().retry_in_ms.expect("open");
        assert!((11..=20).contains(&retry_in), "doubled: {retry_in} ms");
        assert_eq!(breaker.report().trips, 2);
    }

    #[test]
    fn a_probe_that_tells_nothing_frees_the_slot() {
        let (breaker, _) = breaker(Duration::from_millis(10));
        (0..3).for_each(|_| fail(&breaker));
        std::thread::sleep(Duration::from_millis(20));
        drop(breaker.permit().expect("the probe")); // its caller went away
        let probe = breaker.permit().expect("the next caller probes");
        probe.record::<()>(&Err(StoreError::DeadlineExceeded));
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "the caller's deadline says nothing"
        );
        succeed(&breaker);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn answers_of_the_store_and_callers_deadlines_are_not_failures() {
        let (breaker, _) = breaker(Duration::from_secs(60));
        for error in [
            StoreError::NotFound,
            StoreError::Conflict("held".into()),
            StoreError::DeadlineExceeded,
            StoreError::PoolTimeout,
            StoreError::Contention("40001".into()),
        ] {
            for _ in 0..5 {
                breaker.permit().unwrap().record::<()>(&Err(error.clone()));
            }
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn health_checks_open_it_at_once_and_close_it_when_the_store_answers() {
        let (breaker, _) = breaker(Duration::from_secs(60));
        let refused = Some("Connection refused (os error 111)");
        breaker.observe_check(false, refused, Instant::now());
        assert_eq!(breaker.state(), BreakerState::Open);
        let generation = breaker.generation();
        breaker.observe_check(false, refused, Instant::now());
        assert!(breaker.generation() > generation, "each failed check");
        let started = Instant::now();
        breaker.observe_check(true, None, Instant::now());
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "before open_for ran out"
        );
        assert_eq!(breaker.report().trips, 0);
        // Another actor's check, begun before that success, ends late: old news.
        breaker.observe_check(false, refused, started);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.observe_check(false, refused, Instant::now());
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "a check begun after it is not"
        );
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let metrics = Metrics::new().unwrap();
        let config = BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        };
        let breaker = Breaker::new("store", config, &metrics);
        (0..50).for_each(|_| fail(&breaker));
        breaker.observe_check(false, Some("down"), Instant::now());
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.permit().is_ok());
    }
}

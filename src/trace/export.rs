//! The span processor between the tracer and the OTLP exporter: a bounded queue and one
//! export thread.
//!
//! Why not the SDK's `BatchSpanProcessor`: it drops spans when its queue is full, as it
//! should, but keeps the count to itself (one log line at shutdown), and steward promises a
//! metric (`tracing_spans_dropped_total`), a log line per change of the collector's state and
//! a last flush bounded by the shutdown's own deadline. The queue is the same idea: a span
//! that ends is pushed under a short lock or dropped, never waited for.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use steward_actors::Metrics;

use crate::config::TracingSettings;

/// The span processor steward installs: spans go into a bounded queue that one thread sends to
/// the collector in batches.
#[derive(Debug)]
pub(super) struct ExportQueue<E: SpanExporter + 'static> {
    shared: Arc<Shared>,
    exporter: Arc<Mutex<E>>,
}

/// What the tracer's threads and the export thread share.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread: a batch is full, or a flush was asked for.
    work: Condvar,
    /// Wakes flushers: the queue has been exported up to their mark.
    done: Condvar,
    capacity: usize,
    batch_size: usize,
    dropped: IntCounter,
}

#[derive(Debug, Default)]
struct State {
    spans: VecDeque<SpanData>,
    /// Spans ever queued, and spans ever taken for export (sent or failed): a flush waits
    /// until `taken` reaches what `queued` was when it asked.
    queued: u64,
    taken: u64,
    /// Spans taken whose export has finished.
    finished: u64,
    /// The highest `queued` a flush waits for; the thread exports at once while below it.
    flush_to: u64,
}

impl<E: SpanExporter + 'static> ExportQueue<E> {
    /// Starts the export thread for `exporter`.
    pub fn start(exporter: E, settings: &TracingSettings, metrics: &Arc<Metrics>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            capacity: settings.queue_size,
            batch_size: settings.batch_size,
            dropped: metrics.tracing_spans_dropped_total.clone(),
        });
        let exporter = Arc::new(Mutex::new(exporter));
        let worker = Worker {
            shared: Arc::clone(&shared),
            exporter: Arc::clone(&exporter),
            delay: settings.batch_delay,
            exported_ok: metrics
                .tracing_spans_exported_total
                .with_label_values(&["ok"]),
            exported_failed: metrics
                .tracing_spans_exported_total
                .with_label_values(&["failed"]),
            reachable: None,
        };
        // A plain thread: the exporter's HTTP client blocks, and must never run on an actix
        // worker. If it cannot start, spans queue up to the bound and are dropped, counted.
        let spawned = std::thread::Builder::new()
            .name("steward-otlp".into())
            .spawn(move || worker.run());
        if let Err(error) = spawned {
            log::error!(target: "steward::trace", "the span export thread cannot start: {error}");
        }
        Self { shared, exporter }
    }

    /// A handle that flushes the queue, for the shutdown.
    pub fn flusher(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every span queued before the call has been exported (or failed to be),
    /// for at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        let mut state = self.lock();
        let mark = state.queued;
        state.flush_to = state.flush_to.max(mark);
        self.work.notify_one();
        while state.finished < mark {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} spans were not exported within {} ms",
                    mark - state.finished,
                    timeout.as_millis()
                ));
            }
            state = self
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

impl<E: SpanExporter + 'static> SpanProcessor for ExportQueue<E> {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut state = self.shared.lock();
        if state.spans.len() >= self.shared.capacity {
            drop(state);
            self.shared.dropped.inc();
            return;
        }
        state.spans.push_back(span);
        state.queued += 1;
        if state.spans.len() == self.shared.batch_size {
            self.shared.work.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.shared
            .flush(Duration::from_secs(5))
            .map_err(OTelSdkError::InternalFailure)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shared
            .flush(timeout)
            .map_err(OTelSdkError::InternalFailure)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_resource(resource);
    }
}

/// The export thread.
struct Worker<E> {
    shared: Arc<Shared>,
    exporter: Arc<Mutex<E>>,
    delay: Duration,
    exported_ok: IntCounter,
    exported_failed: IntCounter,
    /// Whether the last export reached the collector; `None` before the first.
    reachable: Option<bool>,
}

impl<E: SpanExporter> Worker<E> {
    fn run(mut self) {
        loop {
            let batch = self.next_batch();
            let count = batch.len() as u64;
            let exporter = self.exporter.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = futures::executor::block_on(exporter.export(batch));
            drop(exporter);
            self.record(count, outcome);
            let mut state = self.shared.lock();
            state.finished += count;
            drop(state);
            self.shared.done.notify_all();
        }
    }

    /// Waits for a full batch, a flush, or `delay` with something queued; takes up to
    /// `batch_size` spans.
    fn next_batch(&self) -> Vec<SpanData> {
        let mut state = self.shared.lock();
        let mut waited_since = Instant::now();
        loop {
            let flushing = state.flush_to > state.taken;
            let due = !state.spans.is_empty() && waited_since.elapsed() >= self.delay;
            if state.spans.len() >= self.shared.batch_size || flushing || due {
                let take = state.spans.len().min(self.shared.batch_size);
                state.taken += take as u64;
                return state.spans.drain(..take).collect();
            }
            if state.spans.is_empty() {
                waited_since = Instant::now();
            }
            let wait = self.delay.saturating_sub(waited_since.elapsed());
            state = self
                .shared
                .work
                .wait_timeout(state, wait.max(Duration::from_millis(1)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Counts the batch and logs a change of the collector's state (only a change: a collector
    /// that is down for an hour is one line, not one a second).
    fn record(&mut self, count: u64, outcome: OTelSdkResult) {
        let reached = outcome.is_ok();
        if reached {
            self.exported_ok.inc_by(count);
        } else {
            self.exported_failed.inc_by(count);
        }
        if self.reachable == Some(reached) {
            return;
        }
        match outcome {
            Err(error) => log::warn!(
                target: "steward::trace",
                "spans cannot be exported to the OTLP collector ({error}); they are dropped until it answers"
            ),
            Ok(()) if self.reachable.is_some() => {
                log::info!(target: "steward::trace", "the OTLP collector answers again")
            }
            Ok(()) => {}
        }
        self.reachable = Some(reached);
    }
}

//! Trace context across actor messages, and the spans of the stores.
//!
//! OpenTelemetry keeps the current trace context in a thread-local, which is right for code
//! that runs as one call chain and wrong for actors: a message is handled in the actor's own
//! task, later, maybe on another thread, so whatever was current when it was sent is gone.
//! Two pieces carry it across:
//!
//! - [`Traced`] wraps a message with the sender's context and the moment it was sent; the
//!   [`Call`] extension sends it (`addr.call(msg)` where one writes `addr.send(msg)`).
//! - [`handle_traced`] is how an actor handles a `Traced<M>`: it times the mailbox wait
//!   (`actor_mailbox_wait_seconds{actor}`), opens a span for the message that is the parent of
//!   everything done for it (Redis commands, statements), and makes the sender's context
//!   current on every poll of the reply future, so log lines written while handling it carry
//!   the request's `trace_id`. steward's store actors and job workers implement
//!   `Handler<Traced<M>>` for each of their messages; an actor of a service's own does it with
//!   [`TracedActor`] and one line of [`traced_messages!`](crate::traced_messages).
//!
//! A message sent with plain `send` still works; it is handled outside any trace.
//!
//! What log lines carry is kept apart: [`Ids`], a `Copy` pair in a cell of its own, set with
//! the context by every [`Scope`]. Carrying OpenTelemetry's context costs more, so it is
//! carried only for traces that are recorded; the ids always are.
//!
//! Spans are made only when tracing is on ([`enable`], from `[tracing] enabled`) and the
//! current trace is sampled. New traces are sampled before any span exists ([`sample_root`]),
//! so with tracing off, or for the traces left out, a store call costs a thread-local read
//! here and no allocation.

use std::any::type_name;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use actix::dev::{Request, ToEnvelope};
use actix::prelude::*;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer,
};
use opentelemetry::ContextGuard;
use opentelemetry::{Context as TraceContext, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prometheus::Histogram;

use crate::error::StoreError;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// The instrumentation scope of every span steward makes.
pub const SCOPE: &str = "steward";

/// The share of new traces recorded, as the bits of an `f64`.
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0);

/// Turns span recording on for this process, new traces recorded at `sample_ratio`. steward's
/// start calls it once the tracer provider is installed
/// (`opentelemetry::global::set_tracer_provider`, with a parent-based sampler that records
/// every root it is asked for); until then, and without it, no span is made.
///
/// Why roots are sampled here rather than by the SDK's ratio sampler: a trace the ratio leaves
/// out would still make an SDK span (ids, allocations, a sampler call) and carry an
/// OpenTelemetry context through every actor hop, for nothing; deciding first, a left-out
/// request costs what it costs with tracing off.
pub fn enable(sample_ratio: f64) {
    TRACER.get_or_init(|| global::tracer(SCOPE));
    SAMPLE_RATIO.store(sample_ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Release);
}

/// Whether a new trace (a request without a caller's trace, a job run) is recorded:
/// tracing on, and the draw within `sample_ratio`.
pub fn sample_root() -> bool {
    if !enabled() {
        return false;
    }
    let ratio = f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || rand::random::<f64>() < ratio
}

/// Whether spans are being recorded (`[tracing] enabled`).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer of steward's spans, once tracing is on.
pub fn tracer() -> Option<&'static BoxedTracer> {
    if enabled() {
        TRACER.get()
    } else {
        None
    }
}

/// Whether a child of `parent` would be recorded: tracing on and the parent sampled.
#[inline]
fn records_under(parent: &TraceContext) -> bool {
    enabled() && parent.span().span_context().is_sampled()
}

/// Whether a span started now would be recorded: tracing on and the current trace sampled.
/// For spans whose name or attributes cost something to make.
#[inline]
pub fn recording() -> bool {
    enabled() && TraceContext::map_current(|cx| cx.span().span_context().is_sampled())
}

/// The trace and span a piece of work belongs to, as its log lines show them. Kept apart from
/// OpenTelemetry's context (a thread-local stack of reference-counted maps) in a `Copy` value
/// of its own, so that the trace id reaches every log line at the cost of setting a cell, with
/// tracing off too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    /// The trace.
    pub trace_id: TraceId,
    /// The span within it (with tracing off, the request's own span id).
    pub span_id: SpanId,
}

impl Ids {
    /// The ids of `context`, if it is valid.
    pub fn of(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
        })
    }
}

thread_local! {
    static CURRENT_IDS: Cell<Option<Ids>> = const { Cell::new(None) };
}

/// The ids of the work being done on this thread (a request, an actor message sent with
/// [`Call::call`], a job run): what every log line carries.
#[inline]
pub fn current_ids() -> Option<Ids> {
    CURRENT_IDS.with(Cell::get)
}

/// Where a piece of work runs: OpenTelemetry's context (when tracing is on) and the ids its
/// log lines carry.
#[derive(Clone, Default)]
pub struct Scope {
    /// The context spans made inside it descend from; `None` with tracing off.
    pub context: Option<TraceContext>,
    /// What log lines written inside it carry.
    pub ids: Option<Ids>,
}

impl Scope {
    /// A scope with tracing on: the context and its span's ids.
    pub fn of(context: TraceContext) -> Self {
        let ids = Ids::of(context.span().span_context());
        Self {
            context: Some(context),
            ids,
        }
    }

    /// Makes the scope current until the guard drops.
    pub fn enter(&self) -> ScopeGuard {
        ScopeGuard {
            _context: self.context.clone().map(TraceContext::attach),
            ids: CURRENT_IDS.with(|cell| cell.replace(self.ids)),
        }
    }

    /// `work`, with this scope current on every poll.
    pub fn run<F: Future>(self, work: F) -> InScopeFuture<F> {
        InScopeFuture {
            inner: Box::pin(work),
            scope: MessageScope {
                scope: self,
                handling: None,
            },
        }
    }
}

/// Restores the scope that was current before [`Scope::enter`].
pub struct ScopeGuard {
    _context: Option<ContextGuard>,
    ids: Option<Ids>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        CURRENT_IDS.with(|cell| cell.set(self.ids));
    }
}

/// A span of steward's (or of a service's), ended when dropped. When it is not recorded —
/// tracing off, or the trace not sampled — it holds nothing, and every method is a no-op.
///
/// ```
/// use opentelemetry::KeyValue;
/// use steward_actors::trace::Span;
///
/// async fn render_invoice() {
///     let span = Span::internal("render invoice", || vec![KeyValue::new("invoice.pages", 3)]);
///     span.in_scope(async { /* work, whose spans and log lines hang under this span */ }).await;
/// }
/// ```
pub struct Span {
    cx: Option<TraceContext>,
}

impl Span {
    /// A span of kind `kind` under the current context, with the attributes `attributes`
    /// makes (called only when the span is recorded).
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        TraceContext::map_current(|parent| {
            let Some(tracer) = tracer().filter(|_| records_under(parent)) else {
                return Self::none();
            };
            let span = tracer
                .span_builder(name)
                .with_kind(kind)
                .with_attributes(attributes())
                .start_with_context(tracer, parent);
            Self {
                cx: Some(parent.with_span(span)),
            }
        })
    }

    /// A client span: a call to a store or another service.
    pub fn client(
        name: impl Into<Cow<'static, str>>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        Self::start(name, SpanKind::Client, attributes)
    }

    /// An internal span: a step of the work worth its own timing.
    pub fn internal(
        name: impl Into<Cow<'static, str>>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        Self::start(name, SpanKind::Internal, attributes)
    }

    /// A span that records nothing.
    pub fn none() -> Self {
        Self { cx: None }
    }

    /// Whether this span is recorded.
    pub fn is_recording(&self) -> bool {
        self.cx.is_some()
    }

    /// Adds an attribute.
    pub fn set_attribute(&self, attribute: KeyValue) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(attribute);
        }
    }

    /// Adds an event (something that happened at one moment of the span).
    pub fn add_event(&self, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(cx) = &self.cx {
            cx.span().add_event(name, attributes());
        }
    }

    /// Records how a store call ended: an error status and `error.type` for an error.
    pub fn record<T>(&self, outcome: &Result<T, StoreError>) {
        if let Err(error) = outcome {
            self.fail(error_type(error));
        }
    }

    /// Marks the span failed, with `error.type` = `kind`.
    pub fn fail(&self, kind: &'static str) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(KeyValue::new("error.type", kind));
            cx.span().set_status(Status::error(kind));
        }
    }

    /// Runs `work` with this span current, so that the spans and log lines made inside it
    /// hang under it.
    pub async fn in_scope<F: Future>(&self, work: F) -> F::Output {
        match &self.cx {
            Some(cx) => Scope::of(cx.clone()).run(work).await,
            None => work.await,
        }
    }
}

/// `error.type` of a store error: its kind, never its message (which may carry data).
pub fn error_type(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Timeout => "timeout",
        StoreError::PoolTimeout => "pool_timeout",
        StoreError::DeadlineExceeded => "deadline_exceeded",
        StoreError::BreakerOpen { .. } => "breaker_open",
        StoreError::Conflict(_) => "conflict",
        StoreError::Contention(_) => "contention",
        StoreError::NotFound => "not_found",
        StoreError::Invalid(_) => "invalid",
        StoreError::TooLarge(_) => "too_large",
        StoreError::Full(_) => "full",
        StoreError::Internal(_) => "internal",
    }
}

/// A Redis command's span (`db.system.name = redis`), named after the command (`GET`,
/// `EVALSHA`); never its arguments, which carry keys and values.
pub fn redis_span(cmd: &redis::Cmd) -> Span {
    if !recording() {
        return Span::none();
    }
    let command = match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).to_ascii_uppercase(),
        _ => "redis".to_owned(),
    };
    let operation = command.clone();
    Span::client(command, || {
        vec![
            KeyValue::new("db.system.name", "redis"),
            KeyValue::new("db.operation.name", operation),
        ]
    })
}

/// The W3C propagator: `traceparent` and `tracestate`, parsed and written as the spec says
/// (a malformed header is ignored).
pub fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

/// The current span's `traceparent`, empty outside a trace: what a job records at enqueue.
pub fn current_traceparent() -> String {
    let mut carrier = HashMap::with_capacity(2);
    TraceContext::map_current(|cx| propagator().inject_context(cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// Adds an event to the current span, if it is recorded (a decision taken on the way, like the
/// rate limiter's).
pub fn event(name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
    if recording() {
        TraceContext::map_current(|cx| cx.span().add_event(name, attributes()));
    }
}

/// Adds an attribute to the current span, if it is recorded.
pub fn annotate(attribute: impl FnOnce() -> KeyValue) {
    if recording() {
        TraceContext::map_current(|cx| cx.span().set_attribute(attribute()));
    }
}

/// The span of one run of a job: a new trace (a job outlives the request that queued it, and
/// may run many times), linked to the span that enqueued it (`enqueued_by`, a
/// `traceparent`), with the job's id, kind and attempt. The enqueuing span carries the same
/// `steward.job.id`, so each is found from the other.
pub fn job_span(id: &str, kind: &str, attempt: u32, enqueued_by: Option<&str>) -> Span {
    let Some(tracer) = tracer().filter(|_| sample_root()) else {
        return Span::none();
    };
    let links = enqueued_by
        .map(|traceparent| {
            let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
            propagator().extract(&carrier)
        })
        .map(|cx| cx.span().span_context().clone())
        .filter(|linked| linked.is_valid())
        .map(|linked| vec![Link::with_context(linked)])
        .unwrap_or_default();
    let span = tracer
        .span_builder(format!("job {kind}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("steward.job.id", id.to_owned()),
            KeyValue::new("steward.job.kind", kind.to_owned()),
            KeyValue::new("steward.job.attempt", i64::from(attempt)),
        ])
        .with_links(links)
        .start_with_context(tracer, &TraceContext::new());
    Span {
        cx: Some(TraceContext::new().with_span(span)),
    }
}

/// A message with the trace context it was sent in and the moment it was sent.
///
/// Sent with [`Call::call`]; handled by an actor that implements `Handler<Traced<M>>` with
/// [`handle_traced`]. Its result is `M`'s.
pub struct Traced<M> {
    /// The message.
    pub message: M,
    /// The sender's OpenTelemetry context (taken only with tracing on) and trace ids.
    pub scope: Scope,
    /// When it was sent: the start of its mailbox wait.
    pub sent: Instant,
}

impl<M> Traced<M> {
    /// `message` in the current scope, sent now.
    pub fn new(message: M) -> Self {
        Self {
            message,
            scope: Scope {
                context: enabled().then(TraceContext::current),
                ids: current_ids(),
            },
            sent: Instant::now(),
        }
    }
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

/// `addr.call(msg)`: sends `msg` with the current trace context and its send time, so the
/// actor's span and log lines belong to the caller's trace and its mailbox wait is measured.
/// Use it wherever `send` would do; the answer is the same.
///
/// ```
/// use steward_actors::cache::{CacheActor, Get};
/// use steward_actors::trace::Call;
/// use steward_actors::{Deadline, StoreError};
///
/// async fn read(cache: actix::Addr<CacheActor>) -> Result<Option<Vec<u8>>, StoreError> {
///     cache.call(Get { key: "k".into(), deadline: Deadline::NONE }).await?
/// }
/// ```
pub trait Call<A: Actor> {
    /// Sends `message` inside a [`Traced`].
    fn call<M>(&self, message: M) -> Request<A, Traced<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>;
}

impl<A: Actor> Call<A> for Addr<A> {
    #[inline]
    fn call<M>(&self, message: M) -> Request<A, Traced<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        self.send(Traced::new(message))
    }
}

/// A reply that can run inside a message's span: the futures actors answer with.
pub trait InScope<A: Actor>: Sized {
    /// The reply, with the span's context current on every poll and the span ended (with its
    /// handling time) when the reply is ready.
    fn in_scope(self, scope: MessageScope) -> Self;
}

impl<A: Actor, T: 'static> InScope<A> for ResponseFuture<T> {
    fn in_scope(self, scope: MessageScope) -> Self {
        Box::pin(InScopeFuture { inner: self, scope })
    }
}

impl<A: Actor, T: 'static> InScope<A> for ResponseActFuture<A, T> {
    fn in_scope(self, scope: MessageScope) -> Self {
        Box::pin(InScopeFuture { inner: self, scope })
    }
}

/// The scope a message is handled in (its span's, or the sender's when no span is recorded:
/// log lines still carry the sender's trace), and when handling began if its span is recorded.
pub struct MessageScope {
    scope: Scope,
    handling: Option<Instant>,
}

impl MessageScope {
    fn finish(&self) {
        let (Some(handling), Some(context)) = (self.handling, &self.scope.context) else {
            return;
        };
        let span = context.span();
        span.set_attribute(KeyValue::new(
            "steward.handling_s",
            handling.elapsed().as_secs_f64(),
        ));
        span.end();
    }
}

/// Work polled with its scope current; a message's span ends when its reply is ready.
pub struct InScopeFuture<F: ?Sized> {
    inner: Pin<Box<F>>,
    scope: MessageScope,
}

impl<F: Future + ?Sized> Future for InScopeFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _guard = this.scope.scope.enter();
        let poll = this.inner.as_mut().poll(task);
        if poll.is_ready() {
            this.scope.finish();
        }
        poll
    }
}

impl<A: Actor, F: ActorFuture<A> + ?Sized> ActorFuture<A> for InScopeFuture<F> {
    type Output = F::Output;

    fn poll(
        self: Pin<&mut Self>,
        actor: &mut A,
        ctx: &mut A::Context,
        task: &mut std::task::Context<'_>,
    ) -> Poll<F::Output> {
        let this = self.get_mut();
        let _guard = this.scope.scope.enter();
        let poll = this.inner.as_mut().poll(actor, ctx, task);
        if poll.is_ready() {
            this.scope.finish();
        }
        poll
    }
}

/// An actor whose messages can be sent with [`Call::call`]: it names itself in spans and in
/// `actor_mailbox_wait_seconds{actor}`, whose child it keeps. [`traced_messages!`](crate::traced_messages)
/// then implements `Handler<Traced<M>>` for the messages listed.
pub trait TracedActor: Actor {
    /// The actor's name, and its child of `actor_mailbox_wait_seconds` (resolved once, when
    /// the actor is made: looking a label up per message costs a hash and a lock).
    fn mailbox(&self) -> (&'static str, Histogram);
}

/// Implements `Handler<Traced<M>>` for each message `M` listed, with the actor's own
/// `Handler<M>` and [`handle_traced`]: `traced_messages!(MyActor: Count, Reset);`. The actor
/// implements [`TracedActor`]; each `Handler<M>` answers with a `ResponseFuture` or a
/// `ResponseActFuture`.
///
/// ```
/// use actix::prelude::*;
/// use prometheus::Histogram;
/// use steward_actors::trace::TracedActor;
///
/// #[derive(Message)]
/// #[rtype(result = "u64")]
/// struct Count;
///
/// struct Counter { n: u64, mailbox_wait: Histogram }
/// impl Actor for Counter { type Context = Context<Self>; }
///
/// impl Handler<Count> for Counter {
///     type Result = ResponseFuture<u64>;
///     fn handle(&mut self, _: Count, _: &mut Context<Self>) -> Self::Result {
///         self.n += 1;
///         let n = self.n;
///         Box::pin(async move { n })
///     }
/// }
///
/// impl TracedActor for Counter {
///     fn mailbox(&self) -> (&'static str, Histogram) {
///         ("counter", self.mailbox_wait.clone())
///     }
/// }
///
/// steward_actors::traced_messages!(Counter: Count);
/// ```
#[macro_export]
macro_rules! traced_messages {
    ($actor:ty: $($message:ty),+ $(,)?) => {
        $(
            impl ::actix::Handler<$crate::trace::Traced<$message>> for $actor {
                type Result = <$actor as ::actix::Handler<$message>>::Result;

                fn handle(
                    &mut self,
                    msg: $crate::trace::Traced<$message>,
                    ctx: &mut <$actor as ::actix::Actor>::Context,
                ) -> Self::Result {
                    let (name, wait) = $crate::trace::TracedActor::mailbox(self);
                    $crate::trace::handle_traced(self, name, &wait, msg, ctx)
                }
            }
        )+
    };
}

/// Handles a [`Traced`] message with the actor's own `Handler<M>`: observes the mailbox wait
/// in `mailbox_wait` (the actor's child of `actor_mailbox_wait_seconds`), opens the message's
/// span (from the moment it was sent, the wait and the handling time as attributes: handling
/// began at start + wait) and runs the reply inside it. What
/// [`traced_messages!`](crate::traced_messages) expands to.
pub fn handle_traced<A, M>(
    actor: &mut A,
    name: &'static str,
    mailbox_wait: &Histogram,
    traced: Traced<M>,
    ctx: &mut A::Context,
) -> <A as Handler<M>>::Result
where
    A: Handler<M>,
    M: Message,
    <A as Handler<M>>::Result: InScope<A>,
{
    let wait = traced.sent.elapsed();
    mailbox_wait.observe(wait.as_secs_f64());
    // A message sent outside any trace (a timer's, a probe's) is handled as it is.
    if traced.scope.ids.is_none() {
        return actor.handle(traced.message, ctx);
    }
    let scope = message_span::<M>(name, traced.scope, wait);
    let reply = {
        let _current = scope.scope.enter();
        actor.handle(traced.message, ctx)
    };
    reply.in_scope(scope)
}

/// The span of one message, started when it was sent; it ends when the reply is ready. Not
/// recorded (tracing off, the trace not sampled), the message runs in its sender's context.
fn message_span<M>(actor: &'static str, sender: Scope, wait: Duration) -> MessageScope {
    let recorded = tracer()
        .zip(sender.context.as_ref())
        .filter(|(_, cx)| records_under(cx));
    let Some((tracer, parent)) = recorded else {
        return MessageScope {
            scope: sender,
            handling: None,
        };
    };
    // Only for a recorded span: the name is found by searching the type's path.
    let message = message_name::<M>();
    let now = SystemTime::now();
    let mut builder = tracer
        .span_builder(format!("{actor} {message}"))
        .with_kind(SpanKind::Internal)
        .with_attributes([
            KeyValue::new("steward.actor", actor),
            KeyValue::new("steward.message", message),
            KeyValue::new("steward.mailbox_wait_s", wait.as_secs_f64()),
        ]);
    builder.start_time = now.checked_sub(wait);
    let span = builder.start_with_context(tracer, parent);
    MessageScope {
        scope: Scope::of(parent.with_span(span)),
        handling: Some(Instant::now()),
    }
}

/// `Get` for `steward_actors::cache::Get`: the type's last path segment, generics dropped.
fn message_name<M>() -> &'static str {
    let full = type_name::<M>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::message_name;

    struct Plain;
    struct Generic<T>(T);

    #[test]
    fn message_names_are_short() {
        assert_eq!(message_name::<Plain>(), "Plain");
        assert_eq!(message_name::<Generic<Vec<u8>>>(), "Generic");
    }
}

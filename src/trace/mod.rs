//! Distributed tracing: W3C trace context at the edge, spans through the actors, the stores
//! and the jobs, exported over OTLP/HTTP.
//!
//! # What every request gets, tracing on or off
//!
//! An incoming `traceparent` (and `tracestate`) is continued; a malformed one is ignored, as
//! the W3C specification says, and a new trace starts. The response carries the request's own
//! `traceparent`, so a client can quote it in a bug report, and every log line written on
//! behalf of the request — the access log, the handler's, the actors' and the stores' — carries
//! `trace_id` and `span_id` beside `request_id`.
//!
//! # What `[tracing] enabled = true` adds
//!
//! Spans, following OpenTelemetry's semantic conventions, exported over OTLP/HTTP (protobuf)
//! to `[tracing] endpoint` + `/v1/traces`:
//!
//! - the server span of each request (`http.request.method`, `http.route`,
//!   `http.response.status_code`, `url.path`, `client.address`), with the rate limiter's
//!   decision as an event;
//! - a span per actor message sent with [`Call::call`] (from the moment it was sent, with the
//!   mailbox wait and the handling time apart);
//! - a span per Redis command or script (`db.system.name = redis`, `db.operation.name`) and
//!   per PostgreSQL statement or transaction attempt (`db.system.name = postgresql`, the
//!   statement's name as `db.operation.name`, never its text; a retried attempt records the
//!   SQLSTATE that caused it as `db.response.status_code`);
//! - a trace per job run, linked to the span that enqueued the job; both carry
//!   `steward.job.id`.
//!
//! Sampling is parent-based: a request whose `traceparent` says sampled (or not) follows it,
//! and new traces are recorded at `sample_ratio`. Export never blocks a request: spans wait in
//! a queue of `queue_size`, and past it they are dropped and counted in
//! `tracing_spans_dropped_total`; a collector that stops answering is logged once, and once
//! again when it is back. The last spans are flushed after the stores have stopped, within
//! `export_timeout`.
//!
//! # In a service's own code
//!
//! Send store messages with `call` instead of `send` — the answer is the same, and the work
//! joins the request's trace:
//!
//! ```
//! use actix_web::HttpResponse;
//! use steward::actors::cache::Get;
//! use steward::trace::Call;
//! use steward::{ApiError, Context, RequestDeadline};
//!
//! async fn read(ctx: Context, deadline: RequestDeadline) -> Result<HttpResponse, ApiError> {
//!     let value = ctx.cache()?.call(Get { key: "k".into(), deadline: *deadline }).await??;
//!     Ok(HttpResponse::Ok().body(value.unwrap_or_default()))
//! }
//! ```
//!
//! A step of a handler's or a job's own worth timing is a [`Span`]; an actor of the service's
//! own joins traces by implementing `Handler<Traced<M>>` with [`handle_traced`].

mod edge;
mod export;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use steward_actors::Metrics;

pub use steward_actors::trace::{
    annotate, current_ids, current_traceparent, enabled, error_type, event, handle_traced,
    recording, Call, Ids, InScope, InScopeFuture, MessageScope, Scope, ScopeGuard, Span, Traced,
    TracedActor,
};

pub(crate) use edge::trace as middleware;
pub use edge::HEADER;
use export::ExportQueue;

use crate::config::TracingSettings;

/// The installed exporter, kept by the running service: its last spans are flushed at the end
/// of the shutdown.
#[derive(Clone)]
pub(crate) struct Tracing {
    queue: Arc<export::Shared>,
}

impl Tracing {
    /// Exports what is still queued, waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.queue.flush(timeout)
    }
}

/// Installs the OTLP exporter and the tracer provider for this process when `[tracing]` is
/// enabled (`None` otherwise). One per process: OpenTelemetry's provider is global, so a second
/// service started in the same process (a test suite's) replaces the first's.
pub(crate) fn install(
    settings: &TracingSettings,
    service: &'static str,
    version: &'static str,
    metrics: &Arc<Metrics>,
) -> Result<Option<Tracing>, String> {
    if !settings.enabled {
        return Ok(None);
    }
    let url = if settings.traces_endpoint.is_empty() {
        format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'))
    } else {
        settings.traces_endpoint.clone()
    };
    let headers = parse_headers(&settings.headers).ok_or("tracing.headers is malformed")?;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(settings.export_timeout)
        .with_headers(headers.into_iter().collect())
        .build()
        .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
    let queue = ExportQueue::start(exporter, settings, metrics);
    let flusher = queue.flusher();
    let name = if settings.service_name.is_empty() {
        service.to_owned()
    } else {
        settings.service_name.clone()
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        // New traces are sampled at the edge and at a job's run (`sample_root`), before any
        // span exists; what reaches the SDK is a sampled parent's child or a chosen root.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder()
                .with_service_name(name)
                .with_attribute(KeyValue::new("service.version", version))
                .build(),
        )
        .build();
    // Keeps the tracer's scope name steward's, whoever asks the global provider.
    let _ = provider.tracer(steward_actors::trace::SCOPE);
    opentelemetry::global::set_tracer_provider(provider.clone());
    steward_actors::trace::enable(settings.sample_ratio);
    Ok(Some(Tracing { queue: flusher }))
}

/// `key=value,key=value` (OTEL_EXPORTER_OTLP_HEADERS' format, values percent-decoded) as
/// pairs; `None` when a pair is malformed or would not make a valid header.
pub fn parse_headers(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let (name, value) = (name.trim(), percent_decode(value.trim())?);
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let valid_value = value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            (valid_name && valid_value).then(|| (name.to_owned(), value))
        })
        .collect()
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_headers;

    #[test]
    fn headers_parse_as_otel_writes_them() {
        assert_eq!(parse_headers(""), Some(vec![]));
        assert_eq!(
            parse_headers("api-key=abc, x-team = a%20b"),
            Some(vec![
                ("api-key".into(), "abc".into()),
                ("x-team".into(), "a b".into())
            ])
        );
        for bad in ["novalue", "=x", "bad name=x", "k=%zz", "k=a%0Ab"] {
            assert_eq!(parse_headers(bad), None, "{bad}");
        }
    }
}

//! The W3C trace context of each request, and its server span.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, Tracer,
};
use opentelemetry::{Context, KeyValue};
use steward_actors::trace::{propagator, Ids, Scope};

/// `traceparent`: read from the request, written on every response.
pub const HEADER: HeaderName = HeaderName::from_static("traceparent");

/// Middleware: continues the caller's trace (or starts one), makes it current while the
/// request is handled — so every log line about it carries its `trace_id` — records the server
/// span when tracing is on, and answers with the request's own `traceparent`.
pub async fn trace(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let parent = extract(req.headers());
    let caller = parent.span().span_context().clone();
    let recorded = match caller.is_valid() {
        true => steward_actors::trace::enabled() && caller.is_sampled(),
        false => steward_actors::trace::sample_root(),
    };
    // Not recorded (tracing off, the caller's trace not sampled, or a new trace the ratio
    // leaves out): the ids alone, which cost a few random bytes.
    if !recorded {
        let (ids, flags) = untraced(&caller);
        let scope = Scope {
            context: None,
            ids: Some(ids),
        };
        let mut response = scope.run(next.call(req)).await?;
        insert(&mut response, ids, flags);
        return Ok(response);
    }
    let cx = server_span(&parent, &req);
    let result = Scope::of(cx.clone()).run(next.call(req)).await;
    let span = cx.span();
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            span.set_status(Status::error("the request failed"));
            span.end();
            return Err(error);
        }
    };
    if span.is_recording() {
        let status = response.status();
        let route = response.request().match_pattern();
        let method = response.request().method().as_str().to_owned();
        if let Some(route) = &route {
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.clone()));
        }
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
            span.set_status(Status::error(""));
        }
        span.end();
    }
    let context = span.span_context();
    if let Some(ids) = Ids::of(context) {
        insert(&mut response, ids, context.trace_flags());
    }
    Ok(response)
}

/// The request's own `traceparent`, on its response.
fn insert<B>(response: &mut ServiceResponse<B>, ids: Ids, flags: TraceFlags) {
    if let Ok(value) = HeaderValue::from_bytes(&traceparent(ids, flags)) {
        response.headers_mut().insert(HEADER, value);
    }
}

/// The caller's context from `traceparent` and `tracestate`; empty when absent or malformed.
fn extract(headers: &HeaderMap) -> Context {
    if !headers.contains_key(&HEADER) {
        return Context::new();
    }
    propagator().extract(&Headers(headers))
}

/// The request's server span, a child of the caller's span (or a new trace's root).
fn server_span(parent: &Context, req: &ServiceRequest) -> Context {
    let Some(tracer) = steward_actors::trace::tracer() else {
        return parent.clone();
    };
    let method = req.method().as_str().to_owned();
    // The sampler (by ratio, by parent) needs no attributes: they are made only for a span that
    // is recorded, so the requests a low ratio leaves out cost a span id and little more.
    let span = tracer
        .span_builder(method.clone())
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, parent);
    let cx = parent.with_span(span);
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("http.request.method", method));
        span.set_attribute(KeyValue::new("url.path", req.path().to_owned()));
        span.set_attribute(KeyValue::new(
            "url.scheme",
            req.connection_info().scheme().to_owned(),
        ));
        if let Some(peer) = req.peer_addr() {
            span.set_attribute(KeyValue::new("client.address", peer.ip().to_string()));
        }
        if let Some(agent) = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            span.set_attribute(KeyValue::new("user_agent.original", agent.to_owned()));
        }
    }
    cx
}

/// Unrecorded: the caller's trace (or a new one) with a span id of this request's own, kept
/// nowhere but in the logs and the response header. The sampled flag is passed on
/// as it came, so a downstream service still honours the caller's decision.
fn untraced(caller: &SpanContext) -> (Ids, TraceFlags) {
    let (trace_id, flags) = if caller.is_valid() {
        (caller.trace_id(), caller.trace_flags())
    } else {
        (
            TraceId::from(rand::random::<u128>().max(1)),
            TraceFlags::default(),
        )
    };
    let span_id = SpanId::from(rand::random::<u64>().max(1));
    (Ids { trace_id, span_id }, flags)
}

/// `00-<trace id>-<span id>-<flags>`, written by hand: it is on every response, and the
/// formatting machinery cost more than the rest of the trace context with tracing off.
fn traceparent(ids: Ids, flags: TraceFlags) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 55];
    out[..2].copy_from_slice(b"00");
    let fields: [(&[u8], usize); 3] = [
        (&ids.trace_id.to_bytes(), 3),
        (&ids.span_id.to_bytes(), 36),
        (&[flags.to_u8()], 53),
    ];
    for (bytes, at) in fields {
        for (i, byte) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[usize::from(byte >> 4)];
            out[at + 2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
    }
    out
}

/// The request's headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderValue};
    use opentelemetry::trace::TraceContextExt;

    use super::{extract, traceparent, untraced, HEADER};

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(HEADER, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span_id() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (ids, flags) = untraced(extract(&headers(incoming)).span().span_context());
        assert_eq!(ids.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ids.span_id.to_string(), "00f067aa0ba902b7");
        assert!(flags.is_sampled());
        let written = traceparent(ids, flags);
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", ids.span_id)
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let (ids, flags) = untraced(extract(&headers(bad)).span().span_context());
            assert_ne!(
                ids.trace_id.to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert!(!flags.is_sampled(), "{bad}");
        }
    }
}

//! Request telemetry: Prometheus HTTP metrics and one access-log line per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use super::request_id::RequestId;
use crate::auth::Principal;
use crate::state::EdgeState;

/// Middleware: counts and times every request under its route pattern (never the raw path,
/// which would give every id its own time series) and logs it.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // Taken before the request goes on: HEAD is routed as GET further in.
    let method = method_label(req.method());
    let state = req.app_data::<web::Data<EdgeState>>().cloned();
    let in_flight = state
        .as_ref()
        .map(|s| s.metrics.http_requests_in_flight.clone());
    if let Some(gauge) = &in_flight {
        gauge.inc();
    }
    let result = next.call(req).await;
    if let Some(gauge) = &in_flight {
        gauge.dec();
    }
    let response = result?;
    let elapsed = started.elapsed();
    let request = response.request();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status();
    if let Some(state) = &state {
        let metrics = &state.metrics;
        metrics
            .http_requests_total
            .with_label_values(&[method, route.as_str(), status.as_str()])
            .inc();
        metrics
            .http_request_duration_seconds
            .with_label_values(&[method, route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    // Probes and scrapes arrive every few seconds; keep them out of the info-level log.
    let level = if route.starts_with("/health/") || route == "/metrics" {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    if !log::log_enabled!(target: "steward::access", level) {
        return Ok(response);
    }
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let peer = request
        .peer_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    let principal = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.id().to_owned())
        .unwrap_or_default();
    let status = status.as_u16();
    log::log!(
        target: "steward::access",
        level,
        method = method,
        route = route.as_str(),
        status = status,
        duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        request_id = request_id.as_str(),
        principal = principal.as_str(),
        peer = peer.as_str();
        "{method} {route} {status}"
    );
    Ok(response)
}

/// Known methods keep their name; anything else is "other", so a client cannot create series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

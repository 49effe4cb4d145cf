//! Liveness and readiness, as orchestrators probe them.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::error::{codes, ApiError, ErrorEnvelope};
use crate::state::EdgeState;

/// The body of a passing probe.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// "live"; for readiness "ready", or "degraded" while an optional store (Redis) is down.
    status: &'static str,
    /// Readiness only: each dependency's `status` ("up"/"down"), `latency_ms` and `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Map<String, Value>>,
}

/// `GET /health/live`: 200 while the process serves HTTP. Deliberately checks nothing else: a
/// store outage must not make the orchestrator restart every replica.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "The process serves HTTP", body = Probe))
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Probe {
        status: "live",
        checks: None,
    })
}

/// `GET /health/ready`: 200 only when no shutdown is under way, no child is degraded, and every
/// required store answers a ping within `health.timeout`; otherwise 503 naming what is wrong.
/// The pings are shared for `health.ready_cache` (see [`crate::state::PingCache`]); a shutdown
/// and a degraded child show at once.
/// A store that is down but not required (Redis, by default) turns the status to "degraded"
/// without failing the probe.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready (or degraded)", body = Probe),
        (status = 503, description = "Not ready: shutting down, a required store down, or a child degraded; the checks under `details`", body = ErrorEnvelope),
    )
)]
pub async fn ready(state: web::Data<EdgeState>) -> Result<HttpResponse, ApiError> {
    if state.readiness.is_shutting_down() {
        return Err(ApiError::from(codes::SHUTTING_DOWN).retry_after(5));
    }
    let reports = state.pings.checks(&state.metrics).await;
    let down = |required: bool| -> Vec<&'static str> {
        reports
            .iter()
            .filter(|check| !check.report.ok && check.required == required)
            .map(|check| check.name)
            .collect()
    };
    let (failing, optional_down) = (down(true), down(false));
    let degraded = state.readiness.degraded();
    let checks: Map<String, Value> = reports
        .iter()
        .map(|checked| {
            let report = &checked.report;
            let status = if report.ok { "up" } else { "down" };
            let mut check = json!({"status": status, "latency_ms": report.latency_ms});
            if let Some(error) = &report.error {
                check["error"] = error.as_str().into();
            }
            (checked.name.to_owned(), check)
        })
        .collect();
    if failing.is_empty() && degraded.is_empty() {
        let status = if optional_down.is_empty() {
            "ready"
        } else {
            "degraded"
        };
        return Ok(HttpResponse::Ok().json(Probe {
            status,
            checks: Some(checks),
        }));
    }
    let mut reasons: Vec<String> = failing
        .iter()
        .map(|name| format!("{name} is down"))
        .collect();
    reasons.extend(degraded.iter().map(|name| format!("{name} is degraded")));
    Err(ApiError::new(
        codes::NOT_READY,
        format!("not ready: {}", reasons.join(", ")),
    )
    .retry_after(1)
    .with_details(json!({"checks": checks, "degraded": degraded})))
}

//! Liveness and readiness, as orchestrators probe them.

use actix_web::{web, HttpResponse};
use futures::future::join_all;
use futures::FutureExt;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::state::AppState;

/// `GET /health/live`: 200 while the process serves HTTP. Deliberately checks nothing else: a
/// store outage must not make the orchestrator restart every replica.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

/// `GET /health/ready`: 200 only when no shutdown is under way, no child is degraded, and every
/// store answers a ping within `health.timeout`; otherwise 503 naming what is wrong.
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.readiness.is_shutting_down() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "this instance is shutting down",
            5,
        ));
    }
    let timeout = state.ping_timeout;
    let pings = state
        .probes()
        .map(|(name, probe)| probe.ping(timeout).map(move |report| (name, report)));
    let reports = join_all(pings).await;
    let failing: Vec<&str> = reports
        .iter()
        .filter(|(_, report)| !report.ok)
        .map(|(name, _)| *name)
        .collect();
    let degraded = state.readiness.degraded();
    let checks: Map<String, Value> = reports
        .into_iter()
        .map(|(name, report)| {
            let status = if report.ok { "up" } else { "down" };
            let mut check = json!({"status": status, "latency_ms": report.latency_ms});
            if let Some(error) = report.error {
                check["error"] = error.into();
            }
            (name.to_owned(), check)
        })
        .collect();
    if failing.is_empty() && degraded.is_empty() {
        return Ok(HttpResponse::Ok().json(json!({"status": "ready", "checks": checks})));
    }
    let mut reasons: Vec<String> = failing
        .iter()
        .map(|name| format!("{name} is down"))
        .collect();
    reasons.extend(degraded.iter().map(|name| format!("{name} is degraded")));
    Err(
        ApiError::unavailable("not_ready", format!("not ready: {}", reasons.join(", ")), 1)
            .with_details(json!({"checks": checks, "degraded": degraded})),
    )
}

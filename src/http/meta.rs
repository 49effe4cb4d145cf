//! `/version` and `/metrics`.

use std::time::{Duration, SystemTime};

use actix_web::{web, HttpResponse};
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use utoipa::ToSchema;

use super::admin::Admin;
use super::error::ApiError;
use crate::state::EdgeState;

/// What is running.
#[derive(Serialize, ToSchema)]
pub struct Version {
    /// The service's name.
    name: &'static str,
    /// The service's version.
    version: &'static str,
    /// The steward framework's version.
    steward: &'static str,
    /// Short commit hash of the build, "unknown" outside a git checkout.
    git_commit: &'static str,
    /// RFC 3339.
    build_time: String,
}

/// `GET /version`: what is running, so an operator can tell replicas of a rollout apart.
#[utoipa::path(
    get,
    path = "/version",
    tag = "meta",
    responses((status = 200, description = "The build", body = Version))
)]
pub async fn version(state: web::Data<EdgeState>) -> HttpResponse {
    let built = SystemTime::UNIX_EPOCH
        + Duration::from_secs(env!("STEWARD_BUILD_UNIX").parse().unwrap_or(0));
    HttpResponse::Ok().json(Version {
        name: state.service,
        version: state.version,
        steward: env!("CARGO_PKG_VERSION"),
        git_commit: env!("STEWARD_GIT_COMMIT"),
        build_time: humantime::format_rfc3339_seconds(built).to_string(),
    })
}

/// `GET /metrics`: the registry in Prometheus text format, process metrics included.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(state: web::Data<EdgeState>) -> Result<HttpResponse, ApiError> {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    encoder
        .encode(&state.metrics.registry.gather(), &mut body)
        .map_err(|e| ApiError::from(steward_actors::StoreError::Internal(e.to_string())))?;
    Ok(HttpResponse::Ok()
        .content_type(encoder.format_type())
        .body(body))
}

/// `GET /metrics` behind the admin token (`metrics.require_token`).
pub async fn metrics_for_admin(
    _: Admin,
    state: web::Data<EdgeState>,
) -> Result<HttpResponse, ApiError> {
    metrics(state).await
}

/// `GET /openapi.json`: the OpenAPI 3 document of steward's routes and the service's.
pub async fn openapi(state: web::Data<EdgeState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi.clone())
}

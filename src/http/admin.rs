//! `/admin/*`: operator endpoints behind a bearer token.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use steward_actors::supervisor::{ChildInfo, ListChildren};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use crate::state::AppState;

/// Proof that the request carried `Authorization: Bearer <admin.token>`. Taking it as the
/// first argument of a handler protects the handler.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let expected = req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| state.admin_token.clone());
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        ready(match (expected, given) {
            (Some(expected), Some(given)) if same_secret(expected.as_bytes(), given.as_bytes()) => {
                Ok(Admin)
            }
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs Authorization: Bearer <admin token>",
            )),
        })
    }
}

/// Compares in time independent of where the inputs differ, so the token cannot be guessed
/// byte by byte from response times.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every supervised child.
#[derive(Serialize, ToSchema)]
pub struct Children {
    children: Vec<ChildInfo>,
}

/// `GET /admin/actors`: every supervised child with its state, restarts and last error.
#[utoipa::path(
    get,
    path = "/admin/actors",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The supervision tree", body = Children),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
    )
)]
pub async fn actors(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let children = state.supervisor.send(ListChildren).await.map_err(|e| {
        ApiError::unavailable("unavailable", "the supervisor did not answer", 1)
            .with_cause(e.to_string())
    })?;
    Ok(HttpResponse::Ok().json(Children { children }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    /// A level or env_logger filter: "debug", "warn,steward=trace".
    level: String,
}

/// `PUT /admin/log-level {"level": "debug"}`: changes the log filter of the running process.
#[utoipa::path(
    put,
    path = "/admin/log-level",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = LogLevel,
    responses(
        (status = 200, description = "The filter now in force", body = LogLevel),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "Not a level or filter", body = ErrorEnvelope),
    )
)]
pub async fn set_log_level(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<LogLevel>,
) -> Result<HttpResponse, ApiError> {
    state.log.set_filter(&body.level).map_err(|expected| {
        ApiError::unprocessable("invalid_log_level", format!("expected {expected}"))
    })?;
    log::warn!(
        "log filter changed to {:?} through /admin/log-level",
        body.level
    );
    Ok(HttpResponse::Ok().json(body.into_inner()))
}

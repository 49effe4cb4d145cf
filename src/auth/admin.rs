//! `/admin/api-keys`: issue, list and revoke API keys (behind the admin token).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiKeys, IssuedKey, KeyInfo};
use crate::http::admin::Admin;
use crate::http::error::{codes, ApiError, ErrorEnvelope};
use crate::state::EdgeState;
use crate::telemetry::AUDIT;

/// Mounts the routes (when the admin token and API keys are both on).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/api-keys")
            .route(web::post().to(issue))
            .route(web::get().to(list)),
    )
    .service(web::resource("/admin/api-keys/{id}").route(web::delete().to(revoke)));
}

/// What `POST /admin/api-keys` takes.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The principal is `key:<name>`: 1-64 of `A-Z a-z 0-9 . _ -`. Keys issued under one
    /// name are one principal.
    name: String,
    /// Up to 32 scopes, each 1-64 of `A-Z a-z 0-9 : . _ -`.
    #[serde(default)]
    scopes: Vec<String>,
}

/// Every live key.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyInfo>,
}

fn keys(state: &EdgeState) -> Result<&ApiKeys, ApiError> {
    state
        .auth
        .api_keys()
        .ok_or_else(|| ApiError::new(codes::NOT_FOUND, "API keys are off (auth.api_keys)"))
}

/// `POST /admin/api-keys {"name", "scopes"}`: 201 with the key, shown this once.
#[utoipa::path(
    post,
    path = "/admin/api-keys",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = NewKey,
    responses(
        (status = 201, description = "Issued; the key is in this answer only", body = IssuedKey),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
        (status = 409, description = "auth.api_keys.max_keys keys exist", body = ErrorEnvelope),
        (status = 422, description = "A name or scope out of bounds", body = ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorEnvelope),
    )
)]
pub async fn issue(
    admin: Admin,
    state: web::Data<EdgeState>,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let NewKey { name, scopes } = body.into_inner();
    let issued = keys(&state)?.issue(name, scopes).await?;
    log::warn!(target: AUDIT, peer:% = admin.peer, request_id = admin.request_id.as_str(), token_id = admin.token_id.as_str(), key_id = issued.id.as_str(); "API key issued for key:{} with scopes {:?}", issued.name, issued.scopes);
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(issued))
}

/// `GET /admin/api-keys`: every live key, oldest first (never the keys themselves).
#[utoipa::path(
    get,
    path = "/admin/api-keys",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every live key", body = KeyList),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorEnvelope),
    )
)]
pub async fn list(_: Admin, state: web::Data<EdgeState>) -> Result<HttpResponse, ApiError> {
    let keys = keys(&state)?.list().await?;
    Ok(HttpResponse::Ok().json(KeyList { keys }))
}

/// `DELETE /admin/api-keys/{id}`: 204; the key fails at once here and within
/// `auth.cache_ttl` on every other replica.
#[utoipa::path(
    delete,
    path = "/admin/api-keys/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The key's id (16 hex digits)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorEnvelope),
    )
)]
pub async fn revoke(
    admin: Admin,
    state: web::Data<EdgeState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if !keys(&state)?.revoke(&id).await? {
        return Err(ApiError::new(codes::NOT_FOUND, "no such API key"));
    }
    log::warn!(target: AUDIT, peer:% = admin.peer, request_id = admin.request_id.as_str(), token_id = admin.token_id.as_str(), key_id = id.as_str(); "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}

//! `/v1/locks/{name}`: distributed locks with fencing tokens, through the lock actor.

use std::time::{Duration, SystemTime};

use actix_web::http::header::HeaderName;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use steward::actors::lock::{self, Acquire, Acquired, Extend, Holder, Inspect, Release};
use utoipa::ToSchema;

use steward::http::error::ErrorEnvelope;
use steward::ApiError;

use super::kv::valid_key;
use crate::errors;
use crate::openapi::LockName;
use steward::trace::Call;
use steward::Context;

const LOCK_TOKEN: HeaderName = HeaderName::from_static("lock-token");

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// Lease length in ms.
    #[schema(minimum = 100, maximum = 600000)]
    ttl_ms: u64,
    /// How long to wait (ms) while another holder has it; 0 answers at once.
    #[serde(default)]
    #[schema(maximum = 30000)]
    wait_ms: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// The token the grant returned.
    token: String,
    /// New lease length from now, in ms.
    #[schema(minimum = 100, maximum = 600000)]
    ttl_ms: u64,
}

/// A granted lease.
#[derive(Serialize, ToSchema)]
pub struct LeaseGranted {
    name: String,
    /// Proves ownership for extend and release; keep it secret.
    token: String,
    /// Grows with every grant of this lock; storage can refuse writes with a smaller one.
    fencing_token: i64,
    /// RFC 3339, by the Redis server's clock.
    expires_at: String,
}

/// A lease extended.
#[derive(Serialize, ToSchema)]
pub struct LeaseExtended {
    name: String,
    expires_at: String,
}

/// What anyone may know about a lock: never its token.
#[derive(Serialize, ToSchema)]
pub struct LockInfo {
    name: String,
    held: bool,
    fencing_token: Option<i64>,
    expires_in_ms: Option<i64>,
}

fn ttl(ms: u64) -> Result<Duration, ApiError> {
    if (100..=600_000).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(errors::INVALID_LOCK_TTL.into())
    }
}

fn not_owner() -> ApiError {
    errors::NOT_LOCK_OWNER.into()
}

/// Unix milliseconds as RFC 3339.
fn timestamp(unix_ms: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `POST /v1/locks/{name} {"ttl_ms", "wait_ms"}`: 201 with the lease, or 409 `lock_held`.
#[utoipa::path(
    post,
    path = "/v1/locks/{name}",
    tag = "locks",
    params(LockName),
    request_body = AcquireBody,
    responses(
        (status = 201, description = "Granted", body = LeaseGranted),
        (status = 409, description = "Held by another (`Retry-After`, `details.retry_after_ms`)", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "ttl_ms or wait_ms out of range", body = ErrorEnvelope),
    )
)]
pub async fn acquire(
    ctx: Context,
    name: web::Path<String>,
    body: web::Json<AcquireBody>,
) -> Result<HttpResponse, ApiError> {
    valid_key(&name)?;
    let ttl = ttl(body.ttl_ms)?;
    if body.wait_ms > 30_000 {
        return Err(errors::INVALID_WAIT.into());
    }
    let acquire = Acquire {
        name: lock::LockName::client(name.into_inner()),
        ttl,
        wait: Duration::from_millis(body.wait_ms),
        holder: Holder::Client,
    };
    match ctx.locks()?.call(acquire).await?? {
        Acquired::Granted(lease) => Ok(HttpResponse::Created().json(LeaseGranted {
            name: lease.name.name,
            token: lease.token,
            fencing_token: lease.fencing_token,
            expires_at: timestamp(lease.expires_at_ms),
        })),
        Acquired::Held { retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            Err(ApiError::from(errors::LOCK_HELD)
                .retry_after(secs)
                .with_details(json!({"retry_after_ms": retry_after.as_millis() as u64})))
        }
    }
}

/// `PUT /v1/locks/{name} {"token", "ttl_ms"}`: 200 with the new expiry, or 409.
#[utoipa::path(
    put,
    path = "/v1/locks/{name}",
    tag = "locks",
    params(LockName),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "Extended", body = LeaseExtended),
        (status = 409, description = "The token does not hold the lock", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "ttl_ms out of range", body = ErrorEnvelope),
    )
)]
pub async fn extend(
    ctx: Context,
    name: web::Path<String>,
    body: web::Json<ExtendBody>,
) -> Result<HttpResponse, ApiError> {
    valid_key(&name)?;
    let ExtendBody { token, ttl_ms } = body.into_inner();
    let extend = Extend {
        name: lock::LockName::client(name.as_str()),
        token,
        ttl: ttl(ttl_ms)?,
    };
    match ctx.locks()?.call(extend).await?? {
        Some(expires_at_ms) => Ok(HttpResponse::Ok().json(LeaseExtended {
            name: name.into_inner(),
            expires_at: timestamp(expires_at_ms),
        })),
        None => Err(not_owner()),
    }
}

/// `DELETE /v1/locks/{name}` with `Lock-Token`: 204, or 409 when the token does not hold it.
#[utoipa::path(
    delete,
    path = "/v1/locks/{name}",
    tag = "locks",
    params(LockName, ("Lock-Token" = String, Header, min_length = 1, description = "The token the grant returned")),
    responses(
        (status = 204, description = "Released"),
        (status = 409, description = "The token does not hold the lock", body = ErrorEnvelope),
    )
)]
pub async fn release(
    ctx: Context,
    name: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    valid_key(&name)?;
    let token = req
        .headers()
        .get(LOCK_TOKEN)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::from(errors::MISSING_LOCK_TOKEN))?;
    let release = Release {
        name: lock::LockName::client(name.into_inner()),
        token: token.to_owned(),
    };
    if ctx.locks()?.call(release).await?? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_owner())
    }
}

/// `GET /v1/locks/{name}`: whether it is held, its fencing token and time left (never the
/// token).
#[utoipa::path(
    get,
    path = "/v1/locks/{name}",
    tag = "locks",
    params(LockName),
    responses((status = 200, description = "The lock's state", body = LockInfo))
)]
pub async fn inspect(ctx: Context, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    valid_key(&name)?;
    let lock = ctx
        .locks()?
        .call(Inspect {
            name: lock::LockName::client(name.as_str()),
        })
        .await??;
    Ok(HttpResponse::Ok().json(LockInfo {
        name: name.into_inner(),
        held: lock.held,
        fencing_token: lock.fencing_token,
        expires_in_ms: lock.expires_in_ms,
    }))
}

//! `/v1/kv/{key}`: byte values in Redis through the cache actor.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use steward::actors::cache::{Delete, Get, Set};
use utoipa::IntoParams;

use steward::http::error::ErrorEnvelope;
use steward::ApiError;

use crate::config::KvConfig;
use crate::errors;
use crate::openapi::Key;
use steward::trace::Call;
use steward::{Context, RequestDeadline};

/// The longest TTL a client may ask for: 30 days.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// Keys (and lock names) are 1-200 characters of `[A-Za-z0-9._:-]`: safe in Redis keys, URLs
/// and logs without escaping.
pub fn valid_key(key: &str) -> Result<(), ApiError> {
    let ok = (1..=200).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(errors::INVALID_KEY.into())
    }
}

/// The kv API's keys live in their own namespace under the configured prefix.
pub fn cache_key(key: &str) -> String {
    format!("kv:{key}")
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// Seconds until the value expires, 1-2592000; `kv.default_ttl` when absent.
    #[param(minimum = 1, maximum = 2592000)]
    ttl: Option<u64>,
}

/// `PUT /v1/kv/{key}?ttl=<seconds>`: stores the body; 204.
#[utoipa::path(
    put,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(Key, PutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value, any bytes up to `kv.max_value_size`"),
    responses((status = 204, description = "Stored"))
)]
pub async fn put(
    ctx: Context,
    deadline: RequestDeadline,
    key: web::Path<String>,
    query: web::Query<PutQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    valid_key(&key)?;
    let config = ctx.config::<KvConfig>();
    let ttl = match query.ttl {
        None => config.default_ttl,
        Some(secs @ 1..=MAX_TTL_SECS) => Duration::from_secs(secs),
        Some(_) => {
            return Err(ApiError::new(
                errors::INVALID_TTL,
                format!("ttl is a number of seconds from 1 to {MAX_TTL_SECS}"),
            ))
        }
    };
    let max_value_size = config.max_value_size;
    if body.len() > max_value_size {
        return Err(ApiError::new(
            errors::VALUE_TOO_LARGE,
            format!("values are at most {max_value_size} bytes"),
        ));
    }
    let set = Set {
        key: cache_key(&key),
        value: body.to_vec(),
        ttl,
        deadline: *deadline,
    };
    ctx.cache()?.call(set).await??;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/kv/{key}`: 200 with the bytes, or 404.
#[utoipa::path(
    get,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(Key),
    responses(
        (status = 200, description = "The value, as stored", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "No value under this key", body = ErrorEnvelope),
    )
)]
pub async fn get(
    ctx: Context,
    deadline: RequestDeadline,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    valid_key(&key)?;
    let value = ctx
        .cache()?
        .call(Get {
            key: cache_key(&key),
            deadline: *deadline,
        })
        .await??;
    value_response(value)
}

/// 200 with the bytes, or 404.
pub fn value_response(value: Option<Vec<u8>>) -> Result<HttpResponse, ApiError> {
    match value {
        Some(value) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(value)),
        None => Err(errors::KEY_NOT_FOUND.into()),
    }
}

/// `DELETE /v1/kv/{key}`: 204, whether or not the key existed.
#[utoipa::path(
    delete,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(Key),
    responses((status = 204, description = "Gone, whether or not it existed"))
)]
pub async fn delete(
    ctx: Context,
    deadline: RequestDeadline,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    valid_key(&key)?;
    ctx.cache()?
        .call(Delete {
            key: cache_key(&key),
            deadline: *deadline,
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

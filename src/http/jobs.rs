//! `/v1/jobs`: enqueue background jobs, follow them, and handle dead letters.

use std::time::Duration;

use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use steward_actors::jobs::{Enqueue, GetJob, ListDead, RetryDead};
use steward_actors::StoreError;

use super::error::ApiError;
use super::pagination::page_limit;
use crate::state::AppState;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The longest a job can be delayed: a week.
const MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    kind: String,
    #[serde(default)]
    payload: serde_json::Value,
    max_attempts: Option<u32>,
    #[serde(default)]
    delay_ms: u64,
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "job_not_found", "no such job")
}

/// Job ids are what the queue hands out: 32 hex digits.
fn valid_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// `POST /v1/jobs {"kind", "payload", "max_attempts"?, "delay_ms"?}` with an optional
/// `Idempotency-Key` (the same key answers with the same job): 202 with its id and Location.
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewJob>,
) -> Result<HttpResponse, ApiError> {
    let job = body.into_inner();
    if !state.job_kinds.contains(&job.kind.as_str()) {
        return Err(ApiError::unprocessable(
            "unknown_job_kind",
            format!(
                "no job kind {:?}; known kinds: {}",
                job.kind,
                state.job_kinds.join(", ")
            ),
        ));
    }
    let max_attempts = job.max_attempts.unwrap_or(state.default_max_attempts);
    if !(1..=25).contains(&max_attempts) {
        return Err(ApiError::unprocessable(
            "invalid_max_attempts",
            "max_attempts is from 1 to 25",
        ));
    }
    if job.delay_ms > MAX_DELAY_MS {
        return Err(ApiError::unprocessable(
            "invalid_delay",
            format!("delay_ms is from 0 to {MAX_DELAY_MS}"),
        ));
    }
    let idempotency_key = match req.headers().get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key is 1-255 visible ASCII characters",
                    )
                })?
                .to_owned(),
        ),
    };
    let enqueue = Enqueue {
        kind: job.kind,
        payload: job.payload,
        max_attempts,
        delay: Duration::from_millis(job.delay_ms),
        idempotency_key,
    };
    let enqueued = state
        .jobs()?
        .send(enqueue)
        .await?
        .map_err(|error| match error {
            StoreError::Invalid(message) => ApiError::unprocessable("unknown_job_kind", message),
            other => other.into(),
        })?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/jobs/{}", enqueued.id)))
        .json(json!({"id": enqueued.id, "status": "queued", "created": enqueued.created})))
}

/// `GET /v1/jobs/{id}`: the status document.
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    valid_id(&id)?;
    let status = state
        .jobs()?
        .send(GetJob {
            id: id.into_inner(),
        })
        .await??;
    status
        .map(|s| HttpResponse::Ok().json(s))
        .ok_or_else(not_found)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/jobs/dead?limit=&cursor=`: dead letters, oldest first.
pub async fn dead(
    state: web::Data<AppState>,
    query: web::Query<DeadQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)? as usize;
    // Cursors are dead-letter entry ids ("<ms>-<seq>"), opaque to clients.
    if let Some(cursor) = &query.cursor {
        let ok = cursor.split_once('-').is_some_and(|(ms, seq)| {
            !ms.is_empty()
                && !seq.is_empty()
                && (ms.to_owned() + seq).bytes().all(|b| b.is_ascii_digit())
        });
        if !ok {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "the cursor is not one this API returned",
            ));
        }
    }
    let mut items = state
        .jobs()?
        .send(ListDead {
            after: query.cursor.clone(),
            limit: limit + 1,
        })
        .await??;
    let next = (items.len() > limit).then(|| items[limit - 1].entry.clone());
    items.truncate(limit);
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next})))
}

/// `POST /v1/jobs/dead/{id}/retry`: queues a dead job again with fresh attempts; 202.
pub async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    valid_id(&id)?;
    let id = id.into_inner();
    if state.jobs()?.send(RetryDead { id: id.clone() }).await?? {
        Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/v1/jobs/{id}")))
            .json(json!({"id": id, "status": "queued"})))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "dead_job_not_found",
            "no dead job with this id",
        ))
    }
}

//! `/v1/jobs`: enqueue background jobs, follow them, and handle dead letters.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use steward::actors::jobs::{DeadJob, Enqueue, GetJob, JobStatus, ListDead, RetryDead};
use steward::actors::StoreError;
use utoipa::{IntoParams, ToSchema};

use steward::http::error::ErrorEnvelope;
use steward::ApiError;

use crate::errors;
use crate::openapi::JobId;
use steward::http::idempotency;
use steward::http::pagination::{page_limit, Page};
use steward::{Context, Principal, RequestDeadline};

use super::{viewer, ADMIN_SCOPE};
use crate::ledger::{self, Ledger};
use steward::trace::Call;

/// What a client refused by a full queue is told to wait, in seconds.
const QUEUE_FULL_RETRY_SECS: u64 = 5;
/// The longest a job can be delayed: a week.
const MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// A registered kind: `ledger.reconcile`, `ledger.statement`, ...
    kind: String,
    /// Handed to the handler as is.
    #[serde(default)]
    payload: serde_json::Value,
    /// `workers.max_attempts` when absent.
    #[schema(minimum = 1, maximum = 25)]
    max_attempts: Option<u32>,
    /// Run no earlier than this many ms from now (at most a week).
    #[serde(default)]
    #[schema(maximum = 604800000)]
    delay_ms: u64,
}

/// A job accepted into the queue (or the one an earlier request with the same key created).
#[derive(Serialize, ToSchema)]
pub struct JobAccepted {
    id: String,
    /// Always "queued": follow the job at `Location`.
    status: &'static str,
    /// False when the `Idempotency-Key` named an existing job. Absent on a dead-letter retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
}

/// 503 while `workers.max_queued` jobs wait: the workers will make room.
fn queue_full(cause: String) -> ApiError {
    ApiError::from(errors::QUEUE_FULL)
        .retry_after(QUEUE_FULL_RETRY_SECS)
        .with_cause(cause)
}

fn not_found() -> ApiError {
    errors::JOB_NOT_FOUND.into()
}

/// Job ids are what the queue hands out: 32 hex digits.
fn valid_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// Kinds that act on the whole ledger, not on the caller's accounts.
const ADMIN_KINDS: [&str; 2] = ["ledger.reconcile", "ledger.prune_idempotency_keys"];

/// Whether `principal` may queue `job`: maintenance kinds need [`ADMIN_SCOPE`]; a statement
/// needs an account the principal sees (404 otherwise, as for any account it does not own).
async fn may_enqueue(
    ctx: &Context,
    principal: &Principal,
    deadline: steward::Deadline,
    job: &NewJob,
) -> Result<(), ApiError> {
    if ADMIN_KINDS.contains(&job.kind.as_str()) {
        return principal.require_scope(ADMIN_SCOPE);
    }
    if job.kind != "ledger.statement" {
        return Ok(());
    }
    let viewer = viewer(principal);
    let Some(id) = job.payload.get("account_id").and_then(|id| id.as_i64()) else {
        return Ok(()); // the job refuses the payload itself
    };
    let account = ledger::account(&Ledger::new(ctx, deadline)?, id).await?;
    if account.is_some_and(|a| viewer.sees(&a.owner)) {
        return Ok(());
    }
    let message = format!("account {id} does not exist");
    Err(ApiError::new(errors::ACCOUNT_NOT_FOUND, message))
}

/// `POST /v1/jobs {"kind", "payload", "max_attempts"?, "delay_ms"?}` with an optional
/// `Idempotency-Key` (the same key answers with the same job): 202 with its id and Location.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "1-255 visible ASCII characters; the same key answers with the same job")),
    request_body = NewJob,
    responses(
        (status = 202, description = "Queued", body = JobAccepted,
            headers(("Location" = String, description = "/v1/jobs/{id}"))),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "Unknown kind, or max_attempts or delay_ms out of range", body = ErrorEnvelope),
    )
)]
pub async fn create(
    ctx: Context,
    principal: Principal,
    deadline: RequestDeadline,
    req: HttpRequest,
    body: web::Json<NewJob>,
) -> Result<HttpResponse, ApiError> {
    let job = body.into_inner();
    may_enqueue(&ctx, &principal, *deadline, &job).await?;
    let jobs = ctx.jobs();
    if !jobs.knows(&job.kind) {
        let known = jobs.kinds().join(", ");
        let message = format!("no job kind {:?}; known kinds: {known}", job.kind);
        return Err(ApiError::new(errors::UNKNOWN_JOB_KIND, message));
    }
    let max_attempts = job.max_attempts.unwrap_or(jobs.default_attempts());
    if !(1..=25).contains(&max_attempts) {
        return Err(errors::INVALID_MAX_ATTEMPTS.into());
    }
    if job.delay_ms > MAX_DELAY_MS {
        let message = format!("delay_ms is from 0 to {MAX_DELAY_MS}");
        return Err(ApiError::new(errors::INVALID_DELAY, message));
    }
    let idempotency_key = idempotency::scoped_key(&req)?;
    let enqueue = Enqueue {
        kind: job.kind,
        payload: job.payload,
        max_attempts,
        delay: Duration::from_millis(job.delay_ms),
        idempotency_key,
        principal: Some(principal.id().to_owned()),
    };
    let enqueued = jobs.submit(enqueue).await.map_err(|error| match error {
        StoreError::Invalid(message) => ApiError::new(errors::UNKNOWN_JOB_KIND, message),
        StoreError::Full(cause) => queue_full(cause),
        other => other.into(),
    })?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/jobs/{}", enqueued.id)))
        .json(JobAccepted {
            id: enqueued.id,
            status: "queued",
            created: Some(enqueued.created),
        }))
}

/// `GET /v1/jobs/{id}`: the status document.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(JobId),
    responses(
        (status = 200, description = "The job's status document", body = JobStatus),
        (status = 404, description = "No such job (or its status expired)", body = ErrorEnvelope),
    )
)]
pub async fn get(
    ctx: Context,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    valid_id(&id)?;
    let status = ctx
        .jobs()
        .worker(None)?
        .call(GetJob {
            id: id.into_inner(),
        })
        .await??;
    // Another principal's job does not exist as far as this one can tell.
    status
        .filter(|s| viewer(&principal).sees(s.principal.as_deref().unwrap_or_default()))
        .map(|s| HttpResponse::Ok().json(s))
        .ok_or_else(not_found)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadQuery {
    /// Items per page, 1-100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]+-[0-9]+$")]
    cursor: Option<String>,
}

/// `GET /v1/jobs/dead?limit=&cursor=`: dead letters, oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs/dead",
    tag = "jobs",
    params(DeadQuery),
    responses(
        (status = 200, description = "Dead letters, oldest first", body = Page<DeadJob>),
        (status = 403, description = "Without the ledger:admin scope", body = ErrorEnvelope),
    )
)]
pub async fn dead(
    ctx: Context,
    principal: Principal,
    query: web::Query<DeadQuery>,
) -> Result<HttpResponse, ApiError> {
    // Every principal's failures, payloads included: an operator's view.
    principal.require_scope(ADMIN_SCOPE)?;
    let limit = page_limit(query.limit)? as usize;
    // Cursors are dead-letter entry ids ("<ms>-<seq>"), opaque to clients.
    if let Some(cursor) = &query.cursor {
        // Both parts must fit 64 bits, or Redis refuses the id (a 500 before).
        let ok = cursor.split_once('-').is_some_and(|(ms, seq)| {
            [ms, seq]
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u64>().is_ok())
        });
        if !ok {
            return Err(steward::codes::INVALID_CURSOR.into());
        }
    }
    let items = ctx
        .jobs()
        .worker(None)?
        .call(ListDead {
            after: query.cursor.clone(),
            limit: limit + 1,
        })
        .await??;
    Ok(HttpResponse::Ok().json(Page::keyset(items, limit, |dead| dead.entry.clone())))
}

/// `POST /v1/jobs/dead/{id}/retry`: queues a dead job again with fresh attempts; 202.
#[utoipa::path(
    post,
    path = "/v1/jobs/dead/{id}/retry",
    tag = "jobs",
    params(JobId),
    responses(
        (status = 202, description = "Queued again", body = JobAccepted,
            headers(("Location" = String, description = "/v1/jobs/{id}"))),
        (status = 403, description = "Without the ledger:admin scope", body = ErrorEnvelope),
        (status = 404, description = "No such dead job", body = ErrorEnvelope),
    )
)]
pub async fn retry(
    ctx: Context,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require_scope(ADMIN_SCOPE)?;
    valid_id(&id)?;
    let id = id.into_inner();
    let retried = ctx
        .jobs()
        .worker(None)?
        .call(RetryDead { id: id.clone() })
        .await?
        .map_err(|error| match error {
            StoreError::Full(cause) => queue_full(cause),
            other => other.into(),
        })?;
    if retried {
        Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/v1/jobs/{id}")))
            .json(JobAccepted {
                id,
                status: "queued",
                created: None,
            }))
    } else {
        Err(errors::DEAD_JOB_NOT_FOUND.into())
    }
}

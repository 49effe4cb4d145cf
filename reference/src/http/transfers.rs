//! `POST /v1/transfers`: money between accounts, exactly once per idempotency key.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use steward::actors::cache::Delete;

use super::accounts::cache_key;
use steward::http::error::ErrorEnvelope;
use steward::ApiError;

use crate::errors;
use crate::ledger::{self, Ledger, Transfer, TransferAnswer, TransferRefusal, TransferRequest};
use steward::http::idempotency;
use steward::trace::Call;
use steward::{Context, Deadline, Principal, RequestDeadline};

const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `POST /v1/transfers {"from", "to", "amount"}` with `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "transfers",
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, description = "1-255 visible ASCII characters; the same key with the same request returns the first answer again")),
    request_body = TransferRequest,
    responses(
        (status = 201, description = "Moved (or the replay of the first answer to this key)", body = Transfer,
            headers(("Idempotent-Replayed" = String, description = "true when this is a replay"))),
        (status = 404, description = "An account does not exist", body = ErrorEnvelope),
        (status = 409, description = "Insufficient funds", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "Invalid amount or accounts, or the key was used with another request", body = ErrorEnvelope),
    )
)]
pub async fn create(
    ctx: Context,
    principal: Principal,
    deadline: RequestDeadline,
    req: HttpRequest,
    body: web::Json<TransferRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::scoped_key(&req)?
        .ok_or_else(|| ApiError::from(errors::MISSING_IDEMPOTENCY_KEY))?;
    let mut request = body.into_inner();
    request.debitor = principal.id().to_owned();
    if request.amount <= 0 {
        return Err(errors::INVALID_AMOUNT.into());
    }
    if request.from == request.to {
        return Err(errors::SAME_ACCOUNT.into());
    }
    let (from, to) = (request.from, request.to);
    let answer = match ledger::transfer(&Ledger::new(&ctx, *deadline)?, key, request).await {
        Ok(answer) => answer,
        Err(TransferRefusal::KeyReused) => return Err(errors::IDEMPOTENCY_KEY_REUSED.into()),
        Err(TransferRefusal::Store(error)) => return Err(error.into()),
    };
    if answer.status == 201 && !answer.replayed {
        invalidate(&ctx, [from, to]).await;
    }
    respond(answer)
}

/// Deletes the cached accounts after the commit. A failure leaves at most an entry that
/// expires with `accounts.cache_ttl`; the transfer itself stands. Not bounded by the request's
/// deadline: the money has moved, and the cache must hear of it even if the client has gone.
async fn invalidate(ctx: &Context, ids: [i64; 2]) {
    let Ok(cache) = ctx.cache() else { return };
    for id in ids {
        let outcome = match cache
            .call(Delete {
                key: cache_key(id),
                deadline: Deadline::NONE,
            })
            .await
        {
            Ok(outcome) => outcome,
            Err(mailbox) => Err(mailbox.into()),
        };
        if let Err(error) = outcome {
            log::warn!(target: "steward::http", "could not invalidate account {id} in the cache: {error}");
        }
    }
}

/// The stored answer as an HTTP response, marked when it is a replay.
fn respond(answer: TransferAnswer) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let replayed = HeaderValue::from_static(if answer.replayed { "true" } else { "false" });
    if status.is_success() {
        return Ok(HttpResponse::build(status)
            .insert_header((REPLAYED, replayed))
            .json(answer.body));
    }
    let name = answer.body["code"].as_str().unwrap_or_default();
    let message = answer.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(code) = errors::find(answer.status, name) else {
        let cause = format!(
            "a stored answer has an unknown code: {} {name}",
            answer.status
        );
        return Err(ApiError::from(steward::codes::INTERNAL).with_cause(cause));
    };
    Err(ApiError::new(code, message).with_header(REPLAYED, replayed))
}

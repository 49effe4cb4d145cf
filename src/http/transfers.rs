//! `POST /v1/transfers`: money between accounts, exactly once per idempotency key.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use steward_actors::cache::Delete;

use super::accounts::cache_key;
use super::error::{ApiError, ErrorEnvelope};
use super::idempotency;
use crate::ledger::{self, Transfer, TransferAnswer, TransferRefusal, TransferRequest};
use crate::state::AppState;

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
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<TransferRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::scoped_key(&req)?.ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "transfers need an Idempotency-Key header",
        )
    })?;
    let request = body.into_inner();
    if request.amount <= 0 {
        return Err(ApiError::unprocessable(
            "invalid_amount",
            "amount is an integer > 0",
        ));
    }
    if request.from == request.to {
        return Err(ApiError::unprocessable(
            "same_account",
            "from and to must differ",
        ));
    }
    let answer = match ledger::transfer(&state.db()?, key, request).await {
        Ok(answer) => answer,
        Err(TransferRefusal::KeyReused) => {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ))
        }
        Err(TransferRefusal::Store(error)) => return Err(error.into()),
    };
    if answer.status == 201 && !answer.replayed {
        invalidate(&state, [request.from, request.to]).await;
    }
    respond(answer)
}

/// Deletes the cached accounts after the commit. A failure leaves at most an entry that
/// expires with `cache.account_ttl`; the transfer itself stands.
async fn invalidate(state: &AppState, ids: [i64; 2]) {
    let Ok(cache) = state.cache() else { return };
    for id in ids {
        let outcome = match cache.send(Delete { key: cache_key(id) }).await {
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
    let code = answer.body["code"].as_str().unwrap_or("error").to_owned();
    let message = answer.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Err(ApiError::new(status, code, message).with_header(REPLAYED, replayed))
}

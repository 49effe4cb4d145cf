//! The `Idempotency-Key` header: one parser for every route of every service that takes one,
//! and the client scope every key is stored under.
//!
//! A key is stored as `<client>|<key>`, where the client is the rate limiter's identity (the
//! hashed [`Principal`](crate::Principal) id, else — for an anonymous caller — the address), so
//! one principal's key can neither replay another's answer nor be squatted by another:
//! `order-42` of two principals is two keys. Client identities never hold `|`, so no key of one
//! client can spell a key of another.

use actix_web::http::header::HeaderName;
use actix_web::HttpRequest;

use super::client;
use super::error::{codes, ApiError};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The request's `Idempotency-Key` in its client's scope; `None` when the header is absent.
/// A key that is not 1-255 visible ASCII characters is a 400.
pub fn scoped_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| (1..=255).contains(&key.len()))
        .ok_or_else(|| ApiError::from(codes::INVALID_IDEMPOTENCY_KEY))?;
    let client = client::identity_of(req);
    Ok(Some(format!("{client}|{key}")))
}

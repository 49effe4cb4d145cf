//! The one error shape of the HTTP API, and the middleware that makes every error use it.
//!
//! Handlers and extractors return [`ApiError`]; its response carries an [`ErrorBody`] in the
//! response extensions and no body. The [`envelope`] middleware then writes every response
//! with status >= 400 as `{"error": {"code", "message", "request_id"}}`, whether it came from
//! an `ApiError` or from actix-web itself (unknown route, wrong method, payload limits), so no
//! error can escape in another shape or leak a backend message.

use std::borrow::Cow;
use std::fmt;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use steward_actors::StoreError;
use utoipa::ToSchema;

use super::request_id::RequestId;

/// An error answer: status, a stable machine-readable code, and a message for people.
///
/// Boxed: it travels in every handler's `Result`, and errors are the cold path.
#[derive(Debug, Clone)]
pub struct ApiError(Box<Parts>);

#[derive(Debug, Clone)]
struct Parts {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    details: Option<serde_json::Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// What went wrong behind the scenes: logged with the request id, never sent.
    cause: Option<String>,
}

/// The body of every error response: `{"error": {...}}`. The envelope middleware writes it,
/// and the OpenAPI document takes its schema from here.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, in words for people and a code for programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_key`, `lock_held`, `unavailable`, ...
    #[schema(value_type = String)]
    pub code: Cow<'static, str>,
    /// For people; clients branch on `code`.
    pub message: String,
    /// The request's `X-Request-Id`, to find it in the logs.
    pub request_id: String,
    /// More, for some codes (readiness checks, a lock's retry delay).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// What the envelope middleware needs to write an error body.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    code: Cow<'static, str>,
    message: String,
    details: Option<serde_json::Value>,
    cause: Option<String>,
}

impl ApiError {
    /// An error of `status` with a stable `code` and a message for people.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self(Box::new(Parts {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            headers: Vec::new(),
            cause: None,
        }))
    }

    /// A 400: the request cannot be read.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 422: the request is read but asks for something impossible.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503 with `Retry-After`, for a dependency that is down or a service that is stopping.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// A header added to the error response.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// Structured detail added to the envelope under `error.details`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.0.details = Some(details);
        self
    }

    /// Internal detail for the log line, never for the client.
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.0.cause = Some(cause.into());
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.code,
            self.0.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::new(self.0.status);
        for (name, value) in &self.0.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        if self.0.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorBody {
            code: self.0.code.clone(),
            message: self.0.message.clone(),
            details: self.0.details.clone(),
            cause: self.0.cause.clone(),
        });
        response
    }
}

impl From<StoreError> for ApiError {
    /// The one place store errors become statuses. Backend details go to `cause` (the log).
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => ApiError::unavailable(
                "unavailable",
                "a backing store is unavailable; retry later",
                1,
            )
            .with_cause(cause),
            StoreError::Contention(cause) => ApiError::unavailable(
                "contention",
                "too much concurrent work on the same data; retry",
                1,
            )
            .with_cause(cause),
            StoreError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "a backing store did not answer in time",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(1)),
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Invalid(message) => ApiError::unprocessable("invalid", message),
            StoreError::TooLarge(message) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            StoreError::Full(cause) => {
                ApiError::unavailable("full", "the store holds as much as it may; retry later", 5)
                    .with_cause(cause)
            }
            StoreError::Internal(cause) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .with_cause(cause),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(error: actix::MailboxError) -> Self {
        StoreError::from(error).into()
    }
}

/// Maps JSON extractor failures: unreadable JSON is 400, JSON of the wrong shape 422, a body
/// over `server.max_json_size` 413, a non-JSON content type 415.
pub fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &error {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the JSON body exceeds {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            ApiError::unprocessable("invalid_body", inner.to_string())
        }
        JsonPayloadError::Deserialize(inner) => {
            ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}"))
        }
        _ => ApiError::bad_request("invalid_body", "the request body could not be read"),
    };
    api.with_cause(error.to_string()).into()
}

/// A path parameter that does not parse: 400 in the envelope.
pub fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path", error.to_string()).into()
}

/// A query string that does not parse: 400 in the envelope.
pub fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", error.to_string()).into()
}

/// The app's default service: no route matched.
pub async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no route matches this path",
    ))
}

/// Middleware: writes every error response (status >= 400) as the JSON envelope.
pub async fn envelope<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    // The router inside turns every handler and extractor error into a response, so `?` here
    // only passes on what cannot happen. (Cloning the request up front to build a response from
    // an `Err` is not an option: routing needs the request uniquely owned.)
    let response = next.call(req).await?;
    let status = response.status();
    if status.as_u16() < 400 {
        return Ok(response.map_into_left_body());
    }
    let (request, response) = response.into_parts();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let body = response
        .extensions()
        .get::<ErrorBody>()
        .cloned()
        .unwrap_or_else(|| default_body(status, &response));
    if let Some(cause) = &body.cause {
        // A 500 is a bug; a 503/504 is an outage already reported by the store's health
        // checks, logged per request at a level that does not drown the first.
        let level = match status.as_u16() {
            500 => log::Level::Error,
            501..=599 => log::Level::Warn,
            _ => log::Level::Debug,
        };
        log::log!(target: "steward::http", level, request_id = request_id.as_str(), code = body.code.as_ref(); "{}: {cause}", status.as_u16());
    }
    let envelope = ErrorEnvelope {
        error: ErrorDetail {
            code: body.code,
            message: body.message,
            request_id,
            details: body.details,
        },
    };
    let mut replacement = HttpResponse::build(status);
    if response.head().connection_type() == ConnectionType::Close {
        // The limits close the connection of a request they refused unread.
        replacement.force_close();
    }
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement.append_header((name.clone(), value.clone()));
        }
    }
    let replacement = replacement.json(envelope);
    Ok(ServiceResponse::new(request, replacement).map_into_right_body())
}

/// An error response actix-web produced itself, or a handler error that is not an
/// [`ApiError`]: a code from the status, and for 5xx no text from the error (it may hold a
/// backend message) but the error itself in the log.
fn default_body<B>(status: StatusCode, response: &HttpResponse<B>) -> ErrorBody {
    let (code, message) = match status.as_u16() {
        400 => ("bad_request", "the request is malformed"),
        404 => ("not_found", "no route matches this path"),
        405 => (
            "method_not_allowed",
            "this route does not accept this method",
        ),
        408 => ("request_timeout", "the request took too long to arrive"),
        413 => ("payload_too_large", "the request body is too large"),
        415 => ("unsupported_media_type", "unsupported content type"),
        431 => ("headers_too_large", "the request headers are too large"),
        503 => ("unavailable", "the service is unavailable; retry later"),
        504 => ("timeout", "the request timed out"),
        500..=599 => ("internal", "internal error"),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    ErrorBody {
        code: Cow::Borrowed(code),
        message: message.to_owned(),
        details: None,
        cause: response.error().map(|e| e.to_string()),
    }
}

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

/// An error answer: a typed [`ErrorCode`] (status and stable code), a message for people, and
/// optionally headers, details for the envelope and a cause for the log.
///
/// Boxed: it travels in every handler's `Result`, and errors are the cold path.
///
/// ```
/// use steward::{ApiError, ErrorCode};
///
/// /// Codes are declared once, with their status and meaning; `Service::errors` lists them in
/// /// the OpenAPI document.
/// const GREETING_TOO_LONG: ErrorCode =
///     ErrorCode::new(422, "greeting_too_long", "the greeting is longer than allowed");
///
/// fn check(greeting: &str) -> Result<(), ApiError> {
///     if greeting.len() > 40 {
///         return Err(ApiError::new(GREETING_TOO_LONG, "greetings are at most 40 bytes"));
///     }
///     Ok(())
/// }
/// # assert!(check("hi").is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ApiError(Box<Parts>);

#[derive(Debug, Clone)]
struct Parts {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// What went wrong behind the scenes: logged with the request id, never sent.
    cause: Option<String>,
}

/// A stable, machine-readable error code with its HTTP status and what it means.
///
/// Why a type and not a string at each call site: the list of codes a service can answer
/// (in the OpenAPI document, `Service::errors`) is then the list of these constants, and a
/// code cannot drift from its status between two routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The HTTP status it is answered with (4xx or 5xx).
    pub status: u16,
    /// The code in `error.code`: lowercase words joined by `_`.
    pub code: &'static str,
    /// What it means, for the docs and as the default message.
    pub description: &'static str,
}

impl ErrorCode {
    /// A code answered with `status`.
    ///
    /// # Panics
    /// At compile time (in a `const`) when `status` is not 400-599.
    pub const fn new(status: u16, code: &'static str, description: &'static str) -> Self {
        assert!(
            status >= 400 && status <= 599,
            "an error code's status is 4xx or 5xx"
        );
        Self {
            status,
            code,
            description,
        }
    }

    /// The status as actix-web's type.
    pub fn status_code(self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ErrorCode> for ApiError {
    /// The error with the code's description as its message.
    fn from(code: ErrorCode) -> Self {
        ApiError::new(code, code.description)
    }
}

/// The codes the framework itself answers with: the edge, the stores, health and admin.
/// A service's own codes are listed next to these in the OpenAPI document.
pub mod codes {
    use super::ErrorCode;

    /// The request cannot be read (actix-web's own 400).
    pub const BAD_REQUEST: ErrorCode =
        ErrorCode::new(400, "bad_request", "the request is malformed");
    /// Malformed JSON.
    pub const INVALID_JSON: ErrorCode =
        ErrorCode::new(400, "invalid_json", "the body is not valid JSON");
    /// JSON of the wrong shape, or a body that cannot be read.
    pub const INVALID_BODY: ErrorCode = ErrorCode::new(
        422,
        "invalid_body",
        "the body does not have the expected shape",
    );
    /// A path parameter that does not parse.
    pub const INVALID_PATH: ErrorCode =
        ErrorCode::new(400, "invalid_path", "a path parameter does not parse");
    /// A query string that does not parse.
    pub const INVALID_QUERY: ErrorCode =
        ErrorCode::new(400, "invalid_query", "the query string does not parse");
    /// An `Idempotency-Key` that is not 1-255 visible ASCII characters.
    pub const INVALID_IDEMPOTENCY_KEY: ErrorCode = ErrorCode::new(
        400,
        "invalid_idempotency_key",
        "Idempotency-Key is 1-255 visible ASCII characters",
    );
    /// A page size out of range.
    pub const INVALID_LIMIT: ErrorCode =
        ErrorCode::new(400, "invalid_limit", "limit is from 1 to 100");
    /// A cursor this API did not hand out.
    pub const INVALID_CURSOR: ErrorCode = ErrorCode::new(
        400,
        "invalid_cursor",
        "the cursor is not one this API returned",
    );
    /// The admin token is missing or wrong.
    pub const UNAUTHORIZED: ErrorCode = ErrorCode::new(
        401,
        "unauthorized",
        "this route needs Authorization: Bearer <admin token>",
    );
    /// A service route was called without credentials, or with credentials that do not
    /// verify (unknown, revoked or malformed API key; bad, expired or foreign token).
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode::new(
        401,
        "unauthenticated",
        "this route needs an API key (X-Api-Key) or a bearer token (Authorization: Bearer)",
    );
    /// The caller is known but lacks the scope the operation needs.
    pub const FORBIDDEN: ErrorCode = ErrorCode::new(
        403,
        "forbidden",
        "the credentials lack a scope this operation needs",
    );
    /// No such route, or no such resource.
    pub const NOT_FOUND: ErrorCode = ErrorCode::new(404, "not_found", "not found");
    /// The route does not take this method.
    pub const METHOD_NOT_ALLOWED: ErrorCode = ErrorCode::new(
        405,
        "method_not_allowed",
        "this route does not accept this method",
    );
    /// The head did not arrive in time (actix-web's own 408).
    pub const REQUEST_TIMEOUT: ErrorCode = ErrorCode::new(
        408,
        "request_timeout",
        "the request took too long to arrive",
    );
    /// The body did not arrive within `server.body_timeout`.
    pub const BODY_TIMEOUT: ErrorCode =
        ErrorCode::new(408, "body_timeout", "the body did not arrive in time");
    /// A store refused a write that conflicts with what it holds.
    pub const CONFLICT: ErrorCode = ErrorCode::new(
        409,
        "conflict",
        "the request conflicts with the stored state",
    );
    /// A body over its limit.
    pub const PAYLOAD_TOO_LARGE: ErrorCode =
        ErrorCode::new(413, "payload_too_large", "the request body is too large");
    /// A body that is not JSON where JSON is expected.
    pub const UNSUPPORTED_MEDIA_TYPE: ErrorCode =
        ErrorCode::new(415, "unsupported_media_type", "unsupported content type");
    /// A store refused the request as invalid.
    pub const INVALID: ErrorCode = ErrorCode::new(
        422,
        "invalid",
        "the request asks for something the store refuses",
    );
    /// `PUT /admin/log-level` with a filter that does not parse.
    pub const INVALID_LOG_LEVEL: ErrorCode =
        ErrorCode::new(422, "invalid_log_level", "not a log level or filter");
    /// A rate-limit policy refused the request.
    pub const RATE_LIMITED: ErrorCode =
        ErrorCode::new(429, "rate_limited", "too many requests; slow down");
    /// Too many failed admin authentications from one address.
    pub const TOO_MANY_AUTH_FAILURES: ErrorCode = ErrorCode::new(
        429,
        "too_many_auth_failures",
        "too many failed authentications from this address; retry later",
    );
    /// The request head is over `server.max_head_size`.
    pub const HEAD_TOO_LARGE: ErrorCode =
        ErrorCode::new(431, "head_too_large", "the request head is too large");
    /// actix-web's own 431.
    pub const HEADERS_TOO_LARGE: ErrorCode = ErrorCode::new(
        431,
        "headers_too_large",
        "the request headers are too large",
    );
    /// A bug: the cause is in the log, never in the answer.
    pub const INTERNAL: ErrorCode = ErrorCode::new(500, "internal", "internal error");
    /// A store is down or starting.
    pub const UNAVAILABLE: ErrorCode = ErrorCode::new(
        503,
        "unavailable",
        "a backing store is unavailable; retry later",
    );
    /// Retries of a contended transaction ran out.
    pub const CONTENTION: ErrorCode = ErrorCode::new(
        503,
        "contention",
        "too much concurrent work on the same data; retry",
    );
    /// A bounded store is full.
    pub const FULL: ErrorCode = ErrorCode::new(
        503,
        "full",
        "the store holds as much as it may; retry later",
    );
    /// The rate limiter cannot decide and its policy says deny.
    pub const RATE_LIMITER_UNAVAILABLE: ErrorCode = ErrorCode::new(
        503,
        "rate_limiter_unavailable",
        "the rate limiter cannot decide; retry later",
    );
    /// `/health/ready` during a shutdown.
    pub const SHUTTING_DOWN: ErrorCode =
        ErrorCode::new(503, "shutting_down", "this instance is shutting down");
    /// `/health/ready` with a critical check failing or a child degraded.
    pub const NOT_READY: ErrorCode = ErrorCode::new(503, "not_ready", "not ready");
    /// The route is at its concurrency limit: the request was refused before any work.
    pub const OVERLOADED: ErrorCode =
        ErrorCode::new(503, "overloaded", "this route is at capacity; retry later");
    /// A `Request-Timeout` header that is not a number of milliseconds.
    pub const INVALID_REQUEST_TIMEOUT: ErrorCode = ErrorCode::new(
        400,
        "invalid_request_timeout",
        "Request-Timeout is a whole number of milliseconds, at least 1",
    );
    /// A store did not answer in time, or the request's deadline passed.
    pub const TIMEOUT: ErrorCode = ErrorCode::new(
        504,
        "timeout",
        "a backing store did not answer in time, or the request's deadline passed",
    );

    /// Every code above.
    pub const ALL: &[ErrorCode] = &[
        BAD_REQUEST,
        INVALID_JSON,
        INVALID_BODY,
        INVALID_PATH,
        INVALID_QUERY,
        INVALID_IDEMPOTENCY_KEY,
        INVALID_LIMIT,
        INVALID_CURSOR,
        UNAUTHORIZED,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        REQUEST_TIMEOUT,
        BODY_TIMEOUT,
        CONFLICT,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        INVALID,
        INVALID_LOG_LEVEL,
        RATE_LIMITED,
        TOO_MANY_AUTH_FAILURES,
        UNAUTHENTICATED,
        FORBIDDEN,
        HEAD_TOO_LARGE,
        HEADERS_TOO_LARGE,
        INTERNAL,
        UNAVAILABLE,
        CONTENTION,
        FULL,
        RATE_LIMITER_UNAVAILABLE,
        SHUTTING_DOWN,
        NOT_READY,
        OVERLOADED,
        INVALID_REQUEST_TIMEOUT,
        TIMEOUT,
    ];
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
    /// Stable, machine-readable: `invalid_key`, `lock_held`, `unavailable`, ... (the
    /// `x-error-codes` of the document list every one).
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
    /// An error with `code` (its status and stable name) and a message for people.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Box::new(Parts {
            status: code.status_code(),
            code: code.code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
            cause: None,
        }))
    }

    /// Adds `Retry-After: <secs>`: for a dependency that is down, a limit, a full queue.
    pub fn retry_after(self, secs: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(secs))
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

    /// The code's name, as the envelope will carry it.
    pub fn code(&self) -> &'static str {
        self.0.code
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
        // RFC 9110: a 401 carries a challenge; the edge's own name the schemes it accepts.
        if self.0.status == StatusCode::UNAUTHORIZED
            && !response.headers().contains_key(header::WWW_AUTHENTICATE)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorBody {
            code: Cow::Borrowed(self.0.code),
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
            StoreError::Unavailable(cause) => ApiError::from(codes::UNAVAILABLE)
                .retry_after(1)
                .with_cause(cause),
            StoreError::Contention(cause) => ApiError::from(codes::CONTENTION)
                .retry_after(1)
                .with_cause(cause),
            StoreError::Timeout => ApiError::from(codes::TIMEOUT).retry_after(1),
            // Busy, not down: retrying later works, as for any 503.
            StoreError::PoolTimeout => ApiError::new(
                codes::UNAVAILABLE,
                "every connection to a backing store was busy; retry later",
            )
            .retry_after(1),
            StoreError::DeadlineExceeded => ApiError::new(
                codes::TIMEOUT,
                "the request's deadline passed before a backing store answered",
            ),
            StoreError::BreakerOpen {
                store,
                retry_in,
                cause,
            } => ApiError::from(codes::UNAVAILABLE)
                // Whole seconds, rounded up: a client retrying sooner would only be refused.
                .retry_after(retry_in.as_millis().div_ceil(1000).max(1) as u64)
                .with_cause(format!("breaker of store {store} open: {cause}")),
            StoreError::Conflict(message) => ApiError::new(codes::CONFLICT, message),
            StoreError::NotFound => ApiError::from(codes::NOT_FOUND),
            StoreError::Invalid(message) => ApiError::new(codes::INVALID, message),
            StoreError::TooLarge(message) => ApiError::new(codes::PAYLOAD_TOO_LARGE, message),
            StoreError::Full(cause) => ApiError::from(codes::FULL).retry_after(5).with_cause(cause),
            StoreError::Internal(cause) => ApiError::from(codes::INTERNAL).with_cause(cause),
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
            codes::PAYLOAD_TOO_LARGE,
            format!("the JSON body exceeds {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            codes::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            ApiError::new(codes::INVALID_BODY, inner.to_string())
        }
        JsonPayloadError::Deserialize(inner) => {
            ApiError::new(codes::INVALID_JSON, format!("malformed JSON: {inner}"))
        }
        _ => ApiError::new(codes::INVALID_BODY, "the request body could not be read"),
    };
    api.with_cause(error.to_string()).into()
}

/// A path parameter that does not parse: 400 in the envelope.
pub fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(codes::INVALID_PATH, error.to_string()).into()
}

/// A query string that does not parse: 400 in the envelope.
pub fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(codes::INVALID_QUERY, error.to_string()).into()
}

/// The app's default service: no route matched.
pub async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        codes::NOT_FOUND,
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
    let known = match status.as_u16() {
        400 => Some(codes::BAD_REQUEST),
        404 => Some(ErrorCode::new(
            404,
            "not_found",
            "no route matches this path",
        )),
        405 => Some(codes::METHOD_NOT_ALLOWED),
        408 => Some(codes::REQUEST_TIMEOUT),
        413 => Some(codes::PAYLOAD_TOO_LARGE),
        415 => Some(codes::UNSUPPORTED_MEDIA_TYPE),
        431 => Some(codes::HEADERS_TOO_LARGE),
        503 => Some(ErrorCode::new(
            503,
            "unavailable",
            "the service is unavailable; retry later",
        )),
        504 => Some(ErrorCode::new(504, "timeout", "the request timed out")),
        500..=599 => Some(codes::INTERNAL),
        _ => None,
    };
    let (code, message) = known.map_or_else(
        || ("error", status.canonical_reason().unwrap_or("error")),
        |known| (known.code, known.description),
    );
    ErrorBody {
        code: Cow::Borrowed(code),
        message: message.to_owned(),
        details: None,
        cause: response.error().map(|e| e.to_string()),
    }
}

//! Request deadlines: how long a request may take, from `[deadlines]` and a client's
//! `Request-Timeout`, handed to handlers so that it travels on to the stores.

use std::future::{ready, Ready};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderName;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError};
use steward_actors::Deadline;

use super::error::{codes, ApiError};
use crate::config::DeadlineSettings;

/// `Request-Timeout`: the client's own budget in milliseconds, which can only lower the
/// route's.
pub const HEADER: HeaderName = HeaderName::from_static("request-timeout");

/// A client's `Request-Timeout` is read as at most an hour (it can only lower the route's
/// deadline anyway, and without one it must still be a time the timer can hold).
const MAX_ASKED_MS: u64 = 3_600_000;

/// The deadlines by path prefix, longest prefix first.
pub struct Deadlines {
    default: Option<Duration>,
    routes: Vec<(String, Duration)>,
}

impl Deadlines {
    /// From `[deadlines]`.
    pub fn new(settings: &DeadlineSettings) -> Self {
        let mut routes: Vec<(String, Duration)> = settings
            .routes
            .iter()
            .map(|route| (route.prefix.clone(), route.timeout))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            default: Some(settings.default).filter(|d| !d.is_zero()),
            routes,
        }
    }

    /// The budget of a request for `path`, before the client's header.
    fn of(&self, path: &str) -> Option<Duration> {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, timeout)| *timeout)
            .or(self.default)
    }
}

/// The deadline of the request being handled: an extractor.
///
/// Pass it in the store messages a handler sends, so that no store call starts after the
/// request's deadline or runs past it:
///
/// ```
/// use actix_web::HttpResponse;
/// use steward::actors::cache::Get;
/// use steward::trace::Call;
/// use steward::{ApiError, Context, RequestDeadline};
///
/// async fn read(ctx: Context, deadline: RequestDeadline) -> Result<HttpResponse, ApiError> {
///     let value = ctx.cache()?.call(Get { key: "k".into(), deadline: *deadline }).await??;
///     Ok(HttpResponse::Ok().body(value.unwrap_or_default()))
/// }
/// ```
///
/// Without a `[deadlines]` entry (and with `default = "0s"`) it is `Deadline::NONE`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestDeadline(pub Deadline);

impl Deref for RequestDeadline {
    type Target = Deadline;

    fn deref(&self) -> &Deadline {
        &self.0
    }
}

impl FromRequest for RequestDeadline {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    #[inline]
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(req
            .extensions()
            .get::<RequestDeadline>()
            .copied()
            .unwrap_or_default()))
    }
}

/// Middleware: gives the request its deadline (the route's, lowered by a valid
/// `Request-Timeout`); a malformed `Request-Timeout` is a 400.
///
/// It does not cut the handler off at the deadline: the stores do, since every store message
/// carries the deadline and answers `DeadlineExceeded` (504 `timeout`) once it passes, with a
/// running PostgreSQL statement cancelled. (actix-web routes a request only once the app's
/// middleware has handed it on, and a response can only be built from the routed request, so
/// an edge timer could not answer in the envelope.) A handler that waits on something else
/// bounds it with the same deadline: `deadline.run(timeout, work)`.
pub async fn deadline(
    deadlines: Arc<Deadlines>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let asked = match req.headers().get(HEADER) {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            Some(ms @ 1..) => Some(Duration::from_millis(ms.min(MAX_ASKED_MS))),
            _ => {
                let error = ApiError::from(codes::INVALID_REQUEST_TIMEOUT);
                return Ok(req
                    .into_response(error.error_response())
                    .map_into_right_body());
            }
        },
    };
    let budget = match (deadlines.of(req.path()), asked) {
        (Some(route), Some(asked)) => Some(route.min(asked)),
        (route, asked) => route.or(asked),
    };
    if let Some(budget) = budget {
        req.extensions_mut()
            .insert(RequestDeadline(Deadline::after(budget)));
    }
    Ok(next.call(req).await?.map_into_left_body())
}

//! Limits on what a client may send beyond actix-web's own: the size of the request head and
//! the time the body may take. Both answer in the JSON envelope.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse};
use futures::{Stream, StreamExt};

use super::error::{codes, ApiError};

/// The limits this middleware enforces (`server.max_head_size`, `server.body_timeout`).
#[derive(Clone, Copy)]
pub struct RequestLimits {
    pub max_head_size: usize,
    pub body_timeout: Duration,
}

/// Middleware, before rate limiting and any handler:
///
/// - a request whose head (request line and headers) is larger than `max_head_size` gets a
///   JSON 431. actix-web itself reads up to 128 KiB of head and refuses more than 96 headers
///   (a bare 431), so this is where the configured, smaller limit holds;
/// - the body must arrive within `body_timeout` of the head. actix-web bounds the head
///   (`client_request_timeout`, 408) but not the body, so a client could send a large
///   Content-Length and then one byte a minute, holding a connection indefinitely. Past the
///   deadline the extractor sees a payload error, and the answer becomes a JSON 408.
///
/// Both refusals close the connection (the rest of what the client sends is never read).
/// Requests without a body pay for no timer.
pub async fn request_limits(
    limits: RequestLimits,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let head = req.method().as_str().len()
        + req.uri().path_and_query().map_or(0, |pq| pq.as_str().len())
        + req
            .headers()
            .iter()
            // "name: value\r\n"
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > limits.max_head_size {
        let refusal = refuse(ApiError::new(
            codes::HEAD_TOO_LARGE,
            format!(
                "the request line and headers are at most {} bytes",
                limits.max_head_size
            ),
        ));
        return Ok(req.into_response(refusal).map_into_right_body());
    }
    let headers = req.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "0");
    if !has_body {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let expired = Rc::new(Cell::new(false));
    let payload = bounded(req.take_payload(), limits.body_timeout, Rc::clone(&expired));
    req.set_payload(Payload::Stream {
        payload: Box::pin(payload),
    });
    let response = next.call(req).await?;
    if !expired.get() {
        return Ok(response.map_into_left_body());
    }
    let refusal = refuse(ApiError::new(
        codes::BODY_TIMEOUT,
        format!(
            "the request body did not arrive within {} ms",
            limits.body_timeout.as_millis()
        ),
    ));
    let (request, _) = response.into_parts();
    Ok(ServiceResponse::new(request, refusal).map_into_right_body())
}

/// The response for a request refused unread: its connection cannot be reused.
fn refuse(error: ApiError) -> HttpResponse {
    let mut response = actix_web::ResponseError::error_response(&error);
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response
}

/// `payload`, ending with a timed-out error (and `expired` set) once `limit` has passed.
fn bounded(
    payload: Payload,
    limit: Duration,
    expired: Rc<Cell<bool>>,
) -> impl Stream<Item = Result<Bytes, PayloadError>> {
    let deadline = Box::pin(actix_rt::time::sleep(limit));
    futures::stream::unfold(
        Some((payload, deadline)),
        move |state: Option<(Payload, Pin<Box<actix_rt::time::Sleep>>)>| {
            let expired = Rc::clone(&expired);
            async move {
                let (mut payload, mut deadline) = state?;
                tokio::select! {
                    chunk = payload.next() => chunk.map(|chunk| (chunk, Some((payload, deadline)))),
                    () = &mut deadline => {
                        expired.set(true);
                        let error = io::Error::new(io::ErrorKind::TimedOut, "body deadline passed");
                        Some((Err(PayloadError::Io(error)), None))
                    }
                }
            }
        },
    )
}

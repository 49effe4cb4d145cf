//! `HEAD` on every `GET` route (RFC 9110 §9.3.2): the request is routed as a `GET`, and
//! actix-http, which remembers that the request line said `HEAD`, sends the response's head
//! (with its `Content-Length`) and no body.
//!
//! It sits outside the rate limiter, so a policy that covers `GET` covers `HEAD` too, and
//! inside the access log and metrics, which still show `HEAD`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// Middleware: routes `HEAD` as `GET`.
pub async fn head_as_get<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}

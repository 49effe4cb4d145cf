//! Retiring keep-alive connections while the instance drains.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web;

use crate::state::EdgeState;

/// Middleware: once shutdown has begun (readiness is 503, `drain_delay` is running), every
/// response closes its connection. A client that keeps a connection alive would otherwise send
/// its next request on it just as the HTTP phase closes idle connections, and get no answer at
/// all (the request raced the close). With `Connection: close` the client opens a new
/// connection instead: served while the listener is open, refused cleanly after. Costs one
/// atomic load per request.
pub async fn close_when_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let draining = req
        .app_data::<web::Data<EdgeState>>()
        .is_some_and(|state| state.readiness.is_shutting_down());
    let mut response = next.call(req).await?;
    if draining {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(response)
}

//! `/admin/*`: operator endpoints behind a bearer token.
//!
//! The token is compared as SHA-256 digests in constant time (`subtle`), so neither its bytes
//! nor its length can be read from response times. Failures are throttled per client address
//! ([`AdminThrottle`]) and written to the audit trail with the address and request id; every
//! admin request that passes is written there too, before it takes effect, naming the token
//! by its id (a digest prefix, never the token).

use std::future::{ready, Ready};
use std::net::IpAddr;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use steward_actors::breaker::{Breaker, BreakerReport};
use steward_actors::supervisor::{ChildInfo, ListChildren};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::client;
use super::error::{codes, ApiError, ErrorEnvelope};
use super::request_id::RequestId;
use crate::auth::FailureThrottle;
use crate::state::EdgeState;
use crate::telemetry::AUDIT;

/// The configured admin token, as it is compared: its digest.
struct AdminToken {
    digest: [u8; 32],
    /// Names the token in the audit trail: the first 8 hex digits of its digest.
    id: String,
}

impl AdminToken {
    fn new(token: &str) -> Self {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { digest, id }
    }

    fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.digest.ct_eq(&given).into()
    }
}

/// Failed admin authentications per client address: 5 at once, then one every 12 s.
pub struct AdminThrottle(pub FailureThrottle);

impl Default for AdminThrottle {
    fn default() -> Self {
        Self(FailureThrottle::new(5, Duration::from_secs(12)))
    }
}

/// Proof that the request carried `Authorization: Bearer <admin.token>` (the scheme in any
/// case, as RFC 9110 says). Taking it as the first argument of a handler protects the
/// handler and writes the request to the audit trail.
pub struct Admin {
    /// The client's address, as the audit trail names it.
    pub peer: IpAddr,
    pub token_id: String,
    pub request_id: String,
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Admin, ApiError> {
    let unauthorized = || {
        ApiError::from(codes::UNAUTHORIZED)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    };
    let state = req.app_data::<web::Data<EdgeState>>();
    let throttle = req.app_data::<web::Data<AdminThrottle>>();
    let Some((state, throttle, expected)) =
        state.and_then(|s| Some((s, throttle?, AdminToken::new(s.admin_token.as_deref()?))))
    else {
        return Err(unauthorized());
    };
    let peer = client::address(req, &state.trusted_proxies);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let failures = &state.metrics.admin_auth_failures_total;
    if let Some(wait) = throttle.0.wait(peer) {
        failures.with_label_values(&["throttled"]).inc();
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(ApiError::from(codes::TOO_MANY_AUTH_FAILURES).retry_after(secs));
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '));
    let outcome = match given {
        None => "no bearer token",
        Some(token) if expected.matches(token) => {
            log::info!(target: AUDIT, peer:% = peer, request_id = request_id.as_str(), token_id = expected.id.as_str(); "admin request {} {}", req.method(), req.path());
            return Ok(Admin {
                peer,
                token_id: expected.id.clone(),
                request_id,
            });
        }
        Some(_) => "wrong token",
    };
    throttle.0.failed(peer);
    failures.with_label_values(&["rejected"]).inc();
    log::warn!(target: AUDIT, peer:% = peer, request_id = request_id.as_str(); "admin authentication failed ({outcome}) for {} {}", req.method(), req.path());
    Err(unauthorized())
}

/// Every supervised child.
#[derive(Serialize, ToSchema)]
pub struct Children {
    children: Vec<ChildInfo>,
    /// Each store's circuit breaker.
    breakers: Vec<BreakerReport>,
}

/// `GET /admin/actors`: every supervised child with its state, restarts and last error, and
/// each store's circuit breaker.
#[utoipa::path(
    get,
    path = "/admin/actors",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The supervision tree", body = Children),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorEnvelope),
    )
)]
pub async fn actors(_: Admin, state: web::Data<EdgeState>) -> Result<HttpResponse, ApiError> {
    let children = state.supervisor.send(ListChildren).await.map_err(|e| {
        ApiError::new(codes::UNAVAILABLE, "the supervisor did not answer")
            .retry_after(1)
            .with_cause(e.to_string())
    })?;
    let breakers = state.breakers.iter().map(Breaker::report).collect();
    Ok(HttpResponse::Ok().json(Children { children, breakers }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    /// A level or env_logger filter: "debug", "warn,steward=trace".
    level: String,
}

/// `PUT /admin/log-level {"level": "debug"}`: changes the log filter of the running process.
#[utoipa::path(
    put,
    path = "/admin/log-level",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = LogLevel,
    responses(
        (status = 200, description = "The filter now in force", body = LogLevel),
        (status = 401, description = "No or a wrong admin token", body = ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "Not a level or filter", body = ErrorEnvelope),
    )
)]
pub async fn set_log_level(
    admin: Admin,
    state: web::Data<EdgeState>,
    body: web::Json<LogLevel>,
) -> Result<HttpResponse, ApiError> {
    crate::telemetry::validate_filter(&body.level).map_err(|expected| {
        ApiError::new(codes::INVALID_LOG_LEVEL, format!("expected {expected}"))
    })?;
    // Written before the change: a filter of "off" must not hide its own setting.
    log::warn!(target: AUDIT, peer:% = admin.peer, request_id = admin.request_id.as_str(), token_id = admin.token_id.as_str(); "log filter set to {:?} through /admin/log-level", body.level);
    state.log.set_filter(&body.level).map_err(|expected| {
        ApiError::new(codes::INVALID_LOG_LEVEL, format!("expected {expected}"))
    })?;
    Ok(HttpResponse::Ok().json(body.into_inner()))
}

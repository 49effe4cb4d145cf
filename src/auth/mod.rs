//! Authentication: who is calling a service's routes, proved by an API key or a JWT.
//!
//! The edge authenticates every request to a service's routes before the rate limiter and the
//! handler see it; steward's own routes (health, metrics, version, the OpenAPI document) and
//! the routes a service declares public ([`Service::public`](crate::Service::public)) are not
//! authenticated, and `/admin/*` has its own token. A request that passes carries a
//! [`Principal`], which handlers take as an argument:
//!
//! ```
//! use steward::prelude::*;
//!
//! async fn report(principal: Principal) -> Result<HttpResponse, ApiError> {
//!     principal.require_scope("reports:read")?; // 403 forbidden without it
//!     Ok(HttpResponse::Ok().json(json!({ "for": principal.id() })))
//! }
//!
//! let service = Service::new("reports").get("/v1/report", report);
//! ```
//!
//! Two schemes, each switched on in `[auth]` (`src/config/default.toml` describes every key):
//!
//! - **API keys** (`X-Api-Key: stw_<id>_<secret>`), issued with `POST /admin/api-keys
//!   {"name", "scopes"}` (the answer is the only place the key appears), listed with
//!   `GET /admin/api-keys` and revoked with `DELETE /admin/api-keys/{id}` — or from a route of
//!   the service's own through [`Context::api_keys`](crate::Context::api_keys). Redis keeps each
//!   key's HMAC-SHA-256 under `auth.api_keys.hash_key` ([`api_keys`]). The principal is
//!   `key:<name>`.
//! - **JWT bearer tokens** (`Authorization: Bearer <JWT>`) from an identity provider, checked
//!   against a PEM key, a JWKS file or an HS256 secret: signature (the algorithm is the key's,
//!   never the token's), `exp` and `nbf` with `auth.jwt.leeway`, `iss` and `aud`. The
//!   principal is `jwt:<sub>`, the scopes are the `scope` claim's.
//!
//! A verified credential is remembered for `auth.cache_ttl` (500 ms), bounded by
//! `auth.cache_size`: a key costs one Redis round trip and a token one signature check per
//! that period, not per request. Revoking a key forgets it at once on the replica that revokes
//! it, and within `auth.cache_ttl` on the others.
//!
//! Refusals are in the error envelope: 401 `unauthenticated` with a `WWW-Authenticate`
//! challenge (no credentials, or credentials that do not verify), 403 `forbidden` from
//! [`Principal::require_scope`], 503 `unavailable` when Redis cannot be asked about a key
//! (a key is never let in unverified). Each client address may fail `auth.failure_burst`
//! times, then once per `auth.failure_refill`; past that it gets 429 `too_many_auth_failures`.
//! Every rejection is logged on the audit trail with the address, the request id and the key
//! id — never the key or the token — and counted in `auth_failures_total{reason}`.
//!
//! `auth.required = false` (as `config/development.toml` sets) lets requests without
//! credentials in as the anonymous principal holding every scope; credentials that are sent
//! are still checked. A production instance refuses it unless `auth.open_in_production` is set
//! as well (for a service behind a gateway that authenticates).
//!
//! The principal is the rate limiter's client identity when there is one, the scope of
//! idempotency keys ([`crate::http::idempotency`]), and is recorded with each job a request
//! enqueues (`Enqueue::principal`, handed to the job as `JobContext::principal`).

pub(crate) mod admin;
pub mod api_keys;
mod jwt;
mod principal;
mod throttle;
mod verified;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use ipnet::IpNet;
use steward_actors::cache::CacheActor;
use steward_actors::{Deadline, Metrics, Slot, StoreError};

pub(crate) use admin::routes as admin_routes;
pub use api_keys::{ApiKeys, IssuedKey, KeyInfo};
pub(crate) use jwt::JwtVerifier;
pub use principal::{Principal, Scheme};
pub(crate) use throttle::FailureThrottle;
use verified::VerifiedCache;

use crate::config::AuthSettings;
use crate::http::client;
use crate::http::deadline::RequestDeadline;
use crate::http::error::{codes, ApiError};
use crate::http::request_id::RequestId;
use crate::state::EdgeState;
use crate::telemetry::AUDIT;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The edge's authentication: the schemes `[auth]` switches on, the verified cache and the
/// failure throttle. One per process, shared by every HTTP worker.
pub struct Authenticator {
    required: bool,
    api_keys: Option<ApiKeys>,
    jwt: Option<JwtVerifier>,
    verified: Arc<VerifiedCache>,
    throttle: FailureThrottle,
    /// Path prefixes the service declared public.
    public: Vec<String>,
    /// `WWW-Authenticate` of a 401: one challenge per scheme on.
    challenge: HeaderValue,
    metrics: Arc<Metrics>,
    /// The anonymous principal of an open service, made once: cloning it is a few reference
    /// counts, where making one per request would allocate.
    open: Principal,
}

/// A credential as the request carried it.
enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
}

/// Why a request was not let in.
enum Refusal {
    Missing,
    /// Credentials that do not verify; the reason is for the log only.
    Rejected(String),
    Throttled(Duration),
    Unavailable(StoreError),
}

impl Authenticator {
    /// `[auth]` for a service whose public prefixes are `public`; API keys (kept through
    /// `cache`) when `api_keys` (the scheme is on and the service uses Redis), `jwt` when that
    /// scheme is on.
    pub(crate) fn new(
        settings: &AuthSettings,
        api_keys: Option<Slot<CacheActor>>,
        jwt: Option<JwtVerifier>,
        public: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let verified = Arc::new(VerifiedCache::new(settings.cache_ttl, settings.cache_size));
        let keys = &settings.api_keys;
        let api_keys = api_keys.map(|cache| {
            let hash_key = keys.hash_key.as_bytes();
            ApiKeys::new(hash_key, keys.max_keys, cache, Arc::clone(&verified))
        });
        let mut challenges = Vec::new();
        if jwt.is_some() {
            challenges.push("Bearer");
        }
        if api_keys.is_some() {
            challenges.push("ApiKey header=\"X-Api-Key\"");
        }
        let challenge = HeaderValue::from_str(&challenges.join(", "))
            .unwrap_or(HeaderValue::from_static("Bearer"));
        Self {
            required: settings.required,
            api_keys,
            jwt,
            verified,
            throttle: FailureThrottle::new(settings.failure_burst, settings.failure_refill),
            public,
            challenge,
            metrics,
            open: Principal::open(),
        }
    }

    /// The API keys, when that scheme is on.
    pub fn api_keys(&self) -> Option<&ApiKeys> {
        self.api_keys.as_ref()
    }

    /// The principal of `req`, which carries `credential`. A credential verified recently
    /// costs a digest and a map lookup; the address and the deadline are read only on a miss.
    async fn principal(
        &self,
        credential: Credential<'_>,
        req: &ServiceRequest,
        trusted: &[IpNet],
    ) -> Result<Principal, Refusal> {
        let (tag, text) = match credential {
            Credential::ApiKey(key) => (&b"key"[..], key),
            Credential::Bearer(token) => (&b"jwt"[..], token),
        };
        let digest = VerifiedCache::digest(tag, text);
        if let Some(principal) = self.verified.get(&digest) {
            return Ok(principal);
        }
        if let Some(wait) = self.throttle.wait(client::address(req.request(), trusted)) {
            return Err(Refusal::Throttled(wait));
        }
        let deadline = req
            .extensions()
            .get::<RequestDeadline>()
            .map_or(Deadline::NONE, |d| d.0);
        let verifications = &self.metrics.auth_verifications_total;
        let (principal, expires) = match credential {
            Credential::ApiKey(key) => {
                let keys = self.api_keys.as_ref().ok_or_else(|| {
                    Refusal::Rejected("API keys are not accepted by this service".into())
                })?;
                verifications.with_label_values(&["api_key"]).inc();
                match keys.verify(key, deadline).await {
                    Ok(Some(principal)) => (principal, None),
                    Ok(None) => return Err(Refusal::Rejected("unknown or revoked key".into())),
                    Err(error) => return Err(Refusal::Unavailable(error)),
                }
            }
            Credential::Bearer(token) => {
                let jwt = self.jwt.as_ref().ok_or_else(|| {
                    Refusal::Rejected("bearer tokens are not accepted by this service".into())
                })?;
                verifications.with_label_values(&["jwt"]).inc();
                let verified = jwt.verify(token).map_err(Refusal::Rejected)?;
                (verified.principal, Some(instant_of(verified.expires_at)))
            }
        };
        self.verified.insert(digest, principal.clone(), expires);
        Ok(principal)
    }

    /// The refusal as the client sees it, counted and (unless it is a missing credential or
    /// a throttled retry) written to the audit trail.
    fn refuse(&self, refusal: Refusal, req: &ServiceRequest, peer: IpAddr) -> ApiError {
        let failures = &self.metrics.auth_failures_total;
        match refusal {
            Refusal::Missing => {
                failures.with_label_values(&["missing"]).inc();
                self.unauthenticated("this route needs credentials")
            }
            Refusal::Throttled(wait) => {
                failures.with_label_values(&["throttled"]).inc();
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                ApiError::from(codes::TOO_MANY_AUTH_FAILURES).retry_after(secs)
            }
            Refusal::Rejected(reason) => {
                failures.with_label_values(&["rejected"]).inc();
                self.throttle.failed(peer);
                let request_id = req
                    .extensions()
                    .get::<RequestId>()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default();
                let key_id = req
                    .headers()
                    .get(API_KEY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ApiKeys::id_of)
                    .unwrap_or_default();
                log::warn!(target: AUDIT, peer:% = peer, request_id = request_id.as_str(), key_id = key_id; "authentication failed ({reason}) for {} {}", req.method(), req.path());
                self.unauthenticated("the credentials are not valid")
            }
            Refusal::Unavailable(error) => {
                failures.with_label_values(&["unavailable"]).inc();
                ApiError::new(codes::UNAVAILABLE, "the API key store cannot be reached")
                    .retry_after(1)
                    .with_cause(error.to_string())
            }
        }
    }

    fn unauthenticated(&self, message: &str) -> ApiError {
        ApiError::new(codes::UNAUTHENTICATED, message)
            .with_header(header::WWW_AUTHENTICATE, self.challenge.clone())
    }
}

/// Whether `path` is let through without credentials: steward's own routes and the service's
/// `public` prefixes.
pub(crate) fn is_public(path: &str, public: &[String]) -> bool {
    crate::http::OWN_ROUTES
        .iter()
        .copied()
        .chain(public.iter().map(String::as_str))
        .any(|prefix| path.starts_with(prefix))
}

/// The `Instant` of a Unix time in seconds (now, if it has passed).
fn instant_of(unix_secs: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now() + Duration::from_secs(unix_secs).saturating_sub(now)
}

/// The credential a request carries: `Ok(None)` for none, `Err` for one that cannot be a
/// credential at all (two of them, or an `Authorization` scheme other than Bearer).
fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, String> {
    let key = headers
        .get(API_KEY)
        .map(|v| v.to_str().map_err(|_| "an X-Api-Key that is not ASCII"))
        .transpose()?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            let value = v
                .to_str()
                .map_err(|_| "an Authorization that is not ASCII")?;
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Ok(token.trim_start_matches(' '))
                }
                _ => Err("an Authorization scheme other than Bearer"),
            }
        })
        .transpose()?;
    match (key, bearer) {
        (Some(_), Some(_)) => Err("both X-Api-Key and Authorization".into()),
        (Some(key), None) => Ok(Some(Credential::ApiKey(key))),
        (None, Some(token)) => Ok(Some(Credential::Bearer(token))),
        (None, None) => Ok(None),
    }
}

/// Middleware: authenticates requests to the service's routes and attaches their
/// [`Principal`]; answers 401/429/503 in the envelope otherwise.
pub(crate) async fn authenticate<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<EdgeState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let auth = &state.auth;
    if is_public(req.path(), &auth.public) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let trusted = &state.trusted_proxies;
    let outcome = match credential(req.headers()) {
        Ok(Some(credential)) => auth.principal(credential, &req, trusted).await,
        Ok(None) if !auth.required => Ok(auth.open.clone()),
        Ok(None) => Err(Refusal::Missing),
        Err(reason) => match auth.throttle.wait(client::address(req.request(), trusted)) {
            Some(wait) => Err(Refusal::Throttled(wait)),
            None => Err(Refusal::Rejected(reason)),
        },
    };
    match outcome {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(refusal) => {
            let peer = client::address(req.request(), trusted);
            let response = auth.refuse(refusal, &req, peer).error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

//! Rate-limit middleware: asks the rate-limiter actor about every request a policy covers,
//! answers 429 with `Retry-After` past the limit, and tells clients where they stand with the
//! IETF `RateLimit-Policy` and `RateLimit` headers.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use opentelemetry::KeyValue;
use steward_actors::ratelimit::{canonical_path, Check, Decision, Policy, Reservations, Source};

use super::client;
use super::error::{codes, ApiError};
use crate::state::EdgeState;
use crate::trace::Call;

const POLICY_HEADER: HeaderName = HeaderName::from_static("ratelimit-policy");
const STATE_HEADER: HeaderName = HeaderName::from_static("ratelimit");

/// Middleware: limits the requests the configured policies cover.
pub async fn rate_limit<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<EdgeState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let method = req.method().as_str();
    let path = canonical_path(req.path());
    let covering: Vec<&Arc<Policy>> = state
        .policies
        .iter()
        .filter(|p| p.covers(method, &path))
        .collect();
    if covering.is_empty() {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let identity = client::identity(req.request(), &state.trusted_proxies);
    let mut tightest: Option<(&Arc<Policy>, Decision)> = None;
    for policy in covering {
        let decision = decide(&state, policy, &identity).await;
        crate::trace::event("ratelimit", || {
            vec![
                KeyValue::new("steward.ratelimit.policy", policy.name.clone()),
                KeyValue::new("steward.ratelimit.allowed", decision.allowed),
                KeyValue::new("steward.ratelimit.remaining", i64::from(decision.remaining)),
                KeyValue::new("steward.ratelimit.dry_run", policy.dry_run),
            ]
        });
        if !decision.allowed && policy.dry_run {
            log::info!(target: "steward::ratelimit", policy = policy.name.as_str(), identity = identity.as_str(); "dry run: would reject");
        }
        let binding = !decision.allowed && !policy.dry_run;
        let tighter = match &tightest {
            None => true,
            Some((p, d)) => {
                let current_binding = !d.allowed && !p.dry_run;
                (binding && !current_binding)
                    || (binding == current_binding && decision.remaining < d.remaining)
            }
        };
        if tighter {
            tightest = Some((policy, decision));
        }
    }
    let (policy, decision) = tightest.expect("at least one policy covers the request");
    if !decision.allowed && !policy.dry_run {
        let error = if decision.source == Source::Refused {
            ApiError::from(codes::RATE_LIMITER_UNAVAILABLE).retry_after(1)
        } else {
            let mut error = ApiError::from(codes::RATE_LIMITED);
            for (name, value) in headers(policy, &decision) {
                error = error.with_header(name, value);
            }
            error
        };
        let response = error.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    insert(response.headers_mut(), headers(policy, &decision));
    Ok(response.map_into_left_body())
}

/// The limiter's decision; while the actor is restarting, the request passes (the limiter
/// protects the service, it must not become the outage).
async fn decide(state: &EdgeState, policy: &Arc<Policy>, identity: &str) -> Decision {
    let pass = Decision {
        allowed: true,
        remaining: policy.limit,
        reset_after: Duration::ZERO,
        retry_after: Duration::ZERO,
        source: Source::Unlimited,
    };
    let reserved = state
        .reservations
        .take(&Reservations::key(policy, identity), policy.cost);
    if let Some(decision) = reserved {
        state
            .metrics
            .ratelimit_decisions_total
            .with_label_values(&[&policy.name, "allow"])
            .inc();
        return decision;
    }
    let Some(limiter) = state.limiter.get() else {
        return pass;
    };
    let check = Check {
        policy: Arc::clone(policy),
        identity: identity.to_owned(),
        cost: policy.cost,
    };
    limiter.call(check).await.unwrap_or(pass)
}

/// `RateLimit-Policy`, `RateLimit`, and on a rejection `Retry-After` (never earlier than the
/// `t` it announces).
fn headers(policy: &Policy, decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    let seconds = |d: Duration| d.as_secs_f64().ceil() as u64;
    let t = if decision.allowed {
        seconds(decision.reset_after)
    } else {
        seconds(decision.retry_after).max(1)
    };
    let name = &policy.name;
    let mut headers = vec![
        (
            POLICY_HEADER,
            format!(
                "\"{name}\";q={};w={}",
                policy.limit,
                seconds(policy.period).max(1)
            ),
        ),
        (
            STATE_HEADER,
            format!("\"{name}\";r={};t={t}", decision.remaining),
        ),
    ];
    if !decision.allowed {
        headers.push((header::RETRY_AFTER, t.to_string()));
    }
    headers
        .into_iter()
        .filter_map(|(name, value)| HeaderValue::from_str(&value).ok().map(|v| (name, v)))
        .collect()
}

fn insert(map: &mut HeaderMap, headers: Vec<(HeaderName, HeaderValue)>) {
    for (name, value) in headers {
        map.insert(name, value);
    }
}

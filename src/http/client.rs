//! Who is asking: the identity the rate limiter counts by and idempotency keys are scoped to.

use std::net::IpAddr;

use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::auth::{Principal, Scheme};

const FORWARDED_FOR: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("x-forwarded-for");

/// Who is asking: the authenticated principal (hashed, so the names of principals never reach
/// Redis keys), else the client's address — taken from `X-Forwarded-For` only when the peer is
/// a trusted proxy. An unverified `X-Api-Key` is never an identity: a client could otherwise
/// make up a new one for every request and never be limited.
pub fn identity(req: &HttpRequest, trusted: &[IpNet]) -> String {
    if let Some(principal) = req
        .extensions()
        .get::<Principal>()
        .filter(|p| p.scheme() != Scheme::Anonymous)
    {
        let digest = Sha256::digest(principal.id().as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        return format!("p:{hex}");
    }
    format!("ip:{}", address(req, trusted))
}

/// [`identity`] with the trusted proxies of the service the request reached
/// (`ratelimit.trusted_proxies`): the rate limiter's identity for the request.
pub fn identity_of(req: &HttpRequest) -> String {
    let trusted = req
        .app_data::<actix_web::web::Data<crate::state::EdgeState>>()
        .map(|edge| std::sync::Arc::clone(&edge.trusted_proxies))
        .unwrap_or_default();
    identity(req, &trusted)
}

/// The client's address: the peer's, or the one in `X-Forwarded-For` when the peer is a
/// trusted proxy. Unknown (no peer, as in some tests) is the unspecified address.
pub fn address(req: &HttpRequest, trusted: &[IpNet]) -> IpAddr {
    let Some(peer) = req.peer_addr().map(|addr| addr.ip()) else {
        return IpAddr::from([0, 0, 0, 0]);
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if is_trusted(&peer) {
        forwarded_client(req.headers(), &is_trusted).unwrap_or(peer)
    } else {
        peer
    }
}

/// The right-most address in `X-Forwarded-For` that is not a trusted proxy: entries to its
/// left were written by the client and can be forged.
fn forwarded_client(headers: &HeaderMap, is_trusted: &dyn Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    let hops: Vec<IpAddr> = headers
        .get_all(FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .ok()?;
    hops.into_iter().rev().find(|ip| !is_trusted(ip))
}

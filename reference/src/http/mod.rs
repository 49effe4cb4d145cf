//! The reference API's routes: plain actix-web, mounted inside steward's edge.

pub(crate) mod accounts;
#[cfg(feature = "bench-routes")]
pub(crate) mod bench_routes;
pub(crate) mod jobs;
pub(crate) mod kv;
pub(crate) mod locks;
pub(crate) mod transfers;

use actix_web::web;
use steward::Principal;

use crate::ledger::Viewer;

/// The scope that sees every account and job, not only the caller's own.
pub const ADMIN_SCOPE: &str = "ledger:admin";

/// Whose accounts `principal` sees: its own, or everyone's with [`ADMIN_SCOPE`].
pub(crate) fn viewer(principal: &Principal) -> Viewer<'_> {
    if principal.has_scope(ADMIN_SCOPE) {
        Viewer::All
    } else {
        Viewer::Owner(principal.id())
    }
}

/// Every route of the reference API, for `Service::routes`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/kv/{key}")
            .route(web::get().to(kv::get))
            .route(web::put().to(kv::put))
            .route(web::delete().to(kv::delete)),
    )
    .service(
        web::resource("/v1/accounts")
            .route(web::get().to(accounts::list))
            .route(web::post().to(accounts::create)),
    )
    .service(web::resource("/v1/accounts/{id}").route(web::get().to(accounts::get)))
    .service(web::resource("/v1/accounts/{id}/transfers").route(web::get().to(accounts::transfers)))
    .service(web::resource("/v1/transfers").route(web::post().to(transfers::create)))
    // Before /v1/jobs/{id}: routes match in the order they are registered.
    .service(web::resource("/v1/jobs/dead").route(web::get().to(jobs::dead)))
    .service(web::resource("/v1/jobs/dead/{id}/retry").route(web::post().to(jobs::retry)))
    .service(web::resource("/v1/jobs").route(web::post().to(jobs::create)))
    .service(web::resource("/v1/jobs/{id}").route(web::get().to(jobs::get)))
    .service(
        web::resource("/v1/locks/{name}")
            .route(web::post().to(locks::acquire))
            .route(web::put().to(locks::extend))
            .route(web::delete().to(locks::release))
            .route(web::get().to(locks::inspect)),
    );
}

//! The reference REST service of steward: a kv store on the cache actor, accounts and
//! exactly-once transfers on PostgreSQL, distributed locks, and background jobs.
//!
//! It is built only on steward's public API, as any team's service would be: [`service`]
//! declares everything it adds to the framework, and `main.rs` runs it.

#![warn(missing_docs)]

pub mod config;
pub mod errors;
mod http;
pub mod jobs;
pub mod ledger;
pub mod migrations;
mod openapi;

#[cfg(feature = "bench-routes")]
use actix_web::web;
use steward::{Backends, Service};
use utoipa::OpenApi;

use crate::config::{AccountsConfig, IdempotencyConfig, KvConfig};

/// The reference service: its config sections, stores, routes, job kinds, migrations, error
/// codes and OpenAPI paths.
pub fn service() -> Service {
    let service = Service::new("steward")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The reference REST service of the steward actor framework: kv, accounts and transfers, locks and jobs.")
        .backends(Backends::ALL)
        .defaults(include_str!("../../config/default.toml"))
        .config::<KvConfig>()
        .config::<AccountsConfig>()
        .config::<IdempotencyConfig>()
        .migrations(migrations::MIGRATIONS)
        .errors(errors::ALL)
        .openapi(openapi::ApiDoc::openapi())
        .routes(http::routes);
    let service = jobs::declare(service);
    #[cfg(feature = "bench-routes")]
    let service = service.routes(|cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::resource("/bench/kv-direct/{key}")
                .route(web::get().to(http::bench_routes::kv_get)),
        );
    });
    service
}

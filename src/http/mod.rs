//! The HTTP edge: the actix-web server, its middleware, steward's own routes (health,
//! metrics, version, OpenAPI, admin) and the service's routes inside it.

pub(crate) mod admin;
pub mod client;
pub mod deadline;
mod drain;
pub mod error;
mod head;
pub(crate) mod health;
pub mod idempotency;
mod limits;
pub(crate) mod meta;
mod observe;
pub mod pagination;
mod ratelimit;
pub mod request_id;
mod security;
pub(crate) mod shed;
#[cfg(feature = "test-hooks")]
mod test_hooks;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::ServerSettings;
use crate::context::Context;
use crate::service::Routes;
use crate::state::{EdgeState, MetricsRoute};

/// Path prefixes of steward's own routes: never shed, never behind the service's
/// authentication (`/admin/*` has its own token).
pub(crate) const OWN_ROUTES: [&str; 5] = [
    "/health/",
    "/metrics",
    "/admin/",
    "/version",
    "/openapi.json",
];

/// Builds the server on an already bound `listener` (bound once at start-up, so a restart of
/// the HTTP child reuses the port and a bind error surfaces before anything starts).
///
/// actix-web's own signal handling is disabled: the supervisor decides when HTTP stops, and
/// `http_timeout` bounds how long in-flight requests get once it does.
pub fn server(
    settings: &ServerSettings,
    http_timeout: Duration,
    listener: TcpListener,
    edge: EdgeState,
    context: Context,
    service_routes: Vec<Routes>,
) -> std::io::Result<Server> {
    let (admin_enabled, metrics_route) = (edge.admin_token.is_some(), edge.metrics_route);
    let api_keys = edge.auth.api_keys().is_some();
    let (shedder, deadlines) = (edge.shedder.clone(), std::sync::Arc::clone(&edge.deadlines));
    let edge = web::Data::new(edge);
    let admin_throttle = web::Data::new(admin::AdminThrottle::default());
    let limits = settings.clone();
    let request_limits = limits::RequestLimits {
        max_head_size: settings.max_head_size,
        body_timeout: settings.body_timeout,
    };
    let mut server = HttpServer::new(move || {
        let app = App::new()
            .app_data(edge.clone())
            .app_data(context.clone())
            .app_data(admin_throttle.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limits.max_json_size)
                    .error_handler(error::json_error),
            )
            .app_data(web::PayloadConfig::new(limits.max_body_size))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .configure(|cfg| {
                routes(cfg, admin_enabled, metrics_route);
                if admin_enabled && api_keys {
                    crate::auth::admin_routes(cfg);
                }
                for service_routes in &service_routes {
                    service_routes(cfg);
                }
            });
        app.default_service(web::to(error::no_route))
            // Outermost last: the request id exists before anything logs, the envelope is
            // written (for a 429 too) before the telemetry sees the final status.
            .wrap(from_fn(ratelimit::rate_limit))
            // Before the rate limiter, which counts by the principal.
            .wrap(from_fn(crate::auth::authenticate))
            .wrap(from_fn(head::head_as_get))
            .wrap(from_fn(move |req, next| {
                limits::request_limits(request_limits, req, next)
            }))
            .wrap(from_fn({
                let deadlines = deadlines.clone();
                move |req, next| deadline::deadline(deadlines.clone(), req, next)
            }))
            // Before the deadline starts and before anything else costs: a shed request is
            // answered (in the envelope, counted and logged) and nothing more.
            .wrap(from_fn({
                let shedder = shedder.clone();
                move |req, next| shed::shed(shedder.clone(), req, next)
            }))
            .wrap(from_fn(error::envelope))
            .wrap(from_fn(security::security_headers))
            .wrap(from_fn(drain::close_when_draining))
            .wrap(from_fn(observe::observe))
            // Around the access log and everything inside, so their lines carry the trace.
            .wrap(from_fn(crate::trace::middleware))
            .wrap(from_fn(request_id::request_id))
    })
    .backlog(settings.backlog)
    .max_connections(settings.max_connections)
    .keep_alive(settings.keep_alive)
    .client_request_timeout(settings.client_request_timeout)
    .client_disconnect_timeout(settings.client_disconnect_timeout)
    .shutdown_timeout(http_timeout.as_secs_f64().ceil() as u64)
    .disable_signals();
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    Ok(server.listen(listener)?.run())
}

/// `/metrics` alone, on the listener `metrics.listen` names: for Prometheus, kept off the port
/// clients reach.
pub fn metrics_server(listener: TcpListener, edge: EdgeState) -> std::io::Result<Server> {
    let data = web::Data::new(edge);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(web::resource("/metrics").route(web::get().to(meta::metrics)))
            .default_service(web::to(error::no_route))
            .wrap(from_fn(head::head_as_get))
            .wrap(from_fn(error::envelope))
            .wrap(from_fn(request_id::request_id))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals();
    Ok(server.listen(listener)?.run())
}

/// steward's own routes, mounted on every service.
fn routes(cfg: &mut web::ServiceConfig, admin_enabled: bool, metrics: MetricsRoute) {
    match metrics {
        MetricsRoute::Public => {
            cfg.service(web::resource("/metrics").route(web::get().to(meta::metrics)));
        }
        MetricsRoute::AdminToken => {
            cfg.service(web::resource("/metrics").route(web::get().to(meta::metrics_for_admin)));
        }
        MetricsRoute::OwnListener => {}
    }
    cfg.service(web::resource("/health/live").route(web::get().to(health::live)))
        .service(web::resource("/health/ready").route(web::get().to(health::ready)))
        .service(web::resource("/version").route(web::get().to(meta::version)))
        .service(web::resource("/openapi.json").route(web::get().to(meta::openapi)));
    if admin_enabled {
        cfg.service(web::resource("/admin/actors").route(web::get().to(admin::actors)))
            .service(web::resource("/admin/log-level").route(web::put().to(admin::set_log_level)));
    }
    #[cfg(feature = "test-hooks")]
    cfg.service(web::resource("/test/slow").route(web::get().to(test_hooks::slow)))
        .service(web::resource("/test/db-sleep").route(web::get().to(test_hooks::db_sleep)))
        .service(web::resource("/test/db-hold").route(web::get().to(test_hooks::db_hold)))
        .service(web::resource("/test/crash/{store}").route(web::post().to(test_hooks::crash)));
}
